/*
 * peers.c — connections per address (see peers.h). Chained hash of malloc'd nodes; a node lives
 * while its address has a connection open.
 */
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>
#include "peers.h"

struct peer {
	struct peer *next;
	uint8_t key[16];
	int connections;
};

static uint32_t hash(const uint8_t key[16]);

static struct peer *buckets[PEERS_BUCKETS];
static struct peer unkeyed; /* unix sockets: not counted */
static uint64_t seed = 14695981039346656037ULL;
static int addresses;

int peer_key(const struct sockaddr *addr, socklen_t len, uint8_t key[16])
{
	memset(key, 0, 16);
	if (addr->sa_family == AF_INET && len >= (socklen_t)sizeof(struct sockaddr_in)) {
		key[10] = key[11] = 0xff;
		memcpy(key + 12, &((const struct sockaddr_in *)addr)->sin_addr, 4);
		return 0;
	}
	if (addr->sa_family == AF_INET6 && len >= (socklen_t)sizeof(struct sockaddr_in6)) {
		const uint8_t *a = ((const struct sockaddr_in6 *)addr)->sin6_addr.s6_addr;
		static const uint8_t v4mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
		/* an IPv4 client of a dual-stack socket is one address, not a /64 */
		memcpy(key, a, memcmp(a, v4mapped, 12) == 0 ? 16 : 8);
		return 0;
	}
	return -1;
}

void peers_init(uint64_t s)
{
	seed ^= s;
}

static uint32_t hash(const uint8_t key[16])
{
	uint64_t h = seed;

	for (int i = 0; i < 16; i++) {
		h ^= key[i];
		h *= 1099511628211ULL;
	}
	return (uint32_t)(h ^ (h >> 32)) & (PEERS_BUCKETS - 1);
}

struct peer *peers_add(const struct sockaddr *addr, socklen_t len, int limit)
{
	uint8_t key[16];
	struct peer **head, *p;

	if (peer_key(addr, len, key) != 0)
		return &unkeyed;
	if (limit < 1)
		return NULL;
	head = &buckets[hash(key)];
	for (p = *head; p != NULL; p = p->next)
		if (memcmp(p->key, key, 16) == 0)
			break;
	if (p == NULL) {
		if ((p = calloc(1, sizeof(*p))) == NULL)
			return NULL; /* out of memory: refusing the connection is the safe answer */
		memcpy(p->key, key, 16);
		p->next = *head;
		*head = p;
		addresses++;
	}
	if (p->connections >= limit)
		return NULL;
	p->connections++;
	return p;
}

void peers_remove(struct peer *p)
{
	struct peer **link;

	if (p == NULL || p == &unkeyed || --p->connections > 0)
		return;
	for (link = &buckets[hash(p->key)]; *link != p; link = &(*link)->next)
		;
	*link = p->next;
	free(p);
	addresses--;
}

int peers_connections(const struct peer *p)
{
	return p != NULL ? p->connections : 0;
}

int peers_addresses(void)
{
	return addresses;
}
