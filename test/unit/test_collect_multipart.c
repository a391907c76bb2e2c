/*
 * Unit tests of collect/multipart.c: where each message of a read's body starts and ends, and which
 * bodies are refused (a refused body is read again, never confirmed).
 * UNIT_SOURCES: collect/multipart.c
 * UNIT_CFLAGS: -Icollect
 *
 * Seen failing: with skip_string() accepting raw control characters, "a raw newline in a string"
 * failed (a message would have been split over two lines of the command sink's input).
 */
#include <stdio.h>
#include <string.h>

#include "multipart.h"

static int passed, failed;

static void expect(const char *name, const char *body, int want, const char *first)
{
	size_t starts[16], lens[16];
	const char *err;
	int n = batch_scan(body, strlen(body), starts, lens, 10, &err);
	int ok = n == want;
	if (ok && n > 0 && first)
		ok = lens[0] == strlen(first) && memcmp(body + starts[0], first, lens[0]) == 0;
	if (ok && n < 0)
		ok = err != NULL;
	if (ok) {
		passed++;
	} else {
		failed++;
		printf("FAIL %s: got %d (%s), want %d\n", name, n, n < 0 ? err : "", want);
	}
}

int main(void)
{
	expect("one object", "{\"endToEndId\":\"E1\",\"valor\":90.20}", 1, "{\"endToEndId\":\"E1\",\"valor\":90.20}");
	expect("array of one", "[{\"a\":1}]", 1, "{\"a\":1}");
	expect("array of three, whitespace", " [ {\"a\":1} ,\n{\"b\":[1,2,{\"c\":null}]}, {\"d\":\"x\"} ] \n", 3, "{\"a\":1}");
	expect("escapes and brackets in strings", "[{\"n\":\"a]\\\"}{\\\\\\u00e7\"}]", 1, NULL);
	expect("utf-8 kept as is", "[{\"nome\":\"Flávio José\"}]", 1, NULL);
	expect("ten", "[{},{},{},{},{},{},{},{},{},{}]", 10, "{}");
	expect("eleven is more than asked", "[{},{},{},{},{},{},{},{},{},{},{}]", -1, NULL);
	expect("empty array", "[]", -1, NULL);
	expect("empty body", "", -1, NULL);
	expect("not an object", "[1]", -1, NULL);
	expect("string", "\"x\"", -1, NULL);
	expect("unterminated array", "[{\"a\":1}", -1, NULL);
	expect("unterminated object", "[{\"a\":1]", -1, NULL);
	expect("unterminated string", "[{\"a\":\"1}]", -1, NULL);
	expect("trailing comma", "[{\"a\":1},]", -1, NULL);
	expect("missing comma", "[{\"a\":1}{\"b\":2}]", -1, NULL);
	expect("bytes after the end", "[{\"a\":1}] x", -1, NULL);
	expect("a raw newline in a string", "[{\"a\":\"x\ny\"}]", -1, NULL);
	expect("a bad escape", "[{\"a\":\"\\x\"}]", -1, NULL);
	expect("a short unicode escape", "[{\"a\":\"\\u12\"}]", -1, NULL);
	expect("a key without a value", "[{\"a\"}]", -1, NULL);
	expect("a key that is not a string", "[{a:1}]", -1, NULL);
	char deep[200] = "[{\"a\":";
	for (int i = 0; i < 40; i++)
		strcat(deep, "[");
	expect("too deep", deep, -1, NULL);
	printf("%d passed, %d failed\n", passed, failed);
	return failed != 0;
}
