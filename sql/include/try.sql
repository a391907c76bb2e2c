-- try(statement, a, b, c): runs a statement with up to three text parameters ($1..$3) in the
-- current schema's suite; shows what it returned, or SQLSTATE, message and detail. Included with
-- \i by 10_auth and 11_send after each made its own schema tNN first in search_path.
CREATE FUNCTION try(statement text, a text DEFAULT NULL, b text DEFAULT NULL, c text DEFAULT NULL)
RETURNS text LANGUAGE plpgsql AS $$
DECLARE
    result text;
    detail text;
BEGIN
    EXECUTE statement INTO result USING a, b, c;
    RETURN 'ok: ' || coalesce(result, 'NULL');
EXCEPTION WHEN OTHERS THEN
    GET STACKED DIAGNOSTICS detail = PG_EXCEPTION_DETAIL;
    RETURN SQLSTATE || ' ' || SQLERRM || coalesce(' (' || nullif(detail, '') || ')', '');
END
$$;
GRANT EXECUTE ON FUNCTION try(text, text, text, text) TO PUBLIC;
