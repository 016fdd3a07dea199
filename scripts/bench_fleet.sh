#!/usr/bin/env bash
# Fleet benchmarks, both sides of each comparison in this one invocation (BENCHMARKS.md, "Fleet
# state"):
#
#   budgets   cache-off digits through one replica for a budgeted tenant, fleet budgets on
#             (`fleet.redis_url`) vs off, run by turns (A B, B A, ...): req/s and latency from
#             our load generator and from wrk (which costs little, so the server's cost shows)
#   crosshit  two replicas sharing a Redis cache tier: replica A computes N inputs, then
#             replica B is sent the same N in the same order (each a memory miss and a Redis hit),
#             then again (memory hits); latency of each pass at concurrency 1, and the Redis GET
#             round trip as the gateway timed it
#
# Usage: scripts/bench_fleet.sh [--runs N] [--duration S] [--distinct N] [--no-build]
# Results: target/bench-fleet/ (one JSON or text file per run, summary.md).
# Needs redis-server and wrk (`make redis wrk`). Binds 127.0.0.1 only; stops what it starts.
set -euo pipefail
cd "$(dirname "$0")/.."

OUT="${TOLLGATE_BENCH_OUT:-target/bench-fleet}"
RUNS=3
DURATION=10
DISTINCT=2000
BUILD=1
CONCURRENCY=32
while [ $# -gt 0 ]; do
    case "$1" in
        --runs) RUNS="${2:?--runs needs a number}"; shift ;;
        --duration) DURATION="${2:?--duration needs seconds}"; shift ;;
        --distinct) DISTINCT="${2:?--distinct needs a number}"; shift ;;
        --no-build) BUILD=0 ;;
        -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d'; exit 0 ;;
        *) echo "bench_fleet.sh: unknown argument $1 (try --help)" >&2; exit 2 ;;
    esac
    shift
done
for tool in redis-server wrk curl python3; do
    command -v "$tool" >/dev/null || { echo "bench_fleet.sh: $tool is missing (make redis wrk)" >&2; exit 1; }
done

ORT_LIB=$(ls .runtime/onnxruntime/capi/libonnxruntime.so.* 2>/dev/null | head -1 || true)
[ -n "$ORT_LIB" ] || { echo "bench_fleet.sh: no ONNX Runtime library; run make runtime" >&2; exit 1; }
export ORT_DYLIB_PATH="$PWD/$ORT_LIB"
if [ "$BUILD" = 1 ]; then
    timeout 1800 cargo build --release -p tollgate -p tollgate-loadtest --bins
fi
rm -rf "$OUT"
mkdir -p "$OUT/bin"
# Private copies: nothing measured here changes if target/release is rebuilt meanwhile.
cp target/release/tollgate target/release/tollgate-loadtest "$OUT/bin/"
GATEWAY="$OUT/bin/tollgate"
LOADTEST="$OUT/bin/tollgate-loadtest"

PIDS=()
cleanup() {
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
    rm -f "$OUT"/*.sqlite*
}
trap cleanup EXIT
free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
wait_http() { # URL SECONDS
    for _ in $(seq 1 $(($2 * 10))); do curl -sf -o /dev/null "$1" && return 0; sleep 0.1; done
    echo "bench_fleet.sh: $1 did not answer" >&2; return 1
}

REDIS_PORT=$(free_port)
redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save '' --appendonly no >"$OUT/redis.log" 2>&1 &
PIDS+=($!)
for _ in $(seq 1 50); do redis-cli -p "$REDIS_PORT" ping >/dev/null 2>&1 && break; sleep 0.1; done
REDIS="redis://127.0.0.1:$REDIS_PORT"
KEY=bench-key
KEY_HASH=$(printf %s "$KEY" | "$GATEWAY" hash-key)

# config NAME EXTRA: a config file in $OUT whose EXTRA sections come first.
config() {
    cat >"$OUT/$1.toml" <<EOF
$2

[ledger]
path = "$1.sqlite"

[[models]]
name = "digits"
path = "../../models/digits/1/model.onnx"
instances = 1
intra_op_threads = 1
max_batch_size = 64
max_queue_delay_us = 1000

[[tenants]]
name = "bench"
api_key_blake3 = "$KEY_HASH"
budget_usd = 1000.0
budget_period = "day"
budget_action = "reject"
EOF
}

# start NAME: serves $OUT/NAME.toml; its HTTP address goes into the variable NAME.
start() {
    local http grpc
    http=$(free_port); grpc=$(free_port)
    "$GATEWAY" serve --config "$OUT/$1.toml" --http-addr "127.0.0.1:$http" --grpc-addr "127.0.0.1:$grpc" >"$OUT/$1.log" 2>&1 &
    PIDS+=($!)
    printf -v "$1" '%s' "127.0.0.1:$http"
    wait_http "http://127.0.0.1:$http/v2/health/ready" 60 || { tail -20 "$OUT/$1.log" >&2; exit 1; }
}

# loadtest NAME TARGET FLAGS...
loadtest() {
    local name=$1 target=$2
    shift 2
    TOLLGATE_API_KEY=$KEY "$LOADTEST" --target "$target" --model digits --no-progress \
        --json "$OUT/$name.json" "$@" >"$OUT/$name.txt" 2>&1 \
        || { echo "bench_fleet.sh: $name failed:" >&2; tail -5 "$OUT/$name.txt" >&2; exit 1; }
    grep -E '^(throughput|latency)' "$OUT/$name.txt" | sed "s/^/  $name: /"
}

# wrk_run NAME TARGET: one body, POSTed by 2 threads over $CONCURRENCY connections.
wrk_run() {
    wrk -t2 -c"$CONCURRENCY" -d"${DURATION}s" --latency -s "$OUT/post.lua" \
        "http://$2/v2/models/digits/infer" >"$OUT/$1.wrk" 2>&1
    if grep -q 'Non-2xx' "$OUT/$1.wrk"; then
        echo "bench_fleet.sh: $1 got error answers:" >&2; cat "$OUT/$1.wrk" >&2; exit 1
    fi
    grep -E 'Requests/sec' "$OUT/$1.wrk" | sed "s/^/  $1: /"
}

{
    echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
    echo "nproc: $(nproc); cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')"
    echo "source: $(git describe --always --dirty 2>/dev/null || echo unknown)"
    echo "runs per side: $RUNS, duration ${DURATION}s, concurrency $CONCURRENCY; redis-server $(redis-server --version | grep -o 'v=[^ ]*')"
} | tee "$OUT/machine.txt"

# ---- budgets: fleet budgets on vs off, cache off ------------------------------------------
printf '\n== budgets: cache-off digits, tenant with a $1000/day budget, fleet budgets on vs off\n'
config local "[cache]
enabled = false"
config fleet "[cache]
enabled = false

[fleet]
redis_url = \"$REDIS\""
start local
start fleet
python3 - "$local" "$KEY" "$OUT/post.lua" <<'PY'
import json, sys, urllib.request
target, key, out = sys.argv[1:]
meta = json.load(urllib.request.urlopen(f"http://{target}/v2/models/digits"))
tensor = meta["inputs"][0]
width = tensor["shape"][-1]
body = {"inputs": [{"name": tensor["name"], "datatype": tensor["datatype"], "shape": [1, width],
                    "data": [float(i % 16) for i in range(width)]}]}
with open(out, "w") as f:
    f.write('wrk.method = "POST"\n')
    f.write('wrk.headers["Content-Type"] = "application/json"\n')
    f.write(f'wrk.headers["Authorization"] = "Bearer {key}"\n')
    f.write(f"wrk.body = [[{json.dumps(body)}]]\n")
PY
FLAGS="--concurrency $CONCURRENCY --duration ${DURATION}s --warmup 2s --distinct 1000 --seed 2"
for run in $(seq 1 "$RUNS"); do
    order="local fleet"
    [ $((run % 2)) = 0 ] && order="fleet local"
    for side in $order; do
        # shellcheck disable=SC2086
        loadtest "budgets_${side}_r$run" "${!side}" $FLAGS
        wrk_run "budgets_${side}_wrk_r$run" "${!side}"
    done
done
curl -sf "http://$fleet/metrics" >"$OUT/budgets_fleet.metrics"

# ---- crosshit: a memory miss that Redis answers ---------------------------------------------
printf '\n== crosshit: %s inputs computed on replica A, then sent to replica B twice, c=1\n' "$DISTINCT"
config replica_a "[cache]
redis_url = \"$REDIS/1\""
config replica_b "[cache]
redis_url = \"$REDIS/1\""
start replica_a
start replica_b
ONE="--concurrency 1 --distinct $DISTINCT --requests $DISTINCT --sequential"
for run in $(seq 1 "$RUNS"); do
    redis-cli -p "$REDIS_PORT" -n 1 flushdb >/dev/null
    # A new seed each run: inputs no earlier run computed, in neither replica's memory.
    loadtest "crosshit_computed_r$run" "$replica_a" $ONE --seed $((100 + run))
    # Fills reach Redis in the background; wait until every one has.
    for _ in $(seq 1 100); do
        [ "$(redis-cli -p "$REDIS_PORT" -n 1 dbsize)" -ge "$DISTINCT" ] && break
        sleep 0.1
    done
    loadtest "crosshit_redis_r$run" "$replica_b" $ONE --seed $((100 + run))
    loadtest "crosshit_memory_r$run" "$replica_b" $ONE --seed $((100 + run))
done
curl -sf "http://$replica_b/metrics" >"$OUT/crosshit_b.metrics"

# ---- summary ----------------------------------------------------------------------------------
python3 - "$OUT" "$RUNS" <<'PY' | tee "$OUT/summary.md"
import json, pathlib, re, statistics, sys
out, runs = pathlib.Path(sys.argv[1]), int(sys.argv[2])
def lt(name):
    return [json.loads((out / f"{name}_r{r}.json").read_text()) for r in range(1, runs + 1)]
def med(values):
    return statistics.median(values)
def ms(text):
    value, unit = re.match(r"([\d.]+)(us|ms|s)", text).groups()
    return float(value) * {"us": 1e-3, "ms": 1.0, "s": 1e3}[unit]
def wrk(name):
    rows = []
    for r in range(1, runs + 1):
        text = (out / f"{name}_r{r}.wrk").read_text()
        rps = float(re.search(r"Requests/sec:\s+([\d.]+)", text).group(1))
        p50 = ms(re.search(r"^\s+50%\s+(\S+)", text, re.M).group(1))
        p99 = ms(re.search(r"^\s+99%\s+(\S+)", text, re.M).group(1))
        rows.append((rps, p50, p99))
    return rows
def metric(path, name, labels):
    total = 0.0
    for line in (out / path).read_text().splitlines():
        if line.startswith(name + "{") and all(l in line for l in labels):
            total += float(line.rsplit(" ", 1)[1])
    return total

print(f"\n## budgets (median of {runs} runs per side, run by turns)\n")
print("| side | loadtest req/s | p50 ms | p99 ms | errors | wrk req/s | wrk p50 ms | wrk p99 ms |")
print("|---|---|---|---|---|---|---|---|")
figures = {}
for side in ("local", "fleet"):
    runs_lt = lt(f"budgets_{side}")
    runs_wrk = wrk(f"budgets_{side}_wrk")
    figures[side] = (med([r["requests_per_s"] for r in runs_lt]), med([w[0] for w in runs_wrk]))
    print(f"| {side} | {figures[side][0]:,.0f} | {med([r['latency_ms']['p50'] for r in runs_lt]):.2f} | "
          f"{med([r['latency_ms']['p99'] for r in runs_lt]):.2f} | {sum(r['errors_total'] for r in runs_lt)} | "
          f"{figures[side][1]:,.0f} | {med([w[1] for w in runs_wrk]):.2f} | {med([w[2] for w in runs_wrk]):.2f} |")
print(f"\nfleet/local: loadtest {figures['fleet'][0] / figures['local'][0]:.3f}x, wrk {figures['fleet'][1] / figures['local'][1]:.3f}x")
calls = metric("budgets_fleet.metrics", "tollgate_redis_calls_total", ['role="fleet"'])
print(f"fleet replica's Redis calls over the whole section: {calls:.0f} "
      f"(grants {metric('budgets_fleet.metrics', 'tollgate_fleet_budget_grants_total', []):.0f}, "
      f"reports {metric('budgets_fleet.metrics', 'tollgate_fleet_budget_reports_total', []):.0f})")

print(f"\n## crosshit (median of {runs} runs; each run {lt('crosshit_redis')[0]['ok']} requests at c=1)\n")
print("| pass | p50 ms | p90 ms | p99 ms | mean ms |")
print("|---|---|---|---|---|")
for name, label in (("crosshit_computed", "replica A: computed (memory and Redis miss)"),
                    ("crosshit_redis", "replica B: memory miss, Redis hit"),
                    ("crosshit_memory", "replica B again: memory hit")):
    r = lt(name)
    print(f"| {label} | " + " | ".join(f"{med([x['latency_ms'][k] for x in r]):.3f}" for k in ("p50", "p90", "p99", "mean")) + " |")
count = metric("crosshit_b.metrics", "tollgate_redis_call_duration_seconds_count", ['role="cache"', 'op="get"'])
total = metric("crosshit_b.metrics", "tollgate_redis_call_duration_seconds_sum", ['role="cache"', 'op="get"'])
hits = metric("crosshit_b.metrics", "tollgate_cache_requests_total", ['tier="redis"', 'status="hit"'])
if count:
    print(f"\nreplica B: {hits:.0f} Redis hits; Redis GET round trip as the gateway timed it, mean {1000 * total / count:.3f} ms over {count:.0f} calls")
PY
