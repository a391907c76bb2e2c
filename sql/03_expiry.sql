--
-- 03_expiry: a stream not read for pix.stream_idle_timeout is dead.
--
-- Its ids answer "gone" (PX005) at once. Its slot and its pending batch come back when a sweep
-- runs: every start and every read of its ISPB sweeps that ISPB first (so the batch goes to that
-- very reader, at the head of the queue), and pix_expire_streams() sweeps all ISPBs and says how
-- many streams it expired. The timeout is a superuser GUC; this suite sets it per step, so no
-- step depends on how fast the machine is: a stream is made idle by sleeping well past a short
-- timeout, and kept alive by a long one.
--
-- The helpers are the ones of 02_streams: ids are kept by name, messages shown by label.
-- Recipients used here: 03000001 .. 03000009.
--
CREATE SCHEMA t03;
SET search_path = t03, public;

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
    SELECT 'E32074986202402031530' || right(receiver, 3) || 'M' || lpad(n::text, 7, '0'), n + 0.25, 'Marcos José',
           '98716278151', '32074986', '0001', '1231231', 'CACC', 'Flavio José', '77615678242',
           receiver, '0361', '1210098', 'SVGS', 'message ' || n, 'tx' || n,
           '2024-02-03 15:30:00Z'::timestamptz + n * interval '1 second'
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
SELECT pg_sleep(0.6);
SELECT start('03000003', 1, 'g1');
SET pix.stream_idle_timeout = '500ms';
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
