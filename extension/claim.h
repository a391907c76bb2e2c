/*
 * claim.h — taking messages off an ISPB's ready queue.
 */
#ifndef PIX_CLAIM_H
#define PIX_CLAIM_H

#include "postgres.h"

#include "datatype/timestamp.h"

/*
 * Deletes up to max rows of pix.ready for ispb, oldest message first, skipping
 * rows that concurrent claimers hold, and writes their message ids to ids
 * (ascending). Returns how many it took, and in *redelivered how many of them
 * had been requeued before.
 */
extern int
			pix_claim_ready(const char *ispb, int max, int64 *ids, int *redelivered);

/*
 * Whether pix_claim_ready would find something for ispb now; takes and writes
 * nothing.
 */
extern bool pix_claim_peek(const char *ispb);

/*
 * Whether this backend's last claim of ispb filled its batch (a hint: nothing
 * about what is ready now).
 */
extern bool pix_claim_last_full(const char *ispb);

/*
 * True (and remembered) when this backend's reads of ispb have not swept idle
 * streams for interval_ms.
 */
extern bool
			pix_claim_sweep_due(const char *ispb, TimestampTz now, int64 interval_ms);

#endif
