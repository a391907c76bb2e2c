/*
 * credcache.c — the known-good credentials (see credcache.h). Open addressing, linear probe of
 * CREDCACHE_PROBE slots from a seeded FNV-1a hash of the credential text. A slot whose last
 * acceptance is older than the TTL counts as free.
 */
#include <string.h>
#include "credcache.h"

struct slot {
	char credential[CREDENTIAL_MAX + 1];
	uint64_t accepted_ms; /* 0: free */
};

static uint32_t hash(const char *credential);
static int live(const struct slot *s, uint64_t now_ms);
static struct slot *find(const char *credential);

static struct slot table[CREDCACHE_SLOTS];
static uint64_t seed = 14695981039346656037ULL;

void credcache_init(uint64_t s)
{
	seed ^= s;
	memset(table, 0, sizeof(table));
}

static uint32_t hash(const char *credential)
{
	uint64_t h = seed;

	for (const char *p = credential; *p != '\0'; p++) {
		h ^= (unsigned char)*p;
		h *= 1099511628211ULL;
	}
	return (uint32_t)(h ^ (h >> 32));
}

static int live(const struct slot *s, uint64_t now_ms)
{
	return s->accepted_ms != 0 && now_ms - s->accepted_ms <= CREDCACHE_TTL_MS;
}

/* The slot holding credential, or NULL. */
static struct slot *find(const char *credential)
{
	uint32_t h = hash(credential);

	for (int i = 0; i < CREDCACHE_PROBE; i++) {
		struct slot *s = &table[(h + i) & (CREDCACHE_SLOTS - 1)];
		if (s->accepted_ms != 0 && strcmp(s->credential, credential) == 0)
			return s;
	}
	return NULL;
}

void credcache_accept(const char *credential, uint64_t now_ms)
{
	uint32_t h;
	struct slot *s, *victim = NULL;

	if (credential == NULL || strlen(credential) > CREDENTIAL_MAX)
		return;
	if (now_ms == 0)
		now_ms = 1; /* 0 marks a free slot */
	if ((s = find(credential)) != NULL) {
		s->accepted_ms = now_ms;
		return;
	}
	h = hash(credential);
	for (int i = 0; i < CREDCACHE_PROBE; i++) {
		s = &table[(h + i) & (CREDCACHE_SLOTS - 1)];
		/* the first free slot, else the one accepted longest ago */
		if (victim == NULL ||
		    (live(victim, now_ms) && (!live(s, now_ms) || s->accepted_ms < victim->accepted_ms)))
			victim = s;
	}
	strcpy(victim->credential, credential);
	victim->accepted_ms = now_ms;
}

void credcache_forget(const char *credential)
{
	struct slot *s = credential != NULL ? find(credential) : NULL;

	if (s != NULL)
		s->accepted_ms = 0;
}

int credcache_known(const char *credential, uint64_t now_ms)
{
	struct slot *s = credential != NULL ? find(credential) : NULL;

	return s != NULL && live(s, now_ms);
}

int credcache_size(uint64_t now_ms)
{
	int n = 0;

	for (int i = 0; i < CREDCACHE_SLOTS; i++)
		n += live(&table[i], now_ms);
	return n;
}
