/*
 * config.c — the options: defaults, the environment (PIXD_LISTEN, PIXD_DB, ...), the command line.
 *
 * Every option is one line of PIXD_OPTIONS (below), from which its default, its getopt entry, its
 * environment variable's read and its usage() text are made; the command line wins over the
 * environment. The database connection string is libpq's, so PGHOST, PGPORT, PGUSER, PGDATABASE etc. fill in whatever --db leaves out.
 */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <libpq-fe.h>
#include "config.h"

/*
 * The options, one line each: kind, field of pixd_config, --name, its argument in usage(), the
 * environment variable, the default, the range (integers), the help text and the default as usage()
 * shows it (NULL: the default itself). From this one list come pixd_config's defaults, getopt's
 * longopts, the environment's reads and usage(). Kinds:
 *   INT   an integer in [min, max]; an empty variable is ignored
 *   TEXT  a string; an empty variable is ignored          CONNINFO  the same, but taken even empty
 *   FILE  a file name: empty is a mistake on the command line, ignored in the environment
 *   ON    a flag that turns the field on; its variable sets it, on only when exactly "1"
 *   OFF   a flag that turns the field off; its variable sets it, off only when exactly "0"
 *   AUTH  --auth's modes (parse_auth)
 */
#define PIXD_OPTIONS(X)                                                                            \
	X(TEXT, listen, "listen", "HOST:PORT", "PIXD_LISTEN", "127.0.0.1:3000", 0, 0, "HTTP address",  \
	  NULL)                                                                                        \
	X(CONNINFO, db_conninfo, "db", "CONNINFO", "PIXD_DB", "", 0, 0,                                \
	  "libpq connection string; PG* variables fill in the rest", "empty")                          \
	X(INT, pool_size, "pool", "N", "PIXD_POOL", 4, 1, 64, "query connections", NULL)               \
	X(INT, wait_ms, "wait-ms", "N", "PIXD_WAIT_MS", PIXD_WAIT_MS_MAX, 0, PIXD_WAIT_MS_MAX,         \
	  "long-poll wait of an empty read", NULL)                                                     \
	X(INT, max_queue, "max-queue", "N", "PIXD_MAX_QUEUE", -1, 0, 1000000,                          \
	  "queries waiting for a connection; beyond that 503", "--max-parked + 1024")                  \
	X(INT, max_parked, "max-parked", "N", "PIXD_MAX_PARKED", 10000, 1, 1000000,                    \
	  "reads in progress, querying or waiting; beyond that 503", NULL)                             \
	X(INT, max_generate, "max-generate", "N", "PIXD_MAX_GENERATE", 10000, 1, 100000000,            \
	  "largest {number} of POST /api/util/msgs; keep it equal to the GUC pix.max_generate", NULL)  \
	X(INT, max_connections, "max-connections", "N", "PIXD_MAX_CONNECTIONS", 10000, 1, 1000000,     \
	  "open client connections", NULL)                                                             \
	X(INT, query_timeout_ms, "query-timeout-ms", "N", "PIXD_QUERY_TIMEOUT_MS", 10000, 100, 600000, \
	  "give up a query and reset its connection", NULL)                                            \
	X(INT, connect_timeout_ms, "connect-timeout-ms", "N", "PIXD_CONNECT_TIMEOUT_MS", 5000, 100,    \
	  600000, "give up a connection attempt", NULL)                                                \
	X(INT, read_timeout_ms, "read-timeout-ms", "N", "PIXD_READ_TIMEOUT_MS", 10000, 100, 600000,    \
	  "a request's head and body must arrive, and an idle keep-alive connection closes, within N " \
	  "ms",                                                                                        \
	  NULL)                                                                                        \
	X(INT, max_connection_age_s, "max-connection-age-s", "N", "PIXD_MAX_CONNECTION_AGE_S", 3600,   \
	  1, 86400, "a connection older than N s closes after its answer", NULL)                       \
	X(INT, max_connections_per_address, "max-connections-per-address", "N",                        \
	  "PIXD_MAX_CONNECTIONS_PER_ADDRESS", 64, 1, 1000000,                                          \
	  "open connections of one IPv4 address or IPv6 /64; more are closed at accept", NULL)         \
	X(INT, max_buffered_mb, "max-buffered-mb", "N", "PIXD_MAX_BUFFERED_MB", 64, 1, 65536,          \
	  "request bytes received but not yet handled, all connections; beyond, the largest are "      \
	  "closed",                                                                                    \
	  NULL)                                                                                        \
	X(INT, max_reads_per_ispb, "max-reads-per-ispb", "N", "PIXD_MAX_READS_PER_ISPB", 24, 1,        \
	  1000000, "reads in progress of one ISPB; beyond that 429", NULL)                             \
	X(INT, send_quota, "send-quota", "N", "PIXD_SEND_QUOTA", -1, 0, 100000000,                     \
	  "messages an ISPB may send in a burst (token bucket; 0 = off)",                              \
	  "3750 with --auth, 0 without")                                                               \
	X(INT, send_refill, "send-refill", "N", "PIXD_SEND_REFILL", PIXD_SEND_REFILL, 1, 100000000,    \
	  "tokens added back per second", NULL)                                                        \
	X(OFF, access_log, "no-access-log", NULL, "PIXD_ACCESS_LOG", 1, 0, 0,                          \
	  "no line per request on stderr", "")                                                         \
	X(AUTH, auth_modes, "auth", "MODE", "PIXD_AUTH", 0, 0, 0,                                      \
	  "none, token, mtls or token,mtls: how clients authenticate", "none")                         \
	X(FILE, tls_cert, "tls-cert", "FILE", "PIXD_TLS_CERT", NULL, 0, 0,                             \
	  "HTTPS: PEM certificate chain", "")                                                          \
	X(FILE, tls_key, "tls-key", "FILE", "PIXD_TLS_KEY", NULL, 0, 0, "HTTPS: PEM private key", "")  \
	X(FILE, client_ca, "client-ca", "FILE", "PIXD_CLIENT_CA", NULL, 0, 0,                          \
	  "mutual TLS: PEM CAs of client certificates (--auth mtls)", "")                              \
	X(ON, insecure_open, "insecure-open", NULL, "PIXD_INSECURE_OPEN", 0, 0, 0,                     \
	  "allow --auth none or plain HTTP on a non-loopback address", "")                             \
	X(ON, no_util, "no-util", NULL, "PIXD_NO_UTIL", 0, 0, 0, "POST /api/util/msgs answers 404",    \
	  "")                                                                                          \
	X(ON, durable_reads, "durable-reads", NULL, "PIXD_DURABLE_READS", 0, 0, 0,                     \
	  "every stream call waits for the synchronous standby, even one that wrote nothing (HA)", "")

#define DEFAULT_OF(kind, field, name, arg, env, dflt, min, max, help, shown) .field = dflt,
struct pixd_config pixd_config = {PIXD_OPTIONS(DEFAULT_OF)};

/*
 * The default queue holds a query for every read that may be in progress (--max-parked), plus room
 * for the other routes and the server's own calls: a burst of reads waits for a connection instead
 * of being refused while the database keeps up.
 */
#define QUEUE_FOR_OTHERS 1024

enum option_kind {
	OPTION_INT,
	OPTION_TEXT,
	OPTION_CONNINFO,
	OPTION_FILE,
	OPTION_ON,
	OPTION_OFF,
	OPTION_AUTH
};

struct option_spec {
	enum option_kind kind;
	const char *name; /* --name */
	const char *arg;  /* its argument, NULL for a flag */
	const char *env;
	void *field;           /* int * (INT, ON, OFF, AUTH) or const char ** */
	int dflt;              /* INT */
	const char *dflt_text; /* TEXT */
	int min, max;
	const char *help;
	const char *shown; /* the default as usage() shows it; NULL: dflt or dflt_text */
};

/* dflt is the default of an integer; other kinds' defaults are not numbers (0 here) */
#define DEFAULT_INT_OPTION_INT(dflt) (dflt)
#define DEFAULT_INT_OPTION_TEXT(dflt) 0
#define DEFAULT_INT_OPTION_CONNINFO(dflt) 0
#define DEFAULT_INT_OPTION_FILE(dflt) 0
#define DEFAULT_INT_OPTION_ON(dflt) 0
#define DEFAULT_INT_OPTION_OFF(dflt) 0
#define DEFAULT_INT_OPTION_AUTH(dflt) 0
/* and the default of a string option, which usage() shows */
#define DEFAULT_TEXT_OPTION_INT(dflt) NULL
#define DEFAULT_TEXT_OPTION_CONNINFO(dflt) NULL
#define DEFAULT_TEXT_OPTION_FILE(dflt) NULL
#define DEFAULT_TEXT_OPTION_ON(dflt) NULL
#define DEFAULT_TEXT_OPTION_OFF(dflt) NULL
#define DEFAULT_TEXT_OPTION_AUTH(dflt) NULL
#define DEFAULT_TEXT_OPTION_TEXT(dflt) (dflt)
#define SPEC_OF(kind, field, name, arg, env, dflt, min, max, help, shown)                          \
	{OPTION_##kind,                                                                                \
	 name,                                                                                         \
	 arg,                                                                                          \
	 env,                                                                                          \
	 &pixd_config.field,                                                                           \
	 DEFAULT_INT_OPTION_##kind(dflt),                                                              \
	 DEFAULT_TEXT_OPTION_##kind(dflt),                                                             \
	 min,                                                                                          \
	 max,                                                                                          \
	 help,                                                                                         \
	 shown},
static const struct option_spec options[] = {PIXD_OPTIONS(SPEC_OF)};
#define N_OPTIONS (sizeof(options) / sizeof(options[0]))
#define OPT_HELP 1000 /* getopt's value for --help; option i is OPT_FIRST + i */
#define OPT_FIRST 1001

static void usage(FILE *out);
static int parse_int(const struct option_spec *o, const char *text);
static int set_option(const struct option_spec *o, const char *value);
static int set_from_environment(const struct option_spec *o);
static int read_environment(void);
static int parse_arguments(int argc, char **argv);
static int check_conninfo(const char *conninfo);
static int parse_auth(const char *text);

static void usage(FILE *out)
{
	fprintf(out,
	        "usage: pixd [options]   (each option also reads the environment variable shown)\n");
	for (size_t i = 0; i < N_OPTIONS; i++) {
		const struct option_spec *o = &options[i];
		int len = fprintf(out, "  --%s%s%s", o->name, o->arg != NULL ? " " : "",
		                  o->arg != NULL ? o->arg : "");
		const char *env_value = o->kind == OPTION_ON ? "=1" : o->kind == OPTION_OFF ? "=0" : "";

		fprintf(out, "%*s%s%s\n      %s", len < 40 ? 40 - len : 1, "", o->env, env_value, o->help);
		if (o->kind == OPTION_INT)
			fprintf(out, ", %d..%d", o->min, o->max);
		if (o->shown == NULL && o->dflt_text != NULL)
			fprintf(out, " (default %s)\n", o->dflt_text);
		else if (o->shown == NULL)
			fprintf(out, " (default %d)\n", o->dflt);
		else if (*o->shown != '\0')
			fprintf(out, " (default %s)\n", o->shown);
		else
			fprintf(out, "\n");
	}
	fprintf(out,
	        "  --help                                this text\n"
	        "SIGTERM/SIGINT: stop accepting, answer waiting reads 204, finish the rest, exit 0.\n");
}

static int parse_int(const struct option_spec *o, const char *text)
{
	char *end;
	long v = strtol(text, &end, 10);

	if (*text == '\0' || *end != '\0' || v < o->min || v > o->max) {
		fprintf(stderr, "pixd: --%s must be an integer from %d to %d, got \"%s\"\n", o->name,
		        o->min, o->max, text);
		return -1;
	}
	*(int *)o->field = (int)v;
	return 0;
}

/* The option's value from the command line (NULL for a flag); -1 after saying what is wrong. */
static int set_option(const struct option_spec *o, const char *value)
{
	switch (o->kind) {
	case OPTION_INT:
		return parse_int(o, value);
	case OPTION_FILE:
		if (*value == '\0') { /* an empty file name is a mistake, not "off" */
			fprintf(stderr, "pixd: --%s needs a file name\n", o->name);
			return -1;
		}
		/* fall through */
	case OPTION_TEXT:
	case OPTION_CONNINFO:
		*(const char **)o->field = value;
		return 0;
	case OPTION_ON:
		*(int *)o->field = 1;
		return 0;
	case OPTION_OFF:
		*(int *)o->field = 0;
		return 0;
	case OPTION_AUTH:
		return parse_auth(value);
	}
	return -1;
}

/* The option's variable, when set: an empty one is ignored, but for the flags and the conninfo. */
static int set_from_environment(const struct option_spec *o)
{
	const char *v = getenv(o->env);

	if (v == NULL)
		return 0;
	switch (o->kind) {
	case OPTION_ON:
		*(int *)o->field = strcmp(v, "1") == 0;
		return 0;
	case OPTION_OFF:
		*(int *)o->field = strcmp(v, "0") != 0;
		return 0;
	case OPTION_CONNINFO:
		*(const char **)o->field = v;
		return 0;
	default:
		return *v == '\0' ? 0 : set_option(o, v);
	}
}

/* The integers after the others, so that the first complaint is the same whatever the table's order. */
static int read_environment(void)
{
	for (int ints = 0; ints <= 1; ints++)
		for (size_t i = 0; i < N_OPTIONS; i++)
			if ((options[i].kind == OPTION_INT) == ints && set_from_environment(&options[i]) != 0)
				return -1;
	return 0;
}

static int parse_arguments(int argc, char **argv)
{
	struct option longopts[N_OPTIONS + 2];
	int c, idx;

	for (size_t i = 0; i < N_OPTIONS; i++)
		longopts[i] = (struct option){options[i].name,
		                              options[i].arg != NULL ? required_argument : no_argument,
		                              NULL, OPT_FIRST + (int)i};
	longopts[N_OPTIONS] = (struct option){"help", no_argument, NULL, OPT_HELP};
	longopts[N_OPTIONS + 1] = (struct option){NULL, 0, NULL, 0};
	while ((c = getopt_long(argc, argv, "h", longopts, &idx)) != -1) {
		if (c == OPT_HELP || c == 'h') {
			usage(stdout);
			exit(0);
		} else if (c >= OPT_FIRST && c < OPT_FIRST + (int)N_OPTIONS) {
			if (set_option(&options[c - OPT_FIRST], optarg) != 0)
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
	if (read_environment() != 0 || parse_arguments(argc, argv) != 0 ||
	    check_conninfo(pixd_config.db_conninfo) != 0)
		return 2;
	if (pixd_config.max_queue < 0)
		pixd_config.max_queue = pixd_config.max_parked + QUEUE_FOR_OTHERS;
	if (pixd_config.send_quota < 0)
		pixd_config.send_quota = pixd_config.auth_modes != 0 ? PIXD_SEND_QUOTA : 0;
	return 0;
}
