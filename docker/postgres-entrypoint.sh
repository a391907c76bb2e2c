#!/bin/sh
# First start: initdb, allow password logins from the compose network, create database pix with the
# extension and the HTTP server's least-privilege role. Later starts reuse the volume as it is.
# PIX_ROUTER=1: a router of the sharded profile: database pix without the extension (scripts/shards.sh
# init, run by the router-init service, installs the router's functions). PIX_ADMIN_PASSWORD, when set,
# lets the superuser log in over the network (router-init needs it).
set -eu
BIN=/usr/lib/postgresql/15/bin
: "${PIX_HTTP_PASSWORD:?set PIX_HTTP_PASSWORD}"

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
SQL
    "$BIN/pg_ctl" -D "$PGDATA" -m fast -w stop
fi
exec "$BIN/postgres" -D "$PGDATA" -c listen_addresses='*' -c unix_socket_directories=/tmp
