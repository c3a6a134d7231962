/*
 * xg_venue_binance_int.h: what the files of the Binance venue share: its
 * instance, shards, clients and REST GETs, and the functions one file
 * calls in another (xg_venue_binance.c: streams, shards, the session, the
 * fan-out, the instance and its conf; xg_venue_binance_fetch.c: the
 * trackers' REST GETs and their weight budget; xg_venue_binance_client.c:
 * the local clients and the REST front's depth). Not for other modules.
 */
#ifndef XG_VENUE_BINANCE_INT_H
#define XG_VENUE_BINANCE_INT_H

#include "xg_core.h"
#include "xg_conf.h"
#include "xg_registry.h"
#include "xg_rest.h"
#include "xg_session.h"
#include "xg_track.h"
#include "xg_venue.h"
#include "xg_venue_binance.h"
#include "xg_timer.h"

#include <event2/event.h>
#include <jansson.h>

#define BN_MAX_SHARDS       64      /* 64 x 1024 streams */
#define BN_BATCH_BYTES      8192    /* one SUBSCRIBE's text at most */
#define BN_MAX_STREAM       200     /* a stream name's length at most */
#define BN_MAX_PARAMS       1024    /* streams in one client request */
#define BN_REQUEST_MS       10000   /* a subscribe's answer */
#define BN_MAX_HELD         20000   /* a tracker's held events */
#define BN_FETCH_RETRY_MS   500
#define BN_FETCH_RETRY_MAX_MS 8000
#define BN_FETCH_TRIES      6
#define BN_REST_TIMEOUT_MS  10000
#define BN_PACE_WINDOW_MS   1100    /* a second, and a margin for jitter */
#define BN_PACE_MAX         16      /* control_rate's bound */
#define BN_CONNS_WINDOW_MS  (5 * 60 * 1000)
#define BN_CONNS_MAX        300     /* new connections per 5 min (B1) */

enum bn_route {
    BN_ROUTE_ANY = 0,       /* spot: one kind of connection */
    BN_ROUTE_PUBLIC,        /* USDⓈ-M: depth, bookTicker, trade */
    BN_ROUTE_MARKET         /* USDⓈ-M: everything else */
};


struct bn_conf {
    int             market;         /* enum xg_bn_market; -1: not set */
    unsigned        max_streams;    /* 0: the market's (1024, 200) */
    unsigned        control_rate;   /* 0: the market's (3/s, 8/s) */
    unsigned        rest_weight;    /* 0: the market's (2400, 960) */
    int             client_ping;
    uint64_t        client_ping_ms;     /* 0: the market's (20 s, 3 min) */
    uint64_t        client_pong_ms;     /* 0: the market's (1 min, 10 min) */
    struct xg_stale *stale;
    size_t          nstale;
};

/* A control message waiting for its connection's pace. */
struct bn_out {
    struct bn_out  *next;
    size_t          len;
    char            data[];
};

/* The pace of one connection's control messages. */
struct bn_pace {
    struct xg_conn *c;              /* NULL: a free slot */
    uint64_t        sent[BN_PACE_MAX]; /* the last sends, a ring */
    unsigned        nsent, head;
    struct bn_out  *out, **tail;
    size_t          nout;
};

/* A tracker's REST GET, waiting for the weight budget or in flight. */
struct bn_get {
    struct bn_shard    *sh;
    struct xg_track    *t;
    struct xg_reg_req  *q;
    struct xg_rest_get *g;          /* NULL: waiting */
    unsigned            weight;
    int                 delayed;        /* it waited for the budget */
    struct bn_get      *prev, *next;    /* the shard's */
    struct bn_get      *wnext;          /* the venue's waiting FIFO */
};

/* The request weight the venue's own GETs spent in the last minute. */
#define BN_WEIGHT_RING  512
#define BN_WEIGHT_MS    60000
#define BN_REST_INFLIGHT 4

struct bn;

struct bn_shard {
    struct bn              *b;
    unsigned                idx;
    enum bn_route           route;
    struct xg_upstream     *up;
    int                     child;      /* made here (idx > 0) */
    char                   *name;       /* its upstream's */
    struct xg_upstream_conf ucf[2];     /* a child's conf, two so that a
                                           reload never edits the live one */
    int                     ucur;
    struct xg_url           url;        /* its route's */
    struct xg_registry     *reg;
    struct xg_session      *s;
    struct xg_track_env     track;
    struct bn_pace          pace[3];
    struct xg_timer        *ev_pace;
    struct bn_get          *gets;
    int                     stopping;
    uint64_t                shutdowns;  /* serverShutdown events */
    uint64_t                paced;      /* control messages that waited */
};

struct bn_client;

/* A client's subscribe request, answered when every shard's part is. */
struct bn_req {
    struct bn_client   *bc;
    uint64_t            seq;
    char               *id;         /* the client's id, raw JSON; NULL:
                                       the path's streams (no answer) */
    int                 parts;
    char               *error;      /* the first part's error object */
    struct bn_req      *next;
};

struct bn_client {
    struct bn              *b;
    struct xg_client       *c;
    int                     combined;
    struct xg_reg_client   *rc[BN_MAX_SHARDS];
    struct bn_req          *reqs;
    struct bn_client       *prev, *next;
};

struct bn {
    struct xg_upstream         *up;
    const struct xg_upstream_conf *ucf;
    const struct bn_conf       *cf;
    const char                 *name;
    struct event_base          *base;
    enum xg_bn_market           market;
    struct bn_shard            *shards[BN_MAX_SHARDS];
    unsigned                    nshards;
    struct bn_client           *clients;
    size_t                      nclients;
    uint64_t                    req_seq;
    uint64_t                    linger_ms;  /* the clients' conf's */
    uint64_t                    conn_times[BN_CONNS_MAX]; /* a ring */
    unsigned                    nconn_times, conn_head;
    /* the REST weight budget of the trackers' GETs */
    struct bn_get              *wait_head, **wait_tail;
    unsigned                    rest_inflight;
    uint64_t                    w_ms[BN_WEIGHT_RING];
    unsigned                    w_n[BN_WEIGHT_RING];
    unsigned                    w_head, w_count;
    struct xg_timer            *ev_rest;
    uint64_t                    rest_delayed;   /* GETs that waited */
    /* the fan-out's recipient lists, reused */
    struct xg_client          **to_raw, **to_comb;
    size_t                      to_cap;

    uint64_t                    control_in;     /* from clients */
    uint64_t                    control_errors;
    uint64_t                    messages_out;
    uint64_t                    gap_notices;
    uint64_t                    rest_depth_local;
    uint64_t                    shards_refused;
};

/* ---- xg_venue_binance.c ---- */

/* 1 when NAME (LEN bytes) is a stream name by Binance's syntax. */
int bn_stream_valid(const char *name, size_t len);
/* The shard that holds stream NAME, or NULL. */
struct bn_shard *bn_shard_holding(struct bn *b, const char *name);
/* The shard a new stream NAME goes on (ADD[i]: streams about to go on
   shard i), or NULL when none can take it (logged). */
struct bn_shard *bn_shard_for(struct bn *b, const char *name,
    const size_t *add);
/* One event of CH to its subscribers, in each one's framing: RAW to raw
   clients, COMB (NULL: built from RAW) to combined ones. */
void bn_fanout(struct bn *b, struct xg_reg_channel *ch, const char *raw,
    size_t rlen, const char *comb, size_t clen);

/* ---- xg_venue_binance_fetch.c: the trackers and their REST GETs ---- */

/* CH's tracker, made on first use (NULL: CH is not tracked). */
struct xg_track *bn_track_get(struct bn_shard *sh,
    struct xg_reg_channel *ch);
/* The tracker env's callbacks (struct xg_track_env). */
void bn_track_send(void *ctx, void *chan, struct xg_reg_req *q);
void bn_track_fanout(void *ctx, void *chan, const char *data, size_t len);
void bn_track_notice(void *ctx, void *chan, uint64_t duration_ms,
    const char *reason);
uint64_t bn_track_now(void *ctx);
/* The registry's channel free callback: the tracker's GETs go first. */
void bn_track_free(void *ext);
/* xg_registry_channel_foreach(): CH's tracker sees its connection go. */
void bn_track_down_cb(struct xg_reg_channel *ch, void *arg);
/* Drops G, waiting or in flight, and its request. */
void bn_get_drop(struct bn_get *g);
/* The budget's timer: the waiting GETs go when they may. */
void bn_on_rest_timer(evutil_socket_t fd, short what, void *arg);
/* rest_weight, and what the GETs spent of it in the last minute. */
unsigned bn_rest_budget(const struct bn *b);
unsigned bn_rest_spent(struct bn *b, uint64_t now);

/* ---- xg_venue_binance_client.c: the local clients ---- */

/* The venue's client_open, client_message, client_close and rest_local
   (src/xg_venue.h). */
void *bn_client_open(void *p, struct xg_client *c);
void bn_client_message(void *p, void *cs, const unsigned char *udata,
    size_t len);
void bn_client_close(void *p, void *cs, const char *reason);
char *bn_rest_local(void *p, const char *path, const char *query,
    size_t *len);
/* The session's subreq_done(): one shard's part of a client's
   SUBSCRIBE is answered; the client hears once every part is. */
void bn_subreq_done(void *p, struct xg_reg_subreq *sr);

#endif
