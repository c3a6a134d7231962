"""exsim: several accounts (--account ID:SECRET, repeatable). Two extra
accounts, two connections each (one by client_credentials, one by
client_signature), orders by all four:

- user.orders.* and private/get_open_orders_by_instrument show a
  connection its own account's orders only (both of its connections');
- private/cancel and get_order_state of the other account's order id fail
  with 11044 and leave that order open;
- a fill reaches user.trades / user.portfolio and get_positions of the
  filling account only;
- cancel-on-disconnect of account scope on one account's connection
  cancels that account's orders only;
- credits are per account: one account running dry (10028, close) leaves
  the other's pool and the per-IP pool alone; stats "accounts" counts it;
- sessions and nonces are per key: the same names in two accounts are
  two different things;
- the default key (--client-id/--client-secret) still works as before;
- a malformed or duplicate --account is refused at start.
"""
import asyncio
import hashlib
import hmac
import os
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from exsim_util import EXSIM, Exsim, Rpc, check, main, run  # noqa: E402

I = "BTC-PERPETUAL"
ACCTS = {"acct-a": "secret-a", "acct-b": "secret-b"}


def code(r):
    return r.get("error", {}).get("code")


async def login(sim, cid, secret, nonce=None):
    """A connection authenticated as CID: by client_signature with NONCE
    when given, else by client_credentials."""
    c = await Rpc.open(sim.url())
    if nonce is not None:
        ts = int(time.time() * 1000)
        sig = hmac.new(secret.encode(), ("%d\n%s\n" % (ts, nonce)).encode(),
                       hashlib.sha256).hexdigest()
        p = {"grant_type": "client_signature", "client_id": cid,
             "timestamp": ts, "nonce": nonce, "signature": sig, "data": ""}
    else:
        p = {"grant_type": "client_credentials", "client_id": cid,
             "client_secret": secret}
    await c.result("public/auth", p)
    return c


async def quiet_notes(c, channel, quiet=0.5):
    """The data of every notification of CHANNEL (every whole
    notification when CHANNEL is None) until none came for QUIET seconds."""
    out = []
    while True:
        try:
            m = await asyncio.wait_for(c.notes.get(), quiet)
        except asyncio.TimeoutError:
            return out
        if channel is None:
            out.append(m)
        elif m["params"].get("channel") == channel:
            out.append(m["params"]["data"])


def refused_at_start(*args):
    try:
        p = subprocess.run([EXSIM, "--listen", "127.0.0.1:0", "--control",
                            "127.0.0.1:0"] + list(args), capture_output=True,
                           timeout=5)
    except subprocess.TimeoutExpired:
        return False        # it started and ran
    return p.returncode == 2 and b"--account" in p.stderr


def test():
    for bad in (["--account", "nocolon"], ["--account", ":s"],
                ["--account", "x:"], ["--account", "exsim:s"],
                ["--account", "x:1", "--account", "x:2"]):
        check(refused_at_start(*bad), "not refused: %r" % bad)

    args = ["--rate", "0"]
    for k, v in ACCTS.items():
        args += ["--account", "%s:%s" % (k, v)]
    with Exsim(*args) as sim:
        async def go():
            a1 = await login(sim, "acct-a", "secret-a")
            # nonces are per key: both accounts may use the same one
            nonce = "shared-%d" % os.getpid()
            a2 = await login(sim, "acct-a", "secret-a", nonce)
            b1 = await login(sim, "acct-b", "secret-b")
            b2 = await login(sim, "acct-b", "secret-b", nonce)
            # a key's secret does not open the other account
            x = await Rpc.open(sim.url())
            r = await x.call("public/auth", {
                "grant_type": "client_credentials", "client_id": "acct-a",
                "client_secret": "secret-b"})
            check(code(r) == 13004, "cross secret %r" % r)
            await x.close()

            conns = {"a1": a1, "a2": a2, "b1": b1, "b2": b2}
            ch = "user.orders.%s.raw" % I
            for c in conns.values():
                r = await c.result("private/subscribe", {"channels": [ch]})
                check(r == [ch], "subscribe %r" % r)
            book = await a1.result("public/get_order_book",
                                   {"instrument_name": I})
            lo = book["bids"][0][0] - 1000
            ids = {}
            for k, (name, c) in enumerate(sorted(conns.items())):
                o = await c.result("private/buy", {
                    "instrument_name": I, "amount": 10, "price": lo - k,
                    "label": name})
                check(o["order"]["order_state"] == "open", "rests %r" % o)
                ids[name] = o["order"]["order_id"]
            mine = {"a": {ids["a1"], ids["a2"]}, "b": {ids["b1"], ids["b2"]}}

            # user.orders: each connection sees its account's two orders
            for name, c in conns.items():
                seen = {d["order_id"] for d in await quiet_notes(c, ch)}
                check(seen == mine[name[0]], "%s user.orders saw %r, want %r"
                      % (name, seen, mine[name[0]]))
                r = await c.result("private/get_open_orders_by_instrument",
                                   {"instrument_name": I})
                got = {o["order_id"] for o in r}
                check(got == mine[name[0]], "%s open orders %r" % (name, got))
                r = await c.result("private/get_open_orders", {})
                check({o["order_id"] for o in r} == mine[name[0]],
                      "%s get_open_orders %r" % (name, r))

            # the other account's order id is unknown: 11044, order stays
            r = await b1.call("private/cancel", {"order_id": ids["a1"]})
            check(code(r) == 11044 and r["error"]["message"]
                  == "not_open_order", "cross cancel %r" % r)
            r = await b2.call("private/get_order_state",
                              {"order_id": ids["a2"]})
            check(code(r) == 11044, "cross get_order_state %r" % r)
            r = await b1.call("private/edit", {"order_id": ids["a1"],
                                               "amount": 20, "price": lo})
            check(code(r) == 11044, "cross edit %r" % r)
            r = await b1.result("private/cancel_all", {})
            check(r == 2, "b cancel_all counted %r" % r)
            s = await a2.result("private/get_order_state",
                                {"order_id": ids["a1"]})
            check(s["order_state"] == "open", "a1 order after b's cancels %r"
                  % s)
            for name in ("a1", "a2"):
                check(await quiet_notes(conns[name], ch, 0.3) == [],
                      "%s saw b's cancels" % name)
            for name in ("b1", "b2"):
                seen = {d["order_id"] for d in
                        await quiet_notes(conns[name], ch)}
                check(seen == mine["b"], "%s cancel notes %r" % (name, seen))
            st = sim.stats()["accounts"]
            check(st["acct-a"] == {"orders_placed": 2, "orders_open": 2,
                                   "rate_limited": 0}
                  and st["acct-b"] == {"orders_placed": 2, "orders_open": 0,
                                       "rate_limited": 0}
                  and st["exsim"]["orders_placed"] == 0,
                  "stats accounts %r" % st)

            # a fill: trades, portfolio and position of b only
            tch, pch = "user.trades.%s.raw" % I, "user.portfolio.BTC"
            for c in (a1, b2):
                r = await c.result("private/subscribe",
                                   {"channels": [tch, pch]})
                check(sorted(r) == sorted([tch, pch]), "subscribe %r" % r)
            f = await b2.result("private/buy", {
                "instrument_name": I, "amount": 10, "type": "market"})
            check(f["order"]["order_state"] == "filled", "market %r" % f)
            got = {m["params"]["channel"]: m["params"]["data"]
                   for m in await quiet_notes(b2, None)}
            check(got.get(tch) and got[tch][0]["order_id"]
                  == f["order"]["order_id"], "b2 user.trades %r" % got)
            check(got.get(pch, {}).get("currency") == "BTC",
                  "b2 user.portfolio %r" % got)
            got = [m for m in await quiet_notes(a1, None, 0.5)]
            for c in (a1, a2):
                while not c.notes.empty():
                    got.append(c.notes.get_nowait())
            check(got == [], "a saw b's fill: %r" % got[:2])
            pa = await a1.result("private/get_positions", {"currency": "BTC"})
            pb = await b1.result("private/get_positions", {"currency": "BTC"})
            check(pa == [] and len(pb) == 1 and pb[0]["size"] == 10,
                  "positions a %r b %r" % (pa, pb))
            p1 = await a1.result("private/get_position",
                                 {"instrument_name": I})
            check(p1["size"] == 0, "a position %r" % p1)
            ut = await a1.result("private/get_user_trades_by_instrument",
                                 {"instrument_name": I})
            check(ut["trades"] == [], "a user trades %r" % ut)
            ut = await b1.result("private/get_user_trades_by_instrument",
                                 {"instrument_name": I})
            check(len(ut["trades"]) >= 1, "b user trades %r" % ut)

            # COD, account scope, on a1's close: a's orders only
            o = await b1.result("private/buy", {
                "instrument_name": I, "amount": 10, "price": lo - 50})
            bid = o["order"]["order_id"]
            for c in (b1, b2):
                # b2 read its market order's note above already
                seen = {d["order_id"] for d in await quiet_notes(c, ch)}
                check(bid in seen and seen <= {bid, f["order"]["order_id"]},
                      "b's own orders %r" % seen)
            await a1.result("private/enable_cancel_on_disconnect",
                            {"scope": "account"})
            r = await b1.result("private/get_cancel_on_disconnect",
                                {"scope": "account"})
            check(r["enabled"] is False, "b sees a's account COD %r" % r)
            before = sim.stats()["cod_cancels"]
            await a1.close()
            st = await sim.wait_stats(
                lambda st: st["cod_cancels"] >= before + 2, "cod cancels")
            check(st["cod_cancels"] == before + 2, "cod_cancels %r" % st)
            check(st["accounts"]["acct-a"]["orders_open"] == 0
                  and st["accounts"]["acct-b"]["orders_open"] == 1,
                  "after COD %r" % st["accounts"])
            s = await b2.result("private/get_order_state", {"order_id": bid})
            check(s["order_state"] == "open", "b order after a COD %r" % s)
            for i in mine["a"]:
                s = await a2.result("private/get_order_state",
                                    {"order_id": i})
                check(s["cancel_reason"] == "cancel_on_disconnect",
                      "a order %r" % s)
            seen = await quiet_notes(a2, ch)
            check({d["order_id"] for d in seen} == mine["a"],
                  "a2 COD notes %r" % seen)
            check(await quiet_notes(b1, ch, 0.3) == [], "b saw a's COD")

            # sessions are per key: a's logout of session "shared" leaves
            # b's session of the same name alive
            toks = {}
            for cid in ACCTS:
                y = await Rpc.open(sim.url())
                toks[cid] = (y, await y.result("public/auth", {
                    "grant_type": "client_credentials", "client_id": cid,
                    "client_secret": ACCTS[cid], "scope": "session:shared"}))
            ya = toks["acct-a"][0]
            await ya.send({"jsonrpc": "2.0", "id": 1, "method":
                           "private/logout", "params": {}})
            cc = await ya.wait_closed(5)
            check(cc[0] == 1000, "a's logout closed with %r" % (cc,))
            z = await Rpc.open(sim.url())
            r = await z.call("public/auth", {
                "grant_type": "refresh_token",
                "refresh_token": toks["acct-b"][1]["refresh_token"]})
            check("result" in r, "b's session after a's logout %r" % r)
            r = await z.result("private/get_open_orders_by_instrument",
                               {"instrument_name": I})
            check({o["order_id"] for o in r} == {bid}, "z is b: %r" % r)
            for c in (toks["acct-b"][0], z):
                await c.close()

            # credits per account: a2 runs acct-a dry
            loop = asyncio.get_running_loop()
            futs = []
            for i in range(300):
                fu = loop.create_future()
                a2.pending[900000 + i] = fu
                futs.append(fu)
                await a2.send({"jsonrpc": "2.0", "id": 900000 + i,
                               "method": "public/get_time", "params": {}})
            await a2.wait_closed(10)
            codes = [fu.result().get("error", {}).get("code")
                     for fu in futs if fu.done() and not fu.exception()]
            check(codes.count(10028) == 1, "a2 not limited: %r" % codes[-3:])
            # b, on its own pool, gets 60 answers at once (30 000 credits,
            # more than acct-a has regained in this time at 10 000/s)
            futs = []
            for i in range(60):
                futs.append(b1.call("public/get_time"))
            res = await asyncio.gather(*futs)
            check(all("result" in r for r in res),
                  "b limited after a ran dry: %r" % [code(r) for r in res
                                                     if "result" not in r])
            st = sim.stats()
            check(st["accounts"]["acct-a"]["rate_limited"] == 1
                  and st["accounts"]["acct-b"]["rate_limited"] == 0
                  and st["rate_limited"] == 1, "stats %r" % st["accounts"])
            # the per-IP pool before auth is not the account's either
            x = await Rpc.open(sim.url())
            res = await asyncio.gather(*[x.call("public/get_time")
                                         for _ in range(20)])
            check(all("result" in r for r in res), "ip pool %r" % res[:1])
            await x.close()

            # the default key works as before and sees none of the others
            d = await login(sim, "exsim", "exsim-secret")
            r = await d.result("private/get_open_orders_by_instrument",
                               {"instrument_name": I})
            check(r == [], "default sees others' orders %r" % r)
            o = await d.result("private/buy", {
                "instrument_name": I, "amount": 10, "price": lo})
            r = await d.result("private/get_open_orders_by_instrument",
                               {"instrument_name": I})
            check([x["order_id"] for x in r] == [o["order"]["order_id"]],
                  "default open orders %r" % r)
            r = await d.call("private/cancel", {"order_id": bid})
            check(code(r) == 11044, "default cancels b's %r" % r)
            r = await d.result("private/cancel",
                               {"order_id": o["order"]["order_id"]})
            check(r["order_state"] == "cancelled", "default cancel %r" % r)
            st = sim.stats()["accounts"]["exsim"]
            check(st == {"orders_placed": 1, "orders_open": 0,
                         "rate_limited": 0}, "default stats %r" % st)
            for c in (b1, b2, d):
                await c.close()
        run(go(), timeout=60)


if __name__ == "__main__":
    main(test)
