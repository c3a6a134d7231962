#!/bin/bash
# Smoke test of the benchmark drivers (t/bench), so they cannot rot
# silently: run_bench.py --smoke runs the bench client with N=2 at 1k
# msgs/s against exsim directly, through the raw baseline, through exgate
# (and nginx when installed), for half a second each, plus one restore, a
# small memory hold and a short idle check. Asserts that every JSON line parses, that
# every fan-out run received messages with no sequence gap, and that the
# restore and hold runs completed. The numbers themselves are not judged:
# benchmarks are not tests.
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
"$PY" - "$tmp/out.jsonl" <<'PYEOF' || { tail -n 30 "$tmp/stdout" "$tmp/stderr"; exit 1; }
import json, sys
lines = open(sys.argv[1]).read().splitlines()
rs = [json.loads(l) for l in lines]          # every line must parse
def fail(msg):
    print("FAIL: " + msg)
    sys.exit(1)
fan = [r for r in rs if r["scenario"] == "fanout"]
systems = {r["system"] for r in fan}
for s in ("direct", "raw", "exgate"):
    if s not in systems:
        fail("no fan-out result for %s" % s)
for r in fan:
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
rest = [r for r in rs if r["scenario"] == "restore"]
if not rest or not rest[0]["ok"] or not rest[0]["cycles"] \
        or rest[0]["from_drop_ms_max"] <= 0:
    fail("restore: %r" % rest)
mem = [r for r in rs if r["scenario"] == "memory"]
if not mem or not mem[0]["ok"]:
    fail("memory: %r" % mem)
if not [r for r in rs if r["scenario"] == "idle" and r["ok"]]:
    fail("idle run missing")
print("PASS test_bench_smoke: %d JSON lines, %d fan-out runs (%s)"
      % (len(rs), len(fan), ", ".join(sorted(systems))))
PYEOF
