/*
 * xg_tls.c: OpenSSL client and server contexts (see xg_tls.h).
 */
#include "xg_core.h"
#include "xg_tls.h"
#include "xg_log.h"

#include <arpa/inet.h>
#include <stdio.h>
#include <string.h>

#include <openssl/err.h>
#include <openssl/x509v3.h>

static const unsigned char alpn_http11[] = "\x08http/1.1";

SSL_CTX *
xg_tls_client_ctx(const char *ca_file, char *err, size_t errlen)
{
    SSL_CTX *ctx;
    int ok;

    ERR_clear_error();
    ctx = SSL_CTX_new(TLS_client_method());
    if (ctx == NULL) {
        snprintf(err, errlen, "SSL_CTX_new: ");
        xg_log_ssl_errors(err, errlen);
        return NULL;
    }
    SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
    if (ca_file != NULL) {
        ok = SSL_CTX_load_verify_locations(ctx, ca_file, NULL);
    } else {
        ok = SSL_CTX_set_default_verify_paths(ctx);
    }
    if (ok != 1) {
        snprintf(err, errlen, "cannot load %s: ",
            ca_file ? ca_file : "the system trust store");
        xg_log_ssl_errors(err, errlen);
        SSL_CTX_free(ctx);
        return NULL;
    }
    /* SSL_CTX_set_alpn_protos returns 0 on success. */
    if (SSL_CTX_set_alpn_protos(ctx, alpn_http11,
            sizeof(alpn_http11) - 1) != 0)
    {
        snprintf(err, errlen, "cannot set alpn: ");
        xg_log_ssl_errors(err, errlen);
        SSL_CTX_free(ctx);
        return NULL;
    }
    return ctx;
}

/* Pick http/1.1 when the client offers it; else go on without ALPN. */
static int
alpn_select(SSL *ssl, const unsigned char **out, unsigned char *outlen,
    const unsigned char *in, unsigned int inlen, void *arg)
{
    unsigned char *sel;

    if (SSL_select_next_proto(&sel, outlen, alpn_http11,
            sizeof(alpn_http11) - 1, in, inlen) == OPENSSL_NPN_NEGOTIATED)
    {
        *out = sel;
        return SSL_TLSEXT_ERR_OK;
    }
    return SSL_TLSEXT_ERR_NOACK;
}

SSL_CTX *
xg_tls_server_ctx(const char *cert_file, const char *key_file, char *err,
    size_t errlen)
{
    SSL_CTX *ctx;

    ERR_clear_error();
    ctx = SSL_CTX_new(TLS_server_method());
    if (ctx == NULL) {
        snprintf(err, errlen, "SSL_CTX_new: ");
        xg_log_ssl_errors(err, errlen);
        return NULL;
    }
    SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
    if (SSL_CTX_use_certificate_chain_file(ctx, cert_file) != 1) {
        snprintf(err, errlen, "cannot load certificate %s: ", cert_file);
        goto fail;
    }
    if (SSL_CTX_use_PrivateKey_file(ctx, key_file, SSL_FILETYPE_PEM) != 1) {
        snprintf(err, errlen, "cannot load key %s: ", key_file);
        goto fail;
    }
    if (SSL_CTX_check_private_key(ctx) != 1) {
        snprintf(err, errlen, "key %s does not match %s: ", key_file,
            cert_file);
        goto fail;
    }
    SSL_CTX_set_alpn_select_cb(ctx, alpn_select, NULL);
    return ctx;

fail:
    xg_log_ssl_errors(err, errlen);
    SSL_CTX_free(ctx);
    return NULL;
}

int
xg_tls_client_setup(SSL *ssl, const char *host, int verify, char *err,
    size_t errlen)
{
    unsigned char ip[16];
    int is_ip;

    ERR_clear_error();
    is_ip = inet_pton(AF_INET, host, ip) == 1
        || inet_pton(AF_INET6, host, ip) == 1;
    /* RFC 6066: SNI carries host names only, never address literals. */
    if (!is_ip && SSL_set_tlsext_host_name(ssl, host) != 1) {
        snprintf(err, errlen, "cannot set sni: ");
        xg_log_ssl_errors(err, errlen);
        return -1;
    }
    if (!verify) {
        SSL_set_verify(ssl, SSL_VERIFY_NONE, NULL);
        return 0;
    }
    if (is_ip) {
        if (X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(ssl), host) != 1) {
            snprintf(err, errlen, "cannot set the ip check: ");
            xg_log_ssl_errors(err, errlen);
            return -1;
        }
    } else {
        SSL_set_hostflags(ssl, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
        if (SSL_set1_host(ssl, host) != 1) {
            snprintf(err, errlen, "cannot set the host check: ");
            xg_log_ssl_errors(err, errlen);
            return -1;
        }
    }
    SSL_set_verify(ssl, SSL_VERIFY_PEER, NULL);
    return 0;
}

char *
xg_tls_error(const SSL *ssl, char *buf, size_t len)
{
    long vr;

    if (len == 0) {
        return buf;
    }
    buf[0] = '\0';
    vr = ssl ? SSL_get_verify_result(ssl) : X509_V_OK;
    if (vr != X509_V_OK) {
        snprintf(buf, len, "certificate verify failed: %s",
            X509_verify_cert_error_string(vr));
        ERR_clear_error();
        return buf;
    }
    return xg_log_ssl_errors(buf, len);
}
