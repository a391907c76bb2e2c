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
 * Group commit: --sink-connections connections (3), one write in flight on each. A batch goes out
 * at once on a free connection; batches that arrive while all are busy are written together by the
 * first to come free (each with its own slot's checkpoint, still one transaction), so six collectors
 * cost fewer commits than batches when the sink is the bottleneck, and none waits for another's
 * commit when it is not. Two writes in flight never share a slot: a collector has one batch at a time.
 *
 * Failures: a lost connection fails the write in flight (whether its COMMIT happened is unknown —
 * it does not matter: the write is idempotent and is simply done again after reconnecting, with
 * backoff, and nothing is confirmed meanwhile). synchronous_commit = off would let a crash of the
 * sink take back a batch already confirmed to the server, so this session sets it on when it is off.
 * An advisory lock per (ISPB, slot), held by the first connection, keeps two pix-collect processes
 * from sharing checkpoints; nothing is written while that connection is down.
 */
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <curl/curl.h>
#include <libpq-fe.h>

#include "collect.h"
#include "multipart.h"
#include "sink.h"
#include "state.h"
#include "stats.h"
#include "util.h"

/* how long a start waits for the slots' locks held by a session that is ending */
#define LOCK_WAIT_MS 15000

static const struct sink_calls *calls; /* given at open */

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

/* One connection of the sink. Writes in flight on different connections are different slots'
 * batches (a collector has one batch at a time), so they never touch the same checkpoint row. */
struct pgc {
	PGconn *conn;
	enum { PG_DOWN, PG_CONNECTING, PG_READY, PG_BUSY } state;
	PostgresPollingStatusType connect_wants;
	int64_t connect_deadline, reconnect_at;
	int reconnect_backoff_ms;
	bool flushing;
	int busy_messages; /* messages in the write in flight */
	PGresult *held;    /* the write's result, kept until libpq says the command is over */
	struct buf messages, slots, urls;
};

static struct pgc pool[COLLECT_MAX_SINK_CONNECTIONS];

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

static bool exec_ok(PGconn *pc, const char *sql, const char *what)
{
	PGresult *r = PQexec(pc, sql);
	bool ok = PQresultStatus(r) == PGRES_COMMAND_OK || PQresultStatus(r) == PGRES_TUPLES_OK;
	if (!ok)
		last_error("sink: %s: %s", what, PQresultErrorMessage(r));
	PQclear(r);
	return ok;
}

/* What every session needs, on a fresh connection (blocking: one round trip each, once). The first
 * connection also holds the slots' advisory locks. */
static bool session_setup(PGconn *pc, bool lock)
{
	PQsetNoticeProcessor(pc, quiet, NULL);
	PGresult *r = PQexec(pc, "SHOW synchronous_commit");
	bool off = PQresultStatus(r) == PGRES_TUPLES_OK && strcmp(PQgetvalue(r, 0, 0), "off") == 0;
	PQclear(r);
	if (off && !exec_ok(pc, "SET synchronous_commit = on", "SET synchronous_commit"))
		return false;
	if (lock) {
		char n[16];
		snprintf(n, sizeof n, "%d", ncollectors);
		const char *vals[] = {opt.ispb, n};
		/* A run killed a moment ago may still hold the locks: its backend lives on until PostgreSQL
		 * notices the dead socket (and finishes what it was running). A restart right after a crash
		 * waits for it, a bounded time; a live pix-collect holds them past that: exit 3. */
		int64_t give_up = now_ms() + LOCK_WAIT_MS;
		bool locked = false, said = false;
		for (;;) {
			r = PQexecParams(pc,
			                 "SELECT bool_and(pg_try_advisory_lock(hashtext('pix-collect ' || $1), s))"
			                 " FROM generate_series(1, $2::int) AS s",
			                 2, NULL, vals, NULL, NULL, 0);
			locked = PQresultStatus(r) == PGRES_TUPLES_OK && strcmp(PQgetvalue(r, 0, 0), "t") == 0;
			bool answered = PQresultStatus(r) == PGRES_TUPLES_OK;
			if (!answered)
				last_error("sink: advisory locks: %s", PQresultErrorMessage(r));
			PQclear(r);
			if (locked || !answered || now_ms() >= give_up)
				break;
			/* the slots this try did get are let go: the next try takes them all or none */
			PQclear(PQexec(pc, "SELECT pg_advisory_unlock_all()"));
			if (!said)
				logmsg("the slots of ISPB %s are locked (a previous run's session ending?): waiting up to %d s",
				       opt.ispb, LOCK_WAIT_MS / 1000);
			said = true;
			poll(NULL, 0, 200);
		}
		if (!locked) {
			calls->stop_with(EXIT_SINK,
			             "another pix-collect is collecting ISPB %s into this database (its slots are locked)",
			             opt.ispb);
			return false;
		}
		if (said)
			logmsg("the slots of ISPB %s are free: starting", opt.ispb);
	}
	r = PQprepare(pc, "pix_collect_write", write_sql, 0, NULL);
	bool ok = PQresultStatus(r) == PGRES_COMMAND_OK;
	if (!ok)
		last_error("sink: preparing the write: %s", PQresultErrorMessage(r));
	PQclear(r);
	return ok && PQsetnonblocking(pc, 1) == 0;
}

/* The checkpoints of this ISPB: each collector resumes from its slot's. A slot beyond
 * --collectors (a previous run had more) gets a collector that only closes its stream. */
static bool load_checkpoints(PGconn *pc)
{
	const char *vals[] = {opt.ispb};
	PGresult *r = PQexecParams(pc,
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

/* Start-up, blocking: every connection of the pool, the database and tables, the checkpoints. */
static int pg_open(const struct sink_calls *c)
{
	calls = c;
	PGconn *pc = connect_to(NULL);
	if (PQstatus(pc) != CONNECTION_OK && strstr(PQerrorMessage(pc), "does not exist") &&
	    strstr(PQerrorMessage(pc), "database")) {
		PQfinish(pc);
		if (create_database() != 0)
			return -1;
		pc = connect_to(NULL);
	}
	if (PQstatus(pc) != CONNECTION_OK) {
		logmsg("the sink is unreachable: %s", PQerrorMessage(pc));
		PQfinish(pc);
		return -1;
	}
	PQsetNoticeProcessor(pc, quiet, NULL);
	PGresult *r = PQexec(pc, schema_sql);
	if (PQresultStatus(r) != PGRES_COMMAND_OK) {
		logmsg("sink: creating the tables: %s", PQresultErrorMessage(r));
		PQclear(r);
		PQfinish(pc);
		return -1;
	}
	PQclear(r);
	pool[0].conn = pc;
	if (!load_checkpoints(pc) || !session_setup(pc, true))
		return -1;
	pool[0].state = PG_READY;
	for (int k = 1; k < opt.sink_connections; k++) {
		pool[k].conn = connect_to(NULL);
		if (PQstatus(pool[k].conn) != CONNECTION_OK || !session_setup(pool[k].conn, false)) {
			logmsg("the sink is unreachable: %s", PQerrorMessage(pool[k].conn));
			return -1;
		}
		pool[k].state = PG_READY;
	}
	return 0;
}

static void pg_close(void)
{
	for (int k = 0; k < opt.sink_connections; k++) {
		PQfinish(pool[k].conn);
		pool[k].conn = NULL;
		buf_free(&pool[k].messages);
		buf_free(&pool[k].slots);
		buf_free(&pool[k].urls);
	}
}

static void fail_busy(struct pgc *p)
{
	for (int i = 0; i < ncollectors; i++)
		if (collectors[i].state == C_SINK_BUSY && collectors[i].sink_conn == p - pool)
			calls->failed(&collectors[i]);
}

/* The connection is gone: what it was writing stays in hand (whether its COMMIT happened is
 * unknown, and does not matter: the write is idempotent), reconnect after a backoff. */
static void lost(struct pgc *p, const char *why)
{
	last_error("sink: %s", why);
	PQclear(p->held);
	p->held = NULL;
	PQfinish(p->conn);
	p->conn = NULL;
	p->state = PG_DOWN;
	p->flushing = false;
	fail_busy(p);
	p->reconnect_backoff_ms = p->reconnect_backoff_ms ? p->reconnect_backoff_ms * 2 : 100;
	if (p->reconnect_backoff_ms > 2000)
		p->reconnect_backoff_ms = 2000;
	p->reconnect_at = now_ms() + jitter(p->reconnect_backoff_ms / 2, p->reconnect_backoff_ms);
}

static void reconnect_start(struct pgc *p, int64_t now)
{
	const char *keys[] = {"dbname", "fallback_application_name", NULL};
	const char *vals[] = {opt.into, "pix-collect", NULL};
	p->conn = PQconnectStartParams(keys, vals, 1);
	if (p->conn == NULL || PQstatus(p->conn) == CONNECTION_BAD) {
		lost(p, p->conn ? PQerrorMessage(p->conn) : "out of memory");
		return;
	}
	p->state = PG_CONNECTING;
	p->connect_wants = PGRES_POLLING_WRITING;
	p->connect_deadline = now + CONNECT_TIMEOUT_MS;
}

static void connect_continue(struct pgc *p)
{
	p->connect_wants = PQconnectPoll(p->conn);
	if (p->connect_wants == PGRES_POLLING_FAILED) {
		lost(p, PQerrorMessage(p->conn));
	} else if (p->connect_wants == PGRES_POLLING_OK) {
		PQsetnonblocking(p->conn, 0);
		if (!session_setup(p->conn, p == pool)) {
			lost(p, "the session could not be set up");
			return;
		}
		if (p == pool)
			logmsg("sink: connected again");
		p->reconnect_backoff_ms = 0;
		p->state = PG_READY;
	}
}

/* One write for every batch waiting (and due), on connection p. */
static void write_waiting(struct pgc *p, int64_t now)
{
	int n = 0;
	buf_reset(&p->messages);
	buf_reset(&p->slots);
	buf_reset(&p->urls);
	buf_append(&p->messages, "[", 1);
	buf_append(&p->slots, "{", 1);
	buf_append(&p->urls, "{", 1);
	p->busy_messages = 0;
	for (int i = 0; i < ncollectors; i++) {
		struct collector *c = &collectors[i];
		if (c->state != C_SINK_WAIT || c->due_ms > now)
			continue;
		size_t starts[16], lens[16];
		const char *err;
		int k = c->batch_count ? batch_scan(c->body.data, c->body.len, starts, lens, 10, &err) : 0;
		for (int j = 0; j < k; j++) {
			if (p->messages.len > 1)
				buf_append(&p->messages, ",", 1);
			buf_append(&p->messages, c->body.data + starts[j], lens[j]);
		}
		char s[24];
		int sl = snprintf(s, sizeof s, "%s%d", n ? "," : "", c->slot);
		buf_append(&p->slots, s, (size_t)sl);
		buf_append(&p->urls, n ? ",\"" : "\"", n ? 2 : 1);
		buf_append(&p->urls, c->next, strlen(c->next)); /* checked: letters, digits, / - _ . ~ only */
		buf_append(&p->urls, "\"", 1);
		p->busy_messages += k;
		c->state = C_SINK_BUSY;
		c->sink_conn = (int)(p - pool);
		n++;
	}
	if (n == 0)
		return;
	buf_append(&p->messages, "]", 1);
	buf_append(&p->slots, "}", 1);
	buf_append(&p->urls, "}", 1);
	if (p->messages.data == NULL || p->slots.data == NULL || p->urls.data == NULL) {
		fail_busy(p);
		return;
	}
	const char *vals[] = {p->messages.data, opt.ispb, p->slots.data, p->urls.data};
	if (!PQsendQueryPrepared(p->conn, "pix_collect_write", 4, vals, NULL, NULL, 0)) {
		lost(p, PQerrorMessage(p->conn));
		return;
	}
	p->state = PG_BUSY;
	int f = PQflush(p->conn);
	if (f < 0) {
		lost(p, PQerrorMessage(p->conn));
		return;
	}
	p->flushing = f == 1;
}

static void write_done(struct pgc *p, PGresult *r)
{
	if (PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) == 1) {
		long inserted = atol(PQgetvalue(r, 0, 0));
		stats.messages += (uint64_t)inserted;
		stats.duplicates += (uint64_t)(p->busy_messages - inserted);
		for (int i = 0; i < ncollectors; i++)
			if (collectors[i].state == C_SINK_BUSY && collectors[i].sink_conn == p - pool)
				calls->committed(&collectors[i]);
	} else {
		last_error("sink: the write failed, the batches stay in hand: %s", PQresultErrorMessage(r));
		fail_busy(p);
	}
}

static void read_results(struct pgc *p)
{
	if (!PQconsumeInput(p->conn)) {
		lost(p, PQerrorMessage(p->conn));
		return;
	}
	while (!PQisBusy(p->conn)) {
		PGresult *r = PQgetResult(p->conn);
		if (r != NULL) {
			if (p->held == NULL)
				p->held = r;
			else
				PQclear(r);
			continue;
		}
		p->state = PG_READY;
		PGresult *held = p->held;
		p->held = NULL;
		if (held) {
			write_done(p, held);
			PQclear(held);
		} else {
			fail_busy(p);
		}
		if (PQstatus(p->conn) == CONNECTION_BAD)
			lost(p, "the connection was lost");
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
	int n = 0;
	for (int k = 0; k < opt.sink_connections && n < max; k++) {
		struct pgc *p = &pool[k];
		short ev = 0;
		if (p->conn == NULL || PQsocket(p->conn) < 0)
			continue;
		if (p->state == PG_CONNECTING)
			ev = p->connect_wants == PGRES_POLLING_READING ? CURL_WAIT_POLLIN : CURL_WAIT_POLLOUT;
		else if (p->state == PG_BUSY)
			ev = CURL_WAIT_POLLIN | (p->flushing ? CURL_WAIT_POLLOUT : 0);
		if (ev == 0)
			continue;
		fds[n].fd = PQsocket(p->conn);
		fds[n].events = ev;
		fds[n].revents = 0;
		n++;
	}
	return n;
}

static void step_one(struct pgc *p, struct curl_waitfd *fds, int n, int64_t now)
{
	short rev = p->conn && PQsocket(p->conn) >= 0 ? revents_of(fds, n, PQsocket(p->conn)) : 0;
	switch (p->state) {
	case PG_DOWN:
		if (now >= p->reconnect_at)
			reconnect_start(p, now);
		break;
	case PG_CONNECTING:
		if (rev)
			connect_continue(p);
		else if (now >= p->connect_deadline)
			lost(p, "connecting timed out");
		break;
	case PG_BUSY:
		if (p->flushing && (rev & CURL_WAIT_POLLOUT)) {
			int f = PQflush(p->conn);
			if (f < 0) {
				lost(p, PQerrorMessage(p->conn));
				return;
			}
			p->flushing = f == 1;
		}
		if (rev & CURL_WAIT_POLLIN)
			read_results(p);
		break;
	case PG_READY:
		break;
	}
}

static void pg_step(struct curl_waitfd *fds, int n, int64_t now)
{
	for (int k = 0; k < opt.sink_connections; k++)
		step_one(&pool[k], fds, n, now);
	/* the slot locks live on connection 0: no write before it holds them again */
	if (pool[0].state == PG_DOWN || pool[0].state == PG_CONNECTING || fatal_status >= 0)
		return;
	for (int k = 0; k < opt.sink_connections; k++)
		if (pool[k].state == PG_READY)
			write_waiting(&pool[k], now);
}

static bool pg_idle(void)
{
	for (int k = 0; k < opt.sink_connections; k++)
		if (pool[k].state == PG_BUSY)
			return false;
	return true;
}

static bool pg_available(void)
{
	return pool[0].state == PG_READY || pool[0].state == PG_BUSY;
}

static int64_t pg_next_due(void)
{
	int64_t due = INT64_MAX;
	bool ready = false;
	for (int k = 0; k < opt.sink_connections; k++) {
		struct pgc *p = &pool[k];
		if (p->state == PG_DOWN && p->reconnect_at < due)
			due = p->reconnect_at;
		if (p->state == PG_CONNECTING && p->connect_deadline < due)
			due = p->connect_deadline;
		ready |= p->state == PG_READY;
	}
	if (ready)
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
    .available = pg_available,
    .next_due = pg_next_due,
    .close = pg_close,
    .durable = true,
};
