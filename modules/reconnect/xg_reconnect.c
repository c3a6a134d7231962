/*
 * xg_reconnect.c: the reconnect module. It owns the upstream-context
 * directives
 *
 *   reconnect NAME [{ ... }]     a policy from xg_reconnect_policies[]
 *   breaker [{ failures 10; window 60s; open 60s; }]
 *   stable 10s;                  ready this long resets the backoff
 *   max_attempts N;              give up after N failures in a row
 *
 * and the per-upstream supervisor (struct xg_reconnect) that combines the
 * policy, the breaker, `stable`, `max_attempts` and Retry-After into one
 * decision per failure. Pure: no sockets, no timers; see xg_reconnect.h.
 */
#include "xg_core.h"
#include "xg_conf.h"
#include "xg_reconnect.h"

#include <stddef.h>
#include <stdlib.h>
#include <string.h>

/* ---- the policy table ------------------------------------------------- */

const struct xg_reconnect_policy *const xg_reconnect_policies[] = {
    &xg_reconnect_exponential,
    &xg_reconnect_fixed,
    NULL
};

/* Returns the policy called NAME, or NULL. */
const struct xg_reconnect_policy *
xg_reconnect_policy_find(const char *name)
{
    const struct xg_reconnect_policy *const *p;

    for (p = xg_reconnect_policies; *p != NULL; p++) {
        if (strcmp((*p)->name, name) == 0) {
            return *p;
        }
    }
    return NULL;
}

/*
 * A uniform integer in [LO, HI]. The modulo bias is below 2^-40 for any
 * range of delays in milliseconds, far under what jitter cares about.
 */
uint64_t
xg_reconnect_rand_between(const struct xg_reconnect_env *env, uint64_t lo,
    uint64_t hi)
{
    uint64_t r, span;

    if (hi <= lo) {
        return lo;
    }
    r = env->rand(env->rand_arg);
    span = hi - lo + 1;
    if (span == 0) {            /* the whole 64-bit range */
        return r;
    }
    return lo + r % span;
}

/* ---- directives ------------------------------------------------------- */

static int set_reconnect(struct xg_conf *cf, const struct xg_conf_stmt *st,
    const struct xg_command *cmd, void *conf);
static int set_breaker(struct xg_conf *cf, const struct xg_conf_stmt *st,
    const struct xg_command *cmd, void *conf);

static const struct xg_conf_bounds stable_bounds = { 1, 86400000 };
static const struct xg_conf_bounds attempts_bounds = { 1, UINT32_MAX };
static const struct xg_conf_bounds failures_bounds = { 1, 10000 };
static const struct xg_conf_bounds breaker_ms_bounds = { 1, 86400000 };

static const struct xg_command reconnect_commands[] = {
    { "reconnect", XG_CONF_UPSTREAM | XG_CONF_TAKE1 | XG_CONF_OPTBLOCK,
      set_reconnect, 0, NULL },
    { "breaker", XG_CONF_UPSTREAM | XG_CONF_NOARGS | XG_CONF_OPTBLOCK,
      set_breaker, 0, NULL },
    { "stable", XG_CONF_UPSTREAM | XG_CONF_TAKE1, xg_conf_set_duration,
      offsetof(struct xg_upstream_conf, stable_ms), &stable_bounds },
    { "max_attempts", XG_CONF_UPSTREAM | XG_CONF_TAKE1, xg_conf_set_uint,
      offsetof(struct xg_upstream_conf, max_attempts), &attempts_bounds },
    XG_CONF_NULL_COMMAND
};

const struct xg_command xg_reconnect_breaker_commands[] = {
    { "failures", XG_CONF_BREAKER | XG_CONF_TAKE1, xg_conf_set_uint,
      offsetof(struct xg_breaker_conf, failures), &failures_bounds },
    { "window", XG_CONF_BREAKER | XG_CONF_TAKE1, xg_conf_set_duration,
      offsetof(struct xg_breaker_conf, window_ms), &breaker_ms_bounds },
    { "open", XG_CONF_BREAKER | XG_CONF_TAKE1, xg_conf_set_duration,
      offsetof(struct xg_breaker_conf, open_ms), &breaker_ms_bounds },
    XG_CONF_NULL_COMMAND
};

static int reconnect_dump(struct xg_conf_dump *d, const struct xg_command *cmd,
    const void *conf);

/* Listed in xg_modules[] (src/xg_module.c). */
const struct xg_module xg_reconnect_module = {
    "reconnect",
    reconnect_commands,
    reconnect_dump
};

static int
set_reconnect(struct xg_conf *cf, const struct xg_conf_stmt *st,
    const struct xg_command *cmd, void *conf)
{
    struct xg_upstream_conf *uc = conf;
    const struct xg_reconnect_policy *policy;
    const struct xg_command *tables[2];
    void *pc;
    int nerr = 0;

    policy = xg_reconnect_policy_find(st->args[1]);
    if (policy == NULL) {
        return xg_conf_error(cf, st, "unknown reconnect policy \"%s\" "
            "(exponential or fixed)", st->args[1]);
    }
    pc = xg_calloc(1, policy->conf_size);
    policy->init_conf(pc);
    if (st->has_block) {
        tables[0] = policy->commands;
        tables[1] = NULL;
        nerr = xg_conf_dispatch(cf, st->block, st->nblock, XG_CONF_RECONNECT,
            tables, pc);
    }
    if (nerr == 0 && policy->check_conf != NULL
        && policy->check_conf(cf, st, pc) != XG_OK)
    {
        nerr = 1;
    }
    if (nerr > 0) {
        free(pc);
        return XG_ERROR;
    }
    /* `reconnect` is not MULTI, so there is no earlier conf to free. */
    xg_conf_cleanup_add(cf, free, pc);
    uc->reconnect = policy;
    uc->reconnect_conf = pc;
    return XG_OK;
}

static int
set_breaker(struct xg_conf *cf, const struct xg_conf_stmt *st,
    const struct xg_command *cmd, void *conf)
{
    struct xg_upstream_conf *uc = conf;
    struct xg_breaker_conf bc;
    const struct xg_command *tables[2] = {
        xg_reconnect_breaker_commands, NULL
    };

    bc.enabled = 1;
    bc.failures = XG_BREAKER_DEFAULT_FAILURES;
    bc.window_ms = XG_BREAKER_DEFAULT_WINDOW_MS;
    bc.open_ms = XG_BREAKER_DEFAULT_OPEN_MS;
    if (st->has_block
        && xg_conf_dispatch(cf, st->block, st->nblock, XG_CONF_BREAKER,
            tables, &bc) > 0)
    {
        return XG_ERROR;
    }
    uc->breaker = bc;
    return XG_OK;
}

/*
 * The upstream-context directives for `exgate -T`, with the defaults the
 * supervisor applies (xg_reconnect_init()) written out: the exponential
 * policy when there is no `reconnect`, `stable` 10s when it is 0.
 */
static int
reconnect_dump(struct xg_conf_dump *d, const struct xg_command *cmd,
    const void *conf)
{
    const struct xg_upstream_conf *uc = conf;
    const struct xg_reconnect_policy *policy = uc->reconnect;
    const void *pc = uc->reconnect_conf;
    void *defaults = NULL;
    char buf[32];

    if (cmd->set == set_reconnect) {
        if (policy == NULL || pc == NULL) {
            policy = &xg_reconnect_exponential;
            defaults = xg_calloc(1, policy->conf_size);
            policy->init_conf(defaults);
            pc = defaults;
        }
        xg_conf_dump_begin(d);
        xg_conf_dump_word(d, cmd->name);
        xg_conf_dump_word(d, policy->name);
        xg_conf_dump_open(d);
        xg_conf_dump_table(d, policy->commands, XG_CONF_RECONNECT,
            policy->dump, pc);
        xg_conf_dump_close(d);
        free(defaults);
    } else if (cmd->set == set_breaker) {
        if (!uc->breaker.enabled) {
            xg_conf_dump_comment(d, "%s: off", cmd->name);
            return XG_OK;
        }
        xg_conf_dump_begin(d);
        xg_conf_dump_word(d, cmd->name);
        xg_conf_dump_open(d);
        xg_conf_dump_table(d, xg_reconnect_breaker_commands, XG_CONF_BREAKER,
            NULL, &uc->breaker);
        xg_conf_dump_close(d);
    } else if (cmd->offset == offsetof(struct xg_upstream_conf, stable_ms)
        && cmd->set == xg_conf_set_duration)
    {
        xg_conf_dump_words(d, cmd->name, xg_conf_fmt_duration(uc->stable_ms
            ? uc->stable_ms : XG_RECONNECT_DEFAULT_STABLE_MS, buf,
            sizeof(buf)), NULL);
    } else if (cmd->offset == offsetof(struct xg_upstream_conf, max_attempts)
        && cmd->set == xg_conf_set_uint && uc->max_attempts == 0)
    {
        xg_conf_dump_comment(d, "%s: not set (unlimited)", cmd->name);
    } else {
        return XG_AGAIN;
    }
    return XG_OK;
}

/* ---- the supervisor --------------------------------------------------- */

/* R's policy, stable and max_attempts from CONF. */
static void
rc_set_policy(struct xg_reconnect *r, const struct xg_upstream_conf *conf)
{
    free(r->owned_pconf);
    r->owned_pconf = NULL;
    r->policy = conf->reconnect;
    r->pconf = conf->reconnect_conf;
    if (r->policy == NULL || r->pconf == NULL) {
        /* No `reconnect`: exponential { 250ms; 30s; 2; full } by default. */
        r->policy = &xg_reconnect_exponential;
        r->owned_pconf = xg_calloc(1, r->policy->conf_size);
        r->policy->init_conf(r->owned_pconf);
        r->pconf = r->owned_pconf;
    }
    r->stable_ms = conf->stable_ms ? conf->stable_ms
        : XG_RECONNECT_DEFAULT_STABLE_MS;
    r->max_attempts = conf->max_attempts;
}

/* Sets R up from CONF (borrowed); see xg_reconnect.h. */
void
xg_reconnect_init(struct xg_reconnect *r, const struct xg_upstream_conf *conf)
{
    memset(r, 0, sizeof(*r));
    rc_set_policy(r, conf);
    xg_reconnect_breaker_init(&r->breaker, &conf->breaker);
}

/* See xg_reconnect.h. */
void
xg_reconnect_reconf(struct xg_reconnect *r,
    const struct xg_upstream_conf *conf)
{
    enum xg_breaker_state state = r->breaker.state;
    uint64_t opened_at = r->breaker.opened_at;
    unsigned trips = r->breaker.trips;

    rc_set_policy(r, conf);
    if (memcmp(&r->breaker.conf, &conf->breaker, sizeof(conf->breaker))
        == 0 || (!r->breaker.conf.enabled && !conf->breaker.enabled))
    {
        return;
    }
    xg_reconnect_breaker_free(&r->breaker);
    xg_reconnect_breaker_init(&r->breaker, &conf->breaker);
    r->breaker.trips = trips;
    if (r->breaker.state != XG_BREAKER_OFF
        && (state == XG_BREAKER_OPEN || state == XG_BREAKER_HALF_OPEN))
    {
        /* open stays open: its cool-down timer runs in the upstream */
        r->breaker.state = state;
        r->breaker.opened_at = opened_at;
    }
}

/* Frees what R allocated; R's conf is not touched. */
void
xg_reconnect_free(struct xg_reconnect *r)
{
    xg_reconnect_breaker_free(&r->breaker);
    free(r->owned_pconf);
    r->owned_pconf = NULL;
}

/* The ready connection lasted `stable`: reset the backoff (see .h). */
int
xg_reconnect_check_stable(struct xg_reconnect *r, uint64_t now_ms)
{
    if (!r->ready || r->stable_done || now_ms < r->ready_at
        || now_ms - r->ready_at < r->stable_ms)
    {
        return 0;
    }
    r->stable_done = 1;
    r->st.attempt = 0;
    r->st.prev_ms = 0;
    r->resets++;
    xg_reconnect_breaker_success(&r->breaker);
    return 1;
}

/* One failure: count it, ask the breaker and the policy (see .h). */
void
xg_reconnect_failed(struct xg_reconnect *r,
    const struct xg_reconnect_failure *f, const struct xg_reconnect_env *env,
    struct xg_reconnect_decision *d)
{
    uint64_t ra;
    int open;

    memset(d, 0, sizeof(*d));
    xg_reconnect_check_stable(r, env->now_ms);
    r->ready = 0;
    r->stable_done = 0;
    if (r->st.attempt < UINT32_MAX) {
        r->st.attempt++;
    }
    if (r->max_attempts != 0 && r->st.attempt >= r->max_attempts) {
        d->action = XG_RECONNECT_GIVE_UP;
        return;
    }
    open = xg_reconnect_breaker_failure(&r->breaker, env->now_ms);
    /* The policy runs even when the breaker opens, so its state moves on. */
    d->policy_ms = r->policy->next_delay(r->pconf, &r->st, env);
    if (open) {
        d->action = XG_RECONNECT_OPEN;
        d->delay_ms = r->breaker.conf.open_ms;
    } else {
        d->action = XG_RECONNECT_RETRY;
        d->delay_ms = d->policy_ms;
    }
    if (f != NULL && f->retry_after_s >= 0) {
        ra = (uint64_t) f->retry_after_s;
        if (ra > XG_RECONNECT_MAX_RETRY_AFTER_S) {
            ra = XG_RECONNECT_MAX_RETRY_AFTER_S;
            d->clamped = 1;
        }
        ra *= 1000;
        if (ra > d->delay_ms) {
            d->delay_ms = ra;
            d->retry_after = 1;
        }
    }
}

/* The connection is READY from NOW on. */
void
xg_reconnect_ready(struct xg_reconnect *r, uint64_t now_ms)
{
    r->ready = 1;
    r->stable_done = 0;
    r->ready_at = now_ms;
}

/* The breaker's cool-down is over; the next attempt is its trial. */
void
xg_reconnect_trial(struct xg_reconnect *r)
{
    xg_reconnect_breaker_trial(&r->breaker);
}

/* The policy's name ("exponential", "fixed"). */
const char *
xg_reconnect_policy_name(const struct xg_reconnect *r)
{
    return r->policy->name;
}

/* The breaker's state name for /status. */
const char *
xg_reconnect_breaker_name(const struct xg_reconnect *r)
{
    return xg_reconnect_breaker_state_name(r->breaker.state);
}
