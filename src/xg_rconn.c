/*
 * xg_rconn.c: one Redis connection kept up (see xg_rconn.h).
 *
 * The context is only ever freed through rc_close(), which detaches it
 * first (ac->data = NULL) so that its disconnect callback knows it was
 * expected; hiredis defers a free asked for inside one of its callbacks
 * until the callback returns.
 */
#include "xg_core.h"
#include "xg_rconn.h"
#include "xg_rreply.h"
#include "xg_log.h"
#include "xg_reconnect.h"
#include "xg_rtls.h"
#include "xg_timer.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/event.h>
#include <hiredis/hiredis.h>
#include <hiredis/async.h>
#include <sys/socket.h>
#include <openssl/crypto.h>
#include <openssl/rand.h>

struct xg_rconn {
    struct event_base              *base;
    char                           *prefix;     /* of its log lines */
    struct xg_addr                  addr;
    char                           *password;
    char                            where[300];
    const struct xg_upstream_conf  *uc;
    const struct xg_rconn_cbs      *cbs;
    void                           *arg;

    redisAsyncContext              *ac;
    struct xg_rtls                 *tun;        /* rediss://: its tunnel */
    int                             tls;
    char                           *tls_ca;
    int                             tls_verify;
    int                             block_replies;
    enum xg_rconn_state             state;
    struct xg_reconnect             rc;
    struct xg_timer                *ev_retry;
    struct xg_timer                *ev_timeout;
    struct xg_timer                *ev_tls_up;  /* rc_on_tls_up() */
    int                             gave_up;

    uint64_t                        connects;
    uint64_t                        attempts;
    uint64_t                        disconnects;
    uint64_t                        auth_errors;
    char                            last_error[160];
};

static const char *const rc_state_names[] = {
    "disconnected", "connecting", "authenticating", "connected", "off"
};

static void rc_connect(struct xg_rconn *r);

/* See xg_rconn.h. */
uint64_t
xg_rconn_rand(void *arg)
{
    uint64_t v;

    if (RAND_bytes((unsigned char *) &v, sizeof(v)) != 1) {
        v = xg_now_us() * 0x9e3779b97f4a7c15ULL;
    }
    return v;
}

static void
rc_log(int level, const struct xg_rconn *r, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void
rc_log(int level, const struct xg_rconn *r, const char *fmt, ...)
{
    char msg[512];
    va_list ap;

    if (level > xg_log_level) {
        return;
    }
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    xg_log(level, "%s: %s", r->prefix, msg);
}

static void
rc_copy(char *dst, size_t len, const char *src, size_t n)
{
    if (n >= len) {
        n = len - 1;
    }
    memcpy(dst, src, n);
    dst[n] = '\0';
}

/* Frees the context, if any, with no callback to the owner. */
static void
rc_close(struct xg_rconn *r)
{
    redisAsyncContext *ac = r->ac;

    r->ac = NULL;
    xg_timer_del(r->ev_timeout);
    xg_timer_del(r->ev_tls_up);
    if (ac != NULL) {
        ac->data = NULL;
        redisAsyncFree(ac);
    }
    xg_rtls_free(r->tun);
    r->tun = NULL;
}

/* REASON, or what the TLS tunnel says failed first. */
static const char *
rc_why(const struct xg_rconn *r, const char *reason)
{
    const char *w = r->tun != NULL ? xg_rtls_why(r->tun) : NULL;

    return w != NULL && strcmp(w, "closed by hiredis") != 0 ? w : reason;
}

/* The connection failed or went down for REASON: the next try is
   scheduled, logged at LEVEL; the owner is told. */
static void
rc_failed_at(struct xg_rconn *r, int level, const char *reason)
{
    struct xg_reconnect_failure f;
    struct xg_reconnect_decision d;
    struct xg_reconnect_env env;
    char note[160];

    rc_copy(r->last_error, sizeof(r->last_error), reason, strlen(reason));
    r->state = XG_RCONN_DOWN;
    xg_timer_del(r->ev_timeout);
    f.reason = reason;
    f.http_status = 0;
    f.retry_after_s = -1;
    env.now_ms = xg_now_ms();
    env.rand = xg_rconn_rand;
    env.rand_arg = NULL;
    xg_reconnect_failed(&r->rc, &f, &env, &d);
    note[0] = '\0';
    if (r->cbs->note != NULL) {
        r->cbs->note(r->arg, note, sizeof(note));
    }
    if (d.action == XG_RECONNECT_GIVE_UP) {
        r->gave_up = 1;
        rc_log(XG_LOG_ERROR, r, "%s; giving up after %u attempts in a row "
            "(max_attempts)%s", reason, r->rc.max_attempts, note);
    } else {
        rc_log(level, r, "%s; retry in %llums%s%s", reason,
            (unsigned long long) d.delay_ms,
            d.action == XG_RECONNECT_OPEN ? " (breaker open)" : "", note);
        xg_timer_add_ms(r->ev_retry, d.delay_ms);
    }
    if (r->cbs->on_down != NULL) {
        r->cbs->on_down(r->arg, reason);
    }
}

static void
rc_ready(struct xg_rconn *r)
{
    r->state = XG_RCONN_READY;
    r->connects++;
    r->last_error[0] = '\0';
    xg_timer_del(r->ev_timeout);
    xg_reconnect_ready(&r->rc, xg_now_ms());
    rc_log(XG_LOG_INFO, r, "connected%s", r->password != NULL
        ? " (auth ok)" : "");
    r->cbs->on_ready(r->arg, r->ac);
}

static void
rc_on_auth(redisAsyncContext *ac, void *reply, void *priv)
{
    struct xg_rconn *r = ac->data;
    redisReply *rep = reply;
    char why[200];

    if (r == NULL || r->ac != ac || r->state != XG_RCONN_AUTH) {
        return;
    }
    if (rep != NULL && rep->type == REDIS_REPLY_STATUS) {
        rc_ready(r);
        return;
    }
    if (rep != NULL && rep->type == REDIS_REPLY_ERROR) {
        snprintf(why, sizeof(why), "auth failed: %.*s",
            (int) (rep->len > 120 ? 120 : rep->len), rep->str);
    } else {
        snprintf(why, sizeof(why), "auth failed: %s",
            rc_why(r, "no answer"));
    }
    r->auth_errors++;
    rc_close(r);
    rc_failed_at(r, XG_LOG_ERROR, why);
}

/* Connected end to end (for rediss://, the server's certificate checked):
   AUTH if there is a password, else ready. */
static void
rc_linked(struct xg_rconn *r)
{
    if (r->password == NULL) {
        rc_ready(r);
        return;
    }
    /* not freed from here (hiredis is not in a callback yet): if it
       cannot be sent, the connect timeout ends the attempt */
    r->state = XG_RCONN_AUTH;
    (void) redisAsyncCommand(r->ac, rc_on_auth, NULL, "AUTH %s",
        r->password);
}

static void
rc_on_connect(const redisAsyncContext *cac, int status)
{
    redisAsyncContext *ac = (redisAsyncContext *) cac;
    struct xg_rconn *r = ac->data;
    char why[200];

    if (r == NULL || r->ac != ac) {
        return;
    }
    if (status != REDIS_OK) {
        /* hiredis frees the context after this callback */
        snprintf(why, sizeof(why), "connect failed: %s",
            ac->errstr[0] != '\0' ? ac->errstr : "error");
        ac->data = NULL;
        r->ac = NULL;
        xg_rtls_free(r->tun);
        r->tun = NULL;
        rc_failed_at(r, XG_LOG_WARN, why);
        return;
    }
    if (r->tun != NULL && !xg_rtls_up(r->tun)) {
        return;     /* only the tunnel's end: rc_on_tls_up() goes on */
    }
    rc_linked(r);
}

/* rediss://: the tunnel's TLS handshake and checks are done. Goes on
   from a timer, not inside the tunnel's bufferevent callback: what the
   owner's on_ready does may free the tunnel. */
static void
rc_on_tls_up(void *arg)
{
    struct xg_rconn *r = arg;

    xg_timer_add_ms(r->ev_tls_up, 0);
}

static void
rc_on_tls_up_timer(evutil_socket_t fd, short what, void *arg)
{
    struct xg_rconn *r = arg;

    /* hiredis marks its context connected before rc_on_connect() */
    if (r->state == XG_RCONN_CONNECTING && r->ac != NULL
        && (r->ac->c.flags & REDIS_CONNECTED)
        && r->tun != NULL && xg_rtls_up(r->tun))
    {
        rc_linked(r);
    }
}

static void
rc_on_disconnect(const redisAsyncContext *cac, int status)
{
    redisAsyncContext *ac = (redisAsyncContext *) cac;
    struct xg_rconn *r = ac->data;
    char why[200];

    if (r == NULL || r->ac != ac) {
        return;     /* rc_close() asked for it */
    }
    /* hiredis frees the context after this callback */
    ac->data = NULL;
    r->ac = NULL;
    if (r->state == XG_RCONN_READY) {
        r->disconnects++;
    }
    snprintf(why, sizeof(why), "%s: %s", r->state == XG_RCONN_READY
        ? "connection lost" : r->state == XG_RCONN_AUTH ? "auth failed"
        : "connect failed",
        rc_why(r, ac->err != 0 && ac->errstr[0] != '\0' ? ac->errstr
        : "closed"));
    xg_rtls_free(r->tun);
    r->tun = NULL;
    rc_failed_at(r, XG_LOG_WARN, why);
}

static void
rc_on_timeout(evutil_socket_t fd, short what, void *arg)
{
    struct xg_rconn *r = arg;
    char why[80];

    if (r->state != XG_RCONN_CONNECTING && r->state != XG_RCONN_AUTH) {
        return;
    }
    snprintf(why, sizeof(why), "%s timeout (%llums)",
        r->state == XG_RCONN_AUTH ? "auth" : "connect",
        (unsigned long long) r->uc->connect_timeout_ms);
    rc_close(r);
    rc_failed_at(r, XG_LOG_WARN, why);
}

static void
rc_on_retry(evutil_socket_t fd, short what, void *arg)
{
    struct xg_rconn *r = arg;

    if (r->state == XG_RCONN_DOWN && r->ac == NULL) {
        rc_connect(r);
    }
}

/* ---- hiredis on the loop ------------------------------------------------- */

/*
 * hiredis' own libevent adapter (hiredis/adapters/libevent.h) adds its
 * read event again after every read (an epoll_ctl each way) and hiredis
 * reads 16 kB at a time: an edge's 32 kB reply was two reads, four
 * epoll_ctl and a loop pass between them. This adapter keeps the read
 * event persistent and reads what the socket has in one recv() of up to
 * RC_READ_MAX bytes, feeds it to the context's reader and runs the
 * replies' callbacks (redisProcessCallbacks(), what
 * redisAsyncHandleRead() runs after its own read); the end of the
 * stream, an error, or a context not yet connected go to
 * redisAsyncHandleRead(), which reads again and sees them. Writing is
 * hiredis' own, as in its adapter. Written here because hiredis 0.14
 * has no adapter that does either.
 */
#define RC_READ_MAX     (256 * 1024)

/* exported by hiredis 0.14 and later, declared in async.h from 1.0 */
void redisProcessCallbacks(redisAsyncContext *ac);

struct rc_ev {
    redisAsyncContext  *ac;
    struct event       *rev;        /* persistent */
    struct event       *wev;
};

static char rc_rbuf[RC_READ_MAX];       /* one loop, one thread */

static void
rc_ev_on_read(evutil_socket_t fd, short what, void *arg)
{
    struct rc_ev *e = arg;
    redisAsyncContext *ac = e->ac;
    ssize_t n;

    (void) what;
    /* E may be freed by what follows (the context's cleanup) */
    if ((ac->c.flags & REDIS_CONNECTED) == 0 || ac->c.err != 0) {
        redisAsyncHandleRead(ac);
        return;
    }
    n = recv(fd, rc_rbuf, sizeof(rc_rbuf), 0);
    if (n <= 0 || redisReaderFeed(ac->c.reader, rc_rbuf, (size_t) n)
                  != REDIS_OK)
    {
        redisAsyncHandleRead(ac);
        return;
    }
    redisProcessCallbacks(ac);
}

static void
rc_ev_on_write(evutil_socket_t fd, short what, void *arg)
{
    struct rc_ev *e = arg;

    (void) fd;
    (void) what;
    redisAsyncHandleWrite(e->ac);
}

/* hiredis asks for reading after every read: event_add() of an event
   already added changes nothing (no epoll_ctl), event_del() of one not
   added neither */
static void
rc_ev_add_read(void *priv)
{
    event_add(((struct rc_ev *) priv)->rev, NULL);
}

static void
rc_ev_del_read(void *priv)
{
    event_del(((struct rc_ev *) priv)->rev);
}

static void
rc_ev_add_write(void *priv)
{
    event_add(((struct rc_ev *) priv)->wev, NULL);
}

static void
rc_ev_del_write(void *priv)
{
    event_del(((struct rc_ev *) priv)->wev);
}

static void
rc_ev_cleanup(void *priv)
{
    struct rc_ev *e = priv;

    event_free(e->rev);
    event_free(e->wev);
    free(e);
}

/* AC on BASE; XG_OK, or XG_ERROR (nothing attached). */
static int
rc_ev_attach(redisAsyncContext *ac, struct event_base *base)
{
    struct rc_ev *e;

    if (ac->ev.data != NULL) {
        return XG_ERROR;
    }
    e = xg_calloc(1, sizeof(*e));
    e->ac = ac;
    e->rev = event_new(base, ac->c.fd, EV_READ | EV_PERSIST, rc_ev_on_read,
        e);
    e->wev = event_new(base, ac->c.fd, EV_WRITE, rc_ev_on_write, e);
    if (e->rev == NULL || e->wev == NULL) {
        if (e->rev != NULL) {
            event_free(e->rev);
        }
        if (e->wev != NULL) {
            event_free(e->wev);
        }
        free(e);
        return XG_ERROR;
    }
    ac->ev.addRead = rc_ev_add_read;
    ac->ev.delRead = rc_ev_del_read;
    ac->ev.addWrite = rc_ev_add_write;
    ac->ev.delWrite = rc_ev_del_write;
    ac->ev.cleanup = rc_ev_cleanup;
    ac->ev.data = e;
    /* as hiredis' adapter: both, for the connect's completion */
    rc_ev_add_read(e);
    rc_ev_add_write(e);
    return XG_OK;
}

static void
rc_connect(struct xg_rconn *r)
{
    redisAsyncContext *ac;
    char why[200];

    r->attempts++;
    r->state = XG_RCONN_CONNECTING;
    if (r->tls) {
        r->tun = xg_rtls_new(r->base, r->addr.host, r->addr.port, r->tls_ca,
            r->tls_verify, rc_on_tls_up, r, why, sizeof(why));
        if (r->tun == NULL) {
            rc_failed_at(r, XG_LOG_WARN, why);
            return;
        }
        ac = redisAsyncConnectUnix(xg_rtls_path(r->tun));
    } else {
        ac = redisAsyncConnect(r->addr.host, r->addr.port);
    }
    if (ac == NULL) {
        xg_rtls_free(r->tun);
        r->tun = NULL;
        rc_failed_at(r, XG_LOG_WARN, "connect failed: out of memory");
        return;
    }
    if (ac->err != 0) {
        snprintf(why, sizeof(why), "connect failed: %s", ac->errstr);
        redisAsyncFree(ac);
        xg_rtls_free(r->tun);
        r->tun = NULL;
        rc_failed_at(r, XG_LOG_WARN, why);
        return;
    }
    ac->data = r;
    r->ac = ac;
    if (r->block_replies) {
        /* before any reply: AUTH's is freed by the same functions */
        ac->c.reader->fn = xg_rreply_functions();
    }
    if (rc_ev_attach(ac, r->base) != XG_OK) {
        rc_close(r);
        rc_failed_at(r, XG_LOG_WARN,
            "connect failed: cannot attach to the loop");
        return;
    }
    redisAsyncSetConnectCallback(ac, rc_on_connect);
    redisAsyncSetDisconnectCallback(ac, rc_on_disconnect);
    if (r->uc->connect_timeout_ms > 0) {
        xg_timer_add_ms(r->ev_timeout, r->uc->connect_timeout_ms);
    }
}

static void
rc_set_target(struct xg_rconn *r, const struct xg_addr *addr,
    const char *password)
{
    int v6 = strchr(addr->host, ':') != NULL;

    r->addr = *addr;
    if (r->password != NULL) {
        OPENSSL_cleanse(r->password, strlen(r->password));
        free(r->password);
    }
    r->password = password != NULL ? xg_strdup(password) : NULL;
    snprintf(r->where, sizeof(r->where), "%s%s%s:%u", v6 ? "[" : "",
        addr->host, v6 ? "]" : "", (unsigned) addr->port);
}

/* See xg_rconn.h. */
struct xg_rconn *
xg_rconn_new(struct event_base *base, const char *prefix,
    const struct xg_addr *addr, const char *password,
    const struct xg_upstream_conf *uc, const struct xg_rconn_cbs *cbs,
    void *arg)
{
    struct xg_rconn *r = xg_calloc(1, sizeof(*r));

    r->base = base;
    r->prefix = xg_strdup(prefix);
    r->uc = uc;
    r->cbs = cbs;
    r->arg = arg;
    r->state = XG_RCONN_OFF;
    rc_set_target(r, addr, password);
    xg_reconnect_init(&r->rc, uc);
    r->ev_retry = xg_timer_new(base, rc_on_retry, r);
    r->ev_timeout = xg_timer_new(base, rc_on_timeout, r);
    r->ev_tls_up = xg_timer_new(base, rc_on_tls_up_timer, r);
    if (r->ev_retry == NULL || r->ev_timeout == NULL
        || r->ev_tls_up == NULL)
    {
        xg_log_error("%s: cannot create timers", prefix);
        abort();
    }
    return r;
}

/* See xg_rconn.h. */
void
xg_rconn_free(struct xg_rconn *r)
{
    if (r == NULL) {
        return;
    }
    rc_close(r);
    xg_timer_free(r->ev_retry);
    xg_timer_free(r->ev_timeout);
    xg_timer_free(r->ev_tls_up);
    xg_reconnect_free(&r->rc);
    if (r->password != NULL) {
        OPENSSL_cleanse(r->password, strlen(r->password));
        free(r->password);
    }
    free(r->tls_ca);
    free(r->prefix);
    free(r);
}

/* See xg_rconn.h. */
void
xg_rconn_set_tls(struct xg_rconn *r, int tls, const char *tls_ca,
    int tls_verify)
{
    r->tls = tls;
    free(r->tls_ca);
    r->tls_ca = tls_ca != NULL ? xg_strdup(tls_ca) : NULL;
    r->tls_verify = tls_verify;
}

/* See xg_rconn.h. */
void
xg_rconn_set_block_replies(struct xg_rconn *r, int on)
{
    r->block_replies = on;
}

/* See xg_rconn.h. */
void
xg_rconn_start(struct xg_rconn *r)
{
    rc_close(r);
    xg_timer_del(r->ev_retry);
    r->gave_up = 0;
    r->state = XG_RCONN_DOWN;
    rc_connect(r);
}

/* See xg_rconn.h. */
void
xg_rconn_stop(struct xg_rconn *r)
{
    rc_close(r);
    xg_timer_del(r->ev_retry);
    r->state = XG_RCONN_OFF;
}

/* See xg_rconn.h. */
void
xg_rconn_fail(struct xg_rconn *r, int level, const char *reason)
{
    if (r->state == XG_RCONN_OFF || r->state == XG_RCONN_DOWN) {
        return;
    }
    if (r->state == XG_RCONN_READY) {
        r->disconnects++;
    }
    rc_close(r);
    rc_failed_at(r, level, reason);
}

/* See xg_rconn.h. */
void
xg_rconn_reconf(struct xg_rconn *r, const struct xg_upstream_conf *uc)
{
    r->uc = uc;
    xg_reconnect_reconf(&r->rc, uc);
}

/* See xg_rconn.h. */
int
xg_rconn_same(const struct xg_rconn *r, const struct xg_addr *addr,
    const char *password)
{
    return strcmp(r->addr.host, addr->host) == 0
        && r->addr.port == addr->port
        && (r->password == NULL) == (password == NULL)
        && (password == NULL || strcmp(r->password, password) == 0);
}

/* See xg_rconn.h. */
void
xg_rconn_retarget(struct xg_rconn *r, const struct xg_addr *addr,
    const char *password)
{
    if (xg_rconn_same(r, addr, password)) {
        return;
    }
    rc_set_target(r, addr, password);
    if (r->state != XG_RCONN_OFF) {
        xg_rconn_start(r);
    }
}

redisAsyncContext *
xg_rconn_ctx(const struct xg_rconn *r)
{
    return r->state == XG_RCONN_READY ? r->ac : NULL;
}

enum xg_rconn_state
xg_rconn_state(const struct xg_rconn *r)
{
    return r->state;
}

const char *
xg_rconn_state_name(const struct xg_rconn *r)
{
    return r->gave_up ? "gave_up" : rc_state_names[r->state];
}

int
xg_rconn_gave_up(const struct xg_rconn *r)
{
    return r->gave_up;
}

const char *
xg_rconn_where(const struct xg_rconn *r)
{
    return r->where;
}

const char *
xg_rconn_last_error(const struct xg_rconn *r)
{
    return r->last_error;
}

uint64_t
xg_rconn_connects(const struct xg_rconn *r)
{
    return r->connects;
}

uint64_t
xg_rconn_attempts(const struct xg_rconn *r)
{
    return r->attempts;
}

uint64_t
xg_rconn_disconnects(const struct xg_rconn *r)
{
    return r->disconnects;
}

uint64_t
xg_rconn_auth_errors(const struct xg_rconn *r)
{
    return r->auth_errors;
}
