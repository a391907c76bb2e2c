/*
 * pixd.c — the run state every layer shares (pixd.h).
 */
#include "pixd.h"

h2o_evloop_t *pixd_loop;
h2o_context_t pixd_ctx;
int pixd_shutting_down;

int is_ispb(const char *s, size_t len)
{
	if (len != PIXD_ISPB_LEN)
		return 0;
	for (size_t i = 0; i < len; i++)
		if (s[i] < '0' || s[i] > '9')
			return 0;
	return 1;
}
