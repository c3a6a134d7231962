#!/bin/bash
# init/exgate.logrotate: logrotate reads it without an error, it says
# nocreate (under the unit's dynamic user, exgate must create the new file
# itself), and a rotation by it works with exgate's SIGUSR1: the old file
# keeps what was written before, a new file appears and exgate writes on
# into it. The rotation runs on a temp copy whose log path and postrotate
# command point at this test's exgate; nothing else in it is changed.
set -u
B=${XG_BUILDDIR:-.}
S=${XG_SRCDIR:-.}
X=$B/src/exgate
R=$S/init/exgate.logrotate
pid=
fail() { echo "FAIL: $*"; exit 1; }

if ! command -v logrotate >/dev/null 2>&1; then
    echo "SKIP: logrotate is not installed (apt-get install logrotate)"
    exit 77
fi
tmp=$(mktemp -d)
cleanup() { [ -n "$pid" ] && kill -9 "$pid" 2>/dev/null; rm -rf "$tmp"; }
trap cleanup EXIT

# logrotate ignores a group-writable file: a checkout made with umask 002
# has one; make install writes mode 644, as this copy has
cp "$R" "$tmp/exgate.logrotate"
chmod 644 "$tmp/exgate.logrotate"
out=$(logrotate -d -s "$tmp/state.d" "$tmp/exgate.logrotate" 2>&1) || fail "logrotate -d: $out"
echo "$out" | grep -qi 'error' && fail "logrotate -d: $out"
grep -q 'kill.*SIGUSR1.*exgate\|kill.*USR1.*exgate' "$R" || fail "the snippet sends no SIGUSR1"
grep -Eq '^\s*nocreate\s*$' "$R" || fail "the snippet lacks nocreate"

mkdir "$tmp/log"
cat > "$tmp/run.conf" <<CONF
error_log $tmp/log/exgate.log info;
CONF
$X -c "$tmp/run.conf" & pid=$!
for i in $(seq 200); do grep -q started "$tmp/log/exgate.log" 2>/dev/null && break; sleep 0.05; done
grep -q started "$tmp/log/exgate.log" || fail "exgate did not start"
sed -e "s|^/var/log/exgate/\*\.log {|$tmp/log/*.log {|" \
    -e "s|^\( *\)systemctl kill .*|\1kill -USR1 $pid|" "$R" > "$tmp/rotate.conf"
grep -q "^$tmp/log/\*.log {" "$tmp/rotate.conf" || fail "cannot point the copy at $tmp/log"
grep -q "kill -USR1 $pid" "$tmp/rotate.conf" || fail "cannot point postrotate at exgate"
chmod 644 "$tmp/rotate.conf"
out=$(logrotate -f -s "$tmp/state" "$tmp/rotate.conf" 2>&1) || fail "logrotate -f: $out"
[ -f "$tmp/log/exgate.log.1" ] || fail "no exgate.log.1 after the rotation: $(ls "$tmp/log")"
grep -q started "$tmp/log/exgate.log.1" || fail "the rotated file lost the start line"
# exgate reopens on SIGUSR1 and creates the file itself
for i in $(seq 200); do [ -f "$tmp/log/exgate.log" ] && break; sleep 0.05; done
[ -f "$tmp/log/exgate.log" ] || fail "exgate did not create a new log after SIGUSR1"
kill -HUP $pid
for i in $(seq 200); do grep -q SIGHUP "$tmp/log/exgate.log" && break; sleep 0.05; done
grep -q SIGHUP "$tmp/log/exgate.log" || fail "exgate does not write to the new log"
grep -q SIGHUP "$tmp/log/exgate.log.1" && fail "exgate still writes to the rotated log"
kill -TERM $pid
wait $pid; rc=$?
pid=
[ $rc -eq 0 ] || fail "exit $rc after SIGTERM"
echo "PASS"
