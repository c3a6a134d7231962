"""An edge further behind than the bell keeps (issue 17, the bell).

The core keeps up to 2000 small bells (MAXLEN ~ 2000). An edge stopped
(SIGSTOP) while the core rings 2600 more finds, when it goes on, that the
bell after the last one it read is gone: a hole in the bell numbers. It
counts it (/status edge.bell_gaps), reads every channel once (all_reads)
from the last seq it delivered, and its bot sees nothing but the entries
in order: the raw book's change_id chain unbroken, every trade_seq once
and in order, no close, no gap notice. The channels' own streams
(maxlen 10000: 10 s of the raw book) still hold what the edge missed, so nothing is rebuilt.

Skips (exit 77) only when /usr/bin/redis-server is missing.
"""

import os
import signal
import time

import gateway_harness as gh
from gateway_harness import check
import edge_harness as eh
from test_publish_redis import Resp

BOOK = eh.RAW_BOOK
TRADES = eh.RAW_TRADES
BEHIND = 2600


def bell_ids(port):
    """(XLEN, first N, last N) of the bell stream."""
    rc = Resp(port)
    key = "%s:sim:bell" % eh.PREFIX
    n = rc.cmd("XLEN", key)
    first = rc.cmd("XRANGE", key, "-", "+", "COUNT", "1")
    last = rc.cmd("XREVRANGE", key, "+", "-", "COUNT", "1")
    rc.close()
    return (n, int(first[0][0].split(b"-")[0]),
            int(last[0][0].split(b"-")[0]))


async def body(h):
    redis, edge, bot = await eh.raw_book_bot(h)

    e0 = edge.up()["edge"]
    os.kill(edge.proc.pid, signal.SIGSTOP)
    try:
        _, _, at_stop = bell_ids(redis.port)
        b0 = h.up()["publish"]["bells"]
        end = time.monotonic() + 20
        while h.up()["publish"]["bells"] < b0 + BEHIND:
            check(time.monotonic() < end, "the core rang %d bells in 20 s"
                  % (h.up()["publish"]["bells"] - b0))
            time.sleep(0.2)
        xlen, first, last = bell_ids(redis.port)
        check(first > at_stop + 1 and xlen < BEHIND,
              "the bell was not trimmed past the edge: %d bells, ids %d to "
              "%d, %d when the edge stopped" % (xlen, first, last, at_stop))
        nb, nt = bot.count(BOOK), len(gh.trade_seqs(bot, TRADES))
    finally:
        os.kill(edge.proc.pid, signal.SIGCONT)
    edge.wait_up(lambda u: u["edge"]["bell_gaps"] > e0["bell_gaps"]
                 and u["edge"]["all_reads"] > e0["all_reads"], 10,
                 "the hole in the bell seen, every channel read")
    await bot.wait_notes(BOOK, nb + 200, timeout=15)
    await bot._wait(lambda: len(gh.trade_seqs(bot, TRADES)) >= nt + 3, 15,
                    "trades after the hole")
    h.control("rate 10")
    b = gh.Book(bot.name, BOOK)
    b.feed(bot, 0)
    check(b.snapshots == 1, "the book was rebuilt: %d snapshots"
          % b.snapshots)
    check(gh.seq_holes(bot, TRADES) == [], "trade_seq holes: %r"
          % gh.seq_holes(bot, TRADES)[:5])
    gaps = [m for m in bot.other
            if isinstance(m, dict) and m.get("method") == "exgate/gap"]
    check(gaps == [], "gap notices: %r" % gaps[:3])
    check(bot.closed is None, "bot closed %r" % (bot.closed,))
    e1 = edge.up()["edge"]
    await bot.close()
    edge.stop()
    print("edge stopped while the core rang %d bells (the bell stream kept "
          "%d, ids %d to %d; the edge had %d): bell_gaps +%d, all_reads +%d;"
          " %d book notes in one chain, %d trades in order"
          % (BEHIND, xlen, first, last, at_stop,
             e1["bell_gaps"] - e0["bell_gaps"],
             e1["all_reads"] - e0["all_reads"], bot.count(BOOK),
             len(gh.trade_seqs(bot, TRADES))))


if __name__ == "__main__":
    eh.run("edge_trimmed_bell", body, 90)
