/*
 * fuzz_ws_frame.c: libFuzzer target for the frame receive path of the
 * WebSocket server: a valid upgrade, then arbitrary bytes as frames, all
 * through xg_ws over a bufferevent pair (wslay, the message limit, the
 * UTF-8 and text-only checks, pings, closes, the error closes we write
 * ourselves). The first input byte picks options. No crash, no leak, and
 * memory bounded by the 64 KiB message limit.
 */
#include "xg_core.h"
#include "xg_log.h"
#include "xg_ws.h"

#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static struct event_base *base;
static struct xg_ws *cur;

static void
on_message(struct xg_ws *ws, int binary, const unsigned char *d, size_t len,
    void *arg)
{
    int mode = *(int *) arg;

    if (len > 64 * 1024) {
        abort();    /* over the limit must never be delivered */
    }
    if (mode & 2) {
        xg_ws_send_binary(ws, d, len);
    }
    if (mode & 4) {
        xg_ws_close(ws, 1000, "fuzz");
    }
    if (mode & 8) {
        xg_ws_free(ws);
        cur = NULL;
    }
}

static void
on_down(struct xg_ws *ws, const struct xg_ws_down *why, void *arg)
{
    xg_ws_free(ws);
    cur = NULL;
}

static const struct xg_ws_cbs cbs = { NULL, NULL, on_message, on_down, NULL };

static void
peer_read(struct bufferevent *bev, void *arg)
{
    struct evbuffer *in = bufferevent_get_input(bev);

    evbuffer_drain(in, evbuffer_get_length(in));
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const char req[] =
        "GET /ws HTTP/1.1\r\nHost: fuzz\r\nUpgrade: websocket\r\n"
        "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
        "Sec-WebSocket-Version: 13\r\n\r\n";
    struct bufferevent *pair[2];
    struct xg_ws_opts opts;
    int mode, i;

    if (base == NULL) {
        base = event_base_new();
        xg_log_level = -1;      /* quiet */
    }
    if (size < 1) {
        return 0;
    }
    mode = data[0];
    memset(&opts, 0, sizeof(opts));
    opts.max_message = 64 * 1024;
    opts.text_only = mode & 1;
    opts.close_timeout_ms = 1000;
    if (bufferevent_pair_new(base, BEV_OPT_DEFER_CALLBACKS, pair) != 0) {
        return 0;
    }
    bufferevent_setcb(pair[1], peer_read, NULL, NULL, NULL);
    bufferevent_enable(pair[1], EV_READ | EV_WRITE);
    cur = xg_ws_accept_bev(base, pair[0], "fuzz", &opts, NULL, &cbs, &mode);
    bufferevent_write(pair[1], req, sizeof(req) - 1);
    event_base_loop(base, EVLOOP_NONBLOCK);
    bufferevent_write(pair[1], data + 1, size - 1);
    for (i = 0; i < 8; i++) {
        event_base_loop(base, EVLOOP_NONBLOCK);
    }
    xg_ws_free(cur);
    cur = NULL;
    bufferevent_free(pair[1]);
    event_base_loop(base, EVLOOP_NONBLOCK);
    return 0;
}
