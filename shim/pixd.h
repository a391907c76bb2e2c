/*
 * pixd.h — ground floor: what every layer of the HTTP server shares at run time (the one event
 * loop and h2o context, the stopping flag, the ISPB check), plus the other ground-floor headers
 * (configuration, counters, log) for convenience.
 *
 * The layers, bottom to top; a file uses only files of its own floor or below. shim/README.md
 * ("Files, by layer") names the files of each floor:
 *   1. ground floor (configuration, counters, log, this file, the pure parsers and tables, TLS, auth)
 *   2. database and parking
 *   3. responses and the lifetime of a request answered later (respond)
 *   4. handlers/ (one file per route family)
 *   5. router
 *   6. event_loop
 *   7. main.c
 *
 * The server is single-threaded: every callback runs on the loop, so nothing here needs a lock.
 */
#ifndef PIXD_H
#define PIXD_H

#include <stddef.h>
#include <h2o.h>
#include "config.h"
#include "counters.h"
#include "log.h"

/* Created by event_loop_init before any other layer starts; defined here so that the lower layers
 * use them without reaching up to the event loop. */
extern h2o_evloop_t *pixd_loop;
extern h2o_context_t pixd_ctx;
/* Set once SIGTERM/SIGINT arrived: no new parking, parked reads answered 204. */
extern int pixd_shutting_down;

/* Exactly 8 ASCII digits. */
int is_ispb(const char *s, size_t len);

#endif
