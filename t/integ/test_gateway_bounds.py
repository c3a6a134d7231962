"""Bounds and bad client input, each with its outcome, nothing else harmed:

- invalid JSON -> -32700 and the connection stays; a batch -> -32600;
  no id -> -32600; params not an object -> -32602;
- a 10 MiB WebSocket message -> close 1009; a TCP line over the bound ->
  an error line, then close; a binary frame -> 1003; invalid UTF-8 ->
  1007;
- max_clients: the next WebSocket upgrade gets HTTP 503;
- client_rate: over it, Deribit's 10028 to that client only;
- a client that never reads is closed at the hard output limit while a
  normal client on the same book channel misses no change (the
  change_id chain is unbroken), and /status counts it.
"""

import asyncio
import json
import socket
import time

import websockets

import gateway_harness as gh
from gateway_harness import check, WSClient, TCPClient

BOOK = "book.BTC-PERPETUAL.100ms"
MAIN = ("client_auth off;\n"
        "client_output_limit 256k 0 0;\n"
        "client_rate 20;\n")


async def bad_input(h):
    a = await WSClient("ws-a").connect(h.ws_url)
    t = await TCPClient("tcp-t").connect(h.tcp_port)
    for c in (a, t):
        await c.send("{not json")
        r = await c.answer("null")
        check(r["error"]["code"] == -32700, "%s: %r" % (c.name, r))
        await c.send('[{"jsonrpc":"2.0","id":1,"method":"public/test"}]')
        r = await c.answer("null")
        check(r["error"]["code"] == -32600, "%s batch: %r" % (c.name, r))
        await c.send('{"jsonrpc":"2.0","method":"public/test"}')
        r = await c.answer("null")
        check(r["error"]["code"] == -32600, "%s no id: %r" % (c.name, r))
        await c.send('{"jsonrpc":"2.0","id":1e,"method":"public/test"}')
        r = await c.answer("null")
        check(r["error"]["code"] == -32600, "%s bad id: %r" % (c.name, r))
        r = await c.call("public/test", None, id=2)
        check("result" in r, "%s: still served after bad input" % c.name)
        await c.send('{"jsonrpc":"2.0","id":3,"method":"public/get_time",'
                     '"params":[1]}')
        r = await c.answer("3")
        check(r["error"]["code"] == -32602, "%s params: %r" % (c.name, r))
        # over Deribit's 32 kB request cap: refused here, with the id
        r = await c.call("public/get_time", {"pad": "x" * 40000}, id=4)
        check(r["error"]["code"] == -32600 and r["id"] == 4,
              "%s 40 kB: %r" % (c.name, r))
        check(c.closed is None, "%s closed on bad input" % c.name)

    # 10 MiB over WebSocket -> 1009
    b = await WSClient("ws-big").connect(h.ws_url)
    try:
        await b.ws.send("x" * (10 << 20))
    except websockets.ConnectionClosed:
        pass
    await b.wait_closed(10)
    check(b.closed[0] == 1009, "10 MiB: %r" % (b.closed,))

    # a long TCP line -> an error line, then close
    tb = await TCPClient("tcp-big").connect(h.tcp_port)
    try:
        tb.writer.write(b"x" * (2 << 20))
        await tb.writer.drain()
    except ConnectionError:
        pass
    await tb.wait_closed(10)
    check(any('"code":-32600' in x for x in tb.raw),
          "long line error: %r" % tb.raw[:2])

    # binary -> 1003; invalid UTF-8 -> 1007
    c = await WSClient("ws-bin").connect(h.ws_url)
    await c.ws.send(b"\x00\x01binary")
    await c.wait_closed(5)
    check(c.closed[0] == 1003, "binary: %r" % (c.closed,))
    d = await WSClient("ws-utf8").connect(h.ws_url)
    await d.ws.write_frame(True, 0x1, b'{"id":1,"x":"\xff\xfe"}')
    await d.wait_closed(5)
    check(d.closed[0] == 1007, "invalid utf-8: %r" % (d.closed,))

    # client_rate 20/s: the burst's tail gets 10028, other clients are fine
    keys = [await a.request("public/test", None, id=1000 + i)
            for i in range(30)]
    codes = []
    for k in keys:
        r = await a.answer(k)
        codes.append(r.get("error", {}).get("code"))
    check(codes.count(10028) >= 5, "rate limit codes %r" % codes)
    r = await t.call("public/test", None, id=77)
    check("result" in r, "another client hit by a's rate limit")
    check(a.closed is None, "rate limit closed the client")
    await asyncio.sleep(1.1)
    r = await a.call("public/test", None, id=78)
    check("result" in r, "rate limit does not recover: %r" % r)
    return a, t


async def max_clients(h):
    cl = []
    for i in range(3):
        cl.append(await WSClient("mc%d" % i).connect(h.ws_url))
    # the listener allows 4: these 3 and the caller's ws-a
    try:
        extra = await websockets.connect(h.ws_url)
        await extra.close()
        raise gh.Fail("the 5th websocket client was accepted")
    except websockets.InvalidStatusCode as e:
        check(e.status_code == 503, "over max_clients: %r" % e)
    for c in cl:
        await c.close()


def chain_ok(notes):
    last = None
    for _, m in notes:
        d = m["params"]["data"]
        if last is not None and d.get("prev_change_id") != last:
            return "change %r after %r" % (d.get("prev_change_id"), last)
        last = d["change_id"]
    return None


async def slow_consumer(h, normal):
    # a TCP client with a tiny receive buffer that never reads
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    s.connect(("127.0.0.1", h.tcp_port))
    s.sendall(json.dumps({"jsonrpc": "2.0", "id": 1,
                          "method": "public/subscribe",
                          "params": {"channels": [BOOK]}}).encode() + b"\n")
    # and a WebSocket client that never reads: websockets stops reading
    # the socket once its queue (1 message, 1 kB buffer) is full
    wslow = await websockets.connect(h.ws_url, max_queue=1, read_limit=1024,
                                     max_size=None)
    await wslow.send(json.dumps({"jsonrpc": "2.0", "id": 1,
                                 "method": "public/subscribe",
                                 "params": {"channels": [BOOK]}}))
    r = await normal.call("public/subscribe", {"channels": [BOOK]}, id=900)
    check(r["result"] == [BOOK], "subscribe %r" % r)
    h.control("burst 2")
    await normal.wait_notes(BOOK, 2)
    before = h.status()["slow_consumer_closes"]
    # The kernel takes what it can first: a socket's send queue grows to
    # net.ipv4.tcp_wmem's maximum (4 MiB by default) before exgate queues
    # a byte, so bursts go on until both are over the hard limit on top
    # of that (about 200 bytes a change; 40 bursts would be 24 MB).
    # The tcp listener has sndbuf=16k: its slow client is closed at the
    # first burst, where the websocket one (the kernel's autotuned send
    # queue) needs several.
    rounds = 0
    tcp_round = None
    while (rounds < 40
           and h.status()["slow_consumer_closes"] < before + 2):
        h.control("burst 3000")
        rounds += 1
        await asyncio.sleep(0.3)
        if tcp_round is None and h.log_lines("client tcp#.*slow consumer"):
            tcp_round = rounds
    gh.uh.wait_for(lambda: h.status()["slow_consumer_closes"] >= before + 2,
                   10, what="both slow consumers closed")
    print("slow consumers closed after %d bursts of 3000 changes, the tcp "
          "one (sndbuf=16k) after %s" % (rounds, tcp_round))
    check(tcp_round == 1, "sndbuf=16k: the tcp slow consumer was closed "
          "after %s bursts" % tcp_round)
    check(rounds >= 2, "the websocket slow consumer was closed at the "
          "first burst too: is the kernel's send queue that small?")
    check(h.log_lines("client ws#.*slow consumer") and
          h.log_lines("client tcp#.*slow consumer"),
          "a slow consumer line for each kind")
    h.control("burst 50")
    # one book change per market step: 2 + rounds * 3000 + 50 of them
    await normal.wait_notes(BOOK, 2 + rounds * 3000 + 50, timeout=30)
    err = chain_ok([x for x in normal.notes if x[0] == BOOK])
    check(err is None, "the normal client missed data: %s" % err)
    check(h.log_lines("slow consumer: .* over the hard output limit"),
          "slow consumer log line")
    # the slow socket was closed by the gateway: draining it ends in EOF
    s.setblocking(False)
    ended = False
    end = time.monotonic() + 10
    while time.monotonic() < end:
        try:
            if s.recv(1 << 20) == b"":
                ended = True
                break
        except BlockingIOError:
            await asyncio.sleep(0.02)
        except ConnectionError:
            ended = True
            break
    s.close()
    check(ended, "the slow client's socket was not closed")
    wslow.transport.abort()


async def body(h):
    gh.start(h, "    protocol deribit;\n", MAIN,
             sim_args=("--rate", "0", "--no-aggregate", "--no-rate-limit"),
             ws_extra=" max_clients=4", tcp_extra=" sndbuf=16k")
    gh.wait_ready(h)
    a, t = await bad_input(h)
    await max_clients(h)
    await slow_consumer(h, a)
    s = h.status()
    check(s["client_errors"] >= 10, "client_errors %r" % s["client_errors"])
    check(s["slow_consumer_closes"] == 2, "slow_consumer_closes %r"
          % s["slow_consumer_closes"])
    # one per listener: the websocket one and the tcp one
    per = sorted((l["kind"], l["slow_consumer_closes"])
                 for l in s["listeners"])
    check(per == [("tcp", 1), ("websocket", 1)],
          "slow_consumer_closes per listener %r" % per)
    await a.close()
    await t.close()


gh.run("gateway_bounds", body)
