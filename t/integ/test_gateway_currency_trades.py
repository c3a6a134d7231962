"""Trades on the KIND.CURRENCY channels survive an upstream outage (issue
8): a client subscribed through exgate to trades.future.BTC.raw and
user.trades.future.BTC.raw; exsim keeps trading during exgate's 2 s
reconnect delay and a direct exsim connection of the same account buys
BTC-PERPETUAL meanwhile. After the restore exgate backfills both channels
by time (public/get_last_trades_by_currency_and_time,
private/get_user_trades_by_currency_and_time) before the live trades.

Checked: per instrument, the trade_seq numbers on trades.future.BTC.raw
have no hole and no repeat across the outage and equal exsim's
(public/get_last_trades_by_instrument over the same range); the
account's trades are the live one, the missed one and the next live one,
each once, in order; the backfill is logged and counted in /status.
Then the market channel is muted at exsim (`stale trades.future.* 1s`):
resubscribed alone and backfilled by time, still no hole and no repeat.
Then a backfill still unanswered when the connection drops again: the
next connection fetches from the same timestamp on, no hole.
"""

import asyncio
import os

import gateway_harness as gh
from gateway_harness import check, WSClient

PUB = "trades.future.BTC.raw"
USR = "user.trades.future.BTC.raw"
UPSTREAM = """    protocol deribit;
    auth client_credentials exsim env:XG_TEST_EXSIM_SECRET;
    reconnect fixed { delay 2s; }
    stale trades.future.* 1s;
"""


trades = gh.notes_data


def seqs_by_instrument(ts):
    out = {}
    for t in ts:
        out.setdefault(t["instrument_name"], []).append(t["trade_seq"])
    return out


async def body(h):
    os.environ["XG_TEST_EXSIM_SECRET"] = "exsim-secret"
    gh.start(h, UPSTREAM, "client_auth off;\n",
             sim_args=("--rate", "20", "--no-rate-limit"))
    gh.wait_ready(h)
    a = await WSClient("ws-a").connect(h.ws_url)
    r = await a.call("private/subscribe", {"channels": [PUB, USR]}, id=1)
    check(sorted(r["result"]) == sorted([PUB, USR]), "subscribe %r" % r)
    await a._wait(lambda: len(trades(a, PUB)) >= 3, 10, "market trades")
    r = await a.call("private/buy", {"instrument_name": "BTC-PERPETUAL",
                                     "amount": 10, "type": "market"}, id=2)
    check(r.get("result", {}).get("trades"), "buy %r" % r)
    await a._wait(lambda: trades(a, USR), 5, "the live user trade")
    before = [t["trade_seq"] for t in trades(a, USR)]

    restores = h.up()["restores"]
    h.control("drop")
    h.wait_up(lambda u: u["state"] != "ready", 5, "upstream down")
    n_pub = len(trades(a, PUB))
    res = await gh.direct_call(h, "private/buy", {
        "instrument_name": "BTC-PERPETUAL", "amount": 10, "type": "market"})
    missed = [t["trade_seq"] for t in res["trades"]]
    check(h.up()["restores"] == restores, "restored before the trade")
    check(len(trades(a, PUB)) == n_pub, "trades during the outage")
    h.wait_up(lambda u: u["restores"] > restores
              and u["state"] == "ready", 10, "restore")
    await a._wait(lambda: len(trades(a, USR)) >= len(before) + len(missed),
                  10, "the missed user trade")
    r = await a.call("private/buy", {"instrument_name": "BTC-PERPETUAL",
                                     "amount": 10, "type": "market"}, id=3)
    live = [t["trade_seq"] for t in r["result"]["trades"]]
    await a._wait(lambda: len(trades(a, USR)) >= len(before) + len(missed)
                  + len(live), 10, "the next live user trade")
    got = [t["trade_seq"] for t in trades(a, USR)]
    check(got == before + missed + live, "user trades %r, expected %r"
          % (got, before + missed + live))
    # the public channel: the buys' trades and the market's, no hole
    await a._wait(lambda: max(seqs_by_instrument(trades(a, PUB))
                              .get("BTC-PERPETUAL", [0])) >= live[-1],
                  10, "the live buy on the market channel")
    per = seqs_by_instrument(trades(a, PUB))
    for instr, sq in per.items():
        check(sq == list(range(sq[0], sq[0] + len(sq))),
              "%s: trade_seq hole or repeat: %r" % (instr, sq))
        ex = await gh.direct_call(
            h, "public/get_last_trades_by_instrument", {
                "instrument_name": instr, "start_seq": sq[0],
                "end_seq": sq[-1], "count": 1000, "sorting": "asc"})
        check([t["trade_seq"] for t in ex["trades"]] == sq,
              "%s: exsim's trades differ" % instr)
    for s in missed:
        check(s in per["BTC-PERPETUAL"], "missed trade %d on %s" % (s, PUB))
    check(h.log_lines("%s: fetching the market's trades since" % PUB),
          "public backfill logged")
    check(h.log_lines("%s: fetching the account's trades since" % USR),
          "user backfill logged")
    u = h.up()
    check(u["currency_trades_backfilled"] >= len(missed) * 2,
          "currency_trades_backfilled %r" % u["currency_trades_backfilled"])
    # a stale resubscribe: the market channel muted while trading goes on
    stale0 = u["stale_resubscribes"]
    bf0 = u["currency_trades_backfilled"]
    n0 = len(trades(a, PUB))
    h.control("mute %s on" % PUB)
    h.wait_up(lambda u: u["stale_resubscribes"] > stale0, 10,
              "stale resubscribe")
    await a._wait(lambda: len(trades(a, PUB)) > n0 + 5, 10,
                  "trades after the stale resubscribe")
    per = seqs_by_instrument(trades(a, PUB))
    for instr, sq in per.items():
        check(sq == list(range(sq[0], sq[0] + len(sq))),
              "%s after stale: trade_seq hole or repeat: %r" % (instr, sq))
    u = h.up()
    check(u["currency_trades_backfilled"] > bf0,
          "nothing backfilled after the mute: %r" % u)
    # a backfill in flight when the connection drops again: the held
    # trades wait for the next connection, which fetches from the same
    # timestamp on, so nothing is skipped or repeated
    h.control("delay public/get_last_trades_by_currency_and_time 1500")
    fetch_line = "%s: fetching the market's trades since" % PUB
    answer_line = "%s: \\d+ trades backfilled" % PUB
    f0, a0 = len(h.log_lines(fetch_line)), len(h.log_lines(answer_line))
    for i in (1, 2):                     # the second drop kills the fetch
        restores = h.up()["restores"]
        h.control("drop")
        h.wait_up(lambda u: u["restores"] > restores
                  and u["state"] == "ready", 10, "restore %d" % i)
        gh.uh.wait_for(lambda: len(h.log_lines(fetch_line)) >= f0 + i, 10,
                       what="fetch %d" % i)
        if i == 1:
            h.control("burst 20")        # live trades held behind fetch 1
            await asyncio.sleep(0.3)
    gh.uh.wait_for(lambda: len(h.log_lines(answer_line)) > a0, 10,
                   what="the second fetch's answer")
    h.control("delay public/get_last_trades_by_currency_and_time 0")
    n2 = len(trades(a, PUB))
    h.control("burst 20")
    await a._wait(lambda: len(trades(a, PUB)) > n2, 10, "trades after")
    per = seqs_by_instrument(trades(a, PUB))
    for instr, sq in per.items():
        check(sq == list(range(sq[0], sq[0] + len(sq))),
              "%s after a fetch died with its connection: trade_seq hole "
              "or repeat: %r" % (instr, sq))

    # the bound on what is held: exsim answers the market backfill only
    # after 6 s while the market trades on; at 1000 held messages the
    # gateway gives up on it and delivers what it held, in order
    h.control("delay public/get_last_trades_by_currency_and_time 6000")
    fetches = len(h.log_lines("%s: fetching the market's trades since"
                              % PUB))
    restores = h.up()["restores"]
    h.control("drop")
    h.wait_up(lambda u: u["restores"] > restores
              and u["state"] == "ready", 10, "restore")
    gh.uh.wait_for(lambda: len(h.log_lines(
        "%s: fetching the market's trades since" % PUB)) > fetches, 10,
        what="the delayed backfill")
    bursts = 0
    while not h.log_lines("%s: backfill too slow" % PUB) and bursts < 40:
        h.control("burst 500")
        bursts += 1
        await asyncio.sleep(0.1)
    check(h.log_lines("%s: backfill too slow, releasing" % PUB),
          "no release after %d bursts of 500 market steps" % bursts)
    await asyncio.sleep(6.5)             # the late answer has come and gone
    n1 = len(trades(a, PUB))
    h.control("burst 50")
    await a._wait(lambda: len(trades(a, PUB)) > n1, 10, "trades after")
    per = seqs_by_instrument(trades(a, PUB))
    for instr, sq in per.items():
        check(all(y > x for x, y in zip(sq, sq[1:])),
              "%s after the release: trade_seq repeated or out of order"
              % instr)
    print("bound: released after %d bursts; %d trades on %s"
          % (bursts, len(trades(a, PUB)), PUB))
    print("public trades per instrument %r; user before %r, missed %r, "
          "live %r; backfilled %d"
          % ({i: (s[0], s[-1], len(s)) for i, s in per.items()}, before,
             missed, live, u["currency_trades_backfilled"]))
    await a.close()


if __name__ == "__main__":
    gh.run("gateway_currency_trades", body)
