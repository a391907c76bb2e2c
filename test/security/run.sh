#!/usr/bin/env bash
# test/security/run.sh [test ...] — the security tests (test/security/security.py) against a private
# cluster (PIX_SEC_PGDIR, default /tmp/pgF2; port PIX_SEC_PGPORT, default 5595) and pixd on 127.0.0.1
# port PIX_SEC_HTTP_PORT (default 3595, and the next one) logged in as the least-privilege role
# pix_http, using a frozen copy of the installed extension and of shim/pixd (test/fault/snapshot.sh,
# which honours PG_CONFIG). About 30 s. Ends with "N passed, N failed"; non-zero exit on a failure.
set -uo pipefail
cd "$(dirname "$0")/../.."
export PIX_SEC_PGDIR=${PIX_SEC_PGDIR:-/tmp/pgF2}
SNAP=$PIX_SEC_PGDIR-inst
BIN=$(test/fault/snapshot.sh "$SNAP") || { echo "snapshot failed"; echo "0 passed, 1 failed"; exit 1; }
export PGBIN=$BIN PIX_PIXD=$SNAP/pixd PIX_FAULT_LOGDIR=${PIX_FAULT_LOGDIR:-$PIX_SEC_PGDIR-logs}
scripts/cluster.sh stop "$PIX_SEC_PGDIR" >/dev/null 2>&1 || true
rm -rf "$PIX_SEC_PGDIR"
timeout 300 python3 test/security/security.py "$@"
