-- Index plans whatever the statistics say. The extension's statements are planned once per backend
-- and planned again when a table's statistics change. Right after ANALYZE has seen pix.iteration and
-- pix.stream empty (a fresh install that was vacuumed), the planner would look every id up with a
-- sequential scan, and every call would then read the whole history. The functions do not let it:
-- the reads below find their rows by index, with no sequential scan of either table.
\set VERBOSITY terse
DROP EXTENSION pix;
CREATE EXTENSION pix;
VACUUM ANALYZE pix.iteration, pix.stream;
SELECT relname, reltuples FROM pg_class WHERE oid IN ('pix.iteration'::regclass, 'pix.stream'::regclass)
 ORDER BY relname;

SELECT pix_generate_messages('11111111', 25);
SELECT pg_stat_force_next_flush();
CREATE TEMP TABLE scans_before AS
SELECT relname, seq_scan, idx_scan FROM pg_stat_user_tables
 WHERE relid IN ('pix.iteration'::regclass, 'pix.stream'::regclass);

-- A collector drains the 25 messages: a start, then each next id confirms and reads on.
SELECT interation_id AS iid, message_count FROM pix_stream_start('11111111', 10) \gset
SELECT :message_count AS first_batch;
SELECT interation_id AS iid, message_count FROM pix_stream_next('11111111', :'iid', 10) \gset
SELECT :message_count AS second_batch;
SELECT interation_id AS iid, message_count FROM pix_stream_next('11111111', :'iid', 10) \gset
SELECT :message_count AS third_batch;
SELECT pix_stream_stop('11111111', :'iid') AS confirmed_by_stop;

SELECT pg_stat_force_next_flush();
SELECT s.relname, s.seq_scan - b.seq_scan AS sequential_scans, s.idx_scan > b.idx_scan AS read_by_index
  FROM pg_stat_user_tables s JOIN scans_before b USING (relname)
 WHERE s.relid IN ('pix.iteration'::regclass, 'pix.stream'::regclass)
 ORDER BY s.relname;

-- The caller's own setting is untouched after the calls.
SHOW enable_seqscan;
