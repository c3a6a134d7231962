/*
 * xg_venue_edge_read.c: an edge link's reader of the core's streams
 * (issue 17; the link is in xg_venue_edge.c): the blocking XREAD over
 * the bell, the answer stream and the channels due, and the delivery of
 * what it brings to the venue, from a stream or from the bell that
 * carries it (docs/edge.md, "Data"; the bell: src/xg_redis.c).
 */
#include "xg_venue_edge_int.h"

/* ---- reading ---------------------------------------------------------------- */

/* An entry's age (its core's wall clock, unix ms, against ours, NOW:
   the hosts' clocks must agree, NTP's tens of microseconds). */
static void
el_lag(struct dr_edge *e, const redisReply *ts, uint64_t now)
{
    uint64_t t;

    if (ts == NULL || el_seq_of_id(ts->str, ts->len, &t) != XG_OK) {
        return;
    }
    e->lag_ms = now > t ? now - t : 0;
}

/* A channel entry's fields, found in one pass over its pairs (the first
   of a name, as el_hash_get() finds it). */
struct el_fields {
    const redisReply   *seq, *epoch, *data, *ts;
};

static void
el_fields(const redisReply *rep, struct el_fields *f)
{
    const redisReply *k, *v;
    size_t i;

    memset(f, 0, sizeof(*f));
    for (i = 0; i + 1 < rep->elements; i += 2) {
        k = rep->element[i];
        v = rep->element[i + 1];
        if (k->type != REDIS_REPLY_STRING || v->type != REDIS_REPLY_STRING) {
            continue;
        }
        if (k->len == 3 && f->seq == NULL
            && memcmp(k->str, "seq", 3) == 0)
        {
            f->seq = v;
        } else if (k->len == 5 && f->epoch == NULL
            && memcmp(k->str, "epoch", 5) == 0)
        {
            f->epoch = v;
        } else if (k->len == 4 && f->data == NULL
            && memcmp(k->str, "data", 4) == 0)
        {
            f->data = v;
        } else if (k->len == 2 && f->ts == NULL
            && memcmp(k->str, "ts", 2) == 0)
        {
            f->ts = v;
        }
    }
}

/*
 * Entry SEQ of C (its id ID, IDLEN bytes; TS the core's wall clock, or
 * NULL), of the link's epoch, to the venue: one seen is skipped, a jump
 * is a hole (counted, logged, repaired by the venue). Returns XG_ERROR
 * when the link is gone.
 */
static int
el_deliver(struct edge_link *l, struct el_chan *c, uint64_t seq,
    const redisReply *ts, const char *id, size_t idlen, const char *data,
    size_t len, uint64_t *now)
{
    if (seq <= c->last) {
        return XG_OK;   /* seen (a snapshot's own entry, or its bell's) */
    }
    if (seq != c->last + 1 && c->last != 0) {
        l->e->gaps++;
        el_log(XG_LOG_WARN, l, "%s: entries %llu to %llu are not in the "
            "stream (trimmed, or dropped by the core)", c->name,
            (unsigned long long) c->last + 1, (unsigned long long) seq - 1);
        /* the venue repairs what it can from the next data */
        dr_edge_hole(l->d, c->name);
    }
    c->last = seq;
    if (*now == 0) {
        *now = xg_wall_us() / 1000;     /* once a reply */
    }
    el_lag(l->e, ts, *now);
    if (idlen > sizeof(l->e->last_id) - 1) {
        idlen = sizeof(l->e->last_id) - 1;
    }
    memcpy(l->e->last_id, id, idlen);
    l->e->last_id[idlen] = '\0';
    l->e->entries++;
    l->e->bytes += len;
    if (xg_ws_link_message(l->ws, data, len) != XG_OK || l->dead) {
        return XG_ERROR;
    }
    return XG_OK;
}

/*
 * The bell's entries (see src/xg_redis.c, "the bell"): each names the
 * channels the core wrote in one loop pass, and carries the entries
 * themselves when they were few and small (e: xg_redis_carried_next()).
 * A carried entry that is the next of a channel read is delivered here;
 * a channel with one it cannot take is read until it has it (c->want:
 * the core sends a bell that carries before the entries' XADDs). Any
 * other channel named is named in the next XREAD, except one named in
 * the XREAD that brought the bell: a bell that only names goes after the
 * entries' XADDs, so Redis ran that XREAD after them. After a hole in
 * the bells' numbers every channel is read, and the carried entries still
 * set c->want: that read may run before their XADDs (a carrying bell of
 * 16 or more goes a round trip before them) and return at once with the
 * entries of the bells missed. Past a malformed record, whose channels it
 * cannot know, every channel is read until a later bell is (c->fence):
 * Redis ran that bell after this one's XADDs. Returns XG_ERROR when the
 * link is gone.
 */
static int
el_on_bells(struct edge_link *l, const redisReply *ents, uint64_t *now)
{
    const redisReply *en, *k, *v, *ep, *ch, *ts, *e, *lts;
    struct xg_redis_carried rec;
    struct el_chan *c;
    const char *p, *end, *sp;
    char id[32];
    uint64_t seq, s;
    size_t j, i;
    int all, rc, fresh;

    for (j = 0; j < ents->elements; j++) {
        en = ents->element[j];
        if (en->type != REDIS_REPLY_ARRAY || en->elements != 2
            || en->element[0]->type != REDIS_REPLY_STRING
            || en->element[1]->type != REDIS_REPLY_ARRAY
            || el_seq_of_id(en->element[0]->str, en->element[0]->len, &seq)
               != XG_OK)
        {
            continue;
        }
        all = 0;
        if (seq != l->bell_last + 1) {
            /* bells trimmed, or not written by the core: read all */
            l->e->bell_gaps++;
            all = 1;
        }
        l->bell_last = seq;
        l->e->bells++;
        ep = ch = ts = e = NULL;
        for (i = 0; i + 1 < en->element[1]->elements; i += 2) {
            k = en->element[1]->element[i];
            v = en->element[1]->element[i + 1];
            if (k->type != REDIS_REPLY_STRING
                || v->type != REDIS_REPLY_STRING)
            {
                continue;
            }
            if (k->len == 1 && k->str[0] == 'e') {
                e = v;
            } else if (k->len == 5 && memcmp(k->str, "epoch", 5) == 0) {
                ep = v;
            } else if (k->len == 2 && memcmp(k->str, "ch", 2) == 0) {
                ch = v;
            } else if (k->len == 2 && memcmp(k->str, "ts", 2) == 0) {
                ts = v;
            } else if (k->len == 3 && memcmp(k->str, "all", 3) == 0) {
                all = 1;
            }
        }
        if (ep != NULL && !el_epoch_is(l, ep->str, ep->len)) {
            continue;   /* a new core's: the epoch key tells */
        }
        if (all) {
            el_all_due(l);      /* and what the bell carries, below */
        }
        /* the carried entries, in order; the lag from the first that
           is new (they share the bell's ts: one parse, not one each) */
        lts = ts;
        p = e != NULL ? e->str : NULL;
        end = e != NULL ? e->str + e->len : NULL;
        while (p != NULL
               && (rc = xg_redis_carried_next(&p, end, &rec)) != 0)
        {
            if (rc < 0) {
                /* not the core's: its streams tell */
                el_log(XG_LOG_WARN, l, "bell %llu carries a malformed "
                    "entry: reading every channel", (unsigned long long) seq);
                el_all_due(l);
                for (i = 0; i < l->nchans; i++) {
                    c = l->chans[i];
                    if (c->fence != UINT64_MAX && c->fence < seq) {
                        c->fence = seq;     /* UINT64_MAX: starting */
                    }
                }
                break;
            }
            s = rec.seqn;
            if ((c = el_chan_lookup(l, rec.chan, rec.clen)) == NULL
                || c->state == ELC_WAIT)
            {
                continue;
            }
            if (s > c->want) {
                c->want = s;    /* read until it has that far */
            }
            if (c->state != ELC_READ) {
                continue;       /* starting: where from may be before s */
            }
            if (c->due) {
                continue;
            }
            if (s > c->last + 1) {
                /* a hole, or (last 0: started on an empty stream) the
                   entries before it may be in the same reply, after the
                   bell: its stream tells */
                c->due = 1;
                continue;
            }
            memcpy(id, rec.seq, rec.seqlen);    /* at most 20 digits */
            memcpy(id + rec.seqlen, "-0", 3);
            c->carried = l->e->bells;
            fresh = s > c->last;
            l->e->carried += fresh;
            if (el_deliver(l, c, s, lts, id, rec.seqlen + 2, rec.data,
                    rec.len, now) != XG_OK)
            {
                return XG_ERROR;
            }
            if (fresh) {
                lts = NULL;
            }
        }
        if (ch == NULL) {
            continue;
        }
        for (p = ch->str, end = ch->str + ch->len; p < end; p = sp + 1) {
            if ((sp = memchr(p, ' ', (size_t) (end - p))) == NULL) {
                sp = end;
            }
            c = el_chan_lookup(l, p, (size_t) (sp - p));
            if (c != NULL && c->listed != l->read_gen
                && c->carried != l->e->bells)
            {
                c->due = 1;
            }
        }
    }
    return XG_OK;
}

static void
el_on_read(redisAsyncContext *ac, void *reply, void *priv)
{
    struct edge_link *l = ac->data != NULL ? ((struct edge_link *) priv)
                                           : NULL;
    redisReply *rep = reply;
    size_t i, j;
    uint64_t now = 0;
    char why[200];

    if (l == NULL || l->rac != ac) {
        return;
    }
    l->reading = 0;
    l->unblocking = 0;
    if (rep == NULL) {
        return;     /* the connection went: its ready reads again */
    }
    if (rep->type == REDIS_REPLY_NIL) {
        /* a second without any news: below */
    } else if (rep->type == REDIS_REPLY_ERROR) {
        if (strncmp(rep->str, "UNBLOCKED", 9) != 0) {
            snprintf(why, sizeof(why), "XREAD failed: %.*s",
                (int) (rep->len > 120 ? 120 : rep->len), rep->str);
            xg_rconn_fail(l->rd, XG_LOG_ERROR, why);
            return;
        }
    } else if (rep->type == REDIS_REPLY_ARRAY) {
        l->in_read = 1;
        for (i = 0; i < rep->elements; i++) {
            redisReply *st = rep->element[i], *ents;
            int is_ans;
            unsigned gen;
            struct el_chan *c = NULL;

            if (st->type != REDIS_REPLY_ARRAY || st->elements != 2
                || st->element[0]->type != REDIS_REPLY_STRING
                || st->element[1]->type != REDIS_REPLY_ARRAY)
            {
                continue;
            }
            if (strcmp(st->element[0]->str, l->bell_key) == 0) {
                l->bell_ms = xg_now_ms();
                if (el_on_bells(l, st->element[1], &now) != XG_OK) {
                    return;     /* the link is gone */
                }
                continue;
            }
            is_ans = strcmp(st->element[0]->str, l->ans_key) == 0;
            ents = st->element[1];
            gen = l->chans_gen + 1;
            for (j = 0; j < ents->elements; j++) {
                redisReply *en = ents->element[j];
                const redisReply *f1, *f2;
                struct el_fields f;
                uint64_t seq;

                if (en->type != REDIS_REPLY_ARRAY || en->elements != 2
                    || en->element[0]->type != REDIS_REPLY_STRING
                    || en->element[1]->type != REDIS_REPLY_ARRAY)
                {
                    continue;
                }
                if (is_ans) {
                    snprintf(l->ans_last, sizeof(l->ans_last), "%.*s",
                        (int) en->element[0]->len, en->element[0]->str);
                    f1 = el_hash_get(en->element[1], "rid");
                    f2 = el_hash_get(en->element[1], "body");
                    if (f1 != NULL && f2 != NULL
                        && el_on_answer(l, f1->str, f1->len, f2->str,
                            f2->len) != XG_OK)
                    {
                        return;     /* the link is gone */
                    }
                    continue;
                }
                /* the channel may have gone meanwhile (an unsubscribe
                   from inside a delivery): found again when one went */
                if (gen != l->chans_gen) {
                    gen = l->chans_gen;
                    c = el_chan_by_key(l, st->element[0]->str,
                        st->element[0]->len);
                }
                if (c == NULL || c->state != ELC_READ) {
                    break;
                }
                el_fields(en->element[1], &f);
                if (f.seq == NULL || f.epoch == NULL || f.data == NULL
                    || el_seq_of_id(f.seq->str, f.seq->len, &seq) != XG_OK)
                {
                    continue;
                }
                if (!el_epoch_is(l, f.epoch->str, f.epoch->len)) {
                    /* not this epoch's: the channel starts again soon
                       (its stream is replaced by the new core's) */
                    c->state = ELC_WAIT;
                    c->asked_ms = xg_now_ms();
                    l->dirty = 1;
                    break;
                }
                if (el_deliver(l, c, seq, f.ts, en->element[0]->str,
                        en->element[0]->len, f.data->str, f.data->len, &now)
                    != XG_OK)
                {
                    return;     /* the link is gone */
                }
            }
            if (!is_ans && ents->elements >= EL_COUNT) {
                /* more than COUNT: the rest in the next XREAD */
                if (gen != l->chans_gen) {
                    c = el_chan_by_key(l, st->element[0]->str,
                        st->element[0]->len);
                }
                if (c != NULL && c->state == ELC_READ) {
                    c->due = 1;
                }
            }
        }
    }
    l->in_read = 0;
    if (l->dead) {
        return;
    }
    if ((l->read_bell || rep->type == REDIS_REPLY_NIL)
        && xg_now_ms() - l->bell_ms >= EL_BELL_QUIET_MS)
    {
        /* no bell, not even the core's empty one of every second (a
           core gone, or older than the bell), whether the XREAD timed
           out or answers kept it busy: every channel once, so that no
           entry waits for a bell that is not coming */
        el_all_due(l);
        l->bell_ms = xg_now_ms();
    }
    el_read(l);
}

/* V in decimal at P; returns the end. */
char *
el_u64(char *p, uint64_t v)
{
    char t[20];
    size_t n = 0;

    do {
        t[n++] = (char) ('0' + v % 10);
        v /= 10;
    } while (v != 0);
    while (n > 0) {
        *p++ = t[--n];
    }
    return p;
}

/* S (LEN bytes) as a RESP bulk string at P; returns the end. */
char *
el_bulk(char *p, const char *s, size_t len)
{
    *p++ = '$';
    p = el_u64(p, len);
    memcpy(p, "\r\n", 2);
    memcpy(p + 2, s, len);
    memcpy(p + 2 + len, "\r\n", 2);
    return p + len + 4;
}

/* The link's command buffer, NEED bytes at least. */
void
el_buf(struct edge_link *l, size_t need)
{
    if (need > l->xread_cap) {
        l->xread = xg_realloc(l->xread, need);
        l->xread_cap = need;
    }
}

/*
 * Whether C is named in the next XREAD: all are, or it is due, or a bell
 * carried an entry of it that it could not take (a hole before it, or
 * it was due, or it was starting): the core sends a carrying bell before
 * the entries' XADDs, so a read that Redis ran in between finds the
 * stream short of it. For the same reason a channel that started (its
 * snapshot or its stream's end read) is named until the link has read a
 * bell after c->fence, the last one Redis had then: a bell before it may
 * have carried an entry the start missed (read before the channel was
 * known, or while it started), and the read that brings the next one ran
 * after that bell, so after the XADDs of every bell before it.
 */
static int
el_named(const struct edge_link *l, const struct el_chan *c, int all)
{
    return c->state == ELC_READ
        && (all || c->due || c->last < c->want || l->bell_last <= c->fence);
}

/*
 * Issues the next XREAD BLOCK on rd, over the bell, the answer stream and
 * the channels el_named() names (see el_on_bells()); each named is no
 * longer due, unless its answer says so. Until the bell's position is
 * known (el_bell_ask()) every channel is named and the bell is not.
 *
 * The command is written in RESP here, into a buffer the link keeps: it
 * is sent again after every answer, and hiredis' formatting (an sds grown
 * per argument) was a large part of the edge's work per entry
 * (docs/performance.md).
 */
void
el_read(struct edge_link *l)
{
    static const char head[] = "$5\r\nXREAD\r\n$5\r\nCOUNT\r\n";
    static const char block[] = "$5\r\nBLOCK\r\n";
    static const char streams[] = "$7\r\nSTREAMS\r\n";
    size_t i, n = 0, need, alen, blen;
    struct el_chan *c;
    char *p, id[24], *q;
    int bell = l->bell_known, all = !l->bell_known;

    if (l->dead || l->reading || l->in_read || l->rac == NULL
        || !l->ans_known)
    {
        return;
    }
    if (all) {
        el_bell_ask(l);
    }
    alen = strlen(l->ans_key);
    blen = strlen(l->bell_key);
    need = 160 + 2 * (alen + blen + 64) + sizeof(l->ans_last);
    for (i = 0; i < l->nchans; i++) {
        c = l->chans[i];
        if (el_named(l, c, all)) {
            n++;
            need += c->keylen + 80;
        }
    }
    el_buf(l, need);
    p = l->xread;
    *p++ = '*';
    p = el_u64(p, 6 + 2 * (n + 1 + bell));
    memcpy(p, "\r\n", 2);
    p += 2;
    memcpy(p, head, sizeof(head) - 1);
    p += sizeof(head) - 1;
    q = el_u64(id, EL_COUNT);
    p = el_bulk(p, id, (size_t) (q - id));
    memcpy(p, block, sizeof(block) - 1);
    p += sizeof(block) - 1;
    q = el_u64(id, EL_BLOCK_MS);
    p = el_bulk(p, id, (size_t) (q - id));
    memcpy(p, streams, sizeof(streams) - 1);
    p += sizeof(streams) - 1;
    if (bell) {
        p = el_bulk(p, l->bell_key, blen);
    }
    p = el_bulk(p, l->ans_key, alen);
    for (i = 0; i < l->nchans; i++) {
        c = l->chans[i];
        if (el_named(l, c, all)) {
            p = el_bulk(p, c->key, c->keylen);
        }
    }
    if (bell) {
        q = el_u64(id, l->bell_last);
        memcpy(q, "-0", 2);
        p = el_bulk(p, id, (size_t) (q + 2 - id));
    }
    p = el_bulk(p, l->ans_last, strlen(l->ans_last));
    for (i = 0; i < l->nchans; i++) {
        c = l->chans[i];
        if (el_named(l, c, all)) {
            q = el_u64(id, c->last);
            memcpy(q, "-0", 2);
            p = el_bulk(p, id, (size_t) (q + 2 - id));
        }
    }
    if (redisAsyncFormattedCommand(l->rac, el_on_read, l, l->xread,
            (size_t) (p - l->xread)) == REDIS_OK)
    {
        l->reading = 1;
        l->dirty = 0;
        l->read_ms = xg_now_ms();
        l->read_gen++;
        l->read_bell = bell;
        for (i = 0; i < l->nchans; i++) {
            c = l->chans[i];
            if (el_named(l, c, all)) {
                c->due = 0;
                c->listed = l->read_gen;
            }
        }
    }
}

