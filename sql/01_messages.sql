--
-- 01_messages: what the database accepts as a Pix message, and the JSON it serves.
--
-- Every INSERT into pix.message goes through one C trigger that checks each field against the
-- contract (docs/contract.md, "The message") and renders `body`: the JSON object exactly as HTTP serves it.
-- A refused row raises PX006 "invalid Pix message" with a detail naming the field by its JSON name.
--
-- Recipients (recebedor.ispb) used here: 00000000 (the SPEC example) and 01000001.
--
CREATE SCHEMA t01;
SET search_path = t01, public;

-- The SPEC's example message, column by column. Each check below changes a few fields of it.
CREATE FUNCTION example() RETURNS jsonb LANGUAGE sql IMMUTABLE AS $$
    SELECT '{"end_to_end_id": "E320749862024022119277T3lEBbUM0z", "valor": "90.20",
             "pagador_nome": "Marcos José", "pagador_cpf_cnpj": "98716278151",
             "pagador_ispb": "32074986", "pagador_agencia": "0001", "pagador_conta": "1231231",
             "pagador_tipo_conta": "CACC",
             "recebedor_nome": "Flavio José", "recebedor_cpf_cnpj": "77615678242",
             "recebedor_ispb": "00000000", "recebedor_agencia": "0361", "recebedor_conta": "1210098",
             "recebedor_tipo_conta": "SVGS",
             "campo_livre": "", "tx_id": "h7a786d8a7s6gd1hgs",
             "data_hora_pagamento": "2022-07-23T19:47:18.108Z"}'::jsonb
$$;

-- Inserts the example with `changes` (keys are column names) and returns the rendered body.
CREATE FUNCTION insert_example(changes jsonb) RETURNS text LANGUAGE sql AS $$
    INSERT INTO pix.message (end_to_end_id, valor, pagador_nome, pagador_cpf_cnpj, pagador_ispb,
                             pagador_agencia, pagador_conta, pagador_tipo_conta, recebedor_nome,
                             recebedor_cpf_cnpj, recebedor_ispb, recebedor_agencia,
                             recebedor_conta, recebedor_tipo_conta, campo_livre, tx_id,
                             data_hora_pagamento)
    SELECT end_to_end_id, valor, pagador_nome, pagador_cpf_cnpj, pagador_ispb, pagador_agencia,
           pagador_conta, pagador_tipo_conta, recebedor_nome, recebedor_cpf_cnpj,
           recebedor_ispb, recebedor_agencia, recebedor_conta, recebedor_tipo_conta,
           campo_livre, tx_id, data_hora_pagamento
      FROM jsonb_populate_record(NULL::pix.message, example() || changes)
    RETURNING body
$$;

-- Inserts the example (under another endToEndId) with `changes` applied (a JSON null makes the
-- column NULL) and returns the rendered body, or the error: SQLSTATE, message and detail. Accepted
-- rows are rolled back at once (by raising and catching ZZ000): probes leave nothing behind.
CREATE FUNCTION probe(changes jsonb, OUT result text) LANGUAGE plpgsql AS $$
DECLARE
    detail text;
BEGIN
    BEGIN
        result := insert_example('{"end_to_end_id": "E32074986202402211927probe000001"}' || changes);
        RAISE EXCEPTION USING ERRCODE = 'ZZ000';
    EXCEPTION
        WHEN SQLSTATE 'ZZ000' THEN
            NULL;                       -- accepted: result holds the body
        WHEN OTHERS THEN
            GET STACKED DIAGNOSTICS detail = PG_EXCEPTION_DETAIL;
            result := SQLSTATE || ' ' || SQLERRM || coalesce(': ' || nullif(detail, ''), '');
    END;
END
$$;

-- 'accepted', or the error.
CREATE FUNCTION verdict(changes jsonb) RETURNS text LANGUAGE sql AS $$
    SELECT CASE WHEN r LIKE '{%' THEN 'accepted' ELSE r END FROM probe(changes) AS r
$$;

-- Inserts the example with `changes` for real (the message stays: it is enqueued).
CREATE FUNCTION enqueue(changes jsonb) RETURNS void LANGUAGE sql AS $$
    SELECT insert_example(changes)
$$;

-- Runs a statement and shows its outcome: 'ok' or SQLSTATE, message and detail.
CREATE FUNCTION try(statement text) RETURNS text LANGUAGE plpgsql AS $$
DECLARE
    detail text;
BEGIN
    EXECUTE statement;
    RETURN 'ok';
EXCEPTION WHEN OTHERS THEN
    GET STACKED DIAGNOSTICS detail = PG_EXCEPTION_DETAIL;
    RETURN SQLSTATE || ' ' || SQLERRM || coalesce(': ' || nullif(detail, ''), '');
END
$$;

--
-- 1. The contract's example is accepted and served exactly as docs/contract.md prints it (one line, no spaces,
--    fields in the contract's order, valor with two decimals, UTF-8 as is).
--
SELECT enqueue('{}');
SELECT body FROM pix.message WHERE end_to_end_id = 'E320749862024022119277T3lEBbUM0z';
SELECT body = '{"endToEndId":"E320749862024022119277T3lEBbUM0z","valor":90.20,'
              '"pagador":{"nome":"Marcos José","cpfCnpj":"98716278151","ispb":"32074986",'
                         '"agencia":"0001","contaTransacional":"1231231","tipoConta":"CACC"},'
              '"recebedor":{"nome":"Flavio José","cpfCnpj":"77615678242","ispb":"00000000",'
                           '"agencia":"0361","contaTransacional":"1210098","tipoConta":"SVGS"},'
              '"campoLivre":"","txId":"h7a786d8a7s6gd1hgs",'
              '"dataHoraPagamento":"2022-07-23T19:47:18.108Z"}' AS spec_example_exact
  FROM pix.message WHERE end_to_end_id = 'E320749862024022119277T3lEBbUM0z';

-- Field order, as JSON keys appear in the body (json, unlike jsonb, keeps the order).
SELECT string_agg(k, ',') AS top_level_keys
  FROM pix.message, json_object_keys(body::json) AS k
 WHERE end_to_end_id = 'E320749862024022119277T3lEBbUM0z';
SELECT string_agg(k, ',') AS party_keys
  FROM pix.message, json_object_keys(body::json -> 'pagador') AS k
 WHERE end_to_end_id = 'E320749862024022119277T3lEBbUM0z';

-- The INSERT enqueued it: one ready row for its recipient.
SELECT r.ispb, m.end_to_end_id
  FROM pix.ready r JOIN pix.message m ON m.id = r.message_id
 WHERE r.ispb = '00000000';

-- endToEndId is the collectors' idempotency key: unique.
SELECT try($$SELECT t01.enqueue('{}')$$) AS duplicate_end_to_end_id;

--
-- 2. Every field rule, each with the values just inside and just outside it.
--
SELECT rule, verdict(changes::jsonb)
  FROM (VALUES
    -- endToEndId: E + payer ISPB + yyyyMMddHHmm (a real UTC date and time) + 11 ASCII alphanumerics
    ('e2e: 32 chars',            '{"end_to_end_id": "E32074986202402291927abcdeFGHIJ0"}'),
    ('e2e: 31 chars',            '{"end_to_end_id": "E320749862024022119277T3lEBbUM0"}'),
    ('e2e: 33 chars',            '{"end_to_end_id": "E320749862024022119277T3lEBbUM0zz"}'),
    ('e2e: starts with e',       '{"end_to_end_id": "e320749862024022119277T3lEBbUM0z"}'),
    ('e2e: other ISPB',          '{"end_to_end_id": "E320749872024022119277T3lEBbUM0z"}'),
    ('e2e: ISPB not digits',     '{"end_to_end_id": "E3207498X2024022119277T3lEBbUM0z"}'),
    ('e2e: month 13',            '{"end_to_end_id": "E320749862024132119277T3lEBbUM0z"}'),
    ('e2e: 2023-02-29',          '{"end_to_end_id": "E320749862023022919277T3lEBbUM0z"}'),
    ('e2e: hour 24',             '{"end_to_end_id": "E320749862024022124007T3lEBbUM0z"}'),
    ('e2e: minute 60',           '{"end_to_end_id": "E320749862024022119607T3lEBbUM0z"}'),
    ('e2e: suffix with -',       '{"end_to_end_id": "E320749862024022119277T3lEB-UM0z"}'),
    ('e2e: suffix with é',       '{"end_to_end_id": "E320749862024022119277T3lEBéM0z"}'),
    ('e2e: NULL',                '{"end_to_end_id": null}'),
    -- valor: positive, at most two decimals (never rounded), below 10^13; stored with scale 2
    ('valor: 0.01',              '{"valor": "0.01"}'),
    ('valor: 90.2',              '{"valor": "90.2"}'),
    ('valor: 90.200',            '{"valor": "90.200"}'),
    ('valor: 5',                 '{"valor": "5"}'),
    ('valor: 9999999999999.99',  '{"valor": "9999999999999.99"}'),
    ('valor: 10000000000000',    '{"valor": "10000000000000"}'),
    ('valor: 90.201',            '{"valor": "90.201"}'),
    ('valor: 0.001',             '{"valor": "0.001"}'),
    ('valor: 0',                 '{"valor": "0"}'),
    ('valor: 0.00',              '{"valor": "0.00"}'),
    ('valor: -1.00',             '{"valor": "-1.00"}'),
    ('valor: NaN',               '{"valor": "NaN"}'),
    ('valor: Infinity',          '{"valor": "Infinity"}'),
    ('valor: NULL',              '{"valor": null}'),
    -- nome: 1 to 140 characters (code points, not bytes), UTF-8
    ('nome: 1 char',             '{"pagador_nome": "A"}'),
    ('nome: 140 x é',            jsonb_build_object('pagador_nome', repeat('é', 140))::text),
    ('nome: 140 x emoji',        jsonb_build_object('recebedor_nome', repeat('😀', 140))::text),
    ('nome: 141 x a',            jsonb_build_object('pagador_nome', repeat('a', 141))::text),
    ('nome: 141 x é',            jsonb_build_object('recebedor_nome', repeat('é', 141))::text),
    ('nome: empty',              '{"pagador_nome": ""}'),
    ('nome: NULL',               '{"recebedor_nome": null}'),
    -- cpfCnpj: 11 digits (CPF) or 14 (CNPJ), valid check digits, not one repeated digit
    ('cpf: valid',               '{"pagador_cpf_cnpj": "52998224725"}'),
    ('cpf: bad 1st check digit', '{"pagador_cpf_cnpj": "52998224715"}'),
    ('cpf: bad 2nd check digit', '{"pagador_cpf_cnpj": "52998224726"}'),
    ('cpf: 11111111111',         '{"pagador_cpf_cnpj": "11111111111"}'),
    ('cpf: formatted',           '{"pagador_cpf_cnpj": "529.982.247-25"}'),
    ('cpf: 10 digits',           '{"pagador_cpf_cnpj": "5299822472"}'),
    ('cpf: 12 digits',           '{"pagador_cpf_cnpj": "529982247250"}'),
    ('cnpj: valid',              '{"recebedor_cpf_cnpj": "11222333000181"}'),
    ('cnpj: bad check digit',    '{"recebedor_cpf_cnpj": "11222333000182"}'),
    ('cnpj: 00000000000000',     '{"recebedor_cpf_cnpj": "00000000000000"}'),
    ('cnpj: formatted',          '{"recebedor_cpf_cnpj": "11.222.333/0001-81"}'),
    ('cpfCnpj: NULL',            '{"recebedor_cpf_cnpj": null}'),
    -- ispb: exactly 8 ASCII digits (the payer's also opens the endToEndId)
    ('pagador ispb: 7 digits',   '{"pagador_ispb": "3207498"}'),
    ('recebedor ispb: 9 digits', '{"recebedor_ispb": "000000000"}'),
    ('recebedor ispb: letter',   '{"recebedor_ispb": "0000000a"}'),
    ('recebedor ispb: fullwidth','{"recebedor_ispb": "０００００００１"}'),
    ('recebedor ispb: NULL',     '{"recebedor_ispb": null}'),
    -- agencia: exactly 4 digits
    ('agencia: 0000',            '{"pagador_agencia": "0000"}'),
    ('agencia: 3 digits',        '{"pagador_agencia": "001"}'),
    ('agencia: 5 digits',        '{"recebedor_agencia": "00001"}'),
    ('agencia: letters',         '{"recebedor_agencia": "abcd"}'),
    -- contaTransacional: 1 to 20 digits
    ('conta: 1 digit',           '{"pagador_conta": "0"}'),
    ('conta: 20 digits',         '{"recebedor_conta": "12345678901234567890"}'),
    ('conta: 21 digits',         '{"recebedor_conta": "123456789012345678901"}'),
    ('conta: empty',             '{"pagador_conta": ""}'),
    ('conta: with dash',         '{"pagador_conta": "123123-1"}'),
    -- tipoConta: CACC, SVGS, SLRY or TRAN, exactly
    ('tipo: CACC',               '{"recebedor_tipo_conta": "CACC"}'),
    ('tipo: SVGS',               '{"pagador_tipo_conta": "SVGS"}'),
    ('tipo: SLRY',               '{"pagador_tipo_conta": "SLRY"}'),
    ('tipo: TRAN',               '{"recebedor_tipo_conta": "TRAN"}'),
    ('tipo: cacc',               '{"pagador_tipo_conta": "cacc"}'),
    ('tipo: CURR',               '{"recebedor_tipo_conta": "CURR"}'),
    ('tipo: empty',              '{"recebedor_tipo_conta": ""}'),
    -- campoLivre: 0 to 140 characters
    ('campoLivre: 140 x ç',      jsonb_build_object('campo_livre', repeat('ç', 140))::text),
    ('campoLivre: 141 x a',      jsonb_build_object('campo_livre', repeat('a', 141))::text),
    ('campoLivre: NULL',         '{"campo_livre": null}'),
    -- txId: 0 to 35 ASCII alphanumerics
    ('txId: empty',              '{"tx_id": ""}'),
    ('txId: 35 alnum',           jsonb_build_object('tx_id', repeat('aZ9', 11) || 'xy')::text),
    ('txId: 36 alnum',           jsonb_build_object('tx_id', repeat('aZ9', 12))::text),
    ('txId: with dash',          '{"tx_id": "abc-123"}'),
    ('txId: with ç',             '{"tx_id": "transação"}'),
    ('txId: NULL',               '{"tx_id": null}'),
    -- dataHoraPagamento: a finite time, years 0001 to 9999
    ('dataHora: another zone',   '{"data_hora_pagamento": "2022-07-23 16:47:18.108-03"}'),
    ('dataHora: infinity',       '{"data_hora_pagamento": "infinity"}'),
    ('dataHora: year 10000',     '{"data_hora_pagamento": "10000-01-01 00:00:00Z"}'),
    ('dataHora: BC',             '{"data_hora_pagamento": "0044-03-15 12:00:00+00 BC"}'),
    ('dataHora: NULL',           '{"data_hora_pagamento": null}')
  ) AS t(rule, changes);

-- A multi-row INSERT is one statement: one bad row refuses them all, nothing is enqueued.
SELECT try($$
    INSERT INTO pix.message (end_to_end_id, valor, pagador_nome, pagador_cpf_cnpj, pagador_ispb,
                             pagador_agencia, pagador_conta, pagador_tipo_conta, recebedor_nome,
                             recebedor_cpf_cnpj, recebedor_ispb, recebedor_agencia,
                             recebedor_conta, recebedor_tipo_conta, campo_livre, tx_id,
                             data_hora_pagamento)
    VALUES ('E32074986202401011200AAAAAAAAAA1', 1.00, 'A', '52998224725', '32074986', '0001', '1',
            'CACC', 'B', '11222333000181', '01000001', '0001', '2', 'CACC', '', '', now()),
           ('E32074986202401011200AAAAAAAAAA2', 1.00, 'A', '52998224725', '32074986', '0001', '1',
            'CACC', 'B', '11222333000181', '01000001', '0001', '2', 'XXXX', '', '', now())
$$) AS one_bad_row;
SELECT count(*) AS messages_for_01000001 FROM pix.message WHERE recebedor_ispb = '01000001';

--
-- 3. What is stored is what is served: valor at scale 2 (90.2 -> 90.20), the time in UTC and
--    truncated to milliseconds (the served precision), and a body the client may not choose.
--
SELECT enqueue('{"end_to_end_id": "E32074986202401011200valor000001", "valor": "90.2",
                 "recebedor_ispb": "01000001"}');
SELECT enqueue('{"end_to_end_id": "E32074986202401011200valor000002", "valor": "7.500",
                 "recebedor_ispb": "01000001",
                 "data_hora_pagamento": "2024-01-01 09:00:00.123999-03"}');
SELECT enqueue('{"end_to_end_id": "E32074986202401011200valor000003", "valor": "1234567890123.45",
                 "recebedor_ispb": "01000001",
                 "data_hora_pagamento": "1999-12-31 23:59:59.9999Z"}');
SELECT end_to_end_id, valor::text AS stored_valor,
       substring(body FROM '"valor":([^,]*),') AS served_valor,
       data_hora_pagamento AT TIME ZONE 'UTC' AS stored_utc,
       body::json ->> 'dataHoraPagamento' AS served_time
  FROM pix.message WHERE end_to_end_id LIKE 'E32074986202401011200valor%' ORDER BY id;

-- A body given in the INSERT is replaced by the rendered one.
INSERT INTO pix.message (end_to_end_id, valor, pagador_nome, pagador_cpf_cnpj, pagador_ispb,
                         pagador_agencia, pagador_conta, pagador_tipo_conta, recebedor_nome,
                         recebedor_cpf_cnpj, recebedor_ispb, recebedor_agencia, recebedor_conta,
                         recebedor_tipo_conta, campo_livre, tx_id, data_hora_pagamento, body)
VALUES ('E32074986202401011200bodyfake001', 1.00, 'A', '52998224725', '32074986', '0001', '1', 'CACC',
        'B', '11222333000181', '01000001', '0001', '2', 'TRAN', '', '', '2024-01-01T12:00:00Z',
        '{"valor": 1000000.00}');
SELECT body FROM pix.message WHERE end_to_end_id = 'E32074986202401011200bodyfake001';

--
-- 4. JSON escaping: quotes, backslashes and control characters are escaped (RFC 8259), every
--    other character, UTF-8 included, is written as it is. Parsing the body gives back each text.
--
SELECT enqueue(jsonb_build_object(
    'end_to_end_id', 'E32074986202401011200escape00001', 'recebedor_ispb', '01000001',
    'pagador_nome', E'Ana "Tica" D\'Ávila \\ C:\\pix\\ /slash/',
    'recebedor_nome', E'tab\there new\nline cr\r bs\b ff\f nul-less \x01 \x1f del\x7f',
    'campo_livre', E'ção ñ ü € 中文 😀 \u2028 \u2029 <script>&amp;',
    'tx_id', 'ABCxyz0123456789'));
SELECT body FROM pix.message WHERE end_to_end_id = 'E32074986202401011200escape00001';
SELECT body::json -> 'pagador' ->> 'nome' = E'Ana "Tica" D\'Ávila \\ C:\\pix\\ /slash/' AS pagador_round_trip,
       body::json -> 'recebedor' ->> 'nome'
           = E'tab\there new\nline cr\r bs\b ff\f nul-less \x01 \x1f del\x7f' AS recebedor_round_trip,
       body::json ->> 'campoLivre' = E'ção ñ ü € 中文 😀 \u2028 \u2029 <script>&amp;' AS campo_livre_round_trip,
       body::jsonb = jsonb_build_object(
           'endToEndId', end_to_end_id, 'valor', valor,
           'pagador', jsonb_build_object('nome', pagador_nome, 'cpfCnpj', pagador_cpf_cnpj,
                'ispb', pagador_ispb, 'agencia', pagador_agencia,
                'contaTransacional', pagador_conta, 'tipoConta', pagador_tipo_conta),
           'recebedor', jsonb_build_object('nome', recebedor_nome, 'cpfCnpj', recebedor_cpf_cnpj,
                'ispb', recebedor_ispb, 'agencia', recebedor_agencia,
                'contaTransacional', recebedor_conta, 'tipoConta', recebedor_tipo_conta),
           'campoLivre', campo_livre, 'txId', tx_id,
           'dataHoraPagamento', to_char(data_hora_pagamento AT TIME ZONE 'UTC',
                                        'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"')) AS body_matches_columns
  FROM pix.message WHERE end_to_end_id = 'E32074986202401011200escape00001';

-- Every body of this suite is valid JSON whose fields equal the stored columns.
SELECT count(*) AS messages,
       bool_and(body::jsonb = jsonb_build_object(
           'endToEndId', end_to_end_id, 'valor', valor,
           'pagador', jsonb_build_object('nome', pagador_nome, 'cpfCnpj', pagador_cpf_cnpj,
                'ispb', pagador_ispb, 'agencia', pagador_agencia,
                'contaTransacional', pagador_conta, 'tipoConta', pagador_tipo_conta),
           'recebedor', jsonb_build_object('nome', recebedor_nome, 'cpfCnpj', recebedor_cpf_cnpj,
                'ispb', recebedor_ispb, 'agencia', recebedor_agencia,
                'contaTransacional', recebedor_conta, 'tipoConta', recebedor_tipo_conta),
           'campoLivre', campo_livre, 'txId', tx_id,
           'dataHoraPagamento', to_char(data_hora_pagamento AT TIME ZONE 'UTC',
                                        'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"'))) AS bodies_match_columns,
       bool_and(body ~ '"valor":[1-9][0-9]*\.[0-9]{2},' OR body ~ '"valor":0\.[0-9]{2},') AS two_decimals
  FROM pix.message WHERE recebedor_ispb IN ('00000000', '01000001');

--
-- 5. Messages are immutable: any UPDATE is refused with PX007, even one that changes nothing.
--
SELECT try($$UPDATE pix.message SET valor = 1000.00
              WHERE end_to_end_id = 'E320749862024022119277T3lEBbUM0z'$$) AS update_valor;
SELECT try($$UPDATE pix.message SET body = '{}'
              WHERE end_to_end_id = 'E320749862024022119277T3lEBbUM0z'$$) AS update_body;
SELECT try($$UPDATE pix.message SET recebedor_ispb = recebedor_ispb$$) AS update_nothing;
SELECT valor, body::json ->> 'endToEndId' AS still
  FROM pix.message WHERE end_to_end_id = 'E320749862024022119277T3lEBbUM0z';

-- The trigger functions cannot be called other than as the triggers they are.
SELECT try($$SELECT pix.message_before_insert()$$) AS call_trigger_function;

DROP SCHEMA t01 CASCADE;
