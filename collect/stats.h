/* stats.c: the run's counters, its recoverable errors, the progress line. */
#ifndef PIX_COLLECT_STATS_H
#define PIX_COLLECT_STATS_H

#include <stdbool.h>
#include <stdint.h>

struct stats {
	uint64_t messages;   /* committed to the sink for the first time */
	uint64_t duplicates; /* redelivered copies the sink already had */
	uint64_t batches;
	uint64_t errors;
	char last_error[160];
};
extern struct stats stats;

void last_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* once a second with --progress (open_streams: of opt.collectors); final: the summary log line */
void progress_tick(int64_t now, bool final, int open_streams);

#endif
