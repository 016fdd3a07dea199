#!/usr/bin/env bash
# Every test, in one go: the Rust unit and integration tests of the whole workspace (they start
# real gateways, a real redis-server and the real ONNX Runtime), then the interop suite, which
# drives a running gateway with the real tritonclient over HTTP and gRPC. Called by `make test`.
set -euo pipefail
cd "$(dirname "$0")/.."

cargo build --workspace --bins

if cargo nextest --version >/dev/null 2>&1; then
    cargo nextest run --workspace --no-fail-fast
else
    cargo test --workspace --no-fail-fast
fi

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}
http_port=$(free_port)
grpc_port=$(free_port)
log=target/interop-gateway.log
rm -f target/interop-ledger.sqlite target/interop-ledger.sqlite-wal target/interop-ledger.sqlite-shm
./target/debug/tollgate serve --config tests/interop/config.toml \
    --http-addr "127.0.0.1:$http_port" --grpc-addr "127.0.0.1:$grpc_port" >"$log" 2>&1 &
gateway=$!
trap 'kill "$gateway" 2>/dev/null || true' EXIT

ready=0
for _ in $(seq 1 150); do
    if python3 -c "import urllib.request as r; r.urlopen('http://127.0.0.1:$http_port/v2/health/ready', timeout=1)" 2>/dev/null; then
        ready=1
        break
    fi
    kill -0 "$gateway" 2>/dev/null || break
    sleep 0.2
done
if [ "$ready" != 1 ]; then
    echo "the gateway for the interop tests did not start; its log:" >&2
    cat "$log" >&2
    exit 1
fi

TOLLGATE_HTTP="127.0.0.1:$http_port" TOLLGATE_GRPC="127.0.0.1:$grpc_port" \
    .venv/bin/python -m pytest -q tests/interop

# A graceful stop is part of the contract: SIGTERM drains and exits 0.
kill -TERM "$gateway"
wait "$gateway"
trap - EXIT
echo "interop gateway stopped cleanly"
