"""bnsim: bad input gets Binance's answer and never kills the simulator.
WebSocket: invalid JSON (code 3, id null), JSON that is not an object,
a missing id or method, an unknown method (code 2, unknown variant, with
the id), bad params, a 30 000-deep nesting, a stream name that is not
syntactically a stream (code 2 "invalid stream", then close; open with
--keep-open-invalid), a well-formed unknown stream (acked, no data), a
1 MiB message (close 1009), a binary frame (close 1003), huge upgrade
headers and URLs (HTTP 400), unknown paths (404). REST: a huge query
(414), a huge header or too many headers (431), a garbage request line
(400), a body too big (413). After all that bnsim still serves. And
2,000 random control messages per market, each answered exactly once.
"""
import asyncio
import json
import os
import random
import socket
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bnsim_util import Bn, Bnsim, check, main, run  # noqa: E402

import websockets  # noqa: E402


async def answers(sim):
    c = await Bn.open(sim.url("/ws"))

    async def ask(text, code, frag, rid):
        await asyncio.sleep(0.22)       # under 5 messages a second
        await c.send(text)
        msg, raw = await c.reply()
        check(msg.get("error", {}).get("code") == code
              and frag in msg["error"]["msg"] and msg.get("id", "x") == rid
              and "result" not in msg and set(msg) == {"error", "id"},
              "%r -> %r" % (text[:60], raw))
        return raw

    raw = await ask("{bad", 3, "Invalid JSON", None)
    check(raw.startswith('{"error":{"code":3,"msg":"Invalid JSON'), raw)
    await ask("", 3, "Invalid JSON", None)
    await ask("[" * 30000 + "]" * 30000, 3, "Invalid JSON", None)
    for text in ("[1,2]", '"str"', "42", "null"):
        await ask(text, 2, "Invalid request", None)
    await ask('{"method":"LIST_SUBSCRIPTIONS"}', 2, "missing field `id`",
              None)
    await ask('{"id":4}', 2, "missing field `method`", 4)
    raw = await ask('{"method":"FOO","id":5}', 2, "unknown variant `FOO`", 5)
    check("expected one of `SUBSCRIBE`" in raw, raw)
    await ask('{"method":42,"id":6}', 2, "unknown variant", 6)
    await ask('{"method":"SUBSCRIBE","id":7}', 2, "missing field `params`", 7)
    await ask('{"method":"SUBSCRIBE","params":"btcusdt@trade","id":8}', 2,
              "invalid type", 8)
    await ask('{"method":"GET_PROPERTY","id":9}', 2, "invalid params", 9)
    # well formed but unknown: acked, no data
    await asyncio.sleep(0.22)
    r = await c.call("SUBSCRIBE", ["btcusdt@naoExisteStream", "BTCUSDT@trade",
                                   "nosuch@trade"])
    check(r["result"] is None, "unknown stream ack %r" % r)
    await asyncio.sleep(0.8)
    check(not c.drain(), "unknown streams sent data")
    # not a stream: error, then close
    await ask('{"method":"SUBSCRIBE","params":["@@@lixo###"],"id":10}', 2,
              "invalid stream", 10)
    code, _ = await c.wait_closed()
    check(code == 1008, "invalid stream close %r" % code)

    for bad in ([42], ["btc usdt@trade"], ["a@b@"], [""], ["x" * 300]):
        c = await Bn.open(sim.url("/ws"))
        await c.send({"method": "SUBSCRIBE", "params": bad, "id": 1})
        msg, raw = await c.reply()
        check(msg == {"error": {"code": 2, "msg": "Invalid request: invalid "
                                "stream"}, "id": 1}, "%r -> %r" % (bad, raw))
        code, _ = await c.wait_closed()
        check(code == 1008, "%r close %r" % (bad, code))

    # a 1 MiB message, a binary frame
    c = await Bn.open(sim.url("/ws"))
    await c.send('{"method":"SUBSCRIBE","params":["%s"],"id":1}'
                 % ("a" * (1 << 20)))
    code, _ = await c.wait_closed()
    check(code == 1009, "1 MiB: close %r" % code)
    c = await Bn.open(sim.url("/ws"))
    await c.send(b'{"method":"LIST_SUBSCRIPTIONS","id":1}')
    code, _ = await c.wait_closed()
    check(code == 1003, "binary: close %r" % code)

    # upgrades: huge header, huge URL, unknown and bad paths
    for path, headers, status in (
            ("/ws", {"X-Big": "y" * 40000}, 400),
            ("/stream?streams=" + "a" * 40000, {}, 400),
            ("/ws/" + "a@b" * 100, {}, 400),
            ("/ws/%40%40bad", {}, 400),
            ("/api/v3/depth", {}, 404),
            ("/", {}, 404)):
        try:
            x = await Bn.open(sim.url(path), extra_headers=headers)
            await x.close()
            check(False, "%s upgraded" % path[:40])
        except websockets.InvalidStatusCode as e:
            check(e.status_code == status, "%s: %d" % (path[:40],
                                                       e.status_code))
    st = sim.stats()
    check(st["invalid_stream_closes"] == 6 and st["binary_closes"] == 1,
          "stats %r" % st)


async def lenient(sim):
    c = await Bn.open(sim.url("/ws"))
    await c.send({"method": "SUBSCRIBE", "params": ["@@@lixo###"], "id": 1})
    msg, _ = await c.reply()
    check(msg["error"]["code"] == 2, "lenient %r" % msg)
    await asyncio.sleep(0.3)
    r = await c.call("LIST_SUBSCRIPTIONS")
    check(r["result"] == [] and not c.closed.done(), "kept open")
    await c.close()


def raw_http(port, data):
    s = socket.create_connection(("127.0.0.1", port), timeout=5)
    try:
        s.sendall(data)
    except (BrokenPipeError, ConnectionResetError):
        pass
    buf = b""
    try:
        while b"\r\n" not in buf:
            chunk = s.recv(4096)
            if not chunk:
                break
            buf += chunk
    except ConnectionResetError:
        pass
    s.close()
    return buf.split(b"\r\n", 1)[0]


def rest(sim):
    p = sim.rest_port
    for data, status in (
            (b"GET /api/v3/depth?symbol=BTCUSDT&" + b"x=1&" * 10000
             + b" HTTP/1.1\r\n\r\n", b"414"),
            (b"GET /api/v3/ping?" + b"a" * 9000 + b" HTTP/1.1\r\n\r\n",
             b"414"),
            (b"GET /api/v3/ping HTTP/1.1\r\nX-Big: " + b"y" * 40000
             + b"\r\n\r\n", b"431"),
            (b"GET /api/v3/ping HTTP/1.1\r\n" + b"X-A: b\r\n" * 200
             + b"\r\n", b"431"),
            (b"GARBAGE\r\n\r\n", b"400"),
            (b"GET /api/v3/ping HTTP/1.1\r\nContent-Length: 99999999\r\n\r\n",
             b"413"),
            (b"GET /api/v3/ping HTTP/1.1\r\nTransfer-Encoding: chunked\r\n"
             b"\r\n", b"501"),
            (b"DELETE /api/v3/ping HTTP/1.1\r\n\r\n", b"405"),
            (b"GET /api/v3/ping HTTP/1.1\r\n\r\n", b"200")):
        line = raw_http(p, data)
        check(line.startswith(b"HTTP/1.1 " + status), "%r -> %r"
              % (data[:40], line))
    st, _, body = sim.get("/api/v3/depth", symbol="BTCUSDT", limit="5",
                          **{"x%d" % i: "1" for i in range(70)})
    check(st == 400 and body["code"] == -1101, "too many params %r" % body)
    # a client that sends half a request and goes away
    s = socket.create_connection(("127.0.0.1", p))
    s.sendall(b"GET /api/v3/pi")
    s.close()


def fuzz_value(rng, depth=0):
    r = rng.random()
    if depth > 3 or r < 0.3:
        return rng.choice([0, -1, 1 << 70, 1.5, True, None, "", "x",
                           "btcusdt@trade", "combined", "@@", "\u00e9"])
    if r < 0.65:
        return [fuzz_value(rng, depth + 1) for _ in range(rng.randrange(4))]
    return {rng.choice(["method", "params", "id", "x"]):
            fuzz_value(rng, depth + 1) for _ in range(rng.randrange(4))}


async def fuzz(sim):
    """2,000 random control messages (limit lifted): each gets exactly one
    answer, or an invalid stream closes the connection; nothing else."""
    rng = random.Random(7)
    c = await Bn.open(sim.url("/ws"))
    answered = closes = 0
    for i in range(2000):
        msg = {}
        for k in ("method", "params", "id"):
            if rng.random() < 0.85:
                msg[k] = fuzz_value(rng)
        if rng.random() < 0.6:
            msg["method"] = rng.choice(["SUBSCRIBE", "UNSUBSCRIBE",
                                        "LIST_SUBSCRIPTIONS", "SET_PROPERTY",
                                        "GET_PROPERTY"])
        text = json.dumps(msg)
        if rng.random() < 0.1:
            text = text[:rng.randrange(len(text) + 1)]
        await c.send(text)
        try:
            reply, raw = await c.reply(5)
        except asyncio.TimeoutError:
            code, _ = await c.wait_closed()
            check(code == 1008, "%r: no answer, close %r" % (text, code))
            closes += 1
            c = await Bn.open(sim.url("/ws"))
            continue
        check(("result" in reply) != ("error" in reply) and "id" in reply,
              "%r -> %r" % (text, raw))
        answered += 1
        if "error" in reply and "invalid stream" in reply["error"]["msg"]:
            code, _ = await c.wait_closed()
            check(code == 1008, "invalid stream close %r" % code)
            closes += 1
            c = await Bn.open(sim.url("/ws"))
    check(answered >= 1900 and sim.alive(), "fuzz: %d answered" % answered)
    await c.close()
    print("fuzz: %d answered, %d closes" % (answered, closes))


def test():
    for market in ("usdm", "spot"):
        with Bnsim("--market", market, "--msg-limit", "100000",
                   "--rate", "5") as sim:
            run(fuzz(sim))
    with Bnsim("--market", "spot", "--rate", "20") as sim:
        run(answers(sim))
        rest(sim)
        check(sim.alive(), "bnsim died")

        async def still():
            c = await Bn.open(sim.url("/ws/btcusdt@trade"))
            await c.data()
            await c.close()
        run(still())
        check(sim.json("/api/v3/ping") == {}, "REST after abuse")
    with Bnsim("--market", "spot", "--keep-open-invalid") as sim:
        run(lenient(sim))


if __name__ == "__main__":
    main(test)
