"""exsim: trading and cancel-on-disconnect (exchange-protocols.md A5).

buy/sell/edit/cancel/cancel_all/get_open_orders with labels, the matching
rule (immediate fills against the book, resting orders filled when the
market reaches them), user.orders / user.trades notifications; COD fires
on `drop` (orders cancelled, cancel_reason cancel_on_disconnect, counted
in cod_cancels) and not on private/logout.
"""
import asyncio
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from exsim_util import Exsim, Rpc, check, main, run  # noqa: E402

CREDS = {"grant_type": "client_credentials", "client_id": "exsim",
         "client_secret": "exsim-secret"}
I = "BTC-PERPETUAL"


def code(r):
    return r.get("error", {}).get("code")


async def authed(sim):
    c = await Rpc.open(sim.url())
    await c.result("public/auth", CREDS)
    return c


def test():
    with Exsim("--rate", "0", "--seed", "11", "--no-rate-limit") as sim:
        async def go():
            watch = await authed(sim)
            await watch.result("private/subscribe",
                               {"channels": ["user.orders.%s.raw" % I,
                                             "user.trades.future.BTC.100ms",
                                             "user.changes.any.any.raw",
                                             "user.portfolio.BTC"]})
            a = await authed(sim)
            ob = await a.result("public/get_order_book",
                                {"instrument_name": I, "depth": 5})
            bid, ask = ob["best_bid_price"], ob["best_ask_price"]

            # validation
            for p, param in (({"instrument_name": I, "amount": 15,
                               "price": bid}, "amount"),
                             ({"instrument_name": I, "amount": 10,
                               "price": bid + 0.25}, "price"),
                             ({"instrument_name": "X-PERPETUAL", "amount": 10,
                               "price": 1}, "instrument_name"),
                             ({"instrument_name": I, "amount": 10},
                              "price")):
                r = await a.call("private/buy", p)
                check(code(r) == -32602
                      and r["error"]["data"]["param"] == param,
                      "%r -> %r" % (p, r))

            # resting orders far from the market, with labels
            lo = bid - 1000
            o1 = (await a.result("private/buy",
                                 {"instrument_name": I, "amount": 10,
                                  "price": lo, "label": "grid"}))["order"]
            o2 = (await a.result("private/sell",
                                 {"instrument_name": I, "amount": 20,
                                  "price": ask + 1000, "label": "grid"}))
            o2 = o2["order"]
            o3 = (await a.result("private/buy",
                                 {"instrument_name": I, "amount": 30,
                                  "price": lo - 10, "label": "other"}))
            o3 = o3["order"]
            for o in (o1, o2, o3):
                check(o["order_state"] == "open" and o["filled_amount"] == 0,
                      "resting %r" % o)
            n = await watch.note("user.orders.%s.raw" % I)
            check(n["params"]["data"]["order_id"] == o1["order_id"],
                  "user.orders %r" % n)
            grid = await a.result("private/get_open_orders",
                                  {"label": "grid"})
            check(sorted(o["order_id"] for o in grid)
                  == sorted([o1["order_id"], o2["order_id"]]), "by label")
            byi = await a.result("private/get_open_orders_by_instrument",
                                 {"instrument_name": I})
            check(len(byi) == 3, "by instrument %r" % byi)

            # edit, cancel, cancel_by_label
            e = await a.result("private/edit", {"order_id": o3["order_id"],
                                                "amount": 40,
                                                "price": lo - 20})
            check(e["order"]["amount"] == 40 and e["order"]["price"]
                  == lo - 20, "edit %r" % e)
            cx = await a.result("private/cancel", {"order_id": o3["order_id"]})
            check(cx["order_state"] == "cancelled", "cancel %r" % cx)
            r = await a.call("private/cancel", {"order_id": o3["order_id"]})
            check(code(r) == 11044, "cancel twice %r" % r)
            check(sim.stats()["orders_open"] == 2, "orders_open")

            # a taker: a market buy fills at once against the asks. First
            # the notes of the orders above arrive and are dropped: quiet
            # for 0.3 s (100ms-batched channels included), within 10 s.
            end = time.monotonic() + 10
            while time.monotonic() < end:
                try:
                    await asyncio.wait_for(watch.notes.get(), 0.3)
                except asyncio.TimeoutError:
                    break
            m = await a.result("private/buy", {"instrument_name": I,
                                               "amount": 10,
                                               "type": "market"})
            check(m["order"]["order_state"] == "filled" and m["trades"]
                  and m["trades"][0]["price"] == ask
                  and m["trades"][0]["liquidity"] == "T", "market %r" % m)
            # Until each private channel has spoken (one is 100ms-batched),
            # with a deadline rather than one fixed pause.
            want = {"user.trades.future.BTC.100ms", "user.changes.any.any.raw",
                    "user.portfolio.BTC", "user.orders.%s.raw" % I}
            got = {}
            end = time.monotonic() + 10
            while not want <= set(got) and time.monotonic() < end:
                try:
                    n = await asyncio.wait_for(watch.notes.get(),
                                               end - time.monotonic())
                except asyncio.TimeoutError:
                    break
                got.setdefault(n["params"]["channel"], n["params"]["data"])
            d = got.get("user.trades.future.BTC.100ms")
            check(d and d[0]["order_id"] == m["order"]["order_id"],
                  "user.trades %r" % got)
            d = got.get("user.changes.any.any.raw")
            check(d and d["orders"][0]["order_id"] == m["order"]["order_id"]
                  and d["trades"] and d["positions"][0]["size"] == 10
                  and d["instrument_name"] == I, "user.changes %r" % d)
            d = got.get("user.portfolio.BTC")
            check(d and d["currency"] == "BTC", "portfolio %r" % got)
            d = got.get("user.orders.%s.raw" % I)
            check(d and d["order_state"] == "filled", "user.orders %r" % d)
            ob2 = await a.result("public/get_order_book",
                                 {"instrument_name": I, "depth": 1})
            check(ob2["change_id"] > ob["change_id"], "book consumed")

            # a maker: a buy just under the best ask fills when asks fall
            # to it (rule 4); the market is stepped with burst
            ob3 = await a.result("public/get_order_book",
                                 {"instrument_name": I, "depth": 1})
            px = ob3["best_bid_price"] + 0.5
            if px >= ob3["best_ask_price"]:
                px = ob3["best_bid_price"]
            mk = await a.result("private/buy", {"instrument_name": I,
                                                "amount": 10, "price": px,
                                                "label": "mk"})
            check(mk["order"]["order_state"] == "open", "maker rests %r" % mk)
            for _ in range(200):
                sim.control("burst 20")
                st = await a.result("private/get_order_state",
                                    {"order_id": mk["order"]["order_id"]})
                if st["order_state"] != "open":
                    break
            check(st["order_state"] == "filled" and st["average_price"] == px,
                  "maker %r" % st)
            r = await a.result("private/cancel_by_label", {"label": "grid"})
            check(r == 2, "cancel_by_label %r" % r)
            check(sim.stats()["orders_open"] == 0, "none open")

            # COD, connection scope, on drop
            r = await a.result("private/get_cancel_on_disconnect")
            check(r == {"scope": "connection", "enabled": False}, "get %r" % r)
            await a.result("private/enable_cancel_on_disconnect",
                           {"scope": "connection"})
            r = await a.result("private/get_cancel_on_disconnect")
            check(r["enabled"] is True, "enabled %r" % r)
            ids = []
            for k in range(3):
                o = await a.result("private/buy",
                                   {"instrument_name": I, "amount": 10,
                                    "price": lo - k})
                ids.append(o["order"]["order_id"])
            b = await authed(sim)                 # no COD: keeps its order
            kept = await b.result("private/sell",
                                  {"instrument_name": I, "amount": 10,
                                   "price": ask + 2000})
            while not watch.notes.empty():
                watch.notes.get_nowait()
            before = sim.stats()["cod_cancels"]
            # drop every connection but check the watcher separately:
            # it reconnects below
            r = sim.control("drop")
            check(r["ok"] and r["dropped"] == 3, "drop %r" % r)
            code_a, _ = await a.wait_closed(5)
            check(code_a == 1006, "drop sent a close frame: %r" % code_a)
            st = await sim.wait_stats(
                lambda st: st["cod_cancels"] >= before + 3, "cod cancels")
            check(st["cod_cancels"] == before + 3, "cod_cancels %r" % st)
            check(st["orders_open"] == 1, "orders_open %r" % st)
            c = await authed(sim)
            for i in ids:
                s = await c.result("private/get_order_state", {"order_id": i})
                check(s["order_state"] == "cancelled"
                      and s["cancel_reason"] == "cancel_on_disconnect",
                      "cod order %r" % s)
            check(kept["order"]["order_state"] == "open", "kept")

            # COD on, then logout: nothing is cancelled
            await c.result("private/enable_cancel_on_disconnect")
            o = await c.result("private/buy", {"instrument_name": I,
                                               "amount": 10, "price": lo})
            await c.send({"jsonrpc": "2.0", "id": 999,
                          "method": "private/logout", "params": {}})
            await c.wait_closed(5)
            await asyncio.sleep(0.3)
            st = sim.stats()
            check(st["cod_cancels"] == before + 3 and st["orders_open"] == 2,
                  "logout cancelled orders %r" % st)
            d = await authed(sim)
            s = await d.result("private/get_order_state",
                               {"order_id": o["order"]["order_id"]})
            check(s["order_state"] == "open", "after logout %r" % s)

            # account scope: every new connection starts with COD on
            await d.result("private/enable_cancel_on_disconnect",
                           {"scope": "account"})
            e = await authed(sim)
            r = await e.result("private/get_cancel_on_disconnect",
                               {"scope": "account"})
            check(r == {"scope": "account", "enabled": True}, "acct %r" % r)
            r = await e.result("private/get_cancel_on_disconnect")
            check(r["enabled"] is True, "new conn inherits %r" % r)
            r = await e.call("private/enable_cancel_on_disconnect",
                             {"scope": "galaxy"})
            check(code(r) == -32602, "bad scope %r" % r)
            await e.close()           # a clean close is a disconnect too
            st = await sim.wait_stats(
                lambda st: st["cod_cancels"] >= before + 5, "account cod")
            check(st["orders_open"] == 0
                  and st["cod_cancels"] == before + 5, "account COD %r" % st)
            n = await d.result("private/cancel_all")
            check(n == 0, "cancel_all %r" % n)
            await d.result("private/disable_cancel_on_disconnect",
                           {"scope": "account"})
            await d.close()

        run(go())


main(test)
