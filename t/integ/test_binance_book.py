#!/usr/bin/python3
"""Binance venue (issue 13): books kept and bridged through faults.

exgate with a spot and a USDⓈ-M upstream (`protocol binance;`) on two
bnsims (--rate 50, 3 symbols; USDⓈ-M update ids jump between events as
Binance's do). On each market four strict book clients (bnsim_util.
DepthClient) hold depth streams of three symbols at several speeds on
every path form (ccxt's SUBSCRIBE on /ws/<n>, /stream?streams=, a raw
/ws/<stream>, ccxt's spot /stream/ws/<n>): each takes its snapshot from
the gateway's http listener (/api/v3/depth, /fapi/v1/depth, limit 1000)
and applies the stream by Binance's rules (spot U == previous u + 1,
USDⓈ-M pu == previous u, first event as documented).

Each market then goes through 20 bnsim `drop`s, 10 rotations (POST
/upstreams/NAME/rotate), 5 `gap`s of a depth stream the gateway holds
and 3 `shutdown`s (serverShutdown, close 1001 0.5 s later), shuffled, the
two markets at once; after faults 10, 20 and 30 a new client joins with
a snapshot from the gateway.

Checked: no chain break, no snapshot the stream cannot continue from, no
event but depthUpdate (serverShutdown is not the clients' business), no
client closed or sent an unasked reply; once bnsim's market is stopped
(`rate 0`) every client's every book equals bnsim's REST depth, id and
levels, and so does the gateway's REST depth; the gateway answers depth
from its book (five requests cost bnsim fewer than five); bnsim never
closed with 1008.
"""

import asyncio
import os
import random
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import gateway_harness as gh  # noqa: E402
from gateway_harness import check  # noqa: E402
from bnsim_util import Bn, DepthClient, http_json, depth_path  # noqa: E402

SIM = ["--rate", "50", "--symbols", "3"]
LIMIT = 1000

CLIENTS = {
    "spot": [
        ("/ws/0", ["btcusdt@depth@100ms"]),
        ("/stream?streams=btcusdt@depth@100ms/ethusdt@depth@100ms", []),
        ("/ws/btcusdt@depth", []),
        ("/stream/ws/1", ["ethusdt@depth@100ms", "bnbusdt@depth@1000ms"]),
    ],
    "usdm": [
        ("/fapi/public/ws/0", ["btcusdt@depth@100ms"]),
        ("/public/stream?streams=btcusdt@depth@100ms/ethusdt@depth@500ms", []),
        ("/ws/btcusdt@depth", []),
        ("/fapi/public/ws/1", ["ethusdt@depth@100ms", "bnbusdt@depth"]),
    ],
}


def snapper(h, up):
    port = h.bn[up]["http_port"]
    path = depth_path(h.bn[up]["market"])

    async def snap(sym):
        return await asyncio.to_thread(http_json, port, path, symbol=sym,
                                       limit=LIMIT)
    return snap


async def open_client(h, up, path, subs, n):
    c = await Bn.open(gh.bn_url(h, up, path))
    if subs:
        r = await c.call("SUBSCRIBE", subs, id=1, timeout=10)
        check(r == {"result": None, "id": 1}, "%s: subscribe %r" % (path, r))
    return DepthClient("%s#%d %s" % (up, n, path), h.bn[up]["market"], c,
                       snapper(h, up))


def differ(book, snap):
    """Up to 3 levels per side where BOOK and SNAP differ."""
    out = []
    for side, mine in (("bids", book.bids), ("asks", book.asks)):
        theirs = {p: q for p, q in snap[side]}
        keys = sorted(set(mine) | set(theirs), key=float)
        bad = [(p, mine.get(p), theirs.get(p)) for p in keys
               if mine.get(p) != theirs.get(p)]
        out.append("%s %r" % (side, bad[:3]))
    return ", ".join(out)


def depth_streams(st):
    return [s for s in st["subscribed"] if "@depth" in s]


async def market(h, up, rnd):
    dcs = []
    for i, (path, subs) in enumerate(CLIENTS[up]):
        dcs.append(await open_client(h, up, path, subs, i))
    # every book synced before the faults
    end = time.monotonic() + 30
    want = [len(path.split("streams=")[1].split("/")) if "streams=" in path
            else len(subs) or 1 for path, subs in CLIENTS[up]]
    while not all(b.synced and b.applied >= 3 for d in dcs
                  for b in d.books.values()) or [len(d.books)
                                                 for d in dcs] != want:
        check(time.monotonic() < end, "%s: books not synced: %r" % (
            up, [(d.name, {k: b.applied for k, b in d.books.items()})
                 for d in dcs]))
        await asyncio.sleep(0.2)
    check(not any(d.errors for d in dcs), "%s before the faults: %r"
          % (up, [e for d in dcs for e in d.errors][:5]))

    async def after(i, fault):
        if i + 1 in (10, 20, 30):
            dcs.append(await open_client(h, up, "/ws/%d" % (20 + i),
                                         ["btcusdt@depth@100ms",
                                          "ethusdt@depth@100ms"], len(dcs)))
        errs = [e for d in dcs for e in d.errors]
        check(not errs, "%s: after fault %d (%s): %s" % (up, i + 1, fault,
                                                          errs[:5]))

    plan = gh.fault_plan(rnd)
    t0 = time.monotonic()
    # 0.5-1.5 s between faults: about 25 resyncs of 3 books a market in
    # 1.5 minutes, well within Binance's REST weight (spot 50 a snapshot
    # of limit 1000, 6000 a minute; USDⓈ-M 20, 2400)
    took = await gh.bn_faults(h, up, plan, depth_streams, rnd,
                              pause=(0.5, 1.5), after=after)
    print("%s: %d faults in %.0fs; restore seconds %s" % (
        up, len(plan), time.monotonic() - t0,
        {k: "median %.2f max %.2f" % (sorted(v)[len(v) // 2], max(v))
         for k, v in took.items()}))
    return dcs


async def settle(h, up, dcs):
    """bnsim's market stops; every book must equal its REST depth."""
    sim = h.bn[up]["sim"]
    check(sim.control("rate 0")["ok"], "rate 0")
    # the gateway's own snapshots may wait for its REST weight budget
    # (rest_weight): every book repaired and nothing waiting first
    end = time.monotonic() + 90
    while True:
        u = [x for x in h.status()["upstreams"] if x["name"] == up][0]
        if u["streams_repairing"] == 0 and u["rest_gets_waiting"] == 0:
            break
        check(time.monotonic() < end, "%s: still repairing after 90 s: %d "
              "streams, %d GETs waiting" % (up, u["streams_repairing"],
                                           u["rest_gets_waiting"]))
        await asyncio.sleep(0.5)
    await asyncio.sleep(3)      # the 1000 ms streams push their last change
    for d in dcs:
        await d.finish()
        check(not d.bn.closed.done(), "%s closed: %r"
              % (d.name, d.bn.closed.result() if d.bn.closed.done()
                 else None))
        d.bn.no_reply(d.name)
    errs = [e for d in dcs for e in d.errors]
    check(not errs, "%s: %d errors: %s" % (up, len(errs), errs[:5]))
    path = depth_path(h.bn[up]["market"])
    truth = {}
    for d in dcs:
        for key, b in d.books.items():
            check(b.synced and b.applied > 0, "%s %s: never synced"
                  % (d.name, key))
            sym = key.split("@")[0].upper()
            if sym not in truth:
                truth[sym] = sim.oracle_json(path, symbol=sym, limit=LIMIT)
            t = truth[sym]
            check(b.same_as(t), "%s %s: book id %d (%d bids, %d asks) is "
                  "not bnsim's depth id %d (%d bids, %d asks); levels "
                  "differing (price: client, bnsim): %s" % (
                      d.name, key, b.id, len(b.bids), len(b.asks),
                      t["lastUpdateId"], len(t["bids"]), len(t["asks"]),
                      differ(b, t)))
    # the gateway's REST depth: bnsim's, and from its book
    r0 = sim.stats()["rest_requests"]
    port = h.bn[up]["http_port"]
    for sym, t in sorted(truth.items()):
        g = http_json(port, path, symbol=sym, limit=LIMIT)
        check(g["lastUpdateId"] == t["lastUpdateId"]
              and g["bids"] == t["bids"] and g["asks"] == t["asks"],
              "%s: the gateway's %s depth (id %d) is not bnsim's (id %d)"
              % (up, sym, g["lastUpdateId"], t["lastUpdateId"]))
    for _ in range(5):
        http_json(port, path, symbol="BTCUSDT", limit=LIMIT)
    r1 = sim.stats()["rest_requests"]
    check(r1 - r0 < 5 + len(truth), "%s: %d depth requests to the gateway "
          "cost bnsim %d REST requests: not answered from the book"
          % (up, 5 + len(truth), r1 - r0))
    st = sim.stats()
    check(st["closes_1008"] == 0, "%s: bnsim 1008 closes %d"
          % (up, st["closes_1008"]))
    print("%s: %d clients, %d books, %d events applied, %d snapshots from "
          "the gateway; bnsim: %d connections, %d REST requests, weight %d, "
          "%d gapped" % (up, len(dcs), sum(len(d.books) for d in dcs),
                         sum(b.applied for d in dcs
                             for b in d.books.values()),
                         sum(d.snapshots for d in dcs),
                         st["connections_total"], st["rest_requests"],
                         st["rest_weight_total"], st["gapped"]))
    for d in dcs:
        check(sum(b.applied for b in d.books.values()) >= 20,
              "%s: only %r events applied" % (d.name, {
                  k: b.applied for k, b in d.books.items()}))
        await d.bn.close()


async def body(h, sims):
    gh.start_binance(h, [
        # 38 faults in about 50 s, each a resync of 4 books, is far more
        # than the default rest_weight (2400 and 960 a minute) lets the
        # gateway repair at once (it would, a minute later): this test
        # gives it most of bnsim's allowance (6000 and 2400)
        {"name": "spot", "sim": sims["spot"], "market": "spot",
         "extra": "    rest_weight 4500;\n"},
        {"name": "usdm", "sim": sims["usdm"], "market": "usdm",
         "extra": "    rest_weight 1800;\n"}])
    rnd = random.Random(int(os.environ.get("XG_TEST_SEED", "13")))
    spot, usdm = await asyncio.gather(market(h, "spot", rnd),
                                      market(h, "usdm", rnd))
    await asyncio.gather(settle(h, "spot", spot), settle(h, "usdm", usdm))


gh.run_binance("test_binance_book",
               {"spot": ["--market", "spot"] + SIM,
                "usdm": ["--market", "usdm"] + SIM}, body, timeout=300)
