/*
 * listener.c — LISTEN pix_message on every database that enqueues; NOTIFY payload = ISPB.
 *
 * One connection to --db always. When --db is a pix router (it has pix_shards(): see
 * router/pix_router.sql), the messages are enqueued, and notified, on the shards: that connection
 * then reads the shard list from the router (the router's cluster configuration is the one source
 * of truth) and one more connection per shard LISTENs there. The list is read again on every
 * reconnection to the router and every REDISCOVER_MS, so a shard added by moving partitions is
 * heard without a restart. A shard connection logs in as the router connection's user (PL/Proxy
 * does the same).
 *
 * States of each connection: DOWN (retry timer linked) -> CONNECTING -> SUBSCRIBING (LISTEN sent,
 * and on --db the router probe) -> DISCOVERING (--db of a router: shard list asked) -> LISTENING.
 * Invariants:
 *   - deaf_timer is linked exactly while some connection is not LISTENING (and not stopping): it
 * wakes every parked read once a second, so a lost notification costs a second, never a whole wait.
 *   - A connection entering LISTENING wakes every parked read: whatever was enqueued while deaf
 * gets read.
 *   - A payload that is not an ISPB is ignored: the channel is public to every database user, and
 * what a flood of valid ones costs is bounded by the parked reads' wake interval (parking.c).
 */
#include <stdlib.h>
#include <string.h>
#include "listener.h"
#include "parking.h"
#include "pgconn.h"

enum listener_state { L_DOWN, L_CONNECTING, L_SUBSCRIBING, L_DISCOVERING, L_LISTENING };

#define MAX_LISTENERS 65    /* --db + up to 64 shards */
#define REDISCOVER_MS 10000 /* how often the router's shard list is read again */
/* The router connection LISTENs too (a no-op when repeated): whatever NOTIFY is sent there is
 * heard. */

struct listener {
	struct pgconn pc;
	enum listener_state state;
	int backoff;
	int failure_logged;
	int shard; /* -1: the --db connection; else the position in the router's list when first seen */
	int rediscovering; /* a periodic re-read of the shard list is under way */
	char *conninfo;
	h2o_timeout_entry_t retry_timer;
};

static struct listener *listener_new(const char *conninfo, int shard);
static void connect_now(struct listener *l);
static void send_step(struct listener *l, int (*send)(PGconn *pg));
static int send_listen(PGconn *pg);
static int send_router_probe(PGconn *pg);
static int send_shard_list(PGconn *pg);
static void on_open(struct pgconn *pc);
static void on_readable(struct pgconn *pc);
static void on_failed(struct pgconn *pc, const char *why);
static void on_retry(h2o_timeout_entry_t *entry);
static void on_deaf_tick(h2o_timeout_entry_t *entry);
static void on_rediscover(h2o_timeout_entry_t *entry);
static void read_results(struct listener *l);
static int read_one_result(struct listener *l, PGresult *res);
static void become_listening(struct listener *l);
static void add_shard(const char *conninfo);
static char *shard_conninfo(const char *conninfo);
static char *append_param(char *o, const char *key, const char *value);
static void deliver_notifications(struct listener *l);
static void become_deaf(void);
static int all_listening(void);

static const int retry_ms[] = {50, 200, 500, 1000, 2000};
#define N_RETRY (int)(sizeof(retry_ms) / sizeof(retry_ms[0]))

static struct {
	struct listener *all[MAX_LISTENERS];
	int n;
	int is_router; /* --db answered that it is a router */
	int stopping;
	h2o_timeout_t retry_timeouts[N_RETRY];
	h2o_timeout_t deaf_timeout; /* 1 s */
	h2o_timeout_entry_t deaf_timer;
	unsigned epoch; /* +1 each time a connection starts listening (again): see listener_epoch */
	h2o_timeout_t rediscover_timeout;
	h2o_timeout_entry_t rediscover_timer;
} lsn;

static struct listener *listener_new(const char *conninfo, int shard)
{
	struct listener *l = calloc(1, sizeof(*l));

	if (l == NULL || (l->conninfo = strdup(conninfo)) == NULL) {
		free(l);
		return NULL;
	}
	l->shard = shard;
	l->retry_timer.cb = on_retry;
	l->pc.data = l;
	l->pc.on_open = on_open;
	l->pc.on_readable = on_readable;
	l->pc.on_failed = on_failed;
	lsn.all[lsn.n++] = l;
	return l;
}

void listener_init(void)
{
	for (int i = 0; i < N_RETRY; i++)
		h2o_timeout_init(pixd_loop, &lsn.retry_timeouts[i], retry_ms[i]);
	h2o_timeout_init(pixd_loop, &lsn.deaf_timeout, 1000);
	h2o_timeout_init(pixd_loop, &lsn.rediscover_timeout, REDISCOVER_MS);
	lsn.deaf_timer.cb = on_deaf_tick;
	lsn.rediscover_timer.cb = on_rediscover;
	struct listener *l = listener_new(pixd_config.db_conninfo, -1);
	if (l == NULL) {
		pixd_log("listener: out of memory");
		exit(1);
	}
	become_deaf();
	connect_now(l);
}

static void connect_now(struct listener *l)
{
	l->state = L_CONNECTING;
	if (pgconn_start(&l->pc, l->conninfo) != 0)
		on_failed(&l->pc, l->pc.error);
}

static void on_open(struct pgconn *pc)
{
	struct listener *l = pc->data;

	l->state = L_SUBSCRIBING;
	send_step(l, l->shard < 0 ? send_router_probe : send_listen);
}

/* Sends one step's queries; each is a literal at its call (no SQL is ever built at run time). */
static void send_step(struct listener *l, int (*send)(PGconn *pg))
{
	if (!send(l->pc.pg) || pgconn_flush(&l->pc) != 0)
		pgconn_fail(&l->pc, PQerrorMessage(l->pc.pg));
}

static int send_listen(PGconn *pg)
{
	return PQsendQuery(pg, "LISTEN pix_message");
}

/* Whether --db is a pix router: it has pix_shards() (router/pix_router.sql). */
static int send_router_probe(PGconn *pg)
{
	return PQsendQuery(
	    pg, "LISTEN pix_message; SELECT to_regprocedure('public.pix_shards()') IS NOT NULL");
}

/* The router connection LISTENs too (a no-op when repeated): whatever NOTIFY is sent there is
 * heard. */
static int send_shard_list(PGconn *pg)
{
	return PQsendQuery(
	    pg, "LISTEN pix_message; SELECT conninfo FROM public.pix_shards() ORDER BY shard");
}

static void on_readable(struct pgconn *pc)
{
	struct listener *l = pc->data;

	if (pgconn_consume(pc) != 0) {
		pgconn_fail(pc, PQerrorMessage(pc->pg));
		return;
	}
	if (l->state == L_SUBSCRIBING || l->state == L_DISCOVERING)
		read_results(l);
	/* Notifications can arrive in the same packet as LISTEN's answer: deliver them either way. */
	if (l->state != L_DOWN && l->state != L_CONNECTING)
		deliver_notifications(l);
}

/* Reads the answers to what on_open or on_rediscover sent; the last one (NULL) ends the step. */
static void read_results(struct listener *l)
{
	while ((l->state == L_SUBSCRIBING || l->state == L_DISCOVERING) && !PQisBusy(l->pc.pg)) {
		PGresult *res = PQgetResult(l->pc.pg);

		if (res == NULL) {
			if (l->state == L_SUBSCRIBING && l->shard < 0 && lsn.is_router) {
				l->state = L_DISCOVERING;
				send_step(l, send_shard_list);
				return;
			}
			become_listening(l);
			return;
		}
		if (read_one_result(l, res) != 0)
			return;
	}
}

/* One result: LISTEN's, the probe's or the shard list's. Returns -1 when the connection failed. */
static int read_one_result(struct listener *l, PGresult *res)
{
	ExecStatusType st = PQresultStatus(res);

	if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK) {
		char why[300];
		snprintf(why, sizeof(why), "%s failed: %s",
		         l->state == L_DISCOVERING ? "reading the shard list" : "LISTEN",
		         PQresultErrorMessage(res));
		PQclear(res);
		pgconn_fail(&l->pc, why);
		return -1;
	}
	if (st == PGRES_TUPLES_OK && l->state == L_SUBSCRIBING) {
		lsn.is_router = PQntuples(res) == 1 && strcmp(PQgetvalue(res, 0, 0), "t") == 0;
	} else if (st == PGRES_TUPLES_OK) {
		for (int i = 0; i < PQntuples(res); i++)
			add_shard(PQgetvalue(res, i, 0));
	}
	PQclear(res);
	return 0;
}

static void become_listening(struct listener *l)
{
	l->state = L_LISTENING;
	if (l->shard < 0 && lsn.is_router && !lsn.stopping)
		h2o_timeout_link(pixd_loop, &lsn.rediscover_timeout, &lsn.rediscover_timer);
	if (l->rediscovering) { /* a periodic re-read of the shard list: nothing was missed */
		l->rediscovering = 0;
		return;
	}
	if (++lsn.epoch == 0)
		lsn.epoch = 1;
	l->backoff = 0;
	if (all_listening())
		h2o_timeout_unlink(&lsn.deaf_timer);
	if (l->failure_logged)
		pixd_log("listener: listening again on %s; waking every parked read",
		         l->shard < 0 ? "--db" : "a shard");
	l->failure_logged = 0;
	parking_wake_all();
}

/* A shard the router lists: a connection of its own, unless it has one already. */
static void add_shard(const char *conninfo)
{
	char *full = shard_conninfo(conninfo);

	if (full == NULL)
		return;
	for (int i = 0; i < lsn.n; i++) {
		if (lsn.all[i]->shard >= 0 && strcmp(lsn.all[i]->conninfo, full) == 0) {
			free(full);
			return;
		}
	}
	struct listener *l = lsn.n < MAX_LISTENERS ? listener_new(full, lsn.n - 1) : NULL;
	free(full);
	if (l == NULL) {
		pixd_log("listener: cannot listen on one more shard (at most %d)", MAX_LISTENERS - 1);
		return;
	}
	pixd_log("listener: shard %d: %s", l->shard, conninfo);
	become_deaf();
	connect_now(l);
}

/* Appends  key='value'  with libpq's quoting; out has room for twice the value plus the key. */
static char *append_param(char *o, const char *key, const char *value)
{
	o += sprintf(o, " %s='", key);
	for (; *value; value++) {
		if (*value == '\'' || *value == '\\')
			*o++ = '\\';
		*o++ = *value;
	}
	*o++ = '\'';
	*o = '\0';
	return o;
}

/* The router's conninfo of a shard, logging in as the router connection's user (and password). */
static char *shard_conninfo(const char *conninfo)
{
	PGconn *router = lsn.all[0]->pc.pg;
	const char *user = PQuser(router), *pass = PQpass(router);
	size_t cap = strlen(conninfo) + 2 * (strlen(user) + (pass ? strlen(pass) : 0)) + 32;
	char *out = malloc(cap), *o;

	if (out == NULL)
		return NULL;
	o = append_param(out + sprintf(out, "%s", conninfo), "user", user);
	if (pass != NULL && pass[0] != '\0')
		append_param(o, "password", pass);
	return out;
}

static void deliver_notifications(struct listener *l)
{
	PGnotify *n;

	while (l->pc.pg != NULL && (n = PQnotifies(l->pc.pg)) != NULL) {
		pixd_metrics.notifications++;
		if (strcmp(n->relname, "pix_message") == 0 && is_ispb(n->extra, strlen(n->extra)))
			parking_wake(n->extra);
		PQfreemem(n);
	}
}

static void on_failed(struct pgconn *pc, const char *why)
{
	struct listener *l = pc->data;

	l->state = L_DOWN;
	l->rediscovering = 0;
	if (lsn.stopping)
		return;
	if (!l->failure_logged) {
		pixd_log("listener (%s): %s; parked reads are polled every second until it is back",
		         l->shard < 0 ? "--db" : "shard", why);
		l->failure_logged = 1;
	}
	if (l->shard < 0)
		h2o_timeout_unlink(&lsn.rediscover_timer);
	become_deaf();
	h2o_timeout_link(pixd_loop, &lsn.retry_timeouts[l->backoff], &l->retry_timer);
	if (l->backoff < N_RETRY - 1)
		l->backoff++;
}

static void become_deaf(void)
{
	if (!h2o_timeout_is_linked(&lsn.deaf_timer))
		h2o_timeout_link(pixd_loop, &lsn.deaf_timeout, &lsn.deaf_timer);
}

static void on_retry(h2o_timeout_entry_t *entry)
{
	connect_now(H2O_STRUCT_FROM_MEMBER(struct listener, retry_timer, entry));
}

static void on_deaf_tick(h2o_timeout_entry_t *entry)
{
	if (lsn.stopping || all_listening())
		return;
	parking_wake_all();
	h2o_timeout_link(pixd_loop, &lsn.deaf_timeout, &lsn.deaf_timer);
}

/* Reads the router's shard list again on the --db connection (it only listens otherwise). */
static void on_rediscover(h2o_timeout_entry_t *entry)
{
	struct listener *l = lsn.all[0];

	if (lsn.stopping || l->state != L_LISTENING)
		return;
	l->state = L_DISCOVERING;
	l->rediscovering = 1;
	send_step(l, send_shard_list);
}

static int all_listening(void)
{
	for (int i = 0; i < lsn.n; i++)
		if (lsn.all[i]->state != L_LISTENING && lsn.all[i]->state != L_DISCOVERING)
			return 0;
	return 1;
}

void listener_shutdown(void)
{
	lsn.stopping = 1;
	h2o_timeout_unlink(&lsn.deaf_timer);
	h2o_timeout_unlink(&lsn.rediscover_timer);
	for (int i = 0; i < lsn.n; i++) {
		h2o_timeout_unlink(&lsn.all[i]->retry_timer);
		pgconn_close(&lsn.all[i]->pc);
		lsn.all[i]->state = L_DOWN;
		free(lsn.all[i]->conninfo);
		free(lsn.all[i]);
	}
	lsn.n = 0;
}

/*
 * Non-zero only while every connection is subscribed without a gap: listening, or re-reading the
 * shard list on a connection that stays subscribed (a first discovery follows a new LISTEN, whose
 * epoch is not counted yet). Any connection that starts listening again bumps the epoch.
 */
unsigned listener_epoch(void)
{
	for (int i = 0; i < lsn.n; i++) {
		const struct listener *l = lsn.all[i];

		if (l->state != L_LISTENING && !(l->state == L_DISCOVERING && l->rediscovering))
			return 0;
	}
	return lsn.n > 0 ? lsn.epoch : 0;
}

int listener_is_listening(void)
{
	return lsn.n > 0 && all_listening();
}

int listener_shards(void)
{
	return lsn.n - 1;
}

int listener_shard_is_listening(int shard)
{
	struct listener *l = shard + 1 < lsn.n ? lsn.all[shard + 1] : NULL;

	return l != NULL && (l->state == L_LISTENING || l->state == L_DISCOVERING);
}
