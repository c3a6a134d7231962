/*
 * xg_proto_deribit.c: the Deribit JSON-RPC 2.0 protocol module.
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
#include "xg_core.h"
#include "xg_client.h"
#include "xg_conf.h"
#include "xg_book.h"
#include "xg_venue_deribit.h"
#include "xg_jscan.h"
#include "xg_log.h"
#include "xg_proto.h"
#include "xg_registry.h"
#include "xg_session.h"
#include "xg_track.h"

#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/event.h>
#include <jansson.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>

#define DR_MAX_FRAME        (32 * 1024)    /* Deribit's request size cap */
#define DR_BATCH_BYTES      (30 * 1024)    /* subscribe chunks stay under it */
#define DR_TICK_MS          1000           /* the heartbeat check */
#define DR_MIN_CLIENT_HB_S  10             /* as Deribit: interval >= 10 */
#define DR_TOKEN_TTL_S      31536000
#define DR_SIG_WINDOW_MS    60000          /* client_signature timestamps */
#define DR_FETCH_RETRY_MS   200            /* a fetch refused for now: first
                                              retry, doubling ... */
#define DR_FETCH_RETRY_MAX_MS 3200         /* ... up to this */
#define DR_FETCH_TRIES      8              /* retries before giving up */
#define DR_MAX_HELD         1000           /* live messages held while a
                                              continuity fetch is out */

/* ---- conf ---- */

enum dr_auth_kind {
    DR_AUTH_NONE = 0,
    DR_AUTH_CREDENTIALS,
    DR_AUTH_SIGNATURE
};


struct dr_conf {
    enum dr_auth_kind  auth;
    char              *auth_id;
    char              *auth_secret;
    char              *auth_scope;       /* "connection" or "session:NAME" */
    uint64_t           heartbeat_ms;     /* 0: none */
    int                cod;
    uint64_t           request_timeout_ms;
    unsigned           queue_limit;
    uint64_t           queue_timeout_ms;
    struct xg_stale   *stale;            /* in conf order: first match */
    size_t             nstale;
    char              *auth_id_src;      /* env:/file: of the id, or NULL */
    char              *auth_secret_src;  /* env:/file: of the secret (-T) */
};

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

/* ---- instance ---- */

enum dr_kind {
    K_CLIENT = 1,      /* a client's request, forwarded */
    K_AUTH,            /* restore: public/auth */
    K_REFRESH,         /* public/auth with the refresh_token grant */
    K_HEARTBEAT,       /* restore: public/set_heartbeat */
    K_COD,             /* restore: private/enable_cancel_on_disconnect */
    K_TEST,            /* our answer to a test_request */
    K_CANCEL,          /* a client's emulated cancel-on-disconnect */
    K_BACKFILL,        /* trades missed during an outage */
    K_ORDERS,          /* user.orders reconcile after an outage */
    K_CTRADES,         /* a currency's trades missed during an outage */
    K_ORDERS_CHECK,    /* a client's tracked orders against get_open_orders */
    K_COD_CHECK,       /* the same for a client that left, before cancels */
    K_COD_ORDER        /* an order request of a client that left (COD on) */
};

struct dr_client;
struct dr_cod;

struct dr {
    struct xg_upstream    *up;
    const struct dr_conf  *cf;
    const char            *name;
    struct event_base     *base;
    struct xg_registry    *reg;
    struct xg_session     *s;            /* subscriptions */
    uint64_t               last_in_ms;
    int                    testnet;       /* as the exchange last said */
    uint64_t               book_gaps;     /* chain breaks detected */
    uint64_t               book_resyncs;  /* bridging changes computed */
    uint64_t               book_errors;   /* malformed book messages */
    uint64_t               gap_notices;   /* exgate/gap messages sent */
    uint64_t               orders_reconciled; /* order states delivered */
    uint64_t               orders_reconciles; /* channels reconciled */
    uint64_t               currency_trades_backfilled;
    uint64_t               unrepaired_gaps;
    uint64_t               requests_answered;  /* clients' requests: */
    uint64_t               requests_timed_out;
    uint64_t               requests_outcome_unknown;
    uint64_t               requests_rejected;  /* refused by exgate */
    struct xg_track_env    track;          /* its continuity trackers' */
    char                  *refresh_token;
    struct event          *ev_tick;
    struct event          *ev_refresh;
    struct dr_client      *clients;
    unsigned               nclients;
    /* the gateway settings of the clients (unsubscribe_linger), kept from
       the first client: the linger still applies once the last one left */
    const struct xg_gateway_conf *gc;
    struct dr_cod         *cods;         /* clients that left, COD unsettled */
    uint64_t               cod_last_id;
    uint64_t               cod_checks;    /* get_open_orders sent for them */
    uint64_t               cod_cancels;   /* private/cancel sent */
};

struct dr_client {
    struct dr             *d;
    struct xg_client      *c;
    struct xg_reg_client  *rc;
    int                    authed;
    char                   refresh[48];
    int                    cod;
    size_t                 check_at;      /* tracked orders: check at this */
    uint64_t               hb_ms;
    int                    hb_waiting;
    struct event          *ev_hb;
    uint64_t               rate_start_ms;
    unsigned               rate_count;
    int                    notify_gaps;   /* exgate/notify_gaps enabled */
    struct dr_client      *prev, *next;
};

static void dr_book_joined(struct dr_client *dc, struct xg_reg_channel *ch,
    int live);
static void dr_book_left(struct dr_client *dc, struct xg_reg_channel *ch);
static void dr_books_left(struct dr_client *dc);
static void dr_tracks_down(struct dr *d);
static struct xg_track *dr_track_get(struct dr *d, struct xg_reg_channel *ch);
static void dr_track_confirmed(struct dr *d, struct xg_reg_channel *ch);
static int dr_fetch_retry(struct dr *d, struct xg_reg_req *q,
    const char *why, int len);
static void dr_fetch_answer(struct dr *d, struct xg_reg_req *q,
    const struct xg_jspan *result, const struct xg_jspan *error);
static int dr_error_transient(const struct xg_jspan *error);
static int dr_chan_recovers(const struct xg_reg_channel *ch);
static void dr_gap_notice(struct dr *d, struct xg_reg_channel *ch,
    uint64_t duration_ms, const char *reason);

/* ---- small helpers ---- */

static char *
dr_strndup_span(const struct xg_jspan *s)
{
    return xg_strndup(s->p, s->len);
}

static void
dr_hex(const unsigned char *in, size_t n, char *out)
{
    static const char hx[] = "0123456789abcdef";
    size_t i;

    for (i = 0; i < n; i++) {
        out[2 * i] = hx[in[i] >> 4];
        out[2 * i + 1] = hx[in[i] & 15];
    }
    out[2 * n] = '\0';
}

static void
dr_random_hex(char *out, size_t nbytes)
{
    unsigned char b[32];

    if (nbytes > sizeof(b)) {
        nbytes = sizeof(b);
    }
    if (RAND_bytes(b, (int) nbytes) != 1) {
        /* never a predictable token: abort rather than go on */
        xg_log_error("deribit: RAND_bytes failed");
        abort();
    }
    dr_hex(b, nbytes, out);
}

/* HMAC-SHA256(SECRET, "TS\nNONCE\nDATA") as lowercase hex (65 bytes). */
static void
dr_signature(const char *secret, const char *ts, const char *nonce,
    const char *data, char *out)
{
    unsigned char mac[EVP_MAX_MD_SIZE];
    unsigned int maclen = 0;
    size_t n = strlen(ts) + strlen(nonce) + strlen(data) + 3;
    char *msg = xg_malloc(n);

    snprintf(msg, n, "%s\n%s\n%s", ts, nonce, data);
    HMAC(EVP_sha256(), secret, (int) strlen(secret), (unsigned char *) msg,
        strlen(msg), mac, &maclen);
    free(msg);
    dr_hex(mac, maclen, out);
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

static void
dr_reply_json(struct dr_client *dc, const char *id, json_t *result)
{
    char *r = json_dumps(result, JSON_COMPACT | JSON_ENCODE_ANY);

    dr_reply(dc, id, r ? r : "null");
    free(r);
    json_decref(result);
}

/* A JSON-RPC error; ID NULL -> "id":null; REASON, if any, in data.reason. */
static void
dr_error(struct dr_client *dc, const char *id, int code, const char *message,
    const char *reason)
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
        (unsigned long long) xg_wall_us(), dc->d->testnet ? "true" : "false");
    free(e);
    xg_client_count_error(dc->c);
    dr_client_send_str(dc, s);
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

    event_add(d->ev_tick, &tv);
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
           || q->kind == K_CTRADES;
}

static int
dr_send(struct dr *d, struct xg_reg_req *q)
{
    q->timed = dr_timed(q);
    return xg_session_send(d->s, q);
}

/* Builds an internal request {"jsonrpc":"2.0","id":0,"method":M,"params":P}. */
static struct xg_reg_req *
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
static void
dr_submit(struct dr *d, struct xg_reg_req *q, struct dr_client *dc)
{
    /* a client's cancel-on-disconnect waits for the exchange however long
       it takes: its orders must not outlive it */
    q->nolimit = q->kind == K_CANCEL || q->kind == K_COD_CHECK;
    q->timed = dr_timed(q);
    if (xg_session_submit(d->s, q) == XG_OK) {
        return;
    }
    if (dc != NULL) {
        d->requests_rejected++;
        dr_error(dc, q->client_id, 13028, "upstream unavailable",
            "the exchange connection is down and the request queue is full");
    }
    xg_registry_req_free(q);
}

/* Answers a complete subscribe request and frees it. */
static void
dr_subreq_answer(struct dr *d, struct xg_reg_subreq *sr)
{
    struct dr_client *dc = sr->client ? sr->client->owner : NULL;

    if (dc != NULL) {
        if (sr->error != NULL) {
            size_t n = strlen(sr->client_id) + strlen(sr->error) + 64;
            char *s = xg_malloc(n);

            snprintf(s, n, "{\"jsonrpc\":\"2.0\",\"id\":%s,\"error\":%s}",
                sr->client_id, sr->error);
            xg_client_count_error(dc->c);
            dr_client_send_str(dc, s);
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
    evtimer_add(d->ev_refresh, &tv);
    xg_log_info("upstream %s#%u: token valid for %lld s, refresh in %llu ms",
        d->name, xg_upstream_conn_id(d->up),
        (long long) json_integer_value(exp), (unsigned long long) ms);
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
dr_restore_step(void *p, int step)
{
    struct dr *d = p;
    const struct dr_conf *cf = d->cf;
    unsigned conn = xg_upstream_conn_id(d->up);

    switch (step) {
    case 0:
        if (cf->auth == DR_AUTH_NONE) {
            return XG_OK;
        }
        xg_log_info("upstream %s#%u: restore: public/auth (%s, scope %s)",
            d->name, conn, cf->auth == DR_AUTH_SIGNATURE
            ? "client_signature" : "client_credentials",
            cf->auth_scope ? cf->auth_scope : "connection");
        dr_send(d, dr_internal(K_AUTH, "public/auth", dr_auth_params(d)));
        return XG_AGAIN;
    case 1:
        if (cf->heartbeat_ms == 0) {
            return XG_OK;
        }
        {
            json_int_t s = (json_int_t) ((cf->heartbeat_ms + 999) / 1000);

            xg_log_info("upstream %s#%u: restore: public/set_heartbeat "
                "%lld s", d->name, conn, (long long) s);
            dr_send(d, dr_internal(K_HEARTBEAT, "public/set_heartbeat",
                json_pack("{s:I}", "interval", s)));
        }
        return XG_AGAIN;
    case 2:
        if (!cf->cod) {
            return XG_OK;
        }
        xg_log_info("upstream %s#%u: restore: "
            "private/enable_cancel_on_disconnect", d->name, conn);
        dr_send(d, dr_internal(K_COD, "private/enable_cancel_on_disconnect",
            json_pack("{s:s}", "scope", "connection")));
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
        xg_log_info("upstream %s#%u: refreshing the token",
            d->name, xg_upstream_conn_id(d->up));
        dr_send(d, dr_internal(K_REFRESH, "public/auth",
            json_pack("{s:s, s:s}", "grant_type", "refresh_token",
                "refresh_token", d->refresh_token)));
    } else {
        dr_send(d, dr_internal(K_AUTH, "public/auth", dr_auth_params(d)));
    }
}

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

#define DR_COD_CHECK_MIN    128

struct dr_cod {
    uint64_t         id;          /* the tag of its requests */
    char            *name;        /* the client's, for the log */
    char            *reason;      /* why it left */
    json_t          *owned;       /* ids of the orders it placed (a set) */
    json_t          *check;       /* ids to check with the next answer */
    json_t          *cancelled;   /* ids a cancel was sent for */
    int              checking;    /* a K_COD_CHECK queued or in flight */
    unsigned         refs;        /* its requests queued or in flight */
    struct dr_cod   *prev, *next;
};

static int
dr_is_order_place(const char *method)
{
    return method != NULL && (strcmp(method, "private/buy") == 0
                              || strcmp(method, "private/sell") == 0
                              || strcmp(method, "private/close_position")
                                 == 0);
}

static int
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
    xg_log_info("%s: checking %zu tracked orders against the exchange's "
        "open orders", xg_client_name(dc->c), n);
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
static void
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
static void
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
        xg_log_warn("%s: the check of its tracked orders failed: %.*s",
            xg_client_name(dc->c),
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
    xg_log_info("%s: %zu of %d tracked orders no longer open, forgotten; "
        "%zu tracked", xg_client_name(dc->c), gone, q->nchan,
        dc->rc->norders);
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

static void
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
    xg_log_info("%s: cancel-on-disconnect (%s) done: %zu orders cancelled",
        cod->name, cod->reason, json_object_size(cod->cancelled));
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
    xg_log_warn("%s: cancel-on-disconnect (%s): cancelling order %s",
        cod->name, cod->reason, oid);
    q = dr_internal(K_CANCEL, "private/cancel",
        json_pack("{s:s}", "order_id", oid));
    q->client_id = xg_strdup(oid);
    q->tag = cod->id;
    cod->refs++;
    d->cod_cancels++;
    dr_submit(d, q, NULL);
}

/* Checks COD's ids with one get_open_orders, unless one is on its way. */
static void
dr_cod_check(struct dr *d, struct dr_cod *cod)
{
    struct xg_reg_req *q;

    if (cod->checking || json_object_size(cod->check) == 0) {
        return;
    }
    xg_log_info("%s: cancel-on-disconnect (%s): checking %zu orders against "
        "the exchange's open orders", cod->name, cod->reason,
        json_object_size(cod->check));
    q = dr_internal(K_COD_CHECK, "private/get_open_orders", NULL);
    q->tag = cod->id;
    cod->checking = 1;
    cod->refs++;
    d->cod_checks++;
    dr_submit(d, q, NULL);
}

/* The check's answer: cancel what is still open (all of it if refused). */
static void
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
        xg_log_warn("%s: cancel-on-disconnect: private/get_open_orders "
            "failed (%.*s): cancelling its %zu orders unchecked", cod->name,
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
        xg_log_info("%s: cancel-on-disconnect: %zu of its %zu orders still "
            "open", cod->name, nopen, json_object_size(check));
    }
    json_decref(open);
    json_decref(check);
    dr_cod_unref(d, cod);
}

/* An order request of a client that left: cancel the order it opened. */
static void
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
                xg_log_info("%s: cancel-on-disconnect: %s answered after "
                    "the client left: order %s is open", cod->name,
                    q->method, oid);
                dr_cod_cancel(d, cod, oid);
            }
        }
        json_decref(r);
    }
    dr_cod_unref(d, cod);
}

static void
dr_on_cod_cancel(struct dr *d, struct xg_reg_req *q,
    const struct xg_jspan *error)
{
    struct dr_cod *cod = dr_cod_find(d, q->tag);
    const char *oid = q->client_id ? q->client_id : "?";

    if (error->p != NULL) {
        xg_log_warn("upstream %s: cancel-on-disconnect: %s refused: %.*s",
            d->name, oid, (int) (error->len > 200 ? 200 : error->len),
            error->p);
    } else {
        xg_log_info("upstream %s: cancel-on-disconnect: order %s cancelled",
            d->name, oid);
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
static int
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
        xg_log_warn("%s: cancel-on-disconnect: %s in flight when the "
            "connection dropped: the order it may have placed is unknown "
            "and is not cancelled", cod->name, q->method);
    }
    xg_registry_req_free(q);
    if (cod != NULL) {
        dr_cod_unref(d, cod);
    }
    return 1;
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
        xg_log_debug("upstream %s: answer to %s for a client that left",
            d->name, q->method);
        return;
    }
    dr_tracked_answer(d, dc, q->method, result);
    out = xg_jscan_splice(data, len, id, q->client_id, strlen(q->client_id),
        &n);
    xg_client_send(dc->c, out, n);
    free(out);
}

static void
dr_fail(struct dr *d, const char *what, const struct xg_jspan *error)
{
    char reason[256];

    snprintf(reason, sizeof(reason), "%s refused: %.*s", what,
        error->p ? (int) (error->len > 180 ? 180 : error->len) : 7,
        error->p ? error->p : "no answer");
    xg_log_error("upstream %s#%u: %s", d->name, xg_upstream_conn_id(d->up),
        reason);
    xg_upstream_fail(d->up, reason);
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
                xg_log_warn("upstream %s: token refresh refused, "
                    "authenticating again", d->name);
                free(d->refresh_token);
                d->refresh_token = NULL;
                dr_send(d, dr_internal(K_AUTH, "public/auth",
                    dr_auth_params(d)));
                break;
            }
            dr_fail(d, "public/auth", error);
            break;
        }
        r = json_loadb(result->p, result->len, 0, NULL);
        dr_refresh_schedule(d, r);
        json_decref(r);
        xg_session_step_done(d->s);
        break;
    case K_HEARTBEAT:
        if (error->p != NULL) {
            dr_fail(d, "public/set_heartbeat", error);
            break;
        }
        xg_session_step_done(d->s);
        break;
    case K_COD:
        if (error->p != NULL) {
            dr_fail(d, "private/enable_cancel_on_disconnect", error);
            break;
        }
        xg_session_step_done(d->s);
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
    }
    return 0;
}

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
static void
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

static void
dr_track_fanout(void *ctx, void *chan, const char *data, size_t len)
{
    struct xg_reg_channel *ch = chan;

    dr_fanout(ctx, ch, data, len);
}

static void
dr_track_notice(void *ctx, void *chan, uint64_t duration_ms,
    const char *reason)
{
    dr_gap_notice(ctx, chan, duration_ms, reason);
}

static uint64_t
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

/*
 * A notification on a book channel: keeps the book and decides what each
 * subscriber gets: the original bytes (a change in the chain), or nothing
 * more (this function delivered a snapshot or a bridge, or dropped it).
 */
static enum xg_track_verdict
dr_book_parse(struct xg_track *t, const char *data, size_t len,
    struct xg_track_seq *seq)
{
    static const char *const pkeys[] = { "params" }, *const dkeys[] = {
        "data" };
    struct dr *d = t->env->ctx;
    struct xg_reg_channel *ch = t->chan;
    struct dr_book *b = t->data;
    const struct xg_book_state *from;
    struct xg_jspan params, v;
    enum xg_book_result r;
    char *bridge = NULL;
    size_t i;

    if (xg_jscan_object(data, len, pkeys, 1, &params) != XG_OK
        || params.p == NULL
        || xg_jscan_object(params.p, params.len, dkeys, 1, &v) != XG_OK
        || v.p == NULL) {
        return XG_TRACK_PASS;
    }
    /* no mark is taken before applying: a malformed snapshot would leave
       it behind, stale, while the chain goes on (xg_book_replaced() gives
       the replaced state of a valid one instead) */
    r = xg_venue_deribit_book_apply_text(b->book, v.p, v.len);
    switch (r) {
    case XG_BOOK_APPLIED:
        return XG_TRACK_PASS;   /* a change in the chain: as it is */
    case XG_BOOK_SNAPSHOT:
        break;
    case XG_BOOK_GAP:
        xg_log_warn("upstream %s: %s: gap at change_id %llu: resubscribing "
            "for a new snapshot", d->name, ch->name,
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
            xg_log_warn("upstream %s: %s: %s; dropped", d->name, ch->name,
                xg_book_last_error(b->book));
            return XG_TRACK_DROP;
        }
        xg_log_warn("upstream %s: %s: %s; passed through (the book is not "
            "in sync)", d->name, ch->name, xg_book_last_error(b->book));
        return XG_TRACK_PASS;
    }
    /* a snapshot: bridge those who hold the old book, the others get it */
    from = b->mark != NULL ? b->mark : xg_book_replaced(b->book);
    if (from != NULL) {
        bridge = xg_venue_deribit_book_bridge(from, b->book, NULL);
        d->book_resyncs++;
        xg_log_info("upstream %s: %s: new snapshot bridged with a change "
            "(%llu -> %llu)", d->name, ch->name,
            (unsigned long long) xg_book_state_seq(from),
            (unsigned long long) xg_book_seq(b->book));
    }
    {
        /* each text encoded once, shared by reference */
        struct xg_msg *snap = xg_msg_new(data, len);
        struct xg_msg *br = bridge ? xg_msg_new(bridge, strlen(bridge))
                                   : NULL;

        for (i = 0; i < ch->nsubs; i++) {
            struct dr_client *dc = ch->subs[i]->owner;

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

/* A book is repaired by a new snapshot, not a fetch: nothing is held. */
static const struct xg_track_kind dr_book_kind = {
    "book", "resync", 0, dr_book_create, dr_book_parse, NULL, NULL, NULL,
    dr_book_lost, dr_book_free
};

/* CH's book, or NULL (not a book channel, or not made yet). */
static struct dr_book *
dr_book_of(const struct xg_reg_channel *ch)
{
    const struct xg_track *t = ch->ext;

    return t != NULL && t->kind == &dr_book_kind ? t->data : NULL;
}

/* DC joined CH: a snapshot now if the book is in sync, else later. */
static void
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

/* DC left CH (or is gone): forget that it waits for a snapshot. */
static void
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
static void
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
            xg_log_info("upstream %s: %s: fetching the account's trades "
                "after trade_seq %llu", t->env->name, t->name,
                (unsigned long long) tr->last_seq);
            q = dr_internal(K_BACKFILL,
                "private/get_user_trades_by_instrument",
                json_pack("{s:s, s:I, s:i, s:s}", "instrument_name",
                    tr->instrument, "start_seq",
                    (json_int_t) tr->last_seq + 1, "count", 1000, "sorting",
                    "asc"));
        } else {
            xg_log_info("upstream %s: %s: fetching the account's trades "
                "since the channel was subscribed", t->env->name, t->name);
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
        xg_log_info("upstream %s: %s: trades %llu..%llu missed during the "
            "outage: backfilling", t->env->name, t->name,
            (unsigned long long) from, (unsigned long long) to);
    } else {
        xg_log_info("upstream %s: %s: trades from %llu on missed during the "
            "outage: backfilling", t->env->name, t->name,
            (unsigned long long) from);
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
    xg_log_info("upstream %s: %s: %llu trades backfilled%s", t->env->name,
        t->name, (unsigned long long) (tr->last_seq - before),
        more ? " (more were missed: over 1000)" : "");
    if (more) {
        xg_track_notice(t, "trades beyond the backfill");
    }
    json_decref(r);
    return XG_OK;
}

static const struct xg_track_kind dr_trades_kind = {
    "trades", "backfill", XG_TRACK_KEEP_HELD, dr_trades_create,
    dr_trades_parse, dr_trades_fetch, dr_trades_apply, NULL, NULL,
    dr_trades_free
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
    xg_log_info("upstream %s: %s: fetching the %s trades since %lld",
        t->env->name, t->name, c->user ? "account's" : "market's",
        (long long) from);
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
    xg_log_info("upstream %s: %s: %zu trades backfilled%s", t->env->name,
        t->name, json_array_size(keep),
        more ? " (more were missed: over 1000)" : "");
    if (more) {
        xg_track_notice(t, "trades beyond the backfill");
    }
    json_decref(keep);
    json_decref(r);
    return XG_OK;
}

static const struct xg_track_kind dr_ctrades_kind = {
    "trades", "backfill", XG_TRACK_KEEP_HELD, dr_ctrades_create,
    dr_ctrades_parse, dr_ctrades_fetch, dr_ctrades_apply, NULL, NULL,
    dr_ctrades_free
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
    xg_log_info("upstream %s: %s: fetching the account's orders to "
        "reconcile %zu remembered", t->env->name, t->name,
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
            xg_log_warn("upstream %s: %s: over %d orders closed since: the "
                "older ones are not reconciled", t->env->name, t->name,
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
        xg_log_info("upstream %s: %s: %d open orders in neither list: "
            "asking their state", t->env->name, t->name, n);
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
    xg_log_info("upstream %s: %s: reconciled %zu orders after the outage",
        t->env->name, t->name, sent);
}

/* Its fetch dying with the connection delivers what it held. */
static const struct xg_track_kind dr_orders_kind = {
    "orders", "reconcile", 0, dr_orders_create, dr_orders_parse,
    dr_orders_fetch, dr_orders_apply, dr_orders_complete, NULL,
    dr_orders_free
};

/* The channels followed by a tracker, by kind. */
static const struct xg_track_kind *const dr_track_kinds[] = {
    &dr_book_kind, &dr_trades_kind, &dr_ctrades_kind, &dr_orders_kind
};

/* CH's tracker, made now if its name is one a tracker kind follows. */
static struct xg_track *
dr_track_get(struct dr *d, struct xg_reg_channel *ch)
{
    size_t i;

    for (i = 0; ch->ext == NULL && i < XG_NELEM(dr_track_kinds); i++) {
        ch->ext = xg_track_new(dr_track_kinds[i], &d->track, ch->name, ch);
    }
    return ch->ext;
}

/* The registry's channel free callback: CH's tracker goes with it. */
static void
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
static void
dr_tracks_down(struct dr *d)
{
    xg_registry_channel_foreach(d->reg, dr_track_down_cb, d);
}

/* CH was confirmed by the exchange: tracked from now on (so that an
   outage before its first message is still seen); a gap is fetched. */
static void
dr_track_confirmed(struct dr *d, struct xg_reg_channel *ch)
{
    struct xg_track *t = dr_track_get(d, ch);

    if (t != NULL) {
        xg_track_resume(t, "confirmed");
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
static int
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
static int
dr_fetch_retry(struct dr *d, struct xg_reg_req *q, const char *why, int len)
{
    struct xg_track *t = dr_fetch_track(d, q);

    return t != NULL && xg_track_retry(t, q, why, len);
}

/* The answer (or the give-up) of a fetch, to its channel's tracker. */
static void
dr_fetch_answer(struct dr *d, struct xg_reg_req *q,
    const struct xg_jspan *result, const struct xg_jspan *error)
{
    struct xg_track *t = dr_fetch_track(d, q);

    if (t != NULL) {
        xg_track_answer(t, q, result, error);
    }
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
static void
dr_gap_notice(struct dr *d, struct xg_reg_channel *ch, uint64_t duration_ms,
    const char *reason)
{
    struct xg_msg *m = NULL;
    size_t i;

    xg_log_info("upstream %s: %s: unrepaired gap of %llu ms (%s)", d->name,
        ch->name, (unsigned long long) duration_ms, reason);
    d->unrepaired_gaps++;
    for (i = 0; i < ch->nsubs; i++) {
        struct dr_client *dc = ch->subs[i]->owner;

        if (!dc->notify_gaps) {
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

/* Reads a Deribit message: an answer (by id), a subscription
   notification (by channel), or what the module handles itself. */
static void
dr_classify(void *p, const char *data, size_t len, struct xg_umsg *m)
{
    static const char *keys[] = { "id", "method", "params", "result",
                                  "error", "testnet" };
    static const char *ckeys[] = { "channel" };
    struct dr *d = p;
    struct xg_jspan v[6], c[1];

    d->last_in_ms = xg_now_ms();
    if (xg_jscan_object(data, len, keys, 6, v) != XG_OK) {
        xg_log_warn("upstream %s: a message that is not a JSON object "
            "dropped (%zu bytes)", d->name, len);
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
        if (xg_jscan_object(v[2].p, v[2].len, ckeys, 1, c) != XG_OK
            || c[0].p == NULL || c[0].len < 2 || c[0].p[0] != '"') {
            xg_log_warn("upstream %s: subscription message without a "
                "channel dropped", d->name);
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
            /* answered here, never forwarded to a client */
            dr_send(d, dr_internal(K_TEST, "public/test", NULL));
        }
        return;
    }
    if (v[4].p != NULL) {
        /* no id (or "id":null): nobody to route it to */
        xg_log_warn("upstream %s#%u: error with no id from the exchange, "
            "not forwarded: %.*s", d->name, xg_upstream_conn_id(d->up),
            (int) (v[4].len > 300 ? 300 : v[4].len), v[4].p);
        return;
    }
    xg_log_debug("upstream %s: unhandled message (%zu bytes)", d->name, len);
}

static void
dr_on_message(void *p, struct xg_conn *c, const unsigned char *udata,
    size_t len)
{
    struct dr *d = p;

    xg_session_message(d->s, (const char *) udata, len);
}

static void
dr_on_open(void *p, struct xg_conn *c)
{
    struct dr *d = p;

    d->last_in_ms = xg_now_ms();
    xg_session_open(d->s);
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
        || q->kind == K_COD_CHECK) {
        return XG_LOST_REPLAY;
    }
    if (q->kind == K_CLIENT && dc != NULL) {
        xg_log_warn("upstream %s: %s: %s in flight when the connection "
            "dropped: outcome unknown", d->name, xg_client_name(dc->c),
            q->method);
        dr_error(dc, q->client_id, 13028,
            "upstream connection lost, outcome unknown",
            "the request reached the exchange connection but its answer "
            "was lost; check the state (e.g. open orders) before retrying");
        d->requests_outcome_unknown++;
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

    if (queued) {
        if (dc != NULL) {
            d->requests_rejected++;
            xg_log_warn("upstream %s: %s: %s waited queue_timeout for the "
                "exchange connection", d->name, xg_client_name(dc->c),
                q->method);
            dr_error(dc, q->client_id, 13028, "upstream unavailable",
                "the exchange connection did not come back within "
                "queue_timeout; the request was not sent");
        } else {
            xg_log_warn("upstream %s: %s dropped after queue_timeout",
                d->name, q->method);
        }
        return 0;
    }
    if (q->kind == K_BACKFILL || q->kind == K_ORDERS
        || q->kind == K_CTRADES) {
        struct xg_jspan none = { NULL, 0 };
        struct xg_jspan err = { timed_out, sizeof(timed_out) - 1 };

        xg_log_warn("upstream %s: %s (%s) timed out after %llu ms",
            d->name, q->method, q->chan ? q->chan[0] : "?",
            (unsigned long long) d->cf->request_timeout_ms);
        if (dr_fetch_retry(d, q, err.p, (int) err.len)) {
            return 1;
        }
        dr_fetch_answer(d, q, &none, &err);
        return 0;
    }
    d->requests_timed_out++;
    if (dc != NULL) {
        xg_log_warn("upstream %s: %s: %s timed out after %llu ms",
            d->name, xg_client_name(dc->c), q->method,
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

    evtimer_del(d->ev_refresh);
    if (d->cf->auth_scope == NULL
        || strncmp(d->cf->auth_scope, "session:", 8) != 0) {
        /* connection-scoped tokens died with the socket */
        free(d->refresh_token);
        d->refresh_token = NULL;
    }
    /* in flight: replay what is harmless, report the rest as unknown */
    xg_session_down(d->s, &replayed, &lost);
    dr_tracks_down(d);
    xg_registry_upstream_reset(d->reg);
    xg_log_info("upstream %s: down (%s): %u requests to replay, %u with "
        "unknown outcome, %zu channels to restore", d->name, reason,
        replayed, lost, xg_registry_nchannels(d->reg));
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
        xg_log_warn("upstream %s#%u: %s", d->name,
            xg_upstream_conn_id(d->up), reason);
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
        xg_log_warn("%s: heartbeat failure: no public/test within %llu ms",
            xg_client_name(dc->c), (unsigned long long) dc->hb_ms);
        xg_client_close(dc->c, 1000, "heartbeat failure");
        return;
    }
    dc->hb_waiting = 1;
    xg_client_send(dc->c, tr, sizeof(tr) - 1);
    tv.tv_sec = (time_t) (dc->hb_ms / 1000);
    tv.tv_usec = (suseconds_t) ((dc->hb_ms % 1000) * 1000);
    evtimer_add(dc->ev_hb, &tv);
}

static void *
dr_client_open(void *p, struct xg_client *c)
{
    struct dr *d = p;
    struct dr_client *dc = xg_calloc(1, sizeof(*dc));

    dc->d = d;
    dc->c = c;
    dc->rc = xg_registry_client_new(d->reg, dc);
    dc->rc->out = c;
    dc->authed = !xg_client_conf(c)->client_auth;
    d->gc = xg_client_conf(c);
    xg_session_set_linger(d->s, d->gc->unsubscribe_linger_ms);
    dc->ev_hb = evtimer_new(d->base, dr_client_hb, dc);
    dc->next = d->clients;
    if (d->clients) {
        d->clients->prev = dc;
    }
    d->clients = dc;
    d->nclients++;
    return dc;
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
    xg_log_info("%s: cancel-on-disconnect (%s): %zu orders it placed, %u "
        "order requests in flight", cod->name, reason, dc->rc->norders,
        cod->refs);
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
}

static void
dr_client_close(void *p, void *cs, const char *reason)
{
    struct dr *d = p;
    struct dr_client *dc = cs;

    if (dc->cod) {
        dr_client_cod(d, dc, reason);
    }
    dr_books_left(dc);
    xg_registry_client_free(d->reg, dc->rc, xg_now_ms());
    event_free(dc->ev_hb);
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

static int
dr_cred_find(const struct xg_gateway_conf *gc, const char *id)
{
    int i;

    for (i = 0; id != NULL && i < gc->ncreds; i++) {
        if (strcmp(gc->creds[i].id, id) == 0) {
            return i;
        }
    }
    return -1;
}

/* A client-supplied string made safe for one log line (truncated). */
static void
dr_log_safe(const char *in, char *out, size_t n)
{
    size_t i;

    for (i = 0; i + 1 < n && in[i] != '\0'; i++) {
        unsigned char ch = (unsigned char) in[i];

        out[i] = ch >= 0x20 && ch < 0x7f && ch != '"' && ch != '\\'
                 ? (char) ch : '?';
    }
    out[i] = '\0';
}

static int
dr_str_eq_ct(const char *a, const char *b)
{
    size_t n = strlen(a);

    return n == strlen(b) && CRYPTO_memcmp(a, b, n) == 0;
}

/* public/auth from a local client: the gateway's own credentials policy. */
static void
dr_client_auth(struct dr_client *dc, const char *id, json_t *params)
{
    const struct xg_gateway_conf *gc = xg_client_conf(dc->c);
    const char *grant = json_string_value(json_object_get(params,
        "grant_type"));
    const char *cid = json_string_value(json_object_get(params, "client_id"));
    json_t *state = json_object_get(params, "state");
    char token[48], refresh[48];
    int ok = 0, i;
    json_t *res;

    if (grant == NULL) {
        dr_error(dc, id, -32602, "Invalid params",
            "grant_type is required");
        return;
    }
    if (!gc->client_auth) {
        ok = 1;
    } else if (strcmp(grant, "client_credentials") == 0) {
        const char *sec = json_string_value(json_object_get(params,
            "client_secret"));

        i = dr_cred_find(gc, cid);
        ok = i >= 0 && sec != NULL && dr_str_eq_ct(sec, gc->creds[i].secret);
    } else if (strcmp(grant, "client_signature") == 0) {
        json_t *tsj = json_object_get(params, "timestamp");
        const char *nonce = json_string_value(json_object_get(params,
            "nonce"));
        const char *data = json_string_value(json_object_get(params, "data"));
        const char *sig = json_string_value(json_object_get(params,
            "signature"));
        char ts[32], want[2 * EVP_MAX_MD_SIZE + 1];
        long long t = -1, now = (long long) (xg_wall_us() / 1000);

        if (json_is_integer(tsj)) {
            t = json_integer_value(tsj);
        } else if (json_is_string(tsj)) {
            t = strtoll(json_string_value(tsj), NULL, 10);
        }
        i = dr_cred_find(gc, cid);
        if (i >= 0 && nonce != NULL && sig != NULL && t > 0
            && t > now - DR_SIG_WINDOW_MS && t < now + DR_SIG_WINDOW_MS) {
            snprintf(ts, sizeof(ts), "%lld", t);
            dr_signature(gc->creds[i].secret, ts, nonce, data ? data : "",
                want);
            ok = dr_str_eq_ct(sig, want);
        }
    } else if (strcmp(grant, "refresh_token") == 0) {
        const char *rt = json_string_value(json_object_get(params,
            "refresh_token"));

        ok = rt != NULL && dc->refresh[0] != '\0'
             && dr_str_eq_ct(rt, dc->refresh);
        if (!ok) {
            xg_log_info("%s: public/auth refresh_token refused",
                xg_client_name(dc->c));
            dr_error(dc, id, 13009, "unauthorized", "invalid refresh token");
            return;
        }
    } else {
        dr_error(dc, id, -32602, "Invalid params", "unknown grant_type");
        return;
    }
    if (!ok) {
        char safe[65];

        dr_log_safe(cid ? cid : "", safe, sizeof(safe));
        xg_log_warn("%s: public/auth (%s) refused for client_id \"%s\"",
            xg_client_name(dc->c), strcmp(grant, "client_signature") == 0
            ? "client_signature" : "client_credentials", safe);
        dr_error(dc, id, 13004, "invalid_credentials", NULL);
        return;
    }
    dc->authed = 1;
    memcpy(token, "xg.", 3);
    dr_random_hex(token + 3, 16);
    memcpy(refresh, "xgr.", 4);
    dr_random_hex(refresh + 4, 16);
    snprintf(dc->refresh, sizeof(dc->refresh), "%s", refresh);
    {
        char safe[65], sgrant[33];

        dr_log_safe(cid ? cid : "", safe, sizeof(safe));
        dr_log_safe(grant, sgrant, sizeof(sgrant));
        xg_log_info("%s: authenticated (%s%s%s)", xg_client_name(dc->c),
            sgrant, cid ? ", client_id " : "", safe);
    }
    res = json_pack("{s:s, s:i, s:s, s:s, s:s, s:[]}",
        "access_token", token, "expires_in", DR_TOKEN_TTL_S,
        "refresh_token", refresh, "scope", "connection",
        "token_type", "bearer", "enabled_features");
    if (state != NULL) {
        json_object_set(res, "state", state);
    }
    dr_reply_json(dc, id, res);
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
    xg_session_subscribe(d->s, dc->rc, id, names, n,
        gc->client_max_channels, public_only);
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
    evtimer_add(dc->ev_hb, &tv);
    dr_reply(dc, id, "\"ok\"");
}

/* 1 when the client is over client_rate requests in this second. */
static int
dr_rate_exceeded(struct dr_client *dc)
{
    unsigned rate = xg_client_conf(dc->c)->client_rate;
    uint64_t now;

    if (rate == 0) {
        return 0;
    }
    now = xg_now_ms();
    if (now - dc->rate_start_ms >= 1000) {
        dc->rate_start_ms = now;
        dc->rate_count = 0;
    }
    return ++dc->rate_count > rate;
}

static void
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
        xg_log_info("%s: batch request refused", xg_client_name(dc->c));
        dr_error(dc, NULL, -32600, "Invalid Request",
            "batch requests are not supported");
        return;
    }
    if (xg_jscan_object(data, len, keys, 1, v) != XG_OK) {
        xg_log_info("%s: unparseable request (%zu bytes)",
            xg_client_name(dc->c), len);
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
        xg_log_info("%s: request of %zu bytes over 32 kB refused",
            xg_client_name(dc->c), len);
        id = dr_strndup_span(&v[0]);
        dr_error(dc, id, -32600, "request entity too large", NULL);
        goto done;
    }
    /* jansson cannot hold ids of any size: parse with a placeholder id */
    id = dr_strndup_span(&v[0]);
    work = xg_jscan_splice(data, len, &v[0], "0", 1, &wlen);
    req = json_loadb(work, wlen, JSON_REJECT_DUPLICATES, &jerr);
    if (req == NULL || !json_is_object(req)) {
        xg_log_info("%s: unparseable request: %s", xg_client_name(dc->c),
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
    if (dr_rate_exceeded(dc)) {
        xg_log_warn("%s: over client_rate: %s refused",
            xg_client_name(dc->c), method);
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
        evtimer_del(dc->ev_hb);
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
        xg_log_info("%s: %s before public/auth: 13009",
            xg_client_name(dc->c), method);
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
        xg_log_info("%s: gap notices %s", xg_client_name(dc->c),
            dc->notify_gaps ? "enabled" : "disabled");
        dr_reply_json(dc, id, json_pack("{s:b}", "enabled",
            dc->notify_gaps));
        goto done;
    }
    if (strcmp(method, "private/enable_cancel_on_disconnect") == 0) {
        dc->cod = 1;
        xg_log_info("%s: cancel-on-disconnect enabled (emulated per client)",
            xg_client_name(dc->c));
        dr_reply(dc, id, "\"ok\"");
        goto done;
    }
    if (strcmp(method, "private/disable_cancel_on_disconnect") == 0) {
        dc->cod = 0;
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
        xg_client_close(dc->c, 1000, "logout");
        goto done;
    }

    /* anything else goes to the exchange under a fresh id */
    {
        struct xg_reg_req *q;
        char *text;
        size_t tlen;

        if (json_object_get(params, "access_token") != NULL) {
            /* the local token means nothing upstream; the session is ours */
            json_object_del(params, "access_token");
            text = json_dumps(req, JSON_COMPACT);
            tlen = strlen(text);
            q = xg_registry_req_new(K_CLIENT, dc->rc, id, method, text, tlen);
            free(text);
        } else {
            q = xg_registry_req_new(K_CLIENT, dc->rc, id, method, work,
                wlen);
        }
        dr_submit(d, q, dc);
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
dr_write(void *p, const char *data, size_t len)
{
    struct dr *d = p;

    return xg_upstream_send(d->up, data, len);
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
    .left = dr_left
};

/* ---- life cycle and /status ---- */

static void *
dr_create(struct xg_upstream *up, const struct xg_upstream_conf *conf)
{
    static const struct dr_conf defaults = {
        DR_AUTH_NONE, NULL, NULL, NULL, 0, 0, 10000, 1000, 30000, NULL, 0,
        NULL, NULL
    };
    struct dr *d = xg_calloc(1, sizeof(*d));
    d->up = up;
    d->cf = conf->proto_conf ? conf->proto_conf : &defaults;
    d->name = conf->name;
    d->base = xg_upstream_base(up);
    d->reg = xg_registry_new();
    xg_registry_set_channel_free(d->reg, dr_track_free);
    d->s = xg_session_new(up, d->name, d->base, d->reg, d->cf->stale,
        d->cf->nstale, DR_BATCH_BYTES, &dr_session_ops, d);
    xg_session_set_limits(d->s, d->cf->request_timeout_ms,
        d->cf->queue_limit, d->cf->queue_timeout_ms);
    d->track.name = d->name;
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
    d->ev_tick = evtimer_new(d->base, dr_on_tick, d);
    d->ev_refresh = evtimer_new(d->base, dr_on_refresh, d);
    dr_tick_arm(d);
    return d;
}

static void
dr_destroy(void *p)
{
    struct dr *d = p;

    if (d == NULL) {
        return;
    }
    while (d->clients != NULL) {
        /* the listeners free their clients first; this is a last resort */
        dr_client_close(d, d->clients, "upstream destroyed");
    }
    while (d->cods != NULL) {
        struct dr_cod *cod = d->cods;

        d->cods = cod->next;
        dr_cod_free(cod);
    }
    event_free(d->ev_tick);
    event_free(d->ev_refresh);
    free(d->refresh_token);
    xg_registry_free(d->reg);
    xg_session_free(d->s);
    free(d);
}

static void
dr_status(void *p, json_t *obj)
{
    struct dr *d = p;

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
    for (size_t i = 0; i < c->nstale; i++) {
        free(c->stale[i].pattern);
    }
    free(c->stale);
    free(c);
}

/* The per-upstream conf, with its defaults (xg_proto.h create_conf). */
static void *
dr_create_conf(struct xg_conf *cf)
{
    struct dr_conf *c = xg_calloc(1, sizeof(*c));

    c->request_timeout_ms = 10000;
    c->queue_limit = 1000;
    c->queue_timeout_ms = 30000;
    xg_conf_cleanup_add(cf, dr_conf_free, c);
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
    uint64_t ms;

    if (st->args[1][0] == '\0' || strlen(st->args[1]) > 256) {
        return xg_conf_error(cf, st, "\"stale\": the channel pattern must "
            "be 1 to 256 characters");
    }
    if (xg_conf_parse_duration(st->args[2], &ms) != XG_OK || ms < 100
        || ms > (uint64_t) 24 * 3600 * 1000) {
        return xg_conf_error(cf, st, "\"stale\": \"%s\" is not a duration "
            "between 100ms and 24h", st->args[2]);
    }
    c->stale = xg_realloc(c->stale, (c->nstale + 1) * sizeof(*c->stale));
    c->stale[c->nstale].pattern = xg_strdup(st->args[1]);
    c->stale[c->nstale].ms = ms;
    c->nstale++;
    return XG_OK;
}

static const struct xg_conf_bounds dr_bounds_hb = { 1000, 3600 * 1000 };
static const struct xg_conf_bounds dr_bounds_timeout = { 0, 3600 * 1000 };
static const struct xg_conf_bounds dr_bounds_queue = { 0, 1000000 };

#define DR(f) offsetof(struct dr_conf, f)

static const struct xg_command dr_commands[] = {
    { "auth", XG_CONF_UPSTREAM | XG_CONF_TAKE3, dr_set_auth, 0, NULL },
    { "auth_scope", XG_CONF_UPSTREAM | XG_CONF_TAKE1, dr_set_auth_scope, 0,
      NULL },
    { "heartbeat", XG_CONF_UPSTREAM | XG_CONF_TAKE1, xg_conf_set_duration,
      DR(heartbeat_ms), &dr_bounds_hb },
    { "cancel_on_disconnect", XG_CONF_UPSTREAM | XG_CONF_TAKE1,
      xg_conf_set_flag, DR(cod), NULL },
    { "request_timeout", XG_CONF_UPSTREAM | XG_CONF_TAKE1,
      xg_conf_set_duration, DR(request_timeout_ms), &dr_bounds_timeout },
    { "queue_limit", XG_CONF_UPSTREAM | XG_CONF_TAKE1, xg_conf_set_uint,
      DR(queue_limit), &dr_bounds_queue },
    { "queue_timeout", XG_CONF_UPSTREAM | XG_CONF_TAKE1,
      xg_conf_set_duration, DR(queue_timeout_ms), &dr_bounds_timeout },
    { "stale", XG_CONF_UPSTREAM | XG_CONF_TAKE2 | XG_CONF_MULTI, dr_set_stale,
      0, NULL },
    XG_CONF_NULL_COMMAND
};

/*
 * auth, auth_scope and stale for `exgate -T`; the others are generic.
 * The id and the secret of `auth` are shown by source, never by value
 * (a plain id is not a secret and is shown as written).
 */
static int
dr_dump(struct xg_conf_dump *d, const struct xg_command *cmd,
    const void *conf)
{
    const struct dr_conf *c = conf;
    char buf[32];
    size_t i;

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
        if (c->nstale == 0) {
            xg_conf_dump_comment(d, "%s: none", cmd->name);
        }
        for (i = 0; i < c->nstale; i++) {
            xg_conf_dump_words(d, cmd->name, c->stale[i].pattern,
                xg_conf_fmt_duration(c->stale[i].ms, buf, sizeof(buf)), NULL);
        }
    } else {
        return XG_AGAIN;
    }
    return XG_OK;
}

const struct xg_proto_module xg_proto_deribit = {
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
    0           /* rotates: not yet (the upstream closes a rotation's conn) */
};
