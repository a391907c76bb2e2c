/*
 * tls.h — HTTPS on libh2o 2.2.5's own OpenSSL integration: one SSL_CTX set on the accept
 * context, which makes h2o_accept run the handshake (h2o_socket_ssl_handshake) before HTTP.
 *
 * With a client CA, the handshake asks for a client certificate and verifies its chain (expiry
 * included); with the certificate mandatory, a client without a valid one never gets past the
 * handshake. The certificate's credential ("cert:" + SHA-256 of its DER, bearer.h) is computed
 * once per connection when the handshake completes and kept with the connection.
 */
#ifndef PIXD_TLS_H
#define PIXD_TLS_H

#include "pixd.h"

struct tls_options {
	const char *cert_file;   /* PEM chain, server certificate first */
	const char *key_file;    /* PEM private key */
	const char *client_ca;   /* PEM CA certificates for client certificates; NULL: none asked */
	int require_client_cert; /* with client_ca: the handshake fails without a certificate */
};

/* The server context (TLS 1.2 and 1.3 only, AEAD ciphers, ALPN h2 and http/1.1), or NULL after
 * printing why on stderr. */
SSL_CTX *tls_context_new(const struct tls_options *o);

/* Per-connection state: call tls_connection_new at accept and keep its result in the socket's
 * on_close.data; tls_connection_free it from on_close. NULL-safe. */
void *tls_connection_new(void);
void tls_connection_free(void *state);

/* Handshakes pixd ended with a fatal alert (no, untrusted or expired client certificate, ...). */
uint64_t tls_handshakes_refused(void);

/* The verified client certificate's credential on the request's connection, or NULL. */
const char *tls_peer_credential(h2o_req_t *req);

#endif
