/*
 * shim/tests/test_accept.c — unit tests of Accept / Accept-Encoding negotiation (accept.c).
 * Not part of pixd. Build and run from the repository root:
 *
 *   cc -DH2O_USE_LIBUV=0 -Ishim -I$(pg_config --includedir) -o /tmp/test_accept \
 *      shim/tests/test_accept.c shim/accept.c -lh2o-evloop -lssl -lcrypto && /tmp/test_accept
 *
 * Prints each failing case and "N passed, N failed"; exits non-zero on a failure.
 */
#include <stdio.h>
#include <string.h>
#include "accept.h"

static int passed, failed;

static void accept_case(const char *value, enum accept_choice want)
{
	size_t len = value != NULL ? strlen(value) : 0;
	enum accept_choice got = accept_negotiate_values(&value, &len, value != NULL ? 1 : 0);

	if (got == want) {
		passed++;
	} else {
		failed++;
		printf("FAIL Accept: %s -> %d, want %d\n", value != NULL ? value : "(absent)", got, want);
	}
}

static void gzip_case(const char *value, int want)
{
	size_t len = value != NULL ? strlen(value) : 0;
	int got = accept_gzip_values(&value, &len, value != NULL ? 1 : 0);

	if (got == want) {
		passed++;
	} else {
		failed++;
		printf("FAIL Accept-Encoding: %s -> %d, want %d\n", value != NULL ? value : "(absent)", got,
		       want);
	}
}

int main(void)
{
	const char *two[] = {"text/html", "multipart/json"};
	size_t two_lens[] = {9, 14};

	accept_case(NULL, ACCEPT_SINGLE);
	accept_case("", ACCEPT_SINGLE);
	accept_case("  ,  ", ACCEPT_SINGLE);
	accept_case("*/*", ACCEPT_SINGLE);
	accept_case("application/*", ACCEPT_SINGLE);
	accept_case("application/json", ACCEPT_SINGLE);
	accept_case("APPLICATION/JSON", ACCEPT_SINGLE);
	accept_case("application/json; charset=utf-8", ACCEPT_SINGLE);
	accept_case("multipart/json", ACCEPT_MULTI);
	accept_case("Multipart/JSON", ACCEPT_MULTI);
	accept_case("multipart/*", ACCEPT_MULTI);
	accept_case("text/html", ACCEPT_NOTHING);
	accept_case("text/*", ACCEPT_NOTHING);
	accept_case("application/xml", ACCEPT_NOTHING);
	accept_case("application/json;q=0", ACCEPT_NOTHING);
	accept_case("application/json;q=0, multipart/json;q=0", ACCEPT_NOTHING);
	accept_case("*/*;q=0", ACCEPT_NOTHING);
	accept_case("*/*;q=0, multipart/json", ACCEPT_MULTI);
	accept_case("application/json;q=0, */*", ACCEPT_MULTI);
	accept_case("application/json;q=0.5, multipart/json", ACCEPT_MULTI);
	accept_case("application/json, multipart/json;q=0.9", ACCEPT_SINGLE);
	accept_case("multipart/json;q=0.9, application/json;q=0.91", ACCEPT_SINGLE);
	accept_case("multipart/json, */*", ACCEPT_MULTI); /* explicit beats wildcard on a tie */
	accept_case("*/*, multipart/json", ACCEPT_MULTI);
	accept_case("application/json, multipart/json", ACCEPT_SINGLE); /* tie: first listed */
	accept_case("multipart/json, application/json", ACCEPT_MULTI);
	accept_case("multipart/json;q=1.000", ACCEPT_MULTI);
	accept_case("multipart/json;q=1.001", ACCEPT_NOTHING); /* malformed q: element ignored */
	accept_case("multipart/json;q=2", ACCEPT_NOTHING);
	accept_case("multipart/json;q=abc, application/json", ACCEPT_SINGLE);
	accept_case("multipart/json ; q = 0.5 , application/json;q=0.4", ACCEPT_MULTI);
	accept_case("text/plain; x=\"a,b\", multipart/json", ACCEPT_MULTI);
	accept_case("application/json;q=0.0001", ACCEPT_NOTHING);
	accept_case("garbage", ACCEPT_NOTHING);
	accept_case("/", ACCEPT_NOTHING);
	accept_case("*/json", ACCEPT_NOTHING);
	accept_case("application/json;q=0, application/*", ACCEPT_NOTHING); /* most specific wins */
	accept_case("application/*;q=0, application/json", ACCEPT_SINGLE);
	accept_case(";q=1", ACCEPT_NOTHING);
	if (accept_negotiate_values(two, two_lens, 2) == ACCEPT_MULTI)
		passed++;
	else {
		failed++;
		printf("FAIL two Accept lines\n");
	}

	gzip_case(NULL, 0);
	gzip_case("", 0);
	gzip_case("gzip", 1);
	gzip_case("GZIP", 1);
	gzip_case("x-gzip", 1);
	gzip_case("gzip;q=0", 0);
	gzip_case("gzip;q=0.001", 1);
	gzip_case("deflate, gzip;q=0.5, br", 1);
	gzip_case("br, deflate", 0);
	gzip_case("*", 1);
	gzip_case("*;q=0", 0);
	gzip_case("gzip;q=0, *", 0);
	gzip_case("*;q=0, gzip", 1);
	gzip_case("identity", 0);
	gzip_case("gzip;q=x", 0);

	printf("%d passed, %d failed\n", passed, failed);
	return failed != 0;
}
