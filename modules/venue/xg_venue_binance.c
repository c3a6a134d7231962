/*
 * xg_venue_binance.c: the Binance market-data venue (`protocol binance;`,
 * `market spot|usdm;`): local clients speak Binance's own stream protocol
 * (raw /ws and combined /stream framing, the five control methods), and
 * the gateway holds the exchange's stream connections for all of them.
 *
 * Streams and connections. Every stream any client holds is subscribed
 * once upstream, on a "shard": one supervised upstream connection (its
 * own state machine, reconnect policy, rotation and session, see
 * src/xg_session.h) carrying at most max_streams_per_connection streams
 * of one route. On spot every stream has the same route; on USDⓈ-M the
 * exchange routes by data category (depth, bookTicker and trade on
 * /public, the rest on /market), so each route has shards of its own.
 * Shard 0 runs on the configured upstream itself; the others are
 * upstreams this module makes with a copy of its conf (named NAME/2,
 * NAME/3 ...), opened when a stream needs room, and shown in /status
 * under "shards".
 *
 * Control messages toward Binance (SUBSCRIBE, UNSUBSCRIBE) are paced per
 * connection below the exchange's limit (5/s spot, 10/s USDⓈ-M, counting
 * the pongs the WebSocket layer sends at once), and every stream of a
 * restore goes in as few SUBSCRIBEs as BN_BATCH_BYTES allows.
 *
 * Clients. A client's control messages are answered here with its own
 * id, byte for byte; nothing a client sends goes upstream as it is. Data
 * is fanned out in each client's framing: the upstream connections use
 * combined framing, so a combined client gets the exchange's bytes as
 * they came and a raw client the "data" member.
 *
 * Continuity: depth streams are kept as books and bridged, trades
 * backfilled, by the trackers of xg_venue_binance_track.c; a
 * serverShutdown event starts a make-before-break rotation of its
 * connection at once.
 */
#include "xg_core.h"
#include "xg_client.h"
#include "xg_conf.h"
#include "xg_jscan.h"
#include "xg_log.h"
#include "xg_registry.h"
#include "xg_rest.h"
#include "xg_session.h"
#include "xg_track.h"
#include "xg_upstream.h"
#include "xg_venue.h"
#include "xg_venue_binance.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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

static const char *const bn_route_names[] = { "stream", "public", "market" };

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
    struct event           *ev_pace;
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
    struct event               *ev_rest;
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

static const struct bn_conf bn_defaults = { -1, 0, 0, 0, 0, 0, 0, NULL, 0 };

static void bn_shard_flush_pace(struct bn_shard *sh, struct bn_pace *pc);
static void bn_on_rest(void *arg, int status, const char *body, size_t len,
    const struct evkeyvalq *headers, const char *err);
static struct bn_shard *bn_shard_new(struct bn *b, enum bn_route route);

/* ---- stream names -------------------------------------------------------- */

/*
 * 1 when NAME (LEN bytes) is a stream name by Binance's syntax:
 * [!]word(@word)+ of letters, digits and '_' (the all-market
 * "!bookTicker" has no '@').
 */
static int
bn_stream_valid(const char *name, size_t len)
{
    size_t i, word = 0;
    int at = 0;

    if (len == 0 || len > BN_MAX_STREAM) {
        return 0;
    }
    i = name[0] == '!' ? 1 : 0;
    for (; i < len; i++) {
        if (name[i] == '@') {
            if (word == 0) {
                return 0;
            }
            at = 1;
            word = 0;
        } else if (isalnum((unsigned char) name[i]) || name[i] == '_') {
            word++;
        } else {
            return 0;
        }
    }
    return word > 0 && (at || name[0] == '!');
}

/* The USDⓈ-M route of stream NAME (§B2, E1.1); spot has one. */
static enum bn_route
bn_route_of(const struct bn *b, const char *name)
{
    const char *kind = strchr(name, '@');

    if (b->market == XG_BN_SPOT) {
        return BN_ROUTE_ANY;
    }
    kind = kind != NULL ? kind + 1 : name + (name[0] == '!');
    if (strncmp(kind, "depth", 5) == 0 || strncmp(kind, "rpiDepth", 8) == 0
        || strncmp(kind, "bookTicker", 10) == 0 || strcmp(kind, "trade") == 0)
    {
        return BN_ROUTE_PUBLIC;
    }
    return BN_ROUTE_MARKET;
}

static unsigned
bn_max_streams(const struct bn *b)
{
    return b->cf->max_streams ? b->cf->max_streams
           : b->market == XG_BN_SPOT ? 1024 : 200;
}

static unsigned
bn_control_rate(const struct bn *b)
{
    /* the exchange's 5/s and 10/s count pings and pongs too */
    return b->cf->control_rate ? b->cf->control_rate
           : b->market == XG_BN_SPOT ? 3 : 8;
}

/* The shard that holds stream NAME, or NULL. */
static struct bn_shard *
bn_shard_holding(struct bn *b, const char *name)
{
    unsigned i;

    for (i = 0; i < b->nshards; i++) {
        if (xg_registry_channel(b->shards[i]->reg, name) != NULL) {
            return b->shards[i];
        }
    }
    return NULL;
}

/*
 * The shard a new stream NAME goes on: one of its route with room, or a
 * new one (NULL when BN_MAX_SHARDS are open: logged). ADD[i] streams are
 * about to go on shard i besides those it holds.
 */
static struct bn_shard *
bn_shard_for(struct bn *b, const char *name, const size_t *add)
{
    enum bn_route route = bn_route_of(b, name);
    struct bn_shard *sh = bn_shard_holding(b, name);
    unsigned i;

    if (sh != NULL) {
        return sh;
    }
    for (i = 0; i < b->nshards; i++) {
        sh = b->shards[i];
        if (sh->route == route && !sh->stopping
            && xg_registry_nchannels(sh->reg) + add[i] < bn_max_streams(b))
        {
            return sh;
        }
    }
    return bn_shard_new(b, route);
}

/* ---- pacing of control messages ----------------------------------------- */

static struct bn_pace *
bn_pace_of(struct bn_shard *sh, struct xg_conn *c, int make)
{
    size_t i;
    struct bn_pace *free_slot = NULL;

    for (i = 0; i < XG_NELEM(sh->pace); i++) {
        if (sh->pace[i].c == c) {
            return &sh->pace[i];
        }
        if (sh->pace[i].c == NULL && free_slot == NULL) {
            free_slot = &sh->pace[i];
        }
    }
    if (!make || free_slot == NULL) {
        return NULL;
    }
    memset(free_slot, 0, sizeof(*free_slot));
    free_slot->c = c;
    free_slot->tail = &free_slot->out;
    return free_slot;
}

/* Forgets C's pace and what waited for it (C is gone). */
static void
bn_pace_drop(struct bn_shard *sh, struct xg_conn *c)
{
    struct bn_pace *pc = bn_pace_of(sh, c, 0);
    struct bn_out *o;

    if (pc == NULL) {
        return;
    }
    while ((o = pc->out) != NULL) {
        pc->out = o->next;
        free(o);
    }
    pc->c = NULL;
}

/* Milliseconds until PC may send again (0: now). */
static uint64_t
bn_pace_wait(const struct bn_shard *sh, const struct bn_pace *pc,
    uint64_t now)
{
    unsigned rate = bn_control_rate(sh->b);
    uint64_t oldest;

    if (pc->nsent < rate) {
        return 0;
    }
    /* the rate-th send back from the newest */
    oldest = pc->sent[(pc->head + BN_PACE_MAX - rate) % BN_PACE_MAX];
    return oldest + BN_PACE_WINDOW_MS > now
           ? oldest + BN_PACE_WINDOW_MS - now : 0;
}

static void
bn_pace_stamp(struct bn_pace *pc, uint64_t now)
{
    pc->sent[pc->head] = now;
    pc->head = (pc->head + 1) % BN_PACE_MAX;
    if (pc->nsent < BN_PACE_MAX) {
        pc->nsent++;
    }
}

static void
bn_pace_arm(struct bn_shard *sh)
{
    uint64_t now = xg_now_ms(), ms, best = UINT64_MAX;
    struct timeval tv;
    size_t i;

    for (i = 0; i < XG_NELEM(sh->pace); i++) {
        if (sh->pace[i].c != NULL && sh->pace[i].out != NULL) {
            ms = bn_pace_wait(sh, &sh->pace[i], now);
            best = ms < best ? ms : best;
        }
    }
    if (best == UINT64_MAX) {
        return;
    }
    tv.tv_sec = (time_t) (best / 1000);
    tv.tv_usec = (suseconds_t) ((best % 1000) * 1000 + 1000);
    evtimer_add(sh->ev_pace, &tv);
}

/* Sends what PC may send now, in order. */
static void
bn_shard_flush_pace(struct bn_shard *sh, struct bn_pace *pc)
{
    uint64_t now = xg_now_ms();
    struct bn_out *o;

    while ((o = pc->out) != NULL && bn_pace_wait(sh, pc, now) == 0) {
        pc->out = o->next;
        if (pc->out == NULL) {
            pc->tail = &pc->out;
        }
        pc->nout--;
        bn_pace_stamp(pc, now);
        if (xg_upstream_send_on(pc->c, o->data, o->len) != XG_OK) {
            xg_conn_log(XG_LOG_DEBUG, pc->c, "a paced control message "
                "dropped: the connection is closing");
        }
        free(o);
    }
}

static void
bn_on_pace(evutil_socket_t fd, short what, void *arg)
{
    struct bn_shard *sh = arg;
    size_t i;

    for (i = 0; i < XG_NELEM(sh->pace); i++) {
        if (sh->pace[i].c != NULL) {
            bn_shard_flush_pace(sh, &sh->pace[i]);
        }
    }
    bn_pace_arm(sh);
}

/* The session's write(): a control message on C, now or when C's pace
   allows (in order either way). */
static int
bn_write(void *p, struct xg_conn *c, const char *data, size_t len)
{
    struct bn_shard *sh = p;
    struct bn_pace *pc = bn_pace_of(sh, c, 1);
    uint64_t now = xg_now_ms();
    struct bn_out *o;

    if (pc == NULL) {
        return xg_upstream_send_on(c, data, len);   /* cannot happen */
    }
    if (pc->out == NULL && bn_pace_wait(sh, pc, now) == 0) {
        bn_pace_stamp(pc, now);
        return xg_upstream_send_on(c, data, len);
    }
    o = xg_malloc(sizeof(*o) + len);
    o->next = NULL;
    o->len = len;
    memcpy(o->data, data, len);
    *pc->tail = o;
    pc->tail = &o->next;
    pc->nout++;
    sh->paced++;
    bn_pace_arm(sh);
    return XG_OK;
}

/* ---- the fan-out, in each client's framing ------------------------------- */

static void
bn_to_reserve(struct bn *b, size_t n)
{
    if (n > b->to_cap) {
        b->to_cap = n * 2;
        b->to_raw = xg_realloc(b->to_raw, b->to_cap * sizeof(*b->to_raw));
        b->to_comb = xg_realloc(b->to_comb, b->to_cap * sizeof(*b->to_comb));
    }
}

/*
 * One event of CH to its subscribers: RAW (RLEN bytes) to raw clients,
 * COMB (CLEN bytes; NULL: built from RAW) to combined ones.
 */
static void
bn_fanout(struct bn *b, struct xg_reg_channel *ch, const char *raw,
    size_t rlen, const char *comb, size_t clen)
{
    size_t i, nraw = 0, ncomb = 0;
    char *made = NULL;

    bn_to_reserve(b, ch->nsubs);
    for (i = 0; i < ch->nsubs; i++) {
        struct bn_client *bc = ch->subs[i]->owner;

        if (bc->combined) {
            b->to_comb[ncomb++] = bc->c;
        } else {
            b->to_raw[nraw++] = bc->c;
        }
    }
    if (nraw > 0) {
        xg_client_fanout(ch, b->to_raw, nraw, raw, rlen);
    }
    if (ncomb > 0) {
        if (comb == NULL) {
            size_t n = strlen(ch->name) + rlen + 32;

            made = xg_malloc(n);
            clen = (size_t) snprintf(made, n, "{\"stream\":\"%s\",\"data\":",
                ch->name);
            memcpy(made + clen, raw, rlen);
            clen += rlen;
            made[clen++] = '}';
            comb = made;
        }
        xg_client_fanout((const char *) ch + 1, b->to_comb, ncomb, comb,
            clen);
    }
    b->messages_out += nraw + ncomb;
    free(made);
}

/* ---- trackers: env callbacks --------------------------------------------- */

static void
bn_get_unlink(struct bn_get *g)
{
    if (g->prev != NULL) {
        g->prev->next = g->next;
    } else {
        g->sh->gets = g->next;
    }
    if (g->next != NULL) {
        g->next->prev = g->prev;
    }
}

/*
 * Binance's request weight of GET PATH (rest-api.md, E2, E4): depth by its
 * limit, the trade lists by market; 20 for anything else.
 */
static unsigned
bn_rest_weight(const struct bn *b, const char *path)
{
    const char *l = strstr(path, "limit=");
    unsigned long limit = l != NULL ? strtoul(l + 6, NULL, 10) : 100;
    int spot = b->market == XG_BN_SPOT;

    if (strstr(path, "/depth?") != NULL) {
        if (spot) {
            return limit <= 100 ? 5 : limit <= 500 ? 25
                   : limit <= 1000 ? 50 : 250;
        }
        return limit <= 50 ? 2 : limit <= 100 ? 5 : limit <= 500 ? 10 : 20;
    }
    if (strstr(path, "/historicalTrades?") != NULL) {
        return spot ? 25 : 20;
    }
    if (strstr(path, "/aggTrades?") != NULL) {
        return spot ? 4 : 20;
    }
    if (strstr(path, "/trades?") != NULL) {
        return spot ? 25 : 5;
    }
    return 20;
}

static unsigned
bn_rest_budget(const struct bn *b)
{
    /* about 40 % of Binance's 6000 (spot) and 2400 (USDⓈ-M) a minute: the
       rest is the REST front's, for the clients */
    return b->cf->rest_weight ? b->cf->rest_weight
           : b->market == XG_BN_SPOT ? 2400 : 960;
}

/* The weight spent in the last minute (older entries dropped). */
static unsigned
bn_rest_spent(struct bn *b, uint64_t now)
{
    unsigned i, sum = 0;

    while (b->w_count > 0) {
        i = (b->w_head + BN_WEIGHT_RING - b->w_count) % BN_WEIGHT_RING;
        if (now - b->w_ms[i] < BN_WEIGHT_MS) {
            break;
        }
        b->w_count--;
    }
    for (i = 0; i < b->w_count; i++) {
        sum += b->w_n[(b->w_head + BN_WEIGHT_RING - 1 - i) % BN_WEIGHT_RING];
    }
    return sum;
}

/*
 * Sends the waiting GETs in order while the budget and BN_REST_INFLIGHT
 * allow; else arms the timer for when the oldest spending expires.
 */
static void
bn_rest_pump(struct bn *b)
{
    struct xg_rest *rest = xg_upstream_rest(b->up);
    uint64_t now = xg_now_ms();
    struct bn_get *g;
    struct timeval tv;

    while ((g = b->wait_head) != NULL && b->rest_inflight < BN_REST_INFLIGHT) {
        unsigned spent = bn_rest_spent(b, now);

        if (spent > 0 && spent + g->weight > bn_rest_budget(b)) {
            uint64_t oldest = b->w_ms[(b->w_head + BN_WEIGHT_RING
                                       - b->w_count) % BN_WEIGHT_RING];
            uint64_t ms = oldest + BN_WEIGHT_MS - now + 10;
            struct bn_get *w;

            for (w = g; w != NULL; w = w->wnext) {
                b->rest_delayed += !w->delayed;
                w->delayed = 1;
            }

            tv.tv_sec = (time_t) (ms / 1000);
            tv.tv_usec = (suseconds_t) ((ms % 1000) * 1000);
            evtimer_add(b->ev_rest, &tv);
            return;
        }
        b->wait_head = g->wnext;
        if (b->wait_head == NULL) {
            b->wait_tail = &b->wait_head;
        }
        g->wnext = NULL;
        if (b->w_count == BN_WEIGHT_RING) {
            b->w_count--;       /* the oldest is forgotten */
        }
        b->w_ms[b->w_head] = now;
        b->w_n[b->w_head] = g->weight;
        b->w_head = (b->w_head + 1) % BN_WEIGHT_RING;
        b->w_count++;
        b->rest_inflight++;
        g->g = xg_rest_get(rest, g->q->text, BN_REST_TIMEOUT_MS, bn_on_rest,
            g);
        if (g->g == NULL) {
            /* no event could be made: a failed GET, retried by its
               tracker (the callback would never come) */
            bn_on_rest(g, 0, NULL, 0, NULL, "out of events");
        }
    }
}

static void
bn_on_rest_timer(evutil_socket_t fd, short what, void *arg)
{
    bn_rest_pump(arg);
}

/* Takes G out of the venue's waiting FIFO (it is there). */
static void
bn_rest_unwait(struct bn *b, struct bn_get *g)
{
    struct bn_get **pp;

    for (pp = &b->wait_head; *pp != g; pp = &(*pp)->wnext) {
        /* it is there */
    }
    *pp = g->wnext;
    if (b->wait_tail == &g->wnext) {
        b->wait_tail = pp;
    }
}

/* Drops G, waiting or in flight, and its request. */
static void
bn_get_drop(struct bn_get *g)
{
    struct bn *b = g->sh->b;

    bn_get_unlink(g);
    if (g->g != NULL) {
        xg_rest_cancel(g->g);
        b->rest_inflight--;
    } else {
        bn_rest_unwait(b, g);
    }
    xg_registry_req_free(g->q);
    free(g);
}

/* A tracker's REST answer: to the tracker, or retried later. */
static void
bn_on_rest(void *arg, int status, const char *body, size_t len,
    const struct evkeyvalq *headers, const char *err)
{
    struct bn_get *g = arg;
    struct bn *b = g->sh->b;
    struct xg_track *t = g->t;
    struct xg_reg_req *q = g->q;
    struct xg_jspan result = { NULL, 0 }, error = { NULL, 0 };
    char *etext = NULL;

    bn_get_unlink(g);
    free(g);
    b->rest_inflight--;
    bn_rest_pump(b);    /* the next one goes first: T may send another */
    if (status == 200) {
        result.p = body;
        result.len = len;
        xg_track_answer(t, q, &result, &error);
        xg_registry_req_free(q);
        return;
    }
    {
        json_t *e = json_pack("{s:i, s:s#}", "status", status,
            "msg", status == 0 ? (err ? err : "no answer") : body,
            status == 0 ? strlen(err ? err : "no answer")
                        : (len > 300 ? 300 : len));

        etext = e != NULL ? json_dumps(e, JSON_COMPACT) : NULL;
        json_decref(e);
    }
    if (etext == NULL) {
        etext = xg_strdup("{\"status\":0,\"msg\":\"?\"}");
    }
    /* 5xx, 429, 418, no answer: not now; 4xx: no */
    if ((status == 0 || status >= 500 || status == 429 || status == 418)
        && xg_track_retry(t, q, etext, (int) strlen(etext)))
    {
        free(etext);
        return;
    }
    error.p = etext;
    error.len = strlen(etext);
    xg_track_answer(t, q, &result, &error);
    xg_registry_req_free(q);
    free(etext);
}

static void
bn_track_send(void *ctx, void *chan, struct xg_reg_req *q)
{
    struct bn_shard *sh = ctx;
    struct xg_reg_channel *ch = chan;
    struct xg_rest *rest = xg_upstream_rest(sh->b->up);
    struct xg_jspan none = { NULL, 0 };
    static const char no_rest[] =
        "{\"status\":0,\"msg\":\"no rest_url for this upstream\"}";
    struct xg_jspan error = { no_rest, sizeof(no_rest) - 1 };
    struct bn_get *g;

    if (rest == NULL || q->kind != XG_BN_REQ_REST) {
        xg_track_answer(ch->ext, q, &none, &error);
        xg_registry_req_free(q);
        return;
    }
    g = xg_calloc(1, sizeof(*g));
    g->sh = sh;
    g->t = ch->ext;
    g->q = q;
    g->weight = bn_rest_weight(sh->b, q->text);
    g->next = sh->gets;
    if (sh->gets != NULL) {
        sh->gets->prev = g;
    }
    sh->gets = g;
    *sh->b->wait_tail = g;
    sh->b->wait_tail = &g->wnext;
    bn_rest_pump(sh->b);
}

static void
bn_track_fanout(void *ctx, void *chan, const char *data, size_t len)
{
    struct bn_shard *sh = ctx;

    bn_fanout(sh->b, chan, data, len, NULL, 0);
}

/*
 * A gap that stays: Binance clients have no notice to read, so a depth
 * stream's subscribers are closed (ccxt and the others then reconnect and
 * take a new snapshot, exchange-protocols E1.5) and a trade stream's are
 * told nothing more than the log says.
 */
static void
bn_track_notice(void *ctx, void *chan, uint64_t duration_ms,
    const char *reason)
{
    struct bn_shard *sh = ctx;
    struct xg_reg_channel *ch = chan;
    size_t i;

    sh->b->gap_notices++;
    xg_upstream_log(XG_LOG_WARN, sh->up, "%s: a gap of %llu ms that cannot "
        "be repaired (%s)%s", ch->name, (unsigned long long) duration_ms,
        reason, ch->ext != NULL && xg_bn_track_is_book(ch->ext)
        ? ": closing its subscribers so that they take a new snapshot" : "");
    if (ch->ext == NULL || !xg_bn_track_is_book(ch->ext)) {
        return;
    }
    for (i = 0; i < ch->nsubs; i++) {
        struct bn_client *bc = ch->subs[i]->owner;

        xg_client_close(bc->c, 1011, "order book gap");
    }
}

static uint64_t
bn_track_now(void *ctx)
{
    return xg_now_ms();
}

/* CH's tracker, made on first use (NULL: CH is not tracked). */
static struct xg_track *
bn_track_get(struct bn_shard *sh, struct xg_reg_channel *ch)
{
    const struct xg_track_kind *const *k;

    if (ch->ext != NULL || ch->no_ext) {
        return ch->ext;
    }
    k = sh->b->market == XG_BN_SPOT ? xg_bn_kinds_spot : xg_bn_kinds_usdm;
    for (; ch->ext == NULL && *k != NULL; k++) {
        ch->ext = xg_track_new(*k, &sh->track, ch->name, ch);
    }
    ch->no_ext = ch->ext == NULL;
    return ch->ext;
}

/* The registry's channel free callback: the tracker's GETs in flight are
   cancelled first. */
static void
bn_track_free(void *ext)
{
    struct xg_track *t = ext;
    struct bn_shard *sh = t->env->ctx;
    struct bn_get *g, *next;

    for (g = sh->gets; g != NULL; g = next) {
        next = g->next;
        if (g->t == t) {
            bn_get_drop(g);
        }
    }
    xg_track_free(t);
    bn_rest_pump(sh->b);
}

static void
bn_track_down_cb(struct xg_reg_channel *ch, void *arg)
{
    if (ch->ext != NULL) {
        xg_track_down(ch->ext, ch->last_data_ms);
    }
}

/* ---- the session's calls ------------------------------------------------- */

/*
 * Reads one message of a stream connection: an answer ({"result":..,
 * "id":N} or {"error":{..},"id":N}), a combined event ({"stream":S,
 * "data":{..}}), or a serverShutdown (which rotates the connection).
 */
static void
bn_classify(void *p, struct xg_conn *c, const char *data, size_t len,
    struct xg_umsg *m)
{
    static const char *keys[] = { "id", "result", "error", "stream", "data",
                                  "e" };
    struct bn_shard *sh = p;
    struct xg_jspan v[6];

    if (xg_jscan_object(data, len, keys, 6, v) != XG_OK) {
        xg_upstream_log(XG_LOG_WARN, sh->up, "a message that is not a JSON "
            "object dropped (%zu bytes)", len);
        return;
    }
    if (v[3].p != NULL && v[4].p != NULL && v[3].len >= 2
        && v[3].p[0] == '"')
    {
        if (xg_jscan_str_eq(&v[3], "!serverShutdown")) {
            goto shutdown;
        }
        m->kind = XG_UMSG_DATA;
        m->chan = v[3].p + 1;
        m->chan_len = v[3].len - 2;
        m->params = v[4];
        return;
    }
    if (xg_jscan_str_eq(&v[5], "serverShutdown")) {
        goto shutdown;
    }
    if (v[0].p != NULL && !(v[0].len == 4 && memcmp(v[0].p, "null", 4) == 0)
        && (v[1].p != NULL || v[2].p != NULL))
    {
        m->kind = XG_UMSG_ANSWER;
        m->id = v[0];
        m->result = v[1];
        m->error = v[2];
        return;
    }
    if (v[2].p != NULL) {
        xg_upstream_log(XG_LOG_WARN, sh->up, "error with no id from the "
            "exchange: %.*s", (int) (v[2].len > 300 ? 300 : v[2].len),
            v[2].p);
        return;
    }
    xg_upstream_log(XG_LOG_DEBUG, sh->up, "unhandled message (%zu bytes)",
        len);
    return;

shutdown:
    sh->shutdowns++;
    if (c != NULL && xg_conn_role(c) == XG_CONN_PRIMARY) {
        xg_conn_log(XG_LOG_INFO, c, "serverShutdown from the exchange: "
            "rotating the connection now");
        (void) xg_upstream_rotate(sh->up, "serverShutdown");
    } else if (c != NULL) {
        xg_conn_log(XG_LOG_INFO, c, "serverShutdown on a %s connection",
            xg_conn_role_name(xg_conn_role(c)));
    }
}

/* Only subscribes are sent upstream, and the session answers those. */
static int
bn_answer(void *p, struct xg_reg_req *q, const char *data, size_t len,
    const struct xg_umsg *m)
{
    struct bn_shard *sh = p;

    xg_upstream_log(XG_LOG_DEBUG, sh->up, "answer to a request of kind %d "
        "ignored", q->kind);
    return 0;
}

/* Data on CH: its tracker first, then each client in its framing. */
static int
bn_data(void *p, struct xg_reg_channel *ch, const char *data, size_t len,
    const struct xg_umsg *m)
{
    static const char *keys[] = { "data" };
    struct bn_shard *sh = p;
    struct xg_jspan raw = m != NULL ? m->params : (struct xg_jspan) { 0 };
    struct xg_track *t;

    if (raw.p == NULL
        && (xg_jscan_object(data, len, keys, 1, &raw) != XG_OK
            || raw.p == NULL))
    {
        return 0;
    }
    t = bn_track_get(sh, ch);
    if (t != NULL && !xg_track_message(t, raw.p, raw.len)) {
        return 0;
    }
    bn_fanout(sh->b, ch, raw.p, raw.len, data, len);
    return 0;
}

static int
bn_expired(void *p, struct xg_reg_req *q, int queued)
{
    struct bn_shard *sh = p;

    xg_session_log_req(XG_LOG_WARN, sh->s, q, "%s %s", q->method
        ? q->method : "request", queued ? "waited queue_timeout"
        : "timed out");
    return 0;
}

static enum xg_lost
bn_lost(void *p, struct xg_reg_req *q)
{
    return XG_LOST_FREE;
}

static struct xg_reg_req *
bn_encode_sub(void *p, int subscribe, char *const *names, size_t n)
{
    json_t *arr = json_array(), *o;
    struct xg_reg_req *q;
    const char *method = subscribe ? "SUBSCRIBE" : "UNSUBSCRIBE";
    char *text;
    size_t i;

    for (i = 0; i < n; i++) {
        json_array_append_new(arr, json_string(names[i]));
    }
    o = json_pack("{s:s, s:o, s:i}", "method", method, "params", arr,
        "id", 0);
    text = json_dumps(o, JSON_COMPACT);
    json_decref(o);
    q = xg_registry_req_new(subscribe ? XG_REQ_SUB : XG_REQ_UNSUB, NULL,
        NULL, method, text, strlen(text));
    q->timed = 1;
    free(text);
    return q;
}

static void
bn_session_send(void *p, struct xg_reg_req *q)
{
    struct bn_shard *sh = p;

    (void) xg_session_send(sh->s, q);   /* a failed write: the loss of the
                                           connection settles Q */
}

/*
 * Binance acks a SUBSCRIBE's syntax, not the streams (E2): {"result":null}
 * confirms every stream of it; data arriving (the stale bounds) is the
 * real check.
 */
static json_t *
bn_sub_result(void *p, const struct xg_reg_req *q,
    const struct xg_jspan *result, const struct xg_jspan *error,
    char **errtext)
{
    json_t *arr;
    int i;

    if (error->p != NULL) {
        *errtext = xg_strndup(error->p, error->len);
        return NULL;
    }
    arr = json_array();
    for (i = 0; i < q->nchan; i++) {
        json_array_append_new(arr, json_string(q->chan[i]));
    }
    return arr;
}

static void
bn_confirmed(void *p, struct xg_reg_channel *ch, enum xg_confirm how,
    uint64_t now)
{
    struct bn_shard *sh = p;
    struct xg_track *t = bn_track_get(sh, ch);

    if (t != NULL) {
        xg_track_resume(t, how == XG_CONFIRM_NEW ? "subscribed"
                           : how == XG_CONFIRM_RESTORED ? "restored"
                           : "resubscribed");
    }
}

static void
bn_stale(void *p, struct xg_reg_channel *ch, uint64_t now)
{
    struct bn_shard *sh = p;

    xg_upstream_log(XG_LOG_WARN, sh->up, "%s: no event for %llu ms: "
        "resubscribing", ch->name,
        (unsigned long long) (now - ch->last_data_ms));
    if (ch->ext != NULL) {
        xg_track_gap(ch->ext, ch->last_data_ms, "stale");
    }
}

static void
bn_restale(void *p, struct xg_reg_channel *ch)
{
    if (ch->ext != NULL) {
        xg_track_resume(ch->ext, "resubscribed");
    }
}

static struct bn_req *
bn_req_find(struct bn_client *bc, const char *token)
{
    struct bn_req *r;
    unsigned long long seq = strtoull(token, NULL, 10);

    for (r = bc->reqs; r != NULL; r = r->next) {
        if (r->seq == seq) {
            return r;
        }
    }
    return NULL;
}

static void
bn_req_free(struct bn_req *r)
{
    struct bn_req **pp;

    for (pp = &r->bc->reqs; *pp != NULL; pp = &(*pp)->next) {
        if (*pp == r) {
            *pp = r->next;
            break;
        }
    }
    free(r->id);
    free(r->error);
    free(r);
}

static void
bn_client_send_str(struct bn_client *bc, const char *s)
{
    xg_client_send(bc->c, s, strlen(s));
}

/* {"result":RESULT,"id":ID} with the client's id bytes. */
static void
bn_reply(struct bn_client *bc, const char *id, const char *result)
{
    size_t n = strlen(id) + strlen(result) + 32;
    char *s = xg_malloc(n);

    snprintf(s, n, "{\"result\":%s,\"id\":%s}", result, id);
    bn_client_send_str(bc, s);
    free(s);
}

/* Binance's nested error shape, with the client's id bytes (or null). */
static void
bn_error(struct bn_client *bc, const char *id, int code, const char *msg)
{
    json_t *e = json_pack("{s:i, s:s}", "code", code, "msg", msg);
    char *et = json_dumps(e, JSON_COMPACT);
    size_t n = strlen(et) + (id ? strlen(id) : 4) + 32;
    char *s = xg_malloc(n);

    json_decref(e);
    snprintf(s, n, "{\"error\":%s,\"id\":%s}", et, id ? id : "null");
    bc->b->control_errors++;
    xg_client_count_error(bc->c);
    bn_client_send_str(bc, s);
    free(s);
    free(et);
}

static void
bn_subreq_done(void *p, struct xg_reg_subreq *sr)
{
    struct bn_shard *sh = p;
    struct bn_client *bc = sr->client ? sr->client->owner : NULL;
    struct bn_req *r = bc != NULL ? bn_req_find(bc, sr->client_id) : NULL;
    int i;

    if (r != NULL) {
        if (sr->error != NULL && r->error == NULL) {
            r->error = xg_strdup(sr->error);
        }
        for (i = 0; i < sr->nchan; i++) {
            if (sr->status[i] != 1) {
                xg_client_log(XG_LOG_INFO, bc->c, "stream %s refused by the "
                    "exchange", sr->chan[i]);
            }
        }
        if (--r->parts == 0) {
            if (r->id != NULL && r->error != NULL) {
                size_t n = strlen(r->error) + strlen(r->id) + 32;
                char *s = xg_malloc(n);

                snprintf(s, n, "{\"error\":%s,\"id\":%s}", r->error, r->id);
                xg_client_count_error(bc->c);
                bn_client_send_str(bc, s);
                free(s);
            } else if (r->id != NULL) {
                bn_reply(bc, r->id, "null");
            }
            bn_req_free(r);
        }
    }
    xg_registry_subreq_free(sh->reg, sr);
}

static int
bn_allowed(void *p, void *client, const char *name, int flags)
{
    return 1;
}

/* A client joined or left a stream: nothing to send it (a Binance client
   takes its own book snapshot). */
static void
bn_joined(void *p, void *client, struct xg_reg_channel *ch, int live)
{
}

static void
bn_left(void *p, void *client, struct xg_reg_channel *ch)
{
}

static enum xg_track_cross
bn_cross(void *p, struct xg_reg_channel *ch, const char *data, size_t len)
{
    static const char *keys[] = { "data" };
    struct bn_shard *sh = p;
    struct xg_track *t = bn_track_get(sh, ch);
    struct xg_jspan raw;

    if (t == NULL) {
        return XG_CROSS_SWITCH;
    }
    if (data == NULL) {
        return xg_track_cross(t, NULL, 0);
    }
    if (xg_jscan_object(data, len, keys, 1, &raw) != XG_OK
        || raw.p == NULL)
    {
        return XG_CROSS_DROP;
    }
    return xg_track_cross(t, raw.p, raw.len);
}

static void
bn_cross_force(void *p, struct xg_reg_channel *ch, int lost)
{
    if (ch->ext != NULL) {
        xg_track_cross_force(ch->ext, ch->last_data_ms, lost);
    }
}

static void
bn_retiring(void *p, struct xg_conn *c)
{
    /* nothing to say before the close: no session state at Binance */
}

static int
bn_restore_step(void *p, struct xg_conn *c, int step)
{
    return XG_DONE;     /* no auth, no heartbeat: the streams only */
}

static const struct xg_session_ops bn_session_ops = {
    .classify = bn_classify,
    .answer = bn_answer,
    .data = bn_data,
    .write = bn_write,
    .expired = bn_expired,
    .lost = bn_lost,
    .encode_sub = bn_encode_sub,
    .send = bn_session_send,
    .sub_result = bn_sub_result,
    .confirmed = bn_confirmed,
    .stale = bn_stale,
    .restale = bn_restale,
    .subreq_done = bn_subreq_done,
    .restore_step = bn_restore_step,
    .allowed = bn_allowed,
    .joined = bn_joined,
    .left = bn_left,
    .cross = bn_cross,
    .cross_force = bn_cross_force,
    .retiring = bn_retiring
};

/* ---- shards: their connections ------------------------------------------ */

/*
 * The connection budget of every shard together (B1: 300 connection
 * attempts per 5 minutes per IP): 0 and the attempt counted, or the
 * milliseconds until the oldest of the last 300 is 5 minutes old.
 */
static uint64_t
bn_connect_take(struct bn *b)
{
    uint64_t now = xg_now_ms(), oldest;

    if (b->nconn_times == BN_CONNS_MAX) {
        oldest = b->conn_times[b->conn_head];   /* the ring is full */
        if (now - oldest < BN_CONNS_WINDOW_MS) {
            return oldest + BN_CONNS_WINDOW_MS - now;
        }
    }
    b->conn_times[b->conn_head] = now;
    b->conn_head = (b->conn_head + 1) % BN_CONNS_MAX;
    if (b->nconn_times < BN_CONNS_MAX) {
        b->nconn_times++;
    }
    return 0;
}

static uint64_t
bn_on_connect_take(void *p)
{
    return bn_connect_take(p);
}

static uint64_t
bn_child_connect_take(void *p)
{
    struct bn_shard *sh = p;

    return bn_connect_take(sh->b);
}

static void
bn_shard_on_open(struct bn_shard *sh, struct xg_conn *c)
{
    if (xg_conn_role(c) == XG_CONN_ROTATING) {
        xg_session_rotate(sh->s, c);
        return;
    }
    xg_session_open(sh->s, c);
}

static void
bn_shard_on_message(struct bn_shard *sh, struct xg_conn *c,
    const unsigned char *data, size_t len)
{
    xg_session_message(sh->s, c, (const char *) data, len);
}

static void
bn_shard_on_down(struct bn_shard *sh, struct xg_conn *c, const char *reason)
{
    unsigned lost, replayed;

    bn_pace_drop(sh, c);
    switch (xg_session_down(sh->s, c, &replayed, &lost)) {
    case XG_SESSION_DOWN_OTHER:
        xg_conn_log(XG_LOG_INFO, c, "%s connection down (%s)",
            xg_conn_role_name(xg_conn_role(c)), reason);
        return;
    case XG_SESSION_DOWN_TAKEOVER:
        xg_registry_channel_foreach(sh->reg, bn_track_down_cb, sh);
        xg_conn_log(XG_LOG_INFO, c, "down (%s): the rotation takes over",
            reason);
        return;
    default:
        break;
    }
    xg_registry_channel_foreach(sh->reg, bn_track_down_cb, sh);
    xg_registry_upstream_reset(sh->reg);
    xg_upstream_log(XG_LOG_INFO, sh->up, "down (%s): %zu streams to restore",
        reason, xg_registry_nchannels(sh->reg));
}

static json_t *
bn_shard_status(struct bn_shard *sh)
{
    json_t *o = json_object();
    size_t i, waiting = 0;

    for (i = 0; i < XG_NELEM(sh->pace); i++) {
        waiting += sh->pace[i].c != NULL ? sh->pace[i].nout : 0;
    }
    json_object_set_new(o, "route", json_string(bn_route_names[sh->route]));
    json_object_set_new(o, "streams",
        json_integer((json_int_t) xg_registry_nchannels(sh->reg)));
    json_object_set_new(o, "server_shutdowns",
        json_integer((json_int_t) sh->shutdowns));
    json_object_set_new(o, "control_paced",
        json_integer((json_int_t) sh->paced));
    json_object_set_new(o, "control_waiting",
        json_integer((json_int_t) waiting));
    xg_session_status(sh->s, o);
    return o;
}

/* ---- the child upstreams' module: a shard of another upstream ----------- */

static void *
bn_child_create(struct xg_upstream *up, const struct xg_upstream_conf *conf)
{
    return conf->proto_conf;    /* the shard, set by bn_shard_new() */
}

static void
bn_child_destroy(void *p)
{
    /* the shard is its parent's */
}

static void
bn_child_on_open(void *p, struct xg_conn *c)
{
    bn_shard_on_open(p, c);
}

static void
bn_child_on_message(void *p, struct xg_conn *c, const unsigned char *data,
    size_t len)
{
    bn_shard_on_message(p, c, data, len);
}

static void
bn_child_on_down(void *p, struct xg_conn *c, const char *reason)
{
    bn_shard_on_down(p, c, reason);
}

static void
bn_child_status(void *p, json_t *obj)
{
    json_t *o = bn_shard_status(p);

    json_object_update(obj, o);
    json_decref(o);
}

static int
bn_child_reconf(void *p, const struct xg_upstream_conf *conf)
{
    return XG_OK;   /* the parent's reconf made CONF for the shard */
}

static const struct xg_venue bn_child_venue = {
    .name = "binance",
    .create = bn_child_create,
    .destroy = bn_child_destroy,
    .on_open = bn_child_on_open,
    .on_message = bn_child_on_message,
    .on_down = bn_child_on_down,
    .status = bn_child_status,
    .rotates = 1,
    .connect_take = bn_child_connect_take,
    .reconf = bn_child_reconf
};

/* SH's route URL under the conf's host: "<path prefix>/<route>/stream". */
static void
bn_shard_url(struct bn_shard *sh, const struct xg_upstream_conf *conf)
{
    char prefix[1024];
    size_t n;

    sh->url = conf->url;
    if (sh->route == BN_ROUTE_ANY) {
        return;     /* spot: the conf's url as it is */
    }
    n = strcspn(conf->url.path, "?");
    snprintf(prefix, sizeof(prefix), "%.*s", (int) n, conf->url.path);
    /* the user may have written .../stream or .../ws: the route replaces
       it */
    n = strlen(prefix);
    while (n > 0 && prefix[n - 1] == '/') {
        prefix[--n] = '\0';
    }
    if (n >= 7 && strcmp(prefix + n - 7, "/stream") == 0) {
        prefix[n - 7] = '\0';
    } else if (n >= 3 && strcmp(prefix + n - 3, "/ws") == 0) {
        prefix[n - 3] = '\0';
    }
    n = strlen(prefix);
    if (n >= 7 && (strcmp(prefix + n - 7, "/public") == 0
                   || strcmp(prefix + n - 7, "/market") == 0)) {
        prefix[n - 7] = '\0';
    }
    snprintf(sh->url.path, sizeof(sh->url.path), "%s/%s/stream", prefix,
        bn_route_names[sh->route]);
}

/* A child shard's conf: the parent's, its own name and module. */
static void
bn_shard_conf(struct bn_shard *sh, const struct xg_upstream_conf *conf)
{
    struct xg_upstream_conf *u = &sh->ucf[sh->ucur];

    *u = *conf;
    u->name = sh->name;
    u->proto_conf = sh;
    u->next = NULL;
    u->rest_url_set = 0;    /* the parent's REST client serves every shard */
    bn_shard_url(sh, conf);
    u->url = sh->url;
}


static void
bn_shard_init(struct bn *b, struct bn_shard *sh)
{
    sh->b = b;
    sh->reg = xg_registry_new();
    xg_registry_set_channel_free(sh->reg, bn_track_free);
    sh->s = xg_session_new(sh->up, sh->name, b->base, sh->reg, b->cf->stale,
        b->cf->nstale, BN_BATCH_BYTES, &bn_session_ops, sh);
    xg_session_set_limits(sh->s, BN_REQUEST_MS, b->ucf->queue_limit,
        b->ucf->queue_timeout_ms);
    xg_session_set_linger(sh->s, b->linger_ms);
    sh->track.name = sh->name;
    sh->track.up = sh->up;
    sh->track.base = b->base;
    sh->track.max_held = BN_MAX_HELD;
    sh->track.retry_ms = BN_FETCH_RETRY_MS;
    sh->track.retry_max_ms = BN_FETCH_RETRY_MAX_MS;
    sh->track.tries = BN_FETCH_TRIES;
    sh->track.ctx = sh;
    sh->track.send = bn_track_send;
    sh->track.fanout = bn_track_fanout;
    sh->track.notice = bn_track_notice;
    sh->track.now = bn_track_now;
    sh->ev_pace = evtimer_new(b->base, bn_on_pace, sh);
}

/* A new shard on ROUTE, its connection started; NULL when none can be
   made (logged). */
static struct bn_shard *
bn_shard_new(struct bn *b, enum bn_route route)
{
    struct bn_shard *sh;
    size_t n;

    if (b->nshards >= BN_MAX_SHARDS) {
        b->shards_refused++;
        xg_upstream_log(XG_LOG_ERROR, b->up, "%u connections open already: "
            "no room for another %s stream", b->nshards,
            bn_route_names[route]);
        return NULL;
    }
    sh = xg_calloc(1, sizeof(*sh));
    sh->idx = b->nshards;
    sh->route = route;
    sh->child = 1;
    n = strlen(b->name) + 16;
    sh->name = xg_malloc(n);
    snprintf(sh->name, n, "%s/%u", b->name, sh->idx + 1);
    bn_shard_conf(sh, b->ucf);
    sh->up = xg_upstream_create_proto(b->base, xg_upstream_dns(b->up),
        &sh->ucf[sh->ucur], &bn_child_venue);
    if (sh->up == NULL) {
        free(sh->name);
        free(sh);
        return NULL;
    }
    bn_shard_init(b, sh);
    b->shards[b->nshards++] = sh;
    xg_upstream_log(XG_LOG_INFO, b->up, "connection %s opened for %s "
        "streams (%u connections)", sh->name, bn_route_names[route],
        b->nshards);
    xg_upstream_start(sh->up);
    return sh;
}

static void
bn_shard_free(struct bn_shard *sh)
{
    struct bn_get *g;
    size_t i;

    for (i = 0; i < XG_NELEM(sh->pace); i++) {
        if (sh->pace[i].c != NULL) {
            bn_pace_drop(sh, sh->pace[i].c);
        }
    }
    if (sh->child) {
        xg_upstream_free(sh->up);   /* on_down first: the shard lives */
    }
    while ((g = sh->gets) != NULL) {
        bn_get_drop(g);
    }
    xg_registry_free(sh->reg);
    xg_session_free(sh->s);
    event_free(sh->ev_pace);
    if (sh->child) {
        free(sh->name);
    }
    free(sh);
}

/* ---- the upstream's own calls (shard 0) --------------------------------- */

static void
bn_on_open(void *p, struct xg_conn *c)
{
    struct bn *b = p;
    unsigned i;

    if (xg_conn_role(c) == XG_CONN_ROTATING) {
        /* the admin's or the conf's rotation rotates every connection */
        for (i = 1; i < b->nshards; i++) {
            if (xg_upstream_state(b->shards[i]->up) == XG_UP_READY) {
                (void) xg_upstream_rotate(b->shards[i]->up,
                    "with the upstream's first connection");
            }
        }
    }
    bn_shard_on_open(b->shards[0], c);
}

static void
bn_on_message(void *p, struct xg_conn *c, const unsigned char *data,
    size_t len)
{
    struct bn *b = p;

    bn_shard_on_message(b->shards[0], c, data, len);
}

static void
bn_on_down(void *p, struct xg_conn *c, const char *reason)
{
    struct bn *b = p;

    bn_shard_on_down(b->shards[0], c, reason);
}

static void
bn_child_stopped(void *arg)
{
    struct bn_shard *sh = arg;

    xg_upstream_log(XG_LOG_DEBUG, sh->up, "stopped");
}

static void
bn_on_stop(void *p)
{
    struct bn *b = p;
    unsigned i;

    for (i = 1; i < b->nshards; i++) {
        b->shards[i]->stopping = 1;
        xg_upstream_stop(b->shards[i]->up, bn_child_stopped, b->shards[i]);
    }
}

static void
bn_repairing_cb(struct xg_reg_channel *ch, void *arg)
{
    size_t *n = arg;
    struct xg_track *t = ch->ext;

    *n += t != NULL && xg_bn_track_repairing(t);
}

static void
bn_status(void *p, json_t *obj)
{
    struct bn *b = p;
    json_t *shards = json_array(), *o;
    size_t streams = 0;
    unsigned i;

    for (i = 0; i < b->nshards; i++) {
        streams += xg_registry_nchannels(b->shards[i]->reg);
        if (i == 0) {
            o = bn_shard_status(b->shards[0]);
            json_object_set_new(o, "name", json_string(b->name));
            json_object_set_new(o, "state", json_string(
                xg_upstream_state_name(xg_upstream_state(b->up))));
        } else {
            o = xg_upstream_status(b->shards[i]->up);
        }
        json_array_append_new(shards, o);
    }
    json_object_set_new(obj, "market", json_string(b->market == XG_BN_SPOT
        ? "spot" : "usdm"));
    json_object_set_new(obj, "streams", json_integer((json_int_t) streams));
    json_object_set_new(obj, "shards", shards);
    json_object_set_new(obj, "clients", json_integer((json_int_t) b->nclients));
    json_object_set_new(obj, "control_messages",
        json_integer((json_int_t) b->control_in));
    json_object_set_new(obj, "control_errors",
        json_integer((json_int_t) b->control_errors));
    json_object_set_new(obj, "messages_out",
        json_integer((json_int_t) b->messages_out));
    json_object_set_new(obj, "gap_notices",
        json_integer((json_int_t) b->gap_notices));
    json_object_set_new(obj, "rest_depth_local",
        json_integer((json_int_t) b->rest_depth_local));
    json_object_set_new(obj, "connections_refused",
        json_integer((json_int_t) b->shards_refused));
    json_object_set_new(obj, "rest_weight_spent", json_integer((json_int_t)
        bn_rest_spent(b, xg_now_ms())));
    json_object_set_new(obj, "rest_weight_budget",
        json_integer((json_int_t) bn_rest_budget(b)));
    json_object_set_new(obj, "rest_gets_delayed",
        json_integer((json_int_t) b->rest_delayed));
    {
        size_t waiting = 0, repairing = 0;
        struct bn_get *g;

        for (g = b->wait_head; g != NULL; g = g->wnext) {
            waiting++;
        }
        for (i = 0; i < b->nshards; i++) {
            xg_registry_channel_foreach(b->shards[i]->reg, bn_repairing_cb,
                &repairing);
        }
        json_object_set_new(obj, "rest_gets_waiting",
            json_integer((json_int_t) waiting));
        json_object_set_new(obj, "rest_gets_in_flight",
            json_integer((json_int_t) b->rest_inflight));
        /* streams whose tracker fetches, holds or waits for a gap */
        json_object_set_new(obj, "streams_repairing",
            json_integer((json_int_t) repairing));
    }
}

/* ---- clients ------------------------------------------------------------- */


static struct xg_reg_client *
bn_client_rc(struct bn_client *bc, struct bn_shard *sh)
{
    if (bc->rc[sh->idx] == NULL) {
        bc->rc[sh->idx] = xg_registry_client_new(sh->reg, bc, bc->c);
    }
    return bc->rc[sh->idx];
}

/* How many streams BC holds on every shard. */
static size_t
bn_client_nstreams(const struct bn_client *bc)
{
    size_t n = 0;
    unsigned i;

    for (i = 0; i < bc->b->nshards; i++) {
        n += bc->rc[i] != NULL ? bc->rc[i]->nchans : 0;
    }
    return n;
}

/*
 * Subscribes BC to NAMES[0..N-1] (valid names), answering ID (raw JSON;
 * NULL: no answer) once every shard has answered its part.
 */
static void
bn_client_subscribe(struct bn_client *bc, const char *id, char **names,
    size_t n)
{
    struct bn *b = bc->b;
    struct bn_shard **of = xg_calloc(n, sizeof(*of));
    char **part = xg_calloc(n, sizeof(*part));
    struct bn_req *r = xg_calloc(1, sizeof(*r));
    unsigned max = xg_client_conf(bc->c)->client_max_channels;
    size_t i, j, k, other, held = bn_client_nstreams(bc);
    size_t add[BN_MAX_SHARDS] = { 0 };
    char token[32];
    int failed = 0;

    r->bc = bc;
    r->seq = ++b->req_seq;
    r->id = id != NULL ? xg_strdup(id) : NULL;
    r->parts = 1;       /* until every part is sent */
    r->next = bc->reqs;
    bc->reqs = r;
    snprintf(token, sizeof(token), "%llu", (unsigned long long) r->seq);
    for (i = 0; i < n && !failed; i++) {
        for (j = 0; j < i && strcmp(names[j], names[i]) != 0; j++) {
            /* a name twice in one request goes where the first went */
        }
        if (j < i) {
            of[i] = of[j];
            continue;
        }
        of[i] = bn_shard_for(b, names[i], add);
        failed |= of[i] == NULL;
        if (!failed && xg_registry_channel(of[i]->reg, names[i]) == NULL) {
            add[of[i]->idx]++;
        }
    }
    if (failed) {
        if (r->id != NULL) {
            bn_error(bc, r->id, -1, "exgate: no upstream connection can take "
                "more streams (see the log)");
        }
        bn_req_free(r);
        free(of);
        free(part);
        return;
    }
    for (i = 0; i < n; i++) {
        if (of[i] == NULL) {
            continue;
        }
        /* every name of this shard, in request order */
        struct bn_shard *sh = of[i];

        k = 0;
        for (j = i; j < n; j++) {
            if (of[j] == sh) {
                part[k++] = names[j];
                of[j] = NULL;
            }
        }
        /* client_max_channels counts the streams of every shard */
        other = held - (bc->rc[sh->idx] != NULL ? bc->rc[sh->idx]->nchans : 0);
        r->parts++;
        xg_session_subscribe(sh->s, bn_client_rc(bc, sh), token, part, k,
            max > other ? max - (unsigned) other : 0, 0);
    }
    free(of);
    free(part);
    /* the parts answered at once (live streams) left one count */
    r = bn_req_find(bc, token);
    if (r != NULL && --r->parts == 0) {
        if (r->id != NULL && r->error != NULL) {
            size_t len = strlen(r->error) + strlen(r->id) + 32;
            char *s = xg_malloc(len);

            snprintf(s, len, "{\"error\":%s,\"id\":%s}", r->error, r->id);
            bn_client_send_str(bc, s);
            free(s);
        } else if (r->id != NULL) {
            bn_reply(bc, r->id, "null");
        }
        bn_req_free(r);
    }
}

static void
bn_client_unsubscribe(struct bn_client *bc, char **names, size_t n)
{
    struct bn *b = bc->b;
    unsigned i;
    size_t k;

    for (k = 0; k < n; k++) {
        struct bn_shard *sh = bn_shard_holding(b, names[k]);

        if (sh != NULL && bc->rc[sh->idx] != NULL) {
            xg_session_unsubscribe(sh->s, bc->rc[sh->idx], &names[k], 1,
                NULL);
        }
    }
    for (i = 0; i < b->nshards; i++) {
        xg_session_flush_soon(b->shards[i]->s);
    }
}

/* LIST_SUBSCRIPTIONS: the client's streams. */
static void
bn_client_list(struct bn_client *bc, const char *id)
{
    json_t *arr = json_array();
    char *text;
    unsigned i;
    size_t k;

    for (i = 0; i < bc->b->nshards; i++) {
        for (k = 0; bc->rc[i] != NULL && k < bc->rc[i]->nchans; k++) {
            json_array_append_new(arr, json_string(bc->rc[i]->chans[k]->name));
        }
    }
    text = json_dumps(arr, JSON_COMPACT);
    json_decref(arr);
    bn_reply(bc, id, text);
    free(text);
}

/*
 * The streams of PATH (its query included) and its framing: "/ws",
 * "/ws/<n>" (ccxt), "/ws/<stream>[/<stream>...]" raw; "/stream" and
 * "/stream?streams=a/b" combined; any prefix before the last /ws or
 * /stream ("/stream/ws/3", "/fapi/public/ws/0"). Appends the names to
 * *NAMES (*N of them). Returns 0, or -1 when a name is not a stream.
 */
static int
bn_path_streams(const char *path, int *combined, char ***names, size_t *n)
{
    const char *q = strchr(path, '?'), *end = q ? q : path + strlen(path);
    const char *ws = NULL, *st = NULL, *p, *s;
    size_t len;

    *combined = 0;
    for (p = path; p < end; p++) {
        if (*p != '/') {
            continue;
        }
        len = (size_t) (end - p);
        if (len >= 3 && strncmp(p, "/ws", 3) == 0
            && (len == 3 || p[3] == '/'))
        {
            ws = p;
            st = NULL;
        } else if (len >= 7 && strncmp(p, "/stream", 7) == 0
                   && (len == 7 || p[7] == '/'))
        {
            st = p;
            ws = NULL;
        }
    }
    if (st != NULL && q != NULL) {
        *combined = 1;
        for (s = strstr(q, "streams="); s != NULL;
             s = strstr(s + 1, "&streams="))
        {
            const char *v = strchr(s, '=') + 1;
            const char *ve = v + strcspn(v, "&");

            while (v < ve) {
                const char *e = memchr(v, '/', (size_t) (ve - v));

                e = e != NULL ? e : ve;
                if (e > v) {
                    if (!bn_stream_valid(v, (size_t) (e - v))) {
                        return -1;
                    }
                    *names = xg_realloc(*names, (*n + 1) * sizeof(**names));
                    (*names)[(*n)++] = xg_strndup(v, (size_t) (e - v));
                }
                v = e + 1;
            }
        }
        return 0;
    }
    if (st != NULL) {
        *combined = 1;
        return 0;
    }
    if (ws == NULL) {
        return 0;       /* another path: raw, no stream yet */
    }
    for (p = ws + 3; p < end;) {
        const char *e;

        p++;            /* the '/' */
        e = memchr(p, '/', (size_t) (end - p));
        e = e != NULL ? e : end;
        len = (size_t) (e - p);
        if (len > 0 && strspn(p, "0123456789") < len) {
            if (!bn_stream_valid(p, len)) {
                return -1;
            }
            *names = xg_realloc(*names, (*n + 1) * sizeof(**names));
            (*names)[(*n)++] = xg_strndup(p, len);
        }
        p = e;
    }
    return 0;
}

static void *
bn_client_open(void *p, struct xg_client *c)
{
    struct bn *b = p;
    struct bn_client *bc = xg_calloc(1, sizeof(*bc));
    const char *path = xg_client_path(c);
    char **names = NULL;
    size_t n = 0, i;

    bc->b = b;
    bc->c = c;
    if (b->cf->client_ping) {
        /* as Binance: 20 s and 1 min on spot, 3 min and 10 min futures */
        xg_client_set_ping(c, b->cf->client_ping_ms ? b->cf->client_ping_ms
            : b->market == XG_BN_SPOT ? 20000 : 180000,
            b->cf->client_pong_ms ? b->cf->client_pong_ms
            : b->market == XG_BN_SPOT ? 60000 : 600000);
    }
    b->linger_ms = xg_client_conf(c)->unsubscribe_linger_ms;
    for (i = 0; i < b->nshards; i++) {
        xg_session_set_linger(b->shards[i]->s, b->linger_ms);
    }
    bc->next = b->clients;
    if (b->clients != NULL) {
        b->clients->prev = bc;
    }
    b->clients = bc;
    b->nclients++;
    if (path != NULL && bn_path_streams(path, &bc->combined, &names, &n) != 0)
    {
        xg_client_log(XG_LOG_INFO, c, "path \"%.200s\" names something that "
            "is not a stream", path);
        xg_client_close(c, 1008, "Invalid request: invalid stream");
    } else if (n > 0) {
        bn_client_subscribe(bc, NULL, names, n);
    }
    for (i = 0; i < n; i++) {
        free(names[i]);
    }
    free(names);
    return bc;
}

/* The "params" of a SUBSCRIBE or UNSUBSCRIBE: every one a stream name. */
static int
bn_params_streams(json_t *params, char ***names, size_t *n)
{
    size_t i;

    if (!json_is_array(params) || json_array_size(params) > BN_MAX_PARAMS) {
        return -1;
    }
    *n = json_array_size(params);
    *names = xg_calloc(*n + 1, sizeof(**names));
    for (i = 0; i < *n; i++) {
        json_t *s = json_array_get(params, i);

        if (!json_is_string(s)
            || !bn_stream_valid(json_string_value(s), json_string_length(s))
            || strlen(json_string_value(s)) != json_string_length(s))
        {
            return -2;
        }
        (*names)[i] = (char *) json_string_value(s);
    }
    return 0;
}

static void
bn_client_message(void *p, void *cs, const unsigned char *udata, size_t len)
{
    static const char *keys[] = { "id" };
    struct bn *b = p;
    struct bn_client *bc = cs;
    const char *data = (const char *) udata;
    struct xg_jspan v[1];
    json_error_t jerr;
    json_t *req, *params;
    const char *method;
    char *id = NULL, **names = NULL, msg[256];
    size_t n = 0;
    int r;

    b->control_in++;
    /* ids may be past 2^63 (USDⓈ-M: unsigned); they are echoed as sent */
    req = json_loadb(data, len, JSON_REJECT_DUPLICATES
        | JSON_DECODE_INT_AS_REAL, &jerr);
    if (req == NULL) {
        snprintf(msg, sizeof(msg), "Invalid JSON: %s at line %d column %d",
            jerr.text, jerr.line, jerr.column);
        xg_client_log(XG_LOG_INFO, bc->c, "invalid JSON (%zu bytes): %s",
            len, jerr.text);
        bn_error(bc, NULL, 3, msg);
        return;
    }
    if (!json_is_object(req)) {
        bn_error(bc, NULL, 2, "Invalid request: invalid type: expected "
            "struct Request");
        goto done;
    }
    if (xg_jscan_object(data, len, keys, 1, v) == XG_OK && v[0].p != NULL) {
        id = xg_strndup(v[0].p, v[0].len);
    } else {
        id = xg_strdup("null");
    }
    if (xg_client_rate_exceeded(bc->c)) {
        xg_client_log(XG_LOG_WARN, bc->c, "over client_rate %u/s: a message "
            "refused", xg_client_conf(bc->c)->client_rate);
        bn_error(bc, id, -1003, "Too many requests: over client_rate");
        goto done;
    }
    method = json_string_value(json_object_get(req, "method"));
    params = json_object_get(req, "params");
    if (method == NULL) {
        bn_error(bc, id, 2, json_object_get(req, "method") == NULL
            ? "Invalid request: missing field `method`"
            : "Invalid request: invalid type: expected a string for "
              "`method`");
        goto done;
    }
    if (strcmp(method, "SUBSCRIBE") == 0
        || strcmp(method, "UNSUBSCRIBE") == 0)
    {
        r = bn_params_streams(params, &names, &n);
        if (r == -1) {
            bn_error(bc, id, 2, params == NULL
                ? "Invalid request: missing field `params`"
                : "Invalid request: invalid type: expected a sequence of at "
                  "most 1024 stream names");
        } else if (r == -2) {
            xg_client_log(XG_LOG_INFO, bc->c, "%s of something that is not a "
                "stream refused", method);
            bn_error(bc, id, 2, "Invalid request: invalid stream");
        } else if (method[0] == 'S') {
            bn_client_subscribe(bc, id, names, n);
        } else {
            bn_client_unsubscribe(bc, names, n);
            bn_reply(bc, id, "null");
        }
        free(names);
        goto done;
    }
    if (strcmp(method, "LIST_SUBSCRIPTIONS") == 0) {
        bn_client_list(bc, id);
        goto done;
    }
    if (strcmp(method, "SET_PROPERTY") == 0
        || strcmp(method, "GET_PROPERTY") == 0)
    {
        const char *prop = json_string_value(json_array_get(params, 0));

        if (!json_is_array(params) || prop == NULL) {
            bn_error(bc, id, 2, "Invalid request: invalid params");
        } else if (strcmp(prop, "combined") != 0) {
            bn_error(bc, id, 0, "Unknown property");
        } else if (method[0] == 'G') {
            bn_reply(bc, id, bc->combined ? "true" : "false");
        } else if (json_array_size(params) != 2
                   || !json_is_boolean(json_array_get(params, 1)))
        {
            bn_error(bc, id, 1, "Invalid value type: expected Boolean");
        } else {
            bc->combined = json_is_true(json_array_get(params, 1));
            bn_reply(bc, id, "null");
        }
        goto done;
    }
    snprintf(msg, sizeof(msg), "Invalid request: unknown variant `%.40s`, "
        "expected one of `SUBSCRIBE`, `UNSUBSCRIBE`, `LIST_SUBSCRIPTIONS`, "
        "`SET_PROPERTY`, `GET_PROPERTY`", method);
    bn_error(bc, id, 2, msg);

done:
    free(id);
    json_decref(req);
}

static void
bn_client_close(void *p, void *cs, const char *reason)
{
    struct bn *b = p;
    struct bn_client *bc = cs;
    uint64_t now = xg_now_ms();
    unsigned i;

    while (bc->reqs != NULL) {
        bn_req_free(bc->reqs);
    }
    for (i = 0; i < b->nshards; i++) {
        if (bc->rc[i] != NULL) {
            xg_registry_client_free(b->shards[i]->reg, bc->rc[i], now);
            xg_session_flush_soon(b->shards[i]->s);
        }
    }
    if (bc->prev != NULL) {
        bc->prev->next = bc->next;
    } else {
        b->clients = bc->next;
    }
    if (bc->next != NULL) {
        bc->next->prev = bc->prev;
    }
    b->nclients--;
    free(bc);
}

/* ---- the REST front: depth from the gateway's book ---------------------- */

/* The value of KEY in QUERY (a=1&b=2), copied into OUT, or NULL. */
static const char *
bn_query_get(const char *query, const char *key, char *out, size_t n)
{
    size_t k = strlen(key);
    const char *s = query;

    while (s != NULL && *s != '\0') {
        if (strncmp(s, key, k) == 0 && s[k] == '=') {
            size_t len = strcspn(s + k + 1, "&");

            if (len >= n) {
                return NULL;
            }
            memcpy(out, s + k + 1, len);
            out[len] = '\0';
            return out;
        }
        s = strchr(s, '&');
        s = s != NULL ? s + 1 : NULL;
    }
    return NULL;
}

/*
 * GET /api/v3/depth (spot) or /fapi/v1/depth (USDⓈ-M): answered from the
 * book of the symbol's depth stream whose subscribers are furthest on,
 * when some depth stream of it is held and its book is vouched for;
 * anything else is proxied.
 */
static char *
bn_rest_local(void *p, const char *path, const char *query, size_t *len)
{
    static const char *const kinds[] = { "@depth", "@depth@100ms",
        "@depth@250ms", "@depth@500ms", "@depth@1000ms" };
    struct bn *b = p;
    char sym[64], lim[16], name[96], *best = NULL, *body;
    unsigned long long best_id = 0, limit = 100;
    uint64_t id;
    size_t i, blen = 0, l;

    if (strcmp(path, b->market == XG_BN_SPOT ? "/api/v3/depth"
                                             : "/fapi/v1/depth") != 0
        || query == NULL || bn_query_get(query, "symbol", sym,
                                         sizeof(sym)) == NULL)
    {
        return NULL;
    }
    if (bn_query_get(query, "limit", lim, sizeof(lim)) != NULL) {
        char *e;

        limit = strtoull(lim, &e, 10);
        if (*e != '\0' || limit == 0 || limit > 5000) {
            return NULL;    /* the exchange words the error */
        }
    }
    for (i = 0; sym[i] != '\0'; i++) {
        sym[i] = (char) tolower((unsigned char) sym[i]);
    }
    for (i = 0; i < XG_NELEM(kinds); i++) {
        struct bn_shard *sh;
        struct xg_reg_channel *ch;
        static const char *keys[] = { "lastUpdateId" };
        struct xg_jspan v[1];

        snprintf(name, sizeof(name), "%s%s", sym, kinds[i]);
        if ((sh = bn_shard_holding(b, name)) == NULL
            || (ch = xg_registry_channel(sh->reg, name)) == NULL
            || ch->ext == NULL
            || (body = xg_bn_book_depth(ch->ext, (unsigned) limit, &l))
               == NULL)
        {
            continue;
        }
        if (xg_jscan_object(body, l, keys, 1, v) == XG_OK
            && xg_jscan_uint(&v[0], &id) == XG_OK && (best == NULL
                                                      || id > best_id))
        {
            free(best);
            best = body;
            blen = l;
            best_id = id;
        } else {
            free(body);
        }
    }
    if (best != NULL) {
        b->rest_depth_local++;
        *len = blen;
    }
    return best;
}

/* ---- instance ------------------------------------------------------------ */

static void *
bn_create(struct xg_upstream *up, const struct xg_upstream_conf *conf)
{
    struct bn *b = xg_calloc(1, sizeof(*b));
    struct bn_shard *sh;

    b->up = up;
    b->ucf = conf;
    b->cf = conf->proto_conf ? conf->proto_conf : &bn_defaults;
    b->name = xg_upstream_name(up);
    b->base = xg_upstream_base(up);
    b->market = b->cf->market == XG_BN_USDM ? XG_BN_USDM : XG_BN_SPOT;
    b->wait_tail = &b->wait_head;
    b->ev_rest = evtimer_new(b->base, bn_on_rest_timer, b);
    sh = xg_calloc(1, sizeof(*sh));
    sh->up = up;
    sh->name = (char *) b->name;
    sh->route = b->market == XG_BN_SPOT ? BN_ROUTE_ANY : BN_ROUTE_PUBLIC;
    bn_shard_url(sh, conf);
    if (sh->route != BN_ROUTE_ANY) {
        xg_upstream_set_url(up, &sh->url);
    }
    bn_shard_init(b, sh);
    b->shards[b->nshards++] = sh;
    return b;
}

static void
bn_destroy(void *p)
{
    struct bn *b = p;
    unsigned i;

    if (b == NULL) {
        return;
    }
    while (b->clients != NULL) {
        /* the listeners free their clients first; this is a last resort */
        bn_client_close(b, b->clients, "upstream destroyed");
    }
    for (i = b->nshards; i-- > 0;) {
        bn_shard_free(b->shards[i]);
    }
    event_free(b->ev_rest);
    free(b->to_raw);
    free(b->to_comb);
    free(b);
}

/*
 * A reload: the new conf from now on, for every shard (a child's conf is
 * copied again; a changed url rotates it like the upstream's own). A
 * changed market cannot be followed: the upstream is restarted.
 */
static int
bn_reconf(void *p, const struct xg_upstream_conf *conf)
{
    const struct bn_conf *nc = conf->proto_conf ? conf->proto_conf
                                                : &bn_defaults;
    struct bn *b = p;
    unsigned i;

    if ((nc->market == XG_BN_USDM ? XG_BN_USDM : XG_BN_SPOT) != b->market) {
        xg_upstream_log(XG_LOG_INFO, b->up, "reload: market changed, the "
            "upstream restarts");
        return XG_ERROR;
    }
    b->ucf = conf;
    b->cf = conf->proto_conf ? conf->proto_conf : &bn_defaults;
    for (i = 0; i < b->nshards; i++) {
        struct bn_shard *sh = b->shards[i];
        struct xg_url old = sh->url;

        xg_session_set_limits(sh->s, BN_REQUEST_MS, conf->queue_limit,
            conf->queue_timeout_ms);
        xg_session_set_stale(sh->s, b->cf->stale, b->cf->nstale);
        if (!sh->child) {
            bn_shard_url(sh, conf);
            continue;
        }
        sh->ucur ^= 1;
        bn_shard_conf(sh, conf);
        (void) xg_upstream_reconf(sh->up, &sh->ucf[sh->ucur],
            memcmp(&old, &sh->url, sizeof(old)) != 0
            ? "reload: url changed" : NULL);
    }
    return XG_OK;
}

/* ---- conf ---------------------------------------------------------------- */

static void
bn_conf_free(void *p)
{
    struct bn_conf *c = p;

    xg_stale_free(c->stale, c->nstale);
    free(c);
}

static void *
bn_create_conf(struct xg_conf *cf)
{
    struct bn_conf *c = xg_conf_calloc(cf, sizeof(*c), bn_conf_free);

    c->market = -1;
    return c;
}

static int
bn_set_market(struct xg_conf *cf, const struct xg_conf_stmt *st,
    const struct xg_command *cmd, void *conf)
{
    struct bn_conf *c = conf;

    if (strcmp(st->args[1], "spot") == 0) {
        c->market = XG_BN_SPOT;
    } else if (strcmp(st->args[1], "usdm") == 0) {
        c->market = XG_BN_USDM;
    } else {
        return xg_conf_error(cf, st, "\"market\": \"%s\" is not spot or usdm",
            st->args[1]);
    }
    return XG_OK;
}

/* client_ping on|off [INTERVAL TIMEOUT]; */
static int
bn_set_client_ping(struct xg_conf *cf, const struct xg_conf_stmt *st,
    const struct xg_command *cmd, void *conf)
{
    struct bn_conf *c = conf;

    if (strcmp(st->args[1], "on") == 0) {
        c->client_ping = 1;
    } else if (strcmp(st->args[1], "off") == 0) {
        c->client_ping = 0;
    } else {
        return xg_conf_error(cf, st, "\"client_ping\": \"%s\" is not on or "
            "off", st->args[1]);
    }
    if (st->nargs == 3) {
        return xg_conf_error(cf, st, "\"client_ping\": give the interval "
            "and the timeout, or neither");
    }
    if (st->nargs == 4
        && (xg_conf_parse_duration(st->args[2], &c->client_ping_ms) != XG_OK
            || xg_conf_parse_duration(st->args[3], &c->client_pong_ms)
               != XG_OK
            || c->client_ping_ms < 1000 || c->client_pong_ms < 1000
            || c->client_ping_ms > 3600000 || c->client_pong_ms > 3600000))
    {
        return xg_conf_error(cf, st, "\"client_ping\": the interval and the "
            "timeout must be durations between 1s and 1h");
    }
    return XG_OK;
}

static int
bn_set_stale(struct xg_conf *cf, const struct xg_conf_stmt *st,
    const struct xg_command *cmd, void *conf)
{
    struct bn_conf *c = conf;

    return xg_stale_set(cf, st, &c->stale, &c->nstale);
}

static const struct xg_conf_bounds bn_bounds_streams = { 1, 1024 };
static const struct xg_conf_bounds bn_bounds_rate = { 1, BN_PACE_MAX };
static const struct xg_conf_bounds bn_bounds_weight = { 50, 1000000 };

#define BN(f) offsetof(struct bn_conf, f)

static const struct xg_command bn_commands[] = {
    { "market", XG_CONF_UPSTREAM | XG_CONF_TAKE1, bn_set_market, 0, NULL },
    { "max_streams_per_connection", XG_CONF_UPSTREAM | XG_CONF_TAKE1,
      xg_conf_set_uint, BN(max_streams), &bn_bounds_streams },
    { "control_rate", XG_CONF_UPSTREAM | XG_CONF_TAKE1, xg_conf_set_uint,
      BN(control_rate), &bn_bounds_rate },
    { "rest_weight", XG_CONF_UPSTREAM | XG_CONF_TAKE1, xg_conf_set_uint,
      BN(rest_weight), &bn_bounds_weight },
    { "client_ping", XG_CONF_UPSTREAM | XG_CONF_TAKE13, bn_set_client_ping,
      0, NULL },
    { "stale", XG_CONF_UPSTREAM | XG_CONF_TAKE2 | XG_CONF_MULTI, bn_set_stale,
      0, NULL },
    XG_CONF_NULL_COMMAND
};

static int
bn_dump(struct xg_conf_dump *d, const struct xg_command *cmd,
    const void *conf)
{
    const struct bn_conf *c = conf;

    if (cmd->set == bn_set_market) {
        xg_conf_dump_words(d, cmd->name, c->market == XG_BN_USDM ? "usdm"
            : "spot", NULL);
    } else if (cmd->set == bn_set_client_ping) {
        char a[32], t[32];

        if (c->client_ping_ms != 0) {
            xg_conf_dump_words(d, cmd->name, c->client_ping ? "on" : "off",
                xg_conf_fmt_duration(c->client_ping_ms, a, sizeof(a)),
                xg_conf_fmt_duration(c->client_pong_ms, t, sizeof(t)), NULL);
        } else {
            xg_conf_dump_words(d, cmd->name, c->client_ping ? "on" : "off",
                NULL);
        }
    } else if (cmd->set == bn_set_stale) {
        xg_stale_dump(d, cmd->name, c->stale, c->nstale);
    } else {
        return XG_AGAIN;
    }
    return XG_OK;
}

/* A market is what every shard's route and every tracker was made for. */
static const char *const bn_restart_names[] = { "market", NULL };

const struct xg_venue xg_venue_binance = {
    .name = "binance",
    .commands = bn_commands,
    .create_conf = bn_create_conf,
    .create = bn_create,
    .destroy = bn_destroy,
    .on_open = bn_on_open,
    .on_message = bn_on_message,
    .on_down = bn_on_down,
    .on_stop = bn_on_stop,
    .status = bn_status,
    .client_open = bn_client_open,
    .client_message = bn_client_message,
    .client_close = bn_client_close,
    .client_too_big = "{\"error\":{\"code\":2,\"msg\":\"Invalid request: "
                      "message too large\"},\"id\":null}",
    .default_path = "/*",
    .trusts_clients = XG_VENUE_PUBLIC,  /* public market data only */
    .dump = bn_dump,
    .rotates = 1,
    .reconf = bn_reconf,
    .rest_local = bn_rest_local,
    .restart_names = bn_restart_names,
    .connect_take = bn_on_connect_take,
    .max_connection_age_ms = 23ULL * 3600 * 1000
};
