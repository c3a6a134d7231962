"""Interest (issue 17): the channels edges declare in the sorted set
PREFIX:UPSTREAM:interest (member the channel, score its expiry in unix
ms) are subscribed upstream by the core and published, with no local bot;
a real redis-server on a free loopback port, exsim, exgate with `publish`.
The test itself plays the edge (a RESP client doing ZADD/ZREM):

- two public channels ZADDed: subscribed at exsim within the 1 s poll,
  their streams fill from 1-0; a private channel (user.*) and a malformed
  name in the set are never subscribed;
- a local bot joining and leaving one of them does not unsubscribe it
  (the interest still holds it);
- one ZREMed: unsubscribed at exsim, but only after unsubscribe_linger
  (1.5 s);
- the other left to expire (score now + 1.5 s): the core removes the
  member (ZREMRANGEBYSCORE) and unsubscribes it after the linger;
- /status shows the polls and the channels wanted;
- redis restarted without its data (the set empty until the edge
  declares again): for one interest TTL (30 s) after the connect the core
  keeps what it held, so the edges' bots lose nothing meanwhile; then it
  lets go of a channel nobody declared again, and keeps the one the edge
  did.

Skips (exit 77) only when /usr/bin/redis-server is missing.
"""

import sys
import time

import gateway_harness as gh
from gateway_harness import check, free_port, WSClient
from test_publish_redis import Resp, run_with_redis, start_redis

TICKER = "ticker.BTC-PERPETUAL.100ms"
TRADES = "trades.BTC-PERPETUAL.100ms"
PRIV = "user.orders.BTC-PERPETUAL.raw"
PREFIX = "xgi"
KEY = PREFIX + ":sim:interest"


def subs(h):
    return h.control("stats")["subscribed"]


def now_ms():
    return int(time.time() * 1000)


async def body(h):
    rport = free_port()
    redis = start_redis(h, rport, None)
    gh.start(h, "    protocol deribit;\n"
             "    publish redis://127.0.0.1:%d prefix=%s;\n"
             % (rport, PREFIX),
             "client_auth off;\nunsubscribe_linger 1500ms;\n",
             level="info", sim_args=("--no-rate-limit", "--rate", "50"))
    gh.wait_ready(h)
    h.wait_up(lambda u: u.get("publish", {}).get("connected"), 10,
              "publish connected")
    check(not subs(h), "subscribed before any interest: %r" % subs(h))

    rc = Resp(rport)
    exp = now_ms() + 30000
    rc.cmd("ZADD", KEY, exp, TICKER, exp, TRADES, exp, PRIV, exp,
           "bad name\"x")
    t0 = time.monotonic()
    gh.uh.wait_for(lambda: subs(h).get(TICKER) and subs(h).get(TRADES), 5,
                   what="interest subscribed at exsim")
    took = time.monotonic() - t0
    check(PRIV not in subs(h) and len(subs(h)) == 2,
          "exsim subscriptions %r" % subs(h))
    gh.uh.wait_for(lambda: rc.cmd("XLEN", "%s:sim:%s" % (PREFIX, TICKER))
                   >= 5, 10, what="ticker entries in the stream")
    first = rc.cmd("XRANGE", "%s:sim:%s" % (PREFIX, TICKER), "-", "+",
                   "COUNT", 1)
    check(first[0][0] == b"1-0", "first ticker entry %r" % first[0][0])
    p = h.up()["publish"]
    check(p["interest_wanted"] == 4 and p["interest_polls"] >= 1,
          "publish status %r" % p)

    # a local bot comes and goes: the interest keeps the channel
    bot = await WSClient("bot").connect(h.ws_url)
    r = await bot.call("public/subscribe", {"channels": [TICKER]}, id=1)
    check(r["result"] == [TICKER], "bot subscribe %r" % r)
    await bot.wait_notes(TICKER, 3)
    await bot.call("public/unsubscribe", {"channels": [TICKER]}, id=2)
    await bot.close()

    # removed: unsubscribed after the linger
    rc.cmd("ZREM", KEY, TRADES)
    t1 = time.monotonic()
    gh.uh.wait_for(lambda: TRADES not in subs(h), 6,
                   what="trades unsubscribed at exsim")
    gone = time.monotonic() - t1
    check(gone > 1.4, "unsubscribed %.2f s after the ZREM, linger 1.5 s"
          % gone)
    check(subs(h).get(TICKER), "ticker lost with trades: %r" % subs(h))

    # expired: the core removes the member, then unsubscribes
    rc.cmd("ZADD", KEY, now_ms() + 1500, TICKER)
    t2 = time.monotonic()
    gh.uh.wait_for(lambda: TICKER not in subs(h), 8,
                   what="ticker unsubscribed after its expiry")
    expired = time.monotonic() - t2
    check(expired > 2.9, "ticker unsubscribed %.2f s after a 1.5 s expiry "
          "and a 1.5 s linger" % expired)
    check(rc.cmd("ZSCORE", KEY, TICKER) is None, "expired member kept")
    check(not subs(h), "exsim subscriptions left %r" % subs(h))
    check(h.up()["publish"]["errors"] == 0, "%r" % h.up()["publish"])
    rc.close()

    # redis restarted without its data: the set is empty until the edge
    # declares again; meanwhile (one TTL after the connect) the core keeps
    # what it held, then lets go of what nobody declared
    rc = Resp(rport)
    rc.cmd("ZADD", KEY, now_ms() + 60000, TICKER, now_ms() + 60000, TRADES)
    gh.uh.wait_for(lambda: subs(h).get(TICKER) and subs(h).get(TRADES), 5,
                   what="interest subscribed again")
    rc.close()
    redis.terminate()
    redis.wait(5)
    time.sleep(0.3)
    redis = start_redis(h, rport, None)
    h.wait_up(lambda u: u["publish"]["connected"], 10, "publish back")
    t3 = time.monotonic()
    time.sleep(4)       # polls of an empty set, past the 1.5 s linger
    check(subs(h).get(TICKER) and subs(h).get(TRADES),
          "dropped after redis lost the set: %r" % subs(h))
    rc = Resp(rport)
    rc.cmd("ZADD", KEY, now_ms() + 60000, TICKER)   # the edge is back
    gh.uh.wait_for(lambda: TRADES not in subs(h), 40,
                   what="trades let go one TTL after the connect")
    kept = time.monotonic() - t3
    check(kept > 28 and subs(h).get(TICKER),
          "trades let go %.1f s after the connect (TTL 30 s), ticker %r"
          % (kept, subs(h)))
    rc.close()
    sys.stderr.write("interest: subscribed %.2f s after the ZADD, "
                     "unsubscribed %.2f s after the ZREM, %.2f s after "
                     "a 1.5 s expiry (linger 1.5 s); after redis lost the "
                     "set, the undeclared channel kept %.1f s\n"
                     % (took, gone, expired, kept))


if __name__ == "__main__":
    run_with_redis("publish_interest", body)
