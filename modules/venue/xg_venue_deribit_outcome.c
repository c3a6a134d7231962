/*
 * xg_venue_deribit_outcome.c: every lost order answer resolved (the
 * Deribit venue's exgate/order_outcome).
 *
 * An order-changing request (buy, sell, edit, edit_by_label, cancel,
 * cancel_all*, cancel_by_label, close_position) whose answer is lost with
 * the connection still gets 13028 at once (dr_lost). When its client asked
 * for outcomes (exgate/notify_order_outcome, or `order_outcome on;` for
 * its listener) or has cancel-on-disconnect on, a lookup (struct
 * dr_outcome) then waits for the restore, with no queue deadline, and asks
 * the exchange what happened:
 *
 *   buy, sell        the order with the request's label:
 *                    get_open_orders_by_instrument, then (not open)
 *                    get_order_history_by_instrument (include_unfilled);
 *                    found: placed, else not_placed
 *   edit             get_order_state: placed when the order shows the
 *                    requested amount and price, else not_placed
 *   edit_by_label    the same on the open order with that label
 *   cancel           get_order_state: cancelled or not_placed
 *   cancel_all*, cancel_by_label
 *                    the open orders the same filter selects: none left
 *                    cancelled, else not_placed (no order)
 *   close_position   get_position: size 0 placed, else not_placed (no
 *                    order)
 *
 * Each step waits request_timeout once sent; a step lost with the
 * connection is sent again on the next one; one refused for now
 * (maintenance, rate limits) again after a backoff while the
 * request_timeout from its first send lasts (not once the next wait
 * would end past it). Any other error, or request_timeout without an
 * answer, makes the outcome unknown. The client that asked gets one
 * {"jsonrpc":"2.0","method":"exgate/order_outcome","params":{"request_id":
 * ID,"method":M,"outcome":O,"order":{...}}} with its id verbatim. To find a
 * buy or sell the gateway labels each one forwarded for such a client when
 * the bot gave no label: xg-SEQ-N, SEQ the client's (unique across the
 * gateway's restarts: wall seconds at start times a million plus a count),
 * N its orders'. A bot's own label is looked up as it is: when it reuses
 * one, the newest order with it is taken.
 *
 * A client that leaves takes its lookups along only with
 * cancel-on-disconnect on: each then holds a reference on its dr_cod,
 * and a placed order found open is cancelled like the others
 * (dr_cod_outcome). Otherwise its lookups are dropped and nothing is sent.
 * A placed order found open for a connected client is added to the
 * orders its cancel-on-disconnect owns.
 */
#include "xg_venue_deribit_int.h"

#define DR_OC_HISTORY_COUNT 200     /* closed orders a history step reads */

enum dr_oc_step {
    OC_OPEN = 0,        /* buy/sell: get_open_orders_by_instrument */
    OC_HISTORY,         /* buy/sell: get_order_history_by_instrument */
    OC_STATE,           /* edit, cancel: get_order_state */
    OC_LABEL_OPEN,      /* edit_by_label: get_open_orders_by_instrument */
    OC_LEFT,            /* cancel_all*, cancel_by_label: get_open_orders* */
    OC_POSITION         /* close_position: get_position */
};

struct dr_outcome {
    struct dr          *d;
    uint64_t            id;         /* the tag of its lookups */
    struct dr_client   *dc;         /* NULL: its client left */
    uint64_t            cod;        /* then its dr_cod's id, or 0 */
    char               *client_id;  /* the client's id, raw JSON text */
    char               *method;
    json_t             *params;     /* the request's */
    int                 step;
    uint64_t            until_ms;   /* a refused step is retried until
                                       then (0: not asked yet) */
    uint64_t            retry_ms;   /* the next retry's wait */
    struct xg_timer    *ev_retry;
    struct dr_outcome  *prev, *next;
};

static const char *const dr_oc_names[] = {
    "placed", "not_placed", "cancelled", "unknown"
};

/* ---- pure parts (t/unit/check_xg_deribit_outcome.c) ---- */

/*
 * Writes the label of a client's order, "xg-SEQ-N", in BUF (N bytes,
 * DR_LABEL_MAX + 1 is always enough). Returns its length.
 */
int
dr_outcome_label_make(char *buf, size_t n, uint64_t seq, uint64_t k)
{
    return snprintf(buf, n, "xg-%llu-%llu", (unsigned long long) seq,
        (unsigned long long) k);
}

/*
 * The order with LABEL in ORDERS (an array, borrowed), the newest by
 * creation_timestamp when several have it; borrowed, or NULL.
 */
json_t *
dr_outcome_find_label(json_t *orders, const char *label)
{
    json_t *o, *best = NULL;
    json_int_t best_ts = -1;
    size_t i;

    if (!json_is_array(orders) || label == NULL) {
        return NULL;
    }
    json_array_foreach(orders, i, o) {
        const char *l = json_string_value(json_object_get(o, "label"));
        json_int_t ts = json_integer_value(json_object_get(o,
            "creation_timestamp"));

        if (l != NULL && strcmp(l, label) == 0 && ts > best_ts) {
            best = o;
            best_ts = ts;
        }
    }
    return best;
}

/*
 * 1 when ORDER (borrowed) shows what the edit PARAMS asked: the amount
 * and, when given, the price (as numbers, within a millionth).
 */
int
dr_outcome_edit_applied(json_t *order, json_t *params)
{
    static const char *const keys[] = { "amount", "price", NULL };
    int i;

    for (i = 0; keys[i] != NULL; i++) {
        json_t *want = json_object_get(params, keys[i]);
        json_t *got = json_object_get(order, keys[i]);
        double w, g;

        if (want == NULL) {
            continue;
        }
        if (!json_is_number(want) || !json_is_number(got)) {
            return 0;
        }
        w = json_number_value(want);
        g = json_number_value(got);
        if (w - g > 1e-6 * (w < 0 ? -w : w) + 1e-9
            || g - w > 1e-6 * (w < 0 ? -w : w) + 1e-9) {
            return 0;
        }
    }
    return 1;
}

/* 1 when METHOD changes orders (its answer lost: looked up). */
int
dr_outcome_method(const char *method)
{
    return method != NULL
           && (dr_is_order_place(method) || dr_is_order_edit(method)
               || strcmp(method, "private/cancel") == 0
               || strncmp(method, "private/cancel_all", 18) == 0
               || strcmp(method, "private/cancel_by_label") == 0);
}

/* ---- the client's choice ---- */

/* 1 when DC gets exgate/order_outcome notifications. */
int
dr_outcome_wanted(const struct dr_client *dc)
{
    if (dc->notify_outcome != 0) {
        return dc->notify_outcome > 0;
    }
    return xg_client_conf(dc->c)->order_outcome;
}

/*
 * DC forwards METHOD with PARAMS (borrowed, changed here): a buy or sell
 * of a client whose lost answers are looked up gets its label when the
 * bot gave none. Returns 1 when PARAMS changed.
 */
int
dr_outcome_label(struct dr_client *dc, const char *method, json_t *params)
{
    struct dr *d = dc->d;
    char label[DR_LABEL_MAX + 1];

    if (!(strcmp(method, "private/buy") == 0
          || strcmp(method, "private/sell") == 0)
        || json_object_get(params, "label") != NULL
        || !(dr_outcome_wanted(dc) || dc->cod)) {
        return 0;
    }
    if (dc->label_seq == 0) {
        if (d->label_seq_base == 0) {
            d->label_seq_base = xg_wall_us() / 1000000 * 1000000;
        }
        dc->label_seq = d->label_seq_base + ++d->label_clients;
    }
    dr_outcome_label_make(label, sizeof(label), dc->label_seq,
        ++dc->label_n);
    json_object_set_new(params, "label", json_string(label));
    return 1;
}

/* ---- lookups ---- */

static void
dr_oc_unlink(struct dr *d, struct dr_outcome *oc)
{
    if (oc->prev != NULL) {
        oc->prev->next = oc->next;
    } else {
        d->outcomes = oc->next;
    }
    if (oc->next != NULL) {
        oc->next->prev = oc->prev;
    }
    if (oc->ev_retry != NULL) {
        xg_timer_free(oc->ev_retry);
    }
    json_decref(oc->params);
    free(oc->client_id);
    free(oc->method);
    free(oc);
}

static struct dr_outcome *
dr_oc_find(struct dr *d, uint64_t id)
{
    struct dr_outcome *oc;

    for (oc = d->outcomes; oc != NULL; oc = oc->next) {
        if (oc->id == id) {
            return oc;
        }
    }
    return NULL;
}

/* Copies KEYS of FROM that are there into a new object. */
static json_t *
dr_oc_pick(json_t *from, const char *const *keys)
{
    json_t *o = json_object();
    int i;

    for (i = 0; keys[i] != NULL; i++) {
        json_t *v = json_object_get(from, keys[i]);

        if (v != NULL) {
            json_object_set(o, keys[i], v);
        }
    }
    return o;
}

/* Sends OC's lookup for its current step (queued until the restore). */
static void
dr_oc_send(struct dr *d, struct dr_outcome *oc)
{
    static const char *const instr[] = { "instrument_name", NULL };
    static const char *const order[] = { "order_id", NULL };
    static const char *const filter[] = { "instrument_name", "currency",
                                          "kind", "type", "label", NULL };
    const char *m = oc->method, *lm;
    json_t *p;
    struct xg_reg_req *q;

    switch (oc->step) {
    case OC_OPEN:
    case OC_LABEL_OPEN:
        lm = "private/get_open_orders_by_instrument";
        p = dr_oc_pick(oc->params, instr);
        break;
    case OC_HISTORY:
        lm = "private/get_order_history_by_instrument";
        p = dr_oc_pick(oc->params, instr);
        json_object_set_new(p, "count", json_integer(DR_OC_HISTORY_COUNT));
        json_object_set_new(p, "include_unfilled", json_true());
        break;
    case OC_STATE:
        lm = "private/get_order_state";
        p = dr_oc_pick(oc->params, order);
        break;
    case OC_POSITION:
        lm = "private/get_position";
        p = dr_oc_pick(oc->params, instr);
        break;
    default:
        p = dr_oc_pick(oc->params, filter);
        lm = strcmp(m, "private/cancel_all") == 0 ? "private/get_open_orders"
             : strcmp(m, "private/cancel_all_by_instrument") == 0
             ? "private/get_open_orders_by_instrument"
             : strcmp(m, "private/cancel_all_by_currency") == 0
             ? "private/get_open_orders_by_currency"
             : "private/get_open_orders_by_label";
        break;
    }
    q = dr_internal(K_OUTCOME, lm, p);
    q->tag = oc->id;
    dr_submit(d, q, NULL);
}

static void
dr_oc_retry_cb(evutil_socket_t fd, short what, void *arg)
{
    struct dr_outcome *oc = arg;

    dr_oc_send(oc->d, oc);
}

/*
 * Q, OC's step, was refused with a transient ERROR (maintenance, rate
 * limits): sent again after a backoff while the request_timeout that
 * started with its first send lasts. Returns 1 when it will be.
 */
static int
dr_oc_retry(struct dr *d, struct dr_outcome *oc, struct xg_reg_req *q,
    const struct xg_jspan *error)
{
    uint64_t now = xg_now_ms();
    struct timeval tv;

    if (error->p == NULL || !dr_error_transient(error)) {
        return 0;
    }
    if (oc->until_ms == 0) {
        oc->until_ms = (q->log_ms != 0 ? q->log_ms : now)
                       + d->cf->request_timeout_ms;
        oc->retry_ms = DR_FETCH_RETRY_MS;
    }
    if (now + oc->retry_ms >= oc->until_ms) {
        return 0;
    }
    if (oc->ev_retry == NULL) {
        oc->ev_retry = xg_timer_new(d->base, dr_oc_retry_cb, oc);
    }
    tv.tv_sec = (time_t) (oc->retry_ms / 1000);
    tv.tv_usec = (suseconds_t) ((oc->retry_ms % 1000) * 1000);
    xg_timer_add(oc->ev_retry, &tv);
    if (oc->retry_ms < DR_FETCH_RETRY_MAX_MS) {
        oc->retry_ms *= 2;
    }
    return 1;
}

/*
 * OC is settled with OUTCOME (ORDER borrowed, or NULL): its client is
 * told, or its cancel-on-disconnect takes the order; then OC is freed.
 */
static void
dr_oc_done(struct dr *d, struct dr_outcome *oc, enum dr_oc_result outcome,
    json_t *order)
{
    struct dr_client *dc = oc->dc;
    const char *oid = json_string_value(json_object_get(order, "order_id"));
    const char *st = json_string_value(json_object_get(order,
        "order_state"));
    int open = st != NULL && (strcmp(st, "open") == 0
                              || strcmp(st, "untriggered") == 0);
    int place = dr_is_order_place(oc->method);

    d->outcomes_by[outcome]++;
    if (dc == NULL) {
        xg_upstream_log(XG_LOG_INFO, d->up, "order outcome of %s (client "
            "gone): %s%s%s", oc->method, dr_oc_names[outcome],
            oid ? ", order " : "", oid ? oid : "");
        if (oc->cod != 0) {
            dr_cod_outcome(d, oc->cod, place && outcome == OC_PLACED && open
                ? oid : NULL);
        }
        dr_oc_unlink(d, oc);
        return;
    }
    xg_client_log(XG_LOG_INFO, dc->c, "order outcome of %s %s: %s%s%s",
        oc->method, oc->client_id, dr_oc_names[outcome],
        oid ? ", order " : "", oid ? oid : "");
    if (place && outcome == OC_PLACED && open && oid != NULL) {
        xg_registry_order_add(dc->rc, oid);     /* its COD owns it */
    }
    if (dr_outcome_wanted(dc)) {
        json_t *ms = json_string(oc->method);
        char *m = json_dumps(ms, JSON_COMPACT | JSON_ENCODE_ANY);
        char *o = order ? json_dumps(order, JSON_COMPACT
                                     | JSON_REAL_PRECISION(15)) : NULL;
        size_t n;
        char *s;

        json_decref(ms);
        n = strlen(oc->client_id) + strlen(m) + (o ? strlen(o) : 0) + 160;
        s = xg_malloc(n);
        snprintf(s, n, "{\"jsonrpc\":\"2.0\",\"method\":\"exgate/"
            "order_outcome\",\"params\":{\"request_id\":%s,\"method\":%s,"
            "\"outcome\":\"%s\"%s%s}}", oc->client_id, m,
            dr_oc_names[outcome], o ? ",\"order\":" : "", o ? o : "");
        xg_client_send(dc->c, s, strlen(s));
        d->outcome_notices++;
        free(s);
        free(m);
        free(o);
    }
    dr_oc_unlink(d, oc);
}

/*
 * Q (DC's request, or a request of the client that left with the
 * cancel-on-disconnect COD when DC is NULL) was lost with the connection
 * after it reached it: a lookup starts when its outcome is wanted.
 * Returns 1 when it started (then it holds COD's reference), 0 when
 * there is nothing to look up. Q stays the caller's.
 */
int
dr_outcome_lost(struct dr *d, struct dr_client *dc, struct xg_reg_req *q,
    uint64_t cod)
{
    struct dr_outcome *oc;
    json_t *req, *params;
    const char *m = q->method;

    if (!dr_outcome_method(m)
        || (dc != NULL && !(dr_outcome_wanted(dc) || dc->cod))
        || (dc == NULL && cod == 0)) {
        return 0;
    }
    req = json_loadb(q->text, q->len, 0, NULL);
    params = json_object_get(req, "params");
    if (!json_is_object(params)) {
        json_decref(req);
        return 0;
    }
    oc = xg_calloc(1, sizeof(*oc));
    oc->d = d;
    oc->id = ++d->outcome_last_id;
    oc->dc = dc;
    oc->cod = dc == NULL ? cod : 0;
    oc->client_id = xg_strdup(q->client_id ? q->client_id : "null");
    oc->method = xg_strdup(m);
    oc->params = json_incref(params);
    json_decref(req);
    oc->next = d->outcomes;
    if (d->outcomes != NULL) {
        d->outcomes->prev = oc;
    }
    d->outcomes = oc;
    if (dr_is_order_place(m) && strcmp(m, "private/close_position") != 0) {
        oc->step = OC_OPEN;
    } else if (strcmp(m, "private/edit") == 0
               || strcmp(m, "private/cancel") == 0) {
        oc->step = OC_STATE;
    } else if (strcmp(m, "private/edit_by_label") == 0) {
        oc->step = OC_LABEL_OPEN;
    } else if (strcmp(m, "private/close_position") == 0) {
        oc->step = OC_POSITION;
    } else {
        oc->step = OC_LEFT;
    }
    if ((oc->step == OC_OPEN || oc->step == OC_LABEL_OPEN)
        && !json_is_string(json_object_get(params, "label"))) {
        /* no label to find it by (it asked after sending it) */
        if (dc != NULL) {
            xg_client_log(XG_LOG_WARN, dc->c, "%s %s lost without a label: "
                "its outcome cannot be looked up", m, oc->client_id);
        }
        dr_oc_done(d, oc, OC_UNKNOWN, NULL);
        return 1;
    }
    d->outcome_lookups++;
    dr_oc_send(d, oc);
    return 1;
}

/*
 * The answer to lookup Q (RESULT or ERROR; both absent: it timed out):
 * the next step, or the outcome.
 */
void
dr_outcome_answer(struct dr *d, struct xg_reg_req *q,
    const struct xg_jspan *result, const struct xg_jspan *error)
{
    struct dr_outcome *oc = dr_oc_find(d, q->tag);
    const char *label, *st;
    json_t *r, *o;

    if (oc == NULL) {
        return;     /* its client left without cancel-on-disconnect */
    }
    r = result->p != NULL ? json_loadb(result->p, result->len, 0, NULL)
                          : NULL;
    if (r == NULL && dr_oc_retry(d, oc, q, error)) {
        return;
    }
    if (r == NULL) {
        if (oc->dc != NULL) {
            xg_client_log(XG_LOG_WARN, oc->dc->c, "order outcome of %s %s: "
                "%s failed: %.*s", oc->method, oc->client_id, q->method,
                error->p ? (int) (error->len > 200 ? 200 : error->len) : 9,
                error->p ? error->p : "timed out");
        }
        dr_oc_done(d, oc, OC_UNKNOWN, NULL);
        return;
    }
    label = json_string_value(json_object_get(oc->params, "label"));
    switch (oc->step) {
    case OC_OPEN:
        if ((o = dr_outcome_find_label(r, label)) != NULL) {
            dr_oc_done(d, oc, OC_PLACED, o);
            break;
        }
        oc->step = OC_HISTORY;
        dr_oc_send(d, oc);
        break;
    case OC_HISTORY:
        o = dr_outcome_find_label(r, label);
        dr_oc_done(d, oc, o != NULL ? OC_PLACED : OC_NOT_PLACED, o);
        break;
    case OC_STATE:
        if (!json_is_object(r)) {
            dr_oc_done(d, oc, OC_UNKNOWN, NULL);
            break;
        }
        st = json_string_value(json_object_get(r, "order_state"));
        if (strcmp(oc->method, "private/cancel") == 0) {
            dr_oc_done(d, oc, st != NULL && strcmp(st, "cancelled") == 0
                ? OC_CANCELLED : OC_NOT_PLACED, r);
        } else {
            dr_oc_done(d, oc, dr_outcome_edit_applied(r, oc->params)
                ? OC_PLACED : OC_NOT_PLACED, r);
        }
        break;
    case OC_LABEL_OPEN:
        o = dr_outcome_find_label(r, label);
        dr_oc_done(d, oc, o != NULL && dr_outcome_edit_applied(o, oc->params)
            ? OC_PLACED : OC_NOT_PLACED, o);
        break;
    case OC_POSITION:
        dr_oc_done(d, oc, json_number_value(json_object_get(r, "size")) == 0
            ? OC_PLACED : OC_NOT_PLACED, NULL);
        break;
    default:
        dr_oc_done(d, oc, json_is_array(r) && json_array_size(r) == 0
            ? OC_CANCELLED : OC_NOT_PLACED, NULL);
        break;
    }
    json_decref(r);
}

/*
 * DC leaves: with COD (the id of the dr_cod taking its orders, 0: none)
 * its lookups go on for COD, else they are dropped. Returns the number
 * COD took (each holds one reference on it).
 */
unsigned
dr_outcome_gone(struct dr *d, struct dr_client *dc, uint64_t cod)
{
    struct dr_outcome *oc, *next;
    unsigned n = 0;

    for (oc = d->outcomes; oc != NULL; oc = next) {
        next = oc->next;
        if (oc->dc != dc) {
            continue;
        }
        if (cod != 0) {
            oc->dc = NULL;
            oc->cod = cod;
            n++;
        } else {
            dr_oc_unlink(d, oc);
        }
    }
    return n;
}

/* Frees every lookup (the instance goes). */
void
dr_outcome_free_all(struct dr *d)
{
    while (d->outcomes != NULL) {
        dr_oc_unlink(d, d->outcomes);
    }
}

/* /status: the lookups and their outcomes. */
void
dr_outcome_status(struct dr *d, json_t *obj)
{
    struct dr_outcome *oc;
    json_int_t pending = 0;
    json_t *by = json_object();
    int i;

    for (oc = d->outcomes; oc != NULL; oc = oc->next) {
        pending++;
    }
    for (i = 0; i < 4; i++) {
        json_object_set_new(by, dr_oc_names[i],
            json_integer((json_int_t) d->outcomes_by[i]));
    }
    json_object_set_new(obj, "order_outcome_lookups",
        json_integer((json_int_t) d->outcome_lookups));
    json_object_set_new(obj, "order_outcome_pending", json_integer(pending));
    json_object_set_new(obj, "order_outcome_notices",
        json_integer((json_int_t) d->outcome_notices));
    json_object_set_new(obj, "order_outcomes", by);
}
