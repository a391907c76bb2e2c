-- pix 1.3 -> 1.4 (issue 18, "Walls that hold"): an SQL identity cannot be shed, bindings never
-- outlive their role, and with authentication messages go only to registered institutions.
-- The rules are in docs/threat-model-sql.md; the C side is extension/auth.c.

\echo Use "ALTER EXTENSION pix UPDATE TO '1.4'" to load this file. \quit

-- ---- a binding never outlives its role -------------------------------------------------------------
-- A binding names its role by OID and by the role's name when it was bound. auth.c counts a binding
-- only while a role with that OID and that name exists: a dropped role's row binds nobody, so a role
-- created later under the same name (another OID), or a later role that gets the old OID (another
-- name), is unbound -- and an unbound institution role is refused (fail closed). PostgreSQL has no
-- event trigger for DROP ROLE (roles are shared objects), hence the check at lookup; pix_role_bind
-- and pix_role_unbind also delete such stale rows (audited 'role_binding_stale').
ALTER TABLE pix.role_binding ADD COLUMN role_name name;

WITH gone AS (
    DELETE FROM pix.role_binding b
     WHERE NOT EXISTS (SELECT FROM pg_catalog.pg_roles r WHERE r.oid = b.role)
    RETURNING b.role, b.ispb)
INSERT INTO pix.credential_audit (action, ispb, detail)
SELECT 'role_binding_stale', g.ispb, 'role oid ' || g.role FROM gone g;
UPDATE pix.role_binding b SET role_name = r.rolname FROM pg_catalog.pg_roles r WHERE r.oid = b.role;
ALTER TABLE pix.role_binding ALTER COLUMN role_name SET NOT NULL;
-- Registered institutions are looked up by ISPB (auth.c, pix_metrics).
CREATE INDEX role_binding_by_ispb ON pix.role_binding (ispb);

-- The name is always the role's own at bind time, whoever inserts the row (pix_role_bind, or
-- scripts/shards.sh move, which inserts role and ISPB only).
CREATE FUNCTION pix.role_binding_name() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    NEW.role_name := (SELECT r.rolname FROM pg_catalog.pg_roles r WHERE r.oid = NEW.role);
    IF NEW.role_name IS NULL THEN
        RAISE EXCEPTION 'invalid role' USING ERRCODE = '42704',
            DETAIL = format('No role has OID %s.', NEW.role);
    END IF;
    RETURN NEW;
END
$$;
REVOKE ALL ON FUNCTION pix.role_binding_name() FROM PUBLIC;
CREATE TRIGGER role_binding_name BEFORE INSERT OR UPDATE ON pix.role_binding
    FOR EACH ROW EXECUTE FUNCTION pix.role_binding_name();

-- Deletes the bindings whose role is gone or was renamed (they bind nobody already), audited.
CREATE FUNCTION pix.role_binding_sweep() RETURNS int
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    n int;
BEGIN
    WITH gone AS (
        DELETE FROM pix.role_binding b
         WHERE NOT EXISTS (SELECT FROM pg_catalog.pg_roles r
                            WHERE r.oid = b.role AND r.rolname = b.role_name)
        RETURNING b.role, b.role_name, b.ispb),
    audited AS (
        INSERT INTO pix.credential_audit (action, ispb, detail)
        SELECT 'role_binding_stale', g.ispb, format('role %s (oid %s) no longer exists', g.role_name, g.role)
          FROM gone g RETURNING 1)
    SELECT count(*) INTO n FROM audited;
    RETURN n;
END
$$;
REVOKE ALL ON FUNCTION pix.role_binding_sweep() FROM PUBLIC;

CREATE OR REPLACE FUNCTION pix_role_bind(role regrole, ispb text) RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    valid_ispb text := pix.ispb_arg(ispb);
BEGIN
    IF role IS NULL THEN
        RAISE EXCEPTION 'invalid role' USING ERRCODE = '22023';
    END IF;
    PERFORM pix.role_binding_sweep();
    INSERT INTO pix.role_binding AS b (role, ispb) VALUES (role, valid_ispb)
    ON CONFLICT ON CONSTRAINT role_binding_pkey
    DO UPDATE SET ispb = excluded.ispb, bound_at = excluded.bound_at, bound_by = excluded.bound_by;
    PERFORM pix.audit('role_bind', valid_ispb, NULL, 'role ' || role::text);
END
$$;

CREATE OR REPLACE FUNCTION pix_role_unbind(role regrole) RETURNS boolean
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    old_ispb text;
BEGIN
    PERFORM pix.role_binding_sweep();
    DELETE FROM pix.role_binding b WHERE b.role = pix_role_unbind.role RETURNING b.ispb INTO old_ispb;
    IF NOT FOUND THEN
        RETURN false;
    END IF;
    PERFORM pix.audit('role_unbind', old_ispb, NULL, 'role ' || role::text);
    RETURN true;
END
$$;

-- ---- /metrics labels: registered institutions only ---------------------------------------------
-- A registered institution: an ISPB that opened a stream (pix.institution), holds or held a
-- credential, or has a role binding (auth.c's unregistered_sql applies the same rule to sends).
-- Messages to any other ISPB still count in the totals, but never name it: with authentication
-- nobody can send to such an ISPB, and without it the label would be chosen by whoever sends.
CREATE OR REPLACE FUNCTION pix_metrics(max_ispbs int DEFAULT 50)
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
registered AS (
    SELECT i.ispb FROM pix.institution i
    UNION SELECT c.ispb FROM pix.credential c WHERE c.ispb IS NOT NULL
    UNION SELECT b.ispb FROM pix.role_binding b),
busiest AS (
    SELECT p.* FROM per_ispb p
     WHERE p.ispb ~ '^[0-9]{8}$' AND p.ispb IN (SELECT g.ispb FROM registered g)
     ORDER BY p.streams + p.pending + p.ready DESC, p.ispb
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
