#!/usr/bin/python3
"""Make-before-break rotation under load (issue 12, step 3, "Done when").

exsim at --rate 50; exgate's deribit upstream authenticates, has
cancel_on_disconnect on and a heartbeat. Five clients (3 WebSocket, 2 TCP)
subscribe to book.I.100ms and trades.I.100ms on BTC-PERPETUAL and
ETH-PERPETUAL and to user.orders.BTC-PERPETUAL.raw, with gap notices on;
two of them hold resting orders placed through exgate, and one keeps
placing and cancelling orders through all the rotations (so requests are
in flight on the old connection when it is replaced).

50 rotations in a row through POST /upstreams/sim/rotate, each after the
previous one closed its old connection. After the first 10, exsim answers
each new connection's subscribe 100 ms late, with its snapshots and data
flowing already, so that exgate holds them and lines them up, and
answers public/get_time 150 ms late, so that old connections wait for
it. Checked at the end:
- /status: rotations 50, rotations_failed 0, disconnects 0, one
  connection; no channel switched "as after an outage" (all in line or
  quiet), no book gap or bridge;
- every client: no error answer, no gap notice, no close (and
  client_errors 0 in /status); each book
  chain unbroken (a snapshot first, each change chaining) and equal to
  exsim's get_order_book once exsim's market is stopped; every trade_seq
  exactly once and in order, with no hole, up to exsim's last trade;
  user.orders: each order's last state equals exsim's, no state twice;
- exsim: 50 private/disable_cancel_on_disconnect requests, no
  authenticated connection closed with cancel-on-disconnect on, no COD
  cancel (the resting orders are all still open);
- the time from each rotation's start to its old connection's close (the
  log's "closed (...), N ms after the start"), median and max of the 10
  plain ones and of the 40 others, printed.
"""

import asyncio
import json
import os
import random
import statistics
import time
import urllib.request

import gateway_harness as gh
import upstream_harness as uh
from gateway_harness import check, WSClient, TCPClient

INSTRS = ("BTC-PERPETUAL", "ETH-PERPETUAL")
BOOKS = ["book.%s.100ms" % i for i in INSTRS]
TRADES = ["trades.%s.100ms" % i for i in INSTRS]
ORDERS = "user.orders.BTC-PERPETUAL.raw"
CHANNELS = BOOKS + TRADES + [ORDERS]
ROTATIONS = 50
PLAIN = 10              # the first ones with no delay at exsim
UPSTREAM = """    protocol deribit;
    auth client_credentials exsim env:XG_TEST_EXSIM_SECRET;
    heartbeat 10s;
    cancel_on_disconnect on;
    reconnect fixed { delay 50ms; }
"""
FIELDS = ("order_state", "filled_amount", "amount", "price",
          "last_update_timestamp")


def rotate(h):
    req = urllib.request.Request(
        "http://127.0.0.1:%d/upstreams/sim/rotate" % h.admin_port,
        data=b"", method="POST")
    with urllib.request.urlopen(req, timeout=5) as r:
        check(r.status == 202, "rotate: %d" % r.status)
        return json.loads(r.read().decode())


async def status(h):
    return await asyncio.to_thread(h.up)


async def place(c, price, id):
    r = await c.call("private/buy", {
        "instrument_name": "BTC-PERPETUAL", "amount": 10, "type": "limit",
        "price": price}, id=id)
    check("result" in r, "%s: buy %r" % (c.name, r))
    return r["result"]["order"]["order_id"]


async def churn(c, low, stop, placed, slow):
    """Until STOP is set: places and cancels orders through exgate, with a
    public/get_time in flight meanwhile (exsim answers it 150 ms late, so
    that rotations find it in flight on the old connection)."""
    n = 1000
    while not stop.is_set():
        n += 1
        t = asyncio.ensure_future(c.call("public/get_time", {}, id=n,
                                         timeout=10))
        n += 1
        oid = await place(c, low - (n % 7), n)
        placed.append(oid)
        n += 1
        r = await c.call("private/cancel", {"order_id": oid}, id=n)
        check("result" in r, "%s: cancel %r" % (c.name, r))
        r = await t
        check("result" in r, "%s: get_time %r" % (c.name, r))
        slow.append(r["result"])
        await asyncio.sleep(0.01)


def no_errors(c):
    errs = [m for lst in c.answers.values() for m in lst if "error" in m]
    check(not errs, "%s: error answers %r" % (c.name, errs[:3]))
    gaps = [m for m in c.other
            if isinstance(m, dict) and m.get("method") == "exgate/gap"]
    check(not gaps, "%s: gap notices %r" % (c.name, gaps[:3]))
    check(c.closed is None, "%s: closed %r" % (c.name, c.closed))


async def body(h):
    os.environ["XG_TEST_EXSIM_SECRET"] = "exsim-secret"
    gh.start(h, UPSTREAM, "client_auth off;\n", level="info",
             sim_args=("--rate", "50", "--no-rate-limit"))
    gh.wait_ready(h)
    d = await gh.Direct().open(h)
    b = await d.call("public/get_order_book",
                     {"instrument_name": "BTC-PERPETUAL", "depth": 1})
    low = float(int(b["bids"][0][0] * 0.5))

    clients = []
    for i in range(3):
        clients.append(await WSClient("ws-%d" % i).connect(h.ws_url))
    for i in range(2):
        clients.append(await TCPClient("tcp-%d" % i).connect(h.tcp_port))
    for c in clients:
        r = await c.call("exgate/notify_gaps", {"enabled": True}, id=1)
        check("result" in r, "%s: notify_gaps %r" % (c.name, r))
        r = await c.call("private/subscribe", {"channels": CHANNELS}, id=2)
        check(sorted(r["result"]) == sorted(CHANNELS),
              "%s: subscribe %r" % (c.name, r))
    resting = []
    for k, c in enumerate(clients[:2]):
        for j in range(3):
            resting.append(await place(c, low - 20 - j, 10 + k * 10 + j))
    for c in clients:
        for ch in BOOKS + TRADES:
            await c.wait_notes(ch, 1, timeout=10)

    stop = asyncio.Event()
    placed, slow = [], []
    churner = asyncio.ensure_future(churn(clients[2], low, stop, placed,
                                          slow))
    rnd = random.Random(12)
    cod_off0 = h.control("stats")["requests"].get(
        "private/disable_cancel_on_disconnect", 0)
    t0 = time.monotonic()
    for n in range(1, ROTATIONS + 1):
        if n == PLAIN + 1:
            # a slow request in flight on the old connection; the new
            # one's subscribe answered late, its data flowing already:
            # held by exgate until the answer, then lined up
            h.control("delay public/get_time 150")
            h.control("delay private/subscribe 100")
        r = await asyncio.to_thread(rotate, h)
        check(r["rotation"] == n, "rotation %r" % r)
        end = time.monotonic() + 10
        while True:
            u = await status(h)
            if u["rotations"] == n and len(u["connections"]) == 1:
                break
            check(u["rotations_failed"] == 0, "rotation %d failed: %r"
                  % (n, u))
            check(time.monotonic() < end, "rotation %d not over: %r"
                  % (n, u))
            await asyncio.sleep(0.01)
        check(u["connection_id"] == r["to"] and u["state"] == "ready",
              "after rotation %d: %r" % (n, u))
        # the next one at another point of exsim's 100 ms publishing
        await asyncio.sleep(rnd.uniform(0, 0.15))
    elapsed = time.monotonic() - t0
    stop.set()
    await churner

    # the market stops: books and trades can be compared with exsim's
    h.control("rate 0")
    await asyncio.sleep(1.0)
    u = await status(h)
    check(h.status()["client_errors"] == 0, "client_errors in /status")
    check(u["rotations"] == ROTATIONS and u["rotations_failed"] == 0
          and u["disconnects"] == 0 and len(u["connections"]) == 1,
          "status %r" % u)
    check(u["rotation_switches_forced"] == 0,
          "channels switched as after an outage: %r" % u)
    # every book switched on its chain: no gap, no bridge, no resync
    check(u["book_gaps"] == 0 and u["book_resyncs"] == 0
          and u["unrepaired_gaps"] == 0, "continuity repaired: %r" % u)
    check(u["cod_disabled_on_retire"] == ROTATIONS
          and u["cod_disable_failed"] == 0, "cod on retire: %r" % u)
    st = h.control("stats")
    check(st["requests"].get("private/disable_cancel_on_disconnect", 0)
          - cod_off0 == ROTATIONS, "exsim disable_cod %r" % st["requests"])
    check(st["closes_cod_on"] == 0 and st["cod_cancels"] == 0,
          "a connection closed with COD on: %r" % st)

    books = {}
    for i, ch in zip(INSTRS, BOOKS):
        ob = await d.call("public/get_order_book",
                          {"instrument_name": i, "depth": 10000})
        books[ch] = ob
    last_trade = {}
    for i, ch in zip(INSTRS, TRADES):
        lt = await d.call("public/get_last_trades_by_instrument",
                          {"instrument_name": i, "count": 1,
                           "sorting": "desc"})
        last_trade[ch] = lt["trades"][0]["trade_seq"]
    states = {}
    for oid in resting + placed:
        o = await d.call("private/get_order_state", {"order_id": oid})
        states[oid] = tuple(o[f] for f in FIELDS)
    check(all(states[o][0] == "open" for o in resting),
          "resting orders: %r" % [states[o] for o in resting])

    for c in clients:
        no_errors(c)
        for ch in BOOKS:
            bk = gh.Book("%s %s" % (c.name, ch), ch)
            bk.feed(c, 0)
            ob = books[ch]
            check(bk.snapshots == 1, "%s: %d snapshots" % (bk.name,
                                                          bk.snapshots))
            check(bk.change_id == ob["change_id"], "%s: change_id %s, "
                  "exsim %s" % (bk.name, bk.change_id, ob["change_id"]))
            check(bk.bids == {p: a for p, a in ob["bids"]}
                  and bk.asks == {p: a for p, a in ob["asks"]},
                  "%s: book differs from exsim's" % bk.name)
        for ch in TRADES:
            check(gh.seq_holes(c, ch) == [], "%s %s: holes %r"
                  % (c.name, ch, gh.seq_holes(c, ch)[:5]))
            s = gh.trade_seqs(c, ch)
            check(s and s[-1] == last_trade[ch], "%s %s: last %s, exsim %s"
                  % (c.name, ch, s[-1] if s else None, last_trade[ch]))
        got = {}
        seen = []
        for o in gh.notes_data(c, ORDERS):
            got[o["order_id"]] = tuple(o[f] for f in FIELDS)
            seen.append((o["order_id"],) + got[o["order_id"]])
        check(len(seen) == len(set(seen)), "%s: an order state twice"
              % c.name)
        for oid, want in states.items():
            check(got.get(oid) == want, "%s: order %s: %r, exsim %r"
                  % (c.name, oid, got.get(oid), want))

    times = [int(x) for x in
             [l.split("ms after the start")[0].rsplit(" ", 1)[-1]
              for l in h.log_lines(r"upstream sim#\d+: rotation #\d+: "
                                   r"#\d+ closed \(.*ms after the start")]]
    check(len(times) == ROTATIONS, "%d close lines" % len(times))
    # old connections waited for the slow request in flight on them
    check(max(times[PLAIN:]) >= 100, "no rotation waited for a request: "
          "%r" % times)
    print("rotation start -> old connection closed: %d plain: median %.0f "
          "ms, max %d ms; %d with a slow request and late subscribe "
          "answers: median %.0f ms, max %d ms (%.1f s in all, %d orders "
          "placed and %d slow requests answered meanwhile, %d channels in "
          "line, %d quiet)"
          % (PLAIN, statistics.median(times[:PLAIN]), max(times[:PLAIN]),
             ROTATIONS - PLAIN, statistics.median(times[PLAIN:]),
             max(times[PLAIN:]), elapsed, len(placed), len(slow),
             u["rotation_switches_in_line"], u["rotation_switches_quiet"]))
    for c in clients:
        await c.close()
    await d.close()


def sync_body(h):
    asyncio.run(asyncio.wait_for(body(h), 150))
    if h.gate is not None and h.gate.poll() is None:
        gh.stop_clean(h)


uh.run("test_gateway_rotate", sync_body)
