/*
 * pgconn.h — one non-blocking libpq connection driven by the h2o event loop.
 *
 * Used by the query pool (database.c) and by the LISTEN connection (listener.c). It owns the
 * connect handshake (PQconnectStart/PQconnectPoll with a timeout) and the socket registration:
 * libpq keeps its own descriptor, the loop watches a dup() of it because h2o closes the descriptor
 * it owns. libpq may switch sockets while connecting (several hosts or addresses), so the
 * registration follows it.
 *
 * Lifecycle: CLOSED -> pgconn_start -> CONNECTING -> on_open (OPEN) ... -> on_failed (CLOSED).
 * on_failed runs after the connection is already closed; the owner decides when to retry.
 */
#ifndef PIXD_PGCONN_H
#define PIXD_PGCONN_H

#include <sys/types.h>
#include <libpq-fe.h>
#include "pixd.h"

enum pgconn_state { PGCONN_CLOSED, PGCONN_CONNECTING, PGCONN_OPEN };

struct pgconn {
	PGconn *pg;
	h2o_socket_t *sock;
	int pq_fd;      /* PQsocket() the registration was made for */
	ino_t sock_ino; /* and its inode: a reused descriptor number is another socket */
	enum pgconn_state state;
	h2o_timeout_entry_t connect_timer;
	char error[256]; /* the last failure, on one line */
	void *data;      /* the owner's */
	int commit_not_replicated; /* the server warned that a COMMIT stopped waiting for the
	                            * synchronous standby (pgconn.c); the owner resets it */
	void (*on_open)(struct pgconn *c);
	void (*on_readable)(struct pgconn *c);
	void (*on_failed)(struct pgconn *c, const char *why);
};

/* Initializes the module's timers; call once before any pgconn_start. */
void pgconn_global_init(void);

/*
 * Starts connecting; returns -1 (connection CLOSED, on_failed not called, c->error says why) if it
 * cannot even start, e.g. PostgreSQL's socket is not there.
 */
int pgconn_start(struct pgconn *c, const char *conninfo);

/* Sends what libpq buffered; arranges to finish later if the socket is full. -1 on error. */
int pgconn_flush(struct pgconn *c);

/* Reads what arrived: PQconsumeInput. -1 when the connection is broken. */
int pgconn_consume(struct pgconn *c);

/* Closes the connection (any state) and calls on_failed(why) if why != NULL. */
void pgconn_fail(struct pgconn *c, const char *why);

/* Closes without calling anything (shutdown). */
void pgconn_close(struct pgconn *c);

#endif
