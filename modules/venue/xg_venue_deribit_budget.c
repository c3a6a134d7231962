/*
 * xg_venue_deribit_budget.c: Deribit's request budget (exchange-protocols
 * A6), for the session's mirror of it (src/xg_budget.h): which pool each
 * request is paid from and what it costs, the pools' defaults and the
 * `rate_limit` and `rate_limit_pool` directives.
 *
 * Every request costs credits from a pool of the sub-account (of the IP
 * before auth), refilled continuously; overdrawing one gets 10028 and the
 * connection closed. The pools, with Deribit's defaults:
 *
 *   non_matching     500 credits a request, 50 000 held, 10 000/s
 *                    (20 requests/s, a burst of 100)
 *   matching         buy, sell, edit, cancel*, close_position: one a
 *                    request, tier 4: 20 held, 5/s
 *   subscribe        (public|private)/subscribe: 3 000 a request,
 *                    30 000 held, 10 000/s (a burst of 10)
 *   get_instruments  public/get_instruments: 10 000 a request, 500 000
 *                    held, 10 000/s
 *
 * An account on a higher matching tier (or a different non-matching
 * limit: private/get_account_summary says which) sets its own with
 * `rate_limit_pool NAME BURST REFILL;`, in the pool's units.
 */
#include "xg_venue_deribit_int.h"

#include <math.h>

static const struct {
    const char  *name;
    double       cost;      /* a request's */
    double       max;       /* Deribit's default burst */
    double       refill;    /* ... and refill per second */
} dr_pools[DR_POOLS] = {
    { "non_matching", 500, 50000, 10000 },
    { "matching", 1, 20, 5 },
    { "subscribe", 3000, 30000, 10000 },
    { "get_instruments", 10000, 500000, 10000 }
};

/* The methods of the matching engine (A6), paid from its own pool. */
static const char *const dr_matching[] = {
    "private/buy", "private/sell", "private/edit", "private/edit_by_label",
    "private/cancel", "private/cancel_all", "private/cancel_all_by_currency",
    "private/cancel_all_by_currency_pair", "private/cancel_all_by_instrument",
    "private/cancel_all_by_kind_or_type", "private/cancel_by_label",
    "private/cancel_quotes", "private/close_position",
    "private/mass_quote", NULL
};

/* See xg_session.h (ops->cost). */
unsigned
dr_cost(void *p, const struct xg_reg_req *q, double *cost)
{
    const char *m = q->method != NULL ? q->method : "";
    unsigned pool = DR_POOL_NON_MATCHING;
    int i;

    if (strcmp(m, "public/subscribe") == 0
        || strcmp(m, "private/subscribe") == 0)
    {
        pool = DR_POOL_SUBSCRIBE;
    } else if (strcmp(m, "public/get_instruments") == 0) {
        pool = DR_POOL_INSTRUMENTS;
    } else {
        for (i = 0; dr_matching[i] != NULL; i++) {
            if (strcmp(m, dr_matching[i]) == 0) {
                pool = DR_POOL_MATCHING;
                break;
            }
        }
    }
    *cost = dr_pools[pool].cost;
    return pool;
}

/* The session's budget conf from CF: its pools, Deribit's defaults for
   those it does not set. */
void
dr_budget_conf(const struct dr_conf *cf, struct xg_budget_conf *bc)
{
    unsigned i;

    memset(bc, 0, sizeof(*bc));
    bc->on = cf->rate_limit;
    bc->npools = DR_POOLS;
    for (i = 0; i < DR_POOLS; i++) {
        bc->pool[i].name = dr_pools[i].name;
        bc->pool[i].max = cf->rl_max[i] > 0 ? cf->rl_max[i] : dr_pools[i].max;
        bc->pool[i].refill = cf->rl_refill[i] > 0 ? cf->rl_refill[i]
                                                  : dr_pools[i].refill;
    }
}

/* A positive number of at most 1e12 from S, or -1. */
static double
dr_number(const char *s)
{
    char *end;
    double v = strtod(s, &end);

    if (end == s || *end != '\0' || !isfinite(v) || v <= 0 || v > 1e12) {
        return -1;
    }
    return v;
}

/* rate_limit_pool NAME BURST REFILL; (repeatable, once per pool) */
int
dr_set_rate_limit_pool(struct xg_conf *cf, const struct xg_conf_stmt *st,
    const struct xg_command *cmd, void *conf)
{
    struct dr_conf *c = conf;
    double max, refill;
    unsigned i;

    for (i = 0; i < DR_POOLS; i++) {
        if (strcmp(st->args[1], dr_pools[i].name) == 0) {
            break;
        }
    }
    if (i == DR_POOLS) {
        return xg_conf_error(cf, st, "\"rate_limit_pool\": the pool must be "
            "non_matching, matching, subscribe or get_instruments, not "
            "\"%s\"", st->args[1]);
    }
    if (c->rl_max[i] > 0) {
        return xg_conf_error(cf, st, "\"rate_limit_pool\": %s is set twice",
            dr_pools[i].name);
    }
    max = dr_number(st->args[2]);
    refill = dr_number(st->args[3]);
    if (max < 0 || refill < 0) {
        return xg_conf_error(cf, st, "\"rate_limit_pool\": the burst and the "
            "refill must be positive numbers, not \"%s\" \"%s\"",
            st->args[2], st->args[3]);
    }
    if (max < dr_pools[i].cost) {
        return xg_conf_error(cf, st, "\"rate_limit_pool\": %s: a burst of "
            "%g cannot pay for one request (%g)", dr_pools[i].name, max,
            dr_pools[i].cost);
    }
    c->rl_max[i] = max;
    c->rl_refill[i] = refill;
    return XG_OK;
}

/* The four pools for `exgate -T`, as they are in effect. */
void
dr_budget_dump(struct xg_conf_dump *d, const char *name,
    const struct dr_conf *c)
{
    struct xg_budget_conf bc;
    char a[32], b[32];
    unsigned i;

    dr_budget_conf(c, &bc);
    for (i = 0; i < DR_POOLS; i++) {
        snprintf(a, sizeof(a), "%g", bc.pool[i].max);
        snprintf(b, sizeof(b), "%g", bc.pool[i].refill);
        xg_conf_dump_words(d, name, bc.pool[i].name, a, b, NULL);
    }
}
