#!/usr/bin/env bash
# Sharded deployment: a router database (PL/Proxy, router/pix_router.sql) in front of shard databases
# that each hold the `pix` extension and a disjoint set of ISPBs.
#
#   scripts/shards.sh init ROUTER SHARD...        make the cluster configuration (PIX_PARTITIONS partitions,
#                                                 16 by default, dealt round-robin over the shards), the
#                                                 extension on every shard, the router's functions
#   scripts/shards.sh install ROUTER              (re)install the router's functions, generated from the
#                                                 shards' catalog (after a shard upgrade)
#   scripts/shards.sh list ROUTER                 one line per shard: number, conninfo, partitions
#   scripts/shards.sh each ROUTER SQL             run SQL on every shard (credentials: through the router)
#   scripts/shards.sh move ROUTER TARGET PART...  move partitions to the database TARGET (see docs/operations.md,
#                                                 "Sharding")
#   scripts/shards.sh up DIR PORT N               on this machine: N shard clusters (DIR/shardK, port
#                                                 PORT+1+K) and a router cluster (DIR/router, PORT), each
#                                                 with database pix and the login role pix_http; prints
#                                                 the router's conninfo, and one line per shard on stderr
#   scripts/shards.sh down DIR                    stops every cluster under DIR
#
# ROUTER, SHARD and TARGET are libpq conninfos with a dbname, for a superuser (psql runs with them). The
# shards' conninfos are stored as given in the router's foreign server `pix_cluster` (the one source of
# truth: PL/Proxy routes with it, pixd LISTENs on what it lists), without user: PL/Proxy connects to a
# shard as the role that called the router, so every role that uses the router must exist on the shards.
set -euo pipefail

cd "$(dirname "$0")/.."
PGBIN=${PGBIN:-/usr/lib/postgresql/15/bin}
PIX_PARTITIONS=${PIX_PARTITIONS:-16}
# The administrator role psql logs in as where a conninfo names no user (shard conninfos never do).
export PGUSER=${PGUSER:-postgres}
# Every shard allocates message and stream ids from its own range (shard k from k * 2^48), so rows moved
# between shards never collide with the target's own.
RANGE_BITS=48

die() { echo "shards.sh: $*" >&2; exit 1; }
say() { echo "shards.sh: $*" >&2; }

usage() {
    sed -n '2,19p' "$0" | sed 's/^# \{0,1\}//' >&2
    exit 2
}

q() { # conninfo psql-args... : quiet, stop on error, no psqlrc
    local c=$1
    shift
    PGOPTIONS="-c client_min_messages=warning ${PGOPTIONS:-}" "$PGBIN/psql" -X -q -v ON_ERROR_STOP=1 "$c" "$@"
}
value() { q "$1" -tAc "$2"; }
literal() { printf "'%s'" "${1//\'/\'\'}"; }

# The range number a shard allocates ids from (its sequences' position >> RANGE_BITS).
range_of() {
    value "$1" "SELECT greatest((SELECT last_value FROM pix.message_id_seq), (SELECT last_value FROM pix.stream_stream_id_seq)) >> $RANGE_BITS"
}

# The extension, and ids from range k when the shard has never allocated one.
prepare_shard() { # conninfo k
    local c=$1 k=$2 fresh
    q "$c" -c "CREATE EXTENSION IF NOT EXISTS pix" -c "ALTER EXTENSION pix UPDATE" -f router/pix_shard.sql \
        -f scripts/restrict-connect.sql
    fresh=$(value "$c" "SELECT NOT EXISTS (SELECT 1 FROM pix.message) AND NOT EXISTS (SELECT 1 FROM pix.stream)")
    if [[ "$fresh" == t && "$(range_of "$c")" == 0 && "$k" != 0 ]]; then
        q "$c" -c "ALTER TABLE pix.message ALTER COLUMN id RESTART WITH $((k << RANGE_BITS))" \
            -c "ALTER TABLE pix.stream ALTER COLUMN stream_id RESTART WITH $((k << RANGE_BITS))"
    fi
    # Credential ids from the shard's range too: the router copies credentials to every shard under
    # the id their first shard gave them (router/pix_router.sql), so no shard may allocate another's.
    q "$c" -c "DO \$\$
        DECLARE
            seq text := CASE WHEN to_regclass('pix.credential') IS NOT NULL
                             THEN pg_get_serial_sequence('pix.credential', 'credential_id') END;
            first bigint := $(($(range_of "$c") << RANGE_BITS));
            last bigint;
        BEGIN
            IF seq IS NOT NULL AND first > 0 THEN
                EXECUTE format('SELECT last_value FROM %s', seq) INTO last;
                IF last < first THEN
                    PERFORM setval(seq, first, false);
                END IF;
            END IF;
        END \$\$"
}

# Whether the shards' functions take the trailing credential (pix 1.3); asked of the first shard.
shards_take_credentials() { # router
    local first
    first=$(value "$1" "SELECT substr(o, 4) FROM pg_foreign_server s, unnest(s.srvoptions) o
                        WHERE s.srvname = 'pix_cluster' AND o LIKE 'p0=%'")
    value "$first" "SELECT CASE WHEN EXISTS (SELECT 1 FROM pg_proc WHERE proname = 'pix_stream_start'
                    AND 'credential' = ANY (proargnames)) THEN 'on' ELSE 'off' END"
}

# The extension's catalog as router/pix_catalog.sql reads it (JSON: functions, types), which must be the
# same on every shard: the router's functions and types are generated from it.
shards_catalog() { # router
    local c one catalog="" first=""
    while IFS= read -r c; do
        one=$(q "$c" -tA -f router/pix_catalog.sql) || die "could not read the pix extension of shard '$c'"
        [[ -n "$one" ]] || die "shard '$c' has no pix extension: run init"
        if [[ -z "$first" ]]; then
            first=$c
            catalog=$one
        elif [[ "$one" != "$catalog" ]]; then
            die "the pix extensions of '$first' and '$c' differ (version, functions or grants): update every shard (scripts/shards.sh each ROUTER 'ALTER EXTENSION pix UPDATE'), then install again"
        fi
    done < <(value "$1" "SELECT DISTINCT substr(o, strpos(o, '=') + 1) FROM pg_foreign_server s,
                         unnest(s.srvoptions) o WHERE s.srvname = 'pix_cluster' AND o ~ '^p[0-9]+='")
    echo "$catalog"
}

cmd_install() { # router
    local router=$1 partitions catalog
    partitions=$(value "$router" "SELECT count(*) FROM pg_foreign_server s, unnest(s.srvoptions) o
                                  WHERE s.srvname = 'pix_cluster' AND o ~ '^p[0-9]+='")
    ((partitions > 0)) || die "no cluster configuration in the router: run init first"
    catalog=$(shards_catalog "$router")
    q "$router" -v partitions="$partitions" -v credentials="$(shards_take_credentials "$router")" \
        -v catalog="$catalog" -f router/pix_router.sql -f scripts/restrict-connect.sql
}

cmd_init() { # router shard...
    local router=$1 k n i opts=()
    shift
    n=$#
    ((n >= 1)) || usage
    ((PIX_PARTITIONS >= n && (PIX_PARTITIONS & (PIX_PARTITIONS - 1)) == 0)) ||
        die "PIX_PARTITIONS ($PIX_PARTITIONS) must be a power of two and at least the number of shards ($n)"
    local shards=("$@")
    for ((k = 0; k < n; k++)); do
        prepare_shard "${shards[k]}" "$k"
    done
    for ((i = 0; i < PIX_PARTITIONS; i++)); do
        opts+=("p$i $(literal "${shards[i % n]}")")
    done
    q "$router" -c "CREATE EXTENSION IF NOT EXISTS plproxy" \
        -c "DROP SERVER IF EXISTS pix_cluster CASCADE" \
        -c "CREATE SERVER pix_cluster FOREIGN DATA WRAPPER plproxy OPTIONS ($(IFS=,; echo "${opts[*]}"))" \
        -c "CREATE USER MAPPING FOR PUBLIC SERVER pix_cluster"
    cmd_install "$router"
    say "router ready: $PIX_PARTITIONS partitions over $n shard(s)"
}

cmd_list() { # router
    value "$1" "SELECT shard || ' ' || conninfo || ' partitions ' || array_to_string(partitions, ',') FROM pix_shards()"
}

cmd_each() { # router sql
    local c
    while IFS= read -r c; do
        q "$c" -c "$2"
    done < <(value "$1" "SELECT conninfo FROM pix_shards() ORDER BY shard")
}

# ---- moving partitions -------------------------------------------------------------------------
# The tables of the extension, what a move does with each, and which rows ($P is the predicate on an
# ISPB column, for the moving partitions). A table of schema pix that is not listed stops the move
# before anything changes. Modes:
#   move   the moving ISPBs' rows: copied to the target, then deleted from the source
#   merge  copied to the target, kept on the source, merged with what the target has (below)
#   stays  not copied
# sent_message (pix 1.3): a send's ids are recorded on the receiver's shard, so they move with the
# receiver while its message is in the log; ids whose message the purge removed no longer name their
# receiver, and are merged into the target (kept on the source too) so a re-send within the horizon
# is still a duplicate wherever its receiver lives. credential and role_binding are on every shard
# (router/pix_router.sql): merged, so a new server has them all. The audit stays where each change ran.
move_tables() {
    cat <<'TABLES'
institution	move	ispb IN (SELECT ispb FROM pix.institution WHERE $P(ispb))
message	move	recebedor_ispb IN (SELECT recebedor_ispb FROM pix.message WHERE $P(recebedor_ispb))
stream	move	$P(ispb)
iteration	move	stream_id IN (SELECT stream_id FROM pix.stream WHERE $P(ispb))
ready	move	$P(ispb)
retired_id	move	$P(ispb)
sent_message	move	end_to_end_id IN (SELECT end_to_end_id FROM pix.message WHERE $P(recebedor_ispb))
sent_message	merge	NOT EXISTS (SELECT 1 FROM pix.message m WHERE m.end_to_end_id = sent_message.end_to_end_id)
credential	merge	true
role_binding	merge	true
credential_audit	stays	false
TABLES
}

# "pix_router_moving(col)" -> the partition test on col, for the partitions being moved.
predicate() { # partitions-array-literal column
    echo "(coalesce(hashtext($2), 0) & ($PIX_PARTITIONS - 1)) = ANY ('$1'::int[])"
}

rows_of() { # table filter partitions -> the WHERE clause
    local filter=$2 parts=$3 out="" rest col
    rest=$filter
    while [[ "$rest" == *'$P('* ]]; do
        out+=${rest%%\$P(*}
        rest=${rest#*\$P(}
        col=${rest%%)*}
        rest=${rest#*)}
        out+=$(predicate "$parts" "$col")
    done
    echo "$out$rest"
}

check_tables_known() { # conninfo
    local known unknown
    known=$(move_tables | cut -f1 | sort -u | paste -sd, -)
    unknown=$(value "$1" "SELECT string_agg(relname, ', ') FROM pg_class WHERE relnamespace = 'pix'::regnamespace
                          AND relkind IN ('r', 'p') AND relname <> ALL (string_to_array('$known', ','))")
    [[ -z "$unknown" ]] || die "table(s) pix.$unknown on $1 are not known to the move procedure: extend move_tables"
}

# What the copy reads of a table: its rows, except role bindings, which name their role by oid (an oid
# is local to a server): by name.
dump_select() { # table where
    case $1 in
        role_binding) echo "SELECT r.rolname, b.ispb, b.bound_at, b.bound_by FROM pix.role_binding b
                            JOIN pg_roles r ON r.oid = b.role WHERE $2" ;;
        *) echo "SELECT * FROM pix.$1 WHERE $2" ;;
    esac
}

# How the target takes a file of rows. Moved rows are new there; merged ones may be there already:
# a sent id is kept as the target has it, a credential keeps its id and is revoked when either side
# revoked it, a binding names a role that must exist on the target (the role calls the target through
# the router) and is inserted with triggers on, so that the target's backends forget cached bindings.
load_statements() { # table mode file
    local t=$1 file=$3
    case $1:$2 in
        sent_message:*)
            printf '%s
' "CREATE TEMP TABLE stage_$2 (LIKE pix.sent_message);" "\copy stage_$2 FROM '$file'" \
                "INSERT INTO pix.sent_message SELECT * FROM stage_$2 ON CONFLICT DO NOTHING;" ;;
        credential:merge)
            printf '%s
' "CREATE TEMP TABLE stage_credential (LIKE pix.credential);" "\copy stage_credential FROM '$file'" \
                "INSERT INTO pix.credential OVERRIDING SYSTEM VALUE SELECT * FROM stage_credential
                 ON CONFLICT (credential_id) DO UPDATE
                 SET revoked_at = coalesce(pix.credential.revoked_at, excluded.revoked_at),
                     revoked_by = coalesce(pix.credential.revoked_by, excluded.revoked_by);" ;;
        role_binding:merge)
            printf '%s
' "CREATE TEMP TABLE stage_binding (rolname name, ispb text, bound_at timestamptz, bound_by text);" \
                "\copy stage_binding FROM '$file'" \
                "DO \$\$ DECLARE missing text; BEGIN
                     SELECT string_agg(rolname, ', ') INTO missing FROM stage_binding
                      WHERE rolname NOT IN (SELECT rolname FROM pg_roles);
                     IF missing IS NOT NULL THEN
                         RAISE EXCEPTION 'bound role(s) % do not exist on the target: create them first', missing;
                     END IF;
                 END \$\$;" \
                "SET LOCAL session_replication_role = origin;" \
                "INSERT INTO pix.role_binding (role, ispb, bound_at, bound_by)
                 SELECT r.oid, s.ispb, s.bound_at, s.bound_by FROM stage_binding s JOIN pg_roles r USING (rolname)
                 ON CONFLICT (role) DO NOTHING;" \
                "SET LOCAL session_replication_role = replica;" ;;
        *:move) echo "\copy pix.$t FROM '$file'" ;;
    esac
}

# Copies the moving rows from source to target: read in one snapshot of the source, written in one
# transaction on the target with triggers off (the rows were validated and enqueued on the source;
# the enqueue trigger would requeue confirmed messages). Then the target's id sequences move past the
# copied ids, so the ready queue's order (by message id) stays the enqueue order of the moved ISPBs.
# Between the snapshot and the delete only the expiry sweep can change the moving rows on the source
# (routed calls are locked out): it requeues a dead stream's batch there, while the copy still has it
# pending in its stream, which the target expires in turn. Nothing is lost either way.
cmd_copy() { # source target partitions
    local source=$1 target=$2 parts=$3 dump load table mode filter tmp present
    tmp=$(mktemp -d /tmp/pix-move.XXXXXX)
    present=",$(value "$source" "SELECT string_agg(relname, ',') FROM pg_class WHERE relnamespace = 'pix'::regnamespace"),"
    dump="BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY;"$'\n'
    load="SET session_replication_role = replica;"$'\n'
    while IFS=$'\t' read -r table mode filter; do
        [[ "$mode" != stays && "$present" == *",$table,"* ]] || continue # an older source: no such rows
        dump+="\\copy ($(dump_select "$table" "$(rows_of "$table" "$filter" "$parts")" | tr '\n' ' ')) TO '$tmp/$table.$mode'"$'\n'
        load+=$(load_statements "$table" "$mode" "$tmp/$table.$mode")$'\n'
    done < <(move_tables)
    dump+="COMMIT;"
    load+="SELECT setval('pix.message_id_seq', greatest((SELECT last_value FROM pix.message_id_seq), (SELECT max(id) FROM pix.message)));"$'\n'
    load+="SELECT setval('pix.stream_stream_id_seq', greatest((SELECT last_value FROM pix.stream_stream_id_seq), (SELECT max(stream_id) FROM pix.stream)));"$'\n'
    local rc=0
    q "$source" -f - <<<"$dump" >/dev/null && q "$target" -1 -f - <<<"$load" >/dev/null || rc=$?
    say "copied $(wc -l <"$tmp/message.move" 2>/dev/null || echo 0) message(s), $(wc -l <"$tmp/stream.move" 2>/dev/null || echo 0) stream(s), $(wc -l <"$tmp/credential.merge" 2>/dev/null || echo 0) credential(s)"
    rm -rf "$tmp"
    return "$rc"
}

cmd_delete() { # source partitions : the moved rows, children first, in one transaction
    local source=$1 parts=$2 script="" table mode filter present
    present=",$(value "$source" "SELECT string_agg(relname, ',') FROM pg_class WHERE relnamespace = 'pix'::regnamespace"),"
    while IFS=$'\t' read -r table mode filter; do
        [[ "$mode" == move && "$present" == *",$table,"* ]] || continue
        script="DELETE FROM pix.$table WHERE $(rows_of "$table" "$filter" "$parts");"$'\n'"$script"
    done < <(move_tables)
    q "$source" -1 -f - <<<"$script" >/dev/null
}

cmd_move() { # router target partition...
    local router=$1 target=$2 p sources source parts locks="" sets=""
    shift 2
    (($# >= 1)) || usage
    PIX_PARTITIONS=$(value "$router" "SELECT value FROM pix_router.setting WHERE name = 'partitions'")
    for p in "$@"; do
        [[ "$p" =~ ^[0-9]+$ ]] && ((p < PIX_PARTITIONS)) || die "no partition '$p' (0..$((PIX_PARTITIONS - 1)))"
    done
    parts="{$(IFS=,; echo "$*")}"
    mapfile -t sources < <(value "$router" "SELECT DISTINCT substr(o, strpos(o, '=') + 1) FROM pg_foreign_server s,
        unnest(s.srvoptions) o WHERE s.srvname = 'pix_cluster' AND substr(split_part(o, '=', 1), 2) ~ '^[0-9]+\$'
        AND substr(split_part(o, '=', 1), 2)::int = ANY ('$parts'::int[])")
    ((${#sources[@]} == 1)) || die "partitions $parts live on ${#sources[@]} databases: move them one source at a time"
    source=${sources[0]}
    [[ "$source" != "$target" ]] || die "partitions $parts are already on $target"

    # The target: the extension, ids from a range no shard uses yet.
    local next
    next=$(($(while IFS= read -r c; do range_of "$c"; done < <(value "$router" "SELECT conninfo FROM pix_shards()") |
        sort -n | tail -n1) + 1))
    prepare_shard "$target" "$next"
    check_tables_known "$source"
    check_tables_known "$target"
    [[ "$(value "$target" "SELECT count(*) FROM pix.stream WHERE $(predicate "$parts" ispb)")" == 0 ]] ||
        die "the target already has streams of partitions $parts"

    # Credentials are on every shard: none may change while they are copied to the target.
    if [[ "$(value "$router" "SELECT to_regprocedure('pix_router.credentials_lock()') IS NOT NULL")" == t ]]; then
        locks+="SELECT pg_advisory_lock(pix_router.lock_space(), pix_router.credentials_lock());"$'\n'
    fi
    for p in "$@"; do
        locks+="SELECT pg_advisory_lock(pix_router.lock_space(), $p);"$'\n'
        sets+="${sets:+, }SET p$p $(literal "$target")"
    done
    say "moving partitions $parts from '$source' to '$target'"
    # One router session holds the partitions' locks from before the copy until the configuration points
    # at the target and the source's rows are gone: the lock waits for the calls in flight; calls that
    # arrive meanwhile answer 57P03 (503 + Retry-After) at once.
    local self
    self=$(realpath "$0")
    export PGBIN PIX_PARTITIONS
    q "$router" -f - <<SQL
\\o /dev/null
$locks
\\set copied \`$(printf '%q ' "$self" _copy "$source" "$target" "$parts") >&2 && echo yes || echo no\`
\\if :copied
    ALTER SERVER pix_cluster OPTIONS ($sets);
    \\set deleted \`$(printf '%q ' "$self" _delete "$source" "$parts") >&2 && echo yes || echo no\`
    \\if :deleted
        \\echo shards.sh: moved: the router now sends partitions $parts to the target
    \\else
        \\echo shards.sh: moved, but deleting the moved rows from the source failed: delete them by hand (scripts/shards.sh _delete)
    \\endif
\\else
    \\echo shards.sh: the copy failed: nothing changed: the copy to the target was rolled back
    SELECT pg_advisory_unlock_all();
    \\quit
\\endif
SELECT pg_advisory_unlock_all();
SQL
    [[ "$(cmd_list "$router" | grep -c "^[0-9]* $target ")" == 1 ]] || die "the router does not list the target"
}

# ---- one machine ---------------------------------------------------------------------------------
make_database() { # cluster-conninfo (dbname=postgres) : database pix and the roles the server uses
    local c=$1
    [[ -n "$(value "$c" "SELECT 1 FROM pg_database WHERE datname = 'pix'")" ]] || q "$c" -c "CREATE DATABASE pix"
    q "$c" -c "DO \$\$ BEGIN
        IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'pix_client') THEN CREATE ROLE pix_client NOLOGIN; END IF;
        IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'pix_http') THEN CREATE ROLE pix_http LOGIN IN ROLE pix_client; END IF;
        END \$\$"
}

cmd_up() { # dir port n
    local dir=$1 port=$2 n=$3 k c shards=() router
    [[ "$n" =~ ^[0-9]+$ ]] && ((n >= 1 && n <= 64)) || die "the number of shards must be 1..64, not '$n'"
    for ((k = 0; k < n; k++)); do
        c=$(./scripts/cluster.sh start "$dir/shard$k" $((port + 1 + k)))
        make_database "$c"
        shards+=("${c/dbname=postgres/dbname=pix}")
        shards[k]=${shards[k]/ user=postgres/}
    done
    c=$(./scripts/cluster.sh start "$dir/router" "$port")
    make_database "$c"
    router=${c/dbname=postgres/dbname=pix}
    if [[ -n "$(value "$router" "SELECT 1 FROM pg_foreign_server WHERE srvname = 'pix_cluster'")" ]]; then
        say "reusing the router's cluster configuration (scripts/shards.sh list)"
        for ((k = 0; k < n; k++)); do
            prepare_shard "${shards[k]}" "$k"
        done
        cmd_install "$router" >/dev/null
    else
        cmd_init "$router" "${shards[@]}"
    fi
    while read -r k c; do
        say "shard $k: $c"
    done < <(cmd_list "$router")
    echo "$router"
}

cmd_down() { # dir
    local d
    for d in "$1"/shard* "$1"/router; do
        [[ -d "$d" ]] && ./scripts/cluster.sh stop "$d"
    done
    return 0
}

(($# >= 2)) || usage
cmd=$1
shift
case "$cmd" in
    init) cmd_init "$@" ;;
    install) cmd_install "$1" ;;
    list) cmd_list "$1" ;;
    each) (($# == 2)) || usage; cmd_each "$1" "$2" ;;
    move) cmd_move "$@" ;;
    up) (($# == 3)) || usage; cmd_up "$@" ;;
    down) cmd_down "$1" ;;
    _copy) (($# == 3)) || usage; cmd_copy "$@" ;;
    _delete) (($# == 2)) || usage; cmd_delete "$@" ;;
    *) usage ;;
esac
