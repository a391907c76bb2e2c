-- Upgrades: the extension installs as 1.0 plus the chain of upgrade scripts, so a database created
-- with an older version and updated in place must keep every message, stream and pending batch.
\set VERBOSITY terse
DROP EXTENSION pix;
CREATE EXTENSION pix VERSION '1.0';
SELECT extversion FROM pg_extension WHERE extname = 'pix';

-- Data made under 1.0: 25 messages, one stream with a confirmed and a pending batch, one closed stream.
SELECT pix_generate_messages('12345678', 25);
SELECT interation_id AS first_id FROM pix_stream_start('12345678', 10) \gset
SELECT interation_id AS second_id, message_count FROM pix_stream_next('12345678', :'first_id', 10) \gset
SELECT interation_id AS other_id FROM pix_stream_start('12345678', 3) \gset
SELECT pix_stream_stop('12345678', :'other_id') AS confirmed_by_stop;
SELECT count(*) AS messages, (SELECT count(*) FROM pix.ready) AS ready FROM pix.message;

-- 1.0 has no pix_metrics yet.
SELECT count(*) FROM pg_proc WHERE proname = 'pix_metrics';

ALTER EXTENSION pix UPDATE;
SELECT extversion FROM pg_extension WHERE extname = 'pix';

-- Nothing was lost: the same messages, the same ready queue, the stream goes on with its id and the
-- retry of its previous id still replays the pending batch.
SELECT count(*) AS messages, (SELECT count(*) FROM pix.ready) AS ready FROM pix.message;
SELECT message_count AS replayed, interation_id = :'second_id' AS same_next_id
  FROM pix_stream_next('12345678', :'first_id', 10);
SELECT message_count AS last_two FROM pix_stream_next('12345678', :'second_id', 10);

-- The counters added up across the upgrade: 10 + 10 + 2 + 3 delivered, 10 + 10 + 3 confirmed.
SELECT metric, value FROM pix_metrics() WHERE ispb IS NULL ORDER BY metric;
SELECT metric, ispb, value FROM pix_metrics() WHERE ispb IS NOT NULL ORDER BY metric;

-- They survive the purge of the history they were counted from (the last 2 confirmed by the stop).
SET pix.history_retention = 0;
SELECT pix_stream_stop('12345678', current_iid) AS confirmed_by_stop FROM pix.stream WHERE state = 'o';
SELECT pix_purge_history() AS purged;
SELECT count(*) AS streams_left FROM pix.stream;
SELECT metric, value FROM pix_metrics() WHERE ispb IS NULL ORDER BY metric;
