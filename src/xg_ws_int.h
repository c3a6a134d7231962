/*
 * xg_ws_int.h: what the WebSocket transport's files share (xg_ws.c: the
 * connection, wslay, the client side; xg_ws_server.c: the accepting side,
 * its upgrade handshake and its pre-encoded send path). Nothing outside
 * them includes it.
 */
#ifndef XG_WS_INT_H
#define XG_WS_INT_H

#include "xg_core.h"
#include "xg_log.h"
#include "xg_ws.h"
#include "xg_wsproto.h"
#include "xg_timer.h"

#include <sys/types.h>
#include <time.h>

#include <event2/bufferevent.h>
#include <event2/event.h>
#include <event2/util.h>
#include <wslay/wslay.h>

#define WS_DEFAULT_MAX_MESSAGE   ((size_t) 16 * 1024 * 1024)
#define WS_DEFAULT_TIMEOUT_MS    10000
#define WS_DEFAULT_CLOSE_MS      3000
#define WS_READ_CHUNK            (64 * 1024)    /* one recv of read_more */
#define WS_LIBEVENT_READ         4096   /* libevent 2.1's EVBUFFER_MAX_READ */
#define WS_TLS_READ_CHUNK        (16 * 1024)    /* one TLS record at most */

/* The argument of an evdns request: outlives the ws if it is freed. */
struct ws_dnsreq {
    struct xg_ws  *ws;
};

struct xg_ws {
    struct event_base       *base;
    struct evdns_base       *dns;
    int                      server;
    int                      tls;
    enum xg_ws_state         state;
    struct bufferevent      *bev;
    SSL_CTX                 *ssl_ctx;       /* client side: our reference */
    wslay_event_context_ptr  wslay;
    const struct xg_ws_cbs  *cbs;
    void                    *arg;
    xg_ws_accept_cb          check;
    struct xg_ws_opts        opts;          /* strings below are copies */
    char                    *name;
    struct xg_log_ctx       *lctx;      /* what its lines are about, or
                                           NULL: NAME is their prefix */
    struct xg_url            url;
    char                     host[256];     /* url host without brackets */
    char                     peer[300];
    char                     key[XG_WSPROTO_KEY_LEN + 1];

    struct xg_timer         *ev_deadline;   /* connect/tls/handshake/close */
    struct xg_timer         *ev_ping;
    struct xg_timer         *ev_silence;
    struct event            *ev_down;
    uint64_t                 last_rx_ms;

    struct ws_dnsreq        *dnsreq;
    struct evdns_getaddrinfo_request *dns_handle;
    struct evutil_addrinfo  *ai_list;
    struct evutil_addrinfo  *ai_next;
    char                     connect_err[400];
    size_t                   in_left;       /* input left after a feed */

    int                      busy;
    unsigned                 freed:1;       /* xg_ws_free() while busy */
    unsigned                 ending:1;      /* flushing, then down */
    unsigned                 discard:1;     /* closing: input ignored */
    unsigned                 shut_wr:1;
    unsigned                 release_bev:1;
    unsigned                 down_queued:1;
    unsigned                 direct:1;      /* opts.direct_output, no TLS */

    /*
     * The message being received. wslay runs without buffering: it would
     * allocate each frame's announced length up front, so a peer could pin
     * max_message bytes per connection while sending next to nothing.
     * Here memory grows with the bytes that really arrive.
     */
    unsigned char           *rx;
    size_t                   rx_len;
    size_t                   rx_cap;
    unsigned                 rx_ctrl:1;     /* current frame is control */
    unsigned                 rx_over:1;     /* over the limit: ignore */
    unsigned                 rx_one:1;      /* frame is a whole message */
    uint64_t                 rx_frame_len;  /* its payload length */
    /* a message that came as one frame in one chunk: in wslay's buffer,
       valid until wslay reads again (on_msg follows the chunk at once),
       handed over there rather than copied to rx */
    const unsigned char     *rx_whole;
    size_t                   rx_whole_len;
    unsigned                 rx_tag:1;      /* see ws_rx_tag */
    unsigned                 rx_frag:1;     /* wslay is inside a fragmented
                                               message (see ws_rx_whole) */
    unsigned                 rx_inplace:1;  /* on_message has a message in
                                               the input (ws_rx_whole) */
    unsigned char            rx_hdr[XG_WSPROTO_MAX_FRAME_HEADER];
    size_t                   rx_nhdr;       /* header bytes seen so far */
    uint64_t                 rx_left;       /* payload bytes to pass */

    /* a link (xg_ws_link_new()), else NULL */
    const struct xg_ws_link *link;
    void                    *link_p;

    char                     reason[512];
    int                      http_status;
    int                      retry_after_s;
    int                      close_code;
    int                      by_us;
};


/* 1 when WS is gone (freed while busy, or down) and must not be used. */
static inline int
ws_dead(const struct xg_ws *ws)
{
    return ws->freed || ws->state == XG_WS_DOWN;
}

/* ---- xg_ws.c, for the server side ---- */

/* Around a call to the owner: while busy, xg_ws_free() is deferred;
   ws_leave() returns 1 when WS was freed meanwhile (and is gone). */
void ws_enter(struct xg_ws *ws);
int ws_leave(struct xg_ws *ws);

/*
 * One log line about WS: about what its owner said it is (an upstream's
 * connection, a client) when it said, else prefixed with its name.
 */
void ws_log(const struct xg_ws *ws, int level, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/*
 * Takes the connection down for the reason FMT (kept if one was already
 * recorded). With FLUSH, what is queued for output is written first,
 * within close_timeout_ms.
 */
void ws_fail(struct xg_ws *ws, int flush, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/*
 * A connection with OPTS copied (defaults filled in), its timers made,
 * no bufferevent yet, in no state: the caller sets them.
 */
struct xg_ws *ws_new(struct event_base *base, const struct xg_ws_opts *opts,
    const struct xg_ws_cbs *cbs, void *arg);

/* Makes BEV read and write as much at a time as WS's options say. */
void ws_bev_tune(struct xg_ws *ws, struct bufferevent *bev);

/*
 * The upgrade is done: the wslay context is made and the owner told
 * (on_open). WS may be dead when it returns.
 */
void ws_open(struct xg_ws *ws);

/*
 * The length of a complete HTTP head in WS's input, 0 if more is needed,
 * -1 when none fits in the bound. *P gets its bytes.
 */
ssize_t ws_find_head(struct xg_ws *ws, const char **p);

/* The bufferevent callbacks of every connection (ARG is the ws). */
void ws_read_cb(struct bufferevent *bev, void *arg);
void ws_write_cb(struct bufferevent *bev, void *arg);
void ws_event_cb(struct bufferevent *bev, short what, void *arg);

/* ---- xg_ws_server.c, for the connection ---- */

/*
 * A server connection in HANDSHAKE: reads the upgrade request from its
 * input and answers 101 (then opens) or an HTTP error (then fails).
 * Does nothing until the whole head is in. WS may be dead when it
 * returns.
 */
void ws_srv_handshake(struct xg_ws *ws);

#endif
