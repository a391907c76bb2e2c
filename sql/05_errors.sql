--
-- 05_errors: hostile arguments to every function. NULL, empty, huge, malformed, non-ASCII, wrong
-- type-shaped: each gets its own documented SQLSTATE and a sentence a person understands, the
-- backend survives, and nothing changes in the database.
--
--   PX001 malformed ISPB (checked first, whatever else is wrong)   PX002 max_messages / number
--   PX004 stream not found (unknown, malformed, NULL id)           PX008 not READ COMMITTED
--
-- Recipients used here: 05000001 .. 05000009.
--
CREATE SCHEMA t05;
SET search_path = t05, public;

-- Runs a statement with up to two text parameters ($1, $2); shows what it returned, or SQLSTATE
-- and message.
CREATE FUNCTION try(statement text, a text DEFAULT NULL, b text DEFAULT NULL) RETURNS text
LANGUAGE plpgsql AS $$
DECLARE
    result text;
BEGIN
    EXECUTE statement INTO result USING a, b;
    RETURN 'ok: ' || coalesce(result, 'NULL');
EXCEPTION WHEN OTHERS THEN
    RETURN SQLSTATE || ' ' || SQLERRM;
END
$$;

-- Everything the extension keeps, in one hash: streams, the ready queue, iterations, messages,
-- institutions. Equal hashes before and after a batch of failed calls: nothing changed.
CREATE FUNCTION fingerprint() RETURNS text LANGUAGE sql AS $$
    SELECT md5(concat_ws('|',
        (SELECT string_agg(concat_ws(',', stream_id, ispb, state, seq, current_iid, pending_ids,
                                     opened_at, last_read_at, closed_at), ';' ORDER BY stream_id)
           FROM pix.stream),
        (SELECT string_agg(ispb || ',' || message_id, ';' ORDER BY ispb, message_id) FROM pix.ready),
        (SELECT string_agg(concat_ws(',', iid, stream_id, seq, message_ids, delivered_at,
                                     confirmed_at, requeued_at), ';' ORDER BY iid)
           FROM pix.iteration),
        (SELECT count(*) || ',' || max(id) FROM pix.message),
        (SELECT string_agg(ispb, ',' ORDER BY ispb) FROM pix.institution)))
$$;

-- A stream of 05000001 with a pending batch of two messages: the id the calls below aim at.
INSERT INTO pix.message (end_to_end_id, valor, pagador_nome, pagador_cpf_cnpj, pagador_ispb,
                         pagador_agencia, pagador_conta, pagador_tipo_conta, recebedor_nome,
                         recebedor_cpf_cnpj, recebedor_ispb, recebedor_agencia, recebedor_conta,
                         recebedor_tipo_conta, campo_livre, tx_id, data_hora_pagamento)
SELECT 'E32074986202402051530005M000000' || n, 10.00 * n, 'Marcos José', '98716278151', '32074986',
       '0001', '1231231', 'CACC', 'Flavio José', '77615678242', '05000001', '0361', '1210098',
       'SVGS', '', '', '2024-02-05 15:30:00Z'
  FROM generate_series(1, 3) AS n;
CREATE TABLE held AS SELECT * FROM pix_stream_start('05000001', 2);
SELECT message_count FROM held;

-- The hostile texts.
CREATE TABLE hostile (n int PRIMARY KEY, label text, value text);
INSERT INTO hostile VALUES
    (1,  'NULL',                        NULL),
    (2,  'empty',                       ''),
    (3,  'one space',                   ' '),
    (4,  '7 digits',                    '0500000'),
    (5,  '9 digits',                    '050000011'),
    (6,  'letter O for zero',           'O5000001'),
    (7,  'leading space',               ' 05000001'),
    (8,  'trailing newline',            E'05000001\n'),
    (9,  'inner NUL-free control',      E'0500\x01001'),
    (10, 'sign',                        '+5000001'),
    (11, 'fullwidth digits',            '０５０００００１'),
    (12, 'Arabic-Indic digits',         '٠٥٠٠٠٠٠١'),
    (13, 'é in 8 characters',           'é5000001'),
    (14, 'emoji',                       '😀😀😀😀😀😀😀😀'),
    (15, 'SQL injection',               $$05000001'; DROP TABLE pix.message; --$$),
    (16, 'path',                        '05000001/stream/start'),
    (17, 'percent-encoded',             '%3005000001'),
    (18, '1 MB of digits',              repeat('9', 1000000)),
    (19, '1 MB of letters',             repeat('a', 1000000)),
    (20, 'RTL override',                E'\u202e05000001');

--
-- 1. A malformed ISPB is PX001 for every function, even with an otherwise perfect call.
--
CREATE TABLE before AS SELECT fingerprint() AS f;
SELECT h.label,
       try('SELECT message_count FROM pix_stream_start($1, 1)', h.value) AS start,
       try('SELECT message_count FROM pix_stream_next($1, $2, 1)', h.value,
           (SELECT interation_id FROM held)) AS next,
       try('SELECT pix_stream_stop($1, $2)', h.value, (SELECT interation_id FROM held)) AS stop,
       try('SELECT pix_generate_messages($1, 1)', h.value) AS generate
  FROM hostile h ORDER BY h.n;
SELECT fingerprint() = (SELECT f FROM before) AS nothing_changed;

--
-- 2. Any id that is not one of this ISPB's is PX004, "stream not found", the same for all. Case
--    matters: the id in capitals is another id.
--
INSERT INTO hostile
SELECT 100 + n, label, value FROM (VALUES
    (1, 'the id in capitals',   (SELECT upper(interation_id) FROM held)),
    (2, 'the id and a space',   (SELECT interation_id || ' ' FROM held)),
    (3, 'the id minus 1 char',  (SELECT left(interation_id, -1) FROM held)),
    (4, 'the id twice',         (SELECT repeat(interation_id, 2) FROM held)),
    (5, 'the pull_next URI',    (SELECT pull_next FROM held))) AS v(n, label, value);
SELECT h.label,
       try('SELECT message_count FROM pix_stream_next(''05000001'', $1, 1)', h.value) AS next,
       try('SELECT message_count FROM pix_stream_next(''05000001'', $1)', h.value) AS next_default,
       try('SELECT pix_stream_stop(''05000001'', $1)', h.value) AS stop
  FROM hostile h ORDER BY h.n;
SELECT fingerprint() = (SELECT f FROM before) AS nothing_changed;

--
-- 3. max_messages outside 1..10, or NULL, is PX002: for a start, and for a read on the current id,
--    which then confirms nothing (the pending batch stays pending).
--
SELECT n,
       try(format('SELECT message_count FROM pix_stream_start(''05000002'', %s)', n)) AS start,
       try(format('SELECT message_count FROM pix_stream_next(''05000001'', $1, %s)', n),
           (SELECT interation_id FROM held)) AS next
  FROM unnest(ARRAY['0', '-1', '11', '100', '2147483647', '-2147483648', 'NULL', 'NULL::int']) AS n;
SELECT fingerprint() = (SELECT f FROM before) AS nothing_changed;
-- Numbers that are not integers never reach the function: PostgreSQL refuses them first.
SELECT try($$SELECT message_count FROM pix_stream_start('05000002', 2147483648)$$) AS too_big,
       try($$SELECT message_count FROM pix_stream_start('05000002', 1.5)$$) AS fraction,
       try($$SELECT message_count FROM pix_stream_start('05000002', 'ten')$$) AS text;
SELECT fingerprint() = (SELECT f FROM before) AS nothing_changed;

--
-- 4. The calls need READ COMMITTED: under REPEATABLE READ or SERIALIZABLE each one is PX008, and
--    does nothing.
--
BEGIN ISOLATION LEVEL REPEATABLE READ;
SELECT try('SELECT message_count FROM pix_stream_start(''05000003'')') AS start,
       try('SELECT message_count FROM pix_stream_next(''05000001'', $1)',
           (SELECT interation_id FROM held)) AS next,
       try('SELECT pix_stream_stop(''05000001'', $1)', (SELECT interation_id FROM held)) AS stop;
SELECT try('SELECT pix_generate_messages(''05000003'', 1)') AS generate,
       try('SELECT pix_expire_streams()') AS expire,
       try('SELECT pix_purge_history()') AS purge;
COMMIT;
BEGIN ISOLATION LEVEL SERIALIZABLE;
SELECT try('SELECT message_count FROM pix_stream_start(''05000003'')') AS start,
       try('SELECT message_count FROM pix_stream_next(''05000001'', $1)',
           (SELECT interation_id FROM held)) AS next,
       try('SELECT pix_stream_stop(''05000001'', $1)', (SELECT interation_id FROM held)) AS stop;
SELECT try('SELECT pix_generate_messages(''05000003'', 1)') AS generate,
       try('SELECT pix_expire_streams()') AS expire,
       try('SELECT pix_purge_history()') AS purge;
COMMIT;
SELECT fingerprint() = (SELECT f FROM before) AS nothing_changed;
-- A read-only transaction cannot open, read or close a stream either (PostgreSQL says so).
BEGIN READ ONLY;
SELECT left(try('SELECT message_count FROM pix_stream_start(''05000003'')'), 5) AS start,
       left(try('SELECT message_count FROM pix_stream_next(''05000001'', $1)',
                (SELECT interation_id FROM held)), 5) AS next;
COMMIT;
SELECT fingerprint() = (SELECT f FROM before) AS nothing_changed;

--
-- 5. After all that, the stream still works: its pending batch (two messages) is confirmed by the
--    next call on its id, which delivers the third.
--
SELECT message_count FROM pix_stream_next('05000001', (SELECT interation_id FROM held), 10);
SELECT count(*) AS confirmed
  FROM pix.iteration WHERE iid = (SELECT interation_id FROM held) AND confirmed_at IS NOT NULL;
SELECT pix_stream_stop('05000001', s.current_iid) AS stopped
  FROM pix.stream s WHERE s.ispb = '05000001' AND s.state = 'o';

DROP SCHEMA t05 CASCADE;
