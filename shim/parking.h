/*
 * parking.h — long polling: reads that found nothing wait here for a NOTIFY of their ISPB.
 *
 * A read joins the parking lot before its first query (so that a notification arriving while that
 * query runs is not lost), parks when a query finds nothing, and leaves when it answers or its
 * client goes away. A slot is embedded in the read's state: no allocation, O(1) join and leave.
 *
 * Per slot: joined (indexed by ISPB, deadline running) > parked (waiting) or reading (a query in
 * flight). A notification wakes every parked slot of its ISPB (on_wake: read again) and marks every
 * reading one (notified: read again as soon as the current read comes back empty). Wakes never
 * outrun the pool's free queue space: a parked slot that cannot be woken now waits in a FIFO of
 * pending wakes, served as the queue drains. The deadline, --wait-ms after the request joined,
 * calls on_deadline (parked or reading) and makes a reading one answer when its read comes back
 * empty. Once a second every parked slot is asked whether its client is still there (on_check).
 * A slot queries at most once per short interval however many notifications come (a wake within
 * it is held back to its end): a NOTIFY flood costs a bounded number of reads.
 */
#ifndef PIXD_PARKING_H
#define PIXD_PARKING_H

#include "pixd.h"

struct parking_slot;

/* What the owner of a slot does when the parking lot calls it (one shared table per kind). */
struct parking_ops {
	/* Parked and woken: start a read; return -1 if the pool cannot take it now (the slot stays
	 * parked, its wake pending). The callback may also answer and leave. */
	int (*on_wake)(struct parking_slot *s);
	/* The wait is over (or the server is stopping). Parked: the slot is unparked, answer now or
	 * read one last time. Reading: the read in flight is its last; hurry it. */
	void (*on_deadline)(struct parking_slot *s);
	/* Parked, once a second: the owner answers and leaves if its client has gone. */
	void (*on_check)(struct parking_slot *s);
};

struct parking_slot {
	const struct parking_ops *ops;
	h2o_linklist_t link;    /* in its ISPB's bucket while joined */
	h2o_linklist_t pending; /* in the FIFO of wakes waiting for queue space */
	h2o_timeout_entry_t deadline;
	h2o_timeout_entry_t cooldown; /* linked for a short while after each query (parking.c) */
	char ispb[PIXD_ISPB_LEN + 1];
	/* The stream's current interationId once a read returned one ("" before): what the owner
	 * reads next, and what parking_stream_ids reports for keepalive. */
	char iid[PIXD_IID_MAX + 1];
	unsigned joined : 1;
	unsigned parked : 1;
	unsigned notified : 1;
	unsigned expired : 1;
	unsigned authorized : 1; /* iid came back from the database: parking_stream_ids reports it */
	unsigned wake_due : 1; /* a wake held back until cooldown ends */
};

enum park_outcome {
	PARK_WAITING,    /* parked: on_wake or on_deadline will be called */
	PARK_READ_AGAIN, /* a notification came during the read: read again now */
	PARK_ANSWER_NOW, /* the wait is over (deadline or shutdown): answer 204 */
};

enum parking_join_status {
	PARKING_JOINED,
	PARKING_FULL,      /* --max-parked reads are in progress: the server's limit (503) */
	PARKING_ISPB_FULL, /* --max-reads-per-ispb of this ISPB are: its own share (429) */
};

void parking_init(void);
enum parking_join_status parking_join(struct parking_slot *s, const char *ispb,
                                      const struct parking_ops *ops);
/* The owner is about to query for the slot because it was woken: starts the wake interval. */
void parking_reading(struct parking_slot *s);
enum park_outcome parking_park(struct parking_slot *s);
/* Idempotent: safe from a dispose callback whatever the state. */
void parking_leave(struct parking_slot *s);
void parking_wake(const char *ispb);
void parking_wake_all(void);
/* Graceful shutdown: every parked read answers now; reading ones answer when their read returns. */
void parking_shutdown(void);
int parking_joined_count(void);
int parking_parked_count(void);
int parking_pending_count(void);

/*
 * Writes the interationIds of every joined read that has one from the database (authorized) as a
 * PostgreSQL text[] literal
 * ({"id","id",...}) into a malloc'd string; returns it (NULL when there is none or out of memory)
 * and sets *count.
 */
char *parking_stream_ids(int *count);

#endif
