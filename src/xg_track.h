/*
 * xg_track.h: per-channel continuity trackers.
 *
 * A tracker follows one channel's stream across outages so that its
 * subscribers see every message once and in order, or are told what is
 * missing. The cycle is the same whatever the channel carries: the
 * stream breaks (the connection dropped, the channel went stale, a gap
 * shows in the data); the tracker fetches what was missed while it holds
 * the live messages; it delivers the fetch, then what it held; it gives
 * up, with a gap notice, when the held messages reach their bound, when a
 * fetch is refused for good, or after its retries. What the channel's
 * messages mean (sequence numbers, order states, a book) is its kind's:
 * a small table of functions (struct xg_track_kind) that the venue
 * provides. This file knows no exchange.
 *
 * States and transitions (each one logged by one function):
 *
 *   LIVE --stream broke--> GAP --a message shows the gap, or the channel
 *        is back--> FETCHING --all answers in--> LIVE
 *   FETCHING --connection lost, messages held--> HELD --back--> FETCHING
 *   FETCHING --held bound, refused for good, out of retries--> LIVE
 *        (give-up: a gap notice, the held messages released)
 *
 * The tracker talks to the rest only through the callbacks of its
 * environment (struct xg_track_env): send a fetch request, fan a message
 * out to the channel's subscribers, send a gap notice, the time.
 * Single-threaded: every function runs on the loop of env->base.
 */
#ifndef XG_TRACK_H
#define XG_TRACK_H

#include "xg_core.h"
#include "xg_jscan.h"
#include "xg_registry.h"

#include <stddef.h>
#include <stdint.h>

struct event_base;
struct xg_track;
struct xg_upstream;

enum xg_track_state {
    XG_TRACK_LIVE = 0,   /* messages go through the kind's filter */
    XG_TRACK_GAP,        /* the stream broke: the next message that shows
                            the gap, or the confirm, starts a fetch */
    XG_TRACK_FETCHING,   /* a fetch in flight (or waiting for its retry):
                            live messages held */
    XG_TRACK_HELD        /* the fetch died with its connection: the held
                            messages kept, fetched again when confirmed */
};

/* What a kind's parse makes of a live message. */
enum xg_track_verdict {
    XG_TRACK_PASS = 0,   /* its bytes go to every subscriber as they are */
    XG_TRACK_DROP,       /* nothing more to send: filtered, delivered
                            already, or the kind sent its own version */
    XG_TRACK_FETCH       /* it shows a gap: held, and the missing part
                            fetched (struct xg_track_seq says which) */
};

/*
 * Where a message of a new connection stands against what the channel's
 * subscribers got from the old one, during a make-before-break rotation
 * (src/xg_session.h): the channel switches to the new connection at the
 * first message that lines up.
 */
enum xg_track_cross {
    XG_CROSS_SWITCH = 0, /* it follows what was delivered: switch at it
                            (it goes through the kind's parse) */
    XG_CROSS_DROP,       /* delivered already by the old connection, and
                            the next one may not follow on: drop it */
    XG_CROSS_DROP_SWITCH,/* delivered already, and the next one follows
                            on what was delivered: drop it and switch */
    XG_CROSS_WAIT        /* ahead of what was delivered: keep it until
                            the old connection catches up */
};

/* A message's place in the stream, as the kind's parse found it. */
struct xg_track_seq {
    uint64_t  from, to;  /* XG_TRACK_FETCH: what is missing (to 0: up to
                            the newest) */
    int       lined;     /* it lines up with what was delivered: a gap,
                            if any, is closed */
};

/*
 * A kind of channel. Every function but create receives the tracker;
 * the kind's own state is t->data. Optional functions may be NULL.
 */
struct xg_track_kind {
    const char *name;    /* "trades", for logs and gap notices */
    const char *what;    /* its fetch, for logs: "backfill" */
    unsigned    flags;   /* XG_TRACK_KEEP_HELD */
    /* The kind's state for channel NAME, or NULL: not a channel of it. */
    void      *(*create)(const char *name);
    /* A live message (LIVE or GAP): a verdict, and SEQ (zeroed) filled. */
    enum xg_track_verdict (*parse)(struct xg_track *t, const char *data,
        size_t len, struct xg_track_seq *seq);
    /* Sends the fetch of what is missing with xg_track_send(): SEQ from
       the message that showed the gap, NULL when the channel was
       confirmed. Sending nothing means there is nothing to fetch yet. */
    void       (*fetch)(struct xg_track *t, const struct xg_track_seq *seq);
    /* An answer to one of the current fetch's requests: delivers what it
       brings (xg_track_fanout, or the kind's own), or keeps it for
       complete. XG_ERROR: it brought nothing usable (the fetch fails). */
    int        (*apply)(struct xg_track *t, const struct xg_reg_req *q,
        const struct xg_jspan *result, const struct xg_jspan *error);
    /* Every request answered: deliver, or send another round. */
    void       (*complete)(struct xg_track *t);
    /* The stream broke (connection lost, stale, a gap in the data). */
    void       (*lost)(struct xg_track *t);
    void       (*free)(void *data);
    /*
     * A rotation's new connection sent DATA on the channel: where it
     * stands (see enum xg_track_cross). DATA NULL asks whether the
     * channel may switch now with nothing from the new connection that
     * lines up (XG_CROSS_SWITCH) or must wait for it (XG_CROSS_WAIT).
     * NULL: the channel switches at the new connection's first message.
     */
    enum xg_track_cross (*cross)(struct xg_track *t, const char *data,
        size_t len);
};

/* A fetch that dies with its connection keeps its held messages (HELD)
   instead of releasing them: what it fetched is fetched again first. */
#define XG_TRACK_KEEP_HELD  0x1
/* A switch to a rotation's new connection that nothing lined up for
   leaves a gap: the kind checks (and fetches) what follows as after an
   outage. */
#define XG_TRACK_CROSS_GAP  0x2

/*
 * What trackers share: the creator's, and it outlives them. The engine
 * writes only the counters at the end.
 */
struct xg_track_env {
    const char         *name;       /* the upstream's, for logs */
    const struct xg_upstream *up;   /* for logs (its connection id);
                                       NULL: NAME only */
    struct event_base  *base;       /* for the retry timers */
    size_t              max_held;   /* held messages before a give-up */
    uint64_t            retry_ms;   /* first retry backoff, doubling ... */
    uint64_t            retry_max_ms; /* ... up to this */
    unsigned            tries;      /* retries of a request at most */
    void               *ctx;        /* the callbacks' first argument */
    /* Sends Q (takes ownership), a request of CHAN's tracker. */
    void              (*send)(void *ctx, void *chan, struct xg_reg_req *q);
    /* DATA (borrowed) to every subscriber of CHAN. */
    void              (*fanout)(void *ctx, void *chan, const char *data,
        size_t len);
    /* Tells CHAN's subscribers of a gap that stays. */
    void              (*notice)(void *ctx, void *chan, uint64_t duration_ms,
        const char *reason);
    uint64_t          (*now)(void *ctx);    /* milliseconds, monotonic */
    uint64_t            retries;    /* requests sent again, in all */
    uint64_t            answers;    /* answers with a result to a fetch
                                       still waited for */
};

struct xg_track_msg {
    char     *p;        /* NULL: a hole in the stream here (xg_track_hole) */
    size_t    len;
    uint64_t  since_ms; /* a hole's: the last data before it */
};

struct xg_track_retry;

/* One tracker: read by its kind, changed only through the functions. */
struct xg_track {
    const struct xg_track_kind *kind;
    struct xg_track_env        *env;
    void                       *data;     /* the kind's */
    void                       *chan;     /* the creator's, for callbacks */
    char                       *name;     /* the channel's, for logs */
    enum xg_track_state         state;
    uint64_t                    gap_from_ms; /* last data before the gap */
    uint64_t                    tag;      /* the current fetch's */
    unsigned                    pending;  /* its requests not answered */
    unsigned                    failed;   /* its answers that failed */
    struct xg_track_msg        *held;     /* live messages held, in order */
    size_t                      nheld, held_cap;
    struct xg_track_retry      *retry;    /* requests waiting to be sent
                                             again, each on its timer */
};

/*
 * A tracker of KIND for channel NAME (copied), or NULL when NAME is not
 * one of KIND's. CHAN (borrowed) is passed to ENV's callbacks. LIVE.
 */
struct xg_track *xg_track_new(const struct xg_track_kind *kind,
    struct xg_track_env *env, const char *name, void *chan);
/* Frees T: its held messages, its waiting requests, the kind's state. */
void xg_track_free(struct xg_track *t);

const char *xg_track_state_name(enum xg_track_state s);

/*
 * A live message DATA (borrowed) on T's channel. Returns 1 when its bytes
 * go to every subscriber as they are, 0 when the tracker dealt with it
 * (held, filtered, or sent in another form).
 */
int xg_track_message(struct xg_track *t, const char *data, size_t len);

/* T's connection went down; SINCE_MS: the channel's last data. */
void xg_track_down(struct xg_track *t, uint64_t since_ms);

/*
 * T's stream broke with the connection still up (a stale channel, a gap
 * in the data) for reason WHY; SINCE_MS: its last data. The kind's lost
 * runs; what is missing is fetched at xg_track_resume(). Safe from the
 * kind's parse.
 */
void xg_track_gap(struct xg_track *t, uint64_t since_ms, const char *why);

/*
 * A hole in T's stream at this point, the stream going on (entries an
 * edge's core dropped or trimmed): what follows may miss some, so T goes
 * into a gap and fetches what its kind can (xg_track_gap(), then
 * xg_track_resume()). While T holds messages (a fetch under way) the hole
 * is held at its place among them and taken when they are released: a
 * fetch that ends must not hide a hole that came after its range.
 */
void xg_track_hole(struct xg_track *t, uint64_t since_ms, const char *why);

/*
 * T's channel is back (WHY: confirmed by the exchange, or resubscribed
 * after going stale): a gap is fetched now, if the kind can tell what is
 * missing without seeing data; what comes live from here is held.
 */
void xg_track_resume(struct xg_track *t, const char *why);

/*
 * For the kind's fetch: sends Q (takes ownership) as a request of the
 * current fetch. Its answer goes to xg_track_answer.
 */
void xg_track_send(struct xg_track *t, struct xg_reg_req *q);

/*
 * Q (borrowed), a request of T's, was answered (RESULT or ERROR), or is
 * given up (ERROR says why). An answer to a fetch given up on or
 * superseded is ignored.
 */
void xg_track_answer(struct xg_track *t, const struct xg_reg_req *q,
    const struct xg_jspan *result, const struct xg_jspan *error);

/*
 * Q, a request of T's, was refused for now (WHY, LEN bytes) or timed out:
 * keeps it (returns 1) to send again after a backoff, env->retry_ms
 * doubling up to env->retry_max_ms. Returns 0, Q still the caller's, when
 * Q is not the current fetch's or has had env->tries retries.
 */
int xg_track_retry(struct xg_track *t, struct xg_reg_req *q, const char *why,
    int len);

/*
 * Where DATA (borrowed; NULL: nothing yet), a message of a rotation's new
 * connection on T's channel, stands against what T delivered (see enum
 * xg_track_cross). While T fetches or holds, the channel waits.
 */
enum xg_track_cross xg_track_cross(struct xg_track *t, const char *data,
    size_t len);

/*
 * T's channel switches to a rotation's new connection without a message
 * that lined up (the rotation's bound ran out, or the old connection was
 * lost: LOST 1, T went down with it). A kind with XG_TRACK_CROSS_GAP is
 * put in a gap from SINCE_MS, and every kind resumes as after an outage
 * when LOST, so that what the new connection does not line up with is
 * fetched or bridged.
 */
void xg_track_cross_force(struct xg_track *t, uint64_t since_ms, int lost);

/* For the kind: DATA to the channel's subscribers. */
void xg_track_fanout(struct xg_track *t, const char *data, size_t len);

/* For the kind: a gap notice for REASON, timed from the gap's start. */
void xg_track_notice(struct xg_track *t, const char *reason);

/*
 * One log line at LEVEL about T's upstream ("upstream NAME#CONN: " or the
 * json fields, from the env's upstream, or its name alone without one).
 * The message names the channel itself.
 */
void xg_track_log(int level, const struct xg_track *t, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

#endif
