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
 * backfilled, by the trackers of xg_venue_binance_track.c, their REST GETs
 * paced by xg_venue_binance_fetch.c; a serverShutdown event starts a
 * make-before-break rotation of its connection at once. The clients' side
 * is xg_venue_binance_client.c; what the files share,
 * xg_venue_binance_int.h.
 */
#include "xg_core.h"
#include "xg_client.h"
#include "xg_jscan.h"
#include "xg_log.h"
#include "xg_upstream.h"
#include "xg_venue_binance_int.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *const bn_route_names[] = { "stream", "public", "market" };

static const struct bn_conf bn_defaults = { -1, 0, 0, 0, 0, 0, 0, NULL, 0 };

static void bn_shard_flush_pace(struct bn_shard *sh, struct bn_pace *pc);
static struct bn_shard *bn_shard_new(struct bn *b, enum bn_route route);

/* ---- stream names -------------------------------------------------------- */

/*
 * 1 when NAME (LEN bytes) is a stream name by Binance's syntax:
 * [!]word(@word)+ of letters, digits and '_' (the all-market
 * "!bookTicker" has no '@').
 */
int
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
struct bn_shard *
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
struct bn_shard *
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
    xg_timer_add(sh->ev_pace, &tv);
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
void
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
        xg_client_fanout(b->to_raw, nraw, raw, rlen);
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
        xg_client_fanout(b->to_comb, ncomb, comb, clen);
    }
    b->messages_out += nraw + ncomb;
    free(made);
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

static void
bn_child_reconf(void *p, const struct xg_upstream_conf *conf)
{
    /* the parent's reconf made CONF for the shard */
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
    sh->ev_pace = xg_timer_new(b->base, bn_on_pace, sh);
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
    xg_session_interest_stop(sh->s);
    xg_registry_free(sh->reg);
    xg_session_free(sh->s);
    xg_timer_free(sh->ev_pace);
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
    b->ev_rest = xg_timer_new(b->base, bn_on_rest_timer, b);
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
    xg_timer_free(b->ev_rest);
    free(b->to_raw);
    free(b->to_comb);
    free(b);
}

/*
 * Whether a reload can go on to CONF in place (xg_venue.h): a changed
 * market cannot be followed, every shard's route and tracker was made
 * for it; the upstream is restarted instead. (bn_restart_names restarts
 * it before this is asked; this answers for the instance itself.)
 */
static int
bn_reconf_check(void *p, const struct xg_upstream_conf *conf)
{
    const struct bn_conf *nc = conf->proto_conf ? conf->proto_conf
                                                : &bn_defaults;
    const struct bn *b = p;

    return (nc->market == XG_BN_USDM ? XG_BN_USDM : XG_BN_SPOT) == b->market
        ? XG_OK : XG_ERROR;
}

/*
 * A reload (bn_reconf_check() said yes): the new conf from now on, for
 * every shard (a child's conf is copied again; a changed url rotates it
 * like the upstream's own).
 */
static void
bn_reconf(void *p, const struct xg_upstream_conf *conf)
{
    struct bn *b = p;
    unsigned i;

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
    .reconf_check = bn_reconf_check,
    .rest_local = bn_rest_local,
    .restart_names = bn_restart_names,
    .connect_take = bn_on_connect_take,
    .max_connection_age_ms = 23ULL * 3600 * 1000
};
