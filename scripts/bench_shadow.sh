#!/usr/bin/env bash
# What shadow evaluation adds to the primary's answers (BENCHMARKS.md, "Shadow evaluation"):
# two release gateways serve digits with its int8 variant, one with shadow_sample_ratio = 1.0
# (every request also runs on the variant, in the deferred lane) and one without; the cache is
# off so that every request computes. tollgate-loadtest drives each in open loop (Poisson) at
# RATE for DURATION, by turns (plain, shadow, shadow, plain, ...), and the medians are compared.
#
# Usage: scripts/bench_shadow.sh [--rounds N] [--duration S] [--rate R]   (defaults 3, 10, 1500)
# Results: target/bench-shadow/ (one JSON report per side and round, summary.md).
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=3
DURATION=10
RATE=1500
while [ $# -gt 0 ]; do
    case "$1" in
        --rounds) ROUNDS="${2:?--rounds needs a number}"; shift ;;
        --duration) DURATION="${2:?--duration needs seconds}"; shift ;;
        --rate) RATE="${2:?--rate needs requests per second}"; shift ;;
        -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d'; exit 0 ;;
        *) echo "bench_shadow.sh: unknown argument $1 (try --help)" >&2; exit 2 ;;
    esac
    shift
done
OUT=target/bench-shadow
rm -rf "$OUT"
mkdir -p "$OUT"
cargo build --release --bin tollgate >/dev/null
cargo build --release -p tollgate-loadtest >/dev/null
free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
declare -A PORT
pids=()
trap 'kill "${pids[@]}" 2>/dev/null || true' EXIT
for side in plain shadow; do
    PORT[$side]=$(free_port)
    ratio=0.0
    [ "$side" = shadow ] && ratio=1.0
    cat >"$OUT/$side.toml" <<EOF
[server]
http_addr = "127.0.0.1:${PORT[$side]}"
grpc_addr = "127.0.0.1:$(free_port)"
[cache]
enabled = false
[ledger]
path = "$PWD/$OUT/$side.sqlite"
[[models]]
name = "digits"
path = "$PWD/models/digits/1/model.onnx"
max_batch_size = 64
max_queue_delay_us = 500
shadow_sample_ratio = $ratio
[[models.variants]]
name = "int8"
path = "$PWD/models/digits/1/model.int8.onnx"
EOF
    ./target/release/tollgate serve --config "$OUT/$side.toml" >"$OUT/$side.log" 2>&1 &
    pids+=($!)
done
for side in plain shadow; do
    for _ in $(seq 1 240); do
        curl -fsS -o /dev/null "http://127.0.0.1:${PORT[$side]}/v2/models/digits/ready" 2>/dev/null && break
        sleep 0.5
    done
done
run() { # run SIDE ROUND
    ./target/release/tollgate-loadtest --target "127.0.0.1:${PORT[$1]}" --model digits \
        --rate "$RATE" --duration "${DURATION}s" --warmup 1s --distinct 5000 --seed "$2" \
        --no-progress --json "$OUT/$1_r$2.json" >/dev/null
}
for round in $(seq 1 "$ROUNDS"); do
    if [ $((round % 2)) -eq 1 ]; then run plain "$round"; run shadow "$round"
    else run shadow "$round"; run plain "$round"; fi
done
shadowed=$(curl -fsS "http://127.0.0.1:${PORT[shadow]}/v1/rightsizing" |
    python3 -c 'import json,sys; m=json.load(sys.stdin)["models"][0]; print(m["variants"][1]["samples"], m["variants"][1]["agreement"])')
python3 - "$OUT" "$ROUNDS" "$RATE" "$shadowed" <<'PY' | tee "$OUT/summary.md"
import json, statistics, sys
out, rounds, rate, shadowed = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), sys.argv[4]
print(f"digits with an int8 variant, cache off, open loop at {rate:.0f} req/s, {rounds} rounds by turns")
print(f"shadowed rows (samples, agreement) on the shadow side: {shadowed}\n")
print("| side | req/s | p50 ms | p90 ms | p99 ms |")
print("|---|---|---|---|---|")
for side in ("plain", "shadow"):
    runs = [json.load(open(f"{out}/{side}_r{r}.json")) for r in range(1, rounds + 1)]
    med = lambda f: statistics.median(f(r) for r in runs)
    print(f"| {side} | {med(lambda r: r['requests_per_s']):.1f} | {med(lambda r: r['latency_ms']['p50']):.3f} "
          f"| {med(lambda r: r['latency_ms']['p90']):.3f} | {med(lambda r: r['latency_ms']['p99']):.3f} |")
PY
