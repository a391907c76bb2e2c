-- pix 1.2 -> 1.3 (issue 9): credentials and authorization inside every client-facing function,
-- institutions send payments (pix_messages_send), stop all of an institution's streams.
-- The SQL interface is documented in README.md, "Authentication and authorization".

\echo Use "ALTER EXTENSION pix UPDATE TO '1.3'" to load this file. \quit

-- Certificates and tokens. `lookup` is sha256 of the credential string pixd passes
-- ('cert:<hex>' or 'token:<hex>'), never a secret: auth.c looks rows up by it (a digest of the
-- digest, so nothing secret-derived is compared byte by byte). One active row per credential.
CREATE TABLE pix.credential (
    credential_id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    kind          text NOT NULL CHECK (kind IN ('cert', 'token')),
    ispb          text COLLATE "C" CHECK (ispb ~ '^[0-9]{8}$'),
    admin         boolean NOT NULL DEFAULT false,
    lookup        bytea NOT NULL,
    fingerprint   text,            -- certificates: the SHA-256 of the DER, 64 lowercase hex
    label         text NOT NULL DEFAULT '',
    created_at    timestamptz NOT NULL DEFAULT clock_timestamp(),
    created_by    text NOT NULL DEFAULT session_user,
    revoked_at    timestamptz,
    revoked_by    text,
    CHECK ((ispb IS NULL) = admin),
    CHECK ((kind = 'cert') = (fingerprint IS NOT NULL))
);
CREATE UNIQUE INDEX credential_active ON pix.credential (lookup) WHERE revoked_at IS NULL;
CREATE INDEX credential_by_ispb ON pix.credential (ispb);

-- SQL roles confined to one ISPB (and the roles that are members of them).
CREATE TABLE pix.role_binding (
    role     oid PRIMARY KEY,
    ispb     text COLLATE "C" NOT NULL CHECK (ispb ~ '^[0-9]{8}$'),
    bound_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    bound_by text NOT NULL DEFAULT session_user
);

-- Backends keep the binding of their role; any change to the table makes them all forget it at
-- commit (auth.c), so a binding holds from the next call on.
CREATE FUNCTION pix.role_binding_changed() RETURNS trigger
    AS 'MODULE_PATHNAME', 'pix_role_binding_changed' LANGUAGE C;
CREATE TRIGGER role_binding_changed AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON pix.role_binding
    FOR EACH STATEMENT EXECUTE FUNCTION pix.role_binding_changed();

-- Every management change: who (session_user), when, which ISPB, what.
CREATE TABLE pix.credential_audit (
    audit_id      bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at            timestamptz NOT NULL DEFAULT clock_timestamp(),
    actor         text NOT NULL DEFAULT session_user,
    action        text NOT NULL,
    ispb          text,
    credential_id bigint,
    detail        text NOT NULL DEFAULT ''
);

-- endToEndIds accepted by pix_messages_send and the digest of their rendered body, kept for
-- pix.send_idempotency_horizon even after pix_purge_history() removed the message. Rows arrive in
-- accepted_at order, so a BRIN index finds the expired ones for a fraction of a b-tree's upkeep.
CREATE TABLE pix.sent_message (
    end_to_end_id  text COLLATE "C" PRIMARY KEY,
    content_digest bytea NOT NULL,
    sender_ispb    text NOT NULL,
    accepted_at    timestamptz NOT NULL
);
CREATE INDEX sent_message_by_time ON pix.sent_message USING brin (accepted_at);

REVOKE ALL ON pix.credential, pix.role_binding, pix.credential_audit, pix.sent_message FROM PUBLIC;

DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'pix_admin') THEN
        CREATE ROLE pix_admin NOLOGIN;
    END IF;
END
$$;
GRANT USAGE ON SCHEMA pix TO pix_admin;
GRANT SELECT ON pix.credential_audit, pix.role_binding TO pix_admin;

-- ---- the client-facing functions gain `credential` ----------------------------------------------
DROP FUNCTION pix_stream_start(text, int);
DROP FUNCTION pix_stream_next(text, text, int);
DROP FUNCTION pix_stream_stop(text, text);
DROP FUNCTION pix_generate_messages(text, int);

CREATE FUNCTION pix_stream_start(ispb text, max_messages int DEFAULT 1, credential text DEFAULT NULL)
    RETURNS pix_read
    AS 'MODULE_PATHNAME', 'pix_stream_start' LANGUAGE C VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp;

CREATE FUNCTION pix_stream_next(ispb text, interation_id text, max_messages int DEFAULT 1,
                                credential text DEFAULT NULL)
    RETURNS pix_read
    AS 'MODULE_PATHNAME', 'pix_stream_next' LANGUAGE C VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp;

CREATE FUNCTION pix_stream_stop(ispb text, interation_id text, credential text DEFAULT NULL)
    RETURNS int
    AS 'MODULE_PATHNAME', 'pix_stream_stop' LANGUAGE C VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp;

CREATE FUNCTION pix_generate_messages(ispb text, number int, credential text DEFAULT NULL)
    RETURNS int
    AS 'MODULE_PATHNAME', 'pix_generate_messages' LANGUAGE C VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp;

-- What a send answers: messages stored now, messages already accepted, the 201 JSON body.
CREATE TYPE pix_sent AS (accepted int, duplicates int, body text);

CREATE FUNCTION pix_messages_send(ispb text, body text, credential text DEFAULT NULL)
    RETURNS pix_sent
    AS 'MODULE_PATHNAME', 'pix_messages_send' LANGUAGE C VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp;

CREATE FUNCTION pix_streams_stop_all(ispb text, credential text DEFAULT NULL) RETURNS int
    AS 'MODULE_PATHNAME', 'pix_streams_stop_all' LANGUAGE C VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp;

REVOKE ALL ON FUNCTION pix_stream_start(text, int, text), pix_stream_next(text, text, int, text),
    pix_stream_stop(text, text, text), pix_generate_messages(text, int, text),
    pix_messages_send(text, text, text), pix_streams_stop_all(text, text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION pix_stream_start(text, int, text), pix_stream_next(text, text, int, text),
    pix_stream_stop(text, text, text), pix_generate_messages(text, int, text),
    pix_messages_send(text, text, text), pix_streams_stop_all(text, text) TO pix_client;

-- The group role for SQL roles of one institution (bound with pix_role_bind): the functions of one
-- ISPB and nothing else. Unlike pix_client (the HTTP server's), it cannot read pix_metrics() (every
-- institution's queue sizes) nor run the housekeeping functions.
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'pix_institution') THEN
        CREATE ROLE pix_institution NOLOGIN;
    END IF;
END
$$;
GRANT EXECUTE ON FUNCTION pix_stream_start(text, int, text), pix_stream_next(text, text, int, text),
    pix_stream_stop(text, text, text), pix_messages_send(text, text, text),
    pix_streams_stop_all(text, text) TO pix_institution;

-- ---- management (pix_admin) ---------------------------------------------------------------------
-- The helpers below run only inside the management functions (EXECUTE revoked from everyone);
-- they are SECURITY DEFINER with a pinned search_path like every function of the extension, so
-- no caller's role or search_path can ever reach into them.
CREATE FUNCTION pix.new_token() RETURNS text
    AS 'MODULE_PATHNAME', 'pix_new_token' LANGUAGE C VOLATILE STRICT SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp;
REVOKE ALL ON FUNCTION pix.new_token() FROM PUBLIC;

-- A fingerprint as 64 lowercase hex digits (upper case and ':' separators accepted), else 22023.
CREATE FUNCTION pix.fingerprint_arg(fingerprint text) RETURNS text
LANGUAGE plpgsql IMMUTABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    hex text := lower(replace(coalesce(fingerprint, ''), ':', ''));
BEGIN
    IF hex !~ '^[0-9a-f]{64}$' THEN
        RAISE EXCEPTION 'invalid certificate fingerprint' USING ERRCODE = '22023',
            DETAIL = 'A fingerprint is the SHA-256 of the certificate''s DER: 64 hex digits.';
    END IF;
    RETURN hex;
END
$$;

CREATE FUNCTION pix.ispb_arg(ispb text) RETURNS text
LANGUAGE plpgsql IMMUTABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF ispb IS NULL OR ispb !~ '^[0-9]{8}$' THEN
        RAISE EXCEPTION 'invalid ISPB' USING ERRCODE = 'PX001',
            DETAIL = 'An ISPB is exactly 8 ASCII digits.';
    END IF;
    RETURN ispb;
END
$$;

CREATE FUNCTION pix.lookup_key(credential text) RETURNS bytea
    LANGUAGE sql IMMUTABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
    AS $$ SELECT sha256(convert_to(credential, 'UTF8')) $$;

CREATE FUNCTION pix.audit(action text, ispb text, credential_id bigint, detail text) RETURNS void
    LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
    INSERT INTO pix.credential_audit (action, ispb, credential_id, detail)
    VALUES (action, ispb, credential_id, coalesce(detail, ''))
$$;

CREATE FUNCTION pix.certificate_add(ispb text, fingerprint text, label text) RETURNS bigint
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    fp text := pix.fingerprint_arg(fingerprint);
    id bigint;
BEGIN
    INSERT INTO pix.credential (kind, ispb, admin, lookup, fingerprint, label)
    VALUES ('cert', ispb, ispb IS NULL, pix.lookup_key('cert:' || fp), fp, coalesce(label, ''))
    RETURNING credential_id INTO id;
    PERFORM pix.audit(CASE WHEN ispb IS NULL THEN 'admin_certificate_add' ELSE 'certificate_add' END,
                      ispb, id, 'fingerprint ' || fp);
    RETURN id;
EXCEPTION WHEN unique_violation THEN
    RAISE EXCEPTION 'certificate already registered' USING ERRCODE = '23505',
        DETAIL = 'An active credential has this fingerprint; revoke it first.';
END
$$;

CREATE FUNCTION pix.token_issue(ispb text, label text) RETURNS text
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    token text := pix.new_token();
    id bigint;
BEGIN
    INSERT INTO pix.credential (kind, ispb, admin, lookup, label)
    VALUES ('token', ispb, ispb IS NULL,
            pix.lookup_key('token:' || encode(sha256(convert_to(token, 'UTF8')), 'hex')),
            coalesce(label, ''))
    RETURNING credential_id INTO id;
    PERFORM pix.audit(CASE WHEN ispb IS NULL THEN 'admin_token_issue' ELSE 'token_issue' END,
                      ispb, id, 'label ' || coalesce(label, ''));
    RETURN token;
END
$$;

CREATE FUNCTION pix_certificate_add(ispb text, fingerprint text, label text DEFAULT '')
    RETURNS bigint LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, pg_temp
    AS $$ SELECT pix.certificate_add(pix.ispb_arg(ispb), fingerprint, label) $$;

CREATE FUNCTION pix_admin_certificate_add(fingerprint text, label text DEFAULT '')
    RETURNS bigint LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, pg_temp
    AS $$ SELECT pix.certificate_add(NULL, fingerprint, label) $$;

CREATE FUNCTION pix_token_issue(ispb text, label text DEFAULT '')
    RETURNS text LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, pg_temp
    AS $$ SELECT pix.token_issue(pix.ispb_arg(ispb), label) $$;

CREATE FUNCTION pix_admin_token_issue(label text DEFAULT '')
    RETURNS text LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, pg_temp
    AS $$ SELECT pix.token_issue(NULL, label) $$;

CREATE FUNCTION pix_credential_revoke(credential_id bigint) RETURNS boolean
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    revoked pix.credential;
BEGIN
    UPDATE pix.credential c SET revoked_at = clock_timestamp(), revoked_by = session_user
     WHERE c.credential_id = pix_credential_revoke.credential_id AND c.revoked_at IS NULL
    RETURNING * INTO revoked;
    IF NOT FOUND THEN
        RETURN false;
    END IF;
    PERFORM pix.audit(revoked.kind || '_revoke', revoked.ispb, revoked.credential_id,
                      coalesce('fingerprint ' || revoked.fingerprint, 'label ' || revoked.label));
    RETURN true;
END
$$;

CREATE FUNCTION pix_certificate_revoke(fingerprint text) RETURNS int
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    fp text := pix.fingerprint_arg(fingerprint);
    n int := 0;
    id bigint;
BEGIN
    FOR id IN SELECT c.credential_id FROM pix.credential c
               WHERE c.kind = 'cert' AND c.fingerprint = fp AND c.revoked_at IS NULL LOOP
        IF @extschema@.pix_credential_revoke(id) THEN
            n := n + 1;
        END IF;
    END LOOP;
    RETURN n;
END
$$;

CREATE FUNCTION pix_credential_list(ispb text DEFAULT NULL)
RETURNS TABLE (credential_id bigint, kind text, ispb text, admin boolean, label text,
               fingerprint text, created_at timestamptz, created_by text, revoked_at timestamptz,
               revoked_by text)
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
    SELECT c.credential_id, c.kind, c.ispb, c.admin, c.label, c.fingerprint, c.created_at,
           c.created_by, c.revoked_at, c.revoked_by
      FROM pix.credential c
     WHERE pix_credential_list.ispb IS NULL OR c.ispb = pix_credential_list.ispb
     ORDER BY c.credential_id
$$;

CREATE FUNCTION pix_role_bind(role regrole, ispb text) RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    valid_ispb text := pix.ispb_arg(ispb);
BEGIN
    IF role IS NULL THEN
        RAISE EXCEPTION 'invalid role' USING ERRCODE = '22023';
    END IF;
    INSERT INTO pix.role_binding AS b (role, ispb) VALUES (role, valid_ispb)
    ON CONFLICT ON CONSTRAINT role_binding_pkey
    DO UPDATE SET ispb = excluded.ispb, bound_at = excluded.bound_at, bound_by = excluded.bound_by;
    PERFORM pix.audit('role_bind', valid_ispb, NULL, 'role ' || role::text);
END
$$;

CREATE FUNCTION pix_role_unbind(role regrole) RETURNS boolean
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    old_ispb text;
BEGIN
    DELETE FROM pix.role_binding b WHERE b.role = pix_role_unbind.role RETURNING b.ispb INTO old_ispb;
    IF NOT FOUND THEN
        RETURN false;
    END IF;
    PERFORM pix.audit('role_unbind', old_ispb, NULL, 'role ' || role::text);
    RETURN true;
END
$$;

REVOKE ALL ON FUNCTION pix_certificate_add(text, text, text), pix_admin_certificate_add(text, text),
    pix_token_issue(text, text), pix_admin_token_issue(text), pix_credential_revoke(bigint),
    pix_certificate_revoke(text), pix_credential_list(text), pix_role_bind(regrole, text),
    pix_role_unbind(regrole) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION pix_certificate_add(text, text, text), pix_admin_certificate_add(text, text),
    pix_token_issue(text, text), pix_admin_token_issue(text), pix_credential_revoke(bigint),
    pix_certificate_revoke(text), pix_credential_list(text), pix_role_bind(regrole, text),
    pix_role_unbind(regrole) TO pix_admin;
REVOKE ALL ON FUNCTION pix.new_token(), pix.fingerprint_arg(text), pix.ispb_arg(text),
    pix.lookup_key(text), pix.audit(text, text, bigint, text),
    pix.certificate_add(text, text, text), pix.token_issue(text, text) FROM PUBLIC;
