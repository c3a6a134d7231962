#!/bin/bash
# `make install` into a staging root (DESTDIR): exgate in sbin, both man
# pages, the conf, the systemd unit (with the installed paths and no
# @VAR@ left: its ExecStart names the installed binary and conf) and the
# logrotate snippet as logrotate.d/exgate; the installed binary checks the
# installed conf. `make uninstall` takes them away again.
set -u
B=${XG_BUILDDIR:-.}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
fail() { echo "FAIL: $*"; exit 1; }
D=$tmp/root

env -u MAKEFLAGS -u MFLAGS -u MAKELEVEL make -s -C "$B" install DESTDIR="$D" > "$tmp/install.log" 2>&1 \
    || fail "make install: $(tail -20 "$tmp/install.log")"
(cd "$D" && find . -type f | sed 's|^\.||' | sort) > "$tmp/files"
one() {     # the one installed file whose path matches $1
    local n
    n=$(grep -c -- "$1" "$tmp/files")
    [ "$n" -eq 1 ] || fail "$n installed files match $1: $(cat "$tmp/files")"
    grep -- "$1" "$tmp/files"
}
x=$(one '/sbin/exgate$')
m8=$(one '/man8/exgate\.8$')
m5=$(one '/man5/exgate\.conf\.5$')
conf=$(one '/exgate\.conf$')
unit=$(one '/systemd/system/exgate\.service$')
rot=$(one '/logrotate\.d/exgate$')
[ -x "$D$x" ] || fail "$x is not executable"
cmp -s "$D$m8" "${XG_SRCDIR:-.}/man/exgate.8" || fail "$m8 differs from man/exgate.8"
cmp -s "$D$m5" "${XG_SRCDIR:-.}/man/exgate.conf.5" || fail "$m5 differs"
grep -q '@[a-zA-Z_]*@' "$D$unit" && fail "unsubstituted @VAR@ in $unit"
grep -qx "ExecStart=$x -f -c $conf" "$D$unit" \
    || fail "$unit: $(grep ^ExecStart "$D$unit"), want $x and $conf"
grep -q "^/var/log/exgate/\*\.log {" "$D$rot" || fail "$rot"
out=$("$D$x" -t -c "$D$conf" 2>&1) || fail "installed exgate -t installed conf: $out"

env -u MAKEFLAGS -u MFLAGS -u MAKELEVEL make -s -C "$B" uninstall DESTDIR="$D" > "$tmp/uninstall.log" 2>&1 \
    || fail "make uninstall: $(tail -20 "$tmp/uninstall.log")"
left=$(cd "$D" && find . -type f)
[ -z "$left" ] || fail "left after make uninstall: $left"
echo "PASS"
