/*
 * fuzz_message.c — libFuzzer harness for the extension's pure C: pix_message_problem() and
 * pix_render_message() / pix_render_json_string() (extension/validate.c, extension/render.c).
 *
 * Input: up to 17 NUL-separated fields in the order of pix_message (endToEndId, valor, pagador's
 * nome cpfCnpj ispb agencia conta tipoConta, recebedor's six, campoLivre, txId, dataHoraPagamento);
 * a field absent from the input is NULL. Each field is copied into a buffer of its exact size, so
 * AddressSanitizer catches a read one byte past a terminator.
 *
 * Checked on every input:
 *   - pix_message_problem never crashes; it returns NULL or a sentence naming a field;
 *   - the renderer's snprintf contract: measuring (cap 0) and writing agree, the output is
 *     NUL-terminated, and a truncated write is a prefix of the full one;
 *   - pix_render_json_string of every field is one JSON string (lexically; strictly when the field
 *     is valid UTF-8) that decodes back to the field's bytes;
 *   - when the message is accepted, its rendering is strictly valid JSON (UTF-8 checked), starts
 *     with {"endToEndId": and every string field decodes back to its input.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "json_check.h"
#include "render.h"
#include "validate.h"

#define NFIELDS 17

static void fail(const char *what, const char *detail)
{
	fprintf(stderr, "fuzz_message: %s: %s\n", what, detail ? detail : "");
	abort();
}

static void check_json_string(const char *s)
{
	size_t n = pix_render_json_string(s, NULL, 0);
	char *buf = malloc(n + 1), *dec = malloc(strlen(s) + 1);
	size_t count;
	long d;

	if (pix_render_json_string(s, buf, n + 1) != n || strlen(buf) != n)
		fail("json string: measure/write disagree", s);
	if (!json_check(buf, n, 0))
		fail("json string is not a JSON string", buf);
	if (pix_utf8_count(s, (size_t)-1 / 2, &count) && !json_check(buf, n, 1))
		fail("valid UTF-8 rendered as invalid JSON", buf);
	d = json_decode_string(buf, n, dec, strlen(s) + 1);
	if (d != -2 && (d != (long)strlen(s) || memcmp(dec, s, strlen(s)) != 0))
		fail("json string does not decode to its input", buf);
	free(buf);
	free(dec);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char *fields[NFIELDS] = {0};
	size_t start = 0, nf = 0;
	pix_message m;
	const char *problem;
	size_t n, cap;
	char *full, *part;

	for (size_t i = 0; i <= size && nf < NFIELDS; i++) {
		if (i == size || data[i] == '\0') {
			if (i == size && i == start && nf > 0 && data[i - 1] != '\0')
				break;
			fields[nf] = malloc(i - start + 1);
			memcpy(fields[nf], data + start, i - start);
			fields[nf][i - start] = '\0';
			nf++;
			start = i + 1;
			if (i == size)
				break;
		}
	}
	m = (pix_message){fields[0],
	                  fields[1],
	                  {fields[2], fields[3], fields[4], fields[5], fields[6], fields[7]},
	                  {fields[8], fields[9], fields[10], fields[11], fields[12], fields[13]},
	                  fields[14],
	                  fields[15],
	                  fields[16]};

	problem = pix_message_problem(&m);
	if (problem != NULL && (problem[0] == '\0' || strchr(problem, ':') == NULL))
		fail("problem sentence does not name a field", problem);

	n = pix_render_message(&m, NULL, 0);
	full = malloc(n + 1);
	if (pix_render_message(&m, full, n + 1) != n || strlen(full) != n)
		fail("render: measure and write disagree", full);
	cap = size % (n + 2);
	part = malloc(cap + 1);
	if (pix_render_message(&m, part, cap) != n)
		fail("render: truncated write reports another length", part);
	if (cap > 0 && (strlen(part) != cap - 1 || memcmp(part, full, cap - 1) != 0))
		fail("render: truncated write is not a prefix", part);

	for (size_t i = 0; i < nf; i++)
		check_json_string(fields[i]);

	if (problem == NULL) {
		if (!json_check(full, n, 1))
			fail("accepted message rendered as invalid JSON", full);
		if (strncmp(full, "{\"endToEndId\":\"", 15) != 0)
			fail("rendered message does not start with endToEndId", full);
		/* every string field appears, escaped, in the object */
		for (size_t i = 0; i < NFIELDS; i++) {
			size_t k;
			char *esc;
			if (i == 1)
				continue; /* valor is a number */
			k = pix_render_json_string(fields[i], NULL, 0);
			esc = malloc(k + 1);
			pix_render_json_string(fields[i], esc, k + 1);
			if (strstr(full, esc) == NULL)
				fail("a field is missing from the rendering", esc);
			free(esc);
		}
	}
	free(full);
	free(part);
	for (size_t i = 0; i < NFIELDS; i++)
		free(fields[i]);
	return 0;
}
