/*
 * xg_proto.h: the interface between an upstream (layer 1: the connection,
 * its state machine and reconnect policy, src/xg_upstream.c) and the
 * protocol module that runs on it (layer 2: auth, heartbeats,
 * subscriptions, request routing; modules/protocol/xg_proto_<venue>.c,
 * modules/venue/xg_venue_<venue>.c).
 *
 * The upstream owns the connection and calls the module on each event.
 * The module never touches sockets or wslay: it sends through
 * xg_upstream_send() and reports with xg_upstream_restored() and
 * xg_upstream_fail().
 */
#ifndef XG_PROTO_H
#define XG_PROTO_H

#include "xg_core.h"
#include "xg_conf.h"

#include <jansson.h>

struct xg_upstream;
struct xg_client;

struct xg_proto_module {
    const char               *name;         /* as in `protocol NAME;` */
    /*
     * Its upstream directives (context XG_CONF_UPSTREAM). They are valid
     * only on an upstream whose `protocol` is this module; their setters
     * get the object create_conf made, never the upstream's conf.
     */
    const struct xg_command  *commands;
    /*
     * Makes the module's per-upstream conf with its defaults and registers
     * its free with xg_conf_cleanup_add(). Called once for each upstream
     * of this protocol, at the end of its block; stored in its
     * proto_conf. Required when commands is not NULL.
     */
    void *(*create_conf)(struct xg_conf *cf);

    /* Per-upstream instance, built from the conf at start-up. */
    void *(*create)(struct xg_upstream *up,
        const struct xg_upstream_conf *conf);
    void  (*destroy)(void *p);

    /*
     * A new connection is open (upstream state RESTORING): replay the
     * session, then call xg_upstream_restored(), or xg_upstream_fail().
     * NULL: the upstream is ready as soon as it opens.
     */
    void  (*on_open)(void *p);
    void  (*on_message)(void *p, const unsigned char *data, size_t len);
    /* The connection is gone; a reconnect will follow (or the stop). */
    void  (*on_down)(void *p, const char *reason);
    /*
     * Orderly stop: the module may send a last message (a logout that
     * does not trigger cancel-on-disconnect) before the close.
     */
    void  (*on_stop)(void *p);
    /* Adds this module's fields to the upstream's /status object. */
    void  (*status)(void *p, json_t *obj);

    /*
     * The gateway side (src/xg_client.c): local clients of a listener on
     * this upstream. NULL when the module serves no clients. client_open
     * returns the module's per-client state CS; client_message gets each
     * complete message; client_close is called exactly once when the
     * client is gone (CS must not be used afterwards).
     */
    void *(*client_open)(void *p, struct xg_client *c);
    void  (*client_message)(void *p, void *cs, const unsigned char *data,
        size_t len);
    void  (*client_close)(void *p, void *cs, const char *reason);
    /*
     * What a TCP client whose line is over client_max_message gets before
     * the close, in the protocol's own words (NULL: nothing).
     */
    const char *client_too_big;

    /*
     * The path a WebSocket listener on this protocol accepts when its
     * `listen` line has no path= (a trailing '*' matches any suffix; a
     * query string is never part of the match). NULL: any path.
     */
    const char               *default_path;
    /*
     * 1 when the module cannot authenticate local clients in band, so
     * that every client of its listeners is trusted: a listener on it
     * must then say client_auth=off (or inherit `client_auth off;`).
     */
    int                       trusts_clients;

    /*
     * Its directives for `exgate -T`, given the object create_conf made
     * (NULL: generic setters only). Never writes a secret's value.
     */
    xg_conf_dump_cb dump;
};

/* The protocol modules compiled in (NULL-terminated). */
extern const struct xg_proto_module *const xg_proto_modules[];
const struct xg_proto_module *xg_proto_find(const char *name);

/* ---- what an upstream offers its protocol module (src/xg_upstream.c) ---- */

/* Sends one text message. XG_ERROR when no connection is open. */
int xg_upstream_send(struct xg_upstream *up, const void *data, size_t len);
/* Restore done: RESTORING -> READY. */
void xg_upstream_restored(struct xg_upstream *up);
/* A protocol-level failure (heartbeat missed, auth refused): reconnect. */
void xg_upstream_fail(struct xg_upstream *up, const char *reason);
int xg_upstream_is_ready(const struct xg_upstream *up);
const char *xg_upstream_name(const struct xg_upstream *up);
unsigned xg_upstream_conn_id(const struct xg_upstream *up);
struct event_base *xg_upstream_base(const struct xg_upstream *up);
void *xg_upstream_proto(const struct xg_upstream *up);

#endif
