/*
 * render.h — a Pix message as the JSON object the contract serves
 * (docs/contract.md, "The message").
 *
 * Pure C (libc only), like validate.h: the INSERT trigger renders each message
 * once and stores the bytes, so a read copies them; pix_messages_send digests
 * what it will store with it, and the unit tests and the fuzzers render with
 * the same code.
 */
#ifndef PIX_RENDER_H
#define PIX_RENDER_H

#include <stddef.h>

#include "validate.h"

/*
 * Writes m as one JSON object, fields in the contract's order, no spaces;
 * valor is written as its text form (a JSON number). Like snprintf: returns
 * the length of the whole object (without the NUL) and writes at most cap
 * bytes including a NUL when cap > 0, so pix_render_message(m, NULL, 0) + 1 is
 * the buffer to allocate. Render only messages that pix_message_problem()
 * accepts; a NULL field is written as null rather than crashing.
 */
size_t		pix_render_message(const pix_message *m, char *out, size_t cap);

/*
 * Appends s as a JSON string (quotes included); the same contract as
 * pix_render_message.
 */
size_t		pix_render_json_string(const char *s, char *out, size_t cap);

#endif
