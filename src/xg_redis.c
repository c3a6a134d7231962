/*
 * xg_redis.c: an upstream's publisher into Redis Streams (see
 * xg_redis.h), and its `publish` directive.
 *
 * The connection is an xg_rconn (src/xg_rconn.h: connect, AUTH,
 * timeouts, the reconnect policy); only while it is ready are entries
 * written, otherwise they are dropped.
 *
 * hiredis calls every reply callback in order, so the sizes of the
 * unanswered XADDs are a FIFO ring: a reply (or, when the context is
 * freed, the NULL reply of each command it still had) pops one. A new
 * context is only made from a timer, so the replies of two contexts never
 * interleave.
 */
#include "xg_core.h"
#include "xg_redis.h"
#include "xg_log.h"
#include "xg_rconn.h"
#include "xg_timer.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/event.h>
#include <hiredis/hiredis.h>
#include <hiredis/async.h>
#include <openssl/crypto.h>

/* One channel ever published: its stream key and its sequence number. */
struct rd_chan {
    char            *name;
    char            *key;       /* PREFIX:UPSTREAM:CHANNEL:snap, the
                                   stream's key its first KEYLEN bytes */
    size_t           keylen;
    uint64_t         seq;       /* the last one taken */
    uint64_t         snap_ms;   /* last snapshot tried (0: due now) */
    int              cleared;   /* its stream DELeted in this epoch */
    uint64_t         rung;      /* the bell it was last named in */
    struct rd_chan  *hnext;
};

#define RD_SNAP_SUFFIX      ":snap"
#define RD_SNAP_SUFFIX_LEN  (sizeof(RD_SNAP_SUFFIX) - 1)
/* A bell names at most this many bytes of channels; past it, "all". */
#define RD_BELL_MAX_NAMES   16384
/* With no bell for this long, an empty one: a lost bell shows as a hole
   in the numbers within it, and a quiet core is told from a gone one. */
#define RD_BELL_IDLE_MS     1000
/* A pass's entries ride in its bell when they are at most carry= (at
   most XG_REDIS_MAX_CARRY) and this small in all. */
#define RD_BELL_INLINE_BYTES    32768
#define RD_BELL_ARGS            14
/* A bell that carries at least this many entries, sent when nothing of
   the publisher's is unanswered, is answered before its entries go
   (rd_on_bell()): their XADDs would cost Redis more than the second
   write costs the core and Redis (a pass of one entry: 3 us of Redis,
   and 40 us more of the edge's latency when waited for, measured). */
#define RD_BELL_WAIT_MIN        16

/* A command formatted and held for the end of the pass (rd_send()). */
struct rd_def {
    char               *cmd;
    size_t              len;
    redisCallbackFn    *fn;
    void               *priv;
    size_t              size;       /* for rd_push(), when push */
    int                 push;
};

struct xg_redis {
    struct event_base              *base;
    char                           *name;      /* the upstream's */
    const struct xg_upstream_conf  *uc;        /* borrowed; reconf swaps */
    const struct xg_publish_conf   *pc;        /* uc->publish, or NULL */
    char                            epoch[17];

    struct xg_rconn                *conn;       /* NULL: no `publish` */
    redisAsyncContext              *ac;         /* while it is ready */
    int                             err_logged;  /* this connection */

    /* the unanswered XADDs' sizes, a FIFO ring */
    uint32_t                       *ring;
    size_t                          ring_head, inflight;
    size_t                          inflight_bytes;

    struct rd_chan                **buckets;
    size_t                          nbuckets, nchans;

    uint64_t                        published;   /* XADDs Redis accepted */
    uint64_t                        bytes;       /* their data bytes */
    uint64_t                        snapshots;   /* HSETs Redis accepted */
    uint64_t                        dropped;     /* not written */
    uint64_t                        lost;        /* written, no answer */
    uint64_t                        errors;      /* error replies */
    char                            last_id[48];
    char                            last_error[160];

    /* the interest poll in flight (xg_redis_interest_poll()) */
    xg_redis_interest_fn           *ifn;
    void                           *iarg;
    int                             ipending;
    uint64_t                        ipolls;      /* answered */
    size_t                          iwanted;     /* the last answer's */

    /* answers to edges' requests (xg_redis_answer()) */
    size_t                          ans_inflight;
    uint64_t                        ans_lost;    /* written, no answer */

    /* the bell (rd_ring()): the channels written in this loop pass */
    struct event                   *ev_bell;
    int                             bell_armed;
    int                             bell_all;    /* name them all */
    int                             bell_idle;   /* an empty one due */
    struct xg_timer                *ev_idle;
    uint64_t                        bell_ms;     /* the last one sent */
    int                             bell_cleared;  /* DELeted this epoch */
    uint64_t                        bell_seq;    /* the last one taken */
    char                           *bell_names;  /* space-separated */
    size_t                          bell_len;
    size_t                          bell_nents;  /* carried */
    int                             bell_over;   /* too many to carry */
    char                           *bell_data;   /* their records */
    size_t                          bell_dlen;
    const char                    **bell_argv;   /* the bell's XADD */
    size_t                         *bell_argl;
    uint64_t                        bells;       /* written */
    struct xg_redis_bell_keep       bell_keep;   /* what the stream has */

    /* the pass's commands held back while its bell may carry them
       (rd_send()): sent after that bell, or before one that does not;
       and every command while a carrying bell is unanswered */
    struct rd_def                  *def;
    size_t                          ndef, def_cap, def_bytes;
    uint64_t                        ready_ms;    /* this connection's */
    int                             bell_wait;   /* that bell's answer */
    uint64_t                        bell_waits;  /* waited for, in all */
};

static void
rd_log(int level, const struct xg_redis *r, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void
rd_log(int level, const struct xg_redis *r, const char *fmt, ...)
{
    char msg[512];
    va_list ap;

    if (level > xg_log_level) {
        return;
    }
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    xg_log(level, "publish %s -> redis %s: %s", r->name,
        r->conn != NULL ? xg_rconn_where(r->conn) : "-", msg);
}

static void
rd_copy(char *dst, size_t len, const char *src, size_t n)
{
    if (n >= len) {
        n = len - 1;
    }
    memcpy(dst, src, n);
    dst[n] = '\0';
}

/* ---- channels ------------------------------------------------------------ */

static size_t
rd_hash(const char *s)
{
    size_t h = 5381;

    while (*s != '\0') {
        h = h * 33 + (unsigned char) *s++;
    }
    return h;
}

static void
rd_chan_key(struct xg_redis *r, struct rd_chan *c)
{
    const char *prefix = r->pc != NULL ? r->pc->prefix
        : XG_REDIS_DEFAULT_PREFIX;
    size_t n = strlen(prefix) + strlen(r->name) + strlen(c->name) + 3
        + RD_SNAP_SUFFIX_LEN;

    free(c->key);
    c->key = xg_malloc(n);
    c->keylen = (size_t) snprintf(c->key, n, "%s:%s:%s" RD_SNAP_SUFFIX,
        prefix, r->name, c->name) - RD_SNAP_SUFFIX_LEN;
}

static struct rd_chan *
rd_chan_get(struct xg_redis *r, const char *name)
{
    struct rd_chan *c, **nb;
    size_t i, h = rd_hash(name);

    for (c = r->buckets[h % r->nbuckets]; c != NULL; c = c->hnext) {
        if (strcmp(c->name, name) == 0) {
            return c;
        }
    }
    if (r->nchans >= r->nbuckets * 2) {
        nb = xg_calloc(r->nbuckets * 4, sizeof(*nb));
        for (i = 0; i < r->nbuckets; i++) {
            while ((c = r->buckets[i]) != NULL) {
                r->buckets[i] = c->hnext;
                c->hnext = nb[rd_hash(c->name) % (r->nbuckets * 4)];
                nb[rd_hash(c->name) % (r->nbuckets * 4)] = c;
            }
        }
        free(r->buckets);
        r->buckets = nb;
        r->nbuckets *= 4;
    }
    c = xg_calloc(1, sizeof(*c));
    c->name = xg_strdup(name);
    rd_chan_key(r, c);
    c->hnext = r->buckets[h % r->nbuckets];
    r->buckets[h % r->nbuckets] = c;
    r->nchans++;
    return c;
}

/* ---- the connection ------------------------------------------------------ */

static void rd_bell_arm(struct xg_redis *r);
static void rd_send_held(struct xg_redis *r);

static void
rd_on_set(redisAsyncContext *ac, void *reply, void *priv)
{
    struct xg_redis *r = priv;
    redisReply *rep = reply;

    if (ac->data == NULL || rep == NULL || rep->type != REDIS_REPLY_ERROR) {
        return;
    }
    r->errors++;
    rd_copy(r->last_error, sizeof(r->last_error), rep->str, rep->len);
    rd_log(XG_LOG_ERROR, r, "SET epoch failed: %s", r->last_error);
}

static void
rd_on_ready(void *arg, redisAsyncContext *ac)
{
    struct xg_redis *r = arg;
    char key[XG_REDIS_MAX_PREFIX + 300];
    struct rd_chan *c;
    size_t i;

    r->ac = ac;
    r->ready_ms = xg_now_ms();
    r->err_logged = 0;
    r->last_error[0] = '\0';
    /* first in the pipeline: an edge reading the key after an entry of
       this connection sees this epoch */
    snprintf(key, sizeof(key), "%s:%s:epoch", r->pc->prefix, r->name);
    (void) redisAsyncCommand(ac, rd_on_set, r, "SET %s %s", key, r->epoch);
    /* this Redis may have lost the snapshots (a restart): every channel's
       is due with its next entry */
    for (i = 0; i < r->nbuckets; i++) {
        for (c = r->buckets[i]; c != NULL; c = c->hnext) {
            c->snap_ms = 0;
        }
    }
    /* the last connection's last entries may be in Redis without their
       bell: this one names every channel */
    r->bell_all = 1;
    rd_bell_arm(r);
}

static void
rd_on_down(void *arg, const char *reason)
{
    struct xg_redis *r = arg;

    r->ac = NULL;
    rd_copy(r->last_error, sizeof(r->last_error), reason, strlen(reason));
    rd_send_held(r);        /* dropped */
}

static void
rd_note(void *arg, char *buf, size_t len)
{
    struct xg_redis *r = arg;

    snprintf(buf, len, " (%llu dropped so far)",
        (unsigned long long) r->dropped);
}

static const struct xg_rconn_cbs rd_conn_cbs = {
    rd_on_ready,
    rd_on_down,
    rd_note
};

/* A connection for R's conf (r->pc set), started. */
static void
rd_conn_new(struct xg_redis *r)
{
    char prefix[400];

    snprintf(prefix, sizeof(prefix), "publish %s -> redis %s%s%s:%u",
        r->name, strchr(r->pc->addr.host, ':') != NULL ? "[" : "",
        r->pc->addr.host, strchr(r->pc->addr.host, ':') != NULL ? "]" : "",
        (unsigned) r->pc->addr.port);
    r->conn = xg_rconn_new(r->base, prefix, &r->pc->addr, r->pc->password,
        r->uc, &rd_conn_cbs, r);
    xg_rconn_set_tls(r->conn, r->pc->tls, r->uc->tls_ca, r->uc->tls_verify);
    xg_rconn_start(r->conn);
}

/* ---- entries ------------------------------------------------------------- */

/* The size of the oldest unanswered XADD or HSET, popped: its answer is
   in (hiredis answers in order). */
static uint32_t
rd_pop(struct xg_redis *r)
{
    uint32_t size;

    if (r->inflight == 0) {
        return 0;   /* cannot happen: every XADD and HSET pushed one */
    }
    size = r->ring[r->ring_head];
    r->ring_head = (r->ring_head + 1) % XG_REDIS_MAX_INFLIGHT;
    r->inflight--;
    r->inflight_bytes -= size;
    return size;
}

/* Whether a command of LEN more bytes may be sent now. */
static int
rd_room(const struct xg_redis *r, size_t len)
{
    return r->ac != NULL
        && r->inflight + r->ndef < XG_REDIS_MAX_INFLIGHT
        && len + r->def_bytes <= XG_REDIS_MAX_INFLIGHT_BYTES
                                 - r->inflight_bytes;
}

static void
rd_push(struct xg_redis *r, size_t len)
{
    size_t tail = (r->ring_head + r->inflight) % XG_REDIS_MAX_INFLIGHT;

    r->ring[tail] = (uint32_t) len;
    r->inflight++;
    r->inflight_bytes += len;
}

static void rd_on_xadd(redisAsyncContext *ac, void *reply, void *priv);
static void rd_on_del(redisAsyncContext *ac, void *reply, void *priv);
static void rd_on_bell_del(redisAsyncContext *ac, void *reply, void *priv);

/* Holds CMD (LEN bytes, formatted; the held list frees it) for
   rd_send_held(). */
static void
rd_hold(struct xg_redis *r, char *cmd, int len, redisCallbackFn *fn,
    void *priv, int push, size_t size)
{
    struct rd_def *d;

    if (r->ndef == r->def_cap) {
        r->def_cap = r->def_cap == 0 ? 64 : 2 * r->def_cap;
        r->def = xg_realloc(r->def, r->def_cap * sizeof(*r->def));
    }
    d = &r->def[r->ndef++];
    d->cmd = cmd;
    d->len = (size_t) len;
    d->fn = fn;
    d->priv = priv;
    d->size = size;
    d->push = push;
    if (push) {
        r->def_bytes += size;
    }
}

/*
 * Sends a command of the pass's entries (an entry's DEL, XADD or
 * snapshot HSET; PUSH: counted in flight with SIZE bytes). While the
 * pass's bell may still carry its entries (carry= above 0 and not yet
 * over it), the command is formatted and held, and goes out after that
 * bell (rd_on_bell()): an edge then has the pass's entries once Redis
 * ran one XADD, not after all of them. While such a bell is unanswered
 * every command is held (see rd_on_bell()). Returns REDIS_OK or
 * REDIS_ERR.
 */
static int
rd_send(struct xg_redis *r, redisCallbackFn *fn, void *priv, int push,
    size_t size, const char *fmt, ...)
{
    va_list ap;
    char *cmd;
    int rc, len;

    va_start(ap, fmt);
    if ((r->pc->carry == 0 || r->bell_over) && !r->bell_wait) {
        rc = redisvAsyncCommand(r->ac, fn, priv, fmt, ap);
        va_end(ap);
        if (rc == REDIS_OK && push) {
            rd_push(r, size);
        }
        return rc;
    }
    len = redisvFormatCommand(&cmd, fmt, ap);
    va_end(ap);
    if (len < 0) {
        return REDIS_ERR;
    }
    rd_hold(r, cmd, len, fn, priv, push, size);
    rd_bell_arm(r);
    return REDIS_OK;
}

/*
 * Sends the held commands, in order, unless a carrying bell's answer is
 * awaited; with no connection (it went) they are dropped: an XADD counts
 * dropped (its seq spent: edges see the hole), a DEL is due again, a
 * bell is not written (its number spent: edges read all).
 */
static void
rd_send_held(struct xg_redis *r)
{
    struct rd_def *d;
    size_t i;

    if (r->bell_wait) {
        if (r->ac != NULL) {
            return;
        }
        r->bell_wait = 0;
    }
    for (i = 0; i < r->ndef; i++) {
        d = &r->def[i];
        if (r->ac != NULL
            && redisAsyncFormattedCommand(r->ac, d->fn, d->priv, d->cmd,
                d->len) == REDIS_OK)
        {
            if (d->push) {
                rd_push(r, d->size);
            }
        } else if (d->fn == rd_on_xadd) {
            r->dropped++;
        } else if (d->fn == rd_on_del) {
            ((struct rd_chan *) d->priv)->cleared = 0;
        } else if (d->fn == rd_on_bell_del) {
            r->bell_cleared = 0;
        }
        redisFreeCommand(d->cmd);
    }
    r->ndef = 0;
    r->def_bytes = 0;
}

/* An error answer (or one of another type) to WHAT: counted, kept, and
   logged once per connection (a misconfigured Redis answers every one). */
static void
rd_error(struct xg_redis *r, const redisReply *rep, const char *what)
{
    r->errors++;
    if (rep->type == REDIS_REPLY_ERROR) {
        rd_copy(r->last_error, sizeof(r->last_error), rep->str, rep->len);
    } else {
        snprintf(r->last_error, sizeof(r->last_error), "%s: unexpected "
            "reply type %d", what, rep->type);
    }
    if (!r->err_logged) {
        r->err_logged = 1;
        rd_log(XG_LOG_ERROR, r, "%s failed: %s", what, r->last_error);
    }
}

static void
rd_on_xadd(redisAsyncContext *ac, void *reply, void *priv)
{
    struct xg_redis *r = priv;
    redisReply *rep = reply;
    uint32_t size;

    size = rd_pop(r);
    if (rep == NULL) {
        r->lost++;
        return;
    }
    if (rep->type == REDIS_REPLY_STRING) {
        r->published++;
        r->bytes += size;
        rd_copy(r->last_id, sizeof(r->last_id), rep->str, rep->len);
        return;
    }
    rd_error(r, rep, "XADD");
}

/* A snapshot's HSET answered (a lost one is not counted: it was no
   entry, and the next one replaces it). */
static void
rd_on_snap(redisAsyncContext *ac, void *reply, void *priv)
{
    struct xg_redis *r = priv;
    redisReply *rep = reply;

    (void) rd_pop(r);
    if (rep == NULL) {
        return;
    }
    if (rep->type == REDIS_REPLY_INTEGER) {
        r->snapshots++;
        return;
    }
    rd_error(r, rep, "HSET snapshot");
}

/* A DEL of a channel's stream (and snapshot) answered: if it was not
   done, the next entry sends it again. */
static void
rd_on_del(redisAsyncContext *ac, void *reply, void *priv)
{
    struct rd_chan *c = priv;
    redisReply *rep = reply;

    if (rep == NULL || rep->type != REDIS_REPLY_INTEGER) {
        c->cleared = 0;
    }
}

/*
 * C's snapshot SNAP (SLEN bytes) as of entry C->seq, just queued: its
 * HSET follows. Returns 0 when there is no room for it now.
 */
static int
rd_snap_write(struct xg_redis *r, struct rd_chan *c, const char *snap,
    size_t slen)
{
    if (!rd_room(r, slen)
        || rd_send(r, rd_on_snap, r, 1, slen,
            "HSET %b seq %llu epoch %s data %b", c->key,
            c->keylen + RD_SNAP_SUFFIX_LEN, (unsigned long long) c->seq,
            r->epoch, snap, slen) != REDIS_OK)
    {
        return 0;
    }
    return 1;
}

/* ---- the bell -------------------------------------------------------------- */

/*
 * An edge reads its channels only when told they have news: it blocks on
 * one stream, PREFIX:UPSTREAM:bell, instead of on every channel it holds
 * (an XREAD costs Redis about 2 000 instructions per key named, news or
 * not, and as much again to block on it: 101 keys were 200 us of Redis
 * time per wake, 10 000 would be 20 ms). At the end of each loop pass
 * that wrote entries, one
 *
 *   XADD PREFIX:UPSTREAM:bell MAXLEN ~ 2000 N-0 epoch EPOCH ts MS
 *        ch "C1 C2 ..." [e RECORDS]
 *
 * names the channels written in it, and carries the entries themselves
 * when they are at most carry= and RD_BELL_INLINE_BYTES (an edge
 * delivers those without reading their streams): all of them in one
 * field (xg_redis_carried_put()), because Redis stores and replies each
 * field as an element of its own (with a field per channel, seq and data,
 * a bell of 100 entries cost Redis about 20 000 instructions per entry on
 * top of the entry's own XADD, ahead of every edge); or it says
 * "all 1": more than RD_BELL_MAX_NAMES bytes of names, or the first bell
 * after a connect, which may follow entries of the connection before
 * whose bell never went.
 * A bell that only names goes after the entries' XADDs in the same
 * pipeline, so Redis has every entry it names; one that carries them
 * goes before them (rd_send()), so that an edge has the pass's entries
 * after one XADD of Redis' time, not after all of them (an edge reads
 * a channel whose carried entry it could not take until its stream has
 * it). N counts the bells of the epoch, taken whether the
 * bell is written or not: an edge that sees a jump reads everything.
 */
static void
rd_on_bell_del(redisAsyncContext *ac, void *reply, void *priv)
{
    struct xg_redis *r = priv;
    redisReply *rep = reply;

    if (ac->data != NULL && (rep == NULL || rep->type != REDIS_REPLY_INTEGER)) {
        r->bell_cleared = 0;
    }
}

static void
rd_on_bell_xadd(redisAsyncContext *ac, void *reply, void *priv)
{
    struct xg_redis *r = priv;
    redisReply *rep = reply;

    (void) rd_pop(r);
    if (rep == NULL) {
        return;
    }
    if (rep->type == REDIS_REPLY_STRING) {
        r->bells++;
        return;
    }
    rd_error(r, rep, "XADD bell");
}

/* The answer to a bell that carried entries: what was held meanwhile
   goes now (see rd_on_bell()). */
static void
rd_on_bell_waited(redisAsyncContext *ac, void *reply, void *priv)
{
    struct xg_redis *r = priv;

    rd_on_bell_xadd(ac, reply, priv);
    /* no reply: the connection went, and rd_on_down() drops them */
    if (reply != NULL && r->bell_wait && r->ac == ac) {
        r->bell_wait = 0;
        rd_send_held(r);
    }
}

static void
rd_on_bell(evutil_socket_t fd, short what, void *arg)
{
    struct xg_redis *r = arg;
    char key[XG_REDIS_MAX_PREFIX + 300], id[32], ts[24], maxlen[16];
    const char **argv = r->bell_argv;
    size_t *argl = r->bell_argl, size;
    int all = r->bell_all || r->bell_len > RD_BELL_MAX_NAMES, n = 0;
    int carries, wait, len;
    char *cmd;

    r->bell_armed = 0;
    if (r->pc == NULL || (r->bell_len == 0 && !r->bell_all
                          && !r->bell_idle))
    {
        goto done;
    }
    carries = !all && !r->bell_over && r->bell_nents > 0
              && r->bell_len > 0;
    if (!carries) {
        rd_send_held(r);    /* a bell that carries nothing follows them */
    }
    r->bell_seq++;
    r->bell_all = 0;
    r->bell_idle = 0;
    r->bell_ms = xg_now_ms();
    size = r->bell_len + (r->bell_over ? 0 : r->bell_dlen);
    snprintf(key, sizeof(key), "%s:%s:bell", r->pc->prefix, r->name);
    if (!rd_room(r, size)) {
        goto done;      /* the seq jumps: edges read all */
    }
    if (!r->bell_cleared) {
        if (r->bell_wait) {
            if ((len = redisFormatCommand(&cmd, "DEL %s", key)) < 0) {
                goto done;
            }
            rd_hold(r, cmd, len, rd_on_bell_del, r, 0, 0);
        } else if (redisAsyncCommand(r->ac, rd_on_bell_del, r, "DEL %s",
                       key) != REDIS_OK)
        {
            goto done;
        }
        r->bell_cleared = 1;
        xg_redis_bell_keep_reset(&r->bell_keep);
    }
    /* what this bell holds in the stream: an "all" or "idle" one next
       to nothing */
    snprintf(maxlen, sizeof(maxlen), "%zu",
        xg_redis_bell_keep(&r->bell_keep, all || r->bell_len == 0 ? 0
            : r->bell_len + (!r->bell_over && r->bell_nents > 0
                             ? r->bell_dlen : 0)));
    snprintf(id, sizeof(id), "%llu-0", (unsigned long long) r->bell_seq);
    snprintf(ts, sizeof(ts), "%llu",
        (unsigned long long) (xg_wall_us() / 1000));
#define RD_ARG(s, l)  do { argv[n] = (s); argl[n++] = (l); } while (0)
    RD_ARG("XADD", 4);
    RD_ARG(key, strlen(key));
    RD_ARG("MAXLEN", 6);
    RD_ARG("~", 1);
    RD_ARG(maxlen, strlen(maxlen));
    RD_ARG(id, strlen(id));
    RD_ARG("epoch", 5);
    RD_ARG(r->epoch, strlen(r->epoch));
    RD_ARG("ts", 2);
    RD_ARG(ts, strlen(ts));
    if (all) {
        RD_ARG("all", 3);
        RD_ARG("1", 1);
    } else if (r->bell_len == 0) {
        RD_ARG("idle", 4);
        RD_ARG("1", 1);
    } else {
        RD_ARG("ch", 2);
        RD_ARG(r->bell_names, r->bell_len);
        if (!r->bell_over && r->bell_nents > 0) {
            RD_ARG("e", 1);
            RD_ARG(r->bell_data, r->bell_dlen);
        }
    }
#undef RD_ARG
    if (r->bell_wait) {
        /* in order, after what is held */
        if ((len = redisFormatCommandArgv(&cmd, n, argv, argl)) >= 0) {
            rd_hold(r, cmd, len, rd_on_bell_xadd, r, 1, size);
        }
    } else {
        /* worth a wait: many entries, and Redis has nothing of ours
           before the bell (busy, it answers the bell only after that) */
        wait = carries && r->bell_nents >= RD_BELL_WAIT_MIN
               && r->inflight == 0;
        if (redisAsyncCommandArgv(r->ac,
                wait ? rd_on_bell_waited : rd_on_bell_xadd, r, n, argv,
                argl) == REDIS_OK)
        {
            rd_push(r, size);
            r->bell_wait = wait;
            r->bell_waits += wait;
        }
    }
done:
    rd_send_held(r);        /* after the bell, once it is answered */
    r->bell_len = 0;
    r->bell_nents = 0;
    r->bell_dlen = 0;
    r->bell_over = 0;
}

/* Bells kept: a reader further behind reads every channel once. At
   most two of its XREAD COUNTs (one batch behind is no hole), and the
   newest that sum to at most XG_REDIS_BELL_KEEP_BYTES, but never fewer
   than XG_REDIS_BELL_MINLEN: what a bell carries is in
   the channels' streams too, and a stream that grows costs Redis fresh
   memory on every XADD (a bell of 30 kB: 19 us of Redis' time while the
   stream grows, 4.5 us once it is trimmed and its memory reused,
   measured with INFO commandstats; 2000 such bells would be 60 MB). */
void
xg_redis_bell_keep_reset(struct xg_redis_bell_keep *k)
{
    k->head = 0;
    k->n = 0;
    k->bytes = 0;
}

size_t
xg_redis_bell_keep(struct xg_redis_bell_keep *k, size_t size)
{
    uint32_t s = size > UINT32_MAX ? UINT32_MAX : (uint32_t) size;

    if (k->n == XG_REDIS_BELL_MAXLEN) {
        k->bytes -= k->sizes[k->head];
        k->head = (k->head + 1) % XG_REDIS_BELL_MAXLEN;
        k->n--;
    }
    k->sizes[(k->head + k->n) % XG_REDIS_BELL_MAXLEN] = s;
    k->bytes += s;
    k->n++;
    while (k->n > XG_REDIS_BELL_MINLEN
           && k->bytes > XG_REDIS_BELL_KEEP_BYTES)
    {
        k->bytes -= k->sizes[k->head];
        k->head = (k->head + 1) % XG_REDIS_BELL_MAXLEN;
        k->n--;
    }
    return k->n;
}

/* V in decimal at BUF (room for 20 digits); returns the digits written.
   (snprintf's vfprintf was a tenth of an edge's instructions per
   carried entry.) */
static size_t
rd_u64(char *buf, uint64_t v)
{
    char tmp[20];
    size_t n = 0, i;

    do {
        tmp[n++] = (char) ('0' + v % 10);
        v /= 10;
    } while (v != 0);
    for (i = 0; i < n; i++) {
        buf[i] = tmp[n - 1 - i];
    }
    return n;
}

size_t
xg_redis_carried_put(char *buf, const char *chan, size_t clen, uint64_t seq,
    const char *data, size_t len)
{
    char *p = buf;

    memcpy(p, chan, clen);
    p += clen;
    *p++ = ' ';
    p += rd_u64(p, seq);
    *p++ = ' ';
    p += rd_u64(p, len);
    *p++ = '\n';
    memcpy(p, data, len);
    return (size_t) (p - buf) + len;
}

/* A decimal number of at most 20 digits at *P, ending at STOP (consumed):
   its value in *V, *P past STOP; or -1. */
static int
rd_carried_num(const char **p, const char *end, char stop, uint64_t *v)
{
    const char *s = *p;
    uint64_t n = 0, d;

    while (s < end && *s >= '0' && *s <= '9') {
        d = (uint64_t) (*s - '0');
        if (n > (UINT64_MAX - d) / 10) {
            return -1;
        }
        n = n * 10 + d;
        s++;
    }
    if (s == *p || s == end || *s != stop
        || (**p == '0' && s - *p > 1))
    {
        return -1;      /* none, not ended by STOP, or a leading 0 */
    }
    *v = n;
    *p = s + 1;
    return 0;
}

int
xg_redis_carried_next(const char **p, const char *end,
    struct xg_redis_carried *rec)
{
    const char *s = *p, *sp;
    uint64_t len;

    if (s == end) {
        return 0;
    }
    sp = memchr(s, ' ', (size_t) (end - s));
    if (sp == NULL || sp == s) {
        return -1;
    }
    rec->chan = s;
    rec->clen = (size_t) (sp - s);
    s = sp + 1;
    rec->seq = s;
    if (rd_carried_num(&s, end, ' ', &rec->seqn) != 0 || rec->seqn == 0) {
        return -1;
    }
    rec->seqlen = (size_t) (s - 1 - rec->seq);
    if (rd_carried_num(&s, end, '\n', &len) != 0
        || len > (uint64_t) (end - s))
    {
        return -1;
    }
    rec->data = s;
    rec->len = (size_t) len;
    *p = s + len;
    return 1;
}

/* Twice every RD_BELL_IDLE_MS: an empty bell when none went for it. */
static void
rd_on_idle(evutil_socket_t fd, short what, void *arg)
{
    struct xg_redis *r = arg;

    if (r->ac != NULL && xg_now_ms() - r->bell_ms >= RD_BELL_IDLE_MS) {
        r->bell_idle = 1;
        rd_bell_arm(r);
    }
}

/* Arms the bell for the end of this loop pass. */
static void
rd_bell_arm(struct xg_redis *r)
{
    if (!r->bell_armed) {
        r->bell_armed = 1;
        event_active(r->ev_bell, 0, 0);
    }
}

/*
 * C's entry DATA (LEN bytes, seq c->seq) was just written: the pass's
 * bell names C, once, and carries the entry itself while the pass's
 * entries are few and small (an edge then needs no second read).
 */
static void
rd_ring(struct xg_redis *r, struct rd_chan *c, const char *data, size_t len)
{
    size_t n = strlen(c->name);

    if (!r->bell_over) {
        if (r->bell_nents >= r->pc->carry
            || r->bell_dlen + n + len + XG_REDIS_CARRIED_HEAD
               > RD_BELL_INLINE_BYTES)
        {
            /* the bell names them only: an edge reads their streams, so
               the entries go before it, the rest of the pass at once */
            r->bell_over = 1;
            rd_send_held(r);
        } else {
            r->bell_nents++;
            r->bell_dlen += xg_redis_carried_put(r->bell_data + r->bell_dlen,
                c->name, n, c->seq, data, len);
        }
    }
    rd_bell_arm(r);
    if (c->rung == r->bell_seq + 1) {
        return;
    }
    c->rung = r->bell_seq + 1;
    if (r->bell_len <= RD_BELL_MAX_NAMES) {
        if (r->bell_len + n + 1 <= RD_BELL_MAX_NAMES + 1) {
            if (r->bell_len > 0) {
                r->bell_names[r->bell_len++] = ' ';
            }
            memcpy(r->bell_names + r->bell_len, c->name, n);
            r->bell_len += n;
        } else {
            r->bell_len = RD_BELL_MAX_NAMES + 1;    /* all */
        }
    }
}

/*
 * An entry of CHAN: DATA is the channel's whole state itself (SELF 1),
 * or SNAP(ARG) renders it when it is due (SNAP NULL: never).
 */
static void
rd_publish(struct xg_redis *r, const char *chan, const char *data,
    size_t len, int self, xg_redis_snap_fn *snap, void *arg)
{
    struct rd_chan *c;
    uint64_t now;
    size_t slen;
    char *text;

    if (r->pc == NULL) {
        return;
    }
    c = rd_chan_get(r, chan);
    c->seq++;
    if (!rd_room(r, len)) {
        r->dropped++;
        return;     /* and no snapshot: it would claim a missing entry */
    }
    if (!c->cleared) {
        /* the channel's first entry in this epoch: the ids start again
           at 1-0, below what an older epoch left in the stream; its
           snapshot goes with it */
        if (rd_send(r, rd_on_del, c, 0, 0, "DEL %b %b", c->key,
                c->keylen, c->key, c->keylen + RD_SNAP_SUFFIX_LEN)
            != REDIS_OK)
        {
            r->dropped++;
            return;
        }
        c->cleared = 1;
    }
    /* the id is the seq: an edge resumes with XREAD ... SEQ-0 */
    if (rd_send(r, rd_on_xadd, r, 1, len,
            "XADD %b MAXLEN ~ %llu %llu-0 seq %llu epoch %s ts %llu data %b",
            c->key, c->keylen, (unsigned long long) r->pc->maxlen,
            (unsigned long long) c->seq, (unsigned long long) c->seq,
            r->epoch, (unsigned long long) (xg_wall_us() / 1000), data,
            len) != REDIS_OK)
    {
        r->dropped++;
        return;
    }
    rd_ring(r, c, data, len);
    if (self) {
        /* no room: due again with the next entry */
        c->snap_ms = rd_snap_write(r, c, data, len) ? xg_now_ms() : 0;
        return;
    }
    if (snap == NULL) {
        return;
    }
    now = xg_now_ms();
    if (c->snap_ms != 0 && now - c->snap_ms < XG_REDIS_SNAP_EVERY_MS) {
        return;
    }
    /* tried at most once a second, written or not (a channel with no
       such state, a book out of sync, no room) */
    c->snap_ms = now;
    if ((text = snap(arg, &slen)) != NULL) {
        (void) rd_snap_write(r, c, text, slen);
        free(text);
    }
}

/* See xg_redis.h. */
void
xg_redis_publish(struct xg_redis *r, const char *chan, const char *data,
    size_t len, xg_redis_snap_fn *snap, void *arg)
{
    rd_publish(r, chan, data, len, 0, snap, arg);
}

/* See xg_redis.h. */
void
xg_redis_publish_snapshot(struct xg_redis *r, const char *chan,
    const char *data, size_t len)
{
    rd_publish(r, chan, data, len, 1, NULL, NULL);
}

/* An answer's XADD answered: only an error is of interest. */
static void
rd_on_answer(redisAsyncContext *ac, void *reply, void *priv)
{
    struct xg_redis *r = priv;
    redisReply *rep = reply;

    r->ans_inflight--;
    if (rep == NULL) {
        r->ans_lost++;
        return;
    }
    if (rep->type == REDIS_REPLY_ERROR) {
        r->errors++;
        rd_copy(r->last_error, sizeof(r->last_error), rep->str, rep->len);
    }
}

/* See xg_redis.h. */
int
xg_redis_answer(struct xg_redis *r, const char *edge, const char *rid,
    const char *data, size_t len)
{
    if (r->pc == NULL || r->ac == NULL
        || r->ans_inflight >= XG_REDIS_MAX_INFLIGHT
        || len > XG_REDIS_MAX_INFLIGHT_BYTES - r->inflight_bytes)
    {
        return XG_ERROR;
    }
    if (redisAsyncCommand(r->ac, rd_on_answer, r,
            "XADD %s:%s:ans:%s MAXLEN ~ %d * rid %s body %b", r->pc->prefix,
            r->name, edge, XG_REDIS_ANSWERS_MAXLEN, rid, data, len)
        != REDIS_OK)
    {
        return XG_ERROR;
    }
    r->ans_inflight++;
    return XG_OK;
}

/* ---- interest ------------------------------------------------------------ */

static void
rd_on_interest(redisAsyncContext *ac, void *reply, void *priv)
{
    struct xg_redis *r = priv;
    redisReply *rep = reply;
    xg_redis_interest_fn *fn = r->ifn;
    void *arg = r->iarg;
    char **names;
    size_t i, n = 0;

    r->ipending = 0;
    r->ifn = NULL;
    r->iarg = NULL;
    if (rep == NULL || rep->type != REDIS_REPLY_ARRAY) {
        if (rep != NULL) {
            r->errors++;
            if (rep->type == REDIS_REPLY_ERROR) {
                rd_copy(r->last_error, sizeof(r->last_error), rep->str,
                    rep->len);
            }
        }
        if (fn != NULL) {
            fn(arg, NULL, 0);
        }
        return;
    }
    r->ipolls++;
    names = xg_calloc(rep->elements + 1, sizeof(*names));
    for (i = 0; i < rep->elements; i++) {
        redisReply *e = rep->element[i];

        /* a member is a channel name: no NUL inside, not empty */
        if (e->type == REDIS_REPLY_STRING && e->len > 0
            && strlen(e->str) == e->len)
        {
            names[n++] = e->str;
        }
    }
    r->iwanted = n;
    if (fn != NULL) {
        fn(arg, names, n);
    }
    free(names);
}

/* See xg_redis.h. */
int
xg_redis_interest_poll(struct xg_redis *r, xg_redis_interest_fn *fn,
    void *arg)
{
    char key[XG_REDIS_MAX_PREFIX + 300], now[32];

    if (r->pc == NULL || r->ac == NULL || r->ipending)
    {
        return XG_ERROR;
    }
    snprintf(key, sizeof(key), "%s:%s:interest", r->pc->prefix, r->name);
    snprintf(now, sizeof(now), "%llu", (unsigned long long) (xg_wall_us() / 1000));
    if (redisAsyncCommand(r->ac, NULL, NULL, "ZREMRANGEBYSCORE %s -inf %s",
            key, now) != REDIS_OK
        || redisAsyncCommand(r->ac, rd_on_interest, r,
            "ZRANGEBYSCORE %s (%s +inf LIMIT 0 %d", key, now,
            XG_REDIS_INTEREST_MAX) != REDIS_OK)
    {
        return XG_ERROR;
    }
    r->ipending = 1;
    r->ifn = fn;
    r->iarg = arg;
    return XG_OK;
}

/* See xg_redis.h. */
void
xg_redis_interest_cancel(struct xg_redis *r, void *arg)
{
    if (r != NULL && r->iarg == arg) {
        r->ifn = NULL;
        r->iarg = NULL;
    }
}

/* ---- life ---------------------------------------------------------------- */

/* See xg_redis.h. */
struct xg_redis *
xg_redis_new(struct event_base *base, const char *name,
    const struct xg_upstream_conf *uc)
{
    struct xg_redis *r = xg_calloc(1, sizeof(*r));
    struct timeval tv;

    r->base = base;
    r->name = xg_strdup(name);
    r->uc = uc;
    r->pc = uc->publish;
    snprintf(r->epoch, sizeof(r->epoch), "%016llx",
        (unsigned long long) xg_rconn_rand(NULL));
    r->ring = xg_calloc(XG_REDIS_MAX_INFLIGHT, sizeof(*r->ring));
    r->nbuckets = 64;
    r->buckets = xg_calloc(r->nbuckets, sizeof(*r->buckets));
    r->bell_names = xg_malloc(RD_BELL_MAX_NAMES + 1);
    r->bell_data = xg_malloc(RD_BELL_INLINE_BYTES);
    r->bell_argv = xg_calloc(RD_BELL_ARGS, sizeof(*r->bell_argv));
    r->bell_argl = xg_calloc(RD_BELL_ARGS, sizeof(*r->bell_argl));
    r->ev_bell = event_new(base, -1, 0, rd_on_bell, r);
    r->ev_idle = xg_timer_new_persist(base, rd_on_idle, r);
    /* checked twice a period: an empty bell 1 to 1.5 periods after
       the last one */
    tv.tv_sec = RD_BELL_IDLE_MS / 2000;
    tv.tv_usec = (RD_BELL_IDLE_MS / 2 % 1000) * 1000;
    xg_timer_add(r->ev_idle, &tv);
    rd_conn_new(r);
    rd_log(XG_LOG_INFO, r, "publishing to streams %s:%s:CHANNEL, maxlen ~%llu, "
        "epoch %s%s", r->pc->prefix, r->name,
        (unsigned long long) r->pc->maxlen, r->epoch,
        r->pc->password != NULL ? ", auth" : "");
    return r;
}

/* See xg_redis.h. */
void
xg_redis_free(struct xg_redis *r)
{
    struct rd_chan *c;
    size_t i;

    if (r == NULL) {
        return;
    }
    r->ac = NULL;
    rd_send_held(r);            /* freed */
    xg_rconn_free(r->conn);     /* unanswered XADDs count lost */
    for (i = 0; i < r->nbuckets; i++) {
        while ((c = r->buckets[i]) != NULL) {
            r->buckets[i] = c->hnext;
            free(c->name);
            free(c->key);
            free(c);
        }
    }
    free(r->buckets);
    free(r->ring);
    event_free(r->ev_bell);
    xg_timer_free(r->ev_idle);
    free(r->bell_names);
    free(r->bell_data);
    free(r->bell_argv);
    free(r->bell_argl);
    free(r->def);
    free(r->name);
    free(r);
}

/* See xg_redis.h. */
void
xg_redis_reconf(struct xg_redis *r, const struct xg_upstream_conf *uc)
{
    const struct xg_publish_conf *old = r->pc;
    struct rd_chan *c;
    size_t i;
    int again;

    again = old == NULL || uc->publish == NULL
        || strcmp(old->prefix, uc->publish->prefix) != 0
        || old->tls != uc->publish->tls
        || r->conn == NULL
        || !xg_rconn_same(r->conn, &uc->publish->addr,
            uc->publish->password);
    r->bell_wait = 0;
    if (!again) {
        /* before carry= changes under them (else dropped below, with
           the connection: sent now, they would count lost) */
        rd_send_held(r);
    }
    r->uc = uc;
    r->pc = uc->publish;
    if (r->conn != NULL) {
        xg_rconn_reconf(r->conn, uc);
    }
    if (!again) {
        return;
    }
    for (i = 0; i < r->nbuckets; i++) {
        for (c = r->buckets[i]; c != NULL; c = c->hnext) {
            rd_chan_key(r, c);
            c->cleared = 0;
            c->snap_ms = 0;
        }
    }
    r->bell_cleared = 0;
    r->bell_len = 0;
    r->bell_nents = 0;
    r->bell_dlen = 0;
    r->bell_over = 0;
    r->ac = NULL;
    rd_send_held(r);        /* dropped: the connection goes */
    xg_rconn_free(r->conn);
    r->conn = NULL;
    if (r->pc == NULL) {
        xg_log_info("publish %s: no publish in the new conf: not publishing",
            r->name);
        return;
    }
    rd_log(XG_LOG_INFO, r, "the conf changed: connecting again");
    rd_conn_new(r);
}

/* See xg_redis.h. */
int
xg_redis_enabled(const struct xg_redis *r)
{
    return r != NULL && r->pc != NULL;
}

/* See xg_redis.h. */
int
xg_redis_writable(const struct xg_redis *r)
{
    return r != NULL && r->pc != NULL && r->ac != NULL;
}

/* See xg_redis.h. */
uint64_t
xg_redis_ready_ms(const struct xg_redis *r)
{
    return r != NULL && r->ac != NULL ? r->ready_ms : 0;
}

/* See xg_redis.h. */
void
xg_redis_status(const struct xg_redis *r, json_t *obj)
{
    json_t *o;
    char url[320];

    if (r == NULL || r->pc == NULL) {
        return;
    }
    o = json_object();
    snprintf(url, sizeof(url), "%s://%s", r->pc->tls ? "rediss" : "redis",
        xg_rconn_where(r->conn));
    json_object_set_new(o, "url", json_string(url));
    json_object_set_new(o, "state", json_string(
        xg_rconn_state_name(r->conn)));
    json_object_set_new(o, "connected", json_boolean(r->ac != NULL));
    json_object_set_new(o, "auth", json_boolean(r->pc->password != NULL));
    json_object_set_new(o, "prefix", json_string(r->pc->prefix));
    json_object_set_new(o, "maxlen", json_integer((json_int_t)
        r->pc->maxlen));
    json_object_set_new(o, "carry", json_integer((json_int_t)
        r->pc->carry));
    json_object_set_new(o, "epoch", json_string(r->epoch));
    json_object_set_new(o, "channels", json_integer((json_int_t) r->nchans));
    json_object_set_new(o, "published", json_integer((json_int_t)
        r->published));
    json_object_set_new(o, "bytes", json_integer((json_int_t) r->bytes));
    json_object_set_new(o, "snapshots", json_integer((json_int_t)
        r->snapshots));
    json_object_set_new(o, "bells", json_integer((json_int_t) r->bells));
    json_object_set_new(o, "bell_waits", json_integer((json_int_t)
        r->bell_waits));
    json_object_set_new(o, "dropped", json_integer((json_int_t) r->dropped));
    json_object_set_new(o, "lost", json_integer((json_int_t) r->lost));
    json_object_set_new(o, "errors", json_integer((json_int_t) (r->errors
        + xg_rconn_auth_errors(r->conn))));
    json_object_set_new(o, "connects", json_integer((json_int_t)
        xg_rconn_connects(r->conn)));
    json_object_set_new(o, "reconnects", json_integer((json_int_t)
        (xg_rconn_attempts(r->conn) > 0 ? xg_rconn_attempts(r->conn) - 1
        : 0)));
    json_object_set_new(o, "disconnects", json_integer((json_int_t)
        xg_rconn_disconnects(r->conn)));
    json_object_set_new(o, "in_flight", json_integer((json_int_t)
        r->inflight));
    json_object_set_new(o, "in_flight_bytes", json_integer((json_int_t)
        r->inflight_bytes));
    json_object_set_new(o, "held", json_integer((json_int_t) r->ndef));
    json_object_set_new(o, "interest_polls", json_integer((json_int_t)
        r->ipolls));
    json_object_set_new(o, "interest_wanted", json_integer((json_int_t)
        r->iwanted));
    json_object_set_new(o, "last_id", r->last_id[0] != '\0'
        ? json_string(r->last_id) : json_null());
    json_object_set_new(o, "last_error", r->last_error[0] != '\0'
        ? json_string(r->last_error) : json_null());
    json_object_set_new(obj, "publish", o);
}

/* ---- the `publish` directive --------------------------------------------- */

static void
rd_conf_free(void *p)
{
    struct xg_publish_conf *pc = p;

    if (pc->password != NULL) {
        OPENSSL_cleanse(pc->password, strlen(pc->password));
        free(pc->password);
    }
    free(pc->password_src);
    free(pc->prefix);
    free(pc);
}

static int
rd_prefix_ok(const char *s)
{
    size_t n = strlen(s);

    if (n == 0 || n > XG_REDIS_MAX_PREFIX) {
        return 0;
    }
    return strspn(s, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
        "0123456789_-.:{}") == n;
}

static int
rd_set_password(struct xg_conf *cf, const struct xg_conf_stmt *st,
    struct xg_publish_conf *pc, const char *spec)
{
    int apart = cf->secrets_apart;

    if (pc->password_src != NULL) {
        return xg_conf_error(cf, st, "\"publish\": password given twice");
    }
    if (strncmp(spec, "env:", 4) != 0 && strncmp(spec, "file:", 5) != 0) {
        /* never echo it: it may be the password itself */
        return xg_conf_error(cf, st, "\"publish\": the password must be a "
            "reference, env:NAME or file:PATH, never the password itself");
    }
    /* out of the upstream's digest: a new password must not rotate the
       exchange connection; xg_redis_reconf() compares it itself */
    cf->secrets_apart = 1;
    pc->password = xg_conf_secret(cf, st, spec);
    cf->secrets_apart = apart;
    if (pc->password == NULL) {
        return XG_ERROR;
    }
    pc->password_src = xg_conf_secret_source(st, spec);
    return XG_OK;
}

/*
 * `publish redis://[:PASSWORD_REF@]HOST[:PORT] [prefix=P] [maxlen=N]
 * [carry=N] [password=PASSWORD_REF];` in an upstream block.
 */
static int
rd_set_publish(struct xg_conf *cf, const struct xg_conf_stmt *st,
    const struct xg_command *cmd, void *conf)
{
    struct xg_upstream_conf *uc = conf;
    struct xg_publish_conf *pc;
    const char *a = st->args[1], *hp, *at, *end;
    char hostport[300], spec[300];
    uint64_t v;
    size_t n;
    int i;

    if (uc->publish != NULL) {
        return xg_conf_error(cf, st, "\"publish\" is duplicate");
    }
    if (strncmp(a, "redis://", 8) != 0 && strncmp(a, "rediss://", 9) != 0) {
        return xg_conf_error(cf, st, "\"publish\": bad url \"%.*s...\" "
            "(redis[s]://[:PASSWORD_REF@]HOST[:PORT])",
            (int) strcspn(a, ":@"), a);
    }
    pc = xg_conf_calloc(cf, sizeof(*pc), rd_conf_free);
    pc->file = st->file;
    pc->line = st->line;
    pc->maxlen = XG_REDIS_DEFAULT_MAXLEN;
    pc->carry = XG_REDIS_MAX_CARRY;
    /* rediss://: TLS, verified with the upstream's tls_ca and tls_verify */
    pc->tls = a[5] == 's';
    hp = a + (pc->tls ? 9 : 8);
    at = strrchr(hp, '@');
    if (at != NULL) {
        if (hp[0] != ':' || (size_t) (at - hp - 1) >= sizeof(spec)) {
            return xg_conf_error(cf, st, "\"publish\": bad url: the part "
                "before \"@\" must be \":PASSWORD_REF\" (env:NAME or "
                "file:PATH)");
        }
        memcpy(spec, hp + 1, (size_t) (at - hp - 1));
        spec[at - hp - 1] = '\0';
        if (rd_set_password(cf, st, pc, spec) != XG_OK) {
            return XG_ERROR;
        }
        hp = at + 1;
    }
    end = hp + strlen(hp);
    if (end > hp && end[-1] == '/') {
        end--;
    }
    n = (size_t) (end - hp);
    if (n == 0 || n + 8 >= sizeof(hostport)) {
        return xg_conf_error(cf, st, "\"publish\": bad url: no host "
            "(redis://[:PASSWORD_REF@]HOST[:PORT])");
    }
    memcpy(hostport, hp, n);
    hostport[n] = '\0';
    /* no port: Redis' own (a bare IPv6 address needs brackets) */
    if ((hostport[0] == '[' && hostport[n - 1] == ']')
        || (hostport[0] != '[' && strchr(hostport, ':') == NULL))
    {
        snprintf(hostport + n, sizeof(hostport) - n, ":%d",
            XG_REDIS_DEFAULT_PORT);
    }
    if (xg_conf_parse_addr(hostport, &pc->addr) != XG_OK
        || pc->addr.port == 0)
    {
        return xg_conf_error(cf, st, "\"publish\": bad url: bad host or "
            "port \"%.*s\" (redis://[:PASSWORD_REF@]HOST[:PORT])", (int) n,
            hp);
    }
    for (i = 2; i < st->nargs; i++) {
        a = st->args[i];
        if (strncmp(a, "prefix=", 7) == 0) {
            if (!rd_prefix_ok(a + 7)) {
                return xg_conf_error(cf, st, "\"publish\": bad prefix "
                    "\"%s\" (1 to %d of letters, digits, \"_-.:{}\")", a + 7,
                    XG_REDIS_MAX_PREFIX);
            }
            free(pc->prefix);
            pc->prefix = xg_strdup(a + 7);
        } else if (strncmp(a, "maxlen=", 7) == 0) {
            if (xg_conf_parse_uint(a + 7, &v) != XG_OK
                || v < XG_REDIS_MIN_MAXLEN || v > XG_REDIS_MAX_MAXLEN)
            {
                return xg_conf_error(cf, st, "\"publish\": bad maxlen "
                    "\"%s\" (%d to %d entries)", a + 7, XG_REDIS_MIN_MAXLEN,
                    XG_REDIS_MAX_MAXLEN);
            }
            pc->maxlen = v;
        } else if (strncmp(a, "carry=", 6) == 0) {
            if (xg_conf_parse_uint(a + 6, &v) != XG_OK
                || v > XG_REDIS_MAX_CARRY)
            {
                return xg_conf_error(cf, st, "\"publish\": bad carry "
                    "\"%s\" (0 to %d entries a bell carries)", a + 6,
                    XG_REDIS_MAX_CARRY);
            }
            pc->carry = (unsigned) v;
        } else if (strncmp(a, "password=", 9) == 0) {
            if (rd_set_password(cf, st, pc, a + 9) != XG_OK) {
                return XG_ERROR;
            }
        } else {
            return xg_conf_error(cf, st, "\"publish\": unknown parameter "
                "\"%.*s\" (prefix=, maxlen=, carry=, password=)",
                (int) strcspn(a, "="), a);
        }
    }
    if (pc->prefix == NULL) {
        pc->prefix = xg_strdup(XG_REDIS_DEFAULT_PREFIX);
    }
    uc->publish = pc;
    return XG_OK;
}

static int
rd_dump(struct xg_conf_dump *d, const struct xg_command *cmd,
    const void *conf)
{
    const struct xg_upstream_conf *uc = conf;
    const struct xg_publish_conf *pc = uc->publish;
    char buf[320], addr[300];

    if (pc == NULL) {
        xg_conf_dump_comment(d, "%s: not set (nothing published)",
            cmd->name);
        return XG_OK;
    }
    xg_conf_dump_begin(d);
    xg_conf_dump_word(d, cmd->name);
    snprintf(buf, sizeof(buf), "%s://%s", pc->tls ? "rediss" : "redis",
        xg_conf_fmt_addr(&pc->addr,
        addr, sizeof(addr)));
    xg_conf_dump_word(d, buf);
    xg_conf_dump_kv(d, "prefix", pc->prefix);
    snprintf(buf, sizeof(buf), "%llu", (unsigned long long) pc->maxlen);
    xg_conf_dump_kv(d, "maxlen", buf);
    snprintf(buf, sizeof(buf), "%u", pc->carry);
    xg_conf_dump_kv(d, "carry", buf);
    if (pc->password_src != NULL) {
        xg_conf_dump_kv(d, "password", pc->password_src);
    }
    xg_conf_dump_end(d);
    return XG_OK;
}

static const struct xg_command rd_commands[] = {
    { "publish", XG_CONF_UPSTREAM | XG_CONF_1MORE, rd_set_publish, 0, NULL },
    XG_CONF_NULL_COMMAND
};

const struct xg_module xg_redis_module = {
    "redis",
    rd_commands,
    rd_dump
};
