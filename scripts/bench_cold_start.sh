#!/usr/bin/env bash
# What an idle unload costs the request that comes next: the release gateway serves digits and
# AlexNet with idle_unload_after_s = 1; each round sends one request, waits for the model to be
# unloaded (tollgate_model_loaded 0), sends the same request again and reads its
# x-tollgate-cold-start-us, then one more (warm) for its x-tollgate-compute-us.
#
# Usage: scripts/bench_cold_start.sh [ROUNDS]   (default 5; AlexNet is made by make_alexnet.py
# when missing, as scripts/bench.sh does). Results: target/bench/cold_start.txt.
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${1:-5}
ALEXNET=models/alexnet/1/model.onnx
OUT=target/bench
mkdir -p "$OUT"
cargo build --release --bin tollgate >/dev/null
[ -f "$ALEXNET" ] || .venv/bin/python scripts/make_alexnet.py
port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
tmp=$(mktemp -d)
cat >"$tmp/cold.toml" <<EOF
[server]
http_addr = "127.0.0.1:$port"
grpc_addr = "127.0.0.1:0"
[cache]
enabled = false
[ledger]
path = "$tmp/ledger.sqlite"
[[models]]
name = "digits"
path = "$PWD/models/digits/1/model.onnx"
idle_unload_after_s = 1
[[models]]
name = "alexnet"
path = "$PWD/$ALEXNET"
idle_unload_after_s = 1
EOF
./target/release/tollgate serve --config "$tmp/cold.toml" >"$tmp/log" 2>&1 &
gateway=$!
trap 'kill "$gateway" 2>/dev/null || true; rm -rf "$tmp"' EXIT
for _ in $(seq 1 240); do
    curl -fsS -o /dev/null "http://127.0.0.1:$port/v2/models/alexnet/ready" 2>/dev/null && break
    sleep 0.5
done
python3 - "$port" "$ROUNDS" <<'PY' | tee "$OUT/cold_start.txt"
import json, statistics, struct, sys, time, urllib.request
port, rounds = sys.argv[1], int(sys.argv[2])
base = f"http://127.0.0.1:{port}"
def body(model):
    meta = json.load(urllib.request.urlopen(f"{base}/v2/models/{model}"))
    tensor = meta["inputs"][0]
    shape = [1] + [d if d > 0 else 1 for d in tensor["shape"][1:]]
    count = 1
    for d in shape:
        count *= d
    data = struct.pack(f"<{count}f", *([0.5] * count))
    header = json.dumps({"inputs": [{"name": tensor["name"], "datatype": "FP32", "shape": shape,
                                     "parameters": {"binary_data_size": len(data)}}]}).encode()
    return header + data, len(header)
def infer(model, payload):
    data, length = payload
    request = urllib.request.Request(f"{base}/v2/models/{model}/infer", data=data, method="POST",
                                     headers={"Inference-Header-Content-Length": str(length)})
    with urllib.request.urlopen(request) as reply:
        reply.read()
        return reply.headers
def loaded(model):
    text = urllib.request.urlopen(f"{base}/metrics").read().decode()
    for line in text.splitlines():
        if line.startswith("tollgate_model_loaded{") and f'model="{model}"' in line:
            return float(line.rsplit(" ", 1)[1])
    return None
print(f"cold starts after an idle unload, {rounds} rounds, release build, CPU")
for model in ("digits", "alexnet"):
    payload = body(model)
    cold, warm = [], []
    for _ in range(rounds):
        infer(model, payload)
        deadline = time.time() + 30
        while loaded(model) != 0.0:
            if time.time() > deadline:
                sys.exit(f"{model} was not unloaded")
            time.sleep(0.1)
        headers = infer(model, payload)
        cold.append(int(headers["x-tollgate-cold-start-us"]) / 1000)
        warm.append(int(infer(model, payload)["x-tollgate-compute-us"]) / 1000)
    print(f"{model:8s} cold start median {statistics.median(cold):8.1f} ms (min {min(cold):.1f}, max {max(cold):.1f});"
          f" warm compute median {statistics.median(warm):.2f} ms")
PY
