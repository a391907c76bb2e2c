/*
 * shim/tests/test_quota.c — unit tests of the send quota's token buckets (quota.c): a bucket
 * starts full, lets a send go while it holds a token, refills at its rate up to its capacity and no
 * further, says how many whole seconds until the next token, keeps a debt left by sends in flight,
 * keeps ISPBs apart, stays bounded when many ISPBs spend, and does nothing when the quota is off.
 * Prints "N passed, N failed".
 */
#include <stdio.h>
#include <string.h>
#include "quota.h"

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

static void test_icom_bucket(void)
{
	uint64_t t = 1000000;

	quota_init(3750, 750);
	check(quota_tokens("11111111", t) == 3750, "a bucket starts full");
	check(quota_wait_s("11111111", t) == 0, "a full bucket lets a send go");
	quota_spend("11111111", 3749, t);
	check(quota_tokens("11111111", t) == 1, "spending takes tokens");
	check(quota_wait_s("11111111", t) == 0, "one token left: the send goes");
	quota_spend("11111111", 1, t);
	check(quota_wait_s("11111111", t) == 1, "empty: 429, one token back within a second");
	check(quota_tokens("11111111", t + 1000) == 750, "refilled at 750 a second");
	check(quota_wait_s("11111111", t + 2) == 0, "750/s: a token after 2 ms");
	check(quota_tokens("11111111", t + 5000) == 3750, "full again after 5 s");
	check(quota_tokens("11111111", t + 500000) == 3750, "never above capacity");
	check(quota_tokens("22222222", t) == 3750, "another ISPB's bucket is untouched");
}

static void test_debt(void)
{
	uint64_t t = 5000;

	quota_init(10, 2);
	quota_spend("33333333", 10, t);
	quota_spend("33333333", 5, t); /* a send that was in flight when the bucket emptied */
	check(quota_tokens("33333333", t) == -5, "sends in flight leave a debt");
	check(quota_wait_s("33333333", t) == 3, "6 tokens short at 2/s: 3 s");
	check(quota_wait_s("33333333", t + 2999) == 1, "still short 1 ms before");
	check(quota_wait_s("33333333", t + 3000) == 0, "the debt repaid, a token there");
	quota_spend("33333333", 0, t + 3000);
	quota_spend("33333333", -4, t + 3000);
	check(quota_tokens("33333333", t + 3000) == 1, "nothing stored spends nothing");
}

static void test_off(void)
{
	quota_init(0, 750);
	quota_spend("44444444", 1000000, 1);
	check(quota_wait_s("44444444", 1) == 0, "quota 0: every send goes");
}

/* Many ISPBs spending at once: the table stays bounded and the newest debts are kept. */
static void test_many_ispbs(void)
{
	char ispb[16];
	int kept = 0;

	quota_init(100, 1);
	for (int i = 0; i < 3 * QUOTA_SLOTS; i++) {
		snprintf(ispb, sizeof(ispb), "%08d", 10000000 + i);
		quota_spend(ispb, 100, 10);
	}
	for (int i = 2 * QUOTA_SLOTS; i < 3 * QUOTA_SLOTS; i++) {
		snprintf(ispb, sizeof(ispb), "%08d", 10000000 + i);
		kept += quota_wait_s(ispb, 10) > 0;
	}
	check(kept > QUOTA_SLOTS / 2, "most of the newest buckets are kept");
	quota_spend("00000000", 100, 10);
	check(quota_wait_s("00000000", 10) > 0, "00000000 is an ISPB like any other");
}

int main(void)
{
	test_icom_bucket();
	test_debt();
	test_off();
	test_many_ispbs();
	printf("%d passed, %d failed\n", passed, failed);
	return failed != 0;
}
