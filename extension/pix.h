/*
 * pix.h — what every C file of the extension shares: SQLSTATEs, configuration,
 * limits.
 *
 * Vocabulary (used everywhere: SQL, C, HTTP docs):
 *   ISPB       an institution: exactly 8 ASCII digits.
 *   message    one Pix payment in pix.message, addressed to recebedor_ispb.
 *              Immutable.
 *   ready      a message no stream holds and nobody confirmed: a row in
 *              pix.ready.
 *   stream     one collector's read session (pix.stream); at most
 *              pix.max_collectors open per ISPB.
 *   iteration  one id issued to a stream (pix.iteration): the URI the
 *              collector must call next, and the batch delivered with it.
 *   batch      up to 10 messages delivered by one read.
 *   pending    the batch delivered with a stream's current id, until the next
 *              call confirms it.
 *   confirmed  a batch whose next call came; its messages are never delivered
 *              again.
 *   expired    a stream idle longer than pix.stream_idle_timeout; its pending
 *              batch is requeued.
 */
#ifndef PIX_H
#define PIX_H

#include "postgres.h"

#include "validate.h"

/*
 * Constants the SQL scripts share (pix--*.sql cannot include this header): the
 * NOTIFY channel, the ISPB length (PIX_ISPB_LEN, validate.h), the batch
 * maximum and the SQLSTATEs. This header is their source: pix_constants()
 * (pix.c) exposes them, and regress test 94_shared_constants checks every
 * literal of the installed SQL (function bodies, check constraints) against
 * it.
 */

/*
 * SQLSTATEs, one per condition of the contract (class PX), and the HTTP status
 * pixd answers with (docs/http-api.md): PX001 and PX002 400, PX003 429, PX004
 * 404, PX005 410, PX009 503, PX010 422, PX011 409, PX012 401, PX013 403, PX014
 * 422.
 */
#define ERRCODE_PIX_INVALID_ISPB MAKE_SQLSTATE('P','X','0','0','1')
#define ERRCODE_PIX_INVALID_COUNT MAKE_SQLSTATE('P','X','0','0','2')
#define ERRCODE_PIX_TOO_MANY_STREAMS MAKE_SQLSTATE('P','X','0','0','3')
#define ERRCODE_PIX_STREAM_NOT_FOUND MAKE_SQLSTATE('P','X','0','0','4')
#define ERRCODE_PIX_STREAM_GONE MAKE_SQLSTATE('P','X','0','0','5')
#define ERRCODE_PIX_INVALID_MESSAGE MAKE_SQLSTATE('P','X','0','0','6')
#define ERRCODE_PIX_IMMUTABLE MAKE_SQLSTATE('P','X','0','0','7')
#define ERRCODE_PIX_ISOLATION MAKE_SQLSTATE('P','X','0','0','8')
#define ERRCODE_PIX_BUSY MAKE_SQLSTATE('P','X','0','0','9')
#define ERRCODE_PIX_INVALID_SEND MAKE_SQLSTATE('P','X','0','1','0')
#define ERRCODE_PIX_SEND_CONFLICT MAKE_SQLSTATE('P','X','0','1','1')
#define ERRCODE_PIX_UNAUTHENTICATED MAKE_SQLSTATE('P','X','0','1','2')
#define ERRCODE_PIX_FORBIDDEN MAKE_SQLSTATE('P','X','0','1','3')
#define ERRCODE_PIX_UNKNOWN_INSTITUTION MAKE_SQLSTATE('P','X','0','1','4')

/* The most messages one read delivers (max_messages). */
#define PIX_MAX_BATCH 10

/*
 * Every enqueue path and every requeue NOTIFYs this channel with the ISPB as
 * payload (pixd LISTENs).
 */
#define PIX_NOTIFY_CHANNEL "pix_message"

/* Configuration (GUCs), registered in pix.c. */
extern int	pix_max_collectors;
extern int	pix_stream_idle_timeout_ms;
extern int	pix_max_generate;
extern int	pix_history_retention_s;
extern int	pix_lock_timeout_ms;
extern int	pix_send_idempotency_horizon_s;

/*
 * Raises PX001 unless the argument is a valid ISPB; returns it as a
 * NUL-terminated string.
 */
extern char *pix_ispb_arg(text *arg);

/*
 * Raises PX008 unless the transaction is READ COMMITTED (claims must see what
 * others committed).
 */
extern void pix_require_read_committed(void);

#endif
