/*
 * state.c: what the whole program shares — the options as parsed, the collectors, the sink chosen,
 * and whether it is stopping. Written by main.c at start-up (and by the signals), read below it.
 */
#ifndef PIX_COLLECT_STATE_H
#define PIX_COLLECT_STATE_H

#include <stdbool.h>

struct collector;
struct sink;

struct options {
	const char *origin; /* scheme://host[:port], no trailing slash */
	char ispb[9];
	const char *into;   /* libpq conninfo of the PostgreSQL sink, or NULL */
	const char *exec;   /* the command sink, or NULL */
	int collectors;
	int sink_connections; /* the PostgreSQL sink's connections: writes in flight at once */
	const char *token;  /* the bearer token read from --token-file, or NULL */
	const char *cert, *key, *cacert;
	bool once;
	bool progress; /* a progress line on stderr (a terminal) */
	long timeout_ms;
};
extern struct options opt;

extern struct collector *collectors; /* COLLECT_MAX_COLLECTORS of them, ncollectors in use */
extern int ncollectors;
extern const struct sink *sink;
extern int stopping;     /* SIGTERM/SIGINT seen, or --once finished */
extern int fatal_status; /* >= 0: stop now and exit with it */

#endif
