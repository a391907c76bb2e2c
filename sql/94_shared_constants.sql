-- Constants shared by the C and the SQL: extension/pix.h is their source, and the SQL scripts,
-- which cannot include it, must write the same literals. pix_constants() (pix.c, not part of the
-- extension's SQL) exposes the C's values; every literal of the installed extension's SQL (function
-- bodies, check constraints) is listed with the constant it must equal. ok is false on a mismatch.
\set VERBOSITY terse
CREATE FUNCTION pg_temp.pix_constants(OUT name text, OUT value text) RETURNS SETOF record
    AS '$libdir/pix', 'pix_constants' LANGUAGE C STRICT;
SELECT name, value FROM pg_temp.pix_constants() ORDER BY name;

CREATE TEMP VIEW sql_text AS
SELECT p.proname::text AS object, p.prosrc AS text
  FROM pg_proc p JOIN pg_depend d ON d.classid = 'pg_proc'::regclass AND d.objid = p.oid
 WHERE d.refclassid = 'pg_extension'::regclass AND d.deptype = 'e'
   AND d.refobjid = (SELECT oid FROM pg_extension WHERE extname = 'pix')
UNION ALL
SELECT c.conrelid::regclass || '.' || c.conname, pg_get_constraintdef(c.oid)
  FROM pg_constraint c WHERE c.connamespace = 'pix'::regnamespace;

-- The NOTIFY channel, the ISPB length and the PX SQLSTATEs, wherever the SQL writes them.
WITH c AS (SELECT name, value FROM pg_temp.pix_constants()),
literal AS (
    SELECT 'notify channel' AS constant, s.object, m[1] AS literal
      FROM sql_text s, regexp_matches(s.text, 'pg_notify\(''([^'']*)''', 'g') m
    UNION ALL
    SELECT 'ISPB length', s.object, m[1]
      FROM sql_text s, regexp_matches(s.text, '\[0-9\]\{([0-9]+)\}', 'g') m
    UNION ALL
    SELECT 'SQLSTATE ' || m[1], s.object, m[2]
      FROM sql_text s, regexp_matches(s.text, 'RAISE EXCEPTION ''([^'']*)'' USING ERRCODE = ''(PX[0-9A-Z]{3})''', 'g') m)
SELECT l.constant, l.object, l.literal, l.literal IS NOT DISTINCT FROM c.value AS ok
  FROM literal l LEFT JOIN c ON c.name = l.constant
 ORDER BY 1, 2, 3;

-- The batch maximum is not written in the SQL: max_messages is checked in C. A read of that many
-- is accepted, one more is PX002, the C's SQLSTATE for it.
SELECT message_count FROM pix_stream_start('94000001',
    (SELECT value::int FROM pg_temp.pix_constants() WHERE name = 'batch maximum'));
DO $$
BEGIN
    PERFORM pix_stream_start('94000001',
        (SELECT value::int + 1 FROM pg_temp.pix_constants() WHERE name = 'batch maximum'));
EXCEPTION WHEN OTHERS THEN
    RAISE NOTICE 'one more than the maximum: % (the C: %)', SQLSTATE,
        (SELECT value FROM pg_temp.pix_constants() WHERE name = 'SQLSTATE invalid max_messages');
END
$$;
SELECT pix_streams_stop_all('94000001');
