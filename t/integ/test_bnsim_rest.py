"""bnsim: the REST side. Each endpoint answers Binance's shape for its
market (/api/v3 spot, /fapi/v1 USDⓈ-M; exchangeInfo on all three
prefixes) and charges Binance's weight, shown in X-MBX-USED-WEIGHT-1M;
bad parameters get Binance's codes (-1102, -1121, -1100, -1120); over the
weight limit the answer is 429 with Retry-After, a request that ignores
it gets 418 (ban), and after the ban and the window all is well again;
keep-alive works; rest-fail and rest-delay do what they say.
"""
import http.client
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bnsim_util import Bnsim, check, main  # noqa: E402


def weighted(sim, path, w, **params):
    """GET that must answer 200 and charge exactly W."""
    before = sim.stats()["rest_weight_total"]
    status, h, body = sim.get(path, **params)
    check(status == 200, "%s %r: %d %r" % (path, params, status, body))
    after = sim.stats()["rest_weight_total"]
    check(after - before == w, "%s %r weight %d, want %d"
          % (path, params, after - before, w))
    used = int(h["x-mbx-used-weight-1m"])
    check(used >= w, "header %r" % h)
    return body


def spot(sim):
    for limit, w in ((5, 5), (100, 5), (101, 25), (500, 25), (1000, 50),
                     (5000, 250)):
        d = weighted(sim, "/api/v3/depth", w, symbol="BTCUSDT", limit=limit)
        check(set(d) == {"lastUpdateId", "bids", "asks"}, "depth keys %r"
              % list(d))
        check(len(d["bids"]) == min(limit, len(d["bids"])) <= limit,
              "depth rows")
        bids = [float(p) for p, _ in d["bids"]]
        asks = [float(p) for p, _ in d["asks"]]
        check(bids == sorted(bids, reverse=True) and asks == sorted(asks)
              and bids[0] < asks[0], "depth order")
    weighted(sim, "/api/v3/depth", 250, symbol="BTCUSDT", limit=9000)
    d = weighted(sim, "/api/v3/depth", 5, symbol="BTCUSDT")
    check(len(d["bids"]) <= 100, "default limit 100")
    info = weighted(sim, "/api/v3/exchangeInfo", 20)
    names = [s["symbol"] for s in info["symbols"]]
    check("BTCUSDT" in names and info["rateLimits"][0]["limit"] == 6000,
          "exchangeInfo %r" % names)
    f = {x["filterType"]: x for x in info["symbols"][0]["filters"]}
    check({"PRICE_FILTER", "LOT_SIZE"} <= set(f), "filters %r" % f)
    for pre in ("/fapi/v1", "/dapi/v1"):
        check(sim.json(pre + "/exchangeInfo")["symbols"] == [],
              "%s exchangeInfo on spot" % pre)
    t = weighted(sim, "/api/v3/trades", 25, symbol="BTCUSDT", limit=10)
    check(len(t) == 10 and {"id", "price", "qty", "quoteQty", "time",
                            "isBuyerMaker", "isBestMatch"} == set(t[0]),
          "trades %r" % t[:1])
    h = weighted(sim, "/api/v3/historicalTrades", 25, symbol="BTCUSDT",
                 fromId=t[0]["id"], limit=3)
    check([x["id"] for x in h] == [t[0]["id"] + i for i in range(3)],
          "historicalTrades fromId inclusive")
    a = weighted(sim, "/api/v3/aggTrades", 4, symbol="BTCUSDT", limit=5)
    check(len(a) == 5 and set(a[0]) == {"a", "p", "q", "f", "l", "T", "m",
                                         "M"}, "aggTrades %r" % a[:1])
    a2 = weighted(sim, "/api/v3/aggTrades", 4, symbol="BTCUSDT",
                  fromId=a[0]["a"], limit=2)
    check(a2 == a[:2], "aggTrades fromId")
    a3 = weighted(sim, "/api/v3/aggTrades", 4, symbol="BTCUSDT",
                  startTime=a[0]["T"], limit=1)
    check(a3[0]["T"] >= a[0]["T"], "aggTrades startTime")
    k = weighted(sim, "/api/v3/klines", 2, symbol="BTCUSDT", interval="1m",
                 limit=5)
    check(1 <= len(k) <= 5 and len(k[0]) == 12 and k[-1][6] == k[-1][0]
          + 59999, "klines %r" % k[-1:])
    k = sim.json("/api/v3/klines", symbol="BTCUSDT", interval="1h")
    check(len(k) >= 1, "klines 1h")
    tk = weighted(sim, "/api/v3/ticker/24hr", 2, symbol="BTCUSDT")
    check(tk["symbol"] == "BTCUSDT" and "bidPrice" in tk and tk["count"] > 0,
          "ticker %r" % tk)
    all_ = weighted(sim, "/api/v3/ticker/24hr", 80)
    check(len(all_) == 8, "ticker all %d" % len(all_))
    weighted(sim, "/api/v3/ping", 1)
    check(abs(sim.json("/api/v3/time")["serverTime"] - time.time() * 1000)
          < 5000, "time")

    for path, params, status, code in (
            ("/api/v3/depth", {}, 400, -1102),
            ("/api/v3/depth", {"symbol": "NOPEUSDT"}, 400, -1121),
            ("/api/v3/depth", {"symbol": "btcusdt"}, 400, -1121),
            ("/api/v3/depth", {"symbol": "BTCUSDT", "limit": "x"}, 400,
             -1100),
            ("/api/v3/depth", {"symbol": "BTCUSDT", "limit": "0"}, 400,
             -1100),
            ("/api/v3/klines", {"symbol": "BTCUSDT"}, 400, -1102),
            ("/api/v3/klines", {"symbol": "BTCUSDT", "interval": "7m"}, 400,
             -1120),
            ("/api/v3/historicalTrades", {"symbol": "BTCUSDT",
                                          "fromId": "1e5"}, 400, -1100),
            ("/api/v3/nothing", {}, 404, None),
            ("/fapi/v1/depth", {"symbol": "BTCUSDT"}, 404, None),
            ("/", {}, 404, None)):
        st, _, body = sim.get(path, **params)
        check(st == status and (code is None or body["code"] == code),
              "%s %r: %d %r" % (path, params, st, body))
    st, h, _ = sim.request("POST", "/api/v3/depth?symbol=BTCUSDT")
    check(st == 405 and h.get("allow") == "GET", "POST %d" % st)

    # keep-alive: several requests on one connection
    c = http.client.HTTPConnection("127.0.0.1", sim.rest_port, timeout=5)
    for _ in range(3):
        c.request("GET", "/api/v3/ping")
        r = c.getresponse()
        check(r.status == 200 and r.read() == b"{}", "keep-alive")
    c.close()


def usdm(sim):
    for limit, w in ((5, 2), (50, 2), (100, 5), (500, 10), (1000, 20)):
        d = weighted(sim, "/fapi/v1/depth", w, symbol="ETHUSDT", limit=limit)
        check(set(d) == {"lastUpdateId", "E", "T", "bids", "asks"},
              "usdm depth keys %r" % list(d))
    weighted(sim, "/fapi/v1/depth", 10, symbol="ETHUSDT")
    st, _, body = sim.get("/fapi/v1/depth", symbol="ETHUSDT", limit=7)
    check(st == 400 and body["code"] == -1100, "limit 7: %r" % body)
    info = weighted(sim, "/fapi/v1/exchangeInfo", 1)
    s0 = info["symbols"][0]
    check(s0["contractType"] == "PERPETUAL" and "pricePrecision" in s0
          and info["rateLimits"][0]["limit"] == 2400, "usdm info %r" % s0)
    check(sim.json("/api/v3/exchangeInfo")["symbols"] == [], "spot info")
    t = weighted(sim, "/fapi/v1/trades", 5, symbol="ETHUSDT", limit=3)
    check(set(t[0]) == {"id", "price", "qty", "quoteQty", "time",
                        "isBuyerMaker"}, "usdm trades %r" % t[0])
    weighted(sim, "/fapi/v1/historicalTrades", 20, symbol="ETHUSDT",
             fromId=t[0]["id"])
    a = weighted(sim, "/fapi/v1/aggTrades", 20, symbol="ETHUSDT", limit=2)
    check("M" not in a[0], "usdm aggTrades %r" % a[0])
    for limit, w in ((99, 1), (100, 2), (500, 5), (1500, 10)):
        weighted(sim, "/fapi/v1/klines", w, symbol="ETHUSDT", interval="1m",
                 limit=limit)
    tk = weighted(sim, "/fapi/v1/ticker/24hr", 1, symbol="ETHUSDT")
    check("bidPrice" not in tk and tk["symbol"] == "ETHUSDT", "usdm ticker")
    weighted(sim, "/fapi/v1/ticker/24hr", 40)
    p = weighted(sim, "/fapi/v1/premiumIndex", 1, symbol="ETHUSDT")
    check(p["symbol"] == "ETHUSDT" and float(p["markPrice"]) > 0, "premium")
    st, _, _ = sim.get("/api/v3/depth", symbol="ETHUSDT")
    check(st == 404, "spot path on usdm: %d" % st)


def limits(sim):
    # limit 120 per 3 s window: 50 + 50 fit, the next 50 does not
    deadline = time.time() + 10
    while time.time() % 3 > 1.5 and time.time() < deadline:
        time.sleep(0.05)          # start early in a window
    for _ in range(2):
        st, h, _ = sim.get("/api/v3/depth", symbol="BTCUSDT", limit=1000)
        check(st == 200, "under the limit: %d" % st)
    st, h, body = sim.get("/api/v3/depth", symbol="BTCUSDT", limit=1000)
    check(st == 429 and body["code"] == -1003 and int(h["retry-after"]) >= 1,
          "over the limit: %d %r %r" % (st, h, body))
    check(int(h["x-mbx-used-weight-1m"]) == 100, "used weight %r" % h)
    # not backing off: 418 with the ban as Retry-After
    st, h, body = sim.get("/api/v3/ping")
    check(st == 418 and body["code"] == -1003 and "banned" in body["msg"]
          and int(h["retry-after"]) == 2, "ban: %d %r %r" % (st, h, body))
    st, _, _ = sim.get("/api/v3/ping")
    check(st == 418, "still banned: %d" % st)
    time.sleep(2.1)
    t0 = time.time()
    while True:
        st, _, _ = sim.get("/api/v3/ping")
        if st == 200:
            break
        check(st in (418, 429) and time.time() - t0 < 4, "after ban: %d" % st)
        time.sleep(0.2)
    s = sim.stats()
    check(s["rest_429"] >= 1 and s["rest_418"] >= 2
          and s["rest_weight_max"] <= 120, "stats %r" % s)


def faults(sim):
    """rest-fail STATUS COUNT answers the next COUNT requests with STATUS;
    rest-delay MS holds every answer MS ms."""
    for bad in ("rest-fail", "rest-fail 200", "rest-fail 599",
                "rest-fail 500 x", "rest-delay", "rest-delay -1",
                "rest-delay 600001"):
        r = sim.control(bad)
        check(r.get("ok") is False, "%r -> %r" % (bad, r))
    check(sim.control("rest-fail 503 2")["rest_fail"] == 2, "rest-fail")
    for _ in range(2):
        st, _, body = sim.get("/api/v3/depth", symbol="BTCUSDT")
        check(st == 503 and body["code"] == -1000, "failed: %d %r"
              % (st, body))
    st, _, _ = sim.get("/api/v3/depth", symbol="BTCUSDT")
    check(st == 200 and sim.stats()["rest_failed"] == 2, "after rest-fail")
    check(sim.control("rest-delay 400")["rest_delay_ms"] == 400, "delay")
    t0 = time.monotonic()
    sim.json("/api/v3/ping")
    el = time.monotonic() - t0
    check(0.35 <= el < 3, "rest-delay 400: %.2fs" % el)
    sim.control("rest-delay 0")
    t0 = time.monotonic()
    sim.json("/api/v3/ping")
    check(time.monotonic() - t0 < 0.35, "rest-delay 0")


def test():
    with Bnsim("--market", "spot", "--rate", "50") as sim:
        time.sleep(0.5)
        spot(sim)
        faults(sim)
    with Bnsim("--market", "usdm", "--rate", "50") as sim:
        time.sleep(0.5)
        usdm(sim)
    with Bnsim("--market", "spot", "--weight-limit", "120",
               "--weight-window", "3", "--ban-seconds", "2") as sim:
        limits(sim)


if __name__ == "__main__":
    main(test)
