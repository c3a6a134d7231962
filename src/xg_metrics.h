/*
 * xg_metrics.h: GET /metrics on the admin listener: the Prometheus text
 * exposition (format 0.0.4) of the /status document and of the process.
 *
 * Every metric is one row of a table in xg_metrics.c that names the
 * /status key it reads (an upstream's, a listener's, the document's or
 * the process's), so a part can change how it counts without this file
 * knowing, as long as its /status key keeps its meaning. A key a part
 * does not report (a raw upstream has no channels) gives no sample.
 */
#ifndef XG_METRICS_H
#define XG_METRICS_H

#include "xg_core.h"

#include <event2/buffer.h>
#include <jansson.h>

/* The Content-Type of the exposition. */
#define XG_METRICS_CONTENT_TYPE "text/plain; version=0.0.4; charset=utf-8"

/*
 * Appends to OUT the exposition of STATUS (a /status document, as
 * xg_admin_status() makes it) and PROCESS (xg_metrics_process(), or NULL
 * for none); both borrowed. Only numbers, upstream names, listener
 * addresses and the fixed words of the table go out: never a URL, a
 * header, or anything else that could carry a secret.
 */
void xg_metrics_render(struct evbuffer *out, const json_t *status,
    const json_t *process);

/*
 * The process's own figures, read from /proc/self (new reference):
 * cpu_seconds, resident_bytes, virtual_bytes, open_fds, max_fds,
 * start_time_seconds (Unix time), and "build" (version, libevent,
 * openssl). A figure that cannot be read is left out (and logged at
 * debug level).
 */
json_t *xg_metrics_process(void);

#endif
