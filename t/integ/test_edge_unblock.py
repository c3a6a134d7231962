"""A change of the edge's read set wakes its blocked XREAD with CLIENT
UNBLOCK, and that wake must not read every channel (issue 17, the bell).

CLIENT UNBLOCK without a mode unblocks "as if the timeout was reached":
the XREAD answers nil, which the edge takes for "a second without a
bell" and names every channel it holds in its next XREAD. With the bell
the wake should cost one XREAD of the streams with news, not one of all
of them: a bot holding the live BTC book and 200 quiet channels
subscribes and unsubscribes one more quiet channel 10 times (each is
two changes of the read set: its start, its going); /status all_reads
(reads of every channel) must not grow with them, and Redis' MONITOR
must show no XREAD naming all 200 quiet channels meanwhile.

Skips (exit 77) only when /usr/bin/redis-server is missing.
"""

import asyncio

from gateway_harness import check
import edge_harness as eh
from test_edge_bell import monitor_xreads

BOOK = "book.BTC-PERPETUAL.100ms"
QUIET = ["ticker.QY%03d-PERPETUAL.100ms" % i for i in range(200)]
EXTRA = "ticker.QX999-PERPETUAL.100ms"


async def body(h):
    redis, edge, bot = await eh.core_edge_bot(h, "client_max_channels 1000;\n")
    r = await bot.call("public/subscribe", {"channels": [BOOK] + QUIET},
                       id=2, timeout=10)
    check(len(r.get("result", [])) == 201, "subscribe: %r" % str(r)[:300])
    await bot.wait_notes(BOOK, 5, timeout=15)
    edge.wait_up(lambda u: u["edge"]["channels"] == 201
                 and u["edge"]["channels_waiting"] == 0, 10, "201 read")
    await asyncio.sleep(1.0)

    ans = "%s:sim:ans:edge1" % eh.PREFIX
    loop = asyncio.get_running_loop()
    mon = loop.run_in_executor(None, monitor_xreads, redis.port, ans, 5.0)
    await asyncio.sleep(0.3)
    reads0 = edge.up()["edge"]["all_reads"]
    rid = 10
    for _ in range(10):
        r = await bot.call("public/subscribe", {"channels": [EXTRA]}, id=rid)
        check(r.get("result") == [EXTRA], "subscribe: %r" % r)
        edge.wait_up(lambda u: u["edge"]["channels_waiting"] == 0, 5,
                     "the extra channel read")
        await asyncio.sleep(0.15)
        r = await bot.call("public/unsubscribe", {"channels": [EXTRA]},
                           id=rid + 1)
        check(r.get("result") == [EXTRA], "unsubscribe: %r" % r)
        await asyncio.sleep(0.15)
        rid += 2
    reads = edge.up()["edge"]["all_reads"] - reads0
    xr = await mon
    big = [k for k, _ in xr if k >= len(QUIET)]
    check(bot.closed is None, "bot closed %r" % (bot.closed,))
    await bot.close()
    edge.stop()
    print("20 changes of the read set: %d reads of every channel, %d of "
          "%d XREADs naming >= %d streams" % (reads, len(big), len(xr),
                                              len(QUIET)))
    check(reads <= 2, "20 changes of the read set read every channel %d "
          "times" % reads)
    check(len(big) <= 2, "%d of %d XREADs named every channel"
          % (len(big), len(xr)))


if __name__ == "__main__":
    eh.run("edge_unblock", body, 90)
