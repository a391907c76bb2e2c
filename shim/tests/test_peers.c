/*
 * shim/tests/test_peers.c — unit tests of the connections-per-address count (peers.c): the limit
 * holds per address, a closed connection gives its place back, IPv6 counts per /64, IPv4-mapped
 * addresses one by one, a unix socket is never refused, and nodes are freed with their last
 * connection (the table follows the open connections). Prints "N passed, N failed".
 */
#include <arpa/inet.h>
#include <stdio.h>
#include <string.h>
#include <sys/un.h>
#include "peers.h"

static int passed, failed;

static void check(int ok, const char *what)
{
	if (ok) {
		passed++;
	} else {
		failed++;
		printf("FAIL %s\n", what);
	}
}

static struct peer *add4(const char *a, int limit)
{
	struct sockaddr_in s = {.sin_family = AF_INET};
	inet_pton(AF_INET, a, &s.sin_addr);
	return peers_add((struct sockaddr *)&s, sizeof(s), limit);
}

static struct peer *add6(const char *a, int limit)
{
	struct sockaddr_in6 s = {.sin6_family = AF_INET6};
	inet_pton(AF_INET6, a, &s.sin6_addr);
	return peers_add((struct sockaddr *)&s, sizeof(s), limit);
}

int main(void)
{
	struct peer *p[4], *q, *r;
	struct sockaddr_un un = {.sun_family = AF_UNIX};
	char a[32];

	peers_init(42);
	for (int i = 0; i < 3; i++)
		p[i] = add4("10.0.0.1", 3);
	check(p[0] != NULL && p[0] == p[1] && p[1] == p[2], "one node per address");
	check(peers_connections(p[0]) == 3, "three connections counted");
	check(add4("10.0.0.1", 3) == NULL, "the fourth connection of an address is refused");
	check(peers_connections(p[0]) == 3, "a refused connection is not counted");
	check((q = add4("10.0.0.2", 3)) != NULL, "another address is not refused");
	peers_remove(p[2]);
	check((p[3] = add4("10.0.0.1", 3)) != NULL, "a closed connection gives its place back");
	check(peers_addresses() == 2, "two addresses open");

	for (int i = 0; i < 2; i++)
		add6("2001:db8:1:2::1", 2);
	check(add6("2001:db8:1:2::ffff", 2) == NULL, "IPv6 counts per /64");
	check((r = add6("2001:db8:1:3::1", 2)) != NULL, "another /64 is another address");
	check(add6("::ffff:10.9.9.9", 1) != NULL && add6("::ffff:10.9.9.10", 1) != NULL,
	      "IPv4-mapped addresses count one by one");
	check(add6("::ffff:10.0.0.2", 3) == q, "an IPv4-mapped address is the IPv4 address");

	for (int i = 0; i < 10; i++)
		check(peers_add((struct sockaddr *)&un, sizeof(un), 1) != NULL,
		      "a unix socket is never refused");

	/* Nodes are freed with their last connection: the table follows the open connections. */
	peers_init(7);
	{
		int before = peers_addresses();
		struct peer *many[5000];
		for (int i = 0; i < 5000; i++) {
			snprintf(a, sizeof(a), "10.%d.%d.%d", 100 + ((i >> 16) & 127), (i >> 8) & 255, i & 255);
			many[i] = add4(a, 1);
		}
		check(peers_addresses() == before + 5000, "5 000 addresses counted");
		for (int i = 0; i < 5000; i++)
			peers_remove(many[i]);
		check(peers_addresses() == before, "every node freed with its last connection");
	}
	peers_remove(NULL);

	printf("%d passed, %d failed\n", passed, failed);
	return failed != 0;
}
