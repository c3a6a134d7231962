/*
 * xg_book.c: the generic order book: levels per side, level operations
 * applied under a sequence chain, copy-on-write marks, and the diff of
 * two states into level operations (see xg_book.h). A venue parses and
 * encodes its own messages around it.
 *
 * Layout. Each side is one sorted array of levels with the BEST price at
 * the END (bids ascending, asks descending). Finding a price is a binary
 * search (O(log n)); inserting or removing one moves only the levels
 * between it and the top of the book, and nearly all activity in a real
 * book is within a few levels of the top, so the move is short. A sorted
 * array also makes a mark a plain refcount, a copy one memcpy, and a diff
 * one merge walk, and it costs 24 bytes a level with no per-node
 * pointers; a balanced tree would cost 2-3 times that and a copy would be
 * n allocations.
 *
 * Numbers. Prices and amounts are compared as doubles. Whether the venue
 * received each as an exact integer is kept with the level, so that its
 * encoder can write it back the way it came.
 */
#include "xg_core.h"
#include "xg_book.h"
#include "xg_log.h"
#include "xg_venue.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct xg_book_level {
    double        price;
    double        amount;
    unsigned char pint;     /* the venue received the price as an integer */
    unsigned char aint;     /* ... and the amount */
};

struct xg_book_side {
    struct xg_book_level *lv;
    size_t                n, cap;
};

struct xg_book_state {
    unsigned            refs;
    uint64_t            seq;
    int64_t             timestamp;
    int                 has_ts;
    struct xg_book_side side[2];    /* 0 bids, 1 asks */
};

struct xg_book {
    char                 *name;
    const struct xg_upstream *log_up;       /* its lines' upstream */
    struct xg_book_state *cur;              /* NULL before a snapshot */
    struct xg_book_state *replaced;         /* what the last snapshot
                                               replaced while in sync,
                                               until the next message */
    int                   synced;
    size_t                max_levels;
    struct xg_book_stats  st;
    void                 *venue;            /* the venue's data */
    size_t                venue_bytes;
    void                (*venue_free)(void *);
    char                  err[160];
};

/* ---- states ------------------------------------------------------------- */

static struct xg_book_state *
state_new(void)
{
    struct xg_book_state *s = xg_calloc(1, sizeof(*s));

    s->refs = 1;
    return s;
}

static struct xg_book_state *
state_clone(const struct xg_book_state *o)
{
    struct xg_book_state *s = state_new();
    int k;

    s->seq = o->seq;
    s->timestamp = o->timestamp;
    s->has_ts = o->has_ts;
    for (k = 0; k < 2; k++) {
        size_t n = o->side[k].n;

        s->side[k].n = n;
        if (n > 0) {
            s->side[k].cap = n + n / 8 + 8;
            s->side[k].lv = xg_malloc(s->side[k].cap
                * sizeof(struct xg_book_level));
            memcpy(s->side[k].lv, o->side[k].lv,
                n * sizeof(struct xg_book_level));
        }
    }
    return s;
}

struct xg_book_state *
xg_book_state_ref(struct xg_book_state *s)
{
    if (s != NULL) {
        s->refs++;
    }
    return s;
}

void
xg_book_state_unref(struct xg_book_state *s)
{
    if (s == NULL || --s->refs > 0) {
        return;
    }
    free(s->side[0].lv);
    free(s->side[1].lv);
    free(s);
}

uint64_t
xg_book_state_seq(const struct xg_book_state *s)
{
    return s ? s->seq : 0;
}

int
xg_book_state_timestamp(const struct xg_book_state *s, int64_t *ts)
{
    if (s == NULL || !s->has_ts) {
        return 0;
    }
    *ts = s->timestamp;
    return 1;
}

/*
 * Storage order: bids ascending, asks descending, so the best level is
 * last. Returns nonzero when price A comes before price B on SIDE.
 */
static inline int
before(int side, double a, double b)
{
    return side ? a > b : a < b;
}

/* The first index whose price is not before P (where P is or would go). */
static size_t
lower_bound(const struct xg_book_side *sd, int side, double p)
{
    size_t lo = 0, hi = sd->n;

    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;

        if (before(side, sd->lv[mid].price, p)) {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    return lo;
}

/* ---- books -------------------------------------------------------------- */

struct xg_book *
xg_book_new(const char *name)
{
    struct xg_book *b = xg_calloc(1, sizeof(*b));

    b->name = xg_strdup(name);
    b->max_levels = XG_BOOK_MAX_LEVELS_DEFAULT;
    strcpy(b->err, "no error");
    return b;
}

void
xg_book_free(struct xg_book *b)
{
    if (b == NULL) {
        return;
    }
    xg_book_state_unref(b->cur);
    xg_book_state_unref(b->replaced);
    if (b->venue_free != NULL) {
        b->venue_free(b->venue);
    }
    free(b->name);
    free(b);
}

const char *
xg_book_name(const struct xg_book *b)
{
    return b->name;
}

void
xg_book_set_venue_data(struct xg_book *b, void *data, size_t bytes,
    void (*free_fn)(void *))
{
    if (b->venue_free != NULL) {
        b->venue_free(b->venue);
    }
    b->venue = data;
    b->venue_bytes = bytes;
    b->venue_free = free_fn;
}

void *
xg_book_venue_data(const struct xg_book *b)
{
    return b->venue;
}

void
xg_book_set_max_levels(struct xg_book *b, size_t max)
{
    b->max_levels = max > 0 ? max : 1;
}

size_t
xg_book_max_levels(const struct xg_book *b)
{
    return b->max_levels;
}

int
xg_book_synced(const struct xg_book *b)
{
    return b->synced;
}

uint64_t
xg_book_seq(const struct xg_book *b)
{
    return b->cur ? b->cur->seq : 0;
}

const char *
xg_book_last_error(const struct xg_book *b)
{
    return b->err;
}

void
xg_book_invalidate(struct xg_book *b)
{
    b->synced = 0;
}

void
xg_book_stats(const struct xg_book *b, struct xg_book_stats *st)
{
    *st = b->st;
    st->seq = xg_book_seq(b);
    st->synced = b->synced;
    st->nbids = b->cur ? b->cur->side[0].n : 0;
    st->nasks = b->cur ? b->cur->side[1].n : 0;
    st->bytes = sizeof(*b) + strlen(b->name) + 1 + b->venue_bytes;
    if (b->cur != NULL) {
        st->bytes += sizeof(*b->cur)
                     + (b->cur->side[0].cap + b->cur->side[1].cap)
                       * sizeof(struct xg_book_level);
    }
}

struct xg_book_state *
xg_book_mark(struct xg_book *b)
{
    return b->cur ? xg_book_state_ref(b->cur) : NULL;
}

const struct xg_book_state *
xg_book_current(const struct xg_book *b)
{
    return b->cur;
}

const struct xg_book_state *
xg_book_replaced(const struct xg_book *b)
{
    return b->replaced;
}

/* ---- applying ----------------------------------------------------------- */

/* xg_book_replaced() lasts until the next message, whatever it is. */
static void
forget_replaced(struct xg_book *b)
{
    xg_book_state_unref(b->replaced);
    b->replaced = NULL;
}

/* See xg_book.h. */
void
xg_book_set_log(struct xg_book *b, const struct xg_upstream *up)
{
    b->log_up = up;
}

static enum xg_book_result
book_error(struct xg_book *b, const char *what)
{
    b->st.errors++;
    xg_upstream_log(XG_LOG_WARN, b->log_up, "book %s: malformed %s dropped: "
        "%s", b->name, what, b->err);
    return XG_BOOK_ERROR;
}

enum xg_book_result
xg_book_reject(struct xg_book *b, const char *what, const char *fmt, ...)
{
    va_list ap;

    forget_replaced(b);
    va_start(ap, fmt);
    vsnprintf(b->err, sizeof(b->err), fmt, ap);
    va_end(ap);
    return book_error(b, what);
}

enum xg_book_result
xg_book_chain(struct xg_book *b, uint64_t prev, uint64_t seq)
{
    forget_replaced(b);
    if (!b->synced) {
        b->st.waits++;
        xg_upstream_log(XG_LOG_DEBUG, b->log_up, "book %s: change %llu "
            "dropped: waiting for a snapshot", b->name,
            (unsigned long long) seq);
        return XG_BOOK_WAIT;
    }
    if (prev != b->cur->seq) {
        b->synced = 0;
        b->st.gaps++;
        xg_upstream_log(XG_LOG_WARN, b->log_up, "book %s: gap: change %llu "
            "follows %llu but the last applied is %llu: resync needed",
            b->name,
            (unsigned long long) seq, (unsigned long long) prev,
            (unsigned long long) b->cur->seq);
        return XG_BOOK_GAP;
    }
    return XG_BOOK_APPLIED;
}

static int
op_cmp_bids(const void *pa, const void *pb)
{
    const struct xg_book_op *a = pa, *b = pb;

    if (a->price != b->price) {
        return a->price < b->price ? -1 : 1;
    }
    return a->idx < b->idx ? -1 : 1;
}

static int
op_cmp_asks(const void *pa, const void *pb)
{
    const struct xg_book_op *a = pa, *b = pb;

    if (a->price != b->price) {
        return a->price > b->price ? -1 : 1;
    }
    return a->idx < b->idx ? -1 : 1;
}

/*
 * Builds side SIDE of a snapshot from OPS: in storage order, the last
 * entry for a price wins, deletes and zero amounts leave no level (the
 * same result as applying the entries one by one to an empty book).
 */
static void
build_side(struct xg_book_side *sd, int side, struct xg_book_op *ops,
    size_t n)
{
    size_t i;

    sd->lv = NULL;
    sd->n = sd->cap = 0;
    if (n == 0) {
        return;
    }
    for (i = 0; i < n; i++) {
        ops[i].idx = (uint32_t) i;
    }
    qsort(ops, n, sizeof(*ops), side ? op_cmp_asks : op_cmp_bids);
    /* room for the usual ebb and flow of a book without a realloc */
    sd->cap = n + n / 8 + 8;
    sd->lv = xg_malloc(sd->cap * sizeof(struct xg_book_level));
    for (i = 0; i < n; i++) {
        if (i + 1 < n && ops[i + 1].price == ops[i].price) {
            continue;
        }
        if (ops[i].action == XG_BOOK_DELETE || ops[i].amount == 0) {
            continue;
        }
        sd->lv[sd->n].price = ops[i].price;
        sd->lv[sd->n].amount = ops[i].amount;
        sd->lv[sd->n].pint = ops[i].pint;
        sd->lv[sd->n].aint = ops[i].aint;
        sd->n++;
    }
}

/*
 * Applies OPS to side SIDE of S in message order. Returns the number of
 * anomalies, or -1 when the side would exceed MAX levels (S is then
 * partly modified: the caller applied to a private copy).
 */
static long
apply_side(struct xg_book_side *sd, int side, const struct xg_book_op *ops,
    size_t n, size_t max)
{
    long anomalies = 0;
    size_t k;

    for (k = 0; k < n; k++) {
        const struct xg_book_op *o = &ops[k];
        size_t i = lower_bound(sd, side, o->price);
        int found = i < sd->n && sd->lv[i].price == o->price;

        if (o->action == XG_BOOK_DELETE || o->amount == 0) {
            if (found) {
                memmove(&sd->lv[i], &sd->lv[i + 1],
                    (sd->n - i - 1) * sizeof(struct xg_book_level));
                sd->n--;
            } else if (o->action == XG_BOOK_DELETE) {
                anomalies++;
            }
            continue;
        }
        if (found) {
            sd->lv[i].amount = o->amount;
            sd->lv[i].aint = o->aint;
            anomalies += o->action == XG_BOOK_NEW;
            continue;
        }
        anomalies += o->action == XG_BOOK_CHANGE;
        if (sd->n >= max) {
            return -1;
        }
        if (sd->n == sd->cap) {
            sd->cap = sd->cap + sd->cap / 2 + 16;
            sd->lv = xg_realloc(sd->lv,
                sd->cap * sizeof(struct xg_book_level));
        }
        memmove(&sd->lv[i + 1], &sd->lv[i],
            (sd->n - i) * sizeof(struct xg_book_level));
        sd->lv[i].price = o->price;
        sd->lv[i].amount = o->amount;
        sd->lv[i].pint = o->pint;
        sd->lv[i].aint = o->aint;
        sd->n++;
    }
    return anomalies;
}

/* Levels a side might gain from OPS (an upper bound). */
static size_t
growth(const struct xg_book_op *ops, size_t n)
{
    size_t g = 0, k;

    for (k = 0; k < n; k++) {
        g += ops[k].action != XG_BOOK_DELETE && ops[k].amount != 0;
    }
    return g;
}

enum xg_book_result
xg_book_apply(struct xg_book *b, struct xg_book_update *u)
{
    enum xg_book_result r;
    int k;

    if (!u->snapshot) {
        r = xg_book_chain(b, u->prev, u->seq);
        if (r != XG_BOOK_APPLIED) {
            return r;
        }
    }
    forget_replaced(b);
    for (k = 0; k < 2; k++) {
        if (u->nops[k] > b->max_levels) {
            return xg_book_reject(b, u->snapshot ? "snapshot" : "change",
                "%s has %zu levels, more than the limit %zu",
                k ? "asks" : "bids", u->nops[k], b->max_levels);
        }
    }

    if (u->snapshot) {
        struct xg_book_state *s = state_new();

        for (k = 0; k < 2; k++) {
            build_side(&s->side[k], k, u->ops[k], u->nops[k]);
        }
        s->seq = u->seq;
        s->timestamp = u->timestamp;
        s->has_ts = u->has_ts;
        if (b->synced) {
            /* subscribers hold this one: keep it for a bridge */
            b->replaced = b->cur;
        } else {
            xg_book_state_unref(b->cur);
        }
        b->cur = s;
        b->synced = 1;
        b->st.snapshots++;
        return XG_BOOK_SNAPSHOT;
    } else {
        struct xg_book_state *s = b->cur;
        long an[2];
        int risky = s->side[0].n + growth(u->ops[0], u->nops[0])
                        > b->max_levels
                    || s->side[1].n + growth(u->ops[1], u->nops[1])
                        > b->max_levels;

        /* copy on write: a mark, or a change that may fail half way */
        if (s->refs > 1 || risky) {
            s = state_clone(s);
        }
        for (k = 0; k < 2; k++) {
            an[k] = apply_side(&s->side[k], k, u->ops[k], u->nops[k],
                b->max_levels);
            if (an[k] < 0) {
                if (s != b->cur) {
                    xg_book_state_unref(s);
                }
                return xg_book_reject(b, "change", "%s would exceed %zu "
                    "levels", k ? "asks" : "bids", b->max_levels);
            }
        }
        s->seq = u->seq;
        if (u->has_ts) {
            s->timestamp = u->timestamp;
            s->has_ts = 1;
        }
        if (s != b->cur) {
            xg_book_state_unref(b->cur);
            b->cur = s;
        }
        b->st.changes++;
        b->st.anomalies += (uint64_t) (an[0] + an[1]);
        return XG_BOOK_APPLIED;
    }
}

/* ---- comparing ---------------------------------------------------------- */

static void
put_op(struct xg_book_op *o, int side, int action,
    const struct xg_book_level *l)
{
    o->side = (unsigned char) side;
    o->action = (unsigned char) action;
    o->idx = 0;
    o->price = l->price;
    o->pint = l->pint;
    if (action == XG_BOOK_DELETE) {
        o->amount = 0;
        o->aint = 1;
    } else {
        o->amount = l->amount;
        o->aint = l->aint;
    }
}

/* Appends at OPS the ops turning side A into side B, best price first;
 * returns how many. OPS has room for A->n + B->n. */
static size_t
diff_side(struct xg_book_op *ops, int side, const struct xg_book_side *a,
    const struct xg_book_side *b)
{
    size_t i = a->n, j = b->n, n = 0;

    /* walk from the end (best) towards the start */
    while (i > 0 || j > 0) {
        const struct xg_book_level *la = i > 0 ? &a->lv[i - 1] : NULL;
        const struct xg_book_level *lb = j > 0 ? &b->lv[j - 1] : NULL;

        if (la != NULL && lb != NULL && la->price == lb->price) {
            if (la->amount != lb->amount) {
                put_op(&ops[n++], side, XG_BOOK_CHANGE, lb);
            }
            i--;
            j--;
        } else if (lb == NULL
                   || (la != NULL && before(side, lb->price, la->price))) {
            /* la is better than anything left in B: it vanished */
            put_op(&ops[n++], side, XG_BOOK_DELETE, la);
            i--;
        } else {
            put_op(&ops[n++], side, XG_BOOK_NEW, lb);
            j--;
        }
    }
    return n;
}

struct xg_book_op *
xg_book_diff(const struct xg_book_state *old,
    const struct xg_book_state *now, size_t *n, size_t *nbids)
{
    static const struct xg_book_side empty;
    struct xg_book_op *ops;
    size_t room = 0, nb;
    int k;

    for (k = 0; k < 2; k++) {
        room += (old ? old->side[k].n : 0) + (now ? now->side[k].n : 0);
    }
    *n = 0;
    if (nbids != NULL) {
        *nbids = 0;
    }
    if (room == 0) {
        return NULL;
    }
    ops = xg_malloc(room * sizeof(*ops));
    nb = diff_side(ops, 0, old ? &old->side[0] : &empty,
        now ? &now->side[0] : &empty);
    *n = nb + diff_side(ops + nb, 1, old ? &old->side[1] : &empty,
        now ? &now->side[1] : &empty);
    if (nbids != NULL) {
        *nbids = nb;
    }
    if (*n == 0) {
        free(ops);
        return NULL;
    }
    return ops;
}

int
xg_book_state_equal(const struct xg_book_state *old,
    const struct xg_book *now)
{
    int k;
    size_t i;

    if (old == NULL || now->cur == NULL) {
        return old == NULL && now->cur == NULL;
    }
    for (k = 0; k < 2; k++) {
        const struct xg_book_side *a = &old->side[k], *c = &now->cur->side[k];

        if (a->n != c->n) {
            return 0;
        }
        for (i = 0; i < a->n; i++) {
            if (a->lv[i].price != c->lv[i].price
                || a->lv[i].amount != c->lv[i].amount) {
                return 0;
            }
        }
    }
    return 1;
}
