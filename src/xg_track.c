/*
 * xg_track.c: per-channel continuity trackers (see xg_track.h): the
 * hold/fetch/release/give-up cycle, once, for every kind of channel.
 */
#include "xg_track.h"
#include "xg_log.h"
#include "xg_venue.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/event.h>

/* A request refused for now, waiting on its own timer to be sent again. */
struct xg_track_retry {
    struct xg_track        *t;
    struct xg_reg_req      *q;
    struct xg_timer        *ev;
    struct xg_track_retry  *prev, *next;
};

static const char *const track_state_names[] = {
    "live", "gap", "fetching", "held"
};

const char *
xg_track_state_name(enum xg_track_state s)
{
    return (size_t) s < XG_NELEM(track_state_names) ? track_state_names[s]
                                                    : "?";
}

/*
 * Every transition goes through here: `upstream U: CHANNEL: KIND from ->
 * to (why)`. The ones around a fetch are logged at info; a channel going
 * into a gap and out of it with nothing to fetch (every book at every
 * reconnect) only at debug.
 */
static void
track_set(struct xg_track *t, enum xg_track_state to, const char *why)
{
    enum xg_track_state from = t->state;
    int level = from >= XG_TRACK_FETCHING || to >= XG_TRACK_FETCHING
                ? XG_LOG_INFO : XG_LOG_DEBUG;

    t->state = to;
    if (xg_log_level >= level) {
        xg_track_log(level, t, "%s: %s %s -> %s (%s)",
            t->name, t->kind->name, xg_track_state_name(from),
            xg_track_state_name(to), why);
    }
}

/* See xg_track.h. */
void
xg_track_log(int level, const struct xg_track *t, const char *fmt, ...)
{
    struct xg_log_ctx ctx;
    va_list ap;

    if (level > xg_log_level) {
        return;
    }
    if (t->env->up != NULL) {
        xg_upstream_log_ctx(t->env->up, &ctx);
    } else {
        memset(&ctx, 0, sizeof(ctx));
        ctx.upstream = t->env->name;
    }
    va_start(ap, fmt);
    xg_log_atv(level, &ctx, fmt, ap);
    va_end(ap);
}

/* Drops the requests waiting for their retry (the fetch is over). */
static void
track_retries_cancel(struct xg_track *t)
{
    struct xg_track_retry *r;

    while ((r = t->retry) != NULL) {
        t->retry = r->next;
        xg_timer_free(r->ev);
        xg_registry_req_free(r->q);
        free(r);
    }
}

static void
track_on_retry(evutil_socket_t fd, short what, void *arg)
{
    struct xg_track_retry *r = arg;
    struct xg_track *t = r->t;
    struct xg_reg_req *q = r->q;

    if (r->prev != NULL) {
        r->prev->next = r->next;
    } else {
        t->retry = r->next;
    }
    if (r->next != NULL) {
        r->next->prev = r->prev;
    }
    xg_timer_free(r->ev);
    free(r);
    t->env->retries++;
    t->env->send(t->env->ctx, t->chan, q);
}

static void
track_hold(struct xg_track *t, const char *data, size_t len)
{
    if (t->nheld == t->held_cap) {
        t->held_cap = t->held_cap ? t->held_cap * 2 : 8;
        t->held = xg_realloc(t->held, t->held_cap * sizeof(*t->held));
    }
    t->held[t->nheld].p = data != NULL ? xg_strndup(data, len) : NULL;
    t->held[t->nheld].len = len;
    t->held[t->nheld].since_ms = 0;
    t->nheld++;
}

/* A hole among the held messages, at its place (xg_track_hole()). */
static void
track_hold_hole(struct xg_track *t, uint64_t since_ms)
{
    track_hold(t, NULL, 0);
    t->held[t->nheld - 1].since_ms = since_ms;
}

/*
 * Passes each held message through the kind's filter again, in order, and
 * fans out those that pass. The list is taken first, so that a message
 * may start a new fetch and the ones after it be held anew.
 */
static void
track_release(struct xg_track *t)
{
    struct xg_track_msg *m = t->held;
    size_t i, n = t->nheld;

    t->held = NULL;
    t->nheld = t->held_cap = 0;
    for (i = 0; i < n; i++) {
        if (m[i].p == NULL) {
            /* a hole in the stream; in a gap already (the connection
               went): the resume fetches past it */
            if (t->state != XG_TRACK_GAP) {
                xg_track_hole(t, m[i].since_ms, "a hole in the stream "
                    "while fetching");
            }
            continue;
        }
        if (xg_track_message(t, m[i].p, m[i].len)) {
            xg_track_fanout(t, m[i].p, m[i].len);
        }
        free(m[i].p);
    }
    free(m);
}

/* LIVE -> GAP: what follows may have missed something. */
static void
track_broke(struct xg_track *t, uint64_t since_ms, const char *why)
{
    if (t->state == XG_TRACK_LIVE) {
        t->gap_from_ms = since_ms;
        track_set(t, XG_TRACK_GAP, why);
    }
}

/* -> FETCHING, if the kind sends anything for SEQ; returns 1 then. */
static int
track_fetch(struct xg_track *t, const struct xg_track_seq *seq,
    const char *why)
{
    if (t->kind->fetch == NULL) {
        return 0;
    }
    t->tag++;       /* answers to an earlier fetch no longer count */
    t->pending = 0;
    t->failed = 0;
    t->kind->fetch(t, seq);
    if (t->pending == 0) {
        return 0;
    }
    track_set(t, XG_TRACK_FETCHING, why);
    return 1;
}

/* FETCHING -> LIVE: what was missing is delivered; now what was held. */
static void
track_done(struct xg_track *t)
{
    track_set(t, XG_TRACK_LIVE, "fetched");
    track_release(t);
}

/*
 * FETCHING or HELD -> LIVE without what was missing: the subscribers get
 * a gap notice ("KIND WHAT WHY": "trades backfill failed"), then the held
 * messages.
 */
static void
track_give_up(struct xg_track *t, const char *why)
{
    char reason[96];

    track_retries_cancel(t);
    snprintf(reason, sizeof(reason), "%s %s %s", t->kind->name,
        t->kind->what, why);
    xg_track_notice(t, reason);
    track_set(t, XG_TRACK_LIVE, reason);
    track_release(t);
}

/* 1 when Q belongs to the fetch T waits for. */
static int
track_current(const struct xg_track *t, const struct xg_reg_req *q)
{
    return t->state == XG_TRACK_FETCHING && t->pending > 0
           && q->tag == t->tag;
}

struct xg_track *
xg_track_new(const struct xg_track_kind *kind, struct xg_track_env *env,
    const char *name, void *chan)
{
    struct xg_track *t;
    void *data = kind->create(name);

    if (data == NULL) {
        return NULL;
    }
    t = xg_calloc(1, sizeof(*t));
    t->kind = kind;
    t->env = env;
    t->data = data;
    t->chan = chan;
    t->name = xg_strdup(name);
    return t;
}

void
xg_track_free(struct xg_track *t)
{
    size_t i;

    if (t == NULL) {
        return;
    }
    track_retries_cancel(t);
    for (i = 0; i < t->nheld; i++) {
        free(t->held[i].p);
    }
    free(t->held);
    t->kind->free(t->data);
    free(t->name);
    free(t);
}

int
xg_track_message(struct xg_track *t, const char *data, size_t len)
{
    struct xg_track_seq seq;
    enum xg_track_verdict v;

    if (t->state == XG_TRACK_FETCHING || t->state == XG_TRACK_HELD) {
        if (t->nheld < t->env->max_held) {
            track_hold(t, data, len);
            return 0;
        }
        xg_track_log(XG_LOG_WARN, t, "%s: %s too slow, releasing the %zu "
            "messages held; what it was fetching stays missing", t->name,
            t->kind->what, t->nheld);
        track_give_up(t, "too slow");
        /* this one goes after the held ones, through the same filter */
    }
    memset(&seq, 0, sizeof(seq));
    v = t->kind->parse(t, data, len, &seq);
    if (v == XG_TRACK_FETCH) {
        if (!track_fetch(t, &seq, "a gap in the data")) {
            return 1;       /* nothing to fetch it with: as it is */
        }
        track_hold(t, data, len);
        return 0;
    }
    if (seq.lined && t->state == XG_TRACK_GAP) {
        track_set(t, XG_TRACK_LIVE, "in line");
    }
    return v == XG_TRACK_PASS;
}

void
xg_track_down(struct xg_track *t, uint64_t since_ms)
{
    if (t->state == XG_TRACK_FETCHING) {
        /* its requests died with the connection */
        track_retries_cancel(t);
        if (t->nheld > 0 && (t->kind->flags & XG_TRACK_KEEP_HELD)) {
            track_set(t, XG_TRACK_HELD, "connection lost");
        } else {
            track_set(t, XG_TRACK_GAP, "connection lost");
            track_release(t);
        }
    }
    track_broke(t, since_ms, "connection lost");
    if (t->kind->lost != NULL) {
        t->kind->lost(t);
    }
}

void
xg_track_gap(struct xg_track *t, uint64_t since_ms, const char *why)
{
    track_broke(t, since_ms, why);
    if (t->kind->lost != NULL) {
        t->kind->lost(t);
    }
}

void
xg_track_hole(struct xg_track *t, uint64_t since_ms, const char *why)
{
    if (t->state == XG_TRACK_FETCHING || t->state == XG_TRACK_HELD) {
        track_hold_hole(t, since_ms);
        return;
    }
    xg_track_gap(t, since_ms, why);
    xg_track_resume(t, why);
}

void
xg_track_resume(struct xg_track *t, const char *why)
{
    if (t->state != XG_TRACK_GAP && t->state != XG_TRACK_HELD) {
        return;
    }
    if (!track_fetch(t, NULL, why) && t->state == XG_TRACK_HELD) {
        track_set(t, XG_TRACK_GAP, "nothing to fetch");
        track_release(t);
    }
}

void
xg_track_send(struct xg_track *t, struct xg_reg_req *q)
{
    q->tag = t->tag;
    t->pending++;
    t->env->send(t->env->ctx, t->chan, q);
}

void
xg_track_answer(struct xg_track *t, const struct xg_reg_req *q,
    const struct xg_jspan *result, const struct xg_jspan *error)
{
    if (!track_current(t, q)) {
        return;
    }
    t->env->answers += result->p != NULL;
    t->pending--;
    if (t->kind->apply(t, q, result, error) != XG_OK) {
        xg_track_log(XG_LOG_WARN, t, "%s: %s failed (%s): %.*s",
            t->name, t->kind->what, q->method ? q->method : "?",
            error->p ? (int) (error->len > 200 ? 200 : error->len) : 9,
            error->p ? error->p : "no result");
        t->failed++;
    }
    if (t->pending > 0) {
        return;
    }
    if (t->failed > 0) {
        track_give_up(t, "failed");
        return;
    }
    if (t->kind->complete != NULL) {
        t->kind->complete(t);
        if (t->pending > 0) {
            return;     /* another round */
        }
    }
    track_done(t);
}

int
xg_track_retry(struct xg_track *t, struct xg_reg_req *q, const char *why,
    int len)
{
    struct xg_track_retry *r;
    struct timeval tv;
    uint64_t ms;

    if (!track_current(t, q)) {
        return 0;
    }
    if (q->attempts >= t->env->tries) {
        xg_track_log(XG_LOG_WARN, t, "%s: %s refused %u times: giving up",
            t->name, q->method ? q->method : "?", q->attempts + 1);
        return 0;
    }
    ms = q->attempts < 32 ? t->env->retry_ms << q->attempts
                          : t->env->retry_max_ms;
    if (ms > t->env->retry_max_ms) {
        ms = t->env->retry_max_ms;
    }
    q->attempts++;
    xg_track_log(XG_LOG_INFO, t, "%s: %s refused for now (%.*s): retrying in "
        "%llu ms (retry %u of %u), live messages held",
        t->name, q->method ? q->method : "?", len > 120 ? 120 : len, why,
        (unsigned long long) ms, q->attempts, t->env->tries);
    r = xg_calloc(1, sizeof(*r));
    r->t = t;
    r->q = q;
    r->ev = xg_timer_new(t->env->base, track_on_retry, r);
    r->next = t->retry;
    if (t->retry != NULL) {
        t->retry->prev = r;
    }
    t->retry = r;
    tv.tv_sec = (time_t) (ms / 1000);
    tv.tv_usec = (suseconds_t) ((ms % 1000) * 1000);
    xg_timer_add(r->ev, &tv);
    return 1;
}

enum xg_track_cross
xg_track_cross(struct xg_track *t, const char *data, size_t len)
{
    if (t->state != XG_TRACK_LIVE && t->state != XG_TRACK_GAP) {
        return XG_CROSS_WAIT;   /* its fetch decides what was delivered */
    }
    if (t->kind->cross == NULL) {
        return XG_CROSS_SWITCH;
    }
    return t->kind->cross(t, data, len);
}

void
xg_track_cross_force(struct xg_track *t, uint64_t since_ms, int lost)
{
    if (!lost && (t->kind->flags & XG_TRACK_CROSS_GAP)) {
        xg_track_gap(t, since_ms, "rotation: not in line");
        lost = 1;
    }
    if (lost) {
        xg_track_resume(t, "rotation: switched");
    }
}

void
xg_track_fanout(struct xg_track *t, const char *data, size_t len)
{
    t->env->fanout(t->env->ctx, t->chan, data, len);
}

void
xg_track_notice(struct xg_track *t, const char *reason)
{
    t->env->notice(t->env->ctx, t->chan,
        t->env->now(t->env->ctx) - t->gap_from_ms, reason);
}
