-- Upgrade 1.3 -> 1.4 (issue 18) in place: bindings keep confining their roles and gain their role's
-- name; a binding whose role was dropped is removed and audited; every message stays queued; the
-- new library refuses client calls on the old schema instead of serving them unchecked.
\set VERBOSITY terse
SET client_min_messages = warning;
DROP ROLE IF EXISTS regress_pix92_bank;
DROP ROLE IF EXISTS regress_pix92_gone;
RESET client_min_messages;
DROP EXTENSION pix;
CREATE EXTENSION pix VERSION '1.3';
SELECT extversion FROM pg_extension WHERE extname = 'pix';

-- Made under 1.3: a bound bank, a bound role dropped afterwards (its row stays in 1.3), a token of a
-- third institution, and messages for the bank and for an ISPB nobody registered.
CREATE ROLE regress_pix92_bank IN ROLE pix_institution;
CREATE ROLE regress_pix92_gone IN ROLE pix_institution;
SELECT pix_role_bind('regress_pix92_bank', '92000001'), pix_role_bind('regress_pix92_gone', '92000002');
DROP ROLE regress_pix92_gone;
SELECT pix_token_issue('92000003', 'upgrade') LIKE 'pix_%' AS token;
INSERT INTO pix.message (end_to_end_id, valor, pagador_nome, pagador_cpf_cnpj, pagador_ispb,
                         pagador_agencia, pagador_conta, pagador_tipo_conta, recebedor_nome,
                         recebedor_cpf_cnpj, recebedor_ispb, recebedor_agencia, recebedor_conta,
                         recebedor_tipo_conta, data_hora_pagamento)
SELECT 'E32074986202403011200092M' || lpad(n::text, 7, '0'), n, 'Marcos José', '98716278151',
       '32074986', '0001', '1231231', 'CACC', 'Flavio José', '77615678242',
       CASE WHEN n <= 3 THEN '92000001' ELSE '92000009' END, '0361', '1210098', 'SVGS', now()
  FROM generate_series(1, 5) n;
SELECT count(*) AS bindings FROM pix.role_binding;

-- The 1.4 library on the 1.3 schema: refused, nothing served unchecked.
SELECT pix_streams_stop_all('92000001');

ALTER EXTENSION pix UPDATE;
SELECT extversion FROM pg_extension WHERE extname = 'pix';

-- The live binding has its role's name; the dropped role's is gone, audited.
SELECT role::regrole, role_name, ispb FROM pix.role_binding ORDER BY ispb;
SELECT action, ispb, detail ~ '^role oid [0-9]+$' AS names_the_oid
  FROM pix.credential_audit WHERE action = 'role_binding_stale';
-- Every message is still queued.
SELECT ispb, count(*) FROM pix.ready GROUP BY ispb ORDER BY ispb;

-- The bank acts for its own ISPB only; a role made again under the dropped name is unbound.
CREATE ROLE regress_pix92_gone IN ROLE pix_institution;
\set VERBOSITY default
SET SESSION AUTHORIZATION regress_pix92_bank;
SELECT message_count FROM pix_stream_start('92000001', 10);
SELECT pix_streams_stop_all('92000002');
RESET SESSION AUTHORIZATION;
SET SESSION AUTHORIZATION regress_pix92_gone;
SELECT pix_streams_stop_all('92000002');
RESET SESSION AUTHORIZATION;

-- Labels: registered institutions only (the bank, by its binding; 92000003, registered by its
-- credential, has nothing queued); 92000009's messages count in the totals only.
SELECT metric, ispb, value FROM pix_metrics() WHERE ispb IS NOT NULL ORDER BY ispb, metric;
SELECT value AS ready_total FROM pix_metrics() WHERE ispb IS NULL AND metric = 'pix_messages_ready';

SELECT pix_streams_stop_all('92000001');
SELECT pix_role_unbind('regress_pix92_bank');
DROP ROLE regress_pix92_bank, regress_pix92_gone;
