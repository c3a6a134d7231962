#!/bin/bash
# exgate's command line: -v, -h, -t on good and bad confs, exit codes,
# "FILE:LINE:" errors on stderr, and an orderly stop on SIGTERM.
set -u
B=${XG_BUILDDIR:-.}
S=${XG_SRCDIR:-.}
X=$B/src/exgate
tmp=$(mktemp -d)
pid=
cleanup() { [ -n "$pid" ] && kill -9 "$pid" 2>/dev/null; rm -rf "$tmp"; }
trap cleanup EXIT
fail() { echo "FAIL: $*"; exit 1; }

$X -v | grep -q '^exgate ' || fail "-v"
$X -h | grep -q 'usage: exgate' || fail "-h"
$X -q >/dev/null 2>&1; [ $? -eq 2 ] || fail "bad option exit code"

out=$($X -t -c "$S/conf/exgate.conf" 2>&1) || fail "default conf: $out"
echo "$out" | grep -q ': ok$' || fail "default conf says: $out"

# Every shipped conf passes -t (the examples read their secrets from env).
for f in "$S"/conf/*.conf "$S"/conf/examples/*.conf; do
    out=$(DERIBIT_CLIENT_ID=id DERIBIT_CLIENT_SECRET=s BOT_MM_SECRET=s \
        BOT_HEDGE_SECRET=s $X -t -c "$f" 2>&1) || fail "$f: $out"
    echo "$out" | grep -q ': ok$' || fail "$f says: $out"
done

cat > "$tmp/bad.conf" <<'CONF'
# a conf with a misspelled directive on line 7
error_log stderr info;
upstream deribit {
    url wss://www.deribit.com/ws/api/v2;
}
listen 127.0.0.1:8600 websocket upstream=deribit;
admn 127.0.0.1:8610;
CONF
out=$($X -t -c "$tmp/bad.conf" 2>&1); rc=$?
[ $rc -eq 1 ] || fail "bad conf exit $rc"
echo "$out" | grep -q "bad.conf:7: unknown directive \"admn\" (did you mean \"admin\"?)" \
    || fail "bad conf message: $out"

$X -t -c "$tmp/missing.conf" >/dev/null 2>&1; [ $? -eq 1 ] || fail "missing file"

# Runs, reopens its log on SIGUSR1, survives SIGHUP with a broken conf,
# and stops with exit 0 on SIGTERM.
cat > "$tmp/run.conf" <<CONF
error_log $tmp/exgate.log debug;
CONF
$X -c "$tmp/run.conf" & pid=$!
for i in $(seq 200); do grep -q started "$tmp/exgate.log" 2>/dev/null && break; sleep 0.1; done
grep -q started "$tmp/exgate.log" || fail "no start line"
mv "$tmp/exgate.log" "$tmp/exgate.log.1"
kill -USR1 $pid
for i in $(seq 200); do [ -f "$tmp/exgate.log" ] && break; sleep 0.1; done
[ -f "$tmp/exgate.log" ] || fail "log not reopened on SIGUSR1"
echo "bogus;" >> "$tmp/run.conf"
kill -HUP $pid
for i in $(seq 200); do grep -q 'SIGHUP' "$tmp/exgate.log" && break; sleep 0.1; done
grep -q 'is not valid, keeping' "$tmp/exgate.log" || fail "SIGHUP report"
grep -q 'run.conf:2: unknown directive "bogus"' "$tmp/exgate.log" || fail "SIGHUP errors"
kill -0 $pid || fail "died on SIGHUP"
kill -TERM $pid
wait $pid; rc=$?
pid=
[ $rc -eq 0 ] || fail "exit $rc after SIGTERM"
grep -q 'stopped' "$tmp/exgate.log" || fail "no stop line"

# SIGHUP with a valid conf that has a warning (a group-readable secret):
# the warning reaches the log, the secret itself never does.
printf 'sEcReT-vAlUe\n' > "$tmp/secret"
chmod 644 "$tmp/secret"
cat > "$tmp/warn.conf" <<CONF
error_log $tmp/warn.log debug;
upstream d {
    url ws://127.0.0.1:1/ws/api/v2;
    protocol deribit;
    auth client_credentials id file:secret;
}
CONF
out=$($X -t -c "$tmp/warn.conf" 2>&1) || fail "warn conf: $out"
echo "$out" | grep -q 'warn.conf:5: warning: secret file' || fail "-t warning: $out"
$X -c "$tmp/warn.conf" 2>/dev/null & pid=$!
for i in $(seq 200); do grep -q started "$tmp/warn.log" 2>/dev/null && break; sleep 0.1; done
kill -HUP $pid
for i in $(seq 200); do grep -q 'SIGHUP: .* is valid' "$tmp/warn.log" && break; sleep 0.1; done
grep -q 'SIGHUP: .* is valid' "$tmp/warn.log" || fail "SIGHUP valid report"
[ "$(grep -c 'warn.conf:5: warning: secret file' "$tmp/warn.log")" -ge 1 ] \
    || fail "SIGHUP dropped the conf warning"
grep -q 'sEcReT-vAlUe' "$tmp/warn.log" && fail "the secret reached the log"
kill -TERM $pid
wait $pid; rc=$?
pid=
[ $rc -eq 0 ] || fail "exit $rc after SIGTERM (warn conf)"
echo "PASS"
