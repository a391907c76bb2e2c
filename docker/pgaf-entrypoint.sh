#!/bin/sh
# One pg_auto_failover service per container (compose profile "ha"): PGAF_ROLE=monitor or node.
# First start: `pg_autoctl create` (the monitor, or a node that registers with it: the first node
# becomes the primary, the next one its synchronous standby), the failover timing, then `pg_autoctl
# run`. Later starts reuse the volume as it is. Nodes trust only the compose network's addresses for
# replication and the monitor; pixd logs in with the password of pix_http (docker/pgaf-setup.sh).
set -eu
: "${PGAF_ROLE:?monitor or node}"
: "${PGAF_HOSTNAME:?this container's name on the compose network}"
export PGDATA=/var/lib/postgresql/data/pgaf
export XDG_CONFIG_HOME=/var/lib/postgresql/data/xdg/config XDG_DATA_HOME=/var/lib/postgresql/data/xdg/data
export PG_CONFIG=/usr/lib/postgresql/15/bin/pg_config PATH=/usr/lib/postgresql/15/bin:$PATH

if [ ! -s "$PGDATA/PG_VERSION" ] || [ ! -d "$XDG_CONFIG_HOME/pg_autoctl" ]; then
    if [ "$PGAF_ROLE" = monitor ]; then
        pg_autoctl create monitor --pgdata "$PGDATA" --pgport 5432 --hostname "$PGAF_HOSTNAME" \
            --auth trust --no-ssl
    else
        pg_autoctl create postgres --pgdata "$PGDATA" --pgport 5432 --hostname "$PGAF_HOSTNAME" \
            --name "$PGAF_HOSTNAME" --dbname pix --auth trust --no-ssl --pg-hba-lan \
            --monitor "postgres://autoctl_node@${PGAF_MONITOR:-monitor}:5432/pg_auto_failover?sslmode=disable"
        pg_autoctl config set --pgdata "$PGDATA" timeout.network_partition_timeout "${PIX_HA_NETWORK_PARTITION_TIMEOUT:-5}"
        pg_autoctl config set --pgdata "$PGDATA" timeout.prepare_promotion_walreceiver "${PIX_HA_PROMOTION_WALRECEIVER:-2}"
    fi
fi
exec pg_autoctl run --pgdata "$PGDATA"
