/*
 * auth.h — who is calling: the authentication modes, the credential of a request, and the
 * bookkeeping of failed authentications (counters, log lines, the per-address slow-down).
 *
 * pixd never decides what a credential may do: it passes the credential's digest with the one
 * SQL call of the route, and the extension answers PX012 (unknown, revoked, malformed → 401) or
 * PX013 (another institution's ISPB, or the generator without an admin credential → 403).
 * pixd only answers 401 itself when the request carries no usable credential at all.
 *
 * Modes (--auth): none (no credential, the database trusts pixd's role), token (Authorization:
 * Bearer), mtls (the client certificate; needs --tls-cert, --tls-key, --client-ca), or both
 * ("token,mtls": a client certificate is asked for but optional; a request presenting one is
 * identified by it, otherwise by its bearer token).
 */
#ifndef PIXD_AUTH_H
#define PIXD_AUTH_H

#include "bearer.h"
#include "pixd.h"

/* A throttled address's 401 leaves this long after the request. */
#define AUTH_DELAY_MS 1000

/* Checks the options together and against the listening address; prints why and returns -1 when
 * pixd must not start; warns loudly when it starts open on a non-loopback address. */
int auth_check_config(const char *listen);

/* "none", "token", "mtls", "token,mtls". */
const char *auth_mode_name(void);

enum auth_outcome {
	AUTH_OFF,       /* --auth none: credential NULL */
	AUTH_PRESENTED, /* out holds the credential; the database judges it */
	AUTH_MISSING,   /* no certificate, no Authorization */
	AUTH_MALFORMED, /* an Authorization header that is not one Bearer token */
};
/* The request's credential into out (CREDENTIAL_MAX + 1 bytes). */
enum auth_outcome auth_credential(h2o_req_t *req, char *out);

/* Records a failed authentication of req (why: "missing", "malformed", "rejected"; credential may
 * be NULL): counted, logged without any secret, remembered for its address. Returns 1 when the
 * 401 should be delayed by AUTH_DELAY_MS. */
int auth_failed(h2o_req_t *req, const char *why, const char *credential);
/* 1 when req's address failed too often lately (throttle.h): its unknown credentials are not
 * worth a query. */
int auth_address_throttled(h2o_req_t *req);
void auth_count_forbidden(void);
void auth_count_delayed(void);

/* Prometheus text of the counters above into buf; returns its length. */
size_t auth_metrics_text(char *buf, size_t cap);

#endif
