/*
 * respond.c — the response helpers: the one way every response leaves the server, and the lifetime
 * of requests answered later (async_req), with the base of those answered by one database call
 * (db_request: submit or 503, detach, the result's triage, written once for every handler).
 *
 * Every error body is application/problem+json (RFC 9457) with type, title, status and detail.
 * Details are fixed strings chosen here or by the handlers, never a database message or request
 * text — with exceptions the contract asks for: PX010 (422), PX011 (409) and PX014 (422, a receiver
 * that is not a registered institution) of a send name the message's index and field, or the
 * endToEndId, in the database's words, JSON-escaped here. They only describe the sender's own body,
 * and only after the database authorized the sender.
 *
 * Authentication (auth.c decides who is calling): 401 carries WWW-Authenticate: Bearer when tokens
 * are accepted (with error="invalid_token" when one was presented); a 401 to an address that keeps
 * failing is sent AUTH_DELAY_MS later from a timer, never by blocking the loop; from such an address
 * a credential the database has not accepted recently (credcache.h) is answered so without a query.
 *
 * Compression: gzip (zlib, one deflate state reused with deflateReset: the loop is single-threaded)
 * whenever Accept-Encoding allows it and there is a body; Vary: Accept-Encoding on every body.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>
#include <zlib.h>
#include "accept.h"
#include "auth.h"
#include "credcache.h"
#include "respond.h"

#define RETRY_AFTER_DB_DOWN 2
#define RETRY_AFTER_BUSY 1

static int gzip_body(h2o_req_t *req, const char *body, size_t len, h2o_iovec_t *out);
static double request_ms(h2o_req_t *req);
static void async_dispose(void *p);
static const char *reason_phrase(int status);
static int sqlstate_is_transient(const char *s);
static int retry_after_jittered(int seconds);
static void respond_problem_escaped(h2o_req_t *req, int status, const char *detail);
static const char *send_error_detail(const PGresult *res);
static void send_unauthenticated(h2o_req_t *req, int token_presented);
static void on_auth_delay(h2o_timeout_entry_t *entry);
static void detach_auth_delay(struct async_req *a);
static void db_request_detach(struct async_req *a);
static void db_request_on_result(db_query_t *q, PGresult *res, enum db_failure failure);

/* A 401 answered later: the request's state while the delay runs. */
struct auth_delay {
	struct async_req base;
	h2o_timeout_entry_t timer;
	int token_presented;
};
static int shard_unreachable(const char *sqlstate, const PGresult *res);

static int in_flight;

int async_req_in_flight(void)
{
	return in_flight;
}

/* ---- asynchronous requests ---------------------------------------------------------------- */

void *async_req_new(h2o_req_t *req, size_t size, void (*detach)(struct async_req *a))
{
	struct async_req *a = h2o_mem_alloc_shared(&req->pool, size, async_dispose);

	memset(a, 0, size);
	a->req = req;
	a->detach = detach;
	snprintf(a->log_method, sizeof(a->log_method), "%.*s", (int)req->method.len, req->method.base);
	snprintf(a->log_path, sizeof(a->log_path), "%.*s", (int)req->input.path.len,
	         req->input.path.base);
	in_flight++;
	return a;
}

h2o_req_t *async_req_answer(struct async_req *a)
{
	a->answered = 1;
	in_flight--;
	return a->req;
}

/*
 * h2o 2.2 does not read the socket of an HTTP/1.1 request being handled, so it learns that the
 * client closed only when it writes the answer. A peek tells now: recv returns 0 at the end of the
 * stream (or an error once the peer reset it). Bytes waiting (a pipelined request, HTTP/2 frames)
 * say nothing about this request: the client is taken as present.
 */
int async_req_client_departed(struct async_req *a)
{
	h2o_socket_t *sock = a->req->conn->callbacks->get_socket(a->req->conn);
	char byte;
	ssize_t n;

	if (sock == NULL)
		return 0;
	n = recv(h2o_socket_get_fd(sock), &byte, 1, MSG_PEEK | MSG_DONTWAIT);
	return n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR);
}

h2o_req_t *async_req_abandon(struct async_req *a)
{
	pixd_metrics.clients_departed++;
	a->req->http1_is_persistent = 0;
	return async_req_answer(a);
}

/* h2o frees the request: answered long ago, or the client left first. */
static void async_dispose(void *p)
{
	struct async_req *a = p;

	a->detach(a);
	if (!a->answered) {
		a->answered = 1;
		in_flight--;
		pixd_metrics.clients_gone++;
		if (pixd_config.access_log)
			pixd_log("%s %s - client gone before the answer", a->log_method, a->log_path);
	}
}

/* ---- requests answered by one database call (respond.h: struct db_request) ------------------ */

void db_request_start(h2o_req_t *req, size_t size, const struct db_request_class *cls,
                      const struct route_values *v)
{
	struct db_request *r = async_req_new(req, size, db_request_detach);
	enum db_submit_status st;

	r->cls = cls;
	r->query.cb = db_request_on_result;
	if (cls->prepare(r, v) != 0)
		return;
	if ((st = db_submit(&r->query)) != DB_SUBMITTED)
		respond_db_rejected(db_request_answer(r), st);
}

h2o_req_t *db_request_answer(struct db_request *r)
{
	if (r->cls->leave != NULL)
		r->cls->leave(r);
	return async_req_answer(&r->base);
}

/* h2o frees the request (answered, or the client left): nothing may reach the state after this. */
static void db_request_detach(struct async_req *a)
{
	struct db_request *r = (struct db_request *)a;

	db_cancel(&r->query);
	if (r->cls->leave != NULL)
		r->cls->leave(r);
}

static void db_request_on_result(db_query_t *q, PGresult *res, enum db_failure failure)
{
	struct db_request *r = H2O_STRUCT_FROM_MEMBER(struct db_request, query, q);

	if (failure != DB_FAIL_NONE) {
		if (r->cls->on_failure == NULL || !r->cls->on_failure(r, failure))
			respond_db_failure(db_request_answer(r), failure);
	} else if (PQresultStatus(res) != PGRES_TUPLES_OK) {
		respond_db_error(db_request_answer(r), res);
	} else {
		r->cls->on_rows(r, res);
	}
}

/* ---- responses ---------------------------------------------------------------------------- */

void add_header(h2o_req_t *req, const char *name, const char *value, size_t len)
{
	/* The value may live in a PGresult about to be cleared: the pool copy lives as long as req. */
	h2o_iovec_t copy = h2o_strdup(&req->pool, value, len);
	/* HTTP/2 (over TLS, ALPN h2) forbids upper case in names: h2o sends name there, and orig_name
	 * ("Pull-Next" as written here) on HTTP/1.1. */
	h2o_iovec_t lower = h2o_strdup(&req->pool, name, strlen(name));

	h2o_strtolower(lower.base, lower.len);
	h2o_add_header_by_str(&req->pool, &req->res.headers, lower.base, lower.len, 1,
	                      h2o_strdup(&req->pool, name, strlen(name)).base, copy.base, copy.len);
}

void respond(h2o_req_t *req, int status, const char *content_type, const char *body, size_t len)
{
	static h2o_generator_t generator = {NULL, NULL};
	h2o_iovec_t buf = {NULL, 0};
	double ms;

	req->res.status = status;
	req->res.reason = reason_phrase(status);
	if (content_type != NULL) {
		h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_CONTENT_TYPE, NULL, content_type,
		               strlen(content_type));
		h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_VARY, NULL,
		               H2O_STRLIT("Accept-Encoding"));
		if (accept_gzip(req) && gzip_body(req, body, len, &buf) == 0)
			h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_CONTENT_ENCODING, NULL,
			               H2O_STRLIT("gzip"));
		else
			buf = h2o_strdup(&req->pool, body, len);
		req->res.content_length = buf.len;
	} else if (status != 204) {
		req->res.content_length = 0;
	}
	pixd_metrics.responses_by_class[status / 100 < 6 ? status / 100 : 5]++;
	ms = request_ms(req);
	metrics_observe(req, status, ms);
	log_access(req->method.base, req->method.len, req->input.path.base, req->input.path.len, status,
	           ms);
	h2o_start_response(req, &generator);
	h2o_send(req, &buf, buf.len != 0 ? 1 : 0, H2O_SEND_STATE_FINAL);
}

void respond_json(h2o_req_t *req, int status, const char *json)
{
	respond(req, status, "application/json", json, strlen(json));
}

void respond_problem(h2o_req_t *req, int status, const char *detail)
{
	char body[512];
	int len =
	    snprintf(body, sizeof(body),
	             "{\"type\":\"about:blank\",\"title\":\"%s\",\"status\":%d,\"detail\":\"%s\"}",
	             reason_phrase(status), status, detail);

	respond(req, status, "application/problem+json", body, (size_t)len < sizeof(body) ? len : 0);
}

/*
 * Clients refused together must not come back together: the value is drawn uniformly from
 * [seconds, 3 * seconds], so a burst refused in one second returns spread over the next few.
 */
static int retry_after_jittered(int seconds)
{
	static unsigned int seed;

	if (seed == 0)
		seed = (unsigned int)getpid() ^ (unsigned int)time(NULL) ^ 0x9e3779b9u;
	return seconds + rand_r(&seed) % (2 * seconds + 1);
}

/* The same with a detail from elsewhere (the database), escaped for JSON and cut at 360 bytes. */
static void respond_problem_escaped(h2o_req_t *req, int status, const char *detail)
{
	char escaped[420];
	size_t j = 0;

	for (const char *p = detail; *p != '\0' && j < 360; p++) {
		unsigned char ch = *p;
		if (ch == '"' || ch == '\\') {
			escaped[j++] = '\\';
			escaped[j++] = ch;
		} else if (ch < 0x20) {
			j += snprintf(escaped + j, sizeof(escaped) - j, "\\u%04x", ch);
		} else {
			escaped[j++] = ch;
		}
	}
	escaped[j] = '\0';
	respond_problem(req, status, escaped);
}

/* The extension puts "messages[3].pagador.ispb: ..." in DETAIL, a summary in the message. */
static const char *send_error_detail(const PGresult *res)
{
	const char *detail = PQresultErrorField(res, PG_DIAG_MESSAGE_DETAIL);
	const char *primary = PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY);

	return detail != NULL ? detail : primary != NULL ? primary : "invalid request body";
}

void respond_retry_later(h2o_req_t *req, int status, int seconds, const char *detail)
{
	char value[16];
	int len = snprintf(value, sizeof(value), "%d", retry_after_jittered(seconds));

	h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_RETRY_AFTER, NULL,
	               h2o_strdup(&req->pool, value, len).base, len);
	respond_problem(req, status, detail);
}

void respond_not_allowed(h2o_req_t *req, const char *allow)
{
	h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_ALLOW, NULL, allow, strlen(allow));
	respond_problem(req, 405, "method not allowed on this resource");
}

void respond_stream_not_found(h2o_req_t *req)
{
	respond_problem(req, 404, "no such stream");
}

void respond_bad_ispb(h2o_req_t *req)
{
	respond_problem(req, 400, "ispb must be exactly 8 ASCII digits");
}

/* SQLSTATE classes that mean "the database is (momentarily) not answering": retry later. */
static int sqlstate_is_transient(const char *s)
{
	return strncmp(s, "08", 2) == 0 ||   /* connection exception */
	       strncmp(s, "53", 2) == 0 ||   /* insufficient resources */
	       strncmp(s, "57P0", 4) == 0 || /* admin/crash shutdown, cannot connect now */
	       strcmp(s, "40001") == 0 ||    /* serialization failure */
	       strcmp(s, "40P01") == 0 ||    /* deadlock detected */
	       strcmp(s, "25006") == 0;      /* read-only: a standby, or a primary being demoted */
}

/*
 * A pix router (PL/Proxy) that cannot reach, or lost, the shard of the call raises XX000 with a
 * message of its own ("PL/Proxy function f(n): [db] PQconnectStart: ..."); errors the shard raised
 * keep their SQLSTATE and say "REMOTE ERROR". Only the first kind means "that shard is
 * unavailable".
 */
static int shard_unreachable(const char *sqlstate, const PGresult *res)
{
	const char *msg = PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY);

	return strcmp(sqlstate, "XX000") == 0 && msg != NULL &&
	       strncmp(msg, "PL/Proxy function ", 18) == 0 && strstr(msg, "REMOTE ERROR") == NULL;
}

void respond_db_error(h2o_req_t *req, const PGresult *res)
{
	const char *s = PQresultErrorField(res, PG_DIAG_SQLSTATE);

	if (s == NULL) /* libpq's own errors (lost connection) carry no SQLSTATE */
		respond_retry_later(req, 503, RETRY_AFTER_DB_DOWN, "the database is unavailable");
	else if (strcmp(s, "PX001") == 0)
		respond_bad_ispb(req);
	else if (strcmp(s, "PX002") == 0)
		respond_problem(req, 400,
		                "number must be a decimal integer from 1 to the maximum per call");
	else if (strcmp(s, "PX003") == 0)
		respond_retry_later(req, 429, 1, "too many open streams for this ISPB");
	else if (strcmp(s, "PX004") == 0)
		respond_stream_not_found(req);
	else if (strcmp(s, "PX005") == 0)
		respond_problem(req, 410, "this stream was closed or has expired");
	else if (strcmp(s, "PX009") == 0) /* stream held by another transaction: nothing happened */
		respond_retry_later(req, 503, RETRY_AFTER_BUSY, "this stream is busy, retry");
	else if (strcmp(s, "PX010") == 0 || strcmp(s, "PX011") == 0) /* send: invalid, conflict */
		respond_problem_escaped(req, s[4] == '0' ? 422 : 409, send_error_detail(res));
	else if (strcmp(s, "PX014") == 0) /* a receiver that is not a registered institution */
		respond_problem_escaped(req, 422, send_error_detail(res));
	else if (strcmp(s, "PX012") == 0)
		respond_unauthenticated(req, "rejected");
	else if (strcmp(s, "PX013") == 0)
		respond_forbidden(req);
	else if (strcmp(s, "22021") == 0) /* a send body that is not UTF-8 */
		respond_problem(req, 400, "the request body is not valid UTF-8");
	else if (strcmp(s, "57014") == 0) /* statement_timeout: rolled back, nothing happened */
		respond_retry_later(req, 503, RETRY_AFTER_BUSY, "the database did not answer in time");
	else if (sqlstate_is_transient(s) || shard_unreachable(s, res))
		respond_retry_later(req, 503, RETRY_AFTER_DB_DOWN, "the database is unavailable");
	else {
		pixd_log("database error %s on %.*s: %s", s, (int)req->input.path.len, req->input.path.base,
		         PQresultErrorMessage(res));
		respond_problem(req, 500, "internal error");
	}
}

/* ---- authentication ---------------------------------------------------------------------- */

int request_authenticate(h2o_req_t *req, const char **credential)
{
	char buf[CREDENTIAL_MAX + 1];

	*credential = NULL;
	switch (auth_credential(req, buf)) {
	case AUTH_OFF:
		return 0;
	case AUTH_PRESENTED:
		if (!credcache_known(buf, h2o_now(pixd_loop)) && auth_address_throttled(req)) {
			/* an address that keeps failing, with a credential the database has not accepted
			 * recently: 401 (delayed) without asking; a known-good one from there is served */
			pixd_metrics.throttled_no_query++;
			respond_unauthenticated(req, "rejected");
			return -1;
		}
		/* in req->pool: lives until the request is freed, after its query */
		*credential = h2o_strdup(&req->pool, buf, strlen(buf)).base;
		return 0;
	case AUTH_MISSING:
		respond_unauthenticated(req, "missing");
		return -1;
	case AUTH_MALFORMED:
		respond_unauthenticated(req, "malformed");
		return -1;
	}
	return -1;
}

void respond_unauthenticated(h2o_req_t *req, const char *why)
{
	char buf[CREDENTIAL_MAX + 1];
	int presented = auth_credential(req, buf) == AUTH_PRESENTED;
	int token = presented && strncmp(buf, "token:", 6) == 0;
	struct auth_delay *d;
	static h2o_timeout_t delay;
	static int delay_ready;

	if (!auth_failed(req, why, presented ? buf : NULL)) {
		send_unauthenticated(req, token || strcmp(why, "malformed") == 0);
		return;
	}
	if (!delay_ready) {
		h2o_timeout_init(pixd_loop, &delay, AUTH_DELAY_MS);
		delay_ready = 1;
	}
	auth_count_delayed();
	d = async_req_new(req, sizeof(*d), detach_auth_delay);
	d->token_presented = token || strcmp(why, "malformed") == 0;
	d->timer.cb = on_auth_delay;
	h2o_timeout_link(pixd_loop, &delay, &d->timer);
}

static void detach_auth_delay(struct async_req *a)
{
	h2o_timeout_unlink(&((struct auth_delay *)a)->timer);
}

static void on_auth_delay(h2o_timeout_entry_t *entry)
{
	struct auth_delay *d = H2O_STRUCT_FROM_MEMBER(struct auth_delay, timer, entry);

	send_unauthenticated(async_req_answer(&d->base), d->token_presented);
}

/* RFC 6750 §3: the challenge names the scheme; error="invalid_token" when one was presented. */
static void send_unauthenticated(h2o_req_t *req, int token_presented)
{
	if (pixd_config.auth_modes & AUTH_TOKEN) {
		if (token_presented)
			h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_WWW_AUTHENTICATE, NULL,
			               H2O_STRLIT("Bearer realm=\"pix\", error=\"invalid_token\""));
		else
			h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_WWW_AUTHENTICATE, NULL,
			               H2O_STRLIT("Bearer realm=\"pix\""));
	}
	respond_problem(req, 401,
	                pixd_config.auth_modes & AUTH_TOKEN
	                    ? "a valid client certificate or bearer token is required"
	                    : "a registered client certificate is required");
}

/* One body whatever the reason: it must not tell whether the other ISPB or the id exists. */
void respond_forbidden(h2o_req_t *req)
{
	auth_count_forbidden();
	respond_problem(req, 403, "this credential may not act on this resource");
}

void respond_db_failure(h2o_req_t *req, enum db_failure failure)
{
	if (failure == DB_FAIL_TIMEOUT || failure == DB_FAIL_NOT_SENT)
		respond_retry_later(req, 503, RETRY_AFTER_BUSY, "the database did not answer in time");
	else
		respond_retry_later(req, 503, RETRY_AFTER_DB_DOWN, "the database is unavailable");
}

void respond_db_rejected(h2o_req_t *req, enum db_submit_status status)
{
	if (status == DB_OVERLOADED)
		respond_retry_later(req, 503, RETRY_AFTER_BUSY,
		                    "too many requests waiting for the database");
	else
		respond_retry_later(req, 503, RETRY_AFTER_DB_DOWN, "the database is unavailable");
}

/* One deflate state for the process, reset per body: no allocation per response besides out. */
static int gzip_body(h2o_req_t *req, const char *body, size_t len, h2o_iovec_t *out)
{
	static z_stream z;
	static int ready;

	if (!ready) {
		if (deflateInit2(&z, Z_BEST_SPEED, Z_DEFLATED, 15 + 16, 8, Z_DEFAULT_STRATEGY) != Z_OK)
			return -1;
		ready = 1;
	} else if (deflateReset(&z) != Z_OK) {
		return -1;
	}
	out->len = deflateBound(&z, len);
	out->base = h2o_mem_alloc_pool(&req->pool, out->len);
	z.next_in = (Bytef *)body;
	z.avail_in = len;
	z.next_out = (Bytef *)out->base;
	z.avail_out = out->len;
	if (deflate(&z, Z_FINISH) != Z_STREAM_END)
		return -1;
	out->len = z.total_out;
	return 0;
}

/* Milliseconds since h2o read the request's first byte. */
static double request_ms(h2o_req_t *req)
{
	struct timeval now;

	gettimeofday(&now, NULL);
	return (now.tv_sec - req->timestamps.request_begin_at.tv_sec) * 1e3 +
	       (now.tv_usec - req->timestamps.request_begin_at.tv_usec) / 1e3;
}

static const char *reason_phrase(int status)
{
	switch (status) {
	case 200:
		return "OK";
	case 201:
		return "Created";
	case 204:
		return "No Content";
	case 400:
		return "Bad Request";
	case 401:
		return "Unauthorized";
	case 403:
		return "Forbidden";
	case 404:
		return "Not Found";
	case 405:
		return "Method Not Allowed";
	case 406:
		return "Not Acceptable";
	case 409:
		return "Conflict";
	case 410:
		return "Gone";
	case 413:
		return "Content Too Large";
	case 415:
		return "Unsupported Media Type";
	case 422:
		return "Unprocessable Content";
	case 429:
		return "Too Many Requests";
	case 500:
		return "Internal Server Error";
	case 503:
		return "Service Unavailable";
	default:
		return "Unknown";
	}
}
