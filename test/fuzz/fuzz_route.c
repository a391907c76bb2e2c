/*
 * fuzz_route.c — libFuzzer harness for the shim's request side: routing and path splitting
 * (shim/router.c), the {number} and interationId checks and the read/stop/generate handlers
 * (shim/handlers/generate.c, shim/handlers/stream.c), the problem+json responses and gzip
 * (shim/respond.c).
 *
 * The shim's files are included as they are (their static functions become reachable) and linked
 * with the ground floor they stand on (config.c, counters.c, log.c, pixd.c, accept.c: the real
 * globals, nothing redefined). The harness stands in for the layer below the handlers and for
 * h2o's output: the database pool (db_submit records the query and
 * the harness answers it after the handler returned, as the loop would), the parking lot, the
 * health/metrics/openapi handlers, and h2o_start_response/h2o_send (which capture the response;
 * they interpose the ones of libh2o-evloop). Requests are built with libh2o's own memory pool,
 * header and path-normalisation functions, like h2o builds them.
 *
 * Input: byte 0 picks how the database answers (down, overloaded, lost, timeout, a row with
 * messages, an empty row); then "METHOD PATH" up to '\n'; then header lines "a<value>" (Accept),
 * "e<value>" (Accept-Encoding), "c<value>" (Content-Type), "b<bytes>" (the request body), others
 * ignored. Authentication is
 * off (--auth none: the credential is NULL); the send route (handlers/send.c) and stop-all are
 * routed like the others.
 *
 * Checked on every request, against an independent reference router written from docs/contract.md:
 *   exactly one response; its status is the one the reference predicts (200/201/204/400/404/405/
 *   406/415/422/503, never 500); 405 carries Allow; error bodies are application/problem+json objects
 *   whose "status" is the status; gzip bodies inflate; 200/204 reads carry Pull-Next; the database
 * is asked only with an 8-digit ISPB, a plausible id (1..64 printable ASCII, no '/') and a number
 * that is 1..9 ASCII digits within --max-generate, and the parameters are NUL-terminated copies.
 */
#define _GNU_SOURCE
#include "../../shim/router.c"
#include "../../shim/respond.c"
#include "../../shim/handlers/stream.c"
#include "../../shim/handlers/generate.c"
#include "../../shim/handlers/send.c"

#include <assert.h>
#include <stdint.h>
#include <stdlib.h>
#include "json_check.h"
#include "parking.h"

static int db_mode;
static db_query_t *pending_query;
static int submits, responses, resp_status;
static char resp_body[65536];
static size_t resp_len;

static void fail(const char *what);

/* ---- stand-ins for the pool and the parking lot ---- */

enum db_submit_status db_submit(db_query_t *q)
{
	submits++;
	if (db_mode == 0)
		return DB_UNAVAILABLE;
	if (db_mode == 1)
		return DB_OVERLOADED;
	if (pending_query != NULL)
		fail("two queries submitted for one request");
	pending_query = q;
	return DB_SUBMITTED;
}

void db_cancel(db_query_t *q)
{
	if (pending_query == q)
		pending_query = NULL;
}

int db_is_pending(db_query_t *q)
{
	return pending_query == q;
}

void db_hurry(db_query_t *q)
{
	(void)q;
}

unsigned listener_epoch(void)
{
	return 0; /* not listening: every deadline reads once more */
}

enum parking_join_status parking_join(struct parking_slot *s, const char *ispb,
                                      const struct parking_ops *ops)
{
	s->ops = ops;
	memcpy(s->ispb, ispb, sizeof(s->ispb));
	s->joined = 1;
	return PARKING_JOINED;
}
void parking_reading(struct parking_slot *s)
{
	(void)s;
}
enum park_outcome parking_park(struct parking_slot *s)
{
	return PARK_ANSWER_NOW; /* --wait-ms 0 */
}
void parking_leave(struct parking_slot *s)
{
	s->joined = 0;
}

void handle_health(h2o_req_t *req)
{
	respond_json(req, 200, "{\"status\":\"ok\"}");
}
void handle_metrics(h2o_req_t *req)
{
	respond(req, 200, "text/plain; version=0.0.4", "x 1\n", 4);
}
void handle_openapi(h2o_req_t *req)
{
	respond_json(req, 200, "{}");
}

/* ---- h2o's response side, captured ---- */

void h2o_start_response(h2o_req_t *req, h2o_generator_t *generator)
{
	responses++;
	resp_status = req->res.status;
}

void h2o_send(h2o_req_t *req, h2o_iovec_t *bufs, size_t bufcnt, h2o_send_state_t state)
{
	resp_len = 0;
	for (size_t i = 0; i < bufcnt; i++) {
		if (resp_len + bufs[i].len > sizeof(resp_body))
			fail("body too large");
		memcpy(resp_body + resp_len, bufs[i].base, bufs[i].len);
		resp_len += bufs[i].len;
	}
	if (state != H2O_SEND_STATE_FINAL)
		fail("response not final");
}

/* ---- the reference ---- */

static const char *cur_input;
static size_t cur_size;

static void fail(const char *what)
{
	fprintf(stderr, "fuzz_route: %s (status %d)\ninput: ", what, resp_status);
	for (size_t i = 0; i < cur_size; i++)
		fprintf(stderr, (cur_input[i] >= 0x20 && cur_input[i] < 0x7f) ? "%c" : "\\x%02x",
		        (unsigned char)cur_input[i]);
	fprintf(stderr, "\n");
	abort();
}

static int ref_digits(const char *s, size_t len, size_t min, size_t max)
{
	if (len < min || len > max)
		return 0;
	for (size_t i = 0; i < len; i++)
		if (s[i] < '0' || s[i] > '9')
			return 0;
	return 1;
}

static long ref_value(const char *s, size_t len)
{
	long v = 0;
	for (size_t i = 0; i < len; i++)
		v = v * 10 + (s[i] - '0');
	return v;
}

static int ref_plausible_id(const char *s, size_t len)
{
	if (len < 1 || len > 64)
		return 0;
	for (size_t i = 0; i < len; i++)
		if ((unsigned char)s[i] <= 0x20 || (unsigned char)s[i] >= 0x7f)
			return 0;
	return 1;
}

/* What docs/contract.md says the request deserves; -1 = a database call (status depends on db_mode). */
struct expect {
	int status;
	enum db_stmt stmt;
	int read; /* a GET read: 200/204 carry Pull-Next */
};

/* Content-Type application/json, any case, optionally followed by parameters (";..."). */
static int ref_json_type(const char *v, size_t len)
{
	static const char want[] = "application/json";
	size_t n = sizeof(want) - 1;

	return v != NULL && len >= n && strncasecmp(v, want, n) == 0 &&
	       (len == n || v[n] == ';' || v[n] == ' ' || v[n] == '\t');
}

static struct expect reference(h2o_iovec_t method, h2o_iovec_t path, int acceptable,
                               h2o_iovec_t body, int json_type)
{
	/* segments between the slashes of path, without using split_path */
	char *segs[8];
	size_t lens[8], n = 0;
	const char *p = path.base, *end = path.base + path.len;
	struct expect e = {404, DB_NSTMT, 0};
	int get = h2o_memis(method.base, method.len, H2O_STRLIT("GET"));
	int del = h2o_memis(method.base, method.len, H2O_STRLIT("DELETE"));
	int post = h2o_memis(method.base, method.len, H2O_STRLIT("POST"));

	if (path.len < 2 || path.base[0] != '/')
		return e;
	for (const char *s = p + 1; n < 8;) {
		const char *slash = memchr(s, '/', end - s);
		segs[n] = (char *)s;
		lens[n] = (slash ? slash : end) - s;
		n++;
		if (!slash)
			break;
		s = slash + 1;
	}
#define SEG(i, lit) (lens[i] == strlen(lit) && memcmp(segs[i], lit, lens[i]) == 0)
	if (n == 1 && (SEG(0, "health") || SEG(0, "metrics") || SEG(0, "openapi.json"))) {
		e.status = !get ? 405 : body.len > 0 ? 413 : 200;
		return e;
	}
	if (n == 4 && SEG(0, "api") && SEG(1, "pix") && (SEG(3, "msgs") || SEG(3, "streams"))) {
		int send = SEG(3, "msgs");
		if (send ? !post : !del)
			e.status = 405;
		else if (!send && body.len > 0)
			e.status = 413;
		else if (!ref_digits(segs[2], lens[2], 8, 8))
			e.status = 400;
		else if (send && !json_type)
			e.status = 415;
		else if (send && body.len == 0)
			e.status = 422;
		else if (send && memchr(body.base, '\0', body.len) != NULL)
			e.status = 400;
		else {
			e.status = -1;
			e.stmt = send ? DB_SEND : DB_STOP_ALL;
		}
		return e;
	}
	if (n != 5 || !SEG(0, "api"))
		return e;
	if (SEG(1, "pix") && SEG(3, "stream")) {
		int start = SEG(4, "start"), stop_all = SEG(4, "stop");
		/* stop-all takes GET and DELETE with --auth none (only DELETE with authentication) */
		if (start ? !get : !(get || del)) {
			e.status = 405;
		} else if (body.len > 0) {
			e.status = 413;
		} else if (!ref_digits(segs[2], lens[2], 8, 8)) {
			e.status = 400;
		} else if (stop_all) {
			e.status = -1;
			e.stmt = DB_STOP_ALL;
		} else if (!start && !ref_plausible_id(segs[4], lens[4])) {
			e.status = 404;
		} else if (get && !acceptable) {
			e.status = 406;
		} else {
			e.status = -1;
			e.stmt = start ? DB_STREAM_START : get ? DB_STREAM_NEXT : DB_STREAM_STOP;
			e.read = get;
		}
	} else if (SEG(1, "util") && SEG(2, "msgs")) {
		if (!post) {
			e.status = 405;
		} else if (body.len > 0) {
			e.status = 413;
		} else if (!ref_digits(segs[3], lens[3], 8, 8)) {
			e.status = 400;
		} else if (!ref_digits(segs[4], lens[4], 1, 9) || ref_value(segs[4], lens[4]) < 1 ||
		           ref_value(segs[4], lens[4]) > pixd_config.max_generate) {
			e.status = 400;
		} else {
			e.status = -1;
			e.stmt = DB_GENERATE;
		}
	}
	return e;
}

/* A result like the pool would hand over, built with libpq's own functions. */
static PGresult *fake_result(enum db_stmt stmt, int with_messages, const char *ispb)
{
	PGresult *res = PQmakeEmptyPGresult(NULL, PGRES_TUPLES_OK);
	static PGresAttDesc read_cols[4] = {{"interation_id", 0, 0, 0, 25, -1, -1},
	                                    {"pull_next", 0, 0, 0, 25, -1, -1},
	                                    {"message_count", 0, 0, 0, 23, 4, -1},
	                                    {"body", 0, 0, 0, 25, -1, -1}};
	static PGresAttDesc one_col[1] = {{"n", 0, 0, 0, 23, 4, -1}};
	static PGresAttDesc send_cols[3] = {{"accepted", 0, 0, 0, 23, 4, -1},
	                                    {"duplicates", 0, 0, 0, 23, 4, -1},
	                                    {"body", 0, 0, 0, 25, -1, -1}};
	char pull[64];

	if (stmt == DB_STREAM_START || stmt == DB_STREAM_NEXT) {
		PQsetResultAttrs(res, 4, read_cols);
		snprintf(pull, sizeof(pull), "/api/pix/%s/stream/abcdefghjk0123456789", ispb);
		PQsetvalue(res, 0, 0, "abcdefghjk0123456789", 20);
		PQsetvalue(res, 0, 1, pull, strlen(pull));
		PQsetvalue(res, 0, 2, with_messages ? "1" : "0", 1);
		if (with_messages)
			PQsetvalue(res, 0, 3, "{\"endToEndId\":\"x\"}", 18);
		else
			PQsetvalue(res, 0, 3, NULL, -1);
	} else if (stmt == DB_SEND) {
		PQsetResultAttrs(res, 3, send_cols);
		PQsetvalue(res, 0, 0, "1", 1);
		PQsetvalue(res, 0, 1, "0", 1);
		PQsetvalue(res, 0, 2, "{\"accepted\":1,\"duplicates\":0}", 30);
	} else {
		PQsetResultAttrs(res, 1, one_col);
		PQsetvalue(res, 0, 0, "3", 1);
	}
	return res;
}

static void check_params(const db_query_t *q)
{
	if (q->params[0] == NULL || !ref_digits(q->params[0], strlen(q->params[0]), 8, 8))
		fail("database asked with a bad ISPB");
	if (q->stmt == DB_STREAM_NEXT || q->stmt == DB_STREAM_STOP)
		if (q->params[1] == NULL || !ref_plausible_id(q->params[1], strlen(q->params[1])) ||
		    strchr(q->params[1], '/') != NULL)
			fail("database asked with an implausible id");
	if (q->stmt == DB_GENERATE)
		if (q->params[1] == NULL || !ref_digits(q->params[1], strlen(q->params[1]), 1, 9) ||
		    atol(q->params[1]) < 1 || atol(q->params[1]) > pixd_config.max_generate)
			fail("database asked with a bad number");
	if (q->stmt == DB_STREAM_START || q->stmt == DB_STREAM_NEXT) {
		const char *mm = q->params[q->stmt == DB_STREAM_START ? 1 : 2];
		if (mm == NULL || (strcmp(mm, "1") != 0 && strcmp(mm, "10") != 0))
			fail("database asked with a bad max_messages");
	}
}

/* The value of a response header (one slot per name, so two lookups do not clash), or NULL. */
static const char *find_res_header(h2o_req_t *req, const char *name)
{
	static char slots[6][256];
	static const char *names[6] = {"pull-next",    "retry-after",      "allow",
	                               "content-type", "content-encoding", "vary"};
	for (size_t i = 0; i < req->res.headers.size; i++) {
		h2o_header_t *h = req->res.headers.entries + i;
		if (h2o_lcstris(h->name->base, h->name->len, name, strlen(name))) {
			for (int k = 0; k < 6; k++)
				if (strcmp(names[k], name) == 0) {
					snprintf(slots[k], sizeof(slots[k]), "%.*s", (int)h->value.len, h->value.base);
					return slots[k];
				}
			return "";
		}
	}
	return NULL;
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	/* The defaults of config.c, quiet: stderr is for libFuzzer's and the sanitizers' reports. */
	pixd_config.access_log = 0;
	return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	h2o_req_t req;
	const char *s = (const char *)data + 1, *end = (const char *)data + size, *nl, *sp;
	const char *accept_v[16];
	size_t accept_l[16], n_accept = 0;
	size_t query_at;
	struct expect want;
	char *copy;
	int acceptable, n_type = 0;
	const char *type_v = NULL;
	size_t type_l = 0;

	if (size < 2)
		return 0;
	cur_input = (const char *)data;
	cur_size = size;
	db_mode = data[0] % 6;
	pending_query = NULL;
	submits = responses = 0;
	resp_status = 0;
	resp_len = 0;

	/* the input stays alive during the request; copy it so ASan watches its end */
	copy = malloc(size);
	memcpy(copy, data, size);
	s = copy + 1;
	end = copy + size;

	memset(&req, 0, sizeof(req));
	h2o_mem_init_pool(&req.pool);
	nl = memchr(s, '\n', end - s);
	if (nl == NULL)
		nl = end;
	sp = memchr(s, ' ', nl - s);
	if (sp == NULL || sp == s || sp + 1 == nl || sp[1] != '/') {
		h2o_mem_clear_pool(&req.pool);
		free(copy);
		return 0;
	}
	req.method = h2o_iovec_init(s, sp - s);
	req.input.path = h2o_iovec_init(sp + 1, nl - sp - 1);
	req.path = req.input.path;
	req.path_normalized = h2o_url_normalize_path(&req.pool, req.path.base, req.path.len, &query_at,
	                                             &req.norm_indexes);
	req.query_at = query_at;
	for (s = nl + 1; s < end;) {
		const char *line_end = memchr(s, '\n', end - s);
		if (line_end == NULL)
			line_end = end;
		if (line_end > s && s[0] == 'a') {
			h2o_add_header(&req.pool, &req.headers, H2O_TOKEN_ACCEPT, NULL, s + 1,
			               line_end - s - 1);
			if (n_accept < 16) {
				accept_v[n_accept] = s + 1;
				accept_l[n_accept++] = line_end - s - 1;
			}
		} else if (line_end > s && s[0] == 'b') {
			req.entity = h2o_iovec_init(s + 1, line_end - s - 1);
		} else if (line_end > s && s[0] == 'c') {
			h2o_add_header(&req.pool, &req.headers, H2O_TOKEN_CONTENT_TYPE, NULL, s + 1,
			               line_end - s - 1);
			type_v = s + 1;
			type_l = line_end - s - 1;
			n_type++;
		} else if (line_end > s && s[0] == 'e') {
			h2o_add_header(&req.pool, &req.headers, H2O_TOKEN_ACCEPT_ENCODING, NULL, s + 1,
			               line_end - s - 1);
		}
		s = line_end + 1;
	}
	acceptable = accept_negotiate_values(accept_v, accept_l, n_accept) != ACCEPT_NOTHING;
	want = reference(req.method, req.path_normalized, acceptable, req.entity,
	                 n_type == 1 && ref_json_type(type_v, type_l));

	on_req(NULL, &req);

	if (pending_query != NULL) {
		db_query_t *q = pending_query;
		PGresult *res = NULL;
		check_params(q);
		if (want.status != -1 || q->stmt != want.stmt)
			fail("a database call the reference did not expect");
		pending_query = NULL;
		if (db_mode == 2)
			q->cb(q, NULL, DB_FAIL_LOST);
		else if (db_mode == 3)
			q->cb(q, NULL, DB_FAIL_TIMEOUT);
		else {
			res = fake_result(q->stmt, db_mode == 4, q->params[0]);
			q->cb(q, res, DB_FAIL_NONE);
			PQclear(res);
		}
	} else if (want.status == -1 && submits == 0) {
		fail("the reference expected a database call");
	}

	if (responses != 1)
		fail(responses == 0 ? "no response" : "more than one response");
	if (want.status == -1) {
		int expected;
		if (db_mode < 4)
			expected = 503;
		else if (want.stmt == DB_GENERATE || want.stmt == DB_SEND)
			expected = 201;
		else if (want.stmt == DB_STREAM_STOP || want.stmt == DB_STOP_ALL)
			expected = 200;
		else
			expected = db_mode == 4 ? 200 : 204;
		if (resp_status != expected)
			fail("status differs from the reference (database call)");
		if (want.read && (resp_status == 200 || resp_status == 204) &&
		    find_res_header(&req, "pull-next") == NULL)
			fail("a read without Pull-Next");
		if (resp_status == 503 && find_res_header(&req, "retry-after") == NULL)
			fail("503 without Retry-After");
	} else if (resp_status != want.status) {
		fail("status differs from the reference");
	}
	if (resp_status == 405 && find_res_header(&req, "allow") == NULL)
		fail("405 without Allow");
	if (resp_status >= 400) {
		const char *ct = find_res_header(&req, "content-type");
		const char *ce = find_res_header(&req, "content-encoding");
		char plain[4096];
		size_t plain_len = resp_len;
		char needle[32];
		if (ct == NULL || strcmp(ct, "application/problem+json") != 0)
			fail("error without application/problem+json");
		if (ce != NULL) {
			z_stream z = {0};
			inflateInit2(&z, 15 + 16);
			z.next_in = (Bytef *)resp_body;
			z.avail_in = resp_len;
			z.next_out = (Bytef *)plain;
			z.avail_out = sizeof(plain);
			if (inflate(&z, Z_FINISH) != Z_STREAM_END)
				fail("gzip body does not inflate");
			plain_len = z.total_out;
			inflateEnd(&z);
		} else {
			if (resp_len > sizeof(plain))
				fail("problem body too large");
			memcpy(plain, resp_body, resp_len);
		}
		if (!json_check(plain, plain_len, 1))
			fail("problem body is not valid JSON");
		snprintf(needle, sizeof(needle), "\"status\":%d,", resp_status);
		if (memmem(plain, plain_len, needle, strlen(needle)) == NULL ||
		    memmem(plain, plain_len, "\"type\":", 7) == NULL ||
		    memmem(plain, plain_len, "\"title\":", 8) == NULL ||
		    memmem(plain, plain_len, "\"detail\":", 9) == NULL)
			fail("problem body lacks type/title/status/detail");
	}
	h2o_mem_clear_pool(&req.pool);
	if (async_req_in_flight() != 0)
		fail("a request left in flight");
	free(copy);
	return 0;
}
