/*
 * check_xg_rest.c: the upstream REST client (src/xg_rest.c) against a
 * real HTTP server run in this process (libevent's evhttp, plain and over
 * TLS with certificates made by the openssl CLI), and the conf side of
 * rest_url, rest_cache and `listen ... http`.
 */
#include "xg_core.h"
#include "xg_conf.h"
#include "xg_rest.h"
#include "xg_tls.h"
#include "xg_upstream.h"
#include "xg_venue.h"

#include <check.h>
#include <event2/buffer.h>
#include <event2/bufferevent_ssl.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>
#include <event2/listener.h>
#include <openssl/ssl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* ---- the server ---------------------------------------------------------- */

struct server {
    struct event_base           *base;
    struct evhttp               *http;
    SSL_CTX                     *ctx;      /* TLS when set */
    uint16_t                     port;
    unsigned                     requests;
    char                         last_host[300];
};

static struct bufferevent *
server_bevcb(struct event_base *base, void *arg)
{
    struct server *s = arg;

    return bufferevent_openssl_socket_new(base, -1, SSL_new(s->ctx),
        BUFFEREVENT_SSL_ACCEPTING, BEV_OPT_CLOSE_ON_FREE);
}

static void
server_reply(struct evhttp_request *req, int status, const char *body,
    const char *retry_after)
{
    struct evbuffer *b = evbuffer_new();
    struct evkeyvalq *out = evhttp_request_get_output_headers(req);

    evhttp_add_header(out, "Content-Type", "application/json");
    evhttp_add_header(out, "X-MBX-USED-WEIGHT-1M", "7");
    if (retry_after != NULL) {
        evhttp_add_header(out, "Retry-After", retry_after);
    }
    evbuffer_add(b, body, strlen(body));
    evhttp_send_reply(req, status, NULL, b);
    evbuffer_free(b);
}

/*
 * /ok: 200 {"ok":1} (weight 7), /q?x: 200 with the query echoed, /404,
 * /429 and /418 (Retry-After 1), /big: 16m + 1 bytes, /hang: never
 * answered, /close: 200 with Connection: close.
 */
static void
server_cb(struct evhttp_request *req, void *arg)
{
    struct server *s = arg;
    const char *uri = evhttp_request_get_uri(req);
    const char *host = evhttp_find_header(
        evhttp_request_get_input_headers(req), "Host");
    struct evbuffer *b;
    char *big;

    s->requests++;
    snprintf(s->last_host, sizeof(s->last_host), "%s", host ? host : "");
    if (strcmp(uri, "/base/ok") == 0 || strcmp(uri, "/ok") == 0) {
        server_reply(req, 200, "{\"ok\":1}", NULL);
    } else if (strncmp(uri, "/q?", 3) == 0) {
        server_reply(req, 200, uri + 3, NULL);
    } else if (strncmp(uri, "/api/v3/echo?", 13) == 0) {
        server_reply(req, 200, uri + 13, NULL);
    } else if (strcmp(uri, "/429") == 0) {
        server_reply(req, 429, "{\"code\":-1003}", "1");
    } else if (strcmp(uri, "/418") == 0) {
        server_reply(req, 418, "{\"code\":-1003}", "1");
    } else if (strcmp(uri, "/big") == 0) {
        big = malloc(XG_REST_MAX_BODY + 1);
        memset(big, 'x', XG_REST_MAX_BODY + 1);
        b = evbuffer_new();
        evbuffer_add(b, big, XG_REST_MAX_BODY + 1);
        evhttp_send_reply(req, 200, NULL, b);
        evbuffer_free(b);
        free(big);
    } else if (strcmp(uri, "/hang") == 0
               || strcmp(uri, "/api/v3/hang") == 0) {
        /* never answered: evhttp_free() drops it */
    } else if (strcmp(uri, "/close") == 0) {
        evhttp_add_header(evhttp_request_get_output_headers(req),
            "Connection", "close");
        server_reply(req, 200, "{\"closed\":1}", NULL);
    } else {
        server_reply(req, 404, "{\"code\":-1}", NULL);
    }
}

static void
server_start(struct server *s, struct event_base *base, SSL_CTX *ctx)
{
    struct evhttp_bound_socket *bs;
    evutil_socket_t fd;
    struct sockaddr_in sin;
    socklen_t len = sizeof(sin);

    memset(s, 0, sizeof(*s));
    s->base = base;
    s->ctx = ctx;
    s->http = evhttp_new(base);
    ck_assert_ptr_nonnull(s->http);
    if (ctx != NULL) {
        evhttp_set_bevcb(s->http, server_bevcb, s);
    }
    evhttp_set_gencb(s->http, server_cb, s);
    bs = evhttp_bind_socket_with_handle(s->http, "127.0.0.1", 0);
    ck_assert_ptr_nonnull(bs);
    fd = evhttp_bound_socket_get_fd(bs);
    ck_assert_int_eq(getsockname(fd, (struct sockaddr *) &sin, &len), 0);
    s->port = ntohs(sin.sin_port);
}

static void
server_stop(struct server *s)
{
    evhttp_free(s->http);
    if (s->ctx != NULL) {
        SSL_CTX_free(s->ctx);
    }
}

/* ---- the client's side ------------------------------------------------ */

struct answer {
    int         called;
    int         status;
    char        body[256];
    size_t      len;
    char        weight[32];
    char        err[256];
};

static void
answer_cb(void *arg, int status, const char *body, size_t len,
    const struct evkeyvalq *headers, const char *err)
{
    struct answer *a = arg;
    const char *w;

    a->called++;
    a->status = status;
    a->len = len;
    snprintf(a->body, sizeof(a->body), "%.*s", (int) (len < 200 ? len : 200),
        body);
    if (headers != NULL
        && (w = evhttp_find_header(headers, "X-MBX-USED-WEIGHT-1M")) != NULL)
    {
        snprintf(a->weight, sizeof(a->weight), "%s", w);
    }
    snprintf(a->err, sizeof(a->err), "%s", err ? err : "");
}

/* Runs BASE until *FLAG or MS pass. */
static void
run_until(struct event_base *base, const int *flag, unsigned ms)
{
    uint64_t end = xg_now_ms() + ms;

    while ((flag == NULL || !*flag) && xg_now_ms() < end) {
        event_base_loop(base, EVLOOP_ONCE | EVLOOP_NONBLOCK);
        usleep(1000);
    }
}

static struct xg_main_conf *
load(const char *text, char **errors)
{
    *errors = NULL;
    return xg_conf_load_string("t.conf", text, errors);
}

/* A conf whose upstream u has rest_url URL (and EXTRA lines). */
static struct xg_main_conf *
conf_for(const char *url, const char *extra)
{
    char text[2048], *errors;
    struct xg_main_conf *mc;

    snprintf(text, sizeof(text), "upstream u {\n    url ws://127.0.0.1:1/;\n"
        "    rest_url %s;\n%s}\n", url, extra ? extra : "");
    mc = load(text, &errors);
    ck_assert_msg(mc != NULL, "conf: %s", errors ? errors : "?");
    free(errors);
    return mc;
}

static struct xg_rest *
client(struct event_base *base, const struct xg_main_conf *mc)
{
    struct xg_rest *r = xg_rest_new(base, NULL, mc->upstreams, "u");

    ck_assert_ptr_nonnull(r);
    return r;
}

static json_t *
status_of(const struct xg_rest *r)
{
    json_t *o = json_object(), *rest;

    xg_rest_status(r, o);
    rest = json_incref(json_object_get(o, "rest"));
    json_decref(o);
    return rest;
}

static json_int_t
status_int(const struct xg_rest *r, const char *key)
{
    json_t *st = status_of(r);
    json_int_t v = json_integer_value(json_object_get(st, key));

    json_decref(st);
    return v;
}

/* ---- the client --------------------------------------------------------- */

START_TEST(get_ok_and_keep_alive)
{
    struct event_base *base = event_base_new();
    struct server s;
    struct xg_main_conf *mc;
    struct xg_rest *r;
    struct answer a[3];
    char url[64];
    int i;
    json_t *st;

    server_start(&s, base, NULL);
    snprintf(url, sizeof(url), "http://127.0.0.1:%u/base/", s.port);
    mc = conf_for(url, NULL);
    r = client(base, mc);
    memset(a, 0, sizeof(a));
    for (i = 0; i < 3; i++) {
        ck_assert_ptr_nonnull(xg_rest_get(r, "/ok", 0, answer_cb, &a[i]));
        /* never before xg_rest_get() returns */
        ck_assert_int_eq(a[i].called, 0);
        run_until(base, &a[i].called, 3000);
        ck_assert_int_eq(a[i].called, 1);
        ck_assert_int_eq(a[i].status, 200);
        ck_assert_str_eq(a[i].body, "{\"ok\":1}");
        ck_assert_str_eq(a[i].weight, "7");
    }
    /* rest_url's path is the base; the port is in Host */
    ck_assert_uint_eq(s.requests, 3);
    snprintf(url, sizeof(url), "127.0.0.1:%u", s.port);
    ck_assert_str_eq(s.last_host, url);
    /* kept alive: one connection for the three */
    st = status_of(r);
    ck_assert_int_eq(json_integer_value(json_object_get(st,
        "connections_made")), 1);
    ck_assert_int_eq(json_integer_value(json_object_get(st, "used_weight")),
        7);
    ck_assert_int_eq(json_integer_value(json_object_get(json_object_get(st,
        "requests"), "2xx")), 3);
    json_decref(st);
    xg_rest_free(r);
    xg_conf_free(mc);
    server_stop(&s);
    event_base_free(base);
}
END_TEST

START_TEST(status_passed_and_close_not_reused)
{
    struct event_base *base = event_base_new();
    struct server s;
    struct xg_main_conf *mc;
    struct xg_rest *r;
    struct answer a, b, c;
    char url[64];

    server_start(&s, base, NULL);
    snprintf(url, sizeof(url), "http://127.0.0.1:%u", s.port);
    mc = conf_for(url, NULL);
    r = client(base, mc);
    memset(&a, 0, sizeof(a));
    memset(&b, 0, sizeof(b));
    memset(&c, 0, sizeof(c));
    xg_rest_get(r, "/nothing-here", 0, answer_cb, &a);
    run_until(base, &a.called, 3000);
    ck_assert_int_eq(a.status, 404);
    ck_assert_str_eq(a.body, "{\"code\":-1}");
    xg_rest_get(r, "/close", 0, answer_cb, &b);
    run_until(base, &b.called, 3000);
    ck_assert_int_eq(b.status, 200);
    xg_rest_get(r, "/q?a=1&b=%20", 0, answer_cb, &c);
    run_until(base, &c.called, 3000);
    ck_assert_int_eq(c.status, 200);
    ck_assert_str_eq(c.body, "a=1&b=%20");
    /* the closed one was not used again */
    ck_assert_int_eq(status_int(r, "connections_made"), 2);
    ck_assert_int_eq(status_int(r, "retries"), 0);
    xg_rest_free(r);
    xg_conf_free(mc);
    server_stop(&s);
    event_base_free(base);
}
END_TEST

/* Backing off after STATUS (429 or 418) with Retry-After: 1. */
static void
backoff_case(const char *path, int status)
{
    struct event_base *base = event_base_new();
    struct server s;
    struct xg_main_conf *mc;
    struct xg_rest *r;
    struct answer a, b, c;
    char url[64];
    int st;

    server_start(&s, base, NULL);
    snprintf(url, sizeof(url), "http://127.0.0.1:%u", s.port);
    mc = conf_for(url, NULL);
    r = client(base, mc);
    memset(&a, 0, sizeof(a));
    memset(&b, 0, sizeof(b));
    memset(&c, 0, sizeof(c));
    xg_rest_get(r, path, 0, answer_cb, &a);
    run_until(base, &a.called, 3000);
    ck_assert_int_eq(a.status, status);
    ck_assert_uint_gt(xg_rest_backoff_ms(r, &st), 0);
    ck_assert_uint_le(xg_rest_backoff_ms(r, NULL), 1000);
    ck_assert_int_eq(st, status);
    /* failed at once, from the loop, without asking the server */
    xg_rest_get(r, "/ok", 0, answer_cb, &b);
    ck_assert_int_eq(b.called, 0);
    run_until(base, &b.called, 500);
    ck_assert_int_eq(b.called, 1);
    ck_assert_int_eq(b.status, 0);
    ck_assert_msg(strstr(b.err, "backing off until") != NULL, "%s", b.err);
    ck_assert_uint_eq(s.requests, 1);
    ck_assert_int_eq(status_int(r, "backoff_refused"), 1);
    ck_assert_int_eq(status_int(r, "backoffs"), 1);
    /* Retry-After passed: asked again */
    run_until(base, NULL, 1100);
    ck_assert_uint_eq(xg_rest_backoff_ms(r, NULL), 0);
    xg_rest_get(r, "/ok", 0, answer_cb, &c);
    run_until(base, &c.called, 3000);
    ck_assert_int_eq(c.status, 200);
    ck_assert_uint_eq(s.requests, 2);
    xg_rest_free(r);
    xg_conf_free(mc);
    server_stop(&s);
    event_base_free(base);
}

START_TEST(backoff_429)
{
    backoff_case("/429", 429);
}
END_TEST

START_TEST(backoff_418)
{
    backoff_case("/418", 418);
}
END_TEST

START_TEST(body_bounded)
{
    struct event_base *base = event_base_new();
    struct server s;
    struct xg_main_conf *mc;
    struct xg_rest *r;
    struct answer a;
    char url[64];

    server_start(&s, base, NULL);
    snprintf(url, sizeof(url), "http://127.0.0.1:%u", s.port);
    mc = conf_for(url, NULL);
    r = client(base, mc);
    memset(&a, 0, sizeof(a));
    xg_rest_get(r, "/big", 0, answer_cb, &a);
    run_until(base, &a.called, 10000);
    ck_assert_int_eq(a.called, 1);
    ck_assert_int_eq(a.status, 0);
    ck_assert_msg(strstr(a.err, "too big") != NULL, "%s", a.err);
    ck_assert_int_eq(status_int(r, "too_big"), 1);
    xg_rest_free(r);
    xg_conf_free(mc);
    server_stop(&s);
    event_base_free(base);
}
END_TEST

START_TEST(timeout_refused_bad_path)
{
    struct event_base *base = event_base_new();
    struct server s;
    struct xg_main_conf *mc, *mc2;
    struct xg_rest *r;
    struct answer a, b, c, d;
    char url[64];
    uint64_t t0;

    server_start(&s, base, NULL);
    snprintf(url, sizeof(url), "http://127.0.0.1:%u", s.port);
    mc = conf_for(url, NULL);
    r = client(base, mc);
    memset(&a, 0, sizeof(a));
    memset(&b, 0, sizeof(b));
    memset(&c, 0, sizeof(c));
    memset(&d, 0, sizeof(d));
    t0 = xg_now_ms();
    xg_rest_get(r, "/hang", 200, answer_cb, &a);
    run_until(base, &a.called, 3000);
    ck_assert_int_eq(a.status, 0);
    ck_assert_msg(strncmp(a.err, "timeout after 200ms", 19) == 0, "%s",
        a.err);
    ck_assert_uint_ge(xg_now_ms() - t0, 190);
    ck_assert_uint_lt(xg_now_ms() - t0, 1500);
    ck_assert_int_eq(status_int(r, "timeouts"), 1);
    /* not a path: refused without a request */
    xg_rest_get(r, "no-slash", 0, answer_cb, &b);
    xg_rest_get(r, "/a b", 0, answer_cb, &c);
    run_until(base, &c.called, 500);
    ck_assert_int_eq(b.status, 0);
    ck_assert_int_eq(c.status, 0);
    ck_assert_msg(strstr(c.err, "bad path") != NULL, "%s", c.err);
    ck_assert_uint_eq(s.requests, 1);
    /* a reload to a port nobody listens on: the next GET goes there */
    mc2 = conf_for("http://127.0.0.1:1", NULL);
    xg_rest_reconf(r, mc2->upstreams);
    xg_rest_get(r, "/ok", 0, answer_cb, &d);
    run_until(base, &d.called, 3000);
    ck_assert_int_eq(d.status, 0);
    ck_assert_msg(strstr(d.err, "refused") != NULL
        || strstr(d.err, "no answer") != NULL, "%s", d.err);
    ck_assert_uint_eq(s.requests, 1);
    xg_rest_free(r);
    xg_conf_free(mc);
    xg_conf_free(mc2);
    server_stop(&s);
    event_base_free(base);
}
END_TEST

START_TEST(cancel_and_free_in_flight)
{
    struct event_base *base = event_base_new();
    struct server s;
    struct xg_main_conf *mc;
    struct xg_rest *r;
    struct xg_rest_get *g;
    struct answer a, b, c;
    char url[64];

    server_start(&s, base, NULL);
    snprintf(url, sizeof(url), "http://127.0.0.1:%u", s.port);
    mc = conf_for(url, NULL);
    r = client(base, mc);
    memset(&a, 0, sizeof(a));
    memset(&b, 0, sizeof(b));
    memset(&c, 0, sizeof(c));
    g = xg_rest_get(r, "/hang", 0, answer_cb, &a);
    run_until(base, NULL, 200);
    ck_assert_uint_eq(s.requests, 1);
    xg_rest_cancel(g);
    /* a cancelled answer before it is handed over */
    g = xg_rest_get(r, "/ok", 0, answer_cb, &b);
    run_until(base, NULL, 300);
    ck_assert_int_eq(b.called, 1);
    g = xg_rest_get(r, "/ok", 0, answer_cb, &c);
    xg_rest_cancel(g);
    run_until(base, NULL, 300);
    ck_assert_int_eq(a.called, 0);
    ck_assert_int_eq(c.called, 0);
    /* freed with two in flight: no callback */
    xg_rest_get(r, "/hang", 0, answer_cb, &a);
    xg_rest_get(r, "/hang", 0, answer_cb, &c);
    run_until(base, NULL, 100);
    xg_rest_free(r);
    run_until(base, NULL, 200);
    ck_assert_int_eq(a.called, 0);
    ck_assert_int_eq(c.called, 0);
    xg_conf_free(mc);
    server_stop(&s);
    event_base_free(base);
}
END_TEST

START_TEST(many_at_once)
{
    struct event_base *base = event_base_new();
    struct server s;
    struct xg_main_conf *mc;
    struct xg_rest *r;
    struct answer a[40];
    char url[64];
    int i, n = 0;

    server_start(&s, base, NULL);
    snprintf(url, sizeof(url), "http://127.0.0.1:%u", s.port);
    mc = conf_for(url, NULL);
    r = client(base, mc);
    memset(a, 0, sizeof(a));
    for (i = 0; i < 40; i++) {
        xg_rest_get(r, "/ok", 0, answer_cb, &a[i]);
    }
    for (i = 0; i < 40; i++) {
        run_until(base, &a[i].called, 5000);
        n += a[i].status == 200;
    }
    ck_assert_int_eq(n, 40);
    /* at most 8 connections, kept for the next GETs */
    ck_assert_int_le(status_int(r, "connections_made"), 8);
    xg_rest_free(r);
    xg_conf_free(mc);
    server_stop(&s);
    event_base_free(base);
}
END_TEST

/* ---- the front, on a venue that answers some requests itself ---------- */

static char *
test_rest_local(void *p, const char *path, const char *query, size_t *len)
{
    char *b;

    if (strcmp(path, "/api/v3/depth") != 0 || query == NULL
        || strstr(query, "symbol=HELD") == NULL)
    {
        return NULL;
    }
    b = strdup("{\"lastUpdateId\":42}");
    *len = strlen(b);
    return b;
}

static const struct xg_venue test_venue = {
    .name = "test",
    .rest_local = test_rest_local
};

static void
no_accept(struct evconnlistener *l, evutil_socket_t fd, struct sockaddr *sa,
    int len, void *arg)
{
    evutil_closesocket(fd);
}

START_TEST(front_local_and_proxied)
{
    struct event_base *base = event_base_new();
    struct server s;
    struct xg_main_conf *mc, *mc2;
    struct xg_upstream *up;
    struct xg_rest_front *f;
    struct xg_rest *r;
    struct evconnlistener *evl;
    struct sockaddr_in sin;
    socklen_t sl = sizeof(sin);
    struct answer a, b, c, d;
    char url[64];
    json_t *st;

    server_start(&s, base, NULL);
    snprintf(url, sizeof(url), "http://127.0.0.1:%u", s.port);
    mc = conf_for(url, NULL);
    up = xg_upstream_create_proto(base, NULL, mc->upstreams, &test_venue);
    ck_assert_ptr_nonnull(up);
    ck_assert_ptr_nonnull(xg_upstream_rest(up));
    memset(&sin, 0, sizeof(sin));
    sin.sin_family = AF_INET;
    sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    evl = evconnlistener_new_bind(base, no_accept, NULL,
        LEV_OPT_REUSEABLE | LEV_OPT_CLOSE_ON_FREE, -1,
        (struct sockaddr *) &sin, sizeof(sin));
    ck_assert_ptr_nonnull(evl);
    ck_assert_int_eq(getsockname(evconnlistener_get_fd(evl),
        (struct sockaddr *) &sin, &sl), 0);
    f = xg_rest_front_new(base, evl, up, &test_venue, NULL, "front");
    ck_assert_ptr_nonnull(f);
    /* a REST client of its own talks to the front */
    snprintf(url, sizeof(url), "http://127.0.0.1:%u", ntohs(sin.sin_port));
    mc2 = conf_for(url, NULL);
    r = client(base, mc2);
    memset(&a, 0, sizeof(a));
    memset(&b, 0, sizeof(b));
    memset(&c, 0, sizeof(c));
    memset(&d, 0, sizeof(d));
    /* answered by the venue: the exchange is not asked */
    xg_rest_get(r, "/api/v3/depth?symbol=HELD&limit=5", 0, answer_cb, &a);
    run_until(base, &a.called, 3000);
    ck_assert_int_eq(a.status, 200);
    ck_assert_str_eq(a.body, "{\"lastUpdateId\":42}");
    ck_assert_uint_eq(s.requests, 0);
    /* not by the venue: proxied, query and all */
    xg_rest_get(r, "/api/v3/echo?symbol=OTHER&x=%41", 0, answer_cb, &b);
    run_until(base, &b.called, 3000);
    ck_assert_int_eq(b.status, 200);
    ck_assert_str_eq(b.body, "symbol=OTHER&x=%41");
    ck_assert_str_eq(b.weight, "7");
    ck_assert_uint_eq(s.requests, 1);
    xg_rest_get(r, "/wapi/v3/x", 0, answer_cb, &c);
    run_until(base, &c.called, 3000);
    ck_assert_int_eq(c.status, 404);
    /* the exchange's own 404 is passed on */
    xg_rest_get(r, "/api/v3/nothing", 0, answer_cb, &d);
    run_until(base, &d.called, 3000);
    ck_assert_int_eq(d.status, 404);
    ck_assert_str_eq(d.body, "{\"code\":-1}");
    st = json_object();
    xg_rest_front_status(f, st);
    ck_assert_int_eq(json_integer_value(json_object_get(st, "local")), 1);
    ck_assert_int_eq(json_integer_value(json_object_get(st, "proxied")), 2);
    ck_assert_int_eq(json_integer_value(json_object_get(st, "refused")), 1);
    json_decref(st);
    /* freed with a request in flight (its GET is cancelled) */
    memset(&a, 0, sizeof(a));
    xg_rest_get(r, "/api/v3/hang", 0, answer_cb, &a);
    run_until(base, NULL, 200);
    xg_rest_front_free(f);
    run_until(base, &a.called, 3000);
    ck_assert_int_eq(a.status, 0);
    xg_rest_free(r);
    xg_upstream_free(up);
    xg_conf_free(mc);
    xg_conf_free(mc2);
    server_stop(&s);
    event_base_free(base);
}
END_TEST

/* ---- TLS ----------------------------------------------------------------- */

static char tmpdir[256];

/* Makes NAME.pem and NAME.key, a self-signed certificate for SAN. */
static void
make_cert(const char *name, const char *san)
{
    const char *openssl = getenv("OPENSSL_BIN");
    char cmd[2048];

    if (tmpdir[0] == '\0') {
        snprintf(tmpdir, sizeof(tmpdir), "/tmp/check_xg_rest.XXXXXX");
        ck_assert_ptr_nonnull(mkdtemp(tmpdir));
    }
    snprintf(cmd, sizeof(cmd), "%s req -x509 -newkey rsa:2048 -nodes "
        "-keyout %s/%s.key -out %s/%s.pem -days 1 -subj /CN=%s "
        "-addext subjectAltName=%s >/dev/null 2>&1",
        openssl && *openssl ? openssl : "openssl", tmpdir, name, tmpdir,
        name, name, san);
    ck_assert_int_eq(system(cmd), 0);
}

static void
rm_tmpdir(void)
{
    char cmd[300];

    snprintf(cmd, sizeof(cmd), "rm -rf %s", tmpdir);
    ck_assert_int_eq(system(cmd), 0);
}

static SSL_CTX *
server_ctx(const char *name)
{
    char cert[512], key[512], err[512];
    SSL_CTX *ctx;

    snprintf(cert, sizeof(cert), "%s/%s.pem", tmpdir, name);
    snprintf(key, sizeof(key), "%s/%s.key", tmpdir, name);
    ctx = xg_tls_server_ctx(cert, key, err, sizeof(err));
    ck_assert_msg(ctx != NULL, "%s", err);
    return ctx;
}

/* A GET of /ok over TLS to HOST, the server showing NAME's certificate,
   the client trusting CA's; returns the answer. */
static struct answer
tls_get(const char *host, const char *name, const char *ca,
    const char *verify)
{
    struct event_base *base = event_base_new();
    struct server s;
    struct xg_main_conf *mc;
    struct xg_rest *r;
    struct answer a;
    char url[128], extra[600];

    server_start(&s, base, server_ctx(name));
    snprintf(url, sizeof(url), "https://%s:%u", host, s.port);
    snprintf(extra, sizeof(extra), "    tls_ca %s/%s.pem;\n%s", tmpdir, ca,
        verify ? verify : "");
    mc = conf_for(url, extra);
    r = client(base, mc);
    memset(&a, 0, sizeof(a));
    xg_rest_get(r, "/ok", 3000, answer_cb, &a);
    run_until(base, &a.called, 5000);
    ck_assert_int_eq(a.called, 1);
    xg_rest_free(r);
    xg_conf_free(mc);
    server_stop(&s);
    event_base_free(base);
    return a;
}

START_TEST(tls_verified)
{
    struct answer a;

    make_cert("good", "DNS:localhost,IP:127.0.0.1");
    make_cert("other", "DNS:other.example");
    a = tls_get("localhost", "good", "good", NULL);
    ck_assert_msg(a.status == 200, "%d %s", a.status, a.err);
    ck_assert_str_eq(a.body, "{\"ok\":1}");
    a = tls_get("127.0.0.1", "good", "good", NULL);
    ck_assert_msg(a.status == 200, "%d %s", a.status, a.err);
    /* a trusted certificate for another name: refused */
    a = tls_get("localhost", "other", "other", NULL);
    ck_assert_int_eq(a.status, 0);
    ck_assert_msg(strstr(a.err, "hostname mismatch") != NULL, "%s", a.err);
    a = tls_get("127.0.0.1", "other", "other", NULL);
    ck_assert_int_eq(a.status, 0);
    ck_assert_msg(strstr(a.err, "IP address mismatch") != NULL, "%s", a.err);
    /* a certificate no CA we trust signed: refused */
    a = tls_get("localhost", "good", "other", NULL);
    ck_assert_int_eq(a.status, 0);
    ck_assert_msg(strstr(a.err, "certificate verify failed") != NULL, "%s",
        a.err);
    /* tls_verify off (tests only) takes it */
    a = tls_get("localhost", "other", "good", "    tls_verify off;\n");
    ck_assert_msg(a.status == 200, "%d %s", a.status, a.err);
    rm_tmpdir();
}
END_TEST

/* Over TLS: kept alive, and a closed connection replaced, not reused. */
START_TEST(tls_keep_alive)
{
    struct event_base *base = event_base_new();
    struct server s;
    struct xg_main_conf *mc;
    struct xg_rest *r;
    struct answer a[5];
    const char *paths[5] = { "/ok", "/ok", "/close", "/ok", "/ok" };
    char url[128], extra[600];
    int i;

    make_cert("good", "DNS:localhost,IP:127.0.0.1");
    server_start(&s, base, server_ctx("good"));
    snprintf(url, sizeof(url), "https://127.0.0.1:%u", s.port);
    snprintf(extra, sizeof(extra), "    tls_ca %s/good.pem;\n", tmpdir);
    mc = conf_for(url, extra);
    r = client(base, mc);
    memset(a, 0, sizeof(a));
    for (i = 0; i < 5; i++) {
        xg_rest_get(r, paths[i], 3000, answer_cb, &a[i]);
        run_until(base, &a[i].called, 5000);
        ck_assert_msg(a[i].status == 200, "%d: %d %s", i, a[i].status,
            a[i].err);
    }
    ck_assert_int_eq(status_int(r, "connections_made"), 2);
    ck_assert_int_eq(status_int(r, "retries"), 0);
    xg_rest_free(r);
    xg_conf_free(mc);
    server_stop(&s);
    event_base_free(base);
    rm_tmpdir();
}
END_TEST

/* ---- conf ---------------------------------------------------------------- */

START_TEST(conf_rest_url)
{
    struct xg_main_conf *mc;
    const struct xg_upstream_conf *uc;
    char *errors, buf[256];

    mc = load("upstream u {\n url wss://h/;\n rest_url https://api.x.com;\n"
        "}\n", &errors);
    ck_assert_msg(mc != NULL, "%s", errors);
    uc = mc->upstreams;
    ck_assert(uc->rest_url_set);
    ck_assert(uc->rest_url.tls);
    ck_assert_uint_eq(uc->rest_url.port, 443);
    ck_assert_str_eq(uc->rest_url.host, "api.x.com");
    ck_assert_str_eq(uc->rest_url.path, "");
    ck_assert_uint_eq(uc->rest_cache_ms, 60000);
    ck_assert_str_eq(xg_conf_fmt_http_url(&uc->rest_url, buf, sizeof(buf)),
        "https://api.x.com");
    xg_conf_free(mc);

    mc = load("upstream u {\n url ws://h/;\n rest_url http://[::1]:81/v/;\n"
        " rest_cache 0s;\n}\n", &errors);
    ck_assert_msg(mc != NULL, "%s", errors);
    uc = mc->upstreams;
    ck_assert(!uc->rest_url.tls);
    ck_assert_uint_eq(uc->rest_url.port, 81);
    ck_assert_str_eq(uc->rest_url.path, "/v");
    ck_assert_uint_eq(uc->rest_cache_ms, 0);
    ck_assert_str_eq(xg_conf_fmt_http_url(&uc->rest_url, buf, sizeof(buf)),
        "http://[::1]:81/v");
    xg_conf_free(mc);

    /* no rest_url: none */
    mc = load("upstream u {\n url ws://h/;\n}\n", &errors);
    ck_assert_ptr_nonnull(mc);
    ck_assert(!mc->upstreams->rest_url_set);
    xg_conf_free(mc);
}
END_TEST

static void
conf_refused(const char *text, const char *want)
{
    struct xg_main_conf *mc;
    char *errors;

    mc = load(text, &errors);
    ck_assert_msg(mc == NULL, "accepted: %s", text);
    ck_assert_msg(errors != NULL && strstr(errors, want) != NULL,
        "want \"%s\", got: %s", want, errors ? errors : "(none)");
    free(errors);
}

START_TEST(conf_refusals)
{
    conf_refused("upstream u {\n url ws://h/;\n rest_url ftp://h;\n}\n",
        "t.conf:3: \"rest_url\": bad url \"ftp://h\"");
    conf_refused("upstream u {\n url ws://h/;\n rest_url ws://h;\n}\n",
        "t.conf:3: \"rest_url\": bad url");
    conf_refused("upstream u {\n url ws://h/;\n rest_url http://;\n}\n",
        "t.conf:3: \"rest_url\": bad url");
    conf_refused("upstream u {\n url ws://h/;\n rest_url http://h:99999;\n"
        "}\n", "t.conf:3: \"rest_url\": bad url");
    /* a query is never echoed (it could carry a credential) */
    conf_refused("upstream u {\n url ws://h/;\n rest_url http://h/?k=SECRET;"
        "\n}\n", "t.conf:3: \"rest_url\": bad url \"http://h/?...\"");
    conf_refused("upstream u {\n url ws://h/;\n rest_cache soon;\n}\n",
        "t.conf:3:");
    conf_refused("upstream u {\n url ws://h/;\n rest_cache 2d;\n}\n",
        "t.conf:3:");
    conf_refused("upstream u {\n url ws://h/;\n}\n"
        "listen 127.0.0.1:8701 http upstream=u;\n",
        "t.conf:4: listener 127.0.0.1:8701: http: upstream \"u\" has no "
        "\"rest_url\"");
    conf_refused("upstream u {\n url ws://h/;\n rest_url http://h;\n}\n"
        "listen 127.0.0.1:8701 http upstream=u path=/x;\n",
        "t.conf:5: \"listen\": \"path=\" is for websocket listeners only");
    conf_refused("upstream u {\n url ws://h/;\n rest_url http://h;\n}\n"
        "listen 127.0.0.1:8701 http upstream=u max_clients=5;\n",
        "t.conf:5: \"listen\": http listeners take only \"upstream=\"");
    conf_refused("upstream u {\n url ws://h/;\n rest_url http://h;\n}\n"
        "listen 127.0.0.1:8701 http upstream=u client_auth=off;\n",
        "t.conf:5: \"listen\": http listeners take only \"upstream=\"");
    conf_refused("upstream u {\n url ws://h/;\n rest_url http://h;\n}\n"
        "listen 10.1.2.3:8701 http upstream=u;\n",
        "t.conf:5: \"listen\": 10.1.2.3 is not a loopback address");
    conf_refused("upstream u {\n url ws://h/;\n}\n"
        "listen 127.0.0.1:8701 https upstream=u;\n",
        "\"listen\": kind must be \"websocket\", \"tcp\" or \"http\"");
}
END_TEST

START_TEST(conf_dump_http)
{
    struct xg_main_conf *mc, *mc2;
    char *errors, *text = NULL, *text2 = NULL;
    size_t n, n2;
    FILE *fp;

    mc = load("upstream u {\n url ws://h/;\n rest_url http://h:8080/p;\n"
        " rest_cache 5s;\n}\nlisten 127.0.0.1:8701 http upstream=u;\n"
        "listen 127.0.0.1:8702 websocket upstream=u client_auth=off;\n",
        &errors);
    ck_assert_msg(mc != NULL, "%s", errors);
    fp = open_memstream(&text, &n);
    ck_assert_int_eq(xg_conf_dump(fp, mc), XG_OK);
    fclose(fp);
    ck_assert_msg(strstr(text, "    rest_url http://h:8080/p;\n") != NULL,
        "%s", text);
    ck_assert_msg(strstr(text, "    rest_cache 5s;\n") != NULL, "%s", text);
    ck_assert_msg(strstr(text, "listen 127.0.0.1:8701 http upstream=u;\n")
        != NULL, "%s", text);
    /* the dump loads to the same dump */
    mc2 = load(text, &errors);
    ck_assert_msg(mc2 != NULL, "%s", errors);
    fp = open_memstream(&text2, &n2);
    xg_conf_dump(fp, mc2);
    fclose(fp);
    ck_assert_str_eq(text, text2);
    free(text);
    free(text2);
    xg_conf_free(mc);
    xg_conf_free(mc2);

    mc = load("upstream u {\n url ws://h/;\n}\n", &errors);
    fp = open_memstream(&text, &n);
    xg_conf_dump(fp, mc);
    fclose(fp);
    ck_assert_msg(strstr(text, "# rest_url: not set") != NULL, "%s", text);
    ck_assert_msg(strstr(text, "rest_cache 60s;") != NULL, "%s", text);
    free(text);
    xg_conf_free(mc);
}
END_TEST

static Suite *
rest_suite(void)
{
    Suite *s = suite_create("xg_rest");
    TCase *tc = tcase_create("client");

    tcase_set_timeout(tc, 30);
    tcase_add_test(tc, get_ok_and_keep_alive);
    tcase_add_test(tc, status_passed_and_close_not_reused);
    tcase_add_test(tc, backoff_429);
    tcase_add_test(tc, backoff_418);
    tcase_add_test(tc, body_bounded);
    tcase_add_test(tc, timeout_refused_bad_path);
    tcase_add_test(tc, cancel_and_free_in_flight);
    tcase_add_test(tc, many_at_once);
    tcase_add_test(tc, front_local_and_proxied);
    tcase_add_test(tc, tls_verified);
    tcase_add_test(tc, tls_keep_alive);
    suite_add_tcase(s, tc);
    tc = tcase_create("conf");
    tcase_add_test(tc, conf_rest_url);
    tcase_add_test(tc, conf_refusals);
    tcase_add_test(tc, conf_dump_http);
    suite_add_tcase(s, tc);
    return s;
}

int
main(void)
{
    SRunner *sr = srunner_create(rest_suite());
    int failed;

    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? 0 : 1;
}
