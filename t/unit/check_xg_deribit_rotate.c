/*
 * check_xg_deribit_rotate.c: make-before-break rotation of a Deribit
 * upstream (src/xg_session.h), with the fake exchange of
 * xg_deribit_fixture.h holding two connections at once: the old primary
 * A (connection 1) serves while the new one B (connection 2) restores,
 * then each channel switches to B where its stream lines up.
 */
#include "xg_deribit_fixture.h"

#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define AUTH_CREDS \
    "auth client_credentials exgate-id env:XG_TEST_DR_SECRET;\n"
#define AUTH_RESULT \
    "{\"access_token\":\"xt.1\",\"expires_in\":900,\"refresh_token\":" \
    "\"xr.1\",\"scope\":\"connection\",\"token_type\":\"bearer\"," \
    "\"enabled_features\":[]}"
#define BOOK     "book.BTC-PERPETUAL.100ms"
#define TRADES   "trades.BTC-PERPETUAL.raw"
#define TICKER   "ticker.BTC-PERPETUAL.100ms"
#define COD_OFF  "private/disable_cancel_on_disconnect"

/* ---- helpers ---- */

/* Takes the next frame, checks its method and that it came on CONN. */
static json_t *
expect_on(int conn, const char *method)
{
    json_t *q = ex_expect(method);

    ck_assert_msg(ex_conn_of(q) == conn, "%s came on connection %d, not "
        "%d", method, ex_conn_of(q), conn);
    return q;
}

/*
 * The exchange's side of a restore on CONN: auth, then COD when COD,
 * then the subscribe batch, returned unanswered (NULL: none expected).
 */
static json_t *
serve_restore(int conn, int cod, int subscribe)
{
    ex_answer(expect_on(conn, "public/auth"), AUTH_RESULT);
    if (cod) {
        ex_answer(expect_on(conn, "private/enable_cancel_on_disconnect"),
            "\"ok\"");
    }
    return subscribe ? expect_on(conn, "private/subscribe") : NULL;
}

/* Confirms every channel of subscribe frame Q. */
static void
confirm_all(json_t *q)
{
    ex_answer(q, fx_text(fx_get(q, "params.channels")));
}

/* Starts exgate, client "a" subscribed to CHANNELS (JSON array text). */
static struct fx_client *
start_with(const char *upstream, const char *channels)
{
    struct fx_client *a;

    fx_start(upstream, "");
    ex_wait_conn(1);
    a = cl_connect("a");
    cl_sendf(a, "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":"
        "\"private/subscribe\",\"params\":{\"channels\":%s}}", channels);
    confirm_all(serve_restore(1, strstr(upstream, "cancel_on") != NULL, 1));
    cl_answer(a, "1");
    return a;
}

static void
push_book(int conn, const char *type, long long prev, long long id,
    const char *bids)
{
    char pv[48] = "";

    if (prev >= 0) {
        snprintf(pv, sizeof(pv), "\"prev_change_id\":%lld,", prev);
    }
    ex_pushf_on(conn, "{\"jsonrpc\":\"2.0\",\"method\":\"subscription\","
        "\"params\":{\"channel\":\"" BOOK "\",\"data\":{\"type\":\"%s\","
        "\"timestamp\":%lld,\"instrument_name\":\"BTC-PERPETUAL\",%s"
        "\"change_id\":%lld,\"bids\":%s,\"asks\":[]}}}", type, fx_wall_ms(),
        pv, id, bids);
}

static void
push_trades(int conn, long long from, long long to)
{
    char buf[4096];
    size_t off = 0;
    long long s;

    for (s = from; s <= to; s++) {
        off += (size_t) snprintf(buf + off, sizeof(buf) - off,
            "%s{\"trade_seq\":%lld,\"trade_id\":\"T-%lld\",\"timestamp\":"
            "%lld,\"price\":60000.5,\"instrument_name\":\"BTC-PERPETUAL\","
            "\"direction\":\"buy\",\"amount\":10.0}", s == from ? "" : ",",
            s, s, fx_wall_ms());
    }
    ex_pushf_on(conn, "{\"jsonrpc\":\"2.0\",\"method\":\"subscription\","
        "\"params\":{\"channel\":\"" TRADES "\",\"data\":[%s]}}", buf);
}

/* The next book note of C: its type, prev_change_id (-1: none) and
   change_id are checked. */
static json_t *
book_note(struct fx_client *c, const char *type, long long prev,
    long long id)
{
    json_t *m = cl_note(c, BOOK);

    ck_assert_msg(strcmp(fx_str(m, "params.data.type"), type) == 0
        && fx_int(m, "params.data.change_id") == id
        && (prev < 0 ? fx_get(m, "params.data.prev_change_id") == NULL
                     : fx_int(m, "params.data.prev_change_id") == prev),
        "wanted %s %lld -> %lld, got %s", type, prev, id, fx_text(m));
    return m;
}

/* The trade_seqs of C's next trades note are FROM..TO. */
static void
trades_note(struct fx_client *c, long long from, long long to)
{
    json_t *m = cl_note(c, TRADES), *data = fx_get(m, "params.data");
    size_t i;

    ck_assert_msg(json_array_size(data) == (size_t) (to - from + 1),
        "wanted %lld..%lld, got %s", from, to, fx_text(m));
    for (i = 0; i < json_array_size(data); i++) {
        ck_assert_int_eq(fx_int(json_array_get(data, i), "trade_seq"),
            from + (long long) i);
    }
}

static int
is_closed(const void *arg)
{
    return !ex_is_open(*(const int *) arg);
}

/* Waits for exgate to close connection CONN. */
static void
wait_closed(int conn)
{
    ck_assert_msg(loop_until(is_closed, &conn, FX_WAIT_MS),
        "connection %d still open", conn);
}

static long long
status_int(const char *name)
{
    return fx_int(fx_status(), name);
}

/* ---- the tests ---- */

/*
 * A book: B's data that comes while B restores is held, not forwarded;
 * B's snapshot behind what A delivered is dropped; B's change at the
 * change_id clients have switches the channel (dropped: it was
 * delivered); A's data after that is dropped, B's goes out. The client
 * sees one chain, no repeat, no bridge. Then B is promoted, COD disabled
 * on A (answered) before A is closed.
 */
START_TEST(book_in_line)
{
    struct fx_client *a = start_with(AUTH_CREDS "cancel_on_disconnect on;\n",
        "[\"" BOOK "\"]");
    json_t *q;

    push_book(1, "snapshot", -1, 10, "[[\"new\",100.0,1.0]]");
    book_note(a, "snapshot", -1, 10);
    push_book(1, "change", 10, 11, "[[\"new\",99.0,1.0]]");
    book_note(a, "change", 10, 11);

    fx_rotate();
    ex_wait_conn(2);
    q = serve_restore(2, 1, 1);
    ck_assert(strcmp(fx_str(q, "method"), "private/subscribe") == 0);
    /* before B's subscribe is answered: held */
    push_book(2, "snapshot", -1, 11, "[[\"new\",100.0,1.0],"
        "[\"new\",99.0,1.0]]");
    cl_quiet(a, 100);
    push_book(1, "change", 11, 12, "[[\"new\",98.0,1.0]]");
    book_note(a, "change", 11, 12);
    confirm_all(q);
    /* B's snapshot at 11 is behind: dropped; nothing ends the switch */
    ex_quiet(100);
    cl_quiet(a, 0);
    ck_assert_int_eq(status_int("rotations"), 0);
    push_book(2, "change", 11, 12, "[[\"new\",98.0,1.0]]");
    /* at 12, delivered: B takes over from the next one; A retires */
    q = expect_on(1, COD_OFF);
    push_book(1, "change", 12, 13, "[[\"new\",97.0,1.0]]");
    push_book(2, "change", 12, 13, "[[\"new\",97.0,1.0]]");
    book_note(a, "change", 12, 13);
    cl_quiet(a, 100);
    ck_assert(ex_is_open(1));
    ex_answer(q, "\"ok\"");
    wait_closed(1);
    ck_assert_int_eq(status_int("rotations"), 1);
    ck_assert_int_eq(status_int("rotations_failed"), 0);
    ck_assert_int_eq(status_int("rotation_switches_in_line"), 1);
    ck_assert_int_eq(status_int("book_resyncs"), 0);
    push_book(2, "change", 13, 14, "[[\"new\",96.0,1.0]]");
    book_note(a, "change", 13, 14);
    cl_quiet(a, 100);
    ex_quiet(0);
}
END_TEST

/*
 * Nothing of B's chain lines up within the switch bound (B's snapshot is
 * ahead, A stalls): at the bound the channel switches as after an
 * outage: the client gets one bridging change from the book it holds to
 * B's snapshot, then B's chain.
 */
START_TEST(book_bridge_at_bound)
{
    struct fx_client *a = start_with(AUTH_CREDS, "[\"" BOOK "\"]");
    json_t *m;
    uint64_t t0;

    push_book(1, "snapshot", -1, 10, "[[\"new\",100.0,1.0]]");
    book_note(a, "snapshot", -1, 10);
    fx_rotate();
    ex_wait_conn(2);
    confirm_all(serve_restore(2, 0, 1));
    t0 = fx_now_ms();
    push_book(2, "snapshot", -1, 20, "[[\"new\",100.0,2.0],"
        "[\"new\",95.0,1.0]]");
    cl_quiet(a, 500);
    ck_assert_int_eq(status_int("rotations"), 0);
    m = book_note(a, "change", 10, 20);
    ck_assert_msg(fx_now_ms() - t0 >= 1500, "switched after %llu ms",
        (unsigned long long) (fx_now_ms() - t0));
    ck_assert_int_eq(json_array_size(fx_get(m, "params.data.bids")), 2);
    wait_closed(1);
    ck_assert_int_eq(status_int("rotations"), 1);
    ck_assert_int_eq(status_int("rotation_switches_forced"), 1);
    push_book(2, "change", 20, 21, "[[\"delete\",95.0,0.0]]");
    book_note(a, "change", 20, 21);
    cl_quiet(a, 100);
}
END_TEST

/*
 * Trades: B ahead of A is held until A delivered what comes before, then
 * B takes over (A's repeats dropped); on a second rotation B's trades
 * that were delivered already are dropped and B switches after them.
 * Every trade_seq reaches the client once, in order.
 */
START_TEST(trades_by_seq)
{
    struct fx_client *a = start_with(AUTH_CREDS, "[\"" TRADES "\"]");
    json_t *q;

    push_trades(1, 1, 3);
    trades_note(a, 1, 3);

    fx_rotate();
    ex_wait_conn(2);
    q = serve_restore(2, 0, 1);
    push_trades(2, 5, 6);           /* ahead: held */
    confirm_all(q);
    cl_quiet(a, 100);
    ck_assert_int_eq(status_int("rotations"), 0);
    push_trades(1, 4, 4);
    trades_note(a, 4, 4);
    trades_note(a, 5, 6);           /* B's, in line now */
    wait_closed(1);
    push_trades(2, 7, 7);
    trades_note(a, 7, 7);

    fx_rotate();
    ex_wait_conn(3);
    q = serve_restore(3, 0, 1);
    push_trades(3, 6, 7);           /* delivered already */
    confirm_all(q);
    wait_closed(2);
    ck_assert_int_eq(status_int("rotations"), 2);
    push_trades(3, 8, 9);
    trades_note(a, 8, 9);
    cl_quiet(a, 100);
    ck_assert_int_eq(status_int("rotation_switches_in_line"), 2);
    ck_assert_int_eq(status_int("backfills"), 0);
}
END_TEST

/*
 * A client's request in flight on A when B is promoted: new requests go
 * to B, A stays open (COD disabled on it first) until the old request is
 * answered on A, which reaches its client with its own id; then A is
 * closed.
 */
START_TEST(inflight_after_promote)
{
    struct fx_client *a = start_with(AUTH_CREDS "cancel_on_disconnect on;\n",
        "[\"" TRADES "\"]");
    json_t *old, *q, *r;

    cl_sendf(a, "{\"jsonrpc\":\"2.0\",\"id\":\"old\",\"method\":"
        "\"private/get_position\",\"params\":{\"instrument_name\":"
        "\"BTC-PERPETUAL\"}}");
    old = expect_on(1, "private/get_position");
    fx_rotate();
    ex_wait_conn(2);
    confirm_all(serve_restore(2, 1, 1));
    q = expect_on(1, COD_OFF);
    ex_answer(q, "\"ok\"");
    ck_assert_int_eq(status_int("rotations"), 1);
    cl_sendf(a, "{\"jsonrpc\":\"2.0\",\"id\":7,\"method\":"
        "\"public/get_time\",\"params\":{}}");
    q = expect_on(2, "public/get_time");
    ex_answer(q, "1700000000000");
    r = cl_answer(a, "7");
    ck_assert_int_eq(fx_int(r, "result"), 1700000000000LL);
    loop_for(100);
    ck_assert_msg(ex_is_open(1), "A closed with a request in flight");
    ex_answer(old, "{\"size\":5}");
    r = cl_answer(a, "\"old\"");
    ck_assert_int_eq(fx_int(r, "result.size"), 5);
    wait_closed(1);
    ck_assert_int_eq(status_int("disconnects"), 0);
    cl_quiet(a, 100);
    ex_quiet(0);
}
END_TEST

/*
 * B is refused something of the session (a channel left out of its
 * subscribe answer; on the next try, B is lost during its restore): the
 * rotation fails, B is closed, A serves on untouched and its clients see
 * nothing of it.
 */
START_TEST(refused_or_lost)
{
    struct fx_client *a = start_with(AUTH_CREDS, "[\"" TRADES "\"]");
    json_t *q;

    push_trades(1, 1, 1);
    trades_note(a, 1, 1);
    fx_rotate();
    ex_wait_conn(2);
    q = serve_restore(2, 0, 1);
    push_trades(2, 2, 2);           /* held, never forwarded */
    ex_answer(q, "[]");
    wait_closed(2);
    ck_assert_int_eq(status_int("rotations_failed"), 1);
    ck_assert_int_eq(status_int("rotations"), 0);
    ck_assert_int_eq(status_int("connection_id"), 1);
    push_trades(1, 2, 3);
    trades_note(a, 2, 3);

    /* the retry, after the policy's delay: B lost while restoring */
    ex_wait_conn(3);
    expect_on(3, "public/auth");
    ex_drop_on(3);
    loop_for(100);
    ck_assert_int_eq(status_int("rotations_failed"), 2);
    ck_assert_int_eq(status_int("connection_id"), 1);
    ck_assert_int_eq(status_int("disconnects"), 0);
    push_trades(1, 4, 4);
    trades_note(a, 4, 4);
    cl_quiet(a, 100);
    ck_assert(ex_is_open(1));
}
END_TEST

/*
 * A is lost while B restores: the upstream holds its reconnect, B
 * finishes its restore and takes over; the book is bridged from what
 * the client holds to B's snapshot, and a request queued meanwhile goes
 * out on B.
 */
START_TEST(old_lost_takeover)
{
    struct fx_client *a = start_with(AUTH_CREDS, "[\"" BOOK "\"]");
    json_t *q, *r;

    push_book(1, "snapshot", -1, 10, "[[\"new\",100.0,1.0]]");
    book_note(a, "snapshot", -1, 10);
    fx_rotate();
    ex_wait_conn(2);
    q = expect_on(2, "public/auth");
    ex_drop_on(1);
    loop_for(100);
    cl_sendf(a, "{\"jsonrpc\":\"2.0\",\"id\":9,\"method\":"
        "\"public/get_time\",\"params\":{}}");
    ex_answer(q, AUTH_RESULT);
    q = expect_on(2, "private/subscribe");
    confirm_all(q);
    push_book(2, "snapshot", -1, 30, "[[\"new\",101.0,1.0]]");
    r = book_note(a, "change", 10, 30);
    ck_assert_int_eq(json_array_size(fx_get(r, "params.data.bids")), 2);
    q = expect_on(2, "public/get_time");
    ex_answer(q, "1");
    r = cl_answer(a, "9");
    ck_assert_int_eq(fx_int(r, "result"), 1);
    ck_assert_int_eq(status_int("rotations"), 1);
    ck_assert_int_eq(status_int("connection_id"), 2);
    ck_assert_int_eq(ex_nconns(), 2);
    push_book(2, "change", 30, 31, "[[\"new\",99.0,1.0]]");
    book_note(a, "change", 30, 31);
    cl_quiet(a, 100);
}
END_TEST

/*
 * Channels that change while B restores: one the client leaves is
 * unsubscribed on B too; one whose subscribe was sent on A and answered
 * after B's promotion is subscribed again on B (A is closing), and the
 * client's answer waits for B's.
 */
START_TEST(channels_during_rotation)
{
    struct fx_client *a = start_with(AUTH_CREDS,
        "[\"" BOOK "\",\"" TRADES "\"]");
    json_t *tick, *qb, *q, *r;

    cl_sendf(a, "{\"jsonrpc\":\"2.0\",\"id\":2,\"method\":"
        "\"public/subscribe\",\"params\":{\"channels\":[\"" TICKER "\"]}}");
    tick = expect_on(1, "private/subscribe");
    ck_assert(ex_channels_are(tick, TICKER, NULL));
    fx_rotate();
    ex_wait_conn(2);
    qb = serve_restore(2, 0, 1);
    ck_assert(ex_channels_are(qb, BOOK, TRADES, NULL));
    cl_sendf(a, "{\"jsonrpc\":\"2.0\",\"id\":3,\"method\":"
        "\"public/unsubscribe\",\"params\":{\"channels\":[\"" BOOK "\"]}}");
    r = cl_answer(a, "3");
    q = expect_on(2, "private/unsubscribe");
    ck_assert(ex_channels_are(q, BOOK, NULL));
    ex_answer(q, "[\"" BOOK "\"]");
    q = expect_on(1, "private/unsubscribe");
    ck_assert(ex_channels_are(q, BOOK, NULL));
    ex_answer(q, "[\"" BOOK "\"]");
    confirm_all(qb);
    loop_for(100);
    ck_assert_int_eq(status_int("rotations"), 1);
    ck_assert(ex_is_open(1));       /* its subscribe is in flight */
    ex_answer(tick, "[\"" TICKER "\"]");
    q = expect_on(2, "private/subscribe");
    ck_assert(ex_channels_are(q, TICKER, NULL));
    cl_quiet(a, 50);
    confirm_all(q);
    r = cl_answer(a, "2");
    ck_assert_str_eq(fx_text(fx_get(r, "result")), "[\"" TICKER "\"]");
    wait_closed(1);
    ex_pushf_on(2, "{\"jsonrpc\":\"2.0\",\"method\":\"subscription\","
        "\"params\":{\"channel\":\"" TICKER "\",\"data\":{\"mark_price\":1}}}");
    cl_note(a, TICKER);
    cl_quiet(a, 100);
    ex_quiet(0);
}
END_TEST

/*
 * A is lost while channels switch: the book (switched already) and the
 * trades (B ahead, held) go on from B as after a reconnect: the book is
 * resubscribed on B and bridged from what the client holds, the trade A
 * never delivered is backfilled before B's held ones.
 */
START_TEST(old_lost_while_switching)
{
    struct fx_client *a = start_with(AUTH_CREDS,
        "[\"" BOOK "\",\"" TRADES "\"]");
    json_t *q, *r;
    int i;

    push_book(1, "snapshot", -1, 10, "[[\"new\",100.0,1.0]]");
    book_note(a, "snapshot", -1, 10);
    push_trades(1, 1, 3);
    trades_note(a, 1, 3);
    fx_rotate();
    ex_wait_conn(2);
    q = serve_restore(2, 0, 1);
    push_book(2, "snapshot", -1, 10, "[[\"new\",100.0,1.0]]");
    push_trades(2, 5, 6);
    confirm_all(q);
    loop_for(100);
    ck_assert_int_eq(status_int("rotations"), 0);   /* trades wait */
    ex_drop_on(1);
    /* the book's resubscribe and the backfill, in either order */
    r = NULL;
    for (i = 0; i < 3; i++) {
        int conn = 0;
        const char *m;

        q = ex_next(FX_WAIT_MS, &conn);
        ck_assert_msg(q != NULL && conn == 2, "frame %d", i);
        m = fx_str(q, "method");
        if (strcmp(m, "public/get_last_trades_by_instrument") == 0) {
            r = q;
            ck_assert_int_eq(fx_int(r, "params.start_seq"), 4);
            continue;
        }
        ck_assert_msg(strcmp(m, "private/unsubscribe") == 0
            || strcmp(m, "private/subscribe") == 0, "%s", fx_text(q));
        ck_assert(ex_channels_are(q, BOOK, NULL));
        confirm_all(q);
    }
    ck_assert_ptr_nonnull(r);
    ex_answer(r, "{\"trades\":[{\"trade_seq\":4,\"trade_id\":\"T-4\","
        "\"timestamp\":1,\"price\":60000.5,\"instrument_name\":"
        "\"BTC-PERPETUAL\",\"direction\":\"buy\",\"amount\":10.0}],"
        "\"has_more\":false}");
    trades_note(a, 4, 4);
    trades_note(a, 5, 6);
    push_book(2, "snapshot", -1, 40, "[[\"new\",100.0,3.0]]");
    book_note(a, "change", 10, 40);
    ck_assert_int_eq(status_int("rotations"), 1);
    ck_assert_int_eq(status_int("connection_id"), 2);
    push_trades(2, 7, 7);
    trades_note(a, 7, 7);
    cl_quiet(a, 100);
}
END_TEST

static Suite *
rotate_suite(void)
{
    Suite *s = suite_create("xg_deribit_rotate");
    TCase *tc = tcase_create("rotation");

    tcase_add_checked_fixture(tc, fx_setup, fx_teardown);
    tcase_set_timeout(tc, 30);
    tcase_add_test(tc, book_in_line);
    tcase_add_test(tc, book_bridge_at_bound);
    tcase_add_test(tc, trades_by_seq);
    tcase_add_test(tc, inflight_after_promote);
    tcase_add_test(tc, refused_or_lost);
    tcase_add_test(tc, old_lost_takeover);
    tcase_add_test(tc, channels_during_rotation);
    tcase_add_test(tc, old_lost_while_switching);
    suite_add_tcase(s, tc);
    return s;
}

int
main(void)
{
    SRunner *sr = srunner_create(rotate_suite());
    int failed;

    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
