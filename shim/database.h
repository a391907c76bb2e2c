/*
 * database.h — the bounded pool of non-blocking libpq connections that runs the pix functions.
 *
 * A query is one prepared statement with text parameters. Its owner (a request) embeds a
 * db_query_t, keeps the parameter strings alive until the callback, and calls db_cancel when it
 * goes away first: after that the pool never touches the query again, and a result that still
 * arrives is read and dropped (its connection stays usable).
 *
 * db_submit never calls the callback itself; the callback runs later, from the loop, exactly once
 * unless the query was cancelled. The PGresult belongs to the pool and is freed after the callback.
 */
#ifndef PIXD_DATABASE_H
#define PIXD_DATABASE_H

#include <libpq-fe.h>
#include "pixd.h"

enum db_stmt {
	/* credential: "cert:..."/"token:..." (auth.h), or NULL with --auth none */
	DB_STREAM_START, /* ispb, max_messages, credential */
	DB_STREAM_NEXT,  /* ispb, interation_id, max_messages, credential */
	DB_STREAM_STOP,  /* ispb, interation_id, credential */
	DB_GENERATE,     /* ispb, number, credential */
	DB_SEND,         /* ispb, body, credential */
	DB_STOP_ALL,     /* ispb, credential */
	DB_HEALTH,       /* (none) */
	DB_NPREPARED,    /* the statements above are prepared on every connection; the ones below,
	                    run a few times a minute, are sent as they are (a missing function is then an
	                    error result, not a connection that cannot be prepared) */
	DB_EXPIRE = DB_NPREPARED, /* (none) */
	DB_PURGE,                 /* (none) */
	DB_METRICS,               /* (none) */
	DB_KEEPALIVE,             /* interation_ids (a text[] literal) */
	DB_ADMIN_CHECK,           /* credential: is it an admin's? (GET /metrics, handlers/metrics.c) */
	DB_NSTMT
};

/* Why a query ended without a result. */
enum db_failure {
	DB_FAIL_NONE,     /* a result arrived (possibly an error result: check PQresultStatus) */
	DB_FAIL_LOST,     /* the connection broke, or the pool went down while it waited */
	DB_FAIL_TIMEOUT,  /* it ran longer than --query-timeout-ms */
	DB_FAIL_NOT_SENT, /* it waited in the queue until its wait ran out: never sent, nothing happened
	                   */
};

enum db_submit_status {
	DB_SUBMITTED,
	DB_UNAVAILABLE, /* no connection to PostgreSQL: answer 503 now */
	DB_OVERLOADED,  /* every connection busy and the queue full: answer 503 now */
};

typedef struct st_db_query db_query_t;
typedef void (*db_result_cb)(db_query_t *q, PGresult *res, enum db_failure failure);

struct st_db_query {
	enum db_stmt stmt;
	const char *params[4];
	db_result_cb cb;
	/* owned by the pool */
	h2o_linklist_t _queued;          /* in the FIFO while waiting for a connection */
	h2o_timeout_entry_t _wait_timer; /* linked while in the FIFO */
	struct db_conn *_conn;           /* set while sent on a connection */
};

/* A query hurried by db_hurry waits at most this much longer for a connection. */
#define DB_HURRY_MS 250

void db_init(void);
/*
 * Hooks for the layer that feeds the pool without a request behind each call (parking.c):
 * on_room runs when a query left the queue, on_up when the pool is back after being down. Both run
 * inside the pool's code: they must not submit; they schedule.
 */
void db_set_hooks(void (*on_room)(void), void (*on_up)(void));
enum db_submit_status db_submit(db_query_t *q);
void db_cancel(db_query_t *q);
/* 1 while q waits in the queue or runs on a connection (its callback is still to come). */
int db_is_pending(db_query_t *q);
/* 1 when db_submit would queue a query now (the pool is up and its queue not full). */
int db_queue_has_room(void);
/* If q still waits in the queue, it waits at most DB_HURRY_MS more (then DB_FAIL_NOT_SENT). */
void db_hurry(db_query_t *q);
/* Closes every connection; queries still waiting or running get DB_FAIL_LOST. */
void db_shutdown(void);

/* For /metrics and logs. */
int db_ready_connections(void);
int db_busy_connections(void);
int db_queue_length(void);
int db_is_down(void);
/* The SQL function a statement calls (the label of pixd_db_calls_total). */
const char *db_statement_name(enum db_stmt stmt);

#endif
