/*
 * check_xg_budget.c: the leaky-bucket mirror of src/xg_budget.c, driven
 * with explicit times: refill, the burst cap, the reserve, the wait until
 * a cost can be paid, pools kept apart, a reload, and a greedy spender
 * against a bucket that charges as the exchange does.
 */
#include "xg_core.h"
#include "xg_budget.h"

#include <check.h>
#include <stdlib.h>
#include <string.h>

#define S       1000000ULL      /* a second, in microseconds */
#define T0      (1000 * S)      /* any start */

/* Deribit's non-matching pool (0) and tier-4 matching pool (1). */
static void
deribit(struct xg_budget *b, int on)
{
    struct xg_budget_conf cf;

    memset(&cf, 0, sizeof(cf));
    cf.on = on;
    cf.npools = 2;
    cf.pool[0].name = "non_matching";
    cf.pool[0].max = 50000;
    cf.pool[0].refill = 10000;
    cf.pool[1].name = "matching";
    cf.pool[1].max = 20;
    cf.pool[1].refill = 5;
    memset(b, 0, sizeof(*b));
    xg_budget_configure(b, &cf, T0);
}

START_TEST(starts_full_refills_capped)
{
    struct xg_budget b;

    deribit(&b, 1);
    ck_assert(xg_budget_level(&b, 0, T0) == 50000);
    ck_assert(xg_budget_level(&b, 1, T0) == 20);
    xg_budget_spend(&b, 0, 500, T0);
    ck_assert(xg_budget_level(&b, 0, T0) == 49500);
    /* 10 000 a second: 25 ms gives 250 back */
    ck_assert(xg_budget_level(&b, 0, T0 + 25000) == 49750);
    /* never past the burst, however long it rests */
    ck_assert(xg_budget_level(&b, 0, T0 + 3600 * S) == 50000);
    /* the cap holds at once: resting longer does not bank credits */
    xg_budget_spend(&b, 0, 50000, T0 + 3600 * S);
    ck_assert(xg_budget_level(&b, 0, T0 + 3600 * S) == 0);
    ck_assert(xg_budget_level(&b, 0, T0 + 3600 * S + S) == 10000);
}
END_TEST

START_TEST(wait_leaves_the_reserve)
{
    struct xg_budget b;
    uint64_t w, now = T0;
    int n = 0;

    deribit(&b, 1);
    /* the burst: 100 requests of 500, less the reserve (200 ms of refill:
       2 000 credits, 4 requests) */
    while (xg_budget_wait_us(&b, 0, 500, now) == 0) {
        xg_budget_spend(&b, 0, 500, now);
        n++;
    }
    ck_assert_int_eq(n, 96);
    ck_assert(xg_budget_level(&b, 0, now) == 2000);
    /* the next one: 500 more credits, 50 ms */
    w = xg_budget_wait_us(&b, 0, 500, now);
    ck_assert_msg(w >= 50000 && w <= 50001, "wait %llu",
        (unsigned long long) w);
    ck_assert(xg_budget_wait_us(&b, 0, 500, now + w - 2) > 0);
    ck_assert(xg_budget_wait_us(&b, 0, 500, now + w) == 0);
    /* what a full pool cannot pay waits for a full pool (2 500 now) */
    w = xg_budget_wait_us(&b, 0, 80000, now + w);
    ck_assert_msg(w >= 4750000 && w <= 4750001, "wait %llu",
        (unsigned long long) w);
}
END_TEST

START_TEST(reserve_is_capped_by_the_pool)
{
    struct xg_budget b;
    struct xg_budget_conf cf;

    memset(&cf, 0, sizeof(cf));
    memset(&b, 0, sizeof(b));
    cf.on = 1;
    cf.npools = 1;
    cf.pool[0].name = "small";
    cf.pool[0].max = 600;           /* one request, the reserve would be */
    cf.pool[0].refill = 10000;      /* 2 000: only 100 of it is kept */
    xg_budget_configure(&b, &cf, T0);
    ck_assert(xg_budget_wait_us(&b, 0, 500, T0) == 0);
    xg_budget_spend(&b, 0, 500, T0);
    /* 100 left: the next waits for the full 600 (50 ms) */
    ck_assert(xg_budget_wait_us(&b, 0, 500, T0) >= 50000);
    ck_assert(xg_budget_wait_us(&b, 0, 500, T0 + 50001) == 0);
}
END_TEST

START_TEST(pools_apart)
{
    struct xg_budget b;
    uint64_t now = T0;
    int n = 0;

    deribit(&b, 1);
    /* the matching pool: 20, less a reserve of one (200 ms at 5/s) */
    while (xg_budget_wait_us(&b, 1, 1, now) == 0) {
        xg_budget_spend(&b, 1, 1, now);
        n++;
    }
    ck_assert_int_eq(n, 19);
    ck_assert(xg_budget_wait_us(&b, 1, 1, now) >= 200000);
    /* the non-matching pool is untouched */
    ck_assert(xg_budget_level(&b, 0, now) == 50000);
    ck_assert(xg_budget_wait_us(&b, 0, 500, now) == 0);
    /* and emptying it leaves the matching pool's refill as it was */
    xg_budget_spend(&b, 0, 50000, now);
    ck_assert(xg_budget_wait_us(&b, 1, 1, now + 200001) == 0);
    ck_assert(b.pool[1].spent == 19 && b.pool[0].spent == 50000);
}
END_TEST

START_TEST(off_never_waits)
{
    struct xg_budget b;

    deribit(&b, 0);
    xg_budget_spend(&b, 0, 1e9, T0);
    ck_assert(xg_budget_wait_us(&b, 0, 500, T0) == 0);
    ck_assert(xg_budget_level(&b, 0, T0) == 50000);
}
END_TEST

START_TEST(reload_keeps_levels)
{
    struct xg_budget b;
    struct xg_budget_conf cf;

    deribit(&b, 1);
    xg_budget_spend(&b, 0, 30000, T0);  /* 20 000 left */
    memset(&cf, 0, sizeof(cf));
    cf.on = 1;
    cf.npools = 3;
    cf.pool[0].name = "non_matching";
    cf.pool[0].max = 10000;             /* smaller: capped */
    cf.pool[0].refill = 1000;
    cf.pool[1].name = "matching";
    cf.pool[1].max = 100;
    cf.pool[1].refill = 30;
    cf.pool[2].name = "subscribe";      /* new: full */
    cf.pool[2].max = 30000;
    cf.pool[2].refill = 10000;
    xg_budget_configure(&b, &cf, T0);
    ck_assert(xg_budget_level(&b, 0, T0) == 10000);
    ck_assert(xg_budget_level(&b, 1, T0) == 20);    /* not a fresh burst */
    ck_assert(xg_budget_level(&b, 1, T0 + S) == 50);
    ck_assert(xg_budget_level(&b, 2, T0) == 30000);
    ck_assert(xg_budget_level(&b, 0, T0 + S) == 10000);
}
END_TEST

/*
 * A greedy spender for 20 s, paying whenever the mirror says it may,
 * against the exchange's own bucket (no reserve) that reads each request
 * a varying 0..150 ms later, in order: the exchange never finds it short,
 * and the spender gets the burst and the refill less the reserve.
 */
START_TEST(greedy_spender_never_overdraws)
{
    struct xg_budget b;
    double ex_level = 50000;
    uint64_t now = T0, ex_last = T0, arrive, w, last_arrive = T0;
    unsigned seed = 7;
    int n = 0;

    deribit(&b, 1);
    while (now < T0 + 20 * S) {
        w = xg_budget_wait_us(&b, 0, 500, now);
        if (w > 0) {
            now += w;
            continue;
        }
        xg_budget_spend(&b, 0, 500, now);
        n++;
        seed = seed * 1103515245 + 12345;
        arrive = now + (seed >> 8) % 150000;
        if (arrive < last_arrive) {
            arrive = last_arrive;       /* one connection: in order */
        }
        last_arrive = arrive;
        ex_level += (double) (arrive - ex_last) / 1e6 * 10000;
        if (ex_level > 50000) {
            ex_level = 50000;
        }
        ex_last = arrive;
        ck_assert_msg(ex_level >= 500, "request %d: the exchange has %.0f",
            n, ex_level);
        ex_level -= 500;
    }
    /* (50 000 - 2 000 + 20 s x 10 000) / 500 = 496 */
    ck_assert_msg(n >= 495 && n <= 497, "%d requests in 20 s", n);
}
END_TEST

static Suite *
budget_suite(void)
{
    Suite *s = suite_create("xg_budget");
    TCase *tc = tcase_create("bucket");

    tcase_add_test(tc, starts_full_refills_capped);
    tcase_add_test(tc, wait_leaves_the_reserve);
    tcase_add_test(tc, reserve_is_capped_by_the_pool);
    tcase_add_test(tc, pools_apart);
    tcase_add_test(tc, off_never_waits);
    tcase_add_test(tc, reload_keeps_levels);
    tcase_add_test(tc, greedy_spender_never_overdraws);
    suite_add_tcase(s, tc);
    return s;
}

int
main(void)
{
    SRunner *sr = srunner_create(budget_suite());
    int failed;

    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
