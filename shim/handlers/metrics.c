/*
 * handlers/metrics.c — GET /metrics: the server's counters and gauges in Prometheus text format
 * (version 0.0.4), then the database's (pix_metrics(): open streams, ready and pending messages per
 * ISPB, delivered / confirmed / redelivered / requeued / expired totals), which maintenance.c
 * refreshes every few seconds. The samples come from memory: it works while the database is down,
 * and pix_db_metrics_age_seconds says how old the database's part is.
 *
 * Who sees what. The database's part tells each institution's payment volume, so with
 * authentication on it goes only to an admin credential; anyone else (no credential, an
 * institution's, an unknown one) gets the server's own series, which name no institution. The
 * verdict is the database's, one query per scrape that carries a credential (DB_ADMIN_CHECK: the
 * generator's admin check, with 0 messages, writes nothing); a scrape without one costs no query,
 * and so does every scrape with --auth none, which shows everything as before. When the pool
 * cannot take the check (down, full) or it fails, the answer is the server's part: never a 5xx.
 *
 * Every metric family is one block (HELP, TYPE, then all its samples): strict parsers
 * (promtool check metrics) refuse a family split in two.
 */
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include "auth.h"
#include "database.h"
#include "handlers.h"
#include "listener.h"
#include "maintenance.h"
#include "parking.h"
#include "respond.h"

struct text {
	char buf[32768];
	size_t len;
};

/* A scrape with a credential, waiting for the database's verdict. */
struct metrics_ctx {
	struct async_req base;
	db_query_t query;
	char credential[CREDENTIAL_MAX + 1];
};

static void answer(h2o_req_t *req, int with_database);
static void on_admin_check(db_query_t *q, PGresult *res, enum db_failure failure);
static void detach_metrics(struct async_req *a);

static void put_observed(struct text *t);
static void put_shards(struct text *t);

static void put(struct text *t, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void counter(struct text *t, const char *name, const char *help, uint64_t value);
static void gauge(struct text *t, const char *name, const char *help, long value);

static void put(struct text *t, const char *fmt, ...)
{
	va_list ap;
	int n;

	if (t->len >= sizeof(t->buf))
		return;
	va_start(ap, fmt);
	n = vsnprintf(t->buf + t->len, sizeof(t->buf) - t->len, fmt, ap);
	va_end(ap);
	if (n > 0)
		t->len += (size_t)n < sizeof(t->buf) - t->len ? (size_t)n : sizeof(t->buf) - t->len;
}

static void counter(struct text *t, const char *name, const char *help, uint64_t value)
{
	put(t, "# HELP %s %s\n# TYPE %s counter\n%s %" PRIu64 "\n", name, help, name, name, value);
}

static void gauge(struct text *t, const char *name, const char *help, long value)
{
	put(t, "# HELP %s %s\n# TYPE %s gauge\n%s %ld\n", name, help, name, name, value);
}

/* Behind a pix router: how many shards the router lists and whether each one's LISTEN is up. */
static void put_shards(struct text *t)
{
	int n = listener_shards();

	gauge(t, "pixd_shards", "Shards listed by the router (0: --db is a single database).", n);
	if (n == 0)
		return;
	put(t, "# HELP pixd_shard_listener_up 1 while LISTEN pix_message is active on the shard.\n"
	       "# TYPE pixd_shard_listener_up gauge\n");
	for (int i = 0; i < n; i++)
		put(t, "pixd_shard_listener_up{shard=\"%d\"} %d\n", i, listener_shard_is_listening(i));
}

static void put_observed(struct text *t)
{
	put(t, "# HELP pixd_http_responses_total HTTP responses by route and status class.\n"
	       "# TYPE pixd_http_responses_total counter\n");
	for (int r = 0; r < ROUTE_N; r++)
		for (int c = 1; c <= 5; c++)
			if (route_observed.responses[r][c] > 0)
				put(t, "pixd_http_responses_total{route=\"%s\",class=\"%dxx\"} %" PRIu64 "\n",
				    route_names[r], c, route_observed.responses[r][c]);
	put(t, "# HELP pixd_http_request_duration_seconds Time from request to response, by route.\n"
	       "# TYPE pixd_http_request_duration_seconds histogram\n");
	for (int r = 0; r < ROUTE_N; r++) {
		uint64_t cumulative = 0;

		for (size_t b = 0; b <= PIXD_LATENCY_BOUNDS; b++) {
			cumulative += route_observed.latency[r][b];
			if (b < PIXD_LATENCY_BOUNDS)
				put(t,
				    "pixd_http_request_duration_seconds_bucket{route=\"%s\",le=\"%g\"} %" PRIu64
				    "\n",
				    route_names[r], latency_bounds[b], cumulative);
			else
				put(t,
				    "pixd_http_request_duration_seconds_bucket{route=\"%s\",le=\"+Inf\"} %" PRIu64
				    "\n",
				    route_names[r], cumulative);
		}
		put(t, "pixd_http_request_duration_seconds_sum{route=\"%s\"} %.6f\n", route_names[r],
		    route_observed.latency_sum[r]);
		put(t, "pixd_http_request_duration_seconds_count{route=\"%s\"} %" PRIu64 "\n",
		    route_names[r], cumulative);
	}
}

void handle_metrics(h2o_req_t *req)
{
	struct metrics_ctx *ctx;
	char credential[CREDENTIAL_MAX + 1];

	switch (auth_credential(req, credential)) {
	case AUTH_OFF:
		answer(req, 1);
		return;
	case AUTH_MISSING:
	case AUTH_MALFORMED:
		answer(req, 0);
		return;
	case AUTH_PRESENTED:
		break;
	}
	ctx = async_req_new(req, sizeof(*ctx), detach_metrics);
	memcpy(ctx->credential, credential, sizeof(ctx->credential));
	ctx->query.stmt = DB_ADMIN_CHECK;
	ctx->query.params[0] = ctx->credential;
	ctx->query.cb = on_admin_check;
	if (db_submit(&ctx->query) != DB_SUBMITTED)
		answer(async_req_answer(&ctx->base), 0);
}

static void detach_metrics(struct async_req *a)
{
	db_cancel(&((struct metrics_ctx *)a)->query);
}

/* Admin: the generator refused the count (PX002) after it accepted the credential. */
static void on_admin_check(db_query_t *q, PGresult *res, enum db_failure failure)
{
	struct metrics_ctx *ctx = H2O_STRUCT_FROM_MEMBER(struct metrics_ctx, query, q);
	const char *state = failure == DB_FAIL_NONE ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : NULL;

	answer(async_req_answer(&ctx->base), state != NULL && strcmp(state, "PX002") == 0);
}

static void answer(h2o_req_t *req, int with_database)
{
	static struct text t; /* off the stack; the loop is single-threaded */
	size_t db_len;
	double db_age;
	const char *db_text = maintenance_db_metrics(&db_len, &db_age);
	const struct pixd_metrics *m = &pixd_metrics;

	t.len = 0;
	counter(&t, "pixd_requests_total", "HTTP requests received.", m->requests);
	put(&t, "# HELP pixd_responses_total HTTP responses sent, by status class.\n"
	        "# TYPE pixd_responses_total counter\n");
	for (int c = 1; c <= 5; c++)
		put(&t, "pixd_responses_total{class=\"%dxx\"} %" PRIu64 "\n", c, m->responses_by_class[c]);
	counter(&t, "pixd_reads_200_total", "Reads answered with messages.", m->reads_200);
	counter(&t, "pixd_reads_204_total", "Reads answered empty after the wait.", m->reads_204);
	counter(&t, "pixd_parks_total", "Times a read found nothing and parked.", m->parks);
	counter(&t, "pixd_wakeups_total", "Parked reads woken to read again.", m->wakeups);
	counter(&t, "pixd_notifications_total", "NOTIFY pix_message received.", m->notifications);
	counter(&t, "pixd_clients_gone_total", "Requests whose client left before the answer.",
	        m->clients_gone);
	counter(&t, "pixd_clients_departed_total",
	        "Parked reads whose client had closed its connection: freed without a query.",
	        m->clients_departed);
	counter(&t, "pixd_log_lines_dropped_total", "Log lines stderr could not take in time.",
	        m->log_lines_dropped);
	counter(&t, "pixd_keepalive_streams_total",
	        "Streams of reads in progress kept alive (pix_streams_keepalive), summed over calls.",
	        m->keepalive_streams);
	counter(&t, "pixd_send_quota_refused_total",
	        "Sends answered 429 because their ISPB's send quota was used up.",
	        m->send_quota_refused);
	counter(&t, "pixd_reads_ispb_refused_total",
	        "Reads answered 429 because their ISPB had --max-reads-per-ispb in progress.",
	        m->reads_ispb_refused);
	counter(&t, "pixd_wakes_deferred_total",
	        "Wakes held back until the read's wake interval had passed.", m->wakes_deferred);
	counter(&t, "pixd_db_queries_total", "Queries sent to PostgreSQL.", m->db_queries);
	put(&t, "# HELP pixd_db_calls_total Queries sent to PostgreSQL, by SQL function.\n"
	        "# TYPE pixd_db_calls_total counter\n");
	for (int i = 0; i < DB_NSTMT; i++)
		put(&t, "pixd_db_calls_total{function=\"%s\"} %" PRIu64 "\n", db_statement_name(i),
		    m->db_calls[i]);
	counter(&t, "pixd_db_errors_total", "Queries that returned an error.", m->db_errors);
	counter(&t, "pixd_db_timeouts_total", "Queries given up after --query-timeout-ms.",
	        m->db_timeouts);
	counter(&t, "pixd_db_rejected_total", "Requests answered 503 at once (pool down or full).",
	        m->db_rejected);
	counter(&t, "pixd_db_reconnects_total", "Reconnection attempts.", m->db_reconnects);
	gauge(&t, "pixd_connections", "Open client connections.", m->connections);
	gauge(&t, "pixd_requests_in_flight", "Requests taken and not answered yet.",
	      async_req_in_flight());
	gauge(&t, "pixd_reads_in_progress", "Reads querying or parked.", parking_joined_count());
	gauge(&t, "pixd_reads_parked", "Reads waiting for a message.", parking_parked_count());
	gauge(&t, "pixd_reads_wake_pending", "Parked reads woken, waiting for room in the queue.",
	      parking_pending_count());
	gauge(&t, "pixd_db_up", "1 while the pool accepts queries.", !db_is_down());
	gauge(&t, "pixd_db_connections_ready", "Pool connections ready or busy.",
	      db_ready_connections());
	gauge(&t, "pixd_db_connections_busy", "Pool connections running a query.",
	      db_busy_connections());
	gauge(&t, "pixd_db_queue_length", "Queries waiting for a connection.", db_queue_length());
	gauge(&t, "pixd_listener_up",
	      "1 while LISTEN pix_message is active (on every shard, behind a router).",
	      listener_is_listening());
	put_shards(&t);
	put_observed(&t);
	t.len += auth_metrics_text(t.buf + t.len, sizeof(t.buf) - t.len);
	if (with_database) {
		put(&t,
		    "# HELP pix_db_metrics_age_seconds Age of the database samples below (-1: none yet).\n"
		    "# TYPE pix_db_metrics_age_seconds gauge\npix_db_metrics_age_seconds %.3f\n",
		    db_age);
		put(&t, "%.*s", (int)db_len, db_text);
	}
	respond(req, 200, "text/plain; version=0.0.4; charset=utf-8", t.buf, t.len);
}
