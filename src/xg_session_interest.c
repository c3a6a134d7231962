/*
 * xg_session_interest.c: what edges want, subscribed upstream (issue 17).
 *
 * When the upstream publishes (xg_redis.h), the session polls the edges'
 * interest set once a second (XG_SESSION_INTEREST_POLL_MS) and holds the
 * channels in it through a registry client of its own (owner the
 * session, no connection: xg_session_interest_client()), so the normal
 * subscribe path applies to them: batching, restore after a reconnect,
 * stale resubscribes, and unsubscribe_linger once a channel leaves the
 * set (and no local bot holds it). Private channels (Deribit's "user.")
 * are taken from it only when the session's own connection is
 * authenticated (xg_session_interest_private()): an edge's bots then act
 * on that account through the core's request service.
 *
 * A poll without an answer (Redis down) changes nothing: the channels
 * held stay held until a poll says otherwise. Nor does the first
 * interest TTL of a new connection take any away: a Redis restarted
 * without its data has an empty set until each edge declares its
 * channels again (at once when its own connection is back, else within
 * ttl/3), and the edges' bots would meanwhile lose what the core let go
 * (trades published by nobody: a hole no sequence number shows). Without
 * `publish` (a reload removed it) the session lets go of them all.
 */
#include "xg_session_int.h"
#include "xg_redis.h"
#include "xg_registry.h"
#include "xg_upstream.h"

#include <event2/event.h>

#define XG_SESSION_INTEREST_POLL_MS   1000
#define XG_SESSION_INTEREST_MAX_NAME  256

static int
si_cmp(const void *a, const void *b)
{
    return strcmp(*(char *const *) a, *(char *const *) b);
}

/* See xg_session.h. */
int
xg_session_interest_name_ok(const char *name, int priv)
{
    size_t i, n = strlen(name);

    if (n == 0 || n > XG_SESSION_INTEREST_MAX_NAME
        || (!priv && strncmp(name, "user.", 5) == 0))
    {
        return 0;
    }
    for (i = 0; i < n; i++) {
        if ((unsigned char) name[i] <= ' ' || name[i] == '"'
            || name[i] == '\\' || (unsigned char) name[i] >= 0x7f)
        {
            return 0;
        }
    }
    return 1;
}

/* The session's interest is WANT[0..NWANT-1] (sorted, unique) now;
   with KEEP, and what it holds besides. */
static void
si_apply(struct xg_session *s, char **want, size_t nwant, int keep)
{
    struct xg_reg_client *rc = s->interest;
    char **held, **add, **rem;
    size_t nheld, nadd = 0, nrem = 0, i = 0, j = 0;
    int c;

    if (rc == NULL) {
        if (nwant == 0) {
            return;
        }
        rc = s->interest = xg_registry_client_new(s->reg, s, NULL);
    }
    nheld = rc->nchans;
    held = xg_calloc(nheld + 1, sizeof(*held));
    for (i = 0; i < nheld; i++) {
        held[i] = rc->chans[i]->name;
    }
    qsort(held, nheld, sizeof(*held), si_cmp);
    add = xg_calloc(nwant + 1, sizeof(*add));
    rem = xg_calloc(nheld + 1, sizeof(*rem));
    i = 0;
    while (i < nwant || j < nheld) {
        c = i == nwant ? 1 : j == nheld ? -1 : strcmp(want[i], held[j]);
        if (c < 0) {
            add[nadd++] = want[i++];
        } else if (c > 0) {
            if (!keep) {
                rem[nrem++] = held[j];
            } else if (!s->interest_kept) {
                s->interest_kept = 1;
                xg_upstream_log(XG_LOG_INFO, s->up, "interest: %s and "
                    "others no longer in the set are kept until %llu s "
                    "after the connection to redis (it may have lost the "
                    "set)", held[j],
                    (unsigned long long) XG_REDIS_INTEREST_TTL_MS / 1000);
            }
            j++;
        } else {
            i++;
            j++;
        }
    }
    if (nadd > 0 || nrem > 0) {
        xg_upstream_log(XG_LOG_INFO, s->up, "interest: %zu channels wanted "
            "by edges, %zu new, %zu no longer", nwant, nadd, nrem);
    }
    if (nrem > 0) {
        /* the names belong to the channels: copy before leaving them */
        for (i = 0; i < nrem; i++) {
            rem[i] = xg_strdup(rem[i]);
        }
        xg_session_unsubscribe(s, rc, rem, nrem, NULL);
        for (i = 0; i < nrem; i++) {
            free(rem[i]);
        }
    }
    if (nadd > 0) {
        xg_session_subscribe(s, rc, "null", add, nadd,
            XG_REDIS_INTEREST_MAX, 1);
    }
    free(held);
    free(add);
    free(rem);
}

/* A poll's answer: the channels some edge wants (NAMES NULL: none). */
static void
si_got(void *arg, char *const *names, size_t n)
{
    struct xg_session *s = arg;
    char **want;
    size_t i, nok = 0, k = 0;
    uint64_t conn;

    if (names == NULL) {
        return;
    }
    conn = xg_redis_ready_ms(s->interest_pub);
    if (conn != s->interest_conn) {
        /* another connection: see the top of this file */
        s->interest_conn = conn;
        if (s->interest != NULL && s->interest->nchans > 0) {
            s->interest_keep = conn + XG_REDIS_INTEREST_TTL_MS;
            s->interest_kept = 0;
        }
    }
    want = xg_calloc(n + 1, sizeof(*want));
    for (i = 0; i < n; i++) {
        if (xg_session_interest_name_ok(names[i], s->interest_private)) {
            want[nok++] = names[i];
        }
    }
    qsort(want, nok, sizeof(*want), si_cmp);
    for (i = 0; i < nok; i++) {     /* a set has no duplicates: be sure */
        if (k == 0 || strcmp(want[i], want[k - 1]) != 0) {
            want[k++] = want[i];
        }
    }
    si_apply(s, want, k, xg_now_ms() < s->interest_keep);
    free(want);
}

static void
si_on_tick(evutil_socket_t fd, short what, void *arg)
{
    struct xg_session *s = arg;
    struct xg_redis *pub = xg_upstream_publisher(s->up);

    if (pub != NULL) {
        s->interest_pub = pub;
        (void) xg_redis_interest_poll(pub, si_got, s);
    } else if (s->interest != NULL && s->interest->nchans > 0) {
        si_apply(s, NULL, 0, 0);
    }
    xg_timer_add_ms(s->ev_interest, XG_SESSION_INTEREST_POLL_MS);
}

/* See xg_session_int.h. */
void
ss_interest_start(struct xg_session *s)
{
    s->ev_interest = xg_timer_new(s->base, si_on_tick, s);
    if (s->ev_interest != NULL) {
        xg_timer_add_ms(s->ev_interest, XG_SESSION_INTEREST_POLL_MS);
    }
}

/* See xg_session.h. */
void
xg_session_interest_stop(struct xg_session *s)
{
    if (s == NULL) {
        return;
    }
    if (s->interest_pub != NULL) {
        xg_redis_interest_cancel(s->interest_pub, s);
        s->interest_pub = NULL;
    }
    if (s->ev_interest != NULL) {
        xg_timer_del(s->ev_interest);
    }
    if (s->interest != NULL) {
        xg_registry_client_free(s->reg, s->interest, xg_now_ms());
        s->interest = NULL;
    }
}

/* See xg_session_int.h. */
void
ss_interest_free(struct xg_session *s)
{
    if (s->interest_pub != NULL) {
        xg_redis_interest_cancel(s->interest_pub, s);
    }
    if (s->ev_interest != NULL) {
        xg_timer_free(s->ev_interest);
    }
}

/* See xg_session_int.h. */
void
ss_subreq_done(struct xg_session *s, struct xg_reg_subreq *sr)
{
    if (s->interest != NULL && sr->client == s->interest) {
        xg_registry_subreq_free(s->reg, sr);    /* nobody to answer */
        return;
    }
    s->ops->subreq_done(s->owner, sr);
}

/* See xg_session.h. */
void
xg_session_interest_private(struct xg_session *s, int allow)
{
    s->interest_private = allow;
}
