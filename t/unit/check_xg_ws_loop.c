/*
 * check_xg_ws_loop.c: the WebSocket transport end to end, in process: our
 * client against our server on 127.0.0.1 with one event_base, and raw
 * sockets playing misbehaving peers on either side.
 */
#include "xg_core.h"
#include "xg_log.h"
#include "xg_tls.h"
#include "xg_ws.h"
#include "xg_wsproto.h"

#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <malloc.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <event2/dns.h>
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
    int             free_in_open;   /* ... from on_open */
    int             free_in_state;  /* ... from on_state(this state) */
    int             states;         /* on_state calls */
    int             close_in_msg;   /* xg_ws_close(code) from on_message */
    int             drains;
    int             path_status;    /* accept callback answer */
    char            path[256];
    int             check_seq;      /* messages start "N ": N = 0, 1, ... */
    int             seq_next;
    int             seq_bad;
};

static struct event_base *base;
static struct evconnlistener *lst;
static uint16_t srv_port;
static struct xg_ws_opts srv_opts;
static struct side srvs[8];
static int nsrv;
static struct side cli;
static struct side clis[3];
#define srv (srvs[0])
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
    if (s->free_in_open) {
        xg_ws_free(ws);
        s->ws = NULL;
    }
}

static void
on_state(struct xg_ws *ws, enum xg_ws_state st, void *arg)
{
    struct side *s = arg;

    if (s->in_connect) {
        s->cb_in_connect = 1;
    }
    s->states++;
    if (s->free_in_state == (int) st) {
        xg_ws_free(ws);
        s->ws = NULL;
    }
}

static void
on_message(struct xg_ws *ws, int binary, const unsigned char *data,
    size_t len, void *arg)
{
    struct side *s = arg;

    s->nmsg++;
    s->binary = binary;
    if (s->check_seq) {
        char head[16];
        size_t n = len < sizeof(head) - 1 ? len : sizeof(head) - 1;

        memcpy(head, data, n);
        head[n] = '\0';
        if (atoi(head) != s->seq_next++) {
            s->seq_bad++;
        }
    }
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
    on_state, on_open, on_message, on_down, on_drain
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
    struct side *s;

    if (nsrv >= (int) XG_NELEM(srvs)) {
        evutil_closesocket(fd);
        return;
    }
    s = &srvs[nsrv++];
    s->ws = xg_ws_accept(base, fd, NULL, &srv_opts, check_path, &cbs, s);
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
    memset(srvs, 0, sizeof(srvs));
    nsrv = 0;
    memset(&cli, 0, sizeof(cli));
    memset(clis, 0, sizeof(clis));
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
    size_t i;

    for (i = 0; i < XG_NELEM(srvs); i++) {
        xg_ws_free(srvs[i].ws);
        free(srvs[i].msg);
    }
    for (i = 0; i < XG_NELEM(clis); i++) {
        xg_ws_free(clis[i].ws);
        free(clis[i].msg);
    }
    xg_ws_free(cli.ws);
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
connect_side(struct side *c, const struct xg_ws_opts *o, uint16_t port,
    const char *path)
{
    struct xg_url u;

    make_url(&u, port, path);
    c->in_connect = 1;
    c->ws = xg_ws_connect(base, NULL, &u, o, &cbs, c);
    c->in_connect = 0;
    ck_assert_ptr_nonnull(c->ws);
}

static void
connect_client(const struct xg_ws_opts *o, uint16_t port, const char *path)
{
    connect_side(&cli, o, port, path);
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


/* ---- raw peers ----------------------------------------------------------- */

struct raw {
    int             fd;
    unsigned char   buf[1 << 17];
    size_t          len;
    int             eof;
};

static struct raw *
raw_new(int fd)
{
    struct raw *r = calloc(1, sizeof(*r));

    r->fd = fd;
    return r;
}

static void
raw_free(struct raw *r)
{
    if (r->fd >= 0) {
        close(r->fd);
    }
    free(r);
}

/* Reads what is there without blocking; returns 1 for the RUN_UNTIL use. */
static int
raw_pump(struct raw *r)
{
    ssize_t n;

    while (!r->eof && r->len < sizeof(r->buf)) {
        n = recv(r->fd, r->buf + r->len, sizeof(r->buf) - r->len,
            MSG_DONTWAIT);
        if (n > 0) {
            r->len += (size_t) n;
        } else if (n == 0 || (errno != EAGAIN && errno != EINTR)) {
            r->eof = 1;
        } else {
            break;
        }
    }
    return 1;
}

static void
raw_drop(struct raw *r, size_t n)
{
    memmove(r->buf, r->buf + n, r->len - n);
    r->len -= n;
}

static void
raw_send(struct raw *r, const void *p, size_t n)
{
    ck_assert_int_eq(send(r->fd, p, n, MSG_NOSIGNAL), (ssize_t) n);
}

static ssize_t
raw_head(struct raw *r)
{
    return xg_wsproto_head_len((const char *) r->buf, r->len, sizeof(r->buf));
}

static struct raw *
raw_connect(uint16_t port)
{
    struct sockaddr_in sin;
    int fd;

    fd = socket(AF_INET, SOCK_STREAM, 0);
    memset(&sin, 0, sizeof(sin));
    sin.sin_family = AF_INET;
    sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    sin.sin_port = htons(port);
    ck_assert_int_eq(connect(fd, (struct sockaddr *) &sin, sizeof(sin)), 0);
    return raw_new(fd);
}

#define RAW_REQ(path, extra) \
    "GET " path " HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n" \
    "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n" \
    extra "\r\n"

/* Sends REQ to our server and returns the HTTP status it answered. */
static int
raw_request(struct raw *r, const char *req, size_t len)
{
    ssize_t hl;

    raw_send(r, req, len);
    RUN_UNTIL(raw_pump(r) && (raw_head(r) > 0 || r->eof), 3000);
    hl = raw_head(r);
    ck_assert_msg(hl > 0, "no answer head");
    ck_assert(memcmp(r->buf, "HTTP/1.1 ", 9) == 0);
    return atoi((const char *) r->buf + 9);
}

/* An open raw client of our server. */
static struct raw *
raw_client_open(void)
{
    struct raw *r;
    const char req[] = RAW_REQ("/ws", "Sec-WebSocket-Version: 13\r\n");

    r = raw_connect(srv_port);
    ck_assert_int_eq(raw_request(r, req, sizeof(req) - 1), 101);
    ck_assert_ptr_nonnull(strstr((const char *) r->buf,
        "Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"));
    raw_drop(r, (size_t) raw_head(r));
    RUN_UNTIL(srv.opened, 2000);
    ck_assert_int_eq(srv.opened, 1);
    return r;
}

/* Encodes a frame with any FIN/opcode, masked with MASK unless NULL. */
static size_t
mkframe(unsigned char *out, int fin, int opcode, const void *data,
    size_t len, const unsigned char *mask)
{
    size_t n, i;

    n = xg_wsproto_frame_header(out, opcode, len, mask);
    if (!fin) {
        out[0] &= 0x7f;
    }
    for (i = 0; i < len; i++) {
        out[n + i] = ((const unsigned char *) data)[i]
            ^ (mask ? mask[i % 4] : 0);
    }
    return n + len;
}

static const unsigned char M[4] = { 0x11, 0x22, 0x33, 0x44 };

/*
 * Takes one unmasked frame off R's buffer. Returns 1 with the opcode and
 * payload (copied to PAY, up to CAP), 0 if none is complete.
 */
static int
raw_frame(struct raw *r, int *opcode, unsigned char *pay, size_t cap,
    size_t *plen)
{
    size_t hl, len;
    int i;

    if (r->len < 2) {
        return 0;
    }
    len = r->buf[1] & 0x7f;
    hl = 2;
    if (len == 126) {
        if (r->len < 4) {
            return 0;
        }
        len = ((size_t) r->buf[2] << 8) | r->buf[3];
        hl = 4;
    } else if (len == 127) {
        if (r->len < 10) {
            return 0;
        }
        len = 0;
        for (i = 0; i < 8; i++) {
            len = (len << 8) | r->buf[2 + i];
        }
        hl = 10;
    }
    ck_assert_msg((r->buf[1] & 0x80) == 0, "server frame masked");
    if (r->len < hl + len) {
        return 0;
    }
    *opcode = r->buf[0] & 0x0f;
    *plen = len;
    memcpy(pay, r->buf + hl, len < cap ? len : cap);
    raw_drop(r, hl + len);
    return 1;
}

/* Waits for a close frame from our server; returns its code (-1: none). */
static int
raw_wait_close(struct raw *r)
{
    unsigned char pay[256];
    size_t plen;
    int op;
    uint64_t end;

    end = xg_now_ms() + 3000;
    while (xg_now_ms() < end) {
        RUN_UNTIL(raw_pump(r) && (r->len >= 2 || r->eof), 50);
        while (raw_frame(r, &op, pay, sizeof(pay), &plen)) {
            if (op == 8) {
                return plen >= 2 ? (pay[0] << 8 | pay[1]) : 0;
            }
        }
        if (r->eof) {
            return -1;
        }
    }
    return -1;
}

/* A raw server: a listening socket whose port our client is sent to. */
static int
raw_listen(uint16_t *port)
{
    struct sockaddr_in sin;
    socklen_t sl;
    int fd, one = 1;

    fd = socket(AF_INET, SOCK_STREAM, 0);
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    memset(&sin, 0, sizeof(sin));
    sin.sin_family = AF_INET;
    sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ck_assert_int_eq(bind(fd, (struct sockaddr *) &sin, sizeof(sin)), 0);
    ck_assert_int_eq(listen(fd, 4), 0);
    sl = sizeof(sin);
    getsockname(fd, (struct sockaddr *) &sin, &sl);
    *port = ntohs(sin.sin_port);
    return fd;
}

static char last_req[XG_WSPROTO_MAX_HEAD + 1];

/* Connects our client to a raw server and returns it with the request. */
static struct raw *
raw_server_accept(int lfd, const struct xg_ws_opts *o, char *key)
{
    struct raw *r;
    const char *k;
    uint16_t port;
    struct sockaddr_in sin;
    socklen_t sl = sizeof(sin);
    int fd;

    getsockname(lfd, (struct sockaddr *) &sin, &sl);
    port = ntohs(sin.sin_port);
    connect_client(o, port, "/feed");
    RUN_UNTIL(cli.downs || xg_ws_state(cli.ws) == XG_WS_HANDSHAKE, 2000);
    ck_assert_msg(cli.downs == 0, "%s", cli.reason);
    fd = accept(lfd, NULL, NULL);
    ck_assert_int_ge(fd, 0);
    r = raw_new(fd);
    RUN_UNTIL(raw_pump(r) && (raw_head(r) > 0 || r->eof), 2000);
    ck_assert_int_gt(raw_head(r), 0);
    ck_assert(memcmp(r->buf, "GET /feed HTTP/1.1\r\n", 20) == 0);
    ck_assert_ptr_nonnull(strstr((const char *) r->buf, "User-Agent: "));
    k = strstr((const char *) r->buf, "Sec-WebSocket-Key: ");
    ck_assert_ptr_nonnull(k);
    memcpy(key, k + 19, 24);
    key[24] = '\0';
    snprintf(last_req, sizeof(last_req), "%.*s", (int) raw_head(r),
        (const char *) r->buf);
    raw_drop(r, (size_t) raw_head(r));
    return r;
}

/* ---- messages ------------------------------------------------------------- */

START_TEST(test_fragmented_and_ping)
{
    struct raw *r;
    unsigned char f[256], pay[256];
    size_t n, plen;
    int op;

    r = raw_client_open();
    n = mkframe(f, 0, 1, "Hel", 3, M);
    n += mkframe(f + n, 1, 9, "are you there", 13, M);   /* between */
    n += mkframe(f + n, 0, 0, "l", 1, M);
    raw_send(r, f, n);
    RUN_UNTIL(raw_pump(r) && r->len >= 15, 2000);
    ck_assert(raw_frame(r, &op, pay, sizeof(pay), &plen));
    ck_assert_int_eq(op, 0xa);                 /* pong, same payload */
    ck_assert_uint_eq(plen, 13);
    ck_assert(memcmp(pay, "are you there", 13) == 0);
    ck_assert_int_eq(srv.nmsg, 0);
    n = mkframe(f, 1, 0, "o \xe2\x82", 4, M);   /* UTF-8 split over frames */
    raw_send(r, f, n);
    RUN_UNTIL(srv.nmsg || srv.downs, 200);
    ck_assert_int_eq(srv.nmsg, 0);
    ck_assert_int_eq(srv.downs, 0);
    raw_free(r);
    RUN_UNTIL(srv.downs, 2000);
    ck_assert_int_eq(srv.downs, 1);
}
END_TEST

START_TEST(test_fragmented_message)
{
    struct raw *r;
    unsigned char f[256];
    size_t n;

    r = raw_client_open();
    n = mkframe(f, 0, 1, "Hel", 3, M);
    n += mkframe(f + n, 0, 0, "lo \xe2\x82", 5, M);
    n += mkframe(f + n, 1, 0, "\xac!", 2, M);
    raw_send(r, f, n);
    RUN_UNTIL(srv.nmsg, 2000);
    ck_assert_int_eq(srv.nmsg, 1);
    ck_assert_uint_eq(srv.msg_len, 10);
    ck_assert(memcmp(srv.msg, "Hello \xe2\x82\xac!", 10) == 0);
    raw_free(r);
}
END_TEST

START_TEST(test_keepalive_pings)
{
    struct xg_ws_opts o;

    /*
     * Both ends live in this one process: a timeout of a few hundred ms
     * leaves room for it being descheduled on a loaded machine (a pong
     * that waits behind the silence timer), while three timeouts pass.
     */
    default_opts(&o);
    o.ping_ms = 50;
    o.ping_timeout_ms = 500;
    srv_opts.ping_ms = 50;
    srv_opts.ping_timeout_ms = 500;
    open_pair(&o);
    RUN_UNTIL(cli.downs || srv.downs, 1500);
    ck_assert_int_eq(cli.downs, 0);
    ck_assert_int_eq(srv.downs, 0);
}
END_TEST

START_TEST(test_half_frame_then_stall)
{
    struct raw *r;
    unsigned char f[64], pay[64];
    size_t plen;
    int op, pings;
    uint64_t t0;

    srv_opts.ping_ms = 40;
    srv_opts.ping_timeout_ms = 200;
    r = raw_client_open();
    mkframe(f, 1, 1, "hello world", 11, M);
    raw_send(r, f, 5);          /* header and one byte, then nothing */
    t0 = xg_now_ms();
    RUN_UNTIL(srv.downs, 2000);
    ck_assert_int_eq(srv.downs, 1);
    ck_assert_str_eq(srv.reason, "ping timeout");
    ck_assert_uint_ge(xg_now_ms() - t0, 150);
    raw_pump(r);
    pings = 0;
    while (raw_frame(r, &op, pay, sizeof(pay), &plen)) {
        pings += op == 9;
    }
    ck_assert_int_ge(pings, 2);
    ck_assert_int_eq(srv.nmsg, 0);
    raw_free(r);
}
END_TEST

START_TEST(test_fanout_frame)
{
    struct xg_frame *f;
    struct xg_ws_opts o;
    int i, opened;

    default_opts(&o);
    for (i = 0; i < 3; i++) {
        connect_side(&clis[i], &o, srv_port, "/ws");
    }
    RUN_UNTIL((opened = clis[0].opened + clis[1].opened + clis[2].opened
        + srvs[0].opened + srvs[1].opened + srvs[2].opened) == 6, 3000);
    ck_assert_int_eq(opened, 6);
    f = xg_frame_text("{\"tick\":1}", 10);
    ck_assert_uint_eq(xg_frame_len(f), 12);
    for (i = 0; i < 3; i++) {
        ck_assert_int_eq(xg_ws_send_frame(srvs[i].ws, f), XG_OK);
        /* Ordering with ordinary messages on the same connection. */
        ck_assert_int_eq(xg_ws_send_text(srvs[i].ws, "after", 5), XG_OK);
    }
    ck_assert_int_eq(xg_ws_send_frame(clis[0].ws, f), XG_ERROR);
    xg_frame_unref(f);      /* the connections hold their own references */
    RUN_UNTIL(clis[0].nmsg + clis[1].nmsg + clis[2].nmsg == 6, 3000);
    for (i = 0; i < 3; i++) {
        ck_assert_int_eq(clis[i].nmsg, 2);
        ck_assert_uint_eq(clis[i].msg_len, 5);
        ck_assert(memcmp(clis[i].msg, "after", 5) == 0);
    }
}
END_TEST

/*
 * direct_output: a frame goes to the socket only when nothing is queued
 * (a queued text message keeps the next frame behind it), frames go to the
 * socket while it takes them, the part of a frame it did not take and
 * everything after are queued, and from then on nothing jumps ahead. The
 * client reads nothing until the loop runs. Fails if the queue check is
 * dropped from xg_bev_send_now, or the rest queued from the wrong offset.
 */
static void
send_seq_frame(struct xg_ws *ws, char *buf, size_t len, int seq)
{
    struct xg_frame *f;
    int n;

    memset(buf, 'x', len);
    n = snprintf(buf, len, "%d ", seq);
    buf[n] = 'x';
    f = xg_frame_text(buf, len);
    ck_assert_int_eq(xg_ws_send_frame(ws, f), XG_OK);
    xg_frame_unref(f);
}

START_TEST(test_direct_output_order)
{
    enum { LEN = 32 * 1024, MAX = 4000 };
    char *buf = malloc(LEN), text[32];
    int seq = 0, n;

    srv_opts.direct_output = 1;
    open_pair(NULL);
    cli.check_seq = 1;
    /* queued output, a socket with room: the frame waits its turn */
    n = snprintf(text, sizeof(text), "%d text", seq++);
    ck_assert_int_eq(xg_ws_send_text(srv.ws, text, (size_t) n), XG_OK);
    send_seq_frame(srv.ws, buf, LEN, seq++);
    ck_assert_uint_gt(xg_ws_output_len(srv.ws), LEN);
    RUN_UNTIL(cli.nmsg == seq || cli.downs, 5000);
    ck_assert_int_eq(cli.nmsg, seq);
    ck_assert_int_eq(cli.seq_bad, 0);
    ck_assert_uint_eq(xg_ws_output_len(srv.ws), 0);
    /* nothing queued: straight out until the socket is full */
    send_seq_frame(srv.ws, buf, LEN, seq++);
    ck_assert_uint_eq(xg_ws_output_len(srv.ws), 0);
    while (seq < MAX && xg_ws_output_len(srv.ws) == 0) {
        send_seq_frame(srv.ws, buf, LEN, seq++);
    }
    /* the socket was full: the rest of one frame is queued */
    ck_assert_int_lt(seq, MAX);
    ck_assert_uint_gt(xg_ws_output_len(srv.ws), 0);
    ck_assert_uint_lt(xg_ws_output_len(srv.ws), LEN);
    n = snprintf(text, sizeof(text), "%d text", seq++);
    ck_assert_int_eq(xg_ws_send_text(srv.ws, text, (size_t) n), XG_OK);
    send_seq_frame(srv.ws, buf, LEN, seq++);
    send_seq_frame(srv.ws, buf, LEN, seq++);
    RUN_UNTIL(cli.nmsg == seq || cli.downs, 20000);
    ck_assert_int_eq(cli.downs, 0);
    ck_assert_int_eq(cli.nmsg, seq);
    ck_assert_int_eq(cli.seq_bad, 0);
    ck_assert_uint_eq(xg_ws_output_len(srv.ws), 0);
    free(buf);
}
END_TEST

/*
 * read_max: a read callback reads on past libevent's 4 KiB until the
 * socket is dry, and every message arrives whole and in order across the
 * chunks; the counters see every byte once. The sender batches as the
 * fan-out does (xg_frame_texts, direct_output, a large write_max). Fails
 * without ws_read_more (a read callback per 4 KiB: over 70 reads for
 * 300 KiB), or if a chunk boundary loses or repeats bytes.
 */
START_TEST(test_read_more_and_counters)
{
    enum { N = 1000, LEN = 300, BATCH = 100 };
    struct xg_io_stats cio, sio;
    struct xg_ws_opts o;
    const void *data[BATCH];
    size_t len[BATCH], total = 0, i, by = 0;
    char (*msgs)[LEN] = malloc((size_t) N * LEN);
    int k;

    memset(&cio, 0, sizeof(cio));
    memset(&sio, 0, sizeof(sio));
    default_opts(&o);
    o.read_max = 256 * 1024;
    o.io = &cio;
    srv_opts.direct_output = 1;
    srv_opts.io = &sio;
    srv_opts.write_max = 4 * 1024 * 1024;
    open_pair(&o);
    cli.check_seq = 1;
    memset(&cio, 0, sizeof(cio));           /* the upgrade aside */
    memset(&sio, 0, sizeof(sio));
    for (k = 0; k < N; k++) {
        memset(msgs[k], 'x', LEN);
        msgs[k][snprintf(msgs[k], LEN, "%d ", k)] = 'x';
    }
    for (k = 0; k < N; k += BATCH) {
        struct xg_frame *f;

        for (i = 0; i < BATCH; i++) {
            data[i] = msgs[k + (int) i];
            len[i] = LEN;
        }
        f = xg_frame_texts(data, len, BATCH);
        total += xg_frame_len(f);
        ck_assert_int_eq(xg_ws_send_frame(srv.ws, f), XG_OK);
        xg_frame_unref(f);
    }
    RUN_UNTIL(cli.nmsg == N || cli.downs, 10000);
    ck_assert_int_eq(cli.downs, 0);
    ck_assert_int_eq(cli.nmsg, N);
    ck_assert_int_eq(cli.seq_bad, 0);
    ck_assert_uint_eq(cli.msg_len, LEN);
    ck_assert(memcmp(cli.msg, msgs[N - 1], LEN) == 0);
    /* read on until dry: far fewer reads than one per 4 KiB */
    ck_assert_uint_eq(cio.read_bytes, total);
    ck_assert_uint_gt(cio.reads, 0);
    ck_assert_uint_lt(cio.reads, total / 4096 / 2);
    /* the sender's counters: every byte once, every send in a bucket */
    RUN_UNTIL(xg_ws_output_len(srv.ws) == 0, 2000);
    ck_assert_uint_eq(sio.msgs, N);
    ck_assert_uint_eq(sio.msg_bytes, total);
    ck_assert_uint_eq(sio.send_bytes, total);
    for (i = 0; i < XG_IO_BUCKETS; i++) {
        by += sio.by_msgs[i];
    }
    ck_assert_uint_eq(by, sio.sends);
    ck_assert_uint_ge(sio.send_msgs + sio.sends, N);
    ck_assert_uint_le(sio.send_msgs, N + sio.sends);
    free(msgs);
}
END_TEST

START_TEST(test_output_len_and_drain)
{
    struct xg_ws_opts o;
    unsigned char *big;
    size_t len = 4u << 20;

    default_opts(&o);
    o.max_message = 8u << 20;
    open_pair(&o);
    big = calloc(1, len);
    ck_assert_int_eq(xg_ws_send_binary(srv.ws, big, len), XG_OK);
    ck_assert_uint_ge(xg_ws_output_len(srv.ws), len);
    RUN_UNTIL(cli.nmsg && srv.drains, 5000);
    ck_assert_int_eq(cli.nmsg, 1);
    ck_assert_uint_eq(cli.msg_len, len);
    ck_assert_int_ge(srv.drains, 1);
    ck_assert_uint_eq(xg_ws_output_len(srv.ws), 0);
    free(big);
}
END_TEST

START_TEST(test_send_invalid_utf8_refused)
{
    open_pair(NULL);
    ck_assert_int_eq(xg_ws_send_text(cli.ws, "\xc0\x80", 2), XG_ERROR);
    ck_assert_int_eq(xg_ws_send_text(srv.ws, "\xed\xa0\x80", 3), XG_ERROR);
    ck_assert_int_eq(xg_ws_send_binary(cli.ws, "\xc0\x80", 2), XG_OK);
    RUN_UNTIL(srv.nmsg, 2000);
    ck_assert_int_eq(srv.nmsg, 1);
}
END_TEST

START_TEST(test_free_inside_callback)
{
    srv.free_in_msg = 1;
    open_pair(NULL);
    ck_assert_int_eq(xg_ws_send_text(cli.ws, "one", 3), XG_OK);
    ck_assert_int_eq(xg_ws_send_text(cli.ws, "two", 3), XG_OK);
    RUN_UNTIL(cli.downs, 2000);
    ck_assert_int_eq(srv.nmsg, 1);
    ck_assert_ptr_null(srv.ws);
    ck_assert_int_eq(srv.downs, 0);
    ck_assert_int_eq(cli.downs, 1);
}
END_TEST

/* ---- close codes ---------------------------------------------------------- */

static const int codes[] = { 1000, 1001, 1002, 1003, 1007, 1008, 1009, 1011 };

START_TEST(test_close_codes_client_first)
{
    int code = codes[_i];
    char want[64];

    open_pair(NULL);
    xg_ws_close(cli.ws, code, "client says");
    ck_assert_int_eq(xg_ws_state(cli.ws), XG_WS_CLOSING);
    ck_assert_int_eq(xg_ws_send_text(cli.ws, "late", 4), XG_ERROR);
    RUN_UNTIL(cli.downs && srv.downs, 3000);
    ck_assert_int_eq(srv.downs, 1);
    ck_assert_int_eq(cli.downs, 1);
    ck_assert_int_eq(srv.close_code, code);
    ck_assert_int_eq(srv.by_us, 0);
    snprintf(want, sizeof(want), "close %d \"client says\"", code);
    ck_assert_str_eq(srv.reason, want);
    ck_assert_int_eq(cli.by_us, 1);
    ck_assert_int_eq(cli.close_code, code);     /* the echo */
}
END_TEST

START_TEST(test_close_codes_server_first)
{
    int code = codes[_i];
    char want[64];

    open_pair(NULL);
    xg_ws_close(srv.ws, code, "server says");
    RUN_UNTIL(cli.downs && srv.downs, 3000);
    ck_assert_int_eq(cli.downs, 1);
    ck_assert_int_eq(srv.downs, 1);
    ck_assert_int_eq(cli.close_code, code);
    ck_assert_int_eq(cli.by_us, 0);
    snprintf(want, sizeof(want), "close %d \"server says\"", code);
    ck_assert_str_eq(cli.reason, want);
    ck_assert_int_eq(srv.by_us, 1);
    ck_assert_int_eq(srv.close_code, code);
}
END_TEST

START_TEST(test_close_from_on_message)
{
    srv.close_in_msg = 1008;
    open_pair(NULL);
    xg_ws_send_text(cli.ws, "bad request", 11);
    RUN_UNTIL(cli.downs && srv.downs, 3000);
    ck_assert_int_eq(cli.close_code, 1008);
    ck_assert_str_eq(cli.reason, "close 1008 \"asked to\"");
}
END_TEST

START_TEST(test_too_big)
{
    unsigned char buf[1001];

    memset(buf, 'x', sizeof(buf));
    srv_opts.max_message = 1000;
    open_pair(NULL);
    ck_assert_int_eq(xg_ws_send_text(cli.ws, buf, 1000), XG_OK);
    RUN_UNTIL(srv.nmsg, 2000);
    ck_assert_int_eq(srv.nmsg, 1);
    ck_assert_int_eq(xg_ws_send_text(cli.ws, buf, 1001), XG_OK);
    RUN_UNTIL(cli.downs && srv.downs, 3000);
    ck_assert_int_eq(srv.nmsg, 1);
    ck_assert_int_eq(cli.close_code, 1009);
    ck_assert_str_eq(srv.reason, "message too big: sent close 1009");
}
END_TEST

START_TEST(test_too_big_fragmented)
{
    struct raw *r;
    unsigned char f[2048], chunk[600];
    size_t n;

    memset(chunk, 'y', sizeof(chunk));
    srv_opts.max_message = 1000;
    r = raw_client_open();
    n = mkframe(f, 0, 2, chunk, 600, M);
    n += mkframe(f + n, 1, 0, chunk, 600, M);
    raw_send(r, f, n);
    ck_assert_int_eq(raw_wait_close(r), 1009);
    ck_assert_int_eq(srv.nmsg, 0);
    raw_free(r);
    RUN_UNTIL(srv.downs, 2000);
    ck_assert_int_eq(srv.downs, 1);
}
END_TEST

START_TEST(test_text_only)
{
    srv_opts.text_only = 1;
    open_pair(NULL);
    xg_ws_send_binary(cli.ws, "\x01\x02", 2);
    RUN_UNTIL(cli.downs && srv.downs, 3000);
    ck_assert_int_eq(cli.close_code, 1003);
    ck_assert_int_eq(srv.nmsg, 0);
    ck_assert_ptr_nonnull(strstr(srv.reason, "sent close 1003"));
}
END_TEST

START_TEST(test_invalid_utf8)
{
    struct raw *r;
    unsigned char f[64];
    size_t n;

    r = raw_client_open();
    n = mkframe(f, 1, 1, "ok \xc0\x80", 5, M);
    raw_send(r, f, n);
    ck_assert_int_eq(raw_wait_close(r), 1007);
    ck_assert_int_eq(srv.nmsg, 0);
    RUN_UNTIL(raw_pump(r) && r->eof, 3000);
    ck_assert(r->eof);      /* we half-closed after the close frame */
    raw_free(r);
    RUN_UNTIL(srv.downs, 2000);
    ck_assert_str_eq(srv.reason, "invalid utf-8: sent close 1007");
}
END_TEST

START_TEST(test_unmasked_client_frame)
{
    struct raw *r;
    unsigned char f[64];
    size_t n;

    r = raw_client_open();
    n = mkframe(f, 1, 1, "naked", 5, NULL);
    raw_send(r, f, n);
    ck_assert_int_eq(raw_wait_close(r), 1002);
    ck_assert_int_eq(srv.nmsg, 0);
    raw_free(r);
    RUN_UNTIL(srv.downs, 2000);
    ck_assert_int_eq(srv.downs, 1);
}
END_TEST

START_TEST(test_malformed_frame)
{
    struct raw *r;
    unsigned char f[300], pay[200];
    size_t n;

    memset(pay, 'p', sizeof(pay));
    r = raw_client_open();
    n = mkframe(f, 1, 9, pay, 130, M);      /* a ping over 125 bytes */
    raw_send(r, f, n);
    ck_assert_int_eq(raw_wait_close(r), 1002);
    raw_free(r);
    RUN_UNTIL(srv.downs, 2000);
    ck_assert_str_eq(srv.reason,
        "protocol error: malformed frame: sent close 1002");
}
END_TEST

/* ---- server handshake ---------------------------------------------------- */

static void
expect_refused(const char *req, size_t len, int status)
{
    struct raw *r;
    int got;

    r = raw_connect(srv_port);
    got = raw_request(r, req, len);
    ck_assert_msg(got == status, "got %d, want %d for %.40s", got, status,
        req);
    RUN_UNTIL(raw_pump(r) && r->eof, 2000);
    ck_assert(r->eof);
    raw_free(r);
}

START_TEST(test_handshake_refusals)
{
    static const char bad_version[] =
        RAW_REQ("/ws", "Sec-WebSocket-Version: 12\r\n");
    static const char no_key[] =
        "GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
        "Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\n\r\n";
    static const char plain[] =
        "GET /ws HTTP/1.1\r\nHost: x\r\n\r\n";
    static const char unknown[] =
        RAW_REQ("/nope", "Sec-WebSocket-Version: 13\r\n");
    static const char garbage[] = "\x16\x03\x01 hello\r\n\r\n";
    char big[XG_WSPROTO_MAX_HEAD + 1000];
    int i;

    expect_refused(garbage, sizeof(garbage) - 1, 400);
    expect_refused(bad_version, sizeof(bad_version) - 1, 400);
    expect_refused(no_key, sizeof(no_key) - 1, 400);
    expect_refused(plain, sizeof(plain) - 1, 426);
    expect_refused(unknown, sizeof(unknown) - 1, 404);
    ck_assert_str_eq(srvs[4].path, "/nope");
    srvs[5].path_status = 503;
    expect_refused(unknown, sizeof(unknown) - 1, 503);
    memset(big, 'a', sizeof(big));
    memcpy(big, "GET /ws HTTP/1.1\r\nX: ", 21);
    expect_refused(big, sizeof(big), 431);
    RUN_UNTIL(srvs[0].downs + srvs[1].downs + srvs[2].downs
        + srvs[3].downs + srvs[4].downs + srvs[5].downs
        + srvs[6].downs == 7, 2000);
    ck_assert_int_eq(srvs[0].http_status, 400);
    ck_assert_str_eq(srvs[1].reason,
        "handshake refused: 400 Sec-WebSocket-Version is not 13");
    ck_assert_int_eq(srvs[3].http_status, 426);
    ck_assert_int_eq(srvs[4].http_status, 404);
    ck_assert_int_eq(srvs[5].http_status, 503);
    ck_assert_int_eq(srvs[6].http_status, 431);
    for (i = 0; i < 7; i++) {
        ck_assert_int_eq(srvs[i].opened, 0);
        ck_assert_int_eq(srvs[i].downs, 1);
    }
}
END_TEST

START_TEST(test_handshake_deadline_and_eof)
{
    struct raw *r;

    srv_opts.handshake_timeout_ms = 150;
    r = raw_connect(srv_port);
    raw_send(r, "GET /ws HTTP/1.1\r\nHo", 20);
    RUN_UNTIL(srvs[0].downs, 2000);
    ck_assert_str_eq(srvs[0].reason, "handshake timeout");
    raw_free(r);
    r = raw_connect(srv_port);
    raw_send(r, "GET /ws HTTP/1.1\r\nHo", 20);
    RUN_UNTIL(nsrv == 2, 2000);
    raw_free(r);            /* gone mid-handshake */
    RUN_UNTIL(srvs[1].downs, 2000);
    ck_assert_str_eq(srvs[1].reason, "eof during the handshake");
    ck_assert_int_eq(srvs[1].opened, 0);
}
END_TEST

/* ---- client handshake ------------------------------------------------------ */

START_TEST(test_bytes_glued_to_101)
{
    struct raw *r;
    char key[25], acc[29], resp[512];
    unsigned char f[64];
    size_t n;
    int lfd;
    uint16_t port;
    struct xg_ws_opts o;

    default_opts(&o);
    lfd = raw_listen(&port);
    r = raw_server_accept(lfd, &o, key);
    xg_wsproto_accept(key, 24, acc);
    n = (size_t) snprintf(resp, sizeof(resp), "HTTP/1.1 101 Switching "
        "Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        "Sec-WebSocket-Accept: %s\r\n\r\n", acc);
    memcpy(resp + n, f, mkframe(f, 1, 1, "glued", 5, NULL));
    n += 7;
    n += mkframe((unsigned char *) resp + n, 1, 2, "\x00\x01", 2, NULL);
    raw_send(r, resp, n);
    RUN_UNTIL(cli.nmsg == 2 || cli.downs, 2000);
    ck_assert_int_eq(cli.opened, 1);
    ck_assert_int_eq(cli.nmsg, 2);
    ck_assert_int_eq(cli.binary, 1);
    ck_assert_uint_eq(cli.msg_len, 2);
    /* Our client masks what it sends. */
    xg_ws_send_text(cli.ws, "masked?", 7);
    RUN_UNTIL(raw_pump(r) && r->len >= 13, 2000);
    ck_assert_uint_eq(r->len, 13);
    ck_assert_int_eq(r->buf[1], 0x80 | 7);
    ck_assert(memcmp(r->buf + 6, "masked?", 7) != 0);
    raw_free(r);
    close(lfd);
    RUN_UNTIL(cli.downs, 2000);
    ck_assert_str_eq(cli.reason, "eof");
}
END_TEST

/* Our client (options O) opened against a raw server that answered 101;
   LFD its listener. */
static struct raw *
raw_server_open_opts(int *lfd, struct xg_ws_opts *o)
{
    struct raw *r;
    char key[25], acc[29], resp[512];
    uint16_t port;
    int n;

    *lfd = raw_listen(&port);
    r = raw_server_accept(*lfd, o, key);
    xg_wsproto_accept(key, 24, acc);
    n = snprintf(resp, sizeof(resp), "HTTP/1.1 101 Switching "
        "Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        "Sec-WebSocket-Accept: %s\r\n\r\n", acc);
    raw_send(r, resp, (size_t) n);
    RUN_UNTIL(cli.opened || cli.downs, 2000);
    ck_assert_int_eq(cli.opened, 1);
    return r;
}

/* Our client opened against a raw server that answered 101; LFD its. */
static struct raw *
raw_server_open(int *lfd)
{
    struct xg_ws_opts o;

    default_opts(&o);
    return raw_server_open_opts(lfd, &o);
}

/* Our client, given BUF in one send: its messages, then its close code. */
static void
client_gets(struct xg_ws_opts *o, const unsigned char *buf, size_t n,
    int nmsg)
{
    struct raw *r;
    int lfd;

    free(cli.msg);
    memset(&cli, 0, sizeof(cli));
    r = raw_server_open_opts(&lfd, o);
    raw_send(r, buf, n);
    RUN_UNTIL(cli.downs, 3000);
    ck_assert_int_eq(cli.nmsg, nmsg);
    raw_free(r);
    close(lfd);
}

/*
 * Whole unfragmented text frames glued in one read (what an upstream
 * receives most), next to the frames that are not such and must get what
 * they got from wslay: each refused as before, the messages before them
 * delivered as sent. 7-bit, 16-bit and empty payloads; then a masked text
 * frame (1002), a 16-bit length that fits 7 bits (1002), a text frame
 * over max_message (1009), a close from the server (its code), a
 * fragmented text message whose continuation is glued to its start, and
 * bad UTF-8 in a whole frame (1007).
 */
START_TEST(test_client_whole_frames)
{
    unsigned char buf[4096], pay[1200];
    struct xg_ws_opts o;
    size_t n;

    default_opts(&o);
    memset(pay, 'p', sizeof(pay));
    n = mkframe(buf, 1, 1, "one", 3, NULL);
    n += mkframe(buf + n, 1, 1, pay, 200, NULL);
    n += mkframe(buf + n, 1, 1, "", 0, NULL);
    n += mkframe(buf + n, 1, 1, "four", 4, NULL);
    n += mkframe(buf + n, 1, 1, "masked", 6, M);
    n += mkframe(buf + n, 1, 1, "after", 5, NULL);
    client_gets(&o, buf, n, 4);
    ck_assert(cli.msg_len == 4 && memcmp(cli.msg, "four", 4) == 0);
    ck_assert_msg(strstr(cli.reason, "1002") != NULL, "%s", cli.reason);

    n = mkframe(buf, 1, 1, "one", 3, NULL);
    buf[n++] = 0x81;
    buf[n++] = 126;
    buf[n++] = 0;
    buf[n++] = 5;
    memcpy(buf + n, "short", 5);
    n += 5;
    client_gets(&o, buf, n, 1);
    ck_assert_msg(strstr(cli.reason, "1002") != NULL, "%s", cli.reason);

    o.max_message = 1000;
    n = mkframe(buf, 1, 1, pay, 1000, NULL);
    n += mkframe(buf + n, 1, 1, pay, 1001, NULL);
    n += mkframe(buf + n, 1, 1, "after", 5, NULL);
    client_gets(&o, buf, n, 1);
    ck_assert_uint_eq(cli.msg_len, 1000);
    ck_assert_msg(strstr(cli.reason, "1009") != NULL, "%s", cli.reason);
    default_opts(&o);

    n = mkframe(buf, 1, 1, "one", 3, NULL);
    n += mkframe(buf + n, 1, 1, "two", 3, NULL);
    n += mkframe(buf + n, 1, 8, "\x03\xe9" "bye", 5, NULL);
    n += mkframe(buf + n, 1, 1, "after", 5, NULL);
    client_gets(&o, buf, n, 2);
    ck_assert(cli.msg_len == 3 && memcmp(cli.msg, "two", 3) == 0);
    ck_assert_int_eq(cli.close_code, 1001);

    n = mkframe(buf, 0, 1, "fr", 2, NULL);
    n += mkframe(buf + n, 1, 0, "ag", 2, NULL);
    n += mkframe(buf + n, 1, 1, "next", 4, NULL);
    n += mkframe(buf + n, 1, 1, "bad \xc0\x80", 6, NULL);
    n += mkframe(buf + n, 1, 1, "after", 5, NULL);
    client_gets(&o, buf, n, 2);
    ck_assert(cli.msg_len == 4 && memcmp(cli.msg, "next", 4) == 0);
    ck_assert_msg(strstr(cli.reason, "1007") != NULL, "%s", cli.reason);
}
END_TEST

/*
 * Whole text frames glued in one read, the owner closing or freeing the
 * connection from on_message at the first: a close goes on with the
 * messages already read (wslay did the same), our close frame goes out and
 * the connection ends at the close timeout; a free delivers no more.
 */
START_TEST(test_client_whole_frames_owner)
{
    unsigned char buf[256];
    struct raw *r;
    size_t n;
    int lfd;

    n = mkframe(buf, 1, 1, "one", 3, NULL);
    n += mkframe(buf + n, 1, 1, "two", 3, NULL);
    n += mkframe(buf + n, 1, 1, "three", 5, NULL);
    r = raw_server_open(&lfd);
    cli.close_in_msg = 1000;
    raw_send(r, buf, n);
    RUN_UNTIL(cli.downs, 3000);
    ck_assert_int_eq(cli.nmsg, 3);
    ck_assert(cli.msg_len == 5 && memcmp(cli.msg, "three", 5) == 0);
    ck_assert_str_eq(cli.reason, "close timeout");
    RUN_UNTIL(raw_pump(r) && r->len >= 8, 500);
    ck_assert_uint_ge(r->len, 8);
    ck_assert_int_eq(r->buf[0], 0x88);         /* our close, masked */
    ck_assert_int_eq((r->buf[6] ^ r->buf[2]) << 8 | (r->buf[7] ^ r->buf[3]),
        1000);
    raw_free(r);
    close(lfd);

    free(cli.msg);
    memset(&cli, 0, sizeof(cli));
    n = mkframe(buf, 1, 1, "one", 3, NULL);
    n += mkframe(buf + n, 1, 1, "two", 3, NULL);
    r = raw_server_open(&lfd);
    cli.free_in_msg = 1;
    raw_send(r, buf, n);
    RUN_UNTIL(cli.nmsg > 1, 300);
    ck_assert_int_eq(cli.nmsg, 1);
    ck_assert_int_eq(cli.downs, 0);
    raw_free(r);
    close(lfd);
}
END_TEST

/*
 * What a client connection receives: text (UTF-8, one frame and
 * fragmented around a ping), then binary, all glued in one send, arrive
 * as sent and as text or binary; text that is not UTF-8 closes with 1007;
 * a frame with RSV1 set (no extension was agreed) with 1002. Guards the
 * receive path that spares wslay's byte-at-a-time UTF-8 check.
 */
START_TEST(test_client_receives_text_binary)
{
    unsigned char buf[256];
    struct raw *r;
    size_t n = 0;
    int lfd;

    r = raw_server_open(&lfd);
    n += mkframe(buf + n, 1, 1, "h\xc3\xa9llo", 6, NULL);
    n += mkframe(buf + n, 0, 1, "fr", 2, NULL);
    n += mkframe(buf + n, 1, 9, "pi", 2, NULL);             /* a ping */
    n += mkframe(buf + n, 1, 0, "ag \xe2\x82\xac", 6, NULL);
    raw_send(r, buf, n);
    RUN_UNTIL(cli.nmsg == 2 || cli.downs, 2000);
    ck_assert_int_eq(cli.nmsg, 2);
    ck_assert_int_eq(cli.binary, 0);
    ck_assert_uint_eq(cli.msg_len, 8);
    ck_assert(memcmp(cli.msg, "frag \xe2\x82\xac", 8) == 0);
    n = mkframe(buf, 1, 2, "\xff\xfe", 2, NULL);
    n += mkframe(buf + n, 1, 1, "text", 4, NULL);
    raw_send(r, buf, n);
    RUN_UNTIL(cli.nmsg == 4 || cli.downs, 2000);
    ck_assert_int_eq(cli.nmsg, 4);
    ck_assert_int_eq(cli.binary, 0);
    ck_assert(memcmp(cli.msg, "text", 4) == 0);
    n = mkframe(buf, 1, 1, "ok \xc0\x80", 5, NULL);
    raw_send(r, buf, n);
    RUN_UNTIL(cli.downs, 3000);
    ck_assert_int_eq(cli.nmsg, 4);
    ck_assert_msg(strstr(cli.reason, "1007") != NULL, "%s", cli.reason);
    raw_free(r);
    close(lfd);

    free(cli.msg);
    memset(&cli, 0, sizeof(cli));
    r = raw_server_open(&lfd);
    n = mkframe(buf, 1, 1, "rsv1", 4, NULL);
    buf[0] |= 0x40;
    raw_send(r, buf, n);
    RUN_UNTIL(cli.downs, 3000);
    ck_assert_int_eq(cli.nmsg, 0);
    ck_assert_msg(strstr(cli.reason, "1002") != NULL, "%s", cli.reason);
    raw_free(r);
    close(lfd);
}
END_TEST

/*
 * The same walk when many frames come in one read, each header whole
 * (read in place, not byte by byte): 7-bit, 16-bit and 64-bit lengths,
 * text, binary whose bytes look like frame headers, a fragmented message
 * around a ping, a frame that ends the read exactly and one cut by it.
 * Each message arrives as sent and typed, and a frame with RSV1 set is
 * still refused with 1002 (tagged RSV2 as well).
 */
START_TEST(test_client_rx_tag_glued)
{
    const size_t big = 70000;
    unsigned char *buf = xg_malloc(2 * big + 256), *pay = xg_malloc(big);
    struct raw *r;
    size_t n = 0, i, cut;
    int lfd;

    for (i = 0; i < big; i++) {
        pay[i] = (unsigned char) (i * 7);       /* 0x81 0x7e ... too */
    }
    r = raw_server_open(&lfd);
    n += mkframe(buf + n, 1, 1, "h\xc3\xa9llo", 6, NULL);
    n += mkframe(buf + n, 1, 2, pay, 300, NULL);
    n += mkframe(buf + n, 1, 2, pay, big, NULL);
    n += mkframe(buf + n, 0, 1, "frag", 4, NULL);
    n += mkframe(buf + n, 1, 9, "pi", 2, NULL);
    n += mkframe(buf + n, 1, 0, " \xe2\x82\xac", 4, NULL);
    cut = n;
    memset(pay, 'a', 300);
    n += mkframe(buf + n, 1, 1, pay, 300, NULL);
    raw_send(r, buf, cut + 3);      /* the last header cut by the read */
    RUN_UNTIL(cli.nmsg == 4 || cli.downs, 5000);
    ck_assert_int_eq(cli.nmsg, 4);
    ck_assert(cli.msg_len == 8 && memcmp(cli.msg, "frag \xe2\x82\xac", 8)
        == 0);
    raw_send(r, buf + cut + 3, n - cut - 3);
    RUN_UNTIL(cli.nmsg == 5 || cli.downs, 2000);
    ck_assert_int_eq(cli.nmsg, 5);
    ck_assert_int_eq(cli.binary, 0);
    ck_assert(cli.msg_len == 300 && memcmp(cli.msg, pay, 300) == 0);
    n = mkframe(buf, 1, 1, "text", 4, NULL);
    n += mkframe(buf + n, 1, 1, "rsv1", 4, NULL);
    buf[6] |= 0x40;
    raw_send(r, buf, n);
    RUN_UNTIL(cli.downs, 3000);
    ck_assert_int_eq(cli.nmsg, 6);
    ck_assert(cli.msg_len == 4 && memcmp(cli.msg, "text", 4) == 0);
    ck_assert_msg(strstr(cli.reason, "1002") != NULL, "%s", cli.reason);
    free(buf);
    free(pay);
    raw_free(r);
    close(lfd);
}
END_TEST

/*
 * Sends N bytes to our client in pieces of 1 to 4096 bytes (most of them
 * a few bytes, so frame headers are cut anywhere), running the loop after
 * each piece so that each is read on its own.
 */
static void
raw_send_split(struct raw *r, const unsigned char *p, size_t n)
{
    static const size_t sizes[] = { 1, 2, 1, 3, 5, 1, 8, 13, 1, 4096 };
    size_t off = 0, k = 0, t;

    while (off < n) {
        t = sizes[k++ % XG_NELEM(sizes)];
        if (t > n - off) {
            t = n - off;
        }
        raw_send(r, p + off, t);
        off += t;
        event_base_loop(base, EVLOOP_NONBLOCK);
        event_base_loop(base, EVLOOP_NONBLOCK);
    }
}

/*
 * The walk over received frame headers that tags text for wslay
 * (ws_rx_tag) stays in step with wslay when headers and payloads arrive
 * cut anywhere: 7-bit, 16-bit and 64-bit lengths, text and binary (whose
 * bytes look like frame headers), a fragmented message around a ping.
 * Each message arrives as sent and typed, the connection stays open, and
 * at the end the tag is still in step (see the last step).
 */
START_TEST(test_client_rx_tag_split)
{
    const size_t big = 70000;
    unsigned char *buf = xg_malloc(big + 64), *pay = xg_malloc(big);
    struct raw *r;
    size_t n, i;
    int lfd, k = 0;

    r = raw_server_open(&lfd);
    n = mkframe(buf, 1, 1, "h\xc3\xa9llo", 6, NULL);
    raw_send_split(r, buf, n);
    RUN_UNTIL(cli.nmsg == ++k || cli.downs, 2000);
    ck_assert_int_eq(cli.nmsg, k);
    ck_assert(cli.msg_len == 6 && memcmp(cli.msg, "h\xc3\xa9llo", 6) == 0);

    for (i = 0; i < big; i++) {
        pay[i] = (unsigned char) (i * 7);       /* 0x81 0x7e ... too */
    }
    n = mkframe(buf, 1, 2, pay, big, NULL);
    raw_send_split(r, buf, n);
    RUN_UNTIL(cli.nmsg == ++k || cli.downs, 5000);
    ck_assert_int_eq(cli.nmsg, k);
    ck_assert_int_eq(cli.binary, 1);
    ck_assert(cli.msg_len == big && memcmp(cli.msg, pay, big) == 0);

    memset(pay, 'a', big);
    memcpy(pay + 297, "\xe2\x82\xac", 3);
    n = mkframe(buf, 1, 1, pay, 300, NULL);
    raw_send_split(r, buf, n);
    RUN_UNTIL(cli.nmsg == ++k || cli.downs, 2000);
    ck_assert_int_eq(cli.nmsg, k);
    ck_assert_int_eq(cli.binary, 0);
    ck_assert(cli.msg_len == 300 && memcmp(cli.msg, pay, 300) == 0);

    memcpy(pay + big - 3, "\xe2\x82\xac", 3);
    n = mkframe(buf, 1, 1, pay, big, NULL);
    raw_send_split(r, buf, n);
    RUN_UNTIL(cli.nmsg == ++k || cli.downs, 5000);
    ck_assert_int_eq(cli.nmsg, k);
    ck_assert_int_eq(cli.binary, 0);
    ck_assert(cli.msg_len == big && memcmp(cli.msg, pay, big) == 0);

    n = mkframe(buf, 0, 1, "frag", 4, NULL);
    n += mkframe(buf + n, 1, 9, "pi", 2, NULL);
    n += mkframe(buf + n, 1, 0, " \xe2\x82\xac", 4, NULL);
    n += mkframe(buf + n, 1, 1, "last", 4, NULL);
    raw_send_split(r, buf, n);
    k += 2;
    RUN_UNTIL(cli.nmsg == k || cli.downs, 2000);
    ck_assert_int_eq(cli.nmsg, k);
    ck_assert(cli.msg_len == 4 && memcmp(cli.msg, "last", 4) == 0);
    ck_assert_int_eq(cli.downs, 0);

    /*
     * Still in step after all that: the first fragment of a text message
     * that is not UTF-8 is left unchecked by wslay (tagged), so nothing
     * closes before the message ends (our client sends nothing: its
     * pong to the ping above was read first); then exgate's check closes
     * 1007. Out of step, wslay would check it and send its close at once.
     */
    RUN_UNTIL(raw_pump(r) && 0, 100);  /* 100 ms, reading what came */
    r->len = 0;
    n = mkframe(buf, 0, 1, "bad \xc0\x80", 6, NULL);
    raw_send_split(r, buf, n);
    RUN_UNTIL(raw_pump(r) && r->len > 0, 300);
    ck_assert_uint_eq(r->len, 0);
    ck_assert_int_eq(cli.downs, 0);
    n = mkframe(buf, 1, 0, " end", 4, NULL);
    raw_send_split(r, buf, n);
    RUN_UNTIL(cli.downs, 3000);
    ck_assert_int_eq(cli.nmsg, k);
    ck_assert_msg(strstr(cli.reason, "1007") != NULL, "%s", cli.reason);
    free(buf);
    free(pay);
    raw_free(r);
    close(lfd);
}
END_TEST

static void
client_against(const char *answer, struct xg_ws_opts *o)
{
    struct raw *r;
    char key[25];
    int lfd;
    uint16_t port;

    lfd = raw_listen(&port);
    r = raw_server_accept(lfd, o, key);
    if (answer != NULL) {
        raw_send(r, answer, strlen(answer));
    } else {
        close(r->fd);
        r->fd = -1;
    }
    RUN_UNTIL(cli.downs, 3000);
    ck_assert_int_eq(cli.downs, 1);
    ck_assert_int_eq(cli.opened, 0);
    raw_free(r);
    close(lfd);
}

START_TEST(test_non101_retry_after)
{
    struct xg_ws_opts o;

    default_opts(&o);
    client_against("HTTP/1.1 429 Too Many Requests\r\nRetry-After: 7\r\n"
        "Content-Length: 5\r\n\r\nslow!", &o);
    ck_assert_int_eq(cli.http_status, 429);
    ck_assert_int_eq(cli.retry_after_s, 7);
    ck_assert_str_eq(cli.reason, "http 429, retry after 7s");
    memset(&cli, 0, sizeof(cli));
    client_against("HTTP/1.1 503 Service Unavailable\r\n\r\n", &o);
    ck_assert_int_eq(cli.http_status, 503);
    ck_assert_int_eq(cli.retry_after_s, -1);
    ck_assert_str_eq(cli.reason, "http 503");
}
END_TEST

START_TEST(test_bad_101)
{
    struct xg_ws_opts o;

    default_opts(&o);
    client_against("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
        "Connection: Upgrade\r\nSec-WebSocket-Accept: "
        "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n", &o);
    ck_assert_str_eq(cli.reason, "handshake: bad Sec-WebSocket-Accept");
    ck_assert_int_eq(cli.http_status, 0);
    memset(&cli, 0, sizeof(cli));
    client_against("SSH-2.0-OpenSSH_9.2\r\n\r\n", &o);
    ck_assert_str_eq(cli.reason, "handshake: bad status line");
    memset(&cli, 0, sizeof(cli));
    client_against(NULL, &o);
    ck_assert_str_eq(cli.reason, "eof during the handshake");
    memset(&cli, 0, sizeof(cli));
    {
        char big[XG_WSPROTO_MAX_HEAD + 2000], want[64];
        memset(big, 'h', sizeof(big) - 1);
        big[sizeof(big) - 1] = '\0';
        memcpy(big, "HTTP/1.1 101 OK\r\nX: ", 20);
        client_against(big, &o);
        snprintf(want, sizeof(want), "handshake: response head over %d "
            "bytes", XG_WSPROTO_MAX_HEAD);
        ck_assert_str_eq(cli.reason, want);
    }
    memset(&cli, 0, sizeof(cli));
    o.handshake_timeout_ms = 150;
    client_against("HTTP/1.1 101 Switching", &o);
    ck_assert_str_eq(cli.reason, "handshake timeout");
}
END_TEST

START_TEST(test_extra_headers)
{
    struct xg_header h[2] = {
        { "X-Api-Key", "abc" }, { "User-Agent", "bot/1" }
    };
    struct xg_ws_opts o;
    struct raw *r;
    char key[25];
    int lfd;
    uint16_t port;

    default_opts(&o);
    o.headers = h;
    o.nheaders = 2;
    lfd = raw_listen(&port);
    r = raw_server_accept(lfd, &o, key);
    ck_assert_ptr_nonnull(strstr(last_req, "\r\nX-Api-Key: abc\r\n"));
    ck_assert_ptr_nonnull(strstr(last_req, "\r\nUser-Agent: bot/1\r\n"));
    ck_assert_ptr_null(strstr(last_req, "exgate/"));
    ck_assert_ptr_nonnull(strstr(last_req, "\r\nHost: 127.0.0.1:"));
    raw_free(r);
    close(lfd);
    RUN_UNTIL(cli.downs, 2000);
    ck_assert_int_eq(cli.downs, 1);
}
END_TEST

START_TEST(test_connect_refused)
{
    struct xg_ws_opts o;
    int lfd;
    uint16_t port;

    lfd = raw_listen(&port);
    close(lfd);         /* a port nobody listens on */
    default_opts(&o);
    connect_client(&o, port, "/ws");
    ck_assert_int_eq(cli.downs, 0);
    ck_assert_int_eq(xg_ws_state(cli.ws), XG_WS_CONNECTING);
    RUN_UNTIL(cli.downs, 2000);
    ck_assert_int_eq(cli.downs, 1);
    ck_assert_int_eq(cli.cb_in_connect, 0);
    ck_assert_msg(strstr(cli.reason, "Connection refused") != NULL, "%s",
        cli.reason);
}
END_TEST

START_TEST(test_dns_hosts_fallback)
{
    struct evdns_base *dns;
    struct xg_ws_opts o;
    struct xg_url u;
    char path[] = "/tmp/xg_ws_hosts_XXXXXX";
    int fd;
    const char hosts[] = "::1 xg-ws-test.invalid\n"
        "127.0.0.1 xg-ws-test.invalid\n";

    fd = mkstemp(path);
    ck_assert_int_ge(fd, 0);
    ck_assert_int_eq(write(fd, hosts, sizeof(hosts) - 1),
        (ssize_t) sizeof(hosts) - 1);
    close(fd);
    dns = evdns_base_new(base, 0);
    ck_assert_int_eq(evdns_base_load_hosts(dns, path), 0);
    unlink(path);
    default_opts(&o);
    memset(&u, 0, sizeof(u));
    snprintf(u.host, sizeof(u.host), "xg-ws-test.invalid");
    u.port = srv_port;
    snprintf(u.path, sizeof(u.path), "/ws");
    cli.in_connect = 1;
    cli.ws = xg_ws_connect(base, dns, &u, &o, &cbs, &cli);
    cli.in_connect = 0;
    RUN_UNTIL(cli.opened || cli.downs, 3000);
    ck_assert_msg(cli.opened == 1, "%s", cli.reason);
    ck_assert_int_eq(cli.cb_in_connect, 0);
    ck_assert(strncmp(xg_ws_peer(cli.ws), "127.0.0.1:", 10) == 0);
    xg_ws_free(cli.ws);
    cli.ws = NULL;
    /* A free while the lookup is pending must not leak or call back. */
    evdns_base_nameserver_ip_add(dns, "127.0.0.1:9");
    snprintf(u.host, sizeof(u.host), "not-in-hosts.invalid");
    cli.ws = xg_ws_connect(base, dns, &u, &o, &cbs, &cli);
    RUN_UNTIL(0, 50);
    xg_ws_free(cli.ws);
    cli.ws = NULL;
    RUN_UNTIL(0, 50);
    ck_assert_int_eq(cli.downs, 0);
    evdns_base_free(dns, 1);
}
END_TEST

START_TEST(test_close_and_free_before_open)
{
    struct xg_ws_opts o;

    default_opts(&o);
    connect_client(&o, srv_port, "/ws");
    xg_ws_close(cli.ws, 1000, "never mind");
    ck_assert_int_eq(cli.downs, 0);
    RUN_UNTIL(cli.downs, 2000);
    ck_assert_int_eq(cli.downs, 1);
    ck_assert_int_eq(cli.by_us, 1);
    memset(&cli, 0, sizeof(cli));
    connect_client(&o, srv_port, "/ws");
    xg_ws_free(cli.ws);
    cli.ws = NULL;
    RUN_UNTIL(0, 100);
    ck_assert_int_eq(cli.downs, 0);
}
END_TEST


START_TEST(test_tls_deadline_and_eof)
{
    struct xg_ws_opts o;
    struct xg_url u;
    int lfd, fd;
    uint16_t port;

    default_opts(&o);
    o.connect_timeout_ms = 200;
    o.tls_verify = 0;
    lfd = raw_listen(&port);
    make_url(&u, port, "/ws");
    u.tls = 1;
    cli.ws = xg_ws_connect(base, NULL, &u, &o, &cbs, &cli);
    RUN_UNTIL(cli.downs || xg_ws_state(cli.ws) == XG_WS_TLS, 2000);
    ck_assert_msg(cli.downs == 0, "%s", cli.reason);
    ck_assert_int_eq(xg_ws_state(cli.ws), XG_WS_TLS);
    fd = accept(lfd, NULL, NULL);       /* and never answer the hello */
    RUN_UNTIL(cli.downs, 2000);
    ck_assert_str_eq(cli.reason, "tls handshake timeout");
    close(fd);
    memset(&cli, 0, sizeof(cli));
    o.connect_timeout_ms = 2000;
    cli.ws = xg_ws_connect(base, NULL, &u, &o, &cbs, &cli);
    RUN_UNTIL(cli.downs || xg_ws_state(cli.ws) == XG_WS_TLS, 2000);
    ck_assert_msg(cli.downs == 0, "%s", cli.reason);
    fd = accept(lfd, NULL, NULL);
    send(fd, "HTTP/1.1 400 Bad Request\r\n\r\n", 28, MSG_NOSIGNAL);
    close(fd);                          /* not tls at all */
    RUN_UNTIL(cli.downs, 2000);
    ck_assert_int_eq(cli.downs, 1);
    ck_assert_msg(strncmp(cli.reason, "tls: ", 5) == 0, "%s", cli.reason);
    close(lfd);
}
END_TEST

START_TEST(test_tls_ctx_cache_sees_rewrite)
{
    char path[] = "/tmp/xg_ws_ca_XXXXXX";
    char err[256];
    struct timespec ts[2];
    SSL_CTX *a, *b, *c;
    FILE *in, *out;
    static char buf[65536];
    const char *end;
    size_t n;
    int fd;

    /*
     * Any CA certificate will do (the cache, not trust, is under test):
     * the first whole one of the system bundle.
     */
    in = fopen("/etc/ssl/certs/ca-certificates.crt", "r");
    if (in == NULL) {
        return;     /* no system store here: nothing to load */
    }
    n = fread(buf, 1, sizeof(buf) - 1, in);
    fclose(in);
    buf[n] = '\0';
    end = strstr(buf, "-----END CERTIFICATE-----\n");
    ck_assert_ptr_nonnull(end);
    n = (size_t) (end - buf) + strlen("-----END CERTIFICATE-----\n");
    fd = mkstemp(path);
    ck_assert_int_ge(fd, 0);
    out = fdopen(fd, "w");
    ck_assert_uint_eq(fwrite(buf, 1, n, out), n);
    fclose(out);
    ts[0].tv_sec = ts[1].tv_sec = 1700000000;
    ts[0].tv_nsec = ts[1].tv_nsec = 100;
    ck_assert_int_eq(utimensat(AT_FDCWD, path, ts, 0), 0);
    a = xg_tls_client_ctx(path, err, sizeof(err));
    ck_assert_msg(a != NULL, "%s", err);
    b = xg_tls_client_ctx(path, err, sizeof(err));
    ck_assert_ptr_eq(a, b);         /* unchanged: the cached context */
    /*
     * Rewritten in place (same inode and size) within the same second:
     * only the nanoseconds of the mtime tell, and they must be enough.
     */
    ts[0].tv_nsec = ts[1].tv_nsec = 200;
    ck_assert_int_eq(utimensat(AT_FDCWD, path, ts, 0), 0);
    c = xg_tls_client_ctx(path, err, sizeof(err));
    ck_assert_msg(c != NULL, "%s", err);
    ck_assert_ptr_ne(c, a);
    SSL_CTX_free(a);
    SSL_CTX_free(b);
    SSL_CTX_free(c);
    xg_tls_cleanup();
    unlink(path);
}
END_TEST

START_TEST(test_no_resolver_literals_only)
{
    struct xg_ws_opts o;
    struct xg_url u;

    /* Without an evdns base a name is refused, never resolved blocking. */
    default_opts(&o);
    make_url(&u, 9, "/ws");
    snprintf(u.host, sizeof(u.host), "localhost");
    cli.ws = xg_ws_connect(base, NULL, &u, &o, &cbs, &cli);
    RUN_UNTIL(cli.downs, 2000);
    ck_assert_int_eq(cli.downs, 1);
    ck_assert_msg(strncmp(cli.reason, "dns: localhost: ", 16) == 0, "%s",
        cli.reason);
}
END_TEST

START_TEST(test_connect_deadline)
{
    struct xg_ws_opts o;
    struct sockaddr_in sin;
    int lfd, fill[8], i, n;
    uint16_t port;

    /* A listener whose backlog is full drops further SYNs. */
    lfd = raw_listen(&port);
    listen(lfd, 0);
    memset(&sin, 0, sizeof(sin));
    sin.sin_family = AF_INET;
    sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    sin.sin_port = htons(port);
    n = 0;
    for (i = 0; i < 8; i++) {
        fill[i] = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
        connect(fill[i], (struct sockaddr *) &sin, sizeof(sin));
        n++;
    }
    usleep(50000);
    default_opts(&o);
    o.connect_timeout_ms = 300;
    connect_client(&o, port, "/ws");
    RUN_UNTIL(cli.downs, 3000);
    ck_assert_int_eq(cli.downs, 1);
    ck_assert_msg(strncmp(cli.reason, "connect timeout", 15) == 0, "%s",
        cli.reason);
    for (i = 0; i < n; i++) {
        close(fill[i]);
    }
    close(lfd);
}
END_TEST


START_TEST(test_sync_failure_is_async)
{
    struct xg_ws_opts o;
    struct xg_url u;

    default_opts(&o);
    o.tls_ca = "/nonexistent/ca.pem";
    make_url(&u, srv_port, "/ws");
    u.tls = 1;
    cli.in_connect = 1;
    cli.ws = xg_ws_connect(base, NULL, &u, &o, &cbs, &cli);
    cli.in_connect = 0;
    ck_assert_ptr_nonnull(cli.ws);
    ck_assert_int_eq(cli.downs, 0);
    RUN_UNTIL(cli.downs, 2000);
    ck_assert_int_eq(cli.downs, 1);
    ck_assert_int_eq(cli.cb_in_connect, 0);
    ck_assert_str_eq(cli.reason,
        "tls: cannot load /nonexistent/ca.pem: No such file or directory");
}
END_TEST

START_TEST(test_close_timeout)
{
    struct raw *r;
    uint64_t t0;

    srv_opts.close_timeout_ms = 200;
    r = raw_client_open();
    xg_ws_close(srv.ws, 1001, "going");
    t0 = xg_now_ms();
    ck_assert_int_eq(raw_wait_close(r), 1001);  /* and never answer it */
    RUN_UNTIL(srv.downs, 2000);
    ck_assert_int_eq(srv.downs, 1);
    ck_assert_str_eq(srv.reason, "close timeout");
    ck_assert_int_eq(srv.by_us, 1);
    ck_assert_uint_ge(xg_now_ms() - t0, 150);
    RUN_UNTIL(raw_pump(r) && r->eof, 2000);
    ck_assert(r->eof);
    raw_free(r);
}
END_TEST


START_TEST(test_free_in_open_and_state)
{
    struct xg_ws_opts o;

    default_opts(&o);
    cli.free_in_open = 1;
    connect_client(&o, srv_port, "/ws");
    RUN_UNTIL(cli.opened && srv.downs, 2000);
    ck_assert_ptr_null(cli.ws);
    ck_assert_int_eq(cli.downs, 0);
    ck_assert_str_eq(srv.reason, "eof");
    /* A server freed in on_open drops its 101 unsent: at once means that. */
    memset(&cli, 0, sizeof(cli));
    srvs[1].free_in_open = 1;
    connect_client(&o, srv_port, "/ws");
    RUN_UNTIL(srvs[1].opened && cli.downs, 2000);
    ck_assert_ptr_null(srvs[1].ws);
    ck_assert_int_eq(srvs[1].downs, 0);
    ck_assert_str_eq(cli.reason, "eof during the handshake");
    memset(&cli, 0, sizeof(cli));
    cli.free_in_state = XG_WS_HANDSHAKE;
    connect_client(&o, srv_port, "/ws");
    RUN_UNTIL(cli.ws == NULL, 2000);
    ck_assert_int_eq(cli.states, 1);
    memset(&cli, 0, sizeof(cli));
    cli.free_in_state = XG_WS_OPEN;
    connect_client(&o, srv_port, "/ws");
    RUN_UNTIL(cli.ws == NULL, 2000);
    RUN_UNTIL(0, 50);
    ck_assert_int_eq(cli.opened, 0);
    ck_assert_int_eq(cli.downs, 0);
    ck_assert_int_eq(cli.cb_in_connect, 0);
}
END_TEST


/* Bytes malloc has handed out, mmapped blocks included. */
static size_t
heap_in_use(void)
{
    struct mallinfo2 mi = mallinfo2();

    return mi.uordblks + mi.hblkhd;
}

START_TEST(test_memory_follows_data)
{
    struct raw *r;
    unsigned char f[64];
    size_t n, before, after;

    srv_opts.max_message = 64u << 20;
    r = raw_client_open();
    before = heap_in_use();
    /* Announce a 60 MiB frame, send 10 bytes of it, and wait. */
    n = xg_wsproto_frame_header(f, 2, 60u << 20, M);
    memcpy(f + n, "0123456789", 10);
    raw_send(r, f, n + 10);
    RUN_UNTIL(0, 100);
    after = heap_in_use();
    ck_assert_msg(after < before + (1u << 20), "%zu -> %zu bytes", before,
        after);
    ck_assert_int_eq(srv.downs, 0);
    raw_free(r);
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
    tcase_add_test(tc, test_fragmented_and_ping);
    tcase_add_test(tc, test_fragmented_message);
    tcase_add_test(tc, test_keepalive_pings);
    tcase_add_test(tc, test_half_frame_then_stall);
    tcase_add_test(tc, test_fanout_frame);
    tcase_add_test(tc, test_direct_output_order);
    tcase_add_test(tc, test_read_more_and_counters);
    tcase_add_test(tc, test_client_receives_text_binary);
    tcase_add_test(tc, test_client_rx_tag_split);
    tcase_add_test(tc, test_client_rx_tag_glued);
    tcase_add_test(tc, test_client_whole_frames);
    tcase_add_test(tc, test_client_whole_frames_owner);
    tcase_add_test(tc, test_output_len_and_drain);
    tcase_add_test(tc, test_send_invalid_utf8_refused);
    tcase_add_test(tc, test_free_inside_callback);
    tcase_add_loop_test(tc, test_close_codes_client_first, 0,
        (int) XG_NELEM(codes));
    tcase_add_loop_test(tc, test_close_codes_server_first, 0,
        (int) XG_NELEM(codes));
    tcase_add_test(tc, test_close_from_on_message);
    tcase_add_test(tc, test_too_big);
    tcase_add_test(tc, test_too_big_fragmented);
    tcase_add_test(tc, test_text_only);
    tcase_add_test(tc, test_invalid_utf8);
    tcase_add_test(tc, test_unmasked_client_frame);
    tcase_add_test(tc, test_malformed_frame);
    tcase_add_test(tc, test_handshake_refusals);
    tcase_add_test(tc, test_handshake_deadline_and_eof);
    tcase_add_test(tc, test_bytes_glued_to_101);
    tcase_add_test(tc, test_non101_retry_after);
    tcase_add_test(tc, test_bad_101);
    tcase_add_test(tc, test_extra_headers);
    tcase_add_test(tc, test_connect_refused);
    tcase_add_test(tc, test_dns_hosts_fallback);
    tcase_add_test(tc, test_close_and_free_before_open);
    tcase_add_test(tc, test_tls_deadline_and_eof);
    tcase_add_test(tc, test_tls_ctx_cache_sees_rewrite);
    tcase_add_test(tc, test_no_resolver_literals_only);
    tcase_add_test(tc, test_connect_deadline);
    tcase_add_test(tc, test_sync_failure_is_async);
    tcase_add_test(tc, test_close_timeout);
    tcase_add_test(tc, test_free_in_open_and_state);
    tcase_add_test(tc, test_memory_follows_data);
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
    xg_tls_cleanup();
    return failed == 0 ? 0 : 1;
}
