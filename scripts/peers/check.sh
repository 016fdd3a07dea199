#!/usr/bin/env bash
# Tollgate in front of real peers: Triton (from nvidia-pytriton) over HTTP and gRPC, and MLServer
# over HTTP (JSON) and gRPC. Not part of `make test`: it installs two Python environments under
# .peers/ (git-ignored by its own .gitignore) the first time, which takes a few minutes.
# Usage: scripts/peers/check.sh [triton|mlserver|all]   (default: all)
set -euo pipefail
cd "$(dirname "$0")/../.."

which_peers=${1:-all}
peers=.peers
mkdir -p "$peers"
echo '*' > "$peers/.gitignore"
python=${PYTHON:-python3}

script_name=check.sh
# shellcheck source=scripts/peers/common.sh
source scripts/peers/common.sh

venv() { # NAME PACKAGES...
    local name=$1; shift
    if [ ! -x "$peers/$name/bin/python" ] || [ ! -f "$peers/$name/.installed" ]; then
        echo "installing $name into $peers/$name (once)"
        "$python" -m venv "$peers/$name"
        "$peers/$name/bin/pip" install --quiet "$@"
        touch "$peers/$name/.installed"
    fi
}

wait_ready() { # URL NAME PID
    for _ in $(seq 1 300); do
        if "$python" -c "import urllib.request as r; r.urlopen('$1', timeout=1)" 2>/dev/null; then
            return 0
        fi
        kill -0 "$3" 2>/dev/null || { echo "$2 exited; its log:" >&2; cat "$peers/$2.log" >&2; return 1; }
        sleep 0.5
    done
    echo "$2 did not become ready; its log:" >&2
    cat "$peers/$2.log" >&2
    return 1
}

# Each peer runs in a process group of its own (setsid), so stopping it also stops what it
# started (pytriton's tritonserver and Python stubs).
pids=()
pytriton_cache="$HOME/.cache/pytriton"
workspaces_before=$(ls "$pytriton_cache" 2>/dev/null || true)
cleanup() {
    for pid in "${pids[@]}"; do kill -- "-$pid" 2>/dev/null || kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    # pytriton copies Triton into a fresh workspace per run; remove the ones this run made.
    for workspace in $(ls "$pytriton_cache" 2>/dev/null || true); do
        grep -qx "$workspace" <<<"$workspaces_before" || rm -rf "${pytriton_cache:?}/$workspace"
    done
}
trap cleanup EXIT

model="$PWD/models/digits/1/model.onnx"
config="$peers/tollgate.toml"
tollgate_http=$(free_port)
cat > "$config" <<TOML
[server]
http_addr = "127.0.0.1:$tollgate_http"
grpc_addr = "127.0.0.1:$(free_port)"
TOML
models=()

front() { # NAME URL EXTRA
    cat >> "$config" <<TOML

[[models]]
name = "$1"
upstream = "$2"
upstream_model = "digits"
max_batch_size = 64
max_queue_delay_us = 2000
instances = 4
$3
TOML
    models+=("$1")
}

if [ "$which_peers" = all ] || [ "$which_peers" = triton ]; then
    venv triton nvidia-pytriton==0.7.0 onnxruntime==1.31.1
    http=$(free_port); grpc=$(free_port)
    # The Python backend's stub links the system libpython unless pointed at this interpreter's.
    prefix=$("$peers/triton/bin/python" -c 'import sys; print(sys.base_prefix)')
    LD_LIBRARY_PATH="$prefix/lib:${LD_LIBRARY_PATH:-}" setsid "$peers/triton/bin/python" \
        scripts/peers/triton_digits.py "$model" "$http" "$grpc" "$(free_port)" >"$peers/triton.log" 2>&1 &
    pids+=($!)
    wait_ready "http://127.0.0.1:$http/v2/models/digits/ready" triton "$!"
    front digits_triton_http "http://127.0.0.1:$http" ""
    front digits_triton_grpc "grpc://127.0.0.1:$grpc" ""
fi

if [ "$which_peers" = all ] || [ "$which_peers" = mlserver ]; then
    venv mlserver mlserver==1.7.1 "uvloop<0.22" onnxruntime==1.31.1
    http=$(free_port); grpc=$(free_port)
    root="$peers/mlserver-models"
    mkdir -p "$root/digits"
    cp scripts/peers/mlserver_runtime.py "$root/digits/"
    cat > "$root/settings.json" <<JSON
{"http_port": $http, "grpc_port": $grpc, "metrics_port": $(free_port), "parallel_workers": 0}
JSON
    mlserver_model_settings "$root/digits/model-settings.json" "$model" 64 0.002
    mlserver_bin="$PWD/$peers/mlserver/bin/mlserver"
    (cd "$root" && exec setsid "$mlserver_bin" start .) >"$peers/mlserver.log" 2>&1 &
    pids+=($!)
    wait_ready "http://127.0.0.1:$http/v2/models/digits/ready" mlserver "$!"
    # MLServer refuses the binary tensor extension (422), so REST goes as JSON.
    front digits_mlserver_http "http://127.0.0.1:$http" "upstream_binary = false"
    front digits_mlserver_grpc "grpc://127.0.0.1:$grpc" ""
fi

cargo build --quiet --bin tollgate
setsid ./target/debug/tollgate serve --config "$config" >"$peers/tollgate.log" 2>&1 &
pids+=($!)
wait_ready "http://127.0.0.1:$tollgate_http/v2/health/ready" tollgate "$!"
"$python" scripts/peers/check.py "127.0.0.1:$tollgate_http" "${models[@]}"
