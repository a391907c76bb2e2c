/*
 * handlers/stream.c — the stream routes: start, continuation (reads) and DELETE (stop).
 *
 * A read is one function call, then, if it found nothing, a long poll: the read parks (parking.c)
 * and each wake-up calls pix_stream_next again with the interation_id the empty read returned (an
 * empty read keeps the same id, so nothing is confirmed twice and no id is skipped). The first
 * read that returns messages answers 200 with the body as the database rendered it; at the
 * deadline the read reads one last time and answers 200 or 204 (with the last Pull-Next).
 *
 * Lifetime of a read's state (read_ctx, in req->pool): from the handler until h2o frees the
 * request. It is reachable from the outside only through its query (the pool) and its parking slot
 * (ISPB index, deadline timer); detach_read() removes both, so a client leaving at any moment
 * leaves no dangling pointer. Strings the query needs live in the state itself, in fixed buffers:
 * a long wait with many wake-ups allocates nothing.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "accept.h"
#include "database.h"
#include "handlers.h"
#include "parking.h"
#include "respond.h"

struct read_ctx {
	struct async_req base;
	db_query_t query;
	struct parking_slot slot;
	char ispb[PIXD_ISPB_LEN + 1];
	char iid[PIXD_IID_MAX + 1];
	char pull_next[PIXD_PULL_NEXT_MAX + 1];
	char max_messages[4];
};

struct stop_ctx {
	struct async_req base;
	db_query_t query;
	char ispb[PIXD_ISPB_LEN + 1];
	char iid[PIXD_IID_MAX + 1];
};

static int iid_is_plausible(h2o_iovec_t iid);
static struct read_ctx *read_ctx_new(h2o_req_t *req, h2o_iovec_t ispb, enum accept_choice batch);
static void read_begin(struct read_ctx *ctx);
static void detach_read(struct async_req *a);
static void on_read_result(db_query_t *q, PGresult *res, enum db_failure failure);
static int read_row_ok(struct read_ctx *ctx, const PGresult *res);
static void read_found_nothing(struct read_ctx *ctx, const PGresult *res);
static int on_wake(struct parking_slot *slot);
static void on_deadline(struct parking_slot *slot);
static h2o_req_t *read_finish(struct read_ctx *ctx);
static void answer_messages(struct read_ctx *ctx, const PGresult *res);
static void answer_empty(struct read_ctx *ctx);
static int negotiate(h2o_req_t *req, enum accept_choice *batch);
static void detach_stop(struct async_req *a);
static void on_stop_result(db_query_t *q, PGresult *res, enum db_failure failure);

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

static int negotiate(h2o_req_t *req, enum accept_choice *batch)
{
	*batch = accept_negotiate(req);
	if (*batch != ACCEPT_NOTHING)
		return 0;
	respond_problem(
	    req, 406,
	    "acceptable media types: application/json (one message), multipart/json (a batch)");
	return -1;
}

void handle_stream_start(h2o_req_t *req, h2o_iovec_t ispb)
{
	enum accept_choice batch;
	struct read_ctx *ctx;

	if (!is_ispb(ispb.base, ispb.len)) {
		respond_bad_ispb(req);
		return;
	}
	if (negotiate(req, &batch) != 0)
		return;
	ctx = read_ctx_new(req, ispb, batch);
	ctx->query.stmt = DB_STREAM_START;
	ctx->query.params[0] = ctx->ispb;
	ctx->query.params[1] = ctx->max_messages;
	read_begin(ctx);
}

void handle_stream_next(h2o_req_t *req, h2o_iovec_t ispb, h2o_iovec_t iid)
{
	enum accept_choice batch;
	struct read_ctx *ctx;

	if (!is_ispb(ispb.base, ispb.len)) {
		respond_bad_ispb(req);
		return;
	}
	if (!iid_is_plausible(iid)) {
		respond_stream_not_found(req);
		return;
	}
	if (negotiate(req, &batch) != 0)
		return;
	ctx = read_ctx_new(req, ispb, batch);
	memcpy(ctx->iid, iid.base, iid.len);
	ctx->query.stmt = DB_STREAM_NEXT;
	ctx->query.params[0] = ctx->ispb;
	ctx->query.params[1] = ctx->iid;
	ctx->query.params[2] = ctx->max_messages;
	read_begin(ctx);
}

static struct read_ctx *read_ctx_new(h2o_req_t *req, h2o_iovec_t ispb, enum accept_choice batch)
{
	struct read_ctx *ctx = async_req_new(req, sizeof(*ctx), detach_read);

	memcpy(ctx->ispb, ispb.base, PIXD_ISPB_LEN);
	snprintf(ctx->max_messages, sizeof(ctx->max_messages), "%d", (int)batch);
	ctx->query.cb = on_read_result;
	ctx->slot.on_wake = on_wake;
	ctx->slot.on_deadline = on_deadline;
	return ctx;
}

/* Joins the parking lot before the first query: a NOTIFY during that query must not be lost. */
static void read_begin(struct read_ctx *ctx)
{
	enum db_submit_status st;

	if (parking_join(&ctx->slot, ctx->ispb) != 0) {
		respond_retry_later(read_finish(ctx), 503, 1, "too many reads in progress");
		return;
	}
	st = db_submit(&ctx->query);
	if (st != DB_SUBMITTED)
		respond_db_rejected(read_finish(ctx), st);
}

static void detach_read(struct async_req *a)
{
	struct read_ctx *ctx = (struct read_ctx *)a;

	db_cancel(&ctx->query);
	parking_leave(&ctx->slot);
}

static h2o_req_t *read_finish(struct read_ctx *ctx)
{
	parking_leave(&ctx->slot);
	return async_req_answer(&ctx->base);
}

static void on_read_result(db_query_t *q, PGresult *res, enum db_failure failure)
{
	struct read_ctx *ctx = H2O_STRUCT_FROM_MEMBER(struct read_ctx, query, q);

	if (failure != DB_FAIL_NONE) {
		respond_db_failure(read_finish(ctx), failure);
		return;
	}
	if (PQresultStatus(res) != PGRES_TUPLES_OK) {
		respond_db_error(read_finish(ctx), res);
		return;
	}
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
	memcpy(ctx->iid, PQgetvalue(res, 0, 0), PQgetlength(res, 0, 0) + 1);
	memcpy(ctx->pull_next, PQgetvalue(res, 0, 1), PQgetlength(res, 0, 1) + 1);
	ctx->query.stmt = DB_STREAM_NEXT;
	ctx->query.params[0] = ctx->ispb;
	ctx->query.params[1] = ctx->iid;
	ctx->query.params[2] = ctx->max_messages;
	for (;;) {
		switch (parking_park(&ctx->slot)) {
		case PARK_WAITING:
			return;
		case PARK_ANSWER_NOW:
			answer_empty(ctx);
			return;
		case PARK_READ_AGAIN:
			/* If the pool refuses, the notification is spent: loop to park until the deadline. */
			if (db_submit(&ctx->query) == DB_SUBMITTED)
				return;
			break;
		}
	}
}

static int on_wake(struct parking_slot *slot)
{
	struct read_ctx *ctx = H2O_STRUCT_FROM_MEMBER(struct read_ctx, slot, slot);

	return db_submit(&ctx->query) == DB_SUBMITTED ? 0 : -1;
}

/*
 * The wait is over: one last read before answering. A notification can be missed (the listener was
 * reconnecting), and a stream of this ISPB can expire without one reaching us in time; this read
 * sweeps and claims like any other. Its result is the answer: 200 with what it found, else 204
 * (parking_park answers at once now that the deadline passed). When stopping, answer at once.
 */
static void on_deadline(struct parking_slot *slot)
{
	struct read_ctx *ctx = H2O_STRUCT_FROM_MEMBER(struct read_ctx, slot, slot);

	if (!pixd_shutting_down && db_submit(&ctx->query) == DB_SUBMITTED)
		return;
	answer_empty(ctx);
}

static void answer_empty(struct read_ctx *ctx)
{
	h2o_req_t *req = read_finish(ctx);

	pixd_metrics.reads_204++;
	add_header(req, "Pull-Next", ctx->pull_next, strlen(ctx->pull_next));
	respond(req, 204, NULL, NULL, 0);
}

/* ---- DELETE: confirm the last batch and close the stream ------------------------------------- */

void handle_stream_stop(h2o_req_t *req, h2o_iovec_t ispb, h2o_iovec_t iid)
{
	struct stop_ctx *ctx;
	enum db_submit_status st;

	if (!is_ispb(ispb.base, ispb.len)) {
		respond_bad_ispb(req);
		return;
	}
	if (!iid_is_plausible(iid)) {
		respond_stream_not_found(req);
		return;
	}
	ctx = async_req_new(req, sizeof(*ctx), detach_stop);
	memcpy(ctx->ispb, ispb.base, PIXD_ISPB_LEN);
	memcpy(ctx->iid, iid.base, iid.len);
	ctx->query.stmt = DB_STREAM_STOP;
	ctx->query.params[0] = ctx->ispb;
	ctx->query.params[1] = ctx->iid;
	ctx->query.cb = on_stop_result;
	st = db_submit(&ctx->query);
	if (st != DB_SUBMITTED)
		respond_db_rejected(async_req_answer(&ctx->base), st);
}

static void detach_stop(struct async_req *a)
{
	db_cancel(&((struct stop_ctx *)a)->query);
}

static void on_stop_result(db_query_t *q, PGresult *res, enum db_failure failure)
{
	struct stop_ctx *ctx = H2O_STRUCT_FROM_MEMBER(struct stop_ctx, query, q);
	h2o_req_t *req = async_req_answer(&ctx->base);

	if (failure != DB_FAIL_NONE)
		respond_db_failure(req, failure);
	else if (PQresultStatus(res) != PGRES_TUPLES_OK)
		respond_db_error(req, res);
	else
		respond_json(req, 200, "{}");
}
