/*
 * bearer.h — the credentials pixd passes to the database, and the Authorization header they come
 * from. Pure functions (no server state): unit-tested (tests/test_bearer.c) and fuzzed
 * (test/fuzz/fuzz_bearer.c).
 *
 * A credential is a digest, never a secret (INTERFACES §2): "token:" or "cert:" followed by the
 * 64 lowercase hex digits of a SHA-256 — of the bearer token's bytes, or of the client
 * certificate's DER encoding. The database maps it to an ISPB (or to admin).
 */
#ifndef PIXD_BEARER_H
#define PIXD_BEARER_H

#include <stddef.h>

/* "token:" + 64 hex; "cert:" is shorter. */
#define CREDENTIAL_MAX (6 + 64)
/* A token longer than this is refused as malformed: pix_token_issue's are far shorter. */
#define BEARER_TOKEN_MAX 512

enum bearer_status {
	BEARER_ABSENT,    /* no Authorization header */
	BEARER_OK,        /* exactly one header "Bearer <b64token>" */
	BEARER_MALFORMED, /* anything else: another scheme, two headers, bad characters, too long */
};

/*
 * Parses the Authorization header lines (values[i] of lens[i] bytes, not NUL-terminated, n lines)
 * as RFC 6750 §2.1 says: "Bearer" (any case) 1*SP b64token, where b64token is
 * 1*( ALPHA / DIGIT / "-" / "." / "_" / "~" / "+" / "/" ) *"="; optional whitespace around the
 * whole value is ignored. On BEARER_OK, *token and *token_len point into values[0].
 */
enum bearer_status bearer_parse(const char *const *values, const size_t *lens, size_t n,
                                const char **token, size_t *token_len);

/* out (CREDENTIAL_MAX + 1 bytes) = "token:" + hex SHA-256 of the token's bytes. */
void bearer_token_credential(const char *token, size_t len, char *out);

/* out (CREDENTIAL_MAX + 1 bytes) = "cert:" + hex SHA-256 of a certificate's DER bytes. */
void bearer_cert_credential(const unsigned char *der, size_t len, char *out);

#endif
