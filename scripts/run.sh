#!/usr/bin/env bash
# `make run`: install what is missing, build, start the project's private PostgreSQL cluster
# ($PWD/.pgdata, kept between runs), install the extension into database `pix`, and run the HTTP
# server in the foreground. Ctrl-C stops the server, then the cluster.
#
# Environment: PIX_PGPORT (5433), PIX_PGDIR ($PWD/.pgdata), PIX_LISTEN (127.0.0.1:3000),
#              PIX_DBNAME (pix). Extra arguments are passed to shim/pixd.
#              PIX_SHARDS=N: a sharded deployment instead (README, "Deployment: sharded"): N shard
#              clusters (ports PIX_PGPORT+1..+N) and a router cluster (PIX_PGPORT) under
#              $PWD/.pgshards (PIX_PGDIR), database pix in each; pixd talks to the router.
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$PWD
PIX_PGPORT=${PIX_PGPORT:-5433}
PIX_SHARDS=${PIX_SHARDS:-}
if [[ -n "$PIX_SHARDS" ]]; then
    PIX_PGDIR=${PIX_PGDIR:-$ROOT/.pgshards}
    PIX_DBNAME=pix
fi
PIX_PGDIR=${PIX_PGDIR:-$ROOT/.pgdata}
PIX_LISTEN=${PIX_LISTEN:-127.0.0.1:3000}
PIX_DBNAME=${PIX_DBNAME:-pix}
PGBIN=${PGBIN:-/usr/lib/postgresql/15/bin}

say() { echo "run.sh: $*" >&2; }
die() { echo "run.sh: $*" >&2; exit 1; }

[[ "$PIX_DBNAME" =~ ^[a-z_][a-z0-9_]*$ ]] || die "PIX_DBNAME must be a plain identifier"

./scripts/deps.sh

say "building"
make -j"$(nproc 2>/dev/null || echo 2)"
say "installing the extension"
if ((EUID == 0)); then
    make install >/dev/null
else
    sudo make install >/dev/null
fi

# As root, PostgreSQL runs as the postgres OS user, which must reach the data directory. A clone under
# a private directory (e.g. /root) is out of its reach: keep the data under /var/lib/pix-stream then,
# with .pgdata a symbolic link to it, so the project still finds its cluster at the same place.
if ((EUID == 0)) && [[ ! -e "$PIX_PGDIR" || -L "$PIX_PGDIR" ]] &&
    ! runuser -u postgres -- test -x "$(dirname "$PIX_PGDIR")"; then
    real=/var/lib/pix-stream/$(basename "$ROOT")-$(printf '%s' "$PIX_PGDIR" | md5sum | cut -c1-8)
    install -d -m 0755 /var/lib/pix-stream
    install -d -o postgres -g postgres -m 0755 "$real"
    ln -sfn "$real" "$PIX_PGDIR"
    say "user postgres cannot reach $(dirname "$PIX_PGDIR"): the cluster lives in $real ($PIX_PGDIR links to it)"
fi

if [[ -n "$PIX_SHARDS" ]]; then # the clusters' directories go inside: the postgres user must reach it
    mkdir -p "$PIX_PGDIR"
    PIX_PGDIR=$(cd "$PIX_PGDIR" && pwd -P)
    chmod 0755 "$PIX_PGDIR"
fi

stop_databases() {
    if [[ -n "$PIX_SHARDS" ]]; then
        ./scripts/shards.sh down "$PIX_PGDIR" || true
    else
        ./scripts/cluster.sh stop "$PIX_PGDIR" || true
    fi
}

pixd_pid=
# shellcheck disable=SC2317  # invoked through trap
cleanup() {
    local rc=$?
    trap - EXIT INT TERM HUP
    if [[ -n "$pixd_pid" ]] && kill -0 "$pixd_pid" 2>/dev/null; then
        say "stopping the server (pid $pixd_pid)"
        kill -TERM "$pixd_pid" 2>/dev/null || true
        local i
        for ((i = 0; i < 100; i++)); do
            kill -0 "$pixd_pid" 2>/dev/null || break
            sleep 0.1
        done
        if kill -0 "$pixd_pid" 2>/dev/null; then
            say "server still running after 10 s: SIGKILL"
            kill -KILL "$pixd_pid" 2>/dev/null || true
        fi
        wait "$pixd_pid" 2>/dev/null || true
    fi
    stop_databases
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
trap 'exit 129' HUP

if [[ -n "$PIX_SHARDS" ]]; then
    say "starting $PIX_SHARDS shard cluster(s) and the router under $PIX_PGDIR"
    router=$(./scripts/shards.sh up "$PIX_PGDIR" "$PIX_PGPORT" "$PIX_SHARDS")
    db=${router/user=postgres/user=pix_http}
    say "router:    psql \"$router\" (scripts/shards.sh list|move \"$router\" ...)"
else
    conninfo=$(./scripts/cluster.sh start "$PIX_PGDIR" "$PIX_PGPORT")
    PIX_PGDIR=$(cd "$PIX_PGDIR" && pwd -P)
    psql_admin() { PGOPTIONS="-c client_min_messages=warning" "$PGBIN/psql" -X -q -v ON_ERROR_STOP=1 "$conninfo" "$@"; }

    if [[ -z "$(psql_admin -tAc "SELECT 1 FROM pg_database WHERE datname = '$PIX_DBNAME'")" ]]; then
        say "creating database $PIX_DBNAME"
        psql_admin -c "CREATE DATABASE $PIX_DBNAME"
    fi
    # The extension (updated in place when this tree has a newer version), and the least-privilege role
    # the server logs in as: it may execute the pix functions and nothing else.
    PGOPTIONS="-c client_min_messages=warning" "$PGBIN/psql" -X -q -v ON_ERROR_STOP=1 "host=$PIX_PGDIR port=$PIX_PGPORT dbname=$PIX_DBNAME user=postgres" \
        -c "CREATE EXTENSION IF NOT EXISTS pix" -c "ALTER EXTENSION pix UPDATE" \
        -c "DO \$\$ BEGIN IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'pix_http') THEN CREATE ROLE pix_http LOGIN IN ROLE pix_client; END IF; END \$\$"

    db="host=$PIX_PGDIR port=$PIX_PGPORT dbname=$PIX_DBNAME user=pix_http"
    say "database:  psql \"host=$PIX_PGDIR port=$PIX_PGPORT dbname=$PIX_DBNAME user=postgres\" (the server logs in as pix_http)"
fi
say "server:    http://$PIX_LISTEN  (Ctrl-C stops the server and the cluster)"
# In a session of its own, so that Ctrl-C reaches this script only, which then sends pixd exactly
# one SIGTERM (a second signal makes pixd exit at once instead of gracefully).
setsid ./shim/pixd --listen "$PIX_LISTEN" --db "$db" "$@" </dev/null &
pixd_pid=$!
set +e
wait "$pixd_pid"
rc=$?
set -e
pixd_pid=
say "server exited with status $rc"
exit "$rc"
