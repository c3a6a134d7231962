/*
 * xg_venue_deribit.c: the Deribit JSON-RPC 2.0 protocol module.
 *
 * Upstream side (layer 2, state recovery): on every new connection it
 * replays the session in order (auth -> set_heartbeat ->
 * enable_cancel_on_disconnect -> subscribe batches -> queued requests),
 * answers the exchange's test_request itself, refreshes the token before
 * it expires, and routes every answer back to the client that asked.
 *
 * Client side (DESIGN.md §3a, per client): public/auth against the conf's
 * client credentials with a local token; set_heartbeat / test emulated
 * per client; subscriptions refcounted in the registry so that one
 * upstream subscription serves every client; private/enable_cancel_on_
 * disconnect emulated per client; anything else forwarded under a fresh upstream id,
 * the answer carrying the client's own id back byte for byte.
 *
 * Notifications are routed by a byte scan for their channel and written
 * to every subscriber by reference (xg_msg): no jansson tree, no copy per
 * client.
 */
#include "xg_venue_deribit_int.h"

/*
 * The methods whose outcome is harmless to repeat: replayed after a
 * reconnect when their answer was lost with the connection. Everything
 * else in flight gets the "outcome unknown" error and is never replayed.
 */
static const char *const dr_replay_prefixes[] = {
    "public/", "private/get_", NULL
};
static const char *const dr_replay_except[] = {
    "public/auth", "public/exchange_token", "public/fork_token", NULL
};

static int
dr_is_replayable(const char *method)
{
    int i;

    for (i = 0; dr_replay_except[i] != NULL; i++) {
        if (strcmp(method, dr_replay_except[i]) == 0) {
            return 0;
        }
    }
    for (i = 0; dr_replay_prefixes[i] != NULL; i++) {
        if (strncmp(method, dr_replay_prefixes[i],
                strlen(dr_replay_prefixes[i])) == 0) {
            return 1;
        }
    }
    return 0;
}

static int dr_chan_recovers(const struct xg_reg_channel *ch);

/* ---- small helpers ---- */

static char *
dr_strndup_span(const struct xg_jspan *s)
{
    return xg_strndup(s->p, s->len);
}

/* ---- replies to one client ---- */

static void
dr_client_send_str(struct dr_client *dc, char *s)
{
    xg_client_send(dc->c, s, strlen(s));
    free(s);
}

/* {"jsonrpc":"2.0","id":ID,"result":RESULT,...} with ID as raw text. */
static void
dr_reply(struct dr_client *dc, const char *id, const char *result)
{
    uint64_t now = xg_wall_us();
    size_t n = strlen(id) + strlen(result) + 160;
    char *s = xg_malloc(n);

    snprintf(s, n, "{\"jsonrpc\":\"2.0\",\"id\":%s,\"result\":%s,"
        "\"usIn\":%llu,\"usOut\":%llu,\"usDiff\":0,\"testnet\":%s}", id,
        result, (unsigned long long) now, (unsigned long long) now,
        dc->d->testnet ? "true" : "false");
    dr_client_send_str(dc, s);
}

void
dr_reply_json(struct dr_client *dc, const char *id, json_t *result)
{
    char *r = json_dumps(result, JSON_COMPACT | JSON_ENCODE_ANY);

    dr_reply(dc, id, r ? r : "null");
    free(r);
    json_decref(result);
}

/*
 * The text of a JSON-RPC error of D (malloc'd): ID NULL -> "id":null;
 * REASON, if any, in data.reason.
 */
char *
dr_error_text(const struct dr *d, const char *id, int code,
    const char *message, const char *reason)
{
    json_t *err = json_pack("{s:i, s:s}", "code", code, "message", message);
    char *e, *s;
    size_t n;

    if (reason != NULL) {
        json_object_set_new(err, "data", json_pack("{s:s}", "reason",
            reason));
    }
    e = json_dumps(err, JSON_COMPACT);
    json_decref(err);
    n = (id ? strlen(id) : 4) + strlen(e) + 160;
    s = xg_malloc(n);
    snprintf(s, n, "{\"jsonrpc\":\"2.0\",\"id\":%s,\"error\":%s,"
        "\"usIn\":%llu,\"usOut\":%llu,\"usDiff\":0,\"testnet\":%s}",
        id ? id : "null", e, (unsigned long long) xg_wall_us(),
        (unsigned long long) xg_wall_us(), d->testnet ? "true" : "false");
    free(e);
    return s;
}

/* A JSON-RPC error to DC (see dr_error_text()). */
void
dr_error(struct dr_client *dc, const char *id, int code, const char *message,
    const char *reason)
{
    xg_client_count_error(dc->c);
    dr_client_send_str(dc, dr_error_text(dc->d, id, code, message, reason));
}

/* ---- upstream sending ---- */


/*
 * The tick: the upstream heartbeat check, once a second (requests, the
 * queue, lingering, unconfirmed and stale channels have timers of their
 * own in the session, a continuity fetch's retry in its tracker).
 */
static void
dr_tick_arm(struct dr *d)
{
    struct timeval tv = { DR_TICK_MS / 1000, 0 };

    xg_timer_add(d->ev_tick, &tv);
}

/*
 * Puts Q in flight under a fresh id and sends it (the session's request
 * table). A client's request and a continuity fetch wait request_timeout
 * at most. Takes ownership of Q.
 */
static int
dr_timed(const struct xg_reg_req *q)
{
    return q->kind == K_CLIENT || q->kind == K_BACKFILL || q->kind == K_ORDERS
           || q->kind == K_CTRADES || q->kind == K_COD_OFF
           || q->kind == K_OUTCOME;
}

int
dr_send(struct dr *d, struct xg_reg_req *q)
{
    return dr_send_on(d, q, xg_session_conn(d->s));
}

/* The same on connection C (a restore step, a heartbeat answer). */
int
dr_send_on(struct dr *d, struct xg_reg_req *q, struct xg_conn *c)
{
    q->timed = dr_timed(q);
    return xg_session_send_on(d->s, q, c);
}

/* Builds an internal request {"jsonrpc":"2.0","id":0,"method":M,"params":P}. */
struct xg_reg_req *
dr_internal(int kind, const char *method, json_t *params)
{
    json_t *o = json_pack("{s:s, s:i, s:s, s:o}", "jsonrpc", "2.0", "id", 0,
        "method", method, "params", params ? params : json_object());
    char *t = json_dumps(o, JSON_COMPACT);
    struct xg_reg_req *q = xg_registry_req_new(kind, NULL, NULL, method, t,
        strlen(t));

    free(t);
    json_decref(o);
    return q;
}

/*
 * Forwards or queues Q (takes ownership). Over queue_limit the client
 * gets "upstream unavailable" at once.
 */
void
dr_submit(struct dr *d, struct xg_reg_req *q, struct dr_client *dc)
{
    /* a client's cancel-on-disconnect waits for the exchange however long
       it takes: its orders must not outlive it */
    q->nolimit = q->kind == K_CANCEL || q->kind == K_COD_CHECK
                 || q->kind == K_OUTCOME;
    q->timed = dr_timed(q);
    if (xg_session_submit(d->s, q) == XG_OK) {
        return;
    }
    if (dc != NULL) {
        d->requests_rejected++;
        dr_error(dc, q->client_id, 13028, "upstream unavailable",
            xg_session_state(d->s) == XG_SESSION_READY
            ? "the request queue is full (waiting for the request budget)"
            : "the exchange connection is down and the request queue is "
              "full");
    }
    xg_registry_req_free(q);
}

/* {"jsonrpc":"2.0","id":ID,"error":ERROR}, both raw JSON text (an
   exchange's error object, passed on). */
void
dr_error_raw(struct dr_client *dc, const char *id, const char *error)
{
    size_t n = strlen(id) + strlen(error) + 64;
    char *s = xg_malloc(n);

    snprintf(s, n, "{\"jsonrpc\":\"2.0\",\"id\":%s,\"error\":%s}", id, error);
    xg_client_count_error(dc->c);
    dr_client_send_str(dc, s);
}

/* Answers a complete subscribe request and frees it. */
static void
dr_subreq_answer(struct dr *d, struct xg_reg_subreq *sr)
{
    struct dr_client *dc = sr->client ? sr->client->owner : NULL;

    if (dc != NULL && dr_acct_split_answer(dc, sr)) {
        dc = NULL;      /* a part: answered with the other part */
    }
    if (dc != NULL) {
        if (sr->error != NULL) {
            dr_error_raw(dc, sr->client_id, sr->error);
        } else {
            json_t *arr = json_array();
            int i;

            for (i = 0; i < sr->nchan; i++) {
                if (sr->status[i] == 1) {
                    json_array_append_new(arr, json_string(sr->chan[i]));
                }
            }
            dr_reply_json(dc, sr->client_id, arr);
        }
    }
    xg_registry_subreq_free(d->reg, sr);
}

/* The session confirmed CH (HOW): trackers, and a gap notice for a
   channel whose gap nothing repairs. */
static void
dr_confirmed(void *p, struct xg_reg_channel *ch, enum xg_confirm how,
    uint64_t now)
{
    struct dr *d = p;

    dr_track_confirmed(d, ch);      /* tracked from the start */
    if (how == XG_CONFIRM_RETRIED && !dr_chan_recovers(ch)) {
        dr_gap_notice(d, ch, now - ch->stale_from_ms,
            "refused on resubscribe");
    } else if (how == XG_CONFIRM_RESTORED && !dr_chan_recovers(ch)
               && ch->last_data_ms != 0) {
        /* restored after a reconnect: what it carried meanwhile is lost */
        dr_gap_notice(d, ch, now - ch->last_data_ms, "upstream reconnect");
    }
}
/* ---- upstream: restore ---- */

static void
dr_refresh_schedule(struct dr *d, json_t *result)
{
    json_t *exp = json_object_get(result, "expires_in");
    const char *rt = json_string_value(json_object_get(result,
        "refresh_token"));
    struct timeval tv;
    uint64_t ms;

    if (rt != NULL) {
        free(d->refresh_token);
        d->refresh_token = xg_strdup(rt);
    }
    if (!json_is_integer(exp) || json_integer_value(exp) <= 0) {
        return;
    }
    /* refresh at 80% of the lifetime */
    ms = (uint64_t) json_integer_value(exp) * 800;
    if (ms > (uint64_t) 30 * 24 * 3600 * 1000) {
        ms = (uint64_t) 30 * 24 * 3600 * 1000;
    }
    tv.tv_sec = (time_t) (ms / 1000);
    tv.tv_usec = (suseconds_t) ((ms % 1000) * 1000);
    xg_timer_add(d->ev_refresh, &tv);
    xg_upstream_log(XG_LOG_INFO, d->up, "token valid for %lld s, refresh in "
        "%llu ms", (long long) json_integer_value(exp),
        (unsigned long long) ms);
}

static json_t *
dr_auth_params(struct dr *d)
{
    const struct dr_conf *cf = d->cf;
    json_t *p;

    if (cf->auth == DR_AUTH_SIGNATURE) {
        char ts[24], nonce[17], sig[2 * EVP_MAX_MD_SIZE + 1];
        json_int_t ms = (json_int_t) (xg_wall_us() / 1000);

        snprintf(ts, sizeof(ts), "%lld", (long long) ms);
        dr_random_hex(nonce, 8);
        dr_signature(cf->auth_secret, ts, nonce, "", sig);
        p = json_pack("{s:s, s:s, s:I, s:s, s:s, s:s}",
            "grant_type", "client_signature", "client_id", cf->auth_id,
            "timestamp", ms,
            "nonce", nonce, "data", "", "signature", sig);
    } else {
        p = json_pack("{s:s, s:s, s:s}", "grant_type", "client_credentials",
            "client_id", cf->auth_id, "client_secret", cf->auth_secret);
    }
    if (cf->auth_scope != NULL) {
        json_object_set_new(p, "scope", json_string(cf->auth_scope));
    }
    return p;
}

/*
 * The session's restore steps on a new connection, in order: public/auth
 * (connection-scope tokens die with their socket), public/set_heartbeat,
 * private/enable_cancel_on_disconnect; then the session subscribes.
 */
static int
dr_restore_step(void *p, struct xg_conn *c, int step)
{
    struct dr *d = p;
    const struct dr_conf *cf = d->cf;

    switch (step) {
    case 0:
        if (cf->auth == DR_AUTH_NONE) {
            return XG_OK;
        }
        xg_conn_log(XG_LOG_INFO, c, "restore: public/auth (%s, scope "
            "%s)", cf->auth == DR_AUTH_SIGNATURE
            ? "client_signature" : "client_credentials",
            cf->auth_scope ? cf->auth_scope : "connection");
        dr_send_on(d, dr_internal(K_AUTH, "public/auth", dr_auth_params(d)),
            c);
        return XG_AGAIN;
    case 1:
        if (cf->heartbeat_ms == 0) {
            return XG_OK;
        }
        {
            json_int_t s = (json_int_t) ((cf->heartbeat_ms + 999) / 1000);

            xg_conn_log(XG_LOG_INFO, c, "restore: public/set_heartbeat "
                "%lld s", (long long) s);
            dr_send_on(d, dr_internal(K_HEARTBEAT, "public/set_heartbeat",
                json_pack("{s:I}", "interval", s)), c);
        }
        return XG_AGAIN;
    case 2:
        if (!cf->cod) {
            return XG_OK;
        }
        xg_conn_log(XG_LOG_INFO, c, "restore: "
            "private/enable_cancel_on_disconnect");
        dr_send_on(d, dr_internal(K_COD,
            "private/enable_cancel_on_disconnect",
            json_pack("{s:s}", "scope", "connection")), c);
        return XG_AGAIN;
    }
    return XG_DONE;
}
static void
dr_on_refresh(evutil_socket_t fd, short what, void *arg)
{
    struct dr *d = arg;

    if (xg_session_state(d->s) != XG_SESSION_READY) {
        return;     /* the next connection authenticates anew */
    }
    if (d->refresh_token != NULL) {
        xg_upstream_log(XG_LOG_INFO, d->up, "refreshing the token");
        dr_send(d, dr_internal(K_REFRESH, "public/auth",
            json_pack("{s:s, s:s}", "grant_type", "refresh_token",
                "refresh_token", d->refresh_token)));
    } else {
        dr_send(d, dr_internal(K_AUTH, "public/auth", dr_auth_params(d)));
    }
}

/* ---- upstream: messages ---- */

/* A client's forwarded request came back: its own id goes back in. */
static void
dr_on_client_answer(struct dr *d, struct xg_reg_req *q, const char *data,
    size_t len, const struct xg_jspan *id, const struct xg_jspan *result)
{
    struct dr_client *dc = q->client ? q->client->owner : NULL;
    char *out;
    size_t n;

    if (dc == NULL) {
        xg_session_log_req(XG_LOG_DEBUG, d->s, q, "answer to %s for a client "
            "that left", q->method);
        return;
    }
    dr_tracked_answer(d, dc, q->method, result);
    out = xg_jscan_splice(data, len, id, q->client_id, strlen(q->client_id),
        &n);
    xg_client_send(dc->c, out, n);
    free(out);
}

/* A restore step on C was refused: C fails (a rotation's C is retired,
   the primary serving on). */
static void
dr_fail(struct dr *d, struct xg_conn *c, const char *what,
    const struct xg_jspan *error)
{
    char reason[256];

    snprintf(reason, sizeof(reason), "%s refused: %.*s", what,
        error->p ? (int) (error->len > 180 ? 180 : error->len) : 7,
        error->p ? error->p : "no answer");
    if (c != NULL) {
        xg_conn_log(XG_LOG_ERROR, c, "%s", reason);
    } else {
        xg_upstream_log(XG_LOG_ERROR, d->up, "%s", reason);
    }
    if (c != NULL && xg_conn_role(c) == XG_CONN_ROTATING) {
        xg_upstream_retire(d->up, c, reason);
        return;
    }
    if (c == NULL || c == xg_session_conn(d->s)) {
        xg_upstream_fail(d->up, reason);
    }
}

static int
dr_answer(void *p, struct xg_reg_req *q, const char *data, size_t len,
    const struct xg_umsg *m)
{
    struct dr *d = p;
    const struct xg_jspan *id = &m->id, *result = &m->result;
    const struct xg_jspan *error = &m->error;
    json_t *r;

    switch (q->kind) {
    case K_CLIENT:
        d->requests_answered++;
        dr_on_client_answer(d, q, data, len, id, result);
        break;
    case K_AUTH:
    case K_REFRESH:
        if (error->p != NULL || result->p == NULL) {
            if (q->kind == K_REFRESH && xg_session_state(d->s) == XG_SESSION_READY) {
                xg_upstream_log(XG_LOG_WARN, d->up, "token refresh refused, "
                    "authenticating again");
                free(d->refresh_token);
                d->refresh_token = NULL;
                dr_send(d, dr_internal(K_AUTH, "public/auth",
                    dr_auth_params(d)));
                break;
            }
            dr_fail(d, q->conn, "public/auth", error);
            break;
        }
        r = json_loadb(result->p, result->len, 0, NULL);
        dr_refresh_schedule(d, r);
        json_decref(r);
        xg_session_step_done(d->s, q->conn);
        break;
    case K_HEARTBEAT:
    case K_COD:
        /* restore steps: a refusal fails the connection */
        if (error->p != NULL) {
            dr_fail(d, q->conn, q->method, error);
            break;
        }
        xg_session_step_done(d->s, q->conn);
        break;
    case K_COD_OFF:
        dr_on_cod_off(d, q, error);
        break;
    case K_TEST:
        break;
    case K_BACKFILL:
    case K_ORDERS:
    case K_CTRADES:
        if (error->p != NULL && dr_error_transient(error)
            && dr_fetch_retry(d, q, error->p, (int) error->len)) {
            return 1;   /* kept for the retry */
        }
        dr_fetch_answer(d, q, result, error);
        break;
    case K_CANCEL:
        dr_on_cod_cancel(d, q, error);
        break;
    case K_ORDERS_CHECK:
        dr_on_tracked_check(d, q, result, error);
        break;
    case K_COD_CHECK:
        dr_on_cod_check(d, q, result, error);
        break;
    case K_COD_ORDER:
        dr_on_cod_order(d, q, result);
        break;
    case K_OUTCOME:
        dr_outcome_answer(d, q, result, error);
        break;
    }
    return 0;
}

/* ---- continuity: gap notices, staleness, unconfirmed channels ---- */

/* 1 when a gap on CH is repaired (a delta book is bridged, a grouped book
   is a full image, instrument trades are backfilled). */
static int
dr_chan_recovers(const struct xg_reg_channel *ch)
{
    return xg_venue_deribit_book_kind(ch->name) != XG_BOOK_NOT_BOOK
           || ch->ext != NULL;
}

/*
 * Tells CH's subscribers that asked for it (exgate/notify_gaps) that the
 * channel had a gap that could not be repaired.
 */
void
dr_gap_notice(struct dr *d, struct xg_reg_channel *ch, uint64_t duration_ms,
    const char *reason)
{
    struct xg_msg *m = NULL;
    size_t i;

    xg_upstream_log(XG_LOG_INFO, d->up, "%s: unrepaired gap of %llu ms (%s)",
        ch->name, (unsigned long long) duration_ms, reason);
    d->unrepaired_gaps++;
    for (i = 0; i < ch->nsubs; i++) {
        struct dr_client *dc = ch->subs[i]->owner;

        if (ch->subs[i]->out == NULL || !dc->notify_gaps) {
            continue;
        }
        if (m == NULL) {
            json_t *o = json_pack("{s:s, s:s, s:{s:s, s:I, s:s}}", "jsonrpc",
                "2.0", "method", "exgate/gap", "params", "channel", ch->name,
                "duration_ms", (json_int_t) duration_ms, "reason", reason);
            char *t = json_dumps(o, JSON_COMPACT);

            json_decref(o);
            m = xg_msg_new(t, strlen(t));
            free(t);
        }
        xg_client_send_msg(dc->c, m);
        d->gap_notices++;
    }
    xg_msg_unref(m);
}

/* CH went stale (the session resubscribes it next): what its tracker
   needs, or a gap notice when nothing repairs it. */
static void
dr_stale(void *p, struct xg_reg_channel *ch, uint64_t now)
{
    struct dr *d = p;

    if (ch->ext != NULL) {
        /* a book bridges the new snapshot; a sequence is fetched at the
           resubscribe (dr_restale) */
        xg_track_gap(ch->ext, ch->last_data_ms, "stale");
    } else if (!dr_chan_recovers(ch)) {
        dr_gap_notice(d, ch, now - ch->last_data_ms, "stale");
    }
}

/*
 * A hole in the core's stream of channel NAME (an edge: entries the core
 * could not write, or trimmed before the edge read them): a book's chain
 * shows it by itself (a resubscribe, a new snapshot); a tracked channel's
 * tracker repairs it (trades by trade_seq from the next data, a
 * currency's trades and user.orders fetched now; during a fetch the hole
 * waits at its place among the held messages); anything else gets a gap
 * notice.
 */
void
dr_edge_hole(struct dr *d, const char *name)
{
    struct xg_reg_channel *ch = xg_registry_channel(d->reg, name);

    if (ch == NULL
        || xg_venue_deribit_book_kind(name) == XG_BOOK_DELTA)
    {
        return;
    }
    if (ch->ext != NULL) {
        xg_track_hole(ch->ext, ch->last_data_ms, "a hole in the core's "
            "stream");
    } else if (!dr_chan_recovers(ch)) {
        dr_gap_notice(d, ch, xg_now_ms() - ch->last_data_ms, "a hole in "
            "the core's stream");
    }
}

/* CH was resubscribed after going stale: fetches that start now. */
static void
dr_restale(void *p, struct xg_reg_channel *ch)
{
    if (ch->ext != NULL) {
        xg_track_resume(ch->ext, "resubscribed");
    }
}


/* Data on CH: its tracker (if it has one) says whether it goes out as
   it is. Tracked channels are kept even while they linger unwatched. */
static int
dr_data(void *p, struct xg_reg_channel *ch, const char *data, size_t len,
    const struct xg_umsg *m)
{
    struct xg_track *t = dr_track_get(p, ch);

    return t == NULL || xg_track_message(t, data, len);
}

/* The start of every subscription notification as Deribit writes it,
   up to and with the channel name's opening quote. */
#define DR_NOTE_HEAD "{\"jsonrpc\":\"2.0\",\"method\":\"subscription\"," \
    "\"params\":{\"channel\":\""

/*
 * The fast path of dr_classify() for a notification written as Deribit
 * writes them: DR_NOTE_HEAD, then the channel name, the rest of params,
 * and the '}' that ends the message. The head is matched byte for byte
 * and what follows it is walked and checked as the full scan walks it
 * (xg_jscan_close()): what is skipped is only the matching of the head's
 * keys one by one and the second scan of params for "channel". Returns 1
 * with M filled; 0 for anything else, which the full scan then reads
 * (and reports when it is bad).
 */
static int
dr_classify_note(const char *data, size_t len, struct xg_umsg *m)
{
    size_t h = sizeof(DR_NOTE_HEAD) - 1, ps = h - sizeof("{\"channel\":\"")
        + 1, ce, pe;

    if (len <= h || memcmp(data, DR_NOTE_HEAD, h) != 0) {
        return 0;
    }
    ce = xg_jscan_string(data, len, h - 1);
    if (ce == 0) {
        return 0;
    }
    pe = xg_jscan_close(data, len, ce, 1);
    if (pe == 0 || pe + 1 != len || data[pe] != '}') {
        return 0;
    }
    m->kind = XG_UMSG_DATA;
    m->chan = data + h;
    m->chan_len = ce - 1 - h;
    m->params.p = data + ps;
    m->params.len = pe - ps;
    return 1;
}

/* Reads a Deribit message: an answer (by id), a subscription
   notification (by channel), or what the module handles itself. */
static void
dr_classify(void *p, struct xg_conn *conn, const char *data, size_t len,
    struct xg_umsg *m)
{
    static const char *keys[] = { "id", "method", "params", "result",
                                  "error", "testnet" };
    static const char *ckeys[] = { "channel" };
    struct dr *d = p;
    struct xg_jspan v[6], c[1];

    if (conn == NULL) {
        d->last_in_ms = xg_now_ms();    /* the heartbeat watch is its */
    } else if (xg_conn_role(conn) == XG_CONN_PRIMARY) {
        d->last_in_ms = xg_conn_rx_ms(conn);
    }
    if (dr_classify_note(data, len, m)) {
        return;
    }
    if (xg_jscan_object(data, len, keys, 6, v) != XG_OK) {
        xg_upstream_log(XG_LOG_WARN, d->up, "a message that is not a JSON "
            "object dropped (%zu bytes)", len);
        return;
    }
    if (v[5].p != NULL) {
        /* Deribit marks every response; local answers say the same. */
        d->testnet = v[5].len == 4 && memcmp(v[5].p, "true", 4) == 0;
    }
    if (v[0].p != NULL && !(v[0].len == 4 && memcmp(v[0].p, "null", 4) == 0)) {
        m->kind = XG_UMSG_ANSWER;
        m->id = v[0];
        m->result = v[3];
        m->error = v[4];
        return;
    }
    if (xg_jscan_str_eq(&v[1], "subscription") && v[2].p != NULL) {
        /* the scan above walked params whole: up to "channel" is enough
           (it comes first, before the data, in what Deribit sends) */
        if (xg_jscan_find(v[2].p, v[2].len, ckeys, 1, c) != XG_OK
            || c[0].p == NULL || c[0].len < 2 || c[0].p[0] != '"') {
            xg_upstream_log(XG_LOG_WARN, d->up, "subscription message without "
                "a channel dropped");
            return;
        }
        m->kind = XG_UMSG_DATA;
        m->chan = c[0].p + 1;
        m->chan_len = c[0].len - 2;
        m->params = v[2];
        return;
    }
    if (xg_jscan_str_eq(&v[1], "heartbeat")) {
        const char *tk[] = { "type" };
        struct xg_jspan t[1];

        if (v[2].p != NULL
            && xg_jscan_object(v[2].p, v[2].len, tk, 1, t) == XG_OK
            && xg_jscan_str_eq(&t[0], "test_request")) {
            /* answered here, on its connection, never forwarded */
            dr_send_on(d, dr_internal(K_TEST, "public/test", NULL), conn);
        }
        return;
    }
    if (v[4].p != NULL) {
        /* no id (or "id":null): nobody to route it to */
        xg_upstream_log(XG_LOG_WARN, d->up, "error with no id from the "
            "exchange, not forwarded: %.*s",
            (int) (v[4].len > 300 ? 300 : v[4].len), v[4].p);
        return;
    }
    xg_upstream_log(XG_LOG_DEBUG, d->up, "unhandled message (%zu bytes)", len);
}

static void
dr_on_message(void *p, struct xg_conn *c, const unsigned char *udata,
    size_t len)
{
    struct dr *d = p;

    xg_session_message(d->s, c, (const char *) udata, len);
}

/* A new primary restores the session; a rotation's new connection
   restores it beside the primary, then takes over (xg_session.h). */
static void
dr_on_open(void *p, struct xg_conn *c)
{
    struct dr *d = p;

    if (xg_conn_role(c) == XG_CONN_ROTATING) {
        xg_session_rotate(d->s, c);
        return;
    }
    d->last_in_ms = xg_now_ms();
    xg_session_open(d->s, c);
}

/*
 * A request in flight when the connection was lost: a client's read-only
 * request and a cancel-on-disconnect are sent again; anything else a
 * client asked for gets "outcome unknown" (never replay an order).
 */
static enum xg_lost
dr_lost(void *p, struct xg_reg_req *q)
{
    struct dr *d = p;
    struct dr_client *dc = q->client ? q->client->owner : NULL;

    if (dr_cod_lost(d, q)) {
        return XG_LOST_KEPT;        /* settled by the client's COD */
    }
    if ((q->kind == K_CLIENT && dc != NULL && dr_is_replayable(q->method))
        || q->kind == K_COD_CHECK || q->kind == K_OUTCOME) {
        return XG_LOST_REPLAY;
    }
    if (q->kind == K_CLIENT && dc != NULL) {
        xg_session_log_req(XG_LOG_WARN, d->s, q, "%s in flight when the "
            "connection dropped: outcome unknown", q->method);
        dr_error(dc, q->client_id, 13028,
            "upstream connection lost, outcome unknown",
            "the request reached the exchange connection but its answer "
            "was lost; check the state (e.g. open orders) before retrying");
        d->requests_outcome_unknown++;
        dr_outcome_lost(d, dc, q, 0);   /* looked up after the restore */
        return XG_LOST_UNKNOWN;
    }
    return XG_LOST_FREE;
}

/*
 * Q had no answer within request_timeout (or waited queue_timeout for the
 * connection): its client is told; a continuity fetch is sent again.
 */
static int
dr_expired(void *p, struct xg_reg_req *q, int queued)
{
    static const char timed_out[] =
        "{\"code\":13888,\"message\":\"timed_out\"}";
    struct dr *d = p;
    struct dr_client *dc = q->client ? q->client->owner : NULL;

    if (q->kind == K_OUTCOME) {
        struct xg_jspan none = { NULL, 0 };

        dr_outcome_answer(d, q, &none, &none);  /* the outcome is unknown */
        return 0;
    }
    if (queued) {
        if (dc != NULL) {
            int ready = xg_session_state(d->s) == XG_SESSION_READY;

            d->requests_rejected++;
            xg_session_log_req(XG_LOG_WARN, d->s, q, "%s waited queue_timeout "
                "for the %s", q->method, ready ? "request budget"
                : "exchange connection");
            dr_error(dc, q->client_id, 13028, "upstream unavailable", ready
                ? "the request budget did not allow it within "
                  "queue_timeout; the request was not sent"
                : "the exchange connection did not come back within "
                  "queue_timeout; the request was not sent");
        } else {
            xg_session_log_req(XG_LOG_WARN, d->s, q, "%s dropped after "
                "queue_timeout", q->method);
        }
        return 0;
    }
    if (q->kind == K_BACKFILL || q->kind == K_ORDERS
        || q->kind == K_CTRADES) {
        struct xg_jspan none = { NULL, 0 };
        struct xg_jspan err = { timed_out, sizeof(timed_out) - 1 };

        xg_session_log_req(XG_LOG_WARN, d->s, q, "%s (%s) timed out after "
            "%llu ms", q->method, q->chan ? q->chan[0] : "?",
            (unsigned long long) d->cf->request_timeout_ms);
        if (dr_fetch_retry(d, q, err.p, (int) err.len)) {
            return 1;
        }
        dr_fetch_answer(d, q, &none, &err);
        return 0;
    }
    d->requests_timed_out++;
    if (dc != NULL) {
        xg_session_log_req(XG_LOG_WARN, d->s, q, "%s timed out after %llu ms",
            q->method,
            (unsigned long long) d->cf->request_timeout_ms);
        dr_error(dc, q->client_id, 13888, "timed_out",
            "no answer from the exchange within request_timeout; "
            "outcome unknown");
    }
    return 0;
}

static void
dr_on_down(void *p, struct xg_conn *c, const char *reason)
{
    struct dr *d = p;
    unsigned lost, replayed;

    /* in flight on C: replay what is harmless, report the rest unknown */
    switch (xg_session_down(d->s, c, &replayed, &lost)) {
    case XG_SESSION_DOWN_OTHER:
        xg_conn_log(XG_LOG_INFO, c, "%s connection down (%s): %u requests "
            "replayed, %u with unknown outcome",
            xg_conn_role_name(xg_conn_role(c)), reason, replayed, lost);
        return;
    case XG_SESSION_DOWN_TAKEOVER:
        /* the rotation's connection takes over: continuity as after an
           outage, its channels kept */
        d->last_in_ms = xg_now_ms();
        dr_tracks_down(d);
        xg_conn_log(XG_LOG_INFO, c, "down (%s): %u requests replayed, %u "
            "with unknown outcome; the rotation takes over", reason,
            replayed, lost);
        return;
    default:
        break;
    }
    xg_timer_del(d->ev_refresh);
    if (d->cf->auth_scope == NULL
        || strncmp(d->cf->auth_scope, "session:", 8) != 0) {
        /* connection-scoped tokens died with the socket */
        free(d->refresh_token);
        d->refresh_token = NULL;
    }
    dr_tracks_down(d);
    xg_registry_upstream_reset(d->reg);
    xg_upstream_log(XG_LOG_INFO, d->up, "down (%s): %u requests to replay, %u "
        "with unknown outcome, %zu channels to restore", reason, replayed, lost,
        xg_registry_nchannels(d->reg));
}

/* The tick: the upstream heartbeat. */
static void
dr_on_tick(evutil_socket_t fd, short what, void *arg)
{
    struct dr *d = arg;
    uint64_t now = xg_now_ms();

    if (d->cf->heartbeat_ms != 0 && xg_session_state(d->s) != XG_SESSION_DOWN
        && now - d->last_in_ms > 2 * d->cf->heartbeat_ms + 1000) {
        char reason[96];

        snprintf(reason, sizeof(reason), "heartbeat missed: nothing from "
            "the exchange for %llu ms",
            (unsigned long long) (now - d->last_in_ms));
        xg_upstream_log(XG_LOG_WARN, d->up, "%s", reason);
        d->last_in_ms = now;
        xg_upstream_fail(d->up, reason);
    }
    dr_tick_arm(d);
}

/* ---- clients ---- */

static void
dr_client_hb(evutil_socket_t fd, short what, void *arg)
{
    static const char tr[] = "{\"jsonrpc\":\"2.0\",\"method\":\"heartbeat\","
                             "\"params\":{\"type\":\"test_request\"}}";
    struct dr_client *dc = arg;
    struct timeval tv;

    if (dc->hb_waiting) {
        xg_client_log(XG_LOG_WARN, dc->c, "heartbeat failure: no public/test "
            "within %llu ms", (unsigned long long) dc->hb_ms);
        xg_client_close(dc->c, 1000, "heartbeat failure");
        return;
    }
    dc->hb_waiting = 1;
    xg_client_send(dc->c, tr, sizeof(tr) - 1);
    tv.tv_sec = (time_t) (dc->hb_ms / 1000);
    tv.tv_usec = (suseconds_t) ((dc->hb_ms % 1000) * 1000);
    xg_timer_add(dc->ev_hb, &tv);
}

/* A client of D on connection C (a twin too: xg_venue_deribit_acct.c). */
struct dr_client *
dr_client_new(struct dr *d, struct xg_client *c)
{
    struct dr_client *dc = xg_calloc(1, sizeof(*dc));

    dc->d = d;
    dc->c = c;
    dc->rc = xg_registry_client_new(d->reg, dc, c);
    dc->authed = !xg_client_conf(c)->client_auth;
    xg_session_set_linger(d->s, xg_client_conf(c)->unsubscribe_linger_ms);
    dc->ev_hb = xg_timer_new(d->base, dr_client_hb, dc);
    dc->next = d->clients;
    if (d->clients) {
        d->clients->prev = dc;
    }
    d->clients = dc;
    d->nclients++;
    return dc;
}

static void *
dr_client_open(void *p, struct xg_client *c)
{
    return dr_client_new(p, c);
}

struct dr_cod_scan {
    struct dr_cod          *cod;
    struct xg_reg_client   *rc;
};

/* The leaving client's order requests in flight: their answers are COD's. */
static void
dr_cod_scan_cb(struct xg_reg_req *q, void *arg)
{
    struct dr_cod_scan *sc = arg;

    if (q->client != sc->rc || q->kind != K_CLIENT
        || !(dr_is_order_place(q->method) || dr_is_order_edit(q->method))) {
        return;
    }
    q->kind = K_COD_ORDER;
    q->tag = sc->cod->id;
    xg_session_untime(q);       /* however late, the answer is needed */
    sc->cod->refs++;
}

/*
 * The client's emulated cancel-on-disconnect: a dr_cod takes its orders
 * and its order requests in flight over (see above).
 */
static void
dr_client_cod(struct dr *d, struct dr_client *dc, const char *reason)
{
    struct dr_cod *cod = xg_calloc(1, sizeof(*cod));
    struct dr_cod_scan sc = { cod, dc->rc };
    size_t i;

    cod->id = ++d->cod_last_id;
    cod->owned = json_object();
    cod->check = json_object();
    cod->cancelled = json_object();
    for (i = 0; i < dc->rc->norders; i++) {
        json_object_set_new(cod->owned, dc->rc->orders[i], json_true());
        json_object_set_new(cod->check, dc->rc->orders[i], json_true());
    }
    xg_registry_inflight_foreach(d->reg, dr_cod_scan_cb, &sc);
    cod->refs += dr_outcome_gone(d, dc, cod->id);
    if (dc->rc->norders == 0 && cod->refs == 0) {
        dr_cod_free(cod);
        return;
    }
    cod->name = xg_strdup(xg_client_name(dc->c));
    cod->reason = xg_strdup(reason);
    cod->next = d->cods;
    if (d->cods != NULL) {
        d->cods->prev = cod;
    }
    d->cods = cod;
    xg_upstream_log(XG_LOG_INFO, d->up, "%s: cancel-on-disconnect (%s): %zu "
        "orders it placed, %u order requests in flight", cod->name, reason,
        dc->rc->norders, cod->refs);
    dr_cod_check(d, cod);
}

/* /status: the clients' orders and their cancel-on-disconnect. */
static void
dr_cod_status(struct dr *d, json_t *obj)
{
    struct dr_client *dc;
    struct dr_cod *cod;
    size_t tracked = 0, pending = 0;

    for (dc = d->clients; dc != NULL; dc = dc->next) {
        tracked += dc->rc->norders;
    }
    for (cod = d->cods; cod != NULL; cod = cod->next) {
        pending++;
    }
    json_object_set_new(obj, "cod_orders_tracked",
        json_integer((json_int_t) tracked));
    json_object_set_new(obj, "cod_pending",
        json_integer((json_int_t) pending));
    json_object_set_new(obj, "cod_checks",
        json_integer((json_int_t) d->cod_checks));
    json_object_set_new(obj, "cod_cancels",
        json_integer((json_int_t) d->cod_cancels));
    json_object_set_new(obj, "cod_disabled_on_retire",
        json_integer((json_int_t) d->cod_offs));
    json_object_set_new(obj, "cod_disable_failed",
        json_integer((json_int_t) d->cod_off_failed));
}

/* DC leaves D (its twin first): cancel-on-disconnect, channels, state. */
void
dr_client_free(struct dr *d, struct dr_client *dc, const char *reason)
{
    dr_acct_client_close(dc, reason);
    if (dc->cod) {
        dr_client_cod(d, dc, reason);
    }
    dr_outcome_gone(d, dc, 0);      /* no outcome to send any more */
    dr_books_left(dc);
    xg_registry_client_free(d->reg, dc->rc, xg_now_ms());
    xg_timer_free(dc->ev_hb);
    if (dc->prev) {
        dc->prev->next = dc->next;
    } else {
        d->clients = dc->next;
    }
    if (dc->next) {
        dc->next->prev = dc->prev;
    }
    d->nclients--;
    OPENSSL_cleanse(dc->refresh, sizeof(dc->refresh));
    free(dc);
    xg_session_flush_soon(d->s);
}

static void
dr_client_close(void *p, void *cs, const char *reason)
{
    dr_client_free(p, cs, reason);
}

static void
dr_client_subscribe(struct dr *d, struct dr_client *dc, const char *id,
    const char *method, json_t *params)
{
    json_t *chans = json_object_get(params, "channels");
    const struct xg_gateway_conf *gc = xg_client_conf(dc->c);
    int public_only = strncmp(method, "public/", 7) == 0;
    char **names;
    size_t n, i;

    if (!json_is_array(chans) || json_array_size(chans) == 0) {
        dr_error(dc, id, -32602, "Invalid params",
            "channels must be a non-empty array of strings");
        return;
    }
    n = json_array_size(chans);
    names = xg_calloc(n, sizeof(char *));
    for (i = 0; i < n; i++) {
        const char *s = json_string_value(json_array_get(chans, i));

        if (s == NULL || *s == '\0' || strlen(s) > 256) {
            free(names);
            dr_error(dc, id, -32602, "Invalid params",
                "channels must be a non-empty array of strings");
            return;
        }
        names[i] = (char *) s;
    }
    dr_acct_subscribe(d, dc, id, names, n, gc->client_max_channels,
        public_only);
    free(names);
}

static void
dr_client_unsubscribe(struct dr *d, struct dr_client *dc, const char *id,
    json_t *params)
{
    json_t *chans = json_object_get(params, "channels");
    json_t *res = json_array();
    char **names;
    size_t i, n;

    if (!json_is_array(chans)) {
        json_decref(res);
        dr_error(dc, id, -32602, "Invalid params",
            "channels must be an array of strings");
        return;
    }
    n = json_array_size(chans);
    names = xg_calloc(n + 1, sizeof(char *));
    for (i = 0; i < n; i++) {
        names[i] = (char *) json_string_value(json_array_get(chans, i));
    }
    xg_session_unsubscribe(d->s, dc->rc, names, n, res);
    if (dc->twin != NULL) {
        /* a name it does not hold adds nothing: the same list for both */
        xg_session_unsubscribe(dc->twin->d->s, dc->twin->rc, names, n, res);
    }
    free(names);
    dr_reply_json(dc, id, res);
}

static void
dr_client_set_heartbeat(struct dr_client *dc, const char *id, json_t *params)
{
    json_t *iv = json_object_get(params, "interval");
    struct timeval tv;
    double s;

    if (!json_is_number(iv) || (s = json_number_value(iv))
                               < DR_MIN_CLIENT_HB_S || s > 3600) {
        dr_error(dc, id, -32602, "Invalid params",
            "interval must be a number of seconds, at least 10");
        return;
    }
    dc->hb_ms = (uint64_t) (s * 1000);
    dc->hb_waiting = 0;
    tv.tv_sec = (time_t) (dc->hb_ms / 1000);
    tv.tv_usec = (suseconds_t) ((dc->hb_ms % 1000) * 1000);
    xg_timer_add(dc->ev_hb, &tv);
    dr_reply(dc, id, "\"ok\"");
}

/*
 * The methods a client's connection answers here (dr_client_message()),
 * never sent to the exchange: what an edge answers for its own bots.
 */
static const char *const dr_local_methods[] = {
    "public/auth", "public/set_heartbeat", "public/disable_heartbeat",
    "public/test", "public/subscribe", "private/subscribe",
    "public/unsubscribe", "private/unsubscribe", "public/unsubscribe_all",
    "private/unsubscribe_all", "private/enable_cancel_on_disconnect",
    "private/disable_cancel_on_disconnect",
    "private/get_cancel_on_disconnect", "private/logout", NULL
};

/* 1 when METHOD is answered by the client's connection (exgate/ too). */
int
dr_is_local_method(const char *method)
{
    int i;

    if (strncmp(method, "exgate/", 7) == 0) {
        return 1;
    }
    for (i = 0; dr_local_methods[i] != NULL; i++) {
        if (strcmp(method, dr_local_methods[i]) == 0) {
            return 1;
        }
    }
    return 0;
}

/*
 * One request of client DC (a bot's message, or an edge's request:
 * xg_venue_deribit_edges.c): answered here (dr_is_local_method()), or
 * forwarded under a fresh id with its answer coming back to DC.
 */
void
dr_client_message(void *p, void *cs, const unsigned char *udata, size_t len)
{
    static const char *keys[] = { "id" };
    struct dr *d = p;
    struct dr_client *dc = cs;
    const char *data = (const char *) udata;
    struct xg_jspan v[1];
    json_t *req = NULL, *params;
    const char *method;
    char *id = NULL, *work = NULL;
    size_t wlen, i;
    json_error_t jerr;

    for (i = 0; i < len && (data[i] == ' ' || data[i] == '\t'
                            || data[i] == '\r' || data[i] == '\n'); i++) {
    }
    if (i < len && data[i] == '[') {
        xg_client_log(XG_LOG_INFO, dc->c, "batch request refused");
        dr_error(dc, NULL, -32600, "Invalid Request",
            "batch requests are not supported");
        return;
    }
    if (xg_jscan_object(data, len, keys, 1, v) != XG_OK) {
        xg_client_log(XG_LOG_INFO, dc->c, "unparseable request (%zu bytes)",
            len);
        dr_error(dc, NULL, -32700, "Parse error", NULL);
        return;
    }
    if (v[0].p == NULL || !(v[0].p[0] == '"' || v[0].p[0] == '-'
                            || (v[0].p[0] >= '0' && v[0].p[0] <= '9'))) {
        dr_error(dc, NULL, -32600, "Invalid Request",
            "id (a number or a string) is required");
        return;
    }
    {
        /* the id is kept as raw text: check it is one valid JSON string or
           number (UTF-8, escapes; integers of any size read as reals) */
        json_t *idj = json_loadb(v[0].p, v[0].len,
            JSON_DECODE_ANY | JSON_DECODE_INT_AS_REAL, NULL);

        if (idj == NULL || !(json_is_string(idj) || json_is_number(idj))) {
            json_decref(idj);
            dr_error(dc, NULL, -32600, "Invalid Request",
                "id must be a valid number or string");
            return;
        }
        json_decref(idj);
    }
    if (len > DR_MAX_FRAME) {
        /* the exchange refuses it (with no id); answer with the id */
        xg_client_log(XG_LOG_INFO, dc->c, "request of %zu bytes over 32 kB "
            "refused", len);
        id = dr_strndup_span(&v[0]);
        dr_error(dc, id, -32600, "request entity too large", NULL);
        goto done;
    }
    /* jansson cannot hold ids of any size: parse with a placeholder id */
    id = dr_strndup_span(&v[0]);
    work = xg_jscan_splice(data, len, &v[0], "0", 1, &wlen);
    req = json_loadb(work, wlen, JSON_REJECT_DUPLICATES, &jerr);
    if (req == NULL || !json_is_object(req)) {
        xg_client_log(XG_LOG_INFO, dc->c, "unparseable request: %s",
            req ? "not an object" : jerr.text);
        dr_error(dc, NULL, -32700, "Parse error", NULL);
        goto done;
    }
    method = json_string_value(json_object_get(req, "method"));
    params = json_object_get(req, "params");
    if (method == NULL) {
        dr_error(dc, id, -32600, "Invalid Request", "method is required");
        goto done;
    }
    if (params != NULL && !json_is_object(params)) {
        dr_error(dc, id, -32602, "Invalid params",
            "params must be an object");
        goto done;
    }
    if (params == NULL) {
        params = json_object();
        json_object_set_new(req, "params", params);
    }
    if (xg_client_rate_exceeded(dc->c)) {
        xg_client_log(XG_LOG_WARN, dc->c, "over client_rate: %s refused",
            method);
        d->requests_rejected++;
        dr_error(dc, id, 10028, "too_many_requests", NULL);
        goto done;
    }

    /* connection-level methods: answered here, per client */
    if (strcmp(method, "public/auth") == 0) {
        dr_client_auth(dc, id, params);
        goto done;
    }
    if (strcmp(method, "public/set_heartbeat") == 0) {
        dr_client_set_heartbeat(dc, id, params);
        goto done;
    }
    if (strcmp(method, "public/disable_heartbeat") == 0) {
        dc->hb_ms = 0;
        dc->hb_waiting = 0;
        xg_timer_del(dc->ev_hb);
        dr_reply(dc, id, "\"ok\"");
        goto done;
    }
    if (strcmp(method, "public/test") == 0) {
        dc->hb_waiting = 0;
        if (json_is_string(json_object_get(params, "expected_result"))
            && strcmp(json_string_value(json_object_get(params,
                   "expected_result")), "exception") == 0) {
            dr_error(dc, id, 11094, "internal_server_error",
                "expected_result exception");
            goto done;
        }
        dr_reply(dc, id, "{\"version\":\"" XG_VERSION "\"}");
        goto done;
    }
    if (strncmp(method, "private/", 8) == 0 && !dc->authed) {
        xg_client_log(XG_LOG_INFO, dc->c, "%s before public/auth: 13009",
            method);
        dr_error(dc, id, 13009, "unauthorized", NULL);
        goto done;
    }
    if (strcmp(method, "public/subscribe") == 0
        || strcmp(method, "private/subscribe") == 0) {
        dr_client_subscribe(d, dc, id, method, params);
        goto done;
    }
    if (strcmp(method, "public/unsubscribe") == 0
        || strcmp(method, "private/unsubscribe") == 0) {
        dr_client_unsubscribe(d, dc, id, params);
        goto done;
    }
    if (strcmp(method, "public/unsubscribe_all") == 0
        || strcmp(method, "private/unsubscribe_all") == 0) {
        xg_session_unsubscribe(d->s, dc->rc, NULL, 0, NULL);
        if (dc->twin != NULL) {
            xg_session_unsubscribe(dc->twin->d->s, dc->twin->rc, NULL, 0,
                NULL);
        }
        dr_reply(dc, id, "\"ok\"");
        goto done;
    }
    if (strcmp(method, "exgate/notify_gaps") == 0) {
        json_t *en = json_object_get(params, "enabled");

        if (en != NULL && !json_is_boolean(en)) {
            dr_error(dc, id, -32602, "Invalid params",
                "enabled must be a boolean");
            goto done;
        }
        dc->notify_gaps = en == NULL || json_is_true(en);
        dr_acct_sync(dc);
        xg_client_log(XG_LOG_INFO, dc->c, "gap notices %s",
            dc->notify_gaps ? "enabled" : "disabled");
        dr_reply_json(dc, id, json_pack("{s:b}", "enabled",
            dc->notify_gaps));
        goto done;
    }
    if (strcmp(method, "exgate/notify_order_outcome") == 0) {
        json_t *en = json_object_get(params, "enabled");

        if (en != NULL && !json_is_boolean(en)) {
            dr_error(dc, id, -32602, "Invalid params",
                "enabled must be a boolean");
            goto done;
        }
        dc->notify_outcome = en == NULL || json_is_true(en) ? 1 : -1;
        dr_acct_sync(dc);
        xg_client_log(XG_LOG_INFO, dc->c, "order outcomes %s",
            dc->notify_outcome > 0 ? "enabled" : "disabled");
        dr_reply_json(dc, id, json_pack("{s:b}", "enabled",
            dc->notify_outcome > 0));
        goto done;
    }
    if (strcmp(method, "private/enable_cancel_on_disconnect") == 0) {
        dc->cod = 1;
        dr_acct_sync(dc);
        xg_client_log(XG_LOG_INFO, dc->c, "cancel-on-disconnect enabled "
            "(emulated per client)");
        dr_reply(dc, id, "\"ok\"");
        goto done;
    }
    if (strcmp(method, "private/disable_cancel_on_disconnect") == 0) {
        dc->cod = 0;
        dr_acct_sync(dc);
        dr_reply(dc, id, "\"ok\"");
        goto done;
    }
    if (strcmp(method, "private/get_cancel_on_disconnect") == 0) {
        dr_reply_json(dc, id, json_pack("{s:s, s:b}", "scope", "connection",
            "enabled", dc->cod));
        goto done;
    }
    if (strcmp(method, "private/logout") == 0) {
        /* as Deribit: no answer, the connection closes, no COD */
        dc->cod = 0;
        dr_acct_sync(dc);
        xg_client_close(dc->c, 1000, "logout");
        goto done;
    }

    /* anything else goes to the exchange under a fresh id: private
       methods over the client's account connection */
    {
        struct xg_reg_req *q;
        struct dr_client *tc = dc;
        struct dr *td = d;
        char *text;
        size_t tlen;
        int relabel;

        if (strncmp(method, "private/", 8) == 0
            && (tc = dr_acct_route(dc, &td)) == NULL)
        {
            xg_client_log(XG_LOG_INFO, dc->c, "%s without an account: "
                "13009", method);
            d->account_refused++;
            dr_error(dc, id, 13009, "unauthorized",
                "no exchange account for this client");
            goto done;
        }

        relabel = dr_outcome_label(dc, method, params);
        if (relabel || json_object_get(params, "access_token") != NULL) {
            /* the local token means nothing upstream; the session is ours */
            json_object_del(params, "access_token");
            text = json_dumps(req, JSON_COMPACT);
            tlen = strlen(text);
            q = xg_registry_req_new(K_CLIENT, tc->rc, id, method, text, tlen);
            free(text);
        } else {
            q = xg_registry_req_new(K_CLIENT, tc->rc, id, method, work,
                wlen);
        }
        dr_submit(td, q, tc);
    }
done:
    json_decref(req);
    free(work);
    free(id);
}

/* ---- the session's calls ---- */

static struct xg_reg_req *
dr_encode_sub(void *p, int subscribe, char *const *names, size_t n)
{
    struct dr *d = p;
    int priv = d->cf->auth != DR_AUTH_NONE;
    json_t *arr = json_array();
    size_t i;

    for (i = 0; i < n; i++) {
        json_array_append_new(arr, json_string(names[i]));
    }
    return dr_internal(subscribe ? XG_REQ_SUB : XG_REQ_UNSUB, subscribe
        ? (priv ? "private/subscribe" : "public/subscribe")
        : (priv ? "private/unsubscribe" : "public/unsubscribe"),
        json_pack("{s:o}", "channels", arr));
}

static void
dr_session_send(void *p, struct xg_reg_req *q)
{
    dr_send(p, q);
}

static int
dr_write(void *p, struct xg_conn *c, const char *data, size_t len)
{
    return xg_upstream_send_on(c, data, len);
}

/* Deribit answers a subscribe with the list of channels it took. */
static json_t *
dr_sub_result(void *p, const struct xg_reg_req *q,
    const struct xg_jspan *result, const struct xg_jspan *error,
    char **errtext)
{
    json_t *res = NULL;

    if (result->p != NULL) {
        res = json_loadb(result->p, result->len, 0, NULL);
    }
    if (res == NULL || !json_is_array(res)) {
        json_decref(res);
        *errtext = error->p ? dr_strndup_span(error)
                            : xg_strdup("{\"code\":11052,\"message\":"
                                        "\"subscribe_error_unsubscribed\"}");
        return NULL;
    }
    return res;
}

static void
dr_subreq_done(void *p, struct xg_reg_subreq *sr)
{
    dr_subreq_answer(p, sr);
}

/* As Deribit: private channels are left out of a public/subscribe's result
   and of an unauthenticated client's. */
static int
dr_allowed(void *p, void *client, const char *name, int public_only)
{
    const struct dr_client *dc = client;

    return strncmp(name, "user.", 5) != 0 || (!public_only && dc->authed);
}

static void
dr_joined(void *p, void *client, struct xg_reg_channel *ch, int live)
{
    dr_book_joined(client, ch, live);
}

static void
dr_left(void *p, void *client, struct xg_reg_channel *ch)
{
    dr_book_left(client, ch);
}

static const struct xg_session_ops dr_session_ops = {
    .classify = dr_classify,
    .answer = dr_answer,
    .data = dr_data,
    .write = dr_write,
    .expired = dr_expired,
    .lost = dr_lost,
    .encode_sub = dr_encode_sub,
    .send = dr_session_send,
    .sub_result = dr_sub_result,
    .confirmed = dr_confirmed,
    .stale = dr_stale,
    .restale = dr_restale,
    .subreq_done = dr_subreq_done,
    .restore_step = dr_restore_step,
    .allowed = dr_allowed,
    .joined = dr_joined,
    .left = dr_left,
    .snapshot = dr_book_snapshot,
    .cross = dr_cross,
    .cross_force = dr_cross_force,
    .cross_done = dr_cross_done,
    .retiring = dr_retiring,
    .cost = dr_cost
};

/* ---- life cycle and /status ---- */

static const struct dr_conf dr_defaults = {
    .auth = DR_AUTH_NONE,
    .request_timeout_ms = 10000,
    .rate_limit = 1
};

/* An instance on UP with the venue conf CF (an account's for a child). */
void *
dr_new(struct xg_upstream *up, const struct xg_upstream_conf *conf,
    const struct dr_conf *cf)
{
    struct dr *d = xg_calloc(1, sizeof(*d));
    struct xg_budget_conf bc;

    d->up = up;
    d->cf = cf;
    d->name = xg_upstream_name(up);
    d->base = xg_upstream_base(up);
    d->reg = xg_registry_new();
    d->nonces = xg_nonce_new(DR_SIG_WINDOW_MS, DR_NONCE_MAX);
    xg_registry_set_channel_free(d->reg, dr_track_free);
    d->s = xg_session_new(up, d->name, d->base, d->reg, d->cf->stale,
        d->cf->nstale, DR_BATCH_BYTES, &dr_session_ops, d);
    xg_session_set_limits(d->s, d->cf->request_timeout_ms,
        conf->queue_limit, conf->queue_timeout_ms);
    dr_budget_conf(d->cf, &bc);
    xg_session_set_budget(d->s, &bc);
    xg_session_interest_private(d->s, d->cf->auth != DR_AUTH_NONE);
    d->track.name = d->name;
    d->track.up = up;
    d->track.base = d->base;
    d->track.max_held = DR_MAX_HELD;
    d->track.retry_ms = DR_FETCH_RETRY_MS;
    d->track.retry_max_ms = DR_FETCH_RETRY_MAX_MS;
    d->track.tries = DR_FETCH_TRIES;
    d->track.ctx = d;
    d->track.send = dr_track_send;
    d->track.fanout = dr_track_fanout;
    d->track.notice = dr_track_notice;
    d->track.now = dr_track_now;
    d->ev_tick = xg_timer_new(d->base, dr_on_tick, d);
    d->ev_refresh = xg_timer_new(d->base, dr_on_refresh, d);
    dr_tick_arm(d);
    return d;
}

static void *
dr_create(struct xg_upstream *up, const struct xg_upstream_conf *conf)
{
    struct dr *d = dr_new(up, conf, conf->proto_conf ? conf->proto_conf
                                                     : &dr_defaults);

    if (dr_accts_create(d, conf) != XG_OK) {
        dr_free(d);
        return NULL;
    }
    d->edges = dr_edges_new(d, conf);
    return d;
}

void
dr_free(struct dr *d)
{
    if (d == NULL) {
        return;
    }
    dr_edges_free(d->edges);    /* its clients first */
    while (d->clients != NULL) {
        /* the listeners free their clients first; this is a last resort */
        dr_client_free(d, d->clients, "upstream destroyed");
    }
    dr_accts_free(d);
    while (d->cods != NULL) {
        struct dr_cod *cod = d->cods;

        d->cods = cod->next;
        dr_cod_free(cod);
    }
    dr_outcome_free_all(d);
    dr_edge_free(d);
    xg_timer_free(d->ev_tick);
    xg_timer_free(d->ev_refresh);
    free(d->refresh_token);
    xg_nonce_free(d->nonces);
    xg_session_interest_stop(d->s);
    xg_registry_free(d->reg);
    xg_session_free(d->s);
    free(d);
}

static void
dr_destroy(void *p)
{
    dr_free(p);
}

/* /status of one instance (an account's too). */
void
dr_status_obj(struct dr *d, json_t *obj)
{

    json_object_set_new(obj, "channels",
        json_integer((json_int_t) xg_registry_nchannels(d->reg)));
    json_object_set_new(obj, "book_gaps",
        json_integer((json_int_t) d->book_gaps));
    json_object_set_new(obj, "book_resyncs",
        json_integer((json_int_t) d->book_resyncs));
    json_object_set_new(obj, "book_errors",
        json_integer((json_int_t) d->book_errors));
    json_object_set_new(obj, "gap_notices",
        json_integer((json_int_t) d->gap_notices));
    json_object_set_new(obj, "orders_reconciled",
        json_integer((json_int_t) d->orders_reconciled));
    json_object_set_new(obj, "orders_reconciles",
        json_integer((json_int_t) d->orders_reconciles));
    json_object_set_new(obj, "currency_trades_backfilled",
        json_integer((json_int_t) d->currency_trades_backfilled));
    json_object_set_new(obj, "fetch_retries",
        json_integer((json_int_t) d->track.retries));
    json_object_set_new(obj, "backfills",
        json_integer((json_int_t) d->track.answers));
    json_object_set_new(obj, "unrepaired_gaps",
        json_integer((json_int_t) d->unrepaired_gaps));
    json_object_set_new(obj, "requests_answered",
        json_integer((json_int_t) d->requests_answered));
    json_object_set_new(obj, "requests_timed_out",
        json_integer((json_int_t) d->requests_timed_out));
    json_object_set_new(obj, "requests_outcome_unknown",
        json_integer((json_int_t) d->requests_outcome_unknown));
    json_object_set_new(obj, "requests_rejected",
        json_integer((json_int_t) d->requests_rejected));
    xg_session_status(d->s, obj);
    json_object_set_new(obj, "clients", json_integer((json_int_t) d->nclients));
    dr_cod_status(d, obj);
    dr_outcome_status(d, obj);
}

static void
dr_status(void *p, json_t *obj)
{
    struct dr *d = p;

    dr_status_obj(d, obj);
    dr_accts_status(d, obj);
    dr_edge_status(d, obj);
    dr_edges_status(d->edges, obj);
}

/* ---- conf directives (upstream context) ---- */

static void
dr_conf_free(void *p)
{
    struct dr_conf *c = p;

    free(c->auth_id);
    if (c->auth_secret != NULL) {
        OPENSSL_cleanse(c->auth_secret, strlen(c->auth_secret));
    }
    free(c->auth_secret);
    free(c->auth_scope);
    free(c->auth_id_src);
    free(c->auth_secret_src);
    xg_stale_free(c->stale, c->nstale);
    dr_account_conf_free(c);
    free(c);
}

/* The per-upstream conf, with its defaults (xg_venue.h create_conf). */
void *
dr_create_conf(struct xg_conf *cf)
{
    struct dr_conf *c = xg_conf_calloc(cf, sizeof(*c), dr_conf_free);

    c->request_timeout_ms = 10000;
    c->rate_limit = 1;
    return c;
}

static int
dr_set_auth(struct xg_conf *cf, const struct xg_conf_stmt *st,
    const struct xg_command *cmd, void *conf)
{
    struct dr_conf *c = conf;
    char *secret;

    if (strcmp(st->args[1], "client_signature") == 0) {
        c->auth = DR_AUTH_SIGNATURE;
    } else if (strcmp(st->args[1], "client_credentials") == 0) {
        c->auth = DR_AUTH_CREDENTIALS;
    } else {
        return xg_conf_error(cf, st, "\"auth\": the grant must be "
            "\"client_signature\" or \"client_credentials\", not \"%s\"",
            st->args[1]);
    }
    if (strncmp(st->args[2], "env:", 4) == 0
        || strncmp(st->args[2], "file:", 5) == 0) {
        c->auth_id = xg_conf_secret(cf, st, st->args[2]);
        if (c->auth_id == NULL) {
            return XG_ERROR;
        }
        c->auth_id_src = xg_conf_secret_source(st, st->args[2]);
    } else {
        c->auth_id = xg_strdup(st->args[2]);
    }
    secret = xg_conf_secret(cf, st, st->args[3]);
    if (secret == NULL) {
        return XG_ERROR;
    }
    c->auth_secret = secret;
    c->auth_secret_src = xg_conf_secret_source(st, st->args[3]);
    return XG_OK;
}

static int
dr_set_auth_scope(struct xg_conf *cf, const struct xg_conf_stmt *st,
    const struct xg_command *cmd, void *conf)
{
    struct dr_conf *c = conf;
    const char *s = st->args[1];

    if (strcmp(s, "connection") != 0
        && !(strncmp(s, "session:", 8) == 0 && s[8] != '\0')) {
        return xg_conf_error(cf, st, "\"auth_scope\": \"connection\" or "
            "\"session:NAME\", not \"%s\"", s);
    }
    free(c->auth_scope);
    c->auth_scope = xg_strdup(s);
    return XG_OK;
}

/* stale PATTERN DURATION; (repeatable; the first matching line wins) */
static int
dr_set_stale(struct xg_conf *cf, const struct xg_conf_stmt *st,
    const struct xg_command *cmd, void *conf)
{
    struct dr_conf *c = conf;

    return xg_stale_set(cf, st, &c->stale, &c->nstale);
}

static const struct xg_conf_bounds dr_bounds_hb = { 1000, 3600 * 1000 };
static const struct xg_conf_bounds dr_bounds_timeout = { 0, 3600 * 1000 };

#define DR(f) offsetof(struct dr_conf, f)

static const struct xg_command dr_commands[] = {
    { "auth", XG_CONF_UPSTREAM | XG_CONF_ACCOUNT | XG_CONF_TAKE3, dr_set_auth,
      0, NULL },
    { "auth_scope", XG_CONF_UPSTREAM | XG_CONF_ACCOUNT | XG_CONF_TAKE1,
      dr_set_auth_scope, 0, NULL },
    { "heartbeat", XG_CONF_UPSTREAM | XG_CONF_ACCOUNT | XG_CONF_TAKE1,
      xg_conf_set_duration, DR(heartbeat_ms), &dr_bounds_hb },
    { "cancel_on_disconnect", XG_CONF_UPSTREAM | XG_CONF_ACCOUNT
      | XG_CONF_TAKE1, xg_conf_set_flag, DR(cod), NULL },
    { "account", XG_CONF_UPSTREAM | XG_CONF_TAKE1 | XG_CONF_BLOCK
      | XG_CONF_MULTI, dr_set_account, 0, NULL },
    { "request_timeout", XG_CONF_UPSTREAM | XG_CONF_TAKE1,
      xg_conf_set_duration, DR(request_timeout_ms), &dr_bounds_timeout },
    { "stale", XG_CONF_UPSTREAM | XG_CONF_TAKE2 | XG_CONF_MULTI, dr_set_stale,
      0, NULL },
    { "rate_limit", XG_CONF_UPSTREAM | XG_CONF_TAKE1, xg_conf_set_flag,
      DR(rate_limit), NULL },
    { "rate_limit_pool", XG_CONF_UPSTREAM | XG_CONF_TAKE3 | XG_CONF_MULTI,
      dr_set_rate_limit_pool, 0, NULL },
    XG_CONF_NULL_COMMAND
};

/*
 * auth, auth_scope, stale and rate_limit_pool for `exgate -T`; the others
 * are generic.
 * The id and the secret of `auth` are shown by source, never by value
 * (a plain id is not a secret and is shown as written).
 */
static int
dr_dump(struct xg_conf_dump *d, const struct xg_command *cmd,
    const void *conf)
{
    const struct dr_conf *c = conf;

    if (cmd->set == dr_set_auth) {
        if (c->auth == DR_AUTH_NONE) {
            xg_conf_dump_comment(d, "%s: not set (public data only)",
                cmd->name);
            return XG_OK;
        }
        xg_conf_dump_words(d, cmd->name, c->auth == DR_AUTH_SIGNATURE
            ? "client_signature" : "client_credentials",
            c->auth_id_src != NULL ? c->auth_id_src : c->auth_id,
            c->auth_secret_src, NULL);
    } else if (cmd->set == dr_set_auth_scope) {
        if (c->auth_scope == NULL) {
            xg_conf_dump_comment(d, "%s: not set (the exchange's default, "
                "connection)", cmd->name);
        } else {
            xg_conf_dump_words(d, cmd->name, c->auth_scope, NULL);
        }
    } else if (cmd->set == dr_set_stale) {
        xg_stale_dump(d, cmd->name, c->stale, c->nstale);
    } else if (cmd->set == dr_set_account) {
        dr_account_dump(d, cmd, c);
    } else if (cmd->set == dr_set_rate_limit_pool) {
        dr_budget_dump(d, cmd->name, c);
    } else {
        return XG_AGAIN;
    }
    return XG_OK;
}

/*
 * A reload (xg_venue.h): the new conf from now on. The auth grant is
 * read at each restore's auth step, the heartbeat at its set_heartbeat
 * step; the request and queue bounds from the next request; the stale
 * bounds from each channel's next silence timer; the request budget at
 * once (its pools keep their levels).
 */
static void
dr_reconf(void *p, const struct xg_upstream_conf *conf)
{
    struct dr *d = p;
    struct xg_budget_conf bc;

    d->cf = conf->proto_conf ? conf->proto_conf : &dr_defaults;
    xg_session_set_limits(d->s, d->cf->request_timeout_ms,
        conf->queue_limit, conf->queue_timeout_ms);
    dr_budget_conf(d->cf, &bc);
    xg_session_set_budget(d->s, &bc);
    xg_session_set_stale(d->s, d->cf->stale, d->cf->nstale);
    xg_session_interest_private(d->s, d->cf->auth != DR_AUTH_NONE);
    dr_accts_reconf(d, conf);
    if (d->edges != NULL) {
        dr_edges_reconf(d->edges, conf);
    } else {
        d->edges = dr_edges_new(d, conf);
    }
}

/* An account's instance: its parent's reconf gave it its conf. */
static void
dr_acct_reconf(void *p, const struct xg_upstream_conf *conf)
{
}


const struct xg_venue xg_venue_deribit = {
    "deribit",
    dr_commands,
    dr_create_conf,
    dr_create,
    dr_destroy,
    dr_on_open,
    dr_on_message,
    dr_on_down,
    NULL,
    dr_status,
    dr_client_open,
    dr_client_message,
    dr_client_close,
    "{\"jsonrpc\":\"2.0\",\"error\":{\"code\":-32600,"
    "\"message\":\"request entity too large\"}}",
    "/ws/api/v2",   /* Deribit's own path: a bot changes only the host */
    0,
    dr_dump,
    1,          /* rotates: make-before-break (src/xg_session.h) */
    dr_reconf,
    NULL,       /* rest_local: no REST front of its own */
    NULL,       /* connect_take: no connection budget */
    NULL,       /* restart_names: a reload applies every change */
    0,          /* max_connection_age: none unless the conf says */
    NULL,       /* connect: a WebSocket to the url */
    NULL        /* reconf_check: it follows any conf */
};

/* A reload of an edge (xg_venue_edge.c): its Redis side, then Deribit's. */
static void
dr_edge_reconf_hook(void *p, const struct xg_upstream_conf *conf)
{
    dr_edge_reconf(p, conf);
    dr_reconf(p, conf);
}

/*
 * `protocol edge`: the Deribit venue whose exchange is a core exgate
 * behind Redis Streams (xg_venue_edge.c is its transport). Its bots see
 * Deribit; its own directives are the edge's.
 */
const struct xg_venue xg_venue_edge = {
    .name = "edge",
    .commands = dr_edge_commands,
    .create_conf = dr_edge_create_conf,
    .create = dr_create,
    .destroy = dr_destroy,
    .on_open = dr_on_open,
    .on_message = dr_on_message,
    .on_down = dr_on_down,
    .status = dr_status,
    .client_open = dr_client_open,
    .client_message = dr_client_message,
    .client_close = dr_client_close,
    .client_too_big = "{\"jsonrpc\":\"2.0\",\"error\":{\"code\":-32600,"
        "\"message\":\"request entity too large\"}}",
    .default_path = "/ws/api/v2",
    .dump = dr_edge_dump,
    .rotates = 0,
    .reconf = dr_edge_reconf_hook,
    .restart_names = dr_edge_restart_names,
    .connect = dr_edge_connect,
    .reconf_check = dr_edge_reconf_check
};

/* An account's connection: a child upstream of a Deribit upstream, with
   no clients of its own (its twins are made by the parent). */
void *dr_acct_create(struct xg_upstream *up,
    const struct xg_upstream_conf *conf);

const struct xg_venue xg_venue_deribit_account = {
    .name = "deribit",
    .create = dr_acct_create,
    .destroy = dr_destroy,
    .on_open = dr_on_open,
    .on_message = dr_on_message,
    .on_down = dr_on_down,
    .status = dr_status,
    .rotates = 1,
    .reconf = dr_acct_reconf
};
