/*
 * iteration_id.c — unguessable iteration ids.
 *
 * An id is the only credential a collector holds for its stream, so it must
 * not be guessable: 100 bits from the operating system's CSPRNG
 * (pg_strong_random), written in a URL-safe alphabet with no look-alike
 * letters. Each random byte contributes its low 5 bits; 256 is a multiple of
 * 32, so every letter is equally likely.
 */
#include "iteration_id.h"

static const char iid_alphabet[32] = "0123456789abcdefghjkmnpqrstvwxyz";

void
pix_iid_new(char *out)
{
	uint8		raw[PIX_IID_LEN];

	if (!pg_strong_random(raw, sizeof(raw)))
		ereport(ERROR, (errcode(ERRCODE_INTERNAL_ERROR),
						errmsg("could not generate a random iteration id")));
	for (int i = 0; i < PIX_IID_LEN; i++)
		out[i] = iid_alphabet[raw[i] & 31];
	out[PIX_IID_LEN] = '\0';
}

bool
pix_iid_is_wellformed(const char *s, size_t len)
{
	if (s == NULL || len != PIX_IID_LEN)
		return false;
	for (size_t i = 0; i < len; i++)
		if (memchr(iid_alphabet, s[i], sizeof(iid_alphabet)) == NULL)
			return false;
	return true;
}
