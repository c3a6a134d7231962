/*
 * xg_book.c: order-book state for Deribit delta book channels and the
 * bridging, snapshot and diff messages built from it (see xg_book.h).
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
 * Numbers. Prices and amounts are compared as doubles. They are
 * re-emitted as the shortest decimal text that parses back to the same
 * double (%.15g, else %.16g, else %.17g), as an integer when the
 * exchange wrote an integer and with a ".0" when it wrote a real that
 * prints without a point, so a client's float parse gives exactly the
 * exchange's value and the text is the exchange's own in every case
 * where the exchange writes shortest reals (it does: 5042.34, 50000.0).
 * Jansson's own real output uses 17 digits (5042.3400000000001), which
 * is why levels are written by hand here; strings are escaped by jansson.
 */
#include "xg_core.h"
#include "xg_book.h"
#include "xg_log.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define ACT_NEW    0
#define ACT_CHANGE 1
#define ACT_DELETE 2

/* Integers up to 2^53 are exact as doubles and re-emitted as integers. */
#define XG_BOOK_INT_EXACT 9007199254740992LL

struct xg_book_level {
    double        price;
    double        amount;
    unsigned char pint;     /* the exchange wrote the price as an integer */
    unsigned char aint;     /* ... and the amount */
};

struct xg_book_side {
    struct xg_book_level *lv;
    size_t                n, cap;
};

struct xg_book_state {
    unsigned            refs;
    uint64_t            change_id;
    int64_t             timestamp;
    int                 has_ts;
    struct xg_book_side side[2];    /* 0 bids, 1 asks */
};

struct xg_book {
    char                 *channel;
    char                 *instrument;
    char                 *channel_json;     /* quoted and escaped */
    char                 *instrument_json;
    struct xg_book_state *cur;              /* NULL before a snapshot */
    struct xg_book_state *replaced;         /* what the last snapshot
                                               replaced while in sync,
                                               until the next apply */
    int                   synced;
    size_t                max_levels;
    struct xg_book_stats  st;
    char                  err[160];
};

/* One parsed [action, price, amount] entry of a message. */
struct xg_book_op {
    double        price;
    double        amount;
    uint32_t      idx;      /* position in the message: last one wins */
    unsigned char act, pint, aint;
};

/* ---- channel names ------------------------------------------------------ */

/*
 * Splits CHANNEL on '.' into at most 6 parts; returns the count, or 0
 * when a part is empty or there are more than 6.
 */
static int
split_channel(const char *channel, const char *part[6], size_t len[6])
{
    const char *p = channel, *dot;
    int n = 0;

    for (;;) {
        if (n == 6) {
            return 0;
        }
        dot = strchr(p, '.');
        part[n] = p;
        len[n] = dot ? (size_t) (dot - p) : strlen(p);
        if (len[n] == 0) {
            return 0;
        }
        n++;
        if (dot == NULL) {
            return n;
        }
        p = dot + 1;
    }
}

enum xg_book_kind
xg_book_channel_kind(const char *channel)
{
    const char *part[6];
    size_t len[6], i;
    int n;

    if (channel == NULL) {
        return XG_BOOK_NOT_BOOK;
    }
    n = split_channel(channel, part, len);
    if (n < 3 || len[0] != 4 || memcmp(part[0], "book", 4) != 0) {
        return XG_BOOK_NOT_BOOK;
    }
    if (n == 3) {
        return XG_BOOK_DELTA;
    }
    if (n == 5) {
        /* book.I.GROUP.DEPTH.INTERVAL: DEPTH is a number */
        for (i = 0; i < len[3]; i++) {
            if (part[3][i] < '0' || part[3][i] > '9') {
                return XG_BOOK_NOT_BOOK;
            }
        }
        return XG_BOOK_IMAGE;
    }
    return XG_BOOK_NOT_BOOK;
}

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

    s->change_id = o->change_id;
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
xg_book_state_change_id(const struct xg_book_state *s)
{
    return s ? s->change_id : 0;
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

/* Returns S as a quoted, escaped JSON string (malloc'd), via jansson. */
static char *
json_quote(const char *s)
{
    json_t *j = json_string(s);
    char *out;

    if (j == NULL) {
        /* not UTF-8: never the case for a channel the registry accepted */
        j = json_string("");
    }
    out = json_dumps(j, JSON_ENCODE_ANY);
    json_decref(j);
    if (out == NULL) {
        return xg_strdup("\"\"");
    }
    return out;
}

struct xg_book *
xg_book_new(const char *channel, const char *instrument)
{
    struct xg_book *b;
    const char *part[6];
    size_t len[6];

    if (xg_book_channel_kind(channel) != XG_BOOK_DELTA) {
        return NULL;
    }
    b = xg_calloc(1, sizeof(*b));
    b->channel = xg_strdup(channel);
    if (instrument != NULL) {
        b->instrument = xg_strdup(instrument);
    } else {
        split_channel(channel, part, len);
        b->instrument = xg_strndup(part[1], len[1]);
    }
    b->channel_json = json_quote(b->channel);
    b->instrument_json = json_quote(b->instrument);
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
    free(b->channel);
    free(b->instrument);
    free(b->channel_json);
    free(b->instrument_json);
    free(b);
}

void
xg_book_set_max_levels(struct xg_book *b, size_t max)
{
    b->max_levels = max > 0 ? max : 1;
}

int
xg_book_synced(const struct xg_book *b)
{
    return b->synced;
}

uint64_t
xg_book_change_id(const struct xg_book *b)
{
    return b->cur ? b->cur->change_id : 0;
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
    st->change_id = xg_book_change_id(b);
    st->synced = b->synced;
    st->nbids = b->cur ? b->cur->side[0].n : 0;
    st->nasks = b->cur ? b->cur->side[1].n : 0;
    st->bytes = sizeof(*b) + strlen(b->channel) + 1 + strlen(b->instrument)
                + 1 + strlen(b->channel_json) + 1
                + strlen(b->instrument_json) + 1;
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
xg_book_replaced(const struct xg_book *b)
{
    return b->replaced;
}

/* ---- parsing ------------------------------------------------------------ */

static void __attribute__((format(printf, 2, 3)))
set_err(struct xg_book *b, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(b->err, sizeof(b->err), fmt, ap);
    va_end(ap);
}

/* A JSON number as a double; *IS_INT when written as an exact integer. */
static int
get_number(const json_t *j, double *v, unsigned char *is_int)
{
    if (json_is_integer(j)) {
        json_int_t i = json_integer_value(j);

        *v = (double) i;
        *is_int = i <= XG_BOOK_INT_EXACT && i >= -XG_BOOK_INT_EXACT;
        return XG_OK;
    }
    if (json_is_real(j)) {
        *v = json_real_value(j);
        *is_int = 0;
        return isfinite(*v) ? XG_OK : XG_ERROR;
    }
    return XG_ERROR;
}

/* A non-negative JSON integer (change ids). */
static int
get_id(const json_t *j, uint64_t *v)
{
    if (!json_is_integer(j) || json_integer_value(j) < 0) {
        return XG_ERROR;
    }
    *v = (uint64_t) json_integer_value(j);
    return XG_OK;
}

/*
 * Parses side NAME (0 bids, 1 asks) of DATA into a malloc'd array of ops
 * (*OPS, *N; NULL and 0 when empty). Returns XG_OK, or XG_ERROR with
 * b->err set.
 */
static int
parse_side(struct xg_book *b, const json_t *arr, const char *name,
    struct xg_book_op **ops, size_t *n)
{
    size_t i, cnt;
    struct xg_book_op *o;

    *ops = NULL;
    *n = 0;
    if (!json_is_array(arr)) {
        set_err(b, "%s is missing or not an array", name);
        return XG_ERROR;
    }
    cnt = json_array_size(arr);
    if (cnt > b->max_levels) {
        set_err(b, "%s has %zu levels, more than the limit %zu", name, cnt,
            b->max_levels);
        return XG_ERROR;
    }
    if (cnt == 0) {
        return XG_OK;
    }
    o = xg_malloc(cnt * sizeof(*o));
    for (i = 0; i < cnt; i++) {
        const json_t *e = json_array_get(arr, i);
        const char *act;

        if (!json_is_array(e) || json_array_size(e) != 3) {
            set_err(b, "%s[%zu] is not an [action, price, amount] array",
                name, i);
            goto fail;
        }
        act = json_string_value(json_array_get(e, 0));
        if (act == NULL) {
            set_err(b, "%s[%zu]: action is not a string", name, i);
            goto fail;
        }
        if (strcmp(act, "new") == 0) {
            o[i].act = ACT_NEW;
        } else if (strcmp(act, "change") == 0) {
            o[i].act = ACT_CHANGE;
        } else if (strcmp(act, "delete") == 0) {
            o[i].act = ACT_DELETE;
        } else {
            set_err(b, "%s[%zu]: unknown action", name, i);
            goto fail;
        }
        if (get_number(json_array_get(e, 1), &o[i].price, &o[i].pint)
            != XG_OK) {
            set_err(b, "%s[%zu]: price is not a finite number", name, i);
            goto fail;
        }
        if (get_number(json_array_get(e, 2), &o[i].amount, &o[i].aint)
            != XG_OK) {
            set_err(b, "%s[%zu]: amount is not a finite number", name, i);
            goto fail;
        }
        if (o[i].amount < 0) {
            set_err(b, "%s[%zu]: amount is negative", name, i);
            goto fail;
        }
        if (o[i].price == 0) {
            o[i].price = 0;     /* -0 and 0 are one level */
        }
        o[i].idx = (uint32_t) i;
    }
    *ops = o;
    *n = cnt;
    return XG_OK;

fail:
    free(o);
    return XG_ERROR;
}

/* ---- applying ----------------------------------------------------------- */

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
    qsort(ops, n, sizeof(*ops), side ? op_cmp_asks : op_cmp_bids);
    /* room for the usual ebb and flow of a book without a realloc */
    sd->cap = n + n / 8 + 8;
    sd->lv = xg_malloc(sd->cap * sizeof(struct xg_book_level));
    for (i = 0; i < n; i++) {
        if (i + 1 < n && ops[i + 1].price == ops[i].price) {
            continue;
        }
        if (ops[i].act == ACT_DELETE || ops[i].amount == 0) {
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

        if (o->act == ACT_DELETE || o->amount == 0) {
            if (found) {
                memmove(&sd->lv[i], &sd->lv[i + 1],
                    (sd->n - i - 1) * sizeof(struct xg_book_level));
                sd->n--;
            } else if (o->act == ACT_DELETE) {
                anomalies++;
            }
            continue;
        }
        if (found) {
            sd->lv[i].amount = o->amount;
            sd->lv[i].aint = o->aint;
            anomalies += o->act == ACT_NEW;
            continue;
        }
        anomalies += o->act == ACT_CHANGE;
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
        g += ops[k].act != ACT_DELETE && ops[k].amount != 0;
    }
    return g;
}

/* xg_book_replaced() lasts until the next message, whatever it is. */
static void
forget_replaced(struct xg_book *b)
{
    xg_book_state_unref(b->replaced);
    b->replaced = NULL;
}

static enum xg_book_result
book_error(struct xg_book *b, const char *what)
{
    b->st.errors++;
    xg_log_warn("book %s: malformed %s dropped: %s", b->channel, what,
        b->err);
    return XG_BOOK_ERROR;
}

enum xg_book_result
xg_book_apply(struct xg_book *b, const json_t *data)
{
    const json_t *type, *prev_j, *ts_j;
    const char *inst, *tname;
    uint64_t change_id, prev = 0;
    int64_t ts = 0;
    int snapshot, has_ts = 0, k;
    struct xg_book_op *ops[2] = { NULL, NULL };
    size_t nops[2] = { 0, 0 };
    enum xg_book_result r = XG_BOOK_APPLIED;

    forget_replaced(b);
    if (!json_is_object(data)) {
        set_err(b, "data is not an object");
        return book_error(b, "message");
    }
    inst = json_string_value(json_object_get(data, "instrument_name"));
    if (inst == NULL || strcmp(inst, b->instrument) != 0) {
        set_err(b, "instrument_name is %s", inst ? "another instrument"
            : "missing or not a string");
        return book_error(b, "message");
    }
    if (get_id(json_object_get(data, "change_id"), &change_id) != XG_OK) {
        set_err(b, "change_id is missing or not a non-negative integer");
        return book_error(b, "message");
    }
    prev_j = json_object_get(data, "prev_change_id");
    if (prev_j != NULL && get_id(prev_j, &prev) != XG_OK) {
        set_err(b, "prev_change_id is not a non-negative integer");
        return book_error(b, "message");
    }
    ts_j = json_object_get(data, "timestamp");
    if (ts_j != NULL) {
        if (!json_is_integer(ts_j)) {
            set_err(b, "timestamp is not an integer");
            return book_error(b, "message");
        }
        ts = json_integer_value(ts_j);
        has_ts = 1;
    }
    type = json_object_get(data, "type");
    if (type == NULL) {
        snapshot = prev_j == NULL;
    } else {
        tname = json_string_value(type);
        if (tname != NULL && strcmp(tname, "snapshot") == 0) {
            snapshot = 1;
        } else if (tname != NULL && strcmp(tname, "change") == 0) {
            snapshot = 0;
            if (prev_j == NULL) {
                set_err(b, "a change without prev_change_id");
                return book_error(b, "change");
            }
        } else {
            set_err(b, "type is neither \"snapshot\" nor \"change\"");
            return book_error(b, "message");
        }
    }

    if (!snapshot) {
        if (!b->synced) {
            b->st.waits++;
            xg_log_debug("book %s: change %llu dropped: waiting for a "
                "snapshot", b->channel, (unsigned long long) change_id);
            return XG_BOOK_WAIT;
        }
        if (prev != b->cur->change_id) {
            b->synced = 0;
            b->st.gaps++;
            xg_log_warn("book %s: gap: prev_change_id %llu but the last "
                "change_id is %llu: resync needed", b->channel,
                (unsigned long long) prev,
                (unsigned long long) b->cur->change_id);
            return XG_BOOK_GAP;
        }
    }
    for (k = 0; k < 2; k++) {
        if (parse_side(b, json_object_get(data, k ? "asks" : "bids"),
                k ? "asks" : "bids", &ops[k], &nops[k]) != XG_OK) {
            r = book_error(b, snapshot ? "snapshot" : "change");
            goto done;
        }
    }

    if (snapshot) {
        struct xg_book_state *s = state_new();

        for (k = 0; k < 2; k++) {
            build_side(&s->side[k], k, ops[k], nops[k]);
        }
        s->change_id = change_id;
        s->timestamp = ts;
        s->has_ts = has_ts;
        if (b->synced) {
            /* subscribers hold this one: keep it for a bridge */
            b->replaced = b->cur;
        } else {
            xg_book_state_unref(b->cur);
        }
        b->cur = s;
        b->synced = 1;
        b->st.snapshots++;
        r = XG_BOOK_SNAPSHOT;
    } else {
        struct xg_book_state *s = b->cur;
        long an[2];
        int risky = s->side[0].n + growth(ops[0], nops[0]) > b->max_levels
                    || s->side[1].n + growth(ops[1], nops[1]) > b->max_levels;

        /* copy on write: a mark, or a change that may fail half way */
        if (s->refs > 1 || risky) {
            s = state_clone(s);
        }
        for (k = 0; k < 2; k++) {
            an[k] = apply_side(&s->side[k], k, ops[k], nops[k],
                b->max_levels);
            if (an[k] < 0) {
                if (s != b->cur) {
                    xg_book_state_unref(s);
                }
                set_err(b, "%s would exceed %zu levels", k ? "asks" : "bids",
                    b->max_levels);
                r = book_error(b, "change");
                goto done;
            }
        }
        s->change_id = change_id;
        if (has_ts) {
            s->timestamp = ts;
            s->has_ts = 1;
        }
        if (s != b->cur) {
            xg_book_state_unref(b->cur);
            b->cur = s;
        }
        b->st.changes++;
        b->st.anomalies += (uint64_t) (an[0] + an[1]);
    }

done:
    free(ops[0]);
    free(ops[1]);
    return r;
}

enum xg_book_result
xg_book_apply_text(struct xg_book *b, const char *data, size_t len)
{
    json_error_t e;
    json_t *j;
    enum xg_book_result r;

    j = json_loadb(data, len, JSON_REJECT_DUPLICATES, &e);
    if (j == NULL) {
        forget_replaced(b);
        set_err(b, "not JSON: %s at %d", e.text, e.position);
        return book_error(b, "message");
    }
    r = xg_book_apply(b, j);
    json_decref(j);
    return r;
}

enum xg_book_result
xg_book_apply_notification(struct xg_book *b, const char *msg, size_t len)
{
    json_error_t e;
    json_t *j, *params;
    const char *ch;
    enum xg_book_result r;

    j = json_loadb(msg, len, JSON_REJECT_DUPLICATES, &e);
    if (j == NULL) {
        forget_replaced(b);
        set_err(b, "not JSON: %s at %d", e.text, e.position);
        return book_error(b, "notification");
    }
    params = json_object_get(j, "params");
    ch = json_string_value(json_object_get(params, "channel"));
    if (ch == NULL || strcmp(ch, b->channel) != 0) {
        forget_replaced(b);
        json_decref(j);
        set_err(b, "params.channel is %s", ch ? "another channel"
            : "missing");
        return book_error(b, "notification");
    }
    r = xg_book_apply(b, json_object_get(params, "data"));
    json_decref(j);
    return r;
}

/* ---- output ------------------------------------------------------------- */

struct sbuf {
    char  *p;
    size_t len, cap;
};

static void
sb_put(struct sbuf *sb, const char *s, size_t n)
{
    if (sb->len + n + 1 > sb->cap) {
        size_t cap = sb->cap ? sb->cap : 256;

        while (sb->len + n + 1 > cap) {
            cap *= 2;
        }
        sb->p = xg_realloc(sb->p, cap);
        sb->cap = cap;
    }
    memcpy(sb->p + sb->len, s, n);
    sb->len += n;
    sb->p[sb->len] = '\0';
}

static void
sb_puts(struct sbuf *sb, const char *s)
{
    sb_put(sb, s, strlen(s));
}

static void
sb_u64(struct sbuf *sb, uint64_t v)
{
    char buf[24];

    sb_put(sb, buf, (size_t) snprintf(buf, sizeof(buf), "%llu",
        (unsigned long long) v));
}

/*
 * Appends V as JSON number text: an integer when IS_INT, else the
 * shortest of %.15g/%.16g/%.17g that reads back as V, with ".0" added
 * when that text would read as an integer.
 */
static void
sb_num(struct sbuf *sb, double v, int is_int)
{
    char buf[40];
    int n, prec;

    static const double p10[] = { 1, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7,
                                  1e8, 1e9 };
    int d;

    if (is_int) {
        n = snprintf(buf, sizeof(buf), "%lld", (long long) v);
        sb_put(sb, buf, (size_t) n);
        return;
    }
    /*
     * Fast path for prices and amounts with few decimals: the first D
     * for which M = round(V * 10^D) gives back V. M and 10^D are exact
     * doubles, so M / 10^D is correctly rounded, which is what any
     * correct float parse of the text "M with D decimals" returns
     * (Clinger's fast path). The smallest D gives the shortest text.
     * printf's %g is ten times slower, and a snapshot has 4 numbers a
     * level.
     */
    for (d = 0; d < (int) XG_NELEM(p10); d++) {
        double m = nearbyint(v * p10[d]);

        if (fabs(m) < (double) XG_BOOK_INT_EXACT && m / p10[d] == v) {
            char digits[24];
            unsigned long long u = (unsigned long long) fabs(m);
            int nd = 0, o = 0;

            do {
                digits[nd++] = (char) ('0' + u % 10);
                u /= 10;
            } while (u > 0);
            while (nd <= d) {
                digits[nd++] = '0';     /* 0.05: leading zeros */
            }
            if (signbit(v) && m != 0) {
                buf[o++] = '-';
            }
            while (nd > d) {
                buf[o++] = digits[--nd];
            }
            buf[o++] = '.';
            if (d == 0) {
                buf[o++] = '0';
            }
            while (nd > 0) {
                buf[o++] = digits[--nd];
            }
            sb_put(sb, buf, (size_t) o);
            return;
        }
    }
    for (prec = 15; prec <= 17; prec++) {
        n = snprintf(buf, sizeof(buf), "%.*g", prec, v);
        if (strtod(buf, NULL) == v) {
            break;
        }
    }
    if (strpbrk(buf, ".en") == NULL) {
        memcpy(buf + n, ".0", 3);
        n += 2;
    }
    sb_put(sb, buf, (size_t) n);
}

static void
sb_level(struct sbuf *sb, int *first, const char *act,
    const struct xg_book_level *l, int deleted)
{
    if (!*first) {
        sb_put(sb, ",", 1);
    }
    *first = 0;
    sb_puts(sb, act);
    sb_num(sb, l->price, l->pint);
    sb_put(sb, ",", 1);
    if (deleted) {
        sb_put(sb, "0]", 2);
    } else {
        sb_num(sb, l->amount, l->aint);
        sb_put(sb, "]", 1);
    }
}

/* The envelope up to and including `"data":{"type":"TYPE"`. */
static void
sb_head(struct sbuf *sb, const struct xg_book *b, const char *channel,
    const char *type)
{
    sb_puts(sb, "{\"jsonrpc\":\"2.0\",\"method\":\"subscription\","
        "\"params\":{\"channel\":");
    if (channel == NULL || strcmp(channel, b->channel) == 0) {
        sb_puts(sb, b->channel_json);
    } else {
        char *q = json_quote(channel);

        sb_puts(sb, q);
        free(q);
    }
    sb_puts(sb, ",\"data\":{\"type\":\"");
    sb_puts(sb, type);
    sb_puts(sb, "\"");
    if (b->cur->has_ts) {
        char buf[24];

        sb_puts(sb, ",\"timestamp\":");
        sb_put(sb, buf, (size_t) snprintf(buf, sizeof(buf), "%lld",
            (long long) b->cur->timestamp));
    }
    sb_puts(sb, ",\"instrument_name\":");
    sb_puts(sb, b->instrument_json);
}

char *
xg_book_snapshot_text(const struct xg_book *b, const char *channel)
{
    struct sbuf sb = { NULL, 0, 0 };
    int k;

    if (!b->synced) {
        return NULL;
    }
    sb_head(&sb, b, channel, "snapshot");
    sb_puts(&sb, ",\"change_id\":");
    sb_u64(&sb, b->cur->change_id);
    for (k = 0; k < 2; k++) {
        const struct xg_book_side *sd = &b->cur->side[k];
        int first = 1;
        size_t i;

        sb_puts(&sb, k ? "],\"asks\":[" : ",\"bids\":[");
        /* best first: storage keeps the best last */
        for (i = sd->n; i-- > 0;) {
            sb_level(&sb, &first, "[\"new\",", &sd->lv[i], 0);
        }
    }
    sb_puts(&sb, "]}}}");
    return sb.p;
}

/* Appends the changes turning side A into side B, best price first. */
static void
diff_side(struct sbuf *sb, int side, const struct xg_book_side *a,
    const struct xg_book_side *b)
{
    size_t i = a->n, j = b->n;
    int first = 1;

    /* walk from the end (best) towards the start */
    while (i > 0 || j > 0) {
        const struct xg_book_level *la = i > 0 ? &a->lv[i - 1] : NULL;
        const struct xg_book_level *lb = j > 0 ? &b->lv[j - 1] : NULL;

        if (la != NULL && lb != NULL && la->price == lb->price) {
            if (la->amount != lb->amount) {
                sb_level(sb, &first, "[\"change\",", lb, 0);
            }
            i--;
            j--;
        } else if (lb == NULL
                   || (la != NULL && before(side, lb->price, la->price))) {
            /* la is better than anything left in B: it vanished */
            sb_level(sb, &first, "[\"delete\",", la, 1);
            i--;
        } else {
            sb_level(sb, &first, "[\"new\",", lb, 0);
            j--;
        }
    }
}

char *
xg_book_bridge(const struct xg_book_state *old, const struct xg_book *now,
    const char *channel)
{
    struct sbuf sb = { NULL, 0, 0 };
    int k;

    if (old == NULL || !now->synced) {
        return NULL;
    }
    sb_head(&sb, now, channel, "change");
    sb_puts(&sb, ",\"prev_change_id\":");
    sb_u64(&sb, old->change_id);
    sb_puts(&sb, ",\"change_id\":");
    sb_u64(&sb, now->cur->change_id);
    for (k = 0; k < 2; k++) {
        sb_puts(&sb, k ? "],\"asks\":[" : ",\"bids\":[");
        diff_side(&sb, k, &old->side[k], &now->cur->side[k]);
    }
    sb_puts(&sb, "]}}}");
    return sb.p;
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
