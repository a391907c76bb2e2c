/*
 * send.c — the send scenario: institutions send payments through POST /api/pix/{ispb}/msgs,
 * compared with SQL INSERTs of the same messages in the same run.
 *
 * Both sides get the same work: N messages in batches of --batch (one JSON array per request, one
 * multi-row INSERT per statement), each batch one transaction in PostgreSQL. HTTP runs over
 * --send-connections keep-alive connections (blocking, one thread each, optionally TLS and a
 * bearer token); SQL over --producers libpq connections. Two rounds in the order HTTP, SQL, SQL,
 * HTTP so neither side always runs on a warmer (or fuller) database. The messages of one phase
 * differ from the others' only by one character of their endToEndId, which also names the phase,
 * so the end check counts each phase's rows: exactly N stored per phase, nothing twice.
 *
 * The payer is PB_PAYER_ISPB (99912345): with authentication on, the credential must be its.
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>
#include <libpq-fe.h>
#include <openssl/err.h>
#include "pixbench.h"

#define MSG_MAX 700 /* one message, JSON or SQL row */
#define PHASES 4

struct phase {
	char tag;    /* the endToEndId character that names the phase */
	int is_http; /* else SQL */
	double seconds;
	long accepted, duplicates, failures;
};

struct worker {
	struct phase *phase;
	long accepted, duplicates, failures;
};

static char when_e2e[13];     /* yyyyMMddHHmm of the run, in every endToEndId */
static char when_payment[32]; /* dataHoraPagamento of every message */
static long next_batch;       /* atomic: the next batch of the running phase */
static long nbatches;

static void fields(long idx, char tag, char *e2e, char *cpf1, char *cpf2, char *ispb, long *cents);
static size_t message_json(char *out, long idx, char tag);
static size_t message_row(char *out, long idx, char tag);
static void *http_worker(void *arg);
static void *sql_worker(void *arg);
static int http_connect(int *fd, SSL **ssl);
static int http_exchange(int fd, SSL *ssl, const char *req, size_t len, char *resp, size_t cap);
static int io_write(int fd, SSL *ssl, const char *p, size_t n);
static ssize_t io_read(int fd, SSL *ssl, char *p, size_t n);
static void run_phase(struct phase *ph);
static long count_phase(PGconn *db, char tag);

/* The same message for both sides: only the tag (phase) changes the endToEndId. */
static void fields(long idx, char tag, char *e2e, char *cpf1, char *cpf2, char *ispb, long *cents)
{
	long v = idx;

	e2e[0] = 'E';
	memcpy(e2e + 1, PB_PAYER_ISPB, 8);
	memcpy(e2e + 9, when_e2e, 12);
	e2e[21] = tag;
	memcpy(e2e + 22, run_nonce, 3);
	for (int i = 31; i >= 25; i--, v /= 36)
		e2e[i] = "0123456789abcdefghijklmnopqrstuvwxyz"[v % 36];
	e2e[32] = 0;
	cpf_format(idx * 2 + 1, cpf1);
	cpf_format(idx * 2 + 2, cpf2);
	ispb_format((int)(idx % cfg.ispbs), ispb);
	*cents = idx % 99999 + 1;
}

static size_t message_json(char *out, long idx, char tag)
{
	char e2e[33], cpf1[12], cpf2[12], ispb[9];
	long cents;

	fields(idx, tag, e2e, cpf1, cpf2, ispb, &cents);
	return snprintf(out, MSG_MAX,
	                "{\"endToEndId\":\"%s\",\"valor\":%ld.%02ld,\"pagador\":{\"nome\":\"Pagador "
	                "Bench\",\"cpfCnpj\":\"%s\",\"ispb\":\"%s\",\"agencia\":\"0001\","
	                "\"contaTransacional\":\"%ld\",\"tipoConta\":\"CACC\"},\"recebedor\":{\"nome\":"
	                "\"Recebedor Bench José\",\"cpfCnpj\":\"%s\",\"ispb\":\"%s\",\"agencia\":"
	                "\"0361\",\"contaTransacional\":\"%ld\",\"tipoConta\":\"SVGS\"},\"campoLivre\":"
	                "\"\",\"txId\":\"pixbench%ld\",\"dataHoraPagamento\":\"%s\"}",
	                e2e, cents / 100, cents % 100, cpf1, PB_PAYER_ISPB, 1000 + idx % 9000000, cpf2,
	                ispb, 2000 + idx % 9000000, idx, when_payment);
}

static size_t message_row(char *out, long idx, char tag)
{
	char e2e[33], cpf1[12], cpf2[12], ispb[9];
	long cents;

	fields(idx, tag, e2e, cpf1, cpf2, ispb, &cents);
	return snprintf(out, MSG_MAX,
	                "('%s', %ld.%02ld, 'Pagador Bench', '%s', '%s', '0001', '%ld', 'CACC', "
	                "'Recebedor Bench José', '%s', '%s', '0361', '%ld', 'SVGS', '', 'pixbench%ld', "
	                "'%s')",
	                e2e, cents / 100, cents % 100, cpf1, PB_PAYER_ISPB, 1000 + idx % 9000000, cpf2,
	                ispb, 2000 + idx % 9000000, idx, when_payment);
}

static int io_write(int fd, SSL *ssl, const char *p, size_t n)
{
	while (n > 0) {
		ssize_t w = ssl ? SSL_write(ssl, p, (int)n) : send(fd, p, n, MSG_NOSIGNAL);
		if (w <= 0)
			return -1;
		p += w;
		n -= (size_t)w;
	}
	return 0;
}

static ssize_t io_read(int fd, SSL *ssl, char *p, size_t n)
{
	return ssl ? SSL_read(ssl, p, (int)n) : recv(fd, p, n, 0);
}

static int http_connect(int *fd, SSL **ssl)
{
	struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons(cfg.http_port)};
	struct timeval tv = {30, 0};
	int one = 1;
	SSL_CTX *ctx = tls_client_context();

	*ssl = NULL;
	inet_pton(AF_INET, cfg.http_host, &sa.sin_addr);
	if ((*fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0)) < 0)
		return -1;
	setsockopt(*fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
	setsockopt(*fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv); /* every wait is bounded */
	setsockopt(*fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
	if (connect(*fd, (struct sockaddr *)&sa, sizeof sa) < 0)
		return -1;
	if (ctx) {
		*ssl = SSL_new(ctx);
		if (!*ssl || SSL_set_fd(*ssl, *fd) != 1 || SSL_connect(*ssl) != 1) {
			ERR_print_errors_fp(stderr);
			return -1;
		}
	}
	return 0;
}

/* Sends one request and reads its response (Content-Length framed) into resp; returns the status.
 */
static int http_exchange(int fd, SSL *ssl, const char *req, size_t len, char *resp, size_t cap)
{
	size_t have = 0;
	char *end;
	long clen;

	if (io_write(fd, ssl, req, len) < 0)
		return -1;
	for (;;) {
		ssize_t n = io_read(fd, ssl, resp + have, cap - 1 - have);
		if (n <= 0)
			return -1;
		have += (size_t)n;
		resp[have] = 0;
		if ((end = strstr(resp, "\r\n\r\n")) == NULL)
			continue;
		char *cl = strcasestr(resp, "\r\ncontent-length:");
		clen = cl && cl < end ? strtol(cl + 17, NULL, 10) : 0;
		if ((long)(have - (end + 4 - resp)) >= clen)
			break;
		if (have + 1 >= cap)
			return -1;
	}
	return strncmp(resp, "HTTP/1.1 ", 9) == 0 ? atoi(resp + 9) : -1;
}

static void *http_worker(void *arg)
{
	struct worker *w = arg;
	size_t cap = (size_t)cfg.batch * MSG_MAX + 1024;
	char *req = malloc(cap), *body = malloc(cap), resp[4096];
	int fd = -1;
	SSL *ssl = NULL;
	long b;

	if (!req || !body || http_connect(&fd, &ssl) < 0) {
		w->failures++;
		goto out;
	}
	while ((b = __atomic_fetch_add(&next_batch, 1, __ATOMIC_RELAXED)) < nbatches) {
		size_t blen = 0, hlen;
		body[blen++] = '[';
		for (long i = 0; i < cfg.batch; i++) {
			if (i)
				body[blen++] = ',';
			blen += message_json(body + blen, b * cfg.batch + i, w->phase->tag);
		}
		body[blen++] = ']';
		hlen = snprintf(req, 1024,
		                "POST /api/pix/%s/msgs HTTP/1.1\r\nHost: %s:%d\r\n%sContent-Type: "
		                "application/json\r\nContent-Length: %zu\r\n\r\n",
		                PB_PAYER_ISPB, cfg.http_host, cfg.http_port, auth_header(), blen);
		memcpy(req + hlen, body, blen);
		int status = http_exchange(fd, ssl, req, hlen + blen, resp, sizeof resp);
		char *a = strstr(resp, "\"accepted\":"), *d = strstr(resp, "\"duplicates\":");
		if (status != 201 || !a || !d) {
			if (w->failures++ < 3)
				fprintf(stderr, "pixbench: send batch %ld: %.300s\n", b,
				        status < 0 ? "I/O error" : resp);
			if (status < 0)
				break;
			continue;
		}
		w->accepted += strtol(a + 11, NULL, 10);
		w->duplicates += strtol(d + 13, NULL, 10);
	}
out:
	if (ssl)
		SSL_free(ssl);
	if (fd >= 0)
		close(fd);
	free(req);
	free(body);
	return NULL;
}

static const char INSERT_HEAD[] =
    "INSERT INTO pix.message (end_to_end_id, valor, pagador_nome, pagador_cpf_cnpj, pagador_ispb, "
    "pagador_agencia, pagador_conta, pagador_tipo_conta, recebedor_nome, recebedor_cpf_cnpj, "
    "recebedor_ispb, recebedor_agencia, recebedor_conta, recebedor_tipo_conta, campo_livre, tx_id, "
    "data_hora_pagamento) VALUES ";

static void *sql_worker(void *arg)
{
	struct worker *w = arg;
	PGconn *c = PQconnectdb(cfg.db);
	char *sql = malloc(sizeof INSERT_HEAD + (size_t)cfg.batch * (MSG_MAX + 2));
	long b;

	if (PQstatus(c) != CONNECTION_OK || !sql) {
		fprintf(stderr, "pixbench: %s", PQerrorMessage(c));
		w->failures++;
		goto out;
	}
	while ((b = __atomic_fetch_add(&next_batch, 1, __ATOMIC_RELAXED)) < nbatches) {
		size_t len = sizeof INSERT_HEAD - 1;
		memcpy(sql, INSERT_HEAD, len);
		for (long i = 0; i < cfg.batch; i++) {
			if (i) {
				sql[len++] = ',';
				sql[len++] = ' ';
			}
			len += message_row(sql + len, b * cfg.batch + i, w->phase->tag);
		}
		sql[len] = 0;
		PGresult *r = PQexec(c, sql);
		if (PQresultStatus(r) == PGRES_COMMAND_OK)
			w->accepted += atol(PQcmdTuples(r));
		else if (w->failures++ < 3)
			fprintf(stderr, "pixbench: INSERT batch %ld: %s", b, PQerrorMessage(c));
		PQclear(r);
	}
out:
	PQfinish(c);
	free(sql);
	return NULL;
}

static void run_phase(struct phase *ph)
{
	int n = ph->is_http ? cfg.send_connections : cfg.producers;
	pthread_t *t = calloc(n, sizeof *t);
	struct worker *w = calloc(n, sizeof *w);
	int64_t t0;

	next_batch = 0;
	t0 = now_ns();
	for (int i = 0; i < n; i++) {
		w[i].phase = ph;
		pthread_create(&t[i], NULL, ph->is_http ? http_worker : sql_worker, &w[i]);
	}
	for (int i = 0; i < n; i++) {
		pthread_join(t[i], NULL);
		ph->accepted += w[i].accepted;
		ph->duplicates += w[i].duplicates;
		ph->failures += w[i].failures;
	}
	ph->seconds = (now_ns() - t0) / 1e9;
	free(t);
	free(w);
}

static long count_phase(PGconn *db, char tag)
{
	char q[256];
	PGresult *r;
	long n;

	snprintf(q, sizeof q,
	         "SELECT count(*) FROM pix.message WHERE substr(end_to_end_id, 1, 9) = 'E%s' AND "
	         "substr(end_to_end_id, 22, 4) = '%c%s'",
	         PB_PAYER_ISPB, tag, run_nonce);
	r = PQexec(db, q);
	n = PQresultStatus(r) == PGRES_TUPLES_OK ? atol(PQgetvalue(r, 0, 0)) : -1;
	PQclear(r);
	return n;
}

int send_run(void)
{
	struct phase ph[PHASES] = {
	    {.tag = 'h', .is_http = 1}, {.tag = 's'}, {.tag = 't'}, {.tag = 'i', .is_http = 1}};
	time_t now = time(NULL);
	struct tm tm;
	double rate[2] = {0, 0}, secs[2] = {0, 0};
	long stored[PHASES], n = cfg.send_messages - cfg.send_messages % cfg.batch;
	int fail = 0;
	PGconn *db;

	if (!cfg.send_connections)
		cfg.send_connections = 8;
	if (!cfg.producers)
		cfg.producers = 4;
	gmtime_r(&now, &tm);
	strftime(when_e2e, sizeof when_e2e, "%Y%m%d%H%M", &tm);
	strftime(when_payment, sizeof when_payment, "%Y-%m-%dT%H:%M:%S.000Z", &tm);
	nbatches = n / cfg.batch;
	for (int p = 0; p < PHASES; p++) {
		run_phase(&ph[p]);
		rate[ph[p].is_http ? 0 : 1] += n;
		secs[ph[p].is_http ? 0 : 1] += ph[p].seconds;
		printf("  %s round %d: %ld messages in %.3f s = %.0f msgs/s (accepted %ld, duplicates "
		       "%ld, failed batches %ld; %d %s, batch %d)\n",
		       ph[p].is_http ? "HTTP POST /msgs" : "SQL INSERT     ", p == 0 || p == 1 ? 1 : 2, n,
		       ph[p].seconds, n / ph[p].seconds, ph[p].accepted, ph[p].duplicates, ph[p].failures,
		       ph[p].is_http ? cfg.send_connections : cfg.producers,
		       ph[p].is_http ? (cfg.tls_ca ? "HTTPS connections" : "HTTP connections")
		                     : "libpq connections",
		       cfg.batch);
		fflush(stdout);
	}
	db = PQconnectdb(cfg.db);
	for (int p = 0; p < PHASES; p++) {
		stored[p] = count_phase(db, ph[p].tag);
		if (stored[p] != n || ph[p].accepted != n || ph[p].failures || ph[p].duplicates)
			fail = 1;
	}
	PQfinish(db);
	rate[0] /= secs[0];
	rate[1] /= secs[1];
	printf("result: label=%s http_msgs_per_s=%.1f sql_msgs_per_s=%.1f ratio=%.3f messages=%ld "
	       "batch=%d connections=%d producers=%d tls=%d stored=%ld,%ld,%ld,%ld\n",
	       cfg.label, rate[0], rate[1], rate[0] / rate[1], n, cfg.batch, cfg.send_connections,
	       cfg.producers, cfg.tls_ca != NULL, stored[0], stored[1], stored[2], stored[3]);
	if (fail)
		printf("verdict: FAIL a phase did not store exactly its %ld messages (stored %ld, %ld, "
		       "%ld, %ld)\n",
		       n, stored[0], stored[1], stored[2], stored[3]);
	else
		printf("verdict: PASS every phase stored its %ld messages exactly once\n", n);
	return fail;
}
