/*
 * state.c: what the whole program shares — the options as parsed, the collectors' records, the sink
 * chosen, and whether it is stopping. Set up by main.c at start-up (the PostgreSQL sink's checkpoints
 * may add collectors that only retire); stopping is set by the signals, fatal_status by fatal().
 */
#ifndef PIX_COLLECT_STATE_H
#define PIX_COLLECT_STATE_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "collect.h"
#include "util.h"

struct sink;

struct options {
	const char *origin; /* scheme://host[:port], no trailing slash */
	char ispb[9];
	const char *into;   /* libpq conninfo of the PostgreSQL sink, or NULL */
	const char *exec;   /* the command sink, or NULL */
	int collectors;
	int sink_connections; /* the PostgreSQL sink's connections: writes in flight at once */
	const char *token;  /* the bearer token read from --token-file, or NULL */
	const char *cert, *key, *cacert;
	bool once;
	bool progress; /* a progress line on stderr (a terminal) */
	long timeout_ms;
};
extern struct options opt;

/* ---- a collector: its record, read and written by http.c, collector.c and the sinks ---------- */
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

extern struct collector *collectors; /* COLLECT_MAX_COLLECTORS of them, ncollectors in use */
extern int ncollectors;
void collector_init(struct collector *c, int slot); /* state.c: a record as it starts */
extern const struct sink *sink;
extern int stopping;     /* SIGTERM/SIGINT seen, or --once finished */
extern int fatal_status; /* >= 0: stop now and exit with it */

#endif
