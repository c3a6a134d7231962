"""Requests from edges served by the core (issue 17): a real redis-server
on a free loopback port (with a password), exsim, and exgate whose
upstream has `publish`. The test plays the edges with a RESP client: it
XADDs requests to PREFIX:sim:req and reads the answers on
PREFIX:sim:ans:EDGE.

- public/get_instruments, public/ticker, private/buy,
  private/get_open_orders_by_instrument, private/cancel: each answer comes
  on the edge's stream with the rid as its id (entry field and body id),
  and says what exsim says (instruments, ticker instrument, the order
  placed, found open, then cancelled: compared with a direct exsim client
  of the same account and with exsim's orders_placed);
- a request whose ts is older than request_timeout (2 s) is never run:
  no answer, exsim's orders_placed unchanged, counted stale;
- malformed entries (no body, bad edge names, a bad rid, a body that is
  not JSON or has a NUL, a body id that is not the rid) and a local method
  (public/subscribe: -32601) are refused and counted, the readable ones
  answered with an error, and the next good request is served;
- two edges: each stream has its own edge's answers only;
- an edge with queue_limit (3) requests in flight (exsim holds them):
  its next one is answered 13028 (never run); another edge's is served;
- the exchange connection dropped with a read and an order in flight
  (exsim's delay and hold): the read is sent again and answered, the
  order gets 13028 and is never run;
- the reader's connection killed (CLIENT KILL; the stream stays): the
  requests after it are served, and none before it runs twice (exsim's
  orders_placed moves by exactly the new buys);
- the publish connection down with the reader up (its AUTH refused:
  the password changed, its connection killed): a request is not run
  (orders_placed unchanged, the read put off: `waits`) until the
  publisher is back, then run once and answered, no answer lost; an
  order's answer coming back from exsim while the publisher is down is
  held (answers_held 1) and written once it is back;
- redis-server restarted: the reader reconnects by itself and serves
  again;
- /status "publish"."requests" and /metrics exgate_publish_requests_total
  agree with what was sent; `promtool check metrics` passes (when
  promtool is installed).

Skips (exit 77) only when /usr/bin/redis-server is missing.
"""

import json
import os
import sys
import re
import time
import urllib.request

import gateway_harness as gh
from gateway_harness import check, free_port, WSClient
from test_admin_metrics import PROMTOOL, Scrape
from test_publish_redis import Resp, run_with_redis, start_redis

PREFIX = "xgq"
PW = "req-pw"
REQ = PREFIX + ":sim:req"
BTC = "BTC-PERPETUAL"
UPSTREAM = """    protocol deribit;
    auth client_credentials exsim env:XG_TEST_EXSIM_SECRET;
    reconnect fixed { delay 50ms; }
    request_timeout 2s;
    queue_limit 3;
    publish redis://127.0.0.1:%d prefix=""" + PREFIX + """ password=env:XG_TEST_REDIS_PW;
"""


def now_ms():
    return int(time.time() * 1000)


class Edge:
    """An edge as the wire has it: requests in, answers on its stream."""

    def __init__(self, port, name, base=0):
        self.port = port
        self.name = name
        self.r = Resp(port, PW)
        self.next_rid = now_ms() * 1000 + base
        self.sent = set()
        self.last = "0-0"
        self.got = {}            # rid -> [answer body (dict), ...]
        self.raw = {}            # rid -> [answer body (bytes), ...]

    def reopen(self):
        self.r.close()
        self.r = Resp(self.port, PW)
        self.last = "0-0"

    def xadd(self, **fields):
        args = ["XADD", REQ, "MAXLEN", "~", 100000, "*"]
        for k, v in fields.items():
            args += [k, v]
        return self.r.cmd(*args)

    def send(self, method, params, ts=None):
        self.next_rid += 1
        rid = self.next_rid
        self.sent.add(rid)
        body = json.dumps({"jsonrpc": "2.0", "id": rid, "method": method,
                           "params": params})
        self.xadd(edge=self.name, rid=rid, ts=now_ms() if ts is None else ts,
                  body=body)
        return rid

    def poll(self, block_ms=100):
        r = self.r.cmd("XREAD", "COUNT", 100, "BLOCK", block_ms, "STREAMS",
                       "%s:sim:ans:%s" % (PREFIX, self.name), self.last)
        for _, ents in r or []:
            for eid, fields in ents:
                self.last = eid.decode()
                f = dict(zip([k.decode() for k in fields[::2]], fields[1::2]))
                rid = int(f["rid"])
                self.raw.setdefault(rid, []).append(f["body"])
                self.got.setdefault(rid, []).append(json.loads(f["body"]))

    def answer(self, rid, timeout=5):
        end = time.monotonic() + timeout
        while rid not in self.got:
            if time.monotonic() > end:
                raise gh.Fail("edge %s: no answer to %d" % (self.name, rid))
            self.poll()
        a = self.got[rid]
        check(len(a) == 1, "edge %s: %d answers to %d" % (self.name, len(a),
                                                          rid))
        check(a[0].get("id") == rid, "answer id %r for rid %d"
              % (a[0].get("id"), rid))
        return a[0]

    def result(self, rid, timeout=5):
        a = self.answer(rid, timeout)
        check("result" in a, "edge %s: request %d: %r" % (self.name, rid, a))
        return a["result"]

    def close(self):
        self.r.close()


def reqs(h):
    return h.up()["publish"]["requests"]


def placed(h):
    return h.control("stats")["accounts"]["exsim"]["orders_placed"]


def reading(h):
    r = h.up().get("publish", {}).get("requests")
    return r is not None and r["reading"]


def publisher_down(h, ctl, mine):
    """Kills the core's publish connection and keeps it out (the password
    changed: its AUTH is refused) while the request reader, already in,
    stays; MINE: the test's own connections. CONFIG SET requirepass back
    lets it in again."""
    ports = {c.s.getsockname()[1] for c in mine}
    ctl.cmd("CONFIG", "SET", "requirepass", PW + "-changed")
    killed = []
    listing = ctl.cmd("CLIENT", "LIST").decode()
    for line in listing.splitlines():
        f = dict(kv.split("=", 1) for kv in line.split() if "=" in kv)
        # the test's own, the reader (blocked in XREAD), and a killer of
        # a phase before (closed, not yet reaped)
        if (int(f["addr"].rsplit(":", 1)[1]) in ports
                or f["cmd"] in ("xread", "client|kill")):
            continue
        ctl.cmd("CLIENT", "KILL", "ID", f["id"])
        killed.append(f["id"])
    check(len(killed) == 1, "%d connections killed, want the publisher's: "
          "%s" % (len(killed), listing))
    h.wait_up(lambda u: not u["publish"]["connected"], 5,
              "the publish connection down (its AUTH refused)")


def metric(h, result):
    url = "http://127.0.0.1:%d/metrics" % h.admin_port
    with urllib.request.urlopen(url, timeout=2) as r:
        text = r.read().decode()
    m = re.search(r'^exgate_publish_requests_total\{[^}]*upstream="sim"'
                  r'[^}]*result="%s"[^}]*\} (\d+)$' % result, text, re.M)
    check(m is not None, "no exgate_publish_requests_total{result=%s} in "
          "/metrics" % result)
    return int(m.group(1))


async def body(h):
    os.environ["XG_TEST_EXSIM_SECRET"] = "exsim-secret"
    os.environ["XG_TEST_REDIS_PW"] = PW
    rport = free_port()
    start_redis(h, rport, PW)
    gh.start(h, UPSTREAM % rport, "client_auth off;\n", level="info",
             sim_args=("--no-rate-limit", "--rate", "20"))
    gh.wait_ready(h)
    h.wait_up(lambda u: reading(h), 10, "the request reader reading")
    a = Edge(rport, "edge-a.1")
    b = Edge(rport, "edge_B", 500)

    # ---- reads and an order's life, as exsim has them
    rid = a.send("public/get_instruments", {"currency": "BTC"})
    got = a.result(rid)
    want = await gh.direct_call(h, "public/get_instruments",
                                {"currency": "BTC"})
    check(got == want, "get_instruments through the core differs")
    check(('"id":%d,' % rid).encode() in a.raw[rid][0],
          "the rid is not the answer's id, byte for byte")
    tick = a.result(a.send("public/ticker", {"instrument_name": BTC}))
    check(tick.get("instrument_name") == BTC and "best_bid_price" in tick,
          "ticker %r" % tick)
    p0 = placed(h)
    order = a.result(a.send("private/buy", {
        "instrument_name": BTC, "amount": 10, "type": "limit",
        "price": 999}))["order"]
    check(placed(h) == p0 + 1, "orders_placed %d, want %d" % (placed(h),
                                                            p0 + 1))
    oid = order["order_id"]
    opened = a.result(a.send("private/get_open_orders_by_instrument",
                             {"instrument_name": BTC}))
    direct = await gh.direct_call(h, "private/get_open_orders_by_instrument",
                                  {"instrument_name": BTC})
    check(oid in [o["order_id"] for o in opened], "order %s not open" % oid)
    check(sorted(o["order_id"] for o in opened)
          == sorted(o["order_id"] for o in direct),
          "open orders through the core %r, direct %r" % (opened, direct))
    c = a.result(a.send("private/cancel", {"order_id": oid}))
    check(c.get("order_id") == oid and c.get("order_state") == "cancelled",
          "cancel %r" % c)
    direct = await gh.direct_call(h, "private/get_open_orders_by_instrument",
                                  {"instrument_name": BTC})
    check(oid not in [o["order_id"] for o in direct], "still open at exsim")
    served = reqs(h)["served"]
    check(served == 5, "served %d, want 5" % served)

    # ---- too old: never run
    p0 = placed(h)
    old = a.send("private/buy", {"instrument_name": BTC, "amount": 10,
                                 "type": "limit", "price": 998},
                 ts=now_ms() - 5000)
    h.wait_up(lambda u: u["publish"]["requests"]["stale"] == 1, 5,
              "the stale request counted")
    a.poll(500)
    check(old not in a.got, "a stale request was answered: %r"
          % a.got.get(old))
    check(placed(h) == p0, "a stale buy was placed")

    # ---- malformed entries and a local method: refused, counted
    r0 = reqs(h)
    a.xadd(edge=a.name, rid=7, ts=now_ms())                  # no body
    a.xadd(edge="bad name!", rid=8, ts=now_ms(), body="{}")  # edge
    a.xadd(edge=a.name, rid="x9", ts=now_ms(), body="{}")    # rid
    a.xadd(edge=a.name, rid=10, ts=now_ms(), body="{not json")
    a.xadd(edge=a.name, rid=11, ts=now_ms(), body=json.dumps(
        {"jsonrpc": "2.0", "id": 12, "method": "public/get_time"}))
    a.xadd(edge="e" * 65, rid=13, ts=now_ms(), body="{}")   # too long
    a.xadd(edge=a.name, rid=14, ts=now_ms(),                 # a NUL
           body=b'{"jsonrpc":"2.0","id":14,"method":"public/get_time"\x00}')
    sub = a.send("public/subscribe", {"channels": ["ticker.%s.raw" % BTC]})
    good = a.send("public/get_time", {})
    check(isinstance(a.result(good), int), "get_time after the bad ones")
    for bad in (10, 11, 14):
        e = a.answer(bad)
        check(e.get("error", {}).get("code") == -32600,
              "malformed %d answered %r" % (bad, e))
    e = a.answer(sub)
    check(e.get("error", {}).get("code") == -32601
          and e["error"]["message"] == "not served through the core",
          "local method answered %r" % e)
    check(7 not in a.got and 8 not in a.got, "unanswerable entries answered")
    r1 = reqs(h)
    check(r1["refused"] - r0["refused"] == 8
          and r1["malformed"] - r0["malformed"] == 7
          and r1["served"] - r0["served"] == 1,
          "counts before %r after %r" % (r0, r1))

    # ---- two edges: their own answers only
    ra = [a.send("public/get_time", {}) for _ in range(3)]   # queue_limit
    rb = [b.send("public/get_time", {}) for _ in range(3)]
    for x in ra:
        a.result(x)
    for x in rb:
        b.result(x)
    a.poll(300)
    b.poll(300)
    check(set(b.got) == set(rb), "edge B got %r, sent %r" % (sorted(b.got),
                                                             rb))
    check(set(a.got) <= a.sent | {10, 11, 14}, "edge A got answers it did not "
          "ask for: %r" % sorted(set(a.got) - a.sent))
    check(not set(a.got) & set(rb), "edge A got edge B's answers")
    check(reqs(h)["edges"] == 2, "edges %r" % reqs(h))

    # ---- queue_limit (3) requests of one edge in flight: the next is
    # refused at once, the other edge is not held up
    h.control("hold public/get_time 800")
    held = [b.send("public/get_time", {}) for _ in range(3)]
    h.wait_up(lambda u: u["publish"]["requests"]["in_flight"] == 3, 2,
              "edge B's 3 requests in flight")
    over = b.send("public/get_time", {})
    e = b.answer(over)
    check(e.get("error", {}).get("code") == 13028
          and "queue_limit" in e["error"]["data"]["reason"],
          "over queue_limit: %r" % e)
    other = a.send("public/get_time", {})
    for x in held + [other]:
        check(isinstance((b if x in b.sent else a).result(x), int),
              "held get_time %d" % x)
    h.control("hold public/get_time 0")

    # ---- in flight when the exchange connection drops: the read is sent
    # again, the order is not (13028), as for a local bot
    p0 = placed(h)
    h.control("hold private/buy 3000")
    h.control("delay public/get_time 3000")
    buy = a.send("private/buy", {"instrument_name": BTC, "amount": 10,
                                 "type": "limit", "price": 995})
    read = a.send("public/get_time", {})
    h.wait_up(lambda u: u["pending_requests"] == 2, 2, "both in flight")
    time.sleep(0.1)             # written to exsim (loopback)
    h.control("drop")
    h.control("delay public/get_time 0")
    e = a.answer(buy)
    check(e.get("error", {}).get("code") == 13028, "order in flight at the "
          "drop answered %r, want 13028" % e)
    check(isinstance(a.result(read), int), "the read was not replayed")
    h.control("hold private/buy 0")
    time.sleep(0.2)
    check(placed(h) == p0, "the held buy ran after the drop")
    gh.wait_ready(h)

    # ---- the reader's connection killed: on from its last id, none twice
    p0 = placed(h)
    s0 = reqs(h)["served"]
    killer = Resp(rport, PW)
    killer.cmd("CLIENT", "KILL", "TYPE", "normal", "SKIPME", "yes")
    killer.close()
    a.reopen()
    b.reopen()
    h.wait_up(lambda u: u["publish"]["requests"]["connects"] >= 2
              and reading(h), 10, "the reader back")
    rid = a.send("private/buy", {"instrument_name": BTC, "amount": 10,
                                 "type": "limit", "price": 997})
    oid = a.result(rid)["order"]["order_id"]
    check(placed(h) == p0 + 1, "after the kill: orders_placed %d, want %d"
          % (placed(h), p0 + 1))
    check(reqs(h)["served"] == s0 + 1, "served %d, want %d (an entry run "
          "twice?)" % (reqs(h)["served"], s0 + 1))
    a.result(a.send("private/cancel", {"order_id": oid}))

    # ---- the publish connection down, the reader up (after a Redis
    # restart the reader may be back first): nothing is run while an
    # answer could not be written; once it is up the request is run,
    # once, and answered
    p0 = placed(h)
    r0 = reqs(h)
    ctl = Resp(rport, PW)
    publisher_down(h, ctl, (a.r, b.r, ctl))
    rid = a.send("private/buy", {"instrument_name": BTC, "amount": 10,
                                 "type": "limit", "price": 995})
    time.sleep(0.6)
    r1 = reqs(h)
    check(placed(h) == p0 and r1["served"] == r0["served"],
          "a request was run while its answer could not be written "
          "(orders_placed %d -> %d)" % (p0, placed(h)))
    check(r1["waits"] > r0["waits"] and r1["reading"] is False,
          "the reader did not wait for the publisher: %r" % r1)
    ctl.cmd("CONFIG", "SET", "requirepass", PW)
    oid = a.result(rid, timeout=10)["order"]["order_id"]
    check(placed(h) == p0 + 1 and reqs(h)["answers_lost"]
          == r0["answers_lost"], "after the publisher came back: "
          "orders_placed %d, want %d; answers_lost %d -> %d"
          % (placed(h), p0 + 1, r0["answers_lost"],
             reqs(h)["answers_lost"]))
    a.result(a.send("private/cancel", {"order_id": oid}))
    # an order run, its answer coming back while the publisher is down:
    # held, written once it is up (not lost)
    h.wait_up(lambda u: u["publish"]["connected"], 5, "the publisher back")
    h.control("delay private/buy 1000")
    p0 = placed(h)
    rid = a.send("private/buy", {"instrument_name": BTC, "amount": 10,
                                 "type": "limit", "price": 994})
    gh.uh.wait_for(lambda: placed(h) == p0 + 1, 5, what="the buy placed")
    publisher_down(h, ctl, (a.r, b.r, ctl))
    h.wait_up(lambda u: u["publish"]["requests"]["answers_held"] == 1, 5,
              "the answer held")
    ctl.cmd("CONFIG", "SET", "requirepass", PW)
    h.control("delay private/buy 0")
    oid = a.result(rid, timeout=10)["order"]["order_id"]
    r1 = reqs(h)
    check(r1["answers_held"] == 0 and r1["answers_lost"]
          == r0["answers_lost"], "the held answer: %r" % r1)
    a.result(a.send("private/cancel", {"order_id": oid}))
    ctl.close()

    # ---- redis-server restarted: served again
    a.close()
    b.close()
    rp = [p for p in h.procs if p.args and p.args[0] ==
          "/usr/bin/redis-server"][0]
    rp.terminate()
    rp.wait(5)
    h.wait_up(lambda u: u["publish"]["requests"]["state"] != "connected",
              5, "the reader down")
    time.sleep(0.3)
    start_redis(h, rport, PW)
    h.wait_up(lambda u: reading(h) and u["publish"]["connected"], 10,
              "the reader back after the restart")
    a = Edge(rport, "edge-a.1")
    p0 = placed(h)
    rid = a.send("private/buy", {"instrument_name": BTC, "amount": 10,
                                 "type": "limit", "price": 996})
    oid = a.result(rid)["order"]["order_id"]
    check(placed(h) == p0 + 1, "after the restart: orders_placed %d, want "
          "%d" % (placed(h), p0 + 1))
    a.result(a.send("private/cancel", {"order_id": oid}))

    # ---- round trips: through the wire, and a local bot's beside it
    wire, local = [], []
    bot = await WSClient("bot").connect(h.ws_url)
    for i in range(200):
        t = time.perf_counter()
        a.result(a.send("public/get_time", {}))
        wire.append(time.perf_counter() - t)
        t = time.perf_counter()
        r = await bot.call("public/get_time", {}, id=i + 1)
        local.append(time.perf_counter() - t)
        check(isinstance(r.get("result"), int), "bot get_time %r" % r)
    await bot.close()
    wire.sort()
    local.sort()
    sys.stderr.write("public/get_time round trip, 200 sequential: through "
                     "redis p50 %.0f us p99 %.0f us; local bot p50 %.0f us "
                     "p99 %.0f us\n" % (wire[100] * 1e6, wire[197] * 1e6,
                                         local[100] * 1e6, local[197] * 1e6))

    # ---- counters
    r = reqs(h)
    check(r["in_flight"] == 0 and r["answers_lost"] == 0, "%r" % r)
    for k in ("served", "refused", "stale"):
        check(metric(h, k) == r[k], "/metrics %s %d, /status %d"
              % (k, metric(h, k), r[k]))
    if PROMTOOL is not None:
        sc = Scrape(h)      # promtool check metrics passes
        check(sc.up("exgate_publish_requests_total", result="served")
              == r["served"], "promtool-checked scrape disagrees")
    a.close()


if __name__ == "__main__":
    run_with_redis("core_requests", body)
