--
-- 11_limits: the edges of the calls: iteration numbers past 2^31, the (f(...)).* call form, the
-- lock wait bound, and the settings.
--
-- Recipients used here: 11000001 .. 11000009.
--
CREATE SCHEMA t11;
SET search_path = t11, public;
\i sql/include/stream_helpers.sql

--
-- 1. seq is 64-bit: a stream that has issued 2^31 - 2 ids reads on past 2^31, and its previous id
--    still replays across the boundary.
--
SELECT enqueue('11000001', 1, 2, 3, 4);
SELECT start('11000001', 1, 'a1');
UPDATE pix.stream s SET seq = 2147483646 FROM id WHERE id.name = 'a1' AND s.current_iid = id.iid;
UPDATE pix.iteration i SET seq = 2147483646 FROM id WHERE id.name = 'a1' AND i.iid = id.iid;
SELECT read('11000001', 'a1', 1, 'a2');
SELECT read('11000001', 'a2', 1, 'a3');
SELECT read('11000001', 'a2', 1, 'x') AS replay, read('11000001', 'a3', 1, 'a4') AS read_on;
SELECT id.name, i.seq FROM pix.iteration i JOIN id ON id.iid = i.iid ORDER BY i.seq;
SELECT stop('11000001', 'a4');

--
-- 2. SELECT (pix_stream_start(...)).* would call the function once per column (four streams, four
--    batches): it is refused and nothing happens. One column, or the function in FROM, is one call;
--    a function in FROM called again for each row is a new call each time.
--
SELECT enqueue('11000002', 1, 2, 3, 4, 5, 6);
\set VERBOSITY default
SELECT (pix_stream_start('11000002', 1)).*;
\set VERBOSITY terse
SELECT open_streams('11000002'), queue('11000002');
SELECT (pix_stream_start('11000002', 1)).message_count AS one_column;
SELECT interation_id AS cid, message_count FROM pix_stream_start('11000002', 1) AS in_from \gset
SELECT :message_count AS in_from;
SELECT (pix_stream_next('11000002', :'cid', 1)).*;
SELECT count(*) AS streams_opened
  FROM generate_series(1, 2) AS g, LATERAL pix_stream_start('11000002', 1 + 0 * g);
SELECT open_streams('11000002'), queue('11000002');
SELECT pix_stream_stop('11000002', current_iid) FROM pix.stream WHERE ispb = '11000002' AND state = 'o';

--
-- 3. The settings: pix.lock_timeout bounds a call's wait for a row another transaction holds
--    (specs/busy.spec shows it at work); like every pix setting, only a superuser may change it.
--
SHOW pix.lock_timeout;
SET pix.lock_timeout = '1s';
SHOW pix.lock_timeout;
SET pix.lock_timeout = -1;
RESET pix.lock_timeout;

DROP SCHEMA t11 CASCADE;
