"""exsim: the control port, one command per line, one JSON reply each:
drop, close CODE [REASON], stall on|off, refuse on|off [STATUS], rate,
burst, delay METHOD MS, hold METHOD MS, stats, quit, and bad commands. (reject-auth, reject-channel and gap
are exercised in test_exsim_auth, test_exsim_subscribe, test_exsim_book.)
"""
import asyncio
import os
import socket
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from exsim_util import Exsim, Rpc, check, main, run  # noqa: E402

import websockets  # noqa: E402

STATS_KEYS = {"connections_total", "held_lost", "connections_open", "max_concurrent",
              "auth_ok", "auth_fail", "requests", "subscribed", "published",
              "orders_open", "cod_cancels"}


async def book_id(c):
    ob = await c.result("public/get_order_book",
                        {"instrument_name": "ETH-PERPETUAL", "depth": 1})
    return ob["change_id"]


def test():
    with Exsim("--rate", "0") as sim:
        st = sim.stats()
        check(STATS_KEYS <= set(st), "stats keys %r" % st)
        check(st["connections_total"] == 0 and st["published"] == 0, "zero")

        # bad commands get an error reply and the port keeps working
        for bad in ("", "frobnicate", "close", "close 999", "close 1005",
                    "stall maybe", "refuse on 42", "maintenance", "rate -1", "rate x",
                    "burst 0", "burst", "gap nonsense", "reject-channel x",
                    "reject-auth", "delay", "delay public/test",
                    "delay public/test -1", "delay public/test 600001",
                    "delay public/test 5ms", "delay public/test x",
                    "hold", "hold public/test", "hold public/test -1",
                    "hold public/test 600001", "hold public/test x",
                    "fail", "fail public/test", "fail public/test 11051",
                    "fail public/test x 1", "fail public/test 11051 -1",
                    "fail public/test 11051 1x"):
            r = sim.control(bad)
            check(r.get("ok") is False and r.get("error"), "%r -> %r"
                  % (bad, r))
        with socket.create_connection(("127.0.0.1", sim.control_port)) as s:
            s.sendall(b"stats\nrate 0\n")
            buf = b""
            while buf.count(b"\n") < 2:
                buf += s.recv(65536)
            check(buf.count(b"\n") == 2, "two commands, two lines")

        async def go():
            # rate: 0 holds the market still, rate 200 moves it
            c = await Rpc.open(sim.url())
            a = await book_id(c)
            await asyncio.sleep(0.3)
            check(await book_id(c) == a, "market moved at rate 0")
            check(sim.control("burst 7")["updates"] == 7, "burst")
            check(await book_id(c) == a + 7, "burst 7 changes")
            t0 = time.monotonic()
            check(sim.control("rate 200")["ok"], "rate 200")
            await asyncio.sleep(0.5)
            moved = await book_id(c) - a - 7
            # The bound follows the time that really passed: a loaded
            # machine may sleep longer than asked.
            el = time.monotonic() - t0
            check(50 <= moved <= 200 * el + 50,
                  "rate 200 for %.2fs moved %d" % (el, moved))
            sim.control("rate 0")

            # close CODE REASON: a clean close with that code and reason
            r = sim.control("close 4000 going away now")
            check(r["ok"] and r["closed"] == 1, "close %r" % r)
            code, reason = await c.wait_closed(5)
            check(code == 4000 and reason == "going away now",
                  "close code %r reason %r" % (code, reason))

            # drop: no close frame (1006 on our side)
            c = await Rpc.open(sim.url())
            d = await Rpc.open(sim.url())
            await asyncio.sleep(0.1)
            check(sim.stats()["connections_open"] == 2, "two open")
            r = sim.control("drop")
            check(r["ok"] and r["dropped"] == 2, "drop %r" % r)
            for x in (c, d):
                code, _ = await x.wait_closed(5)
                check(code == 1006, "drop gave close code %r" % code)
            await sim.wait_stats(lambda st: st["connections_open"] == 0,
                                 "none open")

            # stall: nothing at all goes out, pings unanswered, TCP open
            c = await Rpc.open(sim.url())
            await c.result("public/subscribe",
                           {"channels": ["book.BTC-PERPETUAL.100ms"]})
            await c.note("book.BTC-PERPETUAL.100ms")
            check(sim.control("rate 100")["ok"], "rate")
            await c.note("book.BTC-PERPETUAL.100ms")
            check(sim.control("stall on")["ok"], "stall on")
            await asyncio.sleep(0.2)
            while not c.notes.empty():
                c.notes.get_nowait()
            pong = await c.ws.ping(b"hello")
            fut = asyncio.ensure_future(c.call("public/test"))
            await asyncio.sleep(1.5)
            check(not pong.done(), "pong while stalled")
            check(not fut.done(), "answer while stalled")
            check(c.notes.empty(), "notifications while stalled")
            check(not c.closed.done(), "closed while stalled")
            # a new connection gets no upgrade answer either
            try:
                await websockets.connect(sim.url(), open_timeout=0.7)
                check(False, "upgrade answered while stalled")
            except asyncio.TimeoutError:
                pass
            check(sim.control("stall off")["ok"], "stall off")
            await asyncio.wait_for(pong, 3)
            r = await asyncio.wait_for(fut, 3)
            check("result" in r, "request sent during the stall %r" % r)
            await c.note("book.BTC-PERPETUAL.100ms", timeout=3)
            sim.control("rate 0")
            await c.close()

            # delay: that method's answers go out late, others at once,
            # and none to a connection that went away meanwhile
            c = await Rpc.open(sim.url())
            check(sim.control("delay public/get_time 800")["ok"], "delay")
            t0 = time.monotonic()
            slow = asyncio.ensure_future(c.call("public/get_time"))
            await c.result("public/test")
            fast = time.monotonic() - t0
            r = await asyncio.wait_for(slow, 5)
            took = time.monotonic() - t0
            check("result" in r, "delayed answer %r" % r)
            check(fast < 0.5 and 0.75 <= took <= 3,
                  "public/test after %.3f s, delayed get_time after %.3f s"
                  % (fast, took))
            d = await Rpc.open(sim.url())
            gone = asyncio.ensure_future(d.call("public/get_time"))
            await asyncio.sleep(0.1)
            await d.close()
            await asyncio.sleep(1.0)     # its answer found no connection
            gone.cancel()
            check(sim.control("delay public/get_time 0")["ok"], "undelay")
            t0 = time.monotonic()
            await c.result("public/get_time")
            check(time.monotonic() - t0 < 0.5, "delay 0 ends it")
            # hold: that method runs late (counted then), others at once
            check(sim.control("hold public/get_time 800")["ok"], "hold")
            t0 = time.monotonic()
            slow = asyncio.ensure_future(c.call("public/get_time"))
            await c.result("public/test")
            fast = time.monotonic() - t0
            check(sim.stats()["requests"].get("public/get_time") == 3,
                  "a held request is not run (nor counted) yet")
            r = await asyncio.wait_for(slow, 5)
            took = time.monotonic() - t0
            check("result" in r and fast < 0.5 and 0.75 <= took <= 3,
                  "held get_time %r after %.3f s (test after %.3f s)"
                  % (r, took, fast))
            check(sim.control("hold public/get_time 0")["ok"], "unhold")
            check(sim.stats()["held_lost"] == 0, "nothing held was lost")
            await c.close()

            # maintenance: platform_state says so, most methods fail 11051
            c = await Rpc.open(sim.url())
            await c.result("public/subscribe", {"channels": ["platform_state"]})
            check(sim.control("maintenance on")["ok"], "maintenance on")
            n = await c.note("platform_state")
            check(n["params"]["data"] == {"maintenance": True}, "ps %r" % n)
            r = await c.call("public/get_order_book",
                             {"instrument_name": "BTC-PERPETUAL"})
            check(r.get("error", {}).get("code") == 11051
                  and r["error"]["message"] == "system_maintenance",
                  "during maintenance %r" % r)
            check((await c.result("public/status"))["locked"] == "true",
                  "status")
            await c.result("public/test")
            check(sim.control("maintenance off")["ok"], "maintenance off")
            await c.result("public/get_order_book",
                           {"instrument_name": "BTC-PERPETUAL"})
            await c.close()

            # refuse: upgrades answered with the status, then accepted again
            for cmd, status in (("refuse on", 503), ("refuse on 429", 429)):
                check(sim.control(cmd)["ok"], cmd)
                try:
                    await websockets.connect(sim.url())
                    check(False, "%s: upgrade accepted" % cmd)
                except websockets.InvalidStatusCode as e:
                    check(e.status_code == status, "%s: %r" % (cmd,
                                                              e.status_code))
            check(sim.control("refuse off")["ok"], "refuse off")
            c = await Rpc.open(sim.url())
            await c.result("public/test")
            await c.close()

        run(go())
        st = sim.stats()
        check(st["max_concurrent"] == 2 and st["connections_open"] == 0,
              "stats %r" % st)
        # TCP connections: close, 2 dropped, stalled one, the one that gave
        # up during the stall, 2 for delay, maintenance, 2 refused, the one
        # after refuse; the one that gave up may or may not have completed
        # its upgrade: its FIN wakes the socket, so the upgrade request may
        # still be read
        check(st["connections_total"] == 11 and st["refused"] == 2,
              "connections_total %r" % st)
        check(st["upgrades"] in (8, 9), "upgrades %r" % st)
        check(st["requests"].get("public/get_time") == 4,
              "get_time requests %r" % st["requests"])
        check(st["published"] > 0, "published")
        t0 = time.monotonic()
        check(sim.control("quit")["ok"], "quit")
        sim.proc.wait(10)
        check(time.monotonic() - t0 < 5, "quit took long")
        # check_clean_exit (on leaving the block) asserts exit 0 and no
        # sanitizer reports


main(test)
