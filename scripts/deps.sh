#!/usr/bin/env bash
# Install the Debian 12 packages pix stream needs to build and run; with --test, also what the test
# suites need (clang and its fuzzer runtime, docker-compose to check the compose file, gnuplot-nox for
# the benchmarks' charts, prometheus for promtool, which checks /metrics strictly). Idempotent and
# quiet when everything is already there. Works as root; uses sudo otherwise. libcurl4-openssl-dev
# builds pix-collect (collect/). openssl (the CLI) makes the local CA of `PIX_AUTH=mtls make run` and
# of the TLS tests (scripts/pki.sh).
set -euo pipefail

PACKAGES=(
    postgresql-15 postgresql-server-dev-15 postgresql-client-15 libpq-dev postgresql-15-plproxy
    libh2o-evloop-dev libssl-dev zlib1g-dev libcurl4-openssl-dev pkg-config make gcc
    python3 curl libipc-run-perl wrk openssl
    postgresql-15-auto-failover pg-auto-failover-cli
)
if [[ "${1:-}" == --test ]]; then
    PACKAGES+=(clang libclang-rt-14-dev docker-compose iproute2 procps gnuplot-nox prometheus)
fi

missing=()
for pkg in "${PACKAGES[@]}"; do
    status=$(dpkg-query -W -f='${db:Status-Status}' "$pkg" 2>/dev/null || true)
    if [[ "$status" != "installed" ]]; then
        missing+=("$pkg")
    fi
done

if ((${#missing[@]} == 0)); then
    exit 0
fi

if ((EUID == 0)); then
    SUDO=()
elif command -v sudo >/dev/null 2>&1; then
    SUDO=(sudo)
else
    echo "deps.sh: missing packages (${missing[*]}) and neither root nor sudo is available" >&2
    exit 1
fi

echo "deps.sh: installing ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
"${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -q
"${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"
echo "deps.sh: done" >&2
