#!/bin/bash
# Smoke test of the benchmark drivers (t/bench), so they cannot rot
# silently: run_bench.py --smoke runs the limit probe (bench_limit) and the
# bench client against the probe's writer flat out with N=2, then the bench
# client with N=2 at 1k msgs/s against exsim directly, through the raw
# baseline, through exgate (and nginx when installed), for half a second
# each, plus one restore, a small memory hold and a short idle check.
# Asserts that every JSON line parses, that every fan-out run received
# messages with no sequence gap, that the probe ran, that every point
# carries the client's share of its core and the client-bound mark that
# follows from it (and that the table prints the mark), that exgate's and
# raw's send counters were read over the window, and that the restore and
# hold runs completed. The edge scenario (issue 17: a real redis-server, a
# core exgate publishing into it, an edge exgate reading it, bots on both
# in one window, then the core's publish throughput for half a second):
# both bots got every channel with no gap or close and an added latency
# is reported, the core published with nothing dropped, and the issue 17
# targets print; with no redis-server (BENCH_REDIS names another binary)
# the scenario must say it was skipped. Then before_after.py runs one
# round of each of two binaries (both the build's exgate) at a small
# point: both rounds read, the medians printed. The numbers themselves
# are not judged: benchmarks are not tests.
set -u
B=${XG_BUILDDIR:-.}
S=${XG_SRCDIR:-$(cd "$(dirname "$0")/../.." && pwd)}
PY=${PYTHON3:-/usr/bin/python3}
tmp=$(mktemp -d /tmp/xg-bench-smoke-XXXXXX)
trap 'rm -rf "$tmp"' EXIT

# the latency histogram against exact quantiles (within 1%)
if ! "$B/t/bench/bench_client" --selftest; then
    echo "FAIL: bench_client --selftest"
    exit 1
fi
if ! "$PY" "$S/t/bench/run_bench.py" --smoke --builddir "$B" \
    --out "$tmp/out.jsonl" > "$tmp/stdout" 2> "$tmp/stderr"; then
    echo "FAIL: run_bench.py --smoke exited non-zero"
    tail -n 30 "$tmp/stdout" "$tmp/stderr"
    exit 1
fi
REDIS=${BENCH_REDIS:-/usr/bin/redis-server}
"$PY" - "$tmp/out.jsonl" "$tmp/stdout" "$S/t/bench" "$REDIS" <<'PYEOF' || { tail -n 30 "$tmp/stdout" "$tmp/stderr"; exit 1; }
import json, sys
sys.path.insert(0, sys.argv[3])
import run_bench
lines = open(sys.argv[1]).read().splitlines()
table = open(sys.argv[2]).read()
rs = [json.loads(l) for l in lines]          # every line must parse
def fail(msg):
    print("FAIL: " + msg)
    sys.exit(1)
fan = [r for r in rs if r["scenario"] == "fanout"]
systems = {r["system"] for r in fan}
for s in ("limit", "client-cap", "direct", "raw", "exgate"):
    if s not in systems:
        fail("no fan-out result for %s" % s)
for r in fan:
    # the reader's share of its core, and the mark that follows from it
    busy = run_bench.client_busy(r)
    if busy is None or busy <= 0 or "client_bound" not in r:
        fail("%s: no client CPU share: %r" % (r["system"], r))
    if r["client_bound"] != (busy > run_bench.CLIENT_BOUND):
        fail("%s: client_bound %r with a share of %.3f"
             % (r["system"], r["client_bound"], busy))
    name = "limit" if r["system"] == "limit" else r["system"] + " "
    row = [l for l in table.splitlines() if l.startswith(name)]
    if not row or ("client-bound" in row[0]) != r["client_bound"]:
        fail("%s: the table's row %r does not show client_bound %r"
             % (r["system"], row[:1], r["client_bound"]))
    if r["system"] == "limit":
        if r.get("k") != run_bench.LIMIT_K or r.get("deliveries_per_s", 0) \
                <= 0 or not r.get("ok") or r["rate"] != 0:
            fail("limit probe: %r" % r)
        continue
    if r["system"] in ("exgate", "raw"):
        io = r.get("io") or {}
        if io.get("sends", 0) <= 0 or (io.get("msgs_per_send") or 0) < 1 \
                or sum(io.get("sends_by_messages", {}).values()) \
                != io["sends"] or io.get("up_reads", 0) <= 0:
            fail("%s: send counters over the window: %r" % (r["system"], io))
        # the ACKs the upstream socket sent: counted for both, and both
        # in the same TCP mode, an ACK a read at a fixed rate (raw's
        # socket, left "interactive", ACKed every second segment from
        # exsim's side, 0.5 a read, billed to exsim: docs/performance.md)
        acks = io.get("acks_per_read")
        if acks is None or acks < 0 or (r["rate"] and acks < 0.75):
            fail("%s: upstream ACKs per read %r" % (r["system"], acks))
    if not r.get("ok") or r.get("deliveries_per_s", 0) <= 0:
        fail("fan-out %s n=%s rate=%s received nothing: %r"
             % (r["system"], r["clients"], r["rate"], r))
    if r["gaps"] != 0 or r["closed"] != 0:
        fail("fan-out %s: gaps %s closed %s" % (r["system"], r["gaps"],
                                                r["closed"]))
    if r["lat_us"]["count"] <= 0 or r["lat_us"]["p50"] <= 0:
        fail("fan-out %s: no latency samples" % r["system"])
    if r["rate"] and r["latency_basis"] != "intended":
        fail("fan-out %s at a fixed rate: no intended-time latency"
             % r["system"])
# raw and exgate at the same moment: both ran, over the same point and
# round, each with its own CPU per delivery, and the table shows the pair
paired = [r for r in rs if r["scenario"] == "fanout_paired"]
if sorted(r["system"] for r in paired) != ["exgate", "raw"]:
    fail("at the same moment: want one raw and one exgate line: %r" % paired)
for r in paired:
    if not r.get("ok") or r.get("deliveries_per_s", 0) <= 0 \
            or not r.get("sut_cpu_s_per_m") or r["gaps"] or r["closed"]:
        fail("at the same moment, %s: %r" % (r["system"], r))
if len({(r["clients"], r["rate"], r["round"]) for r in paired}) != 1:
    fail("at the same moment: not one point and round: %r" % paired)
if "raw and exgate at the same moment" not in table:
    fail("the table has no line for the rounds at the same moment")
# the mark as the table prints it, on both sides of the line
class NoLimit:
    def limit_of(self, r):
        return None
for busy, bound in ((0.95, True), (0.5, False)):
    r = {"system": "exgate", "clients": 2, "rate": 0, "window_s": 1.0,
         "client_cpu_s": busy - 0.05, "client_wait_s": 0.05,
         "deliveries_per_s": 1, "gaps": 0, "closed": 0}
    run_bench.Bench.mark(None, r)
    if r["client_bound"] != bound or ("client-bound" in
            run_bench.Bench.row(NoLimit(), r)) != bound:
        fail("a point whose client ran or waited %.0f%% of the window: "
             "client_bound %r" % (100 * busy, r["client_bound"]))
rest = [r for r in rs if r["scenario"] == "restore"]
if not rest or not rest[0]["ok"] or not rest[0]["cycles"] \
        or rest[0]["from_drop_ms_max"] <= 0:
    fail("restore: %r" % rest)
mem = [r for r in rs if r["scenario"] == "memory"]
if not mem or not mem[0]["ok"]:
    fail("memory: %r" % mem)
if not [r for r in rs if r["scenario"] == "idle" and r["ok"]]:
    fail("idle run missing")
# the edge scenario (issue 17), or the note that it was skipped
import os
edge = [r for r in rs if r["scenario"] == "edge"]
if not os.access(sys.argv[4], os.X_OK):
    if edge or "edge scenario skipped" not in table:
        fail("no redis-server, and the edge scenario did not say skipped")
else:
    lat = [r for r in edge if r.get("kind") == "latency"]
    pub = [r for r in edge if r.get("kind") == "publish"]
    if not lat or not pub:
        fail("edge scenario: no latency or no publish result: %r" % edge)
    for r in lat:
        if not r.get("ok"):
            fail("edge latency point failed: %r" % r)
        for side in ("core", "edge"):
            x = r[side]
            if x["gaps"] != 0 or x["closed"] != 0 \
                    or x["channels_seen_min"] != r["channels"] \
                    or x["deliveries_per_s"] <= 0 \
                    or x["lat_us"]["count"] <= 0:
                fail("edge latency point, %s bot: %r" % (side, x))
        if "p99" not in r.get("added_us", {}) \
                or r["sys"].get("pub_published", 0) <= 0 \
                or r["sys"].get("edge_entries", 0) <= 0:
            fail("edge latency point: no added latency or counters: %r" % r)
    for r in pub:
        if not r.get("ok") or r["published_per_s"] <= 0 \
                or r["sys"].get("xadd_calls", 0) <= 0 \
                or (r["mode"] == "paced" and r["dropped_per_s"] != 0):
            fail("edge publish point: %r" % r)
    if "targets (issue 17)" not in table or "p99 added by an edge" \
            not in table:
        fail("the issue 17 targets are not printed")
print("PASS test_bench_smoke: %d JSON lines, %d fan-out runs (%s), "
      "%d edge runs" % (len(rs), len(fan), ", ".join(sorted(systems)),
                        len(edge)))
PYEOF

# before_after.py: one round each of two binaries (here both the build's
# exgate) at a small point; both rounds must be read and the medians print
if ! "$PY" "$S/t/bench/before_after.py" --builddir "$B" \
    --old "$B/src/exgate" --rounds 1 --clients 2 --rate 100 \
    --duration 0.5 --warmup 0.2 --out "$tmp/ba.jsonl" > "$tmp/ba.out" \
    2> "$tmp/ba.err"; then
    echo "FAIL: before_after.py exited non-zero"
    tail -n 20 "$tmp/ba.out" "$tmp/ba.err"
    exit 1
fi
"$PY" - "$tmp/ba.jsonl" "$tmp/ba.out" <<'PYEOF' || { cat "$tmp/ba.out"; exit 1; }
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
out = open(sys.argv[2]).read()
if sorted(r["binary"] for r in rows) != ["new", "old"]:
    sys.exit("FAIL: before_after.py: rounds %r" % rows)
for r in rows:
    for k in ("exgate_p99", "exgate_sent_p99", "raw_p99", "raw_sent_p99"):
        if not r[k] > 0:
            sys.exit("FAIL: before_after.py: %s in %r" % (k, r))
for w in ("median old", "median new"):
    if w not in out:
        sys.exit("FAIL: before_after.py printed no %r" % w)
print("PASS before_after.py: one round of each binary")
PYEOF
# bad arguments: a clear error and exit 2, no run
"$PY" "$S/t/bench/before_after.py" --builddir "$B" --old "$B/src/exgate" \
    --rounds 0 > "$tmp/ba0.out" 2>&1
rc=$?
if [ "$rc" != 2 ] || ! grep -q "must be at least 1" "$tmp/ba0.out"; then
    echo "FAIL: before_after.py --rounds 0: exit $rc"
    cat "$tmp/ba0.out"
    exit 1
fi
echo "PASS before_after.py refuses --rounds 0"
