"""Exactly once across crashes (issue 20): a producer sends payments through POST
/api/pix/{ispb}/msgs while pix-collect, with 6 collectors, writes them into the institution's own
PostgreSQL (a second cluster). The collector is SIGKILLed at random moments and restarted, 12 times;
pixd is killed and restarted once; the sink's PostgreSQL and the server's PostgreSQL each crash
(immediate shutdown) and come back once while a collector runs; and once the collector stays dead
longer than the server's stream idle timeout, right after a burst of 2 000 payments, so the streams
it held expire and their pending batches — committed in the sink or not — are delivered again to
new streams (the test checks that this happened). Then `--once` drains what is left.

What must hold at the end: every acknowledged endToEndId is in pix_received exactly once (the
primary key makes "at most once" structural; the real check is that none is missing and nothing
else is there), and the server's queue for the ISPB is empty — nothing ready, nothing pending, no
stream open.

Seen failing: with sink_pg.c broken on purpose to call Pull-Next as soon as a write is sent, before
its COMMIT's answer, this test reported "10 acknowledged payments missing from pix_received" (the
batch in flight when the sink crashed).
"""

import os
import random
import signal
import subprocess
import time
import unittest

import pixe2e
from pixe2e import Pixd, psql
from collecttest import Collect, Producer, queue_state, received, register, wait_until

IDLE_TIMEOUT_S = 6  # the server's pix.stream_idle_timeout here: an expiry within the test's time
KILLS = 12


def crash(cluster):
    """PostgreSQL's immediate shutdown (no checkpoint: crash recovery at the next start)."""
    cmd = [os.path.join(pixe2e.PGBIN, "pg_ctl"), "-D", os.path.join(cluster.dir, "data"), "-m", "immediate",
           "-w", "stop"]
    if os.geteuid() == 0:
        cmd = ["runuser", "-u", "postgres", "--"] + cmd
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, timeout=60)


class TestExactlyOnceAcrossKills(unittest.TestCase):
    def setUp(self):
        self.server_pg = pixe2e.Cluster("collect-server")
        self.sink_pg = pixe2e.Cluster("collect-sink")
        for c in (self.server_pg, self.sink_pg):
            c.start()
            self.addCleanup(c.stop)
        self.db = "pix_collect_kills"
        pixe2e.create_database(self.db, gucs={"pix.stream_idle_timeout": f"{IDLE_TIMEOUT_S}s"},
                               base=self.server_pg.conninfo)
        self.pixd = Pixd(pixe2e.conninfo(self.db, self.server_pg.conninfo), wait_ms=1000).start()
        self.addCleanup(lambda: self.pixd.kill())
        self.sink_db = "institution"  # pix-collect creates it
        self.sink = f"{self.sink_pg.conninfo} dbname={self.sink_db}"
        self.ispb, self.payer = pixe2e.new_ispb(), pixe2e.new_ispb()
        register(self.db, self.ispb, self.payer, base=self.server_pg.conninfo)

    def collect(self, *extra):
        return Collect(f"http://127.0.0.1:{self.pixd.port}", self.ispb, sink=self.sink, extra=extra)

    def test_every_acknowledged_payment_lands_once(self):
        rng = random.Random(20)
        producer = Producer(lambda: self.pixd.port, self.payer, self.ispb, batches=240, size=50,
                            pause=(0.02, 0.12), seed=20)
        producer.start()
        runs = []
        burst = []  # enqueued by plain INSERTs (acknowledged by their COMMIT)
        for i in range(KILLS):
            c = self.collect().start()
            runs.append(c)
            time.sleep(rng.uniform(0.3, 2.0))
            if i == 3:  # pixd dies under the collector and comes back on the same port
                self.pixd.kill()
                time.sleep(0.5)
                self.pixd = Pixd(self.pixd.db, wait_ms=1000, port=self.pixd.port).start()
                time.sleep(rng.uniform(0.5, 1.5))
            elif i == 6:  # the sink's PostgreSQL crashes while batches are being committed
                crash(self.sink_pg)
                time.sleep(0.5)
                self.sink_pg.start()
                time.sleep(rng.uniform(0.5, 1.5))
            elif i == 8:  # the server's PostgreSQL crashes
                crash(self.server_pg)
                time.sleep(0.5)
                self.server_pg.start()
                time.sleep(rng.uniform(0.5, 1.5))
            if i == 9:  # a burst, so that the kill below finds batches pending in every stream
                c.wait_started()  # not a fixed time: the run may still be waiting for the slots' locks
                for _ in range(4):
                    burst += pixe2e.insert_messages(self.db, self.ispb, 500, base=self.server_pg.conninfo)
                wait_until(lambda: queue_state(self.db, self.ispb, self.server_pg.conninfo)[1] > 0, 60,
                           step=0.02, what="batches pending before the long kill")
            self.assertIsNone(c.proc.poll(), f"run {i} exited on its own ({c.proc.returncode}):\n{c.log()}")
            c.kill(signal.SIGKILL)
            if i == 9:  # dead longer than the idle timeout: its streams expire, their batches requeue
                time.sleep(IDLE_TIMEOUT_S + 3)
        producer.join(300)
        self.assertFalse(producer.is_alive(), "the producer did not finish")
        self.assertIsNone(producer.error, f"producer: {producer.error!r}")

        # The streams of a collector killed between a start and its first commit are known to nobody:
        # they expire. Then one drain takes everything that is left.
        wait_until(lambda: queue_state(self.db, self.ispb, self.server_pg.conninfo)[2] == 0,
                   IDLE_TIMEOUT_S * 4, what="the orphaned streams expire")
        last = self.collect("--once")
        rc = last.run(timeout=180)
        self.assertEqual(rc, 0, last.log())

        acked = producer.acked + burst
        got = received(self.sink_db, self.sink_pg.conninfo)
        self.assertEqual(len(got), len(set(got)))
        missing = set(acked) - set(got)
        extra = set(got) - set(acked)
        self.assertFalse(missing, f"{len(missing)} acknowledged payments missing from pix_received, e.g. "
                                  f"{sorted(missing)[:5]}")
        self.assertFalse(extra, f"{len(extra)} rows nobody sent: {sorted(extra)[:5]}")
        self.assertEqual(len(got), len(acked))
        self.assertEqual(queue_state(self.db, self.ispb, self.server_pg.conninfo), (0, 0, 0),
                         "the server's queue (ready, pending, open streams) is not empty")
        redelivered = psql(f"SELECT coalesce(sum(redelivered), 0) FROM pix.stream WHERE ispb = '{self.ispb}'",
                           dbname=self.db, base=self.server_pg.conninfo).strip()
        pixe2e.log(f"    {len(acked)} payments ({producer.resends} resends), {KILLS} kills, "
                   f"{redelivered} messages delivered again after their stream expired")
        self.assertGreater(int(redelivered), 0, "the expiry path was not exercised (no batch was pending)")
