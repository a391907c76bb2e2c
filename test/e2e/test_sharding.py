"""A sharded deployment on this machine (scripts/shards.sh up): a router cluster in front of 4 shard clusters,
pixd on the router. Institutions on different shards never see each other's messages; a shard that is down
answers 503 for its institutions only; partitions move to a new server under load without losing or
duplicating a message; a batch sent for receivers on several shards lands on each receiver's shard."""

import json
import ssl
import os
import unittest
import subprocess
import threading
import time
from collections import Counter

import pixe2e
from pixe2e import (ROOT, SLOW, TMP, Pixd, PixTestCase, free_port, log, make_message, messages_of,
                    new_ispb)

SHARDS = 4


def shards_sh(*args, timeout=180):
    out = subprocess.run([os.path.join(ROOT, "scripts", "shards.sh"), *args], check=True, text=True,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=timeout)
    return out.stdout.strip()


def sendable(msgs):
    """Messages as the send route takes them: the stream's format with valor as a JSON number (README)."""
    return [dict(m, valor=float(m["valor"])) for m in msgs]


@unittest.skipUnless(pixe2e.SHARDS, "runs in the sharded suite (PIX_E2E_SHARDS=4, make test-sharded)")
class TestSharded(PixTestCase):
    @classmethod
    def setUpClass(cls):
        cls.port = free_port()
        cls.dir = os.path.join(TMP, f"sharded-{cls.port}")
        cls.router = shards_sh("up", cls.dir, str(cls.port), str(SHARDS)).splitlines()[-1]
        base = " ".join(p for p in cls.router.split() if not p.startswith("dbname="))
        cls.rbase = base
        cls.shards = {}  # shard number -> conninfo (superuser)
        for line in shards_sh("list", cls.router).splitlines():
            k, rest = line.split(" ", 1)
            cls.shards[int(k)] = rest.split(" partitions ")[0] + " user=postgres"
        cls.server = Pixd(cls.router.replace("user=postgres", "user=pix_http"), wait_ms=2000).start()

    @classmethod
    def tearDownClass(cls):
        cls.server.stop()
        shards_sh("down", cls.dir)

    def setUp(self):
        self.pixd = self.server
        self.http = self.pixd.client()
        self.addCleanup(self.http.close)

    # -- helpers -------------------------------------------------------------------------------------
    def sql(self, q, conn=None):
        out = subprocess.run([os.path.join(os.environ.get("PGBIN", "/usr/lib/postgresql/15/bin"), "psql"),
                              "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", conn or self.router, "-c", q],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=60)
        if out.returncode != 0:
            raise RuntimeError(out.stderr)
        return out.stdout.strip()

    def shard_of(self, ispb):
        return int(self.sql(f"SELECT shard FROM pix_shards() WHERE pix_router.partition_number('{ispb}') "
                            "= ANY (partitions)"))

    def ispb_on(self, shard, avoid=()):
        for _ in range(10000):
            i = new_ispb()
            if i not in avoid and self.shard_of(i) == shard:
                return i
        raise AssertionError(f"no ISPB found for shard {shard}")

    def generate(self, ispb, n):
        r = self.http.post(f"/api/util/msgs/{ispb}/{n}")
        self.assertEqual(r.status, 201, repr(r))

    def send_acked(self, client, sender, receiver, n, statuses=None, max_503=None):
        """Sends n messages with ids of our own to receiver through POST /api/pix/{sender}/msgs, the same
        body again after each 503 (idempotent by endToEndId; 503 must carry Retry-After), and returns the
        ids once answered 201: what the client knows the server accepted. Any other status fails."""
        msgs = [make_message(receiver, pagador_ispb=sender) for _ in range(n)]
        body = json.dumps(sendable(msgs)).encode()
        for _ in range((max_503 if max_503 is not None else 200) + 1):
            r = client.post(f"/api/pix/{sender}/msgs", body=body, headers={"Content-Type": "application/json"})
            if statuses is not None:
                statuses["POST %d" % r.status] += 1
            if r.status == 201:
                self.assertEqual(json.loads(r.body)["accepted"] + json.loads(r.body)["duplicates"], n, repr(r))
                return [m["endToEndId"] for m in msgs]
            self.assertEqual(r.status, 503, repr(r))
            self.assertRetryAfter(r)
            time.sleep(0.05)
        raise AssertionError(f"a send still answered 503 after {max_503} tries")

    # -- tests ---------------------------------------------------------------------------------------
    def test_institutions_on_different_shards_never_see_each_others_messages(self):
        a, b = self.ispb_on(0), self.ispb_on(1)
        self.generate(a, 5)
        self.generate(b, 7)
        # each ISPB's messages are stored on its shard only
        self.assertEqual(self.sql(f"SELECT count(*) FROM pix.message WHERE recebedor_ispb = '{a}'", self.shards[0]), "5")
        self.assertEqual(self.sql(f"SELECT count(*) FROM pix.message WHERE recebedor_ispb = '{a}'", self.shards[1]), "0")
        self.assertEqual(self.sql(f"SELECT count(*) FROM pix.message WHERE recebedor_ispb = '{b}'", self.shards[1]), "7")
        ca, cb = self.collector(a, accept="multipart/json"), self.collector(b, accept="multipart/json")
        got_a = self.assertMessagesFor(ca.start(), a, count=5)
        got_b = self.assertMessagesFor(cb.start(), b, count=7)
        self.assertEqual(set(got_a) & set(got_b), set())
        # b's id on a's ISPB, and a's on b's: the same 404 as an unknown id
        b_id = cb.pull_next.rsplit("/", 1)[1]
        a_id = ca.pull_next.rsplit("/", 1)[1]
        self.assertProblem(self.http.get(f"/api/pix/{a}/stream/{b_id}"), 404)
        self.assertProblem(self.http.get(f"/api/pix/{b}/stream/{a_id}"), 404)
        self.assertProblem(self.http.delete(f"/api/pix/{a}/stream/{b_id}"), 404)
        self.assertEqual(ca.next().status, 204)
        self.assertEqual(cb.next().status, 204)

    def test_a_shard_down_is_503_for_its_institutions_only(self):
        down = 2
        victim, other = self.ispb_on(down), self.ispb_on(3)
        self.generate(victim, 1)
        c = self.collector(victim)
        self.assertEqual(c.start().status, 200)
        subprocess.run([os.path.join(ROOT, "scripts", "cluster.sh"), "stop", os.path.join(self.dir, f"shard{down}")],
                       check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=60)
        try:
            for r in (self.http.get(f"/api/pix/{victim}/stream/start"), self.http.post(f"/api/util/msgs/{victim}/1"),
                      c.client.get(c.pull_next)):
                self.assertProblem(r, 503)
                self.assertRetryAfter(r)
            # the other institutions are served meanwhile, with wake-ups from their shards
            self.generate(other, 2)
            o = self.collector(other, accept="multipart/json")
            self.assertMessagesFor(o.start(), other, count=2)
            box = {}
            t = threading.Thread(target=lambda: box.setdefault("r", o.next()), daemon=True)
            t.start()
            time.sleep(0.3)
            self.generate(other, 1)
            t.join(10 * SLOW)
            self.assertMessagesFor(box["r"], other, count=1)
            self.assertLess(box["r"].elapsed, 1.9, "woken by its shard's NOTIFY, not by the deadline")
            metrics = self.http.get("/metrics").body.decode()
            self.assertIn(f'pixd_shard_listener_up{{shard="{down}"}} 0', metrics)
            self.assertIn('pixd_shard_listener_up{shard="3"} 1', metrics)
            self.assertEqual(self.http.get("/health").status, 200, "the router answers")
        finally:
            shards_sh("up", self.dir, str(self.port), str(SHARDS))
        # back: once the shard answers SQL again, the stream survived on its shard and the pending batch is
        # confirmed by the next read -- at most one 503 (a router connection to the old server found broken),
        # not a stall hidden behind seconds of retries
        for _ in range(200):
            try:
                self.sql("SELECT 1", self.shards[down])
                break
            except RuntimeError:
                time.sleep(0.1)
        r = c.next()
        if r.status == 503:
            self.assertRetryAfter(r)
            r = c.next()
        self.assertIn(r.status, (200, 204), repr(r))

    def test_move_partitions_to_a_new_server_under_load(self):
        """Collectors drain ISPBs of two partitions while those partitions move to a fifth server: every
        message is delivered once, the router then sends the partitions there, and pixd listens there."""
        parts = sorted(int(p) for p in self.sql("SELECT array_to_string(partitions[1:2], ' ') FROM pix_shards() "
                                                 "WHERE shard = 1").split())
        ispbs = []
        while len(ispbs) < 3:
            i = new_ispb()
            if int(self.sql(f"SELECT pix_router.partition_number('{i}')")) in parts:
                ispbs.append(i)
        sender = new_ispb()
        acked = set()  # ids the client sent and got 201 for: the expected set, never read back from the database
        for i in ispbs:
            acked.update(self.send_acked(self.http, sender, i, 300))
        target_dir = os.path.join(self.dir, "new")
        target = subprocess.run([os.path.join(ROOT, "scripts", "cluster.sh"), "start", target_dir, str(free_port())],
                                check=True, text=True, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                timeout=120).stdout.strip()
        self.addCleanup(subprocess.run, [os.path.join(ROOT, "scripts", "cluster.sh"), "stop", target_dir],
                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.sql("CREATE DATABASE pix", target)
        self.sql("CREATE ROLE pix_client NOLOGIN", target.replace("dbname=postgres", "dbname=pix"))
        self.sql("CREATE ROLE pix_http LOGIN IN ROLE pix_client", target.replace("dbname=postgres", "dbname=pix"))
        target_db = " ".join(p for p in target.replace("dbname=postgres", "dbname=pix").split()
                             if not p.startswith("user="))

        deliveries, errors, statuses = [], [], Counter()
        stop = threading.Event()
        lock = threading.Lock()
        moved = {}  # "start"/"end": monotonic times around the move command
        late_503 = []  # 503s to calls made after the move had returned: a stall, not the move

        def collector(ispb):
            client = self.pixd.client()
            uri = f"/api/pix/{ispb}/stream/start"
            try:
                for _ in range(5000):
                    t_sent = time.monotonic()
                    r = client.get(uri, headers={"Accept": "multipart/json"})
                    statuses[r.status] += 1
                    if r.status == 503:  # the partition is moving: the same call again a little later
                        self.assertRetryAfter(r)
                        if "end" in moved and t_sent > moved["end"]:
                            late_503.append(f"{uri} at +{t_sent - moved['end']:.2f} s")
                        time.sleep(0.05)
                        continue
                    if r.status not in (200, 204):
                        raise AssertionError(repr(r))
                    if r.status == 200:
                        with lock:
                            deliveries.extend(m["endToEndId"] for m in messages_of(r))
                    elif stop.is_set():
                        break
                    uri = r.header("Pull-Next")
            except BaseException as e:  # noqa: BLE001
                errors.append(e)
            finally:
                client.close()

        producing = threading.Event()

        def producer(ispb):  # keeps sending through the move: each send retried through 503s until 201
            client = self.pixd.client()
            try:
                while not producing.is_set():
                    ids = self.send_acked(client, sender, ispb, 5, statuses)
                    with lock:
                        acked.update(ids)
                    time.sleep(0.02)
            except BaseException as e:  # noqa: BLE001
                errors.append(e)
            finally:
                client.close()

        producers = [threading.Thread(target=producer, args=(i,), daemon=True) for i in ispbs]
        threads = [threading.Thread(target=collector, args=(i,), daemon=True) for i in ispbs for _ in range(2)]
        for t in threads + producers:
            t.start()
        time.sleep(0.5)
        moved["start"] = time.monotonic()
        shards_sh("move", self.router, target_db, *map(str, parts))
        moved["end"] = time.monotonic()
        time.sleep(0.5)
        producing.set()
        for t in producers:
            t.join(30 * SLOW)
        self.assertFalse(any(t.is_alive() for t in producers), "a producer is stuck")
        for i in ispbs:  # more after the move: enqueued and notified on the new server, never a 503
            acked.update(self.send_acked(self.http, sender, i, 10, statuses, max_503=0))
        # until every acknowledged id was delivered (bounded), then the collectors stop at their next 204
        for _ in range(300):
            with lock:
                if acked <= set(deliveries):
                    break
            time.sleep(0.1)
        stop.set()
        for t in threads:
            t.join(60 * SLOW)
        self.assertFalse(any(t.is_alive() for t in threads), "a collector is stuck")
        self.assertEqual(errors, [])
        self.assertEqual(late_503, [], "503 to calls made after the move had returned")
        self.assertGreaterEqual(len(acked), 3 * 310)
        twice = [k for k, v in Counter(deliveries).items() if v > 1]
        self.assertEqual(twice, [], "delivered more than once")
        self.assertEqual(acked - set(deliveries), set(), "acknowledged by 201, never delivered")
        self.assertEqual(set(deliveries) - acked, set(), "delivered, never sent")
        listed = shards_sh("list", self.router)
        self.assertIn(target_db, listed)
        self.assertEqual(self.sql(f"SELECT count(*) FROM pix.message WHERE recebedor_ispb IN "
                                  f"({','.join(repr(i) for i in ispbs)})", self.shards[1]), "0", "left on the source")
        # pixd reads the router's shard list again (every 10 s) and listens on the new server
        deadline = time.monotonic() + 30 * SLOW
        while "pixd_shards 5" not in self.http.get("/metrics").body.decode() and time.monotonic() < deadline:
            time.sleep(0.5)
        self.assertIn('pixd_shard_listener_up{shard="4"} 1', self.http.get("/metrics").body.decode())
        log(f"\n    moved partitions {parts} under load: {len(deliveries)} deliveries, statuses {dict(statuses)}")

    def test_a_moving_partition_refuses_calls_whatever_the_callers_search_path(self):
        # partition_of has no SET search_path (it runs on every routed call): its names are qualified.
        # A caller whose search_path puts a look-alike of the lock function first must still be refused.
        ispb = new_ispb()
        part = self.sql(f"SELECT pix_router.partition_number('{ispb}')")
        psql = os.path.join(os.environ.get("PGBIN", "/usr/lib/postgresql/15/bin"), "psql")
        held = (f"FROM pg_locks WHERE locktype = 'advisory' AND objid = {part} AND granted "
                "AND mode = 'ExclusiveLock'")
        holder = subprocess.Popen([psql, "-X", "-q", self.router, "-c",
                                   f"SELECT pg_advisory_lock(pix_router.lock_space(), {part})", "-c",
                                   "SELECT pg_sleep(60)"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

        def release():  # the holder's backend, not only its psql: a sleeping backend keeps its lock
            self.sql(f"SELECT pg_terminate_backend(pid) {held}")
            holder.wait(30)
            for _ in range(100):
                if self.sql(f"SELECT count(*) {held}") == "0":
                    return
                time.sleep(0.05)
        self.addCleanup(release)
        for _ in range(100):  # until the holder has the lock
            if self.sql(f"SELECT count(*) {held}") == "1":
                break
            time.sleep(0.05)
        self.sql("CREATE SCHEMA IF NOT EXISTS lookalike; CREATE OR REPLACE FUNCTION "
                 "lookalike.pg_try_advisory_xact_lock_shared(int, int) RETURNS boolean LANGUAGE sql "
                 "AS 'SELECT true'; CREATE OR REPLACE FUNCTION lookalike.hashtext(text) RETURNS int "
                 "LANGUAGE sql AS 'SELECT 0'")
        self.addCleanup(self.sql, "DROP SCHEMA lookalike CASCADE")
        for path in ("public", "lookalike, pg_catalog, public"):
            with self.subTest(search_path=path):
                with self.assertRaisesRegex(RuntimeError, "is moving to another server"):
                    self.sql(f"SET search_path = {path}; SELECT * FROM public.pix_stream_start('{ispb}', 1)")
        release()
        self.assertEqual(self.sql(f"SELECT message_count FROM public.pix_stream_start('{ispb}', 1)"), "0")
        self.sql(f"SELECT public.pix_streams_stop_all('{ispb}')")

    def test_a_batch_for_several_shards_lands_on_each_receivers_shard(self):
        sender = self.ispb_on(0)
        receivers = [self.ispb_on(k) for k in range(SHARDS)]
        batch = sendable([make_message(r, pagador_ispb=sender) for r in receivers for _ in range(3)])
        row = self.sql(f"SELECT accepted, duplicates FROM pix_messages_send('{sender}', "
                       f"$b${json.dumps(batch)}$b$)")
        self.assertEqual(row, f"{len(batch)}|0")
        for k, r in enumerate(receivers):
            self.assertEqual(self.sql(f"SELECT count(*) FROM pix.message WHERE recebedor_ispb = '{r}'",
                                      self.shards[k]), "3")
        # the same batch again: all duplicates, nothing new
        row = self.sql(f"SELECT accepted, duplicates FROM pix_messages_send('{sender}', $b${json.dumps(batch)}$b$)")
        self.assertEqual(row, f"0|{len(batch)}")
        # an invalid message: the error names its index in the batch, not in its shard's part
        bad = sendable([make_message(r, pagador_ispb=sender) for r in receivers])
        bad[3]["valor"] = -1
        with self.assertRaises(RuntimeError) as e:
            self.sql(f"SELECT * FROM pix_messages_send('{sender}', $b${json.dumps(bad)}$b$)")
        self.assertIn("messages[3]", str(e.exception))

    def test_functions_for_everyone_add_up_over_the_shards(self):
        a, b = self.ispb_on(0), self.ispb_on(3)
        ids = [self.sql(f"SELECT interation_id FROM pix_stream_start('{i}')") for i in (a, b)]
        metrics = dict(tuple(line.rsplit("|", 1)) for line in
                       self.sql("SELECT metric || '|' || coalesce(ispb, '') || '|' || value FROM pix_metrics(1000)")
                       .splitlines())
        self.assertEqual(metrics[f"pix_streams_open|{a}"], "1")
        self.assertEqual(metrics[f"pix_streams_open|{b}"], "1")
        self.assertEqual(metrics["pix_shards_unreachable|"], "0")
        total = sum(int(self.sql("SELECT count(*) FROM pix.stream WHERE state = 'o'", c)) for c in self.shards.values())
        self.assertEqual(metrics["pix_streams_open|"], str(total), "the total is the sum over the shards")
        # ids do not name their ISPB: every shard marks the ones it has, the router adds up (the extension
        # has had pix_streams_keepalive since 1.2: no condition that is always true)
        self.assertEqual(self.sql(f"SELECT pix_streams_keepalive(ARRAY['{ids[0]}', '{ids[1]}', 'unknown'])"), "2")
        for i, iid in zip((a, b), ids):
            self.assertEqual(self.sql(f"SELECT pix_stream_stop('{i}', '{iid}')"), "0")

    def test_a_new_extension_function_is_on_the_router_with_no_router_edit(self):
        """The router's functions are generated from the shards' catalog (router/pix_router.sql): functions
        added to the extension in scratch databases (two shards of this class's clusters and a router of
        their own) reach the router with `scripts/shards.sh install` alone: one taking an ISPB first runs
        on that ISPB's shard, one answering a number adds up over the shards, one answering rows gives
        every shard's; with the defaults and EXECUTE grants the shard has. Removed from the extension,
        they leave the router at the next install."""
        db = "pix_generated"
        clusters = [self.router] + [self.shards[k] for k in (0, 1)]

        def drop_scratch():
            for c in clusters:
                self.sql(f"DROP DATABASE IF EXISTS {db} WITH (FORCE)", c.replace("dbname=pix", "dbname=postgres"))
        drop_scratch()
        self.addCleanup(drop_scratch)
        for c in clusters:
            self.sql(f"CREATE DATABASE {db}", c.replace("dbname=pix", "dbname=postgres"))
        router, s0, s1 = (c.replace("dbname=pix", f"dbname={db}") for c in clusters)
        shards_sh("init", router, *(s.replace(" user=postgres", "") for s in (s0, s1)))
        ports = {k: self.sql("SHOW port", s) for k, s in ((0, s0), (1, s1))}
        throwaway = """
            CREATE FUNCTION public.pix_throwaway_where(ispb text, n int DEFAULT 7) RETURNS text LANGUAGE sql
                AS $$ SELECT current_setting('port') || ' ' || ispb || ' ' || n $$;
            CREATE FUNCTION public.pix_throwaway_count() RETURNS bigint LANGUAGE sql AS $$ SELECT 5::bigint $$;
            CREATE FUNCTION public.pix_throwaway_rows() RETURNS SETOF text LANGUAGE sql
                AS $$ SELECT current_setting('port') $$;
            REVOKE ALL ON FUNCTION public.pix_throwaway_where(text, int), public.pix_throwaway_count(),
                public.pix_throwaway_rows() FROM PUBLIC;
            GRANT EXECUTE ON FUNCTION public.pix_throwaway_where(text, int) TO pix_client;
            ALTER EXTENSION pix ADD FUNCTION public.pix_throwaway_where(text, int);
            ALTER EXTENSION pix ADD FUNCTION public.pix_throwaway_count();
            ALTER EXTENSION pix ADD FUNCTION public.pix_throwaway_rows();"""
        for s in (s0, s1):
            self.sql(throwaway, s)
        self.assertEqual(self.sql("SELECT to_regproc('public.pix_throwaway_where') IS NULL", router), "t",
                         "not on the router before its install")
        shards_sh("install", router)

        routed = Counter()
        for _ in range(12):
            ispb = new_ispb()
            shard = int(self.sql(f"SELECT shard FROM pix_shards() WHERE pix_router.partition_number('{ispb}') "
                                 "= ANY (partitions)", router))
            routed[shard] += 1
            self.assertEqual(self.sql(f"SELECT pix_throwaway_where('{ispb}')", router), f"{ports[shard]} {ispb} 7")
            self.assertEqual(self.sql(f"SELECT pix_throwaway_where('{ispb}', 3)", router), f"{ports[shard]} {ispb} 3")
        self.assertEqual(set(routed), {0, 1}, "ISPBs of both shards were tried")
        self.assertEqual(self.sql("SELECT pix_throwaway_count()", router), "10", "5 from each of the 2 shards")
        self.assertEqual(sorted(self.sql("SELECT * FROM pix_throwaway_rows()", router).split()),
                         sorted(ports.values()))
        self.assertEqual(self.sql("SELECT has_function_privilege('pix_client', 'pix_throwaway_where(text, int)', "
                                  "'EXECUTE'), has_function_privilege('pix_client', 'pix_throwaway_count()', "
                                  "'EXECUTE'), (SELECT proacl FROM pg_proc WHERE proname = 'pix_throwaway_count')",
                                  router), "t|f|{postgres=X/postgres}")

        for s in (s0, s1):
            self.sql("ALTER EXTENSION pix DROP FUNCTION public.pix_throwaway_where(text, int);"
                     "ALTER EXTENSION pix DROP FUNCTION public.pix_throwaway_count();"
                     "ALTER EXTENSION pix DROP FUNCTION public.pix_throwaway_rows();"
                     "DROP FUNCTION public.pix_throwaway_where(text, int), public.pix_throwaway_count(), "
                     "public.pix_throwaway_rows()", s)
        shards_sh("install", router)
        self.assertEqual(self.sql("SELECT count(*) FROM pg_proc WHERE proname LIKE 'pix_throwaway%'", router), "0")


@unittest.skipUnless(pixe2e.SHARDS, "runs in the sharded suite (PIX_E2E_SHARDS=4, make test-sharded)")
class TestShardedAuth(PixTestCase):
    """pixd over HTTPS with --auth token,mtls in front of a router with 2 shards. Every credential is
    issued, revoked and listed through the router with the extension's own function names, as an
    operator does on one database; the router stores each on every shard (a send's parts are authorized
    by the receivers' shards). A move carries credentials and sent ids to the new server."""

    @classmethod
    def setUpClass(cls):
        cls.port = free_port()
        cls.dir = os.path.join(TMP, f"sharded-auth-{cls.port}")
        cls.router = shards_sh("up", cls.dir, str(cls.port), "2").splitlines()[-1]
        cls.shards = {}
        for line in shards_sh("list", cls.router).splitlines():
            k, rest = line.split(" ", 1)
            cls.shards[int(k)] = rest.split(" partitions ")[0] + " user=postgres"
        cls.pki = os.path.join(cls.dir, "pki")
        for args in (("ca", cls.pki), ("server", cls.pki), ("client", cls.pki, "b1")):
            subprocess.run([os.path.join(ROOT, "scripts", "pki.sh"), *args], check=True,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=60)
        cls.server = Pixd(cls.router.replace("user=postgres", "user=pix_http"), wait_ms=1000,
                          extra=["--auth", "token,mtls", "--tls-cert", os.path.join(cls.pki, "server.crt"),
                                 "--tls-key", os.path.join(cls.pki, "server.key"),
                                 "--client-ca", os.path.join(cls.pki, "ca.crt")]).start()

    @classmethod
    def tearDownClass(cls):
        cls.server.stop()
        shards_sh("down", cls.dir)
        for d in cls.extra_dirs:
            subprocess.run([os.path.join(ROOT, "scripts", "cluster.sh"), "stop", d],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=60)

    extra_dirs = []

    # -- helpers -------------------------------------------------------------------------------------
    sql = TestSharded.sql
    shard_of = TestSharded.shard_of
    ispb_on = TestSharded.ispb_on

    def conn_of(self, ispb):
        """The superuser conninfo of the shard that serves ispb now (a test may have moved it)."""
        return self.sql(f"SELECT conninfo FROM pix_shards() WHERE pix_router.partition_number('{ispb}') "
                        "= ANY (partitions)") + " user=postgres"

    def client(self, cert=None):
        ctx = ssl.create_default_context(cafile=os.path.join(self.pki, "ca.crt"))
        if cert:
            ctx.load_cert_chain(os.path.join(self.pki, f"{cert}.crt"), os.path.join(self.pki, f"{cert}.key"))
        c = pixe2e.Client(self.server.port, timeout=30, ssl_context=ctx)
        self.addCleanup(c.close)
        return c

    def call(self, c, method, path, token=None, body=None, accept=None):
        h = {"Authorization": f"Bearer {token}"} if token else {}
        if accept:
            h["Accept"] = accept
        if body is not None:
            h["Content-Type"] = "application/json"
        return c.request(method, path, headers=h, body=body)

    def token(self, ispb, label="test"):
        """A token issued through the router (as an operator would)."""
        return self.sql(f"SELECT pix_token_issue('{ispb}', '{label}')")

    def credential_id(self, ispb, label):
        return self.sql(f"SELECT credential_id FROM pix_credential_list('{ispb}') WHERE label = '{label}'")

    def send(self, c, token, sender, msgs):
        body = json.dumps(sendable(msgs)).encode()
        return self.call(c, "POST", f"/api/pix/{sender}/msgs", token, body)

    def generate(self, ispb, n):
        admin = getattr(type(self), "_admin", None) or self.sql("SELECT pix_admin_token_issue('generator')")
        type(self)._admin = admin
        r = self.call(self.client(), "POST", f"/api/util/msgs/{ispb}/{n}", admin)
        self.assertEqual(r.status, 201, repr(r))

    # -- tests ---------------------------------------------------------------------------------------
    def test_tokens_issued_through_the_router_work_on_their_own_ispb_only(self):
        a, b = self.ispb_on(0), self.ispb_on(1)
        ta, tb = self.token(a), self.token(b)
        self.generate(a, 2)  # the admin token works on both shards
        self.generate(b, 3)
        c = self.client()
        self.assertMessagesFor(self.call(c, "GET", f"/api/pix/{a}/stream/start", ta, accept="multipart/json"), a, count=2)
        self.assertMessagesFor(self.call(c, "GET", f"/api/pix/{b}/stream/start", tb, accept="multipart/json"), b, count=3)
        for path in (f"/api/pix/{b}/stream/start", f"/api/pix/{b}/streams"):
            self.assertProblem(self.call(c, "GET" if "start" in path else "DELETE", path, ta), 403)
        self.assertProblem(self.send(c, ta, b, [make_message(a, pagador_ispb=b)]), 403)
        self.assertProblem(self.call(c, "GET", f"/api/pix/{a}/stream/start", "pix_" + "0" * 64), 401)
        self.assertProblem(self.call(c, "GET", f"/api/pix/{a}/stream/start"), 401)
        # one row per shard, under one id: issued on a's shard, copied to the other
        cid = self.credential_id(a, "test")
        conns = self.sql("SELECT conninfo FROM pix_shards()").splitlines()
        self.assertGreaterEqual(len(conns), 2)
        for conn in conns:
            self.assertEqual(self.sql(f"SELECT ispb FROM pix.credential WHERE credential_id = {cid} "
                                      "AND revoked_at IS NULL", conn + " user=postgres"), a)

    def test_revoke_through_the_router_is_401_on_the_next_request_on_every_shard(self):
        a, b = self.ispb_on(1), self.ispb_on(0)
        ta = self.token(a, "to-revoke")
        self.token(b, "receiver")  # with authentication a payment goes to a registered institution only
        c = self.client()
        r = self.call(c, "GET", f"/api/pix/{a}/stream/start", ta)
        self.assertIn(r.status, (200, 204), repr(r))
        self.assertEqual(self.send(c, ta, a, [make_message(b, pagador_ispb=a)]).status, 201, "b's shard knows a")
        self.assertEqual(self.sql(f"SELECT pix_credential_revoke({self.credential_id(a, 'to-revoke')})"), "t")
        self.assertProblem(self.call(c, "GET", f"/api/pix/{a}/stream/start", ta), 401)
        self.assertProblem(self.send(c, ta, a, [make_message(b, pagador_ispb=a)]), 401)
        self.assertNotEqual(self.sql(f"SELECT revoked_at FROM pix_credential_list('{a}') WHERE label = 'to-revoke'"), "")

    def make_role(self, role, *more_conns):
        """A login role in pix_client on the router and every shard (PL/Proxy logs in to shards as it)."""
        create = f"CREATE ROLE {role} LOGIN IN ROLE pix_client"
        for conn in [self.router, *more_conns]:
            self.sql(create, conn)
        shards_sh("each", self.router, create)
        return self.router.replace("user=postgres", f"user={role}")

    def test_role_bound_through_the_router(self):
        a, b = self.ispb_on(0), self.ispb_on(1)
        as_role = self.make_role("inst_bound")
        self.sql(f"SELECT pix_role_bind('inst_bound', '{a}')")
        self.assertEqual(self.sql(f"SELECT count(*) FROM pix_stream_start('{a}')", as_role), "1")
        with self.assertRaisesRegex(RuntimeError, "forbidden"):
            self.sql(f"SELECT * FROM pix_stream_start('{b}')", as_role)
        self.assertEqual(self.sql("SELECT pix_role_unbind('inst_bound')"), "t")
        self.assertEqual(self.sql(f"SELECT count(*) FROM pix_stream_start('{b}')", as_role), "1")

    def test_certificate_registered_through_the_router(self):
        b = self.ispb_on(1)
        fp = subprocess.run([os.path.join(ROOT, "scripts", "pki.sh"), "fingerprint", os.path.join(self.pki, "b1.crt")],
                            check=True, text=True, stdout=subprocess.PIPE, timeout=30).stdout.strip()
        self.sql(f"SELECT pix_certificate_add('{b}', '{fp}', 'b1')")
        self.generate(b, 1)
        c = self.client("b1")
        self.assertMessagesFor(self.call(c, "GET", f"/api/pix/{b}/stream/start"), b)
        self.assertProblem(self.call(c, "GET", f"/api/pix/{self.ispb_on(0)}/stream/start"), 403)
        self.assertEqual(self.sql(f"SELECT pix_certificate_revoke('{fp}')"), "1")
        self.assertProblem(self.call(c, "GET", f"/api/pix/{b}/stream/start"), 401)

    def test_send_to_receivers_on_two_shards(self):
        sender, r0, r1 = self.ispb_on(0), self.ispb_on(0), self.ispb_on(1)
        ts, t1 = self.token(sender), self.token(r1)
        self.token(r0, "receiver")  # with authentication a payment goes to a registered institution only
        batch = [make_message(r, pagador_ispb=sender) for r in (r0, r1, r1)]
        c = self.client()
        r = self.send(c, ts, sender, batch)
        self.assertEqual(r.status, 201, repr(r))
        self.assertEqual((r.json()["accepted"], r.json()["duplicates"]), (3, 0))
        self.assertEqual(self.sql(f"SELECT count(*) FROM pix.message WHERE recebedor_ispb = '{r1}'", self.conn_of(r1)), "2")
        self.assertEqual(self.sql(f"SELECT count(*) FROM pix.message WHERE recebedor_ispb = '{r0}'", self.conn_of(r0)), "1")
        r = self.send(c, ts, sender, batch)
        self.assertEqual((r.status, r.json()["accepted"], r.json()["duplicates"]), (201, 0, 3), repr(r))
        got = self.assertMessagesFor(self.call(c, "GET", f"/api/pix/{r1}/stream/start", t1, accept="multipart/json"), r1,
                                     count=2)
        self.assertEqual(sorted(got), sorted(m["endToEndId"] for m in batch[1:]))
        # a batch of one message goes to its receiver's shard too, not to the sender's
        one = [make_message(r1, pagador_ispb=sender)]
        self.assertEqual(self.send(c, ts, sender, one).status, 201)
        self.assertEqual(self.sql(f"SELECT count(*) FROM pix.message WHERE end_to_end_id = '{one[0]['endToEndId']}'",
                                  self.conn_of(r1)), "1", "stored where its receiver reads")

    def test_move_keeps_tokens_and_idempotency(self):
        """A credentialed ISPB's partition moves to a new server: its token still reads there, a re-send
        to it is still a duplicate, and a revocation through the router reaches the new server."""
        sender = self.ispb_on(0)
        # not shard 1's first partition: the shards keep their numbers after the move
        first = int(self.sql("SELECT partitions[1] FROM pix_shards() WHERE shard = 1"))
        moving = next(i for i in iter(lambda: self.ispb_on(1), None)
                      if int(self.sql(f"SELECT pix_router.partition_number('{i}')")) != first)
        part = int(self.sql(f"SELECT pix_router.partition_number('{moving}')"))
        source = self.conn_of(moving)
        ts, tm = self.token(sender, "sender"), self.token(moving, "moving")
        to_moving = [make_message(moving, pagador_ispb=sender) for _ in range(2)]
        own = [make_message(sender, pagador_ispb=moving)]
        c = self.client()
        # an id whose message is delivered, confirmed (stop) and purged from the log before the move:
        # only pix.sent_message remembers it
        purged = [make_message(moving, pagador_ispb=sender)]
        self.assertEqual(self.send(c, ts, sender, purged).status, 201)
        r = self.call(c, "GET", f"/api/pix/{moving}/stream/start", tm)
        self.assertMessagesFor(r, moving, count=1)
        self.assertEqual(self.call(c, "DELETE", r.header("Pull-Next"), tm).status, 200)
        self.sql("SET pix.history_retention = 0; SELECT pix_purge_history(); SELECT pix_purge_history()", source)
        self.assertEqual(self.sql(f"SELECT count(*) FROM pix.message WHERE end_to_end_id = "
                                  f"'{purged[0]['endToEndId']}'", source), "0", "purged")
        self.assertEqual(self.send(c, ts, sender, to_moving).status, 201)
        self.assertEqual(self.send(c, tm, moving, own).status, 201)
        r = self.call(c, "GET", f"/api/pix/{moving}/stream/start", tm)
        self.assertEqual(r.status, 200, repr(r))
        pending = r.header("Pull-Next")

        target_dir = os.path.join(self.dir, "new")
        target = subprocess.run([os.path.join(ROOT, "scripts", "cluster.sh"), "start", target_dir, str(free_port())],
                                check=True, text=True, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                timeout=120).stdout.strip()
        type(self).extra_dirs.append(target_dir)  # serves the moved partition until the class ends
        self.sql("CREATE DATABASE pix", target)
        target_pix = target.replace("dbname=postgres", "dbname=pix")
        self.sql("CREATE ROLE pix_client NOLOGIN; CREATE ROLE pix_http LOGIN IN ROLE pix_client", target_pix)
        target_db = " ".join(p for p in target_pix.split() if not p.startswith("user="))
        as_moving = self.make_role("inst_moving", target_pix)  # a role bound to the moving ISPB
        self.sql(f"SELECT pix_role_bind('inst_moving', '{moving}')")
        shards_sh("move", self.router, target_db, str(part))
        with self.assertRaisesRegex(RuntimeError, "forbidden"):
            self.sql(f"SELECT * FROM pix_stream_start('{sender}')", as_moving)
        self.assertEqual(self.sql("SELECT count(*) FROM pix.role_binding b JOIN pg_roles r ON r.oid = b.role "
                                  f"WHERE r.rolname = 'inst_moving' AND b.ispb = '{moving}'", target_pix), "1",
                         "the binding is on the new server")
        self.assertEqual(self.sql(f"SELECT count(*) FROM pix.sent_message WHERE end_to_end_id IN "
                                  f"({','.join(repr(m['endToEndId']) for m in to_moving)})", source), "0",
                         "the moved receiver's sent ids left the source")

        # the same token, on the new server: the pending batch, then the stream goes on
        r = self.call(c, "GET", pending, tm)
        self.assertIn(r.status, (200, 204), repr(r))
        self.assertEqual(self.sql(f"SELECT count(*) FROM pix.credential WHERE credential_id = "
                                  f"{self.credential_id(moving, 'moving')}", target_pix), "1")
        # re-sends are duplicates: to the moved receiver, and by it
        r = self.send(c, ts, sender, to_moving)
        self.assertEqual((r.status, r.json()["duplicates"]), (201, 2), repr(r))
        r = self.send(c, tm, moving, own)
        self.assertEqual((r.status, r.json()["duplicates"]), (201, 1), repr(r))
        r = self.send(c, ts, sender, purged)
        self.assertEqual((r.status, r.json()["duplicates"]), (201, 1), "purged before the move: " + repr(r))
        changed = [dict(to_moving[0], valor="999.99")]
        self.assertProblem(self.send(c, ts, sender, changed), 409)
        # a token issued after the move is on the new server too; revocation reaches it
        tm2 = self.token(moving, "moving-after")
        self.assertIn(self.call(c, "GET", f"/api/pix/{moving}/stream/start", tm2).status, (200, 204))
        self.sql(f"SELECT pix_credential_revoke({self.credential_id(moving, 'moving')})")
        self.assertProblem(self.call(c, "GET", f"/api/pix/{moving}/stream/start", tm), 401)
