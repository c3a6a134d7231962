#!/usr/bin/python3
"""An unmodified ccxt binance and binanceusdm bot (t/ccxt/bot.js: ccxt
4.5.84, watchOrderBook, watchTrades, watchTicker and watchOHLCV on two
symbols at once, URLs changed) runs straight against bnsim, spot and usdm,
with no exception: loadMarkets reads the exchangeInfos, every watch is fed
to the end, books are uncrossed with rising nonces, trade ids have no hole;
once bnsim's market stops, each book (nonce and every level) and last trade
id equals bnsim's REST depth and trades. bnsim's stats show the sockets ccxt opens: spot /ws/<n>, usdm
/public/ws/<n> (depth, trade) and /market/ws/<n> (ticker, kline).

This is the same bot test_ccxt_binance.py runs through exgate, here with
no gateway and no faults (a drop straight at ccxt is an exception by
design: ccxt rejects every watch on a closed socket). Skips (77) without
node or t/ccxt/node_modules, fails under CI=true.
"""

import os
import re
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from bnsim_util import Bnsim, check, main  # noqa: E402
from ccxt_util import Bot, brief, need_bot, same_as_market  # noqa: E402

SECONDS = 30       # the bot's bound; the test ends it sooner


def one(market):
    with Bnsim("--market", market) as sim:
        # ccxt takes a spot symbol as spot only when the URL holds
        # "/stream" (Binance's host stream.binance.com has it); bnsim's
        # paths are Binance's, so the URL's user part supplies it here
        ws = ("ws://stream@127.0.0.1:%d/ws" % sim.ws_port if market == "spot"
              else "ws://127.0.0.1:%d/ws" % sim.ws_port)
        bot = Bot(market, ws, "http://127.0.0.1:%d" % sim.rest_port, SECONDS)
        try:
            bot.wait_ready(SECONDS)
            st = sim.stats()
            time.sleep(3)
            # the market stops; the bot's books and trades must end as
            # bnsim's REST has them
            sim.control("rate 0")
            time.sleep(1.5)
            bot.stop()
            s = bot.finish()
        finally:
            bot.close()
        print("%s: %s" % (market, brief(s)))
        same_as_market(sim, market, s)
        check(s["markets"] == 8, "%s: %d markets" % (market, s["markets"]))
        check(s["trade_gaps"] == 0, "%s: trade gaps" % market)
        paths = sorted(c["path"] for c in st["conns"])
        want = (r"/ws/\d+\Z" if market == "spot"
                else r"/(public|market)/ws/\d+\Z")
        check(paths and all(re.match(want, p) for p in paths),
              "%s: ccxt's paths %r" % (market, paths))
        if market == "usdm":
            routes = {c["route"]: 0 for c in st["conns"]}
            check(set(routes) == {"public", "market"},
                  "usdm: routes %r" % routes)
        # one socket per watch and symbol, the OHLCV watches sharing one
        check(len(paths) == 7, "%s: %d sockets" % (market, len(paths)))
        # binance's loadMarkets asks the exchangeInfo of /api/v3, /fapi/v1
        # and /dapi/v1, binanceusdm's only /fapi/v1; then a depth a book
        want = (3 if market == "spot" else 1) + 2
        check(st["rest_requests"] >= want, "%s: %d REST requests, not %d"
              % (market, st["rest_requests"], want))


def test():
    need_bot()
    for market in ("spot", "usdm"):
        one(market)


if __name__ == "__main__":
    main(test)
