/*
 * router.c — maps a request's path and method to its handler.
 *
 * Routes (SPEC.md): GET /health, /metrics, /openapi.json; GET /api/pix/{ispb}/stream/start;
 * GET|DELETE /api/pix/{ispb}/stream/{interationId}; POST /api/util/msgs/{ispb}/{number}; and
 * POST /api/pix/{ispb}/msgs (send), DELETE /api/pix/{ispb}/streams and the original server's
 * GET /api/pix/{ispb}/stream/stop (stop all of the institution's streams; DELETE instead with
 * authentication on: stop_all_method).
 * A known path with another method is 405 with Allow; anything else 404. An /api route's handler
 * gets the route's values (struct route_values: the path's segments point into the request, the
 * credential, a read's batch size): the ISPB and a stream's id are checked here, once authenticated
 * (path_values_ok), then a read's Accept (406 when nothing it sends is acceptable), the rest (the
 * generator's {number}, a send's body) by the handler.
 *
 * Authentication comes once a route and its method matched, before the handler looks at anything:
 * without a usable credential the answer is 401 whatever the ISPB or id (no oracle); so is a
 * credential the database has not accepted recently from an address that keeps failing (no query:
 * respond.c request_authenticate). /health, /metrics and /openapi.json stay open (operators'
 * probes; /health costs at most one query a second, handlers/health.c).
 *
 * Request bodies: each route has its limit in route_body_max; only the send route takes one
 * (PIXD_SEND_BODY_MAX). h2o, told the largest limit of all routes (router_max_entity), refuses a
 * larger declared body with 413 before reading it; a smaller one is buffered before any handler
 * runs (libh2o 2.2.5 has no hook between head and body: event_loop.c says what bounds it);
 * once path and method matched a route, a body over that route's own limit is 413 (problem+json)
 * before authentication, never passed to a handler. An unknown path stays 404 whatever its body.
 */
#include <string.h>
#include "accept.h"
#include "handlers.h"
#include "respond.h"
#include "router.h"

#define MAX_SEGMENTS 6
#define ROUTE_BODY_NONE 0

/* Which routes take a body, and how large (bytes). */
static const size_t route_body_max[ROUTE_N] = {
    [ROUTE_START] = ROUTE_BODY_NONE,   [ROUTE_NEXT] = ROUTE_BODY_NONE,
    [ROUTE_STOP] = ROUTE_BODY_NONE,    [ROUTE_GENERATE] = ROUTE_BODY_NONE,
    [ROUTE_SEND] = PIXD_SEND_BODY_MAX, [ROUTE_STOP_ALL] = ROUTE_BODY_NONE,
    [ROUTE_HEALTH] = ROUTE_BODY_NONE,  [ROUTE_METRICS] = ROUTE_BODY_NONE,
    [ROUTE_OPENAPI] = ROUTE_BODY_NONE, [ROUTE_OTHER] = ROUTE_BODY_NONE,
};

static int on_req(h2o_handler_t *self, h2o_req_t *req);
static size_t split_path(h2o_iovec_t path, h2o_iovec_t *segs, size_t max);
static int seg_is(h2o_iovec_t seg, const char *s);
static int method_is(h2o_req_t *req, const char *m);
static enum route route_decide(h2o_req_t *req, h2o_iovec_t *segs, size_t n);
static enum route route_api(h2o_req_t *req, h2o_iovec_t *segs, size_t n);
static const char *route_allow(enum route route, size_t n);
static int method_allowed(h2o_req_t *req, const char *allow);
static void route_dispatch(h2o_req_t *req, enum route route, const struct route_values *v);
static const char *stop_all_method(void);
static int body_too_large(h2o_req_t *req, enum route route);
static int iid_is_plausible(h2o_iovec_t iid);
static int path_values_ok(h2o_req_t *req, enum route route, h2o_iovec_t *segs,
                          struct route_values *v);
static int read_negotiated(h2o_req_t *req, enum route route, int *max_messages);
static void close_if_old(h2o_req_t *req);

void router_register(h2o_globalconf_t *conf)
{
	h2o_hostconf_t *host =
	    h2o_config_register_host(conf, h2o_iovec_init(H2O_STRLIT("default")), 65535);
	h2o_pathconf_t *path = h2o_config_register_path(host, "/", 0);
	h2o_handler_t *handler = h2o_create_handler(path, sizeof(*handler));

	handler->on_req = on_req;
}

size_t router_max_entity(void)
{
	size_t max = 0;

	for (size_t i = 0; i < ROUTE_N; i++)
		if (route_body_max[i] > max)
			max = route_body_max[i];
	return max;
}

/* 413 (answered) when the body is larger than the route takes. */
static int body_too_large(h2o_req_t *req, enum route route)
{
	if (req->entity.base == NULL || req->entity.len <= route_body_max[route])
		return 0;
	respond_problem(req, 413, "request body too large for this resource");
	return 1;
}

/* A connection older than --max-connection-age-s closes after this answer: no client keeps one
 * forever, whatever it sends (its certificate's expiry is checked per request too: auth.c). */
static void close_if_old(h2o_req_t *req)
{
	if (req->conn == NULL) /* the router fuzzer's requests have no connection */
		return;
	if (req->timestamps.request_begin_at.tv_sec - req->conn->connected_at.tv_sec >=
	    pixd_config.max_connection_age_s)
		req->http1_is_persistent = 0;
}

/* The route is decided here, once, and carried with the request (request_route_set): the body
 * limit, authentication, the handler and the per-route counters of its answer all read it. */
static int on_req(h2o_handler_t *self, h2o_req_t *req)
{
	h2o_iovec_t segs[MAX_SEGMENTS + 1];
	size_t n = split_path(req->path_normalized, segs, MAX_SEGMENTS + 1);
	enum route route = route_decide(req, segs, n);
	struct route_values v = {{NULL, 0}, {NULL, 0}, 0, NULL};

	pixd_metrics.requests++;
	close_if_old(req);
	request_route_set(req, route);
	if (route == ROUTE_OTHER) {
		respond_problem(req, 404, "no such resource");
		return 0;
	}
	if (!method_allowed(req, route_allow(route, n))) {
		respond_not_allowed(req, route_allow(route, n));
		return 0;
	}
	if (body_too_large(req, route))
		return 0;
	if (route < ROUTE_HEALTH && request_authenticate(req, &v.credential) != 0)
		return 0; /* /health, /metrics and /openapi.json stay open */
	if (route < ROUTE_HEALTH && !path_values_ok(req, route, segs, &v))
		return 0;
	if (!read_negotiated(req, route, &v.max_messages))
		return 0;
	route_dispatch(req, route, &v);
	return 0;
}

/* The route a path names: the three operators' paths, or one of /api (route_api). */
static enum route route_decide(h2o_req_t *req, h2o_iovec_t *segs, size_t n)
{
	if (n == 1 && seg_is(segs[0], "health"))
		return ROUTE_HEALTH;
	if (n == 1 && seg_is(segs[0], "metrics"))
		return ROUTE_METRICS;
	if (n == 1 && seg_is(segs[0], "openapi.json"))
		return ROUTE_OPENAPI;
	if ((n == 4 || n == 5) && seg_is(segs[0], "api"))
		return route_api(req, segs, n);
	return ROUTE_OTHER;
}

/* /api/pix/{ispb}/... and /api/util/msgs/{ispb}/{number}; /stream/{id} is a read unless DELETE. */
static enum route route_api(h2o_req_t *req, h2o_iovec_t *segs, size_t n)
{
	if (seg_is(segs[1], "pix") && n == 5 && seg_is(segs[3], "stream") && seg_is(segs[4], "stop"))
		return ROUTE_STOP_ALL;
	if (seg_is(segs[1], "pix") && n == 5 && seg_is(segs[3], "stream"))
		return seg_is(segs[4], "start")   ? ROUTE_START
		       : method_is(req, "DELETE") ? ROUTE_STOP
		                                  : ROUTE_NEXT;
	if (seg_is(segs[1], "pix") && n == 4 && seg_is(segs[3], "msgs"))
		return ROUTE_SEND;
	if (seg_is(segs[1], "pix") && n == 4 && seg_is(segs[3], "streams"))
		return ROUTE_STOP_ALL;
	if (seg_is(segs[1], "util") && n == 5 && seg_is(segs[2], "msgs") && !pixd_config.no_util)
		return ROUTE_GENERATE;
	return ROUTE_OTHER;
}

/*
 * The original server's stop-all is GET .../stream/stop: a GET that changes state, which any web
 * page can make a browser send with the client certificate it holds (an <img> is enough). With
 * authentication on it is DELETE .../stream/stop (like DELETE .../streams), which a page cannot
 * send cross-site without the server's consent (CORS preflight, and pixd answers no OPTIONS);
 * a GET there is 405 with Allow: DELETE. Without authentication (loopback, development) the
 * original GET stays, and DELETE works there too.
 */
static const char *stop_all_method(void)
{
	return pixd_config.auth_modes != 0 ? "DELETE" : "GET, DELETE";
}

/* The methods a route's path allows (n: its segments, which tell .../streams from .../stream/stop). */
static const char *route_allow(enum route route, size_t n)
{
	switch (route) {
	case ROUTE_NEXT:
	case ROUTE_STOP:
		return "GET, DELETE";
	case ROUTE_STOP_ALL:
		return n == 5 ? stop_all_method() : "DELETE";
	case ROUTE_SEND:
	case ROUTE_GENERATE:
		return "POST";
	default:
		return "GET";
	}
}

static int method_allowed(h2o_req_t *req, const char *allow)
{
	return (method_is(req, "GET") && strstr(allow, "GET") != NULL) ||
	       (method_is(req, "DELETE") && strstr(allow, "DELETE") != NULL) ||
	       (method_is(req, "POST") && strcmp(allow, "POST") == 0);
}

/*
 * Cheap pre-checks that spare the database a query and keep arbitrary bytes (invalid UTF-8, NUL)
 * away from it; the database stays the judge of what an id is. A rejected id gets the same 404 the
 * database's PX004 gets.
 */
static int iid_is_plausible(h2o_iovec_t iid)
{
	if (iid.len == 0 || iid.len > PIXD_IID_MAX)
		return 0;
	for (size_t i = 0; i < iid.len; i++)
		if ((unsigned char)iid.base[i] <= 0x20 || (unsigned char)iid.base[i] >= 0x7f)
			return 0;
	return 1;
}

/* The path's values into v: the {ispb} of every /api route (400 unless 8 digits), a stream's {id}
 * (the database's 404 unless plausible), the generator's {number} (its handler checks it). 1 when
 * usable, else answered. */
static int path_values_ok(h2o_req_t *req, enum route route, h2o_iovec_t *segs,
                          struct route_values *v)
{
	v->ispb = route == ROUTE_GENERATE ? segs[3] : segs[2];
	if (route == ROUTE_NEXT || route == ROUTE_STOP || route == ROUTE_GENERATE)
		v->id = segs[4];
	if (!is_ispb(v->ispb.base, v->ispb.len)) {
		respond_bad_ispb(req);
		return 0;
	}
	if ((route == ROUTE_NEXT || route == ROUTE_STOP) && !iid_is_plausible(v->id)) {
		respond_stream_not_found(req);
		return 0;
	}
	return 1;
}

/* A read's batch size from its Accept (accept.c): 1, or PIXD_MULTI_BATCH when multipart/json is
 * preferred; 1 when usable (other routes: 0 and nothing checked), else answered 406. */
static int read_negotiated(h2o_req_t *req, enum route route, int *max_messages)
{
	if (route != ROUTE_START && route != ROUTE_NEXT)
		return 1;
	*max_messages = accept_negotiate(req);
	if (*max_messages != ACCEPT_NOTHING)
		return 1;
	respond_problem(
	    req, 406,
	    "acceptable media types: application/json (one message), multipart/json (a batch)");
	return 0;
}

/* v: an /api route's values (path_values_ok, read_negotiated); the operators' routes take none. */
static void route_dispatch(h2o_req_t *req, enum route route, const struct route_values *v)
{
	switch (route) {
	case ROUTE_START:
		handle_stream_start(req, v);
		break;
	case ROUTE_NEXT:
		handle_stream_next(req, v);
		break;
	case ROUTE_STOP:
		handle_stream_stop(req, v);
		break;
	case ROUTE_GENERATE:
		handle_generate(req, v);
		break;
	case ROUTE_SEND:
		handle_messages_send(req, v);
		break;
	case ROUTE_STOP_ALL:
		handle_streams_stop_all(req, v);
		break;
	case ROUTE_HEALTH:
		handle_health(req);
		break;
	case ROUTE_METRICS:
		handle_metrics(req);
		break;
	case ROUTE_OPENAPI:
		handle_openapi(req);
		break;
	default:
		break;
	}
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
