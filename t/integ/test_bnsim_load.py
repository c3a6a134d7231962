"""bnsim under a restore load: 2,000 spot streams (100 symbols x 20 kinds)
subscribed on two connections in batches paced under 5 messages a second
at --rate 50, and 300 USDⓈ-M streams on two connections (200 cap) paced
under 10: every stream delivers data within seconds, stats show the
highest per-connection message rate within the limit, no 1008 close,
and the streams per connection; prints the delivered message rate.
"""
import asyncio
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bnsim_util import Bn, Bnsim, check, main, run  # noqa: E402

SPOT_KINDS = ["depth", "depth@100ms", "depth@1000ms", "trade", "aggTrade",
              "bookTicker", "ticker", "miniTicker"] + [
    "kline_" + i for i in ("1m", "3m", "5m", "15m", "30m", "1h", "2h", "4h",
                           "6h", "8h", "12h", "1d")]
NAMES = ["btcusdt", "ethusdt", "bnbusdt", "solusdt", "xrpusdt", "dogeusdt",
         "adausdt", "ltcusdt"]


def symbols(n):
    return NAMES[:n] + ["s%04dusdt" % i for i in range(len(NAMES) + 1,
                                                        n + 1)]


async def restore(sim, path, streams, batch, gap):
    c = await Bn.open(sim.url(path))
    for i in range(0, len(streams), batch):
        r = await c.call("SUBSCRIBE", streams[i:i + batch], id=i)
        check(r["result"] is None, "subscribe %r" % r)
        await asyncio.sleep(gap)
    return c


async def scenario(sim, market, streams, per_conn, batch, gap):
    pre = "" if market == "spot" else "/public"
    t0 = time.monotonic()
    d0 = sim.stats()["delivered"]
    conns = await asyncio.gather(*[
        restore(sim, pre + "/stream", streams[i:i + per_conn], batch, gap)
        for i in range(0, len(streams), per_conn)])
    seen = set()
    end = time.monotonic() + 8
    while seen != set(streams) and time.monotonic() < end:
        await asyncio.sleep(0.2)
        for c in conns:
            seen.update(s for s, _, _ in c.drain())
    missing = set(streams) - seen
    check(not missing, "%d streams without data, e.g. %r"
          % (len(missing), sorted(missing)[:5]))
    el = time.monotonic() - t0
    st = sim.stats()
    check(st["closes_1008"] == 0 and st["msg_rate_max"] <= st["msg_limit"],
          "pacing %r" % {k: st[k] for k in ("closes_1008", "msg_rate_max")})
    check(st["streams_max"] == per_conn and len(st["conns"]) == len(conns),
          "streams per connection %r" % st["conns"])
    print("%s: %d streams on %d connections, all delivering after %.1fs; "
          "%.0f messages/s delivered; msg_rate_max %d"
          % (market, len(streams), len(conns), el,
             (st["delivered"] - d0) / el, st["msg_rate_max"]))
    for c in conns:
        await c.close()


def test():
    with Bnsim("--market", "spot", "--rate", "50", "--symbols",
               "100") as sim:
        streams = [s + "@" + k for s in symbols(100) for k in SPOT_KINDS]
        run(scenario(sim, "spot", streams, 1000, 250, 0.25))
    with Bnsim("--market", "usdm", "--rate", "50", "--symbols", "100") as sim:
        streams = [s + "@" + k for s in symbols(100)
                   for k in ("depth@100ms", "bookTicker", "trade")]
        run(scenario(sim, "usdm", streams, 200, 50, 0.12))


if __name__ == "__main__":
    main(test)
