/*
 * dbrequest.c — a request answered by one database call (dbrequest.h): submit or 503, detach, and
 * the triage of the result, written once for every handler that extends it.
 */
#include "dbrequest.h"

static void detach(struct async_req *a);
static void on_result(db_query_t *q, PGresult *res, enum db_failure failure);

void *db_request_new(h2o_req_t *req, size_t size, const struct db_request_class *cls)
{
	struct db_request *r = async_req_new(req, size, detach);

	r->cls = cls;
	r->query.cb = on_result;
	return r;
}

enum db_submit_status db_request_submit(struct db_request *r)
{
	enum db_submit_status st = db_submit(&r->query);

	if (st != DB_SUBMITTED)
		respond_db_rejected(db_request_answer(r), st);
	return st;
}

h2o_req_t *db_request_answer(struct db_request *r)
{
	if (r->cls->leave != NULL)
		r->cls->leave(r);
	return async_req_answer(&r->base);
}

/* h2o frees the request (answered, or the client left): nothing may reach the state after this. */
static void detach(struct async_req *a)
{
	struct db_request *r = (struct db_request *)a;

	db_cancel(&r->query);
	if (r->cls->leave != NULL)
		r->cls->leave(r);
}

static void on_result(db_query_t *q, PGresult *res, enum db_failure failure)
{
	struct db_request *r = H2O_STRUCT_FROM_MEMBER(struct db_request, query, q);

	if (failure != DB_FAIL_NONE) {
		if (r->cls->on_failure == NULL || !r->cls->on_failure(r, failure))
			respond_db_failure(db_request_answer(r), failure);
	} else if (PQresultStatus(res) != PGRES_TUPLES_OK) {
		respond_db_error(db_request_answer(r), res);
	} else {
		r->cls->on_rows(r, res);
	}
}
