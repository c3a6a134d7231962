"""Core and edges over Redis Streams (issue 17), end to end: a real
redis-server, exsim, a core exgate (`publish`) and two edge exgates
(`protocol edge`), each edge with a WebSocket and a TCP bot that change
nothing compared with bots on the core (same Deribit protocol, same URL
path, local auth).

Across 10 upstream drops (exsim `drop`), 5 Redis restarts (its data lost:
no persistence), 3 core restarts (a new epoch each) and an edge restart,
while exsim's market moves:

- no bot of an edge is ever closed (the restarted edge's own bots aside);
- every bot's book is one chain from its single snapshot (the bridging
  changes included) and equals exsim's book at the end;
- every bot's trade_seq is each trade once, in order, no hole;
- requests go through the core: public/get_time, public/get_order_book,
  and orders: private/buy at the edge is placed at exsim (read back
  directly), its answer carries the bot's own id, user.orders through the
  edge shows it, private/cancel cancels it;
- Redis away (stopped for 1 s): an order waits in the edge's queue and is
  placed once it is back;
- the core away (SIGSTOP): an order gets 13888 (outcome unknown) at the
  edge's request_timeout (3 s), and the core, resumed later, does not run
  it (it is older than the core's request_timeout: counted stale); exsim
  never sees it;
- reloads: a new request_timeout keeps the link and the bots; another
  prefix restarts the edge's upstream (its bots closed with 1001);
- /status of the edges shows the Redis side (entries, snapshots,
  answers, links, epoch changes).

Skips (exit 77) only when /usr/bin/redis-server is missing.
"""

import asyncio
import os
import random
import re
import signal
import sys
import time

import gateway_harness as gh
from gateway_harness import check, WSClient, TCPClient
import edge_harness as eh
from test_admin_metrics import Scrape
from test_publish_redis import Resp

BOOK = "book.BTC-PERPETUAL.100ms"
TRADES = "trades.BTC-PERPETUAL.100ms"
ORDERS = "user.orders.BTC-PERPETUAL.raw"
MAIN = ("client_credentials bot env:XG_TEST_BOT_SECRET;\n")
DROPS, REDIS_RESTARTS, CORE_RESTARTS = 10, 5, 3


async def connect_bots(edge, tag):
    ws = await WSClient("%s-ws" % tag).connect(edge.ws_url)
    tcp = await TCPClient("%s-tcp" % tag).connect(edge.tcp_port)
    for i, c in enumerate((ws, tcp)):
        r = await c.call("public/auth", {
            "grant_type": "client_credentials", "client_id": "bot",
            "client_secret": "bot-secret"}, id=100 + i)
        check("result" in r, "%s: auth %r" % (c.name, r))
        r = await c.call("public/subscribe",
                         {"channels": [BOOK, TRADES]}, id=200 + i)
        check(sorted(r.get("result", [])) == sorted([BOOK, TRADES]),
              "%s: subscribe %r" % (c.name, r))
    for c in (ws, tcp):
        await c.wait_notes(BOOK, 2, timeout=15)
        await c._wait(lambda c=c: len(gh.trade_seqs(c, TRADES)) >= 1, 15,
                      "first trade")
    return [ws, tcp]


def check_bot(c, bids, asks, cid):
    b = gh.Book(c.name, BOOK)
    b.feed(c, 0)
    check(b.snapshots == 1, "%s: %d snapshots" % (c.name, b.snapshots))
    check(b.change_id == cid, "%s: at change_id %s, exchange %s"
          % (c.name, b.change_id, cid))
    check(b.bids == bids and b.asks == asks,
          "%s: book differs from the exchange's" % c.name)
    s = gh.trade_seqs(c, TRADES)
    check(gh.seq_holes(c, TRADES) == [], "%s: trade_seq holes %r"
          % (c.name, gh.seq_holes(c, TRADES)[:5]))
    check(c.closed is None, "%s: closed %r" % (c.name, c.closed))
    return b.n, len(s)


async def settle_all(h, bots):
    """Stops the market; every bot's book and trades against exsim's."""
    h.control("rate 0")
    await asyncio.sleep(1.5)
    res = await gh.direct_call(h, "public/get_order_book",
                               {"instrument_name": "BTC-PERPETUAL",
                                "depth": 1000})
    bids = {p: a for p, a in res["bids"]}
    asks = {p: a for p, a in res["asks"]}
    for c in bots:
        await c._wait(lambda c=c: any(
            m["params"]["data"].get("change_id") == res["change_id"]
            for ch, m in c.notes[-50:] if ch == BOOK), 10,
            "the book at change_id %s" % res["change_id"])
    out = [check_bot(c, bids, asks, res["change_id"]) for c in bots]
    h.control("rate 50")
    return out


async def orders_through(h, c, n, watcher):
    """A buy by C at the edge placed at exsim, then cancelled; its
    answers carry the bot's own ids; WATCHER (a bot on user.orders) sees
    the order."""
    rid = 9000000000000 + n
    r = await c.call("private/buy", {
        "instrument_name": "BTC-PERPETUAL", "amount": 10, "type": "limit",
        "price": 1000 + n, "label": "edge-%d" % n}, id=rid, timeout=10)
    check(r.get("id") == rid and "result" in r, "%s: buy %r" % (c.name, r))
    oid = r["result"]["order"]["order_id"]
    opens = await gh.direct_call(h, "private/get_open_orders_by_instrument",
                                 {"instrument_name": "BTC-PERPETUAL"})
    check(any(o["order_id"] == oid for o in opens),
          "%s: order %s not open at exsim" % (c.name, oid))
    await watcher._wait(lambda: any(
        isinstance(m["params"]["data"], dict)
        and m["params"]["data"].get("order_id") == oid
        for ch, m in watcher.notes if ch == ORDERS), 10,
        "user.orders of %s" % oid)
    r = await c.call("private/cancel", {"order_id": oid}, id=rid + 1,
                     timeout=10)
    check(r.get("result", {}).get("order_state") == "cancelled",
          "%s: cancel %r" % (c.name, r))
    return oid


async def body(h):
    os.environ["XG_TEST_EXSIM_SECRET"] = "exsim-secret"
    os.environ["XG_TEST_BOT_SECRET"] = "bot-secret"
    rnd = random.Random(17)
    redis = eh.Redis(h)
    eh.start_core(h, redis,
                  "    auth client_credentials exsim env:XG_TEST_EXSIM_SECRET;\n"
                  "    request_timeout 3s;\n",
                  "client_auth off;\nunsubscribe_linger 3s;\n",
                  sim_args=("--no-rate-limit", "--rate", "50"))
    e1 = eh.Edge(h, "edge1", redis.port, main_extra=MAIN,
                 extra="    request_timeout 3s;\n").start()
    e2 = eh.Edge(h, "edge2", redis.port, main_extra=MAIN).start()
    for e in (e1, e2):
        e.wait_up(lambda u: u["state"] == "ready", 10, "ready")
    bots1 = await connect_bots(e1, "e1")
    bots2 = await connect_bots(e2, "e2")
    t0 = time.monotonic()

    # requests through the core
    c = bots1[0]
    r = await c.call("public/get_time", {}, id="t1", timeout=10)
    check(isinstance(r.get("result"), int), "get_time %r" % r)
    r = await c.call("private/subscribe", {"channels": [ORDERS]}, id=300,
                     timeout=10)
    check(r.get("result") == [ORDERS], "user.orders subscribe %r" % r)
    await asyncio.sleep(1.5)    # the core takes it from the interest
    await orders_through(h, c, 1, c)

    # the faults, interleaved
    faults = (["drop"] * DROPS + ["redis"] * REDIS_RESTARTS
              + ["core"] * CORE_RESTARTS)
    rnd.shuffle(faults)
    for i, f in enumerate(faults):
        n = bots1[0].count(BOOK)
        await bots1[0].wait_notes(BOOK, n + 3, timeout=20)
        if f == "drop":
            h.control("drop")
        elif f == "redis":
            redis.restart()
        else:
            eh.restart_core(h)
        await asyncio.sleep(0.3 + rnd.random() * 0.5)
    # the edge restart: its bots come back on the new process
    for c in bots2:
        await c.close()
    e2.stop()
    e2.start()
    e2.wait_up(lambda u: u["state"] == "ready", 10, "ready after restart")
    bots2 = await connect_bots(e2, "e2b")
    for c in bots1 + bots2:
        await c.wait_notes(BOOK, c.count(BOOK) + 5, timeout=20)
    await orders_through(h, bots1[1], 2, bots1[0])

    # Redis away: an order waits for it (queue_timeout), then is placed
    redis.proc.terminate()
    redis.proc.wait(5)
    key = await bots1[0].request("private/buy", {
        "instrument_name": "BTC-PERPETUAL", "amount": 10, "type": "limit",
        "price": 900, "label": "edge-queued"}, id=777)
    await asyncio.sleep(1.0)
    redis.proc = eh.start_redis(h, redis.port, None)
    r = await bots1[0].answer(key, timeout=10)
    check("result" in r and r["id"] == 777, "queued buy %r" % r)
    await asyncio.sleep(1.5)    # the interest again (Redis lost it)

    # the core away (stopped): the order's answer never comes; the bot
    # gets 13888 (outcome unknown) at the edge's request_timeout, and the
    # core, back later, does not run a request older than its own
    os.kill(h.gate.pid, signal.SIGSTOP)
    try:
        t1 = time.monotonic()
        r = await bots1[0].call("private/buy", {
            "instrument_name": "BTC-PERPETUAL", "amount": 10,
            "type": "limit", "price": 901, "label": "edge-late"}, id=778,
            timeout=10)
        took = time.monotonic() - t1
        check(r.get("error", {}).get("code") == 13888,
              "buy with the core stopped: %r" % r)
        check(2.5 < took < 5, "13888 after %.1f s" % took)
        await asyncio.sleep(1.5)
    finally:
        os.kill(h.gate.pid, signal.SIGCONT)
    await asyncio.sleep(1.5)
    opens = await gh.direct_call(h, "private/get_open_orders_by_instrument",
                                 {"instrument_name": "BTC-PERPETUAL"})
    labels = [o.get("label") for o in opens]
    check("edge-late" not in labels and "edge-queued" in labels,
          "labels open at exsim %r" % labels)
    req = h.up()["publish"]["requests"]
    check(req.get("stale", 0) >= 1, "core requests %r" % req)

    # a reload that keeps the core (a new request_timeout): the link
    # stays, the bots see nothing; one that names another prefix
    # restarts the upstream (its bots closed with 1001, as for any
    # upstream whose change cannot be applied in place)
    links = e1.up()["edge"]["links"]
    check(e1.reload("    request_timeout 4s;\n"), "edge1 reload refused")
    await asyncio.sleep(0.5)
    check(e1.up()["edge"]["links"] == links, "the reload remade the link")
    for c in bots1:
        await c.wait_notes(BOOK, c.count(BOOK) + 3, timeout=10)
    check(e2.reload("", prefix="other"), "edge2 reload refused")
    for c in bots2:
        await c.wait_closed(timeout=10)
        check(c.closed[0] in (1001, "eof"), "%s: closed %r"
              % (c.name, c.closed))
    check(e2.reload(""), "edge2 reload back refused")
    e2.wait_up(lambda u: u["state"] == "ready", 10, "ready after reloads")
    bots2 = await connect_bots(e2, "e2c")

    stats = await settle_all(h, bots1 + bots2)
    u1, u2 = e1.up(), e2.up()
    print("%d drops, %d redis restarts, %d core restarts, 1 edge restart "
          "in %.1f s; edge1 %s; per bot (book messages, trades) %r"
          % (DROPS, REDIS_RESTARTS, CORE_RESTARTS, time.monotonic() - t0,
             {k: u1["edge"].get(k) for k in (
                 "links", "entries", "snapshots", "answers", "gaps",
                 "epoch_changes", "requests_lost")}, stats))
    check(u1["edge"]["epoch_changes"] == CORE_RESTARTS
          and u1["edge"]["links"] == CORE_RESTARTS + 1,
          "edge1 saw %d epoch changes, made %d links"
          % (u1["edge"]["epoch_changes"], u1["edge"]["links"]))
    check(u1["edge"]["state"] == "connected"
          and u1["edge"]["redis"]["connects"] >= 2,
          "edge1 redis side %r" % u1["edge"])
    # /metrics of an edge: promtool-clean, and as /status says
    m = Scrape(e1)
    check(m.get("exgate_edge_connected", upstream="sim") == 1,
          "exgate_edge_connected")
    check(m.get("exgate_edge_epoch_changes_total", upstream="sim")
          == CORE_RESTARTS, "exgate_edge_epoch_changes_total")
    check(m.get("exgate_edge_entries_total", upstream="sim")
          >= u1["edge"]["entries"], "exgate_edge_entries_total")
    check(0 <= m.get("exgate_edge_lag_seconds", upstream="sim") < 5,
          "exgate_edge_lag_seconds")
    check(0 <= m.get("exgate_edge_lag_entries", upstream="sim") < 1000,
          "exgate_edge_lag_entries")
    # the last entry edge1 delivered, by its id (copied once an entry):
    # the whole id of an entry of one of its streams
    last = e1.up()["edge"]["last_id"]
    check(re.fullmatch(r"[1-9][0-9]*-0", last or "") is not None,
          "edge1 last_id %r" % last)
    r = Resp(redis.port)
    try:
        found = [ch for ch in (BOOK, TRADES) if r.cmd(
            "XRANGE", "%s:sim:%s" % (e1.prefix, ch), last, last)]
    finally:
        r.close()
    check(found, "edge1 last_id %s is in none of its streams" % last)
    for c in bots1 + bots2:
        await c.close()
    e1.stop()
    e2.stop()


def sync_body(h):
    asyncio.run(asyncio.wait_for(body(h), 240))
    if h.gate is not None and h.gate.poll() is None:
        gh.stop_clean(h)


if __name__ == "__main__":
    if not os.access("/usr/bin/redis-server", os.X_OK):
        sys.stderr.write("SKIP: /usr/bin/redis-server is missing\n")
        sys.exit(77)
    gh.uh.run("edge", sync_body)
