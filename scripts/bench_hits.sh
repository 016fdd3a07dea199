#!/usr/bin/env bash
# Ledger-bound benchmarks, every side in this one invocation (BENCHMARKS.md, "Cache hits and
# the ledger"):
#
#   hits    cache hits of the bundled digits model driven by `wrk -t1 -c64`, against nginx
#           answering the same bytes (`return 200` with the hit's exact body), with
#           `ledger.detail = "all"` and `"misses"`; sides run by turns (N A M, A M N, ...).
#           Ledger bytes per hit: growth of each gateway's ledger (checkpointed) over its runs,
#           divided by the requests wrk counted. CPU per request: each server's user and system
#           time over its runs (from /proc), divided by the requests wrk counted.
#   costs   `/v1/costs` for a month over rollups standing for >= 10M requests (a month of
#           minutes x tenants x models, written straight into a ledger file), timed by curl.
#
#   base    with --base-binary PATH: that gateway (another tree's release build) as a fourth
#           side with `detail = "misses"`, for a before/after figure in the same invocation.
#
# Usage: scripts/bench_hits.sh [--runs N] [--duration S] [--no-build] [--base-binary PATH]
# Results: target/bench-hits/ (one file per run, summary.md).
# Needs nginx and wrk (`make nginx wrk`). Binds 127.0.0.1 only; stops what it starts.
set -euo pipefail
cd "$(dirname "$0")/.."

OUT="${TOLLGATE_BENCH_OUT:-target/bench-hits}"
RUNS=3
DURATION=10
BUILD=1
BASE=""
while [ $# -gt 0 ]; do
    case "$1" in
        --runs) RUNS="${2:?--runs needs a number}"; shift ;;
        --duration) DURATION="${2:?--duration needs seconds}"; shift ;;
        --no-build) BUILD=0 ;;
        --base-binary) BASE="${2:?--base-binary needs a path}"; shift ;;
        -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d'; exit 0 ;;
        *) echo "bench_hits.sh: unknown argument $1 (try --help)" >&2; exit 2 ;;
    esac
    shift
done
NGINX=$(command -v nginx || echo /usr/sbin/nginx)
for tool in "$NGINX" wrk curl python3; do
    command -v "$tool" >/dev/null || { echo "bench_hits.sh: $tool is missing (make nginx wrk)" >&2; exit 1; }
done
ORT_LIB=$(ls .runtime/onnxruntime/capi/libonnxruntime.so.* 2>/dev/null | head -1 || true)
[ -n "$ORT_LIB" ] || { echo "bench_hits.sh: no ONNX Runtime library; run make runtime" >&2; exit 1; }
export ORT_DYLIB_PATH="$PWD/$ORT_LIB"
if [ "$BUILD" = 1 ]; then
    timeout 1800 cargo build --release -p tollgate --bins
fi
rm -rf "$OUT"
mkdir -p "$OUT/bin" "$OUT/nginx"
cp target/release/tollgate "$OUT/bin/"
GATEWAY="$OUT/bin/tollgate"
if [ -n "$BASE" ]; then cp "$BASE" "$OUT/bin/base-tollgate"; fi

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
    echo "bench_hits.sh: $1 did not answer" >&2; return 1
}

# config NAME DETAIL: a gateway config in $OUT with its own ledger file.
config() {
    cat >"$OUT/$1.toml" <<EOF
[ledger]
path = "$1.sqlite"
detail = "$2"

[[models]]
name = "digits"
path = "../../models/digits/1/model.onnx"
instances = 1
intra_op_threads = 1
max_batch_size = 64
max_queue_delay_us = 1000
EOF
}

# start NAME [BINARY]: serves $OUT/NAME.toml; its HTTP address goes into the variable NAME.
start() {
    local http grpc binary="${2:-$GATEWAY}"
    http=$(free_port); grpc=$(free_port)
    "$binary" serve --config "$OUT/$1.toml" --http-addr "127.0.0.1:$http" --grpc-addr "127.0.0.1:$grpc" >"$OUT/$1.log" 2>&1 &
    PIDS+=($!)
    printf -v "$1" '%s' "127.0.0.1:$http"
    printf -v "pid_$1" '%s' "$!"
    wait_http "http://127.0.0.1:$http/v2/health/ready" 60 || { tail -20 "$OUT/$1.log" >&2; exit 1; }
}

# ledger_bytes NAME: the ledger's size once its WAL is checkpointed into the file.
ledger_bytes() {
    python3 - "$OUT/$1.sqlite" <<'PY'
import os, sqlite3, sys
conn = sqlite3.connect(sys.argv[1], timeout=10)
conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
conn.close()
print(os.path.getsize(sys.argv[1]))
PY
}

{
    echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
    echo "nproc: $(nproc); cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')"
    echo "source: $(git describe --always --dirty 2>/dev/null || echo unknown)"
    echo "runs per side: $RUNS, duration ${DURATION}s; $("$NGINX" -v 2>&1); $(wrk --version 2>&1 | head -1)"
} | tee "$OUT/machine.txt"

# ---- hits: the gateway's cache hits against nginx ----------------------------------------------
config all all
config misses misses
start all
start misses
GATEWAYS=(all misses)
if [ -n "$BASE" ]; then
    config base misses
    start base "$OUT/bin/base-tollgate"
    GATEWAYS+=(base)
fi
python3 - "$all" "$OUT" <<'PY'
import json, sys, urllib.request
target, out = sys.argv[1:]
meta = json.load(urllib.request.urlopen(f"http://{target}/v2/models/digits"))
tensor = meta["inputs"][0]
width = tensor["shape"][-1]
body = json.dumps({"inputs": [{"name": tensor["name"], "datatype": tensor["datatype"],
                               "shape": [1, width], "data": [float(i % 16) for i in range(width)]}]})
with open(f"{out}/post.lua", "w") as f:
    f.write('wrk.method = "POST"\n')
    f.write('wrk.headers["Content-Type"] = "application/json"\n')
    f.write(f"wrk.body = [[{body}]]\n")
with open(f"{out}/body.json", "w") as f:
    f.write(body)
PY
# The hit's exact bytes, as the gateway answers them (a first request fills the cache).
for side in "${GATEWAYS[@]}"; do
    curl -sf -H 'Content-Type: application/json' --data-binary @"$OUT/body.json" \
        "http://${!side}/v2/models/digits/infer" -o /dev/null
done
curl -sf -H 'Content-Type: application/json' --data-binary @"$OUT/body.json" \
    "http://$all/v2/models/digits/infer" -D "$OUT/hit.headers" -o "$OUT/hit.body"
grep -qi '^x-tollgate-cache: hit' "$OUT/hit.headers" || { echo "bench_hits.sh: the second answer was no hit" >&2; exit 1; }
NGINX_PORT=$(free_port)
python3 - "$OUT" "$NGINX_PORT" <<'PY'
import pathlib, sys
out, port = pathlib.Path(sys.argv[1]), sys.argv[2]
body = (out / "hit.body").read_text()
# nginx's return text is a quoted string in which $ starts a variable and \ escapes.
quoted = body.replace("\\", "\\\\").replace('"', '\\"').replace("$", "${dollar}")
(out / "nginx" / "nginx.conf").write_text(f"""
worker_processes 1;
daemon off;
pid {out.resolve()}/nginx/nginx.pid;
error_log {out.resolve()}/nginx/error.log;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    client_body_temp_path {out.resolve()}/nginx/body;
    geo $dollar {{ default "$"; }}
    server {{
        listen 127.0.0.1:{port};
        location / {{
            default_type application/json;
            return 200 "{quoted}";
        }}
    }}
}}
""")
PY
"$NGINX" -c "$PWD/$OUT/nginx/nginx.conf" -p "$PWD/$OUT/nginx" &
PIDS+=($!)
pid_nginx=$!
nginx="127.0.0.1:$NGINX_PORT"
wait_http "http://$nginx/" 10
cmp <(curl -sf -X POST --data-binary @"$OUT/body.json" "http://$nginx/v2/models/digits/infer") "$OUT/hit.body" \
    || { echo "bench_hits.sh: nginx does not answer the hit's bytes" >&2; exit 1; }

# wrk_run NAME TARGET: the one body POSTed over 64 connections by one thread.
# Also the server's CPU over the run (user and system clock ticks of the process and its
# children, nginx's worker included) into $OUT/NAME.cpu: "user_before sys_before user_after sys_after".
cpu_ticks() { # PID: "user sys" ticks of PID and its children
    local user=0 sys=0 pid u s
    for pid in "$1" $(pgrep -P "$1" || true); do
        read -r u s < <(awk '{print $14, $15}' "/proc/$pid/stat")
        user=$((user + u)); sys=$((sys + s))
    done
    echo "$user $sys"
}
wrk_run() { # NAME TARGET PID
    local before
    before=$(cpu_ticks "$3")
    wrk -t1 -c64 -d"${DURATION}s" --latency -s "$OUT/post.lua" \
        "http://$2/v2/models/digits/infer" >"$OUT/$1.wrk" 2>&1
    echo "$before $(cpu_ticks "$3")" >"$OUT/$1.cpu"
    if grep -q 'Non-2xx' "$OUT/$1.wrk"; then
        echo "bench_hits.sh: $1 got error answers:" >&2; cat "$OUT/$1.wrk" >&2; exit 1
    fi
    grep -E 'Requests/sec' "$OUT/$1.wrk" | sed "s/^/  $1: /"
}

printf '\n== hits: wrk -t1 -c64, cache hits vs nginx with the same bytes\n'
for side in "${GATEWAYS[@]}"; do ledger_bytes "$side" >"$OUT/${side}_bytes_before"; done
sides=(nginx "${GATEWAYS[@]}")
for run in $(seq 1 "$RUNS"); do
    shift_by=$(( (run - 1) % ${#sides[@]} ))
    order=("${sides[@]:$shift_by}" "${sides[@]:0:$shift_by}")
    for side in "${order[@]}"; do
        pid="pid_$side"
        wrk_run "hits_${side}_r$run" "${!side}" "${!pid}"
    done
done
sleep 1 # the last async group commits within 50 ms
for side in "${GATEWAYS[@]}"; do ledger_bytes "$side" >"$OUT/${side}_bytes_after"; done

# ---- costs: a month of rollups ----------------------------------------------------------------
printf '\n== costs: /v1/costs for a month over rollups of >= 10M requests\n'
config month all
start month
kill "${PIDS[-1]}"; wait "${PIDS[-1]}" 2>/dev/null || true
python3 - "$OUT/month.sqlite" <<'PY'
import sqlite3, sys
conn = sqlite3.connect(sys.argv[1])
cols = [r[1] for r in conn.execute("PRAGMA table_info(usage_rollup)")]
buckets = [c for c in cols if c.startswith("h") and c[1:].isdigit()]
start = 1_793_491_200_000  # 2026-11-01T00:00:00Z
tenants, models = 6, 2
rows = []
for minute in range(30 * 24 * 60):
    for t in range(tenants):
        for m in range(models):
            requests = 20 + (minute + t + m) % 11
            hist = [0] * len(buckets)
            hist[10 + (minute + t) % 8] = requests
            rows.append([start + minute * 60_000, f"tenant-{t}", f"team-{t % 3}", "proj", "{}",
                         f"model-{m}", "1", "cpu", "success", ("hit", "miss")[minute % 2],
                         "realtime", requests, requests, requests * 1e-6, 0.0, requests * 500.0,
                         *hist])
marks = ", ".join("?" * len(rows[0]))
names = ["minute_ms", "tenant", "team", "project", "tags", "model", "version", "device", "outcome",
         "cache", "lane", "requests", "row_count", "cost_usd", "saved_usd", "device_us", *buckets]
conn.executemany(f"INSERT INTO usage_rollup ({', '.join(names)}) VALUES ({marks})", rows)
# The hour tier, as the writer keeps it beside the minutes (rebuilt whole: the gateway's first
# start already wrote its idle time into both).
conn.execute("DELETE FROM usage_rollup_hour")
keys = names[1:11]
sums = names[11:]
conn.execute(f"INSERT INTO usage_rollup_hour ({', '.join(names)}) "
             f"SELECT minute_ms / 3600000 * 3600000, {', '.join(keys)}, "
             f"{', '.join(f'SUM({c})' for c in sums)} FROM usage_rollup "
             f"GROUP BY minute_ms / 3600000, {', '.join(keys)}")
conn.commit()
total = conn.execute("SELECT COUNT(*), SUM(requests) FROM usage_rollup").fetchone()
hours = conn.execute("SELECT COUNT(*), SUM(requests) FROM usage_rollup_hour").fetchone()
print(f"  rollup rows {total[0]:,} per minute, {hours[0]:,} per hour; requests {total[1]:,} ({hours[1]:,})")
PY
start month
for query in "group_by=tenant" "group_by=team,model" "group_by="; do
    url="http://$month/v1/costs?from=2026-11-01&to=2026-12-01&$query"
    curl -sf "$url" -o "$OUT/costs.json"
    for i in $(seq 1 7); do curl -sf -o /dev/null -w '%{time_total}\n' "$url"; done >"$OUT/costs_${query//[=,]/_}.times"
    python3 - "$OUT/costs.json" <<'PY'
import json, sys
rows = json.load(open(sys.argv[1]))["rows"]
print(f"  {len(rows)} rows, {sum(r['requests'] for r in rows):,} requests")
PY
done

# ---- summary ----------------------------------------------------------------------------------
python3 - "$OUT" "$RUNS" "$(getconf CLK_TCK)" "${GATEWAYS[@]}" <<'PY' | tee "$OUT/summary.md"
import pathlib, re, statistics, sys
out, runs = pathlib.Path(sys.argv[1]), int(sys.argv[2])
def ms(text):
    value, unit = re.match(r"([\d.]+)(us|ms|s)", text).groups()
    return float(value) * {"us": 1e-3, "ms": 1.0, "s": 1e3}[unit]
def wrk(name):
    rows = []
    for r in range(1, runs + 1):
        text = (out / f"{name}_r{r}.wrk").read_text()
        rows.append((float(re.search(r"Requests/sec:\s+([\d.]+)", text).group(1)),
                     ms(re.search(r"^\s+50%\s+(\S+)", text, re.M).group(1)),
                     ms(re.search(r"^\s+99%\s+(\S+)", text, re.M).group(1)),
                     int(re.search(r"(\d+) requests in", text).group(1))))
    return rows
med = statistics.median
print(f"\n## hits (wrk -t1 -c64, median of {runs} runs per side, by turns)\n")
hz = int(sys.argv[3])
def cpu(name):
    """The server's user and system CPU per request over all its runs, in microseconds."""
    user = system = requests = 0
    for r, w in zip(range(1, runs + 1), wrk(name)):
        u0, s0, u1, s1 = map(int, (out / f"{name}_r{r}.cpu").read_text().split())
        user, system, requests = user + u1 - u0, system + s1 - s0, requests + w[3]
    return user / hz * 1e6 / requests, system / hz * 1e6 / requests
print("| side | req/s | p50 ms | p99 ms | vs nginx | CPU µs per request (user + system) | ledger bytes per request |")
print("|---|---|---|---|---|---|---|")
nginx = med([w[0] for w in wrk("hits_nginx")])
for side in ("nginx", *sys.argv[4:]):
    w = wrk(f"hits_{side}")
    rps = med([x[0] for x in w])
    per = "-"
    if side != "nginx":
        grown = int((out / f"{side}_bytes_after").read_text()) - int((out / f"{side}_bytes_before").read_text())
        per = f"{grown / sum(x[3] for x in w):.1f}"
    user, system = cpu(f"hits_{side}")
    print(f"| {side} | {rps:,.0f} | {med([x[1] for x in w]):.2f} | {med([x[2] for x in w]):.2f} | {rps / nginx:.3f}x "
          f"| {user:.1f} + {system:.1f} = {user + system:.1f} | {per} |")
print("\n## /v1/costs for November over the month's rollups (curl, median of 7)\n")
for path in sorted(out.glob("costs_*.times")):
    times = [float(t) * 1000 for t in path.read_text().split()]
    print(f"- {path.stem.removeprefix('costs_')}: {med(times):.1f} ms (min {min(times):.1f}, max {max(times):.1f})")
PY
