/* util.c: the clock, the log, jitter, growable buffers — nothing of pix-collect's own state. */
#ifndef PIX_COLLECT_UTIL_H
#define PIX_COLLECT_UTIL_H

#include <stddef.h>
#include <stdint.h>

struct buf {
	char *data;
	size_t len, cap;
};

int64_t now_ms(void);
void logmsg(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void progress_line(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
int jitter(int lo, int hi);
void buf_reset(struct buf *b);
int buf_append(struct buf *b, const void *p, size_t n);
void buf_free(struct buf *b);

#endif
