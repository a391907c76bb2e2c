/*
 * handlers/health.c — GET /health: 200 {"status":"ok"} when a SELECT 1 answers through the pool,
 * else 503 (problem+json, Retry-After). Going through the pool means "the server can serve", not
 * merely "PostgreSQL is up".
 */
#include "database.h"
#include "handlers.h"
#include "respond.h"

struct health_ctx {
	struct async_req base;
	db_query_t query;
};

static void detach_health(struct async_req *a);
static void on_health_result(db_query_t *q, PGresult *res, enum db_failure failure);

void handle_health(h2o_req_t *req)
{
	struct health_ctx *ctx = async_req_new(req, sizeof(*ctx), detach_health);
	enum db_submit_status st;

	ctx->query.stmt = DB_HEALTH;
	ctx->query.cb = on_health_result;
	st = db_submit(&ctx->query);
	if (st != DB_SUBMITTED)
		respond_db_rejected(async_req_answer(&ctx->base), st);
}

static void detach_health(struct async_req *a)
{
	db_cancel(&((struct health_ctx *)a)->query);
}

static void on_health_result(db_query_t *q, PGresult *res, enum db_failure failure)
{
	struct health_ctx *ctx = H2O_STRUCT_FROM_MEMBER(struct health_ctx, query, q);
	h2o_req_t *req = async_req_answer(&ctx->base);

	if (failure != DB_FAIL_NONE)
		respond_db_failure(req, failure);
	else if (PQresultStatus(res) != PGRES_TUPLES_OK)
		respond_retry_later(req, 503, 2, "the database is unavailable");
	else
		respond_json(req, 200, "{\"status\":\"ok\"}");
}
