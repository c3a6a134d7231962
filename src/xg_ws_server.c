/*
 * xg_ws_server.c: the accepting side of the WebSocket transport (see
 * xg_ws.h): the connection made from an accepted socket or a given
 * bufferevent, its HTTP upgrade handshake (request parsed, 101 or an
 * error answered), and the send path of pre-encoded fan-out frames, which
 * only a server may use (its frames are unmasked). The connection itself,
 * wslay and the client side are in xg_ws.c.
 */
#include "xg_core.h"
#include "xg_frame.h"
#include "xg_io.h"
#include "xg_log.h"
#include "xg_ws.h"
#include "xg_ws_int.h"
#include "xg_wsproto.h"

#include <stdio.h>
#include <string.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <event2/util.h>
#include <openssl/err.h>

/* ---- server handshake -------------------------------------------------- */

static void
ws_srv_refuse(struct xg_ws *ws, int status, const char *error)
{
    char buf[512];
    struct evbuffer *in;
    size_t n;

    in = bufferevent_get_input(ws->bev);
    evbuffer_drain(in, evbuffer_get_length(in));
    bufferevent_disable(ws->bev, EV_READ);
    n = xg_wsproto_error_response(buf, sizeof(buf), status, error);
    evbuffer_add(bufferevent_get_output(ws->bev), buf, n);
    ws->http_status = status;
    ws_fail(ws, 1, "handshake refused: %d %s", status, error);
}

void
ws_srv_handshake(struct xg_ws *ws)
{
    struct xg_wsproto_req req;
    char accept[XG_WSPROTO_ACCEPT_LEN + 1];
    const char *p;
    ssize_t hl;
    int status;

    hl = ws_find_head(ws, &p);
    if (hl == 0) {
        return;
    }
    if (hl < 0) {
        ws_srv_refuse(ws, 431, "request head too large");
        return;
    }
    if (xg_wsproto_parse_request(p, (size_t) hl, &req) != XG_OK) {
        ws_srv_refuse(ws, req.status, req.error);
        return;
    }
    status = ws->check ? ws->check(ws, req.path, ws->arg) : 0;
    if (ws_dead(ws)) {
        return;
    }
    if (status != 0 && (status < 400 || status > 599)) {
        status = 500;   /* a refusal must be an error status */
    }
    if (status != 0) {
        ws_srv_refuse(ws, status, status == 404 ? "no such path"
            : xg_wsproto_status_text(status));
        return;
    }
    evbuffer_drain(bufferevent_get_input(ws->bev), (size_t) hl);
    xg_wsproto_accept(req.key, XG_WSPROTO_KEY_LEN, accept);
    evbuffer_add_printf(bufferevent_get_output(ws->bev),
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
        "Connection: Upgrade\r\nSec-WebSocket-Accept: %s\r\n\r\n", accept);
    ws_log(ws, XG_LOG_DEBUG, "upgrade %s", req.path);
    ws_open(ws);
}

/* ---- construction ---------------------------------------------------------- */

static struct xg_ws *
ws_accept_common(struct xg_ws *ws, xg_ws_accept_cb check)
{
    char name[400];

    ws->server = 1;
    ws->check = check;
    if (ws->name == NULL) {
        snprintf(name, sizeof(name), "ws client %s", ws->peer);
        ws->name = xg_strdup(name);
    }
    xg_timer_add_ms(ws->ev_deadline, ws->opts.handshake_timeout_ms);
    if (ws->bev != NULL) {
        bufferevent_setcb(ws->bev, ws_read_cb, ws_write_cb, ws_event_cb, ws);
        bufferevent_enable(ws->bev, EV_READ | EV_WRITE);
    }
    ws_log(ws, XG_LOG_DEBUG, "accepted%s", ws->tls ? " (tls)" : "");
    return ws;
}

struct xg_ws *
xg_ws_accept(struct event_base *base, evutil_socket_t fd, SSL_CTX *tls,
    const struct xg_ws_opts *opts, xg_ws_accept_cb check,
    const struct xg_ws_cbs *cbs, void *arg)
{
    struct xg_ws *ws;
    SSL *ssl;
    char err[512];

    ws = ws_new(base, opts, cbs, arg);
    if (opts->log_name != NULL) {
        ws->name = xg_strdup(opts->log_name);
    }
    xg_fd_peer(fd, ws->peer, sizeof(ws->peer));
    evutil_make_socket_nonblocking(fd);
    evutil_make_socket_closeonexec(fd);
    xg_fd_nodelay(fd);
    ws->tls = tls != NULL;
    ws->state = ws->tls ? XG_WS_TLS : XG_WS_HANDSHAKE;
    if (tls != NULL) {
        ERR_clear_error();
        ssl = SSL_new(tls);
        if (ssl == NULL) {
            evutil_closesocket(fd);
            ws_accept_common(ws, check);
            snprintf(err, sizeof(err), "SSL_new: ");
            ws_fail(ws, 0, "tls: %s", xg_log_ssl_errors(err, sizeof(err)));
            return ws;
        }
        ws->bev = bufferevent_openssl_socket_new(base, fd, ssl,
            BUFFEREVENT_SSL_ACCEPTING, BEV_OPT_CLOSE_ON_FREE);
        if (ws->bev != NULL) {
            bufferevent_openssl_set_allow_dirty_shutdown(ws->bev, 1);
        }
    } else {
        ws->bev = bufferevent_socket_new(base, fd, BEV_OPT_CLOSE_ON_FREE);
        ws->direct = opts->direct_output;
    }
    if (ws->bev != NULL) {
        ws_bev_tune(ws, ws->bev);
    }
    ws_accept_common(ws, check);
    if (ws->bev == NULL) {
        evutil_closesocket(fd);
        ws_fail(ws, 0, "cannot make a bufferevent");
    }
    return ws;
}

struct xg_ws *
xg_ws_accept_bev(struct event_base *base, struct bufferevent *bev,
    const char *peer, const struct xg_ws_opts *opts, xg_ws_accept_cb check,
    const struct xg_ws_cbs *cbs, void *arg)
{
    struct xg_ws *ws;

    ws = ws_new(base, opts, cbs, arg);
    if (opts->log_name != NULL) {
        ws->name = xg_strdup(opts->log_name);
    }
    snprintf(ws->peer, sizeof(ws->peer), "%s", peer ? peer : "pair");
    ws->state = XG_WS_HANDSHAKE;
    ws->bev = bev;
    ws_bev_tune(ws, bev);
    return ws_accept_common(ws, check);
}
/* ---- fan-out frames (src/xg_frame.c) -------------------------------------- */

static void
frame_cleanup(const void *data, size_t len, void *extra)
{
    xg_frame_unref(extra);
}

int
xg_ws_send_frame(struct xg_ws *ws, struct xg_frame *f)
{
    struct xg_frame *keep = f;

    return xg_ws_send_encoded(ws, f->data, f->len, f->nmsgs, &keep);
}

int
xg_ws_send_encoded(struct xg_ws *ws, const unsigned char *data, size_t len,
    size_t nmsgs, struct xg_frame **keep)
{
    struct xg_frame *f;
    size_t n;

    if (ws == NULL || !ws->server || ws_dead(ws) || ws->state != XG_WS_OPEN
        || ws->ending || ws->bev == NULL)
    {
        return XG_ERROR;
    }
    n = ws->direct ? xg_bev_send_now(ws->bev, data, len, nmsgs, ws->opts.io)
        : 0;
    if (n == len) {
        return XG_OK;
    }
    if (*keep == NULL) {
        *keep = xg_frame_encoded(data, len, nmsgs);
    }
    f = *keep;
    f->refs++;
    if (evbuffer_add_reference(bufferevent_get_output(ws->bev), f->data + n,
            f->len - n, frame_cleanup, f) != 0)
    {
        f->refs--;
        return XG_ERROR;
    }
    return XG_OK;
}
