/*
 * auth.c — who may act for which ISPB, decided inside every client-facing call (see auth.h).
 *
 * One query per call answers both questions: which principal the credential names (pix.credential,
 * active rows only) and which ISPBs the calling role is bound to (pix.role_binding). It runs before
 * the caller looks at any stream, id or message, so a refusal (PX012 401, PX013 403) says nothing
 * about them. Nothing is cached: a revocation or binding commits and the next call obeys it.
 *
 * Constant time: the credential is itself a digest, and it is never compared byte by byte with a
 * stored value. The stored and looked-up key is sha256(credential) ("digest of the digest"): the
 * b-tree's comparisons may take longer for longer common prefixes, but a prefix of a SHA-256 output
 * cannot be steered by the caller towards a stored key, so timing reveals nothing usable.
 *
 * The calling role is the session's current role (GetOuterUserId: the login role or SET ROLE), not
 * the function owner that SECURITY DEFINER switches to. A role is bound when it is bound itself or is
 * a member of a bound role; superusers are members of every role for pg_has_role, so for them only a
 * binding of their own role counts (else any binding would confine every superuser session).
 */
#include "pix.h"

#include "catalog/pg_type.h"
#include "common/cryptohash.h"
#include "common/sha2.h"
#include "executor/spi.h"
#include "miscadmin.h"
#include "utils/builtins.h"

#include "auth.h"
#include "validate.h"

PG_FUNCTION_INFO_V1(pix_new_token);

#define CREDENTIAL_HEX_LEN 64
#define TOKEN_BYTES 32

/* What the lookup found: the credential's principal and the calling role's binding. */
typedef struct caller {
	bool has_credential; /* the argument was given (and well formed, else we raised) */
	bool admin;          /* the credential is an admin one */
	char ispb[PIX_ISPB_LEN + 1];
	int bindings; /* ISPB bindings that apply to the calling role */
	bool bindings_agree;
	char bound_ispb[PIX_ISPB_LEN + 1];
} caller;

static const char lookup_sql[] =
    "SELECT true, c.ispb, c.admin FROM pix.credential c"
    " WHERE $1 IS NOT NULL AND c.lookup = $1 AND c.revoked_at IS NULL"
    " UNION ALL"
    " SELECT false, b.ispb, false FROM pix.role_binding b"
    " WHERE b.role = $2 OR (NOT $3 AND pg_catalog.pg_has_role($2, b.role, 'MEMBER'))";
static SPIPlanPtr lookup_plan;

static text *credential_arg(FunctionCallInfo fcinfo, int argno);
static bool credential_key(text *credential, uint8 *key);
static void sha256(const void *data, size_t len, uint8 *out);
static void identify(FunctionCallInfo fcinfo, int argno, caller *c);
static void run_lookup(Datum key, bool has_key, caller *c);
static void raise_unauthenticated(void) pg_attribute_noreturn();
static void raise_forbidden(const char *detail) pg_attribute_noreturn();

void pix_authorize(const char *ispb, FunctionCallInfo fcinfo, int argno)
{
	caller c;

	identify(fcinfo, argno, &c);
	if (c.has_credential && c.admin)
		raise_forbidden("An admin credential does not act for an institution.");
	if (c.has_credential && strcmp(c.ispb, ispb) != 0)
		raise_forbidden("This credential belongs to another ISPB.");
	if (c.bindings > 0 && (!c.bindings_agree || strcmp(c.bound_ispb, ispb) != 0))
		raise_forbidden("This role is bound to another ISPB.");
}

char *pix_authorized_ispb(FunctionCallInfo fcinfo, int credential_argno)
{
	char *ispb = pix_ispb_arg(PG_ARGISNULL(0) ? NULL : PG_GETARG_TEXT_PP(0));

	pix_authorize(ispb, fcinfo, credential_argno);
	return ispb;
}

void pix_authorize_admin(FunctionCallInfo fcinfo, int argno)
{
	caller c;

	identify(fcinfo, argno, &c);
	if (c.has_credential && !c.admin)
		raise_forbidden("The generator needs an admin credential.");
	if (c.bindings > 0)
		raise_forbidden("A role bound to an ISPB may not use the generator.");
}

/*
 * pix.new_token() RETURNS text: a bearer token, "pix_" and 64 hex digits (256 bits from
 * pg_strong_random). Only pix_token_issue calls it; it stores a digest and returns the token once.
 */
Datum pix_new_token(PG_FUNCTION_ARGS)
{
	static const char hex[] = "0123456789abcdef";
	uint8 bytes[TOKEN_BYTES];
	char token[4 + 2 * TOKEN_BYTES + 1] = "pix_";

	if (!pg_strong_random(bytes, sizeof(bytes)))
		ereport(ERROR, (errcode(ERRCODE_INTERNAL_ERROR),
		                errmsg("could not generate random bytes for a token")));
	for (int i = 0; i < TOKEN_BYTES; i++) {
		token[4 + 2 * i] = hex[bytes[i] >> 4];
		token[5 + 2 * i] = hex[bytes[i] & 15];
	}
	token[sizeof(token) - 1] = '\0';
	explicit_bzero(bytes, sizeof(bytes));
	PG_RETURN_TEXT_P(cstring_to_text(token));
}

/* The credential argument, or NULL when absent: an old SQL declaration without it, or SQL NULL. */
static text *credential_arg(FunctionCallInfo fcinfo, int argno)
{
	if (argno >= PG_NARGS() || PG_ARGISNULL(argno))
		return NULL;
	return PG_GETARG_TEXT_PP(argno);
}

/* "cert:" or "token:" and 64 lowercase hex digits; key = sha256 of those bytes. */
static bool credential_key(text *credential, uint8 *key)
{
	const char *s = VARDATA_ANY(credential);
	size_t len = VARSIZE_ANY_EXHDR(credential);
	size_t prefix = 0;

	if (len == 5 + CREDENTIAL_HEX_LEN && memcmp(s, "cert:", 5) == 0)
		prefix = 5;
	else if (len == 6 + CREDENTIAL_HEX_LEN && memcmp(s, "token:", 6) == 0)
		prefix = 6;
	else
		return false;
	for (size_t i = prefix; i < len; i++)
		if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f')))
			return false;
	sha256(s, len, key);
	return true;
}

static void sha256(const void *data, size_t len, uint8 *out)
{
	pg_cryptohash_ctx *ctx = pg_cryptohash_create(PG_SHA256);

	if (ctx == NULL || pg_cryptohash_init(ctx) < 0 || pg_cryptohash_update(ctx, data, len) < 0 ||
	    pg_cryptohash_final(ctx, out, PG_SHA256_DIGEST_LENGTH) < 0)
		elog(ERROR, "pix: could not compute SHA-256: %s", pg_cryptohash_error(ctx));
	pg_cryptohash_free(ctx);
}

static void identify(FunctionCallInfo fcinfo, int argno, caller *c)
{
	text *credential = credential_arg(fcinfo, argno);
	uint8 key[PG_SHA256_DIGEST_LENGTH];
	bytea *key_datum = NULL;

	memset(c, 0, sizeof(*c));
	c->bindings_agree = true;
	/* Declared without credential: the extension's SQL is older than 1.3 and has no auth tables. */
	if (argno >= PG_NARGS())
		return;
	if (credential != NULL) {
		if (!credential_key(credential, key))
			raise_unauthenticated();
		key_datum = palloc(VARHDRSZ + sizeof(key));
		SET_VARSIZE(key_datum, VARHDRSZ + sizeof(key));
		memcpy(VARDATA(key_datum), key, sizeof(key));
	}
	run_lookup(PointerGetDatum(key_datum), credential != NULL, c);
	if (credential != NULL && !c->has_credential)
		raise_unauthenticated();
}

/* One query: the credential's row (if any) and the bindings of the calling role. */
static void run_lookup(Datum key, bool has_key, caller *c)
{
	Oid role = GetOuterUserId();
	Datum values[3] = {key, ObjectIdGetDatum(role), BoolGetDatum(superuser_arg(role))};
	char nulls[3] = {has_key ? ' ' : 'n', ' ', ' '};
	int rc;

	SPI_connect();
	if (lookup_plan == NULL) {
		Oid types[3] = {BYTEAOID, OIDOID, BOOLOID};
		SPIPlanPtr plan = SPI_prepare(lookup_sql, 3, types);

		if (plan == NULL)
			elog(ERROR, "pix: could not prepare the credential lookup: %s",
			     SPI_result_code_string(SPI_result));
		SPI_keepplan(plan);
		lookup_plan = plan;
	}
	rc = SPI_execute_plan(lookup_plan, values, nulls, true, 0);
	if (rc != SPI_OK_SELECT)
		elog(ERROR, "pix: the credential lookup failed: %s", SPI_result_code_string(rc));
	for (uint64 i = 0; i < SPI_processed; i++) {
		HeapTuple row = SPI_tuptable->vals[i];
		TupleDesc desc = SPI_tuptable->tupdesc;
		bool isnull;
		bool is_credential = DatumGetBool(SPI_getbinval(row, desc, 1, &isnull));
		char *ispb = SPI_getvalue(row, desc, 2);

		if (is_credential) {
			c->has_credential = true;
			c->admin = DatumGetBool(SPI_getbinval(row, desc, 3, &isnull));
			strlcpy(c->ispb, ispb ? ispb : "", sizeof(c->ispb));
		} else {
			if (c->bindings > 0 && strcmp(c->bound_ispb, ispb) != 0)
				c->bindings_agree = false;
			strlcpy(c->bound_ispb, ispb, sizeof(c->bound_ispb));
			c->bindings++;
		}
	}
	SPI_finish();
}

static void raise_unauthenticated(void)
{
	ereport(ERROR, (errcode(ERRCODE_PIX_UNAUTHENTICATED), errmsg("unauthenticated"),
	                errdetail("The credential is malformed, unknown or revoked.")));
	pg_unreachable();
}

static void raise_forbidden(const char *detail)
{
	ereport(ERROR, (errcode(ERRCODE_PIX_FORBIDDEN), errmsg("forbidden"), errdetail("%s", detail)));
	pg_unreachable();
}
