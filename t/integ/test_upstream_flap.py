#!/usr/bin/python3
"""The issue's done-when: exsim drops the connection every 200 ms for 10 s.
exgate stays up, /status shows the state cycling, ends `ready` once the
drops stop, and exsim never saw two connections at once."""

import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from upstream_harness import check, run  # noqa: E402

PERIOD = 0.2
DURATION = 10.0


def body(h):
    h.start_sim()
    h.start_gate("    protocol raw;\n"
                 "    reconnect exponential { initial 50ms; max 1s; "
                 "jitter full; }\n", level="info")
    h.wait_up(lambda u: u["state"] == "ready", 10, "first ready")

    seen = {}
    ids = set()
    drops = 0
    start = time.monotonic()
    next_drop = start
    while time.monotonic() - start < DURATION:
        now = time.monotonic()
        if now >= next_drop:
            h.control("drop")
            drops += 1
            next_drop += PERIOD
        u = h.up()
        seen[u["state"]] = seen.get(u["state"], 0) + 1
        ids.add(u["connection_id"])
        time.sleep(0.02)

    check(h.gate.poll() is None, "exgate exited during the drops")
    check("ready" in seen and "down" in seen,
          "state did not cycle through ready and down: %r" % seen)
    check(len(ids) >= 5, "only %d connection ids seen: %r" % (len(ids), ids))

    u = h.wait_up(lambda u: u["state"] == "ready", 5,
                  "ready after the drops stopped")
    # It stays ready: no stray attempt left behind.
    time.sleep(0.5)
    u2 = h.up()
    check(u2["state"] == "ready" and u2["connection_id"] == u["connection_id"],
          "not stable after the drops: %r then %r" % (u, u2))
    check(u2["failures_in_row"] >= 1,
          "flapping reset the backoff: %r" % u2)

    stats = h.control("stats")
    check(stats.get("max_concurrent") == 1, "exsim max_concurrent %r" % stats)
    check(stats.get("connections_open") == 1, "exsim connections_open %r"
          % stats)
    check(stats.get("connections_total") == u2["connection_id"],
          "exsim saw %r connections, exgate made %d"
          % (stats.get("connections_total"), u2["connection_id"]))
    sys.stdout.write("drops %d, states seen %r, connections %d\n"
                     % (drops, seen, u2["connection_id"]))


run("upstream_flap", body)
