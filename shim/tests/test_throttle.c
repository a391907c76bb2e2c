/*
 * shim/tests/test_throttle.c — unit tests of the failed-authentication table (throttle.c): an
 * address is delayed after THROTTLE_FREE_FAILURES failures in the window, others are not, the
 * window forgets, IPv6 counts per /64, and a table flooded with addresses stays bounded and
 * still tracks the newest ones. Prints "N passed, N failed".
 * UNIT_SOURCES: shim/throttle.c shim/peers.c
 */
#include <arpa/inet.h>
#include <stdio.h>
#include <string.h>
#include "throttle.h"

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

static struct sockaddr_in v4(const char *a)
{
	struct sockaddr_in s = {.sin_family = AF_INET};
	inet_pton(AF_INET, a, &s.sin_addr);
	return s;
}

static struct sockaddr_in6 v6(const char *a)
{
	struct sockaddr_in6 s = {.sin6_family = AF_INET6};
	inet_pton(AF_INET6, a, &s.sin6_addr);
	return s;
}

static int fail4(const char *a, uint64_t now)
{
	struct sockaddr_in s = v4(a);
	return throttle_failure((struct sockaddr *)&s, sizeof(s), now);
}

static int fail6(const char *a, uint64_t now)
{
	struct sockaddr_in6 s = v6(a);
	return throttle_failure((struct sockaddr *)&s, sizeof(s), now);
}

int main(void)
{
	uint64_t t = 1000000;
	int delayed = 0;
	char a[32];

	throttle_init(42);
	for (int i = 1; i <= THROTTLE_FREE_FAILURES; i++)
		check(!fail4("10.0.0.1", t + i), "the first failures are answered at once");
	check(fail4("10.0.0.1", t + 10), "one failure too many is delayed");
	check(!fail4("10.0.0.2", t + 11), "another address is not delayed");
	check(fail4("10.0.0.1", t + 12), "still delayed within the window");
	{
		struct sockaddr_in a1 = v4("10.0.0.1"), a2 = v4("10.0.0.2");
		check(throttle_is_throttled((struct sockaddr *)&a1, sizeof(a1), t + 13),
		      "a delayed address is seen as throttled");
		check(!throttle_is_throttled((struct sockaddr *)&a2, sizeof(a2), t + 13),
		      "an address with few failures is not throttled");
		check(fail4("10.0.0.1", t + 14), "asking did not count a failure, nor forgive one");
		check(!throttle_is_throttled((struct sockaddr *)&a1, sizeof(a1),
		                             t + 14 + THROTTLE_WINDOW_MS + 1),
		      "a throttled address is forgiven after the window");
	}
	check(!fail4("10.0.0.1", t + 14 + THROTTLE_WINDOW_MS + 1), "the window forgets");

	for (int i = 1; i <= THROTTLE_FREE_FAILURES; i++)
		fail6("2001:db8:1:2::1", t + i);
	check(fail6("2001:db8:1:2::ffff", t + 20), "IPv6 counts per /64");
	check(!fail6("2001:db8:1:3::1", t + 21), "another /64 is another address");
	for (int i = 1; i <= THROTTLE_FREE_FAILURES; i++)
		fail6("::ffff:10.9.9.9", t + i);
	check(!fail6("::ffff:10.9.9.10", t + 22), "IPv4-mapped addresses count one by one");

	/* A flood of addresses: bounded, and the newest keeps being tracked. */
	throttle_init(7);
	t += 10 * THROTTLE_WINDOW_MS;
	for (int i = 0; i < 4 * THROTTLE_SLOTS; i++) {
		snprintf(a, sizeof(a), "10.%d.%d.%d", (i >> 16) & 255, (i >> 8) & 255, i & 255);
		fail4(a, t + i);
	}
	check(throttle_tracked(t + 4 * THROTTLE_SLOTS) <= THROTTLE_SLOTS, "the table is bounded");
	for (int i = 0; i <= THROTTLE_FREE_FAILURES; i++)
		delayed = fail4("192.0.2.7", t + 4 * THROTTLE_SLOTS + i);
	check(delayed, "a repeated failure is still caught in a full table");

	printf("%d passed, %d failed\n", passed, failed);
	return failed != 0;
}
