"""bnsim: Binance's per-connection limits. Incoming messages (control
messages, pings, pongs) are counted in a sliding one-second window:
spot allows 5 and closes with 1008 at 6, USDⓈ-M allows 10 and closes at
11; stats report the highest count and the 1008 closes. Streams: 1024
per spot connection and 200 per USDⓈ-M one; one more is refused with
code 2 and a 1008 close (--cap-lenient: refused, connection kept); a URL
with too many streams gets HTTP 400.
"""
import asyncio
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bnsim_util import Bn, Bnsim, check, main, run  # noqa: E402

import websockets  # noqa: E402


async def burst(c, n, start=1):
    for i in range(n):
        await c.send({"method": "LIST_SUBSCRIPTIONS", "id": start + i})


async def pacing(sim, limit):
    # `limit` at once, repeated with more than a second between bursts
    c = await Bn.open(sim.url("/ws"))
    for k in range(4):
        await burst(c, limit, 100 * k)
        for i in range(limit):
            msg, _ = await c.reply()
            check(msg == {"result": [], "id": 100 * k + i}, "reply %r" % msg)
        await asyncio.sleep(1.25)
    check(not c.closed.done(), "closed at %d msg/s" % limit)
    st = sim.stats()
    check(st["msg_rate_max"] == limit and st["closes_1008"] == 0,
          "stats after %d/s: %r" % (limit, st))
    # one more within the second: 1008
    await burst(c, limit + 1)
    code, reason = await c.wait_closed()
    check(code == 1008, "close at %d msg/s: %r %r" % (limit + 1, code, reason))
    st = await sim.wait_stats(lambda s: s["closes_1008"] == 1, "1008 count")
    check(st["msg_rate_max"] == limit + 1, "max rate %r" % st)
    check(st["connections_open"] == 0, "open %r" % st)

    # spread out over less than a second: also too many
    c = await Bn.open(sim.url("/ws"))
    for i in range(limit + 1):
        await c.send({"method": "LIST_SUBSCRIPTIONS", "id": i})
        await asyncio.sleep(0.8 / (limit + 1))
    code, _ = await c.wait_closed()
    check(code == 1008, "spread: %r" % code)

    # pings count too (B1: PING and PONG frames are incoming messages)
    c = await Bn.open(sim.url("/ws"))
    for i in range(limit + 1):
        await c.ws.ping(b"p%d" % i)
    code, _ = await c.wait_closed()
    check(code == 1008, "pings: %r" % code)
    await sim.wait_stats(lambda s: s["closes_1008"] == 3, "three 1008s")


async def cap(sim, n, lenient=False):
    names = ["x%04d@trade" % i for i in range(n)]
    c = await Bn.open(sim.url("/ws"))
    r = await c.call("SUBSCRIBE", names[:n // 2])
    check(r["result"] is None, "first half %r" % r)
    await asyncio.sleep(0.25)
    r = await c.call("SUBSCRIBE", names[n // 2:] + names[:3])
    check(r["result"] is None, "second half %r" % r)
    await asyncio.sleep(0.25)
    r = await c.call("LIST_SUBSCRIPTIONS")
    check(r["result"] == names, "list of %d" % n)
    await asyncio.sleep(0.25)
    await c.send({"method": "SUBSCRIBE", "params": ["one@more"], "id": 9})
    msg, _ = await c.reply()
    check(msg["id"] == 9 and msg["error"]["code"] == 2, "over cap %r" % msg)
    if lenient:
        await asyncio.sleep(0.25)
        r = await c.call("LIST_SUBSCRIPTIONS")
        check(len(r["result"]) == n and not c.closed.done(), "lenient cap")
        await c.close()
    else:
        code, _ = await c.wait_closed()
        check(code == 1008, "over cap close %r" % code)
    st = sim.stats()
    check(st["streams_max"] == n, "streams_max %r" % st["streams_max"])
    check(st["cap_closes"] == (0 if lenient else 1), "cap_closes %r" % st)

    # streams in the URL: at the cap fine, over it refused at the upgrade
    ok = await Bn.open(sim.url("/stream?streams=" + "/".join(names)))
    r = await ok.call("LIST_SUBSCRIPTIONS")
    check(len(r["result"]) == n, "url streams %d" % len(r["result"]))
    await ok.close()
    try:
        await Bn.open(sim.url("/stream?streams=" + "/".join(names
                                                            + ["one@more"])))
        check(False, "url over the cap upgraded")
    except websockets.InvalidStatusCode as e:
        check(e.status_code == 400, "url over cap: %d" % e.status_code)


def test():
    with Bnsim("--market", "spot", "--rate", "5") as sim:
        run(pacing(sim, 5))
        run(cap(sim, 1024))
    with Bnsim("--market", "usdm", "--rate", "5") as sim:
        run(pacing(sim, 10))
        run(cap(sim, 200))
    with Bnsim("--market", "usdm", "--cap-lenient", "--rate", "0") as sim:
        run(cap(sim, 200, lenient=True))
        st = sim.stats()
        print(json.dumps({k: st[k] for k in ("msg_rate_max", "streams_max",
                                             "closes_1008", "cap_closes")}))


if __name__ == "__main__":
    main(test)
