-- Helpers shared by the stream suites (02_streams, 03_expiry, 08_history), included with \i (paths are relative to the repository root, where make runs) after
-- each suite has made its own schema tNN and put it first in search_path. The endToEndIds and
-- payment times carry the suite's number (the schema's last two digits), so suites never collide.

-- The ids this suite holds, by name.
CREATE TABLE id (name text PRIMARY KEY, iid text NOT NULL UNIQUE);

CREATE FUNCTION label(end_to_end_id text) RETURNS text LANGUAGE sql IMMUTABLE
    AS $$ SELECT 'm' || right(end_to_end_id, 7)::bigint $$;

-- Enqueues messages m<n> for `receiver`, in the order given (a message's id is its enqueue order).
-- The endToEndId ends with the receiver's last three digits, M and n in seven digits.
CREATE FUNCTION enqueue(receiver text, VARIADIC ns int[]) RETURNS void LANGUAGE sql AS $$
    INSERT INTO pix.message (end_to_end_id, valor, pagador_nome, pagador_cpf_cnpj, pagador_ispb,
                             pagador_agencia, pagador_conta, pagador_tipo_conta, recebedor_nome,
                             recebedor_cpf_cnpj, recebedor_ispb, recebedor_agencia,
                             recebedor_conta, recebedor_tipo_conta, campo_livre, tx_id,
                             data_hora_pagamento)
    SELECT 'E32074986202402' || right(current_schema(), 2) || '1530' || right(receiver, 3) || 'M'
           || lpad(n::text, 7, '0'), n + 0.25, 'Marcos José',
           '98716278151', '32074986', '0001', '1231231', 'CACC', 'Flavio José', '77615678242',
           receiver, '0361', '1210098', 'SVGS', 'message ' || n, 'tx' || n,
           ('2024-02-' || right(current_schema(), 2) || ' 15:30:00Z')::timestamptz + n * interval '1 second'
      FROM unnest(ns) WITH ORDINALITY AS u(n, o) ORDER BY o
$$;

-- Describes a read without its id: count, body (NULL, one object, or an array of labels) and which
-- id came back: one we hold already ("id a2") or a new one, then remembered as `new_name`.
-- It also checks what must always hold and says so only when it does not: pull_next is the
-- documented URI, the id is URL-safe and long enough for 60 bits, the count matches the body, and
-- the body is the stored JSON of each message, byte for byte.
CREATE FUNCTION describe(r pix_read, ispb text, new_name text) RETURNS text LANGUAGE plpgsql AS $$
DECLARE
    known text;
    shown text;
    expected_body text;
    problems text := '';
BEGIN
    SELECT name INTO known FROM id WHERE iid = r.interation_id;
    IF known IS NULL THEN
        INSERT INTO id VALUES (new_name, r.interation_id);
    END IF;
    IF r.pull_next IS DISTINCT FROM '/api/pix/' || ispb || '/stream/' || r.interation_id THEN
        problems := problems || ' BAD pull_next ' || coalesce(r.pull_next, 'NULL');
    END IF;
    IF r.interation_id !~ '^[A-Za-z0-9_-]{10,}$' THEN
        problems := problems || ' BAD id shape';
    END IF;
    IF r.body IS NULL THEN
        shown := 'NULL';
        IF r.message_count <> 0 THEN problems := problems || ' BAD count with NULL body'; END IF;
    ELSIF json_typeof(r.body::json) = 'object' THEN
        shown := 'object ' || label(r.body::json ->> 'endToEndId');
        expected_body := (SELECT body FROM pix.message
                           WHERE end_to_end_id = r.body::json ->> 'endToEndId');
        IF r.message_count <> 1 THEN problems := problems || ' BAD count for an object'; END IF;
    ELSE
        SELECT '[' || string_agg(label(e ->> 'endToEndId'), ',' ORDER BY o) || ']',
               '[' || string_agg(m.body, ',' ORDER BY o) || ']'
          INTO shown, expected_body
          FROM json_array_elements(r.body::json) WITH ORDINALITY AS a(e, o)
          LEFT JOIN pix.message m ON m.end_to_end_id = e ->> 'endToEndId';
        IF r.message_count <> json_array_length(r.body::json) THEN
            problems := problems || ' BAD count for the array';
        END IF;
    END IF;
    IF r.body IS DISTINCT FROM expected_body THEN
        problems := problems || ' BAD body (not the stored bytes)';
    END IF;
    RETURN r.message_count || ' ' || shown || ', '
        || CASE WHEN known IS NULL THEN 'new id ' || new_name ELSE 'id ' || known END || problems;
END
$$;

-- The calls, with ids by name; an error shows as its SQLSTATE and message. A failed call is
-- rolled back, like the HTTP request that made it.
CREATE FUNCTION start(ispb text, n int, new_name text) RETURNS text LANGUAGE plpgsql AS $$
BEGIN
    RETURN describe(pix_stream_start(ispb, n), ispb, new_name);
EXCEPTION WHEN OTHERS THEN
    RETURN SQLSTATE || ' ' || SQLERRM;
END
$$;

CREATE FUNCTION read(ispb text, with_id text, n int, new_name text) RETURNS text LANGUAGE plpgsql AS $$
BEGIN
    RETURN describe(pix_stream_next(ispb, (SELECT iid FROM id WHERE name = with_id), n), ispb,
                    new_name);
EXCEPTION WHEN OTHERS THEN
    RETURN SQLSTATE || ' ' || SQLERRM;
END
$$;

CREATE FUNCTION stop(ispb text, with_id text) RETURNS text LANGUAGE plpgsql AS $$
BEGIN
    RETURN 'confirmed ' || pix_stream_stop(ispb, (SELECT iid FROM id WHERE name = with_id));
EXCEPTION WHEN OTHERS THEN
    RETURN SQLSTATE || ' ' || SQLERRM;
END
$$;

-- Where each message of `ispb` is: ready (in delivery order), pending in an open stream, or
-- confirmed.
CREATE FUNCTION queue(ispb text) RETURNS text LANGUAGE sql AS $$
    SELECT 'ready: ' || coalesce((SELECT string_agg(label(m.end_to_end_id), ' ' ORDER BY r.message_id)
                                     FROM pix.ready r JOIN pix.message m ON m.id = r.message_id
                                    WHERE r.ispb = $1), '-')
        || ' | pending: ' || coalesce((SELECT string_agg(label(m.end_to_end_id), ' ' ORDER BY m.id)
                                          FROM pix.stream s JOIN pix.message m ON m.id = ANY (s.pending_ids)
                                         WHERE s.ispb = $1 AND s.state = 'o'), '-')
        || ' | confirmed: ' || coalesce((SELECT string_agg(label(m.end_to_end_id), ' ' ORDER BY m.id)
                                            FROM pix.message m
                                           WHERE m.recebedor_ispb = $1
                                             AND EXISTS (SELECT FROM pix.iteration i
                                                          WHERE m.id = ANY (i.message_ids)
                                                            AND i.confirmed_at IS NOT NULL)), '-')
$$;

CREATE FUNCTION open_streams(ispb text) RETURNS bigint LANGUAGE sql AS $$
    SELECT count(*) FROM pix.stream WHERE stream.ispb = $1 AND state = 'o'
$$;
