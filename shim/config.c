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
    .max_queue = 1024,
    .max_parked = 10000,
    .max_connections = 10000,
    .max_generate = 10000,
    .query_timeout_ms = 10000,
    .connect_timeout_ms = 5000,
    .access_log = 1,
};

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

static const struct int_option int_options[] = {
    {"pool", "PIXD_POOL", &pixd_config.pool_size, 1, 64},
    {"wait-ms", "PIXD_WAIT_MS", &pixd_config.wait_ms, 0, PIXD_WAIT_MS_MAX},
    {"max-queue", "PIXD_MAX_QUEUE", &pixd_config.max_queue, 0, 1000000},
    {"max-parked", "PIXD_MAX_PARKED", &pixd_config.max_parked, 1, 1000000},
    {"max-generate", "PIXD_MAX_GENERATE", &pixd_config.max_generate, 1, 100000000},
    {"max-connections", "PIXD_MAX_CONNECTIONS", &pixd_config.max_connections, 1, 1000000},
    {"query-timeout-ms", "PIXD_QUERY_TIMEOUT_MS", &pixd_config.query_timeout_ms, 100, 600000},
    {"connect-timeout-ms", "PIXD_CONNECT_TIMEOUT_MS", &pixd_config.connect_timeout_ms, 100, 600000},
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
	    "                             that 503 (default 1024)                    PIXD_MAX_QUEUE\n"
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
	    "  --no-access-log            no line per request on stderr          PIXD_ACCESS_LOG=0\n"
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
	for (size_t i = 0; i < n; i++)
		if ((v = getenv(opts[i].env)) != NULL && *v != '\0' && parse_int(&opts[i], v) != 0)
			return -1;
	return 0;
}

static int parse_arguments(int argc, char **argv, const struct int_option *opts, size_t n)
{
	enum { OPT_LISTEN = 1000, OPT_DB, OPT_NO_ACCESS_LOG, OPT_HELP, OPT_INT };
	struct option longopts[N_INT_OPTIONS + 5];
	size_t k = 0;
	int c, idx;

	longopts[k++] = (struct option){"listen", required_argument, NULL, OPT_LISTEN};
	longopts[k++] = (struct option){"db", required_argument, NULL, OPT_DB};
	longopts[k++] = (struct option){"no-access-log", no_argument, NULL, OPT_NO_ACCESS_LOG};
	longopts[k++] = (struct option){"help", no_argument, NULL, OPT_HELP};
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
		else if (c == OPT_HELP || c == 'h') {
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
	return 0;
}
