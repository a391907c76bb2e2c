/*
 * quota.c — the token buckets of the send quota (see quota.h). Tokens are kept in thousandths
 * so that a refill of any rate adds whole units per millisecond; a bucket stores its level at its
 * last update and is brought up to date when it is read.
 */
#include <string.h>
#include "quota.h"

#define MILLI 1000

struct bucket {
	uint64_t key;  /* the ISPB's digits + 1 (0: never used) */
	int64_t level; /* thousandths of a token at updated_ms; may be negative (a debt) */
	uint64_t updated_ms;
};

static uint64_t key_of(const char *ispb);
static struct bucket *find(uint64_t key);
static int64_t level_at(const struct bucket *b, uint64_t now_ms);

static struct bucket table[QUOTA_SLOTS];
static int64_t capacity;  /* thousandths */
static int64_t refill_ms; /* thousandths of a token per millisecond = tokens per second */

void quota_init(long cap, long refill_per_s)
{
	capacity = (int64_t)cap * MILLI;
	refill_ms = refill_per_s;
	memset(table, 0, sizeof(table));
}

/* The 8 digits as a number, + 1 so that 00000000 is a key too. */
static uint64_t key_of(const char *ispb)
{
	uint64_t k = 0;

	for (int i = 0; i < 8 && ispb[i] >= '0' && ispb[i] <= '9'; i++)
		k = k * 10 + (uint64_t)(ispb[i] - '0');
	return k + 1;
}

/* The level brought up to now_ms, never above capacity (no product that can overflow). */
static int64_t level_at(const struct bucket *b, uint64_t now_ms)
{
	uint64_t elapsed = now_ms > b->updated_ms ? now_ms - b->updated_ms : 0;
	int64_t missing = capacity - b->level;

	if (b->key == 0 || missing <= 0 || elapsed > (uint64_t)(missing / refill_ms))
		return capacity;
	return b->level + (int64_t)elapsed * refill_ms;
}

/* ispb's bucket, or NULL when it has none (a full bucket). */
static struct bucket *find(uint64_t key)
{
	uint32_t h = (uint32_t)((key * 0x9E3779B97F4A7C15ULL) >> 40);

	for (int i = 0; i < QUOTA_PROBE; i++) {
		struct bucket *b = &table[(h + i) & (QUOTA_SLOTS - 1)];
		if (b->key == key)
			return b;
	}
	return NULL;
}

long quota_tokens(const char *ispb, uint64_t now_ms)
{
	const struct bucket *b = find(key_of(ispb));

	return (long)((b != NULL ? level_at(b, now_ms) : capacity) / MILLI);
}

long quota_wait_s(const char *ispb, uint64_t now_ms)
{
	const struct bucket *b;
	int64_t level;

	if (capacity == 0 || (b = find(key_of(ispb))) == NULL)
		return 0;
	level = level_at(b, now_ms);
	if (level >= MILLI)
		return 0;
	/* whole seconds until one token: (MILLI - level) thousandths at refill_ms per millisecond */
	return (long)((MILLI - level + refill_ms * 1000 - 1) / (refill_ms * 1000));
}

void quota_spend(const char *ispb, long n, uint64_t now_ms)
{
	uint64_t key = key_of(ispb);
	uint32_t h = (uint32_t)((key * 0x9E3779B97F4A7C15ULL) >> 40);
	struct bucket *b = find(key), *fullest = NULL;

	if (capacity == 0 || n <= 0)
		return;
	for (int i = 0; b == NULL && i < QUOTA_PROBE; i++) {
		struct bucket *s = &table[(h + i) & (QUOTA_SLOTS - 1)];
		if (fullest == NULL || level_at(s, now_ms) > level_at(fullest, now_ms))
			fullest = s;
	}
	if (b == NULL) { /* a new entry starts full */
		b = fullest;
		b->key = key;
		b->level = capacity;
	} else {
		b->level = level_at(b, now_ms);
	}
	b->updated_ms = now_ms;
	b->level -= (int64_t)n * MILLI;
}
