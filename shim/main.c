/*
 * main.c — pixd, the HTTP server of pix stream: the top floor, start-up and shut-down order.
 *
 * Options: config.c. The server holds no state a restart could lose: streams, batches and
 * messages live in PostgreSQL.
 */
#include <malloc.h>
#include "auth.h"
#include "database.h"
#include "event_loop.h"
#include "listener.h"
#include "maintenance.h"
#include "parking.h"
#include "pgconn.h"
#include "quota.h"

int main(int argc, char **argv)
{
	int rc = config_parse(argc, argv);

	if (rc != 0)
		return rc;
	/* Request buffers of up to 1 MiB come and go with anonymous clients: a fixed mmap threshold
	 * gives each one back to the system when freed, where glibc's sliding threshold would move
	 * them into the heap after the first free and keep the high-water mark as RSS (issue 18). */
	mallopt(M_MMAP_THRESHOLD, 128 * 1024);
	log_init();
	if (auth_check_config(pixd_config.listen) != 0)
		return 2;
	event_loop_init();
	if (event_loop_tls() != 0)
		return 2;
	if (event_loop_listen(pixd_config.listen) != 0)
		return 1;
	pgconn_global_init();
	quota_init(pixd_config.send_quota, pixd_config.send_refill);
	parking_init();
	db_init();
	listener_init();
	maintenance_init();
	pixd_log("pixd listening on %s://%s (pool %d, wait %d ms, auth %s)",
	         pixd_config.tls_cert != NULL ? "https" : "http", pixd_config.listen,
	         pixd_config.pool_size, pixd_config.wait_ms, auth_mode_name());
	rc = event_loop_run();
	maintenance_shutdown();
	listener_shutdown();
	db_shutdown();
	event_loop_dispose();
	log_flush();
	return rc;
}
