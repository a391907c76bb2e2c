"""pixd under crowds: collectors that leave, bursts, a saturated pool, short idle timeouts, bodies.

Every test runs its own pixd (flags of its own) over real sockets. Counts come from pixd's /metrics
(pixd_db_calls_total{function=...} counts the queries it sent, by SQL function).
"""

import os
import re
import resource
import selectors
import socket
import subprocess
import threading
import time
from collections import Counter

from pixe2e import (PGBIN, SLOW, Collector, Pixd, PixTestCase, conninfo, create_database, drop_database,
                    insert_messages, log, new_ispb, psql, raw_http, run_threads, shard_names)


def metrics(pixd):
    """/metrics as {name or name{labels}: float}."""
    r = pixd.client().get("/metrics")
    assert r.status == 200, repr(r)
    out = {}
    for line in r.body.decode().splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            out[name] = float(value)
    return out


def calls(m, function):
    return m[f'pixd_db_calls_total{{function="{function}"}}']


def wait_for(pixd, what, predicate, timeout):
    """Polls /metrics until predicate(metrics) holds; returns the metrics. Bounded."""
    deadline = time.monotonic() + timeout * SLOW
    while True:
        m = metrics(pixd)
        if predicate(m):
            return m
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not reached in {timeout * SLOW:.0f} s; metrics: "
                                 f"{ {k: v for k, v in m.items() if k.startswith('pixd_reads')} }")
        time.sleep(0.1)


def raise_fd_limit(n):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < n:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(n, hard), hard))


class RawPolls:
    """Many HTTP/1.1 GETs on raw sockets, one per connection, sent at once; answers read with a
    selector. A poll whose socket is closed is a collector that left."""

    def __init__(self, port, paths):
        self.socks = []
        for path in paths:
            s = socket.create_connection(("127.0.0.1", port), timeout=30)
            s.sendall(f"GET {path} HTTP/1.1\r\nHost: pix\r\n\r\n".encode())
            self.socks.append(s)

    def close(self):
        for s in self.socks:
            s.close()
        self.socks = []

    def statuses(self, timeout):
        """The status line and Retry-After of every answer: [(status, retry_after or None)]."""
        sel = selectors.DefaultSelector()
        bufs = {}
        for s in self.socks:
            s.setblocking(False)
            sel.register(s, selectors.EVENT_READ)
            bufs[s] = b""
        out = []
        deadline = time.monotonic() + timeout * SLOW
        while len(out) < len(self.socks) and time.monotonic() < deadline:
            for key, _ in sel.select(0.5):
                s = key.fileobj
                try:
                    chunk = s.recv(65536)
                except BlockingIOError:
                    continue
                bufs[s] += chunk
                if b"\r\n\r\n" in bufs[s] or not chunk:
                    head = bufs[s].split(b"\r\n\r\n", 1)[0].decode("latin-1")
                    m = re.match(r"HTTP/1\.1 (\d{3})", head)
                    ra = re.search(r"(?im)^retry-after:\s*(\d+)", head)
                    out.append((int(m.group(1)) if m else None, int(ra.group(1)) if ra else None))
                    sel.unregister(s)
        sel.close()
        if len(out) < len(self.socks):
            raise AssertionError(f"{len(self.socks) - len(out)} polls unanswered after {timeout * SLOW:.0f} s")
        return out


def start_paths(ispbs, per_ispb):
    return [f"/api/pix/{i}/stream/start" for i in ispbs for _ in range(per_ispb)]


class TestDepartedCollectors(PixTestCase):
    def test_parked_polls_whose_clients_left_cost_no_query(self):
        """N parked polls whose clients close their sockets: pixd notices while they are parked,
        frees their slots, and the deadline runs no query for them (pix_stream_next calls: +0)."""
        n = 300
        raise_fd_limit(n + 200)
        pixd = Pixd(conninfo(self.db), wait_ms=4000).start()
        self.addCleanup(pixd.stop)
        ispbs = [new_ispb() for _ in range(n // 5)]
        polls = RawPolls(pixd.port, start_paths(ispbs, 5))
        self.addCleanup(polls.close)
        before = wait_for(pixd, f"{n} parked", lambda m: m["pixd_reads_parked"] == n, 60)
        polls.close()
        after = wait_for(pixd, "every departed poll freed", lambda m: m["pixd_reads_in_progress"] == 0, 30)
        time.sleep(4.5 * SLOW)  # past every poll's deadline: a read still held would query now
        after = metrics(pixd)
        log(f"\n    {n} departed: next calls +{calls(after, 'pix_stream_next') - calls(before, 'pix_stream_next'):.0f},"
            f" departed counted {after['pixd_clients_departed_total'] - before['pixd_clients_departed_total']:.0f}")
        self.assertEqual(calls(after, "pix_stream_next"), calls(before, "pix_stream_next"),
                         "a departed poll cost a query")
        self.assertEqual(after["pixd_clients_departed_total"] - before["pixd_clients_departed_total"], n)
        self.assertEqual(after["pixd_reads_parked"], 0)

    def test_woken_read_of_a_departed_client_does_not_take_the_message(self):
        """B parks first, then A; B's client hangs up; a message arrives. With one pool connection B's
        read would run first and claim it (A would get 204 and the message would wait for B's
        stream to expire). A gets it."""
        pixd = Pixd(conninfo(self.db), wait_ms=8000, pool=1).start()
        self.addCleanup(pixd.stop)
        ispb = new_ispb()
        b = RawPolls(pixd.port, [f"/api/pix/{ispb}/stream/start"])
        self.addCleanup(b.close)
        wait_for(pixd, "B parked", lambda m: m["pixd_reads_parked"] == 1, 30)
        a = Collector(pixd, ispb)
        self.addCleanup(a.close)
        box = {}
        t = threading.Thread(target=lambda: box.update(r=a.start(timeout=60)), daemon=True)
        t.start()
        wait_for(pixd, "A parked", lambda m: m["pixd_reads_parked"] == 2, 30)
        b.close()
        ids = insert_messages(self.db, ispb, 1)
        t.join(30 * SLOW)
        self.assertFalse(t.is_alive(), "A answered")
        self.assertEqual(self.assertMessagesFor(box["r"], ispb), ids, "the live collector got the message")
        m = metrics(pixd)
        self.assertGreaterEqual(m["pixd_clients_departed_total"], 1)


class TestBackpressure(PixTestCase):
    def test_burst_of_starts_is_queued_not_refused(self):
        """3 000 starts sent within about a second, default queue: every one is answered 200/204, none
        503 (the queue holds what can be parked; the database keeps up within the wait)."""
        n = 3000
        raise_fd_limit(n + 500)
        pixd = Pixd(conninfo(self.db), wait_ms=8000, extra=["--no-access-log"]).start()
        self.addCleanup(pixd.stop)
        ispbs = [new_ispb() for _ in range(n // 6)]
        t0 = time.monotonic()
        polls = RawPolls(pixd.port, start_paths(ispbs, 6))
        self.addCleanup(polls.close)
        sent = time.monotonic() - t0
        got = Counter(st for st, _ in polls.statuses(60))
        log(f"\n    {n} starts sent in {sent:.2f} s: {dict(got)}")
        self.assertEqual(set(got) - {200, 204}, set(), f"statuses {dict(got)}")

    def test_refusals_spread_their_retry_after(self):
        """A queue far too small for the burst: the 503s carry Retry-After values that differ, so
        the refused clients do not come back in lockstep."""
        n = 400
        raise_fd_limit(n + 200)
        pixd = Pixd(conninfo(self.db), wait_ms=1000, pool=1, max_queue=10, extra=["--no-access-log"]).start()
        self.addCleanup(pixd.stop)
        polls = RawPolls(pixd.port, start_paths([new_ispb() for _ in range(n // 5)], 5))
        self.addCleanup(polls.close)
        answers = polls.statuses(60)
        retry = Counter(ra for st, ra in answers if st == 503)
        log(f"\n    statuses {dict(Counter(st for st, _ in answers))}, Retry-After values {dict(retry)}")
        self.assertGreater(sum(retry.values()), 20, "the burst was not refused enough to judge")
        self.assertNotIn(None, retry, "a 503 without Retry-After")
        self.assertGreater(len(retry), 1, "every refused client was told the same Retry-After")
        self.assertTrue(all(1 <= v <= 3 for v in retry), retry)

    def one_connection_pixd(self, db, wait_ms=2000):
        """A database of its own, pixd on it with one pool connection and this --wait-ms, and a
        collector of a new ISPB. Returns (pixd, collector)."""
        create_database(db)
        self.addCleanup(drop_database, db)
        pixd = Pixd(conninfo(db), wait_ms=wait_ms, pool=1).start()
        self.addCleanup(pixd.stop)
        c = Collector(pixd, new_ispb())
        self.addCleanup(c.close)
        return pixd, c

    def saturate_pool(self, pixd, db, queued=2):
        """pixd's one pool connection stuck behind a lock: pix.message locked (in the database, or in each
        shard of a router) and three sends that each run into it until the statement timeout (9 s), with
        at least `queued` calls in the queue behind them. Returns release(), which frees everything."""
        tables = shard_names(db) or [db]
        for d in tables:
            locker = subprocess.Popen([os.path.join(PGBIN, "psql"), "-X", "-q", conninfo(d), "-c",
                                       "BEGIN; LOCK TABLE pix.message IN EXCLUSIVE MODE; SELECT pg_sleep(60)"],
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            self.addCleanup(locker.kill)
        deadline = time.monotonic() + 30 * SLOW
        for d in tables:
            while psql("SELECT count(*) FROM pg_locks WHERE relation = 'pix.message'::regclass "
                       "AND mode = 'ExclusiveLock' AND granted", dbname=d).strip() != "1":
                self.assertLess(time.monotonic(), deadline, "the lock was never taken")
                time.sleep(0.05)
        busy = new_ispb()
        self.stuck_answered = []  # monotonic times the stuck calls got their answers

        def stuck():
            cl = pixd.client()
            try:
                return cl.post(f"/api/util/msgs/{busy}/1", timeout=120).status
            finally:
                self.stuck_answered.append(time.monotonic())
                cl.close()

        hogs = [threading.Thread(target=stuck, daemon=True) for _ in range(3)]
        for h in hogs:
            h.start()
        wait_for(pixd, "the pool stuck", lambda m: m["pixd_db_queue_length"] >= queued, 30)

        def release():
            for d in tables:
                psql("SELECT pg_terminate_backend(pid) FROM pg_locks WHERE relation = 'pix.message'::regclass "
                     "AND mode = 'ExclusiveLock'", dbname=d)
            for h in hogs:
                h.join(60 * SLOW)
        self.addCleanup(release)
        return release

    def test_deadline_read_answers_204_on_time_when_the_pool_is_saturated(self):
        """The one pool connection is stuck behind a lock (calls that each run into the statement
        timeout, 9 s): a parked continuation read, woken and queued behind them, is still queued at its
        2 s deadline; it is hurried out of the queue and answers 204 with its own Pull-Next, instead of
        503 when the 10 s queue timer runs out."""
        db = "pix_e2e_saturated"
        pixd, c = self.one_connection_pixd(db)
        ispb = c.ispb
        self.assertEqual(c.start().status, 204)
        box = {}
        t = threading.Thread(target=lambda: box.update(r=c.next(timeout=60), t=time.monotonic()), daemon=True)
        t.start()
        wait_for(pixd, "the read parked", lambda m: m["pixd_reads_parked"] == 1, 30)
        release = self.saturate_pool(pixd, db)
        # A notification (nothing new can be inserted: the lock) wakes the read; its query queues
        # behind the stuck calls and is still there at the deadline.
        psql(f"NOTIFY pix_message, '{ispb}'", dbname=db)
        t.join(60 * SLOW)
        self.assertFalse(t.is_alive())
        r = box["r"]
        log(f"\n    parked read under a saturated pool: {r.status} after {r.elapsed * 1000:.0f} ms")
        self.assertEqual(r.status, 204, repr(r))
        self.assertEqual(r.header("Pull-Next"), c.previous, "the same id again")
        # on time: while the pool was still stuck, before any of the calls ahead of it got an answer (they
        # run into the 9 s statement timeout; the queue timer is 10 s), not when the queue moved again
        self.assertEqual(self.stuck_answered, [], "a stuck call was answered before the 204")
        release()
        self.assertEqual(len(self.stuck_answered), 3)
        self.assertLess(box["t"], min(self.stuck_answered), "the 204 came before the stuck calls' answers")

    def test_retry_of_a_previous_id_is_not_answered_204_while_queued(self):
        """The 204 on time above is only for an id the database has answered empty. A collector that
        lost a batch retries its previous id while the pool is saturated: that read is queued past its
        2 s deadline, and only the database can say that its batch is due again, so it is not answered
        204; once the pool is free it replays the batch with the same Pull-Next."""
        db = "pix_e2e_saturated_retry"
        pixd, c = self.one_connection_pixd(db)
        insert_messages(db, c.ispb, 2)
        self.assertEqual(c.start().status, 200)
        batch = c.next()
        self.assertEqual(batch.status, 200, repr(batch))
        release = self.saturate_pool(pixd, db)
        box = {}
        t = threading.Thread(target=lambda: box.update(r=c.retry(timeout=60)), daemon=True)
        t.start()
        wait_for(pixd, "the retry queued", lambda m: m["pixd_db_queue_length"] >= 3, 30)
        time.sleep(3)  # past the 2 s deadline and the 250 ms a deadline read may wait for a connection
        self.assertTrue(t.is_alive(), f"answered while its query was still queued: {box.get('r')!r}")
        release()
        t.join(60 * SLOW)
        r = box["r"]
        self.assertEqual(r.status, 200, repr(r))
        self.assertEqual(r.body, batch.body, "the same batch again")
        self.assertEqual(r.header("Pull-Next"), c.pull_next, "the same Pull-Next again")

    def test_pool_coming_back_wakes_parked_reads(self):
        """The pool's one connection is cut while a read is parked (LISTEN stays up): when the pool is
        back, every parked read is woken and reads again, with no notification at all (a wake the
        pool refused while it was down would otherwise wait for the deadline)."""
        db = "pix_e2e_poolback"
        pixd, c = self.one_connection_pixd(db, wait_ms=8000)
        box = {}
        t = threading.Thread(target=lambda: box.update(r=c.start(timeout=60)), daemon=True)
        t.start()
        before = wait_for(pixd, "the read parked", lambda m: m["pixd_reads_parked"] == 1, 30)
        cut = psql("SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE datname = current_database() "
                   "AND pid <> pg_backend_pid() AND backend_type = 'client backend' AND query NOT LIKE 'LISTEN%'",
                   dbname=db).strip()
        self.assertEqual(cut, "1", "the pool's connection")
        after = wait_for(pixd, "a wake after the pool came back",
                         lambda m: m["pixd_wakeups_total"] > before["pixd_wakeups_total"], 6)
        self.assertEqual(after["pixd_notifications_total"], before["pixd_notifications_total"], "no NOTIFY")
        self.assertEqual(after["pixd_listener_up"], 1)
        t.join(30 * SLOW)
        self.assertFalse(t.is_alive(), "the woken read never answered")
        # it read again on the pool that came back (nothing there: parked again until its deadline)
        self.assertEqual(box["r"].status, 204, repr(box["r"]))
        self.assertTrue(box["r"].header("Pull-Next"), repr(box["r"]))


class TestKeepalive(PixTestCase):
    def six_started(self, db, idle_timeout, wait_ms):
        """A database of its own with this pix.stream_idle_timeout, pixd with this --wait-ms, and six
        collectors of one ISPB whose starts found nothing (204). Returns (pixd, ispb, collectors)."""
        create_database(db, {"pix.stream_idle_timeout": idle_timeout})
        self.addCleanup(drop_database, db)
        pixd = Pixd(conninfo(db), wait_ms=wait_ms).start()
        self.addCleanup(pixd.stop)
        ispb = new_ispb()
        cs = [Collector(pixd, ispb) for _ in range(6)]
        for c in cs:
            self.addCleanup(c.close)
        rs = run_threads([lambda c=c: c.start(timeout=60) for c in cs], 60 * SLOW)
        self.assertEqual([r.status for r in rs], [204] * 6, rs)
        return pixd, ispb, cs

    def test_parked_collector_outlives_a_short_idle_timeout(self):
        """pix.stream_idle_timeout 3 s, --wait-ms 8000: a collector parked on start, then on its id,
        is a live collector; it gets 204 (not 410) and its stream keeps working."""
        db = "pix_e2e_keepalive"  # (pix_streams_keepalive since 1.2: no skip that hides its absence)
        pixd, ispb, cs = self.six_started(db, "3s", 8000)
        rs = run_threads([lambda c=c: c.next(timeout=60) for c in cs], 60 * SLOW)
        self.assertEqual([r.status for r in rs], [204] * 6, f"parked continuations outlive the idle timeout: {rs}")
        box = {}
        t = threading.Thread(target=lambda: box.update(rs=run_threads([lambda c=c: c.next(timeout=60) for c in cs],
                                                                      60 * SLOW)), daemon=True)
        t.start()
        wait_for(pixd, "6 parked", lambda m: m["pixd_reads_parked"] == 6, 30)
        ids = insert_messages(db, ispb, 1)
        t.join(60 * SLOW)
        got = []
        for r in box["rs"]:
            self.assertIn(r.status, (200, 204), repr(r))
            if r.status == 200:
                got += self.assertMessagesFor(r, ispb)
        # A collector that got it waits here for the others, longer than the idle timeout, without
        # confirming: its stream expires and the batch is redelivered to a parked one (the contract).
        self.assertEqual(set(got), set(ids), "the message reached a parked collector")
        self.assertGreater(metrics(pixd)["pixd_keepalive_streams_total"], 0)

    def test_parked_collectors_reads_write_nothing(self):
        """pixd keeps its parked streams fresher than the extension's liveness slack, so the re-reads of
        parked collectors find nothing to write. pix.stream_idle_timeout 96 s: slack 6 s, keepalive
        every 4 s (a keepalive slower than the slack, e.g. every 7 s, leaves reads to write). Six
        collectors poll for 12 s with --wait-ms 1000; every write to their stream rows in that time is
        a keepalive, which marks all six in one transaction: the rows always share one xmin."""
        db = "pix_e2e_quiet"
        pixd, ispb, cs = self.six_started(db, "96s", 1000)
        stop = time.monotonic() + 12

        def poll(c):
            while time.monotonic() < stop:
                r = c.next(timeout=60)
                assert r.status == 204, repr(r)

        box = {}

        def poll_all():
            try:
                run_threads([lambda c=c: poll(c) for c in cs], 60 * SLOW)
            except BaseException as e:  # noqa: B036 - reported by the test's thread below
                box["error"] = e

        t = threading.Thread(target=poll_all, daemon=True)
        t.start()
        # The starts wrote each row in its own transaction: from the first keepalive on, one xmin.
        first = calls(metrics(pixd), "pix_streams_keepalive")
        wait_for(pixd, "a keepalive", lambda m: calls(m, "pix_streams_keepalive") > first, 30)
        tables = shard_names(db) or [db]
        samples, xmins = 0, set()
        while t.is_alive() and time.monotonic() < stop:
            rows = [x for d in tables for x in psql(
                f"SELECT xmin FROM pix.stream WHERE ispb = '{ispb}' AND state = 'o'", dbname=d).split()]
            self.assertEqual(len(rows), 6, rows)
            self.assertEqual(len(set(rows)), 1, f"a parked collector's read wrote its stream row: xmins {rows}")
            samples += 1
            xmins |= set(rows)
            time.sleep(0.1)
        t.join(60 * SLOW)
        self.assertNotIn("error", box, box.get("error"))
        log(f"\n    6 parked collectors polling 12 s: {samples} samples, {len(xmins)} keepalive transaction(s) seen")
        self.assertGreater(samples, 20)
        self.assertGreater(len(xmins), 1, "no keepalive marked the rows while they were polled")


class TestRequestBodies(PixTestCase):
    def test_a_body_no_route_takes_is_refused_before_it_is_read(self):
        """Headers announcing a body larger than any route takes (2 MB; the send route's limit is
        1 MiB), and no body: the answer is 413 at once, without waiting for bytes that never come.
        A small body on a route that takes none is 413 once read; an empty body is fine."""
        ispb = new_ispb()
        raw = raw_http(self.pixd.port, f"POST /api/util/msgs/{ispb}/1 HTTP/1.1\r\nHost: pix\r\n"
                                       f"Content-Length: 2000000\r\n\r\n".encode(), timeout=10)
        self.assertRegex(raw.split(b"\r\n", 1)[0].decode(), r"^HTTP/1\.1 413 ")
        self.assertEqual(self.http.post(f"/api/util/msgs/{ispb}/1", body=b"").status, 201)
        # pixd's own 413 (a problem document), and the refused calls inserted nothing: only the one above
        self.assertProblem(self.http.post(f"/api/util/msgs/{ispb}/1", body=b"{}"), 413)
        c = self.collector(ispb, accept="multipart/json")
        self.assertMessagesFor(c.start(), ispb, count=1)
        self.assertEqual(c.next().status, 204)
