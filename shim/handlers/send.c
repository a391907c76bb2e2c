/*
 * handlers/send.c — POST /api/pix/{ispb}/msgs: an institution sends payments.
 *
 * The body goes to pix_messages_send($1, $2, $3) as the bytes it is: pixd parses no JSON. The
 * extension validates every message, stores all or nothing in one transaction, is idempotent by
 * endToEndId, and answers one row (accepted, duplicates, body); body is the 201 JSON. Its
 * errors: PX010 → 422 and PX011 → 409 naming the message and field (respond.c), PX012/PX013 →
 * 401/403. The checks here: Content-Type must be application/json (parameters such as charset
 * allowed), else 415: a browser holding an institution's certificate cannot be made to send
 * payments by a cross-site form (forms cannot send that type without a CORS preflight, which pixd
 * never grants); and the ones libpq forces: a text parameter ends at its first NUL, so a body
 * holding one is refused (400) rather than cut; an empty body is 422 without a query.
 * h2o refuses a body over PIXD_SEND_BODY_MAX (1 MiB) with 413 before the handler runs.
 *
 * The send quota (quota.h; --send-quota, on by default with authentication): while the ISPB's
 * bucket holds no token the call is 429 + Retry-After without a query; a 201 spends one token per
 * message the database stored or found stored (accepted + duplicates). Only a call that succeeded
 * spends, so a caller refused 401/403 on another institution's ISPB cannot use up its quota.
 */
#include <stdlib.h>
#include <string.h>
#include "handlers.h"
#include "quota.h"
#include "respond.h"

struct send_ctx {
	struct db_request base;
	char ispb[PIXD_ISPB_LEN + 1];
};

static int is_json_content(h2o_req_t *req);
static int over_quota(h2o_req_t *req, h2o_iovec_t ispb);
static int prepare_send(struct db_request *r, const struct route_values *v);
static void on_send_rows(struct db_request *r, const PGresult *res);

static const struct db_request_class send_class = {.prepare = prepare_send,
                                                   .on_rows = on_send_rows};

/* 1 when the one Content-Type is application/json, in any case, with or without parameters. */
static int is_json_content(h2o_req_t *req)
{
	ssize_t i = h2o_find_header(&req->headers, H2O_TOKEN_CONTENT_TYPE, -1);
	h2o_iovec_t v;
	size_t len = 0;

	if (i == -1 || h2o_find_header(&req->headers, H2O_TOKEN_CONTENT_TYPE, i) != -1)
		return 0;
	v = req->headers.entries[i].value;
	while (len < v.len && v.base[len] != ';' && v.base[len] != ' ' && v.base[len] != '\t')
		len++;
	return h2o_lcstris(v.base, len, H2O_STRLIT("application/json"));
}

/* 1 (answered 429) while the ISPB's bucket holds no token. */
static int over_quota(h2o_req_t *req, h2o_iovec_t ispb)
{
	char key[PIXD_ISPB_LEN + 1];
	long wait;

	if (pixd_config.send_quota <= 0)
		return 0;
	memcpy(key, ispb.base, PIXD_ISPB_LEN);
	key[PIXD_ISPB_LEN] = '\0';
	if ((wait = quota_wait_s(key, h2o_now(pixd_loop))) == 0)
		return 0;
	pixd_metrics.send_quota_refused++;
	respond_retry_later(req, 429, (int)wait, "send quota of this ISPB used up: retry later");
	return 1;
}

void handle_messages_send(h2o_req_t *req, const struct route_values *v)
{
	if (!is_json_content(req)) {
		respond_problem(req, 415, "the body must be sent as Content-Type: application/json");
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
	if (over_quota(req, v->ispb))
		return;
	db_request_start(req, sizeof(struct send_ctx), &send_class, v);
}

static int prepare_send(struct db_request *r, const struct route_values *v)
{
	struct send_ctx *ctx = (struct send_ctx *)r;
	h2o_req_t *req = r->base.req;

	memcpy(ctx->ispb, v->ispb.base, PIXD_ISPB_LEN);
	r->query.stmt = DB_SEND;
	r->query.params[0] = ctx->ispb;
	/* NUL-terminated copy in req->pool: it lives until the request is freed */
	r->query.params[1] = h2o_strdup(&req->pool, req->entity.base, req->entity.len).base;
	r->query.params[2] = v->credential;
	return 0;
}

static void on_send_rows(struct db_request *r, const PGresult *res)
{
	struct send_ctx *ctx = (struct send_ctx *)r;
	h2o_req_t *req = db_request_answer(r);

	if (PQntuples(res) != 1 || PQnfields(res) != 3 || PQgetisnull(res, 0, 2)) {
		pixd_log("pix_messages_send returned no row");
		respond_problem(req, 500, "internal error");
	} else {
		if (pixd_config.send_quota > 0)
			quota_spend(ctx->ispb, atol(PQgetvalue(res, 0, 0)) + atol(PQgetvalue(res, 0, 1)),
			            h2o_now(pixd_loop));
		respond(req, 201, "application/json", PQgetvalue(res, 0, 2), PQgetlength(res, 0, 2));
	}
}
