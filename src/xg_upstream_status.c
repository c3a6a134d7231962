/*
 * xg_upstream_status.c: an upstream's /status object (see
 * xg_upstream_status() in xg_upstream.h), read from the insides that
 * src/xg_upstream.c keeps.
 */
#include "xg_core.h"
#include "xg_conf.h"
#include "xg_venue.h"
#include "xg_reconnect.h"
#include "xg_upstream.h"
#include "xg_upstream_int.h"
#include "xg_redis.h"
#include "xg_rest.h"

#include <stdio.h>
#include <string.h>

#include <jansson.h>

/* The names of enum up_why, in its order, as /status and /metrics have them. */
static const char *const up_why_names[UP_WHY_N] = {
    "closed", "lost", "timeout", "connect", "dns", "tls", "http",
    "protocol", "stop", "error"
};

/* See xg_upstream_int.h. */
void
xg_upstream_url(const struct xg_upstream *up, char *buf, size_t len)
{
    const struct xg_url *u = up->url != NULL ? up->url : &up->conf->url;
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
        if (i < XG_UP_RESTORE_LE_N) {
            json_array_append_new(le,
                json_real((double) xg_upstream_restore_le_ms[i] / 1000.0));
        }
        json_array_append_new(counts, json_integer((json_int_t) cum));
    }
    return json_pack("{s:o, s:o, s:f, s:I}", "le", le, "counts", counts,
        "sum", (double) up->restore_ms_sum / 1000.0, "count", (json_int_t) cum);
}

/* {id, role, state, age_s} of C. */
static json_t *
up_conn_json(const struct xg_conn *c, uint64_t now)
{
    return json_pack("{s:I, s:s, s:s, s:f}", "id", (json_int_t) c->id,
        "role", xg_conn_role_name(c->role),
        "state", xg_conn_state_names[c->state],
        "age_s", c->opened_ms != 0
            ? (double) (now - c->opened_ms) / 1000.0 : 0.0);
}

/* See xg_upstream.h. */
json_t *
xg_upstream_status(const struct xg_upstream *up)
{
    char url[1400];
    uint64_t now = xg_now_ms();
    json_t *o, *conns;

    xg_upstream_url(up, url, sizeof(url));
    o = json_object();
    json_object_set_new(o, "name", json_string(up->conf->name));
    json_object_set_new(o, "state", json_string(
        xg_upstream_state_name(up->state)));
    json_object_set_new(o, "url", json_string(url));
    json_object_set_new(o, "protocol", json_string(
        up->proto ? up->proto->name : up->conf->protocol));
    json_object_set_new(o, "connection_id", json_integer(up->primary_id));
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
    /* socket reads, for the messages one read carries */
    json_object_set_new(o, "reads", json_integer((json_int_t) up->io.reads));
    json_object_set_new(o, "read_bytes",
        json_integer((json_int_t) up->io.read_bytes));
    json_object_set_new(o, "disconnect_reasons",
        up_why_json(up->disconnects_by));
    json_object_set_new(o, "connect_failure_reasons",
        up_why_json(up->connect_failures_by));
    json_object_set_new(o, "restore_seconds", up_restore_json(up));
    json_object_set_new(o, "rotations",
        json_integer((json_int_t) up->rotations));
    json_object_set_new(o, "rotations_failed",
        json_integer((json_int_t) up->rotations_failed));
    json_object_set_new(o, "connect_budget_waits",
        json_integer((json_int_t) up->budget_waits));
    conns = json_array();
    if (up->primary != NULL) {
        json_array_append_new(conns, up_conn_json(up->primary, now));
    }
    if (up->other != NULL) {
        json_array_append_new(conns, up_conn_json(up->other, now));
    }
    json_object_set_new(o, "connections", conns);
    if (xg_upstream_rest(up) != NULL) {
        xg_rest_status(up->rest, o);
    }
    xg_redis_status(xg_upstream_publisher(up), o);
    if (up->proto != NULL && up->proto->status != NULL && up->proto_p) {
        up->proto->status(up->proto_p, o);
    }
    return o;
}
