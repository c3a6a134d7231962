/*
 * xg_registry.h: the gateway's session state for one upstream, and
 * nothing else (DESIGN.md §8: no sockets, no timers).
 *
 * - channels: refcounted by their subscriber sets, with the upstream
 *   state pending (subscribe sent or to send), confirmed, unsubscribing;
 * - clients: each local client's channels, its subscribe requests still
 *   waiting for the exchange, the open orders it placed (for its own
 *   cancel-on-disconnect);
 * - requests: in flight upstream (keyed by the fresh upstream id, with the
 *   client and the client's own id as raw JSON text), and queued while the
 *   upstream is not ready (FIFO).
 *
 * The protocol module drives it and does all I/O and timing. Clients are
 * the module's opaque OWNER pointers; the registry never dereferences them.
 */
#ifndef XG_REGISTRY_H
#define XG_REGISTRY_H

#include "xg_core.h"
#include "xg_timer.h"

#include <stddef.h>
#include <stdint.h>

struct event;
struct xg_client;

enum xg_chan_state {
    XG_CHAN_PENDING = 1,     /* not (yet) confirmed upstream */
    XG_CHAN_CONFIRMED,       /* the exchange confirmed it */
    XG_CHAN_UNSUBSCRIBING    /* upstream unsubscribe in flight */
};

struct xg_reg_client;
struct xg_reg_subreq;

struct xg_reg_channel {
    char                   *name;
    enum xg_chan_state      state;
    int                     sent;        /* pending: subscribe in flight */
    int                     resubscribe; /* unsubscribing: joined again */
    struct xg_reg_client  **subs;        /* the subscriber set */
    size_t                  nsubs, subs_cap;
    struct xg_reg_subreq  **waiters;     /* subscribe requests waiting */
    size_t                  nwaiters, waiters_cap;
    uint64_t                idle_since_ms; /* when nsubs hit 0 */
    int                     in_idle;     /* on the registry's idle list */
    void                   *ext;         /* the module's (freed by the
                                            channel free callback) */
    void                   *sess;        /* the session's (freed by the
                                            session free callback) */
    /* continuity bookkeeping, the module's to set and read */
    uint64_t                confirmed_ms;  /* first confirmation (0: never):
                                              kept across a reconnect */
    uint64_t                last_data_ms;  /* last notification */
    uint32_t                retry_ms;      /* unconfirmed: current backoff */
    unsigned                retries;       /* unconfirmed: attempts so far */
    int                     unconfirmed;   /* restored but not confirmed */
    int                     stale_set;     /* stale_ms looked up */
    uint64_t                stale_ms;      /* silence bound (0: none) */
    uint64_t                stale_from_ms; /* silent since (for notices) */
    int                     no_ext;      /* the module found no ext for
                                            this name: not looked for again */
    struct xg_reg_channel  *hnext;       /* hash chain */
};

struct xg_reg_client {
    void                   *owner;
    struct xg_client       *out;         /* its connection (opaque here),
                                            for the session's fan-out */
    struct xg_reg_channel **chans;       /* this client's subscriptions */
    size_t                  nchans, chans_cap;
    struct xg_reg_subreq  **subreqs;     /* its waiting subscribe requests */
    size_t                  nsubreqs, subreqs_cap;
    char                  **orders;      /* open order ids it placed */
    size_t                  norders, orders_cap;
    uint64_t                rr_stamp;    /* the session's round robin over
                                            the budget's queue: requests
                                            served, raised to the session's
                                            clock when it starts waiting */
};

/*
 * One client subscribe request: answered once every channel in it is
 * resolved, with the channels confirmed, in request order.
 */
struct xg_reg_subreq {
    struct xg_reg_client   *client;      /* NULL once the client left */
    char                   *client_id;   /* raw JSON text of its id */
    int                     nchan;
    char                  **chan;        /* requested, in order */
    signed char            *status;      /* 0 waiting, 1 confirmed, -1 no */
    int                     outstanding;
    char                   *error;       /* an upstream error object (JSON) */
};

/* A request in flight upstream or queued. */
struct xg_reg_req {
    uint64_t                up_id;       /* 0 while queued */
    int                     kind;        /* module-defined */
    struct xg_reg_client   *client;      /* NULL: internal, or client left */
    char                   *client_id;   /* raw JSON id text, or NULL */
    char                   *method;
    char                   *text;        /* the request, with id placeholder */
    size_t                  len;
    uint64_t                deadline_ms; /* request or queue deadline */
    char                  **chan;        /* (un)subscribe batches; the
                                            module's names (order ids) */
    int                     nchan;
    uint64_t                tag;         /* module-defined (which fetch) */
    unsigned                attempts;    /* module-defined (retries sent) */
    int                     timed;       /* request_timeout applies */
    int                     nolimit;     /* queued past queue_limit and
                                            queue_timeout (must go out) */
    struct xg_timer        *ev;          /* its deadline timer, given by
                                            the session (freed with it) */
    void                   *sess;        /* the session that timed it */
    uint64_t                log_ms;      /* queued or sent then (for the
                                            log's durations); 0: neither */
    uint64_t                replay_of;   /* the id it had when its
                                            connection was lost; 0: none */
    void                   *conn;        /* in flight: the connection it
                                            was written on (opaque here) */
    int                     held;        /* in flight but not written yet:
                                            waits for the request budget */
    int                     bwaited;     /* it waited for the budget */
    unsigned                bpool;       /* its budget pool and cost (the
                                            session's, src/xg_budget.h) */
    double                  bcost;
    struct xg_reg_req      *hnext;       /* in-flight hash chain */
    struct xg_reg_req      *prev, *next; /* in-flight list or queue */
};

struct xg_registry;

/* Builds an empty registry. Never returns NULL. */
struct xg_registry *xg_registry_new(void);
/* Frees R and everything in it (clients' owners are not touched). */
void xg_registry_free(struct xg_registry *r);

/*
 * FN(ext) is called for each channel's ext pointer (when not NULL) as the
 * channel is deleted, whoever deletes it.
 */
void xg_registry_set_channel_free(struct xg_registry *r, void (*fn)(void *));
/* The same for each channel's sess pointer (src/xg_session.c's). */
void xg_registry_set_session_free(struct xg_registry *r, void (*fn)(void *));

/* ---- clients ---- */

/* Adds a client; OWNER (the venue's) and OUT (its connection, for the
   fan-out) are borrowed and opaque. */
struct xg_reg_client *xg_registry_client_new(struct xg_registry *r,
    void *owner, struct xg_client *out);
/*
 * Removes RC: leaves every channel (those left empty go on the idle list,
 * stamped with NOW_MS, so that a linger counts from the client's going),
 * detaches its waiting subscribe requests and its in-flight requests
 * (their answers will go nowhere), drops its queued requests. Frees RC.
 */
void xg_registry_client_free(struct xg_registry *r, struct xg_reg_client *rc,
    uint64_t now_ms);

/* ---- channels ---- */

struct xg_reg_channel *xg_registry_channel(struct xg_registry *r,
    const char *name);
struct xg_reg_channel *xg_registry_channel_n(struct xg_registry *r,
    const char *name, size_t len);
size_t xg_registry_nchannels(const struct xg_registry *r);
/* Calls FN for every channel (FN must not add or remove channels). */
void xg_registry_channel_foreach(struct xg_registry *r,
    void (*fn)(struct xg_reg_channel *ch, void *arg), void *arg);

/* What xg_registry_subscribe() found. */
enum xg_sub_result {
    XG_SUB_LIVE = 1,     /* confirmed upstream: answer at once */
    XG_SUB_ALREADY,      /* the client already had it: answer at once */
    XG_SUB_WAIT,         /* pending or unsubscribing: wait for it */
    XG_SUB_NEW           /* created pending: subscribe upstream */
};

/*
 * Adds RC to channel NAME's subscriber set, creating the channel (pending)
 * when it is new. *CHP receives the channel. A channel taken back from the
 * idle list is no longer idle. Returns what the caller must do, or
 * XG_ERROR when RC already holds MAX channels.
 */
int xg_registry_subscribe(struct xg_registry *r, struct xg_reg_client *rc,
    const char *name, size_t max, struct xg_reg_channel **chp);

/*
 * Removes RC from CH. Returns 1 when RC was subscribed, else 0. A channel
 * left with no subscriber goes on the idle list (NOW_MS stamps it).
 */
int xg_registry_unsubscribe(struct xg_registry *r, struct xg_reg_client *rc,
    struct xg_reg_channel *ch, uint64_t now_ms);

/* Removes RC from all its channels; returns how many. */
size_t xg_registry_unsubscribe_all(struct xg_registry *r,
    struct xg_reg_client *rc, uint64_t now_ms);

/*
 * Takes the next channel from the idle list (channels whose subscriber set
 * emptied), or NULL. Channels that got a subscriber back are skipped.
 */
struct xg_reg_channel *xg_registry_idle_next(struct xg_registry *r);
/* Puts CH back on the idle list (e.g. its linger has not run out). */
void xg_registry_idle_push(struct xg_registry *r, struct xg_reg_channel *ch);

/*
 * The exchange confirmed (CONFIRMED = 1) or refused (0) pending channel
 * CH. Confirmed: state CONFIRMED. Refused: every subscriber is removed
 * and the channel is deleted (CH is invalid afterwards). Waiting subscribe
 * requests get the channel's status; those now complete are appended to
 * DONE (caller-provided, room for CH's waiter count) and returned in
 * *NDONE; the caller answers and frees them with
 * xg_registry_subreq_free().
 */
void xg_registry_channel_resolve(struct xg_registry *r,
    struct xg_reg_channel *ch, int confirmed, const char *error,
    struct xg_reg_subreq **done, size_t *ndone);

/*
 * Answers CH's waiting subscribe requests with status CONFIRMED (1: the
 * channel is in the client's result, -1: left out) without changing the
 * channel, its state or its subscribers (e.g. a restored channel the
 * exchange refused for now: its clients, new ones included, stay
 * subscribed while the subscribe is retried). DONE and *NDONE as for
 * xg_registry_channel_resolve().
 */
void xg_registry_channel_answer_waiters(struct xg_registry *r,
    struct xg_reg_channel *ch, int confirmed, struct xg_reg_subreq **done,
    size_t *ndone);

/*
 * The upstream connection is gone: confirmed channels and subscribes in
 * flight become pending and unsent (to replay on the next connection);
 * channels being unsubscribed are deleted unless someone joined again.
 */
void xg_registry_upstream_reset(struct xg_registry *r);

/* Deletes CH (it must have no subscriber and no waiter). */
void xg_registry_channel_delete(struct xg_registry *r,
    struct xg_reg_channel *ch);

/* ---- subscribe requests ---- */

/*
 * Starts a subscribe request of RC with raw id CLIENT_ID (copied) for the
 * NCHAN channels CHANS (copied). Channels are then resolved one by one
 * with xg_registry_subreq_set() or through the channels' waiter lists.
 */
struct xg_reg_subreq *xg_registry_subreq_new(struct xg_registry *r,
    struct xg_reg_client *rc, const char *client_id, char **chans,
    int nchan);
/* Marks channel I of SR resolved now (1 confirmed, -1 not). */
void xg_registry_subreq_set(struct xg_reg_subreq *sr, int i, int status);
/* Makes SR wait for channel I on CH. */
void xg_registry_subreq_wait(struct xg_reg_subreq *sr, int i,
    struct xg_reg_channel *ch);
/* Frees SR (it must no longer be waited on: outstanding == 0). */
void xg_registry_subreq_free(struct xg_registry *r, struct xg_reg_subreq *sr);

/* ---- requests ---- */

/*
 * Makes a request object. CLIENT_ID, METHOD, TEXT are copied (each may be
 * NULL). It belongs to the caller until it is put in flight or queued.
 */
struct xg_reg_req *xg_registry_req_new(int kind, struct xg_reg_client *rc,
    const char *client_id, const char *method, const char *text, size_t len);
void xg_registry_req_free(struct xg_reg_req *q);

/*
 * Puts Q in flight under a fresh upstream id (returned; also in q->up_id),
 * with DEADLINE_MS (0: none). The registry owns Q until it is taken.
 */
uint64_t xg_registry_inflight_add(struct xg_registry *r, struct xg_reg_req *q,
    uint64_t deadline_ms);
/* Removes and returns the in-flight request UP_ID, or NULL. */
struct xg_reg_req *xg_registry_inflight_take(struct xg_registry *r,
    uint64_t up_id);
/* Removes and returns the oldest in-flight request, or NULL. */
struct xg_reg_req *xg_registry_inflight_pop(struct xg_registry *r);
size_t xg_registry_ninflight(const struct xg_registry *r);
/*
 * Calls FN for every request in flight, oldest first. FN may change a
 * request's kind, tag and deadline in place (e.g. the requests of a client
 * that is leaving); it must not take, free or add requests.
 */
void xg_registry_inflight_foreach(struct xg_registry *r,
    void (*fn)(struct xg_reg_req *q, void *arg), void *arg);

/* Removes Q (queued) from the queue; the caller owns it again. */
void xg_registry_queue_take(struct xg_registry *r, struct xg_reg_req *q);
/* Appends Q to the queue (or puts it first when FRONT). Owns Q. */
void xg_registry_queue_push(struct xg_registry *r, struct xg_reg_req *q,
    int front);
/* The first queued request (the next ones follow q->next), or NULL. */
struct xg_reg_req *xg_registry_queue_head(const struct xg_registry *r);
/* The request in flight under UP_ID (left in flight), or NULL. */
struct xg_reg_req *xg_registry_inflight_get(const struct xg_registry *r,
    uint64_t up_id);
/* Removes and returns the first queued request, or NULL. */
struct xg_reg_req *xg_registry_queue_pop(struct xg_registry *r);
size_t xg_registry_nqueued(const struct xg_registry *r);

/* ---- a client's own orders (its emulated cancel-on-disconnect) ---- */

/* Remembers ORDER_ID as open for RC: returns 1, or 0 if it was known. */
int xg_registry_order_add(struct xg_reg_client *rc, const char *order_id);
/* 1 when RC holds ORDER_ID (it placed that order), else 0. */
int xg_registry_order_has(const struct xg_reg_client *rc,
    const char *order_id);
/* Forgets ORDER_ID; returns 1 when it was known. */
int xg_registry_order_remove(struct xg_reg_client *rc, const char *order_id);

#endif
