/*
 * fuzz_cpf_cnpj.c — libFuzzer harness for pix_valid_cpf_cnpj / pix_valid_cpf / pix_valid_cnpj and
 * pix_complete_cpf / pix_complete_cnpj (extension/validate.c), against an independent reference
 * written here from the rules (modulo-11 check digits; 11 or 14 ASCII digits; not all one digit).
 * The input is copied into a buffer of its exact size plus a NUL (ASan sees any over-read).
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "validate.h"

static int ref_cpf_dv(const char *d, int n)
{
	int sum = 0;
	for (int i = 0; i < n; i++)
		sum += (d[i] - '0') * (n + 1 - i);
	return sum % 11 < 2 ? 0 : 11 - sum % 11;
}

static int ref_cnpj_dv(const char *d, int n)
{
	/* weights 2..9 cycling from the right */
	int sum = 0, w = 2;
	for (int i = n - 1; i >= 0; i--) {
		sum += (d[i] - '0') * w;
		w = w == 9 ? 2 : w + 1;
	}
	return sum % 11 < 2 ? 0 : 11 - sum % 11;
}

static int ref_valid(const char *s)
{
	size_t len = strlen(s);
	int same = 1;

	if (len != 11 && len != 14)
		return 0;
	for (size_t i = 0; i < len; i++) {
		if (s[i] < '0' || s[i] > '9')
			return 0;
		same &= s[i] == s[0];
	}
	if (same)
		return 0;
	if (len == 11)
		return ref_cpf_dv(s, 9) == s[9] - '0' && ref_cpf_dv(s, 10) == s[10] - '0';
	return ref_cnpj_dv(s, 12) == s[12] - '0' && ref_cnpj_dv(s, 13) == s[13] - '0';
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char *s = malloc(size + 1);
	int got, want;

	memcpy(s, data, size);
	s[size] = '\0';
	got = pix_valid_cpf_cnpj(s);
	want = ref_valid(s);
	if (got != want) {
		fprintf(stderr, "pix_valid_cpf_cnpj(\"%s\") = %d, reference says %d\n", s, got, want);
		abort();
	}
	if (pix_valid_cpf(s) && strlen(s) != 11)
		abort();
	if (pix_valid_cnpj(s) && strlen(s) != 14)
		abort();
	/* completing the first 9 (12) digits gives a number the validator accepts unless all equal */
	if (size >= 12) {
		char cpf[PIX_CPF_LEN + 1], cnpj[PIX_CNPJ_LEN + 1];
		for (int i = 0; i < 12; i++)
			cnpj[i] = '0' + data[i] % 10;
		memcpy(cpf, cnpj, 9);
		pix_complete_cpf(cpf);
		pix_complete_cnpj(cnpj);
		if (strlen(cpf) != 11 || strlen(cnpj) != 14 || ref_valid(cpf) != pix_valid_cpf_cnpj(cpf) ||
		    ref_valid(cnpj) != pix_valid_cnpj(cnpj)) {
			fprintf(stderr, "complete: %s %s\n", cpf, cnpj);
			abort();
		}
		int cpf_same = 1, cnpj_same = 1;
		for (int i = 1; i < 11; i++)
			cpf_same &= cpf[i] == cpf[0];
		for (int i = 1; i < 14; i++)
			cnpj_same &= cnpj[i] == cnpj[0];
		if ((!cpf_same && !pix_valid_cpf(cpf)) || (!cnpj_same && !pix_valid_cnpj(cnpj))) {
			fprintf(stderr, "completed number refused: %s %s\n", cpf, cnpj);
			abort();
		}
	}
	free(s);
	return 0;
}
