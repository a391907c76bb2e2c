/*
 * verify.c — the ledger: what the contract promises, checked message by message while the run goes.
 *
 * A tracked message moves NEW -> PENDING(holder) -> CONFIRMED, where holder is the collector and
 * stream generation that received it. A message that reaches a second stream while PENDING (or
 * ORPHANED) in a first one is legal only if the first stream could have expired by then: it was
 * not read for the idle timeout since the send time of the last request that returned the message
 * (the server writes last_read_at after it received that request). Earlier, it was held by two live
 * streams: a violation, whatever the first stream answers later (410 or nothing). Later, it is a
 * redelivery after expiry, and the first stream must then answer 410: a successful call confirming
 * it there is a violation too. The same message to the same stream again is a replay only with the
 * same Pull-Next (the retry of the id whose answer was lost).
 */
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include "pixbench.h"

struct ledger_entry *ledger;
long ledger_cap;
char run_nonce[4];

/* The run's identities: ISPB number idx, and endToEndId number idx carrying the run's nonce. */
void ispb_format(int idx, char out[9])
{
	long v = (cfg.ispb_base + idx) % 100000000L;
	if (v < 0)
		v += 100000000L;
	for (int i = 7; i >= 0; i--, v /= 10)
		out[i] = '0' + v % 10;
	out[8] = 0;
}

void e2e_format(long idx, char out[PB_E2E_LEN + 1])
{
	char when[16];
	time_t now = time(NULL);
	struct tm tm;
	gmtime_r(&now, &tm);
	strftime(when, sizeof when, "%Y%m%d%H%M", &tm);
	out[0] = 'E';
	memcpy(out + 1, PB_PAYER_ISPB, 8);
	memcpy(out + 9, when, 12);
	memcpy(out + 21, run_nonce, 3);
	for (int i = 31; i >= 24; i--) {
		int d = idx % 36;
		out[i] = d < 10 ? '0' + d : 'a' + d - 10;
		idx /= 36;
	}
	out[PB_E2E_LEN] = 0;
}
struct counters cnt;
long tracked_committed, tracked_failed;
long violations_logged;

/* untracked endToEndIds: open addressing on a 64-bit hash (0 = empty) */
static uint64_t *seen;
static size_t seen_cap, seen_len;

static uint32_t *ivl;
static long ivl_len, ivl_cap;

int ledger_init(long cap)
{
	ledger_cap = cap;
	ledger = calloc(cap > 0 ? cap : 1, sizeof *ledger);
	seen_cap = 1 << 16;
	seen = calloc(seen_cap, sizeof *seen);
	return ledger && seen ? 0 : -1;
}

void violation(const char *fmt, ...)
{
	va_list ap;
	if (violations_logged++ >= 20)
		return;
	va_start(ap, fmt);
	fputs("violation: ", stderr);
	vfprintf(stderr, fmt, ap);
	fputc('\n', stderr);
	va_end(ap);
}

static uint64_t hash64(const char *s, size_t n)
{
	uint64_t h = 1469598103934665603ULL;
	for (size_t i = 0; i < n; i++)
		h = (h ^ (unsigned char)s[i]) * 1099511628211ULL;
	return h ? h : 1;
}

/* Returns 1 when h was already present. Bounded: stops recording beyond 64M entries. */
static int seen_insert(uint64_t h)
{
	if (seen_len * 2 >= seen_cap) {
		if (seen_cap >= (1u << 27))
			return 0;
		size_t ncap = seen_cap * 2;
		uint64_t *n = calloc(ncap, sizeof *n);
		if (!n)
			return 0;
		for (size_t i = 0; i < seen_cap; i++)
			if (seen[i]) {
				size_t j = seen[i] & (ncap - 1);
				while (n[j])
					j = (j + 1) & (ncap - 1);
				n[j] = seen[i];
			}
		free(seen);
		seen = n;
		seen_cap = ncap;
	}
	size_t j = h & (seen_cap - 1);
	while (seen[j]) {
		if (seen[j] == h)
			return 1;
		j = (j + 1) & (seen_cap - 1);
	}
	seen[j] = h;
	seen_len++;
	return 0;
}

/* The ledger index of a tracked endToEndId, -1 for an untracked one, -2 for another run's. */
static long tracked_index(const char *e2e)
{
	if (memcmp(e2e + 1, PB_PAYER_ISPB, 8) != 0)
		return -1;
	if (memcmp(e2e + 21, run_nonce, 3) != 0)
		return -2;
	long idx = 0;
	for (int i = 24; i < 32; i++) {
		char c = e2e[i];
		int d = c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'z' ? c - 'a' + 10 : -1;
		if (d < 0)
			return -2;
		idx = idx * 36 + d;
	}
	return idx < ledger_cap ? idx : -2;
}

void interval_latency_add(uint32_t us)
{
	if (ivl_len == ivl_cap) {
		long ncap = ivl_cap ? ivl_cap * 2 : 4096;
		if (ncap > (1L << 24))
			return;
		uint32_t *n = realloc(ivl, ncap * sizeof *n);
		if (!n)
			return;
		ivl = n;
		ivl_cap = ncap;
	}
	ivl[ivl_len++] = us;
}

void interval_latency_take(double *p50_ms, double *p99_ms, long *n)
{
	*n = ivl_len;
	*p50_ms = ivl_len ? percentile_u32(ivl, ivl_len, 0.50) / 1000.0 : 0;
	*p99_ms = ivl_len ? percentile_u32(ivl, ivl_len, 0.99) / 1000.0 : 0;
	ivl_len = 0;
}

static uint32_t hash32(const char *s)
{
	return (uint32_t)hash64(s, strlen(s));
}

/* A second stream got a message the first still held (or walked away from): legal only once the
 * first could have expired. */
static void record_second_holder(long idx, struct ledger_entry *e, uint32_t me, int64_t t)
{
	int64_t live_until = e->hold_sent_ns + (int64_t)cfg.idle_timeout_ms * MS;
	if (t < live_until) {
		cnt.dup_live++;
		violation("message #%ld reached collector %u %.1f ms before the stream of collector %u "
		          "that held it could have expired",
		          idx, me >> 16, (live_until - t) / 1e6, e->holder >> 16);
	} else
		cnt.redelivered_expiry++;
	if (e->state == M_ORPHANED)
		cnt.orphaned_now--;
}

static void record_tracked(long idx, uint32_t me, const struct delivery *d, uint32_t pn)
{
	struct ledger_entry *e = &ledger[idx];
	int ispb_idx = d->ispb_idx;
	int64_t t = d->recv_ns;
	int exp = __atomic_load_n(&e->ispb_idx, __ATOMIC_ACQUIRE);
	if (exp != ispb_idx) {
		cnt.wrong_ispb++;
		violation("message #%ld for ISPB index %d delivered to a stream of ISPB index %d", idx, exp,
		          ispb_idx);
	}
	if (e->deliveries < 255)
		e->deliveries++;
	switch (e->state) {
	case M_NEW: {
		cnt.delivered++;
		e->recv_ns = t;
		int64_t c = __atomic_load_n(&e->commit_ns, __ATOMIC_ACQUIRE);
		interval_latency_add(c > 0 && t > c ? (uint32_t)((t - c) / 1000) : 0);
		break;
	}
	case M_PENDING:
		if (e->holder == me && e->pn_hash == pn) {
			cnt.replays++;
			break;
		}
		if (e->holder == me) {
			cnt.dup_same++;
			violation("message #%ld delivered twice to the stream of collector %u, not as a replay",
			          idx, me >> 16);
		} else
			record_second_holder(idx, e, me, t);
		break;
	case M_CONFIRMED:
		cnt.dup_after_confirm++;
		violation("message #%ld delivered again after its confirmation (collector %u)", idx,
		          me >> 16);
		break;
	case M_ORPHANED:
		record_second_holder(idx, e, me, t);
		break;
	}
	e->state = M_PENDING;
	e->holder = me;
	e->pn_hash = pn;
	e->hold_sent_ns = d->sent_ns; /* a replay read the stream again: it lives on from then */
}

static const char *find(const char *p, const char *end, const char *needle)
{
	size_t n = strlen(needle);
	while (p + n <= end) {
		const char *q = memchr(p, needle[0], end - p);
		if (!q || q + n > end)
			return NULL;
		if (memcmp(q, needle, n) == 0)
			return q;
		p = q + 1;
	}
	return NULL;
}

int ledger_untracked_seen(const char *e2e)
{
	uint64_t h = hash64(e2e, PB_E2E_LEN);
	for (size_t j = h & (seen_cap - 1); seen[j]; j = (j + 1) & (seen_cap - 1))
		if (seen[j] == h)
			return 1;
	return 0;
}

int ledger_deliver(const struct delivery *d, const char *body, size_t len, uint32_t **pending,
                   int *npending, int *pcap)
{
	int multipart = d->multipart, ispb_idx = d->ispb_idx;
	uint32_t pn = hash32(d->pull_next);
	const char *p = body, *end = body + len;
	while (p < end && (*p == ' ' || *p == '\n' || *p == '\r' || *p == '\t'))
		p++;
	if (p == end || *p != (multipart ? '[' : '{'))
		return -1;
	char want[9];
	ispb_format(ispb_idx, want);
	uint32_t me = (uint32_t)d->collector << 16 | d->gen;
	int n = 0;
	static const char K_E2E[] = "\"endToEndId\":\"";
	const char *m = find(p, end, K_E2E);
	while (m) {
		const char *e2e = m + sizeof K_E2E - 1;
		if (e2e + PB_E2E_LEN + 1 > end || e2e[PB_E2E_LEN] != '"')
			return -1;
		const char *next = find(e2e, end, K_E2E);
		const char *lim = next ? next : end;
		const char *r = find(e2e, lim, "\"recebedor\":{");
		const char *ri = r ? find(r, lim, "\"ispb\":\"") : NULL;
		if (!ri || ri + 8 + 8 > lim)
			return -1;
		ri += 8;
		n++;
		cnt.deliveries++;
		if (memcmp(ri, want, 8) != 0) {
			cnt.wrong_ispb++;
			violation("%.32s (recebedor %.8s) delivered on a stream of ISPB %s", e2e, ri, want);
		}
		long idx = tracked_index(e2e);
		if (idx >= 0) {
			record_tracked(idx, me, d, pn);
			if (*npending == *pcap) {
				int ncap = *pcap ? *pcap * 2 : 16;
				uint32_t *np = realloc(*pending, ncap * sizeof *np);
				if (!np)
					return -1;
				*pending = np;
				*pcap = ncap;
			}
			(*pending)[(*npending)++] = (uint32_t)idx;
		} else {
			if (idx == -2)
				cnt.foreign++;
			if (seen_insert(hash64(e2e, PB_E2E_LEN)))
				cnt.untracked_dups++;
			else
				cnt.untracked++;
		}
		m = next;
	}
	if (n == 0 || (!multipart && n != 1) || n > 10)
		return -1;
	return n;
}

void ledger_confirm(int collector, uint16_t gen, const uint32_t *pending, int n)
{
	uint32_t me = (uint32_t)collector << 16 | gen;
	for (int i = 0; i < n; i++) {
		struct ledger_entry *e = &ledger[pending[i]];
		if (e->holder != me) {
			cnt.dup_live++;
			violation("message #%u confirmed by collector %d while another stream (collector %u) "
			          "had received it",
			          pending[i], collector, e->holder >> 16);
			continue;
		}
		e->state = M_CONFIRMED;
	}
}

void ledger_orphan(int collector, uint16_t gen, const uint32_t *pending, int n)
{
	uint32_t me = (uint32_t)collector << 16 | gen;
	for (int i = 0; i < n; i++) {
		struct ledger_entry *e = &ledger[pending[i]];
		if (e->holder != me)
			continue; /* already delivered again: judged then (record_second_holder) */
		if (e->state == M_PENDING) {
			e->state = M_ORPHANED;
			cnt.orphaned_now++;
		}
	}
}

/* Committed tracked messages never delivered; *orphaned requeued and not redelivered;
 * *unconfirmed still pending at the end. */
long ledger_undelivered(long *orphaned, long *unconfirmed)
{
	long lost = 0, o = 0, u = 0, shown = 0;
	for (long i = 0; i < ledger_cap; i++) {
		struct ledger_entry *e = &ledger[i];
		if (e->commit_ns <= 0)
			continue;
		if (e->state == M_NEW) {
			lost++;
			if (shown++ < 5) {
				char e2e[PB_E2E_LEN + 1];
				e2e_format(i, e2e);
				fprintf(stderr, "lost: message #%ld (%.21s...%s) never delivered\n", i, e2e,
				        e2e + 21);
			}
		} else if (e->state == M_ORPHANED)
			o++;
		else if (e->state == M_PENDING)
			u++;
	}
	*orphaned = o;
	*unconfirmed = u;
	return lost;
}
