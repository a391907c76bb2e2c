#!/usr/bin/env bash
# SQL-level benchmark of pix_messages_send (POST /api/pix/{ispb}/msgs without HTTP), side by side
# with a plain INSERT of the same messages, in batches of 100, on one throw-away cluster with
# default durability (fsync and synchronous_commit on). Three variants, each run ROUNDS times in
# alternating order (insert, send, send+credential, then send+credential, send, insert, ...):
#   insert           INSERT INTO pix.message (...) SELECT ... of 100 prepared rows (the baseline:
#                    the same C trigger validates and renders every row; EXPLAIN printed below)
#   send             pix_messages_send(sender, body) of the same 100 messages as one JSON array,
#                    as a trusted role (no credential)
#   send+credential  the same with a token credential (the authorization lookup included)
# Every run stores fresh messages (distinct endToEndIds), so idempotency never short-cuts. Bodies
# and rows are prepared in tables beforehand, so neither side pays for making or shipping them.
#
#   bench/send-bench.sh [--batches N] [--clients C] [--rounds R] [--port P]
# Defaults: 200 batches (20 000 messages) per run, 2 clients, 2 rounds, port 5498
# (PIX_SEND_BENCH_PORT). Prints the runs and, per variant, the rate over all its runs and the median
# over rounds of its ratio to the insert of the same round.
# PGBIN selects the PostgreSQL binaries (default /usr/lib/postgresql/15/bin).
set -euo pipefail

BATCHES=200
CLIENTS=2
ROUNDS=2
PORT=${PIX_SEND_BENCH_PORT:-5498}
while (($#)); do
    case "$1" in
        --batches) BATCHES=$2; shift 2 ;;
        --clients) CLIENTS=$2; shift 2 ;;
        --rounds) ROUNDS=$2; shift 2 ;;
        --port) PORT=$2; shift 2 ;;
        -h | --help) sed -n '2,21p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "unknown option $1" >&2; exit 2 ;;
    esac
done
if ((BATCHES % CLIENTS != 0)); then
    echo "--batches must be a multiple of --clients" >&2
    exit 2
fi

top=$(cd "$(dirname "$0")/.." && pwd)
export PGBIN=${PGBIN:-/usr/lib/postgresql/15/bin}
PATH=$PGBIN:$PATH
dir=$(mktemp -d /tmp/pix-send-bench.XXXXXX)
trap '"$top/scripts/cluster.sh" stop "$dir" >/dev/null 2>&1 || true; rm -rf "$dir"' EXIT

"$top/scripts/cluster.sh" start "$dir" "$PORT" >/dev/null
export PGHOST=$dir PGPORT=$PORT PGUSER=postgres PGDATABASE=bench
psql -qX -d postgres -c "CREATE DATABASE bench" >/dev/null
sql() { psql -qXAt -v ON_ERROR_STOP=1 -c "$1"; }
sql "CREATE EXTENSION pix"

RUNS=$((3 * ROUNDS))
PER_RUN=$((BATCHES * 100))
echo "# pix send benchmark — $(date -u +%Y-%m-%dT%H:%MZ), commit $(git -C "$top" rev-parse --short HEAD 2>/dev/null || echo none)$(git -C "$top" diff --quiet HEAD 2>/dev/null || echo ' (tree not clean)')"
echo "# machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), $(uname -r); PostgreSQL $(sql 'SHOW server_version')"
echo "# fsync=$(sql 'SHOW fsync') synchronous_commit=$(sql 'SHOW synchronous_commit'); $CLIENTS clients; $BATCHES batches of 100 per run; $ROUNDS rounds"
echo

echo "preparing $((RUNS * PER_RUN)) messages ..." >&2
# Run r's messages: payer 12345678, receivers 20000001..20000010, endToEndId unique per run.
sql "CREATE SCHEMA bench;
CREATE TABLE bench.msgs AS
SELECT r AS run, (n - 1) / 100 + 1 AS batch, n,
       'E12345678202401011200R' || chr(64 + r) || lpad(n::text, 9, '0') AS end_to_end_id,
       (n % 5000 + 1) + 0.25 AS valor, 'Marcos José da Silva' AS pagador_nome,
       '98716278151' AS pagador_cpf_cnpj, '12345678' AS pagador_ispb, '0001' AS pagador_agencia,
       '1231231' AS pagador_conta, 'CACC' AS pagador_tipo_conta, 'Flavio José' AS recebedor_nome,
       '77615678242' AS recebedor_cpf_cnpj, lpad((20000001 + n % 10)::text, 8, '0') AS recebedor_ispb,
       '0361' AS recebedor_agencia, '1210098' AS recebedor_conta, 'SVGS' AS recebedor_tipo_conta,
       'pagamento ' || n AS campo_livre, 'tx' || n AS tx_id,
       '2024-01-01T12:00:00.000Z'::timestamptz + n * interval '1 ms' AS data_hora_pagamento
  FROM generate_series(1, $RUNS) r, generate_series(1, $PER_RUN) n;
CREATE INDEX ON bench.msgs (run, batch);
CREATE TABLE bench.bodies AS
SELECT run, batch, json_agg(json_build_object(
         'endToEndId', end_to_end_id, 'valor', valor,
         'pagador', json_build_object('nome', pagador_nome, 'cpfCnpj', pagador_cpf_cnpj,
                                      'ispb', pagador_ispb, 'agencia', pagador_agencia,
                                      'contaTransacional', pagador_conta, 'tipoConta', pagador_tipo_conta),
         'recebedor', json_build_object('nome', recebedor_nome, 'cpfCnpj', recebedor_cpf_cnpj,
                                        'ispb', recebedor_ispb, 'agencia', recebedor_agencia,
                                        'contaTransacional', recebedor_conta, 'tipoConta', recebedor_tipo_conta),
         'campoLivre', campo_livre, 'txId', tx_id,
         'dataHoraPagamento', to_char(data_hora_pagamento AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"'))
         ORDER BY n)::text AS body
  FROM bench.msgs GROUP BY run, batch;
CREATE UNIQUE INDEX ON bench.bodies (run, batch);
CREATE SEQUENCE bench.batch;
-- with a credential a payment goes to a registered institution only: the receivers hold a token
CREATE TABLE bench.receivers AS
SELECT pix_token_issue(lpad((20000001 + i)::text, 8, '0'), 'bench receiver') FROM generate_series(0, 9) i;
CREATE TABLE bench.token AS SELECT 'token:' || encode(sha256(convert_to(pix_token_issue('12345678', 'bench'), 'UTF8')), 'hex') AS credential;"
sql "VACUUM ANALYZE bench.msgs, bench.bodies"
CREDENTIAL=$(sql "SELECT credential FROM bench.token")

COLUMNS="end_to_end_id, valor, pagador_nome, pagador_cpf_cnpj, pagador_ispb, pagador_agencia, pagador_conta, pagador_tipo_conta, recebedor_nome, recebedor_cpf_cnpj, recebedor_ispb, recebedor_agencia, recebedor_conta, recebedor_tipo_conta, campo_livre, tx_id, data_hora_pagamento"
script() { # variant run
    local next="(SELECT nextval('bench.batch'))"
    case $1 in
    insert) echo "INSERT INTO pix.message ($COLUMNS) SELECT $COLUMNS FROM bench.msgs m WHERE m.run = $2 AND m.batch = $next ORDER BY m.n;" ;;
    send) echo "SELECT (pix_messages_send('12345678', b.body)).accepted FROM bench.bodies b WHERE b.run = $2 AND b.batch = $next;" ;;
    send+credential) echo "SELECT (pix_messages_send('12345678', b.body, '$CREDENTIAL')).accepted FROM bench.bodies b WHERE b.run = $2 AND b.batch = $next;" ;;
    esac
}

echo "## The baseline's plan (one batch of 100 rows by index)"
echo '```'
psql -qXAt -c "EXPLAIN $(script insert 1 | sed 's/;$//')"
echo '```'
echo

declare -A rate_of total_msgs total_secs
run=0
printf '| run | round | variant | messages | seconds | messages/s |\n|---|---|---|---|---|---|\n'
for ((round = 1; round <= ROUNDS; round++)); do
    if ((round % 2 == 0)); then order=(send+credential send insert); else order=(insert send send+credential); fi
    for variant in "${order[@]}"; do
        run=$((run + 1))
        sql "SELECT setval('bench.batch', 1, false); CHECKPOINT;" >/dev/null
        script "$variant" "$run" >"$dir/script.sql"
        before=$(sql "SELECT count(*) FROM pix.message")
        start=$(date +%s.%N)
        pgbench -n -f "$dir/script.sql" -c "$CLIENTS" -j "$CLIENTS" -t $((BATCHES / CLIENTS)) >"$dir/pgbench.out" 2>&1 ||
            { cat "$dir/pgbench.out" >&2; exit 1; }
        end=$(date +%s.%N)
        stored=$(($(sql "SELECT count(*) FROM pix.message") - before))
        if ((stored != PER_RUN)); then
            echo "run $run ($variant) stored $stored messages, expected $PER_RUN" >&2
            exit 1
        fi
        secs=$(echo "$end - $start" | bc -l)
        rate=$(echo "$stored / $secs" | bc -l)
        printf '| %d | %d | %s | %d | %.2f | %.0f |\n' "$run" "$round" "$variant" "$stored" "$secs" "$rate"
        rate_of[$variant,$round]=$rate
        total_msgs[$variant]=$((${total_msgs[$variant]:-0} + stored))
        total_secs[$variant]=$(echo "${total_secs[$variant]:-0} + $secs" | bc -l)
    done
done
echo
# Within a round the three variants run back to back, so their ratio is little affected by load
# that drifts over minutes (2 shared cores); the median of the rounds' ratios is the figure.
median() { printf '%s\n' "$@" | sort -g | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
ratios() { # variant
    local r out=()
    for ((r = 1; r <= ROUNDS; r++)); do out+=("$(echo "${rate_of[$1,$r]} / ${rate_of[insert,$r]}" | bc -l)"); done
    median "${out[@]}"
}
printf '| variant | messages/s (all runs) | median ratio to insert over %d rounds |\n|---|---|---|\n' "$ROUNDS"
for variant in insert send send+credential; do
    printf '| %s | %.0f | %.2f |\n' "$variant" "$(echo "${total_msgs[$variant]} / ${total_secs[$variant]}" | bc -l)" \
        "$(ratios "$variant")"
done
