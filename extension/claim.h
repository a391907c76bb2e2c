/*
 * claim.h — taking messages off an ISPB's ready queue.
 */
#ifndef PIX_CLAIM_H
#define PIX_CLAIM_H

#include "postgres.h"

/*
 * Deletes up to max rows of pix.ready for ispb, oldest message first, skipping rows that concurrent
 * claimers hold, and writes their message ids to ids (ascending). Returns how many it took.
 */
extern int pix_claim_ready(const char *ispb, int max, int64 *ids);

/* Tells this backend's claims that message_id is ready again (a requeue), so they look from there. */
extern void pix_claim_lower_hint(const char *ispb, int64 message_id);

#endif
