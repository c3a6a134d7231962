/*
 * xg_reconnect_breaker.c: the circuit breaker that wraps any reconnect
 * policy.
 *
 *   breaker { failures 10; window 60s; open 60s; }
 *
 *   CLOSED --`failures` failures within `window`--> OPEN
 *   OPEN --after `open`--> HALF_OPEN (exactly one trial connection)
 *   HALF_OPEN --the trial stays ready for `stable`--> CLOSED
 *   HALF_OPEN --the trial fails, before or after ready--> OPEN
 *
 * The directives are read by modules/reconnect/xg_reconnect.c into
 * struct xg_breaker_conf; this file is the state machine only, pure: the
 * caller passes the time in.
 */
#include "xg_core.h"
#include "xg_reconnect.h"

#include <stdlib.h>
#include <string.h>

/* Sets B up from CONF; allocates the failure ring when enabled. */
void
xg_reconnect_breaker_init(struct xg_breaker *b,
    const struct xg_breaker_conf *conf)
{
    memset(b, 0, sizeof(*b));
    b->conf = *conf;
    if (!conf->enabled || conf->failures == 0) {
        b->conf.enabled = 0;
        b->state = XG_BREAKER_OFF;
        return;
    }
    b->state = XG_BREAKER_CLOSED;
    b->fail_at = xg_calloc(conf->failures, sizeof(*b->fail_at));
}

/* Frees the ring. B may be initialised again afterwards. */
void
xg_reconnect_breaker_free(struct xg_breaker *b)
{
    free(b->fail_at);
    b->fail_at = NULL;
}

static void
breaker_clear(struct xg_breaker *b)
{
    b->nfail = 0;
    b->head = 0;
}

static void
breaker_open(struct xg_breaker *b, uint64_t now_ms)
{
    b->state = XG_BREAKER_OPEN;
    b->opened_at = now_ms;
    b->trips++;
    breaker_clear(b);
}

/*
 * Records a failure at NOW; returns 1 when the breaker is open after it.
 * The ring holds the times of the last `failures` failures, so the
 * oldest of them is the one about to be overwritten: N failures fall
 * within the window when the newest minus that oldest is <= window.
 */
int
xg_reconnect_breaker_failure(struct xg_breaker *b, uint64_t now_ms)
{
    uint64_t oldest;

    switch (b->state) {
    case XG_BREAKER_OFF:
        return 0;
    case XG_BREAKER_OPEN:
        return 1;
    case XG_BREAKER_HALF_OPEN:
        breaker_open(b, now_ms);
        return 1;
    case XG_BREAKER_CLOSED:
        break;
    }
    b->fail_at[b->head] = now_ms;
    b->head = (b->head + 1) % b->conf.failures;
    if (b->nfail < b->conf.failures) {
        b->nfail++;
    }
    if (b->nfail == b->conf.failures) {
        oldest = b->fail_at[b->head];
        if (now_ms - oldest <= b->conf.window_ms) {
            breaker_open(b, now_ms);
            return 1;
        }
    }
    return 0;
}

/* OPEN -> HALF_OPEN: the caller starts exactly one trial connection. */
void
xg_reconnect_breaker_trial(struct xg_breaker *b)
{
    if (b->state == XG_BREAKER_OPEN) {
        b->state = XG_BREAKER_HALF_OPEN;
    }
}

/* A connection proved stable: CLOSED with an empty history. */
void
xg_reconnect_breaker_success(struct xg_breaker *b)
{
    if (b->state == XG_BREAKER_OFF) {
        return;
    }
    b->state = XG_BREAKER_CLOSED;
    breaker_clear(b);
}

/* "off", "closed", "open", "half-open": as shown in /status. */
const char *
xg_reconnect_breaker_state_name(enum xg_breaker_state s)
{
    switch (s) {
    case XG_BREAKER_CLOSED:
        return "closed";
    case XG_BREAKER_OPEN:
        return "open";
    case XG_BREAKER_HALF_OPEN:
        return "half-open";
    case XG_BREAKER_OFF:
        break;
    }
    return "off";
}
