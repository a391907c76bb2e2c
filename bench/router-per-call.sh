#!/usr/bin/env bash
# What one routed call costs: the same read on the shard directly and through the PL/Proxy router,
# side by side, on a 1-shard deployment made here (scripts/shards.sh up).
#
#   bench/router-per-call.sh [BASE_REV] [ROUNDS]
#
# The call is a collector's empty read (pix_stream_next on an open stream with nothing to claim, batch
# 10): the shard does the least it can, so what the router adds shows the most. Each variant runs with
# pgbench -M prepared, one client for -T 4 (latency per call) and 8 clients for -T 4 (calls per second
# on this machine's cores, where the router's CPU competes with the shard's), ROUNDS times (3) in
# alternating order. Variants:
#   direct      the shard's pix_stream_next
#   router      this tree's router (router/pix_router.sql)
#   base        with BASE_REV: that commit's router/pix_router.sql, in a second database of the same
#               router cluster, on the same shard
#   hash        a bare `RUN ON hashtext(ispb)` function (no move lock, no credential check)
#   extended    the shard's pix_stream_next as an unnamed statement, parsed and planned on every call
#               (pgbench -M extended): how PL/Proxy sends every call to a shard (PQsendQueryParams)
#   hop         a PL/Proxy function that runs `SELECT 1` on partition 0, against `one` (SELECT 1 on the
#               shard directly): what one PL/Proxy hop costs with nothing else to do
# Ports PIX_BENCH_PORT (5990) and +1; directory /tmp/pix-router-per-call (removed at the start).
set -euo pipefail

top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top"
base_rev=${1:-}
rounds=${2:-3}
PGBIN=${PGBIN:-/usr/lib/postgresql/15/bin}
port=${PIX_BENCH_PORT:-5990}
dir=/tmp/pix-router-per-call
ispb=12345678

q() { "$PGBIN/psql" -X -q -v ON_ERROR_STOP=1 "$@"; }

scripts/shards.sh down "$dir" >/dev/null 2>&1 || true
rm -rf "$dir"
trap 'scripts/shards.sh down "$dir" >/dev/null 2>&1 || true' EXIT
router=$(scripts/shards.sh up "$dir" "$port" 1 2>"$dir.log")
shard=$(q "$router" -tAc "SELECT conninfo FROM pix_shards()")" user=postgres"

# The floor: PL/Proxy routing on a bare hash.
q "$router" -c "CREATE OR REPLACE FUNCTION public.pix_stream_next_hash(ispb text, interation_id text,
    max_messages int DEFAULT 1, credential text DEFAULT NULL) RETURNS pix_read LANGUAGE plproxy AS \$p\$
        CLUSTER 'pix_cluster';
        RUN ON hashtext(ispb);
        SELECT * FROM public.pix_stream_next(ispb, interation_id, max_messages, credential);
    \$p\$" -c "CREATE OR REPLACE FUNCTION public.pix_hop() RETURNS int LANGUAGE plproxy AS \$p\$
        CLUSTER 'pix_cluster';
        RUN ON 0;
        SELECT 1;
    \$p\$"

variants=(direct extended router hash one hop)
declare -A conn=([direct]=$shard [extended]=$shard [router]=$router [hash]=$router [one]=$shard [hop]=$router)
declare -A fn=([direct]=pix_stream_next [extended]=pix_stream_next [router]=pix_stream_next
    [hash]=pix_stream_next_hash)
declare -A sql=([one]="SELECT 1;" [hop]="SELECT pix_hop();")
if [[ -n "$base_rev" ]]; then
    base_router=${router/dbname=pix/dbname=pix_base}
    q "$router" -c "CREATE DATABASE pix_base"
    options=$(q "$router" -tAc "SELECT string_agg(format('%s %L', split_part(o, '=', 1), substr(o, strpos(o, '=') + 1)), ', ')
                                 FROM pg_foreign_server s, unnest(s.srvoptions) o WHERE s.srvname = 'pix_cluster'")
    q "$base_router" -c "CREATE EXTENSION plproxy" \
        -c "CREATE SERVER pix_cluster FOREIGN DATA WRAPPER plproxy OPTIONS ($options)" \
        -c "CREATE USER MAPPING FOR PUBLIC SERVER pix_cluster"
    git show "$base_rev:router/pix_router.sql" >"$dir/base_router.sql"
    # the shard's catalog, which routers since the generated one take (older ones ignore the variable)
    q "$base_router" -v partitions=16 -v credentials=on -v catalog="$(q "$shard" -tA -f router/pix_catalog.sql)" \
        -f "$dir/base_router.sql" >/dev/null
    variants+=(base)
    conn[base]=$base_router
    fn[base]=pix_stream_next
fi

# One open stream, nothing to claim: every call is the same quiet read.
iid=$(q "$shard" -tAc "SELECT interation_id FROM pix_stream_start('$ispb', 10)")
q "$shard" -c "ALTER DATABASE pix SET pix.stream_idle_timeout = '1h'"

run() { # variant clients
    local v=$1 c=$2 script="$dir/$1.sql" mode=prepared
    echo "${sql[$v]:-SELECT * FROM ${fn[$v]}('$ispb', '$iid', 10);}" >"$script"
    [[ $v == extended ]] && mode=extended
    "$PGBIN/pgbench" -n -M "$mode" -c "$c" -j "$((c > 1 ? 2 : 1))" -T 4 -f "$script" "${conn[$v]}" 2>&1 |
        awk -v v="$v" -v c="$c" '/latency average/ {lat = $4} /^tps/ {tps = $3}
            END {printf "%-7s clients %d  latency %.3f ms  %.0f calls/s\n", v, c, lat, tps}'
}

echo "# bench/router-per-call.sh $* — $(date -u +%Y-%m-%dT%H:%M:%SZ), commit $(git rev-parse --short HEAD)$([[ -z "$(git status --porcelain)" ]] && echo ", clean tree" || echo ", uncommitted changes"), $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg)"
echo "# empty read: SELECT * FROM f('$ispb', <open stream id>, 10), pgbench -M prepared -T 4 (extended: -M extended); one/hop: SELECT 1 on the shard / through one PL/Proxy hop; rounds alternate the order"
order=("${variants[@]}")
for ((r = 1; r <= rounds; r++)); do
    for c in 1 8; do
        for v in "${order[@]}"; do
            run "$v" "$c"
        done
    done
    mapfile -t order < <(printf '%s\n' "${order[@]}" | tac)
done
