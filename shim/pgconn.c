/*
 * pgconn.c — a libpq connection whose socket events come from the h2o loop.
 *
 * Invariants:
 *   - sock is registered for exactly one libpq descriptor (pq_fd/sock_ino) and is a dup() of it;
 *     h2o closes the dup, PQfinish closes libpq's, and the dup is always closed first so that the
 *     epoll registration dies with it.
 *   - While CONNECTING, at most one of "read" and "write notify" is armed, as PQconnectPoll asked.
 *   - While OPEN, reading is always armed; a write notify is armed only while PQflush has
 *     data left.
 *   - connect_timer is linked exactly while CONNECTING: libpq enforces connect_timeout only in its
 *     blocking API, so the non-blocking handshake needs its own.
 */
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include "pgconn.h"

static void on_connect_io(h2o_socket_t *sock, const char *err);
static void on_connect_timeout(h2o_timeout_entry_t *entry);
static void on_open_readable(h2o_socket_t *sock, const char *err);
static void on_flush_writable(h2o_socket_t *sock, const char *err);
static void connect_step(struct pgconn *c);
static int follow_socket(struct pgconn *c);
static void wait_for(struct pgconn *c, int writing, h2o_socket_cb cb);
static void close_socket(struct pgconn *c);
static void keep_error(struct pgconn *c, const char *why);
static void on_notice(void *arg, const PGresult *res);

static h2o_timeout_t connect_timeout;

void pgconn_global_init(void)
{
	h2o_timeout_init(pixd_loop, &connect_timeout, pixd_config.connect_timeout_ms);
}

int pgconn_start(struct pgconn *c, const char *conninfo)
{
	c->sock = NULL;
	c->pq_fd = -1;
	c->state = PGCONN_CLOSED;
	c->connect_timer = (h2o_timeout_entry_t){0};
	c->connect_timer.cb = on_connect_timeout;
	/* The connection string may be a full conninfo or URI (expand_dbname); name ourselves in
	 * pg_stat_activity unless it says otherwise. */
	static const char *const keywords[] = {"dbname", "fallback_application_name", NULL};
	const char *values[] = {conninfo, "pixd", NULL};
	c->pg = PQconnectStartParams(keywords, values, 1);
	if (c->pg == NULL) {
		keep_error(c, "out of memory");
		return -1;
	}
	if (PQstatus(c->pg) == CONNECTION_BAD || follow_socket(c) != 0) {
		keep_error(c, PQerrorMessage(c->pg));
		pgconn_close(c);
		return -1;
	}
	c->commit_not_replicated = 0;
	PQsetNoticeReceiver(c->pg, on_notice, c);
	c->state = PGCONN_CONNECTING;
	h2o_timeout_link(pixd_loop, &connect_timeout, &c->connect_timer);
	/* libpq's documentation: behave as if PQconnectPoll had last returned PGRES_POLLING_WRITING. */
	wait_for(c, 1, on_connect_io);
	return 0;
}

/* One step of the handshake, run each time the socket is ready as libpq asked. */
static void connect_step(struct pgconn *c)
{
	PostgresPollingStatusType st = PQconnectPoll(c->pg);

	if (st == PGRES_POLLING_FAILED) {
		pgconn_fail(c, PQerrorMessage(c->pg));
		return;
	}
	if (follow_socket(c) != 0) {
		pgconn_fail(c, "cannot register the database socket");
		return;
	}
	if (st == PGRES_POLLING_READING) {
		wait_for(c, 0, on_connect_io);
		return;
	}
	if (st == PGRES_POLLING_WRITING) {
		wait_for(c, 1, on_connect_io);
		return;
	}
	/* PGRES_POLLING_OK */
	h2o_timeout_unlink(&c->connect_timer);
	if (PQsetnonblocking(c->pg, 1) != 0) {
		pgconn_fail(c, PQerrorMessage(c->pg));
		return;
	}
	c->state = PGCONN_OPEN;
	h2o_socket_read_start(c->sock, on_open_readable);
	c->on_open(c);
}

/* Arms exactly one of read and write readiness. */
static void wait_for(struct pgconn *c, int writing, h2o_socket_cb cb)
{
	if (writing) {
		if (h2o_socket_is_reading(c->sock))
			h2o_socket_read_stop(c->sock);
		if (!h2o_socket_is_writing(c->sock))
			h2o_socket_notify_write(c->sock, cb);
	} else {
		h2o_socket_read_start(c->sock, cb);
	}
}

/*
 * Makes sock watch libpq's current descriptor. libpq opens a new socket for each address it tries,
 * and a new socket may get the old one's number, hence the inode comparison.
 */
static int follow_socket(struct pgconn *c)
{
	struct stat st;
	int fd = PQsocket(c->pg);
	int dupfd;

	if (fd < 0 || fstat(fd, &st) != 0)
		return -1;
	if (c->sock != NULL && fd == c->pq_fd && st.st_ino == c->sock_ino)
		return 0;
	close_socket(c);
	dupfd = fcntl(fd, F_DUPFD_CLOEXEC, 0);
	if (dupfd < 0)
		return -1;
	c->sock = h2o_evloop_socket_create(pixd_loop, dupfd, H2O_SOCKET_FLAG_DONT_READ);
	c->sock->data = c;
	c->pq_fd = fd;
	c->sock_ino = st.st_ino;
	return 0;
}

static void on_connect_io(h2o_socket_t *sock, const char *err)
{
	struct pgconn *c = sock->data;

	if (err != NULL) {
		pgconn_fail(c, err);
		return;
	}
	connect_step(c);
}

static void on_connect_timeout(h2o_timeout_entry_t *entry)
{
	struct pgconn *c = H2O_STRUCT_FROM_MEMBER(struct pgconn, connect_timer, entry);

	pgconn_fail(c, "timeout while connecting");
}

static void on_open_readable(h2o_socket_t *sock, const char *err)
{
	struct pgconn *c = sock->data;

	if (err != NULL) {
		pgconn_fail(c, err);
		return;
	}
	c->on_readable(c);
}

int pgconn_flush(struct pgconn *c)
{
	int r = PQflush(c->pg);

	if (r < 0)
		return -1;
	if (r > 0 && !h2o_socket_is_writing(c->sock))
		h2o_socket_notify_write(c->sock, on_flush_writable);
	return 0;
}

static void on_flush_writable(h2o_socket_t *sock, const char *err)
{
	struct pgconn *c = sock->data;

	if (err != NULL || pgconn_flush(c) != 0)
		pgconn_fail(c, err != NULL ? err : PQerrorMessage(c->pg));
}

int pgconn_consume(struct pgconn *c)
{
	if (!PQconsumeInput(c->pg) || PQstatus(c->pg) == CONNECTION_BAD)
		return -1;
	/* libpq may have more to send once the server read what it had (nonblocking mode). */
	return pgconn_flush(c);
}

void pgconn_fail(struct pgconn *c, const char *why)
{
	/* why may be PQerrorMessage(), which PQfinish frees: keep a copy first. */
	if (why != NULL)
		keep_error(c, why);
	pgconn_close(c);
	if (why != NULL)
		c->on_failed(c, c->error);
}

/* libpq's messages span lines ("...\n\tIs the server running...\n"): one log line each. */
static void keep_error(struct pgconn *c, const char *why)
{
	size_t j = 0;

	for (size_t i = 0; why[i] != '\0' && j + 1 < sizeof(c->error); i++) {
		char ch = why[i] == '\n' || why[i] == '\t' ? ' ' : why[i];
		if (ch == ' ' && (j == 0 || c->error[j - 1] == ' '))
			continue;
		c->error[j++] = ch;
	}
	while (j > 0 && c->error[j - 1] == ' ')
		j--;
	c->error[j] = '\0';
}

/* Server messages outside a query (e.g. FATAL at shutdown) go to the log, not raw to stderr. */
/*
 * A notice or warning from the server: logged. One of them also matters to the owner: PostgreSQL
 * warns "canceling [the] wait for synchronous replication" when a COMMIT stopped waiting for the
 * standby (the backend was cancelled or terminated: a fast shutdown, which is how pg_auto_failover
 * demotes a primary). The transaction is then committed here and perhaps nowhere else, and the
 * result that follows must not be taken for a durable one (database.c).
 */
static void on_notice(void *arg, const PGresult *res)
{
	struct pgconn *c = arg;
	const char *severity = PQresultErrorField(res, PG_DIAG_SEVERITY_NONLOCALIZED);
	const char *state = PQresultErrorField(res, PG_DIAG_SQLSTATE);
	const char *message = PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY);
	char line[sizeof(c->error)];

	if (severity != NULL && strcmp(severity, "WARNING") == 0 &&
	    ((state != NULL && strcmp(state, "57P01") == 0) ||
	     (message != NULL && strstr(message, "wait for synchronous replication") != NULL)))
		c->commit_not_replicated = 1;
	memcpy(line, c->error, sizeof(line));
	keep_error(c, PQresultErrorMessage(res));
	pixd_log("database says: %s", c->error);
	memcpy(c->error, line, sizeof(line));
}

static void close_socket(struct pgconn *c)
{
	if (c->sock != NULL) {
		h2o_socket_close(c->sock);
		c->sock = NULL;
	}
}

void pgconn_close(struct pgconn *c)
{
	h2o_timeout_unlink(&c->connect_timer);
	close_socket(c);
	if (c->pg != NULL) {
		PQfinish(c->pg);
		c->pg = NULL;
	}
	c->pq_fd = -1;
	c->state = PGCONN_CLOSED;
}
