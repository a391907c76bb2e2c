/*
 * tls.c — pixbench's side of HTTPS: one client SSL_CTX (TLS 1.2+, the server verified against
 * --tls-ca, the client certificate of --tls-cert/--tls-key for mutual TLS, no session resumption so
 * every connection pays its handshake as a new collector would), and the Authorization header of
 * --token.
 */
#include <stdlib.h>
#include <string.h>
#include <openssl/err.h>
#include "pixbench.h"

SSL_CTX *tls_client_context(void)
{
	static SSL_CTX *ctx;

	if (!cfg.tls_ca || ctx)
		return ctx;
	ctx = SSL_CTX_new(TLS_client_method());
	if (!ctx || SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION) != 1 ||
	    SSL_CTX_load_verify_locations(ctx, cfg.tls_ca, NULL) != 1 ||
	    (cfg.tls_cert && (SSL_CTX_use_certificate_chain_file(ctx, cfg.tls_cert) != 1 ||
	                      SSL_CTX_use_PrivateKey_file(ctx, cfg.tls_key ? cfg.tls_key : cfg.tls_cert,
	                                                  SSL_FILETYPE_PEM) != 1))) {
		fprintf(stderr, "pixbench: TLS setup: ");
		ERR_print_errors_fp(stderr);
		exit(2);
	}
	SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
	SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
	SSL_CTX_set_options(ctx, SSL_OP_NO_TICKET);
	return ctx;
}

const char *auth_header(void)
{
	static char header[600];

	if (!cfg.token)
		return "";
	if (!header[0])
		snprintf(header, sizeof header, "Authorization: Bearer %s\r\n", cfg.token);
	return header;
}
