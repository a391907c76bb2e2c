/* collector.c: what each answer means for a collector (its record, struct collector, is in state.h). */
#ifndef PIX_COLLECT_COLLECTOR_H
#define PIX_COLLECT_COLLECTOR_H

#include <stdbool.h>
#include <stdint.h>

#include "state.h"

void collector_due(int64_t now);             /* start what is due */
void collector_on_response(struct collector *c, long status, int curl_error, const char *error);
void collector_committed(struct collector *c);
void collector_sink_failed(struct collector *c);
void collector_stop_all(void);               /* SIGTERM: finish what is in hand, DELETE, done */
void collector_abort_all(void);              /* a fatal answer: stop at once (nothing is confirmed) */
bool collector_all_done(void);
int64_t collector_next_due(void);
int collector_open_streams(void);            /* for the progress line */
/* stop with this exit status (the first one wins): every transfer is dropped */
void fatal(int status, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#endif
