/*
 * check_xg_book.c: the generic order book (src/xg_book.c), driven with
 * level operations as a venue's parser produces them: snapshots and
 * chained changes, duplicates and order inside a snapshot, anomalies,
 * the seq chain (gap, wait, invalidate), rejects, marks and copy on
 * write, the level bound, venue data, the diff of two states, and, as a
 * seeded property test, that a client which applies the diffs as deltas
 * always ends with exactly the reference book across marks, outages and
 * gaps. No wire format here: Deribit's messages around this book are
 * tested in check_xg_venue_deribit_book.c.
 */
#include "xg_core.h"
#include "xg_book.h"
#include "xg_log.h"

#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/*
 * check's ck_assert records every passing assertion through its pipe, so
 * the hot loops of the property test assert with this instead.
 */
#define REQUIRE(cond, ...) \
    do { if (!(cond)) { ck_abort_msg(__VA_ARGS__); } } while (0)

#define B XG_BOOK_BIDS
#define A XG_BOOK_ASKS

/* ---- helpers ------------------------------------------------------------ */

/* One message under construction: an update and its growable op arrays. */
struct msg {
    struct xg_book_update u;
    size_t                cap[2];
};

static void
msg_init(struct msg *m, int snapshot, uint64_t prev, uint64_t seq)
{
    memset(m, 0, sizeof(*m));
    m->u.snapshot = snapshot;
    m->u.prev = prev;
    m->u.seq = seq;
}

/* Appends one op; PINT/AINT are 1 when the number is an integer. */
static void
msg_op(struct msg *m, int side, int action, double price, double amount)
{
    struct xg_book_op *o;

    if (m->u.nops[side] == m->cap[side]) {
        m->cap[side] = m->cap[side] ? m->cap[side] * 2 : 8;
        m->u.ops[side] = xg_realloc(m->u.ops[side],
            m->cap[side] * sizeof(struct xg_book_op));
    }
    o = &m->u.ops[side][m->u.nops[side]++];
    memset(o, 0, sizeof(*o));
    o->action = (unsigned char) action;
    o->price = price;
    o->amount = amount;
    o->pint = price == (double) (long long) price;
    o->aint = amount == (double) (long long) amount;
}

static enum xg_book_result
msg_apply(struct xg_book *b, struct msg *m)
{
    enum xg_book_result r = xg_book_apply(b, &m->u);

    free(m->u.ops[0]);
    free(m->u.ops[1]);
    m->u.ops[0] = m->u.ops[1] = NULL;
    m->u.nops[0] = m->u.nops[1] = 0;
    m->cap[0] = m->cap[1] = 0;
    return r;
}

/* Shorthand: a message with up to 4 [side, action, price, amount] ops. */
struct op4 {
    int    side, action;
    double price, amount;
};

static enum xg_book_result
apply_ops(struct xg_book *b, int snapshot, uint64_t prev, uint64_t seq,
    const struct op4 *ops, size_t n)
{
    struct msg m;
    size_t i;

    msg_init(&m, snapshot, prev, seq);
    for (i = 0; i < n; i++) {
        if (ops[i].action >= 0) {
            msg_op(&m, ops[i].side, ops[i].action, ops[i].price,
                ops[i].amount);
        }
    }
    return msg_apply(b, &m);
}

#define SNAP(b, seq, ...) \
    apply_ops((b), 1, 0, (seq), (const struct op4[]) { __VA_ARGS__ }, \
        sizeof((const struct op4[]) { __VA_ARGS__ }) / sizeof(struct op4))
#define CHG(b, prev, seq, ...) \
    apply_ops((b), 0, (prev), (seq), (const struct op4[]) { __VA_ARGS__ }, \
        sizeof((const struct op4[]) { __VA_ARGS__ }) / sizeof(struct op4))
/* an op list with nothing in it */
#define NONE { B, -1, 0, 0 }

/*
 * A diff as text: "b:ACT PRICExAMOUNT ... a:..." with N/C/D for the
 * actions, and a '#' after a number the book keeps as an integer.
 */
static char *
ops_text(const struct xg_book_op *ops, size_t n, size_t nbids)
{
    char *out = NULL;
    size_t len = 0, i;
    FILE *f = open_memstream(&out, &len);

    fputs("b:", f);
    for (i = 0; i < n; i++) {
        if (i == nbids) {
            fputs(" a:", f);
        }
        fprintf(f, " %c%g%sx%g%s", "NCD"[ops[i].action], ops[i].price,
            ops[i].pint ? "#" : "", ops[i].amount, ops[i].aint ? "#" : "");
        REQUIRE(ops[i].side == (i < nbids ? B : A), "side of op %zu", i);
    }
    if (nbids == n) {
        fputs(" a:", f);
    }
    fclose(f);
    return out;
}

/* The levels of B's current state as diff text (every level `new`). */
static char *
book_text(const struct xg_book *b)
{
    size_t n, nb;
    struct xg_book_op *ops = xg_book_diff(NULL, xg_book_current(b), &n, &nb);
    char *t = ops_text(ops, n, nb);

    free(ops);
    return t;
}

static char *
diff_text(const struct xg_book_state *old, const struct xg_book_state *now)
{
    size_t n, nb;
    struct xg_book_op *ops = xg_book_diff(old, now, &n, &nb);
    char *t = ops_text(ops, n, nb);

    free(ops);
    return t;
}

#define ck_assert_text(expr, want) \
    do { \
        char *t_ = (expr); \
        ck_assert_str_eq(t_, want); \
        free(t_); \
    } while (0)

/* ---- basic behaviour ---------------------------------------------------- */

static int venue_freed;

static void
venue_free(void *p)
{
    venue_freed++;
    free(p);
}

START_TEST(test_new_and_venue_data)
{
    struct xg_book *b = xg_book_new("chan.X");
    struct xg_book_stats st, st2;

    ck_assert_str_eq(xg_book_name(b), "chan.X");
    ck_assert(xg_book_venue_data(b) == NULL);
    ck_assert_uint_eq(xg_book_max_levels(b), XG_BOOK_MAX_LEVELS_DEFAULT);
    ck_assert_str_eq(xg_book_last_error(b), "no error");
    ck_assert(!xg_book_synced(b));
    ck_assert_uint_eq(xg_book_seq(b), 0);
    ck_assert(xg_book_mark(b) == NULL);
    ck_assert(xg_book_current(b) == NULL);
    ck_assert(xg_book_diff(NULL, NULL, &(size_t) { 7 }, NULL) == NULL);
    xg_book_stats(b, &st);
    venue_freed = 0;
    xg_book_set_venue_data(b, xg_malloc(10), 100, venue_free);
    ck_assert(xg_book_venue_data(b) != NULL);
    xg_book_stats(b, &st2);
    ck_assert_uint_eq(st2.bytes, st.bytes + 100);
    /* replacing the data frees the old one */
    xg_book_set_venue_data(b, xg_malloc(10), 5, venue_free);
    ck_assert_int_eq(venue_freed, 1);
    xg_book_free(b);
    ck_assert_int_eq(venue_freed, 2);
    xg_book_free(NULL);
    /* no free function: the data is the caller's */
    b = xg_book_new("chan.Y");
    xg_book_set_venue_data(b, &venue_freed, 0, NULL);
    xg_book_free(b);
    ck_assert_int_eq(venue_freed, 2);
    /* a bound of 0 means 1 */
    b = xg_book_new("chan.Z");
    xg_book_set_max_levels(b, 0);
    ck_assert_uint_eq(xg_book_max_levels(b), 1);
    xg_book_free(b);
}
END_TEST

START_TEST(test_snapshot_then_changes)
{
    struct xg_book *b = xg_book_new("book");
    struct xg_book_stats st;
    struct msg m;
    int64_t ts;

    /* a change before any snapshot waits */
    ck_assert_int_eq(CHG(b, 1, 2, NONE), XG_BOOK_WAIT);
    msg_init(&m, 1, 0, 297217);
    m.u.timestamp = 1554373962454;
    m.u.has_ts = 1;
    msg_op(&m, B, XG_BOOK_NEW, 5042.34, 30);
    msg_op(&m, B, XG_BOOK_NEW, 5041.94, 20);
    msg_op(&m, A, XG_BOOK_NEW, 5042.64, 40);
    msg_op(&m, A, XG_BOOK_NEW, 5043.3, 40);
    ck_assert_int_eq(msg_apply(b, &m), XG_BOOK_SNAPSHOT);
    ck_assert(xg_book_synced(b));
    ck_assert_uint_eq(xg_book_seq(b), 297217);
    ck_assert(xg_book_state_timestamp(xg_book_current(b), &ts));
    ck_assert_int_eq(ts, 1554373962454);
    ck_assert_text(book_text(b), "b: N5042.34x30# N5041.94x20# a: "
        "N5042.64x40# N5043.3x40#");
    msg_init(&m, 0, 297217, 297218);
    m.u.timestamp = 1554373962500;
    m.u.has_ts = 1;
    msg_op(&m, B, XG_BOOK_CHANGE, 5042.34, 9.8);
    msg_op(&m, B, XG_BOOK_DELETE, 5041.94, 0);
    msg_op(&m, B, XG_BOOK_NEW, 5042.0, 1.5);
    msg_op(&m, A, XG_BOOK_NEW, 5042.5, 3.5);
    msg_op(&m, A, XG_BOOK_DELETE, 5043.3, 0);
    ck_assert_int_eq(msg_apply(b, &m), XG_BOOK_APPLIED);
    ck_assert_text(book_text(b), "b: N5042.34x9.8 N5042#x1.5 a: "
        "N5042.5x3.5 N5042.64x40#");
    ck_assert(xg_book_state_timestamp(xg_book_current(b), &ts));
    ck_assert_int_eq(ts, 1554373962500);
    /* amount 0 on a change removes the level (as ccxt does); a change
       without a timestamp keeps the last one */
    ck_assert_int_eq(CHG(b, 297218, 297220, { B, XG_BOOK_CHANGE, 5042, 0 }),
        XG_BOOK_APPLIED);
    ck_assert(xg_book_state_timestamp(xg_book_current(b), &ts));
    ck_assert_int_eq(ts, 1554373962500);
    xg_book_stats(b, &st);
    ck_assert_uint_eq(st.nbids, 1);
    ck_assert_uint_eq(st.nasks, 2);
    ck_assert_uint_eq(st.seq, 297220);
    ck_assert_int_eq(st.synced, 1);
    ck_assert_uint_eq(st.snapshots, 1);
    ck_assert_uint_eq(st.changes, 2);
    ck_assert_uint_eq(st.waits, 1);
    ck_assert_uint_eq(st.anomalies, 0);
    ck_assert_uint_gt(st.bytes, 4 * 24);
    /* a snapshot without a timestamp has none */
    ck_assert_int_eq(SNAP(b, 5, { B, XG_BOOK_NEW, 1, 1 }), XG_BOOK_SNAPSHOT);
    ck_assert(!xg_book_state_timestamp(xg_book_current(b), &ts));
    ck_assert_text(book_text(b), "b: N1#x1# a:");
    ck_assert_int_eq(CHG(b, 5, 6, { A, XG_BOOK_NEW, 2, 1 }),
        XG_BOOK_APPLIED);
    ck_assert_uint_eq(xg_book_seq(b), 6);
    xg_book_free(b);
}
END_TEST

START_TEST(test_snapshot_duplicates_and_order)
{
    struct xg_book *b = xg_book_new("book");
    struct msg m;
    struct xg_book_op *keep;

    /* unsorted input, a repeated price (the last entry wins), a delete */
    msg_init(&m, 1, 0, 1);
    msg_op(&m, B, XG_BOOK_NEW, 10, 1);
    msg_op(&m, B, XG_BOOK_NEW, 12, 2);
    msg_op(&m, B, XG_BOOK_NEW, 11, 3);
    msg_op(&m, B, XG_BOOK_NEW, 12, 4);
    msg_op(&m, B, XG_BOOK_NEW, 9, 5);
    msg_op(&m, B, XG_BOOK_DELETE, 9, 0);
    msg_op(&m, A, XG_BOOK_NEW, 20, 1);
    msg_op(&m, A, XG_BOOK_NEW, 15, 1);
    msg_op(&m, A, XG_BOOK_NEW, 15, 2);
    msg_op(&m, A, XG_BOOK_NEW, 17, 0);
    m.u.ops[A][2].pint = 0;     /* 15.0: the last one's form is kept */
    keep = m.u.ops[B];
    ck_assert_int_eq(xg_book_apply(b, &m.u), XG_BOOK_SNAPSHOT);
    /* the ops are still the caller's (reordered) */
    ck_assert(m.u.ops[B] == keep);
    ck_assert_uint_eq(m.u.nops[B], 6);
    free(m.u.ops[0]);
    free(m.u.ops[1]);
    ck_assert_text(book_text(b), "b: N12#x4# N11#x3# N10#x1# a: N15x2# "
        "N20#x1#");
    xg_book_free(b);
}
END_TEST

START_TEST(test_anomalies)
{
    struct xg_book *b = xg_book_new("book");
    struct xg_book_stats st;

    ck_assert_int_eq(SNAP(b, 1, { B, XG_BOOK_NEW, 10, 1 },
        { A, XG_BOOK_NEW, 20, 1 }), XG_BOOK_SNAPSHOT);
    /* delete of a missing level: applied as a no-op, counted */
    ck_assert_int_eq(CHG(b, 1, 2, { B, XG_BOOK_DELETE, 9.5, 0 }),
        XG_BOOK_APPLIED);
    /* change of a missing level sets it; new of an existing one too */
    ck_assert_int_eq(CHG(b, 2, 3, { B, XG_BOOK_CHANGE, 9, 2 },
        { B, XG_BOOK_NEW, 10, 7 }), XG_BOOK_APPLIED);
    /* amount 0 on a missing level: nothing to remove, not an anomaly */
    ck_assert_int_eq(CHG(b, 3, 4, { A, XG_BOOK_CHANGE, 25, 0 }),
        XG_BOOK_APPLIED);
    xg_book_stats(b, &st);
    ck_assert_uint_eq(st.anomalies, 3);
    ck_assert_uint_eq(st.nbids, 2);
    ck_assert_text(book_text(b), "b: N10#x7# N9#x2# a: N20#x1#");
    xg_book_free(b);
}
END_TEST

START_TEST(test_chain_gap_wait)
{
    struct xg_book *b = xg_book_new("book");
    struct xg_book_state *m;
    struct xg_book_stats st;

    ck_assert_int_eq(SNAP(b, 10, { B, XG_BOOK_NEW, 10, 1 },
        { A, XG_BOOK_NEW, 20, 1 }), XG_BOOK_SNAPSHOT);
    /* the chain check alone touches nothing when it passes */
    ck_assert_int_eq(xg_book_chain(b, 10, 11), XG_BOOK_APPLIED);
    ck_assert(xg_book_synced(b));
    ck_assert_uint_eq(xg_book_seq(b), 10);
    ck_assert_int_eq(CHG(b, 10, 11, { B, XG_BOOK_CHANGE, 10, 2 }),
        XG_BOOK_APPLIED);
    /* 12 was lost: 13 says prev 12 */
    ck_assert_int_eq(CHG(b, 12, 13, { B, XG_BOOK_CHANGE, 10, 3 }),
        XG_BOOK_GAP);
    ck_assert(!xg_book_synced(b));
    ck_assert_uint_eq(xg_book_seq(b), 11);
    /* the book keeps its last good state for the mark */
    m = xg_book_mark(b);
    ck_assert_uint_eq(xg_book_state_seq(m), 11);
    ck_assert_text(book_text(b), "b: N10#x2# a: N20#x1#");
    /* later changes (even ones that would chain) wait for the resync */
    ck_assert_int_eq(CHG(b, 11, 14, NONE), XG_BOOK_WAIT);
    ck_assert_int_eq(xg_book_chain(b, 11, 14), XG_BOOK_WAIT);
    ck_assert_int_eq(SNAP(b, 20, { B, XG_BOOK_NEW, 10, 5 },
        { B, XG_BOOK_NEW, 9, 1 }), XG_BOOK_SNAPSHOT);
    ck_assert_text(diff_text(m, xg_book_current(b)), "b: C10#x5# N9#x1# "
        "a: D20#x0#");
    xg_book_state_unref(m);
    /* no snapshot replaced anything while out of sync */
    ck_assert(xg_book_replaced(b) == NULL);
    /* an unexpected snapshot while in sync keeps what it replaced */
    ck_assert_int_eq(SNAP(b, 25, { B, XG_BOOK_NEW, 10, 5 },
        { A, XG_BOOK_NEW, 21, 1 }), XG_BOOK_SNAPSHOT);
    ck_assert(xg_book_replaced(b) != NULL);
    ck_assert_uint_eq(xg_book_state_seq(xg_book_replaced(b)), 20);
    ck_assert_text(diff_text(xg_book_replaced(b), xg_book_current(b)),
        "b: D9#x0# a: N21#x1#");
    /* held until the next message, whatever its result */
    ck_assert_int_eq(xg_book_reject(b, "message", "bad %d", 1),
        XG_BOOK_ERROR);
    ck_assert(xg_book_replaced(b) == NULL);
    ck_assert_int_eq(SNAP(b, 25, { B, XG_BOOK_NEW, 10, 5 }),
        XG_BOOK_SNAPSHOT);
    ck_assert(xg_book_replaced(b) != NULL);
    ck_assert_int_eq(xg_book_chain(b, 25, 26), XG_BOOK_APPLIED);
    ck_assert(xg_book_replaced(b) == NULL);
    ck_assert_int_eq(SNAP(b, 25, { B, XG_BOOK_NEW, 10, 5 }),
        XG_BOOK_SNAPSHOT);
    ck_assert_int_eq(CHG(b, 25, 26, NONE), XG_BOOK_APPLIED);
    ck_assert(xg_book_replaced(b) == NULL);
    /* invalidate (upstream down) also makes changes wait */
    xg_book_invalidate(b);
    ck_assert_int_eq(CHG(b, 26, 27, NONE), XG_BOOK_WAIT);
    xg_book_stats(b, &st);
    ck_assert_uint_eq(st.gaps, 1);
    ck_assert_uint_eq(st.waits, 3);
    ck_assert_uint_eq(st.errors, 1);
    ck_assert_uint_eq(st.snapshots, 5);
    xg_book_free(b);
}
END_TEST

START_TEST(test_reject)
{
    struct xg_book *b = xg_book_new("book");
    struct xg_book_stats st;
    char *before;

    ck_assert_int_eq(SNAP(b, 1, { B, XG_BOOK_NEW, 10, 1 }),
        XG_BOOK_SNAPSHOT);
    before = book_text(b);
    ck_assert_int_eq(xg_book_reject(b, "change", "bids[%d]: %s", 3, "bad"),
        XG_BOOK_ERROR);
    ck_assert_str_eq(xg_book_last_error(b), "bids[3]: bad");
    /* the book and its chain are untouched */
    ck_assert(xg_book_synced(b));
    ck_assert_text(book_text(b), before);
    ck_assert_int_eq(CHG(b, 1, 2, { B, XG_BOOK_NEW, 11, 1 }),
        XG_BOOK_APPLIED);
    xg_book_stats(b, &st);
    ck_assert_uint_eq(st.errors, 1);
    free(before);
    xg_book_free(b);
}
END_TEST

START_TEST(test_mark_copy_on_write)
{
    struct xg_book *b = xg_book_new("book");
    struct xg_book *same = xg_book_new("book");
    struct xg_book_state *m, *m2;
    int i;

    ck_assert_int_eq(SNAP(b, 1, { B, XG_BOOK_NEW, 10, 1 },
        { B, XG_BOOK_NEW, 9, 1 }, { A, XG_BOOK_NEW, 20, 1 }),
        XG_BOOK_SNAPSHOT);
    ck_assert_int_eq(SNAP(same, 1, { B, XG_BOOK_NEW, 10, 1 },
        { B, XG_BOOK_NEW, 9, 1 }, { A, XG_BOOK_NEW, 20, 1 }),
        XG_BOOK_SNAPSHOT);
    m = xg_book_mark(b);
    ck_assert(m == xg_book_current(b));     /* O(1): no copy yet */
    ck_assert(xg_book_state_equal(m, b));
    ck_assert_int_eq(CHG(b, 1, 2, { B, XG_BOOK_DELETE, 10, 0 },
        { A, XG_BOOK_NEW, 19, 4 }), XG_BOOK_APPLIED);
    /* the mark did not move with the book */
    ck_assert(m != xg_book_current(b));
    ck_assert(!xg_book_state_equal(m, b));
    ck_assert(xg_book_state_equal(m, same));
    ck_assert_uint_eq(xg_book_state_seq(m), 1);
    m2 = xg_book_mark(b);
    ck_assert_text(diff_text(m, xg_book_current(b)), "b: D10#x0# a: "
        "N19#x4#");
    /* nothing changed since m2: an empty diff */
    ck_assert_text(diff_text(m2, xg_book_current(b)), "b: a:");
    /* marks outlive their book */
    xg_book_free(b);
    ck_assert_uint_eq(xg_book_state_seq(m2), 2);
    ck_assert(xg_book_state_ref(m2) == m2);
    xg_book_state_unref(m2);
    ck_assert_text(diff_text(m, m2), "b: D10#x0# a: N19#x4#");
    xg_book_state_unref(m2);
    xg_book_state_unref(m);
    xg_book_state_unref(NULL);
    ck_assert_uint_eq(xg_book_state_seq(NULL), 0);
    xg_book_free(same);

    /* copy on write of an empty side, then growth past the slack */
    b = xg_book_new("book");
    ck_assert_int_eq(SNAP(b, 1, NONE), XG_BOOK_SNAPSHOT);
    m = xg_book_mark(b);
    for (i = 0; i < 40; i++) {
        ck_assert_int_eq(CHG(b, (uint64_t) i + 1, (uint64_t) i + 2,
            { B, XG_BOOK_NEW, 100 - i, 1 }, { A, XG_BOOK_NEW, 200 + i, 2 }),
            XG_BOOK_APPLIED);
    }
    {
        size_t n, nb;
        struct xg_book_op *ops = xg_book_diff(m, xg_book_current(b), &n,
            &nb);

        ck_assert_uint_eq(n, 80);
        ck_assert_uint_eq(nb, 40);
        ck_assert(ops[0].price == 100 && ops[39].price == 61);
        ck_assert(ops[40].price == 200 && ops[79].price == 239);
        free(ops);
    }
    ck_assert_text(diff_text(xg_book_current(b), m), "b: D100#x0# D99#x0# "
        "D98#x0# D97#x0# D96#x0# D95#x0# D94#x0# D93#x0# D92#x0# D91#x0# "
        "D90#x0# D89#x0# D88#x0# D87#x0# D86#x0# D85#x0# D84#x0# D83#x0# "
        "D82#x0# D81#x0# D80#x0# D79#x0# D78#x0# D77#x0# D76#x0# D75#x0# "
        "D74#x0# D73#x0# D72#x0# D71#x0# D70#x0# D69#x0# D68#x0# D67#x0# "
        "D66#x0# D65#x0# D64#x0# D63#x0# D62#x0# D61#x0# a: D200#x0# "
        "D201#x0# D202#x0# D203#x0# D204#x0# D205#x0# D206#x0# D207#x0# "
        "D208#x0# D209#x0# D210#x0# D211#x0# D212#x0# D213#x0# D214#x0# "
        "D215#x0# D216#x0# D217#x0# D218#x0# D219#x0# D220#x0# D221#x0# "
        "D222#x0# D223#x0# D224#x0# D225#x0# D226#x0# D227#x0# D228#x0# "
        "D229#x0# D230#x0# D231#x0# D232#x0# D233#x0# D234#x0# D235#x0# "
        "D236#x0# D237#x0# D238#x0# D239#x0#");
    xg_book_state_unref(m);
    xg_book_free(b);
}
END_TEST

START_TEST(test_diff)
{
    struct xg_book *b = xg_book_new("book");
    struct xg_book_state *m;
    struct xg_book_op *ops;
    size_t n, nb;
    struct msg mg;

    /* the integer flags travel with the levels into the diff */
    msg_init(&mg, 1, 0, 7);
    msg_op(&mg, B, XG_BOOK_NEW, 100, 2);
    msg_op(&mg, B, XG_BOOK_NEW, 99.5, 1.25);
    msg_op(&mg, A, XG_BOOK_NEW, 101, 3);
    mg.u.ops[B][0].pint = 0;    /* the venue got 100.0 */
    ck_assert_int_eq(msg_apply(b, &mg), XG_BOOK_SNAPSHOT);
    m = xg_book_mark(b);
    ck_assert_text(diff_text(NULL, m), "b: N100x2# N99.5x1.25 a: N101#x3#");
    /* to nothing: every level deleted, bids then asks, best first */
    ck_assert_text(diff_text(m, NULL), "b: D100x0# D99.5x0# a: D101#x0#");
    ops = xg_book_diff(m, NULL, &n, &nb);
    ck_assert_uint_eq(n, 3);
    ck_assert_uint_eq(nb, 2);
    ck_assert(ops[0].side == B && ops[0].action == XG_BOOK_DELETE);
    ck_assert(ops[0].amount == 0 && ops[0].aint == 1);
    ck_assert(ops[2].side == A && ops[2].price == 101);
    free(ops);
    /* identical states: nothing, and NULL */
    ops = xg_book_diff(m, m, &n, &nb);
    ck_assert(ops == NULL);
    ck_assert_uint_eq(n, 0);
    ck_assert_uint_eq(nb, 0);
    /* a merge on both sides: change, new inside and outside, delete */
    ck_assert_int_eq(CHG(b, 7, 9, { B, XG_BOOK_CHANGE, 99.5, 4 },
        { B, XG_BOOK_NEW, 99.75, 1 }, { B, XG_BOOK_NEW, 98, 1 },
        { A, XG_BOOK_DELETE, 101, 0 }), XG_BOOK_APPLIED);
    ck_assert_int_eq(CHG(b, 9, 10, { A, XG_BOOK_NEW, 102, 1 },
        { A, XG_BOOK_NEW, 100.5, 1 }, { B, XG_BOOK_NEW, 100, 2 }),
        XG_BOOK_APPLIED);
    ck_assert_text(diff_text(m, xg_book_current(b)), "b: N99.75x1# "
        "C99.5x4# N98#x1# a: N100.5x1# D101#x0# N102#x1#");
    /* a change back to the same amount is no op at all */
    ck_assert_int_eq(CHG(b, 10, 11, { B, XG_BOOK_CHANGE, 99.5, 1.25 }),
        XG_BOOK_APPLIED);
    ck_assert_text(diff_text(m, xg_book_current(b)), "b: N99.75x1# "
        "N98#x1# a: N100.5x1# D101#x0# N102#x1#");
    /* NBIDS may be NULL */
    ops = xg_book_diff(m, xg_book_current(b), &n, NULL);
    ck_assert_uint_eq(n, 5);
    free(ops);
    xg_book_state_unref(m);
    xg_book_free(b);
}
END_TEST

START_TEST(test_max_levels)
{
    struct xg_book *b = xg_book_new("book");
    struct xg_book_stats st;
    struct xg_book_state *m;
    struct msg mg;
    size_t i;

    /* the default limit: 65536 levels a side */
    msg_init(&mg, 1, 0, 1);
    for (i = 0; i < XG_BOOK_MAX_LEVELS_DEFAULT + 1; i++) {
        msg_op(&mg, B, XG_BOOK_NEW, (double) i + 1, 1);
    }
    ck_assert_int_eq(msg_apply(b, &mg), XG_BOOK_ERROR);
    ck_assert(strstr(xg_book_last_error(b), "more than the limit") != NULL);
    msg_init(&mg, 1, 0, 1);
    for (i = 0; i < XG_BOOK_MAX_LEVELS_DEFAULT; i++) {
        msg_op(&mg, A, XG_BOOK_NEW, (double) i + 1, 1);
    }
    ck_assert_int_eq(msg_apply(b, &mg), XG_BOOK_SNAPSHOT);
    xg_book_stats(b, &st);
    ck_assert_uint_eq(st.nasks, XG_BOOK_MAX_LEVELS_DEFAULT);

    /* a change that would grow past the limit fails whole */
    xg_book_set_max_levels(b, 100);
    msg_init(&mg, 1, 0, 1);
    for (i = 0; i < 95; i++) {
        msg_op(&mg, B, XG_BOOK_NEW, (double) i + 1, 1);
    }
    ck_assert_int_eq(msg_apply(b, &mg), XG_BOOK_SNAPSHOT);
    msg_init(&mg, 0, 1, 2);
    for (i = 0; i < 6; i++) {
        msg_op(&mg, B, XG_BOOK_NEW, (double) i + 1000, 1);
    }
    ck_assert_int_eq(msg_apply(b, &mg), XG_BOOK_ERROR);
    ck_assert(strstr(xg_book_last_error(b), "would exceed 100") != NULL);
    ck_assert(xg_book_synced(b));
    xg_book_stats(b, &st);
    ck_assert_uint_eq(st.nbids, 95);
    /* the same with a mark held (the copy is dropped, the mark kept) */
    m = xg_book_mark(b);
    msg_init(&mg, 0, 1, 2);
    for (i = 0; i < 6; i++) {
        msg_op(&mg, B, XG_BOOK_NEW, (double) i + 1000, 1);
    }
    ck_assert_int_eq(msg_apply(b, &mg), XG_BOOK_ERROR);
    ck_assert(xg_book_state_equal(m, b));
    ck_assert(m == xg_book_current(b));
    xg_book_state_unref(m);
    /* exactly up to the limit is fine, and deletes make room first */
    msg_init(&mg, 0, 1, 2);
    for (i = 0; i < 5; i++) {
        msg_op(&mg, B, XG_BOOK_NEW, (double) i + 1000, 1);
    }
    ck_assert_int_eq(msg_apply(b, &mg), XG_BOOK_APPLIED);
    ck_assert_int_eq(CHG(b, 2, 3, { B, XG_BOOK_DELETE, 1, 0 },
        { B, XG_BOOK_NEW, 5000, 1 }), XG_BOOK_APPLIED);
    xg_book_stats(b, &st);
    ck_assert_uint_eq(st.nbids, 100);
    /* a message with more ops than the limit is refused outright, even
       when it would not grow the book */
    msg_init(&mg, 0, 3, 4);
    for (i = 0; i < 101; i++) {
        msg_op(&mg, B, XG_BOOK_DELETE, (double) i + 1, 0);
    }
    ck_assert_int_eq(msg_apply(b, &mg), XG_BOOK_ERROR);
    xg_book_stats(b, &st);
    ck_assert_uint_eq(st.nbids, 100);
    ck_assert_uint_eq(st.errors, 4);
    ck_assert_uint_eq(xg_book_seq(b), 3);
    xg_book_free(b);
}
END_TEST

/* ---- the property test -------------------------------------------------- */

static uint64_t rng_state;

static uint64_t
rnd64(void)
{
    /* xorshift64*: deterministic per seed */
    rng_state ^= rng_state >> 12;
    rng_state ^= rng_state << 25;
    rng_state ^= rng_state >> 27;
    return rng_state * 2685821657736338717ULL;
}

static long long
rnd(long long n)
{
    return n <= 1 ? 0 : (long long) (rnd64() % (uint64_t) n);
}

/* A naive book: unsorted (price, amount) pairs, linear search. */
#define NMAX 1024

struct naive {
    int      n[2];
    double   p[2][NMAX], a[2][NMAX];
    uint64_t seq;
    long     anomalies;
};

static int
naive_find(const struct naive *c, int s, double p)
{
    int i;

    for (i = 0; i < c->n[s]; i++) {
        if (c->p[s][i] == p) {
            return i;
        }
    }
    return -1;
}

static void
naive_op(struct naive *c, int s, int act, double p, double a)
{
    int j = naive_find(c, s, p);

    if (act == XG_BOOK_DELETE || a == 0) {
        if (j < 0) {
            c->anomalies += act == XG_BOOK_DELETE;
            return;
        }
        c->p[s][j] = c->p[s][c->n[s] - 1];
        c->a[s][j] = c->a[s][c->n[s] - 1];
        c->n[s]--;
        return;
    }
    if (j >= 0) {
        c->anomalies += act == XG_BOOK_NEW;
        c->a[s][j] = a;
        return;
    }
    c->anomalies += act == XG_BOOK_CHANGE;
    REQUIRE(c->n[s] < NMAX, "naive book full");
    c->p[s][c->n[s]] = p;
    c->a[s][c->n[s]] = a;
    c->n[s]++;
}

/* Applies a diff from OLD to NOW to client C as deltas. */
static void
naive_bridge(struct naive *c, const struct xg_book_state *old,
    const struct xg_book_state *now)
{
    size_t n, nb, i;
    struct xg_book_op *ops = xg_book_diff(old, now, &n, &nb);
    long an = c->anomalies;

    for (i = 0; i < n; i++) {
        REQUIRE(ops[i].side == (i < nb ? B : A), "diff sides out of order");
        REQUIRE(i == 0 || ops[i].side != ops[i - 1].side
                || (ops[i].side == B ? ops[i].price < ops[i - 1].price
                                     : ops[i].price > ops[i - 1].price),
            "diff not best first");
        naive_op(c, ops[i].side, ops[i].action, ops[i].price,
            ops[i].amount);
    }
    /* a diff never deletes a level the client lacks nor adds twice */
    REQUIRE(c->anomalies == an, "the diff made anomalies");
    c->seq = xg_book_state_seq(now);
    free(ops);
}

static void
naive_check(const struct naive *c, const struct naive *ref, const char *who)
{
    int s, i;

    for (s = 0; s < 2; s++) {
        REQUIRE(c->n[s] == ref->n[s], "%s: %d levels, reference %d", who,
            c->n[s], ref->n[s]);
        for (i = 0; i < ref->n[s]; i++) {
            int j = naive_find(c, s, ref->p[s][i]);

            REQUIRE(j >= 0 && c->a[s][j] == ref->a[s][i],
                "%s: level %g differs", who, ref->p[s][i]);
        }
    }
}

/* Random ops on the reference (the "exchange") as one update. */
static void
walk_change(struct naive *ref, struct msg *m, uint64_t seq)
{
    int k, nops = 1 + (int) rnd(6);

    msg_init(m, 0, ref->seq, seq);
    for (k = 0; k < nops; k++) {
        int s = (int) rnd(2), act;
        long long r = rnd(100);
        double p, a = (double) (1 + rnd(1000)) / 10;

        if (ref->n[s] == 0 || r < 35) {
            p = s ? 5000.01 + (double) rnd(300) / 100
                  : 4999.99 - (double) rnd(300) / 100;
            act = naive_find(ref, s, p) >= 0 ? XG_BOOK_CHANGE : XG_BOOK_NEW;
        } else {
            p = ref->p[s][rnd(ref->n[s])];
            act = r < 65 ? XG_BOOK_DELETE : XG_BOOK_CHANGE;
            if (act == XG_BOOK_DELETE) {
                a = 0;
            }
        }
        if (ref->n[s] >= NMAX - 8 && act == XG_BOOK_NEW) {
            continue;
        }
        naive_op(ref, s, act, p, a);
        msg_op(m, s, act, p, a);
    }
    ref->seq = seq;
}

/* The reference's levels as a snapshot update, in a random order. */
static void
walk_snapshot(const struct naive *ref, struct msg *m)
{
    int s, i;

    msg_init(m, 1, 0, ref->seq);
    for (s = 0; s < 2; s++) {
        for (i = ref->n[s] - 1; i >= 0; i--) {
            msg_op(m, s, XG_BOOK_NEW, ref->p[s][i], ref->a[s][i]);
        }
    }
}

#define NSUB 5

/*
 * A seeded random walk: the book follows the reference through chained
 * changes, outages (invalidate) and lost changes (gap), each healed by a
 * snapshot; subscribers hold a copy built only from diffs: in sync ones
 * follow each change's diff from the previous state, frozen ones hold a
 * mark and are bridged later, and every subscriber is bridged from its
 * mark across an outage or a gap.
 */
START_TEST(test_diff_walk)
{
    struct naive *ref = xg_calloc(1, sizeof(*ref));
    struct naive *sub[NSUB];
    struct xg_book_state *seen[NSUB];
    struct xg_book *b = xg_book_new("walk");
    struct msg m;
    uint64_t seq = 100;
    int step, i, bridges = 0, outages = 0, gaps = 0;

    rng_state = 0x9e3779b97f4a7c15ULL * (uint64_t) (_i + 1) + 3;
    for (i = 0; i < 40; i++) {
        walk_change(ref, &m, ++seq);
        free(m.u.ops[0]);
        free(m.u.ops[1]);
    }
    walk_snapshot(ref, &m);
    REQUIRE(msg_apply(b, &m) == XG_BOOK_SNAPSHOT, "first snapshot");
    for (i = 0; i < NSUB; i++) {
        sub[i] = xg_calloc(1, sizeof(*sub[i]));
        naive_bridge(sub[i], NULL, xg_book_current(b));
        seen[i] = NULL;
    }
    for (step = 0; step < 4000; step++) {
        long long r = rnd(1000);

        if (r < 920) {
            struct xg_book_state *before = xg_book_mark(b);

            seq += 1 + (uint64_t) rnd(3);
            walk_change(ref, &m, seq);
            REQUIRE(msg_apply(b, &m) == XG_BOOK_APPLIED, "step %d: %s",
                step, xg_book_last_error(b));
            for (i = 0; i < NSUB; i++) {
                if (seen[i] == NULL) {
                    naive_bridge(sub[i], before, xg_book_current(b));
                }
            }
            xg_book_state_unref(before);
        } else if (r < 960) {
            /* freeze a subscriber at a mark, or thaw a frozen one */
            i = (int) rnd(NSUB);
            if (seen[i] == NULL) {
                seen[i] = xg_book_mark(b);
                REQUIRE(xg_book_state_seq(seen[i]) == sub[i]->seq, "mark");
            } else {
                naive_bridge(sub[i], seen[i], xg_book_current(b));
                xg_book_state_unref(seen[i]);
                seen[i] = NULL;
                bridges++;
            }
        } else {
            /* an outage or a lost change, then the resync snapshot */
            struct xg_book_state *mk;
            int lost = 1 + (int) rnd(40), k;

            if (r < 980) {
                xg_book_invalidate(b);
                outages++;
            } else {
                walk_change(ref, &m, ++seq);    /* never arrives */
                free(m.u.ops[0]);
                free(m.u.ops[1]);
                walk_change(ref, &m, ++seq);
                REQUIRE(msg_apply(b, &m) == XG_BOOK_GAP, "gap");
                gaps++;
            }
            mk = xg_book_mark(b);
            for (i = 0; i < NSUB; i++) {
                if (seen[i] == NULL) {
                    seen[i] = xg_book_state_ref(mk);
                }
            }
            xg_book_state_unref(mk);
            for (k = 0; k < lost; k++) {
                walk_change(ref, &m, ++seq);
                REQUIRE(msg_apply(b, &m) == XG_BOOK_WAIT, "not dropped");
            }
            walk_snapshot(ref, &m);
            REQUIRE(msg_apply(b, &m) == XG_BOOK_SNAPSHOT, "resync");
            for (i = 0; i < NSUB; i++) {
                naive_bridge(sub[i], seen[i], xg_book_current(b));
                xg_book_state_unref(seen[i]);
                seen[i] = NULL;
                naive_check(sub[i], ref, "bridged");
                bridges++;
            }
        }
        if (step % 100 == 0) {
            struct naive *view = xg_calloc(1, sizeof(*view));

            naive_bridge(view, NULL, xg_book_current(b));
            naive_check(view, ref, "the book");
            free(view);
            for (i = 0; i < NSUB; i++) {
                if (seen[i] == NULL) {
                    naive_check(sub[i], ref, "in sync");
                }
            }
        }
    }
    for (i = 0; i < NSUB; i++) {
        if (seen[i] != NULL) {
            naive_bridge(sub[i], seen[i], xg_book_current(b));
            xg_book_state_unref(seen[i]);
        }
        naive_check(sub[i], ref, "at the end");
        ck_assert_uint_eq(sub[i]->seq, xg_book_seq(b));
        free(sub[i]);
    }
    ck_assert_int_gt(bridges, 50);
    ck_assert_int_gt(outages, 20);
    ck_assert_int_gt(gaps, 20);
    xg_book_free(b);
    free(ref);
}
END_TEST

static Suite *
book_suite(void)
{
    Suite *s = suite_create("xg_book");
    TCase *tc = tcase_create("book");

    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, test_new_and_venue_data);
    tcase_add_test(tc, test_snapshot_then_changes);
    tcase_add_test(tc, test_snapshot_duplicates_and_order);
    tcase_add_test(tc, test_anomalies);
    tcase_add_test(tc, test_chain_gap_wait);
    tcase_add_test(tc, test_reject);
    tcase_add_test(tc, test_mark_copy_on_write);
    tcase_add_test(tc, test_diff);
    tcase_add_test(tc, test_max_levels);
    tcase_add_loop_test(tc, test_diff_walk, 0, 4);
    suite_add_tcase(s, tc);
    return s;
}

int
main(void)
{
    SRunner *sr = srunner_create(book_suite());
    int failed;

    xg_log_open(NULL, XG_LOG_ERROR);
    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
