#!/usr/bin/env bash
# SQL-level benchmark of the pix extension, side by side in one run on one throw-away cluster with
# default durability (fsync and synchronous_commit on):
#   1. commit-rate floor: 6 clients, each updating its own row, one commit per transaction
#   2. pix_stream_next vs the usual SKIP LOCKED queue (state column + partial index), 6 clients on one
#      ISPB, batches of 10, a backlog that no run drains; two alternating rounds each
#   3. claim latency on a fresh database vs after N confirmed messages, with table sizes and dead tuples
#   4. pix_generate_messages vs INSERT ... SELECT over generate_series (100 000 messages)
#
#   bench/sql-bench.sh [--seconds S] [--backlog N] [--history N] [--clients C] [--port P]
# Defaults: 15 s per run, 2 000 000 backlog, 1 000 000 history (use --history 5000000 for the
# recorded figures), 6 clients. Prints tables; run it on an otherwise idle machine.
set -euo pipefail

SECONDS_PER_RUN=15
BACKLOG=2000000
HISTORY=1000000
CLIENTS=6
PORT=${SQLBENCH_PORT:-5497}
while (($#)); do
    case "$1" in
        --seconds) SECONDS_PER_RUN=$2; shift 2 ;;
        --backlog) BACKLOG=$2; shift 2 ;;
        --history) HISTORY=$2; shift 2 ;;
        --clients) CLIENTS=$2; shift 2 ;;
        --port) PORT=$2; shift 2 ;;
        -h | --help) sed -n '2,14p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "unknown option $1" >&2; exit 2 ;;
    esac
done

top=$(cd "$(dirname "$0")/.." && pwd)
here="$top/bench/pgbench"
PGBIN=${PGBIN:-/usr/lib/postgresql/15/bin}
dir=$(mktemp -d /tmp/pixbench.XXXXXX)
trap '"$top/scripts/cluster.sh" stop "$dir" >/dev/null 2>&1 || true; rm -rf "$dir"' EXIT

"$top/scripts/cluster.sh" start "$dir" "$PORT" >/dev/null
export PGHOST=$dir PGPORT=$PORT PGUSER=postgres PGDATABASE=bench
psql -qX -d postgres -c "CREATE DATABASE bench" >/dev/null
sql() { psql -qXAt -v ON_ERROR_STOP=1 -c "$1"; }
sql "CREATE EXTENSION pix"
sql "ALTER DATABASE bench SET pix.max_generate = 100000"

echo "# pix SQL benchmark — $(date -u +%Y-%m-%dT%H:%MZ), commit $(git -C "$top" rev-parse --short HEAD 2>/dev/null || echo none)"
echo "# machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), $(uname -r); PostgreSQL $(sql 'SHOW server_version')"
echo "# fsync=$(sql 'SHOW fsync') synchronous_commit=$(sql 'SHOW synchronous_commit'); $CLIENTS clients; ${SECONDS_PER_RUN}s per run"
echo

load_backlog() { # ISPB COUNT
    local ispb=$1 left=$2 n
    while ((left > 0)); do
        n=$((left > 100000 ? 100000 : left))
        sql "SELECT pix_generate_messages('$ispb', $n)" >/dev/null
        left=$((left - n))
    done
}

echo "loading a backlog of $BACKLOG messages for ISPB 11111111 ..." >&2
load_backlog 11111111 "$BACKLOG"
sql "CREATE TABLE baseline_msg (id bigserial PRIMARY KEY, receiver_ispb text NOT NULL, state text NOT NULL,
        end_to_end_id text NOT NULL, valor numeric NOT NULL, enqueued_at timestamptz NOT NULL, body text NOT NULL)"
sql "INSERT INTO baseline_msg (receiver_ispb, state, end_to_end_id, valor, enqueued_at, body)
     SELECT recebedor_ispb, 'ready', end_to_end_id, valor, enqueued_at, body FROM pix.message ORDER BY id"
sql "CREATE INDEX baseline_ready ON baseline_msg (receiver_ispb, id) WHERE state = 'ready'"
sql "CREATE TABLE commit_floor (id int PRIMARY KEY, n bigint NOT NULL DEFAULT 0)"
sql "INSERT INTO commit_floor (id) SELECT generate_series(0, $CLIENTS - 1)"
sql "VACUUM ANALYZE" >/dev/null
sql "CHECKPOINT"

# Runs one pgbench script; prints transactions/s and the average latency in ms.
run_pgbench() { # SCRIPT CLIENTS SECONDS EXTRA...
    local script=$1 clients=$2 secs=$3
    shift 3
    "$PGBIN/pgbench" -n -M prepared -c "$clients" -j "$((clients < 2 ? 1 : 2))" -T "$secs" \
        -D started=0 -D prev='{}' "$@" -f "$script" 2>&1 |
        awk '/^tps/ {tps=$3} /latency average/ {lat=$4} END {printf "%s %s\n", tps, lat}'
}

pix_ready() { sql "SELECT count(*) FROM pix.ready WHERE ispb = '11111111'"; }
baseline_ready() { sql "SELECT count(*) FROM baseline_msg WHERE state = 'ready'"; }

declare -a pix_rates base_rates
read -r floor_tps floor_lat < <(run_pgbench "$here/commit_floor.sql" "$CLIENTS" "$SECONDS_PER_RUN")
for round in 1 2; do
    before=$(pix_ready)
    read -r _ pix_lat < <(run_pgbench "$here/pix_next.sql" "$CLIENTS" "$SECONDS_PER_RUN")
    pix_rates+=("$(((before - $(pix_ready)) / SECONDS_PER_RUN))")
    sql "SELECT pix_expire_streams()" >/dev/null
    sql "UPDATE pix.stream SET last_read_at = '-infinity' WHERE state = 'o'; SELECT pix_expire_streams()" >/dev/null

    before=$(baseline_ready)
    read -r _ base_lat < <(run_pgbench "$here/baseline.sql" "$CLIENTS" "$SECONDS_PER_RUN")
    base_rates+=("$(((before - $(baseline_ready)) / SECONDS_PER_RUN))")
    echo "round $round: pix ${pix_rates[-1]} msg/s (${pix_lat} ms/tx), baseline ${base_rates[-1]} msg/s (${base_lat} ms/tx)" >&2
done
pix_mean=$(((pix_rates[0] + pix_rates[1]) / 2))
base_mean=$(((base_rates[0] + base_rates[1]) / 2))

echo "## Claim throughput: $CLIENTS collectors on one ISPB, batches of 10, backlog $BACKLOG"
echo
echo "| run | round 1 msg/s | round 2 msg/s | mean msg/s | vs baseline |"
echo "|---|---:|---:|---:|---:|"
echo "| pix_stream_next | ${pix_rates[0]} | ${pix_rates[1]} | $pix_mean | $(awk "BEGIN {printf \"%.2fx\", $pix_mean / $base_mean}") |"
echo "| SKIP LOCKED baseline | ${base_rates[0]} | ${base_rates[1]} | $base_mean | 1.00x |"
echo "| commit-rate floor ($CLIENTS clients, own row) | ${floor_tps%.*} commits/s | | | pix uses $(awk "BEGIN {printf \"%.0f%%\", 100 * $pix_mean / 10 / $floor_tps}") of it (in transactions) |"
echo

# ---- claim latency vs history ---------------------------------------------------------------------
sizes() {
    sql "SELECT format('| %s | %s | %s | %s |', c.relname, pg_size_pretty(pg_total_relation_size(c.oid)),
                coalesce(s.n_live_tup, 0), coalesce(s.n_dead_tup, 0))
           FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
           LEFT JOIN pg_stat_user_tables s ON s.relid = c.oid
          WHERE n.nspname = 'pix' AND c.relkind = 'r' ORDER BY c.relname"
}
load_backlog 22222222 200000
sql "VACUUM ANALYZE" >/dev/null
read -r _ fresh_lat < <(run_pgbench "$here/claim_latency.sql" 1 "$SECONDS_PER_RUN")
sizes_before=$(sizes)

echo "making $HISTORY confirmed messages (ISPB 33333333) ..." >&2
load_backlog 33333333 "$HISTORY"
sed 's/11111111/33333333/' "$here/pix_next.sql" >"$dir/drain.sql"
txs=$((HISTORY / 10 / CLIENTS + 2))
"$PGBIN/pgbench" -n -M prepared -c "$CLIENTS" -j 2 -t "$txs" -D started=0 -f "$dir/drain.sql" >/dev/null 2>&1
sql "UPDATE pix.stream SET last_read_at = '-infinity' WHERE state = 'o' AND ispb = '33333333'"
sql "SELECT pix_expire_streams()" >/dev/null
confirmed=$(sql "SELECT coalesce(sum(cardinality(message_ids)), 0) FROM pix.iteration WHERE confirmed_at IS NOT NULL")
sizes_after_nov=$(sizes)
sql "VACUUM ANALYZE" >/dev/null
read -r _ hist_lat < <(run_pgbench "$here/claim_latency.sql" 1 "$SECONDS_PER_RUN")

echo "## Claim latency vs confirmed history (1 client, batches of 10)"
echo
echo "| database | confirmed messages kept | ms per read |"
echo "|---|---:|---:|"
echo "| fresh | 0 | $fresh_lat |"
echo "| after history | $confirmed | $hist_lat ($(awk "BEGIN {printf \"%.2fx\", $hist_lat / $fresh_lat}")) |"
echo
echo "Tables before the history (| table | total size | live | dead |):"
echo "$sizes_before"
echo
echo "Tables after the history, before vacuum:"
echo "$sizes_after_nov"
echo

# ---- generator ---------------------------------------------------------------------------------------
sql "CREATE FUNCTION bench_cpf(base bigint) RETURNS text LANGUAGE sql IMMUTABLE AS \$\$
  WITH d AS (SELECT lpad((base % 1000000000)::text, 9, '1') AS s),
       d1 AS (SELECT s, (SELECT (sum(substr(s, i, 1)::int * (11 - i)) * 10) % 11 % 10 FROM generate_series(1, 9) i) AS c1 FROM d),
       d2 AS (SELECT s || c1 AS s10 FROM d1)
  SELECT s10 || (SELECT (sum(substr(s10, i, 1)::int * (12 - i)) * 10) % 11 % 10 FROM generate_series(1, 10) i) FROM d2 \$\$"
gen_ms() { # SQL -> milliseconds
    local t0 t1
    t0=$(date +%s%N)
    sql "$1" >/dev/null
    t1=$(date +%s%N)
    echo $(((t1 - t0) / 1000000))
}
c_ms=$(gen_ms "SELECT pix_generate_messages('44444444', 100000)")
sql_ms=$(gen_ms "INSERT INTO pix.message (end_to_end_id, valor, pagador_nome, pagador_cpf_cnpj, pagador_ispb,
    pagador_agencia, pagador_conta, pagador_tipo_conta, recebedor_nome, recebedor_cpf_cnpj, recebedor_ispb,
    recebedor_agencia, recebedor_conta, recebedor_tipo_conta, campo_livre, tx_id, data_hora_pagamento)
  SELECT 'E60746948' || to_char(now() AT TIME ZONE 'UTC', 'YYYYMMDDHH24MI') || substr(md5(random()::text), 1, 11),
         round((random() * 5000)::numeric + 0.01, 2),
         (ARRAY['José Silva', 'Maria Conceição', 'Ana Souza', 'João Pereira'])[1 + (random() * 3)::int],
         bench_cpf((random() * 999999999)::bigint), '60746948', lpad(((random() * 9999)::int)::text, 4, '0'),
         ((random() * 99999999)::bigint + 1)::text, (ARRAY['CACC', 'SVGS', 'SLRY', 'TRAN'])[1 + (random() * 3)::int],
         (ARRAY['Flávio Lima', 'Luiza Costa', 'Pedro Alves'])[1 + (random() * 2)::int],
         bench_cpf((random() * 999999999)::bigint), '55555555', lpad(((random() * 9999)::int)::text, 4, '0'),
         ((random() * 99999999)::bigint + 1)::text, (ARRAY['CACC', 'SVGS', 'SLRY', 'TRAN'])[1 + (random() * 3)::int],
         '', substr(md5(random()::text), 1, 20), date_trunc('milliseconds', now())
    FROM generate_series(1, 100000)")
echo "## Generating 100 000 messages (both through the same validation trigger and enqueue)"
echo
echo "| method | ms | messages/s |"
echo "|---|---:|---:|"
echo "| pix_generate_messages (C) | $c_ms | $((100000 * 1000 / c_ms)) |"
echo "| INSERT ... SELECT generate_series (SQL) | $sql_ms | $((100000 * 1000 / sql_ms)) |"
echo "| ratio | $(awk "BEGIN {printf \"%.2fx\", $sql_ms / $c_ms}") | |"
