/*
 * xg_venue_binance_track.c: the Binance venue's continuity kinds for the
 * tracker engine (src/xg_track.c): depth streams' books kept by Binance's
 * documented sync rules and bridged across gaps, trades and aggregate
 * trades backfilled by id; and the REST depth answer from the book.
 *
 * Every message handed in is the raw event payload (the "data" object of
 * a combined stream); what goes out (env->fanout, or the engine passing
 * the bytes) is a raw payload too.
 */
#include "xg_core.h"
#include "xg_jscan.h"
#include "xg_log.h"
#include "xg_registry.h"
#include "xg_track.h"
#include "xg_venue_binance.h"
#include "xg_timer.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/event.h>
#include <jansson.h>

/* Levels kept per side of a book: the spot snapshot gives 5000, events
   add deeper ones; beyond this the worst levels are forgotten (a client
   keeping them all may differ from the gateway that deep). */
#define BN_BOOK_MAX_LEVELS  10000
/* Ids one trades backfill asks for at most; the rest: a gap notice. */
#define BN_TRADES_MAX       1000
/* After an outage, a snapshot that no event followed for this long is
   bridged to by itself (a quiet market: nothing is coming to sync with);
   longer than the slowest stream's interval (1000 ms). */
#define BN_QUIET_MS         2000
/* Longest symbol in a stream name. */
#define BN_SYM_MAX          32
/* Longest price or quantity text kept. */
#define BN_DEC_MAX          64

/* ---- small helpers: a growing text, decimal strings ---- */

struct bn_buf {
    char    *p;
    size_t   len, cap;
};

static void
bn_buf_add(struct bn_buf *b, const char *s, size_t n)
{
    if (b->len + n + 1 > b->cap) {
        b->cap = (b->len + n + 1) * 2;
        b->p = xg_realloc(b->p, b->cap);
    }
    memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = '\0';
}

static void
bn_buf_str(struct bn_buf *b, const char *s)
{
    bn_buf_add(b, s, strlen(s));
}

static void __attribute__((format(printf, 2, 3)))
bn_buf_fmt(struct bn_buf *b, const char *fmt, ...)
{
    char tmp[160];
    va_list ap;
    int n;

    va_start(ap, fmt);
    n = vsnprintf(tmp, sizeof(tmp), fmt, ap);
    va_end(ap);
    if (n > 0) {
        bn_buf_add(b, tmp, (size_t) n < sizeof(tmp) ? (size_t) n
                                                    : sizeof(tmp) - 1);
    }
}

/* 1 when S is a decimal as Binance writes them: digits, optionally a dot
   and digits, at most BN_DEC_MAX bytes. */
static int
bn_dec_ok(const char *s)
{
    size_t i = 0, dot = 0;

    if (s == NULL || s[0] < '0' || s[0] > '9') {
        return 0;
    }
    for (i = 0; s[i] != '\0'; i++) {
        if (s[i] == '.') {
            if (dot++ || s[i + 1] < '0' || s[i + 1] > '9') {
                return 0;
            }
        } else if (s[i] < '0' || s[i] > '9') {
            return 0;
        }
    }
    return i <= BN_DEC_MAX;
}

/* Compares two valid decimals by value ("0.010" == "0.01"). */
static int
bn_dec_cmp(const char *a, const char *b)
{
    size_t ia, ib;
    int c;

    while (*a == '0' && a[1] >= '0' && a[1] <= '9') {
        a++;
    }
    while (*b == '0' && b[1] >= '0' && b[1] <= '9') {
        b++;
    }
    ia = strcspn(a, ".");
    ib = strcspn(b, ".");
    if (ia != ib) {
        return ia < ib ? -1 : 1;
    }
    if ((c = memcmp(a, b, ia)) != 0) {
        return c < 0 ? -1 : 1;
    }
    a += ia + (a[ia] == '.');
    b += ib + (b[ib] == '.');
    while (*a != '\0' || *b != '\0') {
        char x = *a ? *a++ : '0', y = *b ? *b++ : '0';

        if (x != y) {
            return x < y ? -1 : 1;
        }
    }
    return 0;
}

static int
bn_dec_zero(const char *s)
{
    return s[strspn(s, "0.")] == '\0';
}

/* The symbol of stream NAME ("btcusdt@depth@100ms"), upper case, into
   SYM; *REST: what follows the '@'. XG_ERROR when it has none. */
static int
bn_stream_sym(const char *name, char *sym, const char **rest)
{
    const char *at = strchr(name, '@');
    size_t i, n;

    if (at == NULL || at == name || (n = (size_t) (at - name)) > BN_SYM_MAX) {
        return XG_ERROR;
    }
    for (i = 0; i < n; i++) {
        char c = name[i];

        if (c >= 'a' && c <= 'z') {
            c = (char) (c - 'a' + 'A');
        } else if (!((c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9'))) {
            return XG_ERROR;
        }
        sym[i] = c;
    }
    sym[n] = '\0';
    *rest = at + 1;
    return XG_OK;
}

/* A JSON integer >= 0 into *V: XG_ERROR when J is none. */
static int
bn_json_uint(json_t *j, uint64_t *v)
{
    if (!json_is_integer(j) || json_integer_value(j) < 0) {
        return XG_ERROR;
    }
    *v = (uint64_t) json_integer_value(j);
    return XG_OK;
}

/* The "status" of a REST error (the venue's {"status":N,"msg":...}), 0
   when it has none (the request never got an answer). */
static uint64_t
bn_error_status(const struct xg_jspan *error)
{
    static const char *const keys[] = { "status" };
    struct xg_jspan v[1];
    uint64_t st;

    if (error->p == NULL
        || xg_jscan_object(error->p, error->len, keys, 1, v) != XG_OK
        || xg_jscan_uint(&v[0], &st) != XG_OK) {
        return 0;
    }
    return st;
}

/*
 * Q (an answer of T's current fetch that failed with ERROR) is sent again
 * after the engine's backoff unless the error is final (a 4xx other than
 * 403 WAF, 408, 418 ban, 429 rate limit) or Q had its retries. ATTEMPTS:
 * the retries Q had. Returns 1 when a copy is waiting for its retry.
 */
static int
bn_retry(struct xg_track *t, const struct xg_reg_req *q, unsigned attempts,
    const struct xg_jspan *error)
{
    uint64_t st = bn_error_status(error);
    struct xg_reg_req *r;

    if (st >= 400 && st < 500 && st != 403 && st != 408 && st != 418
        && st != 429) {
        return 0;
    }
    r = xg_registry_req_new(q->kind, NULL, NULL, q->method, q->text, q->len);
    r->tag = t->tag;
    r->attempts = attempts;
    t->pending++;       /* the copy is the fetch's, waiting */
    if (xg_track_retry(t, r, error->p ? error->p : "no answer",
            error->p ? (int) (error->len > 200 ? 200 : error->len) : 9)) {
        return 1;
    }
    t->pending--;
    xg_registry_req_free(r);
    return 0;
}

/* A REST GET of PATH for T's current fetch. */
static void
bn_get(struct xg_track *t, const char *method, const char *path,
    unsigned attempts)
{
    struct xg_reg_req *q = xg_registry_req_new(XG_BN_REQ_REST, NULL, NULL,
        method, path, strlen(path));

    q->attempts = attempts;
    xg_track_send(t, q);
}

/* ---- price levels kept as the exchange's text ---- */

struct bn_lvl {
    char  *p, *q;
};

struct bn_side {
    struct bn_lvl *v;
    size_t         n, cap;
};

/* [0] bids, best (highest) first; [1] asks, best (lowest) first. */
struct bn_levels {
    struct bn_side  s[2];
};

static void
bn_levels_clear(struct bn_levels *lv)
{
    size_t i;
    int k;

    for (k = 0; k < 2; k++) {
        for (i = 0; i < lv->s[k].n; i++) {
            free(lv->s[k].v[i].p);
            free(lv->s[k].v[i].q);
        }
        free(lv->s[k].v);
    }
    memset(lv, 0, sizeof(*lv));
}

static void
bn_levels_free(struct bn_levels *lv)
{
    if (lv != NULL) {
        bn_levels_clear(lv);
        free(lv);
    }
}

/* Where price P goes in side K: *FOUND 1 when it is there. */
static size_t
bn_side_find(const struct bn_side *sd, int k, const char *p, int *found)
{
    size_t lo = 0, hi = sd->n;

    *found = 0;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int c = bn_dec_cmp(sd->v[mid].p, p);

        if (k == 0) {
            c = -c;         /* bids: highest first */
        }
        if (c == 0) {
            *found = 1;
            return mid;
        }
        if (c < 0) {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    return lo;
}

/* Level P of side K set to Q (valid decimals; a zero Q removes it). */
static void
bn_levels_set(struct bn_levels *lv, int k, const char *p, const char *q)
{
    struct bn_side *sd = &lv->s[k];
    int found;
    size_t i = bn_side_find(sd, k, p, &found);

    if (found) {
        if (bn_dec_zero(q)) {
            free(sd->v[i].p);
            free(sd->v[i].q);
            memmove(&sd->v[i], &sd->v[i + 1],
                (sd->n - i - 1) * sizeof(*sd->v));
            sd->n--;
        } else {
            free(sd->v[i].p);
            free(sd->v[i].q);
            sd->v[i].p = xg_strdup(p);
            sd->v[i].q = xg_strdup(q);
        }
        return;
    }
    if (bn_dec_zero(q)) {
        return;             /* removing an unknown level is normal */
    }
    if (sd->n == BN_BOOK_MAX_LEVELS) {
        if (i == sd->n) {
            return;         /* deeper than all kept */
        }
        sd->n--;
        free(sd->v[sd->n].p);
        free(sd->v[sd->n].q);
    }
    if (sd->n == sd->cap) {
        sd->cap = sd->cap ? sd->cap * 2 : 64;
        sd->v = xg_realloc(sd->v, sd->cap * sizeof(*sd->v));
    }
    memmove(&sd->v[i + 1], &sd->v[i], (sd->n - i) * sizeof(*sd->v));
    sd->v[i].p = xg_strdup(p);
    sd->v[i].q = xg_strdup(q);
    sd->n++;
}

/* 1 when ARR is an array of [price, quantity] pairs of valid decimals. */
static int
bn_levels_valid(json_t *arr)
{
    json_t *v;
    size_t i;

    if (!json_is_array(arr)) {
        return 0;
    }
    json_array_foreach(arr, i, v) {
        if (!json_is_array(v) || json_array_size(v) < 2
            || !bn_dec_ok(json_string_value(json_array_get(v, 0)))
            || !bn_dec_ok(json_string_value(json_array_get(v, 1)))) {
            return 0;
        }
    }
    return 1;
}

/* The pairs of ARR (valid) applied to side K of LV, in order. */
static void
bn_levels_apply(struct bn_levels *lv, int k, json_t *arr)
{
    json_t *v;
    size_t i;

    json_array_foreach(arr, i, v) {
        bn_levels_set(lv, k, json_string_value(json_array_get(v, 0)),
            json_string_value(json_array_get(v, 1)));
    }
}

/* Appends side K of LV, its top LIMIT levels, as [["p","q"],...]. */
static void
bn_levels_json(struct bn_buf *b, const struct bn_levels *lv, int k,
    size_t limit)
{
    const struct bn_side *sd = &lv->s[k];
    size_t i;

    bn_buf_str(b, "[");
    for (i = 0; i < sd->n && i < limit; i++) {
        bn_buf_str(b, i ? ",[\"" : "[\"");
        bn_buf_str(b, sd->v[i].p);
        bn_buf_str(b, "\",\"");
        bn_buf_str(b, sd->v[i].q);
        bn_buf_str(b, "\"]");
    }
    bn_buf_str(b, "]");
}

/*
 * Appends, for side K, every level that differs between FROM (what the
 * subscribers have) and TO (the truth): TO's level where it is new or its
 * quantity changed, quantity "0" where FROM's level is gone. In the
 * side's order. FULL 1: every level of TO, changed or not, so that a
 * client whose own snapshot is newer than FROM (it took one from the
 * exchange while the gateway repaired) still ends with the truth.
 */
static size_t
bn_levels_diff(struct bn_buf *b, const struct bn_levels *from,
    const struct bn_levels *to, int k, int full)
{
    const struct bn_side *f = &from->s[k], *t = &to->s[k];
    size_t i = 0, j = 0, n = 0;

    bn_buf_str(b, "[");
    while (i < f->n || j < t->n) {
        const char *p, *q;
        int c;

        if (i < f->n && j < t->n) {
            c = bn_dec_cmp(f->v[i].p, t->v[j].p);
            c = k == 0 ? -c : c;
        } else {
            c = i < f->n ? -1 : 1;
        }
        if (c < 0) {
            p = f->v[i++].p;
            q = "0";
        } else if (c > 0) {
            p = t->v[j].p;
            q = t->v[j++].q;
        } else {
            p = t->v[j].p;
            q = t->v[j].q;
            i++;
            j++;
            if (!full && strcmp(f->v[i - 1].q, q) == 0
                && strcmp(f->v[i - 1].p, p) == 0) {
                continue;
            }
        }
        bn_buf_str(b, n++ ? ",[\"" : "[\"");
        bn_buf_str(b, p);
        bn_buf_str(b, "\",\"");
        bn_buf_str(b, q);
        bn_buf_str(b, "\"]");
    }
    bn_buf_str(b, "]");
    return n;
}

/* ---- depth streams: the book ---- */

/*
 * For `<sym>@depth[@100ms|@500ms|@1000ms]` the gateway keeps the
 * symbol's book, and decides what subscribers get by what they already
 * got (du: the u of the last event handed out):
 *
 * - the truth: a REST snapshot (spot /api/v3/depth limit 5000, USDⓈ-M
 *   /fapi/v1/depth limit 1000) synced by Binance's rules (spot: drop
 *   u <= lastUpdateId, the first event has lastUpdateId+1 in [U,u], then
 *   U == prev_u+1; USDⓈ-M: drop u < lastUpdateId, the first event has
 *   U <= lastUpdateId <= u, or pu == lastUpdateId as bnsim and ccxt
 *   accept, then pu == prev_u). A snapshot older than the first event
 *   after it is fetched again (the engine's backoff, env->tries times).
 * - delivery: an event with u <= du is a duplicate (a reconnect, a
 *   rotation): dropped. One that continues du (spot U == du+1, USDⓈ-M
 *   pu == du) passes. A gap in what subscribers got (live, or after an
 *   outage) holds the channel and fetches a snapshot; once synced, each
 *   subscriber gets ONE bridging depthUpdate (U = du+1, USDⓈ-M pu = du,
 *   u, E and T of the first synced event past du) carrying every level
 *   that differs between the book they have and the truth ("0" for a
 *   level gone), then Binance's events unchanged. A snapshot that no
 *   event follows within BN_QUIET_MS (a quiet market) is bridged to by
 *   itself; an event that overlaps it after all is a gap, bridged again.
 * - a channel that never delivered anything has its first events held
 *   while the first snapshot is fetched, then passes them all, in order:
 *   a client syncing on its own needs every one of them.
 * - no book (the snapshot cannot be had, or is always too old): events
 *   pass as they come, a gap with a gap notice, and a fetch is tried
 *   again after env->retry_max_ms.
 *
 * Memory: BN_BOOK_MAX_LEVELS per side, at most three times while a bridge
 * is due (the subscribers' book, the truth, a snapshot waiting for its
 * first event); held events: the engine's max_held.
 */

struct bn_book {
    enum xg_bn_market  market;
    char               sym[BN_SYM_MAX + 1];
    struct bn_levels   book;        /* the truth, when synced */
    int                synced;
    uint64_t           bu;          /* the truth's last u */
    struct bn_levels  *cli;         /* what subscribers have (at du) while
                                       a bridge is due; NULL: none */
    struct bn_levels  *snap;        /* a snapshot waiting for its first
                                       event; NULL: none */
    uint64_t           snap_id;     /* its lastUpdateId */
    uint64_t           snap_E, snap_T; /* its E and T (USDⓈ-M), or 0 */
    struct xg_timer   *quiet;       /* bridges to the snapshot when no
                                       event came (BN_QUIET_MS) */
    struct xg_track   *t;           /* for the timer */
    int                delivered;   /* anything handed out yet */
    uint64_t           du, dE, dT;  /* the last event handed out */
    int                want;        /* a fetch of ours is current */
    unsigned           stale;       /* snapshots too old in a row */
    uint64_t           hold_off_ms; /* no fetch before (after a give-up) */
    int                noticed;     /* the engine sent a gap notice */
};

/* One depthUpdate, checked. ROOT holds the parse. */
struct bn_ev {
    json_t    *root, *lv[2];
    uint64_t   U, u, pu, E, T;
};

static void *
bn_book_create(const char *name, enum xg_bn_market m)
{
    /* the diff depth streams of either market (xg_venue_binance.h) */
    static const char *const speeds[] = { "depth", "depth@100ms",
        "depth@500ms", "depth@1000ms", NULL };
    const char *const *sp = speeds;
    char sym[BN_SYM_MAX + 1];
    const char *rest;
    struct bn_book *b;

    if (bn_stream_sym(name, sym, &rest) != XG_OK) {
        return NULL;
    }
    while (*sp != NULL && strcmp(*sp, rest) != 0) {
        sp++;
    }
    if (*sp == NULL) {
        return NULL;
    }
    b = xg_calloc(1, sizeof(*b));
    b->market = m;
    memcpy(b->sym, sym, sizeof(sym));
    return b;
}

static void *
bn_book_create_spot(const char *name)
{
    return bn_book_create(name, XG_BN_SPOT);
}

static void *
bn_book_create_usdm(const char *name)
{
    return bn_book_create(name, XG_BN_USDM);
}

static void
bn_book_free(void *p)
{
    struct bn_book *b = p;

    if (b->quiet != NULL) {
        xg_timer_free(b->quiet);
    }
    bn_levels_clear(&b->book);
    bn_levels_free(b->cli);
    bn_levels_free(b->snap);
    free(b);
}

/* DATA as a depthUpdate of market M into *E (E->root to be released):
   XG_ERROR when it is not one, or a field is missing or malformed. */
static int
bn_ev_parse(enum xg_bn_market m, const char *data, size_t len,
    struct bn_ev *e)
{
    json_t *r;

    memset(e, 0, sizeof(*e));
    r = json_loadb(data, len, 0, NULL);
    if (!json_is_object(r)
        || !json_is_string(json_object_get(r, "e"))
        || strcmp(json_string_value(json_object_get(r, "e")),
               "depthUpdate") != 0
        || bn_json_uint(json_object_get(r, "U"), &e->U) != XG_OK
        || bn_json_uint(json_object_get(r, "u"), &e->u) != XG_OK
        || e->U > e->u
        || (m == XG_BN_USDM
            && bn_json_uint(json_object_get(r, "pu"), &e->pu) != XG_OK)
        || !bn_levels_valid(json_object_get(r, "b"))
        || !bn_levels_valid(json_object_get(r, "a"))) {
        json_decref(r);
        return XG_ERROR;
    }
    /* E and T are informative: kept when they are numbers */
    (void) bn_json_uint(json_object_get(r, "E"), &e->E);
    if (bn_json_uint(json_object_get(r, "T"), &e->T) != XG_OK) {
        e->T = e->E;
    }
    e->root = r;
    e->lv[0] = json_object_get(r, "b");
    e->lv[1] = json_object_get(r, "a");
    return XG_OK;
}

/* 1 when E follows an event that ended at PREV (spot U == prev+1, USDⓈ-M
   pu == prev). */
static int
bn_follows(const struct bn_book *b, const struct bn_ev *e, uint64_t prev)
{
    return b->market == XG_BN_SPOT ? e->U == prev + 1 : e->pu == prev;
}

/* Where E stands against a snapshot at L: -1 older (dropped by the
   rules), 0 it syncs, 1 the snapshot is too old for it. */
static int
bn_sync_rule(const struct bn_book *b, const struct bn_ev *e, uint64_t L)
{
    if (b->market == XG_BN_SPOT) {
        if (e->u <= L) {
            return -1;
        }
        return e->U <= L + 1 ? 0 : 1;
    }
    if (e->u < L) {
        return -1;
    }
    return (e->U <= L && L <= e->u) || e->pu == L ? 0 : 1;
}

static void
bn_apply(struct bn_levels *lv, const struct bn_ev *e)
{
    bn_levels_apply(lv, 0, e->lv[0]);
    bn_levels_apply(lv, 1, e->lv[1]);
}

/* The truth and the subscribers in line: the book is what they have. */
static int
bn_book_in_line(const struct bn_book *b)
{
    return b->synced && b->delivered && b->bu == b->du && b->cli == NULL;
}

static uint64_t
bn_now(const struct xg_track *t)
{
    return t->env->now(t->env->ctx);
}

/* Step one of an event: the gateway's truth follows it. */
static void
bn_book_truth(struct xg_track *t, struct bn_book *b, const struct bn_ev *e)
{
    if (b->snap != NULL) {
        int r = bn_sync_rule(b, e, b->snap_id);

        if (r < 0) {
            return;
        }
        if (r > 0) {
            xg_track_log(XG_LOG_INFO, t, "%s: snapshot %llu older than the "
                "event %llu..%llu: fetching another", t->name,
                (unsigned long long) b->snap_id,
                (unsigned long long) e->U, (unsigned long long) e->u);
            bn_levels_free(b->snap);
            b->snap = NULL;
            b->stale++;
            return;
        }
        bn_levels_clear(&b->book);
        b->book = *b->snap;
        free(b->snap);
        b->snap = NULL;
        bn_apply(&b->book, e);
        b->bu = e->u;
        b->synced = 1;
        b->stale = 0;
        xg_track_log(XG_LOG_INFO, t, "%s: book synced at lastUpdateId %llu "
            "(event %llu..%llu)", t->name, (unsigned long long) b->snap_id,
            (unsigned long long) e->U, (unsigned long long) e->u);
        return;
    }
    if (!b->synced || e->u <= b->bu) {
        return;
    }
    if (bn_follows(b, e, b->bu)) {
        bn_apply(&b->book, e);
        b->bu = e->u;
        return;
    }
    xg_track_log(XG_LOG_WARN, t, "%s: gap in the book: %llu then %llu..%llu",
        t->name, (unsigned long long) b->bu, (unsigned long long) e->U,
        (unsigned long long) e->u);
    if (b->delivered && b->bu == b->du && b->cli == NULL) {
        /* subscribers have exactly this book: bridged from it */
        b->cli = xg_calloc(1, sizeof(*b->cli));
        *b->cli = b->book;
        memset(&b->book, 0, sizeof(b->book));
    } else {
        bn_levels_clear(&b->book);
    }
    b->synced = 0;
}

/* 1 when a snapshot should be fetched now: none synced, none waiting,
   not in the hold-off after a give-up, not too old too often. */
static int
bn_book_may_fetch(struct xg_track *t, struct bn_book *b)
{
    if (b->synced || b->snap != NULL || bn_now(t) < b->hold_off_ms) {
        return 0;
    }
    if (b->stale > t->env->tries) {
        xg_track_log(XG_LOG_WARN, t, "%s: %u snapshots in a row older than "
            "the stream: no book for now", t->name, b->stale);
        b->stale = 0;
        b->hold_off_ms = bn_now(t) + t->env->retry_max_ms;
        return 0;
    }
    return 1;
}

/* E was handed to the subscribers. */
static void
bn_book_delivered(struct bn_book *b, uint64_t u, uint64_t E, uint64_t T)
{
    b->delivered = 1;
    b->du = u;
    b->dE = E;
    b->dT = T;
    b->noticed = 0;
}

/* Sends the bridge from what subscribers have (b->cli) to TO, the truth
   at U (E and T its times), in place of Binance's event at U. */
static void
bn_book_bridge(struct xg_track *t, struct bn_book *b,
    const struct bn_levels *to, uint64_t u, uint64_t E, uint64_t T)
{
    struct bn_buf o = { NULL, 0, 0 };
    size_t n;

    if (b->market == XG_BN_SPOT) {
        bn_buf_fmt(&o, "{\"e\":\"depthUpdate\",\"E\":%llu,\"s\":\"%s\","
            "\"U\":%llu,\"u\":%llu,\"b\":", (unsigned long long) E,
            b->sym, (unsigned long long) b->du + 1, (unsigned long long) u);
    } else {
        bn_buf_fmt(&o, "{\"e\":\"depthUpdate\",\"E\":%llu,\"T\":%llu,"
            "\"s\":\"%s\",\"U\":%llu,\"u\":%llu,\"pu\":%llu,\"b\":",
            (unsigned long long) E, (unsigned long long) T, b->sym,
            (unsigned long long) b->du + 1, (unsigned long long) u,
            (unsigned long long) b->du);
    }
    /* every level of the truth: some client may hold a snapshot of its
       own newer than what was delivered (see bn_levels_diff) */
    n = bn_levels_diff(&o, b->cli, to, 0, 1);
    bn_buf_str(&o, ",\"a\":");
    n += bn_levels_diff(&o, b->cli, to, 1, 1);
    bn_buf_str(&o, "}");
    xg_track_log(XG_LOG_INFO, t, "%s: bridged %llu -> %llu with %zu levels",
        t->name, (unsigned long long) b->du, (unsigned long long) u, n);
    xg_track_fanout(t, o.p, o.len);
    free(o.p);
    bn_levels_free(b->cli);
    b->cli = NULL;
    bn_book_delivered(b, u, E, T);
}

/* Step two: what the subscribers get of E. */
static enum xg_track_verdict
bn_book_deliver(struct xg_track *t, struct bn_book *b, const struct bn_ev *e,
    struct xg_track_seq *seq)
{
    if (b->delivered && e->u <= b->du) {
        return XG_TRACK_DROP;       /* they have it */
    }
    if (!b->delivered || bn_follows(b, e, b->du)) {
        if (bn_book_may_fetch(t, b)) {
            return XG_TRACK_FETCH;  /* held until the snapshot */
        }
        if (b->cli != NULL) {
            if (b->synced) {
                /* in line again (the truth is at this u): no bridge */
                bn_levels_free(b->cli);
                b->cli = NULL;
            } else {
                bn_apply(b->cli, e);    /* still what they have */
            }
        }
        bn_book_delivered(b, e->u, e->E, e->T);
        seq->lined = 1;
        return XG_TRACK_PASS;
    }
    /* a gap in what they got */
    if (b->cli != NULL) {
        if (b->synced) {
            bn_book_bridge(t, b, &b->book, e->u, e->E, e->T);
            seq->lined = 1;
            return XG_TRACK_DROP;
        }
        if (b->snap != NULL) {
            return XG_TRACK_DROP;   /* before the snapshot: bridged */
        }
        if (bn_book_may_fetch(t, b)) {
            return XG_TRACK_FETCH;
        }
        bn_levels_free(b->cli);
        b->cli = NULL;
    }
    /* nothing to bridge from: the chain breaks, they are told */
    xg_track_log(XG_LOG_WARN, t, "%s: gap %llu then %llu..%llu passed "
        "through: no book to bridge it", t->name,
        (unsigned long long) b->du, (unsigned long long) e->U,
        (unsigned long long) e->u);
    if (!b->noticed) {
        xg_track_notice(t, "book gap not bridged");
    }
    bn_book_delivered(b, e->u, e->E, e->T);
    return XG_TRACK_PASS;
}

/* The engine gave our fetch up (LIVE with it current: held bound, failed
   answers) or it died with its connection: no bridge from it. */
static void
bn_book_check_fetch(struct xg_track *t, struct bn_book *b)
{
    if (!b->want || t->state == XG_TRACK_FETCHING) {
        return;
    }
    b->want = 0;
    if (t->state == XG_TRACK_LIVE) {
        b->noticed = 1;     /* the engine told them */
        b->hold_off_ms = bn_now(t) + t->env->retry_max_ms;
        bn_levels_free(b->cli);
        b->cli = NULL;
        bn_levels_free(b->snap);
        b->snap = NULL;
    }
}

static enum xg_track_verdict
bn_book_parse(struct xg_track *t, const char *data, size_t len,
    struct xg_track_seq *seq)
{
    struct bn_book *b = t->data;
    enum xg_track_verdict v;
    struct bn_ev e;

    bn_book_check_fetch(t, b);
    if (bn_ev_parse(b->market, data, len, &e) != XG_OK) {
        if (b->delivered) {
            /* in a chain, a malformed event would break every client's */
            xg_track_log(XG_LOG_WARN, t, "%s: malformed depth event "
                "dropped: %.*s", t->name, (int) (len > 120 ? 120 : len),
                data);
            return XG_TRACK_DROP;
        }
        return XG_TRACK_PASS;
    }
    bn_book_truth(t, b, &e);
    v = bn_book_deliver(t, b, &e, seq);
    json_decref(e.root);
    return v;
}

/*
 * The depth of a spot snapshot: 1000 levels a side cost 50 of Binance's
 * 6000 weight a minute, 5000 cost 250 (USDⓈ-M's most, 1000, cost 20).
 * What a client's own snapshot holds (ccxt asks 1000) is all a bridge can
 * know of anyway.
 */
#define BN_SPOT_SNAPSHOT "1000"

/* The snapshot request: a gap showed (SEQ), or the channel is back. */
static void
bn_book_fetch(struct xg_track *t, const struct xg_track_seq *seq)
{
    struct bn_book *b = t->data;
    char path[128];

    bn_levels_free(b->snap);
    b->snap = NULL;
    b->want = 1;
    if (b->market == XG_BN_SPOT) {
        snprintf(path, sizeof(path), "/api/v3/depth?symbol=%s&limit="
            BN_SPOT_SNAPSHOT, b->sym);
    } else {
        snprintf(path, sizeof(path), "/fapi/v1/depth?symbol=%s&limit=1000",
            b->sym);
    }
    xg_track_log(XG_LOG_INFO, t, "%s: fetching a snapshot (%s)", t->name,
        seq != NULL ? "a gap" : "back");
    bn_get(t, "GET depth", path, 0);
}

/* A snapshot answer: its levels kept, to sync with the held events. */
static int
bn_book_apply(struct xg_track *t, const struct xg_reg_req *q,
    const struct xg_jspan *result, const struct xg_jspan *error)
{
    struct bn_book *b = t->data;
    struct bn_levels *lv;
    json_t *r, *side[2];
    uint64_t id;
    int k;

    if (result->p == NULL) {
        return bn_retry(t, q, q->attempts, error) ? XG_OK : XG_ERROR;
    }
    r = json_loadb(result->p, result->len, 0, NULL);
    side[0] = json_object_get(r, "bids");
    side[1] = json_object_get(r, "asks");
    if (bn_json_uint(json_object_get(r, "lastUpdateId"), &id) != XG_OK
        || !bn_levels_valid(side[0]) || !bn_levels_valid(side[1])) {
        json_decref(r);
        return XG_ERROR;
    }
    lv = xg_calloc(1, sizeof(*lv));
    for (k = 0; k < 2; k++) {
        bn_levels_apply(lv, k, side[k]);
    }
    bn_levels_free(b->snap);
    b->snap = lv;
    b->snap_id = id;
    b->snap_E = b->snap_T = 0;
    (void) bn_json_uint(json_object_get(r, "E"), &b->snap_E);
    (void) bn_json_uint(json_object_get(r, "T"), &b->snap_T);
    json_decref(r);
    return XG_OK;
}

/*
 * A snapshot after an outage that no event followed for BN_QUIET_MS: the
 * market is quiet, so it is the truth now and the next event will start
 * right after it. The subscribers are bridged to it; should the next
 * event overlap it after all, that shows as a gap and is bridged again.
 */
static void
bn_book_on_quiet(evutil_socket_t fd, short what, void *arg)
{
    struct bn_book *b = arg;
    struct xg_track *t = b->t;

    if (t->state != XG_TRACK_LIVE || b->snap == NULL || b->cli == NULL
        || !b->delivered || b->snap_id < b->du) {
        return;     /* synced by an event, broken again, or behind */
    }
    bn_levels_clear(&b->book);
    b->book = *b->snap;
    free(b->snap);
    b->snap = NULL;
    b->synced = 1;
    b->bu = b->snap_id;
    b->stale = 0;
    if (b->snap_id == b->du) {
        bn_levels_free(b->cli);     /* what they have: in line */
        b->cli = NULL;
        return;
    }
    xg_track_log(XG_LOG_INFO, t, "%s: no event %d ms after the snapshot: "
        "bridging to it", t->name, BN_QUIET_MS);
    bn_book_bridge(t, b, &b->book, b->snap_id,
        b->snap_E != 0 ? b->snap_E : b->dE,
        b->snap_T != 0 ? b->snap_T : b->snap_E != 0 ? b->snap_E : b->dT);
}

/*
 * Every answer in: the snapshot against the first held event it does not
 * drop; too old for it, another one after the engine's backoff (env->tries
 * in a row at most, then no book for env->retry_max_ms).
 */
static void
bn_book_complete(struct xg_track *t)
{
    struct bn_book *b = t->data;
    size_t i;
    int r = -1;

    for (i = 0; b->snap != NULL && r < 0 && i < t->nheld; i++) {
        struct bn_ev e;

        if (bn_ev_parse(b->market, t->held[i].p, t->held[i].len, &e)
            == XG_OK) {
            r = bn_sync_rule(b, &e, b->snap_id);
            json_decref(e.root);
        }
    }
    if (r > 0) {
        bn_levels_free(b->snap);
        b->snap = NULL;
        b->stale++;
        if (b->stale <= t->env->tries) {
            struct xg_reg_req q;
            static const char too_old[] = "{\"msg\":\"snapshot too old\"}";
            struct xg_jspan why = { too_old, sizeof(too_old) - 1 };
            char path[128];

            snprintf(path, sizeof(path), b->market == XG_BN_SPOT
                ? "/api/v3/depth?symbol=%s&limit=" BN_SPOT_SNAPSHOT
                : "/fapi/v1/depth?symbol=%s&limit=1000", b->sym);
            memset(&q, 0, sizeof(q));
            q.kind = XG_BN_REQ_REST;
            q.method = "GET depth";
            q.text = path;
            q.len = strlen(path);
            if (bn_retry(t, &q, b->stale - 1, &why)) {
                return;     /* want stays: the fetch goes on */
            }
        }
        xg_track_log(XG_LOG_WARN, t, "%s: snapshots older than the stream "
            "%u times: no book for now", t->name, b->stale);
        b->stale = 0;
        b->hold_off_ms = bn_now(t) + t->env->retry_max_ms;
    }
    b->want = 0;
    if (b->snap != NULL && b->cli != NULL && t->env->base != NULL) {
        struct timeval tv = { BN_QUIET_MS / 1000,
                              (BN_QUIET_MS % 1000) * 1000 };

        if (b->quiet == NULL) {
            b->quiet = xg_timer_new(t->env->base, bn_book_on_quiet, b);
        }
        b->t = t;
        xg_timer_add(b->quiet, &tv);
    }
}

/* The stream broke: what subscribers have is kept to bridge from. */
static void
bn_book_lost(struct xg_track *t)
{
    struct bn_book *b = t->data;

    if (bn_book_in_line(b)) {
        b->cli = xg_calloc(1, sizeof(*b->cli));
        *b->cli = b->book;
        memset(&b->book, 0, sizeof(b->book));
    } else {
        bn_levels_clear(&b->book);
    }
    b->synced = 0;
    if (t->state != XG_TRACK_FETCHING) {
        bn_levels_free(b->snap);
        b->snap = NULL;
    }
}

/* A rotation's new connection: where its event stands against du. */
static enum xg_track_cross
bn_book_cross(struct xg_track *t, const char *data, size_t len)
{
    struct bn_book *b = t->data;
    enum xg_track_cross c;
    struct bn_ev e;

    if (!b->delivered) {
        return XG_CROSS_SWITCH;
    }
    if (data == NULL) {
        return XG_CROSS_WAIT;
    }
    if (bn_ev_parse(b->market, data, len, &e) != XG_OK) {
        return XG_CROSS_SWITCH;     /* its parse says what it is */
    }
    if (e.u < b->du) {
        c = XG_CROSS_DROP;
    } else if (e.u == b->du) {
        c = XG_CROSS_DROP_SWITCH;
    } else if (bn_follows(b, &e, b->du)) {
        c = XG_CROSS_SWITCH;
    } else {
        c = XG_CROSS_WAIT;
    }
    json_decref(e.root);
    return c;
}

/* Its fetch dying with the connection keeps the held events for the next
   snapshot; a gap shows in the data, so a rotation needs no flag. */
static const struct xg_track_kind bn_book_spot = {
    "book", "resync", XG_TRACK_KEEP_HELD, bn_book_create_spot,
    bn_book_parse, bn_book_fetch, bn_book_apply, bn_book_complete,
    bn_book_lost, bn_book_free, bn_book_cross
};

static const struct xg_track_kind bn_book_usdm = {
    "book", "resync", XG_TRACK_KEEP_HELD, bn_book_create_usdm,
    bn_book_parse, bn_book_fetch, bn_book_apply, bn_book_complete,
    bn_book_lost, bn_book_free, bn_book_cross
};

/* See xg_venue_binance.h. */
int
xg_bn_track_is_book(const struct xg_track *t)
{
    return t != NULL && (t->kind == &bn_book_spot || t->kind == &bn_book_usdm);
}

/* See xg_venue_binance.h. */
int
xg_bn_track_repairing(const struct xg_track *t)
{
    const struct bn_book *b;

    if (t == NULL) {
        return 0;
    }
    if (t->state != XG_TRACK_LIVE) {
        return 1;
    }
    if (!xg_bn_track_is_book(t)) {
        return 0;
    }
    b = t->data;
    return b->cli != NULL;
}

/* See xg_venue_binance.h. LIMIT 0 means Binance's default, 100. */
char *
xg_bn_book_depth(struct xg_track *t, unsigned limit, size_t *len)
{
    struct bn_buf o = { NULL, 0, 0 };
    struct bn_book *b;

    if (!xg_bn_track_is_book(t)) {
        return NULL;
    }
    b = t->data;
    if (t->state != XG_TRACK_LIVE || !bn_book_in_line(b)) {
        return NULL;
    }
    if (limit == 0) {
        limit = 100;
    }
    bn_buf_fmt(&o, "{\"lastUpdateId\":%llu", (unsigned long long) b->du);
    if (b->market == XG_BN_USDM) {
        bn_buf_fmt(&o, ",\"E\":%llu,\"T\":%llu", (unsigned long long) b->dE,
            (unsigned long long) b->dT);
    }
    bn_buf_str(&o, ",\"bids\":");
    bn_levels_json(&o, &b->book, 0, limit);
    bn_buf_str(&o, ",\"asks\":");
    bn_levels_json(&o, &b->book, 1, limit);
    bn_buf_str(&o, "}");
    *len = o.len;
    return o.p;
}

/* ---- trades and aggregate trades: backfill by id ---- */

/*
 * `<sym>@trade` (ids "t") and `<sym>@aggTrade` (ids "a") count one by
 * one. The gateway remembers the last id delivered: an id at or below it
 * is dropped, the next one passes, a jump (after an outage, a rotation
 * switched with nothing in line, or live) holds the channel and fetches
 * the missing ids (historicalTrades or aggTrades, fromId, at most
 * BN_TRADES_MAX: the newest of them, a gap notice for the older ones),
 * delivered in the stream's own event shape before what was held.
 */

struct bn_trades {
    enum xg_bn_market  market;
    int                agg;         /* aggTrade: ids "a" */
    char               sym[BN_SYM_MAX + 1];
    int                has_last;
    uint64_t           last;        /* last id delivered */
    uint64_t           to;          /* the fetch's last id */
    int                cut;         /* its first ids beyond the bound */
    int                want;        /* a fetch of ours is current */
};

static void *
bn_trades_create(const char *name, enum xg_bn_market m, int agg)
{
    char sym[BN_SYM_MAX + 1];
    const char *rest;
    struct bn_trades *tr;

    if (bn_stream_sym(name, sym, &rest) != XG_OK
        || strcmp(rest, agg ? "aggTrade" : "trade") != 0) {
        return NULL;
    }
    tr = xg_calloc(1, sizeof(*tr));
    tr->market = m;
    tr->agg = agg;
    memcpy(tr->sym, sym, sizeof(sym));
    return tr;
}

static void *
bn_trade_create_spot(const char *name)
{
    return bn_trades_create(name, XG_BN_SPOT, 0);
}

static void *
bn_trade_create_usdm(const char *name)
{
    return bn_trades_create(name, XG_BN_USDM, 0);
}

static void *
bn_agg_create_spot(const char *name)
{
    return bn_trades_create(name, XG_BN_SPOT, 1);
}

static void *
bn_agg_create_usdm(const char *name)
{
    return bn_trades_create(name, XG_BN_USDM, 1);
}

static void
bn_trades_free(void *p)
{
    free(p);
}

/* The id of event DATA into *ID: XG_ERROR when it has none. */
static int
bn_trades_id(const struct bn_trades *tr, const char *data, size_t len,
    uint64_t *id)
{
    static const char *const tkeys[] = { "t" }, *const akeys[] = { "a" };
    struct xg_jspan v[1];

    if (xg_jscan_object(data, len, tr->agg ? akeys : tkeys, 1, v) != XG_OK
        || xg_jscan_uint(&v[0], id) != XG_OK) {
        return XG_ERROR;
    }
    return XG_OK;
}

static enum xg_track_verdict
bn_trades_parse(struct xg_track *t, const char *data, size_t len,
    struct xg_track_seq *seq)
{
    struct bn_trades *tr = t->data;
    uint64_t id;

    int gave_up = 0;

    if (tr->want && t->state != XG_TRACK_FETCHING) {
        /* LIVE: the engine gave our fetch up (with a gap notice), the
           jump it was for stays; GAP: it died with its connection */
        tr->want = 0;
        gave_up = t->state == XG_TRACK_LIVE;
    }
    if (bn_trades_id(tr, data, len, &id) != XG_OK) {
        return XG_TRACK_PASS;       /* not a trade: as it is */
    }
    if (tr->has_last && id <= tr->last) {
        return XG_TRACK_DROP;       /* delivered already */
    }
    if (tr->has_last && id > tr->last + 1 && !gave_up) {
        seq->from = tr->last + 1;
        seq->to = id - 1;
        return XG_TRACK_FETCH;
    }
    tr->has_last = 1;
    tr->last = id;
    seq->lined = 1;
    return XG_TRACK_PASS;
}

/*
 * The backfill of SEQ's ids; NULL (the channel is back): only when a
 * fetch died with its connection (HELD), the ids from the last delivered
 * to the first held.
 */
static void
bn_trades_fetch(struct xg_track *t, const struct xg_track_seq *seq)
{
    struct bn_trades *tr = t->data;
    uint64_t from, to, first;
    char path[192];

    if (seq != NULL) {
        from = seq->from;
        to = seq->to;
    } else {
        if (t->state != XG_TRACK_HELD || !tr->has_last || t->nheld == 0
            || bn_trades_id(tr, t->held[0].p, t->held[0].len, &first)
               != XG_OK
            || first <= tr->last + 1) {
            return;     /* the next trades show what is missing */
        }
        from = tr->last + 1;
        to = first - 1;
    }
    tr->cut = to - from + 1 > BN_TRADES_MAX;
    if (tr->cut) {
        from = to - BN_TRADES_MAX + 1;
    }
    tr->to = to;
    tr->want = 1;
    if (tr->market == XG_BN_USDM && !tr->agg) {
        /* USDⓈ-M's historicalTrades wants an API key (MARKET_DATA), which
           exgate has not: the newest 1000 trades (no key) cover a short
           outage, and what they do not is a gap notice */
        snprintf(path, sizeof(path), "/fapi/v1/trades?symbol=%s&limit=1000",
            tr->sym);
    } else {
        snprintf(path, sizeof(path), "%s/%s?symbol=%s&fromId=%llu&"
            "limit=%llu", tr->market == XG_BN_SPOT ? "/api/v3" : "/fapi/v1",
            tr->agg ? "aggTrades" : "historicalTrades", tr->sym,
            (unsigned long long) from, (unsigned long long) (to - from + 1));
    }
    xg_track_log(XG_LOG_INFO, t, "%s: ids %llu..%llu missed: backfilling%s",
        t->name, (unsigned long long) tr->last + 1, (unsigned long long) to,
        tr->cut ? " the newest 1000" : "");
    bn_get(t, tr->agg ? "GET aggTrades" : "GET historicalTrades", path, 0);
}

/* One REST row as the stream's event, NULL when the row is malformed;
   *ID its id. */
static char *
bn_trades_event(const struct bn_trades *tr, json_t *row, uint64_t *id)
{
    json_t *o, *v;
    char *s;

    if (!json_is_object(row)) {
        return NULL;
    }
    if (tr->agg) {
        uint64_t T, f, l;

        if (bn_json_uint(json_object_get(row, "a"), id) != XG_OK
            || bn_json_uint(json_object_get(row, "f"), &f) != XG_OK
            || bn_json_uint(json_object_get(row, "l"), &l) != XG_OK
            || bn_json_uint(json_object_get(row, "T"), &T) != XG_OK
            || !bn_dec_ok(json_string_value(json_object_get(row, "p")))
            || !bn_dec_ok(json_string_value(json_object_get(row, "q")))
            || !json_is_boolean(json_object_get(row, "m"))) {
            return NULL;
        }
        o = json_pack("{s:s, s:O, s:s, s:O, s:O, s:O, s:O, s:O, s:O, s:O}",
            "e", "aggTrade", "E", json_object_get(row, "T"), "s", tr->sym,
            "a", json_object_get(row, "a"), "p", json_object_get(row, "p"),
            "q", json_object_get(row, "q"), "f", json_object_get(row, "f"),
            "l", json_object_get(row, "l"), "T", json_object_get(row, "T"),
            "m", json_object_get(row, "m"));
        if (tr->market == XG_BN_SPOT) {
            v = json_object_get(row, "M");
            json_object_set(o, "M", json_is_boolean(v) ? v : json_true());
        }
    } else {
        uint64_t T;

        if (bn_json_uint(json_object_get(row, "id"), id) != XG_OK
            || bn_json_uint(json_object_get(row, "time"), &T) != XG_OK
            || !bn_dec_ok(json_string_value(json_object_get(row, "price")))
            || !bn_dec_ok(json_string_value(json_object_get(row, "qty")))
            || !json_is_boolean(json_object_get(row, "isBuyerMaker"))) {
            return NULL;
        }
        if (tr->market == XG_BN_SPOT) {
            v = json_object_get(row, "isBestMatch");
            o = json_pack("{s:s, s:O, s:s, s:O, s:O, s:O, s:O, s:O, s:O}",
                "e", "trade", "E", json_object_get(row, "time"), "s",
                tr->sym, "t", json_object_get(row, "id"), "p",
                json_object_get(row, "price"), "q",
                json_object_get(row, "qty"), "T",
                json_object_get(row, "time"), "m",
                json_object_get(row, "isBuyerMaker"), "M",
                json_is_boolean(v) ? v : json_true());
        } else {
            o = json_pack("{s:s, s:O, s:O, s:s, s:O, s:O, s:O, s:s, s:O}",
                "e", "trade", "E", json_object_get(row, "time"), "T",
                json_object_get(row, "time"), "s", tr->sym, "t",
                json_object_get(row, "id"), "p",
                json_object_get(row, "price"), "q",
                json_object_get(row, "qty"), "X", "MARKET", "m",
                json_object_get(row, "isBuyerMaker"));
        }
    }
    s = o != NULL ? json_dumps(o, JSON_COMPACT) : NULL;
    json_decref(o);
    return s;
}

/* The backfill's rows: those past the last delivered, up to the fetch's
   last id, in order, each as the stream's event. */
static int
bn_trades_apply(struct xg_track *t, const struct xg_reg_req *q,
    const struct xg_jspan *result, const struct xg_jspan *error)
{
    struct bn_trades *tr = t->data;
    uint64_t before = tr->last, id;
    size_t i, bad = 0;
    json_t *r, *row;

    if (result->p == NULL) {
        return bn_retry(t, q, q->attempts, error) ? XG_OK : XG_ERROR;
    }
    r = json_loadb(result->p, result->len, 0, NULL);
    if (!json_is_array(r)) {
        json_decref(r);
        return XG_ERROR;
    }
    if (tr->cut) {
        xg_track_notice(t, "trades beyond the backfill");   /* before */
    }
    json_array_foreach(r, i, row) {
        char *s = bn_trades_event(tr, row, &id);

        if (s == NULL) {
            bad++;
        } else if (id > tr->last && id <= tr->to) {
            xg_track_fanout(t, s, strlen(s));
            tr->last = id;
        }
        free(s);
    }
    json_decref(r);
    xg_track_log(XG_LOG_INFO, t, "%s: %llu trades backfilled%s", t->name,
        (unsigned long long) (tr->last - before),
        bad ? " (malformed rows skipped)" : "");
    if (tr->last < tr->to) {
        /* the exchange has no more of them: what is held goes on */
        if (!tr->cut) {
            xg_track_notice(t, "trades beyond the backfill");
        }
        tr->last = tr->to;
    }
    tr->want = 0;
    return XG_OK;
}

/* A rotation's new connection: it takes over at the id after the last
   delivered; ids further on wait for the old connection. */
static enum xg_track_cross
bn_trades_cross(struct xg_track *t, const char *data, size_t len)
{
    struct bn_trades *tr = t->data;
    uint64_t id;

    if (data == NULL || !tr->has_last
        || bn_trades_id(tr, data, len, &id) != XG_OK) {
        return XG_CROSS_SWITCH;
    }
    if (id < tr->last) {
        return XG_CROSS_DROP;
    }
    if (id == tr->last) {
        return XG_CROSS_DROP_SWITCH;
    }
    return id == tr->last + 1 ? XG_CROSS_SWITCH : XG_CROSS_WAIT;
}

#define BN_TRADES_KIND(create, name) { \
    name, "backfill", XG_TRACK_KEEP_HELD | XG_TRACK_CROSS_GAP, create, \
    bn_trades_parse, bn_trades_fetch, bn_trades_apply, NULL, NULL, \
    bn_trades_free, bn_trades_cross }

static const struct xg_track_kind bn_trade_spot =
    BN_TRADES_KIND(bn_trade_create_spot, "trades");
static const struct xg_track_kind bn_trade_usdm =
    BN_TRADES_KIND(bn_trade_create_usdm, "trades");
static const struct xg_track_kind bn_agg_spot =
    BN_TRADES_KIND(bn_agg_create_spot, "aggTrades");
static const struct xg_track_kind bn_agg_usdm =
    BN_TRADES_KIND(bn_agg_create_usdm, "aggTrades");

const struct xg_track_kind *const xg_bn_kinds_spot[] = {
    &bn_book_spot, &bn_trade_spot, &bn_agg_spot, NULL
};

const struct xg_track_kind *const xg_bn_kinds_usdm[] = {
    &bn_book_usdm, &bn_trade_usdm, &bn_agg_usdm, NULL
};
