/*
 * xg_reconnect_fixed.c: the same delay before every attempt.
 *
 *   reconnect fixed { delay 1s; }
 *
 * No jitter: a fixed delay is for tests and for single upstreams where
 * a thundering herd cannot happen.
 */
#include "xg_core.h"
#include "xg_conf.h"
#include "xg_reconnect.h"

#include <stddef.h>
#include <stdio.h>

struct xg_reconnect_fixed_conf {
    uint64_t  delay_ms;
};

static const struct xg_conf_bounds delay_bounds = { 1, 86400000 };

static const struct xg_command fixed_commands[] = {
    { "delay", XG_CONF_RECONNECT | XG_CONF_TAKE1, xg_conf_set_duration,
      offsetof(struct xg_reconnect_fixed_conf, delay_ms), &delay_bounds },
    XG_CONF_NULL_COMMAND
};

static void
fixed_init_conf(void *conf)
{
    struct xg_reconnect_fixed_conf *c = conf;

    c->delay_ms = 1000;
}

static uint64_t
fixed_next_delay(const void *conf, struct xg_reconnect_state *state,
    const struct xg_reconnect_env *env)
{
    const struct xg_reconnect_fixed_conf *c = conf;

    state->prev_ms = c->delay_ms;
    return c->delay_ms;
}

static void
fixed_describe(const void *conf, char *buf, size_t len)
{
    const struct xg_reconnect_fixed_conf *c = conf;

    snprintf(buf, len, "fixed delay %llums", (unsigned long long) c->delay_ms);
}

/* The fixed policy, listed in xg_reconnect_policies[]. */
const struct xg_reconnect_policy xg_reconnect_fixed = {
    "fixed",
    fixed_commands,
    sizeof(struct xg_reconnect_fixed_conf),
    fixed_init_conf,
    NULL,
    fixed_next_delay,
    fixed_describe,
    NULL
};
