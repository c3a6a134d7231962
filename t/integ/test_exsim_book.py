"""exsim: book chain continuity over 10 000 changes (exchange-protocols.md
A4.4): a raw and an aggregated (100ms) subscriber apply snapshot + changes,
every prev_change_id equals the previous change_id, and both end equal to
public/get_order_book. Then `gap` skips one change on one channel only;
trades keep a gapless trade_seq.
"""
import asyncio
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from exsim_util import DeltaBook, Exsim, Rpc, check, main, run  # noqa: E402

CREDS = {"grant_type": "client_credentials", "client_id": "exsim",
         "client_secret": "exsim-secret"}
RAW, AGG = "book.BTC-PERPETUAL.raw", "book.BTC-PERPETUAL.100ms"
CHANGES = 10000


class Book(DeltaBook):
    def __init__(self, name):
        DeltaBook.__init__(self, name)
        self.change_id = None
        self.messages = 0

    def apply(self, d):
        if d["type"] == "snapshot":
            check(self.change_id is None, "%s: second snapshot" % self.name)
            check("prev_change_id" not in d, "snapshot with prev_change_id")
        else:
            check(d["prev_change_id"] == self.change_id,
                  "%s: chain broken at %r: prev_change_id %r"
                  % (self.name, self.change_id, d["prev_change_id"]))
            check(d["change_id"] > d["prev_change_id"], "change_id order")
        self.change_id = d["change_id"]
        self.messages += 1
        self.apply_levels(d)


async def drain(c, books, until_change_id, timeout=40):
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while any(b.change_id != until_change_id for b in books.values()):
        check(loop.time() < end, "books stuck at %r, want %r" % (
            {k: b.change_id for k, b in books.items()}, until_change_id))
        n = await c.note(timeout=max(0.1, end - loop.time()))
        ch = n["params"]["channel"]
        if ch in books:
            books[ch].apply(n["params"]["data"])


def test():
    with Exsim("--rate", "0", "--seed", "3", "--instruments",
               "BTC-PERPETUAL,ETH-PERPETUAL") as sim:
        async def go():
            c = await Rpc.open(sim.url())
            await c.result("public/auth", CREDS)
            got = await c.result("public/subscribe",
                                 {"channels": [RAW, AGG,
                                               "trades.BTC-PERPETUAL.raw"]})
            check(len(got) == 3, "subscribe %r" % got)
            books = {RAW: Book(RAW), AGG: Book(AGG)}
            # the snapshots
            for _ in range(2):
                n = await c.note(timeout=5)
                books[n["params"]["channel"]].apply(n["params"]["data"])
            start = books[RAW].change_id
            check(books[AGG].change_id == start, "snapshots differ")

            r = sim.control("burst %d" % CHANGES, timeout=40)
            check(r.get("ok") and r.get("updates") == CHANGES, "burst %r" % r)
            ob = await c.result("public/get_order_book",
                                {"instrument_name": "BTC-PERPETUAL",
                                 "depth": 10000})
            check(ob["change_id"] >= start + CHANGES, "change_id moved %r"
                  % (ob["change_id"] - start))
            trades = []
            orig = c.note

            async def note(channel=None, timeout=5, method="subscription"):
                n = await orig(channel, timeout, method)
                if n["params"]["channel"] == "trades.BTC-PERPETUAL.raw":
                    trades.extend(n["params"]["data"])
                return n
            c.note = note
            await drain(c, books, ob["change_id"])
            check(books[RAW].messages >= CHANGES + 1,
                  "raw messages %d" % books[RAW].messages)
            check(books[AGG].messages < books[RAW].messages / 10,
                  "100ms aggregated %d" % books[AGG].messages)
            for name, b in books.items():
                bids, asks = b.pairs()
                check(bids == ob["bids"] and asks == ob["asks"],
                      "%s differs from get_order_book" % name)
            seqs = [t["trade_seq"] for t in trades]
            check(len(seqs) > 1000 and seqs == list(range(seqs[0],
                                                          seqs[0] + len(seqs))),
                  "trade_seq not gapless (%d trades)" % len(seqs))

            # gap on the raw channel only: one change_id never arrives
            check(sim.control("gap %s" % RAW)["ok"], "gap")
            r = sim.control("gap book.BTC-PERPETUAL.agg2")
            check(not r["ok"], "gap on an unsubscribed channel %r" % r)
            r = sim.control("gap ticker.BTC-PERPETUAL.raw")
            check(not r["ok"], "gap on a non-book channel %r" % r)
            sim.control("burst 5")
            raw_msgs = []
            while len(raw_msgs) < 4:
                n = await c.note(RAW, timeout=5)
                raw_msgs.append(n["params"]["data"])
            check(raw_msgs[0]["prev_change_id"] == books[RAW].change_id + 1,
                  "gap not seen: %r after %r" % (raw_msgs[0],
                                                 books[RAW].change_id))
            for a, b in zip(raw_msgs, raw_msgs[1:]):
                check(b["prev_change_id"] == a["change_id"], "after gap")
            await c.close()

        run(go(), timeout=55)

    # the same seed gives the same market, another seed another one
    books = []
    for seed in ("5", "5", "6"):
        with Exsim("--rate", "0", "--seed", seed) as sim:
            sim.control("burst 300")

            async def book():
                c = await Rpc.open(sim.url())
                ob = await c.result("public/get_order_book",
                                    {"instrument_name": "ETH-PERPETUAL",
                                     "depth": 50})
                lt = await c.result("public/get_last_trades_by_instrument",
                                    {"instrument_name": "ETH-PERPETUAL",
                                     "count": 20})
                await c.close()
                return (ob["bids"], ob["asks"], ob["change_id"],
                        [(t["trade_seq"], t["price"], t["amount"])
                         for t in lt["trades"]])
            books.append(run(book()))
    check(books[0] == books[1], "same seed, different market")
    check(books[0] != books[2], "different seeds, same market")


main(test)
