"""Stream semantics over HTTP: implicit confirmation, retries, DELETE, ordering, long polling, expiry."""

import socket
import threading
import time
import unittest

import pixe2e
from pixe2e import (SLOW, Collector, Pixd, PixTestCase, conninfo, create_database, drop_database, generate,
                    insert_messages, insert_sql, log, make_message, messages_of, new_ispb, psql, queued_ids,
                    run_threads)


ID_SEQ = "pix.message_id_seq"


def leave_id_gap(db):
    """Moves the message id sequence 1000 ids ahead: what is enqueued next leaves a gap of ids below it."""
    psql(f"SELECT setval('{ID_SEQ}', (SELECT last_value FROM {ID_SEQ}) + 1000)", dbname=db)


def insert_below(db, ispb, n, e2e):
    """Enqueues n newer messages for ispb with ids BELOW that of message e2e (in the gap leave_id_gap left),
    then puts the sequence back past every id. The queue's order is the id: a batch requeued into the fresh
    range instead of at the head would come after these."""
    msgs = [make_message(ispb) for _ in range(n)]
    psql(f"SELECT setval('{ID_SEQ}', (SELECT id FROM pix.message WHERE end_to_end_id = '{e2e}') - 100); "
         f"{insert_sql(msgs)}; SELECT setval('{ID_SEQ}', (SELECT max(id) FROM pix.message))", dbname=db)
    return [m["endToEndId"] for m in msgs]


def fresh_reader(test, ispb):
    """A collector (one message per read) on a pixd of its own: backends that never claimed for this ISPB,
    so no remembered position in the fresh range (claim.c's hint) hides where a requeued batch went. One
    message per read: a batch is sorted by id within itself, so the head shows one read at a time."""
    pixd = Pixd(conninfo(test.db), wait_ms=500).start()
    test.addCleanup(pixd.stop)
    c = Collector(pixd, ispb)
    test.addCleanup(c.close)
    return c


def read_all(test, c, ispb, first):
    """The messages of the 200 `first` and of every next read until 204, in order."""
    got = test.assertMessagesFor(first, ispb)
    for _ in range(20):
        r = c.next()
        if r.status == 204:
            return got
        got += test.assertMessagesFor(r, ispb)
    test.fail("no 204 after 20 reads")


class TestConfirmation(PixTestCase):
    def test_oldest_first_one_by_one(self):
        ispb = new_ispb()
        ids = insert_messages(self.db, ispb, 3)
        ids += insert_messages(self.db, ispb, 2)
        c = self.collector(ispb)
        got = self.assertMessagesFor(c.start(), ispb, count=1)
        for _ in range(4):
            got += self.assertMessagesFor(c.next(), ispb, count=1)
        self.assertEqual(got, ids)
        self.assertEqual(c.next().status, 204)

    def test_only_messages_of_the_ispb(self):
        a, b = new_ispb(), new_ispb()
        generate(self.db, b, 5)
        ids_a = insert_messages(self.db, a, 2)
        generate(self.db, b, 5)
        c = self.collector(a, accept="multipart/json")
        self.assertEqual(self.assertMessagesFor(c.start(), a, count=2), ids_a)
        self.assertEqual(c.next().status, 204)

    def test_next_call_confirms_and_retry_replays_the_same_batch(self):
        ispb = new_ispb()
        ids = insert_messages(self.db, ispb, 3)
        c = self.collector(ispb)
        self.assertEqual(self.assertMessagesFor(c.start(), ispb), ids[:1])
        p1 = c.pull_next
        r2 = c.next()  # confirms ids[0], delivers ids[1]
        self.assertEqual(self.assertMessagesFor(r2, ispb), ids[1:2])
        p2 = c.pull_next
        self.assertNotEqual(p1, p2, "a read that delivers messages issues a new id")
        for _ in range(3):  # the collector lost the answer, several times
            again = c.retry()
            self.assertEqual(again.status, 200, repr(again))
            self.assertEqual(again.body, r2.body, "a retry replays the same batch, byte for byte")
            self.assertEqual(again.header("Pull-Next"), p2, "and the same Pull-Next")
        # nothing new was claimed by the retries: another stream sees ids[2] at once
        other = self.collector(ispb)
        self.assertEqual(self.assertMessagesFor(other.start(), ispb), ids[2:3])
        # the first stream goes on from p2: nothing left (ids[1] confirmed now)
        self.assertEqual(c.next().status, 204)
        self.assertEqual(other.next().status, 204)
        # the confirmed messages never come back, even to a new stream
        self.assertEqual(self.collector(ispb).start().status, 204)

    def test_retry_after_an_empty_read(self):
        """The collector lost the 204 of an empty read and calls the id it called last again: the
        retry is an ordinary read on the id the empty read kept (204, same Pull-Next, nothing
        replayed), and the id before it no longer replays the batch that read confirmed."""
        ispb = new_ispb()
        ids = insert_messages(self.db, ispb, 2)
        c = self.collector(ispb)
        self.assertEqual(self.assertMessagesFor(c.start(), ispb), ids[:1])
        p1 = c.pull_next
        self.assertEqual(self.assertMessagesFor(c.next(), ispb), ids[1:2])  # confirms ids[0]
        p2 = c.pull_next
        self.assertNotEqual(p1, p2)
        r = c.next()  # empty: confirms ids[1]
        self.assertEqual(r.status, 204, repr(r))
        self.assertEqual(c.pull_next, p2, "an empty read keeps the id (README)")
        self.assertEqual(c.previous, p2)
        for _ in range(2):  # the retry of the empty read, twice
            again = c.retry()
            self.assertEqual(again.status, 204, f"a retry of an empty read replays nothing: {again!r}")
            self.assertEqual(again.header("Pull-Next"), p2, repr(again))
        # p1 was the previous id while ids[1] was pending; ids[1] is confirmed now: no replay of it
        old = self.http.get(p1)
        self.assertNotEqual(old.status, 200, f"the id before the empty read replayed a confirmed batch: {old!r}")
        self.assertProblem(old, 410)
        # the retried id goes on: a new message comes through it, and the confirmed ones never again
        newer = insert_messages(self.db, ispb, 1)
        self.assertEqual(self.assertMessagesFor(c.retry(), ispb), newer)
        self.assertEqual(self.collector(ispb).start().status, 204, "ids[0..1] confirmed, newer pending")

    def test_delete_on_current_id_confirms(self):
        ispb = new_ispb()
        ids = insert_messages(self.db, ispb, 2)
        c = self.collector(ispb)
        self.assertEqual(self.assertMessagesFor(c.start(), ispb), ids[:1])
        r = c.delete()
        self.assertEqual(r.status, 200, repr(r))
        self.assertEqual(r.json(), {})
        d = self.collector(ispb, accept="multipart/json")
        self.assertEqual(self.assertMessagesFor(d.start(), ispb), ids[1:], "ids[0] was confirmed by DELETE")

    @unittest.skipIf(pixe2e.SHARDS, "needs the message id sequence of one database")
    def test_delete_on_previous_id_requeues_the_batch_to_the_head(self):
        ispb = new_ispb()
        leave_id_gap(self.db)
        ids = insert_messages(self.db, ispb, 4)
        c = self.collector(ispb)
        self.assertEqual(self.assertMessagesFor(c.start(), ispb), ids[:1])
        p1 = c.pull_next
        self.assertEqual(self.assertMessagesFor(c.next(), ispb), ids[1:2])  # confirms ids[0]
        p2 = c.pull_next
        # the collector never got the answer to p1: it closes from p1
        r = c.delete(p1)
        self.assertEqual(r.status, 200, repr(r))
        self.assertEqual(r.json(), {})
        self.assertProblem(self.http.get(p2), 410)
        self.assertProblem(self.http.get(p1), 410)
        lower = insert_below(self.db, ispb, 1, ids[0])  # newer, with an id below ids[1]'s
        d = fresh_reader(self, ispb)
        got = read_all(self, d, ispb, d.start())
        self.assertEqual(got[0], ids[1], "ids[1] back at the head, before a newer message with a lower id")
        self.assertEqual(sorted(got), sorted(ids[1:] + lower))

    @unittest.skipIf(pixe2e.SHARDS, "needs the message id sequence of one database")
    def test_requeued_message_goes_before_newer_ones_in_multipart(self):
        ispb = new_ispb()
        leave_id_gap(self.db)
        ids = insert_messages(self.db, ispb, 3)
        c = self.collector(ispb, accept="multipart/json")
        self.assertEqual(self.assertMessagesFor(c.start(), ispb), ids)
        p1 = c.pull_next
        newer = insert_messages(self.db, ispb, 2)
        # ids confirmed by the next call; newer claimed
        self.assertEqual(self.assertMessagesFor(c.next(), ispb), newer)
        self.assertEqual(c.delete(p1).status, 200)  # newer go back
        later = insert_below(self.db, ispb, 1, ids[0])  # newer still, with an id below all of them
        d = fresh_reader(self, ispb)
        got = read_all(self, d, ispb, d.start())
        self.assertEqual(got[:2], newer, "the requeued batch first, before a newer message with a lower id")
        self.assertEqual(sorted(got), sorted(newer + later))

    def test_old_ids_are_gone(self):
        ispb = new_ispb()
        insert_messages(self.db, ispb, 4)
        c = self.collector(ispb)
        c.start()
        p1 = c.pull_next
        c.next()
        c.next()
        # p1 is two reads old: neither current nor previous
        self.assertProblem(self.http.get(p1), 410)
        self.assertEqual(c.next().status, 200)


class TestLongPolling(PixTestCase):
    def test_message_inserted_while_waiting_is_answered_promptly(self):
        db = "pix_e2e_lp"
        pixd = Pixd(create_database(db), wait_ms=8000).start()
        self.addCleanup(drop_database, db)
        self.addCleanup(pixd.stop)
        for path in ("start", "next"):
            ispb = new_ispb()
            c = Collector(pixd, ispb)
            self.addCleanup(c.close)
            if path == "next":
                insert_messages(db, ispb, 1)
                self.assertEqual(c.start().status, 200)
            box = {}

            def read():
                box["r"] = c.start() if path == "start" else c.next()
                box["t"] = time.monotonic()

            t = threading.Thread(target=read, daemon=True)
            t0 = time.monotonic()
            t.start()
            time.sleep(0.7)
            self.assertTrue(t.is_alive(), "the read should be parked")
            msg = make_message(ispb)
            psql(insert_sql([msg]), dbname=db)
            t_commit = time.monotonic()
            t.join(12 * SLOW)
            self.assertFalse(t.is_alive())
            r = box["r"]
            self.assertEqual(r.status, 200, repr(r))
            self.assertEqual(self.assertMessagesFor(r, ispb), [msg["endToEndId"]])
            latency = box["t"] - t_commit
            log(f"\n    wake-up latency ({path}): {latency * 1000:.1f} ms after the INSERT committed "
                f"(psql exit); {(box['t'] - t0) * 1000:.0f} ms after the request")
            # woken, not answered by the deadline: within the first half of what was left of the 8 s wait
            # when the INSERT committed (a deadline answer comes at the end of it)
            self.assertLess(latency, (t0 + 8.0 - t_commit) / 2, "woken by the INSERT, not by the deadline")

    def test_default_wait_is_8_seconds(self):
        db = "pix_e2e_lp8"
        pixd = Pixd(create_database(db), wait_ms=None).start()  # no --wait-ms: the default
        self.addCleanup(drop_database, db)
        self.addCleanup(pixd.stop)
        ispb = new_ispb()
        c = Collector(pixd, ispb)
        self.addCleanup(c.close)
        r = c.start()
        self.assertEqual(r.status, 204, repr(r))
        log(f"\n    default wait: 204 after {r.elapsed * 1000:.0f} ms")
        self.assertGreaterEqual(r.elapsed, 7.9)
        self.assertLess(r.elapsed, 8.0 + 2.0 * SLOW)

    def test_six_parked_collectors_six_messages(self):
        db = "pix_e2e_six"
        pixd = Pixd(create_database(db), wait_ms=8000).start()
        self.addCleanup(drop_database, db)
        self.addCleanup(pixd.stop)
        ispb = new_ispb()
        cs = [Collector(pixd, ispb) for _ in range(6)]
        for c in cs:
            self.addCleanup(c.close)
        box = {}

        def produce():
            time.sleep(1.0)
            box["ids"] = insert_messages(db, ispb, 6)
            box["t"] = time.monotonic()

        t0 = time.monotonic()
        results = run_threads([c.start for c in cs] + [produce], timeout=20 * SLOW)
        rs = results[:6]
        got = []
        for r in rs:
            self.assertEqual(r.status, 200, f"every parked collector gets one: {r!r}")
            got += self.assertMessagesFor(r, ispb, count=1)
        self.assertEqual(sorted(got), sorted(box["ids"]), "each message once, none twice")
        slowest = max(r.elapsed for r in rs) - (box["t"] - t0)
        log(f"\n    6 parked collectors: last answer {slowest * 1000:.0f} ms after the INSERT")
        # every one woken, not answered by the deadline: the last within the first half of what was left of
        # the 8 s wait when the INSERT committed
        self.assertLess(slowest, (8.0 - (box["t"] - t0)) / 2, "all woken by the INSERT, not by the deadline")
        # a 7th start is refused while the 6 are open
        self.assertProblem(Collector(pixd, ispb).start(), 429)

    def test_lost_listener_connection_does_not_strand_a_collector(self):
        """The server's LISTEN connection dies while a collector waits and a message arrives meanwhile:
        the collector still gets it before its wait ends."""
        db = "pix_e2e_listen"
        pixd = Pixd(create_database(db), wait_ms=6000).start()
        self.addCleanup(drop_database, db)
        self.addCleanup(pixd.stop)
        ispb = new_ispb()
        c = Collector(pixd, ispb)
        self.addCleanup(c.close)
        box = {}

        def read():
            box["r"] = c.start()

        t = threading.Thread(target=read, daemon=True)
        t.start()
        time.sleep(0.7)
        killed = psql(f"SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE datname = '{db}' "
                      "AND query ILIKE 'LISTEN%'").strip()
        self.assertEqual(killed, "1", "the server's LISTEN connection should be visible in pg_stat_activity")
        t_insert = time.monotonic()
        ids = insert_messages(db, ispb, 1)
        t.join(10 * SLOW)
        r = box["r"]
        log(f"\n    after losing LISTEN: answered {r.status} {(time.monotonic() - t_insert) * 1000:.0f} ms "
            f"after the INSERT")
        self.assertEqual(r.status, 200, repr(r))
        self.assertEqual(self.assertMessagesFor(r, ispb), ids)
        self.assertLess(r.elapsed, 6.0, "before the deadline")
        # and notifications work again afterwards
        box.clear()
        t = threading.Thread(target=lambda: box.setdefault("r", c.next()), daemon=True)
        t.start()
        time.sleep(0.7)
        ids = insert_messages(db, ispb, 1)
        t_insert = time.monotonic()
        t.join(10 * SLOW)
        self.assertEqual(self.assertMessagesFor(box["r"], ispb), ids)
        self.assertLess(time.monotonic() - t_insert, 2.0, "woken by NOTIFY again, not by the deadline")

    def test_parked_collector_not_woken_by_another_ispb(self):
        ispb, other = new_ispb(), new_ispb()
        c = self.collector(ispb)
        box = {}

        def read():
            box["r"] = c.start()

        t = threading.Thread(target=read, daemon=True)
        t.start()
        time.sleep(0.3)
        insert_messages(self.db, other, 1)
        t.join(10 * SLOW)
        self.assertEqual(box["r"].status, 204, repr(box["r"]))


class TestExpiry(PixTestCase):
    """pix.stream_idle_timeout = 4s on a database of its own, and a server waiting 3 s (a wait shorter
    than the idle timeout, as in production: 8 s and 60 s)."""
    DB = "pix_e2e_expiry"
    IDLE = 4.0
    # A stream is dead once its last read is older than the timeout plus the slack (a sixteenth of it,
    # at most 15 s): see "Liveness" in the README. A product that expires later than that fails the
    # tests that sleep EXPIRES and expect the batch back at once.
    EXPIRES = IDLE + min(IDLE / 16, 15.0)
    WAIT = 3.0

    @classmethod
    def setUpClass(cls):
        cls.xdb = cls.DB
        create_database(cls.xdb, {"pix.stream_idle_timeout": f"{int(cls.IDLE)}s"})
        cls.xpixd = Pixd(conninfo(cls.xdb), wait_ms=int(cls.WAIT * 1000)).start()

    @classmethod
    def tearDownClass(cls):
        cls.xpixd.stop()
        drop_database(cls.xdb)

    def test_expired_batch_goes_to_the_next_reader_then_410(self):
        ispb = new_ispb()
        ids = insert_messages(self.xdb, ispb, 2)
        c1 = self.collector(ispb, pixd=self.xpixd)
        self.assertEqual(self.assertMessagesFor(c1.start(), ispb), ids[:1])
        time.sleep(self.EXPIRES + 0.6)
        c2 = self.collector(ispb, pixd=self.xpixd, accept="multipart/json")
        r = c2.start()
        self.assertEqual(self.assertMessagesFor(r, ispb), ids, "the expired batch first, same endToEndId")
        self.assertLess(r.elapsed, 1.0, "no need to wait: the batch was requeued")
        self.assertProblem(c1.client.get(c1.pull_next), 410)
        self.assertProblem(c1.client.delete(c1.pull_next), 410)

    def test_expired_stream_frees_its_slot(self):
        ispb = new_ispb()
        insert_messages(self.xdb, ispb, 6)
        cs = [self.collector(ispb, pixd=self.xpixd) for _ in range(6)]
        for c in cs:
            self.assertEqual(c.start().status, 200)
        self.assertProblem(self.collector(ispb, pixd=self.xpixd).start(), 429)
        time.sleep(self.EXPIRES + 0.6)
        c7 = self.collector(ispb, pixd=self.xpixd, accept="multipart/json")
        r = c7.start()
        self.assertEqual(r.status, 200, repr(r))
        self.assertEqual(len(messages_of(r)), 6, "all six expired batches come back")

    def test_a_stream_read_in_time_does_not_expire(self):
        ispb = new_ispb()
        ids = insert_messages(self.xdb, ispb, 3)
        c = self.collector(ispb, pixd=self.xpixd)
        got = self.assertMessagesFor(c.start(), ispb)
        for _ in range(2):
            time.sleep(self.IDLE - 1.5)
            got += self.assertMessagesFor(c.next(), ispb)
        self.assertEqual(got, ids)

    def test_parked_reader_gets_the_expired_batch_by_its_deadline(self):
        """c1 takes the message at t0 and vanishes; c2 starts reading at t0 + 2.75 s and waits up to 3 s.
        c1's stream expires at t0 + 4.25 s (timeout + a sixteenth), and pixd's sweep (every second) finds it
        by t0 + 5.25 s, before c2's wait ends (t0 + 5.75 s), while c2's own stream (read at t0 + 2.75 s) is
        alive: the batch is back before the wait ends, so the answer is 200 (woken by the sweep's NOTIFY),
        not 204. (A deadline with the listener up answers 204 without reading again: the margin must cover
        the sweep's period, which the quarter slack this test used to assume hid.)"""
        ispb = new_ispb()
        ids = insert_messages(self.xdb, ispb, 1)
        c1 = self.collector(ispb, pixd=self.xpixd)
        t0 = time.monotonic()
        self.assertEqual(self.assertMessagesFor(c1.start(), ispb), ids)
        start_c2 = self.EXPIRES - self.WAIT + 1.5
        time.sleep(start_c2 - (time.monotonic() - t0))
        c2 = self.collector(ispb, pixd=self.xpixd)
        r = c2.start()
        log(f"\n    parked reader answered {r.status} after {r.elapsed * 1000:.0f} ms "
            f"({(time.monotonic() - t0 - self.EXPIRES) * 1000:.0f} ms after the other stream expired)")
        self.assertEqual(r.status, 200, f"the expired batch should reach the parked reader: {r!r}")
        self.assertEqual(self.assertMessagesFor(r, ispb), ids)

    def test_collector_hanging_up_while_parked_loses_nothing(self):
        ispb = new_ispb()
        s = socket.create_connection(("127.0.0.1", self.xpixd.port))
        s.sendall(f"GET /api/pix/{ispb}/stream/start HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        time.sleep(0.5)
        s.close()  # hang up while parked
        t_insert = time.monotonic()
        ids = insert_messages(self.xdb, ispb, 1)  # wakes the dropped request: its claim cannot be written
        time.sleep(0.5)
        self.assertEqual(self.xpixd.client().get("/health").status, 200)
        self.assertTrue(self.xpixd.alive())
        # whatever the dropped request claimed comes back once its stream expires
        c = self.collector(ispb, pixd=self.xpixd)
        r = c.start()
        deadline = time.monotonic() + self.EXPIRES + 3 * self.WAIT
        while r.status == 204 and time.monotonic() < deadline:
            r = c.next()
        self.assertEqual(r.status, 200, repr(r))
        self.assertEqual(self.assertMessagesFor(r, ispb), ids)
        log(f"\n    message claimed for a hung-up collector redelivered {time.monotonic() - t_insert:.1f} s "
            f"after the INSERT (idle timeout {self.IDLE:.0f} s)")


class TestQueuedOrder(PixTestCase):
    def test_generator_messages_in_enqueue_order(self):
        ispb = new_ispb()
        generate(self.db, ispb, 25)
        expected = queued_ids(self.db, ispb)
        c = self.collector(ispb, accept="multipart/json")
        got = self.assertMessagesFor(c.start(), ispb, count=10)
        got += self.assertMessagesFor(c.next(), ispb, count=10)
        got += self.assertMessagesFor(c.next(), ispb, count=5)
        self.assertEqual(got, expected)



@unittest.skipIf(pixe2e.SHARDS, "needs one database's transaction ids")
class TestDurableReads(PixTestCase):
    def test_durable_reads_make_every_stream_call_take_a_transaction_id(self):
        """--durable-reads (README): every stream call takes a transaction id, so its COMMIT waits for the
        synchronous standby even when it wrote nothing. Ten empty reads (nexts after a start, all 204)
        on a pixd with it advance the next transaction id by at least ten; the same on a pixd without it
        by less than half that (A/B on one database, nothing else writing there)."""
        db = "pix_e2e_durable"
        create_database(db)
        self.addCleanup(drop_database, db)

        def xids_taken(extra):
            pixd = Pixd(conninfo(db), wait_ms=0, extra=extra).start()
            self.addCleanup(pixd.stop)
            c = Collector(pixd, new_ispb())
            self.addCleanup(c.close)
            self.assertEqual(c.start().status, 204)  # a connection of the pool is up: what follows is the reads
            before = int(psql("SELECT pg_snapshot_xmax(pg_current_snapshot())", dbname=db))
            for _ in range(10):
                r = c.next()
                self.assertEqual(r.status, 204, repr(r))
            taken = int(psql("SELECT pg_snapshot_xmax(pg_current_snapshot())", dbname=db)) - before
            self.assertEqual(pixd.stop(), 0)
            return taken

        plain, durable = xids_taken([]), xids_taken(["--durable-reads"])
        log(f"\n    transaction ids taken by 10 empty reads: {plain} without, {durable} with --durable-reads")
        self.assertGreaterEqual(durable, 10, "with --durable-reads every read takes a transaction id")
        self.assertLess(plain, 5, "without it, an empty read takes none")


if __name__ == "__main__":
    unittest.main()
