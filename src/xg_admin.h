/*
 * xg_admin.h: the admin listener (`admin ADDR:PORT;`), an evhttp server
 * on the event loop, serving one running configuration (its upstream
 * set). GET / is the status page (src/xg_status.html, built in),
 * GET /metrics the Prometheus exposition (xg_metrics.h), and GET /status
 * answers JSON:
 *
 *   {"version", "uptime_s", "upstreams": [ xg_upstream_status()... ],
 *    ...fields added by status hooks}
 *
 * POST /upstreams/NAME/rotate starts a make-before-break rotation of the
 * upstream's connection (xg_upstream_rotate_start()): 202 and
 * {"upstream", "rotation", "from", "to"}, 409 and {"upstream", "error"}
 * when it cannot start, 404 for an unknown NAME, 405 (Allow: POST) for
 * another method.
 *
 * A request that changes state is refused with 403 when it carries an
 * Origin header that `admin_origin` does not list (a web page in a
 * local browser can send a cross-site POST to loopback), and every
 * request with a method other than GET and HEAD is logged with its peer
 * address, its Origin and the answer.
 *
 * Other parts (the gateway core: listeners, totals) add their fields
 * through xg_admin_status_hook() without this file knowing them.
 * Unknown paths get 404, methods other than GET and HEAD 405.
 */
#ifndef XG_ADMIN_H
#define XG_ADMIN_H

#include "xg_core.h"
#include "xg_conf.h"

#include <event2/event.h>
#include <jansson.h>

struct xg_admin;
struct xg_upstream_set;

/* Adds fields to the /status ROOT object (which already has upstreams). */
typedef void (*xg_admin_status_cb)(json_t *root, void *arg);

/*
 * Registers CB(root, ARG) to run for every /status of A, in registration
 * order. Returns XG_OK, or XG_ERROR when A's table (16 hooks) is full.
 */
int xg_admin_status_hook(struct xg_admin *a, xg_admin_status_cb cb,
    void *arg);
/* Removes A's hook registered with CB and ARG, if any. */
void xg_admin_status_unhook(struct xg_admin *a, xg_admin_status_cb cb,
    void *arg);

/*
 * Starts serving on ADDR (host and port; port 0 picks a free one, see
 * xg_admin_port()) the status of the upstreams UPS. Borrows BASE and UPS
 * (both must outlive A). Returns NULL, with a log line, when the address
 * cannot be bound.
 */
struct xg_admin *xg_admin_start(struct event_base *base,
    const struct xg_addr *addr, const struct xg_upstream_set *ups);

/*
 * The Origins (N of them, borrowed: they must outlive A) a request that
 * changes state may carry, compared exactly. None until this is called:
 * only requests without an Origin header may change state.
 */
void xg_admin_allow_origins(struct xg_admin *a,
    const struct xg_admin_origin *origins, int n);

/* The port actually bound. */
unsigned xg_admin_port(const struct xg_admin *a);

/* Stops serving and frees A (NULL is fine). */
void xg_admin_free(struct xg_admin *a);

/* A's /status document (new reference), as served. */
json_t *xg_admin_status(const struct xg_admin *a);

/* The status page, generated from src/xg_status.html at build time. */
extern const unsigned char xg_status_html[];
extern const size_t xg_status_html_len;

#endif
