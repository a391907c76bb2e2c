/*
 * send.c — the send scenario: institutions send payments through POST /api/pix/{ispb}/msgs,
 * compared with SQL INSERTs of the same messages in the same run.
 *
 * Every side gets the same work: N messages in batches of --batch (one JSON array per request, one
 * multi-row INSERT per statement), each batch one transaction in PostgreSQL. HTTP runs over
 * --send-connections keep-alive connections (blocking, one thread each, optionally TLS and a
 * bearer token); SQL over --producers libpq connections, as plain INSERTs (the baseline)
 * and as SELECT pix_messages_send($1, $2) of the very bodies HTTP posts (what the same function
 * costs without HTTP: the difference is pixd's). Two rounds in the order HTTP, INSERT, function,
 * function, INSERT, HTTP so no side always runs on a warmer (or fuller) database. The messages of
 * one phase differ from the others' only by one character of their endToEndId, which also names the
 * phase, so the end check counts each phase's rows: exactly N stored per phase, nothing twice.
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
#define PHASES 6

enum kind { K_HTTP, K_INSERT, K_FUNCTION, K_N };
static const char *const kind_names[K_N] = {"HTTP POST /msgs       ", "SQL INSERT            ",
                                            "SQL pix_messages_send "};

struct phase {
	char tag; /* the endToEndId character that names the phase */
	enum kind kind;
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
static size_t batch_json(char *body, long b, char tag);
static int sql_batch(PGconn *c, char *buf, long b, const struct phase *ph, long *accepted);
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
		size_t blen = batch_json(body, b, w->phase->tag), hlen;
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

/* One JSON array of batch b's messages into body; returns its length. */
static size_t batch_json(char *body, long b, char tag)
{
	size_t len = 0;

	body[len++] = '[';
	for (long i = 0; i < cfg.batch; i++) {
		if (i)
			body[len++] = ',';
		len += message_json(body + len, b * cfg.batch + i, tag);
	}
	body[len++] = ']';
	body[len] = 0;
	return len;
}

/* Batch b as one multi-row INSERT, or as one pix_messages_send call; 0 when it committed. */
static int sql_batch(PGconn *c, char *buf, long b, const struct phase *ph, long *accepted)
{
	PGresult *r;
	int ok;

	if (ph->kind == K_FUNCTION) {
		const char *params[2] = {PB_PAYER_ISPB, buf};
		batch_json(buf, b, ph->tag);
		r = PQexecParams(c, "SELECT accepted FROM pix_messages_send($1, $2)", 2, NULL, params, NULL,
		                 NULL, 0);
		ok = PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) == 1;
		if (ok)
			*accepted += atol(PQgetvalue(r, 0, 0));
	} else {
		size_t len = sizeof INSERT_HEAD - 1;
		memcpy(buf, INSERT_HEAD, len);
		for (long i = 0; i < cfg.batch; i++) {
			if (i) {
				buf[len++] = ',';
				buf[len++] = ' ';
			}
			len += message_row(buf + len, b * cfg.batch + i, ph->tag);
		}
		buf[len] = 0;
		r = PQexec(c, buf);
		ok = PQresultStatus(r) == PGRES_COMMAND_OK;
		if (ok)
			*accepted += atol(PQcmdTuples(r));
	}
	PQclear(r);
	return ok ? 0 : -1;
}

static void *sql_worker(void *arg)
{
	struct worker *w = arg;
	PGconn *c = PQconnectdb(cfg.db);
	char *buf = malloc(sizeof INSERT_HEAD + (size_t)cfg.batch * (MSG_MAX + 2));
	long b;

	if (PQstatus(c) != CONNECTION_OK || !buf) {
		fprintf(stderr, "pixbench: %s", PQerrorMessage(c));
		w->failures++;
		goto out;
	}
	while ((b = __atomic_fetch_add(&next_batch, 1, __ATOMIC_RELAXED)) < nbatches)
		if (sql_batch(c, buf, b, w->phase, &w->accepted) != 0 && w->failures++ < 3)
			fprintf(stderr, "pixbench: %s batch %ld: %s", kind_names[w->phase->kind], b,
			        PQerrorMessage(c));
out:
	PQfinish(c);
	free(buf);
	return NULL;
}

static void run_phase(struct phase *ph)
{
	int n = ph->kind == K_HTTP ? cfg.send_connections : cfg.producers;
	pthread_t *t = calloc(n, sizeof *t);
	struct worker *w = calloc(n, sizeof *w);
	int64_t t0;

	next_batch = 0;
	t0 = now_ns();
	for (int i = 0; i < n; i++) {
		w[i].phase = ph;
		pthread_create(&t[i], NULL, ph->kind == K_HTTP ? http_worker : sql_worker, &w[i]);
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
	struct phase ph[PHASES] = {{.tag = 'h', .kind = K_HTTP},     {.tag = 's', .kind = K_INSERT},
	                           {.tag = 'f', .kind = K_FUNCTION}, {.tag = 'g', .kind = K_FUNCTION},
	                           {.tag = 't', .kind = K_INSERT},   {.tag = 'i', .kind = K_HTTP}};
	time_t now = time(NULL);
	struct tm tm;
	double rate[K_N] = {0}, secs[K_N] = {0};
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
		rate[ph[p].kind] += n;
		secs[ph[p].kind] += ph[p].seconds;
		printf("  %s round %d: %ld messages in %.3f s = %.0f msgs/s (accepted %ld, duplicates "
		       "%ld, failed batches %ld; %d %s, batch %d)\n",
		       kind_names[ph[p].kind], p < PHASES / 2 ? 1 : 2, n, ph[p].seconds, n / ph[p].seconds,
		       ph[p].accepted, ph[p].duplicates, ph[p].failures,
		       ph[p].kind == K_HTTP ? cfg.send_connections : cfg.producers,
		       ph[p].kind != K_HTTP ? "libpq connections"
		       : cfg.tls_ca         ? "HTTPS connections"
		                            : "HTTP connections",
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
	for (int k = 0; k < K_N; k++)
		rate[k] /= secs[k];
	printf("result: label=%s http_msgs_per_s=%.1f sql_msgs_per_s=%.1f ratio=%.3f "
	       "function_msgs_per_s=%.1f http_vs_function=%.3f messages=%ld batch=%d connections=%d "
	       "producers=%d tls=%d\n",
	       cfg.label, rate[K_HTTP], rate[K_INSERT], rate[K_HTTP] / rate[K_INSERT], rate[K_FUNCTION],
	       rate[K_HTTP] / rate[K_FUNCTION], n, cfg.batch, cfg.send_connections, cfg.producers,
	       cfg.tls_ca != NULL);
	printf("verdict: %s every phase must store its %ld messages exactly once; stored:",
	       fail ? "FAIL" : "PASS", n);
	for (int p = 0; p < PHASES; p++)
		printf(" %ld", stored[p]);
	printf("\n");
	return fail;
}
