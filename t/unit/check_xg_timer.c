/*
 * check_xg_timer.c: exgate's timers (src/xg_timer.c) on a real event
 * base: they fall due in deadline order, then in the order they were
 * added; deleting, adding again and freeing work from any callback, a
 * timer's own included; one added for 0 ms from a callback, or a
 * persistent one of 0 ms, runs in the next pass, not in a loop; a
 * persistent one comes back for its interval; and the loop ends when no
 * timer is pending, as with libevent's.
 */
#include "xg_core.h"
#include "xg_timer.h"

#include <check.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static struct event_base *base;
static char order[64];
static size_t norder;

static void
note(char c)
{
    ck_assert_uint_lt(norder, sizeof(order) - 1);
    order[norder++] = c;
    order[norder] = '\0';
}

static void
setup(void)
{
    base = event_base_new();
    ck_assert_ptr_nonnull(base);
    norder = 0;
    order[0] = '\0';
}

static void
teardown(void)
{
    event_base_free(base);
}

static uint64_t
mono_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t) ts.tv_sec * 1000 + (uint64_t) ts.tv_nsec / 1000000;
}

static void
on_note(evutil_socket_t fd, short what, void *arg)
{
    ck_assert_int_eq(fd, -1);
    ck_assert_int_eq(what, EV_TIMEOUT);
    note(*(const char *) arg);
}

START_TEST(deadline_order)
{
    static const char a = 'a', b = 'b', c = 'c', d = 'd';
    struct xg_timer *ta = xg_timer_new(base, on_note, (void *) &a),
        *tb = xg_timer_new(base, on_note, (void *) &b),
        *tc = xg_timer_new(base, on_note, (void *) &c),
        *td = xg_timer_new(base, on_note, (void *) &d);
    struct timeval tv = { 0, 30000 };
    uint64_t t0 = mono_ms();

    xg_timer_add_ms(ta, 60);
    xg_timer_add(tb, &tv);
    xg_timer_add_ms(tc, 10);
    xg_timer_add_ms(td, 45);
    ck_assert(xg_timer_pending(ta) && xg_timer_pending(td));
    xg_timer_del(td);
    ck_assert(!xg_timer_pending(td));
    xg_timer_del(td);                       /* not pending: nothing */
    ck_assert_int_eq(event_base_dispatch(base), 1);   /* nothing left */
    ck_assert_str_eq(order, "cba");
    ck_assert_uint_ge(mono_ms() - t0, 60);
    ck_assert(!xg_timer_pending(ta));
    xg_timer_free(ta);
    xg_timer_free(tb);
    xg_timer_free(tc);
    xg_timer_free(td);
    xg_timer_free(NULL);
}
END_TEST

START_TEST(same_deadline_in_added_order)
{
    static const char k[5] = { '1', '2', '3', '4', '5' };
    struct xg_timer *t[5];
    int i;

    for (i = 0; i < 5; i++) {
        t[i] = xg_timer_new(base, on_note, (void *) &k[i]);
    }
    /* all due at once by the time the loop runs */
    for (i = 0; i < 5; i++) {
        xg_timer_add_ms(t[i], 0);
    }
    xg_timer_add_ms(t[1], 0);               /* added again: now the last */
    event_base_dispatch(base);
    ck_assert_str_eq(order, "13452");
    for (i = 0; i < 5; i++) {
        xg_timer_free(t[i]);
    }
}
END_TEST

/* A timer that adds itself again for 0 ms three times. */
static struct xg_timer *again;
static int again_left, again_passes;

static void
on_again(evutil_socket_t fd, short what, void *arg)
{
    note('x');
    if (--again_left > 0) {
        xg_timer_add_ms(again, 0);
    }
}

static void
on_pass_end(evutil_socket_t fd, short what, void *arg)
{
    again_passes++;
}

START_TEST(zero_from_callback_runs_next_pass)
{
    /* an I/O-less event made active each pass tells the passes apart */
    struct event *mark = event_new(base, -1, EV_PERSIST, on_pass_end, NULL);
    int i;

    again = xg_timer_new(base, on_again, NULL);
    again_left = 3;
    xg_timer_add_ms(again, 0);
    for (i = 0; i < 20 && again_left > 0; i++) {
        size_t before = norder;

        event_active(mark, EV_TIMEOUT, 1);
        event_base_loop(base, EVLOOP_ONCE);
        ck_assert_uint_le(norder - before, 1);  /* one run a pass */
    }
    ck_assert_str_eq(order, "xxx");
    ck_assert_int_ge(again_passes, 3);
    xg_timer_free(again);
    event_free(mark);
}
END_TEST

/* A persistent timer of 0 ms: added again for "now" before its callback
   runs, so only the pass's own bound keeps it to one run a pass. */
static struct xg_timer *zero_per;
static int zero_runs;

static void
on_zero_per(evutil_socket_t fd, short what, void *arg)
{
    note('z');
    if (++zero_runs == 3) {
        xg_timer_del(zero_per);
    }
}

START_TEST(persistent_zero_once_a_pass)
{
    int i;

    zero_per = xg_timer_new_persist(base, on_zero_per, NULL);
    xg_timer_add_ms(zero_per, 0);
    for (i = 0; i < 20 && zero_runs < 3; i++) {
        size_t before = norder;

        event_base_loop(base, EVLOOP_ONCE);
        ck_assert_uint_le(norder - before, 1);  /* one run a pass */
    }
    ck_assert_str_eq(order, "zzz");
    ck_assert(!xg_timer_pending(zero_per));
    xg_timer_free(zero_per);
}
END_TEST

/* Callbacks that free timers: their own, and one due in the same pass. */
static struct xg_timer *self_t, *other_t;

static void
on_free_self(evutil_socket_t fd, short what, void *arg)
{
    note('s');
    xg_timer_free(self_t);
    self_t = NULL;
    xg_timer_free(other_t);                 /* due too: must not run */
    other_t = NULL;
}

START_TEST(free_from_callback)
{
    static const char o = 'o';

    self_t = xg_timer_new(base, on_free_self, NULL);
    other_t = xg_timer_new(base, on_note, (void *) &o);
    xg_timer_add_ms(self_t, 5);
    xg_timer_add_ms(other_t, 6);
    /* both are due by the time the loop looks */
    {
        uint64_t t0 = mono_ms();

        while (mono_ms() - t0 < 20) {
        }
    }
    event_base_dispatch(base);
    ck_assert_str_eq(order, "s");
}
END_TEST

static struct xg_timer *per;
static int per_runs;
static uint64_t per_first, per_last;

static void
on_persist(evutil_socket_t fd, short what, void *arg)
{
    uint64_t now = mono_ms();

    if (per_runs++ == 0) {
        per_first = now;
    }
    per_last = now;
    if (per_runs == 5) {
        xg_timer_del(per);
    }
}

START_TEST(persistent)
{
    uint64_t t0 = mono_ms();

    per = xg_timer_new_persist(base, on_persist, NULL);
    xg_timer_add_ms(per, 20);
    event_base_dispatch(base);              /* ends: deleted on its 5th */
    ck_assert_int_eq(per_runs, 5);
    ck_assert_uint_ge(per_first - t0, 20);
    /* four intervals of 20 ms between the first and the last (each run
       is late by what the loop took to see it: the first may be later
       than the last; a ms read truncates) */
    ck_assert_uint_ge(per_last - per_first, 70);
    ck_assert_uint_lt(per_last - per_first, 400);
    ck_assert(!xg_timer_pending(per));
    xg_timer_free(per);
}
END_TEST

/* Adding again earlier than the set deadline brings it forward. */
static uint64_t fired_at;

static void
on_fired(evutil_socket_t fd, short what, void *arg)
{
    fired_at = mono_ms();
}

START_TEST(earlier_deadline_moves_the_wake)
{
    struct xg_timer *late = xg_timer_new(base, on_fired, NULL);
    struct xg_timer *early = xg_timer_new(base, on_note, (void *) "e");
    uint64_t t0 = mono_ms();

    xg_timer_add_ms(late, 10000);
    xg_timer_add_ms(early, 10);
    xg_timer_add_ms(late, 30);              /* from 10 s to 30 ms */
    event_base_dispatch(base);
    ck_assert_str_eq(order, "e");
    ck_assert_uint_ge(fired_at - t0, 30);
    ck_assert_uint_lt(fired_at - t0, 2000);
    xg_timer_free(late);
    xg_timer_free(early);
}
END_TEST

START_TEST(two_bases)
{
    struct event_base *b2 = event_base_new();
    struct xg_timer *t1 = xg_timer_new(base, on_note, (void *) "1");
    struct xg_timer *t2 = xg_timer_new(b2, on_note, (void *) "2");

    xg_timer_add_ms(t1, 1);
    xg_timer_add_ms(t2, 1);
    event_base_dispatch(b2);
    ck_assert_str_eq(order, "2");
    event_base_dispatch(base);
    ck_assert_str_eq(order, "21");
    xg_timer_free(t2);
    event_base_free(b2);
    xg_timer_free(t1);
}
END_TEST

int
main(void)
{
    Suite *s = suite_create("timer");
    TCase *tc = tcase_create("timer");
    SRunner *sr;
    int failed;

    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, deadline_order);
    tcase_add_test(tc, same_deadline_in_added_order);
    tcase_add_test(tc, zero_from_callback_runs_next_pass);
    tcase_add_test(tc, persistent_zero_once_a_pass);
    tcase_add_test(tc, free_from_callback);
    tcase_add_test(tc, persistent);
    tcase_add_test(tc, earlier_deadline_moves_the_wake);
    tcase_add_test(tc, two_bases);
    suite_add_tcase(s, tc);
    sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
