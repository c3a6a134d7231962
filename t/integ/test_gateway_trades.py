"""Trades missed during an upstream outage are backfilled by trade_seq:
a client subscribed to trades.BTC-PERPETUAL.* sees every trade_seq
exactly once, in order, across an upstream drop during which the market
kept trading (exsim refuses the reconnect for a while); the gateway
fetched the gap with public/get_last_trades_by_instrument.
"""

import asyncio

import gateway_harness as gh
from gateway_harness import check, WSClient, TCPClient

CH = "trades.BTC-PERPETUAL.100ms"
UPSTREAM = """    protocol deribit;
    reconnect fixed { delay 200ms; }
"""


def seqs(client):
    out = []
    for ch, m in client.notes:
        if ch == CH:
            out.extend(t["trade_seq"] for t in m["params"]["data"])
    return out


def contiguous(s, name):
    for a, b in zip(s, s[1:]):
        check(b == a + 1, "%s: trade_seq %d after %d" % (name, b, a))


async def body(h):
    gh.start(h, UPSTREAM, "client_auth off;\n",
             sim_args=("--rate", "200", "--no-aggregate", "--no-rate-limit"))
    gh.wait_ready(h)
    a = await WSClient("ws-a").connect(h.ws_url)
    t = await TCPClient("tcp-t").connect(h.tcp_port)
    for c in (a, t):
        r = await c.call("public/subscribe", {"channels": [CH]}, id=1)
        check(r["result"] == [CH], "subscribe %r" % r)
    await a._wait(lambda: len(seqs(a)) >= 20, 10, "20 trades")
    h.control("refuse on")
    h.control("drop")
    h.wait_up(lambda u: u["state"] != "ready", 5, "upstream down")
    await asyncio.sleep(1.0)             # the market trades on meanwhile
    h.control("refuse off")
    n = len(seqs(a))
    await a._wait(lambda: len(seqs(a)) >= n + 60, 10, "trades after")
    await t._wait(lambda: len(seqs(t)) >= n + 60, 10, "trades after")
    for c in (a, t):
        contiguous(seqs(c), c.name)
    check(h.log_lines("missed during the outage: backfilling"),
          "no backfill happened (did the market trade during the outage?)")
    check(h.log_lines("trades backfilled"), "backfill answer logged")
    await a.close()
    await t.close()


gh.run("gateway_trades", body)
