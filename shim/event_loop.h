/*
 * event_loop.h — the listening socket, accepting connections, signals and the run loop with its
 * graceful shutdown.
 */
#ifndef PIXD_EVENT_LOOP_H
#define PIXD_EVENT_LOOP_H

#include "pixd.h"

/* Creates the loop, the h2o context and the router. */
void event_loop_init(void);
/* Binds and listens on "host:port" ("[v6]:port", ":port" for every address). -1 on error. */
int event_loop_listen(const char *hostport);
/* Runs until a graceful shutdown completes; returns the exit status. */
int event_loop_run(void);
/* Frees what event_loop_init made (after the database connections closed): a clean valgrind run. */
void event_loop_dispose(void);

#endif
