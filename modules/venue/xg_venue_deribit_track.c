/*
 * xg_venue_deribit_track.c: the Deribit venue's continuity kinds for the
 * tracker engine (src/xg_track.c): books bridged by change_id, trades
 * backfilled by trade_seq, a currency's trades by time, user.orders
 * reconciled; and the fetches refused for now.
 */
#include "xg_venue_deribit_int.h"

/* ---- continuity trackers (src/xg_track.c): the module's side ---- */

/*
 * Every channel whose continuity the gateway keeps has a tracker on its
 * registry entry (ch->ext): a book, trades by trade_seq, a currency's
 * trades by time, user.orders. The engine holds, fetches, retries,
 * releases and gives up; the kinds below say what the messages mean.
 */

/* DATA (borrowed) to every subscriber of CH, one message shared. */
static void
dr_fanout(struct dr *d, struct xg_reg_channel *ch, const char *data,
    size_t len)
{
    xg_session_fanout(d->s, ch, data, len);
}

/* MSG (a whole notification) to every subscriber of CH. */
static void
dr_fanout_json(struct dr *d, struct xg_reg_channel *ch, json_t *msg)
{
    char *s;

    if (ch->nsubs == 0) {
        return;
    }
    s = json_dumps(msg, JSON_COMPACT | JSON_REAL_PRECISION(17));
    if (s != NULL) {
        dr_fanout(d, ch, s, strlen(s));
    }
    free(s);
}

/* A notification of DATA (borrowed) on CH, built here, to its subscribers. */
static void
dr_notify(struct dr *d, struct xg_reg_channel *ch, json_t *data)
{
    json_t *msg = json_pack("{s:s, s:s, s:{s:s, s:O}}", "jsonrpc", "2.0",
        "method", "subscription", "params", "channel", ch->name, "data",
        data);

    dr_fanout_json(d, ch, msg);
    json_decref(msg);
}

/* The engine's callbacks (struct xg_track_env): CTX is the module's
   instance, CHAN the tracker's registry channel. */
void
dr_track_send(void *ctx, void *chan, struct xg_reg_req *q)
{
    struct xg_reg_channel *ch = chan;

    if (q->chan == NULL) {      /* a new request, not one sent again */
        q->nchan = 1;
        q->chan = xg_calloc(1, sizeof(char *));
        q->chan[0] = xg_strdup(ch->name);
    }
    dr_send(ctx, q);
}

void
dr_track_fanout(void *ctx, void *chan, const char *data, size_t len)
{
    struct xg_reg_channel *ch = chan;

    dr_fanout(ctx, ch, data, len);
}

void
dr_track_notice(void *ctx, void *chan, uint64_t duration_ms,
    const char *reason)
{
    dr_gap_notice(ctx, chan, duration_ms, reason);
}

uint64_t
dr_track_now(void *ctx)
{
    return xg_now_ms();
}

/* ---- order books: late joiners, bridging after a restore, gaps ---- */

/*
 * For `book.INSTRUMENT.INTERVAL` channels (the ones with snapshot/change
 * chains) the gateway keeps the book (src/xg_book.c), so that every
 * client sees one unbroken chain whatever happens upstream (DESIGN.md
 * §3a): a late joiner gets a snapshot built from it; after a restore (or
 * a gap, detected once here) subscribers that already hold the book get
 * one bridging `change` from the book they have (a mark taken when the
 * chain broke) to the exchange's new snapshot; clients that joined
 * meanwhile get the snapshot itself. These messages are parsed with
 * jansson; other channels are only scanned.
 */

struct dr_book {
    struct xg_book        *book;
    struct xg_book_state  *mark;     /* what in-sync clients hold */
    struct dr_client     **need;     /* joined with no book yet */
    size_t                 nneed, need_cap;
};

static int
dr_is_book_channel(const char *name)
{
    return xg_venue_deribit_book_kind(name) == XG_BOOK_DELTA;
}

static void *
dr_book_create(const char *name)
{
    struct xg_book *bk;
    struct dr_book *b;

    if (!dr_is_book_channel(name)
        || (bk = xg_venue_deribit_book_new(name, NULL)) == NULL) {
        return NULL;
    }
    b = xg_calloc(1, sizeof(*b));
    b->book = bk;
    return b;
}

static void
dr_book_free(void *p)
{
    struct dr_book *b = p;

    xg_book_state_unref(b->mark);
    xg_book_free(b->book);
    free(b->need);
    free(b);
}

/* The stream broke (upstream down, stale, a gap): what clients hold is
   remembered, and bridged to the new snapshot. */
static void
dr_book_lost(struct xg_track *t)
{
    struct dr_book *b = t->data;

    /* a gap has already unsynced the book; its levels are still the
       last ones clients got (apply is atomic). NULL: never had any. */
    if (b->mark == NULL) {
        b->mark = xg_book_mark(b->book);
    }
    xg_book_invalidate(b->book);
}

static int
dr_book_needs(const struct dr_book *b, const struct dr_client *dc)
{
    size_t i;

    for (i = 0; i < b->nneed; i++) {
        if (b->need[i] == dc) {
            return 1;
        }
    }
    return 0;
}

/* The `data` object of a notification (DATA, LEN) into *V: XG_ERROR
   when it has none. */
static int
dr_note_data(const char *data, size_t len, struct xg_jspan *v)
{
    static const char *const pkeys[] = { "params" }, *const dkeys[] = {
        "data" };
    struct xg_jspan params;

    if (xg_jscan_object(data, len, pkeys, 1, &params) != XG_OK
        || params.p == NULL
        || xg_jscan_object(params.p, params.len, dkeys, 1, v) != XG_OK
        || v->p == NULL) {
        return XG_ERROR;
    }
    return XG_OK;
}

/*
 * A notification on a book channel: keeps the book and decides what each
 * subscriber gets: the original bytes (a change in the chain), or nothing
 * more (this function delivered a snapshot or a bridge, or dropped it).
 */
static enum xg_track_verdict
dr_book_parse(struct xg_track *t, const char *data, size_t len,
    struct xg_track_seq *seq)
{
    struct dr *d = t->env->ctx;
    struct xg_reg_channel *ch = t->chan;
    struct dr_book *b = t->data;
    const struct xg_book_state *from;
    struct xg_jspan v;
    enum xg_book_result r;
    char *bridge = NULL;
    size_t i;

    if (dr_note_data(data, len, &v) != XG_OK) {
        return XG_TRACK_PASS;
    }
    /* no mark is taken before applying: a malformed snapshot would leave
       it behind, stale, while the chain goes on (xg_book_replaced() gives
       the replaced state of a valid one instead) */
    xg_book_set_log(b->book, d->up);    /* its own lines name the upstream */
    r = xg_venue_deribit_book_apply_text(b->book, v.p, v.len);
    switch (r) {
    case XG_BOOK_APPLIED:
        return XG_TRACK_PASS;   /* a change in the chain: as it is */
    case XG_BOOK_SNAPSHOT:
        break;
    case XG_BOOK_GAP:
        xg_upstream_log(XG_LOG_WARN, d->up, "%s: gap at change_id %llu: "
            "resubscribing for a new snapshot", ch->name,
            (unsigned long long) xg_book_seq(b->book));
        d->book_gaps++;
        xg_track_gap(t, ch->last_data_ms, "change_id gap");
        xg_session_resubscribe(d->s, ch);
        return XG_TRACK_DROP;
    case XG_BOOK_WAIT:
        return XG_TRACK_DROP;   /* a snapshot is on its way */
    default:
        d->book_errors++;
        if (xg_book_synced(b->book)) {
            /* clients hold the book in sync: a message it rejected would
               break theirs; the next change is a gap, which resyncs */
            xg_upstream_log(XG_LOG_WARN, d->up, "%s: %s; dropped", ch->name,
                xg_book_last_error(b->book));
            return XG_TRACK_DROP;
        }
        xg_upstream_log(XG_LOG_WARN, d->up, "%s: %s; passed through (the book "
            "is not in sync)", ch->name, xg_book_last_error(b->book));
        return XG_TRACK_PASS;
    }
    /* a snapshot: bridge those who hold the old book, the others get it */
    from = b->mark != NULL ? b->mark : xg_book_replaced(b->book);
    if (from != NULL) {
        bridge = xg_venue_deribit_book_bridge(from, b->book, NULL);
        d->book_resyncs++;
        xg_upstream_log(XG_LOG_INFO, d->up, "%s: new snapshot bridged with a "
            "change (%llu -> %llu)", ch->name,
            (unsigned long long) xg_book_state_seq(from),
            (unsigned long long) xg_book_seq(b->book));
    }
    /* the stream gets it, and it is the channel's snapshot there too */
    xg_session_publish_snapshot(d->s, ch, data, len);
    {
        /* each text encoded once, shared by reference */
        struct xg_msg *snap = xg_msg_new(data, len);
        struct xg_msg *br = bridge ? xg_msg_new(bridge, strlen(bridge))
                                   : NULL;

        for (i = 0; i < ch->nsubs; i++) {
            struct dr_client *dc = ch->subs[i]->owner;

            if (ch->subs[i]->out == NULL) {
                continue;       /* the session's interest holder */
            }
            xg_client_send_msg(dc->c, br == NULL || dr_book_needs(b, dc)
                                      ? snap : br);
        }
        xg_msg_unref(snap);
        xg_msg_unref(br);
    }
    free(bridge);
    xg_book_state_unref(b->mark);
    b->mark = NULL;
    b->nneed = 0;
    seq->lined = 1;
    return XG_TRACK_DROP;
}

/*
 * A rotation's new connection on a book channel: its chain takes over at
 * the change that chains on what clients hold (prev_change_id = the
 * book's change_id), or right after its message at that change_id; what
 * is older was delivered already, what is newer waits for the old
 * connection to catch up. A book not in sync has nothing to line up with.
 */
static enum xg_track_cross
dr_book_cross(struct xg_track *t, const char *data, size_t len)
{
    static const char *const keys[] = { "type", "change_id",
        "prev_change_id" };
    struct dr_book *b = t->data;
    uint64_t seq = xg_book_seq(b->book), id, prev;
    struct xg_jspan v, k[3];

    if (!xg_book_synced(b->book)) {
        return XG_CROSS_SWITCH;
    }
    if (data == NULL) {
        return XG_CROSS_WAIT;
    }
    if (dr_note_data(data, len, &v) != XG_OK
        || xg_jscan_object(v.p, v.len, keys, 3, k) != XG_OK
        || xg_jscan_uint(&k[1], &id) != XG_OK) {
        return XG_CROSS_SWITCH;     /* its parse says what it is */
    }
    if (!xg_jscan_str_eq(&k[0], "snapshot") && k[2].p != NULL
        && xg_jscan_uint(&k[2], &prev) == XG_OK && prev == seq) {
        return XG_CROSS_SWITCH;
    }
    if (id == seq) {
        return XG_CROSS_DROP_SWITCH;
    }
    return id < seq ? XG_CROSS_DROP : XG_CROSS_WAIT;
}

/* A book is repaired by a new snapshot, not a fetch: nothing is held. */
static const struct xg_track_kind dr_book_kind = {
    "book", "resync", 0, dr_book_create, dr_book_parse, NULL, NULL, NULL,
    dr_book_lost, dr_book_free, dr_book_cross
};

/* CH's book, or NULL (not a book channel, or not made yet). */
static struct dr_book *
dr_book_of(const struct xg_reg_channel *ch)
{
    const struct xg_track *t = ch->ext;

    return t != NULL && t->kind == &dr_book_kind ? t->data : NULL;
}

/* DC joined CH: a snapshot now if the book is in sync, else later. */
void
dr_book_joined(struct dr_client *dc, struct xg_reg_channel *ch, int live)
{
    struct dr_book *b;

    if (dr_is_book_channel(ch->name)) {
        dr_track_get(dc->d, ch);
    }
    if ((b = dr_book_of(ch)) == NULL) {
        return;
    }
    if (live && xg_book_synced(b->book)) {
        char *s = xg_venue_deribit_book_snapshot(b->book, NULL);

        if (s != NULL) {
            xg_client_send(dc->c, s, strlen(s));
            free(s);
            return;
        }
    }
    if (!dr_book_needs(b, dc)) {
        if (b->nneed == b->need_cap) {
            b->need_cap = b->need_cap ? b->need_cap * 2 : 4;
            b->need = xg_realloc(b->need, b->need_cap * sizeof(*b->need));
        }
        b->need[b->nneed++] = dc;
    }
}

/*
 * The session's snapshot(): CH's book as one `snapshot` notification as
 * of the change just applied (the publish's snapshot beside the stream),
 * or NULL when CH has no book or it is not in sync.
 */
char *
dr_book_snapshot(void *p, struct xg_reg_channel *ch, size_t *len)
{
    struct dr_book *b = dr_book_of(ch);
    char *s;

    if (b == NULL
        || (s = xg_venue_deribit_book_snapshot(b->book, NULL)) == NULL) {
        return NULL;
    }
    *len = strlen(s);
    return s;
}

/* DC left CH (or is gone): forget that it waits for a snapshot. */
void
dr_book_left(struct dr_client *dc, struct xg_reg_channel *ch)
{
    struct dr_book *b = dr_book_of(ch);
    size_t i;

    for (i = 0; b != NULL && i < b->nneed; i++) {
        if (b->need[i] == dc) {
            b->need[i] = b->need[--b->nneed];
            return;
        }
    }
}

/* DC leaves all its channels. */
void
dr_books_left(struct dr_client *dc)
{
    size_t i;

    for (i = 0; i < dc->rc->nchans; i++) {
        dr_book_left(dc, dc->rc->chans[i]);
    }
}

/* ---- trades: backfill by trade_seq after an outage ---- */

/*
 * For `trades.INSTRUMENT.INTERVAL` channels, trade_seq counts the
 * instrument's trades one by one. The gateway remembers the last one it
 * delivered; when the first trades after a restore skip some, it holds the
 * channel, fetches the missing ones with
 * public/get_last_trades_by_instrument (start_seq, end_seq), delivers them
 * as one notification, then what it held. Trades already delivered are
 * never sent twice. The seqs are found by a byte scan; only a message that
 * overlaps the last one delivered is re-encoded.
 */

/* The lowest and highest trade_seq in a message; returns how many. */
static size_t
dr_trades_scan(const char *data, size_t len, uint64_t *min, uint64_t *max)
{
    static const char key[] = "\"trade_seq\":";
    const char *p = data, *end = data + len;
    size_t n = 0;

    *min = UINT64_MAX;
    *max = 0;
    while ((p = memmem(p, (size_t) (end - p), key, sizeof(key) - 1))
           != NULL) {
        uint64_t v = 0;

        p += sizeof(key) - 1;
        while (p < end && *p == ' ') {
            p++;
        }
        if (p >= end || *p < '0' || *p > '9') {
            continue;
        }
        while (p < end && *p >= '0' && *p <= '9') {
            v = v * 10 + (uint64_t) (*p - '0');
            p++;
        }
        *min = v < *min ? v : *min;
        *max = v > *max ? v : *max;
        n++;
    }
    return n;
}

/* The trades of ARR (a JSON array) with trade_seq > after, to T's
   subscribers; frees ARR. Returns the highest trade_seq now delivered. */
static uint64_t
dr_trades_send_after(struct xg_track *t, json_t *arr, uint64_t after)
{
    json_t *keep = json_array();
    uint64_t max = after;           /* stays AFTER when nothing is kept */
    size_t i;

    for (i = 0; i < json_array_size(arr); i++) {
        json_t *tr = json_array_get(arr, i);
        json_t *sq = json_object_get(tr, "trade_seq");

        if (json_is_integer(sq) && (uint64_t) json_integer_value(sq) > after) {
            json_array_append(keep, tr);
            if ((uint64_t) json_integer_value(sq) > max) {
                max = (uint64_t) json_integer_value(sq);
            }
        }
    }
    json_decref(arr);
    if (json_array_size(keep) > 0) {
        dr_notify(t->env->ctx, t->chan, keep);
    }
    json_decref(keep);
    return max;
}

struct dr_trades {
    int        user;          /* user.trades.I.INTERVAL: the account's */
    uint64_t   since_wall_ms; /* user: first subscribed (wall clock) */
    char      *instrument;
    uint64_t   last_seq;      /* last delivered, 0: none yet */
};

/* What follows "trades." or "user.trades." (*USER: 1) in NAME, or NULL. */
static const char *
dr_trades_rest(const char *name, int *user)
{
    *user = strncmp(name, "user.", 5) == 0;
    name += *user ? 5 : 0;
    return strncmp(name, "trades.", 7) == 0 ? name + 7 : NULL;
}

/* trades.INSTRUMENT.INTERVAL or user.trades.INSTRUMENT.INTERVAL (not
   the KIND.CURRENCY forms). */
static void *
dr_trades_create(const char *name)
{
    const char *a, *b;
    struct dr_trades *tr;
    int user;

    if ((a = dr_trades_rest(name, &user)) == NULL
        || (b = strchr(a, '.')) == NULL || b == a
        || strchr(b + 1, '.') != NULL) {
        return NULL;
    }
    tr = xg_calloc(1, sizeof(*tr));
    tr->user = user;
    tr->since_wall_ms = xg_wall_us() / 1000;
    tr->instrument = xg_strndup(a, (size_t) (b - a));
    return tr;
}

static void
dr_trades_free(void *p)
{
    struct dr_trades *tr = p;

    free(tr->instrument);
    free(tr);
}

/*
 * A notification on a trades channel: trades already delivered are
 * dropped (a message that overlaps the last one delivered is re-encoded
 * with the rest); after an outage, trades that skip some show the gap.
 */
static enum xg_track_verdict
dr_trades_parse(struct xg_track *t, const char *data, size_t len,
    struct xg_track_seq *seq)
{
    struct dr_trades *tr = t->data;
    uint64_t min, max;

    if (dr_trades_scan(data, len, &min, &max) == 0) {
        return XG_TRACK_PASS;
    }
    seq->lined = 1;
    if (tr->last_seq == 0) {
        tr->last_seq = max;
        return XG_TRACK_PASS;
    }
    if (max <= tr->last_seq) {
        seq->lined = 0;
        return XG_TRACK_DROP;       /* all delivered already */
    }
    if (min <= tr->last_seq) {
        /* some delivered already: send the rest only */
        json_t *m = json_loadb(data, len, 0, NULL);
        json_t *arr = json_object_get(json_object_get(m, "params"), "data");

        if (json_is_array(arr)) {
            tr->last_seq = dr_trades_send_after(t, json_incref(arr),
                tr->last_seq);
        }
        json_decref(m);
        return XG_TRACK_DROP;
    }
    if (t->state == XG_TRACK_GAP && !tr->user && min > tr->last_seq + 1) {
        seq->lined = 0;
        seq->from = tr->last_seq + 1;
        seq->to = min - 1;
        return XG_TRACK_FETCH;
    }
    tr->last_seq = max;
    return XG_TRACK_PASS;
}

/*
 * The fetch of a trades channel. By trade_seq: FROM..TO of its instrument
 * (TO 0: up to the newest) with public/get_last_trades_by_instrument. A
 * user.trades channel's trade_seq numbers are the instrument's, so they
 * are not contiguous and cannot show a gap by themselves: when it is
 * confirmed after an outage, the account's trades since the last one
 * delivered (or since the channel was first subscribed) are fetched.
 */
static void
dr_trades_fetch(struct xg_track *t, const struct xg_track_seq *seq)
{
    struct dr_trades *tr = t->data;
    uint64_t from = seq != NULL ? seq->from : tr->last_seq + 1;
    uint64_t to = seq != NULL ? seq->to : 0;
    struct xg_reg_req *q;
    json_t *params;

    if (tr->user) {
        json_int_t now = (json_int_t) (xg_wall_us() / 1000);

        if (tr->last_seq != 0) {
            xg_track_log(XG_LOG_INFO, t, "%s: fetching the account's trades "
                "after trade_seq %llu", t->name,
                (unsigned long long) tr->last_seq);
            q = dr_internal(K_BACKFILL,
                "private/get_user_trades_by_instrument",
                json_pack("{s:s, s:I, s:i, s:s}", "instrument_name",
                    tr->instrument, "start_seq",
                    (json_int_t) tr->last_seq + 1, "count", 1000, "sorting",
                    "asc"));
        } else {
            xg_track_log(XG_LOG_INFO, t, "%s: fetching the account's trades "
                "since the channel was subscribed", t->name);
            q = dr_internal(K_BACKFILL,
                "private/get_user_trades_by_instrument_and_time",
                json_pack("{s:s, s:I, s:I, s:i, s:s}", "instrument_name",
                    tr->instrument, "start_timestamp",
                    (json_int_t) tr->since_wall_ms, "end_timestamp",
                    now + 60000, "count", 1000, "sorting", "asc"));
        }
        xg_track_send(t, q);
        return;
    }
    if (seq == NULL && (t->state != XG_TRACK_HELD || tr->last_seq == 0)) {
        /* confirmed: the next trades show whether some were missed */
        return;
    }
    /*
     * From the held state (a fetch died with its connection) its range is
     * still missing, and so is what traded while this connection was
     * down, after the held trades: everything after the last delivered,
     * up to now. The live stream is confirmed already, so what trades
     * later arrives live.
     */
    params = json_pack("{s:s, s:I, s:i, s:s}", "instrument_name",
        tr->instrument, "start_seq", (json_int_t) from, "count", 1000,
        "sorting", "asc");
    if (to != 0) {
        json_object_set_new(params, "end_seq", json_integer((json_int_t) to));
        xg_track_log(XG_LOG_INFO, t, "%s: trades %llu..%llu missed during the "
            "outage: backfilling", t->name,
            (unsigned long long) from, (unsigned long long) to);
    } else {
        xg_track_log(XG_LOG_INFO, t, "%s: trades from %llu on missed during "
            "the outage: backfilling", t->name, (unsigned long long) from);
    }
    xg_track_send(t, dr_internal(K_BACKFILL,
        "public/get_last_trades_by_instrument", params));
}

/* The answer to a backfill: the missed trades. */
static int
dr_trades_apply(struct xg_track *t, const struct xg_reg_req *q,
    const struct xg_jspan *result, const struct xg_jspan *error)
{
    struct dr_trades *tr = t->data;
    json_t *r = result->p ? json_loadb(result->p, result->len, 0, NULL)
                          : NULL;
    json_t *arr = json_object_get(r, "trades");
    int more = json_is_true(json_object_get(r, "has_more"));
    uint64_t before = tr->last_seq;

    if (!json_is_array(arr)) {
        json_decref(r);
        return XG_ERROR;
    }
    tr->last_seq = dr_trades_send_after(t, json_incref(arr), tr->last_seq);
    xg_track_log(XG_LOG_INFO, t, "%s: %llu trades backfilled%s",
        t->name, (unsigned long long) (tr->last_seq - before),
        more ? " (more were missed: over 1000)" : "");
    if (more) {
        xg_track_notice(t, "trades beyond the backfill");
    }
    json_decref(r);
    return XG_OK;
}

/*
 * A rotation's new connection on a trades channel: it takes over at the
 * trade after the last delivered (one at or below it means its next one
 * follows: the parse drops what was delivered); trades further on wait
 * for the old connection. An account's trade_seqs skip: never waited for.
 */
static enum xg_track_cross
dr_trades_cross(struct xg_track *t, const char *data, size_t len)
{
    struct dr_trades *tr = t->data;
    uint64_t min, max;

    if (data == NULL || tr->last_seq == 0
        || dr_trades_scan(data, len, &min, &max) == 0) {
        return XG_CROSS_SWITCH;
    }
    if (max <= tr->last_seq) {
        return XG_CROSS_DROP_SWITCH;
    }
    return tr->user || min <= tr->last_seq + 1 ? XG_CROSS_SWITCH
                                                : XG_CROSS_WAIT;
}

static const struct xg_track_kind dr_trades_kind = {
    "trades", "backfill", XG_TRACK_KEEP_HELD | XG_TRACK_CROSS_GAP,
    dr_trades_create, dr_trades_parse, dr_trades_fetch, dr_trades_apply,
    NULL, NULL, dr_trades_free, dr_trades_cross
};

/* ---- trades of a currency: backfill by time after an outage ---- */

/*
 * `trades.KIND.CURRENCY.INTERVAL` and `user.trades.KIND.CURRENCY.INTERVAL`
 * mix instruments, each with its own trade_seq, so no gap shows by the
 * numbers: the gateway remembers the last trade_seq delivered per
 * instrument and the newest timestamp. When the channel is back after an
 * outage (restore or stale resubscribe) it holds the live trades, fetches
 * public/get_last_trades_by_currency_and_time (or
 * private/get_user_trades_by_currency_and_time) from that timestamp on,
 * delivers those past each instrument's last trade_seq as one
 * notification, then what it held, never a trade twice. A fetch that dies
 * with its connection keeps its held trades for the next connection's
 * fetch, from the same timestamp: delivered at once, they would move
 * last_ts past the trades still missing.
 */

struct dr_ctrades {
    int        user;          /* user.trades.KIND.CURRENCY.INTERVAL */
    char      *tkind;         /* future, option, any... */
    char      *currency;
    uint64_t   since_wall_ms; /* first subscribed (wall clock) */
    json_int_t last_ts;       /* newest timestamp delivered, 0: none */
    json_t    *seqs;          /* instrument -> last trade_seq delivered */
};

static void *
dr_ctrades_create(const char *name)
{
    const char *a, *b, *e;
    struct dr_ctrades *c;
    int user;

    if ((a = dr_trades_rest(name, &user)) == NULL
        || (b = strchr(a, '.')) == NULL || b == a
        || (e = strchr(b + 1, '.')) == NULL
        || e == b + 1 || e[1] == '\0' || strchr(e + 1, '.') != NULL) {
        return NULL;
    }
    c = xg_calloc(1, sizeof(*c));
    c->user = user;
    c->tkind = xg_strndup(a, (size_t) (b - a));
    c->currency = xg_strndup(b + 1, (size_t) (e - b - 1));
    c->since_wall_ms = xg_wall_us() / 1000;
    c->seqs = json_object();
    return c;
}

static void
dr_ctrades_free(void *p)
{
    struct dr_ctrades *c = p;

    json_decref(c->seqs);
    free(c->tkind);
    free(c->currency);
    free(c);
}

/* 1 when trade TR was not delivered yet (and remembers it as delivered). */
static int
dr_ctrades_take(struct dr_ctrades *c, json_t *tr)
{
    const char *in = json_string_value(json_object_get(tr,
        "instrument_name"));
    json_t *sq = json_object_get(tr, "trade_seq"), *last;
    json_t *ts = json_object_get(tr, "timestamp");

    if (in == NULL || !json_is_integer(sq)) {
        return 1;                   /* not ours to judge: pass it on */
    }
    last = json_object_get(c->seqs, in);
    if (last != NULL && json_integer_value(sq) <= json_integer_value(last)) {
        return 0;
    }
    json_object_set_new(c->seqs, in, json_integer(json_integer_value(sq)));
    if (json_is_integer(ts) && json_integer_value(ts) > c->last_ts) {
        c->last_ts = json_integer_value(ts);
    }
    return 1;
}

/* The trades of ARR not delivered yet, taken, as a new array. */
static json_t *
dr_ctrades_new(struct dr_ctrades *c, json_t *arr)
{
    json_t *keep = json_array(), *v;
    size_t i;

    json_array_foreach(arr, i, v) {
        if (dr_ctrades_take(c, v)) {
            json_array_append(keep, v);
        }
    }
    return keep;
}

/* A notification on such a channel: the trades not delivered yet. */
static enum xg_track_verdict
dr_ctrades_parse(struct xg_track *t, const char *data, size_t len,
    struct xg_track_seq *seq)
{
    json_t *m = json_loadb(data, len, 0, NULL);
    json_t *dat = json_object_get(json_object_get(m, "params"), "data");
    json_t *keep;
    int whole;

    if (!json_is_array(dat)) {
        json_decref(m);
        return XG_TRACK_PASS;
    }
    keep = dr_ctrades_new(t->data, dat);
    whole = json_array_size(keep) == json_array_size(dat);
    if (!whole && json_array_size(keep) > 0) {
        dr_notify(t->env->ctx, t->chan, keep);
    }
    json_decref(keep);
    json_decref(m);
    return whole ? XG_TRACK_PASS : XG_TRACK_DROP;
}

/* Confirmed after an outage: the trades since the newest delivered. */
static void
dr_ctrades_fetch(struct xg_track *t, const struct xg_track_seq *seq)
{
    struct dr_ctrades *c = t->data;
    json_int_t from, now = (json_int_t) (xg_wall_us() / 1000);

    from = c->last_ts != 0 ? c->last_ts : (json_int_t) c->since_wall_ms;
    xg_track_log(XG_LOG_INFO, t, "%s: fetching the %s trades since %lld",
        t->name, c->user ? "account's" : "market's", (long long) from);
    xg_track_send(t, dr_internal(K_CTRADES, c->user
        ? "private/get_user_trades_by_currency_and_time"
        : "public/get_last_trades_by_currency_and_time",
        json_pack("{s:s, s:s, s:I, s:I, s:i, s:s}", "currency", c->currency,
            "kind", c->tkind, "start_timestamp", from, "end_timestamp",
            now + 60000, "count", 1000, "sorting", "asc")));
}

/* The answer to the backfill: the missed trades. */
static int
dr_ctrades_apply(struct xg_track *t, const struct xg_reg_req *q,
    const struct xg_jspan *result, const struct xg_jspan *error)
{
    struct dr *d = t->env->ctx;
    json_t *r = result->p ? json_loadb(result->p, result->len, 0, NULL)
                          : NULL;
    json_t *arr = json_object_get(r, "trades"), *keep;
    int more = json_is_true(json_object_get(r, "has_more"));

    if (!json_is_array(arr)) {
        json_decref(r);
        return XG_ERROR;
    }
    keep = dr_ctrades_new(t->data, arr);
    if (json_array_size(keep) > 0) {
        dr_notify(t->env->ctx, t->chan, keep);
    }
    d->currency_trades_backfilled += json_array_size(keep);
    xg_track_log(XG_LOG_INFO, t, "%s: %zu trades backfilled%s",
        t->name, json_array_size(keep),
        more ? " (more were missed: over 1000)" : "");
    if (more) {
        xg_track_notice(t, "trades beyond the backfill");
    }
    json_decref(keep);
    json_decref(r);
    return XG_OK;
}

/*
 * The same for a currency's trades, instrument by instrument: all
 * delivered already, it switches after; a trade further on than the one
 * after its instrument's last waits (not for an account's trades).
 */
static enum xg_track_cross
dr_ctrades_cross(struct xg_track *t, const char *data, size_t len)
{
    struct dr_ctrades *c = t->data;
    json_t *m, *dat, *v, *seen, *last;
    int fresh = 0, ahead = 0;
    const char *in;
    size_t i;

    if (data == NULL) {
        return XG_CROSS_SWITCH;
    }
    m = json_loadb(data, len, 0, NULL);
    dat = json_object_get(json_object_get(m, "params"), "data");
    seen = json_object();
    json_array_foreach(dat, i, v) {
        json_t *sq = json_object_get(v, "trade_seq");

        in = json_string_value(json_object_get(v, "instrument_name"));
        if (in == NULL || !json_is_integer(sq)) {
            fresh = 1;
            continue;
        }
        if ((last = json_object_get(seen, in)) == NULL) {
            last = json_object_get(c->seqs, in);
        }
        if (last != NULL && json_integer_value(sq)
                            <= json_integer_value(last)) {
            continue;               /* delivered */
        }
        fresh = 1;
        ahead |= !c->user && last != NULL
                 && json_integer_value(sq) > json_integer_value(last) + 1;
        json_object_set_new(seen, in, json_integer(json_integer_value(sq)));
    }
    json_decref(seen);
    json_decref(m);
    return !fresh ? XG_CROSS_DROP_SWITCH : ahead ? XG_CROSS_WAIT
                                                 : XG_CROSS_SWITCH;
}

static const struct xg_track_kind dr_ctrades_kind = {
    "trades", "backfill", XG_TRACK_KEEP_HELD | XG_TRACK_CROSS_GAP,
    dr_ctrades_create, dr_ctrades_parse, dr_ctrades_fetch, dr_ctrades_apply,
    NULL, NULL, dr_ctrades_free, dr_ctrades_cross
};

/* ---- user.orders: reconcile after an outage ---- */

/*
 * For `user.orders.INSTRUMENT.INTERVAL` channels the gateway remembers,
 * per order_id, the last state it delivered (order_state, filled_amount,
 * amount, price, last_update_timestamp), at most DR_ORDERS_MAX orders per
 * channel (the oldest closed one is forgotten first). When the channel is
 * back after an outage (restore or stale resubscribe) it holds the live
 * updates, fetches private/get_open_orders_by_instrument and
 * private/get_order_history_by_instrument, delivers one notification per
 * order whose state differs from the remembered one (or that is new since
 * the channel was subscribed), oldest update first, then what it held.
 * An update older than what was delivered (or the same) is dropped, so
 * each state reaches the client once and never goes backwards.
 */

#define DR_ORDERS_MAX        10000
#define DR_ORDERS_HISTORY    1000    /* orders fetched from the history */

struct dr_orders {
    int        array;         /* data is an array (100ms, agg2) */
    char      *instrument;    /* NULL: the KIND.CURRENCY form */
    char      *tkind;         /* KIND.CURRENCY: future, option, any... */
    char      *currency;
    uint64_t   since_wall_ms; /* first subscribed (wall clock) */
    json_int_t forgot_upd;    /* newest last_update of a forgotten order */
    json_t    *seen;          /* order_id -> [state, filled, amount, price,
                                 last_update_timestamp] */
    int        asked_states;  /* the reconcile's get_order_state round */
    json_int_t gap_wall_ms;   /* last data before the gap (wall clock) */
    json_t    *fetched;       /* the orders the reconcile's answers carried */
};

/* user.orders.INSTRUMENT.INTERVAL or user.orders.KIND.CURRENCY.INTERVAL. */
static void *
dr_orders_create(const char *name)
{
    const char *a, *b, *e = NULL, *iv;
    struct dr_orders *o;

    if (strncmp(name, "user.orders.", 12) != 0) {
        return NULL;
    }
    a = name + 12;
    b = strchr(a, '.');
    if (b == NULL || b == a || b[1] == '\0') {
        return NULL;
    }
    iv = b + 1;
    if ((e = strchr(b + 1, '.')) != NULL) {
        if (e == b + 1 || e[1] == '\0' || strchr(e + 1, '.') != NULL) {
            return NULL;
        }
        iv = e + 1;
    }
    o = xg_calloc(1, sizeof(*o));
    o->array = strcmp(iv, "raw") != 0;
    if (e == NULL) {
        o->instrument = xg_strndup(a, (size_t) (b - a));
    } else {
        o->tkind = xg_strndup(a, (size_t) (b - a));
        o->currency = xg_strndup(b + 1, (size_t) (e - b - 1));
    }
    o->since_wall_ms = xg_wall_us() / 1000;
    o->seen = json_object();
    return o;
}

static void
dr_orders_free(void *p)
{
    struct dr_orders *o = p;

    json_decref(o->seen);
    json_decref(o->fetched);
    free(o->instrument);
    free(o->tkind);
    free(o->currency);
    free(o);
}

/* What is remembered of one order: a small array, or NULL if malformed. */
static json_t *
dr_orders_key(json_t *ord)
{
    json_t *st = json_object_get(ord, "order_state");
    json_t *up = json_object_get(ord, "last_update_timestamp");
    json_t *pr = json_object_get(ord, "price");

    if (!json_is_string(st) || !json_is_integer(up)
        || !json_is_string(json_object_get(ord, "order_id"))) {
        return NULL;
    }
    return json_pack("[O, f, f, O, O]", st,
        json_number_value(json_object_get(ord, "filled_amount")),
        json_number_value(json_object_get(ord, "amount")),
        pr != NULL ? pr : json_null(), up);
}

static int
dr_orders_closed(json_t *key)
{
    const char *s = json_string_value(json_array_get(key, 0));

    return s != NULL && strcmp(s, "open") != 0 && strcmp(s, "untriggered")
           != 0;
}

/*
 * 1 when ORD (an order object) brings something the client has not seen:
 * its update is newer than the remembered one, or as new but further on
 * (more filled, or closed while the remembered one is open).
 */
static int
dr_orders_is_news(struct dr_orders *o, json_t *ord)
{
    json_t *k = dr_orders_key(ord), *old;
    json_int_t ku, ou;
    int news;

    if (k == NULL) {
        return 1;                   /* not ours to judge: pass it on */
    }
    old = json_object_get(o->seen, json_string_value(json_object_get(ord,
        "order_id")));
    if (old == NULL) {
        json_decref(k);
        return 1;
    }
    ku = json_integer_value(json_array_get(k, 4));
    ou = json_integer_value(json_array_get(old, 4));
    if (json_equal(k, old) || ku < ou) {
        news = 0;
    } else if (ku > ou) {
        news = 1;
    } else {
        double kf = json_real_value(json_array_get(k, 1));
        double of = json_real_value(json_array_get(old, 1));

        news = kf > of || (kf == of && dr_orders_closed(k)
                           && !dr_orders_closed(old))
               || (kf == of && dr_orders_closed(k) == dr_orders_closed(old));
    }
    json_decref(k);
    return news;
}

/* Forgets the oldest closed order (or the oldest, if none is closed). */
static void
dr_orders_forget_one(struct dr_orders *o)
{
    const char *id, *pick = NULL, *pick_closed = NULL;
    json_int_t best = 0, best_closed = 0;
    json_t *v;

    json_object_foreach(o->seen, id, v) {
        json_int_t u = json_integer_value(json_array_get(v, 4));

        if (dr_orders_closed(v) && (pick_closed == NULL || u < best_closed)) {
            pick_closed = id;
            best_closed = u;
        }
        if (pick == NULL || u < best) {
            pick = id;
            best = u;
        }
    }
    if (pick_closed != NULL) {
        pick = pick_closed;
        best = best_closed;
    }
    if (pick != NULL) {
        char *key = xg_strdup(pick);    /* pick lives in the entry */

        if (best > o->forgot_upd) {
            o->forgot_upd = best;
        }
        json_object_del(o->seen, key);
        free(key);
    }
}

/* ORD was delivered: remember its state. */
static void
dr_orders_remember(struct dr_orders *o, json_t *ord)
{
    json_t *k = dr_orders_key(ord);
    const char *id;

    if (k == NULL) {
        return;
    }
    id = json_string_value(json_object_get(ord, "order_id"));
    if (json_object_get(o->seen, id) == NULL
        && json_object_size(o->seen) >= DR_ORDERS_MAX) {
        dr_orders_forget_one(o);
    }
    json_object_set_new(o->seen, id, k);
}

/* One notification with ORD (borrowed) on CH, in the channel's shape. */
static void
dr_orders_send(struct dr *d, struct xg_reg_channel *ch, struct dr_orders *o,
    json_t *ord)
{
    if (o->array) {
        json_t *one = json_pack("[O]", ord);

        dr_notify(d, ch, one);
        json_decref(one);
    } else {
        dr_notify(d, ch, ord);
    }
}

/*
 * A notification on a user.orders channel: the order states the client
 * has not seen (an update older than what was delivered, or the same, is
 * dropped).
 */
static enum xg_track_verdict
dr_orders_parse(struct xg_track *t, const char *data, size_t len,
    struct xg_track_seq *seq)
{
    struct dr_orders *o = t->data;
    json_t *m, *dat, *keep, *v;
    size_t i, n = 0;
    int whole = 1;

    m = json_loadb(data, len, 0, NULL);
    dat = json_object_get(json_object_get(m, "params"), "data");
    if (json_is_object(dat)) {
        if (!dr_orders_is_news(o, dat)) {
            json_decref(m);
            return XG_TRACK_DROP;   /* delivered already (reconciled) */
        }
        dr_orders_remember(o, dat);
        json_decref(m);
        return XG_TRACK_PASS;
    }
    if (!json_is_array(dat)) {
        json_decref(m);
        return XG_TRACK_PASS;
    }
    keep = json_array();
    json_array_foreach(dat, i, v) {
        if (dr_orders_is_news(o, v)) {
            dr_orders_remember(o, v);
            json_array_append(keep, v);
            n++;
        } else {
            whole = 0;
        }
    }
    if (!whole && n > 0) {
        /* the exchange's envelope (a label, say) with what is news */
        json_object_set(json_object_get(m, "params"), "data", keep);
        dr_fanout_json(t->env->ctx, t->chan, m);
    }
    json_decref(keep);
    json_decref(m);
    return whole ? XG_TRACK_PASS : XG_TRACK_DROP;
}

/* CH is back after an outage (or resubscribed as stale): fetch the
   account's orders on its instrument (or currency). */
static void
dr_orders_fetch(struct xg_track *t, const struct xg_track_seq *seq)
{
    struct dr_orders *o = t->data;
    uint64_t now = xg_now_ms();
    struct xg_reg_req *q[2];
    int i;

    o->asked_states = 0;
    o->gap_wall_ms = (json_int_t) (xg_wall_us() / 1000)
        - (json_int_t) (now > t->gap_from_ms ? now - t->gap_from_ms : 0);
    json_decref(o->fetched);
    o->fetched = json_array();
    xg_track_log(XG_LOG_INFO, t, "%s: fetching the account's orders to "
        "reconcile %zu remembered", t->name,
        json_object_size(o->seen));
    if (o->instrument != NULL) {
        q[0] = dr_internal(K_ORDERS, "private/get_open_orders_by_instrument",
            json_pack("{s:s, s:s}", "instrument_name", o->instrument, "type",
                "all"));
        q[1] = dr_internal(K_ORDERS,
            "private/get_order_history_by_instrument",
            json_pack("{s:s, s:i, s:b, s:b}", "instrument_name",
                o->instrument, "count", DR_ORDERS_HISTORY, "include_old", 1,
                "include_unfilled", 1));
    } else {
        q[0] = dr_internal(K_ORDERS, "private/get_open_orders_by_currency",
            json_pack("{s:s, s:s, s:s}", "currency", o->currency, "kind",
                o->tkind, "type", "all"));
        q[1] = dr_internal(K_ORDERS, "private/get_order_history_by_currency",
            json_pack("{s:s, s:s, s:i, s:b, s:b}", "currency", o->currency,
                "kind", o->tkind, "count", DR_ORDERS_HISTORY, "include_old",
                1, "include_unfilled", 1));
    }
    for (i = 0; i < 2; i++) {
        xg_track_send(t, q[i]);
    }
}

/* An answer to one of the reconcile's fetches: its orders kept. */
static int
dr_orders_apply(struct xg_track *t, const struct xg_reg_req *q,
    const struct xg_jspan *result, const struct xg_jspan *error)
{
    struct dr_orders *o = t->data;
    json_t *r, *v;
    size_t i;
    int rc = XG_OK;

    r = result->p ? json_loadb(result->p, result->len, 0, NULL) : NULL;
    if (strcmp(q->method, "private/get_order_state") == 0) {
        /* an order the exchange no longer knows: nothing to tell */
        if (json_is_object(r)) {
            json_array_append(o->fetched, r);
        }
    } else if (json_is_array(r)) {
        json_int_t oldest = INT64_MAX;

        json_array_foreach(r, i, v) {
            json_t *up = json_object_get(v, "last_update_timestamp");

            if (!json_is_object(v)) {
                continue;
            }
            json_array_append(o->fetched, v);
            if (json_is_integer(up) && json_integer_value(up) < oldest) {
                oldest = json_integer_value(up);
            }
        }
        /* a full page that does not reach back to the gap: some orders
           closed during the gap may be older than the page */
        if (strncmp(q->method, "private/get_order_history_by_", 29) == 0
            && json_array_size(r) >= DR_ORDERS_HISTORY
            && oldest >= o->gap_wall_ms) {
            xg_track_log(XG_LOG_WARN, t, "%s: over %d orders closed since: the "
                "older ones are not reconciled", t->name,
                DR_ORDERS_HISTORY);
            xg_track_notice(t, "orders beyond the reconcile");
        }
    } else {
        rc = XG_ERROR;
    }
    json_decref(r);
    return rc;
}

#define DR_ORDERS_MAX_ASKED  100

/*
 * Orders the client last saw open that neither list carries (closed
 * beyond the history's 1000): private/get_order_state for each, at most
 * DR_ORDERS_MAX_ASKED. Returns how many were asked.
 */
static int
dr_orders_ask_missing(struct xg_track *t, struct dr_orders *o)
{
    json_t *ids = json_object(), *v;
    const char *id;
    size_t i;
    int n = 0, more = 0;

    o->asked_states = 1;
    json_array_foreach(o->fetched, i, v) {
        const char *fid = json_string_value(json_object_get(v, "order_id"));

        if (fid != NULL) {
            json_object_set_new(ids, fid, json_true());
        }
    }
    json_object_foreach(o->seen, id, v) {
        if (dr_orders_closed(v) || json_object_get(ids, id) != NULL) {
            continue;
        }
        if (n == DR_ORDERS_MAX_ASKED) {
            more = 1;
            break;
        }
        xg_track_send(t, dr_internal(K_ORDERS, "private/get_order_state",
            json_pack("{s:s}", "order_id", id)));
        n++;
    }
    json_decref(ids);
    if (n > 0) {
        xg_track_log(XG_LOG_INFO, t, "%s: %d open orders in neither list: "
            "asking their state", t->name, n);
    }
    if (more) {
        xg_track_notice(t, "orders beyond the reconcile");
    }
    return n;
}

static int
dr_orders_cmp_upd(const void *a, const void *b)
{
    json_int_t x = json_integer_value(json_object_get(*(json_t *const *) a,
        "last_update_timestamp"));
    json_int_t y = json_integer_value(json_object_get(*(json_t *const *) b,
        "last_update_timestamp"));

    return x < y ? -1 : x > y;
}

/*
 * Every answer is in: first the state of the orders neither list carried;
 * then deliver what the client has not seen, oldest update first (the
 * held live updates follow).
 */
static void
dr_orders_complete(struct xg_track *t)
{
    struct dr *d = t->env->ctx;
    struct dr_orders *o = t->data;
    json_t **list, *v;
    size_t i, n = json_array_size(o->fetched), nsend = 0, sent = 0;
    json_int_t floor = (json_int_t) o->since_wall_ms > o->forgot_upd
                       ? (json_int_t) o->since_wall_ms : o->forgot_upd + 1;

    if (!o->asked_states && dr_orders_ask_missing(t, o) > 0) {
        return;
    }
    list = xg_calloc(n ? n : 1, sizeof(*list));
    json_array_foreach(o->fetched, i, v) {
        const char *id = json_string_value(json_object_get(v, "order_id"));
        json_t *up = json_object_get(v, "last_update_timestamp");

        if (id == NULL || !json_is_integer(up)) {
            continue;
        }
        if (json_object_get(o->seen, id) == NULL
            && json_integer_value(up) < floor) {
            continue;               /* before the client's time */
        }
        if (dr_orders_is_news(o, v)) {
            list[nsend++] = v;
        }
    }
    qsort(list, nsend, sizeof(*list), dr_orders_cmp_upd);
    for (i = 0; i < nsend; i++) {
        /* the two lists may both carry an order closed meanwhile */
        if (dr_orders_is_news(o, list[i])) {
            dr_orders_remember(o, list[i]);
            dr_orders_send(t->env->ctx, t->chan, o, list[i]);
            sent++;
        }
    }
    free(list);
    json_decref(o->fetched);
    o->fetched = NULL;
    d->orders_reconciled += sent;
    d->orders_reconciles++;
    xg_track_log(XG_LOG_INFO, t, "%s: reconciled %zu orders after the outage",
        t->name, sent);
}

/* Its fetch dying with the connection delivers what it held. A rotation
   switches it at the new connection's first message (its parse drops a
   state delivered already): nothing is lost, the new connection was
   subscribed before. */
static const struct xg_track_kind dr_orders_kind = {
    "orders", "reconcile", 0, dr_orders_create, dr_orders_parse,
    dr_orders_fetch, dr_orders_apply, dr_orders_complete, NULL,
    dr_orders_free, NULL
};

/* The channels followed by a tracker, by kind. */
static const struct xg_track_kind *const dr_track_kinds[] = {
    &dr_book_kind, &dr_trades_kind, &dr_ctrades_kind, &dr_orders_kind
};

/* CH's tracker, made now if its name is one a tracker kind follows (the
   name alone says: a name none follows is not tried again, a message). */
struct xg_track *
dr_track_get(struct dr *d, struct xg_reg_channel *ch)
{
    size_t i;

    if (ch->ext != NULL || ch->no_ext) {
        return ch->ext;
    }
    for (i = 0; ch->ext == NULL && i < XG_NELEM(dr_track_kinds); i++) {
        ch->ext = xg_track_new(dr_track_kinds[i], &d->track, ch->name, ch);
    }
    ch->no_ext = ch->ext == NULL;
    return ch->ext;
}

/* The registry's channel free callback: CH's tracker goes with it. */
void
dr_track_free(void *ext)
{
    xg_track_free(ext);
}

static void
dr_track_down_cb(struct xg_reg_channel *ch, void *arg)
{
    if (ch->ext != NULL) {
        xg_track_down(ch->ext, ch->last_data_ms);
    }
}

/* The upstream dropped: every tracked channel has a gap. */
void
dr_tracks_down(struct dr *d)
{
    xg_registry_channel_foreach(d->reg, dr_track_down_cb, d);
}

/* CH was confirmed by the exchange: tracked from now on (so that an
   outage before its first message is still seen); a gap is fetched. */
void
dr_track_confirmed(struct dr *d, struct xg_reg_channel *ch)
{
    struct xg_track *t = dr_track_get(d, ch);

    if (t != NULL) {
        xg_track_resume(t, "confirmed");
    }
}

/* ---- a rotation's switch (xg_session.h), decided by the trackers ---- */

/* The session's cross(): where B's DATA stands on CH. */
enum xg_track_cross
dr_cross(void *p, struct xg_reg_channel *ch, const char *data, size_t len)
{
    return ch->ext != NULL ? xg_track_cross(ch->ext, data, len)
                           : XG_CROSS_SWITCH;
}

/* The session's cross_force(): CH switches with nothing in line. */
void
dr_cross_force(void *p, struct xg_reg_channel *ch, int lost)
{
    if (ch->ext != NULL) {
        xg_track_cross_force(ch->ext, ch->last_data_ms, lost);
    }
}

/* After B's held data went through: a book not in sync whose snapshot of
   B's was dropped (the old connection was lost after it) gets a new
   snapshot to bridge; else B's snapshot is still to come. */
void
dr_cross_done(void *p, struct xg_reg_channel *ch, int dropped)
{
    struct dr *d = p;
    struct dr_book *b = dr_book_of(ch);

    if (b != NULL && dropped && ch->state == XG_CHAN_CONFIRMED
        && !xg_book_synced(b->book)) {
        xg_upstream_log(XG_LOG_INFO, d->up, "%s: no snapshot of the new "
            "connection to bridge: resubscribing", ch->name);
        xg_track_gap(ch->ext, ch->last_data_ms, "rotation");
        xg_session_resubscribe(d->s, ch);
    }
}

/* ---- continuity fetches refused for now: retried ---- */

/*
 * A fetch that fills a gap (trades backfill, a currency's trades, the
 * orders reconcile) may meet the exchange at a bad moment: a maintenance
 * window, a rate limit, an overloaded matching engine. Giving it up then
 * leaves a hole that a minute later would have been filled, so those
 * answers (and a fetch with no answer within request_timeout) send the
 * same request again after a backoff, under the same tag, while the live
 * messages stay held (within the held bound, which still gives up). A
 * permanent error, or DR_FETCH_TRIES retries, gives up as before.
 */

/* 1 when ERROR (a JSON-RPC error object) says "not now" rather than "no":
   11051 system_maintenance, 10028 too_many_requests, 10040 retry,
   13028 temporarily_unavailable, 13888 timed_out. */
int
dr_error_transient(const struct xg_jspan *error)
{
    static const char *const keys[] = { "code" };
    static const char *const transient[] = { "11051", "10028", "10040",
        "13028", "13888", NULL };
    struct xg_jspan v[1];
    int i;

    if (xg_jscan_object(error->p, error->len, keys, 1, v) != XG_OK
        || v[0].p == NULL) {
        return 0;
    }
    for (i = 0; transient[i] != NULL; i++) {
        if (v[0].len == strlen(transient[i])
            && memcmp(v[0].p, transient[i], v[0].len) == 0) {
            return 1;
        }
    }
    return 0;
}

/* The tracker of fetch Q's channel, or NULL (the channel is gone). */
static struct xg_track *
dr_fetch_track(struct dr *d, const struct xg_reg_req *q)
{
    struct xg_reg_channel *ch = q->nchan == 1
                                ? xg_registry_channel(d->reg, q->chan[0])
                                : NULL;

    return ch != NULL ? ch->ext : NULL;
}

/*
 * Q, a fetch, was refused for now (WHY, LEN bytes: the error) or timed
 * out: its tracker keeps it to send again after a backoff (returns 1);
 * returns 0 (Q still the caller's) when it is no longer wanted or has had
 * its retries.
 */
int
dr_fetch_retry(struct dr *d, struct xg_reg_req *q, const char *why, int len)
{
    struct xg_track *t = dr_fetch_track(d, q);

    return t != NULL && xg_track_retry(t, q, why, len);
}

/* The answer (or the give-up) of a fetch, to its channel's tracker. */
void
dr_fetch_answer(struct dr *d, struct xg_reg_req *q,
    const struct xg_jspan *result, const struct xg_jspan *error)
{
    struct xg_track *t = dr_fetch_track(d, q);

    if (t != NULL) {
        xg_track_answer(t, q, result, error);
    }
}
