/*
 * util.c — clock, logging, jitter, growable buffers: helpers that know nothing of collectors,
 * options or sinks. Logs are quiet: one line per event worth an operator's attention (start, stop,
 * a stream restarted, an error that changed), never one per batch (stats.c decides which). A log
 * line first clears the progress line that progress_line() drew.
 */
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "util.h"

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

/* Uniform in [lo, hi]: retries of many collectors spread instead of coming back in lockstep. */
int jitter(int lo, int hi)
{
	if (hi <= lo)
		return lo;
	return lo + (int)(random() % (hi - lo + 1));
}

/* The progress line: redrawn in place, and cleared by the next log line. */
void progress_line(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	fputs("\r\033[K", stderr);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
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
