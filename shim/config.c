/*
 * config.c — the options: defaults, the environment (PIXD_LISTEN, PIXD_DB, ...), the command line.
 *
 * Every option also reads an environment variable; the command line wins. The database connection
 * string is libpq's, so PGHOST, PGPORT, PGUSER, PGDATABASE etc. fill in whatever --db leaves out.
 */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <libpq-fe.h>
#include "config.h"

struct pixd_config pixd_config = {
    .listen = "127.0.0.1:3000",
    .db_conninfo = "",
    .pool_size = 4,
    .wait_ms = PIXD_WAIT_MS_MAX,
    .max_queue = -1, /* until set: QUEUE_FOR_PARKED more than --max-parked */
    .max_parked = 10000,
    .max_connections = 10000,
    .max_generate = 10000,
    .query_timeout_ms = 10000,
    .connect_timeout_ms = 5000,
    .access_log = 1,
    .read_timeout_ms = 10000,
    .max_connection_age_s = 3600,
    .max_connections_per_address = 64,
    .max_buffered_mb = 64,
    /* fair shares between institutions (see config.h) */
    .max_reads_per_ispb = 24,
    .send_quota = -1, /* until set: PIXD_SEND_QUOTA with authentication, 0 (off) without */
    .send_refill = PIXD_SEND_REFILL,
};

/*
 * The default queue holds a query for every read that may be in progress (--max-parked), plus room
 * for the other routes and the server's own calls: a burst of reads waits for a connection instead
 * of being refused while the database keeps up.
 */
#define QUEUE_FOR_OTHERS 1024

/* Integer options: name, environment variable, field, bounds. */
struct int_option {
	const char *name;
	const char *env;
	int *value;
	int min, max;
};

static void usage(FILE *out);
static int parse_int(const struct int_option *o, const char *text);
static int read_environment(const struct int_option *opts, size_t n);
static int parse_arguments(int argc, char **argv, const struct int_option *opts, size_t n);
static int check_conninfo(const char *conninfo);
static int parse_auth(const char *text);
static int set_string(int opt, const char *value);

static const struct int_option int_options[] = {
    {"pool", "PIXD_POOL", &pixd_config.pool_size, 1, 64},
    {"wait-ms", "PIXD_WAIT_MS", &pixd_config.wait_ms, 0, PIXD_WAIT_MS_MAX},
    {"max-queue", "PIXD_MAX_QUEUE", &pixd_config.max_queue, 0, 1000000},
    {"max-parked", "PIXD_MAX_PARKED", &pixd_config.max_parked, 1, 1000000},
    {"max-generate", "PIXD_MAX_GENERATE", &pixd_config.max_generate, 1, 100000000},
    {"max-connections", "PIXD_MAX_CONNECTIONS", &pixd_config.max_connections, 1, 1000000},
    {"query-timeout-ms", "PIXD_QUERY_TIMEOUT_MS", &pixd_config.query_timeout_ms, 100, 600000},
    {"connect-timeout-ms", "PIXD_CONNECT_TIMEOUT_MS", &pixd_config.connect_timeout_ms, 100, 600000},
    {"read-timeout-ms", "PIXD_READ_TIMEOUT_MS", &pixd_config.read_timeout_ms, 100, 600000},
    {"max-connection-age-s", "PIXD_MAX_CONNECTION_AGE_S", &pixd_config.max_connection_age_s, 1,
     86400},
    {"max-connections-per-address", "PIXD_MAX_CONNECTIONS_PER_ADDRESS",
     &pixd_config.max_connections_per_address, 1, 1000000},
    {"max-buffered-mb", "PIXD_MAX_BUFFERED_MB", &pixd_config.max_buffered_mb, 1, 65536},
    {"max-reads-per-ispb", "PIXD_MAX_READS_PER_ISPB", &pixd_config.max_reads_per_ispb, 1, 1000000},
    {"send-quota", "PIXD_SEND_QUOTA", &pixd_config.send_quota, 0, 100000000},
    {"send-refill", "PIXD_SEND_REFILL", &pixd_config.send_refill, 1, 100000000},
};
#define N_INT_OPTIONS (sizeof(int_options) / sizeof(int_options[0]))

static void usage(FILE *out)
{
	fprintf(
	    out,
	    "usage: pixd [options]        (each option also reads the environment variable shown)\n"
	    "  --listen HOST:PORT         HTTP address (default 127.0.0.1:3000)      PIXD_LISTEN\n"
	    "  --db CONNINFO              libpq connection string; PG* variables fill in the\n"
	    "                             rest (default empty)                       PIXD_DB\n"
	    "  --pool N                   query connections (default 4)              PIXD_POOL\n"
	    "  --wait-ms N                long-poll wait of an empty read, 0..8000\n"
	    "                             (default 8000)                             PIXD_WAIT_MS\n"
	    "  --max-queue N              queries waiting for a connection; beyond\n"
	    "                             that 503 (default --max-parked + 1024)     PIXD_MAX_QUEUE\n"
	    "  --max-parked N             reads in progress, querying or waiting;\n"
	    "                             beyond that 503 (default 10000)            PIXD_MAX_PARKED\n"
	    "  --max-connections N        open client connections (default 10000)\n"
	    "                                                        PIXD_MAX_CONNECTIONS\n"
	    "  --max-generate N           largest {number} of POST /api/util/msgs;\n"
	    "                             keep it equal to the GUC pix.max_generate\n"
	    "                             (default 10000)                            "
	    "PIXD_MAX_GENERATE\n"
	    "  --query-timeout-ms N       give up a query and reset its connection\n"
	    "                             (default 10000)                        "
	    "PIXD_QUERY_TIMEOUT_MS\n"
	    "  --connect-timeout-ms N     give up a connection attempt\n"
	    "                             (default 5000)                       "
	    "PIXD_CONNECT_TIMEOUT_MS\n"
	    "  --read-timeout-ms N        a request's head and body must arrive, and an\n"
	    "                             idle keep-alive connection closes, within N ms\n"
	    "                             (default 10000)                  PIXD_READ_TIMEOUT_MS\n"
	    "  --max-connection-age-s N   a connection older than N s closes after its\n"
	    "                             answer (default 3600)       PIXD_MAX_CONNECTION_AGE_S\n"
	    "  --max-connections-per-address N  open connections of one IPv4 address or\n"
	    "                             IPv6 /64; more are closed at accept (default 64)\n"
	    "                                           PIXD_MAX_CONNECTIONS_PER_ADDRESS\n"
	    "  --max-buffered-mb N        request bytes received but not yet handled, all\n"
	    "                             connections; beyond, the largest are closed\n"
	    "                             (default 64)                   PIXD_MAX_BUFFERED_MB\n"
	    "  --max-reads-per-ispb N     reads in progress of one ISPB; beyond that\n"
	    "                             429 (default 24)         PIXD_MAX_READS_PER_ISPB\n"
	    "  --send-quota N             messages an ISPB may send in a burst (token\n"
	    "                             bucket; 0 = off; default 3750 with --auth,\n"
	    "                             0 without)                         PIXD_SEND_QUOTA\n"
	    "  --send-refill N            tokens added back per second (default 750)\n"
	    "                                                               PIXD_SEND_REFILL\n"
	    "  --no-access-log            no line per request on stderr          PIXD_ACCESS_LOG=0\n"
	    "  --auth MODE                none, token, mtls or token,mtls: how clients\n"
	    "                             authenticate (default none)                PIXD_AUTH\n"
	    "  --tls-cert FILE            HTTPS: PEM certificate chain           PIXD_TLS_CERT\n"
	    "  --tls-key FILE             HTTPS: PEM private key                 PIXD_TLS_KEY\n"
	    "  --client-ca FILE           mutual TLS: PEM CAs of client\n"
	    "                             certificates (--auth mtls)             PIXD_CLIENT_CA\n"
	    "  --insecure-open            allow --auth none or plain HTTP on a\n"
	    "                             non-loopback address            PIXD_INSECURE_OPEN=1\n"
	    "  --no-util                  POST /api/util/msgs answers 404        PIXD_NO_UTIL=1\n"
	    "  --durable-reads            every stream call waits for the synchronous\n"
	    "                             standby, even one that wrote nothing (HA)\n"
	    "                                                     PIXD_DURABLE_READS=1\n"
	    "  --help                     this text\n"
	    "SIGTERM/SIGINT: stop accepting, answer waiting reads 204, finish the rest, exit 0.\n");
}

static int parse_int(const struct int_option *o, const char *text)
{
	char *end;
	long v = strtol(text, &end, 10);

	if (*text == '\0' || *end != '\0' || v < o->min || v > o->max) {
		fprintf(stderr, "pixd: --%s must be an integer from %d to %d, got \"%s\"\n", o->name,
		        o->min, o->max, text);
		return -1;
	}
	*o->value = (int)v;
	return 0;
}

static int read_environment(const struct int_option *opts, size_t n)
{
	const char *v;

	if ((v = getenv("PIXD_LISTEN")) != NULL && *v != '\0')
		pixd_config.listen = v;
	if ((v = getenv("PIXD_DB")) != NULL)
		pixd_config.db_conninfo = v;
	if ((v = getenv("PIXD_ACCESS_LOG")) != NULL)
		pixd_config.access_log = strcmp(v, "0") != 0;
	if ((v = getenv("PIXD_AUTH")) != NULL && *v != '\0' && parse_auth(v) != 0)
		return -1;
	if ((v = getenv("PIXD_TLS_CERT")) != NULL && *v != '\0')
		pixd_config.tls_cert = v;
	if ((v = getenv("PIXD_TLS_KEY")) != NULL && *v != '\0')
		pixd_config.tls_key = v;
	if ((v = getenv("PIXD_CLIENT_CA")) != NULL && *v != '\0')
		pixd_config.client_ca = v;
	if ((v = getenv("PIXD_INSECURE_OPEN")) != NULL)
		pixd_config.insecure_open = strcmp(v, "1") == 0;
	if ((v = getenv("PIXD_NO_UTIL")) != NULL)
		pixd_config.no_util = strcmp(v, "1") == 0;
	if ((v = getenv("PIXD_DURABLE_READS")) != NULL)
		pixd_config.durable_reads = strcmp(v, "1") == 0;
	for (size_t i = 0; i < n; i++)
		if ((v = getenv(opts[i].env)) != NULL && *v != '\0' && parse_int(&opts[i], v) != 0)
			return -1;
	return 0;
}

static int parse_arguments(int argc, char **argv, const struct int_option *opts, size_t n)
{
	enum {
		OPT_LISTEN = 1000,
		OPT_DB,
		OPT_NO_ACCESS_LOG,
		OPT_DURABLE_READS,
		OPT_HELP,
		OPT_AUTH,
		OPT_TLS_CERT,
		OPT_TLS_KEY,
		OPT_CLIENT_CA,
		OPT_INSECURE_OPEN,
		OPT_NO_UTIL,
		OPT_INT
	};
	struct option longopts[N_INT_OPTIONS + 12];
	size_t k = 0;
	int c, idx;

	longopts[k++] = (struct option){"listen", required_argument, NULL, OPT_LISTEN};
	longopts[k++] = (struct option){"db", required_argument, NULL, OPT_DB};
	longopts[k++] = (struct option){"no-access-log", no_argument, NULL, OPT_NO_ACCESS_LOG};
	longopts[k++] = (struct option){"durable-reads", no_argument, NULL, OPT_DURABLE_READS};
	longopts[k++] = (struct option){"help", no_argument, NULL, OPT_HELP};
	longopts[k++] = (struct option){"auth", required_argument, NULL, OPT_AUTH};
	longopts[k++] = (struct option){"tls-cert", required_argument, NULL, OPT_TLS_CERT};
	longopts[k++] = (struct option){"tls-key", required_argument, NULL, OPT_TLS_KEY};
	longopts[k++] = (struct option){"client-ca", required_argument, NULL, OPT_CLIENT_CA};
	longopts[k++] = (struct option){"insecure-open", no_argument, NULL, OPT_INSECURE_OPEN};
	longopts[k++] = (struct option){"no-util", no_argument, NULL, OPT_NO_UTIL};
	for (size_t i = 0; i < n; i++)
		longopts[k++] = (struct option){opts[i].name, required_argument, NULL, OPT_INT + (int)i};
	longopts[k] = (struct option){NULL, 0, NULL, 0};
	while ((c = getopt_long(argc, argv, "h", longopts, &idx)) != -1) {
		if (c == OPT_LISTEN)
			pixd_config.listen = optarg;
		else if (c == OPT_DB)
			pixd_config.db_conninfo = optarg;
		else if (c == OPT_NO_ACCESS_LOG)
			pixd_config.access_log = 0;
		else if (c == OPT_DURABLE_READS)
			pixd_config.durable_reads = 1;
		else if (c == OPT_AUTH) {
			if (parse_auth(optarg) != 0)
				return -1;
		} else if (c == OPT_INSECURE_OPEN)
			pixd_config.insecure_open = 1;
		else if (c == OPT_NO_UTIL)
			pixd_config.no_util = 1;
		else if (c == OPT_TLS_CERT || c == OPT_TLS_KEY || c == OPT_CLIENT_CA) {
			if (set_string(c - OPT_TLS_CERT, optarg) != 0)
				return -1;
		} else if (c == OPT_HELP || c == 'h') {
			usage(stdout);
			exit(0);
		} else if (c >= OPT_INT && c < OPT_INT + (int)n) {
			if (parse_int(&opts[c - OPT_INT], optarg) != 0)
				return -1;
		} else {
			usage(stderr);
			return -1;
		}
	}
	if (optind < argc) {
		fprintf(stderr, "pixd: unexpected argument \"%s\"\n", argv[optind]);
		return -1;
	}
	return 0;
}

/* "none", "token", "mtls", "token,mtls" (either order). */
static int parse_auth(const char *text)
{
	if (strcmp(text, "none") == 0)
		pixd_config.auth_modes = 0;
	else if (strcmp(text, "token") == 0)
		pixd_config.auth_modes = AUTH_TOKEN;
	else if (strcmp(text, "mtls") == 0)
		pixd_config.auth_modes = AUTH_MTLS;
	else if (strcmp(text, "token,mtls") == 0 || strcmp(text, "mtls,token") == 0)
		pixd_config.auth_modes = AUTH_TOKEN | AUTH_MTLS;
	else {
		fprintf(stderr, "pixd: --auth must be none, token, mtls or token,mtls, got \"%s\"\n", text);
		return -1;
	}
	return 0;
}

/* which: 0 --tls-cert, 1 --tls-key, 2 --client-ca. An empty file name is a mistake, not "off". */
static int set_string(int which, const char *value)
{
	static const char *const names[] = {"tls-cert", "tls-key", "client-ca"};
	const char **fields[] = {&pixd_config.tls_cert, &pixd_config.tls_key, &pixd_config.client_ca};

	if (*value == '\0') {
		fprintf(stderr, "pixd: --%s needs a file name\n", names[which]);
		return -1;
	}
	*fields[which] = value;
	return 0;
}

/* A malformed connection string is an operator's mistake: say so now rather than retry forever. */
static int check_conninfo(const char *conninfo)
{
	char *err = NULL;
	PQconninfoOption *opts = PQconninfoParse(conninfo, &err);

	if (opts == NULL) {
		fprintf(stderr, "pixd: --db: %s", err != NULL ? err : "out of memory\n");
		PQfreemem(err);
		return -1;
	}
	PQconninfoFree(opts);
	return 0;
}

int config_parse(int argc, char **argv)
{
	if (read_environment(int_options, N_INT_OPTIONS) != 0 ||
	    parse_arguments(argc, argv, int_options, N_INT_OPTIONS) != 0 ||
	    check_conninfo(pixd_config.db_conninfo) != 0)
		return 2;
	if (pixd_config.max_queue < 0)
		pixd_config.max_queue = pixd_config.max_parked + QUEUE_FOR_OTHERS;
	if (pixd_config.send_quota < 0)
		pixd_config.send_quota = pixd_config.auth_modes != 0 ? PIXD_SEND_QUOTA : 0;
	return 0;
}
