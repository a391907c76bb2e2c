/* the sink: one of sink_pg.c, sink_exec.c behind this table (main.c picks it, state.h's `sink`) */
#ifndef PIX_COLLECT_SINK_H
#define PIX_COLLECT_SINK_H

#include <stdbool.h>
#include <stdint.h>

struct curl_waitfd;

struct sink {
	const char *name;
	/* start-up, before any request: connect, create what is missing, read the checkpoints */
	int (*open)(void);
	/* descriptors to wait on; returns how many were filled (at most max) */
	int (*fds)(struct curl_waitfd *fds, int max);
	/* after the wait: events on those descriptors, timers, and starting work for C_SINK_WAIT */
	void (*step)(struct curl_waitfd *fds, int n, int64_t now);
	/* nothing in flight (for the shutdown) */
	bool (*idle)(void);
	/* can write now (the PostgreSQL sink: connected); a shutdown does not wait for a sink that is down */
	bool (*available)(void);
	/* the earliest time step() wants to run again, or INT64_MAX */
	int64_t (*next_due)(void);
	void (*close)(void);
	/* checkpoints survive a restart */
	bool durable;
};
extern const struct sink sink_pg, sink_exec;

#endif
