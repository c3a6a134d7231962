#!/usr/bin/python3
"""Binance venue (issue 13): client_max_channels bounds the upstream
connections a client's request makes, not only the streams it holds.

exgate with one spot upstream (max_streams_per_connection 2) and
client_max_channels 3. A client SUBSCRIBEs 40 distinct streams in one
request: it is acked {"result":null,"id":1}, LIST_SUBSCRIPTIONS shows the
3 it may hold, and the gateway holds 2 connections (3 streams, 2 a
connection), not one for every 2 names of the request (20). A second
request of 40 new names from the same client (at its bound) opens no
connection either; bnsim sees 2 connections with 3 streams in all.
"""

import asyncio
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import gateway_harness as gh  # noqa: E402
from gateway_harness import check  # noqa: E402
from bnsim_util import Bn  # noqa: E402

SIM = ["--market", "spot", "--rate", "5", "--symbols", "4"]


def names(prefix, n):
    return ["%s%d@trade" % (prefix, i) for i in range(n)]


async def body(h, sims):
    sim = sims["spot"]
    gh.start_binance(h, [{"name": "spot", "sim": sim, "market": "spot",
                          "extra": "    max_streams_per_connection 2;\n"}],
                     main_extra="client_auth off;\nclient_max_channels 3;\n")
    c = await Bn.open(gh.bn_url(h, "spot", "/ws"))
    for rid, prefix in ((1, "a"), (2, "b")):
        await c.send('{"method":"SUBSCRIBE","params":[%s],"id":%d}'
                     % (",".join('"%s"' % n for n in names(prefix, 40)),
                        rid))
        msg, raw = await c.reply(10)
        check(raw == '{"result":null,"id":%d}' % rid,
              "SUBSCRIBE of 40 streams answered %r" % raw)
        await c.send('{"method":"LIST_SUBSCRIPTIONS","id":9}')
        msg, raw = await c.reply(10)
        check(len(msg["result"]) == 3,
              "the client holds %r, expected 3 streams" % msg["result"])
        shards = h.up("spot")["shards"]
        check(len(shards) == 2, "%d upstream connections for a client "
              "bound to 3 streams (2 a connection), expected 2"
              % len(shards))
    st = await sim.wait_stats(lambda s: s["streams_open"] == 3,
                              "3 streams open at bnsim", 10)
    check(len(st["conns"]) == 2, "bnsim holds %d connections, expected 2"
          % len(st["conns"]))
    print("40 + 40 names asked, 3 held: %d connections" % len(shards))
    await c.close()


gh.run_binance("test_binance_max_channels", {"spot": SIM}, body,
               timeout=60)
