/*
 * xg_client_int.h: what the listeners (xg_listen.c) need from
 * xg_client.c and nobody else does.
 */
#ifndef XG_CLIENT_INT_H
#define XG_CLIENT_INT_H

#include "xg_core.h"
#include "xg_client.h"

#include <event2/util.h>

struct sockaddr;

/*
 * A client on the accepted socket FD (owned from now on) of listener L:
 * WebSocket (handshake first) or TCP (open at once). The TCP variant
 * returns NULL when it cannot be set up (FD closed, logged).
 */
struct xg_client *xg_client_new_ws(struct xg_listener *l, evutil_socket_t fd,
    const struct sockaddr *sa);
struct xg_client *xg_client_new_tcp(struct xg_listener *l, evutil_socket_t fd,
    const struct sockaddr *sa);
/*
 * Tears C down at once (the module's client_close runs): for the final
 * stop only, never from C's own callbacks.
 */
void xg_client_free(struct xg_client *c, const char *reason);
/* The next client in the listener's list. */
struct xg_client *xg_client_next(const struct xg_client *c);

#endif
