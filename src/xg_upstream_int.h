/*
 * xg_upstream_int.h: the insides of an upstream and its connections,
 * shared by src/xg_upstream.c (the state machine, the connections and
 * their rotation, the set) and src/xg_upstream_status.c (its /status
 * object) and by nobody else.
 */
#ifndef XG_UPSTREAM_INT_H
#define XG_UPSTREAM_INT_H

#include "xg_core.h"
#include "xg_conf.h"
#include "xg_venue.h"
#include "xg_reconnect.h"
#include "xg_upstream.h"
#include "xg_io.h"
#include "xg_timer.h"

#include <event2/event.h>

struct xg_ws;

/*
 * Why a connection ended, or an attempt failed, in a few fixed classes
 * that /status and /metrics count (the full text stays in last_error).
 * The order is the order of the names in xg_upstream_status.c.
 */
enum up_why {
    UP_WHY_CLOSED = 0,  /* the exchange sent a close frame */
    UP_WHY_LOST,        /* eof or a socket error, no close frame */
    UP_WHY_TIMEOUT,     /* a deadline: connect, handshake, ping, idle, ... */
    UP_WHY_CONNECT,     /* the tcp connect failed (refused, unreachable) */
    UP_WHY_DNS,
    UP_WHY_TLS,
    UP_WHY_HTTP,        /* the upgrade was answered without 101 */
    UP_WHY_PROTOCOL,    /* the protocol module failed the connection */
    UP_WHY_STOP,        /* our orderly stop */
    UP_WHY_ERROR,       /* anything else */
    UP_WHY_N
};

/*
 * The upper bounds (ms) of the restore duration histogram's buckets, as
 * Prometheus' default buckets for a latency from a few ms to the
 * restore_timeout's order of magnitude; one more bucket counts the rest.
 */
#define XG_UP_RESTORE_LE_N     12
#define XG_UP_RESTORE_BUCKETS  (XG_UP_RESTORE_LE_N + 1)
extern const unsigned xg_upstream_restore_le_ms[XG_UP_RESTORE_LE_N];

/* Where a connection is in its life, as /status shows it. */
enum up_conn_state {
    UP_CONN_CONNECTING = 0,     /* dns and tcp connect */
    UP_CONN_TLS,
    UP_CONN_HANDSHAKE,
    UP_CONN_RESTORING,          /* open: the module replays its session */
    UP_CONN_READY,
    UP_CONN_CLOSING             /* close 1000 sent: waiting for the peer */
};

/* "connecting", ... "closing", in the order of enum up_conn_state. */
extern const char *const xg_conn_state_names[];

/*
 * One WebSocket connection of an upstream (see xg_venue.h). Owned by its
 * upstream, which frees it when its transport is over; its timers go
 * with it, so they may point at it.
 */
struct xg_conn {
    struct xg_upstream     *up;
    unsigned                id;
    enum xg_conn_role       role;
    enum up_conn_state      state;
    uint64_t                opened_ms;     /* the WebSocket open; 0 before */
    uint64_t                last_data_ms;
    unsigned                rotation;      /* the last one it was part of */
    unsigned                gen;           /* the upstream's conf_gen when
                                              it connected */
    struct xg_ws           *ws;            /* NULL once detached */
    int                     proto_opened;  /* on_open ran: on_down is owed */
    struct xg_timer        *ev_deadline;   /* connect, handshake, restore,
                                              close */
    struct xg_timer        *ev_age;        /* max_connection_age (primary) */
    char                    log_name[320]; /* "upstream u#13" */
};

/*
 * Sockets given up on whose polite close still runs: the old primary's
 * (dropped before the next attempt) and the other connection's (dropped
 * before the next rotation).
 */
enum { UP_PARK_PRIMARY = 0, UP_PARK_OTHER, UP_PARK_N };

struct xg_upstream {
    const struct xg_upstream_conf  *conf;      /* replaced by a reload */
    char                           *name;      /* its own copy: stays */
    struct event_base              *base;
    struct evdns_base              *dns;
    const struct xg_url            *url;       /* NULL: the conf's */
    int                             budget_logged; /* connect_take said
                                                      wait, logged */
    uint64_t                        budget_waits;  /* attempts it held */
    const struct xg_venue   *proto;     /* NULL: none (unit tests) */
    void                           *proto_p;
    struct xg_rest                 *rest;      /* made once a conf has a
                                                  rest_url (xg_rest.h) */
    struct xg_redis                *pub;       /* made once a conf has a
                                                  publish (xg_redis.h) */

    enum xg_upstream_state          state;     /* the primary's, or down ... */
    uint64_t                        state_since_ms;
    unsigned                        last_id;   /* the last connection made */
    unsigned                        primary_id;/* the primary's, or the last
                                                  attempt at one; 0 before */
    char                            log_name[320];

    struct xg_conn                 *primary;   /* NULL: none (down, idle) */
    struct xg_conn                 *other;     /* rotating or retiring */
    struct xg_ws                   *parked[UP_PARK_N];

    struct xg_reconnect             rc;
    struct xg_timer                *ev_retry;
    struct xg_timer                *ev_stable;
    struct xg_timer                *ev_idle;
    uint64_t                        retry_at_ms;
    int                             retry_held; /* a rotating connection
                                                   may take over first */
    int                             gave_up;

    /* rotation: its own backoff, so that it never touches the primary's */
    struct xg_reconnect             rot_rc;
    struct xg_timer                *ev_rotate;  /* the retry after a failure */
    unsigned                        rot_n;      /* rotations started */
    uint64_t                        rot_started_ms;
    char                            rot_why[96];
    unsigned                        rot_retries;/* failed in a row */
    unsigned                        rot_due_for;/* a rotation is wanted for
                                                   this primary id (age,
                                                   retry); 0: none */
    int                             rot_due_retry;

    /*
     * Bumped by a reload that changed what a connection is made with
     * (url, tls_*, header, auth): a primary of an older generation is
     * rotated (or reconnected) once it can be.
     */
    unsigned                        conf_gen;
    char                            conf_why[160];

    uint64_t                        connects;
    uint64_t                        disconnects;
    uint64_t                        reconnect_attempts;
    uint64_t                        rotations;  /* done (promoted) */
    uint64_t                        rotations_failed;
    uint64_t                        messages_in;
    uint64_t                        bytes_in;
    struct xg_io_stats              io;         /* socket reads, of every
                                                   connection */
    uint64_t                        disconnects_by[UP_WHY_N];
    uint64_t                        connect_failures_by[UP_WHY_N];
    uint64_t                        restore_hist[XG_UP_RESTORE_BUCKETS];
    uint64_t                        restore_ms_sum;
    char                            last_error[256];

    int                             stopping;
    xg_upstream_stopped_cb          stopped_cb;
    void                           *stopped_arg;

    struct xg_upstream_set         *set;        /* NULL: in none */
    struct xg_upstream             *next;       /* in the set */
};

/* The upstreams of one running configuration (see xg_upstream.h). */
struct xg_upstream_set {
    struct xg_upstream             *first;      /* in conf order */
    unsigned                        stop_pending;
    xg_upstream_stopped_cb          stop_cb;
    void                           *stop_arg;
};

/* The URL of UP in BUF, without its query, which may carry credentials. */
void xg_upstream_url(const struct xg_upstream *up, char *buf, size_t len);

#endif
