/*
 * xg_reload.h: live reload (SIGHUP). The new conf is loaded beside the
 * running one, compared with it (xg_reload_diff(), pure: no sockets, no
 * loop), and the difference is applied in place (xg_reload_apply()):
 *
 *   upstream unchanged      kept as it is: connection, session,
 *                           subscriptions, clients
 *   limits changed          applied from the next event that uses them
 *                           (timeouts, reconnect, breaker, stale, queue)
 *   url, tls_*, header,     the same, and the connection is replaced by a
 *   auth, heartbeat, ...    make-before-break rotation
 *   protocol changed        restarted (as removed, then added)
 *   a change its venue      restarted the same way (the running instance
 *   cannot follow           is asked before anything changes: struct
 *                           xg_venue's restart_names and reconf_check)
 *   added                   started
 *   removed                 its listeners' clients closed (WebSocket 1001
 *                           "server reloading", TCP closed), then its
 *                           connection (1000)
 *   listener removed        stops accepting, then closes its clients the
 *                           same way
 *   listener changed        path, max_clients, client keys in place;
 *                           kind or upstream: closed and opened anew
 *   error_log               reopened with the new target, level and
 *                           format
 *   admin                   moved, started or stopped as it says
 *
 * A conf that does not load, or whose new parts cannot start (a port in
 * use), changes nothing: the errors are logged and kept for /status
 * (last_reload).
 */
#ifndef XG_RELOAD_H
#define XG_RELOAD_H

#include "xg_core.h"
#include "xg_conf.h"

#include <event2/dns.h>
#include <event2/event.h>
#include <jansson.h>

struct xg_admin;
struct xg_fanout;
struct xg_listen_set;
struct xg_upstream_set;

/* What a reload does to one upstream or listener. */
enum xg_reload_op {
    XG_RELOAD_KEEP = 0,     /* unchanged */
    XG_RELOAD_APPLY,        /* settings changed: applied in place */
    XG_RELOAD_ROTATE,       /* what a connection is made with changed */
    XG_RELOAD_START,        /* added */
    XG_RELOAD_STOP,         /* removed */
    XG_RELOAD_RESTART       /* stopped, then started anew */
};

/* "keep", "apply", "rotate", "start", "stop", "restart". */
const char *xg_reload_op_name(enum xg_reload_op op);

/*
 * One upstream (struct xg_upstream_conf) or listener (struct
 * xg_listen_conf) of the plan: its conf in the running conf (OLD, NULL
 * when added) and in the new one (NEW, NULL when removed), and the names
 * of the directives that changed, comma-separated ("connect_timeout,
 * stale"; "secrets" when only the content of a secret file did).
 */
struct xg_reload_item {
    enum xg_reload_op   op;
    const void         *old;
    const void         *new;
    char                changed[512];
    const char         *why;    /* a RESTART the changes alone do not
                                   explain, said in the log (NULL: none) */
};

struct xg_reload_plan {
    struct xg_reload_item  *ups;        /* the running conf's upstreams in
                                           order, then the added ones */
    size_t                  nups;
    struct xg_reload_item  *listens;    /* the same for listeners */
    size_t                  nlistens;
    char                    main_changed[512];  /* main-context directives,
                                                   listeners and upstreams
                                                   aside */
    int                     error_log;  /* error_log changed */
    int                     admin;      /* admin address changed, added
                                           or removed */
};

/*
 * Compares the running conf OLD with NEW (both borrowed; the plan points
 * into them) and writes what a reload has to do to PLAN (free it with
 * xg_reload_plan_free()). An upstream is the same one when its name is;
 * a listener when its address, kind and upstream are and its upstream is
 * kept (not restarted or removed). Returns the number of items that are
 * not XG_RELOAD_KEEP, plus one for each main-context change.
 */
int xg_reload_diff(const struct xg_main_conf *old,
    const struct xg_main_conf *new, struct xg_reload_plan *plan);
void xg_reload_plan_free(struct xg_reload_plan *plan);

/* ---- the running configuration and its reloads ------------------------ */

struct xg_reload_retiring;

/*
 * What a reload acts on, owned by exgate.c: the loop's parts (borrowed)
 * and the running configuration with its objects, which a reload
 * replaces in place; and what the reloads did, for /status.
 */
struct xg_running {
    struct event_base          *base;
    struct evdns_base          *dns;
    struct xg_fanout           *fo;
    struct xg_main_conf        *conf;
    struct xg_upstream_set     *ups;
    struct xg_listen_set       *ls;
    struct xg_admin            *admin;
    int                         stopping;   /* no reload then */

    /* last_reload and the counts */
    int                         reloaded;   /* at least one reload */
    int                         last_ok;
    char                        last_at[32];/* UTC, as the log writes it */
    json_t                     *last_errors;
    uint64_t                    reloads_ok;
    uint64_t                    reloads_failed;

    /* removed upstreams closing (each holds the conf it ran on) */
    struct xg_reload_retiring  *retiring;
};

/*
 * Starts the admin endpoint of MC (admin_set) for R: bound, its origins
 * allowed, the listeners', the fan-out's and the reloads' status hooks
 * added. Returns
 * it, or NULL (logged) when the address cannot be bound.
 */
struct xg_admin *xg_reload_admin_start(struct xg_running *r,
    const struct xg_main_conf *mc);

/*
 * Loads PATH and applies it to R (see above). Every error is logged,
 * each as "FILE:LINE: message", and kept for /status. Returns XG_OK when
 * the new conf runs, XG_ERROR when the running one was kept.
 */
int xg_reload(struct xg_running *r, const char *path);

/*
 * Applies NEXT (a loaded conf; R takes it over whatever happens) to R,
 * by the plan of xg_reload_diff() in which, besides, an upstream whose
 * running venue cannot follow its new conf in place (reconf_check) is
 * restarted.
 * Writes each error, one line each, to *ERRORS (malloc'd, or NULL when
 * there is none). Returns XG_OK; XG_ERROR with nothing changed; or
 * XG_AGAIN when NEXT runs but a listener that had to be closed and
 * opened anew on its address (its kind or upstream changed) could not
 * be bound again.
 */
int xg_reload_apply(struct xg_running *r, struct xg_main_conf *next,
    char **errors);

/*
 * The /status hook (xg_admin_status_hook(), ARG is R): "last_reload":
 * {"ok", "at" (UTC, "2026-12-03T12:00:00.000Z" as in the log), "errors":
 * ["FILE:LINE: message", ...]}, or null before the first reload, and
 * "reloads": {"ok": N, "error": N}.
 */
void xg_reload_status(json_t *root, void *arg);

/*
 * Frees what R's reloads still hold (removed upstreams still closing,
 * and the confs they run on). Call after the listeners are freed and
 * before the loop's base is.
 */
void xg_reload_free(struct xg_running *r);

#endif
