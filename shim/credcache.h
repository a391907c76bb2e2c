/*
 * credcache.h — credentials the database accepted recently ("known-good"), so that pixd can tell
 * a client it has seen authorized from an anonymous one without asking the database.
 *
 * The cache never authorizes anything: every call still carries its credential and the database
 * still judges it (a revoked credential gets PX012 on its next call, which also forgets it here).
 * pixd uses it only to decide how much a request may cost before the database has judged it:
 *   - from an address that keeps failing (throttle.h), a credential not known here is answered 401
 *     without a query, while a known one is served at once (institutions share NATs and proxies);
 *   - a call with a credential not known here may take only a share of --max-queue (database.c),
 *     so a flood of invented tokens cannot make known-good callers' calls 503.
 *
 * Pure (the caller gives the time): unit-tested in tests/test_credcache.c. A fixed table of
 * CREDCACHE_SLOTS entries, each credential probing CREDCACHE_PROBE of them from a seeded hash;
 * when all are taken the entry accepted longest ago is forgotten. Only digests are kept ("token:"
 * or "cert:" + SHA-256 hex, bearer.h), never a token.
 */
#ifndef PIXD_CREDCACHE_H
#define PIXD_CREDCACHE_H

#include <stdint.h>
#include "bearer.h"

#define CREDCACHE_SLOTS 4096 /* a power of two */
#define CREDCACHE_PROBE 8
/* An entry is known-good this long after the database last accepted it. */
#define CREDCACHE_TTL_MS 60000

void credcache_init(uint64_t seed);
/* The database answered a call made with credential (a result, or PX013: known but forbidden). */
void credcache_accept(const char *credential, uint64_t now_ms);
/* The database refused credential (PX012): no longer known-good. */
void credcache_forget(const char *credential);
/* 1 when the database accepted credential within CREDCACHE_TTL_MS before now_ms. */
int credcache_known(const char *credential, uint64_t now_ms);
/* Entries within their TTL (for /metrics). */
int credcache_size(uint64_t now_ms);

#endif
