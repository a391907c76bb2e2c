/*
 * stream.c — streams: start, read, stop, expiry and history purge. The state machine of the
 * product.
 *
 * STORAGE
 *   pix.message    append-only log of immutable messages (id = enqueue order). Never updated.
 *   pix.ready      one narrow row (ispb, message_id) per message that is free to be delivered.
 *   pix.stream     one row per stream: state (o/c/e), seq, current_iid, pending_ids, last_read_at.
 *   pix.iteration  one row per id ever issued: its stream and seq, the batch delivered with it, and
 *                  what became of that batch (confirmed_at or requeued_at).
 *   pix.institution  one row per ISPB: the lock that serializes stream starts of that ISPB.
 *
 * THE INVARIANT
 *   At every committed state, each message that is not confirmed is in exactly one place: a row of
 *   pix.ready, or the pending_ids of exactly one open stream. A confirmed message is in neither and
 * never returns to either. Hence no message is lost (it stays somewhere until confirmed) and no
 * message is held by two live streams.
 *
 * TRANSITIONS (each inside one function call, one transaction)
 *   enqueue   INSERT into pix.message; the statement trigger inserts its pix.ready rows and NOTIFYs
 *             pix_message with the ISPB.
 *   claim     claim.c deletes up to n ready rows of the ISPB (skipping rows other claimers hold)
 * and the same transaction stores their ids as the stream's pending_ids. A ready row can be deleted
 *             by one transaction only, so two streams can never claim the same message.
 *   confirm   a call on the stream's current id marks the pending batch's iteration confirmed_at
 * and empties pending_ids. Nothing is inserted into pix.ready: the messages are done. requeue
 * expiry, or a stop on the previous id, moves pending_ids back to pix.ready in its requeued range,
 * which claims take before the fresh one (so a redelivered message goes before every newer one),
 * marks the iteration requeued_at, closes the stream, and NOTIFYs.
 *
 * IDS
 *   Each read that delivers messages issues a new id (seq + 1); an empty read keeps the id. A call
 * is classified by the seq of the iteration its id names: seq == stream.seq is the current id
 * (confirm and read on); seq == stream.seq - 1 while a batch is pending is the previous id (the
 * collector lost our answer: replay it, confirm nothing); anything older, or any id of a closed or
 * expired stream, is gone (PX005). Unknown, malformed and other ISPBs' ids are not found (PX004),
 * with the same message.
 *
 * LOCKING
 *   Every call on a stream first locks its pix.stream row (FOR NO KEY UPDATE), so calls on one
 * stream are serialized: a retry racing a new read, a stop racing a read, an expiry racing a read
 * all see the other's committed outcome. Starts of one ISPB are serialized by its pix.institution
 * row so the count of open streams cannot be overrun by concurrent starts; the lock is held to
 * commit, after the new stream row is written. Reads of one ISPB never lock anything shared: claims
 * skip locked ready rows, and the expiry sweep skips stream rows that their readers hold (a stream
 * being read is alive).
 *
 * EXPIRY
 *   A stream whose last_read_at is older than pix.stream_idle_timeout plus the liveness slack (a
 * quarter of the timeout, at most 15 s) is dead. An empty read with nothing pending to confirm
 * writes nothing while last_read_at is younger than the slack (it does not even lock the row: see
 * quiet_read), so last_read_at may lag the true last read by up to the slack, and the slack added
 * to the timeout keeps expiry from coming earlier than the timeout after the true last read.
 * pix_streams_keepalive() refreshes the streams whose reads the HTTP server holds parked. Its ids answer gone
 * at once; its slot and batch are recovered by the next sweep: every start of its ISPB sweeps that
 * ISPB first (so the count of open streams is true), reads sweep it before claiming (so the
 * requeued batch goes to that very reader) at most once a second per backend (a quarter of the
 * timeout if shorter), and pix_expire_streams() sweeps them all. Errors never write, so a call that
 * answers "gone" leaves the sweep to the others.
 *
 * All functions run in READ COMMITTED: each statement, and the claim scan, sees what is committed
 * now.
 */
#include "pix.h"

#include "access/htup_details.h"
#include "access/xact.h"
#include "catalog/pg_type.h"
#include "commands/async.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "funcapi.h"
#include "lib/stringinfo.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/timestamp.h"

#include "claim.h"
#include "iteration_id.h"

PG_FUNCTION_INFO_V1(pix_stream_start);
PG_FUNCTION_INFO_V1(pix_stream_next);
PG_FUNCTION_INFO_V1(pix_stream_stop);
PG_FUNCTION_INFO_V1(pix_expire_streams);
PG_FUNCTION_INFO_V1(pix_purge_history);
PG_FUNCTION_INFO_V1(pix_streams_keepalive);

#define PIX_NOTIFY_CHANNEL "pix_message"
#define PIX_PURGE_CHUNK 10000
/* The most an empty read may leave last_read_at behind the true last read (see LIVENESS). */
#define PIX_LIVENESS_SLACK_MAX_MS 15000

/* A prepared statement, planned once per backend and kept (SPI_keepplan). */
typedef struct statement {
	const char *sql;
	int nargs;
	Oid types[5];
	SPIPlanPtr plan;
} statement;

/* The stream row as a call sees it once it holds the row's lock. */
typedef struct stream_row {
	int64 stream_id;
	char ispb[9];
	char state;
	int32 seq;
	char current_iid[PIX_IID_LEN + 1];
	Datum pending_ids; /* bigint[], in the SPI context */
	int pending_count;
	TimestampTz last_read_at;
	int32 called_seq; /* seq of the iteration the caller's id names */
} stream_row;

/* What a read answers: becomes the pix_read composite. */
typedef struct read_result {
	char iid[PIX_IID_LEN + 1];
	char *ispb;
	int count;
	char *body; /* NULL when count == 0; allocated in the caller's context */
} read_result;

/* The stream an id of this ISPB names: another ISPB's id finds nothing, and locks nothing. */
#define FIND_STREAM_SQL                                                                            \
	"SELECT s.stream_id, s.ispb, s.state, s.seq, s.current_iid, s.pending_ids, s.last_read_at,"   \
	"       i.seq"                                                                                 \
	"  FROM pix.iteration i JOIN pix.stream s ON s.stream_id = i.stream_id"                       \
	" WHERE i.iid = $1 AND s.ispb = $2"
static statement lock_stream_sql = {FIND_STREAM_SQL " FOR NO KEY UPDATE OF s", 2, {TEXTOID, TEXTOID}};
static statement peek_stream_sql = {FIND_STREAM_SQL, 2, {TEXTOID, TEXTOID}};
static statement confirm_sql = {
    "UPDATE pix.iteration SET confirmed_at = $2 WHERE iid = $1", 2, {TEXTOID, TIMESTAMPTZOID}};
static statement advance_sql = {
    "UPDATE pix.stream SET seq = seq + 1, current_iid = $2, pending_ids = $3, last_read_at = $4,"
    "       delivered = delivered + cardinality($3), redelivered = redelivered + $5,"
    "       confirmed = confirmed + cardinality(pending_ids)"
    " WHERE stream_id = $1",
    5,
    {INT8OID, TEXTOID, INT8ARRAYOID, TIMESTAMPTZOID, INT4OID}};
static statement stay_sql = {"UPDATE pix.stream SET pending_ids = '{}', last_read_at = $2,"
                             "       confirmed = confirmed + cardinality(pending_ids)"
                             " WHERE stream_id = $1",
                             2,
                             {INT8OID, TIMESTAMPTZOID}};
static statement touch_sql = {
    "UPDATE pix.stream SET last_read_at = $2 WHERE stream_id = $1", 2, {INT8OID, TIMESTAMPTZOID}};
static statement close_confirming_sql = {
    "UPDATE pix.stream SET state = 'c', pending_ids = '{}', closed_at = $2,"
    "       confirmed = confirmed + cardinality(pending_ids)"
    " WHERE stream_id = $1",
    2,
    {INT8OID, TIMESTAMPTZOID}};
static statement close_requeuing_sql = {
    "UPDATE pix.stream SET state = 'c', pending_ids = '{}', closed_at = $2,"
    "       requeued = requeued + cardinality(pending_ids)"
    " WHERE stream_id = $1",
    2,
    {INT8OID, TIMESTAMPTZOID}};
static statement insert_iteration_sql = {
    "INSERT INTO pix.iteration (iid, stream_id, seq, message_ids, delivered_at)"
    " VALUES ($1, $2, $3, $4, $5)",
    5,
    {TEXTOID, INT8OID, INT4OID, INT8ARRAYOID, TIMESTAMPTZOID}};
static statement insert_stream_sql = {
    "INSERT INTO pix.stream (ispb, seq, current_iid, pending_ids, opened_at, last_read_at, "
    "delivered,"
    "                        redelivered)"
    " VALUES ($1, 1, $2, $3, $4, $4, cardinality($3), $5) RETURNING stream_id",
    5,
    {TEXTOID, TEXTOID, INT8ARRAYOID, TIMESTAMPTZOID, INT4OID}};
static statement bodies_sql = {
    "SELECT body FROM pix.message WHERE id = ANY ($1) ORDER BY id", 1, {INT8ARRAYOID}};
static statement requeue_sql = {"INSERT INTO pix.ready (ispb, fresh, message_id) SELECT $1, false, "
                                "unnest($2::pg_catalog.int8[])",
                                2,
                                {TEXTOID, INT8ARRAYOID}};
static statement mark_requeued_sql = {
    "UPDATE pix.iteration SET requeued_at = $2 WHERE iid = $1", 2, {TEXTOID, TIMESTAMPTZOID}};
static statement lock_institution_sql = {
    "SELECT 1 FROM pix.institution WHERE ispb = $1 FOR UPDATE", 1, {TEXTOID}};
static statement insert_institution_sql = {
    "INSERT INTO pix.institution (ispb) VALUES ($1) ON CONFLICT DO NOTHING", 1, {TEXTOID}};
static statement count_open_sql = {
    "SELECT count(*) FROM pix.stream WHERE ispb = $1 AND state = 'o'", 1, {TEXTOID}};
static statement purge_iterations_sql = {
    "WITH old AS ("
    "  SELECT i.iid FROM pix.iteration i JOIN pix.stream s ON s.stream_id = i.stream_id"
    "   WHERE (s.state <> 'o' OR i.seq < s.seq - 1)"
    "     AND coalesce(i.confirmed_at, i.requeued_at, i.delivered_at) < $1"
    "   LIMIT " CppAsString2(
        PIX_PURGE_CHUNK) "),"
                         " gone AS (DELETE FROM pix.iteration i USING old WHERE i.iid = old.iid"
                         "          RETURNING i.message_ids, i.confirmed_at),"
                         " removed AS (DELETE FROM pix.message m WHERE m.id IN"
                         "             (SELECT unnest(message_ids) FROM gone WHERE confirmed_at IS "
                         "NOT NULL) RETURNING 1)"
                         " SELECT (SELECT count(*) FROM gone), (SELECT count(*) FROM removed)",
    1,
    {TIMESTAMPTZOID}};
static statement purge_streams_sql = {
    "WITH gone AS ("
    "  DELETE FROM pix.stream s WHERE s.state <> 'o' AND s.closed_at < $1"
    "     AND NOT EXISTS (SELECT 1 FROM pix.iteration i WHERE i.stream_id = s.stream_id)"
    "  RETURNING s.*),"
    " per_ispb AS (SELECT ispb, count(*) AS streams, count(*) FILTER (WHERE state = 'e') AS "
    "expired,"
    "                     sum(delivered) AS delivered, sum(redelivered) AS redelivered,"
    "                     sum(confirmed) AS confirmed, sum(requeued) AS requeued"
    "                FROM gone GROUP BY ispb)"
    " UPDATE pix.institution i SET purged_streams = purged_streams + p.streams,"
    "        purged_expired = purged_expired + p.expired,"
    "        purged_delivered = purged_delivered + p.delivered,"
    "        purged_redelivered = purged_redelivered + p.redelivered,"
    "        purged_confirmed = purged_confirmed + p.confirmed,"
    "        purged_requeued = purged_requeued + p.requeued"
    "   FROM per_ispb p WHERE i.ispb = p.ispb",
    1,
    {TIMESTAMPTZOID}};

static int batch_size_arg(FunctionCallInfo fcinfo, int argno);
static void iid_arg(FunctionCallInfo fcinfo, int argno, char *iid);
static Datum wellformed_ids(ArrayType *array);
static void raise_not_found(void) pg_attribute_noreturn();
static void raise_gone(void) pg_attribute_noreturn();
static int execute(statement *st, Datum *values, const char *nulls, bool read_only, long limit);
static bool find_stream(statement *st, const char *ispb, const char *iid, stream_row *s);
static TimestampTz lock_stream(const char *ispb, const char *iid, stream_row *s);
static bool quiet_read(const char *ispb, const char *iid, read_result *r);
static TimestampTz idle_cutoff(TimestampTz now);
static int64 liveness_slack_us(void);
static Datum ids_array(const int64 *ids, int count);
static int array_length_of(Datum array);
static void sweep_ispb(const char *ispb, int64 except_stream, TimestampTz now);
static void requeue(const char *ispb, const char *iid, Datum pending_ids, TimestampTz now);
static void read_on(stream_row *s, int max, TimestampTz now, read_result *r, MemoryContext outer);
static void replay(stream_row *s, int max, TimestampTz now, read_result *r, MemoryContext outer);
static char *render_batch(Datum ids, int max, MemoryContext outer);
static Datum read_result_datum(FunctionCallInfo fcinfo, const read_result *r);

/* ------------------------------------------------------------------------------------------------
 * SQL-callable functions
 * ------------------------------------------------------------------------------------------------
 */

/*
 * pix_stream_start(ispb, max_messages) opens a stream and reads from it. Always issues an id.
 */
Datum pix_stream_start(PG_FUNCTION_ARGS)
{
	char *ispb = pix_ispb_arg(PG_ARGISNULL(0) ? NULL : PG_GETARG_TEXT_PP(0));
	int max = batch_size_arg(fcinfo, 1);
	MemoryContext outer = CurrentMemoryContext;
	TimestampTz now = GetCurrentTimestamp();
	int64 ids[PIX_MAX_BATCH];
	Datum values[5];
	read_result r = {.ispb = ispb};
	int64 open_streams;
	int redelivered;
	bool isnull;

	pix_require_read_committed();
	SPI_connect();

	values[0] = CStringGetTextDatum(ispb);
	if (execute(&lock_institution_sql, values, NULL, false, 1) == 0) {
		execute(&insert_institution_sql, values, NULL, false, 0);
		execute(&lock_institution_sql, values, NULL, false, 1);
	}
	sweep_ispb(ispb, 0, now);
	execute(&count_open_sql, values, NULL, false, 1);
	open_streams =
	    DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
	if (open_streams >= pix_max_collectors)
		ereport(ERROR, (errcode(ERRCODE_PIX_TOO_MANY_STREAMS),
		                errmsg("too many open streams for ISPB %s", ispb),
		                errdetail("At most %d streams may be open at once for one ISPB.",
		                          pix_max_collectors),
		                errhint("Close a stream with DELETE, or wait for an idle one to expire.")));

	r.count = pix_claim_ready(ispb, max, ids, &redelivered);
	pix_iid_new(r.iid);
	values[1] = CStringGetTextDatum(r.iid);
	values[2] = ids_array(ids, r.count);
	values[3] = TimestampTzGetDatum(now);
	values[4] = Int32GetDatum(redelivered);
	execute(&insert_stream_sql, values, NULL, false, 0);

	values[1] = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull);
	values[0] = CStringGetTextDatum(r.iid);
	values[2] = Int32GetDatum(1);
	values[3] = ids_array(ids, r.count);
	values[4] = TimestampTzGetDatum(now);
	execute(&insert_iteration_sql, values, NULL, false, 0);

	r.body = r.count > 0 ? render_batch(values[3], max, outer) : NULL;
	SPI_finish();
	PG_RETURN_DATUM(read_result_datum(fcinfo, &r));
}

/*
 * pix_stream_next(ispb, interation_id, max_messages): the current id confirms and reads on; the
 * previous id replays the pending batch.
 */
Datum pix_stream_next(PG_FUNCTION_ARGS)
{
	char *ispb = pix_ispb_arg(PG_ARGISNULL(0) ? NULL : PG_GETARG_TEXT_PP(0));
	int max = batch_size_arg(fcinfo, 2);
	MemoryContext outer = CurrentMemoryContext;
	char iid[PIX_IID_LEN + 1];
	read_result r = {.ispb = ispb};
	stream_row s;
	TimestampTz now;

	iid_arg(fcinfo, 1, iid);
	pix_require_read_committed();
	SPI_connect();

	if (!quiet_read(ispb, iid, &r)) {
		now = lock_stream(ispb, iid, &s);
		if (s.called_seq == s.seq)
			read_on(&s, max, now, &r, outer);
		else if (s.called_seq == s.seq - 1 && s.pending_count > 0)
			replay(&s, max, now, &r, outer);
		else
			raise_gone();
	}

	SPI_finish();
	PG_RETURN_DATUM(read_result_datum(fcinfo, &r));
}

/*
 * pix_stream_stop(ispb, interation_id): on the current id, confirms the pending batch and closes;
 * on the previous id (the collector never got the last batch), closes and requeues that batch.
 * Returns how many messages this call confirmed.
 */
Datum pix_stream_stop(PG_FUNCTION_ARGS)
{
	char *ispb = pix_ispb_arg(PG_ARGISNULL(0) ? NULL : PG_GETARG_TEXT_PP(0));
	char iid[PIX_IID_LEN + 1];
	Datum values[2];
	statement *close = &close_confirming_sql;
	stream_row s;
	int confirmed = 0;
	TimestampTz now;

	iid_arg(fcinfo, 1, iid);
	pix_require_read_committed();
	SPI_connect();

	now = lock_stream(ispb, iid, &s);
	if (s.called_seq == s.seq) {
		if (s.pending_count > 0) {
			values[0] = CStringGetTextDatum(s.current_iid);
			values[1] = TimestampTzGetDatum(now);
			execute(&confirm_sql, values, NULL, false, 0);
			confirmed = s.pending_count;
		}
	} else if (s.called_seq == s.seq - 1 && s.pending_count > 0) {
		requeue(s.ispb, s.current_iid, s.pending_ids, now);
		close = &close_requeuing_sql;
	} else
		raise_gone();

	values[0] = Int64GetDatum(s.stream_id);
	values[1] = TimestampTzGetDatum(now);
	execute(close, values, NULL, false, 0);
	SPI_finish();
	PG_RETURN_INT32(confirmed);
}

/*
 * pix_expire_streams(): expires every idle stream of every ISPB now and requeues their batches.
 * Reads and starts do this lazily for their own ISPB; the HTTP server also calls this periodically
 * so that slots and batches come back even where no collector is reading.
 */
Datum pix_expire_streams(PG_FUNCTION_ARGS)
{
	static statement sweep_all_sql = {
	    "UPDATE pix.stream s SET state = 'e', closed_at = $2, pending_ids = '{}',"
	    "       requeued = s.requeued + cardinality(old.pending_ids)"
	    "  FROM (SELECT stream_id, pending_ids FROM pix.stream"
	    "         WHERE state = 'o' AND last_read_at < $1 FOR UPDATE SKIP LOCKED) old"
	    " WHERE s.stream_id = old.stream_id"
	    " RETURNING s.ispb, s.current_iid, old.pending_ids",
	    2,
	    {TIMESTAMPTZOID, TIMESTAMPTZOID}};
	TimestampTz now = GetCurrentTimestamp();
	Datum values[2];
	int expired;

	pix_require_read_committed();
	SPI_connect();
	values[0] = TimestampTzGetDatum(idle_cutoff(now));
	values[1] = TimestampTzGetDatum(now);
	expired = execute(&sweep_all_sql, values, NULL, false, 0);
	{
		SPITupleTable *rows = SPI_tuptable;

		for (int i = 0; i < expired; i++) {
			bool isnull;
			char *ispb = SPI_getvalue(rows->vals[i], rows->tupdesc, 1);
			char *iid = SPI_getvalue(rows->vals[i], rows->tupdesc, 2);
			Datum pending = SPI_getbinval(rows->vals[i], rows->tupdesc, 3, &isnull);

			if (!isnull && array_length_of(pending) > 0)
				requeue(ispb, iid, pending, now);
		}
	}
	SPI_finish();
	PG_RETURN_INT32(expired);
}

/*
 * pix_purge_history(): removes one chunk (10 000 iterations) of the history older than
 * pix.history_retention: iterations no stream can use any more (an open stream's current and
 * previous ids stay: the previous one may still be retried), the confirmed messages they carried,
 * and closed streams with nothing left (their counters move to pix.institution). Unconfirmed
 * messages are never touched. Returns how many iterations it removed: call it again until it
 * returns 0. One chunk per call keeps each call short (well under a client's statement timeout) and
 * its locks brief.
 */
Datum pix_purge_history(PG_FUNCTION_ARGS)
{
	TimestampTz cutoff =
	    GetCurrentTimestamp() - (TimestampTz)pix_history_retention_s * USECS_PER_SEC;
	Datum values[1] = {TimestampTzGetDatum(cutoff)};
	int64 iterations;
	bool isnull;

	pix_require_read_committed();
	SPI_connect();
	execute(&purge_iterations_sql, values, NULL, false, 1);
	iterations =
	    DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
	execute(&purge_streams_sql, values, NULL, false, 0);
	SPI_finish();
	PG_RETURN_INT64(iterations);
}

/*
 * pix_streams_keepalive(interation_ids): marks the live streams those ids name (their current id, or
 * their previous id while its batch is pending) as read now, in one statement, and returns how many
 * it marked. The HTTP server calls it for all its parked reads at once, so a collector waiting in a
 * long poll keeps its stream alive without a commit of its own. NULL elements and malformed ids are
 * ignored; a stream already dead is not revived; a stream whose row another call holds right now is
 * skipped (that call is a read, and marks it itself).
 */
Datum pix_streams_keepalive(PG_FUNCTION_ARGS)
{
	static statement keepalive_sql = {
	    "UPDATE pix.stream s SET last_read_at = $2"
	    "  FROM (SELECT s.stream_id FROM pix.iteration i JOIN pix.stream s USING (stream_id)"
	    "         WHERE i.iid = ANY ($1) AND s.state = 'o' AND s.last_read_at >= $3"
	    "           AND (i.seq = s.seq OR (i.seq = s.seq - 1 AND cardinality(s.pending_ids) > 0))"
	    "           FOR NO KEY UPDATE OF s SKIP LOCKED) live"
	    " WHERE s.stream_id = live.stream_id",
	    3,
	    {TEXTARRAYOID, TIMESTAMPTZOID, TIMESTAMPTZOID}};
	TimestampTz now = GetCurrentTimestamp();
	Datum values[3];
	Datum ids;
	int marked;

	if (PG_ARGISNULL(0))
		PG_RETURN_INT32(0);
	ids = wellformed_ids(PG_GETARG_ARRAYTYPE_P(0));
	if (array_length_of(ids) == 0)
		PG_RETURN_INT32(0);

	pix_require_read_committed();
	SPI_connect();
	values[0] = ids;
	values[1] = TimestampTzGetDatum(now);
	values[2] = TimestampTzGetDatum(idle_cutoff(now));
	marked = execute(&keepalive_sql, values, NULL, false, 0);
	SPI_finish();
	PG_RETURN_INT32(marked);
}

/* ------------------------------------------------------------------------------------------------
 * Arguments
 * ------------------------------------------------------------------------------------------------
 */

static int batch_size_arg(FunctionCallInfo fcinfo, int argno)
{
	int32 n = PG_ARGISNULL(argno) ? 0 : PG_GETARG_INT32(argno);

	if (n < 1 || n > PIX_MAX_BATCH)
		ereport(ERROR, (errcode(ERRCODE_PIX_INVALID_COUNT), errmsg("invalid max_messages"),
		                errdetail("max_messages must be between 1 and %d.", PIX_MAX_BATCH)));
	return n;
}

/* Copies a well-formed id into iid; anything else is "not found", like an id that does not exist.
 */
static void iid_arg(FunctionCallInfo fcinfo, int argno, char *iid)
{
	text *arg = PG_ARGISNULL(argno) ? NULL : PG_GETARG_TEXT_PP(argno);

	if (arg == NULL || !pix_iid_is_wellformed(VARDATA_ANY(arg), VARSIZE_ANY_EXHDR(arg)))
		raise_not_found();
	memcpy(iid, VARDATA_ANY(arg), PIX_IID_LEN);
	iid[PIX_IID_LEN] = '\0';
}

/*
 * The well-formed ids of a text[] of any shape, as a one-dimensional text[] (NULLs and anything
 * that is not an id dropped), so that only ids ever reach an index lookup.
 */
static Datum wellformed_ids(ArrayType *array)
{
	Datum *elems;
	bool *nulls;
	int n;
	int kept = 0;

	if (ARR_ELEMTYPE(array) != TEXTOID)
		elog(ERROR, "pix: interation_ids must be text[]");
	deconstruct_array(array, TEXTOID, -1, false, TYPALIGN_INT, &elems, &nulls, &n);
	for (int i = 0; i < n; i++) {
		text *id = nulls[i] ? NULL : DatumGetTextPP(elems[i]);

		if (id != NULL && pix_iid_is_wellformed(VARDATA_ANY(id), VARSIZE_ANY_EXHDR(id)))
			elems[kept++] = PointerGetDatum(id);
	}
	return PointerGetDatum(construct_array(elems, kept, TEXTOID, -1, false, TYPALIGN_INT));
}

static void raise_not_found(void)
{
	ereport(ERROR, (errcode(ERRCODE_PIX_STREAM_NOT_FOUND), errmsg("stream not found"),
	                errdetail("No open stream of this ISPB has this interation id.")));
	pg_unreachable();
}

static void raise_gone(void)
{
	ereport(ERROR, (errcode(ERRCODE_PIX_STREAM_GONE), errmsg("stream gone"),
	                errdetail("This interation id was closed, expired or superseded."),
	                errhint("Start a new stream.")));
	pg_unreachable();
}

/* ------------------------------------------------------------------------------------------------
 * Stream state
 * ------------------------------------------------------------------------------------------------
 */

/* Runs a kept plan, preparing it on first use. Returns SPI_processed; errors are not expected. */
static int execute(statement *st, Datum *values, const char *nulls, bool read_only, long limit)
{
	int rc;

	if (st->plan == NULL) {
		SPIPlanPtr plan = SPI_prepare(st->sql, st->nargs, st->types);

		if (plan == NULL)
			elog(ERROR, "pix: could not prepare \"%s\": %s", st->sql,
			     SPI_result_code_string(SPI_result));
		SPI_keepplan(plan);
		st->plan = plan;
	}
	rc = SPI_execute_plan(st->plan, values, nulls, read_only, limit);
	if (rc < 0)
		elog(ERROR, "pix: \"%s\" failed: %s", st->sql, SPI_result_code_string(rc));
	return (int)SPI_processed;
}

/*
 * Reads the stream row an id of this ISPB names with st (locking it or not). False when there is
 * none: an unknown id, or another ISPB's.
 */
static bool find_stream(statement *st, const char *ispb, const char *iid, stream_row *s)
{
	Datum values[2] = {CStringGetTextDatum(iid), CStringGetTextDatum(ispb)};
	HeapTuple row;
	TupleDesc desc;
	bool isnull;
	char *text_value;

	if (execute(st, values, NULL, false, 1) == 0)
		return false;
	row = SPI_tuptable->vals[0];
	desc = SPI_tuptable->tupdesc;

	s->stream_id = DatumGetInt64(SPI_getbinval(row, desc, 1, &isnull));
	strlcpy(s->ispb, SPI_getvalue(row, desc, 2), sizeof(s->ispb));
	s->state = DatumGetChar(SPI_getbinval(row, desc, 3, &isnull));
	s->seq = DatumGetInt32(SPI_getbinval(row, desc, 4, &isnull));
	text_value = SPI_getvalue(row, desc, 5);
	strlcpy(s->current_iid, text_value ? text_value : "", sizeof(s->current_iid));
	s->pending_ids = SPI_getbinval(row, desc, 6, &isnull);
	s->pending_count = array_length_of(s->pending_ids);
	s->last_read_at = DatumGetTimestampTz(SPI_getbinval(row, desc, 7, &isnull));
	s->called_seq = DatumGetInt32(SPI_getbinval(row, desc, 8, &isnull));
	return true;
}

/*
 * The preamble of every call on a stream: lock the row the id names, then check that the stream is
 * alive. Returns the time the call acts at, read once the lock is held: after a long wait for the
 * lock, a time read before it would record a last read already in the past. An unknown id or
 * another ISPB's is "not found" (no oracle); a closed, expired or idle stream is "gone".
 */
static TimestampTz lock_stream(const char *ispb, const char *iid, stream_row *s)
{
	TimestampTz now;

	if (!find_stream(&lock_stream_sql, ispb, iid, s))
		raise_not_found();
	now = GetCurrentTimestamp();
	if (s->state != 'o' || s->last_read_at < idle_cutoff(now))
		raise_gone();
	return now;
}

/*
 * An empty read that writes nothing: a call on the current id of a live stream with nothing pending
 * to confirm, a recent enough last read, and nothing to claim. It reads the stream row without
 * locking it (a lock is a write), so it answers as of a moment ago: as if it had come just before
 * any call on the stream that has not committed yet. False when any of that does not hold: the
 * caller then takes the locked path, which decides everything again.
 */
static bool quiet_read(const char *ispb, const char *iid, read_result *r)
{
	TimestampTz now = GetCurrentTimestamp();
	stream_row s;

	if (!find_stream(&peek_stream_sql, ispb, iid, &s))
		raise_not_found();
	if (s.state != 'o' || s.called_seq != s.seq || s.pending_count > 0 ||
	    s.last_read_at < now - liveness_slack_us())
		return false;
	if (pix_claim_sweep_due(ispb, now, Min(1000, pix_stream_idle_timeout_ms / 4)))
		sweep_ispb(ispb, s.stream_id, now);
	if (pix_claim_peek(ispb))
		return false;
	strlcpy(r->iid, s.current_iid, sizeof(r->iid));
	r->count = 0;
	r->body = NULL;
	return true;
}

/*
 * A stream is dead once its recorded last read is older than the idle timeout plus the slack: an
 * empty read may leave the record up to the slack behind the true last read, so a stream never
 * expires earlier than the timeout after its last read, and at most the slack later.
 */
static TimestampTz idle_cutoff(TimestampTz now)
{
	return now - (TimestampTz)pix_stream_idle_timeout_ms * 1000 - liveness_slack_us();
}

/* A quarter of the idle timeout, at most PIX_LIVENESS_SLACK_MAX_MS. */
static int64 liveness_slack_us(void)
{
	return (int64)Min(pix_stream_idle_timeout_ms / 4, PIX_LIVENESS_SLACK_MAX_MS) * 1000;
}

static Datum ids_array(const int64 *ids, int count)
{
	Datum elems[PIX_MAX_BATCH];

	for (int i = 0; i < count; i++)
		elems[i] = Int64GetDatum(ids[i]);
	return PointerGetDatum(
	    construct_array(elems, count, INT8OID, sizeof(int64), FLOAT8PASSBYVAL, TYPALIGN_DOUBLE));
}

static int array_length_of(Datum array)
{
	ArrayType *a = DatumGetArrayTypeP(array);

	return ArrayGetNItems(ARR_NDIM(a), ARR_DIMS(a));
}

/*
 * Expires this ISPB's idle streams (but never the caller's own, which it has just checked and is
 * about to touch) and requeues their batches, so the caller's claim sees them at the head of the
 * queue.
 */
static void sweep_ispb(const char *ispb, int64 except_stream, TimestampTz now)
{
	static statement sweep_sql = {
	    "UPDATE pix.stream s SET state = 'e', closed_at = $3, pending_ids = '{}',"
	    "       requeued = s.requeued + cardinality(old.pending_ids)"
	    "  FROM (SELECT stream_id, pending_ids FROM pix.stream"
	    "         WHERE ispb = $1 AND state = 'o' AND last_read_at < $2 AND stream_id <> $4"
	    "           FOR UPDATE SKIP LOCKED) old"
	    " WHERE s.stream_id = old.stream_id"
	    " RETURNING s.current_iid, old.pending_ids",
	    4,
	    {TEXTOID, TIMESTAMPTZOID, TIMESTAMPTZOID, INT8OID}};
	Datum values[4];
	SPITupleTable *rows;
	int expired;

	values[0] = CStringGetTextDatum(ispb);
	values[1] = TimestampTzGetDatum(idle_cutoff(now));
	values[2] = TimestampTzGetDatum(now);
	values[3] = Int64GetDatum(except_stream);
	expired = execute(&sweep_sql, values, NULL, false, 0);
	rows = SPI_tuptable;
	for (int i = 0; i < expired; i++) {
		bool isnull;
		char *iid = SPI_getvalue(rows->vals[i], rows->tupdesc, 1);
		Datum pending = SPI_getbinval(rows->vals[i], rows->tupdesc, 2, &isnull);

		if (!isnull && array_length_of(pending) > 0)
			requeue(ispb, iid, pending, now);
	}
}

/* Puts a batch back at the head of the ready queue (the requeued range) and wakes the collectors.
 */
static void requeue(const char *ispb, const char *iid, Datum pending_ids, TimestampTz now)
{
	Datum values[2];

	values[0] = CStringGetTextDatum(ispb);
	values[1] = pending_ids;
	execute(&requeue_sql, values, NULL, false, 0);
	values[0] = CStringGetTextDatum(iid);
	values[1] = TimestampTzGetDatum(now);
	execute(&mark_requeued_sql, values, NULL, false, 0);
	Async_Notify(PIX_NOTIFY_CHANNEL, ispb);
}

/*
 * A call on the current id: confirm what is pending, then claim the next batch. A read that finds
 * nothing keeps the id (the collector will call it again) with nothing pending.
 */
static void read_on(stream_row *s, int max, TimestampTz now, read_result *r, MemoryContext outer)
{
	int64 ids[PIX_MAX_BATCH];
	Datum values[5];
	int redelivered;

	if (s->pending_count > 0) {
		values[0] = CStringGetTextDatum(s->current_iid);
		values[1] = TimestampTzGetDatum(now);
		execute(&confirm_sql, values, NULL, false, 0);
	}
	if (pix_claim_sweep_due(s->ispb, now, Min(1000, pix_stream_idle_timeout_ms / 4)))
		sweep_ispb(s->ispb, s->stream_id, now);
	r->count = pix_claim_ready(s->ispb, max, ids, &redelivered);

	if (r->count == 0) {
		strlcpy(r->iid, s->current_iid, sizeof(r->iid));
		r->body = NULL;
		/* Nothing to confirm and a recent enough last read: this read writes nothing. */
		if (s->pending_count == 0 && s->last_read_at >= now - liveness_slack_us())
			return;
		values[0] = Int64GetDatum(s->stream_id);
		values[1] = TimestampTzGetDatum(now);
		execute(&stay_sql, values, NULL, false, 0);
		return;
	}

	pix_iid_new(r->iid);
	values[0] = CStringGetTextDatum(r->iid);
	values[1] = Int64GetDatum(s->stream_id);
	values[2] = Int32GetDatum(s->seq + 1);
	values[3] = ids_array(ids, r->count);
	values[4] = TimestampTzGetDatum(now);
	execute(&insert_iteration_sql, values, NULL, false, 0);

	{
		Datum advance[5] = {Int64GetDatum(s->stream_id), values[0], values[3], values[4],
		                    Int32GetDatum(redelivered)};

		execute(&advance_sql, advance, NULL, false, 0);
	}
	r->body = render_batch(values[3], max, outer);
}

/* A call on the previous id: the same batch and the same next id again; nothing confirmed or
 * claimed. */
static void replay(stream_row *s, int max, TimestampTz now, read_result *r, MemoryContext outer)
{
	Datum values[2];

	values[0] = Int64GetDatum(s->stream_id);
	values[1] = TimestampTzGetDatum(now);
	execute(&touch_sql, values, NULL, false, 0);
	strlcpy(r->iid, s->current_iid, sizeof(r->iid));
	r->count = s->pending_count;
	r->body = render_batch(s->pending_ids, max, outer);
}

/*
 * The body exactly as HTTP serves it: one object when the caller asked for one message, else an
 * array (even of one). Bodies were rendered and validated at INSERT, so this only copies bytes.
 */
static char *render_batch(Datum ids, int max, MemoryContext outer)
{
	Datum values[1] = {ids};
	int found = execute(&bodies_sql, values, NULL, false, 0);
	bool as_array = max > 1 || found > 1;
	MemoryContext spi = MemoryContextSwitchTo(outer);
	StringInfoData body;

	initStringInfo(&body);
	if (as_array)
		appendStringInfoChar(&body, '[');
	for (int i = 0; i < found; i++) {
		bool isnull;
		text *one =
		    DatumGetTextPP(SPI_getbinval(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 1, &isnull));

		if (i > 0)
			appendStringInfoChar(&body, ',');
		appendBinaryStringInfo(&body, VARDATA_ANY(one), VARSIZE_ANY_EXHDR(one));
	}
	if (as_array)
		appendStringInfoChar(&body, ']');
	MemoryContextSwitchTo(spi);
	return body.data;
}

static Datum read_result_datum(FunctionCallInfo fcinfo, const read_result *r)
{
	TupleDesc desc;
	Datum values[4];
	bool nulls[4] = {false, false, false, r->body == NULL};

	if (get_call_result_type(fcinfo, NULL, &desc) != TYPEFUNC_COMPOSITE)
		elog(ERROR, "pix: function must return the composite type pix_read");
	desc = BlessTupleDesc(desc);
	values[0] = CStringGetTextDatum(r->iid);
	values[1] = CStringGetTextDatum(psprintf("/api/pix/%s/stream/%s", r->ispb, r->iid));
	values[2] = Int32GetDatum(r->count);
	values[3] = r->body ? CStringGetTextDatum(r->body) : (Datum)0;
	return HeapTupleGetDatum(heap_form_tuple(desc, values, nulls));
}
