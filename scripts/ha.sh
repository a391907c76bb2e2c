#!/usr/bin/env bash
# A pg_auto_failover formation on one machine: a monitor, a primary and a standby with synchronous
# replication, each with its own data directory and port, on loopback only.
#
#   scripts/ha.sh start  DIR [PORT]   monitor on PORT (default 5810), nodes on PORT+1 and PORT+2;
#                                     waits for primary + secondary, creates database pix with the
#                                     extension, prints pixd's multi-host conninfo on stdout
#   scripts/ha.sh stop   DIR          stops the three pg_autoctl services (no-op when not running)
#   scripts/ha.sh state  DIR          pg_autoctl show state
#   scripts/ha.sh wait   DIR          waits until one node is primary and the other secondary
#   scripts/ha.sh conninfo DIR        pixd's conninfo (host=127.0.0.1,127.0.0.1 port=A,B ... read-write)
#   scripts/ha.sh run-node DIR N      starts node N's pg_autoctl again (after a crash or a kill); it
#                                     rejoins the formation as a standby (pg_rewind when needed)
#   scripts/ha.sh settings DIR        the failover timing in force (monitor GUCs, keeper timeouts)
#
# Everything runs as the OS user postgres (root is refused by PostgreSQL), with pg_autoctl's
# XDG_CONFIG_HOME and XDG_DATA_HOME under DIR/xdg, and finds PostgreSQL through PG_CONFIG (or PGBIN).
# Logs: DIR/monitor.log, DIR/node1.log, DIR/node2.log.
#
# Network namespaces (test/fault/netns.py uses them to cut the nodes apart): PIX_HA_NETNS1/2 run node
# 1/2 inside that namespace; PIX_HA_HOST1/2 are the nodes' addresses (default 127.0.0.1);
# PIX_HA_MONITOR_HOST1/2 the monitor's address as each node reaches it; PIX_HA_MONITOR_LISTEN the
# monitor's listen_addresses, PIX_HA_MONITOR_CIDR the network the nodes register from (trusted by the
# monitor). Unset, everything is on loopback.
#
# Failover timing is set on the monitor (PIX_HA_* variables below, milliseconds) and on each keeper;
# the defaults here are the short ones the fault test measures, see docs/operations.md "High
# availability".
set -euo pipefail

PGBIN=${PGBIN:-/usr/lib/postgresql/15/bin}
PG_CONFIG=${PG_CONFIG:-$PGBIN/pg_config}
PIX_DBNAME=${PIX_DBNAME:-pix}
# Monitor: how often it checks nodes, how long a check may take, retries, and how long a node stays
# silent before the monitor considers it unhealthy and fails over.
PIX_HA_HEALTH_CHECK_PERIOD=${PIX_HA_HEALTH_CHECK_PERIOD:-1000}
PIX_HA_HEALTH_CHECK_TIMEOUT=${PIX_HA_HEALTH_CHECK_TIMEOUT:-1000}
PIX_HA_HEALTH_CHECK_MAX_RETRIES=${PIX_HA_HEALTH_CHECK_MAX_RETRIES:-1}
PIX_HA_HEALTH_CHECK_RETRY_DELAY=${PIX_HA_HEALTH_CHECK_RETRY_DELAY:-500}
PIX_HA_UNHEALTHY_TIMEOUT=${PIX_HA_UNHEALTHY_TIMEOUT:-4000}
PIX_HA_STARTUP_GRACE_PERIOD=${PIX_HA_STARTUP_GRACE_PERIOD:-4000}
# How long the monitor waits for an unreachable primary to demote itself before it promotes the
# standby: keep it above the keepers' network_partition_timeout, after which an isolated primary
# has stopped by itself.
PIX_HA_PRIMARY_DEMOTE_TIMEOUT=${PIX_HA_PRIMARY_DEMOTE_TIMEOUT:-8000}
# Keepers (seconds): a primary that can reach neither the monitor nor its standby for this long
# demotes itself; how long a standby waits for its WAL receiver before promotion.
PIX_HA_NETWORK_PARTITION_TIMEOUT=${PIX_HA_NETWORK_PARTITION_TIMEOUT:-5}
PIX_HA_PROMOTION_WALRECEIVER=${PIX_HA_PROMOTION_WALRECEIVER:-2}

PIX_HA_HOST1=${PIX_HA_HOST1:-127.0.0.1}
PIX_HA_HOST2=${PIX_HA_HOST2:-127.0.0.1}
PIX_HA_MONITOR_LISTEN=${PIX_HA_MONITOR_LISTEN:-127.0.0.1}

die() { echo "ha.sh: $*" >&2; exit 1; }
say() { echo "ha.sh: $*" >&2; }

usage() {
    sed -n '2,25p' "$0" | sed 's/^# \{0,1\}//' >&2
    exit 2
}

as_pg() { # run as postgres with pg_autoctl's environment (without the caller's PG* connection settings)
    runuser -u postgres -- env -u PGHOST -u PGPORT -u PGUSER -u PGDATABASE -u PGDATA XDG_CONFIG_HOME="$DIR/xdg/config" XDG_DATA_HOME="$DIR/xdg/data" \
        PG_CONFIG="$PG_CONFIG" PATH="$PGBIN:$PATH" "$@"
}

node_host() { local v="PIX_HA_HOST$1"; echo "${!v}"; }

monitor_uri() { # as node n reaches it
    local v="PIX_HA_MONITOR_HOST$1"
    echo "postgres://autoctl_node@${!v:-127.0.0.1}:$PORT/pg_auto_failover?sslmode=disable"
}

psql_monitor() {
    "$PGBIN/psql" -X -q -tA -v ON_ERROR_STOP=1 "host=127.0.0.1 port=$PORT dbname=pg_auto_failover user=postgres" "$@"
}

ports_file() { echo "$DIR/ports"; }

load_ports() {
    [[ -f "$(ports_file)" ]] || die "$DIR has no formation (no $DIR/ports)"
    read -r PORT < "$(ports_file)"
}

# Starts a pg_autoctl service (`create ... --run`, or `run`) in the background, in a session of its
# own (its process group is the node: pg_autoctl, its keeper and PostgreSQL), inside the node's
# network namespace when it has one.
spawn() { # name args...
    local name=$1 ns=() v
    shift
    v="PIX_HA_NETNS${name#node}"
    if [[ "$name" == node* && -n "${!v:-}" ]]; then
        ns=(ip netns exec "${!v}")
    fi
    "${ns[@]}" runuser -u postgres -- env -u PGHOST -u PGPORT -u PGUSER -u PGDATABASE -u PGDATA \
        XDG_CONFIG_HOME="$DIR/xdg/config" XDG_DATA_HOME="$DIR/xdg/data" PG_CONFIG="$PG_CONFIG" \
        PATH="$PGBIN:$PATH" setsid pg_autoctl "$@" </dev/null >>"$DIR/$name.log" 2>&1 &
    echo $! >"$DIR/$name.pid"
}

service_running() { # name
    local pid
    pid=$(cat "$DIR/$1.pid" 2>/dev/null) || return 1
    kill -0 "$pid" 2>/dev/null
}

wait_for() { # seconds description command...
    local limit=$1 what=$2 i
    shift 2
    for ((i = 0; i < limit * 5; i++)); do
        if "$@" >/dev/null 2>&1; then
            return 0
        fi
        sleep 0.2
    done
    die "timed out after ${limit}s waiting for $what (logs in $DIR/*.log)"
}

formation_ready() { # one primary, one secondary, both reported and assigned
    local n
    n=$(psql_monitor -c "SELECT count(*) FILTER (WHERE reportedstate = 'primary' AND goalstate = 'primary')
                                || ' ' || count(*) FILTER (WHERE reportedstate = 'secondary' AND goalstate = 'secondary')
                           FROM pgautofailover.node WHERE formationid = 'default'")
    [[ "$n" == "1 1" ]]
}

tune_monitor() {
    psql_monitor >/dev/null <<SQL
ALTER SYSTEM SET pgautofailover.health_check_period = $PIX_HA_HEALTH_CHECK_PERIOD;
ALTER SYSTEM SET pgautofailover.health_check_timeout = $PIX_HA_HEALTH_CHECK_TIMEOUT;
ALTER SYSTEM SET pgautofailover.health_check_max_retries = $PIX_HA_HEALTH_CHECK_MAX_RETRIES;
ALTER SYSTEM SET pgautofailover.health_check_retry_delay = $PIX_HA_HEALTH_CHECK_RETRY_DELAY;
ALTER SYSTEM SET pgautofailover.node_considered_unhealthy_timeout = $PIX_HA_UNHEALTHY_TIMEOUT;
ALTER SYSTEM SET pgautofailover.startup_grace_period = $PIX_HA_STARTUP_GRACE_PERIOD;
ALTER SYSTEM SET pgautofailover.primary_demote_timeout = $PIX_HA_PRIMARY_DEMOTE_TIMEOUT;
SELECT pg_reload_conf();
SQL
}

# `pg_autoctl config set` signals the running service to reload (SIGHUP); in a session of its own,
# so that a signal meant for a process group never reaches this script.
# The keeper rewrites its file now and then: a reader may catch it half written, so try again.
tune_keeper() { # pgdata
    keeper_set "$1" timeout.network_partition_timeout "$PIX_HA_NETWORK_PARTITION_TIMEOUT"
    keeper_set "$1" timeout.prepare_promotion_walreceiver "$PIX_HA_PROMOTION_WALRECEIVER"
}

keeper_set() { # pgdata key value
    local i
    for ((i = 0; i < 10; i++)); do
        as_pg setsid -w pg_autoctl config set --pgdata "$1" "$2" "$3" >/dev/null 2>&1 && return 0
        sleep 0.5
    done
    as_pg setsid -w pg_autoctl config set --pgdata "$1" "$2" "$3" >/dev/null
}

# The multi-host conninfo pixd uses: libpq tries both nodes and keeps the read-write one. TCP
# keepalives notice a primary that vanished without a word (a partition) within seconds.
conninfo() {
    local p1=$((PORT + 1)) p2=$((PORT + 2))
    echo "host=$PIX_HA_HOST1,$PIX_HA_HOST2 port=$p1,$p2 dbname=$PIX_DBNAME target_session_attrs=read-write" \
        "connect_timeout=2 keepalives_idle=3 keepalives_interval=1 keepalives_count=3"
}

node_args() { # n
    local n=$1
    echo create postgres --pgdata "$DIR/node$n" --pgport $((PORT + n)) --pgctl "$PGBIN/pg_ctl" \
        --hostname "$(node_host "$n")" --listen "$(node_host "$n")" --name "node$n" --dbname "$PIX_DBNAME" \
        --auth trust --no-ssl --pg-hba-lan --monitor "$(monitor_uri "$n")" --run
}

start_node() { # n
    local n=$1
    # shellcheck disable=SC2046  # node_args is a word list without spaces inside words
    spawn "node$n" $(node_args "$n")
    wait_for 120 "node$n's configuration" test -f "$DIR/xdg/config/pg_autoctl$DIR/node$n/pg_autoctl.cfg"
}

# pg_basebackup (the standby's clone) waits for a spread checkpoint on the primary: a minute or more
# on an idle server. A CHECKPOINT asked meanwhile makes the one in progress finish at once.
hurry_base_backup() {
    local i
    for ((i = 0; i < 120; i++)); do
        [[ -f "$DIR/node2/standby.signal" ]] && return 0
        "$PGBIN/psql" -X -q "host=$PIX_HA_HOST1 port=$((PORT + 1)) dbname=$PIX_DBNAME user=postgres connect_timeout=2" \
            -c CHECKPOINT >/dev/null 2>&1 || true
        sleep 1
    done
}

cmd_start() {
    [[ -x "$PGBIN/pg_ctl" ]] || die "$PGBIN/pg_ctl not found: run scripts/deps.sh"
    command -v pg_autoctl >/dev/null || die "pg_autoctl not found: run scripts/deps.sh (pg-auto-failover-cli)"
    ((EUID == 0)) || die "run as root (PostgreSQL and pg_autoctl run as the OS user postgres)"
    [[ "$PORT" =~ ^[0-9]{1,5}$ ]] && ((PORT > 0 && PORT < 65533)) || die "bad port '$PORT'"
    mkdir -p "$DIR"
    DIR=$(cd "$DIR" && pwd -P)
    chown postgres:postgres "$DIR"
    chmod 0755 "$DIR"
    runuser -u postgres -- test -w "$DIR" || die "user postgres cannot write $DIR (are its parents traversable?)"
    if [[ -f "$(ports_file)" ]]; then
        local old
        read -r old < "$(ports_file)"
        [[ "$old" == "$PORT" ]] || die "$DIR was made with port $old; stop it and remove it, or use that port"
    fi
    echo "$PORT" > "$(ports_file)"
    install -d -o postgres -g postgres "$DIR/xdg"

    if ! service_running monitor; then
        spawn monitor create monitor --pgdata "$DIR/monitor" --pgport "$PORT" --pgctl "$PGBIN/pg_ctl" \
            --hostname 127.0.0.1 --listen "$PIX_HA_MONITOR_LISTEN" --auth trust --no-ssl --run
    fi
    wait_for 120 "the monitor" psql_monitor -c "SELECT 1 FROM pgautofailover.formation"
    if [[ -n "${PIX_HA_MONITOR_CIDR:-}" ]] && ! grep -q "$PIX_HA_MONITOR_CIDR" "$DIR/monitor/pg_hba.conf"; then
        echo "host pg_auto_failover autoctl_node $PIX_HA_MONITOR_CIDR trust # ha.sh: PIX_HA_MONITOR_CIDR" \
            >>"$DIR/monitor/pg_hba.conf"
    fi
    tune_monitor
    # One node at a time: the first becomes primary, the second is cloned from it.
    service_running node1 || start_node 1
    wait_for 120 "node1 as primary" psql_monitor -c \
        "SELECT 1/count(*) FROM pgautofailover.node WHERE reportedstate IN ('single', 'primary', 'wait_primary')"
    service_running node2 || start_node 2
    hurry_base_backup
    wait_for 180 "primary + secondary" formation_ready
    tune_keeper "$DIR/node1"
    tune_keeper "$DIR/node2"
    setup_database
    conninfo
}

# The pix extension, the least-privilege role and CONNECT for the project's roles only
# (scripts/restrict-connect.sql), on the primary (the standby gets them by replication).
setup_database() {
    PGOPTIONS="-c client_min_messages=warning" "$PGBIN/psql" -X -q -v ON_ERROR_STOP=1 \
        "$(conninfo) user=postgres" \
        -c "CREATE EXTENSION IF NOT EXISTS pix" -c "ALTER EXTENSION pix UPDATE" \
        -c "DO \$\$ BEGIN IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'pix_http') THEN CREATE ROLE pix_http LOGIN IN ROLE pix_client; END IF; END \$\$" \
        -f "$(dirname "${BASH_SOURCE[0]}")/restrict-connect.sql" >&2
}

stop_service() { # name pgdata
    local name=$1 pgdata=$2 pid i
    pid=$(cat "$DIR/$name.pid" 2>/dev/null) || return 0
    kill -0 "$pid" 2>/dev/null || { rm -f "$DIR/$name.pid"; return 0; }
    as_pg pg_autoctl stop --pgdata "$pgdata" >/dev/null 2>&1 || kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < 300; i++)); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    if kill -0 "$pid" 2>/dev/null; then
        say "$name still running after 30 s: SIGKILL"
        kill -KILL -- "-$pid" 2>/dev/null || kill -KILL "$pid" 2>/dev/null || true
    fi
    rm -f "$DIR/$name.pid"
}

cmd_stop() {
    [[ -d "$DIR" ]] || return 0
    DIR=$(cd "$DIR" && pwd -P)
    # Standbys first, so the monitor does not fail over to a node about to stop.
    stop_service node2 "$DIR/node2"
    stop_service node1 "$DIR/node1"
    stop_service monitor "$DIR/monitor"
    # A postmaster left behind by a killed keeper.
    local d
    for d in "$DIR/node1" "$DIR/node2" "$DIR/monitor"; do
        if [[ -f "$d/postmaster.pid" ]]; then
            runuser -u postgres -- "$PGBIN/pg_ctl" -D "$d" -m immediate stop >/dev/null 2>&1 || true
        fi
    done
}

[[ $# -ge 2 ]] || usage
CMD=$1
DIR=$2
PORT=${3:-5810}
case "$CMD" in
start) cmd_start ;;
stop) cmd_stop ;;
state)
    DIR=$(cd "$DIR" && pwd -P)
    as_pg pg_autoctl show state --pgdata "$DIR/monitor"
    ;;
run-node)
    DIR=$(cd "$DIR" && pwd -P)
    N=${3:?node number}
    [[ "$N" =~ ^[12]$ ]] || die "node is 1 or 2"
    spawn "node$N" run --pgdata "$DIR/node$N"
    ;;
settings)
    DIR=$(cd "$DIR" && pwd -P)
    load_ports
    psql_monitor -F ' = ' -c "SELECT name, setting || coalesce(' ' || unit, '') FROM pg_settings
                               WHERE name ~ '^pgautofailover\\.(health|node_considered|startup_grace|primary_demote)' ORDER BY 1"
    as_pg pg_autoctl config get --pgdata "$DIR/node1" timeout.network_partition_timeout |
        sed 's/^/keeper timeout.network_partition_timeout = /;s/$/ s/'
    as_pg pg_autoctl config get --pgdata "$DIR/node1" timeout.prepare_promotion_walreceiver |
        sed 's/^/keeper timeout.prepare_promotion_walreceiver = /;s/$/ s/'
    ;;
wait)
    DIR=$(cd "$DIR" && pwd -P)
    load_ports
    wait_for 180 "primary + secondary" formation_ready
    ;;
conninfo)
    DIR=$(cd "$DIR" && pwd -P)
    load_ports
    conninfo
    ;;
*) usage ;;
esac
