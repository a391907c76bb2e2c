/*
 * test_send_json.c — unit tests of the send body's parser (extension/send_json.c) and of
 * pix_valor_normalize (extension/validate.c), which the INSERT trigger and the send share.
 *
 * No PostgreSQL needed. Prints "N passed, N failed"; exits non-zero when anything failed.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "render.h"
#include "send_json.h"
#include "validate.h"

static pix_message msgs[PIX_SEND_MAX_MESSAGES];

static int parse(const char *body, int max, pix_send_problem *problem);
static void refused(const char *body, const char *want, const char *what);
static void test_valor_normalize(void);
static void test_example_round_trip(void);
static void test_shapes(void);
static void test_limit(void);
static void test_refusals(void);

static const char example[] =
    "{\"endToEndId\":\"E320749862024022119277T3lEBbUM0z\",\"valor\":90.20,"
    "\"pagador\":{\"nome\":\"Marcos "
    "Jos\xc3\xa9\",\"cpfCnpj\":\"98716278151\",\"ispb\":\"32074986\","
    "\"agencia\":\"0001\",\"contaTransacional\":\"1231231\",\"tipoConta\":\"CACC\"},"
    "\"recebedor\":{\"nome\":\"Flavio "
    "Jos\xc3\xa9\",\"cpfCnpj\":\"77615678242\",\"ispb\":\"00000000\","
    "\"agencia\":\"0361\",\"contaTransacional\":\"1210098\",\"tipoConta\":\"SVGS\"},"
    "\"campoLivre\":\"\",\"txId\":\"h7a786d8a7s6gd1hgs\","
    "\"dataHoraPagamento\":\"2022-07-23T19:47:18.108Z\"}";

static char arena[PIX_SEND_ARENA_SIZE(200000)];

static int parse(const char *body, int max, pix_send_problem *problem)
{
	return pix_send_parse(body, strlen(body), msgs, max, arena, sizeof(arena), problem);
}

static void refused(const char *body, const char *want, const char *what)
{
	pix_send_problem problem;

	check(parse(body, PIX_SEND_MAX_MESSAGES, &problem) == -1, what);
	check_str(problem.text, want, what);
}

static void test_valor_normalize(void)
{
	char out[PIX_VALOR_TEXT_CAP];

	check(pix_valor_normalize("90.2", out) == NULL, "90.2 accepted");
	check_str(out, "90.20", "90.2 -> 90.20");
	check(pix_valor_normalize("5", out) == NULL && strcmp(out, "5.00") == 0, "5 -> 5.00");
	check(pix_valor_normalize("1.500000", out) == NULL && strcmp(out, "1.50") == 0,
	      "trailing zeros go");
	check_str(pix_valor_normalize("90.205", out),
	          "valor: at most two decimal places (a payment is never rounded)", "90.205 refused");
	check_str(pix_valor_normalize("-1", out), "valor: must be greater than zero", "negative");
	check_str(pix_valor_normalize("1e3", out),
	          "valor: must be a decimal number without exponent, e.g. 90.20", "exponent");
	check_str(pix_valor_normalize("1.", out),
	          "valor: must be a decimal number without exponent, e.g. 90.20",
	          "dot without decimals");
	check_str(pix_valor_normalize("12345678901234.00", out),
	          "valor: at most 13 integer digits (less than 10000000000000.00)", "14 digits");
	check(pix_valor_normalize("9999999999999.99", out) == NULL, "13 digits accepted");
	check_str(pix_valor_normalize(NULL, out), "valor: missing", "NULL");
}

/* The contract's example parses to the fields that render back to the same bytes. */
static void test_example_round_trip(void)
{
	pix_send_problem problem;
	char valor[PIX_VALOR_TEXT_CAP];
	char rendered[sizeof(example) + 16];

	check(parse(example, 10, &problem) == 1, "the example parses");
	check_str(msgs[0].pagador.nome, "Marcos Jos\xc3\xa9", "pagador.nome");
	check_str(msgs[0].valor, "90.20", "valor as written");
	check(pix_valor_normalize(msgs[0].valor, valor) == NULL, "valor normalizes");
	msgs[0].valor = valor;
	check(pix_message_problem(&msgs[0]) == NULL, "the example is valid");
	pix_render_message(&msgs[0], rendered, sizeof(rendered));
	check_str(rendered, example, "renders back to the same bytes");
}

static void test_shapes(void)
{
	pix_send_problem problem;

	check(parse("[{},{}]", 10, &problem) == 2, "an array of two");
	check(msgs[1].end_to_end_id == NULL, "absent field is NULL");
	check_str(msgs[1].campo_livre, "", "absent campoLivre is empty, like the table's default");
	check(parse(" \t\r\n[ {} ]\n", 10, &problem) == 1, "whitespace anywhere");
	check(parse("{\"txId\":\"\\u00e9\\ud83d\\ude00\\n\\\"\"}", 10, &problem) == 1, "escapes");
	check_str(msgs[0].tx_id, "\xc3\xa9\xf0\x9f\x98\x80\n\"", "escapes decoded to UTF-8");
}

static void test_limit(void)
{
	static char body[200000];
	pix_send_problem problem;
	size_t len = 0;

	body[len++] = '[';
	for (int i = 0; i < PIX_SEND_MAX_MESSAGES + 1; i++)
		len += (size_t)sprintf(body + len, "%s{}", i ? "," : "");
	body[len++] = ']';
	body[len] = '\0';
	check(parse(body, PIX_SEND_MAX_MESSAGES, &problem) == -1, "1001 refused");
	check_str(problem.text, "body: more than 1000 messages in one call", "1001: the sentence");
	check(problem.index == -1, "1001: the body as a whole");
	body[len - 4] = ']';
	body[len - 3] = '\0';
	check(parse(body, PIX_SEND_MAX_MESSAGES, &problem) == PIX_SEND_MAX_MESSAGES, "1000 accepted");
}

static void test_refusals(void)
{
	refused("", "body: must be a message object or an array of messages", "empty");
	refused("[]", "body: no messages (an empty array)", "empty array");
	refused("[{}, 3]", "messages[1]: must be a JSON object", "a number in the array");
	refused("{\"valor\":\"1.00\"}", "messages[0].valor: must be a JSON number, not a string",
	        "valor as a string");
	refused("{\"pagador\":{\"ispb\":1}}", "messages[0].pagador.ispb: must be a JSON string",
	        "ispb as a number");
	refused("{\"foo\":1}", "messages[0].foo: unknown field", "unknown field");
	refused("{\"txId\":\"a\",\"txId\":\"b\"}", "messages[0].txId: repeated field", "repeated");
	refused("{\"txId\":\"\\u0000\"}", "messages[0].txId: must not contain U+0000", "NUL escape");
	refused("{\"txId\":\"\\udc00\"}", "messages[0].txId: unpaired UTF-16 surrogate in \\u escape",
	        "low surrogate alone");
	refused("{} x", "body: invalid JSON at byte 3, unexpected data after the JSON value",
	        "trailing data");
	refused("{\"txId\":\"abc", "messages[0].txId: invalid JSON at byte 12, unterminated string",
	        "unterminated");
}

int main(void)
{
	test_valor_normalize();
	test_example_round_trip();
	test_shapes();
	test_limit();
	test_refusals();
	printf("%d passed, %d failed\n", passed, failed);
	return failed ? 1 : 0;
}
