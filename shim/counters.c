/*
 * counters.c — the counters of GET /metrics, and the per-route observation of every response.
 */
#define _GNU_SOURCE /* memmem */
#include <string.h>
#include "counters.h"

static int path_is(h2o_iovec_t path, const char *prefix, const char *suffix);
static enum route route_of(h2o_req_t *req);

struct pixd_metrics pixd_metrics;
struct route_observations route_observed;

const char *const route_names[ROUTE_N] = {"stream_start", "stream_next", "stream_stop", "util_msgs",
                                          "health",       "metrics",     "openapi",     "other"};
/* A long poll lands near --wait-ms: the last finite bound is above the contract's 8 s. */
const double latency_bounds[PIXD_LATENCY_BOUNDS] = {0.001, 0.005, 0.01, 0.025, 0.05, 0.1,
                                                    0.25,  0.5,   1,    2.5,   5,    9};

static int path_is(h2o_iovec_t path, const char *prefix, const char *suffix)
{
	size_t p = strlen(prefix), s = strlen(suffix);

	return path.len >= p + s && memcmp(path.base, prefix, p) == 0 &&
	       memcmp(path.base + path.len - s, suffix, s) == 0;
}

static enum route route_of(h2o_req_t *req)
{
	h2o_iovec_t path = req->path_normalized;

	if (path_is(path, "/api/pix/", "/stream/start"))
		return ROUTE_START;
	if (path_is(path, "/api/pix/", "") && memmem(path.base, path.len, "/stream/", 8) != NULL)
		return h2o_memis(req->method.base, req->method.len, H2O_STRLIT("DELETE")) ? ROUTE_STOP
		                                                                          : ROUTE_NEXT;
	if (path_is(path, "/api/util/msgs/", ""))
		return ROUTE_MSGS;
	if (h2o_memis(path.base, path.len, H2O_STRLIT("/health")))
		return ROUTE_HEALTH;
	if (h2o_memis(path.base, path.len, H2O_STRLIT("/metrics")))
		return ROUTE_METRICS;
	if (h2o_memis(path.base, path.len, H2O_STRLIT("/openapi.json")))
		return ROUTE_OPENAPI;
	return ROUTE_OTHER;
}

void metrics_observe(h2o_req_t *req, int status, double ms)
{
	enum route r = route_of(req);
	size_t b = 0;

	route_observed.responses[r][status / 100 < 6 ? status / 100 : 5]++;
	while (b < PIXD_LATENCY_BOUNDS && ms / 1000.0 > latency_bounds[b])
		b++;
	route_observed.latency[r][b]++;
	route_observed.latency_sum[r] += ms / 1000.0;
}
