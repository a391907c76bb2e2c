/*
 * log.c — the server's log on stderr: one line per event, never split, never blocking the loop.
 *
 * Lines go into one buffer. Event lines (pixd_log) are written at once, access-log lines once per
 * loop turn (log_flush, called by the event loop): a busy turn answering a thousand requests costs
 * one write(), not a thousand. When stderr is a pipe or a socket it is made non-blocking, so a slow
 * reader never stalls the loop: what it cannot take stays in the buffer, and lines that no longer
 * fit are dropped and counted (pixd_log_lines_dropped_total). A regular file or a terminal takes
 * writes without blocking for long and stays as it is.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>
#include "config.h"
#include "counters.h"
#include "log.h"

#define LOG_BUFFER (256 * 1024)
#define LINE_MAX_LEN 1024

static size_t timestamp(char *out, size_t size);
static void append(const char *line, size_t len);

static struct {
	char buf[LOG_BUFFER];
	size_t len;
	time_t stamp_second; /* the second the cached prefix is for */
	char stamp[32];      /* "2024-02-21T19:27:00." */
	size_t stamp_len;
} out;

void log_init(void)
{
	struct stat st;
	int flags;

	if (fstat(STDERR_FILENO, &st) != 0 || !(S_ISFIFO(st.st_mode) || S_ISSOCK(st.st_mode)))
		return;
	if ((flags = fcntl(STDERR_FILENO, F_GETFL)) >= 0)
		fcntl(STDERR_FILENO, F_SETFL, flags | O_NONBLOCK);
}

/* "2024-02-21T19:27:00.123Z "; the date part is formatted once a second. */
static size_t timestamp(char *line, size_t size)
{
	struct timeval tv;
	struct tm tm;

	gettimeofday(&tv, NULL);
	if (tv.tv_sec != out.stamp_second || out.stamp_len == 0) {
		gmtime_r(&tv.tv_sec, &tm);
		out.stamp_len = strftime(out.stamp, sizeof(out.stamp), "%Y-%m-%dT%H:%M:%S.", &tm);
		out.stamp_second = tv.tv_sec;
	}
	memcpy(line, out.stamp, out.stamp_len);
	return out.stamp_len +
	       snprintf(line + out.stamp_len, size - out.stamp_len, "%03dZ ", (int)(tv.tv_usec / 1000));
}

/* A whole line or nothing: writing out what is buffered first if it must. */
static void append(const char *line, size_t len)
{
	if (out.len + len > sizeof(out.buf))
		log_flush();
	if (out.len + len > sizeof(out.buf)) {
		pixd_metrics.log_lines_dropped++;
		return;
	}
	memcpy(out.buf + out.len, line, len);
	out.len += len;
}

void log_flush(void)
{
	size_t done = 0;

	while (done < out.len) {
		ssize_t n = write(STDERR_FILENO, out.buf + done, out.len - done);
		if (n > 0)
			done += (size_t)n;
		else if (n < 0 && errno == EINTR)
			continue;
		else
			break; /* full (EAGAIN) or broken: keep the rest for the next turn */
	}
	/* Partial lines may be written: the reader of a pipe sees them completed on the next write. */
	memmove(out.buf, out.buf + done, out.len - done);
	out.len -= done;
}

void pixd_log(const char *fmt, ...)
{
	char line[LINE_MAX_LEN];
	size_t len = timestamp(line, sizeof(line)), start = len;
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(line + len, sizeof(line) - len - 1, fmt, ap);
	va_end(ap);
	/* One event, one line: libpq and server messages span lines. */
	for (size_t i = start; line[i] != '\0'; i++)
		if (line[i] == '\n' || line[i] == '\t' || line[i] == '\r')
			line[i] = ' ';
	len = strlen(line);
	while (len > 0 && line[len - 1] == ' ')
		len--;
	line[len++] = '\n';
	append(line, len);
	log_flush();
}

/* "2024-02-21T19:27:00.123Z GET /path 200 1.234ms" */
void log_access(const char *method, size_t method_len, const char *path, size_t path_len,
                int status, double ms)
{
	char line[LINE_MAX_LEN];
	size_t j;

	if (!pixd_config.access_log)
		return;
	j = timestamp(line, sizeof(line));
	if (method_len > 16)
		method_len = 16;
	memcpy(line + j, method, method_len);
	j += method_len;
	line[j++] = ' ';
	for (size_t i = 0; i < path_len && j + 4 < 256 + 64; i++) {
		unsigned char ch = path[i];
		if (ch > 0x20 && ch < 0x7f)
			line[j++] = ch;
		else
			j += snprintf(line + j, sizeof(line) - j, "%%%02X", ch);
	}
	j += snprintf(line + j, sizeof(line) - j, " %d %.3fms\n", status, ms);
	append(line, j < sizeof(line) ? j : sizeof(line) - 1);
}
