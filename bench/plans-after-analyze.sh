#!/usr/bin/env bash
# The SQL-level drain (6 collectors on one ISPB, bench/pgbench/pix_next.sql) in the seconds after
# VACUUM ANALYZE has seen pix.iteration and pix.stream empty, and in a steady state, for this tree's
# pix.so (A) against BASE_REV's (B), side by side in the order A B B A.
#
#   bench/plans-after-analyze.sh BASE_REV [BACKLOG] [SECONDS]
#
# Each run: a fresh database, BACKLOG (1 000 000) messages generated, then either VACUUM ANALYZE +
# CHECKPOINT ("after analyze": the planner believes the history tables are empty) or CHECKPOINT
# alone ("steady": never analyzed, the planner assumes a table of some size), then pgbench -T
# SECONDS (15). Prints reads/s and how many sequential scans pix.iteration got.
# Both libraries serve the schema of this tree's extension (the newest schema, as any upgrade does).
# The installed $libdir/pix.so is swapped for each run and this tree's is put back at the end.
# Cluster: /tmp/pix-plans-bench on port PIX_BENCH_PORT (5980).
set -euo pipefail

top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top"
base_rev=${1:?base revision}
backlog=${2:-1000000}
seconds=${3:-15}
PGBIN=${PGBIN:-/usr/lib/postgresql/15/bin}
port=${PIX_BENCH_PORT:-5980}
dir=/tmp/pix-plans-bench
libdir=$(pg_config --pkglibdir)
base_dir=/tmp/pix-plans-base

make -s pix.so install >/dev/null
cp pix.so "$dir.A.so"
rm -rf "$base_dir"
mkdir -p "$base_dir"
git archive "$base_rev" | tar -x -C "$base_dir"
make -s -C "$base_dir" pix.so >/dev/null
cp "$base_dir/pix.so" "$dir.B.so"

scripts/cluster.sh stop "$dir" >/dev/null 2>&1 || true
rm -rf "$dir"
trap 'cp "$dir.A.so" "$libdir/pix.so"; scripts/cluster.sh stop "$dir" >/dev/null 2>&1 || true' EXIT
admin=$(scripts/cluster.sh start "$dir" "$port" 2>/dev/null)
db=${admin/dbname=postgres/dbname=pix}
q() { "$PGBIN/psql" -XqAt -v ON_ERROR_STOP=1 "$@"; }

run() { # A|B after|steady
    cp "$dir.$1.so" "$libdir/pix.so"
    q "$admin" -c "DROP DATABASE IF EXISTS pix WITH (FORCE)" -c "CREATE DATABASE pix"
    q "$db" -c "SET client_min_messages = error" -c "CREATE EXTENSION pix" \
        -c "ALTER DATABASE pix SET pix.max_generate = $backlog"
    q "$db" -c "SELECT pix_generate_messages('11111111', $backlog)" >/dev/null
    [[ $2 == after ]] && q "$db" -c "VACUUM ANALYZE"
    q "$db" -c "CHECKPOINT"
    local tps
    tps=$("$PGBIN/pgbench" -n -M prepared -D started=0 -c 6 -j 2 -T "$seconds" \
        -f bench/pgbench/pix_next.sql "$db" 2>&1 | awk '/^tps/ {printf "%.0f", $3}')
    printf "%-7s %s  %6s reads/s  pix.iteration: %s sequential scans\n" "$2" "$1" "$tps" \
        "$(q "$db" -c "SELECT seq_scan FROM pg_stat_user_tables WHERE relid = 'pix.iteration'::regclass")"
}

echo "# bench/plans-after-analyze.sh $* — $(date -u +%Y-%m-%dT%H:%M:%SZ), A = commit $(git rev-parse --short HEAD)$([[ -z "$(git status --porcelain)" ]] && echo " (clean tree)" || echo " (uncommitted changes)"), B = $(git rev-parse --short "$base_rev"); $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg)"
echo "# 6 clients, batches of 10, $backlog messages of backlog, -T $seconds; order A B B A"
for mode in after steady; do
    for v in A B B A; do
        run "$v" "$mode"
    done
done
