/*
 * util.c — clock, logging, the progress line, growable buffers. Logs are quiet: one line per event
 * worth an operator's attention (start, stop, a stream restarted, an error that changed), never one
 * per batch. On a terminal a progress line is redrawn once a second.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "collect.h"

struct stats stats;

static bool progress_shown; /* the progress line is on screen: a log line must clear it first */

int64_t now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void vlog(const char *fmt, va_list ap)
{
	char when[32];
	time_t t = time(NULL);
	struct tm tm;
	gmtime_r(&t, &tm);
	strftime(when, sizeof when, "%Y-%m-%dT%H:%M:%SZ", &tm);
	if (progress_shown) {
		fputs("\r\033[K", stderr);
		progress_shown = false;
	}
	fprintf(stderr, "%s pix-collect: ", when);
	vfprintf(stderr, fmt, ap);
	fputc('\n', stderr);
}

void logmsg(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vlog(fmt, ap);
	va_end(ap);
}

/* An error the program recovers from by itself: counted, kept for the progress line, logged when
 * it differs from the previous one or 10 s after it (a sink that is down for a minute is a few
 * lines, not thousands). */
void last_error(const char *fmt, ...)
{
	static int64_t logged_at;
	char msg[sizeof stats.last_error];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof msg, fmt, ap);
	va_end(ap);
	stats.errors++;
	int64_t now = now_ms();
	if (strcmp(msg, stats.last_error) != 0 || now - logged_at >= 10000) {
		logmsg("%s", msg);
		logged_at = now;
	}
	memcpy(stats.last_error, msg, sizeof msg);
}

/* Uniform in [lo, hi]: retries of many collectors spread instead of coming back in lockstep. */
int jitter(int lo, int hi)
{
	if (hi <= lo)
		return lo;
	return lo + (int)(random() % (hi - lo + 1));
}

void progress_tick(int64_t now, bool final)
{
	static int64_t last_at, first_at;
	static uint64_t last_messages;
	if (first_at == 0)
		first_at = now;
	if (final) {
		double secs = (now - first_at) / 1000.0;
		logmsg("%llu messages committed (%llu redelivered copies absorbed), %llu batches, %llu errors in %.1f s",
		       (unsigned long long)stats.messages, (unsigned long long)stats.duplicates,
		       (unsigned long long)stats.batches, (unsigned long long)stats.errors, secs);
		return;
	}
	if (!opt.progress || now - last_at < 1000)
		return;
	double rate = last_at ? (stats.messages - last_messages) * 1000.0 / (now - last_at) : 0;
	last_at = now;
	last_messages = stats.messages;
	fprintf(stderr, "\r\033[K%llu messages, %.0f msg/s, %d/%d streams open%s%s",
	        (unsigned long long)stats.messages, rate, open_streams(), opt.collectors,
	        stats.last_error[0] ? ", last error: " : "", stats.last_error);
	progress_shown = true;
}

void buf_reset(struct buf *b)
{
	b->len = 0;
}

int buf_append(struct buf *b, const void *p, size_t n)
{
	if (b->len + n + 1 > b->cap) {
		size_t cap = b->cap ? b->cap : 16384;
		while (cap < b->len + n + 1)
			cap *= 2;
		char *d = realloc(b->data, cap);
		if (d == NULL)
			return -1;
		b->data = d;
		b->cap = cap;
	}
	memcpy(b->data + b->len, p, n);
	b->len += n;
	b->data[b->len] = '\0';
	return 0;
}

void buf_free(struct buf *b)
{
	free(b->data);
	b->data = NULL;
	b->len = b->cap = 0;
}
