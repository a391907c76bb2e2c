/*
 * fuzz_bearer.c — libFuzzer harness for the Authorization header parser (shim/bearer.c).
 *
 * Input: header lines separated by '\n' (at most 4), each its own exact-size allocation (not
 * NUL-terminated, so ASan catches any read past a value). Checked:
 *   - no crash, no over-read; the status is one of the three;
 *   - BEARER_OK only for exactly one line, and the token lies inside it, is 1..BEARER_TOKEN_MAX
 *     bytes of the b64token alphabet (RFC 6750) with '=' only at its end;
 *   - round trip: "Bearer " + token parses to the same token, and so does the scheme in any case;
 *   - the credential is "token:" + 64 lowercase hex digits, and the same token gives the same one.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bearer.h"

#define MAX_LINES 4

static void fail(const char *what, const uint8_t *data, size_t size)
{
	fprintf(stderr, "fuzz_bearer: %s on \"%.*s\"\n", what, (int)size, (const char *)data);
	abort();
}

static int token_ok(const char *t, size_t len)
{
	size_t i = 0;

	if (len == 0 || len > BEARER_TOKEN_MAX)
		return 0;
	while (i < len &&
	       strchr("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~+/", t[i]) !=
	           NULL &&
	       t[i] != '\0')
		i++;
	if (i == 0)
		return 0;
	while (i < len && t[i] == '=')
		i++;
	return i == len;
}

static void check_credential(const char *token, size_t len, const uint8_t *data, size_t size)
{
	char a[CREDENTIAL_MAX + 1], b[CREDENTIAL_MAX + 1];

	bearer_token_credential(token, len, a);
	bearer_token_credential(token, len, b);
	if (strlen(a) != 6 + 64 || memcmp(a, "token:", 6) != 0 || strcmp(a, b) != 0)
		fail("credential is not token: + 64 hex", data, size);
	for (size_t i = 6; i < 70; i++)
		if (!((a[i] >= '0' && a[i] <= '9') || (a[i] >= 'a' && a[i] <= 'f')))
			fail("credential is not lowercase hex", data, size);
}

static void round_trip(const char *token, size_t len, const uint8_t *data, size_t size)
{
	static const char *schemes[] = {"Bearer ", "bEaReR  "};
	char *v;
	const char *t2;
	size_t vlen, t2len;

	for (size_t s = 0; s < 2; s++) {
		vlen = strlen(schemes[s]) + len;
		v = malloc(vlen);
		memcpy(v, schemes[s], strlen(schemes[s]));
		memcpy(v + strlen(schemes[s]), token, len);
		if (bearer_parse((const char *const *)&v, &vlen, 1, &t2, &t2len) != BEARER_OK ||
		    t2len != len || memcmp(t2, token, len) != 0)
			fail("re-serialized header does not parse to the same token", data, size);
		free(v);
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char *v[MAX_LINES];
	size_t lens[MAX_LINES], n = 0, start = 0, token_len = 0;
	const char *token = NULL;
	enum bearer_status st;

	for (size_t i = 0; i <= size && n < MAX_LINES; i++) {
		if (i == size || data[i] == '\n') {
			lens[n] = i - start;
			v[n] = malloc(lens[n] + 1); /* +1: a 0-length value still has a pointer */
			memcpy(v[n], data + start, lens[n]);
			n++;
			start = i + 1;
		}
	}
	st = bearer_parse((const char *const *)v, lens, n, &token, &token_len);
	if (st != BEARER_ABSENT && st != BEARER_OK && st != BEARER_MALFORMED)
		fail("unknown status", data, size);
	if (st == BEARER_ABSENT && n != 0)
		fail("ABSENT with a header line", data, size);
	if (st == BEARER_OK) {
		if (n != 1)
			fail("OK with several lines", data, size);
		if (token < v[0] || token + token_len > v[0] + lens[0])
			fail("token outside its value", data, size);
		if (!token_ok(token, token_len))
			fail("token outside the b64token alphabet", data, size);
		round_trip(token, token_len, data, size);
		check_credential(token, token_len, data, size);
	}
	for (size_t i = 0; i < n; i++)
		free(v[i]);
	return 0;
}
