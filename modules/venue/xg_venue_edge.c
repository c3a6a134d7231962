/*
 * xg_venue_edge.c: `protocol edge` (issue 17): an upstream whose exchange
 * is a core exgate behind Redis Streams. The edge serves its bots exactly
 * as a Deribit upstream does (it is the Deribit venue: local auth,
 * heartbeats, one subscription per channel, the book and trade trackers,
 * gap notices, the in-flight rules), and only its transport differs: the
 * connection is a link (xg_ws_link_new()) that answers the venue as
 * Deribit would, out of Redis:
 *
 *  - public/subscribe: answered here; each channel is declared in the
 *    core's interest set (ZADD PREFIX:SOURCE:interest EXPIRY CHANNEL,
 *    refreshed every ttl/3) and read from its stream PREFIX:SOURCE:CHANNEL
 *    with XREAD BLOCK on a connection of its own. A book channel starts
 *    from the core's last-value snapshot (HGETALL PREFIX:SOURCE:CHANNEL:snap:
 *    the snapshot is delivered, then the entries after its seq), any other
 *    channel from the stream's end. At most EL_MAX_CHANNELS channels: a
 *    subscribe that would take the link past them is refused whole
 *    (11052, logged). public/unsubscribe: reading stops (the
 *    core lets a channel go once no edge refreshes it and its linger is
 *    over).
 *  - Every other request goes to the core: XADD PREFIX:SOURCE:req * edge
 *    EDGE rid RID ts MS body JSON, its id replaced by RID (unique: the
 *    edge's start time in ms times 10^6 plus a count); the answer comes
 *    back on PREFIX:SOURCE:ans:EDGE (read with the channels) and gets the
 *    venue's id back.
 *
 * Redis going away is hidden from the venue: the link reconnects both
 * connections through the upstream's reconnect policy and resumes every
 * stream from the last seq it delivered (no gap, no repeat), so the bots
 * see nothing. Requests: one not yet written waits (queue_limit,
 * queue_timeout); a read written and not answered is written again; an
 * order written but not acknowledged by Redis gets 13028 (it may or may
 * not be in the stream), one Redis acknowledged waits for its answer
 * (the venue's request_timeout bounds it). The link goes down (and the
 * venue restores on a new one, bridging each book to the core's snapshot
 * and backfilling trades as after any reconnect) only when resuming is
 * impossible: the core restarted (its epoch, in PREFIX:SOURCE:epoch and in
 * every entry, changed).
 *
 * A hole in a stream (entries the core dropped while Redis was down, or
 * trimmed before the edge read them) reaches the venue as a jump in the
 * data: a book's change_id chain breaks (it resubscribes: a new
 * snapshot), a trade_seq jumps (it backfills through the core).
 */
#include "xg_venue_edge_int.h"

/* ---- conf ---------------------------------------------------------------- */

struct dr_edge_conf {
    char        *source;        /* the core's upstream name */
    char        *prefix;
    char        *password;      /* the secret's value, or NULL */
    char        *password_src;  /* env:NAME or file:PATH, for -T */
    char        *edge_id;       /* NULL: HOSTNAME.UPSTREAM */
};

static void el_flush_reqs(struct edge_link *l);

void
el_log(int level, const struct edge_link *l, const char *fmt, ...)
{
    char msg[512];
    va_list ap;

    if (level > xg_log_level) {
        return;
    }
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    xg_upstream_log(level, l->d->up, "edge %s: %s", l->src, msg);
}

/* ---- to the venue --------------------------------------------------------- */

static void
el_out_cb(evutil_socket_t fd, short what, void *arg)
{
    struct edge_link *l = arg;
    struct el_out *o;

    while ((o = l->out) != NULL) {
        l->out = o->next;
        if (l->out == NULL) {
            l->out_tail = &l->out;
        }
        if (xg_ws_link_message(l->ws, o->data, o->len) != XG_OK) {
            /* the link is gone (freed inside): O was taken off first */
            free(o->data);
            free(o);
            return;
        }
        free(o->data);
        free(o);
    }
}

/* DATA (taken) goes to the venue from the loop. */
static void
el_later(struct edge_link *l, char *data)
{
    struct el_out *o = xg_calloc(1, sizeof(*o));

    o->data = data;
    o->len = strlen(data);
    *l->out_tail = o;
    l->out_tail = &o->next;
    event_active(l->ev_out, EV_TIMEOUT, 1);
}

static void
el_answer(struct edge_link *l, const char *vid, const char *result)
{
    size_t n = strlen(vid) + strlen(result) + 64;
    char *s = xg_malloc(n);

    snprintf(s, n, "{\"jsonrpc\":\"2.0\",\"id\":%s,\"result\":%s}", vid,
        result);
    el_later(l, s);
}

static void
el_error(struct edge_link *l, const char *vid, int code, const char *msg,
    const char *reason)
{
    json_t *e = json_pack("{s:s, s:i, s:s}", "jsonrpc", "2.0", "code", code,
        "message", msg);
    char *err, *s;
    size_t n;

    if (reason != NULL) {
        json_object_set_new(e, "data", json_pack("{s:s}", "reason", reason));
    }
    json_object_del(e, "jsonrpc");
    err = json_dumps(e, JSON_COMPACT);
    n = strlen(vid) + strlen(err) + 64;
    s = xg_malloc(n);
    snprintf(s, n, "{\"jsonrpc\":\"2.0\",\"id\":%s,\"error\":%s}", vid, err);
    free(err);
    json_decref(e);
    el_later(l, s);
}

/* ---- channels ------------------------------------------------------------- */

/* ---- channels by name ------------------------------------------------------ */

static size_t
el_hash(const char *s, size_t len)
{
    size_t h = 5381, i;

    for (i = 0; i < len; i++) {
        h = h * 33 + (unsigned char) s[i];
    }
    return h;
}

/* The channel NAME (LEN bytes, not terminated), or NULL. */
struct el_chan *
el_chan_lookup(struct edge_link *l, const char *name, size_t len)
{
    struct el_chan *c;

    if (l->hsize == 0) {
        return NULL;
    }
    for (c = l->htab[el_hash(name, len) % l->hsize]; c != NULL;
        c = c->hnext)
    {
        if (strlen(c->name) == len && memcmp(c->name, name, len) == 0) {
            return c;
        }
    }
    return NULL;
}

/* C, new, goes last in l->chans and into the table. */
static void
el_chan_add(struct edge_link *l, struct el_chan *c)
{
    struct el_chan **nt, *x;
    size_t i, h, nsize;

    if (l->nchans == l->cap) {
        l->cap = l->cap ? 2 * l->cap : 16;
        l->chans = xg_realloc(l->chans, l->cap * sizeof(*l->chans));
    }
    c->at = l->nchans;
    l->chans[l->nchans++] = c;
    if (l->nchans > 2 * l->hsize) {
        nsize = l->hsize ? 4 * l->hsize : 64;
        nt = xg_calloc(nsize, sizeof(*nt));
        for (i = 0; i < l->nchans - 1; i++) {
            x = l->chans[i];
            h = el_hash(x->name, strlen(x->name)) % nsize;
            x->hnext = nt[h];
            nt[h] = x;
        }
        free(l->htab);
        l->htab = nt;
        l->hsize = nsize;
    }
    h = el_hash(c->name, strlen(c->name)) % l->hsize;
    c->hnext = l->htab[h];
    l->htab[h] = c;
}

static void el_chan_free(struct el_chan *c);

/* C out of l->chans (the last one takes its place) and the table; freed. */
static void
el_chan_remove(struct edge_link *l, struct el_chan *c)
{
    struct el_chan **pp;

    for (pp = &l->htab[el_hash(c->name, strlen(c->name)) % l->hsize];
        *pp != NULL; pp = &(*pp)->hnext)
    {
        if (*pp == c) {
            *pp = c->hnext;
            break;
        }
    }
    l->chans[c->at] = l->chans[--l->nchans];
    l->chans[c->at]->at = c->at;
    el_chan_free(c);
}

static struct el_chan *
el_chan_find(struct edge_link *l, const char *name, size_t *at)
{
    struct el_chan *c = el_chan_lookup(l, name, strlen(name));

    if (c != NULL && at != NULL) {
        *at = c->at;
    }
    return c;
}

/* The channel of stream KEY (LEN bytes): PREFIX:SOURCE:CHANNEL. */
struct el_chan *
el_chan_by_key(struct edge_link *l, const char *key, size_t len)
{
    size_t n = strlen(l->src);

    if (len <= n + 1 || memcmp(key, l->src, n) != 0 || key[n] != ':') {
        return NULL;
    }
    return el_chan_lookup(l, key + n + 1, len - n - 1);
}

/* Every channel read is named in the next XREAD (after a reconnect, a
   hole in the bells, or a bell that says "all"). */
void
el_all_due(struct edge_link *l)
{
    size_t i;

    for (i = 0; i < l->nchans; i++) {
        l->chans[i]->due = 1;
    }
    l->e->all_reads++;
}

static void
el_chan_free(struct el_chan *c)
{
    free(c->name);
    free(c->key);
    free(c);
}

/* The read set changed: a blocked XREAD is woken to take it. */
static void
el_dirty(struct edge_link *l)
{
    l->dirty = 1;
    if (l->reading && !l->unblocking && l->cac != NULL && l->rd_id >= 0) {
        l->unblocking = 1;
        /* ERROR: the XREAD answers -UNBLOCKED; without it, it answers
           nil as on its timeout, which el_on_read() takes for a second
           without a bell and reads every channel. Nothing is lost with
           the channels it named: it was blocked, so they had nothing
           past their ids, and what came since has a bell past
           bell_last, which the next XREAD reads */
        (void) redisAsyncCommand(l->cac, NULL, NULL,
            "CLIENT UNBLOCK %lld ERROR", l->rd_id);
    }
    if (!l->reading && !l->in_read) {
        el_read(l);
    }
}

/* Whether a seq text of an entry id "SEQ-0" parses. */
int
el_seq_of_id(const char *id, size_t len, uint64_t *seq)
{
    uint64_t v = 0;
    size_t i;

    for (i = 0; i < len && id[i] != '-'; i++) {
        if (id[i] < '0' || id[i] > '9' || v > UINT64_MAX / 10 - 10) {
            return XG_ERROR;
        }
        v = v * 10 + (uint64_t) (id[i] - '0');
    }
    if (i == 0) {
        return XG_ERROR;
    }
    *seq = v;
    return XG_OK;
}

/* A channel's start asked on the cmd connection: PRIV is the link, the
   channel found again by name and generation (it may be gone). */
struct el_ask {
    struct edge_link   *l;
    char               *name;
    unsigned            gen;
};

static struct el_chan *
el_ask_take(redisAsyncContext *ac, struct el_ask *a)
{
    struct el_chan *c = NULL;

    if (ac->data != NULL && a->l->cac == ac) {
        c = el_chan_find(a->l, a->name, NULL);
        if (c != NULL && c->gen != a->gen) {
            c = NULL;
        }
    }
    return c;
}

static void
el_ask_free(struct el_ask *a)
{
    free(a->name);
    free(a);
}

/*
 * Whether an entry's or a snapshot's EPOCH (LEN bytes) is the link's.
 * An unknown link epoch (the core never wrote its key) takes it. A
 * different one is data an older core left (the new one deletes it with
 * its first entry) or the first of a newer core: either way it is not
 * delivered, and the key is asked at once, which tells (el_on_epoch).
 */
int
el_epoch_is(struct edge_link *l, const char *epoch, size_t len)
{
    if (l->epoch[0] == '\0') {
        snprintf(l->epoch, sizeof(l->epoch), "%.*s",
            (int) (len > 32 ? 32 : len), epoch);
        return 1;
    }
    if (strlen(l->epoch) == len && memcmp(l->epoch, epoch, len) == 0) {
        return 1;
    }
    l->e->stale_entries++;
    l->epoch_at = 0;    /* the next tick asks the key */
    return 0;
}

/* XREVRANGE KEY + - COUNT 1: a channel starts after the stream's end. */

static void
el_on_tail(redisAsyncContext *ac, void *reply, void *priv)
{
    struct el_ask *a = priv;
    struct el_chan *c = el_ask_take(ac, a);
    redisReply *rep = reply;
    const redisReply *en, *ep;
    uint64_t seq = 0;

    if (c != NULL && rep != NULL && rep->type == REDIS_REPLY_ARRAY) {
        if (rep->elements > 0 && rep->element[0]->type == REDIS_REPLY_ARRAY
            && rep->element[0]->elements == 2
            && rep->element[0]->element[0]->type == REDIS_REPLY_STRING
            && rep->element[0]->element[1]->type == REDIS_REPLY_ARRAY)
        {
            en = rep->element[0];
            ep = el_hash_get(en->element[1], "epoch");
            if (ep != NULL && !el_epoch_is(a->l, ep->str, ep->len)) {
                c->state = ELC_WAIT;    /* an older core's: asked again */
                el_ask_free(a);
                return;
            }
            (void) el_seq_of_id(en->element[0]->str, en->element[0]->len,
                &seq);
        }
        c->last = seq;
        c->state = ELC_READ;
        c->due = 1;
        el_dirty(a->l);
    }
    /* no answer: the connection went; its ready asks again */
    el_ask_free(a);
}

const redisReply *
el_hash_get(const redisReply *rep, const char *field)
{
    size_t i;

    for (i = 0; i + 1 < rep->elements; i += 2) {
        if (rep->element[i]->type == REDIS_REPLY_STRING
            && strcmp(rep->element[i]->str, field) == 0
            && rep->element[i + 1]->type == REDIS_REPLY_STRING)
        {
            return rep->element[i + 1];
        }
    }
    return NULL;
}

static void el_fail(struct edge_link *l, const char *reason);

/* HGETALL KEY:snap: a book starts from the core's snapshot. */
static void
el_on_snap(redisAsyncContext *ac, void *reply, void *priv)
{
    struct el_ask *a = priv;
    struct edge_link *l = a->l;
    struct el_chan *c = el_ask_take(ac, a);
    redisReply *rep = reply;
    const redisReply *seq, *ep, *data;
    uint64_t s;

    el_ask_free(a);
    if (c == NULL || rep == NULL || rep->type != REDIS_REPLY_ARRAY) {
        return;
    }
    seq = el_hash_get(rep, "seq");
    ep = el_hash_get(rep, "epoch");
    data = el_hash_get(rep, "data");
    if (seq == NULL || ep == NULL || data == NULL
        || el_seq_of_id(seq->str, seq->len, &s) != XG_OK)
    {
        /* not there yet: the core subscribes on our interest; the tick
           asks again */
        c->state = ELC_WAIT;
        return;
    }
    if (!el_epoch_is(l, ep->str, ep->len)) {
        c->state = ELC_WAIT;    /* an older core's: asked again */
        return;
    }
    c->last = s;
    c->state = ELC_READ;
    c->due = 1;
    l->e->snapshots++;
    el_later(l, xg_strndup(data->str, data->len));
    el_dirty(l);
}

/* The bell's last id when a channel's start was read (el_chan_start()):
   the channel is named until a later bell is read. */
static void
el_on_fence(redisAsyncContext *ac, void *reply, void *priv)
{
    struct el_ask *a = priv;
    struct el_chan *c = el_ask_take(ac, a);
    redisReply *rep = reply;
    uint64_t seq = 0;

    /* no answer: the connection went; its ready asks again */
    if (c != NULL && rep != NULL) {
        if (rep->type == REDIS_REPLY_ARRAY
            && rep->elements > 0
            && rep->element[0]->type == REDIS_REPLY_ARRAY
            && rep->element[0]->elements > 0
            && rep->element[0]->element[0]->type == REDIS_REPLY_STRING)
        {
            (void) el_seq_of_id(rep->element[0]->element[0]->str,
                rep->element[0]->element[0]->len, &seq);
        }
        c->fence = seq;     /* none, or not known: not named for it */
        el_dirty(a->l);
    }
    el_ask_free(a);
}

/* Asks the bell's last id for C (el_on_fence()), after where C starts. */
static void
el_fence_ask(struct edge_link *l, struct el_chan *c)
{
    struct el_ask *a;

    c->fence = UINT64_MAX;
    a = xg_calloc(1, sizeof(*a));
    a->l = l;
    a->name = xg_strdup(c->name);
    a->gen = c->gen;
    if (redisAsyncCommand(l->cac, el_on_fence, a, "XREVRANGE %s + - COUNT 1",
            l->bell_key) != REDIS_OK)
    {
        el_ask_free(a);
        c->fence = 0;
    }
}

/* Asks where channel C starts (cmd connection ready). */
static void
el_chan_start(struct edge_link *l, struct el_chan *c)
{
    struct el_ask *a;
    int r;

    c->gen++;
    c->want = 0;
    c->fence = UINT64_MAX;      /* until el_on_fence() */
    c->asked_ms = xg_now_ms();
    if (l->cac == NULL) {
        c->state = ELC_START;
        return;
    }
    a = xg_calloc(1, sizeof(*a));
    a->l = l;
    a->name = xg_strdup(c->name);
    a->gen = c->gen;
    if (c->book) {
        c->state = ELC_START;
        r = redisAsyncCommand(l->cac, el_on_snap, a, "HGETALL %s:snap",
            c->key);
    } else {
        c->state = ELC_START;
        r = redisAsyncCommand(l->cac, el_on_tail, a,
            "XREVRANGE %s + - COUNT 1", c->key);
    }
    if (r != REDIS_OK) {
        el_ask_free(a);
        return;
    }
    /* after it on the same connection: a bell Redis had when it read
       where C starts may carry an entry of C whose XADD it had not run
       (the core sends a carrying bell first) */
    el_fence_ask(l, c);
}

/* ZADD the interest in NAMES (all channels when N is 0). */
static void
el_interest(struct edge_link *l, struct el_chan **cs, size_t n)
{
    const char **argv;
    size_t *argl, i, k = 0;
    char key[300], exp[32];

    if (l->cac == NULL || l->nchans == 0) {
        return;
    }
    if (n == 0) {
        cs = l->chans;
        n = l->nchans;
    }
    argv = xg_calloc(2 + 2 * n, sizeof(*argv));
    argl = xg_calloc(2 + 2 * n, sizeof(*argl));
    snprintf(key, sizeof(key), "%s:interest", l->src);
    snprintf(exp, sizeof(exp), "%llu", (unsigned long long)
        (xg_wall_us() / 1000 + XG_REDIS_INTEREST_TTL_MS));
    argv[k] = "ZADD";
    argl[k++] = 4;
    argv[k] = key;
    argl[k++] = strlen(key);
    for (i = 0; i < n; i++) {
        argv[k] = exp;
        argl[k++] = strlen(exp);
        argv[k] = cs[i]->name;
        argl[k++] = strlen(cs[i]->name);
    }
    (void) redisAsyncCommandArgv(l->cac, NULL, NULL, (int) k, argv, argl);
    free(argv);
    free(argl);
}

static void
el_subscribe(struct edge_link *l, const char *vid, json_t *params)
{
    json_t *chs = json_object_get(params, "channels"), *v, *ok;
    struct el_chan **added, *c;
    size_t i, nadded = 0;
    char *res, why[80];

    ok = json_array();
    added = xg_calloc(json_array_size(chs) + 1, sizeof(*added));
    json_array_foreach(chs, i, v) {
        const char *name = json_string_value(v);

        if (name == NULL || !xg_session_interest_name_ok(name, 1)) {
            if (name != NULL) {
                el_log(XG_LOG_INFO, l, "%s: not a channel name: refused",
                    name);
            }
            continue;
        }
        json_array_append(ok, v);
        if (el_chan_find(l, name, NULL) != NULL) {
            continue;
        }
        if (l->nchans >= EL_MAX_CHANNELS) {
            /* the whole request is refused (the venue answers its bots
               with this error): what it added is taken back */
            el_log(XG_LOG_WARN, l, "%s: the edge holds %d channels, its "
                "limit: a subscribe of %zu channels refused", name,
                EL_MAX_CHANNELS, json_array_size(chs));
            while (nadded > 0) {
                el_chan_remove(l, l->chans[l->nchans - 1]);
                nadded--;
            }
            free(added);
            json_decref(ok);
            snprintf(why, sizeof(why), "the edge holds %d channels, its "
                "limit", EL_MAX_CHANNELS);
            el_error(l, vid, 11052, "subscribe_error_unsubscribed", why);
            return;
        }
        c = xg_calloc(1, sizeof(*c));
        c->name = xg_strdup(name);
        c->keylen = strlen(l->src) + strlen(name) + 1;
        c->key = xg_malloc(c->keylen + 1);
        sprintf(c->key, "%s:%s", l->src, name);
        c->book = xg_venue_deribit_book_kind(name) == XG_BOOK_DELTA;
        c->since_ms = xg_now_ms();
        el_chan_add(l, c);
        added[nadded++] = c;
    }
    el_interest(l, added, nadded);
    for (i = 0; i < nadded; i++) {
        el_chan_start(l, added[i]);
    }
    free(added);
    res = json_dumps(ok, JSON_COMPACT);
    el_answer(l, vid, res);
    free(res);
    json_decref(ok);
}

static void
el_unsubscribe(struct edge_link *l, const char *vid, json_t *params, int all)
{
    json_t *chs = json_object_get(params, "channels"), *v, *ok;
    struct el_chan *c;
    size_t i, at;
    char *res;

    l->chans_gen++;
    if (all) {
        for (i = 0; i < l->nchans; i++) {
            el_chan_free(l->chans[i]);
        }
        l->nchans = 0;
        if (l->hsize > 0) {
            memset(l->htab, 0, l->hsize * sizeof(*l->htab));
        }
        el_dirty(l);
        el_answer(l, vid, "\"ok\"");
        return;
    }
    ok = json_array();
    json_array_foreach(chs, i, v) {
        const char *name = json_string_value(v);

        if (name == NULL || (c = el_chan_find(l, name, &at)) == NULL) {
            continue;
        }
        json_array_append(ok, v);
        el_chan_remove(l, c);
    }
    el_dirty(l);
    res = json_dumps(ok, JSON_COMPACT);
    el_answer(l, vid, res);
    free(res);
    json_decref(ok);
}

/* ---- requests through the core --------------------------------------------- */

static int
el_is_read(const char *method)
{
    const char *m = strchr(method, '/');

    return m != NULL && strncmp(m + 1, "get_", 4) == 0;
}

static void
el_req_free(struct el_req *q)
{
    free(q->vid);
    free(q->body);
    free(q);
}

static struct el_req *
el_req_take(struct edge_link *l, uint64_t rid)
{
    struct el_req **pp, *q;

    for (pp = &l->reqs; (q = *pp) != NULL; pp = &q->next) {
        if (q->rid == rid) {
            *pp = q->next;
            l->nreqs--;
            return q;
        }
    }
    return NULL;
}

struct el_wr {
    struct edge_link   *l;
    uint64_t            rid;
    unsigned            cgen;
};

static void
el_on_xadd(redisAsyncContext *ac, void *reply, void *priv)
{
    struct el_wr *w = priv;
    struct edge_link *l = w->l;
    redisReply *rep = reply;
    struct el_req *q;

    if (ac->data != NULL && l->cgen == w->cgen) {
        for (q = l->reqs; q != NULL; q = q->next) {
            if (q->rid == w->rid) {
                break;
            }
        }
        if (q != NULL && rep != NULL && rep->type == REDIS_REPLY_STRING) {
            q->acked = 1;
        } else if (q != NULL && rep != NULL) {
            el_req_take(l, q->rid);
            el_log(XG_LOG_WARN, l, "request %llu refused by redis: %.*s",
                (unsigned long long) q->rid, rep->type == REDIS_REPLY_ERROR
                ? (int) rep->len : 0, rep->type == REDIS_REPLY_ERROR
                ? rep->str : "");
            el_error(l, q->vid, 13028, "upstream unavailable",
                "redis refused the request");
            el_req_free(q);
        }
    }
    free(w);
}

static void
el_write(struct edge_link *l, struct el_req *q)
{
    struct el_wr *w;
    char rid[32], ts[32];

    if (l->cac == NULL) {
        return;
    }
    w = xg_calloc(1, sizeof(*w));
    w->l = l;
    w->rid = q->rid;
    w->cgen = l->cgen;
    snprintf(rid, sizeof(rid), "%llu", (unsigned long long) q->rid);
    snprintf(ts, sizeof(ts), "%llu", (unsigned long long)
        (xg_wall_us() / 1000));
    if (redisAsyncCommand(l->cac, el_on_xadd, w, "XADD %s:req MAXLEN ~ %d * "
            "edge %s rid %s ts %s body %s", l->src, EL_REQ_MAXLEN, l->e->id,
            rid, ts, q->body) != REDIS_OK)
    {
        free(w);
        return;
    }
    q->written = 1;
    q->acked = 0;
    q->cgen = l->cgen;
}

/* The venue's request REQ (its id VID) goes to the core. */
static int
el_forward(struct edge_link *l, const char *vid, const char *method,
    json_t *req)
{
    const struct xg_upstream_conf *uc = NULL;
    struct el_req *q, **pp;
    size_t limit;

    uc = xg_upstream_conf_of(l->d->up);
    limit = uc != NULL && uc->queue_limit > 0 ? uc->queue_limit : 1000;
    if (l->nreqs >= limit) {
        const char *why = l->cac == NULL ? "redis unreachable"
                                         : "the core is not answering";

        el_log(XG_LOG_WARN, l, "%s (id %.64s) refused: %zu requests wait for "
            "the core, queue_limit %zu (%s)", method, vid, l->nreqs, limit,
            why);
        el_error(l, vid, 10028, "too_many_requests",
            l->cac == NULL ? "queue_limit: redis unreachable"
                           : "queue_limit: the core is not answering");
        return XG_OK;
    }
    q = xg_calloc(1, sizeof(*q));
    q->rid = l->e->rid_base + ++l->e->rid_n;
    q->vid = xg_strdup(vid);
    q->read = el_is_read(method);
    q->queued_ms = xg_now_ms();
    json_object_set_new(req, "id", json_integer((json_int_t) q->rid));
    q->body = json_dumps(req, JSON_COMPACT);
    for (pp = &l->reqs; *pp != NULL; pp = &(*pp)->next) {
        /* in order */
    }
    *pp = q;
    l->nreqs++;
    l->e->requests++;
    el_write(l, q);
    return XG_OK;
}

/* An answer entry: RID's venue id back in, to the venue. */
int
el_on_answer(struct edge_link *l, const char *rid_s, size_t rid_len,
    const char *body, size_t len)
{
    static const char *const keys[] = { "id" };
    struct xg_jspan v[1];
    struct el_req *q;
    uint64_t rid;
    char *out;
    size_t olen;
    int r;

    if (el_seq_of_id(rid_s, rid_len, &rid) != XG_OK
        || (q = el_req_take(l, rid)) == NULL)
    {
        l->e->stale_answers++;  /* another edge's, or one given up on */
        return XG_OK;
    }
    memset(v, 0, sizeof(v));
    if (xg_jscan_object(body, len, keys, 1, v) != XG_OK || v[0].p == NULL) {
        el_log(XG_LOG_WARN, l, "answer %llu without an id: dropped",
            (unsigned long long) rid);
        el_error(l, q->vid, 11094, "internal_server_error",
            "malformed answer from the core");
        el_req_free(q);
        return XG_OK;
    }
    out = xg_jscan_splice(body, len, &v[0], q->vid, strlen(q->vid), &olen);
    el_req_free(q);
    l->e->answers++;
    r = xg_ws_link_message(l->ws, out, olen);
    free(out);
    return r;
}

/* The cmd connection went: what was written and not acknowledged. */
static void
el_reqs_lost(struct edge_link *l)
{
    struct el_req **pp = &l->reqs, *q;

    while ((q = *pp) != NULL) {
        if (q->written && !q->acked && !q->read) {
            *pp = q->next;
            l->nreqs--;
            l->e->requests_lost++;
            el_error(l, q->vid, 13028, "upstream connection lost, outcome "
                "unknown", "redis connection lost");
            el_req_free(q);
            continue;
        }
        if (q->written && !q->acked) {
            q->written = 0;     /* a read: written again */
        }
        pp = &q->next;
    }
}

static void
el_flush_reqs(struct edge_link *l)
{
    struct el_req *q;

    for (q = l->reqs; q != NULL && l->cac != NULL; q = q->next) {
        if (!q->written) {
            el_write(l, q);
        }
    }
}

/* Requests not written within queue_timeout: refused. */
static void
el_expire_reqs(struct edge_link *l, uint64_t now)
{
    const struct xg_upstream_conf *uc = xg_upstream_conf_of(l->d->up);
    uint64_t qt = uc != NULL ? uc->queue_timeout_ms : 30000;
    struct el_req **pp = &l->reqs, *q;

    while ((q = *pp) != NULL) {
        if (!q->written && now - q->queued_ms >= qt) {
            *pp = q->next;
            l->nreqs--;
            l->e->requests_expired++;
            el_log(XG_LOG_WARN, l, "request (id %.64s) refused: not written to "
                "redis within queue_timeout %llu ms", q->vid,
                (unsigned long long) qt);
            el_error(l, q->vid, 13028, "upstream unavailable",
                "queue_timeout: redis unreachable");
            el_req_free(q);
            continue;
        }
        pp = &q->next;
    }
}

/* ---- the venue's messages to the "exchange" ---------------------------------- */

static int
el_send(void *lp, const void *data, size_t len)
{
    struct edge_link *l = lp;
    json_error_t jerr;
    json_t *req, *params, *idv;
    const char *method;
    char *vid;
    int r = XG_OK;

    if (l->dead) {
        return XG_ERROR;
    }
    req = json_loadb(data, len, 0, &jerr);
    if (req == NULL || !json_is_object(req)) {
        json_decref(req);
        el_log(XG_LOG_ERROR, l, "the venue sent what is not JSON: %s",
            jerr.text);
        return XG_ERROR;
    }
    method = json_string_value(json_object_get(req, "method"));
    params = json_object_get(req, "params");
    idv = json_object_get(req, "id");
    if (method == NULL || idv == NULL) {
        json_decref(req);
        return XG_OK;       /* nothing to answer */
    }
    vid = json_dumps(idv, JSON_ENCODE_ANY | JSON_COMPACT);
    if (strcmp(method, "public/subscribe") == 0
        || strcmp(method, "private/subscribe") == 0)
    {
        el_subscribe(l, vid, params);
    } else if (strcmp(method, "public/unsubscribe") == 0
        || strcmp(method, "private/unsubscribe") == 0)
    {
        el_unsubscribe(l, vid, params, 0);
    } else if (strcmp(method, "public/unsubscribe_all") == 0
        || strcmp(method, "private/unsubscribe_all") == 0)
    {
        el_unsubscribe(l, vid, params, 1);
    } else if (strcmp(method, "public/hello") == 0
        || strcmp(method, "public/test") == 0)
    {
        el_answer(l, vid, "{\"version\":\"" XG_VERSION "\"}");
    } else if (strcmp(method, "public/set_heartbeat") == 0
        || strcmp(method, "public/disable_heartbeat") == 0)
    {
        el_answer(l, vid, "\"ok\"");
    } else {
        r = el_forward(l, vid, method, req);
    }
    free(vid);
    json_decref(req);
    return r;
}

/* ---- the two connections ------------------------------------------------------ */

static void
el_fail(struct edge_link *l, const char *reason)
{
    if (l->dead) {
        return;
    }
    l->dead = 1;
    if (strncmp(reason, "the core restarted", 18) == 0) {
        l->e->epoch_changes++;
    }
    xg_ws_link_fail(l->ws, reason);
}

static void
el_maybe_open(struct edge_link *l)
{
    if (l->opened || l->dead || l->cac == NULL || !l->epoch_asked) {
        return;
    }
    l->opened = 1;
    el_log(XG_LOG_INFO, l, "open (epoch %s, edge %s)",
        l->epoch[0] != '\0' ? l->epoch : "not yet known", l->e->id);
    xg_ws_link_open(l->ws);
}

/* GET PREFIX:SOURCE:epoch: the first, and every second after. */
static void
el_on_epoch(redisAsyncContext *ac, void *reply, void *priv)
{
    struct edge_link *l = priv;
    redisReply *rep = reply;
    char why[200];

    if (ac->data == NULL || l->cac != ac || rep == NULL) {
        return;
    }
    if (rep->type == REDIS_REPLY_STRING) {
        if (l->epoch[0] == '\0') {
            snprintf(l->epoch, sizeof(l->epoch), "%.*s",
                (int) (rep->len > 32 ? 32 : rep->len), rep->str);
        } else if (strlen(l->epoch) != rep->len
            || memcmp(l->epoch, rep->str, rep->len) != 0)
        {
            snprintf(why, sizeof(why), "the core restarted: epoch %s -> "
                "%.*s", l->epoch, (int) (rep->len > 32 ? 32 : rep->len),
                rep->str);
            el_fail(l, why);
            return;
        }
    }
    l->epoch_asked = 1;
    el_maybe_open(l);
}

/* XREVRANGE of the answer stream: answers are read from its end on. */
static void
el_on_ans_tail(redisAsyncContext *ac, void *reply, void *priv)
{
    struct edge_link *l = priv;
    redisReply *rep = reply;

    if (ac->data == NULL || l->cac != ac || rep == NULL
        || rep->type != REDIS_REPLY_ARRAY)
    {
        return;
    }
    snprintf(l->ans_last, sizeof(l->ans_last), "0-0");
    if (rep->elements > 0 && rep->element[0]->type == REDIS_REPLY_ARRAY
        && rep->element[0]->elements > 0
        && rep->element[0]->element[0]->type == REDIS_REPLY_STRING)
    {
        snprintf(l->ans_last, sizeof(l->ans_last), "%.*s",
            (int) rep->element[0]->element[0]->len,
            rep->element[0]->element[0]->str);
    }
    l->ans_known = 1;
    el_read(l);
}

/* XREVRANGE of the bell: bells are read from its end on, and every
   channel once (what came before it). */
static void
el_on_bell_tail(redisAsyncContext *ac, void *reply, void *priv)
{
    struct edge_link *l = priv;
    redisReply *rep = reply;
    uint64_t seq = 0;

    if (ac->data == NULL || l->cac != ac || rep == NULL) {
        return;     /* gone: the cmd connection's ready asks again */
    }
    l->bell_asking = 0;
    if (rep->type != REDIS_REPLY_ARRAY) {
        return;     /* asked again by the next read that needs it */
    }
    if (rep->elements > 0 && rep->element[0]->type == REDIS_REPLY_ARRAY
        && rep->element[0]->elements > 0
        && rep->element[0]->element[0]->type == REDIS_REPLY_STRING)
    {
        (void) el_seq_of_id(rep->element[0]->element[0]->str,
            rep->element[0]->element[0]->len, &seq);
    }
    l->bell_last = seq;
    l->bell_known = 1;
    l->bell_ms = xg_now_ms();
    /* what came before the end: every channel once more */
    el_all_due(l);
    el_dirty(l);
}

/* Asks the bell's end on cmd (once at a time; again at its ready). */
void
el_bell_ask(struct edge_link *l)
{
    if (l->bell_asking || l->cac == NULL) {
        return;
    }
    if (redisAsyncCommand(l->cac, el_on_bell_tail, l,
            "XREVRANGE %s + - COUNT 1", l->bell_key) == REDIS_OK)
    {
        l->bell_asking = 1;
    }
}

static void
el_cmd_ready(void *arg, redisAsyncContext *ac)
{
    struct edge_link *l = arg;
    size_t i;

    l->cac = ac;
    l->cgen++;
    (void) redisAsyncCommand(ac, el_on_epoch, l, "GET %s:epoch", l->src);
    l->epoch_at = xg_now_ms();
    if (!l->ans_known) {
        (void) redisAsyncCommand(ac, el_on_ans_tail, l,
            "XREVRANGE %s + - COUNT 1", l->ans_key);
    }
    l->bell_asking = 0;     /* the last one's answer is not coming */
    if (!l->bell_known) {
        el_bell_ask(l);
    }
    el_interest(l, NULL, 0);
    l->interest_at = xg_now_ms();
    for (i = 0; i < l->nchans; i++) {
        if (l->chans[i]->state != ELC_READ) {
            el_chan_start(l, l->chans[i]);
        } else if (l->chans[i]->fence == UINT64_MAX) {
            el_fence_ask(l, l->chans[i]);   /* its answer was lost */
        }
    }
    el_flush_reqs(l);
}

static void
el_cmd_down(void *arg, const char *reason)
{
    struct edge_link *l = arg;

    l->cac = NULL;
    l->unblocking = 0;
    el_reqs_lost(l);
}

static void
el_on_client_id(redisAsyncContext *ac, void *reply, void *priv)
{
    struct edge_link *l = priv;
    redisReply *rep = reply;

    if (ac->data == NULL || l->rac != ac || rep == NULL) {
        return;
    }
    if (rep->type == REDIS_REPLY_INTEGER) {
        l->rd_id = rep->integer;
    }
    el_read(l);
}

static void
el_rd_ready(void *arg, redisAsyncContext *ac)
{
    struct edge_link *l = arg;

    l->rac = ac;
    l->rd_id = -1;
    l->reading = 0;
    el_all_due(l);      /* whatever came while it was away */
    (void) redisAsyncCommand(ac, el_on_client_id, l, "CLIENT ID");
}

static void
el_rd_down(void *arg, const char *reason)
{
    struct edge_link *l = arg;

    l->rac = NULL;
    l->reading = 0;
    l->rd_id = -1;
}

static const struct xg_rconn_cbs el_cmd_cbs = {
    el_cmd_ready, el_cmd_down, NULL
};

static const struct xg_rconn_cbs el_rd_cbs = {
    el_rd_ready, el_rd_down, NULL
};

/* XREVRANGE KEY + - COUNT 1 of the lag poll: how far behind. */
static void
el_on_lag(redisAsyncContext *ac, void *reply, void *priv)
{
    struct el_ask *a = priv;
    struct el_chan *c = el_ask_take(ac, a);
    redisReply *rep = reply;
    uint64_t seq;

    if (c != NULL && c->state == ELC_READ && rep != NULL
        && rep->type == REDIS_REPLY_ARRAY && rep->elements > 0
        && rep->element[0]->type == REDIS_REPLY_ARRAY
        && rep->element[0]->elements > 0
        && rep->element[0]->element[0]->type == REDIS_REPLY_STRING
        && el_seq_of_id(rep->element[0]->element[0]->str,
            rep->element[0]->element[0]->len, &seq) == XG_OK
        && seq > c->last && seq - c->last > a->l->e->lag_poll)
    {
        a->l->e->lag_poll = seq - c->last;
    }
    el_ask_free(a);
}

/* The end of the lag poll (a PING after its XREVRANGEs): its result. */
static void
el_on_lag_done(redisAsyncContext *ac, void *reply, void *priv)
{
    struct edge_link *l = priv;

    if (ac->data == NULL || l->cac != ac || reply == NULL) {
        return;
    }
    l->e->lag_entries = l->e->lag_poll;
}

/*
 * Asks the end of a slice of the streams read, round robin, once a tick:
 * a round covers up to EL_LAG_POLL_MAX of them in about EL_LAG_POLL_MS,
 * and its largest lag becomes lag_entries when the round is done (the
 * PING after its last slice). Not all at once: 100 XREVRANGEs in one go
 * held Redis for about 250 us every 2 s, and a bell that came then
 * waited behind them.
 */
static void
el_lag_poll(struct edge_link *l)
{
    struct el_ask *a;
    struct el_chan *c;
    static const char head[] = "*6\r\n$9\r\nXREVRANGE\r\n";
    static const char tail[] = "$1\r\n+\r\n$1\r\n-\r\n$5\r\nCOUNT\r\n$1\r\n1\r\n";
    size_t i, n, per, round;
    char *p;

    if (l->nchans == 0) {
        l->lag_left = 0;
        return;
    }
    round = l->nchans < EL_LAG_POLL_MAX ? l->nchans : EL_LAG_POLL_MAX;
    if (l->lag_left == 0) {
        l->lag_left = round;
        l->e->lag_poll = 0;
    }
    per = (round * EL_TICK_MS + EL_LAG_POLL_MS - 1) / EL_LAG_POLL_MS;
    n = per < l->lag_left ? per : l->lag_left;
    for (i = 0; i < n; i++) {
        c = l->chans[(l->lag_next + i) % l->nchans];
        if (c->state != ELC_READ) {
            continue;
        }
        a = xg_calloc(1, sizeof(*a));
        a->l = l;
        a->name = xg_strdup(c->name);
        a->gen = c->gen;
        /* written here, as the XREAD is */
        el_buf(l, c->keylen + sizeof(head) + sizeof(tail) + 32);
        p = l->xread;
        memcpy(p, head, sizeof(head) - 1);
        p = el_bulk(p + sizeof(head) - 1, c->key, c->keylen);
        memcpy(p, tail, sizeof(tail) - 1);
        p += sizeof(tail) - 1;
        if (redisAsyncFormattedCommand(l->cac, el_on_lag, a, l->xread,
                (size_t) (p - l->xread)) != REDIS_OK)
        {
            el_ask_free(a);
        }
    }
    l->lag_next = (l->lag_next + n) % l->nchans;
    l->lag_left -= n;
    if (l->lag_left == 0) {
        (void) redisAsyncCommand(l->cac, el_on_lag_done, l, "PING");
    }
}

/* Every EL_TICK_MS: interest, the epoch, books waiting, deadlines. */
static void
el_tick(evutil_socket_t fd, short what, void *arg)
{
    struct edge_link *l = arg;
    uint64_t now = xg_now_ms();
    size_t i;

    if (l->dead) {
        return;
    }
    if (l->reading && now - l->read_ms > EL_BLOCK_MS + EL_READ_GRACE_MS) {
        xg_rconn_fail(l->rd, XG_LOG_WARN, "XREAD not answered: the "
            "connection is dead");
    }
    el_expire_reqs(l, now);
    if (l->cac == NULL) {
        return;
    }
    if (now - l->epoch_at >= EL_EPOCH_POLL_MS) {
        l->epoch_at = now;
        (void) redisAsyncCommand(l->cac, el_on_epoch, l, "GET %s:epoch",
            l->src);
    }
    el_lag_poll(l);
    if (now - l->interest_at >= XG_REDIS_INTEREST_TTL_MS / 3) {
        l->interest_at = now;
        el_interest(l, NULL, 0);
    }
    for (i = 0; i < l->nchans; i++) {
        struct el_chan *c = l->chans[i];

        if (c->state != ELC_WAIT) {
            continue;
        }
        if (!c->warned && now - c->since_ms > EL_SNAP_WARN_MS) {
            c->warned = 1;
            el_log(XG_LOG_WARN, l, "%s: no snapshot from the core after "
                "%llu s (is the core's upstream publishing it?)", c->name,
                (unsigned long long) (now - c->since_ms) / 1000);
        }
        if (now - c->asked_ms >= EL_SNAP_RETRY_MS) {
            el_chan_start(l, c);
        }
    }
}

/* ---- the link's life ----------------------------------------------------------- */

static void
el_close(void *lp)
{
    struct edge_link *l = lp;

    /* quiet from now on: no more commands, no more callbacks */
    l->dead = 1;
    l->cac = l->rac = NULL;
    xg_rconn_stop(l->cmd);
    xg_rconn_stop(l->rd);
    xg_timer_del(l->ev_tick);
}

static void
el_free(void *lp)
{
    struct edge_link *l = lp;
    struct el_out *o;
    struct el_req *q;
    size_t i;

    l->dead = 1;
    if (l->e->link == l) {
        l->e->link = NULL;
    }
    /* hiredis calls the pending callbacks with NULL replies: their
       contexts' data is cleared first, so they return at once */
    xg_rconn_free(l->cmd);
    xg_rconn_free(l->rd);
    xg_timer_free(l->ev_tick);
    event_free(l->ev_out);
    while ((o = l->out) != NULL) {
        l->out = o->next;
        free(o->data);
        free(o);
    }
    while ((q = l->reqs) != NULL) {
        l->reqs = q->next;
        el_req_free(q);
    }
    for (i = 0; i < l->nchans; i++) {
        el_chan_free(l->chans[i]);
    }
    free(l->chans);
    free(l->htab);
    free(l->ans_key);
    free(l->bell_key);
    free(l->xread);
    free(l);
}

static const struct xg_ws_link el_link_ops = {
    el_send,
    el_close,
    el_free
};

/* The edge's per-upstream state (its id, its request numbers). */
static struct dr_edge *
dr_edge_get(struct dr *d)
{
    const struct dr_edge_conf *ec = d->cf->edge;
    struct dr_edge *e = d->edge;
    char host[64];
    size_t i;

    if (e != NULL) {
        return e;
    }
    e = d->edge = xg_calloc(1, sizeof(*e));
    if (ec->edge_id != NULL) {
        snprintf(e->id, sizeof(e->id), "%s", ec->edge_id);
    } else {
        if (gethostname(host, sizeof(host)) != 0) {
            snprintf(host, sizeof(host), "edge");
        }
        host[sizeof(host) - 1] = '\0';
        snprintf(e->id, sizeof(e->id), "%s.%s", host, d->name);
        for (i = 0; e->id[i] != '\0'; i++) {
            char ch = e->id[i];

            if (!((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z')
                || (ch >= '0' && ch <= '9') || ch == '_' || ch == '-'
                || ch == '.'))
            {
                e->id[i] = '_';
            }
        }
    }
    /* unique across the edge's restarts: its start time in ms */
    e->rid_base = (xg_wall_us() / 1000) * 1000000ULL;
    return e;
}

/* The venue's connect hook (xg_venue.h): a new link. */
struct xg_ws *
dr_edge_connect(void *p, struct xg_conn *conn, const struct xg_ws_opts *opts,
    const struct xg_ws_cbs *cbs, void *arg)
{
    struct dr *d = p;
    const struct dr_edge_conf *ec = d->cf->edge;
    const struct xg_upstream_conf *uc = xg_upstream_conf_of(d->up);
    struct edge_link *l = xg_calloc(1, sizeof(*l));
    struct xg_addr addr;
    char pfx[400];
    size_t n;

    l->d = d;
    l->e = dr_edge_get(d);
    l->e->link = l;
    l->e->links++;
    l->rd_id = -1;
    l->out_tail = &l->out;
    snprintf(l->src, sizeof(l->src), "%s:%s", ec->prefix, ec->source);
    n = strlen(l->src) + strlen(l->e->id) + 8;
    l->ans_key = xg_malloc(n);
    snprintf(l->ans_key, n, "%s:ans:%s", l->src, l->e->id);
    n = strlen(l->src) + sizeof(":bell");
    l->bell_key = xg_malloc(n);
    snprintf(l->bell_key, n, "%s:bell", l->src);
    l->ws = xg_ws_link_new(d->base, opts, cbs, arg, &el_link_ops, l);
    l->ev_out = event_new(d->base, -1, 0, el_out_cb, l);
    l->ev_tick = xg_timer_new_persist(d->base, el_tick, l);
    if (l->ev_out == NULL || l->ev_tick == NULL) {
        xg_log_error("edge: cannot create events");
        abort();
    }
    {
        struct timeval tv = { 0, EL_TICK_MS * 1000 };

        xg_timer_add(l->ev_tick, &tv);
    }
    memset(&addr, 0, sizeof(addr));
    snprintf(addr.host, sizeof(addr.host), "%s", uc->url.host);
    addr.port = uc->url.port;
    snprintf(pfx, sizeof(pfx), "upstream %s#%u: edge <- redis %s:%u (cmd)",
        d->name, xg_conn_id(conn), addr.host, addr.port);
    l->cmd = xg_rconn_new(d->base, pfx, &addr, ec->password, uc, &el_cmd_cbs,
        l);
    snprintf(pfx, sizeof(pfx), "upstream %s#%u: edge <- redis %s:%u (read)",
        d->name, xg_conn_id(conn), addr.host, addr.port);
    l->rd = xg_rconn_new(d->base, pfx, &addr, ec->password, uc, &el_rd_cbs,
        l);
    xg_rconn_set_tls(l->cmd, uc->url.tls, uc->tls_ca, uc->tls_verify);
    xg_rconn_set_tls(l->rd, uc->url.tls, uc->tls_ca, uc->tls_verify);
    /* its XREAD answers: about twelve objects an entry; cmd's lag
       poll: a whole entry for each channel every EL_LAG_POLL_MS */
    xg_rconn_set_block_replies(l->rd, 1);
    xg_rconn_set_block_replies(l->cmd, 1);
    xg_rconn_start(l->cmd);
    xg_rconn_start(l->rd);
    return l->ws;
}

/* ---- /status ------------------------------------------------------------------ */

void
dr_edge_status(struct dr *d, json_t *obj)
{
    struct dr_edge *e = d->edge;
    struct edge_link *l;
    json_t *o;
    size_t i, waiting = 0;

    if (d->cf->edge == NULL) {
        return;
    }
    o = json_object();
    json_object_set_new(o, "source", json_string(d->cf->edge->source));
    json_object_set_new(o, "prefix", json_string(d->cf->edge->prefix));
    if (e == NULL) {
        json_object_set_new(obj, "edge", o);
        return;
    }
    l = e->link;
    json_object_set_new(o, "id", json_string(e->id));
    json_object_set_new(o, "links", json_integer((json_int_t) e->links));
    json_object_set_new(o, "entries", json_integer((json_int_t) e->entries));
    json_object_set_new(o, "bytes", json_integer((json_int_t) e->bytes));
    json_object_set_new(o, "gaps", json_integer((json_int_t) e->gaps));
    json_object_set_new(o, "snapshots",
        json_integer((json_int_t) e->snapshots));
    json_object_set_new(o, "requests", json_integer((json_int_t) e->requests));
    json_object_set_new(o, "answers", json_integer((json_int_t) e->answers));
    json_object_set_new(o, "requests_lost",
        json_integer((json_int_t) e->requests_lost));
    json_object_set_new(o, "requests_expired",
        json_integer((json_int_t) e->requests_expired));
    json_object_set_new(o, "stale_answers",
        json_integer((json_int_t) e->stale_answers));
    json_object_set_new(o, "epoch_changes",
        json_integer((json_int_t) e->epoch_changes));
    json_object_set_new(o, "stale_entries",
        json_integer((json_int_t) e->stale_entries));
    json_object_set_new(o, "bells", json_integer((json_int_t) e->bells));
    json_object_set_new(o, "bell_gaps",
        json_integer((json_int_t) e->bell_gaps));
    json_object_set_new(o, "all_reads",
        json_integer((json_int_t) e->all_reads));
    json_object_set_new(o, "entries_carried",
        json_integer((json_int_t) e->carried));
    json_object_set_new(o, "lag_ms", json_integer((json_int_t) e->lag_ms));
    json_object_set_new(o, "lag_entries",
        json_integer((json_int_t) e->lag_entries));
    json_object_set_new(o, "last_id", e->last_id[0] != '\0'
        ? json_string(e->last_id) : json_null());
    if (l != NULL) {
        json_t *rs = json_object();

        for (i = 0; i < l->nchans; i++) {
            waiting += l->chans[i]->state != ELC_READ;
        }
        json_object_set_new(o, "epoch", l->epoch[0] != '\0'
            ? json_string(l->epoch) : json_null());
        json_object_set_new(o, "channels",
            json_integer((json_int_t) l->nchans));
        json_object_set_new(o, "channels_waiting",
            json_integer((json_int_t) waiting));
        json_object_set_new(o, "in_flight",
            json_integer((json_int_t) l->nreqs));
        json_object_set_new(o, "state", json_string(
            xg_rconn_state(l->cmd) == XG_RCONN_READY
            && xg_rconn_state(l->rd) == XG_RCONN_READY ? "connected"
            : "disconnected"));
        json_object_set_new(rs, "cmd",
            json_string(xg_rconn_state_name(l->cmd)));
        json_object_set_new(rs, "read",
            json_string(xg_rconn_state_name(l->rd)));
        json_object_set_new(rs, "connects", json_integer((json_int_t)
            (xg_rconn_connects(l->cmd) + xg_rconn_connects(l->rd))));
        json_object_set_new(rs, "disconnects", json_integer((json_int_t)
            (xg_rconn_disconnects(l->cmd) + xg_rconn_disconnects(l->rd))));
        json_object_set_new(rs, "last_error",
            xg_rconn_last_error(l->cmd)[0] != '\0'
            ? json_string(xg_rconn_last_error(l->cmd))
            : xg_rconn_last_error(l->rd)[0] != '\0'
            ? json_string(xg_rconn_last_error(l->rd)) : json_null());
        json_object_set_new(o, "redis", rs);
    }
    json_object_set_new(obj, "edge", o);
}

void
dr_edge_free(struct dr *d)
{
    if (d->edge != NULL && d->edge->link != NULL) {
        d->edge->link->e = NULL;    /* cannot happen: links go first */
    }
    free(d->edge);
    d->edge = NULL;
}

/* ---- conf ----------------------------------------------------------------------- */

static void
dr_edge_conf_free(void *p)
{
    struct dr_edge_conf *ec = p;

    free(ec->source);
    free(ec->prefix);
    if (ec->password != NULL) {
        OPENSSL_cleanse(ec->password, strlen(ec->password));
    }
    free(ec->password);
    free(ec->password_src);
    free(ec->edge_id);
    free(ec);
}

void *
dr_edge_create_conf(struct xg_conf *cf)
{
    struct dr_conf *c = dr_create_conf(cf);
    struct dr_edge_conf *ec = xg_conf_calloc(cf, sizeof(*ec),
        dr_edge_conf_free);

    ec->prefix = xg_strdup(XG_REDIS_DEFAULT_PREFIX);
    /* the core's upstream is named as this one unless `source` says */
    ec->source = cf->upstream != NULL && cf->upstream->name != NULL
        ? xg_strdup(cf->upstream->name) : NULL;
    c->edge = ec;
    c->rate_limit = 0;      /* the core's budget governs */
    return c;
}

static int
el_word_ok(const char *s, size_t max, const char *extra)
{
    size_t i, n = strlen(s);

    if (n == 0 || n > max) {
        return 0;
    }
    for (i = 0; i < n; i++) {
        if (!((s[i] >= 'a' && s[i] <= 'z') || (s[i] >= 'A' && s[i] <= 'Z')
            || (s[i] >= '0' && s[i] <= '9') || strchr(extra, s[i]) != NULL))
        {
            return 0;
        }
    }
    return 1;
}

static int
dr_edge_set(struct xg_conf *cf, const struct xg_conf_stmt *st,
    const struct xg_command *cmd, void *conf)
{
    struct dr_edge_conf *ec = ((struct dr_conf *) conf)->edge;
    const char *a = st->args[1], *name = st->args[0];

    if (strcmp(name, "source") == 0) {
        if (!xg_conf_name_ok(a)) {
            return xg_conf_error(cf, st, "\"source\": bad upstream name "
                "\"%s\" (letters, digits, \"_\", \"-\", \".\")", a);
        }
        free(ec->source);
        ec->source = xg_strdup(a);
    } else if (strcmp(name, "prefix") == 0) {
        if (!el_word_ok(a, XG_REDIS_MAX_PREFIX, "_-.:{}")) {
            return xg_conf_error(cf, st, "\"prefix\": 1 to %d of letters, "
                "digits, \"_-.:{}\", not \"%s\"", XG_REDIS_MAX_PREFIX, a);
        }
        free(ec->prefix);
        ec->prefix = xg_strdup(a);
    } else if (strcmp(name, "edge_id") == 0) {
        if (!el_word_ok(a, 64, "_-.")) {
            return xg_conf_error(cf, st, "\"edge_id\": 1 to 64 of letters, "
                "digits, \"_-.\", not \"%s\"", a);
        }
        free(ec->edge_id);
        ec->edge_id = xg_strdup(a);
    } else {
        /* password: only by reference, never the value in the conf */
        if (strncmp(a, "env:", 4) != 0 && strncmp(a, "file:", 5) != 0) {
            return xg_conf_error(cf, st, "\"password\": env:NAME or "
                "file:PATH, never the password itself");
        }
        free(ec->password);
        free(ec->password_src);
        ec->password = xg_conf_secret(cf, st, a);
        if (ec->password == NULL) {
            return XG_ERROR;
        }
        ec->password_src = xg_conf_secret_source(st, a);
    }
    return XG_OK;
}

static const struct xg_conf_bounds el_bounds_timeout = { 0, 3600 * 1000 };

/* What a reload cannot change under a running edge: another core. */
const char *const dr_edge_restart_names[] = {
    "url", "tls_ca", "tls_verify", "source", "prefix", "edge_id", NULL
};

const struct xg_command dr_edge_commands[] = {
    { "source", XG_CONF_UPSTREAM | XG_CONF_TAKE1, dr_edge_set, 0, NULL },
    { "prefix", XG_CONF_UPSTREAM | XG_CONF_TAKE1, dr_edge_set, 0, NULL },
    { "password", XG_CONF_UPSTREAM | XG_CONF_TAKE1, dr_edge_set, 0, NULL },
    { "edge_id", XG_CONF_UPSTREAM | XG_CONF_TAKE1, dr_edge_set, 0, NULL },
    { "request_timeout", XG_CONF_UPSTREAM | XG_CONF_TAKE1,
      xg_conf_set_duration, offsetof(struct dr_conf, request_timeout_ms),
      &el_bounds_timeout },
    XG_CONF_NULL_COMMAND
};

/* For `exgate -T`: the password by source, never its value. */
int
dr_edge_dump(struct xg_conf_dump *dd, const struct xg_command *cmd,
    const void *conf)
{
    const struct dr_edge_conf *ec = ((const struct dr_conf *) conf)->edge;

    if (cmd->set != dr_edge_set) {
        return XG_AGAIN;
    }
    if (strcmp(cmd->name, "source") == 0) {
        xg_conf_dump_words(dd, cmd->name, ec->source != NULL ? ec->source
            : "(none)", NULL);
    } else if (strcmp(cmd->name, "prefix") == 0) {
        xg_conf_dump_words(dd, cmd->name, ec->prefix, NULL);
    } else if (strcmp(cmd->name, "edge_id") == 0) {
        if (ec->edge_id != NULL) {
            xg_conf_dump_words(dd, cmd->name, ec->edge_id, NULL);
        } else {
            xg_conf_dump_comment(dd, "%s: not set (HOSTNAME.UPSTREAM)",
                cmd->name);
        }
    } else if (ec->password_src != NULL) {
        xg_conf_dump_words(dd, cmd->name, ec->password_src, NULL);
    } else {
        xg_conf_dump_comment(dd, "%s: not set (no AUTH)", cmd->name);
    }
    return XG_OK;
}

/*
 * Whether an edge can go on through a reload to CONF (xg_venue.h's
 * reconf_check): only on a conf that has its edge block, which every
 * `protocol edge` upstream's has (a change of url, source, prefix or
 * edge_id restarts it before this is asked: dr_edge_restart_names).
 */
int
dr_edge_reconf_check(void *p, const struct xg_upstream_conf *conf)
{
    const struct dr_conf *nc = conf->proto_conf;

    return nc != NULL && nc->edge != NULL ? XG_OK : XG_ERROR;
}

/*
 * A reload the upstream goes on through (dr_edge_reconf_check() said
 * so): the link's connections follow the new timeouts and policy, and a
 * new password (the same env: or file: with another value too) at once.
 */
void
dr_edge_reconf(struct dr *d, const struct xg_upstream_conf *conf)
{
    const struct dr_conf *nc = conf->proto_conf;
    const struct dr_edge_conf *b = nc->edge;
    struct xg_addr addr;

    memset(&addr, 0, sizeof(addr));
    snprintf(addr.host, sizeof(addr.host), "%s", conf->url.host);
    addr.port = conf->url.port;
    if (d->edge != NULL && d->edge->link != NULL) {
        xg_rconn_reconf(d->edge->link->cmd, conf);
        xg_rconn_reconf(d->edge->link->rd, conf);
        xg_rconn_retarget(d->edge->link->cmd, &addr, b->password);
        xg_rconn_retarget(d->edge->link->rd, &addr, b->password);
    }
}
