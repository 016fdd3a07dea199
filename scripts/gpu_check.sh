#!/usr/bin/env bash
# The CUDA path on a host with an NVIDIA GPU: installs the onnxruntime-gpu wheel, builds the
# gateway, serves AlexNet on cuda:0 under load, and compares its rows/s with ONNX Runtime's CUDA
# provider called directly at the same batch size, in one invocation. CI never runs this, and no
# test needs a GPU.
#
#   1. onnxruntime-gpu (the Makefile's ORT version) goes into .runtime-gpu/ with pip --target:
#      from PyPI, or, on a host without network access, from a folder given with --wheels DIR
#      holding the wheel (or its pieces, NAME.whl.part-*, which are joined first: a wheel larger
#      than what a copy step allows can be sent in parts).
#   2. The release gateway and load generator are built (or taken as built with --no-build).
#   3. AlexNet: models/alexnet/1/model.onnx (scripts/make_alexnet.py makes it when
#      missing; it needs the .venv of `make pyenv` and the onnx package).
#   4. Direct: ONNX Runtime with CUDAExecutionProvider on device 0, batch BATCH (default 32),
#      for SECONDS (default 20) after a warm-up: rows/s.
#   5. Gateway: alexnet on cuda:0 (no CPU fallback: a provider that fails is a failed check),
#      max_batch_size BATCH, cache off, loaded by tollgate-loadtest at concurrency 3 x BATCH over
#      the binary extension for SECONDS, while nvidia-smi samples the GPU's utilisation every
#      200 ms: rows/s, p50/p99, mean and p90 utilisation, and the provider the gateway reports.
#
# Usage: scripts/gpu_check.sh [--wheels DIR] [--no-build] [--out DIR] [--batch N] [--seconds S]
# Result: OUT/gpu_check.json (OUT defaults to $OUT when set, else target/gpu-check), with the
# logs beside it. Exits non-zero when no GPU is visible or the gateway did not run on CUDA.
set -euo pipefail
cd "$(dirname "$0")/.."

WHEELS=""
BUILD=1
RESULTS=${OUT:-target/gpu-check}
BATCH=32
SECONDS_RUN=20
while [ $# -gt 0 ]; do
    case "$1" in
        --wheels) WHEELS="${2:?--wheels needs a folder}"; shift ;;
        --no-build) BUILD=0 ;;
        --out) RESULTS="${2:?--out needs a folder}"; shift ;;
        --batch) BATCH="${2:?--batch needs a number}"; shift ;;
        --seconds) SECONDS_RUN="${2:?--seconds needs a number}"; shift ;;
        *) echo "gpu_check.sh: unknown argument $1" >&2; exit 2 ;;
    esac
    shift
done
mkdir -p "$RESULTS"
RESULTS=$(cd "$RESULTS" && pwd)
ORT_VERSION=$(sed -n 's/^ORT_VERSION *:\?= *//p' Makefile | head -1)
GPU_RUNTIME=$PWD/.runtime-gpu
ALEXNET=models/alexnet/1/model.onnx
PYTHON=${PYTHON:-python3}

command -v nvidia-smi >/dev/null && nvidia-smi -L >"$RESULTS/gpus.txt" 2>&1 ||
    { echo "gpu_check.sh: no NVIDIA GPU is visible (nvidia-smi)" >&2; exit 1; }
echo "GPU: $(head -1 "$RESULTS/gpus.txt")"

# ---- 1. onnxruntime-gpu ----------------------------------------------------------------------
if [ ! -f "$GPU_RUNTIME/.installed-$ORT_VERSION" ]; then
    rm -rf "$GPU_RUNTIME"
    if [ -n "$WHEELS" ]; then
        for first in "$WHEELS"/*.whl.part-*; do
            [ -e "$first" ] || break
            whole=${first%.part-*}
            [ -f "$whole" ] || cat "$whole".part-* >"$whole"
        done
        "$PYTHON" -m pip install --quiet --no-deps --no-index --find-links "$WHEELS" \
            --target "$GPU_RUNTIME" "onnxruntime-gpu==$ORT_VERSION"
    else
        "$PYTHON" -m pip install --quiet --no-deps --target "$GPU_RUNTIME" "onnxruntime-gpu==$ORT_VERSION"
    fi
    touch "$GPU_RUNTIME/.installed-$ORT_VERSION"
fi
ORT_LIB=$(ls "$GPU_RUNTIME"/onnxruntime/capi/libonnxruntime.so.* | head -1)
echo "ONNX Runtime (GPU build): $ORT_LIB"

# ---- 2. build --------------------------------------------------------------------------------
if [ "$BUILD" = 1 ]; then
    cargo build --release --bin tollgate --bin tollgate-loadtest
fi
for binary in target/release/tollgate target/release/tollgate-loadtest; do
    [ -x "$binary" ] || { echo "gpu_check.sh: $binary is missing; run without --no-build" >&2; exit 1; }
done

# ---- 3. AlexNet ------------------------------------------------------------------------------
if [ ! -f "$ALEXNET" ]; then
    [ -x .venv/bin/python ] || { echo "gpu_check.sh: $ALEXNET is missing and so is .venv (make pyenv)" >&2; exit 1; }
    .venv/bin/python scripts/make_alexnet.py
fi

# ---- 4. ONNX Runtime CUDA, called directly ---------------------------------------------------
direct_python=$PYTHON
[ -x .venv/bin/python ] && direct_python=.venv/bin/python
PYTHONPATH="$GPU_RUNTIME" "$direct_python" - "$ALEXNET" "$BATCH" "$SECONDS_RUN" "$RESULTS/direct.json" <<'PY'
import json, sys, time
import numpy as np
import onnxruntime as ort
path, batch, seconds, out = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), sys.argv[4]
session = ort.InferenceSession(path, providers=["CUDAExecutionProvider"])
providers = session.get_providers()
if providers[0] != "CUDAExecutionProvider":
    sys.exit(f"ONNX Runtime did not take the CUDA provider: {providers}")
name = session.get_inputs()[0].name
x = np.random.default_rng(1).random((batch, 3, 224, 224), dtype=np.float32)
for _ in range(10):
    session.run(None, {name: x})
runs, started = 0, time.perf_counter()
while time.perf_counter() - started < seconds:
    session.run(None, {name: x})
    runs += 1
elapsed = time.perf_counter() - started
json.dump({"providers": providers, "batch": batch, "runs": runs, "seconds": elapsed,
           "rows_per_s": runs * batch / elapsed, "version": ort.__version__}, open(out, "w"))
print(f"direct: {runs * batch / elapsed:.1f} rows/s at batch {batch} ({providers[0]})")
PY

# ---- 5. the gateway on cuda:0 ----------------------------------------------------------------
free_port() { "$PYTHON" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
http=$(free_port)
cat >"$RESULTS/gateway.toml" <<EOF
[server]
http_addr = "127.0.0.1:$http"
grpc_addr = "127.0.0.1:$(free_port)"
[runtime]
onnxruntime = "$ORT_LIB"
[cache]
enabled = false
[ledger]
path = "$RESULTS/ledger.sqlite"
[[models]]
name = "alexnet"
path = "$PWD/$ALEXNET"
device = "cuda:0"
instances = 1
max_batch_size = $BATCH
preferred_batch_sizes = [$BATCH]
max_queue_delay_us = 20000
max_queue_size = 4096
cache = false
EOF
LD_LIBRARY_PATH="$GPU_RUNTIME/onnxruntime/capi:${LD_LIBRARY_PATH:-}" \
    ./target/release/tollgate serve --config "$RESULTS/gateway.toml" >"$RESULTS/gateway.log" 2>&1 &
gateway=$!
sampler=""
trap 'kill "$gateway" ${sampler:+"$sampler"} 2>/dev/null || true' EXIT
for _ in $(seq 1 240); do
    curl -fsS -o /dev/null "http://127.0.0.1:$http/v2/models/alexnet/ready" 2>/dev/null && break
    kill -0 "$gateway" 2>/dev/null || { echo "gpu_check.sh: the gateway exited; its log:" >&2; cat "$RESULTS/gateway.log" >&2; exit 1; }
    sleep 0.5
done
curl -fsS "http://127.0.0.1:$http/v2/models/alexnet" >"$RESULTS/metadata.json"
nvidia-smi --query-gpu=utilization.gpu,memory.used --format=csv,noheader,nounits -lms 200 \
    >"$RESULTS/utilisation.csv" 2>&1 &
sampler=$!
./target/release/tollgate-loadtest --target "127.0.0.1:$http" --model alexnet --protocol http-binary \
    --concurrency $((3 * BATCH)) --duration "${SECONDS_RUN}s" --warmup 5s --distinct 8 --seed 3 \
    --no-progress --json "$RESULTS/load.json" >"$RESULTS/load.txt" 2>&1
kill "$sampler" 2>/dev/null || true
curl -fsS "http://127.0.0.1:$http/metrics" >"$RESULTS/gateway.metrics"

"$PYTHON" - "$RESULTS" <<'PY'
import json, statistics, sys
out = sys.argv[1]
direct = json.load(open(f"{out}/direct.json"))
load = json.load(open(f"{out}/load.json"))
util = []
for line in open(f"{out}/utilisation.csv"):
    parts = [p.strip() for p in line.split(",")]
    if parts and parts[0].isdigit():
        util.append(int(parts[0]))
# Only the load's share of the samples counts: the first ones are the warm-up's.
busy = util[len(util) // 5:] or util
# The provider the gateway's session took, as tollgate_model_info says.
provider = ""
for line in open(f"{out}/gateway.metrics"):
    if line.startswith("tollgate_model_info{") and 'model="alexnet"' in line:
        provider = line.split('provider="', 1)[1].split('"', 1)[0] if 'provider="' in line else ""
on_cuda = provider == "CUDAExecutionProvider"
rows_per_s = load["rows_per_s"]
result = {
    "gpu": open(f"{out}/gpus.txt").readline().strip(),
    "gateway_on_cuda": on_cuda,
    "gateway_p50_ms": load["latency_ms"].get("p50"),
    "gateway_p99_ms": load["latency_ms"].get("p99"),
    "gateway_provider": provider,
    "gateway_load_report": load,
    "gateway_rows_per_s": rows_per_s,
    "direct_rows_per_s": direct["rows_per_s"],
    "ratio_gateway_to_direct": (rows_per_s / direct["rows_per_s"]) if direct["rows_per_s"] else None,
    "utilisation_mean_pct": statistics.mean(busy) if busy else None,
    "utilisation_p90_pct": sorted(busy)[int(len(busy) * 0.9)] if busy else None,
    "batch": direct["batch"],
    "onnxruntime": direct["version"],
}
json.dump(result, open(f"{out}/gpu_check.json", "w"), indent=2)
print(json.dumps({k: v for k, v in result.items() if k != "gateway_load_report"}, indent=2))
if not on_cuda:
    sys.exit("the gateway did not run AlexNet on the CUDA provider (see gateway.log)")
PY
