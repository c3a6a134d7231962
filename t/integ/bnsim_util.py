"""bnsim_util: helpers for tests that run the Binance simulator t/sim/bnsim.

Generic on purpose, so any test may import it (the later Binance venue
tests too):

    from bnsim_util import Bnsim, Bn, check, main, run
    with Bnsim("--market", "usdm", "--rate", "50") as sim:
        sim.control("stats")                    # one control command -> dict
        status, headers, body = sim.get("/fapi/v1/depth", symbol="BTCUSDT")
        async def go():
            c = await Bn.open(sim.url("/public/ws"))
            r = await c.call("SUBSCRIBE", ["btcusdt@depth@100ms"])
            stream, data = await c.data()      # next market event
        run(go())
    # leaving the block sends `quit` and fails unless bnsim exited 0 with
    # no Python traceback in its stderr.

Uses /usr/bin/python3 with the `websockets` module (>= 10) and nothing else.
"""

import asyncio
import http.client
import itertools
import json
import os
import re
import signal
import subprocess
import sys
import shutil
import tempfile
import time

import websockets

from exsim_util import check, main, run  # noqa: F401  (re-exported)
from upstream_harness import Fail, exsim_control

HERE = os.path.dirname(os.path.abspath(__file__))
SRCDIR = os.environ.get("XG_SRCDIR") or os.path.abspath(
    os.path.join(HERE, "..", ".."))
BNSIM = os.path.join(SRCDIR, "t", "sim", "bnsim")


def http_request(port, method, target, headers=None, timeout=10):
    """One HTTP request to 127.0.0.1:PORT on a new connection:
    (status, headers with lower-case names, text)."""
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        c.request(method, target, headers=headers or {})
        r = c.getresponse()
        return r.status, {k.lower(): v for k, v in r.getheaders()}, \
            r.read().decode()
    finally:
        c.close()


def http_json(port, path, **params):
    """GET PATH?params on 127.0.0.1:PORT that must answer 200 with JSON;
    returns the body."""
    q = "&".join("%s=%s" % kv for kv in params.items())
    status, _, text = http_request(port, "GET", path + ("?" + q if q else ""))
    check(status == 200, "GET :%d%s %r: %d %r" % (port, path, params, status,
                                                  text[:300]))
    try:
        return json.loads(text)
    except ValueError:
        raise Fail("GET :%d%s: not JSON: %r" % (port, path, text[:200]))


def depth_path(market):
    return "/api/v3/depth" if market == "spot" else "/fapi/v1/depth"


class Bnsim:
    """One bnsim process on free loopback ports (ws_port, rest_port,
    control_port)."""

    def __init__(self, *args, ready_timeout=15):
        if not os.access(BNSIM, os.X_OK):
            raise Fail("bnsim not executable: %s" % BNSIM)
        self.tmp = tempfile.mkdtemp(prefix="bnsim-test-")
        self.err_path = os.path.join(self.tmp, "bnsim.err")
        err = open(self.err_path, "w")
        cmd = [BNSIM, "--listen", "127.0.0.1:0", "--rest", "127.0.0.1:0",
               "--control", "127.0.0.1:0"]
        self.proc = subprocess.Popen(cmd + list(args), stdout=subprocess.PIPE,
                                     stderr=err, stdin=subprocess.DEVNULL,
                                     text=True)
        err.close()
        end = time.monotonic() + ready_timeout
        line = ""
        while time.monotonic() < end:
            line = self.proc.stdout.readline()
            if not line:
                break
            m = re.match(r"bnsim ready ws=(\d+) rest=(\d+) control=(\d+)$",
                         line.strip())
            if m:
                self.ws_port, self.rest_port, self.control_port = (
                    int(m.group(1)), int(m.group(2)), int(m.group(3)))
                return
        self.kill()
        raise Fail("bnsim gave no ready line (got %r); stderr:\n%s"
                   % (line, self.log()))

    def url(self, path="/ws"):
        return "ws://127.0.0.1:%d%s" % (self.ws_port, path)

    def control(self, cmd, timeout=5):
        """Sends one control line; returns the parsed one-line JSON reply."""
        return exsim_control(self.control_port, cmd, timeout)

    def stats(self):
        return self.control("stats")

    async def wait_stats(self, pred, what, timeout=10):
        """Polls `stats` until PRED(stats) holds; returns that stats object."""
        end = time.monotonic() + timeout
        while True:
            st = self.stats()
            if pred(st):
                return st
            if time.monotonic() >= end:
                raise Fail("timed out after %.0fs waiting for %s: %r"
                           % (timeout, what, st))
            await asyncio.sleep(0.02)

    def request(self, method, target, headers=None, timeout=10):
        """One HTTP request on a new connection: (status, headers, text)."""
        return http_request(self.rest_port, method, target, headers, timeout)

    def get(self, path, **params):
        """GET PATH?params: (status, headers, parsed JSON or None)."""
        q = "&".join("%s=%s" % kv for kv in params.items())
        status, h, text = self.request("GET", path + ("?" + q if q else ""))
        try:
            body = json.loads(text) if text else None
        except ValueError:
            raise Fail("GET %s: not JSON: %r" % (path, text[:200]))
        return status, h, body

    def json(self, path, **params):
        """GET that must answer 200; returns the body."""
        status, h, body = self.get(path, **params)
        check(status == 200, "GET %s %r: %d %r" % (path, params, status, body))
        return body

    def oracle_json(self, path, window=60, **params):
        """GET PATH?params for a test's own comparison (bnsim's truth),
        which shares bnsim's one REST weight budget with whatever else
        asks it (a gateway). Fails when bnsim has banned anyone (418: a
        request during a 429's Retry-After; the gateway's to explain);
        after a 429, waits for the next weight WINDOW (bnsim's
        --weight-window) so as not to be banned itself, then GETs (once
        more after a 429 of its own)."""
        st = self.stats()
        check(st["rest_418"] == 0, "bnsim answered %d REST requests 418 "
              "before this test asked it anything itself (banned: asked "
              "during a 429's Retry-After); %d 429s, weight max %d in a "
              "window" % (st["rest_418"], st["rest_429"],
                          st["rest_weight_max"]))
        for _ in range(2):
            if st["rest_429"] > getattr(self, "_oracle_429", 0):
                time.sleep(window - time.time() % window + 0.2)
            self._oracle_429 = st["rest_429"]
            status, h, body = self.get(path, **params)
            if status != 429:
                break
            st = self.stats()
        check(status == 200, "GET %s %r: %d %r" % (path, params, status,
                                                   body))
        return body

    def log(self):
        try:
            with open(self.err_path) as f:
                return f.read()
        except OSError:
            return ""

    def alive(self):
        return self.proc.poll() is None

    def stop(self, timeout=10):
        """`quit`, then waits; returns the exit code (SIGKILL after timeout)."""
        if self.proc.poll() is None:
            try:
                self.control("quit", timeout=3)
            except (OSError, Fail):
                self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()
        return self.proc.returncode

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        if self.proc.stdout:
            self.proc.stdout.close()

    def check_clean_exit(self):
        rc = self.stop()
        log = self.log()
        check(rc == 0 and "Traceback" not in log,
              "bnsim exit %r; log tail:\n%s" % (rc, log[-3000:]))

    def __enter__(self):
        return self

    def __exit__(self, et, ev, tb):
        if et is None:
            self.check_clean_exit()
        else:
            self.kill()
            sys.stderr.write("--- bnsim log (tail) ---\n%s\n"
                             % self.log()[-4000:])
        if self.proc.stdout:
            self.proc.stdout.close()
        # its log was shown above when it failed: the directory goes
        shutil.rmtree(self.tmp, ignore_errors=True)
        return False


class Bn:
    """A Binance market-stream client over one WebSocket connection.

    Replies (frames with "result" or "error") go to self.replies, keyed by
    the raw text so tests can check ids byte for byte; market events go to
    self.events as (stream or None, data, raw text): combined frames are
    unwrapped, raw ones have stream None.
    """

    _ids = itertools.count(1)

    def __init__(self, ws):
        self.ws = ws
        self.trace = None        # a list: every frame as (kind, raw) in order
        self.replies = asyncio.Queue()
        self.events = asyncio.Queue()
        self.closed = asyncio.get_running_loop().create_future()
        self.reader = asyncio.ensure_future(self._read())

    @classmethod
    async def open(cls, url, **kw):
        kw.setdefault("max_size", 64 << 20)
        kw.setdefault("ping_interval", None)
        kw.setdefault("compression", None)
        ws = await websockets.connect(url, **kw)
        c = cls(ws)
        c.url = url
        return c

    async def _read(self):
        try:
            async for raw in self.ws:
                try:
                    msg = json.loads(raw)
                except ValueError:
                    msg = None          # not JSON: an event with data None
                is_reply = isinstance(msg, dict) and ("result" in msg
                                                      or "error" in msg)
                if self.trace is not None:
                    self.trace.append(("reply" if is_reply else "event", raw))
                if is_reply:
                    await self.replies.put((msg, raw))
                elif (isinstance(msg, dict) and "stream" in msg
                      and "data" in msg):
                    await self.events.put((msg["stream"], msg["data"], raw))
                else:
                    await self.events.put((None, msg, raw))
        except websockets.ConnectionClosed:
            pass
        finally:
            if not self.closed.done():
                self.closed.set_result((self.ws.close_code,
                                        self.ws.close_reason))

    async def send(self, obj):
        await self.ws.send(obj if isinstance(obj, (str, bytes))
                           else json.dumps(obj))

    async def reply(self, timeout=5):
        """The next reply: (parsed, raw text)."""
        return await asyncio.wait_for(self.replies.get(), timeout)

    def no_reply(self, what):
        """Fails (naming WHAT) when a reply is queued that nobody read."""
        if not self.replies.empty():
            raise Fail("%s: a reply nobody asked for: %r"
                       % (what, self.replies.get_nowait()[1]))

    async def call(self, method, params=None, id=None, timeout=5):
        """Sends one control message; returns the parsed reply, which must
        carry the same id."""
        if id is None:
            id = next(self._ids)
        req = {"method": method, "id": id}
        if params is not None:
            req["params"] = params
        await self.send(req)
        msg, raw = await self.reply(timeout)
        check(msg.get("id") == id, "reply id %r for %r" % (msg, id))
        return msg

    async def data(self, stream=None, timeout=5):
        """The next event (of STREAM if given): (stream, data)."""
        end = time.monotonic() + timeout
        while True:
            left = end - time.monotonic()
            if left <= 0:
                raise Fail("no event%s in %.1fs on %s (closed: %r)" % (
                    " of " + stream if stream else "", timeout, self.url,
                    self.closed.result() if self.closed.done() else None))
            try:
                s, d, _ = await asyncio.wait_for(self.events.get(), left)
            except asyncio.TimeoutError:
                continue
            if stream is None or s == stream:
                return s, d

    def drain(self):
        """Everything queued now: a list of (stream, data, raw)."""
        out = []
        while not self.events.empty():
            out.append(self.events.get_nowait())
        return out

    async def wait_closed(self, timeout=5):
        """Waits for the connection to end; returns (close code, reason)."""
        return await asyncio.wait_for(asyncio.shield(self.closed), timeout)

    async def close(self):
        await self.ws.close()
        try:
            await asyncio.wait_for(self.reader, 5)
        except (asyncio.TimeoutError, Exception):
            self.reader.cancel()


class Book:
    """A strict local order book kept by Binance's documented rules
    (exchange-protocols E3): spot drops u <= lastUpdateId, the first
    applied event has U <= lastUpdateId + 1 <= u and every later one
    U == previous u + 1; USDⓈ-M drops u < lastUpdateId, the first has
    U <= lastUpdateId <= u and every later one pu == previous u. When the
    snapshot was taken right after an event was published, lastUpdateId is
    that event's u and the next event has U = lastUpdateId + 1 and
    pu == lastUpdateId: the documented first-event rule has a hole there,
    and this client (like ccxt) also takes pu == lastUpdateId
    (counted in first_by_pu). Quantities are exact decimal strings; "0" removes a level."""

    def __init__(self, market, snapshot):
        self.usdm = market == "usdm"
        self.id = snapshot["lastUpdateId"]
        self.bids = {p: q for p, q in snapshot["bids"]}
        self.asks = {p: q for p, q in snapshot["asks"]}
        self.synced = False
        self.applied = 0
        self.first_by_pu = 0

    def apply(self, ev):
        """Applies one depthUpdate; returns False when it is dropped as
        old; raises Fail on a chain break."""
        U, u = ev["U"], ev["u"]
        if not self.synced:
            if (u < self.id) if self.usdm else (u <= self.id):
                return False
            if self.usdm:
                ok = U <= self.id <= u
                if not ok and ev["pu"] == self.id:
                    ok = True
                    self.first_by_pu += 1
            else:
                ok = U <= self.id + 1 <= u
            check(ok, "first event U=%d u=%d does not cover "
                  "lastUpdateId %d" % (U, u, self.id))
            self.synced = True
        elif self.usdm:
            check(ev["pu"] == self.id, "chain break: pu=%d, previous u=%d"
                  % (ev["pu"], self.id))
        else:
            check(U == self.id + 1, "chain break: U=%d, previous u=%d"
                  % (U, self.id))
        for side, book in (("b", self.bids), ("a", self.asks)):
            for p, q in ev[side]:
                if float(q) == 0:
                    book.pop(p, None)
                else:
                    book[p] = q
        self.id = u
        self.applied += 1
        return True

    def same_as(self, snapshot):
        """Whether this book equals SNAPSHOT (levels and id)."""
        return (self.id == snapshot["lastUpdateId"]
                and self.bids == {p: q for p, q in snapshot["bids"]}
                and self.asks == {p: q for p, q in snapshot["asks"]})


class DepthClient:
    """A strict book client on one Bn connection, as a bot does it: the
    first depthUpdate of a book is buffered (left in the queue), a REST
    snapshot is taken through SNAP(symbol) (a coroutine function: the
    gateway's REST front, say), taken again while it is older than the
    first buffered event (E3 step 4), then Book applies every event.
    Books are keyed by stream name (combined framing) or symbol (raw).
    Nothing is forgiven: a chain break, a snapshot the stream cannot
    continue from, an event that is not a depthUpdate (serverShutdown
    included) is recorded in self.errors (then the book is resynced from
    SNAP so later events are checked too)."""

    def __init__(self, name, market, bn, snap):
        self.name, self.market, self.bn, self.snap = name, market, bn, snap
        self.books = {}
        self.errors = []
        self.events = 0
        self.snapshots = 0
        self.stop = False
        self.task = asyncio.ensure_future(self._run())

    async def _snapshot(self, sym, first):
        for _ in range(20):
            s = await self.snap(sym)
            self.snapshots += 1
            L = s["lastUpdateId"]
            old = (L + 1 < first["U"]) if self.market == "spot" \
                else (L < first["pu"])
            if not old:
                return s
            await asyncio.sleep(0.1)
        self.errors.append("%s %s: 20 snapshots older than the first "
                           "buffered event (U=%d)" % (self.name, sym,
                                                      first["U"]))
        return s

    async def _run(self):
        while True:
            try:
                stream, d, _ = await asyncio.wait_for(self.bn.events.get(),
                                                      0.2)
            except asyncio.TimeoutError:
                if self.stop:
                    return
                continue
            self.events += 1
            if not isinstance(d, dict) or d.get("e") != "depthUpdate":
                self.errors.append("%s: not a depthUpdate on %s: %.200r"
                                   % (self.name, stream, d))
                continue
            key = stream or d["s"]
            b = self.books.get(key)
            if b is None:
                snap = await self._snapshot(d["s"], d)
                b = self.books[key] = Book(self.market, snap)
            try:
                b.apply(d)
            except Fail as e:
                self.errors.append("%s %s: %s" % (self.name, key, e))
                nb = Book(self.market, await self.snap(d["s"]))
                self.books[key] = nb

    async def finish(self):
        self.stop = True
        await self.task


class TradeClient:
    """Records the trade ids one Bn connection receives: t of each
    `trade` and a of each `aggTrade`, per (kind, symbol); anything else
    (serverShutdown included) is recorded in self.errors."""

    def __init__(self, name, bn):
        self.name, self.bn = name, bn
        self.ids = {}            # ("trade"|"aggTrade", SYMBOL) -> [ids]
        self.errors = []
        self.stop = False
        self.task = asyncio.ensure_future(self._run())

    async def _run(self):
        while True:
            try:
                stream, d, _ = await asyncio.wait_for(self.bn.events.get(),
                                                      0.2)
            except asyncio.TimeoutError:
                if self.stop:
                    return
                continue
            e = d.get("e") if isinstance(d, dict) else None
            if e == "trade":
                self.ids.setdefault((e, d["s"]), []).append(d["t"])
            elif e == "aggTrade":
                self.ids.setdefault((e, d["s"]), []).append(d["a"])
            else:
                self.errors.append("%s: not a trade on %s: %.200r"
                                   % (self.name, stream, d))

    def holes(self, key):
        """The pairs of neighbours in KEY's ids that are not id, id + 1
        (a repeat, a step back or a hole)."""
        s = self.ids.get(key, [])
        return [(x, y) for x, y in zip(s, s[1:]) if y != x + 1]

    async def finish(self):
        self.stop = True
        await self.task
