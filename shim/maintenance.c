/*
 * maintenance.c — the server's own calls, on a one-second tick: expiry, history purge, and the
 * database's share of /metrics.
 *
 * - pix_streams_keepalive(ids) with the interationIds of every read in progress: a collector
 *   parked here is alive, so its stream must not expire under it whatever pix.stream_idle_timeout
 *   says, and one call for all of them costs one statement, not a commit per collector. It runs
 *   every four fifths of the extension's liveness slack (pix.stream_idle_timeout / 16, at most
 *   15 s; the timeout is read back with each call), 1 to 7 ticks: at the default 60 s, every 3 s
 *   for a 3.75 s slack. The extension's empty reads write nothing while the stream's last read is
 *   younger than the slack, so a keepalive that runs less often than the slack leaves half the
 *   parked collectors' reads to write a commit each (measured: 326 commits/s for 5 400 parked at
 *   every 7 s); the remaining fifth covers a late tick and the call's own time. Every row marked is
 *   WAL, so it runs no more often than that. A database without the function (extension before
 *   1.2) is logged once and not asked again.
 * - pix_expire_streams() every second. Reads and starts expire their own ISPB's idle streams, but
 *   an ISPB whose collectors are all parked makes no calls: this call is what requeues a dead
 *   collector's batch there, and its NOTIFY is what wakes the parked ones to take it.
 * - pix_purge_history() once a minute, and again on the next tick as long as it removed something
 *   (it removes one chunk per call, so a large backlog of history is worked off a chunk a second).
 * - pix_metrics() every PIXD_DB_METRICS_S seconds, kept as ready-made Prometheus text that /metrics
 *   appends for whoever may see it (handlers/metrics.c): the samples work while the database is
 *   away (they then carry their age in pix_db_metrics_age_seconds). Each metric is one block
 *   (HELP, TYPE, samples), whatever the order of the rows, and a label is always a valid ISPB.
 *
 * Each call is a static query with no request behind it; a call still in flight is never sent
 * again, so a slow database gets at most one of each. Failures are logged once and retried on a
 * later tick. Nothing here decides anything: every decision stays in the extension.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "database.h"
#include "maintenance.h"
#include "parking.h"

#define PIXD_TICK_MS 1000
#define PIXD_PURGE_EVERY_S 60
#define PIXD_DB_METRICS_S 5
#define PIXD_DB_METRICS_MAX 16384
#define KEEPALIVE_MAX_TICKS 7
#define LIVENESS_SLACK_MAX_MS 15000

struct call {
	db_query_t query;
	int in_flight;
	int failing; /* logged once until it works again */
	int missing; /* the database has no such function: not asked again */
};

static void on_tick(h2o_timeout_entry_t *entry);
static void submit(struct call *c, enum db_stmt stmt);
static struct call *call_of(db_query_t *q);
static int call_ok(struct call *c, PGresult *res, enum db_failure failure);
static void on_expire_result(db_query_t *q, PGresult *res, enum db_failure failure);
static void on_purge_result(db_query_t *q, PGresult *res, enum db_failure failure);
static void on_metrics_result(db_query_t *q, PGresult *res, enum db_failure failure);
static long liveness_slack_ms(long timeout_ms);
static void on_keepalive_result(db_query_t *q, PGresult *res, enum db_failure failure);
static void submit_keepalive(void);
static const char *call_name(struct call *c);

static struct {
	h2o_timeout_t tick;
	h2o_timeout_entry_t tick_entry;
	struct call keepalive, expire, purge, metrics;
	char *keepalive_ids;  /* the text[] literal of the call in flight (malloc'd) */
	int keepalive_every;  /* ticks between calls, from the idle timeout (1 until known) */
	long keepalive_since; /* ticks since the last call */
	long ticks;
	int purge_more; /* the last purge removed something: call again on the next tick */
	char db_metrics[PIXD_DB_METRICS_MAX];
	size_t db_metrics_len;
	uint64_t db_metrics_at; /* loop time (ms) of the last refresh; 0 = never */
} m;

void maintenance_init(void)
{
	h2o_timeout_init(pixd_loop, &m.tick, PIXD_TICK_MS);
	m.tick_entry.cb = on_tick;
	m.keepalive.query.cb = on_keepalive_result;
	m.keepalive_every = 1;
	m.expire.query.cb = on_expire_result;
	m.purge.query.cb = on_purge_result;
	m.metrics.query.cb = on_metrics_result;
	h2o_timeout_link(pixd_loop, &m.tick, &m.tick_entry);
}

void maintenance_shutdown(void)
{
	h2o_timeout_unlink(&m.tick_entry);
	db_cancel(&m.keepalive.query);
	free(m.keepalive_ids);
	m.keepalive_ids = NULL;
	db_cancel(&m.expire.query);
	db_cancel(&m.purge.query);
	db_cancel(&m.metrics.query);
	m.keepalive.in_flight = m.expire.in_flight = m.purge.in_flight = m.metrics.in_flight = 0;
}

static void on_tick(h2o_timeout_entry_t *entry)
{
	m.ticks++;
	if (!pixd_shutting_down) {
		submit_keepalive();
		submit(&m.expire, DB_EXPIRE);
		if (m.purge_more || m.ticks % PIXD_PURGE_EVERY_S == 1)
			submit(&m.purge, DB_PURGE);
		if (m.ticks % PIXD_DB_METRICS_S == 1)
			submit(&m.metrics, DB_METRICS);
	}
	h2o_timeout_link(pixd_loop, &m.tick, &m.tick_entry);
}

static void submit(struct call *c, enum db_stmt stmt)
{
	if (c->in_flight)
		return;
	c->query.stmt = stmt;
	if (db_submit(&c->query) == DB_SUBMITTED)
		c->in_flight = 1;
}

static void submit_keepalive(void)
{
	int count;

	if (m.keepalive.in_flight || m.keepalive.missing || ++m.keepalive_since < m.keepalive_every)
		return;
	m.keepalive_since = 0;
	if ((m.keepalive_ids = parking_stream_ids(&count)) == NULL)
		return;
	m.keepalive.query.params[0] = m.keepalive_ids;
	submit(&m.keepalive, DB_KEEPALIVE);
	if (!m.keepalive.in_flight) {
		free(m.keepalive_ids);
		m.keepalive_ids = NULL;
	}
}

static struct call *call_of(db_query_t *q)
{
	return H2O_STRUCT_FROM_MEMBER(struct call, query, q);
}

/* Ends the call; 1 when it returned rows, else logs why (once per run of failures). */
static int call_ok(struct call *c, PGresult *res, enum db_failure failure)
{
	c->in_flight = 0;
	if (failure == DB_FAIL_NONE && PQresultStatus(res) == PGRES_TUPLES_OK) {
		c->failing = 0;
		return 1;
	}
	if (failure == DB_FAIL_NONE) {
		const char *state = PQresultErrorField(res, PG_DIAG_SQLSTATE);
		if (state != NULL && strcmp(state, "42883") == 0) { /* undefined_function */
			pixd_log("maintenance: the database has no %s (pix extension older than it): not "
			         "called again",
			         call_name(c));
			c->missing = 1;
			return 0;
		}
	}
	if (!c->failing)
		pixd_log("maintenance: %s failed: %s", call_name(c),
		         failure == DB_FAIL_NONE ? PQresultErrorMessage(res) : "no database answer\n");
	c->failing = 1;
	return 0;
}

static const char *call_name(struct call *c)
{
	return db_statement_name(c->query.stmt);
}

/* The extension's rule (extension/stream.c, liveness_slack_us): a sixteenth, at most 15 s. */
static long liveness_slack_ms(long timeout_ms)
{
	return timeout_ms / 16 < LIVENESS_SLACK_MAX_MS ? timeout_ms / 16 : LIVENESS_SLACK_MAX_MS;
}

static void on_keepalive_result(db_query_t *q, PGresult *res, enum db_failure failure)
{
	free(m.keepalive_ids);
	m.keepalive_ids = NULL;
	long timeout_ms;

	if (!call_ok(call_of(q), res, failure) || PQntuples(res) != 1 || PQnfields(res) != 2)
		return;
	pixd_metrics.keepalive_streams += strtoull(PQgetvalue(res, 0, 0), NULL, 10);
	timeout_ms = atol(PQgetvalue(res, 0, 1)); /* pg_settings: in ms, the GUC's unit */
	m.keepalive_every = (int)(liveness_slack_ms(timeout_ms) * 4 / 5 / PIXD_TICK_MS);
	if (m.keepalive_every < 1)
		m.keepalive_every = 1;
	if (m.keepalive_every > KEEPALIVE_MAX_TICKS)
		m.keepalive_every = KEEPALIVE_MAX_TICKS;
}

static void on_expire_result(db_query_t *q, PGresult *res, enum db_failure failure)
{
	struct call *c = call_of(q);

	if (call_ok(c, res, failure) && PQntuples(res) == 1 && atoi(PQgetvalue(res, 0, 0)) > 0)
		pixd_log("maintenance: %s idle stream(s) expired", PQgetvalue(res, 0, 0));
}

static void on_purge_result(db_query_t *q, PGresult *res, enum db_failure failure)
{
	struct call *c = call_of(q);

	m.purge_more =
	    call_ok(c, res, failure) && PQntuples(res) == 1 && atol(PQgetvalue(res, 0, 0)) > 0;
}

/* Appends printf-formatted text to the database's samples; drops what does not fit. */
static void append(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void append(const char *fmt, ...)
{
	size_t room = sizeof(m.db_metrics) - m.db_metrics_len;
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vsnprintf(m.db_metrics + m.db_metrics_len, room, fmt, ap);
	va_end(ap);
	if (n > 0 && (size_t)n < room)
		m.db_metrics_len += (size_t)n;
}

/* Only names the extension makes, and each once: never echo anything else. */
static int family_starts_at(const PGresult *res, int i)
{
	const char *metric = PQgetvalue(res, i, 0);

	if (metric[0] == '\0' || strspn(metric, "abcdefghijklmnopqrstuvwxyz_") != strlen(metric))
		return 0;
	for (int j = 0; j < i; j++)
		if (strcmp(PQgetvalue(res, j, 0), metric) == 0)
			return 0;
	return 1;
}

/*
 * One metric family as one block: HELP, TYPE, then every row of that metric wherever it stands in
 * the result (pix_metrics lists the per-ISPB rows of all metrics before their totals). A label is
 * an ISPB (8 digits); a row whose ispb is anything else is dropped, never shown without a label.
 */
static void put_family(const PGresult *res, int first)
{
	const char *metric = PQgetvalue(res, first, 0);

	append("# HELP %s From pix_metrics(): per ISPB (the busiest), and over all ISPBs without a "
	       "label.\n# TYPE %s %s\n",
	       metric, metric, strstr(metric, "_total") != NULL ? "counter" : "gauge");
	for (int i = first; i < PQntuples(res); i++) {
		const char *ispb = PQgetvalue(res, i, 1), *value = PQgetvalue(res, i, 2);

		if (strcmp(PQgetvalue(res, i, 0), metric) != 0 ||
		    strspn(value, "0123456789-") != strlen(value) || value[0] == '\0')
			continue;
		if (PQgetisnull(res, i, 1))
			append("%s %s\n", metric, value);
		else if (is_ispb(ispb, strlen(ispb)))
			append("%s{ispb=\"%s\"} %s\n", metric, ispb, value);
	}
}

static void on_metrics_result(db_query_t *q, PGresult *res, enum db_failure failure)
{
	struct call *c = call_of(q);

	if (!call_ok(c, res, failure) || PQnfields(res) != 3)
		return;
	m.db_metrics_len = 0;
	m.db_metrics[0] = '\0';
	for (int i = 0; i < PQntuples(res); i++)
		if (family_starts_at(res, i))
			put_family(res, i);
	m.db_metrics_at = h2o_now(pixd_loop);
}

const char *maintenance_db_metrics(size_t *len, double *age_seconds)
{
	*len = m.db_metrics_len;
	*age_seconds =
	    m.db_metrics_at == 0 ? -1 : (double)(h2o_now(pixd_loop) - m.db_metrics_at) / 1000.0;
	return m.db_metrics;
}
