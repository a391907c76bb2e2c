/*
 * claim.c — the hot path: take the oldest ready messages of one ISPB.
 *
 * The access path is fixed in C rather than left to the planner: ordered scans
 * of pix.ready's primary key (ispb, fresh, message_id), exactly as SELECT ...
 * ORDER BY FOR UPDATE SKIP LOCKED followed by DELETE would do when planned
 * well. A plan that flips to another path under some statistics cannot happen
 * here.
 *
 * TWO RANGES PER ISPB. A requeued message (expiry, a stop on the previous id,
 * stop all) is put back with fresh = false, a newly enqueued one has fresh =
 * true, and false sorts first. Every claim first scans the whole requeued
 * range, then the fresh range: a redelivered message always goes before newer
 * ones. The requeued range is small (redeliveries are rare), so scanning all
 * of it costs nothing.
 *
 * CONCURRENCY. Each candidate row is deleted directly, without waiting and
 * without a tuple lock first (take_row). A row that another transaction is
 * claiming (locked or deleted, not yet committed) is skipped, so concurrent
 * readers of one ISPB never wait for each other and never take the same row;
 * a row deleted by a committed claimer after our snapshot is reported as
 * TM_Deleted and skipped too. Only one
 * transaction can ever delete a given ready row, which is what keeps a message
 * out of two pending batches (see stream.c). The scans use the latest
 * snapshot, not the statement's: a message committed a moment ago is claimable
 * now. That is only sound in READ COMMITTED, which every caller checks first.
 *
 * THE DEAD HEAD. Every claim deletes rows at the low end of the fresh range,
 * and their index entries stay until vacuum removes them. Entries dead to
 * everyone are marked killed by the first scan that meets them and skipped
 * cheaply afterwards, but a scan from the start still steps over all of them:
 * under a steady drain that gets slower by the second until autovacuum passes.
 * So each backend keeps, per ISPB, a hint: the message id of the first index
 * entry of the fresh range that its last scan did not find killed — live,
 * being inserted, being claimed, or dead but not yet known to be. The hint
 * never passes an entry that might still be claimable, so most scans start
 * there (message_id >= hint) and step over nothing. One case can still land
 * below a hint: an INSERT takes its ids when its rows are formed but adds
 * their ready rows at the end of its statement, so for the length of one
 * statement a lower id can appear behind a higher one that was claimed (a
 * straggler, specs/straggler.spec). So a claim that finds nothing at all from
 * the hint scans the part of the range below it before answering empty: a read
 * never answers empty while a message is ready. And a backend scans the fresh
 * range from its start at least every PIX_FULL_SCAN_INTERVAL_MS, so that a
 * straggler is not overtaken for longer than that by newer messages while
 * reads keep finding some. Correctness (no loss, no message in two batches)
 * never depends on the hint.
 */
#include "claim.h"

#include "access/genam.h"
#include "access/itup.h"
#include "access/relation.h"
#include "access/relscan.h"
#include "access/stratnum.h"
#include "access/table.h"
#include "access/tableam.h"
#include "access/xact.h"
#include "catalog/namespace.h"
#include "executor/tuptable.h"
#include "miscadmin.h"
#include "utils/builtins.h"
#include "utils/fmgroids.h"
#include "utils/hsearch.h"
#include "utils/lsyscache.h"
#include "utils/rel.h"
#include "utils/snapmgr.h"
#include "utils/timestamp.h"

#include "validate.h"

#define PIX_FULL_SCAN_INTERVAL_MS 200
#define PIX_HINTS_MAX 4096

/* Attributes of pix.ready and of its primary key (same order). */
#define READY_ISPB 1
#define READY_FRESH 2
#define READY_MESSAGE_ID 3

/*
 * Per backend, per ISPB: where the fresh range's first entry not known dead
 * was, when we last scanned all of the range, and when reads last swept the
 * ISPB's idle streams.
 */
typedef struct claim_hint
{
	char		ispb[PIX_ISPB_LEN + 1]; /* hash key */
	int64		first_entry_id;
	TimestampTz last_full_scan;
	TimestampTz last_sweep;
	bool		last_full;		/* this backend's last claim filled its batch */
} claim_hint;

/* One claim: the relations, the snapshot and the batch being filled. */
typedef struct claim
{
	Relation	heap;
	Relation	index;
	Snapshot	snapshot;
	TupleTableSlot *slot;
	TupleTableSlot *scratch;
	const char *ispb;
	int			max;
	int			taken;
	int64	   *ids;
	bool		peek;			/* only look: take nothing, stop at the first
								 * claimable row */
} claim;

static HTAB *claim_hints = NULL;

static Oid	ready_relation(Oid *index_oid);
static claim_hint *hint_for(const char *ispb);
static int	run_claim(claim *c, int *redelivered);
static int	scan_range(claim *c, bool fresh, int64 from_id, int64 below_id,
					   int64 *first_entry_id);
static bool take_row(claim *c, ItemPointer tid);
static void sort_ids(int64 *ids, int count);

int
pix_claim_ready(const char *ispb, int max, int64 *ids, int *redelivered)
{
	claim		c = {.ispb = ispb,.max = max,.ids = ids};
	int			taken = run_claim(&c, redelivered);

	/*
	 * Later statements of this transaction (and replays within it) must see
	 * the rows as gone.
	 */
	CommandCounterIncrement();
	sort_ids(ids, taken);
	return taken;
}

/*
 * Whether a claim for ispb would find something now, taking nothing and
 * writing nothing: an empty read that finds nothing here need not lock (and so
 * write) its stream at all. A row another claimer holds counts as something
 * (the caller then claims for real and finds out).
 */
bool
pix_claim_peek(const char *ispb)
{
	int64		id;
	int			redelivered;
	claim		c = {.ispb = ispb,.max = 1,.ids = &id,.peek = true};

	return run_claim(&c, &redelivered) > 0;
}

/*
 * The requeued range first, then the fresh range from the hint (or from its
 * start when a full scan is due); when that finds nothing at all, the part of
 * the fresh range below the hint too, so a straggler that committed behind the
 * hint is found by the very next read that would otherwise answer empty.
 */
static int
run_claim(claim *c, int *redelivered)
{
	Oid			index_oid;
	Oid			heap_oid = ready_relation(&index_oid);
	claim_hint *hint = hint_for(c->ispb);
	TimestampTz now = GetCurrentTimestamp();
	bool		full =
	now - hint->last_full_scan >= PIX_FULL_SCAN_INTERVAL_MS * (int64) 1000;
	int64		from = full ? PG_INT64_MIN : hint->first_entry_id;
	int64		first_entry = -1;
	int64	   *first_entry_p = c->peek ? NULL : &first_entry;

	c->heap = table_open(heap_oid, RowExclusiveLock);
	c->index = index_open(index_oid, RowExclusiveLock);
	c->snapshot = RegisterSnapshot(GetLatestSnapshot());
	c->slot = table_slot_create(c->heap, NULL);
	c->scratch = table_slot_create(c->heap, NULL);

	*redelivered = scan_range(c, false, PG_INT64_MIN, PG_INT64_MAX, NULL);
	if (c->taken < c->max)
		scan_range(c, true, from, PG_INT64_MAX, first_entry_p);
	if (c->taken == 0 && from != PG_INT64_MIN)
	{
		scan_range(c, true, PG_INT64_MIN, from, first_entry_p);
		full = true;
	}
	if (!c->peek)
	{
		hint->last_full = c->taken > 0 && c->taken == c->max;
		if (full)
			hint->last_full_scan = now;
		if (first_entry >= 0)
			hint->first_entry_id = first_entry;
	}

	ExecDropSingleTupleTableSlot(c->slot);
	ExecDropSingleTupleTableSlot(c->scratch);
	UnregisterSnapshot(c->snapshot);
	index_close(c->index, NoLock);
	table_close(c->heap, NoLock);
	return c->taken;
}

/*
 * Whether this backend's last claim of ispb filled its batch (so the queue
 * most likely holds more): a hint for the caller only (see stream.c,
 * pix_stream_next), never a promise that anything is ready now. False for an
 * ISPB this backend never claimed from (or whose hint it evicted), and after a
 * claim that took less than it asked for: the queue was empty a moment ago.
 */
bool
pix_claim_last_full(const char *ispb)
{
	return hint_for(ispb)->last_full;
}

/*
 * Reads sweep their ISPB's idle streams at most once per interval per backend:
 * expiry is measured in seconds, and the sweep is a statement of its own.
 * Starts always sweep (they need the true count).
 */
bool
pix_claim_sweep_due(const char *ispb, TimestampTz now, int64 interval_ms)
{
	claim_hint *hint = hint_for(ispb);

	if (now - hint->last_sweep < interval_ms * 1000)
		return false;
	hint->last_sweep = now;
	return true;
}

/*
 * One ordered scan of the ISPB's requeued (fresh = false) or fresh range,
 * message ids from from_id up to below_id (excluded), taking rows until the
 * batch is full. When first_entry_id is given, lowers it to the message id of
 * the first index entry the scan met that is not known dead (killed entries
 * never reach us). Returns how many rows this scan took (or, peeking, found).
 */
static int
scan_range(claim *c, bool fresh, int64 from_id, int64 below_id,
		   int64 *first_entry_id)
{
	IndexScanDesc scan;
	ScanKeyData keys[4];
	int			taken_before = c->taken;

	ScanKeyInit(&keys[0], READY_ISPB, BTEqualStrategyNumber, F_TEXTEQ,
				CStringGetTextDatum(c->ispb));
	ScanKeyInit(&keys[1], READY_FRESH, BTEqualStrategyNumber, F_BOOLEQ,
				BoolGetDatum(fresh));
	ScanKeyInit(&keys[2], READY_MESSAGE_ID, BTGreaterEqualStrategyNumber,
				F_INT8GE, Int64GetDatum(from_id));
	ScanKeyInit(&keys[3], READY_MESSAGE_ID, BTLessStrategyNumber, F_INT8LT,
				Int64GetDatum(below_id));
	scan = index_beginscan(c->heap, c->index, c->snapshot, 4, 0);
	scan->xs_want_itup =
		first_entry_id !=
		NULL;					/* to read message_id off entries we cannot
								 * see */
	index_rescan(scan, keys, 4, NULL, 0);

	while (c->taken < c->max)
	{
		bool		isnull;
		Datum		message_id;

		CHECK_FOR_INTERRUPTS();

		/*
		 * index_getnext_slot, unrolled to look at each index entry before the
		 * heap says anything.
		 */
		if (!scan->xs_heap_continue)
		{
			if (index_getnext_tid(scan, ForwardScanDirection) == NULL)
				break;
			if (first_entry_id != NULL)
			{
				int64		entry_id = DatumGetInt64(
													 index_getattr(scan->xs_itup, READY_MESSAGE_ID,
																   scan->xs_itupdesc, &isnull));

				if (!isnull &&
					(*first_entry_id < 0 || entry_id < *first_entry_id))
					*first_entry_id = entry_id;
			}
		}
		if (!index_fetch_heap(scan, c->slot))
			continue;
		if (c->peek)
		{
			c->taken++;
			break;
		}
		message_id = slot_getattr(c->slot, READY_MESSAGE_ID, &isnull);
		if (!isnull && take_row(c, &c->slot->tts_tid))
			c->ids[c->taken++] = DatumGetInt64(message_id);
	}
	index_endscan(scan);
	return c->taken - taken_before;
}

/*
 * DELETE ... SKIP LOCKED, in one step: the row is deleted directly, never
 * locked first (a tuple lock is a WAL record and a page write of its own, and
 * the delete that follows takes the same row again). Never waits and never
 * fails on a row that is not ours to take: one another transaction holds
 * (locked, or deleted and not yet committed: TM_BeingModified), one a
 * committed transaction deleted after our snapshot (TM_Deleted, or
 * TM_Updated, which pix.ready never sees: its rows are never updated), or one
 * this very claim already took (TM_SelfModified). Each of those returns false,
 * and the scan moves on. Only one transaction can ever delete a given row
 * version: heap_delete decides that under the buffer's exclusive lock.
 *
 * The row was fetched through c->snapshot, which took the current command id
 * when it was made, and this delete uses that same command id (marked used,
 * so that the CommandCounterIncrement after the claim makes the deletes
 * visible): a row visible to the snapshot is never TM_Invisible here
 * (heap_delete's one error).
 */
static bool
take_row(claim *c, ItemPointer tid)
{
	TM_FailureData failure;
	ItemPointerData target = *tid;

	return table_tuple_delete(c->heap, &target, GetCurrentCommandId(true),
							  c->snapshot, InvalidSnapshot,
							  false /* never wait */ , &failure,
							  false /* not a partition move */ ) == TM_Ok;
}

/*
 * Oldest first within the batch: the requeued and fresh ranges, and a late
 * straggler, interleave.
 */
static void
sort_ids(int64 *ids, int count)
{
	for (int i = 1; i < count; i++)
		for (int j = i; j > 0 && ids[j - 1] > ids[j]; j--)
		{
			int64		swap = ids[j];

			ids[j] = ids[j - 1];
			ids[j - 1] = swap;
		}
}

/*
 * The backend's hint for an ISPB. A backend that serves very many ISPBs keeps
 * PIX_HINTS_MAX of them: a new one evicts one entry (the first the table
 * yields), which costs that ISPB one full scan.
 */
static claim_hint *
hint_for(const char *ispb)
{
	claim_hint *hint;
	bool		found;

	if (claim_hints != NULL &&
		hash_get_num_entries(claim_hints) >= PIX_HINTS_MAX &&
		hash_search(claim_hints, ispb, HASH_FIND, NULL) == NULL)
	{
		HASH_SEQ_STATUS status;
		claim_hint *victim;
		char		key[PIX_ISPB_LEN + 1];

		hash_seq_init(&status, claim_hints);
		victim = hash_seq_search(&status);
		hash_seq_term(&status);
		memcpy(key, victim->ispb, sizeof(key));
		hash_search(claim_hints, key, HASH_REMOVE, NULL);
	}
	if (claim_hints == NULL)
	{
		HASHCTL		ctl = {.keysize = PIX_ISPB_LEN + 1,
		.entrysize = sizeof(claim_hint)};

		claim_hints = hash_create("pix claim hints", 256, &ctl,
								  HASH_ELEM | HASH_STRINGS);
	}
	hint = hash_search(claim_hints, ispb, HASH_ENTER, &found);
	if (!found)
	{
		hint->first_entry_id = PG_INT64_MIN;
		hint->last_full_scan = 0;
		hint->last_sweep = 0;
		hint->last_full = false;
	}
	return hint;
}

/*
 * Looked up on every call: a cached OID would go stale if the extension were
 * dropped and created again in the same session, and two syscache lookups cost
 * next to nothing.
 */
static Oid
ready_relation(Oid *index_oid)
{
	Oid			schema = get_namespace_oid("pix", false);
	Oid			heap_oid = get_relname_relid("ready", schema);

	*index_oid = get_relname_relid("ready_pkey", schema);
	if (!OidIsValid(heap_oid) || !OidIsValid(*index_oid))
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_TABLE),
				 errmsg("pix.ready or its primary key is missing"),
				 errhint("Reinstall the extension: DROP EXTENSION pix; CREATE EXTENSION pix;")));
	return heap_oid;
}
