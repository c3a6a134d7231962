/*
 * xg_ws.c: the WebSocket transport (see xg_ws.h).
 *
 * One struct xg_ws per connection, driven by one bufferevent (a socket
 * one, or an OpenSSL one over the socket once TCP is up) and, once open,
 * one wslay event context.
 *
 * Output: wslay's send callback appends everything to the bufferevent's
 * output buffer and never says WOULDBLOCK, and wslay_event_send() runs
 * right after anything is queued, so wslay never holds a half-sent frame.
 * That is what lets pre-encoded fan-out frames (struct xg_frame) and
 * server messages go straight into the same output buffer, in order with
 * the pongs and close frames wslay makes.
 *
 * Lifetime: every entry from libevent marks the connection busy; a free
 * or a teardown asked for while busy (e.g. xg_ws_free() from on_message,
 * with wslay_event_recv() still on the stack) is finished when the
 * outermost entry returns. on_down is always delivered from its own
 * event, so it never runs inside a call the owner made.
 */
#include "xg_core.h"
#include "xg_frame.h"
#include "xg_log.h"
#include "xg_tls.h"
#include "xg_ws.h"
#include "xg_ws_int.h"
#include "xg_wsproto.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <event2/util.h>
#include <openssl/err.h>
#include <openssl/rand.h>
#include <wslay/wslay.h>

static void ws_feed(struct xg_ws *ws);
static void ws_after_io(struct xg_ws *ws);
static void ws_destroy(struct xg_ws *ws);

/* ---- small helpers ------------------------------------------------------ */

void
ws_enter(struct xg_ws *ws)
{
    ws->busy++;
}

/* Returns 1 when WS is gone and must not be touched. */
int
ws_leave(struct xg_ws *ws)
{
    if (--ws->busy > 0) {
        return 0;
    }
    if (ws->freed) {
        ws_destroy(ws);
        return 1;
    }
    if (ws->release_bev && ws->bev != NULL) {
        bufferevent_free(ws->bev);
        ws->bev = NULL;
        ws->release_bev = 0;
    }
    return 0;
}

static const char *
state_name(enum xg_ws_state st)
{
    switch (st) {
    case XG_WS_CONNECTING: return "connecting";
    case XG_WS_TLS:        return "tls";
    case XG_WS_HANDSHAKE:  return "handshake";
    case XG_WS_OPEN:       return "open";
    case XG_WS_CLOSING:    return "closing";
    case XG_WS_DOWN:       return "down";
    }
    return "?";
}

void
ws_log(const struct xg_ws *ws, int level, const char *fmt, ...)
{
    char msg[1024];
    va_list ap;

    if (level > xg_log_level) {
        return;
    }
    va_start(ap, fmt);
    if (ws->lctx != NULL) {
        xg_log_atv(level, ws->lctx, fmt, ap);
    } else {
        vsnprintf(msg, sizeof(msg), fmt, ap);
        xg_log(level, "%s: %s", ws->name, msg);
    }
    va_end(ap);
}

static void
ws_set_state(struct xg_ws *ws, enum xg_ws_state st)
{
    if (ws->state == st) {
        return;
    }
    if (!ws->opts.owner_logs) {
        ws_log(ws, XG_LOG_DEBUG, "%s -> %s", state_name(ws->state),
            state_name(st));
    }
    ws->state = st;
    if (st != XG_WS_DOWN && !ws->freed && ws->cbs->on_state != NULL) {
        ws->cbs->on_state(ws, st, ws->arg);
    }
}

/*
 * Makes BEV, which becomes the connection's, read and write as much at a
 * time as the options say, and count its writes when asked.
 */
void
ws_bev_tune(struct xg_ws *ws, struct bufferevent *bev)
{
    if (ws->opts.read_max > 0) {
        bufferevent_set_max_single_read(bev, ws->opts.read_max);
    }
    if (ws->opts.write_max > 0) {
        bufferevent_set_max_single_write(bev, ws->opts.write_max);
    }
    if (ws->direct && ws->opts.io != NULL) {
        xg_bev_count_writes(bev, ws->opts.io);
    }
}

/* ---- going down --------------------------------------------------------- */

static void
ws_release_bev(struct xg_ws *ws)
{
    if (ws->bev == NULL) {
        return;
    }
    bufferevent_disable(ws->bev, EV_READ | EV_WRITE);
    bufferevent_setcb(ws->bev, NULL, NULL, NULL, NULL);
    if (ws->busy > 0) {
        ws->release_bev = 1;    /* wslay may still read from it */
        return;
    }
    bufferevent_free(ws->bev);
    ws->bev = NULL;
}

static void
ws_stop_timers(struct xg_ws *ws)
{
    xg_timer_del(ws->ev_deadline);
    xg_timer_del(ws->ev_ping);
    xg_timer_del(ws->ev_silence);
}

/* The end: close the socket now and report on_down from its own event. */
static void
ws_down_now(struct xg_ws *ws)
{
    if (ws->state == XG_WS_DOWN) {
        return;
    }
    ws->ending = 0;
    ws_stop_timers(ws);
    if (ws->wslay != NULL) {
        wslay_event_shutdown_read(ws->wslay);
        wslay_event_shutdown_write(ws->wslay);
    }
    ws_release_bev(ws);
    if (ws->reason[0] == '\0') {
        snprintf(ws->reason, sizeof(ws->reason), "closed");
    }
    if (!ws->opts.owner_logs) {
        ws_log(ws, XG_LOG_INFO, "down: %s", ws->reason);
    }
    ws_set_state(ws, XG_WS_DOWN);
    if (!ws->freed && !ws->down_queued) {
        ws->down_queued = 1;
        event_active(ws->ev_down, EV_TIMEOUT, 1);
    }
}

void
ws_fail(struct xg_ws *ws, int flush, const char *fmt, ...)
{
    va_list ap;

    if (ws->state == XG_WS_DOWN) {
        return;
    }
    if (ws->reason[0] == '\0') {
        va_start(ap, fmt);
        vsnprintf(ws->reason, sizeof(ws->reason), fmt, ap);
        va_end(ap);
    }
    if (ws->ending && flush) {
        return;
    }
    if (flush && !ws->freed && ws->bev != NULL
        && evbuffer_get_length(bufferevent_get_output(ws->bev)) > 0)
    {
        ws->ending = 1;
        xg_timer_del(ws->ev_ping);
        xg_timer_del(ws->ev_silence);
        xg_timer_del(ws->ev_deadline);
        xg_timer_add_ms(ws->ev_deadline, ws->opts.close_timeout_ms);
        if (ws->state == XG_WS_OPEN) {
            ws_set_state(ws, XG_WS_CLOSING);
        }
        return;
    }
    ws_down_now(ws);
}

static void
ws_down_event(evutil_socket_t fd, short what, void *arg)
{
    struct xg_ws *ws = arg;
    struct xg_ws_down why;

    ws_enter(ws);
    if (!ws->freed) {
        why.reason = ws->reason;
        why.http_status = ws->http_status;
        why.retry_after_s = ws->retry_after_s;
        why.close_code = ws->close_code;
        why.by_us = ws->by_us;
        ws->cbs->on_down(ws, &why, ws->arg);
    }
    ws_leave(ws);
}

/* ---- wslay glue --------------------------------------------------------- */

/* A data frame's header: its FIN bit says whether a message goes on. */
static void
ws_rx_tag_frag(struct xg_ws *ws, uint8_t b0)
{
    if ((b0 & 0x08) == 0) {
        ws->rx_frag = (b0 & 0x80) == 0;
    }
}

/*
 * A client connection (an upstream) receives every message the exchange
 * sends, and wslay checks each text frame's UTF-8 a byte at a time inside
 * wslay_event_recv (perf: 8 to 9 % of exgate's CPU, at 1 client as at 100
 * flat out), before wsl_on_msg checks the whole message again, eight
 * ASCII bytes at a time. So the bytes wslay is about to parse are walked
 * frame header by frame header (a header whole in the read in place, one
 * cut by the read's end a byte at a time), and the first frame of a text message is
 * handed over with RSV1 set, which wslay (told to allow RSV1) takes for a
 * compressed message whose text cannot be checked yet; wsl_on_msg checks
 * it, with the same close 1007. A frame the peer sent with RSV1 (no
 * extension was agreed) gets RSV2 as well, which wslay still refuses with
 * 1002, as it refused the RSV1.
 */
static void
ws_rx_tag(struct xg_ws *ws, uint8_t *p, size_t n)
{
    while (n > 0) {
        size_t need, take, i;
        uint64_t pl;

        if (ws->rx_left > 0) {
            take = ws->rx_left < n ? (size_t) ws->rx_left : n;
            ws->rx_left -= take;
            p += take;
            n -= take;
            continue;
        }
        /* a whole header in this read (most are): read in place */
        if (ws->rx_nhdr == 0 && n >= 2) {
            pl = p[1] & 0x7f;
            need = 2 + (pl == 126 ? 2 : pl == 127 ? 8 : 0)
                + (p[1] & 0x80 ? 4 : 0);
            if (n >= need) {
                if (*p & 0x40) {
                    *p |= 0x20;
                } else if ((*p & 0x0f) == WSLAY_TEXT_FRAME) {
                    *p |= 0x40;
                }
                if (pl >= 126) {
                    size_t nlen = pl == 126 ? 2 : 8;

                    pl = 0;
                    for (i = 0; i < nlen; i++) {
                        pl = (pl << 8) | p[2 + i];
                    }
                }
                ws_rx_tag_frag(ws, *p);
                ws->rx_left = pl;
                p += need;
                n -= need;
                continue;
            }
        }
        if (ws->rx_nhdr == 0) {
            if (*p & 0x40) {
                *p |= 0x20;
            } else if ((*p & 0x0f) == WSLAY_TEXT_FRAME) {
                *p |= 0x40;
            }
        }
        ws->rx_hdr[ws->rx_nhdr++] = *p++;
        n--;
        if (ws->rx_nhdr < 2) {
            continue;
        }
        pl = ws->rx_hdr[1] & 0x7f;
        need = 2 + (pl == 126 ? 2 : pl == 127 ? 8 : 0)
            + (ws->rx_hdr[1] & 0x80 ? 4 : 0);
        if (ws->rx_nhdr < need) {
            continue;
        }
        if (pl >= 126) {
            size_t nlen = pl == 126 ? 2 : 8;

            pl = 0;
            for (i = 0; i < nlen; i++) {
                pl = (pl << 8) | ws->rx_hdr[2 + i];
            }
        }
        ws_rx_tag_frag(ws, ws->rx_hdr[0]);
        ws->rx_nhdr = 0;
        ws->rx_left = pl;
    }
}

static ssize_t
wsl_recv(wslay_event_context_ptr ctx, uint8_t *buf, size_t len, int flags,
    void *user)
{
    struct xg_ws *ws = user;
    int n;

    if (ws_dead(ws) || ws->bev == NULL || ws->release_bev) {
        wslay_event_set_error(ctx, WSLAY_ERR_WOULDBLOCK);
        return -1;
    }
    n = evbuffer_remove(bufferevent_get_input(ws->bev), buf, len);
    if (n <= 0) {
        wslay_event_set_error(ctx, WSLAY_ERR_WOULDBLOCK);
        return -1;
    }
    if (ws->rx_tag) {
        ws_rx_tag(ws, buf, (size_t) n);
    }
    return n;
}

/* Never blocks: the bufferevent's output buffer takes everything. */
static ssize_t
wsl_send(wslay_event_context_ptr ctx, const uint8_t *data, size_t len,
    int flags, void *user)
{
    struct xg_ws *ws = user;

    if (ws_dead(ws) || ws->bev == NULL || ws->release_bev) {
        return (ssize_t) len;    /* going away: nothing will be written */
    }
    if (evbuffer_add(bufferevent_get_output(ws->bev), data, len) != 0) {
        wslay_event_set_error(ctx, WSLAY_ERR_CALLBACK_FAILURE);
        return -1;
    }
    return (ssize_t) len;
}

static int
wsl_genmask(wslay_event_context_ptr ctx, uint8_t *buf, size_t len,
    void *user)
{
    /* A fresh unpredictable mask per frame, as RFC 6455 5.3 asks. */
    return RAND_bytes(buf, (int) len) == 1 ? 0 : -1;
}

/* Copies a close reason for a log line: printable ASCII, no quotes. */
static void
printable(char *dst, size_t dlen, const unsigned char *s, size_t len)
{
    size_t i, n;

    n = 0;
    for (i = 0; i < len && n + 1 < dlen; i++) {
        dst[n++] = (s[i] >= 0x20 && s[i] < 0x7f && s[i] != '"')
            ? (char) s[i] : '?';
    }
    dst[n] = '\0';
}

/* Refuses the message being received: too big (1009). */
static void
ws_rx_too_big(struct xg_ws *ws, wslay_event_context_ptr ctx)
{
    ws->rx_over = 1;
    ws->rx_len = 0;
    wslay_event_queue_close(ctx, 1009, (const uint8_t *) "message too big",
        15);
    wslay_event_shutdown_read(ctx);
}

static void
wsl_on_frame_start(wslay_event_context_ptr ctx,
    const struct wslay_event_on_frame_recv_start_arg *f, void *user)
{
    struct xg_ws *ws = user;

    ws->rx_ctrl = (f->opcode & 0x8) != 0;
    if (ws->rx_ctrl || ws->rx_over) {
        return;
    }
    ws->rx_whole = NULL;
    ws->rx_one = f->fin && f->opcode != WSLAY_CONTINUATION_FRAME;
    ws->rx_frame_len = f->payload_length;
    if (f->opcode != WSLAY_CONTINUATION_FRAME) {
        ws->rx_len = 0;     /* a new message */
    }
    /*
     * Without buffering wslay checks the limit per frame only; the whole
     * message is checked here, against what the frame announces.
     */
    if (f->payload_length > ws->opts.max_message - ws->rx_len) {
        ws_rx_too_big(ws, ctx);
    }
}

static void
wsl_on_frame_chunk(wslay_event_context_ptr ctx,
    const struct wslay_event_on_frame_recv_chunk_arg *c, void *user)
{
    struct xg_ws *ws = user;
    size_t need, cap;

    if (ws->rx_ctrl || ws->rx_over || c->data_length == 0) {
        return;
    }
    if (c->data_length > ws->opts.max_message - ws->rx_len) {
        ws_rx_too_big(ws, ctx);     /* cannot happen: checked at start */
        return;
    }
    if (ws->rx_one && c->data_length == ws->rx_frame_len) {
        /* the whole message in wslay's buffer: wsl_on_msg follows */
        ws->rx_whole = c->data;
        ws->rx_whole_len = c->data_length;
        return;
    }
    need = ws->rx_len + c->data_length;
    if (need > ws->rx_cap) {
        cap = ws->rx_cap ? ws->rx_cap : 4096;
        while (cap < need) {
            cap *= 2;
        }
        if (cap > ws->opts.max_message) {
            cap = ws->opts.max_message;
        }
        ws->rx = xg_realloc(ws->rx, cap);
        ws->rx_cap = cap;
    }
    memcpy(ws->rx + ws->rx_len, c->data, c->data_length);
    ws->rx_len = need;
}

/* A whole data message received (DATA, LEN): checked, then handed over. */
static void
ws_rx_message(struct xg_ws *ws, int binary, const unsigned char *data,
    size_t len)
{
    ws->rx_len = 0;
    if (binary && ws->opts.text_only) {
        snprintf(ws->reason, sizeof(ws->reason),
            "binary message on a text-only connection: sent close 1003");
        wslay_event_queue_close(ws->wslay, 1003,
            (const uint8_t *) "text only", 9);
        wslay_event_shutdown_read(ws->wslay);
        return;
    }
    /*
     * On a server connection wslay 1.1.1 already checks received text
     * frame by frame and closes with 1007 itself; checking the whole
     * message again keeps the promise that on_message only ever sees
     * valid UTF-8 independent of the wslay build. On a client
     * connection this is the only check (see ws_rx_tag).
     */
    if (!binary && !xg_wsproto_utf8_valid(data, len)) {
        snprintf(ws->reason, sizeof(ws->reason),
            "invalid utf-8: sent close 1007");
        wslay_event_queue_close(ws->wslay, 1007,
            (const uint8_t *) "invalid utf-8", 13);
        wslay_event_shutdown_read(ws->wslay);
        return;
    }
    if (ws->cbs->on_message != NULL) {
        ws->cbs->on_message(ws, binary, data, len, ws->arg);
    }
    /* A big message's buffer is not kept for an idle connection. */
    if (!ws->freed && ws->rx_cap > 65536) {
        free(ws->rx);
        ws->rx = NULL;
        ws->rx_cap = 0;
    }
}

static void
wsl_on_msg(wslay_event_context_ptr ctx,
    const struct wslay_event_on_msg_recv_arg *m, void *user)
{
    struct xg_ws *ws = user;
    char text[2 * XG_WSPROTO_MAX_CLOSE_REASON];
    const unsigned char *whole;

    if (ws_dead(ws)) {
        return;
    }
    switch (m->opcode) {
    case WSLAY_TEXT_FRAME:
    case WSLAY_BINARY_FRAME:
        whole = ws->rx_whole;
        ws->rx_whole = NULL;
        if (ws->ending || ws->discard || ws->rx_over) {
            return;
        }
        if (whole != NULL) {
            ws_rx_message(ws, m->opcode == WSLAY_BINARY_FRAME, whole,
                ws->rx_whole_len);
        } else {
            ws_rx_message(ws, m->opcode == WSLAY_BINARY_FRAME,
                ws->rx_len ? ws->rx : (const unsigned char *) "",
                ws->rx_len);
        }
        break;
    case WSLAY_CONNECTION_CLOSE:
        ws->close_code = m->status_code ? m->status_code : 1005;
        text[0] = '\0';
        if (m->msg_length > 2) {
            printable(text, sizeof(text), m->msg + 2, m->msg_length - 2);
        }
        if (ws->reason[0] == '\0') {
            snprintf(ws->reason, sizeof(ws->reason), "close %d \"%s\"",
                ws->close_code, text);
        }
        break;
    default:
        break;      /* wslay answers pings itself; pongs need nothing */
    }
}

static const struct wslay_event_callbacks wsl_callbacks = {
    wsl_recv, wsl_send, wsl_genmask, wsl_on_frame_start, wsl_on_frame_chunk,
    NULL, wsl_on_msg
};

/* Writes a close frame ourselves, past wslay (see ws_feed). */
static void
ws_raw_close(struct xg_ws *ws, int code, const char *reason)
{
    unsigned char frame[XG_WSPROTO_MAX_FRAME_HEADER + 2
        + XG_WSPROTO_MAX_CLOSE_REASON];
    unsigned char mask[4];
    size_t n;

    if (ws->bev == NULL) {
        return;
    }
    if (!ws->server && RAND_bytes(mask, 4) != 1) {
        memset(mask, 0x5a, 4);
    }
    n = xg_wsproto_close_frame(frame, code, reason,
        ws->server ? NULL : mask);
    evbuffer_add(bufferevent_get_output(ws->bev), frame, n);
}

/* The close frame is out: wait for the peer's, or with DISCARD for EOF. */
static void
ws_enter_closing(struct xg_ws *ws, int discard)
{
    if (ws->state != XG_WS_OPEN) {
        return;
    }
    xg_timer_del(ws->ev_ping);
    xg_timer_del(ws->ev_silence);
    xg_timer_del(ws->ev_deadline);
    xg_timer_add_ms(ws->ev_deadline, ws->opts.close_timeout_ms);
    if (discard) {
        ws->discard = 1;
        if (ws->bev != NULL && !ws->rx_inplace) {
            struct evbuffer *in = bufferevent_get_input(ws->bev);
            evbuffer_drain(in, evbuffer_get_length(in));
        }
    }
    ws_set_state(ws, XG_WS_CLOSING);
}

/* After wslay read or queued something: send it and follow the close. */
static void
ws_after_io(struct xg_ws *ws)
{
    int r, code;

    if (ws_dead(ws) || ws->ending || ws->wslay == NULL) {
        return;
    }
    r = wslay_event_send(ws->wslay);
    if (r != 0) {
        ws_fail(ws, 0, "wslay send failed (%d)", r);
        return;
    }
    if (wslay_event_get_close_sent(ws->wslay)
        && wslay_event_get_close_received(ws->wslay))
    {
        /* The close handshake is complete: flush, then drop the socket. */
        ws_fail(ws, 1, "close %d", ws->close_code);
        return;
    }
    if (wslay_event_get_close_sent(ws->wslay) && ws->state == XG_WS_OPEN) {
        if (!wslay_event_get_read_enabled(ws->wslay)) {
            /* wslay (or we) found the peer at fault: no more input. */
            code = wslay_event_get_status_code_sent(ws->wslay);
            if (ws->reason[0] == '\0') {
                snprintf(ws->reason, sizeof(ws->reason),
                    "%s: sent close %d", xg_wsproto_close_text(code), code);
            }
            ws_log(ws, XG_LOG_INFO, "%s", ws->reason);
            ws_enter_closing(ws, 1);
        } else {
            ws_enter_closing(ws, 0);
        }
    }
}

/*
 * The common frame of a client connection (an upstream: every message the
 * exchange sends), a whole unfragmented text frame, taken from the input
 * without wslay, which per message cost about as much as the rest of the
 * receive (its frame parser, the copy into its buffer through wsl_recv and
 * evbuffer_remove: some 900 instructions for a 300-byte message). Only
 * while wslay holds nothing: ws_rx_tag saw every byte handed to it end a
 * frame, outside a fragmented message, and wslay still reads. Only a frame
 * that is FIN, text, without reserved bits or mask, with a length in its
 * shortest form and within max_message, whole in the input's first chain;
 * at anything else the rest goes to wslay as before, which finds it where
 * it was. The message is handed over in place, as wsl_on_msg hands it, and
 * the frames taken are drained once at the end (rx_inplace keeps
 * ws_enter_closing from draining the input under on_message; what it would
 * have drained is drained here). Returns 1 when WS went away.
 */
static int
ws_rx_whole(struct xg_ws *ws, struct evbuffer *in)
{
    struct evbuffer_iovec v;
    const unsigned char *p;
    size_t off, hl, whole;
    uint64_t pl;

    if (evbuffer_peek(in, -1, NULL, &v, 1) < 1) {
        return 0;
    }
    p = v.iov_base;
    off = 0;
    whole = 0;
    ws->rx_inplace = 1;
    while (v.iov_len - off >= 2 && ws->rx_left == 0 && ws->rx_nhdr == 0
        && !ws->rx_frag && !ws->release_bev && !ws->rx_over && !ws->ending
        && !ws->discard && !ws_dead(ws)
        && wslay_event_get_read_enabled(ws->wslay))
    {
        if (p[off] != (0x80 | WSLAY_TEXT_FRAME) || (p[off + 1] & 0x80)) {
            break;
        }
        pl = p[off + 1];
        hl = 2;
        if (pl == 126) {
            if (v.iov_len - off < 4) {
                break;
            }
            pl = (uint64_t) p[off + 2] << 8 | p[off + 3];
            hl = 4;
            if (pl < 126) {
                break;
            }
        } else if (pl == 127) {
            break;
        }
        if (pl > ws->opts.max_message || v.iov_len - off - hl < pl) {
            break;
        }
        off += hl + (size_t) pl;
        ws_rx_message(ws, 0, p + off - pl, (size_t) pl);
        whole = off;
    }
    ws->rx_inplace = 0;
    if (ws->bev != NULL && !ws->freed) {
        if (ws->discard) {
            evbuffer_drain(in, evbuffer_get_length(in));
        } else if (whole > 0) {
            evbuffer_drain(in, whole);
        }
    }
    return ws_dead(ws) || ws->bev == NULL;
}

/* Runs wslay over the input buffer. */
static void
ws_feed(struct xg_ws *ws)
{
    struct evbuffer *in;
    int r;

    if (ws_dead(ws) || ws->bev == NULL) {
        return;
    }
    in = bufferevent_get_input(ws->bev);
    if (ws->discard || ws->ending || ws->wslay == NULL) {
        evbuffer_drain(in, evbuffer_get_length(in));
        return;
    }
    r = 0;
    if (ws->rx_tag) {
        if (ws_rx_whole(ws, in)) {
            return;
        }
    }
    if (evbuffer_get_length(in) > 0) {
        r = wslay_event_recv(ws->wslay);
    } else if (ws->rx_tag && wslay_event_get_read_enabled(ws->wslay)
        && !wslay_event_want_write(ws->wslay))
    {
        return;     /* all taken whole: nothing for ws_after_io to do */
    }
    if (ws_dead(ws)) {
        return;
    }
    if (r == WSLAY_ERR_CALLBACK_FAILURE) {
        /*
         * A malformed frame header (bad length encoding, oversized or
         * fragmented control frame). wslay has queued a close without a
         * code; send 1002 ourselves instead and keep wslay quiet.
         */
        wslay_event_shutdown_write(ws->wslay);
        if (ws->reason[0] == '\0') {
            snprintf(ws->reason, sizeof(ws->reason),
                "protocol error: malformed frame: sent close 1002");
        }
        ws_log(ws, XG_LOG_INFO, "%s", ws->reason);
        ws_raw_close(ws, 1002, "malformed frame");
        ws_enter_closing(ws, 1);
        return;
    }
    if (r != 0) {
        ws_fail(ws, 0, "wslay receive failed (%d)", r);
        return;
    }
    ws_after_io(ws);
    if (!ws_dead(ws) && ws->bev != NULL && ws->discard) {
        evbuffer_drain(in, evbuffer_get_length(in));
    }
}

/* Starts the ping and silence timers of the open WS from its opts. */
static void
ws_ping_arm(struct xg_ws *ws)
{
    xg_timer_del(ws->ev_ping);
    xg_timer_del(ws->ev_silence);
    if (ws->opts.ping_ms > 0) {
        struct timeval tv;
        tv.tv_sec = (time_t) (ws->opts.ping_ms / 1000);
        tv.tv_usec = (suseconds_t) ((ws->opts.ping_ms % 1000) * 1000);
        xg_timer_add(ws->ev_ping, &tv);
    }
    if (ws->opts.ping_timeout_ms > 0) {
        xg_timer_add_ms(ws->ev_silence, ws->opts.ping_timeout_ms);
    }
}

static void
ws_ping_cb(evutil_socket_t fd, short what, void *arg)
{
    struct xg_ws *ws = arg;
    struct wslay_event_msg m;
    char payload[24];

    ws_enter(ws);
    if (ws->state == XG_WS_OPEN && !ws->ending && !ws->freed) {
        m.opcode = WSLAY_PING;
        m.msg_length = (size_t) snprintf(payload, sizeof(payload), "%llu",
            (unsigned long long) xg_now_ms());
        m.msg = (const uint8_t *) payload;
        if (wslay_event_queue_msg(ws->wslay, &m) == 0) {
            ws_after_io(ws);
        }
    }
    ws_leave(ws);
}

static void
ws_silence_cb(evutil_socket_t fd, short what, void *arg)
{
    struct xg_ws *ws = arg;
    uint64_t idle;

    ws_enter(ws);
    idle = xg_now_ms() - ws->last_rx_ms;
    if (ws->state == XG_WS_OPEN && !ws->ending) {
        if (idle >= ws->opts.ping_timeout_ms) {
            ws_fail(ws, 0, "ping timeout");
        } else {
            xg_timer_add_ms(ws->ev_silence, ws->opts.ping_timeout_ms - idle);
        }
    }
    ws_leave(ws);
}

static void
ws_deadline_cb(evutil_socket_t fd, short what, void *arg)
{
    struct xg_ws *ws = arg;

    ws_enter(ws);
    if (ws->ending) {
        ws_fail(ws, 0, "close timeout");
    } else {
        switch (ws->state) {
        case XG_WS_CONNECTING:
            ws_fail(ws, 0, "connect timeout%s%s",
                ws->connect_err[0] ? " after " : "", ws->connect_err);
            break;
        case XG_WS_TLS:
            ws_fail(ws, 0, "tls handshake timeout");
            break;
        case XG_WS_HANDSHAKE:
            ws_fail(ws, 0, "handshake timeout");
            break;
        case XG_WS_CLOSING:
            ws_fail(ws, 0, "close timeout");
            break;
        default:
            break;
        }
    }
    ws_leave(ws);
}

/* ---- open ---------------------------------------------------------------- */

void
ws_open(struct xg_ws *ws)
{
    int r;

    if (ws->server) {
        r = wslay_event_context_server_init(&ws->wslay, &wsl_callbacks, ws);
    } else {
        r = wslay_event_context_client_init(&ws->wslay, &wsl_callbacks, ws);
    }
    if (r != 0) {
        ws->wslay = NULL;
        ws_fail(ws, 0, "out of memory");
        return;
    }
    /*
     * wslay's default limit is 2 GiB: always set ours (it applies per
     * frame in this mode; wsl_on_frame_start checks whole messages).
     */
    wslay_event_config_set_max_recv_msg_length(ws->wslay,
        ws->opts.max_message);
    wslay_event_config_set_no_buffering(ws->wslay, 1);
    if (!ws->server) {
        /* text frames come tagged with RSV1 (see ws_rx_tag) */
        wslay_event_config_set_allowed_rsv_bits(ws->wslay, WSLAY_RSV1_BIT);
        ws->rx_tag = 1;
    }
    xg_timer_del(ws->ev_deadline);
    ws->last_rx_ms = xg_now_ms();
    ws_ping_arm(ws);
    if (!ws->opts.owner_logs) {
        ws_log(ws, XG_LOG_INFO, "open");
    }
    ws_set_state(ws, XG_WS_OPEN);
    if (ws_dead(ws) || ws->state != XG_WS_OPEN) {
        return;
    }
    if (ws->cbs->on_open != NULL) {
        ws->cbs->on_open(ws, ws->arg);
    }
    if (ws_dead(ws) || ws->bev == NULL) {
        return;
    }
    /* Frames that came in the same read as the handshake. */
    if (evbuffer_get_length(bufferevent_get_input(ws->bev)) > 0) {
        ws_feed(ws);
    }
}

/*
 * Looks for a complete HTTP head in the input. Returns its length, 0 if
 * more is needed, -1 when none fits in the bound. *P gets its bytes.
 */
ssize_t
ws_find_head(struct xg_ws *ws, const char **p)
{
    struct evbuffer *in;
    size_t len;

    in = bufferevent_get_input(ws->bev);
    len = evbuffer_get_length(in);
    if (len > XG_WSPROTO_MAX_HEAD) {
        len = XG_WSPROTO_MAX_HEAD;
    }
    *p = (const char *) evbuffer_pullup(in, (ssize_t) len);
    if (*p == NULL) {
        return 0;
    }
    return xg_wsproto_head_len(*p, len, XG_WSPROTO_MAX_HEAD);
}

/* ---- client handshake -------------------------------------------------- */

static int
header_safe(const char *s)
{
    return strpbrk(s, "\r\n") == NULL;
}

static void
ws_cli_start_handshake(struct xg_ws *ws)
{
    struct evbuffer *out;
    char hosthdr[300];
    int i, own_ua;
    int def_port;

    ws_set_state(ws, XG_WS_HANDSHAKE);
    if (ws_dead(ws)) {
        return;
    }
    xg_timer_del(ws->ev_deadline);
    xg_timer_add_ms(ws->ev_deadline, ws->opts.handshake_timeout_ms);
    def_port = ws->url.tls ? 443 : 80;
    if (strchr(ws->host, ':') != NULL) {
        snprintf(hosthdr, sizeof(hosthdr), "[%s]", ws->host);
    } else {
        snprintf(hosthdr, sizeof(hosthdr), "%s", ws->host);
    }
    if (ws->url.port != def_port) {
        size_t l = strlen(hosthdr);
        snprintf(hosthdr + l, sizeof(hosthdr) - l, ":%u", ws->url.port);
    }
    out = bufferevent_get_output(ws->bev);
    evbuffer_add_printf(out,
        "GET %s HTTP/1.1\r\nHost: %s\r\nUpgrade: websocket\r\n"
        "Connection: Upgrade\r\nSec-WebSocket-Key: %s\r\n"
        "Sec-WebSocket-Version: 13\r\n",
        ws->url.path[0] ? ws->url.path : "/", hosthdr, ws->key);
    own_ua = 0;
    for (i = 0; i < ws->opts.nheaders; i++) {
        const struct xg_header *h = &ws->opts.headers[i];
        if (!header_safe(h->name) || !header_safe(h->value)) {
            ws_log(ws, XG_LOG_WARN, "header \"%s\" has a line break, not "
                "sent", h->name);
            continue;
        }
        if (strcasecmp(h->name, "User-Agent") == 0) {
            own_ua = 1;
        }
        evbuffer_add_printf(out, "%s: %s\r\n", h->name, h->value);
    }
    if (!own_ua) {
        evbuffer_add_printf(out, "User-Agent: exgate/%s\r\n", XG_VERSION);
    }
    evbuffer_add(out, "\r\n", 2);
    bufferevent_enable(ws->bev, EV_READ | EV_WRITE);
}

static void
ws_cli_handshake(struct xg_ws *ws)
{
    struct xg_wsproto_resp resp;
    const char *p;
    ssize_t hl;
    int r;

    hl = ws_find_head(ws, &p);
    if (hl == 0) {
        return;
    }
    if (hl < 0) {
        ws_fail(ws, 0, "handshake: response head over %d bytes",
            XG_WSPROTO_MAX_HEAD);
        return;
    }
    r = xg_wsproto_parse_response(p, (size_t) hl, ws->key, time(NULL), &resp);
    /* Whatever follows the head belongs to the WebSocket stream. */
    evbuffer_drain(bufferevent_get_input(ws->bev), (size_t) hl);
    if (r != XG_OK) {
        if (resp.status != 0 && resp.status != 101) {
            ws->http_status = resp.status;
            ws->retry_after_s = resp.retry_after_s;
            if (resp.retry_after_s >= 0) {
                ws_fail(ws, 0, "http %d, retry after %ds", resp.status,
                    resp.retry_after_s);
            } else {
                ws_fail(ws, 0, "http %d", resp.status);
            }
        } else {
            ws_fail(ws, 0, "handshake: %s", resp.error);
        }
        return;
    }
    ws_open(ws);
}

/* ---- client connect ------------------------------------------------------ */

static void ws_try_connect(struct xg_ws *ws);

static void
ws_cli_tls_start(struct xg_ws *ws)
{
    struct bufferevent *nb;
    evutil_socket_t fd;
    SSL *ssl;
    char err[512];

    fd = bufferevent_getfd(ws->bev);
    ERR_clear_error();
    ssl = SSL_new(ws->ssl_ctx);
    if (ssl == NULL) {
        snprintf(err, sizeof(err), "SSL_new: ");
        ws_fail(ws, 0, "tls: %s", xg_log_ssl_errors(err, sizeof(err)));
        return;
    }
    err[0] = '\0';
    if (xg_tls_client_setup(ssl, ws->host, ws->opts.tls_verify, err,
            sizeof(err)) != 0)
    {
        SSL_free(ssl);
        ws_fail(ws, 0, "tls: %s", err);
        return;
    }
    nb = bufferevent_openssl_socket_new(ws->base, fd, ssl,
        BUFFEREVENT_SSL_CONNECTING, BEV_OPT_CLOSE_ON_FREE);
    if (nb == NULL) {
        ws_fail(ws, 0, "tls: cannot make the tls bufferevent");
        return;
    }
    /* The fd now belongs to the tls bufferevent. */
    bufferevent_setfd(ws->bev, -1);
    bufferevent_free(ws->bev);
    ws->bev = nb;
    ws_bev_tune(ws, nb);
    bufferevent_openssl_set_allow_dirty_shutdown(nb, 1);
    bufferevent_setcb(nb, ws_read_cb, ws_write_cb, ws_event_cb, ws);
    bufferevent_enable(nb, EV_READ | EV_WRITE);
    ws_set_state(ws, XG_WS_TLS);
}

static void
ws_cli_tls_done(struct xg_ws *ws)
{
    SSL *ssl;
    const unsigned char *alpn;
    unsigned alen;

    ssl = bufferevent_openssl_get_ssl(ws->bev);
    SSL_get0_alpn_selected(ssl, &alpn, &alen);
    if (alen > 0 && (alen != 8 || memcmp(alpn, "http/1.1", 8) != 0)) {
        ws_fail(ws, 0, "tls: server chose alpn \"%.*s\", not http/1.1",
            (int) alen, alpn);
        return;
    }
    ws_log(ws, XG_LOG_INFO, "tls %s %s, %s", SSL_get_version(ssl),
        SSL_get_cipher_name(ssl), ws->opts.tls_verify
        ? "certificate verified" : "certificate NOT verified (tls_verify off)");
    ws_cli_start_handshake(ws);
}

static void
ws_tcp_connected(struct xg_ws *ws)
{
    evutil_socket_t fd;

    fd = bufferevent_getfd(ws->bev);
    xg_fd_nodelay(fd);
    if (ws->ai_list != NULL) {
        evutil_freeaddrinfo(ws->ai_list);
        ws->ai_list = ws->ai_next = NULL;
    }
    ws_log(ws, XG_LOG_DEBUG, "tcp connected to %s", ws->peer);
    if (ws->url.tls) {
        ws_cli_tls_start(ws);
    } else {
        ws_cli_start_handshake(ws);
    }
}

/* Tries the resolved addresses in turn until one connect starts. */
static void
ws_try_connect(struct xg_ws *ws)
{
    struct evutil_addrinfo *ai;
    struct bufferevent *bev;
    evutil_socket_t fd;

    while ((ai = ws->ai_next) != NULL) {
        ws->ai_next = ai->ai_next;
        xg_format_addr(ai->ai_addr, ws->peer, sizeof(ws->peer));
        fd = socket(ai->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC,
            0);
        if (fd < 0) {
            snprintf(ws->connect_err, sizeof(ws->connect_err),
                "connect to %s: %s", ws->peer, strerror(errno));
            continue;
        }
        if (connect(fd, ai->ai_addr, ai->ai_addrlen) != 0
            && errno != EINPROGRESS)
        {
            snprintf(ws->connect_err, sizeof(ws->connect_err),
                "connect to %s: %s", ws->peer, strerror(errno));
            ws_log(ws, XG_LOG_DEBUG, "%s", ws->connect_err);
            close(fd);
            continue;
        }
        bev = bufferevent_socket_new(ws->base, fd, BEV_OPT_CLOSE_ON_FREE);
        if (bev == NULL) {
            close(fd);
            snprintf(ws->connect_err, sizeof(ws->connect_err),
                "connect to %s: out of memory", ws->peer);
            continue;
        }
        bufferevent_setcb(bev, ws_read_cb, ws_write_cb, ws_event_cb, ws);
        /* NULL address: the connect is under way, wait for it. */
        if (bufferevent_socket_connect(bev, NULL, 0) != 0) {
            bufferevent_free(bev);
            snprintf(ws->connect_err, sizeof(ws->connect_err),
                "connect to %s: cannot watch the socket", ws->peer);
            continue;
        }
        ws->bev = bev;
        ws_bev_tune(ws, bev);
        return;
    }
    ws_fail(ws, 0, "%s", ws->connect_err[0] ? ws->connect_err
        : "connect: no address");
}

static void
ws_dns_cb(int err, struct evutil_addrinfo *res, void *arg)
{
    struct ws_dnsreq *rq = arg;
    struct xg_ws *ws;

    ws = rq->ws;
    free(rq);
    if (ws == NULL) {
        if (res != NULL) {
            evutil_freeaddrinfo(res);
        }
        return;
    }
    ws->dnsreq = NULL;
    ws->dns_handle = NULL;
    ws_enter(ws);
    if (err != 0) {
        ws_fail(ws, 0, "dns: %s: %s", ws->host, evutil_gai_strerror(err));
    } else if (!ws_dead(ws)) {
        ws->ai_list = ws->ai_next = res;
        ws_try_connect(ws);
    } else {
        evutil_freeaddrinfo(res);
    }
    ws_leave(ws);
}

static void
ws_resolve(struct xg_ws *ws)
{
    struct evutil_addrinfo hints, *res;
    struct evdns_getaddrinfo_request *h;
    struct ws_dnsreq *rq;
    char port[8];
    int r;

    memset(&hints, 0, sizeof(hints));
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_protocol = IPPROTO_TCP;
    snprintf(port, sizeof(port), "%u", ws->url.port);
    if (ws->dns == NULL) {
        /*
         * No resolver given: getaddrinfo() is non-blocking only for
         * address literals, so a name fails here rather than stall the
         * loop on a DNS query.
         */
        hints.ai_flags |= EVUTIL_AI_NUMERICHOST;
        res = NULL;
        r = evutil_getaddrinfo(ws->host, port, &hints, &res);
        if (r != 0) {
            ws_fail(ws, 0, "dns: %s: %s", ws->host, evutil_gai_strerror(r));
            return;
        }
        ws->ai_list = ws->ai_next = res;
        ws_try_connect(ws);
        return;
    }
    rq = xg_malloc(sizeof(*rq));
    rq->ws = ws;
    ws->dnsreq = rq;
    /* The callback may run before this returns (literals, hosts file). */
    h = evdns_getaddrinfo(ws->dns, ws->host, port, &hints, ws_dns_cb, rq);
    if (h != NULL && ws->dnsreq == rq) {
        ws->dns_handle = h;
    }
}

/* ---- bufferevent callbacks ---------------------------------------------- */

/*
 * libevent 2.1 reads at most 4096 bytes a read callback (EVBUFFER_MAX_READ
 * in its buffer.c, whatever max_single_read says): 13 bench messages, all
 * that one loop pass could then fan out, one send(2) per client for each.
 * A plain connection with opts.read_max reads on, one recv(2) per 64 KiB,
 * until the socket is dry or read_max bytes came in this callback. An
 * error or EOF is left to libevent's next read, which meets it again and
 * reports it. (A socket bufferevent keeps the end of its input frozen but
 * while it reads itself; so do we.)
 */
static void ws_read_into(struct xg_ws *ws, struct evbuffer *in,
    evutil_socket_t fd);

static void
ws_read_more(struct xg_ws *ws, struct bufferevent *bev)
{
    struct evbuffer *in = bufferevent_get_input(bev);
    evutil_socket_t fd = bufferevent_getfd(bev);

    evbuffer_unfreeze(in, 0);
    ws_read_into(ws, in, fd);
    evbuffer_freeze(in, 0);
}

static void
ws_read_into(struct xg_ws *ws, struct evbuffer *in, evutil_socket_t fd)
{
    size_t got = 0;

    while (fd >= 0 && got < ws->opts.read_max) {
        struct evbuffer_iovec v;
        size_t want = ws->opts.read_max - got;
        ssize_t n;

        if (want > WS_READ_CHUNK) {
            want = WS_READ_CHUNK;
        }
        if (evbuffer_reserve_space(in, (ev_ssize_t) want, &v, 1) != 1) {
            return;
        }
        do {
            n = recv(fd, v.iov_base, want, MSG_DONTWAIT);
        } while (n < 0 && errno == EINTR);
        if (n <= 0) {
            return;     /* the space stays reserved, uncommitted */
        }
        v.iov_len = (size_t) n;
        evbuffer_commit_space(in, &v, 1);
        got += (size_t) n;
        if (ws->opts.io != NULL) {
            ws->opts.io->reads++;
            ws->opts.io->read_bytes += (size_t) n;
        }
        if ((size_t) n < want) {
            return;     /* dry */
        }
    }
}

/*
 * Over TLS libevent's bufferevent_openssl hands over one TLS record a read
 * callback (4096 bytes and what is left of that record): with a peer that
 * writes a record a message, a loop pass and a fan-out batch a message.
 * An open connection with opts.read_max reads on with SSL_read until
 * OpenSSL wants more from a dry socket, or read_max bytes came in and
 * OpenSSL holds nothing more. OpenSSL reads ahead (as much as the socket
 * has, not a record header and then its body, two reads a record): safe
 * as this drains all it read ahead, so nothing waits in OpenSSL while the
 * socket is dry. The peer's close_notify or an error ends the loop and is
 * returned (BEV_EVENT_EOF, BEV_EVENT_ERROR, as libevent would report it:
 * dirty shutdowns are allowed) for the caller to report once it fed what
 * came before: the socket may have nothing more to wake libevent with.
 * Anything else (a renegotiation that must write) is left to libevent's
 * next read, which meets it again.
 */
static short
ws_read_more_tls(struct xg_ws *ws, struct bufferevent *bev)
{
    struct evbuffer *in = bufferevent_get_input(bev);
    SSL *ssl = bufferevent_openssl_get_ssl(bev);
    size_t got = 0;
    int n;

    if (ssl == NULL) {
        return 0;
    }
    SSL_set_read_ahead(ssl, 1);
    while (got < ws->opts.read_max || SSL_has_pending(ssl)) {
        struct evbuffer_iovec v;

        if (evbuffer_reserve_space(in, WS_TLS_READ_CHUNK, &v, 1) != 1) {
            return 0;
        }
        ERR_clear_error();
        n = SSL_read(ssl, v.iov_base, WS_TLS_READ_CHUNK);
        if (n <= 0) {
            switch (SSL_get_error(ssl, n)) {
            case SSL_ERROR_WANT_READ:
                return 0;       /* dry */
            case SSL_ERROR_ZERO_RETURN:
                return BEV_EVENT_EOF;
            case SSL_ERROR_SYSCALL:
                return ERR_peek_error() == 0 ? BEV_EVENT_EOF
                    : BEV_EVENT_ERROR;
            case SSL_ERROR_SSL:
                return BEV_EVENT_ERROR;
            default:
                return 0;
            }
        }
        v.iov_len = (size_t) n;
        evbuffer_commit_space(in, &v, 1);
        got += (size_t) n;
        if (ws->opts.io != NULL) {
            ws->opts.io->read_bytes += (size_t) n;
        }
    }
    return 0;
}

void
ws_read_cb(struct bufferevent *bev, void *arg)
{
    struct xg_ws *ws = arg;
    size_t have = evbuffer_get_length(bufferevent_get_input(bev));
    /* one read per callback: the bytes it added to what was left */
    size_t got = have > ws->in_left ? have - ws->in_left : 0;
    short end = 0;

    ws_enter(ws);
    ws->last_rx_ms = xg_now_ms();
    if (ws->opts.io != NULL) {
        ws->opts.io->reads++;
        ws->opts.io->read_bytes += got;
    }
    if (!ws_dead(ws)) {
        if (ws->state == XG_WS_TLS && ws->server) {
            /* Data means the tls handshake is over, event or not. */
            ws_set_state(ws, XG_WS_HANDSHAKE);
        }
        switch (ws_dead(ws) ? XG_WS_DOWN : ws->state) {
        case XG_WS_HANDSHAKE:
            if (ws->ending) {
                struct evbuffer *in = bufferevent_get_input(bev);
                evbuffer_drain(in, evbuffer_get_length(in));
            } else if (ws->server) {
                ws_srv_handshake(ws);
            } else {
                ws_cli_handshake(ws);
            }
            break;
        case XG_WS_OPEN:
        case XG_WS_CLOSING:
            /* libevent reads what FIONREAD shows, up to 4096: less
               means the socket is dry, and a recv would find nothing */
            if (ws->opts.read_max > 0 && !ws->tls && !ws->discard
                && got >= WS_LIBEVENT_READ)
            {
                ws_read_more(ws, bev);
            }
            /* over TLS also when discarding: nothing may stay read
               ahead in OpenSSL */
            if (ws->opts.read_max > 0 && ws->tls) {
                end = ws_read_more_tls(ws, bev);
            }
            ws_feed(ws);
            if (end != 0 && !ws_dead(ws) && ws->bev == bev) {
                ws_event_cb(bev, BEV_EVENT_READING | end, ws);
            }
            break;
        default:
            break;
        }
    }
    if (ws->bev == bev) {
        ws->in_left = evbuffer_get_length(bufferevent_get_input(bev));
    }
    ws_leave(ws);
}

void
ws_write_cb(struct bufferevent *bev, void *arg)
{
    struct xg_ws *ws = arg;
    evutil_socket_t fd;

    ws_enter(ws);
    if (ws_dead(ws)) {
        /* nothing */
    } else if (ws->ending) {
        ws_down_now(ws);
    } else if (ws->state == XG_WS_CLOSING && ws->discard && !ws->shut_wr) {
        /*
         * Our close frame is out and we read no more: half-close so the
         * peer sees EOF after it, answers, and closes its side (plain TCP
         * only; a TLS peer gets the close timeout).
         */
        ws->shut_wr = 1;
        fd = bufferevent_getfd(bev);
        if (!ws->tls && fd >= 0) {
            shutdown(fd, SHUT_WR);
        }
    } else if (ws->state == XG_WS_OPEN && ws->cbs->on_drain != NULL) {
        ws->cbs->on_drain(ws, ws->arg);
    }
    ws_leave(ws);
}

static void
ws_tls_reason(struct xg_ws *ws, char *buf, size_t len)
{
    SSL *ssl;
    unsigned long e;
    long vr;
    int saved;

    saved = EVUTIL_SOCKET_ERROR();
    buf[0] = '\0';
    ssl = bufferevent_openssl_get_ssl(ws->bev);
    if (!ws->server && ws->opts.tls_verify && ssl != NULL) {
        vr = SSL_get_verify_result(ssl);
        if (vr != X509_V_OK) {
            snprintf(buf, len, "certificate verify failed: %s",
                X509_verify_cert_error_string(vr));
            while (bufferevent_get_openssl_error(ws->bev) != 0) {
                /* drained: the verify result says it better */
            }
            ERR_clear_error();
            return;
        }
    }
    while ((e = bufferevent_get_openssl_error(ws->bev)) != 0) {
        if (ERR_GET_LIB(e) == 0) {
            continue;   /* libevent also records the bare SSL_get_error() */
        }
        xg_log_ssl_error_append(buf, len, e);
    }
    xg_log_ssl_errors(buf, len);
    if (buf[0] == '\0') {
        snprintf(buf, len, "%s", saved ? evutil_socket_error_to_string(saved)
            : "connection closed during the handshake");
    }
}

void
ws_event_cb(struct bufferevent *bev, short what, void *arg)
{
    struct xg_ws *ws = arg;
    char buf[512];
    int err;

    ws_enter(ws);
    err = EVUTIL_SOCKET_ERROR();
    if (ws_dead(ws)) {
        /* nothing */
    } else if (what & BEV_EVENT_CONNECTED) {
        if (ws->state == XG_WS_CONNECTING) {
            ws_tcp_connected(ws);
        } else if (ws->state == XG_WS_TLS) {
            if (ws->server) {
                ws_set_state(ws, XG_WS_HANDSHAKE);
                /* The request may have come with the end of the handshake. */
                if (!ws_dead(ws) && ws->bev != NULL && evbuffer_get_length(
                        bufferevent_get_input(ws->bev)) > 0)
                {
                    ws_srv_handshake(ws);
                }
            } else {
                ws_cli_tls_done(ws);
            }
        }
    } else if (ws->state == XG_WS_CONNECTING) {
        snprintf(ws->connect_err, sizeof(ws->connect_err),
            "connect to %s: %s", ws->peer,
            (what & BEV_EVENT_ERROR) && err ? evutil_socket_error_to_string(err)
            : "connection closed");
        ws_log(ws, XG_LOG_DEBUG, "%s", ws->connect_err);
        bufferevent_free(ws->bev);
        ws->bev = NULL;
        ws_try_connect(ws);
    } else if (ws->state == XG_WS_TLS) {
        ws_tls_reason(ws, buf, sizeof(buf));
        ws_fail(ws, 0, "tls: %s", buf);
    } else if (what & BEV_EVENT_EOF) {
        if (ws->state == XG_WS_OPEN) {
            ws_fail(ws, 0, "eof");
        } else if (ws->state == XG_WS_CLOSING) {
            ws_fail(ws, 0, "eof while closing");
        } else {
            ws_fail(ws, 0, "eof during the handshake");
        }
    } else if (what & BEV_EVENT_ERROR) {
        if (ws->tls) {
            ws_tls_reason(ws, buf, sizeof(buf));
            ws_fail(ws, 0, "tls: %s", buf);
        } else {
            ws_fail(ws, 0, "%s: %s", what & BEV_EVENT_READING ? "read"
                : "write", err ? evutil_socket_error_to_string(err)
                : "error");
        }
    }
    ws_leave(ws);
}

/* ---- construction ---------------------------------------------------------- */

struct xg_ws *
ws_new(struct event_base *base, const struct xg_ws_opts *opts,
    const struct xg_ws_cbs *cbs, void *arg)
{
    struct xg_ws *ws;
    int i;

    ws = xg_calloc(1, sizeof(*ws));
    ws->base = base;
    ws->cbs = cbs;
    ws->arg = arg;
    ws->opts = *opts;
    ws->retry_after_s = -1;
    ws->opts.log_name = NULL;
    ws->lctx = xg_log_ctx_dup(opts->log_ctx);
    ws->opts.log_ctx = NULL;
    ws->opts.tls_ca = opts->tls_ca ? xg_strdup(opts->tls_ca) : NULL;
    ws->opts.headers = NULL;
    ws->opts.nheaders = 0;
    if (opts->nheaders > 0 && opts->headers != NULL) {
        struct xg_header *h = xg_calloc((size_t) opts->nheaders, sizeof(*h));
        for (i = 0; i < opts->nheaders; i++) {
            h[i].name = xg_strdup(opts->headers[i].name);
            h[i].value = xg_strdup(opts->headers[i].value);
        }
        ws->opts.headers = h;
        ws->opts.nheaders = opts->nheaders;
    }
    if (ws->opts.max_message == 0) {
        ws->opts.max_message = WS_DEFAULT_MAX_MESSAGE;
    }
    if (ws->opts.connect_timeout_ms == 0) {
        ws->opts.connect_timeout_ms = WS_DEFAULT_TIMEOUT_MS;
    }
    if (ws->opts.handshake_timeout_ms == 0) {
        ws->opts.handshake_timeout_ms = WS_DEFAULT_TIMEOUT_MS;
    }
    if (ws->opts.close_timeout_ms == 0) {
        ws->opts.close_timeout_ms = WS_DEFAULT_CLOSE_MS;
    }
    ws->ev_deadline = xg_timer_new(base, ws_deadline_cb, ws);
    ws->ev_ping = xg_timer_new_persist(base, ws_ping_cb, ws);
    ws->ev_silence = xg_timer_new(base, ws_silence_cb, ws);
    ws->ev_down = evtimer_new(base, ws_down_event, ws);
    if (ws->ev_deadline == NULL || ws->ev_ping == NULL
        || ws->ev_silence == NULL || ws->ev_down == NULL)
    {
        xg_log_error("ws: out of memory for timers");
        abort();
    }
    return ws;
}

struct xg_ws *
xg_ws_connect(struct event_base *base, struct evdns_base *dns,
    const struct xg_url *url, const struct xg_ws_opts *opts,
    const struct xg_ws_cbs *cbs, void *arg)
{
    struct xg_ws *ws;
    char err[512];
    size_t hl;

    ws = ws_new(base, opts, cbs, arg);
    ws->dns = dns;
    ws->url = *url;
    ws->tls = url->tls;
    hl = strlen(url->host);
    if (hl >= 2 && url->host[0] == '[' && url->host[hl - 1] == ']') {
        memcpy(ws->host, url->host + 1, hl - 2);
        ws->host[hl - 2] = '\0';
    } else {
        snprintf(ws->host, sizeof(ws->host), "%s", url->host);
    }
    if (opts->log_name != NULL) {
        ws->name = xg_strdup(opts->log_name);
    } else {
        snprintf(err, sizeof(err), "ws %s:%u", url->host, url->port);
        ws->name = xg_strdup(err);
    }
    snprintf(ws->peer, sizeof(ws->peer), "%s:%u", url->host, url->port);
    ws->state = XG_WS_CONNECTING;
    /* The query string may carry a credential: never log it. */
    if (!ws->opts.owner_logs) {
        ws_log(ws, XG_LOG_INFO, "connecting to %s://%s:%u%.*s%s",
            url->tls ? "wss" : "ws", url->host, url->port,
            (int) strcspn(url->path, "?"), url->path,
            strchr(url->path, '?') != NULL ? "?..." : "");
    }
    if (xg_wsproto_make_key(ws->key) != XG_OK) {
        ws_fail(ws, 0, "no random bytes for the key");
        return ws;
    }
    if (url->tls) {
        if (!ws->opts.tls_verify) {
            ws_log(ws, XG_LOG_WARN, "tls_verify is off: the certificate of %s "
                "is NOT checked (tests only)", ws->host);
        }
        err[0] = '\0';
        ws->ssl_ctx = xg_tls_client_ctx(ws->opts.tls_ca, err, sizeof(err));
        if (ws->ssl_ctx == NULL) {
            ws_fail(ws, 0, "tls: %s", err);
            return ws;
        }
        /* The first load of a trust store is slow: start the clock after. */
        event_base_update_cache_time(ws->base);
    }
    xg_timer_add_ms(ws->ev_deadline, ws->opts.connect_timeout_ms);
    ws_resolve(ws);
    return ws;
}

/* ---- owner API ----------------------------------------------------------- */

static void
ws_destroy(struct xg_ws *ws)
{
    int i;

    if (ws->link != NULL) {
        ws->link->free(ws->link_p);
        ws->link = NULL;
    }
    if (ws->dnsreq != NULL) {
        ws->dnsreq->ws = NULL;      /* its callback frees it */
        ws->dnsreq = NULL;
        if (ws->dns_handle != NULL) {
            evdns_getaddrinfo_cancel(ws->dns_handle);
        }
    }
    if (ws->ai_list != NULL) {
        evutil_freeaddrinfo(ws->ai_list);
    }
    xg_timer_free(ws->ev_deadline);
    xg_timer_free(ws->ev_ping);
    xg_timer_free(ws->ev_silence);
    event_free(ws->ev_down);
    if (ws->bev != NULL) {
        bufferevent_free(ws->bev);
    }
    if (ws->wslay != NULL) {
        wslay_event_context_free(ws->wslay);
    }
    free(ws->rx);
    if (ws->ssl_ctx != NULL) {
        SSL_CTX_free(ws->ssl_ctx);
    }
    for (i = 0; i < ws->opts.nheaders; i++) {
        free(ws->opts.headers[i].name);
        free(ws->opts.headers[i].value);
    }
    free((void *) ws->opts.headers);
    free((void *) ws->opts.tls_ca);
    free(ws->name);
    xg_log_ctx_free(ws->lctx);
    free(ws);
}

void
xg_ws_free(struct xg_ws *ws)
{
    if (ws == NULL || ws->freed) {
        return;
    }
    ws->freed = 1;
    if (ws->busy > 0) {
        /* Inside one of our callbacks: finish when it returns. */
        ws_stop_timers(ws);
        event_del(ws->ev_down);
        if (ws->wslay != NULL) {
            wslay_event_shutdown_read(ws->wslay);
            wslay_event_shutdown_write(ws->wslay);
        }
        if (ws->bev != NULL) {
            bufferevent_disable(ws->bev, EV_READ | EV_WRITE);
            bufferevent_setcb(ws->bev, NULL, NULL, NULL, NULL);
        }
        return;
    }
    ws_destroy(ws);
}

static int
ws_send(struct xg_ws *ws, int opcode, const void *data, size_t len)
{
    struct wslay_event_msg m;
    unsigned char hdr[XG_WSPROTO_MAX_FRAME_HEADER];
    struct evbuffer *out;
    size_t n;
    int r;

    if (ws != NULL && ws->link != NULL) {
        if (ws_dead(ws) || ws->state != XG_WS_OPEN
            || opcode != WSLAY_TEXT_FRAME)
        {
            return XG_ERROR;
        }
        return ws->link->send(ws->link_p, data, len);
    }
    if (ws == NULL || ws_dead(ws) || ws->state != XG_WS_OPEN || ws->ending
        || ws->bev == NULL)
    {
        return XG_ERROR;
    }
    if (opcode == WSLAY_TEXT_FRAME
        && !xg_wsproto_utf8_valid((const unsigned char *) data, len))
    {
        ws_log(ws, XG_LOG_WARN, "refusing to send a text message that is "
            "not utf-8");
        return XG_ERROR;
    }
    if (ws->server) {
        /* Unmasked: straight into the output, no copy inside wslay. */
        out = bufferevent_get_output(ws->bev);
        n = xg_wsproto_frame_header(hdr, opcode, len, NULL);
        if (evbuffer_add(out, hdr, n) != 0
            || (len > 0 && evbuffer_add(out, data, len) != 0))
        {
            ws_fail(ws, 0, "out of memory");
            return XG_ERROR;
        }
        return XG_OK;
    }
    m.opcode = (uint8_t) opcode;
    m.msg = data;
    m.msg_length = len;
    r = wslay_event_queue_msg(ws->wslay, &m);
    if (r != 0) {
        return XG_ERROR;
    }
    r = wslay_event_send(ws->wslay);
    if (r != 0) {
        ws_fail(ws, 0, "wslay send failed (%d)", r);
        return XG_ERROR;
    }
    return XG_OK;
}

int
xg_ws_send_text(struct xg_ws *ws, const void *data, size_t len)
{
    return ws_send(ws, WSLAY_TEXT_FRAME, data, len);
}

int
xg_ws_send_binary(struct xg_ws *ws, const void *data, size_t len)
{
    return ws_send(ws, WSLAY_BINARY_FRAME, data, len);
}

void
xg_ws_close(struct xg_ws *ws, int code, const char *reason)
{
    size_t rlen;

    if (ws == NULL || ws_dead(ws) || ws->ending
        || ws->state == XG_WS_CLOSING)
    {
        return;
    }
    ws->by_us = 1;
    if (ws->link != NULL) {
        ws->link->close(ws->link_p);
        if (ws->state == XG_WS_OPEN) {
            ws_fail(ws, 0, "closed (%d)", code);
        } else {
            ws_fail(ws, 0, "closed by the owner before open");
        }
        return;
    }
    if (ws->state != XG_WS_OPEN) {
        ws_fail(ws, 0, "closed by the owner before open");
        return;
    }
    rlen = xg_wsproto_close_reason_len(reason);
    if (!ws->opts.owner_logs) {
        ws_log(ws, XG_LOG_DEBUG, "closing with %d", code);
    }
    if (wslay_event_queue_close(ws->wslay, (uint16_t) code,
            (const uint8_t *) reason, rlen) != 0)
    {
        ws_fail(ws, 0, "cannot queue the close frame");
        return;
    }
    ws_after_io(ws);
}

/* See xg_ws.h. */
uint64_t
xg_ws_rx_ms(const struct xg_ws *ws)
{
    return ws->last_rx_ms;
}

size_t
xg_ws_output_len(const struct xg_ws *ws)
{
    if (ws == NULL || ws->bev == NULL || ws->release_bev) {
        return 0;
    }
    return evbuffer_get_length(bufferevent_get_output(ws->bev));
}

enum xg_ws_state
xg_ws_state(const struct xg_ws *ws)
{
    return ws->state;
}

const char *
xg_ws_peer(const struct xg_ws *ws)
{
    return ws->peer;
}

void
xg_ws_set_arg(struct xg_ws *ws, void *arg)
{
    ws->arg = arg;
}

void
xg_ws_set_ping(struct xg_ws *ws, uint64_t ping_ms, uint64_t timeout_ms)
{
    ws->opts.ping_ms = ping_ms;
    ws->opts.ping_timeout_ms = timeout_ms;
    if (ws->state == XG_WS_OPEN && !ws->ending) {
        ws_ping_arm(ws);
    }
}
