/*
 * check_xg_deribit_outcome.c: the pure parts of the Deribit venue's lost
 * order answers (modules/venue/xg_venue_deribit_outcome.c): the labels it
 * gives orders (made, read back, within Deribit's 64 characters), the
 * order found by label, an edit's effect, and which methods are looked
 * up.
 */
#include "xg_venue_deribit_int.h"

#include <check.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

START_TEST(test_label_length)
{
    static const uint64_t v[] = { 0, 1, 42, 1764788888000001ULL,
                                  UINT64_MAX };
    char buf[DR_LABEL_MAX + 1];
    size_t i, j;
    int n;

    for (i = 0; i < sizeof(v) / sizeof(v[0]); i++) {
        for (j = 0; j < sizeof(v) / sizeof(v[0]); j++) {
            n = dr_outcome_label_make(buf, sizeof(buf), v[i], v[j]);
            ck_assert_int_le(n, DR_LABEL_MAX);
            ck_assert_int_eq((int) strlen(buf), n);
        }
    }
    n = dr_outcome_label_make(buf, sizeof(buf), 1764788888000001ULL, 7);
    ck_assert_str_eq(buf, "xg-1764788888000001-7");
}
END_TEST

START_TEST(test_find_label)
{
    json_t *a = json_loads("["
        "{\"order_id\":\"1\",\"label\":\"x\",\"creation_timestamp\":10},"
        "{\"order_id\":\"2\",\"label\":\"y\",\"creation_timestamp\":30},"
        "{\"order_id\":\"3\",\"label\":\"x\",\"creation_timestamp\":20},"
        "{\"order_id\":\"4\",\"creation_timestamp\":40},"
        "7]", 0, NULL);
    json_t *o;

    ck_assert_ptr_nonnull(a);
    o = dr_outcome_find_label(a, "x");      /* the newest of two */
    ck_assert_str_eq(json_string_value(json_object_get(o, "order_id")), "3");
    o = dr_outcome_find_label(a, "y");
    ck_assert_str_eq(json_string_value(json_object_get(o, "order_id")), "2");
    ck_assert_ptr_null(dr_outcome_find_label(a, "z"));
    ck_assert_ptr_null(dr_outcome_find_label(a, ""));
    ck_assert_ptr_null(dr_outcome_find_label(a, NULL));
    ck_assert_ptr_null(dr_outcome_find_label(json_object_get(a, "x"), "x"));
    json_decref(a);
}
END_TEST

START_TEST(test_edit_applied)
{
    json_t *o = json_loads("{\"amount\":20,\"price\":1701.5}", 0, NULL);
    json_t *p;

    p = json_loads("{\"order_id\":\"1\",\"amount\":20.0,\"price\":1701.5}",
        0, NULL);
    ck_assert_int_eq(dr_outcome_edit_applied(o, p), 1);
    json_decref(p);
    p = json_loads("{\"amount\":20}", 0, NULL);     /* market: no price */
    ck_assert_int_eq(dr_outcome_edit_applied(o, p), 1);
    json_decref(p);
    p = json_loads("{\"amount\":10,\"price\":1701.5}", 0, NULL);
    ck_assert_int_eq(dr_outcome_edit_applied(o, p), 0);
    json_decref(p);
    p = json_loads("{\"amount\":20,\"price\":1702}", 0, NULL);
    ck_assert_int_eq(dr_outcome_edit_applied(o, p), 0);
    json_decref(p);
    p = json_loads("{\"amount\":\"20\"}", 0, NULL);
    ck_assert_int_eq(dr_outcome_edit_applied(o, p), 0);
    json_decref(p);
    json_decref(o);
}
END_TEST

START_TEST(test_methods)
{
    static const char *const yes[] = { "private/buy", "private/sell",
        "private/edit", "private/edit_by_label", "private/cancel",
        "private/cancel_all", "private/cancel_all_by_instrument",
        "private/cancel_all_by_currency", "private/cancel_by_label",
        "private/close_position", NULL };
    static const char *const no[] = { "private/get_open_orders",
        "public/buy", "private/buyx", "private/cancel_on_disconnect",
        "private/get_order_state", "", NULL };
    int i;

    for (i = 0; yes[i] != NULL; i++) {
        ck_assert_msg(dr_outcome_method(yes[i]), "%s", yes[i]);
    }
    for (i = 0; no[i] != NULL; i++) {
        ck_assert_msg(!dr_outcome_method(no[i]), "%s", no[i]);
    }
    ck_assert(!dr_outcome_method(NULL));
}
END_TEST

static Suite *
outcome_suite(void)
{
    Suite *s = suite_create("xg_deribit_outcome");
    TCase *tc = tcase_create("pure");

    tcase_add_test(tc, test_label_length);
    tcase_add_test(tc, test_find_label);
    tcase_add_test(tc, test_edit_applied);
    tcase_add_test(tc, test_methods);
    suite_add_tcase(s, tc);
    return s;
}

int
main(void)
{
    SRunner *sr = srunner_create(outcome_suite());
    int failed;

    xg_log_open(NULL, XG_LOG_ERROR);
    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
