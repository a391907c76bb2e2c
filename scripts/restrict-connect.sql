-- Run in the pix database (scripts/run.sh, scripts/ha.sh, scripts/shards.sh; docker's entrypoints
-- run the same statements): only the project's roles may connect to it.
--
-- Why (issue 18): PostgreSQL cannot restrict LISTEN or NOTIFY per role. Any login that can connect
-- to the database may LISTEN pix_message, and so learn which ISPBs receive payments and when, or
-- NOTIFY pix_message, '<ispb>' and make pixd read again for every parked collector of that ISPB
-- (pixd coalesces those wakes per ISPB, which bounds the cost). What can be closed is the door:
-- CONNECT is revoked from PUBLIC and granted to the extension's group roles, whose members are the
-- server (pix_client), institutions (pix_institution), producers (pix_producer), operators
-- (pix_admin) and, on a shard, the router's copier (pix_credential_copy). Superusers connect anyway.
-- A role added later connects once it is made a member of one of them. docs/threat-model-sql.md.
DO $$
DECLARE
    r text;
BEGIN
    EXECUTE format('REVOKE CONNECT ON DATABASE %I FROM PUBLIC', current_database());
    FOREACH r IN ARRAY ARRAY['pix_client', 'pix_institution', 'pix_producer', 'pix_admin',
                             'pix_credential_copy'] LOOP
        IF EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = r) THEN
            EXECUTE format('GRANT CONNECT ON DATABASE %I TO %I', current_database(), r);
        END IF;
    END LOOP;
END
$$;
