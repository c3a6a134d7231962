/*
 * xg_rtls.h: rediss:// for hiredis 0.14, which has no TLS: a tunnel made
 * for one connection attempt (src/xg_rtls.c). hiredis connects to its
 * unix socket (redisAsyncConnectUnix(xg_rtls_path())); the bytes go to
 * HOST:PORT over TLS, the chain checked against TLS_CA (NULL: the system
 * store) and the host name or IP checked, unless TLS_VERIFY is 0.
 * Either end failing closes the other: hiredis reads its end of file,
 * and xg_rtls_why() says what failed ("tls: certificate verify failed:
 * ...").
 */
#ifndef XG_RTLS_H
#define XG_RTLS_H

#include <stddef.h>
#include <stdint.h>

struct event_base;
struct xg_rtls;

/*
 * A tunnel connecting to HOST:PORT now; NULL with ERR filled on failure.
 * ON_UP(ARG) is called once, from the loop, when the TLS handshake and
 * the checks are done: hiredis' own connect (to the unix socket) says
 * nothing about the server, so its owner waits for this too. ON_UP may
 * free the tunnel.
 */
struct xg_rtls *xg_rtls_new(struct event_base *base, const char *host,
    uint16_t port, const char *tls_ca, int tls_verify,
    void (*on_up)(void *arg), void *arg, char *err, size_t errlen);
/* 1 once the server's side is up (ON_UP was called). */
int xg_rtls_up(const struct xg_rtls *t);
/* The unix socket hiredis connects to (gone once it did). */
const char *xg_rtls_path(const struct xg_rtls *t);
/* Why the tunnel ended, or NULL while it runs. */
const char *xg_rtls_why(const struct xg_rtls *t);
/* Closes both ends; removes the socket file and its directory. */
void xg_rtls_free(struct xg_rtls *t);

#endif
