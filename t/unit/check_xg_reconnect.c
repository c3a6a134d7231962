/*
 * check_xg_reconnect.c: the reconnect policies, the breaker and the
 * supervisor, with a fake clock and a seeded random source, plus the
 * directives that configure them.
 */
#include "xg_core.h"
#include "xg_conf.h"
#include "xg_reconnect.h"

#include <check.h>
#include <stdlib.h>
#include <string.h>

/* splitmix64: a seeded, reproducible 64-bit source for the tests. */
static uint64_t
test_rand(void *arg)
{
    uint64_t *s = arg;
    uint64_t z = (*s += 0x9e3779b97f4a7c15ULL);

    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

static uint64_t seed;
static struct xg_reconnect_env env;

static void
env_setup(void)
{
    seed = 42;
    env.now_ms = 1000000;
    env.rand = test_rand;
    env.rand_arg = &seed;
}

/* Loads TEXT, which must be valid, and returns its first upstream. */
static struct xg_main_conf *
load_ok(const char *text)
{
    struct xg_main_conf *mc;
    char *errors = NULL;

    mc = xg_conf_load_string("test.conf", text, &errors);
    ck_assert_msg(mc != NULL, "conf refused: %s", errors ? errors : "");
    free(errors);
    return mc;
}

/* Loads TEXT, which must be refused with an error containing WANT. */
static void
load_bad(const char *text, const char *want)
{
    struct xg_main_conf *mc;
    char *errors = NULL;

    mc = xg_conf_load_string("test.conf", text, &errors);
    ck_assert_msg(mc == NULL, "conf accepted: %s", text);
    ck_assert_msg(errors != NULL && strstr(errors, want) != NULL,
        "want \"%s\" in: %s", want, errors ? errors : "(none)");
    free(errors);
}

/* A supervisor from an upstream block body, e.g. "reconnect fixed;". */
static struct xg_main_conf *
sup_from(struct xg_reconnect *r, const char *body)
{
    char text[2048];
    struct xg_main_conf *mc;

    snprintf(text, sizeof(text),
        "upstream u {\n url ws://127.0.0.1:1/x;\n %s\n}\n", body);
    mc = load_ok(text);
    xg_reconnect_init(r, mc->upstreams);
    return mc;
}

static uint64_t
fail_once(struct xg_reconnect *r, enum xg_reconnect_action want)
{
    struct xg_reconnect_failure f = { "test", 0, -1 };
    struct xg_reconnect_decision d;

    xg_reconnect_failed(r, &f, &env, &d);
    ck_assert_int_eq(d.action, want);
    return d.delay_ms;
}

/* ---- policies ------------------------------------------------------- */

START_TEST(exponential_none_sequence_and_cap)
{
    static const uint64_t want[] = {
        250, 500, 1000, 2000, 4000, 8000, 16000, 30000, 30000, 30000
    };
    struct xg_reconnect r;
    struct xg_main_conf *mc;
    size_t i;

    mc = sup_from(&r, "reconnect exponential { jitter none; }");
    for (i = 0; i < XG_NELEM(want); i++) {
        ck_assert_uint_eq(fail_once(&r, XG_RECONNECT_RETRY), want[i]);
    }
    /* Far past any overflow of initial * 2^n: still the cap. */
    for (i = 0; i < 2000; i++) {
        ck_assert_uint_eq(fail_once(&r, XG_RECONNECT_RETRY), 30000);
    }
    xg_reconnect_free(&r);
    xg_conf_free(mc);
}
END_TEST

START_TEST(exponential_fractional_multiplier)
{
    static const uint64_t want[] = { 100, 150, 225, 337, 506, 759, 1000, 1000 };
    struct xg_reconnect r;
    struct xg_main_conf *mc;
    size_t i;

    mc = sup_from(&r, "reconnect exponential { initial 100ms; max 1s; "
        "multiplier 1.5; jitter none; }");
    for (i = 0; i < XG_NELEM(want); i++) {
        ck_assert_uint_eq(fail_once(&r, XG_RECONNECT_RETRY), want[i]);
    }
    xg_reconnect_free(&r);
    xg_conf_free(mc);
}
END_TEST

/*
 * Draws N delays at attempt ATTEMPT (the supervisor is reset to it each
 * time) and checks each lies in [LO, HI]; returns min, max and mean.
 */
static void
draw(struct xg_reconnect *r, unsigned attempt, int n, uint64_t lo,
    uint64_t hi, uint64_t *mn, uint64_t *mx, double *mean)
{
    double sum = 0;
    uint64_t d;
    int i;

    *mn = UINT64_MAX;
    *mx = 0;
    for (i = 0; i < n; i++) {
        r->st.attempt = attempt - 1;
        d = fail_once(r, XG_RECONNECT_RETRY);
        ck_assert_msg(d >= lo && d <= hi, "attempt %u: %llu not in [%llu, "
            "%llu]", attempt, (unsigned long long) d,
            (unsigned long long) lo, (unsigned long long) hi);
        *mn = d < *mn ? d : *mn;
        *mx = d > *mx ? d : *mx;
        sum += (double) d;
    }
    *mean = sum / n;
}

START_TEST(exponential_full_jitter_bounds)
{
    struct xg_reconnect r;
    struct xg_main_conf *mc;
    uint64_t mn, mx, base;
    double mean;
    unsigned a;

    mc = sup_from(&r, "reconnect exponential { initial 250ms; max 30s; "
        "jitter full; }");
    for (a = 1; a <= 10; a++) {
        base = 250ULL << (a - 1);
        base = base > 30000 ? 30000 : base;
        draw(&r, a, 10000, 0, base, &mn, &mx, &mean);
        /* Uniform on [0, base]: the extremes are reached, mean ~ base/2. */
        ck_assert_uint_le(mn, base / 50);
        ck_assert_uint_ge(mx, base - base / 50);
        ck_assert_msg(mean > base * 0.47 && mean < base * 0.53,
            "attempt %u mean %.1f base %llu", a, mean,
            (unsigned long long) base);
    }
    xg_reconnect_free(&r);
    xg_conf_free(mc);
}
END_TEST

START_TEST(exponential_equal_jitter_bounds)
{
    struct xg_reconnect r;
    struct xg_main_conf *mc;
    uint64_t mn, mx, base;
    double mean;
    unsigned a;

    mc = sup_from(&r, "reconnect exponential { initial 100ms; max 10s; "
        "jitter equal; }");
    for (a = 1; a <= 9; a++) {
        base = 100ULL << (a - 1);
        base = base > 10000 ? 10000 : base;
        draw(&r, a, 10000, base / 2, base, &mn, &mx, &mean);
        ck_assert_uint_le(mn, base / 2 + base / 50);
        ck_assert_uint_ge(mx, base - base / 50);
        ck_assert_msg(mean > base * 0.72 && mean < base * 0.78,
            "attempt %u mean %.1f", a, mean);
    }
    xg_reconnect_free(&r);
    xg_conf_free(mc);
}
END_TEST

START_TEST(exponential_decorrelated_bounds)
{
    struct xg_reconnect r;
    struct xg_main_conf *mc;
    uint64_t d, prev = 0, hi;
    int i, at_cap = 0;

    mc = sup_from(&r, "reconnect exponential { initial 100ms; max 5s; "
        "jitter decorrelated; }");
    for (i = 0; i < 10000; i++) {
        d = fail_once(&r, XG_RECONNECT_RETRY);
        /* sleep = min(cap, random_between(base, sleep * 3)) */
        hi = (prev ? prev : 100) * 3;
        hi = hi > 5000 ? 5000 : hi;
        ck_assert_msg(d >= 100 && d <= hi, "draw %d: %llu not in [100, %llu]",
            i, (unsigned long long) d, (unsigned long long) hi);
        at_cap += d == 5000;
        prev = d;
    }
    /* It wanders up to the cap and back down: neither stuck nor capped. */
    ck_assert_int_gt(at_cap, 100);
    ck_assert_int_lt(at_cap, 9000);
    xg_reconnect_free(&r);
    xg_conf_free(mc);
}
END_TEST

START_TEST(same_seed_same_sequence)
{
    struct xg_reconnect a, b;
    struct xg_main_conf *ma, *mb;
    uint64_t da[50];
    int i;

    ma = sup_from(&a, "reconnect exponential;");
    mb = sup_from(&b, "reconnect exponential;");
    seed = 7;
    for (i = 0; i < 50; i++) {
        da[i] = fail_once(&a, XG_RECONNECT_RETRY);
    }
    seed = 7;
    for (i = 0; i < 50; i++) {
        ck_assert_uint_eq(fail_once(&b, XG_RECONNECT_RETRY), da[i]);
    }
    xg_reconnect_free(&a);
    xg_reconnect_free(&b);
    xg_conf_free(ma);
    xg_conf_free(mb);
}
END_TEST

START_TEST(fixed_sequence)
{
    struct xg_reconnect r;
    struct xg_main_conf *mc;
    int i;

    mc = sup_from(&r, "reconnect fixed { delay 1500ms; }");
    ck_assert_str_eq(xg_reconnect_policy_name(&r), "fixed");
    for (i = 0; i < 100; i++) {
        ck_assert_uint_eq(fail_once(&r, XG_RECONNECT_RETRY), 1500);
    }
    xg_reconnect_free(&r);
    xg_conf_free(mc);
}
END_TEST

START_TEST(defaults_without_reconnect)
{
    struct xg_reconnect r;
    struct xg_main_conf *mc;
    uint64_t d;
    int i;

    mc = sup_from(&r, "");
    ck_assert_str_eq(xg_reconnect_policy_name(&r), "exponential");
    ck_assert_uint_eq(r.stable_ms, 10000);
    ck_assert_str_eq(xg_reconnect_breaker_name(&r), "off");
    /* exponential { initial 250ms; max 30s; multiplier 2; jitter full; } */
    for (i = 1; i <= 12; i++) {
        d = fail_once(&r, XG_RECONNECT_RETRY);
        ck_assert_uint_le(d, i >= 8 ? 30000 : 250ULL << (i - 1));
    }
    xg_reconnect_free(&r);
    xg_conf_free(mc);
}
END_TEST

/* ---- stable, flapping, max_attempts, Retry-After ---------------------- */

START_TEST(reset_after_stable)
{
    struct xg_reconnect r;
    struct xg_main_conf *mc;
    int i;

    mc = sup_from(&r, "reconnect exponential { jitter none; } stable 10s;");
    for (i = 0; i < 5; i++) {
        fail_once(&r, XG_RECONNECT_RETRY);
    }
    ck_assert_uint_eq(r.st.attempt, 5);
    xg_reconnect_ready(&r, env.now_ms);
    ck_assert_int_eq(xg_reconnect_check_stable(&r, env.now_ms + 9999), 0);
    ck_assert_int_eq(xg_reconnect_check_stable(&r, env.now_ms + 10000), 1);
    /* Only once per connection. */
    ck_assert_int_eq(xg_reconnect_check_stable(&r, env.now_ms + 20000), 0);
    ck_assert_uint_eq(r.resets, 1);
    env.now_ms += 60000;
    ck_assert_uint_eq(fail_once(&r, XG_RECONNECT_RETRY), 250);
    ck_assert_uint_eq(fail_once(&r, XG_RECONNECT_RETRY), 500);

    /* Without the timer: the failure itself notices the stable period. */
    xg_reconnect_ready(&r, env.now_ms);
    env.now_ms += 10000;
    ck_assert_uint_eq(fail_once(&r, XG_RECONNECT_RETRY), 250);
    xg_reconnect_free(&r);
    xg_conf_free(mc);
}
END_TEST

START_TEST(no_reset_while_flapping)
{
    static const uint64_t want[] = { 250, 500, 1000, 2000, 4000, 8000, 16000,
        30000, 30000 };
    struct xg_reconnect r;
    struct xg_main_conf *mc;
    size_t i;

    mc = sup_from(&r, "reconnect exponential { jitter none; } stable 10s;");
    for (i = 0; i < XG_NELEM(want); i++) {
        /* Each connection reaches ready but drops after 9.9 s. */
        ck_assert_uint_eq(fail_once(&r, XG_RECONNECT_RETRY), want[i]);
        env.now_ms += want[i];
        xg_reconnect_ready(&r, env.now_ms);
        env.now_ms += 9900;
        ck_assert_int_eq(xg_reconnect_check_stable(&r, env.now_ms), 0);
    }
    ck_assert_uint_eq(r.resets, 0);
    xg_reconnect_free(&r);
    xg_conf_free(mc);
}
END_TEST

START_TEST(max_attempts_gives_up)
{
    struct xg_reconnect r;
    struct xg_main_conf *mc;

    mc = sup_from(&r, "reconnect fixed { delay 1s; } max_attempts 3;");
    fail_once(&r, XG_RECONNECT_RETRY);
    fail_once(&r, XG_RECONNECT_RETRY);
    fail_once(&r, XG_RECONNECT_GIVE_UP);
    xg_reconnect_free(&r);
    xg_conf_free(mc);

    /* A stable connection in between starts the count again. */
    mc = sup_from(&r, "reconnect fixed { delay 1s; } max_attempts 2; "
        "stable 1s;");
    fail_once(&r, XG_RECONNECT_RETRY);
    xg_reconnect_ready(&r, env.now_ms);
    env.now_ms += 1000;
    fail_once(&r, XG_RECONNECT_RETRY);
    fail_once(&r, XG_RECONNECT_GIVE_UP);
    xg_reconnect_free(&r);
    xg_conf_free(mc);
}
END_TEST

START_TEST(retry_after_honoured)
{
    struct xg_reconnect r;
    struct xg_main_conf *mc;
    struct xg_reconnect_failure f = { "http 503", 503, 5 };
    struct xg_reconnect_decision d;

    mc = sup_from(&r, "reconnect fixed { delay 1s; }");
    xg_reconnect_failed(&r, &f, &env, &d);
    ck_assert_int_eq(d.action, XG_RECONNECT_RETRY);
    ck_assert_uint_eq(d.delay_ms, 5000);
    ck_assert_uint_eq(d.policy_ms, 1000);
    ck_assert_int_eq(d.retry_after, 1);
    /* A shorter Retry-After than the policy's delay changes nothing. */
    f.retry_after_s = 0;
    xg_reconnect_failed(&r, &f, &env, &d);
    ck_assert_uint_eq(d.delay_ms, 1000);
    ck_assert_int_eq(d.retry_after, 0);
    /* An absurd one is clamped. */
    f.http_status = 429;
    f.retry_after_s = 999999999;
    xg_reconnect_failed(&r, &f, &env, &d);
    ck_assert_uint_eq(d.delay_ms, XG_RECONNECT_MAX_RETRY_AFTER_S * 1000ULL);
    ck_assert_int_eq(d.clamped, 1);
    xg_reconnect_free(&r);
    xg_conf_free(mc);
}
END_TEST

/* ---- breaker ---------------------------------------------------------- */

START_TEST(breaker_opens_after_n_within_window)
{
    struct xg_reconnect r;
    struct xg_main_conf *mc;
    int i;

    mc = sup_from(&r, "reconnect fixed { delay 100ms; } "
        "breaker { failures 3; window 10s; open 30s; }");
    ck_assert_str_eq(xg_reconnect_breaker_name(&r), "closed");
    ck_assert_uint_eq(fail_once(&r, XG_RECONNECT_RETRY), 100);
    env.now_ms += 4000;
    ck_assert_uint_eq(fail_once(&r, XG_RECONNECT_RETRY), 100);
    env.now_ms += 6000;     /* third failure exactly at the window's edge */
    ck_assert_uint_eq(fail_once(&r, XG_RECONNECT_OPEN), 30000);
    ck_assert_str_eq(xg_reconnect_breaker_name(&r), "open");
    ck_assert_uint_eq(r.breaker.trips, 1);
    (void) i;
    xg_reconnect_free(&r);
    xg_conf_free(mc);
}
END_TEST

START_TEST(breaker_stays_closed_when_spread)
{
    struct xg_reconnect r;
    struct xg_main_conf *mc;
    int i;

    mc = sup_from(&r, "reconnect fixed { delay 100ms; } "
        "breaker { failures 3; window 10s; open 30s; }");
    /* 100 failures, each 5001 ms apart: never 3 within 10 s. */
    for (i = 0; i < 100; i++) {
        fail_once(&r, XG_RECONNECT_RETRY);
        env.now_ms += 5001;
    }
    ck_assert_str_eq(xg_reconnect_breaker_name(&r), "closed");
    /* Then two quick ones after a slow one: the ring's oldest is recent. */
    fail_once(&r, XG_RECONNECT_RETRY);
    env.now_ms += 1;
    fail_once(&r, XG_RECONNECT_OPEN);
    xg_reconnect_free(&r);
    xg_conf_free(mc);
}
END_TEST

START_TEST(breaker_half_open_fails_then_recovers)
{
    struct xg_reconnect r;
    struct xg_main_conf *mc;

    mc = sup_from(&r, "reconnect exponential { jitter none; initial 1s; } "
        "stable 5s; breaker { failures 2; window 60s; open 20s; }");
    fail_once(&r, XG_RECONNECT_RETRY);
    fail_once(&r, XG_RECONNECT_OPEN);
    ck_assert_str_eq(xg_reconnect_breaker_name(&r), "open");

    /* Cool-down over: one trial. It fails before ready -> open again. */
    env.now_ms += 20000;
    xg_reconnect_trial(&r);
    ck_assert_str_eq(xg_reconnect_breaker_name(&r), "half-open");
    ck_assert_uint_eq(fail_once(&r, XG_RECONNECT_OPEN), 20000);
    ck_assert_str_eq(xg_reconnect_breaker_name(&r), "open");
    ck_assert_uint_eq(r.breaker.trips, 2);

    /* The next trial reaches ready but drops before `stable` -> open. */
    env.now_ms += 20000;
    xg_reconnect_trial(&r);
    xg_reconnect_ready(&r, env.now_ms);
    env.now_ms += 4999;
    ck_assert_int_eq(xg_reconnect_check_stable(&r, env.now_ms), 0);
    ck_assert_uint_eq(fail_once(&r, XG_RECONNECT_OPEN), 20000);
    ck_assert_uint_eq(r.breaker.trips, 3);

    /* The third trial stays up for `stable` -> closed, backoff reset. */
    env.now_ms += 20000;
    xg_reconnect_trial(&r);
    xg_reconnect_ready(&r, env.now_ms);
    env.now_ms += 5000;
    ck_assert_int_eq(xg_reconnect_check_stable(&r, env.now_ms), 1);
    ck_assert_str_eq(xg_reconnect_breaker_name(&r), "closed");
    ck_assert_uint_eq(r.st.attempt, 0);
    /* History cleared: one failure later does not re-open it. */
    ck_assert_uint_eq(fail_once(&r, XG_RECONNECT_RETRY), 1000);
    ck_assert_str_eq(xg_reconnect_breaker_name(&r), "closed");
    env.now_ms += 1;
    fail_once(&r, XG_RECONNECT_OPEN);
    xg_reconnect_free(&r);
    xg_conf_free(mc);
}
END_TEST

START_TEST(breaker_respects_retry_after)
{
    struct xg_reconnect r;
    struct xg_main_conf *mc;
    struct xg_reconnect_failure f = { "http 429", 429, 120 };
    struct xg_reconnect_decision d;

    mc = sup_from(&r, "reconnect fixed { delay 1s; } "
        "breaker { failures 1; open 30s; }");
    xg_reconnect_failed(&r, &f, &env, &d);
    ck_assert_int_eq(d.action, XG_RECONNECT_OPEN);
    ck_assert_uint_eq(d.delay_ms, 120000);
    xg_reconnect_free(&r);
    xg_conf_free(mc);
}
END_TEST

START_TEST(breaker_unit_direct)
{
    struct xg_breaker_conf bc = { 1, 2, 1000, 5000 };
    struct xg_breaker b;

    xg_reconnect_breaker_init(&b, &bc);
    ck_assert_int_eq(xg_reconnect_breaker_failure(&b, 0), 0);
    ck_assert_int_eq(xg_reconnect_breaker_failure(&b, 1001), 0);
    ck_assert_int_eq(xg_reconnect_breaker_failure(&b, 2001), 1);
    ck_assert_int_eq(b.state, XG_BREAKER_OPEN);
    ck_assert_uint_eq(b.opened_at, 2001);
    xg_reconnect_breaker_trial(&b);
    ck_assert_int_eq(b.state, XG_BREAKER_HALF_OPEN);
    xg_reconnect_breaker_success(&b);
    ck_assert_int_eq(b.state, XG_BREAKER_CLOSED);
    ck_assert_int_eq(xg_reconnect_breaker_failure(&b, 3000), 0);
    xg_reconnect_breaker_free(&b);

    bc.enabled = 0;
    xg_reconnect_breaker_init(&b, &bc);
    ck_assert_int_eq(xg_reconnect_breaker_failure(&b, 0), 0);
    ck_assert_int_eq(xg_reconnect_breaker_failure(&b, 0), 0);
    ck_assert_int_eq(xg_reconnect_breaker_failure(&b, 0), 0);
    ck_assert_str_eq(xg_reconnect_breaker_state_name(b.state), "off");
    xg_reconnect_breaker_free(&b);
}
END_TEST

/* ---- directives ------------------------------------------------------- */

START_TEST(conf_errors)
{
    load_bad("upstream u { url ws://h/x; reconnect linear; }",
        "test.conf:1: unknown reconnect policy \"linear\"");
    load_bad("upstream u { url ws://h/x; reconnect exponential { jitter "
        "some; } }", "\"jitter\" must be none, full, equal or decorrelated");
    load_bad("upstream u { url ws://h/x;\n reconnect exponential {\n"
        " multiplier 0.5; } }", "test.conf:3: \"multiplier\": 0.5 is out of "
        "range");
    load_bad("upstream u { url ws://h/x; reconnect exponential { multiplier "
        "nan; } }", "is not a number");
    load_bad("upstream u { url ws://h/x; reconnect exponential { initial 5s; "
        "max 1s; } }", "\"max\" (1000ms) is less than \"initial\"");
    load_bad("upstream u { url ws://h/x; reconnect fixed { initial 1s; } }",
        "unknown directive \"initial\"");
    load_bad("upstream u { url ws://h/x; reconnect fixed { delay 0ms; } }",
        "out of range");
    load_bad("upstream u { url ws://h/x; breaker { failures 0; } }",
        "out of range");
    load_bad("upstream u { url ws://h/x; breaker { window 1s; window 2s; } }",
        "duplicate");
    load_bad("upstream u { url ws://h/x; breaker on; }",
        "invalid number of arguments");
    load_bad("upstream u { url ws://h/x; stable forever; }", "bad duration");
    load_bad("upstream u { url ws://h/x; max_attempts -1; }",
        "is not a number");
    load_bad("upstream u { url ws://h/x; reconnect fixed; reconnect fixed; }",
        "duplicate");
    load_bad("stable 10s;", "not allowed here");
}
END_TEST

START_TEST(conf_breaker_defaults)
{
    struct xg_main_conf *mc;

    mc = load_ok("upstream u { url ws://h/x; breaker; max_attempts 7; }");
    ck_assert_int_eq(mc->upstreams->breaker.enabled, 1);
    ck_assert_uint_eq(mc->upstreams->breaker.failures, 10);
    ck_assert_uint_eq(mc->upstreams->breaker.window_ms, 60000);
    ck_assert_uint_eq(mc->upstreams->breaker.open_ms, 60000);
    ck_assert_uint_eq(mc->upstreams->max_attempts, 7);
    ck_assert_ptr_null(mc->upstreams->reconnect);
    xg_conf_free(mc);

    mc = load_ok("upstream u { url ws://h/x; breaker { open 2m; } }");
    ck_assert_uint_eq(mc->upstreams->breaker.failures, 10);
    ck_assert_uint_eq(mc->upstreams->breaker.open_ms, 120000);
    xg_conf_free(mc);
}
END_TEST

START_TEST(conf_describe)
{
    struct xg_reconnect r;
    struct xg_main_conf *mc;
    char buf[256];

    mc = sup_from(&r, "reconnect exponential { initial 1s; max 1m; "
        "multiplier 1.5; jitter decorrelated; }");
    r.policy->describe(r.pconf, buf, sizeof(buf));
    ck_assert_str_eq(buf, "exponential initial 1000ms max 60000ms "
        "multiplier 1.5 jitter decorrelated");
    xg_reconnect_free(&r);
    xg_conf_free(mc);
}
END_TEST

static Suite *
reconnect_suite(void)
{
    Suite *s = suite_create("xg_reconnect");
    TCase *tc;

    tc = tcase_create("policies");
    tcase_add_checked_fixture(tc, env_setup, NULL);
    tcase_add_test(tc, exponential_none_sequence_and_cap);
    tcase_add_test(tc, exponential_fractional_multiplier);
    tcase_add_test(tc, exponential_full_jitter_bounds);
    tcase_add_test(tc, exponential_equal_jitter_bounds);
    tcase_add_test(tc, exponential_decorrelated_bounds);
    tcase_add_test(tc, same_seed_same_sequence);
    tcase_add_test(tc, fixed_sequence);
    tcase_add_test(tc, defaults_without_reconnect);
    suite_add_tcase(s, tc);

    tc = tcase_create("supervisor");
    tcase_add_checked_fixture(tc, env_setup, NULL);
    tcase_add_test(tc, reset_after_stable);
    tcase_add_test(tc, no_reset_while_flapping);
    tcase_add_test(tc, max_attempts_gives_up);
    tcase_add_test(tc, retry_after_honoured);
    suite_add_tcase(s, tc);

    tc = tcase_create("breaker");
    tcase_add_checked_fixture(tc, env_setup, NULL);
    tcase_add_test(tc, breaker_opens_after_n_within_window);
    tcase_add_test(tc, breaker_stays_closed_when_spread);
    tcase_add_test(tc, breaker_half_open_fails_then_recovers);
    tcase_add_test(tc, breaker_respects_retry_after);
    tcase_add_test(tc, breaker_unit_direct);
    suite_add_tcase(s, tc);

    tc = tcase_create("conf");
    tcase_add_checked_fixture(tc, env_setup, NULL);
    tcase_add_test(tc, conf_errors);
    tcase_add_test(tc, conf_breaker_defaults);
    tcase_add_test(tc, conf_describe);
    suite_add_tcase(s, tc);
    return s;
}

int
main(void)
{
    SRunner *sr = srunner_create(reconnect_suite());
    int failed;

    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
