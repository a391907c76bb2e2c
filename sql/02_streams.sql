--
-- 02_streams: a collector's life, one call at a time.
--
-- pix_stream_start opens a stream and reads; pix_stream_next(ispb, id, n) on the current id confirms
-- the pending batch and reads on, on the previous id replays the pending batch; pix_stream_stop
-- closes. Ids are random, so this suite never prints one: it keeps them in a table under names
-- (a1, a2, ...) and shows which name a call returned. Messages are ours, with fixed endToEndIds; a
-- message is shown by its label m<n> (its endToEndId ends with n).
--
-- Recipients used here: 02000001 .. 02000009.
--
CREATE SCHEMA t02;
SET search_path = t02, public;
\i sql/include/stream_helpers.sql

--
-- 1. An empty queue. A start always issues a new id; a read that finds nothing keeps the id and
--    answers no body.
--
SELECT start('02000001', 1, 'a1');
SELECT start('02000001', 1, 'b1');
SELECT read('02000001', 'a1', 1, 'a2');
SELECT read('02000001', 'a1', 10, 'a2');
-- Stopping confirms nothing here; afterwards the stream's ids are gone (410).
SELECT stop('02000001', 'a1'), stop('02000001', 'b1');
SELECT read('02000001', 'a1', 1, 'x'), stop('02000001', 'b1');
SELECT open_streams('02000001');

--
-- 2. One message per read (max_messages 1): the body is one JSON object, oldest message first.
--
SELECT enqueue('02000001', 1, 2, 3, 4, 5);
SELECT queue('02000001');
SELECT start('02000001', 1, 'c1');
SELECT queue('02000001');
-- The next call on c1 confirms m1 and delivers m2 with a new id.
SELECT read('02000001', 'c1', 1, 'c2');
SELECT queue('02000001');

--
-- 3. Retry: the collector lost the answer to its call on c1 and calls c1 again. It gets the same
--    batch and the same next id (c2); nothing is confirmed, nothing is claimed. Any number of times.
--
SELECT read('02000001', 'c1', 1, 'x');
SELECT read('02000001', 'c1', 1, 'x');
SELECT queue('02000001');
-- A replay answers the batch exactly as it was delivered: one object, even when the retry asks for up
-- to 3 (a multipart retry of a single-message read gets the same bytes again).
SELECT read('02000001', 'c1', 3, 'x');

--
-- 4. Batches: with max_messages 3 the body is an array of up to 3, oldest first.
--
SELECT read('02000001', 'c2', 3, 'c3');
SELECT queue('02000001');
-- c1 is now older than the previous id: gone. c2 (previous) still replays what c3 delivered.
SELECT read('02000001', 'c1', 1, 'x');
SELECT read('02000001', 'c2', 3, 'x');

--
-- 5. The queue is empty: the call on c3 confirms m3 m4 m5 and answers nothing, keeping c3.
--    With nothing pending any more, the previous id c2 has nothing to replay: gone.
--
SELECT read('02000001', 'c3', 10, 'c4');
SELECT queue('02000001');
SELECT read('02000001', 'c2', 1, 'x');
SELECT read('02000001', 'c3', 10, 'c4');

-- A new message: the next call on c3 delivers it with a new id. Asked for up to 10, one message
-- is still an array.
SELECT enqueue('02000001', 6);
SELECT read('02000001', 'c3', 10, 'c4');

--
-- 6. Stop on the current id confirms the pending batch (1 message) and closes the stream.
--    Every id of the stream is gone afterwards, for reads and stops alike.
--
SELECT stop('02000001', 'c4');
SELECT queue('02000001');
SELECT read('02000001', 'c4', 1, 'x') AS current_id, read('02000001', 'c3', 1, 'x') AS previous_id,
       stop('02000001', 'c4') AS stop_again, stop('02000001', 'c3') AS stop_previous;

-- The history of that stream: one iteration per id issued, each batch confirmed by the next call.
SELECT i.seq, n.name, cardinality(i.message_ids) AS messages,
       (SELECT string_agg(label(m.end_to_end_id), ' ' ORDER BY m.id)
          FROM pix.message m WHERE m.id = ANY (i.message_ids)) AS batch,
       i.confirmed_at IS NOT NULL AS confirmed, i.requeued_at IS NOT NULL AS requeued
  FROM pix.iteration i JOIN id n ON n.iid = i.iid
 WHERE i.stream_id = (SELECT stream_id FROM pix.iteration WHERE iid = (SELECT iid FROM id WHERE name = 'c1'))
 ORDER BY i.seq;
SELECT state, seq, cardinality(pending_ids) AS pending, closed_at IS NOT NULL AS closed
  FROM pix.stream
 WHERE stream_id = (SELECT stream_id FROM pix.iteration WHERE iid = (SELECT iid FROM id WHERE name = 'c1'));

--
-- 7. Stop on the previous id: the collector never received the last batch, so it is not confirmed:
--    the stream closes and the batch goes back to the ready queue, ahead of newer messages.
--
SELECT enqueue('02000001', 7, 8, 9, 10);
SELECT start('02000001', 2, 'd1');
SELECT read('02000001', 'd1', 1, 'd2');
SELECT queue('02000001');
SELECT stop('02000001', 'd1');
SELECT queue('02000001');
SELECT read('02000001', 'd2', 1, 'x') AS current_id, read('02000001', 'd1', 1, 'x') AS previous_id;
SELECT enqueue('02000001', 11);
SELECT start('02000001', 10, 'e1');
-- m9 was delivered twice, with the same endToEndId: pix.delivery shows both deliveries.
SELECT n.name, d.seq, d.confirmed_at IS NOT NULL AS confirmed, d.requeued_at IS NOT NULL AS requeued
  FROM pix.delivery d JOIN id n ON n.iid = d.interation_id
 WHERE d.message_id = (SELECT id FROM pix.message WHERE end_to_end_id = 'E32074986202402021530001M0000009')
 ORDER BY d.delivered_at, d.seq;
SELECT stop('02000001', 'e1');

--
-- 8. A redelivered message goes before newer ones, even when other streams took messages after it.
--
SELECT enqueue('02000002', 1, 2, 3, 4);
SELECT start('02000002', 1, 'f1'), start('02000002', 1, 'g1');
SELECT read('02000002', 'f1', 1, 'f2');
SELECT queue('02000002');
-- f's collector lost m3 and leaves from f1: m3 is ready again, before m4.
SELECT stop('02000002', 'f1');
SELECT queue('02000002');
SELECT read('02000002', 'g1', 10, 'g2');
SELECT stop('02000002', 'g2');
SELECT queue('02000002');

--
-- 9. Ordering and max_messages: 12 messages, read 10 then 2, oldest first.
--
SELECT enqueue('02000003', 12, 1, 11, 2, 10, 3, 9, 4, 8, 5, 7, 6);
SELECT start('02000003', 10, 'h1');
SELECT read('02000003', 'h1', 10, 'h2');
SELECT read('02000003', 'h2', 10, 'h3');
SELECT stop('02000003', 'h2');

--
-- 10. Not found (404): unknown, malformed, NULL ids and ids of another ISPB, with one message for
--     all (no oracle). The stream the foreign id belongs to is untouched.
--
SELECT enqueue('02000004', 1);
SELECT start('02000004', 1, 'k1');
SELECT read('02000005', 'k1', 1, 'x') AS other_ispb_read, stop('02000005', 'k1') AS other_ispb_stop;
SELECT read('02000004', 'no such name', 1, 'x') AS null_id;
DO $$
DECLARE
    candidate text;
BEGIN
    FOREACH candidate IN ARRAY ARRAY['', 'x', 'aaaaaaaaaaaaaaaaaaaa', 'AAAAAAAAAAAAAAAAAAAA',
                                     repeat('a', 21), repeat('0', 19), 'stream/../../etc',
                                     $q$' OR '1'='1$q$, 'ééééééééééééééééééé']
    LOOP
        BEGIN
            PERFORM pix_stream_next('02000004', candidate, 1);
            RAISE NOTICE '% -> answered!', quote_literal(candidate);
        EXCEPTION WHEN OTHERS THEN
            RAISE NOTICE '% -> % %', quote_literal(candidate), SQLSTATE, SQLERRM;
        END;
        BEGIN
            PERFORM pix_stream_stop('02000004', candidate);
            RAISE NOTICE '% -> stop answered!', quote_literal(candidate);
        EXCEPTION WHEN OTHERS THEN
            RAISE NOTICE '% -> stop % %', quote_literal(candidate), SQLSTATE, SQLERRM;
        END;
    END LOOP;
END
$$;
SELECT queue('02000004');
SELECT read('02000004', 'k1', 1, 'k2');
SELECT stop('02000004', 'k1');

--
-- 11. At most pix.max_collectors (default 6) open streams per ISPB: the 7th start is refused with
--     PX003 (429), claims nothing and opens nothing. Other ISPBs are not affected. A stop frees a slot.
--
SHOW pix.max_collectors;
SELECT enqueue('02000006', 1);
SELECT start('02000006', 1, 'L1');
SELECT start('02000006', 1, 'L' || i) FROM generate_series(2, 6) AS i;
SELECT enqueue('02000006', 2);
SELECT start('02000006', 1, 'L7');
SELECT open_streams('02000006'), queue('02000006');
SELECT start('02000007', 1, 'M1');
SELECT stop('02000006', 'L3');
SELECT start('02000006', 1, 'L7');
SELECT start('02000006', 1, 'L8');
SELECT open_streams('02000006');
-- The limit is configurable (superuser).
SET pix.max_collectors = 8;
SELECT start('02000006', 1, 'L8'), start('02000006', 1, 'L9'), start('02000006', 1, 'L10');
RESET pix.max_collectors;
SELECT open_streams('02000006');
-- Lowering the limit below what is open closes nothing; new starts wait for the count to drop.
SET pix.max_collectors = 2;
SELECT start('02000006', 1, 'L10');
SELECT read('02000006', 'L9', 1, 'x');
RESET pix.max_collectors;
SELECT stop('02000006', name) FROM id WHERE name ~ '^L[0-9]+$' ORDER BY name;
SELECT open_streams('02000006'), queue('02000006');

--
-- 12. A start or read in a transaction that rolls back leaves nothing behind.
--
SELECT enqueue('02000008', 1, 2);
BEGIN;
SELECT start('02000008', 1, 'r1');
ROLLBACK;
SELECT open_streams('02000008'), queue('02000008'), (SELECT count(*) FROM id WHERE name = 'r1') AS ids;
SELECT start('02000008', 1, 'r1');
BEGIN;
SELECT read('02000008', 'r1', 1, 'r2');
ROLLBACK;
SELECT queue('02000008');
SELECT read('02000008', 'r1', 1, 'r2');
SELECT stop('02000008', 'r2');
SELECT queue('02000008');

--
-- 13. Ids: unique, URL-safe, long (100 bits here; the contract asks for at least 60).
--
--
-- A replay answers the very bytes delivered: a batch sent as an array (a multipart read) comes back
-- as the same array, even of one message, even when the retry asks for a single message.
--
SELECT enqueue('02000009', 1, 2);
SELECT start('02000009', 1, 'z1');
SELECT read('02000009', 'z1', 5, 'z2');
SELECT read('02000009', 'z1', 1, 'x') AS replay_single, read('02000009', 'z1', 10, 'x') AS replay_multi;
SELECT stop('02000009', 'z2');

SELECT count(*) AS ids, count(DISTINCT iid) = count(*) AS all_distinct,
       bool_and(iid ~ '^[A-Za-z0-9_-]{10,}$') AS url_safe
  FROM id;

-- Every open stream of this suite is closed now.
SELECT stop(s.ispb, n.name)
  FROM pix.stream s JOIN id n ON n.iid = s.current_iid
 WHERE s.ispb LIKE '020000__' AND s.state = 'o'
 ORDER BY n.name;
SELECT count(*) AS open_streams_left FROM pix.stream WHERE ispb LIKE '020000__' AND state = 'o';

DROP SCHEMA t02 CASCADE;
