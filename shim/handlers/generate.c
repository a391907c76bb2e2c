/*
 * handlers/generate.c — the generator: POST /api/util/msgs/{ispb}/{number} makes {number} test
 * messages for the ISPB with pix_generate_messages, 201 {"inserted":N} (--no-util: 404).
 *
 * {number} is checked here strictly (ASCII digits only, 1..--max-generate) so that junk never costs
 * a query; the database checks again against pix.max_generate (PX002 -> 400), which should match.
 * It takes no body: the router answers 413 to one before this handler runs.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "handlers.h"
#include "respond.h"

#define NUMBER_MAX_DIGITS 9 /* fits an int4 whatever --max-generate says */

struct generate_ctx {
	struct db_request base;
	char ispb[PIXD_ISPB_LEN + 1];
	char number[12];
};

static long parse_number(h2o_iovec_t s);
static void on_generate_rows(struct db_request *r, const PGresult *res);

static const struct db_request_class generate_class = {.on_rows = on_generate_rows};

/* The decimal value of s, or -1 unless s is 1..NUMBER_MAX_DIGITS ASCII digits. */
static long parse_number(h2o_iovec_t s)
{
	long n = 0;

	if (s.len == 0 || s.len > NUMBER_MAX_DIGITS)
		return -1;
	for (size_t i = 0; i < s.len; i++) {
		if (s.base[i] < '0' || s.base[i] > '9')
			return -1;
		n = n * 10 + (s.base[i] - '0');
	}
	return n;
}

void handle_generate(h2o_req_t *req, h2o_iovec_t ispb, h2o_iovec_t number, const char *credential)
{
	long n = parse_number(number);
	struct generate_ctx *ctx;
	char detail[128];

	if (n < 1 || n > pixd_config.max_generate) {
		snprintf(detail, sizeof(detail), "number must be a decimal integer from 1 to %d",
		         pixd_config.max_generate);
		respond_problem(req, 400, detail);
		return;
	}
	ctx = db_request_new(req, sizeof(*ctx), &generate_class);
	memcpy(ctx->ispb, ispb.base, PIXD_ISPB_LEN);
	snprintf(ctx->number, sizeof(ctx->number), "%ld", n);
	ctx->base.query.stmt = DB_GENERATE;
	ctx->base.query.params[0] = ctx->ispb;
	ctx->base.query.params[1] = ctx->number;
	ctx->base.query.params[2] = credential; /* with authentication, only an admin's is accepted */
	db_request_submit(&ctx->base);
}

static void on_generate_rows(struct db_request *r, const PGresult *res)
{
	h2o_req_t *req = db_request_answer(r);
	char body[64];

	if (PQntuples(res) != 1 || PQgetisnull(res, 0, 0)) {
		pixd_log("pix_generate_messages returned no count");
		respond_problem(req, 500, "internal error");
	} else {
		snprintf(body, sizeof(body), "{\"inserted\":%ld}", strtol(PQgetvalue(res, 0, 0), NULL, 10));
		respond_json(req, 201, body);
	}
}
