"""Shared pieces of the gateway tests (t/integ/test_gateway_*.py).

Builds on upstream_harness (exsim + exgate processes, /status, cleanup)
and adds local listeners and clients: WebSocket clients with the python
`websockets` module and TCP clients with plain asyncio streams, each with
an inbox that keeps answers by id and notifications by channel.
"""

import asyncio
import json
import os
import re
import signal
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import upstream_harness as uh  # noqa: E402
from upstream_harness import Fail, check, free_port  # noqa: E402,F401

import websockets  # noqa: E402


def start(h, upstream_body="    protocol deribit;\n", main_extra="",
          level="debug", sim_args=(), ws_extra="", tcp_extra="",
          scheme="ws"):
    """Starts exsim and exgate with one upstream `sim` (SCHEME "wss" when
    exsim serves TLS), a websocket and a tcp listener; sets h.ws_url and
    h.tcp_port. An exsim without credits (--no-rate-limit) gets a Deribit
    upstream without the request budget (`rate_limit off;`), unless the
    body says otherwise: the gateway's mirror follows the exchange."""
    if ("--no-rate-limit" in sim_args and "protocol deribit" in upstream_body
            and "rate_limit " not in upstream_body):
        upstream_body += "    rate_limit off;\n"
    if h.sim is None:
        h.start_sim(*sim_args)
    h.gw_ws_port = free_port()
    h.gw_tcp_port = free_port()
    url = "%s://127.0.0.1:%d/ws/api/v2" % (scheme, h.ws_port)
    conf = ("%s"
            "upstream sim {\n    url %s;\n%s}\n"
            "listen 127.0.0.1:%d websocket upstream=sim%s;\n"
            "listen 127.0.0.1:%d tcp upstream=sim%s;\n"
            % (main_extra, url, upstream_body, h.gw_ws_port, ws_extra,
               h.gw_tcp_port, tcp_extra))
    h.start_gate_conf(conf, level)
    h.ws_url = "ws://127.0.0.1:%d/ws/api/v2" % h.gw_ws_port
    h.tcp_port = h.gw_tcp_port


class Book:
    """A client-side book that applies every message as ccxt does: the
    first must be a snapshot, each change must chain."""

    def __init__(self, name, channel):
        self.name = name
        self.channel = channel
        self.bids, self.asks = {}, {}
        self.change_id = None
        self.snapshots = 0
        self.bridges = 0
        self.n = 0

    def apply(self, data):
        self.n += 1
        if data.get("type") == "snapshot":
            check(self.change_id is None,
                  "%s: a second snapshot (change_id %s after %s)"
                  % (self.name, data["change_id"], self.change_id))
            self.snapshots += 1
            self.bids, self.asks = {}, {}
        else:
            check(self.change_id is not None,
                  "%s: a change before any snapshot" % self.name)
            check(data.get("prev_change_id") == self.change_id,
                  "%s: chain broken: prev_change_id %s, last %s"
                  % (self.name, data.get("prev_change_id"), self.change_id))
        for side, book in (("bids", self.bids), ("asks", self.asks)):
            for lvl in data[side]:
                action, price, amount = lvl
                if action == "delete" or amount == 0:
                    book.pop(price, None)
                else:
                    book[price] = amount
        self.change_id = data["change_id"]

    def feed(self, client, start, channel=None):
        """Applies CLIENT's notifications on the book's channel (or
        CHANNEL) from index START on; returns the index to go on from."""
        for ch, m in client.notes[start:]:
            if ch == (channel or self.channel):
                self.apply(m["params"]["data"])
        return len(client.notes)


class Direct:
    """A connection straight to exsim, authenticated as the account the
    gateway uses (client_credentials exsim / exsim-secret, or another
    --account CID / SECRET): what another bot of the same account does
    behind the gateway's back."""

    async def open(self, h, cid="exsim", secret="exsim-secret"):
        self.ws = await websockets.connect("ws://127.0.0.1:%d/ws/api/v2"
                                           % h.ws_port)
        self.id = 0
        await self.call("public/auth", {
            "grant_type": "client_credentials", "client_id": cid,
            "client_secret": secret})
        return self

    async def call(self, method, params):
        self.id += 1
        await self.ws.send(json.dumps({"jsonrpc": "2.0", "id": self.id,
                                       "method": method, "params": params}))
        while True:
            r = json.loads(await self.ws.recv())
            if r.get("id") == self.id:
                check("result" in r, "direct %s: %r" % (method, r))
                return r["result"]

    async def pipeline(self, reqs):
        """Sends every (method, params) at once, then reads the answers."""
        first = self.id + 1
        for m, p in reqs:
            self.id += 1
            await self.ws.send(json.dumps({"jsonrpc": "2.0", "id": self.id,
                                           "method": m, "params": p}))
        got = 0
        while got < len(reqs):
            r = json.loads(await self.ws.recv())
            if isinstance(r.get("id"), int) and r["id"] >= first:
                check("result" in r, "pipelined: %r" % r)
                got += 1

    async def close(self):
        try:
            await self.ws.close()
        except websockets.exceptions.ConnectionClosed:
            pass


async def direct_call(h, method, params, cid="exsim",
                      secret="exsim-secret"):
    """One authenticated call on a fresh direct connection (as account
    CID): its result."""
    d = await Direct().open(h, cid, secret)
    try:
        return await d.call(method, params)
    finally:
        await d.close()


def notes_data(client, ch):
    """The data items of every notification CLIENT got on CH, in order
    (a notification's data list is flattened, an object taken as is)."""
    out = []
    for c, m in client.notes:
        if c == ch:
            d = m["params"]["data"]
            out.extend(d if isinstance(d, list) else [d])
    return out


def trade_seqs(client, ch):
    """The trade_seq of every trade CLIENT got on CH, in order."""
    return [t["trade_seq"] for t in notes_data(client, ch)]


def seq_holes(client, ch):
    """The holes (pairs of neighbours that are not consecutive) in
    CLIENT's trade_seq on CH; fails when one goes back or repeats."""
    s = trade_seqs(client, ch)
    check(all(y > x for x, y in zip(s, s[1:])),
          "%s: trade_seq out of order or repeated: %r"
          % (client.name, [(x, y) for x, y in zip(s, s[1:]) if y <= x][:5]))
    return [(x, y) for x, y in zip(s, s[1:]) if y != x + 1]


async def burst_through(h, clients, ch, n):
    """Subscribes CLIENTS to bench channel CH (exsim --bench, --rate 1),
    stops exgate (SIGSTOP) while exsim publishes N messages at once, lets
    it go on, and checks that every client got all N, whole and in order
    (data.seq consecutive). Returns /status before and after."""
    for i, c in enumerate(clients):
        r = await c.call("public/subscribe", {"channels": [ch]}, id=i + 1)
        check(r.get("result") == [ch], "%s: subscribe %r" % (c.name, r))
    for c in clients:
        await c.wait_notes(ch, 1)      # the 1 msg/s stream reached each
    h.control("rate 0.001")
    await asyncio.sleep(0.2)
    s0 = h.status()
    have = [c.count(ch) for c in clients]
    os.kill(h.gate.pid, signal.SIGSTOP)
    try:
        r = h.control("burst %d" % n)
        check(r.get("ok"), "burst: %r" % r)
        await asyncio.sleep(0.3)
    finally:
        os.kill(h.gate.pid, signal.SIGCONT)
    for c, k in zip(clients, have):
        await c.wait_notes(ch, k + n, timeout=20)
    for c in clients:
        q = [m["params"]["data"]["seq"] for cc, m in c.notes if cc == ch]
        check(q == list(range(q[0], q[0] + len(q))),
              "%s: not in order or not whole: %d messages, first %s"
              % (c.name, len(q), q[:3]))
    return s0, h.status()


def batches_of_128_or_more(s0, s1):
    """Fan-out batches of 128 messages or more between /status S0 and S1."""
    f0, f1 = s0["fanout"], s1["fanout"]
    return sum(f1["batches_by_messages"][k] - f0["batches_by_messages"][k]
               for k in ("128-255", "256-511", "512-1023", "1024-2047",
                         "2048+"))


def wait_ready(h, timeout=10):
    return h.wait_up(lambda u: u.get("state") == "ready", timeout,
                     "upstream ready")


class Client:
    """Common inbox logic; subclasses implement _send and _recv_raw."""

    def __init__(self, name):
        self.name = name
        self.answers = {}          # json.dumps(id) -> message
        self.notes = []            # (channel, message)
        self.other = []            # heartbeats, id-less errors
        self.closed = None         # close code / reason once closed
        self.raw = []              # every text received
        self._ev = asyncio.Event()
        self._task = None

    def _dispatch(self, text):
        self.raw.append(text)
        try:
            m = json.loads(text)
        except ValueError:
            self.other.append(text)
            self._ev.set()
            return
        if isinstance(m, dict) and "id" in m:
            self.answers.setdefault(json.dumps(m["id"]), []).append(m)
        elif (isinstance(m, dict) and m.get("method") == "subscription"):
            self.notes.append((m["params"]["channel"], m))
        else:
            self.other.append(m)
        self._ev.set()

    async def _wait(self, pred, timeout, what):
        end = time.monotonic() + timeout
        while True:
            r = pred()
            if r:
                return r
            left = end - time.monotonic()
            if left <= 0:
                raise Fail("%s: timed out waiting for %s" % (self.name, what))
            self._ev.clear()
            try:
                await asyncio.wait_for(self._ev.wait(), min(left, 0.2))
            except asyncio.TimeoutError:
                pass

    async def send(self, obj):
        await self._send(obj if isinstance(obj, str) else json.dumps(obj))

    async def request(self, method, params=None, id=None, raw_id=None):
        """Sends a request; returns the key its answer will be filed under."""
        if raw_id is not None:
            text = ('{"jsonrpc":"2.0","id":%s,"method":%s,"params":%s}'
                    % (raw_id, json.dumps(method), json.dumps(params or {})))
            await self._send(text)
            return raw_id
        await self.send({"jsonrpc": "2.0", "id": id, "method": method,
                         "params": params or {}})
        return json.dumps(id)

    async def answer(self, key, timeout=5):
        def got():
            lst = self.answers.get(key)
            return lst.pop(0) if lst else None
        return await self._wait(got, timeout, "answer to id %s" % key)

    async def call(self, method, params=None, id=None, timeout=5):
        key = await self.request(method, params, id)
        return await self.answer(key, timeout)

    def count(self, channel):
        return sum(1 for c, _ in self.notes if c == channel)

    async def wait_notes(self, channel, n, timeout=5):
        return await self._wait(lambda: self.count(channel) >= n, timeout,
                                "%d notifications on %s" % (n, channel))

    async def wait_closed(self, timeout=5):
        return await self._wait(lambda: self.closed, timeout, "close")


class WSClient(Client):
    async def connect(self, url, **kw):
        self.ws = await websockets.connect(url, max_size=None, **kw)
        self._task = asyncio.ensure_future(self._reader())
        return self

    async def _reader(self):
        try:
            async for msg in self.ws:
                self._dispatch(msg if isinstance(msg, str)
                               else msg.decode("utf-8", "replace"))
        except websockets.ConnectionClosed:
            pass
        self.closed = (self.ws.close_code, self.ws.close_reason)
        self._ev.set()

    async def _send(self, text):
        await self.ws.send(text)

    async def close(self):
        await self.ws.close()
        if self._task:
            await asyncio.gather(self._task, return_exceptions=True)


class TCPClient(Client):
    async def connect(self, port):
        self.reader, self.writer = await asyncio.open_connection(
            "127.0.0.1", port, limit=64 * 1024 * 1024)
        self._task = asyncio.ensure_future(self._reader())
        return self

    async def _reader(self):
        try:
            while True:
                line = await self.reader.readline()
                if not line:
                    break
                self._dispatch(line.decode("utf-8", "replace").rstrip("\r\n"))
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        self.closed = ("eof",)
        self._ev.set()

    async def _send(self, text):
        self.writer.write(text.encode() + b"\n")
        await self.writer.drain()

    async def close(self):
        self.writer.close()
        if self._task:
            await asyncio.gather(self._task, return_exceptions=True)


def stop_clean(h):
    """SIGTERM to exgate: it must exit 0 with no sanitizer report (leaks
    included: LeakSanitizer runs at exit)."""
    rc = h.stop_gate()
    log = h.log()
    check(not re.search(r"AddressSanitizer|LeakSanitizer|runtime error",
                        log), "sanitizer report in the exgate log")
    check(rc == 0, "exgate exited with %s on SIGTERM" % rc)


def run(name, body):
    """Runs the coroutine function BODY(h) under upstream_harness.run, then
    stops exgate and checks it exits cleanly."""
    def sync_body(h):
        asyncio.run(asyncio.wait_for(body(h), 50))
        if h.gate is not None and h.gate.poll() is None:
            stop_clean(h)
    uh.run(name, sync_body)


# ---- Binance (protocol binance) against t/sim/bnsim -------------------


def binance_conf(ups, level_extra=""):
    """The conf text of one Binance upstream per item of UPS, a list of
    dicts with name, sim (a bnsim_util.Bnsim), market ("spot" or "usdm"),
    extra (more upstream directives), ws_port and http_port: the upstream
    (spot url .../stream, usdm the bare host: the gateway adds the routes),
    a websocket listener for every path and an http listener."""
    out = [level_extra]
    for u in ups:
        sim = u["sim"]
        url = "ws://127.0.0.1:%d%s" % (sim.ws_port, "/stream"
                                       if u["market"] == "spot" else "")
        out.append("upstream %s {\n"
                   "    url %s;\n"
                   "    protocol binance;\n"
                   "    market %s;\n"
                   "    rest_url http://127.0.0.1:%d;\n"
                   "    reconnect fixed { delay 50ms; }\n"
                   "%s}\n"
                   "listen 127.0.0.1:%d websocket upstream=%s path=/*;\n"
                   "listen 127.0.0.1:%d http upstream=%s;\n"
                   % (u["name"], url, u["market"], sim.rest_port,
                      u.get("extra", ""), u["ws_port"], u["name"],
                      u["http_port"], u["name"]))
    return "".join(out)


def start_binance(h, ups, level="info", main_extra="client_auth off;\n"):
    """Starts exgate with the Binance upstreams UPS (see binance_conf; the
    ports are filled in here) and sets h.bn[name] to the item, so
    h.bn[name]["ws_port"] / ["http_port"] / ["sim"] / ["market"].
    Binance's market streams have no login, so its listeners trust their
    clients: MAIN_EXTRA says client_auth off."""
    h.bn = {}
    for u in ups:
        u.setdefault("ws_port", free_port())
        u.setdefault("http_port", free_port())
        h.bn[u["name"]] = u
    h.start_gate_conf(binance_conf(ups, main_extra), level)


def bn_url(h, name, path):
    """ws:// URL of PATH on upstream NAME's websocket listener."""
    return "ws://127.0.0.1:%d%s" % (h.bn[name]["ws_port"], path)


def rotate_upstream(h, name):
    """POST /upstreams/NAME/rotate on the admin listener: (status, body)."""
    import urllib.error
    import urllib.request
    req = urllib.request.Request(
        "http://127.0.0.1:%d/upstreams/%s/rotate" % (h.admin_port, name),
        data=b"", method="POST")
    try:
        with urllib.request.urlopen(req, timeout=5) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def run_binance(name, sims, body, timeout=120):
    """Runs BODY(h, sims) under upstream_harness.run with one bnsim per
    item of SIMS ({label: [bnsim args]}), passed as {label: Bnsim}; then
    stops exgate (it must exit 0, no sanitizer report) and every bnsim (a
    clean exit, no traceback). A failure prints exgate's and bnsim's logs."""
    import contextlib
    from bnsim_util import Bnsim

    def sync_body(h):
        with contextlib.ExitStack() as st:
            ss = {}
            for label, args in sims.items():
                ss[label] = st.enter_context(Bnsim(*args))
            asyncio.run(asyncio.wait_for(body(h, ss), timeout))
            if h.gate is not None and h.gate.poll() is None:
                stop_clean(h)
    uh.run(name, sync_body)


def fault_plan(rnd, drops=20, rotations=10, gaps=5, shutdowns=3):
    """The faults of the Binance continuity tests, shuffled by RND."""
    plan = (["drop"] * drops + ["rotate"] * rotations + ["gap"] * gaps
            + ["shutdown"] * shutdowns)
    rnd.shuffle(plan)
    return plan


async def bn_wait_restored(sim, prev_max_id, streams, what, timeout=30):
    """Waits until bnsim SIM holds STREAMS streams again, all on
    connections opened after connection PREV_MAX_ID (the old ones gone);
    returns that stats object."""
    def ok(st):
        ids = [c["id"] for c in st["conns"]]
        return (ids and min(ids) > prev_max_id
                and st["streams_open"] == streams)
    return await sim.wait_stats(ok, what, timeout)


async def bn_faults(h, name, plan, gap_streams, rnd, pause=(0.2, 0.8),
                    after=None):
    """Applies PLAN (see fault_plan) to upstream NAME and its bnsim: `drop`
    and `shutdown` are bnsim control commands, `rotate` is POST
    /upstreams/NAME/rotate, `gap` is bnsim's `gap S` for a stream S of
    GAP_STREAMS (a list, or a function of bnsim's stats returning one:
    the streams the gateway holds upstream are its choice). After each
    fault but a gap, waits until bnsim holds as many streams as before on
    new connections only; then awaits AFTER(i, fault) if given and pauses
    a random time in PAUSE. Returns the seconds each restore took, by
    fault kind."""
    sim = h.bn[name]["sim"]
    streams = sim.stats()["streams_open"]
    check(streams > 0, "%s: bnsim holds no stream before the faults" % name)
    took = {}
    for i, f in enumerate(plan):
        st = sim.stats()
        prev = max([c["id"] for c in st["conns"]], default=0)
        t0 = time.monotonic()
        if f == "drop":
            check(sim.control("drop").get("ok"), "bnsim drop")
        elif f == "shutdown":
            check(sim.control("shutdown").get("ok"), "bnsim shutdown")
        elif f == "gap":
            s = rnd.choice(sorted(gap_streams(st)) if callable(gap_streams)
                           else gap_streams)
            check(sim.control("gap " + s).get("ok"), "bnsim gap %s" % s)
        elif f == "rotate":
            code, body = await asyncio.to_thread(rotate_upstream, h, name)
            check(code == 202, "%s: rotate %d %s" % (name, code, body))
        else:
            raise Fail("unknown fault %r" % f)
        if f != "gap":
            await bn_wait_restored(sim, prev, streams, "%s: restored after "
                                   "fault %d (%s)" % (name, i + 1, f))
            took.setdefault(f, []).append(time.monotonic() - t0)
        if after is not None:
            await after(i, f)
        await asyncio.sleep(rnd.uniform(*pause))
    return took
