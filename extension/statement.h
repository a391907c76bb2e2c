/*
 * statement.h — the one way the extension runs SQL: a statement is prepared on
 * first use, kept for the backend's life, and executed; one that may wait for
 * a row lock runs with its wait bounded.
 *
 * The bottom floor of the extension: it knows SPI and the configuration
 * (pix.h), nothing of streams or messages. Every file that runs SQL declares
 * its statements as static pix_statement values (the text, the argument types)
 * and calls pix_execute or pix_execute_locking.
 */
#ifndef PIX_STATEMENT_H
#define PIX_STATEMENT_H

#include "postgres.h"

#include "executor/spi.h"

/*
 * The most arguments a statement takes: the shared INSERT's 17 columns
 * (insert.h).
 */
#define PIX_STATEMENT_MAX_ARGS 17

/*
 * A statement, planned once per backend and kept (SPI_keepplan).
 * cursor_options CURSOR_OPT_CUSTOM_PLAN plans it with each call's values;
 * read_only runs it without a new snapshot or command counter increment
 * (lookups inside a call that already has its snapshot).
 */
typedef struct pix_statement
{
	const char *sql;
	int			nargs;
	Oid			types[PIX_STATEMENT_MAX_ARGS];
	int			cursor_options;
	bool		read_only;
	SPIPlanPtr	plan;
} pix_statement;

/*
 * Runs st (preparing and keeping it on first use): at most limit rows (0:
 * all). Returns SPI_processed; the rows are in SPI_tuptable. An SPI error is
 * an internal error.
 */
extern int
			pix_execute(pix_statement *st, Datum *values, const char *nulls, long limit);

/*
 * The same for a statement that waits for a row lock (a stream, an ISPB's
 * starts): the wait is bounded by pix.lock_timeout (or the caller's
 * lock_timeout when shorter), then PX009.
 */
extern int	pix_execute_locking(pix_statement *st, Datum *values,
								const char *nulls, long limit);

/*
 * SPI_connect / SPI_finish for statements whose plans must stay index plans
 * (see statement.c).
 */
extern int	pix_spi_connect(void);
extern void pix_spi_finish(int nest);

#endif
