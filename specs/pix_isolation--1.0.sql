-- pix_isolation: the helpers every isolation spec (specs/*.spec) uses, in schema t. A test-only
-- extension, loaded by pg_isolation_regress (--load-extension=pix_isolation, see the Makefile) into
-- its throw-away database: never create it in a database that holds real messages, t.reset()
-- empties every table of pix.
--
-- Ids are kept in t.ids under names and never printed; t.start/t.next/t.stop describe an answer as
-- '<count> <messages>, <new id NAME | id NAME>' or give the SQLSTATE; messages are shown by label
-- (m<n>); t.queue shows where each message is; t.shared() counts what must stay 0.

\echo Use "CREATE EXTENSION pix_isolation" to load this file. \quit

-- Before and after every permutation: no message, stream, history or id left.
CREATE TABLE t.ids (k text PRIMARY KEY, iid text NOT NULL UNIQUE);
-- Moments a step records (clock_timestamp()), to compare with what the extension wrote.
CREATE TABLE t.marks (k text PRIMARY KEY, at timestamptz NOT NULL);
CREATE PROCEDURE t.reset() LANGUAGE sql AS $$
  TRUNCATE pix.message, pix.ready, pix.stream, pix.iteration, pix.institution, pix.retired_id,
           t.ids, t.marks;
$$;
-- Makes the stream that holds this id (as current id) idle for sessions with the default timeout.
CREATE PROCEDURE t.idle(with_k text) LANGUAGE sql AS $$
  UPDATE pix.stream SET last_read_at = last_read_at - interval '1 hour'
    FROM t.ids WHERE ids.k = with_k AND ids.iid = stream.current_iid;
$$;
CREATE FUNCTION t.label(e2e text) RETURNS text LANGUAGE sql IMMUTABLE
  AS $$ SELECT 'm' || right(e2e, 7)::int $$;
CREATE PROCEDURE t.enqueue(receiver text, VARIADIC ns int[]) LANGUAGE sql AS $$
  INSERT INTO pix.message (end_to_end_id, valor, pagador_nome, pagador_cpf_cnpj, pagador_ispb,
                           pagador_agencia, pagador_conta, pagador_tipo_conta, recebedor_nome,
                           recebedor_cpf_cnpj, recebedor_ispb, recebedor_agencia, recebedor_conta,
                           recebedor_tipo_conta, campo_livre, tx_id, data_hora_pagamento)
  SELECT 'E32074986202403011200' || right(receiver, 3) || 'M' || lpad(n::text, 7, '0'), n + 0.25,
         'Marcos José', '98716278151', '32074986', '0001', '1231231', 'CACC', 'Flavio José',
         '77615678242', receiver, '0361', '1210098', 'SVGS', '', '', '2024-03-01 12:00:00Z'
    FROM unnest(ns) WITH ORDINALITY AS u(n, o) ORDER BY o
$$;
CREATE FUNCTION t.describe(r pix_read, new_k text) RETURNS text LANGUAGE plpgsql AS $$
DECLARE
  known text;
  shown text;
BEGIN
  SELECT k INTO known FROM t.ids WHERE iid = r.interation_id;
  IF known IS NULL THEN
    INSERT INTO t.ids VALUES (new_k, r.interation_id);
  END IF;
  IF r.body IS NULL THEN
    shown := 'NULL';
  ELSIF json_typeof(r.body::json) = 'object' THEN
    shown := 'object ' || t.label(r.body::json ->> 'endToEndId');
  ELSE
    SELECT '[' || string_agg(t.label(e ->> 'endToEndId'), ',' ORDER BY o) || ']' INTO shown
      FROM json_array_elements(r.body::json) WITH ORDINALITY AS a(e, o);
  END IF;
  RETURN r.message_count || ' ' || shown || ', '
      || CASE WHEN known IS NULL THEN 'new id ' || new_k ELSE 'id ' || known END;
END
$$;
CREATE FUNCTION t.start(ispb text, n int, new_k text) RETURNS text LANGUAGE plpgsql AS $$
BEGIN
  RETURN t.describe(pix_stream_start(ispb, n), new_k);
EXCEPTION WHEN OTHERS THEN
  RETURN SQLSTATE || ' ' || SQLERRM;
END
$$;
CREATE FUNCTION t.next(ispb text, with_k text, n int, new_k text) RETURNS text LANGUAGE plpgsql AS $$
BEGIN
  RETURN t.describe(pix_stream_next(ispb, (SELECT iid FROM t.ids WHERE k = with_k), n), new_k);
EXCEPTION WHEN OTHERS THEN
  RETURN SQLSTATE || ' ' || SQLERRM;
END
$$;
CREATE FUNCTION t.stop(ispb text, with_k text) RETURNS text LANGUAGE plpgsql AS $$
BEGIN
  RETURN 'confirmed ' || pix_stream_stop(ispb, (SELECT iid FROM t.ids WHERE k = with_k));
EXCEPTION WHEN OTHERS THEN
  RETURN SQLSTATE || ' ' || SQLERRM;
END
$$;
CREATE FUNCTION t.queue(ispb text) RETURNS text LANGUAGE sql AS $$
  SELECT 'ready: ' || coalesce((SELECT string_agg(t.label(m.end_to_end_id), ' ' ORDER BY r.message_id)
                                   FROM pix.ready r JOIN pix.message m ON m.id = r.message_id
                                  WHERE r.ispb = $1), '-')
      || ' | pending: ' || coalesce((SELECT string_agg(t.label(m.end_to_end_id), ' ' ORDER BY m.id)
                                        FROM pix.stream s JOIN pix.message m ON m.id = ANY (s.pending_ids)
                                       WHERE s.ispb = $1 AND s.state = 'o'), '-')
      || ' | confirmed: ' || coalesce((SELECT string_agg(t.label(m.end_to_end_id), ' ' ORDER BY m.id)
                                          FROM pix.message m
                                         WHERE m.recebedor_ispb = $1
                                           AND EXISTS (SELECT FROM pix.iteration i
                                                        WHERE m.id = ANY (i.message_ids)
                                                          AND i.confirmed_at IS NOT NULL)), '-')
$$;
-- Messages held by two open streams at once, or both pending and ready: must stay 0.
CREATE FUNCTION t.shared() RETURNS bigint LANGUAGE sql AS $$
  SELECT (SELECT count(*) FROM (SELECT id FROM pix.stream, unnest(pending_ids) AS id
                                 WHERE state = 'o' GROUP BY id HAVING count(*) > 1) AS d)
       + (SELECT count(*) FROM pix.ready r JOIN pix.stream s
                            ON s.state = 'o' AND r.message_id = ANY (s.pending_ids))
$$;

-- Returns v once advisory lock `lock` is free: a step can stall in the middle of a statement, after
-- the rows before it are written (a straggling INSERT that has taken its ids but not yet queued).
CREATE FUNCTION t.after_lock(lock bigint, v text) RETURNS text LANGUAGE plpgsql VOLATILE AS $$
BEGIN
  PERFORM pg_advisory_xact_lock(lock);
  RETURN v;
END
$$;
