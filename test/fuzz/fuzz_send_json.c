/*
 * fuzz_send_json.c — libFuzzer harness for the body parser of pix_messages_send
 * (extension/send_json.c), with the judge and the renderer it feeds (validate.c, render.c).
 *
 * Input: any bytes, as a client could POST them; copied into a buffer of its exact size (no NUL
 * after it), so AddressSanitizer catches a read one byte past the end.
 *
 * Checked on every input:
 *   - the parser never crashes and answers -1 with a problem that starts with "body" or
 *     "messages[" and names a field (contains ':'), or 1..max messages;
 *   - every string of every parsed message lies inside the arena and is NUL-terminated there;
 *   - the limit holds: with max = 2, a body of more than 2 messages is refused;
 *   - pix_valor_normalize and pix_message_problem never crash on what the parser produced;
 *   - round trip: a message the judge accepts, rendered (as the trigger stores it) and parsed
 *     again, gives the same fields, and renders to the same bytes.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "json_check.h"
#include "render.h"
#include "send_json.h"
#include "validate.h"

#define MAX_MESSAGES 1000

static pix_message messages[MAX_MESSAGES];

static void fail(const char *what, const char *detail)
{
	fprintf(stderr, "fuzz_send_json: %s: %s\n", what, detail ? detail : "");
	abort();
}

static void check_in_arena(const char *s, const char *arena, size_t cap)
{
	if (s == NULL || s[0] == '\0')
		return; /* absent, or the static "" default */
	if (s < arena || s >= arena + cap || memchr(s, '\0', (size_t)(arena + cap - s)) == NULL)
		fail("a parsed string is outside the arena or unterminated", NULL);
}

static void check_strings(const pix_message *m, const char *arena, size_t cap)
{
	const char *all[] = {m->end_to_end_id,      m->valor,
	                     m->pagador.nome,       m->pagador.cpf_cnpj,
	                     m->pagador.ispb,       m->pagador.agencia,
	                     m->pagador.conta,      m->pagador.tipo_conta,
	                     m->recebedor.nome,     m->recebedor.cpf_cnpj,
	                     m->recebedor.ispb,     m->recebedor.agencia,
	                     m->recebedor.conta,    m->recebedor.tipo_conta,
	                     m->campo_livre,        m->tx_id,
	                     m->data_hora_pagamento};

	for (size_t i = 0; i < sizeof(all) / sizeof(all[0]); i++)
		check_in_arena(all[i], arena, cap);
}

static int same(const char *a, const char *b)
{
	return (a == NULL && b == NULL) || (a != NULL && b != NULL && strcmp(a, b) == 0);
}

/* An accepted message, rendered and parsed again, is the same message. */
static void round_trip(const pix_message *m)
{
	size_t n = pix_render_message(m, NULL, 0), cap = PIX_SEND_ARENA_SIZE(n);
	char *rendered = malloc(n + 1), *arena = malloc(cap), *again_text;
	pix_message again;
	pix_send_problem problem;
	char valor[PIX_VALOR_TEXT_CAP];

	pix_render_message(m, rendered, n + 1);
	if (!json_check(rendered, n, 1))
		fail("accepted message rendered as invalid JSON", rendered);
	if (pix_send_parse(rendered, n, &again, 1, arena, cap, &problem) != 1)
		fail("a rendered message does not parse", problem.text);
	if (pix_valor_normalize(again.valor, valor) != NULL)
		fail("a rendered valor does not normalize", again.valor);
	again.valor = valor;
	if (!same(m->end_to_end_id, again.end_to_end_id) || !same(m->valor, again.valor) ||
	    !same(m->pagador.nome, again.pagador.nome) ||
	    !same(m->recebedor.nome, again.recebedor.nome) ||
	    !same(m->campo_livre, again.campo_livre) || !same(m->tx_id, again.tx_id) ||
	    !same(m->data_hora_pagamento, again.data_hora_pagamento))
		fail("round trip changed a field", rendered);
	again_text = malloc(n + 1);
	if (pix_render_message(&again, again_text, n + 1) != n || memcmp(again_text, rendered, n) != 0)
		fail("round trip renders other bytes", rendered);
	free(again_text);
	free(rendered);
	free(arena);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char *body = malloc(size ? size : 1);
	size_t cap = PIX_SEND_ARENA_SIZE(size);
	char *arena = malloc(cap);
	pix_send_problem problem;
	int n;

	memcpy(body, data, size);
	n = pix_send_parse(body, size, messages, MAX_MESSAGES, arena, cap, &problem);
	if (n < 0) {
		if ((strncmp(problem.text, "body", 4) != 0 && strncmp(problem.text, "messages[", 9) != 0) ||
		    strchr(problem.text, ':') == NULL)
			fail("a refusal does not name where", problem.text);
	} else if (n < 1 || n > MAX_MESSAGES) {
		fail("message count out of range", NULL);
	}
	for (int i = 0; i < n; i++) {
		pix_message m = messages[i];
		char valor[PIX_VALOR_TEXT_CAP];
		const char *p;

		check_strings(&m, arena, cap);
		p = m.valor != NULL ? pix_valor_normalize(m.valor, valor) : NULL;
		if (p == NULL) {
			m.valor = m.valor != NULL ? valor : NULL;
			if (pix_message_problem(&m) == NULL)
				round_trip(&m);
		}
	}
	if (n > 2 && pix_send_parse(body, size, messages, 2, arena, cap, &problem) != -1)
		fail("more than max messages accepted", NULL);
	free(arena);
	free(body);
	return 0;
}
