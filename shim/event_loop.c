/*
 * event_loop.c — the h2o evloop: listener, accept, SIGTERM/SIGINT, graceful shutdown.
 *
 * Signals arrive through a signalfd watched by the loop, so the shutdown runs as an ordinary
 * callback, never inside a signal handler. Shutdown, in order:
 *   1. stop accepting (the listening socket is closed: new connections are refused);
 *   2. parked reads answer 204 with their Pull-Next at once, reads with a query in flight answer
 *      when it returns, and no read parks any more;
 *   3. the loop keeps running until every request taken has been answered (in-flight queries
 *      finish; each is bounded by --query-timeout-ms), then a short drain lets h2o write the last
 *      responses; then the database connections close and the process exits 0.
 * A second signal exits at once (status 1).
 *
 * Connections are counted (the socket's on_close hook, as h2o's own server does); at
 * --max-connections the listener stops reading, so extra clients wait in the kernel's backlog
 * instead of the loop spinning on accept() failing with EMFILE. They are also counted per address
 * (peers.h): a connection beyond --max-connections-per-address is closed at accept, so one
 * address cannot take the slots every institution shares (this host itself, 127.0.0.1 or ::1,
 * is not capped: is_this_host).
 *
 * What an unauthenticated client can hold (issue 18). pixd speaks HTTP/1.1 only: no ALPN h2 (tls.c),
 * no h2c upgrade nor prior knowledge (http1.upgrade_to_http2 = 0), so a connection carries one
 * request at a time. libh2o 2.2.5 buffers a request's head and body in the socket's input before
 * any handler runs (http1.c: handle_incoming_request, create_entity_reader), refusing only a
 * declared Content-Length above max_request_entity_size (413) or a chunked body growing past it:
 * there is no hook between the head and the body. So each connection holds at most the send
 * route's limit (1 MiB) plus its head, and only for --read-timeout-ms: h2o's http1.req_timeout runs
 * from the end of the previous answer over the whole head and body (it is not re-armed by each
 * byte: slowloris gets the same N ms as anyone) and is the keep-alive idle limit too; the TLS
 * handshake has the same limit. What all connections hold is bounded by --max-buffered-mb: every
 * BUFFER_SWEEP_MS the bytes waiting in the input of every connection still receiving a request
 * (its socket reading: a connection whose request is being handled does not read) are summed and,
 * beyond the budget, the largest are shut down (shutdown(2), so that h2o sees the end of the stream
 * and closes the connection through its own path). Between two sweeps a client can add what the
 * network carries in BUFFER_SWEEP_MS, and at most 1 MiB per connection.
 */
#include <errno.h>
#include <limits.h>
#include <netinet/in.h>
#include <arpa/inet.h>
#include <fcntl.h>
#include <netdb.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <unistd.h>
#include "event_loop.h"
#include "parking.h"
#include "peers.h"
#include "problem_filter.h"
#include "respond.h"
#include "router.h"
#include "tls.h"

#define DRAIN_MS 100
#define BUFFER_SWEEP_MS 20
#define SHED_PER_SWEEP 64

static void on_accept(h2o_socket_t *listener, const char *err);
static void on_signal(h2o_socket_t *sock, const char *err);
static void begin_shutdown(void);
static int watch_signals(void);
static int split_hostport(const char *hostport, char *host, size_t hostlen, const char **port);
static int port_is_valid(const char *port);
static void on_connection_closed(void *data);
static int admit(h2o_socket_t *conn);
static int is_this_host(const struct sockaddr *sa);
static void on_buffer_sweep(h2o_timeout_entry_t *entry);
static size_t receiving(struct client_connection *c);
static void update_accepting(void);
static void raise_fd_limit(void);

static h2o_globalconf_t config;
static h2o_accept_ctx_t accept_ctx;
static h2o_socket_t *listener;
static h2o_socket_t *signals;
static h2o_linklist_t open_connections = {&open_connections, &open_connections};
static h2o_timeout_t buffer_sweep;
static h2o_timeout_entry_t buffer_sweep_entry = {.cb = on_buffer_sweep};

void event_loop_init(void)
{
	h2o_config_init(&config);
	config.server_name = h2o_iovec_init(H2O_STRLIT("pixd"));
	config.http1.upgrade_to_http2 = 0; /* HTTP/1.1 only, in clear text too (see above) */
	config.http1.req_timeout = (uint64_t)pixd_config.read_timeout_ms;
	config.handshake_timeout = (uint64_t)pixd_config.read_timeout_ms;
	/* h2o refuses a declared body larger than every route takes (413) before reading it. */
	config.max_request_entity_size = router_max_entity();
	router_register(&config);
	problem_filter_register(config.hosts[0]); /* h2o's own error answers: problem documents too */
	pixd_loop = h2o_evloop_create();
	h2o_context_init(&pixd_ctx, pixd_loop, &config);
	/* Before the socket listens: a SIGTERM that comes as soon as a client can connect must find it
	 * blocked and queued for the loop, not kill the process with the default action. */
	if (watch_signals() != 0)
		exit(1);
	accept_ctx.ctx = &pixd_ctx;
	accept_ctx.hosts = config.hosts;
	h2o_timeout_init(pixd_loop, &buffer_sweep, BUFFER_SWEEP_MS);
	h2o_timeout_link(pixd_loop, &buffer_sweep, &buffer_sweep_entry);
}

int event_loop_tls(void)
{
	struct tls_options o = {pixd_config.tls_cert, pixd_config.tls_key, pixd_config.client_ca,
	                        pixd_config.auth_modes == AUTH_MTLS};

	if (pixd_config.tls_cert == NULL)
		return 0;
	/* With an SSL_CTX on the accept context, h2o_accept runs the handshake before HTTP. */
	accept_ctx.ssl_ctx = tls_context_new(&o);
	return accept_ctx.ssl_ctx != NULL ? 0 : -1;
}

static int split_hostport(const char *hostport, char *host, size_t hostlen, const char **port)
{
	const char *colon = strrchr(hostport, ':');
	const char *h = hostport;
	size_t len;

	if (colon == NULL)
		return -1;
	len = colon - hostport;
	if (len >= 2 && h[0] == '[' && h[len - 1] == ']') {
		h++;
		len -= 2;
	}
	if (len >= hostlen)
		return -1;
	memcpy(host, h, len);
	host[len] = '\0';
	*port = colon + 1;
	{
		char *end;
		long n = strtol(*port, &end, 10);
		return **port != '\0' && *end == '\0' && n >= 1 && n <= 65535 ? 0 : -1;
	}
}

/* getaddrinfo takes "99999" and wraps it modulo 65536: a typo must not listen somewhere else. */
static int port_is_valid(const char *port)
{
	char *end;
	long n;

	if (port == NULL || *port < '0' || *port > '9')
		return 0;
	n = strtol(port, &end, 10);
	return *end == '\0' && n >= 1 && n <= 65535;
}

int event_loop_listen(const char *hostport)
{
	char host[256];
	const char *port;
	struct addrinfo hints = {0}, *ai;
	int fd, on = 1, rc;

	if (split_hostport(hostport, host, sizeof(host), &port) != 0 || !port_is_valid(port)) {
		fprintf(stderr, "pixd: --listen wants host:port with a port from 1 to 65535, got \"%s\"\n",
		        hostport);
		return -1;
	}
	hints.ai_family = AF_UNSPEC;
	hints.ai_socktype = SOCK_STREAM;
	hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
	if ((rc = getaddrinfo(host[0] != '\0' ? host : NULL, port, &hints, &ai)) != 0) {
		fprintf(stderr, "pixd: cannot resolve %s: %s\n", hostport, gai_strerror(rc));
		return -1;
	}
	fd = socket(ai->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0 || setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &on, sizeof(on)) != 0 ||
	    bind(fd, ai->ai_addr, ai->ai_addrlen) != 0 || listen(fd, SOMAXCONN) != 0) {
		fprintf(stderr, "pixd: cannot listen on %s: %s\n", hostport, strerror(errno));
		freeaddrinfo(ai);
		if (fd >= 0)
			close(fd);
		return -1;
	}
	freeaddrinfo(ai);
	raise_fd_limit();
	listener = h2o_evloop_socket_create(pixd_loop, fd, H2O_SOCKET_FLAG_DONT_READ);
	h2o_socket_read_start(listener, on_accept);
	return 0;
}

static void on_accept(h2o_socket_t *sock, const char *err)
{
	if (err != NULL)
		return;
	/* A bounded batch per wake-up keeps one busy listener from starving the other sockets. */
	for (int i = 0; i < 64 && pixd_metrics.connections < pixd_config.max_connections; i++) {
		h2o_socket_t *conn = h2o_evloop_socket_accept(sock);
		if (conn == NULL)
			break;
		if (admit(conn) == 0)
			h2o_accept(&accept_ctx, conn);
	}
	update_accepting();
}

/*
 * 127.0.0.1 and ::1 are this host itself: a reverse proxy in front of pixd, a benchmark. Every
 * client of a local proxy arrives from there, so the per-address cap does not apply to them
 * (--max-connections and the buffer budget still do). The rest of 127.0.0.0/8 counts as any
 * address (the tests use it to play distinct hosts).
 */
static int is_this_host(const struct sockaddr *sa)
{
	static const uint8_t v4mapped_localhost[16] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 127, 0, 0, 1};
	const struct in6_addr *a6 = &((const struct sockaddr_in6 *)sa)->sin6_addr;

	if (sa->sa_family == AF_INET)
		return ((const struct sockaddr_in *)sa)->sin_addr.s_addr == htonl(INADDR_LOOPBACK);
	return sa->sa_family == AF_INET6 &&
	       (IN6_IS_ADDR_LOOPBACK(a6) || memcmp(a6->s6_addr, v4mapped_localhost, 16) == 0);
}

/* Counts the connection and gives it its state; closes it (-1) when its address has too many. */
static int admit(h2o_socket_t *conn)
{
	struct sockaddr_storage ss;
	socklen_t len = h2o_socket_getpeername(conn, (struct sockaddr *)&ss);
	int limit = len != 0 && is_this_host((struct sockaddr *)&ss)
	                ? INT_MAX
	                : pixd_config.max_connections_per_address;
	struct peer *peer = len != 0 ? peers_add((struct sockaddr *)&ss, len, limit) : NULL;
	struct client_connection *c;

	if (peer == NULL) {
		pixd_metrics.connections_refused_per_address++;
		h2o_socket_close(conn);
		return -1;
	}
	pixd_metrics.connections++;
	c = tls_connection_new();
	c->peer = peer;
	c->sock = conn;
	h2o_linklist_insert(&open_connections, &c->link);
	conn->on_close.cb = on_connection_closed;
	conn->on_close.data = c; /* tls.c keeps the client certificate's credential here */
	return 0;
}

static void on_connection_closed(void *data)
{
	struct client_connection *c = data;

	peers_remove(c->peer);
	h2o_linklist_unlink(&c->link);
	tls_connection_free(c);
	pixd_metrics.connections--;
	update_accepting();
}

/* Bytes c received and holds for a request not handled yet (0 once its request is handled, or
 * once it was shed: h2o is about to close it). */
static size_t receiving(struct client_connection *c)
{
	return !c->shed && h2o_socket_is_reading(c->sock) ? c->sock->input->size : 0;
}

static void on_buffer_sweep(h2o_timeout_entry_t *entry)
{
	size_t budget = (size_t)pixd_config.max_buffered_mb << 20, total = 0;
	h2o_linklist_t *n;

	for (n = open_connections.next; n != &open_connections; n = n->next)
		total += receiving(H2O_STRUCT_FROM_MEMBER(struct client_connection, link, n));
	for (int shed = 0; total > budget && shed < SHED_PER_SWEEP; shed++) {
		struct client_connection *largest = NULL;
		for (n = open_connections.next; n != &open_connections; n = n->next) {
			struct client_connection *c = H2O_STRUCT_FROM_MEMBER(struct client_connection, link, n);
			if (largest == NULL || receiving(c) > receiving(largest))
				largest = c;
		}
		if (largest == NULL || receiving(largest) == 0)
			break;
		total -= receiving(largest);
		/* h2o reads the end of the stream and closes the connection itself */
		shutdown(h2o_socket_get_fd(largest->sock), SHUT_RDWR);
		largest->shed = 1;
		pixd_metrics.connections_shed_buffered++;
	}
	h2o_timeout_link(pixd_loop, &buffer_sweep, &buffer_sweep_entry);
}

static void update_accepting(void)
{
	if (listener == NULL)
		return;
	if (pixd_metrics.connections < pixd_config.max_connections) {
		if (!h2o_socket_is_reading(listener))
			h2o_socket_read_start(listener, on_accept);
	} else if (h2o_socket_is_reading(listener)) {
		h2o_socket_read_stop(listener);
	}
}

/*
 * Each client connection is a descriptor; each database connection is two (libpq's socket and the
 * dup the loop watches), for the pool and the LISTEN connection. Plus a margin for the listener,
 * the signalfd, the epoll descriptor, stdio and libpq's transient ones.
 */
#define FD_MARGIN 64
#define DB_FDS (2 * (pixd_config.pool_size + 1))

static void raise_fd_limit(void)
{
	struct rlimit rl;
	rlim_t want = (rlim_t)pixd_config.max_connections + DB_FDS + FD_MARGIN;

	if (getrlimit(RLIMIT_NOFILE, &rl) != 0 || rl.rlim_cur >= want)
		return;
	rl.rlim_cur = rl.rlim_max < want ? rl.rlim_max : want;
	if (setrlimit(RLIMIT_NOFILE, &rl) != 0 || rl.rlim_cur >= want)
		return;
	pixd_config.max_connections = (int)rl.rlim_cur - DB_FDS - FD_MARGIN;
	if (pixd_config.max_connections < 1)
		pixd_config.max_connections = 1;
	pixd_log("open-file limit %lu: --max-connections lowered to %d", (unsigned long)rl.rlim_cur,
	         pixd_config.max_connections);
}

static int watch_signals(void)
{
	sigset_t mask;
	int fd;
	signal(SIGPIPE, SIG_IGN);
	sigemptyset(&mask);
	sigaddset(&mask, SIGTERM);
	sigaddset(&mask, SIGINT);
	if (sigprocmask(SIG_BLOCK, &mask, NULL) != 0 ||
	    (fd = signalfd(-1, &mask, SFD_NONBLOCK | SFD_CLOEXEC)) < 0) {
		perror("pixd: signalfd");
		return -1;
	}
	signals = h2o_evloop_socket_create(pixd_loop, fd, H2O_SOCKET_FLAG_DONT_READ);
	h2o_socket_read_start(signals, on_signal);
	return 0;
}

static void on_signal(h2o_socket_t *sock, const char *err)
{
	struct signalfd_siginfo info;

	while (read(h2o_socket_get_fd(sock), &info, sizeof(info)) == sizeof(info)) {
		if (pixd_shutting_down) {
			pixd_log("second signal: exiting now");
			_exit(1);
		}
		pixd_log("signal %d: shutting down gracefully", (int)info.ssi_signo);
		begin_shutdown();
	}
}

static void begin_shutdown(void)
{
	pixd_shutting_down = 1;
	if (listener != NULL) {
		h2o_socket_read_stop(listener);
		h2o_socket_close(listener);
		listener = NULL;
	}
	h2o_context_request_shutdown(&pixd_ctx);
	parking_shutdown();
}

int event_loop_run(void)
{
	uint64_t drain_until = 0;

	for (;;) {
		h2o_evloop_run(pixd_loop, pixd_shutting_down ? 10 : 1000);
		log_flush(); /* the turn's access-log lines, in one write */
		if (!pixd_shutting_down || async_req_in_flight() > 0)
			continue;
		if (drain_until == 0)
			drain_until = h2o_now(pixd_loop) + DRAIN_MS;
		else if (h2o_now(pixd_loop) >= drain_until)
			break;
	}
	pixd_log("every request answered; bye");
	log_flush();
	return 0;
}

void event_loop_dispose(void)
{
	if (signals != NULL) {
		h2o_socket_close(signals);
		signals = NULL;
	}
	/* One more pass lets the loop finish closing the sockets closed above and in shutdown. */
	h2o_evloop_run(pixd_loop, 0);
	/*
	 * Not h2o_context_dispose: idle keep-alive connections still hold its timers (it asserts).
	 * They are closed by the exit; the configuration is all that is worth freeing.
	 */
	h2o_config_dispose(&config);
}
