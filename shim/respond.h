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
/* 1 when the client of a request not answered yet has closed its connection (a peek, no read). */
int async_req_client_departed(struct async_req *a);
/* async_req_answer for a client that departed: counted, and the connection closes after the
 * answer (which nobody reads, unless the client had only half-closed). */
h2o_req_t *async_req_abandon(struct async_req *a);

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
/*
 * The request's credential (auth.c) into *credential, in req->pool (NULL with --auth none);
 * returns 0, or -1 after answering 401 itself (no credential, or a malformed Authorization).
 */
int request_authenticate(h2o_req_t *req, const char **credential);
/* 401 (why: "missing", "malformed", "rejected"), counted, logged, delayed for a failing address. */
void respond_unauthenticated(h2o_req_t *req, const char *why);
/* 403, one body for every reason. */
void respond_forbidden(h2o_req_t *req);
/* A query without result, or one that could not be submitted. */
void respond_db_failure(h2o_req_t *req, enum db_failure failure);
void respond_db_rejected(h2o_req_t *req, enum db_submit_status status);

/* What the router decided and checked for an /api route, handed to its handler. */
struct route_values {
	h2o_iovec_t ispb;       /* 8 ASCII digits, in the path */
	h2o_iovec_t id;         /* a stream's id (plausible) or the generator's {number}; else empty */
	int max_messages;       /* a read's batch size, negotiated from Accept (1 or 10); else 0 */
	const char *credential; /* the request's, in req->pool (request_authenticate), or NULL */
};

/*
 * A request answered by one database call: the base every database handler extends (an async_req
 * with its query).
 * A handler's state embeds struct db_request first (then its own fields). The handler calls
 * db_request_start once, with the route's values: the base makes the state in req->pool (an
 * async_req: the top of this file says what keeps it from being touched once freed), the
 * handler's prepare fills in query.stmt, query.params and its own fields from the values, and the
 * base submits the query, answering 503 itself when the pool refuses. The result comes back here
 * and is triaged once for all handlers: no result (a lost connection, a timeout, never sent) → 503,
 * an error → its SQLSTATE's status (respond_db_error), rows → the handler's on_rows, which answers
 * (db_request_answer) or, for a read that found nothing, waits. A handler with statuses of its own
 * for a failure says so in on_failure; one whose state is reachable from elsewhere too (a read's
 * parking slot) unlinks it in leave, which runs before every answer and when h2o frees the request.
 */
struct db_request;

struct db_request_class {
	/* Fills the new state from the route's values: 0, or -1 after answering (nothing submitted). */
	int (*prepare)(struct db_request *r, const struct route_values *v);
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

/* Makes the state (size >= sizeof(struct db_request), zero-filled), lets cls->prepare fill it from
 * v and submits its query: the request is answered now (refused) or when the result comes. */
void db_request_start(h2o_req_t *req, size_t size, const struct db_request_class *cls,
                      const struct route_values *v);
/* Leaves (cls->leave), marks the state answered and returns the request to answer on at once. */
h2o_req_t *db_request_answer(struct db_request *r);

#endif
