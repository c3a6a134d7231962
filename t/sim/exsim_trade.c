/*
 * exsim_trade.c: orders of the simulated accounts, a deterministic
 * matching rule, user.* notifications and cancel-on-disconnect
 * (exchange-protocols.md A5). Every order, position and user trade belongs
 * to one account: a connection sees, changes and is notified of its
 * account's only, and another account's order id is unknown to it (11044,
 * as for an order that does not exist).
 *
 * Matching rule:
 *  1. A new buy (sell) takes the public asks (bids) priced at or better
 *     than its limit, best level first, at each level's price; a market
 *     order takes any level. The book change and the public trades are
 *     published like any other market event (one change_id).
 *  2. What is left of a good_til_cancelled / good_til_day limit order
 *     rests; immediate_or_cancel and market remainders are cancelled;
 *     fill_or_kill fills nothing and is cancelled unless the whole amount
 *     is available at once.
 *  3. post_only: with reject_post_only an order that would take is refused
 *     (11054 post_only_reject); without it the price moves one tick
 *     behind the opposite best, as Deribit does.
 *  4. Resting orders are not shown in the public book. After each market
 *     update, a resting buy whose limit is at or above the best ask (a
 *     sell at or below the best bid) is filled completely at its own
 *     limit price as maker.
 */
#include "exsim.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_CLOSED_ORDERS 10000

static uint64_t
now_ms(void)
{
    return xg_wall_us() / 1000;
}

static int
order_open(const struct exsim_order *o)
{
    return strcmp(o->state, "open") == 0;
}

static json_t *
order_json(const struct exsim_order *o)
{
    const struct exsim_instr *in = o->instr;
    json_t *j = json_pack("{s:s, s:s, s:s, s:s, s:f, s:f, s:f, s:s, s:s,"
        " s:I, s:I, s:s, s:b, s:b, s:b, s:b, s:b, s:b, s:f, s:f, s:b, s:b}",
        "order_id", o->order_id,
        "order_state", o->state,
        "order_type", o->market ? "market" : "limit",
        "direction", o->dir > 0 ? "buy" : "sell",
        "amount", exsim_amount(in, o->lots),
        "filled_amount", exsim_amount(in, o->filled),
        "average_price", o->avg_price,
        "label", o->label,
        "instrument_name", in->name,
        "creation_timestamp", (json_int_t) o->created_ms,
        "last_update_timestamp", (json_int_t) o->updated_ms,
        "time_in_force", o->tif,
        "post_only", o->post_only,
        "reduce_only", o->reduce_only,
        "api", 1,
        "web", 0,
        "is_liquidation", 0,
        "replaced", 0,
        "max_show", exsim_amount(in, o->lots),
        "commission", 0.0,
        "mmp", 0,
        "risk_reducing", 0);

    if (o->market) {
        json_object_set_new(j, "price", json_string("market_price"));
    } else {
        json_object_set_new(j, "price", json_real(exsim_price(in, o->price)));
    }
    json_object_set_new(j, "contracts", json_real(exsim_amount(in, o->lots)
        / in->contract_size));
    if (o->cancel_reason[0] != '\0') {
        json_object_set_new(j, "cancel_reason",
            json_string(o->cancel_reason));
    }
    return j;
}

static json_t *
user_trade_json(const struct exsim_order *o, const struct exsim_trade_rec *t,
    int maker)
{
    const struct exsim_instr *in = o->instr;
    json_t *j = exsim_trade_public_json(in, t);
    double fee = exsim_amount(in, t->lots) * (maker ? 0 : 0.0005)
        / exsim_price(in, t->price);

    json_object_set_new(j, "direction", json_string(o->dir > 0 ? "buy"
        : "sell"));
    json_object_set_new(j, "order_id", json_string(o->order_id));
    json_object_set_new(j, "order_type", json_string(o->market ? "market"
        : "limit"));
    json_object_set_new(j, "state", json_string(o->state));
    json_object_set_new(j, "fee", json_real(fee));
    json_object_set_new(j, "fee_currency", json_string(in->currency));
    json_object_set_new(j, "liquidity", json_string(maker ? "M" : "T"));
    json_object_set_new(j, "label", json_string(o->label));
    json_object_set_new(j, "post_only", json_boolean(o->post_only));
    json_object_set_new(j, "reduce_only", json_boolean(o->reduce_only));
    json_object_set_new(j, "matching_id", json_null());
    json_object_set_new(j, "api", json_true());
    json_object_set_new(j, "profit_loss", json_real(0));
    return j;
}

/* A's position in IN, or NULL when it never traded it. */
static struct exsim_pos *
pos_find(struct exsim_account *a, const struct exsim_instr *in)
{
    struct exsim_pos *p;

    for (p = a->pos; p != NULL; p = p->next) {
        if (p->instr == in) {
            return p;
        }
    }
    return NULL;
}

static json_t *
position_json(struct exsim_account *a, const struct exsim_instr *in)
{
    struct exsim_pos *p = pos_find(a, in);
    double size = exsim_amount(in, p ? (int64_t) p->lots : 0);

    return json_pack("{s:s, s:f, s:s, s:f, s:s, s:f, s:f, s:f, s:f, s:f,"
        " s:f, s:f, s:f, s:i}",
        "instrument_name", in->name,
        "size", size,
        "direction", size > 0 ? "buy" : size < 0 ? "sell" : "zero",
        "average_price", p ? p->avg : 0.0,
        "kind", in->kind,
        "mark_price", exsim_price(in, in->last_price),
        "index_price", in->index_price,
        "floating_profit_loss", 0.0,
        "realized_profit_loss", 0.0,
        "total_profit_loss", 0.0,
        "initial_margin", 0.0,
        "maintenance_margin", 0.0,
        "delta", size / (in->index_price > 0 ? in->index_price : 1),
        "leverage", 50);
}

static json_t *
portfolio_json(const char *cur)
{
    return json_pack("{s:s, s:f, s:f, s:f, s:f, s:f, s:f, s:f, s:f, s:f,"
        " s:f, s:f}",
        "currency", cur,
        "equity", 10.0, "balance", 10.0, "available_funds", 10.0,
        "available_withdrawal_funds", 10.0, "margin_balance", 10.0,
        "initial_margin", 0.0, "maintenance_margin", 0.0,
        "total_pl", 0.0, "session_upl", 0.0, "session_rpl", 0.0,
        "delta_total", 0.0);
}

static int
user_match(const struct exsim_chan *ch, const struct exsim_instr *in)
{
    if (ch->instr != NULL) {
        return ch->instr == in;
    }
    return (strcmp(ch->fkind, "any") == 0 || strcmp(ch->fkind, in->kind) == 0)
        && (strcmp(ch->fcur, "any") == 0
            || strcmp(ch->fcur, in->currency) == 0);
}

static json_t *bad(json_t **err, const char *reason, const char *param);

/* An account's trades, oldest first, for the user-trades methods. */
#define EXSIM_USER_TRADES_MAX 10000

static void
user_trades_record(struct exsim_account *a, json_t *trades)
{
    json_t *v;
    size_t i;

    json_array_foreach(trades, i, v) {
        json_array_append_new(a->user_trades, json_deep_copy(v));
    }
    while (json_array_size(a->user_trades) > EXSIM_USER_TRADES_MAX) {
        json_array_remove(a->user_trades, 0);
    }
}

/*
 * private/get_user_trades_by_instrument (start_seq, end_seq) and
 * ..._and_time (start_timestamp, end_timestamp): the account's trades on
 * one instrument, count (default 10, max 1000), sorting asc|desc|default
 * (default: asc); {"trades":[...],"has_more":bool}.
 */
static json_t *
user_trades_query(struct exsim_account *a, json_t *params, int by_time,
    json_t **err)
{
    const char *name = json_string_value(json_object_get(params,
        "instrument_name"));
    const char *ks = by_time ? "start_timestamp" : "start_seq";
    const char *ke = by_time ? "end_timestamp" : "end_seq";
    const char *kf = by_time ? "timestamp" : "trade_seq";
    json_t *js = json_object_get(params, ks), *je = json_object_get(params, ke);
    json_t *jc = json_object_get(params, "count");
    const char *sort = json_string_value(json_object_get(params, "sorting"));
    json_int_t lo = 0, hi = INT64_MAX, count = 10;
    json_t *out = json_array();
    size_t i, n;
    int desc = sort != NULL && strcmp(sort, "desc") == 0, more = 0;

    if (name == NULL || exsim_instr_find(name) == NULL) {
        json_decref(out);
        return bad(err, "instrument not found", "instrument_name");
    }
    if ((js && !json_is_integer(js)) || (je && !json_is_integer(je))
        || (jc && (!json_is_integer(jc) || json_integer_value(jc) < 1
                   || json_integer_value(jc) > 1000))) {
        json_decref(out);
        return bad(err, "must be an integer (count 1..1000)",
            js && !json_is_integer(js) ? ks : je && !json_is_integer(je)
            ? ke : "count");
    }
    if (js) {
        lo = json_integer_value(js);
    }
    if (je) {
        hi = json_integer_value(je);
    }
    if (jc) {
        count = json_integer_value(jc);
    }
    n = json_array_size(a->user_trades);
    for (i = 0; i < n; i++) {
        json_t *t = json_array_get(a->user_trades, desc ? n - 1 - i : i);
        json_int_t k = json_integer_value(json_object_get(t, kf));

        if (strcmp(json_string_value(json_object_get(t, "instrument_name")),
                name) != 0 || k < lo || k > hi) {
            continue;
        }
        if ((json_int_t) json_array_size(out) == count) {
            more = 1;
            break;
        }
        json_array_append(out, t);
    }
    return json_pack("{s:o, s:b}", "trades", out, "has_more", more);
}

/*
 * private/get_user_trades_by_currency_and_time: the account's trades on
 * every instrument of currency (and kind, default any) between
 * start_timestamp and end_timestamp, count (default 10, max 1000),
 * sorting asc|desc|default (default: desc); {"trades":[...],"has_more"}.
 */
static json_t *
user_trades_by_currency(struct exsim_account *a, json_t *params, json_t **err)
{
    const char *cur = json_string_value(json_object_get(params, "currency"));
    const char *kind = json_string_value(json_object_get(params, "kind"));
    const char *sort = json_string_value(json_object_get(params, "sorting"));
    json_t *js = json_object_get(params, "start_timestamp");
    json_t *je = json_object_get(params, "end_timestamp");
    json_t *jc = json_object_get(params, "count");
    json_t *all, *out, *t;
    size_t i, count = 10;
    int more = 0;

    if (cur == NULL) {
        return bad(err, "required", "currency");
    }
    if (!json_is_integer(js) || !json_is_integer(je)) {
        return bad(err, "must be an integer", json_is_integer(js)
            ? "end_timestamp" : "start_timestamp");
    }
    if (jc != NULL && (!json_is_integer(jc) || json_integer_value(jc) < 1
                       || json_integer_value(jc) > 1000)) {
        return bad(err, "must be between 1 and 1000", "count");
    }
    if (jc != NULL) {
        count = (size_t) json_integer_value(jc);
    }
    all = json_array();
    json_array_foreach(a->user_trades, i, t) {
        const struct exsim_instr *in = exsim_instr_find(json_string_value(
            json_object_get(t, "instrument_name")) ?: "");
        json_int_t ts = json_integer_value(json_object_get(t, "timestamp"));

        if (in == NULL || ts < json_integer_value(js)
            || ts > json_integer_value(je)
            || (strcmp(cur, "any") != 0 && strcmp(cur, in->currency) != 0)
            || (kind != NULL && strcmp(kind, "any") != 0
                && strcmp(kind, in->kind) != 0)) {
            continue;
        }
        json_array_append(all, t);
    }
    out = exsim_trades_sorted(all, !(sort && strcmp(sort, "asc") == 0),
        count, &more);
    json_decref(all);
    return json_pack("{s:o, s:b}", "trades", out, "has_more", more);
}

/*
 * Publishes an order update and its trades (TRADES borrowed, may be NULL)
 * to the subscribers of the order's account.
 */
static void
user_publish(const struct exsim_order *o, json_t *trades)
{
    struct exsim_chan *ch;
    const struct exsim_instr *in = o->instr;
    struct exsim_account *a = o->acct;

    if (trades != NULL) {
        user_trades_record(a, trades);
    }

    for (ch = ex->chans; ch != NULL; ch = ch->lnext) {
        if (!ch->priv || ch->nsubs == 0) {
            continue;
        }
        if (ch->kind == EXSIM_CH_USER_PORTFOLIO) {
            if (trades != NULL && (strcmp(ch->fcur, "any") == 0
                || strcmp(ch->fcur, in->currency) == 0))
            {
                exsim_publish_account(ch, a, portfolio_json(in->currency));
            }
            continue;
        }
        if (!user_match(ch, in)) {
            continue;
        }
        if (ch->kind == EXSIM_CH_USER_ORDERS) {
            /* [UNVERIFIED] C.8: raw carries one object, others an array */
            if (ch->interval == 0) {
                exsim_publish_account(ch, a, order_json(o));
            } else {
                exsim_publish_account(ch, a, json_pack("[o]", order_json(o)));
            }
        } else if (ch->kind == EXSIM_CH_USER_TRADES) {
            if (trades != NULL && json_array_size(trades) > 0) {
                exsim_publish_account(ch, a, json_deep_copy(trades));
            }
        } else if (ch->kind == EXSIM_CH_USER_CHANGES) {
            exsim_publish_account(ch, a, json_pack("{s:s, s:[o], s:o, s:[o]}",
                "instrument_name", in->name,
                "orders", order_json(o),
                "trades", trades ? json_deep_copy(trades) : json_array(),
                "positions", position_json(a, in)));
        }
    }
}

static void
position_add(struct exsim_account *a, const struct exsim_instr *in, int dir,
    int64_t lots, double price)
{
    struct exsim_pos *p = pos_find(a, in);
    double before, after;

    if (p == NULL) {
        p = xg_calloc(1, sizeof(*p));
        p->instr = in;
        p->next = a->pos;
        a->pos = p;
    }
    before = p->lots;
    after = before + dir * (double) lots;
    if (after == 0) {
        p->avg = 0;
    } else if ((before >= 0 && dir > 0) || (before <= 0 && dir < 0)) {
        p->avg = (p->avg * fabs(before) + price * (double) lots)
            / fabs(after);
    } else if ((before > 0 && after < 0) || (before < 0 && after > 0)) {
        p->avg = price;
    }
    p->lots = after;
}

static void
order_fill(struct exsim_order *o, int64_t lots, int64_t price)
{
    double px = exsim_price(o->instr, price);

    o->avg_price = (o->avg_price * (double) o->filled + px * (double) lots)
        / (double) (o->filled + lots);
    o->filled += lots;
    o->updated_ms = now_ms();
    if (o->filled >= o->lots) {
        snprintf(o->state, sizeof(o->state), "filled");
    }
    position_add(o->acct, o->instr, o->dir, lots, px);
}

/* Fills O against the public book as far as its limit allows (rule 1). */
static json_t *
take_liquidity(struct exsim_order *o)
{
    struct exsim_instr *in = o->instr;
    json_t *bids = json_array(), *asks = json_array();
    json_t *pub = json_array(), *mine = json_array();
    int side = o->dir > 0 ? 1 : 0;
    struct exsim_level *lv = side ? in->book.asks : in->book.bids;
    int *n = side ? &in->book.nasks : &in->book.nbids;

    while (o->filled < o->lots && *n > 0) {
        int64_t p = lv[0].price, take;
        struct exsim_trade_rec t;

        if (!o->market && (side ? p > o->price : p < o->price)) {
            break;
        }
        take = o->lots - o->filled;
        if (take > lv[0].lots) {
            take = lv[0].lots;
        }
        exsim_trade_record(in, o->dir, p, take, &t);
        exsim_book_apply(in, bids, asks, side, p, lv[0].lots - take);
        order_fill(o, take, p);
        json_array_append_new(pub, exsim_trade_public_json(in, &t));
        json_array_append_new(mine, user_trade_json(o, &t, 0));
    }
    if (json_array_size(bids) + json_array_size(asks) > 0) {
        exsim_book_publish_change(in, bids, asks);
    }
    if (json_array_size(pub) > 0) {
        exsim_trades_publish(in, pub);
    }
    json_decref(bids);
    json_decref(asks);
    json_decref(pub);
    return mine;
}

static int64_t
available(const struct exsim_order *o)
{
    const struct exsim_instr *in = o->instr;
    int side = o->dir > 0;
    const struct exsim_level *lv = side ? in->book.asks : in->book.bids;
    int n = side ? in->book.nasks : in->book.nbids, i;
    int64_t sum = 0;

    for (i = 0; i < n; i++) {
        if (!o->market && (side ? lv[i].price > o->price
            : lv[i].price < o->price))
        {
            break;
        }
        sum += lv[i].lots;
    }
    return sum;
}

/*
 * Moves O to the closed list once it is no longer open, so the matching
 * loops only walk open orders; the oldest closed ones are forgotten past
 * MAX_CLOSED_ORDERS. O must not be on the closed list yet.
 */
static void
order_settle(struct exsim_order *o)
{
    struct exsim_order **pp, *x;
    size_t n = 0;

    if (order_open(o)) {
        return;
    }
    for (pp = &ex->orders; *pp != NULL; pp = &(*pp)->next) {
        if (*pp == o) {
            *pp = o->next;
            break;
        }
    }
    o->next = ex->closed;
    ex->closed = o;
    if (++ex->nclosed <= MAX_CLOSED_ORDERS) {
        return;
    }
    for (pp = &ex->closed; *pp != NULL && n < MAX_CLOSED_ORDERS / 2; n++) {
        pp = &(*pp)->next;
    }
    while ((x = *pp) != NULL) {
        *pp = x->next;
        free(x);
        ex->nclosed--;
    }
}

/* Account A's order ID; another account's is not found. */
static struct exsim_order *
order_find(struct exsim_account *a, const char *id)
{
    struct exsim_order *o;

    for (o = ex->orders; id != NULL && o != NULL; o = o->next) {
        if (o->acct == a && strcmp(o->order_id, id) == 0) {
            return o;
        }
    }
    for (o = ex->closed; id != NULL && o != NULL; o = o->next) {
        if (o->acct == a && strcmp(o->order_id, id) == 0) {
            return o;
        }
    }
    return NULL;
}

static json_t *
bad(json_t **err, const char *reason, const char *param)
{
    *err = exsim_error_obj(EXSIM_E_PARAMS, NULL, reason, param);
    return NULL;
}

/* Checks amount and price of an order on IN; ticks and lots out. */
static int
order_numbers(struct exsim_instr *in, json_t *jamount, json_t *jprice,
    int need_price, int64_t *lots, int64_t *price, json_t **err)
{
    double a, p, l, t;

    if (!json_is_number(jamount) || (a = json_number_value(jamount)) <= 0) {
        bad(err, "must be a positive number", "amount");
        return -1;
    }
    l = a / in->min_amount;
    if (fabs(l - llround(l)) > 1e-9 * fmax(1, l) || l > 1e12) {
        bad(err, "must be a multiple of contract size", "amount");
        return -1;
    }
    *lots = llround(l);
    if (!need_price) {
        return 0;
    }
    if (!json_is_number(jprice) || (p = json_number_value(jprice)) <= 0) {
        bad(err, "must be a positive number", "price");
        return -1;
    }
    t = p / in->tick;
    if (fabs(t - llround(t)) > 1e-6 || t > 1e15) {
        bad(err, "must be a multiple of tick size", "price");
        return -1;
    }
    *price = llround(t);
    return 0;
}

static json_t *
place(struct exsim_conn *c, int dir, json_t *params, json_t **err)
{
    const char *type = json_string_value(json_object_get(params, "type"));
    const char *label = json_string_value(json_object_get(params, "label"));
    const char *tif = json_string_value(json_object_get(params,
        "time_in_force"));
    struct exsim_instr *in = exsim_instr_find(json_string_value(
        json_object_get(params, "instrument_name")) ?: "");
    struct exsim_order o, *op;
    json_t *trades, *res;

    memset(&o, 0, sizeof(o));
    if (in == NULL) {
        return bad(err, "instrument not found", "instrument_name");
    }
    if (type != NULL && strcmp(type, "limit") != 0
        && strcmp(type, "market") != 0)
    {
        return bad(err, "only limit and market are simulated", "type");
    }
    o.market = type != NULL && strcmp(type, "market") == 0;
    if (label != NULL && strlen(label) > 64) {
        return bad(err, "must be at most 64 characters", "label");
    }
    if (tif != NULL && strcmp(tif, "good_til_cancelled") != 0
        && strcmp(tif, "good_til_day") != 0
        && strcmp(tif, "fill_or_kill") != 0
        && strcmp(tif, "immediate_or_cancel") != 0)
    {
        return bad(err, "wrong format", "time_in_force");
    }
    if (order_numbers(in, json_object_get(params, "amount"),
        json_object_get(params, "price"), !o.market, &o.lots, &o.price,
        err) != 0)
    {
        return NULL;
    }
    o.instr = in;
    o.dir = dir;
    snprintf(o.label, sizeof(o.label), "%s", label ? label : "");
    snprintf(o.tif, sizeof(o.tif), "%s", tif ? tif : "good_til_cancelled");
    o.post_only = json_is_true(json_object_get(params, "post_only"));
    o.reduce_only = json_is_true(json_object_get(params, "reduce_only"));
    o.created_ms = o.updated_ms = now_ms();
    o.conn_id = c->id;
    o.acct = c->acct;
    snprintf(o.state, sizeof(o.state), "open");
    if (strcmp(in->currency, "BTC") == 0) {
        snprintf(o.order_id, sizeof(o.order_id), "%llu",
            (unsigned long long) ++ex->next_order_id);
    } else {
        snprintf(o.order_id, sizeof(o.order_id), "%s-%llu", in->currency,
            (unsigned long long) ++ex->next_order_id);
    }
    if (o.post_only && !o.market) {
        const struct exsim_book *b = &in->book;
        int crosses = dir > 0 ? (b->nasks && o.price >= b->asks[0].price)
            : (b->nbids && o.price <= b->bids[0].price);

        if (crosses) {
            if (json_is_true(json_object_get(params, "reject_post_only"))) {
                *err = exsim_error_obj(11054, "post_only_reject", NULL, NULL);
                return NULL;
            }
            o.price = dir > 0 ? b->asks[0].price - 1 : b->bids[0].price + 1;
        }
    }
    op = xg_malloc(sizeof(*op));
    *op = o;
    op->acct->orders_placed++;
    op->next = ex->orders;
    ex->orders = op;
    if (strcmp(op->tif, "fill_or_kill") == 0 && available(op) < op->lots) {
        trades = json_array();
    } else {
        trades = take_liquidity(op);
    }
    if (order_open(op) && (op->market
        || strcmp(op->tif, "immediate_or_cancel") == 0
        || strcmp(op->tif, "fill_or_kill") == 0))
    {
        snprintf(op->state, sizeof(op->state), op->filled > 0 ? "filled"
            : "cancelled");
        if (op->filled == 0) {
            snprintf(op->cancel_reason, sizeof(op->cancel_reason),
                "user_request");
        }
    }
    xg_log_info("%s: %s %s %s x%lld for %s: %s", c->name,
        dir > 0 ? "buy" : "sell", in->name, op->order_id,
        (long long) op->lots, op->acct->id, op->state);
    user_publish(op, json_array_size(trades) ? trades : NULL);
    res = json_pack("{s:o, s:o}", "order", order_json(op), "trades", trades);
    order_settle(op);
    return res;
}

static void
cancel_one(struct exsim_order *o, const char *reason)
{
    snprintf(o->state, sizeof(o->state), "cancelled");
    snprintf(o->cancel_reason, sizeof(o->cancel_reason), "%s", reason);
    o->updated_ms = now_ms();
    user_publish(o, NULL);
    order_settle(o);
}

static json_t *
not_open(json_t **err)
{
    *err = exsim_error_obj(11044, "not_open_order", NULL, NULL);
    return NULL;
}

static json_t *
edit(struct exsim_account *a, json_t *params, json_t **err)
{
    struct exsim_order *o = order_find(a, json_string_value(
        json_object_get(params, "order_id")));
    int64_t lots, price;
    json_t *trades, *res;

    if (o == NULL || !order_open(o)) {
        return not_open(err);
    }
    if (order_numbers(o->instr, json_object_get(params, "amount"),
        json_object_get(params, "price"), !o->market, &lots, &price,
        err) != 0)
    {
        return NULL;
    }
    if (lots < o->filled) {
        return bad(err, "must not be below the filled amount", "amount");
    }
    o->lots = lots;
    o->price = price;
    o->updated_ms = now_ms();
    trades = lots > o->filled ? take_liquidity(o) : json_array();
    if (o->filled >= o->lots) {
        snprintf(o->state, sizeof(o->state), "filled");
    }
    user_publish(o, json_array_size(trades) ? trades : NULL);
    res = json_pack("{s:o, s:o}", "order", order_json(o), "trades", trades);
    order_settle(o);
    return res;
}

typedef int (*order_filter)(const struct exsim_order *o, json_t *params);

static int
f_all(const struct exsim_order *o, json_t *params)
{
    const char *kind = json_string_value(json_object_get(params, "kind"));
    const char *label = json_string_value(json_object_get(params, "label"));

    return (kind == NULL || strcmp(kind, "any") == 0
        || strcmp(kind, o->instr->kind) == 0)
        && (label == NULL || strcmp(label, o->label) == 0);
}

static int
f_instr(const struct exsim_order *o, json_t *params)
{
    const char *n = json_string_value(json_object_get(params,
        "instrument_name"));

    return n != NULL && strcmp(n, o->instr->name) == 0 && f_all(o, params);
}

static int
f_currency(const struct exsim_order *o, json_t *params)
{
    const char *cur = json_string_value(json_object_get(params, "currency"));

    return cur != NULL && (strcmp(cur, "any") == 0
        || strcmp(cur, o->instr->currency) == 0) && f_all(o, params);
}

static int
f_label(const struct exsim_order *o, json_t *params)
{
    const char *label = json_string_value(json_object_get(params, "label"));
    const char *cur = json_string_value(json_object_get(params, "currency"));

    return label != NULL && strcmp(label, o->label) == 0
        && (cur == NULL || strcmp(cur, "any") == 0
            || strcmp(cur, o->instr->currency) == 0);
}

static json_t *
open_orders(struct exsim_account *a, json_t *params, order_filter f)
{
    json_t *arr = json_array();
    struct exsim_order *o;

    for (o = ex->orders; o != NULL; o = o->next) {
        if (o->acct == a && order_open(o) && f(o, params)) {
            json_array_insert_new(arr, 0, order_json(o));
        }
    }
    return arr;
}

/*
 * private/get_order_history_by_instrument (and _by_currency, with kind:
 * BY_CURRENCY set): the account's closed orders on one instrument (on the
 * currency's instruments of that kind) (filled, cancelled, rejected),
 * newest first, as Deribit;
 * count (default 20, 1..1000), offset; cancelled orders that filled
 * nothing only with include_unfilled. Only the last MAX_CLOSED_ORDERS
 * closed orders are remembered.
 */
static json_t *
order_history(struct exsim_account *a, json_t *params, int by_currency,
    json_t **err)
{
    const char *name = json_string_value(json_object_get(params,
        "instrument_name"));
    const char *cur = json_string_value(json_object_get(params, "currency"));
    json_t *jc = json_object_get(params, "count");
    json_t *jo = json_object_get(params, "offset");
    int unfilled = json_is_true(json_object_get(params, "include_unfilled"));
    json_int_t count = 20, skip = 0;
    const struct exsim_instr *in = NULL;
    struct exsim_order *o;
    json_t *arr;

    if (by_currency && cur == NULL) {
        return bad(err, "required", "currency");
    }
    if (!by_currency && (name == NULL
                         || (in = exsim_instr_find(name)) == NULL)) {
        return bad(err, "instrument not found", "instrument_name");
    }
    if (jc != NULL && (!json_is_integer(jc) || json_integer_value(jc) < 1
                       || json_integer_value(jc) > 1000)) {
        return bad(err, "must be an integer 1..1000", "count");
    }
    if (jo != NULL && (!json_is_integer(jo) || json_integer_value(jo) < 0)) {
        return bad(err, "must be a non-negative integer", "offset");
    }
    if (jc != NULL) {
        count = json_integer_value(jc);
    }
    if (jo != NULL) {
        skip = json_integer_value(jo);
    }
    arr = json_array();
    for (o = ex->closed; o != NULL
         && (json_int_t) json_array_size(arr) < count; o = o->next) {
        if (o->acct != a
            || (by_currency ? !f_currency(o, params) : o->instr != in)
            || (!unfilled && o->filled == 0
                && strcmp(o->state, "filled") != 0)) {
            continue;
        }
        if (skip > 0) {
            skip--;
            continue;
        }
        json_array_append_new(arr, order_json(o));
    }
    return arr;
}

static json_t *
cancel_many(struct exsim_account *a, json_t *params, order_filter f)
{
    struct exsim_order *o, *next;
    json_int_t n = 0;

    for (o = ex->orders; o != NULL; o = next) {
        next = o->next;
        if (o->acct == a && order_open(o) && f(o, params)) {
            cancel_one(o, "user_request");
            n++;
        }
    }
    return json_integer(n);
}

/*
 * Handles the private trading methods for C (authenticated here): sets
 * *handled when METHOD is one of them. Returns the result, or NULL with
 * *err set.
 */
json_t *
exsim_trade_method(struct exsim_conn *c, const char *method, json_t *params,
    json_t **err, int *handled)
{
    const char *m = method + strlen("private/");
    struct exsim_order *o;
    struct exsim_instr *in;
    struct exsim_account *a;

    static const char *names[] = { "buy", "sell", "edit", "cancel",
        "cancel_all", "cancel_all_by_instrument", "cancel_all_by_currency",
        "cancel_by_label", "get_open_orders", "get_open_orders_by_instrument",
        "get_open_orders_by_currency", "get_open_orders_by_label",
        "get_order_state", "get_positions", "get_position",
        "get_account_summary", "get_user_trades_by_instrument",
        "get_user_trades_by_instrument_and_time",
        "get_order_history_by_instrument", "get_order_history_by_currency",
        "get_user_trades_by_currency_and_time", NULL };
    int i;

    for (i = 0; names[i] != NULL; i++) {
        if (strcmp(m, names[i]) == 0) {
            break;
        }
    }
    if (names[i] == NULL) {
        return NULL;
    }
    *handled = 1;
    if (exsim_auth_check(c, params, err) != 0) {
        return NULL;
    }
    a = c->acct;
    if (strcmp(m, "buy") == 0 || strcmp(m, "sell") == 0) {
        return place(c, m[0] == 'b' ? 1 : -1, params, err);
    }
    if (strcmp(m, "edit") == 0) {
        return edit(a, params, err);
    }
    if (strcmp(m, "cancel") == 0) {
        o = order_find(a, json_string_value(json_object_get(params,
            "order_id")));
        if (o == NULL || !order_open(o)) {
            return not_open(err);
        }
        cancel_one(o, "user_request");
        return order_json(o);
    }
    if (strcmp(m, "cancel_all") == 0) {
        return cancel_many(a, params, f_all);
    }
    if (strcmp(m, "cancel_all_by_instrument") == 0) {
        return cancel_many(a, params, f_instr);
    }
    if (strcmp(m, "cancel_all_by_currency") == 0) {
        return cancel_many(a, params, f_currency);
    }
    if (strcmp(m, "cancel_by_label") == 0) {
        return cancel_many(a, params, f_label);
    }
    if (strcmp(m, "get_open_orders") == 0) {
        return open_orders(a, params, f_all);
    }
    if (strcmp(m, "get_open_orders_by_instrument") == 0) {
        return open_orders(a, params, f_instr);
    }
    if (strcmp(m, "get_open_orders_by_currency") == 0) {
        return open_orders(a, params, f_currency);
    }
    if (strcmp(m, "get_open_orders_by_label") == 0) {
        return open_orders(a, params, f_label);
    }
    if (strcmp(m, "get_user_trades_by_currency_and_time") == 0) {
        return user_trades_by_currency(a, params, err);
    }
    if (strcmp(m, "get_order_history_by_instrument") == 0) {
        return order_history(a, params, 0, err);
    }
    if (strcmp(m, "get_order_history_by_currency") == 0) {
        return order_history(a, params, 1, err);
    }
    if (strcmp(m, "get_user_trades_by_instrument") == 0) {
        return user_trades_query(a, params, 0, err);
    }
    if (strcmp(m, "get_user_trades_by_instrument_and_time") == 0) {
        return user_trades_query(a, params, 1, err);
    }
    if (strcmp(m, "get_order_state") == 0) {
        o = order_find(a, json_string_value(json_object_get(params,
            "order_id")));
        if (o == NULL) {
            *err = exsim_error_obj(11044, "order_not_found", NULL, NULL);
            return NULL;
        }
        return order_json(o);
    }
    if (strcmp(m, "get_position") == 0) {
        in = exsim_instr_find(json_string_value(json_object_get(params,
            "instrument_name")) ?: "");
        return in ? position_json(a, in) : bad(err, "instrument not found",
            "instrument_name");
    }
    if (strcmp(m, "get_positions") == 0) {
        const char *cur = json_string_value(json_object_get(params,
            "currency"));
        json_t *arr = json_array();

        for (in = ex->instrs; in != NULL; in = in->next) {
            struct exsim_pos *p = pos_find(a, in);

            if (p != NULL && p->lots != 0 && (cur == NULL || strcmp(cur, "any") == 0
                || strcmp(cur, in->currency) == 0))
            {
                json_array_append_new(arr, position_json(a, in));
            }
        }
        return arr;
    }
    /* get_account_summary */
    {
        const char *cur = json_string_value(json_object_get(params,
            "currency"));

        return portfolio_json(cur ? cur : "BTC");
    }
}

/* Rule 4: resting orders on IN that the market has reached fill. */
void
exsim_trade_after_step(struct exsim_instr *in)
{
    const struct exsim_book *b = &in->book;
    struct exsim_order *o, *next;

    for (o = ex->orders; o != NULL; o = next) {
        struct exsim_trade_rec t;
        json_t *pub, *mine;
        int64_t lots;

        next = o->next;
        if (o->instr != in || !order_open(o)) {
            continue;
        }
        if (!(o->dir > 0 ? (b->nasks && b->asks[0].price <= o->price)
            : (b->nbids && b->bids[0].price >= o->price)))
        {
            continue;
        }
        lots = o->lots - o->filled;
        exsim_trade_record(in, -o->dir, o->price, lots, &t);
        order_fill(o, lots, o->price);
        pub = json_pack("[o]", exsim_trade_public_json(in, &t));
        mine = json_pack("[o]", user_trade_json(o, &t, 1));
        exsim_trades_publish(in, pub);
        user_publish(o, mine);
        json_decref(pub);
        json_decref(mine);
        order_settle(o);
    }
}

/*
 * C is gone without logout: with cancel-on-disconnect on, cancel the
 * orders it created (connection scope) or all of its account's orders
 * (account scope), counted in cod_cancels. Other accounts' orders stay.
 */
void
exsim_trade_conn_gone(struct exsim_conn *c)
{
    struct exsim_order *o, *next;
    uint64_t n = 0;

    if (!c->cod || c->auth[0] == '\0' || c->acct == NULL) {
        return;
    }
    ex->st.closes_cod_on++;
    for (o = ex->orders; o != NULL; o = next) {
        next = o->next;
        if (o->acct == c->acct && order_open(o)
            && (c->acct->cod_account || o->conn_id == c->id))
        {
            cancel_one(o, "cancel_on_disconnect");
            n++;
        }
    }
    ex->st.cod_cancels += n;
    if (n > 0) {
        xg_log_info("%s: cancel on disconnect: %llu orders cancelled",
            c->name, (unsigned long long) n);
    }
}

/* Open orders of account A (NULL: of all), for stats. */
size_t
exsim_orders_open(const struct exsim_account *a)
{
    struct exsim_order *o;
    size_t n = 0;

    for (o = ex->orders; o != NULL; o = o->next) {
        n += order_open(o) && (a == NULL || o->acct == a);
    }
    return n;
}

/* Frees every order (quit). */
void
exsim_trade_free_all(void)
{
    struct exsim_order *o;

    while ((o = ex->orders) != NULL) {
        ex->orders = o->next;
        free(o);
    }
    while ((o = ex->closed) != NULL) {
        ex->closed = o->next;
        free(o);
    }
}
