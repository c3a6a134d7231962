/*
 * xg_rest.h: an upstream's REST side (`rest_url URL;`, `rest_cache
 * DURATION;`): one HTTP(S) client per upstream that has a rest_url, shared
 * by its venue (book snapshots, trade backfill) and by the REST front
 * (`listen ADDR http upstream=NAME;`, which proxies the public GETs the
 * venue does not answer itself, see rest_local in src/xg_venue.h).
 *
 * The client keeps the exchange's request-weight budget in view (the
 * X-MBX-USED-WEIGHT-1M header) and backs off on 429 and 418 (Retry-After):
 * while backing off, a GET fails at once with status 0 and an error that
 * says until when. TLS is verified like the WebSocket side (chain and
 * host name, tls_ca, tls_verify); names are resolved with evdns.
 */
#ifndef XG_REST_H
#define XG_REST_H

#include "xg_core.h"
#include "xg_conf.h"

#include <event2/dns.h>
#include <event2/event.h>
#include <event2/keyvalq_struct.h>
#include <jansson.h>

struct xg_rest;
struct xg_rest_get;

/*
 * The answer to one GET: STATUS is the HTTP status (0: no answer: ERR
 * says why: connect, tls, timeout, backing off, too big, cancelled by a
 * stop), BODY (LEN bytes, not NUL-terminated, valid during the call) and
 * HEADERS (NULL when STATUS is 0) as received.
 */
typedef void (*xg_rest_cb)(void *arg, int status, const char *body,
    size_t len, const struct evkeyvalq *headers, const char *err);

/*
 * The REST client of the upstream NAME on CONF (borrowed; conf->rest_url
 * must be set), its events on BASE, names resolved by DNS. NULL (logged)
 * when it cannot be made.
 */
struct xg_rest *xg_rest_new(struct event_base *base, struct evdns_base *dns,
    const struct xg_upstream_conf *conf, const char *name);
/* Frees R; GETs in flight are dropped without their callback. */
void xg_rest_free(struct xg_rest *r);
/* A reload: CONF from now on (a changed rest_url applies to new GETs). */
void xg_rest_reconf(struct xg_rest *r, const struct xg_upstream_conf *conf);

/*
 * GET PATHQUERY ("/api/v3/depth?symbol=BTCUSDT&limit=1000", appended to
 * rest_url's path) within TIMEOUT_MS (0: the default, 10 s). CB(ARG) is
 * called exactly once, never before this returns, unless the GET is
 * cancelled. Returns a handle for xg_rest_cancel(), valid until CB runs.
 */
struct xg_rest_get *xg_rest_get(struct xg_rest *r, const char *pathquery,
    uint64_t timeout_ms, xg_rest_cb cb, void *arg);
/* Drops G: its callback is never called. */
void xg_rest_cancel(struct xg_rest_get *g);

/* Adds "rest": {url, gets, failures, used_weight, backoff_until, ...}. */
void xg_rest_status(const struct xg_rest *r, json_t *obj);

/* The upstream's REST client, or NULL when it has no rest_url. */
struct xg_upstream;
struct xg_rest *xg_upstream_rest(const struct xg_upstream *up);

/* The largest answer body the client takes (bigger: status 0, "too big"). */
#define XG_REST_MAX_BODY    (16 * 1024 * 1024)

/*
 * Milliseconds R still backs off for (0: not backing off), and the status
 * (429 or 418) that started it in *STATUS when STATUS is not NULL.
 */
uint64_t xg_rest_backoff_ms(const struct xg_rest *r, int *status);

/* The conf's rest_cache: how long the front keeps exchangeInfo (0: off). */
uint64_t xg_rest_cache_ms(const struct xg_rest *r);

/* ---- the REST front: `listen ADDR http upstream=NAME;` ---- */

struct xg_rest_front;
struct evconnlistener;
struct xg_venue;

/*
 * Serves HTTP on EVL (takes ownership: freed with the front) for the
 * upstream UP (borrowed; must outlive the front), whose venue VENUE (may
 * be NULL) with instance VP answers what it can itself (rest_local in
 * src/xg_venue.h); the rest is proxied through xg_upstream_rest(UP),
 * exchangeInfo cached for the upstream's rest_cache. NAME is the
 * listener's address, for logs. NULL (logged) when it cannot be made;
 * EVL is freed then too.
 */
struct xg_rest_front *xg_rest_front_new(struct event_base *base,
    struct evconnlistener *evl, struct xg_upstream *up,
    const struct xg_venue *venue, void *vp, const char *name);
/*
 * Closes F's listener and every connection at once (answers in flight
 * are dropped, their GETs cancelled), then frees F. NULL is fine.
 */
void xg_rest_front_free(struct xg_rest_front *f);
/* Adds F's counters (requests, by status class, cached, ...) to OBJ. */
void xg_rest_front_status(const struct xg_rest_front *f, json_t *obj);

#endif
