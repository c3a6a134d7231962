"""bnsim: USDⓈ-M routes (exchange-protocols B2, E1.1). On /public depth,
bookTicker and trade have data; on /market aggTrade, markPrice, kline,
ticker and miniTicker; a stream on the wrong route is acked and listed
but gets no data; unrouted /ws and /stream act as /public; /private and
unknown paths get 404; --no-routes serves every stream everywhere. Spot
has no routes (/public/ws is 404) and serves every kind on /ws.
"""
import asyncio
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bnsim_util import Bn, Bnsim, check, main, run  # noqa: E402

import websockets  # noqa: E402

PUBLIC = {"btcusdt@depth@100ms", "btcusdt@bookTicker", "btcusdt@trade",
          "btcusdt@depth5@100ms", "!bookTicker"}
MARKET = {"btcusdt@aggTrade", "btcusdt@markPrice@1s", "btcusdt@kline_1m",
          "btcusdt@ticker", "btcusdt@miniTicker", "!miniTicker@arr",
          "!markPrice@arr@1s"}
SPOT = {"btcusdt@depth@100ms", "btcusdt@bookTicker", "btcusdt@trade",
        "btcusdt@aggTrade", "btcusdt@kline_1m", "btcusdt@ticker",
        "btcusdt@miniTicker", "btcusdt@depth10", "btcusdt@depth5@100ms",
        "!miniTicker@arr", "!ticker@arr"}


async def served(sim, path, streams):
    """Which of STREAMS send data within 2.5 s on a /stream-type PATH."""
    c = await Bn.open(sim.url(path))
    r = await c.call("SUBSCRIBE", sorted(streams))
    check(r["result"] is None, "%s: subscribe %r" % (path, r))
    await asyncio.sleep(2.5)
    got = {s for s, _, _ in c.drain()}
    await asyncio.sleep(0.2)
    r = await c.call("LIST_SUBSCRIPTIONS")
    check(sorted(r["result"]) == sorted(streams), "%s: list %r" % (path, r))
    await c.close()
    return got


async def refused(sim, path, status=404):
    try:
        c = await Bn.open(sim.url(path))
        await c.close()
        check(False, "%s upgraded" % path)
    except websockets.InvalidStatusCode as e:
        check(e.status_code == status, "%s: %d" % (path, e.status_code))


async def usdm(sim):
    both = PUBLIC | MARKET
    res = await asyncio.gather(served(sim, "/public/stream", both),
                               served(sim, "/market/stream", both),
                               served(sim, "/stream", both))
    check(res[0] == PUBLIC, "/public served %r" % sorted(res[0]))
    check(res[1] == MARKET, "/market served %r" % sorted(res[1]))
    check(res[2] == PUBLIC, "unrouted served %r" % sorted(res[2]))
    # raw framing on /market: only market kinds arrive
    c = await Bn.open(sim.url("/market/ws/btcusdt@aggTrade"))
    s, d = await c.data()
    check(s is None and d["e"] == "aggTrade", "market raw %r" % d)
    await c.close()
    c = await Bn.open(sim.url("/market/ws/btcusdt@depth@100ms"))
    await asyncio.sleep(1.0)
    check(not c.drain(), "depth on /market sent data")
    await c.close()
    for p in ("/private/ws", "/public", "/fapi/ws", "/ws/a/b", "/wss"):
        await refused(sim, p, 400 if p == "/ws/a/b" else 404)


async def lenient(sim):
    res = await served(sim, "/market/stream", PUBLIC | MARKET)
    check(res == PUBLIC | MARKET, "--no-routes served %r" % sorted(res))


async def spot(sim):
    res = await served(sim, "/stream", SPOT)
    check(res == SPOT, "spot served %r" % sorted(res))
    # shapes of partial depth and an all-market array
    c = await Bn.open(sim.url("/stream?streams=btcusdt@depth5@100ms/"
                              "!miniTicker@arr"))
    _, d = await c.data("btcusdt@depth5@100ms")
    check(set(d) == {"lastUpdateId", "bids", "asks"} and len(d["bids"]) == 5
          and len(d["asks"]) == 5, "partial depth %r" % d)
    _, d = await c.data("!miniTicker@arr")
    check(isinstance(d, list) and len(d) == 8
          and d[0]["e"] == "24hrMiniTicker", "arr %r" % d[:1])
    await c.close()
    await refused(sim, "/public/ws")
    await refused(sim, "/market/stream")


def test():
    with Bnsim("--market", "usdm", "--rate", "50") as sim:
        run(usdm(sim))
    with Bnsim("--market", "usdm", "--rate", "50", "--no-routes") as sim:
        run(lenient(sim))
    with Bnsim("--market", "spot", "--rate", "50") as sim:
        run(spot(sim))


if __name__ == "__main__":
    main(test)
