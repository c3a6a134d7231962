"""Shared pieces of the upstream supervision tests (t/integ/test_upstream_*.py).

Starts t/sim/exsim and src/exgate on 127.0.0.1 with a conf written into a
temp dir, talks to exsim's control port, reads exgate's /status with
urllib, and kills everything it started on exit, also on failure.
"""

import calendar
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request

BUILDDIR = os.environ.get("XG_BUILDDIR", os.getcwd())
SRCDIR = os.environ.get("XG_SRCDIR", os.path.dirname(os.path.dirname(
    os.path.dirname(os.path.abspath(__file__)))))
OPENSSL = os.environ.get("OPENSSL_BIN", "openssl")
EXGATE = os.path.join(BUILDDIR, "src", "exgate")
EXSIM = os.path.join(BUILDDIR, "t", "sim", "exsim")


class Fail(Exception):
    pass


def check(cond, msg):
    if not cond:
        raise Fail(msg)


_ports_given = set()


def free_port():
    """A port that was free a moment ago (bind 0, read it back), and not
    one this process handed out before: nothing is bound on those until
    the conf they go in starts, and the kernel may give the same one twice
    in a row (a core's admin port once came back equal to its listener's)."""
    for _ in range(100):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        s.close()
        if port not in _ports_given:
            break
    _ports_given.add(port)
    return port


def exsim_control(port, cmd, timeout=5):
    """Sends one line to exsim's control PORT; returns its one-line JSON
    reply (shared with exsim_util.py)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall((cmd + "\n").encode())
        buf = b""
        while b"\n" not in buf:
            chunk = s.recv(65536)
            if not chunk:
                break
            buf += chunk
    line = buf.split(b"\n", 1)[0].decode()
    try:
        return json.loads(line)
    except ValueError:
        raise Fail("exsim control %r: bad reply %r" % (cmd, line))


def wait_for(pred, timeout, step=0.02, what="condition"):
    """Polls PRED until it returns a true value; returns it, or raises."""
    end = time.monotonic() + timeout
    last = None
    while time.monotonic() < end:
        try:
            last = pred()
        except (OSError, ValueError, urllib.error.URLError) as e:
            last = None
            err = e
        if last:
            return last
        time.sleep(step)
    raise Fail("timed out after %.1fs waiting for %s" % (timeout, what))


class Sim:
    """One exsim process with its ports."""

    def __init__(self, h, *extra):
        if not os.access(EXSIM, os.X_OK):
            raise Fail("exsim not built: %s" % EXSIM)
        errf = open(os.path.join(h.tmp, "exsim-%d.err" % len(h.procs)), "w")
        p = subprocess.Popen([EXSIM, "--listen", "127.0.0.1:0", "--control",
                              "127.0.0.1:0"] + list(extra),
                             stdout=subprocess.PIPE, stderr=errf,
                             stdin=subprocess.DEVNULL, text=True)
        errf.close()
        h.procs.append(p)
        self.proc = p
        self.ws_port = None
        self.control_port = None
        line = ""
        end = time.monotonic() + 10
        while time.monotonic() < end:
            line = p.stdout.readline()
            if not line:
                break
            m = re.search(r"exsim ready ws=(\d+) control=(\d+)", line)
            if m:
                self.ws_port = int(m.group(1))
                self.control_port = int(m.group(2))
                return
        raise Fail("exsim did not print its ready line (got %r)" % line)

    def control(self, cmd, timeout=5):
        """One control command; returns its JSON reply."""
        return exsim_control(self.control_port, cmd, timeout)


class Harness:
    def __init__(self, name):
        self.name = name
        self.tmp = tempfile.mkdtemp(prefix="xg-%s-" % name)
        self.procs = []
        self.sim = None
        self.gate = None
        self.ws_port = None
        self.control_port = None
        self.admin_port = None
        self.log_path = os.path.join(self.tmp, "exgate.log")

    # ---- processes -----------------------------------------------------

    def start_sim(self, *extra):
        """Starts an exsim on free ports; the first one is self.sim."""
        sim = Sim(self, *extra)
        if self.sim is None:
            self.sim = sim
            self.ws_port = sim.ws_port
            self.control_port = sim.control_port
        return sim

    def control(self, cmd, timeout=5):
        """One control command to the first exsim; its JSON reply."""
        return self.sim.control(cmd, timeout)

    def make_cert(self):
        """A self-signed certificate for localhost and 127.0.0.1 in the
        temp dir, made by the openssl CLI: (cert path, key path)."""
        cert = os.path.join(self.tmp, "cert.pem")
        key = os.path.join(self.tmp, "key.pem")
        subprocess.run([OPENSSL, "req", "-x509", "-newkey", "rsa:2048",
                        "-nodes", "-keyout", key, "-out", cert, "-days", "1",
                        "-subj", "/CN=localhost", "-addext",
                        "subjectAltName=DNS:localhost,IP:127.0.0.1"],
                       check=True, stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL)
        return cert, key

    def start_gate(self, upstream_body, url=None, level="debug"):
        """Writes a conf with one upstream `sim` and starts exgate on it."""
        if url is None:
            url = "ws://127.0.0.1:%d/ws/api/v2" % self.ws_port
        self.start_gate_conf("upstream sim {\n    url %s;\n%s\n}\n"
                             % (url, upstream_body), level)

    def start_gate_conf(self, upstreams, level="debug"):
        """Starts exgate on UPSTREAMS (conf text) plus log and admin lines."""
        self.admin_port = free_port()
        conf = "error_log stderr %s;\n%sadmin 127.0.0.1:%d;\n" % (
            level, upstreams, self.admin_port)
        path = os.path.join(self.tmp, "exgate.conf")
        with open(path, "w") as f:
            f.write(conf)
        logf = open(self.log_path, "w")
        p = subprocess.Popen([EXGATE, "-c", path], stdout=logf, stderr=logf,
                             stdin=subprocess.DEVNULL)
        logf.close()
        self.procs.append(p)
        self.gate = p
        wait_for(self.try_status, 10, what="exgate /status")

    def try_status(self):
        if self.gate is not None and self.gate.poll() is not None:
            raise Fail("exgate exited with %s:\n%s" % (self.gate.returncode,
                                                       self.log()))
        url = "http://127.0.0.1:%d/status" % self.admin_port
        with urllib.request.urlopen(url, timeout=2) as r:
            return json.loads(r.read().decode())

    def status(self):
        return self.try_status()

    def up(self, name="sim"):
        """The status object of upstream NAME."""
        st = self.status()
        for u in st["upstreams"]:
            if u["name"] == name:
                return u
        raise Fail("no upstream %s in /status: %r" % (name, st))

    def wait_up(self, pred, timeout, what, name="sim"):
        def probe():
            u = self.up(name)
            return u if pred(u) else None
        try:
            return wait_for(probe, timeout, what=what)
        except Fail as e:
            raise Fail("%s; last status %r" % (e, self.up(name)))

    def log(self):
        try:
            with open(self.log_path) as f:
                return f.read()
        except OSError:
            return ""

    def log_lines(self, pattern):
        return [l for l in self.log().splitlines() if re.search(pattern, l)]

    def log_times(self, pattern):
        """Unix times (float seconds) of the log lines matching PATTERN."""
        out = []
        for l in self.log_lines(pattern):
            m = re.match(r"(\d+-\d+-\d+T\d+:\d+:\d+)\.(\d+)Z", l)
            if m:
                t = calendar.timegm(time.strptime(m.group(1),
                                                  "%Y-%m-%dT%H:%M:%S"))
                out.append(t + int(m.group(2)) / 1000.0)
        return out

    def stop_gate(self, timeout=10):
        """SIGTERM to exgate; returns its exit code."""
        self.gate.send_signal(signal.SIGTERM)
        return self.gate.wait(timeout)

    def finish(self):
        """Stops exgate with SIGTERM: it must exit 0, and a sanitizer
        build must have reported nothing (errors or leaks)."""
        if self.gate is None:
            return
        if self.gate.poll() is None:
            rc = self.stop_gate()
        else:
            rc = self.gate.returncode
        log = self.log()
        check("Sanitizer" not in log and "runtime error" not in log,
              "sanitizer report in the exgate log")
        check(rc == 0, "exgate exit code %r after SIGTERM" % rc)

    def close(self):
        for p in reversed(self.procs):
            if p.poll() is None:
                p.terminate()
                try:
                    p.wait(3)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()
            if p.stdout:
                p.stdout.close()
        if os.environ.get("XG_KEEP_TMP"):
            sys.stderr.write("kept %s\n" % self.tmp)
        else:
            shutil.rmtree(self.tmp, ignore_errors=True)


def other_logs(h):
    """The warnings and errors of every other process' log in the test's
    directory (an edge's, a second exgate's), for a failure's report."""
    out = []
    for f in sorted(os.listdir(h.tmp)):
        path = os.path.join(h.tmp, f)
        if not f.endswith(".log") or path == h.log_path:
            continue
        try:
            with open(path, errors="replace") as fh:
                lines = [l.rstrip("\n") for l in fh
                         if re.search(r"\[(warn|error)\]|backfill", l)]
        except OSError:
            continue
        out.append("--- %s (warnings, errors, backfills; tail) ---\n%s"
                   % (f, "\n".join(lines[-60:])))
    return "".join(s + "\n" for s in out)


def run(name, body):
    """Runs BODY(harness); prints the logs on failure; exits 0 or 1."""
    h = Harness(name)
    try:
        body(h)
        h.finish()
    except Fail as e:
        sys.stderr.write("FAIL %s: %s\n--- exgate log (tail) ---\n%s\n%s"
                         % (name, e, "\n".join(h.log().splitlines()[-80:]),
                            other_logs(h)))
        h.close()
        sys.exit(1)
    except BaseException:
        sys.stderr.write("--- exgate log (tail) ---\n%s\n%s"
                         % ("\n".join(h.log().splitlines()[-80:]),
                            other_logs(h)))
        h.close()
        raise
    h.close()
    print("PASS %s" % name)
    sys.exit(0)
