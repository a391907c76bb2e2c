/*
 * send.h — what send.c offers the rest of the extension.
 */
#ifndef PIX_SEND_H
#define PIX_SEND_H

#include "postgres.h"

/*
 * Forgets one chunk of endToEndIds accepted by pix_messages_send longer ago than
 * pix.send_idempotency_horizon; returns how many. Runs inside the caller's SPI connection
 * (pix_purge_history).
 */
extern int64 pix_send_forget_expired(void);

#endif
