"""book: src/xg_book.c on exsim's real book stream, wired as the gateway
is meant to wire it (t/integ/book_relay.c is that wiring in miniature).

One upstream connection to exsim carries book.BTC-PERPETUAL.raw,
book.BTC-PERPETUAL.100ms, book.ETH-PERPETUAL.raw and a grouped book. Every
upstream notification goes to book_relay byte for byte; what book_relay
says to send goes to strict client books. A client applies every message
as deltas, fails on a second snapshot, on a broken prev_change_id chain,
on a delete of a level it lacks and on a `new` of a level it has. Through
bursts of changes, late joiners (one while the book is live, one during
an outage), a `gap` (book_relay asks for a resync; the channel is
resubscribed) and an outage (every channel unsubscribed while the market
moves, then subscribed again), every client must end equal to
public/get_order_book at the same change_id, with one snapshot each.
"""
import asyncio
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from exsim_util import (BUILDDIR, DeltaBook, Exsim, Rpc, check,  # noqa: E402
                        main, run)

import websockets  # noqa: E402

RELAY = os.path.join(BUILDDIR, "t", "integ", "book_relay")
CREDS = {"grant_type": "client_credentials", "client_id": "exsim",
         "client_secret": "exsim-secret"}
RAW, AGG = "book.BTC-PERPETUAL.raw", "book.BTC-PERPETUAL.100ms"
ETH, GRP = "book.ETH-PERPETUAL.raw", "book.BTC-PERPETUAL.none.10.100ms"
DELTA = [RAW, AGG, ETH]
INSTR = {RAW: "BTC-PERPETUAL", AGG: "BTC-PERPETUAL", ETH: "ETH-PERPETUAL"}


class Client(DeltaBook):
    """A client book that applies every message as deltas."""

    def __init__(self, name):
        DeltaBook.__init__(self, name)
        self.change_id = None
        self.snapshots = 0
        self.messages = 0

    def apply(self, text):
        m = json.loads(text)
        d = m["params"]["data"]
        if d["type"] == "snapshot":
            self.snapshots += 1
            check(self.snapshots == 1, "%s: a second snapshot" % self.name)
            check(self.change_id is None, "%s: snapshot mid-chain" % self.name)
        else:
            check(d["type"] == "change", "%s: type %r" % (self.name, d))
            check(d["prev_change_id"] == self.change_id,
                  "%s: chain broken: prev_change_id %r, last %r"
                  % (self.name, d["prev_change_id"], self.change_id))
        self.change_id = d["change_id"]
        self.messages += 1
        self.apply_levels(d)


class Feed:
    """The upstream connection: raw notification text kept as received."""

    def __init__(self, ws):
        self.ws = ws
        self.ids = 0
        self.pending = {}
        self.notes = asyncio.Queue()
        self.reader = asyncio.ensure_future(self._read())

    async def _read(self):
        async for raw in self.ws:
            if '"method":"subscription"' in raw.replace(" ", ""):
                await self.notes.put(raw)
                continue
            msg = json.loads(raw)
            fut = self.pending.pop(msg.get("id"), None)
            if fut is not None and not fut.done():
                fut.set_result(msg)

    async def result(self, method, params):
        self.ids += 1
        fut = asyncio.get_running_loop().create_future()
        self.pending[self.ids] = fut
        await self.ws.send(json.dumps({"jsonrpc": "2.0", "id": self.ids,
                                       "method": method, "params": params}))
        r = await asyncio.wait_for(fut, 10)
        check("result" in r, "%s: %r" % (method, r))
        return r["result"]


class Relay:
    """book_relay as a subprocess; its output is delivered to clients."""

    def __init__(self, proc):
        self.proc = proc
        self.clients = {ch: [] for ch in DELTA}
        self.joiners = {ch: [] for ch in DELTA}
        self.images = 0
        self.resync = asyncio.Queue()
        self.errors = []
        self.stats = asyncio.Queue()
        self.failure = None
        self.reader = asyncio.ensure_future(self._read())

    def send(self, line):
        self.proc.stdin.write((line + "\n").encode())

    async def _read(self):
        try:
            await self._deliver()
        except Exception as e:  # noqa: BLE001 (reported by settle())
            self.failure = e

    async def _deliver(self):
        while True:
            line = await self.proc.stdout.readline()
            if not line:
                return
            tag, rest = line.decode().rstrip("\n").split(" ", 1)
            if tag == "T":
                await self.stats.put(rest.split(" "))
                continue
            ch, _, text = rest.partition(" ")
            if tag == "O" and ch == GRP:
                self.images += 1
            elif tag == "O":
                for c in self.clients[ch]:
                    c.apply(text)
            elif tag == "J":
                check(self.joiners[ch], "J for %s with nobody waiting" % ch)
                c = self.joiners[ch].pop(0)
                c.apply(text)
                self.clients[ch].append(c)
            elif tag == "R":
                await self.resync.put(ch)
            else:
                self.errors.append(line.decode())

    async def stat(self, ch):
        self.send("S " + ch)
        await self.proc.stdin.drain()
        v = await asyncio.wait_for(self.stats.get(), 5)
        check(v[0] == ch, "stats for %r" % v)
        keys = ("kind", "synced", "change_id", "gaps", "waits", "errors",
                "anomalies", "levels", "bytes")
        return dict(zip(keys, (int(x) for x in v[1:])))


async def pump(feed, relay):
    """Every upstream notification to the relay, byte for byte."""
    while True:
        raw = await feed.notes.get()
        ch = json.loads(raw)["params"]["channel"]
        relay.send("M %s %s" % (ch, raw))
        await relay.proc.stdin.drain()


async def resyncer(feed, relay):
    """A gap: resubscribe that channel alone for a new snapshot."""
    while True:
        ch = await relay.resync.get()
        await feed.result("private/unsubscribe", {"channels": [ch]})
        await feed.result("private/subscribe", {"channels": [ch]})


async def settle(rpc, relay, what, timeout=20):
    """Waits until every client equals get_order_book; checks them."""
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    books = {}
    for instr in set(INSTR.values()):
        books[instr] = await rpc.result("public/get_order_book",
                                        {"instrument_name": instr,
                                         "depth": 10000})
    while True:
        late = [(c.name, c.change_id, books[INSTR[ch]]["change_id"])
                for ch in DELTA for c in relay.clients[ch]
                if c.change_id != books[INSTR[ch]]["change_id"]]
        check(relay.failure is None, "%s: %s" % (what, relay.failure))
        if not late:
            break
        check(not relay.errors, "relay errors: %r" % relay.errors)
        check(loop.time() < end, "%s: clients behind: %r" % (what, late))
        await asyncio.sleep(0.05)
    await asyncio.sleep(0.2)    # nothing more may arrive for them
    check(relay.failure is None, "%s: %s" % (what, relay.failure))
    n = 0
    for ch in DELTA:
        ob = books[INSTR[ch]]
        for c in relay.clients[ch]:
            bids, asks = c.pairs()
            check(bids == ob["bids"] and asks == ob["asks"],
                  "%s: %s differs from get_order_book at %d"
                  % (what, c.name, ob["change_id"]))
            n += 1
    return n


def test():
    check(os.access(RELAY, os.X_OK), "not built: %s" % RELAY)
    with Exsim("--rate", "0", "--seed", "11", "--instruments",
               "BTC-PERPETUAL,ETH-PERPETUAL") as sim:
        async def go():
            proc = await asyncio.create_subprocess_exec(
                RELAY, stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE)
            relay = Relay(proc)
            ws = await websockets.connect(sim.url(), max_size=64 << 20,
                                          ping_interval=None)
            feed = Feed(ws)
            rpc = await Rpc.open(sim.url())
            tasks = [asyncio.ensure_future(pump(feed, relay)),
                     asyncio.ensure_future(resyncer(feed, relay))]
            try:
                await feed.result("public/auth", CREDS)
                for ch in DELTA:
                    relay.clients[ch].append(Client(ch + "#1"))
                got = await feed.result("private/subscribe",
                                        {"channels": DELTA + [GRP]})
                check(sorted(got) == sorted(DELTA + [GRP]), "subscribe %r"
                      % got)
                await settle(rpc, relay, "start")

                sim.control("burst 2000", timeout=30)
                await settle(rpc, relay, "burst")

                # late joiners on a live book: a snapshot from the book
                for ch in (RAW, AGG):
                    relay.joiners[ch].append(Client(ch + "#2"))
                    relay.send("J " + ch)
                sim.control("burst 500", timeout=30)
                await settle(rpc, relay, "late join")
                check(all(len(relay.clients[ch]) == 2 for ch in (RAW, AGG)),
                      "joiners not served")

                # a lost change on one channel: resync and bridge
                check(sim.control("gap " + RAW)["ok"], "gap")
                sim.control("burst 300", timeout=30)
                await settle(rpc, relay, "gap")
                st = await relay.stat(RAW)
                check(st["gaps"] == 1 and st["synced"] == 1, "raw %r" % st)
                st = await relay.stat(AGG)
                check(st["gaps"] == 0, "100ms %r" % st)

                # an outage: the market moves while nothing is subscribed;
                # a client joins meanwhile
                for ch in DELTA:
                    relay.send("D " + ch)
                await feed.result("private/unsubscribe",
                                  {"channels": DELTA + [GRP]})
                relay.joiners[AGG].append(Client(AGG + "#3"))
                relay.send("J " + AGG)
                sim.control("burst 1000", timeout=30)
                await feed.result("private/subscribe",
                                  {"channels": DELTA + [GRP]})
                n = await settle(rpc, relay, "outage")
                check(n == 6, "%d clients" % n)
                sim.control("burst 200", timeout=30)
                n = await settle(rpc, relay, "after the outage")

                for ch in DELTA:
                    st = await relay.stat(ch)
                    check(st["errors"] == 0 and st["anomalies"] == 0,
                          "%s %r" % (ch, st))
                    for c in relay.clients[ch]:
                        check(c.snapshots == 1, "%s: %d snapshots"
                              % (c.name, c.snapshots))
                check(relay.images > 2, "grouped book not passed through")
                check(not relay.errors, "relay errors: %r" % relay.errors)
                print("%d clients equal to get_order_book; raw book %d levels,"
                      " %d bytes" % (n, st["levels"], st["bytes"]))
            finally:
                for t in tasks:
                    t.cancel()
                await rpc.close()
                await ws.close()
                proc.stdin.close()
                try:
                    await asyncio.wait_for(proc.wait(), 10)
                except asyncio.TimeoutError:
                    proc.kill()
                    await proc.wait()
                check(proc.returncode == 0, "book_relay exit %r"
                      % proc.returncode)

        run(go(), timeout=55)


main(test)
