/*
 * fuzz_binance.c: libFuzzer target for the Binance venue
 * (modules/venue/xg_venue_binance*.c) with the real parts, all on one
 * event base the run makes and frees: a binance upstream (spot or
 * USDⓈ-M, max_streams_per_connection 2 so that streams spread over child
 * shards) connected over loopback to an in-process exchange (WebSocket
 * server made with xg_ws_accept(), answering every SUBSCRIBE and
 * UNSUBSCRIBE unless told not to), an in-process REST server (evhttp) on
 * the upstream's rest_url for the trackers' snapshots and backfills, and
 * WebSocket clients over socketpairs that open with a real handshake, so
 * that the client path reaches the venue as it does in exgate.
 *
 * The input is split into lines; the first byte of a line says what it
 * is (D: a digit 0-9 taken mod what exists, N: a number):
 *
 *   F            (first line only) the USDⓈ-M upstream, else spot
 *   P<path>      a new client opening the WebSocket path <path>
 *   C<D><text>   client D sends <text> (one text frame)
 *   B<D><bytes>  client D sends a binary frame; I<D><bytes> a ping
 *   X<D>         client D closes its socket
 *   U<D><text>   exchange connection D sends <text> to the gateway
 *   K<D>         exchange connection D is dropped
 *   A            answer every control message the exchange holds
 *   M            toggle: the exchange answers control messages at once
 *   R<N> <body>  the next REST answer: status N, BODY (a held GET takes
 *                it at once)
 *   G<path>?<q>  the REST front's local depth (rest_local) for path, query
 *   O            rotate the upstream (as the admin does)
 *   J            the upstream's /status (the venue's and every shard's)
 *   L            reload: the other conf (other stale bounds, route path)
 *   S            stop the upstream (children included)
 *   W            run the loop 60 ms (timers: reconnects, retries), twice
 *                per run at most
 *
 * No crash, no leak: at the end everything is freed (clients, upstream
 * and its shards with their GETs in flight, servers).
 */
#include "xg_core.h"
#include "xg_client.h"
#include "xg_client_int.h"
#include "xg_conf.h"
#include "xg_listen.h"
#include "xg_log.h"
#include "xg_upstream.h"
#include "xg_venue.h"
#include "xg_ws.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <event2/event.h>
#include <event2/buffer.h>
#include <event2/http.h>
#include <event2/listener.h>
#include <jansson.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define FZ_CLIENTS  8
#define FZ_EX       16
#define FZ_HELD     16
#define FZ_ANSWERS  16

/* The conf: two upstreams (spot, usdm), each with a websocket listener. */
static const char conf_fmt[] =
    "error_log stderr error;\n"
    "upstream s {\n"
    "    url ws://127.0.0.1:%u/stream;\n"
    "    rest_url http://127.0.0.1:%u;\n"
    "    protocol binance;\n"
    "    market spot;\n"
    "    max_streams_per_connection 2;\n"
    "    ping 0ms;\n"
    "    reconnect fixed { delay 20ms; }\n"
    "    %s\n"
    "}\n"
    "upstream u {\n"
    "    url ws://127.0.0.1:%u%s;\n"
    "    rest_url http://127.0.0.1:%u;\n"
    "    protocol binance;\n"
    "    market usdm;\n"
    "    max_streams_per_connection 2;\n"
    "    ping 0ms;\n"
    "    reconnect fixed { delay 20ms; }\n"
    "    %s\n"
    "}\n"
    "listen 127.0.0.1:9 websocket upstream=s;\n"
    "listen 127.0.0.1:10 websocket upstream=u;\n"
    "client_auth off;\n"
    "client_max_message 64k;\n"
    "client_max_channels 6;\n"
    "unsubscribe_linger 0ms;\n";

struct fz_held {
    struct evhttp_request *req;
};

struct fz_answer {
    int     status;
    char   *body;
    size_t  len;
};

/* One run's harness state (the harness's, not exgate's). */
static struct {
    struct event_base      *base;
    struct evconnlistener  *ex_l;
    struct xg_ws           *ex[FZ_EX];
    unsigned                nex;
    int                     hold_answers;
    json_t                 *pending;       /* control messages held */
    struct evhttp          *http;
    struct evhttp_request  *held[FZ_HELD];
    unsigned                nheld;
    struct fz_answer        ans[FZ_ANSWERS];
    unsigned                nans;
    int                     stopped;
} fz;

static int ex_fd = -1, rest_fd = -1;
static unsigned ex_port, rest_port;
static struct xg_ws_opts ex_opts;

static int
listen_any(unsigned *port)
{
    struct sockaddr_in sin;
    socklen_t sl = sizeof(sin);
    int fd = socket(AF_INET, SOCK_STREAM, 0), one = 1;

    if (fd < 0) {
        abort();
    }
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    memset(&sin, 0, sizeof(sin));
    sin.sin_family = AF_INET;
    sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (bind(fd, (struct sockaddr *) &sin, sizeof(sin)) != 0
        || listen(fd, 64) != 0
        || getsockname(fd, (struct sockaddr *) &sin, &sl) != 0)
    {
        abort();
    }
    evutil_make_socket_nonblocking(fd);
    *port = ntohs(sin.sin_port);
    return fd;
}

/* Connections a run left in a backlog are not the next run's. */
static void
drain_backlog(int fd)
{
    int c;

    while ((c = accept(fd, NULL, NULL)) >= 0) {
        close(c);
    }
}

/* ---- the exchange --------------------------------------------------------- */

static void
ex_answer(struct xg_ws *ws, json_t *msg)
{
    json_t *id = json_object_get(msg, "id");
    char *ids = id != NULL ? json_dumps(id, JSON_ENCODE_ANY) : NULL;
    char text[256];

    snprintf(text, sizeof(text), "{\"result\":null,\"id\":%s}",
        ids != NULL ? ids : "null");
    free(ids);
    (void) xg_ws_send_text(ws, text, strlen(text));
}

static void
ex_on_message(struct xg_ws *ws, int binary, const unsigned char *data,
    size_t len, void *arg)
{
    json_t *j = json_loadb((const char *) data, len, 0, NULL);

    if (j == NULL) {
        return;
    }
    if (fz.hold_answers) {
        json_object_set_new(j, "_conn", json_integer((intptr_t) arg));
        json_array_append_new(fz.pending, j);
        return;
    }
    ex_answer(ws, j);
    json_decref(j);
}

static void
ex_on_down(struct xg_ws *ws, const struct xg_ws_down *why, void *arg)
{
    fz.ex[(intptr_t) arg] = NULL;
    xg_ws_free(ws);
}

static const struct xg_ws_cbs ex_cbs = {
    NULL, NULL, ex_on_message, ex_on_down, NULL
};

static int
ex_check(struct xg_ws *ws, const char *path, void *arg)
{
    return 0;
}

static void
ex_accept(struct evconnlistener *l, evutil_socket_t fd, struct sockaddr *sa,
    int slen, void *arg)
{
    if (fz.nex == FZ_EX) {
        close(fd);
        return;
    }
    fz.ex[fz.nex] = xg_ws_accept(fz.base, fd, NULL, &ex_opts, ex_check,
        &ex_cbs, (void *) (intptr_t) fz.nex);
    fz.nex++;
}

/* Exchange connection D (mod those open), or NULL. */
static struct xg_ws *
ex_pick(unsigned d)
{
    unsigned i, k = 0, open = 0;

    for (i = 0; i < fz.nex; i++) {
        open += fz.ex[i] != NULL;
    }
    if (open == 0) {
        return NULL;
    }
    d %= open;
    for (i = 0; i < fz.nex; i++) {
        if (fz.ex[i] != NULL && k++ == d) {
            return fz.ex[i];
        }
    }
    return NULL;
}

static void
ex_answer_pending(void)
{
    size_t i;

    for (i = 0; i < json_array_size(fz.pending); i++) {
        json_t *j = json_array_get(fz.pending, i);
        json_int_t c = json_integer_value(json_object_get(j, "_conn"));

        if (c >= 0 && c < FZ_EX && fz.ex[c] != NULL) {
            ex_answer(fz.ex[c], j);
        }
    }
    json_array_clear(fz.pending);
}

/* ---- the REST server -------------------------------------------------- */

static void
rest_reply(struct evhttp_request *req, const struct fz_answer *a)
{
    struct evbuffer *b = evbuffer_new();

    evbuffer_add(b, a->body, a->len);
    evhttp_add_header(evhttp_request_get_output_headers(req),
        "Content-Type", "application/json");
    evhttp_send_reply(req, a->status, "x", b);
    evbuffer_free(b);
}

static void
rest_serve(void)
{
    unsigned i;

    while (fz.nheld > 0 && fz.nans > 0) {
        rest_reply(fz.held[0], &fz.ans[0]);
        free(fz.ans[0].body);
        for (i = 1; i < fz.nheld; i++) {
            fz.held[i - 1] = fz.held[i];
        }
        fz.nheld--;
        for (i = 1; i < fz.nans; i++) {
            fz.ans[i - 1] = fz.ans[i];
        }
        fz.nans--;
    }
}

static void
rest_on_close(struct evhttp_connection *evcon, void *arg)
{
    unsigned i, k = 0;

    /* the gateway cancelled: its held requests go with the connection */
    for (i = 0; i < fz.nheld; i++) {
        if (evhttp_request_get_connection(fz.held[i]) != evcon) {
            fz.held[k++] = fz.held[i];
        }
    }
    fz.nheld = k;
}

static void
rest_on_request(struct evhttp_request *req, void *arg)
{
    if (fz.nheld == FZ_HELD) {
        evhttp_send_error(req, 503, NULL);
        return;
    }
    evhttp_connection_set_closecb(evhttp_request_get_connection(req),
        rest_on_close, NULL);
    fz.held[fz.nheld++] = req;
    rest_serve();
}

/* ---- clients ---------------------------------------------------------------- */

static int cl_fd[FZ_CLIENTS];
static unsigned ncl;

static void
cl_write(int fd, const void *p, size_t len)
{
    if (write(fd, p, len) < 0) {
        /* a closed client: nothing to do */
    }
}

/* One masked frame (mask 0) of OPCODE with LEN bytes of P. */
static void
cl_frame(int fd, int opcode, const unsigned char *p, size_t len)
{
    unsigned char h[14];
    size_t n = 0;

    h[n++] = (unsigned char) (0x80 | opcode);
    if (len < 126) {
        h[n++] = (unsigned char) (0x80 | len);
    } else if (len < 65536) {
        h[n++] = 0x80 | 126;
        h[n++] = (unsigned char) (len >> 8);
        h[n++] = (unsigned char) len;
    } else {
        return;
    }
    memset(h + n, 0, 4);
    n += 4;
    cl_write(fd, h, n);
    cl_write(fd, p, len);
}

static void
cl_drain(void)
{
    char buf[65536];
    unsigned i;

    for (i = 0; i < ncl; i++) {
        while (cl_fd[i] >= 0 && read(cl_fd[i], buf, sizeof(buf)) > 0) {
            /* what the gateway sent: only its safety is checked */
        }
    }
}

static void
cl_open(struct xg_listener *l, const char *path, size_t len)
{
    char req[1024];
    int sv[2], n;

    if (ncl == FZ_CLIENTS || len > 700 || memchr(path, '\r', len) != NULL) {
        return;
    }
    if (socketpair(AF_UNIX, SOCK_STREAM, 0, sv) != 0) {
        abort();
    }
    evutil_make_socket_nonblocking(sv[1]);
    l->nclients++;
    xg_client_new_ws(l, sv[0], NULL);
    n = snprintf(req, sizeof(req), "GET %.*s HTTP/1.1\r\n"
        "Host: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
        "Sec-WebSocket-Version: 13\r\n\r\n", (int) len, path);
    cl_write(sv[1], req, (size_t) n);
    cl_fd[ncl++] = sv[1];
}

/* ---- the run ------------------------------------------------------------ */

static void
run_loop(void)
{
    int i;

    for (i = 0; i < 6; i++) {
        event_base_loop(fz.base, EVLOOP_NONBLOCK);
        cl_drain();
    }
}

static void
run_for(unsigned ms)
{
    struct timeval tv = { 0, (suseconds_t) ms * 1000 };

    event_base_loopexit(fz.base, &tv);
    event_base_dispatch(fz.base);
    run_loop();
}

static void
on_stopped(void *arg)
{
    fz.stopped = 1;
}

static struct xg_main_conf *
load(int other)
{
    char text[sizeof(conf_fmt) + 256];
    const char *stale = other ? "stale *@trade 5s; stale *@depth* 2s;" : "";
    char *errors = NULL;
    struct xg_main_conf *mc;

    snprintf(text, sizeof(text), conf_fmt, ex_port, rest_port, stale,
        ex_port, other ? "/fapi/stream" : "", rest_port, stale);
    mc = xg_conf_load_string("fuzz.conf", text, &errors);
    if (mc == NULL) {
        fprintf(stderr, "fuzz_binance: %s\n", errors ? errors : "?");
        abort();
    }
    free(errors);
    return mc;
}

static const struct xg_upstream_conf *
find_up(const struct xg_main_conf *mc, const char *name)
{
    const struct xg_upstream_conf *u;

    for (u = mc->upstreams; u != NULL; u = u->next) {
        if (strcmp(u->name, name) == 0) {
            return u;
        }
    }
    abort();
}

static unsigned
digit(const uint8_t *p, size_t len)
{
    return len > 0 && p[0] >= '0' && p[0] <= '9' ? (unsigned) (p[0] - '0')
                                                 : 0;
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static struct xg_main_conf *mc[2];
    struct xg_fanout *fo;
    struct xg_upstream *up;
    const struct xg_upstream_conf *ucf;
    const struct xg_listen_conf *lc;
    struct xg_listener l;
    const char *name;
    size_t i, start, len;
    int cur = 0, waits = 0;
    unsigned k;

    /* FUZZ_BINANCE_LOG=debug shows what a run did */
    xg_log_level = getenv("FUZZ_BINANCE_LOG") != NULL
        ? xg_log_level_parse(getenv("FUZZ_BINANCE_LOG")) : -1;
    if (mc[0] == NULL) {
        signal(SIGPIPE, SIG_IGN);
        ex_fd = listen_any(&ex_port);
        rest_fd = listen_any(&rest_port);
        ex_opts.max_message = 1 << 24;
        ex_opts.handshake_timeout_ms = 2000;
        ex_opts.close_timeout_ms = 100;
        mc[0] = load(0);
        mc[1] = load(1);
    }
    memset(&fz, 0, sizeof(fz));
    ncl = 0;
    drain_backlog(ex_fd);
    drain_backlog(rest_fd);
    fz.pending = json_array();
    fz.base = event_base_new();
    fo = xg_client_fanout_new(fz.base);
    if (fz.base == NULL || fo == NULL) {
        abort();
    }
    fz.ex_l = evconnlistener_new(fz.base, ex_accept, NULL,
        LEV_OPT_CLOSE_ON_FREE, 0, dup(ex_fd));
    fz.http = evhttp_new(fz.base);
    if (fz.ex_l == NULL || fz.http == NULL
        || evhttp_bind_listener(fz.http, evconnlistener_new(fz.base, NULL,
            NULL, LEV_OPT_CLOSE_ON_FREE, 0, dup(rest_fd))) == NULL)
    {
        abort();
    }
    evhttp_set_gencb(fz.http, rest_on_request, NULL);

    name = size > 0 && data[0] == 'F' ? "u" : "s";
    ucf = find_up(mc[0], name);
    up = xg_upstream_create(fz.base, NULL, ucf);
    if (up == NULL) {
        abort();
    }
    memset(&l, 0, sizeof(l));
    for (lc = mc[0]->listens; strcmp(lc->upstream_name, name) != 0;
         lc = lc->next)
    {
        /* the listener of that upstream */
    }
    l.lc = lc;
    l.gc = xg_gateway_conf_get(mc[0]);
    l.base = fz.base;
    l.fo = fo;
    l.up = up;
    l.pm = xg_venue_find("binance");
    l.pp = xg_upstream_proto(up);
    snprintf(l.addr, sizeof(l.addr), "fuzz");
    xg_upstream_start(up);
    run_loop();

    for (start = 0, i = 0; i <= size; i++) {
        const uint8_t *p;

        if (i < size && data[i] != '\n') {
            continue;
        }
        p = data + start + 1;
        len = i > start ? i - start - 1 : 0;
        if (i == start) {
            start = i + 1;
            continue;
        }
        switch (data[start]) {
        case 'P':
            cl_open(&l, (const char *) p, len);
            break;
        case 'C':
            k = digit(p, len);
            if (ncl > 0 && len > 0 && cl_fd[k % ncl] >= 0) {
                cl_frame(cl_fd[k % ncl], 1, p + 1, len - 1);
            }
            break;
        case 'B':
        case 'I':
            k = digit(p, len);
            if (ncl > 0 && len > 0 && cl_fd[k % ncl] >= 0) {
                cl_frame(cl_fd[k % ncl], data[start] == 'B' ? 2 : 9, p + 1,
                    len > 126 ? 125 : len - 1);
            }
            break;
        case 'J':
            json_decref(xg_upstream_status(up));
            break;
        case 'X':
            k = digit(p, len);
            if (ncl > 0 && cl_fd[k % ncl] >= 0) {
                close(cl_fd[k % ncl]);
                cl_fd[k % ncl] = -1;
            }
            break;
        case 'U': {
            struct xg_ws *ws = ex_pick(digit(p, len));

            if (ws != NULL && len > 0) {
                (void) xg_ws_send_text(ws, p + 1, len - 1);
            }
            break;
        }
        case 'K': {
            struct xg_ws *ws = ex_pick(digit(p, len));

            if (ws != NULL) {
                unsigned j;

                for (j = 0; j < fz.nex && fz.ex[j] != ws; j++) {
                }
                fz.ex[j] = NULL;
                xg_ws_free(ws);
            }
            break;
        }
        case 'A':
            ex_answer_pending();
            break;
        case 'M':
            fz.hold_answers ^= 1;
            break;
        case 'R':
            if (fz.nans < FZ_ANSWERS) {
                char *sp = memchr(p, ' ', len), num[8];
                struct fz_answer *a = &fz.ans[fz.nans++];
                size_t k = len < sizeof(num) - 1 ? len : sizeof(num) - 1;

                /* P is not NUL-terminated: strtol() on it ran past the
                   input when a record ended in digits */
                memcpy(num, p, k);
                num[k] = '\0';
                a->status = (int) strtol(num, NULL, 10);
                if (a->status < 100 || a->status > 599) {
                    a->status = 200;
                }
                a->len = sp != NULL ? len - (size_t) (sp + 1 - (char *) p)
                                    : 0;
                a->body = xg_malloc(a->len + 1);
                memcpy(a->body, sp != NULL ? sp + 1 : "", a->len);
                rest_serve();
            }
            break;
        case 'G': {
            char *s = xg_strndup((const char *) p, len), *q, *body;
            size_t blen;

            q = strchr(s, '?');
            if (q != NULL) {
                *q++ = '\0';
            }
            body = l.pm->rest_local(l.pp, s, q, &blen);
            free(body);
            free(s);
            break;
        }
        case 'O':
            (void) xg_upstream_rotate(up, "fuzz");
            break;
        case 'L':
            cur ^= 1;
            (void) xg_upstream_reconf(up, find_up(mc[cur], name),
                name[0] == 'u' ? "reload: url changed" : NULL);
            break;
        case 'S':
            if (!fz.stopped) {
                xg_upstream_stop(up, on_stopped, NULL);
            }
            break;
        case 'W':
            if (waits++ < 2) {
                run_for(60);
            }
            break;
        default:
            break;
        }
        start = i + 1;
        run_loop();
    }
    run_loop();

    for (k = 0; k < ncl; k++) {
        if (cl_fd[k] >= 0) {
            close(cl_fd[k]);
        }
    }
    run_loop();
    while (l.clients != NULL) {
        xg_client_free(l.clients, "fuzz done");
    }
    xg_upstream_free(up);
    for (k = 0; k < fz.nex; k++) {
        if (fz.ex[k] != NULL) {
            xg_ws_free(fz.ex[k]);
        }
    }
    evconnlistener_free(fz.ex_l);
    evhttp_free(fz.http);
    for (k = 0; k < fz.nans; k++) {
        free(fz.ans[k].body);
    }
    json_decref(fz.pending);
    xg_client_fanout_free(fo);
    event_base_free(fz.base);
    return 0;
}
