#!/usr/bin/env bash
# Triton vs Tollgate (and MLServer, for information), each serving models/digits on its own, side
# by side at 32 concurrent clients with the cache off. The goal it checks (issue tracker,
# "peers"): Tollgate answers >= 10x Triton's requests/s at c=32 with <= 1/5 of its p99. The goal
# names only Triton; MLServer's figures and the ratios to them are reported as information.
#
#   A  Triton (the one nvidia-pytriton bundles) serving models/digits through
#      scripts/peers/triton_digits.py: Python backend, onnxruntime with one thread, Triton's
#      dynamic batcher at max_batch_size 32, max_queue_delay_microseconds 1000
#   B  Tollgate (release build) serving the same models/digits/1/model.onnx itself through ONNX
#      Runtime with the same batch settings: max_batch_size = 32, max_queue_delay_us = 1000,
#      cache off ([cache] enabled = false and cache = false on the model), instances = 1,
#      intra_op_threads = 1
#   C  MLServer 1.7.1 (only when installed under .peers/mlserver; otherwise reported as skipped)
#      serving the same model through scripts/peers/mlserver_runtime.py (onnxruntime, one
#      thread) with its adaptive batching at the same settings: "max_batch_size": 32,
#      "max_batch_time": 0.001 (seconds) in model-settings.json; "parallel_workers": 0 (inference
#      in the server's own process, as scripts/peers/check.sh runs it), "debug": false (no
#      per-request access log), MLServer's cache off (its default)
#
# All sides are loaded by the same generator the same way: tollgate-loadtest --concurrency 32
# --distinct 1000 --seed S, straight at each server's port, with --protocol http-binary for A and
# B. MLServer 1.7.1 cannot parse the binary tensor extension (the request fails with HTTP 500), so
# C is loaded with --protocol http (JSON over the same REST API), or grpc with
# C32_MLSERVER_PROTOCOL=grpc. Before any measurement every side must answer the 16 rows of
# models/digits/test_rows.json with the labels pinned there (and probabilities that agree with
# Tollgate's), and MLServer must report that it loaded the batch settings above. Install Triton
# once with `scripts/peers/check.sh triton`, MLServer with `scripts/peers/check.sh mlserver`.
#
# Usage: scripts/peers/c32.sh
# Knobs (environment): C32_RUNS (runs per side, default 3), C32_DURATION (measured seconds,
# default 10), C32_WARMUP (default 2), C32_SEED (seed of the first round, default 1; round r
# uses seed+r-1 on every side), C32_TIME_LIMIT (seconds for the whole script, default 1200),
# C32_SETTLE_MAX (seconds to wait for idle CPUs before each run, default 45),
# C32_MLSERVER_PROTOCOL (http, the default, or grpc: how C is loaded).
# The order of the sides rotates from round to round: A B C, B C A, C A B, ... (A B, B A, ...
# when C is skipped). A run during which other processes used more than 15 % of the CPUs is run
# once more (the repeat is the one kept).
# Figures per side: medians over the runs of req/s, p50 and p99 (the load generator's reports)
# and of server CPU per request (CPU time of the server's whole process tree from the end of the
# warm-up to the end of the run, divided by the requests answered in the measured period).
# The goal counts as met only if Tollgate's runs had no errors.
# Results: target/bench/peers_c32_{triton,tollgate,mlserver}_r<N>.json (the load generator's
# report per run; earlier ones are removed first) and target/bench/peers_c32_summary.json (runs,
# medians, ratios, verdicts).
# Everything binds 127.0.0.1; every process started here is stopped on exit.
set -euo pipefail
cd "$(dirname "$0")/../.."

RUNS=${C32_RUNS:-3}
DURATION=${C32_DURATION:-10}
WARMUP=${C32_WARMUP:-2}
SEED=${C32_SEED:-1}
TIME_LIMIT=${C32_TIME_LIMIT:-1200}
SETTLE_MAX=${C32_SETTLE_MAX:-45}
MLSERVER_PROTOCOL=${C32_MLSERVER_PROTOCOL:-http}
CONCURRENCY=32
DISTINCT=1000
MAX_BATCH_SIZE=32
MAX_QUEUE_DELAY_US=1000
FOREIGN_MAX=15
OUT=target/bench
peers=.peers
python=${PYTHON:-python3}
triton_python="$peers/triton/bin/python"
mlserver_bin="$peers/mlserver/bin/mlserver"

case $MLSERVER_PROTOCOL in
    http | grpc) ;;
    *) echo "c32.sh: C32_MLSERVER_PROTOCOL must be http or grpc, not '$MLSERVER_PROTOCOL'" >&2; exit 2 ;;
esac
if [ ! -x "$triton_python" ] || [ ! -f "$peers/triton/.installed" ]; then
    echo "c32.sh: Triton (nvidia-pytriton) is not installed under $peers/triton;" \
        "run scripts/peers/check.sh triton once first" >&2
    exit 1
fi
have_mlserver=0
if [ -x "$mlserver_bin" ] && [ -f "$peers/mlserver/.installed" ]; then have_mlserver=1; fi
# bench.sh passes the binaries it measures everything else with; alone, target/release's.
bin_dir=${TOLLGATE_BENCH_BIN_DIR:-target/release}
if [ ! -x "$bin_dir/tollgate" ] || [ ! -x "$bin_dir/tollgate-loadtest" ]; then
    cargo build --release --bin tollgate -p tollgate-loadtest
    bin_dir=target/release
fi
mkdir -p "$OUT"
# Reports of an earlier invocation (other sides, more runs) must not pass for this one's.
rm -f "$OUT"/peers_c32_triton_r*.json "$OUT"/peers_c32_tollgate_r*.json \
    "$OUT"/peers_c32_mlserver_r*.json "$OUT/peers_c32_summary.json"
tmp=$(mktemp -d "${TMPDIR:-/tmp}/tollgate-c32.XXXXXX")
# Private copies, so a rebuild elsewhere during the run cannot swap the binaries under us.
cp "$bin_dir/tollgate" "$bin_dir/tollgate-loadtest" "$tmp/"
GATEWAY="$tmp/tollgate"
LOADTEST="$tmp/tollgate-loadtest"
TICK_US=$((1000000 / $(getconf CLK_TCK)))

# ---- processes -------------------------------------------------------------------------------
triton_pid=""
gateway_pid=""
mlserver_pid=""
watchdog_pid=""
sampler_pid=""
server_pids=()       # every server started so far (A, B, C)
children=()          # "pid:starttime" of what the Python servers started (tritonserver, stubs, ...)
pytriton_cache="$HOME/.cache/pytriton"
workspaces_before=$(ls "$pytriton_cache" 2>/dev/null || true)

script_name=c32.sh
# shellcheck source=scripts/peers/common.sh
source scripts/peers/common.sh

stop_group() { # PID SECONDS: TERM the process group PID leads, KILL it if still there after SECONDS
    kill -- "-$1" 2>/dev/null || kill "$1" 2>/dev/null || true
    wait_gone "$1" "$2" || kill -KILL -- "-$1" 2>/dev/null || true
}

remember_children() { # PID: note what it started, so cleanup can reach strays that left its group
    local pid start
    for pid in $(descendants "$1"); do
        start=$(start_time_of "$pid")
        [ -n "$start" ] && children+=("$pid:$start")
    done
    return 0
}

cleanup() {
    local entry pid start
    trap - EXIT INT TERM
    if [ -n "$watchdog_pid" ]; then kill "$watchdog_pid" 2>/dev/null || true; fi
    if [ -n "$sampler_pid" ]; then
        for pid in $(descendants "$sampler_pid") "$sampler_pid"; do kill "$pid" 2>/dev/null || true; done
    fi
    if [ -n "$gateway_pid" ]; then
        kill "$gateway_pid" 2>/dev/null || true
        wait_gone "$gateway_pid" 10 || kill -KILL "$gateway_pid" 2>/dev/null || true
    fi
    # MLServer shuts down its HTTP, gRPC and metrics servers on SIGTERM.
    if [ -n "$mlserver_pid" ]; then stop_group "$mlserver_pid" 20; fi
    # Triton's launcher turns SIGTERM into a normal exit, which stops tritonserver through pytriton.
    if [ -n "$triton_pid" ]; then stop_group "$triton_pid" 45; fi
    kill_strays "${children[@]}"
    wait 2>/dev/null || true
    remove_new_workspaces "$pytriton_cache" "$workspaces_before"
    rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'echo "c32.sh: stopped (time limit ${TIME_LIMIT}s or TERM)" >&2; exit 124' TERM
start_watchdog "$TIME_LIMIT"

# ---- A: Triton -------------------------------------------------------------------------------
model="$PWD/models/digits/1/model.onnx"
triton_http=$(free_port); triton_grpc=$(free_port); triton_metrics=$(free_port)
# scripts/peers/triton_local.py binds Triton to 127.0.0.1 with a token this script knows.
triton_token=$("$python" -c 'import secrets; print(secrets.token_urlsafe(24))')
prefix=$("$triton_python" -c 'import sys; print(sys.base_prefix)')
echo "A: starting Triton (pytriton) on 127.0.0.1: http $triton_http, grpc $triton_grpc," \
    "metrics $triton_metrics (max_batch_size $MAX_BATCH_SIZE, max_queue_delay ${MAX_QUEUE_DELAY_US} us)"
# Its own process group (setsid), so stopping it reaches what it started. The Python backend's
# stub links the system libpython unless pointed at this interpreter's library folder.
TRITON_LOCAL_TOKEN="$triton_token" LD_LIBRARY_PATH="$prefix/lib:${LD_LIBRARY_PATH:-}" setsid "$triton_python" scripts/peers/triton_local.py \
    "$model" "$triton_http" "$triton_grpc" "$triton_metrics" \
    --max-batch-size "$MAX_BATCH_SIZE" --max-queue-delay-us "$MAX_QUEUE_DELAY_US" \
    >"$tmp/triton.log" 2>&1 &
triton_pid=$!
server_pids+=("$triton_pid")
wait_http "http://127.0.0.1:$triton_http/v2/models/digits/ready" 180 "$triton_pid" "$tmp/triton.log"
wait_http "http://127.0.0.1:$triton_metrics/metrics" 30 "$triton_pid" "$tmp/triton.log"
remember_children "$triton_pid"

# ---- B: Tollgate -----------------------------------------------------------------------------
gateway_http=$(free_port); gateway_grpc=$(free_port)
cat >"$tmp/tollgate.toml" <<TOML
[server]
http_addr = "127.0.0.1:$gateway_http"
grpc_addr = "127.0.0.1:$gateway_grpc"
max_concurrent_requests = 4096

[cache]
enabled = false

[ledger]
path = "$tmp/ledger.sqlite"

[[models]]
name = "digits"
version = "1"
path = "$model"
device = "cpu"
instances = 1
intra_op_threads = 1
max_batch_size = $MAX_BATCH_SIZE
max_queue_delay_us = $MAX_QUEUE_DELAY_US
cache = false
TOML
"$GATEWAY" check-config --config "$tmp/tollgate.toml" >/dev/null
echo "B: starting Tollgate on 127.0.0.1: http $gateway_http, grpc $gateway_grpc (same model, same" \
    "batch settings, cache off)"
"$GATEWAY" serve --config "$tmp/tollgate.toml" --http-addr "127.0.0.1:$gateway_http" \
    --grpc-addr "127.0.0.1:$gateway_grpc" >"$tmp/tollgate.log" 2>&1 &
gateway_pid=$!
server_pids+=("$gateway_pid")
wait_http "http://127.0.0.1:$gateway_http/v2/models/digits/ready" 60 "$gateway_pid" "$tmp/tollgate.log"

# ---- C: MLServer (when installed) ------------------------------------------------------------
max_batch_time=$(awk -v us="$MAX_QUEUE_DELAY_US" 'BEGIN { printf "%g\n", us / 1000000 }')
mlserver_http=""; mlserver_grpc=""
if [ "$have_mlserver" = 1 ]; then
    mlserver_http=$(free_port); mlserver_grpc=$(free_port); mlserver_metrics=$(free_port)
    mlserver_root="$tmp/mlserver"
    mkdir -p "$mlserver_root/digits"
    cp scripts/peers/mlserver_runtime.py "$mlserver_root/digits/"
    # host covers the HTTP, gRPC and metrics servers; metrics_dir and environments_dir stay
    # inside the scratch folder.
    cat >"$mlserver_root/settings.json" <<JSON
{"host": "127.0.0.1", "http_port": $mlserver_http, "grpc_port": $mlserver_grpc,
 "metrics_port": $mlserver_metrics, "parallel_workers": 0, "debug": false,
 "metrics_dir": "$mlserver_root/.metrics", "environments_dir": "$mlserver_root/.envs"}
JSON
    mlserver_model_settings "$mlserver_root/digits/model-settings.json" "$model" "$MAX_BATCH_SIZE" "$max_batch_time"
    echo "C: starting MLServer on 127.0.0.1: http $mlserver_http, grpc $mlserver_grpc," \
        "metrics $mlserver_metrics (max_batch_size $MAX_BATCH_SIZE, max_batch_time ${max_batch_time} s," \
        "parallel_workers 0); loaded over $MLSERVER_PROTOCOL"
    mlserver_abs="$PWD/$mlserver_bin"
    (cd "$mlserver_root" && exec setsid "$mlserver_abs" start .) >"$tmp/mlserver.log" 2>&1 &
    mlserver_pid=$!
    server_pids+=("$mlserver_pid")
    wait_http "http://127.0.0.1:$mlserver_http/v2/models/digits/ready" 120 "$mlserver_pid" "$tmp/mlserver.log"
    remember_children "$mlserver_pid"
else
    echo "C: MLServer is not installed under $peers/mlserver (scripts/peers/check.sh mlserver" \
        "installs it): skipped"
fi

# ---- every side answers correctly ------------------------------------------------------------
sides_at=("triton=127.0.0.1:$triton_http" "tollgate=127.0.0.1:$gateway_http")
[ "$have_mlserver" = 1 ] && sides_at+=("mlserver=127.0.0.1:$mlserver_http")
"$python" - models/digits/test_rows.json "$MAX_BATCH_SIZE" "$max_batch_time" "${sides_at[@]}" <<'PY'
import json, math, sys, urllib.request

rows = json.load(open(sys.argv[1]))
max_batch_size, max_batch_time = int(sys.argv[2]), float(sys.argv[3])
inputs, expected = rows["input"], rows["label"]
body = json.dumps({"inputs": [{"name": "input", "datatype": "FP32", "shape": [len(inputs), 64],
                               "data": [v for row in inputs for v in row]}]}).encode()


def flat(data):
    while data and isinstance(data[0], list):
        data = [v for row in data for v in row]
    return data


answers = {}
for side, address in (arg.split("=", 1) for arg in sys.argv[4:]):
    request = urllib.request.Request(f"http://{address}/v2/models/digits/infer", data=body,
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as response:
        outputs = {o["name"]: flat(o["data"]) for o in json.load(response)["outputs"]}
    labels = [int(v) for v in outputs["label"]]
    if labels != expected:
        sys.exit(f"c32.sh: {side} answered labels {labels}, test_rows.json pins {expected}")
    answers[side] = outputs["probabilities"]
    if side == "mlserver":
        # What MLServer loaded from model-settings.json, as mlserver_runtime.py reports it.
        with urllib.request.urlopen(f"http://{address}/digits/executions", timeout=10) as response:
            loaded = json.load(response)
        if (loaded["max_batch_size"] != max_batch_size
                or not math.isclose(loaded["max_batch_time"], max_batch_time)
                or loaded["adaptive_batching"] is not True):
            sys.exit(f"c32.sh: MLServer did not load the batch settings asked for: {loaded}")
ours = answers["tollgate"]
worst = 0.0
for side, theirs in answers.items():
    if len(theirs) != len(ours) or not all(
            math.isclose(x, y, rel_tol=1e-4, abs_tol=1e-5) for x, y in zip(theirs, ours)):
        sys.exit(f"c32.sh: {side}'s and Tollgate's probabilities differ "
                 f"(max |diff| {max(abs(x - y) for x, y in zip(theirs, ours)):g})")
    worst = max([worst] + [abs(x - y) for x, y in zip(theirs, ours)])
print(f"check: {', '.join(answers)} answer the {len(expected)} test rows with the pinned labels; "
      f"probabilities agree (max |diff| {worst:.1e})"
      + ("; MLServer loaded max_batch_size {}, max_batch_time {:g} s, adaptive batching on"
         .format(max_batch_size, max_batch_time) if "mlserver" in answers else ""))
PY

# ---- runs ------------------------------------------------------------------------------------
manifest="$tmp/manifest.tsv"
: >"$manifest"

# SIDE ROUND -> writes TAG.row: side round seed report tag cpu_us ours_ticks machine_ticks protocol
run_once() {
    local side=$1 round=$2 seed=$((SEED + $2 - 1)) target pid name tag protocol=http-binary extra=()
    case $side in
        triton) target="127.0.0.1:$triton_http"; pid=$triton_pid ;;
        tollgate)
            target="127.0.0.1:$gateway_http"; pid=$gateway_pid
            extra=(--metrics-url "http://127.0.0.1:$gateway_http/metrics") ;;
        mlserver)
            pid=$mlserver_pid; protocol=$MLSERVER_PROTOCOL
            if [ "$protocol" = grpc ]; then target="127.0.0.1:$mlserver_grpc"; else target="127.0.0.1:$mlserver_http"; fi ;;
    esac
    name="peers_c32_${side}_r${round}"
    tag="$tmp/$name"
    rm -f "$tag.cpu0"
    settle
    case $side in
        triton) fetch "http://127.0.0.1:$triton_metrics/metrics" "$tag.before" ;;
        mlserver) fetch "http://127.0.0.1:$mlserver_http/digits/executions" "$tag.before" ;;
    esac
    local ours0 machine0 ours1 machine1 side1
    ours0=$(tree_cpu_ticks "${server_pids[@]}"); machine0=$(machine_ticks)
    # The server's CPU counts from the end of the warm-up, as the load generator's figures do.
    (sleep "$WARMUP"; tree_cpu_ticks "$pid" >"$tag.cpu0") &
    sampler_pid=$!
    timeout $((WARMUP + DURATION + 60)) /usr/bin/time -f '%U %S' -o "$tag.loadtest_cpu" \
        "$LOADTEST" --target "$target" --protocol "$protocol" --model digits \
        --concurrency "$CONCURRENCY" --duration "${DURATION}s" --warmup "${WARMUP}s" \
        --distinct "$DISTINCT" --seed "$seed" --timeout 10s --no-progress \
        --json "$OUT/$name.json" "${extra[@]}" >"$tag.stdout" 2>"$tag.stderr" || {
        echo "c32.sh: the load generator failed against $side (round $round):" >&2
        cat "$tag.stderr" >&2
        return 1
    }
    side1=$(tree_cpu_ticks "$pid")
    ours1=$(tree_cpu_ticks "${server_pids[@]}"); machine1=$(machine_ticks)
    wait "$sampler_pid" 2>/dev/null || true
    sampler_pid=""
    case $side in
        triton) fetch "http://127.0.0.1:$triton_metrics/metrics" "$tag.after" ;;
        mlserver) fetch "http://127.0.0.1:$mlserver_http/digits/executions" "$tag.after" ;;
    esac
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$side" "$round" "$seed" "$OUT/$name.json" "$tag" \
        "$(( (side1 - $(cat "$tag.cpu0")) * TICK_US ))" "$((ours1 - ours0))" \
        "$(echo "$machine0 $machine1" | awk '{ print $3 - $1, $4 - $2 }')" "$protocol" >"$tag.row"
    "$python" - "$OUT/$name.json" "$side" "$round" "$protocol" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
lat = r["latency_ms"]
print(f"  {sys.argv[2]:8} r{sys.argv[3]}: {r['requests_per_s']:9.1f} req/s  p50 {lat['p50']:.2f} ms"
      f"  p99 {lat['p99']:.2f} ms  errors {r['errors_total']}  ({sys.argv[4]})")
PY
}

others_share() { # TAG -> percent of all CPUs used by processes other than the servers and the load generator
    local lt
    lt=$(awk -v hz="$(getconf CLK_TCK)" '{ print ($1 + $2) * hz }' "$1.loadtest_cpu" 2>/dev/null || echo 0)
    awk -v lt="$lt" -F'\t' '{ split($8, m, " "); others = m[1] - $7 - lt
                              printf "%d\n", (m[2] > 0 && others > 0 ? 100 * others / m[2] : 0) }' "$1.row"
}

sides=(triton tollgate)
[ "$have_mlserver" = 1 ] && sides+=(mlserver)
if [ ${#sides[@]} = 3 ]; then rotation="A B C / B C A / C A B"; else rotation="A B / B A"; fi
echo "load: c=$CONCURRENCY, ${DURATION}s after ${WARMUP}s warm-up, $DISTINCT distinct, uniform;" \
    "http-binary for Triton and Tollgate$([ "$have_mlserver" = 1 ] && echo ", $MLSERVER_PROTOCOL for MLServer");" \
    "$RUNS runs per side, order rotating $rotation ..."
for round in $(seq 1 "$RUNS"); do
    for i in $(seq 0 $((${#sides[@]} - 1))); do
        side=${sides[$(((round - 1 + i) % ${#sides[@]}))]}
        tag="$tmp/peers_c32_${side}_r${round}"
        run_once "$side" "$round"
        share=$(others_share "$tag")
        if [ "$share" -gt "$FOREIGN_MAX" ]; then
            echo "  others used ${share}% of the CPUs during that run; running it once more"
            run_once "$side" "$round"
            share=$(others_share "$tag")
        fi
        printf '%s\t%s\n' "$(cat "$tag.row")" "$share" >>"$manifest"
    done
done

# ---- summary ---------------------------------------------------------------------------------
"$python" - "$manifest" "$OUT/peers_c32_summary.json" "$CONCURRENCY" "$DURATION" "$WARMUP" \
    "$DISTINCT" "$SEED" "$MAX_BATCH_SIZE" "$MAX_QUEUE_DELAY_US" "$have_mlserver" \
    "$MLSERVER_PROTOCOL" "$peers/mlserver" <<'PY'
import json, os, re, statistics, sys

manifest, out_path = sys.argv[1], sys.argv[2]
concurrency, duration, warmup, distinct, seed, max_batch, delay_us = sys.argv[3:10]
have_mlserver, mlserver_protocol, mlserver_dir = sys.argv[10] == "1", sys.argv[11], sys.argv[12]
RPS_GOAL, P99_GOAL = 10.0, 0.2
SIDES = ["triton", "tollgate"] + (["mlserver"] if have_mlserver else [])
LABELS = {"triton": "A Triton (pytriton)", "tollgate": "B Tollgate",
          "mlserver": f"C MLServer ({'JSON' if mlserver_protocol == 'http' else 'gRPC'})"}


def scrape(path):
    """Prometheus text -> {name: sum over its series}."""
    sums = {}
    for line in open(path):
        m = re.match(r"^([A-Za-z_:][A-Za-z0-9_:]*)(\{[^}]*\})?\s+(\S+)", line)
        if m and not line.startswith("#"):
            sums[m.group(1)] = sums.get(m.group(1), 0.0) + float(m.group(3))
    return sums


runs = []
for line in open(manifest):
    side, rnd, run_seed, report_path, tag, cpu_us, _ours, _machine, protocol, others = \
        line.rstrip("\n").split("\t")
    report = json.load(open(report_path))
    rows_per_execution = None
    if side == "triton" and os.path.exists(tag + ".after"):
        before, after = scrape(tag + ".before"), scrape(tag + ".after")
        execs = after.get("nv_inference_exec_count", 0) - before.get("nv_inference_exec_count", 0)
        rows = after.get("nv_inference_count", 0) - before.get("nv_inference_count", 0)
        rows_per_execution = rows / execs if execs else None
    elif side == "mlserver" and os.path.exists(tag + ".after"):
        before, after = json.load(open(tag + ".before")), json.load(open(tag + ".after"))
        execs = after["executions"] - before["executions"]
        rows_per_execution = (after["rows"] - before["rows"]) / execs if execs else None
    elif side == "tollgate":
        rows_per_execution = (report.get("server_metrics") or {}).get("mean_batch_size")
    runs.append({
        "side": side, "round": int(rnd), "seed": int(run_seed), "protocol": protocol,
        "report": report_path,
        "requests_per_s": report["requests_per_s"],
        "p50_ms": report["latency_ms"]["p50"], "p99_ms": report["latency_ms"]["p99"],
        "ok": report["ok"], "errors_total": report["errors_total"], "errors": report["errors"],
        # The server's whole process tree, from the end of the warm-up to the end of the run.
        "server_cpu_us_per_request": int(cpu_us) / report["ok"] if report["ok"] else None,
        # Over the warm-up and the measured period.
        "rows_per_execution": rows_per_execution,
        "others_cpu_percent": int(others),
    })

keys = ["requests_per_s", "p50_ms", "p99_ms", "server_cpu_us_per_request", "rows_per_execution",
        "errors_total", "others_cpu_percent"]
medians = {"mlserver": None}
for side in SIDES:
    mine = [r for r in runs if r["side"] == side]
    medians[side] = {k: statistics.median([r[k] for r in mine if r[k] is not None])
                     if any(r[k] is not None for r in mine) else None for k in keys}


def ratio(x, y):
    return x / y if x is not None and y else None


a, b, c = medians["triton"], medians["tollgate"], medians["mlserver"]
clean = all(r["errors_total"] == 0 for r in runs if r["side"] == "tollgate")
rps_ratio = ratio(b["requests_per_s"], a["requests_per_s"])
p99_ratio = ratio(b["p99_ms"], a["p99_ms"])
cpu_ratio = ratio(a["server_cpu_us_per_request"], b["server_cpu_us_per_request"])
goals = {
    "requests_per_s_tollgate_over_triton": {
        "value": rps_ratio, "goal": f">= {RPS_GOAL:g}",
        "met": bool(clean and rps_ratio is not None and rps_ratio >= RPS_GOAL)},
    "p99_tollgate_over_triton": {
        "value": p99_ratio, "goal": f"<= {P99_GOAL:g}",
        "met": bool(clean and p99_ratio is not None and p99_ratio <= P99_GOAL)},
}
skipped = None if have_mlserver else f"not installed under {mlserver_dir}"
info = {"note": "for information only: the goal names only Triton",
        "requests_per_s_tollgate_over_mlserver": ratio(b["requests_per_s"], c["requests_per_s"]) if c else None,
        "p99_tollgate_over_mlserver": ratio(b["p99_ms"], c["p99_ms"]) if c else None,
        "server_cpu_per_request_mlserver_over_tollgate":
            ratio(c["server_cpu_us_per_request"], b["server_cpu_us_per_request"]) if c else None}
json.dump({"load": {"protocol": "http-binary", "concurrency": int(concurrency),
                    "duration_s": float(duration), "warmup_s": float(warmup),
                    "distinct": int(distinct), "first_seed": int(seed)},
           "batching": {"max_batch_size": int(max_batch), "max_queue_delay_us": int(delay_us),
                        "cache": False},
           "sides": {"triton": {"side": "A", "protocol": "http-binary"},
                     "tollgate": {"side": "B", "protocol": "http-binary"},
                     "mlserver": {"side": "C", "protocol": mlserver_protocol,
                                  "max_batch_time_s": int(delay_us) / 1e6,
                                  "parallel_workers": 0, "skipped": skipped}},
           "runs": runs, "medians": medians,
           "ratios": {"p50_tollgate_over_triton": ratio(b["p50_ms"], a["p50_ms"]),
                      "server_cpu_per_request_triton_over_tollgate": cpu_ratio},
           "goals": goals, "tollgate_error_free": clean,
           "info_vs_mlserver": info},
          open(out_path, "w"), indent=2)


def fmt(v, spec):
    return "–" if v is None else format(v, spec)


print()
print("| side | run | load | req/s | p50 ms | p99 ms | server CPU us/req | rows/exec | errors "
      "| others' CPU |")
print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
for r in runs:
    print(f"| {r['side']} | {r['round']} | {r['protocol']} | {r['requests_per_s']:,.0f} "
          f"| {r['p50_ms']:.2f} | {r['p99_ms']:.2f} | {fmt(r['server_cpu_us_per_request'], '.1f')} "
          f"| {fmt(r['rows_per_execution'], '.2f')} | {r['errors_total']} "
          f"| {r['others_cpu_percent']} % |")
print()
print(f"medians over {len(runs) // len(SIDES)} run(s) per side (c={concurrency}, cache off, "
      f"max_batch_size {max_batch}, max_queue_delay {delay_us} us)")
print("| side | req/s | p50 ms | p99 ms | server CPU us/req | rows/exec | errors |")
print("| --- | --- | --- | --- | --- | --- | --- |")
for side in ("triton", "tollgate", "mlserver"):
    m = medians[side]
    if m is None:
        print(f"| {LABELS[side]} | skipped ({skipped}) | | | | | |")
        continue
    print(f"| {LABELS[side]} | {m['requests_per_s']:,.0f} | {m['p50_ms']:.2f} | {m['p99_ms']:.2f} "
          f"| {fmt(m['server_cpu_us_per_request'], '.1f')} | {fmt(m['rows_per_execution'], '.2f')} "
          f"| {m['errors_total']:g} |")
print()
print("| goal | Tollgate / Triton | target | verdict |")
print("| --- | --- | --- | --- |")
for label, key in (("req/s", "requests_per_s_tollgate_over_triton"),
                   ("p99", "p99_tollgate_over_triton")):
    g = goals[key]
    print(f"| {label} | {fmt(g['value'], '.2f')} | {g['goal']} | {'met' if g['met'] else 'missed'} |")
if not clean:
    print("(Tollgate had errors, so neither goal counts as met)")
print(f"server CPU per request, Triton / Tollgate: {fmt(cpu_ratio, '.1f')}x")
print()
if c is None:
    print(f"MLServer: skipped ({skipped}; scripts/peers/check.sh mlserver installs it)")
else:
    print("| vs MLServer | Tollgate / MLServer | |")
    print("| --- | --- | --- |")
    print(f"| req/s | {fmt(info['requests_per_s_tollgate_over_mlserver'], '.2f')} | (info) |")
    print(f"| p99 | {fmt(info['p99_tollgate_over_mlserver'], '.2f')} | (info) |")
    print(f"server CPU per request, MLServer / Tollgate: "
          f"{fmt(info['server_cpu_per_request_mlserver_over_tollgate'], '.1f')}x (info)")
    if mlserver_protocol == "http":
        print("(MLServer is loaded with JSON: it cannot parse the binary tensor extension)")
print(f"written: {out_path}")
PY
