/* the sink: one of sink_pg.c, sink_exec.c behind this table (main.c picks it, state.h's `sink`) */
#ifndef PIX_COLLECT_SINK_H
#define PIX_COLLECT_SINK_H

#include <stdbool.h>
#include <stdint.h>

struct collector;
struct curl_waitfd;

/* What a sink tells the collectors, through these (collector.c's, given by main.c to open): a
 * sink names no file above it. */
struct sink_calls {
	void (*committed)(struct collector *c); /* the batch and its checkpoint are in the sink */
	void (*failed)(struct collector *c);    /* it could not take them: they stay in hand */
	/* an answer no retry can fix: stop, and exit with this status (fatal in collector.c) */
	void (*stop_with)(int status, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
};

struct sink {
	const char *name;
	/* start-up, before any request: connect, create what is missing, read the checkpoints */
	int (*open)(const struct sink_calls *calls);
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
