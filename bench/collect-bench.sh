#!/usr/bin/env bash
# pix-collect's throughput, side by side in one run with pixbench's drain of the same backlog (issue 20).
#
#   bench/collect-bench.sh [--messages N] [--rounds R] [--collectors C] [--out DIR]
#   PIX_COLLECT_ARGS="--sink-connections 6" adds options to pix-collect's command line (for variants)
#
# One throw-away cluster (free port), pixd on a free loopback port. Each round, alternating:
#   drain    N messages made by pix_generate_messages on one ISPB, drained by pixbench (6 multipart
#            collectors that discard what they read): the server's end-to-end ceiling
#   collect  the same: N messages on another ISPB, drained by `pix-collect --once` (6 collectors,
#            multipart, gzip) into a local PostgreSQL sink (database "bank" on a second cluster of
#            this machine: the institution's database is not the server's): every batch committed
#            with its checkpoint before its Pull-Next
# pix-collect's rate is N / (its last commit - its start) (the last empty long poll of --once is not
# a drain); each round also checks that the sink holds exactly the N messages.
# Raw outputs (pixbench's reports, pix-collect's logs) and the table go to DIR (default
# bench/results/<date>-collect). Bar: pix-collect >= 20 000 msgs/s.
set -euo pipefail

top=$(cd "$(dirname "$0")/.." && pwd)
PGBIN=${PGBIN:-/usr/lib/postgresql/15/bin}
N=100000
ROUNDS=2
C=6
OUT="$top/bench/results/$(date -u +%Y-%m-%d)-collect"
while (($#)); do
    case "$1" in
        --messages) N=$2; shift 2 ;;
        --rounds) ROUNDS=$2; shift 2 ;;
        --collectors) C=$2; shift 2 ;;
        --out) OUT=$2; shift 2 ;;
        -h | --help) sed -n '2,17p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "unknown option $1" >&2; exit 2 ;;
    esac
done
mkdir -p "$OUT"
free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
log() { echo "collect-bench: $*" >&2; }

make -s -C "$top" shim/pixd bench/pixbench/pixbench collect/pix-collect >/dev/null
dir=$(mktemp -d /tmp/pcb.XXXXXX)
pixd_pid=
cleanup() {
    [[ -n "$pixd_pid" ]] && kill "$pixd_pid" 2>/dev/null && wait "$pixd_pid" 2>/dev/null
    "$top/scripts/cluster.sh" stop "$dir/sink" >/dev/null 2>&1 || true
    "$top/scripts/cluster.sh" stop "$dir" >/dev/null 2>&1 || true
    rm -rf "$dir"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

pg_port=$(free_port)
"$top/scripts/cluster.sh" start "$dir" "$pg_port" >/dev/null 2>&1
base="host=$dir port=$pg_port user=postgres"
sink_port=$(free_port)
mkdir -p "$dir/sink"
"$top/scripts/cluster.sh" start "$dir/sink" "$sink_port" >/dev/null 2>&1
sink="host=$dir/sink port=$sink_port user=postgres dbname=bank"
sql() { "$PGBIN/psql" -qXAt -v ON_ERROR_STOP=1 "$base dbname=${2:-pix}" -c "$1"; }
sql "CREATE DATABASE pix" postgres
sql "CREATE EXTENSION pix"
sql "ALTER DATABASE pix SET pix.max_generate = 100000"
[[ "$C" -le 6 ]] || sql "ALTER DATABASE pix SET pix.max_collectors = $C"
http_port=$(free_port)
"$top/shim/pixd" --listen "127.0.0.1:$http_port" --db "$base dbname=pix" --wait-ms 1000 --no-access-log \
    >"$OUT/pixd.out" 2>&1 &
pixd_pid=$!
for _ in $(seq 100); do curl -sf "http://127.0.0.1:$http_port/health" >/dev/null && break; sleep 0.1; done

backlog() { # ISPB N
    local left=$2 n
    while ((left > 0)); do
        n=$((left > 100000 ? 100000 : left))
        sql "SELECT pix_generate_messages('$1', $n)" >/dev/null
        left=$((left - n))
    done
    sql "VACUUM ANALYZE pix.ready" >/dev/null
}

{
    echo "# pix-collect vs pixbench drain — $(date -u +%Y-%m-%dT%H:%MZ), commit $(git -C "$top" rev-parse --short HEAD)$([[ -z "$(git -C "$top" status --porcelain -- collect)" ]] || echo ' (collect/ modified)')"
    echo "# machine: $(nproc) cores, $(uname -r); load at start $(cut -d' ' -f1-3 /proc/loadavg); PostgreSQL $(sql 'SHOW server_version'), fsync $(sql 'SHOW fsync'), synchronous_commit $(sql 'SHOW synchronous_commit')"
    echo "# $N messages per run, $C collectors (multipart/json), pixd --wait-ms 1000; pix-collect's sink: database bank on a second local cluster"
    echo
    echo "| round | pixbench drain msgs/s | pix-collect msgs/s | ratio | load (1 min) |"
    echo "|---|---:|---:|---:|---:|"
} | tee "$OUT/collect-bench.md"

sum_d=0 sum_c=0
for ((r = 1; r <= ROUNDS; r++)); do
    a=$((61000000 + r)) b=$((62000000 + r))
    log "round $r: drain"
    backlog "$a" "$N"
    "$top/bench/pixbench/pixbench" --http "127.0.0.1:$http_port" --db "$base dbname=pix" --shim-pid "$pixd_pid" \
        --wait-ms 1000 --ispbs 1 --ispb-base "$a" --collectors "$C" --stop-after "$N" --accept multipart \
        --label "drain-$r" >"$OUT/drain-$r.txt" 2>"$OUT/drain-$r.err" || true
    d=$(sed -n 's/.* msgs_per_s=\([0-9.]*\).*/\1/p' "$OUT/drain-$r.txt")
    log "round $r: pix-collect"
    backlog "$b" "$N"
    t0=$(date +%s.%N)
    "$top/collect/pix-collect" --url "http://127.0.0.1:$http_port" --ispb "$b" --collectors "$C" \
        --into "$sink" --once --no-progress ${PIX_COLLECT_ARGS:-} 2>"$OUT/collect-$r.out"
    got=$("$PGBIN/psql" -qXAt "$sink" -c "SELECT count(*) || ' ' || extract(epoch FROM max(received_at))
                FROM pix_received WHERE message->'recebedor'->>'ispb' = '$b'")
    read -r count t_end <<<"$got"
    if [[ "$count" != "$N" ]]; then
        log "round $r: the sink holds $count messages, not $N"
        exit 1
    fi
    c=$(awk "BEGIN {printf \"%.0f\", $N / ($t_end - $t0)}")
    echo "| $r | ${d%.*} | $c | $(awk "BEGIN {printf \"%.2f\", $c / $d}") | $(cut -d' ' -f1 /proc/loadavg) |" | tee -a "$OUT/collect-bench.md"
    sum_d=$(awk "BEGIN {print $sum_d + $d}")
    sum_c=$(awk "BEGIN {print $sum_c + $c}")
done
mean_d=$(awk "BEGIN {printf \"%.0f\", $sum_d / $ROUNDS}")
mean_c=$(awk "BEGIN {printf \"%.0f\", $sum_c / $ROUNDS}")
bar=MISSED
awk "BEGIN {exit !($mean_c >= 20000)}" && bar=MET
{
    echo "| mean | $mean_d | $mean_c | $(awk "BEGIN {printf \"%.2f\", $mean_c / $mean_d}") | |"
    echo
    echo "Bar (pix-collect >= 20 000 msgs/s into a local PostgreSQL sink): $bar; every round's sink held exactly its $N messages."
} | tee -a "$OUT/collect-bench.md"
