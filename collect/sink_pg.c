/*
 * sink_pg.c — the PostgreSQL sink (--into): the institution's database gets
 *
 *   pix_received (end_to_end_id text PRIMARY KEY, message jsonb, received_at timestamptz)
 *   pix_collect_checkpoint (ispb, slot, next_url, updated_at), PRIMARY KEY (ispb, slot)
 *
 * and every write is ONE statement (so one transaction): the batch's messages inserted ON CONFLICT
 * (end_to_end_id) DO NOTHING, and the checkpoint of its slot set to the batch's Pull-Next. Either
 * both are committed or neither is. Only after the COMMIT's answer does the collector call Pull-Next.
 *
 * Group commit: one connection, one write in flight. Batches that arrive while a write runs are
 * written together by the next one (each with its own slot's checkpoint, still one transaction), so
 * six collectors cost one commit, not six, when the sink is the bottleneck.
 *
 * Failures: a lost connection fails the write in flight (whether its COMMIT happened is unknown —
 * it does not matter: the write is idempotent and is simply done again after reconnecting, with
 * backoff, and nothing is confirmed meanwhile). synchronous_commit = off would let a crash of the
 * sink take back a batch already confirmed to the server, so this session sets it on when it is off.
 * An advisory lock per (ISPB, slot) keeps two pix-collect processes from sharing checkpoints.
 */
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <curl/curl.h>
#include <libpq-fe.h>

#include "collect.h"

#define CONNECT_TIMEOUT_MS 10000

static const char schema_sql[] =
    "CREATE TABLE IF NOT EXISTS pix_received ("
    " end_to_end_id text PRIMARY KEY,"
    " message jsonb NOT NULL,"
    " received_at timestamptz NOT NULL DEFAULT now());"
    "CREATE TABLE IF NOT EXISTS pix_collect_checkpoint ("
    " ispb text NOT NULL,"
    " slot int NOT NULL,"
    " next_url text NOT NULL,"
    " updated_at timestamptz NOT NULL DEFAULT now(),"
    " PRIMARY KEY (ispb, slot))";

/* $1 the messages (a JSON array), $2 the ISPB, $3 the slots, $4 their new checkpoints. */
static const char write_sql[] =
    "WITH ins AS ("
    "  INSERT INTO pix_received (end_to_end_id, message)"
    "  SELECT m->>'endToEndId', m FROM jsonb_array_elements($1::jsonb) AS m"
    "  ON CONFLICT (end_to_end_id) DO NOTHING RETURNING 1),"
    " cp AS ("
    "  INSERT INTO pix_collect_checkpoint (ispb, slot, next_url)"
    "  SELECT $2, s, u FROM unnest($3::int[], $4::text[]) AS t(s, u)"
    "  ON CONFLICT (ispb, slot) DO UPDATE SET next_url = excluded.next_url, updated_at = now()"
    "  RETURNING 1)"
    " SELECT (SELECT count(*) FROM ins), (SELECT count(*) FROM cp)";

static PGconn *conn;
static enum { PG_DOWN, PG_CONNECTING, PG_READY, PG_BUSY } state = PG_DOWN;
static PostgresPollingStatusType connect_wants;
static int64_t connect_deadline, reconnect_at;
static int reconnect_backoff_ms;
static bool flushing;
static int busy_messages; /* messages in the write in flight */
static struct buf messages, slots, urls;

static void quiet(void *arg, const char *msg)
{
	(void)arg;
	(void)msg; /* CREATE TABLE IF NOT EXISTS' notices */
}

static PGconn *connect_to(const char *dbname_override)
{
	const char *keys[] = {"dbname", "fallback_application_name", dbname_override ? "dbname" : NULL, NULL};
	const char *vals[] = {opt.into, "pix-collect", dbname_override, NULL};
	return PQconnectdbParams(keys, vals, 1);
}

/* The sink's database does not exist: create it through the maintenance database "postgres". */
static int create_database(void)
{
	char *err = NULL, *dbname = NULL;
	PQconninfoOption *o = PQconninfoParse(opt.into, &err);
	if (o == NULL) {
		logmsg("--into: %s", err ? err : "cannot parse the conninfo");
		PQfreemem(err);
		return -1;
	}
	for (PQconninfoOption *p = o; p->keyword; p++)
		if (strcmp(p->keyword, "dbname") == 0 && p->val && p->val[0])
			dbname = strdup(p->val);
	PQconninfoFree(o);
	if (dbname == NULL)
		return -1;
	PGconn *admin = connect_to("postgres");
	int rc = -1;
	if (PQstatus(admin) == CONNECTION_OK) {
		char *ident = PQescapeIdentifier(admin, dbname, strlen(dbname));
		char sql[512];
		snprintf(sql, sizeof sql, "CREATE DATABASE %s", ident ? ident : "\"\"");
		PQfreemem(ident);
		PGresult *r = PQexec(admin, sql);
		if (PQresultStatus(r) == PGRES_COMMAND_OK) {
			logmsg("created the database %s", dbname);
			rc = 0;
		} else {
			logmsg("cannot create the database %s: %s", dbname, PQresultErrorMessage(r));
		}
		PQclear(r);
	} else {
		logmsg("cannot create the database %s: %s", dbname, PQerrorMessage(admin));
	}
	PQfinish(admin);
	free(dbname);
	return rc;
}

static bool exec_ok(const char *sql, const char *what)
{
	PGresult *r = PQexec(conn, sql);
	bool ok = PQresultStatus(r) == PGRES_COMMAND_OK || PQresultStatus(r) == PGRES_TUPLES_OK;
	if (!ok)
		last_error("sink: %s: %s", what, PQresultErrorMessage(r));
	PQclear(r);
	return ok;
}

/* What every session needs, on a fresh connection (blocking: one round trip each, once). */
static bool session_setup(void)
{
	PQsetNoticeProcessor(conn, quiet, NULL);
	PGresult *r = PQexec(conn, "SHOW synchronous_commit");
	bool off = PQresultStatus(r) == PGRES_TUPLES_OK && strcmp(PQgetvalue(r, 0, 0), "off") == 0;
	PQclear(r);
	if (off && !exec_ok("SET synchronous_commit = on", "SET synchronous_commit"))
		return false;
	char n[16];
	snprintf(n, sizeof n, "%d", ncollectors);
	const char *vals[] = {opt.ispb, n};
	r = PQexecParams(conn,
	                 "SELECT bool_and(pg_try_advisory_lock(hashtext('pix-collect ' || $1), s))"
	                 " FROM generate_series(1, $2::int) AS s",
	                 2, NULL, vals, NULL, NULL, 0);
	bool locked = PQresultStatus(r) == PGRES_TUPLES_OK && strcmp(PQgetvalue(r, 0, 0), "t") == 0;
	if (PQresultStatus(r) != PGRES_TUPLES_OK)
		last_error("sink: advisory locks: %s", PQresultErrorMessage(r));
	PQclear(r);
	if (!locked) {
		fatal(EXIT_SINK, "another pix-collect is collecting ISPB %s into this database (its slots are locked)",
		      opt.ispb);
		return false;
	}
	r = PQprepare(conn, "pix_collect_write", write_sql, 0, NULL);
	bool ok = PQresultStatus(r) == PGRES_COMMAND_OK;
	if (!ok)
		last_error("sink: preparing the write: %s", PQresultErrorMessage(r));
	PQclear(r);
	return ok && PQsetnonblocking(conn, 1) == 0;
}

/* The checkpoints of this ISPB: each collector resumes from its slot's. A slot beyond
 * --collectors (a previous run had more) gets a collector that only closes its stream. */
static bool load_checkpoints(void)
{
	const char *vals[] = {opt.ispb};
	PGresult *r = PQexecParams(conn,
	                           "SELECT slot, next_url FROM pix_collect_checkpoint WHERE ispb = $1 ORDER BY slot",
	                           1, NULL, vals, NULL, NULL, 0);
	if (PQresultStatus(r) != PGRES_TUPLES_OK) {
		logmsg("sink: reading the checkpoints: %s", PQresultErrorMessage(r));
		PQclear(r);
		return false;
	}
	for (int i = 0; i < PQntuples(r); i++) {
		int slot = atoi(PQgetvalue(r, i, 0));
		const char *url = PQgetvalue(r, i, 1);
		if (slot < 1 || slot > COLLECT_MAX_COLLECTORS || url[0] != '/' || strlen(url) >= COLLECT_PATH_MAX)
			continue;
		while (ncollectors < slot) {
			collector_init(&collectors[ncollectors], ncollectors + 1);
			collectors[ncollectors].retire = true;
			ncollectors++;
		}
		struct collector *c = &collectors[slot - 1];
		strcpy(c->url, url);
		strcpy(c->saved, url);
		if (c->retire)
			logmsg("slot %d (beyond --collectors %d) has a checkpoint: closing its stream", slot, opt.collectors);
	}
	PQclear(r);
	return true;
}

static int pg_open(void)
{
	conn = connect_to(NULL);
	if (PQstatus(conn) != CONNECTION_OK && strstr(PQerrorMessage(conn), "does not exist") &&
	    strstr(PQerrorMessage(conn), "database")) {
		PQfinish(conn);
		if (create_database() != 0)
			return -1;
		conn = connect_to(NULL);
	}
	if (PQstatus(conn) != CONNECTION_OK) {
		logmsg("the sink is unreachable: %s", PQerrorMessage(conn));
		return -1;
	}
	PQsetNoticeProcessor(conn, quiet, NULL);
	PGresult *r = PQexec(conn, schema_sql);
	if (PQresultStatus(r) != PGRES_COMMAND_OK) {
		logmsg("sink: creating the tables: %s", PQresultErrorMessage(r));
		PQclear(r);
		return -1;
	}
	PQclear(r);
	if (!load_checkpoints() || !session_setup())
		return -1;
	state = PG_READY;
	return 0;
}

static void pg_close(void)
{
	PQfinish(conn);
	conn = NULL;
	buf_free(&messages);
	buf_free(&slots);
	buf_free(&urls);
}

static void lost(const char *why)
{
	last_error("sink: %s", why);
	PQfinish(conn);
	conn = NULL;
	state = PG_DOWN;
	flushing = false;
	reconnect_backoff_ms = reconnect_backoff_ms ? reconnect_backoff_ms * 2 : 100;
	if (reconnect_backoff_ms > 2000)
		reconnect_backoff_ms = 2000;
	reconnect_at = now_ms() + jitter(reconnect_backoff_ms / 2, reconnect_backoff_ms);
}

static void fail_busy(void)
{
	for (int i = 0; i < ncollectors; i++)
		if (collectors[i].state == C_SINK_BUSY)
			collector_sink_failed(&collectors[i]);
}

static void reconnect_start(int64_t now)
{
	const char *keys[] = {"dbname", "fallback_application_name", NULL};
	const char *vals[] = {opt.into, "pix-collect", NULL};
	conn = PQconnectStartParams(keys, vals, 1);
	if (conn == NULL || PQstatus(conn) == CONNECTION_BAD) {
		lost(conn ? PQerrorMessage(conn) : "out of memory");
		return;
	}
	state = PG_CONNECTING;
	connect_wants = PGRES_POLLING_WRITING;
	connect_deadline = now + CONNECT_TIMEOUT_MS;
}

static void connect_continue(void)
{
	connect_wants = PQconnectPoll(conn);
	if (connect_wants == PGRES_POLLING_FAILED) {
		lost(PQerrorMessage(conn));
	} else if (connect_wants == PGRES_POLLING_OK) {
		PQsetnonblocking(conn, 0);
		if (!session_setup()) {
			lost("the session could not be set up");
			return;
		}
		logmsg("sink: connected again");
		reconnect_backoff_ms = 0;
		state = PG_READY;
	}
}

/* One write for every batch waiting (and due). */
static void write_waiting(int64_t now)
{
	int n = 0;
	buf_reset(&messages);
	buf_reset(&slots);
	buf_reset(&urls);
	buf_append(&messages, "[", 1);
	buf_append(&slots, "{", 1);
	buf_append(&urls, "{", 1);
	busy_messages = 0;
	for (int i = 0; i < ncollectors; i++) {
		struct collector *c = &collectors[i];
		if (c->state != C_SINK_WAIT || c->due_ms > now)
			continue;
		size_t starts[16], lens[16];
		const char *err;
		int k = c->batch_count ? batch_scan(c->body.data, c->body.len, starts, lens, 10, &err) : 0;
		for (int j = 0; j < k; j++) {
			if (messages.len > 1)
				buf_append(&messages, ",", 1);
			buf_append(&messages, c->body.data + starts[j], lens[j]);
		}
		char s[24];
		int sl = snprintf(s, sizeof s, "%s%d", n ? "," : "", c->slot);
		buf_append(&slots, s, (size_t)sl);
		buf_append(&urls, n ? ",\"" : "\"", n ? 2 : 1);
		buf_append(&urls, c->next, strlen(c->next)); /* checked: letters, digits, / - _ . ~ only */
		buf_append(&urls, "\"", 1);
		busy_messages += k;
		c->state = C_SINK_BUSY;
		n++;
	}
	if (n == 0)
		return;
	buf_append(&messages, "]", 1);
	buf_append(&slots, "}", 1);
	buf_append(&urls, "}", 1);
	if (messages.data == NULL || slots.data == NULL || urls.data == NULL) {
		fail_busy();
		return;
	}
	const char *vals[] = {messages.data, opt.ispb, slots.data, urls.data};
	if (!PQsendQueryPrepared(conn, "pix_collect_write", 4, vals, NULL, NULL, 0)) {
		fail_busy();
		lost(PQerrorMessage(conn));
		return;
	}
	state = PG_BUSY;
	int f = PQflush(conn);
	if (f < 0) {
		fail_busy();
		lost(PQerrorMessage(conn));
		return;
	}
	flushing = f == 1;
}

static void write_done(PGresult *r)
{
	if (PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) == 1) {
		long inserted = atol(PQgetvalue(r, 0, 0));
		stats.messages += (uint64_t)inserted;
		stats.duplicates += (uint64_t)(busy_messages - inserted);
		for (int i = 0; i < ncollectors; i++)
			if (collectors[i].state == C_SINK_BUSY)
				collector_committed(&collectors[i]);
	} else {
		last_error("sink: the write failed, the batches stay in hand: %s", PQresultErrorMessage(r));
		fail_busy();
	}
}

static PGresult *held; /* the write's result, kept until libpq says the command is over */

static void read_results(void)
{
	if (!PQconsumeInput(conn)) {
		PQclear(held);
		held = NULL;
		fail_busy();
		lost(PQerrorMessage(conn));
		return;
	}
	while (!PQisBusy(conn)) {
		PGresult *r = PQgetResult(conn);
		if (r != NULL) {
			if (held == NULL)
				held = r;
			else
				PQclear(r);
			continue;
		}
		state = PG_READY;
		if (held) {
			write_done(held);
			PQclear(held);
			held = NULL;
		} else {
			fail_busy();
		}
		if (conn && PQstatus(conn) == CONNECTION_BAD)
			lost("the connection was lost");
		return;
	}
}

static short revents_of(struct curl_waitfd *fds, int n, int fd)
{
	for (int i = 0; i < n; i++)
		if (fds[i].fd == fd)
			return fds[i].revents;
	return 0;
}

static int pg_fds(struct curl_waitfd *fds, int max)
{
	if (max < 1 || conn == NULL)
		return 0;
	short ev = 0;
	if (state == PG_CONNECTING)
		ev = connect_wants == PGRES_POLLING_READING ? CURL_WAIT_POLLIN : CURL_WAIT_POLLOUT;
	else if (state == PG_BUSY)
		ev = CURL_WAIT_POLLIN | (flushing ? CURL_WAIT_POLLOUT : 0);
	if (ev == 0 || PQsocket(conn) < 0)
		return 0;
	fds[0].fd = PQsocket(conn);
	fds[0].events = ev;
	fds[0].revents = 0;
	return 1;
}

static void pg_step(struct curl_waitfd *fds, int n, int64_t now)
{
	short rev = conn && PQsocket(conn) >= 0 ? revents_of(fds, n, PQsocket(conn)) : 0;
	switch (state) {
	case PG_DOWN:
		if (now >= reconnect_at)
			reconnect_start(now);
		break;
	case PG_CONNECTING:
		if (rev)
			connect_continue();
		else if (now >= connect_deadline)
			lost("connecting timed out");
		break;
	case PG_BUSY:
		if (flushing && (rev & CURL_WAIT_POLLOUT)) {
			int f = PQflush(conn);
			if (f < 0) {
				fail_busy();
				lost(PQerrorMessage(conn));
				return;
			}
			flushing = f == 1;
		}
		if (rev & CURL_WAIT_POLLIN)
			read_results();
		break;
	case PG_READY:
		break;
	}
	if (state == PG_READY && fatal_status < 0)
		write_waiting(now);
}

static bool pg_idle(void)
{
	return state != PG_BUSY;
}

static int64_t pg_next_due(void)
{
	if (state == PG_DOWN)
		return reconnect_at;
	if (state == PG_CONNECTING)
		return connect_deadline;
	int64_t due = INT64_MAX;
	if (state == PG_READY)
		for (int i = 0; i < ncollectors; i++)
			if (collectors[i].state == C_SINK_WAIT && collectors[i].due_ms < due)
				due = collectors[i].due_ms;
	return due;
}

const struct sink sink_pg = {
    .name = "postgresql",
    .open = pg_open,
    .fds = pg_fds,
    .step = pg_step,
    .idle = pg_idle,
    .next_due = pg_next_due,
    .close = pg_close,
    .durable = true,
};
