/*
 * xg_venue_binance_client.c: the Binance venue's local clients (see
 * xg_venue_binance_int.h): paths and framing, the five control methods
 * answered with the client's own ids, a SUBSCRIBE split over the shards
 * and answered once, LIST_SUBSCRIPTIONS, client_rate, client_ping; and
 * the REST front's depth from the gateway's book.
 */
#include "xg_core.h"
#include "xg_client.h"
#include "xg_jscan.h"
#include "xg_log.h"
#include "xg_upstream.h"
#include "xg_venue_binance_int.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- answers ------------------------------------------------------------- */

static struct bn_req *
bn_req_find(struct bn_client *bc, const char *token)
{
    struct bn_req *r;
    unsigned long long seq = strtoull(token, NULL, 10);

    for (r = bc->reqs; r != NULL; r = r->next) {
        if (r->seq == seq) {
            return r;
        }
    }
    return NULL;
}

static void
bn_req_free(struct bn_req *r)
{
    struct bn_req **pp;

    for (pp = &r->bc->reqs; *pp != NULL; pp = &(*pp)->next) {
        if (*pp == r) {
            *pp = r->next;
            break;
        }
    }
    free(r->id);
    free(r->error);
    free(r);
}

static void
bn_client_send_str(struct bn_client *bc, const char *s)
{
    xg_client_send(bc->c, s, strlen(s));
}

/* {"result":RESULT,"id":ID} with the client's id bytes. */
static void
bn_reply(struct bn_client *bc, const char *id, const char *result)
{
    size_t n = strlen(id) + strlen(result) + 32;
    char *s = xg_malloc(n);

    snprintf(s, n, "{\"result\":%s,\"id\":%s}", result, id);
    bn_client_send_str(bc, s);
    free(s);
}

/* Binance's nested error shape, with the client's id bytes (or null). */
static void
bn_error(struct bn_client *bc, const char *id, int code, const char *msg)
{
    json_t *e = json_pack("{s:i, s:s}", "code", code, "msg", msg);
    char *et = json_dumps(e, JSON_COMPACT);
    size_t n = strlen(et) + (id ? strlen(id) : 4) + 32;
    char *s = xg_malloc(n);

    json_decref(e);
    snprintf(s, n, "{\"error\":%s,\"id\":%s}", et, id ? id : "null");
    bc->b->control_errors++;
    xg_client_count_error(bc->c);
    bn_client_send_str(bc, s);
    free(s);
    free(et);
}

void
bn_subreq_done(void *p, struct xg_reg_subreq *sr)
{
    struct bn_shard *sh = p;
    struct bn_client *bc = sr->client ? sr->client->owner : NULL;
    struct bn_req *r = bc != NULL ? bn_req_find(bc, sr->client_id) : NULL;
    int i;

    if (r != NULL) {
        if (sr->error != NULL && r->error == NULL) {
            r->error = xg_strdup(sr->error);
        }
        for (i = 0; i < sr->nchan; i++) {
            if (sr->status[i] != 1) {
                xg_client_log(XG_LOG_INFO, bc->c, "stream %s refused by the "
                    "exchange", sr->chan[i]);
            }
        }
        if (--r->parts == 0) {
            if (r->id != NULL && r->error != NULL) {
                size_t n = strlen(r->error) + strlen(r->id) + 32;
                char *s = xg_malloc(n);

                snprintf(s, n, "{\"error\":%s,\"id\":%s}", r->error, r->id);
                xg_client_count_error(bc->c);
                bn_client_send_str(bc, s);
                free(s);
            } else if (r->id != NULL) {
                bn_reply(bc, r->id, "null");
            }
            bn_req_free(r);
        }
    }
    xg_registry_subreq_free(sh->reg, sr);
}

/* ---- clients ------------------------------------------------------------- */


static struct xg_reg_client *
bn_client_rc(struct bn_client *bc, struct bn_shard *sh)
{
    if (bc->rc[sh->idx] == NULL) {
        bc->rc[sh->idx] = xg_registry_client_new(sh->reg, bc, bc->c);
    }
    return bc->rc[sh->idx];
}

/* How many streams BC holds on every shard. */
static size_t
bn_client_nstreams(const struct bn_client *bc)
{
    size_t n = 0;
    unsigned i;

    for (i = 0; i < bc->b->nshards; i++) {
        n += bc->rc[i] != NULL ? bc->rc[i]->nchans : 0;
    }
    return n;
}

/* 1 when BC holds stream NAME (on SH, the shard holding it, or NULL). */
static int
bn_client_holds(const struct bn_client *bc, struct bn_shard *sh,
    const char *name)
{
    struct xg_reg_client *rc = sh != NULL ? bc->rc[sh->idx] : NULL;
    struct xg_reg_channel *ch;
    size_t k;

    if (rc == NULL || (ch = xg_registry_channel(sh->reg, name)) == NULL) {
        return 0;
    }
    for (k = 0; k < rc->nchans; k++) {
        if (rc->chans[k] == ch) {
            return 1;
        }
    }
    return 0;
}

/*
 * Subscribes BC to NAMES[0..N-1] (valid names), answering ID (raw JSON;
 * NULL: no answer) once every shard has answered its part. New names
 * past client_max_channels (counted over every shard) are left out here,
 * before they are given a shard, so that they open no connection.
 */
static void
bn_client_subscribe(struct bn_client *bc, const char *id, char **names,
    size_t n)
{
    struct bn *b = bc->b;
    struct bn_shard **of = xg_calloc(n, sizeof(*of));
    char **part = xg_calloc(n, sizeof(*part));
    struct bn_req *r = xg_calloc(1, sizeof(*r));
    unsigned max = xg_client_conf(bc->c)->client_max_channels;
    size_t i, j, k, other, held = bn_client_nstreams(bc), left = 0;
    size_t room = max > held ? max - held : 0;
    size_t add[BN_MAX_SHARDS] = { 0 };
    char token[32];
    int failed = 0;

    r->bc = bc;
    r->seq = ++b->req_seq;
    r->id = id != NULL ? xg_strdup(id) : NULL;
    r->parts = 1;       /* until every part is sent */
    r->next = bc->reqs;
    bc->reqs = r;
    snprintf(token, sizeof(token), "%llu", (unsigned long long) r->seq);
    for (i = 0; i < n && !failed; i++) {
        for (j = 0; j < i && strcmp(names[j], names[i]) != 0; j++) {
            /* a name twice in one request goes where the first went */
        }
        if (j < i) {
            of[i] = of[j];
            continue;
        }
        if (!bn_client_holds(bc, bn_shard_holding(b, names[i]), names[i])) {
            if (room == 0) {
                of[i] = NULL;   /* left out, as the session would */
                left++;
                continue;
            }
            room--;
        }
        of[i] = bn_shard_for(b, names[i], add);
        failed |= of[i] == NULL;
        if (!failed && xg_registry_channel(of[i]->reg, names[i]) == NULL) {
            add[of[i]->idx]++;
        }
    }
    if (left > 0) {
        xg_client_log(XG_LOG_WARN, bc->c, "at client_max_channels %u: %zu "
            "streams left out", max, left);
    }
    if (failed) {
        if (r->id != NULL) {
            bn_error(bc, r->id, -1, "exgate: no upstream connection can take "
                "more streams (see the log)");
        }
        bn_req_free(r);
        free(of);
        free(part);
        return;
    }
    for (i = 0; i < n; i++) {
        if (of[i] == NULL) {
            continue;
        }
        /* every name of this shard, in request order */
        struct bn_shard *sh = of[i];

        k = 0;
        for (j = i; j < n; j++) {
            if (of[j] == sh) {
                part[k++] = names[j];
                of[j] = NULL;
            }
        }
        /* client_max_channels counts the streams of every shard */
        other = held - (bc->rc[sh->idx] != NULL ? bc->rc[sh->idx]->nchans : 0);
        r->parts++;
        xg_session_subscribe(sh->s, bn_client_rc(bc, sh), token, part, k,
            max > other ? max - (unsigned) other : 0, 0);
    }
    free(of);
    free(part);
    /* the parts answered at once (live streams) left one count */
    r = bn_req_find(bc, token);
    if (r != NULL && --r->parts == 0) {
        if (r->id != NULL && r->error != NULL) {
            size_t len = strlen(r->error) + strlen(r->id) + 32;
            char *s = xg_malloc(len);

            snprintf(s, len, "{\"error\":%s,\"id\":%s}", r->error, r->id);
            bn_client_send_str(bc, s);
            free(s);
        } else if (r->id != NULL) {
            bn_reply(bc, r->id, "null");
        }
        bn_req_free(r);
    }
}

static void
bn_client_unsubscribe(struct bn_client *bc, char **names, size_t n)
{
    struct bn *b = bc->b;
    unsigned i;
    size_t k;

    for (k = 0; k < n; k++) {
        struct bn_shard *sh = bn_shard_holding(b, names[k]);

        if (sh != NULL && bc->rc[sh->idx] != NULL) {
            xg_session_unsubscribe(sh->s, bc->rc[sh->idx], &names[k], 1,
                NULL);
        }
    }
    for (i = 0; i < b->nshards; i++) {
        xg_session_flush_soon(b->shards[i]->s);
    }
}

/* LIST_SUBSCRIPTIONS: the client's streams. */
static void
bn_client_list(struct bn_client *bc, const char *id)
{
    json_t *arr = json_array();
    char *text;
    unsigned i;
    size_t k;

    for (i = 0; i < bc->b->nshards; i++) {
        for (k = 0; bc->rc[i] != NULL && k < bc->rc[i]->nchans; k++) {
            json_array_append_new(arr, json_string(bc->rc[i]->chans[k]->name));
        }
    }
    text = json_dumps(arr, JSON_COMPACT);
    json_decref(arr);
    bn_reply(bc, id, text);
    free(text);
}

/*
 * The streams of PATH (its query included) and its framing: "/ws",
 * "/ws/<n>" (ccxt), "/ws/<stream>[/<stream>...]" raw; "/stream" and
 * "/stream?streams=a/b" combined; any prefix before the last /ws or
 * /stream ("/stream/ws/3", "/fapi/public/ws/0"). Appends the names to
 * *NAMES (*N of them). Returns 0, or -1 when a name is not a stream.
 */
static int
bn_path_streams(const char *path, int *combined, char ***names, size_t *n)
{
    const char *q = strchr(path, '?'), *end = q ? q : path + strlen(path);
    const char *ws = NULL, *st = NULL, *p, *s;
    size_t len;

    *combined = 0;
    for (p = path; p < end; p++) {
        if (*p != '/') {
            continue;
        }
        len = (size_t) (end - p);
        if (len >= 3 && strncmp(p, "/ws", 3) == 0
            && (len == 3 || p[3] == '/'))
        {
            ws = p;
            st = NULL;
        } else if (len >= 7 && strncmp(p, "/stream", 7) == 0
                   && (len == 7 || p[7] == '/'))
        {
            st = p;
            ws = NULL;
        }
    }
    if (st != NULL && q != NULL) {
        *combined = 1;
        for (s = strstr(q, "streams="); s != NULL;
             s = strstr(s + 1, "&streams="))
        {
            const char *v = strchr(s, '=') + 1;
            const char *ve = v + strcspn(v, "&");

            while (v < ve) {
                const char *e = memchr(v, '/', (size_t) (ve - v));

                e = e != NULL ? e : ve;
                if (e > v) {
                    if (!bn_stream_valid(v, (size_t) (e - v))) {
                        return -1;
                    }
                    *names = xg_realloc(*names, (*n + 1) * sizeof(**names));
                    (*names)[(*n)++] = xg_strndup(v, (size_t) (e - v));
                }
                v = e + 1;
            }
        }
        return 0;
    }
    if (st != NULL) {
        *combined = 1;
        return 0;
    }
    if (ws == NULL) {
        return 0;       /* another path: raw, no stream yet */
    }
    for (p = ws + 3; p < end;) {
        const char *e;

        p++;            /* the '/' */
        e = memchr(p, '/', (size_t) (end - p));
        e = e != NULL ? e : end;
        len = (size_t) (e - p);
        if (len > 0 && strspn(p, "0123456789") < len) {
            if (!bn_stream_valid(p, len)) {
                return -1;
            }
            *names = xg_realloc(*names, (*n + 1) * sizeof(**names));
            (*names)[(*n)++] = xg_strndup(p, len);
        }
        p = e;
    }
    return 0;
}

void *
bn_client_open(void *p, struct xg_client *c)
{
    struct bn *b = p;
    struct bn_client *bc = xg_calloc(1, sizeof(*bc));
    const char *path = xg_client_path(c);
    char **names = NULL;
    size_t n = 0, i;

    bc->b = b;
    bc->c = c;
    if (b->cf->client_ping) {
        /* as Binance: 20 s and 1 min on spot, 3 min and 10 min futures */
        xg_client_set_ping(c, b->cf->client_ping_ms ? b->cf->client_ping_ms
            : b->market == XG_BN_SPOT ? 20000 : 180000,
            b->cf->client_pong_ms ? b->cf->client_pong_ms
            : b->market == XG_BN_SPOT ? 60000 : 600000);
    }
    b->linger_ms = xg_client_conf(c)->unsubscribe_linger_ms;
    for (i = 0; i < b->nshards; i++) {
        xg_session_set_linger(b->shards[i]->s, b->linger_ms);
    }
    bc->next = b->clients;
    if (b->clients != NULL) {
        b->clients->prev = bc;
    }
    b->clients = bc;
    b->nclients++;
    if (path != NULL && bn_path_streams(path, &bc->combined, &names, &n) != 0)
    {
        xg_client_log(XG_LOG_INFO, c, "path \"%.200s\" names something that "
            "is not a stream", path);
        xg_client_close(c, 1008, "Invalid request: invalid stream");
    } else if (n > 0) {
        bn_client_subscribe(bc, NULL, names, n);
    }
    for (i = 0; i < n; i++) {
        free(names[i]);
    }
    free(names);
    return bc;
}

/* The "params" of a SUBSCRIBE or UNSUBSCRIBE: every one a stream name. */
static int
bn_params_streams(json_t *params, char ***names, size_t *n)
{
    size_t i;

    if (!json_is_array(params) || json_array_size(params) > BN_MAX_PARAMS) {
        return -1;
    }
    *n = json_array_size(params);
    *names = xg_calloc(*n + 1, sizeof(**names));
    for (i = 0; i < *n; i++) {
        json_t *s = json_array_get(params, i);

        if (!json_is_string(s)
            || !bn_stream_valid(json_string_value(s), json_string_length(s))
            || strlen(json_string_value(s)) != json_string_length(s))
        {
            return -2;
        }
        (*names)[i] = (char *) json_string_value(s);
    }
    return 0;
}

void
bn_client_message(void *p, void *cs, const unsigned char *udata, size_t len)
{
    static const char *keys[] = { "id" };
    struct bn *b = p;
    struct bn_client *bc = cs;
    const char *data = (const char *) udata;
    struct xg_jspan v[1];
    json_error_t jerr;
    json_t *req, *params;
    const char *method;
    char *id = NULL, **names = NULL, msg[256];
    size_t n = 0;
    int r;

    b->control_in++;
    if (xg_client_rate_exceeded(bc->c)) {
        /* every message counts, valid or not: refused before the parse */
        if (xg_jscan_object(data, len, keys, 1, v) == XG_OK
            && v[0].p != NULL)
        {
            id = xg_strndup(v[0].p, v[0].len);
        }
        xg_client_log(XG_LOG_WARN, bc->c, "over client_rate %u/s: a message "
            "refused", xg_client_conf(bc->c)->client_rate);
        bn_error(bc, id, -1003, "Too many requests: over client_rate");
        free(id);
        return;
    }
    /* ids may be past 2^63 (USDⓈ-M: unsigned); they are echoed as sent */
    req = json_loadb(data, len, JSON_REJECT_DUPLICATES
        | JSON_DECODE_INT_AS_REAL, &jerr);
    if (req == NULL) {
        snprintf(msg, sizeof(msg), "Invalid JSON: %s at line %d column %d",
            jerr.text, jerr.line, jerr.column);
        xg_client_log(XG_LOG_INFO, bc->c, "invalid JSON (%zu bytes): %s",
            len, jerr.text);
        bn_error(bc, NULL, 3, msg);
        return;
    }
    if (!json_is_object(req)) {
        bn_error(bc, NULL, 2, "Invalid request: invalid type: expected "
            "struct Request");
        goto done;
    }
    if (xg_jscan_object(data, len, keys, 1, v) == XG_OK && v[0].p != NULL) {
        id = xg_strndup(v[0].p, v[0].len);
    } else {
        id = xg_strdup("null");
    }
    method = json_string_value(json_object_get(req, "method"));
    params = json_object_get(req, "params");
    if (method == NULL) {
        bn_error(bc, id, 2, json_object_get(req, "method") == NULL
            ? "Invalid request: missing field `method`"
            : "Invalid request: invalid type: expected a string for "
              "`method`");
        goto done;
    }
    if (strcmp(method, "SUBSCRIBE") == 0
        || strcmp(method, "UNSUBSCRIBE") == 0)
    {
        r = bn_params_streams(params, &names, &n);
        if (r == -1) {
            bn_error(bc, id, 2, params == NULL
                ? "Invalid request: missing field `params`"
                : "Invalid request: invalid type: expected a sequence of at "
                  "most 1024 stream names");
        } else if (r == -2) {
            xg_client_log(XG_LOG_INFO, bc->c, "%s of something that is not a "
                "stream refused", method);
            bn_error(bc, id, 2, "Invalid request: invalid stream");
        } else if (method[0] == 'S') {
            bn_client_subscribe(bc, id, names, n);
        } else {
            bn_client_unsubscribe(bc, names, n);
            bn_reply(bc, id, "null");
        }
        free(names);
        goto done;
    }
    if (strcmp(method, "LIST_SUBSCRIPTIONS") == 0) {
        bn_client_list(bc, id);
        goto done;
    }
    if (strcmp(method, "SET_PROPERTY") == 0
        || strcmp(method, "GET_PROPERTY") == 0)
    {
        const char *prop = json_string_value(json_array_get(params, 0));

        if (!json_is_array(params) || prop == NULL) {
            bn_error(bc, id, 2, "Invalid request: invalid params");
        } else if (strcmp(prop, "combined") != 0) {
            bn_error(bc, id, 0, "Unknown property");
        } else if (method[0] == 'G') {
            bn_reply(bc, id, bc->combined ? "true" : "false");
        } else if (json_array_size(params) != 2
                   || !json_is_boolean(json_array_get(params, 1)))
        {
            bn_error(bc, id, 1, "Invalid value type: expected Boolean");
        } else {
            bc->combined = json_is_true(json_array_get(params, 1));
            bn_reply(bc, id, "null");
        }
        goto done;
    }
    snprintf(msg, sizeof(msg), "Invalid request: unknown variant `%.40s`, "
        "expected one of `SUBSCRIBE`, `UNSUBSCRIBE`, `LIST_SUBSCRIPTIONS`, "
        "`SET_PROPERTY`, `GET_PROPERTY`", method);
    bn_error(bc, id, 2, msg);

done:
    free(id);
    json_decref(req);
}

void
bn_client_close(void *p, void *cs, const char *reason)
{
    struct bn *b = p;
    struct bn_client *bc = cs;
    uint64_t now = xg_now_ms();
    unsigned i;

    while (bc->reqs != NULL) {
        bn_req_free(bc->reqs);
    }
    for (i = 0; i < b->nshards; i++) {
        if (bc->rc[i] != NULL) {
            xg_registry_client_free(b->shards[i]->reg, bc->rc[i], now);
            xg_session_flush_soon(b->shards[i]->s);
        }
    }
    if (bc->prev != NULL) {
        bc->prev->next = bc->next;
    } else {
        b->clients = bc->next;
    }
    if (bc->next != NULL) {
        bc->next->prev = bc->prev;
    }
    b->nclients--;
    free(bc);
}

/* ---- the REST front: depth from the gateway's book ---------------------- */

/* The value of KEY in QUERY (a=1&b=2), copied into OUT, or NULL. */
static const char *
bn_query_get(const char *query, const char *key, char *out, size_t n)
{
    size_t k = strlen(key);
    const char *s = query;

    while (s != NULL && *s != '\0') {
        if (strncmp(s, key, k) == 0 && s[k] == '=') {
            size_t len = strcspn(s + k + 1, "&");

            if (len >= n) {
                return NULL;
            }
            memcpy(out, s + k + 1, len);
            out[len] = '\0';
            return out;
        }
        s = strchr(s, '&');
        s = s != NULL ? s + 1 : NULL;
    }
    return NULL;
}

/*
 * GET /api/v3/depth (spot) or /fapi/v1/depth (USDⓈ-M): answered from the
 * book of the symbol's depth stream whose subscribers are furthest on,
 * when some depth stream of it is held and its book is vouched for;
 * anything else is proxied.
 */
char *
bn_rest_local(void *p, const char *path, const char *query, size_t *len)
{
    static const char *const kinds[] = { "@depth", "@depth@100ms",
        "@depth@250ms", "@depth@500ms", "@depth@1000ms" };
    struct bn *b = p;
    char sym[64], lim[16], name[96], *best = NULL, *body;
    unsigned long long best_id = 0, limit = 100;
    uint64_t id;
    size_t i, blen = 0, l;

    if (strcmp(path, b->market == XG_BN_SPOT ? "/api/v3/depth"
                                             : "/fapi/v1/depth") != 0
        || query == NULL || bn_query_get(query, "symbol", sym,
                                         sizeof(sym)) == NULL)
    {
        return NULL;
    }
    if (bn_query_get(query, "limit", lim, sizeof(lim)) != NULL) {
        char *e;

        limit = strtoull(lim, &e, 10);
        if (*e != '\0' || limit == 0 || limit > 5000) {
            return NULL;    /* the exchange words the error */
        }
    }
    for (i = 0; sym[i] != '\0'; i++) {
        sym[i] = (char) tolower((unsigned char) sym[i]);
    }
    for (i = 0; i < XG_NELEM(kinds); i++) {
        struct bn_shard *sh;
        struct xg_reg_channel *ch;
        static const char *keys[] = { "lastUpdateId" };
        struct xg_jspan v[1];

        snprintf(name, sizeof(name), "%s%s", sym, kinds[i]);
        if ((sh = bn_shard_holding(b, name)) == NULL
            || (ch = xg_registry_channel(sh->reg, name)) == NULL
            || ch->ext == NULL
            || (body = xg_bn_book_depth(ch->ext, (unsigned) limit, &l))
               == NULL)
        {
            continue;
        }
        if (xg_jscan_object(body, l, keys, 1, v) == XG_OK
            && xg_jscan_uint(&v[0], &id) == XG_OK && (best == NULL
                                                      || id > best_id))
        {
            free(best);
            best = body;
            blen = l;
            best_id = id;
        } else {
            free(body);
        }
    }
    if (best != NULL) {
        b->rest_depth_local++;
        *len = blen;
    }
    return best;
}
