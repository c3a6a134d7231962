"""GET /metrics on the admin listener, scraped from a live exgate + exsim:

- every scrape passes `promtool check metrics` (Debian package
  `prometheus`); without promtool the test is SKIPPED (exit 77) with a
  message, never passed;
- the samples follow what the test does to exsim: a client subscribes ->
  channels and clients gauges, the upstream's socket reads, the fan-out
  counters (batches and sends, each in one bucket of messages); a forwarded request -> requests answered;
  `gap` -> book gaps and bridges; `stall` + a request -> timed_out; a
  request in flight + `drop` -> outcome_unknown, a disconnect (lost),
  connects, restores and the restore histogram, the orders reconcile
  (backfills), the ticker's unrepaired gap; `refuse on` + `drop` -> the
  state gauges leave ready, connect failures (http), the breaker opens,
  a request queued, one over queue_limit rejected; `refuse off` -> ready;
  POST /upstreams/sim/rotate -> a rotation done (none failed), the new
  connection's id, the upstream up throughout;
- no configured secret (the upstream's client secret, the bots' client
  secret) appears in any scrape.
"""

import os
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.request

import gateway_harness as gh
import upstream_harness as uh
from gateway_harness import check, WSClient

PROMTOOL = shutil.which("promtool")

BOOK = "book.BTC-PERPETUAL.100ms"
TICKER = "ticker.BTC-PERPETUAL.100ms"
ORDERS = "user.orders.BTC-PERPETUAL.raw"
EXSIM_SECRET = "exsim-secret"
BOT_SECRET = "bot-secret-5f0c9e"

UPSTREAM = """    protocol deribit;
    auth client_credentials exsim env:XG_TEST_EXSIM_SECRET;
    reconnect fixed { delay 200ms; }
    breaker { failures 3; window 10s; open 1s; }
    request_timeout 500ms;
    queue_limit 1;
    queue_timeout 10s;
"""

SAMPLE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$')
LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')

scrapes = []


class Scrape:
    """One /metrics answer, checked by promtool, as samples."""

    def __init__(self, h):
        url = "http://127.0.0.1:%d/metrics" % h.admin_port
        with urllib.request.urlopen(url, timeout=5) as r:
            self.ctype = r.headers.get("Content-Type")
            self.text = r.read().decode()
        scrapes.append(self.text)
        check(self.ctype == "text/plain; version=0.0.4; charset=utf-8",
              "Content-Type %r" % self.ctype)
        p = subprocess.run([PROMTOOL, "check", "metrics"], input=self.text,
                           capture_output=True, text=True, timeout=30)
        check(p.returncode == 0, "promtool check metrics: rc %d\n%s%s"
              % (p.returncode, p.stdout, p.stderr))
        self.samples = {}
        for line in self.text.splitlines():
            if line.startswith("#") or not line:
                continue
            m = SAMPLE.match(line)
            check(m is not None, "not a sample line: %r" % line)
            labels = frozenset(LABEL.findall(m.group(2) or ""))
            self.samples[(m.group(1), labels)] = float(m.group(3))

    def get(self, name, **labels):
        key = (name, frozenset(labels.items()))
        check(key in self.samples, "no sample %s%r in\n%s"
              % (name, labels, self.text))
        return self.samples[key]

    def up(self, name, **labels):
        return self.get(name, upstream="sim", **labels)


def wait_scrape(h, pred, what, timeout=10):
    """Scrapes until PRED(scrape) holds; returns that scrape."""
    last = [None]

    def probe():
        last[0] = Scrape(h)
        return last[0] if pred(last[0]) else None
    try:
        return uh.wait_for(probe, timeout, step=0.1, what=what)
    except uh.Fail as e:
        raise uh.Fail("%s; last scrape:\n%s"
                      % (e, last[0].text if last[0] else "none"))


async def body(h):
    os.environ["XG_TEST_EXSIM_SECRET"] = EXSIM_SECRET
    os.environ["XG_TEST_BOT_SECRET"] = BOT_SECRET
    gh.start(h, UPSTREAM, "client_credentials bot env:XG_TEST_BOT_SECRET;\n",
             sim_args=("--rate", "20", "--no-rate-limit"))
    gh.wait_ready(h)
    ws_addr = "127.0.0.1:%d" % h.gw_ws_port

    s = Scrape(h)
    check(s.up("exgate_upstream_up") == 1, "up")
    check(s.up("exgate_upstream_state", state="ready") == 1, "ready")
    check(s.up("exgate_upstream_state", state="down") == 0, "not down")
    check(s.up("exgate_upstream_connects_total") == 1, "one connect")
    check(s.up("exgate_upstream_restores_total") == 1, "one restore")
    check(s.up("exgate_upstream_restore_duration_seconds_count") == 1,
          "histogram count")
    check(s.up("exgate_upstream_breaker_state", state="closed") == 1,
          "breaker closed")
    check(s.get("exgate_listener_clients", listener=ws_addr) == 0,
          "no client yet")
    check(s.get("process_open_fds") > 3, "open fds")
    check(s.get("process_resident_memory_bytes") > 1e6, "rss")
    start = s.get("process_start_time_seconds")
    check(time.time() - 120 < start <= time.time() + 1,
          "process start time %r" % start)
    version = h.status()["version"]
    check([v for (n, l), v in s.samples.items() if n == "exgate_build_info"
           and ("version", version) in l] == [1], "build info %s" % version)
    check(s.up("exgate_upstream_rotations_total") == 0
          and s.up("exgate_upstream_rotations_failed_total") == 0,
          "no rotation yet")

    # a client subscribes: channels, clients, traffic
    a = await WSClient("ws-a").connect(h.ws_url)
    r = await a.call("public/auth", {"grant_type": "client_credentials",
                                     "client_id": "bot",
                                     "client_secret": BOT_SECRET}, id=1)
    check("result" in r, "auth %r" % r)
    r = await a.call("public/subscribe", {"channels": [BOOK, TICKER]}, id=2)
    check(sorted(r["result"]) == sorted([BOOK, TICKER]), "subscribe %r" % r)
    r = await a.call("private/subscribe", {"channels": [ORDERS]}, id=3)
    check(r["result"] == [ORDERS], "subscribe %r" % r)
    await a.wait_notes(BOOK, 3)
    s1 = Scrape(h)
    check(s1.up("exgate_upstream_channels") == 3, "3 channels")
    check(s1.up("exgate_upstream_clients") == 1, "1 client")
    check(s1.get("exgate_listener_clients", listener=ws_addr) == 1,
          "1 client on the websocket listener")
    check(s1.get("exgate_listener_messages_out_total", listener=ws_addr)
          >= 3, "messages out")
    check(s1.up("exgate_upstream_messages_in_total")
          > s.up("exgate_upstream_messages_in_total"), "messages in")
    check(s1.up("exgate_upstream_bytes_in_total")
          > s.up("exgate_upstream_bytes_in_total") + 100, "bytes in")
    check(s1.up("exgate_upstream_reads_total")
          > s.up("exgate_upstream_reads_total"), "socket reads")
    check(s1.up("exgate_upstream_read_bytes_total")
          >= s1.up("exgate_upstream_bytes_in_total"),
          "read bytes (frames, headers included) at least the payload")
    # the fan-out counters: every batch and every send in one bucket (a
    # batch is a loop pass's messages to the same clients, the book's and
    # the ticker's together: at least one, and the 3 book notes in them)
    batches = s1.get("exgate_fanout_batches_total")
    sends = s1.get("exgate_fanout_sends_total")
    check(batches >= 1 and sends >= 1
          and s1.get("exgate_fanout_batch_messages_total") >= 3,
          "batches %r, sends %r" % (batches, sends))
    check(s1.get("exgate_fanout_batch_messages_total") >= batches,
          "messages in batches")
    check(s1.get("exgate_fanout_send_messages_total") >= sends
          and s1.get("exgate_fanout_send_bytes_total") > 100 * sends / 10,
          "messages and bytes sent")
    for name, total in (("exgate_fanout_batches_by_messages_total", batches),
                        ("exgate_fanout_sends_by_messages_total", sends)):
        by = {dict(l)["messages"]: v for (n, l), v in s1.samples.items()
              if n == name}
        check(len(by) == 12 and "1" in by and "2048+" in by
              and sum(by.values()) == total, "%s: %r, total %r"
                  % (name, by, total))
    for name in ("exgate_fanout_would_block_total",
                 "exgate_fanout_partial_sends_total",
                 "exgate_fanout_queued_writes_total",
                 "exgate_fanout_queued_bytes_total"):
        check(s1.get(name) >= 0, name)

    # a forwarded request, answered
    r = await a.call("public/get_time", {}, id=4)
    check(isinstance(r.get("result"), int), "get_time %r" % r)
    s2 = Scrape(h)
    check(s2.up("exgate_upstream_requests_total", outcome="answered")
          == s1.up("exgate_upstream_requests_total", outcome="answered") + 1,
          "answered +1")

    # a gap in the book's chain: detected, bridged
    check(h.control("gap %s" % BOOK).get("ok"), "gap")
    wait_scrape(h, lambda x: x.up("exgate_upstream_book_gaps_total")
                == s2.up("exgate_upstream_book_gaps_total") + 1
                and x.up("exgate_upstream_book_bridges_total")
                >= s2.up("exgate_upstream_book_bridges_total") + 1,
                "a book gap and its bridge")

    # request_timeout: exsim drops what it reads while stalled
    h.control("stall on")
    r = await a.call("public/get_time", {}, id=5)
    check(r.get("error", {}).get("code") == 13888, "timed out %r" % r)
    h.control("stall off")
    s3 = Scrape(h)
    check(s3.up("exgate_upstream_requests_total", outcome="timed_out")
          == s2.up("exgate_upstream_requests_total", outcome="timed_out") + 1,
          "timed_out +1")

    # a buy in flight when the connection drops: outcome unknown; the
    # reconnect, its restore, the orders reconcile, the ticker's gap
    h.control("stall on")
    k = await a.request("private/buy", {"instrument_name": "BTC-PERPETUAL",
                                        "amount": 10, "type": "limit",
                                        "price": 1000}, id=6)
    wait_scrape(h, lambda x: x.up("exgate_upstream_requests_in_flight") >= 1,
                "the buy in flight")
    h.control("drop")
    h.control("stall off")
    r = await a.answer(k, timeout=10)
    check("outcome unknown" in r.get("error", {}).get("message", ""),
          "buy %r" % r)
    s4 = wait_scrape(
        h, lambda x: x.up("exgate_upstream_up") == 1
        and x.up("exgate_upstream_restores_total") == 2
        and x.up("exgate_upstream_backfills_total")
        >= s3.up("exgate_upstream_backfills_total") + 1,
        "ready again, restored, orders reconciled")
    check(s4.up("exgate_upstream_requests_total", outcome="outcome_unknown")
          == 1, "outcome_unknown 1")
    check(s4.up("exgate_upstream_disconnects_total", reason="lost") == 1,
          "one disconnect, lost:\n%s" % s4.text)
    check(sum(v for (n, l), v in s4.samples.items()
              if n == "exgate_upstream_disconnects_total") == 1,
          "one disconnect in all")
    check(s4.up("exgate_upstream_connects_total") == 2, "connects 2")
    check(s4.up("exgate_upstream_reconnect_attempts_total") == 1, "attempts")
    check(s4.up("exgate_upstream_connection_id") == 2, "connection 2")
    check(s4.up("exgate_upstream_restore_duration_seconds_count") == 2,
          "two restores in the histogram")
    check(s4.up("exgate_upstream_restore_duration_seconds_bucket", le="+Inf")
          == 2, "+Inf bucket")
    check(s4.up("exgate_upstream_unrepaired_gaps_total")
          == s3.up("exgate_upstream_unrepaired_gaps_total") + 1,
          "the ticker's gap is not repairable")

    # the exchange refuses: down, connect failures, breaker, queue
    h.control("refuse on")
    h.control("drop")
    s5 = wait_scrape(
        h, lambda x: x.up("exgate_upstream_up") == 0
        and x.up("exgate_upstream_breaker_state", state="open") == 1,
        "breaker open after 3 refused attempts")
    check(s5.up("exgate_upstream_state", state="open") == 1, "state open")
    check(s5.up("exgate_upstream_state", state="ready") == 0, "not ready")
    # (the breaker counts the two drops too: one refusal opens it)
    check(s5.up("exgate_upstream_connect_failures_total", reason="http")
          >= 1, "refused upgrades counted")
    check(s5.up("exgate_upstream_breaker_trips_total") == 1, "one trip")
    check(s5.up("exgate_upstream_disconnects_total", reason="lost") == 2,
          "second drop")
    k1 = await a.request("public/get_time", {}, id=7)
    k2 = await a.request("public/get_time", {}, id=8)
    r = await a.answer(k2, timeout=5)
    check(r.get("error", {}).get("message") == "upstream unavailable",
          "over queue_limit %r" % r)
    s6 = Scrape(h)
    check(s6.up("exgate_upstream_requests_queued") == 1, "one queued")
    check(s6.up("exgate_upstream_requests_total", outcome="rejected") == 1,
          "one rejected")
    h.control("refuse off")
    r = await a.answer(k1, timeout=10)
    check(isinstance(r.get("result"), int), "queued get_time %r" % r)
    s7 = wait_scrape(h, lambda x: x.up("exgate_upstream_up") == 1,
                     "ready after refuse off")
    check(s7.up("exgate_upstream_requests_queued") == 0, "queue empty")
    check(s7.up("exgate_upstream_requests_total", outcome="answered")
          == s2.up("exgate_upstream_requests_total", outcome="answered") + 1,
          "the queued request answered")
    check(s7.up("exgate_upstream_breaker_state", state="half-open") == 1,
          "breaker half-open until stable")

    await a.close()
    s8 = wait_scrape(h, lambda x: x.get("exgate_listener_clients",
                                        listener=ws_addr) == 0,
                     "the client gone")
    check(s8.up("exgate_upstream_clients") == 0, "no client")

    # a rotation: the new connection restores the session and takes
    # over, the upstream stays up
    req = urllib.request.Request("http://127.0.0.1:%d/upstreams/sim/rotate"
                                 % h.admin_port, data=b"", method="POST")
    with urllib.request.urlopen(req, timeout=5) as r:
        check(r.status == 202, "rotate: %d" % r.status)
    s9 = wait_scrape(h, lambda x: x.up(
        "exgate_upstream_rotations_total") == 1, "a rotation done")
    check(s9.up("exgate_upstream_rotations_failed_total") == 0, "none failed")
    check(s9.up("exgate_upstream_up") == 1
          and s9.up("exgate_upstream_connection_id")
          == s8.up("exgate_upstream_connection_id") + 1,
          "the new connection serves")

    # reloads: one that runs, one whose conf is broken (kept)
    check(s9.get("exgate_reloads_total", result="ok") == 0
          and s9.get("exgate_reloads_total", result="error") == 0,
          "no reload yet")
    h.gate.send_signal(signal.SIGHUP)
    wait_scrape(h, lambda x: x.get("exgate_reloads_total", result="ok")
                == 1, "a reload that runs")
    path = os.path.join(h.tmp, "exgate.conf")
    with open(path) as f:
        good = f.read()
    with open(path, "a") as f:
        f.write("upstream {\n")
    h.gate.send_signal(signal.SIGHUP)
    s10 = wait_scrape(h, lambda x: x.get("exgate_reloads_total",
                                         result="error") == 1,
                      "a reload that failed")
    check(s10.get("exgate_reloads_total", result="ok") == 1
          and s10.up("exgate_upstream_up") == 1, "the running conf kept")
    with open(path, "w") as f:
        f.write(good)

    for text in scrapes:
        for secret in (EXSIM_SECRET, BOT_SECRET):
            check(secret not in text, "a secret in a scrape")
    print("%d scrapes checked by promtool; sample:\n%s"
          % (len(scrapes), "\n".join(s4.text.splitlines()[:40])))


if __name__ == "__main__":
    if PROMTOOL is None:
        print("SKIP admin_metrics: promtool not found (Debian package "
              "prometheus: apt-get install prometheus)")
        sys.exit(77)
    gh.run("admin_metrics", body)
