#!/usr/bin/env bash
# Tollgate's side-by-side benchmarks (see BENCHMARKS.md for what each figure means).
#
# Every comparison runs both sides in this one invocation, with the same load generator settings,
# alternating the order run by run (A B, B A, ...), and reports the median of the runs: on a small
# shared machine absolute numbers drift, ratios measured side by side drift much less.
#
#   a  cache hit over HTTP: gateway (one distinct input) vs a fixed-answer hyper server
#   b  overhead-bound digits, cache off: gateway vs the fixed server; batching on vs off
#   c  cache miss overhead: cache on with all-distinct inputs vs cache off, in a cache that grows
#      (emptied before each run), in one held full (a second gateway, 16 MiB, filled first) and
#      with cache_min_uses = 2 (a first computation is stored nowhere)
#      and, at a fixed offered rate (open loop), the latency and CPU of the cache-on and -off sides
#   d  compute-bound AlexNet: gateway rows/s vs ONNX Runtime called in-process (criterion bench)
#   e  Zipf workload: device-seconds per 1,000 requests, cache + batching vs a naive config,
#      and the load generator's hit ratio against the gateway's /metrics
#   f  peers (Triton via nvidia-pytriton, MLServer) when installed under .peers/: scripts/peers/c32.sh
#   g  the gRPC front end beside HTTP: cache-hit latency at concurrency 1 and req/s at 32, and a
#      lone miss's latency under the shipped batching (max 64, 1 ms delay: the delay's precision)
#
# Usage: scripts/bench.sh [--quick] [--runs N] [--only a,b,c,d,e,f,g] [--threads N] [--criterion]
#                         [--no-build]
#   --quick      shorter runs (4 s instead of 10 s: about half the time of the full run, ~20 min)
#   --runs N     runs per side (default 3; medians are reported)
#   --only LIST  run only these sections
#   --threads N  serve with N worker threads, in the digits gateway (server.worker_threads)
#                and in the fixed server alike (default: both take one per core)
#   --criterion  also run the criterion micro-benchmarks and add their key figures
#   --no-build   use the binaries already in target/release
# Results: target/bench/*.json (one per load run), target/bench/summary.{json,md}.
# The usage ledgers the gateways write (a record per request: 1-2 GB for a/b/c) are removed on
# exit; set TOLLGATE_BENCH_KEEP_LEDGERS=1 to keep them for inspection.
# The machine may be shared: each run waits (bounded) for idle CPUs, records how much CPU other
# processes used during it, and is run once more if that was over 15 %.
# Everything binds 127.0.0.1 only; every process started here is stopped on exit.
set -euo pipefail
cd "$(dirname "$0")/.."

OUT="${TOLLGATE_BENCH_OUT:-target/bench}"   # bench_compare.sh gives each side a folder of its own
RUNS=3
QUICK=0
ONLY="a,b,c,d,e,f,g"
CRITERION=0
BUILD=1
THREADS=""
while [ $# -gt 0 ]; do
    case "$1" in
        --quick) QUICK=1 ;;
        --runs) RUNS="${2:?--runs needs a number}"; shift ;;
        --only) ONLY="${2:?--only needs a list}"; shift ;;
        --threads) THREADS="${2:?--threads needs a number}"; shift ;;
        --criterion) CRITERION=1 ;;
        --no-build) BUILD=0 ;;
        -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d'; exit 0 ;;
        *) echo "bench.sh: unknown argument $1 (try --help)" >&2; exit 2 ;;
    esac
    shift
done

if [ "$QUICK" = 1 ]; then
    DURATION=4; WARMUP=1; AX_DURATION=12; AX_WARMUP=4; DISTINCT_ALL=1000000
else
    DURATION=10; WARMUP=2; AX_DURATION=25; AX_WARMUP=6; DISTINCT_ALL=2000000
fi
CONCURRENCY=32          # closed-loop workers for every digits run
RATE="${TOLLGATE_BENCH_RATE:-10000}"  # req/s of the open-loop pair in c: about a third of the max 16 capacity
AX_THREADS="${TOLLGATE_BENCH_ORT_THREADS:-2}"   # ONNX Runtime intra-op threads for AlexNet
TIME_LIMIT="${TOLLGATE_BENCH_TIME_LIMIT:-2700}" # seconds; sections past it are skipped
STARTED=$SECONDS

GATEWAY="${TOLLGATE_BENCH_GATEWAY:-./target/release/tollgate}"   # another build, to measure it instead
LOADTEST=./target/release/tollgate-loadtest
FIXED=./target/release/tollgate-fixed-server
ALEXNET=models/alexnet/1/model.onnx

wants() { [[ ",$ONLY," == *",$1,"* ]]; }
note() { printf '\n== %s\n' "$*"; }
time_left() {
    if [ $((SECONDS - STARTED)) -ge "$TIME_LIMIT" ]; then
        echo "bench.sh: the ${TIME_LIMIT}s limit is reached; skipping $1" | tee -a "$OUT/notes.txt"
        return 1
    fi
}

# The machine is shared: before each run wait (a bounded time) until the CPUs are mostly idle,
# and record how idle they were, so a run measured under someone else's load can be seen.
SETTLE_MAX="${TOLLGATE_BENCH_SETTLE_MAX:-$([ "$QUICK" = 1 ] && echo 20 || echo 45)}"
cpu_idle_percent() { # idle share of all CPUs over one second
    local a b
    a=$(awk '/^cpu / { print $5 + $6, $2 + $3 + $4 + $5 + $6 + $7 + $8 + $9 }' /proc/stat)
    sleep 1
    b=$(awk '/^cpu / { print $5 + $6, $2 + $3 + $4 + $5 + $6 + $7 + $8 + $9 }' /proc/stat)
    echo "$a $b" | awk '{ d = $4 - $2; printf "%d\n", (d > 0 ? 100 * ($3 - $1) / d : 100) }'
}
settle() { # NAME
    local deadline=$((SECONDS + SETTLE_MAX)) idle
    idle=$(cpu_idle_percent)
    while [ "$idle" -lt 85 ] && [ $SECONDS -lt $deadline ]; do idle=$(cpu_idle_percent); done
    echo "$idle" >"$OUT/$1.idle"
    [ "$idle" -lt 85 ] && echo "  (machine busy before $1: ${idle}% idle)"
    return 0
}

# ---- processes: every server started here is recorded and stopped on exit -------------------
PIDS=()
cleanup() {
    local pid
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
    PIDS=()
    if [ -z "${TOLLGATE_BENCH_KEEP_LEDGERS:-}" ]; then rm -f "$OUT"/ledger-*.sqlite*; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

stop() {
    local pid=$1 kept=() p
    kill "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    for p in "${PIDS[@]}"; do [ "$p" != "$pid" ] && kept+=("$p"); done
    PIDS=("${kept[@]}")
}

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}

wait_http() { # URL SECONDS
    local deadline=$((SECONDS + $2))
    until curl -sf -o /dev/null "$1"; do
        if [ $SECONDS -ge $deadline ]; then echo "bench.sh: $1 did not come up" >&2; return 1; fi
        sleep 0.2
    done
}

# start_gateway VAR CONFIG LOG: starts the gateway on free ports, sets VAR to HOST:PORT (HTTP),
# VAR_GRPC to its gRPC HOST:PORT and VAR_PID to its pid.
start_gateway() {
    local var=$1 config=$2 log=$3 http grpc
    http=$(free_port); grpc=$(free_port)
    "$GATEWAY" serve --config "$config" --http-addr "127.0.0.1:$http" --grpc-addr "127.0.0.1:$grpc" >"$log" 2>&1 &
    PIDS+=($!)
    printf -v "$var" '%s' "127.0.0.1:$http"
    printf -v "${var}_GRPC" '%s' "127.0.0.1:$grpc"
    printf -v "${var}_PID" '%s' "$!"
    SERVER_PID["127.0.0.1:$http"]=$!
    wait_http "http://127.0.0.1:$http/v2/health/ready" 120 || { tail -20 "$log" >&2; return 1; }
}

# start_fixed VAR BODY META LOG [--header K:V ...]
start_fixed() {
    local var=$1 body=$2 meta=$3 log=$4 port
    shift 4
    port=$(free_port)
    "$FIXED" --addr "127.0.0.1:$port" ${THREADS:+--threads "$THREADS"} --body-file "$body" \
        --get-body-file "$meta" "$@" >"$log" 2>&1 &
    PIDS+=($!)
    SERVER_PID["127.0.0.1:$port"]=$!
    printf -v "$var" '%s' "127.0.0.1:$port"
    wait_http "http://127.0.0.1:$port/v2/health/ready" 30 || { tail -20 "$log" >&2; return 1; }
}

# CPU time (user + system, in clock ticks) a process has used so far.
cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat" 2>/dev/null || echo 0; }
TICK_US=$((1000000 / $(getconf CLK_TCK)))
declare -A SERVER_PID=()   # HOST:PORT -> pid of the server listening there

# Busy and total CPU ticks of the whole machine (all CPUs).
machine_ticks() { awk '/^cpu / { print $2 + $3 + $4 + $7 + $8 + $9, $2 + $3 + $4 + $5 + $6 + $7 + $8 + $9 }' /proc/stat; }
FOREIGN_MAX="${TOLLGATE_BENCH_FOREIGN_MAX:-15}" # % of the machine used by others before a rerun

# Set around a call of `load` when a run needs more than the load generator's report:
LOAD_PURGE=""        # HOST:PORT of a gateway whose cache is emptied before the run
LOAD_BUSY_AT=""      # HOST:PORT and model whose device busy time over the run is recorded
LOAD_BUSY_MODEL=""

# load NAME TARGET MODEL [loadtest flags...]: one load run, its report in $OUT/NAME.json. Also
# written: NAME.cpu_us (the server's CPU time over the measured period, from the end of the
# warm-up), NAME.foreign (share of the machine's CPU used by processes other than this server
# and the load generator during the run). A run disturbed by others beyond FOREIGN_MAX percent
# is run once more and the second result kept.
load() {
    load_once "$@" || return 1
    local foreign
    foreign=$(cat "$OUT/$1.foreign" 2>/dev/null || echo 0)
    if [ "$foreign" -gt "$FOREIGN_MAX" ]; then
        echo "  ($1: other processes used ${foreign}% of the CPUs; running it again)"
        load_once "$@" || return 1
    fi
}

load_once() {
    local name=$1 target=$2 model=$3
    shift 3
    local limit=$((WARMUP + DURATION + AX_WARMUP + AX_DURATION + 120))
    local warm=0 prev="" arg sampler="" pid="${SERVER_PID[$target]:-}"
    for arg in "$@"; do
        [ "$prev" = --warmup ] && warm=${arg%s}
        prev=$arg
    done
    [ -n "$LOAD_PURGE" ] && purge "$LOAD_PURGE"
    settle "$name"
    local busy0=0 m0 s0=0
    [ -n "$LOAD_BUSY_AT" ] && busy0=$(counter_sum "$LOAD_BUSY_AT" tollgate_device_busy_seconds_total "$LOAD_BUSY_MODEL" 1000000)
    m0=$(machine_ticks)
    if [ -n "$pid" ]; then
        s0=$(cpu_ticks "$pid")
        rm -f "$OUT/$name.cpu0"
        (sleep "$warm"; cpu_ticks "$pid" >"$OUT/$name.cpu0") &
        sampler=$!
    fi
    local status=0
    timeout "$limit" /usr/bin/time -f '%U %S' -o "$OUT/$name.client_cpu" \
        "$LOADTEST" --target "$target" --model "$model" --no-progress \
        --timeout 10s --json "$OUT/$name.json" "$@" >"$OUT/$name.txt" 2>&1 || status=$?
    # Exit 4 (most requests failed: a side that falls behind an offered rate) is a result, with
    # its report written; anything else is a broken run.
    if [ "$status" = 4 ] && [ -s "$OUT/$name.json" ]; then
        echo "bench.sh: in $name most requests failed (kept as measured):" >&2
        tail -3 "$OUT/$name.txt" >&2
    elif [ "$status" != 0 ]; then
        echo "bench.sh: load run $name failed:" >&2
        tail -5 "$OUT/$name.txt" >&2
        [ -n "$sampler" ] && wait "$sampler" 2>/dev/null
        return 1
    fi
    local m1 s1=0
    m1=$(machine_ticks)
    if [ -n "$sampler" ]; then
        s1=$(cpu_ticks "$pid")
        wait "$sampler" 2>/dev/null || true
        [ -s "$OUT/$name.cpu0" ] && echo $(( (s1 - $(cat "$OUT/$name.cpu0")) * TICK_US )) >"$OUT/$name.cpu_us"
        rm -f "$OUT/$name.cpu0"
    fi
    if [ -n "$LOAD_BUSY_AT" ]; then
        echo $(( $(counter_sum "$LOAD_BUSY_AT" tollgate_device_busy_seconds_total "$LOAD_BUSY_MODEL" 1000000) - busy0 )) >"$OUT/$name.busy_us"
    fi
    # Everything the machine did during the run, less this server and the load generator.
    echo "$m0 $m1 $((s1 - s0)) $(cat "$OUT/$name.client_cpu" 2>/dev/null | tail -1) $(getconf CLK_TCK)" | awk '{
        busy = $3 - $1; total = $4 - $2; ours = $5 + ($6 + $7) * $8
        share = total > 0 ? 100 * (busy - ours) / total : 0
        printf "%d\n", (share < 0 ? 0 : share) }' >"$OUT/$name.foreign"
    grep -E '^(throughput|latency)' "$OUT/$name.txt" | sed "s/^/  $name: /"
}

# pair NAME_A ARGS_A NAME_B ARGS_B [SEED_BASE]: alternates the two sides RUNS times (A B, B A,
# ...). Each side's arguments are "TARGET MODEL FLAGS..." as one string (no spaces inside
# values). With SEED_BASE, run N of both sides adds --seed SEED_BASE+N: inputs new to each run.
pair() {
    local a=$1 a_args=$2 b=$3 b_args=$4 seed_base=${5:-} run seed
    for run in $(seq 1 "$RUNS"); do
        seed=${seed_base:+--seed $((seed_base + run))}
        if [ $((run % 2)) = 1 ]; then
            # shellcheck disable=SC2086
            load "${a}_r$run" $a_args $seed; load "${b}_r$run" $b_args $seed
        else
            # shellcheck disable=SC2086
            load "${b}_r$run" $b_args $seed; load "${a}_r$run" $a_args $seed
        fi
    done
}

purge() { curl -sf -X DELETE "http://$1/v1/cache" >/dev/null || echo "bench.sh: cache purge failed" >&2; }

# Sum of a counter over the series whose labels contain model="MODEL".
counter_sum() { # HOST:PORT METRIC MODEL [SCALE]: the series' sum times SCALE, rounded
    curl -sf "http://$1/metrics" | awk -v metric="$2" -v label="model=\"$3\"" -v scale="${4:-1}" '
        index($1, metric "{") == 1 && index($1, label) { sum += $2 }
        END { printf "%.0f\n", (sum + 0) * scale }'
}

mkdir -p "$OUT"
rm -f "$OUT"/*.json "$OUT"/*.txt "$OUT"/*.log "$OUT"/d_gateway_batch.txt "$OUT"/*.cpu_us "$OUT"/*.busy_us "$OUT"/*.idle "$OUT"/*.metrics "$OUT"/*.foreign "$OUT"/*.client_cpu "$OUT"/summary.md
# Criterion's own results too: the summary must only quote benches this invocation ran.
rm -rf "$OUT/criterion"
{
    echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
    echo "nproc: $(nproc)"
    echo "cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')"
    echo "memory: $(awk '/MemTotal/ {printf "%.1f GiB", $2 / 1048576}' /proc/meminfo)"
    echo "load average at start: $(cut -d' ' -f1-3 /proc/loadavg)"
    echo "source: $(git describe --always --dirty 2>/dev/null || echo unknown)"
    echo "mode: $([ "$QUICK" = 1 ] && echo quick || echo full), runs per side: $RUNS, duration ${DURATION}s, warm-up ${WARMUP}s, concurrency $CONCURRENCY"
    echo "server worker threads (digits gateway and fixed server): ${THREADS:-one per core}"
} | tee "$OUT/machine.txt"

# ---- build once ----------------------------------------------------------------------------
if [ "$BUILD" = 1 ]; then
    note "building release binaries (once)"
    timeout 1800 cargo build --release -p tollgate -p tollgate-loadtest --bins
fi
for binary in "$GATEWAY" "$LOADTEST" "$FIXED"; do
    [ -x "$binary" ] || { echo "bench.sh: $binary is missing; run without --no-build" >&2; exit 1; }
done
# Every load run uses private copies taken now: building the criterion benches (below, for d
# and --criterion) also rebuilds target/release's binaries, with the dev-dependencies' features
# unified in, and nothing measured here should change half-way through an invocation.
mkdir -p "$OUT/bin"
cp "$GATEWAY" "$OUT/bin/tollgate"
cp "$LOADTEST" "$FIXED" "$OUT/bin/"
GATEWAY="$OUT/bin/tollgate"
LOADTEST="$OUT/bin/tollgate-loadtest"
FIXED="$OUT/bin/tollgate-fixed-server"
export TOLLGATE_BENCH_BIN_DIR="$PWD/$OUT/bin"

# The criterion bench that calls ONNX Runtime directly; built once, run by path.
ORT_DIRECT=""
if wants d || [ "$CRITERION" = 1 ]; then
    if [ "$BUILD" = 1 ] || [ "$CRITERION" = 1 ]; then
        note "building the criterion benches"
        benches=(--bench ort_direct)
        [ "$CRITERION" = 1 ] && benches=(--bench decode --bench cache --bench batch --bench metering --bench e2e --bench ort_direct)
        timeout 1800 cargo bench --no-run "${benches[@]}" 2>&1 | tail -3
        ORT_DIRECT=$(cargo bench --no-run --bench ort_direct --message-format=json 2>/dev/null |
            python3 -c 'import json, sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m.get("target", {}).get("name") == "ort_direct" and m.get("executable"):
        print(m["executable"])') || true
    fi
    # With --no-build (or if cargo could not say), the newest ort_direct bench already built.
    if [ -z "$ORT_DIRECT" ]; then
        ORT_DIRECT=$(find target/release/deps -maxdepth 1 -type f -executable -name 'ort_direct-*' \
            -printf '%T@ %p\n' 2>/dev/null | sort -rn | head -1 | cut -d' ' -f2-)
    fi
fi

# ---- the digits gateway: one process, one model entry per configuration --------------------
digits_sections=0
for s in a b c e g; do wants $s && digits_sections=1; done
if [ "$digits_sections" = 1 ]; then
    cat >"$OUT/digits.toml" <<'EOF'
# Written by scripts/bench.sh. One gateway, the digits model under seven configurations.
[server]
http_addr = "127.0.0.1:0"
grpc_addr = "127.0.0.1:0"
max_concurrent_requests = 4096

[cache]
enabled = true
max_bytes = "512MiB"

# Cache and batching on (the shipped config.toml's shape).
[[models]]
name = "digits_cache"
path = "../../models/digits/1/model.onnx"
instances = 1
intra_op_threads = 1
max_batch_size = 64
max_queue_delay_us = 1000
cache = true

# Batching on, cache off.
[[models]]
name = "digits_nocache"
path = "../../models/digits/1/model.onnx"
instances = 1
intra_op_threads = 1
max_batch_size = 64
max_queue_delay_us = 1000
cache = false

# Batching sized for the 32 closed-loop clients: a batch fills and leaves without waiting.
[[models]]
name = "digits_b32"
path = "../../models/digits/1/model.onnx"
instances = 1
intra_op_threads = 1
max_batch_size = 32
max_queue_delay_us = 1000
cache = false

# Half the clients: one batch forms while the answers of the previous one go out.
[[models]]
name = "digits_b16"
path = "../../models/digits/1/model.onnx"
instances = 1
intra_op_threads = 1
max_batch_size = 16
max_queue_delay_us = 1000
cache = false

# The same with the cache on: the miss overhead where CPU, not the batching delay, is the limit.
[[models]]
name = "digits_b16_cache"
path = "../../models/digits/1/model.onnx"
instances = 1
intra_op_threads = 1
max_batch_size = 16
max_queue_delay_us = 1000
cache = true

# The same again, storing an answer only the second time its input is computed.
[[models]]
name = "digits_b16_twice"
path = "../../models/digits/1/model.onnx"
instances = 1
intra_op_threads = 1
max_batch_size = 16
max_queue_delay_us = 1000
cache = true
cache_min_uses = 2

# The naive configuration: no cache, no batching.
[[models]]
name = "digits_naive"
path = "../../models/digits/1/model.onnx"
instances = 1
intra_op_threads = 1
max_batch_size = 0
cache = false
EOF
    # TOLLGATE_BENCH_MEMO_ENTRIES=0 measures the gateway without its body memo.
    if [ -n "${TOLLGATE_BENCH_MEMO_ENTRIES:-}" ]; then
        sed -i "s/^max_bytes = \"512MiB\"$/&\nbody_memo_entries = $TOLLGATE_BENCH_MEMO_ENTRIES/" "$OUT/digits.toml"
    fi
    # Model paths as absolute ones, so the config can live in any folder.
    sed -i "s#\.\./\.\./models/#$PWD/models/#" "$OUT/digits.toml"
    # Every request is written to the usage ledger: give this run a fresh one of its own.
    rm -f "$OUT"/ledger-digits.sqlite*
    printf '\n[ledger]\npath = "%s"\n' "$PWD/$OUT/ledger-digits.sqlite" >>"$OUT/digits.toml"
    if [ -n "$THREADS" ]; then
        sed -i "s/^max_concurrent_requests = 4096$/&\nworker_threads = $THREADS/" "$OUT/digits.toml"
    fi
    note "starting the digits gateway and the fixed-answer servers"
    start_gateway GW "$OUT/digits.toml" "$OUT/gateway_digits.log"
    echo "gateway: $GW (pid $GW_PID)"
    # The exact bytes and headers the gateway answers with: a hit (second identical request)
    # and a bypass (cache off), to be served back verbatim by the fixed servers.
    python3 -c 'import json
row = [((i * 37) % 1024) / 64 for i in range(64)]
print(json.dumps({"inputs": [{"name": "input", "shape": [1, 64], "datatype": "FP32", "data": row}]}))' >"$OUT/digits_request.json"
    capture() { # MODEL NAME
        local i
        for i in 1 2; do
            curl -sf -D "$OUT/$2.headers" -o "$OUT/$2.body" -H 'content-type: application/json' \
                --data-binary "@$OUT/digits_request.json" "http://$GW/v2/models/$1/infer"
        done
        curl -sf -o "$OUT/$2.meta" "http://$GW/v2/models/$1"
    }
    capture digits_cache answer_hit
    capture digits_nocache answer_bypass
    header_flags() { # the x-tollgate-* headers of a captured answer, as --header flags
        tr -d '\r' <"$1" | awk -F': ' 'tolower($1) ~ /^x-tollgate-/ { printf "--header\n%s:%s\n", $1, $2 }'
    }
    mapfile -t HIT_HEADERS < <(header_flags "$OUT/answer_hit.headers")
    mapfile -t BYPASS_HEADERS < <(header_flags "$OUT/answer_bypass.headers")
    start_fixed FIXED_HIT "$OUT/answer_hit.body" "$OUT/answer_hit.meta" "$OUT/fixed_hit.log" "${HIT_HEADERS[@]}"
    start_fixed FIXED_BYPASS "$OUT/answer_bypass.body" "$OUT/answer_bypass.meta" "$OUT/fixed_bypass.log" "${BYPASS_HEADERS[@]}"
    echo "fixed servers: hit $FIXED_HIT, bypass $FIXED_BYPASS; answers of $(wc -c <"$OUT/answer_hit.body") and $(wc -c <"$OUT/answer_bypass.body") bytes"
fi
COMMON="--protocol http --concurrency $CONCURRENCY --duration ${DURATION}s --warmup ${WARMUP}s"

if wants a && time_left a; then
    note "a) cache hit over HTTP: gateway (1 distinct input) vs fixed server, c=$CONCURRENCY"
    pair a_gateway "$GW digits_cache $COMMON --distinct 1 --seed 1 --metrics-url http://$GW/metrics" \
         a_fixed "$FIXED_HIT digits_cache $COMMON --distinct 1 --seed 1"
fi

if wants b && time_left b; then
    note "b) overhead-bound digits, cache off: gateway (batching max 64 / 32 / 16 / off) vs fixed server, c=$CONCURRENCY"
    for run in $(seq 1 "$RUNS"); do
        # Rotating order: each side goes first, second, ... and fifth once in five runs.
        case $((run % 5)) in
            1) order="batch b32 b16 naive fixed" ;;
            2) order="fixed batch b32 b16 naive" ;;
            3) order="naive fixed batch b32 b16" ;;
            4) order="b16 naive fixed batch b32" ;;
            0) order="b32 b16 naive fixed batch" ;;
        esac
        for side in $order; do
            case $side in
                batch) load "b_gateway_batching_r$run" "$GW" digits_nocache $COMMON --distinct 1000 --seed 2 --metrics-url "http://$GW/metrics" ;;
                b32) load "b_gateway_b32_r$run" "$GW" digits_b32 $COMMON --distinct 1000 --seed 2 --metrics-url "http://$GW/metrics" ;;
                b16) load "b_gateway_b16_r$run" "$GW" digits_b16 $COMMON --distinct 1000 --seed 2 --metrics-url "http://$GW/metrics" ;;
                naive) load "b_gateway_nobatching_r$run" "$GW" digits_naive $COMMON --distinct 1000 --seed 2 --metrics-url "http://$GW/metrics" ;;
                fixed) load "b_fixed_r$run" "$FIXED_BYPASS" digits_nocache $COMMON --distinct 1000 --seed 2 ;;
            esac
        done
    done
fi

if wants c && time_left c; then
    note "c) cache miss overhead: cache on with $DISTINCT_ALL distinct inputs vs cache off, c=$CONCURRENCY; batching max 64 / 1 ms (delay-bound) and max 16 (CPU-bound)"
    LOAD_PURGE=$GW
    for run in $(seq 1 "$RUNS"); do
        # A fresh seed per run: no input of an earlier run can be in the cache.
        common="$COMMON --distinct $DISTINCT_ALL --seed $((100 + run)) --metrics-url http://$GW/metrics"
        on="$GW digits_cache $common"
        off="$GW digits_nocache $common"
        cpu_on="$GW digits_b16_cache $common"
        cpu_off="$GW digits_b16 $common"
        twice_on="$GW digits_b16_twice $common"
        if [ $((run % 2)) = 1 ]; then
            # shellcheck disable=SC2086
            load "c_cache_on_r$run" $on; load "c_cache_off_r$run" $off
            # shellcheck disable=SC2086
            load "c_cpu_on_r$run" $cpu_on; load "c_cpu_off_r$run" $cpu_off
            # shellcheck disable=SC2086
            load "c_twice_on_r$run" $twice_on
        else
            # shellcheck disable=SC2086
            load "c_cache_off_r$run" $off; load "c_cache_on_r$run" $on
            # shellcheck disable=SC2086
            load "c_twice_on_r$run" $twice_on
            # shellcheck disable=SC2086
            load "c_cpu_off_r$run" $cpu_off; load "c_cpu_on_r$run" $cpu_on
        fi
    done
    LOAD_PURGE=""
fi

if wants c && time_left c; then
    # The closed-loop pairs measure capacity: every microsecond of CPU shows. A service is not
    # run at its capacity, so this pair offers the same fixed rate to both sides (open loop,
    # Poisson arrivals, well under either side's capacity) and compares what a request waits and
    # what it costs in CPU. The cache grows, as in the pairs above.
    note "c) the CPU-bound pair (max 16) at a fixed offered rate: $RATE req/s, open loop, cache growing"
    LOAD_PURGE=$GW
    common="--protocol http --rate $RATE --arrivals poisson --duration ${DURATION}s --warmup ${WARMUP}s"
    common="$common --distinct $DISTINCT_ALL --metrics-url http://$GW/metrics"
    pair c_rate_on "$GW digits_b16_cache $common" c_rate_off "$GW digits_b16 $common" 300
    LOAD_PURGE=""
fi

if wants c && time_left c; then
    # The pairs above start every run from an empty cache, so they measure a cache that grows.
    # A gateway that has served unique inputs for a while holds a full one: this pair measures
    # that steady state, where an answer is stored only the second time it is computed.
    note "c) the CPU-bound pair once the cache is full: a second gateway with cache.max_bytes = 16 MiB, filled first"
    sed -e 's/^max_bytes = .*/max_bytes = "16MiB"/' -e 's/ledger-digits[.]sqlite/ledger-digits-full.sqlite/' \
        "$OUT/digits.toml" >"$OUT/digits_full.toml"
    rm -f "$OUT"/ledger-digits-full.sqlite*
    start_gateway GWF "$OUT/digits_full.toml" "$OUT/gateway_digits_full.log"
    # Many times more distinct answers than 16 MiB holds, none of them among the measured inputs.
    # shellcheck disable=SC2086
    load c_fill "$GWF" digits_b16_cache $COMMON --distinct "$DISTINCT_ALL" --seed 99
    common="$COMMON --distinct $DISTINCT_ALL --metrics-url http://$GWF/metrics"
    pair c_full_on "$GWF digits_b16_cache $common" c_full_off "$GWF digits_b16 $common" 200
    curl -sf "http://$GWF/metrics" >"$OUT/gateway_digits_full.metrics" || true
fi

if wants g && time_left g; then
    note "g) gRPC beside HTTP: cache hits at c=1 (latency) and c=$CONCURRENCY (req/s); a lone miss at c=1"
    ONE="--concurrency 1 --duration ${DURATION}s --warmup ${WARMUP}s --distinct 1 --seed 1"
    MANY="--concurrency $CONCURRENCY --duration ${DURATION}s --warmup ${WARMUP}s --distinct 1 --seed 1"
    pair g_http_c1 "$GW digits_cache --protocol http $ONE" g_grpc_c1 "$GW_GRPC digits_cache --protocol grpc $ONE"
    pair g_http_c32 "$GW digits_cache --protocol http $MANY" g_grpc_c32 "$GW_GRPC digits_cache --protocol grpc $MANY"
    # Cache off, one client: every request waits alone for max_queue_delay_us (1 ms) to pass.
    for run in $(seq 1 "$RUNS"); do
        load "g_lone_miss_r$run" "$GW" digits_nocache --protocol http --concurrency 1 \
            --duration "${DURATION}s" --warmup "${WARMUP}s" --distinct 1000 --seed 7
    done
fi

if wants e && time_left e; then
    note "e) Zipf(1.1) over 10000 inputs: cache + batching vs naive (no cache, no batching), c=$CONCURRENCY"
    # No warm-up, so the load generator and /metrics count exactly the same requests; every
    # cached run starts from an empty cache.
    zipf="--protocol http --concurrency $CONCURRENCY --duration ${DURATION}s --warmup 0s --distinct 10000 --zipf 1.1 --seed 7 --metrics-url http://$GW/metrics"
    zipf_run() { # NAME MODEL
        LOAD_PURGE=$GW LOAD_BUSY_AT=$GW LOAD_BUSY_MODEL=$2
        # shellcheck disable=SC2086
        load "$1" "$GW" "$2" $zipf
        LOAD_PURGE="" LOAD_BUSY_AT="" LOAD_BUSY_MODEL=""
    }
    for run in $(seq 1 "$RUNS"); do
        if [ $((run % 2)) = 1 ]; then
            zipf_run "e_cached_r$run" digits_cache; zipf_run "e_naive_r$run" digits_naive
        else
            zipf_run "e_naive_r$run" digits_naive; zipf_run "e_cached_r$run" digits_cache
        fi
    done
fi

# The digits sections are done: keep the gateway's metrics, stop the servers.
if [ "$digits_sections" = 1 ]; then
    curl -sf "http://$GW/metrics" >"$OUT/gateway_digits.metrics" || true
    cleanup
fi

# ---- d: compute-bound AlexNet ---------------------------------------------------------------
ensure_alexnet() {
    [ -f "$ALEXNET" ] && return 0
    note "generating $ALEXNET with scripts/make_alexnet.py"
    if ! .venv/bin/python -c 'import onnx, onnxruntime, numpy' 2>/dev/null; then
        make pyenv
        .venv/bin/pip install --quiet onnx==1.23.2
    fi
    timeout 600 .venv/bin/python scripts/make_alexnet.py
}

ort_direct_run() { # RUN: criterion over AlexNet batch sizes, rows/s per size into d_direct_rRUN.json
    local run=$1 home="$OUT/criterion_ort_direct_r$1"
    rm -rf "$home"
    settle "d_direct_r$run"
    CRITERION_HOME="$home" TOLLGATE_BENCH_ONLY_ALEXNET=1 TOLLGATE_BENCH_ORT_THREADS="$AX_THREADS" \
        timeout 900 "$ORT_DIRECT" --bench >"$OUT/d_direct_r$run.txt" 2>&1
    python3 - "$home" "$OUT/d_direct_r$run.json" <<'PY'
import json, pathlib, sys
home, out = pathlib.Path(sys.argv[1]), sys.argv[2]
rows = {}
for estimates in sorted(home.glob("ort_direct_alexnet/batch/*/new/estimates.json")):
    batch = int(estimates.parent.parent.name)
    median_ns = json.loads(estimates.read_text())["median"]["point_estimate"]
    rows[str(batch)] = batch * 1e9 / median_ns
json.dump({"rows_per_s_by_batch": rows}, open(out, "w"), indent=1)
print("  direct rows/s by batch size:", {k: round(v, 2) for k, v in sorted(rows.items(), key=lambda kv: int(kv[0]))})
PY
}

if wants d && time_left d; then
    note "d) compute-bound AlexNet: gateway vs ONNX Runtime in-process, $AX_THREADS intra-op threads"
    if ! ensure_alexnet; then
        echo "bench.sh: AlexNet could not be generated; section d skipped" | tee -a "$OUT/notes.txt"
    elif [ -z "$ORT_DIRECT" ] || [ ! -x "$ORT_DIRECT" ]; then
        echo "bench.sh: the ort_direct bench binary was not found; section d skipped" | tee -a "$OUT/notes.txt"
    else
        ort_direct_run 1
        # The gateway gets the batch size that served best directly, as an operator would set.
        best=$(python3 -c 'import json, sys
r = json.load(open(sys.argv[1]))["rows_per_s_by_batch"]
print(max(r, key=r.get) if r else 8)' "$OUT/d_direct_r1.json")
        echo "  best direct batch size: $best; gateway max_batch_size = $best, concurrency $((3 * best))"
        echo "$best" >"$OUT/d_gateway_batch.txt"
        cat >"$OUT/alexnet.toml" <<EOF
# Written by scripts/bench.sh: AlexNet with batching at the best direct batch size, no cache.
# The queue delay is well under one batch's run time: with the next batch prefetched, waiting
# for a full batch costs the device nothing, while a short delay sends partial batches whenever
# the request bodies arrive slowly.
[server]
http_addr = "127.0.0.1:0"
grpc_addr = "127.0.0.1:0"

[cache]
enabled = false

[[models]]
name = "alexnet"
path = "../../$ALEXNET"
instances = 1
intra_op_threads = $AX_THREADS
max_batch_size = $best
preferred_batch_sizes = [$best]
max_queue_delay_us = 100000
max_queue_size = 1024
cache = false

# The same model without batching: every request runs alone.
[[models]]
name = "alexnet_nobatch"
path = "../../$ALEXNET"
instances = 1
intra_op_threads = $AX_THREADS
max_batch_size = 0
max_queue_size = 1024
cache = false
EOF
        rm -f "$OUT"/ledger-alexnet.sqlite*
        printf '\n[ledger]\npath = "%s"\n' "$PWD/$OUT/ledger-alexnet.sqlite" >>"$OUT/alexnet.toml"
        start_gateway AX "$OUT/alexnet.toml" "$OUT/gateway_alexnet.log"
        # Binary tensors: a 3x224x224 image is 600 KB raw, several MB as JSON text.
        ax_load() { # NAME [MODEL]
            local model=${2:-alexnet}
            LOAD_BUSY_AT=$AX LOAD_BUSY_MODEL=$model
            load "$1" "$AX" "$model" --protocol http-binary --concurrency $((3 * best)) \
                --duration "${AX_DURATION}s" --warmup "${AX_WARMUP}s" --distinct 8 --seed 3 \
                --metrics-url "http://$AX/metrics"
            LOAD_BUSY_AT="" LOAD_BUSY_MODEL=""
        }
        ax_load d_gateway_r1
        ax_load d_nobatch_r1 alexnet_nobatch
        for run in $(seq 2 "$RUNS"); do
            if [ $((run % 2)) = 0 ]; then
                ax_load "d_nobatch_r$run" alexnet_nobatch; ax_load "d_gateway_r$run"; ort_direct_run "$run"
            else
                ort_direct_run "$run"; ax_load "d_gateway_r$run"; ax_load "d_nobatch_r$run" alexnet_nobatch
            fi
        done
        curl -sf "http://$AX/metrics" >"$OUT/gateway_alexnet.metrics" || true
        stop "$AX_PID"
    fi
fi

# ---- f: peers --------------------------------------------------------------------------------
if wants f && time_left f; then
    note "f) peers: Triton and MLServer vs Tollgate at c=32, cache off (scripts/peers/c32.sh)"
    if [ -f .peers/triton/.installed ]; then
        C32_RUNS=$RUNS C32_DURATION=$DURATION C32_WARMUP=$WARMUP \
            scripts/peers/c32.sh 2>&1 | tee "$OUT/peers_c32.txt" ||
            echo "peers: c32.sh failed (see $OUT/peers_c32.txt)" | tee -a "$OUT/notes.txt"
    else
        echo "peers skipped: Triton (nvidia-pytriton) is not installed under .peers/ (recipe: scripts/peers/README.md)" |
            tee -a "$OUT/notes.txt"
    fi
fi

# ---- optional: criterion micro-benchmarks ----------------------------------------------------
if [ "$CRITERION" = 1 ] && time_left criterion; then
    note "criterion micro-benchmarks (decode, cache, batch, metering, e2e)"
    CRITERION_HOME="$OUT/criterion" timeout 1500 cargo bench --bench decode --bench cache \
        --bench batch --bench metering --bench e2e 2>&1 | grep -E '^[a-z_0-9]+/|time:|thrpt:' >"$OUT/criterion.txt" || true
fi

# ---- summary -------------------------------------------------------------------------------
note "summary (medians of $RUNS runs per side)"
python3 - "$OUT" <<'PY'
import glob, json, os, pathlib, statistics, sys

out = pathlib.Path(sys.argv[1])

def runs(prefix):
    """(report, path stem) for each run of a side, in run order."""
    found = []
    for path in sorted(glob.glob(str(out / f"{prefix}_r*.json"))):
        with open(path) as f:
            found.append((json.load(f), path[: -len(".json")]))
    return found

def reports(prefix):
    return [r for r, _ in runs(prefix)]

def median(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None

def med(prefix, field="requests_per_s"):
    return median([r.get(field) for r in reports(prefix)])

def latency(prefix, q):
    return median([r["latency_ms"][q] for r in reports(prefix)])

def read_number(path):
    try:
        return float(open(path).read().strip())
    except (OSError, ValueError):
        return None

def cpu_us_per_request(prefix):
    """Server CPU time over the measured period divided by the requests answered in it."""
    values = []
    for report, stem in runs(prefix):
        cpu = read_number(stem + ".cpu_us")
        if cpu is not None and report.get("ok"):
            values.append(cpu / report["ok"])
    return median(values)

def fmt(value, digits=0):
    return "n/a" if value is None else f"{value:,.{digits}f}"

def ratio(a, b):
    return a / b if a is not None and b else None

table, summary = [], {}

def row(figure, a_label, a, b_label, b, r, goal, met, digits=0):
    table.append((figure, f"{a_label} {fmt(a, digits)}",
                  f"{b_label} {fmt(b, digits)}" if b_label else "",
                  fmt(r, 3), goal, "" if met is None else ("met" if met else "MISSED")))
    summary[figure] = {"a": a, "b": b, "ratio": r, "goal": goal, "met": met}

# a: cache hit vs the fixed server
ga, fa = med("a_gateway"), med("a_fixed")
if ga or fa:
    r = ratio(ga, fa)
    row("a. cache hit req/s: gateway / fixed server", "gateway", ga, "fixed", fa, r, ">= 0.8",
        None if r is None else r >= 0.8)
    row("a. server CPU us per request: fixed / gateway", "gateway", cpu_us_per_request("a_gateway"),
        "fixed", cpu_us_per_request("a_fixed"),
        ratio(cpu_us_per_request("a_fixed"), cpu_us_per_request("a_gateway")), "(info)", None, 1)

# b: overhead-bound, cache off
gb, nb, fb = med("b_gateway_batching"), med("b_gateway_nobatching"), med("b_fixed")
b32 = med("b_gateway_b32")
if gb or nb or fb:
    r = ratio(gb, fb)
    row("b. cache off req/s: gateway (batching max 64, 1 ms) / fixed server", "gateway", gb, "fixed", fb, r,
        ">= 0.5", None if r is None else r >= 0.5)
    r = ratio(b32, fb)
    row("b. cache off req/s: gateway (batching max 32, 1 ms) / fixed server", "gateway", b32, "fixed", fb, r,
        ">= 0.5", None if r is None else r >= 0.5)
    b16 = med("b_gateway_b16")
    r = ratio(b16, fb)
    row("b. cache off req/s: gateway (batching max 16, 1 ms) / fixed server", "gateway", b16, "fixed", fb, r,
        ">= 0.5", None if r is None else r >= 0.5)
    r = ratio(nb, fb)
    row("b. cache off req/s: gateway (batching off) / fixed server", "gateway", nb, "fixed", fb, r,
        ">= 0.5", None if r is None else r >= 0.5)
    row("b. batching on / off req/s at c=32", "on", gb, "off", nb, ratio(gb, nb), "(info)", None)
    cpu_b, cpu_n, cpu_f = (cpu_us_per_request(p) for p in ("b_gateway_batching", "b_gateway_nobatching", "b_fixed"))
    row("b. server CPU us per request: batching on / off", "on", cpu_b, "off", cpu_n,
        ratio(cpu_b, cpu_n), "(info)", None, 1)
    row("b. server CPU us per request: fixed / gateway (batching on)", "gateway", cpu_b, "fixed", cpu_f,
        ratio(cpu_f, cpu_b), "(info)", None, 1)
    summary["b. mean batch size (batching on)"] = median(
        [(r.get("server_metrics") or {}).get("mean_batch_size") for r in reports("b_gateway_batching")])
    summary["b. mean batch size (batching max 32)"] = median(
        [(r.get("server_metrics") or {}).get("mean_batch_size") for r in reports("b_gateway_b32")])
    row("b. server CPU us per request: batching max 32 / off", "max 32",
        cpu_us_per_request("b_gateway_b32"), "off", cpu_n,
        ratio(cpu_us_per_request("b_gateway_b32"), cpu_n), "(info)", None, 1)
    summary["b. mean batch size (batching max 16)"] = median(
        [(r.get("server_metrics") or {}).get("mean_batch_size") for r in reports("b_gateway_b16")])
    row("b. server CPU us per request: batching max 16 / off", "max 16",
        cpu_us_per_request("b_gateway_b16"), "off", cpu_n,
        ratio(cpu_us_per_request("b_gateway_b16"), cpu_n), "(info)", None, 1)

# c: the miss path
con, coff = med("c_cache_on"), med("c_cache_off")
if con or coff:
    r = ratio(con, coff)
    slower = None if r is None else (1 - r) * 100
    row("c. req/s: cache on (all distinct) / cache off", "on", con, "off", coff, r,
        "<= 3% slower", None if slower is None else slower <= 3.0)
    summary["c. percent slower with the cache on"] = slower
    hit_ratio = median([(r.get("cache") or {}).get("hit_ratio") for r in reports("c_cache_on")])
    summary["c. hit ratio among the 'all distinct' requests (repeats drawn by chance)"] = hit_ratio
    cpu_on, cpu_off = cpu_us_per_request("c_cache_on"), cpu_us_per_request("c_cache_off")
    row("c. server CPU us per request: cache on / off", "on", cpu_on, "off", cpu_off,
        ratio(cpu_on, cpu_off), "(info)", None, 1)
    # Where the batching delay does not hide it: batches of 16, CPU the limit.
    pon, poff = med("c_cpu_on"), med("c_cpu_off")
    r = ratio(pon, poff)
    row("c. req/s, batching max 16 (CPU-bound): cache on (all distinct) / cache off", "on", pon,
        "off", poff, r, "<= 3% slower", None if r is None else (1 - r) * 100 <= 3.0)
    row("c. server CPU us per request, batching max 16: cache on / off", "on",
        cpu_us_per_request("c_cpu_on"), "off", cpu_us_per_request("c_cpu_off"),
        ratio(cpu_us_per_request("c_cpu_on"), cpu_us_per_request("c_cpu_off")), "(info)", None, 1)
    ton = med("c_twice_on")
    if ton:
        r = ratio(ton, poff)
        row("c. req/s, max 16, cache on with cache_min_uses = 2 (all distinct) / cache off", "on",
            ton, "off", poff, r, "<= 3% slower", None if r is None else (1 - r) * 100 <= 3.0)
        row("c. server CPU us per request, max 16, cache_min_uses = 2: cache on / off", "on",
            cpu_us_per_request("c_twice_on"), "off", cpu_us_per_request("c_cpu_off"),
            ratio(cpu_us_per_request("c_twice_on"), cpu_us_per_request("c_cpu_off")), "(info)",
            None, 1)
    if reports("c_rate_on"):
        # Both sides are offered the same rate; the achieved rates show either one falling behind.
        row("c. req/s achieved at the fixed offered rate: cache on / off", "on", med("c_rate_on"),
            "off", med("c_rate_off"), ratio(med("c_rate_on"), med("c_rate_off")), "(info)", None)
        for q in ("p50", "p99"):
            r = ratio(latency("c_rate_on", q), latency("c_rate_off", q))
            row(f"c. {q} latency ms at the fixed offered rate, max 16: cache on / off", "on",
                latency("c_rate_on", q), "off", latency("c_rate_off", q), r, "<= 3% slower",
                None if r is None else (r - 1) * 100 <= 3.0, 3)
        row("c. server CPU us per request at the fixed offered rate: cache on / off", "on",
            cpu_us_per_request("c_rate_on"), "off", cpu_us_per_request("c_rate_off"),
            ratio(cpu_us_per_request("c_rate_on"), cpu_us_per_request("c_rate_off")), "(info)",
            None, 1)
    fon, foff = med("c_full_on"), med("c_full_off")
    if fon or foff:
        r = ratio(fon, foff)
        row("c. req/s, batching max 16, cache full (16 MiB): cache on (all distinct) / cache off",
            "on", fon, "off", foff, r, "<= 3% slower", None if r is None else (1 - r) * 100 <= 3.0)
        row("c. server CPU us per request, max 16, cache full: cache on / off", "on",
            cpu_us_per_request("c_full_on"), "off", cpu_us_per_request("c_full_off"),
            ratio(cpu_us_per_request("c_full_on"), cpu_us_per_request("c_full_off")), "(info)",
            None, 1)
    # Repeats drawn by chance are cheap hits on the cache-on side. Charging each hit what a hit
    # costs in section a leaves the throughput of the misses alone.
    if ga:
        adjusted = []
        for report in reports("c_cache_on"):
            ok, rps = report.get("ok"), report.get("requests_per_s")
            hits = (report.get("cache") or {}).get("hit", 0)
            if ok and rps and ok > hits:
                adjusted.append((ok - hits) / (ok / rps - hits / ga))
        adj = median(adjusted)
        r = ratio(adj, coff)
        row("c. req/s of misses only (hits charged at a's rate) / cache off", "on", adj, "off", coff,
            r, "<= 3% slower", None if r is None else (1 - r) * 100 <= 3.0)

# d: compute-bound
direct_runs = reports("d_direct")
if direct_runs:
    sizes = sorted({int(k) for r in direct_runs for k in r["rows_per_s_by_batch"]})
    per_size = {s: median([r["rows_per_s_by_batch"].get(str(s)) for r in direct_runs]) for s in sizes}
    summary["d. direct rows/s by batch size (medians)"] = per_size
    best = max(per_size, key=lambda s: per_size[s]) if per_size else None
    direct = per_size.get(best)
    gw = med("d_gateway", "rows_per_s")
    r = ratio(gw, direct)
    row(f"d. AlexNet rows/s: gateway / ORT direct at its best batch ({best})", "gateway", gw,
        "direct", direct, r, ">= 0.9", None if r is None else r >= 0.9, 2)
    # The same, pairing each gateway run with the direct run next to it (drift cancels), at the
    # best size of that direct run.
    paired = []
    for (g, _), (d, _) in zip(runs("d_gateway"), runs("d_direct")):
        by_size = d["rows_per_s_by_batch"]
        if by_size and g.get("rows_per_s"):
            paired.append(g["rows_per_s"] / max(by_size.values()))
    r = median(paired)
    row("d. AlexNet rows/s: gateway / ORT direct, paired run by run (median)", "runs", len(paired),
        "", None, r, ">= 0.9", None if r is None else r >= 0.9)
    try:
        configured = open(out / "d_gateway_batch.txt").read().strip()
    except OSError:
        configured = None
    if configured and configured != str(best):
        r = ratio(gw, per_size.get(int(configured)))
        row(f"d. AlexNet rows/s: gateway / ORT direct at the gateway's batch ({configured})", "gateway",
            gw, "direct", per_size.get(int(configured)), r, "(info)", None, 2)
    nobatch = med("d_nobatch", "rows_per_s")
    if nobatch:
        row("d. AlexNet rows/s: gateway batching on / off", "on", gw, "off", nobatch,
            ratio(gw, nobatch), "(info)", None, 2)
    summary["d. gateway mean batch size"] = median(
        [(r.get("server_metrics") or {}).get("mean_batch_size") for r in reports("d_gateway")])
    busy_share, per_batch_ms = [], []
    for report, stem in runs("d_gateway"):
        busy = read_number(stem + ".busy_us")
        executions = (report.get("server_metrics") or {}).get("executions_total")
        window = report["run"]["warmup_s"] + report["elapsed_s"]
        if busy is not None and window:
            busy_share.append(busy / 1e6 / window)
        if busy is not None and executions:
            per_batch_ms.append(busy / 1e3 / executions)
    summary["d. gateway device busy share of the run (model thread running ONNX Runtime)"] = median(busy_share)
    summary["d. gateway ms per batch (device busy / executions)"] = median(per_batch_ms)

# e: Zipf, device time and hit ratio agreement
def device_s_per_1000(prefix):
    values = []
    for report, stem in runs(prefix):
        busy = read_number(stem + ".busy_us")
        requests = (report.get("server_metrics") or {}).get("requests_total")
        if busy is not None and requests:
            values.append(busy / 1e6 / requests * 1000)
    return median(values)

cached, naive = device_s_per_1000("e_cached"), device_s_per_1000("e_naive")
if cached is not None or naive is not None:
    r = ratio(naive, cached)
    row("e. Zipf device-s per 1,000 requests: naive / cache+batching", "naive", naive, "cached",
        cached, r, "(info: savings factor)", None, 4)
    row("e. Zipf req/s: cache+batching / naive", "cached", med("e_cached"), "naive", med("e_naive"),
        ratio(med("e_cached"), med("e_naive")), "(info)", None)
    client_hits, server_hits, diffs = [], [], []
    for report in reports("e_cached"):
        client = (report.get("cache") or {}).get("hit_ratio")
        statuses = (report.get("server_metrics") or {}).get("cache_requests_by_status") or {}
        total = sum(statuses.values())
        if client is not None and total:
            server = statuses.get("hit", 0) / total
            client_hits.append(client * 100)
            server_hits.append(server * 100)
            diffs.append(abs(client - server) * 100)
    worst = max(diffs) if diffs else None
    row("e. hit ratio %: load generator vs /metrics (worst run's gap, points)", "client",
        median(client_hits), "server", median(server_hits), worst, "gap <= 1 point",
        None if worst is None else worst <= 1.0, 2)
    summary["e. mean batch size with cache+batching"] = median(
        [(r.get("server_metrics") or {}).get("mean_batch_size") for r in reports("e_cached")])

# g: the gRPC front end beside HTTP
if reports("g_http_c1") or reports("g_grpc_c1"):
    h1, g1 = latency("g_http_c1", "p50"), latency("g_grpc_c1", "p50")
    row("g. cache-hit p50 ms at c=1: gRPC / HTTP", "grpc", g1, "http", h1, ratio(g1, h1),
        "(info)", None, 3)
    h1, g1 = latency("g_http_c1", "p99"), latency("g_grpc_c1", "p99")
    row("g. cache-hit p99 ms at c=1: gRPC / HTTP", "grpc", g1, "http", h1, ratio(g1, h1),
        "(info)", None, 3)
    h32, g32 = med("g_http_c32"), med("g_grpc_c32")
    row(f"g. cache-hit req/s at c=32: gRPC / HTTP", "grpc", g32, "http", h32, ratio(g32, h32),
        "(info)", None)
if reports("g_lone_miss"):
    p50 = latency("g_lone_miss", "p50")
    row("g. lone miss p50 ms (max 64, max_queue_delay_us 1000)", "p50", p50, "", None, None,
        "(info: about 1 ms + compute)", None, 3)

# criterion figures, when run with --criterion
crit = out / "criterion"
def crit_ns(path):
    f = crit / path / "new" / "estimates.json"
    return json.loads(f.read_text())["median"]["point_estimate"] if f.exists() else None
for size in ("4KiB", "1MiB"):
    key, raw = crit_ns(f"cache_key/key_compute/{size}"), crit_ns(f"cache_key/blake3_hash/{size}")
    if key and raw:
        r = raw / key
        row(f"criterion: key hashing {size}, blake3::hash time / key time", "key ns", key,
            "blake3 ns", raw, r, ">= 0.9", r >= 0.9, 1)
for path, goal in (("cache_serve/hit", "(info)"), ("metering/share_of_batch", "<< 1 us"),
                   ("e2e_digits/infer_cache_hit", "(info)"), ("e2e_digits/infer_miss_bypass", "(info)")):
    ns = crit_ns(path)
    if ns:
        met = ns < 100 if goal == "<< 1 us" else None
        row(f"criterion: {path}", "ns", ns, "", None, None, goal, met, 1)

lines = ["| figure | side A | side B | ratio | goal | |", "| --- | --- | --- | --- | --- | --- |"]
lines += ["| " + " | ".join(r) + " |" for r in table]
detail = []
for prefix in ("a_gateway", "a_fixed", "b_gateway_batching", "b_gateway_b32", "b_gateway_b16", "b_gateway_nobatching", "b_fixed",
               "c_cache_on", "c_cache_off", "c_cpu_on", "c_cpu_off", "c_twice_on", "c_rate_on", "c_rate_off", "c_full_on", "c_full_off", "d_gateway", "d_nobatch", "e_cached", "e_naive",
               "g_http_c1", "g_grpc_c1", "g_http_c32", "g_grpc_c32", "g_lone_miss"):
    if reports(prefix):
        idle = median([read_number(stem + ".foreign") for _, stem in runs(prefix)])
        detail.append(f"| {prefix} | {len(reports(prefix))} | {fmt(med(prefix), 1)} | "
                      f"{fmt(latency(prefix, 'p50'), 3)} | {fmt(latency(prefix, 'p99'), 3)} | "
                      f"{fmt(cpu_us_per_request(prefix), 1)} | {fmt(idle)} |")
if detail:
    lines += ["", "| side | runs | req/s | p50 ms | p99 ms | server CPU us/request | others' CPU % during |",
              "| --- | --- | --- | --- | --- | --- | --- |"] + detail
text = "\n".join(lines)
print(text)
extra = {k: v for k, v in summary.items() if not isinstance(v, dict)}
if extra:
    print()
    for key, value in extra.items():
        print(f"{key}: {value}")
(out / "summary.md").write_text(text + "\n")
json.dump(summary, open(out / "summary.json", "w"), indent=1, default=str)
notes = out / "notes.txt"
if notes.exists():
    print("\nnotes:\n" + notes.read_text())
PY
echo "reports: $OUT/*.json, $OUT/summary.md; took $((SECONDS - STARTED))s"
