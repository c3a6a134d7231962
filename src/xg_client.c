/*
 * xg_client.c: one local client, WebSocket or TCP (see xg_client.h).
 *
 * Output never blocks anything. Shared messages (the fan-out) are written
 * to the socket at once when nothing is queued for the client, and what
 * the socket does not take is appended to the client's output buffer by
 * reference; answers are appended and libevent writes them on the next
 * loop turn. A client whose buffer grows past the conf's hard limit, or
 * past the soft limit for longer than allowed, is closed as a slow
 * consumer (redis's client-output-buffer-limit semantics).
 */
#include "xg_core.h"
#include "xg_client.h"
#include "xg_client_int.h"
#include "xg_io.h"
#include "xg_listen.h"
#include "xg_log.h"
#include "xg_venue.h"
#include "xg_ws.h"
#include "xg_wsproto.h"
#include "xg_timer.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>

#include <wslay/wslay.h>

#define XG_CLIENT_TCP_CLOSE_WAIT_S  5   /* flushing before a TCP close */
#define XG_CLIENT_WS_CLOSE_MS       2000
#define XG_CLIENT_HANDSHAKE_MS      10000
/*
 * Bytes one write of a client's queued output may take (libevent's
 * default is 16 KiB a writable wakeup): a client that fell behind gets
 * its queue, batch after batch, in one writev(2) as far as its socket
 * takes it.
 */
#define XG_CLIENT_WRITE_MAX         (4 * 1024 * 1024)

struct xg_gateway_stats xg_gateway_stats;

static uint64_t client_seq;

enum client_kind {
    CLIENT_WS = 1,
    CLIENT_TCP,
    CLIENT_SINK         /* no connection: xg_client_new_sink() */
};

struct xg_client {
    struct xg_listener  *l;
    enum client_kind     kind;
    uint64_t             id;
    char                 name[176];
    struct xg_ws        *ws;
    struct bufferevent  *bev;
    void                *cs;            /* the protocol module's state */
    int                  opened;        /* client_open() was called */
    int                  closing;
    int                  close_code;
    char                 close_reason[96];
    struct event        *ev_close;      /* the asynchronous close */
    uint64_t             soft_since_ms; /* over the soft limit since */
    struct xg_timer     *ev_soft;       /* its deadline, made when needed */
    char                *path;          /* WebSocket: the upgrade's path and
                                           query, NULL: TCP */
    uint64_t             rate_start_ms; /* client_rate: this second's start */
    unsigned             rate_count;    /*              messages in it */
    struct xg_client    *prev, *next;   /* in the listener's list */
    /* CLIENT_SINK (l NULL): where its messages go, its settings */
    xg_client_sink_cb   *sink;
    void                *sink_arg;
    const struct xg_gateway_conf *sink_gc;
    struct event_base   *sink_base;
};

/* ---- shared messages ---- */

struct xg_msg {
    int              refs;
    size_t           len;
    struct xg_frame *frame;     /* built on the first WebSocket recipient */
    char             data[];    /* LEN bytes, then '\n' for TCP lines */
};

/* A message of LEN bytes left for the caller to fill, then '\n'. */
static struct xg_msg *
msg_alloc(size_t len)
{
    struct xg_msg *m = xg_malloc(sizeof(*m) + len + 1);

    m->refs = 1;
    m->len = len;
    m->frame = NULL;
    m->data[len] = '\n';
    return m;
}

struct xg_msg *
xg_msg_new(const void *data, size_t len)
{
    struct xg_msg *m = msg_alloc(len);

    memcpy(m->data, data, len);
    return m;
}

void
xg_msg_unref(struct xg_msg *m)
{
    if (m == NULL || --m->refs > 0) {
        return;
    }
    if (m->frame != NULL) {
        xg_frame_unref(m->frame);
    }
    free(m);
}

/* evbuffer_add_reference() cleanup: the TCP line is written out. */
static void
msg_line_done(const void *data, size_t len, void *arg)
{
    xg_msg_unref(arg);
}

static struct xg_io_stats *client_io(struct xg_client *c);

/*
 * M's line (NMSGS messages) to TCP client C: to the socket now, or the
 * rest by reference.
 */
static int
tcp_send_msg(struct xg_client *c, struct xg_msg *m, size_t nmsgs)
{
    size_t n = xg_bev_send_now(c->bev, m->data, m->len + 1, nmsgs,
        client_io(c));

    if (n == m->len + 1) {
        return XG_OK;
    }
    m->refs++;
    if (evbuffer_add_reference(bufferevent_get_output(c->bev), m->data + n,
            m->len + 1 - n, msg_line_done, m) != 0) {
        m->refs--;
        return XG_ERROR;
    }
    return XG_OK;
}

/* ---- coalescing fan-out ----
 *
 * Appending one reference per message per client costs a malloc'd
 * evbuffer chain each time, which dominated the fan-out profile. So
 * consecutive notifications that go to the same recipients are held in
 * one batch and go out as one shared buffer at the end of the loop pass:
 * one send(2) per client when its socket takes it all, else one
 * reference for the rest. Order is kept exactly: the batch is sent
 * before anything else is written to any client, before any client is
 * closed or freed, and as soon as a notification has other recipients.
 *
 * Each notification is encoded into the batch's buffer as it comes (its
 * WebSocket frame: header, then the bytes), its one copy; the buffer is
 * the loop's and is reused batch after batch, so a batch every socket
 * takes costs no allocation (at one client a message and its frame were
 * two allocations and two more copies, a fifth of exgate's instructions
 * a delivery). Only when a socket does not take it all is the batch
 * copied, once, into a shared frame of its exact size that the clients
 * behind hold by reference (xg_ws_send_encoded). TCP lines are built
 * from the frames' payloads, once a batch.
 */

/*
 * A batch holds what one read of the upstream brings (up to 256 KiB, see
 * xg_upstream.c), so that a loop pass costs each client one send(2).
 */
#define FANOUT_MAX_MSGS   1024
#define FANOUT_MAX_BYTES  (512 * 1024)
/*
 * The buffer grows (doubling) to the largest batch and stays, unless a
 * single message made it larger than a full batch can make it: then it
 * is let go.
 */
#define FANOUT_BUF_KEEP   (2 * (FANOUT_MAX_BYTES \
                           + FANOUT_MAX_MSGS * XG_WSPROTO_MAX_FRAME_HEADER))

/* Where a notification's bytes are in the batch's buffer. */
struct fanout_span {
    size_t               off, len;
};

/*
 * The batch belongs to one event loop: its end-of-pass event is made on
 * that loop's base, and every client fanned out to through it is on that
 * base (its listener points to it). One per loop, not one per listener
 * set, so that clients of two sets on one loop still see one order.
 */
struct xg_fanout {
    struct xg_client   **to;
    size_t               nto, to_cap;
    unsigned char       *buf;       /* the batch's frames, back to back */
    size_t               len, cap;
    struct fanout_span   msgs[FANOUT_MAX_MSGS];
    size_t               nmsgs;
    size_t               bytes;     /* the notifications' own bytes */
    struct event        *ev;
    /* counters for /status: the batches, and the clients' socket I/O */
    uint64_t             batches;
    uint64_t             batch_msgs;
    uint64_t             batches_by_msgs[XG_IO_BUCKETS];
    struct xg_io_stats   io;
};

static void output_check(struct xg_client *c);

/* Counts N messages written to C: in the totals and in its listener's. */
static void
client_count_out(struct xg_client *c, uint64_t n)
{
    xg_gateway_stats.messages_out += n;
    c->l->messages_out += n;
}

/* The TCP lines of FO's batch of N messages, back to back. */
static struct xg_msg *
fanout_lines(const struct xg_fanout *fo, size_t n)
{
    struct xg_msg *line;
    size_t total = 0, k, off;

    for (k = 0; k < n; k++) {
        total += fo->msgs[k].len + 1;
    }
    /* the last '\n' is the message's own */
    line = msg_alloc(total - 1);
    for (k = 0, off = 0; k < n; k++) {
        memcpy(line->data + off, fo->buf + fo->msgs[k].off, fo->msgs[k].len);
        off += fo->msgs[k].len;
        line->data[off++] = '\n';
    }
    return line;
}

/* Sends FO's held batch to its recipients. */
void
xg_client_fanout_flush(struct xg_fanout *fo)
{
    struct xg_frame *frame = NULL;
    struct xg_msg *line = NULL;
    size_t i, n = fo->nmsgs, len = fo->len;

    if (n == 0) {
        return;
    }
    /* a flush from inside this one finds nothing held */
    fo->nmsgs = 0;
    fo->len = 0;
    fo->bytes = 0;
    fo->batches++;
    fo->batch_msgs += n;
    fo->batches_by_msgs[xg_io_bucket(n)]++;
    for (i = 0; i < fo->nto; i++) {
        struct xg_client *c = fo->to[i];

        if (c->closing || c->kind == CLIENT_SINK) {
            continue;       /* a sink had its copy at once */
        }
        if (c->kind == CLIENT_WS) {
            if (xg_ws_send_encoded(c->ws, fo->buf, len, n, &frame)
                != XG_OK)
            {
                continue;
            }
        } else {
            if (line == NULL) {
                line = fanout_lines(fo, n);
            }
            if (tcp_send_msg(c, line, n) != XG_OK) {
                continue;
            }
        }
        client_count_out(c, n);
        output_check(c);
    }
    xg_frame_unref(frame);
    xg_msg_unref(line);
    if (fo->cap > FANOUT_BUF_KEEP) {
        free(fo->buf);
        fo->buf = NULL;
        fo->cap = 0;
    }
}

static void
fanout_on_pass(evutil_socket_t fd, short what, void *arg)
{
    xg_client_fanout_flush(arg);
}

/* The counters C's socket I/O adds to: its loop's fan-out's. */
static struct xg_io_stats *
client_io(struct xg_client *c)
{
    return &c->l->fo->io;
}

/*
 * See xg_client.h. Messages per batch and per send, the sends that found
 * a socket full, and the writes of queued output, since the start.
 */
void
xg_client_fanout_status(json_t *root, void *arg)
{
    const struct xg_fanout *fo = arg;
    json_t *o = xg_io_json(&fo->io), *h = json_object();
    int i;

    for (i = 0; i < XG_IO_BUCKETS; i++) {
        json_object_set_new(h, xg_io_bucket_name(i),
            json_integer((json_int_t) fo->batches_by_msgs[i]));
    }
    /* client sockets are read for requests only: not what this is for */
    json_object_del(o, "reads");
    json_object_del(o, "read_bytes");
    json_object_set_new(o, "batches", json_integer((json_int_t) fo->batches));
    json_object_set_new(o, "batch_messages",
        json_integer((json_int_t) fo->batch_msgs));
    json_object_set_new(o, "batches_by_messages", h);
    json_object_set_new(root, "fanout", o);
}

/* See xg_client.h. */
struct xg_fanout *
xg_client_fanout_new(struct event_base *base)
{
    struct xg_fanout *fo = xg_calloc(1, sizeof(*fo));

    /* persistent, never added: active once a pass, without the
       event_del libevent does for a plain event each time it runs */
    fo->ev = event_new(base, -1, EV_PERSIST, fanout_on_pass, fo);
    if (fo->ev == NULL) {
        free(fo);
        return NULL;
    }
    return fo;
}

/* See xg_client.h. */
void
xg_client_fanout_free(struct xg_fanout *fo)
{
    if (fo == NULL) {
        return;
    }
    xg_client_fanout_flush(fo);
    event_free(fo->ev);
    free(fo->to);
    free(fo->buf);
    free(fo);
}

void
xg_client_fanout(struct xg_client *const *to, size_t n, const void *data,
    size_t len)
{
    struct xg_fanout *fo = NULL;
    size_t need, i;

    /* a sink has no listener, so no loop's batch: its copy goes where
       its messages go, at once (its order is kept: xg_client_send() to
       it does not wait either); the batch skips it */
    for (i = 0; i < n; i++) {
        if (to[i]->kind != CLIENT_SINK) {
            if (fo == NULL) {
                fo = to[i]->l->fo;
            }
        } else if (!to[i]->closing) {
            to[i]->sink(to[i]->sink_arg, data, len);
        }
    }
    if (fo == NULL) {
        return;
    }
    if (fo->nmsgs > 0 && (fo->nto != n
        || memcmp(fo->to, to, n * sizeof(*to)) != 0
        || fo->nmsgs == FANOUT_MAX_MSGS
        || fo->bytes + len > FANOUT_MAX_BYTES))
    {
        xg_client_fanout_flush(fo);
    }
    if (fo->nmsgs == 0) {
        if (n > fo->to_cap) {
            fo->to_cap = n * 2;
            fo->to = xg_realloc(fo->to, fo->to_cap * sizeof(*fo->to));
        }
        memcpy(fo->to, to, n * sizeof(*to));
        fo->nto = n;
        event_active(fo->ev, EV_TIMEOUT, 1);
    }
    need = fo->len + XG_WSPROTO_MAX_FRAME_HEADER + len;
    if (need > fo->cap) {
        size_t cap = fo->cap ? fo->cap : 16384;

        while (cap < need) {
            cap *= 2;
        }
        fo->buf = xg_realloc(fo->buf, cap);
        fo->cap = cap;
    }
    /* DATA is valid UTF-8, as any text the upstream's wslay accepted */
    fo->len += xg_wsproto_frame_header(fo->buf + fo->len, WSLAY_TEXT_FRAME,
        len, NULL);
    fo->msgs[fo->nmsgs].off = fo->len;
    fo->msgs[fo->nmsgs].len = len;
    fo->nmsgs++;
    if (len > 0) {
        memcpy(fo->buf + fo->len, data, len);
    }
    fo->len += len;
    fo->bytes += len;
}

/* ---- teardown ---- */

/* The one teardown: the module forgets C, the listener counts it out. */
static void
client_destroy(struct xg_client *c, const char *reason)
{
    struct xg_listener *l = c->l;

    xg_client_fanout_flush(l->fo);

    if (c->opened && l->pm->client_close != NULL) {
        c->opened = 0;
        l->pm->client_close(l->pp, c->cs, reason);
    }
    xg_client_log(XG_LOG_INFO, c, "closed: %s", reason);
    if (c->prev) {
        c->prev->next = c->next;
    } else {
        l->clients = c->next;
    }
    if (c->next) {
        c->next->prev = c->prev;
    }
    xg_listen_client_gone(l, c);
    if (c->ws != NULL) {
        xg_ws_free(c->ws);
    }
    if (c->bev != NULL) {
        bufferevent_free(c->bev);
    }
    event_free(c->ev_close);
    if (c->ev_soft != NULL) {
        xg_timer_free(c->ev_soft);
    }
    free(c->path);
    free(c);
}

static void
on_close_ev(evutil_socket_t fd, short what, void *arg)
{
    struct xg_client *c = arg;

    if (c->kind == CLIENT_WS) {
        if (xg_ws_state(c->ws) == XG_WS_OPEN) {
            /* on_down follows, then the teardown */
            xg_ws_close(c->ws, c->close_code, c->close_reason);
            return;
        }
        if (xg_ws_state(c->ws) == XG_WS_CLOSING) {
            return;
        }
        client_destroy(c, c->close_reason);
        return;
    }
    if (c->close_code == 1008
        || evbuffer_get_length(bufferevent_get_output(c->bev)) == 0) {
        client_destroy(c, c->close_reason);
        return;
    }
    /* let the error line go out first; the write timeout bounds the wait */
    {
        struct timeval wt = { XG_CLIENT_TCP_CLOSE_WAIT_S, 0 };

        bufferevent_disable(c->bev, EV_READ);
        bufferevent_set_timeouts(c->bev, NULL, &wt);
    }
}

void
xg_client_close(struct xg_client *c, int code, const char *reason)
{
    if (c->closing) {
        return;
    }
    if (c->kind == CLIENT_SINK) {
        /* its owner sees it closing and lets it go */
        c->closing = 1;
        xg_client_log(XG_LOG_INFO, c, "closing (%d \"%s\")", code, reason);
        return;
    }
    xg_client_fanout_flush(c->l->fo);
    c->closing = 1;
    c->close_code = code;
    snprintf(c->close_reason, sizeof(c->close_reason), "%s", reason);
    xg_client_log(XG_LOG_INFO, c, "closing (%d \"%s\")", code, reason);
    event_active(c->ev_close, EV_TIMEOUT, 1);
}

int
xg_client_closing(const struct xg_client *c)
{
    return c->closing;
}

const char *
xg_client_name(const struct xg_client *c)
{
    return c->name;
}

/* See xg_client.h. */
void
xg_client_log_ctx(const struct xg_client *c, struct xg_log_ctx *ctx)
{
    const char *sp = strrchr(c->name, ' ');

    ctx->client = c->id;
    ctx->client_name = c->name;
    ctx->peer = sp != NULL ? sp + 1 : NULL;
}

/* See xg_client.h. */
void
xg_client_log(int level, const struct xg_client *c, const char *fmt, ...)
{
    struct xg_log_ctx ctx;
    va_list ap;

    if (level > xg_log_level) {
        return;
    }
    memset(&ctx, 0, sizeof(ctx));
    xg_client_log_ctx(c, &ctx);
    va_start(ap, fmt);
    xg_log_atv(level, &ctx, fmt, ap);
    va_end(ap);
}

const struct xg_gateway_conf *
xg_client_conf(const struct xg_client *c)
{
    return c->l != NULL ? c->l->gc : c->sink_gc;
}

int
xg_client_rate_exceeded(struct xg_client *c)
{
    unsigned rate = xg_client_conf(c)->client_rate;
    uint64_t now;

    if (rate == 0 || c->kind == CLIENT_SINK) {
        return 0;
    }
    now = xg_now_ms();
    if (now - c->rate_start_ms >= 1000) {
        c->rate_start_ms = now;
        c->rate_count = 0;
    }
    return ++c->rate_count > rate;
}

void
xg_client_set_ping(struct xg_client *c, uint64_t ping_ms, uint64_t timeout_ms)
{
    if (c->ws != NULL) {
        xg_ws_set_ping(c->ws, ping_ms, timeout_ms);
    }
}

const char *
xg_client_path(const struct xg_client *c)
{
    return c->path;
}

struct event_base *
xg_client_base(const struct xg_client *c)
{
    return c->l != NULL ? c->l->base : c->sink_base;
}

void
xg_client_count_error(struct xg_client *c)
{
    xg_gateway_stats.client_errors++;
}

void
xg_client_free(struct xg_client *c, const char *reason)
{
    client_destroy(c, reason);
}

struct xg_client *
xg_client_next(const struct xg_client *c)
{
    return c->next;
}

/* ---- output ---- */

static size_t
output_len(const struct xg_client *c)
{
    if (c->kind == CLIENT_WS) {
        return xg_ws_output_len(c->ws);
    }
    return evbuffer_get_length(bufferevent_get_output(c->bev));
}

static void
output_on_soft(evutil_socket_t fd, short what, void *arg)
{
    struct xg_client *c = arg;

    if (!c->closing) {
        output_check(c);
    }
}

/* Arms C's soft-limit deadline MS from now unless it is already armed. */
static void
output_soft_arm(struct xg_client *c, uint64_t ms)
{
    struct timeval tv;

    if (c->ev_soft == NULL) {
        c->ev_soft = xg_timer_new(c->l->base, output_on_soft, c);
    } else if (xg_timer_pending(c->ev_soft)) {
        return;
    }
    tv.tv_sec = (time_t) (ms / 1000);
    tv.tv_usec = (suseconds_t) ((ms % 1000) * 1000);
    xg_timer_add(c->ev_soft, &tv);
}

/*
 * The output limits, checked after each queued message and at the soft
 * limit's deadline: a client that went over the soft limit and is sent
 * nothing more is still closed if it is over at the deadline. A client
 * found at or under the soft limit starts a new soft period next time.
 */
static void
output_check(struct xg_client *c)
{
    const struct xg_gateway_conf *gc = c->l->gc;
    size_t out = output_len(c);
    char why[128];

    if (gc->out_hard != 0 && out > gc->out_hard) {
        snprintf(why, sizeof(why), "%zu bytes queued, over the hard output "
            "limit of %zu", out, gc->out_hard);
    } else if (gc->out_soft != 0 && out > gc->out_soft) {
        uint64_t now = xg_now_ms();

        if (c->soft_since_ms == 0) {
            c->soft_since_ms = now;
            output_soft_arm(c, gc->out_soft_ms);
            return;
        }
        if (now - c->soft_since_ms < gc->out_soft_ms) {
            /* a timer may fire a clock tick early: wait out the rest */
            output_soft_arm(c, gc->out_soft_ms - (now - c->soft_since_ms));
            return;
        }
        snprintf(why, sizeof(why), "%zu bytes queued, over the soft output "
            "limit of %zu for %llu ms", out, gc->out_soft,
            (unsigned long long) (now - c->soft_since_ms));
    } else {
        c->soft_since_ms = 0;
        if (c->ev_soft != NULL) {
            xg_timer_del(c->ev_soft);
        }
        return;
    }
    xg_client_log(XG_LOG_WARN, c, "slow consumer: %s", why);
    xg_gateway_stats.slow_consumer_closes++;
    c->l->slow_consumer_closes++;
    xg_client_close(c, 1008, "slow consumer");
}

int
xg_client_send(struct xg_client *c, const void *data, size_t len)
{
    if (c->kind == CLIENT_SINK) {
        if (c->closing) {
            return XG_ERROR;
        }
        c->sink(c->sink_arg, data, len);
        return XG_OK;
    }
    xg_client_fanout_flush(c->l->fo);
    if (c->closing) {
        return XG_ERROR;
    }
    if (c->kind == CLIENT_WS) {
        if (xg_ws_send_text(c->ws, data, len) != XG_OK) {
            return XG_ERROR;
        }
    } else {
        struct evbuffer *out = bufferevent_get_output(c->bev);

        evbuffer_add(out, data, len);
        evbuffer_add(out, "\n", 1);
    }
    client_count_out(c, 1);
    output_check(c);
    return XG_OK;
}

int
xg_client_send_msg(struct xg_client *c, struct xg_msg *m)
{
    if (c->kind == CLIENT_SINK) {
        return xg_client_send(c, m->data, m->len);
    }
    xg_client_fanout_flush(c->l->fo);
    if (c->closing) {
        return XG_ERROR;
    }
    if (c->kind == CLIENT_WS) {
        if (m->frame == NULL) {
            m->frame = xg_frame_text(m->data, m->len);
        }
        if (xg_ws_send_frame(c->ws, m->frame) != XG_OK) {
            return XG_ERROR;
        }
    } else if (tcp_send_msg(c, m, 1) != XG_OK) {
        return XG_ERROR;
    }
    client_count_out(c, 1);
    output_check(c);
    return XG_OK;
}

/* ---- WebSocket clients ---- */

/*
 * Whether the request PATH (its query string left out) is the listener's
 * WANT: the same text, or one that starts with WANT's text before a
 * trailing '*'.
 */
static int
ws_path_match(const char *want, const char *path)
{
    size_t n = strcspn(path, "?"), w = strlen(want);

    if (w > 0 && want[w - 1] == '*') {
        return n >= w - 1 && strncmp(path, want, w - 1) == 0;
    }
    return w == n && strncmp(path, want, n) == 0;
}

static int
ws_check(struct xg_ws *ws, const char *path, void *arg)
{
    struct xg_client *c = arg;
    const struct xg_listen_conf *lc = c->l->lc;
    const char *want = lc->path ? lc->path : "/*";   /* set by the conf */

    if (!ws_path_match(want, path)) {
        xg_client_log(XG_LOG_INFO, c, "refused: path \"%s\" does not match "
            "\"%s\"", path, want);
        return 404;
    }
    free(c->path);
    c->path = xg_strdup(path);
    /* this client is already counted */
    if (lc->max_clients != 0 && c->l->nclients > lc->max_clients) {
        xg_client_log(XG_LOG_WARN, c, "refused: listener %s is at max_clients "
            "%u", c->l->addr, lc->max_clients);
        return 503;
    }
    return 0;
}

static void
ws_on_open(struct xg_ws *ws, void *arg)
{
    struct xg_client *c = arg;

    xg_client_log(XG_LOG_INFO, c, "open");
    c->cs = c->l->pm->client_open(c->l->pp, c);
    c->opened = 1;
}

static void
ws_on_message(struct xg_ws *ws, int binary, const unsigned char *data,
    size_t len, void *arg)
{
    struct xg_client *c = arg;

    if (c->closing || !c->opened) {
        return;
    }
    c->l->pm->client_message(c->l->pp, c->cs, data, len);
}

static void
ws_on_down(struct xg_ws *ws, const struct xg_ws_down *why, void *arg)
{
    struct xg_client *c = arg;

    if (why->close_code == 1009 || why->close_code == 1003
        || why->close_code == 1007 || why->close_code == 1002) {
        xg_gateway_stats.client_errors++;
    }
    client_destroy(c, why->reason ? why->reason : "down");
}

static const struct xg_ws_cbs ws_cbs = {
    NULL, ws_on_open, ws_on_message, ws_on_down, NULL
};

/* ---- TCP clients ---- */

/* A line over client_max_message: the protocol's error, then the close. */
static void
tcp_too_big(struct xg_client *c)
{
    const char *reply = c->l->pm->client_too_big;

    xg_gateway_stats.client_errors++;
    if (reply != NULL) {
        xg_client_send(c, reply, strlen(reply));
    }
    xg_client_close(c, 1009, "message too big");
}

static void
tcp_read(struct bufferevent *bev, void *arg)
{
    struct xg_client *c = arg;
    struct evbuffer *in = bufferevent_get_input(bev);
    size_t max = c->l->gc->client_max_message;

    while (!c->closing) {
        struct evbuffer_ptr eol;
        size_t n;
        char *line;

        eol = evbuffer_search_eol(in, NULL, NULL, EVBUFFER_EOL_LF);
        if (eol.pos < 0) {
            if (evbuffer_get_length(in) > max) {
                xg_client_log(XG_LOG_WARN, c, "a line longer than "
                    "client_max_message %zu", max);
                tcp_too_big(c);
            }
            return;
        }
        n = (size_t) eol.pos;
        if (n > max) {
            xg_client_log(XG_LOG_WARN, c, "a line of %zu bytes, over "
                "client_max_message %zu", n, max);
            tcp_too_big(c);
            return;
        }
        line = xg_malloc(n + 1);
        evbuffer_remove(in, line, n);
        evbuffer_drain(in, 1);
        line[n] = '\0';
        if (n > 0 && line[n - 1] == '\r') {
            line[--n] = '\0';
        }
        if (n > 0) {
            c->l->pm->client_message(c->l->pp, c->cs,
                (const unsigned char *) line, n);
        }
        free(line);
    }
}

static void
tcp_write(struct bufferevent *bev, void *arg)
{
    struct xg_client *c = arg;

    if (c->closing && evbuffer_get_length(bufferevent_get_output(bev)) == 0) {
        client_destroy(c, c->close_reason);
    }
}

static void
tcp_event(struct bufferevent *bev, short what, void *arg)
{
    struct xg_client *c = arg;
    char why[128];

    if (what & BEV_EVENT_EOF) {
        snprintf(why, sizeof(why), "%s", c->closing ? c->close_reason : "eof");
    } else if (what & BEV_EVENT_TIMEOUT) {
        snprintf(why, sizeof(why), "%s (output not flushed in %d s)",
            c->close_reason, XG_CLIENT_TCP_CLOSE_WAIT_S);
    } else {
        snprintf(why, sizeof(why), "%s", evutil_socket_error_to_string(
            EVUTIL_SOCKET_ERROR()));
    }
    client_destroy(c, why);
}

/* ---- creation ---- */

static struct xg_client *
client_alloc(struct xg_listener *l, enum client_kind kind,
    const struct sockaddr *sa)
{
    struct xg_client *c = xg_calloc(1, sizeof(*c));
    char peer[128] = "?";

    c->l = l;
    c->kind = kind;
    c->id = ++client_seq;
    if (sa != NULL && sa->sa_family == AF_INET) {
        const struct sockaddr_in *sin = (const void *) sa;
        char a[64];

        evutil_inet_ntop(AF_INET, &sin->sin_addr, a, sizeof(a));
        snprintf(peer, sizeof(peer), "%s:%u", a, ntohs(sin->sin_port));
    } else if (sa != NULL && sa->sa_family == AF_INET6) {
        const struct sockaddr_in6 *sin6 = (const void *) sa;
        char a[64];

        evutil_inet_ntop(AF_INET6, &sin6->sin6_addr, a, sizeof(a));
        snprintf(peer, sizeof(peer), "[%s]:%u", a, ntohs(sin6->sin6_port));
    }
    snprintf(c->name, sizeof(c->name), "client %s#%llu %s",
        kind == CLIENT_WS ? "ws" : "tcp", (unsigned long long) c->id, peer);
    c->ev_close = event_new(l->base, -1, 0, on_close_ev, c);
    c->next = l->clients;
    if (l->clients) {
        l->clients->prev = c;
    }
    l->clients = c;
    xg_gateway_stats.clients_accepted++;
    return c;
}

struct xg_client *
xg_client_new_ws(struct xg_listener *l, evutil_socket_t fd,
    const struct sockaddr *sa)
{
    struct xg_client *c = client_alloc(l, CLIENT_WS, sa);
    struct xg_ws_opts o;
    struct xg_log_ctx lctx;

    memset(&o, 0, sizeof(o));
    o.max_message = l->gc->client_max_message;
    o.handshake_timeout_ms = XG_CLIENT_HANDSHAKE_MS;
    o.close_timeout_ms = XG_CLIENT_WS_CLOSE_MS;
    o.text_only = 1;
    o.log_name = c->name;
    memset(&lctx, 0, sizeof(lctx));
    xg_client_log_ctx(c, &lctx);
    o.log_ctx = &lctx;
    o.owner_logs = 1;   /* open and closed are logged here, once */
    o.direct_output = 1;    /* the fan-out sends a loop pass's batch */
    o.io = client_io(c);
    o.write_max = XG_CLIENT_WRITE_MAX;
    c->ws = xg_ws_accept(l->base, fd, NULL, &o, ws_check, &ws_cbs, c);
    return c;
}

struct xg_client *
xg_client_new_tcp(struct xg_listener *l, evutil_socket_t fd,
    const struct sockaddr *sa)
{
    struct xg_client *c = client_alloc(l, CLIENT_TCP, sa);

    c->bev = bufferevent_socket_new(l->base, fd, BEV_OPT_CLOSE_ON_FREE);
    if (c->bev == NULL) {
        evutil_closesocket(fd);
        xg_client_log(XG_LOG_ERROR, c, "cannot create a bufferevent");
        client_destroy(c, "no memory");
        return NULL;
    }
    bufferevent_setcb(c->bev, tcp_read, tcp_write, tcp_event, c);
    xg_bev_count_writes(c->bev, client_io(c));
    bufferevent_set_max_single_write(c->bev, XG_CLIENT_WRITE_MAX);
    bufferevent_enable(c->bev, EV_READ | EV_WRITE);
    xg_client_log(XG_LOG_INFO, c, "open");
    c->cs = l->pm->client_open(l->pp, c);
    c->opened = 1;
    return c;
}

/* ---- clients with no connection ---- */

/* See xg_client.h. */
struct xg_client *
xg_client_new_sink(struct event_base *base, const struct xg_gateway_conf *gc,
    const char *name, xg_client_sink_cb *sink, void *arg)
{
    struct xg_client *c = xg_calloc(1, sizeof(*c));

    c->kind = CLIENT_SINK;
    c->id = ++client_seq;
    snprintf(c->name, sizeof(c->name), "client %s", name);
    c->sink = sink;
    c->sink_arg = arg;
    c->sink_gc = gc;
    c->sink_base = base;
    return c;
}

/* See xg_client.h. */
void
xg_client_sink_conf(struct xg_client *c, const struct xg_gateway_conf *gc)
{
    c->sink_gc = gc;
}

/* See xg_client.h. */
void
xg_client_sink_free(struct xg_client *c)
{
    free(c);
}
