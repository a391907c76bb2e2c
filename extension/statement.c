/*
 * statement.c — prepare once and keep, execute, execute with the lock wait
 * bounded; and the SPI connection under which a call's statements stay index
 * plans. See statement.h.
 *
 * PLANS THAT DO NOT TRUST AN EMPTY TABLE. The statements of the stream
 * functions and the credential lookup find their rows by a key or an index (an
 * id, a stream, a credential), and their plans are kept for the backend's
 * life, made again only when a table's statistics change. A plan made just
 * after ANALYZE saw a table empty (a fresh install that was vacuumed,
 * `vacuumdb --analyze` after an upgrade) would scan the whole table on every
 * call, each call slower than the last as the history grows, until autovacuum
 * analyzes it again (a minute or more; over the first 15 s, 3 300 reads/s
 * against 6 700-6 950: bench/plans-after-analyze.sh). So the planner may not
 * choose a sequential scan for them: enable_seqscan is off between
 * pix_spi_connect and pix_spi_finish, at a GUC nest level of its own (restored
 * by pix_spi_finish, or by the abort of an error); no cost measurable in
 * steady state.
 *
 * BOUNDED LOCK WAITS. A transaction left open after a call (a pooled client
 * that does not commit) holds its rows until it ends, and the calls behind it
 * must not hang with it: every statement that may wait for a row lock runs
 * through pix_execute_locking, its wait bounded, then PX009.
 */
#include "pix.h"

#include "miscadmin.h"
#include "storage/proc.h"
#include "utils/guc.h"
#include "utils/memutils.h"

#include "statement.h"

static SPIPlanPtr prepared(pix_statement *st);

int
pix_execute(pix_statement *st, Datum *values, const char *nulls, long limit)
{
	int			rc =
	SPI_execute_plan(prepared(st), values, nulls, st->read_only, limit);

	if (rc < 0)
		elog(ERROR, "pix: \"%s\" failed: %s", st->sql,
			 SPI_result_code_string(rc));
	return (int) SPI_processed;
}

int
pix_execute_locking(pix_statement *st, Datum *values, const char *nulls,
					long limit)
{
	MemoryContext cxt = CurrentMemoryContext;
	int			nest = NewGUCNestLevel();
	int			result = 0;

	if (pix_lock_timeout_ms > 0 &&
		(LockTimeout == 0 || LockTimeout > pix_lock_timeout_ms))
		(void) set_config_option("lock_timeout",
								 psprintf("%d", pix_lock_timeout_ms),
								 PGC_SUSET, PGC_S_SESSION, GUC_ACTION_SAVE,
								 true, 0, false);
	PG_TRY();
	{
		result = pix_execute(st, values, nulls, limit);
	}
	PG_CATCH();
	{
		ErrorData  *error;

		MemoryContextSwitchTo(cxt);
		error = CopyErrorData();
		if (error->sqlerrcode != ERRCODE_LOCK_NOT_AVAILABLE)
			PG_RE_THROW();
		FlushErrorState();
		ereport(ERROR,
				(errcode(ERRCODE_PIX_BUSY), errmsg("stream busy"),
				 errdetail("Another transaction has held this stream (or this ISPB's starts) for longer than pix.lock_timeout."),
				 errhint("A client must commit or roll back right after each pix call.")));
	}
	PG_END_TRY();
	AtEOXact_GUC(true, nest);
	return result;
}

/* The kept plan of st, prepared on first use. */
static SPIPlanPtr
prepared(pix_statement *st)
{
	if (st->plan == NULL)
	{
		SPIPlanPtr	plan = SPI_prepare_cursor(st->sql, st->nargs, st->types,
											  st->cursor_options);

		if (plan == NULL)
			elog(ERROR, "pix: could not prepare \"%s\": %s", st->sql,
				 SPI_result_code_string(SPI_result));
		SPI_keepplan(plan);
		st->plan = plan;
	}
	return st->plan;
}

/*
 * Returns the nest level to pass to pix_spi_finish (see PLANS THAT DO NOT
 * TRUST AN EMPTY TABLE).
 */
int
pix_spi_connect(void)
{
	int			nest;

	SPI_connect();
	nest = NewGUCNestLevel();
	(void) set_config_option("enable_seqscan", "off", PGC_USERSET,
							 PGC_S_SESSION, GUC_ACTION_SAVE, true, 0, false);
	return nest;
}

void
pix_spi_finish(int nest)
{
	AtEOXact_GUC(true, nest);
	SPI_finish();
}
