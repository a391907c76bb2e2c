--
-- 14_credential_import: pix_shard.credential_import (router/pix_shard.sql), how the router copies
-- a credential issued on one shard to the others. Only the router may call it (members of
-- pix_credential_copy; not pix_admin), and every field is checked or recomputed: an operator cannot
-- plant a token of their choosing, nor forge who issued a credential or when (issue 18).
--
-- Institutions used here: 14000001.
--
CREATE SCHEMA t14;
SET search_path = t14, public;
\set ECHO none
SET client_min_messages = warning;
\i router/pix_shard.sql
RESET client_min_messages;
\set ECHO all
DROP ROLE IF EXISTS regress_pix14_ops;
DROP ROLE IF EXISTS regress_pix14_router;
CREATE ROLE regress_pix14_ops IN ROLE pix_admin;
CREATE ROLE regress_pix14_router IN ROLE pix_credential_copy;
GRANT USAGE ON SCHEMA t14 TO PUBLIC;

\i sql/include/try.sql

-- Two credentials as the issuing shard has them; then removed here, as if this were another shard.
SELECT pix_certificate_add('14000001', repeat('ab', 32), 'A cert') > 0 AS cert,
       pix_token_issue('14000001', 'A token') LIKE 'pix_%' AS token;
CREATE TABLE origin AS
SELECT kind, pix_shard.credential_get(NULL, credential_id)::jsonb AS row
  FROM pix.credential WHERE ispb = '14000001';
GRANT SELECT ON origin TO PUBLIC;
DELETE FROM pix.credential WHERE ispb = '14000001';
-- A row as the origin gave it, with some fields changed.
CREATE FUNCTION forged(k text, changes jsonb) RETURNS text LANGUAGE sql STABLE
    AS $$ SELECT (row || changes)::text FROM t14.origin WHERE kind = k $$;
CREATE FUNCTION import(r text) RETURNS text LANGUAGE sql
    AS $$ SELECT t14.try('SELECT pix_shard.credential_import($1)', r) $$;
GRANT EXECUTE ON FUNCTION forged(text, jsonb), import(text) TO PUBLIC;

--
-- 1. Not the router: refused, even for pix_admin and even with the genuine row.
--
SET ROLE regress_pix14_ops;
SELECT import(forged('token', '{}')) AS admin_imports;
RESET ROLE;

--
-- 2. The router's role: every forged field is refused, nothing stored.
--
SET SESSION AUTHORIZATION regress_pix14_router;
SELECT what, import(forged(k, changes)) AS answer
  FROM (VALUES
    ('revoked', 'token', jsonb_build_object('revoked_at', now(), 'revoked_by', 'x')),
    ('issued long ago', 'token', jsonb_build_object('created_at', '2001-01-01T00:00:00Z')),
    ('issued in the future', 'token', jsonb_build_object('created_at', now() + interval '1 day')),
    ('created_by forged', 'token', jsonb_build_object('created_by', E'ops\nroot')),
    ('admin with an ISPB', 'token', '{"admin": true}'),
    ('other ISPB form', 'token', '{"ispb": "1400000x"}'),
    ('token digest too short', 'token', '{"lookup": "\\x0102"}'),
    ('token with a fingerprint', 'token', jsonb_build_object('fingerprint', repeat('ab', 32))),
    ('cert digest of another fingerprint', 'cert', jsonb_build_object('fingerprint', repeat('cd', 32))),
    ('no id', 'cert', '{"credential_id": null}'),
    ('unknown kind', 'cert', '{"kind": "password"}')) AS v(what, k, changes);
SELECT import('not json') AS not_json, import('{"credential_id": "x"}') AS bad_id;
RESET SESSION AUTHORIZATION;
SELECT count(*) AS stored FROM pix.credential WHERE ispb = '14000001';

--
-- 3. The genuine rows are stored once, under their origin's id, audited as this session's user
--    with the origin's issuer; a certificate's fingerprint is normalized.
--
SET SESSION AUTHORIZATION regress_pix14_router;
SELECT import(forged('token', '{}')) AS token, import(forged('cert', '{}')) AS cert,
       import(forged('token', '{}')) AS token_again;
SELECT import(forged('cert', jsonb_build_object('fingerprint', upper(repeat('ab', 32))))) AS cert_upper_case_again;
RESET SESSION AUTHORIZATION;
SELECT c.kind, c.credential_id = (o.row ->> 'credential_id')::bigint AS same_id,
       c.created_by = o.row ->> 'created_by' AS same_issuer, c.revoked_at IS NULL AS active
  FROM pix.credential c JOIN origin o USING (kind) WHERE c.ispb = '14000001' ORDER BY kind;
SELECT action, actor, regexp_replace(detail, ' at .*', ' at <time>') AS detail
  FROM pix.credential_audit WHERE action = 'credential_copy' AND ispb = '14000001' ORDER BY audit_id;

DROP SCHEMA t14 CASCADE;
DROP SCHEMA pix_shard CASCADE;
DROP OWNED BY regress_pix14_ops, regress_pix14_router;
DROP ROLE regress_pix14_ops, regress_pix14_router;
