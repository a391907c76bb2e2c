/*
 * validate.h — the contract's rules for one Pix message (docs/contract.md,
 * "The message"), in plain C.
 *
 * Pure C on purpose: no PostgreSQL header, only libc, so that the extension's
 * INSERT trigger, the generator, pix_messages_send, the unit tests and the
 * fuzzing harnesses all judge a message by the same code.
 *
 * A pix_message holds NUL-terminated UTF-8 strings in the contract's text
 * forms; a NULL pointer stands for a missing field and is always a problem,
 * never a crash.
 */
#ifndef PIX_VALIDATE_H
#define PIX_VALIDATE_H

#include <stdbool.h>
#include <stddef.h>

/* Field limits of the contract. */
#define PIX_END_TO_END_ID_LEN 32
#define PIX_ISPB_LEN 8
#define PIX_CPF_LEN 11
#define PIX_CNPJ_LEN 14
#define PIX_AGENCIA_LEN 4
#define PIX_CONTA_MAX 20
#define PIX_NOME_MAX 140		/* characters (UTF-8 code points) */
#define PIX_CAMPO_LIVRE_MAX 140 /* characters (UTF-8 code points) */
#define PIX_TX_ID_MAX 35
#define PIX_VALOR_INT_DIGITS_MAX 13
#define PIX_DATA_HORA_LEN 24	/* YYYY-MM-DDTHH:MM:SS.mmmZ */

/* One side of a payment: who pays (pagador) or who receives (recebedor). */
typedef struct pix_party
{
	const char *nome;
	const char *cpf_cnpj;
	const char *ispb;
	const char *agencia;
	const char *conta;			/* contaTransacional */
	const char *tipo_conta;
} pix_party;

typedef struct pix_message
{
	const char *end_to_end_id;
	const char
			   *valor;			/* decimal text with exactly two decimals,
								 * e.g. "90.20" */
	pix_party	pagador,
				recebedor;
	const char *campo_livre,
			   *tx_id;
	const char *data_hora_pagamento;	/* "YYYY-MM-DDTHH:MM:SS.mmmZ" */
} pix_message;

/* Exactly 8 ASCII digits (len bytes of s; s need not be NUL-terminated). */
bool		pix_valid_ispb(const char *s, size_t len);

/*
 * 11 (CPF) or 14 (CNPJ) ASCII digits with valid check digits, not all the same
 * digit.
 */
bool		pix_valid_cpf(const char *s);
bool		pix_valid_cnpj(const char *s);
bool		pix_valid_cpf_cnpj(const char *s);

/*
 * Check digits: cpf[0..8] (resp. cnpj[0..11]) hold the base digits; writes the
 * two check digits after them and a NUL. Used by the generator and by the
 * validators above.
 */
void		pix_complete_cpf(char cpf[PIX_CPF_LEN + 1]);
void		pix_complete_cnpj(char cnpj[PIX_CNPJ_LEN + 1]);

/*
 * Counts the code points of the NUL-terminated s, stopping early once the
 * count exceeds max. Returns false when s is not valid UTF-8 (overlong forms,
 * surrogates, > U+10FFFF, truncation).
 */
bool		pix_utf8_count(const char *s, size_t max, size_t *count);

/* true when year-month-day is a real Gregorian date, year 0001..9999. */
bool		pix_valid_date(int year, int month, int day);

/*
 * Room for a normalized valor: 13 integer digits, '.', 2 decimals, NUL (and
 * some margin).
 */
#define PIX_VALOR_TEXT_CAP 32

/*
 * Writes the decimal text s (an optional '-', digits, optionally '.' and
 * digits: numeric_out's form, or a JSON number without exponent) with exactly
 * two decimals into out (PIX_VALOR_TEXT_CAP bytes): trailing zeros beyond the
 * second decimal go, any other digit there is refused (money is never rounded
 * silently). NULL when done, else a sentence naming valor. The INSERT trigger
 * and pix_messages_send both pass valor through it, so both accept and store
 * the same amounts.
 */
const char *pix_valor_normalize(const char *s, char *out);

/*
 * NULL when m is valid per the contract; otherwise a static English sentence
 * naming the first offending field by its JSON name, e.g. "pagador.cpfCnpj:
 * invalid check digits".
 */
const char *pix_message_problem(const pix_message *m);

#endif
