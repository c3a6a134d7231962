#!/usr/bin/python3
"""Binance venue (issue 13): bad input from clients.

exgate with a spot and a USDⓈ-M upstream (`protocol binance;`) on two
bnsims. On each market, bystander clients hold trade streams (raw,
combined, ccxt-style) the whole time, while other clients send:

- text that is not JSON -> {"error":{"code":3,"msg":"Invalid JSON..."},
  "id":null} (exactly these keys; msg may carry detail);
- an unknown method, with an id -> {"error":{"code":2,"msg":...},"id":N};
- SUBSCRIBE of names that are not syntactically streams (`@@@lixo###`, a
  number, a space, an empty string) ->
  {"error":{"code":2,"msg":"Invalid request: invalid stream"},"id":N}
  byte for byte, never passed upstream (bnsim counts no invalid-stream
  close and no new connection);
- a path naming a non-stream (/ws/@@@lixo, a bad name in ?streams=, a
  300-byte name) -> HTTP 4xx at the upgrade or close 1008, no data;
- a 1 MiB + 1 text message (over client_max_message 1m) -> close 1009;
- a binary frame -> close 1003;
- a WebSocket ping -> a pong with its payload;
- on the http listener: a 100 kB query and a 100 kB header -> 4xx, and the
  next request is answered.

Checked: one answer per bad request (no second one), the bystanders never
closed, never got an error, kept receiving their streams; bnsim saw no
1008/1003/1009/invalid-stream close and no reconnect; exgate still
answers /status and exits 0 on SIGTERM.
"""

import asyncio
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import websockets  # noqa: E402

import gateway_harness as gh  # noqa: E402
from gateway_harness import check  # noqa: E402
from bnsim_util import Bn, http_request, depth_path  # noqa: E402

SIM = ["--rate", "20", "--symbols", "4"]
INVALID_STREAM = '{"error":{"code":2,"msg":"Invalid request: invalid stream"}'


def error_shape(msg, code, id):
    """Whether MSG is {"error":{"code":CODE,"msg":str},"id":ID}."""
    return (isinstance(msg, dict) and set(msg) == {"error", "id"}
            and msg["id"] == id and isinstance(msg["error"], dict)
            and set(msg["error"]) == {"code", "msg"}
            and msg["error"]["code"] == code
            and isinstance(msg["error"]["msg"], str))


async def one_answer(c, what):
    """The one reply C gets: (msg, raw); fails on none or on a second."""
    msg, raw = await c.reply(10)
    await asyncio.sleep(0.5)
    c.no_reply("%s, after %r" % (what, raw))
    return msg, raw


async def bad_json(h, up, path):
    for text in ('{"method":"SUBSCRIBE","params":["btcusdt@trade"],"id":1',
                 "hello", "{]", "{\"id\":1,}"):
        c = await Bn.open(gh.bn_url(h, up, path))
        await c.send(text)
        msg, raw = await one_answer(c, "%s %r" % (up, text))
        check(error_shape(msg, 3, None)
              and msg["error"]["msg"].startswith("Invalid JSON"),
              "%s: %r answered %r, expected {\"error\":{\"code\":3,"
              "\"msg\":\"Invalid JSON...\"},\"id\":null}" % (up, text, raw))
        await c.close()


async def unknown_method(h, up, path):
    c = await Bn.open(gh.bn_url(h, up, path))
    for i, m in enumerate(("FOO", "subscribe", "LIST_SUBSCRIPTIONS2")):
        await c.send('{"method":"%s","params":["btcusdt@trade"],"id":%d}'
                     % (m, 40 + i))
        msg, raw = await one_answer(c, "%s method %s" % (up, m))
        check(error_shape(msg, 2, 40 + i), "%s: method %s answered %r"
              % (up, m, raw))
    # still usable afterwards
    await c.send('{"method":"SUBSCRIBE","params":["btcusdt@trade"],"id":50}')
    msg, raw = await one_answer(c, "%s SUBSCRIBE after errors" % up)
    check(raw == '{"result":null,"id":50}', "%s: ack %r" % (up, raw))
    await c.close()


async def invalid_streams(h, up, path):
    for i, p in enumerate(['"@@@lixo###"', "5", '"btc usdt@trade"', '""',
                           '"btcusdt@trade","@@@lixo###"']):
        c = await Bn.open(gh.bn_url(h, up, path))
        await c.send('{"method":"SUBSCRIBE","params":[%s],"id":%d}'
                     % (p, 60 + i))
        msg, raw = await one_answer(c, "%s SUBSCRIBE [%s]" % (up, p))
        check(raw == INVALID_STREAM + ',"id":%d}' % (60 + i),
              "%s: SUBSCRIBE [%s] answered %r, expected %s" % (
                  up, p, raw, INVALID_STREAM + ',"id":%d}' % (60 + i)))
        await c.close()


async def bad_path_streams(h, up):
    """A path naming something that is not a stream: refused at the
    upgrade (HTTP 4xx) or closed with 1008, no data either way."""
    pre = "" if h.bn[up]["market"] == "spot" else "/public"
    for path in ("/ws/@@@lixo", pre + "/stream?streams=btcusdt@trade/@@@x",
                 "/ws/" + "a" * 300 + "@trade"):
        try:
            c = await Bn.open(gh.bn_url(h, up, path))
        except websockets.exceptions.InvalidStatusCode as e:
            check(400 <= e.status_code < 500, "%s %s: upgrade answered %d"
                  % (up, path, e.status_code))
            continue
        code, reason = await c.wait_closed(10)
        check(code == 1008, "%s %s: close %r %r, expected 1008 (or a 4xx "
              "upgrade answer)" % (up, path[:40], code, reason))
        check(c.events.empty(), "%s %s: data on a refused path" % (up, path))


async def big_message(h, up, path):
    c = await Bn.open(gh.bn_url(h, up, path))
    pad = (1 << 20) + 1 - len('{"method":"SUBSCRIBE","params":[],"id":1,'
                              '"x":""}')
    text = '{"method":"SUBSCRIBE","params":[],"id":1,"x":"%s"}' % ("a" * pad)
    check(len(text) == (1 << 20) + 1, "message length %d" % len(text))
    await c.send(text)
    code, reason = await c.wait_closed(10)
    check(code == 1009, "%s: a 1 MiB + 1 message: close %r %r, expected "
          "1009" % (up, code, reason))


async def binary(h, up, path):
    c = await Bn.open(gh.bn_url(h, up, path))
    await c.send(b'{"method":"SUBSCRIBE","params":["btcusdt@trade"],"id":1}')
    code, reason = await c.wait_closed(10)
    check(code == 1003, "%s: a binary frame: close %r %r, expected 1003"
          % (up, code, reason))


async def ping(h, up, path):
    c = await Bn.open(gh.bn_url(h, up, path))
    for payload in (b"", b"1712345678901", b"\x00\xffabc" * 20):
        waiter = await c.ws.ping(payload)
        await asyncio.wait_for(waiter, 5)
    await c.close()


def rest_bounds(h, up):
    port = h.bn[up]["http_port"]
    path = depth_path(h.bn[up]["market"])
    st, _, body = http_request(port, "GET", path + "?symbol=BTCUSDT&x="
                               + "a" * 100000)
    check(400 <= st < 500, "%s: a 100 kB query answered %d %r"
          % (up, st, body[:200]))
    st, _, body = http_request(port, "GET", path + "?symbol=BTCUSDT",
                               headers={"X-Big": "b" * 100000})
    check(400 <= st < 500, "%s: a 100 kB header answered %d %r"
          % (up, st, body[:200]))
    st, _, body = http_request(port, "GET", path + "?symbol=BTCUSDT&limit=5")
    check(st == 200 and "lastUpdateId" in json.loads(body),
          "%s: depth after the bad requests: %d %r" % (up, st, body[:200]))


async def bystanders(h, up):
    """Clients that hold trade streams all along."""
    market = h.bn[up]["market"]
    if market == "spot":
        paths = [("/ws/0", ["btcusdt@trade"]), ("/stream", ["ethusdt@trade"]),
                 ("/stream/ws/1", ["btcusdt@aggTrade"])]
    else:
        paths = [("/fapi/public/ws/0", ["btcusdt@trade"]),
                 ("/public/stream", ["ethusdt@trade"]),
                 ("/fapi/market/ws/1", ["btcusdt@aggTrade"])]
    out = []
    for i, (p, streams) in enumerate(paths):
        c = await Bn.open(gh.bn_url(h, up, p))
        msg = await c.call("SUBSCRIBE", streams, id=i + 1)
        check(msg == {"result": None, "id": i + 1}, "bystander %s %r"
              % (p, msg))
        await c.data(timeout=15)
        out.append(c)
    return out


async def body(h, sims):
    gh.start_binance(h, [
        {"name": "spot", "sim": sims["spot"], "market": "spot"},
        {"name": "usdm", "sim": sims["usdm"], "market": "usdm"}])
    by = {}
    for up in ("spot", "usdm"):
        by[up] = await bystanders(h, up)
    before = {up: sims[up].stats() for up in sims}
    for up, path in (("spot", "/ws"), ("spot", "/stream"),
                     ("usdm", "/fapi/public/ws/3"), ("usdm", "/market/ws")):
        for c in by[up]:
            c.drain()
        await asyncio.gather(bad_json(h, up, path),
                             unknown_method(h, up, path),
                             invalid_streams(h, up, path),
                             big_message(h, up, path), binary(h, up, path),
                             ping(h, up, path), bad_path_streams(h, up))
        await asyncio.to_thread(rest_bounds, h, up)
        h.status()
        for u, cs in by.items():
            for c in cs:
                check(not c.closed.done(), "bystander %s closed %r"
                      % (c.url, c.closed.result() if c.closed.done()
                         else None))
                c.no_reply("bystander %s" % c.url)
        for c in by[up]:
            await c.data(timeout=15)      # still flowing
        print("%s %s: bad input answered, bystanders unaffected" % (up, path))
    for up, sim in sims.items():
        st = sim.stats()
        for k in ("closes_1008", "invalid_stream_closes", "binary_closes",
                  "cap_closes"):
            check(st[k] == before[up][k] == 0, "bnsim %s: %s %r" % (
                up, k, st[k]))
        check(st["connections_total"] == before[up]["connections_total"],
              "bnsim %s: the gateway reconnected during the bad input "
              "(%d connections, %d before)" % (
                  up, st["connections_total"],
                  before[up]["connections_total"]))
        check(all(s == s.strip() and "@@@" not in s and s
                  for s in st["subscribed"]),
              "bnsim %s: a bad name went upstream: %r"
              % (up, list(st["subscribed"])))
    for cs in by.values():
        for c in cs:
            await c.close()


gh.run_binance("test_binance_badinput",
               {"spot": ["--market", "spot"] + SIM,
                "usdm": ["--market", "usdm"] + SIM}, body, timeout=120)
