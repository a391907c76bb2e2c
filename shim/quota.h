/*
 * quota.h — the send quota: a token bucket per ISPB, in the manner of ICOM's (3 750 tokens,
 * refilled at 750 a second, one token per payment message), in a table of fixed size.
 *
 * Pure (the caller gives the time): unit-tested in tests/test_quota.c. A call may go ahead while
 * its ISPB's bucket holds at least one token; the messages the database accepted are spent
 * afterwards (quota_spend), so only a call that succeeded spends anything: nobody spends another
 * institution's tokens with calls the database refuses. Sends already in flight when a bucket
 * empties are not stopped: the bucket goes below zero by what they carried, and the institution
 * waits that much longer (the debt is repaid at the refill rate before its next send).
 *
 * The table never grows: QUOTA_SLOTS entries, each ISPB probing QUOTA_PROBE of them. A bucket that
 * has refilled is the same as no entry, so its slot is reused; when every probed slot holds a
 * bucket still refilling, the fullest is forgotten (that ISPB gets its refill early). Entries are
 * made only by quota_spend, that is by sends the database accepted: only institutions fill it.
 */
#ifndef PIXD_QUOTA_H
#define PIXD_QUOTA_H

#include <stdint.h>

#define QUOTA_SLOTS 4096 /* a power of two */
#define QUOTA_PROBE 32

/* capacity tokens per bucket (0: no quota, every call goes ahead), refill tokens a second. */
void quota_init(long capacity, long refill_per_s);

/* 0 when a send of ispb (8 digits) may go ahead now, else the whole seconds (>= 1) until its
 * bucket holds a token again. */
long quota_wait_s(const char *ispb, uint64_t now_ms);

/* Spends n tokens of ispb's bucket at now_ms (the messages a send stored or found stored). */
void quota_spend(const char *ispb, long n, uint64_t now_ms);

/* Tokens in ispb's bucket at now_ms, rounded down (negative: a debt). */
long quota_tokens(const char *ispb, uint64_t now_ms);

#endif
