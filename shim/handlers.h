/*
 * handlers.h — one function per route, called by the router (router.c) once the path and method
 * matched. Each answers the request, now or after its query. An /api route's handler gets the
 * route's values (respond.h struct route_values): the ISPB is 8 digits, a stream's id plausible
 * and a read's Accept negotiated (router.c); the rest (the generator's {number}, a send's body) is
 * the handler's to check.
 */
#ifndef PIXD_HANDLERS_H
#define PIXD_HANDLERS_H

#include "pixd.h"
#include "respond.h"

void handle_stream_start(h2o_req_t *req, const struct route_values *v);
void handle_stream_next(h2o_req_t *req, const struct route_values *v);
void handle_stream_stop(h2o_req_t *req, const struct route_values *v);
void handle_streams_stop_all(h2o_req_t *req, const struct route_values *v);
void handle_messages_send(h2o_req_t *req, const struct route_values *v);
void handle_generate(h2o_req_t *req, const struct route_values *v);
void handle_health(h2o_req_t *req);
void handle_metrics(h2o_req_t *req);
void handle_openapi(h2o_req_t *req);

#endif
