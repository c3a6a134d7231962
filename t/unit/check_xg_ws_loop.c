/*
 * check_xg_ws_loop.c: the WebSocket transport end to end, in process: our
 * client against our server on 127.0.0.1 with one event_base, and raw
 * sockets playing misbehaving peers on either side.
 */
#include "xg_core.h"
#include "xg_log.h"
#include "xg_ws.h"
#include "xg_wsproto.h"

#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <event2/listener.h>
#include <openssl/rand.h>

/* What one side saw. */
struct side {
    struct xg_ws   *ws;
    int             opened;
    int             downs;
    int             in_connect;     /* set while xg_ws_connect runs */
    int             cb_in_connect;  /* a callback came from inside it */
    char            reason[512];
    int             http_status;
    int             retry_after_s;
    int             close_code;
    int             by_us;
    int             nmsg;
    int             binary;
    unsigned char  *msg;
    size_t          msg_len;
    int             echo;           /* send every message back */
    int             free_in_msg;    /* xg_ws_free from on_message */
    int             close_in_msg;   /* xg_ws_close(code) from on_message */
    int             drains;
    int             path_status;    /* accept callback answer */
    char            path[256];
};

static struct event_base *base;
static struct evconnlistener *lst;
static uint16_t srv_port;
static struct xg_ws_opts srv_opts;
static struct side srv;
static struct side cli;
static struct event *tick;

static void
loop_wake(evutil_socket_t fd, short what, void *arg)
{
}

static void
on_open(struct xg_ws *ws, void *arg)
{
    struct side *s = arg;

    if (s->in_connect) {
        s->cb_in_connect = 1;
    }
    s->opened++;
}

static void
on_message(struct xg_ws *ws, int binary, const unsigned char *data,
    size_t len, void *arg)
{
    struct side *s = arg;

    s->nmsg++;
    s->binary = binary;
    free(s->msg);
    s->msg = malloc(len ? len : 1);
    memcpy(s->msg, data, len);
    s->msg_len = len;
    if (s->echo) {
        if (binary) {
            xg_ws_send_binary(ws, data, len);
        } else {
            xg_ws_send_text(ws, data, len);
        }
    }
    if (s->close_in_msg) {
        xg_ws_close(ws, s->close_in_msg, "asked to");
    }
    if (s->free_in_msg) {
        xg_ws_free(ws);
        s->ws = NULL;
    }
}

static void
on_down(struct xg_ws *ws, const struct xg_ws_down *why, void *arg)
{
    struct side *s = arg;

    if (s->in_connect) {
        s->cb_in_connect = 1;
    }
    s->downs++;
    snprintf(s->reason, sizeof(s->reason), "%s", why->reason);
    s->http_status = why->http_status;
    s->retry_after_s = why->retry_after_s;
    s->close_code = why->close_code;
    s->by_us = why->by_us;
    xg_ws_free(ws);
    s->ws = NULL;
}

static void
on_drain(struct xg_ws *ws, void *arg)
{
    struct side *s = arg;

    s->drains++;
}

static const struct xg_ws_cbs cbs = {
    NULL, on_open, on_message, on_down, on_drain
};

static int
check_path(struct xg_ws *ws, const char *path, void *arg)
{
    struct side *s = arg;

    snprintf(s->path, sizeof(s->path), "%s", path);
    if (s->path_status) {
        return s->path_status;
    }
    return strcmp(path, "/ws") == 0 || strncmp(path, "/ws?", 4) == 0
        ? 0 : 404;
}

static void
accept_cb(struct evconnlistener *l, evutil_socket_t fd, struct sockaddr *sa,
    int slen, void *arg)
{
    if (srv.ws != NULL) {
        xg_ws_free(srv.ws);
    }
    srv.ws = xg_ws_accept(base, fd, NULL, &srv_opts, check_path, &cbs, &srv);
}

static void
default_opts(struct xg_ws_opts *o)
{
    memset(o, 0, sizeof(*o));
    o->max_message = 2 * 1024 * 1024;
    o->connect_timeout_ms = 2000;
    o->handshake_timeout_ms = 2000;
    o->close_timeout_ms = 1000;
    o->tls_verify = 1;
}

static void
setup(void)
{
    struct sockaddr_in sin;
    socklen_t sl;

    xg_log_level = XG_LOG_WARN;
    base = event_base_new();
    memset(&sin, 0, sizeof(sin));
    sin.sin_family = AF_INET;
    sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    lst = evconnlistener_new_bind(base, accept_cb, NULL,
        LEV_OPT_CLOSE_ON_FREE | LEV_OPT_REUSEABLE, 16,
        (struct sockaddr *) &sin, sizeof(sin));
    ck_assert_ptr_nonnull(lst);
    sl = sizeof(sin);
    getsockname(evconnlistener_get_fd(lst), (struct sockaddr *) &sin, &sl);
    srv_port = ntohs(sin.sin_port);
    memset(&srv, 0, sizeof(srv));
    memset(&cli, 0, sizeof(cli));
    default_opts(&srv_opts);
    {
        struct timeval tv = { 0, 5000 };
        tick = event_new(base, -1, EV_PERSIST, loop_wake, NULL);
        event_add(tick, &tv);
    }
}

static void
teardown(void)
{
    xg_ws_free(srv.ws);
    xg_ws_free(cli.ws);
    free(srv.msg);
    free(cli.msg);
    evconnlistener_free(lst);
    event_free(tick);
    /* Let cancelled work and reference cleanups run before freeing. */
    event_base_loop(base, EVLOOP_NONBLOCK);
    event_base_free(base);
}


/* Runs the loop until EXPR holds or MS milliseconds pass. */
#define RUN_UNTIL(expr, ms) do {                                    \
        uint64_t end_ = xg_now_ms() + (uint64_t) (ms);              \
        while (!(expr) && xg_now_ms() < end_) {                     \
            event_base_loop(base, EVLOOP_ONCE);                     \
        }                                                           \
    } while (0)

static void
make_url(struct xg_url *u, uint16_t port, const char *path)
{
    memset(u, 0, sizeof(*u));
    snprintf(u->host, sizeof(u->host), "127.0.0.1");
    u->port = port;
    snprintf(u->path, sizeof(u->path), "%s", path);
}

static void
connect_client(const struct xg_ws_opts *o, uint16_t port, const char *path)
{
    struct xg_url u;

    make_url(&u, port, path);
    cli.in_connect = 1;
    cli.ws = xg_ws_connect(base, NULL, &u, o, &cbs, &cli);
    cli.in_connect = 0;
    ck_assert_ptr_nonnull(cli.ws);
}

static void
open_pair(const struct xg_ws_opts *copts)
{
    struct xg_ws_opts o;

    if (copts == NULL) {
        default_opts(&o);
        copts = &o;
    }
    connect_client(copts, srv_port, "/ws");
    RUN_UNTIL(cli.opened && srv.opened, 3000);
    ck_assert_int_eq(cli.opened, 1);
    ck_assert_int_eq(srv.opened, 1);
    ck_assert_int_eq(xg_ws_state(cli.ws), XG_WS_OPEN);
    ck_assert_int_eq(xg_ws_state(srv.ws), XG_WS_OPEN);
}

/* ---- round trips ---------------------------------------------------------- */

static const size_t sizes[] = { 0, 1, 125, 126, 65535, 65536, 1 << 20 };

START_TEST(test_echo_sizes)
{
    unsigned char *buf;
    size_t i, len;
    int want;

    srv.echo = 1;
    open_pair(NULL);
    ck_assert(!cli.cb_in_connect);
    for (i = 0; i < XG_NELEM(sizes); i++) {
        len = sizes[i];
        buf = malloc(len + 1);
        memset(buf, 'a' + (int) (i % 26), len);
        if (len > 10) {
            buf[len / 2] = 'Z';
        }
        want = cli.nmsg + 1;
        ck_assert_int_eq(xg_ws_send_text(cli.ws, buf, len), XG_OK);
        RUN_UNTIL(cli.nmsg >= want || cli.downs, 5000);
        ck_assert_int_eq(cli.nmsg, want);
        ck_assert_int_eq(cli.binary, 0);
        ck_assert_uint_eq(cli.msg_len, len);
        ck_assert(memcmp(cli.msg, buf, len) == 0);
        ck_assert_uint_eq(srv.msg_len, len);
        /* The same through binary. */
        want = cli.nmsg + 1;
        ck_assert_int_eq(xg_ws_send_binary(cli.ws, buf, len), XG_OK);
        RUN_UNTIL(cli.nmsg >= want || cli.downs, 5000);
        ck_assert_int_eq(cli.nmsg, want);
        ck_assert_int_eq(cli.binary, 1);
        ck_assert_uint_eq(cli.msg_len, len);
        ck_assert(memcmp(cli.msg, buf, len) == 0);
        free(buf);
    }
    ck_assert_int_eq(cli.downs, 0);
    ck_assert_int_eq(srv.downs, 0);
}
END_TEST

static Suite *
ws_loop_suite(void)
{
    Suite *s;
    TCase *tc;

    s = suite_create("xg_ws_loop");
    tc = tcase_create("loop");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, 30);
    tcase_add_test(tc, test_echo_sizes);
    suite_add_tcase(s, tc);
    return s;
}

int
main(void)
{
    SRunner *sr;
    int failed;

    sr = srunner_create(ws_loop_suite());
    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? 0 : 1;
}
