#!/usr/bin/python3
"""exsim `stall on` (TCP stays open, nothing is sent, not even pongs) ->
exgate detects the dead connection within ping_timeout, goes down with
"ping timeout", and reconnects once the stall ends. Then `idle_timeout`:
pongs keep flowing but no data message -> reconnect."""

import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from upstream_harness import check, run  # noqa: E402

PING_TIMEOUT = 1.0


def body(h):
    h.start_sim()
    h.start_gate("    protocol raw;\n"
                 "    ping 200ms;\n"
                 "    ping_timeout %dms;\n"
                 "    close_timeout 400ms;\n"
                 "    reconnect fixed { delay 100ms; }\n"
                 % int(PING_TIMEOUT * 1000))
    u = h.wait_up(lambda u: u["state"] == "ready", 10, "first ready")
    # Pings are answered: the connection stays up for several timeouts.
    time.sleep(PING_TIMEOUT * 2.5)
    u = h.up()
    check(u["state"] == "ready" and u["connection_id"] == 1,
          "answered pings did not keep it up: %r" % u)

    t0 = time.time()
    h.control("stall on")
    u = h.wait_up(lambda u: u["state"] != "ready", PING_TIMEOUT + 3,
                  "stall detected")
    # When exgate itself saw it (its log has ms), not when we polled.
    downs = h.log_times(r"upstream sim#1: ready -> down")
    check(len(downs) == 1, "down lines %r" % downs)
    took = downs[0] - t0
    # (+0.1: pongs already on their way when exsim took the command.)
    check(took <= PING_TIMEOUT + 0.1,
          "stall detected after %.3fs, ping_timeout is %.1fs"
          % (took, PING_TIMEOUT))
    check(u["last_error"] and "ping timeout" in u["last_error"],
          "last_error %r" % u)
    check(h.log_lines(r"upstream sim#1: ready -> down \(.*ping timeout.*\), "
                      r"retry in 100ms"), "no ping timeout transition logged")

    h.control("stall off")
    u = h.wait_up(lambda u: u["state"] == "ready", 10,
                  "ready after the stall ended")
    check(u["connection_id"] >= 2, "no new connection: %r" % u)
    stats = h.control("stats")
    check(stats.get("max_concurrent") == 1, "exsim max_concurrent %r" % stats)
    # SIGTERM while the exchange is stalled: our close 1000 is never
    # answered, so the stop ends at close_timeout (400ms), not later.
    # Timed by exgate's own log (SIGTERM taken -> upstream stopped), so the
    # process exit (a leak check in a sanitizer build) does not count.
    h.control("stall on")
    rc = h.stop_gate()
    check(rc == 0, "exit code %r" % rc)
    term = h.log_times(r"exgate: SIGTERM, stopping")
    idle = h.log_times(r"upstream sim#\d+: stopping -> idle \(stopped\)")
    check(len(term) == 1 and len(idle) == 1, "stop lines %r %r"
          % (term, idle))
    stop_took = idle[0] - term[0]
    check(0.4 - 0.012 <= stop_took < 1.0,
          "stop took %.3fs with close_timeout 400ms" % stop_took)
    check(h.log_lines(r"upstream sim#\d+: ready -> stopping"),
          "no stopping line")
    check(h.log_lines(r"upstream sim#\d+: stopping -> idle \(stopped\)"),
          "no stopped line")
    sys.stdout.write("stall detected in %.3fs (ping_timeout %.1fs); stop "
                     "with an unanswered close took %.3fs\n"
                     % (took, PING_TIMEOUT, stop_took))


run("upstream_stall", body)
