#!/bin/sh
# First start: initdb, allow password logins from the compose network, create database pix with the
# extension and the HTTP server's least-privilege role. Later starts reuse the volume as it is.
# PIX_ROUTER=1: a router of the sharded profile: database pix without the extension (scripts/shards.sh
# init, run by the router-init service, installs the router's functions). PIX_ADMIN_PASSWORD, when set,
# lets the superuser log in over the network (router-init needs it). Each password is the variable's,
# else the file the compose file's secrets service drew (/secrets/http/pix_http.password,
# /secrets/admin/postgres.password): no password is ever a default.
set -eu
BIN=/usr/lib/postgresql/15/bin
secret() { [ -r "$1" ] && cat "$1" || true; }
PIX_HTTP_PASSWORD=${PIX_HTTP_PASSWORD:-$(secret /secrets/http/pix_http.password)}
PIX_ADMIN_PASSWORD=${PIX_ADMIN_PASSWORD:-$(secret /secrets/admin/postgres.password)}
: "${PIX_HTTP_PASSWORD:?set PIX_HTTP_PASSWORD or mount /secrets/http/pix_http.password}"

# Authentication for the compose demo: a local CA in the volume /pki, the server's certificate (for
# the names pixd and localhost), and for the demo ISPB and for admin (the generator) a client
# certificate and a bearer token, registered in the database. Development only: the server key is
# readable by pixd's user (nobody) in a volume only the two containers mount; bring your own
# certificates (PIXD_TLS_CERT, PIXD_TLS_KEY, PIXD_CLIENT_CA) anywhere else.
make_credentials() {
    ispb=${PIX_DEMO_ISPB:-32074986}
    PKI_SERVER_NAMES=DNS:pixd pki.sh ca /pki
    PKI_SERVER_NAMES=DNS:pixd pki.sh server /pki
    chmod 0644 /pki/server.key
    for who in "$ispb" admin; do
        pki.sh client /pki "$who"
        fp=$(pki.sh fingerprint "/pki/$who.crt")
        if [ "$who" = admin ]; then
            sql="SELECT pix_admin_certificate_add('$fp', 'compose'); SELECT pix_admin_token_issue('compose')"
        else
            sql="SELECT pix_certificate_add('$who', '$fp', 'compose'); SELECT pix_token_issue('$who', 'compose')"
        fi
        (umask 077 && psql -X -q -tA -v ON_ERROR_STOP=1 -h /tmp -U postgres pix -c "$sql" | tail -n 1 >"/pki/$who.token")
    done
}

if [ ! -s "$PGDATA/PG_VERSION" ]; then
    "$BIN/initdb" -D "$PGDATA" -U postgres -E UTF8 --locale=C.UTF-8 --auth-local=peer --auth-host=scram-sha-256
    echo "host all all 0.0.0.0/0 scram-sha-256" >>"$PGDATA/pg_hba.conf"
    "$BIN/pg_ctl" -D "$PGDATA" -o "-c listen_addresses='' -c unix_socket_directories=/tmp" -w start
    psql -v ON_ERROR_STOP=1 -h /tmp -U postgres <<SQL
CREATE DATABASE pix;
\connect pix
$(if [ "${PIX_ROUTER:-0}" = 1 ]; then echo "CREATE ROLE pix_client NOLOGIN;"; else echo "CREATE EXTENSION pix;"; fi)
CREATE ROLE pix_http LOGIN PASSWORD '$PIX_HTTP_PASSWORD' IN ROLE pix_client;
$(if [ -n "${PIX_ADMIN_PASSWORD:-}" ]; then echo "ALTER ROLE postgres PASSWORD '$PIX_ADMIN_PASSWORD';"; fi)
-- Only the project's roles connect (LISTEN/NOTIFY cannot be restricted per role): the statements of
-- scripts/restrict-connect.sql.
REVOKE CONNECT ON DATABASE pix FROM PUBLIC;
GRANT CONNECT ON DATABASE pix TO pix_client;
$(if [ "${PIX_ROUTER:-0}" != 1 ]; then echo "GRANT CONNECT ON DATABASE pix TO pix_institution, pix_producer, pix_admin;"; fi)
SQL
    # A shard behind the router holds no credentials of its own: they are issued through the router
    # (router-init), which copies them to the shard that owns each ISPB.
    if [ "${PIX_ROUTER:-0}" != 1 ] && [ "${PIX_DEMO_CREDENTIALS:-1}" = 1 ]; then
        make_credentials
    fi
    "$BIN/pg_ctl" -D "$PGDATA" -m fast -w stop
fi
exec "$BIN/postgres" -D "$PGDATA" -c listen_addresses='*' -c unix_socket_directories=/tmp
