/*
 * pix-collect — the institution's side of a pix stream: N collectors of one institution (ISPB) pull
 * its payments from pixd and hand each one to the institution's own PostgreSQL exactly once, or to
 * a command at least once.
 *
 *   pix-collect --url URL --ispb ISPB --into CONNINFO [--collectors N]
 *               [--token-file F | --cert F --key F] [--cacert F] [--once]
 *
 * Why exactly once, whatever is killed when
 * -----------------------------------------
 * The server keeps a batch pending until the collector calls the batch's Pull-Next (that call
 * confirms it), replays the same pending batch with the same Pull-Next to a retry of the call that
 * delivered it, and requeues it when the stream expires or is closed from that call's id. So the
 * collector decides when a payment is confirmed, and the whole argument is one rule:
 *
 *   a batch is confirmed only after it is committed in the sink, in the same transaction as the
 *   checkpoint — the Pull-Next to call next (sink_pg.c writes both in one statement).
 *
 * Per slot (collector), the sink's checkpoint therefore always names one of two calls:
 *   - the call that delivered a batch that is NOT committed (the crash came before COMMIT): the
 *     checkpoint is still the URL that delivered it; calling it again replays that batch, which is
 *     written now. Nothing was confirmed, nothing is lost.
 *   - the Pull-Next of a batch that IS committed: calling it confirms that batch and reads on. If the
 *     crash came after that call reached the server, the call is now the previous id and replays the
 *     batch the server had claimed for it.
 * And when the checkpoint's stream is gone (410: expired while we were down, or closed; 404), a new
 * stream is opened; the expired stream's pending batch went back to the queue and is delivered again
 * — if we had committed it, the primary key on end_to_end_id absorbs the copy (ON CONFLICT DO
 * NOTHING). A message reaches pix_received at least once because nothing is confirmed before COMMIT,
 * and at most once because of the primary key: exactly once.
 *
 * Each kill, then: the collector (any moment: one of the two cases above), pixd (a network error:
 * the same URL again, a replay at worst), the server's PostgreSQL (503 or a lost connection: the
 * same URL again; its state is durable), the sink's PostgreSQL (the write fails or its outcome is
 * unknown: the batch stays in hand and is written again — the write is idempotent — and Pull-Next
 * waits). A network error or a 5xx retries the same URL, never the next one: a skipped batch would
 * be a confirmed, uncommitted batch.
 *
 * Shutdown (SIGTERM/SIGINT): the batch in hand is committed, then each stream is closed with DELETE
 * on its checkpoint (confirming what was committed); a stream/start in flight is let finish first
 * (it may have opened a stream); a second signal exits 1 at once. --once: a
 * collector whose long poll comes back empty closes its stream the same way; all closed → exit 0.
 *
 * Files, from the top down (each names only files below it; each has its own small header):
 *   main.c        the command line, start-up, the loop, signals
 *   collector.c   what each answer means, what to call next; fatal()
 *   sink_pg.c, sink_exec.c   the sinks behind struct sink (sink.h); each write's outcome goes to
 *                 collector.c through the struct sink_calls given to open()
 *   http.c        libcurl multi; a finished transfer goes to the callback given to http_init()
 *   multipart.c   the batch's JSON, scanned
 *   state.c       the options as parsed, the collectors' records, the sink chosen, stopping/fatal_status
 *   stats.c       the counters, the recoverable errors, the progress line
 *   util.c        clock, log, jitter, buffers
 */
#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/signalfd.h>
#include <unistd.h>

#include <curl/curl.h>

#include "collect.h"
#include "collector.h"
#include "http.h"
#include "sink.h"
#include "state.h"
#include "stats.h"
#include "util.h"

static const char usage_text[] =
    "usage: pix-collect --url URL --ispb ISPB (--into CONNINFO | --exec CMD) [options]\n"
    "\n"
    "  --url URL          pixd's origin: http://host:port or https://host:port\n"
    "  --ispb ISPB        the institution: 8 digits\n"
    "  --into CONNINFO    the PostgreSQL sink (libpq conninfo or URI): tables pix_received and\n"
    "                     pix_collect_checkpoint, created if absent (and the database too)\n"
    "  --exec CMD         the command sink: each batch as JSON lines on CMD's stdin, confirmed when\n"
    "                     CMD exits 0 (at least once: deduplicate on endToEndId)\n"
    "  --collectors N     streams to hold, 1..64 (default 6; the server allows pix.max_collectors)\n"
    "  --sink-connections K   the PostgreSQL sink's connections, 1..16 (default 3): writes in flight\n"
    "  --token-file F     a bearer token (Authorization: Bearer), read from F\n"
    "  --cert F --key F   a client certificate and its key (mutual TLS), PEM\n"
    "  --cacert F         the CAs to verify the server's certificate with, PEM\n"
    "  --once             drain: each collector stops at its first empty long poll; exit 0 when all did\n"
    "  --timeout-ms N     give up on a request after N ms and call it again (default 30000)\n"
    "  --progress, --no-progress   the progress line on stderr (default: when stderr is a terminal)\n"
    "\n"
    "Exit status: 0 stopped by SIGTERM/SIGINT or --once drained; 1 an answer no retry can fix, or a\n"
    "second signal; 2 bad command line; 3 the sink is unreachable or unusable at start; 4 the server\n"
    "refused the credentials (401/403). See docs/consuming.md.\n";

static void usage_error(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));
static void usage_error(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	fputs("pix-collect: ", stderr);
	vfprintf(stderr, fmt, ap);
	fputs(" (--help for the options)\n", stderr);
	va_end(ap);
	exit(EXIT_USAGE);
}

/* The origin alone: scheme, host, port. Pull-Next is an absolute path, resolved against it. */
static const char *check_url(const char *url)
{
	CURLU *u = curl_url();
	char *scheme = NULL, *host = NULL, *path = NULL, *query = NULL, *frag = NULL, *user = NULL;
	const char *why = NULL;
	if (curl_url_set(u, CURLUPART_URL, url, 0) != CURLUE_OK)
		why = "is not a URL";
	else if (curl_url_get(u, CURLUPART_SCHEME, &scheme, 0) != CURLUE_OK ||
	         (strcmp(scheme, "http") != 0 && strcmp(scheme, "https") != 0))
		why = "must be http:// or https://";
	else if (curl_url_get(u, CURLUPART_HOST, &host, 0) != CURLUE_OK || host[0] == '\0')
		why = "has no host";
	else if (curl_url_get(u, CURLUPART_USER, &user, 0) == CURLUE_OK)
		why = "must not hold credentials (use --token-file)";
	else if (curl_url_get(u, CURLUPART_QUERY, &query, 0) == CURLUE_OK ||
	         curl_url_get(u, CURLUPART_FRAGMENT, &frag, 0) == CURLUE_OK)
		why = "must not have a query or a fragment";
	else if (curl_url_get(u, CURLUPART_PATH, &path, 0) == CURLUE_OK && strcmp(path, "/") != 0)
		why = "must be the server's origin (no path): http://host:port";
	curl_free(scheme);
	curl_free(host);
	curl_free(path);
	curl_free(query);
	curl_free(frag);
	curl_free(user);
	curl_url_cleanup(u);
	if (why)
		usage_error("--url %s %s", url, why);
	char *origin = strdup(url);
	size_t n = strlen(origin);
	while (n > 0 && origin[n - 1] == '/')
		origin[--n] = '\0';
	return origin;
}

/* A bearer token from a file: one line, the characters of RFC 6750's b64token. */
static const char *read_token(const char *file)
{
	FILE *f = fopen(file, "r");
	if (f == NULL)
		usage_error("--token-file %s: %s", file, strerror(errno));
	static char tok[520];
	size_t n = fread(tok, 1, sizeof tok - 1, f);
	fclose(f);
	tok[n] = '\0';
	while (n > 0 && (tok[n - 1] == '\n' || tok[n - 1] == '\r' || tok[n - 1] == ' ' || tok[n - 1] == '\t'))
		tok[--n] = '\0';
	if (n == 0 || n > 512)
		usage_error("--token-file %s: %s", file, n ? "the token is longer than 512 bytes" : "the file is empty");
	size_t eq = n;
	while (eq > 0 && tok[eq - 1] == '=')
		eq--;
	for (size_t i = 0; i < eq; i++)
		if (!strchr("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~+/", tok[i]) || !tok[i])
			usage_error("--token-file %s: the token holds a character a bearer token cannot", file);
	return tok;
}

static void readable(const char *what, const char *file)
{
	if (access(file, R_OK) != 0)
		usage_error("%s %s: %s", what, file, strerror(errno));
}

static void parse_options(int argc, char **argv)
{
	enum { O_ONCE = 256, O_TIMEOUT, O_PROGRESS, O_NO_PROGRESS, O_CACERT, O_TOKEN_FILE, O_SINK_CONNS };
	static const struct option longopts[] = {
	    {"url", required_argument, NULL, 'u'},       {"ispb", required_argument, NULL, 'i'},
	    {"into", required_argument, NULL, 'd'},      {"exec", required_argument, NULL, 'e'},
	    {"collectors", required_argument, NULL, 'n'}, {"token-file", required_argument, NULL, O_TOKEN_FILE},
	    {"cert", required_argument, NULL, 'c'},      {"key", required_argument, NULL, 'k'},
	    {"cacert", required_argument, NULL, O_CACERT}, {"once", no_argument, NULL, O_ONCE},
	    {"timeout-ms", required_argument, NULL, O_TIMEOUT}, {"progress", no_argument, NULL, O_PROGRESS},
	    {"no-progress", no_argument, NULL, O_NO_PROGRESS}, {"help", no_argument, NULL, 'h'},
	    {"sink-connections", required_argument, NULL, O_SINK_CONNS},
	    {NULL, 0, NULL, 0}};
	const char *url = NULL, *ispb = NULL, *token_file = NULL;
	int progress = -1, ch;
	char *end;
	opterr = 0;
	while ((ch = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
		switch (ch) {
		case 'u': url = optarg; break;
		case 'i': ispb = optarg; break;
		case 'd': opt.into = optarg; break;
		case 'e': opt.exec = optarg; break;
		case 'n':
			opt.collectors = (int)strtol(optarg, &end, 10);
			if (*optarg == '\0' || *end != '\0' || opt.collectors < 1 || opt.collectors > COLLECT_MAX_COLLECTORS)
				usage_error("--collectors must be 1..%d", COLLECT_MAX_COLLECTORS);
			break;
		case O_SINK_CONNS:
			opt.sink_connections = (int)strtol(optarg, &end, 10);
			if (*optarg == '\0' || *end != '\0' || opt.sink_connections < 1 ||
			    opt.sink_connections > COLLECT_MAX_SINK_CONNECTIONS)
				usage_error("--sink-connections must be 1..%d", COLLECT_MAX_SINK_CONNECTIONS);
			break;
		case O_TOKEN_FILE: token_file = optarg; break;
		case 'c': opt.cert = optarg; break;
		case 'k': opt.key = optarg; break;
		case O_CACERT: opt.cacert = optarg; break;
		case O_ONCE: opt.once = true; break;
		case O_TIMEOUT:
			opt.timeout_ms = strtol(optarg, &end, 10);
			if (*optarg == '\0' || *end != '\0' || opt.timeout_ms < 9000 || opt.timeout_ms > 600000)
				usage_error("--timeout-ms must be 9000..600000 (above the server's 8 s long poll)");
			break;
		case O_PROGRESS: progress = 1; break;
		case O_NO_PROGRESS: progress = 0; break;
		case 'h': fputs(usage_text, stdout); exit(0);
		default:
			usage_error("unknown option or missing value: %s", argv[optind - 1]);
		}
	}
	if (optind < argc)
		usage_error("unexpected argument: %s", argv[optind]);
	if (url == NULL || ispb == NULL)
		usage_error("--url and --ispb are required");
	if ((opt.into == NULL) == (opt.exec == NULL))
		usage_error("exactly one sink: --into CONNINFO or --exec CMD");
	if (strlen(ispb) != 8 || strspn(ispb, "0123456789") != 8)
		usage_error("--ispb %s: an ISPB is exactly 8 digits", ispb);
	memcpy(opt.ispb, ispb, 9);
	opt.origin = check_url(url);
	if (token_file && (opt.cert || opt.key))
		usage_error("--token-file or --cert/--key, not both");
	if ((opt.cert == NULL) != (opt.key == NULL))
		usage_error("--cert and --key go together");
	if (opt.cert) {
		readable("--cert", opt.cert);
		readable("--key", opt.key);
	}
	if (opt.cacert)
		readable("--cacert", opt.cacert);
	if (token_file)
		opt.token = read_token(token_file);
	if ((opt.token || opt.cert) && strncmp(opt.origin, "https://", 8) != 0)
		usage_error("credentials go over https:// only (--url %s)", opt.origin);
	opt.progress = progress >= 0 ? progress : isatty(STDERR_FILENO);
}

/* SIGTERM/SIGINT/SIGCHLD through a signalfd, so the loop sees them between two steps. */
static int signals_open(void)
{
	sigset_t set;
	sigemptyset(&set);
	sigaddset(&set, SIGTERM);
	sigaddset(&set, SIGINT);
	sigaddset(&set, SIGCHLD);
	sigprocmask(SIG_BLOCK, &set, NULL);
	signal(SIGPIPE, SIG_IGN);
	return signalfd(-1, &set, SFD_NONBLOCK | SFD_CLOEXEC);
}

static void signals_read(int fd)
{
	struct signalfd_siginfo si;
	while (read(fd, &si, sizeof si) == (ssize_t)sizeof si) {
		if (si.ssi_signo == SIGCHLD)
			continue; /* the command sink reaps its children in its step */
		if (stopping) {
			logmsg("second signal: exiting now (what was committed is checkpointed)");
			exit(EXIT_FAILURE_);
		}
		stopping = 1;
		logmsg("stopping: finishing the batches in hand, then closing the streams");
		collector_stop_all();
	}
}

static int64_t min64(int64_t a, int64_t b)
{
	return a < b ? a : b;
}

static int run(int sigfd)
{
	struct curl_waitfd fds[COLLECT_MAX_COLLECTORS + COLLECT_MAX_SINK_CONNECTIONS + 1];
	signals_read(sigfd); /* a stop that came during start-up: no stream/start is made */
	for (;;) {
		int64_t now = now_ms();
		collector_due(now);
		progress_tick(now, false, collector_open_streams());
		if (fatal_status >= 0 && sink->idle())
			return fatal_status;
		if (collector_all_done() && sink->idle())
			return EXIT_DONE;
		int n = 0;
		fds[n].fd = sigfd;
		fds[n].events = CURL_WAIT_POLLIN;
		fds[n].revents = 0;
		n++;
		n += sink->fds(fds + n, COLLECT_MAX_COLLECTORS + COLLECT_MAX_SINK_CONNECTIONS);
		int64_t due = min64(min64(collector_next_due(), sink->next_due()), now + 1000);
		http_wait(fds, n, due > now ? (int)(due - now) : 0);
		if (fds[0].revents)
			signals_read(sigfd);
		now = now_ms();
		sink->step(fds + 1, n - 1, now);
		http_perform();
	}
}

int main(int argc, char **argv)
{
	/* SIGTERM/SIGINT are held from the first line: a stop that comes during start-up (the sink's
	 * connections, its lock wait) is seen by the loop, before any request, and exits 0 */
	int sigfd = signals_open();
	parse_options(argc, argv);
	srandom((unsigned)(now_ms() ^ getpid()));
	if (sigfd < 0 || http_init(collector_on_response) != 0) {
		logmsg("cannot start: %s", strerror(errno));
		return EXIT_FAILURE_;
	}
	collectors = calloc(COLLECT_MAX_COLLECTORS, sizeof *collectors);
	ncollectors = opt.collectors;
	for (int i = 0; i < ncollectors; i++)
		collector_init(&collectors[i], i + 1);
	sink = opt.into ? &sink_pg : &sink_exec;
	/* the sink first: no request (and so no confirmation) before it is known to be there */
	static const struct sink_calls calls = {
	    .committed = collector_committed, .failed = collector_sink_failed, .stop_with = fatal};
	if (sink->open(&calls) != 0) {
		logmsg("not started: the sink is unusable");
		return EXIT_SINK;
	}
	for (int i = 0; i < ncollectors; i++)
		if (http_setup(&collectors[i]) != 0) {
			logmsg("cannot set up the HTTP client");
			return EXIT_FAILURE_;
		}
	logmsg("collecting ISPB %s from %s with %d collectors into the %s sink%s", opt.ispb, opt.origin,
	       opt.collectors, sink->name, opt.once ? " (--once)" : "");
	int rc = run(sigfd);
	progress_tick(now_ms(), true, collector_open_streams());
	http_cleanup();
	sink->close();
	return rc;
}
