/*
 * check_xg_deribit.c: characterization of the Deribit session as the
 * exchange and the clients see it (issue 12, step 1): golden frames in
 * from a fake exchange and from TCP clients, frames out to each. The
 * assertions speak only in frames, so they must hold as they are before
 * and after the protocol module is split into a session engine and a
 * venue; only the harness (xg_deribit_fixture.c) may need adapting.
 *
 * Real clock, short conf durations, every wait bounded by a condition;
 * fixed windows only to assert that something does NOT happen.
 */
#include "xg_deribit_fixture.h"

#include <check.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>
#include <openssl/hmac.h>

#define AUTH_CREDS \
    "auth client_credentials exgate-id env:XG_TEST_DR_SECRET;\n"
#define AUTH_RESULT \
    "{\"access_token\":\"xt.1\",\"expires_in\":900,\"refresh_token\":" \
    "\"xr.1\",\"scope\":\"connection\",\"token_type\":\"bearer\"," \
    "\"enabled_features\":[]}"

#define TICK_BTC "ticker.BTC-PERPETUAL.100ms"
#define TICK_ETH "ticker.ETH-PERPETUAL.100ms"
#define BOOK     "book.BTC-PERPETUAL.100ms"
#define TRADES   "trades.BTC-PERPETUAL.raw"
#define ORDERS   "user.orders.BTC-PERPETUAL.raw"

/* ---- small helpers over the fixture ---- */

/* 1 when the JSON array ARR holds exactly the strings listed, in order. */
static int
strings_are(json_t *arr, ...)
{
    va_list ap;
    const char *s;
    size_t i = 0;
    int ok = json_is_array(arr);

    va_start(ap, arr);
    while (ok && (s = va_arg(ap, const char *)) != NULL) {
        const char *g = json_string_value(json_array_get(arr, i++));

        ok = g != NULL && strcmp(g, s) == 0;
    }
    va_end(ap);
    return ok && i == json_array_size(arr);
}

/* A ticker notification on CH with a mark price. */
static void
push_ticker(const char *ch, int n)
{
    ex_pushf("{\"jsonrpc\":\"2.0\",\"method\":\"subscription\",\"params\":"
        "{\"channel\":\"%s\",\"data\":{\"instrument_name\":\"%.*s\","
        "\"mark_price\":%d,\"timestamp\":%lld}}}", ch,
        (int) (strchr(ch + 7, '.') - (ch + 7)), ch + 7, 60000 + n,
        fx_wall_ms());
}

/* Client C subscribes (METHOD) to CHANNELS (a JSON array text) as ID. */
static void
cl_subscribe(struct fx_client *c, const char *method, const char *id,
    const char *channels)
{
    cl_sendf(c, "{\"jsonrpc\":\"2.0\",\"id\":%s,\"method\":\"%s\","
        "\"params\":{\"channels\":%s}}", id, method, channels);
}

/* Client C sends METHOD with PARAMS (an object text) as ID. */
static void
cl_call(struct fx_client *c, const char *id, const char *method,
    const char *params)
{
    cl_sendf(c, "{\"jsonrpc\":\"2.0\",\"id\":%s,\"method\":\"%s\","
        "\"params\":%s}", id, method, params);
}

/* Confirms every channel of subscribe frame Q. */
static void
confirm_all(json_t *q)
{
    ex_answer(q, fx_text(fx_get(q, "params.channels")));
}

/* ---- 1. restore order ---- */

/*
 * On a new connection: public/auth -> public/set_heartbeat ->
 * private/enable_cancel_on_disconnect -> the subscribe batch -> the
 * requests queued meanwhile, each only after the previous step was
 * answered; after a drop the same again, every live channel resubscribed.
 */
START_TEST(restore_order)
{
    struct fx_client *a;
    json_t *q, *sub, *ans;

    fx_start(AUTH_CREDS "heartbeat 10s;\ncancel_on_disconnect on;", "");
    ex_wait_conn(1);
    q = ex_expect("public/auth");
    ck_assert_str_eq(fx_str(q, "params.grant_type"), "client_credentials");
    ck_assert_str_eq(fx_str(q, "params.client_id"), "exgate-id");
    ck_assert_str_eq(fx_str(q, "params.client_secret"), "exchange-secret");

    /* a client asks while the session is restored: nothing goes up yet */
    a = cl_connect("a");
    cl_subscribe(a, "public/subscribe", "1",
        "[\"" TICK_BTC "\",\"" TICK_ETH "\"]");
    cl_call(a, "2", "public/get_time", "{}");
    ex_quiet(200);
    ck_assert_uint_eq(cl_untaken(a), 0);

    ex_answer(q, AUTH_RESULT);
    q = ex_expect("public/set_heartbeat");
    ck_assert_int_eq(fx_int(q, "params.interval"), 10);
    ex_quiet(100);
    ex_answer(q, "\"ok\"");
    q = ex_expect("private/enable_cancel_on_disconnect");
    ck_assert_str_eq(fx_str(q, "params.scope"), "connection");
    ex_quiet(100);
    ex_answer(q, "\"ok\"");
    sub = ex_expect("private/subscribe");
    ck_assert_msg(ex_channels_are(sub, TICK_BTC, TICK_ETH, NULL), "%s",
        fx_text(sub));
    /* the queued request waits for the subscribe answer */
    ex_quiet(100);
    confirm_all(sub);
    q = ex_expect("public/get_time");
    ex_answer(q, "1700000000123");
    ans = cl_answer(a, "1");
    ck_assert_msg(strings_are(fx_get(ans, "result"), TICK_BTC, TICK_ETH,
        NULL), "%s", fx_text(ans));
    ans = cl_answer(a, "2");
    ck_assert_int_eq(fx_int(ans, "result"), 1700000000123LL);
    ex_quiet(100);
    ck_assert_msg(cl_untaken(a) == 0, "%s", cl_dump(a));

    /* the exchange drops: the same sequence, the channels resubscribed,
       the request sent meanwhile after them */
    ex_drop();
    cl_call(a, "3", "public/get_time", "{}");
    ex_wait_conn(2);
    q = ex_expect("public/auth");
    ck_assert_str_eq(fx_str(q, "params.grant_type"), "client_credentials");
    ex_answer(q, AUTH_RESULT);
    q = ex_expect("public/set_heartbeat");
    ex_answer(q, "\"ok\"");
    q = ex_expect("private/enable_cancel_on_disconnect");
    ex_answer(q, "\"ok\"");
    sub = ex_expect("private/subscribe");
    ck_assert_msg(ex_channels_are(sub, TICK_BTC, TICK_ETH, NULL), "%s",
        fx_text(sub));
    ex_quiet(100);
    confirm_all(sub);
    q = ex_expect("public/get_time");
    ex_answer(q, "1700000000456");
    ans = cl_answer(a, "3");
    ck_assert_int_eq(fx_int(ans, "result"), 1700000000456LL);
    /* the data flows again; the client saw no error and no re-answer */
    push_ticker(TICK_BTC, 1);
    cl_note(a, TICK_BTC);
    ex_quiet(100);
    ck_assert_msg(cl_untaken(a) == 0, "%s", cl_dump(a));
    ck_assert_int_eq(ex_nconns(), 2);
}
END_TEST

static Suite *
deribit_suite(void)
{
    Suite *s = suite_create("xg_deribit");
    TCase *tc = tcase_create("session");

    tcase_add_checked_fixture(tc, fx_setup, fx_teardown);
    tcase_set_timeout(tc, 30);
    tcase_add_test(tc, restore_order);
    suite_add_tcase(s, tc);
    return s;
}

int
main(void)
{
    SRunner *sr = srunner_create(deribit_suite());
    int failed;

    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
