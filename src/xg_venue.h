/*
 * xg_venue.h: a venue is what exgate knows of one exchange's protocol
 * (modules/venue/xg_venue_<exchange>*.c, listed in xg_venues[] in
 * src/xg_module.c; `protocol NAME;` picks one per upstream). This is the
 * interface between an upstream (layer 1: the connections, their state
 * machine and reconnect policy, src/xg_upstream.c) and the venue that
 * runs on it (layer 2: auth, heartbeats, subscriptions, request routing).
 * A venue with session state builds on the exchange-independent session
 * engine (src/xg_session.h: restore runner, request table, subscription
 * engine, client channels, fan-out) and the continuity trackers
 * (src/xg_track.h), and supplies only what is the exchange's: how its
 * messages read, how requests and subscribes are written, its restore
 * steps, its client methods, its directives and limits. The raw venue
 * (modules/venue/xg_venue_raw.c) is the smallest example.
 *
 * The upstream owns the connections and calls the module on each event,
 * naming the connection (struct xg_conn) it is about. The module never
 * touches sockets or wslay: it sends through xg_upstream_send() (on the
 * primary) or xg_upstream_send_on() (on one connection), and reports with
 * xg_upstream_restored(), xg_upstream_fail(), and for a rotation
 * xg_upstream_promote() and xg_upstream_retire().
 *
 * Connections. An upstream has at most one PRIMARY connection (the one
 * its state machine, its reconnects and xg_upstream_send() are about) and
 * at most one other at a time: a ROTATING one, opened beside a READY
 * primary by xg_upstream_rotate() to replace it (make before break), or a
 * RETIRING one, the primary it replaced, open until the module retires it.
 * Every connection has its own id from the upstream's increasing counter.
 * The module gets on_open(c) and then exactly one on_down(c) for every
 * connection, on_message(c) only between the two; a connection pointer
 * is valid from on_open until on_down returns, never after.
 */
#ifndef XG_VENUE_H
#define XG_VENUE_H

#include "xg_core.h"
#include "xg_conf.h"

#include <jansson.h>

struct xg_upstream;
struct xg_log_ctx;
struct xg_client;
struct xg_conn;
struct xg_ws;
struct xg_ws_opts;
struct xg_ws_cbs;

/* What a connection is to its upstream (see above). */
enum xg_conn_role {
    XG_CONN_PRIMARY = 0,
    XG_CONN_ROTATING,   /* opened to replace the primary, not promoted yet */
    XG_CONN_RETIRING    /* replaced by a promoted one, closing soon */
};

#define XG_VENUE_TRUSTS  1
#define XG_VENUE_PUBLIC  2

struct xg_venue {
    const char               *name;         /* as in `protocol NAME;` */
    /*
     * Its upstream directives (context XG_CONF_UPSTREAM). They are valid
     * only on an upstream whose `protocol` is this module; their setters
     * get the object create_conf made, never the upstream's conf.
     */
    const struct xg_command  *commands;
    /*
     * Makes the module's per-upstream conf with its defaults and registers
     * its free with xg_conf_cleanup_add(). Called once for each upstream
     * of this protocol, at the end of its block; stored in its
     * proto_conf. Required when commands is not NULL.
     */
    void *(*create_conf)(struct xg_conf *cf);

    /* Per-upstream instance, built from the conf at start-up. */
    void *(*create)(struct xg_upstream *up,
        const struct xg_upstream_conf *conf);
    void  (*destroy)(void *p);

    /*
     * Connection C is open. A PRIMARY one (upstream state RESTORING):
     * replay the session, then call xg_upstream_restored(), or
     * xg_upstream_fail(). A ROTATING one (only when `rotates` is 1; the
     * primary stays READY and keeps serving): replay the session on C with
     * xg_upstream_send_on(C), switch to it, then xg_upstream_promote(C);
     * or give up with xg_upstream_retire(C). NULL: the upstream is ready
     * as soon as a connection opens.
     */
    void  (*on_open)(void *p, struct xg_conn *c);
    /* One complete message from the exchange on C. */
    void  (*on_message)(void *p, struct xg_conn *c, const unsigned char *data,
        size_t len);
    /*
     * C is gone (its role says which it was). A PRIMARY: a reconnect
     * follows (or the stop, or a rotating connection may take over, see
     * xg_upstream_rotate()). A ROTATING: the rotation failed, the primary
     * is untouched. A RETIRING: its orderly close is done. Every request
     * still in flight on C has an unknown outcome.
     */
    void  (*on_down)(void *p, struct xg_conn *c, const char *reason);
    /*
     * Orderly stop: the module may send a last message (a logout that
     * does not trigger cancel-on-disconnect) before the close.
     */
    void  (*on_stop)(void *p);
    /* Adds this module's fields to the upstream's /status object. */
    void  (*status)(void *p, json_t *obj);

    /*
     * The gateway side (src/xg_client.c): local clients of a listener on
     * this upstream. NULL when the module serves no clients. client_open
     * returns the module's per-client state CS; client_message gets each
     * complete message; client_close is called exactly once when the
     * client is gone (CS must not be used afterwards).
     */
    void *(*client_open)(void *p, struct xg_client *c);
    void  (*client_message)(void *p, void *cs, const unsigned char *data,
        size_t len);
    void  (*client_close)(void *p, void *cs, const char *reason);
    /*
     * What a TCP client whose line is over client_max_message gets before
     * the close, in the protocol's own words (NULL: nothing).
     */
    const char *client_too_big;

    /*
     * The path a WebSocket listener on this protocol accepts when its
     * `listen` line has no path= (a trailing '*' matches any suffix; a
     * query string is never part of the match). NULL: any path.
     */
    const char               *default_path;
    /*
     * XG_VENUE_TRUSTS when the module cannot authenticate local clients
     * in band, so that every client of its listeners is trusted: a
     * listener on it must then say client_auth=off (or inherit
     * `client_auth off;`). XG_VENUE_PUBLIC when it serves public data
     * only, so that there is nothing to authenticate and client_auth does
     * not apply. 0: it authenticates them.
     */
    int                       trusts_clients;

    /*
     * Its directives for `exgate -T`, given the object create_conf made
     * (NULL: generic setters only). Never writes a secret's value.
     */
    xg_conf_dump_cb dump;

    /*
     * 1 when the module restores a session on a ROTATING connection (see
     * on_open) and promotes it; 0: a rotation's new connection is closed
     * as soon as it opens, with a log line, and the module never hears of
     * it (the rotation counts as failed and is not retried).
     */
    int                       rotates;

    /*
     * A reload replaced the upstream's conf with CONF (the same name and
     * protocol, one that reconf_check() accepted; the old conf is freed
     * after this returns): point whatever the instance kept of the old
     * conf at CONF. Limits apply from the next event that uses them,
     * credentials from the next connection's restore (a rotation's, when
     * they changed). Cannot fail: what the instance cannot follow,
     * reconf_check() refuses before anything changes. NULL, for a module
     * with a create(): it follows no change (the reload restarts the
     * upstream).
     */
    void  (*reconf)(void *p, const struct xg_upstream_conf *conf);

    /*
     * The REST front (`listen ... http upstream=NAME;`, src/xg_rest.c):
     * a GET of PATH (percent-decoded, no query) with QUERY (the raw query
     * string without '?', NULL: none) answered from the module's own
     * state (Binance: /api/v3/depth from the gateway's book). Returns the
     * JSON body (malloc'd, *LEN bytes) for a 200, or NULL to proxy the
     * request to the upstream's rest_url. NULL hook: every request is
     * proxied.
     */
    char *(*rest_local)(void *p, const char *path, const char *query,
        size_t *len);

    /*
     * A new connection of the upstream (a first attempt, a reconnect, a
     * rotation) is about to be made: 0 to go ahead (the module counts
     * it), or the milliseconds to wait before asking again (Binance: 300
     * connections per 5 minutes). A reconnect waits that long; a rotation
     * is refused and retried later. NULL: no budget.
     */
    uint64_t (*connect_take)(void *p);

    /*
     * The module's directives (NULL-terminated; NULL: none) whose change
     * a reload cannot apply to the running instance: the upstream is
     * restarted instead (its clients closed with 1001).
     */
    const char *const        *restart_names;

    /*
     * max_connection_age for an upstream of this protocol whose block
     * does not set it (0: none): Binance closes every connection at 24 h.
     */
    uint64_t                  max_connection_age_ms;

    /*
     * A module that is its own transport (issue 17's edge: the
     * "exchange" is a core exgate behind Redis Streams): makes connection
     * C's link (xg_ws_link_new() with OPTS, CBS and ARG, which the upstream
     * gives as for a WebSocket) and returns it; the upstream then treats
     * it as any connection. Its upstreams take a redis:// url. NULL: the
     * upstream opens a WebSocket to its url.
     */
    struct xg_ws *(*connect)(void *p, struct xg_conn *c,
        const struct xg_ws_opts *opts, const struct xg_ws_cbs *cbs,
        void *arg);

    /*
     * Whether the instance can follow CONF, a reload's new conf for its
     * upstream, in place: XG_OK, or XG_ERROR when what it was built for
     * changed (the reload then restarts the upstream instead, its clients
     * closed with 1001). Asked while the reload is planned, before
     * anything changes; answers from CONF and from what the instance was
     * built with, never from its run-time state, so that the answer still
     * holds when reconf() follows. Changes nothing, logs nothing. NULL:
     * it can follow any conf.
     */
    int   (*reconf_check)(void *p, const struct xg_upstream_conf *conf);
};

/* The protocol modules compiled in (NULL-terminated). */
extern const struct xg_venue *const xg_venues[];
const struct xg_venue *xg_venue_find(const char *name);

/* ---- what an upstream offers its protocol module (src/xg_upstream.c) ---- */

/*
 * Sends one text message on the primary connection. XG_ERROR when there
 * is none, or it is not open.
 */
int xg_upstream_send(struct xg_upstream *up, const void *data, size_t len);
/*
 * Sends one text message on connection C, whatever its role. XG_ERROR
 * when C is not open (a retired one closing included).
 */
int xg_upstream_send_on(struct xg_conn *c, const void *data, size_t len);
/* Restore done on the primary: RESTORING -> READY. */
void xg_upstream_restored(struct xg_upstream *up);
/*
 * A protocol-level failure of the primary (heartbeat missed, auth
 * refused): reconnect. For another connection use xg_upstream_retire().
 */
void xg_upstream_fail(struct xg_upstream *up, const char *reason);
int xg_upstream_is_ready(const struct xg_upstream *up);
const char *xg_upstream_name(const struct xg_upstream *up);
/* The id of the primary connection (or of the last attempt at one). */
unsigned xg_upstream_conn_id(const struct xg_upstream *up);

/*
 * Make-before-break rotation. Starts opening a second connection
 * (ROTATING) beside the primary, which keeps serving; WHY ("admin",
 * "max_connection_age 1h") goes in the log. Allowed only when the
 * upstream is READY, no other connection exists and it is not stopping;
 * otherwise XG_ERROR, logged, and nothing changes. The module then gets
 * on_open(C) for the new connection (or, if it fails before opening,
 * nothing: the failure is logged and counted). A rotation that fails
 * (the new connection goes down, misses a deadline, or is retired before
 * it is promoted) leaves the primary untouched and is tried again after
 * the reconnect policy's delay, with its own backoff.
 *
 * If the primary goes down while the ROTATING connection is alive, the
 * module gets on_down(primary) as for any drop and the upstream goes
 * DOWN, but its reconnect waits: the module may finish the restore on
 * the rotating connection and promote it, which makes it the primary and
 * the upstream READY again (logged "down -> ready (rotation #N took
 * over)"); if the rotating connection fails or is retired instead, the
 * reconnect starts at once (or when the policy's delay is over).
 */
int xg_upstream_rotate(struct xg_upstream *up, const char *why);
/*
 * The module has switched everything to C, a ROTATING connection whose
 * session it has restored: C becomes the PRIMARY (sends go to it, the
 * upstream stays READY), and the old primary, if still there, becomes
 * RETIRING: still open, its messages still delivered, until the module
 * calls xg_upstream_retire() for it (once its requests in flight are
 * answered or timed out). Logged with both ids. Ignored (logged) unless C
 * is the upstream's ROTATING connection and open.
 */
void xg_upstream_promote(struct xg_upstream *up, struct xg_conn *c);
/*
 * Closes C, a RETIRING or ROTATING connection, with WebSocket code 1000
 * and WHY as the reason. Messages that arrive before the peer answers
 * are still delivered; on_down(C) follows when the close is done or
 * close_timeout passed. Retiring a ROTATING connection abandons its
 * rotation (counted as failed, tried again later). Ignored (logged) for
 * the PRIMARY (use xg_upstream_fail()) or a connection already closing.
 */
void xg_upstream_retire(struct xg_upstream *up, struct xg_conn *c,
    const char *why);

/* C's id: unique per upstream, increasing with every connection made. */
unsigned xg_conn_id(const struct xg_conn *c);

/*
 * The log entry points for lines about an upstream: each writes
 * "upstream NAME#ID: " (text) or the upstream and connection fields
 * (json) before the message, ID being UP's primary connection's (or its
 * last attempt's) for xg_upstream_log() and C's for xg_conn_log(), so that
 * a line about a rotating or retiring connection names that one. NULL UP
 * or C logs without the prefix.
 */
void xg_upstream_log(int level, const struct xg_upstream *up,
    const char *fmt, ...) __attribute__((format(printf, 3, 4)));
void xg_conn_log(int level, const struct xg_conn *c, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/*
 * Fills CTX (every field cleared first) with UP's name and primary
 * connection id, or C's upstream name and C's id, for a line that names
 * more (a client, a request: see xg_log_at()).
 */
void xg_upstream_log_ctx(const struct xg_upstream *up, struct xg_log_ctx *ctx);
void xg_conn_log_ctx(const struct xg_conn *c, struct xg_log_ctx *ctx);
/* C's role now (it changes on promote). */
enum xg_conn_role xg_conn_role(const struct xg_conn *c);
/*
 * When C last brought a message: xg_now_ms() as of the read it came in;
 * C NULL (a message fed with no connection: tests, fuzzing): now.
 */
uint64_t xg_conn_rx_ms(const struct xg_conn *c);
/* "primary", "rotating", "retiring", as in logs and /status. */
const char *xg_conn_role_name(enum xg_conn_role r);
/* The upstream C belongs to. */
struct xg_upstream *xg_conn_upstream(const struct xg_conn *c);
struct event_base *xg_upstream_base(const struct xg_upstream *up);
struct evdns_base *xg_upstream_dns(const struct xg_upstream *up);
/*
 * New connections of UP go to URL (borrowed: it must outlive UP or the
 * next call; NULL: the conf's url again): for a module that connects to
 * a route under the host its conf names (Binance USDⓈ-M's /public).
 */
struct xg_url;
void xg_upstream_set_url(struct xg_upstream *up, const struct xg_url *url);
void *xg_upstream_proto(const struct xg_upstream *up);
/*
 * The conf UP runs on now (a reload replaces it: read it again, do not
 * keep it past the next reconf).
 */
const struct xg_upstream_conf *xg_upstream_conf_of(
    const struct xg_upstream *up);

#endif
