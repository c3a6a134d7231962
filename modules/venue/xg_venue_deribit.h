/*
 * xg_venue_deribit.h: what the Deribit venue offers the rest of exgate.
 * Today: its order-book messages (xg_venue_deribit_book.c), which put
 * Deribit's wire format around the generic book of src/xg_book.h
 * (exchange-protocols.md A4.4).
 *
 * Deribit's delta books, `book.INSTRUMENT.INTERVAL`, send a snapshot and
 * then changes; each message has a change_id, and a change has the
 * prev_change_id it chains on (the book's seq and prev). A level is
 * [action, price, amount] with action new, change or delete. Grouped
 * books (`book.I.GROUP.DEPTH.INTERVAL`) are full top-N images in every
 * message, with no prev_change_id: they need no book (XG_BOOK_IMAGE).
 *
 * Messages built here are whole notifications,
 * {"jsonrpc":"2.0","method":"subscription","params":{"channel":C,
 * "data":D}}, ready to send. Prices and amounts are written as the
 * shortest decimal text that parses back to the same double, as an
 * integer when the exchange wrote an integer.
 */
#ifndef XG_VENUE_DERIBIT_H
#define XG_VENUE_DERIBIT_H

#include <stddef.h>

#include <jansson.h>

#include "xg_book.h"

/*
 * Deribit's channel rule for books: XG_BOOK_DELTA for `book.I.INTERVAL`,
 * XG_BOOK_IMAGE for `book.I.GROUP.DEPTH.INTERVAL` (DEPTH a number),
 * XG_BOOK_NOT_BOOK otherwise (NULL too). Only DELTA channels need a book.
 */
enum xg_book_kind xg_venue_deribit_book_kind(const char *channel);

/*
 * Creates an empty book for CHANNEL (copied; it names the book). The
 * book's venue data holds INSTRUMENT (copied), the instrument_name the
 * data must carry (NULL: taken from the channel name). Returns NULL when
 * CHANNEL is not a DELTA book channel. Free it with xg_book_free.
 */
struct xg_book *xg_venue_deribit_book_new(const char *channel,
    const char *instrument);

/*
 * Applies one notification `data` object (borrowed) to B, a book made by
 * xg_venue_deribit_book_new. A snapshot is type "snapshot", or no type
 * and no prev_change_id; a change is type "change" (or no type) with a
 * prev_change_id. Returns what xg_book_apply returns; the envelope is
 * checked before the chain, the chain before the levels, so a change
 * that cannot apply now returns XG_BOOK_WAIT or XG_BOOK_GAP whatever its
 * levels. Malformed data is rejected (XG_BOOK_ERROR) with the book
 * unchanged and the reason in xg_book_last_error().
 */
enum xg_book_result xg_venue_deribit_book_apply(struct xg_book *b,
    const json_t *data);

/* Same, parsing DATA (LEN bytes of JSON text) with jansson. */
enum xg_book_result xg_venue_deribit_book_apply_text(struct xg_book *b,
    const char *data, size_t len);

/*
 * Same, from a whole upstream notification text
 * {"jsonrpc":"2.0","method":"subscription","params":{"channel":C,"data":D}}.
 * C must be the book's channel (else XG_BOOK_ERROR).
 */
enum xg_book_result xg_venue_deribit_book_apply_notification(
    struct xg_book *b, const char *msg, size_t len);

/*
 * Builds the bridging notification for a subscriber whose last seen book
 * is OLD: a `type: change` with prev_change_id = OLD's seq, change_id =
 * NOW's, and the levels of xg_book_diff(OLD, NOW's state). A client
 * applying it to OLD holds exactly NOW, and NOW's next change chains on
 * it. CHANNEL is the channel to name (NULL: the book's). Returns malloc'd
 * text (caller frees), or NULL when NOW is not in sync or OLD is NULL.
 * When nothing changed the message has empty bids and asks (still sent:
 * it moves change_id).
 */
char *xg_venue_deribit_book_bridge(const struct xg_book_state *old,
    const struct xg_book *now, const char *channel);

/*
 * Builds a `type: snapshot` notification of B (for a late joiner) at B's
 * seq, so that B's next change chains on it: every level as `new`, best
 * first. CHANNEL as above. Returns malloc'd text, or NULL when B is not
 * in sync.
 */
char *xg_venue_deribit_book_snapshot(const struct xg_book *b,
    const char *channel);

#endif
