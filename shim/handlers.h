/*
 * handlers.h — one function per route, called by the router (router.c) once the path
 * and method matched. Each answers the request, now or after its query; the path segments they get
 * point into the request: the ISPB is 8 digits and a stream's id plausible (router.c), the rest
 * (the generator's {number}) is the handler's to check.
 */
#ifndef PIXD_HANDLERS_H
#define PIXD_HANDLERS_H

#include "pixd.h"

/* credential: the request's, in req->pool (respond.h request_authenticate), or NULL. */
/* max_messages: a read's batch size, negotiated from its Accept by the router (1 or 10). */
void handle_stream_start(h2o_req_t *req, h2o_iovec_t ispb, int max_messages,
                         const char *credential);
void handle_stream_next(h2o_req_t *req, h2o_iovec_t ispb, h2o_iovec_t iid, int max_messages,
                        const char *credential);
void handle_stream_stop(h2o_req_t *req, h2o_iovec_t ispb, h2o_iovec_t iid, const char *credential);
void handle_streams_stop_all(h2o_req_t *req, h2o_iovec_t ispb, const char *credential);
void handle_messages_send(h2o_req_t *req, h2o_iovec_t ispb, const char *credential);
void handle_generate(h2o_req_t *req, h2o_iovec_t ispb, h2o_iovec_t number, const char *credential);
void handle_health(h2o_req_t *req);
void handle_metrics(h2o_req_t *req);
void handle_openapi(h2o_req_t *req);

#endif
