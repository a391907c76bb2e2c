/*
 * client.c — the collectors: one epoll loop, one keep-alive HTTP/1.1 connection per collector, one
 * request in flight per connection (a collector's next read is what confirms its last batch, so it
 * never pipelines).
 *
 * A collector's life: GET stream/start -> (200: record the batch, GET Pull-Next at once | 204: GET
 * Pull-Next) ... -> DELETE Pull-Next at the end. A 429 waits Retry-After and starts again; a 410
 * orphans the pending batch (the server must deliver it again) and starts again; 503/5xx and lost
 * connections retry the same request (a retry on the same id replays the same batch, by contract).
 *
 * The loop is bounded: every request has a deadline, every collector gives up after 50 errors in a
 * row, and the whole run has a hard deadline.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>
#include <zlib.h>
#include "pixbench.h"

enum conn_state { C_NONE, C_CONNECTING, C_HANDSHAKE, C_SENDING, C_WAITING };
enum phase { P_START, P_READ, P_STOP, P_DONE };

struct collector {
	int id, ispb_idx, fd;
	uint8_t conn, phase, multipart, is_delete, is_start, restarting;
	uint16_t gen;
	int64_t next_at; /* scheduled (re)issue, 0 = none */
	int64_t sent_at, deadline, stop_deadline;
	int64_t first_sent_at; /* of this request's first attempt: retries keep it */
	uint8_t retrying;      /* the next send repeats the last request */
	int reads, errors_in_row;
	int reads_since_abandon; /* not reset by a restart */
	char path[PB_MAX_PATH];
	char wbuf[PB_MAX_PATH + 1024]; /* room for an Authorization header */
	int wlen, woff;
	char *rbuf;
	size_t rlen, rcap;
	uint32_t *pending;
	int npending, pcap;
	SSL *ssl; /* HTTPS (--tls-ca): one TLS session per keep-alive connection */
};

struct response {
	int status;
	size_t header_len, body_len;
	const char *body;
	char content_type[64];
	char pull_next[PB_MAX_PATH];
	int retry_after, conn_close, gzip, chunked;
	long content_length;
};

struct run_result run;

static struct collector *cols;
static int ncols, epfd, stopping;
static SSL_CTX *ssl_ctx;
static uint32_t *poll_us; /* elapsed of each 204 (µs) */
static long npoll, poll_cap;
static char *inflated;
static size_t inflated_cap;

static void issue(struct collector *c);
static void fail_io(struct collector *c, const char *why);
static void handshake(struct collector *c);
static int tls_wants(struct collector *c, int n);
static void flush_write(struct collector *c);

static int alive_collectors(void)
{
	int n = 0;
	for (int i = 0; i < ncols; i++)
		n += cols[i].phase != P_DONE;
	return n;
}

static void close_conn(struct collector *c)
{
	if (c->ssl) {
		SSL_free(c->ssl);
		c->ssl = NULL;
	}
	if (c->fd >= 0) {
		epoll_ctl(epfd, EPOLL_CTL_DEL, c->fd, NULL);
		close(c->fd);
	}
	c->fd = -1;
	c->conn = C_NONE;
	c->rlen = 0;
}

static void watch(struct collector *c, uint32_t events)
{
	struct epoll_event ev = {.events = events, .data.ptr = c};
	epoll_ctl(epfd, EPOLL_CTL_MOD, c->fd, &ev);
}

static int open_conn(struct collector *c)
{
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -1;
	int one = 1;
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
	struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons(cfg.http_port)};
	inet_pton(AF_INET, cfg.http_host, &sa.sin_addr);
	if (connect(fd, (struct sockaddr *)&sa, sizeof sa) < 0 && errno != EINPROGRESS) {
		close(fd);
		return -1;
	}
	c->fd = fd;
	c->conn = C_CONNECTING;
	struct epoll_event ev = {.events = EPOLLOUT, .data.ptr = c};
	if (epoll_ctl(epfd, EPOLL_CTL_ADD, fd, &ev) < 0) {
		close(fd);
		c->fd = -1;
		c->conn = C_NONE;
		return -1;
	}
	return 0;
}

/* After an SSL call returned n <= 0: 1 when it only waits for the socket (now watched), else 0. */
static int tls_wants(struct collector *c, int n)
{
	switch (SSL_get_error(c->ssl, n)) {
	case SSL_ERROR_WANT_READ:
		watch(c, EPOLLIN);
		return 1;
	case SSL_ERROR_WANT_WRITE:
		watch(c, EPOLLOUT);
		return 1;
	default:
		return 0;
	}
}

/* TCP connected: the TLS handshake, driven by the socket's readiness like the rest. */
static void handshake(struct collector *c)
{
	int n;

	if (!c->ssl) {
		c->ssl = SSL_new(ssl_ctx);
		if (!c->ssl || SSL_set_fd(c->ssl, c->fd) != 1) {
			fail_io(c, "SSL_new");
			return;
		}
		SSL_set_connect_state(c->ssl);
		c->conn = C_HANDSHAKE;
	}
	n = SSL_do_handshake(c->ssl);
	if (n == 1) {
		c->conn = C_SENDING;
		flush_write(c);
	} else if (!tls_wants(c, n)) {
		fail_io(c, "TLS handshake");
	}
}

static void flush_write(struct collector *c)
{
	while (c->woff < c->wlen) {
		ssize_t n;
		if (c->ssl) {
			n = SSL_write(c->ssl, c->wbuf + c->woff, c->wlen - c->woff);
			if (n <= 0 && tls_wants(c, (int)n))
				return;
		} else {
			n = send(c->fd, c->wbuf + c->woff, c->wlen - c->woff, MSG_NOSIGNAL);
		}
		if (n < 0 && errno == EAGAIN && !c->ssl) {
			watch(c, EPOLLOUT);
			return;
		}
		if (n <= 0) {
			fail_io(c, "send");
			return;
		}
		c->woff += n;
	}
	c->conn = C_WAITING;
	watch(c, EPOLLIN);
}

/* Sends c->path as a GET (read) or DELETE (stop), over the open connection or a new one. */
static void send_request(struct collector *c, int is_delete)
{
	static const char *accepts[] = {"multipart/json", "application/json"};
	c->is_delete = is_delete;
	c->is_start = !is_delete && strstr(c->path, "/stream/start") != NULL;
	if (is_delete)
		c->wlen = snprintf(c->wbuf, sizeof c->wbuf,
		                   "DELETE %s HTTP/1.1\r\nHost: %s:%d\r\n%sContent-Length: 0\r\n\r\n",
		                   c->path, cfg.http_host, cfg.http_port, auth_header());
	else
		c->wlen = snprintf(
		    c->wbuf, sizeof c->wbuf, "GET %s HTTP/1.1\r\nHost: %s:%d\r\n%sAccept: %s\r\n%s\r\n",
		    c->path, cfg.http_host, cfg.http_port, auth_header(), accepts[c->multipart ? 0 : 1],
		    cfg.gzip ? "Accept-Encoding: gzip\r\n" : "");
	c->woff = 0;
	c->rlen = 0;
	c->sent_at = now_ns();
	if (!c->retrying)
		c->first_sent_at = c->sent_at;
	c->retrying = 0;
	c->deadline = c->sent_at + (int64_t)(cfg.wait_ms + cfg.request_timeout_ms) * MS;
	if (!run.first_request_ns)
		run.first_request_ns = c->sent_at;
	if (c->fd < 0) {
		if (open_conn(c) < 0) {
			fail_io(c, "connect");
			return;
		}
		return; /* written when the connection completes */
	}
	c->conn = C_SENDING;
	flush_write(c);
}

static void schedule(struct collector *c, int64_t delay_ns)
{
	c->next_at = now_ns() + (delay_ns > 0 ? delay_ns : 1);
}

static void start_path(struct collector *c)
{
	char ispb[9];
	ispb_format(c->ispb_idx, ispb);
	snprintf(c->path, sizeof c->path, "/api/pix/%s/stream/start", ispb);
	c->phase = P_START;
	c->reads = 0;
}

/* Network trouble: retry the same request after a backoff; give up after 50 in a row. */
static void fail_io(struct collector *c, const char *why)
{
	(void)why;
	close_conn(c);
	cnt.conn_errors++;
	if (++c->errors_in_row > 50) {
		cnt.protocol_errors++;
		violation("collector %d gave up after 50 failed requests in a row (last: %s %s)", c->id,
		          why, c->path);
		c->phase = P_DONE;
		return;
	}
	int64_t backoff = 10 * MS << (c->errors_in_row < 7 ? c->errors_in_row : 7);
	c->retrying = 1;
	c->next_at = now_ns() + backoff;
	c->conn = C_NONE;
	if (c->is_delete)
		c->phase = P_STOP; /* issue() sends the DELETE again */
}

/* ---- parsing ------------------------------------------------------------------------------ */
static int header_is(const char *line, size_t len, const char *name, const char **value,
                     size_t *vlen)
{
	size_t n = strlen(name);
	if (len <= n || strncasecmp(line, name, n) != 0 || line[n] != ':')
		return 0;
	const char *v = line + n + 1, *e = line + len;
	while (v < e && (*v == ' ' || *v == '\t'))
		v++;
	while (e > v && (e[-1] == ' ' || e[-1] == '\t'))
		e--;
	*value = v;
	*vlen = e - v;
	return 1;
}

/* Decodes a chunked body into a buffer of its own. Returns 1 complete, 0 need more, -1 malformed.
 */
static char *dechunked;
static size_t dechunked_cap;

static int dechunk(const char *p, size_t len, const char **out, size_t *out_len)
{
	size_t r = 0, total = 0;
	for (int pass = 0; pass < 2; pass++) {
		r = 0;
		size_t w = 0;
		for (int guard = 0;; guard++) {
			if (guard > 100000)
				return -1;
			const char *eol = memmem(p + r, len - r, "\r\n", 2);
			if (!eol)
				return 0;
			char *endp;
			unsigned long sz = strtoul(p + r, &endp, 16);
			if (endp == p + r)
				return -1;
			size_t data = (eol - p) + 2;
			if (sz == 0) {
				if (len < data + 2)
					return 0;
				break;
			}
			if (data + sz + 2 > len)
				return 0;
			if (pass == 1)
				memcpy(dechunked + w, p + data, sz);
			w += sz;
			r = data + sz + 2;
		}
		total = w;
		if (pass == 0 && dechunked_cap < total + 1) {
			char *n = realloc(dechunked, total + 1);
			if (!n)
				return -1;
			dechunked = n;
			dechunked_cap = total + 1;
		}
	}
	*out = dechunked;
	*out_len = total;
	return 1;
}

/* Returns 1 when a whole response is in c->rbuf (filled into *res), 0 need more, -1 malformed. */
static int parse_response(struct collector *c, struct response *res, int eof)
{
	char *hend = memmem(c->rbuf, c->rlen, "\r\n\r\n", 4);
	if (!hend)
		return c->rlen > 65536 ? -1 : 0;
	memset(res, 0, sizeof *res);
	res->content_length = -1;
	res->header_len = hend - c->rbuf + 4;
	if (c->rlen < 12 || strncmp(c->rbuf, "HTTP/1.", 7) != 0)
		return -1;
	res->status = atoi(c->rbuf + 9);
	const char *line = (const char *)memchr(c->rbuf, '\n', hend + 2 - c->rbuf) + 1;
	while (line < hend) {
		const char *eol = memmem(line, hend + 2 - line, "\r\n", 2);
		size_t len = eol - line;
		const char *v;
		size_t vl;
		if (header_is(line, len, "Content-Length", &v, &vl))
			res->content_length = strtol(v, NULL, 10);
		else if (header_is(line, len, "Transfer-Encoding", &v, &vl))
			res->chunked = vl >= 7 && strncasecmp(v, "chunked", 7) == 0;
		else if (header_is(line, len, "Pull-Next", &v, &vl) && vl < sizeof res->pull_next) {
			memcpy(res->pull_next, v, vl);
			res->pull_next[vl] = 0;
		} else if (header_is(line, len, "Content-Type", &v, &vl)) {
			vl = vl < sizeof res->content_type - 1 ? vl : sizeof res->content_type - 1;
			memcpy(res->content_type, v, vl);
			res->content_type[vl] = 0;
		} else if (header_is(line, len, "Retry-After", &v, &vl))
			res->retry_after = atoi(v);
		else if (header_is(line, len, "Connection", &v, &vl))
			res->conn_close = vl == 5 && strncasecmp(v, "close", 5) == 0;
		else if (header_is(line, len, "Content-Encoding", &v, &vl))
			res->gzip = vl == 4 && strncasecmp(v, "gzip", 4) == 0;
		line = eol + 2;
	}
	char *body = c->rbuf + res->header_len;
	size_t avail = c->rlen - res->header_len;
	if (res->chunked) {
		int r = dechunk(body, avail, &res->body, &res->body_len);
		return r;
	}
	if (res->status == 204 || res->status == 304 || res->content_length == 0) {
		res->body = body;
		return 1;
	}
	if (res->content_length > 0) {
		if ((long)avail < res->content_length)
			return 0;
		if ((long)avail > res->content_length)
			return -1; /* we never pipeline: extra bytes are a framing error */
		res->body = body;
		res->body_len = res->content_length;
		return 1;
	}
	if (!eof)
		return 0;
	res->body = body; /* delimited by close */
	res->body_len = avail;
	res->conn_close = 1;
	return 1;
}

static int gunzip(const char *in, size_t len, const char **out, size_t *out_len)
{
	z_stream z;
	memset(&z, 0, sizeof z);
	if (inflateInit2(&z, 16 + MAX_WBITS) != Z_OK)
		return -1;
	if (inflated_cap < 65536) {
		char *n = realloc(inflated, 65536);
		if (!n) {
			inflateEnd(&z);
			return -1;
		}
		inflated = n;
		inflated_cap = 65536;
	}
	z.next_in = (Bytef *)in;
	z.avail_in = len;
	size_t w = 0;
	int rc = Z_BUF_ERROR;
	do {
		if (w == inflated_cap) {
			if (inflated_cap >= (64u << 20))
				break;
			char *n = realloc(inflated, inflated_cap * 2);
			if (!n)
				break;
			inflated = n;
			inflated_cap *= 2;
		}
		z.next_out = (Bytef *)inflated + w;
		z.avail_out = inflated_cap - w;
		rc = inflate(&z, Z_NO_FLUSH);
		w = inflated_cap - z.avail_out;
	} while (rc == Z_OK);
	inflateEnd(&z);
	if (rc != Z_STREAM_END)
		return -1;
	*out = inflated;
	*out_len = w;
	return 0;
}

/* ---- the collector's reactions ----------------------------------------------------------- */
static int pull_next_ok(struct collector *c, const struct response *res)
{
	char want[40];
	char ispb[9];
	ispb_format(c->ispb_idx, ispb);
	int n = snprintf(want, sizeof want, "/api/pix/%s/stream/", ispb);
	if (strncmp(res->pull_next, want, n) != 0 || !res->pull_next[n]) {
		cnt.protocol_errors++;
		violation("%s %s -> %d without a valid Pull-Next (got '%s')",
		          c->is_delete ? "DELETE" : "GET", c->path, res->status, res->pull_next);
		return 0;
	}
	return 1;
}

static void record_poll(int64_t elapsed_ns)
{
	long dev_ms = (long)(elapsed_ns / MS) - cfg.wait_ms;
	cnt.polls_204++;
	if (dev_ms > 100)
		cnt.polls_204_late++;
	if (dev_ms < -100)
		cnt.polls_204_early++;
	if (npoll == poll_cap) {
		long ncap = poll_cap ? poll_cap * 2 : 1024;
		if (ncap > (1L << 24))
			return;
		uint32_t *n = realloc(poll_us, ncap * sizeof *n);
		if (!n)
			return;
		poll_us = n;
		poll_cap = ncap;
	}
	poll_us[npoll++] = (uint32_t)(elapsed_ns / 1000);
}

static void show_unexpected(struct collector *c, const struct response *res)
{
	int blen = res->body_len < 200 ? (int)res->body_len : 200;
	violation("%s %s -> %d %.*s", c->is_delete ? "DELETE" : "GET", c->path, res->status, blen,
	          res->body ? res->body : "");
}

static void on_read_response(struct collector *c, struct response *res, int64_t t)
{
	switch (res->status) {
	case 200: {
		cnt.r200++;
		if (strncmp(res->content_type, "application/json", 16) != 0) {
			cnt.protocol_errors++;
			violation("GET %s -> 200 with Content-Type '%s'", c->path, res->content_type);
		}
		if (!pull_next_ok(c, res))
			break;
		const char *body = res->body;
		size_t blen = res->body_len;
		if (res->gzip && !cfg.gzip) {
			cnt.protocol_errors++;
			violation("GET %s -> gzip body without Accept-Encoding: gzip", c->path);
		}
		if (res->gzip && gunzip(res->body, res->body_len, &body, &blen) < 0) {
			cnt.bad_body++;
			violation("GET %s -> undecodable gzip body", c->path);
			break;
		}
		if (!c->is_start)
			ledger_confirm(c->id, c->gen, c->pending, c->npending);
		c->npending = 0;
		struct delivery d = {.collector = c->id,
		                     .ispb_idx = c->ispb_idx,
		                     .multipart = c->multipart,
		                     .gen = c->gen,
		                     .sent_ns = c->first_sent_at,
		                     .recv_ns = t,
		                     .pull_next = res->pull_next};
		int n = ledger_deliver(&d, body, blen, &c->pending, &c->npending, &c->pcap);
		if (n < 0) {
			cnt.bad_body++;
			violation("GET %s (%s) -> 200 with a body of the wrong shape: %.*s", c->path,
			          c->multipart ? "multipart" : "single", (int)(blen < 200 ? blen : 200), body);
		} else
			run.last_delivery_ns = t;
		snprintf(c->path, sizeof c->path, "%s", res->pull_next);
		c->phase = P_READ;
		c->reads++;
		c->reads_since_abandon++;
		break;
	}
	case 204:
		cnt.r204++;
		record_poll(t - c->sent_at);
		if (!pull_next_ok(c, res))
			break;
		if (!c->is_start)
			ledger_confirm(c->id, c->gen, c->pending, c->npending);
		c->npending = 0;
		snprintf(c->path, sizeof c->path, "%s", res->pull_next);
		c->phase = P_READ;
		break;
	case 429:
		cnt.r429++;
		if (!c->is_start) {
			cnt.protocol_errors++;
			show_unexpected(c, res);
		}
		start_path(c);
		schedule(c, (res->retry_after > 0 ? res->retry_after : 1) * SEC);
		return;
	case 410:
		cnt.r410++;
		ledger_orphan(c->id, c->gen, c->pending, c->npending);
		c->npending = 0;
		if (c->is_start) {
			cnt.protocol_errors++;
			show_unexpected(c, res);
			start_path(c);
			schedule(c, 100 * MS);
			return;
		}
		start_path(c);
		break;
	case 503:
		cnt.r503++;
		c->retrying = 1;
		schedule(c, (res->retry_after > 0 ? res->retry_after : 1) * SEC);
		return;
	default:
		if (res->status >= 500)
			cnt.r5xx++;
		else if (res->status == 404)
			cnt.r404++;
		else if (res->status == 400)
			cnt.r400++;
		else if (res->status == 406)
			cnt.r406++;
		else
			cnt.rother++;
		if (res->status >= 500) {
			show_unexpected(c, res);
			c->retrying = 1;
			schedule(c, 200 * MS);
			return;
		}
		cnt.protocol_errors++;
		show_unexpected(c, res);
		ledger_orphan(c->id, c->gen, c->pending, c->npending);
		c->npending = 0;
		start_path(c);
		schedule(c, 100 * MS);
		return;
	}
	issue(c);
}

static void on_delete_response(struct collector *c, struct response *res)
{
	if (res->status == 200) {
		cnt.deletes_ok++;
		const char *b = res->body;
		size_t n = res->body_len;
		while (n && (b[n - 1] == '\n' || b[n - 1] == ' '))
			n--;
		if (res->gzip || n != 2 || memcmp(b, "{}", 2) != 0) {
			cnt.protocol_errors++;
			violation("DELETE %s -> 200 with body '%.*s' (expected {})", c->path, (int)n, b);
		}
		ledger_confirm(c->id, c->gen, c->pending, c->npending);
	} else if (res->status == 410) {
		cnt.r410++;
		ledger_orphan(c->id, c->gen, c->pending, c->npending);
	} else if (res->status >= 500) {
		if (res->status == 503)
			cnt.r503++;
		else {
			cnt.r5xx++;
			show_unexpected(c, res);
		}
		schedule(c, (res->retry_after > 0 ? res->retry_after : 1) * SEC / 5);
		return;
	} else {
		cnt.rother++;
		cnt.protocol_errors++;
		show_unexpected(c, res);
	}
	c->npending = 0;
	if (c->restarting && !stopping) {
		c->restarting = 0;
		cnt.restarts++;
		start_path(c);
		issue(c);
		return;
	}
	c->phase = P_DONE;
	close_conn(c);
}

static void on_response(struct collector *c, struct response *res)
{
	int64_t t = now_ns();
	cnt.requests++;
	c->errors_in_row = 0;
	c->conn = C_NONE; /* until the next request */
	int close_after = res->conn_close;
	if (close_after)
		close_conn(c);
	else {
		c->conn = C_NONE;
		c->rlen = 0;
	}
	if (c->is_delete)
		on_delete_response(c, res);
	else
		on_read_response(c, res, t);
}

/* What a collector does next: read on, restart, walk away, or DELETE when the run stops. */
static void issue(struct collector *c)
{
	c->next_at = 0;
	if (c->phase == P_DONE)
		return;
	if (stopping || c->phase == P_STOP) {
		if (c->phase == P_START) {
			c->phase = P_DONE;
			close_conn(c);
			return;
		}
		c->phase = P_STOP;
		send_request(c, 1);
		return;
	}
	if (c->phase == P_READ && cfg.abandon_every && c->reads_since_abandon >= cfg.abandon_every) {
		c->reads_since_abandon = 0;
		/* a crashed collector: no DELETE; the server expires the stream and requeues its batch */
		cnt.abandons++;
		ledger_orphan(c->id, c->gen, c->pending, c->npending);
		c->npending = 0;
		close_conn(c);
		start_path(c);
	}
	if (c->phase == P_READ && cfg.restart_every && c->reads >= cfg.restart_every) {
		c->restarting = 1;
		c->phase = P_STOP;
		send_request(c, 1);
		return;
	}
	if (c->phase == P_START)
		c->gen++;
	send_request(c, 0);
}

static void on_event(struct collector *c, uint32_t ev)
{
	if (c->conn == C_CONNECTING) {
		int err = 0;
		socklen_t l = sizeof err;
		getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &l);
		if (err || (ev & (EPOLLERR | EPOLLHUP))) {
			fail_io(c, "connect");
			return;
		}
		if (ssl_ctx) {
			handshake(c);
			return;
		}
		c->conn = C_SENDING;
		flush_write(c);
		return;
	}
	if (c->conn == C_HANDSHAKE) {
		handshake(c);
		return;
	}
	if (c->conn == C_SENDING) {
		flush_write(c);
		return;
	}
	/* readable: a response, or the server closing an idle connection */
	for (int guard = 0; guard < 64; guard++) {
		if (c->rcap - c->rlen < 4096) {
			size_t ncap = c->rcap ? c->rcap * 2 : 8192;
			if (ncap > (16u << 20)) {
				fail_io(c, "response too large");
				return;
			}
			char *n = realloc(c->rbuf, ncap);
			if (!n) {
				fail_io(c, "oom");
				return;
			}
			c->rbuf = n;
			c->rcap = ncap;
		}
		ssize_t n;
		if (c->ssl) {
			n = SSL_read(c->ssl, c->rbuf + c->rlen, c->rcap - c->rlen);
			if (n <= 0 && SSL_get_error(c->ssl, (int)n) == SSL_ERROR_WANT_READ)
				break;
		} else {
			n = recv(c->fd, c->rbuf + c->rlen, c->rcap - c->rlen, 0);
			if (n < 0 && errno == EAGAIN)
				break;
		}
		int eof = n <= 0;
		if (n > 0)
			c->rlen += n;
		if (c->conn != C_WAITING) {
			close_conn(c); /* idle keep-alive closed by the server: reconnect on the next request */
			return;
		}
		struct response res;
		int r = parse_response(c, &res, eof);
		if (r == 1) {
			on_response(c, &res);
			return;
		}
		if (r < 0) {
			cnt.protocol_errors++;
			violation("%s %s: malformed HTTP response", c->is_delete ? "DELETE" : "GET", c->path);
			fail_io(c, "malformed response");
			return;
		}
		if (eof) {
			fail_io(c, "connection closed");
			return;
		}
	}
}

/* ---- the run ----------------------------------------------------------------------------- */
static FILE *csv;
static struct proc_sample last_sample;
static long last_delivered, last_requests;

static long delivered_total(void)
{
	return cnt.delivered + cnt.untracked;
}

static void sample_and_report(int64_t t0, int final)
{
	struct proc_sample s;
	proc_sample(&s);
	double dt = (s.t - last_sample.t) / 1e9;
	if (dt <= 0)
		dt = 1e-9;
	long d = delivered_total(), r = cnt.requests;
	double p50, p99;
	long nlat;
	interval_latency_take(&p50, &p99, &nlat);
	double shim_cpu = 100 * (s.shim_cpu_s - last_sample.shim_cpu_s) / dt;
	double pg_cpu = 100 * (s.pg_cpu_s - last_sample.pg_cpu_s) / dt;
	if (s.shim_rss_kb > run.max_shim_rss_kb)
		run.max_shim_rss_kb = s.shim_rss_kb;
	if (cfg.progress_s > 0 && !final && !cfg.quiet)
		fprintf(
		    stderr,
		    "[%6.1fs] committed %ld delivered %ld (%.0f/s) requests %.0f/s p50 %.2f p99 %.2f ms | "
		    "204 %ld 429 %ld 410 %ld 5xx %ld | shim %.0f%% %.1f MB, pg %.0f%% | open %d\n",
		    (s.t - t0) / 1e9, __atomic_load_n(&tracked_committed, __ATOMIC_RELAXED), d,
		    (d - last_delivered) / dt, (r - last_requests) / dt, p50, p99, cnt.r204, cnt.r429,
		    cnt.r410, cnt.r5xx + cnt.r503, shim_cpu, s.shim_rss_kb / 1024.0, pg_cpu,
		    alive_collectors());
	if (csv && !final) {
		char tables[512] = "";
		if (cfg.table_stats)
			monitor_table_stats(tables, sizeof tables, 0);
		fprintf(csv, "%.1f,%ld,%ld,%.1f,%.1f,%.3f,%.3f,%ld,%.1f,%.1f,%ld,%ld,%ld%s\n",
		        (s.t - t0) / 1e9, __atomic_load_n(&tracked_committed, __ATOMIC_RELAXED), d,
		        (d - last_delivered) / dt, (r - last_requests) / dt, p50, p99, nlat, shim_cpu,
		        pg_cpu, s.shim_rss_kb, cnt.r204, cnt.r429, tables);
		fflush(csv);
	}
	last_sample = s;
	last_delivered = d;
	last_requests = r;
}

static int all_tracked_delivered(void)
{
	long committed = __atomic_load_n(&tracked_committed, __ATOMIC_ACQUIRE);
	return cnt.delivered >= committed && cnt.orphaned_now == 0;
}

int collectors_run(void)
{
	int per = cfg.collectors;
	ncols = cfg.ispbs * per;
	if (cfg.total_collectors > 0 && ncols > cfg.total_collectors)
		ncols = cfg.total_collectors;
	cols = calloc(ncols > 0 ? ncols : 1, sizeof *cols);
	epfd = epoll_create1(EPOLL_CLOEXEC);
	ssl_ctx = tls_client_context();
	if (!cols || epfd < 0)
		return -1;
	if (cfg.csv) {
		csv = fopen(cfg.csv, "w");
		if (!csv) {
			perror(cfg.csv);
			return -1;
		}
		char tables[512] = "";
		if (cfg.table_stats)
			monitor_table_stats(tables, sizeof tables, 1);
		fprintf(csv,
		        "t_s,committed,delivered,msgs_per_s,reqs_per_s,p50_ms,p99_ms,latency_samples,"
		        "shim_cpu_pct,pg_cpu_pct,shim_rss_kb,r204,r429%s\n",
		        tables);
	}
	int64_t t0 = now_ns();
	for (int i = 0; i < ncols; i++) {
		struct collector *c = &cols[i];
		c->id = i;
		c->ispb_idx = i / per;
		c->fd = -1;
		c->multipart = cfg.accept == ACCEPT_MULTIPART || (cfg.accept == ACCEPT_MIXED && i % 2 == 0);
		start_path(c);
		c->next_at = t0 + (ncols > 1 ? (int64_t)cfg.ramp_ms * MS * i / ncols : 0) + 1;
	}
	proc_sample(&last_sample);
	run.start_sample = last_sample;
	run.t0_ns = t0;

	int tracked = cfg.preload > 0 || cfg.messages > 0 || cfg.rate > 0;
	int64_t run_end = t0 + (int64_t)(cfg.duration_s * 1e9);
	int64_t producers_done_at = 0, hard_end = 0, next_scan = 0;
	int64_t progress_every = (int64_t)((cfg.progress_s > 0 ? cfg.progress_s : 1.0) * 1e9);
	int64_t next_progress = t0 + progress_every;
	struct epoll_event evs[1024];
	int64_t absolute_end = run_end + (int64_t)((cfg.drain_timeout_s + 120) * 1e9) +
	                       (int64_t)(cfg.stop_wait_ms + cfg.ramp_ms) * MS;

	for (long iter = 0; iter < 2000000000L; iter++) {
		int n = epoll_wait(epfd, evs, 1024, 2);
		for (int i = 0; i < n; i++)
			on_event(evs[i].data.ptr, evs[i].events);
		int64_t t = now_ns();
		if (t >= next_scan) {
			next_scan = t + 2 * MS;
			for (int i = 0; i < ncols; i++) {
				struct collector *c = &cols[i];
				if (c->next_at && t >= c->next_at && c->conn == C_NONE)
					issue(c);
				else if (c->conn != C_NONE && t > c->deadline) {
					cnt.timeouts++;
					fail_io(c, "timeout");
				} else if (stopping && c->stop_deadline && t > c->stop_deadline &&
				           c->conn == C_WAITING && !c->is_delete) {
					/* abandon the long poll, DELETE its id over a new connection */
					c->stop_deadline = 0;
					close_conn(c);
					if (c->is_start)
						c->phase = P_DONE;
					else {
						c->phase = P_STOP;
						send_request(c, 1);
					}
				}
			}
		}
		if (!stopping) {
			int stop = 0;
			if (cfg.stop_after > 0 && delivered_total() >= cfg.stop_after)
				stop = 1;
			else if (tracked) {
				if (!producers_done_at && !producers_running_now())
					producers_done_at = t;
				if (producers_done_at && all_tracked_delivered() && cnt.delivered > 0)
					stop = 1;
				else if (producers_done_at &&
				         t > producers_done_at + (int64_t)(cfg.drain_timeout_s * 1e9))
					stop = 1, run.drain_timed_out = 1;
			} else if (t >= run_end)
				stop = 1;
			if (stop) {
				stopping = 1;
				run.stop_ns = t;
				producers_stop();
				hard_end = t + (int64_t)cfg.stop_wait_ms * MS + 15 * SEC;
				for (int i = 0; i < ncols; i++) {
					struct collector *c = &cols[i];
					if (c->phase == P_DONE)
						continue;
					if (c->conn == C_NONE)
						c->next_at = t + 1;
					else if (!c->is_delete)
						c->stop_deadline = t + (int64_t)cfg.stop_wait_ms * MS;
				}
			}
		}
		if (t >= next_progress) {
			next_progress += progress_every;
			if (cfg.progress_s > 0 || csv)
				sample_and_report(t0, 0);
		}
		if (stopping && (alive_collectors() == 0 || t > hard_end))
			break;
		if (t > absolute_end) {
			fprintf(stderr, "pixbench: hard deadline reached\n");
			run.drain_timed_out = 1;
			break;
		}
	}
	run.end_ns = now_ns();
	run.unfinished = alive_collectors();
	for (int i = 0; i < ncols; i++)
		close_conn(&cols[i]);
	proc_sample(&run.end_sample);
	if (run.end_sample.shim_rss_kb > run.max_shim_rss_kb)
		run.max_shim_rss_kb = run.end_sample.shim_rss_kb;
	run.ncollectors = ncols;
	run.poll_us = poll_us;
	run.npoll = npoll;
	if (csv)
		fclose(csv);
	return 0;
}
