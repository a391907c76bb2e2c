/*
 * message.c — the triggers of pix.message: every INSERT is validated and
 * rendered here; no UPDATE.
 *
 * Whatever path a message takes in (a client's INSERT, COPY,
 * pix_generate_messages), this BEFORE INSERT trigger is the one gate: it
 * applies the contract's rules (validate.c) and stores `body`, the JSON
 * exactly as HTTP serves it (render.c), so that a read copies bytes and never
 * formats. It also confines an institution role that may INSERT (given
 * pix_producer) to payments of the ISPB it is bound to (auth.c,
 * pix_authorize_payer); other producers are trusted, at no lookup.
 *
 * Two columns are not text and are normalized rather than merely checked, so
 * that the stored value is the served value:
 *   valor                numeric. Refused when NULL, NaN, infinite, <= 0, >=
 *                        1e13, or with a nonzero digit after the second
 *                        decimal (money is never rounded silently); stored
 *                        with scale exactly 2 (90.2 -> 90.20).
 *   data_hora_pagamento  timestamptz, truncated to milliseconds (the served
 *                        precision) and served in UTC as
 *                        YYYY-MM-DDTHH:MM:SS.mmmZ.
 *
 * Columns are found by name and the positions cached per backend; the cache is
 * checked against the tuple descriptor on every call (name, type, not
 * dropped), so an ALTER TABLE cannot make it lie.
 *
 * The rules are written for UTF-8. In a database of another encoding the texts
 * are converted to UTF-8 to be judged and rendered and `body` converted back;
 * SQL_ASCII stores bytes as given, so they are judged as they are (and must be
 * valid UTF-8).
 */
#include "pix.h"

#include "access/genam.h"
#include "access/htup_details.h"
#include "access/stratnum.h"
#include "access/tableam.h"
#include "catalog/pg_type.h"
#include "commands/trigger.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "mb/pg_wchar.h"
#include "utils/builtins.h"
#include "utils/datetime.h"
#include "utils/fmgroids.h"
#include "utils/lsyscache.h"
#include "utils/numeric.h"
#include "utils/rel.h"
#include "utils/snapmgr.h"
#include "utils/timestamp.h"

#include "insert.h"
#include "render.h"
#include "auth.h"
#include "validate.h"

/*
 * The columns the trigger reads or writes; positions are looked up by these
 * names.
 */
typedef enum column
{
	COL_END_TO_END_ID,
	COL_VALOR,
	COL_PAGADOR_NOME,
	COL_PAGADOR_CPF_CNPJ,
	COL_PAGADOR_ISPB,
	COL_PAGADOR_AGENCIA,
	COL_PAGADOR_CONTA,
	COL_PAGADOR_TIPO_CONTA,
	COL_RECEBEDOR_NOME,
	COL_RECEBEDOR_CPF_CNPJ,
	COL_RECEBEDOR_ISPB,
	COL_RECEBEDOR_AGENCIA,
	COL_RECEBEDOR_CONTA,
	COL_RECEBEDOR_TIPO_CONTA,
	COL_CAMPO_LIVRE,
	COL_TX_ID,
	COL_DATA_HORA_PAGAMENTO,
	COL_BODY,
	NUM_COLUMNS
} column;

static const struct
{
	const char *name;
	Oid			type;
}			columns[NUM_COLUMNS] = {
	[COL_END_TO_END_ID] = {"end_to_end_id", TEXTOID},
	[COL_VALOR] = {"valor", NUMERICOID},
	[COL_PAGADOR_NOME] = {"pagador_nome", TEXTOID},
	[COL_PAGADOR_CPF_CNPJ] = {"pagador_cpf_cnpj", TEXTOID},
	[COL_PAGADOR_ISPB] = {"pagador_ispb", TEXTOID},
	[COL_PAGADOR_AGENCIA] = {"pagador_agencia", TEXTOID},
	[COL_PAGADOR_CONTA] = {"pagador_conta", TEXTOID},
	[COL_PAGADOR_TIPO_CONTA] = {"pagador_tipo_conta", TEXTOID},
	[COL_RECEBEDOR_NOME] = {"recebedor_nome", TEXTOID},
	[COL_RECEBEDOR_CPF_CNPJ] = {"recebedor_cpf_cnpj", TEXTOID},
	[COL_RECEBEDOR_ISPB] = {"recebedor_ispb", TEXTOID},
	[COL_RECEBEDOR_AGENCIA] = {"recebedor_agencia", TEXTOID},
	[COL_RECEBEDOR_CONTA] = {"recebedor_conta", TEXTOID},
	[COL_RECEBEDOR_TIPO_CONTA] = {"recebedor_tipo_conta", TEXTOID},
	[COL_CAMPO_LIVRE] = {"campo_livre", TEXTOID},
	[COL_TX_ID] = {"tx_id", TEXTOID},
	[COL_DATA_HORA_PAGAMENTO] = {"data_hora_pagamento", TIMESTAMPTZOID},
	[COL_BODY] = {"body", TEXTOID},
};

/* Attribute numbers by column, cached per backend; 0 until first looked up. */
static AttrNumber attnums[NUM_COLUMNS];

static void
			require_trigger(FunctionCallInfo fcinfo, const char *name, bool insert);
static void lookup_columns(TupleDesc desc);
static bool column_matches(TupleDesc desc, column c, AttrNumber attnum);
static const char *text_column(HeapTuple tuple, TupleDesc desc, column c);
static char *to_utf8(char *s);
static const char *valor_text(HeapTuple tuple, TupleDesc desc, char **text);
static const char *data_hora_text(HeapTuple tuple, TupleDesc desc, TimestampTz *ts, char *text);
static void read_message(HeapTuple tuple, TupleDesc desc, pix_message *m);
static Datum render_body(const pix_message *m);
static void raise_invalid(const char *problem);
static void
			refuse_duplicate(Relation message, HeapTuple tuple, TupleDesc desc);

/*
 * A C function declared RETURNS trigger can still be called by other means (a
 * misdeclared function, a hand-made fcinfo): check before touching
 * fcinfo->context as a TriggerData.
 */
static void
require_trigger(FunctionCallInfo fcinfo, const char *name, bool insert)
{
	TriggerData *td;

	if (!CALLED_AS_TRIGGER(fcinfo))
		ereport(ERROR, (errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
						errmsg("%s: not called by trigger manager", name)));
	td = (TriggerData *) fcinfo->context;
	if (!TRIGGER_FIRED_BEFORE(td->tg_event) ||
		!TRIGGER_FIRED_FOR_ROW(td->tg_event) ||
		(insert && !TRIGGER_FIRED_BY_INSERT(td->tg_event)))
		ereport(ERROR, (errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
						errmsg("%s: must be fired BEFORE %s FOR EACH ROW",
							   name, insert ? "INSERT" : "UPDATE")));
}

static bool
column_matches(TupleDesc desc, column c, AttrNumber attnum)
{
	Form_pg_attribute attr;

	if (attnum < 1 || attnum > desc->natts)
		return false;
	attr = TupleDescAttr(desc, attnum - 1);
	return !attr->attisdropped && attr->atttypid == columns[c].type &&
		strcmp(NameStr(attr->attname), columns[c].name) == 0;
}

/*
 * Checks the cached positions (cheap) and looks up again only those that no
 * longer match.
 */
static void
lookup_columns(TupleDesc desc)
{
	for (int c = 0; c < NUM_COLUMNS; c++)
	{
		int			attnum;

		if (column_matches(desc, c, attnums[c]))
			continue;
		attnum = SPI_fnumber(desc, columns[c].name);
		if (attnum <= 0 || !column_matches(desc, c, attnum))
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_TABLE_DEFINITION),
					 errmsg("pix.message has no column \"%s\" of type %s",
							columns[c].name,
							format_type_be(columns[c].type))));
		attnums[c] = attnum;
	}
}

/*
 * Databases not in UTF-8 (nor SQL_ASCII, which has no encoding) hold converted
 * text.
 */
static char *
to_utf8(char *s)
{
	int			encoding = GetDatabaseEncoding();

	if (encoding == PG_UTF8 || encoding == PG_SQL_ASCII)
		return s;
	return pg_server_to_any(s, strlen(s), PG_UTF8);
}

/*
 * A text column as a UTF-8 C string, or NULL when SQL NULL (the validator
 * names the field).
 */
static const char *
text_column(HeapTuple tuple, TupleDesc desc, column c)
{
	bool		isnull;
	Datum		d = heap_getattr(tuple, attnums[c], desc, &isnull);

	return isnull ? NULL : to_utf8(TextDatumGetCString(d));
}

/*
 * valor in the contract's text form: exactly two decimals. numeric_out writes
 * the value with its own scale and never an exponent; pix_valor_normalize
 * edits that text rather than rounding the number (pix_messages_send
 * normalizes its JSON numbers with the same function).
 */
static const char *
valor_text(HeapTuple tuple, TupleDesc desc, char **text)
{
	bool		isnull;
	Datum		d = heap_getattr(tuple, attnums[COL_VALOR], desc, &isnull);

	*text = NULL;
	if (isnull)
		return NULL;			/* the validator reports "valor: missing" */
	*text = palloc(PIX_VALOR_TEXT_CAP);
	if (numeric_is_nan(DatumGetNumeric(d)) ||
		numeric_is_inf(DatumGetNumeric(d)))
		return "valor: must be a finite number";
	return pix_valor_normalize(DatumGetCString(
											   DirectFunctionCall1(numeric_out, d)),
							   *text);
}

/*
 * data_hora_pagamento truncated to milliseconds (floor, also before 2000 where
 * the count is negative) and written as UTC; text must hold PIX_DATA_HORA_LEN
 * + 1 bytes.
 */
static const char *
data_hora_text(HeapTuple tuple, TupleDesc desc, TimestampTz *ts, char *text)
{
	bool		isnull;
	Datum		d =
	heap_getattr(tuple, attnums[COL_DATA_HORA_PAGAMENTO], desc, &isnull);
	struct pg_tm tm;
	fsec_t		fsec;

	text[		0] = '\0';

	if (isnull)
		return "dataHoraPagamento: missing";
	*ts = DatumGetTimestampTz(d);
	if (TIMESTAMP_NOT_FINITE(*ts))
		return "dataHoraPagamento: must be a finite time";
	*ts -= ((*ts % 1000) + 1000) % 1000;

	/*
	 * No time zone: the broken-down time is UTC, whatever the session's
	 * TimeZone.
	 */
	if (timestamp2tm(*ts, NULL, &tm, &fsec, NULL, NULL) != 0 ||
		tm.tm_year < 1 || tm.tm_year > 9999)
		return "dataHoraPagamento: year must be 0001 to 9999";
	snprintf(text, PIX_DATA_HORA_LEN + 1,
			 "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tm.tm_year, tm.tm_mon,
			 tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
			 (int) (fsec / 1000));
	return NULL;
}

static void
read_message(HeapTuple tuple, TupleDesc desc, pix_message *m)
{
	m->end_to_end_id = text_column(tuple, desc, COL_END_TO_END_ID);
	m->pagador.nome = text_column(tuple, desc, COL_PAGADOR_NOME);
	m->pagador.cpf_cnpj = text_column(tuple, desc, COL_PAGADOR_CPF_CNPJ);
	m->pagador.ispb = text_column(tuple, desc, COL_PAGADOR_ISPB);
	m->pagador.agencia = text_column(tuple, desc, COL_PAGADOR_AGENCIA);
	m->pagador.conta = text_column(tuple, desc, COL_PAGADOR_CONTA);
	m->pagador.tipo_conta = text_column(tuple, desc, COL_PAGADOR_TIPO_CONTA);
	m->recebedor.nome = text_column(tuple, desc, COL_RECEBEDOR_NOME);
	m->recebedor.cpf_cnpj = text_column(tuple, desc, COL_RECEBEDOR_CPF_CNPJ);
	m->recebedor.ispb = text_column(tuple, desc, COL_RECEBEDOR_ISPB);
	m->recebedor.agencia = text_column(tuple, desc, COL_RECEBEDOR_AGENCIA);
	m->recebedor.conta = text_column(tuple, desc, COL_RECEBEDOR_CONTA);
	m->recebedor.tipo_conta =
		text_column(tuple, desc, COL_RECEBEDOR_TIPO_CONTA);
	m->campo_livre = text_column(tuple, desc, COL_CAMPO_LIVRE);
	m->tx_id = text_column(tuple, desc, COL_TX_ID);
}

/* Renders straight into a text datum: measure, allocate once, write. */
static Datum
render_body(const pix_message *m)
{
	size_t		len = pix_render_message(m, NULL, 0);
	text	   *body = palloc(VARHDRSZ + len + 1);
	int			encoding = GetDatabaseEncoding();

	pix_render_message(m, VARDATA(body), len + 1);
	SET_VARSIZE(body, VARHDRSZ + len);
	if (encoding != PG_UTF8 && encoding != PG_SQL_ASCII)
		return CStringGetTextDatum(
								   pg_any_to_server(VARDATA(body), (int) len, PG_UTF8));
	return PointerGetDatum(body);
}

static void
raise_invalid(const char *problem)
{
	ereport(ERROR, (errcode(ERRCODE_PIX_INVALID_MESSAGE),
					errmsg("invalid Pix message"), errdetail("%s", problem)));
}

/*
 * An endToEndId that is already stored (committed, or inserted earlier by this
 * transaction, this statement included) is PX006 like any other invalid field,
 * not the unique index's 23505. The lookup reads the unique index directly
 * with SnapshotSelf: the inserting role (a producer) may have no SELECT on
 * pix.message. Two transactions inserting the same endToEndId at once cannot
 * see each other's row: the second to reach the index still gets 23505 there.
 * pix_messages_send's INSERT skips stored ids itself (ON CONFLICT DO NOTHING,
 * insert.h) and compares them afterwards.
 */
static void
refuse_duplicate(Relation message, HeapTuple tuple, TupleDesc desc)
{
	Oid			index_oid = get_relname_relid("message_end_to_end_id_key",
											  RelationGetNamespace(message));
	bool		isnull;
	Datum		e2e = heap_getattr(tuple, attnums[COL_END_TO_END_ID], desc, &isnull);
	Relation	index;
	IndexScanDesc scan;
	ScanKeyData key;
	TupleTableSlot *slot;
	bool		found;

	if (pix_insert_skips_existing)
		return;
	if (isnull || !OidIsValid(index_oid))
		return;					/* NULL is the validator's; without the index
								 * there is no uniqueness to keep */
	index = index_open(index_oid, AccessShareLock);
	slot = table_slot_create(message, NULL);
	ScanKeyInit(&key, 1, BTEqualStrategyNumber, F_TEXTEQ, e2e);
	scan = index_beginscan(message, index, SnapshotSelf, 1, 0);
	index_rescan(scan, &key, 1, NULL, 0);
	found = index_getnext_slot(scan, ForwardScanDirection, slot);
	index_endscan(scan);
	ExecDropSingleTupleTableSlot(slot);
	index_close(index, AccessShareLock);
	if (found)
		ereport(ERROR, (errcode(ERRCODE_PIX_INVALID_MESSAGE),
						errmsg("invalid Pix message"),
						errdetail("endToEndId: %s is already enqueued.",
								  TextDatumGetCString(e2e))));
}

/*
 * BEFORE INSERT FOR EACH ROW on pix.message: refuses an invalid message
 * (PX006, the detail names the field) or returns the row with valor at scale
 * 2, the time truncated to milliseconds and body rendered. Any body the client
 * supplied is replaced.
 */
PG_FUNCTION_INFO_V1(pix_message_before_insert);
Datum
pix_message_before_insert(PG_FUNCTION_ARGS)
{
	TriggerData *td;
	TupleDesc	desc;
	HeapTuple	tuple;
	pix_message m;
	const char *problem;
	char	   *valor;
	char		data_hora[PIX_DATA_HORA_LEN + 1];
	TimestampTz ts = 0;
	Datum	   *values;
	bool	   *nulls,
			   *replace;

	require_trigger(fcinfo, "pix_message_before_insert", true);
	td = (TriggerData *) fcinfo->context;
	desc = RelationGetDescr(td->tg_relation);
	tuple = td->tg_trigtuple;
	lookup_columns(desc);

	read_message(tuple, desc, &m);
	if ((problem = valor_text(tuple, desc, &valor)) != NULL ||
		(problem = data_hora_text(tuple, desc, &ts, data_hora)) != NULL)
		raise_invalid(problem);
	m.valor = valor;
	m.data_hora_pagamento = data_hora;
	if ((problem = pix_message_problem(&m)) != NULL)
		raise_invalid(problem);
	pix_authorize_payer(m.pagador.ispb,
						RelationGetForm(td->tg_relation)->relowner);
	refuse_duplicate(td->tg_relation, tuple, desc);

	values = palloc0(desc->natts * sizeof(Datum));
	nulls = palloc0(desc->natts * sizeof(bool));
	replace = palloc0(desc->natts * sizeof(bool));
	values[attnums[COL_VALOR] - 1] =
		DirectFunctionCall3(numeric_in, CStringGetDatum(valor),
							ObjectIdGetDatum(InvalidOid), Int32GetDatum(-1));
	values[attnums[COL_DATA_HORA_PAGAMENTO] - 1] = TimestampTzGetDatum(ts);
	values[attnums[COL_BODY] - 1] = render_body(&m);
	replace[attnums[COL_VALOR] - 1] = true;
	replace[attnums[COL_DATA_HORA_PAGAMENTO] - 1] = true;
	replace[attnums[COL_BODY] - 1] = true;
	PG_RETURN_POINTER(heap_modify_tuple(tuple, desc, values, nulls, replace));
}

/*
 * BEFORE UPDATE FOR EACH ROW on pix.message: a payment that happened does not
 * change.
 */
PG_FUNCTION_INFO_V1(pix_message_immutable);
Datum
pix_message_immutable(PG_FUNCTION_ARGS)
{
	require_trigger(fcinfo, "pix_message_immutable", false);
	ereport(ERROR,
			(errcode(ERRCODE_PIX_IMMUTABLE), errmsg("Pix messages are immutable"),
			 errdetail("A message records a payment that happened; enqueue a new one instead.")));
	PG_RETURN_NULL();			/* not reached */
}
