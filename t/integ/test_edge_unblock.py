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
import os
import sys
import time

import gateway_harness as gh
from gateway_harness import check, WSClient
import edge_harness as eh
from test_edge_bell import monitor_xreads

BOOK = "book.BTC-PERPETUAL.100ms"
QUIET = ["ticker.QY%03d-PERPETUAL.100ms" % i for i in range(200)]
EXTRA = "ticker.QX999-PERPETUAL.100ms"
MAIN = "client_credentials bot env:XG_TEST_BOT_SECRET;\n"


async def body(h):
    os.environ["XG_TEST_BOT_SECRET"] = "bot-secret"
    redis = eh.Redis(h)
    eh.start_core(h, redis, main_extra="client_auth off;\n")
    edge = eh.Edge(h, "edge1", redis.port, main_extra=MAIN +
                   "client_max_channels 1000;\n")
    edge.start()
    edge.wait_up(lambda u: u["state"] == "ready", 10, "ready")
    bot = await WSClient("bot").connect(edge.ws_url)
    r = await bot.call("public/auth", {
        "grant_type": "client_credentials", "client_id": "bot",
        "client_secret": "bot-secret"}, id=1)
    check("result" in r, "auth %r" % r)
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


def sync_body(h):
    asyncio.run(asyncio.wait_for(body(h), 90))
    if h.gate is not None and h.gate.poll() is None:
        gh.stop_clean(h)


if __name__ == "__main__":
    if not os.access("/usr/bin/redis-server", os.X_OK):
        sys.stderr.write("SKIP: /usr/bin/redis-server is missing\n")
        sys.exit(77)
    gh.uh.run("edge_unblock", sync_body)
