"""Exactly-once drain: several ISPBs x 6 collectors following Pull-Next while producers enqueue."""

import random
import threading
import time
from collections import Counter

from pixe2e import (SLOW, Collector, PixTestCase, generate, insert_messages, log, messages_of, new_ispb,
                    queued_ids)

ISPBS = 3
COLLECTORS = 6
ROUNDS = 20  # per producer; each round enqueues 10 messages (INSERT, generator or HTTP, in turn)


class TestExactlyOnce(PixTestCase):
    def test_drain_while_producing(self):
        ispbs = [new_ispb() for _ in range(ISPBS)]
        deadline = time.monotonic() + 150 * SLOW
        done_at = []  # the time every producer had finished
        errors = []
        lock = threading.Lock()
        deliveries = []  # (ispb, collector index, stream number, endToEndId)
        stats = Counter()

        def producer(ispb, seed):
            rng = random.Random(seed)
            client = self.pixd.client()
            try:
                for i in range(ROUNDS):
                    kind = i % 3
                    if kind == 0:
                        insert_messages(self.db, ispb, 10)
                    elif kind == 1:
                        generate(self.db, ispb, 10)
                    else:
                        r = client.post(f"/api/util/msgs/{ispb}/10")
                        if r.status != 201:
                            raise AssertionError(f"util/msgs: {r!r}")
                    time.sleep(rng.uniform(0.0, 0.15))
            except BaseException as e:  # noqa: BLE001
                errors.append(("producer", ispb, e))
            finally:
                client.close()

        def collector(ispb, idx, seed):
            rng = random.Random(seed)
            accept = rng.choice([None, "application/json", "multipart/json", "multipart/json"])
            c = Collector(self.pixd, ispb, accept=accept)
            stream_no = 0
            try:
                started = time.monotonic()
                r = c.start()
                if r.status == 429:
                    raise AssertionError(f"429 with {COLLECTORS} collectors: {r!r}")
                for _ in range(3000):
                    if time.monotonic() > deadline:
                        raise AssertionError("drain did not finish in time")
                    if r.status == 200:
                        msgs = messages_of(r)
                        with lock:
                            for m in msgs:
                                if m["recebedor"]["ispb"] != ispb:
                                    raise AssertionError(f"message for {m['recebedor']['ispb']} read on {ispb}")
                                deliveries.append((ispb, idx, stream_no, m["endToEndId"]))
                            stats["batches"] += 1
                        if c.previous and not c.previous.endswith("/start") and rng.random() < 0.1:
                            again = c.retry()
                            stats["retries"] += 1
                            if again.status != 200 or again.body != r.body or \
                                    again.header("Pull-Next") != r.header("Pull-Next"):
                                raise AssertionError(f"retry differs: {r!r} vs {again!r}")
                        if rng.random() < 0.03:
                            d = c.delete()  # confirms this batch, closes the stream
                            if d.status != 200:
                                raise AssertionError(f"DELETE: {d!r}")
                            stats["restarts"] += 1
                            stream_no += 1
                            started = time.monotonic()
                            r = c.start()
                            continue
                    elif r.status == 204:
                        # an empty read that began after the last message was enqueued: this ISPB is drained
                        # (every batch still pending is confirmed by its collector's next call)
                        if done_at and started > done_at[0]:
                            break
                    else:
                        raise AssertionError(f"unexpected {r!r}")
                    started = time.monotonic()
                    r = c.next()
                else:
                    raise AssertionError("collector loop bound reached")
                d = c.delete()
                if d.status != 200:
                    raise AssertionError(f"final DELETE: {d!r}")
            except BaseException as e:  # noqa: BLE001
                errors.append(("collector", ispb, idx, e))
            finally:
                c.close()

        t0 = time.monotonic()
        producers = [threading.Thread(target=producer, args=(i, n), daemon=True) for n, i in enumerate(ispbs)]
        collectors = [threading.Thread(target=collector, args=(i, k, 1000 * n + k), daemon=True)
                      for n, i in enumerate(ispbs) for k in range(COLLECTORS)]
        for t in collectors + producers:
            t.start()
        for t in producers:
            t.join(max(0.0, deadline - time.monotonic()))
        done_at.append(time.monotonic())
        for t in collectors:
            t.join(max(0.0, deadline - time.monotonic()))
        elapsed = time.monotonic() - t0
        self.assertFalse(any(t.is_alive() for t in producers + collectors), "threads still running")
        self.assertEqual(errors, [])

        counts = Counter(d[3] for d in deliveries)
        twice = {k: v for k, v in counts.items() if v > 1}
        total = 0
        for ispb in ispbs:
            expected = queued_ids(self.db, ispb)
            total += len(expected)
            self.assertEqual(len(expected), ROUNDS * 10)
            got = [d[3] for d in deliveries if d[0] == ispb]
            missing = set(expected) - set(got)
            self.assertEqual(missing, set(), f"{ispb}: {len(missing)} messages never delivered")
            self.assertEqual(set(got) - set(expected), set())
        if twice:
            where = {k: [d[:3] for d in deliveries if d[3] == k] for k in list(twice)[:5]}
            self.fail(f"{len(twice)} messages delivered more than once, e.g. {where}")
        log(f"\n    drained {total} messages over {ISPBS} ISPBs x {COLLECTORS} collectors in {elapsed:.1f} s "
            f"({stats['batches']} batches, {stats['retries']} retries, {stats['restarts']} stream restarts)")
        # nothing is left: a fresh stream of each ISPB finds nothing
        for ispb in ispbs:
            c = self.collector(ispb, accept="multipart/json")
            r = c.start()
            self.assertEqual(r.status, 204, f"{ispb}: left over {r!r}")
            c.delete()


if __name__ == "__main__":
    import unittest
    unittest.main()
