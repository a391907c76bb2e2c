/*
 * handlers/health.c — GET /health: 200 {"status":"ok"} when the pool can serve, else 503
 * (problem+json, Retry-After).
 *
 * /health is open to anyone, so it must not be a way to fill the database's queue (issue 18: 1 500
 * connections on /health made every institution's call 503). It answers from the pool's state and
 * from the last probe, a SELECT 1 sent at most once every HEALTH_PROBE_MS whatever the request rate:
 *   - the pool down: 503 at once, no query;
 *   - a probe answered less than HEALTH_PROBE_MS ago: its verdict at once, no query;
 *   - otherwise the request waits for the probe in flight (sending one if none is), with every
 *     request that came meanwhile; the probe's answer answers them all.
 * The probe still goes through the pool like any call, so "ok" means "the server can serve", not
 * merely "PostgreSQL is up". Waiting requests are bounded by the connections (HTTP/1.1: one request
 * per connection) and each costs its async_req, no query.
 */
#include "database.h"
#include "handlers.h"
#include "respond.h"

#define HEALTH_PROBE_MS 1000

enum verdict { V_OK, V_DOWN, V_BUSY };

struct health_wait {
	struct async_req base;
	h2o_linklist_t link; /* in probe.waiting until answered */
};

static struct {
	db_query_t query;
	int in_flight;
	uint64_t answered_ms; /* loop time of the last verdict; 0: none yet */
	enum verdict verdict;
	h2o_linklist_t waiting;
} probe = {.waiting = {&probe.waiting, &probe.waiting}};

static void detach_wait(struct async_req *a);
static void on_probe_result(db_query_t *q, PGresult *res, enum db_failure failure);
static void answer(h2o_req_t *req, enum verdict v);
static void answer_waiting(enum verdict v);

void handle_health(h2o_req_t *req)
{
	struct health_wait *w;
	uint64_t now = h2o_now(pixd_loop);

	pixd_metrics.health_answers_cached++; /* taken back below if this one sends the probe */
	if (db_is_down()) {
		answer(req, V_DOWN);
		return;
	}
	if (probe.answered_ms != 0 && now - probe.answered_ms < HEALTH_PROBE_MS) {
		answer(req, probe.verdict);
		return;
	}
	w = async_req_new(req, sizeof(*w), detach_wait);
	h2o_linklist_insert(&probe.waiting, &w->link);
	if (probe.in_flight)
		return;
	probe.query.stmt = DB_HEALTH;
	probe.query.cb = on_probe_result;
	pixd_metrics.health_answers_cached--;
	switch (db_submit(&probe.query)) {
	case DB_SUBMITTED:
		probe.in_flight = 1;
		break;
	case DB_OVERLOADED:
		answer_waiting(V_BUSY);
		break;
	case DB_UNAVAILABLE:
		answer_waiting(V_DOWN);
		break;
	}
}

static void detach_wait(struct async_req *a)
{
	struct health_wait *w = (struct health_wait *)a;

	if (h2o_linklist_is_linked(&w->link))
		h2o_linklist_unlink(&w->link);
}

static void on_probe_result(db_query_t *q, PGresult *res, enum db_failure failure)
{
	probe.in_flight = 0;
	if (failure == DB_FAIL_TIMEOUT || failure == DB_FAIL_NOT_SENT)
		answer_waiting(V_BUSY);
	else if (failure != DB_FAIL_NONE || PQresultStatus(res) != PGRES_TUPLES_OK)
		answer_waiting(V_DOWN);
	else
		answer_waiting(V_OK);
}

/* Records the verdict and answers every request waiting for it. */
static void answer_waiting(enum verdict v)
{
	probe.verdict = v;
	probe.answered_ms = h2o_now(pixd_loop);
	while (!h2o_linklist_is_empty(&probe.waiting)) {
		struct health_wait *w =
		    H2O_STRUCT_FROM_MEMBER(struct health_wait, link, probe.waiting.next);
		h2o_linklist_unlink(&w->link);
		answer(async_req_answer(&w->base), v);
	}
}

static void answer(h2o_req_t *req, enum verdict v)
{
	if (v == V_OK)
		respond_json(req, 200, "{\"status\":\"ok\"}");
	else if (v == V_BUSY)
		respond_db_rejected(req, DB_OVERLOADED);
	else
		respond_db_rejected(req, DB_UNAVAILABLE);
}
