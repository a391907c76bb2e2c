/*
 * send_json.h — the body of pix_messages_send (POST /api/pix/{ispb}/msgs)
 * parsed into pix_message structs, in plain C (libc only) so the libFuzzer
 * harness test/fuzz/fuzz_send_json.c runs the very code the extension runs.
 *
 * The body is one message object or a JSON array of 1..max of them, in the
 * stream's format (docs/contract.md "The message"). The parser knows that
 * format and nothing else: unknown or repeated fields, a field of the wrong
 * JSON type, null and malformed JSON are refused, so no input needs a generic
 * JSON tree. Whether a message is a valid Pix payment is not decided here but
 * by pix_message_problem() (validate.c), the same judge as an SQL INSERT.
 *
 * Strings are unescaped into a caller-supplied arena (never malloc): each
 * unescaped string plus its NUL is no longer than its escaped form with
 * quotes, so PIX_SEND_ARENA_SIZE(len) always suffices; every write is
 * nevertheless bounds-checked.
 */
#ifndef PIX_SEND_JSON_H
#define PIX_SEND_JSON_H

#include <stddef.h>

#include "validate.h"

#define PIX_SEND_MAX_MESSAGES 1000
#define PIX_SEND_ARENA_SIZE(len) (2 * (len) + 64)

/*
 * Why a body was refused: index of the message (-1: the body as a whole) and a
 * sentence that starts with the JSON path, e.g. "messages[3].pagador.nome:
 * must be a JSON string" or "body: more than 1000 messages in one call".
 */
typedef struct pix_send_problem
{
	int			index;
	char text[	200];
} pix_send_problem;

/*
 * Parses body[0..len) (need not be NUL-terminated, may contain any bytes) into
 * messages[0..max). Returns the number of messages, or -1 with *problem
 * filled. valor is the JSON number's text as written (normalize it with
 * pix_valor_normalize); campoLivre and txId default to "" when absent, like
 * the table's defaults; any other absent field is NULL (pix_message_problem
 * says "missing").
 */
int
			pix_send_parse(const char *body, size_t len, pix_message *messages, int max,
						   char *arena, size_t arena_cap, pix_send_problem *problem);

#endif
