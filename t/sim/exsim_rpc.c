/*
 * exsim_rpc.c: one WebSocket connection of the simulator: the JSON-RPC
 * envelope (exchange-protocols.md A1), method dispatch, heartbeats (A3),
 * subscriptions (A4), credits (A6) and the fan-out of notifications.
 *
 * A connection is torn down only by the reaper (conn_reap), at the top of
 * the loop: transport callbacks and publish loops only mark it down, so
 * no subscriber array changes under an iteration.
 */
#include "exsim.h"

#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <netinet/in.h>
#include <arpa/inet.h>

#define EXSIM_VERSION "1.2.26"

/* One request being answered. */
struct req {
    struct exsim_conn  *c;
    const char         *method;
    char               *rid;         /* the id exactly as sent */
    json_t             *after;       /* channels to snapshot after reply */
    int                 no_reply;
};

typedef json_t *(*method_fn)(struct req *r, json_t *params, json_t **err);

static void conn_reap_cb(evutil_socket_t fd, short what, void *arg);

/* ---- buckets ------------------------------------------------------------ */

static void
bucket_init(struct exsim_bucket *b, double max, double refill)
{
    b->level = max;
    b->max = max;
    b->refill = refill;
    b->last_us = xg_now_us();
}

/* Sets the four Deribit pools to full (A6: tier 4 for matching). */
void
exsim_credits_init(struct exsim_credits *cr)
{
    bucket_init(&cr->nonmatching, 50000, 10000);
    bucket_init(&cr->subscribe, 30000, 10000);
    bucket_init(&cr->instruments, 500000, 10000);
    bucket_init(&cr->matching, 20, 5);
}

static int
bucket_take(struct exsim_bucket *b, double cost)
{
    uint64_t now = xg_now_us();

    b->level += (double) (now - b->last_us) / 1e6 * b->refill;
    if (b->level > b->max) {
        b->level = b->max;
    }
    b->last_us = now;
    if (b->level < cost) {
        return -1;
    }
    b->level -= cost;
    return 0;
}

static int
is_matching(const char *m)
{
    static const char *names[] = {
        "private/buy", "private/sell", "private/edit", "private/cancel",
        "private/cancel_all", "private/cancel_all_by_instrument",
        "private/cancel_all_by_currency", "private/cancel_by_label",
        "private/close_position", NULL
    };
    int i;

    for (i = 0; names[i] != NULL; i++) {
        if (strcmp(m, names[i]) == 0) {
            return 1;
        }
    }
    return 0;
}

/*
 * Charges the request to C's account once authenticated (*ACCT set to it),
 * else to its IP (*ACCT NULL); -1 when the pool is empty (10028 then close).
 */
static int
credits_charge(struct exsim_conn *c, const char *method,
    struct exsim_account **acct)
{
    struct exsim_credits *cr;

    *acct = NULL;
    if (ex->o.no_rate_limit) {
        return 0;
    }
    if (exsim_conn_authed(c) && c->acct != NULL) {
        *acct = c->acct;
        cr = &c->acct->credits;
    } else {
        cr = c->anon;
    }
    if (strcmp(method, "public/subscribe") == 0
        || strcmp(method, "private/subscribe") == 0)
    {
        return bucket_take(&cr->subscribe, 3000);
    }
    if (strcmp(method, "public/get_instruments") == 0) {
        return bucket_take(&cr->instruments, 10000);
    }
    if (is_matching(method)) {
        return bucket_take(&cr->matching, 1);
    }
    return bucket_take(&cr->nonmatching, 500);
}

/* ---- output ------------------------------------------------------------- */

static int
conn_usable(struct exsim_conn *c)
{
    return c->ws != NULL && c->open && !c->down && !c->closing
        && !ex->stall;
}

static void
conn_mark_down(struct exsim_conn *c)
{
    if (!c->down) {
        c->down = 1;
        event_active(ex->reap_ev, 0, 0);
    }
}

/* A subscriber that does not read is dropped (Deribit: connection_too_slow). */
static void
conn_check_output(struct exsim_conn *c)
{
    if (c->ws != NULL && xg_ws_output_len(c->ws) > ex->o.max_output) {
        xg_log_warn("%s: output over %zu bytes, dropped (connection too slow)",
            c->name, ex->o.max_output);
        ex->st.slow_closes++;
        xg_ws_free(c->ws);
        c->ws = NULL;
        conn_mark_down(c);
    }
}

static void
send_text(struct exsim_conn *c, const char *text, size_t len)
{
    if (!conn_usable(c)) {
        return;
    }
    if (xg_ws_send_text(c->ws, text, len) != XG_OK) {
        xg_log_debug("%s: send failed", c->name);
        return;
    }
    conn_check_output(c);
}

/* Sends MSG (stolen) as one text message, if the connection can send. */
void
exsim_send_json(struct exsim_conn *c, json_t *msg)
{
    char *s = json_dumps(msg, JSON_COMPACT | JSON_REAL_PRECISION(12));

    if (s != NULL) {
        send_text(c, s, strlen(s));
        free(s);
    }
    json_decref(msg);
}

static json_t *
notification(const char *channel, json_t *data)
{
    return json_pack("{s:s, s:s, s:{s:s, s:o}}", "jsonrpc", "2.0",
        "method", "subscription", "params", "channel", channel, "data", data);
}

/* Sends one subscription notification (DATA stolen) to C alone. */
void
exsim_notify_conn(struct exsim_conn *c, const char *channel, json_t *data)
{
    exsim_send_json(c, notification(channel, data));
}

/* TEXT to CH's subscribers, only those of account A unless A is NULL. */
static void
publish_text(struct exsim_chan *ch, struct exsim_account *a,
    const char *text, size_t len)
{
    struct xg_frame *f;
    size_t i;

    if (ch->nsubs == 0) {
        return;
    }
    ex->st.published++;
    if (ex->stall || json_object_get(ex->mute_chan, ch->name) != NULL) {
        return;
    }
    f = xg_frame_text(text, len);
    for (i = 0; i < ch->nsubs; i++) {
        struct exsim_conn *c = ch->subs[i];

        if (!conn_usable(c) || (a != NULL && c->acct != a)) {
            continue;
        }
        if (xg_ws_send_frame(c->ws, f) == XG_OK) {
            ex->st.delivered++;
        }
        conn_check_output(c);
    }
    xg_frame_unref(f);
}

/*
 * Publishes TEXT to every subscriber of CH: the frame is encoded once and
 * shared by reference (xg_frame). Borrows TEXT.
 */
void
exsim_publish_text(struct exsim_chan *ch, const char *text, size_t len)
{
    publish_text(ch, NULL, text, len);
}

/*
 * Publishes DATA (stolen) on CH as a Deribit subscription notification to
 * the subscribers authenticated as account A (a user.* channel), or to
 * every subscriber when A is NULL.
 */
void
exsim_publish_account(struct exsim_chan *ch, struct exsim_account *a,
    json_t *data)
{
    json_t *msg;
    char *s;

    if (ch->nsubs == 0) {
        json_decref(data);
        return;
    }
    msg = notification(ch->name, data);
    s = json_dumps(msg, JSON_COMPACT | JSON_REAL_PRECISION(12));
    json_decref(msg);
    if (s != NULL) {
        publish_text(ch, a, s, strlen(s));
        free(s);
    }
}

/* Publishes DATA (stolen) on CH as a Deribit subscription notification. */
void
exsim_publish(struct exsim_chan *ch, json_t *data)
{
    exsim_publish_account(ch, NULL, data);
}

static const char *
error_message(int code)
{
    switch (code) {
    case EXSIM_E_TOO_MANY:      return "too_many_requests";
    case EXSIM_E_BAD_REQUEST:   return "bad_request";
    case EXSIM_E_BAD_CREDS:     return "invalid_credentials";
    case EXSIM_E_UNAUTHORIZED:  return "unauthorized";
    case EXSIM_E_COD_NOT_ON:    return "cod_not_enabled";
    case EXSIM_E_RAW_UNAUTH:
        return "raw_subscriptions_not_available_for_unauthorized";
    case EXSIM_E_TOO_LARGE:     return "request entity too large";
    case EXSIM_E_NO_METHOD:     return "Method not found";
    case EXSIM_E_PARAMS:        return "Invalid params";
    case EXSIM_E_PARSE:         return "Parse error";
    case 11094:                 return "internal_server_error";
    case 11051:                 return "system_maintenance";
    case 10040:                 return "retry";
    case 13028:                 return "temporarily_unavailable";
    case 13888:                 return "timed_out";
    }
    return "error";
}

/*
 * Builds a JSON-RPC error object {code, message[, data:{reason, param}]}.
 * MESSAGE NULL takes Deribit's message for CODE. Returns a new reference.
 */
json_t *
exsim_error_obj(int code, const char *message, const char *reason,
    const char *param)
{
    json_t *e = json_pack("{s:i, s:s}", "code", code, "message",
        message ? message : error_message(code));

    if (reason != NULL) {
        json_t *d = json_pack("{s:s}", "reason", reason);

        if (param != NULL) {
            json_object_set_new(d, "param", json_string(param));
        }
        json_object_set_new(e, "data", d);
    }
    return e;
}

/*
 * Sends a response: RID is the request id exactly as sent (NULL: an error
 * frame without id, as Deribit sends for some errors), then result or
 * error (both stolen), then usIn/usOut/usDiff/testnet.
 */
static void
delayed_unlink(struct exsim_delayed *dl)
{
    if (dl->prev != NULL) {
        dl->prev->next = dl->next;
    } else {
        ex->delayed = dl->next;
    }
    if (dl->next != NULL) {
        dl->next->prev = dl->prev;
    }
    event_free(dl->ev);
    free(dl->text);
    free(dl);
}

static void handle_message(struct exsim_conn *c, const char *data,
    size_t len);

static void
delayed_cb(evutil_socket_t fd, short what, void *arg)
{
    struct exsim_delayed *dl = arg;
    struct exsim_conn *c;

    for (c = ex->conns; c != NULL; c = c->next) {
        if (c->id == dl->conn_id) {
            break;
        }
    }
    if (c != NULL && conn_usable(c) && dl->run) {
        ex->unheld = 1;
        handle_message(c, dl->text, dl->len);
        ex->unheld = 0;
    } else if (c != NULL && conn_usable(c)) {
        send_text(c, dl->text, dl->len);
    } else if (dl->run) {
        /* as a request lost before it reached the matching engine */
        ex->st.held_lost++;
        xg_log_info("exsim: a held request of conn %llu never ran: the "
            "connection is gone", (unsigned long long) dl->conn_id);
    }
    delayed_unlink(dl);
}

void
exsim_delayed_free_all(void)
{
    while (ex->delayed != NULL) {
        delayed_unlink(ex->delayed);
    }
}

/*
 * Sends TEXT on C after MS milliseconds, if C is still there then (RUN:
 * TEXT is a request C sent, run then).
 */
static void
send_later(struct exsim_conn *c, const char *text, size_t len, uint64_t ms,
    int run)
{
    struct exsim_delayed *dl = xg_calloc(1, sizeof(*dl));
    struct timeval tv;

    dl->run = run;
    dl->conn_id = c->id;
    dl->text = xg_strndup(text, len);
    dl->len = len;
    dl->ev = evtimer_new(ex->base, delayed_cb, dl);
    dl->next = ex->delayed;
    if (ex->delayed != NULL) {
        ex->delayed->prev = dl;
    }
    ex->delayed = dl;
    tv.tv_sec = (time_t) (ms / 1000);
    tv.tv_usec = (suseconds_t) ((ms % 1000) * 1000);
    evtimer_add(dl->ev, &tv);
}

static void respond_later(struct exsim_conn *c, const char *rid,
    json_t *result, json_t *error, uint64_t delay_ms);

static void
respond(struct exsim_conn *c, const char *rid, json_t *result, json_t *error)
{
    respond_later(c, rid, result, error, 0);
}

/* respond(), the answer held back DELAY_MS (the `delay` control). */
static void
respond_later(struct exsim_conn *c, const char *rid, json_t *result,
    json_t *error, uint64_t delay_ms)
{
    char *body = json_dumps(result ? result : error,
        JSON_COMPACT | JSON_ENCODE_ANY | JSON_REAL_PRECISION(12));
    uint64_t out = xg_wall_us();
    size_t n;
    char *s;

    if (body == NULL) {
        goto done;
    }
    if (out < c->us_in) {
        out = c->us_in;
    }
    n = strlen(body) + (rid ? strlen(rid) : 0) + 160;
    s = xg_malloc(n);
    n = (size_t) snprintf(s, n,
        "{\"jsonrpc\":\"2.0\"%s%s,\"%s\":%s,\"usIn\":%llu,\"usOut\":%llu,"
        "\"usDiff\":%llu,\"testnet\":%s}",
        rid ? ",\"id\":" : "", rid ? rid : "", result ? "result" : "error",
        body, (unsigned long long) c->us_in, (unsigned long long) out,
        (unsigned long long) (out - c->us_in),
        ex->o.production ? "false" : "true");
    if (delay_ms > 0) {
        send_later(c, s, n, delay_ms, 0);
    } else {
        send_text(c, s, n);
    }
    free(s);
    free(body);
done:
    json_decref(result);
    json_decref(error);
}

/* ---- the raw id ------------------------------------------------------- */

/*
 * jansson has no "raw number" mode, and ids may be integers of any size:
 * find the top-level "id" member in the (already validated) text and
 * return its value bytes, so the reply echoes it unchanged.
 */
static const char *
skip_ws(const char *p, const char *e)
{
    while (p < e && (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r')) {
        p++;
    }
    return p;
}

static const char *
skip_string(const char *p, const char *e)
{
    for (p++; p < e; p++) {
        if (*p == '\\') {
            p++;
        } else if (*p == '"') {
            return p + 1;
        }
    }
    return NULL;
}

static const char *
skip_value(const char *p, const char *e)
{
    int depth = 0;

    if (p >= e) {
        return NULL;
    }
    if (*p == '"') {
        return skip_string(p, e);
    }
    if (*p != '{' && *p != '[') {
        while (p < e && strchr(",}] \t\r\n", *p) == NULL) {
            p++;
        }
        return p;
    }
    while (p < e) {
        if (*p == '"') {
            p = skip_string(p, e);
            if (p == NULL) {
                return NULL;
            }
            continue;
        }
        if (*p == '{' || *p == '[') {
            depth++;
        } else if (*p == '}' || *p == ']') {
            if (--depth == 0) {
                return p + 1;
            }
        }
        p++;
    }
    return NULL;
}

static char *
raw_id(const char *text, size_t len)
{
    const char *p = text, *e = text + len, *k, *v, *ve;
    char *found = NULL;

    p = skip_ws(p, e);
    if (p >= e || *p != '{') {
        return NULL;
    }
    p++;
    for (;;) {
        p = skip_ws(p, e);
        if (p >= e || *p != '"') {
            break;
        }
        k = p;
        p = skip_string(p, e);
        if (p == NULL) {
            break;
        }
        p = skip_ws(p, e);
        if (p >= e || *p != ':') {
            break;
        }
        v = skip_ws(p + 1, e);
        ve = skip_value(v, e);
        if (ve == NULL) {
            break;
        }
        if (p - k == 4 && memcmp(k, "\"id\"", 4) == 0) {
            free(found);
            found = xg_strndup(v, (size_t) (ve - v));
        }
        p = skip_ws(ve, e);
        if (p >= e || *p != ',') {
            break;
        }
        p++;
    }
    return found;
}

static int
raw_is_integer(const char *s)
{
    if (*s == '-') {
        s++;
    }
    if (*s < '0' || *s > '9') {
        return 0;
    }
    while (*s >= '0' && *s <= '9') {
        s++;
    }
    return *s == '\0';
}

/* ---- stats -------------------------------------------------------------- */

static void
count_request(const char *method)
{
    json_t *n;
    const char *key = method;

    if (strlen(method) > 64 || (json_object_get(ex->st.requests, method)
        == NULL && json_object_size(ex->st.requests) >= 256))
    {
        key = "(other)";
    }
    n = json_object_get(ex->st.requests, key);
    if (n != NULL) {
        json_integer_set(n, json_integer_value(n) + 1);
    } else {
        json_object_set_new(ex->st.requests, key, json_integer(1));
    }
}

/* ---- channels ----------------------------------------------------------- */

static unsigned
chan_hash(const char *s)
{
    unsigned h = 2166136261u;

    for (; *s; s++) {
        h = (h ^ (unsigned char) *s) * 16777619u;
    }
    return h % XG_NELEM(ex->chash);
}

/* The live channel named NAME, or NULL. */
struct exsim_chan *
exsim_chan_find(const char *name)
{
    struct exsim_chan *ch;

    for (ch = ex->chash[chan_hash(name)]; ch != NULL; ch = ch->hnext) {
        if (strcmp(ch->name, name) == 0) {
            return ch;
        }
    }
    return NULL;
}

static struct exsim_chan *
chan_get(const char *name)
{
    struct exsim_chan tmp, *ch = exsim_chan_find(name);
    unsigned h;

    if (ch != NULL) {
        return ch;
    }
    memset(&tmp, 0, sizeof(tmp));
    if (exsim_chan_parse(name, &tmp) != 0) {
        return NULL;
    }
    ch = xg_malloc(sizeof(*ch));
    *ch = tmp;
    ch->name = xg_strdup(name);
    h = chan_hash(name);
    ch->hnext = ex->chash[h];
    ex->chash[h] = ch;
    ch->lnext = ex->chans;
    ex->chans = ch;
    return ch;
}

static void
chan_destroy(struct exsim_chan *ch)
{
    struct exsim_chan **pp;

    exsim_chan_emptied(ch);
    for (pp = &ex->chash[chan_hash(ch->name)]; *pp; pp = &(*pp)->hnext) {
        if (*pp == ch) {
            *pp = ch->hnext;
            break;
        }
    }
    for (pp = &ex->chans; *pp; pp = &(*pp)->lnext) {
        if (*pp == ch) {
            *pp = ch->lnext;
            break;
        }
    }
    free(ch->subs);
    free(ch->agg);
    json_decref(ch->pending);
    free(ch->name);
    free(ch);
}

/* Frees every channel (quit). */
void
exsim_chan_free_all(void)
{
    while (ex->chans != NULL) {
        chan_destroy(ex->chans);
    }
}

static int
sub_index(struct exsim_conn *c, struct exsim_chan *ch)
{
    size_t i;

    for (i = 0; i < c->nsubs; i++) {
        if (c->subs[i] == ch) {
            return (int) i;
        }
    }
    return -1;
}

static void
sub_add(struct exsim_conn *c, struct exsim_chan *ch)
{
    if (c->nsubs == c->capsubs) {
        c->capsubs = c->capsubs ? c->capsubs * 2 : 8;
        c->subs = xg_realloc(c->subs, c->capsubs * sizeof(*c->subs));
    }
    c->subs[c->nsubs++] = ch;
    if (ch->nsubs == ch->capsubs) {
        ch->capsubs = ch->capsubs ? ch->capsubs * 2 : 4;
        ch->subs = xg_realloc(ch->subs, ch->capsubs * sizeof(*ch->subs));
    }
    ch->subs[ch->nsubs++] = c;
}

static void
sub_del(struct exsim_conn *c, struct exsim_chan *ch)
{
    size_t i;
    int k = sub_index(c, ch);

    if (k < 0) {
        return;
    }
    c->subs[k] = c->subs[--c->nsubs];
    for (i = 0; i < ch->nsubs; i++) {
        if (ch->subs[i] == c) {
            ch->subs[i] = ch->subs[--ch->nsubs];
            break;
        }
    }
    if (ch->nsubs == 0) {
        chan_destroy(ch);
    }
}

static void
sub_del_all(struct exsim_conn *c)
{
    while (c->nsubs > 0) {
        sub_del(c, c->subs[c->nsubs - 1]);
    }
}

/* ---- connections -------------------------------------------------------- */

/* Whether C holds a valid access token (connection or session scope). */
int
exsim_conn_authed(struct exsim_conn *c)
{
    return exsim_auth_check(c, NULL, NULL) == 0;
}

static void
conn_teardown(struct exsim_conn *c)
{
    if (!c->logout) {
        exsim_trade_conn_gone(c);
    }
    sub_del_all(c);
    exsim_auth_conn_gone(c);
    if (c->hb_ev != NULL) {
        event_free(c->hb_ev);
    }
    if (c->open) {
        ex->st.connections_open--;
    }
    if (c->prev != NULL) {
        c->prev->next = c->next;
    } else {
        ex->conns = c->next;
    }
    if (c->next != NULL) {
        c->next->prev = c->prev;
    }
    if (c->ws != NULL) {
        xg_ws_free(c->ws);
    }
    free(c->subs);
    free(c);
}

static void
conn_reap_cb(evutil_socket_t fd, short what, void *arg)
{
    struct exsim_conn *c, *next;

    for (c = ex->conns; c != NULL; c = next) {
        next = c->next;
        if (c->down) {
            conn_teardown(c);
        }
    }
}

/* Frees every connection at once, without cancel-on-disconnect (quit). */
void
exsim_conn_free_all(void)
{
    while (ex->conns != NULL) {
        ex->conns->logout = 1;
        conn_teardown(ex->conns);
    }
}

/*
 * Resets C: SO_LINGER 0 makes the close send a TCP RST, and no close frame
 * is written. Cancel-on-disconnect fires as for any unexpected drop.
 */
void
exsim_conn_drop(struct exsim_conn *c)
{
    struct linger lg = { 1, 0 };

    if (c->ws == NULL || c->down) {
        return;
    }
    if (setsockopt(c->fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg)) != 0) {
        xg_log_warn("%s: SO_LINGER: %s", c->name, strerror(errno));
    }
    xg_ws_free(c->ws);
    c->ws = NULL;
    conn_mark_down(c);
}

/* Starts the WebSocket close handshake; the teardown follows on_down. */
void
exsim_conn_close(struct exsim_conn *c, int code, const char *reason)
{
    if (c->ws == NULL || c->down || c->closing) {
        return;
    }
    c->closing = 1;
    xg_ws_close(c->ws, code, reason);
}

/*
 * Stall: raising SO_RCVLOWAT far above anything a client sends keeps epoll
 * from reporting the socket readable, so the transport reads nothing and
 * answers no ping; exsim itself sends nothing while ex->stall is set.
 * The TCP connection stays open and a FIN is still noticed.
 */
void
exsim_conn_stall(struct exsim_conn *c, int on)
{
    int v = on ? INT_MAX : 1;

    if (c->down || c->fd < 0) {
        return;
    }
    if (setsockopt(c->fd, SOL_SOCKET, SO_RCVLOWAT, &v, sizeof(v)) != 0) {
        xg_log_warn("%s: SO_RCVLOWAT: %s", c->name, strerror(errno));
        return;
    }
    c->stalled = on;
}

static int
on_accept_check(struct xg_ws *ws, const char *path, void *arg)
{
    struct exsim_conn *c = arg;
    size_t n = strcspn(path, "?");

    if (n != strlen("/ws/api/v2") || strncmp(path, "/ws/api/v2", n) != 0) {
        xg_log_info("%s: path %s refused with 404", c->name, path);
        ex->st.refused++;
        return 404;
    }
    if (ex->refuse) {
        xg_log_info("%s: upgrade refused with %d (control)", c->name,
            ex->refuse);
        ex->st.refused++;
        return ex->refuse;
    }
    if (ex->o.max_connections > 0
        && ex->st.connections_open >= (uint64_t) ex->o.max_connections)
    {
        xg_log_info("%s: %d connections open, refused with 429", c->name,
            ex->o.max_connections);
        ex->st.refused++;
        return 429;
    }
    return 0;
}

static void
on_open(struct xg_ws *ws, void *arg)
{
    struct exsim_conn *c = arg;

    c->open = 1;
    ex->st.upgrades++;
    ex->st.connections_open++;
    if (ex->st.connections_open > ex->st.max_concurrent) {
        ex->st.max_concurrent = ex->st.connections_open;
    }
    xg_log_info("%s: open from %s", c->name, xg_ws_peer(ws));
}

static void
on_down(struct xg_ws *ws, const struct xg_ws_down *why, void *arg)
{
    struct exsim_conn *c = arg;

    xg_log_info("%s: down: %s%s", c->name, why->reason,
        c->logout ? " (logout)" : "");
    conn_mark_down(c);
}

static void
on_drain(struct xg_ws *ws, void *arg)
{
    exsim_bench_kick();
}

static void handle_message(struct exsim_conn *c, const char *data,
    size_t len);

static void
on_message(struct xg_ws *ws, int binary, const unsigned char *data,
    size_t len, void *arg)
{
    struct exsim_conn *c = arg;

    if (c->down || c->closing) {
        return;
    }
    if (ex->stall) {
        xg_log_debug("%s: stalled, %zu byte message dropped", c->name, len);
        return;
    }
    handle_message(c, (const char *) data, len);
}

static const struct xg_ws_cbs conn_cbs = {
    .on_open = on_open,
    .on_message = on_message,
    .on_down = on_down,
    .on_drain = on_drain,
};

/* The unauthenticated credit pool of FD's peer address, made on first use. */
static struct exsim_credits *
ippool(evutil_socket_t fd)
{
    struct sockaddr_storage ss;
    socklen_t sl = sizeof(ss);
    struct exsim_ippool *p;
    char ip[64] = "?";
    int n = 0;

    if (getpeername(fd, (struct sockaddr *) &ss, &sl) == 0) {
        if (ss.ss_family == AF_INET6) {
            evutil_inet_ntop(AF_INET6, &((struct sockaddr_in6 *) &ss)->sin6_addr,
                ip, sizeof(ip));
        } else {
            evutil_inet_ntop(AF_INET, &((struct sockaddr_in *) &ss)->sin_addr,
                ip, sizeof(ip));
        }
    }
    for (p = ex->ippools; p != NULL; p = p->next, n++) {
        if (strcmp(p->ip, ip) == 0) {
            return &p->cr;
        }
    }
    if (n >= 1024) {
        return &ex->ippools->cr;    /* bounded: the rest share one pool */
    }
    p = xg_calloc(1, sizeof(*p));
    snprintf(p->ip, sizeof(p->ip), "%s", ip);
    exsim_credits_init(&p->cr);
    p->next = ex->ippools;
    ex->ippools = p;
    return &p->cr;
}

/* Frees the per-IP pools (quit). */
void
exsim_ippools_free(void)
{
    struct exsim_ippool *p;

    while ((p = ex->ippools) != NULL) {
        ex->ippools = p->next;
        free(p);
    }
}

/* Takes ownership of the accepted socket FD and runs the upgrade on it. */
void
exsim_conn_accept(evutil_socket_t fd)
{
    struct exsim_conn *c = xg_calloc(1, sizeof(*c));
    struct xg_ws_opts opts;

    if (ex->reap_ev == NULL) {
        ex->reap_ev = event_new(ex->base, -1, 0, conn_reap_cb, NULL);
    }
    c->id = ++ex->next_conn_id;
    c->fd = fd;
    ex->st.connections_total++;
    snprintf(c->name, sizeof(c->name), "exsim conn#%llu",
        (unsigned long long) c->id);
    c->anon = ippool(fd);
    c->next = ex->conns;
    if (ex->conns != NULL) {
        ex->conns->prev = c;
    }
    ex->conns = c;
    if (ex->stall) {
        exsim_conn_stall(c, 1);
    }
    memset(&opts, 0, sizeof(opts));
    opts.max_message = EXSIM_MAX_MESSAGE;
    opts.handshake_timeout_ms = 30000;
    opts.close_timeout_ms = 2000;
    opts.text_only = 1;
    opts.log_name = c->name;
    opts.owner_logs = 1;        /* on_open and on_down log the connection */
    c->ws = xg_ws_accept(ex->base, fd, ex->tls, &opts, on_accept_check,
        &conn_cbs, c);
}

/* ---- heartbeats --------------------------------------------------------- */

static void
send_heartbeat(struct exsim_conn *c, const char *type)
{
    exsim_send_json(c, json_pack("{s:s, s:s, s:{s:s}}", "jsonrpc", "2.0",
        "method", "heartbeat", "params", "type", type));
}

/*
 * Every half interval: alternately a "heartbeat" and a "test_request";
 * a test_request not answered by public/test within the interval closes
 * the connection (A3: "the API server will immediately close").
 */
static void
hb_cb(evutil_socket_t fd, short what, void *arg)
{
    struct exsim_conn *c = arg;
    uint64_t now = xg_now_us();

    if (c->down || c->closing || ex->stall) {
        return;
    }
    if (c->test_deadline_us != 0 && now + 2000 >= c->test_deadline_us) {
        xg_log_info("%s: test_request not answered in %.3f s, closing",
            c->name, c->hb_interval);
        ex->st.heartbeat_closes++;
        exsim_conn_close(c, 1000, "test_request not answered");
        return;
    }
    if (c->hb_phase++ % 2 == 0) {
        send_heartbeat(c, "heartbeat");
    } else {
        send_heartbeat(c, "test_request");
        if (c->test_deadline_us == 0) {
            c->test_deadline_us = now + (uint64_t) (c->hb_interval * 1e6);
        }
    }
}

static json_t *
m_set_heartbeat(struct req *r, json_t *params, json_t **err)
{
    struct exsim_conn *c = r->c;
    json_t *iv = json_object_get(params, "interval");
    double min = ex->o.min_heartbeat;
    struct timeval tv;
    double s;
    char reason[64];

    if (!json_is_number(iv)) {
        *err = exsim_error_obj(EXSIM_E_PARAMS, NULL, "must be a number",
            "interval");
        return NULL;
    }
    s = json_number_value(iv);
    if (!(s >= min) || s > 3600) {
        snprintf(reason, sizeof(reason), "must be at least %g", min);
        *err = exsim_error_obj(EXSIM_E_PARAMS, NULL, reason, "interval");
        return NULL;
    }
    c->hb_interval = s;
    c->hb_phase = 0;
    c->test_deadline_us = 0;
    if (c->hb_ev == NULL) {
        c->hb_ev = event_new(ex->base, -1, EV_PERSIST, hb_cb, c);
    }
    s /= 2;
    tv.tv_sec = (time_t) s;
    tv.tv_usec = (suseconds_t) ((s - (double) tv.tv_sec) * 1e6);
    event_add(c->hb_ev, &tv);
    return json_string("ok");
}

static json_t *
m_disable_heartbeat(struct req *r, json_t *params, json_t **err)
{
    if (r->c->hb_ev != NULL) {
        event_del(r->c->hb_ev);
    }
    r->c->hb_interval = 0;
    r->c->test_deadline_us = 0;
    return json_string("ok");
}

static json_t *
m_test(struct req *r, json_t *params, json_t **err)
{
    const char *exp = json_string_value(json_object_get(params,
        "expected_result"));

    r->c->test_deadline_us = 0;
    if (exp != NULL && strcmp(exp, "exception") == 0) {
        *err = exsim_error_obj(11094, NULL, "expected_result exception",
            "expected_result");
        return NULL;
    }
    return json_pack("{s:s}", "version", EXSIM_VERSION);
}

/* ---- simple public methods ---------------------------------------------- */

static json_t *
m_hello(struct req *r, json_t *params, json_t **err)
{
    if (!json_is_string(json_object_get(params, "client_name"))
        || !json_is_string(json_object_get(params, "client_version")))
    {
        *err = exsim_error_obj(EXSIM_E_PARAMS, NULL,
            "client_name and client_version are required", "client_name");
        return NULL;
    }
    return json_pack("{s:s}", "version", EXSIM_VERSION);
}

static json_t *
m_get_time(struct req *r, json_t *params, json_t **err)
{
    return json_integer((json_int_t) (xg_wall_us() / 1000));
}

static json_t *
m_status(struct req *r, json_t *params, json_t **err)
{
    /* [UNVERIFIED] C.7: the schema's shape (locked as a string) */
    return json_pack("{s:s, s:[]}", "locked",
        ex->maintenance ? "true" : "false", "locked_indices");
}

static int
currency_ok(const char *cur)
{
    struct exsim_instr *in;

    if (strcmp(cur, "any") == 0) {
        return 1;
    }
    for (in = ex->instrs; in != NULL; in = in->next) {
        if (strcmp(in->currency, cur) == 0) {
            return 1;
        }
    }
    return 0;
}

/*
 * No currency, like "any", lists every currency's instruments: ccxt's
 * loadMarkets sends no params at all and Deribit answers with the lot.
 * expired:true asks for recently expired instruments; exsim's never
 * expire (they trade until quit), so that list is empty.
 */
static json_t *
m_get_instruments(struct req *r, json_t *params, json_t **err)
{
    json_t *jcur = json_object_get(params, "currency");
    json_t *jkind = json_object_get(params, "kind");
    json_t *jexp = json_object_get(params, "expired");
    const char *cur = jcur ? json_string_value(jcur) : "any";
    const char *kind = json_string_value(jkind);
    json_t *arr;
    struct exsim_instr *in;

    if (cur == NULL || !currency_ok(cur)) {
        *err = exsim_error_obj(EXSIM_E_PARAMS, NULL, "wrong format",
            "currency");
        return NULL;
    }
    if (jkind != NULL && kind == NULL) {
        *err = exsim_error_obj(EXSIM_E_PARAMS, NULL, "must be a string",
            "kind");
        return NULL;
    }
    if (jexp != NULL && !json_is_boolean(jexp)) {
        *err = exsim_error_obj(EXSIM_E_PARAMS, NULL, "must be a boolean",
            "expired");
        return NULL;
    }
    arr = json_array();
    if (json_is_true(jexp)) {
        return arr;
    }
    for (in = ex->instrs; in != NULL; in = in->next) {
        if (strcmp(cur, "any") != 0 && strcmp(cur, in->currency) != 0) {
            continue;
        }
        if (kind != NULL && strcmp(kind, in->kind) != 0) {
            continue;
        }
        json_array_append_new(arr, exsim_instr_json(in));
    }
    return arr;
}

static struct exsim_instr *
param_instr(json_t *params, json_t **err)
{
    const char *name = json_string_value(json_object_get(params,
        "instrument_name"));
    struct exsim_instr *in = name ? exsim_instr_find(name) : NULL;

    if (in == NULL) {
        *err = exsim_error_obj(EXSIM_E_PARAMS, NULL,
            name ? "instrument not found" : "must be a string",
            "instrument_name");
    }
    return in;
}

static json_t *
m_get_instrument(struct req *r, json_t *params, json_t **err)
{
    struct exsim_instr *in = param_instr(params, err);

    return in ? exsim_instr_json(in) : NULL;
}

static json_t *
m_get_currencies(struct req *r, json_t *params, json_t **err)
{
    json_t *arr = json_array();
    struct exsim_instr *in, *j;

    for (in = ex->instrs; in != NULL; in = in->next) {
        for (j = ex->instrs; j != in; j = j->next) {
            if (strcmp(j->currency, in->currency) == 0) {
                break;
            }
        }
        if (j != in) {
            continue;
        }
        json_array_append_new(arr, json_pack("{s:s, s:s, s:s, s:i, s:i,"
            " s:f, s:f, s:[]}",
            "currency", in->currency,
            "currency_long", strcmp(in->currency, "BTC") == 0 ? "Bitcoin"
                : strcmp(in->currency, "ETH") == 0 ? "Ethereum"
                : in->currency,
            "coin_type", strcmp(in->currency, "BTC") == 0 ? "BITCOIN"
                : strcmp(in->currency, "ETH") == 0 ? "ETHER" : "OTHER",
            "fee_precision", 4, "min_confirmations", 1,
            "min_withdrawal_fee", 0.0001, "withdrawal_fee", 0.0001,
            "withdrawal_priorities"));
    }
    return arr;
}

static json_t *
m_ticker(struct req *r, json_t *params, json_t **err)
{
    struct exsim_instr *in = param_instr(params, err);

    return in ? exsim_ticker_json(in) : NULL;
}

static json_t *
m_get_order_book(struct req *r, json_t *params, json_t **err)
{
    struct exsim_instr *in = param_instr(params, err);
    json_t *d = json_object_get(params, "depth");
    double depth = 20;

    if (in == NULL) {
        return NULL;
    }
    if (d != NULL) {
        if (!json_is_number(d) || json_number_value(d) < 1
            || json_number_value(d) > 10000)
        {
            *err = exsim_error_obj(EXSIM_E_PARAMS, NULL,
                "must be between 1 and 10000", "depth");
            return NULL;
        }
        depth = json_number_value(d);
    }
    return exsim_order_book_json(in, (int) depth);
}

static json_t *
m_last_trades(struct req *r, json_t *params, json_t **err)
{
    struct exsim_instr *in = param_instr(params, err);

    return in ? exsim_last_trades_json(in, params, err) : NULL;
}

static json_t *
m_last_trades_cur(struct req *r, json_t *params, json_t **err)
{
    (void) r;
    return exsim_last_trades_by_currency_json(params, err);
}

static json_t *
m_get_index_price(struct req *r, json_t *params, json_t **err)
{
    const char *name = json_string_value(json_object_get(params,
        "index_name"));
    struct exsim_instr *in;

    for (in = ex->instrs; name != NULL && in != NULL; in = in->next) {
        if (strcmp(in->index_name, name) == 0) {
            return json_pack("{s:f, s:f}", "index_price", in->index_price,
                "estimated_delivery_price", in->index_price);
        }
    }
    *err = exsim_error_obj(EXSIM_E_PARAMS, NULL, "wrong format",
        "index_name");
    return NULL;
}

/* ---- auth --------------------------------------------------------------- */

static json_t *
m_auth(struct req *r, json_t *params, json_t **err)
{
    return exsim_auth_handle(r->c, params, err);
}

static json_t *
m_fork_token(struct req *r, json_t *params, json_t **err)
{
    return exsim_auth_fork(r->c, params, err);
}

static json_t *
m_logout(struct req *r, json_t *params, json_t **err)
{
    exsim_auth_logout(r->c, params);
    r->c->logout = 1;
    r->no_reply = 1;
    xg_log_info("%s: logout, closing with no reply", r->c->name);
    exsim_conn_close(r->c, 1000, "logout");
    return NULL;
}

/* ---- cancel on disconnect ----------------------------------------------- */

static int
cod_scope(json_t *params, json_t **err, int *account)
{
    const char *s = json_string_value(json_object_get(params, "scope"));

    if (json_object_get(params, "scope") != NULL && s == NULL) {
        goto bad;
    }
    if (s == NULL || strcmp(s, "connection") == 0) {
        *account = 0;
        return 0;
    }
    if (strcmp(s, "account") == 0) {
        *account = 1;
        return 0;
    }
bad:
    *err = exsim_error_obj(EXSIM_E_PARAMS, NULL,
        "must be connection or account", "scope");
    return -1;
}

static json_t *
m_enable_cod(struct req *r, json_t *params, json_t **err)
{
    int account;

    if (cod_scope(params, err, &account) != 0) {
        return NULL;
    }
    r->c->cod = 1;
    if (account) {
        r->c->acct->cod_account = 1;
    }
    return json_string("ok");
}

static json_t *
m_disable_cod(struct req *r, json_t *params, json_t **err)
{
    int account;

    if (cod_scope(params, err, &account) != 0) {
        return NULL;
    }
    r->c->cod = 0;
    if (account) {
        r->c->acct->cod_account = 0;
    }
    return json_string("ok");
}

static json_t *
m_get_cod(struct req *r, json_t *params, json_t **err)
{
    int account;

    if (cod_scope(params, err, &account) != 0) {
        return NULL;
    }
    return json_pack("{s:s, s:b}", "scope", account ? "account" : "connection",
        "enabled", account ? r->c->acct->cod_account : r->c->cod);
}

/* ---- subscriptions ------------------------------------------------------ */

static int
is_raw(const char *name)
{
    size_t n = strlen(name);

    return n >= 4 && strcmp(name + n - 4, ".raw") == 0;
}

static json_t *
subscribe(struct req *r, json_t *params, json_t **err, int priv)
{
    json_t *chans = json_object_get(params, "channels"), *v, *res;
    struct exsim_conn *c = r->c;
    int authed = exsim_conn_authed(c);
    size_t i;

    if (!json_is_array(chans)) {
        *err = exsim_error_obj(EXSIM_E_PARAMS, NULL, "must be an array",
            "channels");
        return NULL;
    }
    json_array_foreach(chans, i, v) {
        if (!json_is_string(v)) {
            *err = exsim_error_obj(EXSIM_E_PARAMS, NULL,
                "must be an array of strings", "channels");
            return NULL;
        }
        /* [UNVERIFIED] A4.3: the stricter reading, an error for the call */
        if (!authed && !ex->o.raw_unauth_omit && is_raw(json_string_value(v))
            && strncmp(json_string_value(v), "user.", 5) != 0)
        {
            struct exsim_chan tmp;

            memset(&tmp, 0, sizeof(tmp));
            if (exsim_chan_parse(json_string_value(v), &tmp) == 0) {
                *err = exsim_error_obj(EXSIM_E_RAW_UNAUTH, NULL, NULL, NULL);
                return NULL;
            }
        }
    }
    res = json_array();
    r->after = json_array();
    json_array_foreach(chans, i, v) {
        const char *name = json_string_value(v);
        struct exsim_chan tmp, *ch;

        if (json_object_get(ex->reject_chan, name) != NULL) {
            xg_log_info("%s: channel %s rejected (control)", c->name, name);
            continue;
        }
        memset(&tmp, 0, sizeof(tmp));
        if (exsim_chan_parse(name, &tmp) != 0) {
            continue;
        }
        if (tmp.priv && (!priv || !authed)) {
            continue;
        }
        if (is_raw(name) && !authed) {
            continue;
        }
        ch = exsim_chan_find(name);
        if (ch == NULL || sub_index(c, ch) < 0) {
            if (c->nsubs >= EXSIM_MAX_CHANNELS) {
                xg_log_warn("%s: %d channels, %s left out", c->name,
                    EXSIM_MAX_CHANNELS, name);
                continue;
            }
            ch = chan_get(name);
            if (ch == NULL) {
                continue;
            }
            sub_add(c, ch);
            json_array_append_new(r->after, json_string(name));
        }
        /* a muted channel speaks again once it is subscribed anew (a
           stuck feed that a resubscribe repairs) */
        json_object_del(ex->mute_chan, name);
        json_object_set_new(ex->sub_counts, name, json_integer(
            json_integer_value(json_object_get(ex->sub_counts, name)) + 1));
        json_array_append_new(res, json_string(name));
    }
    return res;
}

static json_t *
m_pub_subscribe(struct req *r, json_t *params, json_t **err)
{
    return subscribe(r, params, err, 0);
}

static json_t *
m_priv_subscribe(struct req *r, json_t *params, json_t **err)
{
    return subscribe(r, params, err, 1);
}

static json_t *
m_unsubscribe(struct req *r, json_t *params, json_t **err)
{
    json_t *chans = json_object_get(params, "channels"), *v, *res;
    size_t i;

    if (!json_is_array(chans)) {
        *err = exsim_error_obj(EXSIM_E_PARAMS, NULL, "must be an array",
            "channels");
        return NULL;
    }
    res = json_array();
    json_array_foreach(chans, i, v) {
        struct exsim_chan *ch;

        if (!json_is_string(v)) {
            continue;
        }
        ch = exsim_chan_find(json_string_value(v));
        if (ch != NULL && sub_index(r->c, ch) >= 0) {
            json_array_append_new(res, json_string(json_string_value(v)));
            sub_del(r->c, ch);
        }
    }
    return res;
}

static json_t *
m_unsubscribe_all(struct req *r, json_t *params, json_t **err)
{
    sub_del_all(r->c);
    return json_string("ok");
}

/* ---- dispatch ----------------------------------------------------------- */

#define M_PRIVATE 1

static const struct {
    const char *name;
    method_fn   fn;
    int         flags;
} methods[] = {
    { "public/hello", m_hello, 0 },
    { "public/test", m_test, 0 },
    { "public/get_time", m_get_time, 0 },
    { "public/status", m_status, 0 },
    { "public/get_instruments", m_get_instruments, 0 },
    { "public/get_instrument", m_get_instrument, 0 },
    { "public/get_currencies", m_get_currencies, 0 },
    { "public/ticker", m_ticker, 0 },
    { "public/get_order_book", m_get_order_book, 0 },
    { "public/get_last_trades_by_instrument", m_last_trades, 0 },
    { "public/get_last_trades_by_currency_and_time", m_last_trades_cur, 0 },
    { "public/get_index_price", m_get_index_price, 0 },
    { "public/auth", m_auth, 0 },
    { "public/fork_token", m_fork_token, 0 },
    { "public/set_heartbeat", m_set_heartbeat, 0 },
    { "public/disable_heartbeat", m_disable_heartbeat, 0 },
    { "public/subscribe", m_pub_subscribe, 0 },
    { "public/unsubscribe", m_unsubscribe, 0 },
    { "public/unsubscribe_all", m_unsubscribe_all, 0 },
    { "private/subscribe", m_priv_subscribe, M_PRIVATE },
    { "private/unsubscribe", m_unsubscribe, M_PRIVATE },
    { "private/unsubscribe_all", m_unsubscribe_all, M_PRIVATE },
    { "private/logout", m_logout, M_PRIVATE },
    { "private/enable_cancel_on_disconnect", m_enable_cod, M_PRIVATE },
    { "private/disable_cancel_on_disconnect", m_disable_cod, M_PRIVATE },
    { "private/get_cancel_on_disconnect", m_get_cod, M_PRIVATE },
};

static void
send_after(struct req *r)
{
    json_t *v;
    size_t i;

    json_array_foreach(r->after, i, v) {
        struct exsim_chan *ch = exsim_chan_find(json_string_value(v));

        if (ch != NULL && sub_index(r->c, ch) >= 0) {
            exsim_chan_subscribed(r->c, ch);
        }
    }
}

/* During `maintenance on` only these still work (A7: 11051 for the rest). */
static int
maintenance_ok(const char *m)
{
    static const char *ok[] = { "public/test", "public/get_time",
        "public/hello", "public/status", "public/set_heartbeat",
        "public/disable_heartbeat", "public/subscribe", "public/unsubscribe",
        "public/unsubscribe_all", NULL };
    int i;

    for (i = 0; ok[i] != NULL; i++) {
        if (strcmp(m, ok[i]) == 0) {
            return 1;
        }
    }
    return 0;
}

static void
dispatch(struct req *r, json_t *params)
{
    json_t *result = NULL, *err = NULL, *fail;
    json_int_t ms;
    size_t i;
    int handled = 0;

    for (i = 0; i < XG_NELEM(methods); i++) {
        if (strcmp(methods[i].name, r->method) == 0) {
            break;
        }
    }
    if (ex->maintenance && !maintenance_ok(r->method)) {
        respond(r->c, r->rid, NULL, exsim_error_obj(11051, NULL, NULL, NULL));
        return;
    }
    if ((fail = json_object_get(ex->fail_method, r->method)) != NULL) {
        json_int_t code = json_integer_value(json_array_get(fail, 0));
        json_int_t left = json_integer_value(json_array_get(fail, 1)) - 1;

        if (left > 0) {
            json_array_set_new(fail, 1, json_integer(left));
        } else {
            json_object_del(ex->fail_method, r->method);
        }
        xg_log_info("%s: %s answered error %lld (control)", r->c->name,
            r->method, (long long) code);
        respond(r->c, r->rid, NULL, exsim_error_obj((int) code, NULL, NULL,
            NULL));
        return;
    }
    if (i < XG_NELEM(methods)) {
        if (!(methods[i].flags & M_PRIVATE)
            || exsim_auth_check(r->c, params, &err) == 0)
        {
            result = methods[i].fn(r, params, &err);
        }
        handled = 1;
    } else if (strncmp(r->method, "private/", 8) == 0) {
        result = exsim_trade_method(r->c, r->method, params, &err, &handled);
    }
    if (!handled) {
        err = exsim_error_obj(EXSIM_E_NO_METHOD, NULL, NULL, NULL);
    }
    if (r->no_reply) {
        json_decref(result);
        json_decref(err);
        return;
    }
    if (result == NULL && err == NULL) {
        err = exsim_error_obj(11094, NULL, NULL, NULL);
    }
    ms = json_integer_value(json_object_get(ex->delay_method, r->method));
    if (r->after == NULL) {
        respond_later(r->c, r->rid, result, err, ms > 0 ? (uint64_t) ms : 0);
        return;
    }
    if (ms > 0) {
        /* a slow subscribe answer: the subscription is live at once, its
           snapshots and data go out before the answer */
        send_after(r);
        respond_later(r->c, r->rid, result, err, (uint64_t) ms);
        return;
    }
    respond(r->c, r->rid, result, err);
    if (r->after != NULL) {
        send_after(r);
    }
}

static void
handle_message(struct exsim_conn *c, const char *data, size_t len)
{
    struct req r;
    json_error_t jerr;
    json_t *msg, *id, *params, *jv;
    const char *method;
    struct exsim_account *acct;
    json_int_t hold;

    memset(&r, 0, sizeof(r));
    r.c = c;
    c->us_in = xg_wall_us();
    if (len > EXSIM_MAX_REQUEST) {
        xg_log_info("%s: %zu byte request over 32 kB", c->name, len);
        respond(c, NULL, NULL, exsim_error_obj(EXSIM_E_TOO_LARGE, NULL,
            NULL, NULL));
        return;
    }
    msg = json_loadb(data, len, 0, &jerr);
    if (msg == NULL && strstr(jerr.text, "too big") != NULL) {
        /* an id beyond int64: parse the rest, echo the id from the text */
        msg = json_loadb(data, len, JSON_DECODE_INT_AS_REAL, &jerr);
    }
    if (msg == NULL) {
        xg_log_info("%s: parse error: %s", c->name, jerr.text);
        respond(c, NULL, NULL, exsim_error_obj(EXSIM_E_PARSE, NULL,
            jerr.text, NULL));
        return;
    }
    if (!json_is_object(msg)) {
        respond(c, NULL, NULL, exsim_error_obj(EXSIM_E_BAD_REQUEST, NULL,
            json_is_array(msg) ? "batch requests are not supported"
            : "request must be an object", NULL));
        goto done;
    }
    id = json_object_get(msg, "id");
    if (id == NULL) {
        /* [UNVERIFIED] C.1: rejected with an error frame without id */
        respond(c, NULL, NULL, exsim_error_obj(EXSIM_E_BAD_REQUEST, NULL,
            "missing id", "id"));
        goto done;
    }
    r.rid = raw_id(data, len);
    if (r.rid == NULL) {
        r.rid = json_dumps(id, JSON_ENCODE_ANY | JSON_COMPACT);
    }
    if (r.rid == NULL || !(json_is_string(id) || raw_is_integer(r.rid))) {
        respond(c, NULL, NULL, exsim_error_obj(EXSIM_E_BAD_REQUEST, NULL,
            "id must be an integer or a string", "id"));
        goto done;
    }
    jv = json_object_get(msg, "jsonrpc");
    method = json_string_value(json_object_get(msg, "method"));
    if (!json_is_string(jv) || strcmp(json_string_value(jv), "2.0") != 0) {
        respond(c, r.rid, NULL, exsim_error_obj(EXSIM_E_BAD_REQUEST, NULL,
            "jsonrpc must be \"2.0\"", "jsonrpc"));
        goto done;
    }
    if (method == NULL) {
        respond(c, r.rid, NULL, exsim_error_obj(EXSIM_E_BAD_REQUEST, NULL,
            "method must be a string", "method"));
        goto done;
    }
    params = json_object_get(msg, "params");
    if (params != NULL && json_is_array(params)) {
        respond(c, r.rid, NULL, exsim_error_obj(EXSIM_E_PARAMS, NULL,
            "positional params are not supported", "params"));
        goto done;
    }
    if (params != NULL && !json_is_object(params) && !json_is_null(params)) {
        respond(c, r.rid, NULL, exsim_error_obj(EXSIM_E_PARAMS, NULL,
            "must be an object", "params"));
        goto done;
    }
    if (params == NULL || json_is_null(params)) {
        params = json_object();
        json_object_set_new(msg, "params", params);
    }
    r.method = method;
    if (!ex->unheld
        && (hold = json_integer_value(json_object_get(ex->hold_method,
                method))) > 0) {
        /* the `hold` control: it runs later, if C is still there */
        send_later(c, data, len, (uint64_t) hold, 1);
        goto done;
    }
    count_request(method);
    if (credits_charge(c, method, &acct) != 0) {
        xg_log_info("%s: credits exhausted by %s (%s %s), 10028 then close",
            c->name, method, acct ? "account" : "ip",
            acct ? acct->id : xg_ws_peer(c->ws));
        ex->st.rate_limited++;
        if (acct != NULL) {
            acct->rate_limited++;
        }
        respond(c, r.rid, NULL, exsim_error_obj(EXSIM_E_TOO_MANY, NULL, NULL,
            NULL));
        exsim_conn_close(c, 1008, "too_many_requests");
        goto done;
    }
    dispatch(&r, params);
done:
    json_decref(r.after);
    free(r.rid);
    json_decref(msg);
}
