/*
 * shim/tests/test_credcache.c — unit tests of the known-good credentials (credcache.c): accepted
 * is known until the TTL runs out (and every acceptance renews it), forgotten on the database's
 * refusal, unknown credentials stay unknown, and a flood of invented credentials keeps the table
 * bounded while the newest accepted ones stay known. Prints "N passed, N failed".
 */
#include <stdio.h>
#include <string.h>
#include "credcache.h"

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

static const char *cred(int i)
{
	static char buf[CREDENTIAL_MAX + 1];
	snprintf(buf, sizeof(buf), "token:%064x", i);
	return buf;
}

int main(void)
{
	uint64_t t = 1000000;
	char a[CREDENTIAL_MAX + 1], b[CREDENTIAL_MAX + 1];

	credcache_init(42);
	strcpy(a, cred(1));
	strcpy(b, cred(2));
	check(!credcache_known(a, t), "nothing is known at first");
	credcache_accept(a, t);
	check(credcache_known(a, t + 1), "accepted is known");
	check(!credcache_known(b, t + 1), "another credential is not");
	check(credcache_known(a, t + CREDCACHE_TTL_MS), "known until the TTL");
	check(!credcache_known(a, t + CREDCACHE_TTL_MS + 1), "unknown after the TTL");
	credcache_accept(a, t + CREDCACHE_TTL_MS + 2);
	credcache_accept(a, t + 2 * CREDCACHE_TTL_MS);
	check(credcache_known(a, t + 2 * CREDCACHE_TTL_MS + CREDCACHE_TTL_MS / 2),
	      "each acceptance renews it");
	credcache_forget(a);
	check(!credcache_known(a, t + 2 * CREDCACHE_TTL_MS + 1), "the database's refusal forgets it");
	check(credcache_size(t + 2 * CREDCACHE_TTL_MS + 1) == 0, "nothing left");
	credcache_accept(NULL, t);
	credcache_forget(NULL);
	check(!credcache_known(NULL, t), "NULL is never known");

	/* A flood of accepted credentials: bounded, and the newest stays known. */
	credcache_init(7);
	t += 10 * CREDCACHE_TTL_MS;
	for (int i = 0; i < 4 * CREDCACHE_SLOTS; i++)
		credcache_accept(cred(1000 + i), t + i / 100);
	check(credcache_size(t + 4 * CREDCACHE_SLOTS / 100) <= CREDCACHE_SLOTS, "the table is bounded");
	credcache_accept(a, t + 4 * CREDCACHE_SLOTS / 100);
	check(credcache_known(a, t + 4 * CREDCACHE_SLOTS / 100 + 1), "the newest stays known in a full table");
	check(!credcache_known(b, t + 4 * CREDCACHE_SLOTS / 100 + 1), "and what was never accepted is not");

	printf("%d passed, %d failed\n", passed, failed);
	return failed != 0;
}
