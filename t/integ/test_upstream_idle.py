#!/usr/bin/python3
"""idle_timeout: pongs arrive but no data message at all -> reconnect with
"idle timeout", through the policy like any other failure."""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from upstream_harness import check, run  # noqa: E402


def body(h):
    h.start_sim()
    # A raw upstream sends nothing, so exsim sends no data messages; pings
    # every 100ms keep the transport's own liveness check happy.
    h.start_gate("    protocol raw;\n"
                 "    ping 100ms;\n"
                 "    ping_timeout 2s;\n"
                 "    idle_timeout 600ms;\n"
                 "    reconnect fixed { delay 50ms; }\n")
    h.wait_up(lambda u: u["state"] == "ready", 10, "first ready")
    u = h.wait_up(lambda u: u["connection_id"] >= 2, 5,
                  "reconnect after idle_timeout")
    check(u["last_error"] and u["last_error"].startswith("idle timeout"),
          "last_error %r" % u)
    # From exgate's own log: ready at t, down for idleness at t + 600ms.
    ready = h.log_times(r"upstream sim#1: \w+ -> ready")
    down = h.log_times(r"upstream sim#1: ready -> down \(idle")
    check(len(ready) == 1 and len(down) == 1, "lines %r %r" % (ready, down))
    took = down[0] - ready[0]
    check(0.6 - 0.012 <= took <= 0.6 + 0.3,
          "idle reconnect %.3fs after ready, idle_timeout 600ms" % took)
    check(h.log_lines(r"upstream sim#1: ready -> down \(idle timeout "
                      r"\(no data for \d+ms\)\), retry in 50ms"),
          "no idle timeout transition logged")
    stats = h.control("stats")
    check(stats.get("max_concurrent") == 1, "exsim max_concurrent %r" % stats)


run("upstream_idle", body)
