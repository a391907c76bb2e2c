/*
 * check.h — the two assertions the pure-C unit tests share (header-only): each counts a pass or
 * prints the failure; a test program ends with printf("%d passed, %d failed\n", passed, failed).
 */
#ifndef PIX_UNIT_CHECK_H
#define PIX_UNIT_CHECK_H

#include <stdbool.h>
#include <stdio.h>
#include <string.h>

static int passed, failed;

static void check(bool ok, const char *what)
{
	if (ok)
		passed++;
	else {
		failed++;
		printf("FAIL: %s\n", what);
	}
}

static void check_str(const char *got, const char *want, const char *what)
{
	bool ok = got != NULL && strcmp(got, want) == 0;

	check(ok, what);
	if (!ok)
		printf("  got:  %s\n  want: %s\n", got ? got : "(null)", want);
}

#endif
