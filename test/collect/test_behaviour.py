"""What a user of pix-collect sees besides crashes: bad input is refused before any request and
changes nothing; an unreachable sink refuses to start (nothing confirmed that was not committed);
SIGTERM finishes the batch in hand, closes every stream and exits 0; a restart resumes from the
checkpoints; --exec hands batches to a command and confirms only on exit 0.

Seen failing: with main.c going on after a failed sink open, the unreachable-sink test failed (the
program ran on, reading from the server, instead of exiting 3); with collector_stop_all() dropping
the transfers without a DELETE, the SIGTERM test found 40 messages pending in 4 open streams; with
the shutdown waiting for a sink that is down, the sink-down test's SIGTERM was not answered in 30 s;
with collector_stop_all() dropping a stream/start in flight, the SIGTERM-at-start test found 1 to 6
streams left open (every run of it).

Nothing here reads the sink before pix-collect said it started (its tables exist then), and nothing
waits a fixed time for something to happen: each wait is on the condition itself, bounded.
"""

import json
import os
import signal
import stat
import time

import pixe2e
from pixe2e import PixTestCase, psql
from collecttest import Collect, queue_state, received, received_if_any, wait_until


class CollectCase(PixTestCase):
    def setUp(self):
        super().setUp()
        self.ispb = pixe2e.new_ispb()
        self.url = f"http://127.0.0.1:{self.pixd.port}"
        self.sink_db = f"collect_sink_{self.ispb}"
        self.sink = pixe2e.conninfo(self.sink_db)
        self.addCleanup(lambda: psql(f"DROP DATABASE IF EXISTS {self.sink_db} WITH (FORCE)", check=False))

    def database_exists(self, name):
        return psql(f"SELECT count(*) FROM pg_database WHERE datname = '{name}'").strip() == "1"


class TestBadInput(CollectCase):
    def test_malformed_arguments_exit_2_and_create_nothing(self):
        cases = [
            ["--url", "127.0.0.1:3000", "--ispb", self.ispb, "--into", self.sink],
            ["--url", "ftp://127.0.0.1:3000", "--ispb", self.ispb, "--into", self.sink],
            ["--url", self.url + "/api", "--ispb", self.ispb, "--into", self.sink],
            ["--url", self.url + "?x=1", "--ispb", self.ispb, "--into", self.sink],
            ["--url", self.url, "--ispb", "1234567", "--into", self.sink],
            ["--url", self.url, "--ispb", "1234567x", "--into", self.sink],
            ["--url", self.url, "--ispb", self.ispb],
            ["--url", self.url, "--ispb", self.ispb, "--into", self.sink, "--exec", "cat"],
            ["--url", self.url, "--ispb", self.ispb, "--into", self.sink, "--collectors", "0"],
            ["--url", self.url, "--ispb", self.ispb, "--into", self.sink, "--collectors", "six"],
            ["--url", self.url, "--ispb", self.ispb, "--into", self.sink, "--token-file", "/nonexistent"],
            ["--url", self.url, "--ispb", self.ispb, "--into", self.sink, "--cert", "/etc/hostname"],
            ["--url", self.url, "--ispb", self.ispb, "--into", self.sink, "--bogus"],
        ]
        pixe2e.insert_messages(self.db, self.ispb, 5)
        for args in cases:
            with self.subTest(args=args):
                c = Collect("x", "x", sink="x")
                c.args = [c.args[0]] + args
                self.assertEqual(c.run(timeout=30), 2, c.log())
                self.assertRegex(c.log(), r"pix-collect: .+")
        self.assertFalse(self.database_exists(self.sink_db), "a refused start created the sink's database")
        self.assertEqual(queue_state(self.db, self.ispb), (5, 0, 0), "a refused start touched the queue")

    def test_unreachable_sink_refuses_to_start_and_reads_nothing(self):
        pixe2e.insert_messages(self.db, self.ispb, 5)
        port = pixe2e.free_port()  # nobody listens there
        c = Collect(self.url, self.ispb, sink=f"host=127.0.0.1 port={port} dbname=x user=postgres connect_timeout=5")
        self.assertEqual(c.run(timeout=60), 3, c.log())
        self.assertIn("unreachable", c.log())
        self.assertEqual(queue_state(self.db, self.ispb), (5, 0, 0), "a start without a sink read from the server")

    def test_unreachable_server_confirms_nothing_and_keeps_trying(self):
        port = pixe2e.free_port()
        c = Collect(f"http://127.0.0.1:{port}", self.ispb, sink=self.sink).start().wait_started()
        wait_until(lambda: "calling the same URL again" in c.log(400) or c.proc.poll() is not None, 60,
                   step=0.05, what="a failed call retried")
        self.assertIsNone(c.proc.poll(), c.log())
        c.kill(signal.SIGTERM)
        self.assertEqual(c.proc.returncode, 0, c.log())
        self.assertIn("calling the same URL again", c.log())
        self.assertEqual(received(self.sink_db, None), [])


class TestRunning(CollectCase):
    def test_sigterm_commits_closes_every_stream_and_resumes(self):
        ids = set()
        for _ in range(6):
            ids |= set(pixe2e.insert_messages(self.db, self.ispb, 500))
        c = Collect(self.url, self.ispb, sink=self.sink).start().wait_started()
        wait_until(lambda: len(received(self.sink_db, None)) > 0, 60, what="the first batches committed")
        c.kill(signal.SIGTERM)
        self.assertEqual(c.proc.returncode, 0, c.log())
        ready, pending, open_streams = queue_state(self.db, self.ispb)
        got = received(self.sink_db, None)
        self.assertEqual((pending, open_streams), (0, 0), "streams left open or batches pending after SIGTERM")
        self.assertEqual(len(got) + ready, len(ids), "what is not committed must be ready again, nothing lost")
        self.assertEqual(psql(f"SELECT count(*) FROM pix_collect_checkpoint WHERE next_url <> ''",
                              dbname=self.sink_db).strip(), "0", "a closed stream's checkpoint was kept")
        again = Collect(self.url, self.ispb, sink=self.sink, extra=["--once"])
        self.assertEqual(again.run(timeout=120), 0, again.log())
        got = received(self.sink_db, None)
        self.assertEqual(sorted(got), sorted(ids))
        self.assertEqual(queue_state(self.db, self.ispb), (0, 0, 0))

    def test_sigterm_at_any_moment_of_the_start_closes_every_stream(self):
        """SIGTERM at 0 s, as soon as the sink is open (stream/start calls in flight), and a little later:
        exit 0, no stream left open, nothing pending, nothing lost. Seen failing before collector.c let a
        stream/start in flight finish: "a SIGTERM sent at the start line left 6 streams open"."""
        moments = [0.0, "started", 0.05, 0.3, 1.0]
        total = set()
        for moment in moments:
            with self.subTest(moment=moment):
                total |= set(pixe2e.insert_messages(self.db, self.ispb, 200))
                c = Collect(self.url, self.ispb, sink=self.sink).start()
                if moment == "started":
                    c.wait_started()
                else:
                    time.sleep(moment)
                c.kill(signal.SIGTERM)
                rc = c.proc.returncode
                # the only other outcome: the signal came before main() held it (the program's own
                # loader): killed by it, before it could make any request or write any line
                self.assertTrue(rc == 0 or (rc == -signal.SIGTERM and c.log() == ""), f"exit {rc}:\n{c.log()}")
                ready, pending, open_streams = queue_state(self.db, self.ispb)
                self.assertEqual((pending, open_streams), (0, 0),
                                 f"a SIGTERM at {moment} left {open_streams} streams open, {pending} pending:\n"
                                 f"{c.log()}")
                got = received_if_any(self.sink_db, None)
                self.assertEqual(len(got) + ready, len(total), "what is not committed must be ready again")
        again = Collect(self.url, self.ispb, sink=self.sink, extra=["--once"])
        self.assertEqual(again.run(timeout=120), 0, again.log())
        self.assertEqual(sorted(received(self.sink_db, None)), sorted(total))
        self.assertEqual(queue_state(self.db, self.ispb), (0, 0, 0))

    def test_fewer_collectors_close_the_streams_of_the_retired_slots(self):
        ids = set(pixe2e.insert_messages(self.db, self.ispb, 400))
        c = Collect(self.url, self.ispb, sink=self.sink).start().wait_started()
        wait_until(lambda: len(received(self.sink_db, None)) > 0, 60, what="the first batches committed")
        c.kill(signal.SIGKILL)
        two = Collect(self.url, self.ispb, sink=self.sink, collectors=2, extra=["--once"])
        self.assertEqual(two.run(timeout=120), 0, two.log())
        self.assertEqual(sorted(received(self.sink_db, None)), sorted(ids))
        self.assertEqual(queue_state(self.db, self.ispb), (0, 0, 0), two.log())

    def test_collectors_beyond_the_servers_limit_wait_on_429(self):
        ids = pixe2e.insert_messages(self.db, self.ispb, 300)
        c = Collect(self.url, self.ispb, sink=self.sink, collectors=8, extra=["--once"])
        self.assertEqual(c.run(timeout=120), 0, c.log())
        self.assertIn("HTTP 429, retrying after", c.log())
        self.assertEqual(sorted(received(self.sink_db, None)), sorted(ids))
        self.assertEqual(queue_state(self.db, self.ispb), (0, 0, 0))

    def test_message_stored_as_sent(self):
        msg = pixe2e.make_message(self.ispb, campoLivre='aspas " barra \\ e acentuação ç')
        psql(pixe2e.insert_sql([msg]), dbname=self.db)
        c = Collect(self.url, self.ispb, sink=self.sink, extra=["--once"])
        self.assertEqual(c.run(timeout=60), 0, c.log())
        row = psql(f"SELECT message::text FROM pix_received WHERE end_to_end_id = '{msg['endToEndId']}'",
                   dbname=self.sink_db).strip()
        stored = json.loads(row)
        self.assertEqual(stored["campoLivre"], msg["campoLivre"])
        self.assertEqual(psql(f"SELECT message->>'valor' FROM pix_received", dbname=self.sink_db).strip(),
                         msg["valor"], "valor must stay exact (numeric in jsonb, never a float)")


class TestSinkDown(CollectCase):
    def test_sigterm_with_the_sink_down_gives_the_batches_back(self):
        from test_kills import crash
        sink_pg = pixe2e.Cluster("collect-sink-down")
        sink_pg.start()
        self.addCleanup(sink_pg.stop)
        sink = f"{sink_pg.conninfo} dbname=bank"
        c = Collect(self.url, self.ispb, sink=sink).start()
        # every collector past its stream/start (a batch delivered by a start has no previous id to be
        # given back through: it waits for its stream to expire, docs/consuming.md "Limits")
        wait_until(lambda: psql("SELECT count(*) FROM pix_collect_checkpoint WHERE next_url <> ''", dbname="bank",
                                base=sink_pg.conninfo, check=False).stdout.strip() == "6", 60,
                   what="6 checkpoints")
        crash(sink_pg)
        ids = []  # they arrive now and stay in hand: nothing can be committed
        for _ in range(4):
            ids += pixe2e.insert_messages(self.db, self.ispb, 500)
        wait_until(lambda: queue_state(self.db, self.ispb)[1] > 0, 60, what="batches pending")
        c.kill(signal.SIGTERM)
        self.assertEqual(c.proc.returncode, 0, c.log())
        ready, pending, open_streams = queue_state(self.db, self.ispb)
        self.assertEqual((pending, open_streams), (0, 0), f"batches in hand were not given back:\n{c.log()}")
        sink_pg.start()
        again = Collect(self.url, self.ispb, sink=sink, extra=["--once"])
        self.assertEqual(again.run(timeout=120), 0, again.log())
        got = received("bank", sink_pg.conninfo)
        self.assertEqual(sorted(got), sorted(ids))
        self.assertEqual(queue_state(self.db, self.ispb), (0, 0, 0))


class TestExecSink(CollectCase):
    def test_a_command_failing_every_other_batch_gets_each_batch_again(self):
        d = os.path.join(pixe2e.TMP, f"exec-{self.ispb}")
        os.makedirs(d, exist_ok=True)
        script = os.path.join(d, "sink.sh")
        with open(script, "w") as f:
            f.write(f"""#!/bin/sh
# fails every other batch (after reading it), appends the others to out.jsonl
exec 9>"{d}/lock"
flock 9
n=$(cat "{d}/count" 2>/dev/null || echo 0)
n=$((n + 1))
echo "$n" > "{d}/count"
if [ $((n % 2)) -eq 1 ]; then cat > /dev/null; exit 1; fi
cat >> "{d}/out.jsonl"
""")
        os.chmod(script, os.stat(script).st_mode | stat.S_IXUSR)
        ids = pixe2e.insert_messages(self.db, self.ispb, 300)
        c = Collect(self.url, self.ispb, exec_cmd=script, extra=["--once"])
        self.assertEqual(c.run(timeout=120), 0, c.log())
        with open(os.path.join(d, "out.jsonl")) as f:
            lines = f.read().splitlines()
        got = [json.loads(line)["endToEndId"] for line in lines]
        self.assertEqual(set(got), set(ids), "every message reaches the command (at least once)")
        with open(os.path.join(d, "count")) as f:
            runs = int(f.read())
        self.assertGreaterEqual(runs, 2, "the command ran")
        self.assertIn("the command exited with 1", c.log())
        self.assertEqual(queue_state(self.db, self.ispb), (0, 0, 0))
        pixe2e.log(f"    {len(ids)} messages, {len(lines)} lines, {runs} runs of the command")
