#!/usr/bin/env bash
# SQL-level benchmark of the pix extension, side by side in one run on one throw-away cluster with
# default durability (fsync and synchronous_commit on):
#   1. commit-rate floor: C clients, each updating its own row, one commit per transaction
#   2. pix_stream_next vs the usual SKIP LOCKED queue (state column + partial index, id looked up by a
#      hash index so that the partial index is its plan; the autovacuum settings of pix.ready; its plan
#      shown with EXPLAIN ANALYZE), C clients on one ISPB, batches of 10, a
#      backlog that no run drains; R rounds, alternating which runs first; a ratio per round
#   3. claim latency of non-empty claims (every claim checked to return 10), one ISPB, on a fresh
#      database and again after N more confirmed messages of that same ISPB; both runs preceded by the
#      same steps (generate the messages to claim, CHECKPOINT), no manual VACUUM in either
#   4. pix_generate_messages vs INSERT ... SELECT over generate_series (100 000 messages)
#
#   bench/sql-bench.sh [--seconds S] [--backlog N] [--history N] [--clients C] [--rounds R]
#                      [--claims T] [--port P]
# Defaults: 15 s per run, 4 000 000 backlog, 1 000 000 history, 6 clients, 3 rounds, 20 000 timed
# claims; port 5497 (or SQLBENCH_PORT); PGBIN honoured. Prints Markdown, stamped with the commit and
# whether the tree was clean; commit that output under bench/results/ when you publish a figure.
set -euo pipefail

SECONDS_PER_RUN=15
BACKLOG=4000000
HISTORY=1000000
CLIENTS=6
ROUNDS=3
CLAIMS=20000
PORT=${SQLBENCH_PORT:-5497}
while (($#)); do
    case "$1" in
        --seconds) SECONDS_PER_RUN=$2; shift 2 ;;
        --backlog) BACKLOG=$2; shift 2 ;;
        --history) HISTORY=$2; shift 2 ;;
        --clients) CLIENTS=$2; shift 2 ;;
        --rounds) ROUNDS=$2; shift 2 ;;
        --claims) CLAIMS=$2; shift 2 ;;
        --port) PORT=$2; shift 2 ;;
        -h | --help) sed -n '2,19p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "unknown option $1" >&2; exit 2 ;;
    esac
done

top=$(cd "$(dirname "$0")/.." && pwd)
here="$top/bench/pgbench"
PGBIN=${PGBIN:-/usr/lib/postgresql/15/bin}
export PATH="$PGBIN:$PATH"
dir=$(mktemp -d /tmp/pixbench.XXXXXX)
trap '"$top/scripts/cluster.sh" stop "$dir" >/dev/null 2>&1 || true; rm -rf "$dir"' EXIT

"$top/scripts/cluster.sh" start "$dir" "$PORT" >/dev/null
export PGHOST=$dir PGPORT=$PORT PGUSER=postgres PGDATABASE=bench
psql -qX -d postgres -c "CREATE DATABASE bench" >/dev/null
sql() { psql -qXAt -v ON_ERROR_STOP=1 -c "$1"; }
sql "CREATE EXTENSION pix"
sql "ALTER DATABASE bench SET pix.max_generate = 100000"

commit=$(git -C "$top" rev-parse --short HEAD 2>/dev/null || echo none)
tree=$([[ -z "$(git -C "$top" status --porcelain 2>/dev/null)" ]] && echo clean || echo "with uncommitted changes")
echo "# pix SQL benchmark — $(date -u +%Y-%m-%dT%H:%MZ), commit $commit ($tree)"
echo "# machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), $(uname -r), load average $(cut -d' ' -f1-3 /proc/loadavg); PostgreSQL $(sql 'SHOW server_version')"
echo "# fsync=$(sql 'SHOW fsync') synchronous_commit=$(sql 'SHOW synchronous_commit'); $CLIENTS clients; ${SECONDS_PER_RUN}s per run; $ROUNDS rounds"
echo "# command: bench/sql-bench.sh --seconds $SECONDS_PER_RUN --backlog $BACKLOG --history $HISTORY --clients $CLIENTS --rounds $ROUNDS --claims $CLAIMS"
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
# The baseline gets pix.ready's autovacuum settings (the table its claims churn, like pix.ready).
autovac=$(sql "SELECT string_agg(o, ', ') FROM pg_class c, unnest(c.reloptions) o
               WHERE c.oid = 'pix.ready'::regclass AND o LIKE 'autovacuum%'")
# Its best plan for the claim is the partial index (receiver_ispb, id) WHERE state = 'ready': it holds
# only ready rows, in claim order. With a btree on id as well, the planner takes that one instead
# (every row is ready when the table is loaded) and then walks every taken and done row at the head of
# the queue. So id is looked up through a hash index (equality only: the previous batch's UPDATE and
# the claim's join), which leaves the partial index the only ordered path. The EXPLAIN below shows it.
sql "CREATE TABLE baseline_msg (id bigserial NOT NULL, receiver_ispb text NOT NULL, state text NOT NULL,
        end_to_end_id text NOT NULL, valor numeric NOT NULL, enqueued_at timestamptz NOT NULL, body text NOT NULL)
     ${autovac:+WITH ($autovac)}"
sql "INSERT INTO baseline_msg (receiver_ispb, state, end_to_end_id, valor, enqueued_at, body)
     SELECT recebedor_ispb, 'ready', end_to_end_id, valor, enqueued_at, body FROM pix.message ORDER BY id"
sql "CREATE INDEX baseline_id ON baseline_msg USING hash (id)"
sql "CREATE INDEX baseline_ready ON baseline_msg (receiver_ispb, id) WHERE state = 'ready'"
sql "CREATE TABLE commit_floor (id int PRIMARY KEY, n bigint NOT NULL DEFAULT 0)"
sql "INSERT INTO commit_floor (id) SELECT generate_series(0, $CLIENTS - 1)"
sql "VACUUM ANALYZE" >/dev/null
sql "CHECKPOINT"

# Runs one pgbench script; prints transactions/s and the average latency in ms.
run_pgbench() { # SCRIPT CLIENTS SECONDS EXTRA...
    local script=$1 clients=$2 secs=$3
    shift 3
    pgbench -n -M prepared -c "$clients" -j "$((clients < 2 ? 1 : 2))" -T "$secs" \
        -D started=0 -D prev='{}' "$@" -f "$script" 2>&1 |
        awk '/^tps/ {tps=$3} /latency average/ {lat=$4} END {printf "%s %s\n", tps, lat}'
}

pix_ready() { sql "SELECT count(*) FROM pix.ready WHERE ispb = '11111111'"; }
baseline_ready() { sql "SELECT count(*) FROM baseline_msg WHERE state = 'ready'"; }
close_pix_streams() { # expire every open stream (its pending batch goes back to the queue)
    sql "UPDATE pix.stream SET last_read_at = '-infinity' WHERE state = 'o'; SELECT pix_expire_streams()" >/dev/null
}
# A run that empties its backlog measured an idle queue for part of its time: its rate is a floor,
# not a figure. Refuse to print it.
rate_of() { # BEFORE AFTER WHAT -> msg/s
    if (($2 == 0)); then
        echo "sql-bench.sh: the $3 run drained its whole backlog ($1 messages): raise --backlog" >&2
        exit 1
    fi
    echo $((($1 - $2) / SECONDS_PER_RUN))
}
run_pix() { # -> msg/s
    local before
    before=$(pix_ready)
    run_pgbench "$here/pix_next.sql" "$CLIENTS" "$SECONDS_PER_RUN" >/dev/null
    rate_of "$before" "$(pix_ready)" pix_stream_next
    close_pix_streams
}
run_baseline() { # -> msg/s
    local before
    before=$(baseline_ready)
    run_pgbench "$here/baseline.sql" "$CLIENTS" "$SECONDS_PER_RUN" >/dev/null
    rate_of "$before" "$(baseline_ready)" baseline
}
baseline_plan() { # EXPLAIN of the baseline's claim, as pgbench's clients run it (rolled back)
    psql -qXA -v ON_ERROR_STOP=1 <<'SQL'
BEGIN;
EXPLAIN (ANALYZE, BUFFERS, COSTS OFF, TIMING OFF)
WITH c AS (SELECT id FROM baseline_msg
            WHERE receiver_ispb = '11111111' AND state = 'ready'
            ORDER BY id LIMIT 10 FOR UPDATE SKIP LOCKED),
     u AS (UPDATE baseline_msg m SET state = 'taken' FROM c WHERE m.id = c.id RETURNING m.id, m.body)
SELECT count(*) FROM u;
ROLLBACK;
SQL
}

plan_before=$(baseline_plan)
read -r floor_tps _ < <(run_pgbench "$here/commit_floor.sql" "$CLIENTS" "$SECONDS_PER_RUN")
declare -a pix_rates base_rates firsts
for ((round = 1; round <= ROUNDS; round++)); do
    if ((round % 2)); then
        p=$(run_pix)
        b=$(run_baseline)
        firsts+=(pix)
    else
        b=$(run_baseline)
        p=$(run_pix)
        firsts+=(baseline)
    fi
    pix_rates+=("$p")
    base_rates+=("$b")
    echo "round $round (${firsts[-1]} first): pix $p msg/s, baseline $b msg/s" >&2
done
plan_after=$(baseline_plan)
ratio() { awk "BEGIN {printf \"%.2fx\", $1 / ($2 > 0 ? $2 : 1)}"; }

echo "## Claim throughput: $CLIENTS collectors on one ISPB, batches of 10, backlog $BACKLOG"
echo
echo "| round | ran first | pix_stream_next msg/s | SKIP LOCKED baseline msg/s | pix / baseline |"
echo "|---:|---|---:|---:|---:|"
ratios=()
for ((i = 0; i < ROUNDS; i++)); do
    r=$(ratio "${pix_rates[i]}" "${base_rates[i]}")
    ratios+=("${r%x}")
    echo "| $((i + 1)) | ${firsts[i]} | ${pix_rates[i]} | ${base_rates[i]} | $r |"
done
sorted=$(printf '%s\n' "${ratios[@]}" | sort -g | tr '\n' ' ')
echo
echo "Ratios per round, sorted: ${sorted% }x (median $(printf '%s\n' "${ratios[@]}" | sort -g | awk '{a[NR]=$1} END {print (NR % 2) ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2}')x)."
echo "Commit-rate floor ($CLIENTS clients, each its own row): ${floor_tps%.*} commits/s, measured once before the rounds."
echo
echo "Autovacuum settings: pix.ready \`${autovac:-defaults}\`; baseline_msg \`$(sql "SELECT coalesce(array_to_string(reloptions, ', '), 'defaults') FROM pg_class WHERE oid = 'baseline_msg'::regclass")\`; pix.message \`$(sql "SELECT coalesce(array_to_string(reloptions, ', '), 'defaults') FROM pg_class WHERE oid = 'pix.message'::regclass")\`."
echo
echo "The baseline's claim (EXPLAIN ANALYZE, rolled back), before the first round:"
echo
echo '```'
echo "$plan_before"
echo '```'
echo
for plan in "$plan_before" "$plan_after"; do
    grep -q "Index Scan using baseline_ready" <<<"$plan" ||
        echo "**WARNING: the baseline's claim did not use its partial index in this plan: its figures are not its best.**"
done
echo
echo "and after the last round:"
echo
echo '```'
echo "$plan_after"
echo '```'
echo

# ---- claim latency vs history, the same ISPB -----------------------------------------------------
L=22222222
sizes() {
    sql "SELECT format('| %s | %s | %s | %s |', c.relname, pg_size_pretty(pg_total_relation_size(c.oid)),
                coalesce(s.n_live_tup, 0), coalesce(s.n_dead_tup, 0))
           FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
           LEFT JOIN pg_stat_user_tables s ON s.relid = c.oid
          WHERE n.nspname = 'pix' AND c.relkind = 'r' ORDER BY c.relname"
}
confirmed_of_l() {
    sql "SELECT coalesce(sum(cardinality(i.message_ids)), 0) FROM pix.iteration i JOIN pix.stream s USING (stream_id)
          WHERE s.ispb = '$L' AND i.confirmed_at IS NOT NULL"
}
# One latency run: generate what it will claim (every claim full), CHECKPOINT, time CLAIMS claims of
# 10 on one stream; prints "ms_per_read full_claims". The same steps before both runs.
latency_run() {
    load_backlog "$L" $(((CLAIMS + 1) * 10 + 1000))
    sql "CHECKPOINT"
    local before after lat
    before=$(sql "SELECT count(*) FROM pix.ready WHERE ispb = '$L'")
    read -r _ lat < <(pgbench -n -M prepared -c 1 -j 1 -t "$CLAIMS" -D started=0 -f "$here/claim_latency.sql" 2>&1 |
        awk '/^tps/ {tps=$3} /latency average/ {lat=$4} END {printf "%s %s\n", tps, lat}')
    after=$(sql "SELECT count(*) FROM pix.ready WHERE ispb = '$L'")
    close_pix_streams
    # CLAIMS transactions of 10 each left the ready queue (the last batch pending, then requeued
    # by close_pix_streams, so count before it): every claim returned 10 when the difference is 10 * CLAIMS
    echo "$lat $(((before - after) / 10))"
}

echo "claim latency, fresh ..." >&2
read -r fresh_lat fresh_full < <(latency_run)
fresh_confirmed=$(confirmed_of_l)
sizes_fresh=$(sizes)

echo "making $HISTORY confirmed messages of ISPB $L ..." >&2
load_backlog "$L" "$HISTORY"
sed "s/11111111/$L/" "$here/pix_next.sql" >"$dir/drain.sql"
left=$(sql "SELECT count(*) FROM pix.ready WHERE ispb = '$L'")
pgbench -n -M prepared -c "$CLIENTS" -j 2 -t $((left / 10 / CLIENTS + 2)) -D started=0 -f "$dir/drain.sql" >/dev/null 2>&1
close_pix_streams
left=$(sql "SELECT count(*) FROM pix.ready WHERE ispb = '$L'")
if ((left > 0)); then # requeued pending batches: confirm them too
    pgbench -n -M prepared -c 1 -j 1 -t $((left / 10 + 2)) -D started=0 -f "$dir/drain.sql" >/dev/null 2>&1
    close_pix_streams
fi
sizes_hist=$(sizes)
hist_confirmed=$(confirmed_of_l)

echo "claim latency, after the history ..." >&2
read -r hist_lat hist_full < <(latency_run)

echo "## Claim latency of full claims vs confirmed history of the same ISPB (1 client, batches of 10)"
echo
echo "Each run: generate $(((CLAIMS + 1) * 10 + 1000)) messages for ISPB $L, CHECKPOINT, then $CLAIMS timed claims of 10 on one stream. No manual VACUUM anywhere in this section (autovacuum on, the tables' own settings)."
echo
echo "| database | confirmed messages of ISPB $L before the run | claims that returned 10 of 10 | ms per read |"
echo "|---|---:|---:|---:|"
echo "| fresh | 0 | $fresh_full / $CLAIMS | $fresh_lat |"
echo "| after history | $hist_confirmed | $hist_full / $CLAIMS | $hist_lat ($(ratio "$hist_lat" "$fresh_lat") of fresh) |"
echo
echo "(Confirmed after the fresh run: $fresh_confirmed.) Tables before the history was made (| table | total size | live | dead |):"
echo "$sizes_fresh"
echo
echo "Tables after the history, before the second run:"
echo "$sizes_hist"
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
echo "| ratio | $(ratio "$sql_ms" "$c_ms") | |"
