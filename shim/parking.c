/*
 * parking.c — the ISPB index of reads in progress and their wait deadlines.
 *
 * The index is a fixed array of buckets (intrusive lists), chosen by a hash of the ISPB; a bucket
 * may hold several ISPBs, so waking compares the ISPB of each slot. Its size is bounded by
 * --max-parked (joined slots), checked at join, and so is each ISPB's share of it
 * (--max-reads-per-ispb), counted at join by walking the ISPB's bucket: that walk is bounded by the
 * share times the few ISPBs that hash to the bucket, and one institution cannot hold every slot.
 *
 * Invariants:
 *   - joined == linked in a bucket; counted in joined_count.
 *   - parked implies joined, and is counted in parked_count.
 *   - deadline is linked from the first park until it fires or the slot leaves; it is never
 *     re-armed, so a read waits --wait-ms in total however many times it is woken.
 *   - pending (linked in lot.pending) implies parked; counted in pending_count.
 *   - Callbacks (on_wake, on_deadline, on_check) may unlink the slot they are called for, never
 *     another one, so walking a bucket keeps the next pointer before the call; marking slots
 *     (want_wake) calls nothing, and the pump walks only the pending FIFO.
 *   - cooldown is linked for WAKE_EVERY_MS from each query a wake made for the slot
 *     (parking_reading; a read's first query does not count).
 *     While it is, a wake does not start a read: it sets wake_due, and the cooldown's end queues
 *     the wake if the slot is still parked. wake_due implies parked and cooldown linked.
 *
 * Why the cooldown: the pix_message channel is open to every database login (PostgreSQL has no
 * privilege on channels), so anyone who can connect can NOTIFY an ISPB as often as they like. Each
 * notification used to make every parked read of that ISPB query again as soon as its previous
 * query came back: a flood cost one query per parked reader per query time. Now a woken read
 * queries again on a wake at most once per WAKE_EVERY_MS however many notifications come, and
 * many notifications within that interval cost one query. A read's first query starts no
 * interval, so the collector that just took a message and asked again is woken at once by the
 * next one; the others, which read for nothing, wait out the interval.
 */
#include <stdlib.h>
#include <string.h>
#include "database.h"
#include "parking.h"

#define N_BUCKETS 4096
#define CHECK_EVERY_MS 1000
/* A read queries again on a wake at most this often (see the header). */
#define WAKE_EVERY_MS 10

static void on_deadline(h2o_timeout_entry_t *entry);
static void on_check_tick(h2o_timeout_entry_t *entry);
static void on_pump(h2o_timeout_entry_t *entry);
static void on_cooldown(h2o_timeout_entry_t *entry);
static void queue_wake(struct parking_slot *s);
static void on_pool_room(void);
static void on_pool_up(void);
static void mark_all(void);
static h2o_linklist_t *bucket_of(const char *ispb);
static void want_wake(struct parking_slot *s);
static void pump(void);
static void unpark(struct parking_slot *s);
static size_t quoted_len(const char *id);
static int ispb_joined_count(h2o_linklist_t *bucket, const char *ispb);

static struct {
	h2o_linklist_t buckets[N_BUCKETS];
	h2o_linklist_t pending; /* parked slots to wake, oldest first, as the queue has room */
	h2o_timeout_t wait;
	h2o_timeout_t check_every;
	h2o_timeout_t soon;     /* 0 ms: the pump runs from the loop, never inside the pool's code */
	h2o_timeout_t cooldown; /* WAKE_EVERY_MS */
	h2o_timeout_entry_t check_entry;
	h2o_timeout_entry_t pump_entry;
	int joined_count;
	int parked_count;
	int pending_count;
} lot;

void parking_init(void)
{
	for (int i = 0; i < N_BUCKETS; i++)
		h2o_linklist_init_anchor(&lot.buckets[i]);
	h2o_linklist_init_anchor(&lot.pending);
	h2o_timeout_init(pixd_loop, &lot.wait, pixd_config.wait_ms);
	h2o_timeout_init(pixd_loop, &lot.check_every, CHECK_EVERY_MS);
	h2o_timeout_init(pixd_loop, &lot.soon, 0);
	h2o_timeout_init(pixd_loop, &lot.cooldown, WAKE_EVERY_MS);
	lot.check_entry.cb = on_check_tick;
	lot.pump_entry.cb = on_pump;
	h2o_timeout_link(pixd_loop, &lot.check_every, &lot.check_entry);
	/* Room in the queue lets pending wakes go; the pool coming back wakes every parked read (what
	 * was enqueued while it was down may have been notified to reads that could not query). */
	db_set_hooks(on_pool_room, on_pool_up);
}

/* FNV-1a over the 8 digits. */
static h2o_linklist_t *bucket_of(const char *ispb)
{
	uint32_t h = 2166136261u;

	for (int i = 0; i < PIXD_ISPB_LEN && ispb[i] != '\0'; i++)
		h = (h ^ (unsigned char)ispb[i]) * 16777619u;
	return &lot.buckets[h % N_BUCKETS];
}

static int ispb_joined_count(h2o_linklist_t *bucket, const char *ispb)
{
	int n = 0;

	for (h2o_linklist_t *node = bucket->next; node != bucket; node = node->next)
		n += strcmp(H2O_STRUCT_FROM_MEMBER(struct parking_slot, link, node)->ispb, ispb) == 0;
	return n;
}

enum parking_join_status parking_join(struct parking_slot *s, const char *ispb,
                                      const struct parking_ops *ops)
{
	h2o_linklist_t *bucket;

	if (lot.joined_count >= pixd_config.max_parked)
		return PARKING_FULL;
	memcpy(s->ispb, ispb, PIXD_ISPB_LEN);
	s->ispb[PIXD_ISPB_LEN] = '\0';
	bucket = bucket_of(s->ispb);
	if (ispb_joined_count(bucket, s->ispb) >= pixd_config.max_reads_per_ispb)
		return PARKING_ISPB_FULL;
	s->ops = ops;
	s->deadline = (h2o_timeout_entry_t){0};
	s->deadline.cb = on_deadline;
	s->cooldown = (h2o_timeout_entry_t){0};
	s->cooldown.cb = on_cooldown;
	s->pending = (h2o_linklist_t){NULL, NULL};
	s->parked = s->notified = s->expired = s->wake_due = 0;
	h2o_linklist_insert(bucket, &s->link);
	s->joined = 1;
	lot.joined_count++;
	/* The wait counts from the request, not from its first empty answer: "up to 8 s" is the
	 * collector's 8 s, however long the first query queued. */
	h2o_timeout_link(pixd_loop, &lot.wait, &s->deadline);
	return PARKING_JOINED;
}

void parking_reading(struct parking_slot *s)
{
	h2o_timeout_unlink(&s->cooldown);
	h2o_timeout_link(pixd_loop, &lot.cooldown, &s->cooldown);
}

/* A notification came during the read: read again now, or once the cooldown ends. */
enum park_outcome parking_park(struct parking_slot *s)
{
	if (s->expired || pixd_shutting_down)
		return PARK_ANSWER_NOW;
	if (s->notified && !h2o_timeout_is_linked(&s->cooldown)) {
		s->notified = 0;
		return PARK_READ_AGAIN;
	}
	s->parked = 1;
	lot.parked_count++;
	pixd_metrics.parks++;
	if (s->notified) {
		s->notified = 0;
		s->wake_due = 1;
		pixd_metrics.wakes_deferred++;
	}
	return PARK_WAITING;
}

static void unpark(struct parking_slot *s)
{
	s->wake_due = 0;
	if (h2o_linklist_is_linked(&s->pending)) {
		h2o_linklist_unlink(&s->pending);
		lot.pending_count--;
	}
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
	h2o_timeout_unlink(&s->cooldown);
	h2o_linklist_unlink(&s->link);
	s->joined = 0;
	lot.joined_count--;
}

/* Parked: the wait is over, answer (or read one last time). Reading: that read is the last. */
static void on_deadline(h2o_timeout_entry_t *entry)
{
	struct parking_slot *s = H2O_STRUCT_FROM_MEMBER(struct parking_slot, deadline, entry);

	s->expired = 1;
	unpark(s);
	s->ops->on_deadline(s);
}

/* A parked slot reads again when the queue has room; a reading one reads once more when its read
 * comes back empty. */
static void want_wake(struct parking_slot *s)
{
	if (!s->parked) {
		s->notified = 1;
		return;
	}
	if (h2o_linklist_is_linked(&s->pending) || s->wake_due)
		return; /* already due: one read covers every notification so far */
	if (h2o_timeout_is_linked(&s->cooldown)) {
		s->wake_due = 1;
		pixd_metrics.wakes_deferred++;
		return;
	}
	queue_wake(s);
}

static void queue_wake(struct parking_slot *s)
{
	h2o_linklist_insert(&lot.pending, &s->pending);
	lot.pending_count++;
}

/* The slot's interval is over: the wake it held back goes now (from the loop: pump may run). */
static void on_cooldown(h2o_timeout_entry_t *entry)
{
	struct parking_slot *s = H2O_STRUCT_FROM_MEMBER(struct parking_slot, cooldown, entry);

	if (!s->wake_due)
		return;
	s->wake_due = 0;
	queue_wake(s);
	pump();
}

/*
 * Starts the pending reads, oldest first, while the pool's queue has room: a burst of
 * notifications never fills the queue past what it can hold, and the reads that wait keep their
 * order. A read the pool refuses (down) goes back to the head; the pool's return pumps again.
 */
static void pump(void)
{
	while (!h2o_linklist_is_empty(&lot.pending) && db_queue_has_room()) {
		struct parking_slot *s =
		    H2O_STRUCT_FROM_MEMBER(struct parking_slot, pending, lot.pending.next);

		unpark(s);
		pixd_metrics.wakeups++;
		if (s->ops->on_wake(s) != 0) {
			s->parked = 1;
			lot.parked_count++;
			h2o_linklist_insert(lot.pending.next, &s->pending);
			lot.pending_count++;
			return;
		}
	}
}

static void on_pump(h2o_timeout_entry_t *entry)
{
	pump();
}

static void on_pool_room(void)
{
	if (!h2o_linklist_is_empty(&lot.pending) && !h2o_timeout_is_linked(&lot.pump_entry))
		h2o_timeout_link(pixd_loop, &lot.soon, &lot.pump_entry);
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

	for (h2o_linklist_t *node = bucket->next; node != bucket; node = node->next) {
		struct parking_slot *s = H2O_STRUCT_FROM_MEMBER(struct parking_slot, link, node);
		if (strcmp(s->ispb, ispb) == 0)
			want_wake(s);
	}
	pump();
}

static void mark_all(void)
{
	for (int i = 0; i < N_BUCKETS && lot.joined_count > 0; i++)
		for (h2o_linklist_t *node = lot.buckets[i].next; node != &lot.buckets[i]; node = node->next)
			want_wake(H2O_STRUCT_FROM_MEMBER(struct parking_slot, link, node));
}

void parking_wake_all(void)
{
	mark_all();
	pump();
}

/* Called from inside the pool's code: mark now, wake from the loop. */
static void on_pool_up(void)
{
	mark_all();
	on_pool_room();
}

/* Calls fn for every parked slot; fn may make that slot leave (never another one). */
static void each_parked(void (*fn)(struct parking_slot *s))
{
	for (int i = 0; i < N_BUCKETS && lot.parked_count > 0; i++) {
		h2o_linklist_t *node, *next;
		for (node = lot.buckets[i].next; node != &lot.buckets[i]; node = next) {
			struct parking_slot *s = H2O_STRUCT_FROM_MEMBER(struct parking_slot, link, node);
			next = node->next;
			if (s->parked)
				fn(s);
		}
	}
}

static void check_slot(struct parking_slot *s)
{
	s->ops->on_check(s);
}

static void on_check_tick(h2o_timeout_entry_t *entry)
{
	each_parked(check_slot);
	h2o_timeout_link(pixd_loop, &lot.check_every, &lot.check_entry);
}

static void answer_now(struct parking_slot *s)
{
	unpark(s);
	s->ops->on_deadline(s);
}

void parking_shutdown(void)
{
	h2o_timeout_unlink(&lot.check_entry);
	h2o_timeout_unlink(&lot.pump_entry);
	each_parked(answer_now);
}

int parking_joined_count(void)
{
	return lot.joined_count;
}

int parking_parked_count(void)
{
	return lot.parked_count;
}

int parking_pending_count(void)
{
	return lot.pending_count;
}

/* Length of id inside a text[] literal: quoted, with " and \ escaped. */
static size_t quoted_len(const char *id)
{
	size_t n = 2;

	for (; *id != '\0'; id++)
		n += (*id == '"' || *id == '\\') ? 2 : 1;
	return n;
}

/* Only an id the database returned to an authorized call: an id a request names is not kept alive
 * before the database has judged the request (issue 18). */
static int keeps_alive(const struct parking_slot *s)
{
	return s->authorized && s->iid[0] != '\0';
}

char *parking_stream_ids(int *count)
{
	size_t size = 3, at = 0;
	char *out;

	*count = 0;
	for (int i = 0; i < N_BUCKETS; i++)
		for (h2o_linklist_t *n = lot.buckets[i].next; n != &lot.buckets[i]; n = n->next) {
			struct parking_slot *s = H2O_STRUCT_FROM_MEMBER(struct parking_slot, link, n);
			if (keeps_alive(s)) {
				size += quoted_len(s->iid) + 1;
				(*count)++;
			}
		}
	if (*count == 0 || (out = malloc(size)) == NULL)
		return NULL;
	out[at++] = '{';
	for (int i = 0; i < N_BUCKETS; i++)
		for (h2o_linklist_t *n = lot.buckets[i].next; n != &lot.buckets[i]; n = n->next) {
			struct parking_slot *s = H2O_STRUCT_FROM_MEMBER(struct parking_slot, link, n);
			if (!keeps_alive(s))
				continue;
			if (at > 1)
				out[at++] = ',';
			out[at++] = '"';
			for (const char *c = s->iid; *c != '\0'; c++) {
				if (*c == '"' || *c == '\\')
					out[at++] = '\\';
				out[at++] = *c;
			}
			out[at++] = '"';
		}
	out[at++] = '}';
	out[at] = '\0';
	return out;
}
