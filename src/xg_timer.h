/*
 * xg_timer.h: exgate's timers, on the libevent loop but not libevent's.
 *
 * With a libevent timer pending, every epoll_wait(2) of the loop is given
 * a timeout, and the kernel arms an hrtimer for it on the way to sleep and
 * cancels it when a socket wakes the loop first: once a loop pass. At one
 * client and 1k to 10k messages a second that was 4 % of exgate's CPU per
 * message on this VM (docs/performance.md, "The loop's timeout"), while a
 * deadline is reached once in seconds. These timers are kept in a heap of
 * their own behind one timerfd(2) per event base, which the loop reads like
 * a socket: the timerfd is set again only when the earliest deadline moves
 * earlier or passes, and the loop waits with no timeout.
 *
 * The calls mirror libevent's evtimer_* ones, callbacks included (they get
 * fd -1 and EV_TIMEOUT), so a deadline reads as before. What differs: a
 * timer added from a callback of the same pass with a deadline already
 * reached runs in the next pass, as libevent does; timers that fall due
 * together run in deadline order, then in the order they were added.
 * Without timerfd(2) (not Linux) the heap's earliest deadline is one
 * libevent timer.
 */
#ifndef XG_TIMER_H
#define XG_TIMER_H

#include <stdint.h>
#include <event2/event.h>

struct xg_timer;

typedef void (*xg_timer_cb)(evutil_socket_t fd, short what, void *arg);

/* A timer of BASE that calls CB(-1, EV_TIMEOUT, ARG) when it falls due;
   not pending. With xg_timer_new_persist() it is added again, for the
   same interval, each time it falls due (as an EV_PERSIST event with a
   timeout). Never NULL (exits on allocation failure, as xg_malloc()). */
struct xg_timer *xg_timer_new(struct event_base *base, xg_timer_cb cb,
    void *arg);
struct xg_timer *xg_timer_new_persist(struct event_base *base,
    xg_timer_cb cb, void *arg);

/* Makes T fall due TV (or MS) from now, pending or not; returns 0. */
int xg_timer_add(struct xg_timer *t, const struct timeval *tv);
void xg_timer_add_ms(struct xg_timer *t, uint64_t ms);

/* T no longer pending; nothing if it was not. */
void xg_timer_del(struct xg_timer *t);

/* 1 when T is pending. */
int xg_timer_pending(const struct xg_timer *t);

/* Deletes and frees T (NULL: nothing); from T's own callback too. */
void xg_timer_free(struct xg_timer *t);

#endif /* XG_TIMER_H */
