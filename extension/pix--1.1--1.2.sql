-- pix 1.1 -> 1.2: liveness without writes (pix_streams_keepalive), 64-bit iteration numbers, keys in
-- the C collation, the shape of each delivered batch, a flat purge whose closed streams' ids keep
-- answering "gone", and a producer role that may only INSERT messages.

\echo Use "ALTER EXTENSION pix UPDATE TO '1.2'" to load this file. \quit

-- Marks the live streams named by these ids (current id, or previous id while its batch is pending)
-- as read now, in one statement; returns how many. The HTTP server calls it for all its parked reads
-- at once. NULL, empty, malformed: 0, never an error.
CREATE FUNCTION pix_streams_keepalive(interation_ids text[]) RETURNS int
    AS 'MODULE_PATHNAME', 'pix_streams_keepalive' LANGUAGE C VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp;
REVOKE ALL ON FUNCTION pix_streams_keepalive(text[]) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION pix_streams_keepalive(text[]) TO pix_client;

-- The view reads the columns retyped below; it is made again, unchanged, afterwards.
DROP VIEW pix.delivery;

-- seq was int4: a long-lived stream stopped at 2^31 reads. The ids are compared byte-wise (they are
-- random ASCII): the C collation keeps their btree keys cheap to compare, and so for endToEndIds.
-- as_array: the shape the batch was delivered in (an array, or one object), so that a replay answers
-- the very same bytes; NULL for batches delivered before 1.2 (replayed in the retry's shape).
ALTER TABLE pix.stream ALTER COLUMN seq TYPE bigint,
                       ALTER COLUMN current_iid TYPE text COLLATE "C";
ALTER TABLE pix.iteration ALTER COLUMN seq TYPE bigint,
                          ALTER COLUMN iid TYPE text COLLATE "C",
                          ADD COLUMN as_array boolean;
ALTER TABLE pix.message ALTER COLUMN end_to_end_id TYPE text COLLATE "C";

CREATE VIEW pix.delivery AS
SELECT m.message_id, i.stream_id, s.ispb, i.iid AS interation_id, i.seq, i.delivered_at,
       i.confirmed_at, i.requeued_at
  FROM pix.iteration i
  JOIN pix.stream s USING (stream_id)
 CROSS JOIN LATERAL unnest(i.message_ids) AS m(message_id);
REVOKE ALL ON pix.delivery FROM PUBLIC;

-- The purge takes the oldest iterations first through this index (their age is when their batch
-- was settled, or delivered while it is not), so each chunk costs the same whatever the history.
CREATE INDEX iteration_by_age ON pix.iteration ((coalesce(confirmed_at, requeued_at, delivered_at)));
CREATE INDEX stream_closed_by_age ON pix.stream (closed_at) WHERE state <> 'o';

-- The last two ids of each purged closed or expired stream: they keep answering "gone" (410), not
-- "not found", after the purge removed their iterations. Two narrow rows per stream ever closed.
CREATE TABLE pix.retired_id (
    iid  text COLLATE "C" PRIMARY KEY,
    ispb text COLLATE "C" NOT NULL
);
REVOKE ALL ON pix.retired_id FROM PUBLIC;

-- Producers: a role that may INSERT messages (the listed columns only: not id, enqueued_at or body)
-- and nothing else. The statement trigger that queues the new messages runs as the extension's
-- owner, reading only the statement's own new rows: a producer cannot queue any other message.
ALTER FUNCTION pix.message_after_insert() SECURITY DEFINER;
REVOKE ALL ON FUNCTION pix.message_after_insert(), pix.message_before_insert(),
    pix.message_immutable() FROM PUBLIC;
DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'pix_producer') THEN
        RAISE WARNING 'role pix_producer already exists: it was not created by this extension, and it now gets INSERT on pix.message'
            USING DETAIL = format('Its members: %s.', coalesce((SELECT string_agg(m.rolname, ', ' ORDER BY m.rolname)
                                                                 FROM pg_auth_members a JOIN pg_roles m ON m.oid = a.member
                                                                WHERE a.roleid = 'pix_producer'::regrole), 'none')),
                  HINT = 'If that is not intended, DROP EXTENSION pix, drop or rename that role, and create the extension again.';
    ELSE
        CREATE ROLE pix_producer NOLOGIN;
    END IF;
END
$$;
GRANT USAGE ON SCHEMA pix TO pix_producer;
GRANT INSERT (end_to_end_id, valor, pagador_nome, pagador_cpf_cnpj, pagador_ispb, pagador_agencia,
              pagador_conta, pagador_tipo_conta, recebedor_nome, recebedor_cpf_cnpj, recebedor_ispb,
              recebedor_agencia, recebedor_conta, recebedor_tipo_conta, campo_livre, tx_id,
              data_hora_pagamento)
    ON pix.message TO pix_producer;
