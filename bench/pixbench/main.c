/*
 * main.c — pixbench's options, the order of a run, and its report.
 *
 * A run: (optional) untracked backlog, (optional) tracked preload, then producers and collectors
 * together until the stop condition; then every collector DELETEs its stream, the ledger is
 * checked, and the report ends with one `result:` line (key=value, for scripts) and one
 * `verdict:` line. Exit status: 0 PASS, 1 FAIL, 2 usage or setup error.
 */
#include <getopt.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>
#include "pixbench.h"

struct config cfg = {
    .http_host = "127.0.0.1",
    .http_port = 3000,
    .ispbs = 1,
    .ispb_base = 10000000,
    .collectors = 6,
    .accept = ACCEPT_MULTIPART,
    .producers = 1,
    .batch = 1,
    .duration_s = 10,
    .drain_timeout_s = 30,
    .wait_ms = 8000,
    .idle_timeout_ms = 60000,
    .request_timeout_ms = 10000,
    .within_ms = 200,
    .progress_s = 0,
    .label = "run",
};

static const char *latency_file;

static void usage(FILE *f)
{
	fputs(
	    "usage: pixbench [options]\n"
	    "An end-to-end load generator for pix stream: M ISPBs x C collectors over HTTP/1.1 "
	    "keep-alive\n"
	    "(one epoll loop), producers inserting through libpq, the contract checked while it runs.\n"
	    "\n"
	    "Target\n"
	    "  --http HOST:PORT        the shim (loopback only; default 127.0.0.1:3000)\n"
	    "  --db CONNINFO           libpq conninfo of the shim's database: producers, backlog, "
	    "postmaster\n"
	    "                          pid and table statistics (PG* variables fill the rest)\n"
	    "  --shim-pid PID          the shim's pid for CPU/RSS (default: found from /proc by "
	    "HOST:PORT)\n"
	    "  --pg-pid PID            the postmaster's pid for CPU (default: from --db's "
	    "data_directory)\n"
	    "  --wait-ms MS            the shim's long-poll wait (its --wait-ms), for the 204-deadline "
	    "check\n"
	    "                          (default 8000)\n"
	    "  --idle-timeout-ms MS    the database's pix.stream_idle_timeout, for the "
	    "two-live-streams "
	    "check\n"
	    "                          (default 60000, the extension's default)\n"
	    "Collectors\n"
	    "  --ispbs M               institutions, ISPB numbers from --ispb-base upwards (default "
	    "1)\n"
	    "  --ispb-base N           first ISPB (default 10000000)\n"
	    "  --collectors C          collectors per ISPB (default 6; more than 6 exercises the 429)\n"
	    "  --total N               at most N collectors in all (the last ISPB gets fewer)\n"
	    "  --accept MODE           multipart (Accept: multipart/json, default), single\n"
	    "                          (application/json) or mixed (alternating per collector)\n"
	    "  --gzip                  send Accept-Encoding: gzip and inflate the answers\n"
	    "  --ramp-ms MS            spread the collectors' first requests over MS (default 0)\n"
	    "  --restart-every N       DELETE and start a new stream after N reads (default never)\n"
	    "  --abandon-every N       walk away from the stream (no DELETE) after N reads: the "
	    "server\n"
	    "                          must expire it and redeliver its batch (default never)\n"
	    "  --request-timeout-ms MS a request gets wait-ms + MS before it is abandoned (default "
	    "10000)\n"
	    "Messages\n"
	    "  --preload N             tracked messages inserted before the collectors start\n"
	    "  --backlog N             untracked messages (pix_generate_messages) made before the "
	    "start\n"
	    "  --messages N            tracked messages produced while the collectors run\n"
	    "  --rate R                messages/s over all producers (default 0: as fast as "
	    "possible);\n"
	    "                          with --duration and no --messages, produces R x duration\n"
	    "  --producers P           producer threads, one connection each (default 1)\n"
	    "  --batch B               rows per INSERT statement (default 1: one commit per message)\n"
	    "Run\n"
	    "  --duration S            producing time; a run without producers lasts S (default 10)\n"
	    "  --drain-timeout S       after producing, wait at most S for the deliveries (default "
	    "30)\n"
	    "  --stop-after N          stop once N messages (tracked or not) were delivered\n"
	    "  --stop-wait-ms MS       at the stop, let in-flight reads finish for MS before "
	    "abandoning\n"
	    "                          them (then DELETE over a new connection; default 0)\n"
	    "Report\n"
	    "  --within-ms MS          also report the share delivered within MS of commit (default "
	    "200)\n"
	    "  --progress S            a progress line on stderr every S seconds (default 0: none)\n"
	    "  --csv FILE              time series every --progress S (or 1 s) as CSV\n"
	    "  --table-stats           add pix table sizes and dead tuples to the CSV (needs --db)\n"
	    "  --label TEXT            first field of the result line\n"
	    "  --latency-file FILE     every commit->delivery latency (ms), sorted, one per line\n"
	    "  --quiet                 only the result and verdict lines\n"
	    "  --help                  this text\n"
	    "HTTPS and authentication (issue 9)\n"
	    "  --tls-ca FILE           speak HTTPS, verifying the server with these CAs\n"
	    "  --tls-cert FILE         present this client certificate (mutual TLS)\n"
	    "  --tls-key FILE          its key (default: in --tls-cert)\n"
	    "  --token TOKEN           send Authorization: Bearer TOKEN\n"
	    "Send scenario\n"
	    "  --send N                instead of collectors: POST N messages to\n"
	    "                          /api/pix/99912345/msgs in JSON arrays of --batch over\n"
	    "                          --send-connections keep-alive connections, and INSERT N\n"
	    "                          messages of the same shape in statements of --batch rows over\n"
	    "                          --producers connections; two rounds in the order HTTP, SQL,\n"
	    "                          SQL, HTTP; prints both rates, their ratio, and checks that\n"
	    "                          every message was stored exactly once\n"
	    "  --send-connections C    HTTP connections of the send scenario (default 8)\n"
	    "\n"
	    "The verdict fails when a committed tracked message was never delivered, a message was\n"
	    "delivered after its confirmation or held by two live streams, went to the wrong ISPB, a "
	    "body\n"
	    "had the wrong shape, an answer broke the protocol (Pull-Next, status, Content-Type) or a "
	    "5xx\n"
	    "other than 503 came back. Redeliveries after an expiry are counted, not failed.\n"
	    "Exit status: 0 PASS, 1 FAIL, 2 usage or setup error.\n",
	    f);
}

static int parse_http(const char *s)
{
	const char *colon = strrchr(s, ':');
	if (!colon || colon == s || (size_t)(colon - s) >= sizeof cfg.http_host)
		return -1;
	memcpy(cfg.http_host, s, colon - s);
	cfg.http_host[colon - s] = 0;
	if (strcmp(cfg.http_host, "localhost") == 0)
		strcpy(cfg.http_host, "127.0.0.1");
	if (strncmp(cfg.http_host, "127.", 4) != 0) {
		fprintf(stderr, "pixbench: --http must be a loopback address (127.x.x.x)\n");
		return -1;
	}
	cfg.http_port = atoi(colon + 1);
	return cfg.http_port > 0 && cfg.http_port < 65536 ? 0 : -1;
}

static int parse_args(int argc, char **argv)
{
	enum {
		O_HTTP = 256,
		O_DB,
		O_SHIM_PID,
		O_PG_PID,
		O_WAIT,
		O_IDLE,
		O_ISPBS,
		O_BASE,
		O_COLL,
		O_TOTAL,
		O_ACCEPT,
		O_GZIP,
		O_RAMP,
		O_RESTART,
		O_ABANDON,
		O_RTO,
		O_PRELOAD,
		O_BACKLOG,
		O_MESSAGES,
		O_RATE,
		O_PRODUCERS,
		O_BATCH,
		O_DURATION,
		O_DRAIN,
		O_STOP_AFTER,
		O_STOP_WAIT,
		O_WITHIN,
		O_PROGRESS,
		O_CSV,
		O_TABLES,
		O_LABEL,
		O_QUIET,
		O_HELP,
		O_LATFILE,
		O_TLS_CA,
		O_TLS_CERT,
		O_TLS_KEY,
		O_TOKEN,
		O_SEND,
		O_SEND_CONN
	};
	static const struct option opts[] = {{"http", 1, 0, O_HTTP},
	                                     {"db", 1, 0, O_DB},
	                                     {"shim-pid", 1, 0, O_SHIM_PID},
	                                     {"pg-pid", 1, 0, O_PG_PID},
	                                     {"wait-ms", 1, 0, O_WAIT},
	                                     {"idle-timeout-ms", 1, 0, O_IDLE},
	                                     {"ispbs", 1, 0, O_ISPBS},
	                                     {"ispb-base", 1, 0, O_BASE},
	                                     {"collectors", 1, 0, O_COLL},
	                                     {"total", 1, 0, O_TOTAL},
	                                     {"accept", 1, 0, O_ACCEPT},
	                                     {"gzip", 0, 0, O_GZIP},
	                                     {"ramp-ms", 1, 0, O_RAMP},
	                                     {"restart-every", 1, 0, O_RESTART},
	                                     {"abandon-every", 1, 0, O_ABANDON},
	                                     {"request-timeout-ms", 1, 0, O_RTO},
	                                     {"preload", 1, 0, O_PRELOAD},
	                                     {"backlog", 1, 0, O_BACKLOG},
	                                     {"messages", 1, 0, O_MESSAGES},
	                                     {"rate", 1, 0, O_RATE},
	                                     {"producers", 1, 0, O_PRODUCERS},
	                                     {"batch", 1, 0, O_BATCH},
	                                     {"duration", 1, 0, O_DURATION},
	                                     {"drain-timeout", 1, 0, O_DRAIN},
	                                     {"stop-after", 1, 0, O_STOP_AFTER},
	                                     {"stop-wait-ms", 1, 0, O_STOP_WAIT},
	                                     {"within-ms", 1, 0, O_WITHIN},
	                                     {"progress", 1, 0, O_PROGRESS},
	                                     {"csv", 1, 0, O_CSV},
	                                     {"table-stats", 0, 0, O_TABLES},
	                                     {"label", 1, 0, O_LABEL},
	                                     {"latency-file", 1, 0, O_LATFILE},
	                                     {"quiet", 0, 0, O_QUIET},
	                                     {"help", 0, 0, O_HELP},
	                                     {"tls-ca", 1, 0, O_TLS_CA},
	                                     {"tls-cert", 1, 0, O_TLS_CERT},
	                                     {"tls-key", 1, 0, O_TLS_KEY},
	                                     {"token", 1, 0, O_TOKEN},
	                                     {"send", 1, 0, O_SEND},
	                                     {"send-connections", 1, 0, O_SEND_CONN},
	                                     {0, 0, 0, 0}};
	int o;
	while ((o = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
		switch (o) {
		case O_HTTP:
			if (parse_http(optarg) < 0)
				return -1;
			break;
		case O_DB:
			cfg.db = optarg;
			break;
		case O_SHIM_PID:
			cfg.shim_pid = atoi(optarg);
			break;
		case O_PG_PID:
			cfg.pg_pid = atoi(optarg);
			break;
		case O_IDLE:
			cfg.idle_timeout_ms = atoi(optarg);
			break;
		case O_WAIT:
			cfg.wait_ms = atoi(optarg);
			break;
		case O_ISPBS:
			cfg.ispbs = atoi(optarg);
			break;
		case O_BASE:
			cfg.ispb_base = atol(optarg);
			break;
		case O_COLL:
			cfg.collectors = atoi(optarg);
			break;
		case O_TOTAL:
			cfg.total_collectors = atoi(optarg);
			break;
		case O_ACCEPT:
			if (strcmp(optarg, "multipart") == 0)
				cfg.accept = ACCEPT_MULTIPART;
			else if (strcmp(optarg, "single") == 0)
				cfg.accept = ACCEPT_SINGLE;
			else if (strcmp(optarg, "mixed") == 0)
				cfg.accept = ACCEPT_MIXED;
			else
				return -1;
			break;
		case O_GZIP:
			cfg.gzip = 1;
			break;
		case O_RAMP:
			cfg.ramp_ms = atoi(optarg);
			break;
		case O_RESTART:
			cfg.restart_every = atoi(optarg);
			break;
		case O_ABANDON:
			cfg.abandon_every = atoi(optarg);
			break;
		case O_RTO:
			cfg.request_timeout_ms = atoi(optarg);
			break;
		case O_PRELOAD:
			cfg.preload = atol(optarg);
			break;
		case O_BACKLOG:
			cfg.backlog = atol(optarg);
			break;
		case O_MESSAGES:
			cfg.messages = atol(optarg);
			break;
		case O_RATE:
			cfg.rate = atof(optarg);
			break;
		case O_PRODUCERS:
			cfg.producers = atoi(optarg);
			break;
		case O_BATCH:
			cfg.batch = atoi(optarg);
			break;
		case O_DURATION:
			cfg.duration_s = atof(optarg);
			break;
		case O_DRAIN:
			cfg.drain_timeout_s = atof(optarg);
			break;
		case O_STOP_AFTER:
			cfg.stop_after = atol(optarg);
			break;
		case O_STOP_WAIT:
			cfg.stop_wait_ms = atoi(optarg);
			break;
		case O_WITHIN:
			cfg.within_ms = atof(optarg);
			break;
		case O_PROGRESS:
			cfg.progress_s = atof(optarg);
			break;
		case O_CSV:
			cfg.csv = optarg;
			break;
		case O_TABLES:
			cfg.table_stats = 1;
			break;
		case O_LABEL:
			cfg.label = optarg;
			break;
		case O_LATFILE:
			latency_file = optarg;
			break;
		case O_QUIET:
			cfg.quiet = 1;
			break;
		case O_TLS_CA:
			cfg.tls_ca = optarg;
			break;
		case O_TLS_CERT:
			cfg.tls_cert = optarg;
			break;
		case O_TLS_KEY:
			cfg.tls_key = optarg;
			break;
		case O_TOKEN:
			cfg.token = optarg;
			if (strlen(optarg) > 512 || strpbrk(optarg, "\r\n") != NULL)
				return -1;
			break;
		case O_SEND:
			cfg.send_messages = atol(optarg);
			break;
		case O_SEND_CONN:
			cfg.send_connections = atoi(optarg);
			break;
		case O_HELP:
		case 'h':
			usage(stdout);
			exit(0);
		default:
			return -1;
		}
	}
	if (optind != argc || cfg.ispbs < 1 || cfg.ispbs > 100000 || cfg.collectors < 1 ||
	    cfg.collectors > 64 || cfg.batch < 1 || cfg.batch > 10000 || cfg.producers < 0 ||
	    cfg.producers > 64 || cfg.duration_s < 0 || cfg.duration_s > 86400 || cfg.wait_ms < 0 ||
	    cfg.idle_timeout_ms < 1 || cfg.preload < 0 || cfg.messages < 0 || cfg.backlog < 0 ||
	    cfg.rate < 0 || cfg.drain_timeout_s < 0 || cfg.drain_timeout_s > 86400)
		return -1;
	if (cfg.send_messages < 0 || cfg.send_connections < 0 || cfg.send_connections > 256 ||
	    (cfg.tls_cert && !cfg.tls_ca))
		return -1;
	if (cfg.send_messages && !cfg.db) {
		fprintf(stderr, "pixbench: --send needs --db (the INSERT side and the count check)\n");
		return -1;
	}
	if ((cfg.preload || cfg.backlog || cfg.messages || cfg.rate || cfg.table_stats) && !cfg.db) {
		fprintf(stderr,
		        "pixbench: --preload, --backlog, --messages, --rate and --table-stats need --db\n");
		return -1;
	}
	if ((long)cfg.ispbs * cfg.collectors > 60000 && !cfg.total_collectors) {
		fprintf(stderr, "pixbench: more than 60000 collectors\n");
		return -1;
	}
	return 0;
}

static void raise_nofile(long want)
{
	struct rlimit rl;
	if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && (long)rl.rlim_cur < want) {
		rl.rlim_cur = (rlim_t)want < rl.rlim_max ? (rlim_t)want : rl.rlim_max;
		setrlimit(RLIMIT_NOFILE, &rl);
		getrlimit(RLIMIT_NOFILE, &rl);
		if ((long)rl.rlim_cur < want)
			fprintf(stderr,
			        "pixbench: warning: only %ld file descriptors for %ld connections "
			        "(raise ulimit -n)\n",
			        (long)rl.rlim_cur, want);
	}
}

int main(int argc, char **argv)
{
	if (parse_args(argc, argv) < 0) {
		usage(stderr);
		return 2;
	}
	long ncols = (long)cfg.ispbs * cfg.collectors;
	if (cfg.total_collectors > 0 && ncols > cfg.total_collectors)
		ncols = cfg.total_collectors;
	raise_nofile(ncols + 64);

	static const char b36[] = "0123456789abcdefghijklmnopqrstuvwxyz";
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	unsigned long seed =
	    (unsigned long)ts.tv_nsec ^ ((unsigned long)getpid() << 12) ^ (unsigned long)ts.tv_sec;
	for (int i = 0; i < 3; i++, seed /= 36)
		run_nonce[i] = b36[seed % 36];

	if (cfg.send_messages > 0)
		return send_run();

	long produced = cfg.messages > 0 ? cfg.messages
	                : cfg.rate > 0   ? (long)ceil(cfg.rate * cfg.duration_s)
	                                 : 0;
	if (cfg.preload + produced > 36L * 36 * 36 * 36 * 36 * 36 * 36 * 36 - 1 ||
	    ledger_init(cfg.preload + produced) < 0) {
		fprintf(stderr, "pixbench: cannot allocate the ledger\n");
		return 2;
	}
	if (cfg.db) {
		if (monitor_open() < 0)
			return 2;
		if (!cfg.pg_pid)
			cfg.pg_pid = monitor_find_postmaster();
	}
	if (!cfg.shim_pid)
		cfg.shim_pid = find_shim_pid();
	if (!cfg.quiet)
		fprintf(stderr,
		        "pixbench: run %s: %d ISPBs x %d collectors (%ld in all), shim pid %d, postmaster "
		        "pid %d\n",
		        run_nonce, cfg.ispbs, cfg.collectors, ncols, cfg.shim_pid, cfg.pg_pid);
	if (cfg.backlog > 0 && generate_backlog(cfg.backlog) < 0)
		return 2;
	if (cfg.preload > 0 && preload_tracked(cfg.preload) < 0)
		return 2;
	if (producers_start() < 0)
		return 2;
	if (collectors_run() < 0)
		return 2;
	producers_stop();
	producers_join();

	/* ---- checks ---- */
	long orphaned, unconfirmed;
	long lost = ledger_undelivered(&orphaned, &unconfirmed);
	cnt.backlog_lost = backlog_check();
	long committed = tracked_committed;

	/* ---- latency from the ledger ---- */
	uint32_t *lat = malloc((ledger_cap > 0 ? ledger_cap : 1) * sizeof *lat);
	long nlat = 0, early = 0, within = 0;
	for (long i = 0; i < ledger_cap && lat; i++) {
		struct ledger_entry *e = &ledger[i];
		if (e->commit_ns <= 0 || e->recv_ns <= 0)
			continue;
		int64_t d = e->recv_ns - e->commit_ns;
		if (d < 0) {
			early++;
			d = 0;
		}
		if (d <= (int64_t)(cfg.within_ms * MS))
			within++;
		lat[nlat++] = d / 1000 > UINT32_MAX ? UINT32_MAX : (uint32_t)(d / 1000);
	}
	double p50 = 0, p95 = 0, p99 = 0, pmax = 0;
	if (nlat) {
		p50 = percentile_u32(lat, nlat, 0.50) / 1000;
		p95 = lat[(long)(0.95 * nlat) < nlat ? (long)(0.95 * nlat) : nlat - 1] / 1000.0;
		p99 = lat[(long)(0.99 * nlat) < nlat ? (long)(0.99 * nlat) : nlat - 1] / 1000.0;
		pmax = lat[nlat - 1] / 1000.0;
	}
	if (latency_file) {
		FILE *lf = fopen(latency_file, "w");
		for (long i = 0; lf && i < nlat; i++)
			fprintf(lf, "%.3f\n", lat[i] / 1000.0);
		if (lf)
			fclose(lf);
	}
	double poll_p50 = 0, poll_p99 = 0, poll_min = 0, poll_max = 0;
	if (run.npoll) {
		poll_p50 = percentile_u32(run.poll_us, run.npoll, 0.5) / 1000;
		poll_p99 = run.poll_us[(long)(0.99 * run.npoll) < run.npoll ? (long)(0.99 * run.npoll)
		                                                            : run.npoll - 1] /
		           1000.0;
		poll_min = run.poll_us[0] / 1000.0;
		poll_max = run.poll_us[run.npoll - 1] / 1000.0;
	}

	long delivered = cnt.delivered + cnt.untracked;
	int64_t t_from = run.first_request_ns ? run.first_request_ns : run.t0_ns;
	double deliver_s = run.last_delivery_ns > t_from ? (run.last_delivery_ns - t_from) / 1e9 : 0;
	double wall_s = (run.end_ns - run.t0_ns) / 1e9;
	double active_s = ((run.stop_ns ? run.stop_ns : run.end_ns) - t_from) / 1e9;
	double msgs_s = deliver_s > 0 ? delivered / deliver_s : 0;
	double reqs_s = wall_s > 0 ? cnt.requests / wall_s : 0;
	double cpu_wall = (run.end_sample.t - run.start_sample.t) / 1e9;
	double shim_cpu =
	    cpu_wall > 0 ? 100 * (run.end_sample.shim_cpu_s - run.start_sample.shim_cpu_s) / cpu_wall
	                 : 0;
	double pg_cpu =
	    cpu_wall > 0 ? 100 * (run.end_sample.pg_cpu_s - run.start_sample.pg_cpu_s) / cpu_wall : 0;
	double self_cpu =
	    cpu_wall > 0 ? 100 * (run.end_sample.self_cpu_s - run.start_sample.self_cpu_s) / cpu_wall
	                 : 0;
	int expiries_possible =
	    cnt.r410 > 0 || cnt.abandons > 0 || cnt.conn_errors > 0 || cnt.timeouts > 0;

	char why[512] = "";
	size_t wl = 0;
#define WHY(cond, ...)                                                                             \
	do {                                                                                           \
		if (cond)                                                                                  \
			wl += snprintf(why + wl, sizeof why - wl, __VA_ARGS__);                                \
	} while (0)
	WHY(lost, " lost=%ld", lost);
	WHY(orphaned, " requeued-not-redelivered=%ld", orphaned);
	WHY(unconfirmed, " unconfirmed-at-end=%ld", unconfirmed);
	WHY(cnt.dup_after_confirm, " delivered-after-confirm=%ld", cnt.dup_after_confirm);
	WHY(cnt.dup_live, " two-live-streams=%ld", cnt.dup_live);
	WHY(cnt.dup_same, " same-stream-not-replay=%ld", cnt.dup_same);
	WHY(cnt.backlog_lost > 0, " backlog-lost=%ld", cnt.backlog_lost);
	WHY(cnt.backlog_lost < 0, " backlog-check-failed");
	WHY(cnt.untracked_dups && !expiries_possible, " untracked-duplicates=%ld", cnt.untracked_dups);
	WHY(cnt.wrong_ispb, " wrong-ispb=%ld", cnt.wrong_ispb);
	WHY(cnt.bad_body, " bad-bodies=%ld", cnt.bad_body);
	WHY(cnt.protocol_errors, " protocol-errors=%ld", cnt.protocol_errors);
	WHY(cnt.r5xx, " 5xx=%ld", cnt.r5xx);
	WHY(run.unfinished, " collectors-not-finished=%d", run.unfinished);
	WHY(committed == 0 && (cfg.preload || produced), " nothing-committed");
	WHY(tracked_failed, " insert-failures=%ld", tracked_failed);
	int pass = wl == 0;

	if (!cfg.quiet) {
		printf("pixbench %s: %d ISPB(s) x %d collectors = %d connections, %s%s; preload %ld, "
		       "backlog %ld, "
		       "produced %ld at %s msgs/s, %d producer(s), batch %d\n",
		       cfg.label, cfg.ispbs, cfg.collectors, run.ncollectors,
		       cfg.accept == ACCEPT_MULTIPART ? "multipart"
		       : cfg.accept == ACCEPT_SINGLE  ? "single"
		                                      : "mixed",
		       cfg.gzip ? "+gzip" : "", cfg.preload, cfg.backlog,
		       committed - (cfg.preload < committed ? cfg.preload : committed),
		       cfg.rate > 0 ? "a rate of" : "max", cfg.producers, cfg.batch);
		if (cfg.rate > 0)
			printf("  (rate %.1f msgs/s)\n", cfg.rate);
		printf("  delivered      %ld messages (%ld tracked of %ld committed, %ld untracked) in "
		       "%.3f s = %.0f msgs/s"
		       "%s\n",
		       delivered, cnt.delivered, committed, cnt.untracked, deliver_s, msgs_s,
		       tracked_failed ? " — SOME INSERTS FAILED" : "");
		printf("  requests       %ld in %.1f s = %.0f req/s (active %.1f s)\n", cnt.requests,
		       wall_s, reqs_s, active_s);
		printf("  latency        commit -> delivery, ms: p50 %.3f  p95 %.3f  p99 %.3f  max %.3f  "
		       "(n=%ld, "
		       "%.2f%% within %.0f ms, %ld seen before the commit ack)\n",
		       p50, p95, p99, pmax, nlat, nlat ? 100.0 * within / nlat : 0, cfg.within_ms, early);
		printf("  statuses       200 %ld  204 %ld  400 %ld  404 %ld  406 %ld  410 %ld  429 %ld  "
		       "503 %ld  5xx %ld  other %ld\n",
		       cnt.r200, cnt.r204, cnt.r400, cnt.r404, cnt.r406, cnt.r410, cnt.r429, cnt.r503,
		       cnt.r5xx, cnt.rother);
		printf("  connections    errors %ld  timeouts %ld  restarts %ld  abandoned streams %ld  "
		       "DELETE 200 %ld\n",
		       cnt.conn_errors, cnt.timeouts, cnt.restarts, cnt.abandons, cnt.deletes_ok);
		if (run.npoll)
			printf("  204 polls      %ld: elapsed ms min %.1f p50 %.1f p99 %.1f max %.1f (wait "
			       "%d): %ld late, %ld early "
			       "beyond 100 ms\n",
			       cnt.polls_204, poll_min, poll_p50, poll_p99, poll_max, cfg.wait_ms,
			       cnt.polls_204_late, cnt.polls_204_early);
		printf("  CPU            shim %.0f%%  postgres %.0f%%  pixbench %.0f%%  (of one core, over "
		       "%.1f s)\n",
		       shim_cpu, pg_cpu, self_cpu, cpu_wall);
		printf("  shim RSS       max %.1f MB (sampled%s), at end %.1f MB\n",
		       run.max_shim_rss_kb / 1024.0,
		       cfg.progress_s > 0 || cfg.csv ? " every interval" : " at start/end",
		       run.end_sample.shim_rss_kb / 1024.0);
		printf("  contract       lost %ld, delivered after confirm %ld, two live streams %ld, "
		       "wrong ISPB %ld, "
		       "bad bodies %ld, protocol errors %ld\n",
		       lost, cnt.dup_after_confirm, cnt.dup_live, cnt.wrong_ispb, cnt.bad_body,
		       cnt.protocol_errors);
		printf("                 redeliveries after expiry %ld, replays %ld, same stream not a "
		       "replay %ld, untracked duplicates %ld, backlog confirmed %ld (never received %ld), "
		       "other runs' messages %ld%s\n",
		       cnt.redelivered_expiry, cnt.replays, cnt.dup_same, cnt.untracked_dups,
		       cnt.backlog_checked, cnt.backlog_lost, cnt.foreign,
		       run.drain_timed_out ? ", DRAIN TIMED OUT" : "");
	}
	printf("result: label=%s msgs_per_s=%.1f reqs_per_s=%.1f delivered=%ld committed=%ld "
	       "p50_ms=%.3f p95_ms=%.3f "
	       "p99_ms=%.3f max_ms=%.3f within_pct=%.3f r204=%ld r429=%ld r410=%ld r503=%ld r5xx=%ld "
	       "shim_cpu_pct=%.1f pg_cpu_pct=%.1f self_cpu_pct=%.1f shim_rss_max_kb=%ld polls=%ld "
	       "polls_late=%ld "
	       "polls_early=%ld poll_p50_ms=%.1f poll_max_ms=%.1f poll_min_ms=%.1f redeliveries=%ld "
	       "lost=%ld "
	       "seconds=%.3f collectors=%d insert_failures=%ld\n",
	       cfg.label, msgs_s, reqs_s, delivered, committed, p50, p95, p99, pmax,
	       nlat ? 100.0 * within / nlat : 0, cnt.r204, cnt.r429, cnt.r410, cnt.r503, cnt.r5xx,
	       shim_cpu, pg_cpu, self_cpu, run.max_shim_rss_kb, cnt.polls_204, cnt.polls_204_late,
	       cnt.polls_204_early, poll_p50, poll_max, poll_min, cnt.redelivered_expiry, lost,
	       deliver_s, run.ncollectors, tracked_failed);
	if (pass)
		printf("verdict: PASS %ld delivered exactly once to live streams (%ld tracked, %ld "
		       "untracked), "
		       "%ld redeliveries after expiry\n",
		       delivered, cnt.delivered, cnt.untracked, cnt.redelivered_expiry);
	else
		printf("verdict: FAIL%s\n", why);
	fflush(stdout);
	monitor_close();
	free(lat);
	return pass ? 0 : 1;
}
