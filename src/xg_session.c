/*
 * xg_session.c: the exchange-independent session of one upstream: the
 * restore, the request table, the subscription engine (see xg_session.h).
 */
#include "xg_session_int.h"
#include "xg_redis.h"

#include <fnmatch.h>

#define SS_RETRY_MIN_MS     1000        /* unconfirmed channel: first retry */
#define SS_RETRY_MAX_MS     30000       /* ... doubling up to this */
#define SS_MAX_LISTED       100         /* names listed in /status */
#define SS_RR_SLACK         32          /* the budget's round robin: turns
                                           a client may make up for */

static void ss_flush(struct xg_session *s);
static void ss_on_budget(evutil_socket_t fd, short what, void *arg);

void
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
        xg_timer_free(sc->ev_retry);
    }
    if (sc->ev_stale != NULL) {
        xg_timer_free(sc->ev_stale);
    }
    free(sc);
}

struct ss_chan *
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
    s->ev_linger = xg_timer_new(base, ss_on_flush, s);
    s->ev_budget = xg_timer_new(base, ss_on_budget, s);
    xg_registry_set_session_free(reg, ss_chan_free);
    ss_interest_start(s);
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
    ss_interest_free(s);
    event_free(s->ev_flush);
    xg_timer_free(s->ev_linger);
    xg_timer_free(s->ev_budget);
    free(s->held);
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

void
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
int
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
        xg_timer_add_ms(s->ev_linger, first - now);
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

static void
ss_stale_forget(struct xg_reg_channel *ch, void *arg)
{
    ch->stale_set = 0;
}

/* See xg_session.h. */
void
xg_session_set_stale(struct xg_session *s, const struct xg_stale *stale,
    size_t nstale)
{
    s->stale = stale;
    s->nstale = nstale;
    xg_registry_channel_foreach(s->reg, ss_stale_forget, NULL);
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
        sc->ev_stale = xg_timer_new(s->base, ss_on_stale, sc);
    }
    xg_timer_add_ms(sc->ev_stale, stale);
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
        sc->ev_retry = xg_timer_new(s->base, ss_on_retry, sc);
    }
    xg_timer_add_ms(sc->ev_retry, ch->retry_ms);
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
            ss_subreq_done(s, done[j]);
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
        xg_timer_add_ms(sc->ev_stale, ch->last_data_ms + stale - now);
        return;
    }
    if (ch->nsubs == 0 || !s->ready) {
        xg_timer_add_ms(sc->ev_stale, stale);
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

/* What the publisher's snapshot callback needs: the venue asked. */
struct ss_snap {
    struct xg_session      *s;
    struct xg_reg_channel  *ch;
};

static char *
ss_snapshot(void *arg, size_t *len)
{
    struct ss_snap *a = arg;

    return a->s->ops->snapshot(a->s->owner, a->ch, len);
}

void
xg_session_publish(struct xg_session *s, struct xg_reg_channel *ch,
    const char *data, size_t len)
{
    struct xg_redis *pub = xg_upstream_publisher(s->up);
    struct ss_snap a;

    if (pub == NULL) {
        return;
    }
    a.s = s;
    a.ch = ch;
    xg_redis_publish(pub, ch->name, data, len,
        s->ops->snapshot != NULL ? ss_snapshot : NULL, &a);
}

void
xg_session_publish_snapshot(struct xg_session *s, struct xg_reg_channel *ch,
    const char *data, size_t len)
{
    struct xg_redis *pub = xg_upstream_publisher(s->up);

    if (pub != NULL) {
        xg_redis_publish_snapshot(pub, ch->name, data, len);
    }
}

void
xg_session_fanout(struct xg_session *s, struct xg_reg_channel *ch,
    const char *data, size_t len)
{
    size_t i, n = 0;

    xg_session_publish(s, ch, data, len);
    if (ch->nsubs == 0) {
        return;
    }
    if (ch->nsubs > s->to_cap) {
        s->to_cap = ch->nsubs * 2;
        s->to = xg_realloc(s->to, s->to_cap * sizeof(*s->to));
    }
    for (i = 0; i < ch->nsubs; i++) {
        if (ch->subs[i]->out != NULL) {     /* not the interest holder */
            s->to[n++] = ch->subs[i]->out;
        }
    }
    if (n > 0) {
        xg_client_fanout(s->to, n, data, len);
    }
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
void
ss_deliver(struct xg_session *s, struct xg_reg_channel *ch, const char *data,
    size_t len, const struct xg_umsg *m, uint64_t now)
{
    struct xg_umsg none;

    if (m == NULL) {
        memset(&none, 0, sizeof(none));
        none.kind = XG_UMSG_DATA;
        none.chan = ch->name;
        none.chan_len = strlen(ch->name);
        m = &none;
    }
    ch->last_data_ms = now;
    if (s->ops->data(s->owner, ch, data, len, m)) {
        xg_session_fanout(s, ch, data, len);
    }
}

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
        ss_deliver(s, ch, data, len, &m, xg_conn_rx_ms(c));
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

        if (rc != s->interest
            && !s->ops->allowed(s->owner, rc->owner, sr->chan[i], flags))
        {
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
            if (rc != s->interest) {
                s->ops->joined(s->owner, rc->owner, ch, 0);
            }
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
        ss_subreq_done(s, sr);
    } else {
        ss_log_subreq(s, sr, NULL, "waiting for the exchange");
    }
    /* after the answer: what a late joiner gets (a book's snapshot) */
    for (i = 0; i < nlive && rc != s->interest; i++) {
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
        for (i = 0; i < rc->nchans && rc != s->interest; i++) {
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
        if (rc != s->interest) {
            s->ops->left(s->owner, rc->owner, ch);
        }
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

/* Starts Q's deadline timer (MS from now): one timer (xg_timer.h) per
   request that has a deadline, freed with the request. */
static void
ss_req_arm(struct xg_session *s, struct xg_reg_req *q, uint64_t ms)
{
    if (q->ev == NULL) {
        q->ev = xg_timer_new(s->base, ss_on_request_expired, q);
    }
    q->deadline_ms = xg_now_ms() + ms;
    q->sess = s;
    xg_timer_add_ms(q->ev, ms);
}

static void
ss_req_disarm(struct xg_reg_req *q)
{
    if (q->ev != NULL) {
        xg_timer_del(q->ev);
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

/* ---- the request budget ---- */

static int
ss_budget_on(const struct xg_session *s)
{
    return s->budget.on && s->ops->cost != NULL;
}

/* Q's pool and cost, from the venue. */
static void
ss_budget_cost(struct xg_session *s, struct xg_reg_req *q)
{
    q->bcost = 0;
    q->bpool = s->ops->cost(s->owner, q, &q->bcost);
}

/* Arms the budget timer to fire US microseconds from now. */
static void
ss_budget_arm(struct xg_session *s, uint64_t us)
{
    struct timeval tv;

    if (us > (uint64_t) 3600 * 1000000) {
        us = (uint64_t) 3600 * 1000000;     /* a pool that never refills:
                                               looked at again hourly */
    }
    tv.tv_sec = (time_t) (us / 1000000);
    tv.tv_usec = (suseconds_t) (us % 1000000);
    xg_timer_add(s->ev_budget, &tv);
}

static int ss_write(struct xg_session *s, struct xg_reg_req *q);
static void ss_put_in_flight(struct xg_session *s, struct xg_reg_req *q,
    struct xg_conn *c);

/* The held request first in line (dropping the ids of those gone:
   answered by a timeout or lost with their connection), or NULL. */
static struct xg_reg_req *
ss_held_head(struct xg_session *s)
{
    struct xg_reg_req *q;

    while (s->nheld > 0) {
        q = xg_registry_inflight_get(s->reg, s->held[s->held_first]);
        if (q != NULL && q->held) {
            return q;
        }
        s->held_first++;
        s->nheld--;
    }
    s->held_first = 0;
    return NULL;
}

static void
ss_held_push(struct xg_session *s, uint64_t id)
{
    if (s->held_first + s->nheld == s->held_cap) {
        if (s->held_first > 0) {
            memmove(s->held, s->held + s->held_first,
                s->nheld * sizeof(*s->held));
            s->held_first = 0;
        } else {
            s->held_cap = s->held_cap ? s->held_cap * 2 : 16;
            s->held = xg_realloc(s->held, s->held_cap * sizeof(*s->held));
        }
    }
    s->held[s->held_first + s->nheld++] = id;
}

/* 1 when A comes before B (NULL) in the queue's round robin: the
   session's own first, then the client that had the fewest requests
   served (its stamp; FIFO on a tie: A is found after B). */
static int
ss_rr_before(const struct xg_reg_req *a, const struct xg_reg_req *b)
{
    if (b == NULL) {
        return 1;
    }
    if ((a->client == NULL) != (b->client == NULL)) {
        return a->client == NULL;
    }
    return a->client != NULL && a->client->rr_stamp < b->client->rr_stamp;
}

/*
 * Writes what the budget pays for now: the held requests first, in their
 * order (nothing else while one waits); then, when ready, the queue,
 * round-robin across its clients. What is left waits for the timer, armed
 * for the earliest moment one of them can be paid.
 */
static void
ss_budget_run(struct xg_session *s)
{
    uint64_t now = xg_now_us(), wait = UINT64_MAX;
    uint64_t pw[XG_BUDGET_POOLS], w;
    double pc[XG_BUDGET_POOLS];
    struct xg_reg_req *q, *best;
    unsigned i;

    xg_timer_del(s->ev_budget);
    while ((q = ss_held_head(s)) != NULL) {
        if (ss_budget_on(s)
            && (wait = xg_budget_wait_us(&s->budget, q->bpool, q->bcost,
                    now)) > 0)
        {
            ss_budget_arm(s, wait);
            return;
        }
        s->held_first++;
        s->nheld--;
        q->held = 0;
        xg_budget_spend(&s->budget, q->bpool, q->bcost, now);
        ss_write(s, q);
    }
    if (!s->ready) {
        return;
    }
    for ( ;; ) {
        for (i = 0; i < XG_BUDGET_POOLS; i++) {
            pw[i] = UINT64_MAX;     /* not looked at yet */
            pc[i] = 0;
        }
        wait = UINT64_MAX;
        best = NULL;
        for (q = xg_registry_queue_head(s->reg); q != NULL; q = q->next) {
            unsigned p = q->bpool < XG_BUDGET_POOLS ? q->bpool : 0;

            if (!ss_budget_on(s)) {
                w = 0;
            } else if (pw[p] != UINT64_MAX && pc[p] == q->bcost) {
                w = pw[p];      /* the pool's answer for this cost */
            } else {
                w = pw[p] = xg_budget_wait_us(&s->budget, p, q->bcost, now);
                pc[p] = q->bcost;
            }
            if (w > 0) {
                q->bwaited = 1;
                if (w < wait) {
                    wait = w;
                }
                continue;
            }
            if (ss_rr_before(q, best)) {
                best = q;
            }
        }
        if (best == NULL) {
            break;
        }
        q = best;
        xg_registry_queue_take(s->reg, q);
        if (q->client != NULL) {
            s->rr_vtime = q->client->rr_stamp;
            q->client->rr_stamp++;
        }
        if (q->bwaited) {
            s->budget_waited++;
        }
        xg_budget_spend(&s->budget, q->bpool, q->bcost, now);
        ss_req_disarm(q);
        ss_put_in_flight(s, q, s->conn);
        ss_write(s, q);
    }
    if (wait != UINT64_MAX) {
        ss_budget_arm(s, wait);
    }
}

static void
ss_on_budget(evutil_socket_t fd, short what, void *arg)
{
    ss_budget_run(arg);
}

void
xg_session_set_budget(struct xg_session *s, const struct xg_budget_conf *cf)
{
    int was = ss_budget_on(s);

    xg_budget_configure(&s->budget, cf, xg_now_us());
    if (was != ss_budget_on(s)) {
        xg_upstream_log(XG_LOG_INFO, s->up, "request budget %s",
            ss_budget_on(s) ? "on" : "off");
    }
    if (s->nheld > 0 || (s->ready && xg_registry_nqueued(s->reg) > 0)) {
        ss_budget_run(s);       /* the pools changed: what waits may go */
    }
}

/* ---- requests: in flight ---- */

int
xg_session_send(struct xg_session *s, struct xg_reg_req *q)
{
    return xg_session_send_on(s, q, s->conn);
}

/* Puts Q in flight on C under a fresh id (its request_timeout armed). */
static void
ss_put_in_flight(struct xg_session *s, struct xg_reg_req *q,
    struct xg_conn *c)
{
    q->conn = c;
    xg_registry_inflight_add(s->reg, q, 0);
    if (q->timed && s->request_ms != 0) {
        ss_req_arm(s, q, s->request_ms);
    }
}

/* Writes Q (in flight) on its connection, its id spliced in. */
static int
ss_write(struct xg_session *s, struct xg_reg_req *q)
{
    static const char *const keys[] = { "id" };
    struct xg_conn *c = q->conn;
    struct xg_jspan v[1];
    char idbuf[24];
    size_t n;
    char *out;
    int rc;

    if (xg_log_level >= XG_LOG_DEBUG) {
        ss_log_sent(s, q);
    }
    q->log_ms = xg_now_ms();
    if (xg_jscan_object(q->text, q->len, keys, 1, v) != XG_OK
        || v[0].p == NULL) {
        return XG_ERROR;        /* checked before it went in flight */
    }
    snprintf(idbuf, sizeof(idbuf), "%llu", (unsigned long long) q->up_id);
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
xg_session_send_on(struct xg_session *s, struct xg_reg_req *q,
    struct xg_conn *c)
{
    static const char *const keys[] = { "id" };
    struct xg_jspan v[1];

    if (xg_jscan_object(q->text, q->len, keys, 1, v) != XG_OK
        || v[0].p == NULL) {
        xg_upstream_log(XG_LOG_ERROR, s->up, "internal: request without id "
            "dropped");
        xg_registry_req_free(q);
        return XG_ERROR;
    }
    ss_req_disarm(q);
    ss_put_in_flight(s, q, c);
    if (ss_budget_on(s)) {
        uint64_t now = xg_now_us();

        ss_budget_cost(s, q);
        if (ss_held_head(s) != NULL
            || xg_budget_wait_us(&s->budget, q->bpool, q->bcost, now) > 0)
        {
            /* in flight already (its answer, timeout and loss handled as
               any other's), written when the budget allows */
            q->held = 1;
            ss_held_push(s, q->up_id);
            s->budget_waited++;
            xg_session_log_req(XG_LOG_DEBUG, s, q, "%s held for the request "
                "budget (%zu held)", q->method ? q->method : "?", s->nheld);
            ss_budget_run(s);
            return XG_OK;
        }
        xg_budget_spend(&s->budget, q->bpool, q->bcost, now);
    }
    return ss_write(s, q);
}

int
xg_session_submit(struct xg_session *s, struct xg_reg_req *q)
{
    int budget = ss_budget_on(s);

    if (s->ready && !budget) {
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
    q->bwaited = 0;
    if (budget) {
        ss_budget_cost(s, q);
    }
    if (q->client != NULL && q->client->rr_stamp + SS_RR_SLACK
                             < s->rr_vtime) {
        /* no credit banked while it had nothing waiting, beyond a few
           turns (missed between an answer and the next request) */
        q->client->rr_stamp = s->rr_vtime - SS_RR_SLACK;
    }
    xg_registry_queue_push(s->reg, q, 0);
    if (s->ready) {
        q->log_ms = 0;          /* sent at once, if it can be paid for */
        ss_budget_run(s);
        if (q->up_id == 0) {
            q->log_ms = xg_now_ms();    /* it waits in the queue */
        }
        return XG_OK;
    }
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
    int inflight = q->up_id != 0;
    int queued = !inflight || q->held;  /* held: never written */

    if (!inflight) {
        xg_registry_queue_take(s->reg, q);
    } else {
        q = xg_registry_inflight_take(s->reg, q->up_id);
        q->held = 0;
    }
    q->deadline_ms = 0;
    if (!s->ops->expired(s->owner, q, queued)) {
        xg_registry_req_free(q);
    }
    if (inflight) {
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
        if (q->held && q->client != NULL) {
            /* a client's, held for the budget: never written, so sent
               again as it is, whatever it does */
            q->held = 0;
            q->replay_of = q->up_id;
            q->next = replay;
            replay = q;
            (*replayed)++;
            continue;
        }
        q->held = 0;
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
        q->bwaited = 0;
        if (ss_budget_on(s)) {
            ss_budget_cost(s, q);
        }
        if (!q->nolimit && s->queue_ms != 0) {
            ss_req_arm(s, q, s->queue_ms);
        }
        xg_registry_queue_push(s->reg, q, 1);
        q->log_ms = xg_now_ms();
    }
}

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
            xg_upstream_log(XG_LOG_WARN, s->up, "rotation of #%u to #%u: #%u "
                "lost while #%u restores: #%u will take over", r->a_id,
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
            xg_upstream_log(XG_LOG_INFO, s->up, "rotation of #%u to #%u "
                "finished: #%u closed, #%u serves", r->a_id, r->b_id,
                r->a_id, r->b_id);
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
void
ss_ready(struct xg_session *s, int tell)
{
    struct xg_reg_req *q;
    size_t nq = 0;

    s->st = XG_SESSION_READY;
    s->ready = 1;
    if (ss_budget_on(s)) {
        nq = xg_registry_nqueued(s->reg);
        ss_budget_run(s);       /* as the budget allows, round robin */
        nq -= xg_registry_nqueued(s->reg);
    } else {
        while ((q = xg_registry_queue_pop(s->reg)) != NULL) {
            xg_session_send(s, q);
            nq++;
        }
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

/*
 * "budget": {"rate_limit": BOOL, "pools": {NAME: {"level", "max",
 * "refill", "spent"}}, "levels": {NAME: LEVEL}, "waiting": N (held and,
 * while ready, queued), "waited": N (requests that waited for it)}.
 */
static void
ss_budget_status(struct xg_session *s, json_t *obj)
{
    json_t *b, *pools, *levels;
    uint64_t now = xg_now_us();
    size_t waiting;
    unsigned i;

    if (s->ops->cost == NULL) {
        return;     /* the venue has no budget */
    }
    (void) ss_held_head(s);
    waiting = s->nheld + (s->ready ? xg_registry_nqueued(s->reg) : 0);
    b = json_object();
    pools = json_object();
    levels = json_object();
    for (i = 0; i < s->budget.npools; i++) {
        struct xg_budget_pool *p = &s->budget.pool[i];
        double level = xg_budget_level(&s->budget, i, now);

        json_object_set_new(pools, p->cf.name, json_pack("{s:f, s:f, s:f, "
            "s:f}", "level", level, "max", p->cf.max, "refill", p->cf.refill,
            "spent", p->spent));
        json_object_set_new(levels, p->cf.name, json_real(level));
    }
    json_object_set_new(b, "rate_limit", json_boolean(ss_budget_on(s)));
    json_object_set_new(b, "pools", pools);
    json_object_set_new(b, "levels", levels);
    json_object_set_new(b, "waiting", json_integer((json_int_t) waiting));
    json_object_set_new(b, "waited",
        json_integer((json_int_t) s->budget_waited));
    json_object_set_new(obj, "budget", b);
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
    ss_budget_status(s, obj);
}

/* ---- `stale PATTERN DURATION;` for the venues' conf ---- */

int
xg_stale_set(struct xg_conf *cf, const struct xg_conf_stmt *st,
    struct xg_stale **v, size_t *n)
{
    uint64_t ms;

    if (st->args[1][0] == '\0' || strlen(st->args[1]) > 256) {
        return xg_conf_error(cf, st, "\"stale\": the channel pattern must "
            "be 1 to 256 characters");
    }
    if (xg_conf_parse_duration(st->args[2], &ms) != XG_OK || ms < 100
        || ms > (uint64_t) 24 * 3600 * 1000) {
        return xg_conf_error(cf, st, "\"stale\": \"%s\" is not a duration "
            "between 100ms and 24h", st->args[2]);
    }
    *v = xg_realloc(*v, (*n + 1) * sizeof(**v));
    (*v)[*n].pattern = xg_strdup(st->args[1]);
    (*v)[*n].ms = ms;
    (*n)++;
    return XG_OK;
}

void
xg_stale_dump(struct xg_conf_dump *d, const char *name,
    const struct xg_stale *v, size_t n)
{
    char buf[32];
    size_t i;

    if (n == 0) {
        xg_conf_dump_comment(d, "%s: none", name);
    }
    for (i = 0; i < n; i++) {
        xg_conf_dump_words(d, name, v[i].pattern,
            xg_conf_fmt_duration(v[i].ms, buf, sizeof(buf)), NULL);
    }
}

void
xg_stale_free(struct xg_stale *v, size_t n)
{
    size_t i;

    for (i = 0; i < n; i++) {
        free(v[i].pattern);
    }
    free(v);
}
