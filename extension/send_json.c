/*
 * send_json.c — parses the body of pix_messages_send into pix_message structs
 * (see send_json.h).
 *
 * A recursive-descent parser for exactly the message format: a body is a
 * message or an array of messages; a message is an object of known fields;
 * pagador and recebedor are objects of party fields. Recursion is therefore at
 * most three levels deep whatever the input. Every read checks the end of the
 * input first, every write the end of the arena: no input makes it read or
 * write out of bounds. It stops at the first problem, so it never has to skip
 * an unknown value.
 */
#include "send_json.h"

#include <stdbool.h>
#include <stdio.h>
#include <string.h>

/*
 * Which fields an object has seen (a bit per field), to refuse repeated keys.
 */
typedef unsigned int field_set;

typedef struct parser
{
	const char *start,
			   *p,
			   *end;
	char	   *arena,
			   *arena_end;
	pix_send_problem *problem;
} parser;

/* A string field: its JSON name and where the parsed value goes. */
typedef struct string_field
{
	const char *name;
	const char **slot;
} string_field;

static bool fail(parser *ps, const char *path, const char *sentence);
static bool fail_syntax(parser *ps, const char *path, const char *expected);
static void skip_ws(parser *ps);
static bool next_is(parser *ps, char c);
static bool put(parser *ps, char c);
static bool put_code_point(parser *ps, unsigned long cp);
static bool read_hex4(parser *ps, unsigned long *value);
static bool read_escape(parser *ps, const char *path);
static bool read_string(parser *ps, const char *path, const char **out);
static bool read_key(parser *ps, const char *path, char *key, size_t cap);
static bool read_number(parser *ps, const char **out);
static bool read_string_value(parser *ps, const char *path, const char **out);
static bool
			read_object(parser *ps, const char *path, const string_field *fields,
						int nfields, pix_message *m, bool party_level);
static const char *join(char *buf, size_t cap, const char *prefix, const char *name);
static bool read_message(parser *ps, int index, pix_message *m);

static bool
fail(parser *ps, const char *path, const char *sentence)
{
	snprintf(ps->problem->text, sizeof(ps->problem->text), "%s: %s", path,
			 sentence);
	return false;
}

static bool
fail_syntax(parser *ps, const char *path, const char *expected)
{
	snprintf(ps->problem->text, sizeof(ps->problem->text),
			 "%s: invalid JSON at byte %ld, %s", path,
			 (long) (ps->p - ps->start), expected);
	return false;
}

static void
skip_ws(parser *ps)
{
	while (ps->p < ps->end && (*ps->p == ' ' || *ps->p == '\t' ||
							   *ps->p == '\n' || *ps->p == '\r'))
		ps->p++;
}

/* Consumes c after optional whitespace when it is next. */
static bool
next_is(parser *ps, char c)
{
	skip_ws(ps);
	if (ps->p < ps->end && *ps->p == c)
	{
		ps->p++;
		return true;
	}
	return false;
}

static bool
put(parser *ps, char c)
{
	if (ps->arena >= ps->arena_end)
		return false;
	*ps->arena++ = c;
	return true;
}

/*
 * UTF-8 of a code point already known to be a scalar value (not a surrogate,
 * <= U+10FFFF).
 */
static bool
put_code_point(parser *ps, unsigned long cp)
{
	if (cp < 0x80)
		return put(ps, (char) cp);
	if (cp < 0x800)
		return put(ps, (char) (0xC0 | (cp >> 6))) &&
			put(ps, (char) (0x80 | (cp & 0x3F)));
	if (cp < 0x10000)
		return put(ps, (char) (0xE0 | (cp >> 12))) &&
			put(ps, (char) (0x80 | ((cp >> 6) & 0x3F))) &&
			put(ps, (char) (0x80 | (cp & 0x3F)));
	return put(ps, (char) (0xF0 | (cp >> 18))) &&
		put(ps, (char) (0x80 | ((cp >> 12) & 0x3F))) &&
		put(ps, (char) (0x80 | ((cp >> 6) & 0x3F))) &&
		put(ps, (char) (0x80 | (cp & 0x3F)));
}

static bool
read_hex4(parser *ps, unsigned long *value)
{
	*value = 0;
	if (ps->end - ps->p < 4)
		return false;
	for (int i = 0; i < 4; i++)
	{
		char		c = *ps->p++;
		int			digit = c >= '0' && c <= '9' ? c - '0'
		: c >= 'a' && c <= 'f' ? c - 'a' + 10
		: c >= 'A' && c <= 'F' ? c - 'A' + 10
		: -1;

		if (digit < 0)
			return false;
		*value = *value * 16 + (unsigned long) digit;
	}
	return true;
}

/*
 * After a backslash: one escape, surrogate pairs joined. U+0000 cannot be
 * stored in text.
 */
static bool
read_escape(parser *ps, const char *path)
{
	static const char from[] = "\"\\/bfnrt",
				to[] = "\"\\/\b\f\n\r\t";
	unsigned long cp,
				low;
	const char *hit;

	if (ps->p >= ps->end)
		return fail_syntax(ps, path, "unterminated string");
	hit = *ps->p != '\0' ? strchr(from, *ps->p) : NULL;
	if (hit != NULL)
	{
		ps->p++;
		return put(ps, to[hit - from]) || fail(ps, path, "too long");
	}
	if (*ps->p++ != 'u' || !read_hex4(ps, &cp))
		return fail_syntax(ps, path, "bad escape");
	if (cp >= 0xDC00 && cp <= 0xDFFF)
		return fail(ps, path, "unpaired UTF-16 surrogate in \\u escape");
	if (cp >= 0xD800 && cp <= 0xDBFF)
	{
		if (ps->end - ps->p < 2 || ps->p[0] != '\\' || ps->p[1] != 'u')
			return fail(ps, path, "unpaired UTF-16 surrogate in \\u escape");
		ps->p += 2;
		if (!read_hex4(ps, &low))
			return fail_syntax(ps, path, "bad escape");
		if (low < 0xDC00 || low > 0xDFFF)
			return fail(ps, path, "unpaired UTF-16 surrogate in \\u escape");
		cp = 0x10000 + ((cp - 0xD800) << 10) + (low - 0xDC00);
	}
	if (cp == 0)
		return fail(ps, path, "must not contain U+0000");
	return put_code_point(ps, cp) || fail(ps, path, "too long");
}

/*
 * A JSON string (the opening quote next) unescaped into the arena,
 * NUL-terminated.
 */
static bool
read_string(parser *ps, const char *path, const char **out)
{
	*out = ps->arena;
	ps->p++;					/* the opening quote, checked by the caller */
	while (ps->p < ps->end && *ps->p != '"')
	{
		unsigned char c = (unsigned char) *ps->p;

		if (c < 0x20)
			return fail(ps, path, "control characters must be escaped");
		ps->p++;
		if (c == '\\')
		{
			if (!read_escape(ps, path))
				return false;
		}
		else if (!put(ps, (char) c))
			return fail(ps, path, "too long");
	}
	if (ps->p >= ps->end)
		return fail_syntax(ps, path, "unterminated string");
	ps->p++;
	return put(ps, '\0') || fail(ps, path, "too long");
}

/*
 * An object key, compared with field names: copied to a small buffer, longer
 * keys are unknown.
 */
static bool
read_key(parser *ps, const char *path, char *key, size_t cap)
{
	char	   *saved = ps->arena;
	const char *value;

	skip_ws(ps);
	if (ps->p >= ps->end || *ps->p != '"')
		return fail_syntax(ps, path, "expected a field name");
	if (!read_string(ps, path, &value))
		return false;
	snprintf(
			 key, cap, "%s",
			 value);			/* a longer key is truncated: no field name is
								 * that long */
	ps->arena = saved;			/* keys are not kept */
	return true;
}

/*
 * The text of a JSON number as written (RFC 8259 grammar), copied to the
 * arena.
 */
static bool
read_number(parser *ps, const char **out)
{
	const char *s = ps->p;

	if (ps->p < ps->end && *ps->p == '-')
		ps->p++;
	if (ps->p >= ps->end || !(*ps->p >= '0' && *ps->p <= '9'))
		return false;
	if (*ps->p == '0')
		ps->p++;
	else
		while (ps->p < ps->end && *ps->p >= '0' && *ps->p <= '9')
			ps->p++;
	if (ps->p < ps->end && *ps->p == '.')
	{
		ps->p++;
		if (ps->p >= ps->end || !(*ps->p >= '0' && *ps->p <= '9'))
			return false;
		while (ps->p < ps->end && *ps->p >= '0' && *ps->p <= '9')
			ps->p++;
	}
	if (ps->p < ps->end && (*ps->p == 'e' || *ps->p == 'E'))
	{
		ps->p++;
		if (ps->p < ps->end && (*ps->p == '+' || *ps->p == '-'))
			ps->p++;
		if (ps->p >= ps->end || !(*ps->p >= '0' && *ps->p <= '9'))
			return false;
		while (ps->p < ps->end && *ps->p >= '0' && *ps->p <= '9')
			ps->p++;
	}
	*out = ps->arena;
	for (; s < ps->p; s++)
		if (!put(ps, *s))
			return false;
	return put(ps, '\0');
}

/*
 * A value that must be a JSON string; other JSON types are named in the
 * refusal.
 */
static bool
read_string_value(parser *ps, const char *path, const char **out)
{
	skip_ws(ps);
	if (ps->p < ps->end && *ps->p == '"')
		return read_string(ps, path, out);
	if (ps->end - ps->p >= 4 && memcmp(ps->p, "null", 4) == 0)
		return fail(ps, path, "must not be null");
	return fail(ps, path, "must be a JSON string");
}

static const char *
join(char *buf, size_t cap, const char *prefix, const char *name)
{
	snprintf(buf, cap, "%s.%s", prefix, name);
	return buf;
}

/*
 * An object whose string fields are listed in fields; at the message level
 * (party_level false) also valor (a number) and pagador/recebedor (party
 * objects, parsed by a recursive call with party_level true).
 */
static bool
read_object(parser *ps, const char *path, const string_field *fields,
			int nfields, pix_message *m, bool party_level)
{
	static const char *const parties[] = {"pagador", "recebedor"};
	field_set	seen = 0;
	char		key[24],
				child[96];

	if (!next_is(ps, '{'))
		return fail(ps, path, "must be a JSON object");
	if (next_is(ps, '}'))
		return true;
	do
	{
		int			f;

		if (!read_key(ps, path, key, sizeof(key)))
			return false;
		join(child, sizeof(child), path, key);
		if (!next_is(ps, ':'))
			return fail_syntax(ps, child, "expected ':'");
		for (f = 0; f < nfields && strcmp(key, fields[f].name) != 0; f++)
			;
		if (f == nfields && !party_level)
		{
			for (int i = 0; i < 2 && f == nfields; i++)
				if (strcmp(key, parties[i]) == 0)
					f = nfields + 1 + i;
			if (strcmp(key, "valor") == 0)
				f = nfields + 3;
		}
		if (f == nfields)
			return fail(ps, child, "unknown field");
		if (seen & (1u << f))
			return fail(ps, child, "repeated field");
		seen |= 1u << f;
		if (f < nfields)
		{
			if (!read_string_value(ps, child, fields[f].slot))
				return false;
		}
		else if (f == nfields + 3)
		{
			skip_ws(ps);
			if (ps->end - ps->p >= 4 && memcmp(ps->p, "null", 4) == 0)
				return fail(ps, child, "must not be null");
			if (ps->p < ps->end && *ps->p == '"')
				return fail(ps, child, "must be a JSON number, not a string");
			if (!read_number(ps, &m->valor))
				return fail(ps, child, "must be a JSON number");
		}
		else
		{
			pix_party  *party = f == nfields + 1 ? &m->pagador : &m->recebedor;
			const string_field party_fields[] = {{"nome", &party->nome},
			{"cpfCnpj", &party->cpf_cnpj},
			{"ispb", &party->ispb},
			{"agencia", &party->agencia},
			{"contaTransacional",
			&party->conta},
			{"tipoConta",
			&party->tipo_conta}};

			if (!read_object(ps, child, party_fields, 6, m, true))
				return false;
		}
	} while (next_is(ps, ','));
	if (!next_is(ps, '}'))
		return fail_syntax(ps, path, "expected ',' or '}'");
	return true;
}

static bool
read_message(parser *ps, int index, pix_message *m)
{
	static const char empty[] = "";
	char		path[24];
	const string_field fields[] = {{"endToEndId", &m->end_to_end_id},
	{"campoLivre", &m->campo_livre},
	{"txId", &m->tx_id},
	{"dataHoraPagamento",
	&m->data_hora_pagamento}};

	memset(m, 0, sizeof(*m));
	snprintf(path, sizeof(path), "messages[%d]", index);
	if (!read_object(ps, path, fields, 4, m, false))
		return false;
	if (m->campo_livre == NULL)
		m->campo_livre = empty;
	if (m->tx_id == NULL)
		m->tx_id = empty;
	return true;
}

int
pix_send_parse(const char *body, size_t len, pix_message *messages, int max,
			   char *arena, size_t arena_cap, pix_send_problem *problem)
{
	parser		ps = {body, body, body + len, arena, arena + arena_cap, problem};
	int			count = 0;

	problem->index = -1;
	problem->text[0] = '\0';
	if (body == NULL || arena == NULL || max < 1)
	{
		fail(&ps, "body", "missing");
		return -1;
	}
	skip_ws(&ps);
	if (ps.p < ps.end && *ps.p == '[')
	{
		ps.p++;
		if (next_is(&ps, ']'))
		{
			fail(&ps, "body", "no messages (an empty array)");
			return -1;
		}
		do
		{
			if (count == max)
			{
				problem->index = -1;
				snprintf(problem->text, sizeof(problem->text),
						 "body: more than %d messages in one call", max);
				return -1;
			}
			problem->index = count;
			if (!read_message(&ps, count, &messages[count]))
				return -1;
			count++;
		} while (next_is(&ps, ','));
		problem->index = -1;
		if (!next_is(&ps, ']'))
		{
			fail_syntax(&ps, "body", "expected ',' or ']'");
			return -1;
		}
	}
	else if (ps.p < ps.end && *ps.p == '{')
	{
		problem->index = 0;
		if (!read_message(&ps, 0, &messages[0]))
			return -1;
		problem->index = -1;
		count = 1;
	}
	else
	{
		fail(&ps, "body", "must be a message object or an array of messages");
		return -1;
	}
	skip_ws(&ps);
	if (ps.p != ps.end)
	{
		fail_syntax(&ps, "body", "unexpected data after the JSON value");
		return -1;
	}
	return count;
}
