/*
 * pixd.h — what every file of the HTTP server shares: the configuration, the one event loop and
 * h2o context, the shutdown flag and the counters /metrics exposes.
 *
 * The server is single-threaded: every callback runs on the loop, so nothing here needs a lock.
 * Vocabulary (the same as the extension's): an ISPB is 8 ASCII digits; a read is a GET on
 * stream/start or stream/{interationId}; a parked read is one waiting for a message (long poll).
 */
#ifndef PIXD_H
#define PIXD_H

#include <stdint.h>
#include <h2o.h>

#define PIXD_ISPB_LEN 8
/* Longest interationId passed to the database; longer ids are answered 404 without a query. */
#define PIXD_IID_MAX 64
/* Longest Pull-Next URI kept for a parked read ("/api/pix/" ISPB "/stream/" id). */
#define PIXD_PULL_NEXT_MAX 128
/* The contract caps the long-poll wait at 8 s. */
#define PIXD_WAIT_MS_MAX 8000
/* multipart/json batches (the extension's PIX_MAX_BATCH). */
#define PIXD_MULTI_BATCH 10

struct pixd_config {
	const char *listen;      /* host:port */
	const char *db_conninfo; /* libpq conninfo; PG* environment variables fill the rest */
	int pool_size;           /* database connections for queries */
	int wait_ms;             /* long-poll wait of a read that finds nothing */
	int max_queue;           /* queries waiting for a free connection */
	int max_parked;          /* reads in progress (querying or parked) */
	int max_connections;     /* open client connections; more wait in the kernel backlog */
	int max_generate;        /* largest {number} of POST /api/util/msgs */
	int query_timeout_ms;    /* a query (or a wait in the queue) longer than this is given up */
	int connect_timeout_ms;  /* a connection attempt longer than this is given up */
	int access_log;          /* one line per request on stderr */
};

/* Counters for GET /metrics; plain integers, the loop is single-threaded. */
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
};

extern struct pixd_config pixd_config;
extern struct pixd_metrics pixd_metrics;
extern h2o_evloop_t *pixd_loop;
extern h2o_context_t pixd_ctx;
/* Set once SIGTERM/SIGINT arrived: no new parking, parked reads answered 204. */
extern int pixd_shutting_down;

/* Logs one line to stderr with a timestamp; printf-like. */
void pixd_log(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

#endif
