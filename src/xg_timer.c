/*
 * xg_timer.c: timers in a heap of their own behind one timerfd(2) per
 * event base (see xg_timer.h for why not libevent's). A binary heap by
 * deadline, then by the order of adding; each timer knows its place in it,
 * so deleting is O(log n) too.
 */
#include "xg_core.h"
#include "xg_log.h"
#include "xg_timer.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#ifdef HAVE_SYS_TIMERFD_H
#include <sys/timerfd.h>
#endif

/* The timers of one event base. */
struct xg_timers {
    struct event_base  *base;
    struct event       *ev;         /* the timerfd's, or the one timer */
    int                 fd;         /* the timerfd; -1 without one */
    int                 ev_added;   /* ev is added (some timer pending) */
    struct xg_timer   **heap;
    size_t              n, cap;
    uint64_t            armed_ns;   /* what fd or ev is set to; 0: not */
    uint64_t            seq;        /* adds so far: the tie-break */
    int                 in_pass;    /* due timers being run */
    size_t              refs;       /* timers alive, and a running pass */
    struct xg_timers   *next;
};

struct xg_timer {
    struct xg_timers   *ts;
    xg_timer_cb         cb;
    void               *arg;
    uint64_t            due_ns;
    uint64_t            seq;
    uint64_t            interval_ns; /* persistent: what it was added for */
    size_t              idx;         /* place in the heap + 1; 0: none */
    int                 persist;
};

/* Every base's set: one or two in a process. */
static struct xg_timers *timer_sets;

static uint64_t
now_ns(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t) ts.tv_sec * 1000000000u + (uint64_t) ts.tv_nsec;
}

/* ---- the heap ---- */

static int
earlier(const struct xg_timer *a, const struct xg_timer *b)
{
    return a->due_ns < b->due_ns
           || (a->due_ns == b->due_ns && a->seq < b->seq);
}

static void
heap_set(struct xg_timers *ts, size_t i, struct xg_timer *t)
{
    ts->heap[i] = t;
    t->idx = i + 1;
}

static void
heap_up(struct xg_timers *ts, size_t i)
{
    struct xg_timer *t = ts->heap[i];

    while (i > 0) {
        size_t p = (i - 1) / 2;

        if (!earlier(t, ts->heap[p])) {
            break;
        }
        heap_set(ts, i, ts->heap[p]);
        i = p;
    }
    heap_set(ts, i, t);
}

static void
heap_down(struct xg_timers *ts, size_t i)
{
    struct xg_timer *t = ts->heap[i];

    for (;;) {
        size_t c = 2 * i + 1;

        if (c >= ts->n) {
            break;
        }
        if (c + 1 < ts->n && earlier(ts->heap[c + 1], ts->heap[c])) {
            c++;
        }
        if (!earlier(ts->heap[c], t)) {
            break;
        }
        heap_set(ts, i, ts->heap[c]);
        i = c;
    }
    heap_set(ts, i, t);
}

static void
heap_insert(struct xg_timers *ts, struct xg_timer *t)
{
    if (ts->n == ts->cap) {
        ts->cap = ts->cap ? ts->cap * 2 : 16;
        ts->heap = xg_realloc(ts->heap, ts->cap * sizeof(*ts->heap));
    }
    heap_set(ts, ts->n++, t);
    heap_up(ts, ts->n - 1);
}

static void
heap_remove(struct xg_timers *ts, struct xg_timer *t)
{
    size_t i = t->idx - 1;

    t->idx = 0;
    if (--ts->n == i) {
        return;
    }
    heap_set(ts, i, ts->heap[ts->n]);
    if (i > 0 && earlier(ts->heap[i], ts->heap[(i - 1) / 2])) {
        heap_up(ts, i);
    } else {
        heap_down(ts, i);
    }
}

/* ---- the loop's side ---- */

/*
 * Sets the timerfd (or the one libevent timer) to the earliest deadline
 * when that is earlier than what it is set to: one that is set later
 * fires first and sets it again. While no timer is pending its event is
 * not added, so the loop can end as it did with libevent's timers.
 */
static void
timers_arm(struct xg_timers *ts)
{
    uint64_t first;

    if (ts->in_pass) {
        return;                     /* the pass sets it when it is done */
    }
    if (ts->n == 0) {
        if (ts->ev_added) {
            event_del(ts->ev);
            ts->ev_added = 0;
        }
        return;
    }
    if (!ts->ev_added) {
        if (ts->fd >= 0) {
            event_add(ts->ev, NULL);
        }
        ts->ev_added = 1;
        ts->armed_ns = 0;
    }
    first = ts->heap[0]->due_ns;
    if (ts->armed_ns != 0 && ts->armed_ns <= first) {
        return;
    }
#ifdef HAVE_SYS_TIMERFD_H
    if (ts->fd >= 0) {
        struct itimerspec its;

        memset(&its, 0, sizeof(its));
        its.it_value.tv_sec = (time_t) (first / 1000000000u);
        its.it_value.tv_nsec = (long) (first % 1000000000u);
        if (timerfd_settime(ts->fd, TFD_TIMER_ABSTIME, &its, NULL) == 0) {
            ts->armed_ns = first;
            return;
        }
        xg_log(XG_LOG_ERROR, "timerfd_settime: %s", strerror(errno));
        return;
    }
#endif
    {
        uint64_t now = now_ns(), in = first > now ? first - now : 0;
        struct timeval tv;

        tv.tv_sec = (time_t) (in / 1000000000u);
        tv.tv_usec = (suseconds_t) ((in % 1000000000u + 999) / 1000);
        evtimer_add(ts->ev, &tv);
        ts->armed_ns = first;
    }
}

static void
timers_unref(struct xg_timers *ts)
{
    struct xg_timers **pp;

    if (--ts->refs > 0) {
        return;
    }
    for (pp = &timer_sets; *pp != NULL; pp = &(*pp)->next) {
        if (*pp == ts) {
            *pp = ts->next;
            break;
        }
    }
    event_free(ts->ev);
    if (ts->fd >= 0) {
        close(ts->fd);
    }
    free(ts->heap);
    free(ts);
}

/*
 * A pass: every timer due now that was added before the pass began runs,
 * earliest first; one added (or added again) by a callback of the pass
 * (its seq is the pass's first or later) waits for the next, so a timer
 * that adds itself for 0 ms cannot hold the loop. A persistent timer is
 * added again before its callback runs.
 */
static void
timers_run(struct xg_timers *ts)
{
    uint64_t now = now_ns(), seq0 = ts->seq;

    ts->refs++;                     /* a callback may free the last timer */
    ts->in_pass = 1;
    ts->armed_ns = 0;
    while (ts->n > 0) {
        struct xg_timer *t = ts->heap[0];

        if (t->due_ns > now || t->seq >= seq0) {
            break;
        }
        heap_remove(ts, t);
        if (t->persist) {
            t->due_ns += t->interval_ns;
            if (t->due_ns <= now) {
                t->due_ns = now + t->interval_ns;
            }
            t->seq = ts->seq++;
            heap_insert(ts, t);
        }
        t->cb(-1, EV_TIMEOUT, t->arg);
    }
    ts->in_pass = 0;
    timers_arm(ts);
    timers_unref(ts);
}

static void
timers_on_fd(evutil_socket_t fd, short what, void *arg)
{
    uint64_t expirations;

    /* clears it: nonblocking, so a spurious wake reads nothing */
    if (read(fd, &expirations, sizeof(expirations)) < 0 && errno != EAGAIN) {
        xg_log(XG_LOG_ERROR, "timerfd read: %s", strerror(errno));
    }
    timers_run(arg);
}

static void
timers_on_ev(evutil_socket_t fd, short what, void *arg)
{
    timers_run(arg);
}

static struct xg_timers *
timers_of(struct event_base *base)
{
    struct xg_timers *ts;

    for (ts = timer_sets; ts != NULL; ts = ts->next) {
        if (ts->base == base) {
            return ts;
        }
    }
    ts = xg_calloc(1, sizeof(*ts));
    ts->base = base;
    ts->fd = -1;
#ifdef HAVE_SYS_TIMERFD_H
    ts->fd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
    if (ts->fd < 0) {
        xg_log(XG_LOG_WARN, "timerfd_create: %s: timers on libevent's",
            strerror(errno));
    }
#endif
    if (ts->fd >= 0) {
        ts->ev = event_new(base, ts->fd, EV_READ | EV_PERSIST, timers_on_fd,
            ts);
    } else {
        ts->ev = evtimer_new(base, timers_on_ev, ts);
    }
    if (ts->ev == NULL) {
        xg_log(XG_LOG_ERROR, "cannot make the timers' event");
        abort();
    }
    ts->next = timer_sets;
    timer_sets = ts;
    return ts;
}

/* ---- timers ---- */

static struct xg_timer *
timer_new(struct event_base *base, xg_timer_cb cb, void *arg, int persist)
{
    struct xg_timer *t = xg_calloc(1, sizeof(*t));

    t->ts = timers_of(base);
    t->ts->refs++;
    t->cb = cb;
    t->arg = arg;
    t->persist = persist;
    return t;
}

/* See xg_timer.h. */
struct xg_timer *
xg_timer_new(struct event_base *base, xg_timer_cb cb, void *arg)
{
    return timer_new(base, cb, arg, 0);
}

/* See xg_timer.h. */
struct xg_timer *
xg_timer_new_persist(struct event_base *base, xg_timer_cb cb, void *arg)
{
    return timer_new(base, cb, arg, 1);
}

static void
timer_add_ns(struct xg_timer *t, uint64_t in)
{
    struct xg_timers *ts = t->ts;

    if (t->idx != 0) {
        heap_remove(ts, t);
    }
    t->due_ns = now_ns() + in;
    t->interval_ns = in;
    t->seq = ts->seq++;
    heap_insert(ts, t);
    timers_arm(ts);
}

/* See xg_timer.h. */
int
xg_timer_add(struct xg_timer *t, const struct timeval *tv)
{
    timer_add_ns(t, (uint64_t) tv->tv_sec * 1000000000u
        + (uint64_t) tv->tv_usec * 1000u);
    return 0;
}

/* See xg_timer.h. */
void
xg_timer_add_ms(struct xg_timer *t, uint64_t ms)
{
    timer_add_ns(t, ms * 1000000u);
}

/* See xg_timer.h. */
void
xg_timer_del(struct xg_timer *t)
{
    if (t->idx == 0) {
        return;
    }
    heap_remove(t->ts, t);
    /* the timerfd stays set: if it fires first, it finds nothing due */
    if (t->ts->n == 0) {
        timers_arm(t->ts);
    }
}

/* See xg_timer.h. */
int
xg_timer_pending(const struct xg_timer *t)
{
    return t->idx != 0;
}

/* See xg_timer.h. */
void
xg_timer_free(struct xg_timer *t)
{
    if (t == NULL) {
        return;
    }
    xg_timer_del(t);
    timers_unref(t->ts);
    free(t);
}
