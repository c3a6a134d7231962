"""A fill during an upstream outage is not lost (issue 8): a client
subscribed to user.trades.BTC-PERPETUAL.raw through exgate gets, after the
restore, the account's trades made while exgate was disconnected
(placed over a direct exsim connection during exgate's 2 s reconnect
delay, as another process of the same account would), fetched with private/get_user_trades_by_instrument; every
trade exactly once, in trade_seq order, then the live ones. A channel whose
first trade comes only during the outage is fetched by time
(private/get_user_trades_by_instrument_and_time).
"""

import os

import gateway_harness as gh
from gateway_harness import check, WSClient

CH = "user.trades.BTC-PERPETUAL.raw"
CH2 = "user.trades.ETH-PERPETUAL.raw"
UPSTREAM = """    protocol deribit;
    auth client_credentials exsim env:XG_TEST_EXSIM_SECRET;
    reconnect fixed { delay 2s; }
"""


trades = gh.notes_data


async def direct_buy(h, instrument):
    """A market buy on the account over a direct exsim connection."""
    r = await gh.direct_call(h, "private/buy", {
        "instrument_name": instrument, "amount": 10, "type": "market"})
    check(r.get("trades"), "direct buy %r" % r)
    return [t["trade_seq"] for t in r["trades"]]


async def body(h):
    os.environ["XG_TEST_EXSIM_SECRET"] = "exsim-secret"
    gh.start(h, UPSTREAM, "client_auth off;\n",
             sim_args=("--rate", "20", "--no-rate-limit"))
    gh.wait_ready(h)
    a = await WSClient("ws-a").connect(h.ws_url)
    r = await a.call("private/subscribe", {"channels": [CH, CH2]}, id=1)
    check(sorted(r["result"]) == sorted([CH, CH2]), "subscribe %r" % r)
    r = await a.call("private/buy", {"instrument_name": "BTC-PERPETUAL",
                                     "amount": 10, "type": "market"}, id=2)
    check(r.get("result", {}).get("trades"), "buy %r" % r)
    await a._wait(lambda: trades(a, CH), 5, "the live trade")
    before = [t["trade_seq"] for t in trades(a, CH)]

    # exgate reconnects 2 s after the drop; the trades happen meanwhile
    # (checked: no restore before they are done)
    restores = h.up()["restores"]
    h.control("drop")
    h.wait_up(lambda u: u["state"] != "ready", 5, "upstream down")
    missed = await direct_buy(h, "BTC-PERPETUAL")
    missed2 = await direct_buy(h, "ETH-PERPETUAL")
    check(h.up()["restores"] == restores, "restored before the trades")
    h.wait_up(lambda u: u["restores"] > restores
              and u["state"] == "ready", 10, "restore")
    await a._wait(lambda: len(trades(a, CH)) >= len(before) + len(missed),
                  10, "the missed trade")
    await a._wait(lambda: len(trades(a, CH2)) >= len(missed2), 10,
                  "the missed ETH trade")
    r = await a.call("private/buy", {"instrument_name": "BTC-PERPETUAL",
                                     "amount": 10, "type": "market"}, id=3)
    live = [t["trade_seq"] for t in r["result"]["trades"]]
    await a._wait(lambda: len(trades(a, CH)) >= len(before) + len(missed)
                  + len(live), 10, "the next live trade")
    got = [t["trade_seq"] for t in trades(a, CH)]
    check(got == before + missed + live, "user trades %r, expected %r"
          % (got, before + missed + live))
    got2 = [t["trade_seq"] for t in trades(a, CH2)]
    check(got2 == missed2, "ETH user trades %r, expected %r"
          % (got2, missed2))
    check(h.log_lines("%s: fetching the account's trades after" % CH),
          "backfill by seq logged")
    check(h.log_lines("%s: fetching the account's trades since" % CH2),
          "backfill by time logged")
    print("user trades before %r, missed %r, live %r; ETH missed %r"
          % (before, missed, live, missed2))
    await a.close()


if __name__ == "__main__":
    gh.run("gateway_user_trades", body)
