"""An edge reads only the channels that have news (issue 17, the bell):
a real redis-server, exsim, a core exgate (`publish`) and one edge with one
WebSocket bot holding 2 live channels (the BTC book and trades) and 300
quiet ones (tickers of instruments exsim does not list: the core asks for
them, exsim leaves them out, nothing is ever written on them).

The core rings PREFIX:sim:bell after each loop pass that wrote entries,
naming their channels; the edge blocks on the bell and its answer stream
only, and names a channel in its XREAD when a bell named it. Checked over
3 s of Redis' MONITOR: the edge's XREADs (at least 20: the book alone is
10 a second) name the bell, the answer stream and at most the 2 live
channels, at least 90 % of them (each of them named all 302 channels
before the bell); the bot's book is one unbroken change_id chain and
its trade_seqs go on without a hole. Then a Redis restart: the bell is
gone with Redis (the core's next bell says "all", the edge reads every
channel once: /status all_reads grows) and both channels go on, still
without a gap.

Skips (exit 77) only when /usr/bin/redis-server is missing.
"""

import asyncio
import os
import socket
import sys
import time

import gateway_harness as gh
from gateway_harness import check, WSClient
import edge_harness as eh
from test_publish_redis import Resp

BOOK = "book.BTC-PERPETUAL.100ms"
TRADES = "trades.BTC-PERPETUAL.100ms"
QUIET = ["ticker.QZ%03d-PERPETUAL.100ms" % i for i in range(300)]
MAIN = "client_credentials bot env:XG_TEST_BOT_SECRET;\n"


def monitor_xreads(port, bell, seconds):
    """The XREADs naming BELL that Redis ran in SECONDS: the number of
    streams each named (MONITOR lines, parsed)."""
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
    for line in buf.split(b"\r\n"):
        if b'"XREAD"' not in line or bell.encode() not in line:
            continue
        # +TS [DB ADDR] "XREAD" "COUNT" "N" "BLOCK" "MS" "STREAMS" k.. id..
        nargs = line.count(b'" "') + 1
        out.append((nargs - 6) // 2)
    return out


def chain_ok(c):
    b = gh.Book(c.name, BOOK)
    b.feed(c, 0)
    return b


def trades_ok(c):
    seqs = gh.trade_seqs(c, TRADES)
    check(seqs == list(range(seqs[0], seqs[0] + len(seqs))),
          "%s: trade_seq holes: %r" % (c.name, [
              (a, b) for a, b in zip(seqs, seqs[1:]) if b != a + 1][:5]))
    return len(seqs)


async def body(h):
    os.environ["XG_TEST_BOT_SECRET"] = "bot-secret"
    t0 = time.monotonic()
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
    r = await bot.call("public/subscribe",
                       {"channels": [BOOK, TRADES] + QUIET}, id=2,
                       timeout=10)
    check(len(r.get("result", [])) == 302, "subscribe: %r" % str(r)[:300])
    await bot.wait_notes(BOOK, 5, timeout=15)
    edge.wait_up(lambda u: u["edge"]["channels"] == 302
                 and u["edge"]["channels_waiting"] == 0, 10, "302 read")

    bell = "%s:sim:bell" % eh.PREFIX
    loop = asyncio.get_running_loop()
    n = await loop.run_in_executor(None, monitor_xreads, redis.port, bell,
                                   3.0)
    small = sum(1 for k in n if k <= 4)
    check(len(n) >= 20, "only %d XREADs of the edge in 3 s" % len(n))
    check(small >= 0.9 * len(n), "XREADs naming at most 4 streams: %d of "
          "%d (streams named: %r)" % (small, len(n), sorted(n)[-10:]))
    st = edge.up()["edge"]
    check(st["bells"] > 20 and st["bell_gaps"] == 0,
          "edge bells %r gaps %r" % (st["bells"], st["bell_gaps"]))
    rc = Resp(redis.port)
    info = rc.cmd("INFO", "commandstats").decode()
    rc.close()
    xread = [ln for ln in info.splitlines() if ln.startswith("cmdstat_xread:")]

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
    ntr = trades_ok(bot)
    check(bot.closed is None, "bot closed %r" % (bot.closed,))
    await bot.close()
    edge.stop()
    print("edge XREADs in 3 s: %d, streams named: median %d, max %d; "
          "%s; book notes %d, trades %d in order; %.1f s"
          % (len(n), sorted(n)[len(n) // 2], max(n),
             xread[0] if xread else "-", bot.count(BOOK), ntr,
             time.monotonic() - t0))


def sync_body(h):
    asyncio.run(asyncio.wait_for(body(h), 90))
    if h.gate is not None and h.gate.poll() is None:
        gh.stop_clean(h)


if __name__ == "__main__":
    if not os.access("/usr/bin/redis-server", os.X_OK):
        sys.stderr.write("SKIP: /usr/bin/redis-server is missing\n")
        sys.exit(77)
    gh.uh.run("edge_bell", sync_body)
