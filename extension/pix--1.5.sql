-- pix extension, version 1.5, complete: the whole current schema in one file (CREATE EXTENSION pix
-- installs from here). Existing installs reach the same schema through the upgrade scripts
-- pix--1.0.sql, pix--1.0--1.1.sql ... pix--1.4--1.5.sql; regress test 93_install_vs_upgrade checks
-- that both give the same catalog. A new version adds its upgrade script and updates this file
-- (renamed to the new version) in the same commit.
-- The invariants these tables keep are explained at the top of extension/stream.c.

\echo Use "CREATE EXTENSION pix" to load this file. \quit

CREATE SCHEMA pix;
REVOKE ALL ON SCHEMA pix FROM PUBLIC;

-- The message log: append-only, immutable. A BEFORE INSERT trigger (C) validates every field against
-- the contract and renders `body`, the JSON exactly as HTTP serves it, so reads copy bytes.
CREATE TABLE pix.message (
    id                   bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    end_to_end_id        text COLLATE "C" NOT NULL UNIQUE,
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
    seq          bigint NOT NULL DEFAULT 0,
    current_iid  text COLLATE "C",
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
    iid          text COLLATE "C" PRIMARY KEY,
    stream_id    bigint NOT NULL,
    seq          bigint NOT NULL,
    message_ids  bigint[] NOT NULL,
    delivered_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    confirmed_at timestamptz,
    requeued_at  timestamptz,
    as_array     boolean
) WITH (fillfactor = 70);
CREATE INDEX iteration_by_stream ON pix.iteration (stream_id, seq);
-- The purge takes the oldest iterations first through this index, so each chunk costs the same
-- whatever the history. It indexes when the batch was delivered, never when it was settled: a
-- batch is settled no earlier than it was delivered, so every iteration whose settled age passes
-- the retention is found in delivery order; and marking a batch confirmed (or requeued) changes no
-- indexed column, so that UPDATE is HOT (1.5; before, the index was on the settled time and every
-- confirmation rewrote the row's entries in all three indexes).
CREATE INDEX iteration_by_delivery ON pix.iteration (delivered_at);
CREATE INDEX stream_closed_by_age ON pix.stream (closed_at) WHERE state <> 'o';

-- The last two ids of each purged closed or expired stream: they keep answering "gone" (410), not
-- "not found", after the purge removed their iterations. Two narrow rows per stream ever closed.
CREATE TABLE pix.retired_id (
    iid  text COLLATE "C" PRIMARY KEY,
    ispb text COLLATE "C" NOT NULL
);
REVOKE ALL ON pix.retired_id FROM PUBLIC;


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
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
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

CREATE FUNCTION pix_expire_streams() RETURNS int
    AS 'MODULE_PATHNAME', 'pix_expire_streams' LANGUAGE C VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp;

CREATE FUNCTION pix_purge_history() RETURNS bigint
    AS 'MODULE_PATHNAME', 'pix_purge_history' LANGUAGE C VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp;

REVOKE ALL ON FUNCTION pix_expire_streams(), pix_purge_history() FROM PUBLIC;

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
GRANT EXECUTE ON FUNCTION pix_expire_streams(), pix_purge_history() TO pix_client;

-- ---- metrics (1.1) ------------------------------------------------------------------------------
-- One row per sample: gauges per ISPB for the max_ispbs busiest ISPBs (a bounded label set), the same
-- gauges over all ISPBs with ispb NULL, and cumulative counters (ispb NULL) that survive restarts of the
-- HTTP server and the purge of old streams. Counting ready messages reads the ready queue's index: its
-- cost grows with the backlog (about 0.1 s per million waiting messages).
-- A registered institution: an ISPB that opened a stream (pix.institution), holds or held a
-- credential, or has a role binding (auth.c's unregistered_sql applies the same rule to sends).
-- Messages to any other ISPB still count in the totals, but never name it: with authentication
-- nobody can send to such an ISPB, and without it the label would be chosen by whoever sends.
CREATE FUNCTION pix_metrics(max_ispbs int DEFAULT 50)
RETURNS TABLE (metric text, ispb text, value bigint)
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
WITH open_streams AS (
    SELECT s.ispb, count(*) AS streams, sum(cardinality(s.pending_ids)) AS pending
      FROM pix.stream s WHERE s.state = 'o' GROUP BY s.ispb),
ready AS (
    SELECT r.ispb, count(*) AS ready FROM pix.ready r GROUP BY r.ispb),
per_ispb AS (
    SELECT coalesce(o.ispb, r.ispb) AS ispb, coalesce(o.streams, 0) AS streams,
           coalesce(o.pending, 0) AS pending, coalesce(r.ready, 0) AS ready
      FROM open_streams o FULL JOIN ready r ON r.ispb = o.ispb),
registered AS (
    SELECT i.ispb FROM pix.institution i
    UNION SELECT c.ispb FROM pix.credential c WHERE c.ispb IS NOT NULL
    UNION SELECT b.ispb FROM pix.role_binding b),
busiest AS (
    SELECT p.* FROM per_ispb p
     WHERE p.ispb ~ '^[0-9]{8}$' AND p.ispb IN (SELECT g.ispb FROM registered g)
     ORDER BY p.streams + p.pending + p.ready DESC, p.ispb
     LIMIT greatest(coalesce(max_ispbs, 50), 0)),
live AS (
    SELECT coalesce(sum(delivered), 0) AS delivered, coalesce(sum(redelivered), 0) AS redelivered,
           coalesce(sum(confirmed), 0) AS confirmed, coalesce(sum(requeued), 0) AS requeued,
           count(*) AS opened, count(*) FILTER (WHERE state = 'e') AS expired
      FROM pix.stream),
purged AS (
    SELECT coalesce(sum(purged_delivered), 0) AS delivered,
           coalesce(sum(purged_redelivered), 0) AS redelivered,
           coalesce(sum(purged_confirmed), 0) AS confirmed, coalesce(sum(purged_requeued), 0) AS requeued,
           coalesce(sum(purged_streams), 0) AS opened, coalesce(sum(purged_expired), 0) AS expired
      FROM pix.institution)
SELECT 'pix_streams_open', b.ispb, b.streams FROM busiest b
UNION ALL SELECT 'pix_messages_pending', b.ispb, b.pending FROM busiest b
UNION ALL SELECT 'pix_messages_ready', b.ispb, b.ready FROM busiest b
UNION ALL SELECT 'pix_streams_open', NULL, coalesce(sum(p.streams), 0)::bigint FROM per_ispb p
UNION ALL SELECT 'pix_messages_pending', NULL, coalesce(sum(p.pending), 0)::bigint FROM per_ispb p
UNION ALL SELECT 'pix_messages_ready', NULL, coalesce(sum(p.ready), 0)::bigint FROM per_ispb p
UNION ALL SELECT 'pix_messages_delivered_total', NULL, (l.delivered + u.delivered)::bigint FROM live l, purged u
UNION ALL SELECT 'pix_messages_redelivered_total', NULL, (l.redelivered + u.redelivered)::bigint FROM live l, purged u
UNION ALL SELECT 'pix_messages_confirmed_total', NULL, (l.confirmed + u.confirmed)::bigint FROM live l, purged u
UNION ALL SELECT 'pix_messages_requeued_total', NULL, (l.requeued + u.requeued)::bigint FROM live l, purged u
UNION ALL SELECT 'pix_streams_opened_total', NULL, (l.opened + u.opened)::bigint FROM live l, purged u
UNION ALL SELECT 'pix_streams_expired_total', NULL, (l.expired + u.expired)::bigint FROM live l, purged u
$$;

REVOKE ALL ON FUNCTION pix_metrics(int) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION pix_metrics(int) TO pix_client;

-- ---- liveness, producers (1.2) ------------------------------------------------------------------
-- Marks the live streams named by these ids (current id, or previous id while its batch is pending)
-- as read now, in one statement; returns how many. The HTTP server calls it for all its parked reads
-- at once. NULL, empty, malformed: 0, never an error.
CREATE FUNCTION pix_streams_keepalive(interation_ids text[]) RETURNS int
    AS 'MODULE_PATHNAME', 'pix_streams_keepalive' LANGUAGE C VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp;
REVOKE ALL ON FUNCTION pix_streams_keepalive(text[]) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION pix_streams_keepalive(text[]) TO pix_client;

-- Producers: a role that may INSERT messages (the listed columns only: not id, enqueued_at or body)
-- and nothing else. The statement trigger that queues the new messages runs as the extension's
-- owner (SECURITY DEFINER above), reading only the statement's own new rows: a producer cannot
-- queue any other message.
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

-- ---- credentials, send, stop all (1.3) ----------------------------------------------------------
-- Certificates and tokens. `lookup` is sha256 of the credential string pixd passes
-- ('cert:<hex>' or 'token:<hex>'), never a secret: auth.c looks rows up by it (a digest of the
-- digest, so nothing secret-derived is compared byte by byte). One active row per credential.
CREATE TABLE pix.credential (
    credential_id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    kind          text NOT NULL CHECK (kind IN ('cert', 'token')),
    ispb          text COLLATE "C" CHECK (ispb ~ '^[0-9]{8}$'),
    admin         boolean NOT NULL DEFAULT false,
    lookup        bytea NOT NULL,
    fingerprint   text,            -- certificates: the SHA-256 of the DER, 64 lowercase hex
    label         text NOT NULL DEFAULT '',
    created_at    timestamptz NOT NULL DEFAULT clock_timestamp(),
    created_by    text NOT NULL DEFAULT session_user,
    revoked_at    timestamptz,
    revoked_by    text,
    CHECK ((ispb IS NULL) = admin),
    CHECK ((kind = 'cert') = (fingerprint IS NOT NULL))
);
CREATE UNIQUE INDEX credential_active ON pix.credential (lookup) WHERE revoked_at IS NULL;
CREATE INDEX credential_by_ispb ON pix.credential (ispb);

-- SQL roles confined to one ISPB (and the roles that are members of them). role_name: the role's
-- name when it was bound (see "a binding never outlives its role" below).
CREATE TABLE pix.role_binding (
    role     oid PRIMARY KEY,
    ispb     text COLLATE "C" NOT NULL CHECK (ispb ~ '^[0-9]{8}$'),
    bound_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    bound_by text NOT NULL DEFAULT session_user,
    role_name name NOT NULL
);

-- Backends keep the binding of their role; any change to the table makes them all forget it at
-- commit (auth.c), so a binding holds from the next call on.
CREATE FUNCTION pix.role_binding_changed() RETURNS trigger
    AS 'MODULE_PATHNAME', 'pix_role_binding_changed' LANGUAGE C;
CREATE TRIGGER role_binding_changed AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON pix.role_binding
    FOR EACH STATEMENT EXECUTE FUNCTION pix.role_binding_changed();

-- Every management change: who (session_user), when, which ISPB, what.
CREATE TABLE pix.credential_audit (
    audit_id      bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at            timestamptz NOT NULL DEFAULT clock_timestamp(),
    actor         text NOT NULL DEFAULT session_user,
    action        text NOT NULL,
    ispb          text,
    credential_id bigint,
    detail        text NOT NULL DEFAULT ''
);

-- endToEndIds accepted by pix_messages_send and the digest of their rendered body, kept for
-- pix.send_idempotency_horizon even after pix_purge_history() removed the message. Rows arrive in
-- accepted_at order, so a BRIN index finds the expired ones for a fraction of a b-tree's upkeep.
CREATE TABLE pix.sent_message (
    end_to_end_id  text COLLATE "C" PRIMARY KEY,
    content_digest bytea NOT NULL,
    sender_ispb    text NOT NULL,
    accepted_at    timestamptz NOT NULL
);
CREATE INDEX sent_message_by_time ON pix.sent_message USING brin (accepted_at);

REVOKE ALL ON pix.credential, pix.role_binding, pix.credential_audit, pix.sent_message FROM PUBLIC;

DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'pix_admin') THEN
        CREATE ROLE pix_admin NOLOGIN;
    END IF;
END
$$;
GRANT USAGE ON SCHEMA pix TO pix_admin;
GRANT SELECT ON pix.credential_audit, pix.role_binding TO pix_admin;

-- ---- the client-facing functions, with `credential` ------------------------------------------------
CREATE FUNCTION pix_stream_start(ispb text, max_messages int DEFAULT 1, credential text DEFAULT NULL)
    RETURNS pix_read
    AS 'MODULE_PATHNAME', 'pix_stream_start' LANGUAGE C VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp;

CREATE FUNCTION pix_stream_next(ispb text, interation_id text, max_messages int DEFAULT 1,
                                credential text DEFAULT NULL)
    RETURNS pix_read
    AS 'MODULE_PATHNAME', 'pix_stream_next' LANGUAGE C VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp;

CREATE FUNCTION pix_stream_stop(ispb text, interation_id text, credential text DEFAULT NULL)
    RETURNS int
    AS 'MODULE_PATHNAME', 'pix_stream_stop' LANGUAGE C VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp;

CREATE FUNCTION pix_generate_messages(ispb text, number int, credential text DEFAULT NULL)
    RETURNS int
    AS 'MODULE_PATHNAME', 'pix_generate_messages' LANGUAGE C VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp;

-- What a send answers: messages stored now, messages already accepted, the 201 JSON body.
CREATE TYPE pix_sent AS (accepted int, duplicates int, body text);

CREATE FUNCTION pix_messages_send(ispb text, body text, credential text DEFAULT NULL)
    RETURNS pix_sent
    AS 'MODULE_PATHNAME', 'pix_messages_send' LANGUAGE C VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp;

CREATE FUNCTION pix_streams_stop_all(ispb text, credential text DEFAULT NULL) RETURNS int
    AS 'MODULE_PATHNAME', 'pix_streams_stop_all' LANGUAGE C VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp;

REVOKE ALL ON FUNCTION pix_stream_start(text, int, text), pix_stream_next(text, text, int, text),
    pix_stream_stop(text, text, text), pix_generate_messages(text, int, text),
    pix_messages_send(text, text, text), pix_streams_stop_all(text, text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION pix_stream_start(text, int, text), pix_stream_next(text, text, int, text),
    pix_stream_stop(text, text, text), pix_generate_messages(text, int, text),
    pix_messages_send(text, text, text), pix_streams_stop_all(text, text) TO pix_client;

-- The group role for SQL roles of one institution (bound with pix_role_bind): the functions of one
-- ISPB and nothing else. Unlike pix_client (the HTTP server's), it cannot read pix_metrics() (every
-- institution's queue sizes) nor run the housekeeping functions.
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'pix_institution') THEN
        CREATE ROLE pix_institution NOLOGIN;
    END IF;
END
$$;
GRANT EXECUTE ON FUNCTION pix_stream_start(text, int, text), pix_stream_next(text, text, int, text),
    pix_stream_stop(text, text, text), pix_messages_send(text, text, text),
    pix_streams_stop_all(text, text) TO pix_institution;

-- ---- management (pix_admin) ---------------------------------------------------------------------
-- The helpers below run only inside the management functions (EXECUTE revoked from everyone);
-- they are SECURITY DEFINER with a pinned search_path like every function of the extension, so
-- no caller's role or search_path can ever reach into them.
CREATE FUNCTION pix.new_token() RETURNS text
    AS 'MODULE_PATHNAME', 'pix_new_token' LANGUAGE C VOLATILE STRICT SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp;
REVOKE ALL ON FUNCTION pix.new_token() FROM PUBLIC;

-- A fingerprint as 64 lowercase hex digits (upper case and ':' separators accepted), else 22023.
CREATE FUNCTION pix.fingerprint_arg(fingerprint text) RETURNS text
LANGUAGE plpgsql IMMUTABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    hex text := lower(replace(coalesce(fingerprint, ''), ':', ''));
BEGIN
    IF hex !~ '^[0-9a-f]{64}$' THEN
        RAISE EXCEPTION 'invalid certificate fingerprint' USING ERRCODE = '22023',
            DETAIL = 'A fingerprint is the SHA-256 of the certificate''s DER: 64 hex digits.';
    END IF;
    RETURN hex;
END
$$;

CREATE FUNCTION pix.ispb_arg(ispb text) RETURNS text
LANGUAGE plpgsql IMMUTABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF ispb IS NULL OR ispb !~ '^[0-9]{8}$' THEN
        RAISE EXCEPTION 'invalid ISPB' USING ERRCODE = 'PX001',
            DETAIL = 'An ISPB is exactly 8 ASCII digits.';
    END IF;
    RETURN ispb;
END
$$;

CREATE FUNCTION pix.lookup_key(credential text) RETURNS bytea
    LANGUAGE sql IMMUTABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
    AS $$ SELECT sha256(convert_to(credential, 'UTF8')) $$;

CREATE FUNCTION pix.audit(action text, ispb text, credential_id bigint, detail text) RETURNS void
    LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
    INSERT INTO pix.credential_audit (action, ispb, credential_id, detail)
    VALUES (action, ispb, credential_id, coalesce(detail, ''))
$$;

CREATE FUNCTION pix.certificate_add(ispb text, fingerprint text, label text) RETURNS bigint
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    fp text := pix.fingerprint_arg(fingerprint);
    id bigint;
BEGIN
    INSERT INTO pix.credential (kind, ispb, admin, lookup, fingerprint, label)
    VALUES ('cert', ispb, ispb IS NULL, pix.lookup_key('cert:' || fp), fp, coalesce(label, ''))
    RETURNING credential_id INTO id;
    PERFORM pix.audit(CASE WHEN ispb IS NULL THEN 'admin_certificate_add' ELSE 'certificate_add' END,
                      ispb, id, 'fingerprint ' || fp);
    RETURN id;
EXCEPTION WHEN unique_violation THEN
    RAISE EXCEPTION 'certificate already registered' USING ERRCODE = '23505',
        DETAIL = 'An active credential has this fingerprint; revoke it first.';
END
$$;

CREATE FUNCTION pix.token_issue(ispb text, label text) RETURNS text
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    token text := pix.new_token();
    id bigint;
BEGIN
    INSERT INTO pix.credential (kind, ispb, admin, lookup, label)
    VALUES ('token', ispb, ispb IS NULL,
            pix.lookup_key('token:' || encode(sha256(convert_to(token, 'UTF8')), 'hex')),
            coalesce(label, ''))
    RETURNING credential_id INTO id;
    PERFORM pix.audit(CASE WHEN ispb IS NULL THEN 'admin_token_issue' ELSE 'token_issue' END,
                      ispb, id, 'label ' || coalesce(label, ''));
    RETURN token;
END
$$;

CREATE FUNCTION pix_certificate_add(ispb text, fingerprint text, label text DEFAULT '')
    RETURNS bigint LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, pg_temp
    AS $$ SELECT pix.certificate_add(pix.ispb_arg(ispb), fingerprint, label) $$;

CREATE FUNCTION pix_admin_certificate_add(fingerprint text, label text DEFAULT '')
    RETURNS bigint LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, pg_temp
    AS $$ SELECT pix.certificate_add(NULL, fingerprint, label) $$;

CREATE FUNCTION pix_token_issue(ispb text, label text DEFAULT '')
    RETURNS text LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, pg_temp
    AS $$ SELECT pix.token_issue(pix.ispb_arg(ispb), label) $$;

CREATE FUNCTION pix_admin_token_issue(label text DEFAULT '')
    RETURNS text LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, pg_temp
    AS $$ SELECT pix.token_issue(NULL, label) $$;

CREATE FUNCTION pix_credential_revoke(credential_id bigint) RETURNS boolean
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    revoked pix.credential;
BEGIN
    UPDATE pix.credential c SET revoked_at = clock_timestamp(), revoked_by = session_user
     WHERE c.credential_id = pix_credential_revoke.credential_id AND c.revoked_at IS NULL
    RETURNING * INTO revoked;
    IF NOT FOUND THEN
        RETURN false;
    END IF;
    PERFORM pix.audit(revoked.kind || '_revoke', revoked.ispb, revoked.credential_id,
                      coalesce('fingerprint ' || revoked.fingerprint, 'label ' || revoked.label));
    RETURN true;
END
$$;

CREATE FUNCTION pix_certificate_revoke(fingerprint text) RETURNS int
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    fp text := pix.fingerprint_arg(fingerprint);
    n int := 0;
    id bigint;
BEGIN
    FOR id IN SELECT c.credential_id FROM pix.credential c
               WHERE c.kind = 'cert' AND c.fingerprint = fp AND c.revoked_at IS NULL LOOP
        IF @extschema@.pix_credential_revoke(id) THEN
            n := n + 1;
        END IF;
    END LOOP;
    RETURN n;
END
$$;

CREATE FUNCTION pix_credential_list(ispb text DEFAULT NULL)
RETURNS TABLE (credential_id bigint, kind text, ispb text, admin boolean, label text,
               fingerprint text, created_at timestamptz, created_by text, revoked_at timestamptz,
               revoked_by text)
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
    SELECT c.credential_id, c.kind, c.ispb, c.admin, c.label, c.fingerprint, c.created_at,
           c.created_by, c.revoked_at, c.revoked_by
      FROM pix.credential c
     WHERE pix_credential_list.ispb IS NULL OR c.ispb = pix_credential_list.ispb
     ORDER BY c.credential_id
$$;

CREATE FUNCTION pix_role_bind(role regrole, ispb text) RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    valid_ispb text := pix.ispb_arg(ispb);
BEGIN
    IF role IS NULL THEN
        RAISE EXCEPTION 'invalid role' USING ERRCODE = '22023';
    END IF;
    PERFORM pix.role_binding_sweep();
    INSERT INTO pix.role_binding AS b (role, ispb) VALUES (role, valid_ispb)
    ON CONFLICT ON CONSTRAINT role_binding_pkey
    DO UPDATE SET ispb = excluded.ispb, bound_at = excluded.bound_at, bound_by = excluded.bound_by;
    PERFORM pix.audit('role_bind', valid_ispb, NULL, 'role ' || role::text);
END
$$;

CREATE FUNCTION pix_role_unbind(role regrole) RETURNS boolean
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    old_ispb text;
BEGIN
    PERFORM pix.role_binding_sweep();
    DELETE FROM pix.role_binding b WHERE b.role = pix_role_unbind.role RETURNING b.ispb INTO old_ispb;
    IF NOT FOUND THEN
        RETURN false;
    END IF;
    PERFORM pix.audit('role_unbind', old_ispb, NULL, 'role ' || role::text);
    RETURN true;
END
$$;

REVOKE ALL ON FUNCTION pix_certificate_add(text, text, text), pix_admin_certificate_add(text, text),
    pix_token_issue(text, text), pix_admin_token_issue(text), pix_credential_revoke(bigint),
    pix_certificate_revoke(text), pix_credential_list(text), pix_role_bind(regrole, text),
    pix_role_unbind(regrole) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION pix_certificate_add(text, text, text), pix_admin_certificate_add(text, text),
    pix_token_issue(text, text), pix_admin_token_issue(text), pix_credential_revoke(bigint),
    pix_certificate_revoke(text), pix_credential_list(text), pix_role_bind(regrole, text),
    pix_role_unbind(regrole) TO pix_admin;
REVOKE ALL ON FUNCTION pix.new_token(), pix.fingerprint_arg(text), pix.ispb_arg(text),
    pix.lookup_key(text), pix.audit(text, text, bigint, text),
    pix.certificate_add(text, text, text), pix.token_issue(text, text) FROM PUBLIC;

-- ---- a binding never outlives its role -------------------------------------------------------------
-- A binding names its role by OID and by the role's name when it was bound. auth.c counts a binding
-- only while a role with that OID and that name exists: a dropped role's row binds nobody, so a role
-- created later under the same name (another OID), or a later role that gets the old OID (another
-- name), is unbound -- and an unbound institution role is refused (fail closed). PostgreSQL has no
-- event trigger for DROP ROLE (roles are shared objects), hence the check at lookup; pix_role_bind
-- and pix_role_unbind also delete such stale rows (audited 'role_binding_stale').
-- Registered institutions are looked up by ISPB (auth.c, pix_metrics).
CREATE INDEX role_binding_by_ispb ON pix.role_binding (ispb);

-- The name is always the role's own at bind time, whoever inserts the row (pix_role_bind, or
-- scripts/shards.sh move, which inserts role and ISPB only).
CREATE FUNCTION pix.role_binding_name() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    NEW.role_name := (SELECT r.rolname FROM pg_catalog.pg_roles r WHERE r.oid = NEW.role);
    IF NEW.role_name IS NULL THEN
        RAISE EXCEPTION 'invalid role' USING ERRCODE = '42704',
            DETAIL = format('No role has OID %s.', NEW.role);
    END IF;
    RETURN NEW;
END
$$;
REVOKE ALL ON FUNCTION pix.role_binding_name() FROM PUBLIC;
CREATE TRIGGER role_binding_name BEFORE INSERT OR UPDATE ON pix.role_binding
    FOR EACH ROW EXECUTE FUNCTION pix.role_binding_name();

-- Deletes the bindings whose role is gone or was renamed (they bind nobody already), audited.
CREATE FUNCTION pix.role_binding_sweep() RETURNS int
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    n int;
BEGIN
    WITH gone AS (
        DELETE FROM pix.role_binding b
         WHERE NOT EXISTS (SELECT FROM pg_catalog.pg_roles r
                            WHERE r.oid = b.role AND r.rolname = b.role_name)
        RETURNING b.role, b.role_name, b.ispb),
    audited AS (
        INSERT INTO pix.credential_audit (action, ispb, detail)
        SELECT 'role_binding_stale', g.ispb, format('role %s (oid %s) no longer exists', g.role_name, g.role)
          FROM gone g RETURNING 1)
    SELECT count(*) INTO n FROM audited;
    RETURN n;
END
$$;
REVOKE ALL ON FUNCTION pix.role_binding_sweep() FROM PUBLIC;
