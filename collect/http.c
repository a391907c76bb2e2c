/*
 * http.c — the transfers, on libcurl's multi interface: one easy handle per collector, reused, so
 * each collector keeps one HTTP/1.1 keep-alive connection (TLS included: the handshake is paid once
 * per connection). gzip is asked for and decoded by libcurl. The headers this program acts on —
 * Pull-Next and Retry-After — are picked from the last response's header block (a 100 Continue
 * or a redirect's headers would come first and are forgotten at each status line).
 */
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <curl/curl.h>

#include "collect.h"
#include "http.h"
#include "state.h"
#include "util.h"

static CURLM *multi;
static http_done_fn *done; /* collector_on_response, given by main.c */
static char errbufs[COLLECT_MAX_COLLECTORS * 2][CURL_ERROR_SIZE];

int http_init(http_done_fn *on_done)
{
	done = on_done;
	if (curl_global_init(CURL_GLOBAL_DEFAULT) != 0)
		return -1;
	multi = curl_multi_init();
	if (multi == NULL)
		return -1;
	/* The connection cache's default size is 4 x the handles added *now*: with every collector's
	 * handle removed while its batch is at the sink, it shrank and closed keep-alive connections
	 * (89 TCP connects for 2 000 batches). One connection per collector, and DELETEs, fit in this. */
	curl_multi_setopt(multi, CURLMOPT_MAXCONNECTS, (long)(2 * COLLECT_MAX_COLLECTORS));
	return 0;
}

void http_cleanup(void)
{
	for (int i = 0; i < ncollectors; i++) {
		struct collector *c = &collectors[i];
		if (c->easy) {
			curl_multi_remove_handle(multi, c->easy);
			curl_easy_cleanup(c->easy);
			c->easy = NULL;
		}
		curl_slist_free_all(c->headers);
		c->headers = NULL;
	}
	curl_multi_cleanup(multi);
	curl_global_cleanup();
}

static size_t on_body(char *p, size_t size, size_t n, void *arg)
{
	struct collector *c = arg;
	size_t len = size * n;
	if (c->body.len + len > COLLECT_BODY_MAX || buf_append(&c->body, p, len) != 0)
		return 0; /* curl fails the transfer (CURLE_WRITE_ERROR): retried like a network error */
	return len;
}

/* The value of a header line "Name: value\r\n" when its name is `name`, trimmed, into out. */
static bool header_value(const char *line, size_t len, const char *name, char *out, size_t outsz)
{
	size_t nl = strlen(name);
	if (len <= nl || strncasecmp(line, name, nl) != 0 || line[nl] != ':')
		return false;
	size_t i = nl + 1;
	while (i < len && (line[i] == ' ' || line[i] == '\t'))
		i++;
	size_t j = len;
	while (j > i && isspace((unsigned char)line[j - 1]))
		j--;
	if (j - i >= outsz)
		j = i + outsz - 1; /* too long to be a valid Pull-Next: refused later by its check */
	memcpy(out, line + i, j - i);
	out[j - i] = '\0';
	return true;
}

static size_t on_header(char *p, size_t size, size_t n, void *arg)
{
	struct collector *c = arg;
	size_t len = size * n;
	char value[COLLECT_PATH_MAX];
	if (len >= 5 && strncmp(p, "HTTP/", 5) == 0) { /* a new response: forget the previous one's */
		c->next[0] = '\0';
		c->retry_after_s = -1;
	} else if (header_value(p, len, "Pull-Next", value, sizeof value)) {
		memcpy(c->next, value, sizeof value);
	} else if (header_value(p, len, "Retry-After", value, sizeof value)) {
		char *end;
		long s = strtol(value, &end, 10);
		c->retry_after_s = (end != value && *end == '\0' && s >= 0) ? (s > 3600 ? 3600 : s) : -1;
	}
	return len;
}

/* A collector's handle with everything that does not change between its requests. */
int http_setup(struct collector *c)
{
	CURL *e = curl_easy_init();
	if (e == NULL)
		return -1;
	c->easy = e;
	curl_easy_setopt(e, CURLOPT_PRIVATE, c);
	curl_easy_setopt(e, CURLOPT_ERRORBUFFER, errbufs[c - collectors]);
	curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, on_body);
	curl_easy_setopt(e, CURLOPT_WRITEDATA, c);
	curl_easy_setopt(e, CURLOPT_HEADERFUNCTION, on_header);
	curl_easy_setopt(e, CURLOPT_HEADERDATA, c);
	curl_easy_setopt(e, CURLOPT_HTTP_VERSION, (long)CURL_HTTP_VERSION_1_1);
	curl_easy_setopt(e, CURLOPT_ACCEPT_ENCODING, "gzip");
	curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(e, CURLOPT_TCP_KEEPALIVE, 1L);
	curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS, 5000L);
	/* above the server's long-poll wait (8 s at most): a read that outlives it is a lost answer */
	curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, opt.timeout_ms);
	curl_easy_setopt(e, CURLOPT_FOLLOWLOCATION, 0L);
	curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "http,https");
	if (opt.cacert)
		curl_easy_setopt(e, CURLOPT_CAINFO, opt.cacert);
	if (opt.cert) {
		curl_easy_setopt(e, CURLOPT_SSLCERT, opt.cert);
		curl_easy_setopt(e, CURLOPT_SSLKEY, opt.key);
	}
	struct curl_slist *h = curl_slist_append(NULL, "Accept: multipart/json");
	if (opt.token) {
		char auth[600];
		snprintf(auth, sizeof auth, "Authorization: Bearer %s", opt.token);
		h = curl_slist_append(h, auth);
	}
	h = curl_slist_append(h, "User-Agent: pix-collect");
	c->headers = h;
	curl_easy_setopt(e, CURLOPT_HTTPHEADER, h);
	return h ? 0 : -1;
}

static void request(struct collector *c, const char *method, const char *path)
{
	char url[1024];
	snprintf(url, sizeof url, "%s%s", opt.origin, path);
	buf_reset(&c->body);
	c->next[0] = '\0';
	c->retry_after_s = -1;
	curl_easy_setopt(c->easy, CURLOPT_URL, url);
	if (strcmp(method, "GET") == 0) {
		curl_easy_setopt(c->easy, CURLOPT_CUSTOMREQUEST, NULL);
		curl_easy_setopt(c->easy, CURLOPT_HTTPGET, 1L);
	} else {
		curl_easy_setopt(c->easy, CURLOPT_CUSTOMREQUEST, method);
	}
	errbufs[c - collectors][0] = '\0';
	curl_multi_add_handle(multi, c->easy);
}

void http_get(struct collector *c, const char *path)
{
	request(c, "GET", path);
}

void http_delete(struct collector *c, const char *path)
{
	request(c, "DELETE", path);
}

/* Drops a transfer in flight (the collector is stopping). Its connection goes with it. */
void http_abort(struct collector *c)
{
	curl_multi_remove_handle(multi, c->easy);
}

void http_wait(struct curl_waitfd *fds, int n, int timeout_ms)
{
	curl_multi_poll(multi, fds, (unsigned)n, timeout_ms, NULL);
}

/* Moves every transfer on and hands each finished one to its collector (the callback of http_init). */
void http_perform(void)
{
	int running, left;
	CURLMsg *m;
	curl_multi_perform(multi, &running);
	while ((m = curl_multi_info_read(multi, &left)) != NULL) {
		if (m->msg != CURLMSG_DONE)
			continue;
		CURL *e = m->easy_handle;
		CURLcode rc = m->data.result;
		struct collector *c = NULL;
		long status = 0;
		curl_easy_getinfo(e, CURLINFO_PRIVATE, (char **)&c);
		curl_easy_getinfo(e, CURLINFO_RESPONSE_CODE, &status);
		curl_multi_remove_handle(multi, e);
		const char *err = errbufs[c - collectors][0] ? errbufs[c - collectors] : curl_easy_strerror(rc);
		done(c, rc == CURLE_OK ? status : 0, rc, err);
	}
}
