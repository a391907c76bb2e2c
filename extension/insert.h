/*
 * insert.h — the one INSERT through which the extension's own producers (the
 * generator and pix_messages_send) put messages into pix.message (insert.c):
 * column arrays unnested by one statement, so the table's triggers validate,
 * render, queue and NOTIFY them as any client's INSERT.
 */
#ifndef PIX_INSERT_H
#define PIX_INSERT_H

#include "postgres.h"

#include "utils/timestamp.h"

#include "validate.h"

/* The statement's columns: one Datum array each, in pix_message's order. */
#define PIX_MESSAGE_COLUMNS 17

/* Fills row `row` of the column arrays from m (UTF-8) and the payment time. */
void		pix_message_row(Datum **columns, int row, const pix_message *m,
							TimestampTz data_hora);

/*
 * Inserts rows rows from the column arrays in one statement (inside SPI);
 * returns rows inserted. With skip_existing, an endToEndId already in
 * pix.message is skipped (ON CONFLICT DO NOTHING) and SPI_tuptable holds the
 * endToEndIds inserted.
 */
uint64		pix_messages_insert(Datum **columns, int rows, bool skip_existing);

/*
 * True while pix_messages_insert runs with skip_existing: the INSERT trigger
 * (message.c) then leaves an endToEndId already stored to the statement's ON
 * CONFLICT DO NOTHING instead of refusing it.
 */
extern bool pix_insert_skips_existing;

#endif
