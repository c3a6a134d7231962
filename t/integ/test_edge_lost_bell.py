"""A quiet core and a silent one, as an edge tells them apart (issue 17,
the bell).

The core rings an empty bell every second when it wrote nothing, so a
lost bell (its number is taken whether it is written or not) shows as a
hole in the numbers within a second, and a quiet core costs nothing:
over 4 s of a quiet channel, with a bot polling (public/get_time every
300 ms, through the core: answers on the edge's answer stream keep its
XREAD from ever timing out), the edge reads at least 2 empty bells and
never every channel. Then the core stops (SIGSTOP: no bells at all) and
the test writes an entry into the stream of the channel the bot holds,
as the core writes it (id SEQ-0, seq, epoch, ts, data) but without a
bell: after 3 s without any bell the edge reads every channel once, and
the bot gets the entry within 6 s. Then, the core still stopped, the
test rings as the core does: a bell carrying entry 3 (entry 2 missing:
the edge cannot take it), an empty bell 0.3 s later, and 0.3 s after
that the XADDs of entries 2 and 3 (a carrying bell goes before its
entries' XADDs): the bot gets 2 and 3 within 1.5 s of the XADDs, with
no read of every channel. Last, a channel started on an empty stream
that never saw entry 1's bell gets a bell carrying entry 2, and the
XADDs of 1 and 2 0.3 s later: the bot gets 1 and 2, in order (not 2
alone, as when a channel with no entry yet took any carried entry as
its first).

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
    await asyncio.sleep(1.0)
    st0 = edge.up()["edge"]
    await asyncio.sleep(4.0)
    st1 = edge.up()["edge"]
    stop = True
    await task
    check(st1["bells"] - st0["bells"] >= 2, "empty bells in 4 s: %d"
          % (st1["bells"] - st0["bells"]))
    check(st1["all_reads"] == st0["all_reads"] and st1["bell_gaps"] == 0,
          "a quiet core made the edge read every channel: %r -> %r"
          % (st0, st1))

    # the core silent: an entry without its bell is found all the same
    os.kill(h.gate.pid, signal.SIGSTOP)
    try:
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
        await bot.wait_notes(QUIET, 1, timeout=6)
        dt = time.monotonic() - t0

        # a bell that carries an entry the edge cannot take (entry 3, 2
        # missing) goes before the entries' XADDs, as the core sends it;
        # an empty bell wakes the edge in between: it reads the channel
        # on until the stream has entry 3, and gets 2 and 3 as soon as
        # they land (not 3 s later, when it would read everything)
        rc = Resp(redis.port)
        bell = "%s:sim:bell" % eh.PREFIX
        key = "%s:sim:%s" % (eh.PREFIX, QUIET)
        n = int(rc.cmd("XREVRANGE", bell, "+", "-", "COUNT", "1")[0][0]
                .split(b"-")[0])
        reads1 = edge.up()["edge"]["all_reads"]

        def entry(seq):
            note["params"]["data"]["last_price"] = float(seq)
            return json.dumps(note)

        def ms():
            return str(int(time.time() * 1000))
        rc.cmd("XADD", bell, "%d-0" % (n + 1), "epoch", epoch, "ts", ms(),
               "ch", QUIET, "e", carried((QUIET, 3, entry(3))))
        await asyncio.sleep(0.3)
        rc.cmd("XADD", bell, "%d-0" % (n + 2), "epoch", epoch, "ts", ms(),
               "idle", "1")
        await asyncio.sleep(0.3)
        for q in (2, 3):
            rc.cmd("XADD", key, "%d-0" % q, "seq", str(q), "epoch", epoch,
                   "ts", ms(), "data", entry(q))
        t1 = time.monotonic()
        await bot.wait_notes(QUIET, 3, timeout=6)
        dt2 = time.monotonic() - t1
        prices = [m["params"]["data"]["last_price"] for ch, m in bot.notes
                  if ch == QUIET]
        check(prices == [1.0, 2.0, 3.0], "entries %r" % prices)
        st2 = edge.up()["edge"]
        check(dt2 < 1.5 and st2["all_reads"] == reads1
              and st2["bell_gaps"] == 0,
              "entries 2 and 3 after %.2f s, %d reads of every channel, "
              "%d bell gaps" % (dt2, st2["all_reads"] - reads1,
                                st2["bell_gaps"]))

        # a channel started on an empty stream (its last seq 0) that
        # missed its entry 1's bell (read while it started): the next bell
        # carries entry 2 before the XADDs of 1 and 2 land; the edge must
        # not take 2 as its first entry, it reads the stream and gets 1
        r = await bot.call("public/subscribe", {"channels": [QUIET2]},
                           id=3)
        check(r.get("result") == [QUIET2], "subscribe: %r" % r)
        edge.wait_up(lambda u: u["edge"]["channels"] == 2
                     and u["edge"]["channels_waiting"] == 0, 10, "2 read")
        await asyncio.sleep(0.3)
        note["params"]["channel"] = QUIET2
        key2 = "%s:sim:%s" % (eh.PREFIX, QUIET2)
        rc.cmd("XADD", bell, "%d-0" % (n + 3), "epoch", epoch, "ts", ms(),
               "ch", QUIET2, "e", carried((QUIET2, 2, entry(2))))
        await asyncio.sleep(0.3)
        for q in (1, 2):
            rc.cmd("XADD", key2, "%d-0" % q, "seq", str(q), "epoch", epoch,
                   "ts", ms(), "data", entry(q))
        rc.close()
        await bot.wait_notes(QUIET2, 2, timeout=3)
        p2 = [m["params"]["data"]["last_price"] for ch, m in bot.notes
              if ch == QUIET2]
        check(p2 == [1.0, 2.0], "entries of a channel started empty: %r"
              % p2)
    finally:
        os.kill(h.gate.pid, signal.SIGCONT)
    st = edge.up()["edge"]
    check(bot.closed is None, "bot closed %r" % (bot.closed,))
    await bot.close()
    edge.stop()
    print("quiet core: %d empty bells in 4 s, %d polls, no read of every "
          "channel; silent core: the entry without its bell delivered "
          "after %.2f s, %d reads of every channel; a carried entry "
          "after a hole: read from the stream %.2f s after its XADD"
          % (st1["bells"] - st0["bells"], polls[0], dt,
             st["all_reads"] - reads0, dt2))


if __name__ == "__main__":
    eh.run("edge_lost_bell", body, 60)
