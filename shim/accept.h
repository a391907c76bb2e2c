/*
 * accept.h — content negotiation as HTTP defines it (RFC 9110 §12.5): Accept and Accept-Encoding.
 *
 * Both headers are comma-separated lists (possibly over several header lines) of elements with
 * parameters; "q" weighs an element from 0 to 1 and q=0 means "not acceptable". The most specific
 * range that matches a representation gives its weight.
 */
#ifndef PIXD_ACCEPT_H
#define PIXD_ACCEPT_H

#include <stddef.h>
#include <h2o.h>
#include "config.h"

/* What a read may send: application/json (one message) or multipart/json (a batch). */
enum accept_choice {
	ACCEPT_NOTHING = 0, /* 406 */
	ACCEPT_SINGLE = 1,
	ACCEPT_MULTI = PIXD_MULTI_BATCH,
};

/* Negotiates over the request's Accept headers; absent or blank means "anything" (single). */
enum accept_choice accept_negotiate(h2o_req_t *req);

/* 1 when the request's Accept-Encoding allows gzip (gzip or x-gzip or *, with q > 0). */
int accept_gzip(h2o_req_t *req);

/* The same on raw values, for tests: values[i] of lens[i], n header lines. */
enum accept_choice accept_negotiate_values(const char *const *values, const size_t *lens, size_t n);
int accept_gzip_values(const char *const *values, const size_t *lens, size_t n);

#endif
