#!/usr/bin/env bash
# Manage a project-local PostgreSQL 15 cluster.
#
#   scripts/cluster.sh start  DIR [PORT]   initdb if needed (data in DIR/data), start, wait until ready
#   scripts/cluster.sh stop   DIR          fast shutdown (no-op when not running)
#   scripts/cluster.sh status DIR          exit 0 when running, 3 when not
#
# `start` and `status` print the libpq conninfo on stdout (everything else goes to stderr), so
#   conninfo=$(scripts/cluster.sh start /tmp/pg 5433)
# works. The server listens on a unix socket in DIR only; set PIX_PG_LISTEN=127.0.0.1 to also accept
# TCP on loopback. As root, initdb and postgres run as the `postgres` OS user (they refuse root) and DIR
# is made to belong to it; otherwise they run as the current user. The log is DIR/postgres.log.
set -euo pipefail

PGBIN=${PGBIN:-/usr/lib/postgresql/15/bin}
PIX_PG_LISTEN=${PIX_PG_LISTEN:-}

die() { echo "cluster.sh: $*" >&2; exit 1; }
say() { echo "cluster.sh: $*" >&2; }

usage() {
    sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//' >&2
    exit 2
}

# Run a command as the cluster's owner.
as_owner() {
    if ((EUID == 0)); then
        runuser -u postgres -- "$@"
    else
        "$@"
    fi
}

conninfo() { # DIR PORT
    echo "host=$1 port=$2 dbname=postgres user=postgres"
}

running_port() { # DIR -> port of the running postmaster, from postmaster.pid line 4
    sed -n '4p' "$1/data/postmaster.pid" 2>/dev/null || true
}

is_running() { # DIR
    [[ -f "$1/data/PG_VERSION" ]] || return 1
    as_owner "$PGBIN/pg_ctl" -D "$1/data" status >/dev/null 2>&1
}

cmd_start() {
    local dir=$1 port=$2
    if ! [[ "$port" =~ ^[0-9]{1,5}$ ]] || ((port < 1 || port > 65535)); then
        die "bad port '$port'"
    fi
    [[ -x "$PGBIN/initdb" ]] || die "$PGBIN/initdb not found: run scripts/deps.sh (postgresql-15)"
    if ((EUID == 0)); then
        id postgres >/dev/null 2>&1 || die "OS user 'postgres' missing: run scripts/deps.sh (postgresql-15)"
    fi

    mkdir -p "$dir"
    dir=$(cd "$dir" && pwd -P)
    # The socket path must fit in sun_path (107 bytes).
    local sock="$dir/.s.PGSQL.$port"
    ((${#sock} <= 107)) || die "socket path '$sock' is longer than 107 bytes: use a shorter DIR"

    if ((EUID == 0)); then
        chown postgres:postgres "$dir"
        chmod 0755 "$dir"
        runuser -u postgres -- test -w "$dir" ||
            die "user postgres cannot write '$dir' (is every parent directory traversable by it?)"
    fi

    if is_running "$dir"; then
        local rport
        rport=$(running_port "$dir")
        [[ "$rport" == "$port" ]] || say "already running on port $rport (not $port); reusing it"
        say "cluster in $dir already running"
        conninfo "$dir" "${rport:-$port}"
        return 0
    fi

    if [[ ! -f "$dir/data/PG_VERSION" ]]; then
        say "initdb $dir/data"
        as_owner "$PGBIN/initdb" -D "$dir/data" -A trust -U postgres -E UTF8 --locale=C.UTF-8 \
            >"$dir/initdb.log" 2>&1 || { cat "$dir/initdb.log" >&2; die "initdb failed"; }
        echo "include_if_exists = 'pix_cluster.conf'" | as_owner tee -a "$dir/data/postgresql.conf" >/dev/null
    else
        say "reusing the cluster in $dir/data"
    fi

    # Rewritten on every start: where to listen. Quotes in $dir would break the file; refuse them.
    [[ "$dir" != *"'"* ]] || die "DIR must not contain a quote"
    as_owner tee "$dir/data/pix_cluster.conf" >/dev/null <<CONF
# written by scripts/cluster.sh on each start
port = $port
listen_addresses = '$PIX_PG_LISTEN'
unix_socket_directories = '$dir'
fsync = on
shared_buffers = 128MB
max_connections = 200
logging_collector = off
log_line_prefix = '%m [%p] %q%u@%d '
CONF

    say "starting PostgreSQL on port $port (socket in $dir, log $dir/postgres.log)"
    if ! as_owner "$PGBIN/pg_ctl" -D "$dir/data" -l "$dir/postgres.log" -w -t 60 start >/dev/null; then
        tail -n 30 "$dir/postgres.log" >&2 || true
        die "PostgreSQL did not start"
    fi
    local i
    for ((i = 0; i < 100; i++)); do
        if "$PGBIN/pg_isready" -q -h "$dir" -p "$port"; then
            conninfo "$dir" "$port"
            return 0
        fi
        sleep 0.1
    done
    die "PostgreSQL started but does not accept connections (see $dir/postgres.log)"
}

cmd_stop() {
    local dir=$1
    [[ -d "$dir" ]] || { say "no cluster in $dir"; return 0; }
    if is_running "$dir"; then
        say "stopping PostgreSQL in $dir"
        as_owner "$PGBIN/pg_ctl" -D "$dir/data" -m fast -w -t 60 stop >/dev/null
    else
        say "not running ($dir)"
    fi
}

cmd_status() {
    local dir=$1
    if [[ -d "$dir" ]] && is_running "$dir"; then
        dir=$(cd "$dir" && pwd -P)
        say "running ($dir)"
        conninfo "$dir" "$(running_port "$dir")"
        return 0
    fi
    say "not running ($dir)"
    return 3
}

(($# >= 2)) || usage
case "$1" in
    start) cmd_start "$2" "${3:-${PIX_PGPORT:-5433}}" ;;
    stop) cmd_stop "$2" ;;
    status) cmd_status "$2" ;;
    *) usage ;;
esac
