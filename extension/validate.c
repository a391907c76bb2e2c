/*
 * validate.c — judges one Pix message against the contract (docs/contract.md,
 * "The message").
 *
 * Pure C (libc only): the INSERT trigger, the generator, pix_messages_send,
 * the unit tests and the fuzzers share it, so there is exactly one definition
 * of a valid message. Every function reads its input byte by byte and stops at
 * the first NUL or the first byte that breaks a rule: no input, however long
 * or malformed, makes it read past a terminator or allocate.
 *
 * Problems are static sentences naming the field by its JSON name
 * ("pagador.cpfCnpj: ..."), so the caller can show them to a user as they are
 * (errdetail, problem+json detail).
 */
#include "validate.h"

#include <string.h>

/*
 * Both parties share the rules; the sentence names the party. Literals, so no
 * buffer is needed.
 */
#define PARTY_PROBLEM(is_recebedor, field, sentence) \
	((is_recebedor) ? "recebedor." field ": " sentence \
	 : "pagador." field ": " sentence)

static bool is_digit(char c);
static bool is_alnum(char c);
static bool all_digits(const char *s, size_t len);
static int	read_number(const char *s, size_t len);
static bool valid_time(int hour, int minute, int second);
static int	check_digit(const char *digits, const int *weights, int n);
static bool all_same(const char *s, size_t len);
static const char *end_to_end_id_problem(const char *s);
static const char *valor_problem(const char *s);
static const char *party_problem(const pix_party *p, bool is_recebedor);
static const char *cpf_cnpj_problem(const char *s, bool is_recebedor);
static const char *text_problem(const char *s, size_t min, size_t max);
static const char *tx_id_problem(const char *s);
static const char *data_hora_problem(const char *s);
static size_t bounded_len(const char *s, size_t max);
static size_t count_digits(const char *s);

/*
 * Returned by text_problem; mapped to each field's own sentence by the caller.
 */
static const char text_missing[] = "missing";
static const char text_bad_utf8[] = "bad utf8";
static const char text_bad_length[] = "bad length";

static const int cpf_weights_1[] = {10, 9, 8, 7, 6, 5, 4, 3, 2};
static const int cpf_weights_2[] = {11, 10, 9, 8, 7, 6, 5, 4, 3, 2};
static const int cnpj_weights_1[] = {5, 4, 3, 2, 9, 8, 7, 6, 5, 4, 3, 2};
static const int cnpj_weights_2[] = {6, 5, 4, 3, 2, 9, 8, 7, 6, 5, 4, 3, 2};

static const char *const tipos_conta[] = {"CACC", "SVGS", "SLRY", "TRAN"};

/*
 * Locale-independent on purpose: isdigit() may accept other digits in some
 * locales.
 */
static bool
is_digit(char c)
{
	return c >= '0' && c <= '9';
}

static bool
is_alnum(char c)
{
	return is_digit(c) || (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z');
}

static bool
all_digits(const char *s, size_t len)
{
	for (size_t i = 0; i < len; i++)
		if (!is_digit(s[i]))
			return false;
	return true;
}

/* The value of len ASCII digits (len <= 4), or -1 when one is not a digit. */
static int
read_number(const char *s, size_t len)
{
	int			value = 0;

	for (size_t i = 0; i < len; i++)
	{
		if (!is_digit(s[i]))
			return -1;
		value = value * 10 + (s[i] - '0');
	}
	return value;
}

/*
 * strlen that stops looking after max + 1 bytes: a field's length only matters
 * up to its limit, and a 1 GB string should cost no more than a short one to
 * refuse.
 */
static size_t
bounded_len(const char *s, size_t max)
{
	size_t		len = 0;

	while (len <= max && s[len] != '\0')
		len++;
	return len;
}

bool
pix_valid_date(int year, int month, int day)
{
	static const int days_in_month[] = {31, 28, 31, 30, 31, 30,
	31, 31, 30, 31, 30, 31};
	bool		leap = (year % 4 == 0 && year % 100 != 0) || year % 400 == 0;

	if (year < 1 || year > 9999 || month < 1 || month > 12 || day < 1)
		return false;
	return day <= days_in_month[month - 1] + (month == 2 && leap ? 1 : 0);
}

/*
 * No leap second: PostgreSQL never produces one and a timestamp with :60 would
 * not round-trip.
 */
static bool
valid_time(int hour, int minute, int second)
{
	return hour >= 0 && hour < 24 && minute >= 0 && minute < 60 &&
		second >= 0 && second < 60;
}

bool
pix_valid_ispb(const char *s, size_t len)
{
	return s != NULL && len == PIX_ISPB_LEN && all_digits(s, len);
}

/* The modulo-11 check digit shared by CPF and CNPJ. */
static int
check_digit(const char *digits, const int *weights, int n)
{
	int			sum = 0;

	for (int i = 0; i < n; i++)
		sum += (digits[i] - '0') * weights[i];
	return sum % 11 < 2 ? 0 : 11 - sum % 11;
}

void
pix_complete_cpf(char cpf[PIX_CPF_LEN + 1])
{
	cpf[9] = (char) ('0' + check_digit(cpf, cpf_weights_1, 9));
	cpf[10] = (char) ('0' + check_digit(cpf, cpf_weights_2, 10));
	cpf[11] = '\0';
}

void
pix_complete_cnpj(char cnpj[PIX_CNPJ_LEN + 1])
{
	cnpj[12] = (char) ('0' + check_digit(cnpj, cnpj_weights_1, 12));
	cnpj[13] = (char) ('0' + check_digit(cnpj, cnpj_weights_2, 13));
	cnpj[14] = '\0';
}

/*
 * 000.000.000-00 and friends pass the modulo-11 test, yet the Receita Federal
 * never issues them.
 */
static bool
all_same(const char *s, size_t len)
{
	for (size_t i = 1; i < len; i++)
		if (s[i] != s[0])
			return false;
	return true;
}

bool
pix_valid_cpf(const char *s)
{
	char		expected[PIX_CPF_LEN + 1];

	if (s == NULL || bounded_len(s, PIX_CPF_LEN) != PIX_CPF_LEN ||
		!all_digits(s, PIX_CPF_LEN) || all_same(s, PIX_CPF_LEN))
		return false;
	memcpy(expected, s, 9);
	pix_complete_cpf(expected);
	return memcmp(expected, s, PIX_CPF_LEN) == 0;
}

bool
pix_valid_cnpj(const char *s)
{
	char		expected[PIX_CNPJ_LEN + 1];

	if (s == NULL || bounded_len(s, PIX_CNPJ_LEN) != PIX_CNPJ_LEN ||
		!all_digits(s, PIX_CNPJ_LEN) || all_same(s, PIX_CNPJ_LEN))
		return false;
	memcpy(expected, s, 12);
	pix_complete_cnpj(expected);
	return memcmp(expected, s, PIX_CNPJ_LEN) == 0;
}

bool
pix_valid_cpf_cnpj(const char *s)
{
	return pix_valid_cpf(s) || pix_valid_cnpj(s);
}

bool
pix_utf8_count(const char *s, size_t max, size_t *count)
{
	const unsigned char *p = (const unsigned char *) s;
	size_t		n = 0;

	while (*p != '\0' && n <= max)
	{
		unsigned char c = *p;
		int			extra;
		unsigned char
					lo = 0x80,
					hi = 0xBF;	/* allowed range of the first continuation
								 * byte */

		if (c < 0x80)
			extra = 0;
		else if (c >= 0xC2 && c <= 0xDF)
			extra = 1;
		else if (c >= 0xE0 && c <= 0xEF)
		{
			extra = 2;
			if (c == 0xE0)
				lo = 0xA0;		/* overlong */
			else if (c == 0xED)
				hi = 0x9F;		/* UTF-16 surrogates */
		}
		else if (c >= 0xF0 && c <= 0xF4)
		{
			extra = 3;
			if (c == 0xF0)
				lo = 0x90;		/* overlong */
			else if (c == 0xF4)
				hi = 0x8F;		/* above U+10FFFF */
		}
		else
			return false;		/* continuation byte, C0, C1 or F5..FF */
		p++;
		for (int i = 0; i < extra; i++, p++)
		{
			/*
			 * A NUL fails here too, so a truncated sequence never reads past
			 * the terminator.
			 */
			if (*p < lo || *p > hi)
				return false;
			lo = 0x80;
			hi = 0xBF;
		}
		n++;
	}
	*count = n;
	return true;
}

/*
 * A UTF-8 text of min..max characters; returns NULL or one of the text_*
 * markers.
 */
static const char *
text_problem(const char *s, size_t min, size_t max)
{
	size_t		count;

	if (s == NULL)
		return text_missing;
	if (!pix_utf8_count(s, max, &count))
		return text_bad_utf8;
	if (count < min || count > max)
		return text_bad_length;
	return NULL;
}

/*
 * E + payer ISPB + yyyyMMddHHmm (UTC) + 11 alphanumerics; the ISPB match is
 * checked by the caller.
 */
static const char *
end_to_end_id_problem(const char *s)
{
	const char *t;

	if (s == NULL)
		return "endToEndId: missing";
	if (bounded_len(s, PIX_END_TO_END_ID_LEN) != PIX_END_TO_END_ID_LEN)
		return "endToEndId: must be exactly 32 characters";
	if (s[0] != 'E')
		return "endToEndId: must start with 'E'";
	if (!all_digits(s + 1, PIX_ISPB_LEN))
		return "endToEndId: characters 2 to 9 must be the payer's ISPB (8 digits)";
	t = s + 1 + PIX_ISPB_LEN;
	if (!all_digits(t, 12) ||
		!pix_valid_date(read_number(t, 4), read_number(t + 4, 2),
						read_number(t + 6, 2)) ||
		!valid_time(read_number(t + 8, 2), read_number(t + 10, 2), 0))
		return "endToEndId: characters 10 to 21 must be a real UTC date and time (yyyyMMddHHmm)";
	for (int i = 21; i < PIX_END_TO_END_ID_LEN; i++)
		if (!is_alnum(s[i]))
			return "endToEndId: the last 11 characters must be ASCII letters or digits";
	return NULL;
}

/*
 * The text form is also the JSON number served, so it must be valid JSON as it
 * is: no sign, no leading zero, exactly two decimals. At most 13 integer
 * digits: below R$ 10 trillion.
 */
static const char *
valor_problem(const char *s)
{
	size_t		int_digits = 0;
	bool		nonzero = false;

	if (s == NULL)
		return "valor: missing";
	while (is_digit(s[int_digits]))
	{
		nonzero |= s[int_digits] != '0';
		if (++int_digits > PIX_VALOR_INT_DIGITS_MAX)
			return "valor: at most 13 integer digits (less than 10000000000000.00)";
	}
	if (int_digits == 0 || s[int_digits] != '.' ||
		!is_digit(s[int_digits + 1]) || !is_digit(s[int_digits + 2]) ||
		s[int_digits + 3] != '\0')
		return "valor: must be a decimal number with exactly two decimals, e.g. 90.20";
	if (int_digits > 1 && s[0] == '0')
		return "valor: must not have leading zeros";
	nonzero |= s[int_digits + 1] != '0' || s[int_digits + 2] != '0';
	if (!nonzero)
		return "valor: must be greater than zero";
	return NULL;
}

static size_t
count_digits(const char *s)
{
	size_t		n = 0;

	while (is_digit(s[n]))
		n++;
	return n;
}

const char *
pix_valor_normalize(const char *s, char *out)
{
	size_t		int_len,
				frac_len;
	const char *frac;

	out[0] = '\0';
	if (s == NULL)
		return "valor: missing";
	if (s[0] == '-')
		return "valor: must be greater than zero";
	int_len = count_digits(s);
	frac = s[int_len] == '.' ? s + int_len + 1 : s + int_len;
	frac_len = count_digits(frac);
	if (int_len == 0 || frac[frac_len] != '\0' ||
		(frac != s + int_len && frac_len == 0))
		return "valor: must be a decimal number without exponent, e.g. 90.20";
	while (frac_len > 2 && frac[frac_len - 1] == '0')
		frac_len--;
	if (frac_len > 2)
		return "valor: at most two decimal places (a payment is never rounded)";
	if (int_len > PIX_VALOR_INT_DIGITS_MAX)
		return "valor: at most 13 integer digits (less than 10000000000000.00)";
	memcpy(out, s, int_len);
	out[int_len] = '.';
	memcpy(out + int_len + 1, frac, frac_len);
	memcpy(out + int_len + 1 + frac_len, "00", 2 - frac_len);
	out[int_len + 3] = '\0';
	return NULL;
}

static const char *
cpf_cnpj_problem(const char *s, bool is_recebedor)
{
	size_t		len;

	if (s == NULL)
		return PARTY_PROBLEM(is_recebedor, "cpfCnpj", "missing");
	len = bounded_len(s, PIX_CNPJ_LEN);
	if ((len != PIX_CPF_LEN && len != PIX_CNPJ_LEN) || !all_digits(s, len))
		return PARTY_PROBLEM(is_recebedor, "cpfCnpj",
							 "must be 11 digits (CPF) or 14 digits (CNPJ)");
	if (all_same(s, len))
		return PARTY_PROBLEM(
							 is_recebedor, "cpfCnpj",
							 "a single repeated digit is not a valid CPF or "
							 "CNPJ");
	if (!pix_valid_cpf_cnpj(s))
		return PARTY_PROBLEM(is_recebedor, "cpfCnpj", "invalid check digits");
	return NULL;
}

static const char *
party_problem(const pix_party *p, bool is_recebedor)
{
	const char *problem;
	size_t		len;
	bool		tipo_ok = false;

	problem = text_problem(p->nome, 1, PIX_NOME_MAX);
	if (problem == text_missing)
		return PARTY_PROBLEM(is_recebedor, "nome", "missing");
	if (problem == text_bad_utf8)
		return PARTY_PROBLEM(is_recebedor, "nome", "not valid UTF-8");
	if (problem == text_bad_length)
		return PARTY_PROBLEM(is_recebedor, "nome",
							 "must be 1 to 140 characters");

	problem = cpf_cnpj_problem(p->cpf_cnpj, is_recebedor);
	if (problem != NULL)
		return problem;

	if (p->ispb == NULL)
		return PARTY_PROBLEM(is_recebedor, "ispb", "missing");
	if (!pix_valid_ispb(p->ispb, bounded_len(p->ispb, PIX_ISPB_LEN)))
		return PARTY_PROBLEM(is_recebedor, "ispb",
							 "must be exactly 8 ASCII digits");

	if (p->agencia == NULL)
		return PARTY_PROBLEM(is_recebedor, "agencia", "missing");
	if (bounded_len(p->agencia, PIX_AGENCIA_LEN) != PIX_AGENCIA_LEN ||
		!all_digits(p->agencia, PIX_AGENCIA_LEN))
		return PARTY_PROBLEM(is_recebedor, "agencia",
							 "must be exactly 4 digits");

	if (p->conta == NULL)
		return PARTY_PROBLEM(is_recebedor, "contaTransacional", "missing");
	len = bounded_len(p->conta, PIX_CONTA_MAX);
	if (len < 1 || len > PIX_CONTA_MAX || !all_digits(p->conta, len))
		return PARTY_PROBLEM(is_recebedor, "contaTransacional",
							 "must be 1 to 20 digits");

	if (p->tipo_conta == NULL)
		return PARTY_PROBLEM(is_recebedor, "tipoConta", "missing");
	for (size_t i = 0; i < sizeof(tipos_conta) / sizeof(tipos_conta[0]); i++)
		tipo_ok |= strcmp(p->tipo_conta, tipos_conta[i]) == 0;
	if (!tipo_ok)
		return PARTY_PROBLEM(is_recebedor, "tipoConta",
							 "must be CACC, SVGS, SLRY or TRAN");
	return NULL;
}

static const char *
tx_id_problem(const char *s)
{
	size_t		len;

	if (s == NULL)
		return "txId: missing";
	len = bounded_len(s, PIX_TX_ID_MAX);
	if (len > PIX_TX_ID_MAX)
		return "txId: at most 35 characters";
	for (size_t i = 0; i < len; i++)
		if (!is_alnum(s[i]))
			return "txId: only ASCII letters and digits are allowed";
	return NULL;
}

/*
 * Exactly YYYY-MM-DDTHH:MM:SS.mmmZ: the one RFC 3339 form we serve, so stored
 * == served.
 */
static const char *
data_hora_problem(const char *s)
{
	static const char shape[] = "dddd-dd-ddTdd:dd:dd.dddZ";

	if (s == NULL)
		return "dataHoraPagamento: missing";
	for (int i = 0; i < PIX_DATA_HORA_LEN; i++)
	{
		bool		ok = shape[i] == 'd' ? is_digit(s[i]) : s[i] == shape[i];

		/*
		 * s[i] == '\0' fails both tests, so we never read past a short
		 * string's end.
		 */
		if (!ok)
			return "dataHoraPagamento: must be YYYY-MM-DDTHH:MM:SS.mmmZ (UTC, milliseconds)";
	}
	if (s[PIX_DATA_HORA_LEN] != '\0')
		return "dataHoraPagamento: must be YYYY-MM-DDTHH:MM:SS.mmmZ (UTC, milliseconds)";
	if (!pix_valid_date(read_number(s, 4), read_number(s + 5, 2),
						read_number(s + 8, 2)) ||
		!valid_time(read_number(s + 11, 2), read_number(s + 14, 2),
					read_number(s + 17, 2)))
		return "dataHoraPagamento: not a real date and time";
	return NULL;
}

const char *
pix_message_problem(const pix_message *m)
{
	const char *problem;

	if (m == NULL)
		return "message: missing";
	if ((problem = end_to_end_id_problem(m->end_to_end_id)) != NULL ||
		(problem = valor_problem(m->valor)) != NULL ||
		(problem = party_problem(&m->pagador, false)) != NULL ||
		(problem = party_problem(&m->recebedor, true)) != NULL)
		return problem;

	problem = text_problem(m->campo_livre, 0, PIX_CAMPO_LIVRE_MAX);
	if (problem == text_missing)
		return "campoLivre: missing";
	if (problem == text_bad_utf8)
		return "campoLivre: not valid UTF-8";
	if (problem == text_bad_length)
		return "campoLivre: at most 140 characters";

	if ((problem = tx_id_problem(m->tx_id)) != NULL ||
		(problem = data_hora_problem(m->data_hora_pagamento)) != NULL)
		return problem;

	/*
	 * Both are valid by now: the id's ISPB is the payer's institution, which
	 * created the id.
	 */
	if (memcmp(m->end_to_end_id + 1, m->pagador.ispb, PIX_ISPB_LEN) != 0)
		return "endToEndId: characters 2 to 9 must equal pagador.ispb";
	return NULL;
}
