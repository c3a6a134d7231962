/*
 * exsim_market.c: the simulated market: instruments, their order books and
 * trades, moved by a seeded PRNG on a timer at --rate steps per second per
 * instrument (also while nobody is connected), and the public channels
 * that publish them with Deribit's field names (exchange-protocols.md A4).
 *
 * Prices and amounts are integers (ticks and lots) inside, so books never
 * drift by rounding; they become JSON numbers only on output.
 *
 * Intervals: `raw` channels get every change as it happens. `100ms` and
 * `agg2` channels are aggregated on a 100 ms timer: the channel keeps the
 * book as it last published it and sends the difference, with
 * prev_change_id = the change_id it last sent (--no-aggregate publishes
 * them like raw).
 */
#include "exsim.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define DEFAULT_INSTRUMENTS "BTC-PERPETUAL,ETH-PERPETUAL,BTC-26DEC26," \
    "ETH-26DEC26,BTC-26DEC26-100000-C,ETH-26DEC26-4000-P"

static int next_instr_id = 210000;

/* ---- numbers ------------------------------------------------------------ */

double
exsim_price(const struct exsim_instr *in, int64_t ticks)
{
    return (double) ticks * in->tick;
}

double
exsim_amount(const struct exsim_instr *in, int64_t lots)
{
    return (double) lots * in->min_amount;
}

static uint64_t
now_ms(void)
{
    return xg_wall_us() / 1000;
}

static int64_t
rnd(int64_t n)
{
    return n <= 1 ? 0 : (int64_t) (exsim_rand() % (uint64_t) n);
}

/* ---- instruments -------------------------------------------------------- */

static int
parse_expiry(const char *s, uint64_t *ms)
{
    static const char *mon[] = { "JAN", "FEB", "MAR", "APR", "MAY", "JUN",
        "JUL", "AUG", "SEP", "OCT", "NOV", "DEC" };
    struct tm tm;
    char m[4];
    int d, y, i;

    if (sscanf(s, "%2d%3[A-Z]%2d", &d, m, &y) != 3 || strlen(s) < 7
        || strlen(s) > 7)
    {
        return -1;
    }
    for (i = 0; i < 12; i++) {
        if (strcmp(m, mon[i]) == 0) {
            break;
        }
    }
    if (i == 12 || d < 1 || d > 31) {
        return -1;
    }
    memset(&tm, 0, sizeof(tm));
    tm.tm_mday = d;
    tm.tm_mon = i;
    tm.tm_year = 100 + y;
    tm.tm_hour = 8;
    *ms = (uint64_t) timegm(&tm) * 1000;
    return 0;
}

static double
base_price(const char *cur)
{
    if (strcmp(cur, "BTC") == 0) {
        return 90000;
    }
    if (strcmp(cur, "ETH") == 0) {
        return 3000;
    }
    return 100;
}

static void
book_seed(struct exsim_instr *in, int64_t mid)
{
    struct exsim_book *b = &in->book;
    int64_t p;
    int i;

    b->nbids = b->nasks = 20;
    p = mid - 1;
    for (i = 0; i < 20; i++) {
        b->bids[i].price = p;
        b->bids[i].lots = 1 + rnd(50);
        p -= 1 + rnd(3);
    }
    p = mid + 1;
    for (i = 0; i < 20; i++) {
        b->asks[i].price = p;
        b->asks[i].lots = 1 + rnd(50);
        p += 1 + rnd(3);
    }
    in->last_price = mid;
    in->base_ticks = mid;
    in->high = in->low = mid;
}

static struct exsim_instr *
instr_new(const char *name)
{
    struct exsim_instr *in = xg_calloc(1, sizeof(*in));
    char buf[64], *parts[5], *save = NULL, *t;
    int n = 0;
    double base;

    if (strlen(name) >= sizeof(buf) || strlen(name) < 5) {
        goto bad;
    }
    snprintf(buf, sizeof(buf), "%s", name);
    for (t = strtok_r(buf, "-", &save); t != NULL && n < 5;
        t = strtok_r(NULL, "-", &save))
    {
        parts[n++] = t;
    }
    if (n < 2 || n == 3 || n > 4 || strlen(parts[0]) > 6) {
        goto bad;
    }
    snprintf(in->name, sizeof(in->name), "%s", name);
    snprintf(in->currency, sizeof(in->currency), "%s", parts[0]);
    snprintf(in->index_name, sizeof(in->index_name), "%c%c%c_usd",
        parts[0][0] | 0x20, parts[0][1] | 0x20, parts[0][2] | 0x20);
    if (strlen(parts[0]) != 3) {
        snprintf(in->index_name, sizeof(in->index_name), "%s_usd", parts[0]);
        for (t = in->index_name; *t; t++) {
            *t = (char) (*t >= 'A' && *t <= 'Z' ? *t | 0x20 : *t);
        }
    }
    base = base_price(in->currency);
    in->contract_size = strcmp(in->currency, "BTC") == 0 ? 10 : 1;
    if (n == 2 && strcmp(parts[1], "PERPETUAL") == 0) {
        in->perpetual = 1;
        snprintf(in->kind, sizeof(in->kind), "future");
        in->expiration_ms = 32503708800000ull;
    } else {
        if (parse_expiry(parts[1], &in->expiration_ms) != 0) {
            goto bad;
        }
        snprintf(in->kind, sizeof(in->kind), n == 2 ? "future" : "option");
    }
    if (n == 4) {
        char *end;

        in->strike = strtod(parts[2], &end);
        if (*end != '\0' || in->strike <= 0
            || (strcmp(parts[3], "C") != 0 && strcmp(parts[3], "P") != 0))
        {
            goto bad;
        }
        snprintf(in->option_type, sizeof(in->option_type), "%s",
            parts[3][0] == 'C' ? "call" : "put");
        in->tick = 0.0005;
        in->min_amount = 0.1;
        in->contract_size = 1;
        base = 0.05;
    } else {
        in->tick = strcmp(in->currency, "BTC") == 0 ? 0.5
            : strcmp(in->currency, "ETH") == 0 ? 0.05 : 0.01;
        in->min_amount = in->contract_size;
        if (!in->perpetual) {
            base *= 1.01;
        }
    }
    in->id = next_instr_id++;
    in->trades = xg_calloc(EXSIM_TRADE_RING, sizeof(*in->trades));
    in->change_id = 1000000000ull + (uint64_t) rnd(1000000) * 100;
    in->trade_seq = 100000 + (uint64_t) rnd(100000);
    book_seed(in, (int64_t) llround(base / in->tick));
    in->index_price = base_price(in->currency);
    return in;
bad:
    free(in);
    return NULL;
}

/*
 * Builds the instrument set from LIST ("A,B,...", NULL: the default set).
 * Returns 0, or -1 with a message on stderr for a name it cannot model.
 */
int
exsim_market_init(const char *list)
{
    char *copy = xg_strdup(list ? list : DEFAULT_INSTRUMENTS), *t;
    char *save = NULL;
    struct exsim_instr **tail = &ex->instrs, *in;

    for (t = strtok_r(copy, ",", &save); t != NULL;
        t = strtok_r(NULL, ",", &save))
    {
        if (exsim_instr_find(t) != NULL) {
            continue;
        }
        in = instr_new(t);
        if (in == NULL) {
            fprintf(stderr, "exsim: --instruments: cannot model \"%s\""
                " (CUR-PERPETUAL, CUR-DDMMMYY or CUR-DDMMMYY-STRIKE-C|P)\n",
                t);
            free(copy);
            return -1;
        }
        *tail = in;
        tail = &in->next;
    }
    free(copy);
    return ex->instrs ? 0 : -1;
}

/* Frees every instrument (quit). */
void
exsim_market_free(void)
{
    struct exsim_instr *in;

    while ((in = ex->instrs) != NULL) {
        ex->instrs = in->next;
        free(in->trades);
        free(in);
    }
}

struct exsim_instr *
exsim_instr_find(const char *name)
{
    struct exsim_instr *in;

    for (in = ex->instrs; in != NULL; in = in->next) {
        if (strcmp(in->name, name) == 0) {
            return in;
        }
    }
    return NULL;
}

static double
mid_price(const struct exsim_instr *in)
{
    const struct exsim_book *b = &in->book;

    if (b->nbids && b->nasks) {
        return exsim_price(in, b->bids[0].price + b->asks[0].price) / 2;
    }
    return exsim_price(in, in->last_price);
}

static double
mark_price(const struct exsim_instr *in)
{
    return floor(mid_price(in) / in->tick + 0.5) * in->tick;
}

/* Instrument description as public/get_instruments returns it. */
json_t *
exsim_instr_json(const struct exsim_instr *in)
{
    int option = strcmp(in->kind, "option") == 0;
    json_t *o = json_pack("{s:f, s:f, s:s, s:s, s:f, s:f, s:s, s:b, s:s,"
        " s:I, s:I, s:f, s:s, s:f, s:s, s:s, s:s, s:i, s:b}",
        "tick_size", in->tick,
        "taker_commission", 0.0005,
        "settlement_period", in->perpetual ? "perpetual" : "month",
        "quote_currency", option ? in->currency : "USD",
        "min_trade_amount", in->min_amount,
        "maker_commission", 0.0,
        "kind", in->kind,
        "is_active", 1,
        "instrument_name", in->name,
        "expiration_timestamp", (json_int_t) in->expiration_ms,
        "creation_timestamp", (json_int_t) 1700000000000LL,
        "contract_size", in->contract_size,
        "base_currency", in->currency,
        "block_trade_commission", 0.00025,
        "settlement_currency", in->currency,
        "counter_currency", "USD",
        "price_index", in->index_name,
        "instrument_id", in->id,
        "rfq", 0);

    json_object_set_new(o, "instrument_type", json_string(option ? "reversed"
        : "reversed"));
    json_object_set_new(o, "max_leverage", option ? json_null()
        : json_integer(50));
    if (option) {
        json_object_set_new(o, "option_type", json_string(in->option_type));
        json_object_set_new(o, "strike", json_real(in->strike));
    } else {
        json_object_set_new(o, "future_type", json_string("reversed"));
    }
    return o;
}

static void
add_book_fields(json_t *o, const struct exsim_instr *in)
{
    const struct exsim_book *b = &in->book;

    json_object_set_new(o, "best_bid_price", json_real(b->nbids
        ? exsim_price(in, b->bids[0].price) : 0));
    json_object_set_new(o, "best_bid_amount", json_real(b->nbids
        ? exsim_amount(in, b->bids[0].lots) : 0));
    json_object_set_new(o, "best_ask_price", json_real(b->nasks
        ? exsim_price(in, b->asks[0].price) : 0));
    json_object_set_new(o, "best_ask_amount", json_real(b->nasks
        ? exsim_amount(in, b->asks[0].lots) : 0));
}

static json_t *
stats_json(const struct exsim_instr *in)
{
    return json_pack("{s:f, s:f, s:f, s:f}",
        "volume", in->volume,
        "price_change", 0.0,
        "low", exsim_price(in, in->low),
        "high", exsim_price(in, in->high));
}

/* Ticker data as public/ticker and ticker.I.INTERVAL carry it. */
json_t *
exsim_ticker_json(const struct exsim_instr *in)
{
    double mark = mark_price(in);
    json_t *o = json_pack("{s:I, s:s, s:o, s:f, s:f, s:f, s:f, s:f, s:f,"
        " s:s, s:f, s:f}",
        "timestamp", (json_int_t) now_ms(),
        "state", "open",
        "stats", stats_json(in),
        "settlement_price", mark,
        "open_interest", in->open_interest,
        "min_price", floor(mark * 0.95 / in->tick) * in->tick,
        "max_price", ceil(mark * 1.05 / in->tick) * in->tick,
        "mark_price", mark,
        "last_price", exsim_price(in, in->last_price),
        "instrument_name", in->name,
        "index_price", in->index_price,
        "estimated_delivery_price", in->index_price);

    add_book_fields(o, in);
    if (in->perpetual) {
        json_object_set_new(o, "funding_8h", json_real(0.0000123));
        json_object_set_new(o, "current_funding", json_real(0.0));
        json_object_set_new(o, "interest_value", json_real(0.0));
    }
    if (strcmp(in->kind, "option") == 0) {
        json_object_set_new(o, "underlying_price",
            json_real(in->index_price));
        json_object_set_new(o, "underlying_index", json_string("index_price"));
        json_object_set_new(o, "interest_rate", json_real(0.0));
        json_object_set_new(o, "mark_iv", json_real(50.0));
        json_object_set_new(o, "bid_iv", json_real(49.0));
        json_object_set_new(o, "ask_iv", json_real(51.0));
        json_object_set_new(o, "greeks", json_pack("{s:f, s:f, s:f, s:f,"
            " s:f}", "delta", 0.5, "gamma", 0.0001, "vega", 10.0,
            "theta", -5.0, "rho", 1.0));
    }
    return o;
}

static json_t *
levels_pairs(const struct exsim_instr *in, const struct exsim_level *lv,
    int n, int depth)
{
    json_t *a = json_array();
    int i;

    for (i = 0; i < n && i < depth; i++) {
        json_array_append_new(a, json_pack("[f, f]",
            exsim_price(in, lv[i].price), exsim_amount(in, lv[i].lots)));
    }
    return a;
}

/* public/get_order_book: DEPTH levels a side, with the current change_id. */
json_t *
exsim_order_book_json(const struct exsim_instr *in, int depth)
{
    json_t *o = exsim_ticker_json(in);

    json_object_set_new(o, "change_id", json_integer((json_int_t)
        in->change_id));
    json_object_set_new(o, "bids", levels_pairs(in, in->book.bids,
        in->book.nbids, depth));
    json_object_set_new(o, "asks", levels_pairs(in, in->book.asks,
        in->book.nasks, depth));
    return o;
}

/* ---- trades ------------------------------------------------------------- */

/*
 * Records one trade of LOTS at PRICE on IN (DIR: the aggressor side) with
 * the next trade_seq, and returns it in *OUT.
 */
void
exsim_trade_record(struct exsim_instr *in, int dir, int64_t price,
    int64_t lots, struct exsim_trade_rec *out)
{
    struct exsim_trade_rec *t;
    int td;

    if (price > in->last_price) {
        td = 0;
    } else if (price < in->last_price) {
        td = 2;
    } else {
        td = in->last_tick_dir == 0 || in->last_tick_dir == 1 ? 1 : 3;
    }
    in->last_tick_dir = td;
    in->last_price = price;
    if (price > in->high) {
        in->high = price;
    }
    if (price < in->low) {
        in->low = price;
    }
    in->volume += exsim_amount(in, lots);
    in->open_interest += exsim_amount(in, lots);
    t = &in->trades[in->trade_head];
    in->trade_head = (in->trade_head + 1) % EXSIM_TRADE_RING;
    if (in->ntrades < EXSIM_TRADE_RING) {
        in->ntrades++;
    }
    t->trade_seq = ++in->trade_seq;
    t->trade_id = ++ex->next_trade_id;
    t->ts_ms = now_ms();
    t->price = price;
    t->lots = lots;
    t->dir = dir;
    t->tick_direction = td;
    t->index_price = in->index_price;
    t->mark_price = mark_price(in);
    *out = *t;
}

/* A trade as trades.* and get_last_trades_by_instrument show it. */
json_t *
exsim_trade_public_json(const struct exsim_instr *in,
    const struct exsim_trade_rec *t)
{
    char id[32];
    json_t *o;

    snprintf(id, sizeof(id), "%llu", (unsigned long long) t->trade_id);
    o = json_pack("{s:I, s:s, s:I, s:i, s:f, s:f, s:s, s:f, s:s, s:f}",
        "trade_seq", (json_int_t) t->trade_seq,
        "trade_id", id,
        "timestamp", (json_int_t) t->ts_ms,
        "tick_direction", t->tick_direction,
        "price", exsim_price(in, t->price),
        "mark_price", t->mark_price,
        "instrument_name", in->name,
        "index_price", t->index_price,
        "direction", t->dir > 0 ? "buy" : "sell",
        "amount", exsim_amount(in, t->lots));
    if (strcmp(in->kind, "option") == 0) {
        json_object_set_new(o, "iv", json_real(50.0));
    } else {
        json_object_set_new(o, "contracts", json_real(exsim_amount(in,
            t->lots) / in->contract_size));
    }
    return o;
}

static int
trades_kind_match(const struct exsim_chan *ch, const struct exsim_instr *in)
{
    return (strcmp(ch->fkind, "any") == 0 || strcmp(ch->fkind, in->kind) == 0)
        && (strcmp(ch->fcur, "any") == 0
            || strcmp(ch->fcur, in->currency) == 0);
}

/* Publishes the trades in ARR (borrowed) on the trades channels of IN. */
void
exsim_trades_publish(struct exsim_instr *in, json_t *arr)
{
    struct exsim_chan *ch;

    for (ch = ex->chans; ch != NULL; ch = ch->lnext) {
        if (!((ch->kind == EXSIM_CH_TRADES && ch->instr == in)
            || (ch->kind == EXSIM_CH_TRADES_KIND && trades_kind_match(ch, in))))
        {
            continue;
        }
        if (ch->interval == 0 || ex->o.no_aggregate) {
            exsim_publish(ch, json_deep_copy(arr));
        } else {
            if (ch->pending == NULL) {
                ch->pending = json_array();
            }
            if (json_array_size(ch->pending) < 10000) {
                json_array_extend(ch->pending, arr);
            }
        }
    }
}

/*
 * public/get_last_trades_by_instrument: trades by trade_seq range
 * (start_seq, end_seq) or timestamp range, count (default 10, max 1000),
 * sorting asc|desc|default (default: asc when start_seq is given, else
 * the newest first), and has_more.
 */
json_t *
exsim_last_trades_json(const struct exsim_instr *in, json_t *params,
    json_t **err)
{
    json_t *js = json_object_get(params, "start_seq");
    json_t *je = json_object_get(params, "end_seq");
    json_t *jst = json_object_get(params, "start_timestamp");
    json_t *jet = json_object_get(params, "end_timestamp");
    json_t *jc = json_object_get(params, "count");
    const char *sorting = json_string_value(json_object_get(params,
        "sorting"));
    uint64_t s = 0, e = UINT64_MAX, st = 0, et = UINT64_MAX;
    size_t count = 10, i, got = 0, matched = 0;
    int asc;
    json_t *arr;

    if ((js && !json_is_number(js)) || (je && !json_is_number(je))
        || (jst && !json_is_number(jst)) || (jet && !json_is_number(jet)))
    {
        *err = exsim_error_obj(EXSIM_E_PARAMS, NULL, "must be an integer",
            js && !json_is_number(js) ? "start_seq" : "end_seq");
        return NULL;
    }
    if (jc != NULL) {
        if (!json_is_number(jc) || json_number_value(jc) < 1
            || json_number_value(jc) > 1000)
        {
            *err = exsim_error_obj(EXSIM_E_PARAMS, NULL,
                "must be between 1 and 1000", "count");
            return NULL;
        }
        count = (size_t) json_number_value(jc);
    }
    if (js) {
        s = (uint64_t) json_number_value(js);
    }
    if (je) {
        e = (uint64_t) json_number_value(je);
    }
    if (jst) {
        st = (uint64_t) json_number_value(jst);
    }
    if (jet) {
        et = (uint64_t) json_number_value(jet);
    }
    if (sorting != NULL && strcmp(sorting, "asc") != 0
        && strcmp(sorting, "desc") != 0 && strcmp(sorting, "default") != 0)
    {
        *err = exsim_error_obj(EXSIM_E_PARAMS, NULL,
            "must be asc, desc or default", "sorting");
        return NULL;
    }
    asc = sorting && strcmp(sorting, "asc") == 0;
    if (sorting == NULL || strcmp(sorting, "default") == 0) {
        asc = js != NULL || jst != NULL;
    }
    arr = json_array();
    for (i = 0; i < in->ntrades; i++) {
        /* oldest first for asc, newest first for desc */
        size_t k = asc ? (in->trade_head + EXSIM_TRADE_RING - in->ntrades + i)
            % EXSIM_TRADE_RING
            : (in->trade_head + EXSIM_TRADE_RING - 1 - i) % EXSIM_TRADE_RING;
        const struct exsim_trade_rec *t = &in->trades[k];

        if (t->trade_seq < s || t->trade_seq > e || t->ts_ms < st
            || t->ts_ms > et)
        {
            continue;
        }
        matched++;
        if (got < count) {
            json_array_append_new(arr, exsim_trade_public_json(in, t));
            got++;
        }
    }
    return json_pack("{s:o, s:b}", "trades", arr, "has_more", matched > got);
}

static int
ts_cmp_asc(const void *a, const void *b)
{
    json_int_t x = json_integer_value(json_object_get(*(json_t *const *) a,
        "timestamp"));
    json_int_t y = json_integer_value(json_object_get(*(json_t *const *) b,
        "timestamp"));

    return x < y ? -1 : x > y;
}

/*
 * Sorts the trades of ARR by timestamp (stable for equal ones: ARR holds
 * them per instrument in trade_seq order); DESC reverses. Returns a new
 * array of at most COUNT; *more is set when some were left out.
 */
json_t *
exsim_trades_sorted(json_t *arr, int desc, size_t count, int *more)
{
    size_t n = json_array_size(arr), i;
    json_t **v = calloc(n ? n : 1, sizeof(*v)), *out = json_array();

    for (i = 0; i < n; i++) {
        v[i] = json_array_get(arr, i);
    }
    /* stable: insertion by merge would be nicer; n is small (<= rings) */
    for (i = 1; i < n; i++) {
        json_t *x = v[i];
        size_t j = i;

        while (j > 0 && ts_cmp_asc(&v[j - 1], &x) > 0) {
            v[j] = v[j - 1];
            j--;
        }
        v[j] = x;
    }
    for (i = 0; i < n && json_array_size(out) < count; i++) {
        json_array_append(out, v[desc ? n - 1 - i : i]);
    }
    *more = n > count;
    free(v);
    return out;
}

/*
 * public/get_last_trades_by_currency_and_time: the trades of every
 * instrument of currency (and kind: future, option or any, the default)
 * between start_timestamp and end_timestamp, count (default 10, max
 * 1000), sorting asc|desc|default (default: desc);
 * {"trades":[...],"has_more":bool}.
 */
json_t *
exsim_last_trades_by_currency_json(json_t *params, json_t **err)
{
    const char *cur = json_string_value(json_object_get(params, "currency"));
    const char *kind = json_string_value(json_object_get(params, "kind"));
    const char *sorting = json_string_value(json_object_get(params,
        "sorting"));
    json_t *jst = json_object_get(params, "start_timestamp");
    json_t *jet = json_object_get(params, "end_timestamp");
    json_t *jc = json_object_get(params, "count");
    uint64_t st, et;
    size_t count = 10, i;
    const struct exsim_instr *in;
    json_t *all, *out;
    int more = 0;

    if (cur == NULL) {
        *err = exsim_error_obj(EXSIM_E_PARAMS, NULL, "required", "currency");
        return NULL;
    }
    if (!json_is_integer(jst) || !json_is_integer(jet)) {
        *err = exsim_error_obj(EXSIM_E_PARAMS, NULL, "must be an integer",
            json_is_integer(jst) ? "end_timestamp" : "start_timestamp");
        return NULL;
    }
    if (jc != NULL && (!json_is_integer(jc) || json_integer_value(jc) < 1
                       || json_integer_value(jc) > 1000)) {
        *err = exsim_error_obj(EXSIM_E_PARAMS, NULL,
            "must be between 1 and 1000", "count");
        return NULL;
    }
    if (jc != NULL) {
        count = (size_t) json_integer_value(jc);
    }
    st = (uint64_t) json_integer_value(jst);
    et = (uint64_t) json_integer_value(jet);
    all = json_array();
    for (in = ex->instrs; in != NULL; in = in->next) {
        if ((strcmp(cur, "any") != 0 && strcmp(cur, in->currency) != 0)
            || (kind != NULL && strcmp(kind, "any") != 0
                && strcmp(kind, in->kind) != 0)) {
            continue;
        }
        for (i = 0; i < in->ntrades; i++) {
            size_t k = (in->trade_head + EXSIM_TRADE_RING - in->ntrades + i)
                % EXSIM_TRADE_RING;
            const struct exsim_trade_rec *t = &in->trades[k];

            if (t->ts_ms >= st && t->ts_ms <= et) {
                json_array_append_new(all, exsim_trade_public_json(in, t));
            }
        }
    }
    out = exsim_trades_sorted(all, !(sorting && strcmp(sorting, "asc") == 0),
        count, &more);
    json_decref(all);
    return json_pack("{s:o, s:b}", "trades", out, "has_more", more);
}

/* ---- books -------------------------------------------------------------- */

static json_t *
level_json(const struct exsim_instr *in, const char *action, int64_t price,
    int64_t lots)
{
    return json_pack("[s, f, f]", action, exsim_price(in, price),
        exsim_amount(in, lots));
}

/*
 * Sets the level at PRICE on SIDE (0 bids, 1 asks) of IN's book to
 * LOTS_NEW (0 removes it) and appends the [action, price, amount] entry
 * to BIDS or ASKS.
 */
void
exsim_book_apply(struct exsim_instr *in, json_t *bids, json_t *asks,
    int side, int64_t price, int64_t lots_new)
{
    struct exsim_level *lv = side ? in->book.asks : in->book.bids;
    int *n = side ? &in->book.nasks : &in->book.nbids;
    int i;

    for (i = 0; i < *n; i++) {
        if (lv[i].price == price) {
            break;
        }
        if (side ? lv[i].price > price : lv[i].price < price) {
            break;
        }
    }
    if (i < *n && lv[i].price == price) {
        if (lots_new == 0) {
            memmove(&lv[i], &lv[i + 1], (size_t) (*n - i - 1) * sizeof(*lv));
            (*n)--;
            json_array_append_new(side ? asks : bids,
                level_json(in, "delete", price, 0));
        } else {
            lv[i].lots = lots_new;
            json_array_append_new(side ? asks : bids,
                level_json(in, "change", price, lots_new));
        }
        return;
    }
    if (lots_new == 0 || *n >= EXSIM_MAX_LEVELS) {
        return;
    }
    memmove(&lv[i + 1], &lv[i], (size_t) (*n - i) * sizeof(*lv));
    lv[i].price = price;
    lv[i].lots = lots_new;
    (*n)++;
    json_array_append_new(side ? asks : bids,
        level_json(in, "new", price, lots_new));
}

static json_t *
book_change_json(const struct exsim_instr *in, uint64_t prev, uint64_t cur,
    json_t *bids, json_t *asks)
{
    return json_pack("{s:s, s:I, s:s, s:I, s:I, s:O, s:O}",
        "type", "change",
        "timestamp", (json_int_t) now_ms(),
        "instrument_name", in->name,
        "prev_change_id", (json_int_t) prev,
        "change_id", (json_int_t) cur,
        "bids", bids, "asks", asks);
}

static int
chan_immediate(const struct exsim_chan *ch)
{
    return ch->interval == 0 || ex->o.no_aggregate;
}

/*
 * Ends one book change of IN: bumps change_id and sends BIDS/ASKS
 * (borrowed) to the raw book channels; aggregated ones catch up on the
 * 100 ms timer. A `gap` armed on a channel swallows its next change.
 */
void
exsim_book_publish_change(struct exsim_instr *in, json_t *bids, json_t *asks)
{
    struct exsim_chan *ch;
    json_t *data = NULL, *ticker = NULL;

    in->change_id++;
    in->version++;
    for (ch = ex->chans; ch != NULL; ch = ch->lnext) {
        if (ch->instr != in || !chan_immediate(ch) || ch->nsubs == 0) {
            continue;
        }
        if (ch->kind == EXSIM_CH_BOOK) {
            if (ch->gap) {
                ch->gap = 0;
                xg_log_info("exsim: gap: change_id %llu not sent on %s",
                    (unsigned long long) in->change_id, ch->name);
                continue;
            }
            if (data == NULL) {
                data = book_change_json(in, in->change_id - 1, in->change_id,
                    bids, asks);
            }
            exsim_publish(ch, json_incref(data));
        } else if (ch->kind == EXSIM_CH_TICKER) {
            if (ticker == NULL) {
                ticker = exsim_ticker_json(in);
            }
            exsim_publish(ch, json_incref(ticker));
        }
    }
    json_decref(data);
    json_decref(ticker);
}

/* One random book event on IN: change, add, delete a level, or a trade. */
static void
market_step(struct exsim_instr *in)
{
    struct exsim_book *b = &in->book;
    json_t *bids = json_array(), *asks = json_array(), *trades = NULL;
    double mid = b->nbids && b->nasks
        ? (double) (b->bids[0].price + b->asks[0].price) / 2
        : (double) in->last_price;
    /* a weak pull back to the base price keeps long runs in a sane band */
    double bias = fmax(-0.2, fmin(0.2, (mid - (double) in->base_ticks)
        / (double) in->base_ticks * 5));
    int side = exsim_rand01() < 0.5 - bias;
    struct exsim_level *lv = side ? b->asks : b->bids;
    int n = side ? b->nasks : b->nbids;
    int64_t spread = b->nbids && b->nasks
        ? b->asks[0].price - b->bids[0].price : 0;
    double r = exsim_rand01();
    int64_t p, k;
    int i;

    if (r < 0.35 && n > 0) {
        i = (int) rnd(n < 10 ? n : 10);
        exsim_book_apply(in, bids, asks, side, lv[i].price,
            lv[i].lots + 1 + rnd(20) - (lv[i].lots > 10 ? 10 : 0));
    } else if (r < 0.55) {
        if (spread > 1 && (spread > 3 || rnd(2))) {
            /* inside the spread, so the spread stays a few ticks wide */
            k = 1 + rnd(spread - 1 < 3 ? spread - 1 : 3);
            p = side ? b->asks[0].price - k : b->bids[0].price + k;
        } else if (n > 0) {
            p = side ? lv[n - 1].price + 1 + rnd(3)
                : lv[n - 1].price - 1 - rnd(3);
        } else {
            p = in->last_price + (side ? 1 : -1);
        }
        if (p > 0 && n < EXSIM_MAX_LEVELS) {
            exsim_book_apply(in, bids, asks, side, p, 1 + rnd(50));
        }
    } else if (r < 0.75 && n > 5) {
        i = (int) rnd(n < 10 ? n : 10);
        exsim_book_apply(in, bids, asks, side, lv[i].price, 0);
    } else if (n > 0) {
        /* a taker hits the best level of SIDE */
        struct exsim_trade_rec t;
        int64_t lots = 1 + rnd(lv[0].lots);

        p = lv[0].price;
        exsim_trade_record(in, side ? 1 : -1, p, lots, &t);
        exsim_book_apply(in, bids, asks, side, p, lv[0].lots - lots);
        trades = json_array();
        json_array_append_new(trades, exsim_trade_public_json(in, &t));
    }
    /* keep at least five levels a side */
    while (b->nbids < 5) {
        p = b->nbids ? b->bids[b->nbids - 1].price - 1 - rnd(3)
            : (b->nasks ? b->asks[0].price : in->last_price) - 1;
        exsim_book_apply(in, bids, asks, 0, p > 0 ? p : 1, 1 + rnd(50));
        if (p <= 1) {
            break;
        }
    }
    while (b->nasks < 5) {
        p = b->nasks ? b->asks[b->nasks - 1].price + 1 + rnd(3)
            : (b->nbids ? b->bids[0].price : in->last_price) + 1;
        exsim_book_apply(in, bids, asks, 1, p, 1 + rnd(50));
    }
    if (json_array_size(bids) + json_array_size(asks) > 0) {
        exsim_book_publish_change(in, bids, asks);
    }
    if (trades != NULL) {
        exsim_trades_publish(in, trades);
        json_decref(trades);
    }
    json_decref(bids);
    json_decref(asks);
}

static void
update_index(void)
{
    struct exsim_instr *in, *ref;

    for (in = ex->instrs; in != NULL; in = in->next) {
        for (ref = ex->instrs; ref != NULL; ref = ref->next) {
            if (strcmp(ref->currency, in->currency) == 0
                && strcmp(ref->kind, "future") == 0)
            {
                break;
            }
        }
        if (ref != NULL) {
            in->index_price = floor(mid_price(ref) * 100 + 0.5) / 100;
        }
    }
}

/* One market update: every instrument moves once, resting orders match. */
void
exsim_market_step_all(void)
{
    struct exsim_instr *in;

    for (in = ex->instrs; in != NULL; in = in->next) {
        market_step(in);
        exsim_trade_after_step(in);
    }
    update_index();
}

/* ---- the timers --------------------------------------------------------- */

static uint64_t market_last_us;
static double market_carry;

static void
market_cb(evutil_socket_t fd, short what, void *arg)
{
    uint64_t now = xg_now_us();
    double steps;
    long i, n;

    if (ex->rate <= 0) {
        return;
    }
    steps = (double) (now - market_last_us) / 1e6 * ex->rate + market_carry;
    market_last_us = now;
    n = (long) steps;
    market_carry = steps - (double) n;
    if (n > 10000) {
        n = 10000;
        market_carry = 0;
    }
    for (i = 0; i < n; i++) {
        exsim_market_step_all();
    }
}

static void agg_cb(evutil_socket_t fd, short what, void *arg);

/*
 * Sets the market to HZ updates per second (0 stops it) and starts the
 * timers on first use. The timer runs at up to 1 kHz and does as many
 * updates per tick as the rate asks for.
 */
void
exsim_market_set_rate(double hz)
{
    struct timeval tv = { 0, 100000 };
    double period;

    ex->rate = hz;
    if (ex->agg_ev == NULL) {
        ex->agg_ev = event_new(ex->base, -1, EV_PERSIST, agg_cb, NULL);
        event_add(ex->agg_ev, &tv);
    }
    if (ex->market_ev == NULL) {
        ex->market_ev = event_new(ex->base, -1, EV_PERSIST, market_cb, NULL);
    }
    event_del(ex->market_ev);
    if (hz <= 0) {
        return;
    }
    period = 1.0 / hz;
    if (period < 0.001) {
        period = 0.001;
    }
    tv.tv_sec = (time_t) period;
    tv.tv_usec = (suseconds_t) ((period - (double) tv.tv_sec) * 1e6);
    market_last_us = xg_now_us();
    market_carry = 0;
    event_add(ex->market_ev, &tv);
}

/* ---- snapshots and aggregation ----------------------------------------- */

static json_t *
levels_actions(const struct exsim_instr *in, const struct exsim_level *lv,
    int n)
{
    json_t *a = json_array();
    int i;

    for (i = 0; i < n; i++) {
        json_array_append_new(a, level_json(in, "new", lv[i].price,
            lv[i].lots));
    }
    return a;
}

static json_t *
snapshot_json(const struct exsim_instr *in, const struct exsim_book *b,
    uint64_t change_id)
{
    return json_pack("{s:s, s:I, s:s, s:I, s:o, s:o}",
        "type", "snapshot",
        "timestamp", (json_int_t) now_ms(),
        "instrument_name", in->name,
        "change_id", (json_int_t) change_id,
        "bids", levels_actions(in, b->bids, b->nbids),
        "asks", levels_actions(in, b->asks, b->nasks));
}

/* Grouped book: a full top-DEPTH image of [price, amount] pairs. */
static json_t *
group_side(const struct exsim_instr *in, const struct exsim_level *lv,
    int n, int64_t group, int depth, int ask)
{
    json_t *a = json_array();
    int64_t cur = INT64_MIN, lots = 0, key;
    int i, out = 0;

    for (i = 0; i <= n && out < depth; i++) {
        if (i < n) {
            key = group <= 1 ? lv[i].price : ask
                ? (lv[i].price + group - 1) / group * group
                : lv[i].price / group * group;
        } else {
            key = INT64_MAX;
        }
        if (key != cur && cur != INT64_MIN) {
            json_array_append_new(a, json_pack("[f, f]",
                exsim_price(in, cur), exsim_amount(in, lots)));
            out++;
            lots = 0;
        }
        if (i < n) {
            cur = key;
            lots += lv[i].lots;
        }
    }
    return a;
}

static json_t *
group_json(const struct exsim_chan *ch)
{
    const struct exsim_instr *in = ch->instr;

    return json_pack("{s:I, s:s, s:I, s:o, s:o}",
        "timestamp", (json_int_t) now_ms(),
        "instrument_name", in->name,
        "change_id", (json_int_t) in->change_id,
        "bids", group_side(in, in->book.bids, in->book.nbids, ch->group,
            ch->depth, 0),
        "asks", group_side(in, in->book.asks, in->book.nasks, ch->group,
            ch->depth, 1));
}

/* The changes that turn side A (as published) into side B (now). */
static void
diff_side(const struct exsim_instr *in, const struct exsim_level *a, int na,
    const struct exsim_level *b, int nb, int ask, json_t *out)
{
    int i = 0, j = 0;

    while (i < na || j < nb) {
        int64_t pa = i < na ? a[i].price : 0, pb = j < nb ? b[j].price : 0;
        int cmp;

        if (i >= na) {
            cmp = 1;
        } else if (j >= nb) {
            cmp = -1;
        } else if (pa == pb) {
            cmp = 0;
        } else {
            /* -1: pa comes first in this side's order */
            cmp = ask ? (pa < pb ? -1 : 1) : (pa > pb ? -1 : 1);
        }
        if (cmp == 0) {
            if (a[i].lots != b[j].lots) {
                json_array_append_new(out, level_json(in, "change", pb,
                    b[j].lots));
            }
            i++;
            j++;
        } else if (cmp < 0) {
            json_array_append_new(out, level_json(in, "delete", pa, 0));
            i++;
        } else {
            json_array_append_new(out, level_json(in, "new", pb, b[j].lots));
            j++;
        }
    }
}

static void
agg_book(struct exsim_chan *ch)
{
    struct exsim_instr *in = ch->instr;
    json_t *bids, *asks, *data;

    if (ch->agg == NULL || ch->agg_change_id == in->change_id) {
        return;
    }
    bids = json_array();
    asks = json_array();
    diff_side(in, ch->agg->bids, ch->agg->nbids, in->book.bids,
        in->book.nbids, 0, bids);
    diff_side(in, ch->agg->asks, ch->agg->nasks, in->book.asks,
        in->book.nasks, 1, asks);
    data = book_change_json(in, ch->agg_change_id, in->change_id, bids, asks);
    json_decref(bids);
    json_decref(asks);
    *ch->agg = in->book;
    ch->agg_change_id = in->change_id;
    if (ch->gap) {
        ch->gap = 0;
        xg_log_info("exsim: gap: change_id %llu not sent on %s",
            (unsigned long long) in->change_id, ch->name);
        json_decref(data);
        return;
    }
    exsim_publish(ch, data);
}

static void
agg_cb(evutil_socket_t fd, short what, void *arg)
{
    struct exsim_chan *ch;
    uint64_t t = ++ex->agg_ticks;
    struct exsim_instr *in;

    for (ch = ex->chans; ch != NULL; ch = ch->lnext) {
        if (ch->nsubs == 0 || ch->interval == 0
            || (ch->interval == 2000 && t % 20 != 0))
        {
            continue;
        }
        switch (ch->kind) {
        case EXSIM_CH_BOOK:
            if (!ex->o.no_aggregate) {
                agg_book(ch);
            }
            break;
        case EXSIM_CH_BOOK_GROUP:
            if (ch->last_version != ch->instr->version) {
                ch->last_version = ch->instr->version;
                exsim_publish(ch, group_json(ch));
            }
            break;
        case EXSIM_CH_TICKER:
            if (!ex->o.no_aggregate && ch->last_version != ch->instr->version)
            {
                ch->last_version = ch->instr->version;
                exsim_publish(ch, exsim_ticker_json(ch->instr));
            }
            break;
        case EXSIM_CH_TRADES:
        case EXSIM_CH_TRADES_KIND:
            if (ch->pending != NULL && json_array_size(ch->pending) > 0) {
                exsim_publish(ch, ch->pending);
                ch->pending = NULL;
            }
            break;
        default:
            break;
        }
    }
    /* the price index: every 100 ms when it moved */
    for (ch = ex->chans; ch != NULL; ch = ch->lnext) {
        if (ch->kind != EXSIM_CH_INDEX || ch->nsubs == 0) {
            continue;
        }
        for (in = ex->instrs; in != NULL; in = in->next) {
            if (strcmp(in->index_name, ch->fcur) == 0) {
                break;
            }
        }
        if (in != NULL && ch->last_version
            != (uint64_t) llround(in->index_price * 100))
        {
            ch->last_version = (uint64_t) llround(in->index_price * 100);
            exsim_publish(ch, json_pack("{s:I, s:f, s:s}",
                "timestamp", (json_int_t) now_ms(),
                "price", in->index_price, "index_name", in->index_name));
        }
    }
}

/*
 * C has just subscribed to CH (after the subscribe response went out):
 * book channels start with a snapshot, grouped books with their image.
 */
void
exsim_chan_subscribed(struct exsim_conn *c, struct exsim_chan *ch)
{
    if (ch->kind == EXSIM_CH_BOOK) {
        if (chan_immediate(ch)) {
            exsim_notify_conn(c, ch->name, snapshot_json(ch->instr,
                &ch->instr->book, ch->instr->change_id));
            return;
        }
        if (ch->agg == NULL) {
            ch->agg = xg_malloc(sizeof(*ch->agg));
            *ch->agg = ch->instr->book;
            ch->agg_change_id = ch->instr->change_id;
        }
        exsim_notify_conn(c, ch->name, snapshot_json(ch->instr, ch->agg,
            ch->agg_change_id));
    } else if (ch->kind == EXSIM_CH_BOOK_GROUP) {
        exsim_notify_conn(c, ch->name, group_json(ch));
    } else if (ch->kind == EXSIM_CH_BENCH) {
        exsim_bench_kick();
    }
}

/* CH lost its last subscriber and is about to be freed. */
void
exsim_chan_emptied(struct exsim_chan *ch)
{
    free(ch->agg);
    ch->agg = NULL;
    json_decref(ch->pending);
    ch->pending = NULL;
}

/* ---- channel names ------------------------------------------------------ */

static int
interval_parse(const char *s, int allow_raw)
{
    if (strcmp(s, "raw") == 0) {
        return allow_raw ? 0 : -1;
    }
    if (strcmp(s, "100ms") == 0) {
        return 100;
    }
    if (strcmp(s, "agg2") == 0) {
        return 2000;
    }
    return -1;
}

static int
currency_known(const char *cur, int allow_any)
{
    struct exsim_instr *in;

    if (allow_any && strcmp(cur, "any") == 0) {
        return 1;
    }
    for (in = ex->instrs; in != NULL; in = in->next) {
        if (strcmp(in->currency, cur) == 0) {
            return 1;
        }
    }
    return 0;
}

static int
kind_known(const char *k)
{
    return strcmp(k, "future") == 0 || strcmp(k, "option") == 0
        || strcmp(k, "spot") == 0 || strcmp(k, "future_combo") == 0
        || strcmp(k, "option_combo") == 0 || strcmp(k, "any") == 0;
}

/*
 * Validates channel NAME (exact case: [UNVERIFIED] A4.3, the strict
 * reading) and fills OUT's kind, interval, instrument and filters.
 * Returns 0 when exsim serves it, -1 otherwise.
 */
int
exsim_chan_parse(const char *name, struct exsim_chan *out)
{
    char buf[256], *p[8] = { NULL }, *save = NULL, *t;
    int n = 0, iv;

    if (strlen(name) == 0 || strlen(name) >= sizeof(buf)
        || strstr(name, "..") != NULL || name[strlen(name) - 1] == '.')
    {
        return -1;
    }
    snprintf(buf, sizeof(buf), "%s", name);
    for (t = strtok_r(buf, ".", &save); t != NULL; t = strtok_r(NULL, ".",
        &save))
    {
        if (n == 8) {
            return -1;
        }
        p[n++] = t;
    }
    if (n == 0) {
        return -1;
    }
    if (strcmp(p[0], "book") == 0) {
        if (n < 3 || (out->instr = exsim_instr_find(p[1])) == NULL) {
            return -1;
        }
        if (n == 3 && (iv = interval_parse(p[2], 1)) >= 0) {
            out->kind = EXSIM_CH_BOOK;
            out->interval = iv;
            return 0;
        }
        if (n == 5 && (iv = interval_parse(p[4], 0)) >= 0) {
            static const char *groups[] = { "none", "1", "2", "5", "10",
                "25", "100", "250" };
            size_t g;
            double gp;

            for (g = 0; g < XG_NELEM(groups); g++) {
                if (strcmp(p[2], groups[g]) == 0) {
                    break;
                }
            }
            if (g == XG_NELEM(groups) || (strcmp(p[3], "1") != 0
                && strcmp(p[3], "10") != 0 && strcmp(p[3], "20") != 0))
            {
                return -1;
            }
            gp = g == 0 ? 0 : atof(p[2]);
            if (strcmp(out->instr->currency, "BTC") != 0) {
                gp /= 100;
            }
            out->group = g == 0 ? 0 : llround(gp / out->instr->tick);
            if (g != 0 && out->group < 1) {
                out->group = 1;
            }
            out->depth = atoi(p[3]);
            out->kind = EXSIM_CH_BOOK_GROUP;
            out->interval = iv;
            return 0;
        }
        return -1;
    }
    if ((strcmp(p[0], "ticker") == 0 || strcmp(p[0], "trades") == 0)
        && n == 3)
    {
        out->instr = exsim_instr_find(p[1]);
        if (out->instr == NULL || (iv = interval_parse(p[2], 1)) < 0) {
            return -1;
        }
        out->kind = p[0][1] == 'i' ? EXSIM_CH_TICKER : EXSIM_CH_TRADES;
        out->interval = iv;
        return 0;
    }
    if (strcmp(p[0], "trades") == 0 && n == 4) {
        if (!kind_known(p[1]) || !currency_known(p[2], 1)
            || (iv = interval_parse(p[3], 1)) < 0)
        {
            return -1;
        }
        out->kind = EXSIM_CH_TRADES_KIND;
        snprintf(out->fkind, sizeof(out->fkind), "%s", p[1]);
        snprintf(out->fcur, sizeof(out->fcur), "%s", p[2]);
        out->interval = iv;
        return 0;
    }
    if (strcmp(p[0], "deribit_price_index") == 0 && n == 2) {
        struct exsim_instr *in;

        for (in = ex->instrs; in != NULL; in = in->next) {
            if (strcmp(in->index_name, p[1]) == 0) {
                break;
            }
        }
        if (in == NULL) {
            return -1;
        }
        out->kind = EXSIM_CH_INDEX;
        snprintf(out->fcur, sizeof(out->fcur), "%s", p[1]);
        return 0;
    }
    if (strcmp(p[0], "platform_state") == 0 && n == 1) {
        out->kind = EXSIM_CH_PLATFORM;
        return 0;
    }
    if (strcmp(p[0], "user") == 0 && n >= 3) {
        out->priv = 1;
        if (strcmp(p[1], "portfolio") == 0 && n == 3
            && currency_known(p[2], 1))
        {
            out->kind = EXSIM_CH_USER_PORTFOLIO;
            snprintf(out->fcur, sizeof(out->fcur), "%s", p[2]);
            return 0;
        }
        if (strcmp(p[1], "orders") == 0) {
            out->kind = EXSIM_CH_USER_ORDERS;
        } else if (strcmp(p[1], "trades") == 0) {
            out->kind = EXSIM_CH_USER_TRADES;
        } else if (strcmp(p[1], "changes") == 0) {
            out->kind = EXSIM_CH_USER_CHANGES;
        } else {
            return -1;
        }
        if (n == 4 && (out->instr = exsim_instr_find(p[2])) != NULL
            && (iv = interval_parse(p[3], 1)) >= 0)
        {
            out->interval = iv;
            return 0;
        }
        if (n == 5 && kind_known(p[2]) && currency_known(p[3], 1)
            && (iv = interval_parse(p[4], 1)) >= 0)
        {
            snprintf(out->fkind, sizeof(out->fkind), "%s", p[2]);
            snprintf(out->fcur, sizeof(out->fcur), "%s", p[3]);
            out->interval = iv;
            return 0;
        }
        return -1;
    }
    if (strcmp(p[0], "bench") == 0 && n == 2 && ex->o.bench_size > 0) {
        char *end;
        long k = strtol(p[1], &end, 10);

        if (*end != '\0' || k < 0 || k >= EXSIM_MAX_BENCH_CHAN
            || (p[1][0] == '0' && p[1][1] != '\0'))
        {
            return -1;
        }
        out->kind = EXSIM_CH_BENCH;
        out->bench = (int) k;
        return 0;
    }
    return -1;
}
