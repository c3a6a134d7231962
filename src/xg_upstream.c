/*
 * xg_upstream.c: the upstream connection state machine (see
 * xg_upstream.h), the upstream side of xg_proto.h, and the set of the
 * upstreams of a running configuration.
 *
 * The rules it keeps (DESIGN.md sections 2 and 4):
 *  - it is the only place that reconnects: the transport reports on_down
 *    once and is freed, and every new attempt starts from one timer;
 *  - at most one connection attempt is in flight, and the previous
 *    connection is gone (dropped if its close is still running) before
 *    the next one starts;
 *  - every state that waits has a deadline timer, every transition is
 *    logged as "upstream NAME#ID: old -> new (reason), retry in Xms".
 */
#include "xg_core.h"
#include "xg_conf.h"
#include "xg_log.h"
#include "xg_proto.h"
#include "xg_reconnect.h"
#include "xg_upstream.h"
#include "xg_ws.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/event.h>
#include <openssl/rand.h>

/*
 * Our own deadlines back up the transport's (which get the same values
 * through xg_ws_opts), so a state can never hang even if a layer below
 * misses one. The grace lets the transport's more precise reason win.
 */
#define XG_UP_DEADLINE_GRACE_MS 250

/* A close frame's reason holds at most 123 bytes (RFC 6455 5.5.1). */
#define XG_UP_CLOSE_REASON_MAX  123

/*
 * Why a connection ended, or an attempt failed, in a few fixed classes
 * that /status and /metrics count (the full text stays in last_error).
 * The order is the order of up_why_names.
 */
enum up_why {
    UP_WHY_CLOSED = 0,  /* the exchange sent a close frame */
    UP_WHY_LOST,        /* eof or a socket error, no close frame */
    UP_WHY_TIMEOUT,     /* a deadline: connect, handshake, ping, idle, ... */
    UP_WHY_CONNECT,     /* the tcp connect failed (refused, unreachable) */
    UP_WHY_DNS,
    UP_WHY_TLS,
    UP_WHY_HTTP,        /* the upgrade was answered without 101 */
    UP_WHY_PROTOCOL,    /* the protocol module failed the connection */
    UP_WHY_STOP,        /* our orderly stop */
    UP_WHY_ERROR,       /* anything else */
    UP_WHY_N
};

static const char *const up_why_names[UP_WHY_N] = {
    "closed", "lost", "timeout", "connect", "dns", "tls", "http",
    "protocol", "stop", "error"
};

/*
 * The upper bounds (ms) of the restore duration histogram's buckets, as
 * Prometheus' default buckets for a latency from a few ms to the
 * restore_timeout's order of magnitude; one more bucket counts the rest.
 */
static const unsigned up_restore_le_ms[] = {
    5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000
};
#define XG_UP_RESTORE_BUCKETS  (XG_NELEM(up_restore_le_ms) + 1)

struct xg_upstream {
    const struct xg_upstream_conf  *conf;
    struct event_base              *base;
    struct evdns_base              *dns;
    const struct xg_proto_module   *proto;     /* NULL: none (unit tests) */
    void                           *proto_p;

    enum xg_upstream_state          state;
    uint64_t                        state_since_ms;
    unsigned                        conn_id;   /* one per attempt */
    char                            log_name[320];

    struct xg_ws                   *ws;        /* the current connection */
    struct xg_ws                   *old_ws;    /* closing, dropped before the next attempt */
    int                             proto_opened;   /* on_open ran on this connection */

    struct xg_reconnect             rc;
    struct event                   *ev_retry;
    struct event                   *ev_deadline;
    struct event                   *ev_stable;
    struct event                   *ev_idle;
    uint64_t                        retry_at_ms;
    uint64_t                        last_data_ms;
    int                             gave_up;

    uint64_t                        connects;
    uint64_t                        disconnects;
    uint64_t                        reconnect_attempts;
    uint64_t                        messages_in;
    uint64_t                        bytes_in;
    uint64_t                        disconnects_by[UP_WHY_N];
    uint64_t                        connect_failures_by[UP_WHY_N];
    uint64_t                        restore_hist[XG_UP_RESTORE_BUCKETS];
    uint64_t                        restore_ms_sum;
    char                            last_error[256];

    int                             stopping;
    xg_upstream_stopped_cb          stopped_cb;
    void                           *stopped_arg;

    struct xg_upstream_set         *set;        /* NULL: in none */
    struct xg_upstream             *next;       /* in the set */
};

/* The upstreams of one running configuration (see xg_upstream.h). */
struct xg_upstream_set {
    struct xg_upstream             *first;      /* in conf order */
    unsigned                        stop_pending;
    xg_upstream_stopped_cb          stop_cb;
    void                           *stop_arg;
};

static const char *const state_names[] = {
    "idle", "connecting", "tls", "handshake", "restoring", "ready", "down",
    "open", "stopping"
};

static void up_connect(struct xg_upstream *up, const char *reason);
static void up_failed(struct xg_upstream *up, enum up_why why,
    const char *reason, int http_status, int retry_after_s);
static void up_url(const struct xg_upstream *up, char *buf, size_t len);

/* "idle", "connecting", ... as shown in logs and /status. */
const char *
xg_upstream_state_name(enum xg_upstream_state s)
{
    if ((size_t) s < XG_NELEM(state_names)) {
        return state_names[s];
    }
    return "unknown";
}

/* OpenSSL's CSPRNG as the policies' random source. */
static uint64_t
up_rand(void *arg)
{
    uint64_t r;

    if (RAND_bytes((unsigned char *) &r, sizeof(r)) != 1) {
        /* Only jitter depends on it: the clock is a usable fallback. */
        r = xg_now_us() * 0x9e3779b97f4a7c15ULL;
    }
    return r;
}

/*
 * Copies SRC into DST (SIZE bytes); when it must cut, it cuts before a
 * UTF-8 character rather than inside one, so a long reason stays valid
 * text for a close frame and for JSON.
 */
static void
up_copy_text(char *dst, size_t size, const char *src)
{
    size_t n = strlen(src);

    if (n >= size) {
        n = size - 1;
        /* Back off over continuation bytes to the character's start. */
        while (n > 0 && ((unsigned char) src[n] & 0xc0) == 0x80) {
            n--;
        }
    }
    memcpy(dst, src, n);
    dst[n] = '\0';
}

static void
up_set_log_name(struct xg_upstream *up)
{
    snprintf(up->log_name, sizeof(up->log_name), "upstream %s#%u",
        up->conf->name, up->conn_id);
}

/*
 * Moves UP to state S and logs it. REASON may be NULL; DELAY_MS >= 0
 * adds ", retry in Xms" (and NOTE, if any, after it).
 */
static void
up_set_state(struct xg_upstream *up, enum xg_upstream_state s,
    const char *reason, int64_t delay_ms, const char *note)
{
    enum xg_upstream_state old = up->state;
    char tail[384] = "";
    size_t n = 0;
    int level;

    if (old == s && delay_ms < 0) {
        return;
    }
    up->state = s;
    up->state_since_ms = xg_now_ms();
    if (reason != NULL) {
        n += (size_t) snprintf(tail + n, sizeof(tail) - n, " (%s)", reason);
    }
    if (delay_ms >= 0 && n < sizeof(tail)) {
        n += (size_t) snprintf(tail + n, sizeof(tail) - n, ", retry in %lldms",
            (long long) delay_ms);
    }
    if (note != NULL && n < sizeof(tail)) {
        snprintf(tail + n, sizeof(tail) - n, " %s", note);
    }
    level = (s == XG_UP_DOWN || s == XG_UP_OPEN) ? XG_LOG_WARN : XG_LOG_INFO;
    xg_log(level, "%s: %s -> %s%s", up->log_name, xg_upstream_state_name(old),
        xg_upstream_state_name(s), tail);
}

static void
timer_arm(struct event *ev, uint64_t ms)
{
    struct timeval tv;

    tv.tv_sec = (time_t) (ms / 1000);
    tv.tv_usec = (suseconds_t) ((ms % 1000) * 1000);
    evtimer_add(ev, &tv);
}

static void
up_cancel_timers(struct xg_upstream *up)
{
    evtimer_del(up->ev_retry);
    evtimer_del(up->ev_deadline);
    evtimer_del(up->ev_stable);
    evtimer_del(up->ev_idle);
}

static int
up_is_open(const struct xg_upstream *up)
{
    return up->state == XG_UP_RESTORING || up->state == XG_UP_READY;
}

/* ---- transport callbacks ----------------------------------------------- */

/*
 * Is WS this upstream's current connection? (The transport never calls
 * back from inside xg_ws_connect(), so up->ws is always set by then.)
 */
static int
up_is_current(struct xg_upstream *up, struct xg_ws *ws)
{
    return ws == up->ws;
}

static void
up_on_state(struct xg_ws *ws, enum xg_ws_state st, void *arg)
{
    struct xg_upstream *up = arg;

    if (!up_is_current(up, ws) || up->stopping) {
        return;
    }
    switch (st) {
    case XG_WS_TLS:
        up_set_state(up, XG_UP_TLS, NULL, -1, NULL);
        break;
    case XG_WS_HANDSHAKE:
        up_set_state(up, XG_UP_HANDSHAKE, NULL, -1, NULL);
        evtimer_del(up->ev_deadline);
        timer_arm(up->ev_deadline,
            up->conf->handshake_timeout_ms + XG_UP_DEADLINE_GRACE_MS);
        break;
    default:
        /* CONNECTING is set by up_connect(); OPEN and DOWN have callbacks. */
        break;
    }
}

static void
up_became_ready(struct xg_upstream *up, const char *reason)
{
    evtimer_del(up->ev_deadline);
    up_set_state(up, XG_UP_READY, reason, -1, NULL);
    xg_reconnect_ready(&up->rc, xg_now_ms());
    timer_arm(up->ev_stable, up->rc.stable_ms);
}

static void
up_on_open(struct xg_ws *ws, void *arg)
{
    struct xg_upstream *up = arg;

    if (!up_is_current(up, ws) || up->stopping) {
        return;
    }
    evtimer_del(up->ev_deadline);
    up->connects++;
    up->last_data_ms = xg_now_ms();
    if (up->conf->idle_timeout_ms > 0) {
        timer_arm(up->ev_idle, up->conf->idle_timeout_ms);
    }
    if (up->proto == NULL || up->proto->on_open == NULL) {
        up_became_ready(up, "open");
        return;
    }
    /* State and deadline first: on_open may call restored() at once. */
    up_set_state(up, XG_UP_RESTORING, "open", -1, NULL);
    timer_arm(up->ev_deadline, up->conf->restore_timeout_ms);
    up->proto_opened = 1;
    up->proto->on_open(up->proto_p);
}

static void
up_on_message(struct xg_ws *ws, int binary, const unsigned char *data,
    size_t len, void *arg)
{
    struct xg_upstream *up = arg;

    if (!up_is_current(up, ws)) {
        return;
    }
    up->messages_in++;
    up->bytes_in += len;
    up->last_data_ms = xg_now_ms();
    if (up->proto != NULL && up->proto->on_message != NULL) {
        up->proto->on_message(up->proto_p, data, len);
        return;
    }
    xg_log_debug("%s: %s message of %zu bytes (no module: discarded)",
        up->log_name, binary ? "binary" : "text", len);
}

/*
 * The class of a connection the transport reports down, from what it
 * says (the reason texts are listed in xg_ws.h: their prefixes are
 * stable, they say which layer failed).
 */
static enum up_why
up_why_transport(const struct xg_ws_down *why)
{
    const char *r = why->reason != NULL ? why->reason : "";

    if (why->http_status != 0) {
        return UP_WHY_HTTP;
    }
    if (why->close_code != 0 && !why->by_us) {
        return UP_WHY_CLOSED;
    }
    if (strstr(r, "timeout") != NULL) {
        return UP_WHY_TIMEOUT;
    }
    if (strncmp(r, "tls:", 4) == 0) {
        return UP_WHY_TLS;
    }
    if (strncmp(r, "dns:", 4) == 0) {
        return UP_WHY_DNS;
    }
    if (strncmp(r, "connect", 7) == 0) {
        return UP_WHY_CONNECT;
    }
    if (strncmp(r, "eof", 3) == 0 || strncmp(r, "read:", 5) == 0
        || strncmp(r, "write:", 6) == 0)
    {
        return UP_WHY_LOST;
    }
    return UP_WHY_ERROR;
}

static void
up_on_down(struct xg_ws *ws, const struct xg_ws_down *why, void *arg)
{
    struct xg_upstream *up = arg;

    if (ws == up->old_ws) {
        /* A connection we gave up on has finished its close. */
        up->old_ws = NULL;
        xg_ws_free(ws);
        return;
    }
    if (!up_is_current(up, ws)) {
        xg_ws_free(ws);
        return;
    }
    up->ws = NULL;
    /* WHY lives as long as WS: use it first, then free (deferred). */
    up_failed(up, up_why_transport(why), why->reason ? why->reason : "down",
        why->http_status, why->retry_after_s);
    xg_ws_free(ws);
}

static const struct xg_ws_cbs up_ws_cbs = {
    up_on_state,
    up_on_open,
    up_on_message,
    up_on_down,
    NULL
};

/* ---- timers ------------------------------------------------------------ */

static void
up_on_retry(evutil_socket_t fd, short what, void *arg)
{
    struct xg_upstream *up = arg;
    const char *why = NULL;

    if (up->stopping) {
        return;
    }
    if (up->state == XG_UP_OPEN) {
        xg_reconnect_trial(&up->rc);
        why = "breaker half-open: one trial";
    }
    if (up->conn_id > 0) {
        up->reconnect_attempts++;
    }
    up_connect(up, why);
}

/*
 * Tears the current connection down for a reason found here (a deadline,
 * the protocol module): an open one is closed politely while the backoff
 * runs and dropped at the latest when the next attempt starts; one still
 * connecting is dropped at once.
 */
static void
up_abort(struct xg_upstream *up, const char *reason)
{
    struct xg_ws *ws = up->ws;
    char why[XG_UP_CLOSE_REASON_MAX + 1];

    if (ws == NULL) {
        return;
    }
    up->ws = NULL;
    if (xg_ws_state(ws) == XG_WS_OPEN) {
        if (up->old_ws != NULL) {
            xg_ws_free(up->old_ws);
        }
        up_copy_text(why, sizeof(why), reason);
        up->old_ws = ws;
        xg_ws_close(ws, 1001, why);
    } else {
        xg_ws_free(ws);
    }
}

static void
up_on_deadline(evutil_socket_t fd, short what, void *arg)
{
    struct xg_upstream *up = arg;
    char reason[96];

    if (up->stopping) {
        /* The close handshake of the stop took too long. */
        xg_log_warn("%s: close not answered within %llums, dropping",
            up->log_name, (unsigned long long) up->conf->close_timeout_ms);
        if (up->ws != NULL) {
            struct xg_ws *ws = up->ws;

            up->ws = NULL;
            xg_ws_free(ws);
        }
        up_failed(up, UP_WHY_STOP, "close timeout", 0, -1);
        return;
    }
    switch (up->state) {
    case XG_UP_CONNECTING:
    case XG_UP_TLS:
        snprintf(reason, sizeof(reason), "connect timeout (%llums)",
            (unsigned long long) up->conf->connect_timeout_ms);
        break;
    case XG_UP_HANDSHAKE:
        snprintf(reason, sizeof(reason), "handshake timeout (%llums)",
            (unsigned long long) up->conf->handshake_timeout_ms);
        break;
    case XG_UP_RESTORING:
        snprintf(reason, sizeof(reason), "restore timeout (%llums)",
            (unsigned long long) up->conf->restore_timeout_ms);
        break;
    default:
        return;
    }
    up_abort(up, reason);
    up_failed(up, UP_WHY_TIMEOUT, reason, 0, -1);
}

static void
up_on_stable(evutil_socket_t fd, short what, void *arg)
{
    struct xg_upstream *up = arg;
    const char *before = xg_reconnect_breaker_name(&up->rc);
    uint64_t now = xg_now_ms(), up_for;

    if (up->state != XG_UP_READY || up->rc.stable_done) {
        return;
    }
    up_for = now - up->rc.ready_at;
    if (up_for < up->rc.stable_ms) {
        /*
         * libevent's coarse monotonic clock can fire a timer a few ms
         * before our precise one says it is due: wait for the rest.
         */
        timer_arm(up->ev_stable, up->rc.stable_ms - up_for);
        return;
    }
    if (xg_reconnect_check_stable(&up->rc, now)) {
        xg_log_info("%s: stable for %llums, backoff reset%s%s", up->log_name,
            (unsigned long long) up->rc.stable_ms,
            strcmp(before, "half-open") == 0 ? ", breaker " : "",
            strcmp(before, "half-open") == 0
                ? xg_reconnect_breaker_name(&up->rc) : "");
    }
}

static void
up_on_idle(evutil_socket_t fd, short what, void *arg)
{
    struct xg_upstream *up = arg;
    uint64_t now = xg_now_ms(), idle = up->conf->idle_timeout_ms;
    char reason[96];

    if (!up_is_open(up)) {
        return;
    }
    /* Re-armed lazily: cheaper than moving a timer on every message. */
    if (now - up->last_data_ms < idle) {
        /* (Also when libevent's coarse clock fired a few ms early.) */
        timer_arm(up->ev_idle, idle - (now - up->last_data_ms));
        return;
    }
    snprintf(reason, sizeof(reason), "idle timeout (no data for %llums)",
        (unsigned long long) (now - up->last_data_ms));
    up_abort(up, reason);
    up_failed(up, UP_WHY_TIMEOUT, reason, 0, -1);
}

/* ---- the state machine ------------------------------------------------- */

static void
up_finish_stop(struct xg_upstream *up)
{
    xg_upstream_stopped_cb cb = up->stopped_cb;

    up_cancel_timers(up);
    if (up->old_ws != NULL) {
        xg_ws_free(up->old_ws);
        up->old_ws = NULL;
    }
    up_set_state(up, XG_UP_IDLE, "stopped", -1, NULL);
    up->stopped_cb = NULL;
    if (cb != NULL) {
        cb(up->stopped_arg);
    }
}

/*
 * The current connection is gone (already freed or handed to old_ws) or
 * an attempt failed, for REASON (of class WHY). Counts it, tells the
 * protocol module, asks the policy, and schedules the next attempt (or
 * the stop's end).
 */
static void
up_failed(struct xg_upstream *up, enum up_why why, const char *reason,
    int http_status, int retry_after_s)
{
    struct xg_reconnect_failure f;
    struct xg_reconnect_decision d;
    struct xg_reconnect_env env;
    char note[128];

    /* REASON may live in the transport only for this call: copy it. */
    if (reason != up->last_error) {
        up_copy_text(up->last_error, sizeof(up->last_error), reason);
    }
    reason = up->last_error;
    evtimer_del(up->ev_deadline);
    evtimer_del(up->ev_stable);
    evtimer_del(up->ev_idle);
    if (up->stopping) {
        why = UP_WHY_STOP;
    }
    if (up_is_open(up) || up->state == XG_UP_STOPPING) {
        up->disconnects++;
        up->disconnects_by[why]++;
    } else {
        up->connect_failures_by[why]++;
    }
    if (up->proto_opened) {
        up->proto_opened = 0;
        if (up->proto->on_down != NULL) {
            up->proto->on_down(up->proto_p, reason);
        }
    }
    if (up->stopping) {
        up_finish_stop(up);
        return;
    }

    f.reason = reason;
    f.http_status = http_status;
    f.retry_after_s = retry_after_s;
    env.now_ms = xg_now_ms();
    env.rand = up_rand;
    env.rand_arg = NULL;
    xg_reconnect_failed(&up->rc, &f, &env, &d);

    note[0] = '\0';
    switch (d.action) {
    case XG_RECONNECT_GIVE_UP:
        up->gave_up = 1;
        up_set_state(up, XG_UP_DOWN, reason, -1, NULL);
        xg_log_error("%s: giving up after %u attempts in a row "
            "(max_attempts); no more reconnects", up->log_name,
            up->rc.max_attempts);
        return;
    case XG_RECONNECT_OPEN:
        snprintf(note, sizeof(note), "(breaker open after %u failures within "
            "%llums%s)", up->rc.breaker.conf.failures,
            (unsigned long long) up->rc.breaker.conf.window_ms,
            d.retry_after ? ", Retry-After" : "");
        up_set_state(up, XG_UP_OPEN, reason, (int64_t) d.delay_ms, note);
        break;
    case XG_RECONNECT_RETRY:
        if (d.retry_after) {
            snprintf(note, sizeof(note), "(Retry-After%s)",
                d.clamped ? ", clamped" : "");
        }
        up_set_state(up, XG_UP_DOWN, reason, (int64_t) d.delay_ms,
            note[0] ? note : NULL);
        break;
    }
    up->retry_at_ms = env.now_ms + d.delay_ms;
    timer_arm(up->ev_retry, d.delay_ms);
}

/*
 * Starts one connection attempt, for REASON (may be NULL): the only place
 * that calls xg_ws_connect.
 */
static void
up_connect(struct xg_upstream *up, const char *reason)
{
    struct xg_ws_opts opts;

    if (up->ws != NULL) {
        /* Cannot happen by construction; never run two attempts. */
        xg_log_error("%s: attempt requested while one is in flight",
            up->log_name);
        return;
    }
    if (up->old_ws != NULL) {
        xg_ws_free(up->old_ws);
        up->old_ws = NULL;
    }
    up->conn_id++;
    up_set_log_name(up);
    up->gave_up = 0;
    up->proto_opened = 0;

    memset(&opts, 0, sizeof(opts));
    opts.max_message = up->conf->max_message;
    opts.ping_ms = up->conf->ping_ms;
    opts.ping_timeout_ms = up->conf->ping_timeout_ms;
    opts.connect_timeout_ms = up->conf->connect_timeout_ms;
    opts.handshake_timeout_ms = up->conf->handshake_timeout_ms;
    opts.close_timeout_ms = up->conf->close_timeout_ms;
    opts.text_only = 0;
    opts.tls_ca = up->conf->tls_ca;
    opts.tls_verify = up->conf->tls_verify;
    opts.headers = up->conf->headers;
    opts.nheaders = up->conf->nheaders;
    opts.log_name = up->log_name;
    /* up_set_state() logs every transition: one line per event. */
    opts.owner_logs = 1;

    up_set_state(up, XG_UP_CONNECTING, reason, -1, NULL);
    timer_arm(up->ev_deadline,
        up->conf->connect_timeout_ms + XG_UP_DEADLINE_GRACE_MS);
    /* Failures found at once come back through on_down, later. */
    up->ws = xg_ws_connect(up->base, up->dns, &up->conf->url, &opts,
        &up_ws_cbs, up);
}

/* ---- public ------------------------------------------------------------ */

/* See xg_upstream.h. */
struct xg_upstream *
xg_upstream_create(struct event_base *base, struct evdns_base *dns,
    const struct xg_upstream_conf *conf)
{
    const char *name = conf->protocol != NULL ? conf->protocol : "raw";
    const struct xg_proto_module *proto = xg_proto_find(name);

    if (proto == NULL) {
        xg_log_error("upstream %s: unknown protocol \"%s\"", conf->name,
            name);
        return NULL;
    }
    return xg_upstream_create_proto(base, dns, conf, proto);
}

/* See xg_upstream.h. */
struct xg_upstream *
xg_upstream_create_proto(struct event_base *base, struct evdns_base *dns,
    const struct xg_upstream_conf *conf, const struct xg_proto_module *proto)
{
    struct xg_upstream *up;
    char desc[256], url[1400];

    up = xg_calloc(1, sizeof(*up));
    up->conf = conf;
    up->base = base;
    up->dns = dns;
    up->state = XG_UP_IDLE;
    up->state_since_ms = xg_now_ms();
    up_set_log_name(up);
    xg_reconnect_init(&up->rc, conf);
    up->ev_retry = evtimer_new(base, up_on_retry, up);
    up->ev_deadline = evtimer_new(base, up_on_deadline, up);
    up->ev_stable = evtimer_new(base, up_on_stable, up);
    up->ev_idle = evtimer_new(base, up_on_idle, up);
    if (up->ev_retry == NULL || up->ev_deadline == NULL
        || up->ev_stable == NULL || up->ev_idle == NULL)
    {
        xg_log_error("upstream %s: cannot create timers", conf->name);
        goto fail;
    }
    up->proto = proto;
    if (up->proto != NULL && up->proto->create != NULL) {
        up->proto_p = up->proto->create(up, conf);
        if (up->proto_p == NULL) {
            xg_log_error("upstream %s: protocol %s refused to start",
                conf->name, up->proto->name);
            xg_upstream_free(up);
            return NULL;
        }
    }
    up->rc.policy->describe(up->rc.pconf, desc, sizeof(desc));
    up_url(up, url, sizeof(url));
    xg_log_info("upstream %s: %s %s, reconnect %s, stable %llums, "
        "breaker %s%s", conf->name, url,
        up->proto ? up->proto->name : "no protocol module",
        desc,
        (unsigned long long) up->rc.stable_ms,
        xg_reconnect_breaker_name(&up->rc),
        conf->max_attempts ? ", max_attempts set" : "");
    return up;

fail:
    xg_upstream_free(up);
    return NULL;
}

/* See xg_upstream.h. */
void
xg_upstream_start(struct xg_upstream *up)
{
    if (up->state != XG_UP_IDLE || up->stopping) {
        return;
    }
    /* Through the timer, so the first attempt runs inside the loop. */
    timer_arm(up->ev_retry, 0);
}

/* See xg_upstream.h. */
void
xg_upstream_stop(struct xg_upstream *up, xg_upstream_stopped_cb cb,
    void *arg)
{
    if (up->stopping) {
        return;
    }
    up->stopping = 1;
    up->stopped_cb = cb;
    up->stopped_arg = arg;
    evtimer_del(up->ev_retry);
    evtimer_del(up->ev_stable);
    evtimer_del(up->ev_idle);
    if (up->ws != NULL && up_is_open(up)
        && xg_ws_state(up->ws) == XG_WS_OPEN)
    {
        if (up->proto_opened && up->proto->on_stop != NULL) {
            up->proto->on_stop(up->proto_p);
        }
        /* on_stop may have failed the connection (it is gone then). */
        if (up->ws != NULL) {
            up_set_state(up, XG_UP_STOPPING, "stop", -1, NULL);
            evtimer_del(up->ev_deadline);
            timer_arm(up->ev_deadline,
                up->conf->close_timeout_ms + XG_UP_DEADLINE_GRACE_MS);
            xg_ws_close(up->ws, 1000, "shutdown");
            return;
        }
        if (up->state == XG_UP_IDLE) {
            return;     /* up_failed() already finished the stop */
        }
    }
    if (up->ws != NULL) {
        struct xg_ws *ws = up->ws;

        up->ws = NULL;
        xg_ws_free(ws);
    }
    up_finish_stop(up);
}

/* See xg_upstream.h. */
void
xg_upstream_free(struct xg_upstream *up)
{
    struct xg_upstream **pp;

    if (up == NULL) {
        return;
    }
    if (up->set != NULL) {
        for (pp = &up->set->first; *pp != NULL; pp = &(*pp)->next) {
            if (*pp == up) {
                *pp = up->next;
                break;
            }
        }
    }
    if (up->ws != NULL) {
        xg_ws_free(up->ws);
    }
    if (up->old_ws != NULL) {
        xg_ws_free(up->old_ws);
    }
    if (up->proto_p != NULL && up->proto->destroy != NULL) {
        up->proto->destroy(up->proto_p);
    }
    if (up->ev_retry != NULL) {
        event_free(up->ev_retry);
    }
    if (up->ev_deadline != NULL) {
        event_free(up->ev_deadline);
    }
    if (up->ev_stable != NULL) {
        event_free(up->ev_stable);
    }
    if (up->ev_idle != NULL) {
        event_free(up->ev_idle);
    }
    xg_reconnect_free(&up->rc);
    free(up);
}

/* UP's current state. */
enum xg_upstream_state
xg_upstream_state(const struct xg_upstream *up)
{
    return up->state;
}

/* The URL without its query, which may carry credentials. */
static void
up_url(const struct xg_upstream *up, char *buf, size_t len)
{
    const struct xg_url *u = &up->conf->url;
    size_t plen = strcspn(u->path, "?");
    int v6 = strchr(u->host, ':') != NULL;

    snprintf(buf, len, "%s://%s%s%s:%u%.*s", u->tls ? "wss" : "ws",
        v6 ? "[" : "", u->host, v6 ? "]" : "", u->port, (int) plen, u->path);
}

/*
 * A JSON string for S, which came from the network (a close reason) and
 * may not be UTF-8: jansson refuses such text, so bytes outside printable
 * ASCII become '?' then.
 */
static json_t *
up_json_text(const char *s)
{
    char buf[sizeof(((struct xg_upstream *) 0)->last_error)];
    json_t *j = json_string(s);
    size_t i;

    if (j != NULL) {
        return j;
    }
    snprintf(buf, sizeof(buf), "%s", s);
    for (i = 0; buf[i] != '\0'; i++) {
        if ((unsigned char) buf[i] < 0x20 || (unsigned char) buf[i] > 0x7e) {
            buf[i] = '?';
        }
    }
    return json_string(buf);
}

/* {"closed": N, "lost": N, ...}: every class, counted by N[class]. */
static json_t *
up_why_json(const uint64_t *n)
{
    json_t *o = json_object();
    size_t i;

    for (i = 0; i < UP_WHY_N; i++) {
        json_object_set_new(o, up_why_names[i], json_integer((json_int_t) n[i]));
    }
    return o;
}

/*
 * The restore duration histogram as Prometheus has it: {"le": [upper
 * bounds in s], "counts": [cumulative counts, the last one for +Inf],
 * "sum": total s, "count": n}.
 */
static json_t *
up_restore_json(const struct xg_upstream *up)
{
    json_t *le = json_array(), *counts = json_array();
    uint64_t cum = 0;
    size_t i;

    for (i = 0; i < XG_UP_RESTORE_BUCKETS; i++) {
        cum += up->restore_hist[i];
        if (i < XG_NELEM(up_restore_le_ms)) {
            json_array_append_new(le,
                json_real((double) up_restore_le_ms[i] / 1000.0));
        }
        json_array_append_new(counts, json_integer((json_int_t) cum));
    }
    return json_pack("{s:o, s:o, s:f, s:I}", "le", le, "counts", counts,
        "sum", (double) up->restore_ms_sum / 1000.0, "count", (json_int_t) cum);
}

/* See xg_upstream.h. */
json_t *
xg_upstream_status(const struct xg_upstream *up)
{
    char url[1400];
    uint64_t now = xg_now_ms();
    json_t *o;

    up_url(up, url, sizeof(url));
    o = json_object();
    json_object_set_new(o, "name", json_string(up->conf->name));
    json_object_set_new(o, "state", json_string(
        xg_upstream_state_name(up->state)));
    json_object_set_new(o, "url", json_string(url));
    json_object_set_new(o, "protocol", json_string(
        up->proto ? up->proto->name : up->conf->protocol));
    json_object_set_new(o, "connection_id", json_integer(up->conn_id));
    json_object_set_new(o, "connects", json_integer((json_int_t) up->connects));
    json_object_set_new(o, "disconnects",
        json_integer((json_int_t) up->disconnects));
    json_object_set_new(o, "reconnect_attempts",
        json_integer((json_int_t) up->reconnect_attempts));
    json_object_set_new(o, "failures_in_row", json_integer(up->rc.st.attempt));
    json_object_set_new(o, "reconnect", json_string(
        xg_reconnect_policy_name(&up->rc)));
    json_object_set_new(o, "breaker", json_string(
        xg_reconnect_breaker_name(&up->rc)));
    json_object_set_new(o, "breaker_trips",
        json_integer((json_int_t) up->rc.breaker.trips));
    json_object_set_new(o, "last_error", up->last_error[0]
        ? up_json_text(up->last_error) : json_null());
    json_object_set_new(o, "state_since_s",
        json_real((double) (now - up->state_since_ms) / 1000.0));
    if ((up->state == XG_UP_DOWN || up->state == XG_UP_OPEN)
        && !up->gave_up)
    {
        json_object_set_new(o, "retry_in_ms", json_integer((json_int_t)
            (up->retry_at_ms > now ? up->retry_at_ms - now : 0)));
    }
    if (up->gave_up) {
        json_object_set_new(o, "gave_up", json_true());
    }
    json_object_set_new(o, "messages_in",
        json_integer((json_int_t) up->messages_in));
    json_object_set_new(o, "bytes_in", json_integer((json_int_t) up->bytes_in));
    json_object_set_new(o, "disconnect_reasons",
        up_why_json(up->disconnects_by));
    json_object_set_new(o, "connect_failure_reasons",
        up_why_json(up->connect_failures_by));
    json_object_set_new(o, "restore_seconds", up_restore_json(up));
    if (up->proto != NULL && up->proto->status != NULL && up->proto_p) {
        up->proto->status(up->proto_p, o);
    }
    return o;
}

/* ---- what the protocol module calls (xg_proto.h) ---------------------- */

/* Counts a restore that took MS in the restore duration histogram. */
static void
up_count_restore(struct xg_upstream *up, uint64_t ms)
{
    size_t i = 0;

    while (i < XG_NELEM(up_restore_le_ms) && ms > up_restore_le_ms[i]) {
        i++;
    }
    up->restore_hist[i]++;
    up->restore_ms_sum += ms;
}

/* Sends one text message on the open connection. */
int
xg_upstream_send(struct xg_upstream *up, const void *data, size_t len)
{
    if (up->ws == NULL || xg_ws_state(up->ws) != XG_WS_OPEN) {
        return XG_ERROR;
    }
    return xg_ws_send_text(up->ws, data, len);
}

/* RESTORING -> READY. Ignored (logged) in any other state. */
void
xg_upstream_restored(struct xg_upstream *up)
{
    if (up->state != XG_UP_RESTORING || up->stopping) {
        xg_log_debug("%s: restored in state %s, ignored", up->log_name,
            xg_upstream_state_name(up->state));
        return;
    }
    up_count_restore(up, xg_now_ms() - up->state_since_ms);
    up_became_ready(up, "restored");
}

/* A protocol-level failure: drop this connection and reconnect. */
void
xg_upstream_fail(struct xg_upstream *up, const char *reason)
{
    char copy[256];

    if (up->ws == NULL || up->stopping) {
        xg_log_debug("%s: fail (%s) with no connection, ignored",
            up->log_name, reason);
        return;
    }
    /* REASON may point into the module's memory, freed by on_down. */
    up_copy_text(copy, sizeof(copy), reason ? reason : "protocol failure");
    up_abort(up, copy);
    up_failed(up, UP_WHY_PROTOCOL, copy, 0, -1);
}

/* 1 when UP is READY (restored and usable), else 0. */
int
xg_upstream_is_ready(const struct xg_upstream *up)
{
    return up->state == XG_UP_READY;
}

/* The conf name of UP (borrowed from its conf). */
const char *
xg_upstream_name(const struct xg_upstream *up)
{
    return up->conf->name;
}

/* The id of the current (or last) connection attempt; 0 before any. */
unsigned
xg_upstream_conn_id(const struct xg_upstream *up)
{
    return up->conn_id;
}

/* The event base UP runs on (for the protocol module's own timers). */
struct event_base *
xg_upstream_base(const struct xg_upstream *up)
{
    return up->base;
}

/* The protocol module instance of UP, or NULL without a module. */
void *
xg_upstream_proto(const struct xg_upstream *up)
{
    return up->proto_p;
}

/* ---- the upstreams of a configuration ---------------------------------- */

/* See xg_upstream.h. */
struct xg_upstream_set *
xg_upstream_set_new(void)
{
    return xg_calloc(1, sizeof(struct xg_upstream_set));
}

/* See xg_upstream.h. */
void
xg_upstream_set_add(struct xg_upstream_set *set, struct xg_upstream *up)
{
    struct xg_upstream **tail;

    for (tail = &set->first; *tail != NULL; tail = &(*tail)->next) {
        /* keep conf order */
    }
    *tail = up;
    up->next = NULL;
    up->set = set;
}

/* See xg_upstream.h. */
struct xg_upstream *
xg_upstream_find(const struct xg_upstream_set *set, const char *name)
{
    struct xg_upstream *up;

    for (up = set->first; up != NULL; up = up->next) {
        if (strcmp(up->conf->name, name) == 0) {
            return up;
        }
    }
    return NULL;
}

/* See xg_upstream.h. */
int
xg_upstream_start_all(struct xg_upstream_set *set, struct event_base *base,
    struct evdns_base *dns, const struct xg_main_conf *mc)
{
    const struct xg_upstream_conf *uc;
    struct xg_upstream *up;

    for (uc = mc->upstreams; uc != NULL; uc = uc->next) {
        up = xg_upstream_create(base, dns, uc);
        if (up == NULL) {
            return XG_ERROR;
        }
        xg_upstream_set_add(set, up);
    }
    for (up = set->first; up != NULL; up = up->next) {
        xg_upstream_start(up);
    }
    return XG_OK;
}

static void
stop_all_one(void *arg)
{
    struct xg_upstream_set *set = arg;

    if (set->stop_pending > 0 && --set->stop_pending == 0
        && set->stop_cb != NULL)
    {
        xg_upstream_stopped_cb cb = set->stop_cb;

        set->stop_cb = NULL;
        cb(set->stop_arg);
    }
}

/* See xg_upstream.h. */
void
xg_upstream_stop_all(struct xg_upstream_set *set, xg_upstream_stopped_cb cb,
    void *arg)
{
    struct xg_upstream *up, *next;

    set->stop_cb = cb;
    set->stop_arg = arg;
    /* One extra count, so CB cannot run before the loop has finished. */
    set->stop_pending = 1;
    for (up = set->first; up != NULL; up = up->next) {
        if (!up->stopping) {
            set->stop_pending++;
        }
    }
    for (up = set->first; up != NULL; up = next) {
        next = up->next;
        if (!up->stopping) {
            xg_upstream_stop(up, stop_all_one, set);
        }
    }
    stop_all_one(set);
}

/* See xg_upstream.h. */
void
xg_upstream_free_all(struct xg_upstream_set *set)
{
    if (set == NULL) {
        return;
    }
    while (set->first != NULL) {
        xg_upstream_free(set->first);
    }
    free(set);
}

/* See xg_upstream.h. */
json_t *
xg_upstream_status_all(const struct xg_upstream_set *set)
{
    struct xg_upstream *up;
    json_t *a = json_array();

    for (up = set->first; up != NULL; up = up->next) {
        json_array_append_new(a, xg_upstream_status(up));
    }
    return a;
}
