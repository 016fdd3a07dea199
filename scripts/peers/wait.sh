#!/usr/bin/env bash
# The batch wait under a closed loop that never fills a batch, side by side in one invocation:
#
#   triton    Triton (the one nvidia-pytriton bundles) serving models/digits through
#             scripts/peers/triton_local.py: Python backend, onnxruntime with one thread, its
#             dynamic batcher at max_batch_size 64, max_queue_delay_microseconds 2000
#   adaptive  Tollgate (release build) serving the same file, max_batch_size = 64,
#             max_queue_delay_us = 2000, batch_wait = "adaptive", cache off, one instance
#   fixed     the same gateway's second model, identical but batch_wait = "fixed" (Triton's rule)
#
# Each side is loaded by `wrk -t1 -c32` POSTing one JSON row (cache off, so every request is
# computed), for WAIT_DURATION seconds after a 2 s warm-up, WAIT_RUNS rounds in rotating order.
# wrk costs little per request, so the servers' own costs show. Figures per side: the median over
# the rounds of wrk's req/s, p50 and p99; the ratios adaptive/triton and adaptive/fixed.
# Install Triton once with `scripts/peers/check.sh triton`; needs wrk (`make wrk`).
#
# Usage: scripts/peers/wait.sh     Knobs: WAIT_RUNS (3), WAIT_DURATION (10), WAIT_CONNECTIONS (32)
# Results: target/bench/wait/<side>_r<N>.wrk and target/bench/wait/summary.txt.
set -euo pipefail
cd "$(dirname "$0")/../.."

RUNS=${WAIT_RUNS:-3}
DURATION=${WAIT_DURATION:-10}
CONNECTIONS=${WAIT_CONNECTIONS:-32}
OUT=target/bench/wait
TRITON_PYTHON=.peers/triton/bin/python
mkdir -p "$OUT"
rm -f "$OUT"/*.wrk "$OUT/summary.txt"

for tool in wrk curl python3; do
    command -v "$tool" >/dev/null || { echo "wait.sh: $tool is missing (make wrk)" >&2; exit 1; }
done
[ -x "$TRITON_PYTHON" ] || { echo "wait.sh: Triton is not installed; run scripts/peers/check.sh triton" >&2; exit 1; }
cargo build --release --bin tollgate >/dev/null

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}
wait_http() { # URL PID LOG
    for _ in $(seq 1 360); do
        curl -fsS -o /dev/null "$1" 2>/dev/null && return 0
        kill -0 "$2" 2>/dev/null || { echo "wait.sh: a server exited; its log:" >&2; cat "$3" >&2; exit 1; }
        sleep 0.5
    done
    echo "wait.sh: $1 never answered" >&2; exit 1
}

tmp=$(mktemp -d)
triton_pid=""; gateway_pid=""
cleanup() {
    [ -n "$gateway_pid" ] && kill "$gateway_pid" 2>/dev/null || true
    # Triton's launcher turns SIGTERM into a normal exit; its group holds tritonserver.
    [ -n "$triton_pid" ] && kill -TERM -- "-$triton_pid" 2>/dev/null || true
    sleep 2
    [ -n "$triton_pid" ] && kill -KILL -- "-$triton_pid" 2>/dev/null || true
    rm -rf "$tmp"
}
trap cleanup EXIT

model="$PWD/models/digits/1/model.onnx"
triton_http=$(free_port)
prefix=$("$TRITON_PYTHON" -c 'import sys; print(sys.base_prefix)')
TRITON_LOCAL_TOKEN=$(python3 -c 'import secrets; print(secrets.token_urlsafe(24))') \
    LD_LIBRARY_PATH="$prefix/lib:${LD_LIBRARY_PATH:-}" setsid "$TRITON_PYTHON" scripts/peers/triton_local.py \
    "$model" "$triton_http" "$(free_port)" "$(free_port)" --max-batch-size 64 --max-queue-delay-us 2000 \
    >"$tmp/triton.log" 2>&1 &
triton_pid=$!

gateway_http=$(free_port)
cat >"$tmp/tollgate.toml" <<TOML
[server]
http_addr = "127.0.0.1:$gateway_http"
grpc_addr = "127.0.0.1:$(free_port)"
[cache]
enabled = false
[ledger]
path = "$tmp/ledger.sqlite"
[[models]]
name = "digits"
path = "$model"
max_batch_size = 64
max_queue_delay_us = 2000
batch_wait = "adaptive"
[[models]]
name = "digits_fixed"
path = "$model"
max_batch_size = 64
max_queue_delay_us = 2000
batch_wait = "fixed"
TOML
./target/release/tollgate serve --config "$tmp/tollgate.toml" >"$tmp/tollgate.log" 2>&1 &
gateway_pid=$!
wait_http "http://127.0.0.1:$gateway_http/v2/models/digits_fixed/ready" "$gateway_pid" "$tmp/tollgate.log"
wait_http "http://127.0.0.1:$triton_http/v2/models/digits/ready" "$triton_pid" "$tmp/triton.log"

# One test row, as JSON: both servers read it; the answers must agree before anything is timed.
python3 - "$tmp/post.lua" "$tmp/body.json" <<'PY'
import json, sys
rows = json.load(open("models/digits/test_rows.json"))
body = {"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 64], "data": rows["input"][0]}]}
open(sys.argv[2], "w").write(json.dumps(body))
open(sys.argv[1], "w").write('wrk.method = "POST"\nwrk.headers["Content-Type"] = "application/json"\n'
                             f"wrk.body = [[{json.dumps(body)}]]\n")
PY
label() { curl -fsS -H 'content-type: application/json' --data @"$tmp/body.json" "$1" |
    python3 -c 'import json,sys; print([o["data"] for o in json.load(sys.stdin)["outputs"] if o["name"] == "label"][0])'; }
url_triton="http://127.0.0.1:$triton_http/v2/models/digits/infer"
url_adaptive="http://127.0.0.1:$gateway_http/v2/models/digits/infer"
url_fixed="http://127.0.0.1:$gateway_http/v2/models/digits_fixed/infer"
[ "$(label "$url_triton")" = "$(label "$url_adaptive")" ] || { echo "wait.sh: Triton and Tollgate disagree" >&2; exit 1; }

{
    echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ); nproc $(nproc); source $(git describe --always --dirty)"
    echo "wrk -t1 -c$CONNECTIONS -d${DURATION}s, $RUNS rounds; digits, max_batch_size 64, delay 2000 us, cache off"
} | tee "$OUT/summary.txt"
sides=(triton adaptive fixed)
for round in $(seq 1 "$RUNS"); do
    for i in 0 1 2; do
        side=${sides[$(((i + round - 1) % 3))]}
        url_var="url_$side"
        wrk -t1 -c"$CONNECTIONS" -d2s -s "$tmp/post.lua" "${!url_var}" >/dev/null
        wrk -t1 -c"$CONNECTIONS" -d"${DURATION}s" --latency -s "$tmp/post.lua" "${!url_var}" >"$OUT/${side}_r$round.wrk"
        if grep -q 'Non-2xx\|Socket errors' "$OUT/${side}_r$round.wrk"; then
            echo "wait.sh: $side had errors:" >&2; cat "$OUT/${side}_r$round.wrk" >&2; exit 1
        fi
        echo "round $round $side: $(grep 'Requests/sec' "$OUT/${side}_r$round.wrk")"
    done
done

python3 - "$OUT" "$RUNS" <<'PY' | tee -a "$OUT/summary.txt"
import re, statistics, sys
out, runs = sys.argv[1], int(sys.argv[2])
def ms(text):
    value, unit = re.match(r"([\d.]+)(us|ms|s)", text).groups()
    return float(value) * {"us": 1e-3, "ms": 1.0, "s": 1e3}[unit]
figures = {}
for side in ("triton", "adaptive", "fixed"):
    rps, p50, p99 = [], [], []
    for r in range(1, runs + 1):
        text = open(f"{out}/{side}_r{r}.wrk").read()
        rps.append(float(re.search(r"Requests/sec:\s+([\d.]+)", text).group(1)))
        p50.append(ms(re.search(r"\s50%\s+(\S+)", text).group(1)))
        p99.append(ms(re.search(r"\s99%\s+(\S+)", text).group(1)))
    figures[side] = tuple(statistics.median(v) for v in (rps, p50, p99))
    print(f"{side:9s} {figures[side][0]:10.0f} req/s   p50 {figures[side][1]:7.2f} ms   p99 {figures[side][2]:7.2f} ms")
for other in ("triton", "fixed"):
    a, b = figures["adaptive"], figures[other]
    print(f"adaptive / {other}: {a[0] / b[0]:.2f}x req/s, {a[2] / b[2]:.2f}x p99")
PY
