-- What a pix router needs to know of the extension, as one JSON document: read from every shard by
-- scripts/shards.sh install, which hands it to router/pix_router.sql (psql variable `catalog`) to
-- generate the router's types and functions. Run on a shard database; prints one line.
--   version    the extension's version
--   functions  every function of the extension in its own schema (public; the helpers in schema pix
--              are not called by clients): signature, defaults, result, input argument names and the
--              roles that may execute it
--   types      its composite types (pix_read, ...) and the row of pix.message, attribute by attribute,
--              under the name the router gives each
\set ON_ERROR_STOP 1
SET search_path = public; -- the types of the signatures are named as the router names them
SELECT jsonb_build_object(
    'version', e.extversion,
    'functions', coalesce((
        SELECT jsonb_agg(jsonb_build_object(
                   'name', p.proname,
                   'arg_types', oidvectortypes(p.proargtypes),
                   'arguments', pg_get_function_arguments(p.oid),
                   'result', pg_get_function_result(p.oid),
                   'result_type', p.prorettype::regtype::text,
                   'retset', p.proretset,
                   'nargs', p.pronargs,
                   'input_names', ARRAY(SELECT a.n FROM unnest(p.proargnames, p.proargmodes)
                                                        WITH ORDINALITY a(n, m, k)
                                         WHERE coalesce(a.m, 'i') IN ('i', 'b', 'v') ORDER BY a.k),
                   'first_type', p.proargtypes[0]::regtype::text,
                   'grantees', ARRAY(SELECT CASE WHEN g.grantee = 0 THEN 'PUBLIC' ELSE g.grantee::regrole::text END
                                       FROM aclexplode(coalesce(p.proacl, acldefault('f', p.proowner))) g
                                      WHERE g.privilege_type = 'EXECUTE' AND g.grantee <> p.proowner
                                      ORDER BY 1))
                   ORDER BY p.proname, oidvectortypes(p.proargtypes))
          FROM pg_depend d
          JOIN pg_proc p ON p.oid = d.objid AND p.pronamespace = e.extnamespace
         WHERE d.refclassid = 'pg_extension'::regclass AND d.refobjid = e.oid AND d.deptype = 'e'
           AND d.classid = 'pg_proc'::regclass), '[]'),
    'types', (
        SELECT jsonb_agg(jsonb_build_object(
                   'target', t.target,
                   'attribute_names', ARRAY(SELECT a.attname FROM pg_attribute a
                                             WHERE a.attrelid = t.typrelid AND a.attnum > 0
                                               AND NOT a.attisdropped ORDER BY a.attnum),
                   'attribute_types', ARRAY(SELECT format_type(a.atttypid, a.atttypmod) FROM pg_attribute a
                                             WHERE a.attrelid = t.typrelid AND a.attnum > 0
                                               AND NOT a.attisdropped ORDER BY a.attnum))
                   ORDER BY t.target)
          FROM (SELECT format('public.%I', ty.typname) AS target, ty.typrelid
                  FROM pg_depend d
                  JOIN pg_type ty ON ty.oid = d.objid AND ty.typnamespace = e.extnamespace AND ty.typtype = 'c'
                 WHERE d.refclassid = 'pg_extension'::regclass AND d.refobjid = e.oid AND d.deptype = 'e'
                   AND d.classid = 'pg_type'::regclass
                UNION ALL
                SELECT 'pix_router.message_row', 'pix.message'::regclass) t))
  FROM pg_extension e
 WHERE e.extname = 'pix';
