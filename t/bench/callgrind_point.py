#!/usr/bin/env python3
"""Instructions per delivery of one bench fan-out point, under callgrind.

Runs run_bench.py's own fan-out point (exsim --bench 300, the bench
client, the same exgate configuration) with the system under test (exgate
or bench_raw) started under `valgrind --tool=callgrind`. The counters are
zeroed as the bench client's measuring window opens and dumped as it
closes (`callgrind_control -z` / `-d`; exgate's /status is read before the
zeroing and after the dump, so the admin request is not counted), and the
dump's user-space instruction count (Ir) is divided by the deliveries the
bench client counted in the window. Instruction counts do not depend on
the machine's load, unlike the bench's CPU-seconds: this is how a cut of a
few per cent in per-message work is told apart (docs/performance.md, "Per-
message work at one client").

Usage: callgrind_point.py [--builddir DIR] [--system exgate|raw]
                          [--clients 1] [--rate 10000] [--duration 4]
                          [--warmup 0.5] [--top 15] [--keep DIR]
       callgrind_point.py --edge RATExNCH [--redis] [--duration 4] ...
BENCH_EXGATE=PATH measures another exgate binary, as for run_bench.py.
Prints one JSON line ({"system", "clients", "rate", "deliveries", "ir",
"ir_per_delivery", "msgs_per_read", "msgs_per_batch", "top": [[function,
Ir per delivery], ...]}) and the top entries as a table. Compare points
whose messages per read and per batch are alike: a loaded machine (or
valgrind's slowness) lets more messages gather a loop pass, which
spreads the per-pass work over more deliveries.

--edge RATExNCH runs run_bench.py's edge latency point instead (a
redis-server, a core exgate publishing into it, the edge exgate under
callgrind, one bot on each), the counters zeroed and dumped around the
point's window, and divides the edge's Ir by the stream entries it read in
the window ("ir_per_entry"; entries_per_read tells how many a XREAD reply
carried). --redis runs redis-server under callgrind as well and adds its
Ir per entry (the core's XADDs and the edge's XREADs both).
"""

import argparse
import glob
import json
import os
import re
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import run_bench  # noqa: E402


class CallgrindBench(run_bench.Bench):
    """run_bench's Bench with the system under test run under callgrind
    and the --perf hook replaced by callgrind_control around the window."""

    def __init__(self, args, outdir):
        super().__init__(args)
        self.outdir = outdir
        self.sut_pid = None
        self.pids = {}
        self.window = None
        self.results_seen = []

    def spawn(self, name, argv, cpu, stdin=subprocess.DEVNULL):
        traced = name in self.a.traced
        if traced:
            argv = ["valgrind", "--tool=callgrind", "-q",
                    "--callgrind-out-file=%s" % os.path.join(
                        self.outdir, "cg.%p")] + argv
        p = super().spawn(name, argv, cpu, stdin)
        if traced:
            self.pids[name] = p.pid
        if name == self.a.sut_name:
            self.sut_pid = p.pid
        return p

    def callgrind_control(self, flag):
        for name, pid in self.pids.items():
            if name in ("edge", "redis") and getattr(self, name) is None:
                continue    # not of this point
            subprocess.run(["callgrind_control", flag, str(pid)],
                           check=True, stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL, timeout=60)

    def window_snapshot(self):
        # the edge point's window, as io_snapshot's for a fan-out point
        if self.window is None:
            d = super().window_snapshot()
            self.callgrind_control("-z")
            self.window = "open"
            return d
        self.callgrind_control("-d")
        self.window = None
        return super().window_snapshot()

    def io_snapshot(self, system, raw=None):
        # called once as the window opens and once as it closes: zero
        # after the first read of /status, dump before the second
        if self.window is None:
            d = super().io_snapshot(system, raw)
            self.callgrind_control("-z")
            self.window = "open"
            return d
        self.callgrind_control("-d")
        self.window = None
        return super().io_snapshot(system, raw)

    def emit(self, obj):
        self.results_seen.append(obj)
        super().emit(obj)


def annotate(path, top):
    """Total Ir and the TOP functions by their own (self) cost; the rows
    of one function (callgrind_annotate lists what was inlined into it
    from a header as a row of that header) are added up."""
    out = subprocess.run(["callgrind_annotate", "--inclusive=no", "--auto=no",
                          "--threshold=100", path], capture_output=True,
                         text=True, check=True).stdout
    total = None
    cost = {}
    for line in out.splitlines():
        m = re.match(r"\s*([\d,]+)\s+\(\s*[\d.]+%\)\s+PROGRAM TOTALS", line)
        if m:
            total = int(m.group(1).replace(",", ""))
            continue
        m = re.match(r"\s*([\d,]+)\s+\(\s*[\d.]+%\)\s+(.+?)(?: \[.*\])?$",
                     line)
        if not m or total is None:
            continue
        ir = int(m.group(1).replace(",", ""))
        # callgrind_annotate lists the event loop and main (and what is
        # below main) at their inclusive cost after callgrind_control -z
        # (most of the window, not all of it): not entries of the profile
        if ir >= total * 0.6:
            continue
        fn = m.group(2)
        fn = fn.split(":", 1)[1] if ":" in fn else fn
        cost[fn] = cost.get(fn, 0) + ir
    if total is None:
        raise run_bench.BenchError("no PROGRAM TOTALS in %s" % path)
    rows = sorted(cost.items(), key=lambda x: -x[1])[:top]
    return total, rows


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--builddir", default=os.getcwd())
    ap.add_argument("--system", default="exgate", choices=("exgate", "raw"))
    ap.add_argument("--clients", type=int, default=1)
    ap.add_argument("--rate", type=int, default=10000)
    ap.add_argument("--duration", type=float, default=4.0)
    ap.add_argument("--warmup", type=float, default=0.5)
    ap.add_argument("--top", type=int, default=15)
    ap.add_argument("--keep", metavar="DIR",
                    help="keep the callgrind dumps in DIR")
    ap.add_argument("--edge", metavar="RATExNCH",
                    help="the edge exgate of run_bench's edge latency point")
    ap.add_argument("--redis", action="store_true",
                    help="with --edge: redis-server under callgrind too")
    ap.add_argument("--edge-bots", type=int, default=1)
    ap.add_argument("--edge-warmup", type=float, default=1.0)
    a = run_bench.point_args(ap.parse_args())
    a.traced = [a.sut_name]
    if a.edge:
        a.sut_name = "edge"
        a.traced = ["edge"] + (["redis"] if a.redis else [])
    outdir = a.keep or tempfile.mkdtemp(prefix="xg-callgrind-")
    os.makedirs(outdir, exist_ok=True)
    for f in glob.glob(os.path.join(outdir, "cg.*")):
        os.unlink(f)
    b = CallgrindBench(a, outdir)
    if a.edge:
        return edge_point(a, b, outdir)
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
    dumps = sorted(f for f in glob.glob(os.path.join(outdir, "cg.*.1")))
    if not dumps:
        raise run_bench.BenchError("no callgrind dump in %s" % outdir)
    deliveries = r["deliveries_per_s"] * r["window_s"]
    total, rows = annotate(dumps[-1], a.top)
    res = {"system": a.system, "clients": a.clients, "rate": a.rate,
           "deliveries": round(deliveries), "ir": total,
           "ir_per_delivery": round(total / deliveries),
           "gaps": r.get("gaps"), "closed": r.get("closed"),
           # what a loop pass carried: fewer messages a read or a batch
           # spread the per-pass work over fewer deliveries
           "msgs_per_read": (r.get("io") or {}).get("msgs_per_read"),
           "msgs_per_batch": (r.get("io") or {}).get("msgs_per_batch"),
           "top": [[fn, round(ir / deliveries, 1)] for fn, ir in rows]}
    print(json.dumps(res))
    for fn, per in res["top"]:
        print("  %8.1f  %s" % (per, fn))
    if not a.keep:
        for f in glob.glob(os.path.join(outdir, "cg.*")):
            os.unlink(f)
        os.rmdir(outdir)
    return 0


def edge_point(a, b, outdir):
    """--edge: the edge latency point with the edge (and with --redis,
    redis-server) under callgrind; Ir per stream entry the edge read."""
    m = re.fullmatch(r"(\d+)x(\d+)(s?)", a.edge or "")
    if m is None:
        sys.stderr.write("--edge: RATExNCH[s], as run_bench.py's "
                         "--edge-points\n")
        return 2
    rate, nch, spread = int(m.group(1)), int(m.group(2)), m.group(3) == "s"
    try:
        b.start_exsim()
        b.edge_latency_point((rate, nch, spread), 1)
    finally:
        b.stop_edge_set()
        for p in list(b.procs):
            b.stop(p, 30)
        b.close()
    rs = [x for x in b.results_seen if x.get("scenario") == "edge"]
    if not rs or "sys" not in rs[-1]:
        raise run_bench.BenchError("edge point failed: %s" % (
            rs[-1].get("error") if rs else "no result"))
    r = rs[-1]
    entries = r["sys"].get("edge_entries") or 0
    if entries <= 0:
        raise run_bench.BenchError("edge read no entries in the window")
    res = {"system": "edge", "rate": rate, "channels": nch,
           "entries": entries, "xread_calls": r["sys"].get("xread_calls"),
           # an XREAD answer carries the entries of all channels since the
           # last one: fewer per read spread its work over fewer entries
           "entries_per_read": round(entries / r["sys"]["xread_calls"], 1)
           if r["sys"].get("xread_calls") else None,
           "edge_sends": r["sys"].get("edge_sends"),
           "gaps": r["edge"].get("gaps") if "edge" in r else None}
    for name in a.traced:
        pid = b.pids.get(name)
        dump = os.path.join(outdir, "cg.%d.1" % pid) if pid else None
        if dump is None or not os.path.exists(dump):
            raise run_bench.BenchError("no callgrind dump of %s in %s"
                                       % (name, outdir))
        total, rows = annotate(dump, a.top)
        key = "" if name == "edge" else name + "_"
        res[key + "ir"] = total
        res[key + "ir_per_entry"] = round(total / entries)
        res[key + "top"] = [[fn, round(ir / entries, 1)] for fn, ir in rows]
    print(json.dumps(res))
    for name in a.traced:
        key = "" if name == "edge" else name + "_"
        print("%s: %d Ir per entry" % (name, res[key + "ir_per_entry"]))
        for fn, per in res[key + "top"]:
            print("  %8.1f  %s" % (per, fn))
    if not a.keep:
        for f in glob.glob(os.path.join(outdir, "cg.*")):
            os.unlink(f)
        os.rmdir(outdir)
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except run_bench.BenchError as e:
        sys.stderr.write("callgrind_point: %s\n" % e)
        sys.exit(1)
