/*
 * sink_exec.c — the command sink (--exec CMD): for each batch, `/bin/sh -c CMD` runs with the batch
 * on its standard input, one message per line (JSON, as the server sent it). The batch is confirmed
 * (Pull-Next called) only when CMD exits 0; otherwise the same batch is given to CMD again after a
 * backoff. At least once: CMD may see a message again (a crash of pix-collect after CMD succeeded
 * and before Pull-Next was called; an expired stream), so CMD deduplicates on `endToEndId`.
 * No checkpoint survives pix-collect: after a crash, the streams it held expire on the server and
 * their pending batches are delivered again to the new streams.
 *
 * Each collector runs its own CMD (up to --collectors at once). Children are reaped from the loop
 * (SIGCHLD arrives on main.c's signalfd, which wakes the loop).
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <curl/curl.h>

#include "collect.h"
#include "multipart.h"
#include "sink.h"
#include "state.h"
#include "stats.h"
#include "util.h"

static const struct sink_calls *calls; /* given at open */

static int exec_open(const struct sink_calls *c)
{
	calls = c;
	if (access("/bin/sh", X_OK) != 0) {
		logmsg("--exec needs /bin/sh");
		return -1;
	}
	return 0;
}

/* The batch as JSON lines. The scanner guarantees no raw control character inside strings, so a
 * newline or CR in a message is whitespace between tokens: it becomes a space. */
static int build_lines(struct collector *c)
{
	size_t starts[16], lens[16];
	const char *err;
	int n = batch_scan(c->body.data, c->body.len, starts, lens, 10, &err);
	buf_reset(&c->out);
	for (int i = 0; i < n; i++) {
		size_t from = c->out.len;
		if (buf_append(&c->out, c->body.data + starts[i], lens[i]) != 0 || buf_append(&c->out, "\n", 1) != 0)
			return -1;
		for (size_t k = from; k < c->out.len - 1; k++)
			if (c->out.data[k] == '\n' || c->out.data[k] == '\r')
				c->out.data[k] = ' ';
	}
	return n;
}

static void spawn(struct collector *c)
{
	int p[2];
	if (build_lines(c) < 0 || pipe2(p, O_CLOEXEC) != 0) {
		last_error("command sink: %s", strerror(errno));
		calls->failed(c);
		return;
	}
	pid_t pid = fork();
	if (pid < 0) {
		close(p[0]);
		close(p[1]);
		last_error("command sink: fork: %s", strerror(errno));
		calls->failed(c);
		return;
	}
	if (pid == 0) {
		/* the child: the signals main.c blocked for its signalfd, and SIGPIPE, back to normal */
		sigset_t none;
		sigemptyset(&none);
		sigprocmask(SIG_SETMASK, &none, NULL);
		signal(SIGPIPE, SIG_DFL);
		dup2(p[0], STDIN_FILENO);
		execl("/bin/sh", "sh", "-c", opt.exec, (char *)NULL);
		_exit(127);
	}
	close(p[0]);
	fcntl(p[1], F_SETFL, O_NONBLOCK);
	c->child = pid;
	c->child_fd = p[1];
	c->child_off = 0;
	c->state = C_SINK_BUSY;
}

static void feed(struct collector *c)
{
	while (c->child_off < c->out.len) {
		ssize_t w = write(c->child_fd, c->out.data + c->child_off, c->out.len - c->child_off);
		if (w < 0 && errno == EAGAIN)
			return;
		if (w < 0)
			break; /* EPIPE: CMD did not read it all; its exit status decides */
		c->child_off += (size_t)w;
	}
	close(c->child_fd); /* end of the batch: CMD sees EOF */
	c->child_fd = -1;
}

static void reap(struct collector *c)
{
	int st;
	pid_t r = waitpid(c->child, &st, WNOHANG);
	if (r == 0 || (r < 0 && errno == EINTR))
		return;
	if (c->child_fd >= 0) {
		close(c->child_fd);
		c->child_fd = -1;
	}
	c->child = -1;
	if (r > 0 && WIFEXITED(st) && WEXITSTATUS(st) == 0) {
		stats.messages += (uint64_t)c->batch_count;
		calls->committed(c);
		return;
	}
	if (r > 0 && WIFEXITED(st))
		last_error("collector %d: the command exited with %d; the batch will be given to it again", c->slot,
		           WEXITSTATUS(st));
	else
		last_error("collector %d: the command was killed by signal %d; the batch will be given to it again",
		           c->slot, r > 0 && WIFSIGNALED(st) ? WTERMSIG(st) : 0);
	calls->failed(c);
}

static int exec_fds(struct curl_waitfd *fds, int max)
{
	int n = 0;
	for (int i = 0; i < ncollectors && n < max; i++)
		if (collectors[i].state == C_SINK_BUSY && collectors[i].child_fd >= 0) {
			fds[n].fd = collectors[i].child_fd;
			fds[n].events = CURL_WAIT_POLLOUT;
			fds[n].revents = 0;
			n++;
		}
	return n;
}

static void exec_step(struct curl_waitfd *fds, int n, int64_t now)
{
	(void)fds;
	(void)n;
	for (int i = 0; i < ncollectors; i++) {
		struct collector *c = &collectors[i];
		if (c->state == C_SINK_WAIT && c->due_ms <= now && fatal_status < 0) {
			if (c->batch_count == 0) { /* nothing to hand over (no durable checkpoint to move) */
				calls->committed(c);
				continue;
			}
			spawn(c);
		}
		if (c->state == C_SINK_BUSY) {
			if (c->child_fd >= 0)
				feed(c);
			reap(c);
		}
	}
}

static bool exec_idle(void)
{
	for (int i = 0; i < ncollectors; i++)
		if (collectors[i].state == C_SINK_BUSY)
			return false;
	return true;
}

static bool exec_available(void)
{
	return true;
}

static int64_t exec_next_due(void)
{
	int64_t due = INT64_MAX;
	for (int i = 0; i < ncollectors; i++) {
		if (collectors[i].state == C_SINK_WAIT && collectors[i].due_ms < due)
			due = collectors[i].due_ms;
		if (collectors[i].state == C_SINK_BUSY && due > now_ms() + 100)
			due = now_ms() + 100; /* a child may exit without a SIGCHLD we can tie to it: look again */
	}
	return due;
}

static void exec_close(void)
{
	for (int i = 0; i < ncollectors; i++)
		buf_free(&collectors[i].out);
}

const struct sink sink_exec = {
    .name = "command",
    .open = exec_open,
    .fds = exec_fds,
    .step = exec_step,
    .idle = exec_idle,
    .available = exec_available,
    .next_due = exec_next_due,
    .close = exec_close,
    .durable = false,
};
