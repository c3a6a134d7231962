#!/usr/bin/python3
"""Issue 13, "Done when": an unmodified ccxt binance and binanceusdm bot
(t/ccxt/bot.js, ccxt 4.5.84: watchOrderBook, watchTrades, watchTicker and
watchOHLCV on BTC and ETH at once, only its URLs changed) runs against
bnsim through exgate across drops and rotations (and gaps and
serverShutdowns) without an exception.

Per market, bnsim (--market spot, then usdm) and exgate with the issue's
conf (usdm's url as README writes it: the host, the venue adds the
route):

    upstream bn {
        url       ws://127.0.0.1:WS/stream;    # usdm: ws://127.0.0.1:WS
        rest_url  http://127.0.0.1:REST;
        protocol  binance;
        market    spot;            # usdm
    }
    listen 127.0.0.1:P websocket upstream=bn path=/*;
    listen 127.0.0.1:Q http      upstream=bn;

The bot's URLs are the issue's: spot urls.api.ws.spot =
ws://127.0.0.1:P/stream/ws (ccxt opens /stream/ws/<n>), usdm
urls.api.ws.future = ws://127.0.0.1:P/fapi/ws (ccxt opens
/fapi/public/ws/<n> and /fapi/market/ws/<n>); public, fapiPublic and
dapiPublic = http://127.0.0.1:Q/api/v3, /fapi/v1, /dapi/v1 (loadMarkets
and the books' depth snapshots go through the REST front).

Once every watch has had its first update, the faults of PLAN, one every
EVERY seconds, each after the upstream is ready again: 5 bnsim `drop`s
(every upstream connection reset), 5 rotations (POST
/upstreams/bn/rotate), 2 `gap`s (the next btcusdt@depth@100ms and
ethusdt@trade events are not sent) and 2 `shutdown`s (serverShutdown, then
close 1001: the venue rotates). The Done when asks for drops and
rotations; gaps and shutdowns are what else an unmodified ccxt would throw
on. Then the bot runs on for TAIL seconds, the market stops, and the bot
is stopped. Checked:
- the bot exits 0: no exception from ccxt (a client socket closed, a
  ChecksumError from a broken U/u or pu chain, a failed snapshot), books
  uncrossed with nonces that never go back, no trade id twice, out of
  order or missing (the gateway backfills), candles in order, and every
  watch fed in its last 5 seconds;
- then bnsim's market stops: each of the bot's books (nonce and every
  level) and last trade ids equal bnsim's REST depth and trades (a bridge
  that leaves a stale level passes ccxt's own U/u checks, not this);
- /status: one rotation per rotate and shutdown, none failed, one
  disconnect per drop, client_errors 0; bnsim: no 1008 close (pacing);
- exgate exits 0 on SIGTERM with no sanitizer report.

Skips (77) without node or t/ccxt/node_modules; under CI=true that is a
failure. test_ccxt_bnsim.py runs the same bot straight at bnsim.
"""

import json
import os
import sys
import time
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import upstream_harness as uh  # noqa: E402
from bnsim_util import Bnsim  # noqa: E402
from ccxt_util import Bot, brief, need_bot, same_as_market  # noqa: E402
from upstream_harness import check, free_port  # noqa: E402

# the faults, one every EVERY seconds once the bot is fed
PLAN = ("drop", "rotate", "gap", "drop", "rotate", "shutdown") * 2 \
    + ("drop", "rotate")
EVERY = 1.5
READY = 15         # the bot's watches are all fed within this
TAIL = 8           # seconds the bot runs on after the last fault
SECONDS = 300      # the bot's bound; the test ends it after TAIL


def rotate(h):
    n = h.up("bn")["rotations"] + 1
    req = urllib.request.Request(
        "http://127.0.0.1:%d/upstreams/bn/rotate" % h.admin_port,
        data=b"", method="POST")
    with urllib.request.urlopen(req, timeout=5) as r:
        check(r.status == 202, "rotate: %d" % r.status)
        body = json.loads(r.read().decode())
    check(body.get("rotation") == n, "rotation %d answered %r" % (n, body))
    # over when the old connection is gone (make-before-break)
    h.wait_up(lambda u: u["rotations"] == n and u["state"] == "ready"
              and len(u["connections"]) == 1
              and u["connection_id"] == body["to"], 10,
              "rotation %d over" % n, name="bn")


def drop(h, sim, n):
    sim.control("drop")
    h.wait_up(lambda u: u["disconnects"] >= n and u["state"] == "ready", 10,
              "back up after drop %d" % n, name="bn")


def shutdown(h, sim):
    """serverShutdown on every connection (closed 1001 0.5 s later): the
    venue rotates at once."""
    n = h.up("bn")["rotations"] + 1
    sim.control("shutdown")
    h.wait_up(lambda u: u["rotations"] == n and u["state"] == "ready"
              and len(u["connections"]) == 1, 10,
              "rotation %d (serverShutdown) over" % n, name="bn")


def one(h, market):
    with Bnsim("--market", market) as sim:
        ws_port, http_port = free_port(), free_port()
        h.start_gate_conf(
            "upstream bn {\n"
            "    url ws://127.0.0.1:%d%s;\n"
            "    rest_url http://127.0.0.1:%d;\n"
            "    protocol binance;\n"
            "    market %s;\n"
            "}\n"
            "listen 127.0.0.1:%d websocket upstream=bn path=/*;\n"
            "listen 127.0.0.1:%d http upstream=bn;\n"
            % (sim.ws_port, "/stream" if market == "spot" else "",
               sim.rest_port, market, ws_port, http_port),
            level="info")
        h.wait_up(lambda u: u["state"] == "ready", 10, "upstream ready",
                  name="bn")
        base = "/stream/ws" if market == "spot" else "/fapi/ws"
        bot = Bot(market, "ws://127.0.0.1:%d%s" % (ws_port, base),
                  "http://127.0.0.1:%d" % http_port, SECONDS)
        try:
            ready = bot.wait_ready(READY)
            t0 = time.monotonic()
            drops = 0
            for fault in PLAN:
                time.sleep(EVERY)
                if fault == "drop":
                    drops += 1
                    drop(h, sim, drops)
                elif fault == "rotate":
                    rotate(h)
                elif fault == "shutdown":
                    shutdown(h, sim)
                else:
                    # the next depth event of BTC and trade of ETH are lost
                    sim.control("gap btcusdt@depth@100ms")
                    sim.control("gap ethusdt@trade")
            faults = time.monotonic() - t0
            time.sleep(TAIL)
            sim.control("rate 0")
            time.sleep(2)
            bot.stop()
            s = bot.finish()
        finally:
            bot.close()
        print("%s through exgate, fed after %.1f s, %s in %.1f s: %s"
              % (market, ready, counts(), faults, brief(s)))
        same_as_market(sim, market, s)
        u = h.up("bn")
        check(u["rotations"] == PLAN.count("rotate") + PLAN.count("shutdown")
              and u["rotations_failed"] == 0 and u["disconnects"] == drops,
              "%s: status %r" % (market, u))
        check(h.status()["client_errors"] == 0, "%s: client_errors in"
              " /status" % market)
        st = sim.stats()
        check(st["closes_1008"] == 0, "%s: bnsim closed %d connections with"
              " 1008" % (market, st["closes_1008"]))
        # the faults were real: events lost, serverShutdowns seen (the
        # venue rotates away before bnsim's 1001, so no shutdown_closes)
        check(st["gapped"] == 2 * PLAN.count("gap"), "%s: bnsim gapped %d"
              % (market, st["gapped"]))
        seen = u["shards"][0].get("server_shutdowns")
        check(seen == PLAN.count("shutdown"), "%s: %r serverShutdowns seen"
              % (market, seen))
        h.finish()
        h.gate = None


def counts():
    return ", ".join("%d %ss" % (PLAN.count(f), f)
                     for f in ("drop", "rotate", "gap", "shutdown"))


def body(h):
    for market in ("spot", "usdm"):
        one(h, market)


need_bot()
uh.run("test_ccxt_binance", body)
