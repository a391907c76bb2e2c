/*
 * state.c — the program's shared state (state.h), defined here so that every file below main.c can
 * read it without naming main.c. The defaults of the options are docs/consuming.md's.
 */
#include <string.h>

#include "state.h"

struct options opt = {.collectors = 6, .sink_connections = 3, .timeout_ms = 30000};
struct collector *collectors;
int ncollectors;
const struct sink *sink;
int stopping;
int fatal_status = -1;

/* A collector's record as it starts: idle, no stream yet, no child. */
void collector_init(struct collector *c, int slot)
{
	memset(c, 0, sizeof *c);
	c->slot = slot;
	c->state = C_IDLE;
	c->child = -1;
	c->child_fd = -1;
	c->retry_after_s = -1;
}
