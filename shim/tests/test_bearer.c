/*
 * shim/tests/test_bearer.c — unit tests of the Authorization: Bearer parser and of the credential
 * digests (bearer.c). Not part of pixd; test/run-all.sh builds it with shim/bearer.c.
 * Prints each failing case and "N passed, N failed"; exits non-zero on a failure.
 */
#include <stdio.h>
#include <string.h>
#include "bearer.h"

static int passed, failed;

static void check(int ok, const char *what, const char *value)
{
	if (ok) {
		passed++;
	} else {
		failed++;
		printf("FAIL %s: \"%s\"\n", what, value != NULL ? value : "(absent)");
	}
}

/* want: the token expected, or NULL for want_status != BEARER_OK */
static void one(const char *value, enum bearer_status want_status, const char *want)
{
	const char *token = NULL;
	size_t len = value != NULL ? strlen(value) : 0, token_len = 0;
	enum bearer_status got = bearer_parse(&value, &len, value != NULL ? 1 : 0, &token, &token_len);

	check(got == want_status &&
	          (want == NULL || (token_len == strlen(want) && memcmp(token, want, token_len) == 0)),
	      "bearer_parse", value);
}

int main(void)
{
	const char *two[] = {"Bearer abc", "Bearer abc"};
	size_t two_lens[] = {10, 10};
	const char *token;
	size_t token_len;
	char long_value[BEARER_TOKEN_MAX + 16], cred[CREDENTIAL_MAX + 1];

	one(NULL, BEARER_ABSENT, NULL);
	one("Bearer abc", BEARER_OK, "abc");
	one("bearer abc", BEARER_OK, "abc");
	one("BEARER abc", BEARER_OK, "abc");
	one("  Bearer   abc  ", BEARER_OK, "abc");
	one("Bearer\tabc", BEARER_OK, "abc");
	one("Bearer a-b.c_d~e+f/g==", BEARER_OK, "a-b.c_d~e+f/g==");
	one("Bearer abc=", BEARER_OK, "abc=");
	one("", BEARER_MALFORMED, NULL);
	one("Bearer", BEARER_MALFORMED, NULL);
	one("Bearer ", BEARER_MALFORMED, NULL);
	one("Bearerabc", BEARER_MALFORMED, NULL);
	one("Basic dXNlcjpwYXNz", BEARER_MALFORMED, NULL);
	one("Bearer abc def", BEARER_MALFORMED, NULL);
	one("Bearer abc,def", BEARER_MALFORMED, NULL);
	one("Bearer =abc", BEARER_MALFORMED, NULL);
	one("Bearer ab=c", BEARER_MALFORMED, NULL);
	one("Bearer a\"b", BEARER_MALFORMED, NULL);
	one("Bearer abc\r", BEARER_MALFORMED, NULL);
	one("Bearer\xc3\xa9 abc", BEARER_MALFORMED, NULL);
	one("Token abc", BEARER_MALFORMED, NULL);
	one("Bearer abc, Bearer def", BEARER_MALFORMED, NULL);

	memcpy(long_value, "Bearer ", 7);
	memset(long_value + 7, 'a', BEARER_TOKEN_MAX);
	long_value[7 + BEARER_TOKEN_MAX] = '\0';
	one(long_value, BEARER_OK, long_value + 7);
	long_value[7 + BEARER_TOKEN_MAX] = 'a';
	long_value[8 + BEARER_TOKEN_MAX] = '\0';
	one(long_value, BEARER_MALFORMED, NULL);

	check(bearer_parse(two, two_lens, 2, &token, &token_len) == BEARER_MALFORMED,
	      "two Authorization lines", "Bearer abc / Bearer abc");

	/* Values are not NUL-terminated: a parse must stop at the length. */
	{
		const char *v = "Bearer abcXYZ";
		size_t len = 10;
		check(bearer_parse(&v, &len, 1, &token, &token_len) == BEARER_OK && token_len == 3,
		      "value cut at its length", v);
	}

	/* SHA-256("abc") is the FIPS 180-2 example. */
	bearer_token_credential("abc", 3, cred);
	check(strcmp(cred, "token:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad") ==
	          0,
	      "token credential of abc", cred);
	bearer_cert_credential((const unsigned char *)"abc", 3, cred);
	check(strcmp(cred, "cert:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad") ==
	          0,
	      "cert credential of abc", cred);

	printf("%d passed, %d failed\n", passed, failed);
	return failed != 0;
}
