#!/usr/bin/python3
"""Binance venue (issue 13): Binance's per-connection limits are the
gateway's to keep, never the clients'.

Spot: bnsim with 400 symbols; nine clients hold 2,000 distinct streams
(bookTicker, kline_1m, kline_5m, miniTicker, ticker of each symbol): six
SUBSCRIBE 250 each in one message, one opens /stream?streams= with 80
and SUBSCRIBEs 120 more, one sends 30 SUBSCRIBEs of 10 at once (far
over 5/s: its own problem is none), one (ccxt's /stream/ws/<n>) holds 300
that another client holds too. Then bnsim `drop`, then a rotation (POST /upstreams/spot/rotate).
USDⓈ-M: bnsim with 300 symbols; three clients hold 300 bookTicker
streams (route /public), then `drop`.

Checked, from bnsim's `stats` (it measures them): every stream held
upstream once, on connections of at most 1024 (spot) / 200 (USDⓈ-M)
streams, the USDⓈ-M ones on exactly two /public connections (not
counting a connection with no stream); the most
incoming messages in one second on any connection never over 5 (spot) /
10 (USDⓈ-M), through the first subscribe and every restore; no 1008, no
cap close, no close for a missing pong (bnsim pings every 2 s and wants
the pong within 5 s: Binance's pings are answered at once, never behind
the paced subscribes); after each restore every stream of every client delivers
again (an event received after the restore), no client closed or got an
error. The restore times are printed.
"""

import asyncio
import os
import random
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import gateway_harness as gh  # noqa: E402
from gateway_harness import check  # noqa: E402
from bnsim_util import Bn  # noqa: E402

SPOT_SYMS = 400
USDM_SYMS = 300
KINDS = ("bookTicker", "kline_1m", "kline_5m", "miniTicker", "ticker")


def symbols(sim):
    """bnsim's symbol names (lower case), in its order."""
    info = sim.json("/api/v3/exchangeInfo" if sim.stats()["market"] == "spot"
                    else "/fapi/v1/exchangeInfo")
    return [s["symbol"].lower() for s in info["symbols"]]


def stream_of(d):
    """The stream name a raw event belongs to (the kinds used here)."""
    s = d["s"].lower()
    e = d.get("e")
    if e == "kline":
        return "%s@kline_%s" % (s, d["k"]["i"])
    if e == "24hrMiniTicker":
        return s + "@miniTicker"
    if e == "24hrTicker":
        return s + "@ticker"
    if e in (None, "bookTicker") and "b" in d and "a" in d:
        return s + "@bookTicker"
    raise gh.Fail("an event of no stream used here: %.200r" % d)


class Tally:
    """The time of the last event of each stream one client got."""

    def __init__(self, name, bn, streams):
        self.name, self.bn, self.streams = name, bn, set(streams)
        self.last = {}
        self.other = []
        self.task = asyncio.ensure_future(self._run())

    async def _run(self):
        while True:
            stream, d, _ = await self.bn.events.get()
            try:
                s = stream or stream_of(d)
            except gh.Fail as e:
                self.other.append(str(e))
                continue
            if s not in self.streams:
                self.other.append("%s: an event of %s" % (self.name, s))
            self.last[s] = time.monotonic()

    def missing(self, since):
        return sorted(s for s in self.streams
                      if self.last.get(s, 0) <= since)


async def all_flowing(tallies, since, what, timeout=30):
    end = time.monotonic() + timeout
    while True:
        miss = {t.name: t.missing(since) for t in tallies}
        n = sum(len(v) for v in miss.values())
        if n == 0:
            return
        if time.monotonic() > end:
            raise gh.Fail("%s: %d streams silent, e.g. %r" % (
                what, n, {k: v[:3] for k, v in miss.items() if v}))
        await asyncio.sleep(0.2)


def check_limits(sim, limit, cap, what):
    st = sim.stats()
    check(st["msg_rate_max"] <= limit,
          "%s: bnsim saw %d messages in one second on a connection "
          "(limit %d)" % (what, st["msg_rate_max"], limit))
    check(st["closes_1008"] == 0 and st["cap_closes"] == 0
          and st["pong_closes"] == 0,
          "%s: bnsim closed %d connections with 1008, %d over the cap, %d "
          "for a missing pong" % (what, st["closes_1008"], st["cap_closes"],
                                  st["pong_closes"]))
    check(st["streams_max"] <= cap, "%s: %d streams on one connection"
          % (what, st["streams_max"]))
    check(all(n == 1 for n in st["subscribed"].values()),
          "%s: %d streams held upstream more than once, e.g. %r" % (
              what, sum(1 for n in st["subscribed"].values() if n > 1),
              [(k, n) for k, n in st["subscribed"].items() if n > 1][:5]))
    return st


def check_clients(clients, tallies, what):
    for c in clients:
        check(not c.closed.done(), "%s: client %s closed %r" % (
            what, c.url[:80], c.closed.result() if c.closed.done()
            else None))
        c.no_reply("%s: client %s" % (what, c.url[:80]))
    for t in tallies:
        check(not t.other, "%s: %s: %r" % (what, t.name, t.other[:3]))


async def restore(h, up, sim, fault, streams, tallies, limit, cap):
    prev = max([c["id"] for c in sim.stats()["conns"]], default=0)
    t0 = time.monotonic()
    if fault == "drop":
        check(sim.control("drop")["ok"], "drop")
    else:
        code, body = await asyncio.to_thread(gh.rotate_upstream, h, up)
        check(code == 202, "rotate %s: %d %s" % (up, code, body))
    await gh.bn_wait_restored(sim, prev, streams, "%s: %d streams held "
                              "again after %s" % (up, streams, fault), 90)
    took = time.monotonic() - t0
    check_limits(sim, limit, cap, "%s after %s" % (up, fault))
    await all_flowing(tallies, t0, "%s after %s" % (up, fault))
    flowing = time.monotonic() - t0
    print("%s: %s: %d streams subscribed again in %.1fs, all flowing in "
          "%.1fs" % (up, fault, streams, took, flowing))


async def spot(h, sim):
    syms = symbols(sim)[:SPOT_SYMS]
    check(len(syms) == SPOT_SYMS, "bnsim has %d symbols" % len(syms))
    streams = ["%s@%s" % (s, k) for s in syms for k in KINDS]
    rnd = random.Random(13)
    rnd.shuffle(streams)
    clients, tallies = [], []
    for i in range(6):
        part = streams[250 * i:250 * (i + 1)]
        c = await Bn.open(gh.bn_url(h, "spot", "/ws/%d" % i))
        r = await c.call("SUBSCRIBE", part, id=i + 1, timeout=30)
        check(r == {"result": None, "id": i + 1}, "subscribe %r" % r)
        clients.append(c)
        tallies.append(Tally("ws%d" % i, c, part))
    part = streams[1500:1700]
    c = await Bn.open(gh.bn_url(h, "spot", "/stream?streams=" +
                                "/".join(part[:80])))
    r = await c.call("SUBSCRIBE", part[80:], id=1, timeout=30)
    check(r == {"result": None, "id": 1}, "subscribe %r" % r)
    clients.append(c)
    tallies.append(Tally("url", c, part))
    part = streams[1700:2000]
    c = await Bn.open(gh.bn_url(h, "spot", "/ws/7"))
    for j in range(30):
        await c.send({"method": "SUBSCRIBE",
                      "params": part[10 * j:10 * j + 10], "id": 100 + j})
    acks = sorted([(await c.reply(60))[0]["id"] for _ in range(30)])
    check(acks == list(range(100, 130)), "30 SUBSCRIBEs at once: acks %r"
          % acks)
    clients.append(c)
    tallies.append(Tally("burst", c, part))
    part = streams[:300]
    c = await Bn.open(gh.bn_url(h, "spot", "/stream/ws/8"))
    r = await c.call("SUBSCRIBE", part, id=1, timeout=30)
    check(r == {"result": None, "id": 1}, "subscribe %r" % r)
    clients.append(c)
    tallies.append(Tally("shared", c, part))

    t0 = time.monotonic()
    await sim.wait_stats(lambda st: st["streams_open"] >= 2000,
                         "2000 streams upstream", 90)
    await all_flowing(tallies, 0, "spot: first subscribe")
    st = check_limits(sim, 5, 1024, "spot: first subscribe")
    check(st["streams_open"] == 2000 and st["connections_open"] >= 2,
          "spot: %d streams on %d connections" % (st["streams_open"],
                                                 st["connections_open"]))
    print("spot: 2000 streams on %d connections (most %d), flowing %.1fs "
          "after the last client's subscribe" % (st["connections_open"],
                                                 st["streams_max"],
                                                 time.monotonic() - t0))
    for fault in ("drop", "rotate"):
        await restore(h, "spot", sim, fault, 2000, tallies, 5, 1024)
    check_clients(clients, tallies, "spot")
    st = sim.stats()
    print("spot: msg_rate_max %d, control_messages %d, connections_total %d"
          % (st["msg_rate_max"], st["control_messages"],
             st["connections_total"]))
    for c in clients:
        await c.close()


async def usdm(h, sim):
    syms = symbols(sim)[:USDM_SYMS]
    check(len(syms) == USDM_SYMS, "bnsim has %d symbols" % len(syms))
    streams = [s + "@bookTicker" for s in syms]
    clients, tallies = [], []
    for i in range(3):
        part = streams[100 * i:100 * (i + 1)]
        c = await Bn.open(gh.bn_url(h, "usdm", "/fapi/public/ws/%d" % i))
        r = await c.call("SUBSCRIBE", part, id=i + 1, timeout=30)
        check(r == {"result": None, "id": i + 1}, "subscribe %r" % r)
        clients.append(c)
        tallies.append(Tally("usdm%d" % i, c, part))
    await sim.wait_stats(lambda st: st["streams_open"] >= 300,
                         "300 streams upstream", 60)
    await all_flowing(tallies, 0, "usdm: first subscribe")
    for fault in (None, "drop"):
        if fault:
            await restore(h, "usdm", sim, fault, 300, tallies, 10, 200)
        st = check_limits(sim, 10, 200, "usdm")
        # the connections holding streams (an idle one does not count)
        conns = [c for c in st["conns"] if c["streams"]]
        check(len(conns) == 2 and all(c["route"] == "public" for c in conns)
              and sum(c["streams"] for c in conns) == 300,
              "usdm: 300 /public streams on %r" % [
                  (c["route"], c["path"], c["streams"]) for c in st["conns"]])
    print("usdm: 300 streams on 2 /public connections %r, msg_rate_max %d"
          % ([c["streams"] for c in conns], st["msg_rate_max"]))
    check_clients(clients, tallies, "usdm")
    for c in clients:
        await c.close()


async def body(h, sims):
    gh.start_binance(h, [
        {"name": "spot", "sim": sims["spot"], "market": "spot"},
        {"name": "usdm", "sim": sims["usdm"], "market": "usdm"}])
    await asyncio.gather(spot(h, sims["spot"]), usdm(h, sims["usdm"]))


# bnsim pings every 2 s and drops a connection whose pong is 5 s late:
# pongs must not wait behind the paced subscribes of a restore
PINGS = ["--ping-interval", "2", "--pong-timeout", "5"]
gh.run_binance("test_binance_pacing",
               {"spot": ["--market", "spot", "--rate", "1", "--symbols",
                         str(SPOT_SYMS)] + PINGS,
                "usdm": ["--market", "usdm", "--rate", "1", "--symbols",
                         str(USDM_SYMS)] + PINGS}, body, timeout=400)
