/*
 * xg_book.h: order-book state for Deribit `book.INSTRUMENT.INTERVAL`
 * channels, and the messages that keep delta-applying clients continuous
 * across an upstream reconnect, a gap resync or a late join
 * (DESIGN.md 3a, exchange-protocols.md A4.4).
 *
 * Pure: no sockets, no timers. Input is the `data` of an upstream
 * notification (text or jansson); output is the text of a whole
 * notification, ready to send.
 *
 * Sharing: the live book is one `struct xg_book` per channel. A mark
 * (`xg_book_mark`) is a refcounted immutable state of the book at its
 * change_id; taking it is O(1) because the book copies its levels only if
 * it is modified while a mark is held (copy on write), and a snapshot
 * replaces the levels without copying. Subscribers that are in sync share
 * the live book; only at a bridge point does the gateway compute, once
 * per distinct mark (usually one per channel), the `change` that turns
 * the marked book into the new one.
 *
 * Grouped books (`book.I.GROUP.DEPTH.INTERVAL`) are full top-N images in
 * every message, with no prev_change_id: a client replaces its book each
 * time, so they need no state and no bridging (XG_BOOK_IMAGE).
 *
 * Wiring, per DELTA channel (t/integ/book_relay.c does exactly this):
 *   notification in  -> xg_book_apply_notification():
 *       APPLIED   forward the original bytes to the subscribers;
 *       SNAPSHOT  if a mark is held, or xg_book_replaced() is not NULL,
 *                 send xg_book_bridge(that, book) to the subscribers that
 *                 held the book and drop the mark; else (first snapshot)
 *                 forward the bytes. Joiners that waited get
 *                 xg_book_snapshot_text();
 *       GAP       take a mark if none is held, resubscribe the channel;
 *       WAIT      drop;
 *       ERROR     drop (the next change is a GAP); if the book is not in
 *                 sync the channel cannot be kept: pass it through.
 *   upstream down    -> mark (unless one is held), xg_book_invalidate().
 *   client joins     -> in sync: xg_book_snapshot_text() after the
 *                       subscribe answer; else it waits for the snapshot.
 */
#ifndef XG_BOOK_H
#define XG_BOOK_H

#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

struct xg_book;
struct xg_book_state;

/* What a channel name is, for the gateway's choice of treatment. */
enum xg_book_kind {
    XG_BOOK_NOT_BOOK = 0,   /* not an order-book channel */
    XG_BOOK_DELTA,          /* book.I.INTERVAL: snapshot then changes */
    XG_BOOK_IMAGE           /* book.I.GROUP.DEPTH.INTERVAL: full images */
};

/* The outcome of applying one message. */
enum xg_book_result {
    XG_BOOK_APPLIED = 0,    /* a change applied: forward it as is to the
                               subscribers in sync */
    XG_BOOK_SNAPSHOT = 3,   /* a snapshot replaced the book: bridge the
                               subscribers that hold a mark, give the
                               others the snapshot */
    XG_BOOK_GAP = 1,        /* prev_change_id != last change_id: the book
                               stopped being in sync just now; resync the
                               channel (once) and do not forward */
    XG_BOOK_WAIT = 2,       /* a change while not in sync (after a gap, an
                               invalidate, or before the first snapshot):
                               dropped, a snapshot is awaited */
    XG_BOOK_ERROR = -1      /* malformed: the book is unchanged; see
                               xg_book_last_error() */
};

/* Counters for /status. */
struct xg_book_stats {
    uint64_t change_id;     /* last applied (0 before the first snapshot) */
    int      synced;        /* 1 when changes are being applied */
    size_t   nbids, nasks;  /* levels held */
    size_t   bytes;         /* heap held by the book (levels + strings) */
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
 * Classifies CHANNEL: XG_BOOK_DELTA for `book.I.INTERVAL`, XG_BOOK_IMAGE
 * for `book.I.GROUP.DEPTH.INTERVAL`, XG_BOOK_NOT_BOOK otherwise. Only
 * DELTA channels need an xg_book.
 */
enum xg_book_kind xg_book_channel_kind(const char *channel);

/*
 * Creates an empty book for CHANNEL (copied). INSTRUMENT (copied) is the
 * instrument_name the data must carry; NULL takes it from the channel
 * name. Returns NULL when CHANNEL is not a DELTA book channel. The book
 * waits for a snapshot: changes before it return XG_BOOK_WAIT.
 */
struct xg_book *xg_book_new(const char *channel, const char *instrument);

/* Frees B (NULL is fine). Marks taken from it stay valid. */
void xg_book_free(struct xg_book *b);

/*
 * Sets the bound on levels per side (default XG_BOOK_MAX_LEVELS_DEFAULT).
 */
void xg_book_set_max_levels(struct xg_book *b, size_t max);

/*
 * Applies one notification `data` object (borrowed). A snapshot (type
 * "snapshot", or no type and no prev_change_id) replaces the book and
 * makes it in sync. A change applies only when in sync and its
 * prev_change_id equals the last change_id. Levels are
 * [action, price, amount]: `new` and `change` set the level (amount 0
 * removes it, as ccxt does), `delete` removes it. Returns
 * XG_BOOK_SNAPSHOT or XG_BOOK_APPLIED on success. Atomic: on any other
 * result the levels are unchanged. Logs gaps and errors with the channel
 * name.
 */
enum xg_book_result xg_book_apply(struct xg_book *b, const json_t *data);

/* Same, parsing DATA (LEN bytes of JSON text) with jansson. */
enum xg_book_result xg_book_apply_text(struct xg_book *b, const char *data,
    size_t len);

/*
 * Same, from a whole upstream notification text
 * {"jsonrpc":"2.0","method":"subscription","params":{"channel":C,"data":D}}.
 * C must be the book's channel (else XG_BOOK_ERROR).
 */
enum xg_book_result xg_book_apply_notification(struct xg_book *b,
    const char *msg, size_t len);

/*
 * Stops applying changes until the next snapshot (upstream down, or a
 * resync decided by the caller); later changes return XG_BOOK_WAIT. The
 * levels are kept, so a mark taken before or after still shows them.
 */
void xg_book_invalidate(struct xg_book *b);

/* 1 when the book has a snapshot and no gap since. */
int xg_book_synced(const struct xg_book *b);

/* The last applied change_id (0 before the first snapshot). */
uint64_t xg_book_change_id(const struct xg_book *b);

/* Why the last XG_BOOK_ERROR happened (never NULL). */
const char *xg_book_last_error(const struct xg_book *b);

/* Fills ST with the book's counters and sizes. */
void xg_book_stats(const struct xg_book *b, struct xg_book_stats *st);

/*
 * Returns a reference to the book's current state (its levels at its
 * change_id), or NULL when the book never had a snapshot. O(1): later
 * changes copy the levels once (copy on write). The caller owns the
 * reference and drops it with xg_book_state_unref.
 */
struct xg_book_state *xg_book_mark(struct xg_book *b);

/*
 * The state that the snapshot just applied replaced, if the book was in
 * sync when it came (an unexpected snapshot: subscribers hold that
 * state, and no mark was taken). Borrowed: valid until the next apply
 * or xg_book_free; take a reference to keep it. NULL otherwise. Bridge
 * from it as from a mark.
 */
const struct xg_book_state *xg_book_replaced(const struct xg_book *b);

/* Takes one more reference on S (returns S). */
struct xg_book_state *xg_book_state_ref(struct xg_book_state *s);

/* Drops one reference on S (NULL is fine); frees it on the last. */
void xg_book_state_unref(struct xg_book_state *s);

/* The change_id at which S was marked. */
uint64_t xg_book_state_change_id(const struct xg_book_state *s);

/* 1 when the book NOW holds exactly the levels of OLD (prices and
 * amounts compared as doubles), else 0. */
int xg_book_state_equal(const struct xg_book_state *old,
    const struct xg_book *now);

/*
 * Builds the bridging notification for a subscriber whose last seen book
 * is OLD: a `type: change` with prev_change_id = OLD's change_id,
 * change_id = NOW's, `delete` for levels only in OLD, `change` for
 * levels whose amount differs, `new` for levels only in NOW, bids best
 * first then asks best first. A client applying it to OLD holds exactly
 * NOW, and NOW's next change chains on it. CHANNEL is the channel to
 * name (NULL: the book's). Returns malloc'd text (caller frees), or NULL
 * when NOW is not in sync or OLD is NULL. When nothing changed the
 * message has empty bids and asks (still sent: it moves change_id).
 */
char *xg_book_bridge(const struct xg_book_state *old,
    const struct xg_book *now, const char *channel);

/*
 * Builds a `type: snapshot` notification of B (for a late joiner) at B's
 * change_id, so that B's next change chains on it. CHANNEL as above.
 * Returns malloc'd text, or NULL when B is not in sync.
 */
char *xg_book_snapshot_text(const struct xg_book *b, const char *channel);

#endif
