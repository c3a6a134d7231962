"""An entry whose bell never came is delivered within about a second even
while the edge's XREAD never times out (issue 17, the bell).

The core takes a bell's number whether it writes it or not (no room in
its in-flight bound, the connection gone): an edge learns of a lost bell
from the hole before the next one, or, when none comes, from a second
without any bell (the XREAD's nil: every channel is read once). A bot
that polls (public/get_time every 300 ms, answered on the edge's answer
stream) keeps that XREAD from ever timing out. Here the core's channel
stays silent and the test writes the entry a lost bell would have named,
as the core writes it (id SEQ-0, seq, epoch, ts, data), into the stream
of a channel the bot holds: the bot must get it within 4 s while it
keeps polling.

Skips (exit 77) only when /usr/bin/redis-server is missing.
"""

import asyncio
import json
import os
import sys
import time

import gateway_harness as gh
from gateway_harness import check, WSClient
import edge_harness as eh
from test_publish_redis import Resp

QUIET = "ticker.QW001-PERPETUAL.100ms"
MAIN = "client_credentials bot env:XG_TEST_BOT_SECRET;\n"


async def body(h):
    os.environ["XG_TEST_BOT_SECRET"] = "bot-secret"
    redis = eh.Redis(h)
    eh.start_core(h, redis, main_extra="client_auth off;\n")
    edge = eh.Edge(h, "edge1", redis.port, main_extra=MAIN)
    edge.start()
    edge.wait_up(lambda u: u["state"] == "ready", 10, "ready")
    bot = await WSClient("bot").connect(edge.ws_url)
    r = await bot.call("public/auth", {
        "grant_type": "client_credentials", "client_id": "bot",
        "client_secret": "bot-secret"}, id=1)
    check("result" in r, "auth %r" % r)
    r = await bot.call("public/subscribe", {"channels": [QUIET]}, id=2)
    check(r.get("result") == [QUIET], "subscribe: %r" % r)
    edge.wait_up(lambda u: u["edge"]["channels"] == 1
                 and u["edge"]["channels_waiting"] == 0, 10, "1 read")

    stop = False
    polls = [0]

    async def poll():
        i = 100
        while not stop:
            r = await bot.call("public/get_time", {}, id=i, timeout=10)
            check("result" in r or "error" in r, "get_time: %r" % r)
            polls[0] += 1
            i += 1
            await asyncio.sleep(0.3)

    task = asyncio.create_task(poll())
    await asyncio.sleep(2.0)
    rc = Resp(redis.port)
    epoch = rc.cmd("GET", "%s:sim:epoch" % eh.PREFIX).decode()
    note = {"jsonrpc": "2.0", "method": "subscription",
            "params": {"channel": QUIET, "data": {
                "instrument_name": "QW001-PERPETUAL", "timestamp": 1,
                "last_price": 1.0}}}
    rc.cmd("XADD", "%s:sim:%s" % (eh.PREFIX, QUIET), "1-0", "seq", "1",
           "epoch", epoch, "ts", str(int(time.time() * 1000)),
           "data", json.dumps(note))
    rc.close()
    t0 = time.monotonic()
    reads0 = edge.up()["edge"]["all_reads"]
    try:
        await bot.wait_notes(QUIET, 1, timeout=4)
    finally:
        stop = True
    dt = time.monotonic() - t0
    await task
    st = edge.up()["edge"]
    check(bot.closed is None, "bot closed %r" % (bot.closed,))
    await bot.close()
    edge.stop()
    print("the entry without its bell delivered after %.2f s, %d polls, "
          "%d reads of every channel" % (dt, polls[0],
                                         st["all_reads"] - reads0))


def sync_body(h):
    asyncio.run(asyncio.wait_for(body(h), 60))
    if h.gate is not None and h.gate.poll() is None:
        gh.stop_clean(h)


if __name__ == "__main__":
    if not os.access("/usr/bin/redis-server", os.X_OK):
        sys.stderr.write("SKIP: /usr/bin/redis-server is missing\n")
        sys.exit(77)
    gh.uh.run("edge_lost_bell", sync_body)
