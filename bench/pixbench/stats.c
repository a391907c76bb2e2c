/*
 * stats.c — clocks, percentiles, and what /proc says about the shim and PostgreSQL: CPU seconds
 * (utime + stime, plus the reaped children's for the postmaster) and the shim's VmRSS.
 */
#include <dirent.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include "pixbench.h"

int64_t now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * SEC + ts.tv_nsec;
}

void sleep_until_ns(int64_t t)
{
	struct timespec ts = {t / SEC, t % SEC};
	while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL) == EINTR)
		;
}

static int cmp_u32(const void *a, const void *b)
{
	uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
	return x < y ? -1 : x > y;
}

double percentile_u32(uint32_t *v, long n, double p)
{
	if (n <= 0)
		return 0;
	qsort(v, n, sizeof *v, cmp_u32);
	long i = (long)(p * n);
	if (i >= n)
		i = n - 1;
	return v[i];
}

/* ppid and CPU seconds of a process; children = cutime + cstime (reaped children). */
static int read_stat(int pid, int *ppid, double *cpu, double *children)
{
	char path[64], buf[1024];
	snprintf(path, sizeof path, "/proc/%d/stat", pid);
	FILE *f = fopen(path, "r");
	if (!f)
		return -1;
	size_t n = fread(buf, 1, sizeof buf - 1, f);
	fclose(f);
	buf[n] = 0;
	char *p = strrchr(buf, ')'); /* comm may contain spaces */
	if (!p)
		return -1;
	char state;
	long pp, ut, st, cut, cst;
	/* fields after comm: 3 state, 4 ppid, ... 14 utime, 15 stime, 16 cutime, 17 cstime */
	if (sscanf(p + 2, "%c %ld %*d %*d %*d %*d %*u %*u %*u %*u %*u %ld %ld %ld %ld", &state, &pp,
	           &ut, &st, &cut, &cst) != 6)
		return -1;
	double hz = (double)sysconf(_SC_CLK_TCK);
	*ppid = (int)pp;
	*cpu = (ut + st) / hz;
	*children = (cut + cst) / hz;
	return 0;
}

static long read_rss_kb(int pid)
{
	char path[64], line[256];
	snprintf(path, sizeof path, "/proc/%d/status", pid);
	FILE *f = fopen(path, "r");
	long kb = 0;
	if (!f)
		return 0;
	while (fgets(line, sizeof line, f))
		if (strncmp(line, "VmRSS:", 6) == 0) {
			kb = strtol(line + 6, NULL, 10);
			break;
		}
	fclose(f);
	return kb;
}

/* The shim: a process whose argv[0] ends in "pixd" and whose arguments name our HOST:PORT. */
int find_shim_pid(void)
{
	char want[96];
	snprintf(want, sizeof want, "%s:%d", cfg.http_host, cfg.http_port);
	DIR *d = opendir("/proc");
	if (!d)
		return 0;
	struct dirent *de;
	int found = 0, scanned = 0;
	while ((de = readdir(d)) && !found && scanned++ < 100000) {
		int pid = atoi(de->d_name);
		if (pid <= 0)
			continue;
		char path[64], buf[4096];
		snprintf(path, sizeof path, "/proc/%d/cmdline", pid);
		FILE *f = fopen(path, "r");
		if (!f)
			continue;
		size_t n = fread(buf, 1, sizeof buf - 1, f);
		fclose(f);
		buf[n] = 0;
		size_t a0 = strlen(buf);
		if (a0 < 4 || strcmp(buf + a0 - 4, "pixd") != 0)
			continue;
		for (size_t i = 0; i < n; i += strlen(buf + i) + 1)
			if (strstr(buf + i, want))
				found = pid;
	}
	closedir(d);
	return found;
}

void proc_sample(struct proc_sample *s)
{
	int ppid;
	double cpu, ch;
	memset(s, 0, sizeof *s);
	s->t = now_ns();
	if (read_stat(getpid(), &ppid, &cpu, &ch) == 0)
		s->self_cpu_s = cpu;
	if (cfg.shim_pid > 0 && read_stat(cfg.shim_pid, &ppid, &cpu, &ch) == 0) {
		s->shim_cpu_s = cpu;
		s->shim_rss_kb = read_rss_kb(cfg.shim_pid);
	}
	if (cfg.pg_pid > 0 && read_stat(cfg.pg_pid, &ppid, &cpu, &ch) == 0) {
		s->pg_cpu_s = cpu + ch;
		DIR *d = opendir("/proc");
		struct dirent *de;
		int scanned = 0;
		while (d && (de = readdir(d)) && scanned++ < 100000) {
			int pid = atoi(de->d_name);
			if (pid > 0 && read_stat(pid, &ppid, &cpu, &ch) == 0 && ppid == cfg.pg_pid)
				s->pg_cpu_s += cpu;
		}
		if (d)
			closedir(d);
	}
}
