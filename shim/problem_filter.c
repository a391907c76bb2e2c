/*
 * problem_filter.c — every error pixd sends is an application/problem+json document (RFC 9457),
 * including the ones libh2o 2.2.5 makes by itself, before or instead of the router.
 *
 * What h2o 2.2.5 answers by itself (lib/http1.c, lib/core/request.c; pixd registers no other
 * handler, speaks no HTTP/2, and h2o's file, proxy, fastcgi, mruby and errordoc handlers are not
 * configured, so their 403/404/405/416/500/502/503 cannot happen here):
 *   - 400 "Invalid Request" (http1.c entity_read_send_error_400): a Transfer-Encoding other than
 *     chunked, a Content-Length that is not a decimal number, a malformed chunked body;
 *   - 413 "Request Entity Too Large" (entity_read_send_error_413): a declared Content-Length above
 *     max_request_entity_size (router_max_entity(), 1 MiB), or a chunked body growing to it;
 *   - 417 "Expectation Failed": an Expect other than 100-continue (on a request with a body);
 *   - 404 "File Not Found" (request.c call_handlers) if every handler declined (the router never does);
 *   - 502 "Gateway Error" (request.c h2o_reprocess_request: too many internal delegations or
 *     reprocesses): pixd never reprocesses a request;
 *   - 400 "Bad Request" written straight to the socket (http1.c send_bad_request): a request head its
 *     parser refuses (malformed request line or header, more than H2O_MAX_HEADERS = 100 headers), or a
 *     head still incomplete after H2O_MAX_REQLEN (8192 + 4096 * 100 bytes).
 * And it closes without an answer (nothing to rewrite; docs/http-api.md): when the request head and
 * body do not arrive within --read-timeout-ms (http1.req_timeout: no 408 in 2.2.5), when a TLS
 * handshake does not finish in time, and when the parser refused an input of at most 4 bytes, all
 * CR or LF, such as "\r\n\r\n" (h2o takes them for a keep-alive client's stray line ends).
 *
 * All but the last answer go through h2o_send_error_generic: text/plain, Connection: close
 * (H2O_SEND_ERROR_HTTP1_CLOSE_CONNECTION or http1_is_persistent = 0, kept as h2o set it), one final
 * h2o_send_inline. Before any handler ran, it binds the request to the host's fallback path, so
 * the output filter below is registered on the fallback path and on the router's paths. It
 * rewrites a response with status >= 400 whose Content-Type is not application/problem+json (every
 * error pixd itself makes has that type: respond.c respond_problem, so pixd's own answers pass
 * untouched): status kept, reason and title the RFC 9110 phrase pixd uses, a fixed detail chosen
 * by status and by h2o's fixed body text, Content-Type application/problem+json, Content-Length,
 * Vary: Accept-Encoding (as on every pixd body), no gzip (the documents are ~150 bytes). A HEAD
 * gets the headers without the body, as h2o_send_inline does. Such answers are counted in
 * /metrics (pixd_http_responses_total and per route) and access-logged like pixd's own.
 *
 * The raw 400 bypasses every filter: h2o writes a fixed byte string with h2o_socket_write from
 * inside libh2o. This file defines h2o_socket_write itself: the dynamic linker binds libh2o's own
 * calls (they go through its PLT, and the executable comes first in the lookup scope) to this
 * definition, which replaces exactly that byte string with the problem document below and hands
 * every write, that one included, to libh2o's h2o_socket_write (dlsym RTLD_NEXT) with the same
 * callback (h2o closes the connection when it completes). Any other write costs one comparison
 * of bufcnt and a length. test/e2e/test_openapi.py TestServerGeneratedErrors fails if a libh2o
 * build ever stops calling through its PLT (-Bsymbolic, static linking) or changes the text.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include "pixd.h"
#include "problem_filter.h"

struct problem_ostream {
	h2o_ostream_t super;
};

struct fixed_detail {
	int status;
	const char *h2o_body; /* h2o's fixed text for this case, or NULL: any */
	const char *detail;
};

/* h2o 2.2.5's bodies (http1.c, request.c) mapped to pixd's fixed details; the first match wins. */
static const struct fixed_detail details[] = {
    {400, "broken chunked-encoding", "the chunked request body is malformed"},
    {400, "unknown transfer-encoding", "Transfer-Encoding other than chunked is not supported"},
    {400, "broken content-length header", "Content-Length must be a decimal number"},
    {400, NULL, "the request is malformed"},
    {404, NULL, "no such resource"},
    {413, NULL, "request body larger than any resource takes"},
    {417, NULL, "only Expect: 100-continue is supported"},
};

/* The raw 400 of http1.c send_bad_request, byte for byte, and what is sent instead. */
static const char h2o_bad_request[] = "HTTP/1.1 400 Bad Request\r\n"
                                      "Content-Type: text/plain; charset=utf-8\r\n"
                                      "Connection: close\r\n"
                                      "Content-Length: 11\r\n"
                                      "\r\n"
                                      "Bad Request";
#define BAD_REQUEST_DOC                                                                            \
	"{\"type\":\"about:blank\",\"title\":\"Bad Request\",\"status\":400,"                          \
	"\"detail\":\"the request line or headers are malformed or too long\"}"
static const char pixd_bad_request[] = "HTTP/1.1 400 Bad Request\r\n"
                                       "Server: pixd\r\n"
                                       "Content-Type: application/problem+json\r\n"
                                       "Vary: Accept-Encoding\r\n"
                                       "Connection: close\r\n"
                                       "Content-Length: %zu\r\n"
                                       "\r\n"
                                       "%s";

static void on_setup_ostream(h2o_filter_t *self, h2o_req_t *req, h2o_ostream_t **slot);
static void on_send(h2o_ostream_t *self, h2o_req_t *req, h2o_iovec_t *bufs, size_t bufcnt,
                    h2o_send_state_t state);
static int is_pixd_problem(h2o_req_t *req);
static const char *detail_of(int status, h2o_iovec_t *bufs, size_t bufcnt);
static const char *title_of(int status, const char *h2o_reason);
static void count_and_log(h2o_req_t *req, int status);

void problem_filter_register(h2o_hostconf_t *host)
{
	h2o_create_filter(&host->fallback_path, sizeof(h2o_filter_t))->on_setup_ostream =
	    on_setup_ostream;
	for (size_t i = 0; i < host->paths.size; i++)
		h2o_create_filter(&host->paths.entries[i], sizeof(h2o_filter_t))->on_setup_ostream =
		    on_setup_ostream;
}

static int is_pixd_problem(h2o_req_t *req)
{
	ssize_t i = h2o_find_header(&req->res.headers, H2O_TOKEN_CONTENT_TYPE, -1);

	return i != -1 &&
	       h2o_memis(req->res.headers.entries[i].value.base, req->res.headers.entries[i].value.len,
	                 H2O_STRLIT("application/problem+json"));
}

static void on_setup_ostream(h2o_filter_t *self, h2o_req_t *req, h2o_ostream_t **slot)
{
	if (req->res.status >= 400 && !is_pixd_problem(req)) {
		struct problem_ostream *o = (void *)h2o_add_ostream(req, sizeof(*o), slot);
		o->super.do_send = on_send;
		slot = &o->super.next;
	}
	h2o_setup_next_ostream(req, slot);
}

/*
 * h2o_send_inline sends its body in one final call. A generator that streamed (none of h2o's
 * error paths does) would have its chunks swallowed: an empty in-progress send_next asks h2o for
 * the next one (a zero timeout), and nothing reaches the client before the document.
 */
static void on_send(h2o_ostream_t *self, h2o_req_t *req, h2o_iovec_t *bufs, size_t bufcnt,
                    h2o_send_state_t state)
{
	int status = req->res.status;
	const char *detail, *title;
	char doc[512];
	int len;
	h2o_iovec_t body;

	if (h2o_send_state_is_in_progress(state)) {
		h2o_ostream_send_next(self, req, NULL, 0, state);
		return;
	}
	detail = detail_of(status, bufs, bufcnt);
	title = title_of(status, req->res.reason);
	len = snprintf(doc, sizeof(doc),
	               "{\"type\":\"about:blank\",\"title\":\"%s\",\"status\":%d,\"detail\":\"%s\"}",
	               title, status, detail);
	body = h2o_strdup(&req->pool, doc, (size_t)len < sizeof(doc) ? (size_t)len : 0);
	req->res.reason = title;
	req->res.headers = (h2o_headers_t){NULL};
	h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_CONTENT_TYPE, NULL,
	               H2O_STRLIT("application/problem+json"));
	h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_VARY, NULL,
	               H2O_STRLIT("Accept-Encoding"));
	req->res.content_length = body.len;
	count_and_log(req, status);
	/* HEAD: the headers only (h2o_send_inline sent no body either) */
	if (h2o_memis(req->input.method.base, req->input.method.len, H2O_STRLIT("HEAD")))
		h2o_ostream_send_next(self, req, NULL, 0, state);
	else
		h2o_ostream_send_next(self, req, &body, 1, state);
}

static const char *detail_of(int status, h2o_iovec_t *bufs, size_t bufcnt)
{
	h2o_iovec_t text = bufcnt == 1 ? bufs[0] : h2o_iovec_init(NULL, 0);

	for (size_t i = 0; i < sizeof(details) / sizeof(details[0]); i++)
		if (details[i].status == status &&
		    (details[i].h2o_body == NULL ||
		     h2o_memis(text.base, text.len, details[i].h2o_body, strlen(details[i].h2o_body))))
			return details[i].detail;
	return status < 500 ? "the request cannot be handled" : "internal error";
}

/* The RFC 9110 phrases respond.c uses; h2o's own (fixed) phrase for any other status. */
static const char *title_of(int status, const char *h2o_reason)
{
	switch (status) {
	case 400:
		return "Bad Request";
	case 404:
		return "Not Found";
	case 405:
		return "Method Not Allowed";
	case 413:
		return "Content Too Large";
	case 417:
		return "Expectation Failed";
	case 500:
		return "Internal Server Error";
	case 502:
		return "Bad Gateway";
	case 503:
		return "Service Unavailable";
	default:
		return h2o_reason != NULL ? h2o_reason : "Error";
	}
}

/* As respond.c does for pixd's own answers: by status class, by route, and the access log. */
static void count_and_log(h2o_req_t *req, int status)
{
	struct timeval now;
	double ms;

	gettimeofday(&now, NULL);
	ms = req->timestamps.request_begin_at.tv_sec == 0
	         ? 0
	         : (now.tv_sec - req->timestamps.request_begin_at.tv_sec) * 1e3 +
	               (now.tv_usec - req->timestamps.request_begin_at.tv_usec) / 1e3;
	pixd_metrics.responses_by_class[status / 100 < 6 ? status / 100 : 5]++;
	metrics_observe(req, status, ms);
	log_access(req->input.method.base, req->input.method.len, req->input.path.base,
	           req->input.path.len, status, ms);
}

/* ---- the raw 400 (see the top of the file) ------------------------------------------------- */

void h2o_socket_write(h2o_socket_t *sock, h2o_iovec_t *bufs, size_t bufcnt, h2o_socket_cb cb)
{
	static void (*libh2o_write)(h2o_socket_t *, h2o_iovec_t *, size_t, h2o_socket_cb);
	static char replacement[sizeof(pixd_bad_request) + sizeof(BAD_REQUEST_DOC) + 16];
	static h2o_iovec_t problem;

	if (libh2o_write == NULL) {
		*(void **)&libh2o_write = dlsym(RTLD_NEXT, "h2o_socket_write");
		if (libh2o_write == NULL) {
			pixd_log("h2o_socket_write not found in libh2o: %s", dlerror());
			abort();
		}
		problem.base = replacement;
		problem.len = snprintf(replacement, sizeof(replacement), pixd_bad_request,
		                       sizeof(BAD_REQUEST_DOC) - 1, BAD_REQUEST_DOC);
	}
	if (bufcnt == 1 && bufs[0].len == sizeof(h2o_bad_request) - 1 &&
	    memcmp(bufs[0].base, h2o_bad_request, sizeof(h2o_bad_request) - 1) == 0) {
		pixd_metrics.responses_by_class[4]++;
		log_access("-", 1, "-", 1, 400, 0);
		/* the buffer must outlive the write: static, as h2o's own */
		libh2o_write(sock, &problem, 1, cb);
		return;
	}
	libh2o_write(sock, bufs, bufcnt, cb);
}
