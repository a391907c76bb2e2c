#!/bin/sh
# One-shot service of the compose profile "ha": once the formation has a primary and a secondary,
# tunes the monitor's failover timing (the values scripts/ha.sh uses, see docs/operations.md "High
# availability") and creates, on the primary, the pix extension and pixd's role pix_http (its password
# from the compose file's secrets service), and tokens for pixd-ha (in /credentials).
set -eu
PIX_HTTP_PASSWORD=${PIX_HTTP_PASSWORD:-$(cat /secrets/http/pix_http.password 2>/dev/null || true)}
: "${PIX_HTTP_PASSWORD:?set PIX_HTTP_PASSWORD or mount /secrets/http/pix_http.password}"
MON="host=monitor dbname=pg_auto_failover user=autoctl_node"
DB="host=node1,node2 dbname=pix user=postgres target_session_attrs=read-write connect_timeout=2"
i=0
until [ "$(psql -XtAc "SELECT count(*) FROM pgautofailover.node WHERE reportedstate IN ('primary','secondary') AND reportedstate = goalstate" "$MON" 2>/dev/null)" = 2 ]; do
    i=$((i + 1))
    [ "$i" -lt 300 ] || { echo "pgaf-setup: no primary + secondary after 10 minutes" >&2; exit 1; }
    sleep 2
done
psql -X -v ON_ERROR_STOP=1 "host=monitor dbname=pg_auto_failover user=postgres" <<SQL
ALTER SYSTEM SET pgautofailover.health_check_period = ${PIX_HA_HEALTH_CHECK_PERIOD:-1000};
ALTER SYSTEM SET pgautofailover.health_check_timeout = ${PIX_HA_HEALTH_CHECK_TIMEOUT:-1000};
ALTER SYSTEM SET pgautofailover.health_check_max_retries = ${PIX_HA_HEALTH_CHECK_MAX_RETRIES:-1};
ALTER SYSTEM SET pgautofailover.health_check_retry_delay = ${PIX_HA_HEALTH_CHECK_RETRY_DELAY:-500};
ALTER SYSTEM SET pgautofailover.node_considered_unhealthy_timeout = ${PIX_HA_UNHEALTHY_TIMEOUT:-4000};
ALTER SYSTEM SET pgautofailover.startup_grace_period = ${PIX_HA_STARTUP_GRACE_PERIOD:-4000};
ALTER SYSTEM SET pgautofailover.primary_demote_timeout = ${PIX_HA_PRIMARY_DEMOTE_TIMEOUT:-8000};
SELECT pg_reload_conf();
SQL
psql -X -v ON_ERROR_STOP=1 "$DB" <<SQL
CREATE EXTENSION IF NOT EXISTS pix;
DO \$\$ BEGIN
  IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'pix_http') THEN
    CREATE ROLE pix_http LOGIN PASSWORD '$PIX_HTTP_PASSWORD' IN ROLE pix_client;
  END IF;
END \$\$;
-- Only the project's roles connect (LISTEN/NOTIFY cannot be restricted per role): the statements of
-- scripts/restrict-connect.sql.
REVOKE CONNECT ON DATABASE pix FROM PUBLIC;
GRANT CONNECT ON DATABASE pix TO pix_client, pix_institution, pix_producer, pix_admin;
SQL
# pixd-ha serves with --auth token: a token for the demo ISPB and one for admin, issued once
if [ -d /credentials ] && [ ! -s /credentials/admin.token ]; then
    ispb=${PIX_DEMO_ISPB:-32074986}
    (umask 077 &&
        psql -XAtq -v ON_ERROR_STOP=1 "$DB" -c "SELECT pix_token_issue('$ispb', 'compose')" >"/credentials/$ispb.token" &&
        psql -XAtq -v ON_ERROR_STOP=1 "$DB" -c "SELECT pix_admin_token_issue('compose')" >/credentials/admin.token)
fi
echo "pgaf-setup: formation ready, pix installed on the primary"
