/*
 * request_handler.c — the router and the response helpers.
 *
 * Routes (SPEC.md): GET /health, /metrics, /openapi.json; GET /api/pix/{ispb}/stream/start;
 * GET|DELETE /api/pix/{ispb}/stream/{interationId}; POST /api/util/msgs/{ispb}/{number}.
 * A known path with another method is 405 with Allow; anything else 404. Every error body is
 * application/problem+json (RFC 9457) with type, title, status and detail. Details are fixed
 * strings chosen here, never a database message or request text: nothing to escape, no oracle.
 *
 * Compression: gzip (zlib, one deflate state reused with deflateReset: the loop is single-threaded)
 * whenever Accept-Encoding allows it and there is a body; Vary: Accept-Encoding on every body.
 */
#include <stdio.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>
#include <zlib.h>
#include "accept.h"
#include "handlers.h"
#include "request_handler.h"

#define MAX_SEGMENTS 6
#define RETRY_AFTER_DB_DOWN 2
#define RETRY_AFTER_BUSY 1

static int on_req(h2o_handler_t *self, h2o_req_t *req);
static size_t split_path(h2o_iovec_t path, h2o_iovec_t *segs, size_t max);
static int seg_is(h2o_iovec_t seg, const char *s);
static int method_is(h2o_req_t *req, const char *m);
static void route_api(h2o_req_t *req, h2o_iovec_t *segs, size_t n);
static void respond_not_allowed(h2o_req_t *req, const char *allow);
static int gzip_body(h2o_req_t *req, const char *body, size_t len, h2o_iovec_t *out);
static double request_ms(h2o_req_t *req);
static void access_log(h2o_req_t *req, const char *method, size_t method_len, const char *path,
                       size_t path_len, int status);
static void async_dispose(void *p);
static const char *reason_phrase(int status);
static int sqlstate_is_transient(const char *s);
static int shard_unreachable(const char *sqlstate, const PGresult *res);

static int in_flight;

void request_handler_register(h2o_globalconf_t *conf)
{
	h2o_hostconf_t *host =
	    h2o_config_register_host(conf, h2o_iovec_init(H2O_STRLIT("default")), 65535);
	h2o_pathconf_t *path = h2o_config_register_path(host, "/", 0);
	h2o_handler_t *handler = h2o_create_handler(path, sizeof(*handler));

	handler->on_req = on_req;
}

int request_handler_in_flight(void)
{
	return in_flight;
}

static int on_req(h2o_handler_t *self, h2o_req_t *req)
{
	h2o_iovec_t segs[MAX_SEGMENTS + 1];
	size_t n = split_path(req->path_normalized, segs, MAX_SEGMENTS + 1);

	pixd_metrics.requests++;
	if (n == 1 && (seg_is(segs[0], "health") || seg_is(segs[0], "metrics") ||
	               seg_is(segs[0], "openapi.json"))) {
		if (!method_is(req, "GET"))
			respond_not_allowed(req, "GET");
		else if (seg_is(segs[0], "health"))
			handle_health(req);
		else if (seg_is(segs[0], "metrics"))
			handle_metrics(req);
		else
			handle_openapi(req);
		return 0;
	}
	if (n == 5 && seg_is(segs[0], "api")) {
		route_api(req, segs, n);
		return 0;
	}
	respond_problem(req, 404, "no such resource");
	return 0;
}

/* /api/pix/{ispb}/stream/start, /api/pix/{ispb}/stream/{id}, /api/util/msgs/{ispb}/{number} */
static void route_api(h2o_req_t *req, h2o_iovec_t *segs, size_t n)
{
	if (seg_is(segs[1], "pix") && seg_is(segs[3], "stream")) {
		if (seg_is(segs[4], "start")) {
			if (method_is(req, "GET"))
				handle_stream_start(req, segs[2]);
			else
				respond_not_allowed(req, "GET");
		} else if (method_is(req, "GET")) {
			handle_stream_next(req, segs[2], segs[4]);
		} else if (method_is(req, "DELETE")) {
			handle_stream_stop(req, segs[2], segs[4]);
		} else {
			respond_not_allowed(req, "GET, DELETE");
		}
		return;
	}
	if (seg_is(segs[1], "util") && seg_is(segs[2], "msgs")) {
		if (method_is(req, "POST"))
			handle_util_msgs(req, segs[3], segs[4]);
		else
			respond_not_allowed(req, "POST");
		return;
	}
	respond_problem(req, 404, "no such resource");
}

/* Splits "/a/b/c" into segments; returns how many (up to max; more count as max). */
static size_t split_path(h2o_iovec_t path, h2o_iovec_t *segs, size_t max)
{
	size_t n = 0, i = 0;

	if (path.len == 0 || path.base[0] != '/')
		return 0;
	if (path.len == 1)
		return 0;
	i = 1;
	while (n < max) {
		size_t start = i;
		while (i < path.len && path.base[i] != '/')
			i++;
		segs[n++] = h2o_iovec_init(path.base + start, i - start);
		if (i >= path.len)
			break;
		i++; /* the '/'; a trailing one yields an empty last segment */
	}
	return n;
}

static int seg_is(h2o_iovec_t seg, const char *s)
{
	return h2o_memis(seg.base, seg.len, s, strlen(s));
}

static int method_is(h2o_req_t *req, const char *m)
{
	return h2o_memis(req->method.base, req->method.len, m, strlen(m));
}

int is_ispb(const char *s, size_t len)
{
	if (len != PIXD_ISPB_LEN)
		return 0;
	for (size_t i = 0; i < len; i++)
		if (s[i] < '0' || s[i] > '9')
			return 0;
	return 1;
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
	metrics_observe(req, status, request_ms(req));
	access_log(req, req->method.base, req->method.len, req->input.path.base, req->input.path.len,
	           status);
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

static void respond_not_allowed(h2o_req_t *req, const char *allow)
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
 * A pix router (PL/Proxy) that cannot reach, or lost, the shard of the call raises XX000 with a message
 * of its own ("PL/Proxy function f(n): [db] PQconnectStart: ..."); errors the shard raised keep their
 * SQLSTATE and say "REMOTE ERROR". Only the first kind means "that shard is unavailable".
 */
static int shard_unreachable(const char *sqlstate, const PGresult *res)
{
	const char *msg = PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY);

	return strcmp(sqlstate, "XX000") == 0 && msg != NULL && strncmp(msg, "PL/Proxy function ", 18) == 0 &&
	       strstr(msg, "REMOTE ERROR") == NULL;
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

/* "2024-02-21T19:27:00.123Z GET /path 200 1.234ms"; bytes outside printable ASCII as %XX. */
static void access_log(h2o_req_t *req, const char *method, size_t method_len, const char *path,
                       size_t path_len, int status)
{
	char clean[256];
	size_t j = 0;

	if (!pixd_config.access_log)
		return;
	for (size_t i = 0; i < path_len && j + 4 < sizeof(clean); i++) {
		unsigned char ch = path[i];
		if (ch > 0x20 && ch < 0x7f)
			clean[j++] = ch;
		else
			j += snprintf(clean + j, sizeof(clean) - j, "%%%02X", ch);
	}
	clean[j] = '\0';
	pixd_log("%.*s %s %d %.3fms", (int)(method_len < 16 ? method_len : 16), method, clean, status,
	         request_ms(req));
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
