/*
 * state.c — the program's shared state (state.h), defined here so that every file below main.c can
 * read it without naming main.c. The defaults of the options are docs/consuming.md's.
 */
#include "state.h"

struct options opt = {.collectors = 6, .sink_connections = 3, .timeout_ms = 30000};
struct collector *collectors;
int ncollectors;
const struct sink *sink;
int stopping;
int fatal_status = -1;
