"""Reconnect transparency: five clients (WebSocket and TCP) subscribed to
a public and a private channel, with requests in flight, while exsim
breaks the upstream connection three ways: `drop` (RST), `close 1011`,
and `stall on` (a heartbeat miss). After each:

- no client socket closes;
- the in-flight read-only requests are replayed and answered;
- the in-flight private/buy gets the "outcome unknown" error;
- every channel resumes on every client, and exsim holds exactly one
  subscription per channel;
- the gateway authenticates before it resubscribes;
- cancel_on_disconnect on: exsim saw exactly one
  private/enable_cancel_on_disconnect per upstream connection.
"""

import asyncio
import os
import re
import time

import gateway_harness as gh
from gateway_harness import check, WSClient, TCPClient

PUB = "ticker.BTC-PERPETUAL.100ms"
PRIV = "user.orders.BTC-PERPETUAL.raw"

UPSTREAM = """    protocol deribit;
    auth client_signature exsim env:XG_TEST_EXSIM_SECRET;
    heartbeat 1s;
    cancel_on_disconnect on;
    request_timeout 20s;
    reconnect exponential { initial 100ms; max 400ms; }
"""
MAIN = "client_credentials bot env:XG_TEST_BOT_SECRET;\n"


async def connect_all(h):
    clients = []
    for i in range(5):
        if i < 3:
            c = await WSClient("ws%d" % i).connect(h.ws_url)
        else:
            c = await TCPClient("tcp%d" % i).connect(h.tcp_port)
        r = await c.call("public/auth", {"grant_type": "client_credentials",
                                         "client_id": "bot",
                                         "client_secret": "bot-secret"},
                         id=100)
        check("result" in r, "%s: auth %r" % (c.name, r))
        r = await c.call("private/subscribe", {"channels": [PUB, PRIV]},
                         id=101)
        check(sorted(r["result"]) == sorted([PUB, PRIV]),
              "%s: subscribe %r" % (c.name, r))
        clients.append(c)
    return clients


async def resumed(clients, what):
    counts = [c.count(PUB) for c in clients]
    for c, n in zip(clients, counts):
        await c.wait_notes(PUB, n + 1, timeout=10)
    for c in clients:
        check(c.closed is None, "%s: client socket closed %r (%s)"
              % (c.name, c.closed, what))


def one_sub_each(h, what):
    subs = h.control("stats")["subscribed"]
    check(subs.get(PUB) == 1 and subs.get(PRIV) == 1,
          "%s: exsim subscriptions %r" % (what, subs))


def one_cod_each(h, what):
    """exsim counted one enable_cancel_on_disconnect per connection (the
    gateway answers its clients' own COD calls itself, none go up)."""
    conn = h.up()["connection_id"]
    n = h.control("stats")["requests"].get(
        "private/enable_cancel_on_disconnect", 0)
    check(n == conn, "%s: %d enable_cancel_on_disconnect at exsim over %d "
          "connections" % (what, n, conn))


def auth_before_subscribe(h, conn):
    """In the log of connection CONN: auth, then the subscribe batch."""
    lines = h.log_lines(r"upstream sim#%d: restore: " % conn)
    kinds = [re.sub(r".*restore: (\S+).*", r"\1", l) for l in lines]
    check(kinds[:1] == ["public/auth"] and "subscribing" in kinds
          and kinds.index("public/auth") < kinds.index("subscribing"),
          "restore order on #%d: %r" % (conn, kinds))


async def orders_placed(h, buyer):
    # a resting buy far from the market: it stays open
    r = await buyer.call("private/buy", {"instrument_name": "BTC-PERPETUAL",
                                         "amount": 10, "type": "limit",
                                         "price": 1000}, id=300)
    check("result" in r, "buy %r" % r)


async def round_(h, clients, mode, n):
    a, b, c = clients[0], clients[3], clients[1]
    conn_before = h.up()["connection_id"]
    if mode == "drop" or mode == "close":
        # exsim reads but drops everything while stalled: these stay in flight
        h.control("stall on")
        k_buy = await a.request("private/buy", {
            "instrument_name": "BTC-PERPETUAL", "amount": 10,
            "type": "limit", "price": 1001}, id=n)
        k_time = await b.request("public/get_time", id=n)
        k_pos = await c.request("private/get_positions",
                                {"currency": "BTC"}, id="pos%d" % n)
        h.wait_up(lambda u: u["pending_requests"] >= 3, 5,
                  "3 requests in flight")
        if mode == "drop":
            h.control("drop")
        else:
            h.control("close 1011 restart")
        h.control("stall off")
        r = await a.answer(k_buy, timeout=10)
        check("error" in r and "outcome unknown" in r["error"]["message"],
              "%s: in-flight buy must get outcome unknown: %r" % (mode, r))
        r = await b.answer(k_time, timeout=10)
        check(isinstance(r.get("result"), int),
              "%s: get_time not replayed: %r" % (mode, r))
        r = await c.answer(k_pos, timeout=10)
        check("result" in r, "%s: get_positions not replayed: %r"
              % (mode, r))
    else:
        # stall: nothing comes back, not even heartbeats -> heartbeat miss
        h.control("stall on")
        h.wait_up(lambda u: u["connection_id"] > conn_before, 10,
                  "reconnect after a heartbeat miss")
        h.control("stall off")
    t0 = time.monotonic()
    h.wait_up(lambda u: u["state"] == "ready"
              and u["connection_id"] > conn_before, 10, "ready again")
    await resumed(clients, mode)
    took = time.monotonic() - t0
    check(took < 5, "%s: data took %.1f s to resume after the restore"
          % (mode, took))
    one_sub_each(h, mode)
    one_cod_each(h, mode)
    auth_before_subscribe(h, h.up()["connection_id"])
    return took


async def body(h):
    os.environ["XG_TEST_EXSIM_SECRET"] = "exsim-secret"
    os.environ["XG_TEST_BOT_SECRET"] = "bot-secret"
    gh.start(h, UPSTREAM, MAIN, sim_args=("--rate", "50",
                                          "--min-heartbeat", "1"))
    gh.wait_ready(h)
    clients = await connect_all(h)
    await resumed(clients, "start")
    one_sub_each(h, "start")
    one_cod_each(h, "start")
    await orders_placed(h, clients[0])
    times = []
    for n, mode in enumerate(("drop", "close", "stall")):
        times.append(await round_(h, clients, mode, 10 + n))
    s = h.status()
    check(sum(l["clients"] for l in s["listeners"]) == 5,
          "clients lost: %r" % s["listeners"])
    check(len(h.log_lines("outcome unknown")) >= 2,
          "the outcome-unknown errors are logged")
    print("data resumed %.2f / %.2f / %.2f s after ready; last restore "
          "%d ms" % (times[0], times[1], times[2], h.up()["last_restore_ms"]))
    for c in clients:
        await c.close()


gh.run("gateway_reconnect", body)
