"""rediss:// (issue 17): a core and an edge that reach Redis over TLS only
(redis-server with --tls-port and no plain port), through exgate's own
tunnel (src/xg_rtls.c: Debian 12's hiredis has no TLS), the chain and
the host checked as on the WebSocket side:

- the core publishes and serves requests over rediss:// (tls_ca the
  test's CA), the edge reads over rediss://: a bot on the edge gets its
  book (from the core's snapshot) and its trades, and public/get_time
  answered through the core;
- an edge whose trust store does not hold that CA (tls_verify on, the
  system store) never connects: its log says "certificate verify failed",
  its /status edge state stays disconnected, nothing is read;
- Redis restarted: both reconnect over TLS and the bot's trades go on.

Skips (exit 77) only when /usr/bin/redis-server is missing.
"""

import asyncio
import os
import sys
import time

import gateway_harness as gh
from gateway_harness import check, free_port, WSClient
import edge_harness as eh
from upstream_harness import wait_for

BOOK = "book.BTC-PERPETUAL.100ms"
TRADES = "trades.BTC-PERPETUAL.100ms"
REDIS = "/usr/bin/redis-server"


def start_tls_redis(h, port, cert, key):
    return eh.start_redis(h, port, None, tls=(cert, key))


class TlsRedis:
    """What eh.start_core needs of a Redis: its port."""

    def __init__(self, port):
        self.port = port


async def body(h):
    cert, key = h.make_cert()
    port = free_port()
    proc = start_tls_redis(h, port, cert, key)
    red = TlsRedis(port)
    gh.start(h, "    protocol deribit;\n"
             "    publish rediss://127.0.0.1:%d prefix=%s;\n"
             "    tls_ca %s;\n"
             "    reconnect fixed { delay 100ms; }\n"
             % (port, eh.PREFIX, cert),
             "client_auth off;\n", level="info",
             sim_args=("--no-rate-limit", "--rate", "50"))
    gh.wait_ready(h)
    h.wait_up(lambda u: u.get("publish", {}).get("connected"), 10,
              "publish connected over tls")
    check(h.up()["publish"]["url"] == "rediss://127.0.0.1:%d" % port,
          "publish url %r" % h.up()["publish"]["url"])

    e1 = eh.Edge(h, "tls1", port, main_extra="client_auth off;\n",
                 extra="    tls_ca %s;\n" % cert, scheme="rediss").start()
    e1.wait_up(lambda u: u["state"] == "ready"
               and u["edge"].get("state") == "connected", 10,
               "ready over tls")
    bot = await WSClient("bot").connect(e1.ws_url)
    r = await bot.call("public/subscribe", {"channels": [BOOK, TRADES]},
                       id=1)
    check(sorted(r["result"]) == sorted([BOOK, TRADES]), "subscribe %r" % r)
    await bot.wait_notes(BOOK, 5, timeout=15)
    await bot._wait(lambda: len(gh.trade_seqs(bot, TRADES)) >= 3, 15,
                    "trades over tls")
    b = gh.Book("bot", BOOK)
    b.feed(bot, 0)
    check(b.snapshots == 1, "%d snapshots" % b.snapshots)
    r = await bot.call("public/get_time", {}, id=2, timeout=10)
    check(isinstance(r.get("result"), int), "get_time over tls %r" % r)

    # an edge that does not trust the test's CA: never connects
    e2 = eh.Edge(h, "notrust", port, main_extra="client_auth off;\n",
                 scheme="rediss").start()
    wait_for(lambda: "certificate verify failed" in e2.log(), 10,
             what="notrust: certificate verify failed in its log")
    # hiredis' own connect (to the tunnel's unix socket) succeeds at
    # once: neither Redis connection may count as up before the server's
    # certificate is checked, at any moment of an attempt (one every
    # 100 ms here)
    for _ in range(15):
        u2 = e2.up()
        ed = u2.get("edge", {})
        check(ed.get("state") != "connected" and ed.get("entries", 0) == 0
              and ed.get("redis", {}).get("connects", 0) == 0
              and ed.get("redis", {}).get("cmd") != "connected"
              and ed.get("redis", {}).get("read") != "connected",
              "the untrusting edge connected: %r" % u2)
        time.sleep(0.04)
    check("connect failed: tls: certificate verify failed" in e2.log(),
          "a failed handshake is a failed connect in the log")

    # Redis restarted: TLS again, and the trades go on
    n = len(gh.trade_seqs(bot, TRADES))
    proc.terminate()
    proc.wait(5)
    time.sleep(0.3)
    start_tls_redis(h, port, cert, key)
    e1.wait_up(lambda u: u["edge"].get("state") == "connected", 10,
               "reconnected over tls")
    await bot._wait(lambda: len(gh.trade_seqs(bot, TRADES)) >= n + 5, 15,
                    "trades after the redis restart")
    check(gh.seq_holes(bot, TRADES) == [], "trade holes %r"
          % gh.seq_holes(bot, TRADES))
    check(bot.closed is None, "bot closed %r" % (bot.closed,))
    print("over rediss://: %d book messages, %d trades, edge %r"
          % (b.n, len(gh.trade_seqs(bot, TRADES)),
             {k: e1.up()["edge"][k] for k in ("entries", "snapshots",
                                              "answers", "gaps")}))
    await bot.close()
    e1.stop()
    e2.stop()

    # a password over TLS: AUTH goes once the handshake is done (from the
    # tunnel's callback), and a wrong one is an auth failure, never up
    pport = free_port()
    eh.start_redis(h, pport, "tlspw", tls=(cert, key))
    e3 = eh.Edge(h, "tlspw", pport, main_extra="client_auth off;\n",
                 extra="    tls_ca %s;\n" % cert, password="tlspw",
                 scheme="rediss").start()
    e3.wait_up(lambda u: u["edge"].get("redis", {}).get("cmd") == "connected"
               and u["edge"].get("redis", {}).get("read") == "connected",
               10, "authenticated over tls")
    check("connected (auth ok)" in e3.log(), "auth ok over tls in the log")
    e4 = eh.Edge(h, "tlsbadpw", pport, main_extra="client_auth off;\n",
                 extra="    tls_ca %s;\n" % cert, password="wrong",
                 scheme="rediss").start()
    wait_for(lambda: "auth failed" in e4.log(), 10,
             what="tlsbadpw: auth failed in its log")
    ed = e4.up().get("edge", {})
    check(ed.get("redis", {}).get("connects", 0) == 0
          and ed.get("redis", {}).get("cmd") != "connected",
          "a wrong password over tls connected: %r" % ed)
    e3.stop()
    e4.stop()


def sync_body(h):
    asyncio.run(asyncio.wait_for(body(h), 120))
    if h.gate is not None and h.gate.poll() is None:
        gh.stop_clean(h)


if __name__ == "__main__":
    if not os.access(REDIS, os.X_OK):
        sys.stderr.write("SKIP: %s is missing\n" % REDIS)
        sys.exit(77)
    gh.uh.run("edge_tls", sync_body)
