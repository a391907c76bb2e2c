/*
 * log.h — ground floor: the server's log on stderr, one line per event.
 */
#ifndef PIXD_LOG_H
#define PIXD_LOG_H

#include <stddef.h>

/* Makes stderr non-blocking when it is a pipe or a socket (call once, at start). */
void log_init(void);
/* Writes what is buffered, as much as stderr takes now (the event loop calls it every turn). */
void log_flush(void);

/* Logs one line to stderr with a timestamp, at once; printf-like. */
void pixd_log(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/*
 * The access log (when --access-log is on): "time METHOD path status duration"; bytes of the path
 * outside printable ASCII are written as %XX. Buffered: written at the end of the loop's turn.
 */
void log_access(const char *method, size_t method_len, const char *path, size_t path_len,
                int status, double ms);

#endif
