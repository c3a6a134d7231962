/*
 * xg_upstream.c: the upstream connection state machine (see
 * xg_upstream.h), the upstream side of xg_venue.h (connections and their
 * make-before-break rotation), and the set of the upstreams of a running
 * configuration. Its /status object is built in xg_upstream_status.c,
 * from the insides both share (xg_upstream_int.h).
 *
 * The rules it keeps (DESIGN.md sections 2 and 4):
 *  - it is the only place that reconnects: the transport reports on_down
 *    once and is freed, and every new attempt starts from one timer;
 *  - at most one attempt at a primary connection is in flight, and the
 *    previous primary is gone (dropped if its close is still running)
 *    before the next one starts;
 *  - beside the primary there is at most one other connection: the one a
 *    rotation opens (ROTATING) or the primary it replaced (RETIRING);
 *    a rotation never starts a second one, and one that fails is tried
 *    again after its own backoff, from a timer;
 *  - every state that waits has a deadline timer, every transition is
 *    logged as "upstream NAME#ID: old -> new (reason), retry in Xms".
 */
#include "xg_core.h"
#include "xg_conf.h"
#include "xg_log.h"
#include "xg_venue.h"
#include "xg_reconnect.h"
#include "xg_upstream.h"
#include "xg_upstream_int.h"
#include "xg_redis.h"
#include "xg_rest.h"
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
 * Bytes one read callback takes from the upstream socket at most: what is
 * there, up to this, goes out in one loop pass (about 850 messages of
 * 300 bytes), so a burst is fanned out in large batches, one send(2) per
 * client for each, while one pass stays short enough for the loop's other
 * work.
 */
#define XG_UP_READ_MAX          (256 * 1024)

/* See xg_upstream_int.h. */
const unsigned xg_upstream_restore_le_ms[XG_UP_RESTORE_LE_N] = {
    5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000
};

/* See xg_upstream_int.h. */
const char *const xg_conn_state_names[] = {
    "connecting", "tls", "handshake", "restoring", "ready", "closing"
};

static const char *const conn_role_names[] = {
    "primary", "rotating", "retiring"
};

static const char *const state_names[] = {
    "idle", "connecting", "tls", "handshake", "restoring", "ready", "down",
    "open", "stopping"
};

static const struct xg_ws_cbs up_ws_cbs;

static void up_connect(struct xg_upstream *up, const char *reason);
static void up_failed(struct xg_upstream *up, struct xg_conn *c,
    enum up_why why, const char *reason, int http_status, int retry_after_s);
static void conn_on_deadline(evutil_socket_t fd, short what, void *arg);
static void conn_on_age(evutil_socket_t fd, short what, void *arg);
static void up_rotate_if_due(struct xg_upstream *up);
static void up_rotate_if_stale(struct xg_upstream *up);
static int up_rotate(struct xg_upstream *up, const char *why, int retry,
    struct xg_rotation *r, char *err, size_t len);

/* "idle", "connecting", ... as shown in logs and /status. */
const char *
xg_upstream_state_name(enum xg_upstream_state s)
{
    if ((size_t) s < XG_NELEM(state_names)) {
        return state_names[s];
    }
    return "unknown";
}

/* See xg_venue.h. */
const char *
xg_conn_role_name(enum xg_conn_role r)
{
    if ((size_t) r < XG_NELEM(conn_role_names)) {
        return conn_role_names[r];
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
    memmove(dst, src, n);
    dst[n] = '\0';
}

static void
up_set_log_name(struct xg_upstream *up)
{
    snprintf(up->log_name, sizeof(up->log_name), "upstream %s#%u",
        up->conf->name, up->primary_id);
}

/* What the primary connection is in, for upstream state S. */
static enum up_conn_state
up_conn_state_of(enum xg_upstream_state s)
{
    switch (s) {
    case XG_UP_TLS:
        return UP_CONN_TLS;
    case XG_UP_HANDSHAKE:
        return UP_CONN_HANDSHAKE;
    case XG_UP_RESTORING:
        return UP_CONN_RESTORING;
    case XG_UP_READY:
        return UP_CONN_READY;
    case XG_UP_STOPPING:
        return UP_CONN_CLOSING;
    default:
        return UP_CONN_CONNECTING;
    }
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
    if (up->primary != NULL) {
        up->primary->state = up_conn_state_of(s);
    }
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
    xg_upstream_log(level, up, "%s -> %s%s", xg_upstream_state_name(old),
        xg_upstream_state_name(s), tail);
}

/*
 * Moves C, the upstream's other connection, to state S and logs it the
 * way up_set_state() does for the primary, with C's own id.
 */
static void
conn_set_state(struct xg_conn *c, enum up_conn_state s, const char *reason)
{
    enum up_conn_state old = c->state;

    if (old == s) {
        return;
    }
    c->state = s;
    xg_conn_log(XG_LOG_INFO, c, "%s -> %s (%s, rotation #%u%s%s)",
        xg_conn_state_names[old], xg_conn_state_names[s],
        xg_conn_role_name(c->role), c->rotation,
        reason != NULL ? ": " : "", reason != NULL ? reason : "");
}

static void
up_cancel_timers(struct xg_upstream *up)
{
    xg_timer_del(up->ev_retry);
    xg_timer_del(up->ev_stable);
    xg_timer_del(up->ev_idle);
    xg_timer_del(up->ev_rotate);
    up->retry_held = 0;
}

static int
up_is_open(const struct xg_upstream *up)
{
    return up->state == XG_UP_RESTORING || up->state == XG_UP_READY;
}

/* ---- connections --------------------------------------------------------- */

/*
 * A new connection of UP in ROLE with the next id, not connecting yet.
 * NULL (logged) when its timers cannot be made.
 */
static struct xg_conn *
conn_new(struct xg_upstream *up, enum xg_conn_role role)
{
    struct xg_conn *c = xg_calloc(1, sizeof(*c));

    c->up = up;
    c->role = role;
    c->id = ++up->last_id;
    c->state = UP_CONN_CONNECTING;
    snprintf(c->log_name, sizeof(c->log_name), "upstream %s#%u",
        up->conf->name, c->id);
    c->ev_deadline = xg_timer_new(up->base, conn_on_deadline, c);
    c->ev_age = xg_timer_new(up->base, conn_on_age, c);
    if (c->ev_deadline == NULL || c->ev_age == NULL) {
        xg_conn_log(XG_LOG_ERROR, c, "cannot create timers");
        if (c->ev_deadline != NULL) {
            xg_timer_free(c->ev_deadline);
        }
        if (c->ev_age != NULL) {
            xg_timer_free(c->ev_age);
        }
        free(c);
        return NULL;
    }
    return c;
}

/* Frees C, detached from its upstream, and drops its socket if any. */
static void
conn_free(struct xg_conn *c)
{
    if (c == NULL) {
        return;
    }
    if (c->ws != NULL) {
        xg_ws_free(c->ws);
    }
    xg_timer_free(c->ev_deadline);
    xg_timer_free(c->ev_age);
    free(c);
}

/*
 * Takes WS, a socket given up on, out of the way: an open one is closed
 * politely with CODE and REASON and parked in SLOT (any socket parked
 * there before is dropped), one not open yet is dropped at once.
 */
static void
up_park(struct xg_upstream *up, int slot, struct xg_ws *ws, int code,
    const char *reason)
{
    char why[XG_UP_CLOSE_REASON_MAX + 1];

    if (ws == NULL) {
        return;
    }
    if (xg_ws_state(ws) != XG_WS_OPEN) {
        xg_ws_free(ws);
        return;
    }
    if (up->parked[slot] != NULL) {
        xg_ws_free(up->parked[slot]);
    }
    up_copy_text(why, sizeof(why), reason);
    up->parked[slot] = ws;
    xg_ws_close(ws, code, why);
}

static void
up_unpark(struct xg_upstream *up, int slot)
{
    if (up->parked[slot] != NULL) {
        xg_ws_free(up->parked[slot]);
        up->parked[slot] = NULL;
    }
}

/* Arms C's max_connection_age timer for what is left of the age. */
static void
conn_arm_age(struct xg_conn *c)
{
    uint64_t age = c->up->conf->max_connection_age_ms, lived;

    xg_timer_del(c->ev_age);
    if (age == 0 || c->opened_ms == 0) {
        return;
    }
    lived = xg_now_ms() - c->opened_ms;
    xg_timer_add_ms(c->ev_age, lived < age ? age - lived : 0);
}

/*
 * Starts C's WebSocket connection: the only place that calls
 * xg_ws_connect. The caller has set C's state and logged it.
 */
static void
conn_connect(struct xg_upstream *up, struct xg_conn *c)
{
    struct xg_ws_opts opts;
    struct xg_log_ctx lctx;

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
    opts.log_name = c->log_name;
    xg_conn_log_ctx(c, &lctx);
    opts.log_ctx = &lctx;
    /* up_set_state() logs every transition: one line per event. */
    opts.owner_logs = 1;
    opts.io = &up->io;
    opts.read_max = XG_UP_READ_MAX;
    c->gen = up->conf_gen;

    xg_timer_add_ms(c->ev_deadline,
        up->conf->connect_timeout_ms + XG_UP_DEADLINE_GRACE_MS);
    /* Failures found at once come back through on_down, later. */
    if (up->proto != NULL && up->proto->connect != NULL) {
        c->ws = up->proto->connect(up->proto_p, c, &opts, &up_ws_cbs, up);
        return;
    }
    c->ws = xg_ws_connect(up->base, up->dns,
        up->url != NULL ? up->url : &up->conf->url, &opts,
        &up_ws_cbs, up);
}

/* ---- the rotation's ends ------------------------------------------------- */

/*
 * A rotating connection will not take over: if the primary went down
 * meanwhile, its reconnect, held for the rotation, starts now (or when
 * the policy's delay is over).
 */
static void
up_release_retry(struct xg_upstream *up, const char *why)
{
    uint64_t now = xg_now_ms();
    uint64_t delay = up->retry_at_ms > now ? up->retry_at_ms - now : 0;

    if (!up->retry_held) {
        return;
    }
    up->retry_held = 0;
    if (up->stopping || up->gave_up) {
        return;
    }
    xg_upstream_log(XG_LOG_INFO, up, "rotation #%u will not take over (%s): "
        "reconnect in %llums", up->rot_n, why, (unsigned long long) delay);
    xg_timer_add_ms(up->ev_retry, delay);
}

/*
 * The rotation C (ROTATING) was opened for ended without a promote, for
 * REASON: counted, and tried again after the rotation backoff when RETRY
 * and the primary it was for still serves; or, when the primary is gone,
 * the held reconnect goes ahead.
 */
static void
up_rotation_failed(struct xg_upstream *up, struct xg_conn *c,
    const char *reason, int retry)
{
    struct xg_reconnect_failure f;
    struct xg_reconnect_decision d;
    struct xg_reconnect_env env;

    if (up->stopping) {
        return;
    }
    up->rotations_failed++;
    up->rot_due_for = 0;
    if (up->primary == NULL) {
        xg_conn_log(XG_LOG_WARN, c, "rotation #%u failed: #%u %s; #%u was "
            "lost meanwhile", c->rotation, c->id, reason,
            up->primary_id);
        up_release_retry(up, reason);
        return;
    }
    if (!retry) {
        xg_conn_log(XG_LOG_WARN, c, "rotation #%u failed: #%u %s; #%u keeps "
            "serving", c->rotation, c->id, reason,
            up->primary->id);
        return;
    }
    f.reason = reason;
    f.http_status = 0;
    f.retry_after_s = -1;
    env.now_ms = xg_now_ms();
    env.rand = up_rand;
    env.rand_arg = NULL;
    xg_reconnect_failed(&up->rot_rc, &f, &env, &d);
    up->rot_retries++;
    if (d.action == XG_RECONNECT_GIVE_UP) {
        xg_conn_log(XG_LOG_ERROR, c, "rotation #%u failed: #%u %s; #%u keeps "
            "serving; giving up rotations after %u failures in a row "
            "(max_attempts)", c->rotation, c->id, reason,
            up->primary->id, up->rot_retries);
        return;
    }
    xg_conn_log(XG_LOG_WARN, c, "rotation #%u failed: #%u %s; #%u keeps "
        "serving, retry in %llums", c->rotation, c->id,
        reason, up->primary->id, (unsigned long long) d.delay_ms);
    up->rot_due_for = up->primary->id;
    up->rot_due_retry = 0;  /* set when the timer fires */
    xg_timer_add_ms(up->ev_rotate, d.delay_ms);
}

/*
 * The other connection is over, for REASON: detached, its socket closed
 * politely (PARK) or dropped, a rotation it was opened for counted as
 * failed unless its retire did it already, the module told (on_down) if
 * it knew it, then freed. A rotation that is due may start after.
 */
static void
up_other_lost(struct xg_upstream *up, const char *reason, int park)
{
    struct xg_conn *c = up->other;
    char copy[256];

    /* REASON may live in the transport or the module: copy it. */
    up_copy_text(copy, sizeof(copy), reason != NULL ? reason : "down");
    up->other = NULL;
    if (park) {
        up_park(up, UP_PARK_OTHER, c->ws, up->stopping ? 1000 : 1001, copy);
    } else {
        xg_ws_free(c->ws);
    }
    c->ws = NULL;
    xg_timer_del(c->ev_deadline);
    if (c->role == XG_CONN_ROTATING && c->state != UP_CONN_CLOSING) {
        up_rotation_failed(up, c, copy, 1);
    } else if (c->role == XG_CONN_RETIRING) {
        xg_conn_log(XG_LOG_INFO, c, "rotation #%u: #%u closed (%s), %llums "
            "after the start", c->rotation, c->id, copy,
            (unsigned long long) (xg_now_ms() - up->rot_started_ms));
    } else {
        xg_conn_log(XG_LOG_INFO, c, "rotation #%u: #%u closed (%s)",
            c->rotation, c->id, copy);
    }
    if (c->proto_opened) {
        c->proto_opened = 0;
        if (up->proto->on_down != NULL) {
            up->proto->on_down(up->proto_p, c, copy);
        }
    }
    conn_free(c);
    up_rotate_if_due(up);
}

/*
 * Starts the orderly close of C, the other connection: close 1000 with
 * WHY, bounded by close_timeout; up_other_lost() follows from the
 * transport (or the deadline).
 */
static void
conn_close(struct xg_upstream *up, struct xg_conn *c, const char *why)
{
    char reason[XG_UP_CLOSE_REASON_MAX + 1];

    up_copy_text(reason, sizeof(reason), why != NULL ? why : "retired");
    conn_set_state(c, UP_CONN_CLOSING, reason);
    xg_timer_del(c->ev_deadline);
    xg_timer_del(c->ev_age);
    xg_timer_add_ms(c->ev_deadline,
        up->conf->close_timeout_ms + XG_UP_DEADLINE_GRACE_MS);
    /* Not open yet: dropped, and on_down follows all the same. */
    xg_ws_close(c->ws, 1000, reason);
}

/* ---- transport callbacks ----------------------------------------------- */

/*
 * Which of UP's connections WS is: the primary, the other one, or NULL
 * (a parked one, or one already detached). The transport never calls
 * back from inside xg_ws_connect(), so c->ws is always set by then.
 */
static struct xg_conn *
up_conn_of(struct xg_upstream *up, struct xg_ws *ws)
{
    if (up->primary != NULL && up->primary->ws == ws) {
        return up->primary;
    }
    if (up->other != NULL && up->other->ws == ws) {
        return up->other;
    }
    return NULL;
}

static void
up_on_state(struct xg_ws *ws, enum xg_ws_state st, void *arg)
{
    struct xg_upstream *up = arg;
    struct xg_conn *c = up_conn_of(up, ws);

    if (c == NULL || up->stopping) {
        return;
    }
    switch (st) {
    case XG_WS_TLS:
        if (c == up->primary) {
            up_set_state(up, XG_UP_TLS, NULL, -1, NULL);
        } else {
            conn_set_state(c, UP_CONN_TLS, NULL);
        }
        break;
    case XG_WS_HANDSHAKE:
        if (c == up->primary) {
            up_set_state(up, XG_UP_HANDSHAKE, NULL, -1, NULL);
        } else {
            conn_set_state(c, UP_CONN_HANDSHAKE, NULL);
        }
        xg_timer_del(c->ev_deadline);
        xg_timer_add_ms(c->ev_deadline,
            up->conf->handshake_timeout_ms + XG_UP_DEADLINE_GRACE_MS);
        break;
    default:
        /*
         * CONNECTING is set when the attempt starts, CLOSING by whoever
         * closes; OPEN and DOWN have callbacks.
         */
        break;
    }
}

static void
up_became_ready(struct xg_upstream *up, const char *reason)
{
    xg_timer_del(up->primary->ev_deadline);
    up_set_state(up, XG_UP_READY, reason, -1, NULL);
    xg_reconnect_ready(&up->rc, xg_now_ms());
    xg_timer_add_ms(up->ev_stable, up->rc.stable_ms);
    up_rotate_if_due(up);
}

/* The rotating connection C is open: the module restores on it. */
static void
up_other_open(struct xg_upstream *up, struct xg_conn *c)
{
    char why[160];

    conn_set_state(c, UP_CONN_RESTORING, "open");
    xg_timer_add_ms(c->ev_deadline, up->conf->restore_timeout_ms);
    if (up->proto == NULL || !up->proto->rotates) {
        snprintf(why, sizeof(why), "rotation not supported by this "
            "protocol yet (%s)", up->proto != NULL ? up->proto->name
            : "no protocol module");
        up_rotation_failed(up, c, why, 0);
        conn_close(up, c, "rotation not supported");
        return;
    }
    if (up->proto->on_open == NULL) {
        /* Nothing to restore: it can take over at once. */
        xg_upstream_promote(up, c);
        return;
    }
    c->proto_opened = 1;
    up->proto->on_open(up->proto_p, c);
}

static void
up_on_open(struct xg_ws *ws, void *arg)
{
    struct xg_upstream *up = arg;
    struct xg_conn *c = up_conn_of(up, ws);

    if (c == NULL || up->stopping) {
        return;
    }
    xg_timer_del(c->ev_deadline);
    up->connects++;
    c->opened_ms = xg_now_ms();
    c->last_data_ms = c->opened_ms;
    if (c != up->primary) {
        up_other_open(up, c);
        return;
    }
    if (up->conf->idle_timeout_ms > 0) {
        xg_timer_add_ms(up->ev_idle, up->conf->idle_timeout_ms);
    }
    conn_arm_age(c);
    if (up->proto == NULL || up->proto->on_open == NULL) {
        up_became_ready(up, "open");
        return;
    }
    /* State and deadline first: on_open may call restored() at once. */
    up_set_state(up, XG_UP_RESTORING, "open", -1, NULL);
    xg_timer_add_ms(c->ev_deadline, up->conf->restore_timeout_ms);
    c->proto_opened = 1;
    up->proto->on_open(up->proto_p, c);
}

static void
up_on_message(struct xg_ws *ws, int binary, const unsigned char *data,
    size_t len, void *arg)
{
    struct xg_upstream *up = arg;
    struct xg_conn *c = up_conn_of(up, ws);

    if (c == NULL) {
        return;
    }
    up->messages_in++;
    up->bytes_in += len;
    c->last_data_ms = xg_ws_rx_ms(ws);
    if (up->proto != NULL && up->proto->on_message != NULL
        && (c == up->primary || c->proto_opened))
    {
        up->proto->on_message(up->proto_p, c, data, len);
        return;
    }
    xg_conn_log(XG_LOG_DEBUG, c, "%s message of %zu bytes (no module: "
        "discarded)", binary ? "binary" : "text", len);
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

/*
 * The primary is over, for REASON (of class WHY): detached, its socket
 * closed politely while the backoff runs (PARK; dropped at the latest
 * when the next attempt starts) or dropped, up_failed(), then freed.
 */
static void
up_primary_lost(struct xg_upstream *up, enum up_why why, const char *reason,
    int http_status, int retry_after_s, int park)
{
    struct xg_conn *c = up->primary;
    struct xg_ws *ws = c->ws;

    up->primary = NULL;
    c->ws = NULL;
    xg_timer_del(c->ev_deadline);
    xg_timer_del(c->ev_age);
    if (park) {
        up_park(up, UP_PARK_PRIMARY, ws, 1001, reason);
        ws = NULL;
    }
    /* REASON may live in WS (the transport's why): free it after. */
    up_failed(up, c, why, reason, http_status, retry_after_s);
    xg_ws_free(ws);
    conn_free(c);
}

static void
up_on_down(struct xg_ws *ws, const struct xg_ws_down *why, void *arg)
{
    struct xg_upstream *up = arg;
    struct xg_conn *c;
    int i;

    for (i = 0; i < UP_PARK_N; i++) {
        if (ws == up->parked[i]) {
            /* A connection we gave up on has finished its close. */
            up->parked[i] = NULL;
            xg_ws_free(ws);
            return;
        }
    }
    c = up_conn_of(up, ws);
    if (c == NULL) {
        xg_ws_free(ws);
        return;
    }
    if (c == up->other) {
        up_other_lost(up, why->reason ? why->reason : "down", 0);
        return;
    }
    up_primary_lost(up, up_why_transport(why),
        why->reason ? why->reason : "down", why->http_status,
        why->retry_after_s, 0);
}

static const struct xg_ws_cbs up_ws_cbs = {
    up_on_state,
    up_on_open,
    up_on_message,
    up_on_down,
    NULL
};

/* ---- timers ------------------------------------------------------------ */

/*
 * 1 when the protocol module's connection budget says WHAT (a new
 * connection) must wait: the retry timer is armed for then, logged once
 * per wait. 0: go ahead (the module counted it).
 */
static int
up_connect_wait(struct xg_upstream *up, const char *what)
{
    uint64_t ms;

    if (up->proto == NULL || up->proto->connect_take == NULL
        || up->proto_p == NULL
        || (ms = up->proto->connect_take(up->proto_p)) == 0)
    {
        up->budget_logged = 0;
        return 0;
    }
    if (!up->budget_logged) {
        up->budget_logged = 1;
        xg_upstream_log(XG_LOG_WARN, up, "%s held for %llu ms: the "
            "protocol's connection budget is spent", what,
            (unsigned long long) ms);
    }
    up->budget_waits++;
    xg_timer_add_ms(up->ev_retry, ms);
    return 1;
}

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
    if (up_connect_wait(up, "connection")) {
        return;
    }
    if (up->primary_id > 0) {
        up->reconnect_attempts++;
    }
    up_connect(up, why);
}

/* The deadline of the primary's state (or of the stop's close). */
static void
up_primary_deadline(struct xg_upstream *up)
{
    char reason[96];

    if (up->stopping) {
        /* The close handshake of the stop took too long. */
        xg_upstream_log(XG_LOG_WARN, up, "close not answered within %llums, "
            "dropping", (unsigned long long) up->conf->close_timeout_ms);
        up_primary_lost(up, UP_WHY_STOP, "close timeout", 0, -1, 0);
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
    up_primary_lost(up, UP_WHY_TIMEOUT, reason, 0, -1, 1);
}

/* The deadline of the other connection's state. */
static void
up_other_deadline(struct xg_upstream *up, struct xg_conn *c)
{
    char reason[96];
    uint64_t ms;
    const char *what;

    switch (c->state) {
    case UP_CONN_CLOSING:
        xg_conn_log(XG_LOG_WARN, c, "close not answered within %llums, "
            "dropping", (unsigned long long) up->conf->close_timeout_ms);
        up_other_lost(up, "close timeout", 0);
        return;
    case UP_CONN_CONNECTING:
    case UP_CONN_TLS:
        what = "connect";
        ms = up->conf->connect_timeout_ms;
        break;
    case UP_CONN_HANDSHAKE:
        what = "handshake";
        ms = up->conf->handshake_timeout_ms;
        break;
    case UP_CONN_RESTORING:
        what = "restore";
        ms = up->conf->restore_timeout_ms;
        break;
    case UP_CONN_READY:
        if (c->role != XG_CONN_RETIRING) {
            return;
        }
        xg_conn_log(XG_LOG_WARN, c, "retiring, not retired by the protocol "
            "module within restore_timeout (%llums): closing it",
            (unsigned long long) up->conf->restore_timeout_ms);
        conn_close(up, c, "retire timeout");
        return;
    default:
        return;
    }
    snprintf(reason, sizeof(reason), "%s timeout (%llums)", what,
        (unsigned long long) ms);
    up_other_lost(up, reason, 1);
}

static void
conn_on_deadline(evutil_socket_t fd, short what, void *arg)
{
    struct xg_conn *c = arg;
    struct xg_upstream *up = c->up;

    if (c == up->primary) {
        up_primary_deadline(up);
    } else if (c == up->other) {
        up_other_deadline(up, c);
    }
}

/* C has been open for max_connection_age: its rotation is due. */
static void
conn_on_age(evutil_socket_t fd, short what, void *arg)
{
    struct xg_conn *c = arg;
    struct xg_upstream *up = c->up;
    uint64_t age = up->conf->max_connection_age_ms;
    uint64_t lived = xg_now_ms() - c->opened_ms;
    char buf[32];

    if (c != up->primary || up->stopping) {
        return;
    }
    if (lived < age) {
        /* libevent's coarse clock fired a few ms early: wait the rest. */
        xg_timer_add_ms(c->ev_age, age - lived);
        return;
    }
    up->rot_due_for = c->id;
    up->rot_due_retry = 0;
    snprintf(up->rot_why, sizeof(up->rot_why), "max_connection_age %s",
        xg_conf_fmt_duration(age, buf, sizeof(buf)));
    up_rotate_if_due(up);
}

/* The backoff after a failed rotation is over: try it again. */
static void
up_on_rotate_retry(evutil_socket_t fd, short what, void *arg)
{
    struct xg_upstream *up = arg;

    if (up->stopping || up->rot_due_for == 0) {
        return;
    }
    if (up->rot_rc.breaker.state == XG_BREAKER_OPEN) {
        xg_reconnect_trial(&up->rot_rc);
    }
    up->rot_due_retry = 1;
    up_rotate_if_due(up);
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
        xg_timer_add_ms(up->ev_stable, up->rc.stable_ms - up_for);
        return;
    }
    if (xg_reconnect_check_stable(&up->rc, now)) {
        xg_upstream_log(XG_LOG_INFO, up, "stable for %llums, backoff reset%s%s",
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
    uint64_t now = xg_now_ms(), idle = up->conf->idle_timeout_ms, last;
    char reason[96];

    if (!up_is_open(up) || up->primary == NULL) {
        return;
    }
    last = up->primary->last_data_ms;
    /* Re-armed lazily: cheaper than moving a timer on every message. */
    if (now - last < idle) {
        /* (Also when libevent's coarse clock fired a few ms early.) */
        xg_timer_add_ms(up->ev_idle, idle - (now - last));
        return;
    }
    snprintf(reason, sizeof(reason), "idle timeout (no data for %llums)",
        (unsigned long long) (now - last));
    up_primary_lost(up, UP_WHY_TIMEOUT, reason, 0, -1, 1);
}

/* ---- the state machine ------------------------------------------------- */

static void
up_finish_stop(struct xg_upstream *up)
{
    xg_upstream_stopped_cb cb = up->stopped_cb;
    int i;

    up_cancel_timers(up);
    if (up->other != NULL) {
        up_other_lost(up, "stop", 1);
    }
    for (i = 0; i < UP_PARK_N; i++) {
        up_unpark(up, i);
    }
    up_set_state(up, XG_UP_IDLE, "stopped", -1, NULL);
    up->stopped_cb = NULL;
    if (cb != NULL) {
        cb(up->stopped_arg);
    }
}

/*
 * The primary connection C is gone (detached: its socket already freed
 * or parked) or its attempt failed, for REASON (of class WHY). Counts it,
 * tells the protocol module, asks the policy, and schedules the next
 * attempt (or the stop's end); while a rotating connection may still
 * take over, the attempt waits for it (see xg_upstream_rotate()).
 */
static void
up_failed(struct xg_upstream *up, struct xg_conn *c, enum up_why why,
    const char *reason, int http_status, int retry_after_s)
{
    struct xg_reconnect_failure f;
    struct xg_reconnect_decision d;
    struct xg_reconnect_env env;
    char note[160];
    int hold;

    /* REASON may live in the transport only for this call: copy it. */
    if (reason != up->last_error) {
        up_copy_text(up->last_error, sizeof(up->last_error), reason);
    }
    reason = up->last_error;
    xg_timer_del(up->ev_stable);
    xg_timer_del(up->ev_idle);
    if (up->stopping) {
        why = UP_WHY_STOP;
    }
    if (up_is_open(up) || up->state == XG_UP_STOPPING) {
        up->disconnects++;
        up->disconnects_by[why]++;
    } else {
        up->connect_failures_by[why]++;
    }
    if (c != NULL && c->proto_opened) {
        c->proto_opened = 0;
        if (up->proto->on_down != NULL) {
            up->proto->on_down(up->proto_p, c, reason);
        }
    }
    if (up->stopping) {
        up_finish_stop(up);
        return;
    }
    if (up->primary != NULL) {
        /* on_down promoted the rotating connection: it has taken over. */
        return;
    }

    f.reason = reason;
    f.http_status = http_status;
    f.retry_after_s = retry_after_s;
    env.now_ms = xg_now_ms();
    env.rand = up_rand;
    env.rand_arg = NULL;
    xg_reconnect_failed(&up->rc, &f, &env, &d);

    hold = up->other != NULL && up->other->role == XG_CONN_ROTATING
        && up->other->state != UP_CONN_CLOSING;
    note[0] = '\0';
    switch (d.action) {
    case XG_RECONNECT_GIVE_UP:
        up->gave_up = 1;
        up->retry_held = 0;
        up_set_state(up, XG_UP_DOWN, reason, -1, NULL);
        xg_upstream_log(XG_LOG_ERROR, up, "giving up after %u attempts in a "
            "row (max_attempts); no more reconnects", up->rc.max_attempts);
        return;
    case XG_RECONNECT_OPEN:
        snprintf(note, sizeof(note), "(breaker open after %u failures within "
            "%llums%s)", up->rc.breaker.conf.failures,
            (unsigned long long) up->rc.breaker.conf.window_ms,
            d.retry_after ? ", Retry-After" : "");
        break;
    case XG_RECONNECT_RETRY:
        if (d.retry_after) {
            snprintf(note, sizeof(note), "(Retry-After%s)",
                d.clamped ? ", clamped" : "");
        }
        break;
    }
    if (hold) {
        size_t n = strlen(note);

        snprintf(note + n, sizeof(note) - n, "%s(unless rotation #%u takes "
            "over: #%u is %s)", n > 0 ? " " : "", up->rot_n, up->other->id,
            xg_conn_state_names[up->other->state]);
    }
    up_set_state(up, d.action == XG_RECONNECT_OPEN ? XG_UP_OPEN : XG_UP_DOWN,
        reason, (int64_t) d.delay_ms, note[0] ? note : NULL);
    up->retry_at_ms = env.now_ms + d.delay_ms;
    if (hold) {
        up->retry_held = 1;
        return;
    }
    xg_timer_add_ms(up->ev_retry, d.delay_ms);
}

/*
 * Starts one attempt at a primary connection, for REASON (may be NULL).
 */
static void
up_connect(struct xg_upstream *up, const char *reason)
{
    struct xg_conn *c;

    if (up->primary != NULL) {
        /* Cannot happen by construction; never run two attempts. */
        xg_upstream_log(XG_LOG_ERROR, up, "attempt requested while one is in "
            "flight");
        return;
    }
    up_unpark(up, UP_PARK_PRIMARY);
    up->gave_up = 0;
    up->retry_held = 0;
    c = conn_new(up, XG_CONN_PRIMARY);
    if (c == NULL) {
        up_failed(up, NULL, UP_WHY_ERROR, "cannot create timers", 0, -1);
        return;
    }
    up->primary = c;
    up->primary_id = c->id;
    up_set_log_name(up);
    up_set_state(up, XG_UP_CONNECTING, reason, -1, NULL);
    conn_connect(up, c);
}

/* ---- public ------------------------------------------------------------ */

/* See xg_upstream.h. */
struct xg_upstream *
xg_upstream_create(struct event_base *base, struct evdns_base *dns,
    const struct xg_upstream_conf *conf)
{
    const char *name = conf->protocol != NULL ? conf->protocol : "raw";
    const struct xg_venue *proto = xg_venue_find(name);

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
    const struct xg_upstream_conf *conf, const struct xg_venue *proto)
{
    struct xg_upstream *up;
    char desc[256], url[1400], age[32];

    up = xg_calloc(1, sizeof(*up));
    up->conf = conf;
    up->name = xg_strdup(conf->name);
    up->base = base;
    up->dns = dns;
    up->state = XG_UP_IDLE;
    up->state_since_ms = xg_now_ms();
    up_set_log_name(up);
    xg_reconnect_init(&up->rc, conf);
    xg_reconnect_init(&up->rot_rc, conf);
    up->ev_retry = xg_timer_new(base, up_on_retry, up);
    up->ev_stable = xg_timer_new(base, up_on_stable, up);
    up->ev_idle = xg_timer_new(base, up_on_idle, up);
    up->ev_rotate = xg_timer_new(base, up_on_rotate_retry, up);
    if (up->ev_retry == NULL || up->ev_stable == NULL || up->ev_idle == NULL
        || up->ev_rotate == NULL)
    {
        xg_upstream_log(XG_LOG_ERROR, up, "cannot create timers");
        goto fail;
    }
    if (conf->rest_url_set) {
        /* before the venue's create(), which may use it */
        up->rest = xg_rest_new(base, dns, conf, up->name);
        if (up->rest == NULL) {
            goto fail;
        }
    }
    if (conf->publish != NULL) {
        up->pub = xg_redis_new(base, up->name, conf);
    }
    up->proto = proto;
    if (up->proto != NULL && up->proto->create != NULL) {
        up->proto_p = up->proto->create(up, conf);
        if (up->proto_p == NULL) {
            xg_upstream_log(XG_LOG_ERROR, up, "protocol %s refused to start",
                up->proto->name);
            xg_upstream_free(up);
            return NULL;
        }
    }
    up->rc.policy->describe(up->rc.pconf, desc, sizeof(desc));
    xg_upstream_url(up, url, sizeof(url));
    xg_upstream_log(XG_LOG_INFO, up, "%s %s, reconnect %s, stable %llums, "
        "breaker %s%s%s%s", url,
        up->proto ? up->proto->name : "no protocol module",
        desc,
        (unsigned long long) up->rc.stable_ms,
        xg_reconnect_breaker_name(&up->rc),
        conf->max_attempts ? ", max_attempts set" : "",
        conf->max_connection_age_ms ? ", max_connection_age " : "",
        conf->max_connection_age_ms ? xg_conf_fmt_duration(
            conf->max_connection_age_ms, age, sizeof(age)) : "");
    if (conf->max_connection_age_ms && (up->proto == NULL
        || !up->proto->rotates))
    {
        xg_upstream_log(XG_LOG_WARN, up, "max_connection_age is set but %s%s "
            "cannot rotate yet: each rotation will close its new connection",
            up->proto ? "protocol " : "no protocol module",
            up->proto ? up->proto->name : "");
    }
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
    xg_timer_add_ms(up->ev_retry, 0);
}

/* See xg_upstream.h. */
void
xg_upstream_stop(struct xg_upstream *up, xg_upstream_stopped_cb cb,
    void *arg)
{
    struct xg_conn *c;

    if (up->stopping) {
        return;
    }
    up->stopping = 1;
    up->stopped_cb = cb;
    up->stopped_arg = arg;
    up_cancel_timers(up);
    c = up->primary;
    if (c != NULL && up_is_open(up) && xg_ws_state(c->ws) == XG_WS_OPEN
        && c->proto_opened && up->proto->on_stop != NULL)
    {
        up->proto->on_stop(up->proto_p);
        if (up->primary == NULL) {
            return;     /* on_stop failed it: up_failed() finished the stop */
        }
    }
    /* The other connection, if any, goes first: only the primary's close
       is waited for. */
    if (up->other != NULL) {
        up_other_lost(up, "stop", 1);
    }
    c = up->primary;
    if (c != NULL && up_is_open(up) && xg_ws_state(c->ws) == XG_WS_OPEN) {
        up_set_state(up, XG_UP_STOPPING, "stop", -1, NULL);
        xg_timer_del(c->ev_deadline);
        xg_timer_del(c->ev_age);
        xg_timer_add_ms(c->ev_deadline,
            up->conf->close_timeout_ms + XG_UP_DEADLINE_GRACE_MS);
        xg_ws_close(c->ws, 1000, "shutdown");
        return;
    }
    if (c != NULL) {
        /* Still connecting: dropped; the module never heard of it. */
        up->primary = NULL;
        conn_free(c);
    }
    up_finish_stop(up);
}

/* See xg_upstream.h. */
void
xg_upstream_free(struct xg_upstream *up)
{
    struct xg_upstream **pp;
    int i;

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
    conn_free(up->primary);
    conn_free(up->other);
    up->primary = up->other = NULL;
    for (i = 0; i < UP_PARK_N; i++) {
        up_unpark(up, i);
    }
    if (up->proto_p != NULL && up->proto->destroy != NULL) {
        up->proto->destroy(up->proto_p);
    }
    xg_rest_free(up->rest);
    xg_redis_free(up->pub);
    if (up->ev_retry != NULL) {
        xg_timer_free(up->ev_retry);
    }
    if (up->ev_stable != NULL) {
        xg_timer_free(up->ev_stable);
    }
    if (up->ev_idle != NULL) {
        xg_timer_free(up->ev_idle);
    }
    if (up->ev_rotate != NULL) {
        xg_timer_free(up->ev_rotate);
    }
    xg_reconnect_free(&up->rc);
    xg_reconnect_free(&up->rot_rc);
    free(up->name);
    free(up);
}

/* UP's current state. */
enum xg_upstream_state
xg_upstream_state(const struct xg_upstream *up)
{
    return up->state;
}

/* ---- what the protocol module calls (xg_venue.h) ---------------------- */

/* Counts a restore that took MS in the restore duration histogram. */
static void
up_count_restore(struct xg_upstream *up, uint64_t ms)
{
    size_t i = 0;

    while (i < XG_UP_RESTORE_LE_N && ms > xg_upstream_restore_le_ms[i]) {
        i++;
    }
    up->restore_hist[i]++;
    up->restore_ms_sum += ms;
}

/* See xg_venue.h. */
int
xg_upstream_send(struct xg_upstream *up, const void *data, size_t len)
{
    if (up->primary == NULL) {
        return XG_ERROR;
    }
    return xg_upstream_send_on(up->primary, data, len);
}

/* See xg_venue.h. */
int
xg_upstream_send_on(struct xg_conn *c, const void *data, size_t len)
{
    if (c->ws == NULL || xg_ws_state(c->ws) != XG_WS_OPEN) {
        return XG_ERROR;
    }
    return xg_ws_send_text(c->ws, data, len);
}

/* RESTORING -> READY. Ignored (logged) in any other state. */
void
xg_upstream_restored(struct xg_upstream *up)
{
    if (up->state != XG_UP_RESTORING || up->stopping) {
        xg_upstream_log(XG_LOG_DEBUG, up, "restored in state %s, ignored",
            xg_upstream_state_name(up->state));
        return;
    }
    up_count_restore(up, xg_now_ms() - up->state_since_ms);
    up_became_ready(up, "restored");
}

/* A protocol-level failure: drop the primary and reconnect. */
void
xg_upstream_fail(struct xg_upstream *up, const char *reason)
{
    char copy[256];

    if (up->primary == NULL || up->stopping) {
        xg_upstream_log(XG_LOG_DEBUG, up, "fail (%s) with no connection, "
            "ignored", reason);
        return;
    }
    /* REASON may point into the module's memory, freed by on_down. */
    up_copy_text(copy, sizeof(copy), reason ? reason : "protocol failure");
    up_primary_lost(up, UP_WHY_PROTOCOL, copy, 0, -1, 1);
}

/*
 * Starts a rotation for WHY (RETRY: the retry of one that failed) if it
 * can; else writes why not to ERR and returns XG_ERROR. See
 * xg_upstream_rotate_start().
 */
static int
up_rotate(struct xg_upstream *up, const char *why, int retry,
    struct xg_rotation *r, char *err, size_t len)
{
    char no[160] = "";
    struct xg_conn *c;

    if (up->stopping) {
        snprintf(no, sizeof(no), "stopping");
    } else if (up->state != XG_UP_READY || up->primary == NULL) {
        snprintf(no, sizeof(no), "not ready (state %s)",
            xg_upstream_state_name(up->state));
    } else if (up->other != NULL && up->other->role == XG_CONN_ROTATING) {
        snprintf(no, sizeof(no), "rotation #%u in progress (#%u -> #%u)",
            up->rot_n, up->primary->id, up->other->id);
    } else if (up->other != NULL) {
        snprintf(no, sizeof(no), "rotation #%u is still retiring #%u",
            up->other->rotation, up->other->id);
    }
    if (no[0] == '\0' && up->proto != NULL && up->proto->connect_take != NULL
        && up->proto_p != NULL)
    {
        uint64_t ms = up->proto->connect_take(up->proto_p);

        if (ms != 0) {
            up->budget_waits++;
            snprintf(no, sizeof(no), "the protocol's connection budget is "
                "spent for %llu ms", (unsigned long long) ms);
        }
    }
    if (no[0] == '\0') {
        up_unpark(up, UP_PARK_OTHER);
        c = conn_new(up, XG_CONN_ROTATING);
        if (c == NULL) {
            snprintf(no, sizeof(no), "cannot create timers");
        }
    }
    if (no[0] != '\0') {
        xg_upstream_log(XG_LOG_WARN, up, "rotation (%s) refused: %s", why,
            no);
        if (err != NULL && len > 0) {
            up_copy_text(err, len, no);
        }
        return XG_ERROR;
    }
    xg_timer_del(up->ev_rotate);
    up->rot_due_for = 0;
    if (!retry) {
        up->rot_retries = 0;
        if (why != up->rot_why) {
            up_copy_text(up->rot_why, sizeof(up->rot_why), why);
        }
    }
    up->rot_n++;
    up->rot_started_ms = xg_now_ms();
    c->rotation = up->rot_n;
    up->primary->rotation = up->rot_n;
    up->other = c;
    if (retry) {
        xg_conn_log(XG_LOG_INFO, c, "rotation #%u started (%s, retry %u): "
            "#%u -> #%u", up->rot_n, up->rot_why,
            up->rot_retries, up->primary->id, c->id);
    } else {
        xg_conn_log(XG_LOG_INFO, c, "rotation #%u started (%s): #%u -> #%u",
            up->rot_n, up->rot_why, up->primary->id, c->id);
    }
    if (r != NULL) {
        r->n = up->rot_n;
        r->from = up->primary->id;
        r->to = c->id;
    }
    conn_connect(up, c);
    return XG_OK;
}

/*
 * A reload changed what a connection is made with since the primary was
 * made: rotate it as soon as the upstream is ready and alone (a rotation
 * already running, or the retry of a failed one, is waited for: it
 * connects with the settings of its own start). A module that cannot
 * rotate gets a reconnect instead, which is not make-before-break: said
 * in the log.
 */
static void
up_rotate_if_stale(struct xg_upstream *up)
{
    if (up->stopping || up->primary == NULL
        || up->primary->gen == up->conf_gen || up->state != XG_UP_READY
        || up->other != NULL || up->rot_due_for != 0
        || xg_timer_pending(up->ev_rotate))
    {
        return;
    }
    if (up->proto == NULL || !up->proto->rotates) {
        xg_upstream_log(XG_LOG_WARN, up, "%s: %s%s cannot rotate: "
            "reconnecting to apply it", up->conf_why,
            up->proto ? "protocol " : "no protocol module",
            up->proto ? up->proto->name : "");
        xg_upstream_fail(up, up->conf_why);
        return;
    }
    up_rotate(up, up->conf_why, 0, NULL, NULL, 0);
}

/*
 * Starts the rotation that is due for the current primary (its age, or
 * the retry of a failed one) when it can start; else it stays due until
 * the upstream is ready and alone again (this is called then).
 */
static void
up_rotate_if_due(struct xg_upstream *up)
{
    if (up->rot_due_for == 0 || up->stopping) {
        up_rotate_if_stale(up);
        return;
    }
    if (up->primary == NULL || up->primary->id != up->rot_due_for) {
        /* A new primary since: it is young, and no rotation is owed. */
        up->rot_due_for = 0;
        up_rotate_if_stale(up);
        return;
    }
    if (up->state != XG_UP_READY || up->other != NULL) {
        return;
    }
    if (!up->rot_due_retry && xg_timer_pending(up->ev_rotate)) {
        return;     /* a failure's backoff runs: its timer will call */
    }
    up_rotate(up, up->rot_why, up->rot_due_retry, NULL, NULL, 0);
}

/* See xg_upstream.h. */
int
xg_upstream_rotate_start(struct xg_upstream *up, const char *why,
    struct xg_rotation *r, char *err, size_t len)
{
    return up_rotate(up, why != NULL ? why : "asked", 0, r, err, len);
}

/* See xg_venue.h. */
int
xg_upstream_rotate(struct xg_upstream *up, const char *why)
{
    return xg_upstream_rotate_start(up, why, NULL, NULL, 0);
}

/* See xg_venue.h. */
void
xg_upstream_promote(struct xg_upstream *up, struct xg_conn *c)
{
    struct xg_conn *old = up->primary;
    uint64_t now = xg_now_ms();
    char took[64];

    if (up->stopping || c == NULL || c != up->other
        || c->role != XG_CONN_ROTATING || c->state != UP_CONN_RESTORING)
    {
        xg_upstream_log(XG_LOG_ERROR, up, "promote of #%u ignored: not an "
            "open rotating connection", c != NULL ? c->id : 0);
        return;
    }
    xg_timer_del(c->ev_deadline);
    up_count_restore(up, now - c->opened_ms);
    up->rotations++;
    up->rot_retries = 0;
    up->rot_due_for = 0;
    xg_reconnect_ready(&up->rot_rc, now);

    c->role = XG_CONN_PRIMARY;
    c->state = UP_CONN_READY;
    up->primary = c;
    up->primary_id = c->id;
    up->other = NULL;
    up_set_log_name(up);
    if (old != NULL) {
        old->role = XG_CONN_RETIRING;
        xg_timer_del(old->ev_age);
        /* The module retires it; if it never does, the deadline will. */
        xg_timer_del(old->ev_deadline);
        xg_timer_add_ms(old->ev_deadline, up->conf->restore_timeout_ms);
        up->other = old;
        xg_conn_log(XG_LOG_INFO, c, "rotation #%u done in %llums: #%u "
            "primary, #%u retiring", c->rotation,
            (unsigned long long) (now - up->rot_started_ms), c->id, old->id);
    } else {
        xg_conn_log(XG_LOG_INFO, c, "rotation #%u done in %llums: #%u "
            "primary (the old primary was lost)", c->rotation,
            (unsigned long long) (now - up->rot_started_ms), c->id);
    }
    conn_arm_age(c);
    if (up->conf->idle_timeout_ms > 0) {
        xg_timer_del(up->ev_idle);
        xg_timer_add_ms(up->ev_idle, up->conf->idle_timeout_ms);
    }
    if (up->state != XG_UP_READY) {
        /* The primary went down meanwhile: this one takes over. */
        xg_timer_del(up->ev_retry);
        up->retry_held = 0;
        up->gave_up = 0;
        snprintf(took, sizeof(took), "rotation #%u took over", c->rotation);
        up_became_ready(up, took);
    }
}

/* See xg_venue.h. */
void
xg_upstream_retire(struct xg_upstream *up, struct xg_conn *c,
    const char *why)
{
    if (c == NULL || c != up->other || c->state == UP_CONN_CLOSING) {
        xg_upstream_log(XG_LOG_ERROR, up, "retire of #%u ignored: %s",
            c != NULL ? c->id : 0, c != NULL && c == up->primary
            ? "it is the primary" : "not a live rotating or retiring "
            "connection");
        return;
    }
    if (c->role == XG_CONN_ROTATING) {
        up_rotation_failed(up, c, why != NULL ? why : "retired", 1);
    }
    conn_close(up, c, why);
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
    return up->name;
}

/* See xg_venue.h. */
unsigned
xg_upstream_conn_id(const struct xg_upstream *up)
{
    return up->primary_id;
}

/* The event base UP runs on (for the protocol module's own timers). */
struct event_base *
xg_upstream_base(const struct xg_upstream *up)
{
    return up->base;
}

/* The protocol module instance of UP, or NULL without a module. */
const struct xg_upstream_conf *
xg_upstream_conf_of(const struct xg_upstream *up)
{
    return up->conf;
}

/* See xg_venue.h. */
void *
xg_upstream_proto(const struct xg_upstream *up)
{
    return up->proto_p;
}

/* See xg_venue.h. */
unsigned
xg_conn_id(const struct xg_conn *c)
{
    return c->id;
}

/* See xg_venue.h. */
void
xg_upstream_log_ctx(const struct xg_upstream *up, struct xg_log_ctx *ctx)
{
    memset(ctx, 0, sizeof(*ctx));
    if (up != NULL) {
        ctx->upstream = up->conf->name;
        ctx->conn = up->primary_id;
    }
}

/* See xg_venue.h. */
void
xg_conn_log_ctx(const struct xg_conn *c, struct xg_log_ctx *ctx)
{
    memset(ctx, 0, sizeof(*ctx));
    if (c != NULL) {
        ctx->upstream = c->up->conf->name;
        ctx->conn = c->id;
    }
}

/* See xg_venue.h. */
void
xg_upstream_log(int level, const struct xg_upstream *up, const char *fmt, ...)
{
    struct xg_log_ctx ctx;
    va_list ap;

    if (level > xg_log_level) {
        return;
    }
    xg_upstream_log_ctx(up, &ctx);
    va_start(ap, fmt);
    xg_log_atv(level, &ctx, fmt, ap);
    va_end(ap);
}

/* See xg_venue.h. */
void
xg_conn_log(int level, const struct xg_conn *c, const char *fmt, ...)
{
    struct xg_log_ctx ctx;
    va_list ap;

    if (level > xg_log_level) {
        return;
    }
    xg_conn_log_ctx(c, &ctx);
    va_start(ap, fmt);
    xg_log_atv(level, &ctx, fmt, ap);
    va_end(ap);
}

/* See xg_venue.h. */
enum xg_conn_role
xg_conn_role(const struct xg_conn *c)
{
    return c->role;
}

/* See xg_venue.h. */
uint64_t
xg_conn_rx_ms(const struct xg_conn *c)
{
    return c != NULL ? c->last_data_ms : xg_now_ms();
}

/* See xg_venue.h. */
struct xg_upstream *
xg_conn_upstream(const struct xg_conn *c)
{
    return c->up;
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
xg_upstream_reconf_check(const struct xg_upstream *up,
    const struct xg_upstream_conf *conf)
{
    if (up->proto != NULL && up->proto->create != NULL
        && up->proto->reconf == NULL)
    {
        return XG_ERROR;
    }
    if (up->proto_p != NULL && up->proto->reconf_check != NULL
        && up->proto->reconf_check(up->proto_p, conf) != XG_OK)
    {
        return XG_ERROR;
    }
    return XG_OK;
}

/* See xg_upstream.h. */
int
xg_upstream_reconf(struct xg_upstream *up,
    const struct xg_upstream_conf *conf, const char *reconnect_why)
{
    if (xg_upstream_reconf_check(up, conf) != XG_OK) {
        return XG_ERROR;
    }
    if (up->proto_p != NULL && up->proto->reconf != NULL) {
        up->proto->reconf(up->proto_p, conf);
    }
    up->conf = conf;
    xg_reconnect_reconf(&up->rc, conf);
    xg_reconnect_reconf(&up->rot_rc, conf);
    if (up->rest != NULL) {
        /* without a rest_url now, its GETs fail until one comes back */
        xg_rest_reconf(up->rest, conf);
    } else if (conf->rest_url_set) {
        up->rest = xg_rest_new(up->base, up->dns, conf, up->name);
    }
    if (up->pub != NULL) {
        xg_redis_reconf(up->pub, conf);
    } else if (conf->publish != NULL) {
        up->pub = xg_redis_new(up->base, up->name, conf);
    }
    if (reconnect_why != NULL) {
        up->conf_gen++;
        up_copy_text(up->conf_why, sizeof(up->conf_why), reconnect_why);
        up_rotate_if_stale(up);
    }
    return XG_OK;
}

/* See xg_rest.h. */
struct xg_rest *
xg_upstream_rest(const struct xg_upstream *up)
{
    return up->rest != NULL && up->conf->rest_url_set ? up->rest : NULL;
}

/* See xg_redis.h. */
struct xg_redis *
xg_upstream_publisher(const struct xg_upstream *up)
{
    return up != NULL && up->pub != NULL && up->conf->publish != NULL
        ? up->pub : NULL;
}

/* See xg_upstream.h. */
void
xg_upstream_set_remove(struct xg_upstream *up)
{
    struct xg_upstream **pp;

    if (up->set == NULL) {
        return;
    }
    for (pp = &up->set->first; *pp != NULL; pp = &(*pp)->next) {
        if (*pp == up) {
            *pp = up->next;
            break;
        }
    }
    up->set = NULL;
    up->next = NULL;
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

void
xg_upstream_set_url(struct xg_upstream *up, const struct xg_url *url)
{
    up->url = url;
}

struct evdns_base *
xg_upstream_dns(const struct xg_upstream *up)
{
    return up->dns;
}
