/*
 * check_xg_bn_track.c: Binance's book tracker kind
 * (modules/venue/xg_venue_binance_track.c) on the real tracker engine
 * (src/xg_track.c), with an environment whose send records each REST GET
 * and whose answers the tests give, shaped as t/sim/bnsim shapes them.
 *
 * Books: a small exchange model (one symbol's book and its update ids)
 * makes the events and the snapshots; a strict client model (Binance's
 * documented sync, continuity checked on every event) consumes what the
 * tracker hands out, so "no chain breaks and the client's book equals
 * the exchange's" is checked, not assumed. Trades:
 * t/unit/check_xg_bn_trades.c; the environment: bn_track_env.c.
 */
#include "bn_track_env.h"
#include "xg_log.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/event.h>
#include <jansson.h>

/* ---- the exchange model: one book, its update ids ---- */

struct ex {
    enum xg_bn_market  m;
    json_t            *side[2];     /* price -> quantity */
    uint64_t           u, E;
};

static void
ex_init(struct ex *x, enum xg_bn_market m, uint64_t u)
{
    x->m = m;
    x->side[0] = json_object();
    x->side[1] = json_object();
    x->u = u;
    x->E = 1700000000000ULL;
}

static void
ex_free(struct ex *x)
{
    json_decref(x->side[0]);
    json_decref(x->side[1]);
}

static int
is_zero(const char *q)
{
    return q[strspn(q, "0.")] == '\0';
}

/* Applies the [[p,q],...] of ARR to side S of the map pair SIDE. */
static void
side_apply(json_t *side, json_t *arr)
{
    json_t *v;
    size_t i;

    json_array_foreach(arr, i, v) {
        const char *p = json_string_value(json_array_get(v, 0));
        const char *q = json_string_value(json_array_get(v, 1));

        if (is_zero(q)) {
            json_object_del(side, p);
        } else {
            json_object_set_new(side, p, json_string(q));
        }
    }
}

/*
 * The next event of X, covering N ids, with levels BIDS and ASKS (JSON
 * arrays' text); the exchange's book moves. Malloc'd.
 */
static char *
ex_event(struct ex *x, unsigned n, const char *bids, const char *asks)
{
    json_t *b = json_loads(bids, 0, NULL), *a = json_loads(asks, 0, NULL);
    uint64_t U = x->u + 1, pu = x->u;
    char *s;
    size_t len;

    ck_assert_ptr_nonnull(b);
    ck_assert_ptr_nonnull(a);
    side_apply(x->side[0], b);
    side_apply(x->side[1], a);
    x->u += n;
    x->E += 100;
    len = strlen(bids) + strlen(asks) + 256;
    s = malloc(len);
    if (x->m == XG_BN_SPOT) {
        snprintf(s, len, "{\"e\":\"depthUpdate\",\"E\":%llu,\"s\":\"BTCUSDT\","
            "\"U\":%llu,\"u\":%llu,\"b\":%s,\"a\":%s}",
            (unsigned long long) x->E, (unsigned long long) U,
            (unsigned long long) x->u, bids, asks);
    } else {
        snprintf(s, len, "{\"e\":\"depthUpdate\",\"E\":%llu,\"T\":%llu,"
            "\"s\":\"BTCUSDT\",\"U\":%llu,\"u\":%llu,\"pu\":%llu,\"b\":%s,"
            "\"a\":%s}", (unsigned long long) x->E,
            (unsigned long long) x->E - 1, (unsigned long long) U,
            (unsigned long long) x->u, (unsigned long long) pu, bids, asks);
    }
    json_decref(b);
    json_decref(a);
    return s;
}

/* X's depth answer as bnsim writes it (USDⓈ-M with E and T). */
static char *
ex_snapshot(struct ex *x)
{
    json_t *o = json_object(), *arr[2];
    const char *p;
    json_t *q;
    char *s;
    int k;

    json_object_set_new(o, "lastUpdateId", json_integer((json_int_t) x->u));
    if (x->m == XG_BN_USDM) {
        json_object_set_new(o, "E", json_integer((json_int_t) x->E));
        json_object_set_new(o, "T", json_integer((json_int_t) x->E));
    }
    for (k = 0; k < 2; k++) {
        arr[k] = json_array();
        json_object_foreach(x->side[k], p, q) {
            json_array_append_new(arr[k], json_pack("[s,O]", p, q));
        }
    }
    json_object_set_new(o, "bids", arr[0]);
    json_object_set_new(o, "asks", arr[1]);
    s = json_dumps(o, JSON_COMPACT);
    json_decref(o);
    return s;
}

/* Feeds the next event of X to T; returns what feed() did. */
static int
ex_feed(struct ex *x, struct xg_track *t, unsigned n, const char *bids,
    const char *asks)
{
    char *s = ex_event(x, n, bids, asks);
    int pass = feed(t, s);

    free(s);
    return pass;
}

/* ---- the strict client model ---- */

struct cl {
    enum xg_bn_market  m;
    json_t            *side[2];
    uint64_t           id;      /* lastUpdateId, then the last u applied */
    int                synced;  /* 0 no book, 1 first event due, 2 chain */
    int                breaks;
    int                applied;
};

static void
cl_init(struct cl *c, enum xg_bn_market m)
{
    memset(c, 0, sizeof(*c));
    c->m = m;
    c->side[0] = json_object();
    c->side[1] = json_object();
}

static void
cl_free(struct cl *c)
{
    json_decref(c->side[0]);
    json_decref(c->side[1]);
}

/* The client takes a depth answer DEPTH (the gateway's or the exchange's). */
static void
cl_snapshot(struct cl *c, const char *depth)
{
    json_t *d = json_loads(depth, 0, NULL);
    int k;

    ck_assert_ptr_nonnull(d);
    for (k = 0; k < 2; k++) {
        json_object_clear(c->side[k]);
        side_apply(c->side[k], json_object_get(d, k ? "asks" : "bids"));
    }
    c->id = (uint64_t) json_integer_value(json_object_get(d,
        "lastUpdateId"));
    c->synced = 1;
    json_decref(d);
}

/* One message to the client, checked by Binance's rules (as ccxt does). */
static void
cl_event(struct cl *c, const char *s)
{
    json_t *e = json_loads(s, 0, NULL);
    uint64_t U, u, pu;

    ck_assert_msg(e != NULL, "not JSON: %s", s);
    ck_assert_str_eq(json_string_value(json_object_get(e, "e")),
        "depthUpdate");
    U = (uint64_t) json_integer_value(json_object_get(e, "U"));
    u = (uint64_t) json_integer_value(json_object_get(e, "u"));
    pu = (uint64_t) json_integer_value(json_object_get(e, "pu"));
    if (c->synced == 0) {
        json_decref(e);
        return;
    }
    if (c->m == XG_BN_SPOT) {
        if (u <= c->id) {
            goto skip;
        }
        if (c->synced == 1 ? !(U <= c->id + 1) : U != c->id + 1) {
            c->breaks++;
        }
    } else {
        if (u < c->id || (c->synced == 2 && u == c->id)) {
            goto skip;
        }
        if (c->synced == 1 ? !((U <= c->id && c->id <= u) || pu == c->id)
                           : pu != c->id) {
            c->breaks++;
        }
    }
    side_apply(c->side[0], json_object_get(e, "b"));
    side_apply(c->side[1], json_object_get(e, "a"));
    c->id = u;
    c->synced = 2;
    c->applied++;
skip:
    json_decref(e);
}

/* Every output from FROM on to the client. */
static void
cl_take(struct cl *c, int from)
{
    int i;

    for (i = from; i < nout; i++) {
        cl_event(c, out[i]);
    }
}

/* 1 when the client's book is the exchange's. */
static int
cl_equals(const struct cl *c, const struct ex *x)
{
    return json_equal(c->side[0], x->side[0])
           && json_equal(c->side[1], x->side[1]);
}

/* The gateway's depth answer, parsed; NULL when it has none. */
static json_t *
depth_of(struct xg_track *t, unsigned limit)
{
    size_t len;
    char *s = xg_bn_book_depth(t, limit, &len);
    json_t *d;

    if (s == NULL) {
        return NULL;
    }
    ck_assert_uint_eq(strlen(s), len);
    d = json_loads(s, 0, NULL);
    ck_assert_ptr_nonnull(d);
    free(s);
    return d;
}

/* 1 when the gateway would answer a depth request from T's book. */
static int
has_depth(struct xg_track *t)
{
    size_t len;
    char *s = xg_bn_book_depth(t, 10, &len);

    free(s);
    return s != NULL;
}

/* Levels used by the tests. */
#define B0 "[[\"100.00\",\"1.000\"],[\"99.50\",\"2.000\"]," \
    "[\"99.00\",\"3.000\"]]"
#define A0 "[[\"100.50\",\"1.000\"],[\"101.00\",\"2.000\"]," \
    "[\"101.50\",\"3.000\"]]"

/*
 * A spot or USDⓈ-M tracker synced at once: the first event held, the
 * snapshot fetched and answered; returns it with X's book at its state.
 */
static struct xg_track *
synced(struct ex *x, enum xg_bn_market m)
{
    struct xg_track *t;
    char *snap;

    ex_init(x, m, 1000);
    t = track(m, "btcusdt@depth@100ms");
    ck_assert_ptr_nonnull(t);
    ck_assert(xg_bn_track_is_book(t));
    ck_assert_int_eq(ex_feed(x, t, 3, B0, A0), 0);      /* held: fetching */
    ck_assert_int_eq(t->state, XG_TRACK_FETCHING);
    ck_assert_int_eq(nsent, 1);
    snap = ex_snapshot(x);
    answer(t, snap);
    free(snap);
    ck_assert_int_eq(t->state, XG_TRACK_LIVE);
    ck_assert_int_eq(nout, 1);      /* the held event, passed */
    ck_assert_int_eq(ex_feed(x, t, 2, "[[\"99.50\",\"2.500\"]]", "[]"), 1);
    return t;
}

/* ---- stream names ---- */

START_TEST(names)
{
    struct xg_track *t;
    const char *books[] = { "btcusdt@depth", "btcusdt@depth@100ms",
        "btcusdt@depth@500ms", "btcusdt@depth@1000ms", NULL };
    const char *none[] = { "btcusdt@depth5", "btcusdt@depth20@100ms",
        "btcusdt@depth@250ms", "@depth", "btc-usdt@trade", "btcusdt",
        "btcusdt@kline_1m", "btcusdt@tradex", "btcusdt@bookTicker",
        "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa@trade", "", NULL };
    int i, m;

    for (m = 0; m < 2; m++) {
        for (i = 0; books[i] != NULL; i++) {
            t = track(m, books[i]);
            ck_assert_msg(t != NULL && xg_bn_track_is_book(t), "%s",
                books[i]);
            xg_track_free(t);
        }
        for (i = 0; none[i] != NULL; i++) {
            ck_assert_msg(track(m, none[i]) == NULL, "%s", none[i]);
        }
        t = track(m, "ethusdt@trade");
        ck_assert_ptr_nonnull(t);
        ck_assert(!xg_bn_track_is_book(t));
        ck_assert(!has_depth(t));
        xg_track_free(t);
        t = track(m, "ethusdt@aggTrade");
        ck_assert_ptr_nonnull(t);
        ck_assert_str_eq(t->kind->name, "aggTrades");
        xg_track_free(t);
    }
    ck_assert(!xg_bn_track_is_book(NULL));
}
END_TEST

/* ---- book sync ---- */

/* Spot: the first events held while the first snapshot comes; then all
   passed in order (none dropped: nothing was delivered); synced by the
   rules; the GET is the spot depth of 5000. */
START_TEST(spot_first_sync)
{
    struct xg_track *t = track(XG_BN_SPOT, "btcusdt@depth");
    struct ex x;
    struct cl c;
    char *snap;
    json_t *d;
    int i;

    ex_init(&x, XG_BN_SPOT, 500);
    ck_assert_int_eq(ex_feed(&x, t, 2, B0, A0), 0);
    ck_assert_int_eq(nsent, 1);
    ck_assert_str_eq(sent[0]->text, "/api/v3/depth?symbol=BTCUSDT&limit=1000");
    ck_assert(!has_depth(t));
    ex_feed(&x, t, 3, "[[\"99.00\",\"0\"]]", "[]");
    snap = ex_snapshot(&x);        /* at u 505: the third event syncs */
    ex_feed(&x, t, 1, "[[\"98.00\",\"4.000\"]]", "[]");
    ex_feed(&x, t, 4, "[]", "[[\"100.50\",\"0.500\"]]");
    ck_assert_int_eq(nout, 0);
    answer(t, snap);
    free(snap);
    ck_assert_int_eq(nout, 4);      /* every held event, in order */
    for (i = 0; i < 4; i++) {
        static const json_int_t U[] = { 501, 503, 506, 507 };
        json_t *e = json_loads(out[i], 0, NULL);

        ck_assert_int_eq(json_integer_value(json_object_get(e, "U")), U[i]);
        json_decref(e);
    }
    d = depth_of(t, 100);
    ck_assert_ptr_nonnull(d);
    ck_assert_int_eq(json_integer_value(json_object_get(d, "lastUpdateId")),
        510);
    ck_assert_ptr_null(json_object_get(d, "E"));    /* spot: none */
    json_decref(d);
    /* a client from the gateway's depth follows the stream */
    cl_init(&c, XG_BN_SPOT);
    snap = xg_bn_book_depth(t, 5000, &(size_t) { 0 });
    cl_snapshot(&c, snap);
    free(snap);
    ck_assert(cl_equals(&c, &x));
    i = nout;
    ex_feed(&x, t, 1, "[[\"100.00\",\"1.500\"]]", "[]");
    cl_take(&c, i);
    ck_assert_int_eq(c.breaks, 0);
    ck_assert_int_eq(c.applied, 1);
    ck_assert(cl_equals(&c, &x));
    cl_free(&c);
    ex_free(&x);
    xg_track_free(t);
}
END_TEST

/* Spot: an event ending at lastUpdateId is not the first; the one with
   lastUpdateId+1 in [U,u] is (checked by the truth: the depth answer). */
START_TEST(spot_sync_rule)
{
    struct xg_track *t = track(XG_BN_SPOT, "btcusdt@depth");

    ck_assert_int_eq(feed(t, "{\"e\":\"depthUpdate\",\"E\":1,"
        "\"s\":\"BTCUSDT\","
        "\"U\":10,\"u\":20,\"b\":[[\"1.0\",\"1\"]],\"a\":[]}"), 0);
    answer(t, "{\"lastUpdateId\":20,\"bids\":[[\"1.0\",\"1\"],"
        "[\"0.5\",\"2\"]],\"asks\":[[\"2.0\",\"1\"]]}");
    ck_assert_int_eq(nout, 1);      /* passed (nothing delivered before) */
    ck_assert(!has_depth(t));
    ck_assert_int_eq(feed(t, "{\"e\":\"depthUpdate\",\"E\":2,"
        "\"s\":\"BTCUSDT\","
        "\"U\":21,\"u\":25,\"b\":[[\"0.5\",\"0\"]],\"a\":[]}"), 1);
    {
        json_t *d = depth_of(t, 10);

        ck_assert_ptr_nonnull(d);
        ck_assert_int_eq(json_integer_value(json_object_get(d,
            "lastUpdateId")), 25);
        ck_assert_int_eq(json_array_size(json_object_get(d, "bids")), 1);
        json_decref(d);
    }
    xg_track_free(t);
}
END_TEST

/* USDⓈ-M: u < lastUpdateId dropped, u == lastUpdateId syncs
   (U <= L <= u); the GET is the futures depth of 1000. */
START_TEST(usdm_sync_rule)
{
    struct xg_track *t = track(XG_BN_USDM, "btcusdt@depth@100ms");
    json_t *d;

    feed(t, "{\"e\":\"depthUpdate\",\"E\":1,\"T\":1,\"s\":\"BTCUSDT\","
        "\"U\":10,\"u\":19,\"pu\":9,\"b\":[],\"a\":[]}");
    feed(t, "{\"e\":\"depthUpdate\",\"E\":2,\"T\":2,\"s\":\"BTCUSDT\","
        "\"U\":20,\"u\":30,\"pu\":19,\"b\":[[\"5.0\",\"1\"]],\"a\":[]}");
    ck_assert_str_eq(sent[0]->text,
        "/fapi/v1/depth?symbol=BTCUSDT&limit=1000");
    answer(t, "{\"lastUpdateId\":30,\"E\":5,\"T\":5,\"bids\":[[\"5.0\","
        "\"1\"]],\"asks\":[[\"6.0\",\"2\"]]}");
    ck_assert_int_eq(nout, 2);
    d = depth_of(t, 10);
    ck_assert_ptr_nonnull(d);
    ck_assert_int_eq(json_integer_value(json_object_get(d, "lastUpdateId")),
        30);
    ck_assert_int_eq(json_integer_value(json_object_get(d, "E")), 2);
    ck_assert_int_eq(json_integer_value(json_object_get(d, "T")), 2);
    json_decref(d);
    xg_track_free(t);
}
END_TEST

/* USDⓈ-M: a first event with pu == lastUpdateId syncs even when its U
   is past it (bnsim and ccxt accept it). */
START_TEST(usdm_sync_pu)
{
    struct xg_track *t = track(XG_BN_USDM, "btcusdt@depth");

    feed(t, "{\"e\":\"depthUpdate\",\"E\":1,\"T\":1,\"s\":\"BTCUSDT\","
        "\"U\":102,\"u\":105,\"pu\":100,\"b\":[[\"5.0\",\"3\"]],\"a\":[]}");
    answer(t, "{\"lastUpdateId\":100,\"E\":5,\"T\":5,\"bids\":[[\"5.0\","
        "\"1\"]],\"asks\":[]}");
    ck_assert_int_eq(nsent, 1);     /* not re-fetched: it synced */
    ck_assert_int_eq(nout, 1);
    {
        json_t *d = depth_of(t, 10);

        ck_assert_ptr_nonnull(d);
        ck_assert_str_eq(json_string_value(json_array_get(json_array_get(
            json_object_get(d, "bids"), 0), 1)), "3");
        json_decref(d);
    }
    xg_track_free(t);
}
END_TEST

/* A snapshot older than the first event it should sync with is fetched
   again after the engine's backoff; the next one syncs. */
START_TEST(stale_snapshot_refetched)
{
    struct xg_track *t = track(XG_BN_SPOT, "btcusdt@depth");
    struct ex x;
    char *old, *snap;

    ex_init(&x, XG_BN_SPOT, 40);
    old = ex_snapshot(&x);          /* at 40 */
    x.u = 49;                       /* ids 41..49 never seen */
    ex_feed(&x, t, 3, B0, A0);      /* 50..52 */
    answer(t, old);
    free(old);
    ck_assert_int_eq(t->state, XG_TRACK_FETCHING);
    ck_assert_int_eq(nout, 0);
    wait_sent(2);                   /* the retry */
    ck_assert_uint_eq(env.retries, 1);
    ck_assert_str_eq(sent[1]->text, "/api/v3/depth?symbol=BTCUSDT&limit=1000");
    snap = ex_snapshot(&x);         /* at 52 */
    ex_feed(&x, t, 1, "[[\"99.00\",\"0\"]]", "[]");     /* 53 syncs */
    answer(t, snap);
    free(snap);
    ck_assert_int_eq(t->state, XG_TRACK_LIVE);
    ck_assert_int_eq(nout, 2);
    ck_assert(has_depth(t));
    ex_free(&x);
    xg_track_free(t);
}
END_TEST

/* A snapshot that stays too old: after env->tries re-fetches, no book:
   the events pass, the channel is not stuck. */
START_TEST(stale_snapshot_gives_up)
{
    struct xg_track *t = track(XG_BN_SPOT, "btcusdt@depth");
    int i;

    feed(t, "{\"e\":\"depthUpdate\",\"E\":1,\"s\":\"BTCUSDT\",\"U\":100,"
        "\"u\":110,\"b\":[],\"a\":[]}");
    for (i = 0; i <= 3; i++) {
        if (i > 0) {
            wait_sent(i + 1);
        }
        answer(t, "{\"lastUpdateId\":50,\"bids\":[],\"asks\":[]}");
    }
    ck_assert_int_eq(nsent, 4);
    ck_assert_int_eq(t->state, XG_TRACK_LIVE);
    ck_assert_int_eq(nout, 1);
    ck_assert(!has_depth(t));
    /* within the hold-off, the next events pass without a fetch */
    ck_assert_int_eq(feed(t, "{\"e\":\"depthUpdate\",\"E\":1,"
        "\"s\":\"BTCUSDT\","
        "\"U\":111,\"u\":112,\"b\":[],\"a\":[]}"), 1);
    ck_assert_int_eq(nsent, 4);
    /* after it, a fetch again */
    now_ms += 10;
    ck_assert_int_eq(feed(t, "{\"e\":\"depthUpdate\",\"E\":1,"
        "\"s\":\"BTCUSDT\","
        "\"U\":113,\"u\":114,\"b\":[],\"a\":[]}"), 0);
    ck_assert_int_eq(nsent, 5);
    xg_track_free(t);
}
END_TEST

/* An event delivered already (u <= delivered u) is dropped; its bytes do
   not go out again. */
START_TEST(duplicate_dropped)
{
    struct ex x;
    struct xg_track *t = synced(&x, XG_BN_SPOT);
    char *e1 = ex_event(&x, 1, "[[\"99.00\",\"5.000\"]]", "[]");
    char *e2 = ex_event(&x, 2, "[]", "[[\"101.00\",\"0\"]]");

    ck_assert_int_eq(feed(t, e1), 1);
    ck_assert_int_eq(feed(t, e2), 1);
    ck_assert_int_eq(feed(t, e1), 0);
    ck_assert_int_eq(feed(t, e2), 0);
    ck_assert_int_eq(nout, 4);
    ck_assert_int_eq(nsent, 1);
    free(e1);
    free(e2);
    ex_free(&x);
    xg_track_free(t);
}
END_TEST

/*
 * A gap on a live connection: held and fetched; each subscriber gets one
 * bridge (U = delivered+1, u of the first synced event) carrying every
 * level that differs, "0" for a level gone; a strict client that had the
 * book sees no break and ends with the exchange's book.
 */
static void
live_gap(enum xg_bn_market m)
{
    struct ex x;
    struct xg_track *t = synced(&x, m);
    struct cl c;
    char *d, *snap, *lost;
    json_t *br;
    uint64_t du = x.u, gap_u, gap_E;
    int from;

    cl_init(&c, m);
    d = xg_bn_book_depth(t, 1000, &(size_t) { 0 });
    cl_snapshot(&c, d);
    free(d);
    from = nout;
    /* an event the gateway never sees: a level removed, one changed */
    lost = ex_event(&x, 2, "[[\"99.00\",\"0\"]]", "[[\"101.00\",\"7.000\"]]");
    free(lost);
    ck_assert_int_eq(ex_feed(&x, t, 1, "[[\"98.00\",\"1.000\"]]", "[]"), 0);
    gap_u = x.u;
    gap_E = x.E;
    ck_assert_int_eq(t->state, XG_TRACK_FETCHING);
    ck_assert(!has_depth(t));
    ck_assert_int_eq(nsent, 2);
    snap = ex_snapshot(&x);
    ex_feed(&x, t, 1, "[]", "[[\"102.00\",\"1.000\"]]");   /* held */
    answer(t, snap);
    free(snap);
    if (m == XG_BN_SPOT) {
        /* the snapshot is at the gap event's u: the next one syncs (spot
           drops u <= lastUpdateId) and is in the bridge */
        gap_u = x.u;
        gap_E = x.E;
        ck_assert_int_eq(nout, from + 1);
    } else {
        /* USDⓈ-M syncs at the gap event itself (U <= L <= u): the bridge
           then Binance's next event */
        ck_assert_int_eq(nout, from + 2);
    }
    br = json_loads(out[from], 0, NULL);
    ck_assert_int_eq(json_integer_value(json_object_get(br, "U")), du + 1);
    ck_assert_int_eq(json_integer_value(json_object_get(br, "u")), gap_u);
    if (m == XG_BN_USDM) {
        ck_assert_int_eq(json_integer_value(json_object_get(br, "pu")), du);
        ck_assert_int_eq(json_integer_value(json_object_get(br, "T")),
            gap_E - 1);
    }
    ck_assert_int_eq(json_integer_value(json_object_get(br, "E")), gap_E);
    ck_assert_ptr_nonnull(strstr(out[from], "[\"99.00\",\"0\"]"));
    ck_assert_ptr_nonnull(strstr(out[from], "[\"101.00\",\"7.000\"]"));
    ck_assert_ptr_nonnull(strstr(out[from], "[\"98.00\",\"1.000\"]"));
    /* unchanged, yet in it: a client whose own snapshot is newer than
       what was delivered ends with the truth too */
    ck_assert_ptr_nonnull(strstr(out[from], "100.50"));
    json_decref(br);
    ex_feed(&x, t, 1, "[[\"97.00\",\"1.000\"]]", "[]");  /* Binance's */
    ck_assert_int_eq(nout, from + (m == XG_BN_SPOT ? 2 : 3));
    cl_take(&c, from);
    ck_assert_int_eq(c.breaks, 0);
    ck_assert(cl_equals(&c, &x));
    d = xg_bn_book_depth(t, 1000, &(size_t) { 0 });
    ck_assert_ptr_nonnull(d);
    {
        struct cl g;

        cl_init(&g, m);
        cl_snapshot(&g, d);
        ck_assert(cl_equals(&g, &x));
        ck_assert_uint_eq(g.id, x.u);
        cl_free(&g);
    }
    free(d);
    cl_free(&c);
    ex_free(&x);
    xg_track_free(t);
}

START_TEST(spot_live_gap_bridged)
{
    live_gap(XG_BN_SPOT);
}
END_TEST

START_TEST(usdm_live_gap_bridged)
{
    live_gap(XG_BN_USDM);
}
END_TEST

/* An outage: the snapshot is fetched when the channel is back, the new
   connection's events held, duplicates dropped, one bridge. */
static void
outage(enum xg_bn_market m)
{
    struct ex x;
    struct xg_track *t = synced(&x, m);
    struct cl c;
    char *d, *snap, *again[2];
    int from, i;

    cl_init(&c, m);
    d = xg_bn_book_depth(t, 1000, &(size_t) { 0 });
    cl_snapshot(&c, d);
    free(d);
    from = nout;
    /* the last two events before the drop: the new connection repeats */
    again[0] = ex_event(&x, 1, "[[\"99.50\",\"9.000\"]]", "[]");
    again[1] = ex_event(&x, 1, "[]", "[[\"100.50\",\"0\"]]");
    feed(t, again[0]);
    feed(t, again[1]);
    xg_track_down(t, now_ms);
    ck_assert(!has_depth(t));
    for (i = 0; i < 3; i++) {        /* missed during the outage */
        char *e = ex_event(&x, 2, "[[\"99.00\",\"0.100\"]]",
            "[[\"103.00\",\"1.000\"]]");

        free(e);
    }
    xg_track_resume(t, "confirmed");
    ck_assert_int_eq(t->state, XG_TRACK_FETCHING);
    ck_assert_int_eq(nsent, 2);
    snap = ex_snapshot(&x);
    feed(t, again[1]);               /* a duplicate from the new one */
    ex_feed(&x, t, 1, "[[\"99.00\",\"0\"]]", "[]");
    ex_feed(&x, t, 1, "[[\"96.00\",\"1.000\"]]", "[]");
    answer(t, snap);
    free(snap);
    ck_assert_int_eq(nout, from + 2 + 2);   /* two before, bridge, one */
    cl_take(&c, from);
    ck_assert_int_eq(c.breaks, 0);
    ck_assert(cl_equals(&c, &x));
    ck_assert(has_depth(t));
    free(again[0]);
    free(again[1]);
    cl_free(&c);
    ex_free(&x);
    xg_track_free(t);
}

START_TEST(spot_outage_bridged)
{
    outage(XG_BN_SPOT);
}
END_TEST

START_TEST(usdm_outage_bridged)
{
    outage(XG_BN_USDM);
}
END_TEST

/* An outage with nothing missed: the new connection continues what was
   delivered: no bridge, Binance's own events. */
START_TEST(outage_nothing_missed)
{
    struct ex x;
    struct xg_track *t = synced(&x, XG_BN_SPOT);
    char *snap;
    int from = nout;

    xg_track_down(t, now_ms);
    xg_track_resume(t, "confirmed");
    snap = ex_snapshot(&x);
    ck_assert_int_eq(ex_feed(&x, t, 1, "[[\"1.00\",\"1\"]]", "[]"), 0);
    answer(t, snap);
    free(snap);
    ck_assert_int_eq(nout, from + 1);
    ck_assert_ptr_nonnull(strstr(out[from], "\"1.00\""));
    ck_assert(has_depth(t));
    ex_free(&x);
    xg_track_free(t);
}
END_TEST

/*
 * After an outage the new connection first continues what was delivered
 * (passed: the snapshot is newer), then skips: the bridge starts from the
 * book the clients have with what was passed, not from the one at the
 * drop.
 */
START_TEST(outage_continues_then_skips)
{
    struct ex x;
    struct xg_track *t = synced(&x, XG_BN_SPOT);
    struct cl c;
    char *d, *snap;
    int from;

    cl_init(&c, XG_BN_SPOT);
    d = xg_bn_book_depth(t, 1000, &(size_t) { 0 });
    cl_snapshot(&c, d);
    free(d);
    from = nout;
    xg_track_down(t, now_ms);
    xg_track_resume(t, "confirmed");
    ex_feed(&x, t, 1, "[[\"99.50\",\"8.000\"]]", "[]");  /* continues */
    free(ex_event(&x, 1, "[[\"100.00\",\"0\"]]", "[]"));  /* lost */
    ex_feed(&x, t, 1, "[]", "[[\"101.00\",\"6.000\"]]");
    snap = ex_snapshot(&x);
    answer(t, snap);
    free(snap);
    ck_assert_int_eq(nout, from + 1);   /* the one that continued */
    ex_feed(&x, t, 1, "[[\"95.00\",\"1\"]]", "[]");      /* syncs */
    ck_assert_int_eq(nout, from + 2);   /* the bridge */
    ck_assert_int_eq(nnotice, 0);
    cl_take(&c, from);
    ck_assert_int_eq(c.breaks, 0);
    ck_assert(cl_equals(&c, &x));
    cl_free(&c);
    ex_free(&x);
    xg_track_free(t);
}
END_TEST

/* Runs the loop until nout reaches N or MS milliseconds pass. */
static void
wait_out(int n, int ms)
{
    struct timeval tv = { 0, 10000 };
    int i;

    for (i = 0; nout < n && i < ms / 10; i++) {
        event_base_loopexit(base, &tv);
        event_base_dispatch(base);
    }
}

/*
 * A quiet market: after an outage the snapshot comes and no event
 * follows; 2 s later the subscribers are bridged to the snapshot itself
 * (U = delivered+1, u = lastUpdateId); the next event continues it. With
 * OVERLAP, the next event overlaps the snapshot after all: held, fetched
 * again, bridged again; no client sees a break either way.
 */
static void
quiet(enum xg_bn_market m, int overlap)
{
    struct ex x;
    struct xg_track *t = synced(&x, m);
    struct cl c;
    char *d, *snap;
    json_t *br;
    uint64_t du = x.u, L;
    int from;

    cl_init(&c, m);
    d = xg_bn_book_depth(t, 1000, &(size_t) { 0 });
    cl_snapshot(&c, d);
    free(d);
    from = nout;
    ck_assert(!xg_bn_track_repairing(t));
    xg_track_down(t, now_ms);
    ck_assert(xg_bn_track_repairing(t));
    free(ex_event(&x, 2, "[[\"99.50\",\"0\"]]", "[[\"104.00\",\"2\"]]"));
    xg_track_resume(t, "confirmed");
    snap = ex_snapshot(&x);
    L = x.u;
    answer(t, snap);
    free(snap);
    ck_assert_int_eq(t->state, XG_TRACK_LIVE);
    ck_assert(xg_bn_track_repairing(t));    /* the bridge is due */
    ck_assert(!has_depth(t));
    ck_assert_int_eq(nout, from);
    wait_out(from + 1, 5000);
    ck_assert_int_eq(nout, from + 1);
    ck_assert(!xg_bn_track_repairing(t));
    br = json_loads(out[from], 0, NULL);
    ck_assert_int_eq(json_integer_value(json_object_get(br, "U")), du + 1);
    ck_assert_int_eq(json_integer_value(json_object_get(br, "u")), L);
    if (m == XG_BN_USDM) {
        ck_assert_int_eq(json_integer_value(json_object_get(br, "pu")), du);
        ck_assert_int_eq(json_integer_value(json_object_get(br, "E")), x.E);
    }
    json_decref(br);
    d = xg_bn_book_depth(t, 1000, &(size_t) { 0 });
    ck_assert_ptr_nonnull(d);
    ck_assert_ptr_nonnull(strstr(d, "\"lastUpdateId\":"));
    free(d);
    if (overlap) {
        /* an event that began before the snapshot: U <= L < u */
        char ev[256];

        x.u = L - 1;
        free(ex_event(&x, 3, "[[\"90.00\",\"1\"]]", "[]"));
        snprintf(ev, sizeof(ev), m == XG_BN_SPOT
            ? "{\"e\":\"depthUpdate\",\"E\":1,\"s\":\"BTCUSDT\",\"U\":%llu,"
              "\"u\":%llu,\"b\":[[\"90.00\",\"1\"]],\"a\":[]}"
            : "{\"e\":\"depthUpdate\",\"E\":1,\"T\":1,\"s\":\"BTCUSDT\","
              "\"U\":%llu,\"u\":%llu,\"pu\":%llu,\"b\":[[\"90.00\",\"1\"]],"
              "\"a\":[]}", (unsigned long long) L,
            (unsigned long long) x.u, (unsigned long long) L - 1);
        ck_assert_int_eq(feed(t, ev), 0);       /* held: fetched again */
        ck_assert_int_eq(t->state, XG_TRACK_FETCHING);
        snap = ex_snapshot(&x);
        ex_feed(&x, t, 1, "[]", "[[\"104.00\",\"0\"]]");
        answer(t, snap);
        free(snap);
        /* the second bridge (USDⓈ-M syncs at the overlapping event
           itself, U <= L <= u: then the next event too) */
        ck_assert_int_eq(nout, from + (m == XG_BN_SPOT ? 2 : 3));
    } else {
        ck_assert_int_eq(ex_feed(&x, t, 1, "[[\"90.00\",\"1\"]]", "[]"), 1);
    }
    cl_take(&c, from);
    ck_assert_int_eq(c.breaks, 0);
    ck_assert(cl_equals(&c, &x));
    ck_assert_int_eq(nnotice, 0);
    cl_free(&c);
    ex_free(&x);
    xg_track_free(t);
}

START_TEST(spot_quiet_bridged)
{
    quiet(XG_BN_SPOT, _i);
}
END_TEST

START_TEST(usdm_quiet_bridged)
{
    quiet(XG_BN_USDM, _i);
}
END_TEST

/* The snapshot's fetch dies with the connection: the held events kept,
   fetched again at the confirm, bridged. */
START_TEST(fetch_dies_with_connection)
{
    struct ex x;
    struct xg_track *t = synced(&x, XG_BN_SPOT);
    struct cl c;
    char *d, *snap;
    int from;

    cl_init(&c, XG_BN_SPOT);
    d = xg_bn_book_depth(t, 1000, &(size_t) { 0 });
    cl_snapshot(&c, d);
    free(d);
    from = nout;
    free(ex_event(&x, 1, "[[\"99.50\",\"0\"]]", "[]"));
    ex_feed(&x, t, 1, "[[\"98.50\",\"1\"]]", "[]");     /* gap: held */
    ck_assert_int_eq(nsent, 2);
    xg_track_down(t, now_ms);
    ck_assert_int_eq(t->state, XG_TRACK_HELD);
    answer(t, "{\"lastUpdateId\":1,\"bids\":[],\"asks\":[]}"); /* ignored */
    ck_assert_int_eq(nout, from);
    xg_track_resume(t, "confirmed");
    ck_assert_int_eq(nsent, 3);
    free(ex_event(&x, 3, "[[\"97.50\",\"1\"]]", "[]"));
    ex_feed(&x, t, 1, "[[\"96.50\",\"1\"]]", "[]");
    snap = ex_snapshot(&x);
    answer(t, snap);
    free(snap);
    ck_assert_int_eq(nout, from);       /* all older than the snapshot */
    ck_assert_int_eq(ex_feed(&x, t, 1, "[]", "[[\"105.00\",\"1\"]]"), 0);
    ck_assert_int_eq(nout, from + 1);   /* the bridge */
    cl_take(&c, from);
    ck_assert_int_eq(c.breaks, 0);
    ck_assert(cl_equals(&c, &x));
    cl_free(&c);
    ex_free(&x);
    xg_track_free(t);
}
END_TEST

/* REST refused for now (429): the snapshot is asked again after the
   backoff; the second answer syncs. */
START_TEST(rest_error_retried)
{
    struct xg_track *t = track(XG_BN_USDM, "btcusdt@depth");
    struct ex x;
    char *snap;

    ex_init(&x, XG_BN_USDM, 70);
    ex_feed(&x, t, 2, B0, A0);
    answer_status(t, 429);
    ck_assert_int_eq(t->state, XG_TRACK_FETCHING);
    ck_assert_int_eq(nnotice, 0);
    wait_sent(2);
    ck_assert_str_eq(sent[1]->text,
        "/fapi/v1/depth?symbol=BTCUSDT&limit=1000");
    answer_status(t, 503);
    wait_sent(3);
    snap = ex_snapshot(&x);
    answer(t, snap);
    free(snap);
    ck_assert_uint_eq(env.retries, 2);
    ck_assert_int_eq(t->state, XG_TRACK_LIVE);
    ck_assert_int_eq(nout, 1);
    ck_assert(has_depth(t));
    ex_free(&x);
    xg_track_free(t);
}
END_TEST

/*
 * No book ever synced (REST refuses for good): the held events pass with
 * the engine's gap notice; a later gap passes with a notice of its own;
 * no depth answer.
 */
START_TEST(never_synced_passes)
{
    struct xg_track *t = track(XG_BN_SPOT, "btcusdt@depth");
    struct ex x;

    ex_init(&x, XG_BN_SPOT, 10);
    ex_feed(&x, t, 1, B0, A0);
    ex_feed(&x, t, 1, "[]", "[]");
    answer_status(t, 400);              /* final: no retry */
    ck_assert_int_eq(nsent, 1);
    ck_assert_int_eq(t->state, XG_TRACK_LIVE);
    ck_assert_int_eq(nout, 2);
    ck_assert_int_eq(nnotice, 1);
    ck_assert_str_eq(notice, "book resync failed");
    ck_assert_int_eq(ex_feed(&x, t, 1, "[]", "[]"), 1);
    free(ex_event(&x, 1, "[]", "[]"));  /* lost */
    ck_assert_int_eq(ex_feed(&x, t, 1, "[]", "[]"), 1);
    ck_assert_int_eq(nnotice, 2);
    ck_assert_str_eq(notice, "book gap not bridged");
    ck_assert_int_eq(nsent, 1);         /* in the hold-off */
    ck_assert(!has_depth(t));
    /* after the hold-off a continuous event starts a fetch again */
    now_ms += 100;
    ck_assert_int_eq(ex_feed(&x, t, 1, "[]", "[]"), 0);
    ck_assert_int_eq(nsent, 2);
    ex_free(&x);
    xg_track_free(t);
}
END_TEST

/* A bridge due, and the snapshot refused for good: the chain breaks
   once, told once; the events pass. */
START_TEST(bridge_given_up)
{
    struct ex x;
    struct xg_track *t = synced(&x, XG_BN_SPOT);
    int from = nout;

    free(ex_event(&x, 1, "[]", "[]"));
    ex_feed(&x, t, 1, "[]", "[]");
    ck_assert_int_eq(nsent, 2);
    answer_status(t, 404);
    ck_assert_int_eq(nnotice, 1);
    ck_assert_int_eq(nout, from + 1);
    ck_assert_int_eq(ex_feed(&x, t, 1, "[]", "[]"), 1);
    ck_assert_int_eq(nnotice, 1);
    ex_free(&x);
    xg_track_free(t);
}
END_TEST

/* A malformed snapshot answer fails the fetch (a gap notice), it does not
   crash or sync. */
START_TEST(bad_snapshot)
{
    const char *bad[] = { "not json", "[]", "{\"bids\":[],\"asks\":[]}",
        "{\"lastUpdateId\":-1,\"bids\":[],\"asks\":[]}",
        "{\"lastUpdateId\":5,\"bids\":[[1,2]],\"asks\":[]}",
        "{\"lastUpdateId\":5,\"bids\":[[\"1\"]],\"asks\":[]}",
        "{\"lastUpdateId\":5,\"bids\":[[\"1e5\",\"1\"]],\"asks\":[]}",
        "{\"lastUpdateId\":99999999999999999999999,\"bids\":[],\"asks\":[]}",
        "{\"lastUpdateId\":5,\"bids\":{},\"asks\":[]}", NULL };
    int i;

    for (i = 0; bad[i] != NULL; i++) {
        struct xg_track *t = track(XG_BN_SPOT, "btcusdt@depth");

        feed(t, "{\"e\":\"depthUpdate\",\"E\":1,\"s\":\"BTCUSDT\",\"U\":1,"
            "\"u\":5,\"b\":[],\"a\":[]}");
        answer(t, bad[i]);
        ck_assert_msg(!has_depth(t), "%s",
            bad[i]);
        ck_assert_int_eq(t->state, XG_TRACK_LIVE);
        xg_track_free(t);
    }
    ck_assert_int_eq(nnotice, i);
}
END_TEST

/* Malformed events: passed before anything was delivered (not ours to
   judge), dropped inside a chain (they would break it); never a crash,
   the book untouched. */
START_TEST(bad_events)
{
    const char *bad[] = { "", "nope", "[1,2]", "{", "{\"e\":\"depthUpdate\"}",
        "{\"e\":\"trade\",\"U\":1,\"u\":2,\"b\":[],\"a\":[]}",
        "{\"e\":\"depthUpdate\",\"U\":1,\"b\":[],\"a\":[]}",
        "{\"e\":\"depthUpdate\",\"U\":\"1\",\"u\":2,\"b\":[],\"a\":[]}",
        "{\"e\":\"depthUpdate\",\"U\":9,\"u\":2,\"b\":[],\"a\":[]}",
        "{\"e\":\"depthUpdate\",\"U\":-1,\"u\":2,\"b\":[],\"a\":[]}",
        "{\"e\":\"depthUpdate\",\"U\":1,\"u\":99999999999999999999999999,"
        "\"b\":[],\"a\":[]}",
        "{\"e\":\"depthUpdate\",\"U\":1,\"u\":2,\"b\":[[\"1\",2]],\"a\":[]}",
        "{\"e\":\"depthUpdate\",\"U\":1,\"u\":2,\"b\":[[\"-1\",\"2\"]],"
        "\"a\":[]}",
        "{\"e\":\"depthUpdate\",\"U\":1,\"u\":2,\"b\":[[\"1.\",\"2\"]],"
        "\"a\":[]}",
        "{\"e\":\"depthUpdate\",\"U\":1,\"u\":2,\"b\":[],\"a\":null}",
        "{\"e\":\"depthUpdate\",\"U\":1,\"u\":2,\"b\":[[\"11111111111111111111"
        "111111111111111111111111111111111111111111111111111\",\"1\"]],"
        "\"a\":[]}", NULL };
    struct ex x;
    struct xg_track *t;
    char *d0, *d1;
    int i, n;

    /* before anything was delivered: passed as they are */
    t = track(XG_BN_SPOT, "btcusdt@depth");
    for (i = 0; bad[i] != NULL; i++) {
        ck_assert_msg(feed(t, bad[i]) == 1, "%s", bad[i]);
    }
    ck_assert_int_eq(nsent, 0);
    xg_track_free(t);
    out_clear();
    /* in a chain: dropped, the book as it was */
    t = synced(&x, XG_BN_SPOT);
    d0 = xg_bn_book_depth(t, 100, &(size_t) { 0 });
    n = nout;
    for (i = 0; bad[i] != NULL; i++) {
        ck_assert_msg(feed(t, bad[i]) == 0, "%s", bad[i]);
    }
    ck_assert_int_eq(nout, n);
    d1 = xg_bn_book_depth(t, 100, &(size_t) { 0 });
    ck_assert_str_eq(d0, d1);
    ck_assert_int_eq(ex_feed(&x, t, 1, "[]", "[]"), 1);
    free(d0);
    free(d1);
    ex_free(&x);
    xg_track_free(t);
    out_clear();
    teardown();
    setup();
    /* USDⓈ-M needs pu */
    t = synced(&x, XG_BN_USDM);
    ck_assert_int_eq(feed(t, "{\"e\":\"depthUpdate\",\"E\":1,\"T\":1,"
        "\"U\":2000,\"u\":2001,\"b\":[],\"a\":[]}"), 0);
    ex_free(&x);
    xg_track_free(t);
}
END_TEST

/* The verdict on a depthUpdate U..u (pu = U-1) of a new connection. */
static enum xg_track_cross
cross_at(struct xg_track *t, enum xg_bn_market m, uint64_t U, uint64_t u)
{
    char ev[256];

    snprintf(ev, sizeof(ev), m == XG_BN_SPOT
        ? "{\"e\":\"depthUpdate\",\"E\":1,\"s\":\"BTCUSDT\",\"U\":%llu,"
          "\"u\":%llu,\"b\":[],\"a\":[]}"
        : "{\"e\":\"depthUpdate\",\"E\":1,\"T\":1,\"s\":\"BTCUSDT\","
          "\"U\":%llu,\"u\":%llu,\"pu\":%llu,\"b\":[],\"a\":[]}",
        (unsigned long long) U, (unsigned long long) u,
        (unsigned long long) U - 1);
    return xg_track_cross(t, ev, strlen(ev));
}

/* A rotation's new connection: verdicts by u against what was delivered. */
static void
cross(enum xg_bn_market m)
{
    struct ex x;
    struct xg_track *t = track(m, "btcusdt@depth");
    uint64_t du;

    ck_assert_int_eq(xg_track_cross(t, NULL, 0), XG_CROSS_SWITCH);
    xg_track_free(t);
    t = synced(&x, m);
    du = x.u;
    ck_assert_int_eq(xg_track_cross(t, NULL, 0), XG_CROSS_WAIT);
    ck_assert_int_eq(cross_at(t, m, du - 3, du - 1), XG_CROSS_DROP);
    ck_assert_int_eq(cross_at(t, m, du - 1, du), XG_CROSS_DROP_SWITCH);
    ck_assert_int_eq(cross_at(t, m, du + 1, du + 4), XG_CROSS_SWITCH);
    ck_assert_int_eq(cross_at(t, m, du + 2, du + 4), XG_CROSS_WAIT);
    ck_assert_int_eq(xg_track_cross(t, "garbage", 7), XG_CROSS_SWITCH);
    /* while fetching, the channel waits (the engine) */
    free(ex_event(&x, 1, "[]", "[]"));
    ex_feed(&x, t, 1, "[]", "[]");
    ck_assert_int_eq(cross_at(t, m, du + 1, du + 1), XG_CROSS_WAIT);
    ex_free(&x);
    xg_track_free(t);
}

START_TEST(spot_cross)
{
    cross(XG_BN_SPOT);
}
END_TEST

START_TEST(usdm_cross)
{
    cross(XG_BN_USDM);
}
END_TEST

/* The depth answer: top LIMIT levels each side in the book's order, the
   exchange's text, lastUpdateId the delivered u; USDⓈ-M with E and T. */
START_TEST(depth_json)
{
    struct ex x;
    struct xg_track *t = synced(&x, XG_BN_USDM);
    size_t len;
    char *s, want[512];

    ex_feed(&x, t, 1, "[[\"99.70\",\"0.010\"],[\"99.0\",\"4.000\"]]",
        "[[\"100.5\",\"0.5\"]]");
    s = xg_bn_book_depth(t, 2, &len);
    snprintf(want, sizeof(want), "{\"lastUpdateId\":%llu,\"E\":%llu,"
        "\"T\":%llu,\"bids\":[[\"100.00\",\"1.000\"],[\"99.70\",\"0.010\"]],"
        "\"asks\":[[\"100.5\",\"0.5\"],[\"101.00\",\"2.000\"]]}",
        (unsigned long long) x.u, (unsigned long long) x.E,
        (unsigned long long) x.E - 1);
    ck_assert_str_eq(s, want);
    ck_assert_uint_eq(len, strlen(want));
    free(s);
    s = xg_bn_book_depth(t, 0, &len);       /* 0: Binance's default */
    ck_assert_ptr_nonnull(strstr(s, "[\"99.50\",\"2.500\"],[\"99.0\","
        "\"4.000\"]]"));
    free(s);
    ex_free(&x);
    xg_track_free(t);
}
END_TEST

/* Bounded memory: levels past BN_BOOK_MAX_LEVELS (10000) per side are
   forgotten from the deep end; the top stays right. */
START_TEST(levels_capped)
{
    struct xg_track *t = track(XG_BN_SPOT, "btcusdt@depth");
    char *s, lv[32];
    size_t len, i;
    json_t *d;
    struct { char *p; size_t len, cap; } b = { NULL, 0, 0 };

#define ADD(str) do { size_t n_ = strlen(str); \
        if (b.len + n_ + 1 > b.cap) { b.cap = (b.len + n_ + 1) * 2; \
            b.p = realloc(b.p, b.cap); } \
        memcpy(b.p + b.len, str, n_ + 1); b.len += n_; } while (0)
    ADD("{\"lastUpdateId\":1,\"bids\":[");
    for (i = 0; i < 12000; i++) {
        snprintf(lv, sizeof(lv), "%s[\"%zu.5\",\"1\"]", i ? "," : "",
            i + 1);
        ADD(lv);
    }
    ADD("],\"asks\":[[\"20000\",\"1\"]]}");
#undef ADD
    feed(t, "{\"e\":\"depthUpdate\",\"E\":1,\"s\":\"BTCUSDT\",\"U\":2,"
        "\"u\":2,\"b\":[[\"0.5\",\"9\"]],\"a\":[]}");
    answer(t, b.p);
    free(b.p);
    s = xg_bn_book_depth(t, 20000, &len);
    ck_assert_ptr_nonnull(s);
    d = json_loads(s, 0, NULL);
    ck_assert_int_eq(json_array_size(json_object_get(d, "bids")), 10000);
    ck_assert_str_eq(json_string_value(json_array_get(json_array_get(
        json_object_get(d, "bids"), 0), 0)), "12000.5");
    ck_assert_str_eq(json_string_value(json_array_get(json_array_get(
        json_object_get(d, "bids"), 9999), 0)), "2001.5");
    json_decref(d);
    free(s);
    xg_track_free(t);
}
END_TEST

/* The held events are bounded by the engine's max_held: a snapshot that
   never comes gives up with a notice and the events pass. */
START_TEST(held_bounded)
{
    struct xg_track *t = track(XG_BN_SPOT, "btcusdt@depth");
    struct ex x;
    int i;

    env.max_held = 10;
    ex_init(&x, XG_BN_SPOT, 1);
    for (i = 0; i < 15; i++) {
        ex_feed(&x, t, 1, "[]", "[]");
    }
    ck_assert_int_eq(nnotice, 1);
    ck_assert_int_le(t->nheld, 10);
    ck_assert_int_ge(nout, 11);
    ex_free(&x);
    xg_track_free(t);
}
END_TEST

/*
 * Faults at random, both markets, once the book is synced (a gap before
 * that cannot be bridged: nobody knows what the clients hold): events
 * lost (live gaps), outages with repeats from the new connection,
 * snapshots answered late or lagging behind the stream, REST refusing for
 * now. A strict client that
 * took the gateway's depth answer sees no break and ends with the
 * exchange's book.
 */
static void
random_faults(enum xg_bn_market m, unsigned seed)
{
    struct xg_track *t = track(m, "btcusdt@depth@100ms");
    struct ex x;
    struct cl c;
    char *recent[8] = { NULL }, *old_snap = NULL;
    int nrec = 0, step, joined = 0, from = 0, i, down = 0;
    char *d;

    srand(seed);
    env.max_held = 100000;
    ex_init(&x, m, 100);
    cl_init(&c, m);
    for (step = 0; step < 3000; step++) {
        int r = rand() % 100;
        char b[64], a[64], *e;

        snprintf(b, sizeof(b), "[[\"%d.%d\",\"%d\"]]", 90 + rand() % 10,
            rand() % 10, rand() % 3);
        snprintf(a, sizeof(a), "[[\"%d.%d\",\"%d\"]]", 101 + rand() % 10,
            rand() % 10, rand() % 3);
        e = ex_event(&x, 1 + (unsigned) (rand() % 3), b, a);
        if ((r < 4 && joined) || down) {
            free(e);                    /* lost */
        } else {
            feed(t, e);
            if (r < 8) {                /* a repeat */
                feed(t, e);
            }
            free(recent[nrec % 8]);
            recent[nrec++ % 8] = e;
        }
        if (r >= 96 && !down && joined) {   /* the connection drops */
            xg_track_down(t, now_ms);
            down = 1 + rand() % 4;
        } else if (down && --down == 0) {
            int n = nrec < 8 ? nrec : 8;

            xg_track_resume(t, "confirmed");
            for (i = 0; i < n; i++) {   /* old ones again, in order */
                feed(t, recent[(nrec - n + i) % 8]);
            }
        }
        if (step % 40 == 0) {
            free(old_snap);
            old_snap = ex_snapshot(&x);
        }
        if (nsent > 0 && sent[nsent - 1] != NULL && rand() % 4 == 0) {
            int how = rand() % 20;

            if (how < 2) {
                answer_status(t, 429);
            } else if (how < 3) {
                answer(t, old_snap);    /* lagging: too old, or synced
                                           on and re-fetched at the gap */
            } else {
                char *snap = ex_snapshot(&x);

                answer(t, snap);
                free(snap);
            }
        }
        event_base_loop(base, EVLOOP_NONBLOCK);
        now_ms++;
        if (!joined && (d = xg_bn_book_depth(t, 5000, &(size_t) { 0 }))
                       != NULL) {
            cl_snapshot(&c, d);
            free(d);
            joined = 1;
            from = nout;
        }
        if (joined) {
            cl_take(&c, from);
            from = nout;
        }
    }
    /* settle: back, an event (a loss at the end shows), every fetch
       answered, one more event */
    if (down) {
        xg_track_resume(t, "confirmed");
    }
    ex_feed(&x, t, 1, "[[\"50.5\",\"1\"]]", "[]");
    for (i = 0; i < 50 && t->state != XG_TRACK_LIVE; i++) {
        int k;

        for (k = nsent - 1; k >= 0 && sent[k] == NULL; k--) {
        }
        if (k >= 0 && sent[k]->tag == t->tag) {
            char *snap = ex_snapshot(&x);
            struct xg_jspan res = { snap, strlen(snap) }, err = { NULL, 0 };
            struct xg_reg_req *q = sent[k];

            sent[k] = NULL;
            xg_track_answer(t, q, &res, &err);
            xg_registry_req_free(q);
            free(snap);
        } else {
            event_base_loop(base, EVLOOP_ONCE);
        }
    }
    ex_feed(&x, t, 1, "[[\"50.0\",\"1\"]]", "[]");
    ck_assert_int_eq(t->state, XG_TRACK_LIVE);
    ck_assert(joined);
    cl_take(&c, from);
    ck_assert_int_eq(nnotice, 0);
    ck_assert_int_eq(c.breaks, 0);
    ck_assert_uint_eq(c.id, x.u);
    ck_assert(cl_equals(&c, &x));
    d = xg_bn_book_depth(t, 5000, &(size_t) { 0 });
    ck_assert_ptr_nonnull(d);
    {
        struct cl g;

        cl_init(&g, m);
        cl_snapshot(&g, d);
        ck_assert(cl_equals(&g, &x));
        cl_free(&g);
    }
    free(d);
    for (i = 0; i < 8; i++) {
        free(recent[i]);
    }
    free(old_snap);
    cl_free(&c);
    ex_free(&x);
    xg_track_free(t);
}

START_TEST(spot_random_faults)
{
    random_faults(XG_BN_SPOT, 1 + (unsigned) _i);
}
END_TEST

START_TEST(usdm_random_faults)
{
    random_faults(XG_BN_USDM, 100 + (unsigned) _i);
}
END_TEST

/* ---- the suite ---- */


static Suite *
bn_track_suite(void)
{
    Suite *s = suite_create("xg_bn_track");
    const TTest *const book[] = {
        names, spot_first_sync, spot_sync_rule, usdm_sync_rule, usdm_sync_pu,
        stale_snapshot_refetched, stale_snapshot_gives_up, duplicate_dropped,
        spot_live_gap_bridged, usdm_live_gap_bridged, spot_outage_bridged,
        usdm_outage_bridged, outage_nothing_missed,
        outage_continues_then_skips,
        fetch_dies_with_connection, rest_error_retried, never_synced_passes,
        bridge_given_up, bad_snapshot, bad_events, spot_cross, usdm_cross,
        depth_json, levels_capped, held_bounded, NULL
    };
    TCase *tc;

    add_case(s, "book", book);
    tc = tcase_create("quiet");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, 30);
    tcase_add_loop_test(tc, spot_quiet_bridged, 0, 2);
    tcase_add_loop_test(tc, usdm_quiet_bridged, 0, 2);
    suite_add_tcase(s, tc);
    tc = tcase_create("random");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, 120);
    tcase_add_loop_test(tc, spot_random_faults, 0, 8);
    tcase_add_loop_test(tc, usdm_random_faults, 0, 8);
    suite_add_tcase(s, tc);
    return s;
}

int
main(void)
{
    SRunner *sr = srunner_create(bn_track_suite());
    int failed;

    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
