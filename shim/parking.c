/*
 * parking.c — the ISPB index of reads in progress and their wait deadlines.
 *
 * The index is a fixed array of buckets (intrusive lists), chosen by a hash of the ISPB; a bucket
 * may hold several ISPBs, so waking compares the ISPB of each slot. Its size is bounded by
 * --max-parked (joined slots), checked at join.
 *
 * Invariants:
 *   - joined == linked in a bucket; counted in joined_count.
 *   - parked implies joined, and is counted in parked_count.
 *   - deadline is linked from the first park until it fires or the slot leaves; it is never
 *     re-armed, so a read waits --wait-ms in total however many times it is woken.
 *   - Callbacks (on_wake, on_deadline) may unlink the slot they are called for, never another one,
 *     so walking a bucket keeps the next pointer before the call.
 */
#include <string.h>
#include "parking.h"

#define N_BUCKETS 4096

static void on_deadline(h2o_timeout_entry_t *entry);
static h2o_linklist_t *bucket_of(const char *ispb);
static int wake_slot(struct parking_slot *s);
static void unpark(struct parking_slot *s);

static struct {
	h2o_linklist_t buckets[N_BUCKETS];
	h2o_timeout_t wait;
	int joined_count;
	int parked_count;
} lot;

void parking_init(void)
{
	for (int i = 0; i < N_BUCKETS; i++)
		h2o_linklist_init_anchor(&lot.buckets[i]);
	h2o_timeout_init(pixd_loop, &lot.wait, pixd_config.wait_ms);
}

/* FNV-1a over the 8 digits. */
static h2o_linklist_t *bucket_of(const char *ispb)
{
	uint32_t h = 2166136261u;

	for (int i = 0; i < PIXD_ISPB_LEN && ispb[i] != '\0'; i++)
		h = (h ^ (unsigned char)ispb[i]) * 16777619u;
	return &lot.buckets[h % N_BUCKETS];
}

int parking_join(struct parking_slot *s, const char *ispb)
{
	if (lot.joined_count >= pixd_config.max_parked)
		return -1;
	memcpy(s->ispb, ispb, PIXD_ISPB_LEN);
	s->ispb[PIXD_ISPB_LEN] = '\0';
	s->deadline = (h2o_timeout_entry_t){0};
	s->deadline.cb = on_deadline;
	s->parked = s->notified = s->expired = 0;
	h2o_linklist_insert(bucket_of(s->ispb), &s->link);
	s->joined = 1;
	lot.joined_count++;
	/* The wait counts from the request, not from its first empty answer: "up to 8 s" is the
	 * collector's 8 s, however long the first query queued. */
	s->deadline_started = 1;
	h2o_timeout_link(pixd_loop, &lot.wait, &s->deadline);
	return 0;
}

enum park_outcome parking_park(struct parking_slot *s)
{
	if (s->expired || pixd_shutting_down)
		return PARK_ANSWER_NOW;
	if (s->notified) {
		s->notified = 0;
		return PARK_READ_AGAIN;
	}
	s->parked = 1;
	lot.parked_count++;
	pixd_metrics.parks++;
	return PARK_WAITING;
}

static void unpark(struct parking_slot *s)
{
	if (s->parked) {
		s->parked = 0;
		lot.parked_count--;
	}
}

void parking_leave(struct parking_slot *s)
{
	if (!s->joined)
		return;
	unpark(s);
	h2o_timeout_unlink(&s->deadline);
	h2o_linklist_unlink(&s->link);
	s->joined = 0;
	lot.joined_count--;
}

static void on_deadline(h2o_timeout_entry_t *entry)
{
	struct parking_slot *s = H2O_STRUCT_FROM_MEMBER(struct parking_slot, deadline, entry);

	s->expired = 1;
	if (s->parked) {
		unpark(s);
		s->on_deadline(s);
	}
}

/* 1 when s was parked and now reads again; a reading slot only notes it must read once more. */
static int wake_slot(struct parking_slot *s)
{
	if (!s->parked) {
		s->notified = 1;
		return 0;
	}
	unpark(s);
	pixd_metrics.wakeups++;
	if (s->on_wake(s) != 0) {
		/* Could not query now (pool down or full): keep waiting for the next wake or the deadline.
		 */
		s->parked = 1;
		lot.parked_count++;
		return 0;
	}
	return 1;
}

/*
 * A NOTIFY for ispb wakes every parked read of it, and every read of it that is querying right now
 * reads again if its query comes back empty (that query may have missed the new message). Waking
 * only one per NOTIFY would be cheaper, but a read woken for one message can take an older one that
 * nobody was woken for, and a message can then wait for the next NOTIFY (measured: p99 320 ms at
 * 12 messages/s per ISPB). Every parked collector reading once per message costs database work, not
 * latency, and only while the collectors are idle.
 */
void parking_wake(const char *ispb)
{
	h2o_linklist_t *bucket = bucket_of(ispb);
	h2o_linklist_t *node, *next;

	for (node = bucket->next; node != bucket; node = next) {
		struct parking_slot *s = H2O_STRUCT_FROM_MEMBER(struct parking_slot, link, node);
		next = node->next;
		if (strcmp(s->ispb, ispb) == 0)
			wake_slot(s);
	}
}

void parking_wake_all(void)
{
	for (int i = 0; i < N_BUCKETS && lot.joined_count > 0; i++) {
		h2o_linklist_t *node, *next;
		for (node = lot.buckets[i].next; node != &lot.buckets[i]; node = next) {
			next = node->next;
			wake_slot(H2O_STRUCT_FROM_MEMBER(struct parking_slot, link, node));
		}
	}
}

void parking_shutdown(void)
{
	for (int i = 0; i < N_BUCKETS && lot.parked_count > 0; i++) {
		h2o_linklist_t *node, *next;
		for (node = lot.buckets[i].next; node != &lot.buckets[i]; node = next) {
			struct parking_slot *s = H2O_STRUCT_FROM_MEMBER(struct parking_slot, link, node);
			next = node->next;
			if (s->parked) {
				unpark(s);
				s->on_deadline(s);
			}
		}
	}
}

int parking_joined_count(void)
{
	return lot.joined_count;
}

int parking_parked_count(void)
{
	return lot.parked_count;
}
