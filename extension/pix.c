/*
 * pix.c — the extension's entry point: module magic, configuration (every GUC,
 * in one place) and the argument checks every SQL function shares.
 *
 * The other files, from the bottom floor up:
 *   statement.c     how the extension runs SQL: prepared once and kept, lock
 *                   waits bounded (PX009).
 *   validate.c      pure C: a message judged (validate.c), rendered
 *   render.c        (render.c), parsed from a send's body (send_json.c).
 *   send_json.c
 *   claim.c         the claim's fixed access path to pix.ready.
 *   iteration_id.c  the ids a collector calls next.
 *   insert.c        the one INSERT of the extension's own producers.
 *   auth.c          who may act for which ISPB.
 *   stream.c        the state machine: every transition of a stream (its
 *                   header states the invariant and the locking).
 *   history.c       the purge of the history and of accepted send ids.
 *   message.c       the triggers of pix.message.
 *   send.c          pix_messages_send.
 *   generate.c      pix_generate_messages, the generator.
 */
#include "pix.h"

#include "fmgr.h"
#include "funcapi.h"
#include "utils/builtins.h"
#include "access/xact.h"
#include "utils/guc.h"

#include "validate.h"

PG_MODULE_MAGIC;

int			pix_max_collectors = 6;
int			pix_stream_idle_timeout_ms = 60000;
int			pix_max_generate = 10000;
int			pix_history_retention_s = 7 * 24 * 3600;
int			pix_lock_timeout_ms = 5000;
int			pix_send_idempotency_horizon_s = 30 * 24 * 3600;

void		_PG_init(void);

/*
 * Registers the GUCs. They are PGC_SUSET: the limits protect every collector
 * of an institution, so a client session may not raise them for itself; set
 * them with ALTER DATABASE/ROLE or postgresql.conf.
 */
void
_PG_init(void)
{
	DefineCustomIntVariable("pix.max_collectors",
							"Open streams allowed per ISPB.", NULL,
							&pix_max_collectors, 6, 1, 1000, PGC_SUSET, 0,
							NULL, NULL, NULL);
	DefineCustomIntVariable("pix.stream_idle_timeout",
							"A stream not read for this long expires and its "
							"pending batch is requeued.",
							NULL, &pix_stream_idle_timeout_ms, 60000, 1, 24 * 3600 * 1000,
							PGC_SUSET, GUC_UNIT_MS, NULL, NULL, NULL);
	DefineCustomIntVariable("pix.max_generate",
							"Largest number of messages pix_generate_messages "
							"makes per call.",
							NULL, &pix_max_generate, 10000, 1, 1000000, PGC_SUSET, 0, NULL, NULL,
							NULL);
	DefineCustomIntVariable("pix.history_retention",
							"Confirmed messages are kept this long for audit, "
							"then pix_purge_history() removes them.",
							NULL, &pix_history_retention_s, 7 * 24 * 3600, 0, PG_INT32_MAX,
							PGC_SUSET, GUC_UNIT_S, NULL, NULL, NULL);
	DefineCustomIntVariable("pix.lock_timeout",
							"Longest wait of a call for a stream (or an "
							"ISPB's starts) that another transaction holds; "
							"then PX009. 0: the caller's lock_timeout alone.",
							NULL, &pix_lock_timeout_ms, 5000, 0, 3600 * 1000, PGC_SUSET,
							GUC_UNIT_MS, NULL, NULL, NULL);
	DefineCustomIntVariable("pix.send_idempotency_horizon",
							"Accepted endToEndIds of pix_messages_send are "
							"remembered this long "
							"(re-sends are duplicates).",
							NULL, &pix_send_idempotency_horizon_s, 30 * 24 * 3600, 0, PG_INT32_MAX,
							PGC_SUSET, GUC_UNIT_S, NULL, NULL, NULL);
	MarkGUCPrefixReserved("pix");
}

/*
 * Every function takes the ISPB first and checks it first, so a malformed one
 * is always a 400, whatever else is wrong with the call. The text may be huge
 * or not valid in any encoding: only its bytes are read.
 */
char *
pix_ispb_arg(text *arg)
{
	if (arg == NULL ||
		!pix_valid_ispb(VARDATA_ANY(arg), VARSIZE_ANY_EXHDR(arg)))
		ereport(ERROR,
				(errcode(ERRCODE_PIX_INVALID_ISPB), errmsg("invalid ISPB"),
				 errdetail("An ISPB is exactly 8 ASCII digits.")));
	return text_to_cstring(arg);
}

/*
 * Every function runs in READ COMMITTED: claims and counts must see what other
 * transactions committed up to now, which a transaction snapshot would hide.
 * Refusing is clearer than answering wrongly.
 */
void
pix_require_read_committed(void)
{
	if (IsolationUsesXactSnapshot())
		ereport(ERROR,
				(errcode(ERRCODE_PIX_ISOLATION),
				 errmsg("pix functions need READ COMMITTED isolation"),
				 errdetail("Claims must see messages and streams committed by others up to now.")));
}

/*
 * pix_constants() RETURNS TABLE (name text, value text): the constants the SQL
 * scripts share with this C (see pix.h), for regress test 94_shared_constants,
 * which declares it in pg_temp. Not part of the extension's SQL: nothing else
 * needs it.
 */
PG_FUNCTION_INFO_V1(pix_constants);
Datum
pix_constants(PG_FUNCTION_ARGS)
{
	static const struct
	{
		const char *name;
		int			sqlstate;
	}			states[] = {
		{"invalid ISPB", ERRCODE_PIX_INVALID_ISPB},
		{"invalid max_messages", ERRCODE_PIX_INVALID_COUNT},
		{"too many open streams", ERRCODE_PIX_TOO_MANY_STREAMS},
		{"stream not found", ERRCODE_PIX_STREAM_NOT_FOUND},
		{"stream gone", ERRCODE_PIX_STREAM_GONE},
		{"invalid Pix message", ERRCODE_PIX_INVALID_MESSAGE},
		{"Pix messages are immutable", ERRCODE_PIX_IMMUTABLE},
		{"pix functions need READ COMMITTED isolation", ERRCODE_PIX_ISOLATION},
		{"stream busy", ERRCODE_PIX_BUSY},
		{"invalid messages", ERRCODE_PIX_INVALID_SEND},
		{"endToEndId conflict", ERRCODE_PIX_SEND_CONFLICT},
		{"unauthenticated", ERRCODE_PIX_UNAUTHENTICATED},
		{"forbidden", ERRCODE_PIX_FORBIDDEN},
		{"unknown institution", ERRCODE_PIX_UNKNOWN_INSTITUTION},
	};
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	Datum		values[2];
	bool		nulls[2] = {false, false};

	InitMaterializedSRF(fcinfo, 0);
#define CONSTANT(name, text) \
	do { \
		values[0] = CStringGetTextDatum(name); \
		values[1] = CStringGetTextDatum(text); \
		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, \
							 nulls); \
	} while (0)
	CONSTANT("notify channel", PIX_NOTIFY_CHANNEL);
	CONSTANT("ISPB length", psprintf("%d", PIX_ISPB_LEN));
	CONSTANT("batch maximum", psprintf("%d", PIX_MAX_BATCH));
	for (int i = 0; i < lengthof(states); i++)
		CONSTANT(psprintf("SQLSTATE %s", states[i].name),
				 unpack_sql_state(states[i].sqlstate));
#undef CONSTANT
	return (Datum) 0;
}
