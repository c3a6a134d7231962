/*
 * xg_budget.c: the leaky-bucket mirror of an exchange's request budget
 * (see xg_budget.h).
 */
#include "xg_core.h"
#include "xg_budget.h"

#include <string.h>

/* Brings pool P up to NOW_US: the refill since its last update, capped. */
static void
budget_refill(struct xg_budget_pool *p, uint64_t now_us)
{
    if (now_us > p->last_us) {    /* never backwards */
        p->level += (double) (now_us - p->last_us) / 1e6 * p->cf.refill;
        if (p->level > p->cf.max) {
            p->level = p->cf.max;
        }
        p->last_us = now_us;
    }
}

void
xg_budget_configure(struct xg_budget *b, const struct xg_budget_conf *cf,
    uint64_t now_us)
{
    unsigned i, n = cf->npools < XG_BUDGET_POOLS ? cf->npools
                                                 : XG_BUDGET_POOLS;

    for (i = 0; i < n; i++) {
        struct xg_budget_pool *p = &b->pool[i];

        if (i < b->npools) {
            budget_refill(p, now_us);
            p->cf = cf->pool[i];
            if (p->level > p->cf.max) {
                p->level = p->cf.max;
            }
        } else {
            memset(p, 0, sizeof(*p));
            p->cf = cf->pool[i];
            p->level = p->cf.max;
            p->last_us = now_us;
        }
    }
    b->npools = n;
    b->on = cf->on && n > 0;
}

double
xg_budget_level(struct xg_budget *b, unsigned p, uint64_t now_us)
{
    if (p >= b->npools) {
        return 0;
    }
    budget_refill(&b->pool[p], now_us);
    return b->pool[p].level;
}

/* What pool P must hold before COST is spent: COST and the reserve. */
static double
budget_needed(const struct xg_budget_pool *p, double cost)
{
    double reserve = p->cf.refill * XG_BUDGET_RESERVE_MS / 1000.0;

    if (cost >= p->cf.max) {
        return p->cf.max;       /* only a full pool pays for it */
    }
    if (reserve > p->cf.max - cost) {
        reserve = p->cf.max - cost;
    }
    return cost + reserve;
}

uint64_t
xg_budget_wait_us(struct xg_budget *b, unsigned p, double cost,
    uint64_t now_us)
{
    struct xg_budget_pool *pl;
    double need, us;

    if (!b->on || p >= b->npools) {
        return 0;
    }
    pl = &b->pool[p];
    budget_refill(pl, now_us);
    need = budget_needed(pl, cost);
    if (pl->level >= need) {
        return 0;
    }
    if (pl->cf.refill <= 0) {
        return UINT64_MAX;
    }
    us = (need - pl->level) / pl->cf.refill * 1e6;
    return us >= 1e15 ? UINT64_MAX : (uint64_t) us + 1;   /* rounded up */
}

void
xg_budget_spend(struct xg_budget *b, unsigned p, double cost,
    uint64_t now_us)
{
    struct xg_budget_pool *pl;

    if (!b->on || p >= b->npools) {
        return;
    }
    pl = &b->pool[p];
    budget_refill(pl, now_us);
    pl->level -= cost;
    pl->spent += cost;
}
