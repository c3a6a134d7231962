"""exsim: bench mode. --bench SIZE publishes SIZE-byte notifications on
bench.N carrying a sequence number and the CLOCK_MONOTONIC send time, flat
out at rate 0 (without starving the loop: the control port and requests
still answer) or at a set rate; `burst N` sends N per channel; flat out
paced by `credit N` sends exactly the credit given, then waits for more,
until `credit -1`.
"""
import asyncio
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from exsim_util import Exsim, check, main, run  # noqa: E402

import websockets  # noqa: E402

SIZE = 300


async def count_for(ws, secs, after_ns):
    """Bench messages sent at or after AFTER_NS that arrive within SECS."""
    n = 0
    end = time.monotonic() + secs
    while True:
        left = end - time.monotonic()
        if left <= 0:
            return n
        try:
            m = json.loads(await asyncio.wait_for(ws.recv(), left))
        except asyncio.TimeoutError:
            return n
        ch = m.get("params", {}).get("channel", "")
        if ch.startswith("bench.") and m["params"]["data"]["ts_ns"] >= after_ns:
            n += 1


async def take(ws, n, channel, after_ns=0, timeout=20):
    """The next N messages of CHANNEL sent at or after AFTER_NS."""
    async def loop():
        msgs = []
        while len(msgs) < n:
            raw = await ws.recv()
            m = json.loads(raw)
            if (m.get("params", {}).get("channel") == channel
                    and m["params"]["data"]["ts_ns"] >= after_ns):
                msgs.append((raw, m))
        return msgs
    return await asyncio.wait_for(loop(), timeout)


def seq_ok(msgs):
    seqs = [m["params"]["data"]["seq"] for _, m in msgs]
    return seqs == list(range(seqs[0], seqs[0] + len(seqs)))


def test():
    with Exsim("--bench", str(SIZE), "--rate", "0") as sim:
        async def go():
            ws = await websockets.connect(sim.url(), max_size=1 << 24)
            await ws.send(json.dumps({"jsonrpc": "2.0", "id": 1,
                                      "method": "public/subscribe",
                                      "params": {"channels": [
                                          "bench.0", "bench.1", "bench.x",
                                          "bench.1024", "bench.01"]}}))
            r = json.loads(await ws.recv())
            check(r["result"] == ["bench.0", "bench.1"], "subscribe %r" % r)
            t0 = time.monotonic()
            msgs = await take(ws, 20000, "bench.0")
            took = time.monotonic() - t0
            now = time.monotonic_ns()
            check(all(len(raw) == SIZE for raw, _ in msgs),
                  "sizes %r" % {len(raw) for raw, _ in msgs})
            check(seq_ok(msgs), "bench.0 seq not contiguous")
            ts = [m["params"]["data"]["ts_ns"] for _, m in msgs]
            check(ts == sorted(ts) and 0 < now - ts[-1] < 10 ** 10,
                  "ts_ns monotonic and recent")
            sys.stderr.write("bench flat out: %.0f msg/s into one python"
                             " client (both channels)\n" % (40000 / took))
            # the loop is not starved: control and requests answer fast
            t1 = time.monotonic()
            st = sim.stats()
            check(time.monotonic() - t1 < 1.0, "stats slow under flat out")
            check(st["subscribed"] == {"bench.0": 1, "bench.1": 1},
                  "subscribed %r" % st)
            # Judged by when exsim read the request (its usIn, the same
            # wall clock), not by when this client, reading through the
            # backlog of bench messages queued before the answer, sees it.
            t2 = time.time()
            await ws.send(json.dumps({"jsonrpc": "2.0", "id": 2,
                                      "method": "public/get_time"}))
            async def answer():
                while True:
                    m = json.loads(await ws.recv())
                    if m.get("id") == 2:
                        return m
            m = await asyncio.wait_for(answer(), 20)
            waited = m["usIn"] / 1e6 - t2
            check(waited < 2.0, "request starved: read after %.2fs" % waited)

            # at a set rate: about that many a second per channel, judged
            # by the send times (the backlog of flat out is skipped)
            check(sim.control("rate 100")["ok"], "rate 100")
            t3 = time.monotonic_ns() + 300 * 10 ** 6
            got = await take(ws, 151, "bench.1", after_ns=t3)
            span = (got[-1][1]["params"]["data"]["ts_ns"]
                    - got[0][1]["params"]["data"]["ts_ns"]) / 1e9
            check(1.2 < span < 2.2, "150 at rate 100 spanned %.2fs" % span)
            check(seq_ok(got), "bench.1 seq at rate")
            sim.control("rate 0.001")
            t4 = time.monotonic_ns()
            check(sim.control("burst 50")["updates"] == 50, "burst")
            got = await take(ws, 50, "bench.0", after_ns=t4)
            check(seq_ok(got), "burst seq")

            # flat out paced by credit: exactly what was granted goes out
            check(sim.control("credit 30")["credit"] == 30, "credit 30")
            await count_for(ws, 0.3, 0)         # the rest of the burst
            t5 = time.monotonic_ns()
            check(sim.control("rate 0")["ok"], "rate 0")
            n = await count_for(ws, 0.7, t5)
            check(n == 30, "credit 30 let %d through" % n)
            check(sim.control("credit 10")["ok"], "credit 10")
            n = await count_for(ws, 0.7, t5)
            check(n == 10, "credit 10 more let %d through" % n)
            check(sim.control("credit -1")["credit"] == -1, "credit -1")
            got = await take(ws, 2000, "bench.0", after_ns=t5)
            check(seq_ok(got), "flat out again after credit -1")
            check(sim.control("credit x").get("ok") is False, "credit x")
            sim.control("rate 0.001")
            await ws.close()

        run(go())


main(test)
