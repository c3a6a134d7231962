/*
 * xg_session.c: the exchange-independent session of one upstream: the
 * restore, the request table, the subscription engine (see xg_session.h).
 */
#include "xg_core.h"
#include "xg_client.h"
#include "xg_log.h"
#include "xg_venue.h"
#include "xg_session.h"

#include <fnmatch.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define SS_RETRY_MIN_MS     1000        /* unconfirmed channel: first retry */
#define SS_RETRY_MAX_MS     30000       /* ... doubling up to this */
#define SS_MAX_LISTED       100         /* names listed in /status */
#define SS_ROT_SWITCH_MS    2000        /* a rotation's channels line up
                                           within this, or are switched as
                                           after an outage */
#define SS_ROT_MAX_HELD     1000        /* the new connection's messages
                                           held per channel meanwhile */
#define SS_ROT_RETIRE_MS    10000       /* the old connection's requests:
                                           waited for at most this (or
                                           request_timeout, if longer) */
#define SS_TAG_ROT          2           /* a rotation's subscribe batch */

struct ss_rot;

struct xg_session {
    struct xg_upstream           *up;
    const char                   *name;
    struct event_base            *base;
    struct xg_registry           *reg;
    const struct xg_stale        *stale;
    size_t                        nstale;
    size_t                        batch_bytes;
    const struct xg_session_ops  *ops;
    void                         *owner;
    int                           ready;     /* state == READY */
    enum xg_session_state         st;
    int                           step;      /* the venue's restore step */
    int                           subs_left; /* restore subscribe batches */
    uint64_t                      restore_start_ms;
    uint64_t                      last_restore_ms;
    uint64_t                      restores;
    uint64_t                      linger_ms;
    struct event                 *ev_flush;    /* batches, once per pass */
    struct event                 *ev_linger;   /* the earliest linger end */
    char                        **sub_batch;
    size_t                        nsub, sub_cap;
    char                        **unsub_batch;
    size_t                        nunsub, unsub_cap;
    uint64_t                      stale_resubscribes;
    uint64_t                      resubscribe_retries;
    struct xg_client            **to;        /* fan-out recipients */
    size_t                        to_cap;
    uint64_t                      messages_in;
    uint64_t                      request_ms;
    unsigned                      queue_limit;
    uint64_t                      queue_ms;
    struct xg_conn               *conn;      /* the primary */
    struct ss_rot                *rot;       /* a rotation in progress */
    uint64_t                      rot_in_line; /* channels switched: */
    uint64_t                      rot_quiet;
    uint64_t                      rot_forced;
};

/* What a rotation is doing (see xg_session.h). */
enum ss_rot_phase {
    SR_STEPS = 0,       /* the venue's restore steps on B */
    SR_SUBS,            /* the channels' subscribes on B */
    SR_CROSS,           /* the channels switching to B */
    SR_RETIRE           /* B promoted; A's requests answered, then A
                           retired */
};

struct ss_rot {
    struct xg_conn     *a, *b;
    enum ss_rot_phase   phase;
    int                 step;
    int                 subs_left;
    int                 a_lost;      /* the primary went while B restored */
    int                 failed;      /* B was retired: ignore it */
    int                 retired;     /* A was retired */
    unsigned            a_id, b_id;
    unsigned            in_line, quiet, forced;  /* channels switched */
    uint64_t            start_ms;
    struct event       *ev_bound;    /* the switch bound, then the retire
                                        bound */
    struct event       *ev_check;    /* the end check, once per pass */
};

/* A message of B held for a channel during a rotation. */
struct ss_msg {
    char     *p;
    size_t    len;
};

/* A channel's place in a rotation (ss_chan.rot). */
enum {
    SR_CH_NONE = 0,     /* not subscribed on B */
    SR_CH_SENT,         /* its subscribe on B is out */
    SR_CH_ON_B,         /* confirmed on B, not switched */
    SR_CH_SWITCHED      /* B's data goes out, A's is dropped */
};

/* The session's per-channel timers (ch->sess), made when first needed. */
struct ss_chan {
    struct xg_session      *s;
    struct xg_reg_channel  *ch;
    struct event           *ev_retry;     /* unconfirmed: the next attempt */
    struct event           *ev_stale;     /* the silence bound */
    int                     rot;          /* SR_CH_*, during a rotation */
    int                     rot_dropped;  /* a message of B was dropped */
    struct ss_msg          *held;         /* B's messages held meanwhile */
    size_t                  nheld, held_cap;
};

static void ss_flush(struct xg_session *s);
static void ss_ready(struct xg_session *s, int tell);
static void ss_rot_free(struct xg_session *s);
static void ss_rot_unsubscribe(struct xg_session *s, char **names, size_t n);
static int ss_rot_late_answer(struct xg_session *s,
    const struct xg_reg_req *q);

/* Frees the messages held for SC during a rotation. */
static void
ss_chan_unhold(struct ss_chan *sc)
{
    size_t i;

    for (i = 0; i < sc->nheld; i++) {
        free(sc->held[i].p);
    }
    free(sc->held);
    sc->held = NULL;
    sc->nheld = sc->held_cap = 0;
}

static void
ss_chan_free(void *p)
{
    struct ss_chan *sc = p;

    ss_chan_unhold(sc);
    if (sc->ev_retry != NULL) {
        event_free(sc->ev_retry);
    }
    if (sc->ev_stale != NULL) {
        event_free(sc->ev_stale);
    }
    free(sc);
}

static struct ss_chan *
ss_chan(struct xg_session *s, struct xg_reg_channel *ch)
{
    struct ss_chan *sc = ch->sess;

    if (sc == NULL) {
        sc = xg_calloc(1, sizeof(*sc));
        sc->s = s;
        sc->ch = ch;
        ch->sess = sc;
    }
    return sc;
}

static void
ss_timer(struct event *ev, uint64_t ms)
{
    struct timeval tv;

    tv.tv_sec = (time_t) (ms / 1000);
    tv.tv_usec = (suseconds_t) ((ms % 1000) * 1000);
    event_add(ev, &tv);
}

static void
ss_on_flush(evutil_socket_t fd, short what, void *arg)
{
    ss_flush(arg);
}

struct xg_session *
xg_session_new(struct xg_upstream *up, const char *name,
    struct event_base *base,
    struct xg_registry *reg, const struct xg_stale *stale, size_t nstale,
    size_t batch_bytes, const struct xg_session_ops *ops, void *owner)
{
    struct xg_session *s = xg_calloc(1, sizeof(*s));

    s->up = up;
    s->name = name;
    s->base = base;
    s->reg = reg;
    s->stale = stale;
    s->nstale = nstale;
    s->batch_bytes = batch_bytes;
    s->ops = ops;
    s->owner = owner;
    s->ev_flush = event_new(base, -1, 0, ss_on_flush, s);
    s->ev_linger = evtimer_new(base, ss_on_flush, s);
    xg_registry_set_session_free(reg, ss_chan_free);
    return s;
}

static void
ss_names_free(char **names, size_t *n)
{
    size_t i;

    for (i = 0; i < *n; i++) {
        free(names[i]);
    }
    *n = 0;
}

void
xg_session_free(struct xg_session *s)
{
    if (s == NULL) {
        return;
    }
    ss_rot_free(s);
    event_free(s->ev_flush);
    event_free(s->ev_linger);
    free(s->to);
    ss_names_free(s->sub_batch, &s->nsub);
    free(s->sub_batch);
    ss_names_free(s->unsub_batch, &s->nunsub);
    free(s->unsub_batch);
    free(s);
}

void
xg_session_set_linger(struct xg_session *s, uint64_t ms)
{
    s->linger_ms = ms;
}


void
xg_session_flush_soon(struct xg_session *s)
{
    event_active(s->ev_flush, EV_TIMEOUT, 1);
}

/* ---- batches ---- */

static void
ss_batch_add(char ***a, size_t *n, size_t *cap, const char *name)
{
    if (*n == *cap) {
        *cap = *cap ? *cap * 2 : 16;
        *a = xg_realloc(*a, *cap * sizeof(char *));
    }
    (*a)[(*n)++] = xg_strdup(name);
}

/*
 * Sends NAMES as (un)subscribe requests, each under the venue's message
 * size; the names move into the requests (NAMES[i] NULL afterwards).
 * ON NULL: through the venue, to the primary; else a rotation's
 * subscribes on ON. Returns the number of requests.
 */
static int
ss_send_batches(struct xg_session *s, int subscribe, char **names, size_t n,
    struct xg_conn *on)
{
    size_t i = 0;
    int batches = 0;

    while (i < n) {
        size_t bytes = 100, start = i, k;
        struct xg_reg_req *q;

        while (i < n && (i == start || bytes + strlen(names[i]) + 3
                                       < s->batch_bytes)) {
            bytes += strlen(names[i]) + 3;
            i++;
        }
        q = s->ops->encode_sub(s->owner, subscribe, names + start,
            i - start);
        q->nchan = (int) (i - start);
        q->chan = xg_calloc(q->nchan, sizeof(char *));
        for (k = start; k < i; k++) {
            q->chan[k - start] = names[k];
            names[k] = NULL;
        }
        xg_upstream_log(XG_LOG_DEBUG, s->up, "%s of %d channels (%zu bytes)",
            q->method, q->nchan, bytes);
        if (on != NULL) {
            q->tag = SS_TAG_ROT;
            xg_session_send_on(s, q, on);
        } else {
            s->ops->send(s->owner, q);
        }
        batches++;
    }
    return batches;
}

/*
 * Once per loop pass (and when the earliest linger ends): channels whose
 * last subscriber left are unsubscribed upstream once unsubscribe_linger
 * has run out, new channels are subscribed, in batches.
 */
static void
ss_flush(struct xg_session *s)
{
    struct xg_reg_channel *ch, **keep = NULL;
    size_t nkeep = 0, keep_cap = 0, i;
    uint64_t now = xg_now_ms(), first = UINT64_MAX;

    while ((ch = xg_registry_idle_next(s->reg)) != NULL) {
        if (ch->state == XG_CHAN_PENDING && !ch->sent) {
            xg_registry_channel_delete(s->reg, ch);
        } else if (ch->state == XG_CHAN_CONFIRMED) {
            if (!s->ready) {
                continue;   /* the reset on down deletes it */
            }
            if (s->linger_ms != 0 && now < ch->idle_since_ms + s->linger_ms) {
                if (nkeep == keep_cap) {
                    keep_cap = keep_cap ? keep_cap * 2 : 8;
                    keep = xg_realloc(keep, keep_cap * sizeof(*keep));
                }
                keep[nkeep++] = ch;
                if (ch->idle_since_ms + s->linger_ms < first) {
                    first = ch->idle_since_ms + s->linger_ms;
                }
                continue;
            }
            ch->state = XG_CHAN_UNSUBSCRIBING;
            ss_batch_add(&s->unsub_batch, &s->nunsub, &s->unsub_cap,
                ch->name);
        }
        /* pending and in flight: the answer puts it back if still idle */
    }
    for (i = 0; i < nkeep; i++) {
        xg_registry_idle_push(s->reg, keep[i]);
    }
    free(keep);
    if (nkeep > 0) {
        ss_timer(s->ev_linger, first - now);
    }
    if (!s->ready) {
        /* the restore sends everything pending; nothing to batch now */
        ss_names_free(s->sub_batch, &s->nsub);
        ss_names_free(s->unsub_batch, &s->nunsub);
        return;
    }
    if (s->nunsub > 0) {
        ss_rot_unsubscribe(s, s->unsub_batch, s->nunsub);
        ss_send_batches(s, 0, s->unsub_batch, s->nunsub, NULL);
        s->nunsub = 0;
    }
    if (s->nsub > 0) {
        ss_send_batches(s, 1, s->sub_batch, s->nsub, NULL);
        s->nsub = 0;
    }
}

void
xg_session_want(struct xg_session *s, struct xg_reg_channel *ch)
{
    if (!s->ready || ch->sent) {
        return;
    }
    ch->sent = 1;
    ss_batch_add(&s->sub_batch, &s->nsub, &s->sub_cap, ch->name);
    xg_session_flush_soon(s);
}

struct ss_collect {
    char   **names;
    size_t   n, cap;
};

/* Collects the pending channels someone wants, marking them sent. */
static void
ss_collect_cb(struct xg_reg_channel *ch, void *arg)
{
    struct ss_collect *col = arg;

    if (ch->state == XG_CHAN_PENDING && !ch->sent
        && (ch->nsubs > 0 || ch->nwaiters > 0)) {
        ch->sent = 1;
        ss_batch_add(&col->names, &col->n, &col->cap, ch->name);
    }
}

static int
ss_collect_send(struct xg_session *s, size_t *nchan)
{
    struct ss_collect col = { NULL, 0, 0 };
    int batches = 0;

    xg_registry_channel_foreach(s->reg, ss_collect_cb, &col);
    if (nchan != NULL) {
        *nchan = col.n;
    }
    if (col.n > 0) {
        batches = ss_send_batches(s, 1, col.names, col.n, NULL);
    }
    free(col.names);
    return batches;
}

/*
 * The restore's subscribe step: channels pending and nobody's are
 * forgotten, the rest are sent in batches. Returns the number of batches;
 * *NCHAN gets the number of channels.
 */
static int
ss_subscribe_all(struct xg_session *s, size_t *nchan)
{
    struct xg_reg_channel *ch;

    /* channels nobody wants any more are simply forgotten */
    while ((ch = xg_registry_idle_next(s->reg)) != NULL) {
        if (ch->state == XG_CHAN_PENDING) {
            xg_registry_channel_delete(s->reg, ch);
        }
    }
    return ss_collect_send(s, nchan);
}

/* ---- verified subscribes: confirmed, refused, retried ---- */

static void ss_on_retry(evutil_socket_t fd, short what, void *arg);
static void ss_on_stale(evutil_socket_t fd, short what, void *arg);

/* The stale bound of CH from the conf (first matching pattern), cached. */
static uint64_t
ss_stale_ms(struct xg_session *s, struct xg_reg_channel *ch)
{
    size_t i;

    if (!ch->stale_set) {
        ch->stale_set = 1;
        ch->stale_ms = 0;
        for (i = 0; i < s->nstale; i++) {
            if (fnmatch(s->stale[i].pattern, ch->name, 0) == 0) {
                ch->stale_ms = s->stale[i].ms;
                break;
            }
        }
    }
    return ch->stale_ms;
}

/* Starts CH's silence timer when its name has a stale bound. */
static void
ss_arm_stale(struct xg_session *s, struct xg_reg_channel *ch)
{
    uint64_t stale = ss_stale_ms(s, ch);
    struct ss_chan *sc;

    if (stale == 0) {
        return;
    }
    sc = ss_chan(s, ch);
    if (sc->ev_stale == NULL) {
        sc->ev_stale = evtimer_new(s->base, ss_on_stale, sc);
    }
    ss_timer(sc->ev_stale, stale);
}

/*
 * A restored channel the exchange did not confirm: it stays PENDING and
 * "sent" (so no restore or batch sends it again) until its retry timer,
 * which subscribes it anew; 1 s doubling up to 30 s.
 */
static void
ss_unconfirmed(struct xg_session *s, struct xg_reg_channel *ch)
{
    struct ss_chan *sc = ss_chan(s, ch);

    ch->retry_ms = ch->retry_ms == 0 ? SS_RETRY_MIN_MS
                   : ch->retry_ms * 2 > SS_RETRY_MAX_MS ? SS_RETRY_MAX_MS
                   : ch->retry_ms * 2;
    ch->sent = 1;
    if (!ch->unconfirmed) {
        ch->unconfirmed = 1;
        ch->stale_from_ms = ch->last_data_ms;
    }
    if (sc->ev_retry == NULL) {
        sc->ev_retry = evtimer_new(s->base, ss_on_retry, sc);
    }
    ss_timer(sc->ev_retry, ch->retry_ms);
    xg_upstream_log(XG_LOG_WARN, s->up, "channel \"%s\" not confirmed on "
        "resubscribe (attempt %u): retrying in %u ms; its %zu clients stay "
        "subscribed", ch->name, ch->retries + 1, ch->retry_ms, ch->nsubs);
    ch->retries++;
}

/* An unconfirmed channel's retry time: subscribe it again, or drop it
   when nobody holds it any more. */
static void
ss_on_retry(evutil_socket_t fd, short what, void *arg)
{
    struct ss_chan *sc = arg;
    struct xg_session *s = sc->s;
    struct xg_reg_channel *ch = sc->ch;

    if (!ch->unconfirmed) {
        return;
    }
    if (ch->state != XG_CHAN_PENDING) {
        ch->unconfirmed = 0;
        return;
    }
    if (ch->nsubs == 0 && ch->nwaiters == 0) {
        xg_upstream_log(XG_LOG_INFO, s->up, "unconfirmed channel \"%s\" "
            "dropped: no subscriber left", ch->name);
        xg_registry_channel_delete(s->reg, ch);
        return;
    }
    if (ch->sent) {
        s->resubscribe_retries++;
        ch->sent = 0;
        xg_session_want(s, ch);
    }
}

/* CH is confirmed: restored (after a reconnect or retries) or new. */
static void
ss_confirmed(struct xg_session *s, struct xg_reg_channel *ch)
{
    uint64_t now = xg_now_ms();
    enum xg_confirm how = ch->unconfirmed ? XG_CONFIRM_RETRIED
                          : ch->confirmed_ms != 0 ? XG_CONFIRM_RESTORED
                          : XG_CONFIRM_NEW;

    s->ops->confirmed(s->owner, ch, how, now);
    if (ch->unconfirmed) {
        xg_upstream_log(XG_LOG_INFO, s->up, "channel \"%s\" confirmed after %u "
            "refused attempts", ch->name, ch->retries);
        ch->unconfirmed = 0;
        ch->retries = 0;
        ch->retry_ms = 0;
    }
    if (ch->confirmed_ms == 0) {
        ch->confirmed_ms = now;
    }
    ch->last_data_ms = now;     /* silence is counted from here */
    ss_arm_stale(s, ch);
}

/* The debug line of a client's subscribe request SR at WHAT: its client,
   the client's id, and the upstream id of the batch Q that answered it
   (NULL: none), so that one grep for the batch finds its clients. */
static void
ss_log_subreq(const struct xg_session *s, const struct xg_reg_subreq *sr,
    const struct xg_reg_req *q, const char *what)
{
    struct xg_log_ctx ctx;
    int i, ok = 0;

    if (xg_log_level < XG_LOG_DEBUG) {
        return;
    }
    xg_upstream_log_ctx(s->up, &ctx);
    if (sr->client != NULL && sr->client->out != NULL) {
        xg_client_log_ctx(sr->client->out, &ctx);
    }
    ctx.request = q != NULL ? q->up_id : 0;
    for (i = 0; i < sr->nchan; i++) {
        ok += sr->status[i] == 1;
    }
    xg_log_at(XG_LOG_DEBUG, &ctx, "subscribe (client id %.*s) of %d "
        "channels %s: %d confirmed", 64,
        sr->client_id != NULL ? sr->client_id : "null", sr->nchan, what, ok);
}

void
xg_session_sub_answer(struct xg_session *s, const struct xg_reg_req *q,
    const struct xg_jspan *result, const struct xg_jspan *error)
{
    char *errtext = NULL;
    json_t *res;
    int i;

    if (ss_rot_late_answer(s, q)) {
        return;
    }
    res = s->ops->sub_result(s->owner, q, result, error, &errtext);

    if (res == NULL) {
        xg_upstream_log(XG_LOG_WARN, s->up, "subscribe of %d channels failed: "
            "%s", q->nchan, errtext);
    }
    for (i = 0; i < q->nchan; i++) {
        struct xg_reg_channel *ch = xg_registry_channel(s->reg, q->chan[i]);
        struct xg_reg_subreq **done;
        size_t ndone, j, k;
        int ok = 0;

        if (ch == NULL || ch->state != XG_CHAN_PENDING) {
            continue;
        }
        for (k = 0; res != NULL && k < json_array_size(res); k++) {
            const char *n = json_string_value(json_array_get(res, k));

            if (n != NULL && strcmp(n, q->chan[i]) == 0) {
                ok = 1;
                break;
            }
        }
        if (!ok && errtext == NULL) {
            xg_upstream_log(XG_LOG_WARN, s->up, "the exchange did not confirm "
                "channel \"%s\"", q->chan[i]);
        }
        done = xg_calloc(ch->nwaiters + 1, sizeof(*done));
        if (!ok && ch->confirmed_ms != 0 && ch->nsubs > 0) {
            /* a channel clients held (a restore, a resync) that the
               exchange left out or refused: its clients (joiners too)
               stay subscribed while it is retried */
            xg_registry_channel_answer_waiters(s->reg, ch, 1, done, &ndone);
            ss_unconfirmed(s, ch);
        } else {
            /* a resubscribe of our own that the exchange took: the gap or
               stale path that sent it did the continuity work already */
            if (ok && q->tag != XG_SESSION_RESUB) {
                ss_confirmed(s, ch);
            } else if (ok) {
                ss_arm_stale(s, ch);
            }
            xg_registry_channel_resolve(s->reg, ch, ok, ok ? NULL : errtext,
                done, &ndone);
        }
        for (j = 0; j < ndone; j++) {
            ss_log_subreq(s, done[j], q, "answered");
            s->ops->subreq_done(s->owner, done[j]);
        }
        free(done);
    }
    json_decref(res);
    free(errtext);
    xg_session_flush_soon(s);   /* confirmed with nobody left: unsubscribe */
    if (s->st == XG_SESSION_RESTORING && s->step < 0
        && q->tag != XG_SESSION_RESUB && --s->subs_left == 0) {
        ss_ready(s, 1);
    }
}

void
xg_session_unsub_answer(struct xg_session *s, const struct xg_reg_req *q)
{
    int i;

    for (i = 0; i < q->nchan; i++) {
        struct xg_reg_channel *ch = xg_registry_channel(s->reg, q->chan[i]);

        if (ch == NULL || ch->state != XG_CHAN_UNSUBSCRIBING) {
            continue;
        }
        if (ch->nsubs > 0 || ch->nwaiters > 0) {
            /* someone joined while it was being unsubscribed */
            ch->state = XG_CHAN_PENDING;
            ch->sent = 0;
            ch->resubscribe = 0;
            xg_session_want(s, ch);
        } else {
            xg_registry_channel_delete(s->reg, ch);
        }
    }
}

void
xg_session_resubscribe(struct xg_session *s, struct xg_reg_channel *ch)
{
    char *name = ch->name;
    struct xg_reg_req *q;

    /* the unsubscribe's answer needs no look (no channel listed): the
       subscribe's answer says where the channel stands */
    s->ops->send(s->owner, s->ops->encode_sub(s->owner, 0, &name, 1));
    q = s->ops->encode_sub(s->owner, 1, &name, 1);
    q->nchan = 1;
    q->chan = xg_calloc(1, sizeof(char *));
    q->chan[0] = xg_strdup(ch->name);
    q->tag = XG_SESSION_RESUB;
    ch->state = XG_CHAN_PENDING;
    ch->sent = 1;
    s->ops->send(s->owner, q);
}

/* ---- stale channels ---- */

/*
 * CH's silence bound: a notification only stores its time, and the timer
 * moves on when it fires early. Past the bound, with clients and a ready
 * connection, CH is resubscribed on its own.
 */
static void
ss_on_stale(evutil_socket_t fd, short what, void *arg)
{
    struct ss_chan *sc = arg;
    struct xg_session *s = sc->s;
    struct xg_reg_channel *ch = sc->ch;
    uint64_t now = xg_now_ms(), stale = ch->stale_ms;

    if (ch->state != XG_CHAN_CONFIRMED) {
        return;                 /* armed again when it is confirmed */
    }
    if (now < ch->last_data_ms + stale) {
        ss_timer(sc->ev_stale, ch->last_data_ms + stale - now);
        return;
    }
    if (ch->nsubs == 0 || !s->ready) {
        ss_timer(sc->ev_stale, stale);
        return;
    }
    xg_upstream_log(XG_LOG_WARN, s->up, "channel \"%s\" silent for %llu ms "
        "(stale %llu ms): resubscribing it alone", ch->name,
        (unsigned long long) (now - ch->last_data_ms),
        (unsigned long long) stale);
    s->stale_resubscribes++;
    s->ops->stale(s->owner, ch, now);
    ch->last_data_ms = now;
    xg_session_resubscribe(s, ch);
    s->ops->restale(s->owner, ch);
}

/* ---- messages from the exchange ---- */

void
xg_session_fanout(struct xg_session *s, struct xg_reg_channel *ch,
    const char *data, size_t len)
{
    size_t i;

    if (ch->nsubs == 0) {
        return;
    }
    if (ch->nsubs > s->to_cap) {
        s->to_cap = ch->nsubs * 2;
        s->to = xg_realloc(s->to, s->to_cap * sizeof(*s->to));
    }
    for (i = 0; i < ch->nsubs; i++) {
        s->to[i] = ch->subs[i]->out;
    }
    xg_client_fanout(ch, s->to, ch->nsubs, data, len);
}

/* The debug line of an answer to no request in flight: most often one
   that timed out, whose grep it ends. */
static void
ss_log_unknown(const struct xg_session *s, const struct xg_jspan *id)
{
    struct xg_log_ctx ctx;
    uint64_t n;

    if (xg_log_level < XG_LOG_DEBUG) {
        return;
    }
    xg_upstream_log_ctx(s->up, &ctx);
    if (xg_jscan_uint(id, &n) == XG_OK) {
        ctx.request = n;
        xg_log_at(XG_LOG_DEBUG, &ctx, "answer to a request no longer in "
            "flight dropped");
        return;
    }
    xg_log_at(XG_LOG_DEBUG, &ctx, "answer to unknown id %.*s dropped",
        (int) (id->len > 40 ? 40 : id->len), id->p);
}

/* DATA on CH as any message of the channel's stream: the venue's
   continuity first, then (if it says so) every subscriber. */
static void
ss_deliver(struct xg_session *s, struct xg_reg_channel *ch, const char *data,
    size_t len, const struct xg_umsg *m)
{
    struct xg_umsg none;

    if (m == NULL) {
        memset(&none, 0, sizeof(none));
        none.kind = XG_UMSG_DATA;
        none.chan = ch->name;
        none.chan_len = strlen(ch->name);
        m = &none;
    }
    ch->last_data_ms = xg_now_ms();
    if (s->ops->data(s->owner, ch, data, len, m)) {
        xg_session_fanout(s, ch, data, len);
    }
}

static void ss_rot_sub_answer(struct xg_session *s, const struct xg_reg_req *q,
    const struct xg_jspan *result, const struct xg_jspan *error);
static int ss_rot_data(struct xg_session *s, struct xg_conn *c,
    struct xg_reg_channel *ch, const char *data, size_t len);
static void ss_rot_after(struct xg_session *s, struct xg_reg_channel *ch);
static void ss_rot_check_retire(struct xg_session *s, struct xg_conn *c);

void
xg_session_message(struct xg_session *s, struct xg_conn *c, const char *data,
    size_t len)
{
    struct xg_umsg m;
    struct xg_reg_req *q;
    struct xg_reg_channel *ch;

    s->messages_in++;
    memset(&m, 0, sizeof(m));
    s->ops->classify(s->owner, c, data, len, &m);
    switch (m.kind) {
    case XG_UMSG_ANSWER:
        if ((q = xg_session_take(s, &m.id)) == NULL) {
            ss_log_unknown(s, &m.id);
            return;
        }
        if (xg_log_level >= XG_LOG_DEBUG) {
            xg_session_log_req(XG_LOG_DEBUG, s, q, "%s answered in %llu ms%s",
                q->method ? q->method : "?",
                (unsigned long long) (xg_now_ms() - q->log_ms),
                m.error.p != NULL ? " with an error" : "");
        }
        if (q->kind == XG_REQ_SUB && q->tag == SS_TAG_ROT) {
            ss_rot_sub_answer(s, q, &m.result, &m.error);
        } else if (q->kind == XG_REQ_SUB) {
            xg_session_sub_answer(s, q, &m.result, &m.error);
        } else if (q->kind == XG_REQ_UNSUB) {
            xg_session_unsub_answer(s, q);
        } else if (s->ops->answer(s->owner, q, data, len, &m)) {
            ss_rot_check_retire(s, c);
            return;             /* kept */
        }
        xg_registry_req_free(q);
        ss_rot_check_retire(s, c);
        return;
    case XG_UMSG_DATA:
        ch = xg_registry_channel_n(s->reg, m.chan, m.chan_len);
        if (ch == NULL) {
            xg_upstream_log(XG_LOG_DEBUG, s->up, "data for channel %.*s with "
                "no subscriber", (int) m.chan_len, m.chan);
            return;
        }
        if (s->rot != NULL && ss_rot_data(s, c, ch, data, len)) {
            return;             /* held or dropped by the rotation */
        }
        ss_deliver(s, ch, data, len, &m);
        if (s->rot != NULL) {
            ss_rot_after(s, ch);
        }
        return;
    default:
        return;
    }
}

/* ---- a client's channels ---- */

void
xg_session_subscribe(struct xg_session *s, struct xg_reg_client *rc,
    const char *client_id, char *const *names, size_t n, unsigned max,
    int flags)
{
    struct xg_reg_subreq *sr;
    struct xg_log_ctx lc;
    struct xg_reg_channel **live = NULL;
    size_t nlive = 0, i;

    sr = xg_registry_subreq_new(s->reg, rc, client_id, (char **) names,
        (int) n);
    for (i = 0; i < n; i++) {
        struct xg_reg_channel *ch;
        int r;

        if (!s->ops->allowed(s->owner, rc->owner, sr->chan[i], flags)) {
            xg_registry_subreq_set(sr, (int) i, -1);
            continue;
        }
        r = xg_registry_subscribe(s->reg, rc, sr->chan[i], max, &ch);
        switch (r) {
        case XG_SUB_LIVE:
            if (live == NULL) {
                live = xg_calloc(n, sizeof(*live));
            }
            live[nlive++] = ch;
            /* fall through */
        case XG_SUB_ALREADY:
            xg_registry_subreq_set(sr, (int) i, 1);
            break;
        case XG_SUB_NEW:
        case XG_SUB_WAIT:
            xg_registry_subreq_wait(sr, (int) i, ch);
            s->ops->joined(s->owner, rc->owner, ch, 0);
            if (ch->state == XG_CHAN_PENDING) {
                xg_session_want(s, ch);
            }
            break;
        default:
            xg_upstream_log_ctx(s->up, &lc);
            if (rc->out != NULL) {
                xg_client_log_ctx(rc->out, &lc);
            }
            xg_log_at(XG_LOG_WARN, &lc, "at client_max_channels %u: %s left "
                "out", max, sr->chan[i]);
            xg_registry_subreq_set(sr, (int) i, -1);
            break;
        }
    }
    if (sr->outstanding == 0) {
        ss_log_subreq(s, sr, NULL, "answered at once");
        s->ops->subreq_done(s->owner, sr);
    } else {
        ss_log_subreq(s, sr, NULL, "waiting for the exchange");
    }
    /* after the answer: what a late joiner gets (a book's snapshot) */
    for (i = 0; i < nlive; i++) {
        s->ops->joined(s->owner, rc->owner, live[i], 1);
    }
    free(live);
}

void
xg_session_unsubscribe(struct xg_session *s, struct xg_reg_client *rc,
    char *const *names, size_t n, json_t *left)
{
    uint64_t now = xg_now_ms();
    size_t i;

    if (names == NULL) {
        for (i = 0; i < rc->nchans; i++) {
            s->ops->left(s->owner, rc->owner, rc->chans[i]);
        }
        xg_registry_unsubscribe_all(s->reg, rc, now);
    }
    for (i = 0; names != NULL && i < n; i++) {
        struct xg_reg_channel *ch = names[i] != NULL
                                    ? xg_registry_channel(s->reg, names[i])
                                    : NULL;

        if (ch == NULL) {
            continue;
        }
        s->ops->left(s->owner, rc->owner, ch);
        if (xg_registry_unsubscribe(s->reg, rc, ch, now) && left != NULL) {
            json_array_append_new(left, json_string(names[i]));
        }
    }
    xg_session_flush_soon(s);
}

/* ---- requests ---- */

void
xg_session_set_limits(struct xg_session *s, uint64_t request_ms,
    unsigned limit, uint64_t queue_ms)
{
    s->request_ms = request_ms;
    s->queue_limit = limit;
    s->queue_ms = queue_ms;
}

/* See xg_session.h. */
void
xg_session_log_req(int level, const struct xg_session *s,
    const struct xg_reg_req *q, const char *fmt, ...)
{
    struct xg_log_ctx ctx;
    va_list ap;

    if (level > xg_log_level) {
        return;
    }
    xg_upstream_log_ctx(s->up, &ctx);
    if (q->client != NULL && q->client->out != NULL) {
        xg_client_log_ctx(q->client->out, &ctx);
    }
    ctx.request = q->up_id;
    va_start(ap, fmt);
    xg_log_atv(level, &ctx, fmt, ap);
    va_end(ap);
}

/* " (client id ID)" for a client's request, cut to fit BUF, else "". */
static const char *
ss_client_id(const struct xg_reg_req *q, char *buf, size_t len)
{
    if (q->client_id == NULL) {
        return "";
    }
    snprintf(buf, len, " (client id %.*s)", 64, q->client_id);
    return buf;
}

static void ss_on_request_expired(evutil_socket_t fd, short what, void *arg);

/* Starts Q's deadline timer (MS from now): one libevent timer per request
   that has a deadline, freed with the request. */
static void
ss_req_arm(struct xg_session *s, struct xg_reg_req *q, uint64_t ms)
{
    if (q->ev == NULL) {
        q->ev = evtimer_new(s->base, ss_on_request_expired, q);
    }
    q->deadline_ms = xg_now_ms() + ms;
    q->sess = s;
    ss_timer(q->ev, ms);
}

static void
ss_req_disarm(struct xg_reg_req *q)
{
    if (q->ev != NULL) {
        event_del(q->ev);
    }
    q->deadline_ms = 0;
}

void
xg_session_untime(struct xg_reg_req *q)
{
    ss_req_disarm(q);
    q->timed = 0;
}

/* The debug line of Q's send: its arrival when it goes out at once, or
   its queueing time, or the request it replays. */
static void
ss_log_sent(const struct xg_session *s, const struct xg_reg_req *q)
{
    char cid[96], queued[48], replay[48];

    queued[0] = replay[0] = '\0';
    if (q->log_ms != 0) {
        snprintf(queued, sizeof(queued), ", %llu ms in the queue",
            (unsigned long long) (xg_now_ms() - q->log_ms));
    }
    if (q->replay_of != 0) {
        snprintf(replay, sizeof(replay), ", replay of request %llu",
            (unsigned long long) q->replay_of);
    }
    xg_session_log_req(XG_LOG_DEBUG, s, q, "%s sent%s%s%s",
        q->method ? q->method : "?", ss_client_id(q, cid, sizeof(cid)),
        queued, replay);
}

int
xg_session_send(struct xg_session *s, struct xg_reg_req *q)
{
    return xg_session_send_on(s, q, s->conn);
}

int
xg_session_send_on(struct xg_session *s, struct xg_reg_req *q,
    struct xg_conn *c)
{
    static const char *const keys[] = { "id" };
    struct xg_jspan v[1];
    char idbuf[24];
    uint64_t id;
    size_t n;
    char *out;
    int rc;

    if (xg_jscan_object(q->text, q->len, keys, 1, v) != XG_OK
        || v[0].p == NULL) {
        xg_upstream_log(XG_LOG_ERROR, s->up, "internal: request without id "
            "dropped");
        xg_registry_req_free(q);
        return XG_ERROR;
    }
    ss_req_disarm(q);
    q->conn = c;
    id = xg_registry_inflight_add(s->reg, q, 0);
    if (q->timed && s->request_ms != 0) {
        ss_req_arm(s, q, s->request_ms);
    }
    if (xg_log_level >= XG_LOG_DEBUG) {
        ss_log_sent(s, q);
    }
    q->log_ms = xg_now_ms();
    snprintf(idbuf, sizeof(idbuf), "%llu", (unsigned long long) id);
    out = xg_jscan_splice(q->text, q->len, &v[0], idbuf, strlen(idbuf), &n);
    rc = c != NULL ? s->ops->write(s->owner, c, out, n) : XG_ERROR;
    free(out);
    if (rc != XG_OK) {
        /* no connection: xg_session_down() will sort the request out */
        xg_upstream_log(XG_LOG_DEBUG, s->up, "send of %s failed",
            q->method ? q->method : "?");
    }
    return rc;
}

int
xg_session_submit(struct xg_session *s, struct xg_reg_req *q)
{
    if (s->ready) {
        xg_session_send(s, q);
        return XG_OK;
    }
    if (!q->nolimit && xg_registry_nqueued(s->reg) >= s->queue_limit) {
        xg_session_log_req(XG_LOG_WARN, s, q, "queue_limit %u reached: "
            "refusing %s", s->queue_limit, q->method ? q->method : "?");
        return XG_ERROR;
    }
    ss_req_disarm(q);
    if (!q->nolimit && s->queue_ms != 0) {
        ss_req_arm(s, q, s->queue_ms);
    }
    xg_registry_queue_push(s->reg, q, 0);
    q->log_ms = xg_now_ms();
    if (xg_log_level >= XG_LOG_DEBUG) {
        char cid[96];

        xg_session_log_req(XG_LOG_DEBUG, s, q, "%s queued%s: the upstream is "
            "not ready (%zu in the queue)", q->method ? q->method : "?",
            ss_client_id(q, cid, sizeof(cid)), xg_registry_nqueued(s->reg));
    }
    return XG_OK;
}

/* A request's deadline: in flight or queued, it leaves its list and its
   waiter is told (or the venue keeps it to send again). */
static void
ss_on_request_expired(evutil_socket_t fd, short what, void *arg)
{
    struct xg_reg_req *q = arg;
    struct xg_session *s = q->sess;
    struct xg_conn *c = q->conn;
    int queued = q->up_id == 0;

    if (queued) {
        xg_registry_queue_take(s->reg, q);
    } else {
        q = xg_registry_inflight_take(s->reg, q->up_id);
    }
    q->deadline_ms = 0;
    if (!s->ops->expired(s->owner, q, queued)) {
        xg_registry_req_free(q);
    }
    if (!queued) {
        ss_rot_check_retire(s, c);
    }
}

struct xg_reg_req *
xg_session_take(struct xg_session *s, const struct xg_jspan *id)
{
    struct xg_reg_req *q;
    uint64_t up_id;

    if (xg_jscan_uint(id, &up_id) != XG_OK
        || (q = xg_registry_inflight_take(s->reg, up_id)) == NULL) {
        return NULL;
    }
    ss_req_disarm(q);
    return q;
}

struct ss_ids {
    struct xg_conn  *c;
    uint64_t        *ids;
    size_t           n, cap;
    int              orphans;   /* and those written on no connection */
};

static void
ss_ids_cb(struct xg_reg_req *q, void *arg)
{
    struct ss_ids *l = arg;

    if (q->conn != l->c && !(l->orphans && q->conn == NULL)) {
        return;
    }
    if (l->n == l->cap) {
        l->cap = l->cap ? l->cap * 2 : 16;
        l->ids = xg_realloc(l->ids, l->cap * sizeof(*l->ids));
    }
    l->ids[l->n++] = q->up_id;
}

/*
 * The requests in flight on C, now lost with it: each goes to ops->lost();
 * those to replay are sent again on the primary when the session is ready
 * (else queued first, in their order).
 */
static void
ss_down_requests(struct xg_session *s, struct xg_conn *c, int primary,
    unsigned *replayed, unsigned *lost)
{
    struct xg_reg_req *q, *replay = NULL, *nx;
    struct ss_ids l = { c, NULL, 0, 0, primary };
    size_t i;

    *replayed = *lost = 0;
    xg_registry_inflight_foreach(s->reg, ss_ids_cb, &l);
    for (i = 0; i < l.n; i++) {
        if ((q = xg_registry_inflight_take(s->reg, l.ids[i])) == NULL) {
            continue;
        }
        ss_req_disarm(q);
        switch (s->ops->lost(s->owner, q)) {
        case XG_LOST_REPLAY:
            xg_session_log_req(XG_LOG_INFO, s, q, "%s lost with the "
                "connection: sent again under a new id once it is back",
                q->method ? q->method : "?");
            q->replay_of = q->up_id;
            q->next = replay;   /* reversed; pushed to the front below */
            replay = q;
            (*replayed)++;
            break;
        case XG_LOST_KEPT:
            break;
        case XG_LOST_UNKNOWN:
            (*lost)++;
            /* fall through */
        default:
            xg_registry_req_free(q);
            break;
        }
    }
    free(l.ids);
    if (s->ready) {
        /* another connection serves: in their order (REPLAY is reversed) */
        for (q = NULL; replay != NULL; replay = nx) {
            nx = replay->next;
            replay->next = q;
            q = replay;
        }
        for (; q != NULL; q = nx) {
            nx = q->next;
            q->next = NULL;
            xg_session_send(s, q);
        }
        return;
    }
    for (q = replay; q != NULL; q = nx) {
        nx = q->next;
        if (!q->nolimit && s->queue_ms != 0) {
            ss_req_arm(s, q, s->queue_ms);
        }
        xg_registry_queue_push(s->reg, q, 1);
        q->log_ms = xg_now_ms();
    }
}

static void ss_rot_keep_channels(struct xg_session *s);
static void ss_rot_check_soon(struct xg_session *s);

enum xg_session_down
xg_session_down(struct xg_session *s, struct xg_conn *c, unsigned *replayed,
    unsigned *lost)
{
    struct ss_rot *r = s->rot;
    enum xg_session_down how = XG_SESSION_DOWN_OTHER;

    if (c == s->conn) {
        s->st = XG_SESSION_DOWN;
        s->ready = 0;
        s->conn = NULL;
        how = XG_SESSION_DOWN_PRIMARY;
        if (r != NULL && !r->failed && r->phase != SR_RETIRE) {
            /* B restores on: it takes over when it is done */
            r->a = NULL;
            r->a_lost = 1;
            how = XG_SESSION_DOWN_TAKEOVER;
            xg_log_warn("upstream %s: rotation #%u -> #%u: #%u lost while "
                "#%u restores: #%u will take over", s->name, r->a_id,
                r->b_id, r->a_id, r->b_id, r->b_id);
        } else if (r != NULL && r->phase == SR_RETIRE) {
            /* the new primary went before the old one retired */
            r->b = NULL;
            if (r->a != NULL) {
                xg_upstream_retire(s->up, r->a, "the new primary was lost");
            }
        } else if (r != NULL) {
            ss_rot_free(s);
        }
    } else if (r != NULL && c == r->b) {
        /* the rotation failed; with the primary gone, the session too */
        how = r->a_lost ? XG_SESSION_DOWN_PRIMARY : XG_SESSION_DOWN_OTHER;
        ss_rot_free(s);
    } else if (r != NULL && c == r->a) {
        r->a = NULL;
        if (r->b == NULL || r->phase == SR_RETIRE) {
            xg_log_info("upstream %s: rotation #%u -> #%u finished: #%u "
                "closed %llu ms after the start", s->name, r->a_id, r->b_id,
                r->a_id, (unsigned long long) (xg_now_ms() - r->start_ms));
            ss_rot_free(s);
        }
    }
    /* sent while no connection was up: the primary's to settle */
    ss_down_requests(s, c, how != XG_SESSION_DOWN_OTHER, replayed, lost);
    if (how == XG_SESSION_DOWN_TAKEOVER) {
        ss_rot_keep_channels(s);
        /* after the venue's trackers went down with A */
        ss_rot_check_soon(s);
    }
    return how;
}

/* ---- the connection: restore, ready, down ---- */

/* Restore done: what was queued goes out (replays first), then what was
   asked for meanwhile, and the upstream is READY. */
static void
ss_ready(struct xg_session *s, int tell)
{
    struct xg_reg_req *q;
    size_t nq = 0;

    s->st = XG_SESSION_READY;
    s->ready = 1;
    while ((q = xg_registry_queue_pop(s->reg)) != NULL) {
        xg_session_send(s, q);
        nq++;
    }
    ss_collect_send(s, NULL);
    s->last_restore_ms = xg_now_ms() - s->restore_start_ms;
    s->restores++;
    xg_upstream_log(XG_LOG_INFO, s->up, "restored in %llu ms: %zu channels, "
        "%zu queued requests sent", (unsigned long long) s->last_restore_ms,
        xg_registry_nchannels(s->reg), nq);
    if (tell) {
        xg_upstream_restored(s->up);
    }
    xg_session_flush_soon(s);
}

/* Runs the venue's steps from the current one until one waits for its
   answer; after the last, the subscriptions; then READY. */
static void
ss_restore_run(struct xg_session *s)
{
    size_t n;
    int rc;

    while ((rc = s->ops->restore_step(s->owner, s->conn, s->step))
           == XG_OK) {
        s->step++;
    }
    if (rc == XG_AGAIN) {
        s->step++;          /* xg_session_step_done() goes on from there */
        return;
    }
    s->step = -1;           /* the subscriptions */
    s->subs_left = ss_subscribe_all(s, &n);
    if (n > 0) {
        xg_upstream_log(XG_LOG_INFO, s->up, "restore: subscribing %zu channels",
            n);
    }
    if (s->subs_left == 0) {
        ss_ready(s, 1);
    }
}

void
xg_session_open(struct xg_session *s, struct xg_conn *c)
{
    s->conn = c;
    s->st = XG_SESSION_RESTORING;
    s->ready = 0;
    s->step = 0;
    s->restore_start_ms = xg_now_ms();
    ss_restore_run(s);
}

static void ss_rot_run(struct xg_session *s);

void
xg_session_step_done(struct xg_session *s, struct xg_conn *c)
{
    if (s->rot != NULL && c == s->rot->b) {
        if (!s->rot->failed && s->rot->phase == SR_STEPS) {
            ss_rot_run(s);
        }
        return;
    }
    if (c == s->conn && s->st == XG_SESSION_RESTORING && s->step >= 0) {
        ss_restore_run(s);
    }
}

enum xg_session_state
xg_session_state(const struct xg_session *s)
{
    return s->st;
}

struct xg_conn *
xg_session_conn(const struct xg_session *s)
{
    return s->conn;
}

/* ---- a make-before-break rotation (see xg_session.h) ---- */

static void ss_rot_end(struct xg_session *s, const char *why);

/* Frees the rotation (not the channels' held messages: see
   ss_rot_reset_channels()). */
static void
ss_rot_free(struct xg_session *s)
{
    struct ss_rot *r = s->rot;

    if (r == NULL) {
        return;
    }
    event_free(r->ev_bound);
    event_free(r->ev_check);
    free(r);
    s->rot = NULL;
}

static void
ss_rot_reset_cb(struct xg_reg_channel *ch, void *arg)
{
    struct ss_chan *sc = ch->sess;

    if (sc != NULL) {
        sc->rot = SR_CH_NONE;
        sc->rot_dropped = 0;
        ss_chan_unhold(sc);
    }
}

/* Every channel out of the rotation, its held messages dropped. */
static void
ss_rot_reset_channels(struct xg_session *s)
{
    xg_registry_channel_foreach(s->reg, ss_rot_reset_cb, NULL);
}

/* The rotation failed on B for WHY: B is retired, A untouched. */
static void
ss_rot_fail(struct xg_session *s, const char *why)
{
    struct ss_rot *r = s->rot;

    xg_log_warn("upstream %s: rotation #%u -> #%u failed: %s", s->name,
        r->a_id, r->b_id, why);
    r->failed = 1;
    evtimer_del(r->ev_bound);
    ss_rot_reset_channels(s);
    xg_upstream_retire(s->up, r->b, why);
}

static void
ss_rot_check_soon(struct xg_session *s)
{
    if (s->rot != NULL) {
        event_active(s->rot->ev_check, EV_TIMEOUT, 1);
    }
}

/* Where DATA (NULL: nothing yet) of B stands on CH. */
static enum xg_track_cross
ss_rot_cross(struct xg_session *s, struct xg_reg_channel *ch,
    const char *data, size_t len)
{
    return s->ops->cross != NULL ? s->ops->cross(s->owner, ch, data, len)
                                 : XG_CROSS_SWITCH;
}

/*
 * Holds DATA of B for SC: 1. Past the bound while switching, the switch
 * ends now and 0 says DATA goes out after what was held; before (B still
 * restoring) it is dropped, a gap the channel's continuity will see.
 */
static int
ss_rot_hold(struct xg_session *s, struct ss_chan *sc, const char *data,
    size_t len)
{
    if (sc->nheld >= SS_ROT_MAX_HELD) {
        if (s->rot->phase != SR_CROSS) {
            return 1;
        }
        xg_log_warn("upstream %s: rotation #%u -> #%u: %zu messages of "
            "\"%s\" held: switching now", s->name, s->rot->a_id,
            s->rot->b_id, sc->nheld, sc->ch->name);
        ss_rot_end(s, "held bound");
        return 0;
    }
    if (sc->nheld == sc->held_cap) {
        sc->held_cap = sc->held_cap ? sc->held_cap * 2 : 8;
        sc->held = xg_realloc(sc->held, sc->held_cap * sizeof(*sc->held));
    }
    sc->held[sc->nheld].p = xg_strndup(data, len);
    sc->held[sc->nheld].len = len;
    sc->nheld++;
    return 1;
}

/* SC's held messages from FROM on go out as B's stream; all are freed. */
static void
ss_rot_release(struct xg_session *s, struct ss_chan *sc, size_t from)
{
    struct ss_msg *m = sc->held;
    size_t i, n = sc->nheld;

    sc->held = NULL;
    sc->nheld = sc->held_cap = 0;
    for (i = 0; i < n; i++) {
        if (i >= from) {
            ss_deliver(s, sc->ch, m[i].p, m[i].len, NULL);
        }
        free(m[i].p);
    }
    free(m);
}

/*
 * Goes through SC's held messages of B in order while they stand behind
 * what A delivered (dropped) or line up (the channel switches: what
 * follows goes out); stops at one that is ahead.
 */
static void
ss_rot_drain(struct xg_session *s, struct ss_chan *sc)
{
    enum xg_track_cross v = XG_CROSS_WAIT;
    size_t i, k;

    for (i = 0; i < sc->nheld; i++) {
        v = ss_rot_cross(s, sc->ch, sc->held[i].p, sc->held[i].len);
        if (v != XG_CROSS_DROP) {
            break;
        }
        sc->rot_dropped = 1;
    }
    if (i == sc->nheld || v == XG_CROSS_WAIT) {
        for (k = 0; k < i; k++) {
            free(sc->held[k].p);
        }
        memmove(sc->held, sc->held + i, (sc->nheld - i) * sizeof(*sc->held));
        sc->nheld -= i;
        return;
    }
    sc->rot = SR_CH_SWITCHED;
    s->rot->in_line++;
    ss_rot_release(s, sc, v == XG_CROSS_SWITCH ? i : i + 1);
}

/*
 * DATA on CH during the rotation, from C: 1 when the rotation took it
 * (held, dropped, or delivered as the message CH switches at), 0 when it
 * goes out as usual.
 */
static int
ss_rot_data(struct xg_session *s, struct xg_conn *c,
    struct xg_reg_channel *ch, const char *data, size_t len)
{
    struct ss_rot *r = s->rot;
    struct ss_chan *sc;

    if (c != r->b) {
        /* A's: dropped once the channel is on B (or A retires) */
        sc = ch->sess;
        return c != s->conn || (sc != NULL && sc->rot == SR_CH_SWITCHED);
    }
    if (r->failed) {
        return 1;
    }
    sc = ss_chan(s, ch);
    if (r->phase == SR_RETIRE || sc->rot == SR_CH_SWITCHED) {
        return 0;
    }
    if (r->phase != SR_CROSS || sc->rot != SR_CH_ON_B || sc->nheld > 0
        || r->a_lost) {
        return ss_rot_hold(s, sc, data, len);   /* a_lost: B takes over */
    }
    switch (ss_rot_cross(s, ch, data, len)) {
    case XG_CROSS_WAIT:
        return ss_rot_hold(s, sc, data, len);
    case XG_CROSS_DROP:
        sc->rot_dropped = 1;
        return 1;
    case XG_CROSS_DROP_SWITCH:
        sc->rot = SR_CH_SWITCHED;
        r->in_line++;
        ss_rot_check_soon(s);
        return 1;
    default:
        sc->rot = SR_CH_SWITCHED;
        r->in_line++;
        ss_rot_check_soon(s);
        return 0;               /* it goes out: B's stream from here */
    }
}

/* A delivered DATA on CH: B's held messages may line up now. */
static void
ss_rot_after(struct xg_session *s, struct xg_reg_channel *ch)
{
    struct ss_chan *sc = ch->sess;

    if (s->rot == NULL || s->rot->phase != SR_CROSS || sc == NULL
        || sc->rot != SR_CH_ON_B || sc->nheld == 0) {
        return;
    }
    ss_rot_drain(s, sc);
    ss_rot_check_soon(s);
}

struct ss_rot_names {
    struct xg_session  *s;
    char              **names;
    size_t              n, cap;
};

static void
ss_rot_names_cb(struct xg_reg_channel *ch, void *arg)
{
    struct ss_rot_names *l = arg;

    if (ch->state == XG_CHAN_CONFIRMED) {
        ss_chan(l->s, ch)->rot = SR_CH_SENT;
        ss_batch_add(&l->names, &l->n, &l->cap, ch->name);
    }
}

static void ss_rot_cross_start(struct xg_session *s);

/*
 * An unsubscribe batch NAMES[0..N-1] goes to the primary A while B
 * restores or switches: the channels B holds are unsubscribed on B too
 * (either answer settles the channel).
 */
static void
ss_rot_unsubscribe(struct xg_session *s, char **names, size_t n)
{
    struct ss_rot *r = s->rot;
    struct ss_rot_names l = { s, NULL, 0, 0 };
    struct xg_reg_channel *ch;
    size_t i;

    if (r == NULL || r->failed || r->phase == SR_RETIRE) {
        return;
    }
    for (i = 0; i < n; i++) {
        ch = xg_registry_channel(s->reg, names[i]);
        if (ch != NULL && ch->sess != NULL
            && ((struct ss_chan *) ch->sess)->rot != SR_CH_NONE) {
            ((struct ss_chan *) ch->sess)->rot = SR_CH_NONE;
            ss_chan_unhold(ch->sess);
            ss_batch_add(&l.names, &l.n, &l.cap, names[i]);
        }
    }
    if (l.n > 0) {
        ss_send_batches(s, 0, l.names, l.n, r->b);
    }
    free(l.names);
}

/*
 * Q, a subscribe sent on A, is answered after B was promoted: what it
 * subscribed lives on A, which is closing, so it is done again on B (a
 * client's new channel, a book's resync). Returns 1 when it was such an
 * answer.
 */
static int
ss_rot_late_answer(struct xg_session *s, const struct xg_reg_req *q)
{
    struct xg_reg_channel *ch;
    int i;

    if (s->rot == NULL || s->rot->phase != SR_RETIRE || q->conn == NULL
        || q->conn != s->rot->a) {
        return 0;
    }
    for (i = 0; i < q->nchan; i++) {
        ch = xg_registry_channel(s->reg, q->chan[i]);
        if (ch == NULL || ch->state != XG_CHAN_PENDING) {
            continue;
        }
        xg_log_info("upstream %s: rotation #%u -> #%u: \"%s\" was "
            "subscribed on #%u: again on #%u", s->name, s->rot->a_id,
            s->rot->b_id, ch->name, s->rot->a_id, s->rot->b_id);
        if (q->tag == XG_SESSION_RESUB) {
            xg_session_resubscribe(s, ch);
        } else {
            ch->sent = 0;
            xg_session_want(s, ch);
        }
    }
    return 1;
}

/* B's restore: the venue's steps, then every confirmed channel. */
static void
ss_rot_run(struct xg_session *s)
{
    struct ss_rot *r = s->rot;
    struct ss_rot_names l = { s, NULL, 0, 0 };
    int rc;

    while ((rc = s->ops->restore_step(s->owner, r->b, r->step)) == XG_OK) {
        r->step++;
    }
    if (rc == XG_AGAIN) {
        r->step++;
        return;
    }
    r->phase = SR_SUBS;
    xg_registry_channel_foreach(s->reg, ss_rot_names_cb, &l);
    if (l.n > 0) {
        xg_log_info("upstream %s: rotation #%u -> #%u: subscribing %zu "
            "channels on #%u", s->name, r->a_id, r->b_id, l.n, r->b_id);
        r->subs_left = ss_send_batches(s, 1, l.names, l.n, r->b);
    }
    free(l.names);
    if (r->subs_left == 0) {
        ss_rot_cross_start(s);
    }
}

/* The answer on B to a subscribe batch of the rotation: every channel
   must be in it, or the rotation fails. */
static void
ss_rot_sub_answer(struct xg_session *s, const struct xg_reg_req *q,
    const struct xg_jspan *result, const struct xg_jspan *error)
{
    struct ss_rot *r = s->rot;
    char *errtext = NULL, why[320];
    json_t *res;
    int i;
    size_t k;

    if (r == NULL || r->failed || q->conn != r->b || r->phase != SR_SUBS) {
        return;
    }
    res = s->ops->sub_result(s->owner, q, result, error, &errtext);
    for (i = 0; i < q->nchan; i++) {
        struct xg_reg_channel *ch = xg_registry_channel(s->reg, q->chan[i]);
        int ok = 0;

        for (k = 0; res != NULL && k < json_array_size(res); k++) {
            const char *n = json_string_value(json_array_get(res, k));

            if (n != NULL && strcmp(n, q->chan[i]) == 0) {
                ok = 1;
                break;
            }
        }
        if (!ok) {
            snprintf(why, sizeof(why), "channel \"%.100s\" refused on #%u: "
                "%.160s", q->chan[i], r->b_id, errtext != NULL ? errtext
                : "not in the result");
            json_decref(res);
            free(errtext);
            ss_rot_fail(s, why);
            return;
        }
        if (ch != NULL && ch->sess != NULL
            && ((struct ss_chan *) ch->sess)->rot == SR_CH_SENT) {
            ((struct ss_chan *) ch->sess)->rot = SR_CH_ON_B;
        }
    }
    json_decref(res);
    free(errtext);
    if (--r->subs_left == 0) {
        ss_rot_cross_start(s);
    }
}

static void
ss_rot_drain_cb(struct xg_reg_channel *ch, void *arg)
{
    struct ss_chan *sc = ch->sess;

    if (sc != NULL && sc->rot == SR_CH_ON_B && sc->nheld > 0) {
        ss_rot_drain(arg, sc);
    }
}

/* B is restored: each channel switches where it lines up, within the
   bound. */
static void
ss_rot_cross_start(struct xg_session *s)
{
    struct ss_rot *r = s->rot;

    r->phase = SR_CROSS;
    xg_log_info("upstream %s: rotation #%u -> #%u: #%u restored in %llu ms, "
        "switching %zu channels", s->name, r->a_id, r->b_id, r->b_id,
        (unsigned long long) (xg_now_ms() - r->start_ms),
        xg_registry_nchannels(s->reg));
    if (r->a_lost) {
        ss_rot_check_soon(s);   /* nothing to line up with */
        return;
    }
    ss_timer(r->ev_bound, SS_ROT_SWITCH_MS);
    xg_registry_channel_foreach(s->reg, ss_rot_drain_cb, s);
    ss_rot_check_soon(s);
}

struct ss_rot_scan {
    struct xg_session  *s;
    size_t              waiting;
};

static void
ss_rot_scan_cb(struct xg_reg_channel *ch, void *arg)
{
    struct ss_rot_scan *sc = arg;
    struct ss_chan *c = ch->sess;

    if (c != NULL && c->rot == SR_CH_ON_B && (c->nheld > 0
        || ss_rot_cross(sc->s, ch, NULL, 0) == XG_CROSS_WAIT)) {
        sc->waiting++;
    }
}

/* Once per loop pass while switching: is every channel on B (or free to
   switch with nothing in line)? */
static void
ss_rot_on_check(evutil_socket_t fd, short what, void *arg)
{
    struct xg_session *s = arg;
    struct ss_rot_scan scan = { s, 0 };

    if (s->rot == NULL || s->rot->failed || s->rot->phase != SR_CROSS) {
        return;
    }
    if (s->rot->a_lost) {
        ss_rot_end(s, "the old connection was lost");
        return;
    }
    xg_registry_channel_foreach(s->reg, ss_rot_scan_cb, &scan);
    if (scan.waiting == 0) {
        ss_rot_end(s, "in line");
    }
}

static void
ss_rot_keep_cb(struct xg_reg_channel *ch, void *arg)
{
    struct ss_rot_names *l = arg;
    struct ss_chan *sc = ch->sess;

    switch (ch->state) {
    case XG_CHAN_CONFIRMED:
        /* B subscribes it at the end of its steps; past them, a channel
           not on B is subscribed anew when B takes over */
        if (l->s->rot->phase != SR_STEPS
            && (sc == NULL || sc->rot == SR_CH_NONE)) {
            ch->state = XG_CHAN_PENDING;
            ch->sent = 0;
        }
        break;
    case XG_CHAN_PENDING:
        ch->sent = 0;       /* its subscribe went with A */
        break;
    default:
        if (ch->nsubs > 0 || ch->nwaiters > 0) {
            ch->state = XG_CHAN_PENDING;
            ch->sent = 0;
        } else {
            ss_batch_add(&l->names, &l->n, &l->cap, ch->name);
        }
        break;
    }
}

/*
 * A was lost while B restores: the channels B holds stay confirmed, the
 * others are subscribed on B when it takes over (the registry's reset
 * after an outage, for the channels B does not hold).
 */
static void
ss_rot_keep_channels(struct xg_session *s)
{
    struct ss_rot_names l = { s, NULL, 0, 0 };
    struct xg_reg_channel *ch;
    size_t i;

    xg_registry_channel_foreach(s->reg, ss_rot_keep_cb, &l);
    for (i = 0; i < l.n; i++) {
        if ((ch = xg_registry_channel(s->reg, l.names[i])) != NULL) {
            xg_registry_channel_delete(s->reg, ch);
        }
        free(l.names[i]);
    }
    free(l.names);
}

static void
ss_rot_force_cb(struct xg_reg_channel *ch, void *arg)
{
    struct xg_session *s = arg;
    struct ss_rot *r = s->rot;
    struct ss_chan *sc = ch->sess;

    if (sc != NULL && (sc->rot == SR_CH_ON_B
                       || (r->a_lost && sc->rot == SR_CH_SWITCHED))) {
        /* on B, not in line: continuity as after an outage (with A lost,
           a channel switched already too: its tracker went down with A) */
        if (sc->rot == SR_CH_SWITCHED) {
            sc->rot_dropped = 1;
        }
        if (sc->nheld > 0 || ss_rot_cross(s, ch, NULL, 0) == XG_CROSS_WAIT
            || r->a_lost) {
            r->forced++;
        } else {
            r->quiet++;
        }
        sc->rot = SR_CH_SWITCHED;
        if (s->ops->cross_force != NULL) {
            s->ops->cross_force(s->owner, ch, r->a_lost);
        }
        ss_rot_release(s, sc, 0);
        if (s->ops->cross_done != NULL) {
            s->ops->cross_done(s->owner, ch, sc->rot_dropped);
        }
    } else if (ch->state == XG_CHAN_CONFIRMED && !r->a_lost
               && (sc == NULL || sc->rot != SR_CH_SWITCHED)) {
        /* confirmed on A during the rotation: subscribed on B now, what
           B brings checked as after an outage */
        r->forced++;
        if (s->ops->cross_force != NULL) {
            s->ops->cross_force(s->owner, ch, 0);
        }
        xg_session_resubscribe(s, ch);
    }
    if (sc != NULL) {
        sc->rot = SR_CH_NONE;
        sc->rot_dropped = 0;
        ss_chan_unhold(sc);
    }
}

/*
 * The switch is over (WHY): B is promoted, the channels not in line
 * switch as after an outage, and A retires (its last words, then its
 * requests in flight answered). With A lost, B takes over as a restore.
 */
static void
ss_rot_end(struct xg_session *s, const char *why)
{
    struct ss_rot *r = s->rot;
    uint64_t ms;

    evtimer_del(r->ev_bound);
    xg_upstream_promote(s->up, r->b);
    if (xg_conn_role(r->b) != XG_CONN_PRIMARY) {
        /* the upstream would not promote it (logged): B is on its way
           out, its loss ends the rotation */
        r->failed = 1;
        ss_rot_reset_channels(s);
        return;
    }
    r->phase = SR_RETIRE;
    s->conn = r->b;
    if (r->a_lost) {
        s->restore_start_ms = r->start_ms;
        ss_ready(s, 0);
    }
    xg_registry_channel_foreach(s->reg, ss_rot_force_cb, s);
    s->rot_in_line += r->in_line;
    s->rot_quiet += r->quiet;
    s->rot_forced += r->forced;
    xg_log_info("upstream %s: rotation #%u -> #%u: switched (%s) %llu ms "
        "after the start: %u channels in line, %u quiet, %u as after an "
        "outage", s->name, r->a_id, r->b_id, why,
        (unsigned long long) (xg_now_ms() - r->start_ms), r->in_line,
        r->quiet, r->forced);
    if (r->a == NULL) {
        ss_rot_free(s);
        return;
    }
    if (s->ops->retiring != NULL) {
        s->ops->retiring(s->owner, r->a);
    }
    ms = s->request_ms + 1000 > SS_ROT_RETIRE_MS ? s->request_ms + 1000
                                                 : SS_ROT_RETIRE_MS;
    ss_timer(r->ev_bound, ms);
    ss_rot_check_retire(s, r->a);
}

static void
ss_rot_count_cb(struct xg_reg_req *q, void *arg)
{
    struct ss_ids *l = arg;

    l->n += q->conn == l->c;
}

/* C answered something: once the retiring A has no request in flight,
   it is retired. */
static void
ss_rot_check_retire(struct xg_session *s, struct xg_conn *c)
{
    struct ss_rot *r = s->rot;
    struct ss_ids l = { c, NULL, 0, 0, 0 };

    if (r == NULL || r->phase != SR_RETIRE || c == NULL || c != r->a
        || r->retired) {
        return;
    }
    xg_registry_inflight_foreach(s->reg, ss_rot_count_cb, &l);
    if (l.n > 0) {
        return;
    }
    r->retired = 1;
    evtimer_del(r->ev_bound);
    xg_log_info("upstream %s: rotation #%u -> #%u: #%u has no request in "
        "flight: retiring it", s->name, r->a_id, r->b_id, r->a_id);
    xg_upstream_retire(s->up, r->a, "rotated");
}

/* The switch bound ran out (the channels not in line switch as after an
   outage), or the retire bound (A is retired with what it still has in
   flight). */
static void
ss_rot_on_bound(evutil_socket_t fd, short what, void *arg)
{
    struct xg_session *s = arg;
    struct ss_rot *r = s->rot;

    if (r == NULL || r->failed) {
        return;
    }
    if (r->phase == SR_CROSS) {
        ss_rot_end(s, "bound");
        return;
    }
    if (r->phase == SR_RETIRE && r->a != NULL && !r->retired) {
        r->retired = 1;
        xg_log_warn("upstream %s: rotation #%u -> #%u: #%u still has "
            "requests in flight: retiring it all the same", s->name,
            r->a_id, r->b_id, r->a_id);
        xg_upstream_retire(s->up, r->a, "rotated");
    }
}

void
xg_session_rotate(struct xg_session *s, struct xg_conn *c)
{
    struct ss_rot *r;

    if (s->rot != NULL || s->st != XG_SESSION_READY || s->conn == NULL) {
        xg_upstream_retire(s->up, c, "the session is not ready to rotate");
        return;
    }
    r = xg_calloc(1, sizeof(*r));
    r->a = s->conn;
    r->b = c;
    r->a_id = xg_conn_id(r->a);
    r->b_id = xg_conn_id(c);
    r->start_ms = xg_now_ms();
    r->ev_bound = evtimer_new(s->base, ss_rot_on_bound, s);
    r->ev_check = event_new(s->base, -1, 0, ss_rot_on_check, s);
    s->rot = r;
    xg_log_info("upstream %s: rotation #%u -> #%u: restoring the session on "
        "#%u while #%u serves", s->name, r->a_id, r->b_id, r->b_id, r->a_id);
    ss_rot_run(s);
}

/* ---- /status ---- */

struct ss_list {
    json_t  *arr;
    size_t   n;
};

static void
ss_list_unconfirmed_cb(struct xg_reg_channel *ch, void *arg)
{
    struct ss_list *l = arg;

    if (ch->unconfirmed) {
        if (json_array_size(l->arr) < SS_MAX_LISTED) {
            json_array_append_new(l->arr, json_string(ch->name));
        }
        l->n++;
    }
}

void
xg_session_status(struct xg_session *s, json_t *obj)
{
    struct ss_list l = { json_array(), 0 };

    json_object_set_new(obj, "messages_in",
        json_integer((json_int_t) s->messages_in));
    json_object_set_new(obj, "last_restore_ms",
        json_integer((json_int_t) s->last_restore_ms));
    json_object_set_new(obj, "restores",
        json_integer((json_int_t) s->restores));
    json_object_set_new(obj, "stale_resubscribes",
        json_integer((json_int_t) s->stale_resubscribes));
    json_object_set_new(obj, "resubscribe_retries",
        json_integer((json_int_t) s->resubscribe_retries));
    json_object_set_new(obj, "pending_requests",
        json_integer((json_int_t) xg_registry_ninflight(s->reg)));
    json_object_set_new(obj, "queued_requests",
        json_integer((json_int_t) xg_registry_nqueued(s->reg)));
    xg_registry_channel_foreach(s->reg, ss_list_unconfirmed_cb, &l);
    json_object_set_new(obj, "unconfirmed_channels", l.arr);
    json_object_set_new(obj, "unconfirmed_count",
        json_integer((json_int_t) l.n));
    json_object_set_new(obj, "rotation_switches_in_line",
        json_integer((json_int_t) s->rot_in_line));
    json_object_set_new(obj, "rotation_switches_quiet",
        json_integer((json_int_t) s->rot_quiet));
    json_object_set_new(obj, "rotation_switches_forced",
        json_integer((json_int_t) s->rot_forced));
}
