-- What a shard needs besides the pix extension, installed by scripts/shards.sh on every shard.
-- PL/Proxy sends only SELECTs, so an INSERT forwarded by the router's pix.message view needs a function
-- here to run it. It runs with the caller's rights (the role that inserted on the router): a role without
-- INSERT on pix.message is refused on the shard as it would be on a single database.

CREATE SCHEMA IF NOT EXISTS pix_shard;
GRANT USAGE ON SCHEMA pix_shard TO PUBLIC;

CREATE OR REPLACE FUNCTION pix_shard.insert_message(m json) RETURNS bigint
LANGUAGE sql VOLATILE SET search_path = pg_catalog, pg_temp AS $$
    INSERT INTO pix.message (end_to_end_id, valor, pagador_nome, pagador_cpf_cnpj, pagador_ispb,
                             pagador_agencia, pagador_conta, pagador_tipo_conta, recebedor_nome,
                             recebedor_cpf_cnpj, recebedor_ispb, recebedor_agencia, recebedor_conta,
                             recebedor_tipo_conta, campo_livre, tx_id, data_hora_pagamento)
    SELECT end_to_end_id, valor, pagador_nome, pagador_cpf_cnpj, pagador_ispb, pagador_agencia,
           pagador_conta, pagador_tipo_conta, recebedor_nome, recebedor_cpf_cnpj, recebedor_ispb,
           recebedor_agencia, recebedor_conta, recebedor_tipo_conta, coalesce(campo_livre, ''),
           coalesce(tx_id, ''), data_hora_pagamento
      FROM json_populate_record(NULL::pix.message, m)
    RETURNING id
$$;

-- ---- credentials (pix 1.3): every shard holds every credential ----------------------------------
-- A send is split by receiver and each part is authorized by the receiver's shard with the sender's
-- credential, and admin credentials act on every ISPB's shard: so every credential is on every shard,
-- with the same credential_id (the router issues it on one shard and copies the row to the others; see
-- README, "Deployment: sharded"). Nothing below exists on a shard older than 1.3.
SELECT to_regclass('pix.credential') IS NOT NULL AS has_credentials \gset
\if :has_credentials
-- The row of one credential (by lookup digest or by id) as JSON, for the router to copy.
CREATE OR REPLACE FUNCTION pix_shard.credential_get(lookup bytea, id bigint) RETURNS text
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
    SELECT row_to_json(c)::text FROM pix.credential c
     WHERE c.lookup = credential_get.lookup OR c.credential_id = credential_get.id
     ORDER BY c.revoked_at IS NULL DESC LIMIT 1
$$;

-- Stores a copy of a credential issued on another shard (same id, same digest), audited here as
-- 'credential_copy'. Already here: nothing changes. Another active credential with the same digest
-- (registered on this shard directly): 23505, nothing changes.
--
-- Only the router may call it (issue 18): EXECUTE belongs to the NOLOGIN role pix_credential_copy
-- alone, not to pix_admin, whose members could otherwise store a token of their own choosing (a
-- token's digest cannot be checked here) with a forged created_by/created_at. The router calls it
-- from pix_router.credential_copy, a SECURITY DEFINER function that takes the row from the shard
-- that issued it (credential_get) and connects to the shards as its owner (a superuser, or a login
-- role granted pix_credential_copy): the row's provenance is its origin shard, never the caller.
-- Every field is checked or recomputed: a new, active credential (no revocation), kind, ISPB and
-- admin consistent, a certificate's fingerprint normalized and its digest recomputed from it, a
-- token's digest 32 bytes, created_at not in the future nor older than a day (a copy follows its
-- issue in the same router call), created_by a role name; the audit row names this session's user.
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'pix_credential_copy') THEN
        CREATE ROLE pix_credential_copy NOLOGIN;
    END IF;
END
$$;

CREATE OR REPLACE FUNCTION pix_shard.credential_import(credential text) RETURNS boolean
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    r pix.credential;
BEGIN
    BEGIN
        r := json_populate_record(NULL::pix.credential, credential::json);
    EXCEPTION WHEN others THEN
        RAISE EXCEPTION 'invalid credential row' USING ERRCODE = '22023', DETAIL = SQLERRM;
    END;
    IF r.credential_id IS NULL OR r.kind IS NULL OR r.lookup IS NULL OR r.created_at IS NULL
       OR r.created_by IS NULL THEN
        RAISE EXCEPTION 'invalid credential row' USING ERRCODE = '22023',
            DETAIL = 'credential_id, kind, lookup, created_at and created_by are required.';
    END IF;
    IF r.revoked_at IS NOT NULL OR r.revoked_by IS NOT NULL THEN
        RAISE EXCEPTION 'invalid credential row' USING ERRCODE = '22023',
            DETAIL = 'Only a new, active credential is copied; revocations run on every shard.';
    END IF;
    IF r.kind NOT IN ('cert', 'token') OR r.admin IS DISTINCT FROM (r.ispb IS NULL) THEN
        RAISE EXCEPTION 'invalid credential row' USING ERRCODE = '22023',
            DETAIL = 'kind is cert or token; an admin credential has no ISPB, any other one has.';
    END IF;
    IF r.ispb IS NOT NULL THEN
        PERFORM pix.ispb_arg(r.ispb);
    END IF;
    IF r.kind = 'cert' THEN
        r.fingerprint := pix.fingerprint_arg(r.fingerprint);
        IF r.lookup IS DISTINCT FROM pix.lookup_key('cert:' || r.fingerprint) THEN
            RAISE EXCEPTION 'invalid credential row' USING ERRCODE = '22023',
                DETAIL = 'A certificate''s digest must be the digest of its fingerprint.';
        END IF;
    ELSIF r.fingerprint IS NOT NULL OR octet_length(r.lookup) <> 32 THEN
        RAISE EXCEPTION 'invalid credential row' USING ERRCODE = '22023',
            DETAIL = 'A token has no fingerprint and a 32-byte digest.';
    END IF;
    IF r.created_at > clock_timestamp() + interval '1 minute'
       OR r.created_at < clock_timestamp() - interval '1 day' THEN
        RAISE EXCEPTION 'invalid credential row' USING ERRCODE = '22023',
            DETAIL = 'created_at must be the time the credential was just issued.';
    END IF;
    IF r.created_by !~ '^[^[:cntrl:]]{1,63}$' THEN
        RAISE EXCEPTION 'invalid credential row' USING ERRCODE = '22023',
            DETAIL = 'created_by must be a role name.';
    END IF;
    r.label := coalesce(r.label, '');
    INSERT INTO pix.credential OVERRIDING SYSTEM VALUE SELECT (r).* ON CONFLICT DO NOTHING;
    IF FOUND THEN
        PERFORM pix.audit('credential_copy', r.ispb, r.credential_id,
                          format('%s; issued by %s at %s', coalesce('fingerprint ' || r.fingerprint,
                                 'label ' || r.label), r.created_by, r.created_at));
        RETURN true;
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pix.credential c WHERE c.credential_id = r.credential_id
                                                   AND c.lookup = r.lookup) THEN
        RAISE EXCEPTION 'another credential with this digest is registered on this shard' USING ERRCODE = '23505',
            DETAIL = format('Credential %s could not be copied to %s.', r.credential_id, current_database());
    END IF;
    RETURN false;
END
$$;

REVOKE ALL ON FUNCTION pix_shard.credential_get(bytea, bigint), pix_shard.credential_import(text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION pix_shard.credential_get(bytea, bigint) TO pix_admin;
REVOKE EXECUTE ON FUNCTION pix_shard.credential_import(text) FROM pix_admin;
GRANT EXECUTE ON FUNCTION pix_shard.credential_import(text) TO pix_credential_copy;
\endif
