/*
 * tls.c — the server's SSL_CTX and the client certificate's credential per connection.
 *
 * libh2o 2.2.5 keeps its SSL object private (struct st_h2o_socket_ssl_t). Two public facts link
 * an SSL to our connection state: h2o's BIO carries the h2o_socket_t (BIO_get_data), and
 * event_loop.c stores our per-connection state in that socket's on_close.data at accept. The info
 * callback, at SSL_CB_HANDSHAKE_DONE, hashes the peer certificate into that state; requests read
 * it through req->conn's socket. Computed once per connection, whatever the number of requests.
 *
 * Session resumption (tickets, cache) is off: every connection verifies its chain afresh, so an
 * expired certificate cannot ride on an old session. Keep-alive makes resumption rarely useful.
 * The certificate's notAfter is kept too and checked on every request: a kept-alive connection
 * does not outlive its certificate (the request is then unauthenticated, and the connection closes
 * after its answer, so the next handshake refuses the certificate).
 *
 * ALPN offers http/1.1 only: HTTP/2 would let one connection hold 100 concurrent requests, each
 * with a body, kept alive by PINGs (issue 18), and ICOM itself is HTTP/1.1.
 *
 * A handshake the server refuses (no certificate, another CA's, an expired one) is a failed
 * authentication that never reaches HTTP: the same callback sees the fatal alert pixd sends, counts
 * it (auth.c puts it in /metrics as reason "tls_handshake") and logs the address and the alert, at
 * most LOG_PER_SECOND lines a second.
 */
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <openssl/err.h>
#include <openssl/x509.h>
#include "bearer.h"
#include "tls.h"

/* Mozilla's "intermediate" TLS 1.2 list: forward secrecy and AEAD only. TLS 1.3 suites are all
 * AEAD; OpenSSL's defaults stand. */
#define TLS12_CIPHERS                                                                              \
	"ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:"                                   \
	"ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384:"                                   \
	"ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305"
#define VERIFY_DEPTH 4
#define LOG_PER_SECOND 20

static void on_info(const SSL *ssl, int where, int ret);
static void handshake_refused(const SSL *ssl, h2o_socket_t *sock, int alert);

static uint64_t refused; /* handshakes ended by a fatal alert from pixd */
static const h2o_iovec_t http1_only[] = {{H2O_STRLIT("http/1.1")}, {NULL, 0}};
static int load_client_ca(SSL_CTX *ctx, const struct tls_options *o);
static void print_errors(const char *what, const char *file);

static void print_errors(const char *what, const char *file)
{
	unsigned long e = ERR_get_error();
	char buf[256];

	ERR_error_string_n(e, buf, sizeof(buf));
	fprintf(stderr, "pixd: %s %s: %s\n", what, file != NULL ? file : "", e != 0 ? buf : "");
	ERR_clear_error();
}

static int load_client_ca(SSL_CTX *ctx, const struct tls_options *o)
{
	STACK_OF(X509_NAME) * names;

	if (SSL_CTX_load_verify_locations(ctx, o->client_ca, NULL) != 1) {
		print_errors("--client-ca: cannot load", o->client_ca);
		return -1;
	}
	/* The CA names sent in CertificateRequest let a client pick the right certificate. */
	if ((names = SSL_load_client_CA_file(o->client_ca)) == NULL) {
		print_errors("--client-ca: no certificate in", o->client_ca);
		return -1;
	}
	SSL_CTX_set_client_CA_list(ctx, names);
	SSL_CTX_set_verify(
	    ctx, SSL_VERIFY_PEER | (o->require_client_cert ? SSL_VERIFY_FAIL_IF_NO_PEER_CERT : 0),
	    NULL);
	SSL_CTX_set_verify_depth(ctx, VERIFY_DEPTH);
	return 0;
}

SSL_CTX *tls_context_new(const struct tls_options *o)
{
	SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());

	if (ctx == NULL) {
		print_errors("cannot create the TLS context", NULL);
		return NULL;
	}
	SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
	SSL_CTX_set_options(ctx, SSL_OP_NO_COMPRESSION | SSL_OP_NO_RENEGOTIATION | SSL_OP_NO_TICKET);
	SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
	SSL_CTX_set_num_tickets(ctx, 0);
	if (SSL_CTX_set_cipher_list(ctx, TLS12_CIPHERS) != 1) {
		print_errors("cannot set the TLS 1.2 ciphers", NULL);
		goto fail;
	}
	if (SSL_CTX_use_certificate_chain_file(ctx, o->cert_file) != 1) {
		print_errors("--tls-cert: cannot load", o->cert_file);
		goto fail;
	}
	if (SSL_CTX_use_PrivateKey_file(ctx, o->key_file, SSL_FILETYPE_PEM) != 1) {
		print_errors("--tls-key: cannot load", o->key_file);
		goto fail;
	}
	if (SSL_CTX_check_private_key(ctx) != 1) {
		print_errors("--tls-key does not match --tls-cert", o->key_file);
		goto fail;
	}
	if (o->client_ca != NULL && load_client_ca(ctx, o) != 0)
		goto fail;
	SSL_CTX_set_info_callback(ctx, on_info);
	h2o_ssl_register_alpn_protocols(ctx, http1_only);
	return ctx;
fail:
	SSL_CTX_free(ctx);
	return NULL;
}

/* Handshake done: the peer's chain was verified (or none was sent where that is allowed). */
static void on_info(const SSL *ssl, int where, int ret)
{
	BIO *bio;
	h2o_socket_t *sock;
	struct client_connection *c;
	X509 *cert;
	struct tm not_after;
	unsigned char *der = NULL;
	int len;

	if ((bio = SSL_get_rbio(ssl)) == NULL || (sock = BIO_get_data(bio)) == NULL)
		return;
	if ((where & SSL_CB_WRITE_ALERT) == SSL_CB_WRITE_ALERT && !SSL_is_init_finished(ssl) &&
	    SSL_alert_type_string(ret)[0] == 'F') {
		handshake_refused(ssl, sock, ret);
		return;
	}
	if (!(where & SSL_CB_HANDSHAKE_DONE) || (c = sock->on_close.data) == NULL)
		return;
	c->credential[0] = '\0';
	if (SSL_get_verify_result(ssl) != X509_V_OK || (cert = SSL_get1_peer_certificate(ssl)) == NULL)
		return;
	/* no notAfter that OpenSSL can read: the credential is not kept (the chain was verified) */
	if (ASN1_TIME_to_tm(X509_get0_notAfter(cert), &not_after) == 1 &&
	    (len = i2d_X509(cert, &der)) > 0) {
		bearer_cert_credential(der, (size_t)len, c->credential);
		c->cert_not_after = (int64_t)timegm(&not_after);
	}
	OPENSSL_free(der);
	X509_free(cert);
}

static void handshake_refused(const SSL *ssl, h2o_socket_t *sock, int alert)
{
	static uint64_t second;
	static int lines;
	struct sockaddr_storage ss;
	socklen_t len = h2o_socket_getpeername(sock, (struct sockaddr *)&ss);
	char peer[NI_MAXHOST] = "?";
	long verify = SSL_get_verify_result(ssl);

	refused++;
	if (h2o_now(pixd_loop) / 1000 != second) {
		second = h2o_now(pixd_loop) / 1000;
		lines = 0;
	}
	if (lines++ >= LOG_PER_SECOND)
		return;
	if (len != 0)
		getnameinfo((struct sockaddr *)&ss, len, peer, sizeof(peer), NULL, 0, NI_NUMERICHOST);
	/* alert 116 is TLS 1.3's "certificate required", which OpenSSL 3.0 names "unknown" */
	pixd_log("authentication failed (tls_handshake) from %s: alert %d (%s)%s%s", peer, alert & 0xff,
	         (alert & 0xff) == 116 ? "certificate required" : SSL_alert_desc_string_long(alert),
	         verify != X509_V_OK ? ", " : "",
	         verify != X509_V_OK ? X509_verify_cert_error_string(verify) : "");
}

uint64_t tls_handshakes_refused(void)
{
	return refused;
}

struct client_connection *tls_connection_new(void)
{
	struct client_connection *c = calloc(1, sizeof(*c));

	if (c == NULL)
		h2o_fatal("out of memory");
	return c;
}

void tls_connection_free(struct client_connection *c)
{
	free(c);
}

const char *tls_peer_credential(h2o_req_t *req, int *expired)
{
	h2o_socket_t *sock = req->conn->callbacks->get_socket(req->conn);
	struct client_connection *c;

	*expired = 0;
	if (sock == NULL || sock->ssl == NULL || (c = sock->on_close.data) == NULL ||
	    c->credential[0] == '\0')
		return NULL;
	if ((int64_t)time(NULL) > c->cert_not_after) {
		*expired = 1;
		return NULL;
	}
	return c->credential;
}
