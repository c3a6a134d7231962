"""exgate/order_outcome on an account's connection (`account NAME {}`):
a desk-a bot that opted in and has cancel-on-disconnect on; 10 orders
in flight at a drop (buys executed, their answers held back; sells held
before they run): one outcome each, as exsim's acct-a has them; when the
bot leaves, exactly the ones left open are cancelled. A desk-b bot's
orders are untouched."""

import asyncio
import json
import os
import time

import gateway_harness as gh
from gateway_harness import check, WSClient

BTC = "BTC-PERPETUAL"
UPSTREAM = """    protocol deribit;
    reconnect fixed { delay 50ms; }
    account desk-a { auth client_credentials acct-a env:XG_T_ACCT_A; }
    account desk-b { auth client_credentials acct-b env:XG_T_ACCT_B; }
"""
MAIN = """client_credentials bot-a env:XG_T_BOT account=desk-a;
client_credentials bot-b env:XG_T_BOT account=desk-b;
"""


async def direct(h, cid, secret, method, params):
    return await gh.direct_call(h, method, params, cid, secret)


async def bot(h, cid):
    c = await WSClient(cid).connect(h.ws_url)
    r = await c.call("public/auth", {"grant_type": "client_credentials",
                                     "client_id": cid,
                                     "client_secret": "bot-secret"}, id=0)
    check("result" in r, "auth %r" % r)
    return c


def outcomes(c):
    return [m["params"] for m in c.other if isinstance(m, dict)
            and m.get("method") == "exgate/order_outcome"]


async def body(h):
    os.environ.update({"XG_T_ACCT_A": "secret-a", "XG_T_ACCT_B": "secret-b",
                       "XG_T_BOT": "bot-secret"})
    gh.start(h, UPSTREAM, main_extra=MAIN, level="info",
             sim_args=("--account", "acct-a:secret-a",
                       "--account", "acct-b:secret-b", "--no-rate-limit"))
    gh.uh.wait_for(lambda: h.up().get("state") == "ready" and all(
        a.get("state") == "ready" for a in h.up().get("accounts", [])), 10,
        what="ready")
    a = await bot(h, "bot-a")
    b = await bot(h, "bot-b")
    r = await a.call("exgate/notify_order_outcome", {}, id="on")
    check(r.get("result") == {"enabled": True}, "opt in %r" % r)
    r = await a.call("private/enable_cancel_on_disconnect", {}, id="cod")
    check(r.get("result") == "ok", "cod %r" % r)
    r = await b.call("private/buy", {"instrument_name": BTC, "amount": 10,
                                     "type": "limit", "price": 900}, id=1)
    b_oid = r["result"]["order"]["order_id"]
    h.control("delay private/buy 2000")
    h.control("hold private/sell 2000")
    n0 = h.control("stats")["requests"].get("private/buy", 0)
    for i in range(10):
        m = "private/sell" if i % 2 else "private/buy"
        await a.request(m, {"instrument_name": BTC, "amount": 10,
                            "type": "limit",
                            "price": 1000 + i if m == "private/buy"
                            else 900000 + i}, id=100 + i)
    gh.uh.wait_for(lambda: h.control("stats")["requests"].get(
        "private/buy", 0) >= n0 + 5, 5, what="buys at exsim")
    h.control("drop")
    end = time.monotonic() + 10
    while len(outcomes(a)) < 10:
        check(time.monotonic() < end, "outcomes %r" % outcomes(a))
        await asyncio.sleep(0.05)
    h.control("delay private/buy 0")
    h.control("hold private/sell 0")
    got = {p["request_id"]: p for p in outcomes(a)}
    check(len(got) == 10, "one each %r" % got)
    openA = await direct(h, "acct-a", "secret-a",
                         "private/get_open_orders_by_instrument",
                         {"instrument_name": BTC})
    ids = set(o["order_id"] for o in openA)
    for i in range(10):
        p = got[100 + i]
        if i % 2:
            check(p["outcome"] == "not_placed", "sell %r" % p)
        else:
            check(p["outcome"] == "placed" and p["order"]["order_id"] in ids,
                  "buy %r (acct-a open %r)" % (p, ids))
    check(len(ids) == 5, "acct-a open %r" % ids)
    await a.close()
    end = time.monotonic() + 10
    while True:
        left = await direct(h, "acct-a", "secret-a",
                            "private/get_open_orders_by_instrument",
                            {"instrument_name": BTC})
        if not left:
            break
        check(time.monotonic() < end, "acct-a still open %r" % left)
        await asyncio.sleep(0.05)
    leftb = await direct(h, "acct-b", "secret-b",
                         "private/get_open_orders_by_instrument",
                         {"instrument_name": BTC})
    check([o["order_id"] for o in leftb] == [b_oid], "desk-b %r" % leftb)
    check(outcomes(b) == [], "bot-b got outcomes")
    await b.close()


gh.run("gateway_order_outcome_accounts", body)
