/*
 * collector.c — one collector's life, answer by answer. What each answer means is the contract's
 * (SPEC.md); what this file decides is what to call next, and when:
 *
 *   200        the batch goes to the sink with its Pull-Next as the new checkpoint; Pull-Next is
 *              called only once the sink has it (collector_committed).
 *   204        nothing to keep; the checkpoint moves only when Pull-Next changed (a new stream's
 *              first id), then Pull-Next is called again (long polling).
 *   410, 404   the stream is gone (closed, expired: its pending batch went back to the queue, and
 *              if we had committed it the sink's primary key absorbs the copy): open a new stream.
 *   429, 503   come back after Retry-After, with jitter, to the same URL.
 *   network error, timeout, other 5xx   the same URL again after a backoff: the server replays the
 *              pending batch to a retry of the previous id, so nothing is skipped.
 *   401, 403   the credentials are refused: stop (EXIT_AUTH).
 *   any other  the server and this program disagree on the protocol: stop (EXIT_FAILURE_).
 */
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <curl/curl.h>

#include "collect.h"
#include "collector.h"
#include "http.h"
#include "multipart.h"
#include "sink.h"
#include "state.h"
#include "stats.h"
#include "util.h"

#define BACKOFF_MIN_MS 100
#define BACKOFF_MAX_MS 5000

static void call(struct collector *c, int64_t now);

/* An answer no retry can fix: the first status wins, and every transfer is dropped at once. */
void fatal(int status, const char *fmt, ...)
{
	va_list ap;
	char msg[512];
	va_start(ap, fmt);
	vsnprintf(msg, sizeof msg, fmt, ap);
	va_end(ap);
	logmsg("%s", msg);
	if (fatal_status < 0) {
		fatal_status = status;
		collector_abort_all();
	}
}

int collector_open_streams(void)
{
	int n = 0;
	for (int i = 0; i < ncollectors; i++)
		n += collectors[i].url[0] && collectors[i].state != C_DONE && !collectors[i].retire;
	return n;
}

static void due_in(struct collector *c, int ms)
{
	c->state = C_IDLE;
	c->due_ms = now_ms() + ms;
}

/* Exponential backoff with jitter, per collector; reset by every good answer. */
static int next_backoff(struct collector *c)
{
	c->backoff_ms = c->backoff_ms ? c->backoff_ms * 2 : BACKOFF_MIN_MS;
	if (c->backoff_ms > BACKOFF_MAX_MS)
		c->backoff_ms = BACKOFF_MAX_MS;
	return jitter(c->backoff_ms / 2, c->backoff_ms);
}

/* Retry-After seconds, spread over [s, 1.5 s] (at least a quarter second of spread). */
static int retry_after_ms(struct collector *c)
{
	long s = c->retry_after_s >= 0 ? c->retry_after_s : 1;
	int lo = (int)(s * 1000), spread = (int)(s * 500);
	return jitter(lo, lo + (spread < 250 ? 250 : spread));
}

/* A Pull-Next this program is willing to call: a path of this ISPB's streams, a plain id. */
static bool valid_pull_next(const char *p)
{
	char prefix[64];
	int n = snprintf(prefix, sizeof prefix, "/api/pix/%s/stream/", opt.ispb);
	if (strncmp(p, prefix, (size_t)n) != 0)
		return false;
	size_t idlen = strlen(p + n);
	if (idlen == 0 || idlen > 64)
		return false;
	for (const char *q = p + n; *q; q++)
		if (!((*q >= 'A' && *q <= 'Z') || (*q >= 'a' && *q <= 'z') || (*q >= '0' && *q <= '9') ||
		      *q == '-' || *q == '_' || *q == '.' || *q == '~'))
			return false;
	return strcmp(p + n, "start") != 0 && strcmp(p + n, "stop") != 0;
}

static void close_stream(struct collector *c)
{
	if (c->url[0] == '\0') {
		c->state = C_DONE;
		return;
	}
	c->state = C_CLOSING;
	http_delete(c, c->url);
}

/*
 * Stopping without the sink: the batch in hand is given back. The URL that delivered it is now the
 * stream's previous id, and DELETE there closes the stream without confirming the batch (the
 * server requeues it). With no batch (only a checkpoint to move after a 204), the stream's current
 * id is Pull-Next, and DELETE there confirms nothing new.
 */
static void give_back(struct collector *c)
{
	if (c->batch_count == 0)
		memcpy(c->url, c->next, sizeof c->url);
	close_stream(c);
}

static void call(struct collector *c, int64_t now)
{
	char start[64];
	(void)now;
	if (c->retire) {
		close_stream(c);
		return;
	}
	c->state = C_HTTP;
	if (c->url[0]) {
		http_get(c, c->url);
	} else {
		snprintf(start, sizeof start, "/api/pix/%s/stream/start", opt.ispb);
		http_get(c, start);
	}
}

void collector_due(int64_t now)
{
	if (fatal_status >= 0)
		return;
	for (int i = 0; i < ncollectors; i++) {
		struct collector *c = &collectors[i];
		if (c->state != C_IDLE || c->due_ms > now)
			continue;
		if (stopping)
			close_stream(c);
		else
			call(c, now);
	}
}

int64_t collector_next_due(void)
{
	int64_t due = INT64_MAX;
	for (int i = 0; i < ncollectors; i++)
		if (collectors[i].state == C_IDLE && collectors[i].due_ms < due)
			due = collectors[i].due_ms;
	return due;
}

bool collector_all_done(void)
{
	for (int i = 0; i < ncollectors; i++)
		if (collectors[i].state != C_DONE)
			return false;
	return true;
}

static void on_close_answer(struct collector *c, long status, const char *error)
{
	if (status == 200 || status == 404 || status == 410) {
		/* closed (or already gone): nothing left to confirm. The checkpoint is cleared so that the
		 * next run opens a new stream at once instead of learning it from a 410. */
		c->url[0] = '\0';
		if (sink->durable && c->saved[0] && fatal_status < 0 && sink->available()) {
			c->next[0] = '\0';
			c->batch_count = 0;
			c->sink_failures = 0;
			c->state = C_SINK_WAIT;
			c->due_ms = 0;
			return;
		}
	} else if (status == 0)
		last_error("collector %d: closing its stream: %s (it will expire on the server)", c->slot, error);
	else
		last_error("collector %d: closing its stream: HTTP %ld (it will expire on the server)", c->slot, status);
	c->state = C_DONE;
}

static void on_batch(struct collector *c)
{
	size_t starts[16], lens[16];
	const char *err;
	int n = batch_scan(c->body.data ? c->body.data : "", c->body.len, starts, lens, 10, &err);
	if (n < 0) {
		last_error("collector %d: %s; reading it again", c->slot, err);
		due_in(c, next_backoff(c));
		return;
	}
	c->batch_count = n;
	c->sink_failures = 0;
	c->state = C_SINK_WAIT;
	c->due_ms = 0;
}

static void on_empty(struct collector *c)
{
	if (opt.once) {
		/* the queue was empty for a whole long poll: confirm what was committed, close, done */
		memcpy(c->url, c->next, sizeof c->url);
		close_stream(c);
		return;
	}
	if (sink->durable && strcmp(c->next, c->saved) != 0) {
		c->batch_count = 0; /* only the checkpoint moves: a restart resumes this stream */
		c->sink_failures = 0;
		c->state = C_SINK_WAIT;
		c->due_ms = 0;
		return;
	}
	memcpy(c->url, c->next, sizeof c->url);
	due_in(c, 0);
}

void collector_on_response(struct collector *c, long status, int curl_error, const char *error)
{
	if (c->state == C_CLOSING) {
		on_close_answer(c, status, error);
		return;
	}
	if (curl_error != CURLE_OK) {
		last_error("collector %d: %s; calling the same URL again", c->slot, error);
		due_in(c, next_backoff(c));
		return;
	}
	if ((status == 200 || status == 204) && !valid_pull_next(c->next)) {
		last_error("collector %d: HTTP %ld without a usable Pull-Next; calling the same URL again", c->slot,
		           status);
		due_in(c, next_backoff(c));
		return;
	}
	switch (status) {
	case 200:
		c->backoff_ms = 0;
		on_batch(c);
		return;
	case 204:
		c->backoff_ms = 0;
		on_empty(c);
		return;
	case 404:
	case 410:
		if (c->url[0] == '\0')
			break; /* a 404 on stream/start: not a pix stream server */
		logmsg("collector %d: its stream is gone (HTTP %ld): opening a new one", c->slot, status);
		c->url[0] = '\0';
		due_in(c, 0);
		return;
	case 429:
	case 503:
		last_error("collector %d: HTTP %ld, retrying after %ld s", c->slot, status,
		           c->retry_after_s >= 0 ? c->retry_after_s : 1);
		due_in(c, retry_after_ms(c));
		return;
	case 401:
	case 403:
		fatal(EXIT_AUTH, "the server refused the credentials (HTTP %ld on %s): check --token-file, --cert/--key",
		      status, c->url[0] ? c->url : "stream/start");
		return;
	default:
		if (status >= 500) {
			last_error("collector %d: HTTP %ld; calling the same URL again", c->slot, status);
			due_in(c, next_backoff(c));
			return;
		}
	}
	fatal(EXIT_FAILURE_, "unexpected HTTP %ld on %s%s: %.200s", status, opt.origin,
	      c->url[0] ? c->url : "/api/pix/.../stream/start", c->body.data ? c->body.data : "");
}

/* The sink has the batch and the checkpoint: only now is Pull-Next called (and the batch confirmed). */
void collector_committed(struct collector *c)
{
	stats.batches += c->batch_count > 0;
	c->sink_failures = 0;
	c->sink_backoff_ms = 0;
	memcpy(c->saved, c->next, sizeof c->saved);
	memcpy(c->url, c->next, sizeof c->url);
	if (fatal_status >= 0 || c->next[0] == '\0') /* the checkpoint of a closed stream was cleared */
		c->state = C_DONE;
	else if (stopping)
		close_stream(c);
	else
		call(c, now_ms());
}

/* The sink could not take the batch: it stays in hand, and the sink tries again after a backoff. */
void collector_sink_failed(struct collector *c)
{
	c->sink_failures++;
	c->sink_backoff_ms = c->sink_backoff_ms ? c->sink_backoff_ms * 2 : BACKOFF_MIN_MS;
	if (c->sink_backoff_ms > BACKOFF_MAX_MS)
		c->sink_backoff_ms = BACKOFF_MAX_MS;
	c->state = C_SINK_WAIT;
	c->due_ms = now_ms() + jitter(c->sink_backoff_ms / 2, c->sink_backoff_ms);
	if (fatal_status >= 0)
		c->state = C_DONE;
	else if (stopping)
		give_back(c); /* rather than wait for a sink that refuses it */
}

/*
 * SIGTERM/SIGINT (or --once done): finish the batch in hand, close every stream. A stream/start in
 * flight is let finish (it may have opened a stream). Any other read in flight is dropped and its
 * URL DELETEd: if the server had not answered it, that URL is the stream's
 * current id and DELETE confirms the committed batch; if it had, that URL is now the previous id
 * and DELETE closes the stream without confirming the batch we never received (it is requeued).
 */
void collector_stop_all(void)
{
	for (int i = 0; i < ncollectors; i++) {
		struct collector *c = &collectors[i];
		switch (c->state) {
		case C_HTTP:
			/* A stream/start in flight may have opened a stream already: dropping it would leave
			 * that stream open on the server, known to nobody, holding one of the ISPB's slots until
			 * it expires (a SIGTERM at start left 3 of 6 open). It is let finish — bounded by the
			 * long poll (8 s at most) — and its answer is handled as any other while stopping: a
			 * batch is committed, then the stream is closed from its Pull-Next (on_batch, then
			 * collector_committed); a 204 closes it from Pull-Next (on_empty, collector_due). */
			if (c->url[0] == '\0')
				break;
			http_abort(c);
			close_stream(c);
			break;
		case C_IDLE:
			close_stream(c);
			break;
		case C_SINK_WAIT:
			/* a sink that refused it, or is down: give the batch back rather than wait */
			if (c->sink_failures > 0 || !sink->available())
				give_back(c);
			break;
		default:
			break; /* C_SINK_BUSY ends in collector_committed or _sink_failed; C_CLOSING, C_DONE */
		}
	}
}

/* A fatal answer: drop every transfer; what the sink is writing finishes on its own. */
void collector_abort_all(void)
{
	for (int i = 0; i < ncollectors; i++) {
		struct collector *c = &collectors[i];
		if (c->state == C_HTTP || c->state == C_CLOSING)
			http_abort(c);
		if (c->state != C_SINK_BUSY)
			c->state = C_DONE;
	}
}
