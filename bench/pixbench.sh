#!/usr/bin/env bash
# End-to-end benchmarks of pix stream over real HTTP (shim/pixd) and PostgreSQL, driven by
# bench/pixbench/pixbench. Each scenario starts a throw-away cluster, installs the extension,
# starts the shim on loopback, runs, prints a Markdown table, and stops everything.
#
#   bench/pixbench.sh SCENARIO [options]
#
# Scenarios:
#   drain          N messages on one ISPB, 6 multipart collectors, vs pix_stream_next in pgbench
#                  (bench/pgbench/pix_next.sql) measured in the same run; bar: >= 0.7x
#   wake           6 parked collectors per ISPB, one message per INSERT; bar: p99 <= 5 ms
#   parked         10 000 parked long polls (6 per ISPB); bars: shim RSS <= 50 MB, 204 at deadline +-100 ms
#   idle           5 400 parked collectors (900 ISPBs x 6) and no traffic: what the database does per
#                  second (commits, transaction ids, WAL syncs and bytes); goal: write commits <= 5 %
#                  of efe951b's
#   icom-capacity  4 000 messages/minute (60 s; --full: 10 min); bar: >= 99% delivered within 200 ms
#   scaling        throughput vs collectors 1..6, vs ISPBs 1..256, vs backlog
#   soak           a mixed run (120 s; --full: 10 min): table sizes, dead tuples, shim RSS, latency
#   tls-drain      the drain over HTTPS with mutual TLS (keep-alive) vs over plain HTTP, alternating in
#                  one run; bar: TLS >= 0.8x plain
#   send           POST /api/pix/{ispb}/msgs in batches of 100 vs SQL INSERT of the same messages
#                  (pixbench --send); bars: >= 20 000 msgs/s over HTTP, >= 0.7x SQL
#   sharding       1 database vs the PL/Proxy router with 1, 2 and 4 shards on this machine, many ISPBs:
#                  drain throughput side by side, routing overhead at 1 shard (bar <= 15 %), per shard
#                  (PostgreSQL ports --pg-port + 10..+14, +20..+22, +40..+44)
#   check          short drain + wake + expiry runs, verdicts only (for the test suite)
#   all            every scenario above except check, then charts
#   charts         redraw bench/charts/*.png from the results directory
#
# Options: --quick (shorter runs), --full (the issue's full lengths), --out DIR (results, default
# /tmp/pixbench-results), --pg-port P (5496; env PIXBENCH_PG_PORT), --http-port P (3496; env
# PIXBENCH_HTTP_PORT), --no-install (skip make install: use the extension PGBIN's PostgreSQL has),
# --pixd PATH (the server to run, default this tree's shim/pixd; env PIXBENCH_PIXD), e.g. a build of
# an older commit for a side-by-side run (bench/compare.sh).
# Exit status: non-zero when a run's verdict is FAIL (the tables still print).
set -euo pipefail

top=$(cd "$(dirname "$0")/.." && pwd)
PB="$top/bench/pixbench/pixbench"
PGBIN=${PGBIN:-/usr/lib/postgresql/15/bin}
PG_PORT=${PIXBENCH_PG_PORT:-5496}
HTTP_PORT=${PIXBENCH_HTTP_PORT:-3496}
PIXD=${PIXBENCH_PIXD:-$top/shim/pixd}
OUT=/tmp/pixbench-results
MODE=default
INSTALL=1
scenario=${1:-}
[[ -n "$scenario" ]] || { sed -n '2,32p' "$0" | sed 's/^# \{0,1\}//'; exit 2; }
shift
while (($#)); do
    case "$1" in
        --quick) MODE=quick; shift ;;
        --full) MODE=full; shift ;;
        --out) OUT=$2; shift 2 ;;
        --pg-port) PG_PORT=$2; shift 2 ;;
        --http-port) HTTP_PORT=$2; shift 2 ;;
        --pixd) PIXD=$2; shift 2 ;;
        --no-install) INSTALL=0; shift ;;
        -h | --help) sed -n '2,32p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "unknown option $1" >&2; exit 2 ;;
    esac
done
q() { [[ $MODE == quick ]]; }
full() { [[ $MODE == full ]]; }

mkdir -p "$OUT"
dir=$(mktemp -d /tmp/pxb.XXXXXX)
shim_pid=
failures=0
cleanup() {
    stop_shim
    local d
    for d in "$dir"/sharded-*; do
        [[ -d "$d" ]] && "$top/scripts/shards.sh" down "$d" >/dev/null 2>&1
    done
    "$top/scripts/cluster.sh" stop "$dir" >/dev/null 2>&1 || true
    [[ -f "$dir/postgres.log" ]] && cp "$dir/postgres.log" "$OUT/$scenario-postgres.log"
    grep -E 'terminated by signal|PANIC' "$dir/postgres.log" 2>/dev/null >&2 || true
    rm -rf "$dir"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

log() { echo "pixbench.sh: $*" >&2; }

setup_cluster() {
    ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
    # only what this script needs: the extension is built by `make install`
    make -s -C "$top" shim/pixd bench/pixbench/pixbench >/dev/null
    if ((INSTALL)); then make -s -C "$top" install >/dev/null; fi
    conninfo=$("$top/scripts/cluster.sh" start "$dir" "$PG_PORT" 2>/dev/null)
    export PGHOST=$dir PGPORT=$PG_PORT PGUSER=postgres
    psql -qX -d postgres -c "CREATE DATABASE pix" >/dev/null
    DB="host=$dir port=$PG_PORT dbname=pix user=postgres"
    sql "CREATE EXTENSION pix"
    sql "ALTER DATABASE pix SET pix.max_generate = 100000"
}
sql() { psql -qXAt -d pix -v ON_ERROR_STOP=1 -c "$1"; }
IDLE_MS=60000 # pix.stream_idle_timeout of the database (the extension's default unless set below)
set_idle_timeout() { # SECONDS: for new sessions of the database, and for pixbench's two-live-streams check
    sql "ALTER DATABASE pix SET pix.stream_idle_timeout = '${1}s'"
    IDLE_MS=$(($1 * 1000))
}

# HTTPS: set SHIM_CA to the CA of the shim's certificate, and SHIM_CLIENT to a client certificate
# (without .crt/.key) under mutual TLS; start_shim's health checks use them.
SHIM_CA=
SHIM_CLIENT=
health_url() {
    if [[ -z "$SHIM_CA" ]]; then
        echo "http://127.0.0.1:$HTTP_PORT/health"
    elif [[ -n "$SHIM_CLIENT" ]]; then
        echo "--cacert $SHIM_CA --cert $SHIM_CLIENT.crt --key $SHIM_CLIENT.key https://127.0.0.1:$HTTP_PORT/health"
    else
        echo "--cacert $SHIM_CA https://127.0.0.1:$HTTP_PORT/health"
    fi
}
start_shim() { # WAIT_MS [extra pixd options]
    local wait=$1
    shift
    stop_shim
    # shellcheck disable=SC2046
    if curl -s -o /dev/null $(health_url) 2>/dev/null; then
        log "port $HTTP_PORT is already in use: choose another with --http-port"
        exit 2
    fi
    "$PIXD" --listen "127.0.0.1:$HTTP_PORT" --db "$DB" --wait-ms "$wait" --no-access-log "$@" \
        >>"$OUT/pixd.log" 2>&1 &
    shim_pid=$!
    SHIM_WAIT=$wait
    local i
    for ((i = 0; i < 100; i++)); do
        kill -0 "$shim_pid" 2>/dev/null || break
        # shellcheck disable=SC2046
        curl -sf $(health_url) >/dev/null 2>&1 && return 0
        sleep 0.1
    done
    log "pixd did not become healthy (see $OUT/pixd.log)"
    exit 2
}
stop_shim() {
    if [[ -n "${shim_pid:-}" ]]; then
        kill "$shim_pid" 2>/dev/null || true
        wait "$shim_pid" 2>/dev/null || true
        shim_pid=
    fi
}

# Runs pixbench; its report goes to $OUT/NAME.txt; prints nothing; sets R (the result line) and V.
pb() { # NAME pixbench-options...
    local name=$1
    shift
    local rc=0
    "$PB" --http "127.0.0.1:$HTTP_PORT" --db "$DB" --shim-pid "$shim_pid" --wait-ms "$SHIM_WAIT" --idle-timeout-ms "$IDLE_MS" \
        --label "$name" "$@" >"$OUT/$name.txt" 2>"$OUT/$name.err" || rc=$?
    R=$(grep '^result:' "$OUT/$name.txt" || true)
    V=$(grep '^verdict:' "$OUT/$name.txt" || echo "verdict: FAIL (pixbench exit $rc, see $OUT/$name.err)")
    if ((rc != 0)); then
        failures=$((failures + 1))
        log "$name: $V"
        grep -m5 -E '^(violation|lost)' "$OUT/$name.err" >&2 || true
    fi
}
# A field of the last result line.
f() { sed -n "s/.* $1=\([^ ]*\).*/\1/p" <<<"$R"; }
verdict_word() { awk '{print $2}' <<<"$V"; }

header() {
    local tree
    # the charts this script redraws into the tree do not count: the code is what the stamp is about
    tree=$([[ -z "$(git -C "$top" status --porcelain -- . ':!bench/charts' 2>/dev/null)" ]] && echo "clean, charts aside" || echo "with uncommitted changes")
    echo "# $1 — $(date -u +%Y-%m-%dT%H:%MZ), commit $(git -C "$top" rev-parse --short HEAD 2>/dev/null || echo none) ($tree), pixd $PIXD"
    echo "# machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), $(uname -r); load $(cut -d' ' -f1-3 /proc/loadavg); PostgreSQL $(sql 'SHOW server_version'); fsync $(sql 'SHOW fsync'), synchronous_commit $(sql 'SHOW synchronous_commit')"
    echo
}

# ---- drain ------------------------------------------------------------------------------------
# SQL level: pix_next.sql (6 clients, batches of 10) against a backlog on 11111111. Each client runs a
# fixed number of transactions that cannot exhaust the backlog (so every one claims a full batch),
# timed by the wall clock like pixbench's drain.
sql_level_drain() { # BACKLOG -> msgs/s
    local backlog=$1 left n before after t0 t1 txs
    left=$backlog
    while ((left > 0)); do
        n=$((left > 100000 ? 100000 : left))
        sql "SELECT pix_generate_messages('11111111', $n)" >/dev/null
        left=$((left - n))
    done
    sql "VACUUM ANALYZE pix.ready" >/dev/null
    txs=$((backlog * 8 / 10 / 60))
    before=$(sql "SELECT count(*) FROM pix.ready WHERE ispb = '11111111'")
    t0=$(date +%s%N)
    PGDATABASE=pix "$PGBIN/pgbench" -n -M prepared -c 6 -j 2 -t "$txs" -D started=0 \
        -f "$top/bench/pgbench/pix_next.sql" >"$OUT/pgbench-drain.txt" 2>&1
    t1=$(date +%s%N)
    after=$(sql "SELECT count(*) FROM pix.ready WHERE ispb = '11111111'")
    # close what pgbench left open (its streams hold slots and pending batches)
    sql "UPDATE pix.stream SET last_read_at = '-infinity' WHERE state = 'o' AND ispb = '11111111'" >/dev/null
    sql "SELECT pix_expire_streams()" >/dev/null
    sql "DELETE FROM pix.ready WHERE ispb = '11111111'" >/dev/null
    echo $(((before - after) * 1000000000 / (t1 - t0)))
}

scenario_drain() {
    local n=100000 rounds=2
    q && n=20000 rounds=1
    full && n=300000
    setup_cluster
    start_shim 8000
    header "drain: $n messages on one ISPB, 6 collectors, vs SQL-level pix_stream_next (pgbench, 6 clients, batch 10)"
    local -a sqlr e2er
    local base=30000000 r e2e_args
    for ((r = 1; r <= rounds; r++)); do
        log "drain round $r: SQL level"
        sqlr+=("$(sql_level_drain $((n * 2)))")
        log "drain round $r: end to end"
        pb "drain-e2e-$r" --ispbs 1 --ispb-base $((base + r)) --collectors 6 --preload "$n" --accept multipart
        e2er+=("$(f msgs_per_s)") && e2e_cpu+=("shim $(f shim_cpu_pct)%, pg $(f pg_cpu_pct)%, pixbench $(f self_cpu_pct)%")
        e2e_v+=("$(verdict_word)")
        e2e_req+=("$(f reqs_per_s)")
    done
    pb drain-e2e-gzip --ispbs 1 --ispb-base $((base + 10)) --collectors 6 --preload "$n" --accept multipart --gzip
    local gz=$(f msgs_per_s) gzv=$(verdict_word) gzcpu="shim $(f shim_cpu_pct)%, pg $(f pg_cpu_pct)%"
    pb drain-e2e-single --ispbs 1 --ispb-base $((base + 11)) --collectors 6 --preload $((n / 10)) --accept single
    local single=$(f msgs_per_s) singlev=$(verdict_word) singlecpu="shim $(f shim_cpu_pct)%, pg $(f pg_cpu_pct)%"
    local sql_mean e2e_mean
    sql_mean=$(printf '%s\n' "${sqlr[@]}" | awk '{s+=$1} END {printf "%.0f", s/NR}')
    e2e_mean=$(printf '%s\n' "${e2er[@]}" | awk '{s+=$1} END {printf "%.0f", s/NR}')
    local ratio
    ratio=$(awk "BEGIN {printf \"%.2f\", $e2e_mean / $sql_mean}")
    echo "| run | msgs/s | vs SQL level | verdict | CPU (of one core) |"
    echo "|---|---:|---:|---|---|"
    for ((r = 0; r < rounds; r++)); do
        echo "| SQL level, pgbench pix_next.sql, round $((r + 1)) | ${sqlr[r]} | 1.00x | — | — |"
        echo "| end to end, multipart, round $((r + 1)) (${e2e_req[r]} req/s) | ${e2er[r]%.*} | $(awk "BEGIN {printf \"%.2fx\", ${e2er[r]} / ${sqlr[r]}}") | ${e2e_v[r]} | ${e2e_cpu[r]} |"
    done
    echo "| end to end, multipart + gzip | ${gz%.*} | $(awk "BEGIN {printf \"%.2fx\", $gz / $sql_mean}") | $gzv | $gzcpu |"
    echo "| end to end, single ($((n / 10)) messages) | ${single%.*} | $(awk "BEGIN {printf \"%.2fx\", $single / $sql_mean}") | $singlev | $singlecpu |"
    echo
    local bar=PASS
    # on the unrounded means: 0.696 must not pass as "0.70"
    awk "BEGIN {exit !($e2e_mean >= 0.7 * $sql_mean)}" || bar=MISSED
    echo "**Bar (end to end >= 0.7x SQL level): $bar — mean ${e2e_mean} vs ${sql_mean} msgs/s = ${ratio}x.**"
    printf '%s\n' "sql $sql_mean" "e2e $e2e_mean" "gzip ${gz%.*}" "single ${single%.*}" >"$OUT/drain.dat"
}

# ---- wake --------------------------------------------------------------------------------------
scenario_wake() {
    local secs=20 rate=50 m=4
    q && secs=8
    full && secs=60
    setup_cluster
    start_shim 8000
    header "wake: $m ISPBs x 6 parked collectors, one message per INSERT at $rate/s for ${secs}s (round robin over the ISPBs)"
    echo "| collectors | messages | p50 ms | p95 ms | p99 ms | max ms | verdict | CPU |"
    echo "|---|---:|---:|---:|---:|---:|---|---|"
    local mode p99s=()
    for mode in multipart single; do
        pb "wake-$mode" --ispbs $m --ispb-base 40000000 --collectors 6 --rate $rate --duration "$secs" \
            --batch 1 --producers 1 --accept $mode --latency-file "$OUT/wake-$mode.lat"
        echo "| $mode | $(f delivered) | $(f p50_ms) | $(f p95_ms) | $(f p99_ms) | $(f max_ms) | $(verdict_word) | shim $(f shim_cpu_pct)%, pg $(f pg_cpu_pct)% |"
        p99s+=("$(f p99_ms)")
    done
    # the same load with one parked collector per ISPB: what waking all six costs
    pb "wake-1collector" --ispbs $m --ispb-base 40000100 --collectors 1 --rate $rate --duration "$secs" \
        --batch 1 --producers 1 --accept multipart --latency-file "$OUT/wake-1collector.lat"
    echo "| multipart, 1 collector per ISPB (comparison) | $(f delivered) | $(f p50_ms) | $(f p95_ms) | $(f p99_ms) | $(f max_ms) | $(verdict_word) | shim $(f shim_cpu_pct)%, pg $(f pg_cpu_pct)% |"
    echo
    local bar=PASS p
    for p in "${p99s[@]}"; do awk "BEGIN {exit !($p <= 5)}" || bar=MISSED; done
    echo "**Bar (p99 <= 5 ms): $bar (multipart ${p99s[0]} ms, single ${p99s[1]} ms).**"
}

# ---- parked ------------------------------------------------------------------------------------
scenario_parked() {
    local total=10000 ispbs=1667
    q && total=3000 ispbs=500
    setup_cluster
    start_shim 8000
    header "parked: $total parked long polls ($ispbs ISPBs x 6), shim --wait-ms 8000"
    # ramp over 6 s: each start is a commit, and the shim answers 503 beyond --max-queue (1024)
    pb parked --ispbs $ispbs --ispb-base 50000000 --collectors 6 --total $total --duration 12 \
        --ramp-ms 6000 --stop-wait-ms 9000 --progress 1 --csv "$OUT/parked.csv"
    local late=$(f polls_late) early=$(f polls_early) polls=$(f polls) rss=$(f shim_rss_max_kb)
    echo "| long polls | 204s | 204 elapsed ms min / p50 / max | outside +-100 ms | shim RSS max | 503 | verdict |"
    echo "|---:|---:|---|---:|---:|---:|---|"
    echo "| $(f collectors) | $polls | $(f poll_min_ms) / $(f poll_p50_ms) / $(f poll_max_ms) | $((late + early)) ($late late, $early early) | $(awk "BEGIN {printf \"%.1f MB\", $rss/1024}") | $(f r503) | $(verdict_word) |"
    echo
    local b1=PASS b2=PASS
    awk "BEGIN {exit !($rss <= 51200)}" || b1=MISSED
    ((late + early == 0)) || b2=MISSED
    echo "**Bar (shim RSS <= 50 MB): $b1. Bar (every 204 at its deadline +-100 ms, measured from the request): $b2.**"
}

# ---- idle --------------------------------------------------------------------------------------
# What parked collectors cost the database while nothing happens. Counters of the pix database,
# sampled twice over a window that starts once every collector has parked and gone through one full
# wait (so both the first reads and the 204-and-poll-again cycle are in it):
#   xact_commit (pg_stat_database)  every committed transaction, read-only ones included
#   transaction ids                 write transactions (pg_snapshot_xmax of the current snapshot,
#                                   which does not consume one itself)
#   WAL syncs (pg_stat_wal.wal_sync) fsyncs of the WAL: what a write commit costs the disk
#   WAL bytes                       pg_current_wal_lsn()
# The issue's goal ("commits/s ... <= 5 % of today's", from "two fsync'd commits per 8 s per
# collector") is about write commits: transaction ids/s and WAL syncs/s are the figures it refers to.
idle_sample() { # -> "xact_commit xid wal_sync wal_bytes epoch_ms"
    sql "SELECT (SELECT xact_commit FROM pg_stat_database WHERE datname = 'pix'),
                pg_snapshot_xmax(pg_current_snapshot()), (SELECT wal_sync FROM pg_stat_wal),
                pg_current_wal_lsn() - '0/0', (extract(epoch FROM clock_timestamp()) * 1000)::bigint" |
        tr '|' ' '
}
scenario_idle() {
    local total=5400 ispbs=900 window=40 settle=20
    q && window=20
    full && window=120
    setup_cluster
    start_shim 8000
    header "idle: $total parked collectors ($ispbs ISPBs x 6), no messages, shim --wait-ms 8000; window ${window}s after ${settle}s"
    local dur=$((settle + window + 10))
    pb idle --ispbs $ispbs --ispb-base 55000000 --collectors 6 --total $total --duration $dur \
        --ramp-ms 6000 --stop-wait-ms 9000 &
    local pbpid=$!
    sleep "$settle"
    local s1 s2
    s1=$(idle_sample)
    sleep "$window"
    s2=$(idle_sample)
    wait $pbpid || true
    R=$(grep '^result:' "$OUT/idle.txt" || true)
    V=$(grep '^verdict:' "$OUT/idle.txt" || echo "verdict: FAIL")
    read -r c1 x1 w1 b1 t1 <<<"$s1"
    read -r c2 x2 w2 b2 t2 <<<"$s2"
    local secs
    secs=$(awk "BEGIN {print ($t2 - $t1) / 1000}")
    echo "| collectors | window s | commits/s (xact_commit) | write transactions/s (xids) | WAL syncs/s | WAL kB/s | 503 | verdict |"
    echo "|---:|---:|---:|---:|---:|---:|---:|---|"
    echo "| $total | $secs | $(awk "BEGIN {printf \"%.1f\", ($c2 - $c1) / $secs}") | $(awk "BEGIN {printf \"%.1f\", ($x2 - $x1) / $secs}") | $(awk "BEGIN {printf \"%.1f\", ($w2 - $w1) / $secs}") | $(awk "BEGIN {printf \"%.1f\", ($b2 - $b1) / 1024 / $secs}") | $(f r503) | $(verdict_word) |"
    printf '%s\n' "commits_per_s $(awk "BEGIN {printf \"%.2f\", ($c2 - $c1) / $secs}")" \
        "xids_per_s $(awk "BEGIN {printf \"%.2f\", ($x2 - $x1) / $secs}")" \
        "wal_syncs_per_s $(awk "BEGIN {printf \"%.2f\", ($w2 - $w1) / $secs}")" \
        "wal_kb_per_s $(awk "BEGIN {printf \"%.2f\", ($b2 - $b1) / 1024 / $secs}")" >"$OUT/idle.dat"
}

# ---- icom-capacity -----------------------------------------------------------------------------
scenario_icom() {
    local secs=60
    q && secs=20
    full && secs=600
    setup_cluster
    start_shim 8000
    header "icom-capacity: 4 000 messages/minute for ${secs}s, one ISPB, 6 multipart collectors"
    pb icom --ispbs 1 --ispb-base 60000000 --collectors 6 --rate 66.667 --duration "$secs" --batch 1 \
        --within-ms 200 --progress 10 --csv "$OUT/icom.csv" --latency-file "$OUT/icom.lat"
    echo "| messages | within 200 ms | p50 ms | p99 ms | max ms | verdict | CPU |"
    echo "|---:|---:|---:|---:|---:|---|---|"
    echo "| $(f delivered) | $(f within_pct)% | $(f p50_ms) | $(f p99_ms) | $(f max_ms) | $(verdict_word) | shim $(f shim_cpu_pct)%, pg $(f pg_cpu_pct)% |"
    echo
    local bar=PASS
    awk "BEGIN {exit !($(f within_pct) >= 99)}" || bar=MISSED
    echo "**Bar (>= 99% within 200 ms): $bar.**"
}

# ---- scaling -----------------------------------------------------------------------------------
scenario_scaling() {
    local n=30000
    q && n=10000
    setup_cluster
    start_shim 8000
    header "scaling: drain throughput (multipart) vs collectors, ISPBs and backlog"
    local c m b base=70000000
    echo "### vs collectors (one ISPB, $n messages)"
    echo
    echo "| collectors | msgs/s | req/s | shim CPU | pg CPU | verdict |"
    echo "|---:|---:|---:|---:|---:|---|"
    : >"$OUT/scaling-collectors.dat"
    for c in 1 2 3 4 5 6; do
        base=$((base + 1))
        pb "scale-c$c" --ispbs 1 --ispb-base $base --collectors $c --preload $n
        echo "| $c | $(f msgs_per_s) | $(f reqs_per_s) | $(f shim_cpu_pct)% | $(f pg_cpu_pct)% | $(verdict_word) |"
        echo "$c $(f msgs_per_s)" >>"$OUT/scaling-collectors.dat"
    done
    echo
    echo "### vs ISPBs ($n messages spread evenly, 2 collectors per ISPB)"
    echo
    echo "| ISPBs | connections | msgs/s | req/s | shim CPU | pg CPU | verdict |"
    echo "|---:|---:|---:|---:|---:|---:|---|"
    : >"$OUT/scaling-ispbs.dat"
    for m in 1 4 16 64 256; do
        base=$((base + 1000))
        pb "scale-m$m" --ispbs $m --ispb-base $base --collectors 2 --preload $n
        echo "| $m | $(f collectors) | $(f msgs_per_s) | $(f reqs_per_s) | $(f shim_cpu_pct)% | $(f pg_cpu_pct)% | $(verdict_word) |"
        echo "$m $(f msgs_per_s)" >>"$OUT/scaling-ispbs.dat"
    done
    echo
    local backlogs="1000 10000 100000 1000000"
    q && backlogs="1000 10000 100000"
    full && backlogs="1000 10000 100000 1000000 5000000"
    echo "### vs backlog (one ISPB, 6 collectors; untracked backlog from pix_generate_messages; the first min(backlog, 20 000) delivered)"
    echo
    echo "| backlog | msgs/s | req/s | shim CPU | pg CPU | verdict |"
    echo "|---:|---:|---:|---:|---:|---|"
    : >"$OUT/scaling-backlog.dat"
    for b in $backlogs; do
        base=$((base + 1000))
        local k=$((b < 20000 ? b : 20000))
        pb "scale-b$b" --ispbs 1 --ispb-base $base --collectors 6 --backlog $b --stop-after $k --duration 600
        echo "| $b | $(f msgs_per_s) | $(f reqs_per_s) | $(f shim_cpu_pct)% | $(f pg_cpu_pct)% | $(verdict_word) |"
        echo "$b $(f msgs_per_s)" >>"$OUT/scaling-backlog.dat"
    done
}

# ---- soak --------------------------------------------------------------------------------------
scenario_soak() {
    local secs=120
    q && secs=40
    full && secs=600
    setup_cluster
    set_idle_timeout 5
    start_shim 8000
    header "soak: 8 ISPBs x 6 multipart collectors, 300 msgs/s (2 producers), streams restarted (DELETE + start) every 50 reads; phase 1 steady ${secs}s, phase 2 churn $((secs / 2))s where a collector also walks away without DELETE every 120 reads (idle timeout 5 s)"
    pb soak-steady --ispbs 8 --ispb-base 80000000 --collectors 6 --rate 300 --producers 2 --duration "$secs" \
        --restart-every 50 --progress 10 --csv "$OUT/soak-steady.csv" --table-stats --drain-timeout 30
    local steady=$R steadyv=$(verdict_word)
    pb soak --ispbs 8 --ispb-base 81000000 --collectors 6 --rate 300 --producers 2 --duration $((secs / 2)) \
        --restart-every 50 --abandon-every 120 --progress 10 --csv "$OUT/soak.csv" --table-stats \
        --drain-timeout 30
    echo "| phase | messages | msgs/s | p50 ms | p99 ms | max ms | 429 | redeliveries after expiry | shim RSS max | verdict |"
    echo "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|"
    local churn=$R churnv=$(verdict_word)
    R=$steady
    echo "| steady | $(f delivered) | $(f msgs_per_s) | $(f p50_ms) | $(f p99_ms) | $(f max_ms) | $(f r429) | $(f redeliveries) | $(awk "BEGIN {printf \"%.1f MB\", $(f shim_rss_max_kb)/1024}") | $steadyv |"
    R=$churn
    echo "| churn | $(f delivered) | $(f msgs_per_s) | $(f p50_ms) | $(f p99_ms) | $(f max_ms) | $(f r429) | $(f redeliveries) | $(awk "BEGIN {printf \"%.1f MB\", $(f shim_rss_max_kb)/1024}") | $churnv |"
    local phase
    for phase in soak-steady soak; do
        echo
        echo "Over time, $phase (every 10 s):"
        echo
        echo "| t s | msgs/s | p99 ms | shim RSS MB | message MB | ready kB (dead) | stream kB (dead) | iteration MB (dead) |"
        echo "|---:|---:|---:|---:|---:|---:|---:|---:|"
        awk -F, 'NR > 1 {printf "| %s | %.0f | %.2f | %.1f | %.1f | %.0f (%s) | %.0f (%s) | %.1f (%s) |\n",
            $1, $4, $7, $11/1024, $14/1048576, $17/1024, $19, $20/1024, $22, $23/1048576, $25}' "$OUT/$phase.csv"
    done
}

# ---- tls-drain ---------------------------------------------------------------------------------
# The drain of scenario_drain (one ISPB, 6 multipart collectors, keep-alive), once over plain HTTP
# (--auth none) and once over HTTPS with mutual TLS (--auth mtls: every call also checks the
# certificate's credential in the database), alternating which goes first; each run on an ISPB of its
# own with a client certificate registered for it.
scenario_tls_drain() {
    local n=60000 rounds=2
    q && n=20000
    full && n=200000 rounds=3
    setup_cluster
    local pki=$dir/pki base=31000000 r ispb fp order
    "$top/scripts/pki.sh" ca "$pki"
    "$top/scripts/pki.sh" server "$pki"
    header "tls-drain: $n messages on one ISPB, 6 multipart collectors over keep-alive, plain HTTP (--auth none) vs HTTPS + mutual TLS (--auth mtls), alternating"
    local -a plain tls plainv tlsv plaincpu tlscpu
    run_plain() {
        SHIM_CA=
        start_shim 8000
        pb "tls-drain-plain-$1" --ispbs 1 --ispb-base "$2" --collectors 6 --preload "$n" --accept multipart
        plain+=("$(f msgs_per_s)") plainv+=("$(verdict_word)") plaincpu+=("shim $(f shim_cpu_pct)%, pg $(f pg_cpu_pct)%, pixbench $(f self_cpu_pct)%")
    }
    run_tls() {
        "$top/scripts/pki.sh" client "$pki" "c$1"
        sql "SELECT pix_certificate_add('$(printf %08d "$2")', '$("$top/scripts/pki.sh" fingerprint "$pki/c$1.crt")', 'pixbench')" >/dev/null
        SHIM_CA=$pki/ca.crt SHIM_CLIENT=$pki/c$1
        start_shim 8000 --auth mtls --tls-cert "$pki/server.crt" --tls-key "$pki/server.key" --client-ca "$pki/ca.crt"
        pb "tls-drain-mtls-$1" --ispbs 1 --ispb-base "$2" --collectors 6 --preload "$n" --accept multipart \
            --tls-ca "$pki/ca.crt" --tls-cert "$pki/c$1.crt" --tls-key "$pki/c$1.key"
        tls+=("$(f msgs_per_s)") tlsv+=("$(verdict_word)") tlscpu+=("shim $(f shim_cpu_pct)%, pg $(f pg_cpu_pct)%, pixbench $(f self_cpu_pct)%")
        SHIM_CA= SHIM_CLIENT=
    }
    for ((r = 1; r <= rounds; r++)); do
        if ((r % 2)); then
            order="plain first"
            run_plain "$r" $((base + 2 * r))
            run_tls "$r" $((base + 2 * r + 1))
        else
            order="TLS first"
            run_tls "$r" $((base + 2 * r + 1))
            run_plain "$r" $((base + 2 * r))
        fi
        log "tls-drain round $r ($order): plain ${plain[r - 1]}, mTLS ${tls[r - 1]} msgs/s"
    done
    stop_shim
    echo "| round | order | plain HTTP msgs/s | HTTPS + mTLS msgs/s | ratio | verdicts | CPU plain | CPU mTLS |"
    echo "|---|---|---:|---:|---:|---|---|---|"
    for ((r = 0; r < rounds; r++)); do
        echo "| $((r + 1)) | $( ((r % 2 == 0)) && echo "plain first" || echo "TLS first") | ${plain[r]%.*} | ${tls[r]%.*} | $(awk "BEGIN {printf \"%.2fx\", ${tls[r]} / ${plain[r]}}") | ${plainv[r]} / ${tlsv[r]} | ${plaincpu[r]} | ${tlscpu[r]} |"
    done
    local pm tm ratio bar=PASS
    pm=$(printf '%s\n' "${plain[@]}" | awk '{s+=$1} END {printf "%.0f", s/NR}')
    tm=$(printf '%s\n' "${tls[@]}" | awk '{s+=$1} END {printf "%.0f", s/NR}')
    ratio=$(awk "BEGIN {printf \"%.2f\", $tm / $pm}")
    awk "BEGIN {exit !($ratio >= 0.8)}" || bar=MISSED
    echo
    echo "**Bar (HTTPS + mutual TLS >= 0.8x plain HTTP): $bar — mean $tm vs $pm msgs/s = ${ratio}x.**"
}

# ---- send --------------------------------------------------------------------------------------
# pixbench --send: N messages POSTed in JSON arrays of 100 (8 keep-alive connections, pixd --pool 4)
# vs the same N messages INSERTed in statements of 100 rows (4 libpq connections: pixd's pool size)
# and vs the same bodies through SELECT pix_messages_send over those 4 connections (the function
# without HTTP); order HTTP, INSERT, function, function, INSERT, HTTP; then the same over HTTPS with
# a bearer token (--auth token). Both run without a send quota (--send-quota 0; the default with
# --auth is ICOM's 3 750 tokens at 750 a second, which would measure the quota, not the server).
scenario_send() {
    local n=100000
    q && n=30000
    full && n=300000
    setup_cluster
    local pki=$dir/pki token
    "$top/scripts/pki.sh" ca "$pki"
    "$top/scripts/pki.sh" server "$pki"
    header "send: $n messages per phase in batches of 100 to 16 receiving ISPBs; HTTP: 8 connections to pixd (--pool 4); SQL: 4 connections, multi-row INSERT or pix_messages_send; order HTTP, INSERT, function, function, INSERT, HTTP; no send quota (--send-quota 0)"
    echo "| transport | HTTP msgs/s | SQL INSERT msgs/s | HTTP / INSERT | SQL pix_messages_send msgs/s | HTTP / function | stored exactly once |"
    echo "|---|---:|---:|---:|---:|---:|---|"
    SHIM_CA=
    start_shim 8000
    pb send-plain --send "$n" --batch 100 --send-connections 8 --producers 4 --ispbs 16 --ispb-base 21000000
    local http=$(f http_msgs_per_s) ratio=$(f ratio)
    echo "| plain HTTP, --auth none | ${http%.*} | $(f sql_msgs_per_s | cut -d. -f1) | ${ratio} | $(f function_msgs_per_s | cut -d. -f1) | $(f http_vs_function) | $(verdict_word) |"
    token=$(sql "SELECT pix_token_issue('99912345', 'pixbench')")
    # With authentication a payment goes to a registered institution only: the 16 receivers get a token.
    sql "SELECT count(pix_token_issue(lpad((21000100 + i)::text, 8, '0'), 'pixbench receiver'))
           FROM generate_series(0, 15) i" >/dev/null
    SHIM_CA=$pki/ca.crt
    start_shim 8000 --auth token --send-quota 0 --tls-cert "$pki/server.crt" --tls-key "$pki/server.key"
    pb send-tls --send "$n" --batch 100 --send-connections 8 --producers 4 --ispbs 16 --ispb-base 21000100 \
        --tls-ca "$pki/ca.crt" --token "$token"
    local http_tls=$(f http_msgs_per_s)
    echo "| HTTPS + bearer token, --auth token --send-quota 0 | ${http_tls%.*} | $(f sql_msgs_per_s | cut -d. -f1) | $(f ratio) | $(f function_msgs_per_s | cut -d. -f1) | $(f http_vs_function) | $(verdict_word) |"
    SHIM_CA=
    stop_shim
    local b1=PASS b2=PASS
    awk "BEGIN {exit !($http >= 20000)}" || b1=MISSED
    awk "BEGIN {exit !($ratio >= 0.7)}" || b2=MISSED
    echo
    echo "**Bar (>= 20 000 msgs/s over HTTP in batches of 100): $b1 (${http%.*}). Bar (>= 0.7x SQL INSERT of the same messages): $b2 (${ratio}x).**"
}

# ---- check (test suite) ------------------------------------------------------------------------
scenario_check() {
    setup_cluster
    set_idle_timeout 2
    start_shim 1000
    pb check-drain --ispbs 2 --ispb-base 90000000 --collectors 6 --preload 3000 --accept mixed --quiet
    echo "drain:  $V"
    pb check-wake --ispbs 2 --ispb-base 90000010 --collectors 6 --rate 20 --duration 3 --accept mixed --quiet
    echo "wake:   $V"
    pb check-expiry --ispbs 1 --ispb-base 90000020 --collectors 3 --rate 100 --duration 4 --abandon-every 5 \
        --drain-timeout 20 --quiet
    echo "expiry: $V"
    echo "$((3 - failures)) passed, $failures failed"
}

# ---- charts ------------------------------------------------------------------------------------
charts() {
    local cdir="$top/bench/charts"
    mkdir -p "$cdir"
    command -v gnuplot >/dev/null || { log "gnuplot not found: no charts"; return 0; }
    local term='set terminal pngcairo size 900,500 font "DejaVu Sans,11"'
    gnuplot -e "$term" 2>/dev/null || term='set terminal png size 900,500'
    # every chart says what it was drawn from: the results directory, when, and the tree
    local tree stamp
    tree=$([[ -z "$(git -C "$top" status --porcelain -- . ':!bench/charts' 2>/dev/null)" ]] && echo clean || echo "with uncommitted changes")
    stamp="data $OUT, drawn $(date -u +%Y-%m-%dT%H:%MZ), commit $(git -C "$top" rev-parse --short HEAD 2>/dev/null || echo none) ($tree, charts aside)"
    if [[ -s "$OUT/drain.dat" ]]; then
        gnuplot <<GP
$term
set output "$cdir/drain.png"
set label 99 "$stamp" at screen 0.01,0.02 font ",8" noenhanced
set title "drain: messages/s, one ISPB, 6 collectors (higher is better)"
set style data histograms
set style fill solid 0.7
set boxwidth 0.6
set yrange [0:*]
set grid ytics
unset key
plot "$OUT/drain.dat" using 2:xtic(1) lc rgb "#3070b0"
GP
    fi
    local lats=()
    for f in wake-multipart wake-single wake-1collector icom; do [[ -s "$OUT/$f.lat" ]] && lats+=("$f"); done
    if ((${#lats[@]})); then
        local plot="" sep=""
        for f in "${lats[@]}"; do
            local n
            n=$(wc -l <"$OUT/$f.lat")
            plot+="$sep\"$OUT/$f.lat\" using 1:(\$0/$n*100) with lines lw 2 title \"$f\""
            sep=", "
        done
        gnuplot <<GP
$term
set output "$cdir/latency-cdf.png"
set label 99 "$stamp" at screen 0.01,0.02 font ",8" noenhanced
set title "commit -> delivery latency, cumulative (wake: 6 parked collectors/ISPB; icom: 4000 msgs/min)"
set xlabel "ms (log)"
set ylabel "% of messages"
set logscale x
set grid
set key bottom right
plot $plot
GP
    fi
    local s
    for s in collectors ispbs backlog; do
        [[ -s "$OUT/scaling-$s.dat" ]] || continue
        local logx=""
        [[ $s != collectors ]] && logx="set logscale x"
        gnuplot <<GP
$term
set output "$cdir/scaling-$s.png"
set label 99 "$stamp" at screen 0.01,0.02 font ",8" noenhanced
set title "drain throughput vs $s"
set xlabel "$s"
set ylabel "messages/s"
$logx
set yrange [0:*]
set grid
unset key
plot "$OUT/scaling-$s.dat" using 1:2 with linespoints lw 2 pt 7
GP
    done
    local phase
    for phase in soak-steady soak; do
        [[ -s "$OUT/$phase.csv" ]] || continue
        gnuplot <<GP
$term
set terminal pngcairo size 900,750 font "DejaVu Sans,11"
set output "$cdir/$phase.png"
set label 99 "$stamp" at screen 0.01,0.02 font ",8" noenhanced
set datafile separator ","
set multiplot layout 3,1 title "$phase"
set grid
set key top left
set ylabel "ms"
plot "$OUT/$phase.csv" every ::1 using 1:7 with linespoints title "p99 commit->delivery (interval)", \
     "" every ::1 using 1:6 with linespoints title "p50"
set ylabel "dead tuples"
plot "$OUT/$phase.csv" every ::1 using 1:19 with linespoints title "pix.ready dead", \
     "" every ::1 using 1:25 with linespoints title "pix.iteration dead", \
     "" every ::1 using 1:22 with linespoints title "pix.stream dead"
set xlabel "s"
set ylabel "MB"
plot "$OUT/$phase.csv" every ::1 using 1:(\$11/1024) with linespoints title "shim RSS", \
     "" every ::1 using 1:(\$14/1048576) with linespoints title "pix.message", \
     "" every ::1 using 1:(\$23/1048576) with linespoints title "pix.iteration", \
     "" every ::1 using 1:(\$17/1048576) with linespoints title "pix.ready"
unset multiplot
GP
    done
    if [[ -s "$OUT/parked.csv" ]]; then
        gnuplot <<GP
$term
set output "$cdir/parked-rss.png"
set label 99 "$stamp" at screen 0.01,0.02 font ",8" noenhanced
set datafile separator ","
set title "parked: shim RSS while long polls park (MB)"
set xlabel "s"
set ylabel "MB"
set grid
set yrange [0:*]
unset key
plot "$OUT/parked.csv" every ::1 using 1:(\$11/1024) with linespoints lw 2
GP
    fi
    log "charts in $cdir"
}

# ---- sharding -----------------------------------------------------------------------------------
# The same drain (many ISPBs, 2 multipart collectors each) against one database and against routers with
# 1, 2 and 4 shards, all on this machine; round 2 runs in the reverse order. Each run uses ISPBs of its
# own: a backlog made with pix_generate_messages (through the router: routed per ISPB) plus 2 000 tracked
# messages (INSERT; through the router one forwarded row at a time, hence few) for the exactly-once check.
# pixd's --pool is PIXBENCH_POOL (16) for every deployment: a routed call takes longer (one more hop), and
# with a pool of 4 the router's throughput is bounded by 4 calls in flight, not by any CPU.
scenario_sharding() {
    local n=150000 ispbs=64 rounds=2 tracked=2000 POOL=${PIXBENCH_POOL:-16}
    q && n=20000 ispbs=32 rounds=1
    full && n=500000
    setup_cluster
    local -A dbs=([db]=$DB)
    local s k
    for s in 1 2 4; do
        dbs[r$s]=$("$top/scripts/shards.sh" up "$dir/sharded-$s" $((PG_PORT + 10 * s)) "$s" 2>>"$OUT/shards.log")
    done
    header "sharding: $n + $tracked messages over $ispbs ISPBs x 2 multipart collectors, pixd --pool $POOL; 1 database vs the router with 1, 2, 4 shards"
    local order=(db r1 r2 r4) r c base=40000000 run=0
    local -A res
    for ((r = 1; r <= rounds; r++)); do
        for c in "${order[@]}"; do
            run=$((run + 1))
            DB=${dbs[$c]}
            start_shim 8000 --pool "$POOL"
            log "sharding round $r: $c"
            pb "sharding-$c-$r" --ispbs "$ispbs" --ispb-base $((base + 1000 * run)) --collectors 2 \
                --preload "$tracked" --backlog "$n" --stop-after $((n + tracked)) --accept multipart
            res[$c.pg]+="$(f pg_cpu_pct) "
            res[$c]+="$(f msgs_per_s) "
            res[$c.v]+="$(verdict_word) "
            [[ "$c" == r4 ]] && res[r4.base]=$((base + 1000 * run))
        done
        order=(r4 r2 r1 db) # the other way round
    done
    stop_shim
    DB=${dbs[db]}
    mean() { awk '{s = 0; for (i = 1; i <= NF; i++) s += $i; printf "%.0f", s / NF}' <<<"$1"; }
    local m_db m
    m_db=$(mean "${res[db]}")
    echo "| deployment | msgs/s per round | mean | vs 1 database | per shard | verdicts | CPU of --db's PostgreSQL (router or database), % of one core |"
    echo "|---|---|---:|---:|---:|---|---|"
    for c in db r1 r2 r4; do
        m=$(mean "${res[$c]}")
        k=${c#r}
        [[ "$c" == db ]] && k=1
        echo "| $([[ $c == db ]] && echo "1 database, no router" || echo "router, $k shard(s)") | ${res[$c]% } | $m | $(awk "BEGIN {printf \"%.2fx\", $m / $m_db}") | $((m / k)) | ${res[$c.v]% } | ${res[$c.pg]% } |"
    done
    echo
    local r1 overhead bar=PASS
    r1=$(mean "${res[r1]}")
    overhead=$(awk "BEGIN {printf \"%.1f\", (1 - $r1 / $m_db) * 100}")
    awk "BEGIN {exit !($overhead <= 15)}" || bar=MISSED
    echo "**Bar (routing overhead at 1 shard <= 15 % of throughput): $bar — ${r1} vs ${m_db} msgs/s = ${overhead} %.**"
    echo
    echo "ISPBs per shard in the 4-shard runs (hash partitions, 16 over 4 shards):"
    echo
    echo '```'
    psql -qXAt -v ON_ERROR_STOP=1 "${dbs[r4]}" -c "SELECT 'shard ' || s.shard || ': ' || count(*) || ' ISPBs'
        FROM generate_series(0, $ispbs - 1) k JOIN pix_shards() s
          ON pix_router.partition_number(lpad((${res[r4.base]} + k)::text, 8, '0')) = ANY (s.partitions)
        GROUP BY s.shard ORDER BY s.shard"
    echo '```'
}

run_one() {
    case "$1" in
        sharding) scenario_sharding ;;
        drain) scenario_drain ;;
        wake) scenario_wake ;;
        parked) scenario_parked ;;
        idle) scenario_idle ;;
        icom-capacity) scenario_icom ;;
        scaling) scenario_scaling ;;
        soak) scenario_soak ;;
        tls-drain) scenario_tls_drain ;;
        send) scenario_send ;;
        check) scenario_check ;;
        *) echo "unknown scenario $1" >&2; exit 2 ;;
    esac
}

case "$scenario" in
    charts) charts ;;
    all)
        for s in drain wake parked idle icom-capacity scaling soak tls-drain send; do
            "$0" "$s" --out "$OUT" --pg-port "$PG_PORT" --http-port "$HTTP_PORT" \
                $( ((INSTALL)) || echo --no-install) $([[ $MODE != default ]] && echo "--$MODE") |
                tee "$OUT/$s.md" || failures=$((failures + 1))
            echo
            INSTALL=0
        done
        charts
        ;;
    *)
        exec > >(tee "$OUT/$scenario.md")
        run_one "$scenario"
        [[ $scenario == check ]] || charts
        ;;
esac
((failures == 0))
