/*
 * peers.h — open client connections counted per address, so that one address (or one IPv6 /64)
 * cannot take every connection pixd accepts (--max-connections-per-address).
 *
 * Pure (no loop, no h2o): unit-tested in tests/test_peers.c. One node per address that has a
 * connection open, freed with its last connection, in a hash of PEERS_BUCKETS chains keyed by a
 * seeded hash (addresses cannot be chosen to collide): memory follows the open connections, which
 * --max-connections bounds.
 *
 * The address key is also the failure table's (throttle.c): IPv4 as ::ffff:a.b.c.d, IPv6 cut to
 * its /64 (one host usually owns a whole /64), an IPv4 client of a dual-stack socket as IPv4.
 */
#ifndef PIXD_PEERS_H
#define PIXD_PEERS_H

#include <stdint.h>
#include <sys/socket.h>

#define PEERS_BUCKETS 4096 /* a power of two */

/* The 16-byte key of addr; -1 for an address that is neither IPv4 nor IPv6 (a unix socket). */
int peer_key(const struct sockaddr *addr, socklen_t len, uint8_t key[16]);

void peers_init(uint64_t seed);

struct peer;
/*
 * Counts one more connection of addr and returns its peer (give it back to peers_remove), or NULL
 * when addr already has `limit` connections open (close the new one). An address without a key
 * (unix socket) is not counted and gets a shared peer that peers_remove ignores.
 */
struct peer *peers_add(const struct sockaddr *addr, socklen_t len, int limit);
/* One connection of that peer closed; NULL-safe. */
void peers_remove(struct peer *p);
/* Connections open from p's address. */
int peers_connections(const struct peer *p);
/* Addresses with a connection open (for /metrics). */
int peers_addresses(void);

#endif
