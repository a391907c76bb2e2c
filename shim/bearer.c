/*
 * bearer.c — Authorization: Bearer parsing (RFC 6750 §2.1) and credential digests.
 *
 * Strict on purpose: one header, the Bearer scheme, one token of the b64token alphabet, nothing
 * after it but whitespace. Anything else is BEARER_MALFORMED (401), never a guess: a lenient
 * parser is where two components start to disagree about who the caller is.
 */
#include <string.h>
#include <openssl/sha.h>
#include "bearer.h"

static int is_ows(char c);
static int is_token_char(char c);
static void credential(const char *prefix, const unsigned char *bytes, size_t len, char *out);

static int is_ows(char c)
{
	return c == ' ' || c == '\t';
}

static int is_token_char(char c)
{
	return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' ||
	       c == '.' || c == '_' || c == '~' || c == '+' || c == '/';
}

enum bearer_status bearer_parse(const char *const *values, const size_t *lens, size_t n,
                                const char **token, size_t *token_len)
{
	static const char scheme[] = "bearer";
	const char *p, *end, *start;

	if (n == 0)
		return BEARER_ABSENT;
	/* Two Authorization lines are two credentials: which one would the database see? */
	if (n > 1)
		return BEARER_MALFORMED;
	p = values[0];
	end = p + lens[0];
	while (p < end && is_ows(*p))
		p++;
	while (end > p && is_ows(end[-1]))
		end--;
	if ((size_t)(end - p) < sizeof(scheme) - 1)
		return BEARER_MALFORMED;
	for (size_t i = 0; i < sizeof(scheme) - 1; i++, p++)
		if ((*p | 0x20) != scheme[i])
			return BEARER_MALFORMED;
	/* RFC 6750 says one SP; several, or a tab, are read as one, as HTTP parsers commonly do. */
	if (p == end || !is_ows(*p))
		return BEARER_MALFORMED;
	while (p < end && is_ows(*p))
		p++;
	start = p;
	while (p < end && is_token_char(*p))
		p++;
	if (p == start)
		return BEARER_MALFORMED;
	while (p < end && *p == '=')
		p++;
	if (p != end || (size_t)(end - start) > BEARER_TOKEN_MAX)
		return BEARER_MALFORMED;
	*token = start;
	*token_len = end - start;
	return BEARER_OK;
}

static void credential(const char *prefix, const unsigned char *bytes, size_t len, char *out)
{
	static const char hex[] = "0123456789abcdef";
	unsigned char md[SHA256_DIGEST_LENGTH];
	size_t k = strlen(prefix);

	SHA256(bytes, len, md);
	memcpy(out, prefix, k);
	for (size_t i = 0; i < sizeof(md); i++) {
		out[k++] = hex[md[i] >> 4];
		out[k++] = hex[md[i] & 15];
	}
	out[k] = '\0';
}

void bearer_token_credential(const char *token, size_t len, char *out)
{
	credential("token:", (const unsigned char *)token, len, out);
}

void bearer_cert_credential(const unsigned char *der, size_t len, char *out)
{
	credential("cert:", der, len, out);
}
