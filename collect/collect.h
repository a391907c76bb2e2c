/*
 * collect.h — pix-collect, the institution's side of a pix stream: collectors that pull an
 * institution's payments and hand each one to the institution's own sink exactly once (PostgreSQL)
 * or at least once (a command). main.c's opening comment is the argument; this header is the
 * vocabulary.
 *
 *   collector   one stream of the institution: it follows Pull-Next, one batch at a time.
 *   slot        a collector's number, 1..N: the key of its checkpoint.
 *   batch       the messages of one 200 read (a JSON array of up to 10 with multipart/json).
 *   in hand     a batch received and not yet committed to the sink: its stream holds it pending.
 *   checkpoint  per slot, the path to call next. Committed together with the batch that led to it,
 *               so it always names either the call that delivered an uncommitted batch (calling it
 *               again replays that batch) or the call that confirms a committed one.
 *
 * One thread, one loop (main.c): libcurl's multi interface carries the HTTP transfers, and the
 * sink's file descriptors (libpq's socket, the command's pipes, a signalfd) ride along as extra
 * descriptors of curl_multi_poll.
 */
#ifndef PIX_COLLECT_H
#define PIX_COLLECT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#define COLLECT_PATH_MAX 256     /* a Pull-Next path: /api/pix/{ispb}/stream/{id <= 64} */
#define COLLECT_MAX_COLLECTORS 64
#define COLLECT_MAX_SINK_CONNECTIONS 16
#define COLLECT_BODY_MAX (4 << 20) /* a batch of 10 messages is ~10 KB; anything this big is broken */

/* Exit statuses (docs/consuming.md). */
enum {
	EXIT_DONE = 0,     /* stopped by a signal after closing its streams, or --once drained */
	EXIT_FAILURE_ = 1, /* the server answered what no retry can fix; a second signal */
	EXIT_USAGE = 2,    /* bad command line: option, URL, ISPB, unreadable credential file */
	EXIT_SINK = 3,     /* the sink is unreachable or unusable at start: nothing was requested */
	EXIT_AUTH = 4,     /* the server refused the credentials (401/403) */
};

/* ---- options (main.c) ------------------------------------------------------------------------ */
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

/* ---- a collector (collector.c) ------------------------------------------------------------ */
enum collector_state {
	C_IDLE,      /* to call `url` (or start) at `due_ms` */
	C_HTTP,      /* a GET in flight */
	C_SINK_WAIT, /* a batch (or a new checkpoint) in hand, waiting for the sink */
	C_SINK_BUSY, /* the sink is writing it */
	C_CLOSING,   /* DELETE in flight (stopping) */
	C_DONE,
};

struct buf {
	char *data;
	size_t len, cap;
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

extern struct collector *collectors;
extern int ncollectors;

/* collector.c */
void collector_init(struct collector *c, int slot);
void collector_due(int64_t now);             /* start what is due */
void collector_on_response(struct collector *c, long status, int curl_error, const char *error);
void collector_committed(struct collector *c);
void collector_sink_failed(struct collector *c);
void collector_stop_all(void);               /* SIGTERM: finish what is in hand, DELETE, done */
void collector_abort_all(void);              /* a fatal answer: stop at once (nothing is confirmed) */
bool collector_all_done(void);
int64_t collector_next_due(void);

/* http.c */
struct curl_waitfd;
int http_init(void);
int http_setup(struct collector *c);
void http_cleanup(void);
void http_get(struct collector *c, const char *path);
void http_delete(struct collector *c, const char *path);
void http_abort(struct collector *c);
void http_wait(struct curl_waitfd *fds, int n, int timeout_ms);
void http_perform(void);

/* the sink: one of sink_pg.c, sink_exec.c behind this table */
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
extern const struct sink *sink;

/* multipart.c: the batch's JSON, scanned, never interpreted */
int batch_scan(const char *s, size_t len, size_t *starts, size_t *lens, int max, const char **err);

/* util.c */
int64_t now_ms(void);
void logmsg(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void last_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
int jitter(int lo, int hi);
void buf_reset(struct buf *b);
int buf_append(struct buf *b, const void *p, size_t n);
void buf_free(struct buf *b);

struct stats {
	uint64_t messages;   /* committed to the sink for the first time */
	uint64_t duplicates; /* redelivered copies the sink already had */
	uint64_t batches;
	uint64_t errors;
	char last_error[160];
};
extern struct stats stats;
void progress_tick(int64_t now, bool final);

/* main.c */
extern int stopping;     /* SIGTERM/SIGINT seen, or --once finished */
extern int fatal_status; /* >= 0: stop now and exit with it */
void fatal(int status, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
int open_streams(void);

#endif
