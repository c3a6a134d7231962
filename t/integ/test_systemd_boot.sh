#!/bin/bash
# The shipped unit under a real systemd, as a user runs it: Debian's
# /lib/systemd/systemd boots as PID 1 of its own PID, mount, UTS, IPC,
# network and cgroup namespaces, on an overlay of this machine's root (every
# write lands in a tmpfs that goes with the namespaces: the host's files,
# network, hostname and kernel settings are not touched). Inside it, exsim
# on 127.0.0.1 as a transient unit, then the README's "Under systemd" block
# as written (make install from the build tree, the README's conf with its
# url on exsim, the secrets in exgate.env), and
#   systemctl enable --now exgate   active; Type=notify: READY=1 arrived;
#                                   a dynamic user, not root; LimitNOFILE
#   GET /status, /metrics, /        upstream ready; promtool check metrics;
#                                   the page; no secret in any of them
#   systemctl reload exgate         RELOADING=1 then READY=1 (notify); same
#                                   main PID and upstream connection
#   LoadCredential= in a drop-in    a file: secret, as docs/running.md says
#   systemd-analyze security        exposure at most 2.0
#   systemctl stop exgate           STOPPING=1 (notify), exit status 0
# Skipped (77) when it cannot run: not root, no systemd, no cgroup2
# hierarchy, or the namespaces or mounts cannot be made (a container
# without CAP_SYS_ADMIN).
set -u
B=$(cd "${XG_BUILDDIR:-.}" && pwd)
S=$(cd "${XG_SRCDIR:-.}" && pwd)
SELF=$(cd "$(dirname "$0")" && pwd)/$(basename "$0")
SYSTEMD=/lib/systemd/systemd

# ---- inside: PID 1 of the new namespaces, until it execs systemd ----------
# $1: a directory on the host to cover with a private tmpfs (the overlay's
# upper layer and the new root), $2 $3: the build and source trees.
inner() {
    local N=$1 R=$1/root d
    set -e
    trap 'echo "inner: line $LINENO: $BASH_COMMAND failed" >&2' ERR
    mount --make-rprivate /
    mount -t tmpfs -o mode=700 tmpfs "$N"
    mkdir "$N/upper" "$N/work" "$R"
    mount -t overlay overlay -o "lowerdir=/,upperdir=$N/upper,workdir=$N/work" "$R"
    # /proc with /proc/sys read-only (kernel.* is the host's), /sys read-only
    # (no udev), a cgroup2 whose root is our own cgroup (cgroup namespace)
    mount -t proc -o nosuid,nodev,noexec proc "$R/proc"
    mount --bind "$R/proc/sys" "$R/proc/sys"
    mount -o remount,bind,ro "$R/proc/sys"
    if [ -e "$R/proc/sysrq-trigger" ]; then
        mount --bind "$R/proc/sysrq-trigger" "$R/proc/sysrq-trigger"
        mount -o remount,bind,ro "$R/proc/sysrq-trigger"
    fi
    mount -t sysfs -o ro,nosuid,nodev,noexec sysfs "$R/sys"
    mount -t cgroup2 -o nosuid,nodev,noexec cgroup2 "$R/sys/fs/cgroup"
    # a /dev of a few character devices, as systemd-nspawn makes it
    mount -t tmpfs -o mode=755,nosuid tmpfs "$R/dev"
    for d in null zero full random urandom tty; do
        touch "$R/dev/$d"
        mount --bind "/dev/$d" "$R/dev/$d"
    done
    touch "$R/dev/console"
    mount --bind /dev/null "$R/dev/console"
    mkdir "$R/dev/pts" "$R/dev/shm"
    mount -t devpts -o newinstance,ptmxmode=0666,mode=620 devpts "$R/dev/pts"
    ln -s pts/ptmx "$R/dev/ptmx"
    ln -s /proc/self/fd "$R/dev/fd"
    mount -t tmpfs -o mode=1777,nosuid,nodev tmpfs "$R/tmp"
    mount -t tmpfs -o mode=755,nosuid,nodev tmpfs "$R/run"
    # the trees (after /tmp: they may be under it), read-only: make install
    # only copies from them
    for d in "$2" "$3"; do
        mkdir -p "$R$d"
        mount --bind "$d" "$R$d"
        mount -o remount,bind,ro "$R$d"
    done
    # boot basic.target and nothing more (not the host's multi-user
    # services), and no timers (apt, fstrim, e2scrub)
    cat > "$R/etc/systemd/system/xg-check.target" <<'EOF'
[Unit]
Description=exgate check: basic.target and nothing more
Requires=basic.target
After=basic.target
AllowIsolate=yes
EOF
    ln -sf /dev/null "$R/etc/systemd/system/timers.target"
    # the overlay holds the root file system only (a separate /usr is not in it)
    for d in "$SYSTEMD" /usr/bin/setpriv /usr/bin/systemctl; do
        [ -x "$R$d" ] || { echo "inner: no $d on the root file system alone"; exit 1; }
    done
    echo xg-check > "$R/etc/hostname"
    hostname xg-check
    cd "$R"
    mkdir -p .oldroot
    pivot_root . .oldroot
    cd /
    umount -l /.oldroot
    rmdir /.oldroot
    # shared inside (systemd does not do it in a container): the unit's
    # mounts made in a child namespace (LoadCredential=) reach PID 1
    mount --make-rshared /
    echo "inner: booting systemd"
    exec setpriv --bounding-set -sys_time,-sys_module,-sys_rawio -- \
        env -i container=xg-check TERM=dumb "$SYSTEMD" --unit=xg-check.target
}
if [ "${1:-}" = --inner ]; then
    inner "$2" "$3" "$4"
    exit 1
fi

# ---- outside ----------------------------------------------------------------
skip() { echo "SKIP: $*"; exit 77; }
[ "$(id -u)" = 0 ] || skip "needs root (it boots systemd in namespaces)"
[ -x "$SYSTEMD" ] || skip "no $SYSTEMD (apt-get install systemd)"
for t in unshare nsenter setpriv curl; do
    command -v $t >/dev/null || skip "no $t"
done
[ -x "$B/src/exgate" ] && [ -x "$B/t/sim/exsim" ] || skip "exgate or exsim not built"
unitdir=$(sed -n 's/^systemdsystemunitdir = //p' "$B/Makefile")
case $unitdir in
/lib/systemd/system|/usr/lib/systemd/system|/etc/systemd/system|/usr/local/lib/systemd/system) ;;
*) skip "make install puts the unit in $unitdir, where systemd does not look (make distcheck?)" ;;
esac
cg2=$(awk '$9 == "cgroup2" { print $5; exit }' /proc/self/mountinfo)
[ -n "$cg2" ] || skip "no cgroup2 hierarchy mounted"
own=$(sed -n 's/^0:://p' /proc/self/cgroup)
CG=$cg2${own%/}/xg-check.$$
mkdir "$CG" 2>/dev/null || skip "cannot make a cgroup $CG"

T=$(mktemp -d)
mkdir "$T/ns"
USPID=
SPID=
cleanup() {
    local i
    if [ -n "$SPID" ]; then
        nsenter -t "$SPID" -a systemctl poweroff --no-block >/dev/null 2>&1
    fi
    if [ -n "$USPID" ]; then
        for i in $(seq 100); do
            kill -0 "$USPID" 2>/dev/null || break
            sleep 0.1
        done
        # unshare --kill-child: its end SIGKILLs systemd, which ends the
        # PID namespace
        kill -KILL "$USPID" 2>/dev/null
        wait "$USPID" 2>/dev/null
    fi
    for i in $(seq 50); do      # the killed processes leave it shortly after
        find "$CG" -depth -type d -exec rmdir {} + 2>/dev/null
        [ -d "$CG" ] || break
        sleep 0.1
    done
    rm -rf "$T"
}
trap cleanup EXIT
ns() { nsenter -t "$SPID" -a -- "$@"; }
fail() {
    echo "FAIL: $*"
    if [ -n "$SPID" ]; then
        echo "--- journal (last 60 lines)"
        ns journalctl -q --no-pager -n 60 -o short-precise 2>&1
    fi
    echo "--- console"
    cat "$T/console.log"
    exit 1
}
now_ms() { date +%s%3N; }

t0=$(now_ms)
setsid bash -c 'echo $$ > "$1/cgroup.procs" && exec unshare --fork --pid \
    --mount --uts --ipc --net --cgroup --mount-proc --kill-child -- \
    bash "$2" --inner "$3" "$4" "$5"' _ "$CG" "$SELF" "$T/ns" "$B" "$S" \
    > "$T/console.log" 2>&1 < /dev/null &
USPID=$!
for i in $(seq 100); do
    c=$(pgrep -P "$USPID" | head -1)
    if [ -n "$c" ] && [ "$(cat /proc/"$c"/comm 2>/dev/null)" = systemd ]; then
        SPID=$c
        break
    fi
    if ! kill -0 "$USPID" 2>/dev/null; then
        grep -q '^inner: booting systemd' "$T/console.log" \
            && fail "systemd did not start"
        skip "cannot make the namespaces and mounts: $(tail -3 "$T/console.log" | tr '\n' ' ')"
    fi
    sleep 0.1
done
[ -n "$SPID" ] || fail "no systemd under unshare ($USPID) after 10 s"
for i in $(seq 300); do     # until PID 1 answers and the boot is done
    st=$(ns systemctl is-system-running 2>&1)
    case $st in
    initializing|starting|offline*|*"Failed to connect to bus"*) sleep 0.1 ;;
    *) break ;;
    esac
done
[ "$st" = running ] || fail "system is $st: $(ns systemctl --failed --no-legend 2>&1)"
t_boot=$(( $(now_ms) - t0 ))

# ---- the user's steps: the README's ------------------------------------------
U=$B/init/exgate.service
conf=$(sed -n 's/^ExecStart=.* -c //p' "$U")
[ -n "$conf" ] || fail "$U: no ExecStart ... -c CONF"
etc=$(dirname "$conf")
if grep -q '^#define HAVE_SYSTEMD 1' "$B/config.h"; then type=notify; else type=exec; fi

ns systemd-run -q --unit=exsim -p Type=exec "$B/t/sim/exsim" --listen 127.0.0.1:9400 \
    --control 127.0.0.1:9401 --rate 20 --client-id xg-id --client-secret xg-client-secret \
    || fail "systemd-run exsim"
for i in $(seq 50); do
    ns bash -c 'exec 3<>/dev/tcp/127.0.0.1/9400' 2>/dev/null && break
    sleep 0.1
done

# The README's conf (its url on exsim) as exgate.conf in the user's
# directory, then the README's systemd block up to `enable --now`: its
# make install run in the build tree, its paths the configured ones, its
# `...` the secrets exsim wants.
block() {   # the fenced block after README's marker $1
    awk -v m="$1" 'index($0, m) == 1 { on = 1; next }
        on && /^```/ { if (n++) exit; next } on' "$S/README.md"
}
block '<!-- conf:' | sed 's|wss://test.deribit.com/ws/api/v2|ws://127.0.0.1:9400/ws/api/v2|' \
    > "$T/exgate.conf"
grep -q 'ws://127.0.0.1:9400/' "$T/exgate.conf" || fail "no testnet url in README's conf"
block '<!-- systemd:' | awk '{ print } /systemctl enable --now exgate/ { exit }' \
    | sed -e "s|^make install\$|env -u MAKEFLAGS -u MFLAGS -u MAKELEVEL make -s -C '$B' install|" \
        -e "s|/usr/local/etc/|$etc/|g" -e 's|DERIBIT_CLIENT_ID=\.\.\.|DERIBIT_CLIENT_ID=xg-id|' \
        -e 's|DERIBIT_CLIENT_SECRET=\.\.\.|DERIBIT_CLIENT_SECRET=xg-client-secret|' \
        -e 's|BOT_1_SECRET=\.\.\.|BOT_1_SECRET=xg-bot-secret|' > "$T/steps.sh"
grep -q 'make -s -C' "$T/steps.sh" && grep -q 'enable --now exgate' "$T/steps.sh" \
    && ! grep -q '\.\.\.' "$T/steps.sh" \
    || fail "README's systemd block is not make install ... enable --now with the three secrets: $(cat "$T/steps.sh")"
ns mkdir -p /root/xg-user
ns tee /root/xg-user/exgate.conf < "$T/exgate.conf" > /dev/null
ns systemctl log-level debug    # to see the notifications in the journal
# a sanitizer build: LeakSanitizer's stop-the-world (ptrace) is outside the
# unit's SystemCallFilter=@system-service, so leaks are not looked for here
# (the rest of the suite does); every other report fails the test
san=
if grep -q '^SAN_CFLAGS = .*-fsanitize' "$B/Makefile"; then
    san=" (sanitizers, leak check off)"
    ns bash -ec "mkdir -p /etc/systemd/system/exgate.service.d
        printf '[Service]\nEnvironment=ASAN_OPTIONS=detect_leaks=0\n' \
            > /etc/systemd/system/exgate.service.d/sanitizers.conf"
fi

cursor() { ns journalctl -q -n 1 -o export | sed -n 's/^__CURSOR=//p'; }
# waits up to 5 s for a journal line since cursor $1 matching $2
journal_has() {
    local i
    for i in $(seq 50); do
        ns journalctl -q --no-pager --after-cursor="$1" -o cat | grep -qE -- "$2" && return 0
        sleep 0.1
    done
    return 1
}
# waits up to 5 s for /status to show the upstream ready; saves it in $1
status_ready() {
    local i
    for i in $(seq 50); do
        ns curl -sf http://127.0.0.1:8610/status > "$1" 2>/dev/null \
            && grep -q '"state":"ready"' "$1" && return 0
        sleep 0.1
    done
    return 1
}

c=$(cursor)
t1=$(now_ms)
(echo 'cd /root/xg-user'; cat "$T/steps.sh") | ns bash -ex > "$T/steps.log" 2>&1 \
    || fail "README's systemd steps: $(cat "$T/steps.log")"
t_start=$(( $(now_ms) - t1 ))
[ "$(ns systemctl is-active exgate)" = active ] || fail "exgate is not active"
[ "$(ns systemctl show -p Type --value exgate)" = $type ] || fail "Type is not $type"
pid=$(ns systemctl show -p MainPID --value exgate)
[ "$pid" -gt 0 ] || fail "no MainPID"
if [ $type = notify ]; then
    journal_has "$c" "exgate.service: Got notification message from PID $pid \(READY=1\)" \
        || fail "no READY=1 from $pid"
fi
user=$(ns ps -o user= -p "$pid")
uid=$(ns ps -o uid= -p "$pid" | tr -d ' ')
[ "$uid" != 0 ] || fail "exgate runs as root"
# LimitNOFILE=65536, or PID 1's hard limit when lower (systemd cannot
# raise it without CAP_SYS_RESOURCE)
want=$(ns awk '/^Max open files/ { print $5 }' /proc/1/limits)
[ "$want" -gt 65536 ] && want=65536
have=$(ns awk '/^Max open files/ { print $4 }' /proc/"$pid"/limits)
[ "$have" = "$want" ] || fail "exgate's open file limit is $have, want $want"

# /status, /metrics, the page
status_ready "$T/status.json" || fail "upstream not ready: $(cat "$T/status.json")"
conn=$(grep -o '"connection_id":[0-9]*' "$T/status.json")
ns curl -sf -w '%{stderr}%{content_type}' http://127.0.0.1:8610/metrics \
    > "$T/metrics" 2> "$T/metrics.type" || fail "GET /metrics"
grep -q '^text/plain; version=0.0.4' "$T/metrics.type" \
    || fail "/metrics content type: $(cat "$T/metrics.type")"
grep -q '^exgate_upstream_up{upstream="deribit"} 1$' "$T/metrics" || fail "/metrics: upstream not up"
if command -v promtool >/dev/null; then
    out=$(promtool check metrics < "$T/metrics" 2>&1) || fail "promtool check metrics: $out"
    prom="promtool ok"
else
    prom="promtool not installed, not run"
fi
ns curl -sf -w '%{stderr}%{content_type}' http://127.0.0.1:8610/ \
    > "$T/page" 2> "$T/page.type" || fail "GET /"
grep -q '^text/html' "$T/page.type" || fail "/ content type: $(cat "$T/page.type")"
grep -q '<title>exgate' "$T/page" || fail "/ is not the status page"
for f in status.json metrics page; do
    grep -qE 'xg-client-secret|xg-bot-secret' "$T/$f" && fail "a secret in $f"
done

# reload
c=$(cursor)
ns systemctl reload exgate > "$T/reload.log" 2>&1 || fail "systemctl reload: $(cat "$T/reload.log")"
if [ $type = notify ]; then
    journal_has "$c" "from PID $pid \(RELOADING=1" || fail "no RELOADING=1 from $pid"
    c2=$(ns journalctl -q --no-pager --after-cursor="$c" -o export \
        | awk -F= '/^__CURSOR=/ { cur = substr($0, 10) } /RELOADING=1/ { print cur; exit }')
    journal_has "$c2" "from PID $pid \(READY=1\)" || fail "no READY=1 after RELOADING=1"
fi
journal_has "$c" "exgate.service: Control process exited, code=exited, status=0/SUCCESS" \
    || fail "ExecReload did not exit 0"
[ "$(ns systemctl is-active exgate)" = active ] || fail "not active after reload"
[ "$(ns systemctl show -p MainPID --value exgate)" = "$pid" ] || fail "main PID changed on reload"
ns curl -sf http://127.0.0.1:8610/status > "$T/status2.json" || fail "GET /status after reload"
grep -q "$conn" "$T/status2.json" || fail "upstream reconnected on reload: $conn, now $(grep -o '"connection_id":[0-9]*' "$T/status2.json")"

# a secret as a file, as docs/running.md says: LoadCredential= in a
# drop-in, file:/run/credentials/exgate.service/NAME in the conf, and no
# longer in exgate.env
ns bash -ec "umask 077; mkdir -p /etc/exgate /etc/systemd/system/exgate.service.d
    printf xg-client-secret > /etc/exgate/deribit_secret
    printf '[Service]\nLoadCredential=deribit_secret:/etc/exgate/deribit_secret\n' \
        > /etc/systemd/system/exgate.service.d/credentials.conf
    sed -i 's|env:DERIBIT_CLIENT_SECRET|file:/run/credentials/exgate.service/deribit_secret|' '$conf'
    sed -i '/^DERIBIT_CLIENT_SECRET=/d' '$etc/exgate.env'
    grep -q file:/run/credentials '$conf'
    systemctl daemon-reload
    systemctl restart exgate" > "$T/cred.log" 2>&1 \
    || fail "LoadCredential=: $(cat "$T/cred.log"; ns journalctl -q -u exgate -n 5 -o cat)"
pid=$(ns systemctl show -p MainPID --value exgate)
status_ready "$T/status3.json" || fail "with LoadCredential=, not ready: $(cat "$T/status3.json")"

# hardening
sec=$(ns systemd-analyze security exgate --no-pager 2>&1 | sed -n 's/.*Overall exposure level for exgate.service: \([0-9.]*\).*/\1/p')
[ -n "$sec" ] || fail "systemd-analyze security gave no exposure"
awk -v e="$sec" 'BEGIN { exit !(e <= 2.0) }' || fail "systemd-analyze security exposure $sec > 2.0"

# stop
c=$(cursor)
ns systemctl stop exgate || fail "systemctl stop"
if [ $type = notify ]; then
    journal_has "$c" "from PID $pid \(STOPPING=1\)" || fail "no STOPPING=1"
fi
journal_has "$c" "exgate.service: Main process exited, code=exited, status=0/SUCCESS" \
    || fail "exgate did not exit 0 on stop"
[ "$(ns systemctl is-active exgate)" = inactive ] || fail "still active after stop"
ns journalctl -q --no-pager -u exgate -o cat \
    | grep -E 'ERROR: AddressSanitizer|ERROR: LeakSanitizer|runtime error:|SUMMARY: UndefinedBehaviorSanitizer' \
    && fail "a sanitizer report in exgate's journal"

echo "systemd $("$SYSTEMD" --version | head -1 | cut -d' ' -f2) booted in ${t_boot} ms; Type=$type$san;" \
    "enable --now ${t_start} ms; user $user ($uid); nofile $have; $prom; exposure $sec"
echo "PASS"
