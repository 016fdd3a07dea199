#!/usr/bin/env bash
# Triton alone vs Triton behind Tollgate on a Zipf workload: requests/s, p50/p99 and Triton's own
# device (compute) time per 1,000 client requests. Both sides are measured at Triton, so the
# device-time figures are like for like:
#   device time      the compute_infer time of Triton's model executions, each execution counted
#                    once (statistics extension, /v2/models/digits/stats, batch_stats)
#   Prometheus time  the sum of nv_inference_compute_infer_duration_us, which adds an execution's
#                    whole time to every request in it (a batch of n requests counts n times), so
#                    it overstates device time by the number of requests per execution
# plus nv_inference_exec_count, nv_inference_request_success and nv_inference_count. "Per 1,000
# client requests" divides the deltas over the warm-up + measured window by the client requests
# the receiving server (Triton for A, the front for B) counted over the same window.
#
#   A  the load generator talks to Triton's HTTP port directly (binary tensors)
#   B  the load generator talks to a Tollgate front (release build, cache on, batching 32 rows /
#      1 ms, 4 upstream requests in flight) that forwards misses to the same Triton over gRPC
#
# Triton is the one bundled with nvidia-pytriton, serving models/digits through
# scripts/peers/triton_digits.py (Python backend, onnxruntime with one thread, Triton's dynamic
# batcher at max 64 rows / 2 ms). Install it once with `scripts/peers/check.sh triton`.
#
# Usage: scripts/peers/zipf.sh
# Knobs (environment): ZIPF_RUNS (runs per side, default 2), ZIPF_DURATION (measured seconds,
# default 10), ZIPF_WARMUP (default 2), ZIPF_SEED (seed of the first round, default 1; round r
# uses seed+r-1 on both sides), ZIPF_TIME_LIMIT (seconds for the whole script, default 900),
# ZIPF_SETTLE_MAX (seconds to wait for idle CPUs before each run, default 45).
# Runs alternate A, B, A, B, ... Each B run starts from an empty cache (purged before the run) and
# its warm-up fills it. A run during which other processes used more than 15 % of the CPUs is run
# once more (the repeat is the one kept).
# Results: target/bench/peers_zipf_{triton,front}_r<N>.json (the load generator's report per run)
# and target/bench/peers_zipf_summary.json (Triton metric deltas, CPU use, medians, ratios).
# Everything binds 127.0.0.1; every process started here is stopped on exit.
set -euo pipefail
cd "$(dirname "$0")/../.."

RUNS=${ZIPF_RUNS:-2}
DURATION=${ZIPF_DURATION:-10}
WARMUP=${ZIPF_WARMUP:-2}
SEED=${ZIPF_SEED:-1}
TIME_LIMIT=${ZIPF_TIME_LIMIT:-900}
SETTLE_MAX=${ZIPF_SETTLE_MAX:-45}
CONCURRENCY=32
DISTINCT=10000
ZIPF=1.1
OUT=target/bench
peers=.peers
python=${PYTHON:-python3}
triton_python="$peers/triton/bin/python"

if [ ! -x "$triton_python" ] || [ ! -f "$peers/triton/.installed" ]; then
    echo "zipf.sh: Triton (nvidia-pytriton) is not installed under $peers/triton;" \
        "run scripts/peers/check.sh triton once first" >&2
    exit 1
fi
if [ ! -x target/release/tollgate ] || [ ! -x target/release/tollgate-loadtest ]; then
    cargo build --release --bin tollgate -p tollgate-loadtest
fi
mkdir -p "$OUT"
tmp=$(mktemp -d "${TMPDIR:-/tmp}/tollgate-zipf.XXXXXX")
# Private copies, so a rebuild elsewhere during the run cannot swap the binaries under us.
cp target/release/tollgate target/release/tollgate-loadtest "$tmp/"
GATEWAY="$tmp/tollgate"
LOADTEST="$tmp/tollgate-loadtest"

# ---- processes -------------------------------------------------------------------------------
triton_pid=""
front_pid=""
watchdog_pid=""
triton_children=()   # "pid:starttime" of what Triton's launcher started (tritonserver, stubs)
pytriton_cache="$HOME/.cache/pytriton"
workspaces_before=$(ls "$pytriton_cache" 2>/dev/null || true)

script_name=zipf.sh
# shellcheck source=scripts/peers/common.sh
source scripts/peers/common.sh

cleanup() {
    local entry pid start
    trap - EXIT INT TERM
    if [ -n "$watchdog_pid" ]; then kill "$watchdog_pid" 2>/dev/null || true; fi
    if [ -n "$front_pid" ]; then
        kill "$front_pid" 2>/dev/null || true
        wait_gone "$front_pid" 10 || kill -KILL "$front_pid" 2>/dev/null || true
    fi
    if [ -n "$triton_pid" ]; then
        # The launcher turns SIGTERM into a normal exit, which stops tritonserver through pytriton.
        kill -- "-$triton_pid" 2>/dev/null || kill "$triton_pid" 2>/dev/null || true
        wait_gone "$triton_pid" 45 || kill -KILL -- "-$triton_pid" 2>/dev/null || true
    fi
    kill_strays "${triton_children[@]}"
    wait 2>/dev/null || true
    remove_new_workspaces "$pytriton_cache" "$workspaces_before"
    rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'echo "zipf.sh: stopped (time limit ${TIME_LIMIT}s or TERM)" >&2; exit 124' TERM
start_watchdog "$TIME_LIMIT"

# ---- Triton ----------------------------------------------------------------------------------
model="$PWD/models/digits/1/model.onnx"
triton_http=$(free_port); triton_grpc=$(free_port); triton_metrics=$(free_port)
# scripts/peers/triton_local.py binds Triton to 127.0.0.1 with a token this script knows.
triton_token=$("$python" -c 'import secrets; print(secrets.token_urlsafe(24))')
prefix=$("$triton_python" -c 'import sys; print(sys.base_prefix)')
echo "starting Triton (pytriton) on 127.0.0.1: http $triton_http, grpc $triton_grpc, metrics $triton_metrics"
# Its own process group (setsid), so stopping it reaches what it started. The Python backend's
# stub links the system libpython unless pointed at this interpreter's library folder.
TRITON_LOCAL_TOKEN="$triton_token" LD_LIBRARY_PATH="$prefix/lib:${LD_LIBRARY_PATH:-}" setsid "$triton_python" scripts/peers/triton_local.py \
    "$model" "$triton_http" "$triton_grpc" "$triton_metrics" >"$tmp/triton.log" 2>&1 &
triton_pid=$!
wait_http "http://127.0.0.1:$triton_http/v2/models/digits/ready" 180 "$triton_pid" "$tmp/triton.log"
wait_http "http://127.0.0.1:$triton_metrics/metrics" 30 "$triton_pid" "$tmp/triton.log"
for pid in $(descendants "$triton_pid"); do
    start=$(start_time_of "$pid")
    [ -n "$start" ] && triton_children+=("$pid:$start")
done

# ---- Tollgate front --------------------------------------------------------------------------
front_http=$(free_port); front_grpc=$(free_port)
cat >"$tmp/front.toml" <<TOML
[server]
http_addr = "127.0.0.1:$front_http"
grpc_addr = "127.0.0.1:$front_grpc"

[cache]
enabled = true
max_bytes = "256MiB"

[ledger]
path = "$tmp/ledger.sqlite"

[[models]]
name = "digits"
upstream = "grpc://127.0.0.1:$triton_grpc"
upstream_model = "digits"
cache = true
max_batch_size = 32
max_queue_delay_us = 1000
instances = 4
TOML
"$GATEWAY" check-config --config "$tmp/front.toml" >/dev/null
echo "starting the Tollgate front on 127.0.0.1: http $front_http (upstream grpc://127.0.0.1:$triton_grpc)"
"$GATEWAY" serve --config "$tmp/front.toml" >"$tmp/front.log" 2>&1 &
front_pid=$!
wait_http "http://127.0.0.1:$front_http/v2/models/digits/ready" 60 "$front_pid" "$tmp/front.log"

# ---- runs ------------------------------------------------------------------------------------
manifest="$tmp/manifest.tsv"
: >"$manifest"

run_once() { # SIDE ROUND -> appends one line to the manifest
    local side=$1 round=$2 seed=$((SEED + $2 - 1)) target name extra=() tag
    if [ "$side" = triton ]; then
        target="127.0.0.1:$triton_http"
    else
        target="127.0.0.1:$front_http"
        extra=(--metrics-url "http://127.0.0.1:$front_http/metrics")
        fetch "http://127.0.0.1:$front_http/v1/cache" /dev/null -X DELETE
    fi
    name="peers_zipf_${side}_r${round}"
    tag="$tmp/$name"
    settle
    fetch "http://127.0.0.1:$triton_metrics/metrics" "$tag.triton_before"
    fetch "http://127.0.0.1:$triton_http/v2/models/digits/stats" "$tag.stats_before" \
        -H "triton-access-token: $triton_token"
    fetch "http://127.0.0.1:$front_http/metrics" "$tag.front_before"
    local ours0 machine0 ours1 machine1
    ours0=$(tree_cpu_ticks "$triton_pid" "$front_pid"); machine0=$(machine_ticks)
    timeout $((WARMUP + DURATION + 60)) /usr/bin/time -f '%U %S' -o "$tag.loadtest_cpu" \
        "$LOADTEST" --target "$target" --protocol http-binary --model digits \
        --concurrency "$CONCURRENCY" --duration "${DURATION}s" --warmup "${WARMUP}s" \
        --distinct "$DISTINCT" --zipf "$ZIPF" --seed "$seed" --no-progress \
        --json "$OUT/$name.json" "${extra[@]}" >"$tag.stdout" 2>"$tag.stderr" || {
        echo "zipf.sh: the load generator failed against $side (round $round):" >&2
        cat "$tag.stderr" >&2
        return 1
    }
    ours1=$(tree_cpu_ticks "$triton_pid" "$front_pid"); machine1=$(machine_ticks)
    sleep 0.5   # let the last responses' statistics land before the second scrape
    fetch "http://127.0.0.1:$triton_metrics/metrics" "$tag.triton_after"
    fetch "http://127.0.0.1:$triton_http/v2/models/digits/stats" "$tag.stats_after" \
        -H "triton-access-token: $triton_token"
    fetch "http://127.0.0.1:$front_http/metrics" "$tag.front_after"
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$side" "$round" "$seed" "$OUT/$name.json" "$tag" \
        "$((ours1 - ours0))" "$(echo "$machine0 $machine1" | awk '{ print $3 - $1, $4 - $2 }')" \
        >>"$tag.row"
    "$python" - "$OUT/$name.json" "$side" "$round" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
lat = r["latency_ms"]
hit = (r.get("cache") or {}).get("hit_ratio")
print(f"  {sys.argv[2]:6} r{sys.argv[3]}: {r['requests_per_s']:9.1f} req/s  p50 {lat['p50']:.2f} ms"
      f"  p99 {lat['p99']:.2f} ms  errors {r['errors_total']}"
      + (f"  hit ratio {hit:.3f}" if hit is not None else ""))
PY
}

others_share() { # ROW_FILE -> percent of all CPUs used by processes other than ours and the load generator
    local lt
    lt=$(awk '{ print ($1 + $2) * 100 }' "$1.loadtest_cpu" 2>/dev/null || echo 0)
    awk -v lt="$lt" -F'\t' '{ split($7, m, " "); others = m[1] - $6 - lt
                              printf "%d\n", (m[2] > 0 && others > 0 ? 100 * others / m[2] : 0) }' "$1.row"
}

echo "load: http-binary, c=$CONCURRENCY, ${DURATION}s after ${WARMUP}s warm-up, $DISTINCT distinct," \
    "Zipf $ZIPF; $RUNS runs per side, alternating"
for round in $(seq 1 "$RUNS"); do
    for side in triton front; do
        tag="$tmp/peers_zipf_${side}_r${round}"
        rm -f "$tag.row"
        run_once "$side" "$round"
        share=$(others_share "$tag")
        if [ "$share" -gt 15 ]; then
            echo "  others used ${share}% of the CPUs during that run; running it once more"
            rm -f "$tag.row"
            run_once "$side" "$round"
            share=$(others_share "$tag")
        fi
        printf '%s\t%s\n' "$(cat "$tag.row")" "$share" >>"$manifest"
    done
done

# ---- summary ---------------------------------------------------------------------------------
"$python" - "$manifest" "$OUT/peers_zipf_summary.json" "$CONCURRENCY" "$DURATION" "$WARMUP" \
    "$DISTINCT" "$ZIPF" "$SEED" <<'PY'
import json, math, re, statistics, sys

manifest, out_path = sys.argv[1], sys.argv[2]
concurrency, duration, warmup, distinct, zipf, seed = sys.argv[3:9]
ticks_per_s = 100  # USER_HZ


def scrape(path):
    """Prometheus text -> {(name, labels): value}."""
    samples = {}
    for line in open(path):
        if not line.strip() or line.startswith("#"):
            continue
        m = re.match(r"^([A-Za-z_:][A-Za-z0-9_:]*)(\{[^}]*\})?\s+(\S+)", line)
        if m:
            samples[(m.group(1), m.group(2) or "")] = float(m.group(3))
    return samples


def delta(before, after, name, label_filter=""):
    total = 0.0
    for (n, labels), v in after.items():
        if n == name and label_filter in labels:
            total += v - before.get((n, labels), 0.0)
    return total


def executions(path):
    """Triton's statistics extension -> (executions, ns) summed over batch sizes: one count and
    one duration per model execution, whatever the number of requests in it."""
    count = ns = 0
    for model in json.load(open(path))["model_stats"]:
        for stat in model.get("batch_stats", []):
            count += int(stat["compute_infer"]["count"])
            ns += int(stat["compute_infer"]["ns"])
    return count, ns


runs = []
for line in open(manifest):
    side, rnd, run_seed, report_path, tag, ours_ticks, machine, others = line.rstrip("\n").split("\t")
    busy_ticks, total_ticks = map(float, machine.split())
    report = json.load(open(report_path))
    tb, ta = scrape(tag + ".triton_before"), scrape(tag + ".triton_after")
    fb, fa = scrape(tag + ".front_before"), scrape(tag + ".front_after")
    (exec0, ns0), (exec1, ns1) = executions(tag + ".stats_before"), executions(tag + ".stats_after")
    per_request_us = delta(tb, ta, "nv_inference_compute_infer_duration_us")
    execs = delta(tb, ta, "nv_inference_exec_count")
    triton_requests = delta(tb, ta, "nv_inference_request_success")
    triton_failures = delta(tb, ta, "nv_inference_request_failure")
    triton_rows = delta(tb, ta, "nv_inference_count")
    # Client requests over the same window as the Triton deltas (warm-up + measured period),
    # counted by the server the load generator talked to.
    if side == "triton":
        window_requests = triton_requests + triton_failures
    else:
        window_requests = delta(fb, fa, "tollgate_requests_total", 'model="digits"')
    lt_user, lt_sys = map(float, open(tag + ".loadtest_cpu").read().split()[:2])
    cache = report.get("cache") or {}
    per_1k = 1000.0 / window_requests if window_requests else math.nan
    runs.append({
        "side": side, "round": int(rnd), "seed": int(run_seed), "report": report_path,
        "requests_per_s": report["requests_per_s"],
        "p50_ms": report["latency_ms"]["p50"], "p99_ms": report["latency_ms"]["p99"],
        "ok": report["ok"], "errors_total": report["errors_total"], "errors": report["errors"],
        "hit_ratio": cache.get("hit_ratio") if side == "front" else None,
        "no_execution_ratio": cache.get("no_execution_ratio") if side == "front" else None,
        "window_client_requests": window_requests,
        "triton": {"compute_infer_us_per_request_sum": per_request_us,
                   "compute_infer_us_per_execution_sum": (ns1 - ns0) / 1000.0,
                   "exec_count": execs, "exec_count_stats_api": exec1 - exec0,
                   "request_success": triton_requests, "request_failure": triton_failures,
                   "inference_count": triton_rows},
        # Device time: each model execution's compute time once (statistics extension).
        "device_ms_per_1k": (ns1 - ns0) / 1e6 * per_1k,
        # nv_inference_compute_infer_duration_us adds an execution's whole time to every request
        # in it, so it counts a batch of n requests n times.
        "prom_compute_infer_ms_per_1k": per_request_us / 1000.0 * per_1k,
        "triton_execs_per_1k": execs * per_1k,
        "triton_requests_per_1k": triton_requests * per_1k,
        "triton_rows_per_1k": triton_rows * per_1k,
        "triton_mean_batch_rows": triton_rows / execs if execs else None,
        "triton_ms_per_execution": (ns1 - ns0) / 1e6 / execs if execs else None,
        "front_upstream_errors": delta(fb, fa, "tollgate_upstream_errors_total")
        if side == "front" else None,
        "servers_cpu_s": float(ours_ticks) / ticks_per_s,
        "loadtest_cpu_s": lt_user + lt_sys,
        "machine_busy_share": busy_ticks / total_ticks if total_ticks else None,
        "others_cpu_percent": int(others),
    })

keys = ["requests_per_s", "p50_ms", "p99_ms", "device_ms_per_1k", "prom_compute_infer_ms_per_1k",
        "triton_execs_per_1k", "triton_requests_per_1k", "triton_rows_per_1k",
        "triton_mean_batch_rows", "triton_ms_per_execution", "hit_ratio", "errors_total",
        "others_cpu_percent"]
medians = {}
for side in ("triton", "front"):
    mine = [r for r in runs if r["side"] == side]
    medians[side] = {k: statistics.median([r[k] for r in mine if r[k] is not None])
                     if any(r[k] is not None for r in mine) else None for k in keys}
a, b = medians["triton"], medians["front"]
ratios = {
    "requests_per_s_front_over_triton": b["requests_per_s"] / a["requests_per_s"],
    "p99_front_over_triton": b["p99_ms"] / a["p99_ms"],
    "p50_front_over_triton": b["p50_ms"] / a["p50_ms"],
    "device_time_per_1k_triton_over_front": a["device_ms_per_1k"] / b["device_ms_per_1k"],
    "prom_compute_infer_per_1k_triton_over_front":
        a["prom_compute_infer_ms_per_1k"] / b["prom_compute_infer_ms_per_1k"],
    "execs_per_1k_triton_over_front": a["triton_execs_per_1k"] / b["triton_execs_per_1k"],
}
json.dump({"load": {"protocol": "http-binary", "concurrency": int(concurrency),
                    "duration_s": float(duration), "warmup_s": float(warmup),
                    "distinct": int(distinct), "zipf": float(zipf), "first_seed": int(seed)},
           "runs": runs, "medians": medians, "ratios": ratios},
          open(out_path, "w"), indent=2)


def fmt(v, spec):
    return "–" if v is None else format(v, spec)


print()
print("Per 1,000 client requests over the warm-up + measured window. device ms = Triton's model")
print("execution time (statistics extension, each execution once); Prometheus ms = the sum of")
print("nv_inference_compute_infer_duration_us, which charges each request its batch's whole time.")
print("| side | run | req/s | p50 ms | p99 ms | errors | hit ratio | Triton execs | Triton rows "
      "| device ms | Prometheus ms | others' CPU |")
print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
for r in runs:
    print(f"| {r['side']} | {r['round']} | {r['requests_per_s']:,.0f} | {r['p50_ms']:.2f} "
          f"| {r['p99_ms']:.2f} | {r['errors_total']} | {fmt(r['hit_ratio'], '.3f')} "
          f"| {r['triton_execs_per_1k']:.1f} | {r['triton_rows_per_1k']:.1f} "
          f"| {r['device_ms_per_1k']:.1f} | {r['prom_compute_infer_ms_per_1k']:.1f} "
          f"| {r['others_cpu_percent']} % |")
print()
print("medians")
print("| | req/s | p50 ms | p99 ms | device ms / 1k req | Prometheus compute_infer ms / 1k req "
      "| Triton execs / 1k req | Triton requests / 1k req | Triton rows / 1k req "
      "| rows per execution | ms per execution | hit ratio | errors |")
print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
for side, label in (("triton", "Triton alone"), ("front", "Triton behind Tollgate")):
    m = medians[side]
    print(f"| {label} | {m['requests_per_s']:,.0f} | {m['p50_ms']:.2f} | {m['p99_ms']:.2f} "
          f"| {m['device_ms_per_1k']:.1f} | {m['prom_compute_infer_ms_per_1k']:.1f} "
          f"| {m['triton_execs_per_1k']:.1f} | {m['triton_requests_per_1k']:.1f} "
          f"| {m['triton_rows_per_1k']:.1f} | {fmt(m['triton_mean_batch_rows'], '.2f')} "
          f"| {fmt(m['triton_ms_per_execution'], '.2f')} | {fmt(m['hit_ratio'], '.3f')} "
          f"| {m['errors_total']:g} |")
print()
print(f"behind / alone: req/s {ratios['requests_per_s_front_over_triton']:.2f}, "
      f"p50 {ratios['p50_front_over_triton']:.2f}, p99 {ratios['p99_front_over_triton']:.2f}")
print(f"alone / behind, per 1k requests: device time "
      f"{ratios['device_time_per_1k_triton_over_front']:.1f}x, Prometheus compute_infer "
      f"{ratios['prom_compute_infer_per_1k_triton_over_front']:.1f}x, Triton executions "
      f"{ratios['execs_per_1k_triton_over_front']:.1f}x")
print(f"written: {out_path}")
PY
