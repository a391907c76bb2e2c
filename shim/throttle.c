/*
 * throttle.c — the failure table (see throttle.h). Open addressing, linear probe of
 * THROTTLE_PROBE slots from a seeded FNV-1a hash of the 16-byte key (peers.h's peer_key: IPv4 as
 * ::ffff:a.b.c.d, IPv6 cut to its /64). A slot whose last failure is older than the window counts as free.
 */
#include <string.h>
#include <netinet/in.h>
#include "peers.h"
#include "throttle.h"

struct slot {
	uint8_t key[16];
	uint64_t last_ms; /* 0: never used */
	uint32_t failures;
};

static uint32_t hash(const uint8_t key[16]);
static int expired(const struct slot *s, uint64_t now_ms);

static struct slot table[THROTTLE_SLOTS];
static uint64_t seed = 14695981039346656037ULL;

void throttle_init(uint64_t s)
{
	seed ^= s;
	memset(table, 0, sizeof(table));
}

static uint32_t hash(const uint8_t key[16])
{
	uint64_t h = seed;

	for (int i = 0; i < 16; i++) {
		h ^= key[i];
		h *= 1099511628211ULL;
	}
	return (uint32_t)(h ^ (h >> 32));
}

static int expired(const struct slot *s, uint64_t now_ms)
{
	return s->last_ms == 0 || now_ms - s->last_ms > THROTTLE_WINDOW_MS;
}

int throttle_failure(const struct sockaddr *addr, socklen_t len, uint64_t now_ms)
{
	uint8_t key[16];
	uint32_t h;
	struct slot *victim = NULL;

	if (peer_key(addr, len, key) != 0)
		return 0; /* a unix socket: nothing to tell callers apart by */
	if (now_ms == 0)
		now_ms = 1; /* 0 marks a slot never used */
	h = hash(key);
	for (int i = 0; i < THROTTLE_PROBE; i++) {
		struct slot *s = &table[(h + i) & (THROTTLE_SLOTS - 1)];
		if (s->last_ms != 0 && memcmp(s->key, key, 16) == 0) {
			s->failures = expired(s, now_ms) ? 1 : s->failures + 1;
			s->last_ms = now_ms;
			return s->failures > THROTTLE_FREE_FAILURES;
		}
		/* the first free slot, else the one whose last failure is oldest */
		if (victim == NULL ||
		    (!expired(victim, now_ms) && (expired(s, now_ms) || s->last_ms < victim->last_ms)))
			victim = s;
	}
	memcpy(victim->key, key, 16);
	victim->last_ms = now_ms;
	victim->failures = 1;
	return 1 > THROTTLE_FREE_FAILURES;
}

int throttle_is_throttled(const struct sockaddr *addr, socklen_t len, uint64_t now_ms)
{
	uint8_t key[16];
	uint32_t h;

	if (peer_key(addr, len, key) != 0)
		return 0;
	h = hash(key);
	for (int i = 0; i < THROTTLE_PROBE; i++) {
		const struct slot *s = &table[(h + i) & (THROTTLE_SLOTS - 1)];
		if (s->last_ms != 0 && memcmp(s->key, key, 16) == 0)
			return !expired(s, now_ms) && s->failures > THROTTLE_FREE_FAILURES;
	}
	return 0;
}

int throttle_tracked(uint64_t now_ms)
{
	int n = 0;

	for (int i = 0; i < THROTTLE_SLOTS; i++)
		n += !expired(&table[i], now_ms);
	return n;
}
