/*
 * problem_filter.h — the answers libh2o 2.2.5 makes by itself (before or instead of the router) are
 * application/problem+json documents like pixd's own (problem_filter.c says which and how).
 */
#ifndef PIXD_PROBLEM_FILTER_H
#define PIXD_PROBLEM_FILTER_H

#include <h2o.h>

/* Registers the output filter on the host's paths and its fallback path (call once the router
 * registered its path on the host). */
void problem_filter_register(h2o_hostconf_t *host);

#endif
