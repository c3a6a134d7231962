/*
 * check_xg_deribit_edges.c: the checks the core makes on an edge's
 * request (modules/venue/xg_venue_deribit_edges.c) before it runs it:
 * the edge's name, the rid and ts as decimal text, the body's id against
 * the rid and its method; and which methods are the edge's own.
 */
#include "xg_venue_deribit_int.h"

#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

START_TEST(test_edge_name)
{
    char n64[65], n65[66];

    memset(n64, 'a', 64);
    n64[64] = '\0';
    memset(n65, 'a', 65);
    n65[65] = '\0';
    ck_assert(dr_edge_name_ok("edge-a.1_B", 10));
    ck_assert(dr_edge_name_ok(n64, 64));
    ck_assert(!dr_edge_name_ok(n65, 65));
    ck_assert(!dr_edge_name_ok("", 0));
    ck_assert(!dr_edge_name_ok("bad name", 8));
    ck_assert(!dr_edge_name_ok("a:b", 3));      /* no key separators */
    ck_assert(!dr_edge_name_ok("a*", 2));
    ck_assert(!dr_edge_name_ok("a\0b", 3));
    ck_assert(!dr_edge_name_ok("\xc3\xa9t\xc3\xa9", 6));
}
END_TEST

START_TEST(test_decimal)
{
    ck_assert(dr_edge_decimal_ok("0", 1));
    ck_assert(dr_edge_decimal_ok("1733270000000001", 16));
    ck_assert(dr_edge_decimal_ok("18446744073709551615", 20));
    ck_assert(!dr_edge_decimal_ok("123456789012345678901", 21));
    ck_assert(!dr_edge_decimal_ok("", 0));
    ck_assert(!dr_edge_decimal_ok("012", 3));
    ck_assert(!dr_edge_decimal_ok("-1", 2));
    ck_assert(!dr_edge_decimal_ok("1.0", 3));
    ck_assert(!dr_edge_decimal_ok("1e3", 3));
    ck_assert(!dr_edge_decimal_ok("x9", 2));
}
END_TEST

static char *
body(const char *text, const char *rid, const char **why)
{
    *why = NULL;
    return dr_edge_body(text, strlen(text), rid, why);
}

START_TEST(test_body)
{
    const char *why;
    char *m;

    m = body("{\"jsonrpc\":\"2.0\",\"id\":42,\"method\":\"public/get_time\","
        "\"params\":{}}", "42", &why);
    ck_assert_ptr_nonnull(m);
    ck_assert_str_eq(m, "public/get_time");
    free(m);
    /* an id of any size, as text */
    m = body("{\"id\":1733270000000000001,\"method\":\"private/buy\"}",
        "1733270000000000001", &why);
    ck_assert_ptr_nonnull(m);
    free(m);
    ck_assert_ptr_null(body("{\"id\":43,\"method\":\"m\"}", "42", &why));
    ck_assert_str_eq(why, "the body's id is not the rid");
    ck_assert_ptr_null(body("{\"id\":\"42\",\"method\":\"m\"}", "42", &why));
    ck_assert_ptr_null(body("{\"id\":42.0,\"method\":\"m\"}", "42", &why));
    ck_assert_ptr_null(body("{\"method\":\"m\"}", "42", &why));
    ck_assert_ptr_null(body("{\"id\":42}", "42", &why));
    ck_assert_str_eq(why, "the body has no method");
    ck_assert_ptr_null(body("{\"id\":42,\"method\":7}", "42", &why));
    ck_assert_ptr_null(body("{\"id\":42,\"method\":\"\"}", "42", &why));
    ck_assert_ptr_null(body("{not json", "42", &why));
    ck_assert_str_eq(why, "the body is not a JSON object");
    ck_assert_ptr_null(body("[{\"id\":42,\"method\":\"m\"}]", "42", &why));
    ck_assert_ptr_null(body("{\"id\":42,\"method\":\"m\",\"method\":\"n\"}",
        "42", &why));
    ck_assert_ptr_null(body("{\"id\":42,\"method\":\"m\"} x", "42", &why));
}
END_TEST

START_TEST(test_local_methods)
{
    static const char *const local[] = {
        "public/auth", "public/set_heartbeat", "public/disable_heartbeat",
        "public/test", "public/subscribe", "private/subscribe",
        "public/unsubscribe", "private/unsubscribe",
        "public/unsubscribe_all", "private/unsubscribe_all",
        "private/enable_cancel_on_disconnect",
        "private/disable_cancel_on_disconnect",
        "private/get_cancel_on_disconnect", "private/logout",
        "exgate/notify_gaps", "exgate/notify_order_outcome", "exgate/x",
        NULL
    };
    static const char *const remote[] = {
        "public/get_time", "public/get_instruments", "public/ticker",
        "private/buy", "private/cancel", "private/get_open_orders",
        "public/hello", "public/exchange_token", "public/testx", NULL
    };
    int i;

    for (i = 0; local[i] != NULL; i++) {
        ck_assert_msg(dr_is_local_method(local[i]), "%s", local[i]);
    }
    for (i = 0; remote[i] != NULL; i++) {
        ck_assert_msg(!dr_is_local_method(remote[i]), "%s", remote[i]);
    }
}
END_TEST

static Suite *
edges_suite(void)
{
    Suite *s = suite_create("xg_deribit_edges");
    TCase *tc = tcase_create("checks");

    tcase_add_test(tc, test_edge_name);
    tcase_add_test(tc, test_decimal);
    tcase_add_test(tc, test_body);
    tcase_add_test(tc, test_local_methods);
    suite_add_tcase(s, tc);
    return s;
}

int
main(void)
{
    SRunner *sr = srunner_create(edges_suite());
    int failed;

    xg_log_open(NULL, XG_LOG_ERROR);
    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
