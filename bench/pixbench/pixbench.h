/*
 * pixbench.h — an end-to-end load generator for pix stream: collectors over HTTP/1.1 keep-alive
 * (one epoll loop, thousands of connections), producers through libpq, and a ledger that checks
 * the contract while the run goes.
 *
 * Vocabulary (the SPEC's words):
 *   collector   one simulated client process of an ISPB: opens a stream, follows Pull-Next,
 *               confirms each batch by the next call, DELETEs at the end.
 *   tracked     a message this run inserted itself: its endToEndId encodes the run's nonce and an
 *               index into the ledger, so its commit time, receiver and deliveries are known.
 *   untracked   any other message (a backlog made by pix_generate_messages): checked for the ISPB
 *               and for duplicates only.
 *   pending     a batch delivered to a collector and not yet confirmed by its next call.
 *   orphaned    a pending batch whose stream answered 410 (expired) or that the collector walked
 *               away from: the server must deliver it again (a "redelivery", counted apart).
 *   live        a stream is certainly live until idle-timeout after the send time of the last
 *               request that read it (the server cannot have expired it earlier): a message that
 *               reaches a second stream before that moment was held by two live streams, whatever
 *               the first stream answers later.
 *   replay      the same message again to the same stream with the same Pull-Next (a retry of the
 *               id whose answer was lost); anything else to the same stream is a violation.
 *
 * Threads: the main thread runs the epoll loop and owns the ledger's delivery state; producer
 * threads only write commit_ns/ispb of the indexes they insert (atomics), and counters.
 */
#ifndef PIXBENCH_H
#define PIXBENCH_H

#include <stdint.h>
#include <stddef.h>
#include <stdio.h>

#define PB_MAX_PATH 256
#define PB_PAYER_ISPB "99912345" /* not one the generator uses */
#define PB_E2E_LEN 32

/* ---- configuration ------------------------------------------------------------------------ */
enum accept_mode { ACCEPT_MULTIPART, ACCEPT_SINGLE, ACCEPT_MIXED };

struct config {
	char http_host[64];
	int http_port;
	const char *db;       /* libpq conninfo, for producers, backlog and monitoring */
	int ispbs;            /* M */
	long ispb_base;       /* first ISPB number */
	int collectors;       /* C per ISPB, 0..6+ */
	int total_collectors; /* cap on M x C (0 = none) */
	enum accept_mode accept;
	int gzip;
	long preload;  /* tracked messages inserted before the collectors start */
	long backlog;  /* untracked messages generated before the collectors start */
	long messages; /* tracked messages produced during the run (0 = rate x duration) */
	double rate;   /* msgs/s over all producers (0 = as fast as possible) */
	int producers;
	int batch;              /* rows per INSERT */
	double duration_s;      /* producing / running time */
	double drain_timeout_s; /* after producers stop: wait this long for deliveries */
	long stop_after;        /* stop once this many messages (any) were delivered */
	int wait_ms;            /* the server's long-poll wait, for the 204-deadline check */
	int idle_timeout_ms; /* the server's pix.stream_idle_timeout, for the two-live-streams check */
	int ramp_ms;         /* spread the collectors' first requests over this long */
	int stop_wait_ms;    /* at stop, wait this long for in-flight reads before abandoning */
	int restart_every;   /* a collector DELETEs and starts again after N reads (0 = never) */
	int abandon_every;   /* a collector walks away from its stream after N reads (0 = never) */
	int request_timeout_ms;
	double within_ms;  /* report the share of deliveries within this latency */
	double progress_s; /* progress line every N s (0 = never) */
	const char *csv;   /* time series CSV */
	int table_stats;   /* sample pix table sizes and dead tuples */
	int shim_pid, pg_pid;
	const char *label; /* first column of the result line */
	int quiet;
	/* HTTPS (issue 9): verify the server with tls_ca; present tls_cert/tls_key (mutual TLS); send
	 * "Authorization: Bearer token" */
	const char *tls_ca, *tls_cert, *tls_key, *token;
	long send_messages; /* the send scenario (send.c): messages POSTed, then as many INSERTed */
	int send_connections;
};

extern struct config cfg;

/* ---- time --------------------------------------------------------------------------------- */
int64_t now_ns(void);
void sleep_until_ns(int64_t t);
#define MS 1000000LL
#define SEC 1000000000LL

/* ---- ledger (verify.c) -------------------------------------------------------------------- */
enum msg_state { M_NEW = 0, M_PENDING, M_CONFIRMED, M_ORPHANED };

struct ledger_entry {
	int64_t commit_ns;    /* 0 not yet committed, -1 insert failed (producer thread writes) */
	int64_t recv_ns;      /* first delivery */
	int64_t hold_sent_ns; /* send time of the holder's last request that returned it */
	uint32_t holder;      /* collector id << 16 | stream generation, while pending */
	uint32_t pn_hash;     /* the holder's Pull-Next that came with it (a replay repeats it) */
	int32_t ispb_idx;     /* expected receiver (producer writes before the insert) */
	uint8_t state;
	uint8_t deliveries;
};

struct counters {
	long delivered;          /* distinct tracked messages delivered at least once */
	long deliveries;         /* every message copy received (tracked + untracked) */
	long untracked;          /* distinct untracked messages */
	long replays;            /* the same batch again after a retry of the same id */
	long redelivered_expiry; /* a batch orphaned by an expiry/abandon, delivered again */
	long dup_after_confirm;  /* VIOLATION: delivered again after its confirmation */
	long dup_live;           /* VIOLATION: held by two live streams */
	long dup_same;           /* VIOLATION: twice to the same stream, not as a replay */
	long backlog_checked;    /* untracked backlog messages no longer queued at the end */
	long backlog_lost;       /* VIOLATION: of those, never received by a collector */
	long untracked_dups;     /* an untracked message seen twice */
	long wrong_ispb;         /* VIOLATION */
	long foreign;            /* tracked-looking message of another run: reported */
	long bad_body;           /* VIOLATION: unparsable body, wrong shape, > 10 */
	long requests, r200, r204, r400, r404, r406, r410, r429, r503, r5xx, rother;
	long deletes_ok;
	long conn_errors, timeouts;
	long protocol_errors; /* VIOLATION: missing Pull-Next, bad content type, ... */
	long orphaned_now;    /* orphaned batches' messages not yet delivered again */
	long restarts, abandons;
	/* 204 timing: elapsed - wait_ms, in ms */
	long polls_204, polls_204_late, polls_204_early;
};

extern struct ledger_entry *ledger;
extern long ledger_cap;
extern char run_nonce[4];
/* The run's ISPB number idx, and its endToEndId number idx (carrying run_nonce). */
void ispb_format(int idx, char out[9]);
void e2e_format(long idx, char out[PB_E2E_LEN + 1]);
extern struct counters cnt;
extern long tracked_committed; /* atomic: producers */
extern long tracked_failed;    /* atomic */

int ledger_init(long cap);
/* Parses a body and records every message. Returns messages in it, -1 on a malformed body. */
struct delivery {
	int collector, ispb_idx, multipart;
	uint16_t gen;
	int64_t sent_ns, recv_ns; /* the request's send time, the answer's arrival */
	const char *pull_next;    /* of the answer */
};
int ledger_deliver(const struct delivery *d, const char *body, size_t len, uint32_t **pending,
                   int *npending, int *pcap);
/* 1 when a collector received this untracked endToEndId (PB_E2E_LEN characters) */
int ledger_untracked_seen(const char *e2e);
void ledger_confirm(int collector, uint16_t gen, const uint32_t *pending, int n);
void ledger_orphan(int collector, uint16_t gen, const uint32_t *pending, int n);
long ledger_undelivered(long *orphaned, long *unconfirmed);
void violation(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
extern long violations_logged;

/* interval latencies, microseconds, for progress lines */
void interval_latency_add(uint32_t us);
void interval_latency_take(double *p50_ms, double *p99_ms, long *n);

/* ---- producer.c --------------------------------------------------------------------------- */
/* A CPF with valid check digits (not all digits equal), from a seed. */
void cpf_format(unsigned long seed, char out[12]);
int preload_tracked(long n);
int generate_backlog(long n);
long backlog_check(void); /* untracked backlog messages confirmed but never received; -1 error */
int producers_start(void);
void producers_stop(void);
void producers_join(void);
int producers_running_now(void);
extern volatile int producers_running;

/* monitoring through libpq (main thread) */
int monitor_open(void);
int monitor_find_postmaster(void);
int monitor_table_stats(char *out, size_t outlen, int header);
void monitor_close(void);

/* ---- stats.c ------------------------------------------------------------------------------ */
struct proc_sample {
	int64_t t;
	double shim_cpu_s, pg_cpu_s, self_cpu_s;
	long shim_rss_kb;
};
int find_shim_pid(void);
void proc_sample(struct proc_sample *s);
double percentile_u32(uint32_t *v, long n, double p); /* sorts v; returns value */

/* ---- client.c ----------------------------------------------------------------------------- */
struct run_result {
	int64_t t0_ns, first_request_ns, last_delivery_ns, stop_ns, end_ns;
	struct proc_sample start_sample, end_sample;
	long max_shim_rss_kb;
	int drain_timed_out, unfinished, ncollectors;
	uint32_t *poll_us; /* elapsed of every 204 long poll, µs */
	long npoll;
};
extern struct run_result run;
int collectors_run(void);

/* ---- tls.c: the client side of HTTPS, shared by the collectors and the send scenario ------- */
#include <openssl/ssl.h>
/* The client context for cfg.tls_ca (NULL: plain HTTP); exits on a bad file. */
SSL_CTX *tls_client_context(void);
/* "Authorization: Bearer ...\r\n" for cfg.token, or "" */
const char *auth_header(void);

/* ---- send.c ------------------------------------------------------------------------------- */
/* POST /api/pix/{payer}/msgs in batches of cfg.batch, then the same number of messages by INSERT,
 * alternating which goes first; prints the result lines. Returns 0, or 1 when a batch failed. */
int send_run(void);

#endif
