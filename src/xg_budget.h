/*
 * xg_budget.h: a mirror of an exchange's request budget (leaky buckets).
 *
 * An exchange that meters requests in credits (Deribit: a pool per
 * account, refilled continuously, each request costing some credits from
 * one of several pools) closes the connection of whoever overdraws it.
 * The gateway keeps a mirror of each pool and spends from it before a
 * request goes out, so that it never sends what the exchange would
 * refuse: a request that the mirror cannot pay for waits (the session
 * decides where, see src/xg_session.h) until the pool has refilled.
 *
 * The mirror has to stay at or below the exchange's own level. The
 * exchange charges a request when it reads it, the mirror when it is
 * written; the two clocks differ by the transit time, which varies. The
 * reserve (XG_BUDGET_RESERVE_MS worth of refill, at most what the pool
 * holds beyond one request) is kept unspent to absorb that jitter: it
 * shortens the burst a little and leaves the sustained rate as it is.
 *
 * What a pool is called, what it holds and what each request costs is
 * the venue's: this file knows no exchange. Pure arithmetic: no timers,
 * no clock of its own (times are passed in, in microseconds), so that
 * the unit tests drive it directly.
 */
#ifndef XG_BUDGET_H
#define XG_BUDGET_H

#include <stddef.h>
#include <stdint.h>

#define XG_BUDGET_POOLS       4         /* pools per budget, at most */
#define XG_BUDGET_RESERVE_MS  200       /* refill kept unspent (jitter) */

/* One pool as configured. */
struct xg_budget_pool_conf {
    const char  *name;          /* the venue's (static), for /status */
    double       max;           /* the burst: what a full pool holds */
    double       refill;        /* units per second */
};

/* A budget as configured: ON 0 spends nothing and never waits. */
struct xg_budget_conf {
    int                         on;
    unsigned                    npools;
    struct xg_budget_pool_conf  pool[XG_BUDGET_POOLS];
};

struct xg_budget_pool {
    struct xg_budget_pool_conf  cf;
    double                      level;      /* as of last_us */
    uint64_t                    last_us;
    double                      spent;      /* units spent in all */
};

struct xg_budget {
    int                     on;
    unsigned                npools;
    struct xg_budget_pool   pool[XG_BUDGET_POOLS];
};

/*
 * Sets B up from CF as of NOW_US: new pools start full; a pool B had
 * already (the same index) keeps its level, capped at the new maximum,
 * so that a reload does not hand out a fresh burst.
 */
void xg_budget_configure(struct xg_budget *b, const struct xg_budget_conf *cf,
    uint64_t now_us);

/* Pool P's level as of NOW_US (refilled, capped at its maximum). */
double xg_budget_level(struct xg_budget *b, unsigned p, uint64_t now_us);

/*
 * Microseconds from NOW_US until COST can be spent from pool P with the
 * reserve left: 0 when it can be now (or when B is off). A cost that a
 * full pool cannot pay waits for a full pool and is spent from it.
 */
uint64_t xg_budget_wait_us(struct xg_budget *b, unsigned p, double cost,
    uint64_t now_us);

/* Spends COST from pool P at NOW_US (the level may go below zero). */
void xg_budget_spend(struct xg_budget *b, unsigned p, double cost,
    uint64_t now_us);

#endif
