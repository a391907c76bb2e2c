-- The machine's commit-rate floor: each client updates its own single row, one commit per transaction.
UPDATE commit_floor SET n = n + 1 WHERE id = :client_id;
