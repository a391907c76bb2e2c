--
-- 03_expiry: a stream not read for pix.stream_idle_timeout is dead.
--
-- Its ids answer "gone" (PX005) at once. Its slot and its pending batch come back when a sweep
-- runs: every start and every read of its ISPB sweeps that ISPB first (so the batch goes to that
-- very reader, at the head of the queue), and pix_expire_streams() sweeps all ISPBs and says how
-- many streams it expired. The timeout is a superuser GUC; this suite sets it per step, so no
-- step depends on how fast the machine is: a stream is made idle by sleeping well past a short
-- timeout, and kept alive by a long one. A stream dies once its recorded last read is older than
-- the timeout plus the liveness slack (a quarter of it, at most 15 s: see 09_liveness), so the
-- sleeps are longer than 1.25 times the short timeouts.
--
-- The helpers are the ones of 02_streams: ids are kept by name, messages shown by label.
-- Recipients used here: 03000001 .. 03000009.
--
CREATE SCHEMA t03;
SET search_path = t03, public;
\i sql/include/stream_helpers.sql

-- Earlier suites may have left idle streams: sweep them now, so the counts below are ours.
SET pix.stream_idle_timeout = '1ms';
SELECT pg_sleep(0.01);
SELECT pix_expire_streams() >= 0 AS swept;
RESET pix.stream_idle_timeout;
SHOW pix.stream_idle_timeout;

--
-- 1. An idle stream: its ids are gone at once, for reads and stops alike. A call that answers
--    "gone" writes nothing; the sweep (here pix_expire_streams) closes the stream and puts its
--    pending batch back on the ready queue.
--
SET pix.stream_idle_timeout = '10min';
SELECT enqueue('03000001', 1, 2, 3);
SELECT start('03000001', 2, 'a1');
SELECT read('03000001', 'a1', 1, 'a2');
SELECT pg_sleep(0.5);
SET pix.stream_idle_timeout = '200ms';
SELECT read('03000001', 'a2', 1, 'x') AS current_id, read('03000001', 'a1', 1, 'x') AS previous_id,
       stop('03000001', 'a2') AS stop_current, stop('03000001', 'a1') AS stop_previous;
SELECT queue('03000001');
SELECT pix_expire_streams() AS expired;
SELECT queue('03000001');
SELECT s.state, cardinality(s.pending_ids) AS pending, s.closed_at IS NOT NULL AS closed
  FROM pix.stream s JOIN id ON id.iid = s.current_iid WHERE id.name = 'a2';
SELECT id.name, i.confirmed_at IS NOT NULL AS confirmed, i.requeued_at IS NOT NULL AS requeued
  FROM pix.iteration i JOIN id ON id.iid = i.iid WHERE id.name IN ('a1', 'a2') ORDER BY i.seq;
-- Expired is final: a longer timeout does not bring the stream back.
SET pix.stream_idle_timeout = '10min';
SELECT read('03000001', 'a2', 1, 'x');
-- The next reader gets m3 again, with the same endToEndId.
SELECT start('03000001', 10, 'b1');
SELECT stop('03000001', 'b1');
SELECT queue('03000001');
SELECT pix_expire_streams() AS expired;

--
-- 2. A start sweeps its ISPB first: the idle streams' slots are free again and their batches go
--    to this very start, oldest first.
--
SET pix.max_collectors = 2;
SELECT enqueue('03000002', 1, 2, 3);
SELECT start('03000002', 1, 'c1'), start('03000002', 1, 'd1');
SELECT start('03000002', 1, 'e1');
SELECT pg_sleep(0.5);
SET pix.stream_idle_timeout = '200ms';
SELECT start('03000002', 10, 'e1');
SET pix.stream_idle_timeout = '10min';
RESET pix.max_collectors;
SELECT open_streams('03000002'), queue('03000002');
SELECT read('03000002', 'c1', 1, 'x') AS c1, read('03000002', 'd1', 1, 'x') AS d1;
SELECT stop('03000002', 'e1');

--
-- 3. A read sweeps its ISPB too (never its own stream): f is idle, g is not; g's read takes f's
--    batch.
--
SELECT enqueue('03000003', 1, 2, 3);
SELECT start('03000003', 1, 'f1');
SELECT pg_sleep(0.8);
SELECT start('03000003', 1, 'g1');
SET pix.stream_idle_timeout = '500ms';  -- dead after 625 ms: 500 plus the slack (a quarter)
SELECT read('03000003', 'g1', 10, 'g2');
SET pix.stream_idle_timeout = '10min';
SELECT read('03000003', 'f1', 1, 'x') AS f1;
SELECT queue('03000003');
SELECT stop('03000003', 'g2');

--
-- 4. Every call refreshes the idle clock, a replay included: with a 1.5 s timeout and 0.6 s
--    between calls, the stream lives 1.8 s and more.
--
SET pix.stream_idle_timeout = '1500ms';
SELECT enqueue('03000004', 1, 2, 3);
SELECT start('03000004', 1, 'h1');
SELECT pg_sleep(0.6);
SELECT read('03000004', 'h1', 1, 'h2');
SELECT pg_sleep(0.6);
SELECT read('03000004', 'h1', 1, 'x') AS replay;
SELECT pg_sleep(0.6);
SELECT read('03000004', 'h2', 1, 'h3');
SELECT pix_expire_streams() AS expired;
SELECT stop('03000004', 'h3');
SET pix.stream_idle_timeout = '10min';
SELECT queue('03000004');

--
-- 5. An idle stream with nothing pending expires too (its slot comes back); nothing is requeued.
--
SELECT start('03000005', 1, 'i1'), start('03000005', 1, 'j1');
SELECT pg_sleep(0.5);
SET pix.stream_idle_timeout = '200ms';
SELECT pix_expire_streams() AS expired;
SET pix.stream_idle_timeout = '10min';
SELECT open_streams('03000005'), queue('03000005');
SELECT count(*) AS requeued_iterations
  FROM pix.iteration i JOIN id ON id.iid = i.iid
 WHERE id.name IN ('i1', 'j1') AND i.requeued_at IS NOT NULL;

--
-- 6. A stop on an idle stream is "gone" and confirms nothing: the collector that comes back too
--    late cannot confirm a batch that is no longer its own. The batch is requeued by the sweep.
--
SELECT enqueue('03000006', 1, 2);
SELECT start('03000006', 2, 'k1');
SELECT pg_sleep(0.5);
SET pix.stream_idle_timeout = '200ms';
SELECT stop('03000006', 'k1');
SELECT pix_expire_streams() AS expired;
SET pix.stream_idle_timeout = '10min';
SELECT queue('03000006');
SELECT start('03000006', 10, 'l1');
SELECT stop('03000006', 'l1');
SELECT queue('03000006');

--
-- 7. The timeout is 1 ms to 24 h (only a superuser may change it: see 06_privileges).
--
SET pix.stream_idle_timeout = 0;
SET pix.stream_idle_timeout = '25h';
RESET pix.stream_idle_timeout;
SHOW pix.stream_idle_timeout;

SELECT count(*) AS open_streams_left FROM pix.stream WHERE ispb LIKE '030000__' AND state = 'o';

DROP SCHEMA t03 CASCADE;
