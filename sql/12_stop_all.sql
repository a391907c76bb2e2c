--
-- 12_stop_all: pix_streams_stop_all(ispb, credential), what DELETE /api/pix/{ispb}/streams calls.
-- Closes every open stream of the ISPB, requeues their pending batches at the head of its queue;
-- their ids then answer PX005 (410). Other ISPBs' streams are untouched.
--
-- Institutions used here: 12000001, 12000002.
--
CREATE SCHEMA t12;
SET search_path = t12, public;

CREATE FUNCTION try(statement text, a text DEFAULT NULL) RETURNS text LANGUAGE plpgsql AS $$
BEGIN
    EXECUTE statement USING a;
    RETURN 'ok';
EXCEPTION WHEN OTHERS THEN
    RETURN SQLSTATE || ' ' || SQLERRM;
END
$$;

-- A gap of 1000 unused message ids above the messages made here (for "ids_below", below).
SELECT setval('pix.message_id_seq', (SELECT last_value FROM pix.message_id_seq) + 1000) > 0 AS gap;
SELECT pix_generate_messages('12000001', 12) AS generated, pix_generate_messages('12000002', 2) AS other;
-- Three streams of 12000001: two hold a pending batch (3 and 2 messages), one read everything it
-- got and confirmed it (nothing pending); one stream of 12000002.
CREATE TABLE s AS
SELECT 1 AS n, * FROM pix_stream_start('12000001', 3)
UNION ALL SELECT 2, * FROM pix_stream_start('12000001', 2);
INSERT INTO s SELECT 3, * FROM pix_stream_start('12000001', 1);
INSERT INTO s SELECT 4, * FROM pix_stream_next('12000001', (SELECT interation_id FROM s WHERE n = 3), 1);
INSERT INTO s SELECT 5, * FROM pix_stream_start('12000002', 1);
SELECT n, message_count FROM s ORDER BY n;
-- Which messages were pending (to check they come back first, in order).
CREATE TABLE pending AS
SELECT unnest(pending_ids) AS message_id FROM pix.stream WHERE ispb = '12000001' AND state = 'o';
SELECT count(*) AS pending FROM pending;
SELECT count(*) AS ready_before FROM pix.ready WHERE ispb = '12000001';
-- Three newer messages with ids BELOW the pending ones (in the gap): the queue's order is the id, so
-- a requeue into the fresh range would put the pending batches after these; at the head (the requeued
-- range, fresh = false) they come before.
SELECT setval('pix.message_id_seq', (SELECT min(id) FROM pix.message
                                      WHERE recebedor_ispb IN ('12000001', '12000002')) - 100) > 0 AS ids_below;
SELECT pix_generate_messages('12000001', 3) AS lower_ids;

SELECT pix_streams_stop_all('12000001') AS closed;
SELECT state, count(*) FROM pix.stream WHERE ispb = '12000001' GROUP BY state ORDER BY state;
SELECT count(*) AS ready_after FROM pix.ready WHERE ispb = '12000001';
SELECT count(*) AS requeued_iterations FROM pix.iteration i JOIN pix.stream st USING (stream_id)
 WHERE st.ispb = '12000001' AND i.requeued_at IS NOT NULL;
-- Every id of the stopped streams, current or previous, answers 410.
SELECT n, try($$SELECT pix_stream_next('12000001', $1)$$, interation_id) AS next,
       try($$SELECT pix_stream_stop('12000001', $1)$$, interation_id) AS stop
  FROM s WHERE n <= 4 ORDER BY n;
-- The other ISPB's stream goes on.
SELECT state FROM pix.stream WHERE ispb = '12000002';
SELECT try($$SELECT pix_stream_next('12000002', $1)$$, (SELECT interation_id FROM s WHERE n = 5)) AS other_next;
-- The requeued messages are delivered first, in their order, to the next stream.
CREATE TABLE again AS SELECT * FROM pix_stream_start('12000001', 10);
SELECT message_count,
       (SELECT array_agg(m.id ORDER BY o) FROM json_array_elements(body::json) WITH ORDINALITY a(e, o)
          JOIN pix.message m ON m.end_to_end_id = e ->> 'endToEndId')
       [1:(SELECT count(*) FROM pending)] = (SELECT array_agg(message_id ORDER BY message_id) FROM pending)
           AS pending_first_in_order
  FROM again;
-- Nothing open: 0, not an error. Arguments: ISPB first.
SELECT pix_streams_stop_all('12000001') AS closed_again, pix_streams_stop_all('12000009') AS none_ever;
SELECT try($$SELECT pix_streams_stop_all(NULL)$$) AS null_ispb, try($$SELECT pix_streams_stop_all('x')$$) AS bad_ispb;
-- Nothing lost: every message of 12000001 is in exactly one place (ready, or nothing: confirmed).
SELECT count(*) AS messages,
       count(*) FILTER (WHERE EXISTS (SELECT FROM pix.ready r WHERE r.message_id = m.id)) AS ready,
       count(*) FILTER (WHERE EXISTS (SELECT FROM pix.iteration i WHERE m.id = ANY (i.message_ids)
                                        AND i.confirmed_at IS NOT NULL)) AS confirmed
  FROM pix.message m WHERE recebedor_ispb = '12000001';

SELECT setval('pix.message_id_seq', (SELECT max(id) FROM pix.message)) > 0 AS ids_restored;

DROP SCHEMA t12 CASCADE;
SELECT pix_streams_stop_all('12000002') AS closed_other;
