/*
 * xg_rest.c: an upstream's REST client and the REST front (see
 * xg_rest.h).
 *
 * The client. A GET waits for a connection (at most REST_MAX_CONNS at
 * once, kept alive between GETs), is sent with libevent's evhttp (over
 * bufferevent_openssl for https, names through evdns), and its answer is
 * copied out of evhttp and handed to the caller from an event of its own:
 * a callback never runs inside evhttp, so it may cancel, free, or start
 * GETs. A connection is freed only from the loop (the reaper) or from a
 * timer, never from inside its own evhttp callbacks; a closed one is
 * never reused (evhttp would reconnect it on the same SSL object). A GET
 * that met a keep-alive connection the exchange had just closed is tried
 * once more on a new one.
 *
 * The front. An evhttp server on the listener's socket: a GET the venue
 * answers itself (rest_local) is answered so; other public GETs under
 * /api/v3/, /fapi/v1/ and /dapi/v1/ are proxied through the client, the
 * exchangeInfo answers cached for rest_cache (concurrent requests for one
 * share one fetch). Signed requests, other paths and methods, and
 * oversized request lines and headers are refused with a JSON body in
 * Binance's shape.
 */
#include "xg_core.h"
#include "xg_rest.h"
#include "xg_log.h"
#include "xg_tls.h"
#include "xg_upstream.h"
#include "xg_venue.h"
#include "xg_timer.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>
#include <event2/listener.h>
#include <openssl/err.h>

#define REST_MAX_CONNS          8       /* connections to the exchange */
#define REST_MAX_WAITING        1024    /* GETs waiting for a connection */
#define REST_MAX_HEADERS        (64 * 1024)     /* of an answer */
#define REST_DEFAULT_TIMEOUT_MS 10000
#define REST_IDLE_MS            30000   /* an idle connection is closed */
#define REST_BACKOFF_429_S      10      /* without a usable Retry-After */
#define REST_BACKOFF_418_S      120
#define REST_BACKOFF_MAX_S      (3 * 24 * 3600)

/* ---- the client ---------------------------------------------------------- */

/* Answer classes counted: no answer, 1xx .. 5xx, refused while backing off. */
enum { REST_CLASS_ERROR = 0, REST_CLASS_BACKOFF = 6, REST_CLASS_N };
static const char *const rest_class_names[REST_CLASS_N] = {
    "error", "1xx", "2xx", "3xx", "4xx", "5xx", "backoff"
};

/* One connection to the exchange. */
struct rest_conn {
    struct xg_rest             *r;
    struct evhttp_connection   *evcon;
    SSL                        *ssl;       /* freed with evcon's bufferevent */
    struct xg_rest_get         *g;         /* the GET on it; NULL: idle */
    char                        host[256]; /* what it was made for */
    uint16_t                    port;
    int                         tls;
    unsigned                    id;
    unsigned                    uses;      /* GETs sent on it */
    uint64_t                    idle_since_ms;
    int                         closed;    /* evhttp saw it close */
    int                         dead;      /* the reaper frees it */
    int                         has_error;
    enum evhttp_request_error   error;
    int                         errnum;
    struct rest_conn           *next;
};

struct xg_rest_get {
    struct xg_rest             *r;
    struct rest_conn           *conn;      /* in flight on it */
    char                       *pathquery;
    uint64_t                    timeout_ms;
    uint64_t                    started_ms;
    xg_rest_cb                  cb;
    void                       *arg;
    int                         waiting;   /* for a connection */
    int                         retried;
    int                         done;      /* ev_done is active */
    int                         status;
    int                         cls;       /* REST_CLASS_* for the stats */
    struct evbuffer            *body;
    struct evkeyvalq            headers;
    char                        err[256];
    struct xg_timer            *ev_timeout;
    struct event               *ev_done;
    struct xg_rest_get         *prev, *next;   /* in r->gets, FIFO */
};

struct xg_rest {
    struct event_base              *base;
    struct evdns_base              *dns;
    const struct xg_upstream_conf  *conf;
    char                           *name;
    struct rest_conn               *conns;
    unsigned                        nconns;    /* not dead */
    unsigned                        last_conn_id;
    struct xg_rest_get             *gets, *gets_tail;
    unsigned                        nwaiting;
    unsigned                        ninflight;
    struct event                   *ev_reap;

    uint64_t                        gets_total;
    uint64_t                        by_class[REST_CLASS_N];
    uint64_t                        timeouts;
    uint64_t                        retries;
    uint64_t                        too_big;
    uint64_t                        connections;   /* made */
    uint64_t                        bytes_in;
    uint64_t                        backoffs;      /* 429/418 met */
    long                            used_weight;   /* -1: never told */
    uint64_t                        backoff_until_ms;  /* monotonic */
    uint64_t                        backoff_until_wall_ms;
    int                             backoff_status;
    int                             last_status;
    char                            last_error[256];
};

static void rest_dispatch(struct xg_rest *r);

static void
rest_kick(struct xg_rest *r)
{
    event_active(r->ev_reap, EV_TIMEOUT, 1);
}

/* "2026-12-03T16:40:12Z" for the wall clock WALL_MS. */
static const char *
rest_fmt_wall(uint64_t wall_ms, char *buf, size_t len)
{
    time_t t = (time_t) (wall_ms / 1000);
    struct tm tm;

    gmtime_r(&t, &tm);
    strftime(buf, len, "%Y-%m-%dT%H:%M:%SZ", &tm);
    return buf;
}

/* Frees C now (out of R's list); its GET, if any, must be detached. */
static void
conn_free(struct rest_conn *c)
{
    struct xg_rest *r = c->r;
    struct rest_conn **pp;

    for (pp = &r->conns; *pp != NULL; pp = &(*pp)->next) {
        if (*pp == c) {
            *pp = c->next;
            break;
        }
    }
    if (!c->dead) {
        r->nconns--;
    }
    if (c->evcon != NULL) {
        evhttp_connection_set_closecb(c->evcon, NULL, NULL);
        evhttp_connection_free(c->evcon);
    }
    free(c);
}

/* C is not to be used again: the reaper frees it from the loop. */
static void
conn_kill(struct rest_conn *c)
{
    if (!c->dead) {
        c->dead = 1;
        c->r->nconns--;
    }
    rest_kick(c->r);
}

static void
conn_on_close(struct evhttp_connection *evcon, void *arg)
{
    struct rest_conn *c = arg;

    c->closed = 1;
    if (c->g == NULL) {
        conn_kill(c);
    }
}

static void
conn_on_error(enum evhttp_request_error error, void *arg)
{
    struct rest_conn *c = arg;

    c->has_error = 1;
    c->error = error;
    c->errnum = EVUTIL_SOCKET_ERROR();
}

/* Why C's GET got no answer, in BUF. */
static void
conn_error(struct rest_conn *c, char *buf, size_t len)
{
    struct bufferevent *bev;
    char tls[200] = "";
    unsigned long e;
    const char *what;

    switch (c->has_error ? c->error : EVREQ_HTTP_EOF) {
    case EVREQ_HTTP_TIMEOUT:
        what = "timeout";
        break;
    case EVREQ_HTTP_INVALID_HEADER:
        what = "bad answer header";
        break;
    case EVREQ_HTTP_DATA_TOO_LONG:
        what = "too big: an answer over 16m or headers over 64k";
        break;
    case EVREQ_HTTP_BUFFER_ERROR:
        what = "connection error";
        break;
    case EVREQ_HTTP_REQUEST_CANCEL:
        what = "cancelled";
        break;
    case EVREQ_HTTP_EOF:
    default:
        what = "no answer (connection failed or closed)";
        break;
    }
    if (c->ssl != NULL) {
        xg_tls_error(c->ssl, tls, sizeof(tls));
        bev = evhttp_connection_get_bufferevent(c->evcon);
        while (bev != NULL && (e = bufferevent_get_openssl_error(bev)) != 0) {
            if (strncmp(tls, "certificate verify failed", 25) != 0) {
                xg_log_ssl_error_append(tls, sizeof(tls), e);
            }
        }
    }
    if (tls[0] != '\0') {
        snprintf(buf, len, "tls: %s", tls);
    } else if (c->errnum != 0 && c->error != EVREQ_HTTP_DATA_TOO_LONG) {
        snprintf(buf, len, "%s: %s", what, strerror(c->errnum));
    } else {
        snprintf(buf, len, "%s", what);
    }
}

/* A new connection to R's rest_url, or NULL with the reason in ERR. */
static struct rest_conn *
conn_new(struct xg_rest *r, char *err, size_t errlen)
{
    const struct xg_url *u = &r->conf->rest_url;
    struct bufferevent *bev = NULL;
    struct rest_conn *c;
    SSL_CTX *ctx;
    SSL *ssl = NULL;
    char why[200];

    if (u->tls) {
        ctx = xg_tls_client_ctx(r->conf->tls_ca, why, sizeof(why));
        if (ctx == NULL) {
            snprintf(err, errlen, "tls: %s", why);
            return NULL;
        }
        ssl = SSL_new(ctx);
        SSL_CTX_free(ctx);
        if (ssl == NULL) {
            snprintf(err, errlen, "tls: SSL_new failed");
            return NULL;
        }
        if (xg_tls_client_setup(ssl, u->host, r->conf->tls_verify, why,
                sizeof(why)) != 0)
        {
            snprintf(err, errlen, "tls: %s", why);
            SSL_free(ssl);
            return NULL;
        }
        bev = bufferevent_openssl_socket_new(r->base, -1, ssl,
            BUFFEREVENT_SSL_CONNECTING,
            BEV_OPT_CLOSE_ON_FREE | BEV_OPT_DEFER_CALLBACKS);
        if (bev == NULL) {
            SSL_free(ssl);
            snprintf(err, errlen, "cannot make a tls bufferevent");
            return NULL;
        }
        /* an answer delimited by the close, without close_notify */
        bufferevent_openssl_set_allow_dirty_shutdown(bev, 1);
    }
    c = xg_calloc(1, sizeof(*c));
    c->evcon = evhttp_connection_base_bufferevent_new(r->base, r->dns, bev,
        u->host, u->port);
    if (c->evcon == NULL) {
        if (bev != NULL) {
            bufferevent_free(bev);
        }
        free(c);
        snprintf(err, errlen, "cannot make an http connection");
        return NULL;
    }
    c->r = r;
    c->ssl = ssl;
    c->tls = u->tls;
    c->port = u->port;
    snprintf(c->host, sizeof(c->host), "%s", u->host);
    c->id = ++r->last_conn_id;
    evhttp_connection_set_max_body_size(c->evcon, XG_REST_MAX_BODY);
    evhttp_connection_set_max_headers_size(c->evcon, REST_MAX_HEADERS);
    evhttp_connection_set_closecb(c->evcon, conn_on_close, c);
    c->next = r->conns;
    r->conns = c;
    r->nconns++;
    r->connections++;
    xg_log_debug("rest %s: connection %u to %s:%u%s", r->name, c->id,
        c->host, c->port, c->tls ? " (tls)" : "");
    return c;
}

/* Whether idle C may carry a GET now to R's rest_url. */
static int
conn_usable(const struct rest_conn *c, const struct xg_rest *r, uint64_t now)
{
    const struct xg_url *u = &r->conf->rest_url;

    return !c->dead && !c->closed && c->g == NULL && c->tls == u->tls
        && c->port == u->port && strcmp(c->host, u->host) == 0
        && now - c->idle_since_ms < REST_IDLE_MS;
}

static void
get_unlink(struct xg_rest_get *g)
{
    struct xg_rest *r = g->r;

    if (g->prev != NULL) {
        g->prev->next = g->next;
    } else if (r->gets == g) {
        r->gets = g->next;
    }
    if (g->next != NULL) {
        g->next->prev = g->prev;
    } else if (r->gets_tail == g) {
        r->gets_tail = g->prev;
    }
    g->prev = g->next = NULL;
}

static void
get_free(struct xg_rest_get *g)
{
    if (g->ev_timeout != NULL) {
        xg_timer_free(g->ev_timeout);
    }
    if (g->ev_done != NULL) {
        event_free(g->ev_done);
    }
    if (g->body != NULL) {
        evbuffer_free(g->body);
    }
    evhttp_clear_headers(&g->headers);
    free(g->pathquery);
    free(g);
}

/* G's answer (or failure) is in: hand it over from the loop. */
static void
get_finish(struct xg_rest_get *g, int status, int cls, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static void
get_finish(struct xg_rest_get *g, int status, int cls, const char *fmt, ...)
{
    va_list ap;

    if (g->waiting) {
        g->waiting = 0;
        g->r->nwaiting--;
    }
    g->status = status;
    g->cls = cls;
    if (fmt != NULL) {
        va_start(ap, fmt);
        vsnprintf(g->err, sizeof(g->err), fmt, ap);
        va_end(ap);
    }
    g->done = 1;
    xg_timer_del(g->ev_timeout);
    event_active(g->ev_done, EV_TIMEOUT, 1);
}

/* The weight and back-off headers of an answer with STATUS. */
static void
rest_note_answer(struct xg_rest *r, int status,
    const struct evkeyvalq *headers)
{
    const char *v;
    char *end, when[32];
    long n, ra;
    uint64_t until, now = xg_now_ms();

    v = evhttp_find_header(headers, "X-MBX-USED-WEIGHT-1M");
    if (v != NULL) {
        n = strtol(v, &end, 10);
        if (end != v && *end == '\0' && n >= 0) {
            r->used_weight = n;
        }
    }
    if (status != 429 && status != 418) {
        return;
    }
    ra = status == 418 ? REST_BACKOFF_418_S : REST_BACKOFF_429_S;
    v = evhttp_find_header(headers, "Retry-After");
    if (v != NULL) {
        n = strtol(v, &end, 10);
        if (end != v && *end == '\0' && n >= 0) {
            ra = n > REST_BACKOFF_MAX_S ? REST_BACKOFF_MAX_S : n;
        }
    }
    r->backoffs++;
    until = now + (uint64_t) ra * 1000;
    if (until > r->backoff_until_ms) {
        r->backoff_until_ms = until;
        r->backoff_until_wall_ms = xg_wall_us() / 1000 + (uint64_t) ra * 1000;
        r->backoff_status = status;
    }
    xg_log_warn("rest %s: HTTP %d from the exchange: backing off for %lds "
        "(until %s)", r->name, status, ra,
        rest_fmt_wall(r->backoff_until_wall_ms, when, sizeof(when)));
}

/* The evhttp answer (or failure) of C's GET; runs inside evhttp. */
static void
conn_on_done(struct evhttp_request *req, void *arg)
{
    struct rest_conn *c = arg;
    struct xg_rest *r = c->r;
    struct xg_rest_get *g = c->g;
    struct evkeyvalq *h;
    struct evkeyval *kv;
    int status = req != NULL ? evhttp_request_get_response_code(req) : 0;

    c->g = NULL;
    if (g == NULL) {
        conn_kill(c);
        return;
    }
    g->conn = NULL;
    r->ninflight--;
    if (status == 0) {
        conn_kill(c);
        if (c->uses > 1 && !g->retried && c->has_error
            && c->error == EVREQ_HTTP_EOF)
        {
            /* a kept-alive connection the exchange had closed: once more */
            g->retried = 1;
            r->retries++;
            g->waiting = 1;
            r->nwaiting++;
            rest_kick(r);
            return;
        }
        conn_error(c, g->err, sizeof(g->err));
        if (c->has_error && c->error == EVREQ_HTTP_DATA_TOO_LONG) {
            r->too_big++;
        }
        get_finish(g, 0, REST_CLASS_ERROR, NULL);
        return;
    }
    h = evhttp_request_get_input_headers(req);
    for (kv = h->tqh_first; kv != NULL; kv = kv->next.tqe_next) {
        evhttp_add_header(&g->headers, kv->key, kv->value);
    }
    evbuffer_add_buffer(g->body, evhttp_request_get_input_buffer(req));
    r->bytes_in += evbuffer_get_length(g->body);
    rest_note_answer(r, status, h);
    if (c->closed) {
        conn_kill(c);
    } else {
        c->idle_since_ms = xg_now_ms();
        rest_kick(r);   /* a waiting GET may take it */
    }
    get_finish(g, status, status >= 100 && status < 600 ? status / 100
        : REST_CLASS_ERROR, NULL);
}

/* Sends G on C. XG_ERROR (C killed) when evhttp refuses. */
static int
get_send(struct xg_rest_get *g, struct rest_conn *c)
{
    struct xg_rest *r = g->r;
    const struct xg_url *u = &r->conf->rest_url;
    struct evhttp_request *req;
    struct evkeyvalq *out;
    char host[300], *uri;
    size_t n;
    int v6 = strchr(u->host, ':') != NULL;

    req = evhttp_request_new(conn_on_done, c);
    if (req == NULL) {
        conn_kill(c);
        return XG_ERROR;
    }
    evhttp_request_set_error_cb(req, conn_on_error);
    out = evhttp_request_get_output_headers(req);
    if (u->port != (u->tls ? 443 : 80)) {
        snprintf(host, sizeof(host), "%s%s%s:%u", v6 ? "[" : "", u->host,
            v6 ? "]" : "", u->port);
    } else {
        snprintf(host, sizeof(host), "%s%s%s", v6 ? "[" : "", u->host,
            v6 ? "]" : "");
    }
    evhttp_add_header(out, "Host", host);
    evhttp_add_header(out, "User-Agent", "exgate/" XG_VERSION);
    evhttp_add_header(out, "Accept", "application/json");
    n = strlen(u->path) + strlen(g->pathquery) + 1;
    uri = xg_malloc(n);
    snprintf(uri, n, "%s%s", u->path, g->pathquery);
    c->g = g;
    c->has_error = 0;
    c->errnum = 0;
    c->uses++;
    g->conn = c;
    g->waiting = 0;
    r->nwaiting--;
    r->ninflight++;
    /* evhttp frees REQ itself, also when this fails */
    if (evhttp_make_request(c->evcon, req, EVHTTP_REQ_GET, uri) != 0) {
        free(uri);
        if (c->g == g) {
            c->g = NULL;
            g->conn = NULL;
            r->ninflight--;
            g->waiting = 1;
            r->nwaiting++;
        }
        conn_kill(c);
        return XG_ERROR;
    }
    free(uri);
    return XG_OK;
}

/* Starts the waiting GETs that may start, fails those that may not. */
static void
rest_dispatch(struct xg_rest *r)
{
    struct xg_rest_get *g, *next;
    struct rest_conn *c;
    uint64_t now = xg_now_ms();
    char err[256], when[32];

    for (g = r->gets; g != NULL; g = next) {
        next = g->next;
        if (!g->waiting) {
            continue;
        }
        if (!r->conf->rest_url_set) {
            get_finish(g, 0, REST_CLASS_ERROR, "no rest_url");
            continue;
        }
        if (r->backoff_until_ms > now) {
            get_finish(g, 0, REST_CLASS_BACKOFF, "backing off until %s "
                "(HTTP %d from the exchange)", rest_fmt_wall(
                    r->backoff_until_wall_ms, when, sizeof(when)),
                r->backoff_status);
            continue;
        }
        for (c = r->conns; c != NULL; c = c->next) {
            if (conn_usable(c, r, now)) {
                break;
            }
        }
        if (c == NULL) {
            if (r->nconns >= REST_MAX_CONNS) {
                return;     /* FIFO: the rest waits too */
            }
            c = conn_new(r, err, sizeof(err));
            if (c == NULL) {
                get_finish(g, 0, REST_CLASS_ERROR, "%s", err);
                continue;
            }
        }
        if (get_send(g, c) != XG_OK && g->waiting) {
            get_finish(g, 0, REST_CLASS_ERROR, "cannot send the request");
        }
    }
}

/* The reaper: frees dead and stale idle connections, starts GETs. */
static void
rest_on_reap(evutil_socket_t fd, short what, void *arg)
{
    struct xg_rest *r = arg;
    struct rest_conn *c, *next;
    uint64_t now = xg_now_ms();

    for (c = r->conns; c != NULL; c = next) {
        next = c->next;
        if (c->g == NULL && (c->dead || !conn_usable(c, r, now))) {
            conn_free(c);
        }
    }
    rest_dispatch(r);
}

static void
get_on_timeout(evutil_socket_t fd, short what, void *arg)
{
    struct xg_rest_get *g = arg;
    struct rest_conn *c = g->conn;

    if (c != NULL) {
        /* a timer, not evhttp's frame: C may go at once */
        c->g = NULL;
        g->conn = NULL;
        g->r->ninflight--;
        conn_free(c);
    }
    g->r->timeouts++;
    get_finish(g, 0, REST_CLASS_ERROR, "timeout after %llums",
        (unsigned long long) g->timeout_ms);
    rest_kick(g->r);
}

static void
get_on_done(evutil_socket_t fd, short what, void *arg)
{
    struct xg_rest_get *g = arg;
    struct xg_rest *r = g->r;
    size_t len = evbuffer_get_length(g->body);
    const char *body = len > 0 ? (const char *) evbuffer_pullup(g->body, -1)
                       : "";

    get_unlink(g);
    r->by_class[g->cls]++;
    if (g->status != 0) {
        r->last_status = g->status;
    } else {
        snprintf(r->last_error, sizeof(r->last_error), "%s", g->err);
    }
    if (g->status == 0 && g->cls != REST_CLASS_BACKOFF) {
        xg_log_info("rest %s: GET %.200s: %s", r->name, g->pathquery, g->err);
    } else {
        xg_log_debug("rest %s: GET %.200s: %d%s%s (%zu bytes, %llums)",
            r->name, g->pathquery, g->status, g->status ? "" : " ",
            g->status ? "" : g->err, len,
            (unsigned long long) (xg_now_ms() - g->started_ms));
    }
    /* R may be freed by the callback: G is out of it already */
    g->cb(g->arg, g->status, body, len, g->status ? &g->headers : NULL,
        g->status ? NULL : g->err);
    get_free(g);
}

/* See xg_rest.h. */
struct xg_rest *
xg_rest_new(struct event_base *base, struct evdns_base *dns,
    const struct xg_upstream_conf *conf, const char *name)
{
    struct xg_rest *r;

    r = xg_calloc(1, sizeof(*r));
    r->base = base;
    r->dns = dns;
    r->conf = conf;
    r->name = xg_strdup(name);
    r->used_weight = -1;
    r->ev_reap = event_new(base, -1, 0, rest_on_reap, r);
    if (r->ev_reap == NULL) {
        xg_log_error("rest %s: cannot create an event", name);
        free(r->name);
        free(r);
        return NULL;
    }
    return r;
}

/* See xg_rest.h. */
void
xg_rest_free(struct xg_rest *r)
{
    struct xg_rest_get *g;

    if (r == NULL) {
        return;
    }
    while ((g = r->gets) != NULL) {
        if (g->conn != NULL) {
            g->conn->g = NULL;
        }
        get_unlink(g);
        get_free(g);
    }
    while (r->conns != NULL) {
        conn_free(r->conns);
    }
    event_free(r->ev_reap);
    free(r->name);
    free(r);
}

/* See xg_rest.h. */
void
xg_rest_reconf(struct xg_rest *r, const struct xg_upstream_conf *conf)
{
    r->conf = conf;
    rest_kick(r);   /* idle connections to an old url go */
}

/* See xg_rest.h. */
struct xg_rest_get *
xg_rest_get(struct xg_rest *r, const char *pathquery, uint64_t timeout_ms,
    xg_rest_cb cb, void *arg)
{
    struct xg_rest_get *g;
    struct timeval tv;
    const unsigned char *p;

    g = xg_calloc(1, sizeof(*g));
    g->r = r;
    g->pathquery = xg_strdup(pathquery);
    g->timeout_ms = timeout_ms != 0 ? timeout_ms : REST_DEFAULT_TIMEOUT_MS;
    g->started_ms = xg_now_ms();
    g->cb = cb;
    g->arg = arg;
    g->body = evbuffer_new();
    g->headers.tqh_first = NULL;     /* TAILQ_INIT */
    g->headers.tqh_last = &g->headers.tqh_first;
    g->ev_timeout = xg_timer_new(r->base, get_on_timeout, g);
    g->ev_done = event_new(r->base, -1, 0, get_on_done, g);
    if (g->body == NULL || g->ev_timeout == NULL || g->ev_done == NULL) {
        xg_log_error("rest %s: out of events", r->name);
        get_free(g);
        return NULL;
    }
    g->prev = r->gets_tail;
    if (r->gets_tail != NULL) {
        r->gets_tail->next = g;
    } else {
        r->gets = g;
    }
    r->gets_tail = g;
    r->gets_total++;
    for (p = (const unsigned char *) pathquery; *p != '\0'; p++) {
        if (*p <= 0x20 || *p >= 0x7f || *p == '#') {
            break;
        }
    }
    if (pathquery[0] != '/' || *p != '\0') {
        get_finish(g, 0, REST_CLASS_ERROR, "bad path (not /..., or a byte "
            "that must be escaped)");
        return g;
    }
    if (r->nwaiting >= REST_MAX_WAITING) {
        get_finish(g, 0, REST_CLASS_ERROR, "too many GETs waiting (%u)",
            r->nwaiting);
        return g;
    }
    g->waiting = 1;
    r->nwaiting++;
    tv.tv_sec = (time_t) (g->timeout_ms / 1000);
    tv.tv_usec = (suseconds_t) (g->timeout_ms % 1000) * 1000;
    xg_timer_add(g->ev_timeout, &tv);
    rest_dispatch(r);
    return g;
}

/* See xg_rest.h. */
void
xg_rest_cancel(struct xg_rest_get *g)
{
    struct xg_rest *r;

    if (g == NULL) {
        return;
    }
    r = g->r;
    if (g->conn != NULL) {
        g->conn->g = NULL;
        r->ninflight--;
        conn_kill(g->conn);     /* its answer is not wanted: not reused */
        g->conn = NULL;
    }
    if (g->waiting) {
        r->nwaiting--;
    }
    get_unlink(g);
    get_free(g);
}

/* See xg_rest.h. */
uint64_t
xg_rest_backoff_ms(const struct xg_rest *r, int *status)
{
    uint64_t now = xg_now_ms();

    if (status != NULL) {
        *status = r->backoff_status;
    }
    return r->backoff_until_ms > now ? r->backoff_until_ms - now : 0;
}

/* See xg_rest.h. */
uint64_t
xg_rest_cache_ms(const struct xg_rest *r)
{
    return r->conf->rest_cache_ms;
}

/* See xg_rest.h. */
void
xg_rest_status(const struct xg_rest *r, json_t *obj)
{
    json_t *o = json_object(), *cls = json_object();
    char url[1400], when[32];
    uint64_t left = xg_rest_backoff_ms(r, NULL);
    unsigned i;

    if (r->conf->rest_url_set) {
        json_object_set_new(o, "url", json_string(xg_conf_fmt_http_url(
            &r->conf->rest_url, url, sizeof(url))));
    } else {
        json_object_set_new(o, "url", json_null());
    }
    json_object_set_new(o, "gets", json_integer((json_int_t) r->gets_total));
    for (i = 0; i < REST_CLASS_N; i++) {
        json_object_set_new(cls, rest_class_names[i],
            json_integer((json_int_t) r->by_class[i]));
    }
    json_object_set_new(o, "requests", cls);
    json_object_set_new(o, "failures", json_integer((json_int_t)
        (r->by_class[REST_CLASS_ERROR] + r->by_class[REST_CLASS_BACKOFF])));
    json_object_set_new(o, "timeouts", json_integer((json_int_t) r->timeouts));
    json_object_set_new(o, "retries", json_integer((json_int_t) r->retries));
    json_object_set_new(o, "too_big", json_integer((json_int_t) r->too_big));
    json_object_set_new(o, "in_flight", json_integer(r->ninflight));
    json_object_set_new(o, "waiting", json_integer(r->nwaiting));
    json_object_set_new(o, "connections", json_integer(r->nconns));
    json_object_set_new(o, "connections_made",
        json_integer((json_int_t) r->connections));
    json_object_set_new(o, "bytes_in", json_integer((json_int_t) r->bytes_in));
    json_object_set_new(o, "used_weight", r->used_weight >= 0
        ? json_integer(r->used_weight) : json_null());
    json_object_set_new(o, "backoffs", json_integer((json_int_t) r->backoffs));
    json_object_set_new(o, "backoff_refused", json_integer((json_int_t)
        r->by_class[REST_CLASS_BACKOFF]));
    json_object_set_new(o, "backoff_until", left > 0 ? json_string(
        rest_fmt_wall(r->backoff_until_wall_ms, when, sizeof(when)))
        : json_null());
    json_object_set_new(o, "backoff_status", left > 0
        ? json_integer(r->backoff_status) : json_null());
    json_object_set_new(o, "last_status", r->last_status
        ? json_integer(r->last_status) : json_null());
    json_object_set_new(o, "last_error", r->last_error[0]
        ? json_string(r->last_error) : json_null());
    json_object_set_new(obj, "rest", o);
}

/* ---- the front ---------------------------------------------------------- */

#define FRONT_MAX_URI           8192        /* 414 over it */
#define FRONT_MAX_HEADER_BYTES  16384       /* 431 over it */
#define FRONT_MAX_HEADER_LINES  100
/* evhttp's own bound: over it libevent answers 413 and closes */
#define FRONT_MAX_READ          (256 * 1024)
#define FRONT_MAX_BODY          (64 * 1024)
#define FRONT_TIMEOUT_S         60
#define FRONT_MAX_CACHE         32

enum { FRONT_CLASS_N = 6 };     /* 1xx .. 5xx, [0] unused */

struct front_cache;

/* A request waiting for the exchange (its own GET, or a cache fetch). */
struct front_req {
    struct xg_rest_front       *f;
    struct evhttp_request      *req;
    struct xg_rest_get         *g;
    struct front_cache         *ce;
    int                         head;
    char                        peer[80];
    struct front_req           *prev, *next;   /* in f->reqs */
    struct front_req           *wnext;         /* in ce->waiters */
};

/* One exchangeInfo answer, or its fetch in flight. */
struct front_cache {
    char                       *key;           /* path?query as sent */
    uint64_t                    fetched_ms;    /* 0: not answered yet */
    int                         status;
    char                       *body;
    size_t                      len;
    char                       *ctype;
    char                       *weight;
    struct xg_rest_get         *g;
    struct front_req           *waiters;
    struct front_cache         *next;
};

struct xg_rest_front {
    struct event_base          *base;
    struct evhttp              *http;
    struct xg_upstream         *up;
    const struct xg_venue      *venue;
    void                       *vp;
    char                        name[300];
    struct front_req           *reqs;
    unsigned                    pending;
    struct front_cache         *cache;
    unsigned                    ncache;

    uint64_t                    requests;
    uint64_t                    by_class[FRONT_CLASS_N];
    uint64_t                    local;
    uint64_t                    proxied;
    uint64_t                    cache_hits;
    uint64_t                    cache_fetches;
    uint64_t                    cache_shared;  /* waited for a fetch */
    uint64_t                    refused;       /* signed, 404, 405, bounds */
    uint64_t                    backoff_answers;
};

static const char *const front_prefixes[] = {
    "/api/v3/", "/fapi/v1/", "/dapi/v1/"
};

/* The client's address of REQ in BUF. */
static void
front_peer(struct evhttp_request *req, char *buf, size_t len)
{
    struct evhttp_connection *evcon = evhttp_request_get_connection(req);
    char *addr = NULL;
    ev_uint16_t port = 0;

    if (evcon != NULL) {
        evhttp_connection_get_peer(evcon, &addr, &port);
    }
    snprintf(buf, len, "%s%s%s:%u", addr && strchr(addr, ':') ? "[" : "",
        addr ? addr : "?", addr && strchr(addr, ':') ? "]" : "", port);
}

/* Sends STATUS with BODY (LEN) on REQ; HEAD gets the headers only. */
static void
front_send(struct xg_rest_front *f, struct evhttp_request *req, int status,
    const char *ctype, const char *body, size_t len)
{
    struct evkeyvalq *out = evhttp_request_get_output_headers(req);
    struct evbuffer *b = evbuffer_new();
    char n[32];

    if (b == NULL) {
        evhttp_send_error(req, 500, NULL);
        return;
    }
    if (status >= 100 && status < 600) {
        f->by_class[status / 100]++;
    }
    evhttp_remove_header(out, "Content-Type");
    evhttp_add_header(out, "Content-Type", ctype != NULL ? ctype
        : "application/json;charset=UTF-8");
    if (evhttp_request_get_command(req) == EVHTTP_REQ_HEAD) {
        snprintf(n, sizeof(n), "%zu", len);
        evhttp_add_header(out, "Content-Length", n);
    } else {
        evbuffer_add(b, body, len);
    }
    evhttp_send_reply(req, status, NULL, b);
    evbuffer_free(b);
}

/* A JSON error {"code":CODE,"msg":MSG} with STATUS. */
static void
front_error(struct xg_rest_front *f, struct evhttp_request *req, int status,
    int code, const char *msg)
{
    json_t *o = json_pack("{s:i, s:s}", "code", code, "msg", msg);
    char *s = o != NULL ? json_dumps(o, JSON_COMPACT) : NULL;

    front_send(f, req, status, NULL, s != NULL ? s : "{}",
        s != NULL ? strlen(s) : 2);
    free(s);
    json_decref(o);
}

/* STATUS (429 or 418) with Retry-After while the client backs off. */
static void
front_backoff(struct xg_rest_front *f, struct evhttp_request *req,
    uint64_t left_ms, int status, const char *peer)
{
    char ra[32], msg[160];

    f->backoff_answers++;
    snprintf(ra, sizeof(ra), "%llu",
        (unsigned long long) ((left_ms + 999) / 1000));
    evhttp_add_header(evhttp_request_get_output_headers(req), "Retry-After",
        ra);
    snprintf(msg, sizeof(msg), "exgate: the exchange answered %d: backing "
        "off for %ss", status, ra);
    xg_log_info("rest front %s: client %s: %s", f->name, peer, msg);
    front_error(f, req, status == 418 ? 418 : 429, -1003, msg);
}

/* Passes an answer of the exchange (or its absence) on to REQ. */
static void
front_answer(struct xg_rest_front *f, struct evhttp_request *req,
    const char *peer, int status, const char *body, size_t len,
    const char *ctype, const char *weight, const char *retry_after,
    const char *err)
{
    struct evkeyvalq *out = evhttp_request_get_output_headers(req);
    struct xg_rest *rest;
    uint64_t left;
    int bs;
    char msg[400];

    if (status == 0) {
        rest = xg_upstream_rest(f->up);
        if (rest != NULL && (left = xg_rest_backoff_ms(rest, &bs)) > 0) {
            front_backoff(f, req, left, bs, peer);
            return;
        }
        snprintf(msg, sizeof(msg), "exgate: the exchange's REST API: %s",
            err != NULL ? err : "no answer");
        xg_log_warn("rest front %s: client %s: %s", f->name, peer, msg);
        if (err != NULL && strncmp(err, "timeout", 7) == 0) {
            front_error(f, req, 504, -1007, msg);
        } else {
            front_error(f, req, 502, -1001, msg);
        }
        return;
    }
    if (weight != NULL) {
        evhttp_add_header(out, "X-MBX-USED-WEIGHT-1M", weight);
    }
    if (retry_after != NULL) {
        evhttp_add_header(out, "Retry-After", retry_after);
    }
    front_send(f, req, status, ctype, body, len);
}

static void
front_req_free(struct front_req *fr)
{
    struct xg_rest_front *f = fr->f;

    if (fr->prev != NULL) {
        fr->prev->next = fr->next;
    } else {
        f->reqs = fr->next;
    }
    if (fr->next != NULL) {
        fr->next->prev = fr->prev;
    }
    f->pending--;
    free(fr);
}

static struct front_req *
front_req_new(struct xg_rest_front *f, struct evhttp_request *req,
    const char *peer)
{
    struct front_req *fr = xg_calloc(1, sizeof(*fr));

    fr->f = f;
    fr->req = req;
    fr->head = evhttp_request_get_command(req) == EVHTTP_REQ_HEAD;
    snprintf(fr->peer, sizeof(fr->peer), "%s", peer);
    fr->next = f->reqs;
    if (f->reqs != NULL) {
        f->reqs->prev = fr;
    }
    f->reqs = fr;
    f->pending++;
    return fr;
}

static void
front_on_answer(void *arg, int status, const char *body, size_t len,
    const struct evkeyvalq *headers, const char *err)
{
    struct front_req *fr = arg;

    fr->g = NULL;
    front_answer(fr->f, fr->req, fr->peer, status, body, len,
        headers ? evhttp_find_header(headers, "Content-Type") : NULL,
        headers ? evhttp_find_header(headers, "X-MBX-USED-WEIGHT-1M") : NULL,
        headers ? evhttp_find_header(headers, "Retry-After") : NULL, err);
    front_req_free(fr);
}

static void
cache_free(struct front_cache *ce)
{
    free(ce->key);
    free(ce->body);
    free(ce->ctype);
    free(ce->weight);
    free(ce);
}

static void
cache_unlink(struct xg_rest_front *f, struct front_cache *ce)
{
    struct front_cache **pp;

    for (pp = &f->cache; *pp != NULL; pp = &(*pp)->next) {
        if (*pp == ce) {
            *pp = ce->next;
            f->ncache--;
            return;
        }
    }
}

static char *
dup_or_null(const char *s)
{
    return s != NULL ? xg_strdup(s) : NULL;
}

/* The fetch of CE is answered: every waiter gets the answer. */
static void
front_on_cache_answer(void *arg, int status, const char *body, size_t len,
    const struct evkeyvalq *headers, const char *err)
{
    struct front_cache *ce = arg;
    struct front_req *fr, *next;
    struct xg_rest_front *f;
    const char *ra = headers ? evhttp_find_header(headers, "Retry-After")
                     : NULL;

    ce->g = NULL;
    free(ce->body);
    free(ce->ctype);
    free(ce->weight);
    ce->status = status;
    ce->body = xg_malloc(len + 1);
    memcpy(ce->body, body, len);
    ce->len = len;
    ce->ctype = headers ? dup_or_null(evhttp_find_header(headers,
        "Content-Type")) : NULL;
    ce->weight = headers ? dup_or_null(evhttp_find_header(headers,
        "X-MBX-USED-WEIGHT-1M")) : NULL;
    ce->fetched_ms = xg_now_ms();
    for (fr = ce->waiters; fr != NULL; fr = next) {
        next = fr->wnext;
        f = fr->f;
        fr->ce = NULL;
        front_answer(f, fr->req, fr->peer, status, ce->body, ce->len,
            ce->ctype, ce->weight, ra, err);
        front_req_free(fr);
    }
    ce->waiters = NULL;
    if (status != 200) {
        ce->fetched_ms = 0;     /* only a good answer is kept */
    }
}

/* Answers REQ for KEY (an exchangeInfo path?query) from the cache. */
static void
front_cached(struct xg_rest_front *f, struct xg_rest *rest,
    struct evhttp_request *req, const char *key, const char *peer,
    uint64_t ttl_ms)
{
    struct front_cache *ce, *oldest = NULL, **pp;
    struct front_req *fr;
    uint64_t now = xg_now_ms();

    for (ce = f->cache; ce != NULL; ce = ce->next) {
        if (strcmp(ce->key, key) == 0) {
            break;
        }
    }
    if (ce != NULL && ce->g == NULL && ce->fetched_ms != 0
        && now - ce->fetched_ms < ttl_ms)
    {
        f->cache_hits++;
        xg_log_debug("rest front %s: client %s: GET %.200s from the cache",
            f->name, peer, key);
        front_answer(f, req, peer, ce->status, ce->body, ce->len, ce->ctype,
            ce->weight, NULL, NULL);
        return;
    }
    if (ce == NULL) {
        if (f->ncache >= FRONT_MAX_CACHE) {
            for (pp = &f->cache; *pp != NULL; pp = &(*pp)->next) {
                if ((*pp)->g == NULL && (oldest == NULL
                    || (*pp)->fetched_ms < oldest->fetched_ms))
                {
                    oldest = *pp;
                }
            }
            if (oldest == NULL) {
                /* every entry is being fetched: no caching for this one */
                fr = front_req_new(f, req, peer);
                fr->g = xg_rest_get(rest, key, 0, front_on_answer, fr);
                if (fr->g == NULL) {
                    front_error(f, req, 500, -1000, "exgate: out of memory");
                    front_req_free(fr);
                }
                return;
            }
            cache_unlink(f, oldest);
            cache_free(oldest);
        }
        ce = xg_calloc(1, sizeof(*ce));
        ce->key = xg_strdup(key);
        ce->next = f->cache;
        f->cache = ce;
        f->ncache++;
    }
    fr = front_req_new(f, req, peer);
    fr->ce = ce;
    fr->wnext = ce->waiters;
    ce->waiters = fr;
    if (ce->g != NULL) {
        f->cache_shared++;
    } else {
        f->cache_fetches++;
        ce->g = xg_rest_get(rest, key, 0, front_on_cache_answer, ce);
        if (ce->g == NULL) {
            ce->waiters = fr->wnext;
            front_error(f, req, 500, -1000, "exgate: out of memory");
            front_req_free(fr);
        }
    }
}

/* Whether QUERY has a "signature" parameter. */
static int
query_signed(const char *query)
{
    const char *p = query;

    while (p != NULL && *p != '\0') {
        if (strncmp(p, "signature=", 10) == 0
            || strcmp(p, "signature") == 0
            || strncmp(p, "signature&", 10) == 0)
        {
            return 1;
        }
        p = strchr(p, '&');
        if (p != NULL) {
            p++;
        }
    }
    return 0;
}

/* Whether the decoded PATH has a "." or ".." segment. */
static int
path_dots(const char *path)
{
    const char *p;

    for (p = path; (p = strchr(p, '/')) != NULL; p++) {
        if ((p[1] == '.' && (p[2] == '/' || p[2] == '\0'))
            || (p[1] == '.' && p[2] == '.' && (p[3] == '/' || p[3] == '\0')))
        {
            return 1;
        }
    }
    return 0;
}

static void
front_on_request(struct evhttp_request *req, void *arg)
{
    struct xg_rest_front *f = arg;
    const struct evhttp_uri *eu;
    struct evkeyvalq *in = evhttp_request_get_input_headers(req);
    struct evkeyval *kv;
    struct xg_rest *rest;
    struct front_req *fr;
    const char *uri = evhttp_request_get_uri(req);
    const char *path, *query, *base;
    enum evhttp_cmd_type cmd = evhttp_request_get_command(req);
    char peer[80], msg[300], *dpath = NULL, *pq = NULL, *body;
    size_t hbytes = 0, dlen = 0, len, i;
    unsigned nh = 0;
    uint64_t left;
    int bs;

    f->requests++;
    front_peer(req, peer, sizeof(peer));
    if (cmd != EVHTTP_REQ_GET && cmd != EVHTTP_REQ_HEAD) {
        f->refused++;
        xg_log_info("rest front %s: client %s: method not allowed", f->name,
            peer);
        evhttp_add_header(evhttp_request_get_output_headers(req), "Allow",
            "GET, HEAD");
        front_error(f, req, 405, -1000, "exgate: only GET and HEAD are "
            "served here");
        return;
    }
    if (strlen(uri) > FRONT_MAX_URI) {
        f->refused++;
        xg_log_info("rest front %s: client %s: request target of %zu bytes "
            "(over %d)", f->name, peer, strlen(uri), FRONT_MAX_URI);
        front_error(f, req, 414, -1000, "exgate: request target too long");
        return;
    }
    for (kv = in->tqh_first; kv != NULL; kv = kv->next.tqe_next) {
        hbytes += strlen(kv->key) + strlen(kv->value) + 4;
        nh++;
    }
    if (hbytes > FRONT_MAX_HEADER_BYTES || nh > FRONT_MAX_HEADER_LINES) {
        f->refused++;
        xg_log_info("rest front %s: client %s: %u headers of %zu bytes (over "
            "%d lines or %d bytes)", f->name, peer, nh, hbytes,
            FRONT_MAX_HEADER_LINES, FRONT_MAX_HEADER_BYTES);
        front_error(f, req, 431, -1000, "exgate: request headers too large");
        return;
    }
    eu = evhttp_request_get_evhttp_uri(req);
    path = eu != NULL ? evhttp_uri_get_path(eu) : NULL;
    query = eu != NULL ? evhttp_uri_get_query(eu) : NULL;
    if (path != NULL) {
        dpath = evhttp_uridecode(path, 0, &dlen);
    }
    if (dpath == NULL || dlen != strlen(dpath) || dpath[0] != '/'
        || path_dots(dpath))
    {
        f->refused++;
        xg_log_info("rest front %s: client %s: bad request target", f->name,
            peer);
        front_error(f, req, 400, -1000, "exgate: bad request target");
        goto done;
    }
    xg_log_debug("rest front %s: client %s: %s %.300s", f->name, peer,
        cmd == EVHTTP_REQ_HEAD ? "HEAD" : "GET", uri);
    if (evhttp_find_header(in, "X-MBX-APIKEY") != NULL
        || (query != NULL && query_signed(query)))
    {
        f->refused++;
        xg_log_info("rest front %s: client %s: signed request %.200s "
            "refused", f->name, peer, dpath);
        front_error(f, req, 403, -1002, "exgate: signed and API-key "
            "endpoints are not served here: send them to the exchange "
            "directly");
        goto done;
    }
    for (i = 0; i < XG_NELEM(front_prefixes); i++) {
        base = front_prefixes[i];
        if (strncmp(dpath, base, strlen(base)) == 0
            && dpath[strlen(base)] != '\0')
        {
            break;
        }
    }
    if (i == XG_NELEM(front_prefixes)) {
        f->refused++;
        snprintf(msg, sizeof(msg), "exgate: unknown path %.100s (served: "
            "/api/v3/..., /fapi/v1/..., /dapi/v1/...)", dpath);
        xg_log_info("rest front %s: client %s: GET %.200s: not found",
            f->name, peer, dpath);
        front_error(f, req, 404, -1000, msg);
        goto done;
    }
    if (f->venue != NULL && f->venue->rest_local != NULL
        && (body = f->venue->rest_local(f->vp, dpath, query, &len)) != NULL)
    {
        f->local++;
        front_send(f, req, 200, NULL, body, len);
        free(body);
        goto done;
    }
    rest = xg_upstream_rest(f->up);
    if (rest == NULL) {
        f->refused++;
        xg_log_warn("rest front %s: client %s: upstream \"%s\" has no "
            "rest_url", f->name, peer, xg_upstream_name(f->up));
        front_error(f, req, 503, -1001, "exgate: the upstream has no "
            "rest_url");
        goto done;
    }
    if ((left = xg_rest_backoff_ms(rest, &bs)) > 0) {
        front_backoff(f, req, left, bs, peer);
        goto done;
    }
    len = strlen(path) + (query != NULL ? strlen(query) + 1 : 0) + 1;
    pq = xg_malloc(len);
    snprintf(pq, len, "%s%s%s", path, query != NULL ? "?" : "",
        query != NULL ? query : "");
    f->proxied++;
    len = strlen(dpath);
    if (len >= 13 && strcmp(dpath + len - 13, "/exchangeInfo") == 0
        && xg_rest_cache_ms(rest) > 0)
    {
        front_cached(f, rest, req, pq, peer, xg_rest_cache_ms(rest));
        goto done;
    }
    fr = front_req_new(f, req, peer);
    fr->g = xg_rest_get(rest, pq, 0, front_on_answer, fr);
    if (fr->g == NULL) {
        front_error(f, req, 500, -1000, "exgate: out of memory");
        front_req_free(fr);
    }

done:
    free(dpath);
    free(pq);
}

/* See xg_rest.h. */
struct xg_rest_front *
xg_rest_front_new(struct event_base *base, struct evconnlistener *evl,
    struct xg_upstream *up, const struct xg_venue *venue, void *vp,
    const char *name)
{
    struct xg_rest_front *f = xg_calloc(1, sizeof(*f));

    f->base = base;
    f->up = up;
    f->venue = venue;
    f->vp = vp;
    snprintf(f->name, sizeof(f->name), "%s", name);
    f->http = evhttp_new(base);
    if (f->http == NULL) {
        xg_log_error("rest front %s: cannot make an http server", name);
        evconnlistener_free(evl);
        free(f);
        return NULL;
    }
    evhttp_set_max_headers_size(f->http, FRONT_MAX_READ);
    evhttp_set_max_body_size(f->http, FRONT_MAX_BODY);
    evhttp_set_timeout(f->http, FRONT_TIMEOUT_S);
    /* every method reaches front_on_request, which answers 405 itself */
    evhttp_set_allowed_methods(f->http, EVHTTP_REQ_GET | EVHTTP_REQ_POST
        | EVHTTP_REQ_HEAD | EVHTTP_REQ_PUT | EVHTTP_REQ_DELETE
        | EVHTTP_REQ_OPTIONS | EVHTTP_REQ_TRACE | EVHTTP_REQ_CONNECT
        | EVHTTP_REQ_PATCH);
    evhttp_set_gencb(f->http, front_on_request, f);
    if (evhttp_bind_listener(f->http, evl) == NULL) {
        xg_log_error("rest front %s: cannot serve on the listener", name);
        evconnlistener_free(evl);
        evhttp_free(f->http);
        free(f);
        return NULL;
    }
    return f;
}

/* See xg_rest.h. */
void
xg_rest_front_free(struct xg_rest_front *f)
{
    struct front_cache *ce;

    if (f == NULL) {
        return;
    }
    while (f->reqs != NULL) {
        if (f->reqs->g != NULL) {
            xg_rest_cancel(f->reqs->g);
        }
        front_req_free(f->reqs);    /* evhttp_free drops its request */
    }
    while ((ce = f->cache) != NULL) {
        f->cache = ce->next;
        if (ce->g != NULL) {
            xg_rest_cancel(ce->g);
        }
        cache_free(ce);
    }
    evhttp_free(f->http);
    free(f);
}

/* See xg_rest.h. */
void
xg_rest_front_status(const struct xg_rest_front *f, json_t *obj)
{
    json_t *cls = json_object();
    char k[8];
    int i;

    for (i = 1; i < FRONT_CLASS_N; i++) {
        snprintf(k, sizeof(k), "%dxx", i);
        json_object_set_new(cls, k, json_integer((json_int_t)
            f->by_class[i]));
    }
    json_object_set_new(obj, "requests", json_integer((json_int_t)
        f->requests));
    json_object_set_new(obj, "answers", cls);
    json_object_set_new(obj, "pending", json_integer(f->pending));
    json_object_set_new(obj, "local", json_integer((json_int_t) f->local));
    json_object_set_new(obj, "proxied", json_integer((json_int_t)
        f->proxied));
    json_object_set_new(obj, "cache_hits", json_integer((json_int_t)
        f->cache_hits));
    json_object_set_new(obj, "cache_fetches", json_integer((json_int_t)
        f->cache_fetches));
    json_object_set_new(obj, "cache_shared", json_integer((json_int_t)
        f->cache_shared));
    json_object_set_new(obj, "refused", json_integer((json_int_t)
        f->refused));
    json_object_set_new(obj, "backoff_answers", json_integer((json_int_t)
        f->backoff_answers));
}
