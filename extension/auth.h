/*
 * auth.h — authorization inside every client-facing function (README
 * "Authentication and authorization").
 *
 * Vocabulary:
 *   credential  what pixd passes for the authenticated client: "cert:<sha256
 *               hex of the DER>" or "token:<sha256 hex of the bearer token>",
 *               a digest, never a secret.
 *   principal   what a credential maps to: one ISPB, or admin (no ISPB; the
 *               generator).
 *   binding     an SQL role confined to one ISPB (pix.role_binding): whoever
 *               logs in as that role, or calls as it (SET ROLE), or as a
 *               member of it, acts only for that ISPB, with or without
 *               credential. A member of pix_institution with no binding acts
 *               for none.
 */
#ifndef PIX_AUTH_H
#define PIX_AUTH_H

#include "postgres.h"

#include "fmgr.h"

/*
 * For a function acting on ispb (already checked by pix_ispb_arg): raises
 * PX012 when the credential argument (number argno; absent or NULL means none)
 * is malformed, unknown or revoked, PX013 when it belongs to another ISPB or
 * to admin, when the caller (session user or current role) is bound to another
 * ISPB, or holds the institution privileges with no binding at all. Call it
 * before looking at any stream or message: a refusal must reveal nothing about
 * them. True when the call was decided by an identity (a credential or a
 * binding), false when the caller is trusted (no credential, an unbound role
 * outside pix_institution: pixd --auth none, psql).
 */
extern bool
			pix_authorize(const char *ispb, FunctionCallInfo fcinfo, int argno);

/*
 * The ISPB argument (number 0) checked by pix_ispb_arg, then pix_authorize:
 * what every client-facing function of one ISPB starts with. authenticated
 * (may be NULL) gets its answer.
 */
extern char *pix_authorized_ispb(FunctionCallInfo fcinfo, int credential_argno,
								 bool *authenticated);

/*
 * For the generator: with a credential, it must be an admin one (PX012/PX013);
 * without, the caller must be neither bound nor an institution role (PX013).
 * True when a credential was given.
 */
extern bool pix_authorize_admin(FunctionCallInfo fcinfo, int argno);

/*
 * For an INSERT into pix.message (the trigger, whoever inserts): when the
 * caller is an institution role (a member of pix_institution that was also
 * given pix_producer), it pays only from the ISPB it is bound to (PX013;
 * unbound: PX013 too). Other producers are trusted and cost no lookup. owner:
 * the owner of pix.message (the extension's), as whom the bindings are read.
 */
extern void pix_authorize_payer(const char *payer, Oid owner);

/*
 * Registered institutions: an ISPB that holds (or held) a credential, has a
 * role binding, or opened a stream (a row in pix.institution). With
 * authentication, messages go only to them. pix_first_unregistered: the index
 * of the first of n ISPBs that is not registered, or -1.
 * pix_raise_unregistered: PX014, the detail "<field>: <ispb> is not a
 * registered institution".
 */
extern int	pix_first_unregistered(const char *const *ispbs, int n);
extern void pix_raise_unregistered(const char *field, const char *ispb)
			pg_attribute_noreturn();

#endif
