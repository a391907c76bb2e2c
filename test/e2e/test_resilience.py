"""The server restarting under a collector, and PostgreSQL going away under the server."""

import signal
import threading
import time

from pixe2e import (SLOW, Client, Cluster, Collector, DroppingProxy, Pixd, PixTestCase, Response, conninfo,
                    create_database, insert_messages, log, new_ispb, psql, run_threads)


class TestShimRestart(PixTestCase):
    def test_restart_mid_stream_loses_nothing(self):
        ispb = new_ispb()
        ids = insert_messages(self.db, ispb, 6)
        p1 = Pixd(conninfo(self.db), wait_ms=1000).start()
        self.addCleanup(p1.kill)
        c = Collector(p1, ispb)
        self.addCleanup(c.close)
        got = self.assertMessagesFor(c.start(), ispb)
        last = c.next()
        got += self.assertMessagesFor(last, ispb)
        c.close()
        rc = p1.stop()
        self.assertEqual(rc, 0, f"SIGTERM exits 0\n{p1.log_tail()}")

        p2 = Pixd(conninfo(self.db), wait_ms=1000).start()
        self.addCleanup(p2.stop)
        c.client = Client(p2.port)
        # the answer to the last call was lost in the restart: the retry replays it
        again = c.retry()
        self.assertEqual(again.status, 200, repr(again))
        self.assertEqual(again.body, last.body)
        self.assertEqual(again.header("Pull-Next"), last.header("Pull-Next"))
        for _ in range(10):
            r = c.next()
            if r.status == 204:
                break
            got += self.assertMessagesFor(r, ispb)
        self.assertEqual(got, ids, "every message once, in order, across the restart")

    def test_sigterm_answers_parked_polls_at_once_and_exits_0(self):
        ispb = new_ispb()
        p1 = Pixd(conninfo(self.db), wait_ms=8000).start()
        self.addCleanup(p1.kill)
        ids = insert_messages(self.db, ispb, 1)
        c = Collector(p1, ispb)
        self.addCleanup(c.close)
        self.assertEqual(self.assertMessagesFor(c.start(), ispb), ids)
        box = {}

        def read():
            try:
                box["r"] = c.next()  # confirms ids[0], then parks
            except Exception as e:  # noqa: BLE001
                box["e"] = e

        t = threading.Thread(target=read, daemon=True)
        t.start()
        time.sleep(0.8)
        self.assertTrue(t.is_alive(), "parked")
        t_term = time.monotonic()
        p1.signal(signal.SIGTERM)
        t.join(5 * SLOW)
        self.assertFalse(t.is_alive(), "the parked poll is answered at shutdown")
        self.assertNotIn("e", box, f"parked poll dropped at shutdown: {box.get('e')!r}")
        r = box["r"]
        self.assertEqual(r.status, 204, repr(r))
        log(f"\n    parked poll answered {(time.monotonic() - t_term) * 1000:.0f} ms after SIGTERM")
        rc = p1.proc.wait(10 * SLOW)
        self.assertEqual(rc, 0, p1.log_tail())

        # the next server continues the same stream
        p2 = Pixd(conninfo(self.db), wait_ms=1000).start()
        self.addCleanup(p2.stop)
        c.client = Client(p2.port)
        more = insert_messages(self.db, ispb, 2)
        got = self.assertMessagesFor(c.next(), ispb)
        got += self.assertMessagesFor(c.next(), ispb)
        self.assertEqual(got, more)

    def test_sigkill_while_parked_then_continue(self):
        ispb = new_ispb()
        ids = insert_messages(self.db, ispb, 1)
        p1 = Pixd(conninfo(self.db), wait_ms=8000).start()
        self.addCleanup(p1.kill)
        c = Collector(p1, ispb)
        self.addCleanup(c.close)
        got = self.assertMessagesFor(c.start(), ispb)
        box = {}

        def read():
            try:
                box["r"] = c.next()
            except Exception as e:  # noqa: BLE001
                box["e"] = e

        t = threading.Thread(target=read, daemon=True)
        t.start()
        time.sleep(0.8)
        p1.kill()  # crash
        t.join(5)
        self.assertFalse(t.is_alive())
        self.assertIn("e", box, "a crashed server cannot answer")
        p2 = Pixd(conninfo(self.db), wait_ms=1000).start()
        self.addCleanup(p2.stop)
        c.client = Client(p2.port)
        more = insert_messages(self.db, ispb, 2)
        # the collector calls the same URI again (it never got an answer)
        for _ in range(5):
            r = c.next()
            if r.status == 204:
                break
            got += self.assertMessagesFor(r, ispb)
        self.assertEqual(got, ids + more)


def parse_raw(raw):
    """A raw HTTP/1.1 response (as the proxy swallowed it) as a Response."""
    head, body = raw.split(b"\r\n\r\n", 1)
    lines = head.decode("latin-1").split("\r\n")
    headers = [tuple(x.strip() for x in line.split(":", 1)) for line in lines[1:]]
    return Response(int(lines[0].split()[1]), headers, body, 0.0)


class TestCommittedThenDropped(PixTestCase):
    """The server commits, then the connection breaks before the answer reaches the client (a proxy
    between them swallows the response). The client must not re-send by itself; what happens next is
    the collector's retry, which the contract defines."""

    def proxy(self):
        p = DroppingProxy(self.pixd.port)
        self.addCleanup(p.close)
        return p

    def test_lost_answer_of_a_read_is_replayed_by_the_retry_of_its_id(self):
        ispb = new_ispb()
        ids = insert_messages(self.db, ispb, 3)
        proxy = self.proxy()
        c = Collector(proxy.port, ispb)
        self.addCleanup(c.close)
        got = self.assertMessagesFor(c.start(), ispb)
        p1 = c.pull_next
        proxy.drop = 1
        with self.assertRaises(ConnectionError, msg="the dropped answer must reach the test as an error"):
            c.next()  # the server confirms ids[0] and delivers ids[1]; the answer is lost
        self.assertEqual([m for m, _ in proxy.forwarded], ["GET", "GET"], "sent once, never re-sent")
        lost = parse_raw(proxy.dropped[0])
        self.assertEqual(self.assertMessagesFor(lost, ispb), ids[1:2], "the server had committed the read")
        # the collector's retry: the id it called last
        again = c.client.get(p1)
        self.assertEqual(again.status, 200, repr(again))
        self.assertEqual(again.body, lost.body, "the retry replays the lost batch byte for byte")
        self.assertEqual(again.header("Pull-Next"), lost.header("Pull-Next"))
        got += self.assertMessagesFor(again, ispb)
        c.pull_next = again.header("Pull-Next")
        got += self.assertMessagesFor(c.next(), ispb)
        self.assertEqual(c.next().status, 204)
        self.assertEqual(got, ids, "every message once, in order, across the lost answer")

    def test_post_committed_then_dropped_is_not_sent_again(self):
        ispb = new_ispb()
        proxy = self.proxy()
        client = Client(proxy.port)
        self.addCleanup(client.close)
        self.assertEqual(client.get("/health").status, 200)  # a keep-alive connection, reused next
        proxy.drop = 1
        with self.assertRaises(ConnectionError):
            client.post(f"/api/util/msgs/{ispb}/3")
        self.assertEqual(proxy.forwarded, [("GET", "/health"), ("POST", f"/api/util/msgs/{ispb}/3")],
                         "the POST went out once: no silent re-send")
        self.assertEqual(parse_raw(proxy.dropped[0]).status, 201, "the server committed it")
        n = int(psql(f"SELECT count(*) FROM pix.message WHERE recebedor_ispb = '{ispb}'", dbname=self.db))
        self.assertEqual(n, 3, "three messages, once")
        self.assertEqual(client.get("/health").status, 200, "the client goes on on a new connection")
        self.assertEqual(len(proxy.forwarded), 3)


class TestDatabaseDown(PixTestCase):
    """On a cluster of its own: stops and restarts PostgreSQL under a running server."""

    @classmethod
    def setUpClass(cls):
        cls.cluster = Cluster("pgdown")
        cls.base = cls.cluster.start()
        cls.ddb = "pix_down"
        create_database(cls.ddb, base=cls.base)

    @classmethod
    def tearDownClass(cls):
        try:
            cls.cluster.stop()
        except Exception:  # noqa: BLE001
            pass

    def wait_health(self, client, status, timeout):
        deadline = time.monotonic() + timeout
        r = None
        while time.monotonic() < deadline:
            r = client.get("/health", timeout=10)
            if r.status == status:
                return r, timeout - (deadline - time.monotonic())
            time.sleep(0.2)
        self.fail(f"/health did not become {status} within {timeout} s: {r!r}")

    def test_503_while_down_then_recovery_without_restart(self):
        ispb = new_ispb()
        ids = insert_messages(self.ddb, ispb, 3, base=self.base)
        pixd = Pixd(conninfo(self.ddb, self.base), wait_ms=1000).start()
        self.addCleanup(pixd.stop)
        http = pixd.client()
        self.addCleanup(http.close)
        self.assertEqual(http.get("/health").status, 200)
        c = Collector(pixd, ispb)
        self.addCleanup(c.close)
        got = self.assertMessagesFor(c.start(), ispb)

        self.cluster.stop()
        try:
            r, took = self.wait_health(http, 503, 15 * SLOW)
            log(f"\n    /health 503 {took * 1000:.0f} ms after PostgreSQL stopped")
            other = Collector(pixd, new_ispb())
            self.addCleanup(other.close)
            for label, call in [("continuation", lambda: c.client.get(c.pull_next, timeout=15)),
                                ("start", lambda: other.client.get(f"/api/pix/{other.ispb}/stream/start",
                                                                   timeout=15)),
                                ("delete", lambda: c.client.delete(c.pull_next, timeout=15)),
                                ("util/msgs", lambda: http.post(f"/api/util/msgs/{ispb}/1", timeout=15))]:
                for _ in range(3):
                    r = call()
                    self.assertProblem(r, 503, label)
                    self.assertRetryAfter(r)
                    self.assertLess(r.elapsed, 3.0 * SLOW, f"{label}: 503 quickly, {r!r}")
            self.assertTrue(pixd.alive(), "the server keeps running")
        finally:
            self.cluster.start()

        r, took = self.wait_health(http, 200, 30 * SLOW)
        log(f"\n    /health 200 again {took * 1000:.0f} ms after PostgreSQL restarted")
        # the same collector continues with the Pull-Next it holds: nothing lost, nothing twice
        deadline = time.monotonic() + 30 * SLOW
        while time.monotonic() < deadline:
            r = c.next(timeout=15)
            if r.status == 503:  # pool still reconnecting
                time.sleep(0.5)
                continue
            if r.status == 204:
                break
            got += self.assertMessagesFor(r, ispb)
        self.assertEqual(got, ids)
        self.assertTrue(pixd.alive())
        self.assertEqual(pixd.stop(), 0)

    def test_start_while_down_then_up(self):
        pixd = Pixd(conninfo(self.ddb, self.base), wait_ms=1000).start()
        self.addCleanup(pixd.stop)
        http = pixd.client()
        self.addCleanup(http.close)
        self.cluster.stop()
        try:
            self.wait_health(http, 503, 15 * SLOW)
        finally:
            self.cluster.start()
        self.wait_health(http, 200, 30 * SLOW)
        ispb = new_ispb()
        ids = insert_messages(self.ddb, ispb, 1, base=self.base)
        c = Collector(pixd, ispb)
        self.addCleanup(c.close)
        self.assertEqual(self.assertMessagesFor(c.start(), ispb), ids)


class TestOverload(PixTestCase):
    def test_queue_bound_answers_503_with_retry_after(self):
        """--pool 1 --max-queue 2 and 24 concurrent slow calls: beyond the bound, 503 + Retry-After at once;
        never a dropped connection; the server serves normally afterwards."""
        pixd = Pixd(conninfo(self.db), wait_ms=1000, pool=1, max_queue=2).start()
        self.addCleanup(pixd.stop)
        ispb = new_ispb()

        def call():
            cl = pixd.client()
            try:
                return cl.post(f"/api/util/msgs/{ispb}/3000", timeout=60)
            finally:
                cl.close()

        rs = run_threads([call] * 24, timeout=120 * SLOW)
        statuses = sorted(r.status for r in rs)
        log(f"\n    statuses under overload: {statuses}")
        self.assertTrue(set(statuses) <= {201, 503}, statuses)
        self.assertIn(503, statuses, "the queue bound was never reached")
        for r in rs:
            if r.status == 503:
                self.assertProblem(r, 503)
                self.assertRetryAfter(r)
        c = Collector(pixd, ispb, accept="multipart/json")
        self.addCleanup(c.close)
        self.assertEqual(c.start().status, 200)
        self.assertEqual(pixd.client().get("/health").status, 200)


class TestServerWithoutDatabase(PixTestCase):
    def test_server_starts_and_answers_503_when_the_database_never_was_there(self):
        pixd = Pixd("host=127.0.0.1 port=1 dbname=x user=postgres connect_timeout=1", wait_ms=1000).start()
        self.addCleanup(pixd.stop)
        http = pixd.client()
        self.addCleanup(http.close)
        r = http.get("/health", timeout=10)
        self.assertEqual(r.status, 503, repr(r))
        r = http.get(f"/api/pix/{new_ispb()}/stream/start", timeout=10)
        self.assertProblem(r, 503)
        self.assertRetryAfter(r)
        self.assertProblem(http.get("/nope"), 404, "routing needs no database")
        self.assertEqual(pixd.stop(), 0)

    def test_bad_input_is_400_even_without_a_database(self):
        """'never a 5xx for bad input': a malformed ISPB is the client's error whatever the database does."""
        pixd = Pixd("host=127.0.0.1 port=1 dbname=x user=postgres connect_timeout=1", wait_ms=1000).start()
        self.addCleanup(pixd.stop)
        http = pixd.client()
        self.addCleanup(http.close)
        self.assertProblem(http.get("/api/pix/abc/stream/start", timeout=10), 400)
        self.assertProblem(http.post(f"/api/util/msgs/{new_ispb()}/0", timeout=10), 400)


if __name__ == "__main__":
    import unittest
    unittest.main()
