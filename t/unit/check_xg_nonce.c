/*
 * check_xg_nonce.c: the used-nonce store (src/xg_nonce.c) with an
 * injected clock: a replay is refused while its timestamp is within the
 * window and accepted after, pairs end in timestamp order whatever order
 * they came in (checked against a plain list), and a full store refuses
 * new pairs instead of forgetting old ones.
 */
#include "xg_core.h"
#include "xg_nonce.h"

#include <check.h>
#include <stdio.h>
#include <stdlib.h>

#define W 60000

START_TEST(replay_refused)
{
    struct xg_nonce *ns = xg_nonce_new(W, 16);

    ck_assert_int_eq(xg_nonce_use(ns, "bot", "n1", 1000, 1000), XG_OK);
    ck_assert_int_eq(xg_nonce_use(ns, "bot", "n1", 1000, 1001), XG_ERROR);
    /* the pair is (id, nonce): the timestamp does not make it new */
    ck_assert_int_eq(xg_nonce_use(ns, "bot", "n1", 2000, 2000), XG_ERROR);
    ck_assert_int_eq(xg_nonce_use(ns, "bot2", "n1", 1000, 1001), XG_OK);
    ck_assert_int_eq(xg_nonce_use(ns, "bot", "n2", 1000, 1001), XG_OK);
    /* "a"+"bc" and "ab"+"c" are two pairs */
    ck_assert_int_eq(xg_nonce_use(ns, "a", "bc", 1000, 1001), XG_OK);
    ck_assert_int_eq(xg_nonce_use(ns, "ab", "c", 1000, 1001), XG_OK);
    ck_assert_int_eq(xg_nonce_use(ns, "", "", 1000, 1001), XG_OK);
    ck_assert_int_eq(xg_nonce_use(ns, "", "", 1000, 1001), XG_ERROR);
    ck_assert_uint_eq(xg_nonce_count(ns), 6);
    xg_nonce_free(ns);
}
END_TEST

START_TEST(expires_with_its_timestamp)
{
    struct xg_nonce *ns = xg_nonce_new(W, 16);

    ck_assert_int_eq(xg_nonce_use(ns, "bot", "a", 1000, 1000), XG_OK);
    ck_assert_int_eq(xg_nonce_use(ns, "bot", "a", 1000, 1000 + W - 1),
        XG_ERROR);
    ck_assert_int_eq(xg_nonce_use(ns, "bot", "a", 1000 + W, 1000 + W),
        XG_OK);
    /* signed ahead of our clock: held until its own timestamp ends */
    ck_assert_int_eq(xg_nonce_use(ns, "bot", "b", 100000 + 30000, 100000),
        XG_OK);
    ck_assert_int_eq(xg_nonce_use(ns, "bot", "b", 0, 130000 + W - 1),
        XG_ERROR);
    ck_assert_int_eq(xg_nonce_use(ns, "bot", "b", 0, 130000 + W), XG_OK);
    /* signed long ago: only the rest of its window */
    ck_assert_int_eq(xg_nonce_use(ns, "bot", "c", 300000 - 50000, 300000),
        XG_OK);
    ck_assert_int_eq(xg_nonce_use(ns, "bot", "c", 0, 309999), XG_ERROR);
    ck_assert_int_eq(xg_nonce_use(ns, "bot", "c", 0, 310000), XG_OK);
    xg_nonce_free(ns);
}
END_TEST

/* Pairs in random timestamp order, against a list of (nonce, until). */
START_TEST(expiry_order_exact)
{
    enum { N = 500 };
    struct xg_nonce *ns = xg_nonce_new(W, N);
    uint64_t until[N], now = 1000000, seed = 12345;
    char nonce[32];
    int i, round;

    for (i = 0; i < N; i++) {
        seed = seed * 6364136223846793005ULL + 1442695040888963407ULL;
        /* within (now - W, now + W) as the caller checks */
        until[i] = now - W + 1 + (seed >> 33) % (2 * W - 1) + W;
        snprintf(nonce, sizeof(nonce), "n%d", i);
        ck_assert_int_eq(xg_nonce_use(ns, "bot", nonce, until[i] - W, now),
            XG_OK);
    }
    ck_assert_uint_eq(xg_nonce_count(ns), N);
    /* step the clock through the whole range; probe every pair */
    for (round = 0; round < 40; round++) {
        now += 2 * W / 40 + 7;
        for (i = 0; i < N; i++) {
            int r;

            snprintf(nonce, sizeof(nonce), "n%d", i);
            if (until[i] > now) {
                r = xg_nonce_use(ns, "bot", nonce, until[i] - W, now);
                ck_assert_msg(r == XG_ERROR, "n%d until %llu now %llu: %d",
                    i, (unsigned long long) until[i],
                    (unsigned long long) now, r);
            } else {
                /* gone, and recorded again by this probe */
                r = xg_nonce_use(ns, "bot", nonce, now, now);
                ck_assert_msg(r == XG_OK, "n%d until %llu now %llu: %d", i,
                    (unsigned long long) until[i],
                    (unsigned long long) now, r);
                until[i] = now + W;
            }
        }
    }
    xg_nonce_free(ns);
}
END_TEST

START_TEST(full_refuses_not_forgets)
{
    struct xg_nonce *ns = xg_nonce_new(W, 4);

    ck_assert_int_eq(xg_nonce_use(ns, "bot", "1", 1000, 1000), XG_OK);
    ck_assert_int_eq(xg_nonce_use(ns, "bot", "2", 2000, 2000), XG_OK);
    ck_assert_int_eq(xg_nonce_use(ns, "bot", "3", 3000, 3000), XG_OK);
    ck_assert_int_eq(xg_nonce_use(ns, "bot", "4", 4000, 4000), XG_OK);
    ck_assert_int_eq(xg_nonce_use(ns, "bot", "5", 5000, 5000), XG_AGAIN);
    /* every replay is still refused when full */
    ck_assert_int_eq(xg_nonce_use(ns, "bot", "1", 1000, 5000), XG_ERROR);
    ck_assert_int_eq(xg_nonce_use(ns, "bot", "4", 4000, 5000), XG_ERROR);
    /* the refused pair was not recorded: once "1" ends, "5" gets in */
    ck_assert_int_eq(xg_nonce_use(ns, "bot", "5", 5000, 1000 + W), XG_OK);
    ck_assert_int_eq(xg_nonce_use(ns, "bot", "5", 5000, 1000 + W),
        XG_ERROR);
    ck_assert_int_eq(xg_nonce_use(ns, "bot", "1", 1000 + W, 1000 + W),
        XG_AGAIN);
    ck_assert_uint_eq(xg_nonce_count(ns), 4);
    xg_nonce_free(ns);
}
END_TEST

/* A flood of distinct nonces: the store never holds more than its cap. */
START_TEST(flood_bounded)
{
    enum { CAP = 1000 };
    struct xg_nonce *ns = xg_nonce_new(W, CAP);
    uint64_t now = 0;
    char nonce[32];
    int i, ok = 0, full = 0, r;

    for (i = 0; i < 200000; i++) {
        now += 1;
        snprintf(nonce, sizeof(nonce), "%d", i);
        r = xg_nonce_use(ns, "bot", nonce, now, now);
        ck_assert(r == XG_OK || r == XG_AGAIN);
        ok += r == XG_OK;
        full += r == XG_AGAIN;
        ck_assert_uint_le(xg_nonce_count(ns), CAP);
    }
    /* CAP pairs let in per window, the rest refused */
    ck_assert_int_eq(ok, CAP * (200000 / W + 1));
    ck_assert_int_eq(full, 200000 - ok);
    xg_nonce_free(ns);
}
END_TEST

START_TEST(free_null)
{
    xg_nonce_free(NULL);
}
END_TEST

static Suite *
nonce_suite(void)
{
    Suite *s = suite_create("xg_nonce");
    TCase *tc = tcase_create("nonce");

    tcase_add_test(tc, replay_refused);
    tcase_add_test(tc, expires_with_its_timestamp);
    tcase_add_test(tc, expiry_order_exact);
    tcase_add_test(tc, full_refuses_not_forgets);
    tcase_add_test(tc, flood_bounded);
    tcase_add_test(tc, free_null);
    suite_add_tcase(s, tc);
    return s;
}

int
main(void)
{
    SRunner *sr = srunner_create(nonce_suite());
    int failed;

    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
