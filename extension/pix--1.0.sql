-- pix extension, version 1.0: the message log, the ready queue, streams and their iterations.
-- The invariants these tables keep are explained at the top of extension/stream.c.

\echo Use "CREATE EXTENSION pix" to load this file. \quit

CREATE SCHEMA pix;
REVOKE ALL ON SCHEMA pix FROM PUBLIC;

-- The message log: append-only, immutable. A BEFORE INSERT trigger (C) validates every field against
-- the contract and renders `body`, the JSON exactly as HTTP serves it, so reads copy bytes.
CREATE TABLE pix.message (
    id                   bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    end_to_end_id        text NOT NULL UNIQUE,
    valor                numeric NOT NULL,
    pagador_nome         text NOT NULL,
    pagador_cpf_cnpj     text NOT NULL,
    pagador_ispb         text NOT NULL,
    pagador_agencia      text NOT NULL,
    pagador_conta        text NOT NULL,
    pagador_tipo_conta   text NOT NULL,
    recebedor_nome       text NOT NULL,
    recebedor_cpf_cnpj   text NOT NULL,
    recebedor_ispb       text NOT NULL,
    recebedor_agencia    text NOT NULL,
    recebedor_conta      text NOT NULL,
    recebedor_tipo_conta text NOT NULL,
    campo_livre          text NOT NULL DEFAULT '',
    tx_id                text NOT NULL DEFAULT '',
    data_hora_pagamento  timestamptz NOT NULL,
    enqueued_at          timestamptz NOT NULL DEFAULT clock_timestamp(),
    body                 text NOT NULL DEFAULT ''
);

-- The ready queue: one row per message that no open stream holds and nobody confirmed. Claims delete
-- from it (in C, by index order, skipping rows locked by concurrent claimers). Requeues insert rows
-- with fresh = false, which sort first: a redelivered message goes before every newer one. Narrow and
-- hot, so vacuum it eagerly. The column order is the key's order (claim.c reads both by number).
CREATE TABLE pix.ready (
    ispb       text COLLATE "C" NOT NULL,
    fresh      boolean NOT NULL DEFAULT true,
    message_id bigint NOT NULL,
    PRIMARY KEY (ispb, fresh, message_id)
) WITH (autovacuum_vacuum_scale_factor = 0, autovacuum_vacuum_threshold = 2000,
        autovacuum_vacuum_cost_delay = 0, fillfactor = 100);

-- One row per ISPB that ever opened a stream: the lock that serializes stream starts of that ISPB,
-- and the counters of its streams removed by pix_purge_history() (so totals survive the purge).
CREATE TABLE pix.institution (
    ispb            text COLLATE "C" PRIMARY KEY,
    purged_streams  bigint NOT NULL DEFAULT 0,
    purged_expired  bigint NOT NULL DEFAULT 0,
    purged_delivered   bigint NOT NULL DEFAULT 0,
    purged_redelivered bigint NOT NULL DEFAULT 0,
    purged_confirmed   bigint NOT NULL DEFAULT 0,
    purged_requeued    bigint NOT NULL DEFAULT 0
);

-- A stream: state 'o' open, 'c' closed by DELETE, 'e' expired.
-- seq counts the iterations issued; current_iid is the id to use next; pending_ids is the batch
-- delivered with current_iid and not yet confirmed (empty when there is none). The counters are
-- messages: delivered (claimed into a batch), of which redelivered (had been requeued before),
-- confirmed, and requeued (given back by expiry or a stop on the previous id).
CREATE TABLE pix.stream (
    stream_id    bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    ispb         text COLLATE "C" NOT NULL,
    state        "char" NOT NULL DEFAULT 'o',
    seq          integer NOT NULL DEFAULT 0,
    current_iid  text,
    pending_ids  bigint[] NOT NULL DEFAULT '{}',
    opened_at    timestamptz NOT NULL DEFAULT clock_timestamp(),
    last_read_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    closed_at    timestamptz,
    delivered    bigint NOT NULL DEFAULT 0,
    redelivered  bigint NOT NULL DEFAULT 0,
    confirmed    bigint NOT NULL DEFAULT 0,
    requeued     bigint NOT NULL DEFAULT 0,
    CHECK (state IN ('o', 'c', 'e'))
) WITH (fillfactor = 50);
CREATE INDEX stream_open_by_ispb ON pix.stream (ispb) WHERE state = 'o';

-- One row per iteration id issued: what was delivered with it and what became of that batch.
-- A batch is confirmed by the next call on its id (confirmed_at), or requeued (requeued_at) when its
-- stream expires or is closed from the previous id. Kept for audit until pix.history_retention.
CREATE TABLE pix.iteration (
    iid          text PRIMARY KEY,
    stream_id    bigint NOT NULL,
    seq          integer NOT NULL,
    message_ids  bigint[] NOT NULL,
    delivered_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    confirmed_at timestamptz,
    requeued_at  timestamptz
) WITH (fillfactor = 70);
CREATE INDEX iteration_by_stream ON pix.iteration (stream_id, seq);

-- Who received each message, in which stream and iteration, and when it was confirmed.
CREATE VIEW pix.delivery AS
SELECT m.message_id, i.stream_id, s.ispb, i.iid AS interation_id, i.seq, i.delivered_at,
       i.confirmed_at, i.requeued_at
  FROM pix.iteration i
  JOIN pix.stream s USING (stream_id)
 CROSS JOIN LATERAL unnest(i.message_ids) AS m(message_id);

REVOKE ALL ON ALL TABLES IN SCHEMA pix FROM PUBLIC;

-- Validation and rendering of each message (C), and the enqueue side effects per statement.
CREATE FUNCTION pix.message_before_insert() RETURNS trigger
    AS 'MODULE_PATHNAME', 'pix_message_before_insert' LANGUAGE C;
CREATE TRIGGER message_validate BEFORE INSERT ON pix.message
    FOR EACH ROW EXECUTE FUNCTION pix.message_before_insert();

CREATE FUNCTION pix.message_immutable() RETURNS trigger
    AS 'MODULE_PATHNAME', 'pix_message_immutable' LANGUAGE C;
CREATE TRIGGER message_immutable BEFORE UPDATE ON pix.message
    FOR EACH ROW EXECUTE FUNCTION pix.message_immutable();

CREATE FUNCTION pix.message_after_insert() RETURNS trigger
    LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    receiver text;
BEGIN
    INSERT INTO pix.ready (ispb, message_id) SELECT recebedor_ispb, id FROM new_messages;
    FOR receiver IN SELECT DISTINCT recebedor_ispb FROM new_messages LOOP
        PERFORM pg_notify('pix_message', receiver);
    END LOOP;
    RETURN NULL;
END
$$;
CREATE TRIGGER message_enqueue AFTER INSERT ON pix.message
    REFERENCING NEW TABLE AS new_messages
    FOR EACH STATEMENT EXECUTE FUNCTION pix.message_after_insert();

-- What a read returns: the id to use next, its URI, and the body exactly as HTTP serves it.
CREATE TYPE pix_read AS (interation_id text, pull_next text, message_count int, body text);

CREATE FUNCTION pix_stream_start(ispb text, max_messages int DEFAULT 1) RETURNS pix_read
    AS 'MODULE_PATHNAME', 'pix_stream_start' LANGUAGE C VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp;

CREATE FUNCTION pix_stream_next(ispb text, interation_id text, max_messages int DEFAULT 1)
    RETURNS pix_read
    AS 'MODULE_PATHNAME', 'pix_stream_next' LANGUAGE C VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp;

CREATE FUNCTION pix_stream_stop(ispb text, interation_id text) RETURNS int
    AS 'MODULE_PATHNAME', 'pix_stream_stop' LANGUAGE C VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp;

CREATE FUNCTION pix_generate_messages(ispb text, number int) RETURNS int
    AS 'MODULE_PATHNAME', 'pix_generate_messages' LANGUAGE C VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp;

CREATE FUNCTION pix_expire_streams() RETURNS int
    AS 'MODULE_PATHNAME', 'pix_expire_streams' LANGUAGE C VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp;

CREATE FUNCTION pix_purge_history() RETURNS bigint
    AS 'MODULE_PATHNAME', 'pix_purge_history' LANGUAGE C VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp;

REVOKE ALL ON FUNCTION pix_stream_start(text, int), pix_stream_next(text, text, int),
    pix_stream_stop(text, text), pix_generate_messages(text, int), pix_expire_streams(),
    pix_purge_history() FROM PUBLIC;

-- The group role the HTTP server logs in through: it may execute the functions and nothing else.
-- A role of that name made by someone else (roles outlive databases and DROP EXTENSION) is used,
-- but never silently: its members get to call every function.
DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'pix_client') THEN
        RAISE WARNING 'role pix_client already exists: it was not created by this CREATE EXTENSION, and it now gets EXECUTE on the pix functions'
            USING DETAIL = format('Its members: %s.', coalesce((SELECT string_agg(m.rolname, ', ' ORDER BY m.rolname)
                                                                 FROM pg_auth_members a JOIN pg_roles m ON m.oid = a.member
                                                                WHERE a.roleid = 'pix_client'::regrole), 'none')),
                  HINT = 'If that is not intended, DROP EXTENSION pix, drop or rename that role, and create the extension again.';
    ELSE
        CREATE ROLE pix_client NOLOGIN;
    END IF;
END
$$;
GRANT EXECUTE ON FUNCTION pix_stream_start(text, int), pix_stream_next(text, text, int),
    pix_stream_stop(text, text), pix_generate_messages(text, int), pix_expire_streams(),
    pix_purge_history() TO pix_client;
