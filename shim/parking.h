/*
 * parking.h — long polling: reads that found nothing wait here for a NOTIFY of their ISPB.
 *
 * A read joins the parking lot before its first query (so that a notification arriving while that
 * query runs is not lost), parks when a query finds nothing, and leaves when it answers or its
 * client goes away. A slot is embedded in the read's state: no allocation, O(1) join and leave.
 *
 * Per slot: joined (indexed by ISPB, deadline running) > parked (waiting) or reading (a query in
 * flight). A notification wakes every parked slot of its ISPB (on_wake: read again) and marks every
 * reading one (notified: read again as soon as the current read comes back empty). The deadline,
 * --wait-ms after the request joined, calls on_deadline on a parked slot and makes a reading one
 * answer when its read comes back empty.
 */
#ifndef PIXD_PARKING_H
#define PIXD_PARKING_H

#include "pixd.h"

struct parking_slot {
	char ispb[PIXD_ISPB_LEN + 1];
	h2o_linklist_t link; /* in its ISPB's bucket while joined */
	h2o_timeout_entry_t deadline;
	unsigned joined : 1;
	unsigned parked : 1;
	unsigned notified : 1;
	unsigned deadline_started : 1;
	unsigned expired : 1;
	/* Parked and woken: start a read; return -1 if it could not (the slot stays parked). */
	int (*on_wake)(struct parking_slot *s);
	/* Parked and the wait is over (or the server is stopping): answer 204 now. */
	void (*on_deadline)(struct parking_slot *s);
};

enum park_outcome {
	PARK_WAITING,    /* parked: on_wake or on_deadline will be called */
	PARK_READ_AGAIN, /* a notification came during the read: read again now */
	PARK_ANSWER_NOW, /* the wait is over (deadline or shutdown): answer 204 */
};

void parking_init(void);
/* -1 when --max-parked reads are already in progress. */
int parking_join(struct parking_slot *s, const char *ispb);
enum park_outcome parking_park(struct parking_slot *s);
/* Idempotent: safe from a dispose callback whatever the state. */
void parking_leave(struct parking_slot *s);
void parking_wake(const char *ispb);
void parking_wake_all(void);
/* Graceful shutdown: every parked read answers now; reading ones answer when their read returns. */
void parking_shutdown(void);
int parking_joined_count(void);
int parking_parked_count(void);

#endif
