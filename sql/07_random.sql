--
-- 07_random: thousands of random and hostile calls, then the invariants.
--
-- A DO block plays a crowd of collectors on three ISPBs (07000001 .. 07000003) for 4000 steps,
-- each step its own transaction, as the HTTP server would make them: starts, reads on the current
-- id, retries on the previous one, ids of other streams and other ISPBs, garbage ids, malformed
-- ISPBs, counts out of range, stops from either id, new messages (some invalid), idle collectors
-- (their last read moved an hour back, so they expire) and sweeps. Every call is caught; its
-- outcome (ok or SQLSTATE) is tallied, and each answer is checked on the spot against the
-- database. Then the state is checked as a whole, and drained: every message must come out.
--
-- random() is seeded, so the run is the same every time; but the suite prints only what must be
-- true of any run: invariants (counts of violations: zeros), the outcomes seen, and whether the
-- counts add up, never the counts themselves.
--
CREATE SCHEMA t07;
SET search_path = t07, public;
SET synchronous_commit = off;            -- 4000 small transactions; durability is not the point
SET pix.max_collectors = 3;              -- a small limit, often reached
SET pix.stream_idle_timeout = '1h';      -- only the collectors this suite makes idle expire
SELECT setseed(0.2024);

-- The collectors the crowd plays: the ISPB each reads, the id to call next, the one before.
CREATE TABLE collector (c serial PRIMARY KEY, ispb text NOT NULL, cur text NOT NULL, prev text);
-- Every id ever answered, for stale and foreign ids.
CREATE TABLE held (k serial PRIMARY KEY, ispb text NOT NULL, iid text NOT NULL);
-- Outcomes by operation: 'ok' or the SQLSTATE.
CREATE TABLE tally (op text, outcome text, calls int NOT NULL, PRIMARY KEY (op, outcome));
-- Messages this suite enqueued (fixed ones and generated ones).
CREATE TABLE enqueued (ispb text PRIMARY KEY, messages int NOT NULL);
-- Anything an answer got wrong, found on the spot.
CREATE TABLE violation (step int, op text, what text);

-- Checks one answer against the database, right after the call, in its transaction: the id, the
-- URI, the count, and that the body is exactly the pending batch of the stream the id belongs to,
-- for the ISPB asked, with no message already confirmed.
CREATE FUNCTION check_read(step int, op text, ispb text, r pix_read) RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    body_ids text[];
    pending text[];
    stream_ispb text;
BEGIN
    IF r.pull_next IS DISTINCT FROM '/api/pix/' || ispb || '/stream/' || r.interation_id THEN
        INSERT INTO violation VALUES (step, op, 'pull_next');
    END IF;
    IF r.body IS NULL THEN
        body_ids := '{}';
    ELSIF json_typeof(r.body::json) = 'object' THEN
        body_ids := ARRAY[r.body::json ->> 'endToEndId'];
    ELSE
        SELECT coalesce(array_agg(e ->> 'endToEndId' ORDER BY o), '{}') INTO body_ids
          FROM json_array_elements(r.body::json) WITH ORDINALITY AS a(e, o);
    END IF;
    IF r.message_count IS DISTINCT FROM cardinality(body_ids) THEN
        INSERT INTO violation VALUES (step, op, 'count does not match the body');
    END IF;
    SELECT s.ispb, coalesce((SELECT array_agg(m.end_to_end_id ORDER BY m.id)
                               FROM pix.message m WHERE m.id = ANY (s.pending_ids)), '{}')
      INTO stream_ispb, pending
      FROM pix.iteration i JOIN pix.stream s ON s.stream_id = i.stream_id
     WHERE i.iid = r.interation_id AND s.state = 'o';
    IF stream_ispb IS DISTINCT FROM ispb THEN
        INSERT INTO violation VALUES (step, op, 'the id is not an open stream of this ISPB');
    END IF;
    IF body_ids IS DISTINCT FROM pending THEN
        INSERT INTO violation VALUES (step, op, 'the body is not the pending batch');
    END IF;
    IF EXISTS (SELECT FROM pix.message m
                WHERE m.end_to_end_id = ANY (body_ids) AND m.recebedor_ispb <> ispb) THEN
        INSERT INTO violation VALUES (step, op, 'a message of another ISPB');
    END IF;
    IF EXISTS (SELECT FROM pix.message m JOIN pix.iteration i ON m.id = ANY (i.message_ids)
                WHERE m.end_to_end_id = ANY (body_ids) AND i.confirmed_at IS NOT NULL) THEN
        INSERT INTO violation VALUES (step, op, 'a confirmed message delivered again');
    END IF;
END
$$;

CREATE FUNCTION pick(choices text[]) RETURNS text LANGUAGE sql VOLATILE AS $$
    SELECT choices[1 + floor(random() * cardinality(choices))::int]
$$;

DO $$
DECLARE
    ispbs CONSTANT text[] := ARRAY['07000001', '07000002', '07000003'];
    bad_ispbs CONSTANT text[] := ARRAY['', '0700000', '070000011', 'abcdefgh', '０７００００００１',
                                       ' 07000001', repeat('7', 100000)];
    bad_ids CONSTANT text[] := ARRAY['', 'x', repeat('a', 20), repeat('z', 21), repeat('A', 20),
                                     repeat('é', 20), $q$' OR 1=1 --$q$, repeat('0', 100000)];
    next_message int := 0;
    step int;
    x float8;
    op text;
    outcome text;
    arg_ispb text;
    arg_id text;
    arg_n int;
    col collector;
    r pix_read;
    how_many int;
BEGIN
    FOR step IN 1..4000 LOOP
        x := random();
        op := CASE WHEN x < 0.12 THEN 'start' WHEN x < 0.67 THEN 'next' WHEN x < 0.76 THEN 'stop'
                   WHEN x < 0.92 THEN 'enqueue' WHEN x < 0.94 THEN 'bad message'
                   WHEN x < 0.97 THEN 'idle' WHEN x < 0.98 THEN 'expire' ELSE 'generate' END;
        -- The collector this step plays, and the arguments it sends: mostly right, often not.
        SELECT * INTO col FROM collector ORDER BY c
         OFFSET floor(random() * (SELECT count(*) FROM collector)) LIMIT 1;
        x := random();
        arg_ispb := CASE WHEN col.ispb IS NOT NULL AND x < 0.85 THEN col.ispb
                     WHEN x < 0.95 THEN pick(ispbs)
                     WHEN x < 0.98 THEN pick(bad_ispbs) END;            -- else NULL
        x := random();
        arg_id := CASE WHEN x < 0.70 THEN col.cur
                   WHEN x < 0.85 THEN col.prev
                   WHEN x < 0.95 THEN (SELECT iid FROM held ORDER BY k
                                        OFFSET floor(random() * (SELECT count(*) FROM held)) LIMIT 1)
                   WHEN x < 0.99 THEN pick(bad_ids) END;                 -- else NULL
        x := random();
        arg_n := CASE WHEN x < 0.80 THEN 1 + floor(random() * 10)::int
                  WHEN x < 0.84 THEN 0 WHEN x < 0.88 THEN 11 WHEN x < 0.92 THEN -1
                  WHEN x < 0.96 THEN 2147483647 END;                     -- else NULL
        BEGIN
            CASE op
            WHEN 'start' THEN
                r := pix_stream_start(arg_ispb, arg_n);
                PERFORM check_read(step, op, arg_ispb, r);
                INSERT INTO collector (ispb, cur) VALUES (arg_ispb, r.interation_id);
                INSERT INTO held (ispb, iid) VALUES (arg_ispb, r.interation_id);
            WHEN 'next' THEN
                r := pix_stream_next(arg_ispb, arg_id, arg_n);
                PERFORM check_read(step, op, arg_ispb, r);
                -- Whoever held the id now holds the answer's id (unchanged by a replay or an
                -- empty read).
                UPDATE collector SET prev = cur, cur = r.interation_id
                 WHERE (cur = arg_id OR prev = arg_id) AND cur <> r.interation_id;
                IF NOT EXISTS (SELECT FROM held WHERE iid = r.interation_id) THEN
                    INSERT INTO held (ispb, iid) VALUES (arg_ispb, r.interation_id);
                END IF;
            WHEN 'stop' THEN
                PERFORM pix_stream_stop(arg_ispb, arg_id);
                DELETE FROM collector WHERE cur = arg_id OR prev = arg_id;
            WHEN 'enqueue', 'bad message' THEN
                arg_ispb := pick(ispbs);
                how_many := 1 + floor(random() * 5)::int;
                INSERT INTO pix.message (end_to_end_id, valor, pagador_nome, pagador_cpf_cnpj,
                                         pagador_ispb, pagador_agencia, pagador_conta,
                                         pagador_tipo_conta, recebedor_nome, recebedor_cpf_cnpj,
                                         recebedor_ispb, recebedor_agencia, recebedor_conta,
                                         recebedor_tipo_conta, campo_livre, tx_id,
                                         data_hora_pagamento)
                SELECT 'E32074986202402071530R' || lpad((next_message + i)::text, 10, '0'),
                       (next_message + i) / 100.0 + 0.01, 'Pagador ' || i, '98716278151', '32074986',
                       '0001', '1231231', 'CACC', 'Recebedor ' || i, '77615678242', arg_ispb, '0361',
                       '1210098',
                       CASE WHEN op = 'bad message' AND i = how_many THEN 'CURR' ELSE 'SVGS' END,
                       '', '', '2024-02-07 15:30:00Z'
                  FROM generate_series(1, how_many) AS i;
                next_message := next_message + how_many;
                INSERT INTO enqueued VALUES (arg_ispb, how_many)
                    ON CONFLICT (ispb) DO UPDATE SET messages = enqueued.messages + how_many;
            WHEN 'idle' THEN
                -- The collector went away without a word: an hour without a read.
                UPDATE pix.stream SET last_read_at = last_read_at - interval '2 hours'
                 WHERE current_iid = col.cur AND state = 'o';
            WHEN 'expire' THEN
                PERFORM pix_expire_streams();
            WHEN 'generate' THEN
                arg_ispb := pick(ispbs);
                how_many := 1 + floor(random() * 3)::int;
                PERFORM pix_generate_messages(arg_ispb, how_many);
                INSERT INTO enqueued VALUES (arg_ispb, how_many)
                    ON CONFLICT (ispb) DO UPDATE SET messages = enqueued.messages + how_many;
            END CASE;
            outcome := 'ok';
        EXCEPTION WHEN OTHERS THEN
            outcome := SQLSTATE;
            IF SQLSTATE IN ('PX004', 'PX005') AND op = 'stop' AND arg_ispb = col.ispb
               AND arg_id IN (col.cur, col.prev) THEN
                DELETE FROM collector WHERE c = col.c;   -- its stream is gone: forget it
            END IF;
        END;
        INSERT INTO tally VALUES (op, outcome, 1)
            ON CONFLICT ON CONSTRAINT tally_pkey DO UPDATE SET calls = tally.calls + 1;
        COMMIT;
    END LOOP;
END
$$;

--
-- 1. No answer was wrong when it was given.
--
SELECT * FROM violation ORDER BY step LIMIT 20;

--
-- 2. Every outcome is one the contract allows for that call, and every allowed outcome happened.
--
CREATE TABLE allowed (op text, outcome text);
INSERT INTO allowed VALUES
    ('start', 'ok'), ('start', 'PX001'), ('start', 'PX002'), ('start', 'PX003'),
    ('next', 'ok'), ('next', 'PX001'), ('next', 'PX002'), ('next', 'PX004'), ('next', 'PX005'),
    ('stop', 'ok'), ('stop', 'PX001'), ('stop', 'PX004'), ('stop', 'PX005'),
    ('enqueue', 'ok'), ('bad message', 'PX006'), ('idle', 'ok'), ('expire', 'ok'),
    ('generate', 'ok');
SELECT t.op, t.outcome AS unexpected_outcome, t.calls
  FROM tally t LEFT JOIN allowed a USING (op, outcome) WHERE a.op IS NULL;
SELECT a.op, a.outcome, coalesce(t.calls, 0) > 0 AS seen
  FROM allowed a LEFT JOIN tally t USING (op, outcome) ORDER BY a.op COLLATE "C", a.outcome COLLATE "C";
SELECT sum(calls) AS calls FROM tally;

--
-- 3. The invariants, on the state the crowd left.
--
-- Each message of these ISPBs is in exactly one place: ready, pending in one open stream, or
-- confirmed (once).
CREATE TABLE place AS
SELECT m.id, m.recebedor_ispb AS ispb,
       (SELECT count(*) FROM pix.ready r WHERE r.message_id = m.id) AS ready,
       (SELECT count(*) FROM pix.stream s WHERE s.state = 'o' AND m.id = ANY (s.pending_ids)) AS pending,
       (SELECT count(*) FROM pix.iteration i WHERE m.id = ANY (i.message_ids) AND i.confirmed_at IS NOT NULL) AS confirmed
  FROM pix.message m WHERE m.recebedor_ispb IN ('07000001', '07000002', '07000003');
SELECT count(*) > 1000 AS many_messages,
       count(*) FILTER (WHERE ready + pending + confirmed <> 1) AS not_in_exactly_one_place,
       count(*) FILTER (WHERE pending > 1) AS in_two_pending_batches,
       count(*) FILTER (WHERE ready > 0 AND pending > 0) AS ready_and_pending,
       count(*) FILTER (WHERE confirmed > 0 AND ready + pending > 0) AS confirmed_yet_held,
       count(*) FILTER (WHERE confirmed > 1) AS confirmed_twice
  FROM place;
-- Counts add up: what was enqueued is what is there, per ISPB.
SELECT e.ispb, count(p.id) = e.messages AS all_found,
       sum(p.ready + p.pending + p.confirmed) = e.messages AS adds_up,
       sum(p.confirmed) > 0 AS some_confirmed
  FROM enqueued e LEFT JOIN place p USING (ispb) GROUP BY e.ispb, e.messages ORDER BY e.ispb;
-- Globally too (every suite's ISPBs): no message pending twice, none both ready and pending.
SELECT (SELECT count(*) FROM (SELECT id FROM pix.stream, unnest(pending_ids) AS id
                               WHERE state = 'o' GROUP BY id HAVING count(*) > 1) AS d) AS pending_twice,
       (SELECT count(*) FROM pix.ready r JOIN pix.stream s
                          ON s.state = 'o' AND r.message_id = ANY (s.pending_ids)) AS ready_and_pending,
       (SELECT count(*) FROM pix.ready r JOIN pix.message m ON m.id = r.message_id
         WHERE r.ispb <> m.recebedor_ispb) AS ready_under_wrong_ispb;
-- Streams: at most 3 open per ISPB; closed and expired ones hold nothing; an open stream's
-- pending batch is the batch of its current id, neither confirmed nor requeued.
SELECT ispb, count(*) <= 3 AS within_limit FROM pix.stream
 WHERE state = 'o' AND ispb LIKE '070000__' GROUP BY ispb ORDER BY ispb;
SELECT count(*) FILTER (WHERE s.state <> 'o' AND cardinality(s.pending_ids) > 0) AS closed_holding,
       count(*) FILTER (WHERE s.state = 'o' AND cardinality(s.pending_ids) > 0
                          AND (i.message_ids IS DISTINCT FROM s.pending_ids
                               OR i.confirmed_at IS NOT NULL OR i.requeued_at IS NOT NULL)) AS pending_mismatch,
       count(*) FILTER (WHERE s.state = 'o' AND i.iid IS NULL) AS current_id_unknown
  FROM pix.stream s LEFT JOIN pix.iteration i ON i.iid = s.current_iid
 WHERE s.ispb LIKE '070000__';
-- Iterations: none both confirmed and requeued; each delivered only its stream's ISPB's messages;
-- no message delivered after it was confirmed.
SELECT count(*) FILTER (WHERE i.confirmed_at IS NOT NULL AND i.requeued_at IS NOT NULL) AS confirmed_and_requeued,
       count(*) FILTER (WHERE EXISTS (SELECT FROM pix.message m
                                       WHERE m.id = ANY (i.message_ids) AND m.recebedor_ispb <> s.ispb)) AS foreign_messages
  FROM pix.iteration i JOIN pix.stream s USING (stream_id) WHERE s.ispb LIKE '070000__';
SELECT count(*) AS delivered_after_confirmation
  FROM pix.delivery c JOIN pix.delivery d USING (message_id)
 WHERE c.ispb LIKE '070000__' AND c.confirmed_at IS NOT NULL AND d.delivered_at > c.confirmed_at;

-- Ids: all distinct, URL-safe, and with room for at least 60 bits (length x log2 of the symbols
-- seen across thousands of ids).
SELECT count(*) > 300 AS many_ids, count(DISTINCT iid) = count(*) AS all_distinct,
       bool_and(iid ~ '^[A-Za-z0-9_-]+$') AS url_safe,
       min(length(iid)) * log(2, (SELECT count(DISTINCT c)
                                    FROM pix.iteration i2 JOIN pix.stream s2 USING (stream_id),
                                         regexp_split_to_table(i2.iid, '') AS c
                                   WHERE s2.ispb LIKE '070000__')) >= 60 AS at_least_60_bits
  FROM pix.iteration i JOIN pix.stream s USING (stream_id) WHERE s.ispb LIKE '070000__';

--
-- 4. Nothing lost: the collectors that are left close with their current ids, then one collector
--    per ISPB reads until the queue is empty. Every message comes out, and all are confirmed.
--
SET pix.stream_idle_timeout = '10min';
SELECT pix_expire_streams() >= 0 AS swept;
DO $$
DECLARE
    s record;
    r pix_read;
    who text;
BEGIN
    FOR s IN SELECT * FROM pix.stream WHERE stream.ispb LIKE '070000__' AND state = 'o' ORDER BY stream_id LOOP
        PERFORM pix_stream_stop(s.ispb, s.current_iid);
    END LOOP;
    FOREACH who IN ARRAY ARRAY['07000001', '07000002', '07000003'] LOOP
        r := pix_stream_start(who, 10);
        WHILE r.message_count > 0 LOOP
            r := pix_stream_next(who, r.interation_id, 10);
        END LOOP;
        PERFORM pix_stream_stop(who, r.interation_id);
    END LOOP;
END
$$;
SELECT e.ispb,
       count(*) FILTER (WHERE EXISTS (SELECT FROM pix.iteration i
                                       WHERE m.id = ANY (i.message_ids) AND i.confirmed_at IS NOT NULL))
           = e.messages AS all_confirmed,
       (SELECT count(*) FROM pix.ready r WHERE r.ispb = e.ispb) AS ready,
       (SELECT count(*) FROM pix.stream s WHERE s.ispb = e.ispb AND s.state = 'o') AS open_streams
  FROM enqueued e JOIN pix.message m ON m.recebedor_ispb = e.ispb
 GROUP BY e.ispb, e.messages ORDER BY e.ispb;

RESET pix.max_collectors;
RESET pix.stream_idle_timeout;
DROP SCHEMA t07 CASCADE;
