"""Core and edges (issue 17): a real redis-server on a free loopback
port, exsim, the core exgate (the harness's own, upstream `sim` with
`publish`), and edge exgates (`protocol edge`) started here, each with its
own conf, log, admin port and listeners. Used by test_edge*.py."""

import os
import signal
import subprocess
import time

import gateway_harness as gh
from gateway_harness import check, free_port
from upstream_harness import EXGATE, wait_for
from test_publish_redis import start_redis  # noqa: F401 (re-exported)

PREFIX = "xge"


class Edge:
    """One edge exgate reading upstream `sim` from the core's Redis."""

    def __init__(self, h, name, rport, extra="", main_extra="",
                 password=None, level="info", scheme="redis"):
        self.h = h
        self.name = name
        self.rport = rport
        self.extra = extra
        self.main_extra = main_extra
        self.password = password
        self.level = level
        self.ws_port = free_port()
        self.tcp_port = free_port()
        self.admin_port = free_port()
        self.conf = os.path.join(h.tmp, "%s.conf" % name)
        self.log_path = os.path.join(h.tmp, "%s.log" % name)
        self.proc = None
        self.scheme = scheme
        self.prefix = PREFIX
        self.ws_url = "ws://127.0.0.1:%d/ws/api/v2" % self.ws_port

    def _write_conf(self, password):
        pw = ""
        if password is not None:
            pw = "    password env:XG_EDGE_REDIS_PW;\n"
        with open(self.conf, "w") as f:
            f.write("error_log stderr %s;\n%s"
                    "upstream sim {\n"
                    "    url %s://127.0.0.1:%d;\n"
                    "    protocol edge;\n"
                    "    prefix %s;\n"
                    "    edge_id %s;\n"
                    "    reconnect fixed { delay 100ms; }\n%s%s"
                    "}\n"
                    "listen 127.0.0.1:%d websocket upstream=sim;\n"
                    "listen 127.0.0.1:%d tcp upstream=sim;\n"
                    "admin 127.0.0.1:%d;\n"
                    % (self.level, self.main_extra, self.scheme, self.rport,
                       self.prefix,
                       self.name, pw, self.extra, self.ws_port,
                       self.tcp_port, self.admin_port))

    def start(self):
        env = dict(os.environ)
        if self.password is not None:
            env["XG_EDGE_REDIS_PW"] = self.password
        self._write_conf(self.password)
        logf = open(self.log_path, "a")
        self.proc = subprocess.Popen([EXGATE, "-c", self.conf], stdout=logf,
                                     stderr=logf, stdin=subprocess.DEVNULL,
                                     env=env)
        logf.close()
        self.h.procs.append(self.proc)
        wait_for(self.try_status, 10, what="%s /status" % self.name)
        return self

    def reload(self, extra, prefix=PREFIX):
        """The conf again with EXTRA in the upstream block (and PREFIX),
        SIGHUP; waits until /status counts the reload; returns whether it
        went well."""
        self.extra = extra
        self.prefix = prefix
        before = self.try_status()["reloads"]
        self._write_conf(self.password)
        self.proc.send_signal(signal.SIGHUP)
        end = time.monotonic() + 10
        while True:
            now = self.try_status()["reloads"]
            if now["ok"] + now["error"] > before["ok"] + before["error"]:
                return now["ok"] > before["ok"]
            check(time.monotonic() < end, "%s: reload not done in 10 s"
                  % self.name)
            time.sleep(0.1)

    def try_status(self):
        if self.proc.poll() is not None:
            raise gh.Fail("%s exited with %s:\n%s"
                          % (self.name, self.proc.returncode, self.log()))
        import json
        import urllib.request
        url = "http://127.0.0.1:%d/status" % self.admin_port
        with urllib.request.urlopen(url, timeout=2) as r:
            return json.loads(r.read().decode())

    def up(self):
        for u in self.try_status()["upstreams"]:
            if u["name"] == "sim":
                return u
        raise gh.Fail("%s: no upstream sim" % self.name)

    def wait_up(self, pred, timeout, what):
        def probe():
            u = self.up()
            return u if pred(u) else None
        try:
            return wait_for(probe, timeout, what="%s: %s" % (self.name, what))
        except gh.Fail as e:
            raise gh.Fail("%s; last status %r" % (e, self.up()))

    def log(self):
        try:
            with open(self.log_path) as f:
                return f.read()
        except OSError:
            return ""

    def stop(self):
        """SIGTERM: exit 0 and no sanitizer report."""
        self.proc.send_signal(signal.SIGTERM)
        rc = self.proc.wait(10)
        log = self.log()
        check("Sanitizer" not in log and "runtime error" not in log,
              "%s: sanitizer report in its log" % self.name)
        check(rc == 0, "%s: exit code %r after SIGTERM" % (self.name, rc))


class Redis:
    """The redis-server the core publishes to, restartable on its port."""

    def __init__(self, h, password=None):
        self.h = h
        self.port = free_port()
        self.password = password
        self.proc = start_redis(h, self.port, password)

    def restart(self, down_s=0.3):
        self.proc.terminate()
        self.proc.wait(5)
        time.sleep(down_s)
        self.proc = start_redis(self.h, self.port, self.password)


def start_core(h, redis, upstream_extra="", main_extra="", sim_args=(),
               level="info"):
    """exsim and the core exgate: upstream `sim` publishing to REDIS."""
    gh.start(h, "    protocol deribit;\n"
             "    publish redis://127.0.0.1:%d prefix=%s;\n"
             "    reconnect fixed { delay 100ms; }\n%s"
             % (redis.port, PREFIX, upstream_extra),
             main_extra, level=level, sim_args=sim_args)
    gh.wait_ready(h)
    h.wait_up(lambda u: u.get("publish", {}).get("connected"), 10,
              "publish connected")


def restart_core(h):
    """SIGTERM to the core (exit 0 checked), then the same conf again."""
    gh.stop_clean(h)
    conf = os.path.join(h.tmp, "exgate.conf")
    logf = open(h.log_path, "a")
    p = subprocess.Popen([EXGATE, "-c", conf], stdout=logf, stderr=logf,
                         stdin=subprocess.DEVNULL)
    logf.close()
    h.procs.append(p)
    h.gate = p
    wait_for(h.try_status, 10, what="core /status")
    gh.wait_ready(h)


BOT_MAIN = "client_credentials bot env:XG_TEST_BOT_SECRET;\n"


async def core_edge_bot(h, edge_main="", sim_args=(), core_extra=""):
    """A redis-server, the core (client_auth off; CORE_EXTRA in its
    upstream block; exsim with SIM_ARGS) and
    edge `edge1` (with EDGE_MAIN in its main context) ready, and one
    WebSocket bot on the edge authenticated as `bot`: (redis, edge,
    bot)."""
    from gateway_harness import WSClient
    os.environ["XG_TEST_BOT_SECRET"] = "bot-secret"
    redis = Redis(h)
    start_core(h, redis, upstream_extra=core_extra,
               main_extra="client_auth off;\n", sim_args=sim_args)
    edge = Edge(h, "edge1", redis.port, main_extra=BOT_MAIN + edge_main)
    edge.start()
    edge.wait_up(lambda u: u["state"] == "ready", 10, "ready")
    bot = await WSClient("bot").connect(edge.ws_url)
    r = await bot.call("public/auth", {
        "grant_type": "client_credentials", "client_id": "bot",
        "client_secret": "bot-secret"}, id=1)
    check("result" in r, "auth %r" % r)
    return redis, edge, bot


RAW_BOOK = "book.BTC-PERPETUAL.raw"
RAW_TRADES = "trades.BTC-PERPETUAL.raw"


async def raw_book_bot(h, rate=1000):
    """core_edge_bot with the core authenticated for raw channels, its bot
    subscribed to RAW_BOOK and RAW_TRADES at exsim rate RATE, and both
    flowing: (redis, edge, bot)."""
    os.environ["XG_TEST_EXSIM_SECRET"] = "exsim-secret"
    redis, edge, bot = await core_edge_bot(
        h, "", core_extra="    auth client_credentials exsim "
        "env:XG_TEST_EXSIM_SECRET;\n")
    r = await bot.call("public/subscribe",
                       {"channels": [RAW_BOOK, RAW_TRADES]}, id=2)
    check(r.get("result") == [RAW_BOOK, RAW_TRADES], "subscribe: %r" % r)
    h.control("rate %d" % rate)
    await bot.wait_notes(RAW_BOOK, 50 if rate >= 1000 else 30, timeout=15)
    await bot._wait(lambda: len(gh.trade_seqs(bot, RAW_TRADES)) >= 3, 15,
                    "trades")
    return redis, edge, bot


def rewrite_core_conf(h, old, new):
    """Replaces OLD (which must be there) with NEW in the core's conf and
    sends the core SIGHUP (a reload)."""
    path = os.path.join(h.tmp, "exgate.conf")
    with open(path) as f:
        text = f.read()
    check(old in text, "core conf: %r" % text[:400])
    with open(path, "w") as f:
        f.write(text.replace(old, new))
    h.gate.send_signal(signal.SIGHUP)


def run(name, body, timeout):
    """BODY(h), a coroutine function, under upstream_harness.run within
    TIMEOUT s, the core stopped cleanly after; SKIP (77) when
    /usr/bin/redis-server is missing."""
    import asyncio
    import sys
    if not os.access("/usr/bin/redis-server", os.X_OK):
        sys.stderr.write("SKIP: /usr/bin/redis-server is missing\n")
        sys.exit(77)

    def sync_body(h):
        asyncio.run(asyncio.wait_for(body(h), timeout))
        if h.gate is not None and h.gate.poll() is None:
            gh.stop_clean(h)
    gh.uh.run(name, sync_body)
