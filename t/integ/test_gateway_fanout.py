"""Gateway fan-out and request routing against exsim, several clients at
once over WebSocket and TCP:

- three clients subscribe to one channel -> exsim sees one subscription,
  each client gets the data;
- two clients both use id 1 at once, plus a string id and an integer id
  beyond 64 bits: each gets its own answer with its own id;
- one client's unsubscribe and another's unsubscribe_all leave the others
  receiving; the last leaver unsubscribes upstream;
- /status shows the listeners, the channels and the totals.
"""

import asyncio

import gateway_harness as gh
from gateway_harness import check, WSClient, TCPClient

CH = "ticker.BTC-PERPETUAL.100ms"
CH2 = "deribit_price_index.btc_usd"


async def body(h):
    gh.start(h, "    protocol deribit;\n", sim_args=("--rate", "50"))
    gh.wait_ready(h)
    a = await WSClient("ws-a").connect(h.ws_url)
    b = await WSClient("ws-b").connect(h.ws_url)
    c = await TCPClient("tcp-c").connect(h.tcp_port)

    # three subscribers, one upstream subscription
    ka = await a.request("public/subscribe", {"channels": [CH, CH2]}, id=1)
    kb = await b.request("public/subscribe", {"channels": [CH]}, id=1)
    kc = await c.request("public/subscribe", {"channels": [CH]}, id="sub-c")
    ra, rb, rc = await a.answer(ka), await b.answer(kb), await c.answer(kc)
    check(sorted(ra["result"]) == sorted([CH, CH2]), "a got %r" % ra)
    check(rb["result"] == [CH] and rb["id"] == 1, "b got %r" % rb)
    check(rc["result"] == [CH] and rc["id"] == "sub-c", "c got %r" % rc)
    # answers built by exgate carry Deribit's whole envelope, testnet as
    # the exchange says it (exsim: true)
    for r in (ra, rb, rc):
        check(all(k in r for k in ("usIn", "usOut", "usDiff"))
              and r.get("testnet") is True, "envelope of %r" % r)
    for cl in (a, b, c):
        await cl.wait_notes(CH, 3)
    st = h.control("stats")
    check(st["subscribed"].get(CH) == 1,
          "exsim should see one subscription to %s: %r" % (CH,
                                                          st["subscribed"]))
    check(st["requests"].get("public/subscribe", 0)
          + st["requests"].get("private/subscribe", 0) <= 2,
          "too many upstream subscribes: %r" % st["requests"])

    # the same id from two clients at once, a string id, a huge integer id
    k1 = await a.request("public/get_time", id=1)
    k2 = await b.request("public/get_time", id=1)
    k3 = await c.request("public/test", raw_id='"x\\"y"')
    big = "123456789012345678901234567890"
    k4 = await c.request("public/get_time", raw_id=big)
    r1, r2 = await a.answer(k1), await b.answer(k2)
    check(r1["id"] == 1 and isinstance(r1["result"], int), "a: %r" % r1)
    check(r2["id"] == 1 and isinstance(r2["result"], int), "b: %r" % r2)
    r3 = await c.answer(k3)
    check(r3["id"] == 'x"y', "string id came back as %r" % r3["id"])
    await c.answer(k4)
    raw = [t for t in c.raw if big in t]
    check(raw and ('"id":%s' % big) in raw[0].replace(" ", ""),
          "the big id must come back byte for byte: %r" % raw)
    check(len(a.answers.get("1", [])) == 0 and len(b.answers.get("1", []))
          == 0, "an answer went to the wrong client")

    # b unsubscribes, a unsubscribes everything: c keeps receiving
    r = await b.call("public/unsubscribe", {"channels": [CH, "nope.x"]},
                     id=5)
    check(r["result"] == [CH], "unsubscribe result %r" % r)
    r = await a.call("public/unsubscribe_all", {}, id=6)
    check(r["result"] == "ok", "unsubscribe_all %r" % r)
    await asyncio.sleep(0.3)
    na, nb, nc = a.count(CH), b.count(CH), c.count(CH)
    await c.wait_notes(CH, nc + 5)
    check(a.count(CH) == na and b.count(CH) == nb,
          "data after unsubscribe: a %d->%d b %d->%d"
          % (na, a.count(CH), nb, b.count(CH)))
    # strictly in order: nothing of CH after the unsubscribe's answer
    # (notifications are batched per loop pass; the batch must go out
    # before any answer written to the same client)
    for cl, rid in ((b, 5), (a, 6)):
        pos = [i for i, t in enumerate(cl.raw)
               if '"id":%d' % rid in t.replace(" ", "")]
        check(pos, "%s: no answer to id %d in its stream" % (cl.name, rid))
        late = [t for t in cl.raw[pos[0] + 1:] if '"channel":"%s"' % CH
                in t.replace(" ", "")]
        check(not late, "%s got %d notification(s) of %s after the "
              "unsubscribe answer" % (cl.name, len(late), CH))
    st = h.control("stats")
    check(st["subscribed"].get(CH) == 1, "exsim lost the channel: %r"
          % st["subscribed"])
    check(CH2 not in st["subscribed"],
          "a's other channel should be unsubscribed upstream: %r"
          % st["subscribed"])

    s = h.status()
    up = h.up()
    check(up["channels"] == 1, "channels in /status: %r" % up)
    kinds = sorted(l["kind"] for l in s["listeners"])
    check(kinds == ["tcp", "websocket"], "listeners: %r" % s["listeners"])
    check(sum(l["clients"] for l in s["listeners"]) == 3,
          "clients: %r" % s["listeners"])
    check(s["messages_out"] > 10, "messages_out %r" % s["messages_out"])
    check(sum(l["messages_out"] for l in s["listeners"]) == s["messages_out"],
          "messages_out per listener %r, total %r"
          % ([l["messages_out"] for l in s["listeners"]], s["messages_out"]))
    check(all(l["messages_out"] > 0 for l in s["listeners"]),
          "a listener without messages out: %r" % s["listeners"])

    # the last leaver unsubscribes upstream
    await c.call("public/unsubscribe_all", {}, id=7)
    def gone():
        return CH not in h.control("stats")["subscribed"]
    gh.uh.wait_for(gone, 5, what="upstream unsubscribe of the last channel")
    for cl in (a, b, c):
        await cl.close()


gh.run("gateway_fanout", body)
