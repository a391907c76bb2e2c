/*
 * respond.h — the response helpers: the one way every response leaves the server.
 *
 * respond() sets status, reason, Content-Length (h2o_send_inline would not), Vary, gzip when the
 * client accepts it, writes the access-log line and counts the response. Handlers never call
 * h2o_send themselves.
 *
 * A request answered later (after a query) keeps its state in an async_req allocated with
 * async_req_new: a block in req->pool whose dispose callback runs when h2o frees the request,
 * which may be before the answer if the client went away. The callback calls the handler's
 * detach(), which must unlink the state from everything that could reach it (the query pool, the
 * parking lot, timers). After that nothing holds a pointer to it, so a late database answer cannot
 * touch freed memory: the pool finds the query cancelled and drops the result.
 */
#ifndef PIXD_RESPOND_H
#define PIXD_RESPOND_H

#include <libpq-fe.h>
#include "database.h"
#include "pixd.h"

struct async_req {
	h2o_req_t *req;
	unsigned answered : 1;
	void (*detach)(struct async_req *a);
	/* kept for the access log of a client that left: req's own strings may be gone by then */
	char log_method[8];
	char log_path[96];
};

/* Number of requests taken and not yet answered (graceful shutdown waits for 0). */
int async_req_in_flight(void);

/* size >= sizeof(struct async_req), which must be the state's first member. Zero-filled. */
void *async_req_new(h2o_req_t *req, size_t size, void (*detach)(struct async_req *a));
/* Marks the state answered and returns the request to answer on (the caller answers at once). */
h2o_req_t *async_req_answer(struct async_req *a);

void add_header(h2o_req_t *req, const char *name, const char *value, size_t len);
void respond(h2o_req_t *req, int status, const char *content_type, const char *body, size_t len);
void respond_not_allowed(h2o_req_t *req, const char *allow); /* 405 with Allow */
void respond_json(h2o_req_t *req, int status, const char *json);
void respond_problem(h2o_req_t *req, int status, const char *detail);
/* 503 (or 429) with Retry-After. */
void respond_retry_later(h2o_req_t *req, int status, int seconds, const char *detail);
/* 404 for any stream the database would not find: one body for unknown, malformed, other ISPB. */
void respond_stream_not_found(h2o_req_t *req);
void respond_bad_ispb(h2o_req_t *req);
/* An error result: maps its SQLSTATE to a status (README's table). */
void respond_db_error(h2o_req_t *req, const PGresult *res);
/* A query without result, or one that could not be submitted. */
void respond_db_failure(h2o_req_t *req, enum db_failure failure);
void respond_db_rejected(h2o_req_t *req, enum db_submit_status status);

#endif
