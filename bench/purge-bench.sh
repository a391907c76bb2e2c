#!/usr/bin/env bash
# Purge benchmark: what one pix_purge_history() chunk (10 000 iterations and the confirmed messages
# they carried) costs, against the size of the history around it. A flat purge costs the same per
# million whatever the history; a purge that scans the whole history per chunk grows with it.
#
#   bench/purge-bench.sh [--sizes "500000 2000000"] [--chunks 10] [--port P]
#
# For each history size H, on a throw-away cluster (scripts/cluster.sh, PGBIN honoured, port
# PURGEBENCH_PORT or --port, default 5499): CREATE EXTENSION pix, then H old confirmed iterations
# of closed streams (100 per stream, one message each), written directly into the tables as the
# functions would have left them (the message triggers are off while loading: validation is not what
# is measured), VACUUM ANALYZE, then --chunks calls of pix_purge_history() with retention 0, each its
# own transaction, timed by psql. Prints one line per size: median ms per chunk and the seconds per
# million iterations that makes. Works against any version of the extension that has these tables
# (run it once per build to compare builds side by side).
set -euo pipefail

SIZES="500000 2000000"
CHUNKS=10
PORT=${PURGEBENCH_PORT:-5499}
while (($#)); do
    case "$1" in
        --sizes) SIZES=$2; shift 2 ;;
        --chunks) CHUNKS=$2; shift 2 ;;
        --port) PORT=$2; shift 2 ;;
        -h | --help) sed -n '2,16p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "unknown option $1" >&2; exit 2 ;;
    esac
done

top=$(cd "$(dirname "$0")/.." && pwd)
export PGBIN=${PGBIN:-/usr/lib/postgresql/15/bin}
dir=$(mktemp -d /tmp/purgebench.XXXXXX)
trap '"$top/scripts/cluster.sh" stop "$dir" >/dev/null 2>&1 || true; rm -rf "$dir"' EXIT
"$top/scripts/cluster.sh" start "$dir" "$PORT" >/dev/null
export PGHOST=$dir PGPORT=$PORT PGUSER=postgres
sql() { "$PGBIN/psql" -qXAt -v ON_ERROR_STOP=1 -d "${DB:-postgres}" -c "$1"; }

echo "# pix purge benchmark — $(date -u +%Y-%m-%dT%H:%MZ), commit $(git -C "$top" rev-parse --short HEAD 2>/dev/null || echo none)$(git -C "$top" diff --quiet HEAD 2>/dev/null || echo ' (tree not clean)')"
echo "# machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), $(uname -r); PostgreSQL $(sql 'SHOW server_version'); library $("$PGBIN/pg_config" --pkglibdir)/pix.so"
echo "# $CHUNKS chunks of 10 000 iterations per history size"
echo
echo "| history (iterations) | extension | median ms per chunk | min | max | s per million purged |"
echo "|---:|---|---:|---:|---:|---:|"

for size in $SIZES; do
    db=purge_$size
    sql "DROP DATABASE IF EXISTS $db" >/dev/null 2>&1
    sql "CREATE DATABASE $db" >/dev/null
    echo "loading $size iterations ..." >&2
    DB=$db sql "CREATE EXTENSION pix" >/dev/null 2>&1
    DB=$db sql "
      ALTER TABLE pix.message DISABLE TRIGGER USER;
      INSERT INTO pix.message (end_to_end_id, valor, pagador_nome, pagador_cpf_cnpj, pagador_ispb,
             pagador_agencia, pagador_conta, pagador_tipo_conta, recebedor_nome, recebedor_cpf_cnpj,
             recebedor_ispb, recebedor_agencia, recebedor_conta, recebedor_tipo_conta,
             data_hora_pagamento, body)
      SELECT 'E32074986202401011200' || lpad(g::text, 11, '0'), 1.00, 'A', '52998224725', '32074986',
             '0001', '1', 'CACC', 'B', '11222333000181', '12345678', '0001', '2', 'CACC', now(), '{}'
        FROM generate_series(1, $size) AS g;
      ALTER TABLE pix.message ENABLE TRIGGER USER;
      INSERT INTO pix.institution (ispb) VALUES ('12345678');
      INSERT INTO pix.stream (ispb, state, seq, current_iid, opened_at, last_read_at, closed_at,
                              delivered, confirmed)
      SELECT '12345678', 'c', 100, 's' || lpad(g::text, 19, '0'), now() - interval '30 days',
             now() - interval '30 days', now() - interval '30 days', 100, 100
        FROM generate_series(1, ($size + 99) / 100) AS g;
      INSERT INTO pix.iteration (iid, stream_id, seq, message_ids, delivered_at, confirmed_at)
      SELECT 'i' || lpad(m.id::text, 19, '0'), s.stream_id, (m.id - 1) % 100 + 1, ARRAY[m.id],
             now() - interval '30 days' + m.id * interval '1 ms', now() - interval '30 days' + m.id * interval '1 ms'
        FROM pix.message m JOIN pix.stream s ON s.current_iid = 's' || lpad(((m.id - 1) / 100 + 1)::text, 19, '0');" >/dev/null
    DB=$db sql "VACUUM ANALYZE" >/dev/null
    version=$(DB=$db sql "SELECT extversion FROM pg_extension WHERE extname = 'pix'")
    sql "CHECKPOINT" >/dev/null
    args=(-c '\timing on' -c 'SET pix.history_retention = 0')
    for ((i = 0; i < CHUNKS; i++)); do
        args+=(-c 'SELECT pix_purge_history()')
    done
    times=$("$PGBIN/psql" -qX -d "$db" -v ON_ERROR_STOP=1 "${args[@]}" | awk '/^Time:/ {print $2}' | tail -n "$CHUNKS" | sort -n)
    purged=$(DB=$db sql "SELECT $size - count(*) FROM pix.iteration")
    echo "$times" | awk -v size="$size" -v version="$version" -v purged="$purged" -v chunks="$CHUNKS" '
        { t[NR] = $1 }
        END {
            med = (NR % 2) ? t[(NR + 1) / 2] : (t[NR / 2] + t[NR / 2 + 1]) / 2
            printf "| %d | %s | %.1f | %.1f | %.1f | %.2f |\n", size, version, med, t[1], t[NR], med * 100 / 1000
            if (purged != chunks * 10000) printf "(purged %d iterations, not %d)\n", purged, chunks * 10000 > "/dev/stderr"
        }'
    sql "DROP DATABASE $db" >/dev/null
done
