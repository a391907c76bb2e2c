--
-- 10_producer: pix_producer, the role of a system that only enqueues messages.
--
-- It may INSERT into pix.message the content columns (not id, enqueued_at or body) and nothing
-- else: no SELECT, UPDATE or DELETE, no pix.ready, no function. The statement trigger that queues
-- the new messages runs as the extension's owner (SECURITY DEFINER) and reads only the statement's
-- own new rows, so a producer's INSERT is a complete enqueue, and nothing more: it cannot queue,
-- re-deliver or forge anything else.
--
-- Recipients used here: 10000101 .. 10000109.
--
CREATE SCHEMA t10;
SET search_path = t10, public;

SET client_min_messages = warning;
DROP ROLE IF EXISTS regress_pix_feeder;
RESET client_min_messages;
CREATE ROLE regress_pix_feeder IN ROLE pix_producer;
GRANT USAGE ON SCHEMA t10 TO regress_pix_feeder;

CREATE FUNCTION try(statement text) RETURNS text LANGUAGE plpgsql AS $$
DECLARE
    affected bigint;
BEGIN
    EXECUTE statement;
    GET DIAGNOSTICS affected = ROW_COUNT;
    RETURN 'ok: ' || affected || ' row(s)';
EXCEPTION WHEN OTHERS THEN
    RETURN SQLSTATE || ' ' || SQLERRM;
END
$$;
-- One message m<n> for 10000101 as a producer writes it (the content columns only).
CREATE FUNCTION insert_sql(n int, extra_columns text DEFAULT '', extra_values text DEFAULT '',
                           tail text DEFAULT '', overriding text DEFAULT '') RETURNS text LANGUAGE sql AS $$
    SELECT format($f$INSERT INTO pix.message (end_to_end_id, valor, pagador_nome, pagador_cpf_cnpj,
        pagador_ispb, pagador_agencia, pagador_conta, pagador_tipo_conta, recebedor_nome,
        recebedor_cpf_cnpj, recebedor_ispb, recebedor_agencia, recebedor_conta, recebedor_tipo_conta,
        data_hora_pagamento %s) %s
        VALUES ('E3207498620240210153010P%s', 1.00, 'A', '52998224725', '32074986', '0001', '1',
                'CACC', 'B', '11222333000181', '10000101', '0001', '2', 'CACC', now() %s) %s$f$,
        extra_columns, overriding, lpad(n::text, 8, '0'), extra_values, tail)
$$;
GRANT EXECUTE ON FUNCTION try(text), insert_sql(int, text, text, text, text) TO regress_pix_feeder;

SELECT rolname, rolcanlogin, rolsuper FROM pg_roles WHERE rolname = 'pix_producer';
SELECT p.proname, p.prosecdef AS security_definer, p.proconfig
  FROM pg_proc p WHERE p.oid = 'pix.message_after_insert'::regproc;

SET ROLE regress_pix_feeder;
-- An INSERT of the content columns is an enqueue.
SELECT try(insert_sql(1)) AS insert_message, try(insert_sql(2)) AS insert_another;
-- Anything else is refused.
SELECT try(insert_sql(3, ', id', ', 1', '', 'OVERRIDING SYSTEM VALUE')) AS choose_id,
       try(insert_sql(4, ', body', $$, '{}'$$, '')) AS choose_body,
       try(insert_sql(5, ', enqueued_at', $$, '2000-01-01'$$, '')) AS choose_time,
       try(insert_sql(6, '', '', 'RETURNING id')) AS returning_id;
SELECT try('SELECT count(*) FROM pix.message') AS read_messages,
       try('SELECT count(*) FROM pix.ready') AS read_ready,
       try($$INSERT INTO pix.ready VALUES ('10000101', false, 1)$$) AS forge_ready,
       try($$UPDATE pix.message SET valor = 2$$) AS update_messages,
       try($$DELETE FROM pix.message$$) AS delete_messages;
SELECT try('SELECT pix.message_after_insert()') AS call_trigger,
       try($$SELECT message_count FROM pix_stream_start('10000101')$$) AS start,
       try($$SELECT pix_generate_messages('10000101', 1)$$) AS generate;
-- A duplicate endToEndId is refused as an invalid message (PX006), even though a producer cannot
-- read the table to find the other one.
SELECT try(insert_sql(1)) AS duplicate;
RESET ROLE;

-- What the producer enqueued, seen by the superuser: two messages, both ready, nothing else.
SELECT right(m.end_to_end_id, 8) AS message, r.fresh AS ready_fresh, m.body <> '' AS rendered
  FROM pix.message m LEFT JOIN pix.ready r ON r.message_id = m.id
 WHERE m.recebedor_ispb = '10000101' ORDER BY m.id;
SELECT message_count, interation_id IS NOT NULL AS has_id FROM pix_stream_start('10000101', 10);
SELECT pix_stream_stop('10000101', current_iid) AS confirmed
  FROM pix.stream WHERE ispb = '10000101' AND state = 'o';

DROP SCHEMA t10 CASCADE;
DROP OWNED BY regress_pix_feeder;
DROP ROLE regress_pix_feeder;
