/*
 * xg_reconnect.h: reconnect policies (modules/reconnect/) and the
 * supervisor state that wraps them for one upstream: the attempt count,
 * the `stable` reset, `max_attempts`, Retry-After, and the circuit breaker.
 *
 * Everything here is pure, as DESIGN.md section 8 asks: the caller passes
 * the clock and the random source in (struct xg_reconnect_env) and gets a
 * delay out. No sockets, no timers, no event base; the upstream
 * (src/xg_upstream.c) turns the decisions into timers. That is what makes
 * the unit tests (t/unit/check_xg_reconnect.c) deterministic.
 *
 * A policy is data, like an nginx module: a name, a table of directives
 * for the `reconnect NAME { ... }` block (context XG_CONF_RECONNECT), the
 * size and defaults of its conf, and next_delay(). Policy confs are flat
 * (no pointers inside): the `reconnect` directive registers free() for
 * one with xg_conf_cleanup_add().
 */
#ifndef XG_RECONNECT_H
#define XG_RECONNECT_H

#include "xg_core.h"
#include "xg_conf.h"

#include <stdint.h>

/* A random source: 64 uniformly distributed bits per call. */
typedef uint64_t (*xg_rand_cb)(void *arg);

/* What the caller lends a policy for one decision. */
struct xg_reconnect_env {
    uint64_t     now_ms;     /* monotonic milliseconds */
    xg_rand_cb   rand;
    void        *rand_arg;
};

/* Why the last attempt or connection failed. */
struct xg_reconnect_failure {
    const char  *reason;        /* for logs; may be NULL */
    int          http_status;   /* non-101 upgrade answer (429, 503), else 0 */
    int          retry_after_s; /* its Retry-After in seconds, else -1 */
};

/* What a policy keeps between two delays of one upstream. */
struct xg_reconnect_state {
    unsigned     attempt;    /* failures since the last reset; >= 1 in next_delay */
    uint64_t     prev_ms;    /* the delay it returned last time, 0 after a reset */
};

struct xg_reconnect_policy {
    const char               *name;       /* as in `reconnect NAME` */
    const struct xg_command  *commands;   /* context XG_CONF_RECONNECT */
    size_t                    conf_size;
    void   (*init_conf)(void *conf);      /* writes the defaults */
    /* Cross-field checks once the block is read; XG_OK or XG_ERROR. */
    int    (*check_conf)(struct xg_conf *cf, const struct xg_conf_stmt *st,
        void *conf);
    /* The delay before attempt number state->attempt + 1. */
    uint64_t (*next_delay)(const void *conf, struct xg_reconnect_state *state,
        const struct xg_reconnect_env *env);
    /* A short description of CONF for the start-up log. */
    void   (*describe)(const void *conf, char *buf, size_t len);
    /* Its directives for `exgate -T` (NULL: generic setters only). */
    xg_conf_dump_cb dump;
};

/* The policies compiled in (NULL-terminated), and a lookup by name. */
extern const struct xg_reconnect_policy *const xg_reconnect_policies[];
const struct xg_reconnect_policy *xg_reconnect_policy_find(const char *name);

extern const struct xg_reconnect_policy xg_reconnect_exponential;
extern const struct xg_reconnect_policy xg_reconnect_fixed;

/* The module that owns the upstream-context directives (xg_module.c). */
extern const struct xg_module xg_reconnect_module;
/* The directives inside `breaker { ... }` (context XG_CONF_BREAKER). */
extern const struct xg_command xg_reconnect_breaker_commands[];

/* Defaults when an upstream has no `reconnect` or `stable` directive. */
#define XG_RECONNECT_DEFAULT_STABLE_MS  10000
#define XG_BREAKER_DEFAULT_FAILURES     10
#define XG_BREAKER_DEFAULT_WINDOW_MS    60000
#define XG_BREAKER_DEFAULT_OPEN_MS      60000
/* Retry-After beyond this is clamped (and the clamp logged by the caller). */
#define XG_RECONNECT_MAX_RETRY_AFTER_S  3600

/* A uniform integer in [lo, hi] from ENV's random source. */
uint64_t xg_reconnect_rand_between(const struct xg_reconnect_env *env,
    uint64_t lo, uint64_t hi);

/* ---- the circuit breaker (modules/reconnect/xg_reconnect_breaker.c) ---- */

enum xg_breaker_state {
    XG_BREAKER_OFF = 0,     /* not configured */
    XG_BREAKER_CLOSED,
    XG_BREAKER_OPEN,
    XG_BREAKER_HALF_OPEN    /* one trial connection in flight */
};

struct xg_breaker {
    struct xg_breaker_conf  conf;
    enum xg_breaker_state   state;
    uint64_t               *fail_at;   /* ring: times of the last conf.failures failures */
    unsigned                nfail;
    unsigned                head;      /* next slot to write */
    uint64_t                opened_at;
    unsigned                trips;     /* times it opened */
};

/* Sets B up from CONF (disabled when !conf->enabled). Allocates the ring. */
void xg_reconnect_breaker_init(struct xg_breaker *b,
    const struct xg_breaker_conf *conf);
void xg_reconnect_breaker_free(struct xg_breaker *b);
/*
 * Records one failure at NOW. Returns 1 when the breaker is (now) open:
 * N failures within the window while closed, or any failure of the
 * half-open trial. Returns 0 when it stays closed or is off.
 */
int xg_reconnect_breaker_failure(struct xg_breaker *b, uint64_t now_ms);
/* The cool-down is over: OPEN -> HALF_OPEN (one trial). */
void xg_reconnect_breaker_trial(struct xg_breaker *b);
/* A connection stayed ready for `stable`: -> CLOSED, history cleared. */
void xg_reconnect_breaker_success(struct xg_breaker *b);
const char *xg_reconnect_breaker_state_name(enum xg_breaker_state s);

/* ---- the per-upstream supervisor (modules/reconnect/xg_reconnect.c) ---- */

enum xg_reconnect_action {
    XG_RECONNECT_RETRY = 1, /* try again after delay_ms */
    XG_RECONNECT_OPEN,      /* breaker open: one trial after delay_ms */
    XG_RECONNECT_GIVE_UP    /* max_attempts reached: no more attempts */
};

struct xg_reconnect_decision {
    enum xg_reconnect_action action;
    uint64_t                 delay_ms;
    uint64_t                 policy_ms;    /* what the policy alone said */
    int                      retry_after;  /* the delay is the Retry-After */
    int                      clamped;      /* Retry-After was clamped */
};

struct xg_reconnect {
    const struct xg_reconnect_policy *policy;
    const void                       *pconf;
    void                             *owned_pconf;  /* the defaults, if we made them */
    uint64_t                          stable_ms;
    unsigned                          max_attempts;  /* 0: unlimited */

    struct xg_reconnect_state         st;
    struct xg_breaker                 breaker;
    int                               ready;         /* connection is READY */
    int                               stable_done;   /* and `stable` has reset */
    uint64_t                          ready_at;
    unsigned                          resets;        /* times `stable` reset the backoff */
};

/*
 * Sets R up from an upstream conf: its policy (exponential with the
 * defaults when none is configured), breaker, stable (0 in the conf means
 * the default) and max_attempts. Borrows CONF for R's lifetime.
 */
void xg_reconnect_init(struct xg_reconnect *r,
    const struct xg_upstream_conf *conf);
void xg_reconnect_free(struct xg_reconnect *r);

/*
 * A reload: R follows CONF from now on (borrowed, as for init) and keeps
 * where it stands: the attempt count and backoff, the ready and stable
 * marks, and the breaker's state and trips (its failure history is
 * cleared when the breaker's settings changed). The next delay, reset or
 * breaker decision uses CONF.
 */
void xg_reconnect_reconf(struct xg_reconnect *r,
    const struct xg_upstream_conf *conf);

/*
 * A connection attempt failed, or a connection went down, at ENV->now_ms.
 * A connection that had been ready for `stable` resets the backoff first;
 * then the attempt counts, the breaker sees the failure, and the policy
 * picks the delay (at least Retry-After when the failure carries one).
 * Writes the decision to *D.
 */
void xg_reconnect_failed(struct xg_reconnect *r,
    const struct xg_reconnect_failure *f, const struct xg_reconnect_env *env,
    struct xg_reconnect_decision *d);

/* The connection reached READY at NOW. */
void xg_reconnect_ready(struct xg_reconnect *r, uint64_t now_ms);

/*
 * Checks whether the ready connection has been up for `stable` at NOW;
 * if so resets the backoff and closes the breaker. Returns 1 when this
 * call reset, else 0. The upstream calls it from a timer; failed() calls
 * it too, so the outcome does not depend on timer order.
 */
int xg_reconnect_check_stable(struct xg_reconnect *r, uint64_t now_ms);

/* The breaker's cool-down is over: the next attempt is the trial. */
void xg_reconnect_trial(struct xg_reconnect *r);

/* The policy's name and the breaker state, for /status and logs. */
const char *xg_reconnect_policy_name(const struct xg_reconnect *r);
const char *xg_reconnect_breaker_name(const struct xg_reconnect *r);

#endif
