/*
 * xg_session_rot.c: a session's make-before-break rotation (see
 * xg_session.h): the new connection B restored beside the primary A, each
 * channel switched where its stream lines up, B promoted, A retired.
 */
#include "xg_session_int.h"

static void ss_rot_end(struct xg_session *s, const char *why);

/* Frees the rotation (not the channels' held messages: see
   ss_rot_reset_channels()). */
void
ss_rot_free(struct xg_session *s)
{
    struct ss_rot *r = s->rot;

    if (r == NULL) {
        return;
    }
    xg_timer_free(r->ev_bound);
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

    xg_upstream_log(XG_LOG_WARN, s->up, "rotation of #%u to #%u failed: %s",
        r->a_id, r->b_id, why);
    r->failed = 1;
    xg_timer_del(r->ev_bound);
    ss_rot_reset_channels(s);
    xg_upstream_retire(s->up, r->b, why);
}

void
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
        xg_upstream_log(XG_LOG_WARN, s->up, "rotation of #%u to #%u: %zu "
            "messages of \"%s\" held: switching now", s->rot->a_id,
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
            ss_deliver(s, sc->ch, m[i].p, m[i].len, NULL, xg_now_ms());
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
int
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
void
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
void
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
int
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
        xg_upstream_log(XG_LOG_INFO, s->up, "rotation of #%u to #%u: "
            "\"%s\" was subscribed on #%u: again on #%u", s->rot->a_id,
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
void
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
        xg_upstream_log(XG_LOG_INFO, s->up, "rotation of #%u to #%u: "
            "subscribing %zu channels on #%u", r->a_id, r->b_id, l.n,
            r->b_id);
        r->subs_left = ss_send_batches(s, 1, l.names, l.n, r->b);
    }
    free(l.names);
    if (r->subs_left == 0) {
        ss_rot_cross_start(s);
    }
}

/* The answer on B to a subscribe batch of the rotation: every channel
   must be in it, or the rotation fails. */
void
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
    xg_upstream_log(XG_LOG_INFO, s->up, "rotation of #%u to #%u: #%u "
        "restored in %llu ms, switching %zu channels", r->a_id, r->b_id,
        r->b_id,
        (unsigned long long) (xg_now_ms() - r->start_ms),
        xg_registry_nchannels(s->reg));
    if (r->a_lost) {
        ss_rot_check_soon(s);   /* nothing to line up with */
        return;
    }
    xg_timer_add_ms(r->ev_bound, SS_ROT_SWITCH_MS);
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
void
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

    xg_timer_del(r->ev_bound);
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
    xg_upstream_log(XG_LOG_INFO, s->up, "rotation of #%u to #%u: switched (%s) "
        "%llu ms after #%u opened: %u channels in line, %u quiet, %u as after "
        "an outage", r->a_id, r->b_id, why,
        (unsigned long long) (xg_now_ms() - r->start_ms), r->b_id,
        r->in_line, r->quiet, r->forced);
    if (r->a == NULL) {
        ss_rot_free(s);
        return;
    }
    if (s->ops->retiring != NULL) {
        s->ops->retiring(s->owner, r->a);
    }
    ms = s->request_ms + 1000 > SS_ROT_RETIRE_MS ? s->request_ms + 1000
                                                 : SS_ROT_RETIRE_MS;
    xg_timer_add_ms(r->ev_bound, ms);
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
void
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
    xg_timer_del(r->ev_bound);
    xg_upstream_log(XG_LOG_INFO, s->up, "rotation of #%u to #%u: #%u has no "
        "request in flight: retiring it", r->a_id, r->b_id, r->a_id);
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
        xg_upstream_log(XG_LOG_WARN, s->up, "rotation of #%u to #%u: #%u still "
            "has requests in flight: retiring it all the same", r->a_id,
            r->b_id, r->a_id);
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
    r->ev_bound = xg_timer_new(s->base, ss_rot_on_bound, s);
    r->ev_check = event_new(s->base, -1, 0, ss_rot_on_check, s);
    s->rot = r;
    xg_upstream_log(XG_LOG_INFO, s->up, "rotation of #%u to #%u: restoring the "
        "session on #%u while #%u serves", r->a_id, r->b_id, r->b_id, r->a_id);
    ss_rot_run(s);
}
