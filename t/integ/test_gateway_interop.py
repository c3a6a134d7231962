#!/usr/bin/python3
"""The whole path between two independent WebSocket implementations:
Debian's python3-websockets as the exchange (a server on a `protocol raw;`
upstream) and as the bot (a client of a raw listener), exgate between.

exgate's client connection hands text frames to wslay with RSV1 set, so
that wslay skips its UTF-8 check (ws_rx_tag in src/xg_ws.c); exgate checks
each whole message itself. No extension is agreed on either side (the bot
offers permessage-deflate, exgate declines it), so a reserved bit on
either wire is a protocol error that websockets fails the connection on
(1002). What must hold:

- the bot's text reaches the exchange as sent (no RSV bit towards it);
- the exchange's text reaches the bot whole, in order, with the bot's
  connection open: ASCII, two- to four-byte UTF-8, a message fragmented
  in three frames with a ping after it, 1 MiB with multi-byte characters
  near its end, 300 small messages sent at once (fanned out in batches);
- text that is not UTF-8 from the exchange (a two-byte overlong NUL) never
  reaches the bot: exgate closes that connection with 1007, reconnects,
  and the bot, still connected, gets the next message.
"""

import asyncio
import json
import os
import sys
import threading

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import gateway_harness as gh  # noqa: E402
from gateway_harness import check, free_port  # noqa: E402

import websockets  # noqa: E402

SMALL = 300
BIG = "a" * ((1 << 20) - 16) + "\u00e9\u20ac\U0001f600!"
SCRIPT = (["ascii only, the usual JSON: {\"channel\":\"x\",\"seq\":1}",
           "h\u00e9llo \u20ac \U0001f600 \u4e2d\u6587"]
          + ["frag one \u20ac two three"]       # sent in three frames
          + [BIG]
          + [json.dumps({"seq": i, "pad": "\u00fc" * 40}) for i in
             range(SMALL)])


class Exchange:
    """The python3-websockets server, on its own thread and loop."""

    def __init__(self):
        self.loop = asyncio.new_event_loop()
        self.conns = []             # connections in order of arrival
        self.closes = []            # (close_code, close_reason) by exgate
        self.received = []          # texts from exgate
        self.cond = threading.Condition()
        self.port = None
        started = threading.Event()

        def main():
            asyncio.set_event_loop(self.loop)

            async def serve():
                self.server = await websockets.serve(
                    self.handler, "127.0.0.1", 0, max_size=None,
                    compression=None)
                self.port = self.server.sockets[0].getsockname()[1]
                started.set()
            self.loop.run_until_complete(serve())
            self.loop.run_forever()
        self.thread = threading.Thread(target=main, daemon=True)
        self.thread.start()
        started.wait(5)

    async def handler(self, ws, path=None):
        with self.cond:
            self.conns.append(ws)
            self.cond.notify_all()
        try:
            async for m in ws:
                with self.cond:
                    self.received.append(m)
                    self.cond.notify_all()
        except websockets.ConnectionClosed:
            pass
        with self.cond:
            self.closes.append((ws.close_code, ws.close_reason))
            self.cond.notify_all()

    def run(self, coro, timeout=10):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(
            timeout)

    async def send_script(self, ws):
        await ws.send(SCRIPT[0])
        await ws.send(SCRIPT[1])
        await ws.send(["frag one ", "\u20ac two", " three"])
        await ws.ping()
        await ws.send(SCRIPT[3])
        for m in SCRIPT[4:]:
            await ws.send(m)

    async def send_bad(self, ws):
        # an overlong NUL: not UTF-8; websockets' send() cannot make it
        await ws.write_frame(True, 0x1, b"bad \xc0\x80")

    def wait(self, pred, timeout=10):
        with self.cond:
            return self.cond.wait_for(pred, timeout)

    def stop(self):
        async def down():
            self.server.close()
            await self.server.wait_closed()
        self.run(down())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)


async def recv(bot, timeout=10):
    return await asyncio.wait_for(bot.recv(), timeout)


async def body(h):
    ex = Exchange()
    try:
        await scenario(h, ex)
    finally:
        ex.stop()


async def scenario(h, ex):
    port = free_port()
    conf = ("upstream x {\n"
            "    url ws://127.0.0.1:%d/feed;\n"
            "    protocol raw;\n"
            "    reconnect fixed { delay 100ms; }\n"
            "}\n"
            "listen 127.0.0.1:%d websocket upstream=x client_auth=off;\n"
            % (ex.port, port))
    await asyncio.to_thread(h.start_gate_conf, conf)
    await asyncio.to_thread(h.wait_up, lambda u: u["state"] == "ready", 10,
                            "upstream ready", "x")
    check(ex.wait(lambda: len(ex.conns) == 1), "exgate connected once")

    bot = await websockets.connect("ws://127.0.0.1:%d/feed" % port,
                                   max_size=None)
    check(bot.extensions == [], "no extension agreed with the bot: %r"
          % bot.extensions)
    hello = "hello from the bot \u00e9\u20ac\U0001f600"
    await bot.send(hello)
    check(ex.wait(lambda: hello in ex.received),
          "the bot's text reached the exchange as sent: %r"
          % ex.received[-3:])

    await asyncio.to_thread(ex.run, ex.send_script(ex.conns[0]))
    for i, want in enumerate(SCRIPT):
        try:
            got = await recv(bot)
        except websockets.ConnectionClosed as e:
            check(False, "the bot's connection failed at message %d: %s"
                  % (i, e))
        check(got == want, "message %d arrived as sent (%d bytes, got %d)"
              % (i, len(want), len(got)))
    check(bot.open, "the bot's connection is open after %d messages"
          % len(SCRIPT))
    check(ex.closes == [], "the exchange's connection is open: %r"
          % ex.closes)

    await asyncio.to_thread(ex.run, ex.send_bad(ex.conns[0]))
    check(ex.wait(lambda: len(ex.closes) == 1),
          "exgate closed the connection that sent invalid UTF-8")
    check(ex.closes[0][0] == 1007, "with 1007: %r" % (ex.closes,))
    check(ex.wait(lambda: len(ex.conns) == 2),
          "exgate connected again")
    await asyncio.to_thread(h.wait_up, lambda u: u["state"] == "ready", 10,
                            "upstream ready again", "x")
    after = "after the reconnect \u2713"
    await asyncio.to_thread(ex.run, ex.conns[1].send(after))
    try:
        got = await recv(bot)
    except websockets.ConnectionClosed as e:
        check(False, "the bot's connection failed: %s" % e)
    check(got == after, "the bot's next message is the one after the "
          "reconnect, not the invalid text: %r" % got[:40])
    check(bot.open, "the bot's connection is still open")
    await bot.close()
    check(ex.closes == [(1007, ex.closes[0][1])],
          "no other close on the exchange side: %r" % ex.closes)


if __name__ == "__main__":
    gh.run("gateway_interop", body)
