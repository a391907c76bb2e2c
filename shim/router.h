/*
 * router.h — the router: one h2o handler for every path of the default host, which hands each
 * request to its route's handler (handlers.h) or answers 404/405 itself.
 */
#ifndef PIXD_ROUTER_H
#define PIXD_ROUTER_H

#include <h2o.h>

/* Registers the router for every path of the default host. */
void router_register(h2o_globalconf_t *conf);

#endif
