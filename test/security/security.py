#!/usr/bin/env python3
"""Security tests of pix stream (run by test/security/run.sh).

A private cluster in /tmp/pgF2 (port 5595, unix socket only) and pixd on 127.0.0.1:3595 (3596 for a second
one); PIX_SEC_PGDIR, PIX_SEC_PGPORT and PIX_SEC_HTTP_PORT (and the port after it) override them. pixd connects as
the least-privilege login role `pix_http` (member of the extension's `pix_client`). Each test prints
"ok"/"FAIL" lines; the end is "N passed, N failed".

  least_privilege      the shim logged in as pix_http serves every route; pix_http cannot SELECT,
                       INSERT, UPDATE, DELETE or TRUNCATE any pix.* table, cannot create objects where
                       its unqualified calls would resolve, and a role outside pix_client cannot execute
                       the functions; every function is SECURITY DEFINER with a fixed search_path;
                       exactly pix.max_collectors (set to 4 here) streams open per ISPB, then 429
  id_entropy           the source of ids (pg_strong_random, OpenSSL build) is shown; 10 000 ids have the
                       documented shape, no duplicate, flat per-position frequencies and independent
                       adjacent positions (chi-square), and a measured entropy (min-entropy and Shannon,
                       summed over positions) of at least 60 bits
  other_ispb_id        an id used under another ISPB answers 404 with the body of an unknown id
                       (and of a malformed one), for GET and DELETE; the stream is unharmed
  no_sql_from_request  grep: the shim sends SQL only as prepared statements from a table of literals
                       (or literal text with parameters),
                       with request data as parameters; no SQL text is ever formatted
  request_limits       oversized URI, header, header count, body: 4xx, never 5xx; server alive
  hostile_load         hundreds of anonymous clients (body holders, slowloris, a connection flood from one
                       address, a /health flood, bogus tokens) against pixd over TLS while authenticated
                       collectors of two institutions drain: no 503 for them, RSS under its budget, a
                       bounded number of queries from the crowd (hostile.py; its own pixd on a free port)
  bad_configuration    bad --listen / --pool / --wait-ms / --db and a taken port refuse to start
                       (non-zero exit, quickly); an unreachable database is NOT a start failure: the
                       server starts and answers 503 + Retry-After
  database_door        after scripts/restrict-connect.sql (what make run, shards, HA and docker run), a
                       login outside the project's roles cannot connect, so cannot LISTEN or NOTIFY
                       pix_message (PostgreSQL cannot restrict those per role); pix_http, a member of
                       pix_institution and pixd's own connections keep working
"""

import collections
import json
import math
import os
import re
import socket
import subprocess
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "fault"))
import faultlib as fl  # noqa: E402

ROOT = fl.ROOT
PGDIR = os.environ.get("PIX_SEC_PGDIR", "/tmp/pgF2")
PGPORT = int(os.environ.get("PIX_SEC_PGPORT", "5595"))
HTTP_PORT = int(os.environ.get("PIX_SEC_HTTP_PORT", "3595"))
MAX_COLLECTORS = 4  # not the default (6): the limit test must see the configured value
SPARE_PORT = HTTP_PORT + 1  # a second pixd (bad configurations, unreachable database)
DB = "pix_sec"
ALPHABET = "0123456789abcdefghjkmnpqrstvwxyz"
ID_RE = re.compile(r"[0-9a-hjkmnp-tv-z]{20}")

results = []


def check(name, cond, detail=""):
    results.append((name, bool(cond)))
    print(f"{'ok  ' if cond else 'FAIL'} {name}{(': ' + detail) if detail else ''}", flush=True)
    return cond


def psql(sql, user="postgres", dbname=DB, check_rc=True):
    out = subprocess.run([fl.PSQL, "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1",
                          f"host={PGDIR} port={PGPORT} user={user} dbname={dbname}", "-c", sql],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=120)
    if check_rc and out.returncode != 0:
        raise RuntimeError(f"psql: {out.stderr.strip()} ({sql[:200]})")
    return out


def http(method, path, headers=None, port=HTTP_PORT):
    return fl.http_get(port, path, headers=headers, method=method, timeout=15)


def setup():
    fl.cluster_start(PGDIR, PGPORT)
    psql(f"DROP DATABASE IF EXISTS {DB} WITH (FORCE)", dbname="postgres")
    psql(f"CREATE DATABASE {DB}", dbname="postgres")
    psql("CREATE EXTENSION pix")
    psql("DO $$ BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'pix_http') THEN "
         "CREATE ROLE pix_http LOGIN IN ROLE pix_client; END IF; "
         "IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'pix_outsider') THEN "
         "CREATE ROLE pix_outsider LOGIN; END IF; END $$")
    psql(f"ALTER DATABASE {DB} SET pix.stream_idle_timeout = '30s'")
    psql(f"ALTER DATABASE {DB} SET pix.max_collectors = {MAX_COLLECTORS}")
    pixd = fl.Pixd(f"host={PGDIR} port={PGPORT} user=pix_http dbname={DB}", port=HTTP_PORT,
                   name="pixd-security").start()
    return pixd


# ---------------------------------------------------------------------------------------------


def test_least_privilege(pixd):
    ispb = "41000001"
    st, _, body = http("POST", f"/api/util/msgs/{ispb}/12")
    check("pix_http: POST /api/util/msgs -> 201", st == 201, f"{st} {body[:100]!r}")
    st, h, body = http("GET", f"/api/pix/{ispb}/stream/start", {"Accept": "multipart/json"})
    check("pix_http: stream/start -> 200 with a batch", st == 200 and body.startswith(b"["), f"{st}")
    pn = h.get("pull-next", "")
    st2, h2, body2 = http("GET", pn, {"Accept": "multipart/json"})
    check("pix_http: Pull-Next -> 200 (confirms the first batch)", st2 == 200, f"{st2}")
    st3, h3, _ = http("GET", pn, {"Accept": "multipart/json"})
    check("pix_http: retry of the previous id replays the same Pull-Next", st3 == 200 and
          h3.get("pull-next") == h2.get("pull-next"), f"{st3}")
    st4, _, body4 = http("DELETE", h2["pull-next"])
    check("pix_http: DELETE -> 200 {}", st4 == 200 and body4.strip() == b"{}", f"{st4} {body4!r}")
    st5, _, _ = http("GET", h2["pull-next"])
    check("pix_http: a closed stream -> 410", st5 == 410, f"{st5}")
    for path in ("/health", "/metrics", "/openapi.json"):
        st, _, _ = http("GET", path)
        check(f"pix_http: GET {path} -> 200", st == 200, f"{st}")
    test_collector_limit()

    tables = [t for t in psql("SELECT tablename FROM pg_tables WHERE schemaname = 'pix' ORDER BY 1").stdout.split()]
    check("the extension has tables in schema pix", len(tables) >= 4, f"{tables}")
    for t in tables:
        for verb, sql in (("SELECT", f"SELECT * FROM pix.{t} LIMIT 1"),
                          ("INSERT", f"INSERT INTO pix.{t} DEFAULT VALUES"),
                          ("UPDATE", f"UPDATE pix.{t} SET {first_column(t)} = {first_column(t)}"),
                          ("DELETE", f"DELETE FROM pix.{t}"),
                          ("TRUNCATE", f"TRUNCATE pix.{t}")):
            out = psql(sql, user="pix_http", check_rc=False)
            check(f"pix_http cannot {verb} pix.{t}", out.returncode != 0 and "permission denied" in out.stderr,
                  out.stderr.strip()[:100])
    for v in psql("SELECT viewname FROM pg_views WHERE schemaname = 'pix'").stdout.split():
        out = psql(f"SELECT * FROM pix.{v} LIMIT 1", user="pix_http", check_rc=False)
        check(f"pix_http cannot SELECT the view pix.{v}", out.returncode != 0 and "permission denied" in out.stderr,
              out.stderr.strip()[:100])
    # Unqualified calls (the shim's statements say pix_stream_start(...)) must not be hijackable.
    out = psql(f"SELECT has_database_privilege('pix_http', '{DB}', 'CREATE'), "
               "has_schema_privilege('pix_http', 'public', 'CREATE'), "
               "(SELECT count(*) FROM pg_namespace WHERE nspname = 'pix_http')").stdout.strip()
    check("pix_http can create no schema and nothing in public (no function shadowing)", out == "f|f|0", out)
    # A login role outside pix_client can do nothing.
    out = psql("SELECT * FROM pix_stream_start('41000002', 1)", user="pix_outsider", check_rc=False)
    check("a role outside pix_client cannot execute pix_stream_start", "permission denied" in out.stderr,
          out.stderr.strip()[:100])
    out = psql("SELECT pix_generate_messages('41000002', 1)", user="pix_outsider", check_rc=False)
    check("a role outside pix_client cannot execute pix_generate_messages", "permission denied" in out.stderr,
          out.stderr.strip()[:100])
    bad = psql("""SELECT p.proname FROM pg_proc p JOIN pg_depend d ON d.objid = p.oid AND d.deptype = 'e'
                  JOIN pg_extension e ON e.oid = d.refobjid AND e.extname = 'pix'
                  WHERE p.prorettype <> 'trigger'::regtype
                    AND (NOT p.prosecdef OR NOT EXISTS (SELECT 1 FROM unnest(p.proconfig) c
                                                        WHERE c LIKE 'search_path=%'))""").stdout.split()
    check("every pix function is SECURITY DEFINER with a fixed search_path", not bad, f"{bad}")
    granted = psql("""SELECT string_agg(DISTINCT p.proname, ',') FROM pg_proc p
                      JOIN pg_depend d ON d.objid = p.oid AND d.deptype = 'e'
                      JOIN pg_extension e ON e.oid = d.refobjid AND e.extname = 'pix'
                      WHERE has_function_privilege('public', p.oid, 'EXECUTE')
                        AND p.prorettype <> 'trigger'::regtype""").stdout.strip()
    check("PUBLIC can execute no pix function (trigger functions aside: they cannot be called)",
          granted == "", granted)


def test_collector_limit():
    """Exactly the configured limit of open streams per ISPB (MAX_COLLECTORS, set on the database
    at setup so that a hard-coded 6 would not pass): that many starts open, the next is 429 with
    Retry-After, and a DELETE frees exactly one slot."""
    limit = int(psql("LOAD 'pix'; SHOW pix.max_collectors").stdout.strip())
    check(f"the database's pix.max_collectors is the configured {MAX_COLLECTORS}", limit == MAX_COLLECTORS, f"{limit}")
    ispb = "41000005"
    http("POST", f"/api/util/msgs/{ispb}/{limit + 2}")
    answers = [http("GET", f"/api/pix/{ispb}/stream/start") for _ in range(limit + 1)]
    codes = [st for st, _, _ in answers]
    check(f"pix_http: {limit} starts open a stream each, start {limit + 1} -> 429", codes == [200] * limit + [429],
          f"{codes}")
    check("the 429 carries Retry-After", "retry-after" in answers[-1][1], f"{answers[-1][1]}")
    st, _, _ = http("DELETE", answers[0][1].get("pull-next", "/"))
    again = [http("GET", f"/api/pix/{ispb}/stream/start")[0] for _ in range(2)]
    check("a DELETE frees exactly one slot: the next start opens, the one after is 429",
          st == 200 and again == [200, 429], f"DELETE {st}, then {again}")


def first_column(table):
    return psql(f"SELECT attname FROM pg_attribute WHERE attrelid = 'pix.{table}'::regclass AND attnum > 0 "
                "AND NOT attisdropped ORDER BY attnum LIMIT 1").stdout.strip()


def chi2_limit(df, z):
    """The chi-square value exceeded with the normal tail probability of z (Wilson-Hilferty)."""
    k = 2.0 / (9.0 * df)
    return df * (1.0 - k + z * math.sqrt(k)) ** 3


def measure_ids(ids):
    """What a sample of ids shows about their randomness, measured (nothing assumed): per position
    the empirical Shannon entropy (Miller-Madow corrected) and min-entropy (-log2 of the most
    frequent character's share, biased low: conservative), summed over positions; the largest
    per-position chi-square against a flat distribution; and the largest chi-square of
    independence between adjacent positions."""
    n, width = len(ids), len(ids[0])
    shannon = min_entropy = worst_flat = worst_pair = 0.0
    for pos in range(width):
        cnt = collections.Counter(i[pos] for i in ids)
        h = -sum(c / n * math.log2(c / n) for c in cnt.values()) + (len(cnt) - 1) / (2 * n * math.log(2))
        shannon += min(h, 5.0)
        min_entropy += -math.log2(max(cnt.values()) / n)
        e = n / 32
        worst_flat = max(worst_flat, sum((cnt.get(c, 0) - e) ** 2 / e for c in ALPHABET))
    for pos in range(width - 1):
        joint = collections.Counter((i[pos], i[pos + 1]) for i in ids)
        a = collections.Counter(i[pos] for i in ids)
        b = collections.Counter(i[pos + 1] for i in ids)
        chi = 0.0
        for x in ALPHABET:
            for y in ALPHABET:
                e = a.get(x, 0) * b.get(y, 0) / n
                if e > 0:
                    chi += (joint.get((x, y), 0) - e) ** 2 / e
                elif joint.get((x, y), 0):
                    chi = float("inf")
        worst_pair = max(worst_pair, chi)
    return {"n": n, "distinct": len(set(ids)), "shannon_bits": shannon, "min_entropy_bits": min_entropy,
            "worst_flat_chi2": worst_flat, "worst_pair_chi2": worst_pair}


def test_id_entropy(pixd):
    src = open(os.path.join(ROOT, "extension", "iteration_id.c")).read()
    lines = [line.strip() for line in src.splitlines() if "pg_strong_random" in line or "iid_alphabet[" in line]
    print("     source (extension/iteration_id.c):\n       " + "\n       ".join(lines))
    check("ids come from pg_strong_random", "pg_strong_random(raw" in src, "")
    conf = subprocess.run([os.environ.get("PG_CONFIG", "pg_config"), "--configure"], stdout=subprocess.PIPE,
                          text=True).stdout
    check("PostgreSQL is built --with-openssl (pg_strong_random = OpenSSL RAND_bytes)", "--with-openssl" in conf)
    n = 10_000
    out = psql(f"SELECT s.interation_id FROM generate_series(50000001, {50000000 + n}) i, "
               f"LATERAL pix_stream_start(lpad(i::text, 8, '0'), 1) s").stdout.split()
    check(f"{n} ids sampled", len(out) == n, f"{len(out)}")
    shape = [i for i in out if not ID_RE.fullmatch(i)]
    check("every id is 20 characters of 0-9a-z without i l o u", not shape, f"{shape[:3]}")
    if shape or len(out) != n:
        return
    m = measure_ids(out)
    print(f"     measured: {json.dumps({k: round(v, 2) for k, v in m.items()})}")
    check("no duplicate id", m["distinct"] == n, f"{n - m['distinct']} duplicates")
    # 20 positions, each flat over 32 characters: P(any position's chi-square > limit) ~ 0.001
    flat = chi2_limit(31, 3.89)
    check(f"per-position frequencies are flat (max chi-square over 20 positions < {flat:.1f})",
          m["worst_flat_chi2"] < flat, f"max chi2 = {m['worst_flat_chi2']:.1f}")
    # adjacent positions independent: 19 tests of 31 x 31 df, P(any > limit) ~ 0.001
    pair = chi2_limit(31 * 31, 3.87)
    check(f"adjacent positions are independent (max chi-square over 19 pairs < {pair:.0f})",
          m["worst_pair_chi2"] < pair, f"max chi2 = {m['worst_pair_chi2']:.0f}")
    # What the sample shows, summed over independent positions (checked just above). A perfect source
    # gives 100 bits of Shannon entropy and, from 10 000 samples, about 95 bits of min-entropy.
    check("measured min-entropy of an id is at least 60 bits (the contract)", m["min_entropy_bits"] >= 60,
          f"{m['min_entropy_bits']:.1f} bits min-entropy, {m['shannon_bits']:.1f} bits Shannon")
    check("measured Shannon entropy is within 1 bit of 20 x 5 bits", m["shannon_bits"] >= 99.0,
          f"{m['shannon_bits']:.2f} bits")


def test_other_ispb_id(pixd):
    a, b = "42000001", "42000002"
    http("POST", f"/api/util/msgs/{a}/3")
    st, h, _ = http("GET", f"/api/pix/{a}/stream/start")
    check("stream of ISPB A opened", st == 200, f"{st}")
    iid = h["pull-next"].rsplit("/", 1)[1]
    other = http("GET", f"/api/pix/{b}/stream/{iid}")
    unknown = http("GET", f"/api/pix/{b}/stream/{'a' * 20}")
    malformed = http("GET", f"/api/pix/{b}/stream/not-an-id!")
    too_long = http("GET", f"/api/pix/{b}/stream/{'a' * 200}")
    check("A's id under ISPB B -> 404", other[0] == 404, f"{other[0]}")
    same = other[2] == unknown[2] == malformed[2] == too_long[2]
    check("same 404 body for another ISPB's, unknown, malformed and too-long ids", same and unknown[0] == 404,
          f"{other[2]!r} / {unknown[2]!r} / {malformed[2]!r} / {too_long[2]!r}")
    drop = {"date"}
    hdr = lambda r: sorted((k, v) for k, v in r[1].items() if k not in drop)  # noqa: E731
    check("same 404 headers (but Date) for all of them", hdr(other) == hdr(unknown) == hdr(malformed), "")
    d_other = http("DELETE", f"/api/pix/{b}/stream/{iid}")
    d_unknown = http("DELETE", f"/api/pix/{b}/stream/{'a' * 20}")
    check("DELETE with A's id under B -> the same 404 as an unknown id", d_other[0] == 404 and d_other[2] == d_unknown[2],
          f"{d_other[0]} {d_other[2]!r}")
    st, h2, _ = http("GET", h["pull-next"])
    check("A's stream is unharmed by the attempts (its Pull-Next still works)", st in (200, 204), f"{st}")
    # timing: no oracle either way. A/B in pairs, the order alternating within each pair; no fixed figure:
    # an oracle is a difference that is both consistent (sign test: at least 31 of 41 pairs the same way,
    # p < 0.002 two-sided without one) and large (the median paired difference over a tenth of the
    # median time), so neither machine load nor microseconds of noise decide.
    def timed(path):
        t = time.monotonic()
        http("GET", path)
        return time.monotonic() - t
    pa, pb = f"/api/pix/{b}/stream/{h2['pull-next'].rsplit('/', 1)[1]}", f"/api/pix/{b}/stream/{'b' * 20}"
    diffs, times = [], []
    for i in range(41):
        if i % 2:
            tb, ta = timed(pb), timed(pa)
        else:
            ta, tb = timed(pa), timed(pb)
        diffs.append(ta - tb)
        times += [ta, tb]
    slower = sum(d > 0 for d in diffs)
    med_diff, med_time = sorted(diffs)[20], sorted(times)[41]
    consistent = slower >= 31 or slower <= 10
    check("no timing oracle between another ISPB's id and an unknown one (A/B pairs: not both consistent and "
          "over a tenth of the median)", not (consistent and abs(med_diff) > med_time / 10),
          f"another ISPB's id slower in {slower}/41 pairs, median difference {med_diff * 1000:.3f} ms, "
          f"median time {med_time * 1000:.3f} ms")


def test_no_sql_from_request(pixd):
    files = [os.path.join(dp, f) for dp, _, fs in os.walk(os.path.join(ROOT, "shim")) for f in fs
             if f.endswith(".c") and "/tests" not in dp]
    calls = []
    bad = []
    for path in files:
        src = open(path).read()
        rel = os.path.relpath(path, ROOT)
        for m in re.finditer(r"\b(PQ(?:exec|execParams|sendQuery|sendQueryParams|prepare|sendPrepare|"
                             r"sendQueryPrepared|execPrepared|escape\w*))\s*\(([^;]*)", src):
            fn, args = m.group(1), m.group(2)
            line = src.count("\n", 0, m.start()) + 1
            calls.append(f"{rel}:{line} {fn}")
            if fn in ("PQexec", "PQsendQuery"):
                # only a string literal is allowed as the query text
                sql_arg = args.split(",", 1)[1].strip() if "," in args else ""
                if not sql_arg.startswith('"'):
                    bad.append(f"{rel}:{line} {fn} with a non-literal query: {args[:80]}")
            elif fn in ("PQexecParams", "PQsendQueryParams"):
                # parameters are fine; the query text itself must be a literal or the statements table's
                sql_arg = args.split(",", 1)[1].strip() if "," in args else ""
                if not (sql_arg.startswith('"') or sql_arg.startswith("s->sql")):
                    bad.append(f"{rel}:{line} {fn} with query text built at run time: {args[:80]}")
            elif fn.startswith("PQescape"):
                bad.append(f"{rel}:{line} {fn} (SQL text at run time)")
            elif fn in ("PQprepare", "PQsendPrepare"):
                if "s->sql" not in args:
                    bad.append(f"{rel}:{line} {fn} with SQL not from the statements table: {args[:80]}")
        # no SQL keyword inside a printf-style format
        # A formatted string that mentions SQL is only a problem if it reaches libpq as query text.
        pq_args = " ".join(a for _, a in re.findall(
            r"\b(PQexec\w*|PQsendQuery\w*|PQprepare|PQsendPrepare)\s*\(([^;]*)", src))
        for m in re.finditer(r"\b(s?n?printf|asprintf|h2o_concat)\s*\(\s*(\w+)([^;]*)", src):
            if re.search(r"\b(SELECT|INSERT|UPDATE|DELETE\s+FROM|LISTEN|NOTIFY|CALL)\b", m.group(3)) and \
                    re.search(rf"\b{re.escape(m.group(2))}\b", pq_args):
                line = src.count("\n", 0, m.start()) + 1
                bad.append(f"{rel}:{line} SQL formatted into {m.group(2)}, which is passed to libpq")
    print("     libpq query calls in shim/: " + "; ".join(calls))
    check("every query is a prepared statement or a constant literal (no SQL built from request text)",
          not bad, "; ".join(bad))
    db = open(os.path.join(ROOT, "shim", "database.c")).read()
    table = re.search(r"statements\[DB_NSTMT\]\s*=\s*\{(.*?)\n\};", db, re.S)
    ok = table is not None and all(s.startswith('"') for s in re.findall(r'\{"[^"]+",\s*("[^"]*"|\w+)', table.group(1)))
    check("the statements table holds only string literals", ok, "")
    check("params are passed to PQsendQueryPrepared (text, no SQL)", "PQsendQueryPrepared(c->pc.pg, s->name, "
          "s->nparams, q->params" in db)


def test_request_limits(pixd):
    cases = [
        ("100 kB URI", ("GET /api/pix/" + "1" * 100_000 + "/stream/start HTTP/1.1\r\nHost: x\r\n\r\n").encode()),
        ("1 MB header", ("GET /health HTTP/1.1\r\nX-A: " + "a" * 1_000_000 + "\r\n\r\n").encode()),
        ("64 kB Accept", ("GET /api/pix/41000003/stream/start HTTP/1.1\r\nAccept: " + "a/b," * 16000 + "\r\n\r\n").encode()),
        ("1000 headers", ("GET /health HTTP/1.1\r\n" + "".join(f"X-{i}: v\r\n" for i in range(1000)) + "\r\n").encode()),
        ("200 Accept lines", ("GET /api/pix/41000003/stream/start HTTP/1.1\r\n" + "Accept: text/html\r\n" * 200 + "\r\n").encode()),
        ("200 kB body", b"POST /api/util/msgs/41000003/1 HTTP/1.1\r\nContent-Length: 200000\r\n\r\n" + b"x" * 200_000),
        ("2 GB Content-Length", b"POST /api/util/msgs/41000003/1 HTTP/1.1\r\nContent-Length: 2000000000\r\n\r\nxx"),
    ]
    import http_fuzz  # noqa: E402  (test/fault/http_fuzz.py)
    for name, data in cases:
        t = time.monotonic()
        try:
            resp = http_fuzz.exchange(HTTP_PORT, data, timeout=8)
        except OSError as e:
            resp = b""
            print(f"     {name}: {e}")
        st, _ = http_fuzz.parse_response(resp)
        check(f"{name}: answered 4xx, not 5xx, not dropped", st is not None and 400 <= st < 500,
              f"{st} in {time.monotonic() - t:.2f} s")
    st, _, _ = http("GET", "/health")
    check("alive and healthy after the oversized requests", pixd.alive() and st == 200, f"{st}")


def test_bad_configuration(pixd):
    def start(args, env=None, timeout=3):
        t = time.monotonic()
        p = subprocess.run([fl.PIXD] + args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                           timeout=timeout, env=dict(os.environ, **(env or {})))
        return p.returncode, p.stderr.strip().splitlines()[-1:] or [""], time.monotonic() - t

    db = f"host={PGDIR} port={PGPORT} user=pix_http dbname={DB}"
    bad = [
        ["--listen", "nohostport"], ["--listen", "127.0.0.1:"], ["--listen", "127.0.0.1:99999"],
        ["--listen", f"256.1.1.1:{SPARE_PORT}"], ["--listen", f"[::1:{SPARE_PORT}"], ["--listen", ""],
        ["--listen", f"127.0.0.1:{HTTP_PORT}"],  # taken by the running pixd
        ["--pool", "0"], ["--pool", "-1"], ["--pool", "abc"], ["--pool", "65"], ["--pool", "4x"], ["--pool", ""],
        ["--wait-ms", "8001"], ["--wait-ms", "-1"], ["--max-queue", "-5"], ["--query-timeout-ms", "0"],
        ["--db", "host='unterminated"], ["--db", "nosuchoption=1"], ["--db", "=x"],
        ["--no-such-flag"], ["extra-argument"],
    ]
    for args in bad:
        full = (["--db", db] if "--db" not in args else []) + (
            ["--listen", f"127.0.0.1:{SPARE_PORT}"] if "--listen" not in args else []) + args
        try:
            rc, err, dt = start(full)
        except subprocess.TimeoutExpired:
            rc, err, dt = None, ["still running after 3 s (it started)"], 3
        check(f"refuses to start with {' '.join(args)!r}", rc not in (0, None) and dt < 5, f"exit {rc}: {err[0][:90]}")
    rc, err, dt = start(["--listen", f"127.0.0.1:{SPARE_PORT}", "--pool", "4"], env={"PIXD_POOL": "0"})
    check("refuses a bad PIXD_POOL in the environment even when the flag is right", rc not in (0, None),
          f"exit {rc}: {err[0][:90]}")
    # An unreachable database is not a start failure: start, answer 503 + Retry-After, keep running.
    p = fl.Pixd(f"host=/tmp/pgF-nonexistent port=5599 user=pix_http dbname={DB} connect_timeout=1", port=SPARE_PORT,
                name="pixd-unreachable")
    try:
        p.start()
        time.sleep(1.0)
        st, h, body = http("GET", "/health", port=SPARE_PORT)
        check("unreachable database: started, /health -> 503 + Retry-After", st == 503 and "retry-after" in h, f"{st}")
        st, h, body = http("GET", "/api/pix/41000004/stream/start", port=SPARE_PORT)
        check("unreachable database: stream/start -> 503 problem+json + Retry-After",
              st == 503 and "retry-after" in h and h.get("content-type", "").startswith("application/problem+json"),
              f"{st} {body[:80]!r}")
        st, _, _ = http("GET", "/api/pix/4100000X/stream/start", port=SPARE_PORT)
        check("unreachable database: bad input is still 400 (not 503)", st == 400, f"{st}")
        check("unreachable database: still running", p.alive())
        rc = p.stop()
        check("unreachable database: SIGTERM exits 0", rc == 0, f"{rc}")
    finally:
        if p.alive():
            p.kill()
    # Not listening on anything but what it was told: it binds exactly the given address.
    out = subprocess.run(["ss", "-ltnp"], stdout=subprocess.PIPE, text=True).stdout
    mine = [line for line in out.splitlines() if f"pid={pixd.proc.pid}," in line]
    check(f"pixd listens only on 127.0.0.1:{HTTP_PORT}", len(mine) == 1 and f"127.0.0.1:{HTTP_PORT}" in mine[0], f"{mine}")


def test_database_door(pixd):
    out = psql("LISTEN pix_message", user="pix_outsider", check_rc=False)
    check("before: a login with no pix privilege may LISTEN pix_message (PostgreSQL's rule)",
          out.returncode == 0, out.stderr.strip())
    psql("DO $$ BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'pix_sec_bank') THEN "
         "CREATE ROLE pix_sec_bank LOGIN IN ROLE pix_institution; END IF; END $$")
    door = subprocess.run([fl.PSQL, "-X", "-q", "-v", "ON_ERROR_STOP=1",
                           f"host={PGDIR} port={PGPORT} user=postgres dbname={DB}",
                           "-f", os.path.join(ROOT, "scripts", "restrict-connect.sql")],
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=60)
    check("scripts/restrict-connect.sql runs", door.returncode == 0, door.stderr.strip())
    for sql in ("LISTEN pix_message", "NOTIFY pix_message, '41000001'"):
        out = psql(sql, user="pix_outsider", check_rc=False)
        check(f"after: pix_outsider cannot connect to {sql.split()[0]}",
              out.returncode != 0 and "permission denied for database" in out.stderr, out.stderr.strip())
    for user in ("pix_http", "pix_sec_bank"):
        out = psql("SELECT 1", user=user, check_rc=False)
        check(f"after: {user} still connects", out.returncode == 0 and out.stdout.strip() == "1",
              out.stderr.strip())
    st, _, body = http("POST", "/api/util/msgs/41000077/1")
    st2, _, _ = http("GET", "/api/pix/41000077/stream/start")
    check("after: pixd (as pix_http) still serves", st == 201 and st2 == 200, f"{st} {body[:80]!r} {st2}")


def test_hostile_load(pixd):
    import hostile
    hostile.run(check, psql, f"host={PGDIR} port={PGPORT} user=pix_http dbname={DB}", PGDIR + "-hostile")


def main():
    only = sys.argv[1:]
    names = ["least_privilege", "id_entropy", "other_ispb_id", "no_sql_from_request", "request_limits",
             "bad_configuration"]
    unknown = [n for n in only if n not in names]
    if unknown:  # a name that selects no test must not pass
        print(f"no such test: {', '.join(unknown)} (known: {', '.join(names)})")
        print("0 passed, 1 failed")
        sys.exit(1)
    pixd = setup()
    try:
        for name, fn in [("least_privilege", test_least_privilege), ("id_entropy", test_id_entropy),
                         ("other_ispb_id", test_other_ispb_id), ("no_sql_from_request", test_no_sql_from_request),
                         ("request_limits", test_request_limits), ("hostile_load", test_hostile_load),
                         ("bad_configuration", test_bad_configuration), ("database_door", test_database_door)]:
            if only and name not in only:
                continue
            print(f"--- {name}", flush=True)
            try:
                fn(pixd)
            except Exception as e:  # noqa: BLE001
                import traceback
                traceback.print_exc()
                check(f"{name} ran to the end", False, repr(e))
        rc = pixd.stop()
        check("pixd (as pix_http) exits 0 on SIGTERM", rc == 0, f"{rc}")
    finally:
        if pixd.alive():
            pixd.kill()
        fl.cluster_stop(PGDIR)
    passed = sum(ok for _, ok in results)
    print(f"{passed} passed, {len(results) - passed} failed")
    sys.exit(0 if passed == len(results) else 1)


if __name__ == "__main__":
    main()
