-- Confirming a batch (the UPDATE of its iteration's confirmed_at, once per delivering read) is a HOT
-- update since 1.5: no index of pix.iteration covers confirmed_at or requeued_at (the purge's age
-- index is on delivered_at). Under 1.4's iteration_by_age every confirmation was a non-HOT update.
SELECT pix_generate_messages('95000001', 30) AS generated;
SELECT interation_id AS iid FROM pix_stream_start('95000001', 10) \gset
SELECT interation_id AS iid, message_count FROM pix_stream_next('95000001', :'iid', 10) \gset
SELECT interation_id AS iid, message_count FROM pix_stream_next('95000001', :'iid', 10) \gset
SELECT interation_id AS iid, message_count FROM pix_stream_next('95000001', :'iid', 10) \gset
SELECT :message_count AS last_batch, count(*) FILTER (WHERE confirmed_at IS NOT NULL) AS confirmed_iterations
  FROM pix.iteration i JOIN pix.stream s USING (stream_id) WHERE s.ispb = '95000001';
SELECT pg_stat_force_next_flush();
SELECT n_tup_upd >= 3 AS updated, n_tup_upd = n_tup_hot_upd AS every_update_hot
  FROM pg_stat_user_tables WHERE relid = 'pix.iteration'::regclass;
SELECT pix_streams_stop_all('95000001') AS stopped;
