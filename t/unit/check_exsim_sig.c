/*
 * check_exsim_sig.c: exsim's client_signature against the two test vectors
 * of Deribit's docs (exchange-protocols.md A2.2), and the rules around
 * them (no trailing newline after data, data signed when given).
 */
#include "exsim.h"

#include <check.h>
#include <stdlib.h>
#include <string.h>

START_TEST(vector_amanda)
{
    char out[65];

    ck_assert_int_eq(exsim_sig_compute("AMANDASECRECT", "1576074319000",
        "1iqt2wls", "", out), 0);
    ck_assert_str_eq(out,
        "56590594f97921b09b18f166befe0d1319b198bbcdad7ca73382de2f88fe9aa1");
}
END_TEST

START_TEST(vector_abcd)
{
    char out[65];

    ck_assert_int_eq(exsim_sig_compute("ABCD", "1554883365000", "fdbmmz79",
        NULL, out), 0);
    ck_assert_str_eq(out,
        "e20c9cd5639d41f8bbc88f4d699c4baf94a4f0ee320e9a116b72743c449eb994");
}
END_TEST

START_TEST(data_is_signed)
{
    char a[65], b[65], c[65];

    ck_assert_int_eq(exsim_sig_compute("ABCD", "1554883365000", "fdbmmz79",
        "x", a), 0);
    ck_assert_int_eq(exsim_sig_compute("ABCD", "1554883365000", "fdbmmz79",
        "y", b), 0);
    /* a trailing newline after data would be the old docs' shell bug */
    ck_assert_int_eq(exsim_sig_compute("ABCD", "1554883365000", "fdbmmz79",
        "\n", c), 0);
    ck_assert_str_ne(a, b);
    ck_assert_str_ne(c,
        "e20c9cd5639d41f8bbc88f4d699c4baf94a4f0ee320e9a116b72743c449eb994");
    ck_assert_uint_eq(strlen(a), 64);
    ck_assert_uint_eq(strspn(a, "0123456789abcdef"), 64);
}
END_TEST

int
main(void)
{
    Suite *s = suite_create("exsim_sig");
    TCase *tc = tcase_create("vectors");
    SRunner *sr;
    int failed;

    tcase_add_test(tc, vector_amanda);
    tcase_add_test(tc, vector_abcd);
    tcase_add_test(tc, data_is_signed);
    suite_add_tcase(s, tc);
    sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
