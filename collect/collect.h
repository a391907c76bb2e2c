/*
 * collect.h — pix-collect, the institution's side of a pix stream: collectors that pull an
 * institution's payments and hand each one to the institution's own sink exactly once (PostgreSQL)
 * or at least once (a command). main.c's opening comment is the argument; this header is the
 * vocabulary, the limits and the exit statuses. Each file has its own small header (util.h,
 * multipart.h, sink.h, state.h, stats.h, http.h, collector.h); main.c's opening comment lists the
 * files from the top floor down.
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

#endif
