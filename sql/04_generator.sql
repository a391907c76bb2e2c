--
-- 04_generator: pix_generate_messages(ispb, number) inserts `number` random, realistic messages
-- addressed to `ispb` and returns how many it inserted.
--
-- The messages are random, so this suite prints only what holds for every one of them: each rule
-- of the contract is re-checked here in SQL, independently of the C validator (CPF and CNPJ check
-- digits are recomputed from scratch), and each body is compared with the stored columns.
--
-- Recipients used here: 04000001 .. 04000009.
--
CREATE SCHEMA t04;
SET search_path = t04, public;

-- The modulo-11 check digit of the first cardinality(weights) digits of `digits`.
CREATE FUNCTION mod11(digits text, weights int[]) RETURNS int LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE WHEN s % 11 < 2 THEN 0 ELSE 11 - s % 11 END
      FROM (SELECT sum(substr(digits, i, 1)::int * weights[i]) AS s
              FROM generate_subscripts(weights, 1) AS i) AS x
$$;

-- A CPF: 11 digits, not one digit repeated, two check digits (weights 10..2, then 11..2).
CREATE FUNCTION cpf_ok(d text) RETURNS boolean LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE WHEN d !~ '^[0-9]{11}$' OR d ~ '^(.)\1*$' THEN false
                ELSE substr(d, 10, 1)::int = mod11(d, '{10,9,8,7,6,5,4,3,2}')
                 AND substr(d, 11, 1)::int = mod11(d, '{11,10,9,8,7,6,5,4,3,2}') END
$$;

-- A CNPJ: 14 digits, not one digit repeated, two check digits (weights 5..2,9..2, then 6..2,9..2).
CREATE FUNCTION cnpj_ok(d text) RETURNS boolean LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE WHEN d !~ '^[0-9]{14}$' OR d ~ '^(.)\1*$' THEN false
                ELSE substr(d, 13, 1)::int = mod11(d, '{5,4,3,2,9,8,7,6,5,4,3,2}')
                 AND substr(d, 14, 1)::int = mod11(d, '{6,5,4,3,2,9,8,7,6,5,4,3,2}') END
$$;

-- Runs a statement and shows its outcome: what it returned, or SQLSTATE, message and detail.
CREATE FUNCTION try(statement text) RETURNS text LANGUAGE plpgsql AS $$
DECLARE
    result text;
    detail text;
BEGIN
    EXECUTE statement INTO result;
    RETURN 'ok: ' || coalesce(result, 'NULL');
EXCEPTION WHEN OTHERS THEN
    GET STACKED DIAGNOSTICS detail = PG_EXCEPTION_DETAIL;
    RETURN SQLSTATE || ' ' || SQLERRM || coalesce(': ' || nullif(detail, ''), '');
END
$$;

-- The check-digit functions themselves, on known values (the SPEC example's two CPFs included).
SELECT d, cpf_ok(d) AS cpf, cnpj_ok(d) AS cnpj
  FROM unnest(ARRAY['98716278151', '77615678242', '52998224725', '52998224726', '11111111111',
                    '11222333000181', '11222333000182', '00000000000000', '1122233300018']) AS d;

--
-- 1. A thousand messages: all inserted, all enqueued for their recipient.
--
SELECT pix_generate_messages('04000001', 1000) AS inserted;
SELECT count(*) AS messages FROM pix.message WHERE recebedor_ispb = '04000001';
SELECT count(*) AS ready FROM pix.ready WHERE ispb = '04000001';

--
-- 2. Each message keeps every rule of the contract. Each line counts the messages that break one
--    rule: all zeros.
--
SELECT rule, count(*) FILTER (WHERE NOT ok) AS broken
  FROM pix.message m
 CROSS JOIN LATERAL (VALUES
    (1, 'endToEndId shape',   m.end_to_end_id ~ '^E[0-9]{8}[0-9]{12}[A-Za-z0-9]{11}$'),
    (2, 'endToEndId ISPB',    substr(m.end_to_end_id, 2, 8) = m.pagador_ispb),
    (3, 'endToEndId minute',  to_char(to_timestamp(substr(m.end_to_end_id, 10, 12), 'YYYYMMDDHH24MI'),
                                      'YYYYMMDDHH24MI') = substr(m.end_to_end_id, 10, 12)),
    (4, 'valor positive',     m.valor > 0 AND m.valor < 1e13),
    (5, 'valor cents',        m.valor = round(m.valor, 2) AND scale(m.valor) = 2),
    (6, 'pagador nome',       char_length(m.pagador_nome) BETWEEN 1 AND 140),
    (7, 'recebedor nome',     char_length(m.recebedor_nome) BETWEEN 1 AND 140),
    (8, 'pagador cpfCnpj',    cpf_ok(m.pagador_cpf_cnpj) OR cnpj_ok(m.pagador_cpf_cnpj)),
    (9, 'recebedor cpfCnpj',  cpf_ok(m.recebedor_cpf_cnpj) OR cnpj_ok(m.recebedor_cpf_cnpj)),
    (10, 'pagador ispb',      m.pagador_ispb ~ '^[0-9]{8}$'),
    (11, 'recebedor ispb',    m.recebedor_ispb = '04000001'),
    (12, 'agencias',          m.pagador_agencia ~ '^[0-9]{4}$' AND m.recebedor_agencia ~ '^[0-9]{4}$'),
    (13, 'contas',            m.pagador_conta ~ '^[0-9]{1,20}$' AND m.recebedor_conta ~ '^[0-9]{1,20}$'),
    (14, 'tipos de conta',    m.pagador_tipo_conta IN ('CACC', 'SVGS', 'SLRY', 'TRAN')
                              AND m.recebedor_tipo_conta IN ('CACC', 'SVGS', 'SLRY', 'TRAN')),
    (15, 'campoLivre',        char_length(m.campo_livre) <= 140),
    (16, 'txId',              m.tx_id ~ '^[A-Za-z0-9]{0,35}$'),
    (17, 'dataHoraPagamento', m.data_hora_pagamento <= clock_timestamp()
                              AND m.data_hora_pagamento > now() - interval '1 day'
                              AND date_trunc('milliseconds', m.data_hora_pagamento) = m.data_hora_pagamento),
    (18, 'body = columns',    m.body::jsonb = jsonb_build_object(
           'endToEndId', m.end_to_end_id, 'valor', m.valor,
           'pagador', jsonb_build_object('nome', m.pagador_nome, 'cpfCnpj', m.pagador_cpf_cnpj,
                'ispb', m.pagador_ispb, 'agencia', m.pagador_agencia,
                'contaTransacional', m.pagador_conta, 'tipoConta', m.pagador_tipo_conta),
           'recebedor', jsonb_build_object('nome', m.recebedor_nome, 'cpfCnpj', m.recebedor_cpf_cnpj,
                'ispb', m.recebedor_ispb, 'agencia', m.recebedor_agencia,
                'contaTransacional', m.recebedor_conta, 'tipoConta', m.recebedor_tipo_conta),
           'campoLivre', m.campo_livre, 'txId', m.tx_id,
           'dataHoraPagamento', to_char(m.data_hora_pagamento AT TIME ZONE 'UTC',
                                        'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"'))),
    (19, 'body field order',  (SELECT string_agg(k, ',') FROM json_object_keys(m.body::json) AS k)
                              = 'endToEndId,valor,pagador,recebedor,campoLivre,txId,dataHoraPagamento'
                              AND (SELECT string_agg(k, ',') FROM json_object_keys(m.body::json -> 'pagador') AS k)
                              = 'nome,cpfCnpj,ispb,agencia,contaTransacional,tipoConta'),
    (20, 'body valor',        substring(m.body FROM '"valor":([^,]*),') = m.valor::text
                              AND m.valor::text ~ '^(0|[1-9][0-9]*)\.[0-9]{2}$')
  ) AS r(n, rule, ok)
 WHERE m.recebedor_ispb = '04000001'
 GROUP BY n, rule
 ORDER BY n;

-- All endToEndIds differ (they are unique in the table anyway).
SELECT count(DISTINCT end_to_end_id) AS distinct_end_to_end_ids
  FROM pix.message WHERE recebedor_ispb = '04000001';

--
-- 3. Realistic: a thousand messages show the variety of real traffic (every line true, except by
--    a chance far below one in a billion).
--
SELECT count(DISTINCT t) = 4 AS all_four_account_types
  FROM pix.message, LATERAL (VALUES (pagador_tipo_conta), (recebedor_tipo_conta)) AS v(t)
 WHERE recebedor_ispb = '04000001';
SELECT count(*) FILTER (WHERE char_length(pagador_cpf_cnpj) = 11) > 500 AS mostly_people_pay,
       count(*) FILTER (WHERE char_length(recebedor_cpf_cnpj) = 14) > 50 AS some_companies_receive,
       count(DISTINCT pagador_ispb) >= 5 AS several_payer_institutions,
       count(*) FILTER (WHERE pagador_ispb = '04000001') < 1000 AS not_only_self,
       count(DISTINCT pagador_nome) > 100 AS many_names,
       count(*) FILTER (WHERE pagador_nome ~ '[À-ÿ]') > 50 AS accented_names,
       count(DISTINCT valor) > 500 AS many_amounts,
       count(*) FILTER (WHERE valor < 1000) > 500 AS mostly_everyday_amounts,
       count(*) FILTER (WHERE tx_id = '') BETWEEN 1 AND 999 AS some_tx_ids,
       count(*) FILTER (WHERE campo_livre <> '') BETWEEN 1 AND 999 AS some_notes
  FROM pix.message WHERE recebedor_ispb = '04000001';

--
-- 4. Generated messages are delivered like any other: the oldest ten, as an array of the stored
--    bodies, byte for byte.
--
CREATE TABLE oldest AS
SELECT '[' || string_agg(m.body, ',' ORDER BY m.id) || ']' AS body
  FROM (SELECT message_id FROM pix.ready WHERE ispb = '04000001' ORDER BY message_id LIMIT 10) AS r
  JOIN pix.message m ON m.id = r.message_id;
CREATE TABLE got AS SELECT * FROM pix_stream_start('04000001', 10);
SELECT got.message_count, got.body = oldest.body AS same_bytes FROM got, oldest;
SELECT pix_stream_stop('04000001', (SELECT interation_id FROM got)) AS confirmed;
SELECT count(*) AS ready FROM pix.ready WHERE ispb = '04000001';

--
-- 5. number is 1 .. pix.max_generate (default 10 000); anything else, NULL included, is PX002 and
--    inserts nothing. The ISPB is checked first (PX001), as in every function.
--
SHOW pix.max_generate;
SELECT n, try(format('SELECT pix_generate_messages(%L, %s)', '04000002', n)) AS result
  FROM unnest(ARRAY['0', '-1', '10001', '2147483647', '-2147483648', 'NULL', '1', '10000']) AS n;
SELECT count(*) AS messages FROM pix.message WHERE recebedor_ispb = '04000002';
SELECT ispb, try(format('SELECT pix_generate_messages(%L, 1)', ispb)) AS result
  FROM unnest(ARRAY['0400000', '040000011', 'O4000001', '', ' 04000001', '04000001 ',
                    '０４０００００１', NULL]) AS ispb;
SELECT try($$SELECT pix_generate_messages('bad', 0)$$) AS both_bad;
SELECT try($$SELECT pix_generate_messages(repeat('9', 1000000), 1)$$) AS huge_ispb;
-- The maximum is configurable (superuser).
SET pix.max_generate = 5;
SELECT try($$SELECT pix_generate_messages('04000003', 6)$$) AS six,
       try($$SELECT pix_generate_messages('04000003', 5)$$) AS five;
RESET pix.max_generate;
SELECT count(*) AS messages FROM pix.message WHERE recebedor_ispb = '04000003';

-- A call is one statement: rolled back, it leaves nothing.
BEGIN;
SELECT pix_generate_messages('04000004', 100) AS inserted;
ROLLBACK;
SELECT count(*) AS messages, (SELECT count(*) FROM pix.ready WHERE ispb = '04000004') AS ready
  FROM pix.message WHERE recebedor_ispb = '04000004';

DROP SCHEMA t04 CASCADE;
