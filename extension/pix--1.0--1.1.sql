-- pix 1.0 -> 1.1: pix_metrics(), what GET /metrics reports from the database.
-- The counters live in pix.stream and (after pix_purge_history) in pix.institution since 1.0, so an
-- upgrade only adds this function: no table is rewritten, no data moves.

\echo Use "ALTER EXTENSION pix UPDATE TO '1.1'" to load this file. \quit

-- One row per sample: gauges per ISPB for the max_ispbs busiest ISPBs (a bounded label set), the same
-- gauges over all ISPBs with ispb NULL, and cumulative counters (ispb NULL) that survive restarts of the
-- HTTP server and the purge of old streams. Counting ready messages reads the ready queue's index: its
-- cost grows with the backlog (about 0.1 s per million waiting messages).
CREATE FUNCTION pix_metrics(max_ispbs int DEFAULT 50)
RETURNS TABLE (metric text, ispb text, value bigint)
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
WITH open_streams AS (
    SELECT s.ispb, count(*) AS streams, sum(cardinality(s.pending_ids)) AS pending
      FROM pix.stream s WHERE s.state = 'o' GROUP BY s.ispb),
ready AS (
    SELECT r.ispb, count(*) AS ready FROM pix.ready r GROUP BY r.ispb),
per_ispb AS (
    SELECT coalesce(o.ispb, r.ispb) AS ispb, coalesce(o.streams, 0) AS streams,
           coalesce(o.pending, 0) AS pending, coalesce(r.ready, 0) AS ready
      FROM open_streams o FULL JOIN ready r ON r.ispb = o.ispb),
busiest AS (
    SELECT * FROM per_ispb ORDER BY streams + pending + ready DESC, ispb
     LIMIT greatest(coalesce(max_ispbs, 50), 0)),
live AS (
    SELECT coalesce(sum(delivered), 0) AS delivered, coalesce(sum(redelivered), 0) AS redelivered,
           coalesce(sum(confirmed), 0) AS confirmed, coalesce(sum(requeued), 0) AS requeued,
           count(*) AS opened, count(*) FILTER (WHERE state = 'e') AS expired
      FROM pix.stream),
purged AS (
    SELECT coalesce(sum(purged_delivered), 0) AS delivered,
           coalesce(sum(purged_redelivered), 0) AS redelivered,
           coalesce(sum(purged_confirmed), 0) AS confirmed, coalesce(sum(purged_requeued), 0) AS requeued,
           coalesce(sum(purged_streams), 0) AS opened, coalesce(sum(purged_expired), 0) AS expired
      FROM pix.institution)
SELECT 'pix_streams_open', b.ispb, b.streams FROM busiest b
UNION ALL SELECT 'pix_messages_pending', b.ispb, b.pending FROM busiest b
UNION ALL SELECT 'pix_messages_ready', b.ispb, b.ready FROM busiest b
UNION ALL SELECT 'pix_streams_open', NULL, coalesce(sum(p.streams), 0)::bigint FROM per_ispb p
UNION ALL SELECT 'pix_messages_pending', NULL, coalesce(sum(p.pending), 0)::bigint FROM per_ispb p
UNION ALL SELECT 'pix_messages_ready', NULL, coalesce(sum(p.ready), 0)::bigint FROM per_ispb p
UNION ALL SELECT 'pix_messages_delivered_total', NULL, (l.delivered + u.delivered)::bigint FROM live l, purged u
UNION ALL SELECT 'pix_messages_redelivered_total', NULL, (l.redelivered + u.redelivered)::bigint FROM live l, purged u
UNION ALL SELECT 'pix_messages_confirmed_total', NULL, (l.confirmed + u.confirmed)::bigint FROM live l, purged u
UNION ALL SELECT 'pix_messages_requeued_total', NULL, (l.requeued + u.requeued)::bigint FROM live l, purged u
UNION ALL SELECT 'pix_streams_opened_total', NULL, (l.opened + u.opened)::bigint FROM live l, purged u
UNION ALL SELECT 'pix_streams_expired_total', NULL, (l.expired + u.expired)::bigint FROM live l, purged u
$$;

REVOKE ALL ON FUNCTION pix_metrics(int) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION pix_metrics(int) TO pix_client;
