#!/usr/bin/python3
"""exsim `refuse on 503`: every upgrade is answered 503. The delays follow
the policy (exponential, no jitter: 100, 200, 400 ms), the breaker opens
after 3 failures, one half-open trial after the cool-down fails and opens
it again, and once the refusals stop the trial connection closes the
breaker after `stable`."""

import os
import re
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from upstream_harness import check, run  # noqa: E402


def body(h):
    h.start_sim()
    h.control("refuse on 503")
    h.start_gate("    protocol raw;\n"
                 "    reconnect exponential { initial 100ms; max 10s; "
                 "multiplier 2; jitter none; }\n"
                 "    breaker { failures 3; window 10s; open 1500ms; }\n"
                 "    stable 500ms;\n")

    u = h.wait_up(lambda u: u["state"] == "open", 5, "breaker open")
    check(u["breaker"] == "open", "breaker %r" % u)
    check(u["last_error"] and "503" in u["last_error"], "last_error %r" % u)
    check(u["connection_id"] == 3, "attempts before opening %r" % u)
    lines = h.log_lines(r"upstream sim#\d+: \w+ -> (down|open) \(.*503.*\), "
                        r"retry in \d+ms")
    delays = [int(re.search(r"retry in (\d+)ms", l).group(1)) for l in lines]
    check(delays[:3] == [100, 200, 1500], "delays %r" % delays)
    check("-> open" in lines[2] and "breaker open after 3 failures" in lines[2],
          "third failure did not open the breaker: %r" % lines[2])

    # The measured gaps between attempts follow the delays (the log has ms).
    def stamp(l):
        t = re.match(r"\S+T(\d+):(\d+):([\d.]+)Z", l)
        return int(t.group(1)) * 3600 + int(t.group(2)) * 60 + float(t.group(3))
    starts = [stamp(l) for l in h.log_lines(r"upstream sim#[23]: (down|idle) "
                                            r"-> connecting")]
    fails = [stamp(l) for l in lines[:2]]
    check(len(starts) == 2, "attempt lines %r" % starts)
    # libevent's coarse clock may fire a timer a tick (<= 10 ms) early.
    for want, f, s in zip([0.1, 0.2], fails, starts):
        check(want - 0.012 <= s - f <= want + 0.3,
              "attempt after %.3fs, policy said %.1fs" % (s - f, want))

    # While open nothing connects; after the cool-down one trial, refused.
    # Judged from the log's timestamps and exsim's count, not from a sleep
    # that a slow machine could stretch past the cool-down.
    stats = h.control("stats")
    total = stats.get("connections_total")
    check(total == 3, "exsim saw %r connections for 3 attempts" % total)
    u = h.wait_up(lambda u: u["connection_id"] == 4 and u["state"] == "open",
                  5, "half-open trial refused -> open again")
    trial = h.log_lines(r"upstream sim#4: open -> connecting \(breaker "
                        r"half-open: one trial\)")
    check(len(trial) == 1, "half-open trial lines %r" % trial)
    gap = stamp(trial[0]) - stamp(lines[2])
    check(gap >= 1.5 - 0.012, "trial %.3fs after the breaker opened, "
          "open is 1.5s" % gap)
    check(h.control("stats").get("connections_total") == total + 1,
          "connected while the breaker was open")
    check(h.log_lines(r"upstream sim#4: \w+ -> open \(.*503.*\), retry in "
                      r"1500ms"), "trial failure did not reopen the breaker")

    # Refusals stop: the next trial reaches ready and, after stable, closes.
    h.control("refuse off")
    u = h.wait_up(lambda u: u["state"] == "ready", 4, "trial ready")
    check(u["connection_id"] == 5, "trial id %r" % u)
    check(u["breaker"] == "half-open", "breaker during the trial %r" % u)
    u = h.wait_up(lambda u: u["breaker"] == "closed", 2, "breaker closed")
    check(u["failures_in_row"] == 0, "backoff not reset: %r" % u)
    check(h.control("stats").get("max_concurrent") == 1, "max_concurrent")


run("upstream_refuse", body)
