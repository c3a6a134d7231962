/*
 * xg_tls.c: OpenSSL client and server contexts (see xg_tls.h).
 */
#include "xg_core.h"
#include "xg_tls.h"
#include "xg_log.h"

#include <arpa/inet.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include <openssl/err.h>
#include <openssl/x509v3.h>

static const unsigned char alpn_http11[] = "\x08http/1.1";

/*
 * Client contexts are cached: loading the system store costs about 100 ms
 * with OpenSSL 3.0 (its decoders are slow), far too long to block the
 * loop on every reconnect. An entry is keyed by the CA file and its
 * identity on disk, so a replaced file is loaded again.
 */
#define TLS_CACHE_SIZE 8

struct tls_cache_entry {
    char      *ca_file;     /* NULL: the system store */
    dev_t      dev;
    ino_t      ino;
    off_t      size;
    struct timespec mtime;  /* to the ns: a rewrite within a second counts */
    SSL_CTX   *ctx;
    uint64_t   used;
};

static struct tls_cache_entry tls_cache[TLS_CACHE_SIZE];
static uint64_t tls_cache_clock;

static SSL_CTX *tls_client_ctx_new(const char *ca_file, char *err,
    size_t errlen);

SSL_CTX *
xg_tls_client_ctx(const char *ca_file, char *err, size_t errlen)
{
    struct tls_cache_entry *e, *victim;
    struct stat st;
    SSL_CTX *ctx;
    size_t i;

    memset(&st, 0, sizeof(st));
    if (ca_file != NULL && stat(ca_file, &st) != 0) {
        snprintf(err, errlen, "cannot load %s: %s", ca_file, strerror(errno));
        return NULL;
    }
    victim = &tls_cache[0];
    for (i = 0; i < TLS_CACHE_SIZE; i++) {
        e = &tls_cache[i];
        if (e->ctx != NULL
            && ((ca_file == NULL && e->ca_file == NULL)
                || (ca_file != NULL && e->ca_file != NULL
                    && strcmp(ca_file, e->ca_file) == 0)))
        {
            if (e->dev == st.st_dev && e->ino == st.st_ino
                && e->size == st.st_size
                && e->mtime.tv_sec == st.st_mtim.tv_sec
                && e->mtime.tv_nsec == st.st_mtim.tv_nsec)
            {
                e->used = ++tls_cache_clock;
                SSL_CTX_up_ref(e->ctx);
                return e->ctx;
            }
            victim = e;     /* the file changed: replace this entry */
            break;
        }
        if (e->ctx == NULL || e->used < victim->used) {
            victim = e;
        }
    }
    ctx = tls_client_ctx_new(ca_file, err, errlen);
    if (ctx == NULL) {
        return NULL;
    }
    if (victim->ctx != NULL) {
        SSL_CTX_free(victim->ctx);
    }
    free(victim->ca_file);
    victim->ca_file = ca_file ? xg_strdup(ca_file) : NULL;
    victim->dev = st.st_dev;
    victim->ino = st.st_ino;
    victim->size = st.st_size;
    victim->mtime = st.st_mtim;
    victim->ctx = ctx;
    victim->used = ++tls_cache_clock;
    SSL_CTX_up_ref(ctx);
    return ctx;
}

void
xg_tls_cleanup(void)
{
    size_t i;

    for (i = 0; i < TLS_CACHE_SIZE; i++) {
        if (tls_cache[i].ctx != NULL) {
            SSL_CTX_free(tls_cache[i].ctx);
        }
        free(tls_cache[i].ca_file);
        memset(&tls_cache[i], 0, sizeof(tls_cache[i]));
    }
}

static SSL_CTX *
tls_client_ctx_new(const char *ca_file, char *err, size_t errlen)
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
