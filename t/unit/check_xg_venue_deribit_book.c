/*
 * check_xg_venue_deribit_book.c: Deribit's book messages around the
 * generic book (modules/venue/xg_venue_deribit_book.c over
 * src/xg_book.c): the channel rule, applying snapshots and changes, gaps,
 * malformed input, number text, and, as a seeded property test, that a
 * client which applies every book message as deltas (never resetting on
 * a snapshot, as ccxt does) always ends with exactly the exchange's book
 * across bridges and late joins.
 *
 * The "exchange" here is a generator that keeps its book in integer
 * ticks and lots and writes the texts the way Deribit does; the client
 * is a deliberately different, naive model (unsorted arrays, linear
 * search, jansson's float parse of the gateway's text).
 */
#include "xg_core.h"
#include "xg_log.h"
#include "xg_venue_deribit.h"

#include <check.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/*
 * check's ck_assert records every passing assertion through its pipe, so
 * the hot loops of the property test assert with this instead.
 */
#define REQUIRE(cond, ...) \
    do { if (!(cond)) { ck_abort_msg(__VA_ARGS__); } } while (0)

#define CH   "book.BTC-PERPETUAL.100ms"
#define INST "BTC-PERPETUAL"

/* ---- helpers ------------------------------------------------------------ */

static enum xg_book_result
apply_s(struct xg_book *b, const char *s)
{
    return xg_venue_deribit_book_apply_text(b, s, strlen(s));
}

static uint64_t rng_state;

static uint64_t
rnd64(void)
{
    /* xorshift64*: deterministic per seed */
    rng_state ^= rng_state >> 12;
    rng_state ^= rng_state << 25;
    rng_state ^= rng_state >> 27;
    return rng_state * 2685821657736338717ULL;
}

static long long
rnd(long long n)
{
    return n <= 1 ? 0 : (long long) (rnd64() % (uint64_t) n);
}

/* ---- the exchange: a book in ticks (0.01) and lots (0.1) ---------------- */

#define GMAX 2048

struct glevel {
    long long ticks, lots;
};

struct gen {
    struct glevel lv[2][GMAX];
    int           n[2];
    uint64_t      change_id;
    long long     ts;
    long long     mid;
};

static int
gen_find(const struct gen *g, int s, long long ticks)
{
    int i;

    for (i = 0; i < g->n[s]; i++) {
        if (g->lv[s][i].ticks == ticks) {
            return i;
        }
    }
    return -1;
}

/* Exchange text for a price, in one of the forms Deribit-like JSON uses. */
static void
price_text(FILE *f, long long ticks)
{
    long long w = ticks / 100, c = ticks % 100;

    switch (rnd(4)) {
    case 0:
        fprintf(f, "%lld.%02lld", w, c);    /* may end in 0: 5042.30 */
        break;
    case 1:
        if (c == 0) {
            fprintf(f, "%lld", w);          /* an integer */
            break;
        }
        /* fall through */
    default:
        if (c == 0) {
            fprintf(f, "%lld.0", w);
        } else if (c % 10 == 0) {
            fprintf(f, "%lld.%lld", w, c / 10);
        } else {
            fprintf(f, "%lld.%02lld", w, c);
        }
        break;
    }
}

static void
amount_text(FILE *f, long long lots)
{
    if (lots % 10 == 0 && rnd(2)) {
        fprintf(f, rnd(2) ? "%lld" : "%lld.0", lots / 10);
    } else {
        fprintf(f, "%lld.%lld", lots / 10, lots % 10);
    }
}

static double
price_value(long long ticks)
{
    char buf[40];

    snprintf(buf, sizeof(buf), "%lld.%02lld", ticks / 100, ticks % 100);
    return strtod(buf, NULL);
}

static double
amount_value(long long lots)
{
    char buf[40];

    snprintf(buf, sizeof(buf), "%lld.%lld", lots / 10, lots % 10);
    return strtod(buf, NULL);
}

static void
level_text(FILE *f, int *first, const char *act, long long ticks,
    long long lots)
{
    fprintf(f, "%s[\"%s\",", *first ? "" : ",", act);
    price_text(f, ticks);
    fputc(',', f);
    if (lots == 0) {
        fputc('0', f);
    } else {
        amount_text(f, lots);
    }
    fputc(']', f);
    *first = 0;
}

static int
cmp_bid(const void *a, const void *b)
{
    const struct glevel *x = a, *y = b;

    return x->ticks < y->ticks ? 1 : x->ticks > y->ticks ? -1 : 0;
}

static int
cmp_ask(const void *a, const void *b)
{
    return -cmp_bid(a, b);
}

/* The exchange's snapshot data for its book now (malloc'd). */
static char *
gen_snapshot(struct gen *g)
{
    char *out = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&out, &len);
    int s, i, first;

    qsort(g->lv[0], (size_t) g->n[0], sizeof(struct glevel), cmp_bid);
    qsort(g->lv[1], (size_t) g->n[1], sizeof(struct glevel), cmp_ask);
    fprintf(f, "{\"type\":\"snapshot\",\"timestamp\":%lld,"
        "\"instrument_name\":\"" INST "\",\"change_id\":%llu", g->ts,
        (unsigned long long) g->change_id);
    for (s = 0; s < 2; s++) {
        fprintf(f, s ? "],\"asks\":[" : ",\"bids\":[");
        first = 1;
        for (i = 0; i < g->n[s]; i++) {
            level_text(f, &first, "new", g->lv[s][i].ticks, g->lv[s][i].lots);
        }
    }
    fprintf(f, "]}");
    fclose(f);
    return out;
}

/* Moves the exchange's book one step and returns the change data. */
static char *
gen_change(struct gen *g)
{
    char *out = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&out, &len);
    FILE *side[2];
    char *sbuf[2] = { NULL, NULL };
    size_t slen[2];
    int first[2] = { 1, 1 }, nops = 1 + (int) rnd(6), k, s;
    uint64_t prev = g->change_id;

    side[0] = open_memstream(&sbuf[0], &slen[0]);
    side[1] = open_memstream(&sbuf[1], &slen[1]);
    for (k = 0; k < nops; k++) {
        int i;
        long long r = rnd(100);

        s = (int) rnd(2);
        if (g->n[s] == 0 || r < 35) {
            long long t = s ? g->mid + 1 + rnd(300) : g->mid - 1 - rnd(300);
            long long lots = 1 + rnd(1000);

            i = gen_find(g, s, t);
            if (i >= 0) {
                g->lv[s][i].lots = lots;
                level_text(side[s], &first[s], "change", t, lots);
            } else if (g->n[s] < GMAX) {
                g->lv[s][g->n[s]].ticks = t;
                g->lv[s][g->n[s]].lots = lots;
                g->n[s]++;
                level_text(side[s], &first[s], "new", t, lots);
            }
        } else if (r < 65) {
            i = (int) rnd(g->n[s]);
            level_text(side[s], &first[s], "delete", g->lv[s][i].ticks, 0);
            g->lv[s][i] = g->lv[s][g->n[s] - 1];
            g->n[s]--;
        } else {
            i = (int) rnd(g->n[s]);
            g->lv[s][i].lots = 1 + rnd(1000);
            level_text(side[s], &first[s], "change", g->lv[s][i].ticks,
                g->lv[s][i].lots);
        }
    }
    fclose(side[0]);
    fclose(side[1]);
    /* aggregated channels skip ids: step by 1..3 */
    g->change_id += 1 + (uint64_t) rnd(3);
    g->ts += 1 + rnd(100);
    fprintf(f, "{\"type\":\"change\",\"timestamp\":%lld,"
        "\"instrument_name\":\"" INST "\",\"prev_change_id\":%llu,"
        "\"change_id\":%llu,\"bids\":[%s],\"asks\":[%s]}", g->ts,
        (unsigned long long) prev, (unsigned long long) g->change_id,
        sbuf[0], sbuf[1]);
    fclose(f);
    free(sbuf[0]);
    free(sbuf[1]);
    return out;
}

/* Wraps DATA into the notification the upstream sends (malloc'd). */
static char *
wrap(const char *data)
{
    size_t n = strlen(data) + 128;
    char *m = xg_malloc(n);

    snprintf(m, n, "{\"jsonrpc\":\"2.0\",\"method\":\"subscription\","
        "\"params\":{\"channel\":\"" CH "\",\"data\":%s}}", data);
    return m;
}

static void
gen_init(struct gen *g, long long mid)
{
    int i;

    memset(g, 0, sizeof(*g));
    g->mid = mid;
    g->change_id = 1000 + (uint64_t) rnd(1000);
    g->ts = 1700000000000LL;
    for (i = 0; i < 60; i++) {
        free(gen_change(g));
    }
}

/* ---- the client: naive delta application -------------------------------- */

#define CMAX 4096

struct cli {
    int      n[2];
    double   p[2][CMAX], a[2][CMAX];
    uint64_t last;
    int      started;
    int      snapshots;
    long     anomalies;
};

static int
cli_find(const struct cli *c, int s, double p)
{
    int i;

    for (i = 0; i < c->n[s]; i++) {
        if (c->p[s][i] == p) {
            return i;
        }
    }
    return -1;
}

/*
 * Applies one notification text as a naive client: every level is a
 * delta, a snapshot is not a reset, prev_change_id must chain.
 */
static void
cli_apply(struct cli *c, const char *msg)
{
    json_error_t e;
    json_t *root = json_loads(msg, 0, &e), *data, *prev;
    const char *type;
    int s;

    REQUIRE(root != NULL, "client cannot parse: %s: %.200s", e.text,
        msg);
    REQUIRE(strcmp(json_string_value(json_object_get(root, "method")),
        "subscription") == 0, "not a subscription");
    data = json_object_get(json_object_get(root, "params"), "data");
    REQUIRE(json_is_object(data), "json_is_object(data)");
    REQUIRE(strcmp(json_string_value(json_object_get(data,
        "instrument_name")), INST) == 0, "wrong instrument_name");
    type = json_string_value(json_object_get(data, "type"));
    REQUIRE(type != NULL, "type != NULL");
    if (strcmp(type, "snapshot") == 0) {
        c->snapshots++;
        REQUIRE(c->snapshots == 1, "a client saw a second snapshot");
    }
    prev = json_object_get(data, "prev_change_id");
    if (prev != NULL) {
        REQUIRE(c->started, "c->started");
        REQUIRE((uint64_t) json_integer_value(prev) == c->last,
            "chain broken: prev_change_id %lld, client's last %llu",
            (long long) json_integer_value(prev),
            (unsigned long long) c->last);
    } else {
        REQUIRE(strcmp(type, "snapshot") == 0, "a change without prev");
    }
    c->last = (uint64_t) json_integer_value(json_object_get(data,
        "change_id"));
    c->started = 1;
    for (s = 0; s < 2; s++) {
        json_t *arr = json_object_get(data, s ? "asks" : "bids"), *lv;
        size_t i;

        json_array_foreach(arr, i, lv) {
            const char *act = json_string_value(json_array_get(lv, 0));
            double p = json_number_value(json_array_get(lv, 1));
            double a = json_number_value(json_array_get(lv, 2));
            int j = cli_find(c, s, p);

            REQUIRE(json_is_number(json_array_get(lv, 1)), "price type");
            REQUIRE(json_is_number(json_array_get(lv, 2)), "amount type");
            if (strcmp(act, "delete") == 0 || a == 0) {
                if (j < 0) {
                    c->anomalies++;
                    continue;
                }
                c->p[s][j] = c->p[s][c->n[s] - 1];
                c->a[s][j] = c->a[s][c->n[s] - 1];
                c->n[s]--;
                continue;
            }
            if (j >= 0) {
                c->anomalies += strcmp(act, "new") == 0;
                c->a[s][j] = a;
                continue;
            }
            c->anomalies += strcmp(act, "change") == 0;
            REQUIRE(c->n[s] < CMAX, "c->n[s] < CMAX");
            c->p[s][c->n[s]] = p;
            c->a[s][c->n[s]] = a;
            c->n[s]++;
        }
    }
    json_decref(root);
}

static int
cmp_dbl(const void *a, const void *b)
{
    double x = *(const double *) a, y = *(const double *) b;

    return x < y ? -1 : x > y ? 1 : 0;
}

/* Asserts that client C holds exactly the exchange's book G. */
static void
cli_check(const struct cli *c, const struct gen *g, const char *who)
{
    int s, i;

    for (s = 0; s < 2; s++) {
        double cp[CMAX], gp[GMAX];

        REQUIRE(c->n[s] == g->n[s], "%s: %s has %d levels, exchange %d",
            who, s ? "asks" : "bids", c->n[s], g->n[s]);
        for (i = 0; i < g->n[s]; i++) {
            int j = cli_find(c, s, price_value(g->lv[s][i].ticks));

            REQUIRE(j >= 0, "%s: level %lld missing", who,
                g->lv[s][i].ticks);
            REQUIRE(c->a[s][j] == amount_value(g->lv[s][i].lots),
                "%s: level %lld amount %.17g, exchange %.17g", who,
                g->lv[s][i].ticks, c->a[s][j],
                amount_value(g->lv[s][i].lots));
            gp[i] = price_value(g->lv[s][i].ticks);
        }
        /* and no duplicate prices on the client side */
        memcpy(cp, c->p[s], (size_t) c->n[s] * sizeof(double));
        qsort(cp, (size_t) c->n[s], sizeof(double), cmp_dbl);
        qsort(gp, (size_t) g->n[s], sizeof(double), cmp_dbl);
        REQUIRE(memcmp(cp, gp, (size_t) c->n[s] * sizeof(double)) == 0,
            "%s: duplicate prices", who);
    }
}

/* Asserts that the gateway's own book equals G (via a late-joiner view). */
static void
book_check(const struct xg_book *b, const struct gen *g)
{
    struct cli *c = xg_calloc(1, sizeof(*c));
    char *snap = xg_venue_deribit_book_snapshot(b, NULL);

    ck_assert(snap != NULL);
    cli_apply(c, snap);
    ck_assert_uint_eq(c->last, g->change_id);
    cli_check(c, g, "gateway book");
    free(snap);
    free(c);
}

/* ---- basic behaviour ---------------------------------------------------- */

START_TEST(test_channel_kind)
{
    static const struct {
        const char       *channel;
        enum xg_book_kind kind;
    } t[] = {
        { "book.BTC-PERPETUAL.100ms", XG_BOOK_DELTA },
        { "book.BTC-26DEC26-100000-C.raw", XG_BOOK_DELTA },
        { "book.BTC-PERPETUAL.none.10.100ms", XG_BOOK_IMAGE },
        { "book.ETH-PERPETUAL.5.20.agg2", XG_BOOK_IMAGE },
        { "book.ETH-PERPETUAL.5.x.agg2", XG_BOOK_NOT_BOOK },
        { "trades.BTC-PERPETUAL.100ms", XG_BOOK_NOT_BOOK },
        { "book.BTC-PERPETUAL", XG_BOOK_NOT_BOOK },
        { "book..100ms", XG_BOOK_NOT_BOOK },
        { "book.A.B.C.D.E.F", XG_BOOK_NOT_BOOK },
        { "bookX.A.raw", XG_BOOK_NOT_BOOK },
        { NULL, XG_BOOK_NOT_BOOK },
    };
    size_t i;

    for (i = 0; i < XG_NELEM(t); i++) {
        ck_assert_msg(xg_venue_deribit_book_kind(t[i].channel) == t[i].kind,
            "%s", t[i].channel ? t[i].channel : "NULL");
    }
    ck_assert(xg_venue_deribit_book_new("book.BTC-PERPETUAL.none.10.100ms",
        NULL) == NULL);
    ck_assert(xg_venue_deribit_book_new("ticker.BTC-PERPETUAL.raw", NULL)
        == NULL);
}
END_TEST

START_TEST(test_snapshot_then_changes)
{
    struct xg_book *b = xg_venue_deribit_book_new(CH, NULL);
    struct xg_book_stats st;
    char *t;

    ck_assert(!xg_book_synced(b));
    ck_assert(xg_venue_deribit_book_snapshot(b, NULL) == NULL);
    ck_assert(xg_book_mark(b) == NULL);
    /* a change before any snapshot waits */
    ck_assert_int_eq(apply_s(b, "{\"type\":\"change\",\"instrument_name\":"
        "\"" INST "\",\"prev_change_id\":1,\"change_id\":2,\"bids\":[],"
        "\"asks\":[]}"), XG_BOOK_WAIT);
    ck_assert_int_eq(apply_s(b, "{\"type\":\"snapshot\",\"timestamp\":"
        "1554373962454,\"instrument_name\":\"" INST "\",\"change_id\":297217,"
        "\"bids\":[[\"new\",5042.34,30],[\"new\",5041.94,20]],"
        "\"asks\":[[\"new\",5042.64,40],[\"new\",5043.3,40]]}"),
        XG_BOOK_SNAPSHOT);
    ck_assert(xg_book_synced(b));
    ck_assert_uint_eq(xg_book_seq(b), 297217);
    t = xg_venue_deribit_book_snapshot(b, NULL);
    ck_assert_str_eq(t, "{\"jsonrpc\":\"2.0\",\"method\":\"subscription\","
        "\"params\":{\"channel\":\"" CH "\",\"data\":{\"type\":\"snapshot\","
        "\"timestamp\":1554373962454,\"instrument_name\":\"" INST "\","
        "\"change_id\":297217,\"bids\":[[\"new\",5042.34,30],"
        "[\"new\",5041.94,20]],\"asks\":[[\"new\",5042.64,40],"
        "[\"new\",5043.3,40]]}}}");
    free(t);
    ck_assert_int_eq(apply_s(b, "{\"type\":\"change\",\"timestamp\":"
        "1554373962500,\"instrument_name\":\"" INST "\",\"prev_change_id\":"
        "297217,\"change_id\":297218,\"bids\":[[\"change\",5042.34,9.8],"
        "[\"delete\",5041.94,0],[\"new\",5042.0,1.5]],"
        "\"asks\":[[\"new\",5042.5,3.5],[\"delete\",5043.3,0]]}"),
        XG_BOOK_APPLIED);
    t = xg_venue_deribit_book_snapshot(b, "book.BTC-PERPETUAL.raw");
    ck_assert_str_eq(t, "{\"jsonrpc\":\"2.0\",\"method\":\"subscription\","
        "\"params\":{\"channel\":\"book.BTC-PERPETUAL.raw\",\"data\":{"
        "\"type\":\"snapshot\",\"timestamp\":1554373962500,"
        "\"instrument_name\":\"" INST "\",\"change_id\":297218,"
        "\"bids\":[[\"new\",5042.34,9.8],[\"new\",5042.0,1.5]],"
        "\"asks\":[[\"new\",5042.5,3.5],[\"new\",5042.64,40]]}}}");
    free(t);
    /* amount 0 on a change removes the level (as ccxt does) */
    ck_assert_int_eq(apply_s(b, "{\"type\":\"change\",\"instrument_name\":"
        "\"" INST "\",\"prev_change_id\":297218,\"change_id\":297220,"
        "\"bids\":[[\"change\",5042.0,0]],\"asks\":[]}"), XG_BOOK_APPLIED);
    xg_book_stats(b, &st);
    ck_assert_uint_eq(st.nbids, 1);
    ck_assert_uint_eq(st.nasks, 2);
    ck_assert_uint_eq(st.seq, 297220);
    ck_assert_uint_eq(st.snapshots, 1);
    ck_assert_uint_eq(st.changes, 2);
    ck_assert_uint_eq(st.waits, 1);
    ck_assert_uint_eq(st.anomalies, 0);
    /* a snapshot without `type` (no prev_change_id) replaces the book */
    ck_assert_int_eq(apply_s(b, "{\"instrument_name\":\"" INST "\","
        "\"change_id\":5,\"bids\":[[\"new\",1,1]],\"asks\":[]}"),
        XG_BOOK_SNAPSHOT);
    t = xg_venue_deribit_book_snapshot(b, NULL);
    ck_assert(strstr(t, "\"change_id\":5,\"bids\":[[\"new\",1,1]],"
        "\"asks\":[]}") != NULL);
    free(t);
    /* and a change without `type` chains on it */
    ck_assert_int_eq(apply_s(b, "{\"instrument_name\":\"" INST "\","
        "\"prev_change_id\":5,\"change_id\":6,\"bids\":[],"
        "\"asks\":[[\"new\",2,1]]}"), XG_BOOK_APPLIED);
    ck_assert_uint_eq(xg_book_seq(b), 6);
    xg_book_free(b);
}
END_TEST

START_TEST(test_snapshot_duplicates_and_order)
{
    struct xg_book *b = xg_venue_deribit_book_new(CH, INST);
    char *t;

    /* unsorted input, a repeated price (the last entry wins), a delete */
    ck_assert_int_eq(apply_s(b, "{\"type\":\"snapshot\",\"instrument_name\":"
        "\"" INST "\",\"change_id\":1,\"bids\":[[\"new\",10,1],"
        "[\"new\",12,2],[\"new\",11,3],[\"new\",12,4],[\"new\",9,5],"
        "[\"delete\",9,0]],\"asks\":[[\"new\",20,1],[\"new\",15,1],"
        "[\"new\",15.0,2],[\"new\",17,0]]}"), XG_BOOK_SNAPSHOT);
    t = xg_venue_deribit_book_snapshot(b, NULL);
    ck_assert(strstr(t, "\"bids\":[[\"new\",12,4],[\"new\",11,3],"
        "[\"new\",10,1]],\"asks\":[[\"new\",15.0,2],[\"new\",20,1]]")
        != NULL);
    free(t);
    xg_book_free(b);
}
END_TEST

START_TEST(test_anomalies)
{
    struct xg_book *b = xg_venue_deribit_book_new(CH, INST);
    struct xg_book_stats st;
    char *t;

    ck_assert_int_eq(apply_s(b, "{\"type\":\"snapshot\",\"instrument_name\":"
        "\"" INST "\",\"change_id\":1,\"bids\":[[\"new\",10,1]],"
        "\"asks\":[[\"new\",20,1]]}"), XG_BOOK_SNAPSHOT);
    /* delete of a missing level: applied as a no-op, counted */
    ck_assert_int_eq(apply_s(b, "{\"type\":\"change\",\"instrument_name\":"
        "\"" INST "\",\"prev_change_id\":1,\"change_id\":2,"
        "\"bids\":[[\"delete\",9.5,0]],\"asks\":[]}"), XG_BOOK_APPLIED);
    /* change of a missing level sets it; new of an existing one too */
    ck_assert_int_eq(apply_s(b, "{\"type\":\"change\",\"instrument_name\":"
        "\"" INST "\",\"prev_change_id\":2,\"change_id\":3,"
        "\"bids\":[[\"change\",9,2],[\"new\",10,7]],\"asks\":[]}"),
        XG_BOOK_APPLIED);
    xg_book_stats(b, &st);
    ck_assert_uint_eq(st.anomalies, 3);
    ck_assert_uint_eq(st.nbids, 2);
    t = xg_venue_deribit_book_snapshot(b, NULL);
    ck_assert(strstr(t, "\"bids\":[[\"new\",10,7],[\"new\",9,2]],"
        "\"asks\":[[\"new\",20,1]]") != NULL);
    free(t);
    xg_book_free(b);
}
END_TEST

START_TEST(test_gap)
{
    struct xg_book *b = xg_venue_deribit_book_new(CH, INST);
    struct xg_book_state *m;
    struct xg_book_stats st;
    char *t;

    ck_assert_int_eq(apply_s(b, "{\"type\":\"snapshot\",\"instrument_name\":"
        "\"" INST "\",\"change_id\":10,\"bids\":[[\"new\",10,1]],"
        "\"asks\":[[\"new\",20,1]]}"), XG_BOOK_SNAPSHOT);
    ck_assert_int_eq(apply_s(b, "{\"type\":\"change\",\"instrument_name\":"
        "\"" INST "\",\"prev_change_id\":10,\"change_id\":11,"
        "\"bids\":[[\"change\",10,2]],\"asks\":[]}"), XG_BOOK_APPLIED);
    /* 12 was lost: 13 says prev 12 */
    ck_assert_int_eq(apply_s(b, "{\"type\":\"change\",\"instrument_name\":"
        "\"" INST "\",\"prev_change_id\":12,\"change_id\":13,"
        "\"bids\":[[\"change\",10,3]],\"asks\":[]}"), XG_BOOK_GAP);
    ck_assert(!xg_book_synced(b));
    ck_assert_uint_eq(xg_book_seq(b), 11);
    /* the book keeps its last good state for the mark */
    m = xg_book_mark(b);
    ck_assert_uint_eq(xg_book_state_seq(m), 11);
    /* later changes (even ones that would chain) wait for the resync */
    ck_assert_int_eq(apply_s(b, "{\"type\":\"change\",\"instrument_name\":"
        "\"" INST "\",\"prev_change_id\":11,\"change_id\":14,"
        "\"bids\":[],\"asks\":[]}"), XG_BOOK_WAIT);
    ck_assert(xg_venue_deribit_book_snapshot(b, NULL) == NULL);
    ck_assert(xg_venue_deribit_book_bridge(m, b, NULL) == NULL);
    ck_assert_int_eq(apply_s(b, "{\"type\":\"snapshot\",\"timestamp\":77,"
        "\"instrument_name\":\"" INST "\",\"change_id\":20,"
        "\"bids\":[[\"new\",10,5],[\"new\",9,1]],\"asks\":[]}"),
        XG_BOOK_SNAPSHOT);
    t = xg_venue_deribit_book_bridge(m, b, NULL);
    ck_assert_str_eq(t, "{\"jsonrpc\":\"2.0\",\"method\":\"subscription\","
        "\"params\":{\"channel\":\"" CH "\",\"data\":{\"type\":\"change\","
        "\"timestamp\":77,\"instrument_name\":\"" INST "\","
        "\"prev_change_id\":11,\"change_id\":20,\"bids\":[[\"change\",10,5],"
        "[\"new\",9,1]],\"asks\":[[\"delete\",20,0]]}}}");
    free(t);
    xg_book_state_unref(m);
    /* no snapshot replaced anything while out of sync */
    ck_assert(xg_book_replaced(b) == NULL);
    /* an unexpected snapshot while in sync keeps what it replaced */
    ck_assert_int_eq(apply_s(b, "{\"type\":\"snapshot\","
        "\"instrument_name\":\"" INST "\",\"change_id\":25,"
        "\"bids\":[[\"new\",10,5]],\"asks\":[[\"new\",21,1]]}"),
        XG_BOOK_SNAPSHOT);
    ck_assert(xg_book_replaced(b) != NULL);
    ck_assert_uint_eq(xg_book_state_seq(xg_book_replaced(b)), 20);
    t = xg_venue_deribit_book_bridge(xg_book_replaced(b), b, NULL);
    ck_assert(strstr(t, "\"prev_change_id\":20,\"change_id\":25,"
        "\"bids\":[[\"delete\",9,0]],\"asks\":[[\"new\",21,1]]}")
        != NULL);
    free(t);
    /* held until the next apply, whatever its result */
    ck_assert_int_eq(apply_s(b, "{}"), XG_BOOK_ERROR);
    ck_assert(xg_book_replaced(b) == NULL);
    ck_assert_int_eq(apply_s(b, "{\"type\":\"snapshot\","
        "\"instrument_name\":\"" INST "\",\"change_id\":25,"
        "\"bids\":[[\"new\",10,5]],\"asks\":[[\"new\",21,1]]}"),
        XG_BOOK_SNAPSHOT);
    ck_assert(xg_book_replaced(b) != NULL);
    ck_assert_int_eq(apply_s(b, "not json"), XG_BOOK_ERROR);
    ck_assert(xg_book_replaced(b) == NULL);
    /* invalidate (upstream down) also makes changes wait */
    xg_book_invalidate(b);
    ck_assert_int_eq(apply_s(b, "{\"type\":\"change\",\"instrument_name\":"
        "\"" INST "\",\"prev_change_id\":25,\"change_id\":26,"
        "\"bids\":[],\"asks\":[]}"), XG_BOOK_WAIT);
    xg_book_stats(b, &st);
    ck_assert_uint_eq(st.gaps, 1);
    ck_assert_uint_eq(st.waits, 2);
    xg_book_free(b);
}
END_TEST

START_TEST(test_mark_copy_on_write)
{
    struct xg_book *b = xg_venue_deribit_book_new(CH, INST);
    struct xg_book *same = xg_venue_deribit_book_new(CH, INST);
    struct xg_book_state *m, *m2;
    int i;
    const char *snap = "{\"type\":\"snapshot\",\"instrument_name\":"
        "\"" INST "\",\"change_id\":1,\"bids\":[[\"new\",10,1],[\"new\",9,1]],"
        "\"asks\":[[\"new\",20,1]]}";
    char *t;

    ck_assert_int_eq(apply_s(b, snap), XG_BOOK_SNAPSHOT);
    ck_assert_int_eq(apply_s(same, snap), XG_BOOK_SNAPSHOT);
    m = xg_book_mark(b);
    ck_assert(xg_book_state_equal(m, b));
    ck_assert_int_eq(apply_s(b, "{\"type\":\"change\",\"instrument_name\":"
        "\"" INST "\",\"prev_change_id\":1,\"change_id\":2,"
        "\"bids\":[[\"delete\",10,0]],\"asks\":[[\"new\",19,4]]}"),
        XG_BOOK_APPLIED);
    /* the mark did not move with the book */
    ck_assert(!xg_book_state_equal(m, b));
    ck_assert(xg_book_state_equal(m, same));
    ck_assert_uint_eq(xg_book_state_seq(m), 1);
    m2 = xg_book_mark(b);
    t = xg_venue_deribit_book_bridge(m, b, NULL);
    ck_assert(strstr(t, "\"prev_change_id\":1,\"change_id\":2,"
        "\"bids\":[[\"delete\",10,0]],\"asks\":[[\"new\",19,4]]}") != NULL);
    free(t);
    /* nothing changed since m2: an empty bridge that keeps the chain */
    t = xg_venue_deribit_book_bridge(m2, b, NULL);
    ck_assert(strstr(t, "\"prev_change_id\":2,\"change_id\":2,"
        "\"bids\":[],\"asks\":[]}") != NULL);
    free(t);
    /* marks outlive their book */
    xg_book_free(b);
    ck_assert_uint_eq(xg_book_state_seq(m2), 2);
    ck_assert(xg_book_state_ref(m2) == m2);
    xg_book_state_unref(m2);
    xg_book_state_unref(m2);
    xg_book_state_unref(m);
    xg_book_state_unref(NULL);
    xg_book_free(same);
    xg_book_free(NULL);

    /* copy on write of an empty side, then growth past the slack */
    b = xg_venue_deribit_book_new(CH, INST);
    ck_assert_int_eq(apply_s(b, "{\"type\":\"snapshot\",\"instrument_name\":"
        "\"" INST "\",\"change_id\":1,\"bids\":[],\"asks\":[]}"),
        XG_BOOK_SNAPSHOT);
    m = xg_book_mark(b);
    for (i = 0; i < 40; i++) {
        char d[256];

        snprintf(d, sizeof(d), "{\"type\":\"change\",\"instrument_name\":"
            "\"" INST "\",\"prev_change_id\":%d,\"change_id\":%d,"
            "\"bids\":[[\"new\",%d,1]],\"asks\":[[\"new\",%d,2]]}", i + 1,
            i + 2, 100 - i, 200 + i);
        ck_assert_int_eq(apply_s(b, d), XG_BOOK_APPLIED);
    }
    t = xg_venue_deribit_book_bridge(m, b, NULL);
    ck_assert(strstr(t, "\"bids\":[[\"new\",100,1],[\"new\",99,1],") != NULL);
    ck_assert(strstr(t, ",[\"new\",239,2]]}}}") != NULL);
    free(t);
    xg_book_state_unref(m);
    xg_book_free(b);
}
END_TEST

START_TEST(test_notification)
{
    struct xg_book *b = xg_venue_deribit_book_new(CH, INST);
    const char *ok = "{\"jsonrpc\":\"2.0\",\"method\":\"subscription\","
        "\"params\":{\"channel\":\"" CH "\",\"data\":{\"type\":\"snapshot\","
        "\"instrument_name\":\"" INST "\",\"change_id\":3,\"bids\":[],"
        "\"asks\":[]}}}";
    const char *other = "{\"jsonrpc\":\"2.0\",\"method\":\"subscription\","
        "\"params\":{\"channel\":\"book.ETH-PERPETUAL.100ms\",\"data\":{"
        "\"type\":\"snapshot\",\"instrument_name\":\"" INST "\","
        "\"change_id\":3,\"bids\":[],\"asks\":[]}}}";
    const char *bad[] = { "", "{", "[]", "{\"params\":5}",
        "{\"params\":{\"data\":{}}}",
        "{\"params\":{\"channel\":\"" CH "\"}}" };
    size_t i;

    for (i = 0; i < XG_NELEM(bad); i++) {
        ck_assert_int_eq(xg_venue_deribit_book_apply_notification(b, bad[i],
            strlen(bad[i])), XG_BOOK_ERROR);
    }
    ck_assert_int_eq(xg_venue_deribit_book_apply_notification(b, other,
        strlen(other)), XG_BOOK_ERROR);
    ck_assert_int_eq(xg_venue_deribit_book_apply_notification(b, ok,
        strlen(ok)), XG_BOOK_SNAPSHOT);
    ck_assert_uint_eq(xg_book_seq(b), 3);
    xg_book_free(b);
}
END_TEST

/* ---- malformed input ---------------------------------------------------- */

#define HDR "{\"type\":\"change\",\"instrument_name\":\"" INST "\"," \
    "\"prev_change_id\":1,\"change_id\":2,"

START_TEST(test_malformed)
{
    const char *bad[] = {
        "", "   ", "null", "[]", "5", "\"x\"", "{}", "{\"a\":1",
        /* the envelope fields */
        "{\"type\":\"change\",\"prev_change_id\":1,\"change_id\":2,"
        "\"bids\":[],\"asks\":[]}",
        "{\"type\":\"change\",\"instrument_name\":\"ETH-PERPETUAL\","
        "\"prev_change_id\":1,\"change_id\":2,\"bids\":[],\"asks\":[]}",
        "{\"type\":\"change\",\"instrument_name\":7,"
        "\"prev_change_id\":1,\"change_id\":2,\"bids\":[],\"asks\":[]}",
        "{\"type\":\"change\",\"instrument_name\":\"" INST "\","
        "\"prev_change_id\":1,\"bids\":[],\"asks\":[]}",
        HDR "\"change_id\":3,\"bids\":[],\"asks\":[]}",  /* duplicate key */
        "{\"type\":\"change\",\"instrument_name\":\"" INST "\","
        "\"prev_change_id\":1,\"change_id\":\"2\",\"bids\":[],\"asks\":[]}",
        "{\"type\":\"change\",\"instrument_name\":\"" INST "\","
        "\"prev_change_id\":1,\"change_id\":-2,\"bids\":[],\"asks\":[]}",
        "{\"type\":\"change\",\"instrument_name\":\"" INST "\","
        "\"prev_change_id\":1,\"change_id\":2.0,\"bids\":[],\"asks\":[]}",
        "{\"type\":\"change\",\"instrument_name\":\"" INST "\","
        "\"prev_change_id\":\"1\",\"change_id\":2,\"bids\":[],\"asks\":[]}",
        "{\"type\":\"change\",\"instrument_name\":\"" INST "\","
        "\"change_id\":2,\"bids\":[],\"asks\":[]}",
        "{\"type\":\"delta\",\"instrument_name\":\"" INST "\","
        "\"prev_change_id\":1,\"change_id\":2,\"bids\":[],\"asks\":[]}",
        "{\"type\":5,\"instrument_name\":\"" INST "\","
        "\"prev_change_id\":1,\"change_id\":2,\"bids\":[],\"asks\":[]}",
        HDR "\"timestamp\":\"now\",\"bids\":[],\"asks\":[]}",
        /* the sides */
        HDR "\"asks\":[]}",
        HDR "\"bids\":[]}",
        HDR "\"bids\":{},\"asks\":[]}",
        HDR "\"bids\":\"x\",\"asks\":[]}",
        HDR "\"bids\":[],\"asks\":null}",
        HDR "\"bids\":[5],\"asks\":[]}",
        HDR "\"bids\":[[\"new\",1]],\"asks\":[]}",
        HDR "\"bids\":[[\"new\",1,2,3]],\"asks\":[]}",
        HDR "\"bids\":[[]],\"asks\":[]}",
        HDR "\"bids\":[[1,1,1]],\"asks\":[]}",
        HDR "\"bids\":[[\"add\",1,1]],\"asks\":[]}",
        HDR "\"bids\":[[\"NEW\",1,1]],\"asks\":[]}",
        HDR "\"bids\":[[\"new\",\"5042.5\",1]],\"asks\":[]}",
        HDR "\"bids\":[[\"new\",null,1]],\"asks\":[]}",
        HDR "\"bids\":[[\"new\",true,1]],\"asks\":[]}",
        HDR "\"bids\":[[\"new\",1,\"1\"]],\"asks\":[]}",
        HDR "\"bids\":[[\"new\",1,-1]],\"asks\":[]}",
        HDR "\"bids\":[[\"new\",1,-0.5]],\"asks\":[]}",
        /* NaN-like and out-of-range number text */
        HDR "\"bids\":[[\"new\",NaN,1]],\"asks\":[]}",
        HDR "\"bids\":[[\"new\",nan,1]],\"asks\":[]}",
        HDR "\"bids\":[[\"new\",Infinity,1]],\"asks\":[]}",
        HDR "\"bids\":[[\"new\",-Infinity,1]],\"asks\":[]}",
        HDR "\"bids\":[[\"new\",1e999,1]],\"asks\":[]}",
        HDR "\"bids\":[[\"new\",1,1e400]],\"asks\":[]}",
        HDR "\"bids\":[[\"new\",99999999999999999999999,1]],\"asks\":[]}",
        HDR "\"bids\":[[\"new\",0x10,1]],\"asks\":[]}",
        HDR "\"bids\":[[\"new\",.5,1]],\"asks\":[]}",
        HDR "\"bids\":[[\"new\",01,1]],\"asks\":[]}",
        HDR "\"bids\":[[\"new\",1.,1]],\"asks\":[]}",
        /* one good level, then a bad one: nothing applies */
        HDR "\"bids\":[[\"new\",11,1],[\"new\",12]],\"asks\":[]}",
        HDR "\"bids\":[[\"new\",11,1]],\"asks\":[[\"delete\",20,\"x\"]]}",
        HDR "\"bids\":[],\"asks\":[]",
    };
    struct xg_book *b = xg_venue_deribit_book_new(CH, INST);
    struct xg_book_stats st;
    char *before, *after;
    size_t i;

    ck_assert_int_eq(apply_s(b, "{\"type\":\"snapshot\",\"instrument_name\":"
        "\"" INST "\",\"change_id\":1,\"bids\":[[\"new\",10,1]],"
        "\"asks\":[[\"new\",20,1]]}"), XG_BOOK_SNAPSHOT);
    before = xg_venue_deribit_book_snapshot(b, NULL);
    for (i = 0; i < XG_NELEM(bad); i++) {
        ck_assert_msg(apply_s(b, bad[i]) == XG_BOOK_ERROR, "accepted #%zu: "
            "%s", i, bad[i]);
        ck_assert(strlen(xg_book_last_error(b)) > 0);
        ck_assert(xg_book_synced(b));
        after = xg_venue_deribit_book_snapshot(b, NULL);
        ck_assert_msg(strcmp(before, after) == 0, "#%zu changed the book", i);
        free(after);
    }
    xg_book_stats(b, &st);
    ck_assert_uint_eq(st.errors, XG_NELEM(bad));
    /* the chain still continues from change_id 1 */
    ck_assert_int_eq(apply_s(b, HDR "\"bids\":[[\"new\",11,1]],\"asks\":[]}"),
        XG_BOOK_APPLIED);
    free(before);
    xg_book_free(b);
}
END_TEST

/* A side of N "new" levels from START as data text (malloc'd). */
static char *
big_side_data(const char *head, size_t n, long long start)
{
    char *out = NULL;
    size_t len = 0, i;
    FILE *f = open_memstream(&out, &len);

    fputs(head, f);
    fputs("\"bids\":[", f);
    for (i = 0; i < n; i++) {
        fprintf(f, "%s[\"new\",%lld,1]", i ? "," : "", start + (long long) i);
    }
    fputs("],\"asks\":[]}", f);
    fclose(f);
    return out;
}

START_TEST(test_huge)
{
    struct xg_book *b = xg_venue_deribit_book_new(CH, INST);
    struct xg_book_stats st;
    char *d;
    size_t depth = 200000, i;
    char *deep;

    /* the default limit: 65536 levels a side */
    d = big_side_data("{\"type\":\"snapshot\",\"instrument_name\":\"" INST
        "\",\"change_id\":1,", XG_BOOK_MAX_LEVELS_DEFAULT + 1, 1);
    ck_assert_int_eq(apply_s(b, d), XG_BOOK_ERROR);
    free(d);
    d = big_side_data("{\"type\":\"snapshot\",\"instrument_name\":\"" INST
        "\",\"change_id\":1,", XG_BOOK_MAX_LEVELS_DEFAULT, 1);
    ck_assert_int_eq(apply_s(b, d), XG_BOOK_SNAPSHOT);
    free(d);
    xg_book_stats(b, &st);
    ck_assert_uint_eq(st.nbids, XG_BOOK_MAX_LEVELS_DEFAULT);

    /* a change that would grow past the limit fails whole */
    xg_book_set_max_levels(b, 100);
    d = big_side_data("{\"type\":\"snapshot\",\"instrument_name\":\"" INST
        "\",\"change_id\":1,", 95, 1);
    ck_assert_int_eq(apply_s(b, d), XG_BOOK_SNAPSHOT);
    free(d);
    d = big_side_data(HDR, 6, 1000);
    ck_assert_int_eq(apply_s(b, d), XG_BOOK_ERROR);
    free(d);
    xg_book_stats(b, &st);
    ck_assert_uint_eq(st.nbids, 95);
    /* the same with a mark held (the copy is dropped, the mark kept) */
    {
        struct xg_book_state *m = xg_book_mark(b);

        d = big_side_data(HDR, 6, 1000);
        ck_assert_int_eq(apply_s(b, d), XG_BOOK_ERROR);
        free(d);
        ck_assert(xg_book_state_equal(m, b));
        xg_book_state_unref(m);
    }
    /* exactly up to the limit is fine, and deletes make room first */
    d = big_side_data(HDR, 5, 1000);
    ck_assert_int_eq(apply_s(b, d), XG_BOOK_APPLIED);
    free(d);
    ck_assert_int_eq(apply_s(b, "{\"type\":\"change\",\"instrument_name\":"
        "\"" INST "\",\"prev_change_id\":2,\"change_id\":3,\"bids\":"
        "[[\"delete\",1,0],[\"new\",5000,1]],\"asks\":[]}"), XG_BOOK_APPLIED);
    xg_book_stats(b, &st);
    ck_assert_uint_eq(st.nbids, 100);
    /* a message with more entries than the limit is refused outright */
    d = big_side_data("{\"type\":\"change\",\"instrument_name\":\"" INST
        "\",\"prev_change_id\":3,\"change_id\":4,", 101, 1);
    ck_assert_int_eq(apply_s(b, d), XG_BOOK_ERROR);
    free(d);

    /* deep nesting: jansson's depth limit, no stack overflow */
    deep = xg_malloc(2 * depth + 1);
    for (i = 0; i < depth; i++) {
        deep[i] = '[';
        deep[2 * depth - 1 - i] = ']';
    }
    deep[2 * depth] = '\0';
    ck_assert_int_eq(apply_s(b, deep), XG_BOOK_ERROR);
    free(deep);
    xg_book_free(b);
}
END_TEST

/* ---- numbers ------------------------------------------------------------ */

START_TEST(test_number_text)
{
    struct xg_book *b = xg_venue_deribit_book_new(CH, INST);
    char *t;

    /* the exchange's own text comes back for shortest reals and integers */
    ck_assert_int_eq(apply_s(b, "{\"type\":\"snapshot\",\"instrument_name\":"
        "\"" INST "\",\"change_id\":1,\"bids\":[[\"new\",50000.0,9.8],"
        "[\"new\",5042.34,30],[\"new\",0.1,2.5],[\"new\",-0.0,1]],"
        "\"asks\":[[\"new\",50002.5,0.3],[\"new\",1e22,1e-7],"
        "[\"new\",9007199254740993,1]]}"), XG_BOOK_SNAPSHOT);
    t = xg_venue_deribit_book_snapshot(b, NULL);
    ck_assert_msg(strstr(t, "\"bids\":[[\"new\",50000.0,9.8],"
        "[\"new\",5042.34,30],[\"new\",0.1,2.5],[\"new\",0.0,1]]") != NULL,
        "%s", t);
    /* a value past 2^53 is written as the double a client would read */
    ck_assert_msg(strstr(t, "\"asks\":[[\"new\",50002.5,0.3],"
        "[\"new\",9007199254740992.0,1],[\"new\",1e+22,0.0000001]]") != NULL,
        "%s", t);
    free(t);
    xg_book_free(b);
}
END_TEST

/*
 * Random doubles in, the gateway's text out: a client's float parse of
 * the text must give back exactly the same doubles.
 */
START_TEST(test_number_roundtrip)
{
    struct xg_book *b = xg_venue_deribit_book_new(CH, INST);
    double in[400];
    int i, k, n = 0;

    rng_state = 0x9e3779b97f4a7c15ULL;
    for (k = 0; k < 20; k++) {
        char *out = NULL, *t;
        size_t len = 0;
        FILE *f = open_memstream(&out, &len);
        json_t *root, *bids;

        fprintf(f, "{\"type\":\"snapshot\",\"instrument_name\":\"" INST
            "\",\"change_id\":%d,\"bids\":[", k + 1);
        for (i = 0; i < 400; i++) {
            double v;
            uint64_t bits;

            do {
                bits = rnd64();
                if (i % 3 == 0) {
                    /* realistic: decimal prices with 1-8 digits */
                    v = (double) (int64_t) (bits % 100000000)
                        / pow(10, (double) ((bits >> 60) % 9));
                } else {
                    memcpy(&v, &bits, sizeof(v));
                }
            } while (!isfinite(v) || v == 0);
            in[i] = v;
            fprintf(f, "%s[\"new\",%.17e,%.17e]", i ? "," : "", v, fabs(v));
        }
        fprintf(f, "],\"asks\":[]}");
        fclose(f);
        ck_assert_int_eq(apply_s(b, out), XG_BOOK_SNAPSHOT);
        free(out);
        t = xg_venue_deribit_book_snapshot(b, NULL);
        root = json_loads(t, 0, NULL);
        ck_assert(root != NULL);
        bids = json_object_get(json_object_get(json_object_get(root,
            "params"), "data"), "bids");
        ck_assert_uint_eq(json_array_size(bids), 400);
        for (i = 0; i < 400; i++) {
            json_t *lv = json_array_get(bids, (size_t) i);
            double p = json_real_value(json_array_get(lv, 1));
            int j, found = 0;

            ck_assert(json_is_real(json_array_get(lv, 1)));
            ck_assert(json_real_value(json_array_get(lv, 2)) == fabs(p));
            for (j = 0; j < 400; j++) {
                found |= in[j] == p;
            }
            ck_assert_msg(found, "price %.17g not in the input", p);
            n++;
        }
        json_decref(root);
        free(t);
    }
    ck_assert_int_eq(n, 8000);
    xg_book_free(b);
}
END_TEST

/* ---- the property test -------------------------------------------------- */

#define NCLI 6

struct sub {
    struct cli *c;                  /* NULL: free slot */
    struct xg_book_state *seen;     /* frozen: the book it last saw */
    char name[32];
};

static void
sub_bridge(struct sub *s, const struct xg_book *b, const struct gen *g)
{
    char *t = xg_venue_deribit_book_bridge(s->seen, b, NULL);
    long an = s->c->anomalies;

    ck_assert(t != NULL);
    ck_assert(strstr(t, "\"type\":\"change\"") != NULL);
    cli_apply(s->c, t);
    /* a bridge never deletes a level the client lacks nor adds twice */
    ck_assert_int_eq(s->c->anomalies, an);
    ck_assert_uint_eq(s->c->last, g->change_id);
    cli_check(s->c, g, s->name);
    free(t);
    xg_book_state_unref(s->seen);
    s->seen = NULL;
}

/*
 * A seeded random walk of the exchange's book. The gateway's book follows
 * it; clients follow the gateway: in sync (plain forwarding), late
 * joiners (a snapshot of the gateway's book), frozen ones that stop
 * receiving at a mark and are bridged to a random later book, and every
 * subscriber across outages (invalidate) and gaps (a lost change) bridged
 * once the resync snapshot arrives.
 */
START_TEST(test_bridge_walk)
{
    struct gen *g = xg_calloc(1, sizeof(*g));
    struct xg_book *b = xg_venue_deribit_book_new(CH, NULL);
    struct sub subs[NCLI];
    char *d, *m;
    int step, i, bridges = 0, joins = 0, outages = 0, gaps = 0, frozen = 0;
    int resnaps = 0;
    int steps = 3000;

    memset(subs, 0, sizeof(subs));
    rng_state = 0x1234567ULL * (uint64_t) (_i + 1) + 77;
    gen_init(g, 504234 + rnd(1000) * 100);
    d = gen_snapshot(g);
    ck_assert_int_eq(apply_s(b, d), XG_BOOK_SNAPSHOT);
    m = wrap(d);
    subs[0].c = xg_calloc(1, sizeof(struct cli));
    strcpy(subs[0].name, "client0");
    cli_apply(subs[0].c, m);
    cli_check(subs[0].c, g, "client0");
    free(d);
    free(m);

    for (step = 0; step < steps; step++) {
        long long r = rnd(1000);

        if (r < 900) {
            /* an ordinary change, forwarded to live subscribers */
            d = gen_change(g);
            REQUIRE(apply_s(b, d) == XG_BOOK_APPLIED, "step %d: %s", step,
                xg_book_last_error(b));
            m = wrap(d);
            for (i = 0; i < NCLI; i++) {
                if (subs[i].c != NULL && subs[i].seen == NULL) {
                    cli_apply(subs[i].c, m);
                }
            }
            free(d);
            free(m);
        } else if (r < 930) {
            /* a late joiner (replacing a slot when all are used) */
            int slot = (int) rnd(NCLI);

            if (subs[slot].c != NULL) {
                xg_book_state_unref(subs[slot].seen);
                free(subs[slot].c);
            }
            subs[slot].seen = NULL;
            subs[slot].c = xg_calloc(1, sizeof(struct cli));
            snprintf(subs[slot].name, sizeof(subs[slot].name), "joiner@%d",
                step);
            m = xg_venue_deribit_book_snapshot(b, NULL);
            cli_apply(subs[slot].c, m);
            free(m);
            cli_check(subs[slot].c, g, subs[slot].name);
            joins++;
        } else if (r < 936) {
            /* an unexpected snapshot while in sync: bridged from the
             * state it replaced */
            const struct xg_book_state *rep;

            d = gen_snapshot(g);
            ck_assert_int_eq(apply_s(b, d), XG_BOOK_SNAPSHOT);
            free(d);
            rep = xg_book_replaced(b);
            ck_assert(rep != NULL);
            for (i = 0; i < NCLI; i++) {
                if (subs[i].c != NULL && subs[i].seen == NULL) {
                    subs[i].seen = xg_book_state_ref(
                        (struct xg_book_state *) rep);
                    sub_bridge(&subs[i], b, g);
                    bridges++;
                }
            }
            resnaps++;
        } else if (r < 960) {
            /* freeze a live subscriber at a mark, or thaw a frozen one */
            int slot = (int) rnd(NCLI);

            if (subs[slot].c == NULL) {
                continue;
            }
            if (subs[slot].seen == NULL) {
                subs[slot].seen = xg_book_mark(b);
                ck_assert_uint_eq(xg_book_state_seq(subs[slot].seen),
                    subs[slot].c->last);
                frozen++;
            } else {
                sub_bridge(&subs[slot], b, g);
                bridges++;
            }
        } else {
            /* the upstream is lost (outage) or a change is lost (gap) */
            struct xg_book_state *mk;
            int lost = (int) rnd(r < 980 ? 150 : 3), gap = r >= 980, k;

            if (gap) {
                free(gen_change(g));     /* never reaches the gateway */
                d = gen_change(g);
                ck_assert_int_eq(apply_s(b, d), XG_BOOK_GAP);
                free(d);
                gaps++;
            } else {
                xg_book_invalidate(b);
                outages++;
            }
            mk = xg_book_mark(b);
            ck_assert(mk != NULL);
            for (i = 0; i < NCLI; i++) {
                if (subs[i].c != NULL && subs[i].seen == NULL) {
                    subs[i].seen = xg_book_state_ref(mk);
                }
            }
            xg_book_state_unref(mk);
            for (k = 0; k < lost; k++) {
                d = gen_change(g);
                if (k % 7 == 0) {
                    /* stray changes before the resync: dropped */
                    REQUIRE(apply_s(b, d) == XG_BOOK_WAIT, "not dropped");
                }
                free(d);
            }
            ck_assert(xg_venue_deribit_book_snapshot(b, NULL) == NULL);
            d = gen_snapshot(g);
            ck_assert_int_eq(apply_s(b, d), XG_BOOK_SNAPSHOT);
            free(d);
            /* every subscriber bridged from what it saw (frozen ones too) */
            for (i = 0; i < NCLI; i++) {
                if (subs[i].c != NULL) {
                    sub_bridge(&subs[i], b, g);
                    bridges++;
                }
            }
        }
        if (step % 100 == 0) {
            book_check(b, g);
            for (i = 0; i < NCLI; i++) {
                if (subs[i].c != NULL && subs[i].seen == NULL) {
                    cli_check(subs[i].c, g, subs[i].name);
                }
            }
        }
    }
    /* the end: thaw everyone, then every client equals the exchange */
    for (i = 0; i < NCLI; i++) {
        if (subs[i].c != NULL && subs[i].seen != NULL) {
            sub_bridge(&subs[i], b, g);
        }
    }
    book_check(b, g);
    for (i = 0; i < NCLI; i++) {
        if (subs[i].c != NULL) {
            cli_check(subs[i].c, g, subs[i].name);
            ck_assert_int_le(subs[i].c->snapshots, 1);
            free(subs[i].c);
        }
    }
    /* the walk did exercise every path */
    ck_assert_int_gt(bridges, 20);
    ck_assert_int_gt(joins, 20);
    ck_assert_int_gt(outages, 20);
    ck_assert_int_gt(gaps, 20);
    ck_assert_int_gt(frozen, 10);
    ck_assert_int_gt(resnaps, 5);
    xg_book_free(b);
    free(g);
}
END_TEST

static Suite *
book_suite(void)
{
    Suite *s = suite_create("xg_venue_deribit_book");
    TCase *tc = tcase_create("book");

    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, test_channel_kind);
    tcase_add_test(tc, test_snapshot_then_changes);
    tcase_add_test(tc, test_snapshot_duplicates_and_order);
    tcase_add_test(tc, test_anomalies);
    tcase_add_test(tc, test_gap);
    tcase_add_test(tc, test_mark_copy_on_write);
    tcase_add_test(tc, test_notification);
    tcase_add_test(tc, test_malformed);
    tcase_add_test(tc, test_huge);
    tcase_add_test(tc, test_number_text);
    tcase_add_test(tc, test_number_roundtrip);
    tcase_add_loop_test(tc, test_bridge_walk, 0, 6);
    suite_add_tcase(s, tc);
    return s;
}

int
main(void)
{
    SRunner *sr = srunner_create(book_suite());
    int failed;

    xg_log_open(NULL, XG_LOG_ERROR);
    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
