/*
 * listener.c — LISTEN pix_message on a dedicated connection; NOTIFY payload = ISPB.
 *
 * States: DOWN (retry timer linked) -> CONNECTING -> SUBSCRIBING (LISTEN sent) -> LISTENING.
 * Invariants:
 *   - deaf_timer is linked exactly while not LISTENING (and not stopping): it wakes every
 *     parked read once a second, so a lost notification costs a second, never a whole wait.
 *   - Entering LISTENING wakes every parked read: whatever was enqueued while deaf gets read.
 *   - A payload that is not an ISPB is ignored: the channel is public to every database user.
 */
#include <string.h>
#include "listener.h"
#include "parking.h"
#include "pgconn.h"

enum listener_state { L_DOWN, L_CONNECTING, L_SUBSCRIBING, L_LISTENING };

static void connect_now(void);
static void on_open(struct pgconn *pc);
static void on_readable(struct pgconn *pc);
static void on_failed(struct pgconn *pc, const char *why);
static void on_retry(h2o_timeout_entry_t *entry);
static void on_deaf_tick(h2o_timeout_entry_t *entry);
static void read_subscription_results(void);
static void deliver_notifications(void);
static void become_deaf(void);

static const int retry_ms[] = {50, 200, 500, 1000, 2000};
#define N_RETRY (int)(sizeof(retry_ms) / sizeof(retry_ms[0]))

static struct {
	struct pgconn pc;
	enum listener_state state;
	int backoff;
	int stopping;
	int failure_logged;
	h2o_timeout_t retry_timeouts[N_RETRY];
	h2o_timeout_entry_t retry_timer;
	h2o_timeout_t deaf_timeout; /* 1 s */
	h2o_timeout_entry_t deaf_timer;
} lsn;

void listener_init(void)
{
	for (int i = 0; i < N_RETRY; i++)
		h2o_timeout_init(pixd_loop, &lsn.retry_timeouts[i], retry_ms[i]);
	h2o_timeout_init(pixd_loop, &lsn.deaf_timeout, 1000);
	lsn.retry_timer.cb = on_retry;
	lsn.deaf_timer.cb = on_deaf_tick;
	lsn.pc.on_open = on_open;
	lsn.pc.on_readable = on_readable;
	lsn.pc.on_failed = on_failed;
	become_deaf();
	connect_now();
}

static void connect_now(void)
{
	lsn.state = L_CONNECTING;
	if (pgconn_start(&lsn.pc, pixd_config.db_conninfo) != 0)
		on_failed(&lsn.pc, lsn.pc.error);
}

static void on_open(struct pgconn *pc)
{
	lsn.state = L_SUBSCRIBING;
	if (!PQsendQuery(pc->pg, "LISTEN pix_message") || pgconn_flush(pc) != 0)
		pgconn_fail(pc, PQerrorMessage(pc->pg));
}

static void on_readable(struct pgconn *pc)
{
	if (pgconn_consume(pc) != 0) {
		pgconn_fail(pc, PQerrorMessage(pc->pg));
		return;
	}
	if (lsn.state == L_SUBSCRIBING)
		read_subscription_results();
	/* Notifications can arrive in the same packet as LISTEN's answer: deliver them either way. */
	if (lsn.state == L_LISTENING || lsn.state == L_SUBSCRIBING)
		deliver_notifications();
}

static void read_subscription_results(void)
{
	while (lsn.state == L_SUBSCRIBING && !PQisBusy(lsn.pc.pg)) {
		PGresult *res = PQgetResult(lsn.pc.pg);

		if (res == NULL) {
			lsn.state = L_LISTENING;
			lsn.backoff = 0;
			h2o_timeout_unlink(&lsn.deaf_timer);
			if (lsn.failure_logged)
				pixd_log("listener: listening again; waking every parked read");
			lsn.failure_logged = 0;
			parking_wake_all();
			return;
		}
		if (PQresultStatus(res) != PGRES_COMMAND_OK) {
			char why[300];
			snprintf(why, sizeof(why), "LISTEN failed: %s", PQresultErrorMessage(res));
			PQclear(res);
			pgconn_fail(&lsn.pc, why);
			return;
		}
		PQclear(res);
	}
}

static void deliver_notifications(void)
{
	PGnotify *n;

	while (lsn.pc.pg != NULL && (n = PQnotifies(lsn.pc.pg)) != NULL) {
		pixd_metrics.notifications++;
		if (strcmp(n->relname, "pix_message") == 0 && is_ispb(n->extra, strlen(n->extra)))
			parking_wake(n->extra);
		PQfreemem(n);
	}
}

static void on_failed(struct pgconn *pc, const char *why)
{
	lsn.state = L_DOWN;
	if (lsn.stopping)
		return;
	if (!lsn.failure_logged) {
		pixd_log("listener: %s; parked reads are polled every second until it is back", why);
		lsn.failure_logged = 1;
	}
	become_deaf();
	h2o_timeout_link(pixd_loop, &lsn.retry_timeouts[lsn.backoff], &lsn.retry_timer);
	if (lsn.backoff < N_RETRY - 1)
		lsn.backoff++;
}

static void become_deaf(void)
{
	if (!h2o_timeout_is_linked(&lsn.deaf_timer))
		h2o_timeout_link(pixd_loop, &lsn.deaf_timeout, &lsn.deaf_timer);
}

static void on_retry(h2o_timeout_entry_t *entry)
{
	connect_now();
}

static void on_deaf_tick(h2o_timeout_entry_t *entry)
{
	if (lsn.stopping || lsn.state == L_LISTENING)
		return;
	parking_wake_all();
	h2o_timeout_link(pixd_loop, &lsn.deaf_timeout, &lsn.deaf_timer);
}

void listener_shutdown(void)
{
	lsn.stopping = 1;
	h2o_timeout_unlink(&lsn.retry_timer);
	h2o_timeout_unlink(&lsn.deaf_timer);
	pgconn_close(&lsn.pc);
	lsn.state = L_DOWN;
}

int listener_is_listening(void)
{
	return lsn.state == L_LISTENING;
}
