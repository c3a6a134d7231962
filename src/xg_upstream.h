/*
 * xg_upstream.h: one supervised upstream (layer 1 of DESIGN.md section
 * 2): the state machine of its primary connection, the one owner of
 * reconnection for its upstream, built on the WebSocket transport
 * (src/xg_ws.h) and a reconnect policy (src/xg_reconnect.h); and the
 * make-before-break rotation of that connection (a second one opened
 * beside it, see xg_upstream_rotate() in src/xg_venue.h).
 *
 *   idle -> connecting -> tls -> handshake -> restoring -> ready
 *   any --error/close/timeout--> down --policy delay--> connecting
 *   down --breaker trips--> open --cool-down--> connecting (one trial)
 *   any --stop--> stopping --close 1000 or deadline--> idle
 *   ready --rotation: the new connection promoted--> ready (no change)
 *
 * What it offers the protocol module running on it is declared in
 * src/xg_venue.h (xg_upstream_send, xg_upstream_restored, ...).
 */
#ifndef XG_UPSTREAM_H
#define XG_UPSTREAM_H

#include "xg_core.h"
#include "xg_conf.h"

#include <event2/dns.h>
#include <event2/event.h>
#include <jansson.h>

struct xg_upstream;

enum xg_upstream_state {
    XG_UP_IDLE = 0,
    XG_UP_CONNECTING,   /* dns and tcp connect */
    XG_UP_TLS,
    XG_UP_HANDSHAKE,    /* http upgrade */
    XG_UP_RESTORING,    /* the protocol module replays its session */
    XG_UP_READY,
    XG_UP_DOWN,         /* waiting for the policy's delay (or given up) */
    XG_UP_OPEN,         /* breaker open: waiting for the cool-down */
    XG_UP_STOPPING      /* orderly stop: close 1000 sent */
};

/* Called once when an upstream's orderly stop is complete. */
typedef void (*xg_upstream_stopped_cb)(void *arg);

/*
 * Builds an upstream from CONF (borrowed: it must outlive the upstream)
 * and its protocol module instance, in no set (xg_upstream_set_add()
 * puts it in one). Borrows BASE and DNS. Nothing connects until
 * xg_upstream_start(). Returns NULL (and logs) when the protocol module
 * refuses to start.
 */
struct xg_upstream *xg_upstream_create(struct event_base *base,
    struct evdns_base *dns, const struct xg_upstream_conf *conf);

/*
 * The same with PROTO (NULL: none, messages are discarded) as its
 * protocol module instead of the one the conf names: how the unit tests
 * run a protocol module of their own through the real state machine.
 */
struct xg_venue;
struct xg_upstream *xg_upstream_create_proto(struct event_base *base,
    struct evdns_base *dns, const struct xg_upstream_conf *conf,
    const struct xg_venue *proto);

/* IDLE -> CONNECTING: the first attempt starts on the next loop turn. */
void xg_upstream_start(struct xg_upstream *up);

/*
 * Orderly stop: the protocol module's on_stop() runs first (it may send
 * a last message), then the connection is closed with 1000 and CB(ARG)
 * is called once the peer answered or close_timeout passed (at once when
 * no connection is open). No reconnect follows.
 */
void xg_upstream_stop(struct xg_upstream *up, xg_upstream_stopped_cb cb,
    void *arg);

/*
 * Drops the connection at once and frees UP and its protocol instance
 * (and takes UP out of its set).
 */
void xg_upstream_free(struct xg_upstream *up);

enum xg_upstream_state xg_upstream_state(const struct xg_upstream *up);
const char *xg_upstream_state_name(enum xg_upstream_state s);

/*
 * Returns UP's /status object (new reference): name, state, url,
 * connection_id, connects, disconnects, reconnect_attempts, breaker,
 * breaker_trips,
 * last_error, state_since_s, messages_in, bytes_in, reads and
 * read_bytes (socket reads, TLS records included), disconnect_reasons
 * and connect_failure_reasons (a count per class: closed, lost, timeout,
 * connect, dns, tls, http, protocol, stop, error), restore_seconds (the
 * restore duration histogram: le, cumulative counts, sum, count),
 * rotations (done: a new connection promoted), rotations_failed,
 * connections (a list of {id, role, state, age_s}: the primary first,
 * then the rotating or retiring one; state is connecting, tls,
 * handshake, restoring, ready or closing; age_s counts from the
 * WebSocket open, 0 before it), and the protocol module's own fields.
 */
json_t *xg_upstream_status(const struct xg_upstream *up);

/* What xg_upstream_rotate_start() started. */
struct xg_rotation {
    unsigned n;         /* the Nth rotation started on this upstream */
    unsigned from;      /* the primary's connection id */
    unsigned to;        /* the new connection's id */
};

/*
 * xg_upstream_rotate() (src/xg_venue.h) for callers that need to know
 * what happened (the admin endpoint): on XG_OK writes the rotation to *R
 * (may be NULL); on XG_ERROR writes why it cannot start ("not ready
 * (state down)", "rotation #3 in progress", ...) to ERR (LEN bytes, may
 * be NULL). Logs either way.
 */
int xg_upstream_rotate_start(struct xg_upstream *up, const char *why,
    struct xg_rotation *r, char *err, size_t len);

/* ---- every upstream of a conf ---------------------------------------- */

/*
 * The upstreams of one running configuration, in conf order: what the
 * listeners and the admin endpoint of that configuration look upstreams
 * up in. Owned by whoever runs the configuration (exgate.c); a reload
 * builds a second set beside the running one, so nothing here is global.
 */
struct xg_upstream_set;

/* An empty set (freed with xg_upstream_free_all()). */
struct xg_upstream_set *xg_upstream_set_new(void);

/* Puts UP (in no set yet) last in SET, which owns it from now on. */
void xg_upstream_set_add(struct xg_upstream_set *set, struct xg_upstream *up);

/*
 * A reload: UP runs on CONF from now on (the same name and protocol;
 * borrowed, it must outlive UP or the next reconf), and the conf it ran
 * on may be freed once this returns. Reconnect policy, breaker, timeouts
 * and the module's limits apply from the next event that uses them.
 * RECONNECT_WHY not NULL ("reload: url changed") says that what a
 * connection is made with changed: new connections use CONF, and the
 * primary is replaced by a make-before-break rotation as soon as the
 * upstream is ready with no other connection (a reconnect, logged, when
 * its protocol cannot rotate). Returns XG_ERROR, with nothing changed,
 * when xg_upstream_reconf_check() says no (the caller restarts the
 * upstream); otherwise it cannot fail.
 */
int xg_upstream_reconf(struct xg_upstream *up,
    const struct xg_upstream_conf *conf, const char *reconnect_why);

/*
 * Whether xg_upstream_reconf(UP, CONF) would take CONF: XG_OK, or
 * XG_ERROR when UP's protocol module cannot follow it in place (it has
 * no reconf, or its reconf_check refuses CONF). Changes nothing; asked by
 * a reload before it commits to its plan, so that the answer cannot
 * change before the reconf.
 */
int xg_upstream_reconf_check(const struct xg_upstream *up,
    const struct xg_upstream_conf *conf);

/*
 * Takes UP out of its set (if any), for a reload that removes it: the
 * caller owns it from now on, stops it and frees it.
 */
void xg_upstream_set_remove(struct xg_upstream *up);

/* SET's upstream called NAME, or NULL. */
struct xg_upstream *xg_upstream_find(const struct xg_upstream_set *set,
    const char *name);

/*
 * Creates an upstream for each in MC, in SET, and starts them. XG_ERROR
 * (logged) if any failed; those made stay in SET.
 */
int xg_upstream_start_all(struct xg_upstream_set *set, struct event_base *base,
    struct evdns_base *dns, const struct xg_main_conf *mc);

/* Stops every upstream of SET; CB(ARG) runs once when all have stopped. */
void xg_upstream_stop_all(struct xg_upstream_set *set,
    xg_upstream_stopped_cb cb, void *arg);

/* Frees every upstream of SET, then SET (NULL is fine). */
void xg_upstream_free_all(struct xg_upstream_set *set);

/* A JSON array of the status object of each of SET (new reference). */
json_t *xg_upstream_status_all(const struct xg_upstream_set *set);

#endif
