#!/usr/bin/env bash
# Before and after in one invocation: bench.sh's sections against two gateway builds, the one of
# a base commit and the one of this tree, round by round in alternating order, so that the drift
# of a shared machine falls on both sides alike. With --memo-side, a third side runs this tree
# with the body memo off (cache.body_memo_entries = 0), for the hit figures it is kept for.
#
# Usage: scripts/bench_compare.sh BASE_REV [--rounds N] [--only a,b,c,g] [--quick] [--memo-side]
#                                          [--keep]
#   --keep   keep the side-rounds an earlier invocation finished and run only the missing ones
# TOLLGATE_BENCH_BASE_BINARY=PATH uses a base gateway already built from BASE_REV.
# Results: target/bench-compare/SIDE-rN/ (bench.sh's own output per side and round) and
# target/bench-compare/summary.md: each figure's median over the rounds, per side.
set -euo pipefail
cd "$(dirname "$0")/.."

BASE="${1:?usage: scripts/bench_compare.sh BASE_REV [--rounds N] [--only LIST] [--quick] [--memo-side]}"
shift
ROUNDS=3
ONLY="a,b,c,g"
QUICK=()
MEMO_SIDE=0
KEEP=0
while [ $# -gt 0 ]; do
    case "$1" in
        --rounds) ROUNDS="${2:?--rounds needs a number}"; shift ;;
        --only) ONLY="${2:?--only needs a list}"; shift ;;
        --quick) QUICK=(--quick) ;;
        --memo-side) MEMO_SIDE=1 ;;
        --keep) KEEP=1 ;;
        *) echo "bench_compare.sh: unknown argument $1" >&2; exit 2 ;;
    esac
    shift
done

OUT=target/bench-compare
mkdir -p "$OUT"
[ "$KEEP" = 1 ] || rm -rf "$OUT"/*-r*/
rm -f "$OUT/summary.md"
BASE_SRC="$OUT/base-src"
BASE_TARGET="$OUT/base-target"
base_sha=$(git rev-parse --short "$BASE")
this_sha=$(git rev-parse --short HEAD)

echo "== building the base ($base_sha) and this tree ($this_sha), release"
mkdir -p "$OUT/bin"
if [ -n "${TOLLGATE_BENCH_BASE_BINARY:-}" ]; then
    cp "$TOLLGATE_BENCH_BASE_BINARY" "$OUT/bin/tollgate-base"
else
    if [ ! -e "$BASE_SRC/.git" ]; then
        git worktree add --detach "$BASE_SRC" "$BASE" >/dev/null
    else
        git -C "$BASE_SRC" checkout --detach --quiet "$BASE"
    fi
    (cd "$BASE_SRC" && CARGO_TARGET_DIR="$PWD/../base-target" timeout 3000 cargo build --release -p tollgate --bins)
    cp "$BASE_TARGET/release/tollgate" "$OUT/bin/tollgate-base"
fi
timeout 3000 cargo build --release -p tollgate -p tollgate-loadtest --bins
cp target/release/tollgate "$OUT/bin/tollgate-new"

sides=(base new)
[ "$MEMO_SIDE" = 1 ] && sides+=(nomemo)
run_side() { # SIDE ROUND
    local side=$1 round=$2 gateway only=$ONLY memo=""
    case $side in
        base) gateway="$OUT/bin/tollgate-base" ;;
        new) gateway="$OUT/bin/tollgate-new" ;;
        nomemo) gateway="$OUT/bin/tollgate-new"; memo=0; only=a ;;
    esac
    if [ "$KEEP" = 1 ] && [ -s "$OUT/$side-r$round/summary.json" ]; then
        echo "== round $round: $side (kept)"
        return 0
    fi
    echo "== round $round: $side"
    TOLLGATE_BENCH_OUT="$OUT/$side-r$round" TOLLGATE_BENCH_GATEWAY="$gateway" \
        TOLLGATE_BENCH_MEMO_ENTRIES="$memo" \
        scripts/bench.sh --no-build --runs 1 --only "$only" "${QUICK[@]}" >"$OUT/$side-r$round.log" 2>&1 ||
        { echo "bench.sh failed for $side in round $round; see $OUT/$side-r$round.log" >&2; return 1; }
}
for round in $(seq 1 "$ROUNDS"); do
    order=("${sides[@]}")
    # Each side goes first in turn.
    for _ in $(seq 2 "$round"); do order=("${order[@]:1}" "${order[0]}"); done
    for side in "${order[@]}"; do run_side "$side" "$round"; done
done

python3 - "$OUT" "$ROUNDS" "$base_sha" "$this_sha" "${sides[@]}" <<'PY'
import json, pathlib, statistics, sys

out, rounds, base_sha, this_sha = pathlib.Path(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4]
sides = sys.argv[5:]
def summary(side, r):
    path = out / f"{side}-r{r}" / "summary.json"
    return json.loads(path.read_text()) if path.exists() else {}
figures = {}
for side in sides:
    for r in range(1, rounds + 1):
        for figure, value in summary(side, r).items():
            # A ratio where the figure has one, else its own value (a latency, say).
            if isinstance(value, dict):
                number = value.get("ratio") if value.get("ratio") is not None else value.get("a")
                if number is not None:
                    figures.setdefault(figure, {}).setdefault(side, []).append(number)
def med(values):
    return statistics.median(values) if values else None
def fmt(value):
    return "n/a" if value is None else f"{value:.3f}"
head = ["figure"] + [f"{s} (median of {rounds})" for s in sides] + ["new / base", "rounds (base; new)"]
lines = ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
for figure, by_side in figures.items():
    medians = [med(by_side.get(s, [])) for s in sides]
    base, new = medians[0], medians[1] if len(medians) > 1 else None
    change = new / base if base and new is not None else None
    spread = "; ".join(", ".join(fmt(v) for v in by_side.get(s, [])) for s in sides[:2])
    lines.append("| " + " | ".join([figure] + [fmt(m) for m in medians] + [fmt(change), spread]) + " |")
text = f"base {base_sha} vs this tree {this_sha}, {rounds} rounds\n\n" + "\n".join(lines) + "\n"
(out / "summary.md").write_text(text)
print(text)
PY
