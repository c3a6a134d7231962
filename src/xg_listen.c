/*
 * xg_listen.c: the local listeners and the gateway core's main-context
 * directives.
 *
 * A listener accepts sockets with evconnlistener and hands each one to a
 * new client (xg_client.c). When accept fails for lack of descriptors
 * (EMFILE, ENFILE) the listener pauses on a timer instead of spinning, as
 * relayd does; RLIMIT_NOFILE is raised to the hard limit at start-up.
 */
#include "xg_core.h"
#include "xg_client.h"
#include "xg_client_int.h"
#include "xg_listen.h"
#include "xg_log.h"
#include "xg_rest.h"
#include "xg_venue.h"
#include "xg_upstream.h"

#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>

#include <event2/listener.h>
#include <openssl/crypto.h>

#define XG_LISTEN_PAUSE_MS 1000     /* after EMFILE */

struct xg_listen_set {
    struct xg_listener *first;
    struct xg_listener *closing;    /* removed by a reload, clients left */
};

/* ---- conf: the gateway core's main-context directives ---- */

static const struct xg_gateway_conf gw_defaults = {
    NULL, 0,
    1,                      /* client_auth on */
    1024 * 1024,            /* client_max_message 1m */
    32 * 1024 * 1024,       /* client_output_limit 32m 8m 60s */
    8 * 1024 * 1024,
    60000,
    0,                      /* client_rate: unlimited */
    10000,                  /* client_max_channels */
    0,                      /* unsubscribe_linger */
    0                       /* order_outcome off */
};

const struct xg_gateway_conf *
xg_gateway_conf_get(const struct xg_main_conf *mc)
{
    if (mc != NULL && mc->gateway_conf != NULL) {
        return mc->gateway_conf;
    }
    return &gw_defaults;
}

static void
gw_conf_free(void *p)
{
    struct xg_gateway_conf *gc = p;
    int i;

    for (i = 0; i < gc->ncreds; i++) {
        free(gc->creds[i].id);
        if (gc->creds[i].secret != NULL) {
            OPENSSL_cleanse(gc->creds[i].secret, strlen(gc->creds[i].secret));
        }
        free(gc->creds[i].secret);
        free(gc->creds[i].src);
        free(gc->creds[i].account);
    }
    free(gc->creds);
    free(gc);
}

/* The conf object, made with the defaults on first use. */
static struct xg_gateway_conf *
gw_conf(struct xg_conf *cf, void *conf)
{
    struct xg_main_conf *mc = conf;

    if (mc->gateway_conf == NULL) {
        struct xg_gateway_conf *gc = xg_malloc(sizeof(*gc));

        *gc = gw_defaults;
        mc->gateway_conf = gc;
        xg_conf_cleanup_add(cf, gw_conf_free, gc);
    }
    return mc->gateway_conf;
}

static int
gw_set_flag(struct xg_conf *cf, const struct xg_conf_stmt *st,
    const struct xg_command *cmd, void *conf)
{
    return xg_conf_set_flag(cf, st, cmd, gw_conf(cf, conf));
}

static int
gw_set_uint(struct xg_conf *cf, const struct xg_conf_stmt *st,
    const struct xg_command *cmd, void *conf)
{
    return xg_conf_set_uint(cf, st, cmd, gw_conf(cf, conf));
}

static int
gw_set_size(struct xg_conf *cf, const struct xg_conf_stmt *st,
    const struct xg_command *cmd, void *conf)
{
    return xg_conf_set_size(cf, st, cmd, gw_conf(cf, conf));
}

static int
gw_set_duration(struct xg_conf *cf, const struct xg_conf_stmt *st,
    const struct xg_command *cmd, void *conf)
{
    return xg_conf_set_duration(cf, st, cmd, gw_conf(cf, conf));
}

static int
gw_set_credentials(struct xg_conf *cf, const struct xg_conf_stmt *st,
    const struct xg_command *cmd, void *conf)
{
    struct xg_gateway_conf *gc = gw_conf(cf, conf);
    char *secret;
    int i;

    for (i = 0; i < gc->ncreds; i++) {
        if (strcmp(gc->creds[i].id, st->args[1]) == 0) {
            return xg_conf_error(cf, st, "\"client_credentials\": duplicate "
                "client id \"%s\"", st->args[1]);
        }
    }
    if (st->nargs == 4 && (strncmp(st->args[3], "account=", 8) != 0
                           || !xg_conf_name_ok(st->args[3] + 8)))
    {
        return xg_conf_error(cf, st, "\"client_credentials\": the third "
            "word must be account=NAME (letters, digits, \"_\", \"-\", "
            "\".\"), "
            "not \"%s\"", st->args[3]);
    }
    secret = xg_conf_secret(cf, st, st->args[2]);
    if (secret == NULL) {
        return XG_ERROR;
    }
    if (*secret == '\0') {
        free(secret);
        return xg_conf_error(cf, st, "\"client_credentials\": the secret of "
            "\"%s\" is empty", st->args[1]);
    }
    gc->creds = xg_realloc(gc->creds, (gc->ncreds + 1) * sizeof(*gc->creds));
    gc->creds[gc->ncreds].id = xg_strdup(st->args[1]);
    gc->creds[gc->ncreds].secret = secret;
    gc->creds[gc->ncreds].src = xg_conf_secret_source(st, st->args[2]);
    gc->creds[gc->ncreds].account = st->nargs == 4
                                    ? xg_strdup(st->args[3] + 8) : NULL;
    gc->ncreds++;
    return XG_OK;
}

static int
gw_set_output_limit(struct xg_conf *cf, const struct xg_conf_stmt *st,
    const struct xg_command *cmd, void *conf)
{
    struct xg_gateway_conf *gc = gw_conf(cf, conf);
    uint64_t hard, soft, ms;

    if (xg_conf_parse_size(st->args[1], &hard) != XG_OK
        || xg_conf_parse_size(st->args[2], &soft) != XG_OK) {
        return xg_conf_error(cf, st, "\"client_output_limit\": HARD and SOFT "
            "must be sizes (0 disables), e.g. 32m 8m 60s");
    }
    if (xg_conf_parse_duration(st->args[3], &ms) != XG_OK) {
        /* redis writes plain seconds */
        uint64_t s;

        if (xg_conf_parse_uint(st->args[3], &s) != XG_OK || s > 86400) {
            return xg_conf_error(cf, st, "\"client_output_limit\": bad "
                "duration \"%s\"", st->args[3]);
        }
        ms = s * 1000;
    }
    if (hard != 0 && soft > hard) {
        return xg_conf_error(cf, st, "\"client_output_limit\": SOFT %s is "
            "over HARD %s", st->args[2], st->args[1]);
    }
    gc->out_hard = (size_t) hard;
    gc->out_soft = (size_t) soft;
    gc->out_soft_ms = ms;
    return XG_OK;
}

static const struct xg_conf_bounds bounds_msg = { 64, 256 * 1024 * 1024 };
static const struct xg_conf_bounds bounds_rate = { 0, 1000000 };
static const struct xg_conf_bounds bounds_chans = { 1, 1000000 };
static const struct xg_conf_bounds bounds_linger = { 0, 3600 * 1000 };

#define GW(f) offsetof(struct xg_gateway_conf, f)

static const struct xg_command gw_commands[] = {
    { "client_credentials", XG_CONF_MAIN | XG_CONF_TAKE23 | XG_CONF_MULTI,
      gw_set_credentials, 0, NULL },
    { "client_auth", XG_CONF_MAIN | XG_CONF_TAKE1, gw_set_flag,
      GW(client_auth), NULL },
    { "order_outcome", XG_CONF_MAIN | XG_CONF_TAKE1, gw_set_flag,
      GW(order_outcome), NULL },
    { "client_max_message", XG_CONF_MAIN | XG_CONF_TAKE1, gw_set_size,
      GW(client_max_message), &bounds_msg },
    { "client_output_limit", XG_CONF_MAIN | XG_CONF_TAKE3,
      gw_set_output_limit, 0, NULL },
    { "client_rate", XG_CONF_MAIN | XG_CONF_TAKE1, gw_set_uint,
      GW(client_rate), &bounds_rate },
    { "client_max_channels", XG_CONF_MAIN | XG_CONF_TAKE1, gw_set_uint,
      GW(client_max_channels), &bounds_chans },
    { "unsubscribe_linger", XG_CONF_MAIN | XG_CONF_TAKE1, gw_set_duration,
      GW(unsubscribe_linger_ms), &bounds_linger },
    XG_CONF_NULL_COMMAND
};

/*
 * The gateway's directives for `exgate -T`: CONF is the main conf; the
 * values are in its gateway conf (the defaults when none was made).
 */
static int
gw_dump(struct xg_conf_dump *d, const struct xg_command *cmd,
    const void *conf)
{
    const struct xg_gateway_conf *gc = xg_gateway_conf_get(conf);
    char hard[32], soft[32], ms[32];
    int i;

    if (cmd->set == gw_set_credentials) {
        if (gc->ncreds == 0) {
            xg_conf_dump_comment(d, "%s: none", cmd->name);
        }
        for (i = 0; i < gc->ncreds; i++) {
            xg_conf_dump_begin(d);
            xg_conf_dump_word(d, cmd->name);
            xg_conf_dump_word(d, gc->creds[i].id);
            xg_conf_dump_word(d, gc->creds[i].src);
            if (gc->creds[i].account != NULL) {
                xg_conf_dump_kv(d, "account", gc->creds[i].account);
            }
            xg_conf_dump_end(d);
        }
    } else if (cmd->set == gw_set_output_limit) {
        xg_conf_dump_words(d, cmd->name,
            xg_conf_fmt_size(gc->out_hard, hard, sizeof(hard)),
            xg_conf_fmt_size(gc->out_soft, soft, sizeof(soft)),
            xg_conf_fmt_duration(gc->out_soft_ms, ms, sizeof(ms)), NULL);
    } else if (cmd->set == gw_set_flag) {
        return xg_conf_dump_field(d, cmd, xg_conf_set_flag, gc);
    } else if (cmd->set == gw_set_uint) {
        return xg_conf_dump_field(d, cmd, xg_conf_set_uint, gc);
    } else if (cmd->set == gw_set_size) {
        return xg_conf_dump_field(d, cmd, xg_conf_set_size, gc);
    } else if (cmd->set == gw_set_duration) {
        return xg_conf_dump_field(d, cmd, xg_conf_set_duration, gc);
    } else {
        return XG_AGAIN;
    }
    return XG_OK;
}

const struct xg_module xg_gateway_module = {
    "gateway",
    gw_commands,
    gw_dump
};

/* ---- conf: the gateway's keys on a listen line ---- */

struct listen_gw {
    struct xg_gateway_cred *creds;
    int                     ncreds;
    int                     client_auth;    /* -1: as the top level */
    int                     order_outcome;  /* -1: as the top level */
};

static void
listen_gw_free(void *p)
{
    struct listen_gw *g = p;
    int i;

    for (i = 0; i < g->ncreds; i++) {
        free(g->creds[i].id);
        OPENSSL_cleanse(g->creds[i].secret, strlen(g->creds[i].secret));
        free(g->creds[i].secret);
        free(g->creds[i].src);
        free(g->creds[i].account);
    }
    free(g->creds);
    free(g);
}

int
xg_listen_conf_key(struct xg_conf *cf, const struct xg_conf_stmt *st,
    struct xg_listen_conf *lc, const char *arg)
{
    struct listen_gw *g = lc->gateway_conf;
    const char *v, *colon;
    char *id, *secret;
    int i, on;

    if (strncmp(arg, "client_credentials=", 19) != 0
        && strncmp(arg, "client_auth=", 12) != 0
        && strncmp(arg, "order_outcome=", 14) != 0) {
        return XG_AGAIN;
    }
    if (g == NULL) {
        g = xg_calloc(1, sizeof(*g));
        g->client_auth = -1;
        g->order_outcome = -1;
        lc->gateway_conf = g;
        xg_conf_cleanup_add(cf, listen_gw_free, g);
    }
    if (strncmp(arg, "client_auth=", 12) == 0) {
        if (xg_conf_parse_flag(arg + 12, &on) != XG_OK) {
            return xg_conf_error(cf, st, "\"listen\": client_auth must be "
                "on or off, not \"%s\"", arg + 12);
        }
        g->client_auth = on;
        return XG_OK;
    }
    if (strncmp(arg, "order_outcome=", 14) == 0) {
        if (xg_conf_parse_flag(arg + 14, &on) != XG_OK) {
            return xg_conf_error(cf, st, "\"listen\": order_outcome must be "
                "on or off, not \"%s\"", arg + 14);
        }
        g->order_outcome = on;
        return XG_OK;
    }
    v = arg + 19;
    colon = strchr(v, ':');
    if (colon == NULL || colon == v || colon[1] == '\0') {
        return xg_conf_error(cf, st, "\"listen\": client_credentials="
            "ID:SECRET, SECRET env:NAME or file:PATH");
    }
    id = xg_strndup(v, (size_t) (colon - v));
    for (i = 0; i < g->ncreds; i++) {
        if (strcmp(g->creds[i].id, id) == 0) {
            xg_conf_error(cf, st, "\"listen\": duplicate client id \"%s\"",
                id);
            free(id);
            return XG_ERROR;
        }
    }
    secret = xg_conf_secret(cf, st, colon + 1);
    if (secret == NULL || *secret == '\0') {
        if (secret != NULL) {
            xg_conf_error(cf, st, "\"listen\": the secret of \"%s\" is "
                "empty", id);
        }
        free(secret);
        free(id);
        return XG_ERROR;
    }
    g->creds = xg_realloc(g->creds, (g->ncreds + 1) * sizeof(*g->creds));
    g->creds[g->ncreds].id = id;
    g->creds[g->ncreds].secret = secret;
    g->creds[g->ncreds].src = xg_conf_secret_source(st, colon + 1);
    g->creds[g->ncreds].account = NULL;     /* the listener form has none */
    g->ncreds++;
    return XG_OK;
}

/* See xg_listen.h. */
void
xg_listen_conf_dump(struct xg_conf_dump *d, const struct xg_listen_conf *lc)
{
    const struct listen_gw *g = lc->gateway_conf;
    char *word;
    size_t n;
    int i;

    if (g == NULL) {
        return;
    }
    if (g->client_auth >= 0) {
        xg_conf_dump_word(d, g->client_auth ? "client_auth=on"
            : "client_auth=off");
    }
    if (g->order_outcome >= 0) {
        xg_conf_dump_word(d, g->order_outcome ? "order_outcome=on"
            : "order_outcome=off");
    }
    for (i = 0; i < g->ncreds; i++) {
        n = strlen(g->creds[i].id) + strlen(g->creds[i].src) + 21;
        word = xg_malloc(n);
        snprintf(word, n, "client_credentials=%s:%s", g->creds[i].id,
            g->creds[i].src);
        xg_conf_dump_word(d, word);
        free(word);
    }
}

/* ---- listeners ---- */

void
xg_listen_raise_nofile(void)
{
    struct rlimit rl;

    if (getrlimit(RLIMIT_NOFILE, &rl) != 0) {
        xg_log_warn("gateway: getrlimit(RLIMIT_NOFILE): %s", strerror(errno));
        return;
    }
    if (rl.rlim_cur == rl.rlim_max) {
        xg_log_info("gateway: open file limit %llu",
            (unsigned long long) rl.rlim_cur);
        return;
    }
    rl.rlim_cur = rl.rlim_max;
    if (setrlimit(RLIMIT_NOFILE, &rl) != 0) {
        xg_log_warn("gateway: setrlimit(RLIMIT_NOFILE, %llu): %s",
            (unsigned long long) rl.rlim_max, strerror(errno));
        return;
    }
    xg_log_info("gateway: open file limit raised to %llu",
        (unsigned long long) rl.rlim_cur);
}

void
xg_listen_client_gone(struct xg_listener *l, struct xg_client *c)
{
    l->nclients--;
    if (l->ev_reap != NULL && l->clients == NULL) {
        /* the caller still runs on C: L goes from the loop */
        event_active(l->ev_reap, EV_TIMEOUT, 1);
    }
}

static void
on_accept(struct evconnlistener *evl, evutil_socket_t fd,
    struct sockaddr *sa, int socklen, void *arg)
{
    struct xg_listener *l = arg;
    int one = 1;

    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    if (l->lc->sndbuf != 0) {
        /*
         * Bounds what the kernel takes for a client that stops reading,
         * ahead of client_output_limit (autotuned, it grows to
         * net.ipv4.tcp_wmem's maximum). The kernel doubles the value and
         * caps it at net.core.wmem_max.
         */
        int v = (int) l->lc->sndbuf;

        if (setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &v, sizeof(v)) != 0) {
            xg_log_warn("listener %s: SO_SNDBUF %d: %s", l->addr, v,
                strerror(errno));
        }
    }
    if (l->lc->kind == XG_LISTEN_TCP) {
        if (l->lc->max_clients != 0 && l->nclients >= l->lc->max_clients) {
            xg_log_warn("listener %s: max_clients %u reached: closing a new "
                "tcp client", l->addr, l->lc->max_clients);
            evutil_closesocket(fd);
            return;
        }
        l->nclients++;
        xg_client_new_tcp(l, fd, sa);
        return;
    }
    /* over max_clients, the upgrade is refused with 503 (ws_check) */
    l->nclients++;
    xg_client_new_ws(l, fd, sa);
}

static void
on_resume(evutil_socket_t fd, short what, void *arg)
{
    struct xg_listener *l = arg;

    xg_log_info("listener %s: accepting again", l->addr);
    evconnlistener_enable(l->evl);
}

static void
on_accept_error(struct evconnlistener *evl, void *arg)
{
    struct xg_listener *l = arg;
    int err = EVUTIL_SOCKET_ERROR();
    struct timeval tv = { XG_LISTEN_PAUSE_MS / 1000,
        (XG_LISTEN_PAUSE_MS % 1000) * 1000 };

    if (err == EMFILE || err == ENFILE || err == ENOBUFS || err == ENOMEM) {
        xg_log_warn("listener %s: accept: %s: pausing for %d ms", l->addr,
            strerror(err), XG_LISTEN_PAUSE_MS);
        evconnlistener_disable(l->evl);
        xg_timer_add(l->ev_resume, &tv);
        return;
    }
    xg_log_warn("listener %s: accept: %s", l->addr, strerror(err));
}

/*
 * The conf's part of opening LC (in MC): its protocol module PM (which
 * must serve clients, and be told to trust them all when it cannot
 * authenticate them) and its address, resolved without a name server into
 * *AI (caller frees). XG_ERROR with the reason in ERR.
 */
static int
listen_prepare(const struct xg_main_conf *mc, const struct xg_listen_conf *lc,
    const struct xg_venue **pm, struct evutil_addrinfo **ai,
    char *err, size_t errlen)
{
    const struct listen_gw *g = lc->gateway_conf;
    struct evutil_addrinfo hints;
    char port[8];
    int e, client_auth;

    *pm = lc->upstream ? xg_venue_find(lc->upstream->protocol) : NULL;
    if (lc->kind == XG_LISTEN_HTTP) {
        /* the REST front: no clients of the venue, its rest_url instead */
        if (lc->upstream == NULL || !lc->upstream->rest_url_set) {
            snprintf(err, errlen, "listener %s:%u: http: upstream \"%s\" "
                "has no \"rest_url\"", lc->addr.host, lc->addr.port,
                lc->upstream_name);
            return XG_ERROR;
        }
    } else if (*pm == NULL || (*pm)->client_open == NULL) {
        snprintf(err, errlen, "listener %s:%u: upstream \"%s\" speaks a "
            "protocol that serves no local clients", lc->addr.host,
            lc->addr.port, lc->upstream_name);
        return XG_ERROR;
    }
    client_auth = g != NULL && g->client_auth >= 0
                  ? g->client_auth : xg_gateway_conf_get(mc)->client_auth;
    if (lc->kind != XG_LISTEN_HTTP
        && (*pm)->trusts_clients == XG_VENUE_TRUSTS && client_auth)
    {
        snprintf(err, errlen, "listener %s:%u: protocol %s cannot "
            "authenticate local clients and trusts every one: say so with "
            "client_auth=off on the listen line (or client_auth off;)",
            lc->addr.host, lc->addr.port, (*pm)->name);
        return XG_ERROR;
    }
    memset(&hints, 0, sizeof(hints));
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = EVUTIL_AI_PASSIVE | EVUTIL_AI_NUMERICHOST
                     | EVUTIL_AI_NUMERICSERV;
    snprintf(port, sizeof(port), "%u", lc->addr.port);
    *ai = NULL;
    e = evutil_getaddrinfo(lc->addr.host, port, &hints, ai);
    if (e != 0) {
        snprintf(err, errlen, "listener %s:%u: %s", lc->addr.host,
            lc->addr.port, evutil_gai_strerror(e));
        return XG_ERROR;
    }
    return XG_OK;
}

/* See xg_listen.h. */
int
xg_listen_check(const struct xg_main_conf *mc,
    const struct xg_listen_conf *lc, char *err, size_t errlen)
{
    const struct xg_venue *pm;
    struct evutil_addrinfo *ai;

    if (listen_prepare(mc, lc, &pm, &ai, err, errlen) != XG_OK) {
        return XG_ERROR;
    }
    evutil_freeaddrinfo(ai);
    return XG_OK;
}

/* L's conf: LC, and the gateway settings of MC with LC's own keys. */
static void
listen_set_conf(struct xg_listener *l, const struct xg_main_conf *mc,
    const struct xg_listen_conf *lc)
{
    l->lc = lc;
    l->gc = xg_gateway_conf_get(mc);
    free(l->gc_own);
    l->gc_own = NULL;
    if (lc->gateway_conf != NULL) {
        const struct listen_gw *g = lc->gateway_conf;

        /* this listener's own policy over the top-level one */
        l->gc_own = xg_malloc(sizeof(*l->gc_own));
        *l->gc_own = *l->gc;
        if (g->ncreds > 0) {
            l->gc_own->creds = g->creds;
            l->gc_own->ncreds = g->ncreds;
        }
        if (g->client_auth >= 0) {
            l->gc_own->client_auth = g->client_auth;
        }
        if (g->order_outcome >= 0) {
            l->gc_own->order_outcome = g->order_outcome;
        }
        l->gc = l->gc_own;
    }
}

static int
listen_open(struct xg_listen_set *ls, struct event_base *base,
    struct xg_fanout *fo, const struct xg_main_conf *mc,
    const struct xg_upstream_set *ups, const struct xg_listen_conf *lc)
{
    struct xg_listener *l;
    struct evutil_addrinfo *ai = NULL;
    const struct xg_venue *pm;
    struct xg_upstream *up;
    char err[1024];

    up = xg_upstream_find(ups, lc->upstream_name);
    if (up == NULL) {
        xg_log_error("listener %s:%u: no running upstream \"%s\"",
            lc->addr.host, lc->addr.port, lc->upstream_name);
        return XG_ERROR;
    }
    /* the conf check made these already (xg_listen_check) */
    if (listen_prepare(mc, lc, &pm, &ai, err, sizeof(err)) != XG_OK) {
        xg_log_error("%s", err);
        return XG_ERROR;
    }
    l = xg_calloc(1, sizeof(*l));
    listen_set_conf(l, mc, lc);
    l->base = base;
    l->fo = fo;
    l->up = up;
    l->pm = pm;
    l->pp = xg_upstream_proto(up);
    snprintf(l->addr, sizeof(l->addr), "%s%s%s:%u",
        strchr(lc->addr.host, ':') ? "[" : "", lc->addr.host,
        strchr(lc->addr.host, ':') ? "]" : "", lc->addr.port);
    l->evl = evconnlistener_new_bind(base, on_accept, l,
        LEV_OPT_REUSEABLE | LEV_OPT_CLOSE_ON_FREE | LEV_OPT_CLOSE_ON_EXEC,
        1024, ai->ai_addr, (int) ai->ai_addrlen);
    evutil_freeaddrinfo(ai);
    if (l->evl == NULL) {
        xg_log_error("listener %s: cannot listen: %s", l->addr,
            strerror(errno));
        free(l->gc_own);
        free(l);
        return XG_ERROR;
    }
    evconnlistener_set_error_cb(l->evl, on_accept_error);
    if (lc->kind == XG_LISTEN_HTTP) {
        /* the front owns the socket from now on (l->evl is borrowed) */
        l->front = xg_rest_front_new(base, l->evl, up, pm, l->pp, l->addr);
        if (l->front == NULL) {
            free(l->gc_own);
            free(l);
            return XG_ERROR;
        }
    }
    l->ev_resume = xg_timer_new(base, on_resume, l);
    l->next = ls->first;
    ls->first = l;
    xg_log_info("listener %s: %s clients for upstream \"%s\"%s%s", l->addr,
        lc->kind == XG_LISTEN_WEBSOCKET ? "websocket"
        : lc->kind == XG_LISTEN_HTTP ? "http (REST front)" : "tcp",
        lc->upstream_name, lc->kind == XG_LISTEN_WEBSOCKET ? " on " : "",
        lc->kind == XG_LISTEN_WEBSOCKET ? lc->path : "");
    return XG_OK;
}

struct xg_listen_set *
xg_listen_start_all(struct event_base *base, struct xg_fanout *fo,
    const struct xg_main_conf *mc, const struct xg_upstream_set *ups)
{
    struct xg_listen_set *ls = xg_calloc(1, sizeof(*ls));
    const struct xg_listen_conf *lc;

    for (lc = mc->listens; lc != NULL; lc = lc->next) {
        if (listen_open(ls, base, fo, mc, ups, lc) != XG_OK) {
            xg_listen_free_all(ls);
            return NULL;
        }
    }
    return ls;
}

/* Closes L's socket (an http listener's front with it). */
static void
listen_unbind(struct xg_listener *l)
{
    if (l->front != NULL) {
        xg_rest_front_free(l->front);   /* frees l->evl */
        l->front = NULL;
    } else if (l->evl != NULL) {
        evconnlistener_free(l->evl);
    }
    l->evl = NULL;
}

/* Frees L (out of every list), its clients torn down at once. */
static void
listen_free(struct xg_listener *l, const char *reason)
{
    while (l->clients != NULL) {
        xg_client_free(l->clients, reason);
    }
    listen_unbind(l);
    xg_timer_free(l->ev_resume);
    if (l->ev_reap != NULL) {
        event_free(l->ev_reap);
    }
    free(l->gc_own);
    xg_conf_free(l->conf_ref);
    free(l);
}

/* Takes L out of the list at *PP. */
static void
listen_unlink(struct xg_listener **pp, struct xg_listener *l)
{
    for (; *pp != NULL; pp = &(*pp)->next) {
        if (*pp == l) {
            *pp = l->next;
            l->next = NULL;
            return;
        }
    }
}

/* A closed listener's last client is gone (see xg_listen_close()). */
static void
on_reap(evutil_socket_t fd, short what, void *arg)
{
    struct xg_listener *l = arg;
    void (*cb)(void *) = l->closed_cb;
    void *cb_arg = l->closed_arg;

    if (l->clients != NULL) {
        return;
    }
    xg_log_info("listener %s: closed (its last client is gone)", l->addr);
    listen_unlink(&l->set->closing, l);
    listen_free(l, "listener closed");
    if (cb != NULL) {
        cb(cb_arg);
    }
}

/* See xg_listen.h. */
int
xg_listen_open(struct xg_listen_set *ls, struct event_base *base,
    struct xg_fanout *fo, const struct xg_main_conf *mc,
    const struct xg_upstream_set *ups, const struct xg_listen_conf *lc)
{
    if (listen_open(ls, base, fo, mc, ups, lc) != XG_OK) {
        return XG_ERROR;
    }
    ls->first->set = ls;
    return XG_OK;
}

/* See xg_listen.h. */
struct xg_listener *
xg_listen_first(const struct xg_listen_set *ls)
{
    return ls->first;
}

/* See xg_listen.h. */
void
xg_listen_reconf(struct xg_listener *l, const struct xg_main_conf *mc,
    const struct xg_listen_conf *lc)
{
    listen_set_conf(l, mc, lc);
}

/* See xg_listen.h. */
void
xg_listen_close(struct xg_listen_set *ls, struct xg_listener *l, int code,
    const char *reason, struct xg_main_conf *mc, void (*cb)(void *arg),
    void *arg)
{
    struct xg_client *c, *cn;

    listen_unlink(&ls->first, l);
    l->set = ls;
    l->next = ls->closing;
    ls->closing = l;
    l->conf_ref = xg_conf_ref(mc);
    l->closed_cb = cb;
    l->closed_arg = arg;
    listen_unbind(l);
    xg_timer_del(l->ev_resume);
    xg_log_info("listener %s: closed for new clients (%s), closing its %u "
        "client%s", l->addr, reason, l->nclients, l->nclients == 1 ? "" : "s");
    l->ev_reap = event_new(l->base, -1, 0, on_reap, l);
    for (c = l->clients; c != NULL; c = cn) {
        cn = xg_client_next(c);
        xg_client_close(c, code, reason);
    }
    if (l->clients == NULL) {
        event_active(l->ev_reap, EV_TIMEOUT, 1);
    }
}

/* See xg_listen.h. */
void
xg_listen_forget_upstream(struct xg_listen_set *ls,
    const struct xg_upstream *up)
{
    struct xg_listener *l;

    for (l = ls->closing; l != NULL; l = l->next) {
        if (l->up == up) {
            l->closed_cb = NULL;
            while (l->clients != NULL) {
                xg_client_free(l->clients, "its upstream is gone");
            }
        }
    }
}

void
xg_listen_stop_all(struct xg_listen_set *ls)
{
    struct xg_listener *l, *nx;

    for (l = ls->first; l != NULL; l = nx) {
        struct xg_client *c, *cn;

        nx = l->next;
        for (c = l->clients; c != NULL; c = cn) {
            cn = xg_client_next(c);
            xg_client_close(c, 1001, "exgate stopping");
        }
        listen_unbind(l);
        xg_timer_del(l->ev_resume);
    }
}

void
xg_listen_free_all(struct xg_listen_set *ls)
{
    struct xg_listener *l, *nx;

    if (ls == NULL) {
        return;
    }
    for (l = ls->first; l != NULL; l = nx) {
        nx = l->next;
        listen_free(l, "exgate stopped");
    }
    for (l = ls->closing; l != NULL; l = nx) {
        nx = l->next;
        listen_free(l, "exgate stopped");
    }
    free(ls);
}

void
xg_listen_status(json_t *obj, void *arg)
{
    const struct xg_listen_set *ls = arg;
    json_t *arr = json_array();
    struct xg_listener *l;

    for (l = ls->first; l != NULL; l = l->next) {
        json_t *o = json_pack("{s:s, s:s, s:s, s:I, s:I, s:I}",
            "address", l->addr,
            "kind", l->lc->kind == XG_LISTEN_WEBSOCKET ? "websocket"
            : l->lc->kind == XG_LISTEN_HTTP ? "http" : "tcp",
            "upstream", l->lc->upstream_name,
            "clients", (json_int_t) l->nclients,
            "messages_out", (json_int_t) l->messages_out,
            "slow_consumer_closes", (json_int_t) l->slow_consumer_closes);

        if (l->front != NULL) {
            xg_rest_front_status(l->front, o);
        }
        json_array_append_new(arr, o);
    }
    json_object_set_new(obj, "listeners", arr);
    json_object_set_new(obj, "messages_out",
        json_integer((json_int_t) xg_gateway_stats.messages_out));
    json_object_set_new(obj, "slow_consumer_closes",
        json_integer((json_int_t) xg_gateway_stats.slow_consumer_closes));
    json_object_set_new(obj, "client_errors",
        json_integer((json_int_t) xg_gateway_stats.client_errors));
}
