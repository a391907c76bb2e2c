/*
 * iteration_id.h — the ids a collector puts in its next URI: 20 characters of
 * a 32-letter lowercase alphabet (0-9, a-z without i, l, o, u), 100 bits from
 * pg_strong_random (the OS CSPRNG).
 */
#ifndef PIX_ITERATION_ID_H
#define PIX_ITERATION_ID_H

#include "postgres.h"

#define PIX_IID_LEN 20

/*
 * Fills out (PIX_IID_LEN + 1 bytes) with a fresh id; raises an error if the
 * CSPRNG fails.
 */
extern void pix_iid_new(char *out);

/*
 * True when s (len bytes) has the shape of an id. Says nothing about whether
 * it exists.
 */
extern bool pix_iid_is_wellformed(const char *s, size_t len);

#endif
