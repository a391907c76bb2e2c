#!/usr/bin/env bash
# Side-by-side runs of a pixbench scenario: this tree (A) against an older build (B), in the order
# A B B A so that a drift of the (shared, noisy) machine weighs on both sides alike.
#
#   bench/compare.sh SCENARIO BASE_DIR [pixbench.sh options: --quick, --full, --pg-port, ...]
#
# BASE_DIR is a checkout of the older commit with its shim/pixd built, e.g.
#   git archive efe951b | tar -x -C /tmp/base && make -C /tmp/base shim/pixd
# Its extension must be installed in the PostgreSQL that BASE_PGBIN (and BASE_PG_CONFIG) name: a
# private copy (scripts: /tmp/mkpgroot.sh NAME) where `make install` was run from BASE_DIR; without
# BASE_PGBIN, B runs on this tree's extension (then only the server differs).
# A uses PGBIN/PG_CONFIG as they are and installs this tree's extension once.
#
# Results: OUT/A1, OUT/B1, OUT/B2, OUT/A2 (each a pixbench.sh --out directory); the four tables are
# printed in run order, each under its label, and saved as OUT/compare-SCENARIO.md.
set -euo pipefail

top=$(cd "$(dirname "$0")/.." && pwd)
scenario=${1:?scenario}
base=${2:?base checkout}
shift 2
OUT=${PIXBENCH_COMPARE_OUT:-/tmp/pixbench-compare}
mkdir -p "$OUT"
[[ -x "$base/shim/pixd" ]] || { echo "compare.sh: $base/shim/pixd not built" >&2; exit 2; }
base_commit=$(git -C "$base" rev-parse --short HEAD 2>/dev/null || cat "$base/.commit" 2>/dev/null || echo "$base")

run() { # LABEL
    local label=$1 rc=0
    shift
    if [[ $label == A* ]]; then
        local install=()
        [[ $label == A1 ]] || install=(--no-install)
        "$top/bench/pixbench.sh" "$scenario" --out "$OUT/$label" "${install[@]}" "$@" >/dev/null || rc=$?
    else
        PGBIN=${BASE_PGBIN:-${PGBIN:-}} PG_CONFIG=${BASE_PG_CONFIG:-${PG_CONFIG:-pg_config}} \
            "$top/bench/pixbench.sh" "$scenario" --out "$OUT/$label" --no-install --pixd "$base/shim/pixd" \
            "$@" >/dev/null || rc=$?
    fi
    echo "compare.sh: $label done (exit $rc)" >&2
}

shift_args=("$@")
for label in A1 B1 B2 A2; do
    run "$label" "${shift_args[@]}"
done

{
    echo "## $scenario: A = this tree ($(git -C "$top" rev-parse --short HEAD)), B = $base_commit; order A1 B1 B2 A2"
    echo
    for label in A1 B1 B2 A2; do
        echo "### $label ($([[ $label == A* ]] && echo "this tree" || echo "$base_commit"))"
        echo
        cat "$OUT/$label/$scenario.md"
        echo
    done
} | tee "$OUT/compare-$scenario.md"
