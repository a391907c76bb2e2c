#!/usr/bin/env bash
# test/security/run.sh [test ...] — the security tests (test/security/security.py) against a private
# cluster (/tmp/pgF2, port 5595) and pixd on 127.0.0.1:3595 logged in as the least-privilege role
# pix_http, using a frozen copy of the installed extension and of shim/pixd (test/fault/snapshot.sh).
# About 30 s. Ends with "N passed, N failed"; non-zero exit on a failure.
set -uo pipefail
cd "$(dirname "$0")/../.."
SNAP=/tmp/pgF-inst-sec
BIN=$(test/fault/snapshot.sh "$SNAP") || { echo "snapshot failed"; echo "0 passed, 1 failed"; exit 1; }
export PGBIN=$BIN PIX_PIXD=$SNAP/pixd PIX_FAULT_LOGDIR=/tmp/pgF-logs
scripts/cluster.sh stop /tmp/pgF2 >/dev/null 2>&1 || true
rm -rf /tmp/pgF2
timeout 300 python3 test/security/security.py "$@"
