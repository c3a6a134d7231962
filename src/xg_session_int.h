/*
 * xg_session_int.h: what the session's two files share (src/xg_session.c:
 * restore, request table, subscription engine; src/xg_session_rot.c: the
 * make-before-break rotation). Nothing else includes it.
 */
#ifndef XG_SESSION_INT_H
#define XG_SESSION_INT_H

#include "xg_core.h"
#include "xg_budget.h"
#include "xg_client.h"
#include "xg_log.h"
#include "xg_venue.h"
#include "xg_session.h"
#include "xg_timer.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define SS_ROT_SWITCH_MS    2000        /* a rotation's channels line up
                                           within this, or are switched as
                                           after an outage */
#define SS_ROT_MAX_HELD     1000        /* the new connection's messages
                                           held per channel meanwhile */
#define SS_ROT_RETIRE_MS    10000       /* the old connection's requests:
                                           waited for at most this (or
                                           request_timeout, if longer) */
#define SS_TAG_ROT          2           /* a rotation's subscribe batch */


struct ss_rot;

struct xg_session {
    struct xg_upstream           *up;
    const char                   *name;
    struct event_base            *base;
    struct xg_registry           *reg;
    const struct xg_stale        *stale;
    size_t                        nstale;
    size_t                        batch_bytes;
    const struct xg_session_ops  *ops;
    void                         *owner;
    int                           ready;     /* state == READY */
    enum xg_session_state         st;
    int                           step;      /* the venue's restore step */
    int                           subs_left; /* restore subscribe batches */
    uint64_t                      restore_start_ms;
    uint64_t                      last_restore_ms;
    uint64_t                      restores;
    uint64_t                      linger_ms;
    struct event                 *ev_flush;    /* batches, once per pass */
    struct xg_timer              *ev_linger;   /* the earliest linger end */
    char                        **sub_batch;
    size_t                        nsub, sub_cap;
    char                        **unsub_batch;
    size_t                        nunsub, unsub_cap;
    uint64_t                      stale_resubscribes;
    uint64_t                      resubscribe_retries;
    struct xg_client            **to;        /* fan-out recipients */
    size_t                        to_cap;
    uint64_t                      messages_in;
    uint64_t                      request_ms;
    unsigned                      queue_limit;
    uint64_t                      queue_ms;
    struct xg_conn               *conn;      /* the primary */
    struct ss_rot                *rot;       /* a rotation in progress */
    uint64_t                      rot_in_line; /* channels switched: */
    uint64_t                      rot_quiet;
    uint64_t                      rot_forced;
    struct xg_budget              budget;    /* the exchange's credits */
    struct xg_timer              *ev_budget; /* the next wait's end */
    uint64_t                     *held;      /* ids of requests held for
                                                the budget, in order */
    size_t                        held_first, nheld, held_cap;
    uint64_t                      rr_vtime;  /* the round robin: the
                                                stamp last served */
    uint64_t                      budget_waited; /* requests that waited */
    struct xg_reg_client         *interest;  /* edges' channels' holder
                                                (xg_session_interest.c) */
    struct xg_redis              *interest_pub; /* polled through */
    struct xg_timer              *ev_interest;  /* the next poll */
    int                           interest_private; /* user. taken */
    uint64_t                      interest_conn;    /* the last answer's
                                                       connection (ready) */
    uint64_t                      interest_keep;    /* held stay till */
    int                           interest_kept;    /* logged */
};

/* What a rotation is doing (see xg_session.h). */
enum ss_rot_phase {
    SR_STEPS = 0,       /* the venue's restore steps on B */
    SR_SUBS,            /* the channels' subscribes on B */
    SR_CROSS,           /* the channels switching to B */
    SR_RETIRE           /* B promoted; A's requests answered, then A
                           retired */
};

struct ss_rot {
    struct xg_conn     *a, *b;
    enum ss_rot_phase   phase;
    int                 step;
    int                 subs_left;
    int                 a_lost;      /* the primary went while B restored */
    int                 failed;      /* B was retired: ignore it */
    int                 retired;     /* A was retired */
    unsigned            a_id, b_id;
    unsigned            in_line, quiet, forced;  /* channels switched */
    uint64_t            start_ms;
    struct xg_timer    *ev_bound;    /* the switch bound, then the retire
                                        bound */
    struct event       *ev_check;    /* the end check, once per pass */
};

/* A message of B held for a channel during a rotation. */
struct ss_msg {
    char     *p;
    size_t    len;
};

/* A channel's place in a rotation (ss_chan.rot). */
enum {
    SR_CH_NONE = 0,     /* not subscribed on B */
    SR_CH_SENT,         /* its subscribe on B is out */
    SR_CH_ON_B,         /* confirmed on B, not switched */
    SR_CH_SWITCHED      /* B's data goes out, A's is dropped */
};

/* The session's per-channel timers (ch->sess), made when first needed. */
struct ss_chan {
    struct xg_session      *s;
    struct xg_reg_channel  *ch;
    struct xg_timer        *ev_retry;     /* unconfirmed: the next attempt */
    struct xg_timer        *ev_stale;     /* the silence bound */
    int                     rot;          /* SR_CH_*, during a rotation */
    int                     rot_dropped;  /* a message of B was dropped */
    struct ss_msg          *held;         /* B's messages held meanwhile */
    size_t                  nheld, held_cap;
};

struct ss_ids {
    struct xg_conn  *c;
    uint64_t        *ids;
    size_t           n, cap;
    int              orphans;   /* and those written on no connection */
};

/* ---- xg_session.c, for the rotation ---- */

/* CH's session state, made when first needed. */
struct ss_chan *ss_chan(struct xg_session *s, struct xg_reg_channel *ch);
/* Frees the messages held for SC during a rotation. */
void ss_chan_unhold(struct ss_chan *sc);
/* Appends a copy of NAME to the array *A (*N used, *CAP allocated). */
void ss_batch_add(char ***a, size_t *n, size_t *cap, const char *name);
/*
 * Sends NAMES[0..N-1] as (un)subscribe requests (the names move into
 * them); ON NULL: through the venue, to the primary, else a rotation's
 * on ON. Returns the number of requests.
 */
int ss_send_batches(struct xg_session *s, int subscribe, char **names,
    size_t n, struct xg_conn *on);
/* DATA on CH through the venue's continuity to its subscribers (M NULL:
   a message held earlier), as of NOW (xg_now_ms(): its read's time). */
void ss_deliver(struct xg_session *s, struct xg_reg_channel *ch,
    const char *data, size_t len, const struct xg_umsg *m, uint64_t now);
/* READY: the queue and the pending channels go out; TELL: the upstream
   is told it is restored. */
void ss_ready(struct xg_session *s, int tell);

/* ---- xg_session_interest.c ---- */

/* Starts S's interest polls (once a second, while it publishes). */
void ss_interest_start(struct xg_session *s);
/* Cancels S's poll in flight and frees its timer (its client is freed
   by xg_session_interest_stop(), before the registry). */
void ss_interest_free(struct xg_session *s);
/* SR is complete: the venue answers its client, or (the session's own
   interest client) it is freed. */
void ss_subreq_done(struct xg_session *s, struct xg_reg_subreq *sr);

/* ---- xg_session_rot.c, for the rest of the session ---- */

/* Frees S's rotation, if any (not the channels' held messages). */
void ss_rot_free(struct xg_session *s);
/* B's restore: its steps from the current one, then its subscribes. */
void ss_rot_run(struct xg_session *s);
/* The answer Q (a rotation's subscribe batch on B). */
void ss_rot_sub_answer(struct xg_session *s, const struct xg_reg_req *q,
    const struct xg_jspan *result, const struct xg_jspan *error);
/* DATA on CH from C during a rotation: 1 when the rotation took it (held,
   dropped, or delivered), 0 when it goes out as usual. */
int ss_rot_data(struct xg_session *s, struct xg_conn *c,
    struct xg_reg_channel *ch, const char *data, size_t len);
/* A's data on CH went out: B's held messages may line up now. */
void ss_rot_after(struct xg_session *s, struct xg_reg_channel *ch);
/* C answered or timed out a request: a retiring A with none left goes. */
void ss_rot_check_retire(struct xg_session *s, struct xg_conn *c);
/* The unsubscribe batch NAMES goes to A: B's copies too. */
void ss_rot_unsubscribe(struct xg_session *s, char **names, size_t n);
/* Q, a subscribe on A answered after B's promotion: done again on B
   (returns 1), or 0 when Q is not one. */
int ss_rot_late_answer(struct xg_session *s, const struct xg_reg_req *q);
/* A was lost while B restores: the channels B will hold stay confirmed. */
void ss_rot_keep_channels(struct xg_session *s);
/* The rotation's end check on the next loop pass. */
void ss_rot_check_soon(struct xg_session *s);

#endif
