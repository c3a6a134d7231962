#!/usr/bin/python3
"""20 exsim `drop`s in a row -> 20 reconnects, never two connections at once
(exsim stats max_concurrent 1); then SIGTERM -> close 1000 and exit 0."""

import os
import sys

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
        check(h.log_lines(r"upstream sim#%d: handshake -> ready \(open\)" % n),
              "no ready line for sim#%d" % n)

    # Orderly stop: close 1000 and exit 0.
    rc = h.stop_gate()
    check(rc == 0, "exgate exit code %r" % rc)
    check(h.log_lines(r"upstream sim#%d: ready -> stopping" % (DROPS + 1)),
          "no 'ready -> stopping' line")
    check(h.log_lines(r"upstream sim#%d: stopping -> idle \(stopped\)"
                      % (DROPS + 1)), "no 'stopping -> idle' line")


run("upstream_drops", body)
