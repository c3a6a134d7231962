/*
 * xg_session.h: the exchange-independent session of one upstream
 * (DESIGN.md §10): what every venue needs done the same way.
 *
 * - the restore of every new connection: the venue's steps (auth,
 *   heartbeat...), then every channel held, then the queued requests;
 * - the request table: fresh ids (the client's id bytes kept), in flight
 *   and queued while the connection is not ready (bounded, with
 *   deadlines), replay or "outcome unknown" when the connection is lost,
 *   a timer (xg_timer.h) per deadline;
 *
 * and the subscription engine:
 *
 * - channels wanted by clients are subscribed in batches, once per loop
 *   pass, within the venue's message size;
 * - a channel whose last subscriber left is unsubscribed upstream after
 *   unsubscribe_linger (one timer for the earliest);
 * - every subscribe answer is verified against the venue's reading of it:
 *   a channel the exchange left out is refused to its new clients, or,
 *   when clients held it before (a restore, a resync), kept for them and
 *   retried 1 s, 2 s, 4 s ... 30 s apart (a timer per such channel);
 * - a channel silent for longer than its `stale` bound is resubscribed on
 *   its own (a timer per channel with a bound, moved on only when it
 *   fires, so a notification costs one store).
 *
 * The session owns none of the channels (the registry does) and sends
 * nothing itself: the venue encodes the (un)subscribe requests and sends
 * them through its request table, and gets called back for what depends
 * on the exchange (what a confirmation means for its continuity trackers,
 * how a client's subscribe is answered).
 *
 * Connections. Every request remembers the connection it was written on
 * (q->conn); new requests go to the primary (xg_session_conn()), and the
 * loss of a connection settles only the requests in flight on it. A
 * make-before-break rotation (xg_session_rotate()) restores the session
 * on a second connection B while the primary A serves on: the venue's
 * steps on B, then every confirmed channel subscribed on B, verified;
 * B's data is held meanwhile. Then each channel switches to B where B's
 * stream lines up with what its subscribers got from A (the venue's
 * cross(), from its continuity trackers); A's data on a switched channel
 * is dropped. Once every channel is on B (or the switch bound ran out:
 * the channels left switch as after an outage, bridged or fetched), B is
 * promoted, the venue is told A retires (ops->retiring: its last words,
 * such as disabling cancel-on-disconnect), and A is retired once its
 * requests in flight are answered or timed out. A refusal on B, or B
 * lost, fails the rotation with A untouched; A lost while B restores:
 * B takes over when its restore is done.
 */
#ifndef XG_SESSION_H
#define XG_SESSION_H

#include "xg_core.h"
#include "xg_jscan.h"
#include "xg_registry.h"
#include "xg_track.h"

#include <event2/event.h>
#include <jansson.h>

struct xg_session;
struct xg_upstream;
struct xg_conn;

/* Request kinds the session owns (the venue's own kinds stay below). */
#define XG_REQ_SUB      100      /* a subscribe batch */
#define XG_REQ_UNSUB    101      /* an unsubscribe batch */
#define XG_SESSION_RESUB 1       /* tag of a subscribe of the session's own
                                    (a resync, a stale channel) */

/* `stale PATTERN DURATION;`: a matching channel silent longer is
   resubscribed on its own. */
struct xg_stale {
    char      *pattern;          /* fnmatch(3) glob on the channel name */
    uint64_t   ms;
};

/* How a channel came to be confirmed, for the venue's continuity. */
enum xg_confirm {
    XG_CONFIRM_NEW = 1,          /* first subscribed */
    XG_CONFIRM_RESTORED,         /* again, after a reconnect */
    XG_CONFIRM_RETRIED           /* after refused attempts */
};

/* What an upstream message is, as the venue reads it. */
enum xg_umsg_kind {
    XG_UMSG_IGNORE = 0,          /* nothing for the session (the venue
                                    logged or answered it: a heartbeat) */
    XG_UMSG_ANSWER,              /* the answer to a request: id */
    XG_UMSG_DATA                 /* data on a channel: chan, chan_len */
};

struct xg_umsg {
    enum xg_umsg_kind   kind;
    struct xg_jspan     id;          /* ANSWER: the raw id */
    struct xg_jspan     result;      /* ANSWER: raw text (p NULL: none) */
    struct xg_jspan     error;       /* ANSWER: raw text (p NULL: none) */
    const char         *chan;        /* DATA: the channel's name */
    size_t              chan_len;
    struct xg_jspan     params;      /* DATA: the venue's, for its use */
};

/* What becomes of a request in flight when its connection is lost. */
enum xg_lost {
    XG_LOST_FREE = 0,            /* forget it (the session frees it) */
    XG_LOST_UNKNOWN,             /* its client was told the outcome is
                                    unknown (the session frees it) */
    XG_LOST_REPLAY,              /* send it again on the next connection */
    XG_LOST_KEPT                 /* the venue took it */
};

/* What the session calls in its venue (OWNER is the venue's instance). */
struct xg_session_ops {
    /*
     * Reads one upstream message from connection C into *M (kind IGNORE
     * for the rest; a heartbeat is answered on C).
     */
    void (*classify)(void *owner, struct xg_conn *c, const char *data,
        size_t len, struct xg_umsg *m);
    /*
     * The answer M (DATA, LEN: the whole message) to the venue's request
     * Q (a client's or its own; the session's (un)subscribes never come
     * here). Returns 1 when it kept Q, else the session frees it.
     */
    int (*answer)(void *owner, struct xg_reg_req *q, const char *data,
        size_t len, const struct xg_umsg *m);
    /*
     * Data on CH (DATA, LEN: the whole message): 1 when its bytes go to
     * every subscriber as they are, 0 when the venue handled it (its
     * continuity tracker held, filtered or rewrote it).
     */
    int (*data)(void *owner, struct xg_reg_channel *ch, const char *data,
        size_t len, const struct xg_umsg *m);
    /* Writes one message on C; XG_ERROR when C is not open. */
    int (*write)(void *owner, struct xg_conn *c, const char *data,
        size_t len);
    /*
     * Q's deadline passed, in flight (QUEUED 0) or waiting for the
     * connection (QUEUED 1): tell whoever waits. Returns 1 when it kept Q
     * (e.g. to send it again), else the session frees it.
     */
    int (*expired)(void *owner, struct xg_reg_req *q, int queued);
    /* Q was in flight when the connection was lost: what becomes of it. */
    enum xg_lost (*lost)(void *owner, struct xg_reg_req *q);
    /*
     * Builds a (un)subscribe request (SUBSCRIBE 1 or 0) for NAMES[0..N-1]
     * with an id placeholder, of kind XG_REQ_SUB or XG_REQ_UNSUB, for the
     * session to fill in q->chan and send with send().
     */
    struct xg_reg_req *(*encode_sub)(void *owner, int subscribe,
        char *const *names, size_t n);
    /* Sends Q (taken) through the venue's request table. */
    void (*send)(void *owner, struct xg_reg_req *q);
    /*
     * The channels a subscribe answer confirms, as a JSON array of names
     * (a new reference), or NULL when the whole request failed; *ERRTEXT
     * then gets a malloc'd JSON-RPC error object for the clients.
     */
    json_t *(*sub_result)(void *owner, const struct xg_reg_req *q,
        const struct xg_jspan *result, const struct xg_jspan *error,
        char **errtext);
    /* CH was confirmed (HOW): the venue's continuity (trackers, notices). */
    void (*confirmed)(void *owner, struct xg_reg_channel *ch,
        enum xg_confirm how, uint64_t now_ms);
    /* CH went stale: the venue's continuity before it is resubscribed. */
    void (*stale)(void *owner, struct xg_reg_channel *ch, uint64_t now_ms);
    /* CH is resubscribed after being stale: continuity that starts now. */
    void (*restale)(void *owner, struct xg_reg_channel *ch);
    /* SR, a client's subscribe request, is complete: answer and free it. */
    void (*subreq_done)(void *owner, struct xg_reg_subreq *sr);
    /*
     * Restore step STEP (0, 1, ...) of the new connection C, before the
     * subscriptions: XG_AGAIN when it sent a request on C (with
     * xg_session_send_on()) whose answer will call
     * xg_session_step_done(), XG_OK when this step has nothing to do,
     * XG_DONE when the venue has no such step (its steps are over).
     */
    int (*restore_step)(void *owner, struct xg_conn *c, int step);
    /*
     * CH's name given to the client whose registry owner is CLIENT, on a
     * subscribe of kind FLAGS (the venue's): 1 when the client may have
     * it (e.g. a private channel needs an authenticated client).
     */
    int (*allowed)(void *owner, void *client, const char *name, int flags);
    /* CLIENT joined CH (LIVE: it was confirmed already), or left it. */
    void (*joined)(void *owner, void *client, struct xg_reg_channel *ch,
        int live);
    void (*left)(void *owner, void *client, struct xg_reg_channel *ch);
    /*
     * CH's whole state as of the message just delivered, as one
     * notification of its own (a book snapshot), for the upstream's
     * `publish`: malloc'd text and its length in *LEN, or NULL when the
     * channel has none now. Asked only when one is due (xg_redis.h).
     * NULL: the venue has no such state.
     */
    char *(*snapshot)(void *owner, struct xg_reg_channel *ch, size_t *len);

    /* ---- a rotation (NULL: every channel switches at B's first
       message, and nothing is said on A) ---- */
    /*
     * DATA (LEN bytes; NULL: nothing yet), a message of the rotation's
     * new connection on CH, against what CH's subscribers got from the
     * old one (see enum xg_track_cross in src/xg_track.h).
     */
    enum xg_track_cross (*cross)(void *owner, struct xg_reg_channel *ch,
        const char *data, size_t len);
    /*
     * CH switches to the new connection with nothing that lined up (LOST
     * 1: the old connection was lost): continuity as after an outage.
     * The new connection's data held for CH is passed through data()
     * next, then cross_done(); DROPPED 1: some of the new connection's
     * data on CH was dropped as delivered (a snapshot, say).
     */
    void (*cross_force)(void *owner, struct xg_reg_channel *ch, int lost);
    void (*cross_done)(void *owner, struct xg_reg_channel *ch, int dropped);
    /*
     * C, the old primary, retires now that the new one is promoted: what
     * it must say before its close (its answers are waited for).
     */
    void (*retiring)(void *owner, struct xg_conn *c);

    /* ---- the request budget (NULL: the session spends none) ---- */
    /*
     * The pool that request Q is paid from (an index into the conf of
     * xg_session_set_budget()), and in *COST what it costs there.
     */
    unsigned (*cost)(void *owner, const struct xg_reg_req *q, double *cost);
};

/*
 * The `stale PATTERN DURATION;` directive of a venue's conf (repeatable;
 * the first matching line wins): appends to *V (*N entries), or returns
 * XG_ERROR with the conf error said at ST's file:line.
 */
struct xg_conf;
struct xg_conf_stmt;
struct xg_conf_dump;
int xg_stale_set(struct xg_conf *cf, const struct xg_conf_stmt *st,
    struct xg_stale **v, size_t *n);
/* The stale lines for `exgate -T` (a comment when there is none). */
void xg_stale_dump(struct xg_conf_dump *d, const char *name,
    const struct xg_stale *v, size_t n);
void xg_stale_free(struct xg_stale *v, size_t n);

/* The session's connection state. */
enum xg_session_state {
    XG_SESSION_DOWN = 0,
    XG_SESSION_RESTORING,
    XG_SESSION_READY
};

/*
 * A session on registry REG (borrowed) for the upstream UP (borrowed;
 * its name NAME), with its timers on BASE. STALE[0..NSTALE-1] (borrowed: the conf's) are
 * the silence bounds. Never returns NULL.
 */
struct xg_session *xg_session_new(struct xg_upstream *up, const char *name,
    struct event_base *base,
    struct xg_registry *reg, const struct xg_stale *stale, size_t nstale,
    size_t batch_bytes, const struct xg_session_ops *ops, void *owner);
/*
 * S lets go of the channels edges wanted (src/xg_session_interest.c):
 * its registry client is freed and it polls no more. Call it before the
 * registry is freed.
 */
void xg_session_interest_stop(struct xg_session *s);
/*
 * Whether S takes private channels (Deribit's "user.") from the edges'
 * interest: 1 when its own connection is authenticated, so that an
 * edge's bots, whose requests run on that account (the core's request
 * service), get its private channels as a local bot of it would. 0 (the
 * default): they are ignored.
 */
void xg_session_interest_private(struct xg_session *s, int allow);
/*
 * Whether NAME may stand in the interest set: 1 to 256 bytes, no spaces,
 * quotes, backslashes or control bytes, and a private ("user.") one only
 * with PRIV. What an edge declares is what a core takes.
 */
int xg_session_interest_name_ok(const char *name, int priv);
/* Frees S and its timers (not the registry). */
void xg_session_free(struct xg_session *s);

/* The clients' unsubscribe_linger (0: none), from the gateway settings. */
void xg_session_set_linger(struct xg_session *s, uint64_t ms);

/* ---- the connection: restore, ready, down ---- */

/*
 * C, a new primary connection, is open: the restore runs the venue's
 * steps in order, then subscribes every channel held, then (READY) sends
 * what was queued and tells the upstream (xg_upstream_restored()). While
 * the session is not ready nothing is batched (the restore sends
 * everything pending).
 */
void xg_session_open(struct xg_session *s, struct xg_conn *c);
/* The venue's restore step on C answered well: the next one. */
void xg_session_step_done(struct xg_session *s, struct xg_conn *c);
enum xg_session_state xg_session_state(const struct xg_session *s);
/* The primary connection (new requests go to it), or NULL. */
struct xg_conn *xg_session_conn(const struct xg_session *s);

/*
 * C, a ROTATING connection (src/xg_venue.h), is open beside the primary:
 * the rotation described at the top of this file starts. It ends with
 * xg_upstream_promote(C) and xg_upstream_retire() of the old primary, or
 * with xg_upstream_retire(C) when C is refused something.
 */
void xg_session_rotate(struct xg_session *s, struct xg_conn *c);

/* CH (pending) is wanted: it goes into the next subscribe batch. */
void xg_session_want(struct xg_session *s, struct xg_reg_channel *ch);
/* Something changed (a client left, an answer came): flush this pass. */
void xg_session_flush_soon(struct xg_session *s);


/* The answer to subscribe batch Q: diff, confirm, answer the clients. */
void xg_session_sub_answer(struct xg_session *s, const struct xg_reg_req *q,
    const struct xg_jspan *result, const struct xg_jspan *error);
/* The answer to unsubscribe batch Q. */
void xg_session_unsub_answer(struct xg_session *s, const struct xg_reg_req *q);

/*
 * Unsubscribes and subscribes CH again on its own (a book gap's resync);
 * the subscribe is verified like any other.
 */
void xg_session_resubscribe(struct xg_session *s, struct xg_reg_channel *ch);

/*
 * One message from the exchange on connection C: the venue classifies
 * it; an answer goes to the request it answers (whatever connection it
 * came on), data to its channel's subscribers (one copy shared by all,
 * xg_client_fanout()) unless a rotation holds or drops it.
 */
void xg_session_message(struct xg_session *s, struct xg_conn *c,
    const char *data, size_t len);

/*
 * DATA (LEN bytes, copied) to every subscriber of CH, one shared copy
 * (the same batching as a notification passed through). It is published
 * first (xg_session_publish()).
 */
void xg_session_fanout(struct xg_session *s, struct xg_reg_channel *ch,
    const char *data, size_t len);
/*
 * DATA, a notification of CH, to the upstream's `publish` (xg_redis.h)
 * when it has one: what xg_session_fanout() does first. When CH's
 * snapshot is due, the venue's snapshot() renders it as of DATA.
 */
void xg_session_publish(struct xg_session *s, struct xg_reg_channel *ch,
    const char *data, size_t len);
/*
 * Same for DATA, a notification that is CH's whole state itself (a book
 * snapshot), for a venue that hands it to its subscribers one by one: it
 * is also written as CH's snapshot.
 */
void xg_session_publish_snapshot(struct xg_session *s,
    struct xg_reg_channel *ch, const char *data, size_t len);

/* ---- a client's channels ---- */

/*
 * Client RC (its registry owner is the venue's client) subscribes to
 * NAMES[0..N-1] under CLIENT_ID (raw JSON text), at most MAX channels in
 * all: live channels are answered at once, new ones are subscribed
 * upstream, the answer (the channels confirmed, in request order) goes
 * to ops->subreq_done() once every channel is resolved, maybe before
 * this returns.
 */
void xg_session_subscribe(struct xg_session *s, struct xg_reg_client *rc,
    const char *client_id, char *const *names, size_t n, unsigned max,
    int flags);
/*
 * RC leaves the channels NAMES[0..N-1] (those it held are appended to
 * LEFT, a JSON array), or all of them (NAMES NULL); the last leaver's
 * channel is unsubscribed upstream after the linger.
 */
void xg_session_unsubscribe(struct xg_session *s, struct xg_reg_client *rc,
    char *const *names, size_t n, json_t *left);

/*
 * A reload: STALE[0..NSTALE-1] (borrowed, the new conf's) are the stale
 * bounds from now on; each channel looks its bound up again the next
 * time its silence timer is armed.
 */
void xg_session_set_stale(struct xg_session *s, const struct xg_stale *stale,
    size_t nstale);

/* ---- requests: in flight (fresh ids), queued while not ready ---- */

/*
 * REQUEST_MS bounds a request with q->timed set (0: none); LIMIT and
 * QUEUE_MS bound the queue (QUEUE_MS 0: no deadline).
 */
void xg_session_set_limits(struct xg_session *s, uint64_t request_ms,
    unsigned limit, uint64_t queue_ms);

/*
 * The request budget from CF (borrowed for this call) from now on (see
 * above; CF->on 0: none, and whatever waited goes out). A reload keeps
 * the pools' levels.
 */
struct xg_budget_conf;
void xg_session_set_budget(struct xg_session *s,
    const struct xg_budget_conf *cf);

/*
 * Puts Q in flight under a fresh id and writes it on the primary: Q->text
 * holds the request with some "id" member, replaced here. Takes
 * ownership of Q. XG_ERROR when the write failed (the loss of the
 * connection sorts Q out).
 */
int xg_session_send(struct xg_session *s, struct xg_reg_req *q);
/* The same on connection C (a restore step, an answer on C's own).
   Held (not written yet) while the budget cannot pay for it. */
int xg_session_send_on(struct xg_session *s, struct xg_reg_req *q,
    struct xg_conn *c);

/*
 * Sends Q when ready (and the budget pays for it), else queues it
 * (q->nolimit: past the limit and with no deadline). XG_ERROR when the
 * queue is full: Q stays the caller's.
 */
int xg_session_submit(struct xg_session *s, struct xg_reg_req *q);

/*
 * One log line at LEVEL about request Q of S: the upstream's NAME#CONN,
 * the client that asked (if any: its id and address) and Q's upstream id
 * (if it has one: not while queued), as text prefix or json fields, so
 * that one grep for "request ID" follows Q from its send to its end.
 */
void xg_session_log_req(int level, const struct xg_session *s,
    const struct xg_reg_req *q, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/* Q (in flight) waits for its answer however long it takes. */
void xg_session_untime(struct xg_reg_req *q);

/* The request in flight answered under ID, taken (the caller frees it),
   or NULL. */
struct xg_reg_req *xg_session_take(struct xg_session *s,
    const struct xg_jspan *id);

/* What the loss of a connection means for the venue. */
enum xg_session_down {
    XG_SESSION_DOWN_PRIMARY = 0, /* the session is down: its channels and
                                    trackers as after any outage */
    XG_SESSION_DOWN_TAKEOVER,    /* the primary is lost, a rotation's
                                    connection takes over: trackers as
                                    after an outage, channels kept */
    XG_SESSION_DOWN_OTHER        /* a rotating or retiring connection:
                                    nothing else changes */
};

/*
 * Connection C is gone: every request in flight on C goes to
 * ops->lost(); those to replay are queued first, in their order (sent at
 * once when the session is ready on another connection). *REPLAYED and
 * *LOST get the counts. Returns what the loss means.
 */
enum xg_session_down xg_session_down(struct xg_session *s, struct xg_conn *c,
    unsigned *replayed, unsigned *lost);


/* Adds the session's counters to an upstream's /status object. */
void xg_session_status(struct xg_session *s, json_t *obj);

#endif
