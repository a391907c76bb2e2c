/*
 * producer.c — everything that talks SQL: producers inserting tracked messages (INSERT INTO
 * pix.message, autocommit, the commit time taken when the server acknowledged it), the untracked
 * backlog (pix_generate_messages), and the monitor connection (postmaster pid, table sizes).
 *
 * A tracked message's endToEndId is E + payer ISPB + yyyyMMddHHmm + the run's 3-character nonce +
 * its ledger index in 8 base-36 digits, so a collector finds its ledger entry without a lookup.
 */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <libpq-fe.h>
#include "pixbench.h"

volatile int producers_running;
static pthread_t *threads;
static int nthreads;
static long next_index; /* atomic: next ledger index to produce */
static long produce_limit;
static int64_t produce_t0, produce_end;
static volatile int stop_flag;
static int live_threads; /* atomic */

int producers_running_now(void)
{
	return __atomic_load_n(&live_threads, __ATOMIC_ACQUIRE) > 0;
}

/* A CPF with valid check digits whose digits are not all equal. */
void cpf_format(unsigned long seed, char out[12])
{
	unsigned long base = (seed * 2654435761UL + 123456789UL) % 1000000000UL;
	int d[11];
	for (int i = 8; i >= 0; i--) {
		d[i] = base % 10;
		base /= 10;
	}
	if (d[0] == d[1])
		d[1] = (d[0] + 1) % 10;
	int s = 0;
	for (int i = 0; i < 9; i++)
		s += d[i] * (10 - i);
	d[9] = s * 10 % 11 % 10;
	s = 0;
	for (int i = 0; i < 10; i++)
		s += d[i] * (11 - i);
	d[10] = s * 10 % 11 % 10;
	for (int i = 0; i < 11; i++)
		out[i] = '0' + d[i];
	out[11] = 0;
}

static const char INSERT_HEAD[] =
    "INSERT INTO pix.message (end_to_end_id, valor, pagador_nome, pagador_cpf_cnpj, pagador_ispb, "
    "pagador_agencia, pagador_conta, pagador_tipo_conta, recebedor_nome, recebedor_cpf_cnpj, "
    "recebedor_ispb, recebedor_agencia, recebedor_conta, recebedor_tipo_conta, campo_livre, tx_id, "
    "data_hora_pagamento) VALUES ";

/* Appends one row for ledger index idx; returns the new length. buf has room for 400 bytes. */
static size_t row_format(char *buf, long idx, int ispb_idx, int first)
{
	char e2e[PB_E2E_LEN + 1], ispb[9], cpf1[12], cpf2[12];
	e2e_format(idx, e2e);
	ispb_format(ispb_idx, ispb);
	cpf_format(idx * 2 + 1, cpf1);
	cpf_format(idx * 2 + 2, cpf2);
	long cents = idx % 99999 + 1;
	return snprintf(
	    buf, 400,
	    "%s('%s', %ld.%02ld, 'Pagador Bench', '%s', '%s', '0001', '%ld', 'CACC', "
	    "'Recebedor Bench José', '%s', '%s', '0361', '%ld', 'SVGS', '', 'pixbench%ld', now())",
	    first ? "" : ", ", e2e, cents / 100, cents % 100, cpf1, PB_PAYER_ISPB, 1000 + idx % 9000000,
	    cpf2, ispb, 2000 + idx % 9000000, idx);
}

static PGconn *connect_to(const char *conninfo)
{
	PGconn *c = PQconnectdb(conninfo);
	if (PQstatus(c) != CONNECTION_OK) {
		fprintf(stderr, "pixbench: cannot connect to the database: %s", PQerrorMessage(c));
		PQfinish(c);
		return NULL;
	}
	PQclear(PQexec(c, "SET synchronous_commit = on"));
	return c;
}

static PGconn *connect_db(void)
{
	return connect_to(cfg.db);
}

/* Inserts ledger indexes [from, from+n) in one statement; records their commit time. */
static int insert_range(PGconn *c, char *sql, long from, long n)
{
	size_t len = sizeof INSERT_HEAD - 1;
	memcpy(sql, INSERT_HEAD, len);
	for (long i = 0; i < n; i++) {
		int ispb_idx = (int)((from + i) % cfg.ispbs);
		__atomic_store_n(&ledger[from + i].ispb_idx, ispb_idx, __ATOMIC_RELEASE);
		len += row_format(sql + len, from + i, ispb_idx, i == 0);
	}
	sql[len] = 0;
	PGresult *r = PQexec(c, sql);
	int64_t t = now_ns();
	int ok = PQresultStatus(r) == PGRES_COMMAND_OK;
	if (!ok) {
		static int shown; /* racy between producers; only limits the noise */
		if (shown++ < 3)
			fprintf(stderr, "pixbench: INSERT failed: %s", PQerrorMessage(c));
		if (PQstatus(c) == CONNECTION_BAD)
			PQreset(c); /* the next batch tries a new session; this one counts as failed */
	}
	PQclear(r);
	for (long i = 0; i < n; i++)
		__atomic_store_n(&ledger[from + i].commit_ns, ok ? t : -1, __ATOMIC_RELEASE);
	__atomic_add_fetch(ok ? &tracked_committed : &tracked_failed, n, __ATOMIC_RELAXED);
	return ok ? 0 : -1;
}

/* Tracked messages inserted before the run, 1000 per statement; they take indexes 0..n-1. */
int preload_tracked(long n)
{
	PGconn *c = connect_db();
	if (!c)
		return -1;
	char *sql = malloc(sizeof INSERT_HEAD + 1000 * 400);
	int64_t t0 = now_ns();
	int rc = 0;
	for (long i = 0; i < n && rc == 0; i += 1000)
		rc = insert_range(c, sql, i, n - i < 1000 ? n - i : 1000);
	next_index = n;
	if (!cfg.quiet)
		fprintf(stderr, "pixbench: preloaded %ld tracked messages in %.1f s\n", n,
		        (now_ns() - t0) / 1e9);
	free(sql);
	PQfinish(c);
	return rc;
}

/*
 * The untracked backlog: pix_generate_messages through --db, spread over the ISPBs. Its rows are
 * found again by id: (lo, hi] in each database that holds them, read before and after generating.
 * That is --db itself, or, when --db is a PL/Proxy router (pix_shards() answers), each shard: every
 * shard allocates ids from a range of its own, so each gets its own bounds.
 */
#define PB_MAX_SHARDS 64
static struct backlog_db {
	char conninfo[600];
	long lo, hi;
} backlog_dbs[PB_MAX_SHARDS];
static int n_backlog_dbs;

static void find_backlog_dbs(PGconn *c)
{
	PGresult *r = PQexec(c, "SELECT conninfo FROM pix_shards() ORDER BY shard");
	int n = PQresultStatus(r) == PGRES_TUPLES_OK ? PQntuples(r) : 0;

	n_backlog_dbs = 0;
	for (int i = 0; i < n && i < PB_MAX_SHARDS; i++) {
		const char *shard = PQgetvalue(r, i, 0);
		/* The router stores shards without a user: PL/Proxy connects as the caller, and so do we. */
		snprintf(backlog_dbs[i].conninfo, sizeof backlog_dbs[i].conninfo, "%s%s%s", shard,
		         strstr(shard, "user=") ? "" : " user=", strstr(shard, "user=") ? "" : PQuser(c));
		n_backlog_dbs++;
	}
	PQclear(r);
	if (n_backlog_dbs == 0) {
		snprintf(backlog_dbs[0].conninfo, sizeof backlog_dbs[0].conninfo, "%s", cfg.db);
		n_backlog_dbs = 1;
	}
}

static long max_message_id(const char *conninfo)
{
	PGconn *c = connect_to(conninfo);
	if (!c)
		return -1;
	PGresult *r = PQexec(c, "SELECT coalesce(max(id), 0) FROM pix.message");
	long v = PQresultStatus(r) == PGRES_TUPLES_OK ? atol(PQgetvalue(r, 0, 0)) : -1;
	PQclear(r);
	PQfinish(c);
	return v;
}

/* Reads each database's highest message id into lo (before) or hi (after); -1 if one cannot tell. */
static int read_backlog_bounds(int after)
{
	for (int i = 0; i < n_backlog_dbs; i++) {
		long v = max_message_id(backlog_dbs[i].conninfo);
		if (v < 0)
			return -1;
		*(after ? &backlog_dbs[i].hi : &backlog_dbs[i].lo) = v;
	}
	return 0;
}

int generate_backlog(long n)
{
	PGconn *c = connect_db();
	if (!c)
		return -1;
	find_backlog_dbs(c);
	if (read_backlog_bounds(0) < 0) {
		PQfinish(c);
		return -1;
	}
	int64_t t0 = now_ns();
	long per = n / cfg.ispbs, done = 0;
	for (int k = 0; k < cfg.ispbs && done < n; k++) {
		long left = k == cfg.ispbs - 1 ? n - done : per;
		char ispb[9];
		ispb_format(k, ispb);
		while (left > 0) {
			long chunk = left < 10000 ? left : 10000;
			char q[128];
			snprintf(q, sizeof q, "SELECT pix_generate_messages('%s', %ld)", ispb, chunk);
			PGresult *r = PQexec(c, q);
			if (PQresultStatus(r) != PGRES_TUPLES_OK) {
				fprintf(stderr, "pixbench: %s failed: %s", q, PQresultErrorMessage(r));
				PQclear(r);
				PQfinish(c);
				return -1;
			}
			PQclear(r);
			left -= chunk;
			done += chunk;
		}
	}
	if (!cfg.quiet)
		fprintf(stderr, "pixbench: generated a backlog of %ld untracked messages in %.1f s%s\n", n,
		        (now_ns() - t0) / 1e9, n_backlog_dbs > 1 ? " (through the router)" : "");
	PQfinish(c);
	return read_backlog_bounds(1);
}

/* The backlog messages of one database that are no longer queued and that no collector received. */
static long backlog_check_one(const struct backlog_db *db)
{
	if (db->hi <= db->lo)
		return 0;
	PGconn *c = connect_to(db->conninfo);
	if (!c)
		return -1;
	char q[640];
	snprintf(q, sizeof q,
	         "SELECT m.end_to_end_id FROM pix.message m WHERE m.id > %ld AND m.id <= %ld"
	         " AND m.pagador_ispb <> '%s'"
	         " AND NOT EXISTS (SELECT 1 FROM pix.ready r WHERE r.message_id = m.id)"
	         " AND NOT EXISTS (SELECT 1 FROM pix.stream s WHERE s.state = 'o'"
	         " AND m.id = ANY (s.pending_ids))",
	         db->lo, db->hi, PB_PAYER_ISPB);
	PGresult *r = PQexec(c, q);
	long lost = -1;
	if (PQresultStatus(r) == PGRES_TUPLES_OK) {
		lost = 0;
		for (int i = 0; i < PQntuples(r); i++) {
			const char *e2e = PQgetvalue(r, i, 0);
			cnt.backlog_checked++;
			if (strlen(e2e) == PB_E2E_LEN && ledger_untracked_seen(e2e))
				continue;
			if (lost++ < 5)
				fprintf(stderr, "lost: backlog message %s confirmed, never received\n", e2e);
		}
	} else
		fprintf(stderr, "pixbench: backlog check failed: %s", PQresultErrorMessage(r));
	PQclear(r);
	PQfinish(c);
	return lost;
}

/*
 * The loss check of the untracked backlog: every backlog message that is no longer queued (neither
 * ready nor pending in an open stream) was confirmed, so a collector must have received it.
 * Returns how many were not (and counts the checked ones), -1 when a database cannot tell.
 */
long backlog_check(void)
{
	long lost = 0;

	for (int i = 0; i < n_backlog_dbs; i++) {
		long one = backlog_check_one(&backlog_dbs[i]);
		if (one < 0)
			return -1;
		lost += one;
	}
	return lost;
}

/* One producer: claims the next `batch` indexes, waits for their due time under --rate, inserts. */
static void *producer_main(void *arg)
{
	(void)arg;
	PGconn *c = connect_db();
	if (!c) {
		__atomic_sub_fetch(&live_threads, 1, __ATOMIC_RELEASE);
		return NULL;
	}
	char *sql = malloc(sizeof INSERT_HEAD + (size_t)cfg.batch * 400);
	while (!stop_flag) {
		long k = __atomic_fetch_add(&next_index, cfg.batch, __ATOMIC_RELAXED);
		if (k >= produce_limit)
			break;
		long n = produce_limit - k < cfg.batch ? produce_limit - k : cfg.batch;
		if (cfg.rate > 0) {
			int64_t due = produce_t0 + (int64_t)((k - cfg.preload) * (1e9 / cfg.rate));
			if (due > produce_end)
				break;
			sleep_until_ns(due);
		} else if (now_ns() > produce_end)
			break;
		if (stop_flag)
			break;
		insert_range(c, sql, k, n);
	}
	free(sql);
	PQfinish(c);
	__atomic_sub_fetch(&live_threads, 1, __ATOMIC_RELEASE);
	return NULL;
}

int producers_start(void)
{
	if (cfg.producers <= 0 || (cfg.messages <= 0 && cfg.rate <= 0))
		return 0;
	produce_limit = ledger_cap;
	produce_t0 = now_ns();
	produce_end = produce_t0 + (int64_t)(cfg.duration_s * 1e9);
	threads = calloc(cfg.producers, sizeof *threads);
	producers_running = 1;
	for (nthreads = 0; nthreads < cfg.producers; nthreads++) {
		__atomic_add_fetch(&live_threads, 1, __ATOMIC_RELEASE);
		if (pthread_create(&threads[nthreads], NULL, producer_main, NULL) != 0) {
			__atomic_sub_fetch(&live_threads, 1, __ATOMIC_RELEASE);
			break;
		}
	}
	return nthreads > 0 ? 0 : -1;
}

void producers_stop(void)
{
	stop_flag = 1;
}

void producers_join(void)
{
	for (int i = 0; i < nthreads; i++)
		pthread_join(threads[i], NULL);
	nthreads = 0;
	producers_running = 0;
}

/* ---- monitor ----------------------------------------------------------------------------- */
static PGconn *mon;

int monitor_open(void)
{
	if (!cfg.db)
		return -1;
	mon = connect_db();
	return mon ? 0 : -1;
}

void monitor_close(void)
{
	if (mon)
		PQfinish(mon);
	mon = NULL;
}

/* The postmaster's pid, from postmaster.pid in the data directory (same machine). */
int monitor_find_postmaster(void)
{
	if (!mon)
		return 0;
	PGresult *r = PQexec(mon, "SELECT current_setting('data_directory')");
	int pid = 0;
	if (PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) == 1) {
		char path[1024];
		snprintf(path, sizeof path, "%s/postmaster.pid", PQgetvalue(r, 0, 0));
		FILE *f = fopen(path, "r");
		if (f) {
			if (fscanf(f, "%d", &pid) != 1)
				pid = 0;
			fclose(f);
		}
	}
	PQclear(r);
	return pid;
}

/* One CSV fragment: sizes (bytes) and live/dead tuples of the pix tables. */
int monitor_table_stats(char *out, size_t outlen, int header)
{
	static const char *tables[] = {"message", "ready", "stream", "iteration"};
	if (header) {
		size_t n = 0;
		for (int i = 0; i < 4; i++)
			n += snprintf(out + n, outlen - n, ",%s_bytes,%s_live,%s_dead", tables[i], tables[i],
			              tables[i]);
		return 0;
	}
	out[0] = 0;
	if (!mon)
		return -1;
	PGresult *r = PQexec(
	    mon,
	    "SELECT c.relname, pg_total_relation_size(c.oid), coalesce(s.n_live_tup, 0), "
	    "coalesce(s.n_dead_tup, 0) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
	    "LEFT JOIN pg_stat_user_tables s ON s.relid = c.oid "
	    "WHERE n.nspname = 'pix' AND c.relname IN ('message', 'ready', 'stream', 'iteration')");
	if (PQresultStatus(r) != PGRES_TUPLES_OK) {
		PQclear(r);
		return -1;
	}
	size_t n = 0;
	for (int i = 0; i < 4; i++) {
		const char *sz = "", *live = "", *dead = "";
		for (int j = 0; j < PQntuples(r); j++)
			if (strcmp(PQgetvalue(r, j, 0), tables[i]) == 0) {
				sz = PQgetvalue(r, j, 1);
				live = PQgetvalue(r, j, 2);
				dead = PQgetvalue(r, j, 3);
			}
		n += snprintf(out + n, outlen - n, ",%s,%s,%s", sz, live, dead);
	}
	PQclear(r);
	return 0;
}
