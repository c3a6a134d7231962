#!/usr/bin/python3
"""Binance venue: at most 300 connection attempts per 5 minutes.

bnsim refuses every upgrade (HTTP 503; its own 300-per-5-minutes check
off) and exgate's spot upstream reconnects every 50 ms (the harness's
`reconnect fixed { delay 50ms; }`): without a budget it would go on at 20
attempts a second. Checked: bnsim sees 300 attempts, then none for 3 s
more; exgate's /status counts the held attempt (connect_budget_waits) and
logs the budget; exgate stays up and exits cleanly.
"""

import asyncio
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import gateway_harness as gh  # noqa: E402
from gateway_harness import check  # noqa: E402


async def body(h, sims):
    sim = sims["spot"]
    check(sim.control("refuse on 503")["ok"], "refuse on")
    gh.start_binance(h, [{"name": "spot", "sim": sim, "market": "spot"}])
    # start_binance's reconnect is fixed 50ms: 300 attempts in 15 s
    end = time.monotonic() + 40
    while sim.stats()["connections_total"] < 300:
        check(time.monotonic() < end, "only %d attempts in 40 s"
              % sim.stats()["connections_total"])
        await asyncio.sleep(0.2)
    await asyncio.sleep(0.5)
    n0 = sim.stats()["connections_total"]
    await asyncio.sleep(3.0)
    n1 = sim.stats()["connections_total"]
    u = h.up("spot")
    check(n0 <= 300 and n1 == n0, "attempts went on past the budget: %d "
          "then %d" % (n0, n1))
    check(u["connect_budget_waits"] >= 1, "no budget wait in /status: %r"
          % u["connect_budget_waits"])
    check("connection budget is spent" in h.log(), "no log line")
    print("%d attempts, then none for 3 s; %d held" % (n1,
                                                       u["connect_budget_waits"]))


gh.run_binance("test_binance_conn_budget",
               {"spot": ["--market", "spot", "--rate", "5",
                         "--max-conn-attempts", "0"]}, body, timeout=60)
