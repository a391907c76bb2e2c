-- pix router: the database pixd talks to when institutions are spread over several shards.
--
-- Every shard is a PostgreSQL database with the `pix` extension holding a disjoint set of ISPBs. The
-- router holds no pix data: its functions have the names, arguments and results of the extension's and
-- forward each call with PL/Proxy to the shard of the call's ISPB, so claims, ids, confirmation and the
-- 6-collector limit stay single-database transactions on that shard. Functions that concern everyone
-- (expiry sweep, purge, metrics, keepalive) run on every shard and add up the answers.
--
-- Installed by scripts/shards.sh (never by hand), which first writes the cluster configuration: the
-- foreign server `pix_cluster` whose options p0..p<N-1> are the partitions' conninfos (N a power of two,
-- 16 by default, several partitions per database). That server is the one source of truth: PL/Proxy
-- routes with it and pixd reads the shard list from it (pix_shards()).
--
-- psql variables: partitions (N), credentials ('on' when the shards' functions take the trailing
-- `credential text` parameter of pix 1.3, 'off' for older shards: a non-NULL credential is then refused).
--
-- Routing: partition = hashtext(ispb) & (N - 1), as PL/Proxy does with RUN ON. Before a call is
-- forwarded, pix_router.partition_of() takes a shared advisory lock on its partition without waiting;
-- scripts/shards.sh move holds that lock exclusively while it copies a partition to another server, so
-- calls of a moving partition answer 57P03 (HTTP 503 + Retry-After) instead of reaching a half-moved
-- shard, and calls already in flight finish before the copy starts.

\set ON_ERROR_STOP 1
SET client_min_messages = warning;

CREATE EXTENSION IF NOT EXISTS plproxy;
CREATE SCHEMA IF NOT EXISTS pix_router;
REVOKE ALL ON SCHEMA pix_router FROM PUBLIC;

DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'pix_client') THEN
        CREATE ROLE pix_client NOLOGIN;
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_type WHERE typname = 'pix_read'
                   AND typnamespace = 'public'::regnamespace) THEN
        CREATE TYPE public.pix_read AS (interation_id text, pull_next text, message_count int, body text);
    END IF;
END
$$;
GRANT USAGE ON SCHEMA pix_router TO pix_client;
GRANT USAGE ON FOREIGN SERVER pix_cluster TO pix_client;
-- PL/Proxy says "dropping stale conn" (NOTICE) on the call after a shard raised an error (404, 410...):
-- routine here, not worth a line in the server's log each time.
DO $$
BEGIN
    EXECUTE format('ALTER DATABASE %I SET client_min_messages = warning', current_database());
END
$$;

-- What this router was installed with (read by partition_of and by scripts/shards.sh).
CREATE TABLE IF NOT EXISTS pix_router.setting (name text PRIMARY KEY, value text NOT NULL);
INSERT INTO pix_router.setting VALUES ('partitions', :'partitions'), ('credentials', :'credentials')
    ON CONFLICT (name) DO UPDATE SET value = excluded.value;

-- The advisory lock key space of partitions (first key; the second is the partition number).
CREATE OR REPLACE FUNCTION pix_router.lock_space() RETURNS int LANGUAGE sql IMMUTABLE
    AS $$ SELECT 1885956096 $$; -- 'pix\0'

-- psql does not expand variables inside dollar quotes: the settings go in through format() + \gexec.
SELECT :'partitions'::int AS partitions, :'credentials'::boolean AS credentials \gset
SELECT (:partitions & (:partitions - 1)) = 0 AND :partitions BETWEEN 1 AND 1024 AS partitions_ok \gset
\if :partitions_ok
\else
    \echo partitions must be a power of two between 1 and 1024
    \quit
\endif

-- The partition of an ISPB: the rule PL/Proxy applies to RUN ON's value.
SELECT format($f$
CREATE OR REPLACE FUNCTION pix_router.partition_number(ispb text) RETURNS int LANGUAGE sql IMMUTABLE
    AS $s$ SELECT coalesce(hashtext(ispb), 0) & %s $s$ $f$, :partitions - 1) \gexec

-- RUN ON's value for a call of this ISPB: refuses a credential the shards would not check, and a call of a
-- partition that scripts/shards.sh move is copying (SQLSTATE 57P03, which pixd answers with 503). A NULL
-- or malformed ISPB is routed like any other value: its shard answers PX001.
-- Every routed call runs it, so it has no SET clause (a function with one saves and restores the
-- settings on each call: bench/router-per-call.sh); every name and operator in it is schema-qualified
-- instead, so the caller's search_path cannot change what it calls.
SELECT format($f$
CREATE OR REPLACE FUNCTION pix_router.partition_of(ispb text, credential text) RETURNS int
LANGUAGE plpgsql VOLATILE AS $fn$
DECLARE
    h int := coalesce(pg_catalog.hashtext(ispb), 0);
    p int := h OPERATOR(pg_catalog.&) %2$s;
BEGIN
    IF credential IS NOT NULL AND NOT %1$L::pg_catalog.bool THEN
        RAISE EXCEPTION 'unauthenticated' USING ERRCODE = 'PX012',
            DETAIL = 'The shards of this router predate credentials.';
    END IF;
    IF NOT pg_catalog.pg_try_advisory_xact_lock_shared(pix_router.lock_space(), p) THEN
        RAISE EXCEPTION 'partition %% is moving to another server', p
            USING ERRCODE = '57P03', HINT = 'Retry in a second.';
    END IF;
    RETURN h;
END
$fn$ $f$, :'credentials', :partitions - 1) \gexec
GRANT EXECUTE ON FUNCTION pix_router.partition_of(text, text) TO pix_client;

-- The client-facing functions, generated from one list. kind 'ispb': RUN ON the ISPB's partition, same
-- result as the extension's; kind 'sum': the function of the extension's name calls it on each shard in
-- turn (pix_router.<name>_on, RUN ON one partition of that shard) and adds up the answers, skipping a
-- shard that cannot be reached, so that one shard down does not stop the expiry sweep of the others. `args` is the signature, `pass` the arguments passed
-- on; the credential is passed on only when the shards take it.
WITH fn(kind, name, args, pass, result) AS (VALUES
    ('ispb', 'pix_stream_start', 'ispb text, max_messages int DEFAULT 1', 'ispb, max_messages', 'pix_read'),
    ('ispb', 'pix_stream_next', 'ispb text, interation_id text, max_messages int DEFAULT 1',
             'ispb, interation_id, max_messages', 'pix_read'),
    ('ispb', 'pix_stream_stop', 'ispb text, interation_id text', 'ispb, interation_id', 'int'),
    ('ispb', 'pix_generate_messages', 'ispb text, number int', 'ispb, number', 'int'),
    ('ispb', 'pix_streams_stop_all', 'ispb text', 'ispb', 'int'),
    ('sum', 'pix_expire_streams', '', '', 'int'),
    ('sum', 'pix_purge_history', '', '', 'bigint'),
    ('sum', 'pix_streams_keepalive', 'interation_ids text[]', 'interation_ids', 'int')),
ddl AS (
    SELECT format($f$
        CREATE OR REPLACE FUNCTION public.%1$I(%2$s, credential text DEFAULT NULL) RETURNS %3$s
        LANGUAGE plproxy AS $p$
            CLUSTER 'pix_cluster';
            RUN ON pix_router.partition_of(ispb, credential);
            SELECT %4$s FROM public.%1$I(%5$s) AS %1$I;
        $p$ $f$, name, args, result, CASE WHEN result = 'pix_read' THEN '*' ELSE quote_ident(name) END,
        pass || CASE WHEN :'credentials'::boolean THEN ', credential' ELSE '' END) AS stmt,
        format('public.%I(%s, text)', name, regexp_replace(args, ' DEFAULT [^,]*', '', 'g')) AS sig
      FROM fn WHERE kind = 'ispb'
    UNION ALL
    SELECT format($f$
        CREATE OR REPLACE FUNCTION pix_router.%1$I(%2$s) RETURNS %3$s LANGUAGE plproxy AS $p$
            CLUSTER 'pix_cluster';
            RUN ON shard_partition;
            SELECT public.%4$I(%5$s) AS %1$I;
        $p$ $f$, name || '_on', concat_ws(', ', 'shard_partition int', nullif(args, '')), result, name, pass),
        format('pix_router.%I(%s)', name || '_on', concat_ws(', ', 'int', nullif(args, '')))
      FROM fn WHERE kind = 'sum'
    UNION ALL
    SELECT format($f$
        CREATE OR REPLACE FUNCTION public.%1$I(%2$s) RETURNS %3$s
        LANGUAGE plpgsql VOLATILE SET search_path = pg_catalog, pg_temp AS $s$
        DECLARE
            total %3$s := 0;
            p int;
        BEGIN
            FOR p IN SELECT s.partitions[1] FROM public.pix_shards() s LOOP
                BEGIN
                    total := total + pix_router.%4$I(%5$s);
                EXCEPTION WHEN internal_error THEN
                    NULL; -- PL/Proxy could not reach that shard: the others are served
                END;
            END LOOP;
            RETURN total;
        END
        $s$ $f$, name, args, result, name || '_on', concat_ws(', ', 'p', nullif(pass, ''))),
        format('public.%I(%s)', name, args)
      FROM fn WHERE kind = 'sum')
SELECT s FROM ddl, LATERAL (VALUES (stmt), (format('REVOKE ALL ON FUNCTION %s FROM PUBLIC', sig)),
                                   (format('GRANT EXECUTE ON FUNCTION %s TO pix_client', sig))) AS v(s) \gexec

-- /metrics of every shard: counters and totals (ispb NULL) add up; per-ISPB gauges are kept for the
-- max_ispbs busiest ISPBs over all shards (an ISPB lives on one shard, so its rows come from one).
-- A shard that cannot be reached is skipped and counted in pix_shards_unreachable.
CREATE OR REPLACE FUNCTION pix_router.pix_metrics_on(shard_partition int, max_ispbs int)
RETURNS TABLE (metric text, ispb text, value bigint) LANGUAGE plproxy AS $$
    CLUSTER 'pix_cluster';
    RUN ON shard_partition;
    SELECT metric, ispb, value FROM public.pix_metrics(max_ispbs);
$$;
CREATE OR REPLACE FUNCTION pix_router.pix_metrics_each(max_ispbs int)
RETURNS TABLE (metric text, ispb text, value bigint)
LANGUAGE plpgsql VOLATILE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    p int;
    unreachable bigint := 0;
BEGIN
    FOR p IN SELECT s.partitions[1] FROM public.pix_shards() s LOOP
        BEGIN
            RETURN QUERY SELECT * FROM pix_router.pix_metrics_on(p, max_ispbs);
        EXCEPTION WHEN internal_error THEN
            unreachable := unreachable + 1;
        END;
    END LOOP;
    metric := 'pix_shards_unreachable';
    ispb := NULL;
    value := unreachable;
    RETURN NEXT;
END
$$;
CREATE OR REPLACE FUNCTION public.pix_metrics(max_ispbs int DEFAULT 50)
RETURNS TABLE (metric text, ispb text, value bigint) LANGUAGE sql VOLATILE AS $$
WITH m AS (SELECT * FROM pix_router.pix_metrics_each(max_ispbs)),
busiest AS (
    SELECT m.ispb FROM m WHERE m.ispb IS NOT NULL GROUP BY m.ispb
     ORDER BY sum(m.value) DESC, m.ispb LIMIT greatest(coalesce(max_ispbs, 50), 0))
SELECT m.metric, m.ispb, sum(m.value)::bigint FROM m
 WHERE m.ispb IS NULL OR m.ispb IN (SELECT b.ispb FROM busiest b)
 GROUP BY m.metric, m.ispb ORDER BY m.metric, m.ispb NULLS FIRST
$$;
REVOKE ALL ON FUNCTION pix_router.pix_metrics_on(int, int) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION pix_router.pix_metrics_on(int, int) TO pix_client;
REVOKE ALL ON FUNCTION public.pix_metrics(int), pix_router.pix_metrics_each(int) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION public.pix_metrics(int), pix_router.pix_metrics_each(int) TO pix_client;

-- The shards as the cluster configuration has them: one row per distinct conninfo, numbered in the
-- order of their first partition. pixd LISTENs on each; scripts/shards.sh lists and moves with it.
CREATE OR REPLACE FUNCTION public.pix_shards()
RETURNS TABLE (shard int, conninfo text, partitions int[])
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
SELECT (row_number() OVER (ORDER BY min(p.partition)) - 1)::int, p.conninfo, array_agg(p.partition ORDER BY p.partition)
  FROM (SELECT substr(split_part(o, '=', 1), 2)::int AS partition, substr(o, strpos(o, '=') + 1) AS conninfo
          FROM pg_foreign_server s, unnest(s.srvoptions) o
         WHERE s.srvname = 'pix_cluster' AND o ~ '^p[0-9]+=') p
 GROUP BY p.conninfo ORDER BY min(p.partition)
$$;
REVOKE ALL ON FUNCTION public.pix_shards() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION public.pix_shards() TO pix_client;

-- ---- Sending (pix 1.3): a batch is split by the receivers' shards --------------------------------
-- A batch whose receivers all live on one shard goes there as it is: one transaction, the shard's own
-- answer. A batch for receivers on several shards is split with PL/Proxy's SPLIT into one part per
-- shard, each sent in parallel and committed by its shard on its own: there is no transaction across
-- shards, so when one part is refused (422, 409) or its shard is down (503), the parts of the other
-- shards may already be stored. Re-sending the whole batch is then safe: an accepted message sent again
-- counts as a duplicate, not an error. A 422's index is translated back to the batch's index.
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_type WHERE typname = 'pix_sent' AND typnamespace = 'public'::regnamespace) THEN
        CREATE TYPE public.pix_sent AS (accepted int, duplicates int, body text);
    END IF;
END
$$;

SELECT format($f$
CREATE OR REPLACE FUNCTION pix_router.messages_send_one(ispb text, route text, body text, credential text)
RETURNS public.pix_sent LANGUAGE plproxy AS $p$
    CLUSTER 'pix_cluster';
    RUN ON pix_router.partition_of(route, credential);
    SELECT * FROM public.pix_messages_send(ispb, body%1$s);
$p$ $f$, CASE WHEN :'credentials'::boolean THEN ', credential' ELSE '' END) \gexec
SELECT format($f$
CREATE OR REPLACE FUNCTION pix_router.messages_send_split(ispb text, receivers text[], messages text[],
                                                         credential text)
RETURNS SETOF public.pix_sent LANGUAGE plproxy AS $p$
    CLUSTER 'pix_cluster';
    SPLIT receivers, messages;
    RUN ON pix_router.partition_of(receivers, credential);
    SELECT * FROM public.pix_messages_send(ispb, '[' || array_to_string(messages, ',') || ']'%1$s);
$p$ $f$, CASE WHEN :'credentials'::boolean THEN ', credential' ELSE '' END) \gexec

-- The shards' 201 bodies as one: numbers add up, arrays are concatenated in shard order, anything else
-- is the first shard's. Bodies that are not all JSON objects: the first one.
CREATE OR REPLACE FUNCTION pix_router.merge_bodies(bodies text[]) RETURNS text
LANGUAGE plpgsql IMMUTABLE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    merged text;
BEGIN
    IF EXISTS (SELECT 1 FROM unnest(bodies) b WHERE json_typeof(b::json) IS DISTINCT FROM 'object') THEN
        RETURN bodies[1];
    END IF;
    SELECT json_object_agg(m.k, m.v ORDER BY m.first_seen)::text INTO merged
      FROM (SELECT e.key AS k, min(b.n) AS first_seen,
                   CASE WHEN bool_and(json_typeof(e.value) = 'number')
                        THEN to_json(sum(e.value::text::numeric))
                        WHEN bool_and(json_typeof(e.value) = 'array')
                        THEN json_agg(x.value ORDER BY b.n, x.i)
                        ELSE (array_agg(e.value ORDER BY b.n))[1] END AS v
              FROM unnest(bodies) WITH ORDINALITY b(body, n)
             CROSS JOIN LATERAL json_each(b.body::json) e
              LEFT JOIN LATERAL json_array_elements(CASE WHEN json_typeof(e.value) = 'array' THEN e.value END)
                        WITH ORDINALITY x(value, i) ON true
             GROUP BY e.key) m;
    RETURN coalesce(merged, bodies[1]);
END
$$;

-- The shard's error again, without PL/Proxy's prefixes, and with a "messages[k]" of a part translated
-- back to the batch's index (idx: the batch index of each message, grouped by shard as SPLIT sends them;
-- sizes: how many each part had). When the failing part cannot be told apart, every candidate is named.
CREATE OR REPLACE FUNCTION pix_router.reraise_part_error(state text, msg text, detail text, idx int[], sizes int[])
RETURNS void LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    k int;
    candidates text[] := '{}';
    start int := 0;
    size int;
BEGIN
    msg := regexp_replace(msg, '^.*REMOTE ERROR: ', '');
    detail := regexp_replace(coalesce(detail, ''), '^Remote detail: ', '');
    k := substring(detail FROM '^messages\[([0-9]+)\]')::int;
    IF k IS NOT NULL THEN
        FOREACH size IN ARRAY sizes LOOP
            IF k < size THEN
                candidates := candidates || format('messages[%s]', idx[start + k + 1]);
            END IF;
            start := start + size;
        END LOOP;
        detail := array_to_string(candidates, ' or ') || substr(detail, length(format('messages[%s]', k)) + 1);
    END IF;
    RAISE EXCEPTION USING ERRCODE = state, MESSAGE = msg, DETAIL = detail;
END
$$;

CREATE OR REPLACE FUNCTION public.pix_messages_send(ispb text, body text, credential text DEFAULT NULL)
RETURNS public.pix_sent LANGUAGE plpgsql VOLATILE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    doc json;
    parts public.pix_sent[];
    receivers text[];
    messages text[];
    idx int[];
    sizes int[];
    e_state text;
    e_msg text;
    e_detail text;
BEGIN
    BEGIN
        doc := body::json;
    EXCEPTION WHEN others THEN
        doc := NULL;
    END;
    IF json_typeof(doc) = 'array' AND json_array_length(doc) BETWEEN 1 AND 1000 THEN
        -- each message with its receiver, in the order SPLIT sends them: by shard, then batch order
        SELECT array_agg(t.r ORDER BY t.s, t.n), array_agg(t.m ORDER BY t.s, t.n), array_agg((t.n - 1)::int ORDER BY t.s, t.n)
          INTO receivers, messages, idx
          FROM (SELECT coalesce(x.value -> 'recebedor' ->> 'ispb', ispb) AS r, x.value::text AS m, x.n,
                       sh.shard AS s
                  FROM json_array_elements(doc) WITH ORDINALITY x(value, n)
                  JOIN public.pix_shards() sh
                    ON pix_router.partition_number(coalesce(x.value -> 'recebedor' ->> 'ispb', ispb))
                       = ANY (sh.partitions)) t;
        SELECT array_agg(g.c ORDER BY g.s) INTO sizes
          FROM (SELECT sh.shard AS s, count(*)::int AS c FROM unnest(receivers) r
                  JOIN public.pix_shards() sh ON pix_router.partition_number(r) = ANY (sh.partitions)
                 GROUP BY sh.shard) g;
    END IF;
    IF coalesce(cardinality(sizes), 0) > 1 THEN
        BEGIN
            SELECT array_agg(p) INTO parts
              FROM pix_router.messages_send_split(ispb, receivers, messages, credential) p;
        EXCEPTION WHEN SQLSTATE 'PX010' OR SQLSTATE 'PX011' THEN
            GET STACKED DIAGNOSTICS e_state = RETURNED_SQLSTATE, e_msg = MESSAGE_TEXT,
                                    e_detail = PG_EXCEPTION_DETAIL;
            PERFORM pix_router.reraise_part_error(e_state, e_msg, e_detail, idx, sizes);
        END;
        RETURN ROW((SELECT sum((p).accepted) FROM unnest(parts) p)::int,
                   (SELECT sum((p).duplicates) FROM unnest(parts) p)::int,
                   pix_router.merge_bodies(ARRAY(SELECT (p).body FROM unnest(parts) p)))::public.pix_sent;
    END IF;
    -- One shard, or a body the shards refuse whole (not JSON, empty, over 1 000): the receivers' shard (the
    -- sender's when there is no receiver to read) answers for the whole batch as a single database does.
    RETURN pix_router.messages_send_one(ispb, coalesce(receivers[1], doc -> 'recebedor' ->> 'ispb', ispb),
                                        body, credential);
END
$$;
REVOKE ALL ON FUNCTION public.pix_messages_send(text, text, text),
    pix_router.messages_send_one(text, text, text, text),
    pix_router.messages_send_split(text, text[], text[], text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION public.pix_messages_send(text, text, text),
    pix_router.messages_send_one(text, text, text, text),
    pix_router.messages_send_split(text, text[], text[], text) TO pix_client;

-- ---- SQL producers and administrators: pix.message on the router ---------------------------------
-- The view shows the message log of every shard (it reads every shard's whole log: for administrators
-- and tests, not for a hot path). An INSERT into it is forwarded row by row to the receiver's shard,
-- validated there by the extension's trigger and committed there as that row's own statement: a
-- multi-row INSERT through the router is not atomic (rows before a refused one stay stored). Producers
-- that need one transaction insert on the shard, or send through pix_messages_send.
CREATE SCHEMA IF NOT EXISTS pix;
REVOKE ALL ON SCHEMA pix FROM PUBLIC;
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_type WHERE typname = 'message_row'
                   AND typnamespace = 'pix_router'::regnamespace) THEN
        CREATE TYPE pix_router.message_row AS (
            id bigint, end_to_end_id text, valor numeric, pagador_nome text, pagador_cpf_cnpj text,
            pagador_ispb text, pagador_agencia text, pagador_conta text, pagador_tipo_conta text,
            recebedor_nome text, recebedor_cpf_cnpj text, recebedor_ispb text, recebedor_agencia text,
            recebedor_conta text, recebedor_tipo_conta text, campo_livre text, tx_id text,
            data_hora_pagamento timestamptz, enqueued_at timestamptz, body text);
    END IF;
END
$$;
CREATE OR REPLACE FUNCTION pix_router.messages_each() RETURNS SETOF pix_router.message_row
LANGUAGE plproxy AS $$
    CLUSTER 'pix_cluster';
    RUN ON ALL;
    SELECT id, end_to_end_id, valor, pagador_nome, pagador_cpf_cnpj, pagador_ispb, pagador_agencia,
           pagador_conta, pagador_tipo_conta, recebedor_nome, recebedor_cpf_cnpj, recebedor_ispb,
           recebedor_agencia, recebedor_conta, recebedor_tipo_conta, campo_livre, tx_id,
           data_hora_pagamento, enqueued_at, body FROM pix.message;
$$;
CREATE OR REPLACE VIEW pix.message AS SELECT * FROM pix_router.messages_each();

CREATE OR REPLACE FUNCTION pix_router.message_insert(recebedor_ispb text, m text) RETURNS bigint
LANGUAGE plproxy AS $$
    CLUSTER 'pix_cluster';
    RUN ON pix_router.partition_of(recebedor_ispb, NULL);
    SELECT pix_shard.insert_message(m::json);
$$;
CREATE OR REPLACE FUNCTION pix_router.message_forward() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    NEW.id := pix_router.message_insert(NEW.recebedor_ispb, row_to_json(NEW)::text);
    RETURN NEW;
END
$$;
DROP TRIGGER IF EXISTS message_forward ON pix.message;
CREATE TRIGGER message_forward INSTEAD OF INSERT ON pix.message
    FOR EACH ROW EXECUTE FUNCTION pix_router.message_forward();

-- ---- Credentials (pix 1.3): the extension's management functions, for every shard ----------------
-- Every credential is on every shard, under the same credential_id: a send's parts are authorized by
-- the receivers' shards with the sender's credential, and an admin credential acts on every ISPB's shard.
-- Issuing runs the extension's own function on the ISPB's shard (the first shard for admin credentials),
-- which makes the token (once, from its CSPRNG) or the certificate's row and audits it; the router then
-- copies that row (digests only: a token never leaves the call that returns it) to every other shard,
-- where pix_shard.credential_import audits the copy. Revoking, binding and unbinding run on every shard.
-- Every shard's credential_id comes from its own range (scripts/shards.sh), so copies never collide
-- with ids a shard allocates. There is no transaction across shards: a change that cannot reach a shard
-- raises once the others have it (a new credential is then revoked where it was stored), and running
-- it again is safe. scripts/shards.sh move holds the credentials lock while it copies credentials to a
-- new server: changes meanwhile answer 57P03 at once.
\if :credentials
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'pix_admin') THEN
        CREATE ROLE pix_admin NOLOGIN;
    END IF;
END
$$;
GRANT USAGE ON SCHEMA pix_router, pix TO pix_admin;
GRANT USAGE ON FOREIGN SERVER pix_cluster TO pix_admin;
GRANT EXECUTE ON FUNCTION public.pix_shards() TO pix_admin;

-- The second advisory lock key of the credentials (partitions use 0..1023).
CREATE OR REPLACE FUNCTION pix_router.credentials_lock() RETURNS int LANGUAGE sql IMMUTABLE AS $$ SELECT -1 $$;

CREATE OR REPLACE FUNCTION pix_router.credentials_unlocked() RETURNS void
LANGUAGE plpgsql VOLATILE SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF NOT pg_try_advisory_xact_lock_shared(pix_router.lock_space(), pix_router.credentials_lock()) THEN
        RAISE EXCEPTION 'credentials are being copied to another server' USING ERRCODE = '57P03',
            DETAIL = 'scripts/shards.sh move is running.', HINT = 'Retry once the move has ended.';
    END IF;
END
$$;

-- The digest a shard stores for a token (extension/pix--1.2--1.3.sql, pix.token_issue).
CREATE OR REPLACE FUNCTION pix_router.token_lookup(token text) RETURNS bytea
LANGUAGE sql IMMUTABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT sha256(convert_to('token:' || encode(sha256(convert_to(token, 'UTF8')), 'hex'), 'UTF8'))
$$;

-- The first partition of the first shard: where admin credentials are issued.
CREATE OR REPLACE FUNCTION pix_router.admin_partition() RETURNS int
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT s.partitions[1] FROM public.pix_shards() s ORDER BY s.shard LIMIT 1
$$;

-- One function per shard call (RUN ON a partition of that shard).
WITH fn(name, args, call, result) AS (VALUES
    ('token_issue', 'ispb text, label text', 'public.pix_token_issue(ispb, label)', 'text'),
    ('admin_token_issue', 'label text', 'public.pix_admin_token_issue(label)', 'text'),
    ('certificate_add', 'ispb text, fingerprint text, label text',
     'public.pix_certificate_add(ispb, fingerprint, label)', 'bigint'),
    ('admin_certificate_add', 'fingerprint text, label text', 'public.pix_admin_certificate_add(fingerprint, label)',
     'bigint'),
    ('credential_get', 'lookup bytea, id bigint', 'pix_shard.credential_get(lookup, id)', 'text'),
    ('credential_import', 'credential text', 'pix_shard.credential_import(credential)', 'boolean'),
    ('credential_revoke', 'id bigint', 'public.pix_credential_revoke(id)', 'boolean'),
    ('certificate_revoke', 'fingerprint text', 'public.pix_certificate_revoke(fingerprint)', 'int'),
    ('role_unbind', 'role text', 'public.pix_role_unbind(role::regrole)', 'boolean'))
SELECT s FROM fn, LATERAL (VALUES
    (format($f$
        CREATE OR REPLACE FUNCTION pix_router.%1$I(shard_partition int, %2$s) RETURNS %4$s LANGUAGE plproxy AS $p$
            CLUSTER 'pix_cluster';
            RUN ON shard_partition;
            SELECT %3$s AS %1$I;
        $p$ $f$, name || '_on', args, call, result)),
    (format('REVOKE ALL ON FUNCTION pix_router.%I(int, %s) FROM PUBLIC', name || '_on',
            regexp_replace(args, '[a-z_]+ ([a-z]+)', '\1', 'g'))),
    (format('GRANT EXECUTE ON FUNCTION pix_router.%I(int, %s) TO pix_admin', name || '_on',
            regexp_replace(args, '[a-z_]+ ([a-z]+)', '\1', 'g')))) AS v(s) \gexec
CREATE OR REPLACE FUNCTION pix_router.role_bind_on(shard_partition int, role text, ispb text) RETURNS boolean
LANGUAGE plproxy AS $p$
    CLUSTER 'pix_cluster';
    RUN ON shard_partition;
    SELECT true AS role_bind_on FROM public.pix_role_bind(role::regrole, ispb);
$p$;
CREATE OR REPLACE FUNCTION pix_router.credential_list_on(shard_partition int, ispb text)
RETURNS TABLE (credential_id bigint, kind text, ispb text, admin boolean, label text, fingerprint text,
               created_at timestamptz, created_by text, revoked_at timestamptz, revoked_by text)
LANGUAGE plproxy AS $p$
    CLUSTER 'pix_cluster';
    RUN ON shard_partition;
    SELECT * FROM public.pix_credential_list(ispb);
$p$;
CREATE OR REPLACE FUNCTION pix_router.credential_audit_on(shard_partition int)
RETURNS TABLE (audit_id bigint, at timestamptz, actor text, action text, ispb text, credential_id bigint,
               detail text)
LANGUAGE plproxy AS $p$
    CLUSTER 'pix_cluster';
    RUN ON shard_partition;
    SELECT audit_id, at, actor, action, ispb, credential_id, detail FROM pix.credential_audit;
$p$;

-- Runs `call` (SQL of one pix_router.*_on function with $1 for the partition) on one partition of every
-- shard in turn and returns each shard's answer as text. A shard that cannot be reached (PL/Proxy's
-- XX000) does not stop the others; once they have answered, the call raises naming it. For changes of
-- credentials and bindings only: refused while a move copies them.
CREATE OR REPLACE FUNCTION pix_router.on_every_shard(call text) RETURNS SETOF text
LANGUAGE plpgsql VOLATILE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    s record;
    answer text;
    unreachable text[] := '{}';
    e_msg text;
BEGIN
    PERFORM pix_router.credentials_unlocked();
    FOR s IN SELECT sh.shard, sh.partitions[1] AS p FROM public.pix_shards() sh ORDER BY sh.shard LOOP
        BEGIN
            EXECUTE 'SELECT (' || call || ')::text' INTO answer USING s.p;
            RETURN NEXT answer;
        EXCEPTION WHEN internal_error THEN
            GET STACKED DIAGNOSTICS e_msg = MESSAGE_TEXT;
            unreachable := unreachable || format('shard %s (%s)', s.shard, e_msg);
        END;
    END LOOP;
    IF cardinality(unreachable) > 0 THEN
        RAISE EXCEPTION 'not every shard could be reached' USING ERRCODE = '57P03',
            DETAIL = 'Unreachable: ' || array_to_string(unreachable, '; ')
                     || '. The other shards have the change.',
            HINT = 'Run the same call again once every shard answers.';
    END IF;
END
$$;

-- True when some shard answered true (e.g. had the credential active).
CREATE OR REPLACE FUNCTION pix_router.on_any_shard(call text) RETURNS boolean
LANGUAGE sql VOLATILE SET search_path = pg_catalog, pg_temp
    AS $$ SELECT coalesce(bool_or(a::boolean), false) FROM pix_router.on_every_shard(call) a $$;

CREATE OR REPLACE FUNCTION public.pix_credential_revoke(credential_id bigint) RETURNS boolean
LANGUAGE sql VOLATILE SET search_path = pg_catalog, pg_temp AS $$
    SELECT pix_router.on_any_shard(format('pix_router.credential_revoke_on($1, %s::bigint)',
                                          coalesce(credential_id::text, 'NULL')))
$$;

-- Copies the credential just made on partition `home` (found by digest or id) to every other shard.
-- When a shard cannot take it, it is revoked wherever it was stored and the error is raised again.
-- SECURITY DEFINER: it reads the row from the shard that issued it and stores it on the others
-- connected as this function's owner, the only caller a shard's pix_shard.credential_import accepts
-- (members of pix_credential_copy there, router/pix_shard.sql): an operator can copy a credential
-- as issued, never write one of their own choosing (issue 18).
CREATE OR REPLACE FUNCTION pix_router.credential_copy(home int, lookup bytea, id bigint) RETURNS bigint
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    credential text := pix_router.credential_get_on(home, lookup, id);
    s record;
    e_state text;
    e_msg text;
    e_detail text;
BEGIN
    IF credential IS NULL THEN
        RAISE EXCEPTION 'the new credential is not on its shard' USING ERRCODE = 'XX000';
    END IF;
    id := (credential::json ->> 'credential_id')::bigint;
    FOR s IN SELECT sh.shard, sh.partitions[1] AS p FROM public.pix_shards() sh
              WHERE NOT home = ANY (sh.partitions) ORDER BY sh.shard LOOP
        BEGIN
            PERFORM pix_router.credential_import_on(s.p, credential);
        EXCEPTION WHEN others THEN
            GET STACKED DIAGNOSTICS e_state = RETURNED_SQLSTATE, e_msg = MESSAGE_TEXT, e_detail = PG_EXCEPTION_DETAIL;
            BEGIN
                PERFORM public.pix_credential_revoke(id);
            EXCEPTION WHEN others THEN
                NULL; -- revoked on the shards that answer; the error below says what to do
            END;
            RAISE EXCEPTION 'could not store the new credential on shard %: %', s.shard, e_msg
                USING ERRCODE = e_state, DETAIL = concat_ws(' ', nullif(e_detail, ''),
                      format('Credential %s was revoked on the shards that answer; issue it again.', id));
        END;
    END LOOP;
    RETURN id;
END
$$;

REVOKE ALL ON FUNCTION pix_router.credential_copy(int, bytea, bigint) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION pix_router.credential_copy(int, bytea, bigint) TO pix_admin;
REVOKE EXECUTE ON FUNCTION pix_router.credential_import_on(int, text) FROM pix_admin;

CREATE OR REPLACE FUNCTION public.pix_token_issue(ispb text, label text DEFAULT '') RETURNS text
LANGUAGE plpgsql VOLATILE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    home int := pix_router.partition_number(ispb);
    token text;
BEGIN
    PERFORM pix_router.credentials_unlocked();
    token := pix_router.token_issue_on(home, ispb, label);
    PERFORM pix_router.credential_copy(home, pix_router.token_lookup(token), NULL);
    RETURN token;
END
$$;

CREATE OR REPLACE FUNCTION public.pix_admin_token_issue(label text DEFAULT '') RETURNS text
LANGUAGE plpgsql VOLATILE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    home int := pix_router.admin_partition();
    token text;
BEGIN
    PERFORM pix_router.credentials_unlocked();
    token := pix_router.admin_token_issue_on(home, label);
    PERFORM pix_router.credential_copy(home, pix_router.token_lookup(token), NULL);
    RETURN token;
END
$$;

CREATE OR REPLACE FUNCTION public.pix_certificate_add(ispb text, fingerprint text, label text DEFAULT '')
RETURNS bigint LANGUAGE plpgsql VOLATILE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    home int := pix_router.partition_number(ispb);
BEGIN
    PERFORM pix_router.credentials_unlocked();
    RETURN pix_router.credential_copy(home, NULL, pix_router.certificate_add_on(home, ispb, fingerprint, label));
END
$$;

CREATE OR REPLACE FUNCTION public.pix_admin_certificate_add(fingerprint text, label text DEFAULT '')
RETURNS bigint LANGUAGE plpgsql VOLATILE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    home int := pix_router.admin_partition();
BEGIN
    PERFORM pix_router.credentials_unlocked();
    RETURN pix_router.credential_copy(home, NULL, pix_router.admin_certificate_add_on(home, fingerprint, label));
END
$$;

-- Revokes every active credential of this fingerprint on every shard: how many (the copies of one
-- credential count once).
CREATE OR REPLACE FUNCTION public.pix_certificate_revoke(fingerprint text) RETURNS int
LANGUAGE sql VOLATILE SET search_path = pg_catalog, pg_temp AS $$
    SELECT coalesce(max(n::int), 0)
      FROM pix_router.on_every_shard(format('pix_router.certificate_revoke_on($1, %L)', fingerprint)) n
$$;

CREATE OR REPLACE FUNCTION public.pix_role_bind(role regrole, ispb text) RETURNS void
LANGUAGE sql VOLATILE SET search_path = pg_catalog, pg_temp AS $$
    SELECT FROM pix_router.on_every_shard(format('pix_router.role_bind_on($1, %L, %L)', role::text, ispb))
$$;

CREATE OR REPLACE FUNCTION public.pix_role_unbind(role regrole) RETURNS boolean
LANGUAGE sql VOLATILE SET search_path = pg_catalog, pg_temp
    AS $$ SELECT pix_router.on_any_shard(format('pix_router.role_unbind_on($1, %L)', role::text)) $$;

-- Every shard's rows, with the shard's number (a shard that cannot be reached raises: a list must not
-- look complete when it is not).
CREATE OR REPLACE FUNCTION pix_router.credential_list_each(of_ispb text)
RETURNS TABLE (shard int, credential_id bigint, kind text, ispb text, admin boolean, label text,
               fingerprint text, created_at timestamptz, created_by text, revoked_at timestamptz,
               revoked_by text)
LANGUAGE plpgsql VOLATILE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    s record;
BEGIN
    FOR s IN SELECT sh.shard, sh.partitions[1] AS p FROM public.pix_shards() sh ORDER BY sh.shard LOOP
        RETURN QUERY SELECT s.shard, l.* FROM pix_router.credential_list_on(s.p, of_ispb) l;
    END LOOP;
END
$$;

-- One row per credential: revoked only when no shard has it active.
CREATE OR REPLACE FUNCTION public.pix_credential_list(ispb text DEFAULT NULL)
RETURNS TABLE (credential_id bigint, kind text, ispb text, admin boolean, label text,
               fingerprint text, created_at timestamptz, created_by text, revoked_at timestamptz,
               revoked_by text)
LANGUAGE sql VOLATILE SET search_path = pg_catalog, pg_temp AS $$
    SELECT e.credential_id, min(e.kind), min(e.ispb), bool_or(e.admin), min(e.label), min(e.fingerprint),
           min(e.created_at), min(e.created_by),
           CASE WHEN bool_and(e.revoked_at IS NOT NULL) THEN max(e.revoked_at) END,
           CASE WHEN bool_and(e.revoked_at IS NOT NULL) THEN max(e.revoked_by) END
      FROM pix_router.credential_list_each(ispb) e
     GROUP BY e.credential_id ORDER BY e.credential_id
$$;

CREATE OR REPLACE FUNCTION pix_router.credential_audit_each()
RETURNS TABLE (shard int, audit_id bigint, at timestamptz, actor text, action text, ispb text,
               credential_id bigint, detail text)
LANGUAGE plpgsql VOLATILE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    s record;
BEGIN
    FOR s IN SELECT sh.shard, sh.partitions[1] AS p FROM public.pix_shards() sh ORDER BY sh.shard LOOP
        RETURN QUERY SELECT s.shard, a.* FROM pix_router.credential_audit_on(s.p) a;
    END LOOP;
END
$$;
-- The audit of every shard (each change is audited where it ran; copies as 'credential_copy').
CREATE OR REPLACE VIEW pix.credential_audit AS SELECT * FROM pix_router.credential_audit_each();

REVOKE ALL ON FUNCTION pix_router.credentials_unlocked(), pix_router.token_lookup(text),
    pix_router.admin_partition(), pix_router.role_bind_on(int, text, text),
    pix_router.credential_list_on(int, text), pix_router.credential_audit_on(int),
    pix_router.on_every_shard(text), pix_router.on_any_shard(text), pix_router.credential_copy(int, bytea, bigint),
    pix_router.credential_list_each(text), pix_router.credential_audit_each(),
    public.pix_credential_revoke(bigint), public.pix_token_issue(text, text), public.pix_admin_token_issue(text),
    public.pix_certificate_add(text, text, text), public.pix_admin_certificate_add(text, text),
    public.pix_certificate_revoke(text), public.pix_role_bind(regrole, text), public.pix_role_unbind(regrole),
    public.pix_credential_list(text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION pix_router.credentials_unlocked(), pix_router.token_lookup(text),
    pix_router.admin_partition(), pix_router.role_bind_on(int, text, text),
    pix_router.credential_list_on(int, text), pix_router.credential_audit_on(int),
    pix_router.on_every_shard(text), pix_router.on_any_shard(text), pix_router.credential_copy(int, bytea, bigint),
    pix_router.credential_list_each(text), pix_router.credential_audit_each(),
    public.pix_credential_revoke(bigint), public.pix_token_issue(text, text), public.pix_admin_token_issue(text),
    public.pix_certificate_add(text, text, text), public.pix_admin_certificate_add(text, text),
    public.pix_certificate_revoke(text), public.pix_role_bind(regrole, text), public.pix_role_unbind(regrole),
    public.pix_credential_list(text) TO pix_admin;
REVOKE ALL ON pix.credential_audit FROM PUBLIC;
GRANT SELECT ON pix.credential_audit TO pix_admin;
\endif
