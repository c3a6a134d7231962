"""exsim: bad input never crashes it. Every method gets every kind of wrong
parameter (wrong JSON types, huge numbers, NaN-like values, deep nesting,
empty and over-long strings), plus garbage frames and channel names; each
request still gets exactly one answer, the connection stays usable, and
exsim exits cleanly (the sanitizer build checks for leaks and UB).
"""
import asyncio
import json
import os
import random
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from exsim_util import Exsim, Rpc, check, main, run  # noqa: E402

CREDS = {"grant_type": "client_credentials", "client_id": "exsim",
         "client_secret": "exsim-secret"}
METHODS = [
    "public/hello", "public/test", "public/get_time", "public/status",
    "public/get_instruments", "public/get_instrument",
    "public/get_currencies", "public/ticker", "public/get_order_book",
    "public/get_last_trades_by_instrument", "public/get_index_price",
    "public/auth", "public/fork_token", "public/set_heartbeat",
    "public/disable_heartbeat",
    "public/subscribe", "public/unsubscribe", "public/unsubscribe_all",
    "private/subscribe", "private/unsubscribe", "private/unsubscribe_all",
    "private/enable_cancel_on_disconnect",
    "private/disable_cancel_on_disconnect",
    "private/get_cancel_on_disconnect", "private/buy", "private/sell",
    "private/edit", "private/cancel", "private/cancel_all",
    "private/cancel_all_by_instrument", "private/cancel_all_by_currency",
    "private/cancel_by_label", "private/get_open_orders",
    "private/get_open_orders_by_instrument",
    "private/get_open_orders_by_currency",
    "private/get_open_orders_by_label", "private/get_order_state",
    "private/get_positions", "private/get_position",
    "private/get_account_summary",
]
KEYS = ["instrument_name", "amount", "price", "depth", "currency", "kind",
        "channels", "interval", "grant_type", "client_id", "client_secret",
        "refresh_token", "timestamp", "nonce", "signature", "data", "scope",
        "order_id", "label", "type", "time_in_force", "start_seq", "end_seq",
        "session_name",
        "count", "sorting", "start_timestamp", "end_timestamp",
        "access_token", "expected_result", "index_name", "post_only",
        "reject_post_only", "client_name", "client_version", "state"]
VALUES = [None, True, False, 0, -1, 1, 10, 2 ** 63, -2 ** 63, 2 ** 70,
          1e308, -1e308, 1e-300, 0.5, 10.25, "", "x", "BTC-PERPETUAL",
          "any", "BTC", "raw", "é" * 40, "y" * 5000, [], [1, "a", None],
          ["book.BTC-PERPETUAL.raw", 5], ["a" * 300], {}, {"a": {"b": []}},
          [[[[[[[[[[[]]]]]]]]]]], "session:" + "z" * 100, "expires:-5",
          "connection session:ok expires:1e9", "market", "limit",
          "fill_or_kill", "immediate_or_cancel", "asc", "desc", "account",
          "exception"]


def test():
    rnd = random.Random(4)
    with Exsim("--rate", "200", "--no-rate-limit", "--min-heartbeat",
               "0.5") as sim:
        async def go():
            c = await Rpc.open(sim.url())
            await c.result("public/auth", CREDS)
            n = 0
            # every method: each value once (under a random key), each key
            # once (with a random value), a second random pair each time
            for m in METHODS:
                pairs = [(rnd.choice(KEYS), v) for v in VALUES]
                pairs += [(k, rnd.choice(VALUES)) for k in KEYS]
                for k, v in pairs:
                    p = {k: v}
                    if rnd.random() < 0.5:
                        p[rnd.choice(KEYS)] = rnd.choice(VALUES)
                    r = await c.call(m, p)
                    check("result" in r or "error" in r,
                          "%s %r -> %r" % (m, p, r))
                    n += 1
            check(not c.closed.done(), "closed by hostile params")
            # garbage frames
            for g in ["", " ", "null", "true", "1", '"s"', "{}", "[]",
                      '{"id":{}}', '{"id":[1]}', '{"id":null}',
                      '{"id":1}', '{"id":1,"method":5}',
                      '{"id":1,"method":"public/test","params":5}',
                      '{"id":1,"jsonrpc":"2.0","method":"public/test",'
                      '"params":"x"}', "\u0000", "{" * 3000, "[" * 3000,
                      '{"id":"\\ud800","jsonrpc":"2.0","method":"x"}',
                      '{"id":1e400,"jsonrpc":"2.0","method":"x"}',
                      '{"jsonrpc":"2.0","id":-0,"method":"public/test"}']:
                await c.send(g)
            r = await c.call("public/test")
            check("result" in r, "usable after garbage %r" % r)
            # random channel names
            names = []
            for _ in range(300):
                parts = [rnd.choice(["book", "ticker", "trades", "user",
                                     "orders", "BTC-PERPETUAL", "raw",
                                     "100ms", "none", "10", "", "bench",
                                     "0", "any", "future", "portfolio",
                                     "BTC", "deribit_price_index"])
                         for _ in range(rnd.randint(1, 6))]
                names.append(".".join(parts))
            r = await c.call("private/subscribe", {"channels": names})
            check("result" in r, "random channels %r" % r)
            for ch in r["result"]:
                check(ch in names, "unknown channel echoed %r" % ch)
            await asyncio.sleep(0.5)      # notifications flow
            r = await c.call("private/unsubscribe", {"channels": names})
            check("result" in r, "unsubscribe random")
            await c.close()
            return n

        n = run(go(), timeout=55)
        sys.stderr.write("%d hostile requests answered\n" % n)
        st = sim.stats()
        check(sum(st["requests"].values()) >= n, "requests counted")


main(test)
