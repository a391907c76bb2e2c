/*
 * history.c — the purge of the history: what no stream, id or re-send can need
 * any more.
 *
 * Two horizons. pix.history_retention bounds the streams' history: iterations
 * no stream can use (an open stream's current and previous ids stay), the
 * confirmed messages they carried, and closed streams left with no iteration
 * (their counters move to pix.institution, their last two ids to
 * pix.retired_id, so those still answer "gone"). pix.send_idempotency_horizon
 * bounds pix.sent_message, the endToEndIds pix_messages_send accepted, kept
 * longer than the messages so that a late re-send is still a duplicate.
 * Unconfirmed messages are never touched.
 *
 * One chunk per call, oldest first through the age indexes: each call stays
 * short (well under a client's statement timeout) and its locks brief, and its
 * cost does not grow with the history.
 */
#include "pix.h"

#include "catalog/namespace.h"
#include "catalog/pg_type.h"
#include "fmgr.h"
#include "utils/lsyscache.h"
#include "utils/timestamp.h"

#include "statement.h"

#define PIX_PURGE_CHUNK 10000
/*
 * How many of the oldest closed streams each purge call looks at besides those
 * its chunk emptied.
 */
#define PIX_PURGE_STREAMS_LOOK 1000

/*
 * One chunk of the purge, oldest first through the age index: iterations no
 * stream can use any more (an open stream's current and previous ids stay),
 * the confirmed messages they carried, both deleted through their primary keys
 * (= ANY of an array: a join could be planned as a hash of the whole table,
 * the very cost that grows with the history), and, for the last two ids of a
 * closed stream, a retired_id row so they still answer "gone". An iteration
 * goes once its batch was settled (confirmed or requeued) longer ago than the
 * retention, or delivered while it is not settled (SETTLED_AT).
 *
 * Since 1.5 the age index is iteration_by_delivery (delivered_at), which the
 * UPDATE that confirms a batch does not change, so that UPDATE is HOT. A batch
 * is never settled before it was delivered, so every iteration the rule takes
 * has delivered_at before the cutoff: the chunk walks that index in delivery
 * order and checks the rule on each row. Before 1.5 (this library on the 1.4
 * schema, until ALTER EXTENSION) the index is iteration_by_age, on the settled
 * time itself, and the chunk walks that one.
 */
#define SETTLED_AT "coalesce(i.confirmed_at, i.requeued_at, i.delivered_at)"
#define PURGE_ITERATIONS_SQL(age_filter, age_order) \
	"WITH old AS MATERIALIZED (" \
	"  SELECT i.iid, i.stream_id, i.message_ids, i.confirmed_at, s.ispb, " \
	"s.state <> 'o' AND i.seq >= s.seq - 1 AS last" \
	"    FROM pix.iteration i JOIN pix.stream s ON s.stream_id = i.stream_id" \
	"   WHERE " age_filter \
	"     AND (s.state <> 'o' OR i.seq < s.seq - 1)" \
	"   ORDER BY " age_order \
	"   LIMIT " CppAsString2(PIX_PURGE_CHUNK) ")," \
	" gone AS (DELETE FROM pix.iteration i WHERE i.iid = ANY (ARRAY(SELECT " \
	"iid FROM old)) RETURNING 1)," \
	" retired AS (INSERT INTO pix.retired_id (iid, ispb) SELECT iid, ispb " \
	"FROM old WHERE last" \
	"             ON CONFLICT DO NOTHING)," \
	" removed AS (DELETE FROM pix.message m" \
	"              WHERE m.id = ANY (ARRAY(SELECT unnest(message_ids) FROM " \
	"old WHERE confirmed_at IS NOT NULL))" \
	"             RETURNING 1)" \
	" SELECT (SELECT count(*) FROM gone), (SELECT count(*) FROM removed)," \
	"        ARRAY(SELECT DISTINCT stream_id FROM old WHERE last)"
static pix_statement purge_iterations_sql = {
	.sql = PURGE_ITERATIONS_SQL("i.delivered_at < $1 AND " SETTLED_AT " < $1",
								"i.delivered_at"),
	.nargs = 1,
	.types = {TIMESTAMPTZOID},
};
static pix_statement purge_iterations_1_4_sql = {
	.sql = PURGE_ITERATIONS_SQL(SETTLED_AT " < $1", SETTLED_AT),
	.nargs = 1,
	.types = {TIMESTAMPTZOID},
};

/*
 * Closed streams with no iteration left, among those whose last iterations
 * this chunk removed ($2) and the oldest closed ones (a bounded look through
 * stream_closed_by_age, for a stream closed after its last iteration was
 * purged): never a scan of every closed stream.
 */
static pix_statement purge_streams_sql = {
	.sql =
	"WITH candidate AS ("
	"  SELECT unnest($2::pg_catalog.int8[]) AS stream_id"
	"  UNION (SELECT stream_id FROM pix.stream WHERE state <> 'o' AND "
	"closed_at < $1"
	"          ORDER BY closed_at LIMIT " CppAsString2(
													   PIX_PURGE_STREAMS_LOOK) ")),"
	" gone AS ("
	"  DELETE FROM pix.stream s USING candidate c"
	"   WHERE s.stream_id = c.stream_id AND s.state <> 'o' AND s.closed_at < "
	"$1"
	"     AND NOT EXISTS (SELECT 1 FROM pix.iteration i WHERE i.stream_id = "
	"s.stream_id)"
	"  RETURNING s.*),"
	" per_ispb AS (SELECT ispb, count(*) AS streams, count(*) FILTER (WHERE "
	"state = 'e') AS expired,"
	"                     sum(delivered) AS delivered, sum(redelivered) AS "
	"redelivered,"
	"                     sum(confirmed) AS confirmed, sum(requeued) AS "
	"requeued"
	"                FROM gone GROUP BY ispb)"
	" UPDATE pix.institution i SET purged_streams = purged_streams + "
	"p.streams,"
	"        purged_expired = purged_expired + p.expired,"
	"        purged_delivered = purged_delivered + p.delivered,"
	"        purged_redelivered = purged_redelivered + p.redelivered,"
	"        purged_confirmed = purged_confirmed + p.confirmed,"
	"        purged_requeued = purged_requeued + p.requeued"
	"   FROM per_ispb p WHERE i.ispb = p.ispb",
	.nargs = 2,
	.types = {TIMESTAMPTZOID, INT8ARRAYOID},
};

static pix_statement forget_sql = {
	.sql =
	"DELETE FROM pix.sent_message WHERE end_to_end_id IN (SELECT end_to_end_id"
	"  FROM pix.sent_message WHERE accepted_at < $1 LIMIT " CppAsString2(
																		 PIX_PURGE_CHUNK) ")",
	.nargs = 1,
	.types = {TIMESTAMPTZOID},
};
static int64 forget_sent_ids(void);

/*
 * pix_purge_history(): removes one chunk (10 000 iterations) of the history
 * older than pix.history_retention, oldest first: iterations no stream can use
 * any more (an open stream's current and previous ids stay: the previous one
 * may still be retried), the confirmed messages they carried, and closed
 * streams with nothing left (their counters move to pix.institution; their
 * last two ids to pix.retired_id). Unconfirmed messages are never touched.
 * Returns how many iterations it removed: call it again until it returns 0.
 * One chunk per call keeps each call short (well under a client's statement
 * timeout) and its locks brief; the age index keeps each chunk's cost
 * independent of the history's size.
 */
PG_FUNCTION_INFO_V1(pix_purge_history);
Datum
pix_purge_history(PG_FUNCTION_ARGS)
{
	int			nest;
	TimestampTz cutoff = GetCurrentTimestamp() -
	(TimestampTz) pix_history_retention_s * USECS_PER_SEC;
	Datum		values[2] = {TimestampTzGetDatum(cutoff)};
	int64		iterations;
	bool		isnull;

	pix_require_read_committed();
	nest = pix_spi_connect();
	pix_execute(OidIsValid(get_relname_relid("iteration_by_delivery",
											 get_namespace_oid("pix", false)))
				? &purge_iterations_sql : &purge_iterations_1_4_sql,
				values, NULL, 1);
	iterations =
		DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0],
									SPI_tuptable->tupdesc, 1, &isnull));
	values[1] = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 3,
							  &isnull);
	pix_execute(&purge_streams_sql, values, NULL, 0);
	iterations += forget_sent_ids();
	pix_spi_finish(nest);
	PG_RETURN_INT64(iterations);
}

/*
 * Forgets one chunk of the endToEndIds pix_messages_send accepted longer ago
 * than pix.send_idempotency_horizon (a horizon of its own: a re-send must be
 * recognized long after the message's history is purged); returns how many.
 */
static int64
forget_sent_ids(void)
{
	TimestampTz cutoff =
	GetCurrentTimestamp() -
	(TimestampTz) pix_send_idempotency_horizon_s * USECS_PER_SEC;
	Datum		values[1] = {TimestampTzGetDatum(cutoff)};
	Oid			schema = get_namespace_oid("pix", true);

	/*
	 * The new library may run with the SQL of a version before 1.3 (until
	 * ALTER EXTENSION).
	 */
	if (!OidIsValid(get_relname_relid("sent_message", schema)))
		return 0;
	return pix_execute(&forget_sql, values, NULL, 0);
}
