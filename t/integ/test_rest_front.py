"""The REST front (`listen ADDR http upstream=NAME;`) and the upstream's
REST client (`rest_url`, `rest_cache`) against the Binance simulator's
REST port (t/sim/bnsim), on an upstream of `protocol raw;`.

Checked:
- proxied public GETs (depth, klines, exchangeInfo on /api/v3, /fapi/v1,
  /dapi/v1, an upstream error) come back byte for byte as bnsim answers
  them directly, with Content-Type and X-MBX-USED-WEIGHT-1M; HEAD gets
  the headers only;
- exchangeInfo is cached for rest_cache: bnsim sees one fetch for several
  requests (sequential and concurrent, per path and query), a new one
  once rest_cache has passed;
- 429 and 418 from bnsim are passed on with Retry-After, then the gateway
  answers 429/418 itself until Retry-After has passed, without asking
  bnsim (which would have banned it), and serves again afterwards;
- signed requests (signature=, X-MBX-APIKEY) get 403 {"code":-1002} and
  never reach bnsim; unknown paths 404 and dot segments 400 (JSON);
  methods other than GET/HEAD 405;
- a request target over 8k gets 414, headers over 16k or 100 lines 431,
  each with a log line naming the client; 400k of headers, a 300k
  target and a 100k body are refused without harm; the gateway serves
  on;
- 200 requests from 20 threads at once all answered, over at most 8
  connections to bnsim;
- a reload that changes rest_url sends the next GETs to the new host;
- clients that leave before their answer, and a stop (SIGTERM) with
  answers in flight: exit 0, no sanitizer report;
  `exgate -t` refuses `listen ... http` on an upstream without rest_url
  at the listen line;
- /status ("rest" of the upstream, the listener's counters) and /metrics.
"""
import concurrent.futures
import http.client
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import upstream_harness as uh  # noqa: E402
from upstream_harness import Fail, check, free_port  # noqa: E402
from bnsim_util import Bnsim  # noqa: E402


def req(port, method, target, headers=None, timeout=15):
    """One request on a new connection: (status, lowercase headers, bytes)."""
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        c.request(method, target, headers=headers or {})
        r = c.getresponse()
        return r.status, {k.lower(): v for k, v in r.getheaders()}, r.read()
    finally:
        c.close()


def jbody(b):
    try:
        return json.loads(b.decode())
    except ValueError:
        raise Fail("not JSON: %r" % b[:200])


class Confs:
    def __init__(self, a, b, pa, pb, rest_a=None):
        self.a, self.b, self.pa, self.pb = a, b, pa, pb
        self.rest_a = rest_a or a.rest_port

    def text(self, admin_port):
        return ("error_log stderr debug;\n"
                "upstream a {\n    url ws://127.0.0.1:%d/ws;\n"
                "    protocol raw;\n    rest_url http://127.0.0.1:%d;\n"
                "    rest_cache 3s;\n}\n"
                "upstream b {\n    url ws://127.0.0.1:%d/ws;\n"
                "    protocol raw;\n    rest_url http://127.0.0.1:%d/;\n}\n"
                "listen 127.0.0.1:%d http upstream=a;\n"
                "listen 127.0.0.1:%d http upstream=b;\n"
                "admin 127.0.0.1:%d;\n"
                % (self.a.ws_port, self.rest_a, self.b.ws_port,
                   self.b.rest_port, self.pa, self.pb, admin_port))


def start(h, confs):
    h.admin_port = free_port()
    path = os.path.join(h.tmp, "exgate.conf")
    with open(path, "w") as f:
        f.write(confs.text(h.admin_port))
    logf = open(h.log_path, "w")
    h.gate = subprocess.Popen([uh.EXGATE, "-c", path], stdout=logf,
                              stderr=logf, stdin=subprocess.DEVNULL)
    logf.close()
    h.procs.append(h.gate)
    uh.wait_for(h.try_status, 10, what="exgate /status")


def rest_requests(sim):
    return sim.stats()["rest_requests"]


def same(gw, sim, target, norm=None, tries=3):
    """TARGET through the gateway (port GW) and from bnsim directly give
    the same status, body bytes (after NORM) and Content-Type."""
    for i in range(tries):
        s1, h1, b1 = req(gw, "GET", target)
        s2, h2, b2 = req(sim.rest_port, "GET", target)
        if norm:
            b1, b2 = norm(b1), norm(b2)
        if (s1, b1) == (s2, b2):
            break
        time.sleep(0.2)   # a kline closed in between: again
    check(s1 == s2 and b1 == b2, "%s: gateway %d %r\n direct %d %r"
          % (target, s1, b1[:300], s2, b2[:300]))
    check(h1.get("content-type") == h2.get("content-type"),
          "%s: content-type %r vs %r" % (target, h1, h2))
    check("x-mbx-used-weight-1m" in h1, "%s: no weight header: %r"
          % (target, h1))
    return s1, h1, b1


def no_server_time(b):
    return re.sub(rb'"serverTime":\d+', b'"serverTime":0', b)


def proxied(h, a, pa):
    same(pa, a, "/api/v3/depth?symbol=BTCUSDT&limit=5")
    same(pa, a, "/api/v3/depth?symbol=ETHUSDT&limit=100")
    same(pa, a, "/api/v3/klines?symbol=BTCUSDT&interval=1m&limit=5")
    same(pa, a, "/api/v3/ticker/24hr?symbol=BTCUSDT",
         lambda b: re.sub(rb'"(closeTime|openTime)":\d+', b'0', b))
    for pre in ("/api/v3", "/fapi/v1", "/dapi/v1"):
        same(pa, a, pre + "/exchangeInfo", no_server_time)
    s, _, b = same(pa, a, "/api/v3/depth")   # missing symbol: bnsim's 400
    check(s == 400 and jbody(b)["code"] == -1102, "upstream 400: %r" % b)
    s, _, b = same(pa, a, "/api/v3/nosuchthing")
    check(s == 404, "upstream 404 passed: %d" % s)
    # HEAD: the headers of the GET, no body
    s, hh, b = req(pa, "HEAD", "/api/v3/depth?symbol=BTCUSDT&limit=5")
    s2, _, b2 = req(pa, "GET", "/api/v3/depth?symbol=BTCUSDT&limit=5")
    check(s == 200 and b == b"" and int(hh["content-length"]) == len(b2),
          "HEAD: %d %r %r" % (s, hh, b))
    # an error of the exchange is passed on as it is
    a.control("rest-fail 503 1")
    s, hh, b = req(pa, "GET", "/api/v3/ping")
    check(s == 503 and jbody(b)["code"] == -1000, "rest-fail: %d %r"
          % (s, b))
    s, _, b = req(pa, "GET", "/api/v3/ping")
    check(s == 200 and b == b"{}", "ping after rest-fail: %d %r" % (s, b))


def cache(h, a, pa):
    # sequential: one fetch for five within rest_cache (3s)
    n0 = rest_requests(a)
    bodies = set()
    for i in range(5):
        s, _, b = req(pa, "GET", "/fapi/v1/exchangeInfo")
        check(s == 200, "fapi exchangeInfo %d" % s)
        bodies.add(b)
    check(rest_requests(a) - n0 == 1, "5 cached exchangeInfo made %d "
          "fetches" % (rest_requests(a) - n0))
    check(len(bodies) == 1, "cached answers differ")
    # another query is another entry
    s, _, b = req(pa, "GET", "/api/v3/exchangeInfo?symbol=BTCUSDT")
    s, _, b = req(pa, "GET", "/api/v3/exchangeInfo?symbol=BTCUSDT")
    check(rest_requests(a) - n0 == 2, "per query: %d fetches"
          % (rest_requests(a) - n0))
    # concurrent, while bnsim is slow: one fetch shared
    a.control("rest-delay 400")
    n1 = rest_requests(a)
    with concurrent.futures.ThreadPoolExecutor(10) as ex:
        res = list(ex.map(lambda i: req(pa, "GET", "/dapi/v1/exchangeInfo"),
                          range(10)))
    a.control("rest-delay 0")
    check(all(r[0] == 200 for r in res) and len({r[2] for r in res}) == 1,
          "concurrent exchangeInfo: %r" % [r[0] for r in res])
    check(rest_requests(a) - n1 == 1, "10 concurrent exchangeInfo made %d "
          "fetches" % (rest_requests(a) - n1))
    # rest_cache passed: fetched again
    time.sleep(3.2)
    n2 = rest_requests(a)
    req(pa, "GET", "/fapi/v1/exchangeInfo")
    req(pa, "GET", "/fapi/v1/exchangeInfo")
    check(rest_requests(a) - n2 == 1, "after rest_cache: %d fetches"
          % (rest_requests(a) - n2))
    li = [x for x in h.status()["listeners"] if x["upstream"] == "a"][0]
    check(li["cache_hits"] == 4 + 1 + 1 and li["cache_fetches"] == 4
          and li["cache_shared"] == 9, "listener %r" % li)


def backoff(h, b, pb):
    """bnsim b: weight limit 30 per 3s window; a request during the
    429's Retry-After is banned (418) for 3s."""
    target = "/api/v3/depth?symbol=BTCUSDT&limit=5"     # weight 5
    for i in range(10):
        s, hh, body = req(pb, "GET", target)
        if s == 429:
            break
        check(s == 200, "before the limit: %d %r" % (s, body))
    check(s == 429 and "retry-after" in hh, "no 429 passed on: %d %r"
          % (s, hh))
    check(jbody(body)["code"] == -1003 and b"exgate" not in body,
          "bnsim's own 429 body: %r" % body)
    st = b.stats()
    n, r418 = st["rest_requests"], st["rest_418"]
    # now the gateway answers itself, without asking bnsim
    for i in range(5):
        s, hh, body = req(pb, "GET", target)
        check(s == 429 and int(hh["retry-after"]) >= 1
              and b"exgate" in body, "backing off: %d %r %r" % (s, hh, body))
    st = b.stats()
    check(st["rest_requests"] == n and st["rest_418"] == r418 == 0,
          "the gateway asked bnsim while backing off: %r" % st)
    up = h.up("b")["rest"]
    check(up["backoffs"] == 1 and up["backoff_status"] == 429
          and up["backoff_until"], "status rest %r" % up)
    # after Retry-After: served again
    time.sleep(int(hh["retry-after"]) + 0.2)
    s, _, body = req(pb, "GET", target)
    check(s == 200, "after the back-off: %d %r" % (s, body))

    # a ban (418): bnsim is pushed into it directly, the gateway meets it
    for i in range(10):
        s, _, _ = req(b.rest_port, "GET", target)
        if s == 429:
            break
    s, _, _ = req(b.rest_port, "GET", target)
    check(s == 418, "bnsim did not ban: %d" % s)
    s, hh, body = req(pb, "GET", target)
    check(s == 418 and "retry-after" in hh and b"exgate" not in body,
          "418 passed on: %d %r" % (s, body))
    r418 = b.stats()["rest_418"]
    s, hh, body = req(pb, "GET", target)
    check(s == 418 and b"exgate" in body and int(hh["retry-after"]) >= 1,
          "418 from the gateway: %d %r" % (s, body))
    check(b.stats()["rest_418"] == r418, "asked bnsim during its ban")
    time.sleep(int(hh["retry-after"]) + 0.2)
    for i in range(20):     # the ban and the weight window both passed
        s, _, body = req(pb, "GET", "/api/v3/ping")
        if s == 200:
            break
        time.sleep(0.5)
    check(s == 200, "after the ban: %d %r" % (s, body))
    li = [x for x in h.status()["listeners"] if x["upstream"] == "b"][0]
    check(li["backoff_answers"] >= 6, "listener %r" % li)
    m = urllib.request.urlopen("http://127.0.0.1:%d/metrics" % h.admin_port,
                               timeout=5).read().decode()
    check(re.search(r'exgate_rest_backoff_total\{upstream="b"\} [2-9]', m),
          "metrics: %s" % "\n".join(l for l in m.splitlines()
                                    if "rest" in l))
    check(re.search(r'exgate_rest_requests_total\{upstream="a",class="2xx"\}'
                    r' [1-9]', m), "metrics 2xx")


def refused(h, a, pa):
    n = rest_requests(a)
    for target, hdrs in (
            ("/api/v3/account?timestamp=1&signature=ab", {}),
            ("/api/v3/order?symbol=BTCUSDT&signature", {}),
            ("/fapi/v1/depth?symbol=BTCUSDT", {"X-MBX-APIKEY": "k"})):
        s, _, b = req(pa, "GET", target, hdrs)
        j = jbody(b)
        check(s == 403 and j["code"] == -1002 and "directly" in j["msg"],
              "signed %s: %d %r" % (target, s, b))
    for target in ("/", "/foo", "/api/v3", "/api/v3/", "/api/v2/depth",
                   "/sapi/v1/capital/config/getall"):
        s, _, b = req(pa, "GET", target)
        check(s == 404 and jbody(b)["code"] == -1000,
              "404 %s: %d %r" % (target, s, b))
    for target in ("/api/v3/../x", "/api/v3/%2e%2e/x", "/api/v3/a/./b"):
        s, _, b = req(pa, "GET", target)
        check(s == 400 and "code" in jbody(b), "dots %s: %d %r"
              % (target, s, b))
    for m in ("POST", "PUT", "DELETE", "OPTIONS", "PATCH"):
        s, hh, b = req(pa, m, "/api/v3/order")
        check(s == 405 and hh.get("allow") == "GET, HEAD"
              and (m == "HEAD" or "code" in jbody(b)),
              "%s: %d %r" % (m, s, hh))
    check(rest_requests(a) == n, "refused requests reached bnsim")
    check(h.log_lines(r"\[info\] rest front 127\.0\.0\.1:\d+: client "
                      r"127\.0\.0\.1:\d+: signed request"), "no log line")


def raw_exchange(port, data, timeout=10):
    """Sends DATA on a new connection; returns what comes back (b"" when
    the gateway closed without an answer)."""
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    out = b""
    try:
        s.sendall(data)
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            out += chunk
            if b"\r\n\r\n" in out and b"Content-Length" in out:
                head, _, rest = out.partition(b"\r\n\r\n")
                m = re.search(rb"Content-Length: (\d+)", head)
                if m and len(rest) >= int(m.group(1)):
                    break
    except (ConnectionResetError, BrokenPipeError):
        pass
    finally:
        s.close()
    return out


def bounds(h, a, pa):
    n = rest_requests(a)
    s, _, b = req(pa, "GET", "/api/v3/depth?symbol=BTCUSDT&x=" + "a" * 9000)
    check(s == 414 and "code" in jbody(b), "long target: %d %r" % (s, b))
    s, _, b = req(pa, "GET", "/api/v3/ping", {"X-Big": "a" * 17000})
    check(s == 431 and "code" in jbody(b), "big header: %d %r" % (s, b))
    s, _, b = req(pa, "GET", "/api/v3/ping",
                  {"X-H%d" % i: "v" for i in range(120)})
    check(s == 431, "120 header lines: %d %r" % (s, b))
    check(rest_requests(a) == n, "over-bound requests reached bnsim")
    check(h.log_lines(r"rest front .*: client 127\.0\.0\.1:\d+: request "
                      r"target of 9\d{3} bytes"), "no 414 log line")
    check(h.log_lines(r"rest front .*: client 127\.0\.0\.1:\d+: \d+ headers "
                      r"of 17\d{3} bytes"), "no 431 log line")
    # beyond what libevent reads at all: refused, the gateway unharmed
    out = raw_exchange(pa, b"GET /api/v3/ping HTTP/1.1\r\nHost: x\r\nX-A: "
                       + b"a" * 400000 + b"\r\n\r\n")
    check(out == b"" or re.match(rb"HTTP/1\.1 4\d\d ", out),
          "400k of headers: %r" % out[:100])
    out = raw_exchange(pa, b"GET /api/v3/ping?" + b"q" * 300000
                       + b" HTTP/1.1\r\nHost: x\r\n\r\n")
    check(out == b"" or re.match(rb"HTTP/1\.1 4\d\d ", out),
          "300k target: %r" % out[:100])
    # a request body: bounded at 64k (libevent's 413), none is ever used
    out = raw_exchange(pa, b"POST /api/v3/order HTTP/1.1\r\nHost: x\r\n"
                       b"Content-Length: 100000\r\n\r\n" + b"b" * 100000)
    check(out == b"" or re.match(rb"HTTP/1\.1 413 ", out),
          "100k body: %r" % out[:100])
    out = raw_exchange(pa, b"GET /api/v3/ping HTTP/1.1\r\nHost: x\r\n"
                       b"Content-Length: 5\r\n\r\nhello")
    check(re.match(rb"HTTP/1\.1 200 ", out), "GET with a body: %r"
          % out[:100])
    out = raw_exchange(pa, b"GARBAGE\r\n\r\n")
    check(out == b"" or re.match(rb"HTTP/1\.1 4\d\d ", out),
          "garbage: %r" % out[:100])
    s, _, b = req(pa, "GET", "/api/v3/ping")
    check(s == 200, "after the oversized requests: %d" % s)


def many(h, a, pa):
    targets = ["/api/v3/depth?symbol=BTCUSDT&limit=5", "/api/v3/ping",
               "/api/v3/klines?symbol=ETHUSDT&interval=1m&limit=3",
               "/api/v3/exchangeInfo"]
    with concurrent.futures.ThreadPoolExecutor(20) as ex:
        res = list(ex.map(lambda i: req(pa, "GET", targets[i % 4]),
                          range(200)))
    bad = [r[0] for r in res if r[0] != 200]
    check(not bad, "concurrent: %d not 200: %r" % (len(bad), bad[:10]))
    rest = h.up("a")["rest"]
    check(rest["connections_made"] <= 8 + 2, "rest %r" % rest)
    check(rest["in_flight"] == 0 and rest["waiting"] == 0, "rest %r" % rest)


def gone(h, a, pa):
    """Clients that leave before their answer, and a stop with answers
    in flight: nothing breaks (a sanitizer build reports nothing)."""
    a.control("rest-delay 300")
    socks = []
    for i in range(20):
        s = socket.create_connection(("127.0.0.1", pa), timeout=5)
        s.sendall(b"GET /api/v3/depth?symbol=BTCUSDT&limit=%d HTTP/1.1\r\n"
                  b"Host: x\r\n\r\n" % (5 + i))
        socks.append(s)
    time.sleep(0.05)
    for s in socks:
        s.close()
    s, _, _ = req(pa, "GET", "/api/v3/ping")
    check(s == 200, "after clients left: %d" % s)
    # their GETs run to the end (20 of 300 ms over 8 connections), then
    # nothing is left behind
    try:
        uh.wait_for(lambda: (lambda r: r["in_flight"] == 0
                             and r["waiting"] == 0)(h.up("a")["rest"]),
                    15, what="the left clients' GETs done")
    except Fail:
        raise Fail("rest %r" % h.up("a")["rest"])
    a.control("rest-delay 0")
    rest = h.up("a")["rest"]
    check(rest["timeouts"] == 0 and rest["requests"]["error"] == 0,
          "rest %r" % rest)


def stop_in_flight(h, a, pa):
    a.control("rest-delay 2000")
    socks = []
    for i in range(10):
        s = socket.create_connection(("127.0.0.1", pa), timeout=5)
        s.sendall(b"GET /api/v3/ping HTTP/1.1\r\nHost: x\r\n\r\n")
        socks.append(s)
    uh.wait_for(lambda: h.up("a")["rest"]["in_flight"] > 0, 5,
                what="GETs in flight")
    h.finish()      # SIGTERM: exit 0, no sanitizer report
    for s in socks:
        s.close()
    a.control("rest-delay 0")


def reload_url(h, confs, c):
    with open(os.path.join(h.tmp, "exgate.conf"), "w") as f:
        confs.rest_a = c.rest_port
        f.write(confs.text(h.admin_port))
    before = h.status()["reloads"]
    h.gate.send_signal(signal.SIGHUP)
    uh.wait_for(lambda: h.status()["reloads"]["ok"] > before["ok"], 10,
                what="reload ok")
    n_a, n_c = rest_requests(confs.a), rest_requests(c)
    s, _, _ = req(confs.pa, "GET", "/api/v3/ping")
    check(s == 200, "after reload: %d" % s)
    check(rest_requests(c) == n_c + 1 and rest_requests(confs.a) == n_a,
          "the reloaded rest_url was not used")
    check(h.up("a")["rest"]["url"] == "http://127.0.0.1:%d" % c.rest_port,
          "status url %r" % h.up("a")["rest"])


def conf_check(h):
    path = os.path.join(h.tmp, "bad.conf")
    with open(path, "w") as f:
        f.write("upstream x {\n    url ws://127.0.0.1:1/ws;\n}\n"
                "listen 127.0.0.1:%d http upstream=x;\n" % free_port())
    p = subprocess.run([uh.EXGATE, "-t", "-c", path], capture_output=True,
                       text=True)
    check(p.returncode != 0 and re.search(r"bad\.conf:4: .*has no "
                                          r"\"rest_url\"", p.stderr),
          "exgate -t: %d %r" % (p.returncode, p.stderr))


def body(h):
    conf_check(h)
    with Bnsim("--rate", "0") as a, \
            Bnsim("--rate", "0", "--weight-limit", "30", "--weight-window",
                  "3", "--ban-seconds", "3") as b, \
            Bnsim("--rate", "0") as c:
        confs = Confs(a, b, free_port(), free_port())
        start(h, confs)
        cache(h, a, confs.pa)
        proxied(h, a, confs.pa)
        refused(h, a, confs.pa)
        bounds(h, a, confs.pa)
        many(h, a, confs.pa)
        backoff(h, b, confs.pb)
        reload_url(h, confs, c)
        check(h.log_lines(r"\[debug\] rest front 127\.0\.0\.1:\d+: client "
                          r"127\.0\.0\.1:\d+: GET /api/v3/depth"),
              "no debug line per request")
        gone(h, c, confs.pa)
        stop_in_flight(h, c, confs.pa)


if __name__ == "__main__":
    uh.run("test_rest_front", body)
