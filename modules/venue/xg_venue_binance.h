/*
 * xg_venue_binance.h: what the Binance venue's files share
 * (modules/venue/xg_venue_binance*.c). The venue itself (streams, clients,
 * connections) is xg_venue_binance.c; the continuity of depth and trade
 * streams (books kept and bridged, trades backfilled) is
 * xg_venue_binance_track.c, built on the generic trackers
 * (src/xg_track.h).
 *
 * Messages handed to the trackers are always the raw event payload (the
 * "data" member of a combined-stream message: {"e":"depthUpdate",...});
 * what a tracker fans out (env->fanout) is a raw payload too, and the
 * venue frames it for each client (raw, or {"stream":...,"data":...}).
 */
#ifndef XG_VENUE_BINANCE_H
#define XG_VENUE_BINANCE_H

#include "xg_core.h"
#include "xg_track.h"

#include <stddef.h>
#include <stdint.h>

enum xg_bn_market {
    XG_BN_SPOT = 0,     /* stream.binance.com, api.binance.com/api/v3 */
    XG_BN_USDM          /* fstream.binance.com, fapi.binance.com/fapi/v1 */
};

/*
 * Request kind of a tracker's REST GET: q->text (q->len bytes) is the
 * path and query to append to rest_url ("/api/v3/depth?symbol=BTCUSDT&
 * limit=1000"); the answer's body is passed to xg_track_answer() as the
 * result (HTTP 200) or as the error (a JSON object {"status":N,"msg":...}
 * for anything else).
 */
#define XG_BN_REQ_REST  200

/*
 * The tracker kinds of MARKET, NULL-terminated: a depth stream's book
 * (<sym>@depth, @depth@100ms, @depth@1000ms, @depth@500ms), <sym>@trade
 * (ids t) and <sym>@aggTrade (ids a). Each kind's create() returns NULL
 * for a stream name that is not its own.
 */
extern const struct xg_track_kind *const xg_bn_kinds_spot[];
extern const struct xg_track_kind *const xg_bn_kinds_usdm[];

/*
 * The book of depth tracker T as its subscribers have it, for the REST
 * front: the top LIMIT levels of each side as Binance's depth answer
 * ({"lastUpdateId":N,"bids":[["p","q"],...],"asks":[...]}, USDⓈ-M adds
 * "E" and "T"), N being the u of the last event handed to every
 * subscriber. NULL when T keeps no book it can vouch for (not synced,
 * fetching, in a gap). The body is malloc'd, *LEN bytes.
 */
char *xg_bn_book_depth(struct xg_track *t, unsigned limit, size_t *len);

/* 1 when T is a depth tracker (of either market). */
int xg_bn_track_is_book(const struct xg_track *t);

/*
 * 1 when T's subscribers wait for a repair: T fetches or holds (not
 * LIVE), or T is a book whose bridge is still due (its snapshot came but
 * no event has synced it yet; a quiet market is bridged BN_QUIET_MS,
 * 2 s, after the snapshot).
 */
int xg_bn_track_repairing(const struct xg_track *t);

#endif
