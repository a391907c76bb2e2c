/* http.c: the transfers, on libcurl's multi interface. */
#ifndef PIX_COLLECT_HTTP_H
#define PIX_COLLECT_HTTP_H

struct collector;
struct curl_waitfd;

/* a finished transfer: its HTTP status (0 on a transfer error), the CURLcode, a message for it */
typedef void http_done_fn(struct collector *c, long status, int curl_error, const char *error);

int http_init(http_done_fn *on_done);
int http_setup(struct collector *c);
void http_cleanup(void);
void http_get(struct collector *c, const char *path);
void http_delete(struct collector *c, const char *path);
void http_abort(struct collector *c);
void http_wait(struct curl_waitfd *fds, int n, int timeout_ms);
void http_perform(void);

#endif
