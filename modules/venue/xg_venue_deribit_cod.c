/*
 * xg_venue_deribit_cod.c: the Deribit venue's per-client
 * cancel-on-disconnect (DESIGN.md §3a): the orders each client placed,
 * checked against the exchange, cancelled when it leaves.
 */
#include "xg_venue_deribit_int.h"

/* ---- a client's orders: its emulated cancel-on-disconnect ---- */

/*
 * Each client holds the ids of the orders it placed: its buy, sell and
 * close_position answers showing the order open or untriggered. Its own
 * edit or cancel answer showing one closed forgets it; an edit never
 * adopts an order the client did not place. Orders also close behind its
 * back (a fill, another client's cancel, any cancel_all*), so once the set
 * reaches check_at (DR_COD_CHECK_MIN, then twice what the last check
 * kept) it is checked against private/get_open_orders and what is no
 * longer open is forgotten: the set stays within about twice the client's
 * open orders.
 *
 * When a client with cancel-on-disconnect on leaves, a dr_cod takes over
 * what it left: its ids are checked with one private/get_open_orders
 * (queued with no deadline and outside queue_limit while the upstream is
 * not ready, replayed if the connection drops) and only those the
 * exchange still has open get a private/cancel. Its order requests still
 * in flight become K_COD_ORDER: an order their answer shows open is
 * cancelled then. One order gets at most one cancel; a cancel whose
 * answer is lost with the connection puts its order back to be checked
 * again. Another client's order is never touched. The dr_cod is freed
 * with its last request.
 */


int
dr_is_order_place(const char *method)
{
    return method != NULL && (strcmp(method, "private/buy") == 0
                              || strcmp(method, "private/sell") == 0
                              || strcmp(method, "private/close_position")
                                 == 0);
}

int
dr_is_order_edit(const char *method)
{
    return method != NULL && (strcmp(method, "private/edit") == 0
                              || strcmp(method, "private/edit_by_label")
                                 == 0);
}

/*
 * The order of a buy/sell/edit answer ({"order":{...},"trades":[...]}) or
 * of a cancel answer (the order itself): its id, or NULL; *OPEN is 1 when
 * it is open or untriggered.
 */
static const char *
dr_order_of(json_t *r, int *open)
{
    json_t *o = json_object_get(r, "order");
    const char *st;

    if (o == NULL) {
        o = r;
    }
    st = json_string_value(json_object_get(o, "order_state"));
    *open = st != NULL && (strcmp(st, "open") == 0
                           || strcmp(st, "untriggered") == 0);
    return json_string_value(json_object_get(o, "order_id"));
}

/*
 * The orders of a get_open_orders result: order_id -> the trigger order
 * that created it (trigger_order_id, as a string) or true; NULL if the
 * result is not an array.
 */
static json_t *
dr_open_set(const struct xg_jspan *result)
{
    json_t *r, *set, *o;
    size_t i;

    if (result->p == NULL) {
        return NULL;
    }
    r = json_loadb(result->p, result->len, 0, NULL);
    if (!json_is_array(r)) {
        json_decref(r);
        return NULL;
    }
    set = json_object();
    json_array_foreach(r, i, o) {
        const char *id = json_string_value(json_object_get(o, "order_id"));
        json_t *trig = json_object_get(o, "trigger_order_id");

        if (id != NULL) {
            json_object_set(set, id, json_is_string(trig) ? trig
                                                          : json_true());
        }
    }
    json_decref(r);
    return set;
}

/* DC's tracked set reached check_at: check it (while the upstream is up). */
static void
dr_tracked_check(struct dr *d, struct dr_client *dc)
{
    size_t i, n = dc->rc->norders;
    struct xg_reg_req *q;

    if (n < (dc->check_at ? dc->check_at : DR_COD_CHECK_MIN)
        || xg_session_state(d->s) != XG_SESSION_READY) {
        return;
    }
    xg_client_log(XG_LOG_INFO, dc->c, "checking %zu tracked orders against the "
        "exchange's open orders", n);
    q = dr_internal(K_ORDERS_CHECK, "private/get_open_orders", NULL);
    q->client = dc->rc;
    q->chan = xg_calloc(n, sizeof(char *));
    q->nchan = (int) n;
    for (i = 0; i < n; i++) {
        q->chan[i] = xg_strdup(dc->rc->orders[i]);
    }
    dc->check_at = 2 * n;
    d->cod_checks++;
    dr_send(d, q);
}

/* DC's own answer to METHOD: the orders it placed, or closed. */
void
dr_tracked_answer(struct dr *d, struct dr_client *dc, const char *method,
    const struct xg_jspan *result)
{
    int place = dr_is_order_place(method), open, added = 0;
    const char *oid;
    json_t *r;

    if (result->p == NULL || !(place || dr_is_order_edit(method)
                               || (method != NULL
                                   && strcmp(method, "private/cancel") == 0)))
    {
        return;
    }
    r = json_loadb(result->p, result->len, 0, NULL);
    oid = dr_order_of(r, &open);
    if (oid != NULL) {
        if (open && place) {
            added = xg_registry_order_add(dc->rc, oid);
        } else if (!open) {
            xg_registry_order_remove(dc->rc, oid);
        }
    }
    json_decref(r);
    if (added) {
        dr_tracked_check(d, dc);
    }
}

/* The check of a connected client's set: forget what is no longer open. */
void
dr_on_tracked_check(struct dr *d, struct xg_reg_req *q,
    const struct xg_jspan *result, const struct xg_jspan *error)
{
    struct dr_client *dc = q->client ? q->client->owner : NULL;
    size_t gone = 0;
    json_t *open, *snap, *v;
    const char *oid;
    int i;

    if (dc == NULL) {
        return;     /* it left: its cancel-on-disconnect checks anew */
    }
    if ((open = dr_open_set(result)) == NULL) {
        xg_client_log(XG_LOG_WARN, dc->c, "the check of its tracked orders "
            "failed: %.*s",
            error->p ? (int) (error->len > 200 ? 200 : error->len) : 9,
            error->p ? error->p : "no result");
        return;
    }
    snap = json_object();
    for (i = 0; i < q->nchan; i++) {
        json_object_set_new(snap, q->chan[i], json_true());
        if (json_object_get(open, q->chan[i]) == NULL) {
            gone += (size_t) xg_registry_order_remove(dc->rc, q->chan[i]);
        }
    }
    json_object_foreach(open, oid, v) {
        /* a trigger order of the client fired: the order it created is
           the client's too */
        if (json_is_string(v)
            && json_object_get(snap, json_string_value(v)) != NULL) {
            xg_registry_order_add(dc->rc, oid);
        }
    }
    json_decref(snap);
    json_decref(open);
    dc->check_at = 2 * dc->rc->norders > DR_COD_CHECK_MIN
                   ? 2 * dc->rc->norders : DR_COD_CHECK_MIN;
    xg_client_log(XG_LOG_INFO, dc->c, "%zu of %d tracked orders no longer "
        "open, forgotten; %zu tracked", gone, q->nchan, dc->rc->norders);
}

static struct dr_cod *
dr_cod_find(struct dr *d, uint64_t id)
{
    struct dr_cod *cod;

    for (cod = d->cods; cod != NULL; cod = cod->next) {
        if (cod->id == id) {
            return cod;
        }
    }
    return NULL;
}

void
dr_cod_free(struct dr_cod *cod)
{
    json_decref(cod->owned);
    json_decref(cod->check);
    json_decref(cod->cancelled);
    free(cod->name);
    free(cod->reason);
    free(cod);
}

/* One of COD's requests is done: the last one frees it. */
static void
dr_cod_unref(struct dr *d, struct dr_cod *cod)
{
    if (--cod->refs > 0) {
        return;
    }
    if (cod->prev != NULL) {
        cod->prev->next = cod->next;
    } else {
        d->cods = cod->next;
    }
    if (cod->next != NULL) {
        cod->next->prev = cod->prev;
    }
    xg_upstream_log(XG_LOG_INFO, d->up, "%s: cancel-on-disconnect (%s) done: "
        "%zu orders cancelled", cod->name, cod->reason,
        json_object_size(cod->cancelled));
    dr_cod_free(cod);
}

/* A private/cancel for OID, unless one was sent already. */
static void
dr_cod_cancel(struct dr *d, struct dr_cod *cod, const char *oid)
{
    struct xg_reg_req *q;

    if (json_object_get(cod->cancelled, oid) != NULL) {
        return;
    }
    json_object_set_new(cod->cancelled, oid, json_true());
    xg_upstream_log(XG_LOG_WARN, d->up, "%s: cancel-on-disconnect (%s): "
        "cancelling order %s", cod->name, cod->reason, oid);
    q = dr_internal(K_CANCEL, "private/cancel",
        json_pack("{s:s}", "order_id", oid));
    q->client_id = xg_strdup(oid);
    q->tag = cod->id;
    cod->refs++;
    d->cod_cancels++;
    dr_submit(d, q, NULL);
}

/* Checks COD's ids with one get_open_orders, unless one is on its way. */
void
dr_cod_check(struct dr *d, struct dr_cod *cod)
{
    struct xg_reg_req *q;

    if (cod->checking || json_object_size(cod->check) == 0) {
        return;
    }
    xg_upstream_log(XG_LOG_INFO, d->up, "%s: cancel-on-disconnect (%s): "
        "checking %zu orders against the exchange's open orders", cod->name,
        cod->reason, json_object_size(cod->check));
    q = dr_internal(K_COD_CHECK, "private/get_open_orders", NULL);
    q->tag = cod->id;
    cod->checking = 1;
    cod->refs++;
    d->cod_checks++;
    dr_submit(d, q, NULL);
}

/* The check's answer: cancel what is still open (all of it if refused). */
void
dr_on_cod_check(struct dr *d, struct xg_reg_req *q,
    const struct xg_jspan *result, const struct xg_jspan *error)
{
    struct dr_cod *cod = dr_cod_find(d, q->tag);
    json_t *open, *check, *v;
    const char *oid;
    size_t nopen = 0;

    if (cod == NULL) {
        return;
    }
    cod->checking = 0;
    check = cod->check;
    cod->check = json_object();
    if ((open = dr_open_set(result)) == NULL) {
        xg_upstream_log(XG_LOG_WARN, d->up, "%s: cancel-on-disconnect: "
            "private/get_open_orders failed (%.*s): cancelling its %zu orders "
            "unchecked", cod->name,
            error->p ? (int) (error->len > 200 ? 200 : error->len) : 9,
            error->p ? error->p : "no result", json_object_size(check));
    }
    json_object_foreach(check, oid, v) {
        if (open == NULL || json_object_get(open, oid) != NULL) {
            dr_cod_cancel(d, cod, oid);
            nopen++;
        }
    }
    json_object_foreach(open, oid, v) {
        /* created by one of its trigger orders: its own too (NULL open:
           no iteration) */
        if (json_is_string(v)
            && json_object_get(cod->owned, json_string_value(v)) != NULL
            && json_object_get(cod->cancelled, oid) == NULL) {
            json_object_set_new(cod->owned, oid, json_true());
            dr_cod_cancel(d, cod, oid);
            nopen++;
        }
    }
    if (open != NULL) {
        xg_upstream_log(XG_LOG_INFO, d->up, "%s: cancel-on-disconnect: %zu of "
            "its %zu orders still open", cod->name, nopen,
            json_object_size(check));
    }
    json_decref(open);
    json_decref(check);
    dr_cod_unref(d, cod);
}

/* An order request of a client that left: cancel the order it opened. */
void
dr_on_cod_order(struct dr *d, struct xg_reg_req *q,
    const struct xg_jspan *result)
{
    struct dr_cod *cod = dr_cod_find(d, q->tag);
    const char *oid;
    json_t *r;
    int open;

    if (cod == NULL) {
        return;
    }
    if (result->p != NULL) {
        r = json_loadb(result->p, result->len, 0, NULL);
        oid = dr_order_of(r, &open);
        if (oid != NULL && open) {
            if (dr_is_order_place(q->method)) {
                json_object_set_new(cod->owned, oid, json_true());
            }
            if (json_object_get(cod->owned, oid) != NULL) {
                xg_upstream_log(XG_LOG_INFO, d->up, "%s: cancel-on-disconnect: "
                    "%s answered after the client left: order %s is open",
                    cod->name, q->method, oid);
                dr_cod_cancel(d, cod, oid);
            }
        }
        json_decref(r);
    }
    dr_cod_unref(d, cod);
}

void
dr_on_cod_cancel(struct dr *d, struct xg_reg_req *q,
    const struct xg_jspan *error)
{
    struct dr_cod *cod = dr_cod_find(d, q->tag);
    const char *oid = q->client_id ? q->client_id : "?";

    if (error->p != NULL) {
        xg_upstream_log(XG_LOG_WARN, d->up, "cancel-on-disconnect: %s refused: "
            "%.*s", oid, (int) (error->len > 200 ? 200 : error->len), error->p);
    } else {
        xg_upstream_log(XG_LOG_INFO, d->up, "cancel-on-disconnect: order %s "
            "cancelled", oid);
    }
    if (cod != NULL) {
        dr_cod_unref(d, cod);
    }
}

/*
 * The connection dropped with Q in flight. A COD cancel puts its order
 * back to be checked (it may have been cancelled: it is not sent again
 * blind); a COD order request's outcome is unknown, and so is the id of
 * the order it may have placed. Returns 1 when Q was one of them (freed),
 * 0 otherwise.
 */
int
dr_cod_lost(struct dr *d, struct xg_reg_req *q)
{
    struct dr_cod *cod;

    if (q->kind != K_CANCEL && q->kind != K_COD_ORDER) {
        return 0;
    }
    cod = dr_cod_find(d, q->tag);
    if (cod != NULL && q->kind == K_CANCEL && q->client_id != NULL) {
        json_object_del(cod->cancelled, q->client_id);
        json_object_set_new(cod->check, q->client_id, json_true());
        dr_cod_check(d, cod);
    } else if (cod != NULL) {
        xg_upstream_log(XG_LOG_INFO, d->up, "%s: cancel-on-disconnect: %s in "
            "flight when the connection dropped", cod->name, q->method);
        if (dr_outcome_lost(d, NULL, q, cod->id)) {
            /* looked up after the restore: the lookup holds COD's
               reference (dr_cod_outcome) */
            xg_registry_req_free(q);
            return 1;
        }
        xg_upstream_log(XG_LOG_WARN, d->up, "%s: cancel-on-disconnect: the "
            "order %s may have placed is unknown and is not cancelled",
            cod->name, q->method);
    }
    xg_registry_req_free(q);
    if (cod != NULL) {
        dr_cod_unref(d, cod);
    }
    return 1;
}

/*
 * A lookup of the client that left with COD_ID settled
 * (xg_venue_deribit_outcome.c): OPEN_OID, when not NULL, is an order its
 * lost buy or sell placed that is open: its own, cancelled. Drops the
 * lookup's reference.
 */
void
dr_cod_outcome(struct dr *d, uint64_t cod_id, const char *open_oid)
{
    struct dr_cod *cod = dr_cod_find(d, cod_id);

    if (cod == NULL) {
        return;
    }
    if (open_oid != NULL) {
        json_object_set_new(cod->owned, open_oid, json_true());
        xg_upstream_log(XG_LOG_INFO, d->up, "%s: cancel-on-disconnect: "
            "order %s, placed by a request whose answer was lost, is open",
            cod->name, open_oid);
        dr_cod_cancel(d, cod, open_oid);
    }
    dr_cod_unref(d, cod);
}

/* ---- the upstream's own cancel-on-disconnect across a rotation ---- */

/*
 * C, the old primary, retires after a rotation (xg_session.h): with
 * cancel_on_disconnect on, its close would cancel every order placed
 * through it, so it is switched off on C first; the session retires C
 * once the answer (or the timeout) is in.
 */
void
dr_retiring(void *p, struct xg_conn *c)
{
    struct dr *d = p;

    if (!d->cf->cod) {
        return;
    }
    xg_conn_log(XG_LOG_INFO, c, "retiring: "
        "private/disable_cancel_on_disconnect before the close");
    dr_send_on(d, dr_internal(K_COD_OFF,
        "private/disable_cancel_on_disconnect",
        json_pack("{s:s}", "scope", "connection")), c);
}

/* The answer to the above on the retiring connection. */
void
dr_on_cod_off(struct dr *d, struct xg_reg_req *q, const struct xg_jspan *error)
{
    struct xg_conn *c = q->conn;    /* the answer came on it: still open */

    if (error->p != NULL) {
        d->cod_off_failed++;
        xg_conn_log(XG_LOG_WARN, c, "private/disable_cancel_on_disconnect "
            "refused: %.*s; its close may cancel the orders placed through "
            "it", (int) (error->len > 200 ? 200 : error->len), error->p);
        return;
    }
    d->cod_offs++;
    xg_conn_log(XG_LOG_INFO, c, "cancel-on-disconnect disabled before the "
        "close");
}
