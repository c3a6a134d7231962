#!/usr/bin/python3
"""Binance venue: `client_ping` and a reload of the venue's conf.

exgate with a spot upstream on bnsim and `client_ping on 1s 3s;`:
- a raw-socket WebSocket client that never answers gets a ping frame
  within 1.5 s, a second one a second later, and is closed about 3 s
  after its last message (nothing more after 6 s);
- a websockets client (which answers every ping) on a stream stays open
  for the same 6 s and keeps receiving;
- on an upstream without client_ping, a silent client gets no ping in 2.5 s.
With `client_rate 5;`, ten requests at once get five answers and five
-1003 errors, each with its own id, and the connection stays; ten invalid
JSON messages get five code 3 and five -1003 (they count too).
Then a reload that changes `market` restarts the upstream (the venue
cannot switch markets live: it says so and exgate builds it anew), and one
that changes `control_rate` only is taken live (same connection id).
"""

import asyncio
import base64
import os
import signal
import socket
import struct
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import gateway_harness as gh  # noqa: E402
from gateway_harness import check  # noqa: E402
from bnsim_util import Bn  # noqa: E402


def raw_ws(port, path):
    """A WebSocket handshake by hand: the socket, never answering pings."""
    s = socket.create_connection(("127.0.0.1", port), timeout=5)
    key = base64.b64encode(os.urandom(16)).decode()
    s.sendall(("GET %s HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
               "Connection: Upgrade\r\nSec-WebSocket-Key: %s\r\n"
               "Sec-WebSocket-Version: 13\r\n\r\n" % (path, key)).encode())
    head = b""
    while b"\r\n\r\n" not in head:
        b = s.recv(1)
        check(b != b"", "handshake: closed")
        head += b
    check(head.startswith(b"HTTP/1.1 101"), "handshake: %r" % head[:40])
    return s


def frames(s, seconds):
    """Every frame S gets within SECONDS: [(time, opcode, payload)], and
    whether the peer closed the TCP connection."""
    out, buf, t0 = [], b"", time.monotonic()
    s.settimeout(0.1)
    closed = False
    while time.monotonic() - t0 < seconds and not closed:
        try:
            d = s.recv(65536)
        except socket.timeout:
            continue
        except ConnectionResetError:
            closed = True
            break
        if d == b"":
            closed = True
            break
        buf += d
        while len(buf) >= 2:
            op, n = buf[0] & 0x0F, buf[1] & 0x7F
            h = 2
            if n == 126:
                if len(buf) < 4:
                    break
                n, h = struct.unpack("!H", buf[2:4])[0], 4
            elif n == 127:
                if len(buf) < 10:
                    break
                n, h = struct.unpack("!Q", buf[2:10])[0], 10
            if len(buf) < h + n:
                break
            out.append((time.monotonic() - t0, op, buf[h:h + n]))
            buf = buf[h + n:]
    return out, closed


def reload_with(h, edit):
    """Rewrites exgate.conf with EDIT(text), sends SIGHUP and waits until
    /status counts the reload; returns whether it went well."""
    path = os.path.join(h.tmp, "exgate.conf")
    with open(path) as f:
        text = f.read()
    new = edit(text)
    check(new != text, "the conf edit changed nothing")
    with open(path, "w") as f:
        f.write(new)
    before = h.status()["reloads"]
    h.gate.send_signal(signal.SIGHUP)
    end = time.monotonic() + 10
    while True:
        now = h.status()["reloads"]
        if now["ok"] + now["error"] > before["ok"] + before["error"]:
            return now["ok"] > before["ok"]
        check(time.monotonic() < end, "reload not done in 10 s")
        time.sleep(0.1)


async def body(h, sims):
    gh.start_binance(h, [
        {"name": "pinged", "sim": sims["spot"], "market": "spot",
         "extra": "    client_ping on 1s 3s;\n"},
        {"name": "quiet", "sim": sims["spot"], "market": "spot"}],
        main_extra="client_rate 5;\n")
    # a websockets client on a stream: it answers the pings itself
    live = await Bn.open(gh.bn_url(h, "pinged", "/ws/btcusdt@trade"))
    loop = asyncio.get_running_loop()
    s = raw_ws(h.bn["pinged"]["ws_port"], "/ws")
    got, closed = await loop.run_in_executor(None, frames, s, 6.0)
    s.close()
    pings = [t for t, op, _ in got if op == 0x9]
    check(len(pings) >= 2 and pings[0] < 1.6, "pings to a silent client: %r"
          % got)
    check(closed, "a client that never answered was not closed in 6 s: %r"
          % got)
    last = max(t for t, _, _ in got)
    check(any(op == 0x8 for _, op, _ in got) or last < 4.5,
          "closed without a close frame long after: %r" % got)
    check(not live.closed.done(), "the client that answers pings was "
          "closed: %r" % (live.closed.result() if live.closed.done()
                          else None))
    n0 = live.events.qsize()
    await asyncio.sleep(1.5)
    check(live.events.qsize() > n0, "the live client stopped receiving")
    await live.close()

    s = raw_ws(h.bn["quiet"]["ws_port"], "/ws")
    got, closed = await loop.run_in_executor(None, frames, s, 2.5)
    s.close()
    check(not any(op == 0x9 for _, op, _ in got) and not closed,
          "without client_ping: %r, closed %s" % (got, closed))

    # client_rate 5: ten requests at once, the last five refused with
    # Binance's -1003 and the client's own ids; the connection stays
    rc = await Bn.open(gh.bn_url(h, "quiet", "/ws"))
    for i in range(10):
        await rc.send({"method": "LIST_SUBSCRIPTIONS", "id": 100 + i})
    got = [await rc.reply() for _ in range(10)]
    ok = [m for m, _ in got if "result" in m]
    over = [m for m, _ in got if m.get("error", {}).get("code") == -1003]
    check(len(ok) == 5 and len(over) == 5
          and [m["id"] for m, _ in got] == list(range(100, 110)),
          "client_rate 5: %r" % [raw for _, raw in got])
    check(not rc.closed.done(), "closed for going over client_rate")
    # invalid JSON counts too: a flood of it is not answered one for one
    await asyncio.sleep(1.1)
    for i in range(10):
        await rc.send("{not json %d" % i)
    got = [await rc.reply() for _ in range(10)]
    codes = sorted(m["error"]["code"] for m, _ in got)
    check(codes == [-1003] * 5 + [3] * 5, "invalid JSON over client_rate: %r"
          % [raw for _, raw in got])
    await rc.close()

    # reloads: control_rate live, market by a restart
    c0 = h.up("pinged")["connection_id"]
    check(reload_with(h, lambda t: t.replace(
        "    client_ping on 1s 3s;\n",
        "    client_ping on 1s 3s;\n    control_rate 2;\n")),
        "the control_rate reload failed")
    check(h.up("pinged")["connection_id"] == c0 and h.up("pinged")["market"]
          == "spot", "control_rate reload: %r" % h.up("pinged"))
    check(reload_with(h, lambda t: t.replace("    market spot;\n",
                                             "    market usdm;\n", 1)),
          "the market reload failed")
    end = time.monotonic() + 10
    while h.up("pinged")["market"] != "usdm":
        check(time.monotonic() < end, "market reload: %r" % h.up("pinged"))
        await asyncio.sleep(0.2)
    check("market changed: restarted" in h.log(),
          "no log line for the market change")
    print("pings at %s, closed after %.1f s; reloads ok"
          % (["%.1f" % t for t in pings], last))


gh.run_binance("test_binance_client_ping",
               {"spot": ["--market", "spot", "--rate", "20"]}, body,
               timeout=60)
