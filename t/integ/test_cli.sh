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
grep -q 'is not valid, the running configuration stays' "$tmp/exgate.log" \
    || fail "SIGHUP report"
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
for i in $(seq 200); do grep -q 'reload: ".*" runs' "$tmp/warn.log" && break; sleep 0.1; done
grep -q 'reload: ".*" runs' "$tmp/warn.log" || fail "SIGHUP valid report"
[ "$(grep -c 'warn.conf:5: warning: secret file' "$tmp/warn.log")" -ge 1 ] \
    || fail "SIGHUP dropped the conf warning"
grep -q 'sEcReT-vAlUe' "$tmp/warn.log" && fail "the secret reached the log"
kill -TERM $pid
wait $pid; rc=$?
pid=
[ $rc -eq 0 ] || fail "exit $rc after SIGTERM (warn conf)"

# -s: signals through the pid file of the conf's pid directive (relative
# to the conf's directory): reload, stop; the file goes with the stop.
# -s needs no secret: the conf's env: and file: secrets are not read (the
# daemon has XG_T_PID_SECRET, the -s commands do not).
cat > "$tmp/pid.conf" <<CONF
error_log $tmp/pid.log debug;
pid run.pid;
upstream r {
    url ws://127.0.0.1:1/;
    on_open env:XG_T_PID_SECRET;
}
CONF
(cd / && $X -s reload -c "$tmp/pid.conf" 2>/dev/null) && fail "-s with no pid file"
XG_T_PID_SECRET='{"op":"hello"}' $X -c "$tmp/pid.conf" 2>/dev/null & pid=$!
for i in $(seq 200); do [ -s "$tmp/run.pid" ] && break; sleep 0.1; done
for i in $(seq 200); do [ -s "$tmp/run.pid" ] && break; sleep 0.1; done
[ "$(cat "$tmp/run.pid" 2>&1)" = "$pid" ] || fail "pid file: $(cat "$tmp/run.pid" 2>&1)"
(cd / && $X -s reload -c "$tmp/pid.conf") || fail "-s reload"
for i in $(seq 200); do grep -q 'reload: ".*" runs' "$tmp/pid.log" && break; sleep 0.1; done
grep -q 'reload: ".*" runs' "$tmp/pid.log" || fail "-s reload did not reload"
$X -s bogus -c "$tmp/pid.conf" 2>/dev/null; [ $? -eq 2 ] || fail "-s bogus exit code"
$X -s stop -c "$tmp/pid.conf" || fail "-s stop"
wait $pid; rc=$?
pid=
[ $rc -eq 0 ] || fail "exit $rc after -s stop"
[ -e "$tmp/run.pid" ] && fail "pid file left after the stop"

# -T: the effective configuration. Every directive of the tables
# (t/unit/list_directives) is written, includes are expanded, secrets
# appear by source only, and the output is a conf that -t accepts and
# that -T writes again unchanged (a fixed point), read from another
# directory so that nothing in it is relative to the original file.
L=$B/t/unit/list_directives
[ -x "$L" ] || fail "$L not built"
names=$("$L") || fail "list_directives"
T=$tmp/T
mkdir -p "$T/conf.d" "$T/sub" "$tmp/elsewhere"
printf 'fIlEsEcReT-api\n' > "$T/api.secret"
printf 'fIlEsEcReT-bot\n' > "$T/sub/bot.secret"
chmod 600 "$T/api.secret" "$T/sub/bot.secret"
: > "$T/ca.pem"
export XG_T_ID=eNvId-1234 XG_T_SECRET=eNvSeCrEt-upstream XG_T_BOT=eNvSeCrEt-bot
cat > "$T/main.conf" <<CONF
error_log $T/x.log warn json;
allow_remote off;
pid run/exgate.pid;
admin 127.0.0.1:8610;
admin_origin http://localhost:3000;
client_credentials bot-a env:XG_T_BOT;
client_credentials bot-b file:sub/bot.secret;
client_credentials bot-e env:XG_T_BOT account=desk-1;
client_auth on;
client_max_message 2m;
client_output_limit 16m 4m 30s;
client_rate 50;
client_max_channels 500;
unsubscribe_linger 2s;
include conf.d/*.conf;
listen 127.0.0.1:8600 websocket upstream=a path=/ws/api/v2 max_clients=10 sndbuf=64k client_auth=off;
listen 127.0.0.1:8601 tcp upstream=b client_credentials=bot-c:env:XG_T_BOT client_credentials=bot-d:file:sub/bot.secret;
listen 127.0.0.1:8602 http upstream=c;
listen 127.0.0.1:8603 websocket upstream=d;
CONF
cat > "$T/conf.d/a.conf" <<'CONF'
upstream a {
    url wss://test.deribit.com:8443/ws/api/v2?x=1;
    protocol deribit;
    tls_ca ../ca.pem;
    tls_verify off;
    header X-Api "a b;c";
    header X-Two "it's \"q\"";
    max_message 1m;
    ping 3s;
    ping_timeout 9s;
    idle_timeout 20s;
    connect_timeout 4s;
    handshake_timeout 5s;
    restore_timeout 6s;
    close_timeout 2500ms;
    max_connection_age 24h;
    reconnect exponential { initial 100ms; max 20s; multiplier 1.5; jitter decorrelated; }
    breaker { failures 3; window 10s; open 5s; }
    stable 2s;
    max_attempts 7;
    auth client_signature env:XG_T_ID file:../api.secret;
    auth_scope session:bots;
    heartbeat 15s;
    cancel_on_disconnect on;
    request_timeout 5s;
    queue_limit 100;
    queue_timeout 10s;
    stale "book.*" 90s;
    stale trades.* 2m;
}
CONF
cat > "$T/conf.d/b.conf" <<'CONF'
upstream b {
    url ws://127.0.0.1:9/ws/api/v2;
    protocol deribit;
    reconnect fixed { delay 2s; }
    auth client_credentials plainid env:XG_T_SECRET;
    publish redis://:env:XG_T_SECRET@127.0.0.1:6390 prefix=core maxlen=5000 carry=7;
    account desk-1 { auth client_signature env:XG_T_ID env:XG_T_SECRET; cancel_on_disconnect on; heartbeat 30s; }
}
CONF
cat > "$T/conf.d/e.conf" <<'CONF'
upstream e {
    url redis://127.0.0.1:6390;
    protocol edge;
    source b;
    prefix core;
    password env:XG_T_SECRET;
    edge_id host-1.e;
    request_timeout 4s;
}
CONF
cat > "$T/conf.d/d.conf" <<'CONF'
upstream d {
    url wss://fstream.binance.com;
    protocol binance;
    market usdm;
    rest_url https://fapi.binance.com;
    max_streams_per_connection 150;
    control_rate 6;
    rest_weight 1200;
    client_ping on 30s 2m;
    stale *@depth* 10s;
}
CONF
cat > "$T/conf.d/c.conf" <<'CONF'
upstream c {
    url ws://127.0.0.1:9/feed;
    protocol raw;
    rest_url https://api.example.com:8443/base/;
    rest_cache 5s;
    on_open env:XG_T_SECRET;
    on_open '{"op":"hello"}';
    replay '"op":"subscribe"';
    replay_limit 50;
    queue_limit 20;
    queue_timeout 3s;
}
CONF
secrets='fIlEsEcReT|eNvSeCrEt|eNvId-1234'
# -T reads the conf from another directory than its own
(cd "$tmp/elsewhere" && $X -T -c "$T/main.conf" > "$tmp/dump1" 2> "$tmp/dump1.err") \
    || fail "-T full conf: $(cat "$tmp/dump1.err")"
grep -Eq "$secrets" "$tmp/dump1" "$tmp/dump1.err" && fail "-T shows a secret"
while read -r ctx name; do
    if [ "$name" = include ]; then
        grep -Eq '^\s*include( |;)' "$tmp/dump1" && fail "-T kept an include"
        continue
    fi
    grep -Eq "^\s*$name( |;|\$)" "$tmp/dump1" || fail "-T lacks \"$name\" ($ctx)"
done <<< "$names"
for want in "auth client_signature env:XG_T_ID file:$T/conf.d/../api.secret;" \
    "on_open env:XG_T_SECRET;" \
    "auth client_credentials plainid env:XG_T_SECRET;" \
    "client_credentials bot-a env:XG_T_BOT;" \
    "client_credentials bot-b file:$T/sub/bot.secret;" \
    "client_credentials bot-e env:XG_T_BOT account=desk-1;" \
    "account desk-1 {" "auth client_signature env:XG_T_ID env:XG_T_SECRET;" \
    "heartbeat 30s;" \
    "client_credentials=bot-c:env:XG_T_BOT client_credentials=bot-d:file:$T/sub/bot.secret;" \
    "tls_ca $T/conf.d/../ca.pem;" 'header X-Api "a b;c";' "header X-Two \"it's \\\"q\\\"\";" \
    'close_timeout 2500ms;' 'multiplier 1.5;' 'stale book.* 90s;' \
    'stale trades.* 120s;' 'url wss://test.deribit.com:8443/ws/api/v2?x=1;' \
    'admin_origin http://localhost:3000;' 'max_connection_age 24h;' \
    "pid $T/run/exgate.pid;" \
    'rest_url https://api.example.com:8443/base;' \
    'listen 127.0.0.1:8602 http upstream=c;' \
    'market usdm;' 'client_ping on 30s 120s;' 'stale *@depth* 10s;' \
    'max_streams_per_connection 150;' 'max_connection_age 23h;' \
    'publish redis://127.0.0.1:6390 prefix=core maxlen=5000 carry=7 password=env:XG_T_SECRET;' \
    "error_log $T/x.log warn json;"
do
    grep -qF -- "$want" "$tmp/dump1" || fail "-T lacks: $want"
done
cp "$tmp/dump1" "$tmp/elsewhere/dumped.conf"
out=$($X -t -c "$tmp/elsewhere/dumped.conf" 2>&1) || fail "-t on the -T output: $out"
$X -T -c "$tmp/elsewhere/dumped.conf" > "$tmp/dump2" 2>/dev/null || fail "-T of the -T output"
cmp -s "$tmp/dump1" "$tmp/dump2" || fail "-T is not a fixed point: $(diff "$tmp/dump1" "$tmp/dump2")"

# The default conf: every directive that applies to it is written, as a
# value or as a "# NAME: not set" comment; the fixed policy's does not
# apply (it uses exponential), nor include.
$X -T -c "$S/conf/exgate.conf" > "$tmp/dump3" 2>/dev/null || fail "-T default conf"
while read -r ctx name; do
    # the default conf has a deribit upstream: raw's, binance's and edge's
    # directives do not apply
    case "$ctx" in reconnect:fixed|upstream:raw|upstream:binance|upstream:edge|any) continue ;; esac
    grep -Eq "^\s*(# )?$name( |;|:|\$)" "$tmp/dump3" \
        || fail "-T of the default conf lacks \"$name\" ($ctx)"
done <<< "$names"
cp "$tmp/dump3" "$tmp/elsewhere/default.conf"
out=$($X -t -c "$tmp/elsewhere/default.conf" 2>&1) || fail "-t on -T of the default conf: $out"
$X -T -c "$tmp/elsewhere/default.conf" > "$tmp/dump4" 2>/dev/null || fail "-T again"
cmp -s "$tmp/dump3" "$tmp/dump4" || fail "-T of the default conf is not a fixed point"
$X -T -c "$tmp/bad.conf" > "$tmp/dump5" 2>&1; [ $? -eq 1 ] || fail "-T on a bad conf must exit 1"

# Under systemd (JOURNAL_STREAM names stderr's device:inode) every line
# starts with its syslog priority, so that journalctl -p finds them; on
# any other stderr (or a JOURNAL_STREAM naming another file) no prefix.
printf 'upstream x {\n url ws://127.0.0.1:1/;\n protocol raw;\n}\n' > "$tmp/j.conf"
: > "$tmp/j.err"; : > "$tmp/other"
JOURNAL_STREAM=$(stat -c '%d:%i' "$tmp/j.err") timeout -s INT 2 \
    $X -c "$tmp/j.conf" 2>> "$tmp/j.err"
grep -q '^<6>[0-9T:.Z-]* \[info\] exgate [0-9.]*: started' "$tmp/j.err" \
    || fail "journal: no <6> on info: $(head -3 "$tmp/j.err")"
grep -q '^<4>[0-9T:.Z-]* \[warn\] upstream x#1: connecting -> down' "$tmp/j.err" \
    || fail "journal: no <4> on warn: $(head -5 "$tmp/j.err")"
grep -qv '^<[0-9]>' "$tmp/j.err" && fail "journal: a line without priority"
for js in "" "$(stat -c '%d:%i' "$tmp/other")" "garbage"; do
    : > "$tmp/j.err"
    JOURNAL_STREAM=$js timeout -s INT 1 $X -c "$tmp/j.conf" 2>> "$tmp/j.err"
    grep -q '\[info\] exgate [0-9.]*: started' "$tmp/j.err" || fail "no log with JOURNAL_STREAM=$js"
    grep -q '^<' "$tmp/j.err" && fail "priority prefix with JOURNAL_STREAM=$js"
done
echo "PASS"
