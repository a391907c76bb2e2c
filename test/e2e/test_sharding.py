"""A sharded deployment on this machine (scripts/shards.sh up): a router cluster in front of 4 shard clusters,
pixd on the router. Institutions on different shards never see each other's messages; a shard that is down
answers 503 for its institutions only; partitions move to a new server under load without losing or
duplicating a message; a batch sent for receivers on several shards lands on each receiver's shard."""

import json
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
        # back: the stream survived on its shard and the pending batch is confirmed by the next read
        deadline = time.monotonic() + 20 * SLOW
        while True:
            r = c.next()
            if r.status != 503 or time.monotonic() > deadline:
                break
            time.sleep(0.2)
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
        for i in ispbs:
            self.generate(i, 300)
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

        def collector(ispb):
            client = self.pixd.client()
            uri = f"/api/pix/{ispb}/stream/start"
            try:
                for _ in range(5000):
                    r = client.get(uri, headers={"Accept": "multipart/json"})
                    statuses[r.status] += 1
                    if r.status == 503:  # the partition is moving: the same call again a little later
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

        def producer(ispb):  # keeps enqueuing through the move (a 503 stored nothing; counted from the log)
            client = self.pixd.client()
            try:
                while not producing.is_set():
                    statuses["POST %d" % client.post(f"/api/util/msgs/{ispb}/5").status] += 1
                    time.sleep(0.02)
            finally:
                client.close()

        producers = [threading.Thread(target=producer, args=(i,), daemon=True) for i in ispbs]
        threads = [threading.Thread(target=collector, args=(i,), daemon=True) for i in ispbs for _ in range(2)]
        for t in threads + producers:
            t.start()
        time.sleep(0.5)
        shards_sh("move", self.router, target_db, *map(str, parts))
        time.sleep(0.5)
        producing.set()
        for t in producers:
            t.join(30 * SLOW)
        for i in ispbs:  # more after the move: enqueued and notified on the new server
            self.generate(i, 10)
        time.sleep(2.5)
        stop.set()
        for t in threads:
            t.join(60 * SLOW)
        self.assertEqual(errors, [])
        expected = []
        for i in ispbs:
            expected += self.sql(f"SELECT end_to_end_id FROM pix.message WHERE recebedor_ispb = '{i}'").split()
        self.assertGreaterEqual(len(expected), 3 * 310)
        twice = [k for k, v in Counter(deliveries).items() if v > 1]
        self.assertEqual(twice, [], "delivered more than once")
        self.assertEqual(set(expected) - set(deliveries), set(), "never delivered")
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

    def test_a_batch_for_several_shards_lands_on_each_receivers_shard(self):
        has_send = self.sql("SELECT count(*) FROM pg_proc WHERE proname = 'pix_messages_send'", self.shards[0])
        if has_send == "0":
            self.skipTest("the shards' extension has no pix_messages_send yet (pix 1.3)")
        sender = self.ispb_on(0)
        receivers = [self.ispb_on(k) for k in range(SHARDS)]
        batch = [make_message(r, pagador_ispb=sender) for r in receivers for _ in range(3)]
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
        bad = [make_message(r, pagador_ispb=sender) for r in receivers]
        bad[3]["valor"] = "-1"
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
        if self.sql("SELECT count(*) FROM pg_proc WHERE proname = 'pix_streams_keepalive'", self.shards[0]) != "0":
            # ids do not name their ISPB: every shard marks the ones it has, the router adds up
            self.assertEqual(self.sql(f"SELECT pix_streams_keepalive(ARRAY['{ids[0]}', '{ids[1]}', 'unknown'])"), "2")
        for i, iid in zip((a, b), ids):
            self.assertEqual(self.sql(f"SELECT pix_stream_stop('{i}', '{iid}')"), "0")
