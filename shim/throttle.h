/*
 * throttle.h — remembers failed authentications per client address, in a table of fixed size,
 * so that an address that keeps failing is answered after a delay while every other address is
 * answered at once.
 *
 * Pure (the caller gives the time): unit-tested in tests/test_throttle.c. The table never grows:
 * THROTTLE_SLOTS entries, each address probing THROTTLE_PROBE of them; when all are taken the
 * one whose last failure is oldest is forgotten. An attacker who fills the table only makes it
 * forget, never allocate. IPv6 addresses count per /64 (one host usually owns a whole /64).
 */
#ifndef PIXD_THROTTLE_H
#define PIXD_THROTTLE_H

#include <stdint.h>
#include <sys/socket.h>

#define THROTTLE_SLOTS 4096 /* a power of two */
#define THROTTLE_PROBE 8
/* Failures within the window answered at once; beyond that, each is delayed. */
#define THROTTLE_FREE_FAILURES 5
#define THROTTLE_WINDOW_MS 60000

/* Makes the hash unpredictable (random seed): addresses cannot be chosen to collide. */
void throttle_init(uint64_t seed);

/* Records one failure of addr at now_ms; returns 1 when its answer should be delayed. */
int throttle_failure(const struct sockaddr *addr, socklen_t len, uint64_t now_ms);

/* 1 when addr's answers are being delayed (more than THROTTLE_FREE_FAILURES failures within the
 * window), without counting a failure. */
int throttle_is_throttled(const struct sockaddr *addr, socklen_t len, uint64_t now_ms);

/* Number of addresses with a failure within the window (for /metrics). */
int throttle_tracked(uint64_t now_ms);

#endif
