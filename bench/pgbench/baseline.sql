-- The way most projects write a Postgres queue: a state column and a partial index on ready rows.
-- One transaction = mark the client's previous batch done, then claim the next 10 with SKIP LOCKED.
BEGIN;
UPDATE baseline_msg SET state = 'done' WHERE id = ANY (:prev::bigint[]);
WITH c AS (SELECT id FROM baseline_msg
            WHERE receiver_ispb = '11111111' AND state = 'ready'
            ORDER BY id LIMIT 10 FOR UPDATE SKIP LOCKED),
     u AS (UPDATE baseline_msg m SET state = 'taken' FROM c WHERE m.id = c.id RETURNING m.id, m.body)
SELECT coalesce(array_agg(id), '{}')::text AS prev, count(*) AS got, string_agg(body, ',') IS NOT NULL AS any FROM u \gset
COMMIT;
