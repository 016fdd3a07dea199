#!/usr/bin/env bash
# Device utilisation with a real-time load at about half of capacity, with and without a
# deferred job soaking up the rest, and the real-time latency beside it (BENCHMARKS.md,
# "Deferred jobs on idle capacity").
#
# The release gateway serves the bundled `slow` model (about 3 ms of compute a row, one
# instance, no batching, no cache). Capacity is measured first (closed loop, 4 workers); then
# rounds of two sides by turns, each an open loop (Poisson) at half that rate for DURATION:
#   alone   the real-time load by itself
#   job     the same load while a deferred job of many rows runs (cancelled after the side)
# Utilisation is the growth of tollgate_device_busy_seconds_total over the side, divided by its
# wall time. Latency is tollgate-loadtest's (it corrects for coordinated omission).
#
# Usage: scripts/bench_deferred.sh [--rounds N] [--duration S]   (defaults 2 and 15)
# Results: target/bench-deferred/ (one JSON report per side, summary.md).
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=2
DURATION=15
while [ $# -gt 0 ]; do
    case "$1" in
        --rounds) ROUNDS="${2:?--rounds needs a number}"; shift ;;
        --duration) DURATION="${2:?--duration needs seconds}"; shift ;;
        -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d'; exit 0 ;;
        *) echo "bench_deferred.sh: unknown argument $1 (try --help)" >&2; exit 2 ;;
    esac
    shift
done
OUT=target/bench-deferred
rm -rf "$OUT"
mkdir -p "$OUT"
cargo build --release --bin tollgate >/dev/null
cargo build --release -p tollgate-loadtest >/dev/null
free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
http=$(free_port)
cat >"$OUT/gateway.toml" <<EOF
[server]
http_addr = "127.0.0.1:$http"
grpc_addr = "127.0.0.1:$(free_port)"
[ledger]
path = "$PWD/$OUT/ledger.sqlite"
[deferred]
batch_rows = 4
max_rows_per_tenant = 1000000
[[models]]
name = "slow"
path = "$PWD/models/slow/1/model.onnx"
max_batch_size = 0
cache = false
max_queue_size = 100000
EOF
./target/release/tollgate serve --config "$OUT/gateway.toml" >"$OUT/gateway.log" 2>&1 &
gateway=$!
trap 'kill "$gateway" 2>/dev/null || true' EXIT
for _ in $(seq 1 240); do
    curl -fsS -o /dev/null "http://127.0.0.1:$http/v2/models/slow/ready" 2>/dev/null && break
    sleep 0.5
done
LOAD=./target/release/tollgate-loadtest
busy() {
    curl -fsS "http://127.0.0.1:$http/metrics" |
        awk '/^tollgate_device_busy_seconds_total\{model="slow"/ {s += $2} END {printf "%.6f", s}'
}
$LOAD --target "127.0.0.1:$http" --model slow --concurrency 4 --duration 5s --warmup 1s \
    --no-progress --json "$OUT/capacity.json" >/dev/null
capacity=$(python3 -c "import json; print(json.load(open('$OUT/capacity.json'))['requests_per_s'])")
rate=$(python3 -c "print(round($capacity / 2, 1))")
echo "capacity ${capacity} req/s; real-time load ${rate} req/s (open loop, Poisson)"

side() { # side NAME ROUND
    local name=$1 round=$2 job=""
    if [ "$name" = job ]; then
        job=$(python3 - "$http" <<'PY'
import json, sys, urllib.request
rows = [{"inputs": [{"name": "x", "shape": [1, 256], "datatype": "FP32",
                     "data": [[i % 97] * 256]}]} for i in range(20000)]
body = json.dumps({"model": "slow", "requests": rows}).encode()
request = urllib.request.Request(f"http://127.0.0.1:{sys.argv[1]}/v1/batches", data=body,
                                 headers={"Content-Type": "application/json"}, method="POST")
print(json.load(urllib.request.urlopen(request, timeout=120))["id"])
PY
)
        sleep 1
    fi
    local before after started ended done_before done_after
    done_before=$( [ -n "$job" ] && curl -fsS "http://127.0.0.1:$http/v1/batches/$job" | python3 -c 'import json,sys; print(json.load(sys.stdin)["completed"])' || echo 0)
    before=$(busy); started=$(date +%s.%N)
    $LOAD --target "127.0.0.1:$http" --model slow --rate "$rate" --duration "${DURATION}s" \
        --no-progress --json "$OUT/${name}_r${round}.json" >/dev/null
    after=$(busy); ended=$(date +%s.%N)
    done_after=$( [ -n "$job" ] && curl -fsS "http://127.0.0.1:$http/v1/batches/$job" | python3 -c 'import json,sys; print(json.load(sys.stdin)["completed"])' || echo 0)
    if [ -n "$job" ]; then
        curl -fsS -X DELETE "http://127.0.0.1:$http/v1/batches/$job" >/dev/null
        sleep 1
    fi
    python3 - "$OUT/${name}_r${round}.json" "$before" "$after" "$started" "$ended" "$done_before" "$done_after" <<'PY'
import json, sys
path, before, after, started, ended, d0, d1 = sys.argv[1:]
report = json.load(open(path))
wall = float(ended) - float(started)
report["bench"] = {"utilisation": (float(after) - float(before)) / wall,
                   "job_rows": int(d1) - int(d0), "wall_s": wall}
json.dump(report, open(path, "w"))
PY
    echo "  ${name} r${round}: utilisation $(python3 -c "import json; print(round(json.load(open('$OUT/${name}_r${round}.json'))['bench']['utilisation'], 3))")"
}
for round in $(seq 1 "$ROUNDS"); do
    if [ $((round % 2)) -eq 1 ]; then side alone "$round"; side job "$round"
    else side job "$round"; side alone "$round"; fi
done
python3 - "$OUT" "$ROUNDS" "$capacity" "$rate" <<'PY' | tee "$OUT/summary.md"
import json, statistics, sys
out, rounds, capacity, rate = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4])
print(f"slow model, capacity {capacity:.0f} req/s, real-time load {rate:.0f} req/s, {rounds} rounds\n")
print("| side | device utilisation | real-time req/s | p50 ms | p99 ms | job rows/s |")
print("|---|---|---|---|---|---|")
for side in ("alone", "job"):
    runs = [json.load(open(f"{out}/{side}_r{r}.json")) for r in range(1, rounds + 1)]
    med = lambda f: statistics.median(f(r) for r in runs)
    print(f"| {side} | {med(lambda r: r['bench']['utilisation']):.3f} "
          f"| {med(lambda r: r['requests_per_s']):.1f} "
          f"| {med(lambda r: r['latency_ms']['p50']):.2f} | {med(lambda r: r['latency_ms']['p99']):.2f} "
          f"| {med(lambda r: r['bench']['job_rows'] / r['bench']['wall_s']):.1f} |")
PY
