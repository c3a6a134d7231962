/*
 * xg_client.h: one local client of a listener (a trading bot), over
 * WebSocket (text frames) or plain TCP (one JSON message per line).
 *
 * A client belongs to its listener and talks to the protocol module of
 * the listener's upstream through the module's client hooks (xg_venue.h):
 * each complete message goes to client_message(); client_close() is
 * called exactly once when the client is gone. The module answers with
 * xg_client_send() and fans out notifications with xg_client_send_msg(),
 * which shares one encoded buffer by reference among all recipients.
 *
 * Closing is always asynchronous (as in redis): xg_client_close() may be
 * called from anywhere, even in the middle of a fan-out loop; the client
 * stops receiving at once and is torn down from the event loop.
 */
#ifndef XG_CLIENT_H
#define XG_CLIENT_H

#include "xg_core.h"
#include "xg_conf.h"

#include <event2/event.h>
#include <jansson.h>

struct xg_client;
struct xg_listener;
struct xg_log_ctx;

/* The gateway core's main-context settings (struct xg_main_conf.gateway_conf). */
struct xg_gateway_cred {
    char *id;
    char *secret;
    char *src;      /* where the secret comes from (env:/file:), for -T */
    char *account;  /* account=NAME: the upstream account it trades on */
};

struct xg_gateway_conf {
    struct xg_gateway_cred *creds;         /* client_credentials ID SECRET */
    int                     ncreds;
    int                     client_auth;   /* 1 (default) or 0: trust all */
    size_t                  client_max_message;
    size_t                  out_hard;      /* client_output_limit HARD */
    size_t                  out_soft;      /*                     SOFT */
    uint64_t                out_soft_ms;   /*                     SECONDS */
    unsigned                client_rate;   /* requests/s, 0: no limit */
    unsigned                client_max_channels;
    uint64_t                unsubscribe_linger_ms;
    int                     order_outcome; /* 0 (default) or 1: every
                                              client gets exgate/
                                              order_outcome (Deribit) */
};

/* The defaults when the conf sets nothing (never NULL). */
const struct xg_gateway_conf *xg_gateway_conf_get(
    const struct xg_main_conf *mc);

/* Totals over every listener, for /status. */
struct xg_gateway_stats {
    uint64_t messages_out;
    uint64_t slow_consumer_closes;
    uint64_t client_errors;
    uint64_t clients_accepted;
};
extern struct xg_gateway_stats xg_gateway_stats;

/* ---- shared outgoing messages (fan-out by reference) ---- */

struct xg_msg;

/*
 * Copies LEN bytes of DATA once into a refcounted message (one reference
 * held by the caller). The WebSocket frame and the TCP line ("\n"
 * appended) are built from it at most once each, whatever the number of
 * recipients.
 */
struct xg_msg *xg_msg_new(const void *data, size_t len);
void xg_msg_unref(struct xg_msg *m);

/* ---- clients ---- */

/*
 * Queues one message to C (copied). Returns XG_OK, or XG_ERROR when C is
 * closing. May start C's asynchronous close (output limits).
 */
int xg_client_send(struct xg_client *c, const void *data, size_t len);
/* The same for a shared message M (borrowed; references taken as needed). */
int xg_client_send_msg(struct xg_client *c, struct xg_msg *m);

/*
 * The fan-out batch of one event loop (struct xg_listener.fo points to
 * it). Made with the loop's base and freed before it; every listener on
 * that base shares it, so that one client never sees two orders.
 */
struct xg_fanout;

/*
 * A fan-out for the loop of BASE (borrowed: it must outlive the fan-out).
 * Returns NULL when libevent cannot make its event.
 */
struct xg_fanout *xg_client_fanout_new(struct event_base *base);
/*
 * Sends FO's held batch (its recipients must still be open: any client
 * teardown sends the batch first) and frees FO. NULL is fine. Call it
 * after every client of the loop is freed, before the base.
 */
void xg_client_fanout_free(struct xg_fanout *fo);

/*
 * Fans one notification (DATA, LEN: copied) out to the N clients TO,
 * through the fan-out of their listeners' loop. Consecutive calls with
 * the same recipients (whatever the channel: a bot on 100 channels gets a
 * burst over all of them in one write) are held and sent at the end of
 * the loop pass as one shared buffer, one reference per client; anything
 * else written to a client, and any close, sends the held batch first,
 * so every client sees the same order as without batching. A sink client
 * among TO (it has no listener, so no loop) gets its copy at once, as
 * everything sent to it.
 */
void xg_client_fanout(struct xg_client *const *to, size_t n,
    const void *data, size_t len);
/* Sends FO's held batch now. */
void xg_client_fanout_flush(struct xg_fanout *fo);
/*
 * The /status hook (an xg_admin_status_cb, ARG the struct xg_fanout):
 * sets "fanout" in ROOT to the fan-out's counters, the batches by their
 * messages and the clients' sends (see struct xg_io_stats).
 */
void xg_client_fanout_status(json_t *root, void *arg);

/*
 * Starts closing C with CODE (a WebSocket close code; TCP clients just
 * close) and REASON, logged. The output already queued is sent first
 * unless CODE is 1008 (slow consumer). Safe from any callback.
 */
void xg_client_close(struct xg_client *c, int code, const char *reason);

/* 1 when C is closing and gets nothing more. */
int xg_client_closing(const struct xg_client *c);
/* "client ws#7 127.0.0.1:40000" for logs. */
const char *xg_client_name(const struct xg_client *c);
/*
 * Sets CTX's client fields (its id, name and address) to C's, leaving
 * the others as they are: a line about C and an upstream or a request.
 * The strings are C's, valid while C is.
 */
void xg_client_log_ctx(const struct xg_client *c, struct xg_log_ctx *ctx);
/* Logs one line at LEVEL about C ("client ws#3 ADDR: ..." or json). */
void xg_client_log(int level, const struct xg_client *c, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* The gateway settings that apply to C. */
const struct xg_gateway_conf *xg_client_conf(const struct xg_client *c);
struct event_base *xg_client_base(const struct xg_client *c);
/*
 * The path C's WebSocket upgrade asked for, query string included
 * ("/stream?streams=a/b"), or NULL for a TCP client.
 */
const char *xg_client_path(const struct xg_client *c);
/*
 * Counts one request of C against client_rate: 1 when it is over the
 * rate in this second (the venue refuses it in its protocol's words).
 */
int xg_client_rate_exceeded(struct xg_client *c);
/*
 * A WebSocket client C is pinged every PING_MS (0: never) and closed
 * after TIMEOUT_MS (0: never) with nothing from it (a pong counts), as an
 * exchange does; nothing for a TCP client.
 */
void xg_client_set_ping(struct xg_client *c, uint64_t ping_ms,
    uint64_t timeout_ms);
/* Counts a client error (bad input, refused request) in the totals. */
void xg_client_count_error(struct xg_client *c);

/* ---- clients with no connection ---- */

/* Where a sink client's messages go: DATA, LEN bytes, borrowed. */
typedef void xg_client_sink_cb(void *arg, const char *data, size_t len);

/*
 * A client with no listener and no socket, for a part of exgate that
 * hands a venue requests on someone else's behalf (issue 17: an edge's
 * requests served by the core, one such client per edge). Everything
 * sent to it (xg_client_send(), xg_client_send_msg()) goes at once, in
 * order, to SINK(ARG, ...); GC (borrowed: xg_client_sink_conf() replaces
 * it on a reload) are its gateway settings, except client_rate, which a
 * sink client is never held to (whoever feeds it limits its own
 * senders). Logs name it "client NAME". xg_client_close() only marks it
 * closing (nothing more is sent); its owner calls the venue's
 * client_open and client_close itself and frees it with
 * xg_client_sink_free() after the latter. Never returns NULL.
 */
struct xg_client *xg_client_new_sink(struct event_base *base,
    const struct xg_gateway_conf *gc, const char *name,
    xg_client_sink_cb *sink, void *arg);
void xg_client_sink_conf(struct xg_client *c,
    const struct xg_gateway_conf *gc);
void xg_client_sink_free(struct xg_client *c);

#endif
