/*
 * log.c — one line per event on stderr, written with one write() so that lines never interleave.
 */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>
#include "config.h"
#include "log.h"

void pixd_log(const char *fmt, ...)
{
	char line[1024];
	struct timeval tv;
	struct tm tm;
	size_t len;
	va_list ap;

	gettimeofday(&tv, NULL);
	gmtime_r(&tv.tv_sec, &tm);
	len = strftime(line, sizeof(line), "%Y-%m-%dT%H:%M:%S", &tm);
	len += snprintf(line + len, sizeof(line) - len, ".%03dZ ", (int)(tv.tv_usec / 1000));
	va_start(ap, fmt);
	vsnprintf(line + len, sizeof(line) - len - 1, fmt, ap);
	va_end(ap);
	/* One event, one line: libpq and server messages span lines. */
	for (size_t i = len; line[i] != '\0'; i++)
		if (line[i] == '\n' || line[i] == '\t' || line[i] == '\r')
			line[i] = ' ';
	len = strlen(line);
	while (len > 0 && line[len - 1] == ' ')
		len--;
	line[len++] = '\n';
	/* One write per line, so lines never interleave; a failed log write is not worth failing for.
	 */
	if (write(STDERR_FILENO, line, len) < 0)
		return;
}

/* "2024-02-21T19:27:00.123Z GET /path 200 1.234ms" */
void log_access(const char *method, size_t method_len, const char *path, size_t path_len,
                int status, double ms)
{
	char clean[256];
	size_t j = 0;

	if (!pixd_config.access_log)
		return;
	for (size_t i = 0; i < path_len && j + 4 < sizeof(clean); i++) {
		unsigned char ch = path[i];
		if (ch > 0x20 && ch < 0x7f)
			clean[j++] = ch;
		else
			j += snprintf(clean + j, sizeof(clean) - j, "%%%02X", ch);
	}
	clean[j] = '\0';
	pixd_log("%.*s %s %d %.3fms", (int)(method_len < 16 ? method_len : 16), method, clean, status,
	         ms);
}
