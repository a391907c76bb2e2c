/*
 * stats.c — what the run has done: the counters, the recoverable errors (counted, and logged only
 * when they change), and the progress line drawn from them once a second on a terminal.
 */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "state.h"
#include "stats.h"
#include "util.h"

struct stats stats;

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

void progress_tick(int64_t now, bool final, int open_streams)
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
	progress_line("%llu messages, %.0f msg/s, %d/%d streams open%s%s", (unsigned long long)stats.messages, rate,
	              open_streams, opt.collectors, stats.last_error[0] ? ", last error: " : "", stats.last_error);
}
