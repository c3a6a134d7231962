"""A carried entry in a bell the edge cannot read in order (issue 17, the
bell): after a hole in the bells' numbers, or past a malformed record.

The core sends a bell that carries entries before their XADDs, and one
that carries 16 or more (sent with nothing unanswered) a whole round
trip before them (src/xg_redis.c, rd_on_bell()). An edge that finds a
hole in the bells' numbers (a bell the core skipped for room, or Redis
refused) reads every channel once; that read may run before the XADDs
of the bell that showed the hole, and return at once with the entries
of the skipped bell's channels, so the carried entries' channels must
still be read until they have them (c->want), or a quiet channel's
entry would wait for its channel's next entry. The same for the entries
of a bell whose records the edge cannot parse: not the core's, but the
edge reads on until a later bell, which Redis ran after that bell's
XADDs.

Played here as the core writes (the core stopped): two quiet channels
held by a bot; entry 1 of the second in its stream without its bell
(bell N+1, skipped), then bell N+2 carrying entry 1 of the first, 0.3 s
before that entry's XADD, and empty bells every 0.3 s: the bot gets the
first channel's entry within 1.5 s of its XADD. Then a bell with a
malformed record before entry 2 of the first channel, entry 2 of the
second already in its stream: the same.

Skips (exit 77) only when /usr/bin/redis-server is missing.
"""

import asyncio
import json
import os
import signal
import time

from gateway_harness import check
import edge_harness as eh
from test_publish_redis import Resp, carried

QUIET = "ticker.QW001-PERPETUAL.100ms"
QUIET2 = "ticker.QW002-PERPETUAL.100ms"


async def body(h):
    redis, edge, bot = await eh.core_edge_bot(h, "")
    r = await bot.call("public/subscribe", {"channels": [QUIET, QUIET2]},
                       id=2)
    check(r.get("result") == [QUIET, QUIET2], "subscribe: %r" % r)
    edge.wait_up(lambda u: u["edge"]["channels"] == 2
                 and u["edge"]["channels_waiting"] == 0, 10, "2 read")
    # past the bell each channel's start fenced (named until then)
    b0 = edge.up()["edge"]["bells"]
    edge.wait_up(lambda u: u["edge"]["bells"] >= b0 + 2, 5, "2 bells")

    os.kill(h.gate.pid, signal.SIGSTOP)
    try:
        rc = Resp(redis.port)
        epoch = rc.cmd("GET", "%s:sim:epoch" % eh.PREFIX).decode()
        bell = "%s:sim:bell" % eh.PREFIX
        n = int(rc.cmd("XREVRANGE", bell, "+", "-", "COUNT", "1")[0][0]
                .split(b"-")[0])

        def ms():
            return str(int(time.time() * 1000))

        def entry(ch, seq):
            return json.dumps({"jsonrpc": "2.0", "method": "subscription",
                               "params": {"channel": ch, "data": {
                                   "instrument_name": ch.split(".")[1],
                                   "timestamp": seq,
                                   "last_price": float(seq)}}})

        def xadd(ch, seq):
            rc.cmd("XADD", "%s:sim:%s" % (eh.PREFIX, ch), "%d-0" % seq,
                   "seq", str(seq), "epoch", epoch, "ts", ms(), "data",
                   entry(ch, seq))

        async def idle_bells(b, count):
            for i in range(count):
                rc.cmd("XADD", bell, "%d-0" % (b + i), "epoch", epoch,
                       "ts", ms(), "idle", "1")
                await asyncio.sleep(0.3)

        async def delivered(b, count):
            """Seconds until QUIET's COUNT-th entry reached the bot (at
            most 1.5), empty bells B, B+1, ... ringing meanwhile."""
            t = time.monotonic()
            bells = asyncio.create_task(idle_bells(b, 7))
            try:
                await bot.wait_notes(QUIET, count, timeout=1.5)
                return time.monotonic() - t
            finally:
                await bells

        def prices(ch):
            return [m["params"]["data"]["last_price"] for c, m in bot.notes
                    if c == ch]

        # 1. a hole: bell N+1 skipped (its entry is in QUIET2's stream),
        # bell N+2 carries QUIET's entry 1, whose XADD lands 0.3 s later
        gaps0 = edge.up()["edge"]["bell_gaps"]
        xadd(QUIET2, 1)
        rc.cmd("XADD", bell, "%d-0" % (n + 2), "epoch", epoch, "ts", ms(),
               "ch", QUIET, "e", carried((QUIET, 1, entry(QUIET, 1))))
        await asyncio.sleep(0.3)
        xadd(QUIET, 1)
        dt1 = await delivered(n + 3, 1)
        check(prices(QUIET2) == [1.0], "%s: %r" % (QUIET2, prices(QUIET2)))
        check(edge.up()["edge"]["bell_gaps"] > gaps0, "no bell gap seen")

        # 2. a malformed record before QUIET's entry 2 (QUIET2's entry 2
        # in its stream already: the read of every channel returns at once)
        xadd(QUIET2, 2)
        rc.cmd("XADD", bell, "%d-0" % (n + 10), "epoch", epoch, "ts", ms(),
               "ch", "%s %s" % (QUIET2, QUIET), "e",
               b"bad record\n" + carried((QUIET, 2, entry(QUIET, 2))))
        await asyncio.sleep(0.3)
        xadd(QUIET, 2)
        dt2 = await delivered(n + 11, 2)
        check(prices(QUIET) == [1.0, 2.0], "%s: %r" % (QUIET, prices(QUIET)))
        check(prices(QUIET2) == [1.0, 2.0], "%s: %r"
              % (QUIET2, prices(QUIET2)))
        rc.close()
    finally:
        os.kill(h.gate.pid, signal.SIGCONT)
    check(bot.closed is None, "bot closed %r" % (bot.closed,))
    await bot.close()
    edge.stop()
    print("a carried entry after a bell hole: delivered %.2f s after its "
          "XADD; after a malformed record: %.2f s" % (dt1, dt2))


if __name__ == "__main__":
    eh.run("edge_gap_bell", body, 60)
