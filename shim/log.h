/*
 * log.h — ground floor: the server's log on stderr, one line per event.
 */
#ifndef PIXD_LOG_H
#define PIXD_LOG_H

#include <stddef.h>

/* Logs one line to stderr with a timestamp; printf-like. */
void pixd_log(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/*
 * The access log (when --access-log is on): "time METHOD path status duration"; bytes of the path
 * outside printable ASCII are written as %XX.
 */
void log_access(const char *method, size_t method_len, const char *path, size_t path_len,
                int status, double ms);

#endif
