/*
 * xg_venue_edge_int.h: the edge link's state (xg_venue_edge.c), shared
 * with its reader of the core's streams (xg_venue_edge_read.c).
 */
#ifndef XG_VENUE_EDGE_INT_H
#define XG_VENUE_EDGE_INT_H

#include "xg_core.h"
#include "xg_venue_deribit.h"
#include "xg_venue_deribit_int.h"
#include "xg_book.h"
#include "xg_conf.h"
#include "xg_log.h"
#include "xg_rconn.h"
#include "xg_session.h"
#include "xg_redis.h"
#include "xg_upstream.h"
#include "xg_venue.h"
#include "xg_ws.h"
#include "xg_timer.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <event2/event.h>
#include <hiredis/hiredis.h>
#include <hiredis/async.h>
#include <openssl/crypto.h>

#define EL_TICK_MS          100
#define EL_BLOCK_MS         1000     /* XREAD BLOCK */
#define EL_BELL_QUIET_MS    3000     /* no bell this long (the core rings
                                        an empty one every second): every
                                        channel read once */
#define EL_COUNT            1000     /* XREAD COUNT per stream */
#define EL_READ_GRACE_MS    5000     /* an XREAD past BLOCK + this: dead */
#define EL_EPOCH_POLL_MS    1000
#define EL_LAG_POLL_MS      2000     /* a round of the streams' ends, for
                                        lag_entries, a slice a tick */
#define EL_LAG_POLL_MAX     1000     /* channels asked per poll at most */
#define EL_SNAP_RETRY_MS    200
#define EL_SNAP_WARN_MS     10000
#define EL_ANS_MAXLEN       10000
#define EL_REQ_MAXLEN       100000
#define EL_MAX_CHANNELS     XG_REDIS_INTEREST_MAX   /* the core reads no
                                                       more of the interest */

/* ---- state --------------------------------------------------------------- */

enum el_chan_state {
    ELC_START = 0,      /* where to start is being asked */
    ELC_WAIT,           /* asked again soon: a book without the core's
                           snapshot yet, or a stream of another epoch */
    ELC_READ            /* in the XREAD */
};

struct el_chan {
    char               *name;
    char               *key;        /* PREFIX:SOURCE:CHANNEL */
    size_t              keylen;
    enum el_chan_state  state;
    int                 book;       /* starts from the snapshot */
    uint64_t            last;       /* the last seq delivered */
    uint64_t            since_ms;   /* subscribed at */
    uint64_t            asked_ms;   /* its start last asked at */
    int                 warned;
    unsigned            gen;        /* a new one for every (re)start */
    int                 due;        /* named in the next XREAD */
    uint64_t            listed;     /* the XREAD it was last named in */
    uint64_t            carried;    /* the last bell that carried one */
    uint64_t            want;       /* the last seq a bell carried */
    uint64_t            fence;      /* the bell's last when it started:
                                       named until a later one is read */
    size_t              at;         /* in l->chans */
    struct el_chan     *hnext;      /* in l->htab */
};

struct el_req {
    uint64_t            rid;
    char               *vid;        /* the venue's id, as JSON text */
    char               *body;       /* with "id": RID */
    int                 read;       /* may be written again */
    int                 written;    /* XADD sent on this connection */
    int                 acked;      /* XADD answered with an id */
    uint64_t            queued_ms;
    unsigned            cgen;       /* the cmd connection it went on */
    struct el_req      *next;
};

/* A message for the venue, delivered from the loop, not from its send. */
struct el_out {
    char               *data;
    size_t              len;
    struct el_out      *next;
};

/* Per upstream, across links. */
struct dr_edge {
    char                id[80];
    uint64_t            rid_base, rid_n;
    struct edge_link   *link;       /* the newest */
    uint64_t            entries, bytes, gaps, snapshots, answers;
    uint64_t            requests, requests_lost, requests_expired;
    uint64_t            stale_answers, epoch_changes, links;
    uint64_t            stale_entries;
    uint64_t            bells, bell_gaps, all_reads, carried;
    uint64_t            lag_ms;         /* the last entry's age */
    uint64_t            lag_entries;    /* behind the streams' ends, at
                                           the last poll (the largest) */
    uint64_t            lag_poll;       /* the poll being summed */
    char                last_id[48];    /* the last entry delivered */
};

struct edge_link {
    struct dr              *d;
    struct dr_edge         *e;
    struct xg_ws           *ws;
    struct xg_rconn        *cmd, *rd;
    redisAsyncContext      *cac, *rac;
    unsigned                cgen;       /* cmd connections made */
    unsigned                rgen;
    char                    src[200];   /* PREFIX:SOURCE */
    char                    epoch[40];  /* "" until known */
    int                     epoch_asked;
    int                     opened;
    int                     dead;       /* closed or freed: quiet */
    long long               rd_id;      /* CLIENT ID of rd, -1: unknown */
    int                     reading;
    int                     in_read;    /* delivering an XREAD's entries */
    unsigned                chans_gen;  /* bumped when a channel goes */
    int                     unblocking;
    int                     dirty;      /* the read set changed */
    uint64_t                read_ms;
    char                   *ans_key;
    char                    ans_last[48];
    int                     ans_known;
    char                   *bell_key;
    uint64_t                bell_last;  /* the last bell read */
    int                     bell_known; /* bell_last is the bell's
                                           position: reading it */
    int                     bell_asking;  /* its end asked */
    int                     read_bell;  /* the XREAD in flight names it */
    uint64_t                bell_ms;    /* a bell last read (or every
                                           channel read for want of one) */
    uint64_t                read_gen;   /* XREADs sent */
    struct el_chan        **chans;
    size_t                  nchans, cap;
    struct el_chan        **htab;       /* by name */
    size_t                  hsize;
    char                   *xread;      /* a command's RESP, reused */
    size_t                  xread_cap;
    struct el_req          *reqs;
    size_t                  nreqs;
    struct el_out          *out, **out_tail;
    struct event           *ev_out;
    struct xg_timer        *ev_tick;
    uint64_t                epoch_at, interest_at;
    size_t                  lag_next;   /* the round robin of the poll */
    size_t                  lag_left;   /* of its round (el_lag_poll()) */
};

/* xg_venue_edge.c */
void el_log(int level, const struct edge_link *l, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
int el_seq_of_id(const char *id, size_t len, uint64_t *seq);
const redisReply *el_hash_get(const redisReply *rep, const char *field);
int el_epoch_is(struct edge_link *l, const char *epoch, size_t len);
struct el_chan *el_chan_lookup(struct edge_link *l, const char *name,
    size_t len);
struct el_chan *el_chan_by_key(struct edge_link *l, const char *key,
    size_t len);
void el_all_due(struct edge_link *l);
int el_on_answer(struct edge_link *l, const char *rid_s, size_t rid_len,
    const char *body, size_t body_len);
void el_bell_ask(struct edge_link *l);

/* xg_venue_edge_read.c */
void el_read(struct edge_link *l);
char *el_u64(char *p, uint64_t v);
char *el_bulk(char *p, const char *s, size_t len);
void el_buf(struct edge_link *l, size_t need);

#endif
