-- pix 1.1 -> 1.2: liveness without writes, ...

\echo Use "ALTER EXTENSION pix UPDATE TO '1.2'" to load this file. \quit

-- Marks the live streams named by these ids (current id, or previous id while its batch is pending)
-- as read now, in one statement; returns how many. The HTTP server calls it for all its parked reads
-- at once. NULL, empty, malformed: 0, never an error.
CREATE FUNCTION pix_streams_keepalive(interation_ids text[]) RETURNS int
    AS 'MODULE_PATHNAME', 'pix_streams_keepalive' LANGUAGE C VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp;
REVOKE ALL ON FUNCTION pix_streams_keepalive(text[]) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION pix_streams_keepalive(text[]) TO pix_client;
