/*
 * auth.c — authentication modes, the credential of a request, failed authentications.
 *
 * Failed authentications are counted by reason, logged (address, reason, and at most the first
 * 12 hex digits of the credential's digest: never a token, never a whole digest) and remembered
 * per address (throttle.c). The log is bounded: at most LOG_PER_SECOND lines a second, the rest
 * counted and reported on the next line, so a flood of failures cannot flood the log.
 */
#include <arpa/inet.h>
#include <netdb.h>
#include <stdio.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>
#include "auth.h"
#include "credcache.h"
#include "peers.h"
#include "throttle.h"
#include "tls.h"

#define LOG_PER_SECOND 20
#define MAX_AUTH_LINES 4 /* more Authorization lines than this are malformed anyway */

enum reason { R_MISSING, R_MALFORMED, R_REJECTED, R_N };
static const char *const reason_names[R_N] = {"missing", "malformed", "rejected"};

static struct {
	uint64_t failures[R_N];
	uint64_t forbidden;
	uint64_t delayed;
	uint64_t log_second;
	int logged_this_second;
	uint64_t not_logged;
} counters;

static int host_is_loopback(const char *listen);
static void log_failure(h2o_req_t *req, const char *why, const char *credential);
static void peer_text(h2o_req_t *req, char *out, size_t cap);

/* 1 when every address the listening host resolves to is loopback (127.0.0.0/8, ::1). */
static int host_is_loopback(const char *listen)
{
	const char *colon = strrchr(listen, ':');
	char host[256];
	size_t len = colon != NULL ? (size_t)(colon - listen) : 0;
	struct addrinfo hints = {0}, *ai, *p;
	int loopback = 1;

	if (len >= 2 && listen[0] == '[' && listen[len - 1] == ']') {
		listen++;
		len -= 2;
	}
	if (len == 0 || len >= sizeof(host))
		return 0; /* ":3000" listens on every address */
	memcpy(host, listen, len);
	host[len] = '\0';
	hints.ai_socktype = SOCK_STREAM;
	hints.ai_flags = AI_PASSIVE;
	if (getaddrinfo(host, NULL, &hints, &ai) != 0)
		return 0;
	for (p = ai; p != NULL; p = p->ai_next) {
		if (p->ai_family == AF_INET)
			loopback &= (ntohl(((struct sockaddr_in *)p->ai_addr)->sin_addr.s_addr) >> 24) == 127;
		else if (p->ai_family == AF_INET6)
			loopback &= IN6_IS_ADDR_LOOPBACK(&((struct sockaddr_in6 *)p->ai_addr)->sin6_addr);
		else
			loopback = 0;
	}
	freeaddrinfo(ai);
	return loopback;
}

int auth_check_config(const char *listen)
{
	const struct pixd_config *c = &pixd_config;
	int tls = c->tls_cert != NULL, loopback = host_is_loopback(listen);
	uint64_t seed = 0;

	if ((c->tls_cert == NULL) != (c->tls_key == NULL)) {
		fprintf(stderr, "pixd: --tls-cert and --tls-key go together\n");
		return -1;
	}
	if ((c->auth_modes & AUTH_MTLS) && (!tls || c->client_ca == NULL)) {
		fprintf(stderr, "pixd: --auth mtls needs --tls-cert, --tls-key and --client-ca\n");
		return -1;
	}
	if (c->client_ca != NULL && !(c->auth_modes & AUTH_MTLS)) {
		fprintf(stderr, "pixd: --client-ca is only used with --auth mtls (or token,mtls)\n");
		return -1;
	}
	if (!loopback && !c->insecure_open && (c->auth_modes == 0 || !tls)) {
		fprintf(stderr,
		        "pixd: refusing to serve %s on %s, which is not a loopback address: anyone who "
		        "reaches it could %s. Use --auth token|mtls with --tls-cert/--tls-key, or "
		        "--insecure-open if you really mean it.\n",
		        c->auth_modes == 0 ? "without authentication (--auth none)" : "plain HTTP", listen,
		        c->auth_modes == 0 ? "read and confirm any institution's payments"
		                           : "read the bearer tokens on the wire");
		return -1;
	}
	if (!loopback && (c->auth_modes == 0 || !tls))
		pixd_log("WARNING: --insecure-open: serving %s on %s, a non-loopback address. ANYONE WHO "
		         "REACHES IT CAN %s.",
		         c->auth_modes == 0 ? "WITHOUT AUTHENTICATION" : "PLAIN HTTP", listen,
		         c->auth_modes == 0 ? "READ AND CONFIRM EVERY INSTITUTION'S PAYMENTS"
		                            : "READ THE BEARER TOKENS ON THE WIRE");
	if (getrandom(&seed, sizeof(seed), 0) != sizeof(seed))
		seed = (uint64_t)time(NULL);
	throttle_init(seed);
	credcache_init(seed * 31 + 7);
	peers_init(seed * 17 + 3);
	return 0;
}

const char *auth_mode_name(void)
{
	static const char *const names[] = {"none", "token", "mtls", "token,mtls"};

	return names[pixd_config.auth_modes & 3];
}

enum auth_outcome auth_credential(h2o_req_t *req, char *out)
{
	const char *values[MAX_AUTH_LINES], *token;
	size_t lens[MAX_AUTH_LINES], n = 0, token_len;
	ssize_t i = -1;

	if (pixd_config.auth_modes == 0)
		return AUTH_OFF;
	if (pixd_config.auth_modes & AUTH_MTLS) {
		int expired;
		const char *cert = tls_peer_credential(req, &expired);
		if (cert != NULL) {
			strcpy(out, cert);
			return AUTH_PRESENTED;
		}
		if (expired) /* the next connection's handshake will refuse the certificate */
			req->http1_is_persistent = 0;
	}
	if (!(pixd_config.auth_modes & AUTH_TOKEN))
		return AUTH_MISSING;
	while ((i = h2o_find_header(&req->headers, H2O_TOKEN_AUTHORIZATION, i)) != -1) {
		if (n == MAX_AUTH_LINES)
			return AUTH_MALFORMED;
		values[n] = req->headers.entries[i].value.base;
		lens[n++] = req->headers.entries[i].value.len;
	}
	switch (bearer_parse(values, lens, n, &token, &token_len)) {
	case BEARER_ABSENT:
		return AUTH_MISSING;
	case BEARER_MALFORMED:
		return AUTH_MALFORMED;
	case BEARER_OK:
		break;
	}
	bearer_token_credential(token, token_len, out);
	return AUTH_PRESENTED;
}

static void peer_text(h2o_req_t *req, char *out, size_t cap)
{
	struct sockaddr_storage ss;
	socklen_t len = req->conn->callbacks->get_peername(req->conn, (struct sockaddr *)&ss);

	if (len == 0 ||
	    getnameinfo((struct sockaddr *)&ss, len, out, cap, NULL, 0, NI_NUMERICHOST) != 0)
		snprintf(out, cap, "?");
}

static void log_failure(h2o_req_t *req, const char *why, const char *credential)
{
	uint64_t second = h2o_now(pixd_loop) / 1000;
	char peer[NI_MAXHOST], shown[32] = "";
	const char *colon = credential != NULL ? strchr(credential, ':') : NULL;

	if (second != counters.log_second) {
		counters.log_second = second;
		counters.logged_this_second = 0;
	}
	if (counters.logged_this_second++ >= LOG_PER_SECOND) {
		counters.not_logged++;
		return;
	}
	peer_text(req, peer, sizeof(peer));
	/* The kind and a 12-digit prefix of the digest: enough to match the audit table, not a key. */
	if (colon != NULL)
		snprintf(shown, sizeof(shown), ", credential %.*s...", (int)(colon - credential) + 13,
		         credential);
	pixd_log("authentication failed (%s) from %s on %.*s %.*s%s", why, peer,
	         (int)(req->method.len < 8 ? req->method.len : 8), req->method.base,
	         (int)(req->path_normalized.len < 96 ? req->path_normalized.len : 96),
	         req->path_normalized.base, shown);
	if (counters.not_logged > 0) {
		pixd_log("%llu more failed authentications were not logged",
		         (unsigned long long)counters.not_logged);
		counters.not_logged = 0;
	}
}

int auth_failed(h2o_req_t *req, const char *why, const char *credential)
{
	struct sockaddr_storage ss;
	socklen_t len = req->conn->callbacks->get_peername(req->conn, (struct sockaddr *)&ss);

	for (int r = 0; r < R_N; r++)
		if (strcmp(why, reason_names[r]) == 0)
			counters.failures[r]++;
	log_failure(req, why, credential);
	return len != 0 && throttle_failure((struct sockaddr *)&ss, len, h2o_now(pixd_loop));
}

int auth_address_throttled(h2o_req_t *req)
{
	struct sockaddr_storage ss;
	socklen_t len = req->conn->callbacks->get_peername(req->conn, (struct sockaddr *)&ss);

	return len != 0 && throttle_is_throttled((struct sockaddr *)&ss, len, h2o_now(pixd_loop));
}

void auth_count_forbidden(void)
{
	counters.forbidden++;
}

void auth_count_delayed(void)
{
	counters.delayed++;
}

size_t auth_metrics_text(char *buf, size_t cap)
{
	size_t len = 0;
	int n;

#define APPEND(...)                                                                                \
	do {                                                                                           \
		n = snprintf(buf + len, cap - len, __VA_ARGS__);                                           \
		if (n < 0 || (size_t)n >= cap - len)                                                       \
			return len;                                                                            \
		len += (size_t)n;                                                                          \
	} while (0)
	APPEND("# HELP pixd_auth_failures_total Failed authentications, by reason (401s: missing "
	       "credential, malformed Authorization, rejected (unknown or revoked) credential; "
	       "tls_handshake: a client certificate refused by the TLS handshake).\n"
	       "# TYPE pixd_auth_failures_total counter\n");
	for (int r = 0; r < R_N; r++)
		APPEND("pixd_auth_failures_total{reason=\"%s\"} %llu\n", reason_names[r],
		       (unsigned long long)counters.failures[r]);
	APPEND("pixd_auth_failures_total{reason=\"tls_handshake\"} %llu\n",
	       (unsigned long long)tls_handshakes_refused());
	APPEND("# HELP pixd_auth_forbidden_total Requests answered 403 (another institution's ISPB, or "
	       "the generator without an admin credential).\n# TYPE pixd_auth_forbidden_total "
	       "counter\npixd_auth_forbidden_total %llu\n",
	       (unsigned long long)counters.forbidden);
	APPEND("# HELP pixd_auth_delayed_total 401 answers delayed because their address kept "
	       "failing.\n# TYPE pixd_auth_delayed_total counter\npixd_auth_delayed_total %llu\n",
	       (unsigned long long)counters.delayed);
	APPEND("# HELP pixd_auth_failing_addresses Addresses remembered with a failed authentication "
	       "in the last minute.\n# TYPE pixd_auth_failing_addresses gauge\n"
	       "pixd_auth_failing_addresses %d\n",
	       throttle_tracked(h2o_now(pixd_loop)));
	APPEND("# HELP pixd_admission_refused_total What clients were refused before the database "
	       "judged them: per_address (a connection beyond --max-connections-per-address, closed "
	       "at accept), unverified_queue (503: a credential not accepted recently, beyond its "
	       "share of --max-queue), throttled_no_query (401 without a query to an address that "
	       "keeps failing), buffered (a connection closed while receiving a request, the largest "
	       "when --max-buffered-mb was exceeded).\n# TYPE pixd_admission_refused_total counter\n"
	       "pixd_admission_refused_total{reason=\"per_address\"} %llu\n"
	       "pixd_admission_refused_total{reason=\"buffered\"} %llu\n"
	       "pixd_admission_refused_total{reason=\"unverified_queue\"} %llu\n"
	       "pixd_admission_refused_total{reason=\"throttled_no_query\"} %llu\n",
	       (unsigned long long)pixd_metrics.connections_refused_per_address,
	       (unsigned long long)pixd_metrics.connections_shed_buffered,
	       (unsigned long long)pixd_metrics.unverified_refused,
	       (unsigned long long)pixd_metrics.throttled_no_query);
	APPEND("# HELP pixd_credentials_known_good Credentials the database accepted in the last "
	       "minute.\n# TYPE pixd_credentials_known_good gauge\npixd_credentials_known_good %d\n",
	       credcache_size(h2o_now(pixd_loop)));
	APPEND("# HELP pixd_connected_addresses Client addresses (IPv6: /64) with a connection "
	       "open.\n# TYPE pixd_connected_addresses gauge\npixd_connected_addresses %d\n",
	       peers_addresses());
	APPEND("# HELP pixd_health_cached_total GET /health answered from the last probe or the "
	       "pool's state, without a query.\n# TYPE pixd_health_cached_total counter\n"
	       "pixd_health_cached_total %llu\n",
	       (unsigned long long)pixd_metrics.health_answers_cached);
#undef APPEND
	return len;
}
