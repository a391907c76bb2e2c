#!/usr/bin/env bash
# `make run`: install what is missing, build, start the project's private PostgreSQL cluster
# ($PWD/.pgdata, kept between runs), install the extension into database `pix`, and run the HTTP
# server in the foreground. Ctrl-C stops the server, then the cluster.
#
# Environment: PIX_PGPORT (5433), PIX_PGDIR ($PWD/.pgdata), PIX_LISTEN (127.0.0.1:3000),
#              PIX_DBNAME (pix). Extra arguments are passed to shim/pixd.
#              PIX_AUTH (or PIXD_AUTH) = none (default: plain HTTP, no credential, as before) | token |
#              mtls | token,mtls: HTTPS with a local CA kept in $PWD/.pki (scripts/pki.sh), one client
#              certificate (mtls) or bearer token (token) per demo ISPB (PIX_DEMO_ISPBS, default
#              "32074986 60746948") plus an admin one for the generator, registered in the database;
#              the curl commands that use them are printed.
#
# PIX_HA=1 (`make run-ha`): instead of one cluster, a pg_auto_failover formation (scripts/ha.sh:
# a monitor on PIX_HA_PORT (5810), a primary and a synchronous standby on the next two ports, data in
# PIX_HA_DIR ($PWD/.pgha)), and pixd on the multi-host conninfo with --durable-reads. Ctrl-C stops
# the server and the formation.
#
# PIX_SHARDS=N: a sharded deployment instead (docs/operations.md, "Sharding"): N shard clusters (ports
# PIX_PGPORT+1..+N) and a router cluster (PIX_PGPORT) under $PWD/.pgshards (PIX_PGDIR), database pix
# in each; pixd talks to the router, and PIX_AUTH's credentials are registered through the router, which
# stores each on every shard.
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
PIX_HA=${PIX_HA:-0}
PIX_HA_PORT=${PIX_HA_PORT:-5810}
if [[ "$PIX_HA" == 1 ]]; then
    PIX_PGDIR=${PIX_HA_DIR:-$ROOT/.pgha} # the formation's directory takes the cluster's place
fi
PIX_LISTEN=${PIX_LISTEN:-127.0.0.1:3000}
PIX_DBNAME=${PIX_DBNAME:-pix}
PGBIN=${PGBIN:-/usr/lib/postgresql/15/bin}
PIX_AUTH=${PIX_AUTH:-${PIXD_AUTH:-none}}
PIX_DEMO_ISPBS=${PIX_DEMO_ISPBS:-32074986 60746948}
PKI_DIR=$ROOT/.pki

say() { echo "run.sh: $*" >&2; }
die() { echo "run.sh: $*" >&2; exit 1; }

[[ "$PIX_DBNAME" =~ ^[a-z_][a-z0-9_]*$ ]] || die "PIX_DBNAME must be a plain identifier"
case $PIX_AUTH in none | token | mtls | token,mtls | mtls,token) ;; *) die "PIX_AUTH must be none, token, mtls or token,mtls" ;; esac
[[ -z "$PIX_SHARDS" || "$PIX_HA" != 1 ]] || die "PIX_SHARDS and PIX_HA are separate deployments: choose one"
for ispb in $PIX_DEMO_ISPBS; do [[ "$ispb" =~ ^[0-9]{8}$ ]] || die "PIX_DEMO_ISPBS: $ispb is not an ISPB"; done

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

stop_database() {
    if [[ -n "$PIX_SHARDS" ]]; then
        ./scripts/shards.sh down "$PIX_PGDIR" || true
    elif [[ "$PIX_HA" == 1 ]]; then
        ./scripts/ha.sh stop "$PIX_PGDIR" || true
    else
        ./scripts/cluster.sh stop "$PIX_PGDIR" || true
    fi
}
if [[ -n "$PIX_SHARDS" ]]; then
    say "starting $PIX_SHARDS shard cluster(s) and the router under $PIX_PGDIR"
    router=$(./scripts/shards.sh up "$PIX_PGDIR" "$PIX_PGPORT" "$PIX_SHARDS")
elif [[ "$PIX_HA" == 1 ]]; then
    say "starting the formation in $PIX_PGDIR (monitor :$PIX_HA_PORT, nodes :$((PIX_HA_PORT + 1)) and :$((PIX_HA_PORT + 2)); about a minute the first time)"
    trap stop_database EXIT
    ha_conninfo=$(PIX_DBNAME=$PIX_DBNAME ./scripts/ha.sh start "$PIX_PGDIR" "$PIX_HA_PORT")
    trap - EXIT
    PIX_PGDIR=$(cd "$PIX_PGDIR" && pwd -P)
else
    conninfo=$(./scripts/cluster.sh start "$PIX_PGDIR" "$PIX_PGPORT")
    PIX_PGDIR=$(cd "$PIX_PGDIR" && pwd -P)
fi

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
    stop_database
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
trap 'exit 129' HUP

if [[ -n "$PIX_SHARDS" ]]; then
    db=${router/user=postgres/user=pix_http}
    admin_conninfo=$router
    say "router:    psql \"$router\" (scripts/shards.sh list|move \"$router\" ...)"
elif [[ "$PIX_HA" == 1 ]]; then
    # ha.sh made the database, the extension and the role on the primary.
    db="$ha_conninfo user=pix_http"
    admin_conninfo="$ha_conninfo user=postgres"
    say "database:  psql \"$ha_conninfo user=postgres\" (the server logs in as pix_http)"
    say "formation: ./scripts/ha.sh state $PIX_PGDIR"
    set -- --durable-reads "$@"
else
    psql_admin() { PGOPTIONS="-c client_min_messages=warning" "$PGBIN/psql" -X -q -v ON_ERROR_STOP=1 "$conninfo" "$@"; }

    if [[ -z "$(psql_admin -tAc "SELECT 1 FROM pg_database WHERE datname = '$PIX_DBNAME'")" ]]; then
        say "creating database $PIX_DBNAME"
        psql_admin -c "CREATE DATABASE $PIX_DBNAME"
    fi
    # The extension (updated in place when this tree has a newer version), the least-privilege role
    # the server logs in as (it may execute the pix functions and nothing else), and CONNECT for the
    # project's roles only (scripts/restrict-connect.sql: LISTEN/NOTIFY cannot be restricted per role).
    PGOPTIONS="-c client_min_messages=warning" "$PGBIN/psql" -X -q -v ON_ERROR_STOP=1 "host=$PIX_PGDIR port=$PIX_PGPORT dbname=$PIX_DBNAME user=postgres" \
        -c "CREATE EXTENSION IF NOT EXISTS pix" -c "ALTER EXTENSION pix UPDATE" \
        -c "DO \$\$ BEGIN IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'pix_http') THEN CREATE ROLE pix_http LOGIN IN ROLE pix_client; END IF; END \$\$" \
        -f scripts/restrict-connect.sql

    db="host=$PIX_PGDIR port=$PIX_PGPORT dbname=$PIX_DBNAME user=pix_http"
    admin_conninfo="host=$PIX_PGDIR port=$PIX_PGPORT dbname=$PIX_DBNAME user=postgres"
    say "database:  psql \"host=$PIX_PGDIR port=$PIX_PGPORT dbname=$PIX_DBNAME user=postgres\" (the server logs in as pix_http)"
fi
# ---- authentication (PIX_AUTH != none): certificates and tokens, registered as an operator would --
psql_pix() { PGOPTIONS="-c client_min_messages=warning" "$PGBIN/psql" -X -q -tA -v ON_ERROR_STOP=1 "$admin_conninfo" "$@"; }

# Registers certificate $2 for ISPB $1 (or as admin when $1 is "admin") unless it already is.
register_cert() {
    local who=$1 fp
    fp=$(./scripts/pki.sh fingerprint "$2")
    if [[ -n "$(psql_pix -c "SELECT 1 FROM pix_credential_list() WHERE fingerprint = '$fp' AND revoked_at IS NULL")" ]]; then
        return
    fi
    if [[ "$who" == admin ]]; then
        psql_pix -c "SELECT pix_admin_certificate_add('$fp', 'make run')" >/dev/null
    else
        psql_pix -c "SELECT pix_certificate_add('$who', '$fp', 'make run')" >/dev/null
    fi
}

# A token for ISPB $1 (or admin) in $PKI_DIR/$1.token; a new one each run (only its digest is stored,
# so an old file cannot be checked), the previous one revoked.
issue_token() {
    local who=$1 label="make run $1" token
    psql_pix -c "SELECT pix_credential_revoke(credential_id) FROM pix_credential_list() WHERE kind = 'token' AND label = '$label' AND revoked_at IS NULL" >/dev/null
    if [[ "$who" == admin ]]; then
        token=$(psql_pix -c "SELECT pix_admin_token_issue('$label')")
    else
        token=$(psql_pix -c "SELECT pix_token_issue('$who', '$label')")
    fi
    (umask 077 && printf '%s\n' "$token" >"$PKI_DIR/$who.token")
}

tls_args=()
scheme=http
if [[ "$PIX_AUTH" != none ]]; then
    scheme=https
    mkdir -p "$PKI_DIR"
    chmod 700 "$PKI_DIR"
    # certificates last 30 days: made again when missing or expiring within a day
    fresh() { [[ -f "$PKI_DIR/$1.crt" ]] && openssl x509 -in "$PKI_DIR/$1.crt" -noout -checkend 86400 >/dev/null; }
    fresh ca || { rm -f "$PKI_DIR"/*.crt "$PKI_DIR"/*.key; ./scripts/pki.sh ca "$PKI_DIR"; }
    fresh server || ./scripts/pki.sh server "$PKI_DIR"
    tls_args=(--auth "$PIX_AUTH" --tls-cert "$PKI_DIR/server.crt" --tls-key "$PKI_DIR/server.key")
    if [[ "$PIX_AUTH" == *mtls* ]]; then
        tls_args+=(--client-ca "$PKI_DIR/ca.crt")
        for who in $PIX_DEMO_ISPBS admin; do
            fresh "$who" || ./scripts/pki.sh client "$PKI_DIR" "$who"
            register_cert "$who" "$PKI_DIR/$who.crt"
        done
    fi
    if [[ "$PIX_AUTH" == *token* ]]; then
        for who in $PIX_DEMO_ISPBS admin; do issue_token "$who"; done
    fi
    first=${PIX_DEMO_ISPBS%% *}
    url="https://$PIX_LISTEN"
    say "authentication: $PIX_AUTH; CA, certificates and tokens in $PKI_DIR (demo ISPBs: $PIX_DEMO_ISPBS)"
    if [[ "$PIX_AUTH" == *mtls* ]]; then
        say "  curl --cacert $PKI_DIR/ca.crt --cert $PKI_DIR/admin.crt --key $PKI_DIR/admin.key -X POST $url/api/util/msgs/$first/3"
        say "  curl --cacert $PKI_DIR/ca.crt --cert $PKI_DIR/$first.crt --key $PKI_DIR/$first.key $url/api/pix/$first/stream/start"
    fi
    if [[ "$PIX_AUTH" == *token* ]]; then
        say "  curl --cacert $PKI_DIR/ca.crt -H \"Authorization: Bearer \$(cat $PKI_DIR/admin.token)\" -X POST $url/api/util/msgs/$first/3"
        say "  curl --cacert $PKI_DIR/ca.crt -H \"Authorization: Bearer \$(cat $PKI_DIR/$first.token)\" $url/api/pix/$first/stream/start"
    fi
fi
say "server:    $scheme://$PIX_LISTEN  (Ctrl-C stops the server and the cluster)"
# In a session of its own, so that Ctrl-C reaches this script only, which then sends pixd exactly
# one SIGTERM (a second signal makes pixd exit at once instead of gracefully).
setsid ./shim/pixd --listen "$PIX_LISTEN" --db "$db" "${tls_args[@]}" "$@" </dev/null &
pixd_pid=$!
set +e
wait "$pixd_pid"
rc=$?
set -e
pixd_pid=
say "server exited with status $rc"
exit "$rc"
