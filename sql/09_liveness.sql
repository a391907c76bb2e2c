--
-- 09_liveness: keeping a stream alive costs no write per read.
--
-- An empty read with nothing pending to confirm writes nothing when the stream's recorded last read
-- is recent enough: within the liveness slack, a quarter of pix.stream_idle_timeout capped at 15 s.
-- To keep expiry honest, a stream is dead only once its recorded last read is older than the
-- timeout plus that slack: it never expires earlier than the timeout after its true last read, and
-- at most the slack later. pix_streams_keepalive(ids) marks the streams named by those ids as read
-- now, in one statement: the HTTP server calls it for all its parked reads at once.
--
-- "Wrote nothing" is shown by the transaction never getting an id (pg_current_xact_id_if_assigned).
-- Recipients used here: 09000001 .. 09000009.
--
CREATE SCHEMA t09;
SET search_path = t09, public;
\i sql/include/stream_helpers.sql

-- How long ago the stream that holds this id (as current id) was last read, in whole seconds.
CREATE FUNCTION idle_s(with_id text) RETURNS int LANGUAGE sql AS $$
    SELECT extract(epoch FROM clock_timestamp() - s.last_read_at)::int
      FROM pix.stream s JOIN id ON id.iid = s.current_iid WHERE id.name = with_id
$$;
-- Moves that stream's last read into the past.
CREATE FUNCTION age_stream(with_id text, by interval) RETURNS void LANGUAGE sql AS $$
    UPDATE pix.stream s SET last_read_at = last_read_at - by
      FROM id WHERE id.name = with_id AND id.iid = s.current_iid
$$;
CREATE FUNCTION keepalive(VARIADIC names text[]) RETURNS int LANGUAGE sql AS $$
    SELECT pix_streams_keepalive(array_agg(id.iid)) FROM id WHERE id.name = ANY (names)
$$;

-- With 10 minutes the slack is 15 s (a quarter would be 150 s: capped).
SET pix.stream_idle_timeout = '10min';

--
-- 1. An empty read with nothing pending and a fresh last read writes nothing.
--
SELECT start('09000001', 1, 'a1');
BEGIN;
SELECT read('09000001', 'a1', 1, 'x');
SELECT pg_current_xact_id_if_assigned() IS NULL AS wrote_nothing;
COMMIT;

--
-- 2. Once the recorded last read is older than the slack, the empty read records it again.
--
SELECT age_stream('a1', '20 s');
SELECT idle_s('a1') BETWEEN 19 AND 25 AS idle_20s;
BEGIN;
SELECT read('09000001', 'a1', 1, 'x');
SELECT pg_current_xact_id_if_assigned() IS NOT NULL AS wrote;
COMMIT;
SELECT idle_s('a1') < 5 AS refreshed;
-- Within the slack (10 s), it does not.
SELECT age_stream('a1', '10 s');
SELECT read('09000001', 'a1', 1, 'x');
SELECT idle_s('a1') BETWEEN 9 AND 15 AS kept_10s;

--
-- 3. A read that confirms a batch always writes, empty or not.
--
SELECT enqueue('09000001', 1);
SELECT read('09000001', 'a1', 1, 'a2');
BEGIN;
SELECT read('09000001', 'a2', 1, 'x');
SELECT pg_current_xact_id_if_assigned() IS NOT NULL AS wrote;
COMMIT;
SELECT queue('09000001');

--
-- 4. Expiry: a stream recorded as read 10 min 10 s ago is alive (its true last read may have been
--    up to 15 s later); at 10 min 20 s it is dead.
--
SELECT start('09000002', 1, 'b1'), start('09000002', 1, 'c1');
SELECT age_stream('b1', '10 min 10 s'), age_stream('c1', '10 min 20 s');
SELECT read('09000002', 'b1', 1, 'x') AS b1, read('09000002', 'c1', 1, 'x') AS c1;
SELECT pix_expire_streams() AS expired;
SELECT stop('09000002', 'b1');

--
-- 5. pix_streams_keepalive: nothing to do for NULL, empty, NULL elements or malformed ids (huge
--    ones included), whatever the array's shape.
--
SELECT pix_streams_keepalive(NULL) AS null_array, pix_streams_keepalive('{}') AS empty,
       pix_streams_keepalive('{NULL,NULL}') AS nulls,
       pix_streams_keepalive(ARRAY['', 'x', repeat('a', 1000000), 'AAAAAAAAAAAAAAAAAAAA',
                                   'iiiiiiiiiiiiiiiiiiii']) AS malformed,
       pix_streams_keepalive('{{a,b},{c,NULL}}') AS two_dimensions,
       pix_streams_keepalive('[5:6]={aaaaaaaaaaaaaaaaaaaa,bbbbbbbbbbbbbbbbbbbb}') AS unknown;

-- The current id marks its stream read now, and so does the previous id while its batch is
-- pending; one stream named twice counts once; 100 000 unknown ids cost nothing else.
SELECT enqueue('09000003', 1, 2, 3);
SELECT start('09000003', 1, 'd1'), start('09000003', 1, 'e1');
SELECT read('09000003', 'd1', 1, 'd2');  -- d1 is now the previous id, m3 pending
SELECT age_stream('d2', '1 min'), age_stream('e1', '1 min');
SELECT keepalive('e1') AS current_id, idle_s('e1') < 5 AS e_refreshed, idle_s('d2') >= 60 AS d_untouched;
SELECT keepalive('d1') AS previous_id, idle_s('d2') < 5 AS d_refreshed;
SELECT keepalive('d1', 'd2', 'e1') AS both_streams;
SELECT pix_streams_keepalive(array_cat(ARRAY(SELECT substr(md5(g::text), 1, 20)
                                               FROM generate_series(1, 100000) g),
                                       ARRAY(SELECT iid FROM id WHERE name IN ('d2', 'e1'))))
       AS among_100000;

-- The previous id names nothing live once its batch is confirmed; nor does a closed stream's id.
SELECT read('09000003', 'd2', 1, 'x');
SELECT keepalive('d1') AS previous_id_nothing_pending;
SELECT stop('09000003', 'e1');
SELECT keepalive('e1') AS closed;

-- A dead stream (idle past the timeout and the slack, not yet swept) is not revived.
SELECT age_stream('d2', '11 min');
SELECT keepalive('d2') AS dead, read('09000003', 'd2', 1, 'x') AS read_after;
SELECT pix_expire_streams() AS expired;

-- A member of pix_client may call it.
SET client_min_messages = warning;
DROP ROLE IF EXISTS regress_pix_keeper;
RESET client_min_messages;
CREATE ROLE regress_pix_keeper IN ROLE pix_client;
GRANT USAGE ON SCHEMA t09 TO regress_pix_keeper;
GRANT SELECT ON t09.id TO regress_pix_keeper;
SELECT start('09000004', 1, 'f1');
SELECT age_stream('f1', '1 min');
SET ROLE regress_pix_keeper;
SELECT keepalive('f1') AS as_pix_client;
RESET ROLE;
SELECT idle_s('f1') < 5 AS refreshed;
SELECT stop('09000004', 'f1');

RESET pix.stream_idle_timeout;
DROP SCHEMA t09 CASCADE;
DROP OWNED BY regress_pix_keeper;
DROP ROLE regress_pix_keeper;
