"""A channel that starts between a carrying bell and its entries' XADDs
(issue 17, the bell; review of "the bell before its entries").

The core sends a bell that carries a pass's entries before the entries'
XADDs. An edge that starts a channel (a bot's subscribe: HGETALL of the
book's snapshot, then one XREAD from its seq) after Redis ran that bell
but before it ran the XADDs never saw the bell as the channel's, and its
one read finds the stream without the carried entry; if that read returns
at once (the stream has entries after an older snapshot) the channel is
not named again until its next entry: a quiet channel's entry waits for
the next one.

The test plays the core (SIGSTOP) with a raw book a first bot holds: a
pass (bell carrying entry L+1, then its XADD), then a bell carrying entry
L+2; a second bot subscribes the book; 0.6 s later the XADD of L+2, then
the core's next (empty) bells. The second bot must get L+2 within 1.5 s
of its XADD (the edge reads every channel only after 3 s without a bell).

Skips (exit 77) only when /usr/bin/redis-server is missing.
"""

import asyncio
import json
import os
import signal
import time

from gateway_harness import check, Fail, WSClient
import edge_harness as eh
from test_publish_redis import Resp, carried

BOOK = "book.BTC-PERPETUAL.raw"


async def body(h):
    os.environ["XG_TEST_EXSIM_SECRET"] = "exsim-secret"
    redis, edge, bot = await eh.core_edge_bot(
        h, "", core_extra="    auth client_credentials exsim "
        "env:XG_TEST_EXSIM_SECRET;\n")
    r = await bot.call("public/subscribe", {"channels": [BOOK]}, id=2)
    check(r.get("result") == [BOOK], "subscribe: %r" % r)
    await bot.wait_notes(BOOK, 5, timeout=15)
    await asyncio.sleep(1.5)    # a snapshot in Redis
    # the edge lets the book go (the core keeps publishing it while the
    # interest lasts)
    r = await bot.call("public/unsubscribe", {"channels": [BOOK]}, id=3)
    check(r.get("result") == [BOOK], "unsubscribe: %r" % r)
    await asyncio.sleep(0.3)
    bot2 = await WSClient("bot2").connect(edge.ws_url)
    r = await bot2.call("public/auth", {
        "grant_type": "client_credentials", "client_id": "bot",
        "client_secret": "bot-secret"}, id=1)
    check("result" in r, "auth %r" % r)

    os.kill(h.gate.pid, signal.SIGSTOP)
    try:
        await asyncio.sleep(0.3)
        rc = Resp(redis.port)
        epoch = rc.cmd("GET", "%s:sim:epoch" % eh.PREFIX).decode()
        bell = "%s:sim:bell" % eh.PREFIX
        key = "%s:sim:%s" % (eh.PREFIX, BOOK)
        n = int(rc.cmd("XREVRANGE", bell, "+", "-", "COUNT", "1")[0][0]
                .split(b"-")[0])
        last = rc.cmd("XREVRANGE", key, "+", "-", "COUNT", "1")[0]
        seq = int(last[0].split(b"-")[0])
        f = last[1]
        note = json.loads(f[f.index(b"data") + 1])
        cid = note["params"]["data"]["change_id"]

        def entry(k):
            m = json.loads(json.dumps(note))
            d = m["params"]["data"]
            d["prev_change_id"] = cid + k - 1
            d["change_id"] = cid + k
            d["bids"] = []
            d["asks"] = []
            return json.dumps(m)

        def ms():
            return str(int(time.time() * 1000))

        def xadd(k):
            rc.cmd("XADD", key, "%d-0" % (seq + k), "seq", str(seq + k),
                   "epoch", epoch, "ts", ms(), "data", entry(k))

        def ring(b, k):
            rc.cmd("XADD", bell, "%d-0" % b, "epoch", epoch, "ts", ms(),
                   "ch", BOOK, "e", carried((BOOK, seq + k, entry(k))))

        # a whole pass: bell carrying L+1, then its XADD
        ring(n + 1, 1)
        xadd(1)
        # the next pass's bell, carrying L+2; its XADD not yet run
        ring(n + 2, 2)
        await asyncio.sleep(0.2)
        r = await bot2.call("public/subscribe", {"channels": [BOOK]}, id=2)
        check(r.get("result") == [BOOK], "subscribe: %r" % r)
        await bot2._wait(lambda: any(
            m["params"]["data"].get("change_id") == cid + 1
            for c, m in bot2.notes if c == BOOK), 3,
            "entry L+1 (its first read, from an older snapshot)")
        await asyncio.sleep(0.6)
        xadd(2)
        t0 = time.monotonic()
        # the core's next bell (an empty one: a quiet core)
        rc.cmd("XADD", bell, "%d-0" % (n + 3), "epoch", epoch, "ts", ms(),
               "idle", "1")

        def has():
            return any(m["params"]["data"].get("change_id") == cid + 2
                       for c, m in bot2.notes if c == BOOK)
        try:
            await bot2._wait(has, 1.5, "L+2")
        except Fail:
            pass
        dt = time.monotonic() - t0
        got = has()
        rc.close()
        check(got, "bot2 (started the book after the bell) did not get "
              "L+2 within %.2f s of its XADD" % dt)

        # the edge's lag (/status edge.lag_ms) from the entries a bell
        # carries: the bell's ts, read once for the first new one (an
        # entry seen before it does not count)
        def ring_at(b, ts, *ks):
            rc.cmd("XADD", bell, "%d-0" % b, "epoch", epoch, "ts", ts,
                   "ch", BOOK, "e", carried(*[(BOOK, seq + k, entry(k))
                                              for k in ks]))

        def got_k(k):
            return lambda: any(
                m["params"]["data"].get("change_id") == cid + k
                for c, m in bot2.notes if c == BOOK)
        rc = Resp(redis.port)
        ring_at(n + 4, str(int(time.time() * 1000) - 5000), 3)
        await bot2._wait(got_k(3), 3, "L+3 from its bell")
        lag_old = edge.up()["edge"]["lag_ms"]
        ring_at(n + 5, str(int(time.time() * 1000) - 20000), 2)
        ring_at(n + 6, ms(), 3, 4)
        await bot2._wait(got_k(4), 3, "L+4 from its bell")
        lag_new = edge.up()["edge"]["lag_ms"]
        rc.close()
        check(4500 <= lag_old < 15000 and lag_new < 1000,
              "lag from a bell 5 s old %r ms, then from a bell with only a "
              "seen entry 20 s old and a bell of now %r ms"
              % (lag_old, lag_new))
    finally:
        os.kill(h.gate.pid, signal.SIGCONT)
    await bot.close()
    await bot2.close()
    edge.stop()
    print("a book started between its carrying bell and the XADD: the "
          "entry delivered %.2f s after the XADD; lag from carried entries "
          "%d ms (a bell 5 s old), then %d ms" % (dt, lag_old, lag_new))


if __name__ == "__main__":
    eh.run("edge_start_bell", body, 60)
