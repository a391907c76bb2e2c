/*
 * json_check.h — a tiny strict RFC 8259 validator for the fuzzing harnesses (header-only).
 *
 * json_check(s, len, strict_utf8) returns 1 when s[0..len) is exactly one JSON value (optional
 * whitespace around it). With strict_utf8, every byte sequence inside strings must be well-formed
 * UTF-8 (no overlongs, no surrogates, <= U+10FFFF) and control characters must be escaped; without
 * it, bytes >= 0x80 are accepted as they are (lexical validity only).
 *
 * json_decode_string(s, len, out, cap) decodes one JSON string (quotes included in s) into out and
 * returns the decoded length, or -1. Only \uXXXX escapes below 0x80 are decoded to one byte (that is
 * all the renderer writes); others make it return -2.
 */
#ifndef PIX_FUZZ_JSON_CHECK_H
#define PIX_FUZZ_JSON_CHECK_H

#include <stddef.h>
#include <string.h>

struct jc {
	const unsigned char *p, *end;
	int strict;
	int depth;
};

static int jc_value(struct jc *c);

static void jc_ws(struct jc *c)
{
	while (c->p < c->end && (*c->p == ' ' || *c->p == '\t' || *c->p == '\n' || *c->p == '\r'))
		c->p++;
}

static int jc_hex(unsigned char ch)
{
	return (ch >= '0' && ch <= '9') || (ch >= 'a' && ch <= 'f') || (ch >= 'A' && ch <= 'F');
}

/* One UTF-8 sequence starting at c->p (a byte >= 0x80); advances past it. */
static int jc_utf8(struct jc *c)
{
	const unsigned char *p = c->p;
	size_t left = c->end - p;
	unsigned cp;
	int n;

	if (p[0] >= 0xc2 && p[0] <= 0xdf) {
		n = 2;
		cp = p[0] & 0x1f;
	} else if (p[0] >= 0xe0 && p[0] <= 0xef) {
		n = 3;
		cp = p[0] & 0x0f;
	} else if (p[0] >= 0xf0 && p[0] <= 0xf4) {
		n = 4;
		cp = p[0] & 0x07;
	} else {
		return 0;
	}
	if (left < (size_t)n)
		return 0;
	for (int i = 1; i < n; i++) {
		if ((p[i] & 0xc0) != 0x80)
			return 0;
		cp = (cp << 6) | (p[i] & 0x3f);
	}
	if ((n == 3 && cp < 0x800) || (n == 4 && cp < 0x10000) || cp > 0x10ffff ||
	    (cp >= 0xd800 && cp <= 0xdfff))
		return 0;
	c->p += n;
	return 1;
}

static int jc_string(struct jc *c)
{
	if (c->p >= c->end || *c->p != '"')
		return 0;
	c->p++;
	while (c->p < c->end) {
		unsigned char ch = *c->p;
		if (ch == '"') {
			c->p++;
			return 1;
		}
		if (ch < 0x20)
			return 0; /* control characters must be escaped (both modes) */
		if (ch == '\\') {
			c->p++;
			if (c->p >= c->end)
				return 0;
			ch = *c->p;
			if (ch == 'u') {
				if (c->end - c->p < 5 || !jc_hex(c->p[1]) || !jc_hex(c->p[2]) || !jc_hex(c->p[3]) ||
				    !jc_hex(c->p[4]))
					return 0;
				c->p += 5;
			} else if (strchr("\"\\/bfnrt", ch) != NULL && ch != '\0') {
				c->p++;
			} else {
				return 0;
			}
		} else if (ch >= 0x80 && c->strict) {
			if (!jc_utf8(c))
				return 0;
		} else {
			c->p++;
		}
	}
	return 0;
}

static int jc_digits(struct jc *c)
{
	const unsigned char *start = c->p;
	while (c->p < c->end && *c->p >= '0' && *c->p <= '9')
		c->p++;
	return c->p > start;
}

static int jc_number(struct jc *c)
{
	if (c->p < c->end && *c->p == '-')
		c->p++;
	if (c->p < c->end && *c->p == '0')
		c->p++;
	else if (!jc_digits(c))
		return 0;
	if (c->p < c->end && *c->p == '.') {
		c->p++;
		if (!jc_digits(c))
			return 0;
	}
	if (c->p < c->end && (*c->p == 'e' || *c->p == 'E')) {
		c->p++;
		if (c->p < c->end && (*c->p == '+' || *c->p == '-'))
			c->p++;
		if (!jc_digits(c))
			return 0;
	}
	return 1;
}

static int jc_literal(struct jc *c, const char *lit)
{
	size_t n = strlen(lit);
	if ((size_t)(c->end - c->p) < n || memcmp(c->p, lit, n) != 0)
		return 0;
	c->p += n;
	return 1;
}

static int jc_container(struct jc *c, unsigned char close, int object)
{
	if (++c->depth > 64)
		return 0;
	c->p++;
	jc_ws(c);
	if (c->p < c->end && *c->p == close) {
		c->p++;
		c->depth--;
		return 1;
	}
	for (;;) {
		jc_ws(c);
		if (object) {
			if (!jc_string(c))
				return 0;
			jc_ws(c);
			if (c->p >= c->end || *c->p != ':')
				return 0;
			c->p++;
			jc_ws(c);
		}
		if (!jc_value(c))
			return 0;
		jc_ws(c);
		if (c->p < c->end && *c->p == ',') {
			c->p++;
			continue;
		}
		if (c->p < c->end && *c->p == close) {
			c->p++;
			c->depth--;
			return 1;
		}
		return 0;
	}
}

static int jc_value(struct jc *c)
{
	if (c->p >= c->end)
		return 0;
	switch (*c->p) {
	case '{':
		return jc_container(c, '}', 1);
	case '[':
		return jc_container(c, ']', 0);
	case '"':
		return jc_string(c);
	case 't':
		return jc_literal(c, "true");
	case 'f':
		return jc_literal(c, "false");
	case 'n':
		return jc_literal(c, "null");
	default:
		return jc_number(c);
	}
}

static int json_check(const char *s, size_t len, int strict_utf8)
{
	struct jc c = {(const unsigned char *)s, (const unsigned char *)s + len, strict_utf8, 0};

	jc_ws(&c);
	if (!jc_value(&c))
		return 0;
	jc_ws(&c);
	return c.p == c.end;
}

static long json_decode_string(const char *s, size_t len, char *out, size_t cap)
{
	size_t i = 1, n = 0;

	if (len < 2 || s[0] != '"' || s[len - 1] != '"')
		return -1;
	while (i < len - 1) {
		char ch = s[i];
		if (ch == '\\') {
			char e = s[++i];
			static const char from[] = "\"\\/bfnrt", to[] = "\"\\/\b\f\n\r\t";
			const char *k = strchr(from, e);
			if (e == 'u') {
				unsigned v = 0;
				for (int j = 1; j <= 4; j++) {
					char h = s[i + j];
					v = v * 16 + (h <= '9' ? h - '0' : (h | 0x20) - 'a' + 10);
				}
				if (v >= 0x80)
					return -2;
				ch = (char)v;
				i += 4;
			} else if (k != NULL && e != '\0') {
				ch = to[k - from];
			} else {
				return -1;
			}
		}
		if (n >= cap)
			return -1;
		out[n++] = ch;
		i++;
	}
	return (long)n;
}

#endif
