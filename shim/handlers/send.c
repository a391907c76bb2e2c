/*
 * handlers/send.c — POST /api/pix/{ispb}/msgs: an institution sends payments.
 *
 * The body goes to pix_messages_send($1, $2, $3) as the bytes it is: pixd parses no JSON. The
 * extension validates every message, stores all or nothing in one transaction, is idempotent by
 * endToEndId, and answers one row (accepted, duplicates, body); body is the 201 JSON. Its
 * errors: PX010 → 422 and PX011 → 409 naming the message and field (respond.c), PX012/PX013 →
 * 401/403. The only checks here are the ones libpq forces: a text parameter ends at its first NUL,
 * so a body holding one is refused (400) rather than cut; an empty body is 422 without a query.
 * h2o refuses a body over PIXD_SEND_BODY_MAX (1 MiB) with 413 before the handler runs.
 */
#include <string.h>
#include "database.h"
#include "handlers.h"
#include "respond.h"

struct send_ctx {
	struct async_req base;
	db_query_t query;
	char ispb[PIXD_ISPB_LEN + 1];
};

static void detach_send(struct async_req *a);
static void on_send_result(db_query_t *q, PGresult *res, enum db_failure failure);

void handle_messages_send(h2o_req_t *req, h2o_iovec_t ispb, const char *credential)
{
	struct send_ctx *ctx;
	enum db_submit_status st;

	if (!is_ispb(ispb.base, ispb.len)) {
		respond_bad_ispb(req);
		return;
	}
	if (req->entity.base == NULL || req->entity.len == 0) {
		respond_problem(req, 422, "the body must be a message object or an array of messages");
		return;
	}
	if (memchr(req->entity.base, '\0', req->entity.len) != NULL) {
		respond_problem(req, 400, "the request body must not contain NUL bytes");
		return;
	}
	ctx = async_req_new(req, sizeof(*ctx), detach_send);
	memcpy(ctx->ispb, ispb.base, PIXD_ISPB_LEN);
	ctx->query.stmt = DB_SEND;
	ctx->query.params[0] = ctx->ispb;
	/* NUL-terminated copy in req->pool: it lives until the request is freed */
	ctx->query.params[1] = h2o_strdup(&req->pool, req->entity.base, req->entity.len).base;
	ctx->query.params[2] = credential;
	ctx->query.cb = on_send_result;
	st = db_submit(&ctx->query);
	if (st != DB_SUBMITTED)
		respond_db_rejected(async_req_answer(&ctx->base), st);
}

static void detach_send(struct async_req *a)
{
	db_cancel(&((struct send_ctx *)a)->query);
}

static void on_send_result(db_query_t *q, PGresult *res, enum db_failure failure)
{
	struct send_ctx *ctx = H2O_STRUCT_FROM_MEMBER(struct send_ctx, query, q);
	h2o_req_t *req = async_req_answer(&ctx->base);

	if (failure != DB_FAIL_NONE)
		respond_db_failure(req, failure);
	else if (PQresultStatus(res) != PGRES_TUPLES_OK)
		respond_db_error(req, res);
	else if (PQntuples(res) != 1 || PQnfields(res) != 3 || PQgetisnull(res, 0, 2)) {
		pixd_log("pix_messages_send returned no row");
		respond_problem(req, 500, "internal error");
	} else
		respond(req, 201, "application/json", PQgetvalue(res, 0, 2), PQgetlength(res, 0, 2));
}
