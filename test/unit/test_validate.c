/*
 * test_validate.c — unit tests of the pure-C message rules (extension/validate.c) and JSON
 * rendering (extension/render.c): the contract's example, every rule's boundaries, escaping.
 *
 * No PostgreSQL needed, so it runs first and fast. Build and run:
 *   cc -Wall -Wextra -Werror -Iextension -o test/unit/test_validate \
 *      test/unit/test_validate.c extension/validate.c extension/render.c && test/unit/test_validate
 * Prints "N passed, N failed"; exits non-zero when anything failed.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "render.h"
#include "validate.h"

static char *repeats[32];
static size_t repeats_len;

static pix_message example(void);
static void expect_ok(pix_message m, const char *what);
static void expect_problem(pix_message m, const char *prefix, const char *what);
static char *repeat(const char *unit, int times);
static void free_repeats(void);
static void test_example(void);
static void test_cpf_cnpj(void);
static void test_ispb(void);
static void test_end_to_end_id(void);
static void test_valor(void);
static void test_texts(void);
static void test_party_fields(void);
static void test_data_hora(void);
static void test_nulls(void);
static void test_escaping(void);
static void test_render_bounds(void);

/* The SPEC's example, one line. */
static const char example_json[] =
    "{\"endToEndId\":\"E320749862024022119277T3lEBbUM0z\",\"valor\":90.20,"
    "\"pagador\":{\"nome\":\"Marcos "
    "Jos\xc3\xa9\",\"cpfCnpj\":\"98716278151\",\"ispb\":\"32074986\","
    "\"agencia\":\"0001\",\"contaTransacional\":\"1231231\",\"tipoConta\":\"CACC\"},"
    "\"recebedor\":{\"nome\":\"Flavio "
    "Jos\xc3\xa9\",\"cpfCnpj\":\"77615678242\",\"ispb\":\"00000000\","
    "\"agencia\":\"0361\",\"contaTransacional\":\"1210098\",\"tipoConta\":\"SVGS\"},"
    "\"campoLivre\":\"\",\"txId\":\"h7a786d8a7s6gd1hgs\","
    "\"dataHoraPagamento\":\"2022-07-23T19:47:18.108Z\"}";

static pix_message example(void)
{
	pix_message m = {
	    .end_to_end_id = "E320749862024022119277T3lEBbUM0z",
	    .valor = "90.20",
	    .pagador = {"Marcos Jos\xc3\xa9", "98716278151", "32074986", "0001", "1231231", "CACC"},
	    .recebedor = {"Flavio Jos\xc3\xa9", "77615678242", "00000000", "0361", "1210098", "SVGS"},
	    .campo_livre = "",
	    .tx_id = "h7a786d8a7s6gd1hgs",
	    .data_hora_pagamento = "2022-07-23T19:47:18.108Z",
	};
	return m;
}

static void expect_ok(pix_message m, const char *what)
{
	const char *problem = pix_message_problem(&m);

	check(problem == NULL, what);
	if (problem != NULL)
		printf("  problem: %s\n", problem);
}

/* The problem must name the field: its sentence starts with prefix. */
static void expect_problem(pix_message m, const char *prefix, const char *what)
{
	const char *problem = pix_message_problem(&m);
	bool ok = problem != NULL && strncmp(problem, prefix, strlen(prefix)) == 0;

	check(ok, what);
	if (!ok)
		printf("  problem: %s (wanted prefix %s)\n", problem ? problem : "(none)", prefix);
}

/* Kept until free_repeats(), so that sanitizers' leak checks stay quiet. */
static char *repeat(const char *unit, int times)
{
	size_t n = strlen(unit);
	char *s = malloc(n * times + 1);

	if (s == NULL || repeats_len == sizeof(repeats) / sizeof(repeats[0])) {
		printf("out of memory\n");
		exit(2);
	}
	repeats[repeats_len++] = s;
	for (int i = 0; i < times; i++)
		memcpy(s + n * i, unit, n);
	s[n * times] = '\0';
	return s;
}

static void free_repeats(void)
{
	while (repeats_len > 0)
		free(repeats[--repeats_len]);
}

static void test_example(void)
{
	pix_message m = example();
	char buf[1024];
	size_t len;

	expect_ok(m, "the SPEC's example is valid");
	len = pix_render_message(&m, buf, sizeof(buf));
	check(len == strlen(example_json), "rendered length of the example");
	check_str(buf, example_json, "the SPEC's example renders byte for byte");
}

static void test_cpf_cnpj(void)
{
	pix_message m = example();

	check(pix_valid_cpf("98716278151"), "CPF 98716278151 valid");
	check(pix_valid_cpf("77615678242"), "CPF 77615678242 valid");
	check(!pix_valid_cpf("98716278150"), "CPF with a wrong second check digit");
	check(!pix_valid_cpf("98716278141"), "CPF with a wrong first check digit");
	check(!pix_valid_cpf("11111111111"), "CPF of one repeated digit");
	check(!pix_valid_cpf("00000000000"), "CPF of zeros");
	check(!pix_valid_cpf("9871627815"), "CPF of 10 digits");
	check(!pix_valid_cpf("987162781511"), "CPF of 12 digits");
	check(!pix_valid_cpf("9871627815a"), "CPF with a letter");
	check(!pix_valid_cpf(NULL), "CPF NULL");
	check(pix_valid_cnpj("11222333000181"), "CNPJ 11222333000181 valid");
	check(pix_valid_cnpj("00000000000191"), "CNPJ 00000000000191 (Banco do Brasil) valid");
	check(!pix_valid_cnpj("11222333000182"), "CNPJ with a wrong check digit");
	check(!pix_valid_cnpj("22222222222222"), "CNPJ of one repeated digit");
	check(!pix_valid_cnpj("98716278151"), "a CPF is not a CNPJ");
	check(pix_valid_cpf_cnpj("11222333000181") && pix_valid_cpf_cnpj("98716278151"),
	      "cpf_cnpj accepts both");
	check(!pix_valid_cpf_cnpj("123456789012"), "cpf_cnpj: 12 digits");

	m.pagador.cpf_cnpj = "98716278150";
	check_str(pix_message_problem(&m), "pagador.cpfCnpj: invalid check digits",
	          "problem sentence for a bad CPF");
	m = example();
	m.recebedor.cpf_cnpj = "11222333000181";
	expect_ok(m, "recebedor with a CNPJ");
	m.recebedor.cpf_cnpj = "1122233300018";
	expect_problem(m, "recebedor.cpfCnpj:", "13 digits refused");
	m.recebedor.cpf_cnpj = "33333333333";
	expect_problem(m, "recebedor.cpfCnpj:", "repeated digit refused");
	m.recebedor.cpf_cnpj = "987.162.781-51";
	expect_problem(m, "recebedor.cpfCnpj:", "punctuated CPF refused");
}

static void test_ispb(void)
{
	pix_message m = example();

	check(pix_valid_ispb("00000000", 8), "ISPB 00000000");
	check(pix_valid_ispb("60746948xyz", 8), "ISPB takes len bytes only");
	check(!pix_valid_ispb("0000000", 7), "ISPB of 7 digits");
	check(!pix_valid_ispb("000000000", 9), "ISPB of 9 digits");
	check(!pix_valid_ispb("0000000a", 8), "ISPB with a letter");
	check(!pix_valid_ispb("\xd9\xa0\xd9\xa0\xd9\xa0\xd9\xa0", 8), "ISPB of Arabic-Indic digits");
	check(!pix_valid_ispb(NULL, 8), "ISPB NULL");
	m.recebedor.ispb = "1234567";
	expect_problem(m, "recebedor.ispb:", "short recebedor.ispb");
	m.recebedor.ispb = "123456789";
	expect_problem(m, "recebedor.ispb:", "long recebedor.ispb");
}

static void test_end_to_end_id(void)
{
	pix_message m = example();

	m.end_to_end_id = "E320749862024022119277T3lEBbUM0";
	expect_problem(m, "endToEndId:", "31 characters");
	m.end_to_end_id = "E320749862024022119277T3lEBbUM0zz";
	expect_problem(m, "endToEndId:", "33 characters");
	m.end_to_end_id = "e320749862024022119277T3lEBbUM0z";
	expect_problem(m, "endToEndId:", "lowercase e");
	m.end_to_end_id = "E3207498a2024022119277T3lEBbUM0z";
	expect_problem(m, "endToEndId:", "letter in the ISPB");
	m.end_to_end_id = "E000000002024022119277T3lEBbUM0z";
	check_str(pix_message_problem(&m), "endToEndId: characters 2 to 9 must equal pagador.ispb",
	          "ISPB differs from pagador.ispb");
	m.end_to_end_id = "E320749862024023019277T3lEBbUM0z";
	expect_problem(m, "endToEndId:", "30 February");
	m.end_to_end_id = "E320749862023022919277T3lEBbUM0z";
	expect_problem(m, "endToEndId:", "29 February of a common year");
	m.end_to_end_id = "E320749862024022919277T3lEBbUM0z";
	expect_ok(m, "29 February of a leap year");
	m.end_to_end_id = "E320749862100022919277T3lEBbUM0z";
	expect_problem(m, "endToEndId:", "29 February 2100");
	m.end_to_end_id = "E320749862000022919277T3lEBbUM0z";
	expect_ok(m, "29 February 2000");
	m.end_to_end_id = "E320749862024022124007T3lEBbUM0z";
	expect_problem(m, "endToEndId:", "hour 24");
	m.end_to_end_id = "E320749862024022123597T3lEBbUM0z";
	expect_ok(m, "23:59");
	m.end_to_end_id = "E320749862024022123607T3lEBbUM0z";
	expect_problem(m, "endToEndId:", "minute 60");
	m.end_to_end_id = "E320749862024130119277T3lEBbUM0z";
	expect_problem(m, "endToEndId:", "month 13");
	m.end_to_end_id = "E320749862024000119277T3lEBbUM0z";
	expect_problem(m, "endToEndId:", "month 0");
	m.end_to_end_id = "E320749860000010119277T3lEBbUM0z";
	expect_problem(m, "endToEndId:", "year 0");
	m.end_to_end_id = "E320749862024022119277T3lEBbUM-z";
	expect_problem(m, "endToEndId:", "dash in the suffix");
	m.end_to_end_id = "E320749862024022119277T3lEBbU\xc3\xa9";
	expect_problem(m, "endToEndId:", "UTF-8 in the suffix");
	m.end_to_end_id = "";
	expect_problem(m, "endToEndId:", "empty id");
}

static void test_valor(void)
{
	static const char *const good[] = {"0.01", "5.00", "90.20", "9999999999999.99", "1000.00"};
	static const char *const bad[] = {"0.00",  "00.00",    "90.2",  "90.205",
	                                  "90",    "90.",      ".50",   "-1.00",
	                                  "+1.00", "1e2",      "01.00", "10000000000000.00",
	                                  " 1.00", "1.00 ",    "1,00",  "",
	                                  "NaN",   "Infinity", "1.0a"};
	pix_message m = example();

	for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
		m.valor = good[i];
		expect_ok(m, good[i]);
	}
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		m.valor = bad[i];
		expect_problem(m, "valor:", bad[i]);
	}
}

static void test_texts(void)
{
	pix_message m = example();

	m.pagador.nome = "";
	expect_problem(m, "pagador.nome:", "empty nome");
	m.pagador.nome = repeat("\xc3\xa3", 140);
	expect_ok(m, "nome of 140 two-byte characters");
	m.pagador.nome = repeat("\xc3\xa3", 141);
	expect_problem(m, "pagador.nome:", "nome of 141 characters");
	m.pagador.nome = repeat("\xf0\x9f\x8d\x95", 140);
	expect_ok(m, "nome of 140 four-byte characters");
	m.pagador.nome = repeat("a", 1000000);
	expect_problem(m, "pagador.nome:", "nome of a million characters");
	m.pagador.nome = "Jos\xc3";
	expect_problem(m, "pagador.nome:", "truncated UTF-8");
	m.pagador.nome = "\xc0\xaf";
	expect_problem(m, "pagador.nome:", "overlong UTF-8");
	m.pagador.nome = "\xe0\x80\xaf";
	expect_problem(m, "pagador.nome:", "overlong three-byte UTF-8");
	m.pagador.nome = "\xed\xa0\x80";
	expect_problem(m, "pagador.nome:", "UTF-16 surrogate");
	m.pagador.nome = "\xf4\x90\x80\x80";
	expect_problem(m, "pagador.nome:", "above U+10FFFF");
	m.pagador.nome = "\xff";
	expect_problem(m, "pagador.nome:", "byte FF");
	m.pagador.nome = "\x80";
	expect_problem(m, "pagador.nome:", "lone continuation byte");
	m.pagador.nome = "\xf4\x8f\xbf\xbf";
	expect_ok(m, "U+10FFFF");
	m.pagador.nome = "\xf0\x8f\xbf\xbf";
	expect_problem(m, "pagador.nome:", "overlong four-byte UTF-8");
	m.pagador.nome = "\xf0\x90\x80\x80";
	expect_ok(m, "U+10000");
	m.pagador.nome = "\xf0\x9f\x8d";
	expect_problem(m, "pagador.nome:", "truncated four-byte UTF-8");
	m.pagador.nome = "\xee\x80\x80";
	expect_ok(m, "U+E000 (private use, after the surrogates)");
	m.pagador.nome = "Concei\xc3\xa7\xc3\xa3o \"Tia\" \\ \t";
	expect_ok(m, "nome with quotes, backslash, tab");

	m = example();
	m.campo_livre = repeat("\xc3\xa7", 140);
	expect_ok(m, "campoLivre of 140 characters");
	m.campo_livre = repeat("x", 141);
	expect_problem(m, "campoLivre:", "campoLivre of 141 characters");
	m.campo_livre = "\xc3\x28";
	expect_problem(m, "campoLivre:", "campoLivre invalid UTF-8");

	m = example();
	m.tx_id = "";
	expect_ok(m, "empty txId");
	m.tx_id = repeat("Z9", 17);
	expect_ok(m, "txId of 34");
	m.tx_id = repeat("a", 35);
	expect_ok(m, "txId of 35");
	m.tx_id = repeat("a", 36);
	expect_problem(m, "txId:", "txId of 36");
	m.tx_id = "abc-123";
	expect_problem(m, "txId:", "txId with a dash");
	m.tx_id = "abc 123";
	expect_problem(m, "txId:", "txId with a space");
}

static void test_party_fields(void)
{
	static const char *const tipos[] = {"CACC", "SVGS", "SLRY", "TRAN"};
	pix_message m = example();

	for (int i = 0; i < 4; i++) {
		m.recebedor.tipo_conta = tipos[i];
		expect_ok(m, tipos[i]);
	}
	m.recebedor.tipo_conta = "cacc";
	expect_problem(m, "recebedor.tipoConta:", "lowercase tipoConta");
	m.recebedor.tipo_conta = "CACCX";
	expect_problem(m, "recebedor.tipoConta:", "tipoConta with a suffix");
	m.recebedor.tipo_conta = "";
	expect_problem(m, "recebedor.tipoConta:", "empty tipoConta");

	m = example();
	m.pagador.agencia = "001";
	expect_problem(m, "pagador.agencia:", "agencia of 3");
	m.pagador.agencia = "00011";
	expect_problem(m, "pagador.agencia:", "agencia of 5");
	m.pagador.agencia = "00a1";
	expect_problem(m, "pagador.agencia:", "agencia with a letter");

	m = example();
	m.pagador.conta = "";
	expect_problem(m, "pagador.contaTransacional:", "empty conta");
	m.pagador.conta = "0";
	expect_ok(m, "conta of 1 digit");
	m.pagador.conta = "12345678901234567890";
	expect_ok(m, "conta of 20 digits");
	m.pagador.conta = "123456789012345678901";
	expect_problem(m, "pagador.contaTransacional:", "conta of 21 digits");
	m.pagador.conta = "1234-5";
	expect_problem(m, "pagador.contaTransacional:", "conta with a dash");
}

static void test_data_hora(void)
{
	static const char *const good[] = {"2024-02-29T00:00:00.000Z", "2022-12-31T23:59:59.999Z",
	                                   "0001-01-01T00:00:00.000Z"};
	static const char *const bad[] = {"2022-07-23T19:47:18Z",
	                                  "2022-07-23T19:47:18.1Z",
	                                  "2022-07-23T19:47:18.1080Z",
	                                  "2022-07-23T19:47:18.108",
	                                  "2022-07-23T19:47:18.108+00:00",
	                                  "2022-07-23 19:47:18.108Z",
	                                  "2022-07-23t19:47:18.108Z",
	                                  "2022-07-23T19:47:18.108z",
	                                  "2023-02-29T00:00:00.000Z",
	                                  "2022-04-31T00:00:00.000Z",
	                                  "2022-07-23T24:00:00.000Z",
	                                  "2022-07-23T19:60:18.108Z",
	                                  "2022-07-23T19:47:60.000Z",
	                                  "0000-01-01T00:00:00.000Z",
	                                  "2022-07-23T19:47:18.108ZZ",
	                                  "",
	                                  "2022-07-23",
	                                  "+2022-07-23T19:47:18.108Z"};
	pix_message m = example();

	for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
		m.data_hora_pagamento = good[i];
		expect_ok(m, good[i]);
	}
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		m.data_hora_pagamento = bad[i];
		expect_problem(m, "dataHoraPagamento:", bad[i]);
	}
}

/* Every NULL field is a problem naming that field; never a crash. */
static void test_nulls(void)
{
	static const struct {
		size_t offset;
		const char *prefix;
	} fields[] = {
	    {offsetof(pix_message, end_to_end_id), "endToEndId:"},
	    {offsetof(pix_message, valor), "valor:"},
	    {offsetof(pix_message, pagador.nome), "pagador.nome:"},
	    {offsetof(pix_message, pagador.cpf_cnpj), "pagador.cpfCnpj:"},
	    {offsetof(pix_message, pagador.ispb), "pagador.ispb:"},
	    {offsetof(pix_message, pagador.agencia), "pagador.agencia:"},
	    {offsetof(pix_message, pagador.conta), "pagador.contaTransacional:"},
	    {offsetof(pix_message, pagador.tipo_conta), "pagador.tipoConta:"},
	    {offsetof(pix_message, recebedor.nome), "recebedor.nome:"},
	    {offsetof(pix_message, recebedor.cpf_cnpj), "recebedor.cpfCnpj:"},
	    {offsetof(pix_message, recebedor.ispb), "recebedor.ispb:"},
	    {offsetof(pix_message, recebedor.agencia), "recebedor.agencia:"},
	    {offsetof(pix_message, recebedor.conta), "recebedor.contaTransacional:"},
	    {offsetof(pix_message, recebedor.tipo_conta), "recebedor.tipoConta:"},
	    {offsetof(pix_message, campo_livre), "campoLivre:"},
	    {offsetof(pix_message, tx_id), "txId:"},
	    {offsetof(pix_message, data_hora_pagamento), "dataHoraPagamento:"},
	};
	char buf[1024];

	for (size_t i = 0; i < sizeof(fields) / sizeof(fields[0]); i++) {
		pix_message m = example();

		*(const char **)((char *)&m + fields[i].offset) = NULL;
		expect_problem(m, fields[i].prefix, fields[i].prefix);
		check(pix_render_message(&m, buf, sizeof(buf)) > 0 && strstr(buf, "null") != NULL,
		      "rendering a NULL field writes null");
	}
	check(pix_message_problem(NULL) != NULL, "NULL message");
	check(pix_render_message(NULL, buf, sizeof(buf)) == 4 && strcmp(buf, "null") == 0,
	      "rendering a NULL message");
}

static void test_escaping(void)
{
	char buf[256];
	pix_message m = example();
	char *json;
	size_t len;

	pix_render_json_string("a\"b\\c/d", buf, sizeof(buf));
	check_str(buf, "\"a\\\"b\\\\c/d\"", "quote and backslash escaped, slash not");
	pix_render_json_string("\b\f\n\r\t", buf, sizeof(buf));
	check_str(buf, "\"\\b\\f\\n\\r\\t\"", "short escapes");
	pix_render_json_string("\x01\x1f\x7f\x20", buf, sizeof(buf));
	check_str(buf, "\"\\u0001\\u001f\\u007f \"", "other control bytes and DEL as \\u00XX");
	pix_render_json_string("Concei\xc3\xa7\xc3\xa3o \xf0\x9f\x8d\x95 \xe2\x80\xa8", buf,
	                       sizeof(buf));
	check_str(buf, "\"Concei\xc3\xa7\xc3\xa3o \xf0\x9f\x8d\x95 \xe2\x80\xa8\"",
	          "UTF-8 passes unchanged");
	pix_render_json_string("", buf, sizeof(buf));
	check_str(buf, "\"\"", "empty string");
	pix_render_json_string(NULL, buf, sizeof(buf));
	check_str(buf, "null", "NULL string is null");

	m.pagador.nome = "Jo\xc3\xa3o \"Bigode\" \\o/";
	m.campo_livre = "linha 1\nlinha 2\x01";
	expect_ok(m, "message with characters to escape is valid");
	len = pix_render_message(&m, NULL, 0);
	json = malloc(len + 1);
	check(pix_render_message(&m, json, len + 1) == len && strlen(json) == len,
	      "measure then render");
	check(strstr(json, "\"nome\":\"Jo\xc3\xa3o \\\"Bigode\\\" \\\\o/\"") != NULL,
	      "nome escaped inside the message");
	check(strstr(json, "\"campoLivre\":\"linha 1\\nlinha 2\\u0001\"") != NULL,
	      "campoLivre escaped inside the message");
	free(json);
}

/* snprintf semantics: the length is always the whole, the buffer always NUL-terminated. */
static void test_render_bounds(void)
{
	pix_message m = example();
	size_t whole = strlen(example_json);
	char buf[1024];

	check(pix_render_message(&m, NULL, 0) == whole, "cap 0 measures");
	memset(buf, 'X', sizeof(buf));
	check(pix_render_message(&m, buf, 1) == whole && buf[0] == '\0' && buf[1] == 'X',
	      "cap 1 writes only the NUL");
	memset(buf, 'X', sizeof(buf));
	check(pix_render_message(&m, buf, 10) == whole && strlen(buf) == 9 && buf[10] == 'X' &&
	          memcmp(buf, example_json, 9) == 0,
	      "cap 10 writes a 9-byte prefix");
	memset(buf, 'X', sizeof(buf));
	check(pix_render_message(&m, buf, whole) == whole && strlen(buf) == whole - 1,
	      "cap == length truncates the last byte");
	memset(buf, 'X', sizeof(buf));
	check(pix_render_message(&m, buf, whole + 1) == whole && strcmp(buf, example_json) == 0 &&
	          buf[whole + 1] == 'X',
	      "cap == length + 1 fits exactly");
	memset(buf, 'X', sizeof(buf));
	check(pix_render_json_string("\x01", buf, 4) == 8 && strcmp(buf, "\"\\u") == 0,
	      "escape cut by the cap");
}

int main(void)
{
	test_example();
	test_cpf_cnpj();
	test_ispb();
	test_end_to_end_id();
	test_valor();
	test_texts();
	test_party_fields();
	test_data_hora();
	test_nulls();
	test_escaping();
	test_render_bounds();
	free_repeats();
	printf("%d passed, %d failed\n", passed, failed);
	return failed == 0 ? 0 : 1;
}
