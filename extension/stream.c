/*
 * stream.c — streams: start, read, stop, stop all, expiry and keepalive. The
 * state machine of the product: every transition of a stream is here (the
 * purge of their history is history.c's).
 *
 * STORAGE
 *   pix.message      append-only log of immutable messages (id = enqueue
 *                    order). Never updated.
 *   pix.ready        one narrow row (ispb, fresh, message_id) per message free
 *                    to be delivered.
 *   pix.stream       one row per stream: state (o/c/e), seq, current_iid,
 *                    pending_ids, last_read_at, and counters.
 *   pix.iteration    one row per id ever issued: its stream and seq, the batch
 *                    delivered with it (and in which shape), and what became
 *                    of that batch (confirmed_at or requeued_at).
 *   pix.institution  one row per ISPB: the lock that serializes stream starts
 *                    of that ISPB, and the counters of its purged streams.
 *   pix.retired_id   the last two ids of each purged stream, so they still
 *                    answer "gone".
 *
 * THE INVARIANT
 *   At every committed state, each message that is not confirmed is in exactly
 *   one place: a row of pix.ready, or the pending_ids of exactly one open
 *   stream. A confirmed message is in neither and never returns to either.
 *   Hence no message is lost (it stays somewhere until confirmed) and no
 *   message is held by two live streams.
 *
 * TRANSITIONS (each inside one function call, one transaction)
 *   enqueue  INSERT into pix.message; the statement trigger inserts its
 *            pix.ready rows (fresh) and NOTIFYs pix_message with the ISPB.
 *   claim    claim.c deletes up to n ready rows of the ISPB (skipping rows
 *            other claimers hold), and the same transaction stores their ids
 *            as the stream's pending_ids. A ready row can be deleted by one
 *            transaction only, so two streams never claim the same message.
 *   confirm  a call on the stream's current id marks the pending batch's
 *            iteration confirmed_at and empties pending_ids. Nothing goes back
 *            to pix.ready: the messages are done.
 *   close    a stop on the current id confirms the pending batch and closes
 *            the stream (state c); a stop on the previous id closes it and
 *            requeues.
 *   requeue  expiry (state e), a stop on the previous id, or stop all (every
 *            open stream of an ISPB, state c) moves pending_ids back to
 *            pix.ready in its requeued range (fresh = false), which claims
 *            take before the fresh one, so a redelivered message goes before
 *            every newer one; marks the iteration requeued_at, and NOTIFYs.
 *            One function, requeue(), does it for all three.
 *
 * IDS
 *   Each read that delivers messages issues a new id (seq + 1); an empty read
 *   keeps the id. A call is classified by the seq of the iteration its id
 *   names:
 *     seq == stream.seq       the current id: confirm and read on;
 *     seq == stream.seq - 1   while a batch is pending, the previous id: the
 *                             collector lost our answer; replay it (same
 *                             bytes), confirm nothing;
 *     anything older          gone (PX005), as is any id of a closed or
 *                             expired stream, also after the purge for the
 *                             last two ids of a stream (pix.retired_id).
 *   Unknown, malformed and other ISPBs' ids are not found (PX004), with the
 *   same message: the ISPB is part of the lookup, so another ISPB's id finds
 *   (and locks) nothing.
 *
 * LOCKING
 *   Every call on a stream that may write first locks its pix.stream row (FOR
 *   NO KEY UPDATE), so calls on one stream are serialized: a retry racing a
 *   new read, a stop racing a read, an expiry racing a read all see the
 *   other's committed outcome. Starts of one ISPB are serialized by its
 *   pix.institution row, held to commit after the new stream row is written,
 *   so the count of open streams cannot be overrun by concurrent starts. Stop
 *   all locks every open stream row of its ISPB (FOR UPDATE), waiting for the
 *   reads in flight. Reads of one ISPB never lock anything shared: claims skip
 *   the ready rows other transactions hold (claim.c deletes without waiting
 *   and without a tuple lock), and the expiry sweep skips stream rows that their
 *   readers hold (a stream being read is alive). The statements that may wait
 *   for a row (the stream row, the institution row, stop all's rows) run
 *   through pix_execute_locking (statement.c): the wait is bounded by
 *   pix.lock_timeout, then PX009, since a client that leaves a transaction
 *   open after a call holds those rows until it ends. The one call that locks
 *   nothing is the quiet read (below).

 * LIVENESS AND EXPIRY
 *   A stream whose last_read_at is older than pix.stream_idle_timeout plus the
 *   liveness slack (a sixteenth of the timeout, at most 15 s) is dead. A read
 *   on the current id with nothing pending, a last_read_at younger than the
 *   slack and nothing claimable answers without locking or writing anything
 *   (quiet_read), so last_read_at may lag the true last read by up to the
 *   slack (a backend whose last claim of that ISPB filled its batch skips
 *   the quiet check and takes the locked path, which answers the same); adding the slack to the timeout keeps expiry from coming earlier
 *   than the timeout after the true last read. pix_streams_keepalive()
 *   refreshes the streams whose reads the HTTP server holds parked. A dead
 *   stream's ids answer gone at once; its slot and batch are recovered by the
 *   next sweep: every start of its ISPB sweeps that ISPB first and counts only
 *   live streams, reads sweep it before claiming (so the requeued batch goes
 *   to that very reader) at most once a second per backend (a quarter of the
 *   timeout if shorter), and pix_expire_streams() sweeps them all. Errors
 *   never write, so a call that answers "gone" leaves the sweep to the others.
 *
 * All functions run in READ COMMITTED: each statement, and the claim scan,
 * sees what is committed now. Their statements are planned once per backend
 * and always as index plans, whatever ANALYZE last saw (pix_spi_connect in
 * statement.c).
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
#include "miscadmin.h"
#include "nodes/nodeFuncs.h"
#include "storage/proc.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/timestamp.h"

#include "auth.h"
#include "claim.h"
#include "iteration_id.h"
#include "statement.h"

/*
 * The most an empty read may leave last_read_at behind the true last read (see
 * LIVENESS).
 */
#define PIX_LIVENESS_SLACK_MAX_MS 15000

/*
 * The stream row as a call sees it (once it holds the row's lock, unless the
 * call is quiet).
 */
typedef struct stream_row
{
	int64		stream_id;
	char		state;
	int64		seq;
	char		current_iid[PIX_IID_LEN + 1];
	Datum		pending_ids;	/* bigint[], in the SPI context */
	int			pending_count;
	TimestampTz last_read_at;
	int64		called_seq;		/* seq of the iteration the caller's id names */
} stream_row;

/* What a read answers: becomes the pix_read composite. */
typedef struct read_result
{
	char		iid[PIX_IID_LEN + 1];
	char	   *ispb;
	int			count;
	char	   *body;			/* NULL when count == 0; allocated in the
								 * caller's context */
} read_result;

/*
 * The stream an id of this ISPB names: another ISPB's id finds nothing, and
 * locks nothing.
 */
#define FIND_STREAM_SQL \
	"SELECT s.stream_id, s.state, s.seq, s.current_iid, s.pending_ids," \
	"       s.last_read_at, i.seq" \
	"  FROM pix.iteration i JOIN pix.stream s ON s.stream_id = i.stream_id" \
	" WHERE i.iid = $1 AND s.ispb = $2"
static pix_statement lock_stream_sql = {
	.sql = FIND_STREAM_SQL " FOR NO KEY UPDATE OF s",
	.nargs = 2,
	.types = {TEXTOID, TEXTOID},
};
static pix_statement peek_stream_sql = {
	.sql = FIND_STREAM_SQL,
	.nargs = 2,
	.types = {TEXTOID, TEXTOID},
};
static pix_statement retired_sql = {
	.sql = "SELECT 1 FROM pix.retired_id WHERE iid = $1 AND ispb = $2",
	.nargs = 2,
	.types = {TEXTOID, TEXTOID},
};

/*
 * A delivering read, in one statement: confirm the pending batch's iteration
 * ($7, NULL when nothing was pending), issue the new one, advance the stream,
 * and fetch the bodies to answer.
 */
static pix_statement deliver_sql = {
	.sql =
	"WITH confirmed AS (UPDATE pix.iteration SET confirmed_at = $5 WHERE iid "
	"= $7),"
	" issued AS (INSERT INTO pix.iteration (iid, stream_id, seq, message_ids, "
	"delivered_at, as_array)"
	"            VALUES ($2, $1, $8, $3, $5, $6)),"
	" advanced AS (UPDATE pix.stream SET seq = $8, current_iid = $2, "
	"pending_ids = $3, last_read_at = $5,"
	"                     delivered = delivered + cardinality($3), "
	"redelivered = redelivered + $4,"
	"                     confirmed = confirmed + cardinality(pending_ids)"
	"               WHERE stream_id = $1)"
	" SELECT body FROM pix.message WHERE id = ANY ($3) ORDER BY id",
	.nargs = 8,
	.types = {INT8OID, TEXTOID, INT8ARRAYOID, INT4OID, TIMESTAMPTZOID, BOOLOID,
	TEXTOID, INT8OID},
};

/*
 * An empty read that must write: confirm what was pending ($3, or NULL) and
 * record the read.
 */
static pix_statement stay_sql = {
	.sql =
	"WITH confirmed AS (UPDATE pix.iteration SET confirmed_at = $2 WHERE iid "
	"= $3)"
	" UPDATE pix.stream SET pending_ids = '{}', last_read_at = $2,"
	"        confirmed = confirmed + cardinality(pending_ids)"
	"  WHERE stream_id = $1",
	.nargs = 3,
	.types = {INT8OID, TIMESTAMPTZOID, TEXTOID},
};

/*
 * A replay: record the read and fetch the pending batch's bodies and the shape
 * it was sent in.
 */
static pix_statement replay_sql = {
	.sql =
	"WITH touched AS (UPDATE pix.stream SET last_read_at = $2 WHERE stream_id "
	"= $1)"
	" SELECT m.body, i.as_array FROM pix.iteration i JOIN pix.message m ON "
	"m.id = ANY (i.message_ids)"
	"  WHERE i.iid = $3 ORDER BY m.id",
	.nargs = 3,
	.types = {INT8OID, TIMESTAMPTZOID, TEXTOID},
};

/*
 * A start, in one statement: the stream row, its first iteration, and the
 * bodies to answer.
 */
static pix_statement open_sql = {
	.sql =
	"WITH opened AS (INSERT INTO pix.stream (ispb, seq, current_iid, "
	"pending_ids, opened_at, last_read_at,"
	"                                        delivered, redelivered)"
	"                VALUES ($1, 1, $2, $3, $4, $4, cardinality($3), $5) "
	"RETURNING stream_id),"
	" issued AS (INSERT INTO pix.iteration (iid, stream_id, seq, message_ids, "
	"delivered_at, as_array)"
	"            SELECT $2, stream_id, 1, $3, $4, $6 FROM opened)"
	" SELECT body FROM pix.message WHERE id = ANY ($3) ORDER BY id",
	.nargs = 6,
	.types = {TEXTOID, TEXTOID, INT8ARRAYOID, TIMESTAMPTZOID, INT4OID,
	BOOLOID},
};

/*
 * A stop: close, confirming ($3 names the pending batch's iteration, or NULL)
 * or requeuing.
 */
static pix_statement close_confirming_sql = {
	.sql =
	"WITH confirmed AS (UPDATE pix.iteration SET confirmed_at = $2 WHERE iid "
	"= $3)"
	" UPDATE pix.stream SET state = 'c', pending_ids = '{}', closed_at = $2,"
	"        confirmed = confirmed + cardinality(pending_ids)"
	"  WHERE stream_id = $1",
	.nargs = 3,
	.types = {INT8OID, TIMESTAMPTZOID, TEXTOID},
};
static pix_statement close_requeuing_sql = {
	.sql =
	"UPDATE pix.stream SET state = 'c', pending_ids = '{}', closed_at = $2,"
	"       requeued = requeued + cardinality(pending_ids)"
	" WHERE stream_id = $1",
	.nargs = 2,
	.types = {INT8OID, TIMESTAMPTZOID},
};

/*
 * A batch back at the head of its ISPB's queue, and its iteration marked
 * requeued.
 */
static pix_statement requeue_sql = {
	.sql =
	"WITH marked AS (UPDATE pix.iteration SET requeued_at = $3 WHERE iid = $4)"
	" INSERT INTO pix.ready (ispb, fresh, message_id) SELECT $1, false, "
	"unnest($2::pg_catalog.int8[])",
	.nargs = 4,
	.types = {TEXTOID, INT8ARRAYOID, TIMESTAMPTZOID, TEXTOID},
};

/*
 * Many streams closed at once, in one statement that returns the batches they
 * held for requeue ($2: now). The expiry sweep expires idle open streams ($1:
 * cutoff) whose rows nobody holds (a stream being read is alive): of one ISPB
 * ($3, never the stream $4 of the caller) or of every ISPB, two plans of one
 * text, so each uses its index. Stop all closes every open stream of an ISPB
 * ($1), waiting for the reads in flight (all of them must close).
 */
#define CLOSE_MANY_SQL(state, which) \
	"UPDATE pix.stream s SET state = '" state "', closed_at = $2," \
	"       pending_ids = '{}'," \
	"       requeued = s.requeued + cardinality(old.pending_ids)" \
	"  FROM (SELECT stream_id, pending_ids FROM pix.stream" \
	"         WHERE state = 'o' " which ") old" \
	" WHERE s.stream_id = old.stream_id" \
	" RETURNING s.ispb, s.current_iid, old.pending_ids"
static pix_statement sweep_ispb_sql = {
	.sql = CLOSE_MANY_SQL("e", "AND last_read_at < $1 AND ispb = $3 AND stream_id <> $4"
						  " FOR UPDATE SKIP LOCKED"),
	.nargs = 4,
	.types = {TIMESTAMPTZOID, TIMESTAMPTZOID, TEXTOID, INT8OID},
};
static pix_statement sweep_all_sql = {
	.sql = CLOSE_MANY_SQL("e", "AND last_read_at < $1 FOR UPDATE SKIP LOCKED"),
	.nargs = 2,
	.types = {TIMESTAMPTZOID, TIMESTAMPTZOID},
};
static pix_statement stop_all_sql = {
	.sql = CLOSE_MANY_SQL("c", "AND ispb = $1 FOR UPDATE"),
	.nargs = 2,
	.types = {TEXTOID, TIMESTAMPTZOID},
};

static pix_statement lock_institution_sql = {
	.sql = "SELECT 1 FROM pix.institution WHERE ispb = $1 FOR UPDATE",
	.nargs = 1,
	.types = {TEXTOID},
};
static pix_statement insert_institution_sql = {
	.sql =
	"INSERT INTO pix.institution (ispb) VALUES ($1) ON CONFLICT DO NOTHING",
	.nargs = 1,
	.types = {TEXTOID},
};

/*
 * Live streams only: a dead one whose row another transaction holds is not
 * swept, nor counted.
 */
static pix_statement count_live_sql = {
	.sql =
	"SELECT count(*) FROM pix.stream WHERE ispb = $1 AND state = 'o' AND "
	"last_read_at >= $2",
	.nargs = 2,
	.types = {TEXTOID, TIMESTAMPTZOID},
};

static pix_statement keepalive_sql = {
	.sql =
	"UPDATE pix.stream s SET last_read_at = $2"
	"  FROM (SELECT s.stream_id FROM pix.iteration i JOIN pix.stream s USING "
	"(stream_id)"
	"         WHERE i.iid = ANY ($1) AND s.state = 'o' AND s.last_read_at >= "
	"$3"
	"           AND (i.seq = s.seq OR (i.seq = s.seq - 1 AND "
	"cardinality(s.pending_ids) > 0))"
	"           FOR NO KEY UPDATE OF s SKIP LOCKED) live"
	" WHERE s.stream_id = live.stream_id",
	.nargs = 3,
	.types = {TEXTARRAYOID, TIMESTAMPTZOID, TIMESTAMPTZOID},
};

static char *call_args(FunctionCallInfo fcinfo, int credential_argno, char *iid);
static int	batch_size_arg(FunctionCallInfo fcinfo, int argno);
static void iid_arg(FunctionCallInfo fcinfo, int argno, char *iid);
static Datum wellformed_ids(ArrayType *array);
static void refuse_expanded_call(FunctionCallInfo fcinfo);
static void raise_not_found(void) pg_attribute_noreturn();
static void raise_gone(void) pg_attribute_noreturn();
static void
			raise_missing(const char *ispb, const char *iid) pg_attribute_noreturn();
static bool find_stream(pix_statement *st, const char *ispb, const char *iid,
						stream_row *s);
static TimestampTz
			lock_stream(const char *ispb, const char *iid, stream_row *s);
static bool quiet_read(const char *ispb, const char *iid, read_result *r);
static TimestampTz idle_cutoff(TimestampTz now);
static int64 liveness_slack_us(void);
static Datum ids_array(const int64 *ids, int count);
static int	array_length_of(Datum array);
static void lock_institution(const char *ispb);
static int	close_many(pix_statement *st, Datum *values, bool locking);
static void sweep_ispb(const char *ispb, int64 except_stream, TimestampTz now);
static void
			requeue(const char *ispb, const char *iid, Datum pending_ids, TimestampTz now);
static void read_on(stream_row *s, int max, TimestampTz now, read_result *r,
					MemoryContext outer);
static void replay(stream_row *s, int max, TimestampTz now, read_result *r,
				   MemoryContext outer);
static char *render_rows(bool as_array, MemoryContext outer);
static Datum read_result_datum(FunctionCallInfo fcinfo, const read_result *r);

/*
 * ----------------------------------------------------------------------------
 * SQL-callable functions
 * ----------------------------------------------------------------------------
 */

/*
 * pix_stream_start(ispb, max_messages) opens a stream and reads from it.
 * Always issues an id.
 */
PG_FUNCTION_INFO_V1(pix_stream_start);
Datum
pix_stream_start(PG_FUNCTION_ARGS)
{
	int			nest;
	char	   *ispb = pix_authorized_ispb(fcinfo, 2, NULL);
	int			max = batch_size_arg(fcinfo, 1);
	MemoryContext outer = CurrentMemoryContext;
	int64		ids[PIX_MAX_BATCH];
	Datum		values[6];
	read_result r = {.ispb = ispb};
	TimestampTz now;
	int64		live_streams;
	int			redelivered;
	bool		isnull;

	refuse_expanded_call(fcinfo);
	pix_require_read_committed();
	nest = pix_spi_connect();

	lock_institution(ispb);
	now = GetCurrentTimestamp();
	sweep_ispb(ispb, 0, now);
	values[0] = CStringGetTextDatum(ispb);
	values[1] = TimestampTzGetDatum(idle_cutoff(now));
	pix_execute(&count_live_sql, values, NULL, 1);
	live_streams =
		DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0],
									SPI_tuptable->tupdesc, 1, &isnull));
	if (live_streams >= pix_max_collectors)
		ereport(ERROR,
				(errcode(ERRCODE_PIX_TOO_MANY_STREAMS),
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
	values[5] = BoolGetDatum(max > 1);
	pix_execute(&open_sql, values, NULL, 0);
	r.body = r.count > 0 ? render_rows(max > 1, outer) : NULL;

	pix_spi_finish(nest);
	PG_RETURN_DATUM(read_result_datum(fcinfo, &r));
}

/*
 * pix_stream_next(ispb, interation_id, max_messages): the current id confirms
 * and reads on; the previous id replays the pending batch.
 */
PG_FUNCTION_INFO_V1(pix_stream_next);
Datum
pix_stream_next(PG_FUNCTION_ARGS)
{
	int			nest;
	char		iid[PIX_IID_LEN + 1];
	char	   *ispb = call_args(fcinfo, 3, iid);
	int			max = batch_size_arg(fcinfo, 2);
	MemoryContext outer = CurrentMemoryContext;
	read_result r = {.ispb = ispb};
	stream_row	s;
	TimestampTz now;

	refuse_expanded_call(fcinfo);
	nest = pix_spi_connect();

	/*
	 * Where this backend's last claim of the ISPB filled its batch, its queue
	 * most likely holds more: the quiet check (an unlocked read of the stream
	 * row and a peek at the queue, ~10 us) would almost always fail, and the
	 * locked path run after it anyway. So skip it and take the locked path at
	 * once. That never makes an answer wrong, only sometimes dearer: the
	 * quiet read is an optimisation of the locked path, which decides
	 * everything again under the stream row's lock (current or previous id,
	 * gone, not found; claims, and answers empty with the same id when
	 * nothing is claimable). An empty read that takes it answers exactly what
	 * the quiet read would have (an empty read keeps the id, and writes
	 * nothing but the row lock when nothing is pending and the last read is
	 * recent), and records that its claim did not fill a batch, so the next
	 * read of that queue in this backend is quiet again (a claim that took
	 * less than it asked for, the last of a drain, does so too: an idle
	 * queue's reads stay quiet). One difference is not in the answer: the
	 * locked path waits (bounded by pix.lock_timeout) for a stream row
	 * another call holds, where the quiet read answers as of a moment ago;
	 * every read that finds messages waits so already. The hint is only ever
	 * consulted to choose between two paths that answer the same; it decides
	 * nothing about what is ready.
	 */
	if (pix_claim_last_full(ispb) || !quiet_read(ispb, iid, &r))
	{
		now = lock_stream(ispb, iid, &s);
		if (s.called_seq == s.seq)
			read_on(&s, max, now, &r, outer);
		else if (s.called_seq == s.seq - 1 && s.pending_count > 0)
			replay(&s, max, now, &r, outer);
		else
			raise_gone();
	}
	pix_spi_finish(nest);
	PG_RETURN_DATUM(read_result_datum(fcinfo, &r));
}

/*
 * pix_stream_stop(ispb, interation_id): on the current id, confirms the
 * pending batch and closes; on the previous id (the collector never got the
 * last batch), closes and requeues that batch. Returns how many messages this
 * call confirmed.
 */
PG_FUNCTION_INFO_V1(pix_stream_stop);
Datum
pix_stream_stop(PG_FUNCTION_ARGS)
{
	int			nest;
	char		iid[PIX_IID_LEN + 1];
	char	   *ispb = call_args(fcinfo, 2, iid);
	Datum		values[3];
	char		nulls[3] = {' ', ' ', ' '};
	stream_row	s;
	TimestampTz now;
	int			confirmed = 0;

	nest = pix_spi_connect();
	now = lock_stream(ispb, iid, &s);
	values[0] = Int64GetDatum(s.stream_id);
	values[1] = TimestampTzGetDatum(now);
	if (s.called_seq == s.seq)
	{
		confirmed = s.pending_count;
		values[2] = CStringGetTextDatum(s.current_iid);
		nulls[2] = confirmed > 0 ? ' ' : 'n';
		pix_execute(&close_confirming_sql, values, nulls, 0);
	}
	else if (s.called_seq == s.seq - 1 && s.pending_count > 0)
	{
		requeue(ispb, s.current_iid, s.pending_ids, now);
		pix_execute(&close_requeuing_sql, values, NULL, 0);
	}
	else
		raise_gone();
	pix_spi_finish(nest);
	PG_RETURN_INT32(confirmed);
}

/*
 * pix_streams_stop_all(ispb, credential): closes every open stream of the
 * ISPB, waiting for the reads in flight, and requeues their pending batches at
 * the head of its queue, as an expiry does. Returns how many streams it
 * closed.
 */
PG_FUNCTION_INFO_V1(pix_streams_stop_all);
Datum
pix_streams_stop_all(PG_FUNCTION_ARGS)
{
	int			nest;
	char	   *ispb = pix_authorized_ispb(fcinfo, 1, NULL);
	Datum		values[2];
	int			closed;

	pix_require_read_committed();
	nest = pix_spi_connect();
	values[0] = CStringGetTextDatum(ispb);
	values[1] = TimestampTzGetDatum(GetCurrentTimestamp());
	closed = close_many(&stop_all_sql, values, true);
	pix_spi_finish(nest);
	PG_RETURN_INT32(closed);
}

/*
 * pix_expire_streams(): expires every idle stream of every ISPB now and
 * requeues their batches. Reads and starts do this lazily for their own ISPB;
 * the HTTP server also calls this periodically so that slots and batches come
 * back even where no collector is reading.
 */
PG_FUNCTION_INFO_V1(pix_expire_streams);
Datum
pix_expire_streams(PG_FUNCTION_ARGS)
{
	int			nest;
	TimestampTz now = GetCurrentTimestamp();
	Datum		values[2];
	int			expired;

	pix_require_read_committed();
	nest = pix_spi_connect();
	values[0] = TimestampTzGetDatum(idle_cutoff(now));
	values[1] = TimestampTzGetDatum(now);
	expired = close_many(&sweep_all_sql, values, false);
	pix_spi_finish(nest);
	PG_RETURN_INT32(expired);
}

/*
 * pix_streams_keepalive(interation_ids): marks the live streams those ids name
 * (their current id, or their previous id while its batch is pending) as read
 * now, in one statement, and returns how many it marked. The HTTP server calls
 * it for all its parked reads at once, so a collector waiting in a long poll
 * keeps its stream alive without a commit of its own. NULL elements and
 * malformed ids are ignored; a stream already dead is not revived; a stream
 * whose row another call holds right now is skipped (that call is a read, and
 * marks it itself).
 */
PG_FUNCTION_INFO_V1(pix_streams_keepalive);
Datum
pix_streams_keepalive(PG_FUNCTION_ARGS)
{
	int			nest;
	TimestampTz now = GetCurrentTimestamp();
	Datum		values[3];
	Datum		ids;
	int			marked;

	if (PG_ARGISNULL(0))
		PG_RETURN_INT32(0);
	ids = wellformed_ids(PG_GETARG_ARRAYTYPE_P(0));
	if (array_length_of(ids) == 0)
		PG_RETURN_INT32(0);

	pix_require_read_committed();
	nest = pix_spi_connect();
	values[0] = ids;
	values[1] = TimestampTzGetDatum(now);
	values[2] = TimestampTzGetDatum(idle_cutoff(now));
	marked = pix_execute(&keepalive_sql, values, NULL, 0);
	pix_spi_finish(nest);
	PG_RETURN_INT32(marked);
}

/*
 * ----------------------------------------------------------------------------
 * Arguments
 * ----------------------------------------------------------------------------
 */

/*
 * The preamble of next and stop: the ISPB (first, so a malformed one is always
 * PX001), the id (malformed: "not found", like an id that does not exist) and
 * the isolation level.
 */
static char *
call_args(FunctionCallInfo fcinfo, int credential_argno, char *iid)
{
	char	   *ispb = pix_authorized_ispb(fcinfo, credential_argno, NULL);

	iid_arg(fcinfo, 1, iid);
	pix_require_read_committed();
	return ispb;
}

static int
batch_size_arg(FunctionCallInfo fcinfo, int argno)
{
	int32		n = PG_ARGISNULL(argno) ? 0 : PG_GETARG_INT32(argno);

	if (n < 1 || n > PIX_MAX_BATCH)
		ereport(ERROR, (errcode(ERRCODE_PIX_INVALID_COUNT),
						errmsg("invalid max_messages"),
						errdetail("max_messages must be between 1 and %d.",
								  PIX_MAX_BATCH)));
	return n;
}

/*
 * Copies a well-formed id into iid; anything else is "not found", like an id
 * that does not exist.
 */
static void
iid_arg(FunctionCallInfo fcinfo, int argno, char *iid)
{
	text	   *arg = PG_ARGISNULL(argno) ? NULL : PG_GETARG_TEXT_PP(argno);

	if (arg == NULL ||
		!pix_iid_is_wellformed(VARDATA_ANY(arg), VARSIZE_ANY_EXHDR(arg)))
		raise_not_found();
	memcpy(iid, VARDATA_ANY(arg), PIX_IID_LEN);
	iid[PIX_IID_LEN] = '\0';
}

/*
 * The well-formed ids of a text[] of any shape, as a one-dimensional text[]
 * (NULLs and anything that is not an id dropped), so that only ids ever reach
 * an index lookup.
 */
static Datum
wellformed_ids(ArrayType *array)
{
	Datum	   *elems;
	bool	   *nulls;
	int			n;
	int			kept = 0;

	if (ARR_ELEMTYPE(array) != TEXTOID)
		elog(ERROR, "pix: interation_ids must be text[]");
	deconstruct_array(array, TEXTOID, -1, false, TYPALIGN_INT, &elems, &nulls,
					  &n);
	for (int i = 0; i < n; i++)
	{
		text	   *id = nulls[i] ? NULL : DatumGetTextPP(elems[i]);

		if (id != NULL &&
			pix_iid_is_wellformed(VARDATA_ANY(id), VARSIZE_ANY_EXHDR(id)))
			elems[kept++] = PointerGetDatum(id);
	}
	return PointerGetDatum(
						   construct_array(elems, kept, TEXTOID, -1, false, TYPALIGN_INT));
}

/*
 * SELECT (pix_stream_start(...)).* is rewritten by the parser into one call
 * per column of pix_read: four starts, four streams, four claimed batches, of
 * which the caller sees one column each. The four calls are copies of one
 * expression (equal, same position in the query text) evaluated in one
 * executor run (same memory context), one after another. The second of them is
 * refused, which rolls back the statement; a call from the same expression
 * node again (the next row, a loop) is a new call. SELECT * FROM
 * pix_stream_start(...) calls it once.
 */
static void
refuse_expanded_call(FunctionCallInfo fcinfo)
{
	static LocalTransactionId lxid = InvalidLocalTransactionId;
	static MemoryContext query_cxt = NULL;
	static Node *first = NULL;
	static Node *seen[8];
	static int	nseen = 0;
	Node	   *expr = fcinfo->flinfo->fn_expr;
	bool		sibling;

	if (expr == NULL)
		return;
	sibling = lxid == MyProc->lxid && query_cxt == fcinfo->flinfo->fn_mcxt &&
		first != NULL;
	for (int i = 0; sibling && i < nseen; i++)
		if (seen[i] == expr)
			sibling =
				false;			/* this very node again: a new row or a new
								 * call */
	if (sibling && exprLocation(expr) == exprLocation(first) &&
		equal(expr, first))
		ereport(ERROR,
				(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
				 errmsg("%s must not be expanded with (...).*",
						get_func_name(fcinfo->flinfo->fn_oid)),
				 errdetail("(f(...)).* calls the function once per column: each call would open or read a stream."),
				 errhint("Call it in FROM: SELECT * FROM %s(...).",
						 get_func_name(fcinfo->flinfo->fn_oid))));
	if (sibling && nseen < (int) lengthof(seen))
	{
		seen[nseen++] = expr;
		return;
	}

	/*
	 * A new call: remember it. The node is only compared while its executor
	 * run lasts.
	 */
	lxid = MyProc->lxid;
	query_cxt = fcinfo->flinfo->fn_mcxt;
	first = expr;
	seen[0] = expr;
	nseen = 1;
}

static void
raise_not_found(void)
{
	ereport(ERROR,
			(errcode(ERRCODE_PIX_STREAM_NOT_FOUND), errmsg("stream not found"),
			 errdetail("No open stream of this ISPB has this interation id.")));
	pg_unreachable();
}

static void
raise_gone(void)
{
	ereport(ERROR,
			(errcode(ERRCODE_PIX_STREAM_GONE), errmsg("stream gone"),
			 errdetail("This interation id was closed, expired or superseded."),
			 errhint("Start a new stream.")));
	pg_unreachable();
}

/*
 * An id that names no iteration: gone if it was one of a purged stream's last
 * ids, else not found.
 */
static void
raise_missing(const char *ispb, const char *iid)
{
	Datum		values[2] = {CStringGetTextDatum(iid), CStringGetTextDatum(ispb)};

	if (pix_execute(&retired_sql, values, NULL, 1) > 0)
		raise_gone();
	raise_not_found();
}

/*
 * ----------------------------------------------------------------------------
 * Stream state
 * ----------------------------------------------------------------------------
 */

/*
 * Reads the stream row an id of this ISPB names with st (locking it or not).
 * False when there is none: an unknown id, or another ISPB's.
 */
static bool
find_stream(pix_statement *st, const char *ispb, const char *iid,
			stream_row *s)
{
	Datum		values[2] = {CStringGetTextDatum(iid), CStringGetTextDatum(ispb)};
	HeapTuple	row;
	TupleDesc	desc;
	bool		isnull;
	char	   *text_value;

	if ((st == &lock_stream_sql ? pix_execute_locking(st, values, NULL, 1)
		 : pix_execute(st, values, NULL, 1)) == 0)
		return false;
	row = SPI_tuptable->vals[0];
	desc = SPI_tuptable->tupdesc;

	s->stream_id = DatumGetInt64(SPI_getbinval(row, desc, 1, &isnull));
	s->state = DatumGetChar(SPI_getbinval(row, desc, 2, &isnull));
	s->seq = DatumGetInt64(SPI_getbinval(row, desc, 3, &isnull));
	text_value = SPI_getvalue(row, desc, 4);
	strlcpy(s->current_iid, text_value ? text_value : "",
			sizeof(s->current_iid));
	s->pending_ids = SPI_getbinval(row, desc, 5, &isnull);
	s->pending_count = array_length_of(s->pending_ids);
	s->last_read_at =
		DatumGetTimestampTz(SPI_getbinval(row, desc, 6, &isnull));
	s->called_seq = DatumGetInt64(SPI_getbinval(row, desc, 7, &isnull));
	return true;
}

/*
 * The preamble of every call on a stream that may write: lock the row the id
 * names, then check that the stream is alive. Returns the time the call acts
 * at, read once the lock is held: after a long wait for the lock, a time read
 * before it would record a last read already in the past. An unknown id or
 * another ISPB's is "not found" (no oracle); a closed, expired or idle stream
 * is "gone".
 */
static TimestampTz
lock_stream(const char *ispb, const char *iid, stream_row *s)
{
	TimestampTz now;

	if (!find_stream(&lock_stream_sql, ispb, iid, s))
		raise_missing(ispb, iid);
	now = GetCurrentTimestamp();
	if (s->state != 'o' || s->last_read_at < idle_cutoff(now))
		raise_gone();
	return now;
}

/*
 * An empty read that writes nothing: a call on the current id of a live stream
 * with nothing pending to confirm, a recent enough last read, and nothing to
 * claim. It reads the stream row without locking it (a lock is a write), so it
 * answers as of a moment ago: as if it had come just before any call on the
 * stream that has not committed yet. False when any of that does not hold: the
 * caller then takes the locked path, which decides everything again.
 */
static bool
quiet_read(const char *ispb, const char *iid, read_result *r)
{
	TimestampTz now = GetCurrentTimestamp();
	stream_row	s;

	if (!find_stream(&peek_stream_sql, ispb, iid, &s))
		raise_missing(ispb, iid);
	if (s.state != 'o' || s.called_seq != s.seq || s.pending_count > 0 ||
		s.last_read_at < now - liveness_slack_us())
		return false;
	if (pix_claim_sweep_due(ispb, now,
							Min(1000, pix_stream_idle_timeout_ms / 4)))
		sweep_ispb(ispb, s.stream_id, now);
	if (pix_claim_peek(ispb))
		return false;
	strlcpy(r->iid, s.current_iid, sizeof(r->iid));
	r->count = 0;
	r->body = NULL;
	return true;
}

/*
 * A stream is dead once its recorded last read is older than the idle timeout
 * plus the slack: an empty read may leave the record up to the slack behind
 * the true last read, so a stream never expires earlier than the timeout after
 * its last read, and at most the slack later.
 */
static TimestampTz
idle_cutoff(TimestampTz now)
{
	return now - (TimestampTz) pix_stream_idle_timeout_ms * 1000 -
		liveness_slack_us();
}

/*
 * A sixteenth of the idle timeout, at most PIX_LIVENESS_SLACK_MAX_MS: small
 * enough that a stream whose collector vanished expires close to the timeout
 * (60 s: 60-63.75 s), large enough that the HTTP server's keepalive of its
 * parked reads, called more often than that, leaves their reads nothing to
 * write.
 */
static int64
liveness_slack_us(void)
{
	return (int64) Min(pix_stream_idle_timeout_ms / 16,
					   PIX_LIVENESS_SLACK_MAX_MS) *
		1000;
}

static Datum
ids_array(const int64 *ids, int count)
{
	Datum		elems[PIX_MAX_BATCH];

	for (int i = 0; i < count; i++)
		elems[i] = Int64GetDatum(ids[i]);
	return PointerGetDatum(construct_array(elems, count, INT8OID,
										   sizeof(int64), FLOAT8PASSBYVAL,
										   TYPALIGN_DOUBLE));
}

static int
array_length_of(Datum array)
{
	ArrayType  *a = DatumGetArrayTypeP(array);

	return ArrayGetNItems(ARR_NDIM(a), ARR_DIMS(a));
}

/*
 * Takes the lock that serializes the starts of an ISPB, making its row on the
 * first start.
 */
static void
lock_institution(const char *ispb)
{
	Datum		values[1] = {CStringGetTextDatum(ispb)};

	if (pix_execute_locking(&lock_institution_sql, values, NULL, 1) == 0)
	{
		pix_execute_locking(&insert_institution_sql, values, NULL, 0);
		pix_execute_locking(&lock_institution_sql, values, NULL, 1);
	}
}

/*
 * Runs a statement that closes many streams (CLOSE_MANY_SQL; values[1] is
 * now), under the lock bound when it waits for the rows, and requeues the
 * batches they held; returns how many it closed.
 */
static int
close_many(pix_statement *st, Datum *values, bool locking)
{
	TimestampTz now = DatumGetTimestampTz(values[1]);
	int			closed = locking ? pix_execute_locking(st, values, NULL, 0)
	: pix_execute(st, values, NULL, 0);
	SPITupleTable *rows = SPI_tuptable;

	for (int i = 0; i < closed; i++)
	{
		bool		isnull;
		char	   *ispb = SPI_getvalue(rows->vals[i], rows->tupdesc, 1);
		char	   *iid = SPI_getvalue(rows->vals[i], rows->tupdesc, 2);
		Datum		pending =
		SPI_getbinval(rows->vals[i], rows->tupdesc, 3, &isnull);

		if (!isnull && array_length_of(pending) > 0)
			requeue(ispb, iid, pending, now);
	}
	return closed;
}

/*
 * Expires this ISPB's idle streams (but never the caller's own, which it has
 * just checked and is about to touch) and requeues their batches, so the
 * caller's claim sees them at the head of the queue.
 */
static void
sweep_ispb(const char *ispb, int64 except_stream, TimestampTz now)
{
	Datum		values[4];

	values[0] = TimestampTzGetDatum(idle_cutoff(now));
	values[1] = TimestampTzGetDatum(now);
	values[2] = CStringGetTextDatum(ispb);
	values[3] = Int64GetDatum(except_stream);
	close_many(&sweep_ispb_sql, values, false);
}

/*
 * Puts a batch back at the head of the ready queue (the requeued range) and
 * wakes the collectors.
 */
static void
requeue(const char *ispb, const char *iid, Datum pending_ids, TimestampTz now)
{
	Datum		values[4];

	values[0] = CStringGetTextDatum(ispb);
	values[1] = pending_ids;
	values[2] = TimestampTzGetDatum(now);
	values[3] = CStringGetTextDatum(iid);
	pix_execute(&requeue_sql, values, NULL, 0);
	Async_Notify(PIX_NOTIFY_CHANNEL, ispb);
}

/*
 * A call on the current id: confirm what is pending, then claim the next
 * batch. A read that finds nothing keeps the id (the collector will call it
 * again) with nothing pending.
 */
static void
read_on(stream_row *s, int max, TimestampTz now, read_result *r,
		MemoryContext outer)
{
	int64		ids[PIX_MAX_BATCH];
	Datum		values[8];
	char		nulls[8] = {' ', ' ', ' ', ' ', ' ', ' ', ' ', ' '};
	int			redelivered;

	if (pix_claim_sweep_due(r->ispb, now,
							Min(1000, pix_stream_idle_timeout_ms / 4)))
		sweep_ispb(r->ispb, s->stream_id, now);
	r->count = pix_claim_ready(r->ispb, max, ids, &redelivered);

	if (r->count == 0)
	{
		strlcpy(r->iid, s->current_iid, sizeof(r->iid));
		r->body = NULL;

		/*
		 * Nothing to confirm and a recent enough last read: nothing to write.
		 */
		if (s->pending_count == 0 &&
			s->last_read_at >= now - liveness_slack_us())
			return;
		values[0] = Int64GetDatum(s->stream_id);
		values[1] = TimestampTzGetDatum(now);
		values[2] = CStringGetTextDatum(s->current_iid);
		nulls[2] = s->pending_count > 0 ? ' ' : 'n';
		pix_execute(&stay_sql, values, nulls, 0);
		return;
	}

	pix_iid_new(r->iid);
	values[0] = Int64GetDatum(s->stream_id);
	values[1] = CStringGetTextDatum(r->iid);
	values[2] = ids_array(ids, r->count);
	values[3] = Int32GetDatum(redelivered);
	values[4] = TimestampTzGetDatum(now);
	values[5] = BoolGetDatum(max > 1);
	values[6] = CStringGetTextDatum(s->current_iid);
	nulls[6] = s->pending_count > 0 ? ' ' : 'n';
	values[7] = Int64GetDatum(s->seq + 1);
	pix_execute(&deliver_sql, values, nulls, 0);
	r->body = render_rows(max > 1, outer);
}

/*
 * A call on the previous id: the same batch, in the same shape, with the same
 * next id again; nothing confirmed or claimed. Batches delivered before 1.2
 * did not record their shape: those answer in the shape the retry asks for.
 */
static void
replay(stream_row *s, int max, TimestampTz now, read_result *r,
	   MemoryContext outer)
{
	Datum		values[3];
	bool		isnull;
	bool		as_array;

	values[0] = Int64GetDatum(s->stream_id);
	values[1] = TimestampTzGetDatum(now);
	values[2] = CStringGetTextDatum(s->current_iid);
	pix_execute(&replay_sql, values, NULL, 0);
	as_array =
		SPI_processed > 0
		? DatumGetBool(SPI_getbinval(SPI_tuptable->vals[0],
									 SPI_tuptable->tupdesc, 2, &isnull))
		: false;
	if (SPI_processed == 0 || isnull)
		as_array = max > 1;
	strlcpy(r->iid, s->current_iid, sizeof(r->iid));
	r->count = s->pending_count;
	r->body = render_rows(as_array, outer);
}

/*
 * The body exactly as HTTP serves it, from the bodies in SPI_tuptable's first
 * column: one object, or an array (always when there is more than one). Bodies
 * were rendered and validated at INSERT, so this only copies bytes.
 */
static char *
render_rows(bool as_array, MemoryContext outer)
{
	int			found = (int) SPI_processed;
	MemoryContext spi = MemoryContextSwitchTo(outer);
	StringInfoData body;

	as_array = as_array || found > 1;
	initStringInfo(&body);
	if (as_array)
		appendStringInfoChar(&body, '[');
	for (int i = 0; i < found; i++)
	{
		bool		isnull;
		text	   *one =
		DatumGetTextPP(SPI_getbinval(SPI_tuptable->vals[i],
									 SPI_tuptable->tupdesc, 1, &isnull));

		if (i > 0)
			appendStringInfoChar(&body, ',');
		appendBinaryStringInfo(&body, VARDATA_ANY(one),
							   VARSIZE_ANY_EXHDR(one));
	}
	if (as_array)
		appendStringInfoChar(&body, ']');
	MemoryContextSwitchTo(spi);
	return body.data;
}

static Datum
read_result_datum(FunctionCallInfo fcinfo, const read_result *r)
{
	TupleDesc	desc;
	Datum		values[4];
	bool		nulls[4] = {false, false, false, r->body == NULL};

	if (get_call_result_type(fcinfo, NULL, &desc) != TYPEFUNC_COMPOSITE)
		elog(ERROR, "pix: function must return the composite type pix_read");
	desc = BlessTupleDesc(desc);
	values[0] = CStringGetTextDatum(r->iid);
	values[1] = CStringGetTextDatum(
									psprintf("/api/pix/%s/stream/%s", r->ispb, r->iid));
	values[2] = Int32GetDatum(r->count);
	values[3] = r->body ? CStringGetTextDatum(r->body) : (Datum) 0;
	return HeapTupleGetDatum(heap_form_tuple(desc, values, nulls));
}
