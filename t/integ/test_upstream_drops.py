#!/usr/bin/python3
"""20 exsim `drop`s in a row -> 20 reconnects, never two connections at once
(exsim stats max_concurrent 1); then SIGTERM -> close 1000 and exit 0."""

import os
import sys
import urllib.error
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from upstream_harness import check, run  # noqa: E402

DROPS = 20


def body(h):
    h.start_sim()
    h.start_gate("    protocol raw;\n"
                 "    reconnect exponential { initial 10ms; max 100ms; }\n")
    u = h.wait_up(lambda u: u["state"] == "ready", 10, "first ready")
    check(u["connection_id"] == 1, "first connection id %r" % u)
    check(u["last_error"] is None, "last_error before any failure: %r" % u)

    for i in range(DROPS):
        cid = h.up()["connection_id"]
        h.control("drop")
        h.wait_up(lambda u: u["state"] == "ready"
                  and u["connection_id"] == cid + 1, 10,
                  "ready again after drop %d" % (i + 1))

    u = h.up()
    check(u["connection_id"] == DROPS + 1, "connection ids %r" % u)
    check(u["connects"] == DROPS + 1, "connects %r" % u)
    check(u["disconnects"] == DROPS, "disconnects %r" % u)
    check(u["reconnect_attempts"] == DROPS, "reconnect_attempts %r" % u)
    check(u["last_error"], "no last_error after drops: %r" % u)

    stats = h.control("stats")
    check(stats.get("max_concurrent") == 1, "exsim max_concurrent %r" % stats)
    check(stats.get("connections_total") == DROPS + 1,
          "exsim connections_total %r" % stats)

    # Every transition logged with name#id, reason and the chosen delay.
    downs = h.log_lines(r"upstream sim#\d+: ready -> down \(.+\), retry in "
                        r"\d+ms")
    check(len(downs) == DROPS, "%d 'ready -> down' lines" % len(downs))
    for n in range(1, DROPS + 2):
        # (raw replays its on_open and replay texts first: restoring)
        check(h.log_lines(r"upstream sim#%d: handshake -> restoring \(open\)"
                          % n) and
              h.log_lines(r"upstream sim#%d: restoring -> ready \(restored\)"
                          % n), "no ready line for sim#%d" % n)
        # One line per event (the log is at debug): the transport does
        # not repeat what the upstream logs.
        for ev in (r"connecting -> handshake", r"\w+ -> connecting"):
            lines = h.log_lines(r"upstream sim#%d: %s" % (n, ev))
            check(len(lines) == 1, "sim#%d '%s' logged %d times: %r"
                  % (n, ev, len(lines), lines))
    dup = h.log_lines(r"upstream sim#\d+: (open|down: .*|connecting to .*"
                      r"|handshake -> open|open -> down)$")
    check(not dup, "transport lines repeat the upstream's: %r" % dup[:4])

    # A close frame from the exchange takes the same path.
    h.control("close 1011 restart")
    u = h.wait_up(lambda u: u["state"] == "ready"
                  and u["connection_id"] == DROPS + 2, 10,
                  "ready after close 1011")
    check("1011" in (u["last_error"] or ""), "last_error %r" % u)

    # The admin endpoint: the document, the page (/) and /metrics, 404
    # elsewhere, 405 for POST.
    st = h.status()
    check(isinstance(st.get("version"), str) and st["version"],
          "version %r" % st)
    check(isinstance(st.get("uptime_s"), (int, float))
          and st["uptime_s"] > 0, "uptime_s %r" % st)
    base = "http://127.0.0.1:%d" % h.admin_port
    for path, method, want in (("/nope", "GET", 404), ("/", "GET", 200),
                               ("/metrics", "GET", 200),
                               ("/index.html", "GET", 404),
                               ("/status", "POST", 405), ("/", "POST", 405)):
        req = urllib.request.Request(base + path, method=method,
                                     data=b"x" if method == "POST" else None)
        try:
            urllib.request.urlopen(req, timeout=2)
            code = 200
        except urllib.error.HTTPError as e:
            code = e.code
        check(code == want, "%s %s -> %d, want %d" % (method, path, code,
                                                      want))

    stats = h.control("stats")
    check(stats.get("max_concurrent") == 1, "exsim max_concurrent %r" % stats)

    # Orderly stop: close 1000 and exit 0.
    rc = h.stop_gate()
    check(rc == 0, "exgate exit code %r" % rc)
    check(h.log_lines(r"upstream sim#%d: ready -> stopping" % (DROPS + 2)),
          "no 'ready -> stopping' line")
    check(h.log_lines(r"upstream sim#%d: stopping -> idle \(stopped\)"
                      % (DROPS + 2)), "no 'stopping -> idle' line")


run("upstream_drops", body)
