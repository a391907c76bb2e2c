/*
 * respond.c — the response helpers: the one way every response leaves the server, and the lifetime
 * of requests answered later (async_req).
 *
 * Every error body is application/problem+json (RFC 9457) with type, title, status and detail.
 * Details are fixed strings chosen here or by the handlers, never a database message or request
 * text: nothing to escape, no oracle.
 *
 * Compression: gzip (zlib, one deflate state reused with deflateReset: the loop is single-threaded)
 * whenever Accept-Encoding allows it and there is a body; Vary: Accept-Encoding on every body.
 */
#include <stdio.h>
#include <string.h>
#include <sys/time.h>
#include <zlib.h>
#include "accept.h"
#include "respond.h"

#define RETRY_AFTER_DB_DOWN 2
#define RETRY_AFTER_BUSY 1

static int gzip_body(h2o_req_t *req, const char *body, size_t len, h2o_iovec_t *out);
static double request_ms(h2o_req_t *req);
static void async_dispose(void *p);
static const char *reason_phrase(int status);
static int sqlstate_is_transient(const char *s);
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

/* ---- responses ---------------------------------------------------------------------------- */

void add_header(h2o_req_t *req, const char *name, const char *value, size_t len)
{
	/* The value may live in a PGresult about to be cleared: the pool copy lives as long as req. */
	h2o_iovec_t copy = h2o_strdup(&req->pool, value, len);

	h2o_add_header_by_str(&req->pool, &req->res.headers, name, strlen(name), 1, NULL, copy.base,
	                      copy.len);
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

void respond_retry_later(h2o_req_t *req, int status, int seconds, const char *detail)
{
	char value[16];
	int len = snprintf(value, sizeof(value), "%d", seconds);

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
	       strcmp(s, "40P01") == 0;      /* deadlock detected */
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

void respond_db_failure(h2o_req_t *req, enum db_failure failure)
{
	if (failure == DB_FAIL_TIMEOUT)
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
	case 404:
		return "Not Found";
	case 405:
		return "Method Not Allowed";
	case 406:
		return "Not Acceptable";
	case 410:
		return "Gone";
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
