"""A continuity fetch that fails with a transient error is retried, not
given up (issue 12, step 0.7). Tried as a user would, every hole a bot saw
across 1,000 faults came from one case: a reconnect near a short
maintenance window made the trades backfill answer 11051
system_maintenance, and the gateway gave the fetch up at once.

- 13028 temporarily_unavailable twice (exsim `fail`), then an answer:
  no hole;
- a fetch with no answer within request_timeout (exsim `delay`) is sent
  again, and the late answer to the first one is ignored: no hole, no
  repeat;
- a permanent error (-32602) gives up at once: one hole, with the log
  line, as before;
- the orders reconcile of user.orders after a stale resubscribe (exsim
  mutes the channel while an order is placed), its fetch answered 10040
  `retry` once: retried, the order reaches the client;
- maintenance (a public upstream): the outage ends inside `maintenance
  on` (exsim answers 11051 to the backfill); it is retried with backoff
  while the live trades stay held, and once maintenance is off every
  trade_seq arrives once, in order.
"""

import asyncio
import os

import gateway_harness as gh
from gateway_harness import check, WSClient, TCPClient

CH = "trades.BTC-PERPETUAL.100ms"
ORDERS = "user.orders.BTC-PERPETUAL.raw"
FETCH = "public/get_last_trades_by_instrument"
UPSTREAM = """    protocol deribit;
    auth client_credentials exsim env:XG_TEST_EXSIM_SECRET;
    reconnect fixed { delay 200ms; }
    request_timeout 700ms;
    stale user.orders.* 1s;
"""
PUBLIC = """    protocol deribit;
    reconnect fixed { delay 200ms; }
"""


def holes(client):
    return gh.seq_holes(client, CH)


def fetches(h):
    return len(h.log_lines("missed during the outage: backfilling"))


async def outage(h, during=None):
    """An outage of about a second while the market trades; DURING (an
    exsim control command) is given just before the reconnect."""
    before = fetches(h)
    h.control("refuse on")
    h.control("drop")
    h.wait_up(lambda u: u["state"] != "ready", 5, "upstream down")
    await asyncio.sleep(1.0)
    if during is not None:
        h.control(during)
    h.control("refuse off")
    gh.uh.wait_for(lambda: fetches(h) > before, 10, what="the backfill")


async def settle(c, n=10):
    """Waits until C has N more trade messages (the backfill is done and
    live ones flow)."""
    await c.wait_notes(CH, c.count(CH) + n, timeout=15)


async def subscribe(h):
    a = await WSClient("ws-a").connect(h.ws_url)
    b = await TCPClient("tcp-b").connect(h.tcp_port)
    for c, i in ((a, 1), (b, 2)):
        r = await c.call("public/subscribe", {"channels": [CH]}, id=i)
        check(r["result"] == [CH], "subscribe %r" % r)
    await a.wait_notes(CH, 5)
    return a, b


async def body(h):
    os.environ["XG_TEST_EXSIM_SECRET"] = "exsim-secret"
    gh.start(h, UPSTREAM, "client_auth off;\n",
             sim_args=("--rate", "30", "--no-rate-limit"))
    gh.wait_ready(h)
    a, b = await subscribe(h)

    # two transient refusals, then the answer
    h.control("fail %s 13028 2" % FETCH)
    await outage(h)
    await settle(a)
    check(len(h.log_lines("temporarily_unavailable")) == 2,
          "two 13028 answers expected")
    check(holes(a) == [], "holes after 13028: %r" % holes(a))

    # no answer within request_timeout: sent again
    h.control("delay %s 1500" % FETCH)
    n = len(h.log_lines("timed out"))
    await outage(h)
    gh.uh.wait_for(lambda: len(h.log_lines("timed out")) > n, 5,
                   what="the backfill's timeout")
    h.control("delay %s 0" % FETCH)
    await settle(a)
    await asyncio.sleep(1.5)           # the late first answer comes and goes
    check(holes(a) == [], "holes after a timeout: %r" % holes(a))
    check(not h.log_lines("backfill failed"), "the backfill was given up")

    # a permanent error: given up at once, one hole
    h.control("fail %s -32602 1" % FETCH)
    await outage(h)
    await settle(a)
    check(h.log_lines("backfill failed"), "no give-up logged")
    check(len(holes(a)) == 1, "one hole expected: %r" % holes(a))

    # the orders reconcile (a stale resubscribe: exsim mutes the channel
    # while an order is placed), its fetch answered 10040 once
    d = await gh.Direct().open(h)
    r = await a.call("private/subscribe", {"channels": [ORDERS]}, id=3)
    check(r["result"] == [ORDERS], "orders subscribe %r" % r)
    h.control("fail private/get_open_orders_by_instrument 10040 1")
    h.control("mute %s on" % ORDERS)
    o = await d.call("private/buy", {"instrument_name": "BTC-PERPETUAL",
                                     "amount": 10, "type": "limit",
                                     "price": 1000.0})
    oid = o["order"]["order_id"]
    h.wait_up(lambda u: u["stale_resubscribes"] >= 1, 5, "stale resubscribe")
    h.control("mute %s off" % ORDERS)

    def got():
        return any(x.get("order_id") == oid
                   for x in gh.notes_data(a, ORDERS))
    for _ in range(100):
        if got():
            break
        await asyncio.sleep(0.1)
    check(got(), "the order placed while muted never reached the client")
    check(h.log_lines('"retry"'), "the 10040 was not seen")
    check(not h.log_lines("orders reconcile failed"),
          "the reconcile was given up")
    await d.call("private/cancel", {"order_id": oid})
    await d.close()
    await a.close()
    await b.close()

    # maintenance across the reconnect (a public upstream: public/auth
    # fails during maintenance too): the backfill answers 11051 until it
    # ends
    h.stop_gate()
    gh.start(h, PUBLIC, "client_auth off;\n")
    gh.wait_ready(h)
    a, b = await subscribe(h)
    await outage(h, during="maintenance on")
    await asyncio.sleep(0.8)
    check(h.log_lines("system_maintenance"), "no 11051 seen")
    h.control("maintenance off")
    await settle(a)
    await settle(b)
    check(not h.log_lines("backfill failed"), "the backfill was given up")
    check(h.log_lines("retrying in"), "no retry logged")
    check(holes(a) == [] and holes(b) == [],
          "holes after maintenance: %r %r" % (holes(a), holes(b)))
    await a.close()
    await b.close()


gh.run("gateway_transient", body)
