/*
 * xg_ws.h: the WebSocket transport (RFC 6455) over TCP or TLS, client and
 * server side, built on libevent bufferevents (+ OpenSSL) and wslay.
 *
 * A connection has exactly one owner and calls it back: on_open when the
 * upgrade is done, on_message for each complete (reassembled, validated)
 * message, on_down exactly once when the connection is over for whatever
 * reason. It never reconnects by itself. After on_down the owner frees it
 * with xg_ws_free() (allowed from inside any callback: the free is
 * deferred). xg_ws_free() on a live connection drops it without calling
 * on_down.
 */
#ifndef XG_WS_H
#define XG_WS_H

#include "xg_core.h"
#include "xg_conf.h"
#include "xg_io.h"
#include "xg_frame.h"

#include <event2/event.h>
#include <event2/dns.h>
#include <openssl/ssl.h>

struct xg_ws;
struct xg_log_ctx;

enum xg_ws_state {
    XG_WS_CONNECTING = 1,   /* dns and tcp connect */
    XG_WS_TLS,              /* tls handshake */
    XG_WS_HANDSHAKE,        /* http upgrade */
    XG_WS_OPEN,
    XG_WS_CLOSING,          /* close frame sent, waiting for the peer's */
    XG_WS_DOWN
};

/* Why a connection went down (valid only during on_down). */
struct xg_ws_down {
    const char *reason;       /* e.g. "connect to 1.2.3.4:443: Connection
                                 refused", "tls: certificate verify
                                 failed: hostname mismatch", "http 429,
                                 retry after 7s", "close 1011 \"restart\"",
                                 "message too big: sent close 1009",
                                 "ping timeout", "eof"; the upstream
                                 counts downs by these words: "timeout",
                                 and the prefixes "tls:", "dns:",
                                 "connect", "eof", "read:", "write:" */
    int         http_status;  /* a non-101 upgrade answer, else 0 */
    int         retry_after_s;/* its Retry-After in seconds, else -1 */
    int         close_code;   /* the peer's close code (1005: a close
                                 without one), else 0 */
    int         by_us;        /* we started the close (xg_ws_close) */
};

/*
 * on_state reports each transition after the first (TLS, HANDSHAKE, OPEN,
 * CLOSING), never DOWN: on_down is that one. Every callback may be NULL
 * except on_down. No callback is ever made from inside xg_ws_connect(),
 * xg_ws_accept() or xg_ws_free(); xg_ws_close() may report on_state
 * (CLOSING) before it returns. on_drain may also fire right after open.
 */
struct xg_ws_cbs {
    void (*on_state)(struct xg_ws *ws, enum xg_ws_state st, void *arg);
    void (*on_open)(struct xg_ws *ws, void *arg);
    void (*on_message)(struct xg_ws *ws, int binary,
        const unsigned char *data, size_t len, void *arg);
    void (*on_down)(struct xg_ws *ws, const struct xg_ws_down *why,
        void *arg);
    void (*on_drain)(struct xg_ws *ws, void *arg);  /* output empty */
};

/* Zero values get defaults: 16 MiB, 10 s for connect and handshake, 3 s
 * for close. */
struct xg_ws_opts {
    size_t             max_message;         /* over -> 1009 */
    uint64_t           ping_ms;             /* 0: send no pings */
    uint64_t           ping_timeout_ms;     /* 0: no check; silence -> down */
    uint64_t           connect_timeout_ms;  /* dns + tcp + tls */
    uint64_t           handshake_timeout_ms;
    uint64_t           close_timeout_ms;    /* after our close frame */
    int                text_only;           /* binary message -> 1003 */
    /* client side */
    const char        *tls_ca;              /* NULL: system store */
    int                tls_verify;
    const struct xg_header *headers;
    int                nheaders;
    const char        *log_name;            /* "upstream deribit#3" */
    const struct xg_log_ctx *log_ctx;       /* what its lines are about
                                               (copied); NULL: log_name */
    /*
     * 1: the owner logs the connection's life itself (its transitions,
     * open and down with the reason), so the transport logs none of
     * them and each event is one line. 0: the transport logs them.
     */
    int                owner_logs;
    /*
     * Server side, plain socket: xg_ws_send_frame() writes the frame to
     * the socket at once when nothing is queued ahead of it (see
     * xg_bev_send_now). For an owner that already gathers what a loop
     * pass produces into one frame buffer; one that sends message by
     * message is cheaper with libevent's one writev per loop turn.
     */
    int                direct_output;
    /*
     * Counters the connection adds to (borrowed: must outlive it): its
     * socket reads, and with direct_output its writes. NULL: none.
     */
    struct xg_io_stats *io;
    /*
     * Bytes one read callback may take from a plain socket once open: it
     * reads on until the socket is dry or this much came in. 0: what
     * libevent reads, at most 4 KiB a callback (and TLS: one record).
     */
    size_t             read_max;
    /* Bytes one write of queued output may take; 0: libevent's (16 KiB). */
    size_t             write_max;
};

/*
 * Starts a client connection to URL. Never returns NULL; failures,
 * including ones found at once, are reported through on_down later.
 * Borrows base, dns, url, opts (copied) and cbs (must outlive ws).
 */
struct xg_ws *xg_ws_connect(struct event_base *base, struct evdns_base *dns,
    const struct xg_url *url, const struct xg_ws_opts *opts,
    const struct xg_ws_cbs *cbs, void *arg);

/*
 * Server side: the callback that sees the request path and returns 0 to
 * accept the upgrade, or an HTTP status (404, 503, ...) to refuse it.
 */
typedef int (*xg_ws_accept_cb)(struct xg_ws *ws, const char *path, void *arg);

/*
 * Takes ownership of the accepted socket FD and runs the server handshake
 * (over TLS when TLS is not NULL). Never returns NULL.
 */
struct xg_ws *xg_ws_accept(struct event_base *base, evutil_socket_t fd,
    SSL_CTX *tls, const struct xg_ws_opts *opts, xg_ws_accept_cb check,
    const struct xg_ws_cbs *cbs, void *arg);

/*
 * Like xg_ws_accept() over an already made plain bufferevent BEV (e.g. one
 * end of a bufferevent_pair in tests and fuzzers), which the connection
 * takes over and frees. PEER names the other end in the log.
 */
struct bufferevent;
struct xg_ws *xg_ws_accept_bev(struct event_base *base,
    struct bufferevent *bev, const char *peer, const struct xg_ws_opts *opts,
    xg_ws_accept_cb check, const struct xg_ws_cbs *cbs, void *arg);

/*
 * A link: a connection whose far end is not a socket but a part of this
 * process that speaks for the peer (issue 17's edge: the exchange's
 * messages come out of Redis Streams, modules/venue/xg_venue_edge.c).
 * Its owner sees an ordinary client connection: the same callbacks, and
 * xg_ws_send_text(), xg_ws_close(), xg_ws_free(), xg_ws_state(),
 * xg_ws_rx_ms() behave as for a socket. The link (LP) gets:
 *  - send: one text message from the owner; XG_OK, or XG_ERROR when it
 *    cannot take it (the owner's send fails);
 *  - close: the owner closes; the link stops talking (the connection is
 *    reported down right after);
 *  - free: the connection is freed: LP must go. Called when the
 *    connection is destroyed, which may be inside xg_ws_link_message()
 *    (it then returns XG_ERROR: the link must not touch itself again).
 * The link reports with the three calls below, never from inside
 * xg_ws_link_new().
 */
struct xg_ws_link {
    int   (*send)(void *lp, const void *data, size_t len);
    void  (*close)(void *lp);
    void  (*free)(void *lp);
};

/* A link connection in state CONNECTING (opts: log names, max_message). */
struct xg_ws *xg_ws_link_new(struct event_base *base,
    const struct xg_ws_opts *opts, const struct xg_ws_cbs *cbs, void *arg,
    const struct xg_ws_link *link, void *lp);
/* The link is up: OPEN, on_open. */
void xg_ws_link_open(struct xg_ws *ws);
/*
 * One message from the far end: on_message (text). XG_ERROR when the
 * connection is down or was freed meanwhile (then LP is gone too).
 */
int xg_ws_link_message(struct xg_ws *ws, const void *data, size_t len);
/* The link failed for REASON: down, on_down follows from its own event. */
void xg_ws_link_fail(struct xg_ws *ws, const char *reason);

/*
 * Queues one message (copied). XG_ERROR when the connection is not open,
 * or for text that is not valid UTF-8 (the peer would close with 1007).
 */
int xg_ws_send_text(struct xg_ws *ws, const void *data, size_t len);
int xg_ws_send_binary(struct xg_ws *ws, const void *data, size_t len);

/*
 * Starts the close handshake with CODE and REASON (trimmed to 123 bytes);
 * on_down follows when the peer answers or after close_timeout_ms. Before
 * the connection is open it just drops it; on_down follows as well.
 */
void xg_ws_close(struct xg_ws *ws, int code, const char *reason);

/* Drops the connection at once, with no further callbacks. NULL is ok. */
void xg_ws_free(struct xg_ws *ws);

/* Bytes queued for output and not yet written to the socket. */
size_t xg_ws_output_len(const struct xg_ws *ws);

/*
 * xg_now_ms() as of the last read from the peer: in on_message, the read
 * that brought the message (one clock read a read, not one a message).
 */
uint64_t xg_ws_rx_ms(const struct xg_ws *ws);

enum xg_ws_state xg_ws_state(const struct xg_ws *ws);
const char *xg_ws_peer(const struct xg_ws *ws);   /* "127.0.0.1:5555" */
void xg_ws_set_arg(struct xg_ws *ws, void *arg);
/*
 * From now on WS pings its peer every PING_MS (0: never) and fails with
 * "ping timeout" after TIMEOUT_MS (0: never) with nothing received.
 */
void xg_ws_set_ping(struct xg_ws *ws, uint64_t ping_ms, uint64_t timeout_ms);

/*
 * Appends F by reference (one more reference, dropped when the bytes are
 * written or the connection freed) to the output of server connection
 * WS, after everything queued before. XG_ERROR when WS is a client (its
 * frames must be masked) or not open.
 */
int xg_ws_send_frame(struct xg_ws *ws, struct xg_frame *f);
/*
 * The same for LEN bytes of frames encoded back to back (NMSGS messages)
 * at DATA, borrowed for the call only (a buffer the caller reuses): what
 * the socket does not take at once (direct_output) is appended by
 * reference from *KEEP, made first when NULL (xg_frame_encoded(): one
 * reference for the caller to drop), so that a batch sent to many
 * connections is copied once at most, and not at all when every socket
 * takes it. XG_ERROR as xg_ws_send_frame().
 */
int xg_ws_send_encoded(struct xg_ws *ws, const unsigned char *data,
    size_t len, size_t nmsgs, struct xg_frame **keep);

#endif
