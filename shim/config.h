/*
 * config.h — ground floor: the server's configuration (options and environment) and the contract's
 * fixed sizes. Nothing here depends on any other file of the server.
 *
 * Vocabulary (the same as the extension's): an ISPB is 8 ASCII digits; a read is a GET on
 * stream/start or stream/{interationId}; a parked read is one waiting for a message (long poll).
 */
#ifndef PIXD_CONFIG_H
#define PIXD_CONFIG_H

#define PIXD_ISPB_LEN 8
/* Longest interationId passed to the database; longer ids are answered 404 without a query. */
#define PIXD_IID_MAX 64
/* Longest Pull-Next URI kept for a parked read ("/api/pix/" ISPB "/stream/" id). */
#define PIXD_PULL_NEXT_MAX 128
/* The contract caps the long-poll wait at 8 s. */
#define PIXD_WAIT_MS_MAX 8000
/* multipart/json batches (the extension's PIX_MAX_BATCH). */
#define PIXD_MULTI_BATCH 10
/* Request bodies: POST /api/pix/{ispb}/msgs takes up to 1 000 messages; every other route none. */
#define PIXD_SEND_BODY_MAX (1024 * 1024)

/* The send quota's defaults: ICOM's per-participant token bucket (3 750 tokens, refilled at 750 a
 * second, one token per payment message). */
#define PIXD_SEND_QUOTA 3750
#define PIXD_SEND_REFILL 750

/* --auth: which credentials identify a client (none: 0). */
#define AUTH_TOKEN 1
#define AUTH_MTLS 2

struct pixd_config {
	const char *listen;      /* host:port */
	const char *db_conninfo; /* libpq conninfo; PG* environment variables fill the rest */
	int pool_size;           /* database connections for queries */
	int wait_ms;             /* long-poll wait of a read that finds nothing */
	int max_queue;           /* queries waiting for a free connection */
	int max_parked;          /* reads in progress (querying or parked) */
	int max_connections;     /* open client connections; more wait in the kernel backlog */
	int max_generate;        /* largest {number} of POST /api/util/msgs */
	int query_timeout_ms;    /* a query (or a wait in the queue) longer than this is given up */
	int connect_timeout_ms;  /* a connection attempt longer than this is given up */
	int access_log;          /* one line per request on stderr */
	int auth_modes;          /* AUTH_TOKEN | AUTH_MTLS; 0: --auth none */
	int insecure_open;       /* serve none / plain HTTP on a non-loopback address anyway */
	int no_util;             /* POST /api/util/msgs answers 404 */
	const char *tls_cert;    /* PEM chain: HTTPS when set */
	const char *tls_key;
	const char *client_ca; /* PEM CAs of client certificates (--auth mtls) */
	int durable_reads;     /* stream calls take a transaction id (see database.c) */
	/* What a client costs before it is authenticated (issue 18; event_loop.c, peers.c, router.c). */
	int read_timeout_ms;        /* a request's head and body, or a keep-alive connection's idle time */
	int max_connection_age_s;   /* a connection older than this closes after its current answer */
	int max_connections_per_address; /* per IPv4 address or IPv6 /64 */
	int max_buffered_mb;        /* request bytes buffered before any handler runs, all connections */
	/* Fair shares between institutions: no ISPB can take what the others need. */
	int max_reads_per_ispb; /* reads in progress (querying or parked) of one ISPB */
	int send_quota;         /* messages an ISPB may send at once (bucket size); 0: no quota */
	int send_refill;        /* tokens given back per second */
};

/* The defaults until config_parse; tests and fuzzers may set fields before using the server. */
extern struct pixd_config pixd_config;

/*
 * Reads the environment (PIXD_*), then the command line, which wins. Returns 0, or the exit
 * status the process should end with (2 for a bad option; --help prints and exits 0 itself).
 */
int config_parse(int argc, char **argv);

#endif
