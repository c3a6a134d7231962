/*
 * xg_admin.c: the admin listener over libevent's evhttp: GET /status as
 * JSON, /metrics for Prometheus, / the status page, POST
 * /upstreams/NAME/rotate. See xg_admin.h.
 */
#include "xg_core.h"
#include "xg_admin.h"
#include "xg_conf.h"
#include "xg_log.h"
#include "xg_metrics.h"
#include "xg_upstream.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <netinet/in.h>

#include <event2/buffer.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>

/* Bounds for a request to a status endpoint: it has no body to speak of. */
#define XG_ADMIN_MAX_HEADERS   8192
#define XG_ADMIN_MAX_BODY      1024
#define XG_ADMIN_TIMEOUT_S     10
#define XG_ADMIN_MAX_HOOKS     16

struct xg_admin {
    struct evhttp               *http;
    struct evhttp_bound_socket  *sock;
    unsigned                     port;
    char                         name[300];   /* "127.0.0.1:8610" */
    const struct xg_upstream_set *ups;
    struct {
        xg_admin_status_cb  cb;
        void               *arg;
    }                            hooks[XG_ADMIN_MAX_HOOKS];
    int                          nhooks;
    const struct xg_admin_origin *origins;    /* borrowed from the conf */
    int                          norigins;
};

/*
 * The start time for uptime_s: the first admin start or status call. The
 * process's, not an admin endpoint's: set once, it stays when a reload
 * replaces the endpoint.
 */
static uint64_t started_ms;

/* See xg_admin.h. */
int
xg_admin_status_hook(struct xg_admin *a, xg_admin_status_cb cb, void *arg)
{
    if (a->nhooks >= XG_ADMIN_MAX_HOOKS) {
        xg_log_error("admin: too many status hooks (%d)", XG_ADMIN_MAX_HOOKS);
        return XG_ERROR;
    }
    a->hooks[a->nhooks].cb = cb;
    a->hooks[a->nhooks].arg = arg;
    a->nhooks++;
    return XG_OK;
}

/* See xg_admin.h. */
void
xg_admin_status_unhook(struct xg_admin *a, xg_admin_status_cb cb, void *arg)
{
    int i;

    for (i = 0; i < a->nhooks; i++) {
        if (a->hooks[i].cb == cb && a->hooks[i].arg == arg) {
            memmove(&a->hooks[i], &a->hooks[i + 1],
                (size_t) (a->nhooks - i - 1) * sizeof(a->hooks[0]));
            a->nhooks--;
            return;
        }
    }
}

/* See xg_admin.h. */
json_t *
xg_admin_status(const struct xg_admin *a)
{
    json_t *root = json_object();
    int i;

    if (started_ms == 0) {
        started_ms = xg_now_ms();
    }
    json_object_set_new(root, "version", json_string(XG_VERSION));
    json_object_set_new(root, "uptime_s",
        json_real((double) (xg_now_ms() - started_ms) / 1000.0));
    json_object_set_new(root, "upstreams", xg_upstream_status_all(a->ups));
    for (i = 0; i < a->nhooks; i++) {
        a->hooks[i].cb(root, a->hooks[i].arg);
    }
    return root;
}

static const char *
admin_method_name(enum evhttp_cmd_type cmd)
{
    switch (cmd) {
    case EVHTTP_REQ_GET:
        return "GET";
    case EVHTTP_REQ_POST:
        return "POST";
    case EVHTTP_REQ_HEAD:
        return "HEAD";
    case EVHTTP_REQ_PUT:
        return "PUT";
    case EVHTTP_REQ_DELETE:
        return "DELETE";
    case EVHTTP_REQ_OPTIONS:
        return "OPTIONS";
    case EVHTTP_REQ_TRACE:
        return "TRACE";
    case EVHTTP_REQ_CONNECT:
        return "CONNECT";
    case EVHTTP_REQ_PATCH:
        return "PATCH";
    }
    return "?";
}

/* The peer of REQ as "HOST:PORT" ("[V6]:PORT") in BUF. */
static const char *
admin_peer(struct evhttp_request *req, char *buf, size_t len)
{
    struct evhttp_connection *conn = evhttp_request_get_connection(req);
    char *host = NULL;
    ev_uint16_t port = 0;

    if (conn != NULL) {
        evhttp_connection_get_peer(conn, &host, &port);
    }
    if (host == NULL) {
        snprintf(buf, len, "unknown peer");
    } else if (strchr(host, ':') != NULL) {
        snprintf(buf, len, "[%s]:%u", host, port);
    } else {
        snprintf(buf, len, "%s:%u", host, port);
    }
    return buf;
}

/*
 * A request that may change state (any method but GET and HEAD) is
 * logged with its peer, its Origin and the answer, whatever the answer.
 */
static void
admin_log_change(struct evhttp_request *req, int code, const char *body,
    size_t len)
{
    enum evhttp_cmd_type cmd = evhttp_request_get_command(req);
    const char *origin, *uri = evhttp_request_get_uri(req);
    char peer[300];

    if (cmd == EVHTTP_REQ_GET || cmd == EVHTTP_REQ_HEAD) {
        return;
    }
    while (len > 0 && (body[len - 1] == '\n' || body[len - 1] == '\r')) {
        len--;
    }
    origin = evhttp_find_header(evhttp_request_get_input_headers(req),
        "Origin");
    xg_log((code >= 200 && code < 300) ? XG_LOG_INFO : XG_LOG_WARN,
        "admin: %s %.200s from %s (origin %.200s): %d %.*s",
        admin_method_name(cmd), uri != NULL ? uri : "?",
        admin_peer(req, peer, sizeof(peer)),
        origin != NULL ? origin : "none", code,
        (int) (len < 300 ? len : 300), body);
}

static void
admin_reply(struct evhttp_request *req, int code, const char *reason,
    const char *type, const char *body, size_t len)
{
    struct evbuffer *out = evbuffer_new();
    struct evkeyvalq *h = evhttp_request_get_output_headers(req);

    admin_log_change(req, code, body, len);
    if (out == NULL) {
        evhttp_send_error(req, HTTP_INTERNAL, NULL);
        return;
    }
    evhttp_add_header(h, "Content-Type", type);
    evhttp_add_header(h, "Cache-Control", "no-store");
    if (evhttp_request_get_command(req) != EVHTTP_REQ_HEAD) {
        evbuffer_add(out, body, len);
    }
    evhttp_send_reply(req, code, reason, out);
    evbuffer_free(out);
}

static int
admin_method_ok(struct evhttp_request *req)
{
    enum evhttp_cmd_type cmd = evhttp_request_get_command(req);

    if (cmd == EVHTTP_REQ_GET || cmd == EVHTTP_REQ_HEAD) {
        return 1;
    }
    evhttp_add_header(evhttp_request_get_output_headers(req), "Allow",
        "GET, HEAD");
    admin_reply(req, 405, "Method Not Allowed", "text/plain",
        "method not allowed\n", 19);
    return 0;
}

static void
admin_on_status(struct evhttp_request *req, void *arg)
{
    struct xg_admin *a = arg;
    json_t *root;
    char *s;

    if (!admin_method_ok(req)) {
        return;
    }
    root = xg_admin_status(a);
    s = json_dumps(root, JSON_COMPACT | JSON_REAL_PRECISION(6));
    json_decref(root);
    if (s == NULL) {
        xg_log_error("admin: cannot encode /status");
        admin_reply(req, 500, "Internal Server Error", "text/plain",
            "internal error\n", 15);
        return;
    }
    admin_reply(req, 200, "OK", "application/json", s, strlen(s));
    free(s);
}

static void
admin_on_metrics(struct evhttp_request *req, void *arg)
{
    struct xg_admin *a = arg;
    struct evbuffer *out;
    json_t *root, *proc;

    if (!admin_method_ok(req)) {
        return;
    }
    out = evbuffer_new();
    if (out == NULL) {
        evhttp_send_error(req, HTTP_INTERNAL, NULL);
        return;
    }
    root = xg_admin_status(a);
    proc = xg_metrics_process();
    xg_metrics_render(out, root, proc);
    json_decref(root);
    json_decref(proc);
    admin_reply(req, 200, "OK", XG_METRICS_CONTENT_TYPE,
        (const char *) evbuffer_pullup(out, -1), evbuffer_get_length(out));
    evbuffer_free(out);
}

/* The page: only what it carries may run, and it may only ask /status. */
static void
admin_on_page(struct evhttp_request *req, void *arg)
{
    struct evkeyvalq *h = evhttp_request_get_output_headers(req);

    if (!admin_method_ok(req)) {
        return;
    }
    evhttp_add_header(h, "Content-Security-Policy", "default-src 'none'; "
        "script-src 'unsafe-inline'; style-src 'unsafe-inline'; "
        "connect-src 'self'; img-src data:; frame-ancestors 'none'");
    evhttp_add_header(h, "X-Content-Type-Options", "nosniff");
    admin_reply(req, 200, "OK", "text/html; charset=utf-8",
        (const char *) xg_status_html, xg_status_html_len);
}

/* Answers REQ with CODE and the JSON object O (stolen). */
static void
admin_reply_json(struct evhttp_request *req, int code, const char *reason,
    json_t *o)
{
    char *s = json_dumps(o, JSON_COMPACT);

    json_decref(o);
    if (s == NULL) {
        admin_reply(req, 500, "Internal Server Error", "text/plain",
            "internal error\n", 15);
        return;
    }
    admin_reply(req, code, reason, "application/json", s, strlen(s));
    free(s);
}

/*
 * The check every request that changes state passes first, against a
 * web page in a local browser sending it cross-site (the endpoint is on
 * loopback, where such a page can reach it): no Origin header (curl, a
 * script), or exactly one that `admin_origin` lists. Answers 403 and
 * returns 0 otherwise.
 */
static int
admin_origin_ok(struct xg_admin *a, struct evhttp_request *req)
{
    struct evkeyvalq *h = evhttp_request_get_input_headers(req);
    const struct evkeyval *kv;
    const char *origin = NULL;
    char why[400];
    int i, n = 0;

    for (kv = h->tqh_first; kv != NULL; kv = kv->next.tqe_next) {
        if (strcasecmp(kv->key, "Origin") == 0) {
            origin = kv->value;
            n++;
        }
    }
    if (n == 0) {
        return 1;
    }
    if (n == 1) {
        for (i = 0; i < a->norigins; i++) {
            if (strcmp(origin, a->origins[i].origin) == 0) {
                return 1;
            }
        }
        snprintf(why, sizeof(why), "origin \"%.300s\" is not allowed "
            "(admin_origin)", origin);
    } else {
        snprintf(why, sizeof(why), "%d Origin headers", n);
    }
    admin_reply_json(req, 403, "Forbidden", json_pack("{s:s}", "error", why));
    return 0;
}

/*
 * /upstreams/NAME/rotate (REST is what follows "/upstreams/"): POST
 * starts a make-before-break rotation of NAME's connection (202 and
 * {upstream, rotation, from, to}; 409 and {upstream, error} when it
 * cannot start); 404 for an unknown name or path, 405 for another method.
 */
static void
admin_on_upstream(struct xg_admin *a, struct evhttp_request *req,
    const char *rest)
{
    const char *slash = strchr(rest, '/');
    struct xg_upstream *up = NULL;
    struct xg_rotation r;
    char name[256], err[200], why[340], peer[300];

    if (slash != NULL && strcmp(slash, "/rotate") == 0
        && (size_t) (slash - rest) < sizeof(name))
    {
        memcpy(name, rest, (size_t) (slash - rest));
        name[slash - rest] = '\0';
        up = xg_upstream_find(a->ups, name);
    }
    if (up == NULL) {
        admin_reply_json(req, 404, "Not Found", json_pack("{s:s}", "error",
            slash != NULL && strcmp(slash, "/rotate") == 0
            ? "no such upstream" : "not found"));
        return;
    }
    if (evhttp_request_get_command(req) != EVHTTP_REQ_POST) {
        evhttp_add_header(evhttp_request_get_output_headers(req), "Allow",
            "POST");
        admin_reply_json(req, 405, "Method Not Allowed", json_pack("{s:s}",
            "error", "method not allowed: POST only"));
        return;
    }
    if (!admin_origin_ok(a, req)) {
        return;
    }
    snprintf(why, sizeof(why), "admin request from %s",
        admin_peer(req, peer, sizeof(peer)));
    if (xg_upstream_rotate_start(up, why, &r, err, sizeof(err)) != XG_OK) {
        admin_reply_json(req, 409, "Conflict", json_pack("{s:s, s:s}",
            "upstream", name, "error", err));
        return;
    }
    admin_reply_json(req, 202, "Accepted", json_pack("{s:s, s:I, s:I, s:I}",
        "upstream", name, "rotation", (json_int_t) r.n,
        "from", (json_int_t) r.from, "to", (json_int_t) r.to));
}

static void
admin_on_other(struct evhttp_request *req, void *arg)
{
    struct xg_admin *a = arg;
    const struct evhttp_uri *u = evhttp_request_get_evhttp_uri(req);
    const char *path = u != NULL ? evhttp_uri_get_path(u) : NULL;

    if (path != NULL && strncmp(path, "/upstreams/", 11) == 0) {
        admin_on_upstream(a, req, path + 11);
        return;
    }
    if (!admin_method_ok(req)) {
        return;
    }
    admin_reply(req, 404, "Not Found", "text/plain", "not found\n", 10);
}

/* See xg_admin.h. */
struct xg_admin *
xg_admin_start(struct event_base *base, const struct xg_addr *addr,
    const struct xg_upstream_set *ups)
{
    struct xg_admin *a = xg_calloc(1, sizeof(*a));
    struct sockaddr_storage ss;
    socklen_t sl = sizeof(ss);
    evutil_socket_t fd;
    int v6 = strchr(addr->host, ':') != NULL;

    if (started_ms == 0) {
        started_ms = xg_now_ms();
    }
    a->ups = ups;
    a->http = evhttp_new(base);
    if (a->http == NULL) {
        xg_log_error("admin: cannot create the http server");
        free(a);
        return NULL;
    }
    evhttp_set_max_headers_size(a->http, XG_ADMIN_MAX_HEADERS);
    evhttp_set_max_body_size(a->http, XG_ADMIN_MAX_BODY);
    evhttp_set_timeout(a->http, XG_ADMIN_TIMEOUT_S);
    evhttp_set_cb(a->http, "/status", admin_on_status, a);
    evhttp_set_cb(a->http, "/metrics", admin_on_metrics, a);
    evhttp_set_cb(a->http, "/", admin_on_page, a);
    evhttp_set_gencb(a->http, admin_on_other, a);

    a->sock = evhttp_bind_socket_with_handle(a->http, addr->host, addr->port);
    if (a->sock == NULL) {
        xg_log_error("admin: cannot listen on %s%s%s:%u: %s", v6 ? "[" : "",
            addr->host, v6 ? "]" : "", addr->port, strerror(errno));
        evhttp_free(a->http);
        free(a);
        return NULL;
    }
    a->port = addr->port;
    fd = evhttp_bound_socket_get_fd(a->sock);
    if (getsockname(fd, (struct sockaddr *) &ss, &sl) == 0) {
        if (ss.ss_family == AF_INET) {
            a->port = ntohs(((struct sockaddr_in *) &ss)->sin_port);
        } else if (ss.ss_family == AF_INET6) {
            a->port = ntohs(((struct sockaddr_in6 *) &ss)->sin6_port);
        }
    }
    snprintf(a->name, sizeof(a->name), "%s%s%s:%u", v6 ? "[" : "",
        addr->host, v6 ? "]" : "", a->port);
    xg_log_info("admin: listening on http://%s/ (page), /status, /metrics, "
        "POST /upstreams/NAME/rotate", a->name);
    return a;
}

/* See xg_admin.h. */
void
xg_admin_allow_origins(struct xg_admin *a,
    const struct xg_admin_origin *origins, int n)
{
    a->origins = origins;
    a->norigins = n;
}

/* See xg_admin.h. */
unsigned
xg_admin_port(const struct xg_admin *a)
{
    return a->port;
}

/* See xg_admin.h. */
void
xg_admin_free(struct xg_admin *a)
{
    if (a == NULL) {
        return;
    }
    evhttp_free(a->http);
    free(a);
}
