"""Per-client cancel-on-disconnect (emulated by exgate), against exsim:
exactly the disconnected client's orders that are still open are
cancelled, no more and no fewer, one private/cancel per order.

- two clients with orders: the one that leaves has only its own orders
  cancelled; an order of the other one it edited is not its own;
- after `cancel_all_by_instrument BTC-PERPETUAL` the client's
  ETH-PERPETUAL order is still cancelled when it leaves;
- an order cancelled by someone else or filled since is not cancelled
  again (exsim counts every private/cancel it gets);
- a private/buy still in flight when its client leaves is cancelled when
  its answer arrives; an immediate_or_cancel one that did not rest is not;
- the upstream down when the client leaves: the check and the cancels
  wait for the restore;
- the check (private/get_open_orders) lost with the connection is sent
  again on the next one;
- the tracked set stays bounded: past DR_COD_PRUNE_MIN (128) orders it is
  checked against the exchange and what is no longer open is forgotten
  (/status cod_orders_tracked).
"""

import asyncio
import os

import gateway_harness as gh
from gateway_harness import check, WSClient, TCPClient, Direct

UPSTREAM = """    protocol deribit;
    auth client_credentials exsim env:XG_TEST_EXSIM_SECRET;
    reconnect fixed { delay 200ms; }
"""

BTC = "BTC-PERPETUAL"
ETH = "ETH-PERPETUAL"


def cancels(h):
    """private/cancel requests exsim got so far (every connection)."""
    return h.control("stats")["requests"].get("private/cancel", 0)


async def open_ids(h):
    r = await gh.direct_call(h, "private/get_open_orders", {})
    return set(o["order_id"] for o in r)


async def buy(c, instr, price, rid, **extra):
    p = {"instrument_name": instr, "amount": 10 if instr == BTC else 1,
         "type": "limit", "price": price}
    p.update(extra)
    r = await c.call("private/buy", p, id=rid)
    check("result" in r, "%s: buy %r" % (c.name, r))
    return r["result"]["order"]


async def cod_client(h, cls, name):
    c = await (cls(name).connect(h.ws_url) if cls is WSClient
               else cls(name).connect(h.tcp_port))
    r = await c.call("private/enable_cancel_on_disconnect", {}, id="cod")
    check(r.get("result") == "ok", "%s: COD %r" % (name, r))
    return c


async def wait_open(h, want, what, timeout=5):
    """Waits until exsim's open orders are exactly WANT."""
    end = asyncio.get_event_loop().time() + timeout
    while True:
        got = await open_ids(h)
        if got == want:
            return
        if asyncio.get_event_loop().time() > end:
            raise gh.Fail("%s: open orders %r, want %r" % (what, sorted(got),
                                                           sorted(want)))
        await asyncio.sleep(0.05)


async def settled_cancels(h, before, want, what):
    """After the open set is right: no further cancel comes, and exactly
    WANT were sent since BEFORE."""
    await asyncio.sleep(0.7)
    n = cancels(h) - before
    check(n == want, "%s: %d private/cancel sent, want %d" % (what, n, want))


async def two_clients(h, d):
    """b, c and 'never another client's order'."""
    a = await cod_client(h, TCPClient, "tcp-a")
    b = await cod_client(h, WSClient, "ws-b")
    a1 = (await buy(a, BTC, 1000, 1))["order_id"]
    a2 = (await buy(a, ETH, 100, 2))["order_id"]
    r = await a.call("private/cancel_all_by_instrument",
                     {"instrument_name": BTC}, id=3)
    check(r.get("result") == 1, "cancel_all_by_instrument %r" % r)
    a3 = (await buy(a, BTC, 1001, 4))["order_id"]
    a4 = (await buy(a, BTC, 1002, 5))["order_id"]
    a6 = (await buy(a, ETH, 101, 6))["order_id"]
    b1 = (await buy(b, BTC, 1003, 7))["order_id"]
    b2 = (await buy(b, ETH, 102, 8))["order_id"]
    # someone else cancels a3 and fills a4
    await d.call("private/cancel", {"order_id": a3})
    ob = await d.call("public/get_order_book", {"instrument_name": BTC})
    e = await d.call("private/edit", {"order_id": a4, "amount": 10,
                                      "price": ob["best_ask_price"] + 1000})
    check(e["order"]["order_state"] == "filled", "a4 filled: %r" % e)
    # b edits a's order a6: it stays a's
    r = await b.call("private/edit", {"order_id": a6, "amount": 1,
                                      "price": 99}, id=9)
    check(r["result"]["order"]["order_state"] == "open", "edit a6 %r" % r)
    await wait_open(h, {a2, a6, b1, b2}, "before")
    check(a1 not in await open_ids(h), "a1 open")

    n0 = cancels(h)
    await b.close()
    await wait_open(h, {a2, a6}, "b left: its two orders cancelled, a's "
                    "stay (a6 too, which b edited)")
    await settled_cancels(h, n0, 2, "b left")

    n0 = cancels(h)
    await a.close()
    await wait_open(h, set(), "a left: a2 (after cancel_all_by_instrument "
                    "BTC) and a6 cancelled")
    await settled_cancels(h, n0, 2, "a left (a3 and a4 were closed)")
    check(len(h.log_lines(r"cancel-on-disconnect .*cancelling order")) == 4,
          "each cancel is logged once")


async def in_flight(h, d):
    """a: a buy in flight when its client leaves."""
    c = await cod_client(h, TCPClient, "tcp-inflight")
    h.control("delay private/buy 1500")
    n0 = cancels(h)
    buys = h.control("stats")["requests"].get("private/buy", 0)
    await c.request("private/buy", {"instrument_name": BTC, "amount": 10,
                                    "type": "limit", "price": 1000}, id=1)
    await c.request("private/buy", {"instrument_name": BTC, "amount": 10,
                                    "type": "limit", "price": 1000,
                                    "time_in_force": "immediate_or_cancel"},
                    id=2)
    end = asyncio.get_event_loop().time() + 5
    while len(await open_ids(h)) != 1:
        check(asyncio.get_event_loop().time() < end, "the buy at exsim")
        await asyncio.sleep(0.05)
    gh.uh.wait_for(lambda: h.control("stats")["requests"].get(
        "private/buy", 0) == buys + 2, 5, what="both buys at exsim")
    await c.close()
    h.control("delay private/buy 0")
    await wait_open(h, set(), "the buy answered after its client left is "
                    "cancelled")
    await settled_cancels(h, n0, 1, "in flight (the IOC one did not rest)")


async def upstream_down(h, d):
    """The upstream not ready when the client leaves."""
    c = await cod_client(h, WSClient, "ws-down")
    c1 = (await buy(c, BTC, 1000, 1))["order_id"]
    c2 = (await buy(c, ETH, 100, 2))["order_id"]
    await d.call("private/cancel", {"order_id": c1})
    await wait_open(h, {c2}, "down: before")
    h.control("refuse on")
    h.control("drop")
    h.wait_up(lambda u: u["state"] != "ready", 5, "upstream down")
    n0 = cancels(h)
    await c.close()
    await asyncio.sleep(0.5)
    check(h.control("stats")["orders_open"] == 1, "down: c2 still open")
    h.control("refuse off")
    gh.wait_ready(h)
    await wait_open(h, set(), "down: c2 cancelled after the restore")
    await settled_cancels(h, n0, 1, "down (c1 was cancelled by another)")


async def check_lost(h, d):
    """The get_open_orders check lost with the connection is replayed."""
    c = await cod_client(h, TCPClient, "tcp-lost")
    e1 = (await buy(c, BTC, 1000, 1))["order_id"]
    await wait_open(h, {e1}, "lost: before")
    h.control("delay private/get_open_orders 3000")
    gets = h.control("stats")["requests"].get("private/get_open_orders", 0)
    n0 = cancels(h)
    await c.close()
    gh.uh.wait_for(lambda: h.control("stats")["requests"].get(
        "private/get_open_orders", 0) > gets, 5,
        what="the check reached exsim")
    h.control("delay private/get_open_orders 0")
    h.control("drop")
    await wait_open(h, set(), "lost: e1 cancelled after the reconnect")
    await settled_cancels(h, n0, 1, "lost check")


async def cancel_lost(h, d):
    """A cancel whose answer is lost with the connection is not sent again
    blind: its order is checked again (exsim had cancelled it). A buy in
    flight lost with the connection: its order is looked up by the label
    exgate gave it, found open and cancelled, and the client's COD ends."""
    c = await cod_client(h, WSClient, "ws-cancel-lost")
    f1 = (await buy(c, BTC, 1000, 1))["order_id"]
    await wait_open(h, {f1}, "cancel lost: before")
    h.control("delay private/cancel 3000")
    h.control("delay private/buy 3000")
    n0 = cancels(h)
    await c.request("private/buy", {"instrument_name": ETH, "amount": 1,
                                    "type": "limit", "price": 100}, id=2)
    end = asyncio.get_event_loop().time() + 5
    while len(await open_ids(h)) != 2:
        check(asyncio.get_event_loop().time() < end, "the ETH buy at exsim")
        await asyncio.sleep(0.05)
    f2 = (await open_ids(h) - {f1}).pop()
    await c.close()
    gh.uh.wait_for(lambda: cancels(h) == n0 + 1, 5,
                   what="the cancel reached exsim")
    h.control("delay private/cancel 0")
    h.control("delay private/buy 0")
    h.control("drop")
    gh.wait_ready(h)
    await wait_open(h, set(), "cancel lost: f1 cancelled, the ETH order "
                    "whose answer was lost found and cancelled")
    await settled_cancels(h, n0, 2, "cancel lost: f1's not sent again, "
                          "f2's once")
    gh.uh.wait_for(lambda: h.up()["cod_pending"] == 0, 5,
                   what="the client's COD ended")
    check(h.log_lines(r"private/buy in flight when the connection dropped"),
          "the lost buy is logged")
    check(h.log_lines(r"order %s, placed by a request whose answer was lost"
                      % f2), "the found order is logged")


async def bounded(h, d):
    """The tracked set follows the exchange past DR_COD_PRUNE_MIN."""
    c = await cod_client(h, WSClient, "ws-many")
    keys = []
    for i in range(100):
        keys.append(await c.request("private/buy", {
            "instrument_name": BTC, "amount": 10, "type": "limit",
            "price": 1000 + i * 0.5}, id=1000 + i))
    for k in keys:
        r = await c.answer(k)
        check(r["result"]["order"]["order_state"] == "open", "buy %r" % r)
    check(h.up()["cod_orders_tracked"] == 100, "tracked: %r" % h.up())
    await d.call("private/cancel_all", {})       # someone else
    keep = set()
    for i in range(30):
        keep.add((await buy(c, ETH, 100 + i, 2000 + i))["order_id"])
    gh.uh.wait_for(lambda: h.up()["cod_orders_tracked"] == 30, 5,
                   what="the 100 closed orders forgotten")
    check(h.log_lines(r"checking 128 tracked orders"), "the check is logged")
    await wait_open(h, keep, "bounded: before")
    n0 = cancels(h)
    await c.close()
    await wait_open(h, set(), "bounded: the 30 open orders cancelled")
    await settled_cancels(h, n0, 30, "bounded")
    gh.uh.wait_for(lambda: h.up()["cod_pending"] == 0, 5,
                   what="no client COD pending")


async def body(h):
    os.environ["XG_TEST_EXSIM_SECRET"] = "exsim-secret"
    gh.start(h, UPSTREAM, "client_auth off;\n",
             sim_args=("--no-rate-limit",))
    gh.wait_ready(h)
    for scenario in (two_clients, in_flight, bounded, upstream_down,
                     check_lost, cancel_lost):
        d = await Direct().open(h)
        try:
            await scenario(h, d)
        finally:
            await d.close()


gh.run("gateway_cod", body)
