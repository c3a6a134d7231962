"""exsim: public/set_heartbeat, heartbeat and test_request notifications,
the close when a test_request goes unanswered, public/disable_heartbeat
(exchange-protocols.md A3). --min-heartbeat lowers Deribit's 10 s floor.
"""
import asyncio
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from exsim_util import Exsim, Rpc, check, main, run  # noqa: E402


def test():
    with Exsim("--min-heartbeat", "0.2", "--rate", "0") as sim:
        async def go():
            c = await Rpc.open(sim.url())
            r = await c.call("public/set_heartbeat", {"interval": 0.1})
            check(r.get("error", {}).get("code") == -32602,
                  "below the minimum %r" % r)
            r = await c.call("public/set_heartbeat", {})
            check(r.get("error", {}).get("code") == -32602, "no interval")

            # answered: the connection lives well past several intervals
            # (0.6 s: the answer's round trip through a sanitizer build of
            # exsim on a loaded machine must fit into one interval)
            c.answer_test_requests = True
            check(await c.result("public/set_heartbeat", {"interval": 0.6})
                  == "ok", "set_heartbeat")
            types = []
            end = time.monotonic() + 3.5
            while time.monotonic() < end:
                n = await c.note(method="heartbeat", timeout=1)
                check(set(n) == {"jsonrpc", "method", "params"},
                      "heartbeat frame %r" % n)
                types.append(n["params"]["type"])
            check(not c.closed.done(), "closed although answered")
            check("heartbeat" in types and types.count("test_request") >= 4,
                  "types %r" % types)

            # unanswered: closed within about one interval of the request
            c.answer_test_requests = False
            t0 = None
            while True:
                n = await c.note(method="heartbeat", timeout=2)
                if n["params"]["type"] == "test_request":
                    t0 = time.monotonic()
                    break
            code, reason = await c.wait_closed(5)
            took = time.monotonic() - t0
            check(0.4 <= took <= 2.5, "closed after %.2fs" % took)
            check(code == 1000, "close code %r %r" % (code, reason))

            # disable_heartbeat: no more heartbeats, no close
            d = await Rpc.open(sim.url())
            await d.result("public/set_heartbeat", {"interval": 0.2})
            await d.note(method="heartbeat", timeout=1)
            check(await d.result("public/disable_heartbeat") == "ok", "dis")
            await asyncio.sleep(0.3)
            while not d.notes.empty():
                d.notes.get_nowait()
            await asyncio.sleep(1.0)
            check(d.notes.empty() and not d.closed.done(),
                  "heartbeats after disable")
            await d.close()

        run(go())
        st = sim.stats()
        check(st["heartbeat_closes"] == 1, "heartbeat_closes %r" % st)


main(test)
