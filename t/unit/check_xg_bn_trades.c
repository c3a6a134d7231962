/*
 * check_xg_bn_trades.c: Binance's trade tracker kinds (@trade and
 * @aggTrade ids backfilled by REST, modules/venue/xg_venue_binance_track.c)
 * on the real tracker engine, in the environment of bn_track_env.c.
 */
#include "bn_track_env.h"
#include "xg_log.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/event.h>
#include <jansson.h>

/* ---- trades ---- */

static char *
trade_ev(enum xg_bn_market m, int agg, uint64_t id)
{
    char *s = malloc(256);

    if (agg) {
        snprintf(s, 256, "{\"e\":\"aggTrade\",\"E\":5,\"s\":\"BTCUSDT\","
            "\"a\":%llu,\"p\":\"1.0\",\"q\":\"2\",\"f\":1,\"l\":1,\"T\":4,"
            "\"m\":true%s}", (unsigned long long) id,
            m == XG_BN_SPOT ? ",\"M\":true" : "");
    } else if (m == XG_BN_SPOT) {
        snprintf(s, 256, "{\"e\":\"trade\",\"E\":5,\"s\":\"BTCUSDT\","
            "\"t\":%llu,\"p\":\"1.0\",\"q\":\"2\",\"T\":4,\"m\":true,"
            "\"M\":true}", (unsigned long long) id);
    } else {
        snprintf(s, 256, "{\"e\":\"trade\",\"E\":5,\"T\":4,\"s\":\"BTCUSDT\","
            "\"t\":%llu,\"p\":\"1.0\",\"q\":\"2\",\"X\":\"MARKET\","
            "\"m\":true}", (unsigned long long) id);
    }
    return s;
}

static int
trade_feed(struct xg_track *t, enum xg_bn_market m, int agg, uint64_t id)
{
    char *s = trade_ev(m, agg, id);
    int pass = feed(t, s);

    free(s);
    return pass;
}

/* bnsim's REST rows for ids FROM..TO. */
static char *
trade_rows(enum xg_bn_market m, int agg, uint64_t from, uint64_t to)
{
    size_t cap = (size_t) (to - from + 1) * 160 + 8, len = 1;
    char *s = malloc(cap);
    uint64_t id;

    strcpy(s, "[");
    for (id = from; id <= to; id++) {
        if (agg) {
            len += (size_t) snprintf(s + len, cap - len, "%s{\"a\":%llu,"
                "\"p\":\"3.50\",\"q\":\"0.100\",\"f\":%llu,\"l\":%llu,"
                "\"T\":%llu,\"m\":false%s}", id > from ? "," : "",
                (unsigned long long) id, (unsigned long long) id * 2,
                (unsigned long long) id * 2 + 1,
                (unsigned long long) 1000 + id,
                m == XG_BN_SPOT ? ",\"M\":true" : "");
        } else {
            len += (size_t) snprintf(s + len, cap - len, "%s{\"id\":%llu,"
                "\"price\":\"3.50\",\"qty\":\"0.100\",\"quoteQty\":\"0.35\","
                "\"time\":%llu,\"isBuyerMaker\":false%s}",
                id > from ? "," : "", (unsigned long long) id,
                (unsigned long long) 1000 + id,
                m == XG_BN_SPOT ? ",\"isBestMatch\":true" : "");
        }
    }
    strcpy(s + len, "]");
    return s;
}

/* The id of output I. */
static uint64_t
out_id(int i, int agg)
{
    json_t *e = json_loads(out[i], 0, NULL);
    uint64_t id = (uint64_t) json_integer_value(json_object_get(e,
        agg ? "a" : "t"));

    json_decref(e);
    return id;
}

/*
 * After an outage, the first trades skip some: held, the missing ids
 * fetched (the market's endpoint, fromId, limit), delivered in the
 * stream's own shape, then the held ones; every id once, in order.
 */
static void
backfill(enum xg_bn_market m, int agg)
{
    struct xg_track *t = track(m, agg ? "btcusdt@aggTrade"
                                      : "btcusdt@trade");
    char path[128], *rows, want[256];
    int i;

    ck_assert_ptr_nonnull(t);
    ck_assert_int_eq(trade_feed(t, m, agg, 10), 1);
    ck_assert_int_eq(trade_feed(t, m, agg, 11), 1);
    ck_assert_int_eq(trade_feed(t, m, agg, 11), 0);     /* delivered */
    xg_track_down(t, now_ms);
    xg_track_resume(t, "confirmed");
    ck_assert_int_eq(nsent, 0);     /* the next trades tell */
    ck_assert_int_eq(trade_feed(t, m, agg, 9), 0);      /* old ones */
    ck_assert_int_eq(trade_feed(t, m, agg, 15), 0);
    ck_assert_int_eq(nsent, 1);
    if (m == XG_BN_USDM && !agg) {
        /* USDⓈ-M's historicalTrades wants a key: the newest trades */
        snprintf(path, sizeof(path), "/fapi/v1/trades?symbol=BTCUSDT&"
            "limit=1000");
    } else {
        snprintf(path, sizeof(path), "%s/%s?symbol=BTCUSDT&fromId=12&"
            "limit=3", m == XG_BN_SPOT ? "/api/v3" : "/fapi/v1",
            agg ? "aggTrades" : "historicalTrades");
    }
    ck_assert_str_eq(sent[0]->text, path);
    ck_assert_int_eq(trade_feed(t, m, agg, 16), 0);     /* held */
    rows = trade_rows(m, agg, 11, 15);  /* overlaps both ends */
    answer(t, rows);
    free(rows);
    ck_assert_int_eq(nout, 7);
    for (i = 0; i < 7; i++) {
        ck_assert_uint_eq(out_id(i, agg), 10 + (uint64_t) i);
    }
    if (agg) {
        snprintf(want, sizeof(want), "{\"e\":\"aggTrade\",\"E\":1012,"
            "\"s\":\"BTCUSDT\",\"a\":12,\"p\":\"3.50\",\"q\":\"0.100\","
            "\"f\":24,\"l\":25,\"T\":1012,\"m\":false%s}",
            m == XG_BN_SPOT ? ",\"M\":true" : "");
    } else if (m == XG_BN_SPOT) {
        snprintf(want, sizeof(want), "{\"e\":\"trade\",\"E\":1012,"
            "\"s\":\"BTCUSDT\",\"t\":12,\"p\":\"3.50\",\"q\":\"0.100\","
            "\"T\":1012,\"m\":false,\"M\":true}");
    } else {
        snprintf(want, sizeof(want), "{\"e\":\"trade\",\"E\":1012,"
            "\"T\":1012,\"s\":\"BTCUSDT\",\"t\":12,\"p\":\"3.50\","
            "\"q\":\"0.100\",\"X\":\"MARKET\",\"m\":false}");
    }
    ck_assert_str_eq(out[2], want);
    ck_assert_int_eq(nnotice, 0);
    ck_assert_int_eq(trade_feed(t, m, agg, 17), 1);
    xg_track_free(t);
}

START_TEST(spot_trade_backfill)
{
    backfill(XG_BN_SPOT, 0);
}
END_TEST

START_TEST(spot_agg_backfill)
{
    backfill(XG_BN_SPOT, 1);
}
END_TEST

START_TEST(usdm_trade_backfill)
{
    backfill(XG_BN_USDM, 0);
}
END_TEST

START_TEST(usdm_agg_backfill)
{
    backfill(XG_BN_USDM, 1);
}
END_TEST

/* A live jump is fetched too (no outage needed). */
START_TEST(live_jump_fetched)
{
    struct xg_track *t = track(XG_BN_SPOT, "btcusdt@trade");
    char *rows;

    trade_feed(t, XG_BN_SPOT, 0, 100);
    ck_assert_int_eq(trade_feed(t, XG_BN_SPOT, 0, 102), 0);
    ck_assert_str_eq(sent[0]->text,
        "/api/v3/historicalTrades?symbol=BTCUSDT&fromId=101&limit=1");
    rows = trade_rows(XG_BN_SPOT, 0, 101, 101);
    answer(t, rows);
    free(rows);
    ck_assert_int_eq(nout, 3);
    ck_assert_uint_eq(out_id(1, 0), 101);
    ck_assert_uint_eq(out_id(2, 0), 102);
    xg_track_free(t);
}
END_TEST

/* Over 1000 ids missed: the newest 1000 fetched, a gap notice for the
   older ones; every delivered id once, in order. */
START_TEST(backfill_bounded)
{
    struct xg_track *t = track(XG_BN_SPOT, "btcusdt@aggTrade");
    char *rows;
    int i;

    trade_feed(t, XG_BN_SPOT, 1, 10);
    ck_assert_int_eq(trade_feed(t, XG_BN_SPOT, 1, 2511), 0);
    ck_assert_str_eq(sent[0]->text,
        "/api/v3/aggTrades?symbol=BTCUSDT&fromId=1511&limit=1000");
    rows = trade_rows(XG_BN_SPOT, 1, 1511, 2510);
    answer(t, rows);
    free(rows);
    ck_assert_int_eq(nnotice, 1);
    ck_assert_str_eq(notice, "trades beyond the backfill");
    ck_assert_int_eq(nout, 1002);
    for (i = 1; i < nout; i++) {
        ck_assert_uint_eq(out_id(i, 1), 1510 + (uint64_t) i);
    }
    xg_track_free(t);
}
END_TEST

/* Fewer rows than asked (the exchange lost some): delivered, a notice,
   and the held ones go on (no fetch loop). */
START_TEST(backfill_short)
{
    struct xg_track *t = track(XG_BN_USDM, "btcusdt@trade");
    char *rows;

    trade_feed(t, XG_BN_USDM, 0, 10);
    trade_feed(t, XG_BN_USDM, 0, 20);
    rows = trade_rows(XG_BN_USDM, 0, 11, 14);
    answer(t, rows);
    free(rows);
    ck_assert_int_eq(nnotice, 1);
    ck_assert_int_eq(nout, 6);
    ck_assert_uint_eq(out_id(5, 0), 20);
    ck_assert_int_eq(nsent, 1);
    ck_assert_int_eq(trade_feed(t, XG_BN_USDM, 0, 21), 1);
    xg_track_free(t);
}
END_TEST

/* Refused for now: retried after the backoff; refused for good or
   garbage: a gap notice, the held trades go on. */
START_TEST(backfill_errors)
{
    struct xg_track *t = track(XG_BN_SPOT, "btcusdt@trade");
    const char *bad[] = { "nope", "{}", "[1,{\"id\":\"x\"},null]", NULL };
    char *rows;
    int i;

    trade_feed(t, XG_BN_SPOT, 0, 1);
    trade_feed(t, XG_BN_SPOT, 0, 5);
    answer_status(t, 418);
    wait_sent(2);
    rows = trade_rows(XG_BN_SPOT, 0, 2, 4);
    answer(t, rows);
    free(rows);
    ck_assert_int_eq(nout, 5);
    ck_assert_int_eq(nnotice, 0);
    trade_feed(t, XG_BN_SPOT, 0, 8);
    answer_status(t, 400);
    ck_assert_int_eq(nnotice, 1);
    ck_assert_int_eq(nout, 6);
    ck_assert_uint_eq(out_id(5, 0), 8);
    for (i = 0; bad[i] != NULL; i++) {
        uint64_t id = 20 + 10 * (uint64_t) i;

        trade_feed(t, XG_BN_SPOT, 0, id);
        answer(t, bad[i]);
        ck_assert_uint_eq(out_id(nout - 1, 0), id);
    }
    ck_assert_int_eq(nnotice, 4);
    ck_assert_int_eq(t->state, XG_TRACK_LIVE);
    xg_track_free(t);
}
END_TEST

/* A fetch that dies with its connection: the held trades kept; at the
   confirm the ids from the last delivered to the first held fetched. */
START_TEST(backfill_dies_with_connection)
{
    struct xg_track *t = track(XG_BN_SPOT, "btcusdt@trade");
    char *rows;

    trade_feed(t, XG_BN_SPOT, 0, 1);
    trade_feed(t, XG_BN_SPOT, 0, 5);
    xg_track_down(t, now_ms);
    ck_assert_int_eq(t->state, XG_TRACK_HELD);
    xg_track_resume(t, "confirmed");
    ck_assert_int_eq(nsent, 2);
    ck_assert_str_eq(sent[1]->text,
        "/api/v3/historicalTrades?symbol=BTCUSDT&fromId=2&limit=3");
    rows = trade_rows(XG_BN_SPOT, 0, 2, 4);
    answer(t, rows);
    free(rows);
    ck_assert_int_eq(nout, 5);
    ck_assert_uint_eq(out_id(4, 0), 5);
    xg_track_free(t);
}
END_TEST

/* Trades: malformed events pass as they are, ids keep their order. */
START_TEST(trade_bad_events)
{
    struct xg_track *t = track(XG_BN_SPOT, "btcusdt@trade");

    ck_assert_int_eq(feed(t, "garbage"), 1);
    ck_assert_int_eq(feed(t, "{\"e\":\"trade\",\"t\":-1}"), 1);
    ck_assert_int_eq(feed(t, "{\"e\":\"trade\",\"t\":"
        "999999999999999999999999}"), 1);
    ck_assert_int_eq(feed(t, "{\"e\":\"trade\",\"t\":\"7\"}"), 1);
    ck_assert_int_eq(trade_feed(t, XG_BN_SPOT, 0, 7), 1);
    ck_assert_int_eq(trade_feed(t, XG_BN_SPOT, 0, 7), 0);
    ck_assert_int_eq(nsent, 0);
    /* the highest id there is: no overflow */
    ck_assert_int_eq(feed(t, "{\"e\":\"trade\",\"t\":18446744073709551615}"),
        0);
    ck_assert_str_eq(sent[0]->text, "/api/v3/historicalTrades?"
        "symbol=BTCUSDT&fromId=18446744073709550615&limit=1000");
    xg_track_free(t);
}
END_TEST

/* Trades across a rotation: by id against the last delivered. */
START_TEST(trade_cross)
{
    struct xg_track *t = track(XG_BN_USDM, "btcusdt@aggTrade");
    char *s;

    ck_assert_int_eq(xg_track_cross(t, NULL, 0), XG_CROSS_SWITCH);
    trade_feed(t, XG_BN_USDM, 1, 50);
#define CROSS(id) (s = trade_ev(XG_BN_USDM, 1, id), \
    xg_track_cross(t, s, strlen(s)))
    ck_assert_int_eq(CROSS(48), XG_CROSS_DROP);
    free(s);
    ck_assert_int_eq(CROSS(50), XG_CROSS_DROP_SWITCH);
    free(s);
    ck_assert_int_eq(CROSS(51), XG_CROSS_SWITCH);
    free(s);
    ck_assert_int_eq(CROSS(53), XG_CROSS_WAIT);
    free(s);
#undef CROSS
    /* switched with nothing in line: a gap, the jump fetched */
    xg_track_cross_force(t, now_ms, 0);
    ck_assert_int_eq(t->state, XG_TRACK_GAP);
    ck_assert_int_eq(trade_feed(t, XG_BN_USDM, 1, 55), 0);
    ck_assert_str_eq(sent[0]->text,
        "/fapi/v1/aggTrades?symbol=BTCUSDT&fromId=51&limit=4");
    xg_track_free(t);
}
END_TEST

/* Answers the current backfill with the exchange's rows: fromId, limit
   read from its path, up to the newest id TOP. */
static void
trades_answer(struct xg_track *t, enum xg_bn_market m, int agg,
    uint64_t top)
{
    struct xg_reg_req *q = last_q();
    unsigned long long from, limit;
    const char *f = strstr(q->text, "fromId="), *l = strstr(q->text,
        "limit=");
    char *rows;
    struct xg_jspan r, e = { NULL, 0 };

    ck_assert(l != NULL);
    limit = strtoull(l + 6, NULL, 10);
    ck_assert_uint_le(limit, 1000);
    if (f == NULL) {
        /* USDⓈ-M /trades: the newest LIMIT trades up to TOP */
        ck_assert(m == XG_BN_USDM && !agg);
        from = top >= limit ? top - limit + 1 : 1;
    } else {
        from = strtoull(f + 7, NULL, 10);
    }
    if (from + limit - 1 < top) {
        top = from + limit - 1;
    }
    rows = top >= from ? trade_rows(m, agg, from, top) : xg_strdup("[]");
    r.p = rows;
    r.len = strlen(rows);
    xg_track_answer(t, q, &r, &e);
    xg_registry_req_free(q);
    free(rows);
}

/*
 * Trades through faults at random: ids lost live, outages with the new
 * connection repeating old ones, rotations switched with nothing in line,
 * duplicates, backfills answered late or refused for now. Every id once,
 * in order, and no gap notice.
 */
static void
random_trades(enum xg_bn_market m, int agg, unsigned seed)
{
    struct xg_track *t = track(m, agg ? "btcusdt@aggTrade"
                                      : "btcusdt@trade");
    uint64_t id = 5000, first = id + 1;
    int step, down = 0, i;

    srand(seed);
    for (step = 0; step < 2000; step++) {
        int r = rand() % 100;

        id++;
        if (step > 0 && (r < 5 || down)) {
            /* lost */
        } else {
            trade_feed(t, m, agg, id);
            if (r < 10) {
                trade_feed(t, m, agg, id);
            }
        }
        if (r >= 97 && !down) {
            xg_track_down(t, now_ms);
            down = 1 + rand() % 5;
        } else if (down && --down == 0) {
            xg_track_resume(t, "confirmed");
            for (i = 4; i > 0; i--) {
                trade_feed(t, m, agg, id - (uint64_t) i);
            }
        } else if (r == 96) {
            xg_track_cross_force(t, now_ms, 0);
        }
        if (nsent > 0 && sent[nsent - 1] != NULL && rand() % 3 == 0) {
            if (rand() % 10 == 0) {
                answer_status(t, 429);
            } else {
                trades_answer(t, m, agg, id);
            }
        }
        event_base_loop(base, EVLOOP_NONBLOCK);
        now_ms++;
    }
    if (down) {
        xg_track_resume(t, "confirmed");
    }
    trade_feed(t, m, agg, ++id);
    for (i = 0; i < 50 && t->state != XG_TRACK_LIVE; i++) {
        if (sent[nsent - 1] != NULL && sent[nsent - 1]->tag == t->tag) {
            trades_answer(t, m, agg, id);
        } else {
            event_base_loop(base, EVLOOP_ONCE);
        }
    }
    ck_assert_int_eq(trade_feed(t, m, agg, ++id), 1);
    ck_assert_int_eq(nnotice, 0);
    ck_assert_int_eq(nout, (int) (id - first + 1));
    for (i = 0; i < nout; i++) {
        ck_assert_uint_eq(out_id(i, agg), first + (uint64_t) i);
    }
    xg_track_free(t);
}

START_TEST(trades_random_faults)
{
    random_trades(_i % 2 ? XG_BN_USDM : XG_BN_SPOT, _i / 2 % 2,
        7 + (unsigned) _i);
}
END_TEST

/* ---- the suite ---- */

static Suite *
bn_trades_suite(void)
{
    Suite *s = suite_create("xg_bn_trades");
    const TTest *const trades[] = {
        spot_trade_backfill, spot_agg_backfill, usdm_trade_backfill,
        usdm_agg_backfill, live_jump_fetched, backfill_bounded,
        backfill_short, backfill_errors, backfill_dies_with_connection,
        trade_bad_events, trade_cross, NULL
    };
    TCase *tc;

    add_case(s, "trades", trades);
    tc = tcase_create("random");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, 120);
    tcase_add_loop_test(tc, trades_random_faults, 0, 8);
    suite_add_tcase(s, tc);
    return s;
}

int
main(void)
{
    SRunner *sr = srunner_create(bn_trades_suite());
    int failed;

    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
