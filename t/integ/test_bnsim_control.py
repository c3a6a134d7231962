"""bnsim: the control port does what each command says. Bad commands get
{"ok":false}; rate 0 holds the market still, burst N moves it N updates,
rate HZ moves it; close CODE REASON, drop (no close frame), stall (no
data, upgrades hang until off), refuse (HTTP status at the upgrade),
shutdown (serverShutdown in the connection's framing, then close 1001;
later connections stay), age SECONDS (close at that age); server pings
carry a payload, a pong with that payload keeps the connection, no pong
or a wrong one drops it after the pong timeout; stats; quit exits 0.
"""
import asyncio
import base64
import os
import socket
import struct
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bnsim_util import Bn, Bnsim, check, main, run  # noqa: E402

import websockets  # noqa: E402

STATS_KEYS = {"connections_total", "upgrades", "refused", "connections_open",
              "max_concurrent", "msg_rate_max", "msg_rate_max_open",
              "streams_max", "closes_1008", "cap_closes", "pong_closes",
              "age_closes", "shutdown_closes", "control_messages",
              "published", "delivered", "gapped", "rest_requests",
              "rest_weight_used", "rest_weight_max", "rest_429", "rest_418",
              "conns", "rate", "stall", "market"}


def last_id(sim):
    return sim.json("/api/v3/depth", symbol="ETHUSDT", limit=5)[
        "lastUpdateId"]


async def commands(sim):
    st = sim.stats()
    check(STATS_KEYS <= set(st), "stats keys missing %r"
          % (STATS_KEYS - set(st)))
    for bad in ("", "frobnicate", "close", "close 999", "close 1005",
                "close x", "stall maybe", "refuse on 42", "refuse on 599",
                "rate -1", "rate x", "burst 0", "burst", "gap nonsense",
                "gap btcusdt@nothing", "age", "age -1", "age x",
                "shutdown x", "stats now", "drop all"):
        r = sim.control(bad)
        check(r.get("ok") is False and r.get("error"), "%r -> %r" % (bad, r))
    with socket.create_connection(("127.0.0.1", sim.control_port)) as s:
        s.sendall(b"stats\nrate 0\n")
        buf = b""
        while buf.count(b"\n") < 2:
            buf += s.recv(65536)
        check(buf.count(b"\n") == 2, "two commands, two lines")

    # rate 0 holds still, burst N moves N updates, rate HZ moves
    a = last_id(sim)
    await asyncio.sleep(0.3)
    check(last_id(sim) == a, "moved at rate 0")
    check(sim.control("burst 7")["updates"] == 7, "burst")
    b = last_id(sim)
    check(a + 7 <= b <= a + 7 * 10, "burst 7: %d -> %d" % (a, b))
    check(sim.control("rate 100")["ok"], "rate")
    await asyncio.sleep(0.5)
    check(last_id(sim) >= b + 20, "rate 100 did not move")

    # close CODE REASON
    c = await Bn.open(sim.url("/ws/btcusdt@trade"))
    x = await Bn.open(sim.url("/stream?streams=btcusdt@trade/nosuch@x"))
    st = sim.stats()
    check(st["subscribed"] == {"btcusdt@trade": 2, "nosuch@x": 1}
          and st["connections_open"] == 2 and st["streams_open"] == 3,
          "subscribed %r" % st["subscribed"])
    await x.close()
    await sim.wait_stats(lambda s: s["connections_open"] == 1, "one open")
    r = sim.control("close 4000 going away now")
    check(r["ok"] and r["closed"] == 1, "close %r" % r)
    code, reason = await c.wait_closed()
    check((code, reason) == (4000, "going away now"), "close %r %r"
          % (code, reason))

    # drop: no close frame
    c = await Bn.open(sim.url("/ws/btcusdt@trade"))
    await c.data()
    r = sim.control("drop")
    check(r["dropped"] == 1, "drop %r" % r)
    code, _ = await c.wait_closed()
    check(code == 1006, "drop gave close code %r" % code)

    # stall: nothing is sent, new upgrades hang; off: all resumes
    c = await Bn.open(sim.url("/ws/btcusdt@bookTicker"))
    await c.data()
    check(sim.control("stall on")["stall"] is True, "stall on")
    await asyncio.sleep(0.3)
    c.drain()
    await asyncio.sleep(0.6)
    check(not c.drain(), "data while stalled")
    pending = asyncio.ensure_future(Bn.open(sim.url("/ws/btcusdt@trade")))
    await asyncio.sleep(0.6)
    check(not pending.done(), "upgrade completed while stalled")
    check(sim.control("stall off")["stall"] is False, "stall off")
    c2 = await asyncio.wait_for(pending, 5)
    await c.data()
    await c2.data()
    await c.close()
    await c2.close()

    # refuse STATUS
    check(sim.control("refuse on 503")["refuse"] == 503, "refuse on")
    try:
        await Bn.open(sim.url("/ws"))
        check(False, "upgrade while refusing")
    except websockets.InvalidStatusCode as e:
        check(e.status_code == 503, "refuse status %d" % e.status_code)
    check(sim.control("refuse off")["refuse"] is None, "refuse off")
    c = await Bn.open(sim.url("/ws"))
    await c.close()

    # shutdown: the event in each connection's framing, then close 1001
    raw = await Bn.open(sim.url("/ws"))
    comb = await Bn.open(sim.url("/stream"))
    t0 = time.monotonic()
    r = sim.control("shutdown 0.5")
    check(r["ok"] and r["shutdown"] == 2, "shutdown %r" % r)
    later = await Bn.open(sim.url("/ws"))
    _, d, text = await asyncio.wait_for(raw.events.get(), 5)
    check(d["e"] == "serverShutdown" and isinstance(d["E"], int)
          and set(d) == {"e", "E"}, "raw shutdown %r" % text)
    s, d, text = await asyncio.wait_for(comb.events.get(), 5)
    check(s == "!serverShutdown" and d["e"] == "serverShutdown",
          "combined shutdown %r" % text)
    for x in (raw, comb):
        code, _ = await x.wait_closed()
        check(code == 1001, "after shutdown: %r" % code)
    el = time.monotonic() - t0
    check(0.4 <= el <= 3, "closed %.2fs after shutdown" % el)
    await asyncio.sleep(0.3)
    check(not later.closed.done(), "a later connection was closed")
    await later.close()

    # age SECONDS
    check(sim.control("age 1")["age"] == 1, "age")
    c = await Bn.open(sim.url("/ws"))
    t0 = time.monotonic()
    code, _ = await c.wait_closed(5)
    el = time.monotonic() - t0
    check(code == 1001 and 0.8 <= el <= 2.5, "age close %r after %.2fs"
          % (code, el))
    check(sim.control("age off")["age"] == 86400, "age off")
    st = sim.stats()
    check(st["age_closes"] == 1 and st["shutdown_closes"] == 2,
          "closes %r" % st)


def ws_connect(port, path="/ws/btcusdt@trade"):
    s = socket.create_connection(("127.0.0.1", port))
    key = base64.b64encode(os.urandom(16)).decode()
    s.sendall(("GET %s HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
               "Connection: Upgrade\r\nSec-WebSocket-Key: %s\r\n"
               "Sec-WebSocket-Version: 13\r\n\r\n" % (path, key)).encode())
    buf = b""
    while b"\r\n\r\n" not in buf:
        buf += s.recv(4096)
    check(buf.startswith(b"HTTP/1.1 101"), "handshake %r" % buf[:80])
    return s, buf.split(b"\r\n\r\n", 1)[1]


def read_frame(s, buf):
    """(opcode, payload, rest of buffer) or (None, None, b"") at EOF."""
    def need(n):
        nonlocal buf
        while len(buf) < n:
            try:
                chunk = s.recv(65536)
            except ConnectionResetError:
                chunk = b""
            if not chunk:
                return False
            buf += chunk
        return True
    if not need(2):
        return None, None, b""
    op, n = buf[0] & 0x0F, buf[1] & 0x7F
    h = 2
    if n == 126:
        need(4)
        n, h = struct.unpack("!H", buf[2:4])[0], 4
    elif n == 127:
        need(10)
        n, h = struct.unpack("!Q", buf[2:10])[0], 10
    if not need(h + n):
        return None, None, b""
    return op, buf[h:h + n], buf[h + n:]


def send_frame(s, op, payload):
    mask = os.urandom(4)
    body = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    s.sendall(bytes((0x80 | op, 0x80 | len(payload))) + mask + body)


def pinged(sim, answer):
    """A raw client that answers server pings per ANSWER ("echo", "wrong"
    or None) for 2.5 s; returns (pings seen, still open)."""
    s, buf = ws_connect(sim.ws_port)
    s.settimeout(0.2)
    end = time.monotonic() + 2.5
    pings = []
    open_ = True
    while time.monotonic() < end:
        try:
            op, data, buf = read_frame(s, buf)
        except socket.timeout:
            continue
        if op is None:
            open_ = False
            break
        if op == 0x9:
            pings.append(data)
            if answer == "echo":
                send_frame(s, 0xA, data)
            elif answer == "wrong":
                send_frame(s, 0xA, b"x" + data)
    s.close()
    return pings, open_


async def pings(sim):
    loop = asyncio.get_running_loop()
    res = await asyncio.gather(*[loop.run_in_executor(None, pinged, sim, a)
                                 for a in ("echo", "wrong", None)])
    (p1, open1), (p2, open2), (p3, open3) = res
    check(len(p1) >= 4 and all(p1) and len(set(p1)) == len(p1),
          "pings with distinct payloads every 0.3 s: %r" % p1)
    check(open1, "echoed pongs: connection dropped")
    check(not open2 and not open3, "wrong pong open %r, no pong open %r"
          % (open2, open3))
    st = await sim.wait_stats(lambda s: s["pong_closes"] == 2, "pong closes")
    check(st["connections_open"] == 0, "open %r" % st)
    # websockets answers pings by itself: stays
    c = await Bn.open(sim.url("/ws"))
    await asyncio.sleep(1.5)
    check(not c.closed.done(), "auto-pong client closed")
    await c.close()


def test():
    with Bnsim("--market", "spot", "--rate", "50") as sim:
        run(commands(sim))
    with Bnsim("--market", "usdm", "--ping-interval", "0.3",
               "--pong-timeout", "1", "--rate", "5") as sim:
        run(pings(sim))
        check(sim.control("quit") == {"ok": True, "quit": True}, "quit")
        check(sim.proc.wait(10) == 0, "quit exit code")


if __name__ == "__main__":
    main(test)
