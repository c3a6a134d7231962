#!/bin/bash
# `make install` into a staging root (DESTDIR): exgate in sbin, both man
# pages, the conf, the systemd unit (with the installed paths and no
# @VAR@ left: its ExecStart names the installed binary and conf) and the
# logrotate snippet as logrotate.d/exgate; the installed binary checks the
# installed conf. The conf is the user's once installed: a second
# `make install` keeps an edited one (the shipped one is also installed as
# exgate.conf.default), and `make uninstall` leaves an edited one behind;
# it takes everything else away.
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
cmp -s "$D$conf" "${XG_SRCDIR:-.}/conf/exgate.conf" || fail "$conf differs from conf/exgate.conf"
cmp -s "$D$conf.default" "${XG_SRCDIR:-.}/conf/exgate.conf" \
    || fail "$conf.default is not conf/exgate.conf"

# the user edits the conf, then installs again (an upgrade): the edit stays
echo '# edited by the user' >> "$D$conf"
cp "$D$conf" "$tmp/edited"
env -u MAKEFLAGS -u MFLAGS -u MAKELEVEL make -s -C "$B" install DESTDIR="$D" > "$tmp/install2.log" 2>&1 \
    || fail "second make install: $(tail -20 "$tmp/install2.log")"
cmp -s "$D$conf" "$tmp/edited" || fail "a second make install overwrote the edited $conf"
cmp -s "$D$conf.default" "${XG_SRCDIR:-.}/conf/exgate.conf" \
    || fail "second make install: $conf.default is not conf/exgate.conf"

env -u MAKEFLAGS -u MFLAGS -u MAKELEVEL make -s -C "$B" uninstall DESTDIR="$D" > "$tmp/uninstall.log" 2>&1 \
    || fail "make uninstall: $(tail -20 "$tmp/uninstall.log")"
left=$(cd "$D" && find . -type f | sed 's|^\.||')
[ "$left" = "$conf" ] || fail "after make uninstall, want only the edited $conf left, have: $left"
rm -f "$D$conf"

# an unedited conf goes with make uninstall
env -u MAKEFLAGS -u MFLAGS -u MAKELEVEL make -s -C "$B" install DESTDIR="$D" > "$tmp/install3.log" 2>&1 \
    || fail "third make install: $(tail -20 "$tmp/install3.log")"
env -u MAKEFLAGS -u MFLAGS -u MAKELEVEL make -s -C "$B" uninstall DESTDIR="$D" > "$tmp/uninstall.log" 2>&1 \
    || fail "make uninstall: $(tail -20 "$tmp/uninstall.log")"
left=$(cd "$D" && find . -type f)
[ -z "$left" ] || fail "left after make uninstall: $left"
echo "PASS"
