/*
 * insert.c — the one INSERT through which the extension's own producers
 * (pix_generate_messages and pix_messages_send) put messages into pix.message.
 * See insert.h.
 *
 * The rows go in as column arrays unnested by one statement, a plain INSERT,
 * so the table's triggers treat them as any client's: validated and rendered
 * (message.c), queued and NOTIFYed (the statement trigger). A send's statement
 * skips endToEndIds already stored (ON CONFLICT DO NOTHING) and says which it
 * inserted; the generator's has no such clause (its ids are new).
 */
#include "pix.h"

#include "catalog/pg_type.h"
#include "mb/pg_wchar.h"
#include "utils/array.h"
#include "utils/builtins.h"

#include "insert.h"
#include "statement.h"

/*
 * The statement's parameters, one array each; order and types as in
 * INSERT_SQL.
 */
typedef enum field
{
	F_END_TO_END_ID,
	F_VALOR,
	F_PAGADOR_NOME,
	F_PAGADOR_CPF_CNPJ,
	F_PAGADOR_ISPB,
	F_PAGADOR_AGENCIA,
	F_PAGADOR_CONTA,
	F_PAGADOR_TIPO_CONTA,
	F_RECEBEDOR_NOME,
	F_RECEBEDOR_CPF_CNPJ,
	F_RECEBEDOR_ISPB,
	F_RECEBEDOR_AGENCIA,
	F_RECEBEDOR_CONTA,
	F_RECEBEDOR_TIPO_CONTA,
	F_CAMPO_LIVRE,
	F_TX_ID,
	F_DATA_HORA_PAGAMENTO,
	NUM_FIELDS
} field;

StaticAssertDecl(NUM_FIELDS == PIX_MESSAGE_COLUMNS,
				 "insert.h counts the columns");

#define INSERT_SQL \
	"INSERT INTO pix.message (end_to_end_id, valor, pagador_nome," \
	" pagador_cpf_cnpj, pagador_ispb, pagador_agencia, pagador_conta," \
	" pagador_tipo_conta, recebedor_nome, recebedor_cpf_cnpj, " \
	"recebedor_ispb," \
	" recebedor_agencia, recebedor_conta, recebedor_tipo_conta, campo_livre," \
	" tx_id, data_hora_pagamento)" \
	" SELECT * FROM ROWS FROM (pg_catalog.unnest($1), pg_catalog.unnest($2)," \
	" pg_catalog.unnest($3), pg_catalog.unnest($4), pg_catalog.unnest($5)," \
	" pg_catalog.unnest($6), pg_catalog.unnest($7), pg_catalog.unnest($8)," \
	" pg_catalog.unnest($9), pg_catalog.unnest($10), pg_catalog.unnest($11)," \
	" pg_catalog.unnest($12), pg_catalog.unnest($13), " \
	"pg_catalog.unnest($14)," \
	" pg_catalog.unnest($15), pg_catalog.unnest($16), pg_catalog.unnest($17))"
/*
 * One array per field, in the order of field: valor numeric, the payment time
 * timestamptz.
 */
#define INSERT_TYPES \
	{TEXTARRAYOID, NUMERICARRAYOID, TEXTARRAYOID, TEXTARRAYOID, TEXTARRAYOID, \
	 TEXTARRAYOID, TEXTARRAYOID, TEXTARRAYOID, TEXTARRAYOID, TEXTARRAYOID, \
	 TEXTARRAYOID, TEXTARRAYOID, TEXTARRAYOID, TEXTARRAYOID, TEXTARRAYOID, \
	 TEXTARRAYOID, TIMESTAMPTZARRAYOID}

static pix_statement insert_sql = {
	.sql = INSERT_SQL,
	.nargs = NUM_FIELDS,
	.types = INSERT_TYPES,
};

/*
 * The same, for pix_messages_send: an endToEndId already in pix.message is
 * skipped, not an error.
 */
static pix_statement insert_new_sql = {
	.sql = INSERT_SQL
	" ON CONFLICT (end_to_end_id) DO NOTHING RETURNING end_to_end_id",
	.nargs = NUM_FIELDS,
	.types = INSERT_TYPES,
};

/*
 * Set while pix_messages_insert runs with skip_existing: the INSERT trigger
 * (message.c) then leaves an endToEndId already stored to the statement's ON
 * CONFLICT DO NOTHING.
 */
bool		pix_insert_skips_existing = false;

static Datum text_datum(const char *utf8);

/*
 * The strings are UTF-8 (the generator's sources, a send's parsed body); a
 * database in another encoding gets its own (SQL_ASCII: the bytes as they
 * are).
 */
static Datum
text_datum(const char *utf8)
{
	int			encoding = GetDatabaseEncoding();

	if (encoding != PG_UTF8 && encoding != PG_SQL_ASCII)
		utf8 = pg_any_to_server(utf8, strlen(utf8), PG_UTF8);
	return CStringGetTextDatum(utf8);
}

/*
 * Row `row` of the statement's column arrays (NUM_FIELDS arrays): the
 * generator's messages and pix_messages_send's go in through the same INSERT.
 */
void
pix_message_row(Datum **columns, int row, const pix_message *m,
				TimestampTz data_hora)
{

	columns[F_END_TO_END_ID][row] = text_datum(m->end_to_end_id);
	columns[F_VALOR][row] =
		DirectFunctionCall3(numeric_in, CStringGetDatum(m->valor),
							ObjectIdGetDatum(InvalidOid), Int32GetDatum(-1));
	columns[F_PAGADOR_NOME][row] = text_datum(m->pagador.nome);
	columns[F_PAGADOR_CPF_CNPJ][row] = text_datum(m->pagador.cpf_cnpj);
	columns[F_PAGADOR_ISPB][row] = text_datum(m->pagador.ispb);
	columns[F_PAGADOR_AGENCIA][row] = text_datum(m->pagador.agencia);
	columns[F_PAGADOR_CONTA][row] = text_datum(m->pagador.conta);
	columns[F_PAGADOR_TIPO_CONTA][row] = text_datum(m->pagador.tipo_conta);
	columns[F_RECEBEDOR_NOME][row] = text_datum(m->recebedor.nome);
	columns[F_RECEBEDOR_CPF_CNPJ][row] = text_datum(m->recebedor.cpf_cnpj);
	columns[F_RECEBEDOR_ISPB][row] = text_datum(m->recebedor.ispb);
	columns[F_RECEBEDOR_AGENCIA][row] = text_datum(m->recebedor.agencia);
	columns[F_RECEBEDOR_CONTA][row] = text_datum(m->recebedor.conta);
	columns[F_RECEBEDOR_TIPO_CONTA][row] = text_datum(m->recebedor.tipo_conta);
	columns[F_CAMPO_LIVRE][row] = text_datum(m->campo_livre);
	columns[F_TX_ID][row] = text_datum(m->tx_id);
	columns[F_DATA_HORA_PAGAMENTO][row] = TimestampTzGetDatum(data_hora);
}

/*
 * One INSERT ... SELECT FROM unnest(arrays) of rows messages; returns the rows
 * inserted. With skip_existing, rows whose endToEndId is already stored are
 * skipped and SPI_tuptable lists the endToEndIds inserted.
 */
uint64
pix_messages_insert(Datum **columns, int rows, bool skip_existing)
{
	Datum		params[NUM_FIELDS];
	uint64		inserted = 0;

	for (int f = 0; f < NUM_FIELDS; f++)
	{
		if (f == F_VALOR)
			params[f] =
				PointerGetDatum(construct_array(columns[f], rows, NUMERICOID,
												-1, false, TYPALIGN_INT));
		else if (f == F_DATA_HORA_PAGAMENTO)
			params[f] = PointerGetDatum(
										construct_array(columns[f], rows, TIMESTAMPTZOID, 8,
														FLOAT8PASSBYVAL, TYPALIGN_DOUBLE));
		else
			params[f] =
				PointerGetDatum(construct_array(columns[f], rows, TEXTOID, -1,
												false, TYPALIGN_INT));
	}

	/*
	 * ON CONFLICT DO NOTHING decides about existing ids: the trigger must not
	 * refuse them first
	 */
	pix_insert_skips_existing = skip_existing;
	PG_TRY();
	{
		inserted = pix_execute(skip_existing ? &insert_new_sql : &insert_sql,
							   params, NULL, 0);
	}
	PG_FINALLY();
	{
		pix_insert_skips_existing = false;
	}
	PG_END_TRY();
	return inserted;
}
