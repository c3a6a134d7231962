/*
 * xg_registry.c: the gateway's session state (see xg_registry.h).
 * Two small chained hash tables (channel name, upstream id); arrays for
 * the sets, which stay small per client and per channel.
 */
#include "xg_core.h"
#include "xg_registry.h"

#include <stdlib.h>
#include <string.h>

#include <event2/event.h>

#define REG_CHAN_BUCKETS  1024
#define REG_REQ_BUCKETS   1024

/* A doubly linked list of requests, for those in flight and those queued. */
struct req_list {
    struct xg_reg_req *head, *tail;
    size_t             n;
};

static void
req_list_push(struct req_list *l, struct xg_reg_req *q, int front)
{
    if (front) {
        q->prev = NULL;
        q->next = l->head;
        if (l->head) {
            l->head->prev = q;
        } else {
            l->tail = q;
        }
        l->head = q;
    } else {
        q->next = NULL;
        q->prev = l->tail;
        if (l->tail) {
            l->tail->next = q;
        } else {
            l->head = q;
        }
        l->tail = q;
    }
    l->n++;
}

static void
req_list_unlink(struct req_list *l, struct xg_reg_req *q)
{
    if (q->prev) {
        q->prev->next = q->next;
    } else {
        l->head = q->next;
    }
    if (q->next) {
        q->next->prev = q->prev;
    } else {
        l->tail = q->prev;
    }
    q->prev = q->next = NULL;
    l->n--;
}

struct xg_registry {
    struct xg_reg_channel  *chan_tab[REG_CHAN_BUCKETS];
    size_t                  nchannels;
    struct xg_reg_req      *req_tab[REG_REQ_BUCKETS];
    struct req_list         inflight;
    uint64_t                next_id;
    struct req_list         queue;
    struct xg_reg_channel **idle;
    size_t                  nidle, idle_cap;
    void                  (*chan_free)(void *ext);
    void                  (*sess_free)(void *sess);
};

static uint32_t
hash_bytes(const char *s, size_t n)
{
    uint32_t h = 2166136261u;   /* FNV-1a */
    size_t i;

    for (i = 0; i < n; i++) {
        h = (h ^ (unsigned char) s[i]) * 16777619u;
    }
    return h;
}

/* Appends P to the array *A of *N elements, growing *CAP. */
static void
vec_push(void ***a, size_t *n, size_t *cap, void *p)
{
    if (*n == *cap) {
        *cap = *cap ? *cap * 2 : 4;
        *a = xg_realloc(*a, *cap * sizeof(void *));
    }
    (*a)[(*n)++] = p;
}

/* Removes P from the array (order kept); returns 1 when it was there. */
static int
vec_remove(void **a, size_t *n, const void *p)
{
    size_t i;

    for (i = 0; i < *n; i++) {
        if (a[i] == p) {
            memmove(&a[i], &a[i + 1], (*n - i - 1) * sizeof(void *));
            (*n)--;
            return 1;
        }
    }
    return 0;
}

static int
vec_has(void *const *a, size_t n, const void *p)
{
    size_t i;

    for (i = 0; i < n; i++) {
        if (a[i] == p) {
            return 1;
        }
    }
    return 0;
}

struct xg_registry *
xg_registry_new(void)
{
    struct xg_registry *r = xg_calloc(1, sizeof(*r));

    return r;
}

void
xg_registry_set_channel_free(struct xg_registry *r, void (*fn)(void *))
{
    r->chan_free = fn;
}

void
xg_registry_set_session_free(struct xg_registry *r, void (*fn)(void *))
{
    r->sess_free = fn;
}

static void
channel_destroy(struct xg_registry *r, struct xg_reg_channel *ch)
{
    if (ch->ext != NULL && r->chan_free != NULL) {
        r->chan_free(ch->ext);
    }
    if (ch->sess != NULL && r->sess_free != NULL) {
        r->sess_free(ch->sess);
    }
    free(ch->name);
    free(ch->subs);
    free(ch->waiters);
    free(ch);
}

static void
subreq_destroy(struct xg_reg_subreq *sr)
{
    int i;

    for (i = 0; i < sr->nchan; i++) {
        free(sr->chan[i]);
    }
    free(sr->chan);
    free(sr->status);
    free(sr->client_id);
    free(sr->error);
    free(sr);
}

void
xg_registry_free(struct xg_registry *r)
{
    struct xg_reg_req *q;
    size_t i;

    if (r == NULL) {
        return;
    }
    while ((q = xg_registry_inflight_pop(r)) != NULL) {
        xg_registry_req_free(q);
    }
    while ((q = xg_registry_queue_pop(r)) != NULL) {
        xg_registry_req_free(q);
    }
    /* subscribe requests belong to their clients, freed before this */
    for (i = 0; i < REG_CHAN_BUCKETS; i++) {
        struct xg_reg_channel *ch = r->chan_tab[i], *nx;

        for (; ch != NULL; ch = nx) {
            nx = ch->hnext;
            channel_destroy(r, ch);
        }
    }
    free(r->idle);
    free(r);
}

/* ---- clients ---- */

struct xg_reg_client *
xg_registry_client_new(struct xg_registry *r, void *owner,
    struct xg_client *out)
{
    struct xg_reg_client *rc = xg_calloc(1, sizeof(*rc));

    rc->owner = owner;
    rc->out = out;
    return rc;
}

static void
idle_mark(struct xg_registry *r, struct xg_reg_channel *ch, uint64_t now_ms)
{
    if (ch->nsubs == 0 && ch->nwaiters == 0) {
        ch->idle_since_ms = now_ms;
        if (!ch->in_idle) {
            xg_registry_idle_push(r, ch);
        }
    }
}

void
xg_registry_client_free(struct xg_registry *r, struct xg_reg_client *rc,
    uint64_t now_ms)
{
    struct xg_reg_req *q, *nx;
    size_t i;

    if (rc == NULL) {
        return;
    }
    /* its waiting subscribe requests are answered to nobody: drop them */
    for (i = 0; i < rc->nsubreqs; i++) {
        struct xg_reg_subreq *sr = rc->subreqs[i];
        int k;

        for (k = 0; k < sr->nchan; k++) {
            struct xg_reg_channel *ch;

            if (sr->status[k] == 0
                && (ch = xg_registry_channel(r, sr->chan[k])) != NULL) {
                vec_remove((void **) ch->waiters, &ch->nwaiters, sr);
            }
        }
        subreq_destroy(sr);
    }
    free(rc->subreqs);
    rc->nsubreqs = 0;
    xg_registry_unsubscribe_all(r, rc, now_ms);
    for (q = r->inflight.head; q != NULL; q = q->next) {
        if (q->client == rc) {
            q->client = NULL;
        }
    }
    for (q = r->queue.head; q != NULL; q = nx) {
        nx = q->next;
        if (q->client == rc) {
            req_list_unlink(&r->queue, q);
            xg_registry_req_free(q);
        }
    }
    for (i = 0; i < rc->norders; i++) {
        free(rc->orders[i]);
    }
    free(rc->orders);
    free(rc->chans);
    free(rc);
}

/* ---- channels ---- */

struct xg_reg_channel *
xg_registry_channel_n(struct xg_registry *r, const char *name, size_t len)
{
    struct xg_reg_channel *ch;

    ch = r->chan_tab[hash_bytes(name, len) % REG_CHAN_BUCKETS];
    for (; ch != NULL; ch = ch->hnext) {
        /* NAME may hold a NUL: never read past the end of ch->name */
        if (strnlen(ch->name, len + 1) == len
            && memcmp(ch->name, name, len) == 0)
        {
            return ch;
        }
    }
    return NULL;
}

struct xg_reg_channel *
xg_registry_channel(struct xg_registry *r, const char *name)
{
    return xg_registry_channel_n(r, name, strlen(name));
}

size_t
xg_registry_nchannels(const struct xg_registry *r)
{
    return r->nchannels;
}

void
xg_registry_channel_foreach(struct xg_registry *r,
    void (*fn)(struct xg_reg_channel *ch, void *arg), void *arg)
{
    size_t i;

    for (i = 0; i < REG_CHAN_BUCKETS; i++) {
        struct xg_reg_channel *ch, *nx;

        for (ch = r->chan_tab[i]; ch != NULL; ch = nx) {
            nx = ch->hnext;
            fn(ch, arg);
        }
    }
}

int
xg_registry_subscribe(struct xg_registry *r, struct xg_reg_client *rc,
    const char *name, size_t max, struct xg_reg_channel **chp)
{
    struct xg_reg_channel *ch = xg_registry_channel(r, name);
    int res;

    if (ch != NULL && vec_has((void **) ch->subs, ch->nsubs, rc)) {
        *chp = ch;
        return XG_SUB_ALREADY;
    }
    if (rc->nchans >= max) {
        return XG_ERROR;
    }
    if (ch == NULL) {
        uint32_t b = hash_bytes(name, strlen(name)) % REG_CHAN_BUCKETS;

        ch = xg_calloc(1, sizeof(*ch));
        ch->name = xg_strdup(name);
        ch->state = XG_CHAN_PENDING;
        ch->hnext = r->chan_tab[b];
        r->chan_tab[b] = ch;
        r->nchannels++;
        res = XG_SUB_NEW;
    } else if (ch->state == XG_CHAN_CONFIRMED) {
        res = XG_SUB_LIVE;
    } else {
        if (ch->state == XG_CHAN_UNSUBSCRIBING) {
            ch->resubscribe = 1;
        }
        /* pending but never sent (e.g. upstream down): the caller sends */
        res = XG_SUB_WAIT;
    }
    vec_push((void ***) &ch->subs, &ch->nsubs, &ch->subs_cap, rc);
    vec_push((void ***) &rc->chans, &rc->nchans, &rc->chans_cap, ch);
    ch->idle_since_ms = 0;
    *chp = ch;
    return res;
}

int
xg_registry_unsubscribe(struct xg_registry *r, struct xg_reg_client *rc,
    struct xg_reg_channel *ch, uint64_t now_ms)
{
    if (!vec_remove((void **) ch->subs, &ch->nsubs, rc)) {
        return 0;
    }
    vec_remove((void **) rc->chans, &rc->nchans, ch);
    idle_mark(r, ch, now_ms);
    return 1;
}

size_t
xg_registry_unsubscribe_all(struct xg_registry *r, struct xg_reg_client *rc,
    uint64_t now_ms)
{
    size_t n = 0;

    while (rc->nchans > 0) {
        n += xg_registry_unsubscribe(r, rc, rc->chans[rc->nchans - 1],
            now_ms);
    }
    return n;
}

void
xg_registry_idle_push(struct xg_registry *r, struct xg_reg_channel *ch)
{
    ch->in_idle = 1;
    vec_push((void ***) &r->idle, &r->nidle, &r->idle_cap, ch);
}

struct xg_reg_channel *
xg_registry_idle_next(struct xg_registry *r)
{
    while (r->nidle > 0) {
        struct xg_reg_channel *ch = r->idle[0];

        memmove(&r->idle[0], &r->idle[1], (r->nidle - 1) * sizeof(void *));
        r->nidle--;
        ch->in_idle = 0;
        if (ch->nsubs == 0 && ch->nwaiters == 0) {
            return ch;
        }
    }
    return NULL;
}

static void
chan_unlink(struct xg_registry *r, struct xg_reg_channel *ch)
{
    struct xg_reg_channel **pp;

    pp = &r->chan_tab[hash_bytes(ch->name, strlen(ch->name))
                      % REG_CHAN_BUCKETS];
    for (; *pp != NULL; pp = &(*pp)->hnext) {
        if (*pp == ch) {
            *pp = ch->hnext;
            r->nchannels--;
            break;
        }
    }
    if (ch->in_idle) {
        vec_remove((void **) r->idle, &r->nidle, ch);
    }
}

void
xg_registry_channel_delete(struct xg_registry *r, struct xg_reg_channel *ch)
{
    chan_unlink(r, ch);
    channel_destroy(r, ch);
}

/*
 * Sets CH's entry of every waiting subscribe request to STATUS (1, -1),
 * and ERROR on those without one; the requests that now have every
 * channel answered go to DONE.
 */
static void
waiters_answer(struct xg_reg_channel *ch, int status, const char *error,
    struct xg_reg_subreq **done, size_t *ndone)
{
    size_t i;

    *ndone = 0;
    for (i = 0; i < ch->nwaiters; i++) {
        struct xg_reg_subreq *sr = ch->waiters[i];
        int k;

        for (k = 0; k < sr->nchan; k++) {
            if (sr->status[k] == 0 && strcmp(sr->chan[k], ch->name) == 0) {
                sr->status[k] = status;
                sr->outstanding--;
            }
        }
        if (error != NULL && sr->error == NULL) {
            sr->error = xg_strdup(error);
        }
        if (sr->outstanding == 0) {
            if (sr->client != NULL) {
                vec_remove((void **) sr->client->subreqs,
                    &sr->client->nsubreqs, sr);
            }
            done[(*ndone)++] = sr;
        }
    }
    ch->nwaiters = 0;
}

void
xg_registry_channel_answer_waiters(struct xg_registry *r,
    struct xg_reg_channel *ch, int confirmed, struct xg_reg_subreq **done,
    size_t *ndone)
{
    (void) r;
    waiters_answer(ch, confirmed > 0 ? 1 : -1, NULL, done, ndone);
}

void
xg_registry_channel_resolve(struct xg_registry *r, struct xg_reg_channel *ch,
    int confirmed, const char *error, struct xg_reg_subreq **done,
    size_t *ndone)
{
    waiters_answer(ch, confirmed ? 1 : -1, error, done, ndone);
    if (confirmed) {
        ch->state = XG_CHAN_CONFIRMED;
        ch->sent = 0;
        idle_mark(r, ch, 1);   /* everyone left while it was pending */
        return;
    }
    while (ch->nsubs > 0) {
        struct xg_reg_client *rc = ch->subs[--ch->nsubs];

        vec_remove((void **) rc->chans, &rc->nchans, ch);
    }
    xg_registry_channel_delete(r, ch);
}

static void
reset_one(struct xg_reg_channel *ch, void *arg)
{
    struct xg_registry *r = arg;

    ch->sent = 0;
    if (ch->nsubs == 0 && ch->nwaiters == 0) {
        /* nobody wants it, and the new connection does not have it */
        xg_registry_channel_delete(r, ch);
        return;
    }
    ch->state = XG_CHAN_PENDING;
    ch->resubscribe = 0;
}

void
xg_registry_upstream_reset(struct xg_registry *r)
{
    xg_registry_channel_foreach(r, reset_one, r);
}

/* ---- subscribe requests ---- */

struct xg_reg_subreq *
xg_registry_subreq_new(struct xg_registry *r, struct xg_reg_client *rc,
    const char *client_id, char **chans, int nchan)
{
    struct xg_reg_subreq *sr = xg_calloc(1, sizeof(*sr));
    int i;

    sr->client = rc;
    sr->client_id = client_id ? xg_strdup(client_id) : NULL;
    sr->nchan = nchan;
    sr->chan = xg_calloc(nchan ? nchan : 1, sizeof(char *));
    sr->status = xg_calloc(nchan ? nchan : 1, 1);
    for (i = 0; i < nchan; i++) {
        sr->chan[i] = xg_strdup(chans[i]);
    }
    sr->outstanding = nchan;
    if (rc != NULL) {
        vec_push((void ***) &rc->subreqs, &rc->nsubreqs, &rc->subreqs_cap,
            sr);
    }
    return sr;
}

void
xg_registry_subreq_set(struct xg_reg_subreq *sr, int i, int status)
{
    if (sr->status[i] == 0) {
        sr->status[i] = (signed char) status;
        sr->outstanding--;
    }
}

void
xg_registry_subreq_wait(struct xg_reg_subreq *sr, int i,
    struct xg_reg_channel *ch)
{
    (void) i;
    if (!vec_has((void **) ch->waiters, ch->nwaiters, sr)) {
        vec_push((void ***) &ch->waiters, &ch->nwaiters, &ch->waiters_cap,
            sr);
    }
}

void
xg_registry_subreq_free(struct xg_registry *r, struct xg_reg_subreq *sr)
{
    if (sr == NULL) {
        return;
    }
    if (sr->client != NULL) {
        vec_remove((void **) sr->client->subreqs, &sr->client->nsubreqs, sr);
    }
    subreq_destroy(sr);
}

/* ---- requests ---- */

struct xg_reg_req *
xg_registry_req_new(int kind, struct xg_reg_client *rc,
    const char *client_id, const char *method, const char *text, size_t len)
{
    struct xg_reg_req *q = xg_calloc(1, sizeof(*q));

    q->kind = kind;
    q->client = rc;
    q->client_id = client_id ? xg_strdup(client_id) : NULL;
    q->method = method ? xg_strdup(method) : NULL;
    if (text != NULL) {
        q->text = xg_strndup(text, len);
        q->len = len;
    }
    return q;
}

void
xg_registry_req_free(struct xg_reg_req *q)
{
    int i;

    if (q == NULL) {
        return;
    }
    for (i = 0; i < q->nchan; i++) {
        free(q->chan[i]);
    }
    free(q->chan);
    free(q->client_id);
    free(q->method);
    free(q->text);
    if (q->ev != NULL) {
        xg_timer_free(q->ev);
    }
    free(q);
}

uint64_t
xg_registry_inflight_add(struct xg_registry *r, struct xg_reg_req *q,
    uint64_t deadline_ms)
{
    uint32_t b;

    q->up_id = ++r->next_id;
    q->deadline_ms = deadline_ms;
    b = (uint32_t) (q->up_id % REG_REQ_BUCKETS);
    q->hnext = r->req_tab[b];
    r->req_tab[b] = q;
    req_list_push(&r->inflight, q, 0);
    return q->up_id;
}

static void
inflight_unlink(struct xg_registry *r, struct xg_reg_req *q)
{
    struct xg_reg_req **pp = &r->req_tab[q->up_id % REG_REQ_BUCKETS];

    for (; *pp != NULL; pp = &(*pp)->hnext) {
        if (*pp == q) {
            *pp = q->hnext;
            break;
        }
    }
    req_list_unlink(&r->inflight, q);
    q->hnext = NULL;
}

struct xg_reg_req *
xg_registry_inflight_take(struct xg_registry *r, uint64_t up_id)
{
    struct xg_reg_req *q = r->req_tab[up_id % REG_REQ_BUCKETS];

    for (; q != NULL; q = q->hnext) {
        if (q->up_id == up_id) {
            inflight_unlink(r, q);
            return q;
        }
    }
    return NULL;
}

struct xg_reg_req *
xg_registry_inflight_pop(struct xg_registry *r)
{
    struct xg_reg_req *q = r->inflight.head;

    if (q != NULL) {
        inflight_unlink(r, q);
    }
    return q;
}

size_t
xg_registry_ninflight(const struct xg_registry *r)
{
    return r->inflight.n;
}

void
xg_registry_inflight_foreach(struct xg_registry *r,
    void (*fn)(struct xg_reg_req *q, void *arg), void *arg)
{
    struct xg_reg_req *q;

    for (q = r->inflight.head; q != NULL; q = q->next) {
        fn(q, arg);
    }
}

void
xg_registry_queue_push(struct xg_registry *r, struct xg_reg_req *q, int front)
{
    q->up_id = 0;
    req_list_push(&r->queue, q, front);
}

void
xg_registry_queue_take(struct xg_registry *r, struct xg_reg_req *q)
{
    req_list_unlink(&r->queue, q);
}

struct xg_reg_req *
xg_registry_queue_head(const struct xg_registry *r)
{
    return r->queue.head;
}

struct xg_reg_req *
xg_registry_inflight_get(const struct xg_registry *r, uint64_t up_id)
{
    struct xg_reg_req *q = r->req_tab[up_id % REG_REQ_BUCKETS];

    for (; q != NULL; q = q->hnext) {
        if (q->up_id == up_id) {
            return q;
        }
    }
    return NULL;
}

struct xg_reg_req *
xg_registry_queue_pop(struct xg_registry *r)
{
    struct xg_reg_req *q = r->queue.head;

    if (q != NULL) {
        req_list_unlink(&r->queue, q);
    }
    return q;
}

size_t
xg_registry_nqueued(const struct xg_registry *r)
{
    return r->queue.n;
}

/* ---- orders ---- */

int
xg_registry_order_add(struct xg_reg_client *rc, const char *order_id)
{
    if (xg_registry_order_has(rc, order_id)) {
        return 0;
    }
    vec_push((void ***) &rc->orders, &rc->norders, &rc->orders_cap,
        xg_strdup(order_id));
    return 1;
}

int
xg_registry_order_has(const struct xg_reg_client *rc, const char *order_id)
{
    size_t i;

    for (i = 0; i < rc->norders; i++) {
        if (strcmp(rc->orders[i], order_id) == 0) {
            return 1;
        }
    }
    return 0;
}

int
xg_registry_order_remove(struct xg_reg_client *rc, const char *order_id)
{
    size_t i;

    for (i = 0; i < rc->norders; i++) {
        if (strcmp(rc->orders[i], order_id) == 0) {
            free(rc->orders[i]);
            memmove(&rc->orders[i], &rc->orders[i + 1],
                (rc->norders - i - 1) * sizeof(char *));
            rc->norders--;
            return 1;
        }
    }
    return 0;
}
