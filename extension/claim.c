/*
 * claim.c — the hot path: take the oldest ready messages of one ISPB.
 *
 * The access path is fixed in C rather than left to the planner: an ordered scan of pix.ready's primary
 * key (ispb, message_id) from the first entry of the ISPB, exactly as SELECT ... ORDER BY message_id
 * FOR UPDATE SKIP LOCKED followed by DELETE would do when planned well. A plan that flips to another
 * path under some statistics cannot happen here.
 *
 * Concurrency: each candidate row is locked with LockWaitSkip before it is deleted. A row that another
 * transaction is claiming (locked or deleted, not yet committed) is skipped, so concurrent readers of one
 * ISPB never wait for each other and never take the same row; a row deleted by a committed claimer after
 * our snapshot is reported as TM_Deleted and skipped too. Only one transaction can ever delete a given
 * ready row, which is what keeps a message out of two pending batches (see stream.c).
 *
 * The scan uses the latest snapshot, not the statement's: a message committed a moment ago is claimable
 * now. That is only sound in READ COMMITTED, which every caller checks first.
 *
 * THE DEAD HEAD. Every claim deletes rows at the low end of the ISPB's key range, and their index
 * entries stay until vacuum removes them. A scan from the start of the range steps over all of them
 * (killed entries are cheap, but 100 000 of them are not), so under a steady drain a scan from the
 * start gets slower by the second until autovacuum passes. Each backend therefore remembers, per ISPB,
 * a hint: the message id of the first live entry its last scan met. Most scans start there
 * (message_id >= hint) and step over nothing.
 *   The hint is only a place to start, never a reason to skip a message for long: a row can appear
 * below it (a requeued batch; an INSERT that took its id before a later one but committed after it),
 * so a backend scans from the start of the range whenever its hinted scan finds fewer rows than asked
 * (the queue looks short: be thorough) and at least every PIX_FULL_SCAN_INTERVAL_MS. A requeue made
 * by this backend lowers its own hint at once. Correctness (no loss, no message in two batches) never
 * depends on the hint; only the order and latency of rare stragglers does, within that interval.
 */
#include "claim.h"

#include "access/genam.h"
#include "access/relation.h"
#include "access/stratnum.h"
#include "access/table.h"
#include "access/tableam.h"
#include "access/xact.h"
#include "catalog/namespace.h"
#include "executor/tuptable.h"
#include "utils/builtins.h"
#include "utils/hsearch.h"
#include "utils/fmgroids.h"
#include "utils/lsyscache.h"
#include "utils/rel.h"
#include "utils/snapmgr.h"
#include "utils/timestamp.h"

#define PIX_FULL_SCAN_INTERVAL_MS 200
#define PIX_HINTS_MAX 4096

/*
 * Per backend, per ISPB: where the last scan found the first live row, when we last looked at all of
 * the range, and when reads last swept the ISPB's idle streams.
 */
typedef struct claim_hint {
	char ispb[9]; /* hash key */
	int64 first_live_id;
	TimestampTz last_full_scan;
	TimestampTz last_sweep;
} claim_hint;

static HTAB *claim_hints = NULL;

static Oid ready_relation(Oid *index_oid);
static bool lock_and_delete(Relation heap, ItemPointer tid, Snapshot snapshot, TupleTableSlot *scratch);
static claim_hint *hint_for(const char *ispb);
static int scan_ready(Relation heap, Relation index, const char *ispb, int64 from_id, int max, int64 *ids,
					  int *redelivered, int64 *first_live_id);

int
pix_claim_ready(const char *ispb, int max, int64 *ids, int *redelivered)
{
	Oid index_oid;
	Oid heap_oid = ready_relation(&index_oid);
	Relation heap = table_open(heap_oid, RowExclusiveLock);
	Relation index = index_open(index_oid, RowExclusiveLock);
	claim_hint *hint = hint_for(ispb);
	TimestampTz now = GetCurrentTimestamp();
	bool full = now - hint->last_full_scan >= PIX_FULL_SCAN_INTERVAL_MS * (int64) 1000;
	int64 first_live = -1;
	int taken;

	*redelivered = 0;
	taken = scan_ready(heap, index, ispb, full ? PG_INT64_MIN : hint->first_live_id, max, ids, redelivered,
					   &first_live);
	if (!full && taken < max) {
		/* The queue looks short from the hint on: look at all of it before answering "nothing". */
		int more;

		CommandCounterIncrement(); /* our own deletions of the first scan are not candidates again */
		more = scan_ready(heap, index, ispb, PG_INT64_MIN, max - taken, ids + taken, redelivered, &first_live);

		full = true;
		taken += more;
	}
	if (full)
		hint->last_full_scan = now;
	if (first_live >= 0)
		hint->first_live_id = first_live;

	index_close(index, NoLock);
	table_close(heap, NoLock);

	/* Later statements of this transaction (and replays within it) must see the rows as gone. */
	CommandCounterIncrement();

	/* Two scans may return ids out of order (a straggler below the hint): keep the batch sorted. */
	for (int i = 1; i < taken; i++)
		for (int j = i; j > 0 && ids[j - 1] > ids[j]; j--) {
			int64 swap = ids[j];

			ids[j] = ids[j - 1];
			ids[j - 1] = swap;
		}
	return taken;
}

/*
 * Reads sweep their ISPB's idle streams at most once per interval per backend: expiry is measured in
 * seconds, and the sweep is a statement of its own. Starts always sweep (they need the true count).
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

/* A requeue by this backend: start its next scan low enough to see the batch at once. */
void
pix_claim_lower_hint(const char *ispb, int64 message_id)
{
	claim_hint *hint = hint_for(ispb);

	if (message_id < hint->first_live_id)
		hint->first_live_id = message_id;
}

/*
 * One ordered scan of the ISPB's entries from from_id on. Sets *first_live_id to the id of the first
 * row visible to the scan (taken or not) if it has not been set yet: below it, this scan met only
 * entries dead to everyone.
 */
static int
scan_ready(Relation heap, Relation index, const char *ispb, int64 from_id, int max, int64 *ids,
		   int *redelivered, int64 *first_live_id)
{
	Snapshot snapshot = RegisterSnapshot(GetLatestSnapshot());
	TupleTableSlot *slot = table_slot_create(heap, NULL);
	TupleTableSlot *scratch = table_slot_create(heap, NULL);
	IndexScanDesc scan;
	ScanKeyData keys[2];
	int taken = 0;

	ScanKeyInit(&keys[0], 1, BTEqualStrategyNumber, F_TEXTEQ, CStringGetTextDatum(ispb));
	ScanKeyInit(&keys[1], 2, BTGreaterEqualStrategyNumber, F_INT8GE, Int64GetDatum(from_id));
	scan = index_beginscan(heap, index, snapshot, 2, 0);
	index_rescan(scan, keys, 2, NULL, 0);

	while (taken < max && index_getnext_slot(scan, ForwardScanDirection, slot)) {
		bool isnull;
		Datum message_id = slot_getattr(slot, 2, &isnull);

		if (isnull)
			continue;
		if (*first_live_id < 0 || DatumGetInt64(message_id) < *first_live_id)
			*first_live_id = DatumGetInt64(message_id);
		if (lock_and_delete(heap, &slot->tts_tid, snapshot, scratch)) {
			ids[taken++] = DatumGetInt64(message_id);
			if (DatumGetBool(slot_getattr(slot, 3, &isnull)) && !isnull)
				(*redelivered)++;
		}
	}

	index_endscan(scan);
	ExecDropSingleTupleTableSlot(slot);
	ExecDropSingleTupleTableSlot(scratch);
	UnregisterSnapshot(snapshot);
	return taken;
}

/* The backend's hint for an ISPB; the table is dropped and rebuilt if a backend serves very many. */
static claim_hint *
hint_for(const char *ispb)
{
	claim_hint *hint;
	bool found;

	if (claim_hints != NULL && hash_get_num_entries(claim_hints) >= PIX_HINTS_MAX) {
		hash_destroy(claim_hints);
		claim_hints = NULL;
	}
	if (claim_hints == NULL) {
		HASHCTL ctl = {.keysize = 9, .entrysize = sizeof(claim_hint)};

		claim_hints = hash_create("pix claim hints", 256, &ctl, HASH_ELEM | HASH_STRINGS);
	}
	hint = hash_search(claim_hints, ispb, HASH_ENTER, &found);
	if (!found) {
		hint->first_live_id = PG_INT64_MIN;
		hint->last_full_scan = 0;
		hint->last_sweep = 0;
	}
	return hint;
}

/*
 * Looked up on every call: a cached OID would go stale if the extension were dropped and created again
 * in the same session, and two syscache lookups cost next to nothing.
 */
static Oid
ready_relation(Oid *index_oid)
{
	Oid schema = get_namespace_oid("pix", false);
	Oid heap_oid = get_relname_relid("ready", schema);

	*index_oid = get_relname_relid("ready_pkey", schema);
	if (!OidIsValid(heap_oid) || !OidIsValid(*index_oid))
		ereport(ERROR, (errcode(ERRCODE_UNDEFINED_TABLE),
						errmsg("pix.ready or its primary key is missing"),
						errhint("Reinstall the extension: DROP EXTENSION pix; CREATE EXTENSION pix;")));
	return heap_oid;
}

/*
 * SKIP LOCKED, then DELETE, as the executor does for those clauses. Returns false when the row is not
 * ours to take: locked or being deleted by another transaction, or already deleted by a committed one.
 */
static bool
lock_and_delete(Relation heap, ItemPointer tid, Snapshot snapshot, TupleTableSlot *scratch)
{
	TM_FailureData failure;
	TM_Result result;
	ItemPointerData target = *tid;

	result = table_tuple_lock(heap, &target, snapshot, scratch, GetCurrentCommandId(true),
							  LockTupleExclusive, LockWaitSkip, 0, &failure);
	if (result != TM_Ok)
		return false;
	simple_table_tuple_delete(heap, &target, snapshot);
	return true;
}
