/*
 * xg_rconn.h: one Redis connection on the event loop (hiredis' async
 * context with its libevent adapter: no thread), kept up: it connects,
 * sends AUTH when a password is set, bounds both by connect_timeout, and
 * after a failure reconnects through an upstream's reconnect policy
 * (src/xg_reconnect.h: reconnect, stable, breaker, max_attempts) on a
 * supervisor of its own. The publisher (xg_redis.c), the core's request
 * reader and the edge (modules/venue/xg_venue_edge.c) are built on it.
 *
 * The owner sends its commands on the context on_ready gives, until
 * on_down; xg_rconn_ctx() is NULL meanwhile. Replies of a context that
 * went away come back NULL (hiredis calls every pending callback when it
 * frees a context), with ac->data NULL: a callback checks that first.
 * A context is only made from a timer or xg_rconn_start(), never inside
 * a hiredis callback, so the replies of two contexts never interleave.
 *
 * Log lines are "PREFIX: connected (auth ok)", "PREFIX: connection lost:
 * REASON; retry in 100ms" (plus what the owner's note adds).
 */
#ifndef XG_RCONN_H
#define XG_RCONN_H

#include "xg_core.h"
#include "xg_conf.h"

#include <stdint.h>

#include <jansson.h>

struct event_base;
struct redisAsyncContext;
struct xg_rconn;

enum xg_rconn_state {
    XG_RCONN_DOWN = 0,      /* waiting for the retry timer, or given up */
    XG_RCONN_CONNECTING,
    XG_RCONN_AUTH,
    XG_RCONN_READY,
    XG_RCONN_OFF            /* stopped by its owner */
};

struct xg_rconn_cbs {
    /* Connected (for rediss://, the TLS handshake and certificate check
       done; and authenticated): AC takes commands until on_down. */
    void  (*on_ready)(void *arg, struct redisAsyncContext *ac);
    /*
     * The connection went down, or an attempt failed, for REASON (the
     * next attempt is scheduled, or given up: xg_rconn_gave_up()).
     * Called for every failure, whether on_ready came first or not.
     * May be NULL.
     */
    void  (*on_down)(void *arg, const char *reason);
    /*
     * Appends to the retry log line, e.g. " (12 dropped so far)" (at most
     * LEN bytes with the NUL). May be NULL.
     */
    void  (*note)(void *arg, char *buf, size_t len);
};

/*
 * A connection to ADDR (copied) with PASSWORD (copied; NULL: no AUTH),
 * its timeouts and policy from UC (borrowed; see xg_rconn_reconf), log
 * lines prefixed with PREFIX (copied). Not connecting yet. Never NULL.
 */
struct xg_rconn *xg_rconn_new(struct event_base *base, const char *prefix,
    const struct xg_addr *addr, const char *password,
    const struct xg_upstream_conf *uc, const struct xg_rconn_cbs *cbs,
    void *arg);
/*
 * rediss://: with TLS 1, each attempt goes through a TLS tunnel
 * (xg_rtls.h), the chain checked against TLS_CA (copied; NULL: the
 * system store) and the host, unless TLS_VERIFY is 0. From the next
 * attempt on.
 */
void xg_rconn_set_tls(struct xg_rconn *rc, int tls, const char *tls_ca,
    int tls_verify);
/*
 * With ON, each context parses its replies with xg_rreply's functions
 * (one block per reply, xg_rreply.h): for a connection whose replies are
 * large trees, the edge's XREAD. From the next attempt on.
 */
void xg_rconn_set_block_replies(struct xg_rconn *rc, int on);
/* Drops the connection (no on_down) and frees RC. NULL is fine. */
void xg_rconn_free(struct xg_rconn *rc);
/* Connects now (again, after a stop or a give-up; attempts start anew). */
void xg_rconn_start(struct xg_rconn *rc);
/* Drops the connection with no on_down and connects no more: OFF. */
void xg_rconn_stop(struct xg_rconn *rc);
/*
 * The owner gives up on this connection for REASON (an error reply it
 * cannot live with, a read that never came back): dropped, on_down,
 * and the next attempt after the policy's delay, logged at LEVEL.
 */
void xg_rconn_fail(struct xg_rconn *rc, int level, const char *reason);
/* New timeouts and policy from UC (borrowed), a new target: */
void xg_rconn_reconf(struct xg_rconn *rc, const struct xg_upstream_conf *uc);
/*
 * Whether ADDR and PASSWORD are RC's target; xg_rconn_retarget() makes
 * them so and, when they were not, reconnects at once.
 */
int xg_rconn_same(const struct xg_rconn *rc, const struct xg_addr *addr,
    const char *password);
void xg_rconn_retarget(struct xg_rconn *rc, const struct xg_addr *addr,
    const char *password);

/* The context while READY, else NULL. */
struct redisAsyncContext *xg_rconn_ctx(const struct xg_rconn *rc);
enum xg_rconn_state xg_rconn_state(const struct xg_rconn *rc);
/* "connected", "connecting", "authenticating", "disconnected",
   "gave_up", "off", as in /status. */
const char *xg_rconn_state_name(const struct xg_rconn *rc);
int xg_rconn_gave_up(const struct xg_rconn *rc);
/* "HOST:PORT" (an IPv6 address in brackets). */
const char *xg_rconn_where(const struct xg_rconn *rc);
/* The last failure's text ("" when the last attempt succeeded). */
const char *xg_rconn_last_error(const struct xg_rconn *rc);
/* Connections that became ready, attempts made, ready ones lost. */
uint64_t xg_rconn_connects(const struct xg_rconn *rc);
uint64_t xg_rconn_attempts(const struct xg_rconn *rc);
uint64_t xg_rconn_disconnects(const struct xg_rconn *rc);
/* Error replies to AUTH (counted by the owner for the others). */
uint64_t xg_rconn_auth_errors(const struct xg_rconn *rc);

/* OpenSSL's CSPRNG as 64 bits (epochs, ids, the policy's jitter). */
uint64_t xg_rconn_rand(void *arg);

#endif
