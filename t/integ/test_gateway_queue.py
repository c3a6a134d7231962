"""Requests while the upstream is not ready, and request deadlines:

- while exsim refuses the upgrade, requests queue up to queue_limit; over
  it they get "upstream unavailable" at once; queued ones that wait
  longer than queue_timeout get it too, and are never sent;
- requests queued when the upstream comes back are sent after the restore
  and answered, the client's own ids intact;
- request_timeout: a request the exchange never answers gets 13888, on
  time (within 250 ms of the deadline) also after the gateway idled;
- a client's emulated cancel-on-disconnect that fires while the upstream
  is down waits (past queue_timeout) and cancels its orders after the
  restore.
"""

import asyncio
import time

import gateway_harness as gh
from gateway_harness import check, WSClient, TCPClient

UPSTREAM = """    protocol deribit;
    auth client_credentials exsim env:XG_TEST_EXSIM_SECRET;
    queue_limit 3;
    queue_timeout 1500ms;
    request_timeout 200ms;
    reconnect fixed { delay 200ms; }
"""


async def body(h):
    import os
    os.environ["XG_TEST_EXSIM_SECRET"] = "exsim-secret"
    gh.start(h, UPSTREAM, "client_auth off;\n")
    gh.wait_ready(h)
    a = await WSClient("ws-a").connect(h.ws_url)
    t = await TCPClient("tcp-t").connect(h.tcp_port)

    # request_timeout: exsim drops what it reads while stalled. Each
    # request comes after 1.2 s of quiet, when the module's tick has gone
    # to once a second: the request must bring it back to 100 ms, so the
    # answer comes 200 ms after the request, not at the slow tick, up to
    # 1 s later (five times, as a slow tick is late at a random phase).
    h.control("stall on")
    for i in range(5):
        await asyncio.sleep(1.2)
        t0 = time.monotonic()
        r = await a.call("public/get_time", None, id=1, timeout=5)
        took = time.monotonic() - t0
        check(r.get("error", {}).get("code") == 13888, "timeout: %r" % r)
        check(0.19 <= took <= 0.45, "13888 after %.3f s, request_timeout "
              "is 200 ms" % took)
    h.control("stall off")
    r = await a.call("public/get_time", None, id=2)
    check("result" in r, "after the timeout: %r" % r)

    # down: refuse new connections, drop the current one
    h.control("refuse on")
    h.control("drop")
    h.wait_up(lambda u: u["state"] != "ready", 5, "upstream down")
    keys = [await a.request("public/get_time", None, id=10 + i)
            for i in range(5)]
    first = [await a.answer(k, timeout=1) for k in keys[3:]]
    for r in first:
        check(r.get("error", {}).get("message") == "upstream unavailable",
              "over queue_limit: %r" % r)
    check(h.up()["queued_requests"] == 3, "queued: %r" % h.up())
    rest = [await a.answer(k, timeout=4) for k in keys[:3]]
    for r in rest:
        check(r.get("error", {}).get("code") == 13028,
              "after queue_timeout: %r" % r)
    check(h.up()["queued_requests"] == 0, "queue not emptied: %r" % h.up())

    # queued while down, sent after the restore
    k1 = await t.request("public/get_time", None, id="late-1")
    k2 = await a.request("public/get_time", None, id=99)
    check(h.up()["queued_requests"] == 2, "queued: %r" % h.up())
    h.control("refuse off")
    r1, r2 = await t.answer(k1, timeout=5), await a.answer(k2, timeout=5)
    check(isinstance(r1.get("result"), int) and r1["id"] == "late-1",
          "flushed: %r" % r1)
    check(isinstance(r2.get("result"), int) and r2["id"] == 99,
          "flushed: %r" % r2)

    # cancel-on-disconnect while the exchange is unreachable
    c = await TCPClient("tcp-cod").connect(h.tcp_port)
    r = await c.call("private/enable_cancel_on_disconnect", {}, id=1)
    check(r["result"] == "ok", "COD %r" % r)
    r = await c.call("private/buy", {"instrument_name": "BTC-PERPETUAL",
                                     "amount": 10, "type": "limit",
                                     "price": 1000}, id=2)
    check(r["result"]["order"]["order_state"] == "open", "buy %r" % r)
    check(h.control("stats")["orders_open"] == 1, "one order open")
    h.control("refuse on")
    h.control("drop")
    h.wait_up(lambda u: u["state"] != "ready", 5, "upstream down")
    await c.close()
    await asyncio.sleep(2.0)             # longer than queue_timeout
    check(h.control("stats")["orders_open"] == 1, "cancelled while down?")
    h.control("refuse off")
    gh.uh.wait_for(lambda: h.control("stats")["orders_open"] == 0, 5,
                   what="the order cancelled after the restore")
    await a.close()
    await t.close()


gh.run("gateway_queue", body)
