/* multipart.c: the batch's JSON, scanned, never interpreted */
#ifndef PIX_COLLECT_MULTIPART_H
#define PIX_COLLECT_MULTIPART_H

#include <stddef.h>

int batch_scan(const char *s, size_t len, size_t *starts, size_t *lens, int max, const char **err);

#endif
