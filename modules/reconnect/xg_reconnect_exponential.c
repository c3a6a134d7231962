/*
 * xg_reconnect_exponential.c: exponential backoff with jitter.
 *
 *   reconnect exponential { initial 250ms; max 30s; multiplier 2; jitter full; }
 *
 * The formulas are those of the AWS Architecture Blog post "Exponential
 * Backoff And Jitter" (Marc Brooker, 2015), with attempt n counted from 1:
 *
 *   base_n        = min(max, initial * multiplier^(n-1))
 *   none          = base_n
 *   full          = random_between(0, base_n)
 *   equal         = base_n / 2 + random_between(0, base_n / 2)
 *   decorrelated  = min(max, random_between(initial, prev * 3)),
 *                   prev = initial before the first delay
 *
 * Decorrelated jitter grows by its own factor of 3, as in the post; the
 * multiplier does not apply to it.
 */
#include "xg_core.h"
#include "xg_conf.h"
#include "xg_reconnect.h"

#include <math.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum xg_jitter {
    XG_JITTER_NONE = 0,
    XG_JITTER_FULL,
    XG_JITTER_EQUAL,
    XG_JITTER_DECORRELATED
};

static const char *const jitter_names[] = {
    "none", "full", "equal", "decorrelated"
};

struct xg_reconnect_exponential_conf {
    uint64_t  initial_ms;
    uint64_t  max_ms;
    double    multiplier;
    int       jitter;       /* enum xg_jitter */
};

static int set_multiplier(struct xg_conf *cf, const struct xg_conf_stmt *st,
    const struct xg_command *cmd, void *conf);
static int set_jitter(struct xg_conf *cf, const struct xg_conf_stmt *st,
    const struct xg_command *cmd, void *conf);

/* A day: longer waits are a conf mistake, not a policy. */
static const struct xg_conf_bounds delay_bounds = { 1, 86400000 };

static const struct xg_command exponential_commands[] = {
    { "initial", XG_CONF_RECONNECT | XG_CONF_TAKE1, xg_conf_set_duration,
      offsetof(struct xg_reconnect_exponential_conf, initial_ms),
      &delay_bounds },
    { "max", XG_CONF_RECONNECT | XG_CONF_TAKE1, xg_conf_set_duration,
      offsetof(struct xg_reconnect_exponential_conf, max_ms), &delay_bounds },
    { "multiplier", XG_CONF_RECONNECT | XG_CONF_TAKE1, set_multiplier,
      offsetof(struct xg_reconnect_exponential_conf, multiplier), NULL },
    { "jitter", XG_CONF_RECONNECT | XG_CONF_TAKE1, set_jitter,
      offsetof(struct xg_reconnect_exponential_conf, jitter), NULL },
    XG_CONF_NULL_COMMAND
};

static int
set_multiplier(struct xg_conf *cf, const struct xg_conf_stmt *st,
    const struct xg_command *cmd, void *conf)
{
    double *p = (double *) ((char *) conf + cmd->offset);
    const char *s = st->args[1];
    char *end;
    double v;

    /* strtod alone would take "inf", "nan", hex and leading spaces. */
    if (strspn(s, "0123456789.") != strlen(s) || *s == '\0') {
        return xg_conf_error(cf, st, "\"multiplier\": \"%s\" is not a "
            "number", s);
    }
    v = strtod(s, &end);
    if (*end != '\0' || !(v >= 1.0 && v <= 100.0)) {
        return xg_conf_error(cf, st, "\"multiplier\": %s is out of range "
            "(1 to 100)", s);
    }
    *p = v;
    return XG_OK;
}

static int
set_jitter(struct xg_conf *cf, const struct xg_conf_stmt *st,
    const struct xg_command *cmd, void *conf)
{
    int *p = (int *) ((char *) conf + cmd->offset);
    size_t i;

    for (i = 0; i < XG_NELEM(jitter_names); i++) {
        if (strcmp(st->args[1], jitter_names[i]) == 0) {
            *p = (int) i;
            return XG_OK;
        }
    }
    return xg_conf_error(cf, st, "\"jitter\" must be none, full, equal or "
        "decorrelated, not \"%s\"", st->args[1]);
}

static void
exponential_init_conf(void *conf)
{
    struct xg_reconnect_exponential_conf *c = conf;

    c->initial_ms = 250;
    c->max_ms = 30000;
    c->multiplier = 2.0;
    c->jitter = XG_JITTER_FULL;
}

static int
exponential_check_conf(struct xg_conf *cf, const struct xg_conf_stmt *st,
    void *conf)
{
    struct xg_reconnect_exponential_conf *c = conf;

    if (c->max_ms < c->initial_ms) {
        return xg_conf_error(cf, st, "reconnect exponential: \"max\" "
            "(%llums) is less than \"initial\" (%llums)",
            (unsigned long long) c->max_ms,
            (unsigned long long) c->initial_ms);
    }
    return XG_OK;
}

/* min(max, initial * multiplier^(attempt-1)), without overflow. */
static uint64_t
exponential_base(const struct xg_reconnect_exponential_conf *c,
    unsigned attempt)
{
    double d;

    if (attempt <= 1) {
        return c->initial_ms < c->max_ms ? c->initial_ms : c->max_ms;
    }
    d = (double) c->initial_ms * pow(c->multiplier, (double) (attempt - 1));
    if (!(d < (double) c->max_ms)) {    /* also catches inf */
        return c->max_ms;
    }
    return (uint64_t) d;
}

static uint64_t
exponential_next_delay(const void *conf, struct xg_reconnect_state *state,
    const struct xg_reconnect_env *env)
{
    const struct xg_reconnect_exponential_conf *c = conf;
    uint64_t base, prev, hi, d;

    switch (c->jitter) {
    case XG_JITTER_FULL:
        base = exponential_base(c, state->attempt);
        d = xg_reconnect_rand_between(env, 0, base);
        break;
    case XG_JITTER_EQUAL:
        base = exponential_base(c, state->attempt);
        d = base / 2 + xg_reconnect_rand_between(env, 0, base / 2);
        break;
    case XG_JITTER_DECORRELATED:
        prev = state->prev_ms ? state->prev_ms : c->initial_ms;
        hi = prev > UINT64_MAX / 3 ? UINT64_MAX : prev * 3;
        if (hi < c->initial_ms) {
            hi = c->initial_ms;
        }
        d = xg_reconnect_rand_between(env, c->initial_ms, hi);
        if (d > c->max_ms) {
            d = c->max_ms;
        }
        break;
    default:
        d = exponential_base(c, state->attempt);
        break;
    }
    state->prev_ms = d;
    return d;
}

static void
exponential_describe(const void *conf, char *buf, size_t len)
{
    const struct xg_reconnect_exponential_conf *c = conf;

    snprintf(buf, len, "exponential initial %llums max %llums multiplier %g "
        "jitter %s", (unsigned long long) c->initial_ms,
        (unsigned long long) c->max_ms, c->multiplier,
        jitter_names[c->jitter]);
}

/* multiplier and jitter for `exgate -T`; initial and max are generic. */
static int
exponential_dump(struct xg_conf_dump *d, const struct xg_command *cmd,
    const void *conf)
{
    const struct xg_reconnect_exponential_conf *c = conf;
    char buf[32];
    int prec;

    if (cmd->set == set_multiplier) {
        /* the shortest text that reads back as the same double */
        for (prec = 1; prec < 17; prec++) {
            snprintf(buf, sizeof(buf), "%.*f", prec, c->multiplier);
            if (strtod(buf, NULL) == c->multiplier) {
                break;
            }
        }
        /* "2.0" -> "2": set_multiplier takes digits and one dot */
        while (strchr(buf, '.') != NULL && buf[strlen(buf) - 1] == '0') {
            buf[strlen(buf) - 1] = '\0';
        }
        if (buf[strlen(buf) - 1] == '.') {
            buf[strlen(buf) - 1] = '\0';
        }
        xg_conf_dump_words(d, cmd->name, buf, NULL);
    } else if (cmd->set == set_jitter) {
        xg_conf_dump_words(d, cmd->name, jitter_names[c->jitter], NULL);
    } else {
        return XG_AGAIN;
    }
    return XG_OK;
}

/* The exponential policy, listed in xg_reconnect_policies[]. */
const struct xg_reconnect_policy xg_reconnect_exponential = {
    "exponential",
    exponential_commands,
    sizeof(struct xg_reconnect_exponential_conf),
    exponential_init_conf,
    exponential_check_conf,
    exponential_next_delay,
    exponential_describe,
    exponential_dump
};
