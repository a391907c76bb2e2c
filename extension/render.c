/*
 * render.c — writes a Pix message as the contract's JSON object, byte for
 * byte.
 *
 * Rendered once, at INSERT, and stored: every read afterwards copies bytes, so
 * the formatting rules live here and nowhere else. snprintf-like (measure with
 * cap 0, then write) so that callers choose their allocator: palloc in the
 * backend, malloc or a stack buffer elsewhere. Pure C, libc only.
 *
 * Escaping follows RFC 8259 and is deliberately minimal: '"' and '\\', the
 * five short escapes, \u00XX for the other control bytes and DEL; every other
 * byte, UTF-8 included, passes unchanged. Validity of the UTF-8 is the
 * validator's job (validate.c), not the renderer's.
 */
#include "render.h"

/*
 * An output cursor: len counts every byte we wanted to write, even those that
 * did not fit.
 */
typedef struct writer
{
	char	   *out;
	size_t		cap;
	size_t		len;
} writer;

static void put_byte(writer *w, char c);
static void put_raw(writer *w, const char *s);
static void put_string(writer *w, const char *s);
static void put_field(writer *w, const char *key, const char *value);
static void put_party(writer *w, const char *key, const pix_party *p);
static size_t finish(writer *w);

/* Keeps the last byte of the buffer for the NUL that finish() writes. */
static void
put_byte(writer *w, char c)
{
	if (w->len + 1 < w->cap)
		w->out[w->len] = c;
	w->len++;
}

static void
put_raw(writer *w, const char *s)
{
	for (; *s != '\0'; s++)
		put_byte(w, *s);
}

/*
 * s as a JSON string; a missing (NULL) string as null, so the output stays
 * valid JSON.
 */
static void
put_string(writer *w, const char *s)
{
	static const char hex[] = "0123456789abcdef";

	if (s == NULL)
	{
		put_raw(w, "null");
		return;
	}
	put_byte(w, '"');
	for (const unsigned char *p = (const unsigned char *) s; *p != '\0'; p++)
	{
		switch (*p)
		{
			case '"':
				put_raw(w, "\\\"");
				break;
			case '\\':
				put_raw(w, "\\\\");
				break;
			case '\b':
				put_raw(w, "\\b");
				break;
			case '\f':
				put_raw(w, "\\f");
				break;
			case '\n':
				put_raw(w, "\\n");
				break;
			case '\r':
				put_raw(w, "\\r");
				break;
			case '\t':
				put_raw(w, "\\t");
				break;
			default:
				if (*p < 0x20 || *p == 0x7f)
				{
					put_raw(w, "\\u00");
					put_byte(w, hex[*p >> 4]);
					put_byte(w, hex[*p & 0xf]);
				}
				else
					put_byte(w, (char) *p);
		}
	}
	put_byte(w, '"');
}

/* "key":"value" — keys are our own literals and need no escaping. */
static void
put_field(writer *w, const char *key, const char *value)
{
	put_byte(w, '"');
	put_raw(w, key);
	put_raw(w, "\":");
	put_string(w, value);
}

static void
put_party(writer *w, const char *key, const pix_party *p)
{
	put_byte(w, '"');
	put_raw(w, key);
	put_raw(w, "\":{");
	put_field(w, "nome", p->nome);
	put_byte(w, ',');
	put_field(w, "cpfCnpj", p->cpf_cnpj);
	put_byte(w, ',');
	put_field(w, "ispb", p->ispb);
	put_byte(w, ',');
	put_field(w, "agencia", p->agencia);
	put_byte(w, ',');
	put_field(w, "contaTransacional", p->conta);
	put_byte(w, ',');
	put_field(w, "tipoConta", p->tipo_conta);
	put_byte(w, '}');
}

static size_t
finish(writer *w)
{
	if (w->cap > 0)
		w->out[w->len < w->cap ? w->len : w->cap - 1] = '\0';
	return w->len;
}

size_t
pix_render_json_string(const char *s, char *out, size_t cap)
{
	writer		w = {out, cap, 0};

	put_string(&w, s);
	return finish(&w);
}

size_t
pix_render_message(const pix_message *m, char *out, size_t cap)
{
	writer		w = {out, cap, 0};

	if (m == NULL)
	{
		put_raw(&w, "null");
		return finish(&w);
	}
	put_byte(&w, '{');
	put_field(&w, "endToEndId", m->end_to_end_id);

	/*
	 * A number, not a string: the validated text form is already valid JSON
	 * ("90.20").
	 */
	put_raw(&w, ",\"valor\":");
	put_raw(&w, m->valor != NULL ? m->valor : "null");
	put_byte(&w, ',');
	put_party(&w, "pagador", &m->pagador);
	put_byte(&w, ',');
	put_party(&w, "recebedor", &m->recebedor);
	put_byte(&w, ',');
	put_field(&w, "campoLivre", m->campo_livre);
	put_byte(&w, ',');
	put_field(&w, "txId", m->tx_id);
	put_byte(&w, ',');
	put_field(&w, "dataHoraPagamento", m->data_hora_pagamento);
	put_byte(&w, '}');
	return finish(&w);
}
