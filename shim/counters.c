/*
 * counters.c — the counters of GET /metrics, and the per-route observation of every response: the
 * route the router decided for the request (router.c), carried with it (request_route).
 */
#include <string.h>
#include "counters.h"

struct pixd_metrics pixd_metrics;
struct route_observations route_observed;

/* The label of each route in /metrics (the generator's is "util_msgs": its path's words, kept). */
const char *const route_names[ROUTE_N] = {
    [ROUTE_START] = "stream_start", [ROUTE_NEXT] = "stream_next",
    [ROUTE_STOP] = "stream_stop",   [ROUTE_GENERATE] = "util_msgs",
    [ROUTE_SEND] = "messages_send", [ROUTE_STOP_ALL] = "streams_stop",
    [ROUTE_HEALTH] = "health",      [ROUTE_METRICS] = "metrics",
    [ROUTE_OPENAPI] = "openapi",    [ROUTE_OTHER] = "other"};
/* A long poll lands near --wait-ms: the last finite bound is above the contract's 8 s. */
const double latency_bounds[PIXD_LATENCY_BOUNDS] = {0.001, 0.005, 0.01, 0.025, 0.05, 0.1,
                                                    0.25,  0.5,   1,    2.5,   5,    9};

#define ROUTE_ENV "pixd-route"

/* h2o's per-request environment (h2o_req_getenv) is the request's own key/value store: the
 * route's name stands there, and its address in route_names says which route it is. */
void request_route_set(h2o_req_t *req, enum route route)
{
	*h2o_req_getenv(req, H2O_STRLIT(ROUTE_ENV), 1) =
	    h2o_iovec_init(route_names[route], strlen(route_names[route]));
}

enum route request_route(h2o_req_t *req)
{
	h2o_iovec_t *v = h2o_req_getenv(req, H2O_STRLIT(ROUTE_ENV), 0);

	for (int r = 0; v != NULL && r < ROUTE_N; r++)
		if (v->base == route_names[r])
			return r;
	return ROUTE_OTHER;
}

void metrics_observe(h2o_req_t *req, int status, double ms)
{
	enum route r = request_route(req);
	size_t b = 0;

	route_observed.responses[r][status / 100 < 6 ? status / 100 : 5]++;
	while (b < PIXD_LATENCY_BOUNDS && ms / 1000.0 > latency_bounds[b])
		b++;
	route_observed.latency[r][b]++;
	route_observed.latency_sum[r] += ms / 1000.0;
}
