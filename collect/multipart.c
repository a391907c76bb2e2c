/*
 * multipart.c — the body of a read, scanned: a JSON array of message objects (multipart/json) or
 * one object. The scanner finds where each message starts and ends; it does not interpret them.
 * The PostgreSQL sink hands the body to jsonb (which validates it fully); the command sink writes
 * each message as one line. So what the scanner must guarantee is structure: balanced brackets
 * outside strings, terminated strings without raw control characters (a raw newline would split a
 * line), nothing after the end. Pure C, no allocation: unit tests in test/unit/test_collect_multipart.c.
 */
#include <stddef.h>
#include <string.h>

#include "multipart.h"

#define MAX_DEPTH 32

static size_t skip_ws(const char *s, size_t len, size_t i)
{
	while (i < len && (s[i] == ' ' || s[i] == '\t' || s[i] == '\n' || s[i] == '\r'))
		i++;
	return i;
}

/* A string starting at s[i] == '"': the index after its closing quote, or 0 on error. */
static size_t skip_string(const char *s, size_t len, size_t i)
{
	for (i++; i < len; i++) {
		unsigned char ch = (unsigned char)s[i];
		if (ch == '"')
			return i + 1;
		if (ch < 0x20)
			return 0;
		if (ch == '\\') {
			if (++i >= len)
				return 0;
			if (s[i] == 'u') {
				for (int k = 1; k <= 4; k++)
					if (i + k >= len || !strchr("0123456789abcdefABCDEF", s[i + k]) || s[i + k] == '\0')
						return 0;
				i += 4;
			} else if (!strchr("\"\\/bfnrt", s[i]) || s[i] == '\0') {
				return 0;
			}
		}
	}
	return 0;
}

/* One JSON value starting at s[i] (no leading whitespace): the index after it, or 0 on error.
 * Scalars are taken as runs of the characters they may hold; jsonb checks them properly. */
static size_t skip_value(const char *s, size_t len, size_t i, int depth)
{
	if (i >= len || depth > MAX_DEPTH)
		return 0;
	char open = s[i];
	if (open == '"')
		return skip_string(s, len, i);
	if (open != '{' && open != '[') {
		size_t j = i;
		while (j < len && strchr("0123456789+-.eEtruefalsn", s[j]) && s[j] != '\0')
			j++;
		return j > i ? j : 0;
	}
	char close = open == '{' ? '}' : ']';
	i = skip_ws(s, len, i + 1);
	if (i < len && s[i] == close)
		return i + 1;
	for (;;) {
		if (open == '{') {
			if (i >= len || s[i] != '"' || (i = skip_string(s, len, i)) == 0)
				return 0;
			i = skip_ws(s, len, i);
			if (i >= len || s[i] != ':')
				return 0;
			i = skip_ws(s, len, i + 1);
		}
		if ((i = skip_value(s, len, i, depth + 1)) == 0)
			return 0;
		i = skip_ws(s, len, i);
		if (i >= len)
			return 0;
		if (s[i] == close)
			return i + 1;
		if (s[i] != ',')
			return 0;
		i = skip_ws(s, len, i + 1);
	}
}

/*
 * Finds the messages of a body: starts[k], lens[k] for k < the count returned (at most max).
 * -1 with *err set when the body is not an object or a non-empty array of at most max objects.
 */
int batch_scan(const char *s, size_t len, size_t *starts, size_t *lens, int max, const char **err)
{
	size_t i = skip_ws(s, len, 0), end;
	int n = 0;
	*err = NULL;
	if (i < len && s[i] == '{') {
		if ((end = skip_value(s, len, i, 1)) == 0) {
			*err = "the message is not well-formed JSON";
			return -1;
		}
		starts[0] = i;
		lens[0] = end - i;
		n = 1;
		i = end;
	} else if (i < len && s[i] == '[') {
		i = skip_ws(s, len, i + 1);
		while (i < len && s[i] != ']') {
			if (s[i] != '{') {
				*err = "an element of the batch is not a JSON object";
				return -1;
			}
			if (n == max) {
				*err = "the batch holds more messages than asked for";
				return -1;
			}
			if ((end = skip_value(s, len, i, 1)) == 0) {
				*err = "a message of the batch is not well-formed JSON";
				return -1;
			}
			starts[n] = i;
			lens[n] = end - i;
			n++;
			i = skip_ws(s, len, end);
			if (i < len && s[i] == ',') {
				i = skip_ws(s, len, i + 1);
				if (i < len && s[i] == ']') {
					*err = "a trailing comma in the batch";
					return -1;
				}
			} else if (i >= len || s[i] != ']') {
				*err = "the batch is not a well-formed JSON array";
				return -1;
			}
		}
		if (i >= len) {
			*err = "the batch is not a well-formed JSON array";
			return -1;
		}
		i++;
		if (n == 0) {
			*err = "a 200 answer with an empty batch";
			return -1;
		}
	} else {
		*err = "the body is neither a JSON object nor a JSON array";
		return -1;
	}
	if (skip_ws(s, len, i) != len) {
		*err = "bytes after the end of the batch";
		return -1;
	}
	return n;
}
