"""Requests from edges (issue 17): the bounds of the answers the core
holds while its publish connection cannot take them
(modules/venue/xg_venue_deribit_edges.c, de_write() and de_flush()).

A real redis-server on a free loopback port (with a password), exsim,
and exgate whose upstream has `publish`; the test plays one edge with a
RESP client, as test_core_requests.py does. To get answers back while
the publisher is down, exsim is stalled (`stall on`: it reads nothing)
while the requests are run, the publish connection is taken away
(publisher_down(): the password changed, its connection killed; the
reader stays), then exsim is let go: it answers in the order it was
asked, so the core gets the answers in the edge's order.

- 1100 requests in flight, their answers back while the publisher is
  down: 1024 are held (answers_held), the other 76 are lost, counted
  (answers_lost) and logged each with its rid, which are exactly the
  last 76 sent; exgate does not crash; once the publisher is back the
  1024 are written on the edge's stream, in the order sent, each once,
  each with its own id, and none of the 76;
- an answer held longer than request_timeout (3 s) is dropped, counted
  and logged ("over request_timeout"), not before request_timeout, and
  never written once the publisher is back; the next request is served
  and answered;
- a reload that removes `publish` while 5 answers are held drops them
  with one warn line ("5 held answers to edges dropped (lost): publish
  removed by a reload"), counted in answers_lost (seen once a reload
  brings `publish` back), none is written, the edge is served again
  after; exgate exits 0 on SIGTERM with no sanitizer report (leaks
  included) in a build with --enable-sanitizers;
- /metrics follows /status throughout: after each step
  exgate_publish_requests_answers_held is answers_held and
  exgate_publish_requests_answers_total{result="written|lost"} are
  answers and answers_lost (each scrape through `promtool check metrics`
  when promtool is installed, as in test_admin_metrics.py).

Skips (exit 77) only when /usr/bin/redis-server is missing.
"""

import json
import os
import re
import signal
import time
import urllib.request

import gateway_harness as gh
from gateway_harness import check, free_port
from test_admin_metrics import LABEL, PROMTOOL, SAMPLE, Scrape
from test_core_requests import (PREFIX, PW, Edge, now_ms, publisher_down,
                                reading)
from test_publish_redis import Resp, run_with_redis, start_redis

HELD_MAX = 1024             # DR_EDGES_ANS_HELD
TIMEOUT_S = 3               # request_timeout
UPSTREAM = """    protocol deribit;
    auth client_credentials exsim env:XG_TEST_EXSIM_SECRET;
    reconnect fixed { delay 50ms; }
    request_timeout %ds;
    queue_limit 2000;
    publish redis://127.0.0.1:%%d prefix=%s password=env:XG_TEST_REDIS_PW;
""" % (TIMEOUT_S, PREFIX)


def reqs(h):
    return h.up()["publish"]["requests"]


class Samples:
    """One /metrics answer as samples, as Scrape has them, for a machine
    without promtool (Scrape checks every answer with it)."""

    def __init__(self, h):
        url = "http://127.0.0.1:%d/metrics" % h.admin_port
        with urllib.request.urlopen(url, timeout=5) as r:
            self.text = r.read().decode()
        self.samples = {}
        for line in self.text.splitlines():
            m = SAMPLE.match(line)
            if not line.startswith("#") and m is not None:
                labels = frozenset(LABEL.findall(m.group(2) or ""))
                self.samples[(m.group(1), labels)] = float(m.group(3))


def answers_metrics(h):
    """(written, lost, held) of upstream sim from a scrape of /metrics."""
    sc = Scrape(h) if PROMTOOL is not None else Samples(h)
    out = []
    for name, labels in (
            ("exgate_publish_requests_answers_total", {"result": "written"}),
            ("exgate_publish_requests_answers_total", {"result": "lost"}),
            ("exgate_publish_requests_answers_held", {})):
        key = (name, frozenset(dict(labels, upstream="sim").items()))
        check(key in sc.samples, "no sample %s%r in /metrics:\n%s"
              % (name, labels, sc.text))
        out.append(int(sc.samples[key]))
    return tuple(out)


def check_metrics(h, r, what):
    """/metrics has what R (a /status publish.requests taken when nothing
    changes) has: answers, answers_lost, answers_held."""
    m = answers_metrics(h)
    want = (r["answers"], r["answers_lost"], r["answers_held"])
    check(m == want, "%s: /metrics answers (written, lost, held) %r, "
          "/status %r" % (what, m, want))


def send_many(e, n):
    """N public/get_time requests of edge E, pipelined in one write (so
    that the core reads them in a few XREADs); their rids in order."""
    out, rids = [], []
    for _ in range(n):
        e.next_rid += 1
        rid = e.next_rid
        e.sent.add(rid)
        rids.append(rid)
        body = json.dumps({"jsonrpc": "2.0", "id": rid,
                           "method": "public/get_time", "params": {}})
        args = ["XADD", "%s:sim:req" % PREFIX, "MAXLEN", "~", 100000, "*",
                "edge", e.name, "rid", rid, "ts", now_ms(), "body", body]
        out.append(b"*%d\r\n" % len(args))
        for a in args:
            a = str(a).encode()
            out.append(b"$%d\r\n%s\r\n" % (len(a), a))
    e.r.s.sendall(b"".join(out))
    for _ in range(n):
        e.r._read()
    return rids


def answered(r, e):
    """The rids of E's answer stream, in stream order, each answer checked
    (its body's id is the entry's rid)."""
    out = []
    for _, fields in r.cmd("XRANGE", "%s:sim:ans:%s" % (PREFIX, e.name),
                           "-", "+"):
        f = dict(zip([k.decode() for k in fields[::2]], fields[1::2]))
        rid = int(f["rid"])
        body = json.loads(f["body"])
        check(body.get("id") == rid, "answer to %d has id %r"
              % (rid, body.get("id")))
        out.append(rid)
    return out


def held_while_down(h, ctl, e, n):
    """N requests run while exsim is stalled, the publisher taken away,
    exsim let go: their answers come back with no publish connection.
    Returns the rids, in order."""
    h.control("stall on")
    rids = send_many(e, n)
    h.wait_up(lambda u: u["publish"]["requests"]["in_flight"] == n, 10,
              "%d requests in flight (exsim stalled)" % n)
    publisher_down(h, ctl, (e.r, ctl))
    h.control("stall off")
    return rids


def reload_conf(h, edit):
    """Rewrites exgate.conf with EDIT(text), SIGHUP, waits for the reload
    to be done and ok."""
    path = os.path.join(h.tmp, "exgate.conf")
    with open(path) as f:
        text = f.read()
    new = edit(text)
    check(new != text, "the conf edit changed nothing")
    with open(path, "w") as f:
        f.write(new)
    n = h.status()["reloads"]["ok"]
    h.gate.send_signal(signal.SIGHUP)
    gh.uh.wait_for(lambda: h.status()["reloads"]["ok"] > n, 10,
                   what="the reload done (ok)")


async def body(h):
    os.environ["XG_TEST_EXSIM_SECRET"] = "exsim-secret"
    os.environ["XG_TEST_REDIS_PW"] = PW
    rport = free_port()
    start_redis(h, rport, PW)
    gh.start(h, UPSTREAM % rport, "client_auth off;\n", level="info",
             sim_args=("--no-rate-limit",))
    gh.wait_ready(h)
    h.wait_up(lambda u: reading(h), 10, "the request reader reading")
    e = Edge(rport, "edge-h")
    ctl = Resp(rport, PW)
    e.result(e.send("public/get_time", {}))     # its client made

    # ---- more than 1024 answers while the publisher is down: the first
    # 1024 held and written in order once it is back, the rest lost
    n = HELD_MAX + 76
    r0 = reqs(h)
    rids = held_while_down(h, ctl, e, n)
    h.wait_up(lambda u: u["publish"]["requests"]["in_flight"] == 0
              and u["publish"]["requests"]["answers_held"] == HELD_MAX, 10,
              "%d answers held" % HELD_MAX)
    r1 = reqs(h)
    check(r1["answers_lost"] - r0["answers_lost"] == n - HELD_MAX
          and r1["answers"] == r0["answers"],
          "%d answers while the publisher is down: before %r after %r"
          % (n, r0, r1))
    pat = (r"requests from edges: the answer to edge %s's request (\d+) is "
           r"lost \(the publish connection cannot take it and %d are held\)"
           % (e.name, HELD_MAX))
    lost = [int(re.search(pat, x).group(1)) for x in h.log_lines(pat)]
    check(lost == rids[HELD_MAX:], "logged lost %d answers %r..., want the "
          "last %d sent %r..." % (len(lost), lost[:3], n - HELD_MAX,
                                  rids[HELD_MAX:HELD_MAX + 3]))
    check_metrics(h, r1, "%d held, %d lost" % (HELD_MAX, n - HELD_MAX))
    ctl.cmd("CONFIG", "SET", "requirepass", PW)
    h.wait_up(lambda u: u["publish"]["requests"]["answers_held"] == 0, 10,
              "the held answers written")
    r2 = reqs(h)
    check(r2["answers"] - r1["answers"] == HELD_MAX
          and r2["answers_lost"] == r1["answers_lost"],
          "after the publisher came back: before %r after %r" % (r1, r2))
    check_metrics(h, r2, "the held answers written")
    got = answered(ctl, e)
    check(got[0] < rids[0], "the first request's answer is not on the "
          "stream")
    got = got[1:]
    check(got == rids[:HELD_MAX], "written %d answers, want the first %d "
          "sent in order (first differing at %r)"
          % (len(got), HELD_MAX, next((i for i, (x, y) in
                                       enumerate(zip(got, rids)) if x != y),
                                      None)))

    # ---- an answer held longer than request_timeout: dropped, logged,
    # never written late
    h.wait_up(lambda u: u["publish"]["connected"] and reading(h), 5,
              "the publisher back")
    r0 = reqs(h)
    old = held_while_down(h, ctl, e, 1)[0]
    h.wait_up(lambda u: u["publish"]["requests"]["answers_held"] == 1,
              5, "the answer held")
    t0 = time.monotonic()
    h.wait_up(lambda u: u["publish"]["requests"]["answers_held"] == 0,
              TIMEOUT_S + 3, "the held answer dropped")
    waited = time.monotonic() - t0
    check(waited > TIMEOUT_S - 0.5, "dropped after %.2f s, before "
          "request_timeout %d s" % (waited, TIMEOUT_S))
    r1 = reqs(h)
    check(r1["answers_lost"] == r0["answers_lost"] + 1
          and r1["answers"] == r0["answers"], "the stale held answer: before "
          "%r after %r" % (r0, r1))
    pat = (r"requests from edges: the answer to edge %s's request %d is "
           r"lost: held (\d+) ms for the publish connection, over "
           r"request_timeout" % (e.name, old))
    lines = h.log_lines(pat)
    check(len(lines) == 1 and int(re.search(pat, lines[0]).group(1))
          > TIMEOUT_S * 1000, "log of the stale held answer: %r" % lines)
    check_metrics(h, r1, "the stale held answer dropped")
    ctl.cmd("CONFIG", "SET", "requirepass", PW)
    h.wait_up(lambda u: u["publish"]["connected"] and reading(h), 5,
              "the publisher back")
    nxt = e.send("public/get_time", {})
    check(isinstance(e.result(nxt), int), "the next request after the drop")
    time.sleep(0.2)
    check(old not in answered(ctl, e), "the stale held answer was written")

    # ---- a reload that removes `publish` while answers are held: dropped
    # (counted; no leak, no crash), none written; served again after
    r0 = reqs(h)
    k = 5
    dropped = held_while_down(h, ctl, e, k)
    h.wait_up(lambda u: u["publish"]["requests"]["in_flight"] == 0
              and u["publish"]["requests"]["answers_held"] == k, 5,
              "%d answers held" % k)
    line = [x for x in open(os.path.join(h.tmp, "exgate.conf"))
            if x.lstrip().startswith("publish ")][0]
    check_metrics(h, reqs(h), "%d answers held" % k)
    reload_conf(h, lambda t: t.replace(line, ""))
    h.wait_up(lambda u: "publish" not in u, 5, "publish gone from /status")
    pat = (r"\[warn\] upstream sim#\d+: requests from edges: (\d+) held "
           r"answers? to edges dropped \(lost\): publish removed by a reload")
    gh.uh.wait_for(lambda: h.log_lines(pat), 5,
                   what="the log line of the held answers dropped")
    time.sleep(0.3)         # the held answers' next tries (every 50 ms)
    lines = h.log_lines(pat)
    check([int(re.search(pat, x).group(1)) for x in lines] == [k],
          "log of the %d held answers the reload dropped: %r" % (k, lines))
    gh.wait_ready(h)
    ctl.cmd("CONFIG", "SET", "requirepass", PW)
    reload_conf(h, lambda t: t.replace("    queue_limit 2000;\n",
                                       "    queue_limit 2000;\n" + line))
    h.wait_up(lambda u: "publish" in u and u["publish"]["connected"]
              and reading(h), 10, "publish back after the second reload")
    r1 = reqs(h)
    check(r1["answers_held"] == 0
          and r1["answers_lost"] == r0["answers_lost"] + k
          and r1["answers"] == r0["answers"], "the answers held at the "
          "reload: before %r after %r" % (r0, r1))
    check_metrics(h, r1, "the %d answers the reload dropped" % k)
    nxt = e.send("public/get_time", {})
    check(isinstance(e.result(nxt), int), "the next request after the "
          "reloads")
    time.sleep(0.2)
    late = set(dropped) & set(answered(ctl, e))
    check(not late, "answers held at the reload were written: %r"
          % sorted(late))
    r = reqs(h)
    check(r["in_flight"] == 0 and r["answers_held"] == 0, "%r" % r)
    ctl.close()
    e.close()


if __name__ == "__main__":
    run_with_redis("core_held", body)
