--
-- 13_identity: an SQL identity cannot be shed (issue 18). The ISPB a caller acts for is decided on
-- the session user (which a non-superuser cannot change) as well as on the current role (SET ROLE);
-- a caller that holds the institution privileges and has no binding acts for nobody (PX013, fail
-- closed); a binding never outlives its role; with authentication (a credential or a binding)
-- messages go only to registered institutions (PX014); pix_metrics names registered ones only.
-- docs/threat-model-sql.md has the table these tests back.
--
-- Each bank logs in as itself: SET SESSION AUTHORIZATION makes it the session user, as a login does.
--
-- Institutions used here: 13000001 (A), 13000002 (B), 13999999 (never registered).
--
CREATE SCHEMA t13;
SET search_path = t13, public;

SET client_min_messages = warning;
DROP ROLE IF EXISTS regress_pix13_bank_a;
DROP ROLE IF EXISTS regress_pix13_bank_b;
DROP ROLE IF EXISTS regress_pix13_clerk;
DROP ROLE IF EXISTS regress_pix13_both;
DROP ROLE IF EXISTS regress_pix13_unbound;
DROP ROLE IF EXISTS regress_pix13_again;
DROP ROLE IF EXISTS regress_pix13_renamed;
DROP ROLE IF EXISTS regress_pix13_http;
RESET client_min_messages;
CREATE ROLE regress_pix13_bank_a IN ROLE pix_institution;
CREATE ROLE regress_pix13_bank_b IN ROLE pix_institution;
CREATE ROLE regress_pix13_clerk IN ROLE regress_pix13_bank_a;
CREATE ROLE regress_pix13_both IN ROLE regress_pix13_bank_a, regress_pix13_bank_b;
CREATE ROLE regress_pix13_unbound IN ROLE pix_institution;
CREATE ROLE regress_pix13_http IN ROLE pix_client;
GRANT USAGE ON SCHEMA t13 TO PUBLIC;

\i sql/include/try.sql

CREATE FUNCTION msg(n int, payer text, receiver text) RETURNS text LANGUAGE sql IMMUTABLE AS $$
    SELECT jsonb_build_object(
        'endToEndId', 'E' || payer || '202402101530' || 'I' || lpad(n::text, 10, '0'),
        'valor', n + 0.5,
        'pagador', jsonb_build_object('nome', 'Marcos José', 'cpfCnpj', '98716278151',
                                      'ispb', payer, 'agencia', '0001',
                                      'contaTransacional', '1231231', 'tipoConta', 'CACC'),
        'recebedor', jsonb_build_object('nome', 'Flavio José', 'cpfCnpj', '77615678242',
                                        'ispb', receiver, 'agencia', '0361',
                                        'contaTransacional', '1210098', 'tipoConta', 'SVGS'),
        'dataHoraPagamento', '2024-02-10T15:30:00.000Z')::text
$$;
GRANT EXECUTE ON FUNCTION msg(int, text, text) TO PUBLIC;

SELECT pix_role_bind('regress_pix13_bank_a', '13000001'), pix_role_bind('regress_pix13_bank_b', '13000002');
-- B has 5 messages and a stream holding 2 of them.
SELECT pix_generate_messages('13000002', 5) AS for_b, pix_generate_messages('13000001', 3) AS for_a;
CREATE TABLE b_id AS SELECT interation_id AS iid FROM pix_stream_start('13000002', 2);
GRANT SELECT ON b_id TO PUBLIC;
-- What the caller may do to B: read (start), confirm (next on B's id), stop B's stream, stop all
-- of B's streams, send a payment paid by B.
CREATE FUNCTION on_b() RETURNS TABLE (call text, answer text) LANGUAGE sql AS $$
    VALUES ('start', t13.try($q$SELECT message_count FROM pix_stream_start('13000002', 5)$q$)),
           ('next', t13.try($q$SELECT message_count FROM pix_stream_next('13000002', $1, 5)$q$,
                            (SELECT iid FROM t13.b_id))),
           ('stop', t13.try($q$SELECT pix_stream_stop('13000002', $1)$q$, (SELECT iid FROM t13.b_id))),
           ('stop all', t13.try($q$SELECT pix_streams_stop_all('13000002')$q$)),
           ('send', t13.try($q$SELECT accepted FROM pix_messages_send('13000002', $1)$q$,
                            t13.msg(1, '13000002', '13000001')))
$$;
GRANT EXECUTE ON FUNCTION on_b() TO PUBLIC;
CREATE FUNCTION b_state() RETURNS text LANGUAGE sql SECURITY DEFINER AS $$
    SELECT format('open streams %s, pending %s, ready %s, sent by B %s',
                  (SELECT count(*) FROM pix.stream WHERE ispb = '13000002' AND state = 'o'),
                  (SELECT sum(cardinality(pending_ids)) FROM pix.stream WHERE ispb = '13000002' AND state = 'o'),
                  (SELECT count(*) FROM pix.ready WHERE ispb = '13000002'),
                  (SELECT count(*) FROM pix.message WHERE pagador_ispb = '13000002' AND end_to_end_id LIKE 'E13%I%'))
$$;
GRANT EXECUTE ON FUNCTION b_state() TO PUBLIC;
SELECT b_state();

--
-- 1. The escape of issue 18: bank A logs in, SET ROLE pix_institution (unbound, and A is a member)
--    and tries to act for B. Every call is refused; A's own calls still work.
--
SET SESSION AUTHORIZATION regress_pix13_bank_a;
SET ROLE pix_institution;
SELECT session_user, current_user;
SELECT * FROM on_b();
SELECT try($$SELECT message_count FROM pix_stream_start('13000001', 1)$$) AS own_start;
RESET ROLE;
-- As itself, the same.
SELECT * FROM on_b();
RESET SESSION AUTHORIZATION;
SELECT b_state() AS b_untouched;

-- A clerk (a member of bank A) inherits A's binding, with or without SET ROLE.
SET SESSION AUTHORIZATION regress_pix13_clerk;
SELECT try($$SELECT pix_streams_stop_all('13000002')$$) AS clerk_on_b,
       try($$SELECT pix_streams_stop_all('13000001') >= 0$$) AS clerk_on_a;
SET ROLE pix_institution;
SELECT try($$SELECT pix_streams_stop_all('13000002')$$) AS clerk_as_institution_on_b;
RESET SESSION AUTHORIZATION;
-- A member of two bound roles acts for neither.
SET SESSION AUTHORIZATION regress_pix13_both;
SELECT try($$SELECT pix_streams_stop_all('13000001')$$) AS both_on_a,
       try($$SELECT pix_streams_stop_all('13000002')$$) AS both_on_b;
RESET SESSION AUTHORIZATION;

--
-- 2. Fail closed: an institution role with no binding acts for nobody, credential or not; so does
--    a superuser session that SET ROLE pix_institution. The HTTP server's role (pix_client, not an
--    institution role) stays trusted without credential, as with pixd --auth none.
--
SET SESSION AUTHORIZATION regress_pix13_unbound;
SELECT * FROM on_b();
SELECT try($$SELECT message_count FROM pix_stream_start('13000001', 1)$$) AS unbound_on_a;
RESET SESSION AUTHORIZATION;
CREATE TABLE cred AS
SELECT 'token:' || encode(sha256(convert_to(pix_token_issue('13000001', 'A'), 'UTF8')), 'hex') AS a;
GRANT SELECT ON cred TO PUBLIC;
SET SESSION AUTHORIZATION regress_pix13_unbound;
SELECT try($$SELECT pix_streams_stop_all('13000001', $1)$$, (SELECT a FROM t13.cred)) AS unbound_with_a_credential;
RESET SESSION AUTHORIZATION;
SET ROLE pix_institution;
SELECT try($$SELECT pix_streams_stop_all('13000002')$$) AS superuser_as_institution;
RESET ROLE;
SET SESSION AUTHORIZATION regress_pix13_http;
SELECT try($$SELECT pix_streams_stop_all('13000009') >= 0$$) AS http_role_trusted,
       try($$SELECT pix_streams_stop_all('13000002', $1)$$, (SELECT a FROM t13.cred)) AS http_role_with_a_on_b,
       try($$SELECT pix_streams_stop_all('13000001', $1) >= 0$$, (SELECT a FROM t13.cred)) AS http_role_with_a_on_a;
RESET SESSION AUTHORIZATION;

--
-- 3. Unbinding refuses from the next call on.
--
SELECT pix_role_unbind('regress_pix13_bank_b') AS unbound_b;
SET SESSION AUTHORIZATION regress_pix13_bank_b;
SELECT try($$SELECT message_count FROM pix_stream_start('13000002', 1)$$) AS b_after_unbind;
RESET SESSION AUTHORIZATION;
SELECT pix_role_bind('regress_pix13_bank_b', '13000002');
SET SESSION AUTHORIZATION regress_pix13_bank_b;
SELECT try($$SELECT pix_streams_stop_all('13000002') >= 0$$) AS b_bound_again;
RESET SESSION AUTHORIZATION;

--
-- 4. A binding never outlives its role: a role dropped and made again under the same name is
--    unbound (and refused), and so is a renamed role; the stale rows are swept, audited.
--
CREATE ROLE regress_pix13_again IN ROLE pix_institution;
SELECT pix_role_bind('regress_pix13_again', '13000001');
CREATE TEMP TABLE old_oid AS SELECT 'regress_pix13_again'::regrole::oid AS oid;
DROP ROLE regress_pix13_again;
CREATE ROLE regress_pix13_again IN ROLE pix_institution;
SELECT count(*) AS stale_row_still_there FROM pix.role_binding WHERE role = (SELECT oid FROM old_oid);
SET SESSION AUTHORIZATION regress_pix13_again;
SELECT try($$SELECT pix_streams_stop_all('13000001')$$) AS recreated_role;
RESET SESSION AUTHORIZATION;
CREATE ROLE regress_pix13_renamed IN ROLE pix_institution;
SELECT pix_role_bind('regress_pix13_renamed', '13000001');
ALTER ROLE regress_pix13_renamed RENAME TO regress_pix13_renamed2;
SET SESSION AUTHORIZATION regress_pix13_renamed2;
SELECT try($$SELECT pix_streams_stop_all('13000001')$$) AS renamed_role;
RESET SESSION AUTHORIZATION;
-- Any bind or unbind sweeps them.
SELECT pix_role_unbind('regress_pix13_again') AS again_was_bound;
SELECT count(*) AS stale_rows_left FROM pix.role_binding b
 WHERE NOT EXISTS (SELECT FROM pg_roles r WHERE r.oid = b.role AND r.rolname = b.role_name);
SELECT action, ispb, regexp_replace(detail, 'oid [0-9]+', 'oid N') AS detail
  FROM pix.credential_audit WHERE action = 'role_binding_stale' ORDER BY audit_id;
-- A binding's role name is the role's own, whatever the inserter writes.
INSERT INTO pix.role_binding (role, role_name, ispb)
VALUES ('regress_pix13_unbound'::regrole, 'regress_pix13_bank_b', '13000002');
SELECT role::regrole, role_name, ispb FROM pix.role_binding WHERE role = 'regress_pix13_unbound'::regrole;
SELECT try($$INSERT INTO pix.role_binding (role, ispb) VALUES (4000000000, '13000002')$$) AS no_such_role;
DELETE FROM pix.role_binding WHERE role = 'regress_pix13_unbound'::regrole;

--
-- 5. With authentication, a payment goes to registered institutions only (PX014, naming the
--    field); trusted callers (no credential, unbound non-institution role) are not checked.
--
SET SESSION AUTHORIZATION regress_pix13_bank_a;
SELECT try($$SELECT accepted FROM pix_messages_send('13000001', $1)$$,
           '[' || msg(2, '13000001', '13000002') || ',' || msg(3, '13000001', '13999999') || ']') AS bound_to_unregistered,
       try($$SELECT accepted FROM pix_messages_send('13000001', $1)$$, msg(4, '13000001', '13000002')) AS bound_to_b;
RESET SESSION AUTHORIZATION;
SET SESSION AUTHORIZATION regress_pix13_http;
SELECT try($$SELECT accepted FROM pix_messages_send('13000001', $1, $2)$$, msg(5, '13000001', '13999999'),
           (SELECT a FROM t13.cred)) AS credential_to_unregistered,
       try($$SELECT accepted FROM pix_messages_send('13000001', $1)$$, msg(6, '13000001', '13999999')) AS trusted_to_unregistered;
RESET SESSION AUTHORIZATION;
CREATE TABLE admin_cred AS
SELECT 'token:' || encode(sha256(convert_to(pix_admin_token_issue('gen'), 'UTF8')), 'hex') AS c;
SELECT try($$SELECT pix_generate_messages('13999998', 1, $1)$$, (SELECT c FROM admin_cred)) AS generator_to_unregistered,
       try($$SELECT pix_generate_messages('13000002', 1, $1)$$, (SELECT c FROM admin_cred)) AS generator_to_b;

--
-- 5b. An institution role that was also given pix_producer enqueues by INSERT only what it pays
--     itself; a producer that is no institution role is trusted to address messages.
--
CREATE FUNCTION insert_paid_by(payer text, n int) RETURNS text LANGUAGE plpgsql AS $$
DECLARE
    detail text;
BEGIN
    EXECUTE format($q$INSERT INTO pix.message (end_to_end_id, valor, pagador_nome,
        pagador_cpf_cnpj, pagador_ispb, pagador_agencia, pagador_conta, pagador_tipo_conta,
        recebedor_nome, recebedor_cpf_cnpj, recebedor_ispb, recebedor_agencia, recebedor_conta,
        recebedor_tipo_conta, data_hora_pagamento)
        VALUES ('E%s202402101530P%s', 1.50, 'Marcos José', '98716278151', %L, '0001', '1231231',
                'CACC', 'Flavio José', '77615678242', '13000002', '0361', '1210098', 'SVGS', now())$q$,
        payer, lpad(n::text, 10, '0'), payer);
    RETURN 'inserted';
EXCEPTION WHEN OTHERS THEN
    GET STACKED DIAGNOSTICS detail = PG_EXCEPTION_DETAIL;
    RETURN SQLSTATE || ' ' || SQLERRM || coalesce(' (' || nullif(detail, '') || ')', '');
END
$$;
GRANT EXECUTE ON FUNCTION insert_paid_by(text, int) TO PUBLIC;
GRANT pix_producer TO regress_pix13_bank_a, regress_pix13_unbound, regress_pix13_http;
SET SESSION AUTHORIZATION regress_pix13_bank_a;
SELECT insert_paid_by('13000002', 1) AS bank_a_pays_as_b, insert_paid_by('13000001', 2) AS bank_a_pays_as_a;
RESET SESSION AUTHORIZATION;
SET SESSION AUTHORIZATION regress_pix13_unbound;
SELECT insert_paid_by('13000001', 3) AS unbound_institution_producer;
RESET SESSION AUTHORIZATION;
SET SESSION AUTHORIZATION regress_pix13_http;
SELECT insert_paid_by('13000002', 4) AS plain_producer;
RESET SESSION AUTHORIZATION;
REVOKE pix_producer FROM regress_pix13_bank_a, regress_pix13_unbound, regress_pix13_http;

--
-- 6. pix_metrics names registered institutions only: 13999999 got a message (trusted send above)
--    and counts in the totals, but has no label.
--
SELECT count(*) AS ready_for_unregistered FROM pix.ready WHERE ispb = '13999999';
SELECT ispb, metric, value FROM pix_metrics(1000) WHERE ispb LIKE '13%' ORDER BY ispb, metric;
SELECT (SELECT value FROM pix_metrics() WHERE ispb IS NULL AND metric = 'pix_messages_ready')
       >= (SELECT count(*) FROM pix.ready) AS totals_count_everything;

DROP SCHEMA t13 CASCADE;
SELECT pix_streams_stop_all(ispb) >= 0 FROM (VALUES ('13000001'), ('13000002')) v(ispb);
SELECT pix_role_unbind(r) FROM (VALUES ('regress_pix13_bank_a'), ('regress_pix13_bank_b'),
                                       ('regress_pix13_renamed2')) v(r);
DROP ROLE regress_pix13_clerk, regress_pix13_both, regress_pix13_bank_a, regress_pix13_bank_b,
          regress_pix13_unbound, regress_pix13_again, regress_pix13_renamed2, regress_pix13_http;
