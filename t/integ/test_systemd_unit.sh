#!/bin/bash
# The generated init/exgate.service: `systemd-analyze verify` says nothing
# about it (unknown keys, bad values, a missing binary, a Documentation=
# page that `man` cannot find). The unit names the installed paths, which
# need not exist here, so a temp copy points ExecStart at the built binary
# and the shipped conf, and MANPATH at the pages in man/; nothing else is
# changed. Its Type is notify when exgate was built with libsystemd, else
# exec.
set -u
B=${XG_BUILDDIR:-.}
S=${XG_SRCDIR:-.}
U=$B/init/exgate.service
fail() { echo "FAIL: $*"; exit 1; }

[ -f "$U" ] || fail "$U not generated"
grep -q '@[a-zA-Z_]*@' "$U" && fail "unsubstituted @VAR@ left in $U"
if grep -q '^#define HAVE_SYSTEMD 1' "$B/config.h"; then type=notify; else type=exec; fi
grep -qx "Type=$type" "$U" || fail "Type is not $type: $(grep ^Type= "$U")"
grep -qx 'ExecReload=/bin/kill -HUP $MAINPID' "$U" || fail "ExecReload"
for key in 'LimitNOFILE=65536' 'NoNewPrivileges=yes' 'ProtectSystem=strict' \
    'ProtectHome=yes' 'PrivateTmp=yes' 'DynamicUser=yes' \
    'RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX'
do
    grep -qx "$key" "$U" || fail "the unit lacks $key"
done

if ! command -v systemd-analyze >/dev/null 2>&1; then
    echo "SKIP: systemd-analyze is not installed (apt-get install systemd)"
    exit 77
fi
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
mkdir -p "$tmp/unit" "$tmp/man/man8" "$tmp/man/man5"
cp "$S/man/exgate.8" "$tmp/man/man8/"
cp "$S/man/exgate.conf.5" "$tmp/man/man5/"
X=$(cd "$B/src" && pwd)/exgate
C=$(cd "$S/conf" && pwd)/exgate.conf
sed -e "s|^ExecStart=[^ ]*|ExecStart=$X|" -e "s|^\(ExecStart=.* -c \)[^ ]*\$|\1$C|" \
    "$U" > "$tmp/unit/exgate.service"
grep -qx "ExecStart=$X -f -c $C" "$tmp/unit/exgate.service" \
    || fail "cannot point ExecStart at the build: $(grep ^ExecStart "$tmp/unit/exgate.service")"
out=$(MANPATH=$tmp/man systemd-analyze verify "$tmp/unit/exgate.service" 2>&1); rc=$?
[ $rc -eq 0 ] || fail "systemd-analyze verify exit $rc: $out"
[ -z "$out" ] || fail "systemd-analyze verify: $out"
echo "PASS"
