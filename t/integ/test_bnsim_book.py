"""bnsim: a strict book client per market (spot: U == previous u + 1;
USDⓈ-M: pu == previous u) takes REST depth, then applies the stream by
Binance's documented sync rules on several clients at once (combined,
raw and SUBSCRIBE'd, two symbols, two depth speeds; USDⓈ-M ids jump
between events unless --contiguous-ids, as Binance's do); `gap STREAM` breaks
exactly the chains of that stream, once, and a resync from REST depth
recovers them; after `rate 0` every book equals REST depth, id and
levels.
"""
import asyncio
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bnsim_util import Bn, Bnsim, Book, Fail, check, main, run  # noqa: E402


class Keeper:
    """One client's books, one per symbol it subscribed a depth stream of."""

    def __init__(self, sim, market, c, name):
        self.sim, self.market, self.c, self.name = sim, market, c, name
        self.books = {}          # symbol -> Book or list (buffering)
        self.breaks = 0
        self.jumps = 0           # usdm events with U > pu + 1
        self.resyncs = 0
        self.stop = False

    def snapshot(self, sym):
        if self.market == "spot":
            return self.sim.json("/api/v3/depth", symbol=sym, limit=5000)
        return self.sim.json("/fapi/v1/depth", symbol=sym, limit=1000)

    def on_event(self, d):
        check(d.get("e") == "depthUpdate", "%s: not a depth event %r"
              % (self.name, d))
        if self.market == "usdm":
            check("pu" in d and "T" in d, "usdm depth without pu/T %r" % d)
        else:
            check("pu" not in d, "spot depth with pu %r" % d)
        check(d["U"] <= d["u"], "U > u in %r" % d)
        if self.market == "usdm" and d["U"] > d["pu"] + 1:
            self.jumps += 1
        sym = d["s"]
        b = self.books.get(sym)
        if b is None:
            # buffer the first event, then take the snapshot (E3 steps 2-5)
            snap = self.snapshot(sym)
            if snap["lastUpdateId"] < d["U"]:
                snap = self.snapshot(sym)
            b = self.books[sym] = Book(self.market, snap)
        try:
            b.apply(d)
        except Fail:
            self.breaks += 1
            self.resyncs += 1
            self.books[sym] = Book(self.market, self.snapshot(sym))

    async def run(self):
        while True:
            try:
                _, d, _ = await asyncio.wait_for(self.c.events.get(), 0.2)
            except asyncio.TimeoutError:
                if self.stop:
                    return
                continue
            self.on_event(d)


async def scenario(sim, market, extra):
    pre = "" if market == "spot" else "/public"
    a = await Bn.open(sim.url(pre + "/stream?streams=btcusdt@depth@100ms"))
    b = await Bn.open(sim.url(pre + "/ws/btcusdt@depth"))
    c = await Bn.open(sim.url(pre + "/ws"))
    r = await c.call("SUBSCRIBE", ["ethusdt@depth@100ms",
                                   "btcusdt@depth@100ms"])
    check(r == {"result": None, "id": r["id"]}, "subscribe %r" % r)
    ks = [Keeper(sim, market, a, "combined"), Keeper(sim, market, b, "raw"),
          Keeper(sim, market, c, "subscribed")]
    tasks = [asyncio.ensure_future(k.run()) for k in ks]
    await asyncio.sleep(2.5)
    check(all(k.breaks == 0 for k in ks), "breaks without a gap: %r"
          % [k.breaks for k in ks])
    before = {k.name: sum(x.applied for x in k.books.values()) for k in ks}
    check(before["combined"] >= 5 and before["subscribed"] >= 5
          and before["raw"] >= 1, "too few events %r" % before)

    r = sim.control("gap btcusdt@depth@100ms")
    check(r["ok"], "gap %r" % r)
    await asyncio.sleep(2.5)
    check(ks[0].breaks == 1 and ks[2].breaks == 1 and ks[1].breaks == 0,
          "gap on btcusdt@depth@100ms: breaks %r"
          % [(k.name, k.breaks) for k in ks])
    check(sim.stats()["gapped"] == 1, "gapped count")

    # still market: everything published, books compared with REST depth
    check(sim.control("rate 0")["ok"], "rate 0")
    await asyncio.sleep(1.5)
    for k in ks:
        k.stop = True
    await asyncio.gather(*tasks)
    for k in ks:
        for sym, book in k.books.items():
            check(isinstance(book, Book) and book.synced,
                  "%s %s never synced" % (k.name, sym))
            snap = k.snapshot(sym)
            check(book.same_as(snap), "%s %s: book (id %d, %d/%d levels) "
                  "differs from REST depth (id %d)" % (
                      k.name, sym, book.id, len(book.bids), len(book.asks),
                      snap["lastUpdateId"]))
    jumps = sum(k.jumps for k in ks)
    if market == "usdm" and "--contiguous-ids" not in extra:
        check(jumps > 0, "usdm update ids never jumped")
    else:
        check(jumps == 0, "%d usdm id jumps with --contiguous-ids" % jumps)
    n = sum(x.applied for k in ks for x in k.books.values())
    for x in (a, b, c):
        await x.close()
    return n


def test():
    total = {}
    for market, extra in (("spot", ()), ("usdm", ()),
                          ("spot", ("--no-aggregate",)),
                          ("usdm", ("--no-aggregate", "--contiguous-ids"))):
        with Bnsim("--market", market, "--rate", "100", "--symbols", "3",
                   *extra) as sim:
            total[market + "".join(extra)] = run(scenario(sim, market,
                                                          extra))
    print("events applied: %r" % total)


if __name__ == "__main__":
    main(test)
