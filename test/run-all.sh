#!/usr/bin/env bash
# `make test`: every suite against a throw-away PostgreSQL cluster.
#   1. build (make) and install the extension (make install) and the test helpers (make
#      install-test-helpers); check that `make install DESTDIR=...` installs no test helper
#   2. pg_regress suites (sql/ + expected/), then isolation specs (specs/ + expected/)
#   3. unit tests: each test/unit/*.c and shim/tests/*.c is compiled into a program and run. It ends
#      its output with "N passed, N failed". It is linked with the .c file next to each header it includes with quotes
#      from shim/ or extension/ (x.h -> x.c), or with what a comment line "UNIT_SOURCES: a.c b.c" names;
#      "UNIT_CFLAGS: ..." adds compiler flags.
#   4. the end-to-end suite over HTTP (test/e2e/run.py) against the real shim/pixd; then "shards": the
#      exactly-once drain and test/e2e/test_sharding.py against routers with 4 shards (PIX_E2E_SHARDS=4;
#      `make test-sharded` runs the whole end-to-end suite so)
#   5. collect (test/collect/run.py): pix-collect into a second PostgreSQL, exactly once across kills,
#      credentials, --exec, bad input; then security (test/security), fuzzing (test/fuzz, PIX_FUZZ_SECONDS per harness), pixbench's
#      correctness check (bench/pixbench.sh check), the compose file (docker-compose config), and
#      ha: three pixd on this cluster (test/fault/multi_pixd.py --short) and a failover mid-drain on
#      a pg_auto_failover formation of its own (test/fault/failover.py --short)
# Ends with a line "N passed, N failed, N skipped" (individual tests) and a non-zero status when anything failed.
# Counting (docs/testing.md): a suite's own "N passed, N failed[, N skipped]" line is added up; a suite that exits
# non-zero without a failure counts one failure, and so does a selected suite that runs no test at all (nothing
# to run, a -k pattern that matches nothing); skipped tests are shown, never counted as passed.
#
# Environment: PIX_TEST_ONLY="regress isolation unit e2e shards collect security fuzz bench docker ha" (a subset), PIX_E2E_ARGS (passed to
# test/e2e/run.py, e.g. a test name pattern "-k Accept"), PIX_VALGRIND=1 (run every shim of the
# end-to-end suite under valgrind; slow), PIX_KEEP_TMP=1|0 (keep the temporary directory always|never;
# by default it is kept when something failed).
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$PWD
export PGBIN=${PGBIN:-/usr/lib/postgresql/15/bin}
PIX_TEST_ONLY=${PIX_TEST_ONLY:-regress isolation unit e2e shards collect security fuzz bench docker ha}
JOBS=$(nproc 2>/dev/null || echo 2)

say() { printf '\n=== %s\n' "$*"; }

TOTAL_PASS=0
TOTAL_FAIL=0
TOTAL_SKIP=0
SUMMARY=()
record() { # suite passed failed [skipped]
    local f=$3 s=${4:-0}
    if (($2 + f + s == 0)); then
        echo "$1: no test ran: counted as a failure"
        f=1
    fi
    TOTAL_PASS=$((TOTAL_PASS + $2))
    TOTAL_FAIL=$((TOTAL_FAIL + f))
    TOTAL_SKIP=$((TOTAL_SKIP + s))
    SUMMARY+=("$(printf '%-12s %4d passed, %4d failed, %4d skipped' "$1" "$2" "$f" "$s")")
}
wanted() { [[ " $PIX_TEST_ONLY " == *" $1 "* ]]; }

TMP=
PGDIR=
# shellcheck disable=SC2317  # invoked through trap
cleanup() {
    local rc=$?
    trap - EXIT INT TERM HUP
    if [[ -n "$TMP" ]]; then
        # Shims the end-to-end suite started and did not stop (it records their pids here).
        local f pid
        for f in "$TMP"/*/pixd.*; do
            [[ -e "$f" ]] || continue
            pid=${f##*.}
            if [[ "$pid" =~ ^[0-9]+$ ]] && kill -0 "$pid" 2>/dev/null; then
                kill -TERM "$pid" 2>/dev/null || true
                sleep 0.5
                kill -KILL "$pid" 2>/dev/null || true
            fi
        done
        # The failover test's pg_auto_failover formation, if it was interrupted.
        if [[ -f "$TMP/ha/formation/ports" ]]; then
            ./scripts/ha.sh stop "$TMP/ha/formation" 2>/dev/null || true
        fi
        # Every cluster under $TMP: ours and the ones the end-to-end suite made.
        local d
        for d in "$TMP" "$TMP"/*/ "$TMP"/*/*/ "$TMP"/*/*/*/; do
            [[ -f "$d/data/PG_VERSION" ]] || continue
            ./scripts/cluster.sh stop "${d%/}" 2>/dev/null || true
        done
        # Kept when something failed (the servers' logs are in $TMP/e2e), unless PIX_KEEP_TMP=0.
        if ! keep_tmp; then
            rm -rf "$TMP"
        fi
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
trap 'exit 129' HUP

keep_tmp() { [[ "${PIX_KEEP_TMP:-}" == 1 ]] || { ((TOTAL_FAIL > 0)) && [[ "${PIX_KEEP_TMP:-}" != 0 ]]; }; }

finish() {
    if [[ -n "$TMP" ]] && keep_tmp; then
        say "logs kept in $TMP (the cluster's postgres.log; every pixd's log in e2e/)"
    fi
    say "summary"
    local line
    for line in "${SUMMARY[@]}"; do
        echo "$line"
    done
    echo "$TOTAL_PASS passed, $TOTAL_FAIL failed, $TOTAL_SKIP skipped"
    if ((TOTAL_FAIL > 0)); then
        exit 1
    fi
    exit 0
}

# Count pg_regress result lines ("test x ... ok", "     x ... FAILED", "... failed (ignored)").
count_regress() { # output-file suite make-status
    local out=$1 suite=$2 status=$3 ok bad
    ok=$(grep -cE '\.\.\. ok( |$)' "$out" || true)
    bad=$(grep -cE '\.\.\. (FAILED|failed)' "$out" || true)
    if ((status != 0 && bad == 0)); then
        bad=1 # pg_regress itself failed (could not connect, CREATE EXTENSION failed, ...)
    fi
    record "$suite" "$ok" "$bad"
}

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

./scripts/deps.sh --test

say "build"
if ! make -j"$JOBS"; then
    record build 0 1
    finish
fi
# The product, then the test-only extensions the isolation specs load (never part of `make install`).
if ((EUID == 0)); then
    make install install-test-helpers >/dev/null
else
    sudo make install install-test-helpers >/dev/null
fi

TMP=$(mktemp -d /tmp/pix-test.XXXXXX)
chmod 0755 "$TMP"
mkdir -p "$TMP/e2e" "$TMP/shards"
PGDIR=$TMP/pg
PGPORT_TEST=$(free_port)
say "throw-away cluster in $PGDIR, port $PGPORT_TEST"
if ! ./scripts/cluster.sh start "$PGDIR" "$PGPORT_TEST" >/dev/null; then
    record cluster 0 1
    finish
fi
export PGHOST=$PGDIR PGPORT=$PGPORT_TEST PGUSER=postgres

# ---- install: what `make install` puts on a server is the product only --------------------------
# Counted as one test: the extension's files and the two programs are there, and no file of a test helper (pix_isolation,
# whose t.reset() empties every pix table) is.
if wanted regress; then
    say "install (make install DESTDIR=...: the extension, no test helper)"
    dest=$TMP/install
    if make install DESTDIR="$dest" >"$TMP/install.out" 2>&1 &&
        [[ -f "$dest$("${PG_CONFIG:-pg_config}" --sharedir)/extension/pix.control" ]] &&
        [[ -x "$dest/usr/local/bin/pixd" && -x "$dest/usr/local/bin/pix-collect" ]]; then
        helpers=$(find "$dest" -name 'pix_isolation*')
        if [[ -z "$helpers" ]]; then
            echo "ok: no test helper installed"
            record install 1 0
        else
            echo "FAILED: make install installed test helpers:"$'\n'"$helpers"
            record install 0 1
        fi
    else
        cat "$TMP/install.out"
        echo "FAILED: make install DESTDIR=$dest did not install the extension, pixd and pix-collect"
        record install 0 1
    fi
    rm -rf "$dest"
fi

# ---- pg_regress and isolation: one make installcheck each, so one failing does not hide the other --
pg_suite() { # name pattern directory-of-diffs make-variable-to-empty
    local name=$1 pattern=$2 diffs=$3/regression.diffs empty=$4 status
    if ! compgen -G "$pattern" >/dev/null; then
        say "$name: no $pattern: a selected suite with no test fails"
        record "$name" 0 1
        return
    fi
    say "$name ($pattern)"
    rm -f "$diffs"
    set +e
    make installcheck "$empty=" PGHOST="$PGHOST" PGPORT="$PGPORT" PGUSER=postgres 2>&1 |
        tee "$TMP/$name.out"
    status=${PIPESTATUS[0]}
    set -e
    count_regress "$TMP/$name.out" "$name" "$status"
    if ((status != 0)) && [[ -f "$diffs" ]]; then
        say "$diffs"
        cat "$diffs"
    fi
}
if wanted regress; then pg_suite regress 'sql/*.sql' . ISOLATION; fi
if wanted isolation; then pg_suite isolation 'specs/*.spec' output_iso REGRESS; fi

# ---- unit tests -------------------------------------------------------------------------------
if wanted unit; then
    unit_srcs=()
    for src in test/unit/*.c shim/tests/*.c; do
        [[ -f "$src" ]] && unit_srcs+=("$src")
    done
    if ((${#unit_srcs[@]} > 0)); then
        say "unit tests (test/unit/, shim/tests/)"
        mkdir -p "$TMP/unit"
        read -r -a pc_cflags <<<"$(pkg-config --cflags libh2o-evloop openssl)"
        read -r -a pc_libs <<<"$(pkg-config --libs libh2o-evloop openssl)"
        base_cflags=(-std=gnu11 -O1 -g -Wall -Wextra -Wno-unused-parameter -Wno-sign-compare
            -Wno-missing-field-initializers -DH2O_USE_LIBUV=0 -I. -Ishim -Iextension
            "-I$(pg_config --includedir)" "${pc_cflags[@]}")
        base_libs=("${pc_libs[@]}" "-L$(pg_config --libdir)" -lpq -lz -lm)
        u_pass=0
        u_fail=0
        for src in "${unit_srcs[@]}"; do
            name=$(basename "$src" .c)
            if grep -q 'UNIT_SOURCES:' "$src"; then
                read -r -a extra_src <<<"$(sed -n 's/.*UNIT_SOURCES:[[:space:]]*\([^*]*\).*/\1/p' "$src" | head -n1)"
            else
                # By default: the .c next to each quoted include found in shim/ or extension/.
                extra_src=()
                while read -r hdr; do
                    for dir in shim extension; do
                        if [[ -f "$dir/$hdr" && -f "$dir/${hdr%.h}.c" ]]; then
                            extra_src+=("$dir/${hdr%.h}.c")
                            break
                        fi
                    done
                done < <(sed -n 's/^[[:space:]]*#[[:space:]]*include[[:space:]]*"\([^"]*\.h\)".*/\1/p' "$src")
            fi
            read -r -a extra_cflags <<<"$(sed -n 's/.*UNIT_CFLAGS:[[:space:]]*\([^*]*\).*/\1/p' "$src" | head -n1)"
            echo "--- $name"
            if ! gcc "${base_cflags[@]}" "${extra_cflags[@]}" -o "$TMP/unit/$name" "$src" "${extra_src[@]}" \
                "${base_libs[@]}"; then
                echo "$name: does not compile"
                u_fail=$((u_fail + 1))
                continue
            fi
            set +e
            timeout 120 "$TMP/unit/$name" 2>&1 | tee "$TMP/unit/$name.out"
            status=${PIPESTATUS[0]}
            set -e
            line=$(grep -E '^[0-9]+ passed, [0-9]+ failed' "$TMP/unit/$name.out" | tail -n1 || true)
            if [[ -n "$line" ]]; then
                read -r p _ f _ <<<"$line"
                u_pass=$((u_pass + p))
                u_fail=$((u_fail + f))
                if ((status != 0 && f == 0)); then
                    echo "$name: exit status $status"
                    u_fail=$((u_fail + 1))
                fi
            elif ((status == 0)); then
                u_pass=$((u_pass + 1))
            else
                echo "$name: exit status $status"
                u_fail=$((u_fail + 1))
            fi
        done
        record unit "$u_pass" "$u_fail"
    else
        say "unit tests: no test/unit/*.c or shim/tests/*.c: a selected suite with no test fails"
        record unit 0 1
    fi
fi

# The last "N passed, N failed[, N skipped]" line of a suite's output; a non-zero status without failures
# counts one.
record_summary() { # name output-file status
    local line p f s
    line=$(grep -E '^[0-9]+ passed, [0-9]+ failed' "$2" | tail -n1 || true)
    if [[ -n "$line" ]]; then
        read -r p _ f _ <<<"$line"
        f=${f%,}
        s=$(sed -nE 's/^[0-9]+ passed, [0-9]+ failed, ([0-9]+) skipped.*/\1/p' <<<"$line")
        if (($3 != 0 && f == 0)); then
            f=1
        fi
        record "$1" "$p" "$f" "${s:-0}"
    else
        echo "$1 ended without a summary (status $3)"
        record "$1" 0 1
    fi
}

# ---- end to end -------------------------------------------------------------------------------
# e2e_suite NAME SHARDS ARGS...: test/e2e/run.py against the throw-away cluster (SHARDS > 0: every database
# it makes is a router in front of that many shard databases).
e2e_suite() {
    local name=$1 shards=$2 status
    shift 2
    say "$name (test/e2e/${shards:+, $shards shards}) against shim/pixd"
    if [[ ! -x shim/pixd ]]; then
        echo "shim/pixd was not built"
        record "$name" 0 1
        return
    fi
    export PIX_PG="host=$PGDIR port=$PGPORT_TEST user=postgres"
    export PIX_PIXD=$ROOT/shim/pixd
    export PIX_E2E_TMP=$TMP/$name
    mkdir -p "$PIX_E2E_TMP"
    if [[ "${PIX_VALGRIND:-}" == 1 ]]; then
        command -v valgrind >/dev/null || { echo "PIX_VALGRIND=1 needs valgrind (apt-get install valgrind)"; exit 1; }
        export PIX_PIXD_WRAPPER="valgrind -q --error-exitcode=99 --leak-check=full --errors-for-leak-kinds=definite,indirect --show-leak-kinds=definite,indirect"
    fi
    set +e
    PIX_E2E_SHARDS=$shards timeout 900 python3 test/e2e/run.py "$@" 2>&1 | tee "$TMP/$name.out"
    status=${PIPESTATUS[0]}
    set -e
    record_summary "$name" "$TMP/$name.out" "$status"
}
if wanted e2e; then
    read -r -a e2e_args <<<"${PIX_E2E_ARGS:-}"
    e2e_suite e2e "${PIX_E2E_SHARDS:-}" "${e2e_args[@]}"
fi
# The short sharded form: the exactly-once drain and the sharding tests (make test-sharded: everything).
if wanted shards; then e2e_suite shards 4 -k test_drain_while_producing -k TestSharded; fi

# ---- suites with a runner of their own: each ends with "N passed, N failed" --------------------
# security: least-privilege role, id entropy, limits, configuration (test/security, ~40 s)
# fuzz: every libFuzzer harness for PIX_FUZZ_SECONDS (10) seconds with its committed corpus
# bench: pixbench's short drain, wake and expiry runs as a correctness check (verdicts, no timing)
# docker: the compose file is accepted by docker-compose
run_suite() { # name command...
    local name=$1 out="$TMP/$1.out" status
    shift
    say "$name: $*"
    set +e
    if declare -F "$1" >/dev/null; then
        "$@" 2>&1 | tee "$out"
    else
        timeout 900 "$@" 2>&1 | tee "$out"
    fi
    status=${PIPESTATUS[0]}
    set -e
    record_summary "$name" "$out" "$status"
}
docker_check() {
    if docker-compose -f docker/compose.yaml config >/dev/null &&
        docker-compose -f docker/compose.yaml --profile ha config >/dev/null &&
        docker-compose -f docker/compose.yaml --profile sharded config >/dev/null &&
        docker-compose -f docker/compose.yaml --profile collect config >/dev/null; then
        echo "1 passed, 0 failed, 0 skipped"
    else
        echo "0 passed, 1 failed, 0 skipped"
        return 1
    fi
}
# ---- pix-collect: exactly once into a second PostgreSQL across kills, credentials, --exec, bad input ----
if wanted collect; then
    mkdir -p "$TMP/collect"
    run_suite collect env PIX_PG="host=$PGDIR port=$PGPORT_TEST user=postgres" PIX_E2E_TMP="$TMP/collect" \
        PIX_PIXD="$ROOT/shim/pixd" PIX_COLLECT="$ROOT/collect/pix-collect" python3 test/collect/run.py
fi

if wanted security; then run_suite security test/security/run.sh; fi
if wanted fuzz; then run_suite fuzz test/fuzz/run.sh "${PIX_FUZZ_SECONDS:-10}"; fi
if wanted bench; then run_suite bench bench/pixbench.sh check --no-install; fi
# Several pixd on this cluster, then the primary of a formation of its own killed mid-drain (about
# 2 minutes together). Each prints "N passed, N failed"; this adds them up.
ha_check() {
    local p=0 f=0 s=0 out line a b c status
    mkdir -p "$TMP/ha"
    for args in "multi_pixd.py --short" "failover.py --short --port 0 --dir $TMP/ha/formation"; do
        out="$TMP/ha/$(echo "$args" | cut -d' ' -f1).out"
        set +e
        # shellcheck disable=SC2086  # args is a word list
        PIX_FAULT_LOGDIR=$TMP/ha PIX_FAULT_HTTP_PORT=$(free_port) PIX_PG="host=$PGDIR port=$PGPORT_TEST user=postgres" \
            timeout 600 python3 test/fault/$args 2>&1 | tee "$out"
        status=${PIPESTATUS[0]}
        set -e
        line=$(grep -E '^[0-9]+ passed, [0-9]+ failed(, [0-9]+ skipped)?$' "$out" | tail -n1 || true)
        if [[ -z "$line" ]]; then
            echo "test/fault/$args ended without a summary (status $status)"
            f=$((f + 1))
            continue
        fi
        c=0
        read -r a _ b _ c _ <<<"$line"
        b=${b%,}
        p=$((p + a))
        f=$((f + b))
        s=$((s + ${c:-0}))
        if ((status != 0 && b == 0)); then f=$((f + 1)); fi
    done
    echo "$p passed, $f failed, $s skipped"
    ((f == 0))
}
if wanted docker; then run_suite docker docker_check; fi
if wanted ha; then run_suite ha ha_check; fi

finish
