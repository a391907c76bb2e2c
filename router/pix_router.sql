-- pix router: the database pixd talks to when institutions are spread over several shards.
--
-- Every shard is a PostgreSQL database with the `pix` extension holding a disjoint set of ISPBs. The
-- router holds no pix data: its functions have the names, arguments and results of the extension's and
-- forward each call with PL/Proxy to the shard of the call's ISPB, so claims, ids, confirmation and the
-- 6-collector limit stay single-database transactions on that shard. Functions that concern everyone
-- (expiry sweep, purge, metrics, keepalive) run on every shard and add up the answers.
--
-- Those functions and the extension's types are not copied here by hand: each install reads them from
-- the shards' catalog and generates the router's (pix_router.generate_functions, below), so a function
-- added to the extension is on the router after `scripts/shards.sh install` with no edit. Written by
-- hand are only what no rule can guess: the send split over the receivers' shards, the metrics merge,
-- the credentials copied to every shard, the pix.message view, and the routing itself.
--
-- Installed by scripts/shards.sh (never by hand), which first writes the cluster configuration: the
-- foreign server `pix_cluster` whose options p0..p<N-1> are the partitions' conninfos (N a power of two,
-- 16 by default, several partitions per database). That server is the one source of truth: PL/Proxy
-- routes with it and pixd reads the shard list from it (pix_shards()).
--
-- psql variables: partitions (N), credentials ('on' when the shards' functions take the trailing
-- `credential text` parameter of pix 1.3, 'off' for older shards: a non-NULL credential is then refused),
-- catalog (the extension's functions and types as router/pix_catalog.sql reads them from the shards).
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

-- The router's roles, made here and nowhere else in router/: pix_client (pixd's calls) and, with
-- credentials, pix_admin (their management). One policy: made when missing, used as they are when they
-- exist, without a warning (the extension warns instead: there a role made by someone else would gain
-- its privileges unnoticed). Here an existing role is the expected case, not a surprise: roles are
-- cluster-wide, a router's must be the shards' own (PL/Proxy logs in to a shard as the calling role),
-- so on a cluster that also holds a shard the extension made them, and every reinstall finds them.
SELECT format('CREATE ROLE %I NOLOGIN', r)
  FROM unnest(ARRAY['pix_client'] || CASE WHEN :'credentials'::boolean THEN ARRAY['pix_admin'] END) r
 WHERE NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = r) \gexec
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

-- ---- The extension's catalog, read from the shards -------------------------------------------------
-- The router's copy of the extension's SQL surface is not written here: scripts/shards.sh install reads
-- it from the shards (router/pix_catalog.sql, the same on every shard) and hands it to this file as the
-- psql variable `catalog`, so a new or changed function of the extension reaches the router with an
-- install and no edit. Its types are copied first (the hand-written functions below use them); its
-- functions are generated at the end of this file by pix_router.generate_functions().

-- Creates the types the router lacks, and adds the attributes a newer version of the extension added
-- to one it has (a type whose attribute changed type is refused: drop it and install again).
CREATE OR REPLACE FUNCTION pix_router.copy_types(catalog jsonb) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    t record;
    k int;
    have text;
BEGIN
    FOR t IN SELECT * FROM jsonb_to_recordset(catalog -> 'types')
                        AS x(target text, attribute_names text[], attribute_types text[]) LOOP
        IF to_regtype(t.target) IS NULL THEN
            EXECUTE format('CREATE TYPE %s AS (%s)', t.target,
                           (SELECT string_agg(format('%I %s', a.n, a.ty), ', ' ORDER BY a.i)
                              FROM unnest(t.attribute_names, t.attribute_types) WITH ORDINALITY a(n, ty, i)));
            CONTINUE;
        END IF;
        FOR k IN 1 .. cardinality(t.attribute_names) LOOP
            SELECT format_type(a.atttypid, a.atttypmod) INTO have FROM pg_attribute a
             WHERE a.attrelid = t.target::regclass AND a.attname = t.attribute_names[k] AND NOT a.attisdropped;
            IF have IS NULL THEN
                EXECUTE format('ALTER TYPE %s ADD ATTRIBUTE %I %s', t.target, t.attribute_names[k],
                               t.attribute_types[k]);
            ELSIF have <> t.attribute_types[k] THEN
                RAISE EXCEPTION 'type % has % % on the router and % on the shards', t.target,
                    t.attribute_names[k], have, t.attribute_types[k];
            END IF;
        END LOOP;
    END LOOP;
END
$$;
REVOKE ALL ON FUNCTION pix_router.copy_types(jsonb) FROM PUBLIC;
SELECT FROM pix_router.copy_types(:'catalog') \gset

-- One router function per function of the extension (the catalog's "functions"), with its
-- signature, defaults, result and EXECUTE grants (to the roles of that name the router has), except
-- the functions this file writes by hand, named in the call at its end. The rule:
--   - a first argument `ispb text`: RUN ON the ISPB's partition (pix_router.partition_of, with the
--     call's `credential` argument when it has one), the shard's answer as it is;
--   - no ISPB and a number as result: pix_router.<name>_on runs it on one partition of a shard, and
--     the function of the extension's name adds up every shard's answer, skipping a shard that cannot
--     be reached, so that one shard down does not stop the expiry sweep of the others;
--   - no ISPB and a set as result: RUN ON ALL, every shard's rows (a shard down: an error, so that a
--     list never looks complete when it is not);
--   - anything else has no meaning the router can guess: a WARNING says to write it by hand.
-- Shards older than pix 1.3 (credentials off): routed functions take a trailing `credential` all the
-- same, not passed on (partition_of refuses one that is not NULL), so pixd calls every router alike.
-- A function generated by an earlier install whose twin left the extension is dropped.
-- The shard names the extension's types as its search_path (public) has them: so does this one.
CREATE OR REPLACE FUNCTION pix_router.generate_functions(catalog jsonb, by_hand text[]) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, public, pg_temp AS $g$
DECLARE
    marker constant text := 'generated by router/pix_router.sql from the pix extension of the shards';
    credentials boolean := (SELECT s.value::boolean FROM pix_router.setting s WHERE s.name = 'credentials');
    f record;
    args text;
    types text;
    pass text;
    credential text;
    sigs text[];
    sig text;
    grantee text;
    made regprocedure[] := '{}';
BEGIN
    FOR f IN SELECT * FROM jsonb_to_recordset(catalog -> 'functions')
                  AS x(name text, arg_types text, arguments text, result text, result_type text, retset boolean,
                       nargs int, input_names text[], first_type text, grantees text[])
              WHERE x.name <> ALL (by_hand) LOOP
        args := f.arguments;
        types := f.arg_types;
        pass := (SELECT string_agg('$' || k, ', ' ORDER BY k) FROM generate_series(1, f.nargs) k);
        sigs := ARRAY[format('public.%I(%s)', f.name, types)];
        BEGIN
            IF f.input_names[1] = 'ispb' AND f.first_type = 'text' THEN
                credential := CASE WHEN 'credential' = ANY (f.input_names) THEN 'credential' ELSE 'NULL' END;
                IF NOT credentials AND credential = 'NULL' THEN
                    args := args || ', credential text DEFAULT NULL';
                    sigs := ARRAY[format('public.%I(%s, text)', f.name, types)];
                    credential := 'credential';
                END IF;
                EXECUTE format($f$
                    CREATE OR REPLACE FUNCTION %1$s(%2$s) RETURNS %3$s LANGUAGE plproxy AS $p$
                        CLUSTER 'pix_cluster';
                        RUN ON pix_router.partition_of(ispb, %4$s);
                        SELECT * FROM public.%5$I(%6$s) AS %5$I;
                    $p$ $f$, format('public.%I', f.name), args, f.result, credential, f.name, pass);
            ELSIF NOT f.retset AND f.result_type IN ('smallint', 'integer', 'bigint', 'numeric') THEN
                sigs := sigs || format('pix_router.%I(%s)', f.name || '_on', concat_ws(', ', 'int', nullif(types, '')));
                EXECUTE format($f$
                    CREATE OR REPLACE FUNCTION pix_router.%1$I(%2$s) RETURNS %3$s LANGUAGE plproxy AS $p$
                        CLUSTER 'pix_cluster';
                        RUN ON shard_partition;
                        SELECT * FROM public.%4$I(%5$s) AS %1$I;
                    $p$ $f$, f.name || '_on', concat_ws(', ', 'shard_partition int', nullif(args, '')), f.result, f.name,
                    (SELECT string_agg('$' || (k + 1), ', ' ORDER BY k) FROM generate_series(1, f.nargs) k));
                EXECUTE format($f$
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
                    $s$ $f$, f.name, args, f.result, f.name || '_on', concat_ws(', ', 'p', pass));
            ELSIF f.retset THEN
                EXECUTE format($f$
                    CREATE OR REPLACE FUNCTION public.%1$I(%2$s) RETURNS %3$s LANGUAGE plproxy AS $p$
                        CLUSTER 'pix_cluster';
                        RUN ON ALL;
                        SELECT * FROM public.%1$I(%4$s);
                    $p$ $f$, f.name, args, f.result, pass);
            ELSE
                RAISE WARNING 'pix router: %(%) is not on the router', f.name, f.arg_types
                    USING DETAIL = 'It neither takes an ispb first nor answers a number or a set to merge over the shards.',
                          HINT = 'Write its router function by hand in router/pix_router.sql and name it in the '
                                 'call of pix_router.generate_functions.';
                CONTINUE;
            END IF;
            -- EXECUTE as on the shard, for the grantees the router has a role of
            FOREACH sig IN ARRAY sigs LOOP
                EXECUTE format('REVOKE ALL ON FUNCTION %s FROM PUBLIC', sig);
                FOREACH grantee IN ARRAY f.grantees LOOP
                    IF grantee = 'PUBLIC' OR to_regrole(grantee) IS NOT NULL THEN
                        EXECUTE format('GRANT EXECUTE ON FUNCTION %s TO %s', sig, grantee);
                    END IF;
                    IF to_regrole(grantee) IS NOT NULL THEN -- what the call needs on its way
                        EXECUTE format('GRANT USAGE ON SCHEMA pix_router TO %s', grantee);
                        EXECUTE format('GRANT USAGE ON FOREIGN SERVER pix_cluster TO %s', grantee);
                        EXECUTE format('GRANT EXECUTE ON FUNCTION pix_router.partition_of(text, text) TO %s', grantee);
                    END IF;
                END LOOP;
                EXECUTE format('COMMENT ON FUNCTION %s IS %L', sig, marker);
                made := made || sig::regprocedure;
            END LOOP;
        EXCEPTION WHEN others THEN -- e.g. a type the router does not have: the other functions are made
            RAISE WARNING 'pix router: %(%) could not be generated: %', f.name, f.arg_types, SQLERRM
                USING HINT = 'Write its router function by hand in router/pix_router.sql and name it in the '
                             'call of pix_router.generate_functions.';
        END;
    END LOOP;
    -- what an earlier install generated for a function the extension no longer has (or has no more
    -- with those arguments)
    FOR sig IN SELECT p.oid::regprocedure::text FROM pg_proc p
                WHERE p.pronamespace IN ('public'::regnamespace, 'pix_router'::regnamespace)
                  AND obj_description(p.oid, 'pg_proc') = marker AND p.oid <> ALL (made::oid[]) LOOP
        EXECUTE format('DROP FUNCTION %s', sig);
    END LOOP;
END
$g$;
REVOKE ALL ON FUNCTION pix_router.generate_functions(jsonb, text[]) FROM PUBLIC;

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
-- Only with shards that send (pix 1.3 has the type pix_sent, copied above).
SELECT to_regtype('public.pix_sent') IS NOT NULL AS shards_send \gset
\if :shards_send

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
\endif

-- ---- SQL producers and administrators: pix.message on the router ---------------------------------
-- The view shows the message log of every shard (it reads every shard's whole log: for administrators
-- and tests, not for a hot path). An INSERT into it is forwarded row by row to the receiver's shard,
-- validated there by the extension's trigger and committed there as that row's own statement: a
-- multi-row INSERT through the router is not atomic (rows before a refused one stay stored). Producers
-- that need one transaction insert on the shard, or send through pix_messages_send.
CREATE SCHEMA IF NOT EXISTS pix;
REVOKE ALL ON SCHEMA pix FROM PUBLIC;
CREATE OR REPLACE FUNCTION pix_router.messages_each() RETURNS SETOF pix_router.message_row
LANGUAGE plproxy AS $$
    CLUSTER 'pix_cluster';
    RUN ON ALL;
    SELECT * FROM pix.message; -- pix_router.message_row is its row, copied above
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
GRANT USAGE ON SCHEMA pix_router, pix TO pix_admin; -- the role: made at the top of this file
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

-- ---- The extension's functions: generated (above), except those written by hand --------------
SELECT FROM pix_router.generate_functions(:'catalog', ARRAY[
    'pix_messages_send',  -- split by the receivers' shards
    'pix_metrics',        -- counters add up, per-ISPB gauges of the busiest ISPBs over all shards
    -- credentials are on every shard: issued on one and copied, revoked and bound everywhere
    'pix_token_issue', 'pix_admin_token_issue', 'pix_certificate_add', 'pix_admin_certificate_add',
    'pix_credential_revoke', 'pix_certificate_revoke', 'pix_credential_list', 'pix_role_bind',
    'pix_role_unbind']) \gset
