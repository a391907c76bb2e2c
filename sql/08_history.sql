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

-- The ids this suite holds, by name.
CREATE TABLE id (name text PRIMARY KEY, iid text NOT NULL UNIQUE);

CREATE FUNCTION label(end_to_end_id text) RETURNS text LANGUAGE sql IMMUTABLE
    AS $$ SELECT 'm' || right(end_to_end_id, 7)::bigint $$;

-- Enqueues messages m<n> for `receiver`, in the order given (a message's id is its enqueue order).
-- The endToEndId ends with the receiver's last three digits, M and n in seven digits.
CREATE FUNCTION enqueue(receiver text, VARIADIC ns int[]) RETURNS void LANGUAGE sql AS $$
    INSERT INTO pix.message (end_to_end_id, valor, pagador_nome, pagador_cpf_cnpj, pagador_ispb,
                             pagador_agencia, pagador_conta, pagador_tipo_conta, recebedor_nome,
                             recebedor_cpf_cnpj, recebedor_ispb, recebedor_agencia,
                             recebedor_conta, recebedor_tipo_conta, campo_livre, tx_id,
                             data_hora_pagamento)
    SELECT 'E32074986202402081530' || right(receiver, 3) || 'M' || lpad(n::text, 7, '0'), n + 0.25, 'Marcos José',
           '98716278151', '32074986', '0001', '1231231', 'CACC', 'Flavio José', '77615678242',
           receiver, '0361', '1210098', 'SVGS', 'message ' || n, 'tx' || n,
           '2024-02-08 15:30:00Z'::timestamptz + n * interval '1 second'
      FROM unnest(ns) WITH ORDINALITY AS u(n, o) ORDER BY o
$$;

-- Describes a read without its id: count, body (NULL, one object, or an array of labels) and which
-- id came back: one we hold already ("id a2") or a new one, then remembered as `new_name`.
-- It also checks what must always hold and says so only when it does not: pull_next is the
-- documented URI, the id is URL-safe and long enough for 60 bits, the count matches the body, and
-- the body is the stored JSON of each message, byte for byte.
CREATE FUNCTION describe(r pix_read, ispb text, new_name text) RETURNS text LANGUAGE plpgsql AS $$
DECLARE
    known text;
    shown text;
    expected_body text;
    problems text := '';
BEGIN
    SELECT name INTO known FROM id WHERE iid = r.interation_id;
    IF known IS NULL THEN
        INSERT INTO id VALUES (new_name, r.interation_id);
    END IF;
    IF r.pull_next IS DISTINCT FROM '/api/pix/' || ispb || '/stream/' || r.interation_id THEN
        problems := problems || ' BAD pull_next ' || coalesce(r.pull_next, 'NULL');
    END IF;
    IF r.interation_id !~ '^[A-Za-z0-9_-]{10,}$' THEN
        problems := problems || ' BAD id shape';
    END IF;
    IF r.body IS NULL THEN
        shown := 'NULL';
        IF r.message_count <> 0 THEN problems := problems || ' BAD count with NULL body'; END IF;
    ELSIF json_typeof(r.body::json) = 'object' THEN
        shown := 'object ' || label(r.body::json ->> 'endToEndId');
        expected_body := (SELECT body FROM pix.message
                           WHERE end_to_end_id = r.body::json ->> 'endToEndId');
        IF r.message_count <> 1 THEN problems := problems || ' BAD count for an object'; END IF;
    ELSE
        SELECT '[' || string_agg(label(e ->> 'endToEndId'), ',' ORDER BY o) || ']',
               '[' || string_agg(m.body, ',' ORDER BY o) || ']'
          INTO shown, expected_body
          FROM json_array_elements(r.body::json) WITH ORDINALITY AS a(e, o)
          LEFT JOIN pix.message m ON m.end_to_end_id = e ->> 'endToEndId';
        IF r.message_count <> json_array_length(r.body::json) THEN
            problems := problems || ' BAD count for the array';
        END IF;
    END IF;
    IF r.body IS DISTINCT FROM expected_body THEN
        problems := problems || ' BAD body (not the stored bytes)';
    END IF;
    RETURN r.message_count || ' ' || shown || ', '
        || CASE WHEN known IS NULL THEN 'new id ' || new_name ELSE 'id ' || known END || problems;
END
$$;

-- The calls, with ids by name; an error shows as its SQLSTATE and message. A failed call is
-- rolled back, like the HTTP request that made it.
CREATE FUNCTION start(ispb text, n int, new_name text) RETURNS text LANGUAGE plpgsql AS $$
BEGIN
    RETURN describe(pix_stream_start(ispb, n), ispb, new_name);
EXCEPTION WHEN OTHERS THEN
    RETURN SQLSTATE || ' ' || SQLERRM;
END
$$;

CREATE FUNCTION read(ispb text, with_id text, n int, new_name text) RETURNS text LANGUAGE plpgsql AS $$
BEGIN
    RETURN describe(pix_stream_next(ispb, (SELECT iid FROM id WHERE name = with_id), n), ispb,
                    new_name);
EXCEPTION WHEN OTHERS THEN
    RETURN SQLSTATE || ' ' || SQLERRM;
END
$$;

CREATE FUNCTION stop(ispb text, with_id text) RETURNS text LANGUAGE plpgsql AS $$
BEGIN
    RETURN 'confirmed ' || pix_stream_stop(ispb, (SELECT iid FROM id WHERE name = with_id));
EXCEPTION WHEN OTHERS THEN
    RETURN SQLSTATE || ' ' || SQLERRM;
END
$$;

-- Where each message of `ispb` is: ready (in delivery order), pending in an open stream, or
-- confirmed.
CREATE FUNCTION queue(ispb text) RETURNS text LANGUAGE sql AS $$
    SELECT 'ready: ' || coalesce((SELECT string_agg(label(m.end_to_end_id), ' ' ORDER BY r.message_id)
                                     FROM pix.ready r JOIN pix.message m ON m.id = r.message_id
                                    WHERE r.ispb = $1), '-')
        || ' | pending: ' || coalesce((SELECT string_agg(label(m.end_to_end_id), ' ' ORDER BY m.id)
                                          FROM pix.stream s JOIN pix.message m ON m.id = ANY (s.pending_ids)
                                         WHERE s.ispb = $1 AND s.state = 'o'), '-')
        || ' | confirmed: ' || coalesce((SELECT string_agg(label(m.end_to_end_id), ' ' ORDER BY m.id)
                                            FROM pix.message m
                                           WHERE m.recebedor_ispb = $1
                                             AND EXISTS (SELECT FROM pix.iteration i
                                                          WHERE m.id = ANY (i.message_ids)
                                                            AND i.confirmed_at IS NOT NULL)), '-')
$$;

CREATE FUNCTION open_streams(ispb text) RETURNS bigint LANGUAGE sql AS $$
    SELECT count(*) FROM pix.stream WHERE stream.ispb = $1 AND state = 'o'
$$;

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
