/*
 * check_xg_upstream.c: the upstream state machine end to end on loopback:
 * the real WebSocket transport on both sides (a server made with
 * xg_ws_accept in this process), and a small protocol module of the
 * test's own, run through xg_upstream_create_proto(), to drive the
 * restoring state, xg_upstream_fail(), on_stop and status().
 */
#include "xg_core.h"
#include "xg_admin.h"
#include "xg_conf.h"
#include "xg_log.h"
#include "xg_venue.h"
#include "xg_upstream.h"
#include "xg_ws.h"

#include <check.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/http.h>
#include <event2/listener.h>

/* ---- the server side ---------------------------------------------------- */

#define MAX_CONNS 64

struct sconn {
    struct xg_ws *ws;
    int           open;
    int           close_code;       /* the client's close code */
    char          reason[160];
    char          msgs[8][64];      /* the first messages received */
    int           nmsgs;
    char          path[64];         /* of the upgrade request */
};

static struct {
    struct evconnlistener *lst;
    uint16_t               port;
    struct sconn           conns[MAX_CONNS];
    int                    nconns;
    int                    live;       /* accepted and not yet down */
    int                    max_live;
    const char            *greeting;   /* sent on every new connection */
    int                    refuse;     /* HTTP status for the upgrade */
    int                    silent;     /* accept TCP, never answer */
    evutil_socket_t        silent_fds[MAX_CONNS];
    int                    nsilent;
} srv;

static struct event_base *base;
static struct event *tick;
static struct xg_ws_opts srv_opts;

static void
srv_on_open(struct xg_ws *ws, void *arg)
{
    struct sconn *c = arg;

    c->open = 1;
    if (srv.greeting != NULL) {
        xg_ws_send_text(ws, srv.greeting, strlen(srv.greeting));
    }
}

static void
srv_on_message(struct xg_ws *ws, int binary, const unsigned char *data,
    size_t len, void *arg)
{
    struct sconn *c = arg;

    if (c->nmsgs < 8) {
        snprintf(c->msgs[c->nmsgs++], sizeof(c->msgs[0]), "%.*s", (int) len,
            (const char *) data);
    }
    /* Echo: the test module's "auth" gets its answer this way. */
    xg_ws_send_text(ws, data, len);
}

static void
srv_on_down(struct xg_ws *ws, const struct xg_ws_down *why, void *arg)
{
    struct sconn *c = arg;

    c->close_code = why->close_code;
    snprintf(c->reason, sizeof(c->reason), "%s", why->reason);
    c->ws = NULL;
    srv.live--;
    xg_ws_free(ws);
}

static const struct xg_ws_cbs srv_cbs = {
    NULL, srv_on_open, srv_on_message, srv_on_down, NULL
};

static int
srv_check(struct xg_ws *ws, const char *path, void *arg)
{
    struct sconn *c = arg;

    snprintf(c->path, sizeof(c->path), "%s", path);
    return srv.refuse;
}

static void
srv_accept(struct evconnlistener *l, evutil_socket_t fd, struct sockaddr *sa,
    int slen, void *arg)
{
    struct sconn *c;

    if (srv.silent) {
        if (srv.nsilent < MAX_CONNS) {
            srv.silent_fds[srv.nsilent++] = fd;
        } else {
            close(fd);
        }
        return;
    }
    ck_assert_int_lt(srv.nconns, MAX_CONNS);
    c = &srv.conns[srv.nconns++];
    srv.live++;
    if (srv.live > srv.max_live) {
        srv.max_live = srv.live;
    }
    c->ws = xg_ws_accept(base, fd, NULL, &srv_opts, srv_check, &srv_cbs, c);
}

/* ---- the test protocol module ------------------------------------------ */

enum tp_mode {
    TP_RESTORE_ON_REPLY = 0,   /* sends "auth", ready when it comes back */
    TP_NEVER_RESTORE,          /* restore_timeout must fire */
    TP_FAIL_ON_BAD             /* "bad" from the server -> xg_upstream_fail */
};

/*
 * A rotating connection restores the same way ("auth" echoed back on it);
 * then with tp_auto_promote the module promotes it and retires the old
 * primary at once, else the test does.
 */
struct tp {
    struct xg_upstream *up;
    int                 opens, downs, stops, msgs;
    char                last_down[160];
    struct xg_conn     *primary;        /* as the module knows them */
    struct xg_conn     *rot;
    int                 rot_restored;
    const struct xg_upstream_conf *conf;   /* the last create or reconf */
    char                events[4096];   /* "open#1:primary;down#1:..." */
};

static enum tp_mode tp_mode;
static const char *tp_fail_reason;
static struct tp *tp_last;
static int tp_auto_promote;

static void
tp_event(struct tp *t, const char *fmt, ...)
{
    size_t n = strlen(t->events);
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(t->events + n, sizeof(t->events) - n, fmt, ap);
    va_end(ap);
    n = strlen(t->events);
    snprintf(t->events + n, sizeof(t->events) - n, ";");
}

static void *
tp_create(struct xg_upstream *up, const struct xg_upstream_conf *conf)
{
    struct tp *t = xg_calloc(1, sizeof(*t));

    t->up = up;
    t->conf = conf;
    tp_last = t;
    return t;
}

static void
tp_reconf(void *p, const struct xg_upstream_conf *conf)
{
    struct tp *t = p;

    t->conf = conf;
    tp_event(t, "reconf");
}

static void
tp_destroy(void *p)
{
    if (tp_last == p) {
        tp_last = NULL;
    }
    free(p);
}

static void
tp_on_open(void *p, struct xg_conn *c)
{
    struct tp *t = p;

    t->opens++;
    ck_assert_ptr_eq(xg_conn_upstream(c), t->up);
    tp_event(t, "open#%u:%s", xg_conn_id(c), xg_conn_role_name(
        xg_conn_role(c)));
    if (xg_conn_role(c) == XG_CONN_ROTATING) {
        t->rot = c;
        t->rot_restored = 0;
        ck_assert_int_eq(xg_upstream_send_on(c, "auth", 4), XG_OK);
        return;
    }
    ck_assert_int_eq(xg_conn_role(c), XG_CONN_PRIMARY);
    ck_assert_uint_eq(xg_conn_id(c), xg_upstream_conn_id(t->up));
    t->primary = c;
    ck_assert_int_eq(xg_upstream_is_ready(t->up), 0);
    if (tp_mode == TP_RESTORE_ON_REPLY) {
        ck_assert_int_eq(xg_upstream_send(t->up, "auth", 4), XG_OK);
    }
}

static void
tp_on_message(void *p, struct xg_conn *c, const unsigned char *data,
    size_t len)
{
    struct tp *t = p;
    struct xg_conn *old;

    t->msgs++;
    tp_event(t, "msg#%u:%.*s", xg_conn_id(c), (int) len, (const char *) data);
    if (c == t->rot && len == 4 && memcmp(data, "auth", 4) == 0) {
        t->rot_restored = 1;
        if (tp_auto_promote) {
            old = t->primary;
            xg_upstream_promote(t->up, c);
            t->primary = c;
            t->rot = NULL;
            if (old != NULL) {
                xg_upstream_retire(t->up, old, "rotated");
            }
        }
    } else if (tp_mode == TP_RESTORE_ON_REPLY && len == 4
        && memcmp(data, "auth", 4) == 0)
    {
        xg_upstream_restored(t->up);
    } else if (tp_mode == TP_FAIL_ON_BAD && len == 3
        && memcmp(data, "bad", 3) == 0)
    {
        xg_upstream_fail(t->up, tp_fail_reason);
    }
}

static void
tp_on_down(void *p, struct xg_conn *c, const char *reason)
{
    struct tp *t = p;

    t->downs++;
    snprintf(t->last_down, sizeof(t->last_down), "%s", reason);
    tp_event(t, "down#%u:%s:%s", xg_conn_id(c), xg_conn_role_name(
        xg_conn_role(c)), reason);
    if (c == t->rot) {
        t->rot = NULL;
        t->rot_restored = 0;
    }
    if (c == t->primary) {
        t->primary = NULL;
    }
}

static void
tp_on_stop(void *p)
{
    struct tp *t = p;

    t->stops++;
    xg_upstream_send(t->up, "logout", 6);
}

static void
tp_status(void *p, json_t *o)
{
    struct tp *t = p;

    json_object_set_new(o, "tp_opens", json_integer(t->opens));
}

static const struct xg_venue tp_module = {
    .name = "test",
    .create = tp_create,
    .destroy = tp_destroy,
    .on_open = tp_on_open,
    .on_message = tp_on_message,
    .on_down = tp_on_down,
    .on_stop = tp_on_stop,
    .status = tp_status,
    .rotates = 1,
    .reconf = tp_reconf
};

/* The same module, but one that cannot rotate (the default). */
static const struct xg_venue tp_module_norot = {
    .name = "test-norot",
    .create = tp_create,
    .destroy = tp_destroy,
    .on_open = tp_on_open,
    .on_message = tp_on_message,
    .on_down = tp_on_down,
    .on_stop = tp_on_stop,
    .status = tp_status,
    .reconf = tp_reconf
};

/* ---- fixtures and helpers ----------------------------------------------- */

static struct xg_main_conf *mc;
static struct xg_upstream *up;
static void log_release(void);
static struct xg_upstream_set *up_set; /* up is in it */
static int stopped_calls;

static void
loop_wake(evutil_socket_t fd, short what, void *arg)
{
}

static void
setup(void)
{
    struct sockaddr_in sin;
    socklen_t sl = sizeof(sin);
    struct timeval tv = { 0, 2000 };

    xg_log_level = XG_LOG_ERROR;
    memset(&srv, 0, sizeof(srv));
    base = event_base_new();
    memset(&sin, 0, sizeof(sin));
    sin.sin_family = AF_INET;
    sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    srv.lst = evconnlistener_new_bind(base, srv_accept, NULL,
        LEV_OPT_CLOSE_ON_FREE | LEV_OPT_REUSEABLE, 16,
        (struct sockaddr *) &sin, sizeof(sin));
    ck_assert_ptr_nonnull(srv.lst);
    getsockname(evconnlistener_get_fd(srv.lst), (struct sockaddr *) &sin, &sl);
    srv.port = ntohs(sin.sin_port);
    memset(&srv_opts, 0, sizeof(srv_opts));
    srv_opts.max_message = 1 << 20;
    srv_opts.handshake_timeout_ms = 2000;
    srv_opts.close_timeout_ms = 500;
    tick = event_new(base, -1, EV_PERSIST, loop_wake, NULL);
    event_add(tick, &tv);
    tp_mode = TP_RESTORE_ON_REPLY;
    tp_fail_reason = "heartbeat missed";
    tp_auto_promote = 0;
    stopped_calls = 0;
    mc = NULL;
    up = NULL;
    up_set = xg_upstream_set_new();
}

static void
teardown(void)
{
    int i;

    xg_upstream_free_all(up_set);
    up_set = NULL;
    up = NULL;
    for (i = 0; i < srv.nconns; i++) {
        xg_ws_free(srv.conns[i].ws);
    }
    for (i = 0; i < srv.nsilent; i++) {
        close(srv.silent_fds[i]);
    }
    evconnlistener_free(srv.lst);
    event_free(tick);
    event_base_loop(base, EVLOOP_NONBLOCK);
    event_base_free(base);
    xg_conf_free(mc);
    log_release();
}

/* Builds upstream "u" at PORT with BODY and protocol module PROTO. */
static void
make_up_proto(uint16_t port, const char *body,
    const struct xg_venue *proto)
{
    char text[2048], *errors = NULL;

    snprintf(text, sizeof(text), "upstream u {\n url ws://127.0.0.1:%u/ws;\n"
        " ping 0ms;\n %s\n}\n", port, body);
    mc = xg_conf_load_string("t.conf", text, &errors);
    ck_assert_msg(mc != NULL, "conf: %s", errors ? errors : "");
    free(errors);
    up = xg_upstream_create_proto(base, NULL, mc->upstreams, proto);
    ck_assert_ptr_nonnull(up);
    xg_upstream_set_add(up_set, up);
}

/* Builds upstream "u" at PORT with BODY and the test module (or raw). */
static void
make_up(uint16_t port, const char *body, int raw)
{
    make_up_proto(port, body, raw ? NULL : &tp_module);
}

/* The log goes to a file from now on (at info), read by log_text(). */
static char log_path[64];

static void
log_capture(void)
{
    int fd;

    snprintf(log_path, sizeof(log_path), "/tmp/check_xg_upstream.XXXXXX");
    fd = mkstemp(log_path);
    ck_assert_int_ge(fd, 0);
    close(fd);
    ck_assert_int_eq(xg_log_open(log_path, XG_LOG_INFO), XG_OK);
}

/* What the log file holds so far (static buffer). */
static const char *
log_text(void)
{
    static char buf[1 << 16];
    FILE *f = fopen(log_path, "r");
    size_t n;

    ck_assert_ptr_nonnull(f);
    n = fread(buf, 1, sizeof(buf) - 1, f);
    buf[n] = '\0';
    fclose(f);
    return buf;
}

static void
log_release(void)
{
    if (log_path[0] != '\0') {
        xg_log_open("stderr", XG_LOG_ERROR);
        unlink(log_path);
        log_path[0] = '\0';
    }
}

typedef int (*pred_fn)(void);

/* Runs the loop until PRED holds or MS pass; returns PRED's last value. */
static int
run_until(pred_fn pred, unsigned ms)
{
    uint64_t end = xg_now_ms() + ms;

    while (!pred() && xg_now_ms() < end) {
        event_base_loop(base, EVLOOP_ONCE);
    }
    return pred();
}

static void
run_for(unsigned ms)
{
    uint64_t end = xg_now_ms() + ms;

    while (xg_now_ms() < end) {
        event_base_loop(base, EVLOOP_ONCE);
    }
}

static int is_ready(void) { return xg_upstream_state(up) == XG_UP_READY; }
static int is_idle(void) { return xg_upstream_state(up) == XG_UP_IDLE; }
static int second_ready(void)
{
    return xg_upstream_conn_id(up) >= 2 && is_ready();
}
static int second_conn(void) { return xg_upstream_conn_id(up) >= 2; }
static int is_down(void) { return xg_upstream_state(up) == XG_UP_DOWN; }
static int is_open(void) { return xg_upstream_state(up) == XG_UP_OPEN; }
/* The server side of the first connection has gone down. */
static int srv0_down(void) { return srv.nconns > 0 && srv.conns[0].ws == NULL; }

static json_t *
status_field(const char *name)
{
    static json_t *last;

    json_decref(last);
    last = xg_upstream_status(up);
    return json_object_get(last, name);
}

/* How many downs of class CLS the status map MAP (disconnect_reasons or
   connect_failure_reasons) counts. */
static json_int_t
why_count(const char *map, const char *cls)
{
    json_t *m = status_field(map);

    ck_assert_msg(json_is_integer(json_object_get(m, cls)), "%s.%s", map, cls);
    return json_integer_value(json_object_get(m, cls));
}

/* The sum of every class of MAP. */
static json_int_t
why_total(const char *map)
{
    json_t *m = status_field(map), *v;
    const char *k;
    json_int_t n = 0;

    json_object_foreach(m, k, v) {
        n += json_integer_value(v);
    }
    return n;
}

static void
on_stopped(void *arg)
{
    stopped_calls++;
}

/* ---- tests -------------------------------------------------------------- */

START_TEST(restoring_then_ready)
{
    make_up(srv.port, "", 0);
    ck_assert_ptr_eq(xg_upstream_find(up_set, "u"), up);
    ck_assert_ptr_null(xg_upstream_find(up_set, "v"));
    ck_assert_str_eq(xg_upstream_name(up), "u");
    ck_assert_ptr_eq(xg_upstream_base(up), base);
    ck_assert_ptr_eq(xg_upstream_proto(up), tp_last);
    /* Nothing open yet: sending fails, restored is ignored. */
    ck_assert_int_eq(xg_upstream_send(up, "x", 1), XG_ERROR);
    xg_upstream_restored(up);
    ck_assert_int_eq(xg_upstream_state(up), XG_UP_IDLE);

    xg_upstream_start(up);
    ck_assert(run_until(is_ready, 3000));
    ck_assert_uint_eq(xg_upstream_conn_id(up), 1);
    ck_assert_int_eq(tp_last->opens, 1);
    ck_assert_int_ge(tp_last->msgs, 1);
    ck_assert_str_eq(srv.conns[0].msgs[0], "auth");
    ck_assert_str_eq(json_string_value(status_field("state")), "ready");
    ck_assert_str_eq(json_string_value(status_field("protocol")), "test");
    ck_assert_int_eq(json_integer_value(status_field("tp_opens")), 1);
    ck_assert_int_eq(json_integer_value(status_field("connects")), 1);
    ck_assert(json_is_null(status_field("last_error")));
    /* One restore, in the histogram: every bucket up from its own. */
    {
        json_t *h = status_field("restore_seconds");
        json_t *le = json_object_get(h, "le");
        json_t *counts = json_object_get(h, "counts");

        ck_assert_int_eq(json_integer_value(json_object_get(h, "count")), 1);
        ck_assert_uint_eq(json_array_size(counts), json_array_size(le) + 1);
        ck_assert_int_eq(json_integer_value(json_array_get(counts,
            json_array_size(le))), 1);
        ck_assert(json_real_value(json_object_get(h, "sum")) < 3.0);
    }
    ck_assert_int_eq(why_total("disconnect_reasons"), 0);
    ck_assert_int_eq(why_total("connect_failure_reasons"), 0);
    {
        char want[64];

        snprintf(want, sizeof(want), "ws://127.0.0.1:%u/ws", srv.port);
        ck_assert_str_eq(json_string_value(status_field("url")), want);
    }
}
END_TEST

START_TEST(restore_timeout_reconnects)
{
    tp_mode = TP_NEVER_RESTORE;
    make_up(srv.port, "restore_timeout 200ms; reconnect fixed { delay 50ms; }",
        0);
    xg_upstream_start(up);
    ck_assert(run_until(second_conn, 3000));
    ck_assert_int_eq(tp_last->downs, 1);
    ck_assert_str_eq(tp_last->last_down, "restore timeout (200ms)");
    ck_assert_str_eq(json_string_value(status_field("last_error")),
        "restore timeout (200ms)");
    ck_assert_int_eq(why_count("disconnect_reasons", "timeout"), 1);
    ck_assert_int_eq(json_integer_value(json_object_get(
        status_field("restore_seconds"), "count")), 0);
    /* Closed politely, with the reason, before the next attempt. */
    ck_assert(run_until(srv0_down, 3000));
    ck_assert_int_eq(srv.conns[0].close_code, 1001);
    ck_assert_int_eq(srv.max_live, 1);
}
END_TEST

START_TEST(fail_from_module)
{
    tp_mode = TP_FAIL_ON_BAD;
    srv.greeting = "bad";
    make_up(srv.port, "reconnect fixed { delay 30ms; } restore_timeout 5s;", 0);
    xg_upstream_start(up);
    ck_assert(run_until(second_conn, 3000));
    ck_assert_int_ge(tp_last->downs, 1);
    ck_assert_str_eq(tp_last->last_down, "heartbeat missed");
    ck_assert_int_ge(why_count("disconnect_reasons", "protocol"), 1);
    ck_assert_int_eq(why_count("disconnect_reasons", "protocol"),
        why_total("disconnect_reasons"));
    ck_assert(run_until(srv0_down, 3000));
    ck_assert_int_eq(srv.conns[0].close_code, 1001);
    ck_assert_ptr_nonnull(strstr(srv.conns[0].reason, "heartbeat missed"));
    ck_assert_int_eq(srv.max_live, 1);
}
END_TEST

START_TEST(long_utf8_reason_stays_json)
{
    static char reason[600];
    const char *le;
    int i;

    /* 300 two-byte characters: cut at 255 bytes, mid-character. */
    for (i = 0; i < 300; i++) {
        memcpy(reason + 2 * i, "\xc3\xa9", 2);
    }
    reason[600 - 1] = '\0';
    tp_fail_reason = reason;
    tp_mode = TP_FAIL_ON_BAD;
    srv.greeting = "bad";
    make_up(srv.port, "reconnect fixed { delay 10s; }", 0);
    xg_upstream_start(up);
    ck_assert(run_until(is_down, 3000));
    ck_assert_uint_eq(xg_upstream_conn_id(up), 1);
    le = json_string_value(status_field("last_error"));
    ck_assert_ptr_nonnull(le);
    ck_assert_uint_gt(strlen(le), 100);
    /* Cut between characters, not replaced: still the original text. */
    ck_assert_int_eq(strncmp(le, "\xc3\xa9\xc3\xa9", 4), 0);
    ck_assert_ptr_null(strchr(le, '?'));
    /* The close reason (<= 123 bytes) was valid UTF-8 for the peer too. */
    ck_assert(run_until(srv0_down, 3000));
    ck_assert_int_eq(srv.conns[0].close_code, 1001);
}
END_TEST

START_TEST(server_close_reconnects)
{
    make_up(srv.port, "reconnect fixed { delay 30ms; }", 0);
    xg_upstream_start(up);
    ck_assert(run_until(is_ready, 3000));
    xg_ws_close(srv.conns[0].ws, 1011, "restart");
    ck_assert(run_until(second_ready, 3000));
    ck_assert_int_eq(tp_last->downs, 1);
    ck_assert_ptr_nonnull(strstr(tp_last->last_down, "1011"));
    ck_assert_int_eq(tp_last->opens, 2);
    ck_assert_int_eq(json_integer_value(status_field("disconnects")), 1);
    ck_assert_int_eq(why_count("disconnect_reasons", "closed"), 1);
    ck_assert_int_eq(why_total("disconnect_reasons"), 1);
    ck_assert_int_eq(json_integer_value(status_field("reconnect_attempts")),
        1);
    ck_assert_int_eq(srv.max_live, 1);
}
END_TEST

static int gave_up(void)
{
    return json_is_true(status_field("gave_up"));
}

static int failures_reset(void)
{
    return json_integer_value(status_field("failures_in_row")) == 0;
}

START_TEST(stable_timer_resets_backoff)
{
    make_up(srv.port, "reconnect fixed { delay 20ms; } stable 1s; "
        "breaker { failures 1; window 10s; open 50ms; }", 0);
    xg_upstream_start(up);
    ck_assert(run_until(is_ready, 3000));
    xg_ws_close(srv.conns[0].ws, 1011, "restart");
    /* One failure opens this breaker; the trial gets ready (half-open). */
    ck_assert(run_until(second_ready, 3000));
    ck_assert_str_eq(json_string_value(status_field("breaker")), "half-open");
    ck_assert_int_eq(json_integer_value(status_field("failures_in_row")), 1);
    /* Not yet stable after 200 ms (of 1 s: room for a slow machine)... */
    run_for(200);
    ck_assert_int_eq(json_integer_value(status_field("failures_in_row")), 1);
    /* ...stable after 1 s: reset from the timer, breaker closed. */
    ck_assert(run_until(failures_reset, 5000));
    ck_assert_str_eq(json_string_value(status_field("breaker")), "closed");
}
END_TEST

START_TEST(stop_sends_logout_then_1000)
{
    make_up(srv.port, "", 0);
    xg_upstream_start(up);
    ck_assert(run_until(is_ready, 3000));
    xg_upstream_stop(up, on_stopped, NULL);
    ck_assert_int_eq(tp_last->stops, 1);
    ck_assert(run_until(is_idle, 3000));
    ck_assert_int_eq(stopped_calls, 1);
    ck_assert_int_eq(tp_last->downs, 1);
    ck_assert(run_until(srv0_down, 3000));
    ck_assert_int_eq(srv.conns[0].nmsgs, 2);
    ck_assert_str_eq(srv.conns[0].msgs[1], "logout");
    ck_assert_int_eq(srv.conns[0].close_code, 1000);
    ck_assert_int_eq(why_count("disconnect_reasons", "stop"), 1);
    ck_assert_int_eq(why_total("disconnect_reasons"), 1);
    /* No reconnect after a stop, and a second stop is harmless. */
    run_for(200);
    ck_assert_int_eq(srv.nconns, 1);
    xg_upstream_stop(up, on_stopped, NULL);
    ck_assert_int_eq(stopped_calls, 1);
}
END_TEST

START_TEST(stop_all_while_down)
{
    make_up(1, "reconnect fixed { delay 10s; }", 1);
    xg_upstream_start(up);
    /* port 1 refuses: down, 10 s wait */
    ck_assert(run_until(is_down, 3000));
    ck_assert_uint_eq(xg_upstream_conn_id(up), 1);
    xg_upstream_stop_all(up_set, on_stopped, NULL);
    ck_assert_int_eq(stopped_calls, 1);
    ck_assert_int_eq(xg_upstream_state(up), XG_UP_IDLE);
}
END_TEST

START_TEST(max_attempts_gives_up)
{
    make_up(1, "reconnect fixed { delay 20ms; } max_attempts 3;", 1);
    xg_upstream_start(up);
    ck_assert(run_until(gave_up, 3000));
    run_for(100);       /* and no attempt after giving up */
    ck_assert_uint_eq(xg_upstream_conn_id(up), 3);
    ck_assert_int_eq(xg_upstream_state(up), XG_UP_DOWN);
    ck_assert_int_eq(why_count("connect_failure_reasons", "connect"), 3);
    ck_assert_int_eq(why_total("connect_failure_reasons"), 3);
    ck_assert_int_eq(why_total("disconnect_reasons"), 0);
    ck_assert(json_is_true(status_field("gave_up")));
    ck_assert_ptr_nonnull(strstr(json_string_value(status_field("last_error")),
        "refused"));
}
END_TEST

START_TEST(handshake_deadline)
{
    srv.silent = 1;
    make_up(srv.port, "handshake_timeout 200ms; reconnect fixed "
        "{ delay 20ms; }", 1);
    xg_upstream_start(up);
    ck_assert(run_until(second_conn, 2000));
    ck_assert_ptr_nonnull(strstr(json_string_value(status_field("last_error")),
        "timeout"));
    ck_assert_int_ge(why_count("connect_failure_reasons", "timeout"), 1);
    ck_assert_int_eq(why_count("connect_failure_reasons", "timeout"),
        why_total("connect_failure_reasons"));
    ck_assert_int_eq(json_integer_value(status_field("connects")), 0);
}
END_TEST

START_TEST(refused_upgrade_503)
{
    srv.refuse = 503;
    make_up(srv.port, "reconnect fixed { delay 20ms; } "
        "breaker { failures 2; window 10s; open 10s; }", 1);
    xg_upstream_start(up);
    ck_assert(run_until(is_open, 3000));
    ck_assert_int_eq(xg_upstream_state(up), XG_UP_OPEN);
    ck_assert_uint_eq(xg_upstream_conn_id(up), 2);
    ck_assert_str_eq(json_string_value(status_field("breaker")), "open");
    ck_assert_ptr_nonnull(strstr(json_string_value(status_field("last_error")),
        "503"));
    ck_assert_int_eq(why_count("connect_failure_reasons", "http"), 2);
    ck_assert_int_eq(json_integer_value(status_field("breaker_trips")), 1);
    ck_assert_int_eq(why_total("connect_failure_reasons"), 2);
}
END_TEST

static int got_message(void)
{
    return json_integer_value(status_field("messages_in")) >= 1;
}

START_TEST(raw_ready_on_open)
{
    srv.greeting = "hello";
    make_up(srv.port, "", 1);
    xg_upstream_start(up);
    ck_assert(run_until(is_ready, 3000));
    ck_assert(run_until(got_message, 3000));
    ck_assert_str_eq(json_string_value(status_field("protocol")), "raw");
    ck_assert_int_eq(json_integer_value(status_field("messages_in")), 1);
    ck_assert_int_eq(json_integer_value(status_field("bytes_in")), 5);
    ck_assert_int_eq(xg_upstream_send(up, "ping", 4), XG_OK);
}
END_TEST

/* ---- rotation: several connections ------------------------------------- */

static json_int_t
status_int(const char *name)
{
    json_t *v = status_field(name);

    ck_assert_msg(json_is_integer(v), "%s is not an integer", name);
    return json_integer_value(v);
}

/* Entry I of /status "connections" is {ID, ROLE, STATE, age_s >= 0}. */
static void
assert_conn(size_t i, unsigned id, const char *role, const char *state)
{
    json_t *l = status_field("connections"), *c = json_array_get(l, i);

    ck_assert_msg(c != NULL, "no connection %zu", i);
    ck_assert_int_eq(json_integer_value(json_object_get(c, "id")), id);
    ck_assert_str_eq(json_string_value(json_object_get(c, "role")), role);
    ck_assert_str_eq(json_string_value(json_object_get(c, "state")), state);
    ck_assert(json_is_real(json_object_get(c, "age_s")));
    ck_assert(json_real_value(json_object_get(c, "age_s")) >= 0.0);
}

static size_t
nconns_status(void)
{
    return json_array_size(status_field("connections"));
}

static int rot_restored(void) { return tp_last->rot_restored; }
static int srv1_down(void) { return srv.nconns > 1 && srv.conns[1].ws == NULL; }
static int one_down(void) { return tp_last->downs >= 1; }
static int two_down(void) { return tp_last->downs >= 2; }
static int rotated_once(void)
{
    return json_integer_value(status_field("rotations")) >= 1;
}
static int rotated_twice(void)
{
    return json_integer_value(status_field("rotations")) >= 2;
}
static int rot_failed_once(void)
{
    return json_integer_value(status_field("rotations_failed")) >= 1;
}
static int rot_failed_twice(void)
{
    return json_integer_value(status_field("rotations_failed")) >= 2;
}
static int alone(void) { return nconns_status() == 1; }
static int three_conns(void) { return srv.nconns >= 3; }
/* Server connection I has received at least N messages. */
static int srv_got(int i, int n) { return srv.nconns > i && srv.conns[i].nmsgs >= n; }
static int srv0_got2(void) { return srv_got(0, 2); }
static int srv1_got2(void) { return srv_got(1, 2); }
static int srv1_got3(void) { return srv_got(1, 3); }

START_TEST(rotate_make_before_break)
{
    struct xg_conn *old, *c2;
    char err[200];
    struct xg_rotation r;

    make_up(srv.port, "", 0);
    xg_upstream_start(up);
    ck_assert(run_until(is_ready, 3000));
    log_capture();
    ck_assert_int_eq(xg_upstream_rotate_start(up, "test", &r, err,
        sizeof(err)), XG_OK);
    ck_assert_uint_eq(r.n, 1);
    ck_assert_uint_eq(r.from, 1);
    ck_assert_uint_eq(r.to, 2);
    /* One rotation at a time, even while the new one still connects. */
    ck_assert_int_eq(xg_upstream_rotate_start(up, "again", NULL, err,
        sizeof(err)), XG_ERROR);
    ck_assert_str_eq(err, "rotation #1 in progress (#1 -> #2)");
    ck_assert(run_until(rot_restored, 3000));

    /* Two server connections at once; the first one still serving. */
    ck_assert_int_eq(srv.live, 2);
    ck_assert_ptr_nonnull(srv.conns[0].ws);
    ck_assert_str_eq(srv.conns[1].msgs[0], "auth");
    ck_assert_int_eq(xg_upstream_state(up), XG_UP_READY);
    ck_assert_uint_eq(xg_upstream_conn_id(up), 1);
    ck_assert_ptr_nonnull(strstr(tp_last->events,
        "open#1:primary;msg#1:auth;open#2:rotating;msg#2:auth;"));
    c2 = tp_last->rot;
    old = tp_last->primary;
    ck_assert_uint_eq(xg_conn_id(c2), 2);
    ck_assert_int_eq(xg_conn_role(c2), XG_CONN_ROTATING);
    ck_assert_int_eq(nconns_status(), 2);
    assert_conn(0, 1, "primary", "ready");
    assert_conn(1, 2, "rotating", "restoring");

    /* Sends go where they are sent: the primary, or the one named. */
    ck_assert_int_eq(xg_upstream_send(up, "p1", 2), XG_OK);
    ck_assert_int_eq(xg_upstream_send_on(c2, "r1", 2), XG_OK);
    ck_assert(run_until(srv0_got2, 3000));
    ck_assert(run_until(srv1_got2, 3000));
    ck_assert_str_eq(srv.conns[0].msgs[1], "p1");
    ck_assert_str_eq(srv.conns[1].msgs[1], "r1");

    /* Promote: #2 primary, #1 retiring and still open; still READY. */
    xg_upstream_promote(up, c2);
    ck_assert_int_eq(xg_upstream_state(up), XG_UP_READY);
    ck_assert_uint_eq(xg_upstream_conn_id(up), 2);
    ck_assert_int_eq(xg_conn_role(c2), XG_CONN_PRIMARY);
    ck_assert_int_eq(xg_conn_role(old), XG_CONN_RETIRING);
    assert_conn(0, 2, "primary", "ready");
    assert_conn(1, 1, "retiring", "ready");
    ck_assert_int_eq(status_int("rotations"), 1);
    ck_assert_int_eq(xg_upstream_send(up, "p2", 2), XG_OK);
    ck_assert(run_until(srv1_got3, 3000));
    ck_assert_str_eq(srv.conns[1].msgs[2], "p2");
    ck_assert_int_eq(srv.conns[0].nmsgs, 2);
    ck_assert_int_eq(xg_upstream_rotate_start(up, "again", NULL, err,
        sizeof(err)), XG_ERROR);
    ck_assert_str_eq(err, "rotation #1 is still retiring #1");
    /* What does not apply is ignored: promote a primary, retire one. */
    xg_upstream_promote(up, c2);
    xg_upstream_retire(up, c2, "no");
    ck_assert_int_eq(xg_conn_role(c2), XG_CONN_PRIMARY);

    /* Retire: close 1000 with the reason, then on_down as RETIRING. */
    xg_upstream_retire(up, old, "rotated");
    ck_assert(run_until(srv0_down, 3000));
    ck_assert_int_eq(srv.conns[0].close_code, 1000);
    ck_assert_ptr_nonnull(strstr(srv.conns[0].reason, "rotated"));
    ck_assert(run_until(one_down, 3000));
    ck_assert_int_eq(tp_last->downs, 1);
    ck_assert_ptr_nonnull(strstr(tp_last->events, ";down#1:retiring:"));
    ck_assert_int_eq(nconns_status(), 1);
    assert_conn(0, 2, "primary", "ready");
    ck_assert_int_eq(status_int("rotations"), 1);
    ck_assert_int_eq(status_int("rotations_failed"), 0);
    ck_assert_int_eq(status_int("disconnects"), 0);
    ck_assert_int_eq(status_int("connects"), 2);
    ck_assert_int_eq(xg_upstream_state(up), XG_UP_READY);
    ck_assert_int_eq(srv.max_live, 2);
    ck_assert_ptr_nonnull(strstr(log_text(),
        "upstream u#2: rotation #1 started (test): #1 -> #2\n"));
    ck_assert_ptr_nonnull(strstr(log_text(),
        "ms: #2 primary, #1 retiring\n"));
    ck_assert_ptr_nonnull(strstr(log_text(),
        "upstream u#2: rotation #1 done in "));
    ck_assert_ptr_nonnull(strstr(log_text(), "upstream u#1: rotation #1: #1 "
        "closed ("));
    /* And the next rotation may start. */
    ck_assert_int_eq(xg_upstream_rotate(up, "next"), XG_OK);
    ck_assert_int_eq(nconns_status(), 2);
    assert_conn(1, 3, "rotating", "connecting");
}
END_TEST

START_TEST(rotate_refused_when_not_ready)
{
    char err[200];

    make_up(1, "reconnect fixed { delay 10s; }", 0);
    ck_assert_int_eq(xg_upstream_rotate_start(up, "x", NULL, err,
        sizeof(err)), XG_ERROR);
    ck_assert_str_eq(err, "not ready (state idle)");
    xg_upstream_start(up);
    ck_assert(run_until(is_down, 3000));
    ck_assert_int_eq(xg_upstream_rotate_start(up, "x", NULL, err,
        sizeof(err)), XG_ERROR);
    ck_assert_str_eq(err, "not ready (state down)");
    ck_assert_int_eq(xg_upstream_rotate(up, "x"), XG_ERROR);
    ck_assert_uint_eq(xg_upstream_conn_id(up), 1);
    ck_assert_int_eq(status_int("rotations_failed"), 0);
    ck_assert_int_eq(nconns_status(), 0);
}
END_TEST

/*
 * The new connection is refused (503): the primary serves on, the module
 * never hears of the failed one, and the rotation is tried again after
 * the policy's delay (fixed 300 ms), never at once; once the server
 * accepts again, the retried rotation completes.
 */
START_TEST(rotate_failure_retried_after_delay)
{
    uint64_t t_fail, t_retry;

    tp_auto_promote = 1;
    make_up(srv.port, "reconnect fixed { delay 300ms; }", 0);
    xg_upstream_start(up);
    ck_assert(run_until(is_ready, 3000));
    log_capture();
    srv.refuse = 503;
    ck_assert_int_eq(xg_upstream_rotate(up, "test"), XG_OK);
    ck_assert(run_until(rot_failed_once, 3000));
    t_fail = xg_now_ms();
    ck_assert_int_eq(nconns_status(), 1);
    ck_assert_int_eq(xg_upstream_state(up), XG_UP_READY);
    ck_assert_ptr_nonnull(srv.conns[0].ws);
    ck_assert_int_eq(tp_last->opens, 1);
    ck_assert_int_eq(tp_last->downs, 0);
    ck_assert_int_eq(status_int("disconnects"), 0);
    ck_assert_ptr_nonnull(strstr(log_text(), "upstream u#2: rotation #1 "
        "failed: #2 http 503"));
    ck_assert_ptr_nonnull(strstr(log_text(), "#1 keeps serving, retry in "
        "300ms\n"));
    ck_assert(run_until(three_conns, 3000));
    t_retry = xg_now_ms();
    ck_assert_msg(t_retry - t_fail >= 280, "retried after %llu ms",
        (unsigned long long) (t_retry - t_fail));
    ck_assert(run_until(rot_failed_twice, 3000));
    ck_assert_ptr_nonnull(strstr(log_text(), "upstream u#3: rotation #2 "
        "started (test, retry 1): #1 -> #3\n"));
    ck_assert_int_eq(srv.nconns, 3);
    /* The server accepts again: the next retry takes over. */
    srv.refuse = 0;
    ck_assert(run_until(rotated_once, 3000));
    ck_assert_int_eq(status_int("rotations_failed"), 2);
    ck_assert_uint_eq(xg_upstream_conn_id(up), 4);
    ck_assert(run_until(srv0_down, 3000));
    ck_assert_int_eq(srv.conns[0].close_code, 1000);
    ck_assert(run_until(one_down, 3000));
    ck_assert_ptr_nonnull(strstr(tp_last->events,
        "open#4:rotating;msg#4:auth;down#1:retiring:"));
    ck_assert_int_eq(xg_upstream_state(up), XG_UP_READY);
    ck_assert_int_eq(nconns_status(), 1);
    assert_conn(0, 4, "primary", "ready");
}
END_TEST

/*
 * The rotating connection opens (the module restores on it), then drops:
 * the module gets on_down for it as ROTATING, the primary is untouched,
 * and the rotation is tried again after the delay.
 */
START_TEST(rotate_drop_after_open)
{
    make_up(srv.port, "reconnect fixed { delay 100ms; }", 0);
    xg_upstream_start(up);
    ck_assert(run_until(is_ready, 3000));
    ck_assert_int_eq(xg_upstream_rotate(up, "test"), XG_OK);
    ck_assert(run_until(rot_restored, 3000));
    xg_ws_close(srv.conns[1].ws, 1011, "restart");
    ck_assert(run_until(one_down, 3000));
    ck_assert_ptr_nonnull(strstr(tp_last->events, "down#2:rotating:"));
    ck_assert_int_eq(status_int("rotations_failed"), 1);
    ck_assert_int_eq(xg_upstream_state(up), XG_UP_READY);
    ck_assert_ptr_nonnull(srv.conns[0].ws);
    ck_assert(run_until(three_conns, 3000));
    ck_assert(run_until(rot_restored, 3000));
    ck_assert_ptr_nonnull(strstr(tp_last->events, "open#3:rotating;"));
    ck_assert_int_eq(tp_last->downs, 1);
}
END_TEST

/*
 * The documented behaviour when the primary drops during a rotation: the
 * module is told (on_down for the primary), the upstream is DOWN, and no
 * reconnect starts while the rotating connection lives; promoting it
 * brings the upstream back to READY on it.
 */
START_TEST(primary_drops_then_rotating_takes_over)
{
    make_up(srv.port, "reconnect fixed { delay 30ms; }", 0);
    xg_upstream_start(up);
    ck_assert(run_until(is_ready, 3000));
    log_capture();
    ck_assert_int_eq(xg_upstream_rotate(up, "test"), XG_OK);
    ck_assert(run_until(rot_restored, 3000));
    xg_ws_close(srv.conns[0].ws, 1011, "restart");
    ck_assert(run_until(one_down, 3000));
    ck_assert_ptr_nonnull(strstr(tp_last->events, "down#1:primary:"));
    ck_assert_int_eq(xg_upstream_state(up), XG_UP_DOWN);
    run_for(300);   /* ten times the reconnect delay */
    ck_assert_int_eq(srv.nconns, 2);
    ck_assert_int_eq(xg_upstream_state(up), XG_UP_DOWN);
    ck_assert_int_eq(nconns_status(), 1);
    assert_conn(0, 2, "rotating", "restoring");
    ck_assert_int_eq(xg_upstream_send(up, "x", 1), XG_ERROR);

    xg_upstream_promote(up, tp_last->rot);
    ck_assert_int_eq(xg_upstream_state(up), XG_UP_READY);
    ck_assert_uint_eq(xg_upstream_conn_id(up), 2);
    assert_conn(0, 2, "primary", "ready");
    ck_assert_int_eq(status_int("rotations"), 1);
    ck_assert_int_eq(status_int("disconnects"), 1);
    ck_assert_ptr_nonnull(strstr(log_text(),
        "upstream u#2: down -> ready (rotation #1 took over)\n"));
    run_for(100);
    ck_assert_int_eq(srv.nconns, 2);
    ck_assert_int_eq(xg_upstream_send(up, "x", 1), XG_OK);
}
END_TEST

/*
 * A retiring connection the module never retires is closed by the
 * upstream after restore_timeout (1000, "retire timeout"), on_down as
 * RETIRING; the new primary is untouched.
 */
START_TEST(retiring_bounded)
{
    struct xg_conn *old;

    make_up(srv.port, "restore_timeout 300ms;", 0);
    xg_upstream_start(up);
    ck_assert(run_until(is_ready, 3000));
    log_capture();
    ck_assert_int_eq(xg_upstream_rotate(up, "test"), XG_OK);
    ck_assert(run_until(rot_restored, 3000));
    old = tp_last->primary;
    xg_upstream_promote(up, tp_last->rot);
    ck_assert_int_eq(xg_conn_role(old), XG_CONN_RETIRING);
    run_for(150);
    ck_assert_int_eq(nconns_status(), 2);
    assert_conn(1, 1, "retiring", "ready");
    ck_assert(run_until(one_down, 3000));
    ck_assert_ptr_nonnull(strstr(tp_last->events, "down#1:retiring:"));
    ck_assert(run_until(srv0_down, 3000));
    ck_assert_int_eq(srv.conns[0].close_code, 1000);
    ck_assert_ptr_nonnull(strstr(srv.conns[0].reason, "retire timeout"));
    ck_assert_ptr_nonnull(strstr(log_text(), "retiring, not retired by the "
        "protocol module within restore_timeout (300ms): closing it\n"));
    ck_assert_int_eq(nconns_status(), 1);
    assert_conn(0, 2, "primary", "ready");
    ck_assert_int_eq(status_int("rotations"), 1);
    ck_assert_int_eq(status_int("rotations_failed"), 0);
    ck_assert_int_eq(xg_upstream_state(up), XG_UP_READY);
}
END_TEST

/* ...and when the rotating one fails too, the reconnect starts then. */
START_TEST(primary_drops_then_rotating_fails)
{
    make_up(srv.port, "reconnect fixed { delay 30ms; }", 0);
    xg_upstream_start(up);
    ck_assert(run_until(is_ready, 3000));
    ck_assert_int_eq(xg_upstream_rotate(up, "test"), XG_OK);
    ck_assert(run_until(rot_restored, 3000));
    xg_ws_close(srv.conns[0].ws, 1011, "restart");
    ck_assert(run_until(one_down, 3000));
    run_for(100);
    ck_assert_int_eq(srv.nconns, 2);
    xg_ws_close(srv.conns[1].ws, 1011, "restart");
    ck_assert(run_until(two_down, 3000));
    ck_assert_ptr_nonnull(strstr(tp_last->events, "down#2:rotating:"));
    ck_assert(run_until(is_ready, 3000));
    ck_assert_uint_eq(xg_upstream_conn_id(up), 3);
    ck_assert_int_eq(srv.nconns, 3);
    ck_assert_int_eq(status_int("rotations_failed"), 1);
    ck_assert_int_eq(nconns_status(), 1);
    assert_conn(0, 3, "primary", "ready");
}
END_TEST

/*
 * max_connection_age: the same timer path at a test-sized age (the conf
 * allows 1m..7d; the test writes the parsed value directly).
 */
START_TEST(max_connection_age_rotates)
{
    uint64_t t0;

    tp_auto_promote = 1;
    make_up(srv.port, "", 0);
    mc->upstreams->max_connection_age_ms = 400;
    log_capture();
    xg_upstream_start(up);
    ck_assert(run_until(is_ready, 3000));
    t0 = xg_now_ms();
    run_for(250);
    ck_assert_int_eq(srv.nconns, 1);
    ck_assert(run_until(rotated_twice, 5000));
    ck_assert_msg(xg_now_ms() - t0 >= 700, "two rotations in %llu ms",
        (unsigned long long) (xg_now_ms() - t0));
    ck_assert_uint_eq(xg_upstream_conn_id(up), 3);
    ck_assert(run_until(two_down, 3000));
    ck_assert_int_eq(srv.conns[0].close_code, 1000);
    ck_assert(run_until(srv1_down, 3000));
    ck_assert_int_eq(srv.conns[1].close_code, 1000);
    ck_assert_ptr_nonnull(strstr(tp_last->events, "down#1:retiring:"));
    ck_assert_ptr_nonnull(strstr(tp_last->events, "down#2:retiring:"));
    ck_assert_ptr_nonnull(strstr(log_text(), "upstream u#2: rotation #1 "
        "started (max_connection_age 400ms): #1 -> #2\n"));
    ck_assert_ptr_nonnull(strstr(log_text(), "upstream u#3: rotation #2 "
        "started (max_connection_age 400ms): #2 -> #3\n"));
    ck_assert_int_eq(status_int("rotations_failed"), 0);
    ck_assert_int_eq(status_int("disconnects"), 0);
}
END_TEST

/*
 * A module that cannot rotate never hears of the new connection: it is
 * closed with 1000 as soon as it opens, counted as failed, not retried.
 */
START_TEST(rotate_not_supported_closes)
{
    make_up_proto(srv.port, "reconnect fixed { delay 30ms; }",
        &tp_module_norot);
    xg_upstream_start(up);
    ck_assert(run_until(is_ready, 3000));
    log_capture();
    ck_assert_int_eq(xg_upstream_rotate(up, "test"), XG_OK);
    ck_assert(run_until(srv1_down, 3000));
    ck_assert_int_eq(srv.conns[1].close_code, 1000);
    ck_assert_ptr_nonnull(strstr(srv.conns[1].reason,
        "rotation not supported"));
    ck_assert(run_until(alone, 3000));
    ck_assert_int_eq(status_int("rotations_failed"), 1);
    ck_assert_int_eq(status_int("rotations"), 0);
    ck_assert_int_eq(tp_last->opens, 1);
    ck_assert_int_eq(tp_last->downs, 0);
    ck_assert_ptr_nonnull(strstr(log_text(), "rotation not supported by this "
        "protocol yet (test-norot)"));
    run_for(200);
    ck_assert_int_eq(srv.nconns, 2);
    ck_assert_ptr_nonnull(srv.conns[0].ws);
    ck_assert_int_eq(xg_upstream_state(up), XG_UP_READY);
    ck_assert_uint_eq(xg_upstream_conn_id(up), 1);
}
END_TEST

/* A stop during a rotation closes both with 1000, the module told. */
START_TEST(stop_during_rotation)
{
    make_up(srv.port, "", 0);
    xg_upstream_start(up);
    ck_assert(run_until(is_ready, 3000));
    ck_assert_int_eq(xg_upstream_rotate(up, "test"), XG_OK);
    ck_assert(run_until(rot_restored, 3000));
    xg_upstream_stop(up, on_stopped, NULL);
    ck_assert(run_until(is_idle, 3000));
    ck_assert_int_eq(stopped_calls, 1);
    ck_assert_int_eq(tp_last->downs, 2);
    ck_assert_ptr_nonnull(strstr(tp_last->events, "down#2:rotating:stop;"));
    ck_assert(run_until(srv0_down, 3000));
    ck_assert(run_until(srv1_down, 3000));
    ck_assert_int_eq(srv.conns[0].close_code, 1000);
    ck_assert_int_eq(srv.conns[1].close_code, 1000);
    ck_assert_int_eq(status_int("rotations_failed"), 0);
    ck_assert_int_eq(nconns_status(), 0);
}
END_TEST

/* ---- the admin listener -------------------------------------------------- */

static struct {
    int   done;
    int   code;
    char  type[128];
    char  allow[64];
    char  body[16384];
} http;

static int http_done(void) { return http.done; }

static void
http_cb(struct evhttp_request *req, void *arg)
{
    struct evbuffer *in;
    size_t n;

    http.done = 1;
    if (req == NULL) {
        return;
    }
    http.code = evhttp_request_get_response_code(req);
    {
        struct evkeyvalq *h = evhttp_request_get_input_headers(req);
        const char *t = evhttp_find_header(h, "Content-Type");
        const char *al = evhttp_find_header(h, "Allow");

        snprintf(http.type, sizeof(http.type), "%s", t ? t : "");
        snprintf(http.allow, sizeof(http.allow), "%s", al ? al : "");
    }
    in = evhttp_request_get_input_buffer(req);
    n = evbuffer_get_length(in);
    n = n < sizeof(http.body) - 1 ? n : sizeof(http.body) - 1;
    evbuffer_remove(in, http.body, n);
    http.body[n] = '\0';
}

/*
 * One request to the admin listener on PORT, with an Origin header for
 * each of ORIGIN1 and ORIGIN2 that is not NULL; fills `http`.
 */
static void
http_req(unsigned port, enum evhttp_cmd_type cmd, const char *path,
    const char *origin1, const char *origin2)
{
    struct evhttp_connection *c;
    struct evhttp_request *req;
    struct evkeyvalq *h;

    memset(&http, 0, sizeof(http));
    c = evhttp_connection_base_new(base, NULL, "127.0.0.1", (uint16_t) port);
    req = evhttp_request_new(http_cb, NULL);
    h = evhttp_request_get_output_headers(req);
    evhttp_add_header(h, "Host", "x");
    if (origin1 != NULL) {
        evhttp_add_header(h, "Origin", origin1);
    }
    if (origin2 != NULL) {
        evhttp_add_header(h, "Origin", origin2);
    }
    evhttp_make_request(c, req, cmd, path);
    ck_assert(run_until(http_done, 3000));
    evhttp_connection_free(c);
}

/* One request to the admin listener on PORT; fills `http`. */
static void
http_get(unsigned port, enum evhttp_cmd_type cmd, const char *path)
{
    http_req(port, cmd, path, NULL, NULL);
}

static void
hook_totals(json_t *root, void *arg)
{
    json_object_set_new(root, "totals", json_integer(*(int *) arg));
}

START_TEST(admin_status_and_hooks)
{
    struct xg_addr addr;
    struct xg_admin *a;
    json_t *doc, *ups;
    json_error_t jerr;
    static int forty_two = 42;

    make_up(srv.port, "", 1);
    memset(&addr, 0, sizeof(addr));
    snprintf(addr.host, sizeof(addr.host), "127.0.0.1");
    addr.port = 0;
    a = xg_admin_start(base, &addr, up_set);
    ck_assert_ptr_nonnull(a);
    ck_assert_uint_gt(xg_admin_port(a), 0);
    ck_assert_int_eq(xg_admin_status_hook(a, hook_totals, &forty_two),
        XG_OK);

    http_get(xg_admin_port(a), EVHTTP_REQ_GET, "/status");
    ck_assert_int_eq(http.code, 200);
    doc = json_loads(http.body, 0, &jerr);
    ck_assert_msg(doc != NULL, "bad json: %s", http.body);
    ck_assert_str_eq(json_string_value(json_object_get(doc, "version")),
        XG_VERSION);
    ck_assert(json_is_number(json_object_get(doc, "uptime_s")));
    ck_assert_int_eq(json_integer_value(json_object_get(doc, "totals")), 42);
    ups = json_object_get(doc, "upstreams");
    ck_assert_int_eq(json_array_size(ups), 1);
    ck_assert_str_eq(json_string_value(json_object_get(
        json_array_get(ups, 0), "name")), "u");
    ck_assert_str_eq(json_string_value(json_object_get(
        json_array_get(ups, 0), "state")), "idle");
    json_decref(doc);

    xg_admin_status_unhook(a, hook_totals, &forty_two);
    http_get(xg_admin_port(a), EVHTTP_REQ_GET, "/status");
    ck_assert_ptr_null(strstr(http.body, "totals"));

    http_get(xg_admin_port(a), EVHTTP_REQ_GET, "/metrics");
    ck_assert_int_eq(http.code, 200);
    ck_assert_str_eq(http.type, "text/plain; version=0.0.4; charset=utf-8");
    ck_assert_ptr_nonnull(strstr(http.body,
        "\nexgate_upstream_state{upstream=\"u\",state=\"idle\"} 1\n"));
    ck_assert_ptr_nonnull(strstr(http.body, "\nprocess_open_fds "));
    http_get(xg_admin_port(a), EVHTTP_REQ_HEAD, "/metrics");
    ck_assert_int_eq(http.code, 200);
    ck_assert_str_eq(http.body, "");

    /* the status page, built in */
    http_get(xg_admin_port(a), EVHTTP_REQ_GET, "/");
    ck_assert_int_eq(http.code, 200);
    ck_assert_str_eq(http.type, "text/html; charset=utf-8");
    ck_assert_int_eq(strncmp(http.body, "<!doctype html>", 15), 0);
    ck_assert_uint_eq(xg_status_html_len, strlen((const char *) xg_status_html));
    http_get(xg_admin_port(a), EVHTTP_REQ_GET, "/?refresh=1");
    ck_assert_int_eq(http.code, 200);

    http_get(xg_admin_port(a), EVHTTP_REQ_GET, "/metricz");
    ck_assert_int_eq(http.code, 404);
    http_get(xg_admin_port(a), EVHTTP_REQ_DELETE, "/status");
    ck_assert_int_eq(http.code, 405);
    xg_admin_free(a);

    /* A port in use is a clean NULL, not a crash. */
    addr.port = srv.port;
    ck_assert_ptr_null(xg_admin_start(base, &addr, up_set));
}
END_TEST

static int admin_alone(void) { return nconns_status() == 1; }

/*
 * POST /upstreams/NAME/rotate: 404 for an unknown name, 405 (Allow:
 * POST) for another method, 202 with the rotation, 409 while one runs,
 * 403 for an Origin not listed (or two of them), 202 for one listed;
 * every POST logged with the peer address.
 */
START_TEST(admin_rotate)
{
    static const struct xg_admin_origin allowed[] = {
        { "http://localhost:3000", "t.conf", 1 }
    };
    struct xg_addr addr;
    struct xg_admin *a;
    unsigned port;

    make_up(srv.port, "", 0);
    memset(&addr, 0, sizeof(addr));
    snprintf(addr.host, sizeof(addr.host), "127.0.0.1");
    a = xg_admin_start(base, &addr, up_set);
    ck_assert_ptr_nonnull(a);
    port = xg_admin_port(a);
    log_capture();

    /* Not ready yet: 409 with the reason. */
    http_req(port, EVHTTP_REQ_POST, "/upstreams/u/rotate", NULL, NULL);
    ck_assert_int_eq(http.code, 409);
    ck_assert_str_eq(http.body,
        "{\"upstream\":\"u\",\"error\":\"not ready (state idle)\"}");

    xg_upstream_start(up);
    ck_assert(run_until(is_ready, 3000));
    http_req(port, EVHTTP_REQ_POST, "/upstreams/nope/rotate", NULL, NULL);
    ck_assert_int_eq(http.code, 404);
    http_req(port, EVHTTP_REQ_POST, "/upstreams/u/rotatex", NULL, NULL);
    ck_assert_int_eq(http.code, 404);
    http_req(port, EVHTTP_REQ_POST, "/upstreams/u", NULL, NULL);
    ck_assert_int_eq(http.code, 404);
    http_req(port, EVHTTP_REQ_GET, "/upstreams/u/rotate", NULL, NULL);
    ck_assert_int_eq(http.code, 405);
    ck_assert_str_eq(http.allow, "POST");
    http_req(port, EVHTTP_REQ_DELETE, "/upstreams/u/rotate", NULL, NULL);
    ck_assert_int_eq(http.code, 405);
    ck_assert_str_eq(http.allow, "POST");

    /* An Origin nobody listed: refused before anything happens. */
    http_req(port, EVHTTP_REQ_POST, "/upstreams/u/rotate",
        "http://evil.example", NULL);
    ck_assert_int_eq(http.code, 403);
    ck_assert_ptr_nonnull(strstr(http.body, "not allowed"));
    ck_assert_int_eq(nconns_status(), 1);
    /* Listed, but with a second Origin header: refused too. */
    xg_admin_allow_origins(a, allowed, 1);
    http_req(port, EVHTTP_REQ_POST, "/upstreams/u/rotate",
        "http://localhost:3000", "http://evil.example");
    ck_assert_int_eq(http.code, 403);
    http_req(port, EVHTTP_REQ_POST, "/upstreams/u/rotate",
        "http://localhost:3000/", NULL);
    ck_assert_int_eq(http.code, 403);
    ck_assert_int_eq(nconns_status(), 1);

    /* No Origin (curl, a script): started. */
    http_req(port, EVHTTP_REQ_POST, "/upstreams/u/rotate", NULL, NULL);
    ck_assert_int_eq(http.code, 202);
    ck_assert_str_eq(http.type, "application/json");
    ck_assert_str_eq(http.body,
        "{\"upstream\":\"u\",\"rotation\":1,\"from\":1,\"to\":2}");
    http_req(port, EVHTTP_REQ_POST, "/upstreams/u/rotate", NULL, NULL);
    ck_assert_int_eq(http.code, 409);
    ck_assert_str_eq(http.body, "{\"upstream\":\"u\",\"error\":"
        "\"rotation #1 in progress (#1 -> #2)\"}");
    ck_assert(run_until(rot_restored, 3000));
    {
        struct xg_conn *old = tp_last->primary;

        xg_upstream_promote(up, tp_last->rot);
        xg_upstream_retire(up, old, "rotated");
    }
    ck_assert(run_until(admin_alone, 3000));

    /* The listed Origin: started. */
    http_req(port, EVHTTP_REQ_POST, "/upstreams/u/rotate",
        "http://localhost:3000", NULL);
    ck_assert_int_eq(http.code, 202);
    ck_assert_str_eq(http.body,
        "{\"upstream\":\"u\",\"rotation\":2,\"from\":2,\"to\":3}");

    /* Every POST in the log with its peer and its answer. */
    ck_assert_ptr_nonnull(strstr(log_text(), "admin: POST "
        "/upstreams/u/rotate from 127.0.0.1:"));
    ck_assert_ptr_nonnull(strstr(log_text(),
        " (origin http://evil.example): 403 {\"error\":\"origin "));
    ck_assert_ptr_nonnull(strstr(log_text(), " (origin none): 202 "
        "{\"upstream\":\"u\",\"rotation\":1,\"from\":1,\"to\":2}\n"));
    ck_assert_ptr_nonnull(strstr(log_text(), " (origin "
        "http://localhost:3000): 202 {\"upstream\":\"u\",\"rotation\":2,"));
    ck_assert_ptr_nonnull(strstr(log_text(), "upstream u#2: rotation #1 "
        "started (admin request from 127.0.0.1:"));
    ck_assert_ptr_nonnull(strstr(log_text(), "admin: DELETE "
        "/upstreams/u/rotate from 127.0.0.1:"));
    xg_admin_free(a);
}
END_TEST

/* ---- a reload: xg_upstream_reconf() ------------------------------------ */

/* The conf of upstream "u" at PORT with BODY, as make_up_proto() writes. */
static struct xg_main_conf *
conf_u(uint16_t port, const char *path, const char *body)
{
    char text[2048], *errors = NULL;
    struct xg_main_conf *c;

    snprintf(text, sizeof(text), "upstream u {\n url ws://127.0.0.1:%u%s;\n"
        " ping 0ms;\n %s\n}\n", port, path, body);
    c = xg_conf_load_string("t.conf", text, &errors);
    ck_assert_msg(c != NULL, "conf: %s", errors ? errors : "");
    free(errors);
    return c;
}

/* UP runs on NEXT from now on; the conf it ran on is freed at once. */
static int
reconf(struct xg_main_conf *next, const char *why)
{
    int rc = xg_upstream_reconf(up, next->upstreams, why);

    if (rc == XG_OK) {
        xg_conf_free(mc);
        mc = next;
    } else {
        xg_conf_free(next);
    }
    return rc;
}

static int srv1_open(void) { return srv.nconns > 1 && srv.conns[1].open; }
static int srv2_open(void) { return srv.nconns > 2 && srv.conns[2].open; }

/* Limits: the module and the policy follow, no connection is made. */
START_TEST(reconf_limits_in_place)
{
    make_up(srv.port, "", 0);
    xg_upstream_start(up);
    ck_assert(run_until(is_ready, 3000));
    ck_assert_int_eq(reconf(conf_u(srv.port, "/ws",
        "connect_timeout 3s; reconnect fixed { delay 1s; } "
        "breaker { failures 3; }"), NULL), XG_OK);
    ck_assert_ptr_eq(tp_last->conf, mc->upstreams);
    ck_assert_str_eq(json_string_value(status_field("reconnect")), "fixed");
    ck_assert_str_eq(json_string_value(status_field("breaker")), "closed");
    run_for(200);
    ck_assert_int_eq(xg_upstream_state(up), XG_UP_READY);
    ck_assert_uint_eq(xg_upstream_conn_id(up), 1);
    ck_assert_int_eq(srv.nconns, 1);
    /* the next drop uses the new policy: fixed 1s */
    xg_upstream_fail(up, "test");
    ck_assert_ptr_nonnull(strstr(json_string_value(status_field(
        "last_error")), "test"));
    ck_assert_int_ge(status_int("retry_in_ms"), 900);
}
END_TEST

/* A new url: a rotation to it, make before break; the old conf is gone. */
START_TEST(reconf_url_rotates)
{
    tp_auto_promote = 1;
    make_up(srv.port, "", 0);
    xg_upstream_start(up);
    ck_assert(run_until(is_ready, 3000));
    ck_assert_str_eq(srv.conns[0].path, "/ws");
    log_capture();
    ck_assert_int_eq(reconf(conf_u(srv.port, "/ws2", "header X-Gen two;"),
        "reload: url, header changed"), XG_OK);
    ck_assert(run_until(rotated_once, 3000));
    ck_assert_str_eq(srv.conns[1].path, "/ws2");
    ck_assert(run_until(srv0_down, 3000));
    ck_assert_int_eq(srv.conns[0].close_code, 1000);
    ck_assert_int_eq(srv.max_live, 2);
    ck_assert_uint_eq(xg_upstream_conn_id(up), 2);
    ck_assert_int_eq(xg_upstream_state(up), XG_UP_READY);
    ck_assert_ptr_nonnull(strstr(log_text(), "upstream u#2: rotation #1 "
        "started (reload: url, header changed): #1 -> #2\n"));
    /* done: nothing more follows */
    run_for(300);
    ck_assert_int_eq(srv.nconns, 2);
    ck_assert_int_eq(status_int("rotations"), 1);
}
END_TEST

/*
 * A reload during a rotation that started before it: that rotation's
 * connection was made with the old url, so another rotation follows once
 * it is done.
 */
START_TEST(reconf_during_rotation)
{
    tp_auto_promote = 1;
    make_up(srv.port, "", 0);
    xg_upstream_start(up);
    ck_assert(run_until(is_ready, 3000));
    ck_assert_int_eq(xg_upstream_rotate(up, "admin"), XG_OK);
    ck_assert(run_until(srv1_open, 3000));
    ck_assert_int_eq(reconf(conf_u(srv.port, "/ws3", ""),
        "reload: url changed"), XG_OK);
    ck_assert(run_until(rotated_twice, 5000));
    ck_assert_str_eq(srv.conns[1].path, "/ws");
    ck_assert_str_eq(srv.conns[2].path, "/ws3");
    run_for(300);
    ck_assert_int_eq(srv.nconns, 3);
    ck_assert_uint_eq(xg_upstream_conn_id(up), 3);
}
END_TEST

/* A module that cannot rotate: one reconnect, to the new url. */
START_TEST(reconf_norot_reconnects)
{
    make_up_proto(srv.port, "", &tp_module_norot);
    xg_upstream_start(up);
    ck_assert(run_until(is_ready, 3000));
    log_capture();
    ck_assert_int_eq(reconf(conf_u(srv.port, "/ws4", ""),
        "reload: url changed"), XG_OK);
    ck_assert(run_until(second_ready, 3000));
    ck_assert_str_eq(srv.conns[1].path, "/ws4");
    ck_assert_int_eq(srv.max_live, 1);
    ck_assert_int_eq(status_int("rotations"), 0);
    ck_assert_ptr_nonnull(strstr(log_text(), "upstream u#1: reload: url "
        "changed: protocol test-norot cannot rotate: reconnecting to apply "
        "it\n"));
    run_for(300);
    ck_assert_int_eq(srv.nconns, 2);
}
END_TEST

/* A module without reconf cannot take a new conf: nothing changes. */
START_TEST(reconf_refused_without_hook)
{
    static const struct xg_venue plain = {
        .name = "plain",
        .create = tp_create,
        .destroy = tp_destroy,
        .on_open = tp_on_open,
        .on_message = tp_on_message,
        .on_down = tp_on_down
    };
    const struct xg_upstream_conf *before;

    make_up_proto(srv.port, "", &plain);
    before = mc->upstreams;
    ck_assert_int_eq(reconf(conf_u(srv.port, "/ws", ""), NULL), XG_ERROR);
    ck_assert_ptr_eq(tp_last->conf, before);
}
END_TEST

static Suite *
upstream_suite(void)
{
    Suite *s = suite_create("xg_upstream");
    TCase *tc = tcase_create("loopback");

    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, 20);
    tcase_add_test(tc, restoring_then_ready);
    tcase_add_test(tc, restore_timeout_reconnects);
    tcase_add_test(tc, fail_from_module);
    tcase_add_test(tc, long_utf8_reason_stays_json);
    tcase_add_test(tc, server_close_reconnects);
    tcase_add_test(tc, stable_timer_resets_backoff);
    tcase_add_test(tc, stop_sends_logout_then_1000);
    tcase_add_test(tc, stop_all_while_down);
    tcase_add_test(tc, max_attempts_gives_up);
    tcase_add_test(tc, handshake_deadline);
    tcase_add_test(tc, refused_upgrade_503);
    tcase_add_test(tc, raw_ready_on_open);
    tcase_add_test(tc, admin_status_and_hooks);
    tcase_add_test(tc, rotate_make_before_break);
    tcase_add_test(tc, rotate_refused_when_not_ready);
    tcase_add_test(tc, rotate_failure_retried_after_delay);
    tcase_add_test(tc, rotate_drop_after_open);
    tcase_add_test(tc, primary_drops_then_rotating_takes_over);
    tcase_add_test(tc, primary_drops_then_rotating_fails);
    tcase_add_test(tc, retiring_bounded);
    tcase_add_test(tc, max_connection_age_rotates);
    tcase_add_test(tc, rotate_not_supported_closes);
    tcase_add_test(tc, stop_during_rotation);
    tcase_add_test(tc, admin_rotate);
    tcase_add_test(tc, reconf_limits_in_place);
    tcase_add_test(tc, reconf_url_rotates);
    tcase_add_test(tc, reconf_during_rotation);
    tcase_add_test(tc, reconf_norot_reconnects);
    tcase_add_test(tc, reconf_refused_without_hook);
    suite_add_tcase(s, tc);
    return s;
}

int
main(void)
{
    SRunner *sr = srunner_create(upstream_suite());
    int failed;

    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
