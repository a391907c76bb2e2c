/*
 * counters.h — ground floor: the counters and gauges GET /metrics exposes. Every layer adds to
 * them; only handlers/metrics.c reads them. Plain integers: the loop is single-threaded.
 */
#ifndef PIXD_COUNTERS_H
#define PIXD_COUNTERS_H

#include <stdint.h>
#include <h2o.h>

/* Room for the pool's statements (enum db_stmt) in the per-statement counter. */
#define PIXD_MAX_STATEMENTS 16

struct pixd_metrics {
	uint64_t requests;
	uint64_t responses_by_class[6]; /* index status / 100 */
	uint64_t reads_200;
	uint64_t reads_204;
	uint64_t parks;
	uint64_t wakeups;
	uint64_t notifications;
	uint64_t db_queries;
	uint64_t db_errors;
	uint64_t db_timeouts;
	uint64_t db_rejected; /* 503 because the pool was down or its queue full */
	uint64_t db_reconnects;
	uint64_t clients_gone; /* requests whose client left before the answer */
	uint64_t
	    clients_departed; /* of which: parked reads found gone by pixd, freed without a query */
	uint64_t log_lines_dropped;  /* stderr could not take them (log.c) */
	uint64_t keepalive_streams;  /* streams pix_streams_keepalive marked, summed over calls */
	uint64_t send_quota_refused; /* sends answered 429: their ISPB's bucket was empty */
	uint64_t reads_ispb_refused; /* reads answered 429: their ISPB had --max-reads-per-ispb */
	uint64_t wakes_deferred;     /* wakes held back by the per-read wake interval (parking.c) */
	uint64_t db_calls[PIXD_MAX_STATEMENTS]; /* queries sent, by statement (database.h) */
	/* gauges, kept by the layer that owns them */
	int connections; /* open client connections (event_loop.c) */
	/* what anonymous clients were refused before reaching the database (issue 18) */
	uint64_t connections_refused_per_address; /* closed at accept (event_loop.c) */
	uint64_t connections_shed_buffered; /* closed: --max-buffered-mb was exceeded (event_loop.c) */
	uint64_t unverified_refused;   /* 503: an unknown credential's share of the queue (database.c) */
	uint64_t throttled_no_query;   /* 401 to a throttled address without a query (respond.c) */
	uint64_t health_answers_cached; /* GET /health answered without a probe (health.c) */
};

extern struct pixd_metrics pixd_metrics;

/* The routes (router.c decides which one a request is): the contract's fixed set, so the labels of
 * responses by route and latency stay bounded. Those before ROUTE_HEALTH are the authenticated
 * /api routes. ROUTE_GENERATE: POST /api/util/msgs/{ispb}/{number} (handlers/generate.c);
 * ROUTE_SEND: POST /api/pix/{ispb}/msgs (handlers/send.c). */
enum route {
	ROUTE_START,
	ROUTE_NEXT,
	ROUTE_STOP,
	ROUTE_GENERATE,
	ROUTE_SEND,
	ROUTE_STOP_ALL,
	ROUTE_HEALTH,
	ROUTE_METRICS,
	ROUTE_OPENAPI,
	ROUTE_OTHER,
	ROUTE_N
};
#define PIXD_LATENCY_BOUNDS 12

struct route_observations {
	uint64_t responses[ROUTE_N][6]; /* by route and status / 100 */
	uint64_t latency[ROUTE_N][PIXD_LATENCY_BOUNDS + 1];
	double latency_sum[ROUTE_N];
};

extern const char *const route_names[ROUTE_N];
/* Upper bounds (seconds) of the latency histogram's buckets. */
extern const double latency_bounds[PIXD_LATENCY_BOUNDS];
extern struct route_observations route_observed;

/* The route router.c decided for a request, carried with it: set once by the router, read by whoever
 * counts its answer (ROUTE_OTHER before the router decided, and for a path that is no route). */
void request_route_set(h2o_req_t *req, enum route route);
enum route request_route(h2o_req_t *req);
/* Counts a response: by route and status class, and its latency in the histogram. */
void metrics_observe(h2o_req_t *req, int status, double ms);

#endif
