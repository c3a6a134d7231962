"""bnsim: framing follows the path (/ws... raw payloads, /stream...
{"stream","data"}), SET_PROPERTY combined switches it and GET_PROPERTY
reads it; ids are echoed byte for byte for every type Binance takes
(spot: signed 64-bit integers, strings, null; USDⓈ-M: unsigned integers,
others refused unless --lenient-id); other ids, unknown properties and
non-boolean values get Binance's errors; LIST_SUBSCRIPTIONS lists in
subscribe order, UNSUBSCRIBE stops the data.
"""
import asyncio
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bnsim_util import Bn, Bnsim, check, main, run  # noqa: E402


async def raw_reply(c, text):
    await asyncio.sleep(0.22)       # stays under 5 messages a second
    await c.send(text)
    _, raw = await c.reply()
    return raw


async def call(c, *a):
    await asyncio.sleep(0.22)
    return await c.call(*a)


async def paths(sim):
    # a raw stream in the path
    c = await Bn.open(sim.url("/ws/btcusdt@trade"))
    s, d = await c.data()
    check(s is None and d["e"] == "trade" and d["s"] == "BTCUSDT",
          "raw path: %r %r" % (s, d))
    r = await call(c, "GET_PROPERTY", ["combined"])
    check(r["result"] is False, "raw default %r" % r)
    r = await call(c, "LIST_SUBSCRIPTIONS")
    check(r["result"] == ["btcusdt@trade"], "list %r" % r)
    await c.close()

    # combined streams in the query
    c = await Bn.open(sim.url("/stream?streams=btcusdt@trade/"
                              "ethusdt@bookTicker"))
    seen = set()
    while seen != {"btcusdt@trade", "ethusdt@bookTicker"}:
        s, d = await c.data()
        check(s in ("btcusdt@trade", "ethusdt@bookTicker"), "stream %r" % s)
        check(d.get("e") == "trade" if s.endswith("trade")
              else ("u" in d and d["s"] == "ETHUSDT"), "data %r" % d)
        seen.add(s)
    r = await call(c, "GET_PROPERTY", ["combined"])
    check(r["result"] is True, "combined default %r" % r)
    await c.close()

    # /ws, SUBSCRIBE, then SET_PROPERTY switches the framing both ways
    c = await Bn.open(sim.url("/ws"))
    raw = await raw_reply(c, '{"method":"SUBSCRIBE","params":'
                          '["btcusdt@bookTicker"],"id":1}')
    check(raw == '{"result":null,"id":1}', "ack %r" % raw)
    s, d = await c.data()
    check(s is None and d["s"] == "BTCUSDT", "raw after subscribe")
    raw = await raw_reply(c, '{"method":"SET_PROPERTY","params":'
                          '["combined",true],"id":5}')
    check(raw == '{"result":null,"id":5}', "set %r" % raw)
    c.drain()
    await asyncio.sleep(0.3)
    c.drain()
    s, d = await c.data()
    check(s == "btcusdt@bookTicker", "combined after SET_PROPERTY: %r" % s)
    raw = await raw_reply(c, '{"method":"GET_PROPERTY","params":'
                          '["combined"],"id":2}')
    check(raw == '{"result":true,"id":2}', "get %r" % raw)
    await call(c, "SET_PROPERTY", ["combined", False])
    await asyncio.sleep(0.3)
    c.drain()
    s, d = await c.data()
    check(s is None, "raw again")

    # errors: unknown property, non-boolean value, bad params
    for text, code, frag in (
            ('{"method":"GET_PROPERTY","params":["colour"],"id":7}', 0,
             "Unknown property"),
            ('{"method":"SET_PROPERTY","params":["combined","yes"],"id":8}',
             1, "expected Boolean"),
            ('{"method":"SET_PROPERTY","params":["combined"],"id":9}', 1,
             "expected Boolean")):
        await asyncio.sleep(0.25)
        await c.send(text)
        msg, raw = await c.reply()
        check(msg.get("error", {}).get("code") == code
              and frag in msg["error"]["msg"] and "result" not in msg,
              "%s -> %r" % (text, raw))

    # UNSUBSCRIBE stops the data; LIST_SUBSCRIPTIONS keeps order
    r = await call(c, "SUBSCRIBE", ["ethusdt@trade", "bnbusdt@aggTrade",
                                   "btcusdt@bookTicker"])
    r = await call(c, "LIST_SUBSCRIPTIONS")
    check(r["result"] == ["btcusdt@bookTicker", "ethusdt@trade",
                          "bnbusdt@aggTrade"], "order %r" % r)
    await asyncio.sleep(0.3)
    r = await call(c, "UNSUBSCRIBE", ["btcusdt@bookTicker", "not@there"])
    check(r["result"] is None, "unsubscribe %r" % r)
    await asyncio.sleep(0.2)
    c.drain()
    await asyncio.sleep(0.5)
    left = [d for _, d, _ in c.drain() if "u" in d and "e" not in d]
    check(not left, "bookTicker after UNSUBSCRIBE: %d" % len(left))
    await c.close()


async def ids(sim, market, lenient):
    c = await Bn.open(sim.url("/ws"))
    good = ["1", "0", "18446744073709551615" if market == "usdm"
            else "9223372036854775807"]
    bad = ["1.5", "true", '{"a":1}', "[1]"]
    if market == "spot" or lenient:
        good += ["-5", '"abc-1"', "null", '"%s"' % ("x" * 36)]
        bad += ['"%s"' % ("x" * 37), '"a b"']
    else:
        bad += ["-5", '"abc"', "null"]
    if market == "spot" or not lenient:
        bad.append("9223372036854775808" if market == "spot"
                   else "18446744073709551616")
    for i in good:
        for m in ("SUBSCRIBE", "LIST_SUBSCRIPTIONS"):
            params = ',"params":["btcusdt@trade"]' if m == "SUBSCRIBE" else ""
            raw = await raw_reply(c, '{"method":"%s"%s,"id":%s}'
                                  % (m, params, i))
            want = ('{"result":null,"id":%s}' % i if m == "SUBSCRIBE" else
                    '{"result":["btcusdt@trade"],"id":%s}' % i)
            check(raw == want, "id %s: %r" % (i, raw))
    for i in bad:
        await asyncio.sleep(0.22)
        await c.send('{"method":"LIST_SUBSCRIPTIONS","id":%s}' % i)
        msg, raw = await c.reply()
        check(msg.get("error", {}).get("code") == 2 and msg["id"] is None
              and "request ID" in msg["error"]["msg"], "id %s: %r" % (i, raw))
    await c.close()


def test():
    with Bnsim("--market", "spot", "--rate", "50") as sim:
        run(paths(sim))
        run(ids(sim, "spot", False))
    with Bnsim("--market", "usdm", "--rate", "50") as sim:
        run(ids(sim, "usdm", False))
    with Bnsim("--market", "usdm", "--lenient-id", "--rate", "0") as sim:
        run(ids(sim, "usdm", True))


if __name__ == "__main__":
    main(test)
