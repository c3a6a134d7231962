"""exsim: subscribe / unsubscribe / unsubscribe_all (exchange-protocols.md
A4): invalid channels left out of the result, raw without auth (13778, or
left out with --raw-unauth-omit), private channels need auth, the
notification shapes of each channel, reject-channel, and `subscribed`
in stats counting connections per channel.
"""
import asyncio
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from exsim_util import Exsim, Rpc, check, main, run  # noqa: E402

CREDS = {"grant_type": "client_credentials", "client_id": "exsim",
         "client_secret": "exsim-secret"}
PUBLIC = ["book.BTC-PERPETUAL.100ms", "book.ETH-PERPETUAL.none.10.100ms",
          "book.BTC-PERPETUAL.5.1.agg2", "ticker.BTC-PERPETUAL.100ms",
          "trades.BTC-PERPETUAL.100ms", "trades.future.BTC.100ms",
          "deribit_price_index.btc_usd", "platform_state"]
INVALID = ["book.NOPE-PERPETUAL.100ms", "book.BTC-PERPETUAL.1s",
           "book.BTC-PERPETUAL.none.7.100ms", "book.BTC-PERPETUAL.none.10.raw",
           "ticker.btc-perpetual.100ms", "nonsense", "", "book..100ms",
           "deribit_price_index.xyz_usd", "bench.0", "trades.BTC-PERPETUAL"]
PRIVATE = ["user.orders.BTC-PERPETUAL.raw", "user.trades.future.BTC.100ms",
           "user.portfolio.BTC", "user.changes.BTC-PERPETUAL.100ms"]


def code(r):
    return r.get("error", {}).get("code")


def test():
    with Exsim("--rate", "100") as sim:
        async def go():
            a = await Rpc.open(sim.url())
            got = await a.result("public/subscribe",
                                 {"channels": PUBLIC + INVALID + PRIVATE})
            check(got == PUBLIC, "public/subscribe result %r" % got)
            r = await a.call("public/subscribe",
                             {"channels": ["book.BTC-PERPETUAL.raw"]})
            check(code(r) == 13778, "raw without auth %r" % r)
            r = await a.call("private/subscribe", {"channels": PRIVATE})
            check(code(r) == 13009, "private/subscribe without auth %r" % r)
            r = await a.call("public/subscribe", {"channels": "x"})
            check(code(r) == -32602, "channels not an array %r" % r)

            # the shapes
            seen = {}
            while len(seen) < len(PUBLIC) - 1:      # platform_state is quiet
                n = await a.note(timeout=5)
                seen.setdefault(n["params"]["channel"], n["params"]["data"])
            snap = seen["book.BTC-PERPETUAL.100ms"]
            check(snap["type"] == "snapshot" and "prev_change_id" not in snap
                  and snap["instrument_name"] == "BTC-PERPETUAL"
                  and all(lv[0] == "new" and len(lv) == 3
                          for lv in snap["bids"] + snap["asks"]),
                  "snapshot %r" % snap)
            grp = seen["book.ETH-PERPETUAL.none.10.100ms"]
            check("type" not in grp and "change_id" in grp
                  and len(grp["bids"]) == 10
                  and all(len(lv) == 2 for lv in grp["bids"]),
                  "grouped %r" % grp)
            grp5 = seen["book.BTC-PERPETUAL.5.1.agg2"]
            check(len(grp5["bids"]) == 1 and grp5["bids"][0][0] % 5 == 0
                  and grp5["asks"][0][0] % 5 == 0, "group 5 %r" % grp5)
            tr = seen["trades.BTC-PERPETUAL.100ms"]
            check(isinstance(tr, list) and all(
                {"trade_seq", "trade_id", "price", "amount", "direction",
                 "timestamp", "tick_direction", "instrument_name"} <= set(t)
                for t in tr), "trades %r" % tr)
            tk = seen["ticker.BTC-PERPETUAL.100ms"]
            check(tk["instrument_name"] == "BTC-PERPETUAL"
                  and "best_bid_price" in tk, "ticker %r" % tk)
            ix = seen["deribit_price_index.btc_usd"]
            check(ix["index_name"] == "btc_usd" and ix["price"] > 0,
                  "index %r" % ix)

            # after auth: raw and private channels
            await a.result("public/auth", CREDS)
            got = await a.result("public/subscribe",
                                 {"channels": ["book.BTC-PERPETUAL.raw"]
                                  + PRIVATE})
            check(got == ["book.BTC-PERPETUAL.raw"],
                  "public/subscribe leaves private out %r" % got)
            got = await a.result("private/subscribe",
                                 {"channels": PRIVATE + INVALID})
            check(got == PRIVATE, "private/subscribe %r" % got)

            # a second connection, and the stats per channel
            b = await Rpc.open(sim.url())
            sim.control("reject-channel ticker.ETH-PERPETUAL.100ms on")
            got = await b.result("public/subscribe",
                                 {"channels": ["book.BTC-PERPETUAL.100ms",
                                               "ticker.ETH-PERPETUAL.100ms"]})
            check(got == ["book.BTC-PERPETUAL.100ms"], "reject-channel %r"
                  % got)
            sim.control("reject-channel ticker.ETH-PERPETUAL.100ms off")
            got = await b.result("public/subscribe",
                                 {"channels": ["ticker.ETH-PERPETUAL.100ms"]})
            check(got == ["ticker.ETH-PERPETUAL.100ms"], "after off %r" % got)
            st = sim.stats()["subscribed"]
            check(st.get("book.BTC-PERPETUAL.100ms") == 2
                  and st.get("book.BTC-PERPETUAL.raw") == 1
                  and st.get("ticker.ETH-PERPETUAL.100ms") == 1
                  and st.get("user.portfolio.BTC") == 1
                  and len(st) == len(PUBLIC) + 2 + len(PRIVATE),
                  "subscribed %r" % st)

            # unsubscribe: only what was subscribed comes back
            got = await a.result("public/unsubscribe",
                                 {"channels": ["book.BTC-PERPETUAL.100ms",
                                               "ticker.ETH-PERPETUAL.100ms",
                                               "nonsense"]})
            check(got == ["book.BTC-PERPETUAL.100ms"], "unsubscribe %r" % got)
            st = sim.stats()["subscribed"]
            check(st.get("book.BTC-PERPETUAL.100ms") == 1, "after unsub %r"
                  % st)
            check(await a.result("private/unsubscribe_all") == "ok", "all")
            await asyncio.sleep(0.3)
            while not a.notes.empty():
                a.notes.get_nowait()
            await asyncio.sleep(0.5)
            check(a.notes.empty(), "notifications after unsubscribe_all")
            st = sim.stats()["subscribed"]
            check(st == {"book.BTC-PERPETUAL.100ms": 1,
                         "ticker.ETH-PERPETUAL.100ms": 1},
                  "after unsubscribe_all %r" % st)
            await b.close()
            await sim.wait_stats(lambda st: st["subscribed"] == {},
                                 "no subscriptions after close")
            await a.close()

        run(go())

    # [UNVERIFIED] switch: raw without auth silently left out
    with Exsim("--raw-unauth-omit", "--rate", "0") as sim:
        async def go2():
            c = await Rpc.open(sim.url())
            got = await c.result("public/subscribe",
                                 {"channels": ["book.BTC-PERPETUAL.raw",
                                               "book.BTC-PERPETUAL.100ms"]})
            check(got == ["book.BTC-PERPETUAL.100ms"], "omit %r" % got)
            await c.close()
        run(go2())


main(test)
