/*
 * xg_rtls.c: rediss:// for a hiredis without TLS (see xg_rtls.h).
 *
 * Debian 12's hiredis (0.14) has no SSL support and its async context
 * connects only to a host and port or a unix socket path. So a TLS
 * connection is a small tunnel made for each attempt: a unix socket in a
 * fresh private directory (0700) that hiredis connects to, accepted once,
 * whose bytes are copied both ways to a libevent OpenSSL bufferevent to
 * the server, verified as the WebSocket side verifies (xg_tls.h: the
 * chain against tls_ca or the system store, the host name or IP). The
 * listener, the socket file and its directory go at the accept. Hand-
 * written because no library here does it: stunnel would be a second
 * process to supervise.
 */
#include "xg_core.h"
#include "xg_rtls.h"
#include "xg_tls.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <event2/listener.h>
#include <openssl/err.h>
#include <openssl/ssl.h>

struct xg_rtls {
    struct event_base      *base;
    struct evconnlistener  *lev;
    struct bufferevent     *local;      /* hiredis' end */
    struct bufferevent     *tls;        /* the server's */
    SSL                    *ssl;
    char                    dir[64];
    char                    path[108];
    int                     connected;
    void                  (*on_up)(void *arg);
    void                   *arg;
    char                    why[256];   /* the first failure */
};

static void
rt_unlink(struct xg_rtls *t)
{
    if (t->path[0] != '\0') {
        (void) unlink(t->path);
        t->path[0] = '\0';
    }
    if (t->dir[0] != '\0') {
        (void) rmdir(t->dir);
        t->dir[0] = '\0';
    }
}

/* The tunnel is over (REASON kept if it is the first): both ends go, and
   hiredis reads its end of file. */
static void
rt_end(struct xg_rtls *t, const char *reason)
{
    if (t->why[0] == '\0' && reason != NULL) {
        snprintf(t->why, sizeof(t->why), "%s", reason);
    }
    if (t->lev != NULL) {
        evconnlistener_free(t->lev);
        t->lev = NULL;
    }
    rt_unlink(t);
    if (t->local != NULL) {
        bufferevent_free(t->local);
        t->local = NULL;
    }
    if (t->tls != NULL) {
        bufferevent_free(t->tls);    /* frees its SSL */
        t->tls = NULL;
        t->ssl = NULL;
    }
}

static void
rt_copy(struct bufferevent *from, struct bufferevent *to)
{
    if (to != NULL) {
        (void) evbuffer_add_buffer(bufferevent_get_output(to),
            bufferevent_get_input(from));
    } else {
        (void) evbuffer_drain(bufferevent_get_input(from),
            evbuffer_get_length(bufferevent_get_input(from)));
    }
}

static void
rt_local_read(struct bufferevent *bev, void *arg)
{
    struct xg_rtls *t = arg;

    rt_copy(bev, t->tls);
}

static void
rt_tls_read(struct bufferevent *bev, void *arg)
{
    struct xg_rtls *t = arg;

    rt_copy(bev, t->local);
}

static void
rt_local_event(struct bufferevent *bev, short what, void *arg)
{
    struct xg_rtls *t = arg;

    if (what & (BEV_EVENT_EOF | BEV_EVENT_ERROR)) {
        rt_end(t, "closed by hiredis");
    }
}

static void
rt_tls_event(struct bufferevent *bev, short what, void *arg)
{
    struct xg_rtls *t = arg;
    char why[256], tmp[200];

    if (what & BEV_EVENT_CONNECTED) {
        t->connected = 1;
        if (t->on_up != NULL) {
            t->on_up(t->arg);   /* may free T: nothing after it */
        }
        return;
    }
    if (!(what & (BEV_EVENT_EOF | BEV_EVENT_ERROR))) {
        return;
    }
    if (!t->connected) {
        if (t->ssl != NULL && ERR_peek_error() != 0) {
            snprintf(why, sizeof(why), "tls: %s",
                xg_tls_error(t->ssl, tmp, sizeof(tmp)));
        } else if (t->ssl != NULL
            && SSL_get_verify_result(t->ssl) != X509_V_OK)
        {
            snprintf(why, sizeof(why), "tls: %s",
                xg_tls_error(t->ssl, tmp, sizeof(tmp)));
        } else {
            snprintf(why, sizeof(why), "tls: connect failed: %s",
                (what & BEV_EVENT_EOF) ? "closed by the server"
                : evutil_socket_error_to_string(EVUTIL_SOCKET_ERROR()));
        }
    } else {
        snprintf(why, sizeof(why), "tls: %s", (what & BEV_EVENT_EOF)
            ? "closed by the server" : "read or write failed");
    }
    rt_end(t, why);
}

static void
rt_accept(struct evconnlistener *lev, evutil_socket_t fd,
    struct sockaddr *sa, int socklen, void *arg)
{
    struct xg_rtls *t = arg;

    /* one connection: the way in closes behind it */
    evconnlistener_free(t->lev);
    t->lev = NULL;
    rt_unlink(t);
    if (t->local != NULL || t->tls == NULL) {
        evutil_closesocket(fd);
        return;
    }
    t->local = bufferevent_socket_new(t->base, fd, BEV_OPT_CLOSE_ON_FREE);
    if (t->local == NULL) {
        evutil_closesocket(fd);
        rt_end(t, "out of memory");
        return;
    }
    bufferevent_setcb(t->local, rt_local_read, NULL, rt_local_event, t);
    (void) bufferevent_enable(t->local, EV_READ | EV_WRITE);
    /* what the server sent before hiredis came in */
    rt_copy(t->tls, t->local);
}

/* See xg_rtls.h. */
struct xg_rtls *
xg_rtls_new(struct event_base *base, const char *host, uint16_t port,
    const char *tls_ca, int tls_verify, void (*on_up)(void *arg), void *arg,
    char *err, size_t errlen)
{
    struct xg_rtls *t = xg_calloc(1, sizeof(*t));
    struct sockaddr_un sun;
    SSL_CTX *ctx;
    char why[200];
    evutil_socket_t fd;

    t->base = base;
    t->on_up = on_up;
    t->arg = arg;
    snprintf(t->dir, sizeof(t->dir), "/tmp/exgate-rtls-XXXXXX");
    if (mkdtemp(t->dir) == NULL) {
        snprintf(err, errlen, "tls: cannot make a private directory: %s",
            strerror(errno));
        t->dir[0] = '\0';
        free(t);
        return NULL;
    }
    snprintf(t->path, sizeof(t->path), "%s/s", t->dir);
    memset(&sun, 0, sizeof(sun));
    sun.sun_family = AF_UNIX;
    snprintf(sun.sun_path, sizeof(sun.sun_path), "%s", t->path);
    fd = socket(AF_UNIX, SOCK_STREAM, 0);
    if (fd < 0 || bind(fd, (struct sockaddr *) &sun, sizeof(sun)) != 0
        || listen(fd, 1) != 0 || evutil_make_socket_nonblocking(fd) != 0)
    {
        snprintf(err, errlen, "tls: local socket: %s", strerror(errno));
        if (fd >= 0) {
            evutil_closesocket(fd);
        }
        xg_rtls_free(t);
        return NULL;
    }
    t->lev = evconnlistener_new(base, rt_accept, t,
        LEV_OPT_CLOSE_ON_FREE | LEV_OPT_CLOSE_ON_EXEC, -1, fd);
    if (t->lev == NULL) {
        evutil_closesocket(fd);
        snprintf(err, errlen, "tls: cannot listen on the local socket");
        xg_rtls_free(t);
        return NULL;
    }
    ctx = xg_tls_client_ctx(tls_ca, why, sizeof(why));
    if (ctx == NULL) {
        snprintf(err, errlen, "tls: %s", why);
        xg_rtls_free(t);
        return NULL;
    }
    t->ssl = SSL_new(ctx);
    SSL_CTX_free(ctx);
    if (t->ssl == NULL || xg_tls_client_setup(t->ssl, host, tls_verify, why,
            sizeof(why)) != 0)
    {
        snprintf(err, errlen, "tls: %s", t->ssl != NULL ? why
            : "SSL_new failed");
        if (t->ssl != NULL) {
            SSL_free(t->ssl);
            t->ssl = NULL;
        }
        xg_rtls_free(t);
        return NULL;
    }
    t->tls = bufferevent_openssl_socket_new(base, -1, t->ssl,
        BUFFEREVENT_SSL_CONNECTING, BEV_OPT_CLOSE_ON_FREE);
    if (t->tls == NULL) {
        SSL_free(t->ssl);
        t->ssl = NULL;
        snprintf(err, errlen, "tls: cannot make a tls bufferevent");
        xg_rtls_free(t);
        return NULL;
    }
    bufferevent_setcb(t->tls, rt_tls_read, NULL, rt_tls_event, t);
    (void) bufferevent_enable(t->tls, EV_READ | EV_WRITE);
    /* a name is resolved with a blocking getaddrinfo(), as hiredis does
       for redis://: give an address, or a name from /etc/hosts */
    if (bufferevent_socket_connect_hostname(t->tls, NULL, AF_UNSPEC, host,
            port) != 0)
    {
        snprintf(err, errlen, "tls: connect to %s:%u failed", host,
            (unsigned) port);
        xg_rtls_free(t);
        return NULL;
    }
    return t;
}

/* See xg_rtls.h. */
const char *
xg_rtls_path(const struct xg_rtls *t)
{
    return t->path;
}

/* See xg_rtls.h. */
int
xg_rtls_up(const struct xg_rtls *t)
{
    return t->connected;
}

/* See xg_rtls.h. */
const char *
xg_rtls_why(const struct xg_rtls *t)
{
    return t->why[0] != '\0' ? t->why : NULL;
}

/* See xg_rtls.h. */
void
xg_rtls_free(struct xg_rtls *t)
{
    if (t == NULL) {
        return;
    }
    rt_end(t, NULL);
    if (t->ssl != NULL) {
        SSL_free(t->ssl);   /* never given to a bufferevent */
    }
    free(t);
}
