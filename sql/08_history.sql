--
-- 08_history: what becomes of confirmed messages.
--
-- A confirmed message is kept, with who received it and when (pix.iteration, pix.delivery), for
-- pix.history_retention (default 7 days); pix_purge_history() then removes in bulk the history
-- older than that: iterations no stream can use any more, the confirmed messages they carried and
-- closed streams with nothing left, and says how many messages it removed. Unconfirmed messages
-- (ready, pending, requeued) are never removed, and a live stream keeps working.
--
-- The helpers are the ones of 02_streams: ids are kept by name, messages shown by label.
-- Recipients used here: 08000001 .. 08000009.
--
CREATE SCHEMA t08;
SET search_path = t08, public;
\i sql/include/stream_helpers.sql

-- The suites before this one left history: purge it all first, so the counts below are ours.
SET pix.history_retention = 0;
SELECT count(*) AS calls FROM generate_series(1, 5) AS i, LATERAL pix_purge_history() AS p;
RESET pix.history_retention;

-- How many messages of `ispb` are still stored.
CREATE FUNCTION stored(ispb text) RETURNS bigint LANGUAGE sql AS $$
    SELECT count(*) FROM pix.message WHERE recebedor_ispb = $1
$$;

--
-- 1. Within the retention, nothing is removed; who received what stays queryable.
--
SELECT enqueue('08000001', 1, 2, 3, 4, 5, 6);
SHOW pix.history_retention;
SELECT start('08000001', 2, 'a1');
SELECT read('08000001', 'a1', 2, 'a2');
SELECT pix_purge_history() AS purged;
SELECT queue('08000001'), stored('08000001');
SELECT label(m.end_to_end_id) AS message, n.name AS delivered_with, d.seq,
       d.confirmed_at IS NOT NULL AS confirmed
  FROM pix.delivery d JOIN pix.message m ON m.id = d.message_id JOIN id n ON n.iid = d.interation_id
 WHERE d.ispb = '08000001' ORDER BY d.message_id;

--
-- 2. Retention 0: the history of closed streams goes at once: the stream, its iterations and its
--    confirmed messages. Pending and ready messages stay. A second call finds nothing more.
--
SELECT read('08000001', 'a2', 2, 'a3');
SELECT stop('08000001', 'a3');
SELECT enqueue('08000001', 7);
SET pix.history_retention = 0;
SELECT pix_purge_history() AS purged;
SELECT pix_purge_history() AS purged_again;
SELECT queue('08000001'), stored('08000001'),
       (SELECT count(*) FROM pix.stream WHERE ispb = '08000001') AS streams,
       (SELECT count(*) FROM pix.delivery WHERE ispb = '08000001') AS deliveries;
-- The purged stream's last two ids still answer "gone" (410), for this ISPB only; an older id of
-- it (which no collector holds any more) is not remembered.
SELECT read('08000001', 'a3', 1, 'x') AS current_id, stop('08000001', 'a2') AS previous_id,
       read('08000001', 'a1', 1, 'x') AS older_id, read('08000002', 'a3', 1, 'x') AS other_ispb;

--
-- 3. A live stream keeps working through a purge, however short the retention: its pending
--    batch stays, a retry on its previous id still replays that batch, its current id reads on.
--
SELECT enqueue('08000003', 1, 2, 3, 4, 5, 6);
SELECT start('08000003', 2, 'd1');
SELECT read('08000003', 'd1', 2, 'd2');
SELECT pix_purge_history() >= 0 AS purged;
SELECT read('08000003', 'd1', 2, 'x') AS retry;
SELECT read('08000003', 'd2', 2, 'd3');
SELECT read('08000003', 'd2', 2, 'x') AS retry;
SELECT stop('08000003', 'd3');
SELECT pix_purge_history() >= 0 AS purged;
SELECT queue('08000003'), stored('08000003');

--
-- 4. A requeued batch is not confirmed: it survives the purge and is delivered again.
--
SELECT enqueue('08000002', 1, 2);
SELECT start('08000002', 1, 'b1');
SELECT read('08000002', 'b1', 1, 'b2');
SELECT stop('08000002', 'b1');
SELECT queue('08000002');
SELECT pix_purge_history() AS purged;
SELECT queue('08000002'), stored('08000002');
SELECT start('08000002', 1, 'c1');
SELECT stop('08000002', 'c1');
SELECT pix_purge_history() AS purged;
SELECT queue('08000002'), stored('08000002');

--
-- 5. "Call it until it returns 0" removes all the history older than the retention, even when a
--    whole chunk (10 000 iterations) carries no confirmed message: here 20 001 old iterations of
--    closed streams that found nothing (made directly in the tables, as 20 001 starts and stops
--    would have left them) and one stream that delivered and confirmed m1.
--
WITH s AS (
    INSERT INTO pix.stream (ispb, state, seq, current_iid, opened_at, last_read_at, closed_at)
    SELECT '08000004', 'c', 1, 'empty' || g, now() - interval '1 hour', now() - interval '1 hour',
           now() - interval '1 hour'
      FROM generate_series(1, 20001) AS g
    RETURNING stream_id, current_iid)
INSERT INTO pix.iteration (iid, stream_id, seq, message_ids, delivered_at)
SELECT current_iid, stream_id, 1, ARRAY[]::bigint[], now() - interval '1 hour' FROM s;
SELECT enqueue('08000004', 1);
SELECT start('08000004', 1, 'e1');
SELECT stop('08000004', 'e1');
DO $$
BEGIN
    FOR i IN 1..10 LOOP
        EXIT WHEN pix_purge_history() = 0;
    END LOOP;
END
$$;
SELECT stored('08000004'),
       (SELECT count(*) FROM pix.stream WHERE ispb = '08000004') AS streams,
       (SELECT count(*) FROM pix.iteration i JOIN pix.stream s USING (stream_id)
         WHERE s.ispb = '08000004') AS iterations;

-- The retention is a superuser setting, in seconds by default.
SET pix.history_retention = '1h';
SHOW pix.history_retention;
SET pix.history_retention = -1;
RESET pix.history_retention;

DROP SCHEMA t08 CASCADE;
