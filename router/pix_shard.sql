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
CREATE OR REPLACE FUNCTION pix_shard.credential_import(credential text) RETURNS boolean
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    r pix.credential := json_populate_record(NULL::pix.credential, credential::json);
BEGIN
    IF r.credential_id IS NULL THEN
        RAISE EXCEPTION 'invalid credential row' USING ERRCODE = '22023';
    END IF;
    INSERT INTO pix.credential OVERRIDING SYSTEM VALUE SELECT (r).* ON CONFLICT DO NOTHING;
    IF FOUND THEN
        PERFORM pix.audit('credential_copy', r.ispb, r.credential_id,
                          coalesce('fingerprint ' || r.fingerprint, 'label ' || r.label));
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
GRANT EXECUTE ON FUNCTION pix_shard.credential_get(bytea, bigint), pix_shard.credential_import(text) TO pix_admin;
\endif
