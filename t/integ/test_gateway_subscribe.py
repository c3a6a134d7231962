"""Subscriptions beyond the simple case:

- the exchange's confirmed list is diffed: a channel exsim rejects is left
  out of the answer, the other channels of the same request confirmed;
- unsubscribe_linger: the last leaver's channel stays subscribed upstream
  for the linger, a client coming back within it is answered at once
  without a new upstream subscribe, and after it the channel goes;
- a subscribe while the upstream is down waits and is answered with the
  confirmed channels after the restore;
- the linger holds when the last subscriber disconnects (not only when it
  unsubscribes): a bot that reconnects within it finds its channel live.
"""

import asyncio
import time

import gateway_harness as gh
from gateway_harness import check, WSClient, TCPClient

BTC = "ticker.BTC-PERPETUAL.100ms"
ETH = "ticker.ETH-PERPETUAL.100ms"
IDX = "deribit_price_index.btc_usd"

UPSTREAM = """    protocol deribit;
    reconnect fixed { delay 200ms; }
"""


def subs(h):
    return h.control("stats")["subscribed"]


def nsubscribes(h):
    r = h.control("stats")["requests"]
    return r.get("public/subscribe", 0) + r.get("private/subscribe", 0)


async def body(h):
    gh.start(h, UPSTREAM, "client_auth off;\nunsubscribe_linger 1500ms;\n",
             sim_args=("--no-rate-limit", "--rate", "20"))
    gh.wait_ready(h)
    a = await WSClient("ws-a").connect(h.ws_url)
    b = await TCPClient("tcp-b").connect(h.tcp_port)

    # diff against the exchange's list
    h.control("reject-channel %s on" % ETH)
    r = await a.call("public/subscribe", {"channels": [BTC, ETH]}, id=1)
    check(r["result"] == [BTC], "rejected channel in the answer: %r" % r)
    r = await b.call("public/subscribe", {"channels": [ETH]}, id=2)
    check(r["result"] == [], "rejected channel again: %r" % r)
    check(h.up()["channels"] == 1, "a refused channel stays: %r" % h.up())
    h.control("reject-channel %s off" % ETH)
    r = await b.call("public/subscribe", {"channels": [ETH]}, id=3)
    check(r["result"] == [ETH], "after the reject is lifted: %r" % r)

    # linger
    await a.call("public/unsubscribe", {"channels": [BTC]}, id=4)
    t0 = time.monotonic()
    await asyncio.sleep(0.5)
    check(BTC in subs(h), "unsubscribed before the linger ran out")
    before = nsubscribes(h)
    r = await b.call("public/subscribe", {"channels": [BTC]}, id=5)
    check(r["result"] == [BTC], "back within the linger: %r" % r)
    check(nsubscribes(h) == before, "a new upstream subscribe was sent")
    n = b.count(BTC)
    await b.wait_notes(BTC, n + 2)
    await b.call("public/unsubscribe", {"channels": [BTC]}, id=6)
    t0 = time.monotonic()
    gh.uh.wait_for(lambda: BTC not in subs(h), 5,
                   what="the upstream unsubscribe after the linger")
    took = time.monotonic() - t0
    check(took > 1.0, "unsubscribed after %.2f s, linger is 1.5 s" % took)

    # a book keeps being applied while its channel lingers unwatched: a
    # client coming back gets a current snapshot that the next change
    # chains on, with no resync
    BOOK = "book.BTC-PERPETUAL.100ms"
    r = await a.call("public/subscribe", {"channels": [BOOK]}, id=20)
    check(r["result"] == [BOOK], "book subscribe %r" % r)
    await a.wait_notes(BOOK, 5)
    await a.call("public/unsubscribe", {"channels": [BOOK]}, id=21)
    await asyncio.sleep(0.7)            # the book moves meanwhile
    r = await b.call("public/subscribe", {"channels": [BOOK]}, id=22)
    check(r["result"] == [BOOK], "book back within the linger %r" % r)
    await b.wait_notes(BOOK, 10)
    last = None
    for ch, m in b.notes:
        if ch != BOOK:
            continue
        dt = m["params"]["data"]
        if last is None:
            check(dt["type"] == "snapshot", "first book message %r" % dt)
        else:
            check(dt.get("prev_change_id") == last,
                  "chain after the linger: %r after %r" % (dt, last))
        last = dt["change_id"]
    check(not h.log_lines("gap at change_id"), "a resync was needed")
    await b.call("public/unsubscribe", {"channels": [BOOK]}, id=23)

    # subscribe while the upstream is down
    h.control("refuse on")
    h.control("drop")
    h.wait_up(lambda u: u["state"] != "ready", 5, "upstream down")
    k = await a.request("public/subscribe", {"channels": [IDX, BTC]},
                        id="while-down")
    await asyncio.sleep(0.5)
    check(not a.answers.get(k), "answered while down: %r" % a.answers)
    h.control("refuse off")
    r = await a.answer(k, timeout=5)
    check(sorted(r["result"]) == sorted([IDX, BTC]), "after restore: %r" % r)
    await a.wait_notes(BTC, a.count(BTC) + 2)
    check(b.count(ETH) > 0, "b kept its channel")
    s = subs(h)
    check(s.get(ETH) == 1 and s.get(BTC) == 1 and s.get(IDX) == 1,
          "exsim subscriptions after the restore: %r" % s)

    # linger after a disconnect: the channel's last subscriber goes away
    # without unsubscribing, a bot coming back within the linger finds it
    # still subscribed upstream and no new subscribe is sent
    SOL = "ticker.BTC-26DEC26.100ms"
    c = await TCPClient("tcp-c").connect(h.tcp_port)
    r = await c.call("public/subscribe", {"channels": [SOL]}, id=30)
    check(r["result"] == [SOL], "subscribe %r" % r)
    await c.close()
    await asyncio.sleep(0.5)
    check(SOL in subs(h), "unsubscribed upstream at once on disconnect")
    before = nsubscribes(h)
    c = await WSClient("ws-c").connect(h.ws_url)
    r = await c.call("public/subscribe", {"channels": [SOL]}, id=31)
    check(r["result"] == [SOL], "back within the linger: %r" % r)
    check(nsubscribes(h) == before, "a new upstream subscribe was sent")
    await c.wait_notes(SOL, 2)
    await c.close()
    t0 = time.monotonic()
    gh.uh.wait_for(lambda: SOL not in subs(h), 5,
                   what="the upstream unsubscribe after the linger")
    took = time.monotonic() - t0
    check(took > 1.0, "unsubscribed %.2f s after the disconnect, linger is "
          "1.5 s" % took)
    await a.close()
    await b.close()


gh.run("gateway_subscribe", body)
