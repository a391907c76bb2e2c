/* collector.c: a collector, and what each answer means for it. */
#ifndef PIX_COLLECT_COLLECTOR_H
#define PIX_COLLECT_COLLECTOR_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "collect.h"
#include "util.h"

enum collector_state {
	C_IDLE,      /* to call `url` (or start) at `due_ms` */
	C_HTTP,      /* a GET in flight */
	C_SINK_WAIT, /* a batch (or a new checkpoint) in hand, waiting for the sink */
	C_SINK_BUSY, /* the sink is writing it */
	C_CLOSING,   /* DELETE in flight (stopping) */
	C_DONE,
};

struct collector {
	int slot;
	enum collector_state state;
	char url[COLLECT_PATH_MAX];   /* the path to call next; "" = open a new stream */
	char saved[COLLECT_PATH_MAX]; /* the checkpoint as committed in the sink */
	char next[COLLECT_PATH_MAX];  /* the Pull-Next of the response in hand */
	long retry_after_s;           /* from the response's Retry-After, -1 when absent */
	struct buf body;   /* the response body (decoded) */
	int batch_count;   /* messages in the batch in hand (0: only the checkpoint moves) */
	int64_t due_ms;    /* C_IDLE: not before this; C_SINK_WAIT: the sink retries not before this */
	int backoff_ms;    /* the current network/5xx backoff */
	void *easy;        /* its CURL handle, reused: one keep-alive connection per collector */
	void *headers;     /* its curl_slist */
	/* the command sink's child, while one runs */
	pid_t child;
	int child_fd;
	size_t child_off;
	struct buf out;       /* the command sink's input: the batch as JSON lines */
	int sink_backoff_ms;
	int sink_failures;    /* failed attempts to write the batch in hand */
	int sink_conn;        /* C_SINK_BUSY: the sink connection writing it */
	bool retire;          /* a checkpoint of a slot beyond --collectors: close its stream, nothing more */
};

void collector_init(struct collector *c, int slot);
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
