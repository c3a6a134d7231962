"""The bell keeps about 512 kB of bells, not 2000 of any size (issue 17,
the bell).

A bell that carries a loop pass's entries holds a second copy of them
(the channels' streams have the first). exsim --bench ticks 80 channels
together, 20 times a second: every pass is a bell of about 26 kB that
carries its entries (a pass is what one read of exsim's burst brought:
a bell of 5 to 30 kB). After 4 s (80 bursts) the bell stream holds about
512 kB of bells (each XADD's MAXLEN ~ counts the newest bells that sum
to at most 512 kB, at least 16), not 2000, checked with XLEN, the bells'
own sizes and MEMORY USAGE; the edge, which keeps up,
sees no hole in the bell numbers (bell_gaps 0), delivers the entries from
the bells (entries_carried), and its bot has every channel whole and in
order (data.seq consecutive), with no gap notice and no close.

Skips (exit 77) only when /usr/bin/redis-server is missing.
"""

import asyncio

from gateway_harness import check
import edge_harness as eh
from test_publish_redis import Resp

CH = ["bench.%d" % i for i in range(80)]
RATE = 20
SECONDS = 4


def bell_stream(port):
    """(XLEN, MEMORY USAGE, the size of each bell kept: its names and
    what it carries) of the bell."""
    rc = Resp(port)
    key = "%s:sim:bell" % eh.PREFIX
    n = rc.cmd("XLEN", key)
    mem = rc.cmd("MEMORY", "USAGE", key)
    sizes = []
    for _, f in rc.cmd("XRANGE", key, "-", "+"):
        d = dict(zip(f[::2], f[1::2]))
        sizes.append(len(d.get(b"ch", b"")) + len(d.get(b"e", b"")))
    rc.close()
    return n, mem, sizes


async def body(h):
    redis, edge, bot = await eh.core_edge_bot(h, sim_args=("--bench",
                                                           "300"))
    r = await bot.call("public/subscribe", {"channels": CH}, id=2)
    check(sorted(r.get("result") or []) == sorted(CH), "subscribe: %r"
          % (r,))
    h.control("rate %d" % RATE)
    for ch in CH:
        await bot.wait_notes(ch, 3, timeout=15)
    b0 = h.up()["publish"]["bells"]
    e0 = edge.up()["edge"]
    await asyncio.sleep(SECONDS)
    b1 = h.up()["publish"]["bells"]
    n, mem, sizes = bell_stream(redis.port)
    e1 = edge.up()["edge"]
    h.control("rate 0.001")
    big = sum(1 for x in sizes if x > 4000)
    check(n == len(sizes) and big >= n // 2,
          "the bells do not carry their passes: %d of %d over 4 kB"
          % (big, n))
    check(b1 - b0 >= RATE * SECONDS, "%d bells in %d s" % (b1 - b0,
                                                          SECONDS))
    # each XADD trims to the newest bells that sum to at most 512 kB (at
    # least 16); MAXLEN ~ may keep a few small ones more
    check(16 <= n < b1 - b0 and sum(sizes) <= 512 * 1024 + max(sizes),
          "the bell stream holds %d bells (of %d rung), %d bytes"
          % (n, b1 - b0, sum(sizes)))
    check(mem < 1024 * 1024, "the bell stream takes %d bytes" % mem)
    check(e1["bell_gaps"] == e0["bell_gaps"], "bell gaps %d -> %d"
          % (e0["bell_gaps"], e1["bell_gaps"]))
    carried = e1["entries_carried"] - e0["entries_carried"]
    check(carried >= RATE * SECONDS * len(CH) * 3 // 4,
          "%d entries carried in %d s" % (carried, SECONDS))
    await asyncio.sleep(0.5)
    total = 0
    for ch in CH:
        q = [m["params"]["data"]["seq"] for c, m in bot.notes if c == ch]
        check(q == list(range(q[0], q[0] + len(q))),
              "%s: not whole or not in order: %d notes, first %s"
              % (ch, len(q), q[:3]))
        total += len(q)
    gaps = [m for m in bot.other
            if isinstance(m, dict) and m.get("method") == "exgate/gap"]
    check(gaps == [], "gap notices: %r" % gaps[:3])
    check(bot.closed is None, "bot closed %r" % (bot.closed,))
    await bot.close()
    edge.stop()
    print("%d bells in %d s: the bell stream kept %d of them, %d bytes "
          "(%d bytes in Redis); bell gaps 0; %d entries carried; "
          "%d notes on %d channels, each whole and in order"
          % (b1 - b0, SECONDS, n, sum(sizes), mem, carried, total,
             len(CH)))


if __name__ == "__main__":
    eh.run("edge_bell_keep", body, 90)
