"""Requests while the upstream is not ready, and request deadlines:

- while exsim refuses the upgrade, requests queue up to queue_limit; over
  it they get "upstream unavailable" at once; queued ones that wait
  longer than queue_timeout get it too, and are never sent;
- requests queued when the upstream comes back are sent after the restore
  and answered, the client's own ids intact;
- request_timeout: a request the exchange never answers gets 13888.
"""

import asyncio

import gateway_harness as gh
from gateway_harness import check, WSClient, TCPClient

UPSTREAM = """    protocol deribit;
    queue_limit 3;
    queue_timeout 1500ms;
    request_timeout 1s;
    reconnect fixed { delay 200ms; }
"""


async def body(h):
    gh.start(h, UPSTREAM, "client_auth off;\n")
    gh.wait_ready(h)
    a = await WSClient("ws-a").connect(h.ws_url)
    t = await TCPClient("tcp-t").connect(h.tcp_port)

    # request_timeout: exsim drops what it reads while stalled
    h.control("stall on")
    r = await a.call("public/get_time", None, id=1, timeout=5)
    check(r.get("error", {}).get("code") == 13888, "timeout: %r" % r)
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
    await a.close()
    await t.close()


gh.run("gateway_queue", body)
