"""The named bounds of an edge (issue 17, `protocol edge`), each at its
limit: a real redis-server, exsim, a core exgate (`publish`) and one edge
with one WebSocket bot (authenticated locally).

- queue_limit (3) while Redis is away (its process stopped): 5 orders
  (private/buy, distinct labels, ids of five JSON forms): the 4th and 5th
  get 10028 at once with their ids byte for byte, the first 3 wait; when
  Redis is back the 3 are answered (their ids byte for byte) and placed at
  exsim exactly once each (read back directly from exsim: open orders by
  label, and exsim's orders_placed), the 2 refused never;
- queue_timeout (1 s, a reload that keeps the link) while Redis stays
  away: an order gets 13028 after about 1 s (0.8 to 3 s), and is never
  placed once Redis is back (an order sent after it is placed, so the
  queue has been run by then);
- the edge's channel limit (10000, the core's XG_REDIS_INTEREST_MAX): a
  bot (client_max_channels 20000) takes 10000 channels, then a subscribe
  of 5 more gets 11052 with the reason, and a warning is logged; the edge
  still holds 10000 (/status); with 3 let go, a subscribe of 5 (across
  the limit) is refused whole (11052, still 9997 held). The core is stopped (SIGSTOP) meanwhile
  and the interest set deleted before it resumes, so that it never
  subscribes the 10000 made-up channels at exsim.

Skips (exit 77) only when /usr/bin/redis-server is missing.
"""

import asyncio
import os
import re
import signal
import sys
import time

import gateway_harness as gh
from gateway_harness import check, WSClient
import edge_harness as eh
from test_publish_redis import Resp

MAIN = ("client_credentials bot env:XG_TEST_BOT_SECRET;\n"
        "client_max_channels 20000;\n")
BTC = "BTC-PERPETUAL"
# five JSON forms of an id, each to come back as written
IDS = ["1.50", '"q-\\u00e9"', "123456789012345678901234567890", "-7",
       '"q-5"']
NCHANS = 10000
PER_CALL = 1250         # channel names per subscribe (under 32 kB)


def raw_answer(c, raw_id):
    """The text of C's answer whose id is RAW_ID as written, or None."""
    pat = re.compile(r'"id":%s[,}]' % re.escape(raw_id))
    for t in c.raw:
        if pat.search(t) and '"method":"subscription"' not in t:
            return t
    return None


async def wait_raw(c, raw_id, timeout):
    return await c._wait(lambda: raw_answer(c, raw_id), timeout,
                         "the answer to id %s" % raw_id)


def placed(h):
    return h.control("stats")["accounts"]["exsim"]["orders_placed"]


async def open_labels(h):
    opens = await gh.direct_call(h, "private/get_open_orders_by_instrument",
                                 {"instrument_name": BTC})
    return [o.get("label") for o in opens]


def buy(price, label):
    return {"instrument_name": BTC, "amount": 10, "type": "limit",
            "price": price, "label": label}


def redis_stop(redis, edge):
    redis.proc.terminate()
    redis.proc.wait(5)
    edge.wait_up(lambda u: u["edge"]["state"] != "connected", 5,
                 "redis seen away")


def redis_start(h, redis, edge):
    redis.proc = eh.start_redis(h, redis.port, None)
    edge.wait_up(lambda u: u["edge"]["state"] == "connected", 10,
                 "redis back")


async def queue_limit(h, redis, edge, bot):
    p0 = placed(h)
    redis_stop(redis, edge)
    t0 = time.monotonic()
    for i, rid in enumerate(IDS):
        await bot.request("private/buy", buy(1100 + i, "ql-%d" % i),
                          raw_id=rid)
    for rid in IDS[3:]:
        t = await wait_raw(bot, rid, 2)
        check('"code":10028' in t, "over queue_limit: %s" % t)
    took = time.monotonic() - t0
    check(took < 1, "10028 after %.2f s" % took)
    check(edge.log().count("refused: 3 requests wait for the core, "
                           "queue_limit 3 (redis unreachable)") == 2,
          "no log line for each request over queue_limit")
    await asyncio.sleep(0.5)
    for rid in IDS[:3]:
        check(raw_answer(bot, rid) is None, "answered with redis away: %s"
              % raw_answer(bot, rid))
    check(edge.up()["edge"]["in_flight"] == 3, "in_flight %r"
          % edge.up()["edge"])
    redis_start(h, redis, edge)
    for i, rid in enumerate(IDS[:3]):
        t = await wait_raw(bot, rid, 10)
        check('"result"' in t and '"label":"ql-%d"' % i in t,
              "queued buy %s: %s" % (rid, t))
    labels = await open_labels(h)
    for i in range(5):
        n = labels.count("ql-%d" % i)
        check(n == (1 if i < 3 else 0), "ql-%d open %d times at exsim (%r)"
              % (i, n, labels))
    check(placed(h) - p0 == 3, "exsim placed %d orders" % (placed(h) - p0))
    return took


async def queue_timeout(h, redis, edge, bot):
    links = edge.up()["edge"]["links"]
    check(edge.reload("    queue_limit 3;\n    queue_timeout 1s;\n"),
          "edge reload refused")
    check(edge.up()["edge"]["links"] == links, "the reload remade the link")
    p0 = placed(h)
    exp0 = edge.up()["edge"]["requests_expired"]
    redis_stop(redis, edge)
    t0 = time.monotonic()
    await bot.request("private/buy", buy(1200, "qt-late"), raw_id='"qt-1"')
    t = await wait_raw(bot, '"qt-1"', 5)
    took = time.monotonic() - t0
    check('"code":13028' in t, "queue_timeout: %s" % t)
    check(0.8 <= took <= 3, "13028 after %.2f s" % took)
    check("refused: not written to redis within queue_timeout 1000 ms"
          in edge.log(), "no log line for the request over queue_timeout")
    check(edge.up()["edge"]["requests_expired"] == exp0 + 1,
          "requests_expired %r" % edge.up()["edge"])
    redis_start(h, redis, edge)
    r = await bot.call("private/buy", buy(1201, "qt-after"), id="qt-2",
                       timeout=10)
    check("result" in r, "buy after redis is back: %r" % r)
    await asyncio.sleep(1)
    labels = await open_labels(h)
    check("qt-late" not in labels and labels.count("qt-after") == 1,
          "open at exsim %r" % labels)
    check(placed(h) - p0 == 1, "exsim placed %d orders" % (placed(h) - p0))
    return took


async def channel_limit(h, redis, edge, bot):
    names = ["ticker.Z%05d.100ms" % i for i in range(NCHANS + 5)]
    t0 = time.monotonic()
    for k in range(0, NCHANS, PER_CALL):
        part = names[k:min(k + PER_CALL, NCHANS)]
        r = await bot.call("public/subscribe", {"channels": part},
                           id=500 + k, timeout=20)
        check(sorted(r.get("result", [])) == sorted(part),
              "subscribe %d..: %r" % (k, str(r)[:300]))
    edge.wait_up(lambda u: u["edge"]["channels"] == NCHANS, 10,
                 "%d channels" % NCHANS)
    took = time.monotonic() - t0
    r = await bot.call("public/subscribe", {"channels": names[NCHANS:]},
                       id="over", timeout=10)
    err = r.get("error", {})
    check(err.get("code") == 11052
          and "10000 channels" in err.get("data", {}).get("reason", ""),
          "subscribe past the limit: %r" % r)
    check("the edge holds 10000 channels, its limit" in edge.log(),
          "no log line for the refused subscribe")
    check(edge.up()["edge"]["channels"] == NCHANS, "channels %r"
          % edge.up()["edge"]["channels"])
    # 3 let go, then 5 new in one subscribe: refused whole, none taken
    r = await bot.call("public/unsubscribe", {"channels": names[:3]},
                       id="less", timeout=10)
    check(sorted(r.get("result", [])) == names[:3], "unsubscribe %r" % r)
    edge.wait_up(lambda u: u["edge"]["channels"] == NCHANS - 3, 10,
                 "%d channels" % (NCHANS - 3))
    r = await bot.call("public/subscribe", {"channels": names[NCHANS:]},
                       id="straddle", timeout=10)
    check(r.get("error", {}).get("code") == 11052,
          "subscribe across the limit: %r" % r)
    await asyncio.sleep(0.3)
    check(edge.up()["edge"]["channels"] == NCHANS - 3, "channels %r"
          % edge.up()["edge"]["channels"])
    return took


async def body(h):
    os.environ["XG_TEST_EXSIM_SECRET"] = "exsim-secret"
    os.environ["XG_TEST_BOT_SECRET"] = "bot-secret"
    t_start = time.monotonic()
    redis = eh.Redis(h)
    eh.start_core(h, redis,
                  "    auth client_credentials exsim env:XG_TEST_EXSIM_SECRET;\n",
                  "client_auth off;\n", sim_args=("--no-rate-limit",))
    edge = eh.Edge(h, "edge1", redis.port, main_extra=MAIN,
                   extra="    queue_limit 3;\n    queue_timeout 10s;\n")
    edge.start()
    edge.wait_up(lambda u: u["state"] == "ready", 10, "ready")
    bot = await WSClient("bot").connect(edge.ws_url)
    r = await bot.call("public/auth", {
        "grant_type": "client_credentials", "client_id": "bot",
        "client_secret": "bot-secret"}, id=1)
    check("result" in r, "auth %r" % r)

    t_limit = await queue_limit(h, redis, edge, bot)
    t_timeout = await queue_timeout(h, redis, edge, bot)

    os.kill(h.gate.pid, signal.SIGSTOP)
    try:
        t_chans = await channel_limit(h, redis, edge, bot)
        await bot.close()
        edge.stop()
        r = Resp(redis.port, None)
        r.cmd("DEL", "%s:sim:interest" % eh.PREFIX)
        r.close()
    finally:
        os.kill(h.gate.pid, signal.SIGCONT)
    check(bot.closed is None or bot.closed[0] == 1000,
          "bot closed %r" % (bot.closed,))
    print("10028 x2 in %.2f s; 13028 after %.2f s; %d channels in %.1f s; "
          "whole test %.1f s"
          % (t_limit, t_timeout, NCHANS, t_chans,
             time.monotonic() - t_start))


def sync_body(h):
    asyncio.run(asyncio.wait_for(body(h), 120))
    if h.gate is not None and h.gate.poll() is None:
        gh.stop_clean(h)


if __name__ == "__main__":
    if not os.access("/usr/bin/redis-server", os.X_OK):
        sys.stderr.write("SKIP: /usr/bin/redis-server is missing\n")
        sys.exit(77)
    gh.uh.run("edge_bounds", sync_body)
