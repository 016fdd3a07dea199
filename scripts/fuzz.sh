#!/usr/bin/env bash
# Runs the wire decoders' fuzz targets (tests/fuzz) for a bounded time each. Not part of
# `make test`: it needs cargo-fuzz (`cargo install cargo-fuzz`) and a nightly compiler, or the
# stable one with RUSTC_BOOTSTRAP=1, which this script sets.
#
# Usage: scripts/fuzz.sh [SECONDS per target, default 60] [TARGET ...]
# Crashes are kept under tests/fuzz/artifacts/<target>/ (git-ignored), with the input that
# caused them; `cargo fuzz run --fuzz-dir tests/fuzz <target> <file>` replays one.
set -euo pipefail
cd "$(dirname "$0")/.."
SECONDS_EACH="${1:-60}"
shift || true
TARGETS=("$@")
[ ${#TARGETS[@]} -gt 0 ] || TARGETS=(http_decode grpc_decode)
command -v cargo-fuzz >/dev/null || { echo "fuzz.sh: cargo-fuzz is missing (cargo install cargo-fuzz)" >&2; exit 1; }
export RUSTC_BOOTSTRAP=1
for target in "${TARGETS[@]}"; do
    echo "== $target for ${SECONDS_EACH}s"
    mkdir -p "tests/fuzz/corpus/$target"
    cargo fuzz run --fuzz-dir tests/fuzz "$target" "tests/fuzz/corpus/$target" -- \
        -max_total_time="$SECONDS_EACH" -max_len=4096
done
