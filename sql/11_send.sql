--
-- 11_send: pix_messages_send(ispb, body, credential), what POST /api/pix/{ispb}/msgs calls.
--
-- The body is one message object or an array of 1..1000, in the stream's format. Every message is
-- judged as an INSERT is (PX010 names index and field of the first problem), every pagador.ispb
-- must be the sender; nothing is stored unless everything is valid. Idempotent by endToEndId: the
-- same content again is a duplicate, other content is PX011, also after the history purge, until
-- pix.send_idempotency_horizon.
--
-- Senders used here: 11000001 (A), 11000002. Receivers: 11000091..11000099.
--
CREATE SCHEMA t11;
SET search_path = t11, public;

\i sql/include/try.sql

-- A valid message n from payer to receiver, as the stream serves it (jsonb: key order is not
-- the served one, which the parser must not care about).
CREATE FUNCTION msg(n int, payer text DEFAULT '11000001', receiver text DEFAULT '11000091',
                    valor numeric DEFAULT NULL) RETURNS jsonb LANGUAGE sql IMMUTABLE AS $$
    SELECT jsonb_build_object(
        'endToEndId', 'E' || payer || '202402101530' || 'S' || lpad(n::text, 10, '0'),
        'valor', coalesce(valor, n + 0.5),
        'pagador', jsonb_build_object('nome', 'Marcos José', 'cpfCnpj', '98716278151',
                                      'ispb', payer, 'agencia', '0001',
                                      'contaTransacional', '1231231', 'tipoConta', 'CACC'),
        'recebedor', jsonb_build_object('nome', 'Flavio José', 'cpfCnpj', '77615678242',
                                        'ispb', receiver, 'agencia', '0361',
                                        'contaTransacional', '1210098', 'tipoConta', 'SVGS'),
        'campoLivre', 'note ' || n, 'txId', 'tx' || n,
        'dataHoraPagamento', '2024-02-10T15:30:00.' || lpad((n % 1000)::text, 3, '0') || 'Z')
$$;

-- Sends as the superuser (a trusted role, no credential); shows the result or the error.
CREATE FUNCTION send(body text, sender text DEFAULT '11000001') RETURNS text LANGUAGE sql AS $$
    SELECT try('SELECT row(accepted, duplicates, body)::text FROM pix_messages_send('
               || quote_literal(sender) || ', $1)', body)
$$;

CREATE FUNCTION stored() RETURNS bigint LANGUAGE sql
    AS $$ SELECT count(*) FROM pix.message WHERE end_to_end_id LIKE 'E1100000%' $$;

--
-- 1. Valid sends: an object, an array; stored exactly as an INSERT would store them, queued for
--    their receivers.
--
SELECT send(msg(1)::text) AS one_object;
SELECT send(jsonb_build_array(msg(2), msg(3, receiver => '11000092'), msg(4))::text) AS an_array;
SELECT end_to_end_id, valor, recebedor_ispb, body::jsonb = msg(right(end_to_end_id, 10)::int,
       receiver => recebedor_ispb) AS body_is_the_message
  FROM pix.message WHERE end_to_end_id LIKE 'E1100000%' ORDER BY id;
SELECT ispb, count(*) FROM pix.ready WHERE ispb LIKE '1100009%' GROUP BY ispb ORDER BY ispb;
-- The body is served in the contract's field order whatever order it was sent in.
SELECT body FROM pix.message WHERE end_to_end_id = msg(1) ->> 'endToEndId';
SELECT message_count, body::jsonb = msg(1) AS served_as_sent FROM pix_stream_start('11000091');

--
-- 2. Invalid: PX010 names the index and the field of the first invalid message; nothing stored.
--
SELECT stored() AS before;
SELECT send(jsonb_build_array(msg(10), msg(11), jsonb_set(msg(12), '{pagador,cpfCnpj}', '"98716278152"'),
            jsonb_set(msg(13), '{valor}', '0'))::text) AS invalid_at_2;
SELECT send(jsonb_build_array(msg(10), msg(11, payer => '11000002'))::text) AS other_payer_at_1;
SELECT send(jsonb_build_array(msg(10), msg(11) - 'txId' - 'campoLivre', msg(12) - 'endToEndId')::text)
       AS missing_id_at_2;
SELECT send(jsonb_build_array(msg(10), jsonb_set(msg(11), '{valor}', '90.205'))::text) AS unrounded,
       send(jsonb_build_array(jsonb_set(msg(11), '{valor}', '"90.20"'))::text) AS valor_string;
SELECT send(jsonb_build_array(jsonb_set(msg(11), '{recebedor,tipoConta}', '"XXXX"'))::text) AS tipo,
       send(jsonb_build_array(jsonb_set(msg(11), '{dataHoraPagamento}', '"2024-02-10 15:30:00Z"'))::text) AS time_format;
SELECT send(jsonb_set(msg(11), '{pagador,nome}', to_jsonb(repeat('é', 141)))::text) AS long_name,
       send(jsonb_set(msg(11), '{pagador,extra}', '1')::text) AS unknown_party_field;
SELECT send(msg(11)::text, '11000002') AS sender_is_not_the_payer,
       send(jsonb_set(msg(11, payer => '11000002'), '{endToEndId}', msg(11) -> 'endToEndId')::text,
            '11000002') AS id_of_another_payer;
-- The first invalid message is reported even when a later one is not even JSON.
SELECT send('[' || msg(10)::text || ',' || jsonb_set(msg(11), '{txId}', '"a-b"')::text || ', {oops') AS before_syntax_error;
SELECT stored() AS after_all_of_that;

--
-- 3. Malformed bodies: each a clear PX010, none a crash.
--
SELECT b AS body, send(b) AS result
  FROM (VALUES (NULL), (''), ('   '), ('null'), ('[]'), ('{}'), ('[1]'), ('"x"'), ('[{}'),
               ('{"endToEndId":"x","endToEndId":"y"}'), ('{"endToEndId":null}'),
               ('{"valor":1e3}'), ('{"valor":-1.00}'), ('{"valor":01}'), ('{"valor":.5}'),
               ('{"pagador":[]}'), ('{"pagador":{"nome":"\u0000"}}'), ('{"pagador":{"nome":"\ud800"}}'),
               ('{"pagador":{"nome":"\udc00\ud800"}}'), ('{"pagador":{"nome":"a' || chr(10) || '"}}'),
               ('{"pagador":{"nome":"\x"}}'), ('{"pagador":{"nome":"\u12"}}'), ('{} {}'), ('[{}]]'),
               ('{"endToEndId" "x"}'), ('{"endToEndId":"x",}'), ('[[[[[[[[[[[[[[[[[[[[]]]]]]]]]]]]]]]]]]]')) AS t(b);
SELECT send(repeat('[', 100000)) AS deep, send('{"campoLivre":"' || repeat('a', 1000000) || '"}') AS one_mb_string;
SELECT send(msg(10)::text || repeat(' ', 1000)) AS trailing_spaces_are_fine;
SELECT stored() AS after_malformed;

--
-- 4. Escapes and numbers are read as JSON defines them; valor is normalized as for INSERT.
--
SELECT send(replace(replace(jsonb_set(msg(20), '{valor}', '7')::text, 'José', 'Jos\u00e9'),
                    '"note 20"', '"\ud83d\ude00 \"quoted\" \\ \/"')) AS escapes;
SELECT valor, pagador_nome, campo_livre FROM pix.message WHERE end_to_end_id = msg(20) ->> 'endToEndId';
SELECT send(jsonb_set(msg(21), '{valor}', '21.500')::text) AS trailing_zeros;
SELECT valor FROM pix.message WHERE end_to_end_id = msg(21) ->> 'endToEndId';

--
-- 5. Idempotency by endToEndId.
--
-- The same messages again: success, nothing new stored.
SELECT send(jsonb_build_array(msg(2), msg(3, receiver => '11000092'), msg(4))::text) AS resend;
-- The same content written differently (field order, spaces, escapes, 21.5 vs 21.500) is the same.
SELECT send(' { "valor" : 21.5 , ' || substr((msg(21) - 'valor')::text, 2)) AS same_content_other_text;
-- Some new, some old.
SELECT send(jsonb_build_array(msg(4), msg(5), msg(6))::text) AS partly_new;
-- The same id with other content: 409, and nothing of the call is stored (msg 7 is new).
SELECT send(jsonb_build_array(msg(7), msg(4, valor => 99.99))::text) AS other_content,
       send(jsonb_build_array(msg(8, receiver => '11000093'), msg(4, receiver => '11000093'))::text) AS other_receiver;
SELECT count(*) AS msg_7_or_8 FROM pix.message WHERE end_to_end_id IN (msg(7) ->> 'endToEndId', msg(8) ->> 'endToEndId');
-- Twice in one body: the same content counts once, other content is 409.
SELECT send(jsonb_build_array(msg(30), msg(30))::text) AS twice_same,
       send(jsonb_build_array(msg(31), msg(31, valor => 1))::text) AS twice_different;
-- A message enqueued by INSERT (or the generator) is recognized too.
INSERT INTO pix.message (end_to_end_id, valor, pagador_nome, pagador_cpf_cnpj, pagador_ispb,
                         pagador_agencia, pagador_conta, pagador_tipo_conta, recebedor_nome,
                         recebedor_cpf_cnpj, recebedor_ispb, recebedor_agencia, recebedor_conta,
                         recebedor_tipo_conta, campo_livre, tx_id, data_hora_pagamento)
SELECT m ->> 'endToEndId', (m ->> 'valor')::numeric, 'Marcos José', '98716278151', '11000001', '0001',
       '1231231', 'CACC', 'Flavio José', '77615678242', '11000091', '0361', '1210098', 'SVGS',
       m ->> 'campoLivre', m ->> 'txId', (m ->> 'dataHoraPagamento')::timestamptz
  FROM (SELECT msg(40) AS m) s;
SELECT send(msg(40)::text) AS inserted_before, send(msg(40, valor => 3)::text) AS inserted_other;
SELECT stored() AS stored_now;

--
-- 6. Beyond the history purge, up to pix.send_idempotency_horizon.
--
-- Deliver and confirm everything of 11000091, then purge all history.
SELECT pix_streams_stop_all('11000091') >= 0 AS stopped;
CREATE TEMP TABLE r AS SELECT * FROM pix_stream_start('11000091', 10);
SELECT message_count > 0 AS delivered FROM r;
SELECT pix_stream_stop('11000091', interation_id) > 0 AS confirmed FROM r;
SET pix.history_retention = 0;
SELECT pix_purge_history() > 0 AS purged;
SELECT count(*) AS msg_1_left FROM pix.message WHERE end_to_end_id = msg(1) ->> 'endToEndId';
-- Still known: the same content is a duplicate (not delivered again), other content a conflict.
SELECT send(msg(1)::text) AS resend_after_purge, send(msg(1, valor => 2)::text) AS other_after_purge;
SELECT count(*) AS msg_1_stored_again FROM pix.message WHERE end_to_end_id = msg(1) ->> 'endToEndId';
-- The purge forgets ids only after the horizon.
SELECT pix_purge_history() >= 0 AS purged_again;
SELECT count(*) > 0 AS ids_remembered FROM pix.sent_message WHERE end_to_end_id LIKE 'E11000001%';
SET pix.send_idempotency_horizon = 0;
SELECT pix_purge_history() > 0 AS forgot;
SELECT count(*) AS ids_remembered FROM pix.sent_message WHERE end_to_end_id LIKE 'E11000001%';
SELECT send(msg(1)::text) AS after_the_horizon;
RESET pix.send_idempotency_horizon;
RESET pix.history_retention;

--
-- 7. At most 1 000 messages per call.
--
SELECT send((SELECT jsonb_agg(msg(n, receiver => '11000094')) FROM generate_series(1000, 1999) n)::text) AS one_thousand;
SELECT send((SELECT jsonb_agg(msg(n, receiver => '11000094')) FROM generate_series(2000, 3000) n)::text) AS one_thousand_and_one;
SELECT count(*) AS queued_for_11000094 FROM pix.ready WHERE ispb = '11000094';

--
-- 8. Arguments: the ISPB first; READ COMMITTED.
--
SELECT try($$SELECT accepted FROM pix_messages_send(NULL, '{}')$$) AS null_ispb,
       try($$SELECT accepted FROM pix_messages_send('1100000', NULL)$$) AS short_ispb;
BEGIN ISOLATION LEVEL REPEATABLE READ;
SELECT try($$SELECT accepted FROM pix_messages_send('11000001', $1)$$, msg(50)::text) AS repeatable_read;
ROLLBACK;

DROP SCHEMA t11 CASCADE;
SELECT pix_streams_stop_all(ispb) >= 0 FROM (VALUES ('11000091'), ('11000092'), ('11000093'), ('11000094')) v(ispb);
