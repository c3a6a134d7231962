#!/usr/bin/env python3
"""System calls and scheduler events per delivery of one bench fan-out point.

Runs run_bench.py's own fan-out point (exsim --bench 300, the bench
client, the same exgate configuration) and counts, with `perf stat -p`
over the bench client's measuring window, the system under test's system
calls by name (the syscalls:sys_enter_* tracepoints) and its context
switches, then divides by the deliveries in the window. Unlike the bench's
CPU-seconds these counts do not depend on the machine's load (and, unlike
`strace`, counting them does not slow the process down: the pace of the
point is the bench's). exgate's /status is read outside the counted window.

Usage: syscalls_point.py [--builddir DIR] [--system exgate|raw]
                         [--clients 1] [--rate 10000] [--duration 4]
                         [--warmup 0.5]
BENCH_EXGATE=PATH measures another exgate binary, as for run_bench.py.
Prints one JSON line ({"system", "clients", "rate", "deliveries",
"msgs_per_read", "msgs_per_batch", "per_delivery": {event: count per
delivery}}) and the events as a table. Needs perf and the syscalls
tracepoints (root, or kernel.perf_event_paranoid <= -1).
"""

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import run_bench  # noqa: E402

EVENTS = ("syscalls:sys_enter_*,context-switches,cpu-migrations,page-faults,"
          "msr:write_msr,ipi:ipi_send_cpu,ipi:ipi_send_cpumask,"
          "timer:hrtimer_start,irq:softirq_entry")


class PerfStatBench(run_bench.Bench):
    """run_bench's Bench with `perf stat` of the system under test over the
    measuring window (started after /status is read as the window opens,
    stopped before it is read as it closes)."""

    def __init__(self, args, outfile):
        super().__init__(args)
        self.outfile = outfile
        self.sut_pid = None
        self.stat = None
        self.results_seen = []

    def spawn(self, name, argv, cpu, stdin=subprocess.DEVNULL):
        p = super().spawn(name, argv, cpu, stdin)
        if name == self.a.sut_name:
            self.sut_pid = p.pid
        return p

    def io_snapshot(self, system, raw=None):
        if self.stat is None:
            d = super().io_snapshot(system, raw)
            self.stat = subprocess.Popen(
                ["perf", "stat", "-x", ",", "--no-big-num", "-e", EVENTS,
                 "-p", str(self.sut_pid), "-o", self.outfile],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            return d
        self.stat.send_signal(signal.SIGINT)
        self.stat.wait(30)
        return super().io_snapshot(system, raw)

    def emit(self, obj):
        self.results_seen.append(obj)
        super().emit(obj)


def counts(path):
    out = {}
    with open(path) as f:
        for line in f:
            parts = line.strip().split(",")
            if len(parts) < 3 or not parts[0].strip().isdigit():
                continue
            n = int(parts[0])
            name = parts[2]
            if n == 0:
                continue
            out[name.replace("syscalls:sys_enter_", "")] = n
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--builddir", default=os.getcwd())
    ap.add_argument("--system", default="exgate", choices=("exgate", "raw"))
    ap.add_argument("--clients", type=int, default=1)
    ap.add_argument("--rate", type=int, default=10000)
    ap.add_argument("--duration", type=float, default=4.0)
    ap.add_argument("--warmup", type=float, default=0.5)
    a = run_bench.point_args(ap.parse_args())
    fd, outfile = tempfile.mkstemp(prefix="xg-perfstat-")
    os.close(fd)
    b = PerfStatBench(a, outfile)
    try:
        b.start_exsim()
        b.fanout_point(a.system, a.clients, a.rate)
    finally:
        if b.gate is not None:
            b.stop(b.gate, 30)
        for p in list(b.procs):
            b.stop(p, 30)
        b.close()
    r = [x for x in b.results_seen if x.get("scenario") == "fanout"][-1]
    if not r.get("ok"):
        raise run_bench.BenchError("point failed: %s" % r.get("error"))
    c = counts(outfile)
    os.unlink(outfile)
    deliveries = r["deliveries_per_s"] * r["window_s"]
    res = {"system": a.system, "clients": a.clients, "rate": a.rate,
           "deliveries": round(deliveries),
           "msgs_per_read": (r.get("io") or {}).get("msgs_per_read"),
           "msgs_per_batch": (r.get("io") or {}).get("msgs_per_batch"),
           "cpu_s_per_m": r.get("sut_cpu_s_per_m"),
           "per_delivery": {k: round(v / deliveries, 4)
                            for k, v in sorted(c.items(),
                                               key=lambda x: -x[1])}}
    print(json.dumps(res))
    for k, v in res["per_delivery"].items():
        print("  %8.4f  %s" % (v, k))
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except run_bench.BenchError as e:
        sys.stderr.write("syscalls_point: %s\n" % e)
        sys.exit(1)
