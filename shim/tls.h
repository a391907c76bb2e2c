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

#include "bearer.h"
#include "pixd.h"

struct peer;

/* Each client connection's state, in its socket's on_close.data from accept to close. */
struct client_connection {
	char credential[CREDENTIAL_MAX + 1]; /* tls.c: the verified certificate's, "" if none */
	int64_t cert_not_after;              /* tls.c: its notAfter (seconds since the epoch) */
	struct peer *peer;                   /* event_loop.c: its address's connection count */
	h2o_socket_t *sock;                  /* event_loop.c: the connection's socket */
	h2o_linklist_t link;                 /* event_loop.c: in the list of open connections */
	int shed;                            /* event_loop.c: shut down, h2o is to close it */
};

struct tls_options {
	const char *cert_file;   /* PEM chain, server certificate first */
	const char *key_file;    /* PEM private key */
	const char *client_ca;   /* PEM CA certificates for client certificates; NULL: none asked */
	int require_client_cert; /* with client_ca: the handshake fails without a certificate */
};

/* The server context (TLS 1.2 and 1.3 only, AEAD ciphers, ALPN http/1.1 only: pixd speaks
 * HTTP/1.1, as ICOM does), or NULL after printing why on stderr. */
SSL_CTX *tls_context_new(const struct tls_options *o);

/* Per-connection state: call tls_connection_new at accept and keep its result in the socket's
 * on_close.data; tls_connection_free it from on_close. NULL-safe. */
struct client_connection *tls_connection_new(void);
void tls_connection_free(struct client_connection *c);

/* Handshakes pixd ended with a fatal alert (no, untrusted or expired client certificate, ...). */
uint64_t tls_handshakes_refused(void);

/* The verified client certificate's credential on the request's connection, or NULL (none, or
 * its notAfter has passed since the handshake: *expired is then set to 1). A kept-alive
 * connection must not outlive its certificate. */
const char *tls_peer_credential(h2o_req_t *req, int *expired);

#endif
