--
-- 06_privileges: the tables of schema pix belong to the extension alone. PUBLIC can neither read
-- nor write them, nor execute the functions. The HTTP server logs in as a role that is a member
-- of pix_client (NOLOGIN, created by the extension): it may execute the functions, which are
-- SECURITY DEFINER with search_path pinned to pg_catalog, pg_temp, and nothing else.
--
-- Recipients used here: 06000001 .. 06000009.
--
CREATE SCHEMA t06;
SET search_path = t06, public;

SET client_min_messages = warning;
DROP ROLE IF EXISTS regress_pix_nobody;
DROP ROLE IF EXISTS regress_pix_app;
RESET client_min_messages;
CREATE ROLE regress_pix_nobody;
CREATE ROLE regress_pix_app IN ROLE pix_client;
GRANT USAGE ON SCHEMA t06 TO regress_pix_nobody, regress_pix_app;

-- Runs a statement as the current role; shows what it returned, or SQLSTATE and message.
CREATE FUNCTION try(statement text) RETURNS text LANGUAGE plpgsql AS $$
DECLARE
    result text;
BEGIN
    EXECUTE statement INTO result;
    RETURN 'ok: ' || coalesce(result, 'NULL');
EXCEPTION WHEN OTHERS THEN
    RETURN SQLSTATE || ' ' || SQLERRM;
END
$$;

--
-- 1. What the catalog says.
--
SELECT rolname, rolcanlogin, rolsuper FROM pg_roles WHERE rolname = 'pix_client';

-- The extension's functions: all SECURITY DEFINER with a pinned search_path; EXECUTE for
-- pix_client, not for PUBLIC.
SELECT p.oid::regprocedure AS function, p.prosecdef AS security_definer, p.proconfig,
       has_function_privilege('public', p.oid, 'EXECUTE') AS public_may,
       has_function_privilege('regress_pix_nobody', p.oid, 'EXECUTE') AS nobody_may,
       has_function_privilege('regress_pix_app', p.oid, 'EXECUTE') AS app_may
  FROM pg_depend d JOIN pg_proc p ON p.oid = d.objid
 WHERE d.classid = 'pg_proc'::regclass AND d.deptype = 'e'
   AND d.refobjid = (SELECT oid FROM pg_extension WHERE extname = 'pix')
   AND p.prorettype <> 'trigger'::regtype
 ORDER BY p.proname COLLATE "C";

-- Schema pix: no USAGE for PUBLIC or for either role; no privilege on any of its relations.
SELECT r.rolname, has_schema_privilege(r.rolname, 'pix', 'USAGE') AS usage,
       has_schema_privilege(r.rolname, 'pix', 'CREATE') AS create
  FROM (VALUES ('public'), ('regress_pix_nobody'), ('regress_pix_app'), ('pix_client')) AS r(rolname);
SELECT c.relname, c.relkind, r.rolname,
       has_table_privilege(r.rolname, c.oid, 'SELECT, INSERT, UPDATE, DELETE, TRUNCATE, REFERENCES, TRIGGER')
           AS any_privilege
  FROM pg_class c
 CROSS JOIN (VALUES ('public'), ('regress_pix_nobody'), ('regress_pix_app')) AS r(rolname)
 WHERE c.relnamespace = 'pix'::regnamespace AND c.relkind IN ('r', 'v', 'p')
 ORDER BY c.relname COLLATE "C", r.rolname COLLATE "C";
SELECT count(*) AS sequences_anyone_may_use
  FROM pg_class c
 CROSS JOIN (VALUES ('public'), ('regress_pix_nobody'), ('regress_pix_app')) AS r(rolname)
 WHERE c.relnamespace = 'pix'::regnamespace AND c.relkind = 'S'
   AND has_sequence_privilege(r.rolname, c.oid, 'USAGE, SELECT, UPDATE');

--
-- 2. A role without grants: every table and every function is refused (42501).
--
SET ROLE regress_pix_nobody;
SELECT try('SELECT count(*) FROM pix.message') AS read_messages,
       try('SELECT count(*) FROM pix.ready') AS read_ready,
       try('SELECT count(*) FROM pix.delivery') AS read_delivery;
SELECT try($$INSERT INTO pix.message (end_to_end_id, valor, pagador_nome, pagador_cpf_cnpj,
             pagador_ispb, pagador_agencia, pagador_conta, pagador_tipo_conta, recebedor_nome,
             recebedor_cpf_cnpj, recebedor_ispb, recebedor_agencia, recebedor_conta,
             recebedor_tipo_conta, data_hora_pagamento)
             VALUES ('E32074986202402061530006N0000001', 1.00, 'A', '52998224725', '32074986',
                     '0001', '1', 'CACC', 'B', '11222333000181', '06000001', '0001', '2', 'CACC',
                     now())$$) AS insert_message,
       try($$DELETE FROM pix.ready$$) AS delete_ready,
       try($$UPDATE pix.stream SET state = 'o'$$) AS update_streams;
SELECT try($$SELECT message_count FROM pix_stream_start('06000001')$$) AS start,
       try($$SELECT message_count FROM pix_stream_next('06000001', 'x')$$) AS next,
       try($$SELECT pix_stream_stop('06000001', 'x')$$) AS stop;
SELECT try($$SELECT pix_generate_messages('06000001', 1)$$) AS generate,
       try($$SELECT pix_expire_streams()$$) AS expire,
       try($$SELECT pix_purge_history()$$) AS purge;
RESET ROLE;

--
-- 3. A member of pix_client: the functions work; the tables are still out of reach, and so are
--    the GUCs that protect every collector.
--
SELECT pix_generate_messages('06000001', 3) AS generated_by_the_superuser;
SET ROLE regress_pix_app;
CREATE TEMP TABLE got AS SELECT * FROM pix_stream_start('06000001', 2);
SELECT message_count, json_array_length(body::json) AS in_body FROM got;
CREATE TEMP TABLE got_next AS
    SELECT * FROM pix_stream_next('06000001', (SELECT interation_id FROM got), 10);
SELECT message_count FROM got_next;
SELECT try($$SELECT pix_generate_messages('06000001', 2)$$) AS generate;
SELECT try($$SELECT pix_expire_streams() >= 0$$) AS expire,
       try($$SELECT pix_purge_history() >= 0$$) AS purge;
SELECT try('SELECT count(*) FROM pix.message') AS read_messages,
       try('SELECT count(*) FROM pix.stream') AS read_streams,
       try('SELECT count(*) FROM pix.iteration') AS read_iterations,
       try('SELECT count(*) FROM pix.delivery') AS read_delivery;
SELECT try($$INSERT INTO pix.message (end_to_end_id, valor, pagador_nome, pagador_cpf_cnpj,
             pagador_ispb, pagador_agencia, pagador_conta, pagador_tipo_conta, recebedor_nome,
             recebedor_cpf_cnpj, recebedor_ispb, recebedor_agencia, recebedor_conta,
             recebedor_tipo_conta, data_hora_pagamento)
             VALUES ('E32074986202402061530006N0000001', 1.00, 'A', '52998224725', '32074986',
                     '0001', '1', 'CACC', 'B', '11222333000181', '06000001', '0001', '2', 'CACC',
                     now())$$) AS insert_message,
       try($$INSERT INTO pix.ready VALUES ('06000001', 1)$$) AS insert_ready,
       try($$TRUNCATE pix.iteration$$) AS truncate_history;
SELECT try($$SET pix.stream_idle_timeout = '1ms'$$) AS set_timeout,
       try($$SET pix.max_collectors = 1000$$) AS set_collectors,
       try($$SET pix.max_generate = 1000000$$) AS set_generate;
-- Objects of the caller's own cannot stand in for the extension's: the functions resolve names
-- in pg_catalog and schema pix, never in the caller's temporary schema.
CREATE TEMP TABLE stream (ispb text, state "char");
CREATE TEMP TABLE ready (ispb text, message_id bigint);
CREATE TEMP TABLE message (id bigint, body text);
INSERT INTO ready VALUES ('06000001', -1);
CREATE TEMP TABLE got2 AS SELECT * FROM pix_stream_start('06000001', 10);
SELECT message_count, json_array_length(body::json) AS in_body FROM got2;
SELECT try($$SELECT pix_stream_stop('06000001', (SELECT interation_id FROM got2))$$) AS stop,
       try($$SELECT pix_stream_stop('06000001', (SELECT interation_id FROM got_next))$$) AS stop_first;
RESET ROLE;

-- What the app did, seen by the superuser: 5 messages, all confirmed, both streams closed.
SELECT count(*) AS messages,
       count(*) FILTER (WHERE EXISTS (SELECT FROM pix.iteration i WHERE m.id = ANY (i.message_ids)
                                        AND i.confirmed_at IS NOT NULL)) AS confirmed
  FROM pix.message m WHERE recebedor_ispb = '06000001';
SELECT state, count(*) FROM pix.stream WHERE ispb = '06000001' GROUP BY state ORDER BY state;

--
-- 4. Not even in a fresh session, before the library is loaded (when pix.* settings are mere
--    placeholders), can a client raise the limits: the value is refused with a warning when the
--    library loads, and the limit stays. The fresh session is a new connection of the same
--    superuser (whatever credentials the caller's environment holds, as under pg_virtualenv),
--    turned into the client role with SET SESSION AUTHORIZATION before anything loads the library.
--
\c
SET SESSION AUTHORIZATION regress_pix_app;
SELECT current_user, session_user;
SET pix.max_collectors = 1000;
SET pix.stream_idle_timeout = 1;
SELECT message_count FROM pix_stream_start('06000002');
SHOW pix.max_collectors;
SHOW pix.stream_idle_timeout;
RESET SESSION AUTHORIZATION;
SELECT pix_stream_stop('06000002', current_iid) FROM pix.stream WHERE ispb = '06000002' AND state = 'o';

DROP SCHEMA t06 CASCADE;
DROP OWNED BY regress_pix_app;
DROP ROLE regress_pix_nobody;
DROP ROLE regress_pix_app;
