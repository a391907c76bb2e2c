/*
 * send.c — institutions send payments (pix_messages_send).
 *
 * SEND, in one transaction, nothing stored unless everything is valid:
 *   1. authorize: the credential (or the calling role) must be the sender's
 *      ISPB (auth.c);
 *   2. parse the body bytes (send_json.c) and judge every message with
 *      validate.c, the same judge as the INSERT trigger; valor is normalized
 *      by the trigger's own function; every pagador.ispb must be the sender.
 *      The first problem is PX010 naming index and field. With authentication
 *      (a credential, or a bound role), every recebedor.ispb must be a
 *      registered institution (PX014 naming the first message that is not);
 *   3. idempotency by endToEndId: each message's content digest is sha256 of
 *      its rendered body (render.c, as the trigger renders it), so field
 *      order, whitespace, escapes and 90.2 vs 90.20 do not make two sends
 *      differ. pix.sent_message keeps (endToEndId, digest) of every accepted
 *      id for pix.send_idempotency_horizon, beyond the history purge
 *      (history.c). Recording first, with INSERT ... ON CONFLICT DO NOTHING in
 *      endToEndId order, is the lock: a concurrent send of the same id waits
 *      for ours to commit and then sees it (no deadlock: same order). Ids
 *      recorded before are read back and compared (another digest is PX011);
 *   4. the new messages go in through the shared INSERT (insert.c), skipping
 *      ids already in pix.message (enqueued by INSERT or the generator, which
 *      record no id): those are compared with the stored body's digest
 *      afterwards. The trigger validates, renders, queues and NOTIFYs the
 *      receivers.
 */
#include "pix.h"

#include "access/xact.h"
#include "catalog/pg_type.h"
#include "common/cryptohash.h"
#include "common/sha2.h"
#include "executor/spi.h"
#include "funcapi.h"
#include "mb/pg_wchar.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/hsearch.h"
#include "utils/timestamp.h"

#include "auth.h"
#include "insert.h"
#include "render.h"
#include "send_json.h"
#include "statement.h"

/* One message of the body and what the send learns about it. */
typedef struct outgoing
{
	pix_message m;
	char		valor[PIX_VALOR_TEXT_CAP];
	uint8		digest[PG_SHA256_DIGEST_LENGTH];
} outgoing;

/*
 * Per endToEndId of the body: its first message, and whether this call stores
 * it.
 */
typedef struct id_entry
{
	char		id[PIX_END_TO_END_ID_LEN + 1];	/* hash key */
	int			first;			/* index of its first message in the body */
	bool		recorded_now;	/* our INSERT into pix.sent_message took it */
	bool		enqueued;		/* already in pix.message */
} id_entry;

static pix_statement record_sql = {
	.sql =
	"INSERT INTO pix.sent_message (end_to_end_id, content_digest, "
	"sender_ispb, accepted_at)"
	" SELECT t.id, t.digest, $3, $4"
	"   FROM ROWS FROM (pg_catalog.unnest($1), pg_catalog.unnest($2)) AS "
	"t(id, digest)"
	"  ORDER BY t.id ON CONFLICT (end_to_end_id) DO NOTHING RETURNING "
	"end_to_end_id",
	.nargs = 4,
	.types = {TEXTARRAYOID, BYTEAARRAYOID, TEXTOID, TIMESTAMPTZOID},
};
static pix_statement recorded_digests_sql = {
	.sql = "SELECT s.end_to_end_id, s.content_digest FROM pix.sent_message s"
	"  WHERE s.end_to_end_id = ANY ($1)",
	.nargs = 1,
	.types = {TEXTARRAYOID},
	.cursor_options = CURSOR_OPT_CUSTOM_PLAN,
};
static pix_statement enqueued_digests_sql = {
	.sql =
	"SELECT m.end_to_end_id, pg_catalog.sha256(pg_catalog.convert_to(m.body, "
	"'UTF8'))"
	"  FROM pix.message m WHERE m.end_to_end_id = ANY ($1)",
	.nargs = 1,
	.types = {TEXTARRAYOID},
	.cursor_options = CURSOR_OPT_CUSTOM_PLAN,
};
static void raise_invalid(const char *detail) pg_attribute_noreturn();
static int	parse_body(text *body, const char *ispb, outgoing **out);
static void judge(outgoing *msgs, int n, const char *ispb);
static void digest_of(outgoing *o);
static void require_registered_receivers(outgoing *msgs, int n);
static HTAB *index_ids(outgoing *msgs, int n);
static int
			record_and_check(outgoing *msgs, int n, HTAB *ids, const char *ispb);
static void check_digests(HTAB *ids, outgoing *msgs, pix_statement *st,
						  Datum *values, bool enqueued);
static void check_digest(HTAB *ids, outgoing *msgs, const char *id,
						 bytea *digest, bool enqueued);
static int	enqueue_new(outgoing *msgs, int n, HTAB *ids);
static Datum
			send_result(FunctionCallInfo fcinfo, int accepted, int duplicates);

/*
 * pix_messages_send(ispb text, body text, credential text) RETURNS pix_sent
 * (accepted int, duplicates int, body text).
 */
PG_FUNCTION_INFO_V1(pix_messages_send);
Datum
pix_messages_send(PG_FUNCTION_ARGS)
{
	bool		authenticated;
	char	   *ispb = pix_authorized_ispb(fcinfo, 2, &authenticated);
	outgoing   *msgs;
	HTAB	   *ids;
	int			n,
				accepted;

	pix_require_read_committed();
	if (PG_ARGISNULL(1))
		raise_invalid("body: missing");
	n = parse_body(PG_GETARG_TEXT_PP(1), ispb, &msgs);
	judge(msgs, n, ispb);
	if (authenticated)
		require_registered_receivers(msgs, n);
	ids = index_ids(msgs, n);

	SPI_connect();
	record_and_check(msgs, n, ids, ispb);
	accepted = enqueue_new(msgs, n, ids);
	SPI_finish();
	hash_destroy(ids);
	PG_RETURN_DATUM(send_result(fcinfo, accepted, n - accepted));
}

static void
raise_invalid(const char *detail)
{
	ereport(ERROR,
			(errcode(ERRCODE_PIX_INVALID_SEND), errmsg("invalid messages"),
			 errdetail("%s", detail),
			 errhint("Nothing of this call was stored; fix the message and send again.")));
	pg_unreachable();
}

/* The body as UTF-8 bytes, parsed; raises PX010 with the first problem. */
static int
parse_body(text *body, const char *ispb, outgoing **out)
{
	const char *bytes = VARDATA_ANY(body);
	size_t		len = VARSIZE_ANY_EXHDR(body);
	int			encoding = GetDatabaseEncoding();
	pix_message *parsed = palloc(PIX_SEND_MAX_MESSAGES * sizeof(pix_message));
	pix_send_problem problem;
	char	   *arena;
	int			n;

	if (encoding != PG_UTF8 && encoding != PG_SQL_ASCII)
	{
		const char *converted = pg_server_to_any(bytes, (int) len, PG_UTF8);

		/*
		 * A conversion returns a new NUL-terminated string, or the input
		 * itself (empty input).
		 */
		if (converted != bytes)
			len = strlen(converted);
		bytes = converted;
	}
	arena = palloc(PIX_SEND_ARENA_SIZE(len));
	n = pix_send_parse(bytes, len, parsed, PIX_SEND_MAX_MESSAGES, arena,
					   PIX_SEND_ARENA_SIZE(len), &problem);

	/*
	 * Messages before the one the parser stopped at are complete: an invalid
	 * one among them is the first invalid message, so it is reported rather
	 * than the later syntax error.
	 */
	*out = palloc0(Max(n, problem.index + 1) * sizeof(outgoing));
	for (int i = 0; i < (n >= 0 ? n : problem.index); i++)
		(*out)[i].m = parsed[i];
	pfree(parsed);
	if (n < 0)
	{
		judge(*out, Max(problem.index, 0), ispb);
		raise_invalid(problem.text);
	}
	return n;
}

/*
 * Every message as the INSERT trigger judges it, and paid by the sender (when
 * ispb is not NULL); the first problem wins.
 */
static void
judge(outgoing *msgs, int n, const char *ispb)
{
	for (int i = 0; i < n; i++)
	{
		outgoing   *o = &msgs[i];

		/*
		 * In the trigger's order: valor's form first unless missing, then the
		 * validator's.
		 */
		const char *problem = o->m.valor != NULL
		? pix_valor_normalize(o->m.valor, o->valor)
		: NULL;

		if (problem == NULL)
		{
			o->m.valor = o->m.valor != NULL ? o->valor : NULL;
			problem = pix_message_problem(&o->m);
		}
		if (problem == NULL && ispb != NULL &&
			strcmp(o->m.pagador.ispb, ispb) != 0)
			raise_invalid(psprintf("messages[%d].pagador.ispb: must be the sender's ISPB %s", i,
								   ispb));
		if (problem != NULL)
			raise_invalid(psprintf("messages[%d].%s", i, problem));
		digest_of(o);
	}
}

/*
 * With authentication, a payment goes only to a registered institution (PX014
 * naming the first message that is not): nobody would ever collect it, and its
 * ISPB would be a label chosen by the sender (README, "Messages nobody
 * collects").
 */
static void
require_registered_receivers(outgoing *msgs, int n)
{
	const char **receivers = palloc(Max(n, 1) * sizeof(char *));
	int			first;

	for (int i = 0; i < n; i++)
		receivers[i] = msgs[i].m.recebedor.ispb;
	first = pix_first_unregistered(receivers, n);
	if (first >= 0)
		pix_raise_unregistered(psprintf("messages[%d].recebedor.ispb", first),
							   receivers[first]);
	pfree(receivers);
}

/* sha256 of the body exactly as the trigger will render and store it. */
static void
digest_of(outgoing *o)
{
	size_t		len = pix_render_message(&o->m, NULL, 0);
	char	   *rendered = palloc(len + 1);
	pg_cryptohash_ctx *ctx = pg_cryptohash_create(PG_SHA256);

	pix_render_message(&o->m, rendered, len + 1);
	if (ctx == NULL || pg_cryptohash_init(ctx) < 0 ||
		pg_cryptohash_update(ctx, (uint8 *) rendered, len) < 0 ||
		pg_cryptohash_final(ctx, o->digest, sizeof(o->digest)) < 0)
		elog(ERROR, "pix: could not compute SHA-256: %s",
			 pg_cryptohash_error(ctx));
	pg_cryptohash_free(ctx);
	pfree(rendered);
}

/*
 * One entry per distinct endToEndId; a repeated id with other content in the
 * body is PX011.
 */
static HTAB *
index_ids(outgoing *msgs, int n)
{
	/*
	 * In the call's memory context, so that an error (PX011 below) frees it
	 * too.
	 */
	HASHCTL		ctl = {.keysize = PIX_END_TO_END_ID_LEN + 1,
		.entrysize = sizeof(id_entry),
	.hcxt = CurrentMemoryContext};
	HTAB	   *ids = hash_create("pix send ids", n, &ctl,
								  HASH_ELEM | HASH_STRINGS | HASH_CONTEXT);

	for (int i = 0; i < n; i++)
	{
		bool		found;
		id_entry   *e =
		hash_search(ids, msgs[i].m.end_to_end_id, HASH_ENTER, &found);

		if (!found)
		{
			e->first = i;
			e->recorded_now = false;
			e->enqueued = false;
		}
		else if (memcmp(msgs[e->first].digest, msgs[i].digest,
						PG_SHA256_DIGEST_LENGTH) != 0)
			ereport(ERROR,
					(errcode(ERRCODE_PIX_SEND_CONFLICT),
					 errmsg("endToEndId sent twice with different content"),
					 errdetail("messages[%d].endToEndId: %s is also messages[%d], with other "
							   "content.",
							   i, e->id, e->first)));
	}
	return ids;
}

/*
 * Records every id (step 3 in the header) and checks each against what was
 * accepted before.
 */
static int
record_and_check(outgoing *msgs, int n, HTAB *ids, const char *ispb)
{
	Datum	   *id_datums = palloc(n * sizeof(Datum)),
			   *digest_datums = palloc(n * sizeof(Datum));
	Datum		values[4];
	SPITupleTable *rows;
	int			recorded;

	for (int i = 0; i < n; i++)
	{
		bytea	   *d = palloc(VARHDRSZ + PG_SHA256_DIGEST_LENGTH);

		SET_VARSIZE(d, VARHDRSZ + PG_SHA256_DIGEST_LENGTH);
		memcpy(VARDATA(d), msgs[i].digest, PG_SHA256_DIGEST_LENGTH);
		id_datums[i] = CStringGetTextDatum(msgs[i].m.end_to_end_id);
		digest_datums[i] = PointerGetDatum(d);
	}
	values[0] = PointerGetDatum(
								construct_array(id_datums, n, TEXTOID, -1, false, TYPALIGN_INT));
	values[1] = PointerGetDatum(
								construct_array(digest_datums, n, BYTEAOID, -1, false, TYPALIGN_INT));
	values[2] = CStringGetTextDatum(ispb);
	values[3] = TimestampTzGetDatum(GetCurrentTimestamp());

	recorded = pix_execute(&record_sql, values, NULL, 0);
	rows = SPI_tuptable;
	for (int i = 0; i < recorded; i++)
	{
		id_entry   *e =
		hash_search(ids, SPI_getvalue(rows->vals[i], rows->tupdesc, 1),
					HASH_FIND, NULL);

		if (e != NULL)
			e->recorded_now = true;
	}

	/*
	 * Ids recorded before (by a committed send) are compared with what they
	 * were sent with.
	 */
	if (recorded < hash_get_num_entries(ids))
		check_digests(ids, msgs, &recorded_digests_sql, values, false);
	return recorded;
}

/*
 * Runs st (ids in values[0]; rows of id and digest) and checks every row
 * against the body.
 */
static void
check_digests(HTAB *ids, outgoing *msgs, pix_statement *st, Datum *values,
			  bool enqueued)
{
	int			found = pix_execute(st, values, NULL, 0);
	SPITupleTable *rows = SPI_tuptable;

	for (int i = 0; i < found; i++)
	{
		bool		isnull;

		check_digest(ids, msgs, SPI_getvalue(rows->vals[i], rows->tupdesc, 1),
					 DatumGetByteaPP(SPI_getbinval(rows->vals[i],
												   rows->tupdesc, 2, &isnull)),
					 enqueued);
	}
}

static void
check_digest(HTAB *ids, outgoing *msgs, const char *id, bytea *digest,
			 bool enqueued)
{
	id_entry   *e = hash_search(ids, id, HASH_FIND, NULL);

	if (e == NULL)
		return;
	if (VARSIZE_ANY_EXHDR(digest) != PG_SHA256_DIGEST_LENGTH ||
		memcmp(VARDATA_ANY(digest), msgs[e->first].digest,
			   PG_SHA256_DIGEST_LENGTH) != 0)
		ereport(ERROR,
				(errcode(ERRCODE_PIX_SEND_CONFLICT),
				 errmsg("endToEndId already accepted with different content"),
				 errdetail("messages[%d].endToEndId: %s was accepted before with other "
						   "content.",
						   e->first, id),
				 errhint("Nothing of this call was stored.")));
	e->enqueued |= enqueued;
}

/*
 * Inserts the first message of every id recorded by this call. An id already
 * in pix.message (enqueued by INSERT or the generator, which do not record
 * ids) is skipped by the INSERT and then compared with what is stored: the
 * same content is a duplicate, other content PX011.
 */
static int
enqueue_new(outgoing *msgs, int n, HTAB *ids)
{
	Datum	   *columns[PIX_MESSAGE_COLUMNS];
	Datum	   *skipped = palloc(n * sizeof(Datum));
	Datum		skipped_ids[1];
	int			rows = 0,
				inserted,
				nskipped = 0;
	HASH_SEQ_STATUS scan;
	id_entry   *e;

	for (int c = 0; c < PIX_MESSAGE_COLUMNS; c++)
		columns[c] = palloc(n * sizeof(Datum));
	for (int i = 0; i < n; i++)
	{
		Datum		ts;

		e = hash_search(ids, msgs[i].m.end_to_end_id, HASH_FIND, NULL);
		if (e->first != i || !e->recorded_now)
			continue;
		ts =
			DirectFunctionCall3(timestamptz_in,
								CStringGetDatum(msgs[i].m.data_hora_pagamento),
								ObjectIdGetDatum(InvalidOid),
								Int32GetDatum(-1));
		pix_message_row(columns, rows++, &msgs[i].m, DatumGetTimestampTz(ts));
	}
	if (rows == 0)
		return 0;
	inserted = (int) pix_messages_insert(columns, rows, true);
	for (int i = 0; i < inserted; i++)
	{
		e = hash_search(ids,
						SPI_getvalue(SPI_tuptable->vals[i],
									 SPI_tuptable->tupdesc, 1),
						HASH_FIND, NULL);
		if (e != NULL)
			e->enqueued = true; /* by this call */
	}
	if (inserted < rows)
	{
		hash_seq_init(&scan, ids);
		while ((e = hash_seq_search(&scan)) != NULL)
			if (e->recorded_now && !e->enqueued)
				skipped[nskipped++] = CStringGetTextDatum(e->id);
		skipped_ids[0] =
			PointerGetDatum(construct_array(skipped, nskipped, TEXTOID, -1,
											false, TYPALIGN_INT));
		check_digests(ids, msgs, &enqueued_digests_sql, skipped_ids, true);
	}
	return inserted;
}

static Datum
send_result(FunctionCallInfo fcinfo, int accepted, int duplicates)
{
	TupleDesc	desc;
	Datum		values[3];
	bool		nulls[3] = {false, false, false};

	if (get_call_result_type(fcinfo, NULL, &desc) != TYPEFUNC_COMPOSITE)
		elog(ERROR,
			 "pix: pix_messages_send must return the composite type pix_sent");
	desc = BlessTupleDesc(desc);
	values[0] = Int32GetDatum(accepted);
	values[1] = Int32GetDatum(duplicates);
	values[2] = CStringGetTextDatum(
									psprintf("{\"accepted\":%d,\"duplicates\":%d}", accepted, duplicates));
	return HeapTupleGetDatum(heap_form_tuple(desc, values, nulls));
}
