"""An edge reads only the channels that have news (issue 17, the bell):
a real redis-server, exsim, a core exgate (`publish`) and one edge with one
WebSocket bot holding 2 live channels (the BTC book and trades) and 300
quiet ones (tickers of instruments exsim does not list: the core asks for
them, exsim leaves them out, nothing is ever written on them).

The core rings PREFIX:sim:bell after each loop pass that wrote entries,
naming their channels and carrying their entries when they are few and
small; the edge delivers those from the bell and names in its XREAD the
bell, its answer stream, and the channels a bell named without carrying
them. Checked over 3 s of Redis' MONITOR: the edge's XREADs (at least
20: the book alone is 10 a second) name at most 4 streams, at least 90 %
of them (each named all 302 channels before the bell), and the bell in
90 %; more than 20 entries came from bells. With the book alone: one
XREAD per book note (at most 1.5 per note), 80 % of them naming the bell
and the answers only, 80 % of the notes carried. Trades subscribed
again flow. A reload to `carry=0` (in place, no reconnect), and 150
option books ticking together: every entry read from the streams the
bells named, none carried, the books' chains unbroken. Then a Redis restart: the bell is gone with Redis (the core's next bell says
"all", the edge reads every channel once: /status all_reads grows) and
both channels go on: the book one unbroken change_id chain, trade_seqs
without a hole.

Skips (exit 77) only when /usr/bin/redis-server is missing.
"""

import asyncio
import re
import socket
import time

import gateway_harness as gh
from gateway_harness import check
import edge_harness as eh
from test_publish_redis import Resp, carried_entries

BOOK = "book.BTC-PERPETUAL.100ms"
TRADES = "trades.BTC-PERPETUAL.100ms"
QUIET = ["ticker.QZ%03d-PERPETUAL.100ms" % i for i in range(300)]
STRIKES = ["BTC-25DEC26-%d-C" % (50000 + 1000 * i) for i in range(150)]
OPTS = ["book.%s.100ms" % s for s in STRIKES]


def monitor_xreads(port, key, seconds, raw=None):
    """The XREADs naming KEY (the edge's answer stream) that Redis ran in
    SECONDS: (the number of streams each named, whether it named BELL);
    MONITOR's lines appended to RAW, a list, if given."""
    s = socket.create_connection(("127.0.0.1", port), timeout=5)
    s.sendall(b"*1\r\n$7\r\nMONITOR\r\n")
    buf = b""
    end = time.monotonic() + seconds
    s.settimeout(0.2)
    while time.monotonic() < end:
        try:
            d = s.recv(1 << 20)
        except socket.timeout:
            continue
        if not d:
            break
        buf += d
    s.close()
    out = []
    if raw is not None:
        raw.extend(buf.split(b"\r\n"))
    for line in buf.split(b"\r\n"):
        if b'"XREAD"' not in line or key.encode() not in line:
            continue
        # +TS [DB ADDR] "XREAD" "COUNT" "N" "BLOCK" "MS" "STREAMS" k.. id..
        nargs = line.count(b'" "') + 1
        out.append(((nargs - 6) // 2, b':bell"' in line))
    return out


def unquote(q):
    """An argument as Redis' MONITOR quotes it (sdscatrepr())."""
    esc = {b"n": b"\n", b"r": b"\r", b"t": b"\t", b"a": b"\a",
           b"b": b"\b", b"\\": b"\\", b'"': b'"'}
    return re.sub(rb'\\(x[0-9a-f]{2}|.)',
                  lambda m: (bytes([int(m.group(1)[1:], 16)])
                             if len(m.group(1)) == 3
                             else esc.get(m.group(1), m.group(1))), q)


def bell_order(lines):
    """(before, after): of the bells that carried entries, how many Redis
    ran before the XADD of the first entry they carry, and how many
    after it."""
    at = {}
    for i, ln in enumerate(lines):
        m = re.search(rb'"XADD" "[^"]*:sim:([^"]+)" "MAXLEN" "~" "\d+" '
                      rb'"(\d+)-0" "seq"', ln)
        if m:
            at[(m.group(1), m.group(2))] = i
    before = after = 0
    for i, ln in enumerate(lines):
        # the carried entries: field "e", as MONITOR quotes it
        m = re.search(rb'"XADD" "[^"]*:sim:bell" .* "e" "((?:[^"\\]|\\.)*)"',
                      ln)
        if not m:
            continue
        first = carried_entries(unquote(m.group(1)))[0]
        k = (first[0].encode(), b"%d" % first[1])
        if k in at:
            if at[k] > i:
                before += 1
            else:
                after += 1
    return before, after


def chain_ok(c):
    b = gh.Book(c.name, BOOK)
    b.feed(c, 0)
    return b


def trades_ok(c, since=0):
    seqs = gh.trade_seqs(c, TRADES)[since:]
    check(seqs == list(range(seqs[0], seqs[0] + len(seqs))),
          "%s: trade_seq holes: %r" % (c.name, [
              (a, b) for a, b in zip(seqs, seqs[1:]) if b != a + 1][:5]))
    return len(seqs)


async def body(h):
    t0 = time.monotonic()
    redis, edge, bot = await eh.core_edge_bot(
        h, "client_max_channels 1000;\n",
        sim_args=("--instruments", ",".join(["BTC-PERPETUAL"] + STRIKES)))
    r = await bot.call("public/subscribe",
                       {"channels": [BOOK, TRADES] + QUIET}, id=2,
                       timeout=10)
    check(len(r.get("result", [])) == 302, "subscribe: %r" % str(r)[:300])
    await bot.wait_notes(BOOK, 5, timeout=15)
    edge.wait_up(lambda u: u["edge"]["channels"] == 302
                 and u["edge"]["channels_waiting"] == 0, 10, "302 read")

    ans = "%s:sim:ans:edge1" % eh.PREFIX
    loop = asyncio.get_running_loop()
    lines = []
    xr = await loop.run_in_executor(None, monitor_xreads, redis.port, ans,
                                    3.0, lines)
    # a bell that carries goes before its entries' XADDs
    bo = bell_order(lines)
    check(bo[0] >= 10 and bo[1] == 0, "carrying bells before / after "
          "their entries' XADDs: %r" % (bo,))
    n = [k for k, _ in xr]
    small = sum(1 for k in n if k <= 4)
    check(len(n) >= 20, "only %d XREADs of the edge in 3 s" % len(n))
    check(small >= 0.9 * len(n), "XREADs naming at most 4 streams: %d of "
          "%d (streams named: %r)" % (small, len(n), sorted(n)[-10:]))
    check(sum(1 for _, b in xr if b) >= 0.9 * len(xr),
          "the bell named in %d of %d XREADs" % (sum(1 for _, b in xr if b),
                                                 len(xr)))
    st = edge.up()["edge"]
    check(st["bells"] > 20 and st["bell_gaps"] == 0,
          "edge bells %r gaps %r" % (st["bells"], st["bell_gaps"]))
    check(st["entries_carried"] > 20, "entries delivered from the bell: %r"
          % st["entries_carried"])
    rc = Resp(redis.port)
    info = rc.cmd("INFO", "commandstats").decode()
    rc.close()
    xread = [ln for ln in info.splitlines() if ln.startswith("cmdstat_xread:")]

    # the book alone (10 a second): each entry carried by its bell, one
    # XREAD each (the bell and the answers), no second read
    r = await bot.call("public/unsubscribe", {"channels": [TRADES] + QUIET},
                       id=3, timeout=10)
    check(len(r.get("result", [])) == 301, "unsubscribe: %r" % str(r)[:300])
    edge.wait_up(lambda u: u["edge"]["channels"] == 1, 10, "1 channel")
    await asyncio.sleep(0.5)
    c0, nb0 = edge.up()["edge"]["entries_carried"], bot.count(BOOK)
    xr1 = await loop.run_in_executor(None, monitor_xreads, redis.port, ans,
                                     2.0)
    c1, nb1 = edge.up()["edge"]["entries_carried"], bot.count(BOOK)
    two = sum(1 for k, b in xr1 if b and k == 2)
    check(len(xr1) >= 10 and two >= 0.8 * len(xr1)
          and len(xr1) <= 1.5 * (nb1 - nb0) + 3,
          "the book alone: %d XREADs for %d book notes, %d of them naming "
          "the bell and the answers only: %r"
          % (len(xr1), nb1 - nb0, two, xr1[:20]))
    check(c1 - c0 >= 0.8 * (nb1 - nb0), "carried %d of %d book notes"
          % (c1 - c0, nb1 - nb0))
    # a cold channel again: the bell is read again from its end
    t_since = len(gh.trade_seqs(bot, TRADES))
    r = await bot.call("public/subscribe", {"channels": [TRADES]}, id=4)
    check(r.get("result") == [TRADES], "subscribe again: %r" % r)
    await bot._wait(lambda: len(gh.trade_seqs(bot, TRADES)) >= t_since + 3,
                    15, "trades after subscribing again")
    st = edge.up()["edge"]

    # bells that carry nothing (a reload to carry=0, applied in place:
    # the publisher stays connected): 150 option books ticking together,
    # every entry read from the streams the bells name. (Whether one loop
    # pass of the core writes more than the default 128 depends on how
    # exsim's writes and the core's reads interleave: not a test.)
    connects = h.up()["publish"]["connects"]
    eh.rewrite_core_conf(h, "prefix=%s;" % eh.PREFIX,
                         "prefix=%s carry=0;" % eh.PREFIX)
    h.wait_up(lambda u: u["publish"]["carry"] == 0, 10, "carry=0 applied")
    check(h.up()["publish"]["connects"] == connects,
          "carry= reconnected the publisher")
    r = await bot.call("public/subscribe", {"channels": OPTS}, id=5,
                       timeout=10)
    check(len(r.get("result", [])) == len(OPTS), "subscribe options: %r"
          % str(r)[:300])
    await bot.wait_notes(OPTS[-1], 3, timeout=15)
    e0, no = edge.up()["edge"], bot.count(OPTS[0])
    await bot.wait_notes(OPTS[0], no + 10, timeout=15)
    e1 = edge.up()["edge"]
    took = e1["entries"] - e0["entries"]
    carried = e1["entries_carried"] - e0["entries_carried"]
    check(took >= 150 * 5 and carried == 0, "150 books, carry=0: %d "
          "entries, %d of them carried" % (took, carried))
    for o in (OPTS[0], OPTS[-1]):
        b = gh.Book(bot.name, o)
        b.feed(bot, 0)
        check(b.snapshots >= 1, "%s: no book snapshot" % o)

    # Redis restarts: the bell starts again from the core's next, which
    # names all channels; the edge reads everything once and goes on
    reads0 = st["all_reads"]
    nb, nt = bot.count(BOOK), len(gh.trade_seqs(bot, TRADES))
    redis.restart()
    edge.wait_up(lambda u: u["edge"]["all_reads"] > reads0, 10,
                 "every channel read after the restart")
    await bot.wait_notes(BOOK, nb + 20, timeout=15)
    await bot._wait(lambda: len(gh.trade_seqs(bot, TRADES)) >= nt + 2, 15,
                    "trades after the restart")
    b = chain_ok(bot)
    check(b.snapshots >= 1, "no book snapshot")
    ntr = trades_ok(bot, t_since)
    check(bot.closed is None, "bot closed %r" % (bot.closed,))
    await bot.close()
    edge.stop()
    print("edge XREADs in 3 s: %d, streams named: median %d, max %d; "
          "%d carrying bells ran before their entries' XADDs, %d after; "
          "the book alone: %d XREADs naming 2 streams of %d; "
          "%s; book notes %d, trades %d in order; %.1f s"
          % (len(n), sorted(n)[len(n) // 2], max(n), bo[0], bo[1], two,
             len(xr1),
             xread[0] if xread else "-", bot.count(BOOK), ntr,
             time.monotonic() - t0))


if __name__ == "__main__":
    eh.run("edge_bell", body, 90)
