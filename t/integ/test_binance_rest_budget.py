#!/usr/bin/python3
"""Binance venue: the trackers' REST GETs keep within `rest_weight`.

exgate with a spot upstream on bnsim and `rest_weight 100;` (a spot
snapshot of 1000 levels weighs 50). Three depth streams of three symbols
are held: their first snapshots take 150 weight, so the third waits. Two
bnsim drops then ask three more each. Checked for 8 s: the weight the
gateway says it spent in the last minute never passes 100, bnsim's own
count of the weight used in its window never passes 100 either (nobody
else asks it anything), some GETs waited (rest_gets_delayed), and the
waiting ones are still there, in order, not dropped (rest_gets_waiting).
A client's depth stream meanwhile keeps flowing: what waits is the
gateway's resync, not the data.
"""

import asyncio
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import gateway_harness as gh  # noqa: E402
from gateway_harness import check  # noqa: E402
from bnsim_util import Bn  # noqa: E402


async def body(h, sims):
    sim = sims["spot"]
    gh.start_binance(h, [{"name": "spot", "sim": sim, "market": "spot",
                          "extra": "    rest_weight 100;\n"}])
    c = await Bn.open(gh.bn_url(
        h, "spot", "/stream?streams=btcusdt@depth@100ms/ethusdt@depth@100ms"
        "/bnbusdt@depth@100ms"))
    await asyncio.sleep(1.0)
    for _ in range(2):
        check(sim.control("drop")["ok"], "drop")
        await asyncio.sleep(1.0)
    seen_spent, seen_sim, delayed, waiting = 0, 0, 0, 0
    end = time.monotonic() + 8
    while time.monotonic() < end:
        u = h.up("spot")
        seen_spent = max(seen_spent, u["rest_weight_spent"])
        delayed = u["rest_gets_delayed"]
        waiting = max(waiting, u["rest_gets_waiting"])
        seen_sim = max(seen_sim, sim.stats()["rest_weight_used"])
        check(u["rest_weight_spent"] <= 100, "the gateway spent %d weight "
              "in a minute, over rest_weight 100" % u["rest_weight_spent"])
        await asyncio.sleep(0.25)
    check(seen_sim <= 100, "bnsim saw %d weight in its window" % seen_sim)
    check(seen_spent >= 50, "no snapshot was taken at all (spent %d)"
          % seen_spent)
    check(delayed >= 1 and waiting >= 1, "nothing waited for the budget: "
          "delayed %d, waiting %d" % (delayed, waiting))
    n0 = c.events.qsize()
    await asyncio.sleep(1.0)
    check(c.events.qsize() > n0 or h.up("spot")["streams_repairing"] > 0,
          "the depth streams stopped without a repair under way")
    check(not c.closed.done(), "the client was closed: %r"
          % (c.closed.result() if c.closed.done() else None))
    await c.close()
    print("rest_weight 100: spent at most %d (bnsim %d), %d GETs delayed, "
          "%d waiting at most" % (seen_spent, seen_sim, delayed, waiting))


gh.run_binance("test_binance_rest_budget",
               {"spot": ["--market", "spot", "--rate", "20", "--symbols",
                         "3"]}, body, timeout=60)
