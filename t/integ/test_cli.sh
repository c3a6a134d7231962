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

# Whatever start-up refuses after the conf has parsed, -t refuses too, with
# the same text: each bad conf below is checked with -t (exit 1, the
# expected message at its FILE:LINE) and started for real (it must refuse,
# and every error it prints must be in the -t output).
errors_of() {   # the messages of the error lines in $1, prefixes dropped
    echo "$1" | sed -n -e '/configuration check failed$/d' \
        -e 's/^[0-9T:.-]*Z \[error\] //p;t' \
        -e 's/^[^ :]*:[0-9][0-9]*: //p;t' -e '/^exgate: /p'
}
refused() {     # NAME LINE MESSAGE, the conf on stdin
    local name=$1 line=$2 want=$3 t_out s_out msgs m rc
    cat > "$tmp/$name.conf"
    t_out=$($X -t -c "$tmp/$name.conf" 2>&1); rc=$?
    [ $rc -eq 1 ] || fail "$name: -t exit $rc: $t_out"
    echo "$t_out" | grep -qF -- "$name.conf:$line: $want" \
        || fail "$name: -t says: $t_out"
    s_out=$(timeout 10 $X -c "$tmp/$name.conf" 2>&1 </dev/null); rc=$?
    [ $rc -ne 0 ] && [ $rc -ne 124 ] || fail "$name: start exit $rc: $s_out"
    msgs=$(errors_of "$s_out")
    echo "$msgs" | grep -qF -- "$want" || fail "$name: start says: $s_out"
    while IFS= read -r m; do
        echo "$t_out" | grep -qF -- ": $m" \
            || fail "$name: start says \"$m\", -t does not: $t_out"
    done <<< "$msgs"
}
P=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
refused raw_listen 6 "listener 127.0.0.1:$P: protocol raw cannot authenticate local clients and trusts every one: say so with client_auth=off on the listen line (or client_auth off;)" <<CONF
error_log stderr;
upstream r {
    url ws://127.0.0.1:1/ws/api/v2;
    protocol raw;
}
listen 127.0.0.1:$P tcp upstream=r;
CONF
refused default_raw_listen 6 "listener 127.0.0.1:$P: protocol raw cannot authenticate local clients" <<CONF
error_log stderr;
upstream r {
    url ws://127.0.0.1:1/ws/api/v2;
}
# no protocol line: raw
listen 127.0.0.1:$P websocket upstream=r;
CONF
refused name_listen 6 "listener localhost:$P: " <<CONF
error_log stderr;
upstream d {
    url ws://127.0.0.1:1/ws/api/v2;
    protocol deribit;
}
listen localhost:$P tcp upstream=d;
CONF
refused log_nodir 1 "error_log \"$tmp/nodir/x.log\": No such file or directory" <<CONF
error_log $tmp/nodir/x.log;
CONF
refused log_isdir 2 "error_log \"$tmp\": Is a directory" <<CONF

error_log $tmp debug;
CONF

# What only binding a socket can tell is not a conf error: a port in use
# passes -t and is refused at start.
cat > "$tmp/inuse.conf" <<CONF
error_log stderr;
upstream d {
    url ws://127.0.0.1:1/ws/api/v2;
    protocol deribit;
}
listen 127.0.0.1:$P tcp upstream=d;
CONF
out=$(python3 -c '
import socket, subprocess, sys
s = socket.socket(); s.bind(("127.0.0.1", int(sys.argv[1]))); s.listen(1)
t = subprocess.run([sys.argv[2], "-t", "-c", sys.argv[3]], capture_output=True, text=True)
r = subprocess.run([sys.argv[2], "-c", sys.argv[3]], capture_output=True, text=True, timeout=10)
print("t=%d start=%d %s%s" % (t.returncode, r.returncode, t.stdout, r.stderr))
' "$P" "$X" "$tmp/inuse.conf" 2>&1)
echo "$out" | grep -q '^t=0 start=1 ' || fail "port in use: $out"
echo "$out" | grep -q 'cannot listen: Address already in use' || fail "port in use: $out"

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
