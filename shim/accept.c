/*
 * accept.c — parses Accept and Accept-Encoding (RFC 9110 §12.4–12.5.3).
 *
 * An element is "name *( OWS ; OWS param )"; commas and semicolons inside quoted strings do not
 * split. A malformed element (bad media range, bad q) is ignored, as if it were not there.
 * A representation takes the weight of the most specific range matching it; between the two
 * representations the higher weight wins, then the more specific range, then the earlier element,
 * and on a full tie (e.g. "*" + "/" + "*" alone) the single-message one, the contract's default.
 */
#include <string.h>
#include <strings.h>
#include "accept.h"

struct element {
	const char *name;
	size_t name_len;
	int q; /* thousandths, 0..1000 */
};

/* How a representation is matched so far: the most specific range that names it. */
struct match {
	int specificity; /* -1 none, 0 "* / *", 1 "type/ *", 2 "type/subtype" */
	int q;
	size_t position;
};

static const char *skip_to(const char *p, const char *end, char sep);
static void trim(const char **p, const char **end);
static int parse_element(const char *p, const char *end, struct element *e);
static int parse_qvalue(const char *s, size_t len);
static int media_specificity(const struct element *e, const char *type, const char *subtype);
static void consider(struct match *m, int specificity, int q, size_t position);
static int iequal(const char *a, size_t alen, const char *b);
static size_t header_values(h2o_req_t *req, const h2o_token_t *token, const char **values,
                            size_t *lens, size_t max);

/* The next occurrence of sep outside a quoted string, or end. */
static const char *skip_to(const char *p, const char *end, char sep)
{
	int quoted = 0;

	for (; p < end; p++) {
		if (quoted) {
			if (*p == '\\' && p + 1 < end)
				p++;
			else if (*p == '"')
				quoted = 0;
		} else if (*p == '"') {
			quoted = 1;
		} else if (*p == sep) {
			break;
		}
	}
	return p;
}

static void trim(const char **p, const char **end)
{
	while (*p < *end && (**p == ' ' || **p == '\t'))
		(*p)++;
	while (*end > *p && ((*end)[-1] == ' ' || (*end)[-1] == '\t'))
		(*end)--;
}

static int iequal(const char *a, size_t alen, const char *b)
{
	return alen == strlen(b) && strncasecmp(a, b, alen) == 0;
}

/* 0 when e holds a well-formed element, -1 when it must be ignored. */
static int parse_element(const char *p, const char *end, struct element *e)
{
	const char *name_end = skip_to(p, end, ';');

	trim(&p, &name_end);
	e->name = p;
	e->name_len = name_end - p;
	e->q = 1000;
	if (e->name_len == 0)
		return -1;
	for (p = name_end; p < end;) {
		const char *param = p + 1, *param_end = skip_to(param, end, ';');
		const char *eq = memchr(param, '=', param_end - param);
		p = param_end;
		if (eq == NULL)
			continue;
		const char *key = param, *key_end = eq, *val = eq + 1, *val_end = param_end;
		trim(&key, &key_end);
		trim(&val, &val_end);
		if (iequal(key, key_end - key, "q") && (e->q = parse_qvalue(val, val_end - val)) < 0)
			return -1;
	}
	return 0;
}

/* qvalue = ( "0" [ "." 0*3DIGIT ] ) / ( "1" [ "." 0*3("0") ] ), in thousandths; -1 if malformed. */
static int parse_qvalue(const char *s, size_t len)
{
	int q, scale = 100;

	if (len == 0 || (s[0] != '0' && s[0] != '1') || (len > 1 && s[1] != '.') || len > 5)
		return -1;
	q = (s[0] - '0') * 1000;
	for (size_t i = 2; i < len; i++, scale /= 10) {
		if (s[i] < '0' || s[i] > '9')
			return -1;
		q += (s[i] - '0') * scale;
	}
	return q <= 1000 ? q : -1;
}

/* How specifically the media range e names type/subtype; -1 when it does not. */
static int media_specificity(const struct element *e, const char *type, const char *subtype)
{
	const char *slash = memchr(e->name, '/', e->name_len);
	size_t tlen, slen;

	if (slash == NULL)
		return -1;
	tlen = slash - e->name;
	slen = e->name_len - tlen - 1;
	if (iequal(e->name, tlen, "*"))
		return iequal(slash + 1, slen, "*") ? 0 : -1;
	if (!iequal(e->name, tlen, type))
		return -1;
	if (iequal(slash + 1, slen, "*"))
		return 1;
	return iequal(slash + 1, slen, subtype) ? 2 : -1;
}

static void consider(struct match *m, int specificity, int q, size_t position)
{
	if (specificity > m->specificity) {
		m->specificity = specificity;
		m->q = q;
		m->position = position;
	}
}

enum accept_choice accept_negotiate_values(const char *const *values, const size_t *lens, size_t n)
{
	struct match single = {-1, 0, 0}, multi = {-1, 0, 0};
	size_t position = 0, nonblank = 0;

	for (size_t i = 0; i < n; i++) {
		const char *p = values[i], *end = values[i] + lens[i];
		while (p < end) {
			const char *elem_end = skip_to(p, end, ',');
			const char *t = p, *t_end = elem_end;
			struct element e;
			trim(&t, &t_end);
			nonblank += t != t_end;
			if (parse_element(p, elem_end, &e) == 0) {
				consider(&single, media_specificity(&e, "application", "json"), e.q, position);
				consider(&multi, media_specificity(&e, "multipart", "json"), e.q, position);
				position++;
			}
			p = elem_end + 1;
		}
	}
	if (nonblank == 0)
		return ACCEPT_SINGLE; /* absent or blank: the client accepts anything */
	if (single.specificity < 0)
		single.q = 0;
	if (multi.specificity < 0)
		multi.q = 0;
	if (single.q == 0 && multi.q == 0)
		return ACCEPT_NOTHING;
	if (single.q != multi.q)
		return single.q > multi.q ? ACCEPT_SINGLE : ACCEPT_MULTI;
	if (single.specificity != multi.specificity)
		return single.specificity > multi.specificity ? ACCEPT_SINGLE : ACCEPT_MULTI;
	return multi.position < single.position ? ACCEPT_MULTI : ACCEPT_SINGLE;
}

int accept_gzip_values(const char *const *values, const size_t *lens, size_t n)
{
	int gzip_q = -1, star_q = -1;

	for (size_t i = 0; i < n; i++) {
		const char *p = values[i], *end = values[i] + lens[i];
		while (p < end) {
			const char *elem_end = skip_to(p, end, ',');
			struct element e;
			if (parse_element(p, elem_end, &e) == 0) {
				if (iequal(e.name, e.name_len, "gzip") || iequal(e.name, e.name_len, "x-gzip"))
					gzip_q = e.q > gzip_q ? e.q : gzip_q;
				else if (iequal(e.name, e.name_len, "*"))
					star_q = e.q;
			}
			p = elem_end + 1;
		}
	}
	return gzip_q >= 0 ? gzip_q > 0 : star_q > 0;
}

/* Collects every line of a request header (they form one list). */
static size_t header_values(h2o_req_t *req, const h2o_token_t *token, const char **values,
                            size_t *lens, size_t max)
{
	size_t n = 0;
	ssize_t cursor = -1;

	while (n < max && (cursor = h2o_find_header(&req->headers, token, cursor)) != -1) {
		values[n] = req->headers.entries[cursor].value.base;
		lens[n] = req->headers.entries[cursor].value.len;
		n++;
	}
	return n;
}

#define MAX_HEADER_LINES 16

enum accept_choice accept_negotiate(h2o_req_t *req)
{
	const char *values[MAX_HEADER_LINES];
	size_t lens[MAX_HEADER_LINES];
	size_t n = header_values(req, H2O_TOKEN_ACCEPT, values, lens, MAX_HEADER_LINES);

	return accept_negotiate_values(values, lens, n);
}

int accept_gzip(h2o_req_t *req)
{
	const char *values[MAX_HEADER_LINES];
	size_t lens[MAX_HEADER_LINES];
	size_t n = header_values(req, H2O_TOKEN_ACCEPT_ENCODING, values, lens, MAX_HEADER_LINES);

	return accept_gzip_values(values, lens, n);
}
