/*
 * pix.c — the extension's entry point: module magic, configuration (every GUC, in one place) and
 * the argument checks every SQL function shares.
 *
 * The state machine (streams, claims, confirmation, expiry) and its invariants are explained at the
 * top of stream.c; the claim's access path in claim.c; message validation and rendering in
 * message.c, validate.c and render.c; the generator in generate.c.
 */
#include "pix.h"

#include "fmgr.h"
#include "utils/builtins.h"
#include "access/xact.h"
#include "utils/guc.h"
#include "storage/proc.h"
#include "utils/memutils.h"
#include "executor/spi.h"

#include "validate.h"

PG_MODULE_MAGIC;

int pix_max_collectors = 6;
int pix_stream_idle_timeout_ms = 60000;
int pix_max_generate = 10000;
int pix_history_retention_s = 7 * 24 * 3600;
int pix_lock_timeout_ms = 5000;
int pix_send_idempotency_horizon_s = 30 * 24 * 3600;

void _PG_init(void);

/*
 * Registers the GUCs. They are PGC_SUSET: the limits protect every collector of an institution, so
 * a client session may not raise them for itself; set them with ALTER DATABASE/ROLE or
 * postgresql.conf.
 */
void _PG_init(void)
{
	DefineCustomIntVariable("pix.max_collectors", "Open streams allowed per ISPB.", NULL,
	                        &pix_max_collectors, 6, 1, 1000, PGC_SUSET, 0, NULL, NULL, NULL);
	DefineCustomIntVariable(
	    "pix.stream_idle_timeout",
	    "A stream not read for this long expires and its pending batch is requeued.", NULL,
	    &pix_stream_idle_timeout_ms, 60000, 1, 24 * 3600 * 1000, PGC_SUSET, GUC_UNIT_MS, NULL, NULL,
	    NULL);
	DefineCustomIntVariable(
	    "pix.max_generate", "Largest number of messages pix_generate_messages makes per call.",
	    NULL, &pix_max_generate, 10000, 1, 1000000, PGC_SUSET, 0, NULL, NULL, NULL);
	DefineCustomIntVariable(
	    "pix.history_retention",
	    "Confirmed messages are kept this long for audit, then pix_purge_history() removes them.",
	    NULL, &pix_history_retention_s, 7 * 24 * 3600, 0, PG_INT32_MAX, PGC_SUSET, GUC_UNIT_S, NULL,
	    NULL, NULL);
	DefineCustomIntVariable(
	    "pix.lock_timeout",
	    "Longest wait of a call for a stream (or an ISPB's starts) that another transaction holds; "
	    "then PX009. 0: the caller's lock_timeout alone.",
	    NULL, &pix_lock_timeout_ms, 5000, 0, 3600 * 1000, PGC_SUSET, GUC_UNIT_MS, NULL, NULL, NULL);
	DefineCustomIntVariable("pix.send_idempotency_horizon",
	                        "Accepted endToEndIds of pix_messages_send are remembered this long "
	                        "(re-sends are duplicates).",
	                        NULL, &pix_send_idempotency_horizon_s, 30 * 24 * 3600, 0, PG_INT32_MAX,
	                        PGC_SUSET, GUC_UNIT_S, NULL, NULL, NULL);
	MarkGUCPrefixReserved("pix");
}

/*
 * Every function takes the ISPB first and checks it first, so a malformed one is always a 400,
 * whatever else is wrong with the call. The text may be huge or not valid in any encoding: only its
 * bytes are read.
 */
char *pix_ispb_arg(text *arg)
{
	if (arg == NULL || !pix_valid_ispb(VARDATA_ANY(arg), VARSIZE_ANY_EXHDR(arg)))
		ereport(ERROR, (errcode(ERRCODE_PIX_INVALID_ISPB), errmsg("invalid ISPB"),
		                errdetail("An ISPB is exactly 8 ASCII digits.")));
	return text_to_cstring(arg);
}

/*
 * Every function runs in READ COMMITTED: claims and counts must see what other transactions
 * committed up to now, which a transaction snapshot would hide. Refusing is clearer than answering
 * wrongly.
 */
void pix_require_read_committed(void)
{
	if (IsolationUsesXactSnapshot())
		ereport(ERROR,
		        (errcode(ERRCODE_PIX_ISOLATION),
		         errmsg("pix functions need READ COMMITTED isolation"),
		         errdetail("Claims must see messages and streams committed by others up to now.")));
}

/*
 * The statements of the stream functions and the credential lookup find their rows by a key or an
 * index (an id, a stream, a credential), and their plans are kept for the backend's life, made again
 * only when a table's statistics change.
 * A plan made just after ANALYZE saw a table empty (a fresh install that was vacuumed, `vacuumdb
 * --analyze` after an upgrade) would scan the whole table on every call, each call slower than the
 * last as the history grows, until autovacuum analyzes it again (a minute or more; over the first
 * 15 s, 3 300 reads/s against 6 700-6 950: bench/plans-after-analyze.sh). So the planner may not
 * choose a sequential scan for them: enable_seqscan is off between these two calls, at a GUC nest
 * level of its own (restored by pix_spi_finish, or by the abort of an error); no cost measurable in
 * steady state. Returns the nest level to pass to pix_spi_finish.
 */
int pix_spi_connect(void)
{
	int nest;

	SPI_connect();
	nest = NewGUCNestLevel();
	(void)set_config_option("enable_seqscan", "off", PGC_USERSET, PGC_S_SESSION, GUC_ACTION_SAVE,
	                        true, 0, false);
	return nest;
}

void pix_spi_finish(int nest)
{
	AtEOXact_GUC(true, nest);
	SPI_finish();
}

/*
 * A transaction left open after a call (a pooled client that does not commit) holds its rows until
 * it ends, and the calls behind it must not hang with it: the wait is bounded, then PX009.
 */
int pix_lock_bounded(int (*fn)(void *arg), void *arg)
{
	MemoryContext cxt = CurrentMemoryContext;
	int nest = NewGUCNestLevel();
	int result = 0;

	if (pix_lock_timeout_ms > 0 && (LockTimeout == 0 || LockTimeout > pix_lock_timeout_ms))
		(void)set_config_option("lock_timeout", psprintf("%d", pix_lock_timeout_ms), PGC_SUSET,
		                        PGC_S_SESSION, GUC_ACTION_SAVE, true, 0, false);
	PG_TRY();
	{
		result = fn(arg);
	}
	PG_CATCH();
	{
		ErrorData *error;

		MemoryContextSwitchTo(cxt);
		error = CopyErrorData();
		if (error->sqlerrcode != ERRCODE_LOCK_NOT_AVAILABLE)
			PG_RE_THROW();
		FlushErrorState();
		ereport(
		    ERROR,
		    (errcode(ERRCODE_PIX_BUSY), errmsg("stream busy"),
		     errdetail(
		         "Another transaction has held this stream (or this ISPB's starts) for longer than pix.lock_timeout."),
		     errhint("A client must commit or roll back right after each pix call.")));
	}
	PG_END_TRY();
	AtEOXact_GUC(true, nest);
	return result;
}
