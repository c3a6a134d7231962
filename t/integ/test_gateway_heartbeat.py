"""Heartbeats, both sides:

- upstream: `heartbeat 1s` -> exgate answers exsim's test_request itself
  (exsim never closes it for a missed heartbeat) and no client ever sees
  an upstream heartbeat or test_request;
- per client, emulated as Deribit does: public/set_heartbeat below 10 s is
  refused; a client that answers each test_request with public/test stays;
  one that does not is closed, and the orders it placed with its own
  cancel-on-disconnect enabled are cancelled.
"""

import asyncio

import gateway_harness as gh
from gateway_harness import check, WSClient, TCPClient

UPSTREAM = """    protocol deribit;
    auth client_credentials exsim env:XG_TEST_EXSIM_SECRET;
    heartbeat 1s;
"""


async def answer_tests(c, stop):
    """Answers every test_request C receives with public/test."""
    seen = 0
    n = 0
    while not stop.is_set():
        tr = [m for m in c.other if isinstance(m, dict)
              and m.get("params", {}).get("type") == "test_request"]
        while seen < len(tr):
            seen += 1
            n += 1
            await c.request("public/test", None, id="t%d" % n)
        await asyncio.sleep(0.1)


async def body(h):
    import os
    os.environ["XG_TEST_EXSIM_SECRET"] = "exsim-secret"
    gh.start(h, UPSTREAM, "client_auth off;\n",
             sim_args=("--min-heartbeat", "1", "--rate", "20"))
    gh.wait_ready(h)
    good = await WSClient("ws-good").connect(h.ws_url)
    bad = await TCPClient("tcp-bad").connect(h.tcp_port)
    quiet = await WSClient("ws-quiet").connect(h.ws_url)

    r = await good.call("public/set_heartbeat", {"interval": 5}, id=1)
    check(r.get("error", {}).get("code") == -32602, "interval 5: %r" % r)
    for c in (good, bad):
        r = await c.call("public/set_heartbeat", {"interval": 10}, id=2)
        check(r["result"] == "ok", "%s: set_heartbeat %r" % (c.name, r))
    r = await bad.call("private/enable_cancel_on_disconnect", {}, id=3)
    check(r["result"] == "ok", "COD %r" % r)
    r = await bad.call("private/buy", {"instrument_name": "BTC-PERPETUAL",
                                       "amount": 10, "type": "limit",
                                       "price": 1000}, id=4)
    check(r["result"]["order"]["order_state"] == "open", "buy %r" % r)
    await quiet.call("public/subscribe",
                     {"channels": ["ticker.BTC-PERPETUAL.100ms"]}, id=5)

    stop = asyncio.Event()
    task = asyncio.ensure_future(answer_tests(good, stop))
    # the bad client gets a test_request at 10 s and is closed at 20 s
    await bad.wait_closed(25)
    stop.set()
    await task
    check(good.closed is None, "the client that answered was closed")
    tr = [m for m in good.other if isinstance(m, dict)
          and m.get("method") == "heartbeat"]
    check(len(tr) >= 2, "test_requests to the good client: %r" % tr)
    check(h.log_lines("tcp#.*heartbeat failure"), "heartbeat failure logged")
    gh.uh.wait_for(lambda: h.control("stats")["orders_open"] == 0, 5,
                   what="the bad client's order cancelled")
    # upstream heartbeats: answered by exgate, never forwarded
    check(not [m for m in quiet.other if isinstance(m, dict)
               and m.get("method") == "heartbeat"],
          "an upstream heartbeat reached a client: %r" % quiet.other[:3])
    check(quiet.count("ticker.BTC-PERPETUAL.100ms") > 10, "quiet got data")
    st = h.control("stats")
    check(st["heartbeat_closes"] == 0, "exsim closed for heartbeat: %r" % st)
    check(st["requests"].get("public/test", 0) >= 10,
          "exgate answered exsim's test_requests: %r" % st["requests"])
    check(h.up()["connects"] == 1, "the upstream reconnected")
    await good.close()
    await quiet.close()


gh.run("gateway_heartbeat", body)
