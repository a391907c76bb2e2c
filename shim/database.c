/*
 * database.c — the query pool: --pool connections, prepared statements, a bounded FIFO.
 *
 * A connection goes DOWN -> CONNECTING -> PREPARING (one PQsendPrepare per statement, in order)
 * -> IDLE <-> BUSY, and back to DOWN on any error, from where a timer reconnects it with a growing
 * backoff. Invariants:
 *   - pool.idle lists exactly the IDLE connections; a query waits in pool.queue only while no
 *     connection is IDLE, so dispatch() is the one place where the two meet.
 *   - A BUSY connection has one query sent; conn->query points to its owner until its result is
 *     delivered or the owner cancels. Results for a cancelled query are read and dropped.
 *   - A result is held (conn->held) until libpq's result stream ends (PQgetResult gives NULL:
 *     ReadyForQuery), and only then delivered. PostgreSQL commits a call of the extended protocol
 *     at its Sync, after the rows and CommandComplete were written: they normally leave with
 *     ReadyForQuery, but a warning flushes them early, and a COMMIT whose wait for the synchronous
 *     standby is cut short (a fast shutdown terminates the backend; a cancel) warns just so. The
 *     transaction is then committed on this server only, and pg_auto_failover may promote a
 *     standby that never got it: a result delivered on arrival was a 201 for a lost payment.
 *     So: a connection that breaks before ReadyForQuery, or whose server warned that the wait was
 *     cut short, fails the query (DB_FAIL_LOST: 503, outcome unknown; a re-send of the same ids is
 *     idempotent) whatever rows came before.
 *   - query_timer is linked while PREPARING or BUSY: a connection stuck longer than
 *     --query-timeout-ms is closed (the only way to abandon a query in libpq without blocking).
 *   - pool.down is set when a failure leaves no connection PREPARING, IDLE or BUSY, and
 *     cleared when one becomes IDLE. While down every submission is refused at once (503):
 *     PostgreSQL being away costs a client a round trip, not a wait. The queued queries are
 *     failed from a 0 ms timer because db_submit promises never to call a callback itself.
 *   - A connection reset for being stuck reconnects at once and does not count as a failure:
 *     PostgreSQL answered until then, so the pool does not go down for one slow query.
 *   - queue_len <= --max-queue; each queued query has a wait timer of --query-timeout-ms.
 *   - A call whose credential the database has not accepted recently (credcache.h: unknown, or
 *     invented) is queued only while queue_len < --max-queue / UNVERIFIED_QUEUE_SHARE: the rest
 *     of the queue is kept for known-good callers, so a flood of bogus tokens (or of first calls
 *     after a restart, which come back after Retry-After) cannot make their calls 503. Every
 *     result says what the database thought of the credential: rows or PX013 (known, maybe
 *     forbidden) make it known-good, PX012 forgets it.
 *   - A connection whose server refused a write as read-only (SQLSTATE 25006: a standby, or a
 *     primary being demoted) is closed once its result is delivered, and reconnects: with a
 *     multi-host conninfo and target_session_attrs=read-write, libpq then finds the new primary.
 *
 * Failover (--durable-reads). With synchronous replication a COMMIT answers only once the standby
 * has the transaction, but other sessions see it on the primary before that. A call that writes
 * nothing (a replay of the previous id, an empty read) would then answer from a state a failover
 * can take back: a Pull-Next the new primary never heard of (404), a batch it will give to another
 * stream. With --durable-reads the stream calls take a transaction id (pg_current_xact_id()), so
 * their COMMIT also waits for the standby, which then has everything the call saw.
 */
#include <stdlib.h>
#include <string.h>
#include "credcache.h"
#include "database.h"
#include "pgconn.h"

/* Unknown credentials may fill a quarter of --max-queue. */
#define UNVERIFIED_QUEUE_SHARE 4
#define OID_TEXT 25
#define OID_INT4 23
#define OID_TEXT_ARRAY 1009

enum conn_state { CONN_DOWN, CONN_CONNECTING, CONN_PREPARING, CONN_IDLE, CONN_BUSY };

struct db_conn {
	struct pgconn pc;
	int index;
	enum conn_state state;
	int preparing; /* while PREPARING: -1 session settings, then each statement in turn */
	db_query_t *query;
	h2o_linklist_t idle_link;
	h2o_timeout_entry_t query_timer;
	h2o_timeout_entry_t retry_timer;
	int backoff;        /* index into retry_ms */
	int failure_logged; /* quiet while failing over and over */
	int resetting;      /* closed by us (stuck), not by a failure: reconnect at once */
	int read_only;      /* its server refused a write (25006): close it after the result */
	PGresult *held;     /* the query's result, until the result stream ends (see the header) */
};

struct statement {
	const char *name;
	const char *sql;
	int nparams;
	Oid types[4];
};

static void conn_connect(struct db_conn *c);
static void on_conn_open(struct pgconn *pc);
static void on_conn_readable(struct pgconn *pc);
static void on_conn_failed(struct pgconn *pc, const char *why);
static void on_query_timeout(h2o_timeout_entry_t *entry);
static void on_retry_timer(h2o_timeout_entry_t *entry);
static void on_wait_timeout(h2o_timeout_entry_t *entry);
static void on_fail_queue(h2o_timeout_entry_t *entry);
static void read_results(struct db_conn *c);
static void handle_result(struct db_conn *c, PGresult *res);
static void result_stream_ended(struct db_conn *c);
static int send_prepare(struct db_conn *c);
static int send_query(struct db_conn *c, db_query_t *q);
static void become_idle(struct db_conn *c);
static void dispatch(void);
static void schedule_retry(struct db_conn *c);
static void update_down(void);
static db_query_t *queue_pop(void);
static void queue_left(void);
static const char *query_credential(const db_query_t *q);
static int unverified_over_share(const db_query_t *q);
static void note_credential(const db_query_t *q, const PGresult *res);

_Static_assert(DB_NSTMT <= PIXD_MAX_STATEMENTS, "counters.h: PIXD_MAX_STATEMENTS too small");
static const struct statement *statement(int stmt);
static int is_read_only_refusal(const PGresult *res);

static const struct statement statements[DB_NSTMT] = {
    [DB_STREAM_START] = {"pix_stream_start",
                         "SELECT interation_id, pull_next, message_count, body FROM "
                         "pix_stream_start($1, $2, $3)",
                         3,
                         {OID_TEXT, OID_INT4, OID_TEXT}},
    [DB_STREAM_NEXT] = {"pix_stream_next",
                        "SELECT interation_id, pull_next, message_count, body FROM "
                        "pix_stream_next($1, $2, $3, $4)",
                        4,
                        {OID_TEXT, OID_TEXT, OID_INT4, OID_TEXT}},
    [DB_STREAM_STOP] = {"pix_stream_stop",
                        "SELECT pix_stream_stop($1, $2, $3)",
                        3,
                        {OID_TEXT, OID_TEXT, OID_TEXT}},
    [DB_GENERATE] = {"pix_generate_messages",
                     "SELECT pix_generate_messages($1, $2, $3)",
                     3,
                     {OID_TEXT, OID_INT4, OID_TEXT}},
    [DB_SEND] = {"pix_messages_send",
                 "SELECT accepted, duplicates, body FROM pix_messages_send($1, $2, $3)",
                 3,
                 {OID_TEXT, OID_TEXT, OID_TEXT}},
    [DB_STOP_ALL] = {"pix_streams_stop_all",
                     "SELECT pix_streams_stop_all($1, $2)",
                     2,
                     {OID_TEXT, OID_TEXT}},
    [DB_HEALTH] = {"pix_health", "SELECT 1", 0, {0}},
    [DB_EXPIRE] = {"pix_expire_streams", "SELECT pix_expire_streams()", 0, {0}},
    [DB_PURGE] = {"pix_purge_history", "SELECT pix_purge_history()", 0, {0}},
    [DB_METRICS] = {"pix_metrics", "SELECT metric, ispb, value FROM pix_metrics()", 0, {0}},
    [DB_KEEPALIVE] = {"pix_streams_keepalive",
                      "SELECT pix_streams_keepalive($1), (SELECT setting FROM pg_settings WHERE "
                      "name = 'pix.stream_idle_timeout')",
                      1,
                      {OID_TEXT_ARRAY}},
    /* The generator checks its credential is an admin's before its count: with 0 messages an
     * admin's call ends in PX002 and writes nothing; anyone else's in PX012 or PX013. */
    [DB_ADMIN_CHECK] = {"pix_admin_check",
                        "SELECT pix_generate_messages('00000000', 0, $1)",
                        1,
                        {OID_TEXT}},
};

/* The stream calls under --durable-reads (see the header): same names, parameters and results. */
static const struct statement durable_statements[DB_NSTMT] = {
    [DB_STREAM_START] = {"pix_stream_start",
                         "SELECT interation_id, pull_next, message_count, body FROM "
                         "pix_stream_start($1, $2, $3) WHERE pg_current_xact_id() IS NOT NULL",
                         3,
                         {OID_TEXT, OID_INT4, OID_TEXT}},
    [DB_STREAM_NEXT] = {"pix_stream_next",
                        "SELECT interation_id, pull_next, message_count, body FROM "
                        "pix_stream_next($1, $2, $3, $4) WHERE pg_current_xact_id() IS NOT NULL",
                        4,
                        {OID_TEXT, OID_TEXT, OID_INT4, OID_TEXT}},
    [DB_STREAM_STOP] = {"pix_stream_stop",
                        "SELECT pix_stream_stop($1, $2, $3) WHERE pg_current_xact_id() IS NOT NULL",
                        3,
                        {OID_TEXT, OID_TEXT, OID_TEXT}},
};

/* Reconnect delays; the last one repeats while PostgreSQL stays away. */
static const int retry_ms[] = {50, 200, 500, 1000, 2000};
#define N_RETRY (int)(sizeof(retry_ms) / sizeof(retry_ms[0]))

static struct {
	struct db_conn *conns;
	int size;
	h2o_linklist_t idle;
	h2o_linklist_t queue;
	int queue_len;
	int down;
	int stopping;
	h2o_timeout_t query_timeout;
	h2o_timeout_t wait_timeout;
	h2o_timeout_t hurry_timeout; /* DB_HURRY_MS */
	void (*on_room)(void);
	void (*on_up)(void);
	h2o_timeout_t retry_timeouts[N_RETRY];
	h2o_timeout_t deferred; /* 0 ms */
	h2o_timeout_entry_t fail_queue_entry;
} pool;

void db_init(void)
{
	pool.size = pixd_config.pool_size;
	pool.conns = calloc(pool.size, sizeof(*pool.conns));
	if (pool.conns == NULL)
		h2o_fatal("out of memory");
	h2o_linklist_init_anchor(&pool.idle);
	h2o_linklist_init_anchor(&pool.queue);
	h2o_timeout_init(pixd_loop, &pool.query_timeout, pixd_config.query_timeout_ms);
	h2o_timeout_init(pixd_loop, &pool.wait_timeout, pixd_config.query_timeout_ms);
	h2o_timeout_init(pixd_loop, &pool.hurry_timeout, DB_HURRY_MS);
	for (int i = 0; i < N_RETRY; i++)
		h2o_timeout_init(pixd_loop, &pool.retry_timeouts[i], retry_ms[i]);
	h2o_timeout_init(pixd_loop, &pool.deferred, 0);
	pool.fail_queue_entry.cb = on_fail_queue;
	for (int i = 0; i < pool.size; i++) {
		struct db_conn *c = &pool.conns[i];
		c->index = i;
		c->pc.data = c;
		c->pc.on_open = on_conn_open;
		c->pc.on_readable = on_conn_readable;
		c->pc.on_failed = on_conn_failed;
		c->query_timer.cb = on_query_timeout;
		c->retry_timer.cb = on_retry_timer;
		conn_connect(c);
	}
}

static void conn_connect(struct db_conn *c)
{
	c->state = CONN_CONNECTING;
	if (pgconn_start(&c->pc, pixd_config.db_conninfo) != 0)
		on_conn_failed(&c->pc, c->pc.error);
}

static void on_conn_open(struct pgconn *pc)
{
	struct db_conn *c = pc->data;

	c->state = CONN_PREPARING;
	c->preparing = -1;
	h2o_timeout_link(pixd_loop, &pool.query_timeout, &c->query_timer);
	if (send_prepare(c) != 0)
		pgconn_fail(&c->pc, PQerrorMessage(c->pc.pg));
}

/*
 * The session settings come first. statement_timeout, a little under --query-timeout-ms, makes
 * PostgreSQL itself abandon (roll back) a slow call, so a 503 for a timeout means "nothing
 * happened"; our own timer then only catches a connection that stopped answering altogether, and
 * client_connection_check_interval lets the backend of such a reset connection notice and stop.
 */
static int send_prepare(struct db_conn *c)
{
	const struct statement *s;

	if (c->preparing < 0) {
		char timeout_ms[16];
		const char *params[1] = {timeout_ms};

		snprintf(timeout_ms, sizeof(timeout_ms), "%d",
		         pixd_config.query_timeout_ms - pixd_config.query_timeout_ms / 10);
		if (!PQsendQueryParams(c->pc.pg,
		                       "SELECT set_config('statement_timeout', $1, false),"
		                       " set_config('client_connection_check_interval', '1000', false)",
		                       1, NULL, params, NULL, NULL, 0))
			return -1;
		return pgconn_flush(&c->pc);
	}
	s = statement(c->preparing);
	if (!PQsendPrepare(c->pc.pg, s->name, s->sql, s->nparams, s->types))
		return -1;
	return pgconn_flush(&c->pc);
}

static const struct statement *statement(int stmt)
{
	if (pixd_config.durable_reads && durable_statements[stmt].sql != NULL)
		return &durable_statements[stmt];
	return &statements[stmt];
}

static int is_read_only_refusal(const PGresult *res)
{
	const char *state = PQresultErrorField(res, PG_DIAG_SQLSTATE);

	return state != NULL && strcmp(state, "25006") == 0;
}

static void on_conn_readable(struct pgconn *pc)
{
	struct db_conn *c = pc->data;
	PGnotify *n;

	if (pgconn_consume(pc) != 0) {
		pgconn_fail(pc, PQerrorMessage(pc->pg));
		return;
	}
	while ((n = PQnotifies(pc->pg)) != NULL)
		PQfreemem(n);
	read_results(c);
}

/* Takes every complete result libpq has; stops when it needs more input or the connection ended. */
static void read_results(struct db_conn *c)
{
	while (c->state == CONN_PREPARING || c->state == CONN_BUSY) {
		PGresult *res;

		if (PQisBusy(c->pc.pg))
			return;
		res = PQgetResult(c->pc.pg);
		if (res == NULL) {
			result_stream_ended(c);
			continue;
		}
		handle_result(c, res);
	}
}

/* Takes res (clears it or holds it). */
static void handle_result(struct db_conn *c, PGresult *res)
{
	if (c->state == CONN_PREPARING) {
		if (PQresultStatus(res) != PGRES_COMMAND_OK && PQresultStatus(res) != PGRES_TUPLES_OK) {
			char why[300];
			snprintf(why, sizeof(why), "cannot prepare %s: %s",
			         c->preparing < 0 ? "the session" : statements[c->preparing].name,
			         PQresultErrorMessage(res));
			PQclear(res);
			pgconn_fail(&c->pc, why);
			return;
		}
		PQclear(res);
		return;
	}
	if (PQresultStatus(res) == PGRES_FATAL_ERROR) {
		pixd_metrics.db_errors++;
		c->read_only |= is_read_only_refusal(res);
	}
	/* The first result is held; an error after it (a COMMIT that failed) replaces it. */
	if (c->query == NULL || (c->held != NULL && PQresultStatus(res) != PGRES_FATAL_ERROR)) {
		PQclear(res); /* cancelled, or a second result of the same query */
		return;
	}
	PQclear(c->held);
	c->held = res;
}

/* Drops the held result of a query that will not be delivered. */
static void drop_held(struct db_conn *c)
{
	PQclear(c->held);
	c->held = NULL;
}

/* PQgetResult returned NULL: the statement is complete and the connection free for the next. */
static void result_stream_ended(struct db_conn *c)
{
	db_query_t *q;
	PGresult *res;

	if (c->state == CONN_PREPARING) {
		if (++c->preparing < DB_NPREPARED) {
			if (send_prepare(c) != 0)
				pgconn_fail(&c->pc, PQerrorMessage(c->pc.pg));
			return;
		}
		h2o_timeout_unlink(&c->query_timer);
		if (c->failure_logged || pool.down)
			pixd_log("database: connection %d ready", c->index);
		c->failure_logged = 0;
		c->backoff = 0;
		become_idle(c);
		if (pool.down) {
			pool.down = 0;
			if (pool.on_up != NULL)
				pool.on_up();
		}
		return;
	}
	h2o_timeout_unlink(&c->query_timer);
	q = c->query;
	res = c->held;
	c->query = NULL;
	c->held = NULL;
	if (q != NULL) {
		q->_conn = NULL;
		if (res == NULL || c->pc.commit_not_replicated) {
			/* No result (cannot happen), or committed here only: the outcome is unknown. */
			if (c->pc.commit_not_replicated)
				pixd_log("database: connection %d: a COMMIT stopped waiting for the standby; "
				         "answering as if the connection was lost",
				         c->index);
			q->cb(q, NULL, DB_FAIL_LOST);
		} else {
			note_credential(q, res);
			q->cb(q, res, DB_FAIL_NONE);
		}
	}
	PQclear(res);
	if (c->read_only) {
		c->read_only = 0;
		pgconn_fail(&c->pc, "the server is read-only (a standby?); looking for the primary");
		return;
	}
	become_idle(c);
}

static void become_idle(struct db_conn *c)
{
	c->state = CONN_IDLE;
	h2o_linklist_insert(&pool.idle, &c->idle_link);
	dispatch();
}

/* Pairs waiting queries with idle connections, oldest query first. */
static void dispatch(void)
{
	while (!h2o_linklist_is_empty(&pool.idle) && !h2o_linklist_is_empty(&pool.queue)) {
		struct db_conn *c = H2O_STRUCT_FROM_MEMBER(struct db_conn, idle_link, pool.idle.next);
		db_query_t *q = queue_pop();

		if (send_query(c, q) != 0) {
			/* Never sent: it keeps its place at the head; the connection is retried. */
			h2o_linklist_insert(pool.queue.next, &q->_queued);
			pool.queue_len++;
			h2o_timeout_link(pixd_loop, &pool.wait_timeout, &q->_wait_timer);
			pgconn_fail(&c->pc, PQerrorMessage(c->pc.pg));
		}
	}
}

static db_query_t *queue_pop(void)
{
	db_query_t *q = H2O_STRUCT_FROM_MEMBER(db_query_t, _queued, pool.queue.next);

	h2o_linklist_unlink(&q->_queued);
	h2o_timeout_unlink(&q->_wait_timer);
	pool.queue_len--;
	queue_left();
	return q;
}

/* A query left the queue: whoever waits for room may go. */
static void queue_left(void)
{
	if (pool.on_room != NULL)
		pool.on_room();
}

/* Sends q on the idle connection c; -1 (nothing attached) if libpq refuses. */
static int send_query(struct db_conn *c, db_query_t *q)
{
	const struct statement *s = statement(q->stmt);
	int sent =
	    q->stmt < DB_NPREPARED
	        ? PQsendQueryPrepared(c->pc.pg, s->name, s->nparams, q->params, NULL, NULL, 0)
	        : PQsendQueryParams(c->pc.pg, s->sql, s->nparams, s->types, q->params, NULL, NULL, 0);

	if (!sent || pgconn_flush(&c->pc) != 0)
		return -1;
	h2o_linklist_unlink(&c->idle_link);
	c->state = CONN_BUSY;
	c->pc.commit_not_replicated = 0;
	c->query = q;
	q->_conn = c;
	h2o_timeout_link(pixd_loop, &pool.query_timeout, &c->query_timer);
	pixd_metrics.db_queries++;
	pixd_metrics.db_calls[q->stmt]++;
	return 0;
}

enum db_submit_status db_submit(db_query_t *q)
{
	if (pool.down || pool.stopping) {
		pixd_metrics.db_rejected++;
		return DB_UNAVAILABLE;
	}
	if (pool.queue_len >= pixd_config.max_queue || unverified_over_share(q)) {
		pixd_metrics.db_rejected++;
		return DB_OVERLOADED;
	}
	q->_conn = NULL;
	q->_wait_timer = (h2o_timeout_entry_t){0};
	q->_wait_timer.cb = on_wait_timeout;
	h2o_linklist_insert(&pool.queue, &q->_queued);
	pool.queue_len++;
	h2o_timeout_link(pixd_loop, &pool.wait_timeout, &q->_wait_timer);
	dispatch();
	return DB_SUBMITTED;
}

/* The request's credential: the last parameter of the routes' calls (database.h), else NULL. */
static const char *query_credential(const db_query_t *q)
{
	if (q->stmt >= DB_HEALTH)
		return NULL;
	return q->params[statements[q->stmt].nparams - 1];
}

static int unverified_over_share(const db_query_t *q)
{
	const char *credential = query_credential(q);

	if (credential == NULL || pool.queue_len < pixd_config.max_queue / UNVERIFIED_QUEUE_SHARE ||
	    credcache_known(credential, h2o_now(pixd_loop)))
		return 0;
	pixd_metrics.unverified_refused++;
	return 1;
}

static void note_credential(const db_query_t *q, const PGresult *res)
{
	const char *credential = query_credential(q), *state;

	if (credential == NULL)
		return;
	if (PQresultStatus(res) == PGRES_TUPLES_OK)
		credcache_accept(credential, h2o_now(pixd_loop));
	else if ((state = PQresultErrorField(res, PG_DIAG_SQLSTATE)) == NULL)
		return;
	else if (strcmp(state, "PX013") == 0) /* a real credential, of another institution */
		credcache_accept(credential, h2o_now(pixd_loop));
	else if (strcmp(state, "PX012") == 0) /* unknown, revoked or expired */
		credcache_forget(credential);
}

void db_cancel(db_query_t *q)
{
	if (h2o_linklist_is_linked(&q->_queued)) {
		h2o_linklist_unlink(&q->_queued);
		h2o_timeout_unlink(&q->_wait_timer);
		pool.queue_len--;
		queue_left();
	}
	if (q->_conn != NULL) {
		q->_conn->query = NULL;
		q->_conn = NULL;
	}
}

static void on_wait_timeout(h2o_timeout_entry_t *entry)
{
	db_query_t *q = H2O_STRUCT_FROM_MEMBER(db_query_t, _wait_timer, entry);

	h2o_linklist_unlink(&q->_queued);
	pool.queue_len--;
	queue_left();
	pixd_metrics.db_timeouts++;
	q->cb(q, NULL, DB_FAIL_NOT_SENT);
}

void db_hurry(db_query_t *q)
{
	if (!h2o_linklist_is_linked(&q->_queued))
		return;
	h2o_timeout_unlink(&q->_wait_timer);
	h2o_timeout_link(pixd_loop, &pool.hurry_timeout, &q->_wait_timer);
}

int db_is_pending(db_query_t *q)
{
	return q->_conn != NULL || h2o_linklist_is_linked(&q->_queued);
}

int db_queue_has_room(void)
{
	return !pool.down && !pool.stopping && pool.queue_len < pixd_config.max_queue;
}

void db_set_hooks(void (*on_room)(void), void (*on_up)(void))
{
	pool.on_room = on_room;
	pool.on_up = on_up;
}

static void on_query_timeout(h2o_timeout_entry_t *entry)
{
	struct db_conn *c = H2O_STRUCT_FROM_MEMBER(struct db_conn, query_timer, entry);
	db_query_t *q = c->query;

	pixd_log("database: connection %d stuck for %d ms; resetting it", c->index,
	         pixd_config.query_timeout_ms);
	pixd_metrics.db_timeouts++;
	c->query = NULL;
	drop_held(c);
	if (q != NULL)
		q->_conn = NULL;
	c->resetting = 1;
	pgconn_fail(&c->pc, "query timeout");
	if (q != NULL)
		q->cb(q, NULL, DB_FAIL_TIMEOUT);
}

/* Every way a connection ends leads here (pgconn already closed it). */
static void on_conn_failed(struct pgconn *pc, const char *why)
{
	struct db_conn *c = pc->data;
	db_query_t *q = c->query;

	if (h2o_linklist_is_linked(&c->idle_link))
		h2o_linklist_unlink(&c->idle_link);
	h2o_timeout_unlink(&c->query_timer);
	c->query = NULL;
	drop_held(c); /* rows without ReadyForQuery: the COMMIT may not have happened (see the header) */
	c->state = CONN_DOWN;
	if (!c->failure_logged && !pool.stopping) {
		pixd_log("database: connection %d: %s", c->index, why);
		c->failure_logged = 1;
	}
	if (c->resetting && !pool.stopping) {
		/* PostgreSQL answered until now; only this session is stuck. Not a reason to go down. */
		c->resetting = 0;
		conn_connect(c);
	} else {
		schedule_retry(c);
		update_down();
	}
	if (q != NULL) {
		q->_conn = NULL;
		q->cb(q, NULL, DB_FAIL_LOST);
	}
}

static void schedule_retry(struct db_conn *c)
{
	if (pool.stopping)
		return;
	h2o_timeout_link(pixd_loop, &pool.retry_timeouts[c->backoff], &c->retry_timer);
	if (c->backoff < N_RETRY - 1)
		c->backoff++;
}

static void on_retry_timer(h2o_timeout_entry_t *entry)
{
	struct db_conn *c = H2O_STRUCT_FROM_MEMBER(struct db_conn, retry_timer, entry);

	pixd_metrics.db_reconnects++;
	conn_connect(c);
}

static void update_down(void)
{
	for (int i = 0; i < pool.size; i++)
		if (pool.conns[i].state >= CONN_PREPARING)
			return;
	if (!pool.down && !pool.stopping)
		pixd_log("database: unreachable; answering 503 until a connection is back");
	pool.down = 1;
	if (pool.queue_len > 0 && !h2o_timeout_is_linked(&pool.fail_queue_entry))
		h2o_timeout_link(pixd_loop, &pool.deferred, &pool.fail_queue_entry);
}

static void on_fail_queue(h2o_timeout_entry_t *entry)
{
	while (pool.down && !h2o_linklist_is_empty(&pool.queue)) {
		db_query_t *q = queue_pop();
		q->cb(q, NULL, DB_FAIL_LOST);
	}
}

void db_shutdown(void)
{
	pool.stopping = 1;
	for (int i = 0; i < pool.size; i++) {
		struct db_conn *c = &pool.conns[i];
		h2o_timeout_unlink(&c->retry_timer);
		if (c->state != CONN_DOWN)
			pgconn_fail(&c->pc, "server shutting down");
	}
	while (!h2o_linklist_is_empty(&pool.queue)) {
		db_query_t *q = queue_pop();
		q->cb(q, NULL, DB_FAIL_LOST);
	}
	h2o_timeout_unlink(&pool.fail_queue_entry);
}

int db_ready_connections(void)
{
	int n = 0;

	for (int i = 0; i < pool.size; i++)
		n += pool.conns[i].state >= CONN_IDLE;
	return n;
}

int db_busy_connections(void)
{
	int n = 0;

	for (int i = 0; i < pool.size; i++)
		n += pool.conns[i].state == CONN_BUSY;
	return n;
}

const char *db_statement_name(enum db_stmt stmt)
{
	return statements[stmt].name;
}

int db_queue_length(void)
{
	return pool.queue_len;
}

int db_is_down(void)
{
	return pool.down;
}
