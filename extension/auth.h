/*
 * auth.h — authorization inside every client-facing function (README "Authentication and
 * authorization").
 *
 * Vocabulary:
 *   credential  what pixd passes for the authenticated client: "cert:<sha256 hex of the DER>" or
 *               "token:<sha256 hex of the bearer token>", a digest, never a secret.
 *   principal   what a credential maps to: one ISPB, or admin (no ISPB; the generator).
 *   binding     an SQL role confined to one ISPB (pix.role_binding): whoever calls as that role
 *               (or a role inheriting from it) acts only for that ISPB, with or without credential.
 */
#ifndef PIX_AUTH_H
#define PIX_AUTH_H

#include "postgres.h"

#include "fmgr.h"

/*
 * For a function acting on ispb (already checked by pix_ispb_arg): raises PX012 when the credential
 * argument (number argno; absent or NULL means none) is malformed, unknown or revoked, PX013 when
 * it belongs to another ISPB or to admin, or when the calling role is bound to another ISPB.
 * Call it before looking at any stream or message: a refusal must reveal nothing about them.
 */
extern void pix_authorize(const char *ispb, FunctionCallInfo fcinfo, int argno);

/* The ISPB argument (number 0) checked by pix_ispb_arg, then pix_authorize: what every
 * client-facing function of one ISPB starts with. */
extern char *pix_authorized_ispb(FunctionCallInfo fcinfo, int credential_argno);

/*
 * For the generator: with a credential, it must be an admin one (PX012/PX013); without, the
 * calling role must not be bound to an ISPB (PX013).
 */
extern void pix_authorize_admin(FunctionCallInfo fcinfo, int argno);

#endif
