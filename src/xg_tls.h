/*
 * xg_tls.h: OpenSSL contexts for the WebSocket transport. A client
 * context verifies against the system store or one CA file and offers
 * ALPN http/1.1 only (a CDN that negotiates HTTP/2 breaks the Upgrade); a
 * server context is built from a certificate chain file and a key file.
 */
#ifndef XG_TLS_H
#define XG_TLS_H

#include <stddef.h>

#include <openssl/ssl.h>

/*
 * Returns a client SSL_CTX (TLS 1.2 or newer, ALPN http/1.1) whose trust
 * store is CA_FILE, or the system store (default verify paths) when
 * CA_FILE is NULL. Contexts are cached per CA file (reloaded when the
 * file changes): loading a store takes ~100 ms. The caller owns one
 * reference (SSL_CTX_free). On failure returns NULL and writes the
 * reason, OpenSSL's error queue included, to ERR.
 */
SSL_CTX *xg_tls_client_ctx(const char *ca_file, char *err, size_t errlen);

/* Frees the cached client contexts (at exit; references held elsewhere
 * stay valid). */
void xg_tls_cleanup(void);

/*
 * Returns a new server SSL_CTX (TLS 1.2 or newer) serving the chain in
 * CERT_FILE with the private key in KEY_FILE, preferring ALPN http/1.1.
 * The caller owns it. On failure returns NULL with the reason in ERR.
 */
SSL_CTX *xg_tls_server_ctx(const char *cert_file, const char *key_file,
    char *err, size_t errlen);

/*
 * Prepares a client SSL for HOST: SNI (not for an IP literal), the
 * host-name or IP check (SSL_set1_host / the IP parameter) and peer
 * verification, unless VERIFY is 0. Returns 0, or -1 with ERR filled.
 */
int xg_tls_client_setup(SSL *ssl, const char *host, int verify, char *err,
    size_t errlen);

/*
 * Writes why the handshake of SSL failed to BUF: the certificate
 * verification result when that failed ("certificate verify failed:
 * certificate has expired"), else the drained OpenSSL error queue.
 * Returns BUF.
 */
char *xg_tls_error(const SSL *ssl, char *buf, size_t len);

#endif
