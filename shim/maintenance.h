/*
 * maintenance.h — the server's periodic calls: expiry every second, the history purge, and the
 * database's metrics (pix_metrics) cached for GET /metrics.
 */
#ifndef PIXD_MAINTENANCE_H
#define PIXD_MAINTENANCE_H

#include <stddef.h>
#include "pixd.h"

void maintenance_init(void);
void maintenance_shutdown(void);
/* Prometheus text of the last pix_metrics() answer; age -1 when there has been none. */
const char *maintenance_db_metrics(size_t *len, double *age_seconds);

#endif
