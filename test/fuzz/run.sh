#!/usr/bin/env bash
# test/fuzz/run.sh [SECONDS] — builds each libFuzzer harness of test/fuzz/ (clang, ASan + UBSan) and
# runs it for SECONDS (default 20) from its committed seed corpus test/fuzz/corpus/<name>/.
# New inputs found go to a scratch directory (the committed corpus is not modified); a crash leaves
# its reproducer in $PIX_FUZZ_OUT (default /tmp/pix-fuzz) as crash-<name>-*. Re-run one with
#   /tmp/pix-fuzz/<name> /tmp/pix-fuzz/crash-<name>-...
# Prints "N passed, N failed" (one per harness) and exits non-zero when any harness failed.
# PIX_FUZZ_ONLY="fuzz_accept fuzz_route" runs a subset.
set -uo pipefail

cd "$(dirname "$0")/../.."
SECONDS_EACH=${1:-20}
OUT=${PIX_FUZZ_OUT:-/tmp/pix-fuzz}
CC=${FUZZ_CC:-clang}
HARNESSES=${PIX_FUZZ_ONLY:-fuzz_message fuzz_cpf_cnpj fuzz_send_json fuzz_accept fuzz_route fuzz_bearer}
mkdir -p "$OUT"

FLAGS=(-g -O1 -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined
    -fno-omit-frame-pointer -Wall -Wno-unused-function -Itest/fuzz)
SHIM_FLAGS=(-std=gnu11 -DH2O_USE_LIBUV=0 -Ishim "-I$(pg_config --includedir)"
    $(pkg-config --cflags libh2o-evloop openssl))
SHIM_LIBS=($(pkg-config --libs libh2o-evloop openssl) "-L$(pg_config --libdir)" -lpq -lz -lm)

build() { # name
    case $1 in
    fuzz_message | fuzz_cpf_cnpj)
        $CC "${FLAGS[@]}" -Iextension -o "$OUT/$1" "test/fuzz/$1.c" extension/validate.c extension/render.c ;;
    fuzz_bearer)
        $CC "${FLAGS[@]}" -Ishim -o "$OUT/$1" test/fuzz/fuzz_bearer.c shim/bearer.c -lcrypto ;;
    fuzz_send_json)
        $CC "${FLAGS[@]}" -Iextension -o "$OUT/$1" test/fuzz/fuzz_send_json.c extension/send_json.c \
            extension/validate.c extension/render.c ;;
    fuzz_accept)
        $CC "${FLAGS[@]}" "${SHIM_FLAGS[@]}" -o "$OUT/$1" test/fuzz/fuzz_accept.c shim/accept.c "${SHIM_LIBS[@]}" ;;
    fuzz_route)
        # includes shim/router.c, shim/respond.c and shim/handlers/{stream,generate,send}.c itself, and links
        # the ground floor they stand on
        $CC "${FLAGS[@]}" "${SHIM_FLAGS[@]}" -Wno-unused-parameter -o "$OUT/$1" test/fuzz/fuzz_route.c shim/accept.c \
            shim/config.c shim/counters.c shim/log.c shim/pixd.c shim/auth.c shim/bearer.c shim/throttle.c shim/peers.c shim/credcache.c shim/quota.c \
            shim/tls.c "${SHIM_LIBS[@]}" ;;
    *) echo "unknown harness $1" >&2; return 1 ;;
    esac
}

pass=0
fail=0
for h in $HARNESSES; do
    echo "--- $h (${SECONDS_EACH}s)"
    if ! build "$h"; then
        echo "FAIL $h: does not build"
        fail=$((fail + 1))
        continue
    fi
    work="$OUT/corpus-$h"
    rm -rf "$work"
    mkdir -p "$work"
    dict=()
    [[ -f "test/fuzz/$h.dict" ]] && dict=("-dict=test/fuzz/$h.dict")
    # -rss_limit_mb and -timeout bound a single input; -max_total_time bounds the run.
    ASAN_OPTIONS=detect_leaks=1:abort_on_error=0 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
        timeout $((SECONDS_EACH + 60)) "$OUT/$h" "${dict[@]}" -max_total_time="$SECONDS_EACH" -timeout=10 \
        -rss_limit_mb=2048 -max_len=4096 -print_final_stats=1 -artifact_prefix="$OUT/crash-$h-" \
        "$work" "test/fuzz/corpus/$h" >"$OUT/$h.log" 2>&1
    rc=$?
    runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$OUT/$h.log" | tail -n1)
    cov=$(grep -oE 'cov: [0-9]+' "$OUT/$h.log" | tail -n1)
    if ((rc == 0)); then
        echo "ok   $h: ${runs:-?} executions, ${cov:-cov: ?}"
        pass=$((pass + 1))
    else
        echo "FAIL $h: exit $rc; log $OUT/$h.log"
        grep -E 'ERROR|SUMMARY|fuzz_|runtime error|Test unit written' "$OUT/$h.log" | head -n 20
        fail=$((fail + 1))
    fi
done
echo "$pass passed, $fail failed"
((fail == 0))
