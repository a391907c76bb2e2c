/*
 * handlers/stream.c — the stream routes: start, continuation (reads), DELETE (stop) and stop-all
 * (DELETE /api/pix/{ispb}/streams, GET /api/pix/{ispb}/stream/stop: pix_streams_stop_all, 200
 * {"closed":n}). Every call carries the request's credential (NULL with --auth none).
 *
 * A read is one function call, then, if it found nothing, a long poll: the read parks (parking.c)
 * and each wake-up calls pix_stream_next again with the interation_id the empty read returned (an
 * empty read keeps the same id, so nothing is confirmed twice and no id is skipped). The first
 * read that returns messages answers 200 with the body as the database rendered it; at the
 * deadline the read reads one last time and answers 200 or 204 (with the last Pull-Next).
 *
 * Lifetime of a read's state (read_ctx, in req->pool): from the handler until h2o frees the
 * request. It is reachable from the outside only through its query (the pool) and its parking slot
 * (ISPB index, deadline timer, pending wakes); the base's detach (respond.h: db_cancel, then
 * read_leave) removes both, so a client leaving at any moment leaves no dangling pointer. Strings
 * the query needs live in the state itself, in fixed buffers (the id in the slot, where keepalive
 * finds it): a long wait with many wake-ups allocates nothing. Pull-Next is not kept: it is rebuilt
 * from the ISPB and the id.
 *
 * A client that left is not served: before every query on a parked read's behalf (wake, deadline)
 * and once a second while it is parked, a peek at its socket tells; a departed client's read leaves
 * at once without a query, so it cannot claim a message a live collector of its ISPB waits for.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "handlers.h"
#include "listener.h"
#include "parking.h"
#include "respond.h"

struct read_ctx {
	struct db_request base;
	struct parking_slot slot; /* its ispb and iid are the query's parameters */
	unsigned listen_epoch;    /* listener_epoch() when the last query was submitted */
	char max_messages[4];
	/* The database answered "nothing" on slot.iid: that id is the stream's current one with nothing
	 * pending, so a 204 naming it again is true. Before that answer the id may be a previous one
	 * whose batch waits to be replayed, and only the database can say. */
	char id_seen_empty;
	const char *credential; /* in req->pool, or NULL */
};

/* DELETE of one stream, or of all of an ISPB's streams (iid unused). */
struct stop_ctx {
	struct db_request base;
	char ispb[PIXD_ISPB_LEN + 1];
	char iid[PIXD_IID_MAX + 1];
};

static int prepare_start(struct db_request *r, const struct route_values *v);
static int prepare_next(struct db_request *r, const struct route_values *v);
static int read_join(struct read_ctx *ctx, const struct route_values *v);
static void read_leave(struct db_request *r);
static int on_read_failure(struct db_request *r, enum db_failure failure);
static void on_read_rows(struct db_request *r, const PGresult *res);
static int read_row_ok(struct read_ctx *ctx, const PGresult *res);
static void read_found_nothing(struct read_ctx *ctx, const PGresult *res);
static int on_wake(struct parking_slot *slot);
static void on_deadline(struct parking_slot *slot);
static void on_check(struct parking_slot *slot);
static int leave_if_departed(struct read_ctx *ctx);
static void read_next_params(struct read_ctx *ctx);
static enum db_submit_status read_submit(struct read_ctx *ctx);
static enum db_submit_status read_woken(struct read_ctx *ctx);
static h2o_req_t *read_finish(struct read_ctx *ctx);
static void answer_messages(struct read_ctx *ctx, const PGresult *res);
static void answer_empty(struct read_ctx *ctx);
static int prepare_stop(struct db_request *r, const struct route_values *v);
static void on_stop_rows(struct db_request *r, const PGresult *res);
static int prepare_stop_all(struct db_request *r, const struct route_values *v);
static void on_stop_all_rows(struct db_request *r, const PGresult *res);

static const struct parking_ops read_ops = {on_wake, on_deadline, on_check};
static const struct db_request_class start_class = {.prepare = prepare_start,
                                                    .on_rows = on_read_rows,
                                                    .on_failure = on_read_failure,
                                                    .leave = read_leave};
static const struct db_request_class next_class = {.prepare = prepare_next,
                                                   .on_rows = on_read_rows,
                                                   .on_failure = on_read_failure,
                                                   .leave = read_leave};
static const struct db_request_class stop_class = {.prepare = prepare_stop,
                                                   .on_rows = on_stop_rows};
static const struct db_request_class stop_all_class = {.prepare = prepare_stop_all,
                                                       .on_rows = on_stop_all_rows};

void handle_stream_start(h2o_req_t *req, const struct route_values *v)
{
	db_request_start(req, sizeof(struct read_ctx), &start_class, v);
}

void handle_stream_next(h2o_req_t *req, const struct route_values *v)
{
	db_request_start(req, sizeof(struct read_ctx), &next_class, v);
}

static int prepare_start(struct db_request *r, const struct route_values *v)
{
	struct read_ctx *ctx = (struct read_ctx *)r;

	if (read_join(ctx, v) != 0)
		return -1;
	r->query.stmt = DB_STREAM_START;
	r->query.params[0] = ctx->slot.ispb;
	r->query.params[1] = ctx->max_messages;
	r->query.params[2] = ctx->credential;
	return 0;
}

static int prepare_next(struct db_request *r, const struct route_values *v)
{
	struct read_ctx *ctx = (struct read_ctx *)r;

	if (read_join(ctx, v) != 0)
		return -1;
	memcpy(ctx->slot.iid, v->id.base, v->id.len);
	read_next_params(ctx);
	return 0;
}

/*
 * The read's own fields from the route's values, and into the parking lot before the first query
 * (a NOTIFY during that query must not be lost), so the slot's ISPB is set here; -1 after
 * answering when it cannot: 503 when --max-parked reads are
 * in progress (the server's limit), 429 when --max-reads-per-ispb of this ISPB are (the
 * institution's own share: a rate problem of that institution, answered like the contract's
 * seventh stream). A read counts from its arrival, before the database has judged its credential:
 * a caller that is not the institution holds one of its slots for one query at most (401/403
 * then). The base submits the first query right after: its LISTEN session is noted here.
 */
static int read_join(struct read_ctx *ctx, const struct route_values *v)
{
	char ispb_z[PIXD_ISPB_LEN + 1];

	ctx->credential = v->credential;
	memcpy(ispb_z, v->ispb.base, PIXD_ISPB_LEN);
	ispb_z[PIXD_ISPB_LEN] = '\0';
	snprintf(ctx->max_messages, sizeof(ctx->max_messages), "%d", v->max_messages);
	switch (parking_join(&ctx->slot, ispb_z, &read_ops)) {
	case PARKING_JOINED:
		ctx->listen_epoch = listener_epoch();
		return 0;
	case PARKING_FULL:
		respond_retry_later(read_finish(ctx), 503, 1, "too many reads in progress");
		return -1;
	case PARKING_ISPB_FULL:
		pixd_metrics.reads_ispb_refused++;
		respond_retry_later(read_finish(ctx), 429, 1, "too many reads in progress for this ISPB");
		return -1;
	}
	return -1;
}

/* Every read after the first is pix_stream_next on the slot's id, whatever the first was. */
static void read_next_params(struct read_ctx *ctx)
{
	ctx->base.query.stmt = DB_STREAM_NEXT;
	ctx->base.query.params[0] = ctx->slot.ispb;
	ctx->base.query.params[1] = ctx->slot.iid;
	ctx->base.query.params[2] = ctx->max_messages;
	ctx->base.query.params[3] = ctx->credential;
}

/* Every query of a read notes which LISTEN session was there to hear what committed after the
 * query's snapshot. The first is submitted by the base (refused: 503; read_join notes its session);
 * a later one here (a refusal has an answer of the read's own: parked until the deadline, or 204 at
 * the deadline). */
static enum db_submit_status read_submit(struct read_ctx *ctx)
{
	ctx->listen_epoch = listener_epoch();
	return db_submit(&ctx->base.query);
}

/* A query because of a notification: the next one waits out the slot's wake interval (parking.c),
 * so a flood of notifications costs each read at most one query per interval. A read's first
 * query does not start the interval: a fresh read woken by the next message reads at once. */
static enum db_submit_status read_woken(struct read_ctx *ctx)
{
	parking_reading(&ctx->slot);
	return read_submit(ctx);
}

/* Before every answer, and when h2o frees the request: out of the parking lot. */
static void read_leave(struct db_request *r)
{
	parking_leave(&((struct read_ctx *)r)->slot);
}

static h2o_req_t *read_finish(struct read_ctx *ctx)
{
	return db_request_answer(&ctx->base);
}

/* The wait is over and the pool had no connection for this read's last query: nothing was read, so
 * nothing was confirmed; 204 on time with the same id beats a 503 after the queue timer. */
static int on_read_failure(struct db_request *r, enum db_failure failure)
{
	struct read_ctx *ctx = (struct read_ctx *)r;

	if (failure != DB_FAIL_NOT_SENT || !ctx->slot.expired || !ctx->id_seen_empty)
		return 0;
	answer_empty(ctx);
	return 1;
}

static void on_read_rows(struct db_request *r, const PGresult *res)
{
	struct read_ctx *ctx = (struct read_ctx *)r;

	if (!read_row_ok(ctx, res))
		return;
	if (atoi(PQgetvalue(res, 0, 2)) > 0 && !PQgetisnull(res, 0, 3))
		answer_messages(ctx, res);
	else
		read_found_nothing(ctx, res);
}

/* The row shape the contract promises; anything else is a server error, not a client's. */
static int read_row_ok(struct read_ctx *ctx, const PGresult *res)
{
	if (PQntuples(res) == 1 && PQnfields(res) == 4 && !PQgetisnull(res, 0, 0) &&
	    !PQgetisnull(res, 0, 1) && PQgetlength(res, 0, 0) <= PIXD_IID_MAX &&
	    PQgetlength(res, 0, 1) <= PIXD_PULL_NEXT_MAX)
		return 1;
	pixd_log("unexpected read result: %d rows, %d columns", PQntuples(res), PQnfields(res));
	respond_problem(read_finish(ctx), 500, "internal error");
	return 0;
}

static void answer_messages(struct read_ctx *ctx, const PGresult *res)
{
	h2o_req_t *req = read_finish(ctx);

	pixd_metrics.reads_200++;
	add_header(req, "Pull-Next", PQgetvalue(res, 0, 1), PQgetlength(res, 0, 1));
	respond(req, 200, "application/json", PQgetvalue(res, 0, 3), PQgetlength(res, 0, 3));
}

/*
 * Nothing yet: remember where the stream stands (the same id, normally) and wait. The next query is
 * pix_stream_next on that id whether this read was a start or a continuation.
 */
static void read_found_nothing(struct read_ctx *ctx, const PGresult *res)
{
	memcpy(ctx->slot.iid, PQgetvalue(res, 0, 0), PQgetlength(res, 0, 0) + 1);
	ctx->slot.authorized = 1; /* the database returned it to this credential: keep it alive */
	ctx->id_seen_empty = 1;
	read_next_params(ctx);
	for (;;) {
		switch (parking_park(&ctx->slot)) {
		case PARK_WAITING:
			return;
		case PARK_ANSWER_NOW:
			answer_empty(ctx);
			return;
		case PARK_READ_AGAIN:
			/* If the pool refuses, the notification is spent: loop to park until the deadline. */
			if (leave_if_departed(ctx) || read_woken(ctx) == DB_SUBMITTED)
				return;
			break;
		}
	}
}

/* The client closed its connection: answer nobody, leave now, query nothing. 1 if it did. */
static int leave_if_departed(struct read_ctx *ctx)
{
	h2o_req_t *req;

	if (!async_req_client_departed(&ctx->base.base))
		return 0;
	parking_leave(&ctx->slot);
	req = async_req_abandon(&ctx->base.base);
	respond(req, 204, NULL, NULL, 0);
	return 1;
}

static int on_wake(struct parking_slot *slot)
{
	struct read_ctx *ctx = H2O_STRUCT_FROM_MEMBER(struct read_ctx, slot, slot);

	if (leave_if_departed(ctx))
		return 0;
	return read_woken(ctx) == DB_SUBMITTED ? 0 : -1;
}

static void on_check(struct parking_slot *slot)
{
	leave_if_departed(H2O_STRUCT_FROM_MEMBER(struct read_ctx, slot, slot));
}

/*
 * The wait is over: one last read before answering, unless the same LISTEN session was there from
 * before the read's last query until now: then every message committed since that query was
 * notified and woke this read, and the last read would find nothing (a notification still on its
 * way only delays that message until the collector's next poll, which follows the 204 at once).
 * This halves what an idle parked collector costs the database. Otherwise a notification can have
 * been missed (the listener was reconnecting); the last read sweeps and claims like any other. Its
 * result is the answer: 200 with what it found, else 204 (parking_park answers at once now that the
 * deadline passed). When stopping, answer at once. The last read may wait for a connection only
 * DB_HURRY_MS: past that, 204 on time. A read that was querying when the deadline came is already
 * its last one: hurry it the same way, unless the database has not answered it yet (a start with
 * no stream, or a retry of a previous id whose batch is to be replayed: a 204 could only guess):
 * that one waits its turn.
 */
static void on_deadline(struct parking_slot *slot)
{
	struct read_ctx *ctx = H2O_STRUCT_FROM_MEMBER(struct read_ctx, slot, slot);

	if (db_is_pending(&ctx->base.query)) {
		if (ctx->id_seen_empty)
			db_hurry(&ctx->base.query);
		return;
	}
	if (leave_if_departed(ctx))
		return;
	if (ctx->listen_epoch != 0 && ctx->listen_epoch == listener_epoch()) {
		answer_empty(ctx);
		return;
	}
	if (!pixd_shutting_down && read_submit(ctx) == DB_SUBMITTED) {
		db_hurry(&ctx->base.query);
		return;
	}
	answer_empty(ctx);
}

/* 204 with Pull-Next: the same id again ("/api/pix/{ispb}/stream/{id}", as the database makes it).
 */
static void answer_empty(struct read_ctx *ctx)
{
	h2o_req_t *req = read_finish(ctx);
	char pull_next[PIXD_PULL_NEXT_MAX + 1];
	int len = snprintf(pull_next, sizeof(pull_next), "/api/pix/%s/stream/%s", ctx->slot.ispb,
	                   ctx->slot.iid);

	pixd_metrics.reads_204++;
	add_header(req, "Pull-Next", pull_next, (size_t)len);
	respond(req, 204, NULL, NULL, 0);
}

/* ---- DELETE: confirm the last batch and close the stream ------------------------------------- */

void handle_stream_stop(h2o_req_t *req, const struct route_values *v)
{
	db_request_start(req, sizeof(struct stop_ctx), &stop_class, v);
}

static int prepare_stop(struct db_request *r, const struct route_values *v)
{
	struct stop_ctx *ctx = (struct stop_ctx *)r;

	memcpy(ctx->ispb, v->ispb.base, PIXD_ISPB_LEN);
	memcpy(ctx->iid, v->id.base, v->id.len);
	r->query.stmt = DB_STREAM_STOP;
	r->query.params[0] = ctx->ispb;
	r->query.params[1] = ctx->iid;
	r->query.params[2] = v->credential;
	return 0;
}

static void on_stop_rows(struct db_request *r, const PGresult *res)
{
	respond_json(db_request_answer(r), 200, "{}");
}

/* ---- stop all: DELETE /api/pix/{ispb}/streams, GET /api/pix/{ispb}/stream/stop --------------- */

void handle_streams_stop_all(h2o_req_t *req, const struct route_values *v)
{
	db_request_start(req, sizeof(struct stop_ctx), &stop_all_class, v);
}

static int prepare_stop_all(struct db_request *r, const struct route_values *v)
{
	struct stop_ctx *ctx = (struct stop_ctx *)r;

	memcpy(ctx->ispb, v->ispb.base, PIXD_ISPB_LEN);
	r->query.stmt = DB_STOP_ALL;
	r->query.params[0] = ctx->ispb;
	r->query.params[1] = v->credential;
	return 0;
}

static void on_stop_all_rows(struct db_request *r, const PGresult *res)
{
	h2o_req_t *req = db_request_answer(r);
	char body[48];

	if (PQntuples(res) != 1 || PQgetisnull(res, 0, 0)) {
		pixd_log("pix_streams_stop_all returned no count");
		respond_problem(req, 500, "internal error");
	} else {
		snprintf(body, sizeof(body), "{\"closed\":%ld}", strtol(PQgetvalue(res, 0, 0), NULL, 10));
		respond_json(req, 200, body);
	}
}
