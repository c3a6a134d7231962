#!/usr/bin/env python3
"""exgate benchmarks: the standard set behind `make bench`.

Runs, side by side in one run on 127.0.0.1, against one `exsim --bench 300`:

  fanout   one bench channel to N = 1, 10, 100, 1000 clients, flat out and at
           1k and 10k msgs/s, through each of
             direct  N clients straight to exsim (each its own upstream)
             raw     t/bench/bench_raw: one upstream, bytes copied to N sockets
             exgate  one exgate websocket listener (one upstream subscription)
             nginx   nginx as a 1:1 WebSocket proxy (skipped if not installed)
  restore  exsim `drop` -> first message on every channel, 1/100/1000 channels
  memory   exgate RSS per idle and per subscribed client, 1k and 10k clients
  idle     exgate CPU over 60 s with 100 idle clients

Prints one JSON line per measurement as it goes, then a table and the
targets of issue 7 with their verdicts. The systems under test run on CPU 1,
exsim and the bench client on CPU 0 (taskset), when there are 2 CPUs.

Usage: run_bench.py [--builddir DIR] [--duration S] [--warmup S]
                    [--only fanout,restore,memory,idle] [--smoke] [--out FILE]
                    [--no-pin] [--clients 1,10,100,1000] [--rates 0,1000,10000]
                    [--repeat 3]
                    [--systems direct,raw,exgate,exgate-tcp,nginx]
BENCH_NGINX=PATH picks the nginx binary, BENCH_NGINX=none skips nginx.
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
OUT_LIMIT_MAX = 32 << 20


def out_limit_for(n):
    return max(OUT_LIMIT_MIN, min(OUT_LIMIT_MAX, (2 << 30) // max(n, 1)))


# The fan-out points the targets use; run --repeat times.
TARGET_POINTS = [(100, 0), (100, 1000)]

RATE_CAP = {"direct": 300_000, "nginx": 300_000, "raw": 1_000_000,
            "exgate": 1_000_000, "exgate-tcp": 1_000_000}


class BenchError(Exception):
    pass


def proc_cpu(pid):
    """utime + stime of PID in seconds (from /proc/PID/stat)."""
    with open("/proc/%d/stat" % pid) as f:
        s = f.read()
    fields = s[s.rindex(")") + 2:].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


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
        ncpu = os.cpu_count() or 1
        self.taskset = (shutil.which("taskset")
                        if ncpu >= 2 and not args.no_pin else None)
        self.bin = {
            "exsim": os.path.join(self.bd, "t", "sim", "exsim"),
            "exgate": os.path.join(self.bd, "src", "exgate"),
            "client": os.path.join(self.bd, "t", "bench", "bench_client"),
            "raw": os.path.join(self.bd, "t", "bench", "bench_raw"),
        }
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

    def start_exsim(self):
        p = self.spawn("exsim", [self.bin["exsim"], "--bench", str(SIZE),
                                 "--rate", "1000", "--max-connections", "0",
                                 "--no-rate-limit", "--log-level", "warn",
                                 "--listen", "127.0.0.1:0",
                                 "--control", "127.0.0.1:0"], 0)
        m = self.readline(p, r"exsim ready ws=(\d+) control=(\d+)", 10,
                          "exsim")
        self.exsim = p
        self.ws_port = int(m.group(1))
        self.ctl_port = int(m.group(2))
        self.ws_url = "ws://127.0.0.1:%d/ws/api/v2" % self.ws_port

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
                "    url %s;\n"
                "    protocol deribit;\n"
                "    reconnect fixed { delay 1ms; }\n"
                "}\n"
                "listen 127.0.0.1:%d websocket upstream=sim "
                "max_clients=20000;\n"
                "listen 127.0.0.1:%d tcp upstream=sim max_clients=20000;\n"
                "admin 127.0.0.1:%d;\n"
                % (os.path.join(self.tmp, "exgate.log"), self.out_limit,
                   self.ws_url,
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

    def client(self, url, n, args, cpu_pids, label, timeout=120):
        argv = [self.bin["client"], "--url", url, "-n", str(n),
                "--label", label, "--timeout", "60"] + args
        if cpu_pids:
            argv += ["--cpu-pid", ",".join(str(p) for p in cpu_pids)]
        p = self.spawn("client", argv, 0)
        try:
            out, _ = p.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            p.kill()
            out, _ = p.communicate()
        self.procs.remove(p)
        lines = [l for l in out.splitlines() if l.startswith("{")]
        if not lines:
            raise BenchError("bench_client %s: no JSON line (rc %s):\n%s" % (
                label, p.returncode, self.err_tail("client")))
        return json.loads(lines[-1])

    # ---- scenario 1-4: fan-out ------------------------------------------

    def fanout_point(self, system, n, rate, rnd=1):
        label = "%s n=%d rate=%s" % (system, n, rate or "flat")
        # the clients join at 10 msgs/s; the bench client sets RATE once
        # every one of them is subscribed
        self.control("rate 10")
        raw = None
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
        else:
            raw = self.spawn("raw", [self.bin["raw"], "--upstream",
                                     "127.0.0.1:%d/ws/api/v2" % self.ws_port,
                                     "-n", str(n)], 1)
            m = self.readline(raw, r"bench_raw ready port=(\d+)", 10, "raw")
            url = "ws://127.0.0.1:%s/ws/api/v2" % m.group(1)
            pids = [raw.pid]
        try:
            r = self.client(url, n, ["--rate", str(rate), "--duration",
                                     str(self.a.duration), "--warmup",
                                     str(self.a.warmup), "--control",
                                     str(self.ctl_port), "--start-rate",
                                     str(rate)], pids, label)
        finally:
            if raw is not None:
                try:
                    raw.wait(5)
                except subprocess.TimeoutExpired:
                    pass
                self.stop(raw)
        self.wait_unsubscribed()
        lat = r.get("lat_intended_us") if rate else r.get("lat_us")
        out = {
            "scenario": "fanout", "system": system, "clients": n,
            "rate": rate, "msg_bytes": SIZE, "round": rnd,
            "deliveries_per_s": round(r.get("deliveries_per_s", 0)),
            "sut_cpu_s_per_m": r.get("sut_cpu_s_per_m"),
            "sut_cpu_s": r.get("sut_cpu_s"),
            "client_cpu_s": r.get("client_cpu_s"),
            "window_s": r.get("window_s"),
            "latency_basis": "intended" if rate else "sent",
            "lat_us": lat, "lat_sent_us": r.get("lat_us"),
            "gaps": r.get("gaps"), "closed": r.get("closed"),
            "open": r.get("open"), "acked": r.get("acked"),
            "setup_s": r.get("setup_s"),
            "last_close": r.get("last_close"), "ok": r.get("ok"),
        }
        if not r.get("ok"):
            out["error"] = self.err_tail("client", 3).strip()[-300:]
        self.emit(out)

    def fanout(self):
        systems = ["direct", "raw", "exgate", "exgate-tcp"]
        if "nginx" in self.a.systems.split(",") and self.start_nginx():
            systems.append("nginx")
        systems = [x for x in systems if x in self.a.systems.split(",")]
        ns = [2] if self.a.smoke else [int(x) for x in
                                       self.a.clients.split(",")]
        rates = [1000] if self.a.smoke else [int(x) for x in
                                             self.a.rates.split(",")]
        points = [(n, rate, 1) for n in ns for rate in rates]
        # The points the targets read are run again, after the whole set,
        # each round all systems one after the other: the targets are the
        # medians of per-round ratios, so one noisy minute moves no target.
        for rnd in range(2, self.a.repeat + 1):
            points += [(n, rate, rnd) for n, rate in TARGET_POINTS
                       if n in ns and rate in rates]
        for n, rate, rnd in points:
            for system in systems:
                if rate * n > RATE_CAP[system]:
                    if rnd == 1:
                        self.note("fanout %s n=%d rate=%d: offered %d "
                                  "deliveries/s is over its %d cap: not run"
                                  % (system, n, rate, n * rate,
                                     RATE_CAP[system]))
                    continue
                try:
                    self.fanout_point(system, n, rate, rnd)
                except (BenchError, OSError, ValueError,
                        subprocess.SubprocessError) as e:
                    self.note("fanout %s n=%d rate=%d failed: %s"
                              % (system, n, rate, e))
                    self.emit({"scenario": "fanout", "system": system,
                               "clients": n, "rate": rate, "round": rnd,
                               "ok": False, "error": str(e)[:300]})
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

    # ---- the table and the targets --------------------------------------

    def find(self, scenario, **kw):
        """The first result that matches (a fan-out point's first round)."""
        for r in self.results:
            if r.get("scenario") == scenario and all(
                    r.get(k, 1 if k == "round" else None) == v
                    for k, v in kw.items()):
                return r
        return None

    def ratios(self, num, den, key, **kw):
        """NUM's KEY over DEN's KEY at the fan-out point KW, one ratio per
        round in which both ran: (median, [per round], the two figures of
        the median round, the lower middle one for an even count)."""
        out, pairs = [], []
        for rnd in range(1, self.a.repeat + 1):
            a = self.find("fanout", system=num, round=rnd, **kw)
            b = self.find("fanout", system=den, round=rnd, **kw)
            if a and b and a.get(key) and b.get(key):
                out.append(a[key] / b[key])
                pairs.append((a[key] / b[key], a[key], b[key]))
        if not out:
            return None, [], None
        pairs.sort()
        mid = pairs[(len(pairs) - 1) // 2]    # the median round's figures
        return statistics.median(out), out, mid[1:]

    def table(self):
        out = []
        fan = [r for r in self.results if r["scenario"] == "fanout"]
        if fan:
            out.append("fan-out, %d-byte messages (latency in us: flat out vs "
                       "the embedded send time, fixed rates vs the intended "
                       "send time)" % SIZE)
            hdr = ("%-10s %5s %6s %11s %9s %9s %9s %9s %10s %5s %6s"
                   % ("system", "N", "rate", "deliv/s", "cpu s/M", "p50",
                      "p99", "p99.9", "max", "gaps", "closed"))
            out.append(hdr)
            out.append("-" * len(hdr))
            for r in fan:
                if r.get("round", 1) != 1:
                    continue
                lat = r.get("lat_us") or {}
                cpu = r.get("sut_cpu_s_per_m")
                out.append("%-10s %5d %6s %11s %9s %9s %9s %9s %10s %5s %6s" % (
                    r["system"], r["clients"],
                    "flat" if not r["rate"] else "%dk" % (r["rate"] // 1000),
                    r.get("deliveries_per_s", "-") if r.get("ok") is not False
                    or "deliveries_per_s" in r else "FAIL",
                    "%.2f" % cpu if cpu is not None else "-",
                    *("%.0f" % lat[k] if k in lat else "-"
                      for k in ("p50", "p99", "p999", "max")),
                    r.get("gaps", "-"), r.get("closed", "-")))
            out.append("(cpu s/M: CPU-seconds of the system under test per "
                       "million deliveries; for direct that is exsim itself)")
            if self.a.repeat > 1:
                out.append("target points, %d rounds: median (min..max)"
                           % self.a.repeat)
                for n, rate in TARGET_POINTS:
                    for system in ("direct", "raw", "exgate", "exgate-tcp",
                                   "nginx"):
                        rs = [r for r in fan if r["system"] == system
                              and r["clients"] == n and r["rate"] == rate
                              and r.get("deliveries_per_s")]
                        if not rs:
                            continue

                        def span(vals, f):
                            return "%s (%s..%s)" % (
                                f % statistics.median(vals), f % min(vals),
                                f % max(vals))
                        out.append("%-10s %5d %6s deliv/s %s  cpu s/M %s  "
                                   "p99 us %s" % (
                                       system, n, "flat" if not rate else
                                       "%dk" % (rate // 1000),
                                       span([r["deliveries_per_s"]
                                             for r in rs], "%.0f"),
                                       span([r["sut_cpu_s_per_m"] for r in rs
                                             if r.get("sut_cpu_s_per_m")],
                                            "%.2f"),
                                       span([r["lat_us"]["p99"] for r in rs
                                             if r.get("lat_us")], "%.0f")))
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
    ap.add_argument("--only", default="fanout,restore,memory,idle")
    ap.add_argument("--clients", default="1,10,100,1000",
                    help="fan-out client counts")
    ap.add_argument("--rates", default="0,1000,10000",
                    help="fan-out rates, 0 = flat out")
    ap.add_argument("--systems", default="direct,raw,exgate,exgate-tcp,nginx",
                    help="fan-out systems")
    ap.add_argument("--smoke", action="store_true",
                    help="tiny sizes, for the smoke test")
    ap.add_argument("--out", help="also write the JSON lines to this file")
    ap.add_argument("--repeat", type=int, default=3,
                    help="rounds of the fan-out points the targets use "
                    "(N=100 flat and 1k/s); the targets are medians")
    ap.add_argument("--no-pin", action="store_true",
                    help="do not pin processes to CPUs with taskset")
    a = ap.parse_args()
    only = set(a.only.split(","))
    if a.out:
        open(a.out, "w").close()
    if a.smoke:
        a.duration, a.warmup = min(a.duration, 0.5), min(a.warmup, 0.2)
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
    for t in targets:
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
    if targets:
        print()
        print("targets (issue 7), measured in this run:")
        for t in targets:
            print("  %-4s %-62s %s (limit %s)%s" % (
                "met" if t["met"] else "MISS", t["target"], t["value"],
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
