/*
 * router.c — maps a request's path and method to its handler.
 *
 * Routes (SPEC.md): GET /health, /metrics, /openapi.json; GET /api/pix/{ispb}/stream/start;
 * GET|DELETE /api/pix/{ispb}/stream/{interationId}; POST /api/util/msgs/{ispb}/{number}.
 * A known path with another method is 405 with Allow; anything else 404. The segments handed to a
 * handler point into the request and are not validated yet: each handler checks its own.
 */
#include <string.h>
#include "handlers.h"
#include "respond.h"
#include "router.h"

#define MAX_SEGMENTS 6

static int on_req(h2o_handler_t *self, h2o_req_t *req);
static size_t split_path(h2o_iovec_t path, h2o_iovec_t *segs, size_t max);
static int seg_is(h2o_iovec_t seg, const char *s);
static int method_is(h2o_req_t *req, const char *m);
static void route_api(h2o_req_t *req, h2o_iovec_t *segs, size_t n);

void router_register(h2o_globalconf_t *conf)
{
	h2o_hostconf_t *host =
	    h2o_config_register_host(conf, h2o_iovec_init(H2O_STRLIT("default")), 65535);
	h2o_pathconf_t *path = h2o_config_register_path(host, "/", 0);
	h2o_handler_t *handler = h2o_create_handler(path, sizeof(*handler));

	handler->on_req = on_req;
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
