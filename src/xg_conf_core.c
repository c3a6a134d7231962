/*
 * xg_conf_core.c: the core module's directives (error_log, upstream,
 * listen, admin, allow_remote, and the transport settings inside an
 * upstream), and the checks that need the whole file (a listener's
 * upstream exists and serves clients, remote addresses are opted in, the
 * error log can be opened). Every refusal start-up can meet before it
 * binds a socket is made here, so that `exgate -t` (and SIGHUP) refuses
 * the same confs with the same words.
 */
#include "xg_core.h"
#include "xg_conf.h"
#include "xg_listen.h"
#include "xg_log.h"
#include "xg_venue.h"

#include <ctype.h>
#include <stdlib.h>
#include <string.h>

#define XG_LISTEN_SNDBUF_MIN    4096
#define XG_LISTEN_SNDBUF_MAX    (64 * 1024 * 1024)
#define XG_DEFAULT_MAX_CLIENTS  1024

static const struct xg_conf_bounds bounds_message = { 1024, 1024ULL * 1024 * 1024 };
static const struct xg_conf_bounds bounds_timeout = { 1, 24ULL * 3600 * 1000 };
static const struct xg_conf_bounds bounds_ping = { 0, 3600 * 1000 };
/* max_connection_age: 1m..7d (0, the default, is off) */
static const struct xg_conf_bounds bounds_age = { 60 * 1000,
    7ULL * 24 * 3600 * 1000 };
static const struct xg_conf_bounds bounds_queue = { 0, 1000000 };
/* queue_timeout: 0 (no deadline)..1h */
static const struct xg_conf_bounds bounds_queue_ms = { 0, 3600 * 1000 };
/* rest_cache: 0 (off)..1d */
static const struct xg_conf_bounds bounds_rest_cache = { 0,
    24ULL * 3600 * 1000 };

/* ---- main context --------------------------------------------------------- */

static int
set_error_log(struct xg_conf *cf, const struct xg_conf_stmt *st,
    const struct xg_command *cmd, void *conf)
{
    struct xg_main_conf *mc = conf;
    int level = XG_LOG_INFO, format = XG_LOG_TEXT;

    if (st->nargs == 4) {
        format = xg_log_format_parse(st->args[3]);
        if (format < 0) {
            return xg_conf_error(cf, st, "\"error_log\": unknown format "
                "\"%s\" (text, json)", st->args[3]);
        }
    }
    if (st->nargs >= 3) {
        level = xg_log_level_parse(st->args[2]);
        if (level < 0) {
            return xg_conf_error(cf, st, "\"error_log\": unknown level \"%s\" "
                "(error, warn, info, debug)", st->args[2]);
        }
    }
    if (st->args[1][0] == '\0') {
        return xg_conf_error(cf, st, "\"error_log\": empty path");
    }
    free(mc->error_log);
    mc->error_log = xg_strdup(st->args[1]);
    mc->error_log_level = level;
    mc->error_log_format = format;
    mc->error_log_file = st->file;
    mc->error_log_line = st->line;
    return XG_OK;
}

/*
 * `pid PATH;`: relative to the file that says it, as a `file:` secret,
 * and kept absolute, for `exgate -s` run from another directory.
 */
static int
set_pid(struct xg_conf *cf, const struct xg_conf_stmt *st,
    const struct xg_command *cmd, void *conf)
{
    struct xg_main_conf *mc = conf;
    size_t n = strlen(st->args[1]) + 6;
    char *spec, *src;

    if (st->args[1][0] == '\0') {
        return xg_conf_error(cf, st, "\"pid\": empty path");
    }
    spec = xg_malloc(n);
    snprintf(spec, n, "file:%s", st->args[1]);
    src = xg_conf_secret_source(st, spec);
    free(mc->pid);
    mc->pid = xg_strdup(src + 5);
    free(src);
    free(spec);
    return XG_OK;
}

static int
set_admin(struct xg_conf *cf, const struct xg_conf_stmt *st,
    const struct xg_command *cmd, void *conf)
{
    struct xg_main_conf *mc = conf;

    if (xg_conf_parse_addr(st->args[1], &mc->admin) != XG_OK) {
        return xg_conf_error(cf, st, "\"admin\": bad address \"%s\" "
            "(HOST:PORT or [V6]:PORT)", st->args[1]);
    }
    mc->admin_set = 1;
    mc->admin_file = st->file;
    mc->admin_line = st->line;
    return XG_OK;
}

/*
 * Whether S is an origin as a browser sends it: scheme://host[:port],
 * the scheme a letter then letters, digits, '+', '-', '.'; the host a
 * name or [v6]; no path, query, user or trailing '/'.
 */
static int
valid_origin(const char *s)
{
    const char *p = s, *h;
    unsigned long port;
    char *end;

    if (!isalpha((unsigned char) *p)) {
        return 0;
    }
    while (isalnum((unsigned char) *p) || *p == '+' || *p == '-'
        || *p == '.')
    {
        p++;
    }
    if (strncmp(p, "://", 3) != 0) {
        return 0;
    }
    h = p += 3;
    if (*p == '[') {
        p++;
        while (isxdigit((unsigned char) *p) || *p == ':' || *p == '.') {
            p++;
        }
        if (*p != ']' || p == h + 1) {
            return 0;
        }
        p++;
    } else {
        while (isalnum((unsigned char) *p) || *p == '-' || *p == '.'
            || *p == '_' || *p == '~')
        {
            p++;
        }
        if (p == h) {
            return 0;
        }
    }
    if (*p == ':') {
        if (!isdigit((unsigned char) p[1])) {
            return 0;
        }
        port = strtoul(p + 1, &end, 10);
        if (port == 0 || port > 65535) {
            return 0;
        }
        p = end;
    }
    return *p == '\0';
}

static void
admin_origins_free(void *p)
{
    struct xg_main_conf *mc = p;
    int i;

    for (i = 0; i < mc->nadmin_origins; i++) {
        free(mc->admin_origins[i].origin);
    }
    free(mc->admin_origins);
    mc->admin_origins = NULL;
    mc->nadmin_origins = 0;
}

static int
set_admin_origin(struct xg_conf *cf, const struct xg_conf_stmt *st,
    const struct xg_command *cmd, void *conf)
{
    struct xg_main_conf *mc = conf;
    struct xg_admin_origin *o;
    int i;

    if (!valid_origin(st->args[1])) {
        return xg_conf_error(cf, st, "\"admin_origin\": \"%s\" is not an "
            "origin (scheme://host[:port], no path)", st->args[1]);
    }
    for (i = 0; i < mc->nadmin_origins; i++) {
        o = &mc->admin_origins[i];
        if (strcmp(o->origin, st->args[1]) == 0) {
            return xg_conf_error(cf, st, "\"admin_origin\": duplicate \"%s\" "
                "(first at %s:%d)", st->args[1], o->file, o->line);
        }
    }
    if (mc->nadmin_origins == 0) {
        xg_conf_cleanup_add(cf, admin_origins_free, mc);
    }
    mc->admin_origins = xg_realloc(mc->admin_origins,
        (size_t) (mc->nadmin_origins + 1) * sizeof(*mc->admin_origins));
    o = &mc->admin_origins[mc->nadmin_origins++];
    o->origin = xg_strdup(st->args[1]);
    o->file = st->file;
    o->line = st->line;
    return XG_OK;
}

static void
listen_free(void *p)
{
    struct xg_listen_conf *lc = p;

    free(lc->upstream_name);
    free(lc->path);
    free(lc);
}

static int
set_listen(struct xg_conf *cf, const struct xg_conf_stmt *st,
    const struct xg_command *cmd, void *conf)
{
    struct xg_main_conf *mc = conf;
    struct xg_listen_conf *lc, **tail;
    int i, gk, bad = 0, max_clients_set = 0;

    lc = xg_calloc(1, sizeof(*lc));
    xg_conf_cleanup_add(cf, listen_free, lc);
    lc->file = st->file;
    lc->line = st->line;
    lc->max_clients = XG_DEFAULT_MAX_CLIENTS;
    if (xg_conf_parse_addr(st->args[1], &lc->addr) != XG_OK) {
        xg_conf_error(cf, st, "\"listen\": bad address \"%s\" "
            "(HOST:PORT or [V6]:PORT)", st->args[1]);
        bad = 1;
    }
    if (strcmp(st->args[2], "websocket") == 0) {
        lc->kind = XG_LISTEN_WEBSOCKET;
    } else if (strcmp(st->args[2], "tcp") == 0) {
        lc->kind = XG_LISTEN_TCP;
    } else if (strcmp(st->args[2], "http") == 0) {
        lc->kind = XG_LISTEN_HTTP;
    } else {
        xg_conf_error(cf, st, "\"listen\": kind must be \"websocket\", "
            "\"tcp\" or \"http\", not \"%s\"", st->args[2]);
        bad = 1;
    }
    for (i = 3; i < st->nargs; i++) {
        const char *a = st->args[i];
        const char *eq = strchr(a, '=');
        uint64_t v;

        if (eq == NULL || eq == a) {
            xg_conf_error(cf, st, "\"listen\": expected key=value, got "
                "\"%s\"", a);
            bad = 1;
            continue;
        }
        if (strncmp(a, "upstream=", 9) == 0) {
            if (lc->upstream_name != NULL) {
                xg_conf_error(cf, st, "\"listen\": duplicate \"upstream=\"");
                bad = 1;
                continue;
            }
            if (a[9] == '\0') {
                xg_conf_error(cf, st, "\"listen\": empty \"upstream=\"");
                bad = 1;
                continue;
            }
            lc->upstream_name = xg_strdup(a + 9);
        } else if (strncmp(a, "path=", 5) == 0) {
            if (lc->path != NULL) {
                xg_conf_error(cf, st, "\"listen\": duplicate \"path=\"");
                bad = 1;
                continue;
            }
            if (a[5] != '/') {
                xg_conf_error(cf, st, "\"listen\": path must start with "
                    "\"/\": \"%s\"", a + 5);
                bad = 1;
                continue;
            }
            if (strchr(a + 5, '*') != NULL
                && strchr(a + 5, '*') != a + strlen(a) - 1)
            {
                xg_conf_error(cf, st, "\"listen\": \"*\" may only end the "
                    "path: \"%s\"", a + 5);
                bad = 1;
                continue;
            }
            lc->path = xg_strdup(a + 5);
        } else if (strncmp(a, "max_clients=", 12) == 0) {
            if (xg_conf_parse_uint(a + 12, &v) != XG_OK || v == 0
                || v > 1000000)
            {
                xg_conf_error(cf, st, "\"listen\": max_clients must be "
                    "1..1000000, not \"%s\"", a + 12);
                bad = 1;
                continue;
            }
            lc->max_clients = (unsigned) v;
            max_clients_set = 1;
        } else if (strncmp(a, "sndbuf=", 7) == 0) {
            if (lc->sndbuf != 0) {
                xg_conf_error(cf, st, "\"listen\": duplicate \"sndbuf=\"");
                bad = 1;
                continue;
            }
            if (xg_conf_parse_size(a + 7, &v) != XG_OK
                || v < XG_LISTEN_SNDBUF_MIN || v > XG_LISTEN_SNDBUF_MAX)
            {
                xg_conf_error(cf, st, "\"listen\": sndbuf must be a size "
                    "from 4k to 64m, not \"%s\"", a + 7);
                bad = 1;
                continue;
            }
            lc->sndbuf = (size_t) v;
        } else if ((gk = xg_listen_conf_key(cf, st, lc, a)) != XG_AGAIN) {
            /* the gateway's keys (src/xg_listen.c) */
            bad |= gk != XG_OK;
        } else {
            xg_conf_error(cf, st, "\"listen\": unknown parameter \"%.*s\" "
                "(upstream, path, max_clients, sndbuf, client_credentials, "
                "client_auth)", (int) (eq - a), a);
            bad = 1;
        }
    }
    if (lc->upstream_name == NULL && !bad) {
        xg_conf_error(cf, st, "\"listen\": missing \"upstream=NAME\"");
        bad = 1;
    }
    if (lc->kind == XG_LISTEN_HTTP && (max_clients_set || lc->sndbuf != 0
        || lc->gateway_conf != NULL))
    {
        /* the REST front has no clients of the venue to bound or admit */
        xg_conf_error(cf, st, "\"listen\": http listeners take only "
            "\"upstream=\"");
        bad = 1;
    }
    if (lc->path != NULL && lc->kind != XG_LISTEN_WEBSOCKET) {
        xg_conf_error(cf, st, "\"listen\": \"path=\" is for websocket "
            "listeners only");
        bad = 1;
    }
    if (bad) {
        return XG_ERROR;
    }
    for (tail = &mc->listens; *tail != NULL; tail = &(*tail)->next) {
        /* keep conf order */
    }
    *tail = lc;
    return XG_OK;
}

static void
upstream_free(void *p)
{
    struct xg_upstream_conf *uc = p;
    int i;

    free(uc->name);
    free(uc->protocol);
    free(uc->tls_ca);
    for (i = 0; i < uc->nheaders; i++) {
        free(uc->headers[i].name);
        free(uc->headers[i].value);
    }
    free(uc->headers);
    free(uc);
}

/* See xg_conf.h. */
int
xg_conf_name_ok(const char *s)
{
    if (*s == '\0') {
        return 0;
    }
    for (; *s; s++) {
        if (!(isalnum((unsigned char) *s) || *s == '_' || *s == '-'
            || *s == '.'))
        {
            return 0;
        }
    }
    return 1;
}

/* The command called NAME in TABLE for the upstream context, or NULL. */
static const struct xg_command *
upstream_command(const struct xg_command *table, const char *name)
{
    const struct xg_command *c;

    for (c = table; c != NULL && c->name != NULL; c++) {
        if ((c->type & XG_CONF_UPSTREAM) && strcmp(c->name, name) == 0) {
            return c;
        }
    }
    return NULL;
}

/* Whether NAME is an upstream directive of a module in xg_modules[]. */
static int
upstream_generic(const char *name)
{
    const struct xg_command *const *t;

    for (t = xg_conf_tables(); *t != NULL; t++) {
        if (upstream_command(*t, name) != NULL) {
            return 1;
        }
    }
    return 0;
}

/* Whether NAME is an upstream directive of some protocol module. */
static int
upstream_proto(const char *name)
{
    const struct xg_venue *const *p;

    for (p = xg_venues; *p != NULL; p++) {
        if (upstream_command((*p)->commands, name) != NULL) {
            return 1;
        }
    }
    return 0;
}

/*
 * Reports ST, a directive of another protocol than UC's on upstream UC,
 * naming the protocols it belongs to.
 */
static void
proto_mismatch(struct xg_conf *cf, const struct xg_conf_stmt *st,
    const struct xg_upstream_conf *uc)
{
    const struct xg_venue *const *p;
    char owners[256] = "";
    int n = 0;

    for (p = xg_venues; *p != NULL; p++) {
        if (upstream_command((*p)->commands, st->args[0]) != NULL) {
            if (n++ > 0) {
                strncat(owners, ", ", sizeof(owners) - strlen(owners) - 1);
            }
            strncat(owners, (*p)->name, sizeof(owners) - strlen(owners) - 1);
        }
    }
    xg_conf_error(cf, st, "\"%s\" is a directive of protocol%s %s; upstream "
        "\"%s\" uses %s", st->args[0], n > 1 ? "s" : "", owners, uc->name,
        uc->protocol);
}

/*
 * Dispatches the block of `upstream` (ST) into UC. The core's and the
 * other modules' directives go first, in conf order; a protocol's
 * directives wait for the end of the block, where `protocol` is known
 * wherever it stood: the upstream's protocol module makes its conf
 * (create_conf) and gets its own directives with it; another protocol's
 * directive is an error at its own file and line. Unknown directives are
 * reported last, with a "did you mean" among the names valid here.
 */
static void
upstream_block(struct xg_conf *cf, const struct xg_conf_stmt *st,
    struct xg_upstream_conf *uc)
{
    const struct xg_venue *pm = NULL;
    const struct xg_command *hints[64];
    const struct xg_command *const *t;
    struct xg_conf_stmt *generic, *proto, *mine, *unknown;
    int ngeneric = 0, nproto = 0, nmine = 0, nunknown = 0;
    int i, has_protocol = 0;
    size_t n = 0;

    /* shallow copies: the statements stay owned by the conf's tree */
    generic = xg_calloc((size_t) st->nblock + 1, sizeof(*generic));
    proto = xg_calloc((size_t) st->nblock + 1, sizeof(*proto));
    mine = xg_calloc((size_t) st->nblock + 1, sizeof(*mine));
    unknown = xg_calloc((size_t) st->nblock + 1, sizeof(*unknown));
    for (i = 0; i < st->nblock; i++) {
        const char *name = st->block[i].args[0];

        if (upstream_generic(name)) {
            generic[ngeneric++] = st->block[i];
            has_protocol |= strcmp(name, "protocol") == 0;
        } else if (upstream_proto(name)) {
            proto[nproto++] = st->block[i];
        } else {
            unknown[nunknown++] = st->block[i];
        }
    }
    xg_conf_dispatch(cf, generic, ngeneric, XG_CONF_UPSTREAM,
        xg_conf_tables(), uc);

    if (uc->protocol == NULL && !has_protocol) {
        uc->protocol = xg_strdup("raw");
    }
    if (uc->protocol != NULL) {
        pm = xg_venue_find(uc->protocol);
        for (i = 0; i < nproto; i++) {
            if (pm != NULL
                && upstream_command(pm->commands, proto[i].args[0]) != NULL)
            {
                mine[nmine++] = proto[i];
            } else {
                proto_mismatch(cf, &proto[i], uc);
            }
        }
        if (pm != NULL && uc->max_connection_age_ms == 0) {
            /* not set in the block (its bounds refuse 0) */
            uc->max_connection_age_ms = pm->max_connection_age_ms;
        }
        if (pm != NULL && pm->create_conf != NULL) {
            const struct xg_command *own[2] = { pm->commands, NULL };

            uc->proto_conf = pm->create_conf(cf);
            xg_conf_dispatch(cf, mine, nmine, XG_CONF_UPSTREAM, own,
                uc->proto_conf);
        }
    }

    /*
     * No table has these names in the upstream context, so no setter runs
     * (conf NULL): the dispatcher only words the error (unknown, or not
     * allowed here), with hints from the core's and the upstream's own
     * protocol's directives.
     */
    for (t = xg_conf_tables(); *t != NULL && n + 2 < XG_NELEM(hints); t++) {
        hints[n++] = *t;
    }
    if (pm != NULL && pm->commands != NULL) {
        hints[n++] = pm->commands;
    }
    hints[n] = NULL;
    xg_conf_dispatch(cf, unknown, nunknown, XG_CONF_UPSTREAM, hints, NULL);

    free(generic);
    free(proto);
    free(mine);
    free(unknown);
}

static int
set_upstream(struct xg_conf *cf, const struct xg_conf_stmt *st,
    const struct xg_command *cmd, void *conf)
{
    struct xg_main_conf *mc = conf;
    struct xg_upstream_conf *uc, **tail;

    if (!xg_conf_name_ok(st->args[1])) {
        return xg_conf_error(cf, st, "bad upstream name \"%s\" (letters, "
            "digits, \"_\", \"-\", \".\")", st->args[1]);
    }
    for (uc = mc->upstreams; uc != NULL; uc = uc->next) {
        if (strcmp(uc->name, st->args[1]) == 0) {
            return xg_conf_error(cf, st, "duplicate upstream \"%s\" (first "
                "at %s:%d)", st->args[1], uc->file, uc->line);
        }
    }
    uc = xg_calloc(1, sizeof(*uc));
    xg_conf_cleanup_add(cf, upstream_free, uc);
    uc->name = xg_strdup(st->args[1]);
    uc->main = mc;
    uc->file = st->file;
    uc->line = st->line;
    uc->tls_verify = 1;
    uc->max_message = 16 * 1024 * 1024;
    uc->ping_ms = 5000;
    uc->ping_timeout_ms = 15000;
    uc->idle_timeout_ms = 0;
    uc->connect_timeout_ms = 10000;
    uc->handshake_timeout_ms = 10000;
    uc->restore_timeout_ms = 30000;
    uc->close_timeout_ms = 3000;
    uc->queue_limit = 1000;
    uc->queue_timeout_ms = 30000;
    uc->rest_cache_ms = 60000;

    cf->upstream = uc;
    upstream_block(cf, st, uc);
    cf->upstream = NULL;

    if (!uc->url_set) {
        xg_conf_error(cf, st, "upstream \"%s\" has no \"url\"", uc->name);
    }
    if (uc->url_set) {
        const struct xg_venue *pm = xg_venue_find(uc->protocol != NULL
            ? uc->protocol : "raw");

        if (pm != NULL && pm->connect != NULL && !uc->url.redis) {
            xg_conf_error(cf, st, "upstream \"%s\": protocol %s reads "
                "from Redis: its \"url\" is redis[s]://HOST[:PORT]",
                uc->name, pm->name);
        } else if (pm != NULL && pm->connect == NULL && uc->url.redis) {
            xg_conf_error(cf, st, "upstream \"%s\": a redis[s]:// \"url\" "
                "needs \"protocol edge;\"", uc->name);
        }
    }
    if (uc->protocol == NULL) {
        uc->protocol = xg_strdup("raw");
    }
    if (uc->ping_ms > 0 && uc->ping_timeout_ms > 0
        && uc->ping_timeout_ms <= uc->ping_ms)
    {
        xg_conf_error(cf, st, "upstream \"%s\": \"ping_timeout\" must be "
            "longer than \"ping\"", uc->name);
    }
    for (tail = &mc->upstreams; *tail != NULL; tail = &(*tail)->next) {
        /* keep conf order */
    }
    *tail = uc;
    return XG_OK;
}

/* ---- upstream context ----------------------------------------------------- */

static int
set_url(struct xg_conf *cf, const struct xg_conf_stmt *st,
    const struct xg_command *cmd, void *conf)
{
    struct xg_upstream_conf *uc = conf;
    const char *a = st->args[1];
    char ws[600];

    if (strncmp(a, "redis://", 8) == 0 || strncmp(a, "rediss://", 9) == 0) {
        /* redis[s]://HOST[:PORT][/]: no credentials (`password`), no db;
           rediss:// is TLS, verified with tls_ca and tls_verify */
        int tls = a[5] == 's';
        const char *hp = a + (tls ? 9 : 8);

        snprintf(ws, sizeof(ws), "ws://%s", hp);
        if (strlen(a) >= sizeof(ws) - 8 || strpbrk(hp, "@?#") != NULL
            || xg_conf_parse_url(ws, &uc->url) != XG_OK
            || strcmp(uc->url.path, "/") != 0)
        {
            return xg_conf_error(cf, st, "\"url\": bad url \"%s\" "
                "(redis[s]://HOST[:PORT]; a password goes in "
                "\"password\")", strchr(a, '@') != NULL
                ? (tls ? "rediss://..." : "redis://...") : a);
        }
        if (strchr(hp + (hp[0] == '[' ? strcspn(hp, "]") : 0), ':')
            == NULL)
        {
            uc->url.port = 6379;
        }
        uc->url.redis = 1;
        uc->url.tls = tls;
        uc->url_set = 1;
        return XG_OK;
    }
    if (xg_conf_parse_url(st->args[1], &uc->url) != XG_OK) {
        /* The query may carry a credential: never echo it (SIGHUP logs). */
        return xg_conf_error(cf, st, "\"url\": bad url \"%.*s%s\" (ws://HOST"
            "[:PORT]/PATH or wss://HOST[:PORT]/PATH)",
            (int) strcspn(st->args[1], "?"), st->args[1],
            strchr(st->args[1], '?') != NULL ? "?..." : "");
    }
    uc->url_set = 1;
    return XG_OK;
}

/*
 * `rest_url http[s]://HOST[:PORT][/PATH];`: the base the REST client's
 * paths are appended to; no query, no fragment.
 */
static int
set_rest_url(struct xg_conf *cf, const struct xg_conf_stmt *st,
    const struct xg_command *cmd, void *conf)
{
    struct xg_upstream_conf *uc = conf;
    const char *a = st->args[1];
    char ws[2048];
    size_t n;

    if (strncmp(a, "http://", 7) == 0) {
        snprintf(ws, sizeof(ws), "ws://%s", a + 7);
    } else if (strncmp(a, "https://", 8) == 0) {
        snprintf(ws, sizeof(ws), "wss://%s", a + 8);
    } else {
        ws[0] = '\0';
    }
    if (ws[0] == '\0' || strlen(a) >= sizeof(ws) - 1
        || strpbrk(a, "?#") != NULL
        || xg_conf_parse_url(ws, &uc->rest_url) != XG_OK)
    {
        return xg_conf_error(cf, st, "\"rest_url\": bad url \"%.*s%s\" "
            "(http://HOST[:PORT][/PATH] or https://HOST[:PORT][/PATH], no "
            "query)", (int) strcspn(a, "?"), a,
            strchr(a, '?') != NULL ? "?..." : "");
    }
    /* "/" and "/v/" are appended to as "" and "/v" */
    n = strlen(uc->rest_url.path);
    while (n > 0 && uc->rest_url.path[n - 1] == '/') {
        uc->rest_url.path[--n] = '\0';
    }
    uc->rest_url_set = 1;
    return XG_OK;
}

static int
set_protocol(struct xg_conf *cf, const struct xg_conf_stmt *st,
    const struct xg_command *cmd, void *conf)
{
    struct xg_upstream_conf *uc = conf;
    const struct xg_venue *const *p;
    char known[256] = "";

    if (xg_venue_find(st->args[1]) == NULL) {
        for (p = xg_venues; *p != NULL; p++) {
            if (p != xg_venues) {
                strncat(known, ", ", sizeof(known) - strlen(known) - 1);
            }
            strncat(known, (*p)->name, sizeof(known) - strlen(known) - 1);
        }
        return xg_conf_error(cf, st, "\"protocol\": unknown protocol \"%s\" "
            "(%s)", st->args[1], known);
    }
    free(uc->protocol);
    uc->protocol = xg_strdup(st->args[1]);
    return XG_OK;
}

static int
set_tls_ca(struct xg_conf *cf, const struct xg_conf_stmt *st,
    const struct xg_command *cmd, void *conf)
{
    struct xg_upstream_conf *uc = conf;
    const char *dir_end;
    char path[4096];

    if (st->args[1][0] == '/') {
        snprintf(path, sizeof(path), "%s", st->args[1]);
    } else {
        dir_end = strrchr(st->file, '/');
        if (dir_end != NULL) {
            snprintf(path, sizeof(path), "%.*s/%s",
                (int) (dir_end - st->file), st->file, st->args[1]);
        } else {
            snprintf(path, sizeof(path), "%s", st->args[1]);
        }
    }
    free(uc->tls_ca);
    uc->tls_ca = xg_strdup(path);
    return XG_OK;
}

static int
set_header(struct xg_conf *cf, const struct xg_conf_stmt *st,
    const struct xg_command *cmd, void *conf)
{
    static const char *reserved[] = {
        "host", "upgrade", "connection", "sec-websocket-key",
        "sec-websocket-version", "sec-websocket-accept", "content-length",
        "transfer-encoding"
    };
    struct xg_upstream_conf *uc = conf;
    const char *p;
    size_t i;

    for (p = st->args[1]; *p; p++) {
        if (!(isalnum((unsigned char) *p) || strchr("!#$%&'*+-.^_`|~", *p))) {
            return xg_conf_error(cf, st, "\"header\": bad header name "
                "\"%s\"", st->args[1]);
        }
    }
    if (st->args[1][0] == '\0') {
        return xg_conf_error(cf, st, "\"header\": empty header name");
    }
    for (i = 0; i < XG_NELEM(reserved); i++) {
        if (strcasecmp(st->args[1], reserved[i]) == 0) {
            return xg_conf_error(cf, st, "\"header\": \"%s\" is set by the "
                "WebSocket handshake and cannot be overridden", st->args[1]);
        }
    }
    for (p = st->args[2]; *p; p++) {
        if ((unsigned char) *p < 0x20 && *p != '\t') {
            return xg_conf_error(cf, st, "\"header\": control character in "
                "the value of \"%s\"", st->args[1]);
        }
    }
    uc->headers = xg_realloc(uc->headers,
        (size_t) (uc->nheaders + 1) * sizeof(*uc->headers));
    uc->headers[uc->nheaders].name = xg_strdup(st->args[1]);
    uc->headers[uc->nheaders].value = xg_strdup(st->args[2]);
    uc->nheaders++;
    return XG_OK;
}

#define UP(field) offsetof(struct xg_upstream_conf, field)
#define MAIN(field) offsetof(struct xg_main_conf, field)

static const struct xg_command core_commands[] = {
    { "error_log", XG_CONF_MAIN | XG_CONF_TAKE123, set_error_log, 0, NULL },
    { "upstream", XG_CONF_MAIN | XG_CONF_TAKE1 | XG_CONF_BLOCK | XG_CONF_MULTI,
      set_upstream, 0, NULL },
    { "listen", XG_CONF_MAIN | XG_CONF_2MORE | XG_CONF_MULTI, set_listen, 0,
      NULL },
    { "admin", XG_CONF_MAIN | XG_CONF_TAKE1, set_admin, 0, NULL },
    { "admin_origin", XG_CONF_MAIN | XG_CONF_TAKE1 | XG_CONF_MULTI,
      set_admin_origin, 0, NULL },
    { "allow_remote", XG_CONF_MAIN | XG_CONF_TAKE1, xg_conf_set_flag,
      MAIN(allow_remote), NULL },
    { "pid", XG_CONF_MAIN | XG_CONF_TAKE1, set_pid, MAIN(pid), NULL },

    { "url", XG_CONF_UPSTREAM | XG_CONF_TAKE1, set_url, 0, NULL },
    { "rest_url", XG_CONF_UPSTREAM | XG_CONF_TAKE1, set_rest_url, 0, NULL },
    { "rest_cache", XG_CONF_UPSTREAM | XG_CONF_TAKE1, xg_conf_set_duration,
      UP(rest_cache_ms), &bounds_rest_cache },
    { "protocol", XG_CONF_UPSTREAM | XG_CONF_TAKE1, set_protocol, 0, NULL },
    { "tls_ca", XG_CONF_UPSTREAM | XG_CONF_TAKE1, set_tls_ca, 0, NULL },
    { "tls_verify", XG_CONF_UPSTREAM | XG_CONF_TAKE1, xg_conf_set_flag,
      UP(tls_verify), NULL },
    { "header", XG_CONF_UPSTREAM | XG_CONF_TAKE2 | XG_CONF_MULTI, set_header,
      0, NULL },
    { "max_message", XG_CONF_UPSTREAM | XG_CONF_TAKE1, xg_conf_set_size,
      UP(max_message), &bounds_message },
    { "ping", XG_CONF_UPSTREAM | XG_CONF_TAKE1, xg_conf_set_duration,
      UP(ping_ms), &bounds_ping },
    { "ping_timeout", XG_CONF_UPSTREAM | XG_CONF_TAKE1, xg_conf_set_duration,
      UP(ping_timeout_ms), &bounds_ping },
    { "idle_timeout", XG_CONF_UPSTREAM | XG_CONF_TAKE1, xg_conf_set_duration,
      UP(idle_timeout_ms), &bounds_ping },
    { "connect_timeout", XG_CONF_UPSTREAM | XG_CONF_TAKE1,
      xg_conf_set_duration, UP(connect_timeout_ms), &bounds_timeout },
    { "handshake_timeout", XG_CONF_UPSTREAM | XG_CONF_TAKE1,
      xg_conf_set_duration, UP(handshake_timeout_ms), &bounds_timeout },
    { "restore_timeout", XG_CONF_UPSTREAM | XG_CONF_TAKE1,
      xg_conf_set_duration, UP(restore_timeout_ms), &bounds_timeout },
    { "close_timeout", XG_CONF_UPSTREAM | XG_CONF_TAKE1,
      xg_conf_set_duration, UP(close_timeout_ms), &bounds_timeout },
    { "max_connection_age", XG_CONF_UPSTREAM | XG_CONF_TAKE1,
      xg_conf_set_duration, UP(max_connection_age_ms), &bounds_age },
    { "queue_limit", XG_CONF_UPSTREAM | XG_CONF_TAKE1, xg_conf_set_uint,
      UP(queue_limit), &bounds_queue },
    { "queue_timeout", XG_CONF_UPSTREAM | XG_CONF_TAKE1,
      xg_conf_set_duration, UP(queue_timeout_ms), &bounds_queue_ms },
    XG_CONF_NULL_COMMAND
};

/*
 * The core's directives for `exgate -T` (xg_conf_dump.c): those whose
 * setter is not a generic one. CONF is the main conf or an upstream's.
 */
static int
core_dump(struct xg_conf_dump *d, const struct xg_command *cmd,
    const void *conf)
{
    const struct xg_main_conf *mc = conf;
    const struct xg_upstream_conf *uc = conf;
    const struct xg_listen_conf *lc;
    char buf[2048], num[32];
    char *path;
    int i;

    if (cmd->set == set_error_log) {
        xg_conf_dump_words(d, cmd->name, mc->error_log,
            xg_log_level_name(mc->error_log_level),
            xg_log_format_name(mc->error_log_format), NULL);
    } else if (cmd->set == set_pid) {
        return xg_conf_dump_field(d, cmd, xg_conf_set_str, mc);
    } else if (cmd->set == set_upstream) {
        if (mc->upstreams == NULL) {
            xg_conf_dump_comment(d, "%s: none", cmd->name);
        }
        for (uc = mc->upstreams; uc != NULL; uc = uc->next) {
            xg_conf_dump_begin(d);
            xg_conf_dump_word(d, cmd->name);
            xg_conf_dump_word(d, uc->name);
            xg_conf_dump_open(d);
            xg_conf_dump_upstream(d, uc);
            xg_conf_dump_close(d);
        }
    } else if (cmd->set == set_listen) {
        if (mc->listens == NULL) {
            xg_conf_dump_comment(d, "%s: none", cmd->name);
        }
        for (lc = mc->listens; lc != NULL; lc = lc->next) {
            xg_conf_dump_begin(d);
            xg_conf_dump_word(d, cmd->name);
            xg_conf_dump_word(d, xg_conf_fmt_addr(&lc->addr, buf,
                sizeof(buf)));
            xg_conf_dump_word(d, lc->kind == XG_LISTEN_TCP ? "tcp"
                : lc->kind == XG_LISTEN_HTTP ? "http" : "websocket");
            xg_conf_dump_kv(d, "upstream", lc->upstream_name);
            if (lc->kind == XG_LISTEN_WEBSOCKET) {
                xg_conf_dump_kv(d, "path", lc->path);
            }
            if (lc->kind != XG_LISTEN_HTTP) {
                snprintf(num, sizeof(num), "%u", lc->max_clients);
                xg_conf_dump_kv(d, "max_clients", num);
            }
            if (lc->sndbuf != 0) {
                xg_conf_dump_kv(d, "sndbuf", xg_conf_fmt_size(lc->sndbuf, num,
                    sizeof(num)));
            }
            xg_listen_conf_dump(d, lc);
            xg_conf_dump_end(d);
        }
    } else if (cmd->set == set_admin) {
        if (mc->admin_set) {
            xg_conf_dump_words(d, cmd->name, xg_conf_fmt_addr(&mc->admin,
                buf, sizeof(buf)), NULL);
        } else {
            xg_conf_dump_comment(d, "%s: not set (no admin endpoint)",
                cmd->name);
        }
    } else if (cmd->set == set_admin_origin) {
        if (mc->nadmin_origins == 0) {
            xg_conf_dump_comment(d, "%s: none (only requests without an "
                "Origin may change state)", cmd->name);
        }
        for (i = 0; i < mc->nadmin_origins; i++) {
            xg_conf_dump_words(d, cmd->name, mc->admin_origins[i].origin,
                NULL);
        }
    } else if (cmd->set == set_url) {
        xg_conf_dump_words(d, cmd->name, xg_conf_fmt_url(&uc->url, buf,
            sizeof(buf)), NULL);
    } else if (cmd->set == set_rest_url) {
        if (!uc->rest_url_set) {
            xg_conf_dump_comment(d, "%s: not set (no REST client)",
                cmd->name);
        } else {
            xg_conf_dump_words(d, cmd->name, xg_conf_fmt_http_url(
                &uc->rest_url, buf, sizeof(buf)), NULL);
        }
    } else if (cmd->set == set_protocol) {
        xg_conf_dump_words(d, cmd->name, uc->protocol, NULL);
    } else if (cmd->set == set_tls_ca) {
        if (uc->tls_ca == NULL) {
            xg_conf_dump_comment(d, "%s: not set (the system's CA store)",
                cmd->name);
        } else {
            path = xg_conf_abs_path(uc->tls_ca);
            xg_conf_dump_words(d, cmd->name, path, NULL);
            free(path);
        }
    } else if (cmd->set == set_header) {
        if (uc->nheaders == 0) {
            xg_conf_dump_comment(d, "%s: none", cmd->name);
        }
        for (i = 0; i < uc->nheaders; i++) {
            xg_conf_dump_words(d, cmd->name, uc->headers[i].name,
                uc->headers[i].value, NULL);
        }
    } else {
        return XG_AGAIN;
    }
    return XG_OK;
}

const struct xg_module xg_core_module = {
    "core",
    core_commands,
    core_dump
};

const struct xg_command *const *
xg_conf_tables(void)
{
    static const struct xg_command *tables[64];
    static int built;
    const struct xg_module *const *m;
    size_t n = 0;

    if (!built) {
        for (m = xg_modules; *m != NULL && n + 1 < XG_NELEM(tables); m++) {
            tables[n++] = (*m)->commands;
        }
        tables[n] = NULL;
        built = 1;
    }
    return tables;
}

void
xg_conf_cleanup_add(struct xg_conf *cf, void (*fn)(void *p), void *p)
{
    struct xg_conf_cleanup *c = xg_malloc(sizeof(*c));

    c->fn = fn;
    c->p = p;
    c->next = cf->main->cleanups;
    cf->main->cleanups = c;
}

void *
xg_conf_calloc(struct xg_conf *cf, size_t size, void (*fn)(void *p))
{
    void *p = xg_calloc(1, size);

    xg_conf_cleanup_add(cf, fn != NULL ? fn : free, p);
    return p;
}

/* ---- whole-file checks ------------------------------------------------------ */

static void
check_listens(struct xg_conf *cf)
{
    struct xg_main_conf *mc = cf->main;
    struct xg_listen_conf *lc, *o;
    struct xg_upstream_conf *uc;
    struct xg_conf_stmt at;
    char err[1024];

    memset(&at, 0, sizeof(at));
    for (lc = mc->listens; lc != NULL; lc = lc->next) {
        at.file = lc->file;
        at.line = lc->line;
        for (uc = mc->upstreams; uc != NULL; uc = uc->next) {
            if (strcmp(uc->name, lc->upstream_name) == 0) {
                lc->upstream = uc;
                break;
            }
        }
        if (lc->upstream != NULL && lc->kind == XG_LISTEN_WEBSOCKET
            && lc->path == NULL)
        {
            const struct xg_venue *pm;

            pm = xg_venue_find(lc->upstream->protocol);
            lc->path = xg_strdup(pm != NULL && pm->default_path != NULL
                ? pm->default_path : "/*");
        }
        if (lc->upstream == NULL) {
            xg_conf_error(cf, &at, "\"listen\": no upstream named \"%s\"",
                lc->upstream_name);
        } else if (xg_listen_check(mc, lc, err, sizeof(err)) != XG_OK) {
            /* what start-up would refuse, in its words */
            xg_conf_error(cf, &at, "%s", err);
        }
        if (!mc->allow_remote && !xg_addr_is_loopback(&lc->addr)) {
            xg_conf_error(cf, &at, "\"listen\": %s is not a loopback address;"
                " set \"allow_remote on;\" to listen on it", lc->addr.host);
        }
        for (o = mc->listens; o != lc; o = o->next) {
            if (o->addr.port == lc->addr.port
                && strcmp(o->addr.host, lc->addr.host) == 0)
            {
                xg_conf_error(cf, &at, "\"listen\": %s:%u is already used at "
                    "%s:%d", lc->addr.host, lc->addr.port, o->file, o->line);
                break;
            }
        }
    }
    if (mc->admin_set && !mc->allow_remote
        && !xg_addr_is_loopback(&mc->admin))
    {
        at.file = mc->admin_file;
        at.line = mc->admin_line;
        xg_conf_error(cf, &at, "\"admin\": %s is not a loopback address; set "
            "\"allow_remote on;\" to listen on it", mc->admin.host);
    }
}

/*
 * The error log must be one that start-up can open (xg_log_open()); the
 * check creates nothing.
 */
static void
check_error_log(struct xg_conf *cf)
{
    struct xg_main_conf *mc = cf->main;
    struct xg_conf_stmt at;
    int e;

    if (mc->error_log_file == NULL) {
        return;     /* not set: stderr */
    }
    e = xg_log_check(mc->error_log);
    if (e != 0) {
        memset(&at, 0, sizeof(at));
        at.file = mc->error_log_file;
        at.line = mc->error_log_line;
        xg_conf_error(cf, &at, "error_log \"%s\": %s", mc->error_log,
            strerror(e));
    }
}

/*
 * Builds the main conf from the statement tree in cf->main. Errors are
 * collected in CF. Returns the number of errors found.
 */
int
xg_conf_core_build(struct xg_conf *cf)
{
    struct xg_main_conf *mc = cf->main;
    int before = cf->nerrors;

    mc->error_log_level = XG_LOG_INFO;
    xg_conf_dispatch(cf, mc->root, mc->nroot, XG_CONF_MAIN, xg_conf_tables(),
        mc);
    if (mc->error_log == NULL) {
        mc->error_log = xg_strdup("stderr");
    }
    check_listens(cf);
    check_error_log(cf);
    return cf->nerrors - before;
}

/* Frees what the directives allocated. */
void
xg_conf_core_free(struct xg_main_conf *mc)
{
    struct xg_conf_cleanup *c, *next;

    for (c = mc->cleanups; c != NULL; c = next) {
        next = c->next;
        c->fn(c->p);
        free(c);
    }
    mc->cleanups = NULL;
    free(mc->error_log);
    free(mc->pid);
}
