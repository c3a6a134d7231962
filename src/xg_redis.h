/*
 * xg_redis.h: an upstream's publisher into Redis Streams (issue 17, the
 * core side of core -> edge distribution).
 *
 *   publish redis://[:PASSWORD_REF@]HOST[:PORT] [prefix=P] [maxlen=N]
 *           [carry=N] [password=PASSWORD_REF];
 *
 * in an upstream block appends every notification the upstream fans out
 * on a channel to the stream PREFIX:UPSTREAM:CHANNEL with
 *
 *   XADD KEY MAXLEN ~ N SEQ-0 seq SEQ epoch EPOCH ts MS data BYTES
 *
 * SEQ counts the channel's notifications (1, 2, ...) and is also the
 * entry's id, so an edge resumes with XREAD ... STREAMS KEY LAST_SEQ-0.
 * EPOCH is 64 random bits in hex drawn when the publisher starts (so with
 * the process), written to PREFIX:UPSTREAM:epoch (SET) at each connect;
 * the first entry of a channel in an epoch is preceded by a DEL of its
 * stream (same pipeline), so the ids restart at 1-0. BYTES is the
 * notification as local clients get it.
 *
 * The connection is exgate's own hiredis async context on the loop
 * (hiredis' libevent adapter: no thread). It connects, sends AUTH when a
 * password is set, and reconnects through the upstream's reconnect policy
 * (src/xg_reconnect.h: the same policy, breaker, stable and max_attempts
 * as the upstream's WebSocket, on a supervisor of its own). Commands are
 * pipelined and bounded (XG_REDIS_MAX_INFLIGHT commands and
 * XG_REDIS_MAX_INFLIGHT_BYTES bytes unanswered): while Redis is down,
 * connecting, or too slow to answer, a notification is dropped and
 * counted, never buffered, and its sequence number is spent all the same,
 * so a consumer sees the hole. Nothing here ever closes a client.
 *
 * Book snapshots (issue 17): beside the stream of a channel whose state
 * a whole-state message can give (a Deribit delta book), the hash
 *
 *   HSET KEY:snap seq SEQ epoch EPOCH data BYTES
 *
 * holds that state as of entry SEQ (SEQ included), so a late reader
 * delivers BYTES and then reads the stream after SEQ-0. It is sent right
 * after the XADD of entry SEQ in the same pipeline (Redis runs them in
 * that order), only when that XADD was sent: always when the entry is a
 * snapshot itself, otherwise at most once a second per channel
 * (XG_REDIS_SNAP_EVERY_MS), the text rendered by the caller only then.
 * The DEL of a new epoch takes KEY:snap with the stream.
 *
 * The bell (issue 17): after each loop pass that wrote entries,
 *
 *   XADD PREFIX:UPSTREAM:bell MAXLEN ~ 2000 N-0 epoch EPOCH ts MS
 *        ch "C1 C2 ..." [c CHANNEL s SEQ d DATA]...
 *
 * names their channels (or "all 1") and carries the entries when they
 * are few and small, so that an edge blocks on the bell and reads only
 * the channels with news (xg_redis.c, "the bell").
 *
 * Not in this slice: rediss:// (the hiredis 0.14 of Debian 12 has no
 * SSL; refused at conf time), the edge.
 */
#ifndef XG_REDIS_H
#define XG_REDIS_H

#include "xg_core.h"
#include "xg_conf.h"

#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

struct event_base;

#define XG_REDIS_DEFAULT_PORT         6379
#define XG_REDIS_DEFAULT_PREFIX       "exgate"
#define XG_REDIS_DEFAULT_MAXLEN       10000
#define XG_REDIS_MIN_MAXLEN           1000
/* carry=: a loop pass's entries ride in its bell when at most this many */
#define XG_REDIS_MAX_CARRY            128
#define XG_REDIS_MAX_MAXLEN           100000000
#define XG_REDIS_MAX_PREFIX           64
/* Unanswered commands and their bytes at most; beyond, entries drop. */
#define XG_REDIS_MAX_INFLIGHT         16384
#define XG_REDIS_MAX_INFLIGHT_BYTES   (32u * 1024 * 1024)
/* A channel's snapshot is written at most this often, but on a snapshot. */
#define XG_REDIS_SNAP_EVERY_MS        1000

/* `publish ...` of one upstream (uc->publish), owned by the conf. */
struct xg_publish_conf {
    const char  *file;
    int          line;
    struct xg_addr addr;        /* host and port */
    char        *password;      /* the secret's value, or NULL */
    char        *password_src;  /* env:NAME or file:PATH, for -T */
    char        *prefix;
    uint64_t     maxlen;
    unsigned     carry;         /* entries a bell carries, at most */
    int          tls;           /* rediss:// (src/xg_rtls.h) */
};

/* The module that owns `publish` (listed in src/xg_module.c). */
extern const struct xg_module xg_redis_module;

struct xg_redis;

/*
 * A publisher for upstream NAME after UC (borrowed; uc->publish set),
 * on BASE: it starts connecting at once. Never returns NULL.
 */
struct xg_redis *xg_redis_new(struct event_base *base, const char *name,
    const struct xg_upstream_conf *uc);
/* Closes R's connection (unanswered entries are counted lost); frees R. */
void xg_redis_free(struct xg_redis *r);

/*
 * A reload: R follows UC (borrowed) from now on and keeps its channels'
 * sequence numbers and its epoch. Another address, password or prefix
 * drops the connection and connects again at once; without `publish` in
 * UC, R disconnects and publishes nothing until one comes back.
 */
void xg_redis_reconf(struct xg_redis *r, const struct xg_upstream_conf *uc);

/* Whether R publishes (its conf has `publish`). */
int xg_redis_enabled(const struct xg_redis *r);

/* Whether an answer written now (xg_redis_answer()) goes out: R
   publishes and its connection is up. */
int xg_redis_writable(const struct xg_redis *r);

/* When R's connection came up (xg_now_ms()), or 0 when it is down. */
uint64_t xg_redis_ready_ms(const struct xg_redis *r);

/*
 * The whole state of a channel as of the entry just queued, as one
 * notification of its own (a Deribit book "snapshot"): malloc'd text (the
 * publisher frees it) with its length in *LEN, or NULL when there is none
 * now (not a channel with such a state, or not in sync).
 */
typedef char *xg_redis_snap_fn(void *arg, size_t *len);

/*
 * One notification DATA (LEN bytes) on channel CHAN: its sequence number
 * is taken, then the entry is queued to Redis or, when it cannot be now,
 * dropped and counted. Once the entry is queued and the channel's
 * snapshot is due, SNAP(ARG) (when SNAP is not NULL) renders it, and its
 * HSET follows the XADD. Never blocks, never fails loudly.
 */
void xg_redis_publish(struct xg_redis *r, const char *chan,
    const char *data, size_t len, xg_redis_snap_fn *snap, void *arg);

/*
 * Same for DATA, a notification that is itself the channel's whole state
 * (a Deribit book "snapshot"): once the entry is queued, DATA is written
 * as the channel's snapshot too, whenever the last one was.
 */
void xg_redis_publish_snapshot(struct xg_redis *r, const char *chan,
    const char *data, size_t len);

/*
 * UP's publisher when its conf has `publish`, else NULL: what the
 * session's fan-out tests (src/xg_upstream.c).
 */
struct xg_upstream;
struct xg_redis *xg_upstream_publisher(const struct xg_upstream *up);

/*
 * Interest (issue 17): edges declare the channels their bots hold with
 * ZADD PREFIX:UPSTREAM:interest EXPIRY_UNIX_MS CHANNEL, refreshed every
 * ttl/3 (ttl XG_REDIS_INTEREST_TTL_MS).
 */
#define XG_REDIS_INTEREST_TTL_MS      30000
#define XG_REDIS_INTEREST_MAX         10000   /* channels read at most */

/*
 * An interest poll's result: the channels NAMES[0..N-1] some edge wants
 * now (borrowed for the call), or NAMES NULL when the poll got no answer
 * (connection lost, error reply).
 */
typedef void xg_redis_interest_fn(void *arg, char *const *names, size_t n);

/*
 * Polls R's interest set on its connection, pipelined with the entries:
 * ZREMRANGEBYSCORE KEY -inf NOW (the expired go), then ZRANGEBYSCORE KEY
 * (NOW +inf LIMIT 0 XG_REDIS_INTEREST_MAX; FN(ARG, ...) gets the answer
 * later, unless cancelled. Returns XG_ERROR (FN not called) when R is not
 * connected or a poll of R is still unanswered.
 */
int xg_redis_interest_poll(struct xg_redis *r, xg_redis_interest_fn *fn,
    void *arg);
/* The unanswered poll of ARG, if any, calls nothing when answered. */
void xg_redis_interest_cancel(struct xg_redis *r, void *arg);

/*
 * Requests from edges (issue 17; served by the Deribit venue,
 * modules/venue/xg_venue_deribit_edges.c): the answer to an edge's
 * request goes to its own stream, PREFIX:UPSTREAM:ans:EDGE, trimmed to
 * about XG_REDIS_ANSWERS_MAXLEN entries.
 */
#define XG_REDIS_ANSWERS_MAXLEN       10000

/*
 * Writes DATA (LEN bytes), the answer to request RID of edge EDGE (both
 * checked by the caller: EDGE a safe name, RID decimal), pipelined with
 * the entries: XADD PREFIX:UPSTREAM:ans:EDGE MAXLEN ~ N * rid RID body
 * DATA. XG_ERROR when it cannot be now (not connected, too much
 * unanswered): the caller counts it lost.
 */
int xg_redis_answer(struct xg_redis *r, const char *edge, const char *rid,
    const char *data, size_t len);

/*
 * The entries a bell carries (src/xg_redis.c, "the bell") are one field,
 * "e": a record each, back to back,
 *
 *   CHANNEL SP SEQ SP LEN LF DATA
 *
 * CHANNEL without spaces (the bell's "ch" is space-separated too), SEQ
 * (at least 1) and LEN decimal. A record's head is at most
 * XG_REDIS_CARRIED_HEAD bytes besides CHANNEL.
 */
#define XG_REDIS_CARRIED_HEAD         43

struct xg_redis_carried {
    const char  *chan;
    size_t       clen;
    const char  *seq;           /* its digits, SEQLEN of them */
    size_t       seqlen;
    uint64_t     seqn;
    const char  *data;
    size_t       len;
};

/* Writes the record of DATA (LEN bytes), entry SEQ of CHAN (CLEN bytes),
   at BUF, which has room for CLEN + XG_REDIS_CARRIED_HEAD + LEN bytes;
   returns the bytes written. */
size_t xg_redis_carried_put(char *buf, const char *chan, size_t clen,
    uint64_t seq, const char *data, size_t len);

/*
 * The record at *P (before END) into *REC (pointing into the buffer),
 * and *P past it: 1. At END: 0. A malformed record: -1, *P unchanged.
 */
int xg_redis_carried_next(const char **p, const char *end,
    struct xg_redis_carried *rec);

/*
 * The bells a publisher's bell stream keeps: the newest whose sizes (the
 * names and what each carries) sum to at most XG_REDIS_BELL_KEEP_BYTES,
 * at least XG_REDIS_BELL_MINLEN and at most XG_REDIS_BELL_MAXLEN of them
 * (src/xg_redis.c, "the bell").
 */
#define XG_REDIS_BELL_MAXLEN        2000
#define XG_REDIS_BELL_MINLEN        16
#define XG_REDIS_BELL_KEEP_BYTES    (512 * 1024)

struct xg_redis_bell_keep {
    uint32_t    sizes[XG_REDIS_BELL_MAXLEN];   /* a ring, oldest at head */
    size_t      head, n;
    size_t      bytes;                          /* the sum of the n */
};

/* The stream is empty (the bell was DELeted). */
void xg_redis_bell_keep_reset(struct xg_redis_bell_keep *k);

/* A bell of SIZE bytes goes in: the MAXLEN its XADD trims to (the bells
   the stream keeps, this one included). */
size_t xg_redis_bell_keep(struct xg_redis_bell_keep *k, size_t size);

/* Adds R's figures to OBJ as "publish": {...}; never the password. */
void xg_redis_status(const struct xg_redis *r, json_t *obj);

#endif
