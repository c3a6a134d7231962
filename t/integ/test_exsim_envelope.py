"""exsim: the JSON-RPC envelope and the public methods.

Responses carry jsonrpc/id/usIn/usOut/usDiff/testnet with the id echoed in
its own JSON type (big integers too); notifications carry none of them;
missing id, batch, positional params, unknown method, > 32 kB, parse
errors and a bad path get the errors of exchange-protocols.md A1.
"""
import asyncio
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from exsim_util import Exsim, Rpc, check, main, run  # noqa: E402

import websockets  # noqa: E402

ENVELOPE = {"jsonrpc", "id", "usIn", "usOut", "usDiff", "testnet"}


def test():
    with Exsim("--rate", "50", "--seed", "7") as sim:
        async def go():
            # ids: integer, string, integer beyond 64 bits -- echoed raw
            raw = await websockets.connect(sim.url())
            for rid in ('5', '"abc"', '123456789012345678901234567890',
                        '-3', '0'):
                await raw.send('{"jsonrpc":"2.0","id":%s,"method":'
                               '"public/get_time"}' % rid)
            texts = ""
            for _ in range(5):
                texts += await asyncio.wait_for(raw.recv(), 5) + "\n"
            for rid in ('"id":5,', '"id":"abc",',
                        '"id":123456789012345678901234567890,', '"id":-3,',
                        '"id":0,'):
                check(rid in texts, "id %s not echoed raw in %s"
                      % (rid, texts))
            await raw.close()

            c = await Rpc.open(sim.url())
            r = await c.call("public/get_time")
            check(ENVELOPE <= set(r) and "result" in r and "error" not in r,
                  "envelope %r" % r)
            check(r["usDiff"] == r["usOut"] - r["usIn"] and r["usDiff"] >= 0,
                  "usDiff %r" % r)
            check(r["testnet"] is True, "testnet %r" % r)
            check(abs(r["result"] - r["usIn"] / 1000) < 5000, "get_time %r" % r)

            hello = await c.result("public/hello", {"client_name": "t",
                                                    "client_version": "1"})
            check("version" in hello, "hello %r" % hello)
            r = await c.call("public/hello", {"client_name": "t"})
            check(r.get("error", {}).get("code") == -32602, "hello %r" % r)
            r = await c.call("public/test", {"expected_result": "exception"})
            check("error" in r and "result" not in r, "test exception %r" % r)
            check((await c.result("public/test"))["version"], "test")
            st = await c.result("public/status")
            check("locked" in st, "status %r" % st)

            ins = await c.result("public/get_instruments", {"currency": "BTC"})
            names = {i["instrument_name"] for i in ins}
            check({"BTC-PERPETUAL", "BTC-26DEC26", "BTC-26DEC26-100000-C"}
                  <= names and all(i["base_currency"] == "BTC" for i in ins),
                  "instruments %r" % names)
            opt = [i for i in ins if i["kind"] == "option"]
            check(opt and opt[0]["option_type"] == "call"
                  and opt[0]["strike"] == 100000, "option %r" % opt)
            fut = await c.result("public/get_instruments",
                                 {"currency": "ETH", "kind": "future"})
            check({i["instrument_name"] for i in fut}
                  == {"ETH-PERPETUAL", "ETH-26DEC26"}, "eth futures %r" % fut)
            r = await c.call("public/get_instruments", {"currency": "XYZ"})
            check(r.get("error", {}).get("code") == -32602, "bad currency")
            # ccxt's loadMarkets: no params at all, or currency "any": every
            # instrument; kind and expired still filter
            every = {"BTC-PERPETUAL", "ETH-PERPETUAL", "BTC-26DEC26",
                     "ETH-26DEC26", "BTC-26DEC26-100000-C",
                     "ETH-26DEC26-4000-P"}
            for params in (None, {}, {"currency": "any"},
                           {"currency": "any", "expired": False}):
                ins = await c.result("public/get_instruments", params)
                check(sorted(i["instrument_name"] for i in ins)
                      == sorted(every), "%r: %r" % (params, ins))
            for params in ({"kind": "option"},
                           {"currency": "any", "kind": "option"}):
                ins = await c.result("public/get_instruments", params)
                check({i["instrument_name"] for i in ins}
                      == {"BTC-26DEC26-100000-C", "ETH-26DEC26-4000-P"},
                      "%r: %r" % (params, ins))
            # exsim's instruments never expire: none was recently expired
            ins = await c.result("public/get_instruments", {"expired": True})
            check(ins == [], "expired: %r" % ins)
            for bad in ({"expired": "yes"}, {"kind": 3}, {"currency": 1}):
                r = await c.call("public/get_instruments", bad)
                check(r.get("error", {}).get("code") == -32602,
                      "%r: %r" % (bad, r))
            cur = await c.result("public/get_currencies")
            check({x["currency"] for x in cur} == {"BTC", "ETH"},
                  "currencies %r" % cur)

            t = await c.result("public/ticker",
                               {"instrument_name": "BTC-PERPETUAL"})
            for k in ("best_bid_price", "best_ask_price", "mark_price",
                      "index_price", "last_price", "timestamp", "stats"):
                check(k in t, "ticker lacks %s: %r" % (k, t))
            check(t["best_bid_price"] < t["best_ask_price"], "crossed %r" % t)
            ob = await c.result("public/get_order_book",
                                {"instrument_name": "ETH-PERPETUAL",
                                 "depth": 5})
            check(len(ob["bids"]) == 5 and len(ob["asks"]) == 5
                  and isinstance(ob["change_id"], int), "book %r" % ob)
            check(all(len(lv) == 2 for lv in ob["bids"] + ob["asks"]),
                  "levels are [price, amount]")
            check(ob["bids"] == sorted(ob["bids"], reverse=True)
                  and ob["asks"] == sorted(ob["asks"]), "book order")
            deep = await c.result("public/get_order_book",
                                  {"instrument_name": "ETH-PERPETUAL",
                                   "depth": 1000})
            check(len(deep["bids"]) >= 5, "deep book")
            r = await c.call("public/get_order_book",
                             {"instrument_name": "NOPE-PERPETUAL"})
            check(r.get("error", {}).get("code") == -32602, "bad instrument")

            # the market moves by itself at 50/s: trades accumulate
            await asyncio.sleep(1.0)
            lt = await c.result("public/get_last_trades_by_instrument",
                                {"instrument_name": "BTC-PERPETUAL",
                                 "count": 5})
            tr = lt["trades"]
            check(tr and all("trade_seq" in x for x in tr), "trades %r" % lt)
            seqs = [x["trade_seq"] for x in tr]
            check(seqs == sorted(seqs, reverse=True), "default desc %r" % seqs)
            top = seqs[0]
            rng = await c.result("public/get_last_trades_by_instrument",
                                 {"instrument_name": "BTC-PERPETUAL",
                                  "start_seq": top - 3, "end_seq": top,
                                  "count": 100})
            check([x["trade_seq"] for x in rng["trades"]]
                  == list(range(top - 3, top + 1)) and not rng["has_more"],
                  "seq range %r" % rng)
            few = await c.result("public/get_last_trades_by_instrument",
                                 {"instrument_name": "BTC-PERPETUAL",
                                  "start_seq": top - 3, "end_seq": top,
                                  "count": 2, "sorting": "asc"})
            check([x["trade_seq"] for x in few["trades"]] == [top - 3, top - 2]
                  and few["has_more"], "seq count %r" % few)

            # errors without id
            for bad, code in (('{"jsonrpc":"2.0","method":"public/test"}',
                               11050),
                              ('[{"jsonrpc":"2.0","id":1,"method":'
                               '"public/test"}]', 11050),
                              ('{"jsonrpc":"2.0","id":1,', -32700),
                              ('{"jsonrpc":"2.0","id":1.5,"method":'
                               '"public/test"}', 11050),
                              (json.dumps({"jsonrpc": "2.0", "id": 9,
                                           "method": "public/test",
                                           "params": {"x": "y" * 33000}}),
                               -32600)):
                await c.send(bad)
                e = await asyncio.wait_for(c.noid.get(), 5)
                check("id" not in e and e["error"]["code"] == code
                      and {"usIn", "usOut", "usDiff", "testnet"} <= set(e),
                      "%s... -> %r" % (bad[:40], e))
            check(not c.pending, "stray")
            # errors with id
            for params, method, code in (([1, 2], "public/test", -32602),
                                         ({}, "public/no_such", -32601),
                                         ({}, "private/no_such", -32601)):
                r = await c.call(method, params)
                check(r.get("error", {}).get("code") == code,
                      "%s %r -> %r" % (method, params, r))
            r = await c.call("public/test", None)
            check("result" in r, "params may be omitted %r" % r)
            await c.send('{"jsonrpc":"1.0","id":77,"method":"public/test"}')
            await asyncio.sleep(0.2)

            # notifications carry no envelope fields
            await c.result("public/subscribe",
                           {"channels": ["book.BTC-PERPETUAL.100ms"]})
            n = await c.note("book.BTC-PERPETUAL.100ms")
            check(set(n) == {"jsonrpc", "method", "params"}
                  and set(n["params"]) == {"channel", "data"},
                  "notification %r" % n)
            await c.close()

            # another path is refused with 404
            try:
                await websockets.connect(sim.url("/ws/api/v1"))
                check(False, "path /ws/api/v1 accepted")
            except websockets.InvalidStatusCode as e:
                check(e.status_code == 404, "status %r" % e.status_code)

        run(go())
        st = sim.stats()
        check(st["requests"].get("public/get_time") == 6, "requests %r"
              % st["requests"])
        check(st["connections_total"] == 3 and st["upgrades"] == 2
              and st["refused"] == 1, "connections %r" % st)


main(test)
