"""exsim_util: helpers for tests that run the exchange simulator t/sim/exsim.

Generic on purpose, so any test may import it:

    from exsim_util import Exsim, Rpc, run, check
    with Exsim("--rate", "0") as sim:          # starts exsim, parses its ports
        sim.control("stats")                   # one control command -> dict
        async def main():
            c = await Rpc.open(sim.url())      # a JSON-RPC client (websockets)
            r = await c.call("public/get_time")
            note = await c.note("book.BTC-PERPETUAL.100ms")
        run(main())
    # leaving the block sends `quit` and fails if exsim did not exit 0 or
    # the sanitizers reported anything in its stderr.

Uses /usr/bin/python3 with the `websockets` module (>= 10) and nothing else.
"""

import asyncio
import itertools
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time

import websockets

HERE = os.path.dirname(os.path.abspath(__file__))
BUILDDIR = os.environ.get("XG_BUILDDIR") or os.path.abspath(
    os.path.join(HERE, "..", ".."))
EXSIM = os.path.join(BUILDDIR, "t", "sim", "exsim")

SANITIZER_MARKS = ("ERROR: AddressSanitizer", "ERROR: LeakSanitizer",
                   "runtime error:", "SUMMARY: UndefinedBehaviorSanitizer")


# One Fail class for both helper modules, so either's failures are caught.
from upstream_harness import Fail, exsim_control  # noqa: E402


def check(cond, what):
    """Raises Fail(what) unless cond."""
    if not cond:
        raise Fail(what)


class Exsim:
    """One exsim process on free loopback ports (ws_port, control_port)."""

    def __init__(self, *args, ready_timeout=10):
        if not os.access(EXSIM, os.X_OK):
            raise Fail("exsim not built: %s" % EXSIM)
        self.tmp = tempfile.mkdtemp(prefix="exsim-test-")
        self.err_path = os.path.join(self.tmp, "exsim.err")
        err = open(self.err_path, "w")
        cmd = [EXSIM, "--listen", "127.0.0.1:0", "--control", "127.0.0.1:0"]
        self.proc = subprocess.Popen(cmd + list(args), stdout=subprocess.PIPE,
                                     stderr=err, stdin=subprocess.DEVNULL,
                                     text=True)
        err.close()
        self.ws_port = self.control_port = None
        end = time.monotonic() + ready_timeout
        line = ""
        while time.monotonic() < end:
            line = self.proc.stdout.readline()
            if not line:
                break
            m = re.match(r"exsim ready ws=(\d+) control=(\d+)$", line.strip())
            if m:
                self.ws_port = int(m.group(1))
                self.control_port = int(m.group(2))
                return
        self.kill()
        raise Fail("exsim gave no ready line (got %r); stderr:\n%s"
                   % (line, self.log()))

    def url(self, path="/ws/api/v2", scheme="ws"):
        return "%s://127.0.0.1:%d%s" % (scheme, self.ws_port, path)

    def control(self, cmd, timeout=5):
        """Sends one control line; returns the parsed one-line JSON reply."""
        return exsim_control(self.control_port, cmd, timeout)

    def stats(self):
        return self.control("stats")

    async def wait_stats(self, pred, what, timeout=10):
        """Polls `stats` until PRED(stats) holds; returns that stats object.

        exsim applies a drop or a close from its own later events, so a
        test waits for the count it expects instead of sleeping a guess
        (a loaded machine under ASan is several times slower).
        """
        end = time.monotonic() + timeout
        while True:
            st = self.stats()
            if pred(st):
                return st
            if time.monotonic() >= end:
                raise Fail("timed out after %.0fs waiting for %s: %r"
                           % (timeout, what, st))
            await asyncio.sleep(0.02)

    def log(self):
        try:
            with open(self.err_path) as f:
                return f.read()
        except OSError:
            return ""

    def stop(self, timeout=15):
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
        bad = [m for m in SANITIZER_MARKS if m in log]
        check(rc == 0 and not bad, "exsim exit %r, sanitizer marks %r; log"
              " tail:\n%s" % (rc, bad, log[-3000:]))

    def __enter__(self):
        return self

    def __exit__(self, et, ev, tb):
        if et is None:
            self.check_clean_exit()
        else:
            self.kill()
            sys.stderr.write("--- exsim log (tail) ---\n%s\n"
                             % self.log()[-4000:])
        if self.proc.stdout:
            self.proc.stdout.close()
        return False


class DeltaBook:
    """A client's copy of one book channel: the levels of each snapshot or
    change applied as Deribit's new/change/delete, each checked against
    what the copy holds (a delete or change of an unknown price, or a new
    one on a price already there, fails the test)."""

    def __init__(self, name):
        self.name = name
        self.bids, self.asks = {}, {}

    def apply_levels(self, d):
        for side, levels in (("bids", self.bids), ("asks", self.asks)):
            for action, price, amount in d[side]:
                if action == "delete":
                    check(price in levels, "%s: delete of unknown %r"
                          % (self.name, price))
                    del levels[price]
                elif action == "new":
                    check(price not in levels, "%s: new on existing %r"
                          % (self.name, price))
                    levels[price] = amount
                else:
                    check(action == "change" and price in levels,
                          "%s: %s of %r" % (self.name, action, price))
                    levels[price] = amount

    def pairs(self):
        return (sorted(([p, a] for p, a in self.bids.items()), reverse=True),
                sorted([p, a] for p, a in self.asks.items()))


def envelope_problem(msg):
    """What is wrong with MSG's envelope if it is a response, else None.

    Deribit puts jsonrpc, usIn, usOut, usDiff and testnet (a boolean) on
    every response, with or without an id; notifications carry none.
    """
    if not isinstance(msg, dict) or "method" in msg:
        return None
    if "result" not in msg and "error" not in msg:
        return "neither result nor error: %r" % (msg,)
    missing = {"jsonrpc", "usIn", "usOut", "usDiff", "testnet"} - set(msg)
    if missing:
        return "response lacks %s: %r" % (sorted(missing), msg)
    if msg["jsonrpc"] != "2.0" or not isinstance(msg["testnet"], bool):
        return "bad jsonrpc or testnet: %r" % (msg,)
    return None


class Rpc:
    """A JSON-RPC 2.0 client over one WebSocket connection.

    Responses are matched by id; notifications (method "subscription" or
    "heartbeat") are queued in self.notes; frames with neither (error
    frames without id) in self.noid. A reader task does the receiving, so
    calls and notifications interleave freely.
    """

    _ids = itertools.count(1)

    def __init__(self, ws):
        self.ws = ws
        self.pending = {}
        self.notes = asyncio.Queue()
        self.noid = asyncio.Queue()
        self.unmatched = []     # responses to ids sent with send()
        self.envelope_errors = []   # responses without Deribit's envelope
        self.closed = asyncio.get_running_loop().create_future()
        self.answer_test_requests = False
        self.reader = asyncio.ensure_future(self._read())

    @classmethod
    async def open(cls, url, **kw):
        kw.setdefault("max_size", 64 << 20)
        kw.setdefault("ping_interval", None)
        ws = await websockets.connect(url, **kw)
        return cls(ws)

    async def _read(self):
        try:
            async for raw in self.ws:
                msg = json.loads(raw)
                bad = envelope_problem(msg)
                if bad:
                    self.envelope_errors.append(bad)
                if "id" in msg:
                    fut = self.pending.pop(msg["id"], None)
                    if fut is not None and not fut.done():
                        if bad:
                            fut.set_exception(Fail(bad))
                        else:
                            fut.set_result(msg)
                    else:
                        self.unmatched.append(msg)
                    continue
                if "method" in msg:
                    if (self.answer_test_requests
                            and msg["method"] == "heartbeat"
                            and msg["params"].get("type") == "test_request"):
                        await self.send({"jsonrpc": "2.0", "id": next(self._ids),
                                         "method": "public/test",
                                         "params": {}})
                    await self.notes.put(msg)
                else:
                    await self.noid.put(msg)
        except websockets.ConnectionClosed:
            pass
        finally:
            if not self.closed.done():
                self.closed.set_result((self.ws.close_code,
                                        self.ws.close_reason))
            for fut in self.pending.values():
                if not fut.done():
                    fut.set_exception(Fail("connection closed"))

    async def send(self, obj):
        await self.ws.send(obj if isinstance(obj, str) else json.dumps(obj))

    async def call(self, method, params=None, id=None, timeout=10):
        """Sends one request; returns the whole response (result or error)."""
        check(not self.envelope_errors, "earlier response: %s"
              % (self.envelope_errors[:1],))
        if id is None:
            id = next(self._ids)
        fut = asyncio.get_running_loop().create_future()
        self.pending[id] = fut
        req = {"jsonrpc": "2.0", "id": id, "method": method}
        if params is not None:
            req["params"] = params
        await self.send(req)
        return await asyncio.wait_for(fut, timeout)

    async def result(self, method, params=None, timeout=10):
        """Like call(), but fails unless the response has a result."""
        r = await self.call(method, params, timeout=timeout)
        check("result" in r, "%s: %r" % (method, r))
        return r["result"]

    async def note(self, channel=None, timeout=5, method="subscription"):
        """The next notification (of CHANNEL, others are dropped)."""
        end = time.monotonic() + timeout
        while True:
            left = end - time.monotonic()
            if left <= 0:
                raise Fail("no %s notification in %.1fs" % (channel or method,
                                                             timeout))
            try:
                m = await asyncio.wait_for(self.notes.get(), left)
            except asyncio.TimeoutError:
                continue
            if m.get("method") != method:
                continue
            if channel is None or m["params"].get("channel") == channel:
                return m

    async def wait_closed(self, timeout=5):
        """Waits for the connection to end; returns (close code, reason)."""
        return await asyncio.wait_for(asyncio.shield(self.closed), timeout)

    async def close(self):
        await self.ws.close()
        try:
            await asyncio.wait_for(self.reader, 5)
        except (asyncio.TimeoutError, Exception):
            self.reader.cancel()


def run(coro, timeout=50):
    """Runs a coroutine with an overall deadline."""
    return asyncio.run(asyncio.wait_for(coro, timeout))


def main(fn):
    """Runs test function FN(); prints PASS/FAIL and exits 0/1."""
    name = os.path.basename(sys.argv[0])
    try:
        fn()
    except Fail as e:
        sys.stderr.write("FAIL %s: %s\n" % (name, e))
        sys.exit(1)
    print("PASS %s" % name)
    sys.exit(0)
