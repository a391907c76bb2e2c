#!/usr/bin/env bash
# test/fault/run.sh [scenario ...] — the fault-injection suite (see test/fault/faults.py), then the
# report: writes RELIABILITY.md at the root of the tree with the table of this run.
#
# Uses ports 5495 (PostgreSQL, unix socket in /tmp/pgF1) and 3495 (pixd), /tmp/pgF* directories only
# (PIX_FAULT_PGPORT, PIX_FAULT_HTTP_PORT, PIX_FAULT_PGDIR and PIX_FAULT_LOGDIR override them),
# a frozen private copy of the installed extension and of shim/pixd (test/fault/snapshot.sh), and
# stops its cluster at the end; then the high-availability tests (below). About 10 minutes. Ends with
# "N passed, N failed, N skipped".
# PIX_FAULT_NO_REPORT=1: do not rewrite RELIABILITY.md.
set -uo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD
export PIX_FAULT_PGDIR=${PIX_FAULT_PGDIR:-/tmp/pgF1}
SNAP=$PIX_FAULT_PGDIR-inst
LOGS=${PIX_FAULT_LOGDIR:-/tmp/pgF-logs}
mkdir -p "$LOGS"

ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
# pg_auto_failover needs the whole installation (pg_basebackup, pg_rewind, pg_config), not the snapshot.
HA_PGBIN=${PGBIN:-/usr/lib/postgresql/15/bin}
BIN=$(test/fault/snapshot.sh "$SNAP") || { echo "snapshot failed"; echo "0 passed, 1 failed"; exit 1; }
export PGBIN=$BIN PIX_PIXD=$SNAP/pixd PIX_FAULT_LOGDIR=$LOGS

# A cluster left over from an interrupted run may belong to other binaries: start afresh.
scripts/cluster.sh stop "$PIX_FAULT_PGDIR" >/dev/null 2>&1 || true
rm -rf "$PIX_FAULT_PGDIR"
cleanup() {
    PGBIN=$BIN scripts/cluster.sh stop "$PIX_FAULT_PGDIR" >/dev/null 2>&1 || true
}
trap cleanup EXIT

started=$(date -u +%Y-%m-%dT%H:%M:%SZ)
# The tree the snapshot was built from, stamped in the report (not the tree at the end of the run)
export PIX_FAULT_COMMIT=$(git rev-parse --short HEAD 2>/dev/null || echo none)
export PIX_FAULT_TREE=$([[ -z "$(git status --porcelain 2>/dev/null)" ]] && echo clean || echo "with uncommitted changes")
set +e
timeout 900 python3 test/fault/faults.py --json "$LOGS/results.json" ${1:+--only "$@"} 2>&1 | tee "$LOGS/faults.out"
status=${PIPESTATUS[0]}
set -e
# High availability (test/fault/failover.py: a pg_auto_failover formation on ports PIX_HA_PORT..+2,
# default 5850; test/fault/multi_pixd.py: three pixd on this suite's cluster), unless scenarios were
# named or PIX_FAULT_NO_HA=1. About 5 minutes.
ha_passed=0
ha_failed=0
ha_skipped=0
if [[ $# -eq 0 && "${PIX_FAULT_NO_HA:-}" != 1 ]]; then
    rm -f "$LOGS/failover.json" "$LOGS/multi.json"
    for args in "failover.py --json $LOGS/failover.json" "multi_pixd.py --json $LOGS/multi.json"; do
        # shellcheck disable=SC2086  # args is a word list
        PGBIN=$HA_PGBIN timeout 900 python3 test/fault/$args 2>&1 | tee "$LOGS/ha.out"
        line=$(grep -E '^[0-9]+ passed, [0-9]+ failed(, [0-9]+ skipped)?$' "$LOGS/ha.out" | tail -n1)
        if [[ -n "$line" ]]; then
            c=0
            read -r a _ b _ c _ <<<"$line"
            b=${b%,}
            ha_passed=$((ha_passed + a))
            ha_failed=$((ha_failed + b))
            ha_skipped=$((ha_skipped + ${c:-0}))
        else
            ha_failed=$((ha_failed + 1))
        fi
    done
fi
if [[ "${PIX_FAULT_NO_REPORT:-}" != 1 && -s "$LOGS/results.json" ]]; then
    # Written aside and moved at the end: the reports ask git whether the tree is clean, and a
    # half-written RELIABILITY.md would make it look modified.
    python3 test/fault/report.py "$LOGS/results.json" "$started" "$SNAP" >"$LOGS/RELIABILITY.md"
    if [[ -s "$LOGS/failover.json" || -s "$LOGS/multi.json" ]]; then
        python3 test/fault/ha_report.py "$LOGS/failover.json" "$LOGS/multi.json" "$started" >>"$LOGS/RELIABILITY.md"
    fi
    mv "$LOGS/RELIABILITY.md" "$ROOT/RELIABILITY.md"
    echo "wrote RELIABILITY.md"
fi
line=$(grep -E '^[0-9]+ passed, [0-9]+ failed(, [0-9]+ skipped)?$' "$LOGS/faults.out" | tail -n1)
if [[ -z "$line" ]]; then
    line="0 passed, 1 failed"
fi
c=0
read -r a _ b _ c _ <<<"$line"
b=${b%,}
echo "$((a + ha_passed)) passed, $((b + ha_failed)) failed, $((${c:-0} + ha_skipped)) skipped"
if ((ha_failed > 0)); then
    exit 1
fi
exit "$status"
