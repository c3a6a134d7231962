/*
 * xg_ws_link.c: a connection whose far end is a part of this process
 * (see struct xg_ws_link in xg_ws.h): no socket, no frames, the same
 * owner's view as any client connection. The rest of the owner API
 * (send, close, free, state) checks ws->link in xg_ws.c.
 */
#include "xg_ws_int.h"

#include <string.h>

/* See xg_ws.h. */
struct xg_ws *
xg_ws_link_new(struct event_base *base, const struct xg_ws_opts *opts,
    const struct xg_ws_cbs *cbs, void *arg, const struct xg_ws_link *link,
    void *lp)
{
    struct xg_ws *ws = ws_new(base, opts, cbs, arg);

    ws->name = xg_strdup(opts->log_name != NULL ? opts->log_name : "link");
    snprintf(ws->peer, sizeof(ws->peer), "link");
    ws->state = XG_WS_CONNECTING;
    ws->link = link;
    ws->link_p = lp;
    return ws;
}

/* See xg_ws.h. */
void
xg_ws_link_open(struct xg_ws *ws)
{
    if (ws_dead(ws) || ws->state != XG_WS_CONNECTING) {
        return;
    }
    ws->state = XG_WS_OPEN;
    ws->last_rx_ms = xg_now_ms();
    if (ws->cbs->on_open != NULL) {
        ws_enter(ws);
        ws->cbs->on_open(ws, ws->arg);
        (void) ws_leave(ws);
    }
}

/* See xg_ws.h. */
int
xg_ws_link_message(struct xg_ws *ws, const void *data, size_t len)
{
    if (ws_dead(ws) || ws->state != XG_WS_OPEN) {
        return XG_ERROR;
    }
    ws->last_rx_ms = xg_now_ms();
    if (ws->cbs->on_message == NULL) {
        return XG_OK;
    }
    ws_enter(ws);
    ws->cbs->on_message(ws, 0, data, len, ws->arg);
    if (ws_leave(ws)) {
        return XG_ERROR;
    }
    return ws_dead(ws) ? XG_ERROR : XG_OK;
}

/* See xg_ws.h. */
void
xg_ws_link_fail(struct xg_ws *ws, const char *reason)
{
    ws_fail(ws, 0, "%s", reason);
}
