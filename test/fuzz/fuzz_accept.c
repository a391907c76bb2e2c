/*
 * fuzz_accept.c — libFuzzer harness for the shim's content negotiation (shim/accept.c):
 * accept_negotiate_values and accept_gzip_values on arbitrary header values.
 *
 * Input: header lines separated by '\n' (at most 16, like the shim). Checked:
 *   - no crash, no over-read (each value is its own exact-size allocation, not NUL-terminated);
 *   - the result is one of ACCEPT_NOTHING, ACCEPT_SINGLE, ACCEPT_MULTI, and gzip is 0 or 1;
 *   - metamorphic properties RFC 9110 implies, when the input holds no quote (quotes make ',' and
 *     case significant): the lines joined with ',' into one line negotiate the same (a header over
 *     several lines is one list); upper-casing everything negotiates the same (tokens and media
 * types are case-insensitive); a blank input means "anything" (single).
 */
#include <ctype.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "accept.h"

#define MAX_LINES 16

struct lines {
	char *v[MAX_LINES];
	size_t len[MAX_LINES];
	size_t n;
};

static void split(const uint8_t *data, size_t size, struct lines *l)
{
	size_t start = 0;

	l->n = 0;
	for (size_t i = 0; i <= size && l->n < MAX_LINES; i++) {
		if (i == size || data[i] == '\n') {
			l->len[l->n] = i - start;
			l->v[l->n] = malloc(i - start + 1); /* +1 so a 0-length value has a pointer */
			memcpy(l->v[l->n], data + start, i - start);
			l->n++;
			start = i + 1;
		}
	}
}

static void release(struct lines *l)
{
	for (size_t i = 0; i < l->n; i++)
		free(l->v[i]);
}

static void fail(const char *what, const uint8_t *data, size_t size)
{
	fprintf(stderr, "fuzz_accept: %s on \"%.*s\"\n", what, (int)size, (const char *)data);
	abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct lines l;
	enum accept_choice a, b;
	int g, g2, quoted = memchr(data, '"', size) != NULL, blank = 1;

	split(data, size, &l);
	a = accept_negotiate_values((const char *const *)l.v, l.len, l.n);
	g = accept_gzip_values((const char *const *)l.v, l.len, l.n);
	if (a != ACCEPT_NOTHING && a != ACCEPT_SINGLE && a != ACCEPT_MULTI)
		fail("negotiate returned an unknown value", data, size);
	if (g != 0 && g != 1)
		fail("gzip returned neither 0 nor 1", data, size);
	for (size_t i = 0; i < size; i++)
		if (data[i] != ' ' && data[i] != '\t' && data[i] != ',' && data[i] != '\n')
			blank = 0;
	if (blank && a != ACCEPT_SINGLE)
		fail("a blank Accept is not 'anything'", data, size);

	if (!quoted && size < 4096) {
		/* the same list on one line */
		size_t total = 0, k = 0;
		char *joined;
		const char *jv[1];
		size_t jl[1];
		for (size_t i = 0; i < l.n; i++)
			total += l.len[i] + 1;
		joined = malloc(total + 1);
		for (size_t i = 0; i < l.n; i++) {
			memcpy(joined + k, l.v[i], l.len[i]);
			k += l.len[i];
			if (i + 1 < l.n)
				joined[k++] = ',';
		}
		jv[0] = joined;
		jl[0] = k;
		{
			/* only when every line was taken (the shim ignores lines beyond 16) */
			size_t newlines = 0;
			for (size_t i = 0; i < size; i++)
				newlines += data[i] == '\n';
			if (newlines < MAX_LINES) {
				b = accept_negotiate_values(jv, jl, 1);
				g2 = accept_gzip_values(jv, jl, 1);
				if (a != b)
					fail("lines joined with ',' negotiate differently", data, size);
				if (g != g2)
					fail("lines joined with ',' give another gzip answer", data, size);
				for (size_t i = 0; i < k; i++)
					joined[i] = (char)toupper((unsigned char)joined[i]);
				b = accept_negotiate_values(jv, jl, 1);
				g2 = accept_gzip_values(jv, jl, 1);
				if (a != b)
					fail("upper-cased Accept negotiates differently", data, size);
				if (g != g2)
					fail("upper-cased Accept-Encoding gives another gzip answer", data, size);
			}
		}
		free(joined);
	}
	release(&l);
	return 0;
}
