#!/usr/bin/env bash
# The latency cost of `ledger.durability = "sync"` against "async": the same release gateway and
# load, the digits model with the cache off, alternating runs. Prints medians; writes
# target/bench/ledger_<mode>_r<N>.json. Usage: scripts/bench_ledger.sh [runs] [seconds]
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-3}
seconds=${2:-5}
out=target/bench
mkdir -p "$out"
work=$(mktemp -d)
pid=""
trap '[ -n "$pid" ] && kill "$pid" 2>/dev/null; rm -rf "$work"' EXIT

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

run() { # MODE RUN
    local mode=$1 run=$2 port
    port=$(free_port)
    cat >"$work/$mode.toml" <<TOML
[server]
http_addr = "127.0.0.1:$port"
grpc_addr = "127.0.0.1:0"
[cache]
enabled = false
[ledger]
path = "$work/$mode-$run.sqlite"
durability = "$mode"
[[models]]
name = "digits"
path = "$PWD/models/digits/1/model.onnx"
max_batch_size = 32
max_queue_delay_us = 500
TOML
    target/release/tollgate serve --config "$work/$mode.toml" >"$work/$mode.log" 2>&1 &
    pid=$!
    for _ in $(seq 1 100); do
        grep -q serving "$work/$mode.log" && break
        sleep 0.1
    done
    timeout $((seconds + 60)) target/release/tollgate-loadtest --target "127.0.0.1:$port" --model digits \
        --protocol http-binary --concurrency 16 --duration "${seconds}s" --warmup 1s --distinct 1000 \
        --no-progress --json "$out/ledger_${mode}_r$run.json" >/dev/null
    kill -TERM "$pid"
    wait "$pid" || true
    pid=""
}

for run in $(seq 1 "$runs"); do
    if [ $((run % 2)) -eq 1 ]; then run async "$run"; run sync "$run"; else run sync "$run"; run async "$run"; fi
done

python3 - "$out" "$runs" <<'PY'
import json, statistics, sys
out, runs = sys.argv[1], int(sys.argv[2])
rows = {}
for mode in ("async", "sync"):
    reports = [json.load(open(f"{out}/ledger_{mode}_r{r}.json")) for r in range(1, runs + 1)]
    rows[mode] = {k: statistics.median(v) for k, v in {
        "req_s": [r["requests_per_s"] for r in reports],
        "p50_ms": [r["latency_ms"]["p50"] for r in reports],
        "p99_ms": [r["latency_ms"]["p99"] for r in reports],
        "errors": [r["errors_total"] for r in reports],
    }.items()}
print("| durability | req/s | p50 ms | p99 ms | errors |")
print("| --- | --- | --- | --- | --- |")
for mode, row in rows.items():
    print(f"| {mode} | {row['req_s']:,.0f} | {row['p50_ms']:.3f} | {row['p99_ms']:.3f} | {row['errors']:.0f} |")
a, s = rows["async"], rows["sync"]
print(f"\nsync / async: req/s {s['req_s'] / a['req_s']:.3f}, p50 {s['p50_ms'] / a['p50_ms']:.2f}x, p99 {s['p99_ms'] / a['p99_ms']:.2f}x")
PY
