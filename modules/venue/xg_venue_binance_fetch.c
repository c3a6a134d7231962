/*
 * xg_venue_binance_fetch.c: the Binance trackers' side of the venue (see
 * xg_venue_binance_int.h): the tracker env's callbacks, and the REST GETs
 * of book snapshots and trade backfills, paced by Binance's request
 * weight (rest_weight a minute, BN_REST_INFLIGHT at once, the rest waiting
 * in order) through the upstream's REST client (src/xg_rest.h).
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

static void bn_on_rest(void *arg, int status, const char *body, size_t len,
    const struct evkeyvalq *headers, const char *err);

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

unsigned
bn_rest_budget(const struct bn *b)
{
    /* about 40 % of Binance's 6000 (spot) and 2400 (USDⓈ-M) a minute: the
       rest is the REST front's, for the clients */
    return b->cf->rest_weight ? b->cf->rest_weight
           : b->market == XG_BN_SPOT ? 2400 : 960;
}

/* The weight spent in the last minute (older entries dropped). */
unsigned
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
            xg_timer_add(b->ev_rest, &tv);
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

void
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
void
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

void
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

void
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
void
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

uint64_t
bn_track_now(void *ctx)
{
    return xg_now_ms();
}

/* CH's tracker, made on first use (NULL: CH is not tracked). */
struct xg_track *
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
void
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

void
bn_track_down_cb(struct xg_reg_channel *ch, void *arg)
{
    if (ch->ext != NULL) {
        xg_track_down(ch->ext, ch->last_data_ms);
    }
}
