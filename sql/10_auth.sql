--
-- 10_auth: authorization inside every client-facing function, credentials and their management.
--
--   PX012 unauthenticated: credential malformed, unknown or revoked
--   PX013 forbidden: another ISPB's credential, an admin credential on an ISPB function, a
--         non-admin credential on the generator, a role bound to another ISPB
-- The ISPB's syntax is checked first (PX001), then the credential, then everything else: a 403
-- answers the same whether the other ISPB's id exists or not.
--
-- Institutions used here: 10000001 (A), 10000002 (B), 10000003 (C, never registered).
--
CREATE SCHEMA t10;
SET search_path = t10, public;

SET client_min_messages = warning;
DROP ROLE IF EXISTS regress_pix_ops;
DROP ROLE IF EXISTS regress_pix_app9;
DROP ROLE IF EXISTS regress_pix_bank_a;
DROP ROLE IF EXISTS regress_pix_bank_a_clerk;
RESET client_min_messages;
CREATE ROLE regress_pix_ops IN ROLE pix_admin;
CREATE ROLE regress_pix_app9 IN ROLE pix_client;
CREATE ROLE regress_pix_bank_a IN ROLE pix_institution;
CREATE ROLE regress_pix_bank_a_clerk IN ROLE regress_pix_bank_a;
GRANT USAGE ON SCHEMA t10 TO regress_pix_ops, regress_pix_app9, regress_pix_bank_a;

\i sql/include/try.sql

-- The credential pixd passes for a bearer token: token:<sha256 hex of the token's bytes>.
CREATE FUNCTION token_credential(token text) RETURNS text LANGUAGE sql IMMUTABLE
    AS $$ SELECT 'token:' || encode(sha256(convert_to(token, 'UTF8')), 'hex') $$;
-- A made-up certificate's fingerprint (as if SHA-256 of its DER) and its credential.
CREATE FUNCTION fp(name text) RETURNS text LANGUAGE sql IMMUTABLE
    AS $$ SELECT encode(sha256(convert_to('certificate ' || name, 'UTF8')), 'hex') $$;

-- The credentials of this suite by name; readable by the test roles (they are digests anyway).
CREATE TABLE cred (name text PRIMARY KEY, credential text NOT NULL);
GRANT SELECT, INSERT ON cred TO PUBLIC;
CREATE FUNCTION c(name text) RETURNS text LANGUAGE sql STABLE
    AS $$ SELECT credential FROM t10.cred WHERE cred.name = c.name $$;
GRANT EXECUTE ON FUNCTION c(text) TO PUBLIC;

--
-- 1. Management is for pix_admin only.
--
SELECT rolname, rolcanlogin FROM pg_roles WHERE rolname = 'pix_admin';
SET ROLE regress_pix_app9;
SELECT try($$SELECT pix_token_issue('10000001', 'x')$$) AS app_issue,
       try($$SELECT pix_certificate_add('10000001', t10.fp('x'))$$) AS app_add,
       try($$SELECT pix_credential_revoke(1)$$) AS app_revoke;
SELECT try($$SELECT count(*) FROM pix_credential_list()$$) AS app_list,
       try($$SELECT pix_role_bind('regress_pix_app9', '10000001')$$) AS app_bind,
       try($$SELECT count(*) FROM pix.credential_audit$$) AS app_audit;
RESET ROLE;
-- The admin role manages, reads the audit and the bindings, and nothing else: no stream function,
-- no table of credentials or messages.
SET ROLE regress_pix_ops;
INSERT INTO t10.cred
SELECT 'a', t10.token_credential(pix_token_issue('10000001', 'sandbox A'));
SELECT try($$SELECT count(*) FROM pix.credential$$) AS ops_read_credentials,
       try($$SELECT count(*) FROM pix.message$$) AS ops_read_messages,
       try($$SELECT message_count FROM pix_stream_start('10000001')$$) AS ops_start;
SELECT try($$SELECT count(*) FROM pix.credential_audit$$) AS ops_audit,
       try($$SELECT count(*) FROM pix.role_binding$$) AS ops_bindings;
RESET ROLE;

--
-- 2. Issuing and registering.
--
INSERT INTO cred SELECT 'a2', token_credential(pix_token_issue('10000001', 'second token of A'));
INSERT INTO cred SELECT 'b', token_credential(pix_token_issue('10000002', 'sandbox B'));
INSERT INTO cred SELECT 'admin', token_credential(pix_admin_token_issue('generator'));
-- Tokens: "pix_" and 64 hex digits (256 bits), a new one every time; only a digest is stored.
SELECT pix_token_issue('10000002', 'throwaway') ~ '^pix_[0-9a-f]{64}$' AS token_shape;
SELECT count(DISTINCT t) AS distinct_of_100
  FROM (SELECT pix_token_issue('10000002', 'many') AS t FROM generate_series(1, 100)) s;
SELECT count(*) AS rows_holding_a_token_or_its_first_digest
  FROM pix.credential c, cred
 WHERE c.lookup = decode(right(cred.credential, 64), 'hex') OR c.label ~ 'pix_';
-- Certificates: fingerprints in upper case with colons are normalized; several per ISPB.
SELECT pix_certificate_add('10000001', upper(regexp_replace(fp('a1'), '(..)(?!$)', '\1:', 'g')),
                           'A 2026') > 0 AS added;
SELECT pix_certificate_add('10000001', fp('a2'), 'A 2027') > 0 AS added_rotation;
SELECT pix_admin_certificate_add(fp('ops'), 'ops laptop') > 0 AS added_admin;
INSERT INTO cred VALUES ('cert a1', 'cert:' || fp('a1')), ('cert a2', 'cert:' || fp('a2')),
                        ('cert ops', 'cert:' || fp('ops')), ('cert unknown', 'cert:' || fp('zz')),
                        ('unknown token', token_credential('pix_' || repeat('0', 64)));
SELECT try($$SELECT pix_certificate_add('10000002', t10.fp('a1'))$$) AS same_fingerprint_twice,
       try($$SELECT pix_certificate_add('10000002', 'abc')$$) AS short_fingerprint,
       try($$SELECT pix_certificate_add('1000000', t10.fp('q'))$$) AS bad_ispb;
SELECT try($$SELECT pix_token_issue(NULL, 'x')$$) AS null_ispb,
       try($$SELECT pix_certificate_add('10000002', NULL)$$) AS null_fingerprint,
       try($$SELECT pix_certificate_add('10000002', repeat('g', 64))$$) AS not_hex;
SELECT kind, ispb, admin, label, fingerprint IS NOT NULL AS has_fingerprint,
       revoked_at IS NULL AS active
  FROM pix_credential_list() WHERE label <> 'many' ORDER BY credential_id;
SELECT count(*) AS listed_for_a FROM pix_credential_list('10000001');

--
-- 3. The check in every function, before anything else. A's credential acts for A only.
--
SELECT pix_generate_messages('10000001', 4, c('admin')) AS generated_for_a,
       pix_generate_messages('10000002', 4, c('admin')) AS generated_for_b;
CREATE TABLE ids AS
SELECT 'a' AS who, interation_id FROM pix_stream_start('10000001', 2, c('a'))
UNION ALL
SELECT 'b', interation_id FROM pix_stream_start('10000002', 2, c('b'));
GRANT SELECT ON ids TO PUBLIC;
-- start
SELECT try($$SELECT message_count FROM pix_stream_start('10000001', 1, $1)$$, c('a2')) AS a_on_a,
       try($$SELECT message_count FROM pix_stream_start('10000002', 1, $1)$$, c('a')) AS a_on_b,
       try($$SELECT message_count FROM pix_stream_start('10000003', 1, $1)$$, c('a')) AS a_on_c;
SELECT try($$SELECT message_count FROM pix_stream_start('10000002', 99, $1)$$, c('a')) AS forbidden_before_bad_count,
       try($$SELECT message_count FROM pix_stream_start('1000000x', 1, $1)$$, 'garbage') AS bad_ispb_before_credential;
-- next: another ISPB's real id and a made-up id answer the same 403
SELECT try($$SELECT message_count FROM pix_stream_next('10000002', $1, 1, $2)$$,
           (SELECT interation_id FROM ids WHERE who = 'b'), c('a')) AS a_next_on_b_real_id,
       try($$SELECT message_count FROM pix_stream_next('10000002', $1, 1, $2)$$,
           'aaaaaaaaaaaaaaaaaaaa', c('a')) AS a_next_on_b_unknown_id;
SELECT try($$SELECT message_count FROM pix_stream_next('10000001', $1, 1, $2)$$,
           (SELECT interation_id FROM ids WHERE who = 'b'), c('a')) AS b_id_under_a,
       try($$SELECT message_count FROM pix_stream_next('10000001', $1, 2, $2)$$,
           (SELECT interation_id FROM ids WHERE who = 'a'), c('cert a1')) AS a_next_with_cert;
-- stop
SELECT try($$SELECT pix_stream_stop('10000002', $1, $2)$$,
           (SELECT interation_id FROM ids WHERE who = 'b'), c('a')) AS a_stop_on_b,
       try($$SELECT pix_stream_stop('10000002', $1, $2)$$, 'x', c('unknown token')) AS unknown_stop;
-- stop all, send
SELECT try($$SELECT pix_streams_stop_all('10000002', $1)$$, c('a')) AS a_stop_all_b,
       try($$SELECT pix_streams_stop_all('10000002', $1)$$, c('cert unknown')) AS unknown_stop_all;
SELECT try($$SELECT accepted FROM pix_messages_send('10000002', '[]', $1)$$, c('a')) AS a_send_as_b,
       try($$SELECT accepted FROM pix_messages_send('10000002', 'not json', $1)$$, 'token:') AS malformed_send;
-- B's stream is untouched by all of the above.
SELECT state, cardinality(pending_ids) AS pending FROM pix.stream WHERE ispb = '10000002';
-- The generator: an admin credential, or none (trusted role); an institution's is forbidden. With
-- a credential the receiver must be a registered institution: C never was (PX014, 13_identity).
SELECT try($$SELECT pix_generate_messages('10000003', 1, $1)$$, c('cert ops')) AS admin_cert,
       try($$SELECT pix_generate_messages('10000003', 1, $1)$$, c('a')) AS institution,
       try($$SELECT pix_generate_messages('10000003', 1, $1)$$, c('unknown token')) AS unknown,
       try($$SELECT pix_generate_messages('10000003', 1)$$) AS none;
-- An admin credential does not act for an institution.
SELECT try($$SELECT message_count FROM pix_stream_start('10000001', 1, $1)$$, c('admin')) AS admin_start,
       try($$SELECT pix_streams_stop_all('10000001', $1)$$, c('cert ops')) AS admin_stop_all;

--
-- 4. Malformed credentials are all "unauthenticated", and the backend survives them.
--
SELECT v AS credential_shape,
       try($$SELECT message_count FROM pix_stream_start('10000001', 1, $1)$$, v) AS start
  FROM (VALUES (''), ('token:'), ('cert:'), ('bearer pix_abc'), ('TOKEN:' || repeat('a', 64)),
               ('token:' || repeat('A', 64)), ('token:' || repeat('a', 63)),
               ('token:' || repeat('a', 65)), ('cert:' || repeat('a', 64) || ' '),
               ('token:' || repeat('é', 64))) AS t(v);
SELECT try($$SELECT message_count FROM pix_stream_start('10000001', 1, $1)$$,
           repeat('token:', 200000)) AS one_megabyte;

--
-- 5. Revocation takes effect on the next call; rotation keeps the other certificate working.
--
SELECT pix_certificate_revoke(fp('a1')) AS revoked_certificates;
SELECT try($$SELECT message_count FROM pix_stream_start('10000001', 1, $1)$$, c('cert a1')) AS revoked_cert,
       try($$SELECT message_count FROM pix_stream_start('10000001', 1, $1)$$, c('cert a2')) AS other_cert;
SELECT pix_credential_revoke(credential_id) AS revoked, pix_credential_revoke(credential_id) AS again
  FROM pix_credential_list('10000001') WHERE label = 'second token of A';
SELECT try($$SELECT message_count FROM pix_stream_start('10000001', 1, $1)$$, c('a2')) AS revoked_token,
       pix_credential_revoke(-1) AS unknown_id;
-- A revoked certificate may be registered again (a new credential).
SELECT pix_certificate_add('10000001', fp('a1'), 'A 2026 again') > 0 AS re_added;
SELECT try($$SELECT message_count FROM pix_stream_start('10000001', 1, $1)$$, c('cert a1')) AS re_added_cert;

--
-- 6. Role binding: a role bound to A (and its members) acts for A only, even as
--    SELECT * FROM pix_stream_next(...), with or without credential; never the generator.
--
SELECT pix_role_bind('regress_pix_bank_a', '10000001');
SELECT try($$SELECT pix_role_bind('regress_pix_bank_a', 'A')$$) AS bad_ispb,
       try($$SELECT pix_role_bind('no_such_role_09', '10000001')$$) AS no_role;
SELECT r.role::regrole, r.ispb FROM pix.role_binding r;
SET ROLE regress_pix_bank_a;
CREATE TEMP TABLE mine AS SELECT * FROM pix_stream_start('10000001', 1);
SELECT message_count FROM mine;
SELECT try($$SELECT message_count FROM pix_stream_next('10000001', $1)$$,
           (SELECT interation_id FROM mine)) AS own_next;
SELECT try($$SELECT message_count FROM pix_stream_start('10000002')$$) AS other_start,
       try($$SELECT message_count FROM pix_stream_next('10000002', $1)$$,
           (SELECT interation_id FROM t10.ids WHERE who = 'b')) AS other_next;
SELECT try($$SELECT pix_stream_stop('10000002', $1)$$,
           (SELECT interation_id FROM t10.ids WHERE who = 'b')) AS other_stop,
       try($$SELECT pix_streams_stop_all('10000002')$$) AS other_stop_all,
       try($$SELECT accepted FROM pix_messages_send('10000002', '{}')$$) AS other_send;
SELECT try($$SELECT message_count FROM pix_stream_start('10000002', 1, $1)$$, t10.c('b')) AS with_b_credential,
       try($$SELECT pix_generate_messages('10000001', 1)$$) AS generator;
-- The institution's group role has the functions of one ISPB only: no metrics of every
-- institution, no housekeeping, no generator.
SELECT try($$SELECT count(*) FROM pix_metrics()$$) AS metrics,
       try($$SELECT pix_expire_streams()$$) AS expire,
       try($$SELECT pix_streams_keepalive('{}')$$) AS keepalive;
RESET ROLE;
SET ROLE regress_pix_bank_a_clerk;
SELECT try($$SELECT message_count FROM pix_stream_start('10000002')$$) AS member_other_start,
       try($$SELECT pix_streams_stop_all('10000001') >= 0$$) AS member_own_stop_all;
RESET ROLE;
-- Other roles and superusers are not confined by A's binding.
SET ROLE regress_pix_app9;
SELECT try($$SELECT message_count FROM pix_stream_start('10000002')$$) AS unbound_role;
RESET ROLE;
SELECT try($$SELECT message_count FROM pix_stream_start('10000002')$$) AS superuser;
SELECT pix_role_bind('regress_pix_bank_a', '10000002') AS rebound;
SET ROLE regress_pix_bank_a;
SELECT try($$SELECT message_count FROM pix_stream_start('10000001')$$) AS old_ispb_now,
       try($$SELECT pix_streams_stop_all('10000002') >= 0$$) AS new_ispb_now;
RESET ROLE;
SELECT pix_role_unbind('regress_pix_bank_a') AS unbound, pix_role_unbind('regress_pix_bank_a') AS again;
-- Unbound, a member of pix_institution acts for nobody (fail closed; 13_identity has the rest).
SET ROLE regress_pix_bank_a;
SELECT try($$SELECT pix_streams_stop_all('10000001') >= 0$$) AS after_unbind;
RESET ROLE;

-- A bound member of pix_client (which may run the generator) is refused it all the same.
SELECT pix_role_bind('regress_pix_app9', '10000001');
SET ROLE regress_pix_app9;
SELECT try($$SELECT pix_generate_messages('10000001', 1)$$) AS bound_client_generator;
RESET ROLE;
SELECT pix_role_unbind('regress_pix_app9') AS unbound_app;

--
-- 7. The audit: every change, who made it (the session's user), when, for which ISPB.
--
SELECT action, ispb, credential_id IS NOT NULL AS has_credential,
       regexp_replace(detail, '[0-9a-f]{64}', '<fingerprint>') AS detail,
       actor = session_user AS by_session_user, at <= clock_timestamp() AS dated
  FROM pix.credential_audit WHERE detail <> 'label many' ORDER BY audit_id;

DROP SCHEMA t10 CASCADE;
SELECT pix_streams_stop_all(ispb) >= 0 FROM (VALUES ('10000001'), ('10000002'), ('10000003')) v(ispb);
DROP OWNED BY regress_pix_ops, regress_pix_app9, regress_pix_bank_a, regress_pix_bank_a_clerk;
DROP ROLE regress_pix_bank_a_clerk;
DROP ROLE regress_pix_bank_a;
DROP ROLE regress_pix_app9;
DROP ROLE regress_pix_ops;
