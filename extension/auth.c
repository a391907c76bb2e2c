/*
 * auth.c — who may act for which ISPB, decided inside every client-facing call
 * (see auth.h).
 *
 * Two questions, answered before the caller looks at any stream, id or
 * message, so a refusal (PX012 401, PX013 403) says nothing about them:
 *   - which principal the credential names: one indexed query per call that
 *     carries a credential (pix.credential, active rows only). Not cached: a
 *     revocation commits and the next call obeys.
 *   - which ISPB the caller is bound to (pix.role_binding): kept per backend,
 *     and forgotten on any relcache invalidation (a statement trigger on
 *     pix.role_binding sends one for it at commit) or change of roles or
 *     memberships (syscache callbacks), so a binding also holds from the next
 *     call on, while a call without credential (psql, pixd --auth none) costs
 *     no query at all.
 *
 * Constant time: the credential is itself a digest, and it is never compared
 * byte by byte with a stored value. The stored and looked-up key is
 * sha256(credential) ("digest of the digest"): the b-tree's comparisons may
 * take longer for longer common prefixes, but a prefix of a SHA-256 output
 * cannot be steered by the caller towards a stored key, so timing reveals
 * nothing usable.
 *
 * The caller is two roles, and both count: the session user (the login role; a
 * non-superuser cannot change it) and the current role (GetOuterUserId: the
 * session user or what SET ROLE chose), never the function owner that SECURITY
 * DEFINER switches to. Looking at the current role alone let a bound login
 * shed its binding with SET ROLE pix_institution (issue 18). So:
 *   - the bindings of both apply (a role is bound when it is bound itself or
 *     is a member of a bound role); they must all name one ISPB, and the call
 *     must be for it;
 *   - fail closed: a caller that holds the institution privileges (either role
 *     is a member of pix_institution) and has no binding is refused everything
 *     (PX013), so an institution role never bound, unbound, or dropped and
 *     re-created under its old name acts for nobody;
 *   - a binding names its role by OID and by the name it had when bound: a row
 *     whose role was dropped (or renamed) binds nobody, so a role made later
 *     with the same OID or name never inherits it (there are no event triggers
 *     on roles: the check is in the lookup).
 * The same rule confines an institution role's INSERT into pix.message
 * (pix_authorize_payer, from the validating trigger): it enqueues only
 * payments of its own ISPB. Superusers are members of every role for
 * pg_has_role, so for them only a binding of their own role counts (else any
 * binding would confine every superuser session), and they never count as
 * institution roles. Roles outside pix_institution with no binding (pixd's, a
 * member of pix_client) are trusted: the credential, when given, decides.
 */
#include "pix.h"

#include "catalog/pg_type.h"
#include "commands/trigger.h"
#include "common/cryptohash.h"
#include "common/sha2.h"
#include "executor/spi.h"
#include "miscadmin.h"
#include "utils/acl.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/inval.h"
#include "utils/rel.h"
#include "utils/syscache.h"

#include "auth.h"
#include "statement.h"
#include "validate.h"

#define CREDENTIAL_HEX_LEN 64
#define TOKEN_BYTES 32

/*
 * The ISPB bindings that apply to the caller (session user and current role).
 */
typedef struct binding
{
	int			count;			/* bindings that apply (the roles' own, or of
								 * roles they are members of) */
	bool		agree;			/* all of them name the same ISPB */
	bool
				institution;	/* either role is a non-superuser member of
								 * pix_institution */
	char		ispb[PIX_ISPB_LEN + 1];
} binding;

/*
 * What a call's checks go by: the credential's principal and the calling
 * role's binding.
 */
typedef struct caller
{
	bool
				has_credential; /* the argument was given (and well formed,
								 * else we raised) */
	bool		admin;			/* the credential is an admin one */
	char		ispb[PIX_ISPB_LEN + 1];
	binding		bound;
} caller;

static pix_statement credential_sql = {
	.sql =
	"SELECT c.ispb, c.admin FROM pix.credential c WHERE c.lookup = $1 AND "
	"c.revoked_at IS NULL",
	.nargs = 1,
	.types = {BYTEAOID},
	.read_only = true,
};
static pix_statement binding_sql = {
	.sql =
	"SELECT b.ispb FROM pix.role_binding b"
	"  JOIN pg_catalog.pg_roles r ON r.oid = b.role AND r.rolname = "
	"b.role_name"
	" WHERE b.role IN ($1, $2)"
	"    OR (NOT $3 AND pg_catalog.pg_has_role($1, b.role, 'MEMBER'))"
	"    OR (NOT $4 AND pg_catalog.pg_has_role($2, b.role, 'MEMBER'))",
	.nargs = 4,
	.types = {OIDOID, OIDOID, BOOLOID, BOOLOID},
	.read_only = true,
};

/*
 * Of a list of ISPBs, the position (1-based) of the first that is not a
 * registered institution: one that opened a stream (pix.institution), holds or
 * held a credential, or has a role binding (the same rule as pix_metrics'
 * labels, extension/pix--1.3--1.4.sql).
 */
static pix_statement unregistered_sql = {
	.sql =
	"SELECT r.n FROM pg_catalog.unnest($1) WITH ORDINALITY AS r(ispb, n)"
	" WHERE NOT EXISTS (SELECT FROM pix.institution i WHERE i.ispb = r.ispb "
	"COLLATE \"C\")"
	"   AND NOT EXISTS (SELECT FROM pix.credential c WHERE c.ispb = r.ispb "
	"COLLATE \"C\")"
	"   AND NOT EXISTS (SELECT FROM pix.role_binding b WHERE b.ispb = r.ispb "
	"COLLATE \"C\")"
	" ORDER BY r.n LIMIT 1",
	.nargs = 1,
	.types = {TEXTARRAYOID},
	.read_only = true,
};

/* The caller's binding, valid until an invalidation (see the header). */
static bool cached_binding_valid;
static Oid	cached_session_user,
			cached_current_role;
static binding cached_binding;
static bool callbacks_registered;

static text *credential_arg(FunctionCallInfo fcinfo, int argno);
static bool credential_key(text *credential, uint8 *key);
static void sha256(const void *data, size_t len, uint8 *out);
static void identify(FunctionCallInfo fcinfo, int argno, caller *c);
static void lookup_credential(Datum key, caller *c);
static void caller_binding(binding *b);
static void lookup_binding(Oid session_user, Oid current_role, binding *b);
static bool institution_role(Oid role);
static void forget_binding(Datum arg, Oid relid);
static void
			forget_binding_on_role_change(Datum arg, int cacheid, uint32 hashvalue);
static void raise_unauthenticated(void) pg_attribute_noreturn();
static void raise_forbidden(const char *detail) pg_attribute_noreturn();
static void raise_unbound(void) pg_attribute_noreturn();

bool
pix_authorize(const char *ispb, FunctionCallInfo fcinfo, int argno)
{
	caller		c;

	identify(fcinfo, argno, &c);
	if (c.has_credential && c.admin)
		raise_forbidden("An admin credential does not act for an institution.");
	if (c.has_credential && strcmp(c.ispb, ispb) != 0)
		raise_forbidden("This credential belongs to another ISPB.");
	if (c.bound.count > 0 && !c.bound.agree)
		raise_forbidden("This role's bindings name different ISPBs.");
	if (c.bound.count > 0 && strcmp(c.bound.ispb, ispb) != 0)
		raise_forbidden("This role is bound to another ISPB.");
	if (c.bound.count == 0 && c.bound.institution)
		raise_unbound();
	return c.has_credential || c.bound.count > 0;
}

char *
pix_authorized_ispb(FunctionCallInfo fcinfo, int credential_argno,
					bool *authenticated)
{
	char	   *ispb = pix_ispb_arg(PG_ARGISNULL(0) ? NULL : PG_GETARG_TEXT_PP(0));
	bool		by_identity = pix_authorize(ispb, fcinfo, credential_argno);

	if (authenticated != NULL)
		*authenticated = by_identity;
	return ispb;
}

bool
pix_authorize_admin(FunctionCallInfo fcinfo, int argno)
{
	caller		c;

	identify(fcinfo, argno, &c);
	if (c.has_credential && !c.admin)
		raise_forbidden("The generator needs an admin credential.");
	if (c.bound.count > 0)
		raise_forbidden("A role bound to an ISPB may not use the generator.");
	if (c.bound.institution)
		raise_unbound();
	return c.has_credential;
}

void
pix_authorize_payer(const char *payer, Oid owner)
{
	binding		b;
	Oid			user;
	int			context,
				nest;

	/*
	 * Trusted producers (and superusers) cost no lookup: only institution
	 * roles are confined.
	 */
	if (!institution_role(GetSessionUserId()) &&
		!institution_role(GetOuterUserId()))
		return;

	/*
	 * A trigger runs as the inserter, with its search_path: look up as the
	 * extension's owner, with the search_path every function of the extension
	 * pins (the plan is kept for them too).
	 */
	GetUserIdAndSecContext(&user, &context);
	SetUserIdAndSecContext(owner, context | SECURITY_LOCAL_USERID_CHANGE |
						   SECURITY_RESTRICTED_OPERATION);
	nest = NewGUCNestLevel();
	(void) set_config_option("search_path", "pg_catalog, pg_temp", PGC_USERSET,
							 PGC_S_SESSION, GUC_ACTION_SAVE, true, 0, false);
	caller_binding(&b);
	AtEOXact_GUC(true, nest);
	SetUserIdAndSecContext(user, context);
	if (b.count == 0)
		raise_unbound();
	if (!b.agree)
		raise_forbidden("This role's bindings name different ISPBs.");
	if (strcmp(b.ispb, payer) != 0)
		raise_forbidden("This role is bound to another ISPB: it enqueues payments of its own only.");
}

int
pix_first_unregistered(const char *const *ispbs, int n)
{
	Datum	   *elems = palloc(Max(n, 1) * sizeof(Datum));
	Datum		values[1];
	bool		isnull;
	int			nest,
				first = -1;

	for (int i = 0; i < n; i++)
		elems[i] = CStringGetTextDatum(ispbs[i]);
	values[0] = PointerGetDatum(
								construct_array(elems, n, TEXTOID, -1, false, TYPALIGN_INT));
	nest = pix_spi_connect();
	if (pix_execute(&unregistered_sql, values, NULL, 1) == 1)
		first = (int) DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0],
												  SPI_tuptable->tupdesc, 1,
												  &isnull)) -
			1;
	pix_spi_finish(nest);
	return first;
}

void
pix_raise_unregistered(const char *field, const char *ispb)
{
	ereport(ERROR,
			(errcode(ERRCODE_PIX_UNKNOWN_INSTITUTION),
			 errmsg("unknown institution"),
			 errdetail("%s: %s is not a registered institution", field, ispb),
			 errhint("With authentication, messages go only to institutions that hold a "
					 "credential or a role binding, or opened a stream.")));
	pg_unreachable();
}

/*
 * pix.new_token() RETURNS text: a bearer token, "pix_" and 64 hex digits (256
 * bits from pg_strong_random). Only pix_token_issue calls it; it stores a
 * digest and returns the token once.
 */
PG_FUNCTION_INFO_V1(pix_new_token);
Datum
pix_new_token(PG_FUNCTION_ARGS)
{
	static const char hex[] = "0123456789abcdef";
	uint8		bytes[TOKEN_BYTES];
	char		token[4 + 2 * TOKEN_BYTES + 1] = "pix_";

	if (!pg_strong_random(bytes, sizeof(bytes)))
		ereport(ERROR,
				(errcode(ERRCODE_INTERNAL_ERROR),
				 errmsg("could not generate random bytes for a token")));
	for (int i = 0; i < TOKEN_BYTES; i++)
	{
		token[4 + 2 * i] = hex[bytes[i] >> 4];
		token[5 + 2 * i] = hex[bytes[i] & 15];
	}
	token[sizeof(token) - 1] = '\0';
	explicit_bzero(bytes, sizeof(bytes));
	PG_RETURN_TEXT_P(cstring_to_text(token));
}

/*
 * AFTER ... FOR EACH STATEMENT trigger on pix.role_binding: every backend
 * forgets the bindings it knows when this transaction commits (a relcache
 * invalidation of the table reaches them all).
 */
PG_FUNCTION_INFO_V1(pix_role_binding_changed);
Datum
pix_role_binding_changed(PG_FUNCTION_ARGS)
{
	TriggerData *td = (TriggerData *) fcinfo->context;

	if (!CALLED_AS_TRIGGER(fcinfo))
		ereport(ERROR,
				(errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
				 errmsg("pix_role_binding_changed: not called by trigger manager")));
	CacheInvalidateRelcacheByRelid(RelationGetRelid(td->tg_relation));
	return PointerGetDatum(
						   NULL);	/* a statement trigger's result is
									 * ignored, but must not be NULL */
}

/*
 * The credential argument, or NULL when absent: an old SQL declaration without
 * it, or SQL NULL.
 */
static text *
credential_arg(FunctionCallInfo fcinfo, int argno)
{
	if (argno >= PG_NARGS() || PG_ARGISNULL(argno))
		return NULL;
	return PG_GETARG_TEXT_PP(argno);
}

/*
 * "cert:" or "token:" and 64 lowercase hex digits; key = sha256 of those
 * bytes.
 */
static bool
credential_key(text *credential, uint8 *key)
{
	const char *s = VARDATA_ANY(credential);
	size_t		len = VARSIZE_ANY_EXHDR(credential);
	size_t		prefix = 0;

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

static void
sha256(const void *data, size_t len, uint8 *out)
{
	pg_cryptohash_ctx *ctx = pg_cryptohash_create(PG_SHA256);

	if (ctx == NULL || pg_cryptohash_init(ctx) < 0 ||
		pg_cryptohash_update(ctx, data, len) < 0 ||
		pg_cryptohash_final(ctx, out, PG_SHA256_DIGEST_LENGTH) < 0)
		elog(ERROR, "pix: could not compute SHA-256: %s",
			 pg_cryptohash_error(ctx));
	pg_cryptohash_free(ctx);
}

static void
identify(FunctionCallInfo fcinfo, int argno, caller *c)
{
	text	   *credential = credential_arg(fcinfo, argno);
	uint8		key[PG_SHA256_DIGEST_LENGTH];
	bytea	   *key_datum;

	memset(c, 0, sizeof(*c));

	/*
	 * Declared without credential: the extension's SQL is older than 1.3 and
	 * has no auth tables.
	 */
	if (argno >= PG_NARGS())
		return;
	if (credential != NULL)
	{
		if (!credential_key(credential, key))
			raise_unauthenticated();
		key_datum = palloc(VARHDRSZ + sizeof(key));
		SET_VARSIZE(key_datum, VARHDRSZ + sizeof(key));
		memcpy(VARDATA(key_datum), key, sizeof(key));
		lookup_credential(PointerGetDatum(key_datum), c);
		if (!c->has_credential)
			raise_unauthenticated();
	}
	caller_binding(&c->bound);
}

/*
 * The caller's bindings (session user and current role), looked up once until
 * an invalidation.
 */
static void
caller_binding(binding *b)
{
	Oid			session_user = GetSessionUserId();
	Oid			current_role = GetOuterUserId();

	if (!cached_binding_valid || cached_session_user != session_user ||
		cached_current_role != current_role)
	{
		lookup_binding(session_user, current_role, &cached_binding);
		cached_session_user = session_user;
		cached_current_role = current_role;
		cached_binding_valid = true;
	}
	*b = cached_binding;
}

static void
lookup_credential(Datum key, caller *c)
{
	int			nest;
	Datum		values[1] = {key};
	bool		isnull;

	nest = pix_spi_connect();
	if (pix_execute(&credential_sql, values, NULL, 1) == 1)
	{
		char	   *ispb =
		SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1);

		c->has_credential = true;
		c->admin =
			DatumGetBool(SPI_getbinval(SPI_tuptable->vals[0],
									   SPI_tuptable->tupdesc, 2, &isnull));
		strlcpy(c->ispb, ispb ? ispb : "", sizeof(c->ispb));
	}
	pix_spi_finish(nest);
}

static void
lookup_binding(Oid session_user, Oid current_role, binding *b)
{
	Datum		values[4] = {ObjectIdGetDatum(session_user),
		ObjectIdGetDatum(current_role),
		BoolGetDatum(superuser_arg(session_user)),
	BoolGetDatum(superuser_arg(current_role))};

	if (!callbacks_registered)
	{
		CacheRegisterRelcacheCallback(forget_binding, (Datum) 0);
		CacheRegisterSyscacheCallback(AUTHOID, forget_binding_on_role_change,
									  (Datum) 0);
		CacheRegisterSyscacheCallback(AUTHMEMROLEMEM,
									  forget_binding_on_role_change,
									  (Datum) 0);
		callbacks_registered = true;
	}
	memset(b, 0, sizeof(*b));
	b->agree = true;
	b->institution =
		institution_role(session_user) || institution_role(current_role);
	SPI_connect();
	pix_execute(&binding_sql, values, NULL, 0);
	for (uint64 i = 0; i < SPI_processed; i++)
	{
		char	   *ispb =
		SPI_getvalue(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 1);

		if (b->count > 0 && strcmp(b->ispb, ispb) != 0)
			b->agree = false;
		strlcpy(b->ispb, ispb, sizeof(b->ispb));
		b->count++;
	}
	SPI_finish();
}

/*
 * Whether a role holds the institution privileges: a member (direct or not,
 * inheriting or not: it may SET ROLE) of pix_institution. Superusers may do
 * anything anyway and are judged by binding only.
 */
static bool
institution_role(Oid role)
{
	Oid			institution = get_role_oid("pix_institution", true);

	return OidIsValid(institution) && !superuser_arg(role) &&
		is_member_of_role_nosuper(role, institution);
}

/*
 * Any relcache invalidation (ours is among them) makes the next call look the
 * binding up again.
 */
static void
forget_binding(Datum arg, Oid relid)
{
	cached_binding_valid = false;
}

static void
forget_binding_on_role_change(Datum arg, int cacheid, uint32 hashvalue)
{
	cached_binding_valid = false;
}

static void
raise_unauthenticated(void)
{
	ereport(ERROR,
			(errcode(ERRCODE_PIX_UNAUTHENTICATED), errmsg("unauthenticated"),
			 errdetail("The credential is malformed, unknown or revoked.")));
	pg_unreachable();
}

/* Fail closed: an institution role without binding acts for no ISPB. */
static void
raise_unbound(void)
{
	ereport(ERROR,
			(errcode(ERRCODE_PIX_FORBIDDEN), errmsg("forbidden"),
			 errdetail("This role holds the institution privileges but is bound to no ISPB."),
			 errhint("An administrator binds it with pix_role_bind(role, ispb).")));
	pg_unreachable();
}

static void
raise_forbidden(const char *detail)
{
	ereport(ERROR, (errcode(ERRCODE_PIX_FORBIDDEN), errmsg("forbidden"),
					errdetail("%s", detail)));
	pg_unreachable();
}
