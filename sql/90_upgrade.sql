-- Upgrades: a database created with an older version (here 1.0) and updated in place through the
-- chain of upgrade scripts must keep every message, stream and pending batch.
\set VERBOSITY terse
DROP EXTENSION pix;
CREATE EXTENSION pix VERSION '1.0';
SELECT extversion FROM pg_extension WHERE extname = 'pix';

-- Data made under 1.0: 25 messages, one stream with a confirmed and a pending batch, one closed stream.
-- The library installed is always the newest, and it needs the newest schema (install the library,
-- then ALTER EXTENSION pix UPDATE before serving), so the streams are written here as 1.0's
-- functions left them: stream A read 10 (m1-m10, id first_id) then, confirming them, 10 more
-- (m11-m20 pending, id second_id); stream B read 3 (m21-m23) and was stopped, confirming them.
SELECT pix_generate_messages('12345678', 25);
\set first_id 'aaaaaaaaaaaaaaaaaaa1'
\set second_id 'aaaaaaaaaaaaaaaaaaa2'
\set other_id 'bbbbbbbbbbbbbbbbbbb1'
CREATE TEMP TABLE n AS SELECT id, row_number() OVER (ORDER BY id) AS n FROM pix.message;
CREATE FUNCTION pg_temp.ids(lo int, hi int) RETURNS bigint[] LANGUAGE sql
    AS $$ SELECT array_agg(id ORDER BY id) FROM n WHERE n BETWEEN lo AND hi $$;
INSERT INTO pix.institution (ispb) VALUES ('12345678');
INSERT INTO pix.stream (ispb, state, seq, current_iid, pending_ids, closed_at, delivered, confirmed)
VALUES ('12345678', 'o', 2, :'second_id', pg_temp.ids(11, 20), NULL, 20, 10),
       ('12345678', 'c', 1, :'other_id', '{}', now(), 3, 3);
INSERT INTO pix.iteration (iid, stream_id, seq, message_ids, confirmed_at)
SELECT v.iid, s.stream_id, v.seq, pg_temp.ids(v.lo, v.hi), v.confirmed_at
  FROM (VALUES (:'first_id', :'second_id', 1, 1, 10, now()), (:'second_id', :'second_id', 2, 11, 20, NULL),
               (:'other_id', :'other_id', 1, 21, 23, now())) AS v(iid, current_iid, seq, lo, hi, confirmed_at)
  JOIN pix.stream s ON s.current_iid = v.current_iid;
DELETE FROM pix.ready WHERE message_id = ANY (pg_temp.ids(1, 23));
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
