/*
 * xg_listen.h: the local listeners (`listen ADDR:PORT websocket|tcp|http
 * upstream=NAME [path=P] [max_clients=N];`; http is the REST front of
 * src/xg_rest.h) and the gateway core's
 * main-context directives (module xg_gateway_module).
 */
#ifndef XG_LISTEN_H
#define XG_LISTEN_H

#include "xg_core.h"
#include "xg_conf.h"
#include "xg_timer.h"

#include <event2/event.h>
#include <jansson.h>

struct xg_client;
struct xg_fanout;
struct xg_upstream;
struct xg_upstream_set;
struct xg_venue;
struct evconnlistener;

/*
 * One open listener (owned by its set; clients point back to it). FO is
 * the fan-out of BASE's loop (borrowed; never NULL).
 */
struct xg_listener {
    const struct xg_listen_conf  *lc;
    const struct xg_gateway_conf *gc;
    struct event_base            *base;
    struct xg_fanout             *fo;
    struct evconnlistener        *evl;         /* http: the front's */
    struct xg_rest_front         *front;       /* http: the REST front */
    struct xg_timer              *ev_resume;   /* after EMFILE */
    struct xg_upstream           *up;
    const struct xg_venue *pm;
    void                         *pp;          /* the module instance */
    unsigned                      nclients;
    uint64_t                      messages_out;   /* to its clients */
    uint64_t                      slow_consumer_closes;
    struct xg_client             *clients;
    struct xg_gateway_conf       *gc_own;      /* with per-listener keys */
    char                          addr[300];
    /* closed by a reload (xg_listen_close()): freed with its last client */
    struct xg_listen_set         *set;
    struct event                 *ev_reap;
    struct xg_main_conf          *conf_ref;    /* the conf LC is in */
    void                        (*closed_cb)(void *arg);
    void                         *closed_arg;
    struct xg_listener           *next;
};

/*
 * The gateway's keys on a `listen` line (called by the core parser for a
 * key it does not know): `client_credentials=ID:SECRET` (repeatable,
 * SECRET is env:NAME or file:PATH; replaces the top-level list for this
 * listener) and `client_auth=on|off`. Returns XG_OK, XG_ERROR (reported),
 * or XG_AGAIN when ARG is not one of them.
 */
int xg_listen_conf_key(struct xg_conf *cf, const struct xg_conf_stmt *st,
    struct xg_listen_conf *lc, const char *arg);

/*
 * Writes the gateway's keys of LC's `listen` line (client_auth=,
 * client_credentials=ID:SOURCE) as words of the line D is writing, for
 * `exgate -T`; a secret only by its source.
 */
void xg_listen_conf_dump(struct xg_conf_dump *d,
    const struct xg_listen_conf *lc);

/* Called by xg_client.c when C is gone (C is freed right after). */
void xg_listen_client_gone(struct xg_listener *l, struct xg_client *c);

extern const struct xg_module xg_gateway_module;

/*
 * Raises RLIMIT_NOFILE to its hard limit (logged). Call once at start-up,
 * before the listeners open.
 */
void xg_listen_raise_nofile(void);

/*
 * What opening the listener of LC (in MC) needs from the conf alone,
 * checked as xg_listen_start_all() checks it before binding: its upstream
 * (resolved, lc->upstream) speaks a protocol that serves local clients,
 * with client_auth off when that protocol cannot authenticate them, and
 * its host is a numeric address. Returns XG_OK, or XG_ERROR with the
 * reason start-up would log written into ERR. Binds nothing: a port in
 * use is only found at start.
 */
int xg_listen_check(const struct xg_main_conf *mc,
    const struct xg_listen_conf *lc, char *err, size_t errlen);

/*
 * The listeners of one running configuration and their clients. Owned
 * by whoever runs the configuration (exgate.c), like its upstream set.
 */
struct xg_listen_set;

/*
 * Opens every listener of MC on BASE, each on its upstream in UPS (which
 * must exist already), fanning out through FO (the loop's, borrowed).
 * Returns the set, or NULL after logging (a port in use; what
 * xg_listen_check() finds is refused by the conf check before this) with
 * nothing left open.
 */
struct xg_listen_set *xg_listen_start_all(struct event_base *base,
    struct xg_fanout *fo, const struct xg_main_conf *mc,
    const struct xg_upstream_set *ups);

/* Closes every listener of LS and every client (orderly stop). */
void xg_listen_stop_all(struct xg_listen_set *ls);

/*
 * Frees every listener of LS and tears every client down at once, then
 * LS (NULL is fine); call before the upstreams are freed (their modules
 * see each client leave) and before the fan-out.
 */
void xg_listen_free_all(struct xg_listen_set *ls);

/* ---- a reload (src/xg_reload.c) ---- */

/*
 * Opens the listener of LC (in MC, borrowed) in LS, on its upstream in
 * UPS, as xg_listen_start_all() does for each. XG_ERROR (logged) with
 * nothing open when it cannot bind.
 */
int xg_listen_open(struct xg_listen_set *ls, struct event_base *base,
    struct xg_fanout *fo, const struct xg_main_conf *mc,
    const struct xg_upstream_set *ups, const struct xg_listen_conf *lc);

/* LS's first open listener (then l->next), or NULL. */
struct xg_listener *xg_listen_first(const struct xg_listen_set *ls);

/*
 * L runs on LC of MC from now on (borrowed; the same address, kind and
 * upstream): path, max_clients, sndbuf and the gateway settings (client
 * auth and credentials, limits) hold from the next client or the next
 * event of a client that uses them. Its clients are not touched.
 */
void xg_listen_reconf(struct xg_listener *l, const struct xg_main_conf *mc,
    const struct xg_listen_conf *lc);

/*
 * Closes L, a listener of LS that a reload removed: it stops accepting
 * at once (its port is free when this returns), every client is closed
 * with CODE and REASON (WebSocket 1001 "server reloading"; TCP: closed),
 * and L is freed when the last one is gone; then CB(ARG) runs (CB may be
 * NULL), from the loop. Takes a reference to MC, the conf L runs on, and
 * drops it then.
 */
void xg_listen_close(struct xg_listen_set *ls, struct xg_listener *l,
    int code, const char *reason, struct xg_main_conf *mc,
    void (*cb)(void *arg), void *arg);

/*
 * Tears down at once the clients still closing on LS's closed listeners
 * whose upstream is UP, which is about to be freed; their CBs will not
 * run.
 */
void xg_listen_forget_upstream(struct xg_listen_set *ls,
    const struct xg_upstream *up);

/*
 * Adds "listeners" (address, kind, upstream, clients, messages_out,
 * slow_consumer_closes) of the set ARG and the totals messages_out,
 * slow_consumer_closes, client_errors to the /status object OBJ (an
 * xg_admin status hook).
 */
void xg_listen_status(json_t *obj, void *arg);

#endif
