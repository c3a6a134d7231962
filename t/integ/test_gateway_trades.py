"""Trades missed during an upstream outage are backfilled by trade_seq:
a client subscribed to trades.BTC-PERPETUAL.* sees every trade_seq
exactly once, in order, across an upstream drop during which the market
kept trading (exsim refuses the reconnect for a while); the gateway
fetched the gap with public/get_last_trades_by_instrument. When that
fetch is still unanswered as the connection drops again, the next
connection fetches everything after the last delivered trade (it used to
send the fetch on the dead connection and hold the channel's trades for
good).

Then the bound on what is held meanwhile: exsim answers that fetch only
after 6 s (`delay`), while the market trades on. At 1000 held messages
the gateway gives up on the fetch: it delivers what it held, in order,
the missed range stays a hole (logged), no second fetch starts for it,
and the late answer changes nothing: every trade_seq still arrives once,
in order. Last, a given-up fetch whose answer comes while a later fetch
(a stale resubscribe, same connection) is in flight: the later fetch
still fills its own hole (it did not before fetches were tagged).
"""

import asyncio
import time

import gateway_harness as gh
from gateway_harness import check, WSClient, TCPClient

CH = "trades.BTC-PERPETUAL.100ms"
UPSTREAM = """    protocol deribit;
    reconnect fixed { delay 200ms; }
    stale trades.* 1s;
"""


FETCHES = "missed during the outage: backfilling"


def fetches(h):
    return len(h.log_lines(FETCHES))


def seqs(client):
    return gh.trade_seqs(client, CH)


def contiguous(s, name):
    for a, b in zip(s, s[1:]):
        check(b == a + 1, "%s: trade_seq %d after %d" % (name, b, a))


def check_holes(c, n):
    """C's trade_seq only ever goes up, with N holes (the N ranges whose
    backfill was given up)."""
    holes = gh.seq_holes(c, CH)
    check(len(holes) == n, "%s: %d holes expected (the ranges given up), "
          "got %r" % (c.name, n, holes[:5]))


async def outage(h):
    """An outage of about a second during which the market trades; returns
    once the gateway has sent the backfill for it."""
    before = fetches(h)
    h.control("refuse on")
    h.control("drop")
    h.wait_up(lambda u: u["state"] != "ready", 5, "upstream down")
    await asyncio.sleep(1.0)             # the market trades on meanwhile
    h.control("refuse off")
    gh.uh.wait_for(lambda: fetches(h) > before, 10, what="the backfill")


async def outage_then_give_up(h):
    """An outage, then bursts until its backfill (answered late by exsim)
    is given up at 1000 held messages. Returns when that backfill was
    sent."""
    given_up = len(h.log_lines("backfill too slow, releasing"))
    await outage(h)
    sent = time.monotonic()
    bursts = 0
    while (len(h.log_lines("backfill too slow, releasing")) == given_up
           and bursts < 40):
        h.control("burst 500")
        bursts += 1
        await asyncio.sleep(0.1)
    check(len(h.log_lines("backfill too slow, releasing")) > given_up,
          "no release after %d bursts of 500 market steps" % bursts)
    return sent


async def body(h):
    gh.start(h, UPSTREAM, "client_auth off;\n",
             sim_args=("--rate", "200", "--no-aggregate", "--no-rate-limit"))
    gh.wait_ready(h)
    a = await WSClient("ws-a").connect(h.ws_url)
    t = await TCPClient("tcp-t").connect(h.tcp_port)
    for c in (a, t):
        r = await c.call("public/subscribe", {"channels": [CH]}, id=1)
        check(r["result"] == [CH], "subscribe %r" % r)
    await a._wait(lambda: len(seqs(a)) >= 20, 10, "20 trades")
    h.control("refuse on")
    h.control("drop")
    h.wait_up(lambda u: u["state"] != "ready", 5, "upstream down")
    await asyncio.sleep(1.0)             # the market trades on meanwhile
    h.control("refuse off")
    n = len(seqs(a))
    await a._wait(lambda: len(seqs(a)) >= n + 60, 10, "trades after")
    await t._wait(lambda: len(seqs(t)) >= n + 60, 10, "trades after")
    for c in (a, t):
        contiguous(seqs(c), c.name)
    check(h.log_lines("missed during the outage: backfilling"),
          "no backfill happened (did the market trade during the outage?)")
    check(h.log_lines("trades backfilled"), "backfill answer logged")

    # a backfill in flight when the connection drops again: what was held
    # stays held, and on the next connection everything after the last
    # delivered trade is fetched (the dead range and the new outage's);
    # the stream neither stops nor skips
    h.control("delay public/get_last_trades_by_instrument 1500")
    answers = len(h.log_lines("trades backfilled"))
    await outage(h)
    before = fetches(h)
    h.control("drop")                    # the backfill dies with it
    h.wait_up(lambda u: u["state"] != "ready", 5, "upstream down")
    gh.uh.wait_for(lambda: h.log_lines("trades from \\d+ on missed"), 10,
                   what="the backfill sent again")
    gh.uh.wait_for(lambda: len(h.log_lines("trades backfilled")) > answers,
                   10, what="its answer")
    h.control("delay public/get_last_trades_by_instrument 0")
    n = len(seqs(a))
    await a._wait(lambda: len(seqs(a)) >= n + 60, 10, "trades after")
    await t._wait(lambda: len(seqs(t)) >= n + 60, 10, "trades after")
    for c in (a, t):
        contiguous(seqs(c), c.name)

    # the fetch takes too long: the held messages hit DR_TRADES_MAX_HELD
    h.control("delay public/get_last_trades_by_instrument 6000")
    before = fetches(h)
    await outage_then_give_up(h)
    await asyncio.sleep(6.5)             # the late answer has come and gone
    n = len(seqs(a))
    await a._wait(lambda: len(seqs(a)) >= n + 40, 10, "trades after")
    await t._wait(lambda: len(seqs(t)) >= n + 40, 10, "trades after")
    for c in (a, t):
        check_holes(c, 1)
    check(fetches(h) == before + 1,
          "a second fetch started for the hole given up: %r"
          % h.log_lines("backfilling"))

    # A given-up fetch's late answer must not be taken for a later fetch's
    # on the same connection: fetch 1 (answered after 6 s) is given up,
    # then a stale resubscribe (the channel muted) starts fetch 2
    # (answered after 6 s too), and fetch 1's answer comes while fetch 2
    # is in flight. Fetch 2's trades must still fill its hole.
    t1 = await outage_then_give_up(h)
    before = fetches(h)
    h.control("mute %s on" % CH)
    stale0 = h.up()["stale_resubscribes"]
    h.wait_up(lambda u: u["stale_resubscribes"] > stale0, 10,
              "stale resubscribe")
    gh.uh.wait_for(lambda: fetches(h) > before, 10, what="fetch 2")
    check(time.monotonic() - t1 < 5.5, "fetch 2 started %.1f s after fetch "
          "1: its answer would not be in flight yet" % (time.monotonic() - t1))
    answers = len(h.log_lines("trades backfilled"))
    gh.uh.wait_for(lambda: len(h.log_lines("trades backfilled")) > answers,
                   15, what="fetch 2's answer")
    h.control("delay public/get_last_trades_by_instrument 0")
    n = len(seqs(a))
    await a._wait(lambda: len(seqs(a)) >= n + 40, 10, "trades after")
    check_holes(a, 2)
    await a.close()
    await t.close()


gh.run("gateway_trades", body)
