-- One collector of ISPB 11111111 reading batches of 10: each transaction confirms the previous batch
-- and claims the next, exactly as a collector's HTTP call does (the shim calls this same function).
-- pgbench keeps :iid per client between transactions; the first transaction of a client opens its stream.
\if :started = 0
SELECT interation_id AS iid, 1 AS started, message_count AS got FROM pix_stream_start('11111111', 10) \gset
\else
SELECT interation_id AS iid, message_count AS got FROM pix_stream_next('11111111', :iid, 10) \gset
\endif
