"""bnsim: trade ids per market. `@trade` ids t are consecutive, `@aggTrade`
ids a are consecutive with f == previous l + 1; REST historicalTrades and
aggTrades with fromId (inclusive) return the very trades the streams
carried; `gap` skips one event on a stream and the REST backfill fills
exactly that hole; trades (recent) ends at the newest id.
"""
import asyncio
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bnsim_util import Bn, Bnsim, check, main, run  # noqa: E402


async def collect(c, seconds):
    out = []
    end = asyncio.get_running_loop().time() + seconds
    while True:
        left = end - asyncio.get_running_loop().time()
        if left <= 0:
            return out
        try:
            _, d, _ = await asyncio.wait_for(c.events.get(), left)
        except asyncio.TimeoutError:
            return out
        out.append(d)


async def scenario(sim, market):
    spot = market == "spot"
    pre = "/api/v3" if spot else "/fapi/v1"
    tc = await Bn.open(sim.url(("" if spot else "/public")
                               + "/ws/btcusdt@trade"))
    ac = await Bn.open(sim.url(("" if spot else "/market")
                               + "/stream?streams=btcusdt@aggTrade"))
    trades = await collect(tc, 2.0)
    aggs = await collect(ac, 0.1)
    check(len(trades) >= 20 and len(aggs) >= 10, "too few trades %d aggs %d"
          % (len(trades), len(aggs)))
    for d in trades:
        check(d["e"] == "trade" and d["s"] == "BTCUSDT", "trade %r" % d)
        check(("M" in d) == spot and ("X" in d) == (not spot),
              "trade fields for %s: %r" % (market, d))
    ids = [d["t"] for d in trades]
    check(ids == list(range(ids[0], ids[0] + len(ids))),
          "trade ids not consecutive: %r" % ids[:50])
    a = [d["a"] for d in aggs]
    check(a == list(range(a[0], a[0] + len(a))), "agg ids %r" % a[:50])
    for prev, d in zip(aggs, aggs[1:]):
        check(d["f"] == prev["l"] + 1 and d["l"] >= d["f"],
              "agg f/l: %r after %r" % (d, prev))

    # REST backfill returns what the streams carried
    rows = sim.json(pre + "/historicalTrades", symbol="BTCUSDT",
                    fromId=ids[0], limit=len(ids))
    check([r["id"] for r in rows] == ids, "historicalTrades ids")
    for r, d in zip(rows, trades):
        check((r["price"], r["qty"], r["time"], r["isBuyerMaker"])
              == (d["p"], d["q"], d["T"], d["m"]), "row %r vs %r" % (r, d))
    rows = sim.json(pre + "/aggTrades", symbol="BTCUSDT", fromId=a[0],
                    limit=len(a))
    check([(r["a"], r["p"], r["q"], r["f"], r["l"], r["T"], r["m"])
           for r in rows] == [(d["a"], d["p"], d["q"], d["f"], d["l"], d["T"],
                               d["m"]) for d in aggs], "aggTrades rows")
    recent = sim.json(pre + "/trades", symbol="BTCUSDT", limit=3)
    check(len(recent) == 3 and recent[2]["id"] == recent[0]["id"] + 2
          and recent[2]["id"] >= ids[-1], "recent trades %r" % recent)

    # gap: one trade event is not sent; historicalTrades fills the hole
    last = [d["t"] for _, d, _ in tc.drain()] or [ids[-1]]
    check(sim.control("gap btcusdt@trade")["ok"], "gap")
    more = await collect(tc, 1.5)
    ids2 = last[-1:] + [d["t"] for d in more]
    holes = [(x, y) for x, y in zip(ids2, ids2[1:]) if y != x + 1]
    check(len(holes) == 1 and holes[0][1] == holes[0][0] + 2,
          "gap: holes %r in %r" % (holes, ids2[:40]))
    rows = sim.json(pre + "/historicalTrades", symbol="BTCUSDT",
                    fromId=holes[0][0] + 1, limit=1)
    check([r["id"] for r in rows] == [holes[0][0] + 1], "backfill %r" % rows)
    await tc.close()
    await ac.close()
    return len(ids) + len(ids2)


def test():
    for market in ("spot", "usdm"):
        with Bnsim("--market", market, "--rate", "100", "--symbols",
                   "2") as sim:
            n = run(scenario(sim, market))
            print("%s: %d trades checked" % (market, n))


if __name__ == "__main__":
    main(test)
