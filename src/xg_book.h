/*
 * xg_book.h: the generic order book that keeps delta-applying clients
 * continuous across an upstream reconnect, a gap resync or a late join
 * (DESIGN.md 3a and 10).
 *
 * Pure and exchange-independent: no sockets, no timers, no wire format.
 * A venue parses its book messages into one `struct xg_book_update`
 * (price-level operations per side, the message's sequence id and the id
 * it chains on) and applies it here; to send a client a book it asks for
 * the operations that turn one state into another (xg_book_diff) and
 * encodes them in its own format (modules/venue/xg_venue_*_book.c).
 *
 * Sharing: the live book is one `struct xg_book` per channel. A mark
 * (`xg_book_mark`) is a refcounted immutable state of the book at its
 * sequence id; taking it is O(1) because the book copies its levels only
 * if it is modified while a mark is held (copy on write), and a snapshot
 * replaces the levels without copying. Subscribers that are in sync share
 * the live book; only at a bridge point does the gateway compute, once
 * per distinct mark (usually one per channel), the operations that turn
 * the marked book into the new one.
 *
 * Wiring, per delta channel (t/integ/book_relay.c does exactly this
 * through a venue's functions):
 *   message in  -> the venue's apply:
 *       APPLIED   forward the original bytes to the subscribers;
 *       SNAPSHOT  if a mark is held, or xg_book_replaced() is not NULL,
 *                 send a bridge (the diff from that state to the book,
 *                 encoded by the venue) to the subscribers that held the
 *                 book and drop the mark; else (first snapshot) forward
 *                 the bytes. Joiners that waited get a snapshot (the
 *                 diff from nothing);
 *       GAP       take a mark if none is held, resubscribe the channel;
 *       WAIT      drop;
 *       ERROR     drop (the next change is a GAP); if the book is not in
 *                 sync the channel cannot be kept: pass it through.
 *   upstream down    -> mark (unless one is held), xg_book_invalidate().
 *   client joins     -> in sync: a snapshot after the subscribe answer;
 *                       else it waits for the next snapshot.
 */
#ifndef XG_BOOK_H
#define XG_BOOK_H

#include <stddef.h>
#include <stdint.h>

struct xg_book;
struct xg_upstream;
struct xg_book_state;

/* What a venue's channel rule says a channel is. */
enum xg_book_kind {
    XG_BOOK_NOT_BOOK = 0,   /* not an order-book channel */
    XG_BOOK_DELTA,          /* a snapshot then chained changes: needs an
                               xg_book */
    XG_BOOK_IMAGE           /* a full top-N image in every message: a
                               client replaces its book each time, so no
                               state and no bridging */
};

/* The outcome of applying one message. */
enum xg_book_result {
    XG_BOOK_APPLIED = 0,    /* a change applied: forward it as is to the
                               subscribers in sync */
    XG_BOOK_SNAPSHOT = 3,   /* a snapshot replaced the book: bridge the
                               subscribers that hold a mark, give the
                               others the snapshot */
    XG_BOOK_GAP = 1,        /* the change's prev is not the last seq: the
                               book stopped being in sync just now; resync
                               the channel (once) and do not forward */
    XG_BOOK_WAIT = 2,       /* a change while not in sync (after a gap, an
                               invalidate, or before the first snapshot):
                               dropped, a snapshot is awaited */
    XG_BOOK_ERROR = -1      /* malformed: the book is unchanged; see
                               xg_book_last_error() */
};

/* The sides, as indexes of xg_book_update's arrays. */
#define XG_BOOK_BIDS 0
#define XG_BOOK_ASKS 1

/* What a level operation does. */
enum xg_book_action {
    XG_BOOK_NEW = 0,        /* a level that was not there */
    XG_BOOK_CHANGE,         /* a level whose amount changed */
    XG_BOOK_DELETE          /* a level that went away */
};

/*
 * One price-level operation. In an update, `new` and `change` set the
 * level (amount 0 removes it, as ccxt does) and `delete` removes it; the
 * array it is in gives its side. In a diff, every field is set.
 * PINT and AINT are 1 when the venue received the price (amount) as an
 * exact integer: the book keeps them with the level and gives them back
 * in diffs, so that a venue can write a number the way it came.
 */
struct xg_book_op {
    double        price;
    double        amount;   /* >= 0; a diff's deletes have 0 */
    uint32_t      idx;      /* the book's own: message order while sorting */
    unsigned char side;     /* XG_BOOK_BIDS or XG_BOOK_ASKS (diffs) */
    unsigned char action;   /* enum xg_book_action */
    unsigned char pint;
    unsigned char aint;
};

/*
 * One parsed book message. A snapshot replaces the book and makes it in
 * sync; a change applies only when in sync and PREV equals the last
 * SEQ. Ops are applied in array order (the last one for a price wins);
 * the book may reorder a snapshot's ops.
 */
struct xg_book_update {
    int                snapshot;    /* 1 snapshot, 0 change */
    uint64_t           seq;         /* the book's id after this message */
    uint64_t           prev;        /* a change: the id it chains on */
    int64_t            timestamp;   /* kept with the state when HAS_TS */
    int                has_ts;
    struct xg_book_op *ops[2];      /* [XG_BOOK_BIDS], [XG_BOOK_ASKS] */
    size_t             nops[2];
};

/* Counters for /status. */
struct xg_book_stats {
    uint64_t seq;           /* last applied (0 before the first snapshot) */
    int      synced;        /* 1 when changes are being applied */
    size_t   nbids, nasks;  /* levels held */
    size_t   bytes;         /* heap held by the book (levels + strings +
                               the venue's data) */
    uint64_t snapshots;     /* snapshots applied */
    uint64_t changes;       /* changes applied */
    uint64_t gaps;          /* chain breaks detected */
    uint64_t waits;         /* changes dropped while not in sync */
    uint64_t errors;        /* malformed messages rejected */
    uint64_t anomalies;     /* delete of a missing level, change of a
                               missing level, new of an existing one:
                               applied as set/remove, counted */
};

/* Default bound on levels per side; a message that would exceed it is
 * rejected (XG_BOOK_ERROR), so memory per book stays bounded. */
#define XG_BOOK_MAX_LEVELS_DEFAULT 65536

/*
 * Creates an empty book. NAME (copied) names it in logs (the channel).
 * The book waits for a snapshot: changes before it return XG_BOOK_WAIT.
 */
struct xg_book *xg_book_new(const char *name);

/*
 * Frees B (NULL is fine), and its venue data with the function given to
 * xg_book_set_venue_data. Marks taken from it stay valid.
 */
void xg_book_free(struct xg_book *b);

/* The name given to xg_book_new (borrowed). */
const char *xg_book_name(const struct xg_book *b);

/*
 * The upstream (borrowed; NULL: none) whose lines B's own log lines (a
 * gap, a malformed message) are about: "upstream NAME#CONN: book ...".
 */
void xg_book_set_log(struct xg_book *b, const struct xg_upstream *up);

/*
 * Attaches DATA, the venue's per-book data (what its parser checks and
 * its encoder writes), to B: the book owns it from now on, frees it with
 * FREE_FN (NULL: not freed) and counts BYTES in its stats. Replaces (and
 * frees) earlier data.
 */
void xg_book_set_venue_data(struct xg_book *b, void *data, size_t bytes,
    void (*free_fn)(void *));

/* The data attached with xg_book_set_venue_data (NULL if none). */
void *xg_book_venue_data(const struct xg_book *b);

/*
 * Sets the bound on levels per side (default XG_BOOK_MAX_LEVELS_DEFAULT).
 */
void xg_book_set_max_levels(struct xg_book *b, size_t max);

/* The bound on levels per side: a venue may refuse a bigger message
 * before parsing it. */
size_t xg_book_max_levels(const struct xg_book *b);

/*
 * Applies U. A snapshot replaces the book and makes it in sync (what it
 * replaced while in sync stays readable with xg_book_replaced); a change
 * is checked as xg_book_chain does, then applied. Returns
 * XG_BOOK_SNAPSHOT or XG_BOOK_APPLIED on success, XG_BOOK_WAIT or
 * XG_BOOK_GAP as xg_book_chain, or XG_BOOK_ERROR when a side has more
 * ops than the bound or would hold more levels than it. Atomic: on any
 * other result the levels are unchanged. U's ops stay the caller's.
 */
enum xg_book_result xg_book_apply(struct xg_book *b,
    struct xg_book_update *u);

/*
 * Checks whether a change with ids PREV -> SEQ may be applied now, before
 * the venue parses its levels: XG_BOOK_APPLIED when the book is in sync
 * and PREV is its last seq; XG_BOOK_WAIT (counted) when it is not in
 * sync; XG_BOOK_GAP (counted, logged) when PREV breaks the chain, after
 * which the book is not in sync. The levels are not touched.
 */
enum xg_book_result xg_book_chain(struct xg_book *b, uint64_t prev,
    uint64_t seq);

/*
 * Rejects a message the venue could not parse: records the reason
 * (printf FMT), counts it, logs it naming WHAT ("snapshot", "change",
 * "message") and returns XG_BOOK_ERROR. The levels are unchanged.
 */
enum xg_book_result xg_book_reject(struct xg_book *b, const char *what,
    const char *fmt, ...) __attribute__((format(printf, 3, 4)));

/*
 * Stops applying changes until the next snapshot (upstream down, or a
 * resync decided by the caller); later changes return XG_BOOK_WAIT. The
 * levels are kept, so a mark taken before or after still shows them.
 */
void xg_book_invalidate(struct xg_book *b);

/* 1 when the book has a snapshot and no gap since. */
int xg_book_synced(const struct xg_book *b);

/* The last applied seq (0 before the first snapshot). */
uint64_t xg_book_seq(const struct xg_book *b);

/* Why the last XG_BOOK_ERROR happened (never NULL). */
const char *xg_book_last_error(const struct xg_book *b);

/* Fills ST with the book's counters and sizes. */
void xg_book_stats(const struct xg_book *b, struct xg_book_stats *st);

/*
 * Returns a reference to the book's current state (its levels at its
 * seq), or NULL when the book never had a snapshot. O(1): later changes
 * copy the levels once (copy on write). The caller owns the reference and
 * drops it with xg_book_state_unref.
 */
struct xg_book_state *xg_book_mark(struct xg_book *b);

/*
 * The book's current state, borrowed: valid until the next apply or
 * xg_book_free (take a mark to keep it). NULL before the first snapshot.
 */
const struct xg_book_state *xg_book_current(const struct xg_book *b);

/*
 * The state that the snapshot just applied replaced, if the book was in
 * sync when it came (an unexpected snapshot: subscribers hold that
 * state, and no mark was taken). Borrowed: valid until the next apply,
 * chain check, reject or xg_book_free; take a reference to keep it. NULL
 * otherwise. Bridge from it as from a mark.
 */
const struct xg_book_state *xg_book_replaced(const struct xg_book *b);

/* Takes one more reference on S (returns S). */
struct xg_book_state *xg_book_state_ref(struct xg_book_state *s);

/* Drops one reference on S (NULL is fine); frees it on the last. */
void xg_book_state_unref(struct xg_book_state *s);

/* The seq at which S was marked (0 for NULL). */
uint64_t xg_book_state_seq(const struct xg_book_state *s);

/* 1 and *TS when S carries a timestamp (the last message's that had
 * one), else 0. */
int xg_book_state_timestamp(const struct xg_book_state *s, int64_t *ts);

/* 1 when the book NOW holds exactly the levels of OLD (prices and
 * amounts compared as doubles), else 0. */
int xg_book_state_equal(const struct xg_book_state *old,
    const struct xg_book *now);

/*
 * The operations that turn OLD into NOW (NULL: an empty book, so the
 * diff from NULL lists every level of NOW as `new`): `delete` for levels
 * only in OLD (amount 0, written as an integer), `change` for levels
 * whose amount differs, `new` for levels only in NOW; bids best first,
 * then asks best first. A client applying them to OLD holds exactly NOW.
 * Returns a malloc'd array of *N ops (the caller frees it), NULL when
 * *N is 0. NBIDS, when not NULL, gets how many of them are bids.
 */
struct xg_book_op *xg_book_diff(const struct xg_book_state *old,
    const struct xg_book_state *now, size_t *n, size_t *nbids);

#endif
