#!/usr/bin/env bash
# A/B of issue 12 item 11: pix.iteration.iid and pix.stream.current_iid in the C collation (what
# extension 1.2 installs) against the database's default collation, on the read path that uses them
# (6 collectors on one ISPB, batches of 10, bench/pgbench/pix_next.sql), alternating C, default,
# default, C in one database. The default collation is whatever initdb gave the cluster (printed):
# on a C.UTF-8 cluster the difference is strcoll() against memcmp(); a locale such as en_US.UTF-8
# costs more per comparison.
#
#   bench/collation-ab.sh [--seconds S] [--backlog N] [--port P]   (PGBIN honoured; port COLLATIONAB_PORT, default 5499;
#   COLLATIONAB_ORDER="default C C default" reverses the alternation)
set -euo pipefail

SECONDS_PER_RUN=10
BACKLOG=1500000
PORT=${COLLATIONAB_PORT:-5499}
while (($#)); do
    case "$1" in
        --seconds) SECONDS_PER_RUN=$2; shift 2 ;;
        --backlog) BACKLOG=$2; shift 2 ;;
        --port) PORT=$2; shift 2 ;;
        -h | --help) sed -n '2,10p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "unknown option $1" >&2; exit 2 ;;
    esac
done

top=$(cd "$(dirname "$0")/.." && pwd)
export PGBIN=${PGBIN:-/usr/lib/postgresql/15/bin}
dir=$(mktemp -d /tmp/collationab.XXXXXX)
trap '"$top/scripts/cluster.sh" stop "$dir" >/dev/null 2>&1 || true; rm -rf "$dir"' EXIT
"$top/scripts/cluster.sh" start "$dir" "$PORT" >/dev/null
export PGHOST=$dir PGPORT=$PORT PGUSER=postgres PGDATABASE=postgres
sql() { "$PGBIN/psql" -qXAt -v ON_ERROR_STOP=1 -c "$1"; }
sql "CREATE EXTENSION pix" >/dev/null 2>&1
sql "SET pix.max_generate = 100000; SELECT count(*) FROM generate_series(1, ($BACKLOG + 99999) / 100000), LATERAL pix_generate_messages('11111111', 100000 + 0 * generate_series)" >/dev/null

echo "# collation A/B — $(date -u +%Y-%m-%dT%H:%MZ), commit $(git -C "$top" rev-parse --short HEAD)$(git -C "$top" diff --quiet HEAD || echo ' (tree not clean)'), extension $(sql "SELECT extversion FROM pg_extension WHERE extname = 'pix'")"
echo "# machine: $(nproc) cores, $(uname -r); PostgreSQL $(sql 'SHOW server_version'); database collation $(sql 'SHOW lc_collate'); 6 clients, ${SECONDS_PER_RUN}s per run"
echo
echo "| run | collation of iid | msg/s | ms per transaction |"
echo "|---|---|---:|---:|"

# The view pix.delivery reads iid: it leaves the extension for this throw-away database.
sql "ALTER EXTENSION pix DROP VIEW pix.delivery; DROP VIEW pix.delivery" >/dev/null
collate() { # C | default
    sql "ALTER TABLE pix.iteration ALTER COLUMN iid TYPE text COLLATE \"$1\";
         ALTER TABLE pix.stream ALTER COLUMN current_iid TYPE text COLLATE \"$1\"" >/dev/null
    sql "VACUUM ANALYZE pix.iteration" >/dev/null
    sql "VACUUM ANALYZE pix.stream" >/dev/null
    sql "VACUUM pix.ready" >/dev/null
}
run=0
for variant in ${COLLATIONAB_ORDER:-C default default C}; do
    run=$((run + 1))
    collate "$variant"
    sql "UPDATE pix.stream SET last_read_at = '-infinity' WHERE state = 'o'; SELECT pix_expire_streams()" >/dev/null
    sql "CHECKPOINT"
    before=$(sql "SELECT count(*) FROM pix.ready WHERE ispb = '11111111'")
    lat=$("$PGBIN/pgbench" -n -M prepared -c 6 -j 2 -T "$SECONDS_PER_RUN" -D started=0 -f "$top/bench/pgbench/pix_next.sql" 2>&1 |
          awk '/latency average/ {print $4}')
    after=$(sql "SELECT count(*) FROM pix.ready WHERE ispb = '11111111'")
    echo "| $run | $variant | $(((before - after) / SECONDS_PER_RUN)) | $lat |"
done
