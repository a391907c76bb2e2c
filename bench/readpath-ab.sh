#!/usr/bin/env bash
# A/B of the read path at the SQL level (issue 22): two builds of the extension, each installed in a
# PostgreSQL tree of its own, each on a throw-away cluster of its own (default durability), the same
# pgbench script (bench/pgbench/pix_next.sql: C collectors of one ISPB, batches of 10, every call
# confirms the previous batch and claims the next) against both, alternated A B B A ... per round.
# Per run: calls/s, msg/s, and the WAL each delivered message cost (pg_current_wal_lsn and
# pg_stat_wal before and after the run; a CHECKPOINT before every run, so both sides start with the
# same full-page-image debt). The backlog is topped up to --backlog before every run (a run that
# drained it is refused).
#
#   bench/readpath-ab.sh --a-pgbin DIR --b-pgbin DIR [--a-label L] [--b-label L] [--seconds S]
#                        [--rounds R] [--clients C] [--backlog N]
# Defaults: 10 s per run, 2 rounds (4 runs per side), 6 clients, 1 500 000 backlog.
# Prints Markdown with the machine, date, load average and both commits (labels) on stdout.
set -euo pipefail

A_PGBIN= B_PGBIN= A_LABEL=A B_LABEL=B SECS=10 ROUNDS=2 CLIENTS=6 BACKLOG=1500000
while (($#)); do
    case "$1" in
        --a-pgbin) A_PGBIN=$2; shift 2 ;;
        --b-pgbin) B_PGBIN=$2; shift 2 ;;
        --a-label) A_LABEL=$2; shift 2 ;;
        --b-label) B_LABEL=$2; shift 2 ;;
        --seconds) SECS=$2; shift 2 ;;
        --rounds) ROUNDS=$2; shift 2 ;;
        --clients) CLIENTS=$2; shift 2 ;;
        --backlog) BACKLOG=$2; shift 2 ;;
        -h | --help) sed -n '2,14p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "unknown option $1" >&2; exit 2 ;;
    esac
done
[[ -x "$A_PGBIN/postgres" && -x "$B_PGBIN/postgres" ]] || { echo "readpath-ab.sh: --a-pgbin and --b-pgbin" >&2; exit 2; }

top=$(cd "$(dirname "$0")/.." && pwd)
script="$top/bench/pgbench/pix_next.sql"
free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
dir=$(mktemp -d /tmp/readpath-ab.XXXXXX)
chmod 755 "$dir" # the clusters run as postgres when we are root
declare -A BIN PORT
BIN[A]=$A_PGBIN BIN[B]=$B_PGBIN
cleanup() {
    for s in A B; do PGBIN=${BIN[$s]} "$top/scripts/cluster.sh" stop "$dir/$s" >/dev/null 2>&1 || true; done
    rm -rf "$dir"
}
trap cleanup EXIT

sql() { # SIDE SQL
    local s=$1
    "${BIN[$s]}/psql" -qXAt -v ON_ERROR_STOP=1 -h "$dir/$s" -p "${PORT[$s]}" -U postgres -d bench -c "$2"
}
for s in A B; do
    PORT[$s]=$(free_port)
    PGBIN=${BIN[$s]} "$top/scripts/cluster.sh" start "$dir/$s" "${PORT[$s]}" >/dev/null
    "${BIN[$s]}/psql" -qX -h "$dir/$s" -p "${PORT[$s]}" -U postgres -d postgres -c "CREATE DATABASE bench" >/dev/null
    sql "$s" "CREATE EXTENSION pix"
    sql "$s" "ALTER DATABASE bench SET pix.max_generate = 100000"
done

ready() { sql "$1" "SELECT count(*) FROM pix.ready WHERE ispb = '11111111'"; }
top_up() { # SIDE
    local left=$((BACKLOG - $(ready "$1"))) n
    while ((left > 0)); do
        n=$((left > 100000 ? 100000 : left))
        sql "$1" "SELECT pix_generate_messages('11111111', $n)" >/dev/null
        left=$((left - n))
    done
}
# Waits (up to 30 s) until no autovacuum worker runs on SIDE: the other side's vacuum after its run
# would otherwise take CPU from this run on a small machine.
quiet_autovacuum() { # SIDE
    for _ in $(seq 60); do
        (($(sql "$1" "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'autovacuum worker'") == 0)) && return
        sleep 0.5
    done
}
# One run: prints "calls/s msg/s wal_bytes_per_msg wal_records_per_call fpi_per_call"
run() { # SIDE
    local s=$1 before after lsn0 lsn1 st0 st1 out tps msgs
    top_up "$s"
    sql "$s" "VACUUM pix.ready" >/dev/null
    quiet_autovacuum A
    quiet_autovacuum B
    sql "$s" "CHECKPOINT"
    before=$(ready "$s")
    lsn0=$(sql "$s" "SELECT pg_current_wal_lsn()")
    st0=$(sql "$s" "SELECT wal_records || ' ' || wal_fpi FROM pg_stat_wal")
    out=$("${BIN[$s]}/pgbench" -n -M prepared -h "$dir/$s" -p "${PORT[$s]}" -U postgres -c "$CLIENTS" -j 2 -T "$SECS" \
        -D started=0 -D prev='{}' -f "$script" bench 2>&1)
    tps=$(awk '/^tps/ {print $3}' <<<"$out")
    lsn1=$(sql "$s" "SELECT pg_current_wal_lsn()")
    st1=$(sql "$s" "SELECT wal_records || ' ' || wal_fpi FROM pg_stat_wal")
    after=$(ready "$s")
    ((after > 0)) || { echo "readpath-ab.sh: $s drained its backlog: raise --backlog" >&2; exit 1; }
    msgs=$((before - after))
    sql "$s" "UPDATE pix.stream SET last_read_at = '-infinity' WHERE state = 'o'; SELECT pix_expire_streams()" >/dev/null
    local bytes calls
    bytes=$(sql "$s" "SELECT pg_wal_lsn_diff('$lsn1', '$lsn0')::bigint")
    calls=$(awk -v t="$tps" -v s="$SECS" 'BEGIN {printf "%d", t * s}')
    read -r r0 f0 <<<"$st0"
    read -r r1 f1 <<<"$st1"
    awk -v t="$tps" -v m="$msgs" -v s="$SECS" -v b="$bytes" -v r=$((r1 - r0)) -v f=$((f1 - f0)) -v c="$calls" \
        'BEGIN {printf "%.0f %.0f %.0f %.1f %.2f\n", t, m / s, b / (m > 0 ? m : 1), r / (c > 0 ? c : 1), f / (c > 0 ? c : 1)}'
}

echo "# read path A/B — $(date -u +%Y-%m-%dT%H:%MZ)"
echo "# machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), $(uname -r); load average at start $(cut -d' ' -f1-3 /proc/loadavg)"
echo "# A = $A_LABEL ($A_PGBIN), B = $B_LABEL ($B_PGBIN); fsync=$(sql A 'SHOW fsync') synchronous_commit=$(sql A 'SHOW synchronous_commit'); $CLIENTS clients; ${SECS}s per run; $ROUNDS rounds; backlog $BACKLOG before each run"
echo "# worktree: $(git -C "$top" rev-parse --short HEAD) ($([[ -z "$(git -C "$top" status --porcelain 2>/dev/null)" ]] && echo clean || echo "with uncommitted changes")); the sides are the builds installed in the two trees, named by their labels"
echo "# command: bench/readpath-ab.sh --a-label $A_LABEL --b-label $B_LABEL --seconds $SECS --rounds $ROUNDS --clients $CLIENTS --backlog $BACKLOG"
echo
echo "| round | run | side | calls/s | msg/s | WAL bytes / msg | WAL records / call | FPI / call | load (1 min) |"
echo "|---:|---:|---|---:|---:|---:|---:|---:|---:|"
declare -A SUM
n=0
for ((round = 1; round <= ROUNDS; round++)); do
    if ((round % 2)); then order="A B"; else order="B A"; fi
    for s in $order; do
        n=$((n + 1))
        read -r calls msgs wal rec fpi < <(run "$s")
        label=$A_LABEL; [[ $s == B ]] && label=$B_LABEL
        echo "| $round | $n | $s ($label) | $calls | $msgs | $wal | $rec | $fpi | $(cut -d' ' -f1 /proc/loadavg) |"
        eval "R${round}_$s='$calls $msgs $wal'"
    done
done
echo
echo "Per round, B / A (same round, adjacent runs):"
echo
echo "| round | calls/s B/A | msg/s B/A | WAL bytes per msg B/A |"
echo "|---:|---:|---:|---:|"
for ((round = 1; round <= ROUNDS; round++)); do
    eval "a=\$R${round}_A b=\$R${round}_B"
    read -r ac am aw <<<"$a"
    read -r bc bm bw <<<"$b"
    awk -v r="$round" -v ac="$ac" -v am="$am" -v aw="$aw" -v bc="$bc" -v bm="$bm" -v bw="$bw" \
        'BEGIN {printf "| %d | %.3f | %.3f | %.3f |\n", r, bc / ac, bm / am, bw / aw}'
done
echo
echo "# load average at end $(cut -d' ' -f1-3 /proc/loadavg)"
