/*
 * xg_venue_deribit_edges.c: requests from edges, served by the core
 * (issue 17; the wire is in docs/publish.md, "Requests from edges").
 *
 * A Deribit upstream with `publish` reads the requests edges append to
 * PREFIX:UPSTREAM:req (XADD ... * edge EDGE rid RID ts UNIX_MS body JSON)
 * and runs each as if a local bot of that edge had sent it: one client
 * per edge with no connection (xg_client_new_sink(), and a dr_client of
 * this venue, authenticated: an edge's bots are its edge's business),
 * made on the edge's first request and freed after DR_EDGES_IDLE_MS with
 * nothing in flight. So the session's rules hold for edges as for local
 * bots: reads replayed after a reconnect, orders never (13028 when the
 * answer is lost), request_timeout, the queue's bounds, and the request
 * budget's round robin, in which each edge is one client. Private methods
 * go on the upstream's own authenticated connection (the unnamed
 * account). Whatever the venue sends that client goes out through the
 * publisher's pipeline (xg_redis_answer()) to PREFIX:UPSTREAM:ans:EDGE
 * when it is an answer (it has an id, the RID), held in order while that
 * connection cannot take it (de_write()); a notification (an
 * exgate/order_outcome) has no place on the wire and is dropped, counted.
 *
 * The reader has a Redis connection of its own (an xg_rconn with the
 * publisher's address, password and the upstream's reconnect policy), so
 * that its XREAD BLOCK never holds the publisher's pipeline. At its first
 * connect it takes the stream's last id (XREVRANGE ... COUNT 1) and reads
 * from there: only what arrives after it started. After a reconnect it
 * reads on from the last id it read, so no entry is ever run twice. A
 * read that has no reply within DR_EDGES_BLOCK_MS + connect_timeout drops
 * the connection (a Redis that stopped answering). Nothing is read while
 * the publisher's connection is down (after a Redis restart the reader
 * may be back first): a request run then would have its answer lost, an
 * order placed that its bot is told may not be. Entries that arrive in
 * that state are read again once it is up.
 *
 * Refused, counted and logged, never run: an entry without edge, rid, ts
 * or body; an edge name outside [A-Za-z0-9_.-]{1,64}; a rid or ts that is
 * not decimal; a body that is not a JSON object with a method and an id
 * whose text is the RID; and (stale) an entry older than request_timeout
 * by its ts, which the edge has answered 13028 or 10028 already: run late
 * it could place an order its bot believes was not placed. Answered with
 * an error, not run: a local method (-32601 "not served through the
 * core"), a new edge past DR_EDGES_MAX edges, an edge with queue_limit
 * requests in flight (13028, as a full queue).
 */
#include "xg_venue_deribit_int.h"
#include "xg_rconn.h"
#include "xg_redis.h"
#include "xg_upstream.h"

#include <stdarg.h>

#include <hiredis/hiredis.h>
#include <hiredis/async.h>

#define DR_EDGES_MAX        256       /* edges served at once */
#define DR_EDGES_IDLE_MS    60000     /* an edge's client is freed after */
#define DR_EDGES_BLOCK_MS   1000      /* XREAD BLOCK */
#define DR_EDGES_COUNT      256       /* entries one XREAD takes */
#define DR_EDGES_WAIT_MS    50        /* the publisher down: read later */
#define DR_EDGES_ANS_HELD   1024      /* answers held while it is down */
#define DR_EDGE_NAME_MAX    64
#define DR_RID_MAX          20        /* digits of a uint64 */

/* An answer the publish connection could not take yet, held. */
struct de_ans {
    struct de_ans      *next;
    uint64_t            at_ms;
    char                edge[DR_EDGE_NAME_MAX + 1];
    char                rid[DR_RID_MAX + 1];
    char               *data;
    size_t              len;
};

/* One edge that sent requests: its client. */
struct dr_edge {
    struct dr_edges    *es;
    char                name[DR_EDGE_NAME_MAX + 1];
    struct xg_client   *c;          /* a sink client */
    struct dr_client   *dc;
    unsigned            inflight;   /* requests run and not answered */
    struct xg_timer    *ev_idle;
    struct dr_edge     *prev, *next;
};

struct dr_edges {
    struct dr                      *d;
    const struct xg_upstream_conf  *uc;        /* borrowed; reconf swaps */
    struct xg_rconn                *conn;
    redisAsyncContext              *ac;        /* while ready */
    char                            key[XG_REDIS_MAX_PREFIX + 300];
    char                            last_id[48];  /* "": not known yet */
    int                             reading;   /* an XREAD or XREVRANGE */
    struct xg_timer                *ev_read;   /* its deadline */
    struct xg_timer                *ev_wait;   /* the publisher is down:
                                                  read again later */
    uint64_t                        waits;     /* reads put off so */
    struct de_ans                  *held, **held_tail;  /* answers, in
                                                  order (de_write()) */
    unsigned                        nheld;
    struct dr_edge                 *edges;
    unsigned                        nedges;

    uint64_t                        served;    /* run */
    uint64_t                        refused;   /* not run, answered or not */
    uint64_t                        malformed; /* of which unreadable */
    uint64_t                        stale;     /* not run: too old */
    uint64_t                        answers;   /* written */
    uint64_t                        answers_lost;  /* could not be */
    uint64_t                        notices_dropped;
    uint64_t                        errors;    /* error replies */
    char                            last_error[160];
};

static void de_read(struct dr_edges *es);

static void
de_log(int level, const struct dr_edges *es, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void
de_log(int level, const struct dr_edges *es, const char *fmt, ...)
{
    char msg[512];
    va_list ap;

    if (level > xg_log_level) {
        return;
    }
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    xg_upstream_log(level, es->d->up, "requests from edges: %s", msg);
}

/* ---- checks (t/unit/check_xg_deribit_edges.c) ---- */

/* 1 when NAME (LEN bytes) is an edge's name: [A-Za-z0-9_.-]{1,64}. */
int
dr_edge_name_ok(const char *name, size_t len)
{
    size_t i;

    if (len == 0 || len > DR_EDGE_NAME_MAX) {
        return 0;
    }
    for (i = 0; i < len; i++) {
        char ch = name[i];

        if (!((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z')
              || (ch >= '0' && ch <= '9') || ch == '_' || ch == '.'
              || ch == '-'))
        {
            return 0;
        }
    }
    return 1;
}

/* 1 when S (LEN bytes) is a decimal number of 1 to DR_RID_MAX digits,
   with no leading zero (but "0"): the text a JSON number id has. */
int
dr_edge_decimal_ok(const char *s, size_t len)
{
    size_t i;

    if (len == 0 || len > DR_RID_MAX || (len > 1 && s[0] == '0')) {
        return 0;
    }
    for (i = 0; i < len; i++) {
        if (s[i] < '0' || s[i] > '9') {
            return 0;
        }
    }
    return 1;
}

/*
 * Reads BODY (LEN bytes), an edge's request: a JSON object whose id is
 * the number RID (the same text) with a string method. Returns the
 * method (malloc'd), or NULL with *WHY set.
 */
char *
dr_edge_body(const char *body, size_t len, const char *rid,
    const char **why)
{
    static const char *keys[] = { "id" };
    struct xg_jspan v[1];
    json_t *req;
    const char *m;
    char *method;

    if (xg_jscan_object(body, len, keys, 1, v) != XG_OK) {
        *why = "the body is not a JSON object";
        return NULL;
    }
    if (v[0].p == NULL || v[0].len != strlen(rid)
        || memcmp(v[0].p, rid, v[0].len) != 0)
    {
        *why = "the body's id is not the rid";
        return NULL;
    }
    req = json_loadb(body, len, JSON_REJECT_DUPLICATES
        | JSON_DECODE_INT_AS_REAL, NULL);
    if (req == NULL || !json_is_object(req)) {
        json_decref(req);
        *why = "the body is not a JSON object";
        return NULL;
    }
    m = json_string_value(json_object_get(req, "method"));
    if (m == NULL || *m == '\0') {
        json_decref(req);
        *why = "the body has no method";
        return NULL;
    }
    method = xg_strdup(m);
    json_decref(req);
    return method;
}

/* ---- answers ---- */

/*
 * Writes the answers held, in order, while the publish connection takes
 * them; drops (lost, logged) those held longer than request_timeout: the
 * edge has answered its bot already; and all of them (lost, one line)
 * once a reload removed `publish`. Returns 1 when none is left.
 */
static int
de_flush(struct dr_edges *es)
{
    struct xg_redis *pub = xg_upstream_publisher(es->d->up);
    uint64_t now = xg_now_ms(), max = es->d->cf->request_timeout_ms;
    struct de_ans *a;
    unsigned gone = 0;

    while ((a = es->held) != NULL) {
        if (!xg_redis_enabled(pub)) {
            /* a reload took `publish` away: no connection will take
               them; one line for all, not up to 1024 */
            es->answers_lost++;
            gone++;
        } else if (max != 0 && now - a->at_ms > max) {
            es->answers_lost++;
            de_log(XG_LOG_WARN, es, "the answer to edge %s's request %s is "
                "lost: held %llu ms for the publish connection, over "
                "request_timeout", a->edge, a->rid,
                (unsigned long long) (now - a->at_ms));
        } else if (xg_redis_answer(pub, a->edge, a->rid, a->data, a->len)
                   == XG_OK)
        {
            es->answers++;
        } else {
            return 0;
        }
        es->held = a->next;
        es->nheld--;
        free(a->data);
        free(a);
    }
    es->held_tail = &es->held;
    if (gone > 0) {
        de_log(XG_LOG_WARN, es, "%u held answer%s to edges dropped (lost): "
            "publish removed by a reload", gone, gone == 1 ? "" : "s");
    }
    return 1;
}

/*
 * DATA goes to EDGE's answer stream as the answer to RID: now, or held
 * (in order, up to DR_EDGES_ANS_HELD, for request_timeout) while the
 * publish connection cannot take it (down, or its in-flight bound).
 */
static void
de_write(struct dr_edges *es, const char *edge, const char *rid,
    const char *data, size_t len)
{
    struct xg_redis *pub = xg_upstream_publisher(es->d->up);
    struct de_ans *a;

    if (pub == NULL) {
        es->answers_lost++;
        return;
    }
    if (de_flush(es) && xg_redis_answer(pub, edge, rid, data, len) == XG_OK) {
        es->answers++;
        return;
    }
    if (es->nheld >= DR_EDGES_ANS_HELD) {
        es->answers_lost++;
        de_log(XG_LOG_WARN, es, "the answer to edge %s's request %s is lost "
            "(the publish connection cannot take it and %u are held)", edge,
            rid, es->nheld);
        return;
    }
    a = xg_calloc(1, sizeof(*a));
    a->at_ms = xg_now_ms();
    snprintf(a->edge, sizeof(a->edge), "%s", edge);
    snprintf(a->rid, sizeof(a->rid), "%s", rid);
    a->data = xg_strndup(data, len);
    a->len = len;
    if (es->held == NULL) {
        es->held_tail = &es->held;
    }
    *es->held_tail = a;
    es->held_tail = &a->next;
    es->nheld++;
    xg_timer_add_ms(es->ev_wait, DR_EDGES_WAIT_MS);
}

/* An error of ours to EDGE's request RID, which is not run. */
static void
de_error(struct dr_edges *es, const char *edge, const char *rid, int code,
    const char *message, const char *reason)
{
    char *s = dr_error_text(es->d, rid, code, message, reason);

    de_write(es, edge, rid, s, strlen(s));
    free(s);
}

/*
 * What the venue sends an edge's client: an answer (its id is the RID of
 * the request it answers) to the edge's stream; a notification is
 * dropped.
 */
static void
de_sink(void *arg, const char *data, size_t len)
{
    static const char *keys[] = { "id" };
    struct dr_edge *e = arg;
    struct dr_edges *es = e->es;
    struct xg_jspan v[1];
    char rid[DR_RID_MAX + 1];

    if (xg_jscan_object(data, len, keys, 1, v) != XG_OK || v[0].p == NULL
        || !dr_edge_decimal_ok(v[0].p, v[0].len))
    {
        es->notices_dropped++;
        xg_client_log(XG_LOG_DEBUG, e->c, "a message with no request id "
            "not written (%zu bytes)", len);
        return;
    }
    memcpy(rid, v[0].p, v[0].len);
    rid[v[0].len] = '\0';
    de_write(es, e->name, rid, data, len);
    if (e->inflight > 0 && --e->inflight == 0) {
        xg_timer_add_ms(e->ev_idle, DR_EDGES_IDLE_MS);
    }
}

/* ---- edges ---- */

static void
de_edge_free(struct dr_edge *e, const char *reason)
{
    struct dr_edges *es = e->es;

    if (e->prev != NULL) {
        e->prev->next = e->next;
    } else {
        es->edges = e->next;
    }
    if (e->next != NULL) {
        e->next->prev = e->prev;
    }
    es->nedges--;
    dr_client_free(es->d, e->dc, reason);
    xg_client_sink_free(e->c);
    xg_timer_free(e->ev_idle);
    free(e);
}

static void
de_on_idle(evutil_socket_t fd, short what, void *arg)
{
    struct dr_edge *e = arg;

    if (e->inflight == 0) {
        de_edge_free(e, "idle");
    }
}

/* EDGE's client, made when needed; NULL when there are too many. */
static struct dr_edge *
de_edge_get(struct dr_edges *es, const char *edge)
{
    struct dr_edge *e;
    char name[DR_EDGE_NAME_MAX + 16];

    for (e = es->edges; e != NULL; e = e->next) {
        if (strcmp(e->name, edge) == 0) {
            break;
        }
    }
    if (e != NULL && xg_client_closing(e->c) && e->inflight == 0) {
        de_edge_free(e, "closed");      /* made anew below */
        e = NULL;
    }
    if (e != NULL) {
        return e;
    }
    if (es->nedges >= DR_EDGES_MAX) {
        return NULL;
    }
    e = xg_calloc(1, sizeof(*e));
    e->es = es;
    snprintf(e->name, sizeof(e->name), "%s", edge);
    snprintf(name, sizeof(name), "edge %s", edge);
    e->c = xg_client_new_sink(es->d->base,
        xg_gateway_conf_get(es->uc->main), name, de_sink, e);
    e->dc = dr_client_new(es->d, e->c);
    e->dc->authed = 1;      /* its edge authenticated its bots */
    e->ev_idle = xg_timer_new(es->d->base, de_on_idle, e);
    e->next = es->edges;
    if (es->edges != NULL) {
        es->edges->prev = e;
    }
    es->edges = e;
    es->nedges++;
    xg_client_log(XG_LOG_INFO, e->c, "open (requests from edge %s)", edge);
    return e;
}

/* ---- entries ---- */

/* A field's value in FIELDS (an entry's [k, v, ...]), or NULL. */
static const redisReply *
de_field(const redisReply *fields, const char *name)
{
    size_t i;

    for (i = 0; i + 1 < fields->elements; i += 2) {
        const redisReply *k = fields->element[i];
        const redisReply *v = fields->element[i + 1];

        if (k->type == REDIS_REPLY_STRING && k->len == strlen(name)
            && memcmp(k->str, name, k->len) == 0)
        {
            return v->type == REDIS_REPLY_STRING ? v : NULL;
        }
    }
    return NULL;
}

/* An entry that cannot be run nor answered: counted and logged. */
static void
de_malformed(struct dr_edges *es, const char *id, const char *why)
{
    es->refused++;
    es->malformed++;
    de_log(XG_LOG_WARN, es, "entry %s refused: %s", id, why);
}

/* One entry of the request stream: [id, [field, value, ...]]. */
static void
de_entry(struct dr_edges *es, const redisReply *ent)
{
    const redisReply *id, *fields, *edge, *rid, *ts, *body;
    char eid[48], ename[DR_EDGE_NAME_MAX + 1], erid[DR_RID_MAX + 1];
    const char *why = NULL;
    struct dr_edge *e;
    uint64_t t, now;
    char *method;
    size_t i;

    if (ent->type != REDIS_REPLY_ARRAY || ent->elements != 2
        || ent->element[0]->type != REDIS_REPLY_STRING
        || ent->element[0]->len >= sizeof(eid))
    {
        de_malformed(es, "?", "not a stream entry");
        return;
    }
    id = ent->element[0];
    fields = ent->element[1];
    memcpy(eid, id->str, id->len);
    eid[id->len] = '\0';
    /* read, whatever becomes of it: never again */
    memcpy(es->last_id, eid, id->len + 1);
    if (fields->type != REDIS_REPLY_ARRAY) {
        de_malformed(es, eid, "no fields");
        return;
    }
    edge = de_field(fields, "edge");
    rid = de_field(fields, "rid");
    ts = de_field(fields, "ts");
    body = de_field(fields, "body");
    if (edge == NULL || rid == NULL || ts == NULL || body == NULL) {
        de_malformed(es, eid, "edge, rid, ts and body are required");
        return;
    }
    if (!dr_edge_name_ok(edge->str, edge->len)) {
        de_malformed(es, eid, "bad edge name (1 to 64 of letters, digits, "
            "\"_.-\")");
        return;
    }
    memcpy(ename, edge->str, edge->len);
    ename[edge->len] = '\0';
    if (!dr_edge_decimal_ok(rid->str, rid->len)
        || !dr_edge_decimal_ok(ts->str, ts->len))
    {
        de_malformed(es, eid, "rid and ts must be decimal numbers");
        return;
    }
    memcpy(erid, rid->str, rid->len);
    erid[rid->len] = '\0';
    for (t = 0, i = 0; i < ts->len; i++) {
        t = t * 10 + (uint64_t) (ts->str[i] - '0');
    }
    now = xg_wall_us() / 1000;
    if (es->d->cf->request_timeout_ms != 0 && t < now
        && now - t > es->d->cf->request_timeout_ms)
    {
        es->stale++;
        de_log(XG_LOG_WARN, es, "edge %s's request %s (entry %s) is %llu ms "
            "old, over request_timeout %llu ms: not run (the edge has "
            "answered it)", ename, erid, eid, (unsigned long long) (now - t),
            (unsigned long long) es->d->cf->request_timeout_ms);
        return;
    }
    method = dr_edge_body(body->str, body->len, erid, &why);
    if (method == NULL) {
        es->malformed++;
        es->refused++;
        de_log(XG_LOG_WARN, es, "edge %s's request %s (entry %s) refused: "
            "%s", ename, erid, eid, why);
        de_error(es, ename, erid, -32600, "Invalid Request", why);
        return;
    }
    if (dr_is_local_method(method)) {
        es->refused++;
        de_log(XG_LOG_INFO, es, "edge %s's request %s: %s is the edge's own "
            "business: -32601", ename, erid, method);
        de_error(es, ename, erid, -32601, "not served through the core",
            method);
        free(method);
        return;
    }
    e = de_edge_get(es, ename);
    if (e == NULL) {
        es->refused++;
        de_log(XG_LOG_WARN, es, "edge %s's request %s refused: %d edges "
            "served already", ename, erid, DR_EDGES_MAX);
        de_error(es, ename, erid, 13028, "upstream unavailable",
            "too many edges served by the core");
        free(method);
        return;
    }
    if (es->uc->queue_limit != 0 && e->inflight >= es->uc->queue_limit) {
        es->refused++;
        xg_client_log(XG_LOG_WARN, e->c, "request %s (%s) refused: "
            "queue_limit %u requests in flight", erid, method,
            es->uc->queue_limit);
        de_error(es, ename, erid, 13028, "upstream unavailable",
            "the edge has queue_limit requests in flight at the core");
        free(method);
        return;
    }
    free(method);
    es->served++;
    e->inflight++;
    xg_timer_del(e->ev_idle);
    dr_client_message(es->d, e->dc, (const unsigned char *) body->str,
        body->len);
}

/* ---- the reader ---- */

static void
de_reply_error(struct dr_edges *es, const char *cmd, const redisReply *rep)
{
    char why[220];

    es->errors++;
    if (rep->type == REDIS_REPLY_ERROR) {
        snprintf(es->last_error, sizeof(es->last_error), "%.*s",
            (int) rep->len, rep->str);
    } else {
        snprintf(es->last_error, sizeof(es->last_error), "unexpected reply "
            "type %d", rep->type);
    }
    snprintf(why, sizeof(why), "%s failed: %s", cmd, es->last_error);
    xg_rconn_fail(es->conn, XG_LOG_ERROR, why);
}

/* XREAD's answer: the entries (nil: none within the block). */
static void
de_on_read(redisAsyncContext *ac, void *reply, void *priv)
{
    struct dr_edges *es = priv;
    redisReply *rep = reply;
    size_t i, j;

    if (ac->data == NULL || rep == NULL) {
        return;     /* that connection is gone: on_ready reads again */
    }
    es->reading = 0;
    xg_timer_del(es->ev_read);
    if (rep->type == REDIS_REPLY_NIL) {
        de_read(es);
        return;
    }
    if (rep->type != REDIS_REPLY_ARRAY) {
        de_reply_error(es, "XREAD", rep);
        return;
    }
    /* [[key, [entry, ...]], ...]: one key here */
    for (i = 0; i < rep->elements; i++) {
        const redisReply *s = rep->element[i];

        if (s->type != REDIS_REPLY_ARRAY || s->elements != 2
            || s->element[1]->type != REDIS_REPLY_ARRAY)
        {
            continue;
        }
        for (j = 0; j < s->element[1]->elements; j++) {
            if (!xg_redis_writable(xg_upstream_publisher(es->d->up))) {
                /* the rest is read again from last_id, when answers
                   can go out */
                break;
            }
            de_entry(es, s->element[1]->element[j]);
        }
    }
    de_read(es);
}

/* The stream's last id at the first connect: reading starts after it. */
static void
de_on_last(redisAsyncContext *ac, void *reply, void *priv)
{
    struct dr_edges *es = priv;
    redisReply *rep = reply;
    const redisReply *id;

    if (ac->data == NULL || rep == NULL) {
        return;
    }
    es->reading = 0;
    xg_timer_del(es->ev_read);
    if (rep->type != REDIS_REPLY_ARRAY) {
        de_reply_error(es, "XREVRANGE", rep);
        return;
    }
    if (rep->elements == 0) {
        snprintf(es->last_id, sizeof(es->last_id), "0-0");
    } else if (rep->element[0]->type == REDIS_REPLY_ARRAY
               && rep->element[0]->elements == 2
               && (id = rep->element[0]->element[0])->type
                  == REDIS_REPLY_STRING
               && id->len < sizeof(es->last_id))
    {
        memcpy(es->last_id, id->str, id->len);
        es->last_id[id->len] = '\0';
    } else {
        de_reply_error(es, "XREVRANGE", rep);
        return;
    }
    de_log(XG_LOG_INFO, es, "reading %s after %s", es->key, es->last_id);
    de_read(es);
}

/* The next read, unless one is out or there is no connection. */
static void
de_read(struct dr_edges *es)
{
    int rc;

    if (es->ac == NULL || es->reading) {
        return;
    }
    if (!xg_redis_writable(xg_upstream_publisher(es->d->up))) {
        es->waits++;
        xg_timer_add_ms(es->ev_wait, DR_EDGES_WAIT_MS);
        return;
    }
    if (es->last_id[0] == '\0') {
        rc = redisAsyncCommand(es->ac, de_on_last, es,
            "XREVRANGE %s + - COUNT 1", es->key);
    } else {
        rc = redisAsyncCommand(es->ac, de_on_read, es,
            "XREAD COUNT %d BLOCK %d STREAMS %s %s", DR_EDGES_COUNT,
            DR_EDGES_BLOCK_MS, es->key, es->last_id);
    }
    if (rc != REDIS_OK) {
        xg_rconn_fail(es->conn, XG_LOG_WARN, "cannot send XREAD");
        return;
    }
    es->reading = 1;
    xg_timer_add_ms(es->ev_read, DR_EDGES_BLOCK_MS + es->uc->connect_timeout_ms);
}

static void
de_on_read_timeout(evutil_socket_t fd, short what, void *arg)
{
    struct dr_edges *es = arg;
    char why[96];

    snprintf(why, sizeof(why), "XREAD BLOCK %d: no reply within %llu ms",
        DR_EDGES_BLOCK_MS, (unsigned long long) (DR_EDGES_BLOCK_MS
        + es->uc->connect_timeout_ms));
    xg_rconn_fail(es->conn, XG_LOG_WARN, why);
}

/* The publisher was down: answers held go out, reading goes on. */
static void
de_on_wait(evutil_socket_t fd, short what, void *arg)
{
    struct dr_edges *es = arg;

    if (!de_flush(es)) {
        xg_timer_add_ms(es->ev_wait, DR_EDGES_WAIT_MS);
    }
    de_read(es);
}

static void
de_on_ready(void *arg, redisAsyncContext *ac)
{
    struct dr_edges *es = arg;

    es->ac = ac;
    es->reading = 0;
    de_read(es);
}

static void
de_on_down(void *arg, const char *reason)
{
    struct dr_edges *es = arg;

    es->ac = NULL;
    es->reading = 0;
    xg_timer_del(es->ev_read);
    snprintf(es->last_error, sizeof(es->last_error), "%s", reason);
}

static const struct xg_rconn_cbs de_conn_cbs = {
    de_on_ready,
    de_on_down,
    NULL
};

/* The key and the connection for UC (its `publish` set). */
static void
de_target(struct dr_edges *es, const struct xg_upstream_conf *uc)
{
    const struct xg_publish_conf *pc = uc->publish;
    char key[sizeof(es->key)], prefix[400];

    es->uc = uc;
    snprintf(key, sizeof(key), "%s:%s:req", pc->prefix, es->d->name);
    if (strcmp(key, es->key) != 0) {
        /* another stream: from its end, as at the start */
        snprintf(es->key, sizeof(es->key), "%s", key);
        es->last_id[0] = '\0';
        if (es->conn != NULL) {
            xg_rconn_stop(es->conn);
            es->ac = NULL;
            es->reading = 0;
            xg_timer_del(es->ev_read);
            xg_rconn_start(es->conn);
        }
    }
    if (es->conn == NULL) {
        snprintf(prefix, sizeof(prefix), "requests %s <- redis %s%s%s:%u",
            es->d->name, strchr(pc->addr.host, ':') != NULL ? "[" : "",
            pc->addr.host, strchr(pc->addr.host, ':') != NULL ? "]" : "",
            (unsigned) pc->addr.port);
        es->conn = xg_rconn_new(es->d->base, prefix, &pc->addr,
            pc->password, uc, &de_conn_cbs, es);
        xg_rconn_set_tls(es->conn, pc->tls, uc->tls_ca, uc->tls_verify);
        xg_rconn_start(es->conn);
        return;
    }
    xg_rconn_reconf(es->conn, uc);
    xg_rconn_set_tls(es->conn, pc->tls, uc->tls_ca, uc->tls_verify);
    if (xg_rconn_state(es->conn) == XG_RCONN_OFF) {
        xg_rconn_start(es->conn);
    }
    if (!xg_rconn_same(es->conn, &pc->addr, pc->password)) {
        es->last_id[0] = '\0';      /* another Redis: from its end */
        xg_rconn_retarget(es->conn, &pc->addr, pc->password);
    }
}

/* ---- life ---- */

/*
 * D (a Deribit upstream's own instance, not an account's) serves the
 * requests of edges while UC (borrowed) has `publish`. Returns the
 * server, or NULL when UC has none.
 */
struct dr_edges *
dr_edges_new(struct dr *d, const struct xg_upstream_conf *uc)
{
    struct dr_edges *es;

    if (uc->publish == NULL) {
        return NULL;
    }
    es = xg_calloc(1, sizeof(*es));
    es->d = d;
    es->ev_read = xg_timer_new(d->base, de_on_read_timeout, es);
    es->ev_wait = xg_timer_new(d->base, de_on_wait, es);
    de_target(es, uc);
    return es;
}

/*
 * A reload: ES follows UC (borrowed). Without `publish` it stops reading
 * (the edges' clients stay until idle); a new address, password or
 * prefix reads the new stream from its end.
 */
void
dr_edges_reconf(struct dr_edges *es, const struct xg_upstream_conf *uc)
{
    struct dr_edge *e;

    es->uc = uc;
    for (e = es->edges; e != NULL; e = e->next) {
        xg_client_sink_conf(e->c, xg_gateway_conf_get(uc->main));
    }
    if (uc->publish == NULL) {
        if (es->conn != NULL) {
            xg_rconn_stop(es->conn);
        }
        es->ac = NULL;
        es->reading = 0;
        xg_timer_del(es->ev_read);
        return;
    }
    de_target(es, uc);
}

/* Frees ES and its edges' clients (their requests in flight are
   forgotten, as a local bot's that leaves). NULL is fine. */
void
dr_edges_free(struct dr_edges *es)
{
    if (es == NULL) {
        return;
    }
    /* first: the replies still pending come back NULL, to ES */
    xg_rconn_free(es->conn);
    while (es->edges != NULL) {
        de_edge_free(es->edges, "upstream destroyed");
    }
    xg_timer_free(es->ev_read);
    xg_timer_free(es->ev_wait);
    while (es->held != NULL) {
        struct de_ans *a = es->held;

        es->held = a->next;
        free(a->data);
        free(a);
    }
    free(es);
}

/* Adds "requests" to OBJ's "publish" object (xg_redis_status()). */
void
dr_edges_status(const struct dr_edges *es, json_t *obj)
{
    json_t *pub = json_object_get(obj, "publish"), *o;
    const struct dr_edge *e;
    unsigned inflight = 0;

    if (es == NULL || pub == NULL || es->uc->publish == NULL) {
        return;
    }
    for (e = es->edges; e != NULL; e = e->next) {
        inflight += e->inflight;
    }
    o = json_object();
    json_object_set_new(o, "served", json_integer((json_int_t) es->served));
    json_object_set_new(o, "refused", json_integer((json_int_t)
        es->refused));
    json_object_set_new(o, "malformed", json_integer((json_int_t)
        es->malformed));
    json_object_set_new(o, "stale", json_integer((json_int_t) es->stale));
    json_object_set_new(o, "in_flight", json_integer((json_int_t) inflight));
    json_object_set_new(o, "edges", json_integer((json_int_t) es->nedges));
    json_object_set_new(o, "answers", json_integer((json_int_t)
        es->answers));
    json_object_set_new(o, "answers_lost", json_integer((json_int_t)
        es->answers_lost));
    json_object_set_new(o, "notices_dropped", json_integer((json_int_t)
        es->notices_dropped));
    json_object_set_new(o, "waits", json_integer((json_int_t) es->waits));
    json_object_set_new(o, "answers_held", json_integer((json_int_t)
        es->nheld));
    json_object_set_new(o, "state", json_string(
        xg_rconn_state_name(es->conn)));
    json_object_set_new(o, "reading", json_boolean(es->ac != NULL
        && es->last_id[0] != '\0' && xg_redis_writable(
            xg_upstream_publisher(es->d->up))));
    json_object_set_new(o, "last_id", es->last_id[0] != '\0'
        ? json_string(es->last_id) : json_null());
    json_object_set_new(o, "connects", json_integer((json_int_t)
        xg_rconn_connects(es->conn)));
    json_object_set_new(o, "errors", json_integer((json_int_t) (es->errors
        + xg_rconn_auth_errors(es->conn))));
    json_object_set_new(o, "last_error", es->last_error[0] != '\0'
        ? json_string(es->last_error) : json_null());
    json_object_set_new(pub, "requests", o);
}
