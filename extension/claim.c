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
#include "utils/fmgroids.h"
#include "utils/lsyscache.h"
#include "utils/rel.h"
#include "utils/snapmgr.h"

static Oid ready_relation(Oid *index_oid);
static bool lock_and_delete(Relation heap, ItemPointer tid, Snapshot snapshot, TupleTableSlot *scratch);

int
pix_claim_ready(const char *ispb, int max, int64 *ids)
{
	Oid index_oid;
	Oid heap_oid = ready_relation(&index_oid);
	Relation heap = table_open(heap_oid, RowExclusiveLock);
	Relation index = index_open(index_oid, RowExclusiveLock);
	Snapshot snapshot = RegisterSnapshot(GetLatestSnapshot());
	TupleTableSlot *slot = table_slot_create(heap, NULL);
	TupleTableSlot *scratch = table_slot_create(heap, NULL);
	IndexScanDesc scan;
	ScanKeyData key;
	int taken = 0;

	ScanKeyInit(&key, 1, BTEqualStrategyNumber, F_TEXTEQ, CStringGetTextDatum(ispb));
	scan = index_beginscan(heap, index, snapshot, 1, 0);
	index_rescan(scan, &key, 1, NULL, 0);

	while (taken < max && index_getnext_slot(scan, ForwardScanDirection, slot)) {
		bool isnull;
		Datum message_id = slot_getattr(slot, 2, &isnull);

		if (isnull || !lock_and_delete(heap, &slot->tts_tid, snapshot, scratch))
			continue;
		ids[taken++] = DatumGetInt64(message_id);
	}

	index_endscan(scan);
	ExecDropSingleTupleTableSlot(slot);
	ExecDropSingleTupleTableSlot(scratch);
	UnregisterSnapshot(snapshot);
	index_close(index, NoLock);
	table_close(heap, NoLock);

	/* Later statements of this transaction (and replays within it) must see the rows as gone. */
	CommandCounterIncrement();
	return taken;
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
