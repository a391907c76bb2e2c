/*
 * dbrequest.h — a request answered by one database call: the base every database handler extends.
 *
 * A handler's state embeds struct db_request first (then its own fields), is made by
 * db_request_new in req->pool (an async_req: respond.h says what keeps it from being touched once
 * freed), fills in query.stmt and query.params, and calls db_request_submit, which answers 503
 * itself when the pool refuses. The result comes back here and is triaged once for all handlers:
 * no result (a lost connection, a timeout, never sent) → 503, an error → its SQLSTATE's status
 * (respond_db_error), rows → the handler's on_rows, which answers (db_request_answer) or, for a
 * read that found nothing, waits. A handler with statuses of its own for a failure says so in
 * on_failure; one whose state is reachable from elsewhere too (a read's parking slot) unlinks it in
 * leave, which runs before every answer and when h2o frees the request.
 */
#ifndef PIXD_DBREQUEST_H
#define PIXD_DBREQUEST_H

#include "respond.h"

struct db_request;

struct db_request_class {
	/* A result with rows (PGRES_TUPLES_OK): answer it, or go on waiting. */
	void (*on_rows)(struct db_request *r, const PGresult *res);
	/* Optional: the handler's own answer to a failure; 1 when it answered, 0 for the 503. */
	int (*on_failure)(struct db_request *r, enum db_failure failure);
	/* Optional: unlinks what, besides the query, can reach the state. */
	void (*leave)(struct db_request *r);
};

struct db_request {
	struct async_req base;
	db_query_t query;
	const struct db_request_class *cls;
};

/* size >= sizeof(struct db_request), which must be the state's first member. Zero-filled. */
void *db_request_new(h2o_req_t *req, size_t size, const struct db_request_class *cls);
/* Submits r->query; when the pool refuses it, answers 503 (+ Retry-After) and returns why. */
enum db_submit_status db_request_submit(struct db_request *r);
/* Leaves (cls->leave), marks the state answered and returns the request to answer on at once. */
h2o_req_t *db_request_answer(struct db_request *r);

#endif
