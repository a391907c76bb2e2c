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
static int prepare_generate(struct db_request *r, const struct route_values *v);
static void on_generate_rows(struct db_request *r, const PGresult *res);

static const struct db_request_class generate_class = {.prepare = prepare_generate,
                                                       .on_rows = on_generate_rows};

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

void handle_generate(h2o_req_t *req, const struct route_values *v)
{
	long n = parse_number(v->id);
	char detail[128];

	if (n < 1 || n > pixd_config.max_generate) {
		snprintf(detail, sizeof(detail), "number must be a decimal integer from 1 to %d",
		         pixd_config.max_generate);
		respond_problem(req, 400, detail);
		return;
	}
	db_request_start(req, sizeof(struct generate_ctx), &generate_class, v);
}

/* v->id: the {number} the handler checked (1..--max-generate: an int). */
static int prepare_generate(struct db_request *r, const struct route_values *v)
{
	struct generate_ctx *ctx = (struct generate_ctx *)r;

	memcpy(ctx->ispb, v->ispb.base, PIXD_ISPB_LEN);
	snprintf(ctx->number, sizeof(ctx->number), "%d", (int)parse_number(v->id));
	r->query.stmt = DB_GENERATE;
	r->query.params[0] = ctx->ispb;
	r->query.params[1] = ctx->number;
	r->query.params[2] = v->credential; /* with authentication, only an admin's is accepted */
	return 0;
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
