"""exsim: Deribit's credit model (exchange-protocols.md A6). Running out
gives 10028 too_many_requests and then the connection is closed:
non-matching requests (500 of 50 000, 10 000/s), subscribe (3 000 of
30 000), matching engine tier 4 (burst 20); unauthenticated pools are per
IP, shared by connections. --no-rate-limit lifts it.
"""
import asyncio
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from exsim_util import Exsim, Rpc, check, main, run  # noqa: E402

CREDS = {"grant_type": "client_credentials", "client_id": "exsim",
         "client_secret": "exsim-secret"}


async def hammer(c, n, method, params_fn):
    """Pipelines N requests; returns (ok count, first 10028 index, codes)."""
    futs = []
    loop = asyncio.get_running_loop()
    for i in range(n):
        f = loop.create_future()
        rid = 100000 + i
        c.pending[rid] = f
        futs.append(f)
        await c.send({"jsonrpc": "2.0", "id": rid, "method": method,
                      "params": params_fn(i)})
    await c.wait_closed(10)
    res = []
    for f in futs:
        res.append(f.result() if f.done() and not f.exception() else None)
    ok = sum(1 for r in res if r and "result" in r)
    limited = [i for i, r in enumerate(res)
               if r and r.get("error", {}).get("code") == 10028]
    return ok, limited, res


def span(a, b):
    """Seconds between two responses by exsim's own clock (usIn): how
    long the pool had to refill, however slow this machine is."""
    return (b["usIn"] - a["usIn"]) / 1e6


def test():
    with Exsim("--rate", "0") as sim:
        async def go():
            c = await Rpc.open(sim.url())
            ok, limited, res = await hammer(c, 400, "public/get_time",
                                            lambda i: {})
            check(len(limited) == 1 and limited[0] == ok,
                  "10028 once, right after the last ok: %r" % limited)
            # 100 at once, plus what refills while they arrive (20/s)
            dry = res[ok]
            t = span(res[0], dry)
            check(100 <= ok <= 100 + 20 * t + 1,
                  "non-matching ok %d in %.2fs" % (ok, t))
            check(all(r is None for r in res[ok + 1:]),
                  "answers after 10028")
            code, reason = c.closed.result()
            check(code == 1008, "close %r %r" % (code, reason))

            # unauthenticated pools are per IP: a new connection from the
            # same address finds them empty (at most a refill's worth left)
            c = await Rpc.open(sim.url())
            ok2, limited, res = await hammer(c, 20, "public/get_time",
                                             lambda i: {})
            check(limited == [ok2], "shared pool %d %r" % (ok2, limited))
            t = span(dry, res[ok2])
            check(ok2 <= 20 * t + 1, "shared pool: %d ok %.2fs after it ran "
                  "dry" % (ok2, t))
            await asyncio.sleep(0.3)

            # subscribe: 10 at once
            c = await Rpc.open(sim.url())
            ok, limited, res = await hammer(
                c, 30, "public/subscribe",
                lambda i: {"channels": ["ticker.BTC-PERPETUAL.100ms"]})
            check(limited == [ok], "subscribe ok %d %r" % (ok, limited))
            t = span(res[0], res[ok])
            check(10 <= ok <= 10 + 10 / 3 * t + 1,
                  "subscribe ok %d in %.2fs" % (ok, t))

            # matching engine, tier 4: burst 20 (on the account's pool)
            await asyncio.sleep(0.3)
            c = await Rpc.open(sim.url())
            await c.result("public/auth", CREDS)
            ok, limited, res = await hammer(
                c, 40, "private/buy",
                lambda i: {"instrument_name": "BTC-PERPETUAL", "amount": 10,
                           "price": 50000})
            check(limited == [ok], "matching ok %d %r" % (ok, limited))
            t = span(res[0], res[ok])
            check(20 <= ok <= 20 + 5 * t + 1, "matching ok %d in %.2fs"
                  % (ok, t))

            # the pool refills: a new connection works after a pause
            await asyncio.sleep(0.5)
            c = await Rpc.open(sim.url())
            await c.result("public/get_time")
            await c.close()

        run(go())
        st = sim.stats()
        check(st["rate_limited"] == 4, "rate_limited %r" % st)

    with Exsim("--rate", "0", "--no-rate-limit") as sim:
        async def go2():
            c = await Rpc.open(sim.url())
            ok, limited, res = await asyncio.wait_for(
                nolimit(c), 20)
            check(ok == 1000 and not limited, "no-rate-limit %d" % ok)
            await c.close()

        async def nolimit(c):
            futs = []
            for i in range(1000):
                f = asyncio.get_running_loop().create_future()
                c.pending[i + 1] = f
                futs.append(f)
                await c.send({"jsonrpc": "2.0", "id": i + 1,
                              "method": "public/get_time"})
            res = [await f for f in futs]
            return (sum(1 for r in res if "result" in r),
                    [r for r in res if "error" in r], res)
        run(go2())


main(test)
