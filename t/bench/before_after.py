#!/usr/bin/env python3
"""One fan-out point with two exgate binaries, their rounds alternating.

A target written as "not worse than today" (issue 16's p99 at 1k msgs/s x
100 clients: "1.2 ms") names a figure from one morning's run, and a p99 on
this shared machine moves by half from one hour to the next: raw's own
p99 at that point read 1044 to 1827 us in one hour of 2026-12-05. What the
target asks is whether the code got worse, and that is measured by running
the code of then and the code of now in the same hour, round for round:
OLD, NEW, OLD, NEW, ... each round a run of run_bench.py's point (raw then
exgate, each on a fresh exsim subscription, as `make bench` runs it) with
BENCH_EXGATE set to the binary. The build's own bench tools and exsim are
used for both, so only exgate differs.

Usage: before_after.py --old PATH [--new PATH] [--builddir DIR]
                       [--clients 100] [--rate 1000] [--rounds 6]
                       [--duration 4] [--warmup 0.5] [--out FILE]

PATH is an exgate binary; --new defaults to the build's src/exgate. An
older commit's binary is built the usual way in a clone of its own, e.g.
  git clone -q . /tmp/old && cd /tmp/old && git checkout -q COMMIT &&
  autoreconf -fi && ./configure -q && make -j2 src/exgate
Prints each round's p99 (intended and sent basis) for exgate and for the
raw baseline run beside it, then the medians per binary, and with --out
writes the result lines as JSON.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))


def one_round(a, binary, out):
    env = dict(os.environ, BENCH_EXGATE=binary)
    cmd = [sys.executable, os.path.join(HERE, "run_bench.py"),
           "--builddir", a.builddir, "--only", "fanout",
           "--clients", str(a.clients), "--rates", str(a.rate),
           "--systems", "raw,exgate", "--repeat", "1",
           "--paired-rounds", "0", "--duration", str(a.duration),
           "--warmup", str(a.warmup), "--out", out]
    r = subprocess.run(cmd, env=env, stdout=subprocess.DEVNULL,
                       stderr=subprocess.PIPE, text=True)
    if r.returncode != 0:
        raise SystemExit("run_bench.py failed (%d): %s"
                         % (r.returncode, r.stderr[-500:]))
    got = {}
    with open(out) as f:
        for line in f:
            if not line.startswith("{"):
                continue
            o = json.loads(line)
            if o.get("scenario") == "fanout" and o.get("ok") \
                    and o.get("clients") == a.clients \
                    and o.get("rate") == a.rate:
                got[o["system"]] = o
    for system in ("raw", "exgate"):
        o = got.get(system)
        if o is None:
            raise SystemExit("no %s result in %s" % (system, out))
        if o.get("gaps") or o.get("closed"):
            raise SystemExit("%s lost messages or clients: %r"
                             % (system, o))
    return got


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--old", required=True)
    ap.add_argument("--new")
    ap.add_argument("--builddir", default=os.getcwd())
    ap.add_argument("--clients", type=int, default=100)
    ap.add_argument("--rate", type=int, default=1000)
    ap.add_argument("--rounds", type=int, default=6)
    ap.add_argument("--duration", type=float, default=4.0)
    ap.add_argument("--warmup", type=float, default=0.5)
    ap.add_argument("--out")
    a = ap.parse_args()
    if a.rounds < 1 or a.clients < 1 or a.rate < 1 or a.duration <= 0:
        ap.error("--rounds, --clients and --rate must be at least 1, "
                 "--duration over 0 (a fixed-rate point: p99 on the "
                 "intended-time basis)")
    a.builddir = os.path.abspath(a.builddir)
    new = a.new or os.path.join(a.builddir, "src", "exgate")
    bins = {"old": os.path.abspath(a.old), "new": os.path.abspath(new)}
    for k, p in bins.items():
        if not os.access(p, os.X_OK):
            raise SystemExit("%s: not an executable: %s" % (k, p))
    tmp = tempfile.mkdtemp(prefix="xg-ba-")
    res = {"old": [], "new": []}
    lines = []
    print("round  binary  exgate p99 (sent)   raw p99 (sent)   us, "
          "%d clients at %d msgs/s" % (a.clients, a.rate))
    for rnd in range(1, a.rounds + 1):
        for which in ("old", "new"):
            got = one_round(a, bins[which],
                            os.path.join(tmp, "%s-%d.json" % (which, rnd)))
            e, r = got["exgate"], got["raw"]
            row = {"round": rnd, "binary": which, "path": bins[which],
                   "exgate_p99": e["lat_us"]["p99"],
                   "exgate_sent_p99": e["lat_sent_us"]["p99"],
                   "raw_p99": r["lat_us"]["p99"],
                   "raw_sent_p99": r["lat_sent_us"]["p99"]}
            res[which].append(row)
            lines.append(row)
            print("%5d  %-6s  %6.0f (%6.0f)     %6.0f (%6.0f)" % (
                rnd, which, row["exgate_p99"], row["exgate_sent_p99"],
                row["raw_p99"], row["raw_sent_p99"]), flush=True)
    for which in ("old", "new"):
        rows = res[which]

        def med(k):
            return statistics.median(x[k] for x in rows)
        print("median %-4s exgate p99 %.0f us (%.0f..%.0f), sent %.0f; "
              "raw beside it %.0f us, sent %.0f" % (
                  which, med("exgate_p99"),
                  min(x["exgate_p99"] for x in rows),
                  max(x["exgate_p99"] for x in rows),
                  med("exgate_sent_p99"), med("raw_p99"),
                  med("raw_sent_p99")))
    if a.out:
        with open(a.out, "w") as f:
            for row in lines:
                f.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()
