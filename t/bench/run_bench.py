#!/usr/bin/env python3
"""exgate benchmarks: the standard sets behind `make bench` (fanout,
restore, memory, idle) and `make bench-edge` (edge).

Runs, side by side in one run on 127.0.0.1, against one `exsim --bench 300`:

  fanout   one bench channel to N = 1, 10, 100, 1000 clients, flat out and at
           1k and 10k msgs/s, through each of
             limit   t/bench/bench_limit: a plain writer and a plain reader,
                     N sockets, 64 pre-framed messages a send (flat only:
                     what the kernel delivers, the flat-out yardstick)
             client-cap  the bench client reading bench_limit --serve
                     (flat only: the most the bench client can measure)
             direct  N clients straight to exsim (each its own upstream)
             raw     t/bench/bench_raw: one upstream, bytes copied to N sockets
             exgate  one exgate websocket listener (one upstream subscription)
             exgate-tcp  the same over a tcp listener
             nginx   nginx as a 1:1 WebSocket proxy (skipped if not installed)
           and, at N=100, each system again at half its flat-out rate
  restore  exsim `drop` -> first message on every channel, 1/100/1000 channels
  memory   exgate RSS per idle and per subscribed client, 1k and 10k clients
  idle     exgate CPU over 60 s with 100 idle clients
  edge     issue 17: a real redis-server (no persistence), a core exgate
           publishing into it and an edge exgate reading it; bots on the
           core's and on the edge's listener over one window (--sync) on
           100 channels at 10/s each (1k msgs/s) and at 1000/s each (100k
           msgs/s), and on 1 channel at 1000/s: latency on the intended-
           time basis and the edge's added latency; then the core alone
           writing into Redis with exsim flat out, 1 and 100 channels,
           paced by Redis' acknowledgements and unpaced (skipped with a
           note when /usr/bin/redis-server is missing)

Prints one JSON line per measurement as it goes, then a table, the fan-out
counters, and the targets of issues 7, 16 and 17 with their verdicts. The systems under test run on CPU 1,
exsim and the bench client on CPU 0 (taskset), when there are 2 CPUs.

Usage: run_bench.py [--builddir DIR] [--duration S] [--warmup S]
                    [--only fanout,restore,memory,idle,edge] [--smoke]
                    [--out FILE]
                    [--no-pin] [--clients 1,10,100,1000] [--rates 0,1000,10000]
                    [--repeat 3] [--half-clients 100] [--perf DIR] [--tls]
                    [--reference-min-n 100]
                    [--systems limit,client-cap,direct,raw,exgate,exgate-tcp,
                               nginx]
BENCH_NGINX=PATH picks the nginx binary, BENCH_NGINX=none skips nginx.
BENCH_EXGATE=PATH runs another exgate binary with this build's tools.
BENCH_REDIS=PATH picks the redis-server binary. Edge scenario options:
--edge-points 10x100,10x100s,1000x100,1000x1 --edge-publish paced:1,paced:100,
flat:1,flat:100 --edge-bots 1 --edge-warmup 1 --redis-cpu 0.
"""

import argparse
import json
import os
import re
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                "..", "integ"))
# the tests' exsim control client and port picker
from upstream_harness import Fail, exsim_control, free_port  # noqa: E402

SIZE = 300                      # bytes per bench message
# Offered deliveries/s above which a fixed-rate point is not run. At a fixed
# rate exsim does not wait for slow readers: where exsim itself fans out
# (direct, nginx) an overload grows its buffers (64 MiB a connection) and
# starves its loop, so those two stop at 300k; through exgate and raw the
# upstream carries one stream and memory stays bounded (exgate's output
# limit, raw's pause), so they go up to 1M.
# exgate's client_output_limit in the bench. Flat out, exgate now writes
# faster than the one bench client process reads 100 WebSocket clients, so
# each client's queue sits near its limit; 4 MiB (the old figure) closed
# all 100 as slow consumers in some runs. The default limit (32 MiB) is
# kept where N x limit stays within 2 GiB, and never less than 4 MiB.
OUT_LIMIT_MIN = 4 << 20
# the systems --tls runs: exgate reads exsim over wss://, limit takes no
# upstream
TLS_SYSTEMS = ("limit", "exgate", "exgate-tcp")
OUT_LIMIT_MAX = 32 << 20
# The edge scenario (issue 17): the prefix of the core's streams
EDGE_PREFIX = "xgb"
# paced publish throughput: entries on their way at most (the core's own
# in-flight bound is 16384: below it nothing is dropped)
PUB_WINDOW = 12000


def out_limit_for(n):
    return max(OUT_LIMIT_MIN, min(OUT_LIMIT_MAX, (2 << 30) // max(n, 1)))


# The fan-out points the targets use; run --repeat times, with every
# system at N=100 and with these at N=1000 flat out.
TARGET_POINTS = [(100, 0), (100, 1000), (1000, 0)]
ROUND_SYSTEMS_1000 = ("limit", "raw", "exgate", "exgate-tcp")
# The other points of issue 16's CPU target (exgate / raw at 1k and 10k
# msgs/s, every N), run --repeat times too with those two systems only:
# one round of N=1 ranges over 0.9 to 1.6 on a shared machine.
CPU_POINTS = [(1, 1000), (1, 10000), (10, 1000), (10, 10000), (100, 10000),
              (1000, 1000)]
CPU_SYSTEMS = ("raw", "exgate")
# Up to this N the CPU target reads raw and exgate run at the same moment
# (Bench.paired_point): a point's CPU time there is small enough for one
# 4 s window of machine noise to decide a 10 % question.
PAIRED_MAX_N = 10
# References no target reads below N=100 (direct: N clients straight to
# exsim; client-cap: what the bench client takes): --reference-min-n
# keeps them to the larger N, which keeps `make bench` under 10 minutes.
REFERENCES = ("direct", "client-cap")

RATE_CAP = {"direct": 300_000, "nginx": 300_000, "raw": 1_000_000,
            "exgate": 1_000_000, "exgate-tcp": 1_000_000}

# The limit probe (t/bench/bench_limit): K pre-framed messages per send.
LIMIT_K = 64
# Systems that only run flat out: the probe, and the bench client reading
# the probe's writer as a WebSocket server (what the bench can measure).
FLAT_ONLY = ("limit", "client-cap")
# A point whose reader ran or waited to run more than this share of the
# window was limited by its reader: marked client-bound, not a verdict.
CLIENT_BOUND = 0.9


def client_busy(r):
    """The share of the window the reader of fan-out result R ran or
    waited to run (CPU time plus the scheduler's run delay), or None."""
    win = r.get("window_s")
    cpu = r.get("client_cpu_s")
    if not win or cpu is None:
        return None
    return (cpu + max(r.get("client_wait_s") or 0, 0)) / win


def is_client_bound(r):
    b = client_busy(r)
    return b is not None and b > CLIENT_BOUND


IO_KEYS = ("sends", "send_bytes", "send_messages", "would_block", "partial",
           "queued_writes", "queued_bytes", "batches", "batch_messages",
           "up_reads", "up_read_bytes", "up_messages", "up_acks")


def io_summary(a, b):
    """The fan-out counters over a window, from two snapshots A and B (as
    made by Bench.io_snapshot): totals, means and the sends and batches by
    the messages they carried."""
    d = {k: b.get(k, 0) - a.get(k, 0) for k in IO_KEYS if k in b}
    for h in ("sends_by_messages", "batches_by_messages"):
        if h in b:
            d[h] = {k: v - a.get(h, {}).get(k, 0) for k, v in b[h].items()}

    def per(x, y):
        return round(d[x] / d[y], 2) if d.get(y) else None
    d["msgs_per_send"] = per("send_messages", "sends")
    d["bytes_per_send"] = per("send_bytes", "sends")
    d["msgs_per_batch"] = per("batch_messages", "batches")
    d["msgs_per_read"] = per("up_messages", "up_reads")
    d["acks_per_read"] = per("up_acks", "up_reads")
    return d



def point_args(a):
    """Fills in A (a tool's parsed arguments: builddir, system, clients,
    rate, duration, warmup) with what Bench reads of its arguments
    otherwise, at their defaults: the one-point tools (callgrind_point.py,
    syscalls_point.py) measure a fan-out point as make bench does."""
    for k, v in (("tls", False), ("no_pin", False), ("perf", None),
                 ("out", None), ("smoke", False), ("half_clients", ""),
                 ("redis_cpu", -1), ("reference_min_n", 100)):
        if not hasattr(a, k):
            setattr(a, k, v)
    a.sut_name = "exgate" if a.system == "exgate" else "raw"
    return a

class BenchError(Exception):
    pass


def proc_cpu(pid):
    """utime + stime of PID in seconds (from /proc/PID/stat)."""
    with open("/proc/%d/stat" % pid) as f:
        s = f.read()
    fields = s[s.rindex(")") + 2:].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def tcp_acks(pid, port):
    """The pure ACKs (segments out without data) PID's TCP connections to
    127.0.0.1:PORT have sent, from ss(8)'s TCP_INFO; None without ss.
    The kernel bills a loopback ACK's whole journey, the peer's receipt
    of it included, to the process whose read sent it: a relay that ACKs
    each read pays for it, one whose socket delays its ACKs does not
    (docs/performance.md, "The upstream's ACKs")."""
    try:
        out = subprocess.run(
            ["ss", "-tinpH", "state", "established", "dst",
             "127.0.0.1:%d" % port], capture_output=True, text=True,
            timeout=10).stdout
    except (OSError, subprocess.TimeoutExpired):
        return None
    acks, mine = 0, False
    for line in out.splitlines():
        if not line[:1].isspace():
            mine = ("pid=%d," % pid) in line
            continue
        if mine:
            f = dict(kv.split(":", 1) for kv in line.split() if ":" in kv)
            acks += int(f.get("segs_out", 0)) - int(f.get("data_segs_out", 0))
    return acks


def proc_runtime(pid):
    """CPU time of all PID's threads in seconds, to the nanosecond (the
    scheduler's sum_exec_runtime, /proc/PID/task/*/schedstat); None where
    the kernel has no schedstat. An idle exgate uses a few ms a minute,
    below the 10 ms ticks of /proc/PID/stat."""
    total = 0
    try:
        for t in os.listdir("/proc/%d/task" % pid):
            with open("/proc/%d/task/%s/schedstat" % (pid, t)) as f:
                total += int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return None
    return total / 1e9


def proc_rss_kib(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise BenchError("no VmRSS for pid %d" % pid)


class Bench:
    def __init__(self, args):
        self.a = args
        self.bd = os.path.abspath(args.builddir)
        self.tmp = tempfile.mkdtemp(prefix="xg-bench-")
        self.procs = []
        self.results = []
        self.out_limit = OUT_LIMIT_MIN
        self.notes = []
        self.exsim = None
        self.gate = None
        self.nginx = None
        self.perfs = {}     # --perf: a recorder by PID (paired: two at once)
        self.half_ns = [int(x) for x in args.half_clients.split(",") if x]
        self.core = self.edge = self.redis = None
        self.redis_bin = os.environ.get("BENCH_REDIS",
                                        "/usr/bin/redis-server")
        self.redis_cpu = None if args.redis_cpu < 0 else args.redis_cpu
        ncpu = os.cpu_count() or 1
        self.taskset = (shutil.which("taskset")
                        if ncpu >= 2 and not args.no_pin else None)
        self.bin = {
            "exsim": os.path.join(self.bd, "t", "sim", "exsim"),
            "exgate": os.path.join(self.bd, "src", "exgate"),
            "client": os.path.join(self.bd, "t", "bench", "bench_client"),
            "raw": os.path.join(self.bd, "t", "bench", "bench_raw"),
            "limit": os.path.join(self.bd, "t", "bench", "bench_limit"),
        }
        # another exgate binary with this build's bench tools and exsim
        # (e.g. an older commit's, for a before/after in one setting)
        if os.environ.get("BENCH_EXGATE"):
            self.bin["exgate"] = os.environ["BENCH_EXGATE"]
        for k, p in self.bin.items():
            if not os.access(p, os.X_OK):
                raise BenchError("%s not built: %s (run make first)" % (k, p))

    # ---- processes ------------------------------------------------------

    def pin(self, argv, cpu):
        if self.taskset and cpu is not None:
            return [self.taskset, "-c", str(cpu)] + argv
        return argv

    def spawn(self, name, argv, cpu, stdin=subprocess.DEVNULL):
        err = open(os.path.join(self.tmp, name + ".err"), "a")
        p = subprocess.Popen(self.pin(argv, cpu), stdout=subprocess.PIPE,
                             stderr=err, stdin=stdin, text=True)
        err.close()
        p.bench_name = name
        self.procs.append(p)
        return p

    def err_tail(self, name, n=15):
        try:
            with open(os.path.join(self.tmp, name + ".err")) as f:
                return "".join(f.readlines()[-n:])
        except OSError:
            return ""

    def stop(self, p, timeout=5):
        if p is None:
            return None
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
            try:
                p.wait(timeout)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        if p.stdout:
            p.stdout.close()
        if p in self.procs:
            self.procs.remove(p)
        return p.returncode

    def sanitizer_reports(self):
        """Names of the stderr files (and the exgate log) in which a
        sanitizer build reported something."""
        bad = []
        for name in sorted(os.listdir(self.tmp)):
            if not name.endswith((".err", ".log")):
                continue
            with open(os.path.join(self.tmp, name), errors="replace") as f:
                text = f.read()
            if "Sanitizer" in text or "runtime error:" in text:
                bad.append(name)
        return bad

    def close(self):
        for p in list(reversed(self.procs)):
            self.stop(p, 3)
        if os.environ.get("XG_KEEP_TMP"):
            sys.stderr.write("kept %s\n" % self.tmp)
        else:
            shutil.rmtree(self.tmp, ignore_errors=True)

    def readline(self, p, pattern, timeout, what):
        """Reads P's stdout until a line matches PATTERN; returns the match."""
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            line = p.stdout.readline()
            if not line:
                break
            m = re.search(pattern, line)
            if m:
                return m
        raise BenchError("%s: no %r line; stderr:\n%s" % (
            what, pattern, self.err_tail(p.bench_name)))

    # ---- exsim ----------------------------------------------------------

    def make_cert(self):
        """--tls: a self-signed certificate for 127.0.0.1 in the temp dir."""
        self.cert = os.path.join(self.tmp, "cert.pem")
        key = os.path.join(self.tmp, "key.pem")
        subprocess.run([os.environ.get("OPENSSL_BIN", "openssl"), "req",
                        "-x509", "-newkey", "ec", "-pkeyopt",
                        "ec_paramgen_curve:prime256v1", "-nodes", "-keyout",
                        key, "-out", self.cert, "-days", "1", "-subj",
                        "/CN=localhost", "-addext",
                        "subjectAltName=IP:127.0.0.1"], check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        return ["--tls-cert", self.cert, "--tls-key", key]

    def start_exsim(self):
        tls = self.make_cert() if self.a.tls else []
        p = self.spawn("exsim", [self.bin["exsim"], "--bench", str(SIZE),
                                 "--rate", "1000", "--max-connections", "0",
                                 "--no-rate-limit", "--log-level", "warn",
                                 "--listen", "127.0.0.1:0",
                                 "--control", "127.0.0.1:0"] + tls, 0)
        m = self.readline(p, r"exsim ready ws=(\d+) control=(\d+)", 10,
                          "exsim")
        self.exsim = p
        self.ws_port = int(m.group(1))
        self.ctl_port = int(m.group(2))
        self.ws_url = "%s://127.0.0.1:%d/ws/api/v2" % (
            "wss" if self.a.tls else "ws", self.ws_port)

    def control(self, cmd, timeout=30):
        try:
            r = exsim_control(self.ctl_port, cmd, timeout)
        except (OSError, Fail) as e:
            raise BenchError("exsim control %r: %s" % (cmd, e))
        if r.get("ok") is False:
            raise BenchError("exsim control %r: %r" % (cmd, r))
        return r

    def wait_unsubscribed(self, timeout=30):
        """Until exsim has no bench subscriber left (the last run's
        connections are gone)."""
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            subs = self.control("stats").get("subscribed", {})
            if not any(k.startswith("bench.") for k in subs):
                return
            time.sleep(0.05)
        raise BenchError("exsim still has bench subscribers: %r" % subs)

    # ---- exgate ---------------------------------------------------------

    def start_gate(self):
        """Starts exgate; free_port() can race with another process taking
        the port first, so a start that fails is tried again on new ports."""
        for attempt in range(4):
            try:
                return self.start_gate_once()
            except BenchError as e:
                if attempt == 3 or "already in use" not in str(e):
                    raise
                self.note("exgate start: %s; trying other ports"
                          % str(e).strip().splitlines()[-1][-120:])

    def start_gate_once(self):
        self.gate_port = free_port()
        self.gate_tcp_port = free_port()
        self.admin_port = free_port()
        conf = os.path.join(self.tmp, "exgate.conf")
        with open(conf, "w") as f:
            f.write(
                "error_log %s warn;\n"
                "# bounds memory when the clients fall behind flat out\n"
                "client_output_limit %d 0 0;\n"
                "upstream sim {\n"
                "    url %s;\n%s"
                "    protocol deribit;\n"
                "    reconnect fixed { delay 1ms; }\n"
                "}\n"
                "listen 127.0.0.1:%d websocket upstream=sim "
                "max_clients=20000;\n"
                "listen 127.0.0.1:%d tcp upstream=sim max_clients=20000;\n"
                "admin 127.0.0.1:%d;\n"
                % (os.path.join(self.tmp, "exgate.log"), self.out_limit,
                   self.ws_url,
                   "    tls_ca %s;\n" % self.cert if self.a.tls else "",
                   self.gate_port, self.gate_tcp_port, self.admin_port))
        p = self.spawn("exgate", [self.bin["exgate"], "-c", conf], 1)
        self.gate = p
        self.gate_url = "ws://127.0.0.1:%d/ws/api/v2" % self.gate_port
        end = time.monotonic() + 15
        while time.monotonic() < end:
            if p.poll() is not None:
                self.stop(p)
                self.gate = None
                raise BenchError("exgate exited: %s%s" % (
                    self.err_tail("exgate"), self.gate_log()))
            try:
                st = self.status()
                if all(u.get("state") == "ready"
                       for u in st.get("upstreams", [])):
                    return
            except OSError:
                pass
            time.sleep(0.05)
        raise BenchError("exgate upstream not ready: %s" % self.gate_log())

    def status(self):
        url = "http://127.0.0.1:%d/status" % self.admin_port
        with urllib.request.urlopen(url, timeout=5) as r:
            return json.loads(r.read().decode())

    def gate_log(self, n=20):
        try:
            with open(os.path.join(self.tmp, "exgate.log")) as f:
                return "".join(f.readlines()[-n:])
        except OSError:
            return ""

    # ---- nginx ----------------------------------------------------------

    def start_nginx(self):
        exe = os.environ.get("BENCH_NGINX") or shutil.which("nginx") or (
            "/usr/sbin/nginx" if os.access("/usr/sbin/nginx", os.X_OK)
            else None)
        if exe == "none" or exe is None or not os.access(exe, os.X_OK):
            self.note("nginx: not installed (Debian: apt-get install "
                      "nginx-light): nginx scenario skipped")
            return False
        port = free_port()
        d = os.path.join(self.tmp, "nginx")
        os.makedirs(d, exist_ok=True)
        conf = os.path.join(d, "nginx.conf")
        temps = "".join("    %s_temp_path %s/%s;\n" % (t, d, t) for t in
                        ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
        with open(conf, "w") as f:
            f.write(
                "daemon off;\nmaster_process off;\nworker_processes 1;\n"
                "worker_rlimit_nofile 65536;\n"
                "pid %s/nginx.pid;\nerror_log %s/error.log warn;\n"
                "events { worker_connections 30000; }\n"
                "http {\n    access_log off;\n%s"
                "    server {\n        listen 127.0.0.1:%d;\n"
                "        location / {\n"
                "            proxy_pass http://127.0.0.1:%d;\n"
                "            proxy_http_version 1.1;\n"
                "            proxy_set_header Upgrade $http_upgrade;\n"
                "            proxy_set_header Connection \"upgrade\";\n"
                "            proxy_set_header Host $host;\n"
                "            proxy_read_timeout 3600s;\n"
                "            proxy_send_timeout 3600s;\n"
                "        }\n    }\n}\n" % (d, d, temps, port, self.ws_port))
        t = subprocess.run([exe, "-t", "-p", d, "-c", conf, "-e",
                            os.path.join(d, "error.log")],
                           capture_output=True, text=True)
        if t.returncode != 0:
            self.note("nginx: conf test failed, scenario skipped: %s"
                      % t.stderr.strip().splitlines()[-1:])
            return False
        p = self.spawn("nginx", [exe, "-p", d, "-c", conf, "-e",
                                 os.path.join(d, "error.log")], 1)
        end = time.monotonic() + 10
        while time.monotonic() < end:
            if p.poll() is not None:
                self.note("nginx: exited at start, skipped: %s"
                          % self.err_tail("nginx", 3))
                return False
            try:
                socket.create_connection(("127.0.0.1", port), 1).close()
                break
            except OSError:
                time.sleep(0.05)
        self.nginx = p
        self.nginx_url = "ws://127.0.0.1:%d/ws/api/v2" % port
        v = subprocess.run([exe, "-v"], capture_output=True, text=True)
        self.nginx_version = (v.stderr or v.stdout).strip()
        return True

    # ---- output ---------------------------------------------------------

    def note(self, text):
        self.notes.append(text)
        sys.stderr.write("bench: %s\n" % text)

    def emit(self, obj):
        self.results.append(obj)
        line = json.dumps(obj, sort_keys=False, separators=(",", ":"))
        print(line, flush=True)
        if self.a.out:
            with open(self.a.out, "a") as f:
                f.write(line + "\n")

    # ---- the bench client -----------------------------------------------

    def client(self, url, n, args, cpu_pids, label, timeout=120,
               on_window=None):
        """Runs the bench client; ON_WINDOW("start" / "end") is called as
        its measuring window opens and closes (to read a system's own
        counters over the window). Returns its JSON result."""
        argv = [self.bin["client"], "--url", url, "-n", str(n),
                "--label", label, "--timeout", "60"] + args
        if cpu_pids:
            argv += ["--cpu-pid", ",".join(str(p) for p in cpu_pids)]
        p = self.spawn("client", argv, 0)
        killer = threading.Timer(timeout, p.kill)
        killer.start()
        lines = []
        try:
            for line in p.stdout:
                if line.startswith('{"window":'):
                    if on_window is not None:
                        try:
                            on_window(json.loads(line)["window"])
                        except (OSError, ValueError, KeyError,
                                BenchError) as e:
                            self.note("%s: window counters: %s" % (label, e))
                    continue
                if line.startswith("{"):
                    lines.append(line)
            p.wait()
        finally:
            killer.cancel()
        self.procs.remove(p)
        if not lines:
            raise BenchError("bench_client %s: no JSON line (rc %s):\n%s" % (
                label, p.returncode, self.err_tail("client")))
        return json.loads(lines[-1])

    # ---- scenario 1-4: fan-out ------------------------------------------

    def io_snapshot(self, system, raw=None):
        """The fan-out counters of SYSTEM now, flattened: exgate's /status
        "fanout" and its upstream's reads, or what bench_raw prints on
        SIGUSR1 (read back after the point: None here)."""
        if system == "raw":
            raw.send_signal(signal.SIGUSR1)
            return None
        st = self.status()
        d = dict(st.get("fanout", {}))
        ups = st.get("upstreams") or [{}]
        d["up_reads"] = ups[0].get("reads", 0)
        d["up_read_bytes"] = ups[0].get("read_bytes", 0)
        d["up_messages"] = ups[0].get("messages_in", 0)
        return d

    def raw_snapshots(self, skip):
        """bench_raw's counter lines after the first SKIP of raw.err, as
        snapshots like io_snapshot's."""
        out = []
        try:
            with open(os.path.join(self.tmp, "raw.err")) as f:
                lines = [l for l in f if l.startswith("bench_raw io ")]
        except OSError:
            return out
        for l in lines[skip:]:
            d = json.loads(l[len("bench_raw io "):])
            d["up_reads"] = d.pop("reads", 0)
            d["up_read_bytes"] = d.pop("read_bytes", 0)
            d["up_messages"] = d.pop("messages_in", 0)
            if "acks" in d:
                d["up_acks"] = d.pop("acks")
            # each upstream read is one batch
            d["batches"] = d["up_reads"]
            d["batch_messages"] = d["up_messages"]
            out.append(d)
        return out

    def perf_window(self, what, pid, name):
        """--perf DIR: `perf record -g` of PID over the measuring window,
        to DIR/NAME.data (its cost is in that point's figures)."""
        perfs = self.perfs
        if what == "start":
            os.makedirs(self.a.perf, exist_ok=True)
            perfs[pid] = subprocess.Popen(
                ["perf", "record", "-g", "-q", "-p", str(pid), "-o",
                 os.path.join(self.a.perf, name + ".data")],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        elif perfs.get(pid) is not None:
            perf = perfs.pop(pid)
            perf.send_signal(signal.SIGINT)
            try:
                perf.wait(30)
            except subprocess.TimeoutExpired:
                perf.kill()

    def limit_point(self, n, rnd=1, k=LIMIT_K):
        """The limit probe: bench_limit's own writer and reader."""
        label = "limit n=%d k=%d" % (n, k)
        argv = [self.bin["limit"], "-n", str(n), "-k", str(k), "--warmup",
                str(self.a.warmup), "--duration", str(self.a.duration),
                "--label", label]
        if self.taskset:
            argv += ["--cpus", "1,0"]     # as the systems and the client
        try:
            p = subprocess.run(argv, capture_output=True, text=True,
                               timeout=60 + self.a.warmup + self.a.duration)
        except subprocess.TimeoutExpired:
            raise BenchError("%s: timed out" % label)
        lines = [l for l in p.stdout.splitlines() if l.startswith("{")]
        if p.returncode != 0 or not lines:
            raise BenchError("%s: rc %s: %s" % (label, p.returncode,
                                                p.stderr.strip()[-300:]))
        r = json.loads(lines[-1])
        d = r.get("deliveries") or 0
        out = {
            "scenario": "fanout", "system": "limit", "clients": n, "rate": 0,
            "msg_bytes": SIZE, "round": rnd, "k": k,
            "deliveries_per_s": round(r.get("deliveries_per_s", 0)),
            "sut_cpu_s": r.get("writer_cpu_s"),
            "sut_cpu_s_per_m": (r["writer_cpu_s"] / (d / 1e6)
                                if d and r.get("writer_cpu_s", -1) >= 0
                                else None),
            "client_cpu_s": r.get("reader_cpu_s"),
            "client_wait_s": r.get("reader_wait_s"),
            "window_s": r.get("window_s"), "reads": r.get("reads"),
            "gaps": 0, "closed": 0, "ok": bool(r.get("ok")),
        }
        self.mark(out)
        self.emit(out)

    def mark(self, out):
        busy = client_busy(out)
        if busy is not None:
            out["client_busy"] = round(busy, 3)
        out["client_bound"] = is_client_bound(out)

    def fanout_point(self, system, n, rate, rnd=1, half=False):
        if system == "limit":
            return self.limit_point(n, rnd)
        # the clients join at 10 msgs/s; the bench client sets RATE once
        # every one of them is subscribed (flat out: paced by credit it
        # gives, none left over from the last point)
        self.control("rate 10")
        self.control("credit -1")
        pt = self.point_start(system, n, rate, rnd)
        try:
            r = self.client(pt["url"], n, pt["args"], pt["pids"],
                            pt["label"], on_window=pt["on_window"])
        finally:
            self.point_helpers_stop(pt)
        if system != "client-cap":
            self.wait_unsubscribed()
        self.point_finish(pt, r, "fanout_half" if half else "fanout")

    def point_start(self, system, n, rate, rnd, paired=False):
        """What a fan-out point of SYSTEM needs before its bench client
        runs: the system started (a fresh exgate, a bench_raw, the
        probe's writer), its URL, the client's arguments and the window
        hook that reads the system's own counters."""
        pt = {"system": system, "n": n, "rate": rate, "rnd": rnd,
              "raw": None, "cap": None, "snaps": {},
              "label": "%s n=%d rate=%s%s" % (system, n, rate or "flat",
                                               " paired" if paired else ""),
              "raw_skip": len(self.raw_snapshots(0))}
        extra = ["--control", str(self.ctl_port), "--start-rate", str(rate)]
        if system == "direct":
            url, pids = self.ws_url, [self.exsim.pid]
        elif system in ("exgate", "exgate-tcp"):
            # a fresh exgate (and upstream connection) for every point: what
            # exsim still had queued for the last one (an overloaded point
            # leaves megabytes) would otherwise delay this one
            self.restart_gate(out_limit_for(n))
            url, pids = self.gate_url, [self.gate.pid]
            if system == "exgate-tcp":
                url = "tcp://127.0.0.1:%d" % self.gate_tcp_port
        elif system == "nginx":
            url, pids = self.nginx_url, [self.nginx.pid]
        elif system == "client-cap":
            # the probe's writer as a WebSocket server: sequenced messages,
            # K a send, nothing else done; exsim is not involved
            argv = [self.bin["limit"], "--serve", "-n", str(n), "-k",
                    str(LIMIT_K)]
            if self.taskset:
                argv += ["--cpus", "1,0"]
            pt["cap"] = self.spawn("cap", argv, None)
            m = self.readline(pt["cap"], r"bench_limit ready port=(\d+)", 10,
                              "client-cap")
            url = "ws://127.0.0.1:%s/ws/api/v2" % m.group(1)
            pids = [pt["cap"].pid]
            extra = []
        else:
            pt["raw"] = self.spawn("raw", [
                self.bin["raw"], "--upstream",
                "127.0.0.1:%d/ws/api/v2" % self.ws_port, "-n", str(n)], 1)
            m = self.readline(pt["raw"], r"bench_raw ready port=(\d+)", 10,
                              "raw")
            url = "ws://127.0.0.1:%s/ws/api/v2" % m.group(1)
            pids = [pt["raw"].pid]
        snaps = pt["snaps"]

        def on_window(what):
            snaps[what + "_gen"] = proc_cpu(self.exsim.pid)
            if system in ("exgate", "exgate-tcp", "raw"):
                snaps[what] = self.io_snapshot(system, pt["raw"])
                if system != "raw":     # bench_raw counts its own
                    snaps[what + "_acks"] = tcp_acks(pids[0], self.ws_port)
            if self.a.perf and system in ("exgate", "exgate-tcp", "raw"):
                self.perf_window(what, pids[0], "%s-n%d-%s-r%d%s" % (
                    system, n, rate or "flat", rnd,
                    "-paired" if paired else ""))

        pt.update(url=url, pids=pids, on_window=on_window,
                  args=["--rate", str(rate), "--duration",
                        str(self.a.duration), "--warmup",
                        str(self.a.warmup)] + extra)
        return pt

    def point_helpers_stop(self, pt):
        for helper in (pt["raw"], pt["cap"]):
            if helper is not None:
                try:
                    helper.wait(5)
                except subprocess.TimeoutExpired:
                    pass
                self.stop(helper)

    def point_finish(self, pt, r, scenario):
        """The point's result line from the bench client's result R."""
        system, rate, snaps = pt["system"], pt["rate"], pt["snaps"]
        if system == "raw":
            rs = self.raw_snapshots(pt["raw_skip"])
            if len(rs) >= 2:
                snaps["start"], snaps["end"] = rs[0], rs[1]
        lat = r.get("lat_intended_us") if rate else r.get("lat_us")
        out = {
            "scenario": scenario,
            "system": system, "clients": pt["n"],
            "rate": rate, "msg_bytes": SIZE, "round": pt["rnd"],
            "deliveries_per_s": round(r.get("deliveries_per_s", 0)),
            "sut_cpu_s_per_m": r.get("sut_cpu_s_per_m"),
            "sut_cpu_s": r.get("sut_cpu_s"),
            "client_cpu_s": r.get("client_cpu_s"),
            "client_wait_s": r.get("client_wait_s"),
            "client_reads": r.get("client_reads"),
            "window_s": r.get("window_s"),
            "latency_basis": "intended" if rate else "sent",
            "lat_us": lat, "lat_sent_us": r.get("lat_us"),
            "gaps": r.get("gaps"), "closed": r.get("closed"),
            "open": r.get("open"), "acked": r.get("acked"),
            "setup_s": r.get("setup_s"),
            "last_close": r.get("last_close"), "ok": r.get("ok"),
        }
        if snaps.get("start") and snaps.get("end"):
            for w in ("start", "end"):
                if snaps.get(w + "_acks") is not None:
                    snaps[w]["up_acks"] = snaps[w + "_acks"]
            out["io"] = io_summary(snaps["start"], snaps["end"])
        if "start_gen" in snaps and "end_gen" in snaps and system not in (
                "direct", "client-cap"):
            # exsim, the generator, shares the bench client's CPU
            out["gen_cpu_s"] = round(snaps["end_gen"] - snaps["start_gen"],
                                     2)
        self.mark(out)
        if not r.get("ok"):
            out["error"] = self.err_tail("client", 3).strip()[-300:]
        self.emit(out)

    def paired_point(self, n, rate, rnd):
        """raw and exgate at the same point at the same moment: both on
        CPU 1, fed by the one exsim (the same messages, sent to the two
        upstream connections together), each read by its own bench
        client on CPU 0 over windows that open within milliseconds of
        each other. Their CPU per delivery is then measured in the same
        machine state: on a shared VM one client's CPU time moves by a
        third from one 4 s window to the next (docs/performance.md, How
        it measures, "At the same moment"), which sequential rounds
        cannot tell from a difference of 10 %. Each pays for sharing the
        CPU with the other, alike. Results are "fanout_paired" lines."""
        self.control("rate 10")
        self.control("credit -1")
        pts, res, errs = [], {}, {}
        try:
            # exgate first: restarting it waits for exsim to have no bench
            # subscriber left, which bench_raw's would be
            for system in ("exgate", "raw"):
                pts.append(self.point_start(system, n, rate, rnd, True))

            def run(pt):
                try:
                    res[pt["system"]] = self.client(
                        pt["url"], n, pt["args"], pt["pids"], pt["label"],
                        on_window=pt["on_window"])
                except (BenchError, OSError, ValueError) as e:
                    errs[pt["system"]] = e

            th = [threading.Thread(target=run, args=(pt,)) for pt in pts]
            for t in th:
                t.start()
            for t in th:
                t.join()
        finally:
            for pt in pts:
                self.point_helpers_stop(pt)
        if errs:
            raise BenchError("; ".join("%s: %s" % kv for kv in errs.items()))
        self.wait_unsubscribed()
        for pt in pts:
            self.point_finish(pt, res[pt["system"]], "fanout_paired")

    def run_paired(self, n, rate, rnd):
        try:
            self.paired_point(n, rate, rnd)
        except (BenchError, OSError, ValueError,
                subprocess.SubprocessError) as e:
            self.note("fanout paired n=%d rate=%d failed: %s" % (n, rate, e))
            for system in CPU_SYSTEMS:
                self.emit({"scenario": "fanout_paired", "system": system,
                           "clients": n, "rate": rate, "round": rnd,
                           "ok": False, "error": str(e)[:300]})

    def run_point(self, system, n, rate, rnd, half=False):
        try:
            self.fanout_point(system, n, rate, rnd, half)
        except (BenchError, OSError, ValueError,
                subprocess.SubprocessError) as e:
            self.note("fanout %s n=%d rate=%d failed: %s"
                      % (system, n, rate, e))
            self.emit({"scenario": "fanout_half" if half else "fanout",
                       "system": system, "clients": n, "rate": rate,
                       "round": rnd, "ok": False, "error": str(e)[:300]})

    def fanout(self):
        want = self.a.systems.split(",")
        systems = ["limit", "client-cap", "direct", "raw", "exgate",
                   "exgate-tcp"]
        if "nginx" in want and self.start_nginx():
            systems.append("nginx")
        systems = [x for x in systems if x in want]
        if self.a.tls:
            # only exgate speaks TLS to its upstream
            left = [x for x in systems if x not in TLS_SYSTEMS]
            if left:
                self.note("--tls: %s skipped (no TLS upstream)"
                          % ",".join(left))
            systems = [x for x in systems if x in TLS_SYSTEMS]
        ns = [2] if self.a.smoke else [int(x) for x in
                                       self.a.clients.split(",")]
        rates = [1000] if self.a.smoke else [int(x) for x in
                                             self.a.rates.split(",")]
        points = [(n, rate, 1) for n in ns for rate in rates]
        if self.a.smoke:
            points.insert(0, (2, 0, 1))     # flat out: the probes only
        # The points the targets read are run again, after the whole set,
        # each round all systems one after the other: the targets are the
        # medians of per-round ratios, so one noisy minute moves no target.
        # (The CPU points up to PAIRED_MAX_N are run again at the same
        # moment instead, below.)
        for rnd in range(2, self.a.repeat + 1):
            points += [(n, rate, rnd) for n, rate in TARGET_POINTS
                       + [(n, r) for n, r in CPU_POINTS
                          if n > PAIRED_MAX_N or not self.a.paired_rounds]
                       if n in ns and rate in rates]
        for n, rate, rnd in points:
            for system in systems:
                if system in FLAT_ONLY and rate:
                    continue
                if system in REFERENCES and n < self.a.reference_min_n \
                        and not self.a.smoke:
                    continue
                if self.a.smoke and not rate and system not in FLAT_ONLY:
                    continue
                if rnd > 1 and (system == "client-cap" or (
                        n == 1000 and system not in ROUND_SYSTEMS_1000)):
                    continue    # diagnostics and references: one round
                if rnd > 1 and (n, rate) in CPU_POINTS \
                        and system not in CPU_SYSTEMS:
                    continue
                if rate * n > RATE_CAP.get(system, 0):
                    if rnd == 1:
                        self.note("fanout %s n=%d rate=%d: offered %d "
                                  "deliveries/s is over its %d cap: not run"
                                  % (system, n, rate, n * rate,
                                     RATE_CAP[system]))
                    continue
                self.run_point(system, n, rate, rnd)
        # the CPU target's points with few clients, raw and exgate at once
        # (the smoke run: one round at its own point, so the path is run)
        if all(x in systems for x in CPU_SYSTEMS):
            if self.a.smoke:
                pairs, nrounds = [(ns[0], rates[0])], 1
            else:
                pairs = [(n, r) for n, r in CPU_POINTS
                         if n <= PAIRED_MAX_N and n in ns and r in rates]
                nrounds = self.a.paired_rounds
            for rnd in range(1, nrounds + 1):
                for n, rate in pairs:
                    self.run_paired(n, rate, rnd)
        # p99 at half of each system's own flat-out rate (its first round):
        # latency under a load it can carry, whatever that load is
        if 0 in rates and not self.a.smoke:
            for n in [x for x in ns if x in self.half_ns]:
                for system in systems:
                    if system in FLAT_ONLY:
                        continue
                    f = self.find("fanout", system=system, clients=n, rate=0)
                    if not f or not f.get("deliveries_per_s"):
                        continue
                    rate = max(1, int(f["deliveries_per_s"] / n / 2))
                    self.run_point(system, n, rate, 1, half=True)
        if self.nginx is not None:
            self.stop(self.nginx)
            self.nginx = None

    # ---- scenario 5: restore --------------------------------------------

    def restore(self):
        ks = [1] if self.a.smoke else [1, 100, 1000]
        self.restart_gate()
        # a slow steady rate shows every channel flowing before each drop;
        # during the restore the client asks exsim for one message on every
        # subscribed channel each millisecond (`burst 1`)
        self.control("rate 10")
        for k in ks:
            r = self.client(self.gate_url, 1, [
                "--mode", "restore", "--channels", str(k), "--control",
                str(self.ctl_port), "--repeat", "1" if self.a.smoke else "3"],
                None, "restore k=%d" % k)
            cyc = r.get("cycles", [])
            out = {"scenario": "restore", "system": "exgate", "channels": k,
                   "rate": 10, "cycles": cyc, "ok": r.get("ok"),
                   "from_drop_ms_max": max((c["from_drop_ms"] for c in cyc),
                                           default=None),
                   "from_open_ms_max": max((c["from_open_ms"] for c in cyc),
                                           default=None)}
            self.emit(out)
            self.wait_unsubscribed()

    # ---- scenario 6: memory and idle ------------------------------------

    def hold(self, n, subscribe):
        """Holds N clients on exgate; returns (rss_before, rss_idle,
        rss_subscribed, held, subscribed) in KiB / counts."""
        time.sleep(0.3)
        rss0 = proc_rss_kib(self.gate.pid)
        p = self.spawn("hold", [self.bin["client"], "--url", self.gate_url,
                                "-n", str(n), "--mode", "hold",
                                "--timeout", "120", "--inflight", "128"],
                       0, stdin=subprocess.PIPE)
        try:
            m = self.readline(p, r'\{"held":(\d+),"failed":(\d+)\}', 120,
                              "hold %d" % n)
            held = int(m.group(1))
            time.sleep(0.5)
            rss1 = proc_rss_kib(self.gate.pid)
            rss2, subs = None, None
            if subscribe:
                p.stdin.write("subscribe\n")
                p.stdin.flush()
                m = self.readline(p, r'\{"subscribed":(\d+)', 120,
                                  "subscribe %d" % n)
                subs = int(m.group(1))
                time.sleep(1.0)
                rss2 = proc_rss_kib(self.gate.pid)
            p.stdin.write("quit\n")
            p.stdin.flush()
            p.wait(30)
        finally:
            self.stop(p)
        return rss0, rss1, rss2, held, subs

    def restart_gate(self, out_limit=OUT_LIMIT_MIN):
        """A fresh exgate: a point, the RSS growth or the idle CPU must not
        depend on what earlier ones left in buffers, heap and tables."""
        rc = self.stop(self.gate, 10)
        self.gate = None
        if rc not in (0, None):
            raise BenchError("exgate exited with %s: %s" % (
                rc, self.gate_log(5)))
        self.wait_unsubscribed()
        self.out_limit = out_limit
        self.start_gate()

    def memory(self):
        self.control("rate 1")
        for n in ([20] if self.a.smoke else [1000, 10000]):
            self.restart_gate()
            rss0, rss1, rss2, held, subs = self.hold(n, True)
            self.emit({
                "scenario": "memory", "system": "exgate", "clients": n,
                "held": held, "subscribed": subs,
                "rss_before_kib": rss0, "rss_idle_kib": rss1,
                "rss_subscribed_kib": rss2,
                "idle_kib_per_client": round((rss1 - rss0) / n, 2),
                "subscribed_kib_per_client": round((rss2 - rss1) / n, 2)
                if rss2 is not None else None,
                "ok": held == n and subs == n})
            self.wait_unsubscribed(30)

    def idle(self):
        n, secs = (10, 1.0) if self.a.smoke else (100, 60.0)
        self.restart_gate()
        p = self.spawn("idle", [self.bin["client"], "--url", self.gate_url,
                                "-n", str(n), "--mode", "hold",
                                "--timeout", "600"], 0,
                       stdin=subprocess.PIPE)
        try:
            m = self.readline(p, r'\{"held":(\d+)', 60, "idle hold")
            held = int(m.group(1))
            time.sleep(0.5)
            pid = self.gate.pid
            c0, t0 = proc_runtime(pid), time.monotonic()
            ticks0 = proc_cpu(pid)
            time.sleep(secs)
            c1, t1 = proc_runtime(pid), time.monotonic()
            ticks1 = proc_cpu(pid)
            if c0 is None or c1 is None:
                c0, c1 = ticks0, ticks1
            p.stdin.write("quit\n")
            p.stdin.flush()
            p.wait(30)
        finally:
            self.stop(p)
        self.emit({"scenario": "idle", "system": "exgate", "clients": held,
                   "seconds": round(t1 - t0, 2), "cpu_s": round(c1 - c0, 4),
                   "cpu_s_ticks": round(ticks1 - ticks0, 2),
                   "cpu_percent": round(100.0 * (c1 - c0) / (t1 - t0), 4),
                   "ok": held == n})

    # ---- scenario 7: core and edge (issue 17) ---------------------------

    def start_redis(self):
        """A fresh redis-server on a free loopback port, no persistence,
        pinned with --redis-cpu. Returns its process."""
        for attempt in range(4):
            port = free_port()
            p = self.spawn("redis", [self.redis_bin, "--port", str(port),
                                     "--bind", "127.0.0.1", "--save", "",
                                     "--appendonly", "no", "--loglevel",
                                     "warning", "--logfile",
                                     os.path.join(self.tmp, "redis.log")],
                           self.redis_cpu)
            end = time.monotonic() + 10
            while time.monotonic() < end and p.poll() is None:
                try:
                    socket.create_connection(("127.0.0.1", port), 1).close()
                    self.redis, self.redis_port = p, port
                    return p
                except OSError:
                    time.sleep(0.05)
            self.stop(p)
        raise BenchError("redis-server did not start: %s"
                         % self.err_tail("redis", 5))

    def resp(self):
        """A RESP client on the bench's redis-server (the tests' own)."""
        from test_publish_redis import Resp
        return Resp(self.redis_port)

    def start_exgate(self, name, body, check):
        """An exgate of the edge scenario with conf BODY (its error_log and
        admin added here), pinned on CPU 1; waits until CHECK(status) is
        true. Returns (process, admin port)."""
        for attempt in range(4):
            admin = free_port()
            ports = [free_port() for _ in range(body.count("%d"))]
            conf = os.path.join(self.tmp, name + ".conf")
            log = os.path.join(self.tmp, name + ".log")
            with open(log, "w"):
                pass
            with open(conf, "w") as f:
                f.write("error_log %s warn;\n" % log + body % tuple(ports)
                        + "admin 127.0.0.1:%d;\n" % admin)
            p = self.spawn(name, [self.bin["exgate"], "-c", conf], 1)
            end = time.monotonic() + 15
            last = None
            while time.monotonic() < end and p.poll() is None:
                try:
                    last = self.status_of(admin)
                    if check(last):
                        return p, admin, ports
                except OSError:
                    pass
                time.sleep(0.05)
            self.stop(p)
            with open(log) as f:
                text = f.read()
            if "already in use" in text + self.err_tail(name) \
                    and attempt < 3:
                continue
            raise BenchError("%s did not start: %s%s; last status %r" % (
                name, self.err_tail(name, 5), text[-1500:],
                (last or {}).get("upstreams")))
        raise BenchError("%s: no free ports" % name)

    def status_of(self, admin):
        url = "http://127.0.0.1:%d/status" % admin
        with urllib.request.urlopen(url, timeout=5) as r:
            return json.loads(r.read().decode())

    @staticmethod
    def up_of(st):
        for u in st.get("upstreams", []):
            if u.get("name") == "sim":
                return u
        return {}

    def start_core(self):
        """The core: upstream sim on exsim with `publish` to the bench's
        redis-server, a websocket listener for its local bots."""
        body = ("client_output_limit %d 0 0;\n" % OUT_LIMIT_MAX
                + "upstream sim {\n    url %s;\n" % self.ws_url
                + "    protocol deribit;\n"
                "    reconnect fixed { delay 1ms; }\n"
                "    publish redis://127.0.0.1:%d prefix=%s;\n"
                % (self.redis_port, EDGE_PREFIX) + "}\n"
                "listen 127.0.0.1:%d websocket upstream=sim;\n")
        p, admin, ports = self.start_exgate(
            "core", body,
            lambda st: self.up_of(st).get("state") == "ready"
            and self.up_of(st).get("publish", {}).get("connected"))
        self.core, self.core_admin = p, admin
        self.core_url = "ws://127.0.0.1:%d/ws/api/v2" % ports[0]

    def start_edge(self):
        """An edge: protocol edge on the bench's redis-server, source sim,
        a websocket listener for its bots."""
        body = ("client_output_limit %d 0 0;\n" % OUT_LIMIT_MAX
                + "upstream sim {\n"
                "    url redis://127.0.0.1:%d;\n" % self.redis_port
                + "    protocol edge;\n    source sim;\n"
                "    prefix %s;\n    edge_id bench;\n" % EDGE_PREFIX
                + "    reconnect fixed { delay 100ms; }\n}\n"
                "listen 127.0.0.1:%d websocket upstream=sim;\n")
        p, admin, ports = self.start_exgate(
            "edge", body, lambda st: self.up_of(st).get("state") == "ready")
        self.edge, self.edge_admin = p, admin
        self.edge_url = "ws://127.0.0.1:%d/ws/api/v2" % ports[0]

    def stop_edge_set(self):
        for name in ("edge", "core", "redis"):
            p = getattr(self, name, None)
            if p is not None:
                rc = self.stop(p, 10)
                if name != "redis" and rc not in (0, None):
                    self.note("%s exited with %s: %s" % (
                        name, rc, self.err_tail(name, 5)))
            setattr(self, name, None)
        self.wait_unsubscribed()

    def window_snapshot(self):
        """CPU of every process of the edge scenario, the core's publish
        and upstream counters, the edge's, and Redis' XADD count."""
        d = {"t": time.monotonic()}
        for name in ("core", "edge", "redis", "exsim"):
            p = getattr(self, name, None)
            if p is not None:
                d[name + "_cpu"] = proc_runtime(p.pid)
        if getattr(self, "core", None) is not None:
            st = self.status_of(self.core_admin)
            u = self.up_of(st)
            d["pub"] = dict(u.get("publish", {}))
            d["messages_in"] = u.get("messages_in", 0)
            d["core_sends"] = st.get("fanout", {}).get("sends", 0)
        if getattr(self, "edge", None) is not None:
            st = self.status_of(self.edge_admin)
            d["edge_st"] = dict(self.up_of(st).get("edge", {}))
            d["edge_sends"] = st.get("fanout", {}).get("sends", 0)
        r = self.resp()
        try:
            info = r.cmd("INFO", "commandstats").decode()
        finally:
            r.close()
        for cmd in ("xadd", "xread"):
            m = re.search(r"cmdstat_%s:calls=(\d+),usec=(\d+)" % cmd, info)
            d[cmd + "_calls"] = int(m.group(1)) if m else 0
            d[cmd + "_usec"] = int(m.group(2)) if m else 0
        return d

    @staticmethod
    def window_delta(a, b):
        w = b["t"] - a["t"]
        out = {"window_s": round(w, 3)}
        for name in ("core", "edge", "redis", "exsim"):
            k = name + "_cpu"
            if a.get(k) is not None and b.get(k) is not None:
                out[name + "_cpu_s"] = round(b[k] - a[k], 4)
                out[name + "_cpu_pct"] = round(100 * (b[k] - a[k]) / w, 1)
        if "pub" in a and "pub" in b:
            for k in ("published", "dropped", "lost", "errors", "bytes",
                      "snapshots"):
                out["pub_" + k] = b["pub"].get(k, 0) - a["pub"].get(k, 0)
            out["pub_in_flight_end"] = b["pub"].get("in_flight")
            out["messages_in"] = b["messages_in"] - a["messages_in"]
        if "edge_st" in a and "edge_st" in b:
            for k in ("entries", "gaps", "links", "epoch_changes"):
                out["edge_" + k] = (b["edge_st"].get(k, 0)
                                    - a["edge_st"].get(k, 0))
            out["edge_redis"] = b["edge_st"].get("redis")
        for k in ("core_sends", "edge_sends"):
            if k in a and k in b:
                out[k] = b[k] - a[k]      # writes to the bots' sockets
        # what Redis spent on the commands (INFO commandstats)
        for cmd in ("xadd", "xread"):
            n = b[cmd + "_calls"] - a[cmd + "_calls"]
            out[cmd + "_calls"] = n
            out[cmd + "_us_per_call"] = round(
                (b[cmd + "_usec"] - a[cmd + "_usec"]) / n, 2) if n else None
        return out

    def sync_client(self, name, url, nch, rate, cpu_pids, label):
        """A bench client with --sync on URL: N bots, NCH channels, at
        RATE per channel; a thread collects its stdout."""
        argv = [self.bin["client"], "--url", url, "-n",
                str(self.a.edge_bots), "--channels", str(nch), "--rate",
                str(rate), "--duration", str(self.a.duration), "--sync",
                "--label", label, "--timeout", "120",
                "--cpu-pid", ",".join(str(p) for p in cpu_pids)]
        p = self.spawn(name, argv, 0, stdin=subprocess.PIPE)
        p.lines = []
        p.ready = threading.Event()

        def reader():
            for line in p.stdout:
                if line.startswith('{"ready":'):
                    p.ready.set()
                elif line.startswith("{") and not line.startswith(
                        '{"window":'):
                    p.lines.append(line)
        p.thread = threading.Thread(target=reader, daemon=True)
        p.thread.start()
        return p

    def wait_flowing(self, nch, timeout=30):
        """Until the core publishes every channel and the edge reads them
        all (its bots' channels are wanted through the interest set, polled
        once a second)."""
        end = time.monotonic() + timeout
        last = None
        while time.monotonic() < end:
            pub = self.up_of(self.status_of(self.core_admin)).get(
                "publish", {})
            ed = self.up_of(self.status_of(self.edge_admin)).get("edge", {})
            last = (pub.get("channels"), ed.get("channels"),
                    ed.get("entries"))
            if (pub.get("channels", 0) >= nch and ed.get("channels", 0)
                    >= nch and not ed.get("channels_waiting")):
                return
            time.sleep(0.1)
        raise BenchError("edge: channels not flowing after %d s: core "
                         "publishes %s, edge reads %s (entries %s)"
                         % ((timeout,) + tuple(last or (None,) * 3)))

    def edge_latency_point(self, point, rnd):
        """Bots on the core and on the edge, NCH channels at RATE each, one
        window for both (--sync): latency on the intended-time basis."""
        rate, nch, spread = point
        label = "edge rate=%d x %d%s" % (rate, nch, " spread" if spread
                                         else "")
        self.start_redis()
        self.start_core()
        self.start_edge()
        self.control("credit -1")
        self.control("spread %s" % ("on" if spread else "off"))
        self.control("rate %d" % rate)
        cl = {}
        try:
            cl["core"] = self.sync_client("client-core", self.core_url, nch,
                                          rate, [self.core.pid],
                                          "core " + label)
            cl["edge"] = self.sync_client("client-edge", self.edge_url, nch,
                                          rate, [self.edge.pid],
                                          "edge " + label)
            for k, p in cl.items():
                if not p.ready.wait(60):
                    raise BenchError("%s bots not subscribed: %s" % (
                        k, self.err_tail(p.bench_name, 5)))
            self.wait_flowing(nch)
            # the window opens after the warm-up, at one instant for both
            start = time.monotonic_ns() + int(self.a.edge_warmup * 1e9)
            for p in cl.values():
                p.stdin.write("start %d\n" % start)
                p.stdin.flush()
            time.sleep(max(0, (start - time.monotonic_ns()) / 1e9))
            a = self.window_snapshot()
            time.sleep(self.a.duration)
            b = self.window_snapshot()
            res = {}
            for k, p in cl.items():
                p.wait(60)
                p.thread.join(5)
                if not p.lines:
                    raise BenchError("%s bench client: no result: %s" % (
                        k, self.err_tail(p.bench_name, 5)))
                res[k] = json.loads(p.lines[-1])
        finally:
            for p in cl.values():
                self.stop(p)
            self.control("spread off")
            self.control("rate 10")
        out = {"scenario": "edge", "kind": "latency", "round": rnd,
               "rate": rate, "channels": nch, "spread": spread,
               "bots": self.a.edge_bots,
               "offered_msgs_per_s": rate * nch, "msg_bytes": SIZE}
        for k, r in res.items():
            out[k] = {
                "deliveries_per_s": round(r.get("deliveries_per_s", 0)),
                "lat_us": r.get("lat_intended_us"),
                "lat_sent_us": r.get("lat_us"),
                "gaps": r.get("gaps"), "closed": r.get("closed"),
                "seq_resets": r.get("seq_resets"),
                "channels_seen_min": r.get("channels_seen_min"),
                "client_cpu_s": r.get("client_cpu_s"),
                "client_wait_s": r.get("client_wait_s"),
                "window_s": r.get("window_s"), "ok": r.get("ok")}
            self.mark(out[k])
        out["added_us"] = {q: round(out["edge"]["lat_us"][q]
                                    - out["core"]["lat_us"][q], 1)
                           for q in ("p50", "p99", "p999")
                           if out["edge"].get("lat_us")
                           and out["core"].get("lat_us")}
        out["sys"] = self.window_delta(a, b)
        out["ok"] = all(out[k]["ok"] and out[k]["channels_seen_min"] == nch
                        for k in ("core", "edge"))
        self.stop_edge_set()
        self.emit(out)

    def edge_publish_point(self, point, rnd):
        """The core alone, NCH channels wanted through the interest set (no
        bot, no edge), exsim flat out: what the core writes into Redis.
        MODE paced: exsim publishes on credit, given as Redis acknowledges
        the core's XADDs (read from the core's /status every 2 ms), so that
        at most PUB_WINDOW entries are on their way and none is dropped;
        flat: exsim unpaced (it waits only for the core to read), more than
        the core can write, the rest dropped and counted."""
        mode, nch = point
        self.start_redis()
        self.start_core()
        r = self.resp()
        try:
            exp = int(time.time() * 1000) + 600000
            args = []
            for i in range(nch):
                args += [exp, "bench.%d" % i]
            r.cmd("ZADD", "%s:sim:interest" % EDGE_PREFIX, *args)
        finally:
            r.close()
        try:
            end = time.monotonic() + 30
            while self.up_of(self.status_of(self.core_admin)).get(
                    "publish", {}).get("channels", 0) < nch:
                if time.monotonic() > end:
                    raise BenchError("publish: the core does not publish "
                                     "%d channels" % nch)
                self.control("burst 1")
                time.sleep(0.1)
            stop = threading.Event()
            pacer = None
            if mode == "paced":
                self.control("credit %d" % PUB_WINDOW)
                pacer = threading.Thread(target=self.pub_pacer, args=(stop,),
                                         daemon=True)
            else:
                self.control("credit -1")
            self.control("rate 0")
            if pacer is not None:
                pacer.start()
            time.sleep(self.a.edge_warmup)
            a = self.window_snapshot()
            time.sleep(self.a.duration)
            b = self.window_snapshot()
        finally:
            stop.set()
            if pacer is not None:
                pacer.join(5)
            self.control("credit -1")
            self.control("rate 10")
        d = self.window_delta(a, b)
        w = d["window_s"]
        out = {"scenario": "edge", "kind": "publish", "round": rnd,
               "mode": mode, "channels": nch, "msg_bytes": SIZE,
               "published_per_s": round(d.get("pub_published", 0) / w),
               "xadd_per_s": round(d["xadd_calls"] / w),
               "messages_in_per_s": round(d.get("messages_in", 0) / w),
               "dropped_per_s": round(d.get("pub_dropped", 0) / w),
               "sys": d, "ok": d.get("pub_published", 0) > 0
               and not d.get("pub_errors") and not d.get("pub_lost")}
        self.stop_edge_set()
        self.emit(out)

    def pub_pacer(self, stop):
        """Gives exsim one credit for every entry the core's /status says
        Redis took (published) or the core let go (dropped, errors),
        every 2 ms, until STOP."""
        def done():
            pub = self.up_of(self.status_of(self.core_admin)).get(
                "publish", {})
            return (pub.get("published", 0) + pub.get("dropped", 0)
                    + pub.get("errors", 0) + pub.get("lost", 0))
        last = done()
        while not stop.wait(0.002):
            try:
                now = done()
                if now > last:
                    self.control("credit %d" % (now - last))
                    last = now
            except (OSError, BenchError, ValueError) as e:
                self.note("publish pacer: %s" % e)
                return

    def edge_scenario(self):
        if not os.access(self.redis_bin, os.X_OK):
            self.note("edge: %s missing (Debian: apt-get install "
                      "redis-server): edge scenario skipped"
                      % self.redis_bin)
            return
        lat = []
        for x in self.a.edge_points.split(","):
            m = re.fullmatch(r"(\d+)x(\d+)(s?)", x)
            if x and m is None:
                raise BenchError("--edge-points: %r" % x)
            if x:
                lat.append((int(m.group(1)), int(m.group(2)),
                            m.group(3) == "s"))
        pub = []
        for x in self.a.edge_publish.split(","):
            if x:
                mode, n = x.split(":")
                if mode not in ("paced", "flat"):
                    raise BenchError("--edge-publish: %r" % x)
                pub.append((mode, int(n)))
        if self.a.smoke:
            lat, pub = [(10, 10, False)], [("paced", 1)]
        for rnd in range(1, self.a.repeat + 1):
            for pt in lat:
                self.run_edge(self.edge_latency_point, pt, rnd)
            for pt in pub:
                self.run_edge(self.edge_publish_point, pt, rnd)

    def run_edge(self, fn, arg, rnd):
        try:
            fn(arg, rnd)
        except (BenchError, OSError, ValueError,
                subprocess.SubprocessError) as e:
            self.note("edge %s %s round %d failed: %s" % (
                fn.__name__, arg, rnd, e))
            out = {"scenario": "edge", "round": rnd, "ok": False,
                   "error": str(e)[:300]}
            if fn == self.edge_latency_point:
                out.update(kind="latency", rate=arg[0], channels=arg[1])
            else:
                out.update(kind="publish", mode=arg[0], channels=arg[1])
            self.emit(out)
            try:
                self.stop_edge_set()
            except BenchError as e2:
                self.note("edge: after the failure: %s" % e2)

    # ---- the table and the targets --------------------------------------

    def find(self, scenario, **kw):
        """The first result that matches (a fan-out point's first round)."""
        for r in self.results:
            if r.get("scenario") == scenario and all(
                    r.get(k, 1 if k == "round" else None) == v
                    for k, v in kw.items()):
                return r
        return None

    def ratios(self, num, den, key, scenario="fanout", **kw):
        """NUM's KEY over DEN's KEY at the fan-out point KW, one ratio per
        round in which both ran: (median, [per round], the two figures of
        the median round, the lower middle one for an even count)."""
        out, pairs = [], []
        for rnd in range(1, max(self.a.repeat, self.a.paired_rounds) + 1):
            a = self.find(scenario, system=num, round=rnd, **kw)
            b = self.find(scenario, system=den, round=rnd, **kw)
            if a and b and a.get(key) and b.get(key):
                out.append(a[key] / b[key])
                pairs.append((a[key] / b[key], a[key], b[key]))
        if not out:
            return None, [], None
        pairs.sort()
        mid = pairs[(len(pairs) - 1) // 2]    # the median round's figures
        return statistics.median(out), out, mid[1:]

    def limit_of(self, r):
        """The limit probe's result of R's point (same N, same round)."""
        return self.find("fanout", system="limit", clients=r["clients"],
                         rate=0, round=r.get("round", 1))

    def row(self, r):
        lat = r.get("lat_us") or {}
        cpu = r.get("sut_cpu_s_per_m")
        busy = client_busy(r)
        lim = self.limit_of(r) if not r["rate"] else None
        return ("%-10s %5d %6s %11s %9s %9s %9s %9s %10s %5s %6s %5s %6s%s"
                % (r["system"] if r["system"] != "limit"
                   else "limit k%d" % r.get("k", LIMIT_K), r["clients"],
                   "flat" if not r["rate"] else "%dk" % (r["rate"] // 1000),
                   r.get("deliveries_per_s", "-") if r.get("ok") is not False
                   or "deliveries_per_s" in r else "FAIL",
                   "%.2f" % cpu if cpu is not None else "-",
                   *("%.0f" % lat[k] if k in lat else "-"
                     for k in ("p50", "p99", "p999", "max")),
                   r.get("gaps", "-"), r.get("closed", "-"),
                   "%.0f" % (100 * busy) if busy is not None else "-",
                   "%.3f" % (r["deliveries_per_s"] / lim["deliveries_per_s"])
                   if lim and lim.get("deliveries_per_s")
                   and r.get("deliveries_per_s") else "-",
                   "  client-bound" if r.get("client_bound") else ""))

    def table(self):
        out = []
        fan = [r for r in self.results if r["scenario"] == "fanout"]
        if fan:
            out.append("fan-out, %d-byte messages (latency in us: flat out vs "
                       "the embedded send time, fixed rates vs the intended "
                       "send time)" % SIZE)
            hdr = ("%-10s %5s %6s %11s %9s %9s %9s %9s %10s %5s %6s %5s %6s"
                   % ("system", "N", "rate", "deliv/s", "cpu s/M", "p50",
                      "p99", "p99.9", "max", "gaps", "closed", "cli%",
                      "/limit"))
            out.append(hdr)
            out.append("-" * len(hdr))
            for r in fan:
                if r.get("round", 1) != 1:
                    continue
                out.append(self.row(r))
            out.append("(cpu s/M: CPU-seconds of the system under test per "
                       "million deliveries; for direct that is exsim itself, "
                       "for limit the probe's writer; cli%%: the share of the "
                       "window the bench client (limit: the probe's reader) "
                       "ran or waited to run, over %.0f%% marks the point "
                       "client-bound: the reader, not the system, set the "
                       "pace; /limit: deliveries over the limit probe's at "
                       "K=%d in the same round)" % (CLIENT_BOUND * 100,
                                                    LIMIT_K))
            if self.a.repeat > 1:
                out.append("target points, %d rounds: median (min..max)"
                           % self.a.repeat)
                for n, rate in TARGET_POINTS:
                    for system in ("limit", "client-cap", "direct", "raw",
                                   "exgate", "exgate-tcp", "nginx"):
                        rs = [r for r in fan if r["system"] == system
                              and r["clients"] == n and r["rate"] == rate
                              and r.get("deliveries_per_s")]
                        if not rs:
                            continue

                        def span(vals, f):
                            if not vals:
                                return "-"
                            return "%s (%s..%s)" % (
                                f % statistics.median(vals), f % min(vals),
                                f % max(vals))
                        lims = []
                        for r in rs:
                            lim = self.limit_of(r)
                            if lim and lim.get("deliveries_per_s"):
                                lims.append(r["deliveries_per_s"]
                                            / lim["deliveries_per_s"])
                        bound = sum(1 for r in rs if r.get("client_bound"))
                        out.append("%-10s %5d %6s deliv/s %s  cpu s/M %s  "
                                   "p99 us %s%s%s" % (
                                       system, n, "flat" if not rate else
                                       "%dk" % (rate // 1000),
                                       span([r["deliveries_per_s"]
                                             for r in rs], "%.0f"),
                                       span([r["sut_cpu_s_per_m"] for r in rs
                                             if r.get("sut_cpu_s_per_m")],
                                            "%.2f"),
                                       span([r["lat_us"]["p99"] for r in rs
                                             if r.get("lat_us")], "%.0f"),
                                       "  /limit %s" % span(lims, "%.3f")
                                       if lims and not rate else "",
                                       "  client-bound in %d of %d rounds"
                                       % (bound, len(rs)) if bound else ""))
            half = [r for r in self.results
                    if r["scenario"] == "fanout_half"]
            if half:
                out.append("at half of each system's own flat-out rate "
                           "(latency vs the intended send time, us)")
                for r in half:
                    lat = r.get("lat_us") or {}
                    out.append("%-10s %5d %6d/s %9s deliv/s  p50 %s  p99 %s"
                               "  p99.9 %s  max %s  gaps %s  closed %s%s" % (
                                   r["system"], r["clients"], r["rate"],
                                   r.get("deliveries_per_s", "-"),
                                   *("%.0f" % lat[k] if k in lat else "-"
                                     for k in ("p50", "p99", "p999", "max")),
                                   r.get("gaps", "-"), r.get("closed", "-"),
                                   "  client-bound" if r.get("client_bound")
                                   else ""))
            paired = [r for r in self.results
                      if r["scenario"] == "fanout_paired"]
            if paired:
                out.append("raw and exgate at the same moment (CPU-s per "
                           "million deliveries, by round; the ratio is "
                           "exgate / raw in the round)")
                for n, rate in sorted({(r["clients"], r["rate"])
                                       for r in paired}):
                    rows = []
                    for rnd in sorted({r["round"] for r in paired}):
                        by = {r["system"]: r for r in paired
                              if r["clients"] == n and r["rate"] == rate
                              and r["round"] == rnd
                              and r.get("sut_cpu_s_per_m")}
                        if len(by) == 2:
                            rows.append((by["raw"]["sut_cpu_s_per_m"],
                                         by["exgate"]["sut_cpu_s_per_m"]))
                    if rows:
                        out.append("N=%-4d %3dk  %s" % (
                            n, rate // 1000, "  ".join(
                                "%.2f/%.2f=%.2f" % (x, y, y / x)
                                for x, y in rows)))
            io = [r for r in fan if r.get("io") and not r["rate"]]
            if io:
                out.append("fan-out counters over the window, flat out "
                           "(msgs/read: upstream messages per socket read; "
                           "acks/read: ACKs the upstream socket sent per "
                           "read; "
                           "msgs/batch: per fan-out batch; msgs/send and "
                           "KiB/send: per write to a client socket; full: "
                           "sends that found the socket full, part: sends it "
                           "took part of, queued: writes of queued output, "
                           "all per second)")
                for r in io:
                    d = r["io"]
                    w = r.get("window_s") or 1
                    out.append(
                        "%-10s %5d r%d  msgs/read %s  acks/read %s  "
                        "msgs/batch %s  "
                        "msgs/send %s  KiB/send %s  sends/s %.0f  full/s "
                        "%.0f  part/s %.0f  queued/s %.0f" % (
                            r["system"], r["clients"], r.get("round", 1),
                            d.get("msgs_per_read"),
                            d.get("acks_per_read", "-"),
                            d.get("msgs_per_batch"),
                            d.get("msgs_per_send"),
                            "%.1f" % (d["bytes_per_send"] / 1024)
                            if d.get("bytes_per_send") else "-",
                            d.get("sends", 0) / w,
                            d.get("would_block", 0) / w,
                            d.get("partial", 0) / w,
                            d.get("queued_writes", 0) / w))
                    h = d.get("sends_by_messages") or {}
                    tot = sum(h.values())
                    if tot:
                        out.append("%-10s %5s     sends by messages: %s" % (
                            "", "", "  ".join(
                                "%s %.1f%%" % (k, 100.0 * v / tot)
                                for k, v in h.items() if v)))
        for r in self.results:
            if r["scenario"] == "restore":
                out.append("restore %4d channels: from drop max %s ms, from "
                           "the new connection max %s ms (%d cycles)" % (
                               r["channels"], fmt(r["from_drop_ms_max"]),
                               fmt(r["from_open_ms_max"]),
                               len(r["cycles"])))
            elif r["scenario"] == "memory":
                out.append("memory %5d clients: held %s, subscribed %s; RSS "
                           "%s KiB idle per client, %s KiB more subscribed"
                           % (r["clients"], r["held"], r["subscribed"],
                              r["idle_kib_per_client"],
                              r["subscribed_kib_per_client"]))
            elif r["scenario"] == "idle":
                out.append("idle   %5d clients: exgate CPU %s s over %s s ="
                           " %s%%" % (r["clients"], r["cpu_s"], r["seconds"],
                                      r["cpu_percent"]))
        return "\n".join(out)

    def edge_rows(self, kind, **kw):
        return [r for r in self.results if r.get("scenario") == "edge"
                and r.get("kind") == kind and r.get("ok") is not False
                and all(r.get(k) == v for k, v in kw.items())]

    def edge_table(self):
        """The edge scenario: median (min..max) over the rounds."""
        def span(vals, f="%.0f"):
            vals = [v for v in vals if v is not None]
            if not vals:
                return "-"
            if len(vals) == 1:
                return f % vals[0]
            return "%s (%s..%s)" % (f % statistics.median(vals),
                                    f % min(vals), f % max(vals))
        out = []
        lat = [r for r in self.results if r.get("scenario") == "edge"
               and r.get("kind") == "latency"]
        if lat:
            out.append("core and edge (issue 17): bots on the core's and on "
                       "the edge's listener in one window, latency vs the "
                       "intended send time in us, median (min..max) of %d "
                       "rounds; redis-server %s" % (
                           self.a.repeat, "on CPU %d" % self.redis_cpu
                           if self.taskset and self.redis_cpu is not None
                           else "not pinned"))
            seen = []
            for r in lat:
                key = (r["rate"], r["channels"], r.get("spread", False))
                if key in seen:
                    continue
                seen.append(key)
                rs = self.edge_rows("latency", rate=key[0], channels=key[1],
                                    spread=key[2])
                nfail = sum(1 for x in lat if (x["rate"], x["channels"],
                                               x.get("spread", False))
                            == key and x.get("ok") is False)
                out.append("  %d/s x %d channels (%d msgs/s)%s%s" % (
                    key[0], key[1], key[0] * key[1],
                    ", spread (one channel at a time)" if key[2] else
                    (", every channel at once" if key[1] > 1 else ""),
                    ": %d rounds failed" % nfail if nfail else ""))
                if not rs:
                    continue
                for side in ("core", "edge"):
                    out.append(
                        "    %-4s deliv/s %s  p50 %s  p99 %s  p99.9 %s  "
                        "max %s  gaps %s  closed %s%s" % (
                            side,
                            span([x[side]["deliveries_per_s"] for x in rs]),
                            *(span([(x[side].get("lat_us") or {}).get(q)
                                    for x in rs])
                              for q in ("p50", "p99", "p999", "max")),
                            sum(x[side].get("gaps") or 0 for x in rs),
                            sum(x[side].get("closed") or 0 for x in rs),
                            "  client-bound in %d" % sum(
                                1 for x in rs if x[side].get("client_bound"))
                            if any(x[side].get("client_bound") for x in rs)
                            else ""))
                out.append("    added (edge - core): p50 %s  p99 %s  p99.9 "
                           "%s" % tuple(span([x["added_us"].get(q)
                                              for x in rs])
                                        for q in ("p50", "p99", "p999")))
                out.append("    CPU %%: core %s  edge %s  redis %s  exsim "
                           "%s;  core dropped %s entries, edge saw %s holes"
                           % (*(span([x["sys"].get(n + "_cpu_pct")
                                      for x in rs], "%.1f")
                                for n in ("core", "edge", "redis", "exsim")),
                              sum(x["sys"].get("pub_dropped", 0) for x in rs),
                              sum(x["sys"].get("edge_gaps", 0) for x in rs)))
                out.append("    bot socket writes per message: core %s  "
                           "edge %s" % tuple(span([
                               x["sys"].get(k, 0) / max(1, x["sys"].get(
                                   "messages_in", 0)) for x in rs], "%.2f")
                               for k in ("core_sends", "edge_sends")))
                out.append("    redis: XREADs per entry %s, us per XADD %s, "
                           "per XREAD %s" % (
                               span([x["sys"]["xread_calls"]
                                     / max(1, x["sys"].get("pub_published")
                                           or x["sys"]["xadd_calls"])
                                     for x in rs], "%.2f"),
                               span([x["sys"].get("xadd_us_per_call")
                                     for x in rs], "%.1f"),
                               span([x["sys"].get("xread_us_per_call")
                                     for x in rs], "%.1f")))
        pub = [r for r in self.results if r.get("scenario") == "edge"
               and r.get("kind") == "publish"]
        if pub:
            out.append("core publish throughput into Redis (no bot, no edge; "
                       "channels wanted through the interest set), "
                       "messages/s, median (min..max) of %d rounds"
                       % self.a.repeat)
            seen = []
            for r in pub:
                key = (r["mode"], r["channels"])
                if key in seen:
                    continue
                seen.append(key)
                rs = self.edge_rows("publish", mode=key[0], channels=key[1])
                if not rs:
                    out.append("  %-5s %3d channels: failed" % key)
                    continue
                out.append(
                    "  %-5s %3d channels: published %s  exsim->core %s  "
                    "dropped %s  CPU %%: core %s  redis %s  exsim %s  "
                    "redis us per XADD %s" % (
                        key[0], key[1],
                        span([x["published_per_s"] for x in rs]),
                        span([x["messages_in_per_s"] for x in rs]),
                        span([x["dropped_per_s"] for x in rs]),
                        *(span([x["sys"].get(n + "_cpu_pct") for x in rs],
                               "%.1f") for n in ("core", "redis", "exsim")),
                        span([x["sys"].get("xadd_us_per_call") for x in rs],
                             "%.2f")))
        return "\n".join(out)

    def targets17(self):
        """Issue 17's targets: p99 added by an edge, publish throughput,
        nothing lost at the edge points."""
        t = []

        def add(name, value, limit, met, detail):
            t.append({"issue": 17, "target": name, "value": value,
                      "limit": limit, "met": met, "detail": detail})

        keys = []
        for r in self.results:
            k = (r.get("rate"), r.get("channels"), r.get("spread", False))
            if r.get("scenario") == "edge" and r.get("kind") == "latency" \
                    and k not in keys:
                keys.append(k)
        for rate, nch, spread in keys:
            rs = self.edge_rows("latency", rate=rate, channels=nch,
                                spread=spread)
            rs = [r for r in rs if r.get("added_us", {}).get("p99")
                  is not None]
            if not rs:
                continue
            v = statistics.median(r["added_us"]["p99"] for r in rs)
            p50 = statistics.median(r["added_us"]["p50"] for r in rs)
            add("p99 added by an edge, %d/s x %d channels%s (us, intended "
                "time)" % (rate, nch, " spread" if spread else
                           (" at once" if nch > 1 else "")),
                round(v, 1), "<= 300", v <= 300,
                "p50 added %.0f; rounds: %s; edge p99 %.0f, core p99 %.0f "
                "(medians)" % (
                    p50, ", ".join("%.0f" % r["added_us"]["p99"]
                                   for r in rs),
                    statistics.median(r["edge"]["lat_us"]["p99"]
                                      for r in rs),
                    statistics.median(r["core"]["lat_us"]["p99"]
                                      for r in rs)))
        for nch in (1, 100):
            rs = self.edge_rows("publish", mode="paced", channels=nch)
            if not rs:
                continue
            v = statistics.median(r["published_per_s"] for r in rs)
            fl = self.edge_rows("publish", mode="flat", channels=nch)
            add("core publish into Redis, %d channel%s, paced (msgs/s)"
                % (nch, "s" if nch > 1 else ""), round(v), ">= 200000",
                v >= 200000,
                "rounds: %s; redis CPU %.0f%%, core %.0f%% (medians)%s" % (
                    ", ".join("%d" % r["published_per_s"] for r in rs),
                    statistics.median(r["sys"].get("redis_cpu_pct", 0)
                                      for r in rs),
                    statistics.median(r["sys"].get("core_cpu_pct", 0)
                                      for r in rs),
                    "; flat out unpaced %d published, %d dropped (medians)"
                    % (statistics.median(r["published_per_s"] for r in fl),
                       statistics.median(r["dropped_per_s"] for r in fl))
                    if fl else ""))
        lat = [r for r in self.results if r.get("scenario") == "edge"
               and r.get("kind") == "latency"]
        if lat:
            bad = []
            for r in lat:
                if r.get("ok") is False and "core" not in r:
                    bad.append("%d/s x %d round %d failed" % (
                        r["rate"], r["channels"], r["round"]))
                    continue
                for side in ("core", "edge"):
                    x = r[side]
                    if x.get("gaps") or x.get("closed") or \
                            x.get("channels_seen_min") != r["channels"]:
                        bad.append("%d/s x %d r%d %s: gaps %s closed %s "
                                   "channels %s" % (
                                       r["rate"], r["channels"], r["round"],
                                       side, x.get("gaps"), x.get("closed"),
                                       x.get("channels_seen_min")))
            add("nothing lost: gaps and closes at the core's and the edge's "
                "bots", len(bad), "== 0", not bad, "; ".join(bad[:4]))
        return t

    def targets16(self):
        """Issue 16's targets: flat out against the limit probe, CPU per
        delivery against raw, p99 at 1k msgs/s x 100 clients, nothing
        lost."""
        t = []

        def add(name, value, limit, met, detail):
            t.append({"issue": 16, "target": name, "value": value,
                      "limit": limit, "met": met, "detail": detail})

        def rounds(vals, f):
            return "" if len(vals) < 2 else "; median of %d rounds: %s" % (
                len(vals), ", ".join(f % v for v in vals))

        for n in (100, 1000):
            v, vs, pair = self.ratios("exgate", "limit", "deliveries_per_s",
                                      clients=n, rate=0)
            if v is None:
                continue
            rs = [r for r in self.results if r.get("scenario") == "fanout"
                  and r.get("system") == "exgate" and r.get("clients") == n
                  and r.get("rate") == 0]
            bound = sum(1 for r in rs if r.get("client_bound"))
            raw, raws, _ = self.ratios("raw", "limit", "deliveries_per_s",
                                       clients=n, rate=0)
            # a client-bound figure is a lower bound of exgate's: it meets
            # the target when it reaches it, and is no verdict when not
            met = v >= 0.5 or (None if 2 * bound > len(rs) else False)
            add("fanout N=%d flat: exgate / limit (K=%d) deliveries/s"
                % (n, LIMIT_K), round(v, 3), ">= 0.5", met,
                "%.0f vs %.0f deliveries/s%s%s%s" % (
                    pair[0], pair[1], rounds(vs, "%.3f"),
                    "; raw / limit %.3f" % raw if raw is not None else "",
                    "; client-bound in %d of %d rounds (a lower bound of "
                    "exgate's)" % (bound, len(rs)) if bound else ""))
        worst, parts, seq = None, [], []
        for n in (1, 10, 100, 1000):
            for rate in (1000, 10000):
                # up to PAIRED_MAX_N the rounds at the same moment decide;
                # the sequential ones are shown beside them
                v, vs, _ = self.ratios("exgate", "raw", "sut_cpu_s_per_m",
                                       "fanout_paired", clients=n, rate=rate)
                sv, svs, _ = self.ratios("exgate", "raw", "sut_cpu_s_per_m",
                                         clients=n, rate=rate)
                if v is not None:
                    parts.append("N=%d %dk %.2f (at the same moment, %d "
                                 "rounds %.2f..%.2f)" % (
                                     n, rate // 1000, v, len(vs), min(vs),
                                     max(vs)))
                    if sv is not None:
                        seq.append("N=%d %dk %.2f (%s)" % (
                            n, rate // 1000, sv,
                            ", ".join("%.2f" % x for x in svs)))
                elif sv is not None:
                    v = sv
                    parts.append("N=%d %dk %.2f" % (n, rate // 1000, v))
                else:
                    continue
                if worst is None or v > worst:
                    worst = v
        acks = []
        for rate in (1000, 10000):
            per = {}
            for sysname in ("exgate", "raw"):
                v = [r["io"]["acks_per_read"] for r in self.results
                     if r.get("scenario") == "fanout"
                     and r.get("system") == sysname
                     and r.get("clients") == 1 and r.get("rate") == rate
                     and (r.get("io") or {}).get("acks_per_read") is not None]
                if v:
                    per[sysname] = statistics.median(v)
            if len(per) == 2:
                acks.append("N=1 %dk exgate %.2f raw %.2f" % (
                    rate // 1000, per["exgate"], per["raw"]))
        if worst is not None:
            add("CPU per delivery at 1k and 10k msgs/s: exgate / raw, worst N",
                round(worst, 3), "<= 1.1", worst <= 1.1, ", ".join(parts)
                + ("; one after the other: " + ", ".join(seq)
                   if seq else "")
                + ("; upstream ACKs per read: " + ", ".join(acks)
                   if acks else ""))
        p99s = [r["lat_us"]["p99"] for r in self.results
                if r.get("scenario") == "fanout" and r.get("system") == "exgate"
                and r.get("clients") == 100 and r.get("rate") == 1000
                and r.get("lat_us")]
        if p99s:
            v = statistics.median(p99s)
            # raw's in the same rounds, and each system's at half its own
            # flat-out rate (N=100): beside exgate's, on the same machine
            raw99 = [r["lat_us"]["p99"] for r in self.results
                     if r.get("scenario") == "fanout"
                     and r.get("system") == "raw" and r.get("clients") == 100
                     and r.get("rate") == 1000 and r.get("lat_us")]
            half = ["%s %.0f at %d/s" % (r["system"], r["lat_us"]["p99"],
                                         r["rate"])
                    for r in self.results
                    if r.get("scenario") == "fanout_half"
                    and r.get("clients") == 100 and r.get("lat_us")
                    and r.get("system") in ("raw", "exgate")]
            add("p99 at 1k msgs/s x 100 clients, exgate (us, intended time)",
                round(v), "<= 1200", v <= 1200, "; ".join(x for x in (
                    rounds(p99s, "%.0f")[2:],
                    "raw %.0f (median of %d rounds)" % (
                        statistics.median(raw99), len(raw99))
                    if raw99 else "",
                    "at half of its own flat-out rate: " + ", ".join(half)
                    if half else "") if x))
        fan = [r for r in self.results if r.get("scenario") in
               ("fanout", "fanout_half", "fanout_paired") and r.get("system") not in FLAT_ONLY
               and r.get("ok") is not False]
        if fan:
            bad = ["%s N=%d rate=%s: gaps %s closed %s" % (
                r["system"], r["clients"], r["rate"], r.get("gaps"),
                r.get("closed")) for r in fan
                if r.get("gaps") or r.get("closed")]
            failed = [r for r in self.results if r.get("scenario") in
                      ("fanout", "fanout_half", "fanout_paired")
                      and r.get("ok") is False]
            add("nothing lost: gaps and closes at every fan-out point",
                len(bad) + len(failed), "== 0", not bad and not failed,
                "; ".join(bad[:5]) + ("; %d points failed" % len(failed)
                                      if failed else ""))
        return t

    def targets(self):
        t = []

        def add(name, value, limit, met, detail):
            t.append({"target": name, "value": value, "limit": limit,
                      "met": met, "detail": detail})

        def rounds(vals, f):
            return "" if len(vals) < 2 else "; median of %d rounds: %s" % (
                len(vals), ", ".join(f % v for v in vals))

        v, vs, pair = self.ratios("exgate", "raw", "deliveries_per_s",
                                  clients=100, rate=0)
        if v is not None:
            add("fanout N=100 flat: exgate / raw deliveries/s", round(v, 3),
                ">= 0.7", v >= 0.7, "%.0f vs %.0f deliveries/s%s" % (
                    pair[0], pair[1], rounds(vs, "%.3f")))
        for rate in (10000, 1000):
            v, vs, pair = self.ratios("exgate", "nginx", "sut_cpu_s_per_m",
                                      clients=100, rate=rate)
            if v is None:
                continue
            detail = "%.3f vs %.3f CPU-s per million%s" % (
                pair[0], pair[1], rounds(vs, "%.3f"))
            # raw makes one send per delivery and nothing else: the floor
            # of any fan-out on this kernel, nginx included
            rv, rvs, _ = self.ratios("raw", "nginx", "sut_cpu_s_per_m",
                                     clients=100, rate=rate)
            if rv is not None:
                detail += "; raw (the floor) / nginx: %.3f%s" % (
                    rv, rounds(rvs, "%.3f"))
            add("CPU per delivery, N=100 at %dk/s: exgate / nginx"
                % (rate // 1000), round(v, 3), "<= 0.333", v <= 1 / 3,
                detail)
            break
        diffs = []
        for rnd in range(1, self.a.repeat + 1):
            g = self.find("fanout", system="exgate", clients=100, rate=1000,
                          round=rnd)
            d = self.find("fanout", system="direct", clients=100, rate=1000,
                          round=rnd)
            if g and d and g.get("lat_us") and d.get("lat_us"):
                diffs.append((g["lat_us"]["p99"] - d["lat_us"]["p99"],
                              g["lat_us"]["p99"], d["lat_us"]["p99"]))
        if diffs:
            v = statistics.median(x[0] for x in diffs)
            pair = sorted(diffs)[(len(diffs) - 1) // 2][1:]
            diffs = [x[0] for x in diffs]
            add("p99 added latency, 1k msgs/s x 100 clients (us over direct)",
                round(v, 1), "<= 100", v <= 100,
                "p99 %.0f us through exgate, %.0f us direct%s" % (
                    pair[0], pair[1], rounds(diffs, "%.0f")))
        r = self.find("restore", channels=1000)
        if r and r.get("from_open_ms_max") is not None:
            v = r["from_open_ms_max"]
            add("restore 1000 channels after the new connection (ms)",
                round(v, 2), "<= 50", v <= 50 and v >= 0,
                "worst of %d cycles; from the drop %.1f ms" % (
                    len(r["cycles"]), r["from_drop_ms_max"]))
        m = self.find("memory", clients=10000) or self.find("memory",
                                                            clients=1000)
        if m:
            add("RSS per idle client (KiB, %d clients)" % m["clients"],
                m["idle_kib_per_client"], "<= 16",
                m["idle_kib_per_client"] <= 16, "")
        m = self.find("memory", clients=10000)
        if m:
            add("clients held at once", m["held"], ">= 10000",
                m["held"] >= 10000, "")
        i = self.find("idle")
        if i:
            add("idle CPU with %d idle clients (%%)" % i["clients"],
                i["cpu_percent"], "<= 0.1", i["cpu_percent"] <= 0.1,
                "%s CPU-s in %s s" % (i["cpu_s"], i["seconds"]))
        return t


def fmt(v):
    return "-" if v is None else "%.1f" % v


def machine():
    model = "?"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    with open("/proc/loadavg") as f:
        load = " ".join(f.read().split()[:3])
    return {"nproc": os.cpu_count(), "cpu": model,
            "kernel": os.uname().release, "loadavg": load,
            "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--builddir", default=os.getcwd())
    ap.add_argument("--duration", type=float, default=4.0)
    ap.add_argument("--warmup", type=float, default=0.5)
    ap.add_argument("--only", default="fanout,restore,memory,idle,edge")
    ap.add_argument("--clients", default="1,10,100,1000",
                    help="fan-out client counts")
    ap.add_argument("--rates", default="0,1000,10000",
                    help="fan-out rates, 0 = flat out")
    ap.add_argument("--systems", default="limit,client-cap,direct,raw,"
                    "exgate,exgate-tcp,nginx", help="fan-out systems")
    ap.add_argument("--reference-min-n", type=int, default=100,
                    help="direct and client-cap run only at this N and "
                    "above (no target reads them below N=100)")
    ap.add_argument("--half-clients", default="100",
                    help="client counts at which every system also runs at "
                    "half its flat-out rate (p99 under a load it carries)")
    ap.add_argument("--smoke", action="store_true",
                    help="tiny sizes, for the smoke test")
    ap.add_argument("--out", help="also write the JSON lines to this file")
    ap.add_argument("--repeat", type=int, default=3,
                    help="rounds of the fan-out points the targets use "
                    "(N=100 flat and 1k/s, N=1000 flat; raw and exgate at "
                    "1k and 10k msgs/s); the targets are medians")
    ap.add_argument("--paired-rounds", type=int, default=5,
                    help="rounds in which raw and exgate run at the same "
                    "moment, at the CPU target's points up to N=%d; the "
                    "target reads these there" % PAIRED_MAX_N)
    ap.add_argument("--perf", metavar="DIR",
                    help="perf record -g of exgate and raw over each "
                    "window, into DIR (for profiles, not for figures)")
    ap.add_argument("--tls", action="store_true",
                    help="exsim serves wss:// (a certificate made here) and "
                    "exgate reads it over TLS; only limit, exgate and "
                    "exgate-tcp run")
    ap.add_argument("--edge-points", default="10x100,10x100s,1000x100,"
                    "1000x1",
                    help="edge scenario: latency points, RATExCHANNELS[s], "
                    "RATE messages/s on each channel (10x100: 1k msgs/s "
                    "over 100 channels, every channel at once each 1/RATE "
                    "s; with s, spread: one channel at a time in turn)")
    ap.add_argument("--edge-bots", type=int, default=1,
                    help="edge scenario: bots on the core and on the edge")
    ap.add_argument("--edge-publish",
                    default="paced:1,paced:100,flat:1,flat:100",
                    help="edge scenario: publish throughput points, "
                    "MODE:CHANNELS (paced: exsim on credit as Redis "
                    "acknowledges; flat: exsim unpaced)")
    ap.add_argument("--edge-warmup", type=float, default=1.0,
                    help="edge scenario: seconds of warm-up once every "
                    "channel flows")
    ap.add_argument("--redis-cpu", type=int, default=0,
                    help="the CPU redis-server is pinned on (-1: not "
                    "pinned)")
    ap.add_argument("--no-pin", action="store_true",
                    help="do not pin processes to CPUs with taskset")
    a = ap.parse_args()
    only = set(a.only.split(","))
    if a.out:
        open(a.out, "w").close()
    if a.smoke:
        a.duration, a.warmup = min(a.duration, 0.5), min(a.warmup, 0.2)
        a.edge_warmup = min(a.edge_warmup, 0.3)
        a.repeat = 1

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    t0 = time.monotonic()
    b = Bench(a)
    mach = machine()
    mach["nofile"] = hard
    mach["pinning"] = ("systems under test on CPU 1, exsim and the bench "
                       "client on CPU 0" if b.taskset else "none")
    with open(b.bin["exgate"], "rb") as f:
        if b"__asan_init" in f.read():
            b.note("this is a sanitizer build: its numbers say nothing "
                   "about performance (configure without "
                   "--enable-sanitizers)")
    b.emit(dict(scenario="machine", **mach))
    failed = False
    try:
        b.start_exsim()
        if "fanout" in only:
            b.start_gate()
            b.fanout()
        if only & {"restore", "memory", "idle"}:
            if b.gate is None:
                b.start_gate()
            if "restore" in only:
                b.restore()
            if "memory" in only:
                b.memory()
            if "idle" in only:
                b.idle()
        if "edge" in only:
            b.edge_scenario()
    except (BenchError, OSError, ValueError, subprocess.SubprocessError) as e:
        b.note("aborted: %s" % e)
        failed = True
    finally:
        if b.gate is not None:
            rc = b.stop(b.gate, 10)
            if rc not in (0, None):
                b.note("exgate exited with %s: %s" % (rc, b.gate_log(5)))
                failed = True
        for p in list(b.procs):
            b.stop(p, 5)
        bad = b.sanitizer_reports()
        if bad:
            b.note("sanitizer reports in %s (kept in %s)" % (
                ", ".join(bad), b.tmp))
            os.environ["XG_KEEP_TMP"] = "1"
            failed = True
        b.close()
    targets = b.targets()
    targets16 = b.targets16()
    targets17 = b.targets17()
    for t in targets + targets16 + targets17:
        b.emit(dict(scenario="target", **t))
    elapsed = time.monotonic() - t0
    print()
    with open("/proc/loadavg") as f:
        load_end = " ".join(f.read().split()[:3])
    print("exgate benchmarks, %s, %d CPUs (%s), Linux %s; load average %s "
          "at the start, %s at the end; pinning: %s" % (
              mach["date"], mach["nproc"], mach["cpu"], mach["kernel"],
              mach["loadavg"], load_end, mach["pinning"]))
    print(b.table())
    et = b.edge_table()
    if et:
        print(et)
    for title, ts in (("targets (issue 7)", targets),
                      ("targets (issue 16)", targets16),
                      ("targets (issue 17)", targets17)):
        if not ts:
            continue
        print()
        print("%s, measured in this run:" % title)
        for t in ts:
            print("  %-4s %-62s %s (limit %s)%s" % (
                "n/a" if t["met"] is None else "met" if t["met"] else "MISS",
                t["target"], t["value"],
                t["limit"], "; " + t["detail"] if t["detail"] else ""))
    for n in b.notes:
        print("note: %s" % n)
    print("total time %.0f s" % elapsed)
    bad = [r for r in b.results if r.get("ok") is False]
    return 1 if failed or bad else 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except BenchError as e:
        sys.stderr.write("bench: %s\n" % e)
        sys.exit(1)
