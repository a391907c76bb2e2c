-- One schema, two ways in: CREATE EXTENSION pix installs from the complete script pix--1.5.sql, and
-- a database created at 1.0 reaches 1.5 through the chain of upgrade scripts. Both must give the
-- same catalog: functions (signature, defaults, result, language, volatility, SECURITY DEFINER,
-- settings, body, grants), tables, views and types (columns with their types, defaults,
-- collations, identity and grants; options; constraints; indexes; triggers; view definitions),
-- the schema's grants. A difference is listed with the install it is found in; none is expected.
\set VERBOSITY terse
SET client_min_messages = error;

CREATE FUNCTION pg_temp.pix_catalog() RETURNS SETOF text LANGUAGE sql AS $$
WITH ext AS (SELECT oid FROM pg_extension WHERE extname = 'pix'),
member AS (SELECT d.classid, d.objid FROM pg_depend d, ext
            WHERE d.refclassid = 'pg_extension'::regclass AND d.refobjid = ext.oid AND d.deptype = 'e'),
acl(obj, items) AS (SELECT NULL::text, NULL::text WHERE false),
fn AS (
    SELECT format('function %s(%s) returns %s lang %s vol %s secdef %s strict %s config %s src %s acl %s',
                  p.proname, pg_get_function_arguments(p.oid), pg_get_function_result(p.oid),
                  l.lanname, p.provolatile, p.prosecdef, p.proisstrict, p.proconfig,
                  md5(p.prosrc || coalesce(p.probin, '')),
                  (SELECT string_agg(a::text, ',' ORDER BY a::text) FROM unnest(p.proacl) a))
      FROM pg_proc p JOIN pg_language l ON l.oid = p.prolang
     WHERE p.oid IN (SELECT objid FROM member WHERE classid = 'pg_proc'::regclass)),
rel AS (
    SELECT c.oid, c.relname, c.relkind, c.reloptions, c.relacl
      FROM pg_class c
     WHERE c.relnamespace = 'pix'::regnamespace
        OR c.oid IN (SELECT t.typrelid FROM pg_type t
                      WHERE t.oid IN (SELECT objid FROM member WHERE classid = 'pg_type'::regclass))),
relation AS (
    SELECT format('relation %s kind %s options %s acl %s', r.relname, r.relkind, r.reloptions,
                  (SELECT string_agg(a::text, ',' ORDER BY a::text) FROM unnest(r.relacl) a))
      FROM rel r),
col AS (
    SELECT format('column %s.%s #%s %s notnull %s default %s collation %s identity %s acl %s',
                  r.relname, a.attname, a.attnum, format_type(a.atttypid, a.atttypmod), a.attnotnull,
                  pg_get_expr(d.adbin, d.adrelid), co.collname, a.attidentity,
                  (SELECT string_agg(x::text, ',' ORDER BY x::text) FROM unnest(a.attacl) x))
      FROM rel r JOIN pg_attribute a ON a.attrelid = r.oid AND a.attnum > 0 AND NOT a.attisdropped
      LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
      LEFT JOIN pg_collation co ON co.oid = a.attcollation AND a.attcollation <> 100),
con AS (
    SELECT format('constraint %s on %s: %s', c.conname, r.relname, pg_get_constraintdef(c.oid))
      FROM pg_constraint c JOIN rel r ON r.oid = c.conrelid),
idx AS (
    SELECT format('index %s', pg_get_indexdef(i.indexrelid))
      FROM pg_index i JOIN rel r ON r.oid = i.indrelid),
trg AS (
    SELECT format('trigger %s', pg_get_triggerdef(t.oid))
      FROM pg_trigger t JOIN rel r ON r.oid = t.tgrelid WHERE NOT t.tgisinternal),
vw AS (
    SELECT format('view %s: %s', r.relname, pg_get_viewdef(r.oid)) FROM rel r WHERE r.relkind = 'v'),
sch AS (
    SELECT format('schema %s acl %s', n.nspname,
                  (SELECT string_agg(a::text, ',' ORDER BY a::text) FROM unnest(n.nspacl) a))
      FROM pg_namespace n WHERE n.nspname = 'pix')
SELECT * FROM fn UNION ALL SELECT * FROM relation UNION ALL SELECT * FROM col
UNION ALL SELECT * FROM con UNION ALL SELECT * FROM idx UNION ALL SELECT * FROM trg
UNION ALL SELECT * FROM vw UNION ALL SELECT * FROM sch
$$;

DROP EXTENSION pix;
CREATE EXTENSION pix;
SELECT extversion FROM pg_extension WHERE extname = 'pix';
CREATE TEMP TABLE fresh AS SELECT * FROM pg_temp.pix_catalog() AS t(item);

DROP EXTENSION pix;
CREATE EXTENSION pix VERSION '1.0';
ALTER EXTENSION pix UPDATE TO '1.4';
-- The 1.5 library on the 1.4 schema purges through 1.4's age index (history.c): its statement runs.
SELECT pix_purge_history() AS purged_on_1_4;
ALTER EXTENSION pix UPDATE TO '1.5';
SELECT extversion FROM pg_extension WHERE extname = 'pix';
CREATE TEMP TABLE upgraded AS SELECT * FROM pg_temp.pix_catalog() AS t(item);

-- What was compared: enough of each kind that an empty difference means something.
SELECT split_part(item, ' ', 1) AS kind, count(*) FROM fresh GROUP BY 1 ORDER BY 1;

-- The differences: none.
(SELECT 'only in the fresh install' AS install, item FROM fresh EXCEPT SELECT 'only in the fresh install', item FROM upgraded)
UNION ALL
(SELECT 'only in the upgraded one', item FROM upgraded EXCEPT SELECT 'only in the upgraded one', item FROM fresh)
ORDER BY 2, 1;

-- Leave the database as the other tests expect it: a fresh install.
DROP EXTENSION pix;
CREATE EXTENSION pix;
RESET client_min_messages;
