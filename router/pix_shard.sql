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
