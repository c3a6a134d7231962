/*
 * xg_nonce.h: the nonces of signed requests already used, remembered for
 * as long as a replay of the request could still be accepted.
 *
 * A signed request carries (client id, timestamp, nonce) and is accepted
 * only while its timestamp lies within a window of the current time. A
 * replay of it inside that window must be refused, so each (id, nonce)
 * pair is kept until its timestamp leaves the window, and no longer.
 * Exchange-independent: the Deribit venue uses it for the local
 * client_signature grant.
 *
 * Memory is bounded: at most CAP pairs are held (about 48 bytes each,
 * allocated on first use). When CAP pairs are live, a new pair is
 * refused (XG_AGAIN) rather than an old one forgotten, since forgetting
 * would let its replay in.
 */
#ifndef XG_NONCE_H
#define XG_NONCE_H

#include "xg_core.h"

#include <stddef.h>
#include <stdint.h>

struct xg_nonce;

/*
 * A store that keeps each pair until its timestamp + WINDOW_MS, with at
 * most CAP (>= 1) pairs at a time. Returns the store (never NULL); free
 * it with xg_nonce_free.
 */
struct xg_nonce *xg_nonce_new(uint64_t window_ms, size_t cap);

/* Frees NS and every pair it holds; NULL is ignored. */
void xg_nonce_free(struct xg_nonce *ns);

/*
 * Records the pair (ID, NONCE) of a request signed at TS_MS, at time
 * NOW_MS (the same clock as TS_MS; the caller has checked that TS_MS is
 * within the window). Pairs whose time is over are dropped first.
 * Borrows ID and NONCE (only their digest is kept).
 * Returns XG_OK when the pair is new (it is now remembered), XG_ERROR
 * when it is already held (a replay), XG_AGAIN when the store is full
 * (nothing recorded: the request must be refused).
 */
int xg_nonce_use(struct xg_nonce *ns, const char *id, const char *nonce,
    uint64_t ts_ms, uint64_t now_ms);

/* The number of pairs held (expired ones included until the next use). */
size_t xg_nonce_count(const struct xg_nonce *ns);

#endif
