"""The request budget of an account, shared fairly (issue 15).

Ten bots on one account, each as greedy as the next but not equally so
(bot i keeps 10 + 5 i requests outstanding: 10 to 55), against exsim with
its credits on (exchange-protocols.md A6):

- non-matching: 20 s of public/get_time. exsim never rate-limits the
  account (its `rate_limited` stays 0), the upstream connection is never
  closed (no 1008, one connect), every request gets its answer or the
  gateway's queue_timeout error, the answered requests per bot are within
  20 % of the mean (round robin: a FIFO would share in proportion to the
  windows, up to 1:5.5), and the answers are at least 90 % of what the budget
  allows in that time (the burst and the refill of the conf's pool);
- matching engine: 6 s of private/buy the same way, paid from its own
  pool (tier 4 here: a burst of 20, 5/s): not rate-limited, at least 90 %
  of that budget;
- the gateway's own requests go first: with `heartbeat 1s` exsim sends a
  test_request every second, each answer costs credits like any request,
  and none is late behind the bots' queue (exsim closes for a late one:
  its heartbeat_closes stays 0); a bot holds a channel, and for 8 s of
  get_time the connection is dropped twice: each restore (auth,
  set_heartbeat, the subscribe) is paid from the same budget, done in
  under 2 s though the bots' requests fill the queue, and exsim still
  never rate-limits;
- an upstream without auth (public data) has the same budget, which
  exsim keeps per IP: 5 s of get_time, not rate-limited, at least 90 %;
- subscribes are batched as before and each batch pays the subscribe
  pool (3000 of 30000, 10000/s): 14 one after the other take their time
  and are not rate-limited;
- /status shows the pools and the requests that waited, /metrics counts
  them (promtool, when installed, accepts the exposition);
- with `rate_limit off;` the same bots make exsim answer 10028 and close
  the connection with 1008 within seconds: what the budget prevents.
"""

import asyncio
import json
import os
import shutil
import subprocess
import time
import urllib.request

import websockets

import gateway_harness as gh
from gateway_harness import check

NM_BURST, NM_REFILL, NM_COST = 50000, 10000, 500      # the conf's below
ME_BURST, ME_REFILL = 20, 5
QUEUE_TIMEOUT = 4.0

UPSTREAM = """    protocol deribit;
    auth client_credentials exsim env:XG_TEST_EXSIM_SECRET;
    heartbeat 1s;
    queue_timeout 4s;
    rate_limit on;
    rate_limit_pool non_matching %d %d;
    rate_limit_pool matching %d %d;
""" % (NM_BURST, NM_REFILL, ME_BURST, ME_REFILL)

BUY = {"instrument_name": "BTC-PERPETUAL", "amount": 10, "price": 50000}


class Bot:
    """A client that keeps WINDOW requests outstanding, one sent as soon
    as one is answered."""

    def __init__(self, i, window):
        self.i = i
        self.window = window
        self.out = {}           # id -> send time
        self.answered = []      # answer times of results
        self.timed_out = 0      # the gateway's queue_timeout (13028)
        self.reasons = set()    # ... and what it said
        self.other = []         # anything else
        self.n = 0
        self.sem = None

    async def open(self, url):
        self.ws = await websockets.connect(url, max_size=None)
        self.task = asyncio.ensure_future(self._read())
        return self

    async def _read(self):
        try:
            async for m in self.ws:
                msg = json.loads(m)
                rid = msg.get("id")
                if rid not in self.out:
                    continue
                del self.out[rid]
                if "result" in msg:
                    self.answered.append(time.monotonic())
                elif msg.get("error", {}).get("code") == 13028:
                    self.timed_out += 1
                    self.reasons.add(msg["error"].get("data", {})
                                     .get("reason"))
                else:
                    self.other.append(msg)
                self.sem.release()
        except websockets.ConnectionClosed:
            pass

    async def run(self, method, params, until):
        self.sem = asyncio.Semaphore(self.window)
        self.answered, self.timed_out, self.other = [], 0, []
        while True:
            left = until - time.monotonic()
            if left <= 0:
                break
            try:
                await asyncio.wait_for(self.sem.acquire(), left)
            except asyncio.TimeoutError:
                break
            self.n += 1
            self.out[self.n] = time.monotonic()
            await self.ws.send(json.dumps({"jsonrpc": "2.0", "id": self.n,
                                           "method": method,
                                           "params": params}))

    async def close(self):
        await self.ws.close()
        self.task.cancel()


async def greedy(bots, method, params, seconds):
    """All BOTS for SECONDS, then until each request is answered or timed
    out; returns (T, answered in T per bot)."""
    t0 = time.monotonic()
    until = t0 + seconds
    await asyncio.gather(*(b.run(method, params, until) for b in bots))
    end = time.monotonic() + QUEUE_TIMEOUT + 12
    while any(b.out for b in bots) and time.monotonic() < end:
        await asyncio.sleep(0.1)
    for b in bots:
        check(not b.out, "bot %d: %d requests never answered nor timed out"
              % (b.i, len(b.out)))
        check(not b.other, "bot %d: other answers %r" % (b.i, b.other[:3]))
    return seconds, [sum(1 for t in b.answered if t <= until) for b in bots]


def promtool(h):
    """The /metrics exposition through `promtool check metrics`, when
    promtool is installed; returns the text."""
    url = "http://127.0.0.1:%d/metrics" % h.admin_port
    with urllib.request.urlopen(url, timeout=5) as r:
        text = r.read().decode()
    if shutil.which("promtool"):
        p = subprocess.run(["promtool", "check", "metrics"], input=text,
                           capture_output=True, text=True)
        check(p.returncode == 0, "promtool: %s %s" % (p.stdout, p.stderr))
    return text


async def with_budget(h):
    os.environ["XG_TEST_EXSIM_SECRET"] = "exsim-secret"
    h.start_sim("--rate", "0", "--min-heartbeat", "1")
    pub_port = gh.free_port()
    gh.start(h, UPSTREAM, "client_auth off;\n"
             "upstream pub {\n    url ws://127.0.0.1:%d/ws/api/v2;\n"
             "    protocol deribit;\n    queue_timeout 4s;\n}\n"
             "listen 127.0.0.1:%d websocket upstream=pub;\n"
             % (h.ws_port, pub_port), level="info")
    gh.wait_ready(h)
    h.wait_up(lambda u: u.get("state") == "ready", 10, "pub ready",
              name="pub")
    bots = [await Bot(i, 10 + 5 * i).open(h.ws_url) for i in range(10)]

    # non-matching: 20 s of get_time
    await asyncio.sleep(0.5)        # the restore's credits back
    t, counts = await greedy(bots, "public/get_time", {}, 20)
    mean = sum(counts) / len(counts)
    spread = max(abs(c - mean) for c in counts) / mean * 100
    allowed = (NM_BURST + NM_REFILL * t) / NM_COST
    ratio = sum(counts) / allowed * 100
    timed_out = sum(b.timed_out for b in bots)
    print("non_matching: answered per bot %s (windows 10..55), spread %.1f %% "
          "of the mean; %d answered in %.0f s, the budget allows %.0f: "
          "%.1f %%; %d timed out in the queue"
          % (counts, spread, sum(counts), t, allowed, ratio, timed_out))
    st = h.sim.control("stats")
    check(st["rate_limited"] == 0, "exsim rate-limited %d times"
          % st["rate_limited"])
    check(spread <= 20, "spread %.1f %% > 20 %%: %r" % (spread, counts))
    check(ratio >= 90, "throughput %.1f %% of the budget" % ratio)
    check(timed_out > 0, "the greedy bots did wait past queue_timeout")
    reasons = set().union(*(b.reasons for b in bots))
    check(reasons == {"the request budget did not allow it within "
                      "queue_timeout; the request was not sent"},
          "queue_timeout reasons %r" % reasons)

    u = h.up()
    b = u["budget"]
    check(b["rate_limit"] is True and b["waited"] > 0,
          "/status budget: %r" % b)
    check(set(b["pools"]) == {"non_matching", "matching", "subscribe",
                              "get_instruments"}, "pools %r" % b["pools"])
    check(b["pools"]["non_matching"]["max"] == NM_BURST
          and b["pools"]["matching"]["refill"] == ME_REFILL,
          "pools from the conf: %r" % b["pools"])

    # matching engine: 6 s of private/buy, its own pool
    t, counts = await greedy(bots, "private/buy", BUY, 6)
    allowed = ME_BURST + ME_REFILL * t
    ratio = sum(counts) / allowed * 100
    print("matching: %d answered in %.0f s, the budget allows %.0f: %.1f %%"
          % (sum(counts), t, allowed, ratio))
    st = h.sim.control("stats")
    check(st["rate_limited"] == 0, "exsim rate-limited %d times (matching)"
          % st["rate_limited"])
    check(ratio >= 90, "matching throughput %.1f %% of the budget" % ratio)

    u = h.up()
    check(u["connects"] == 1, "upstream connects %d" % u["connects"])
    st = h.sim.control("stats")
    check(st["heartbeat_closes"] == 0, "late heartbeat answers: %r" % st)

    # restores under load: two drops during 8 s of get_time
    sub = await gh.WSClient("sub").connect(h.ws_url)
    r = await sub.call("public/subscribe",
                       {"channels": ["ticker.BTC-PERPETUAL.100ms"]}, id=1)
    check(r.get("result") == ["ticker.BTC-PERPETUAL.100ms"], "sub %r" % r)

    async def drops():
        for _ in range(2):
            await asyncio.sleep(2.5)
            n = h.up()["restores"]
            h.sim.control("drop")
            end = time.monotonic() + 10
            while h.up()["restores"] == n and time.monotonic() < end:
                await asyncio.sleep(0.05)
            ms = h.up()["last_restore_ms"]
            print("restore under load: %d ms" % ms)
            check(ms < 2000, "restore took %d ms behind the bots" % ms)
    await asyncio.gather(greedy(bots, "public/get_time", {}, 8), drops())
    st = h.sim.control("stats")
    check(st["rate_limited"] == 0, "exsim rate-limited %d times (restores)"
          % st["rate_limited"])
    check(st["heartbeat_closes"] == 0, "late heartbeat answers: %r" % st)
    check(st["subscribed"].get("ticker.BTC-PERPETUAL.100ms") == 1,
          "resubscribed: %r" % st["subscribed"])
    check(h.up()["connects"] == 3, "connects %r" % h.up()["connects"])
    await sub.close()

    # subscribes pay their own pool: 14 one after the other are 14
    # batches of 3000 credits from 30000 refilled at 10000/s: 9 at once
    # (the reserve kept), then one each 0.3 s
    names = ["%s.%s.100ms" % (k, i) for k in ("ticker", "book", "trades")
             for i in ("BTC-PERPETUAL", "ETH-PERPETUAL", "BTC-26DEC26")]
    names += ["ticker.BTC-PERPETUAL.agg2", "ticker.ETH-PERPETUAL.agg2",
              "book.BTC-PERPETUAL.agg2", "book.ETH-PERPETUAL.agg2",
              "deribit_price_index.btc_usd"]
    sub = await gh.WSClient("sub2").connect(h.ws_url)
    spent0 = h.up()["budget"]["pools"]["subscribe"]["spent"]
    t0 = time.monotonic()
    for n, name in enumerate(names):
        r = await sub.call("public/subscribe", {"channels": [name]},
                           id=100 + n)
        check(r.get("result") == [name], "subscribe %s: %r" % (name, r))
    took = time.monotonic() - t0
    spent = h.up()["budget"]["pools"]["subscribe"]["spent"] - spent0
    print("14 subscribes one by one: %.2f s, %d credits" % (took, spent))
    check(spent == 14 * 3000, "subscribe credits %r" % spent)
    check(took >= 1.2, "14 subscribes in %.2f s: not paced" % took)
    st = h.sim.control("stats")
    check(st["rate_limited"] == 0, "exsim rate-limited %d times (subscribe)"
          % st["rate_limited"])
    await sub.close()
    check(not h.log_lines(r"1008|too_many_requests"),  # drops: 1000
          "the exchange closed or refused: %r"
          % h.log_lines(r"1008|too_many_requests")[:3])
    # no auth: the gateway's address pays (exsim: per IP), the same pools
    pub = [await Bot(i, 10 + 5 * i).open("ws://127.0.0.1:%d/ws/api/v2"
                                        % pub_port) for i in range(10)]
    t, counts = await greedy(pub, "public/get_time", {}, 5)
    allowed = (NM_BURST + NM_REFILL * t) / NM_COST
    print("public (per IP): %d answered in %.0f s, the budget allows %.0f: "
          "%.1f %%" % (sum(counts), t, allowed, sum(counts) / allowed * 100))
    st = h.sim.control("stats")
    check(st["rate_limited"] == 0, "exsim rate-limited %d times (public)"
          % st["rate_limited"])
    check(sum(counts) >= 0.9 * allowed, "public throughput %r" % counts)
    for bt in pub:
        await bt.close()

    m = promtool(h)
    check("exgate_upstream_requests_waited_total{upstream=\"sim\"}" in m
          and 'exgate_upstream_budget_level{upstream="sim",pool="matching"}'
          in m, "budget metrics missing")
    for bt in bots:
        await bt.close()
    gh.stop_clean(h)


async def without_budget(h):
    sim = h.start_sim("--rate", "0", "--min-heartbeat", "1")
    port = gh.free_port()
    conf = ("client_auth off;\n"
            "upstream off {\n    url ws://127.0.0.1:%d/ws/api/v2;\n"
            "%s    rate_limit off;\n}\n"
            "listen 127.0.0.1:%d websocket upstream=off;\n"
            % (sim.ws_port, UPSTREAM.replace("    rate_limit on;\n", ""),
               port))
    h.start_gate_conf(conf, "info")
    h.wait_up(lambda u: u.get("state") == "ready", 10, "ready", name="off")
    url = "ws://127.0.0.1:%d/ws/api/v2" % port
    bots = [await Bot(i, 10 + 5 * i).open(url) for i in range(10)]
    t0 = time.monotonic()
    await asyncio.gather(*(b.run("public/get_time", {}, t0 + 3)
                           for b in bots))
    st = sim.control("stats")
    print("rate_limit off: exsim rate-limited %d times in 3 s"
          % st["rate_limited"])
    check(st["rate_limited"] > 0, "no budget, yet exsim never rate-limited")
    check(h.log_lines(r"1008"), "no 1008 close without the budget")
    for bt in bots:
        await bt.close()


def body(h):
    asyncio.run(asyncio.wait_for(with_budget(h), 120))
    asyncio.run(asyncio.wait_for(without_budget(h), 60))
    gh.stop_clean(h)


gh.uh.run("gateway_budget", body)
