#!/usr/bin/python3
"""Binance venue (issue 13), client side: paths, framing, control messages.

One exgate with a spot and a USDⓈ-M upstream (`protocol binance;`), each on
its own bnsim, each with a websocket listener for every path (path=/*)
and an http listener. Many clients at once:

- every path form clients build gets the framing Binance gives it: /ws,
  /ws/<n> (ccxt's /ws/0 .. /ws/49), /ws/<stream> (one raw stream, no
  SUBSCRIBE), /stream, /stream?streams=a/b/c, ccxt's spot base
  /stream/ws/<n> (either framing, but one: ccxt takes both), USDⓈ-M
  /fapi/public/ws/<n>, /fapi/market/ws/<n>, /public/stream?streams=,
  /market/ws/<stream> and unrouted /ws/<stream>: /ws... raw payloads,
  /stream... {"stream":"<name>","data":{...}}, each event of the right
  symbol and kind; a /stream?streams= URL of 160 names (2.9 kB; bnsim
  takes 32 kB, a 1024-stream URL) is served whole;
- SET_PROPERTY combined switches the framing of the events after its
  ack (both ways), GET_PROPERTY reports it (false on /ws, true on
  /stream);
- LIST_SUBSCRIPTIONS is per client, in subscribe order; UNSUBSCRIBE
  removes a stream from that client only, and no event of it follows the
  ack;
- acks are {"result":null,"id":<id>} byte for byte, for ids of every type
  Binance takes (spot: 0, negative, 2^53+1, 2^63-1, strings, null;
  USDⓈ-M: unsigned up to 2^64-1, and strings and null too: the gateway
  answers its clients itself), pipelined, exactly one per request,
  also when five clients use the same id at once (ccxt's ids are per
  socket and all start at 1);
- the same stream held by five clients is one upstream subscription
  (bnsim's `stats` subscribed == 1), which stays while one client holds it.
"""

import asyncio
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import websockets  # noqa: E402

import gateway_harness as gh  # noqa: E402
from gateway_harness import check  # noqa: E402
from bnsim_util import Bn  # noqa: E402

SIM = ["--rate", "20", "--symbols", "8"]


async def sub(c, params, id):
    """SUBSCRIBE PARAMS with numeric ID; the ack must be byte for byte."""
    await c.send('{"method":"SUBSCRIBE","params":%s,"id":%d}'
                 % (json.dumps(params), id))
    msg, raw = await c.reply(10)
    check(raw == '{"result":null,"id":%d}' % id,
          "%s: SUBSCRIBE %r id %d acked %r" % (c.url, params, id, raw))


async def control(c, method, params, idtext):
    """Sends METHOD with the id written as IDTEXT; returns (msg, raw)."""
    p = "" if params is None else ',"params":%s' % json.dumps(params)
    await c.send('{"method":"%s"%s,"id":%s}' % (method, p, idtext))
    return await c.reply(10)


async def collect(c, n, timeout=15):
    """N events of C: a list of (stream, data)."""
    return [await c.data(timeout=timeout) for _ in range(n)]


def expect_framing(c, evs, combined, streams):
    """Every event of EVS has C's framing: raw (stream None) or combined
    with a stream of STREAMS; each one's symbol and kind match a stream
    of STREAMS."""
    syms = {s.split("@")[0].upper() for s in streams}
    for stream, d in evs:
        if combined:
            check(stream in streams, "%s: combined event of stream %r, "
                  "expected one of %r: %.200r" % (c.url, stream, streams, d))
        else:
            check(stream is None, "%s: expected raw payloads, got a "
                  "combined event of %r" % (c.url, stream))
        check(isinstance(d, dict) and d.get("s") in syms,
              "%s: event of another symbol: %.200r" % (c.url, d))


def kind_ok(stream, d):
    """Whether event D is of STREAM's kind (trade, aggTrade, depth,
    bookTicker, kline, markPrice)."""
    k = stream.split("@", 1)[1]
    e = d.get("e")
    if k == "trade":
        return e == "trade"
    if k == "aggTrade":
        return e == "aggTrade"
    if k.startswith("depth"):
        return e == "depthUpdate"
    if k == "bookTicker":
        return "b" in d and "a" in d and e in (None, "bookTicker")
    if k.startswith("kline"):
        return e == "kline"
    if k.startswith("markPrice"):
        return e == "markPriceUpdate"
    return True


async def framing(h):
    """Each path form: (upstream, path, streams to SUBSCRIBE, streams
    expected, framing: True combined, False raw, None either but one)."""
    forms = [
        ("spot", "/ws", ["btcusdt@trade"], None, False),
        ("spot", "/ws/0", ["ethusdt@aggTrade"], None, False),
        ("spot", "/ws/7", ["bnbusdt@depth@100ms"], None, False),
        ("spot", "/ws/49", ["solusdt@kline_1m"], None, False),
        ("spot", "/ws/xrpusdt@trade", [], ["xrpusdt@trade"], False),
        ("spot", "/stream", ["ethusdt@trade"], None, True),
        ("spot", "/stream?streams=btcusdt@trade/ethusdt@depth@100ms/"
         "adausdt@aggTrade", [],
         ["btcusdt@trade", "ethusdt@depth@100ms", "adausdt@aggTrade"], True),
        ("spot", "/stream/ws/0", ["btcusdt@depth@100ms"], None, None),
        ("spot", "/stream/ws/3", ["ethusdt@trade"], None, None),
        ("usdm", "/fapi/public/ws/0", ["btcusdt@depth@100ms"], None, False),
        ("usdm", "/fapi/public/ws/5", ["ethusdt@bookTicker"], None, False),
        ("usdm", "/fapi/market/ws/1", ["btcusdt@aggTrade"], None, False),
        ("usdm", "/fapi/market/ws/2", ["ethusdt@markPrice@1s"], None, False),
        ("usdm", "/public/stream?streams=btcusdt@depth@100ms/"
         "ethusdt@bookTicker", [],
         ["btcusdt@depth@100ms", "ethusdt@bookTicker"], True),
        ("usdm", "/market/stream", ["solusdt@kline_1m"], None, True),
        ("usdm", "/market/ws/bnbusdt@aggTrade", [], ["bnbusdt@aggTrade"],
         False),
        ("usdm", "/ws/xrpusdt@depth@100ms", [], ["xrpusdt@depth@100ms"],
         False),
    ]
    clients = []
    for up, path, subs, exp, comb in forms:
        c = await Bn.open(gh.bn_url(h, up, path))
        clients.append((c, up, path, subs, exp or subs, comb))
    for i, (c, up, path, subs, exp, comb) in enumerate(clients):
        if subs:
            await sub(c, subs, i + 1)
    for c, up, path, subs, exp, comb in clients:
        # LIST_SUBSCRIPTIONS: that client's own streams, URL ones included
        msg, raw = await control(c, "LIST_SUBSCRIPTIONS", None, "77")
        check(msg == {"result": exp, "id": 77},
              "%s: LIST_SUBSCRIPTIONS %r, expected %r" % (path, raw, exp))
    # every expected stream delivers, with the path's framing
    for c, up, path, subs, exp, comb in clients:
        seen = {}
        evs = []
        while len(seen) < len(exp) or len(evs) < 4:
            stream, d = await c.data(timeout=15)
            evs.append((stream, d))
            if comb is None:
                comb = stream is not None
            expect_framing(c, [(stream, d)], comb, exp)
            if stream is not None:
                check(kind_ok(stream, d), "%s: %s event %.200r"
                      % (path, stream, d))
                seen[stream] = 1
            else:
                for s in exp:
                    if (d.get("s") == s.split("@")[0].upper()
                            and kind_ok(s, d)):
                        seen[s] = 1
                check(any(d.get("s") == s.split("@")[0].upper()
                          and kind_ok(s, d) for s in exp),
                      "%s: event of no subscribed stream %.200r" % (path, d))
        # whatever framing it got, it keeps it
        more = [(s, d) for s, d, _ in c.drain()]
        expect_framing(c, more, comb, exp)
        print("%s %s: %d+%d events, %s" % (up, path, len(evs), len(more),
                                           "combined" if comb else "raw"))
    return clients


async def long_url(h):
    """/stream?streams= naming 160 streams (every kind bnsim has of its
    eight symbols but diff depth, about 2.9 kB): all held, listed in
    order, the frequent ones delivering."""
    syms = ["btcusdt", "ethusdt", "bnbusdt", "solusdt", "xrpusdt",
            "dogeusdt", "adausdt", "ltcusdt"]
    kinds = (["trade", "aggTrade", "bookTicker", "miniTicker", "ticker",
              "depth5", "depth10", "depth20"]
             + ["kline_" + i for i in ("1m", "3m", "5m", "15m", "30m", "1h",
                                       "2h", "4h", "6h", "1d")])
    kinds += ["depth5@100ms", "depth20@100ms"]
    streams = ["%s@%s" % (s, k) for s in syms for k in kinds]
    url = "/stream?streams=" + "/".join(streams)
    check(len(streams) == 160 and len(url) > 2048, "%d streams, %d bytes"
          % (len(streams), len(url)))
    try:
        c = await Bn.open(gh.bn_url(h, "spot", url))
    except websockets.exceptions.InvalidStatusCode as e:
        raise gh.Fail("a %d-byte /stream?streams= URL of 160 streams: "
                      "upgrade answered HTTP %d" % (len(url), e.status_code))
    msg, raw = await control(c, "LIST_SUBSCRIPTIONS", None, "1")
    check(msg == {"result": streams, "id": 1}, "a %d-byte URL of 160 "
          "streams: LIST_SUBSCRIPTIONS has %d" % (
              len(url), len(msg.get("result") or [])))
    want = {"%s@%s" % (s, k) for s in syms for k in ("bookTicker", "ticker")}
    seen = set()
    while not want <= seen:
        stream, d = await c.data(timeout=15)
        check(stream in streams, "an event of %r" % stream)
        seen.add(stream)
    await c.close()
    print("spot: a %d-byte /stream?streams= URL of 160 streams: %d "
          "delivering" % (len(url), len(seen)))


async def properties(h):
    """SET_PROPERTY / GET_PROPERTY combined on a raw and a combined client."""
    for up, path, stream in (("spot", "/ws/1", "ltcusdt@trade"),
                             ("spot", "/stream", "ltcusdt@aggTrade"),
                             ("usdm", "/fapi/market/ws/9", "ltcusdt@aggTrade"),
                             ("usdm", "/public/stream", "ltcusdt@trade")):
        c = await Bn.open(gh.bn_url(h, up, path))
        start = path.startswith("/stream") or "/stream" in path
        msg, raw = await control(c, "GET_PROPERTY", ["combined"], "5")
        check(raw == '{"result":%s,"id":5}' % json.dumps(start),
              "%s: GET_PROPERTY combined %r" % (path, raw))
        await sub(c, [stream], 6)
        evs = await collect(c, 2)
        expect_framing(c, evs, start, [stream])
        c.trace = []
        msg, raw = await control(c, "SET_PROPERTY", ["combined", not start],
                                 "7")
        check(raw == '{"result":null,"id":7}',
              "%s: SET_PROPERTY %r" % (path, raw))
        msg, raw = await control(c, "GET_PROPERTY", ["combined"], "8")
        check(raw == '{"result":%s,"id":8}' % json.dumps(not start),
              "%s: GET_PROPERTY after SET %r" % (path, raw))
        # every event after the SET_PROPERTY ack has the new framing
        i = [r for _, r in c.trace].index('{"result":null,"id":7}')
        for _ in range(150):
            after = [json.loads(r) for k, r in c.trace[i + 1:]
                     if k == "event"]
            if len(after) >= 3:
                break
            await asyncio.sleep(0.1)
        check(len(after) >= 3, "%s: %d events in 15 s after SET_PROPERTY"
              % (path, len(after)))
        for m in after:
            wrapped = isinstance(m, dict) and "stream" in m and "data" in m
            check(wrapped == (not start),
                  "%s: after SET_PROPERTY combined %s: %.200r"
                  % (path, not start, m))
        await c.close()
        print("%s %s: SET_PROPERTY combined %s: %d events after it"
              % (up, path, not start, len(after)))


async def per_client_lists(h):
    """LIST_SUBSCRIPTIONS per client; UNSUBSCRIBE ends that client's
    stream only."""
    a = await Bn.open(gh.bn_url(h, "spot", "/ws/10"))
    b = await Bn.open(gh.bn_url(h, "spot", "/ws/11"))
    await sub(a, ["btcusdt@aggTrade"], 1)
    await sub(a, ["ethusdt@aggTrade", "bnbusdt@aggTrade"], 2)
    await sub(b, ["bnbusdt@aggTrade"], 1)
    msg, raw = await control(a, "LIST_SUBSCRIPTIONS", None, '"la"')
    check(msg == {"result": ["btcusdt@aggTrade", "ethusdt@aggTrade",
                             "bnbusdt@aggTrade"], "id": "la"},
          "a: LIST_SUBSCRIPTIONS %r" % raw)
    msg, raw = await control(b, "LIST_SUBSCRIPTIONS", None, "null")
    check(msg == {"result": ["bnbusdt@aggTrade"], "id": None},
          "b: LIST_SUBSCRIPTIONS %r" % raw)
    a.trace = []
    msg, raw = await control(a, "UNSUBSCRIBE", ["ethusdt@aggTrade"], "3")
    check(raw == '{"result":null,"id":3}', "a: UNSUBSCRIBE ack %r" % raw)
    msg, raw = await control(a, "LIST_SUBSCRIPTIONS", None, "4")
    check(msg == {"result": ["btcusdt@aggTrade", "bnbusdt@aggTrade"],
                  "id": 4}, "a: LIST_SUBSCRIPTIONS after UNSUBSCRIBE %r"
          % raw)
    msg, raw = await control(b, "LIST_SUBSCRIPTIONS", None, "4")
    check(msg == {"result": ["bnbusdt@aggTrade"], "id": 4},
          "b: LIST_SUBSCRIPTIONS after a's UNSUBSCRIBE %r" % raw)
    await asyncio.sleep(2)
    i = [r for _, r in a.trace].index('{"result":null,"id":3}')
    after = [json.loads(r) for k, r in a.trace[i + 1:] if k == "event"]
    syms = [m.get("s") for m in after]
    check("ETHUSDT" not in syms, "a: ethusdt@aggTrade after its "
          "UNSUBSCRIBE ack (%d of %d events)" % (syms.count("ETHUSDT"),
                                                 len(syms)))
    check("BTCUSDT" in syms and "BNBUSDT" in syms,
          "a: its other streams stopped: %r" % sorted(set(syms)))
    bs = {d.get("s") for _, d, _ in b.drain()}
    check(bs == {"BNBUSDT"}, "b: events of %r" % bs)
    await a.close()
    await b.close()


async def ids(h):
    """Acks echo every id type byte for byte, exactly one per request."""
    for up, path, idtexts in (
            ("spot", "/ws/20", ["1", "0", "-7", "9007199254740993",
                                "9223372036854775807", '"abc-XYZ_09"',
                                '"1"', "null", "42", "42"]),
            ("spot", "/stream", ["3", '"s"', "null", "18014398509481985"]),
            ("usdm", "/fapi/public/ws/20", ["1", "0", "9007199254740993",
                                            "9223372036854775807",
                                            "18446744073709551615", "5",
                                            "5", '"u-1"', "null"])):
        c = await Bn.open(gh.bn_url(h, up, path))
        for t in idtexts:      # pipelined
            await c.send('{"method":"SUBSCRIBE","params":'
                         '["dogeusdt@bookTicker"],"id":%s}' % t)
        got = [(await c.reply(10))[1] for _ in idtexts]
        want = ['{"result":null,"id":%s}' % t for t in idtexts]
        check(sorted(got) == sorted(want), "%s: acks %r, expected %r"
              % (path, got, want))
        await asyncio.sleep(1)
        c.no_reply("%s: after the acks" % path)
        msg, raw = await control(c, "LIST_SUBSCRIPTIONS", None, idtexts[3])
        check(msg == {"result": ["dogeusdt@bookTicker"],
                      "id": json.loads(idtexts[3])},
              "%s: LIST_SUBSCRIPTIONS id %s: %r" % (path, idtexts[3], raw))
        check(raw.count(idtexts[3]) == 1 and ('"id":%s' % idtexts[3]) in raw,
              "%s: id %s not echoed as sent: %r" % (path, idtexts[3], raw))
        await c.close()
        print("%s %s: %d acks byte for byte" % (up, path, len(idtexts)))


async def shared(h):
    """One stream from five clients at once, same id: one ack each, one
    upstream subscription; it stays while one client holds it."""
    for up, base, stream in (("spot", "/ws/", "adausdt@trade"),
                             ("usdm", "/fapi/market/ws/", "adausdt@aggTrade")):
        sim = h.bn[up]["sim"]
        cs = [await Bn.open(gh.bn_url(h, up, "%s%d" % (base, 30 + i)))
              for i in range(5)]
        await asyncio.gather(*[c.send('{"method":"SUBSCRIBE","params":'
                                      '["%s"],"id":1}' % stream)
                               for c in cs])
        for c in cs:
            msg, raw = await c.reply(10)
            check(raw == '{"result":null,"id":1}', "%s: ack %r"
                  % (c.url, raw))
        for c in cs:
            await c.data(timeout=15)
        st = sim.stats()
        check(st["subscribed"].get(stream) == 1,
              "%s: %s held by 5 clients is %r upstream subscriptions"
              % (up, stream, st["subscribed"].get(stream)))
        await asyncio.sleep(1)
        for c in cs:
            c.no_reply("%s: after the ack" % c.url)
        for i, c in enumerate(cs[:4]):
            msg, raw = await control(c, "UNSUBSCRIBE", [stream], str(i + 2))
            check(raw == '{"result":null,"id":%d}' % (i + 2),
                  "%s: UNSUBSCRIBE ack %r" % (c.url, raw))
        cs[4].drain()
        await cs[4].data(timeout=15)
        await asyncio.sleep(0.5)
        cs[4].drain()
        await cs[4].data(timeout=15)
        st = sim.stats()
        check(st["subscribed"].get(stream) == 1,
              "%s: %s held by one client of five: %r upstream "
              "subscriptions" % (up, stream, st["subscribed"].get(stream)))
        for c in cs:
            await c.close()
        print("%s: %s from 5 clients: 1 upstream subscription" % (up, stream))


async def body(h, sims):
    gh.start_binance(h, [
        {"name": "spot", "sim": sims["spot"], "market": "spot"},
        {"name": "usdm", "sim": sims["usdm"], "market": "usdm"}])
    clients = await framing(h)
    await asyncio.gather(properties(h), per_client_lists(h), ids(h),
                         shared(h))
    await long_url(h)
    # the framing clients saw no close and no reply they did not ask for
    for c, up, path, subs, exp, comb in clients:
        check(not c.closed.done(), "%s closed: %r" % (path, c.closed.result()
                                                      if c.closed.done()
                                                      else None))
        c.no_reply(path)
        await c.close()
    for s in sims.values():
        st = s.stats()
        check(st["closes_1008"] == 0 and st["invalid_stream_closes"] == 0,
              "bnsim %s closed the gateway: %r" % (st["market"], st))


gh.run_binance("test_binance_paths",
               {"spot": ["--market", "spot"] + SIM,
                "usdm": ["--market", "usdm"] + SIM}, body, timeout=120)
