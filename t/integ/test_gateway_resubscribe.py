"""A resubscribe the gateway makes on its own (a book gap's resync, a
stale channel) is verified against the exchange's answer like any
subscribe (issue 12, step 0.4):

- a book gap (exsim `gap`) while the exchange refuses the channel
  (`reject-channel`): the refusal is noticed (logged, /status
  unconfirmed_channels), the subscribe is retried with backoff, and once
  the exchange takes it again the clients' book goes on with one bridging
  change, chain unbroken, no second snapshot;
- the same for a stale ticker (exsim `mute` past `stale`): refused,
  retried, data flowing again on the same client socket.

Before, the resubscribe's answer was ignored: the refused book waited for
a snapshot that never came, and the muted ticker stayed silent for good.
"""

import asyncio

import gateway_harness as gh
from gateway_harness import check, WSClient, TCPClient

BOOK = "book.BTC-PERPETUAL.100ms"
TICKER = "ticker.ETH-PERPETUAL.100ms"

UPSTREAM = """    protocol deribit;
    reconnect fixed { delay 200ms; }
    stale ticker.* 1s;
"""


async def body(h):
    gh.start(h, UPSTREAM, "client_auth off;\n",
             sim_args=("--no-rate-limit", "--rate", "20"))
    gh.wait_ready(h)
    a = await WSClient("ws-a").connect(h.ws_url)
    b = await TCPClient("tcp-b").connect(h.tcp_port)
    r = await a.call("public/subscribe", {"channels": [BOOK]}, id=1)
    check(r["result"] == [BOOK], "book subscribe %r" % r)
    r = await b.call("public/subscribe", {"channels": [TICKER]}, id=2)
    check(r["result"] == [TICKER], "ticker subscribe %r" % r)
    await a.wait_notes(BOOK, 5)
    await b.wait_notes(TICKER, 3)
    book = gh.Book("ws-a", BOOK)
    pos = book.feed(a, 0)

    # a gap whose resync the exchange refuses
    h.control("reject-channel %s on" % BOOK)
    h.control("gap %s" % BOOK)
    h.wait_up(lambda u: u["unconfirmed_count"] >= 1, 5,
              "the refused resync counted as unconfirmed")
    check(h.log_lines("not confirmed on resubscribe"),
          "the refused resync was not logged")
    await asyncio.sleep(0.3)            # read what came before the gap
    n = a.count(BOOK)
    await asyncio.sleep(1.5)            # retried meanwhile, still refused
    check(a.count(BOOK) == n, "book messages while refused")
    h.control("reject-channel %s off" % BOOK)
    await a.wait_notes(BOOK, n + 5, timeout=10)
    pos = book.feed(a, pos)
    check(book.snapshots == 1, "%d snapshots" % book.snapshots)
    h.wait_up(lambda u: u["unconfirmed_count"] == 0, 5,
              "the book confirmed again")

    # a stale ticker whose resubscribe the exchange refuses
    h.control("reject-channel %s on" % TICKER)
    h.control("mute %s on" % TICKER)
    h.wait_up(lambda u: u["stale_resubscribes"] >= 1, 5, "stale resubscribe")
    h.control("mute %s off" % TICKER)
    h.wait_up(lambda u: u["unconfirmed_count"] >= 1, 5,
              "the refused stale resubscribe counted as unconfirmed")
    await asyncio.sleep(0.3)            # read what came before the mute
    n = b.count(TICKER)
    await asyncio.sleep(1.5)
    check(b.count(TICKER) == n, "ticker messages while refused")
    h.control("reject-channel %s off" % TICKER)
    await b.wait_notes(TICKER, n + 3, timeout=10)
    h.wait_up(lambda u: u["unconfirmed_count"] == 0, 5,
              "the ticker confirmed again")
    check(h.up()["state"] == "ready", "upstream %r" % h.up())
    await asyncio.sleep(0.5)
    book.feed(a, pos)
    check(book.snapshots == 1, "%d snapshots" % book.snapshots)
    await a.close()
    await b.close()


gh.run("gateway_resubscribe", body)
