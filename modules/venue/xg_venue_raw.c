/*
 * xg_venue_raw.c: the raw venue (`protocol raw;`), a pass-through for any
 * exchange exgate has no venue for: the seed's standalone pattern, plus
 * subscription replay.
 *
 * Every client message goes upstream verbatim (while the upstream is not
 * ready, into one FIFO bounded by queue_limit and queue_timeout); every
 * upstream message goes to every client, encoded once. A client message
 * that contains a `replay` substring is remembered by its exact text, once
 * however many clients sent it, until the last of them is gone. Each new
 * connection gets the `on_open` texts, then the remembered ones, and is
 * ready once they are written: there is no answer to wait for in a
 * protocol exgate does not know. Nothing here parses a message.
 */
#include "xg_core.h"
#include "xg_client.h"
#include "xg_conf.h"
#include "xg_log.h"
#include "xg_venue.h"
#include "xg_wsproto.h"
#include "xg_timer.h"

#include <stdlib.h>
#include <string.h>

#include <event2/event.h>
#include <openssl/crypto.h>

struct raw_conf {
    char          **on_open;        /* sent first on every connection */
    char          **on_open_src;    /* env:/file: of each, or NULL (-T) */
    size_t          non_open;
    char          **replay;         /* substrings that mark a replay text */
    size_t          nreplay;
    unsigned        replay_limit;   /* remembered texts per upstream */
};

/* One remembered replay text. */
struct raw_text {
    unsigned            refs;       /* connected clients that sent it */
    size_t              len;
    char                data[];
};

/* A growing array of texts (every one of an upstream, or of a client). */
struct raw_textv {
    struct raw_text   **v;
    size_t              n, cap;
};

/* A client message waiting for the upstream to be ready. */
struct raw_queued {
    struct raw_client  *rc;
    uint64_t            deadline_ms;    /* 0: none */
    size_t              len;
    struct raw_queued  *next;
    char                data[];
};

struct raw_client {
    struct xg_client   *c;
    size_t              slot;       /* its index in raw.to and raw.clients */
    struct raw_textv    texts;      /* the replay texts it sent, each once */
};

struct raw {
    struct xg_upstream     *up;
    const struct raw_conf  *cf;
    const struct xg_upstream_conf *ucf; /* queue_limit, queue_timeout */
    const char             *name;
    struct xg_client      **to;         /* the fan-out's recipients */
    struct raw_client     **clients;    /* the same order */
    size_t                  nclients, clients_cap;
    struct raw_textv        texts;          /* in first-seen order */
    int                     over_logged;    /* replay_limit reached, said */
    struct raw_queued      *qhead, **qtail;
    size_t                  nqueued;
    struct xg_timer        *ev_queue;       /* the head's queue_timeout */

    uint64_t                from_clients;
    uint64_t                to_upstream;
    uint64_t                to_clients;
    uint64_t                queue_dropped;
    uint64_t                not_text;   /* not UTF-8: never a text frame */
    uint64_t                replayed;
    uint64_t                replay_refused;
};

/* ---- the queue ----------------------------------------------------------- */

static int
raw_send(struct raw *r, const void *data, size_t len)
{
    if (xg_upstream_send(r->up, data, len) != XG_OK) {
        return XG_ERROR;
    }
    r->to_upstream++;
    return XG_OK;
}

static void
raw_queue_arm(struct raw *r)
{
    uint64_t now = xg_now_ms(), ms;
    struct timeval tv;

    if (r->qhead == NULL || r->qhead->deadline_ms == 0) {
        return;
    }
    ms = r->qhead->deadline_ms > now ? r->qhead->deadline_ms - now : 0;
    tv.tv_sec = (time_t) (ms / 1000);
    tv.tv_usec = (suseconds_t) ((ms % 1000) * 1000);
    xg_timer_add(r->ev_queue, &tv);
}

/* Unlinks and returns the head of the queue. */
static struct raw_queued *
raw_queue_pop(struct raw *r)
{
    struct raw_queued *q = r->qhead;

    r->qhead = q->next;
    if (r->qhead == NULL) {
        r->qtail = &r->qhead;
    }
    r->nqueued--;
    return q;
}

/*
 * Queues a copy of DATA from RC for the next ready connection, or drops
 * it (logged) when queue_limit messages wait already.
 */
static void
raw_queue_push(struct raw *r, struct raw_client *rc, const void *data,
    size_t len)
{
    struct raw_queued *q;

    if (r->nqueued >= r->ucf->queue_limit) {
        r->queue_dropped++;
        xg_upstream_log(XG_LOG_WARN, r->up, "queue_limit %u reached: dropping "
            "a message of %zu bytes from %s", r->ucf->queue_limit, len,
            xg_client_name(rc->c));
        return;
    }
    q = xg_malloc(sizeof(*q) + len);
    q->rc = rc;
    q->deadline_ms = r->ucf->queue_timeout_ms
                     ? xg_now_ms() + r->ucf->queue_timeout_ms : 0;
    q->len = len;
    q->next = NULL;
    memcpy(q->data, data, len);
    *r->qtail = q;
    r->qtail = &q->next;
    if (r->nqueued++ == 0) {
        raw_queue_arm(r);
    }
}

/* queue_timeout: drops the expired head messages (deadlines only grow). */
static void
raw_on_queue_timeout(evutil_socket_t fd, short what, void *arg)
{
    struct raw *r = arg;
    uint64_t now = xg_now_ms();
    size_t n = 0;

    while (r->qhead != NULL && r->qhead->deadline_ms != 0
        && r->qhead->deadline_ms <= now)
    {
        free(raw_queue_pop(r));
        n++;
    }
    if (n > 0) {
        r->queue_dropped += n;
        xg_upstream_log(XG_LOG_WARN, r->up, "%zu queued message%s dropped "
            "after queue_timeout %llums", n, n == 1 ? "" : "s",
            (unsigned long long) r->ucf->queue_timeout_ms);
    }
    raw_queue_arm(r);   /* early by the coarse clock, or the next head */
}

/* ---- replay texts -------------------------------------------------------- */

static void
raw_textv_add(struct raw_textv *tv, struct raw_text *t)
{
    if (tv->n == tv->cap) {
        tv->cap = tv->cap ? tv->cap * 2 : 4;
        tv->v = xg_realloc(tv->v, tv->cap * sizeof(*tv->v));
    }
    tv->v[tv->n++] = t;
}

/* Whether DATA contains one of the conf's replay substrings. */
static int
raw_is_replay(const struct raw *r, const void *data, size_t len)
{
    size_t i;

    for (i = 0; i < r->cf->nreplay; i++) {
        if (memmem(data, len, r->cf->replay[i], strlen(r->cf->replay[i]))
            != NULL)
        {
            return 1;
        }
    }
    return 0;
}

/*
 * Remembers DATA as a replay text sent by RC (once per client and once
 * per upstream), last in the replay order: a subscribe sent again after
 * its unsubscribe is replayed after it too. Returns 1 when it is
 * remembered, 0 when replay_limit texts are remembered already (logged
 * once until one is forgotten).
 */
static int
raw_remember(struct raw *r, struct raw_client *rc, const void *data,
    size_t len)
{
    struct raw_text *t = NULL;
    size_t i;

    for (i = 0; i < r->texts.n && t == NULL; i++) {
        if (r->texts.v[i]->len == len
            && memcmp(r->texts.v[i]->data, data, len) == 0)
        {
            t = r->texts.v[i];
            memmove(&r->texts.v[i], &r->texts.v[i + 1],
                (r->texts.n - i - 1) * sizeof(*r->texts.v));
            r->texts.v[r->texts.n - 1] = t;
        }
    }
    if (t == NULL) {
        if (r->texts.n >= r->cf->replay_limit) {
            r->replay_refused++;
            if (!r->over_logged) {
                r->over_logged = 1;
                xg_upstream_log(XG_LOG_WARN, r->up, "replay_limit %u reached: "
                    "a new replay text from %s is sent but not remembered",
                    r->cf->replay_limit, xg_client_name(rc->c));
            }
            return 0;
        }
        t = xg_malloc(sizeof(*t) + len);
        t->refs = 0;
        t->len = len;
        memcpy(t->data, data, len);
        raw_textv_add(&r->texts, t);
        xg_upstream_log(XG_LOG_DEBUG, r->up, "replay text %zu (%zu bytes) "
            "remembered from %s", r->texts.n, len, xg_client_name(rc->c));
    }
    for (i = 0; i < rc->texts.n; i++) {
        if (rc->texts.v[i] == t) {
            return 1;   /* this client sent it before */
        }
    }
    raw_textv_add(&rc->texts, t);
    t->refs++;
    return 1;
}

/* Drops one client's reference to T; the last one forgets T. */
static void
raw_text_unref(struct raw *r, struct raw_text *t)
{
    size_t i;

    if (--t->refs > 0) {
        return;
    }
    for (i = 0; r->texts.v[i] != t; i++) {
        /* it is there: a client held a reference */
    }
    memmove(&r->texts.v[i], &r->texts.v[i + 1],
        (--r->texts.n - i) * sizeof(*r->texts.v));
    r->over_logged = 0;
    xg_upstream_log(XG_LOG_DEBUG, r->up, "a replay text (%zu bytes) forgotten, "
        "%zu left", t->len, r->texts.n);
    free(t);
}

/* ---- the upstream side --------------------------------------------------- */

static void
raw_on_open(void *p, struct xg_conn *c)
{
    struct raw *r = p;
    size_t i, nqueued = r->nqueued;

    for (i = 0; i < r->cf->non_open; i++) {
        if (raw_send(r, r->cf->on_open[i], strlen(r->cf->on_open[i]))
            != XG_OK)
        {
            return;     /* gone meanwhile: the upstream reconnects */
        }
    }
    for (i = 0; i < r->texts.n; i++) {
        if (raw_send(r, r->texts.v[i]->data, r->texts.v[i]->len) != XG_OK) {
            return;
        }
    }
    r->replayed += r->texts.n;
    xg_upstream_log(XG_LOG_INFO, r->up, "%zu on_open and %zu replay message%s "
        "sent, %zu queued to follow", r->cf->non_open, r->texts.n,
        r->texts.n == 1 ? "" : "s", nqueued);
    xg_upstream_restored(r->up);
    xg_timer_del(r->ev_queue);
    while (r->qhead != NULL) {
        if (raw_send(r, r->qhead->data, r->qhead->len) != XG_OK) {
            raw_queue_arm(r);   /* kept for the next connection */
            return;
        }
        free(raw_queue_pop(r));
    }
}

static void
raw_on_message(void *p, struct xg_conn *c, const unsigned char *data,
    size_t len)
{
    struct raw *r = p;

    if (r->nclients == 0) {
        return;
    }
    if (!xg_wsproto_utf8_valid(data, len)) {
        /* a binary frame (compressed?): WebSocket clients would fail */
        r->not_text++;
        xg_upstream_log(XG_LOG_DEBUG, r->up, "a message of %zu bytes that is "
            "not UTF-8 text dropped", len);
        return;
    }
    r->to_clients++;
    xg_client_fanout(r->to, r->nclients, data, len);
}

static void
raw_status(void *p, json_t *obj)
{
    struct raw *r = p;
    json_t *o = json_pack("{s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, "
        "s:I}",
        "clients", (json_int_t) r->nclients,
        "messages_from_clients", (json_int_t) r->from_clients,
        "messages_to_upstream", (json_int_t) r->to_upstream,
        "messages_to_clients", (json_int_t) r->to_clients,
        "queued", (json_int_t) r->nqueued,
        "queue_dropped", (json_int_t) r->queue_dropped,
        "replay_texts", (json_int_t) r->texts.n,
        "replayed", (json_int_t) r->replayed,
        "replay_refused", (json_int_t) r->replay_refused,
        "not_text_dropped", (json_int_t) r->not_text);

    json_object_update(obj, o);
    json_decref(o);
}

/* ---- the client side ----------------------------------------------------- */

static void *
raw_client_open(void *p, struct xg_client *c)
{
    struct raw *r = p;
    struct raw_client *rc = xg_calloc(1, sizeof(*rc));

    if (r->nclients == r->clients_cap) {
        r->clients_cap = r->clients_cap ? r->clients_cap * 2 : 16;
        r->to = xg_realloc(r->to, r->clients_cap * sizeof(*r->to));
        r->clients = xg_realloc(r->clients,
            r->clients_cap * sizeof(*r->clients));
    }
    rc->c = c;
    rc->slot = r->nclients;
    r->to[rc->slot] = c;
    r->clients[rc->slot] = rc;
    r->nclients++;
    return rc;
}

static void
raw_client_message(void *p, void *cs, const unsigned char *data, size_t len)
{
    struct raw *r = p;
    struct raw_client *rc = cs;
    int remembered = 0;

    r->from_clients++;
    if (!xg_wsproto_utf8_valid(data, len)) {
        /* only a TCP line can be: the upstream takes text frames only */
        r->not_text++;
        xg_client_count_error(rc->c);
        xg_upstream_log(XG_LOG_WARN, r->up, "a message of %zu bytes from %s "
            "that is not UTF-8 text dropped", len, xg_client_name(rc->c));
        return;
    }
    if (r->cf->nreplay > 0 && raw_is_replay(r, data, len)) {
        remembered = raw_remember(r, rc, data, len);
    }
    if (xg_upstream_is_ready(r->up) && raw_send(r, data, len) == XG_OK) {
        return;
    }
    if (!remembered) {
        raw_queue_push(r, rc, data, len);
    }   /* else the next connection's replay sends it */
}

static void
raw_client_close(void *p, void *cs, const char *reason)
{
    struct raw *r = p;
    struct raw_client *rc = cs, *last;
    struct raw_queued **qp, *q;
    size_t i;

    for (i = 0; i < rc->texts.n; i++) {
        raw_text_unref(r, rc->texts.v[i]);
    }
    free(rc->texts.v);
    /* what it sent and is still queued goes with it */
    for (qp = &r->qhead; *qp != NULL;) {
        q = *qp;
        if (q->rc != rc) {
            qp = &q->next;
            continue;
        }
        *qp = q->next;
        r->nqueued--;
        free(q);
    }
    r->qtail = qp;      /* the tail may have gone */
    last = r->clients[--r->nclients];
    r->clients[rc->slot] = last;
    r->to[rc->slot] = last->c;
    last->slot = rc->slot;
    free(rc);
}

/* ---- instance ------------------------------------------------------------ */

static const struct raw_conf raw_defaults = {
    .replay_limit = 1024
};

static void *
raw_create(struct xg_upstream *up, const struct xg_upstream_conf *conf)
{
    struct raw *r = xg_calloc(1, sizeof(*r));

    r->up = up;
    r->cf = conf->proto_conf ? conf->proto_conf : &raw_defaults;
    r->name = xg_upstream_name(up);
    r->ucf = conf;
    r->qtail = &r->qhead;
    r->ev_queue = xg_timer_new(xg_upstream_base(up), raw_on_queue_timeout, r);
    if (r->ev_queue == NULL) {
        free(r);
        return NULL;
    }
    return r;
}

static void
raw_destroy(void *p)
{
    struct raw *r = p;

    while (r->nclients > 0) {
        /* the listeners free their clients first; this is a last resort */
        raw_client_close(r, r->clients[r->nclients - 1], "upstream freed");
    }
    while (r->qhead != NULL) {
        free(raw_queue_pop(r));
    }
    while (r->texts.n > 0) {
        free(r->texts.v[--r->texts.n]);     /* no client holds one now */
    }
    free(r->texts.v);
    xg_timer_free(r->ev_queue);
    free(r->to);
    free(r->clients);
    free(r);
}

/* ---- conf ---------------------------------------------------------------- */

static void
raw_conf_free(void *p)
{
    struct raw_conf *c = p;
    size_t i;

    for (i = 0; i < c->non_open; i++) {
        /* a login message may hold a key */
        OPENSSL_cleanse(c->on_open[i], strlen(c->on_open[i]));
        free(c->on_open[i]);
        free(c->on_open_src[i]);
    }
    free(c->on_open);
    free(c->on_open_src);
    for (i = 0; i < c->nreplay; i++) {
        free(c->replay[i]);
    }
    free(c->replay);
    free(c);
}

/* The per-upstream conf, with its defaults (xg_venue.h create_conf). */
static void *
raw_create_conf(struct xg_conf *cf)
{
    struct raw_conf *c = xg_conf_calloc(cf, sizeof(*c), raw_conf_free);

    c->replay_limit = 1024;
    return c;
}

static void
raw_strv_add(char ***v, size_t *n, char *s)
{
    *v = xg_realloc(*v, (*n + 1) * sizeof(**v));
    (*v)[(*n)++] = s;
}

static int
raw_set_replay(struct xg_conf *cf, const struct xg_conf_stmt *st,
    const struct xg_command *cmd, void *conf)
{
    struct raw_conf *c = conf;

    if (st->args[1][0] == '\0') {
        return xg_conf_error(cf, st, "\"replay\": empty substring (it would "
            "match every message)");
    }
    raw_strv_add(&c->replay, &c->nreplay, xg_strdup(st->args[1]));
    return XG_OK;
}

static int
raw_set_on_open(struct xg_conf *cf, const struct xg_conf_stmt *st,
    const struct xg_command *cmd, void *conf)
{
    struct raw_conf *c = conf;
    const char *a = st->args[1], *why;
    char *text;

    if (strncmp(a, "env:", 4) == 0 || strncmp(a, "file:", 5) == 0) {
        text = xg_conf_secret(cf, st, a);   /* a login message with a key */
        if (text == NULL) {
            return XG_ERROR;
        }
    } else {
        text = xg_strdup(a);
    }
    why = text[0] == '\0' ? "empty message"
          : !xg_wsproto_utf8_valid((unsigned char *) text, strlen(text))
          ? "not UTF-8 text (it goes in a text frame)" : NULL;
    if (why != NULL) {
        OPENSSL_cleanse(text, strlen(text));
        free(text);
        return xg_conf_error(cf, st, "\"on_open\": %s", why);
    }
    c->on_open_src = xg_realloc(c->on_open_src,
        (c->non_open + 1) * sizeof(*c->on_open_src));
    c->on_open_src[c->non_open] = text != NULL && (strncmp(a, "env:", 4) == 0
        || strncmp(a, "file:", 5) == 0) ? xg_conf_secret_source(st, a) : NULL;
    raw_strv_add(&c->on_open, &c->non_open, text);
    return XG_OK;
}

static const struct xg_conf_bounds raw_bounds_replay = { 1, 100000 };

#define RAW(f) offsetof(struct raw_conf, f)

static const struct xg_command raw_commands[] = {
    { "replay", XG_CONF_UPSTREAM | XG_CONF_TAKE1 | XG_CONF_MULTI,
      raw_set_replay, 0, NULL },
    { "on_open", XG_CONF_UPSTREAM | XG_CONF_TAKE1 | XG_CONF_MULTI,
      raw_set_on_open, 0, NULL },
    { "replay_limit", XG_CONF_UPSTREAM | XG_CONF_TAKE1, xg_conf_set_uint,
      RAW(replay_limit), &raw_bounds_replay },
    XG_CONF_NULL_COMMAND
};

/*
 * replay and on_open for `exgate -T` (the others are generic). An on_open
 * read from env:/file: is shown by its source, never by its text.
 */
static int
raw_dump(struct xg_conf_dump *d, const struct xg_command *cmd,
    const void *conf)
{
    const struct raw_conf *c = conf;
    size_t i;

    if (cmd->set == raw_set_replay) {
        if (c->nreplay == 0) {
            xg_conf_dump_comment(d, "%s: none", cmd->name);
        }
        for (i = 0; i < c->nreplay; i++) {
            xg_conf_dump_words(d, cmd->name, c->replay[i], NULL);
        }
    } else if (cmd->set == raw_set_on_open) {
        if (c->non_open == 0) {
            xg_conf_dump_comment(d, "%s: none", cmd->name);
        }
        for (i = 0; i < c->non_open; i++) {
            xg_conf_dump_words(d, cmd->name, c->on_open_src[i] != NULL
                ? c->on_open_src[i] : c->on_open[i], NULL);
        }
    } else {
        return XG_AGAIN;
    }
    return XG_OK;
}

/*
 * A reload (xg_venue.h): the new conf from now on; its on_open texts are
 * sent on the next connection, its queue bounds hold from the next
 * request, replay and replay_limit from the next text a client sends.
 */
static void
raw_reconf(void *p, const struct xg_upstream_conf *conf)
{
    struct raw *r = p;

    r->cf = conf->proto_conf ? conf->proto_conf : &raw_defaults;
    r->ucf = conf;
}

const struct xg_venue xg_venue_raw = {
    "raw",
    raw_commands,
    raw_create_conf,
    raw_create,
    raw_destroy,
    raw_on_open,
    raw_on_message,
    NULL,       /* on_down: the texts and the queue wait for the next one */
    NULL,
    raw_status,
    raw_client_open,
    raw_client_message,
    raw_client_close,
    NULL,       /* client_too_big: the close says it */
    "/*",       /* any path: clients keep their own URL scheme */
    1,          /* no in-band client auth: listeners say client_auth=off */
    raw_dump,
    0,          /* rotates: no (the upstream closes a rotation's conn) */
    raw_reconf,
    NULL,       /* rest_local: no REST front of its own */
    NULL,       /* connect_take: no connection budget */
    NULL,       /* restart_names: a reload applies every change */
    0,          /* max_connection_age: none unless the conf says */
    NULL,       /* connect: a WebSocket to the url */
    NULL        /* reconf_check: it follows any conf */
};
