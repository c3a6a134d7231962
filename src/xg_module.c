/*
 * xg_module.c: the modules compiled into exgate, in one table each, as in
 * nginx's ngx_modules[]. A module that owns directives is listed in
 * xg_modules[]; a protocol module is listed in xg_venues[] too.
 */
#include "xg_core.h"
#include "xg_conf.h"
#include "xg_venue.h"

#include <string.h>

extern const struct xg_module xg_core_module;
extern const struct xg_module xg_gateway_module;
extern const struct xg_venue xg_venue_deribit;
extern const struct xg_venue xg_venue_edge;
extern const struct xg_venue xg_venue_raw;
extern const struct xg_venue xg_venue_binance;
extern const struct xg_module xg_reconnect_module;
extern const struct xg_module xg_redis_module;

const struct xg_module *const xg_modules[] = {
    &xg_core_module,
    &xg_gateway_module,
    &xg_reconnect_module,
    &xg_redis_module,
    NULL
};

const struct xg_venue *const xg_venues[] = {
    &xg_venue_raw,
    &xg_venue_deribit,
    &xg_venue_edge,
    &xg_venue_binance,
    NULL
};

const struct xg_venue *
xg_venue_find(const char *name)
{
    const struct xg_venue *const *p;

    for (p = xg_venues; *p != NULL; p++) {
        if (strcmp((*p)->name, name) == 0) {
            return *p;
        }
    }
    return NULL;
}
