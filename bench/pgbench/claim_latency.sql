-- One read of batch 10 on a single stream: measures the claim path's latency (used before/after history).
\if :started = 0
SELECT interation_id AS iid, 1 AS started FROM pix_stream_start('22222222', 10) \gset
\else
SELECT interation_id AS iid FROM pix_stream_next('22222222', :iid, 10) \gset
\endif
