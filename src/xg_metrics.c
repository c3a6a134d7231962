/*
 * xg_metrics.c: the Prometheus exposition of /status (see xg_metrics.h).
 *
 * The table below is the whole list of metrics: its name, type and help,
 * where its value comes from (the scope: each upstream, each listener,
 * the document, the process; and the key in that scope's object), and
 * how the value becomes samples (the kind). Names follow Prometheus'
 * naming guide: exgate_ prefix, base units (seconds, bytes), _total on
 * counters; the process's figures have the standard process_ names that
 * every client library exports, so the usual dashboards find them.
 */
#include "xg_core.h"
#include "xg_log.h"
#include "xg_metrics.h"
#include "xg_reconnect.h"
#include "xg_upstream.h"

#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#include <event2/event.h>
#include <openssl/crypto.h>

enum m_scope {
    M_UPSTREAM,     /* each of "upstreams", labelled upstream="NAME" */
    M_LISTENER,     /* each of "listeners", labelled listener="ADDR" */
    M_DOCUMENT,     /* the /status document itself */
    M_FANOUT,       /* the document's "fanout" object */
    M_PROCESS       /* xg_metrics_process() */
};

enum m_kind {
    M_VALUE,        /* the number at KEY (times SCALE); LABEL="LVALUE"
                       when LABEL is set */
    M_IS,           /* 1 when the string at KEY is LVALUE, else 0 */
    M_ENUM,         /* one sample per NAMES(i): LABEL="NAMES(i)", 1 for the
                       string at KEY, 0 for the others */
    M_MAP,          /* one sample per member of the object at KEY:
                       LABEL="MEMBER", its number */
    M_HISTOGRAM,    /* the object at KEY: {le: [..], counts: [cumulative,
                       +Inf last], sum, count} */
    M_INFO          /* 1, labelled with the strings INFO names in the
                       object at KEY (NULL: the scope's object) */
};

struct m_metric {
    const char         *name;
    const char         *type;       /* NULL: as the row above (same name) */
    const char         *help;       /* NULL: as the row above */
    enum m_scope        scope;
    enum m_kind         kind;
    const char         *key;
    const char         *label;
    const char         *lvalue;
    double              scale;      /* M_VALUE: 0 means 1 */
    const char       *(*names)(unsigned i);     /* M_ENUM: NULL ends */
    const char *const  *info;       /* M_INFO: NULL ends */
};

static const char *m_up_state_name(unsigned i);
static const char *m_breaker_name(unsigned i);

static const char *const m_upstream_info[] = { "protocol", "reconnect", NULL };
static const char *const m_listener_info[] = { "kind", "upstream", NULL };
static const char *const m_build_info[] = { "version", "libevent", "openssl",
    NULL };

#define UP      M_UPSTREAM
#define LI      M_LISTENER
#define CTR     "counter"
#define GAUGE   "gauge"

/* A number from an upstream's /status object, as a counter or a gauge. */
#define UP_VALUE(name, type, key, help) \
    { name, type, help, UP, M_VALUE, key, NULL, NULL, 0, NULL, NULL }
/* A counter from the document's "fanout" object. */
#define FO_VALUE(name, key, help) \
    { name, CTR, help, M_FANOUT, M_VALUE, key, NULL, NULL, 0, NULL, NULL }
/* One outcome of exgate_upstream_requests_total. */
#define UP_OUTCOME(key, outcome, help) \
    { "exgate_upstream_requests_total", CTR, help, UP, M_VALUE, key, \
      "outcome", outcome, 0, NULL, NULL }

static const struct m_metric m_table[] = {
    /* ---- upstream: connection ---- */
    { "exgate_upstream_up", GAUGE, "1 when the upstream is ready "
      "(connected and its session restored), else 0.",
      UP, M_IS, "state", NULL, "ready", 0, NULL, NULL },
    { "exgate_upstream_state", GAUGE, "1 for the state the upstream is in, "
      "0 for the others.",
      UP, M_ENUM, "state", "state", NULL, 0, m_up_state_name, NULL },
    UP_VALUE("exgate_upstream_state_seconds", GAUGE, "state_since_s",
        "Seconds since the upstream entered its current state."),
    UP_VALUE("exgate_upstream_connection_id", GAUGE, "connection_id",
        "The id of the upstream's current (or last) connection attempt."),
    { "exgate_upstream_info", GAUGE, "The upstream's protocol module and "
      "reconnect policy, as labels; always 1.",
      UP, M_INFO, NULL, NULL, NULL, 0, NULL, m_upstream_info },
    UP_VALUE("exgate_upstream_connects_total", CTR, "connects",
        "Connections that opened (WebSocket handshake done)."),
    { "exgate_upstream_disconnects_total", CTR, "Open connections that "
      "ended, by reason: closed, lost, timeout, protocol, stop, error, ...",
      UP, M_MAP, "disconnect_reasons", "reason", NULL, 0, NULL, NULL },
    { "exgate_upstream_connect_failures_total", CTR, "Connection attempts "
      "that failed before opening, by reason: connect, dns, tls, http, "
      "timeout, ...",
      UP, M_MAP, "connect_failure_reasons", "reason", NULL, 0, NULL, NULL },
    UP_VALUE("exgate_upstream_reconnect_attempts_total", CTR,
        "reconnect_attempts", "Connection attempts after the first one."),
    UP_VALUE("exgate_upstream_consecutive_failures", GAUGE,
        "failures_in_row", "Failures since the last stable connection."),
    { "exgate_upstream_breaker_state", GAUGE, "1 for the circuit breaker's "
      "state (off: none configured), 0 for the others.",
      UP, M_ENUM, "breaker", "state", NULL, 0, m_breaker_name, NULL },
    UP_VALUE("exgate_upstream_breaker_trips_total", CTR, "breaker_trips",
        "Times the circuit breaker opened."),
    UP_VALUE("exgate_upstream_rotations_total", CTR, "rotations",
        "Make-before-break rotations done (the new connection promoted)."),
    UP_VALUE("exgate_upstream_rotations_failed_total", CTR,
        "rotations_failed", "Rotations that ended without a promote."),

    /* ---- upstream: session restore ---- */
    UP_VALUE("exgate_upstream_restores_total", CTR, "restores",
        "Sessions restored on a new connection (auth, heartbeat, "
        "subscriptions)."),
    { "exgate_upstream_restore_duration_seconds", "histogram", "Time from "
      "a connection's open to its session being restored.",
      UP, M_HISTOGRAM, "restore_seconds", NULL, NULL, 0, NULL, NULL },
    { "exgate_upstream_last_restore_duration_seconds", GAUGE, "How long "
      "the last restore took.",
      UP, M_VALUE, "last_restore_ms", NULL, NULL, 0.001, NULL, NULL },

    /* ---- upstream: traffic, channels, clients ---- */
    UP_VALUE("exgate_upstream_messages_in_total", CTR, "messages_in",
        "Messages received from the exchange."),
    UP_VALUE("exgate_upstream_reads_total", CTR, "reads",
        "Socket reads of the upstream's connections (what one read "
        "carries is what one loop pass fans out)."),
    UP_VALUE("exgate_upstream_read_bytes_total", CTR, "read_bytes",
        "Bytes the upstream's socket reads took, frame headers and TLS "
        "records included."),
    UP_VALUE("exgate_upstream_bytes_in_total", CTR, "bytes_in",
        "Bytes of message payload received from the exchange."),
    UP_VALUE("exgate_upstream_channels", GAUGE, "channels",
        "Channels subscribed (or being subscribed) upstream."),
    UP_VALUE("exgate_upstream_unconfirmed_channels", GAUGE,
        "unconfirmed_count", "Channels restored but not yet confirmed by "
        "the exchange (retried)."),
    UP_VALUE("exgate_upstream_clients", GAUGE, "clients",
        "Local clients of the upstream."),

    /* ---- upstream: requests ---- */
    UP_VALUE("exgate_upstream_requests_in_flight", GAUGE, "pending_requests",
        "Requests sent to the exchange and not answered yet."),
    UP_VALUE("exgate_upstream_requests_queued", GAUGE, "queued_requests",
        "Requests waiting for the upstream to be ready."),
    UP_OUTCOME("requests_answered", "answered", "Clients' requests "
        "forwarded to the exchange, by outcome: answered, timed_out "
        "(request_timeout), outcome_unknown (connection lost with the "
        "request in flight), rejected (refused by exgate: queue full, "
        "queue_timeout, client_rate)."),
    UP_OUTCOME("requests_timed_out", "timed_out", NULL),
    UP_OUTCOME("requests_outcome_unknown", "outcome_unknown", NULL),
    UP_OUTCOME("requests_rejected", "rejected", NULL),
    UP_VALUE("exgate_upstream_requests_waited_total", CTR, "budget.waited",
        "Requests that waited for the exchange's request budget (the "
        "gateway's mirror of its credits) before they were sent."),
    { "exgate_upstream_budget_level", GAUGE, "What each pool of the "
      "request budget holds now, in the exchange's units (Deribit: "
      "credits; matching: requests), by pool.",
      UP, M_MAP, "budget.levels", "pool", NULL, 0, NULL, NULL },

    /* ---- upstream: continuity ---- */
    UP_VALUE("exgate_upstream_book_gaps_total", CTR, "book_gaps",
        "Order book chain breaks detected."),
    UP_VALUE("exgate_upstream_book_bridges_total", CTR, "book_resyncs",
        "Bridging book changes computed (after a restore or a gap)."),
    UP_VALUE("exgate_upstream_book_errors_total", CTR, "book_errors",
        "Malformed book messages."),
    UP_VALUE("exgate_upstream_backfills_total", CTR, "backfills",
        "Gap fetches answered: trades backfills and orders reconciles."),
    UP_VALUE("exgate_upstream_unrepaired_gaps_total", CTR, "unrepaired_gaps",
        "Channel gaps that could not be repaired."),
    UP_VALUE("exgate_upstream_gap_notices_total", CTR, "gap_notices",
        "exgate/gap notices sent to clients."),
    UP_VALUE("exgate_upstream_order_outcome_lookups_total", CTR,
        "order_outcome_lookups", "Order requests whose answer was lost "
        "with the connection, looked up after the restore."),
    UP_VALUE("exgate_upstream_order_outcome_pending", GAUGE,
        "order_outcome_pending", "Lost order answers still being looked "
        "up."),
    { "exgate_upstream_order_outcomes_total", CTR, "Lost order answers "
      "resolved, by outcome (exgate/order_outcome).",
      UP, M_MAP, "order_outcomes", "outcome", NULL, 0, NULL, NULL },
    UP_VALUE("exgate_upstream_stale_resubscribes_total", CTR,
        "stale_resubscribes", "Channels resubscribed after going silent "
        "for their stale bound."),
    UP_VALUE("exgate_upstream_resubscribe_retries_total", CTR,
        "resubscribe_retries", "Subscribes sent again for channels the "
        "exchange did not confirm."),
    UP_VALUE("exgate_upstream_fetch_retries_total", CTR, "fetch_retries",
        "Gap fetches sent again after a refusal for now or a timeout."),
    UP_VALUE("exgate_upstream_orders_reconciles_total", CTR,
        "orders_reconciles", "Orders channels reconciled after an outage."),
    UP_VALUE("exgate_upstream_orders_reconciled_total", CTR,
        "orders_reconciled", "Order states delivered by reconciles."),
    UP_VALUE("exgate_upstream_currency_trades_backfilled_total", CTR,
        "currency_trades_backfilled", "Trades delivered by currency trades "
        "backfills."),
    { "exgate_upstream_rotation_switches_total", CTR, "Channels switched "
      "to a rotation's new connection, by how: in_line (where its stream "
      "lined up), quiet (nothing to line up), outage (continuity as after "
      "an outage).",
      UP, M_VALUE, "rotation_switches_in_line", "how", "in_line", 0, NULL,
      NULL },
    { "exgate_upstream_rotation_switches_total", CTR, NULL,
      UP, M_VALUE, "rotation_switches_quiet", "how", "quiet", 0, NULL,
      NULL },
    { "exgate_upstream_rotation_switches_total", CTR, NULL,
      UP, M_VALUE, "rotation_switches_forced", "how", "outage", 0, NULL,
      NULL },

    /* ---- upstream: its REST client (src/xg_rest.h) ---- */
    { "exgate_rest_requests_total", CTR, "GETs of the upstream's REST "
      "client, by class: the answer's status class (2xx ...), error (no "
      "answer: connect, tls, timeout, too big), backoff (refused at once "
      "while backing off after a 429 or 418).",
      UP, M_MAP, "rest.requests", "class", NULL, 0, NULL, NULL },
    UP_VALUE("exgate_rest_backoff_total", CTR, "rest.backoffs",
        "429 and 418 answers that made the REST client back off."),
    UP_VALUE("exgate_rest_used_weight", GAUGE, "rest.used_weight",
        "The exchange's last X-MBX-USED-WEIGHT-1M."),

    /* ---- upstream: its publisher into Redis (src/xg_redis.h) ---- */
    { "exgate_publish_connected", GAUGE, "1 when the upstream's publish "
      "connection to Redis is up (and authenticated), else 0.",
      UP, M_IS, "publish.state", NULL, "connected", 0, NULL, NULL },
    UP_VALUE("exgate_publish_entries_total", CTR, "publish.published",
        "Stream entries Redis accepted (XADD answered with an id)."),
    UP_VALUE("exgate_publish_bytes_total", CTR, "publish.bytes",
        "Notification bytes in the entries Redis accepted."),
    UP_VALUE("exgate_publish_snapshots_total", CTR, "publish.snapshots",
        "Book snapshots Redis accepted beside the streams (HSET "
        "PREFIX:UPSTREAM:CHANNEL:snap), about one a second per book "
        "channel, and one with each snapshot entry."),
    UP_VALUE("exgate_publish_bells_total", CTR, "publish.bells",
        "Bells Redis accepted (XADD PREFIX:UPSTREAM:bell): one per loop "
        "pass that wrote entries, naming their channels for edges."),
    UP_VALUE("exgate_publish_dropped_total", CTR, "publish.dropped",
        "Notifications not written: Redis down, connecting, or too slow "
        "(the in-flight bound); their sequence numbers are spent."),
    UP_VALUE("exgate_publish_lost_total", CTR, "publish.lost",
        "Entries sent but unanswered when the connection went down (they "
        "may or may not be in the stream)."),
    UP_VALUE("exgate_publish_errors_total", CTR, "publish.errors",
        "Error answers from Redis (XADD refused, AUTH failed)."),
    UP_VALUE("exgate_publish_reconnects_total", CTR, "publish.reconnects",
        "Connection attempts to Redis after the first one."),
    UP_VALUE("exgate_publish_in_flight", GAUGE, "publish.in_flight",
        "Entries sent to Redis and not yet answered."),
    { "exgate_publish_requests_total", CTR, "Requests edges put on the "
      "upstream's request stream, by result: served (run as a local bot's), "
      "refused (malformed, a local method, over a bound: never run), "
      "stale (older than request_timeout: never run).",
      UP, M_VALUE, "publish.requests.served", "result", "served", 0, NULL,
      NULL },
    { "exgate_publish_requests_total", NULL, NULL, UP, M_VALUE,
      "publish.requests.refused", "result", "refused", 0, NULL, NULL },
    { "exgate_publish_requests_total", NULL, NULL, UP, M_VALUE,
      "publish.requests.stale", "result", "stale", 0, NULL, NULL },
    UP_VALUE("exgate_publish_requests_in_flight", GAUGE,
        "publish.requests.in_flight",
        "Edges' requests run and not yet answered."),
    UP_VALUE("exgate_publish_requests_malformed_total", CTR,
        "publish.requests.malformed",
        "Of the refused requests, those that could not be read (a field "
        "missing, a bad edge name, rid or ts, a body that is not a "
        "request)."),
    UP_VALUE("exgate_publish_requests_edges", GAUGE,
        "publish.requests.edges",
        "Edges the core holds a client for (at most 256)."),
    { "exgate_publish_requests_answers_total", CTR, "Answers to edges' "
      "requests, by result: written (sent on the publish connection to "
      "the edge's answer stream), lost (never written: over the 1024 "
      "held, held longer than request_timeout, or held when a reload "
      "removed publish).",
      UP, M_VALUE, "publish.requests.answers", "result", "written", 0,
      NULL, NULL },
    { "exgate_publish_requests_answers_total", NULL, NULL, UP, M_VALUE,
      "publish.requests.answers_lost", "result", "lost", 0, NULL, NULL },
    UP_VALUE("exgate_publish_requests_answers_held", GAUGE,
        "publish.requests.answers_held",
        "Answers held while the publish connection cannot take them (at "
        "most 1024, each for request_timeout)."),
    UP_VALUE("exgate_publish_requests_notices_dropped_total", CTR,
        "publish.requests.notices_dropped",
        "Notifications to an edge's client (exgate/order_outcome) not "
        "written: the wire has no place for them."),
    UP_VALUE("exgate_publish_requests_waits_total", CTR,
        "publish.requests.waits",
        "Reads of the request stream put off while the publish connection "
        "was down."),
    { "exgate_publish_requests_reader_connected", GAUGE, "1 when the "
      "connection that reads the request stream is up (and "
      "authenticated), else 0.",
      UP, M_IS, "publish.requests.state", NULL, "connected", 0, NULL,
      NULL },
    UP_VALUE("exgate_publish_requests_reader_connects_total", CTR,
        "publish.requests.connects",
        "Connections the request stream's reader made."),
    UP_VALUE("exgate_publish_requests_reader_errors_total", CTR,
        "publish.requests.errors",
        "Error answers to the reader's commands (XREAD, XREVRANGE, AUTH)."),

    /* ---- upstream: an edge reading a core's Redis (protocol edge) ---- */
    { "exgate_edge_connected", GAUGE, "1 when both of the edge's Redis "
      "connections (commands, reads) are up, else 0.",
      UP, M_IS, "edge.state", NULL, "connected", 0, NULL, NULL },
    UP_VALUE("exgate_edge_entries_total", CTR, "edge.entries",
        "Stream entries delivered to the edge's venue."),
    UP_VALUE("exgate_edge_bytes_total", CTR, "edge.bytes",
        "Their data bytes."),
    { "exgate_edge_lag_seconds", GAUGE, "Age of the last entry delivered "
      "(the core's clock against the edge's).",
      UP, M_VALUE, "edge.lag_ms", NULL, NULL, 0.001, NULL, NULL },
    UP_VALUE("exgate_edge_lag_entries", GAUGE, "edge.lag_entries",
        "Entries the edge is behind the end of its most behind stream "
        "(polled every 2 s)."),
    UP_VALUE("exgate_edge_gaps_total", CTR, "edge.gaps",
        "Holes in a stream (entries the core dropped, or trimmed before "
        "the edge read them)."),
    UP_VALUE("exgate_edge_bells_total", CTR, "edge.bells",
        "Bells read: each names channels the core wrote, which the edge "
        "then reads."),
    UP_VALUE("exgate_edge_bell_gaps_total", CTR, "edge.bell_gaps",
        "Holes in the bell (trimmed, or not written by the core): each "
        "makes the edge read all its channels once."),
    UP_VALUE("exgate_edge_entries_carried_total", CTR,
        "edge.entries_carried",
        "Entries delivered from the bell that carried them (a loop pass "
        "of the core with few and small entries), without reading their "
        "streams."),
    UP_VALUE("exgate_edge_all_reads_total", CTR, "edge.all_reads",
        "Reads of every channel the edge holds (at a connect, a hole in "
        "the bell, a bell saying all, a second without a bell)."),
    UP_VALUE("exgate_edge_snapshots_total", CTR, "edge.snapshots",
        "Books started from the core's snapshot."),
    UP_VALUE("exgate_edge_links_total", CTR, "edge.links",
        "Links to the core made (one, plus one per core restart)."),
    UP_VALUE("exgate_edge_epoch_changes_total", CTR, "edge.epoch_changes",
        "Core restarts seen (a new epoch)."),
    UP_VALUE("exgate_edge_requests_total", CTR, "edge.requests",
        "Requests sent to the core."),
    UP_VALUE("exgate_edge_answers_total", CTR, "edge.answers",
        "Answers from the core handed to the venue."),
    UP_VALUE("exgate_edge_requests_lost_total", CTR, "edge.requests_lost",
        "Orders written to Redis whose write was not acknowledged before "
        "the connection went (13028)."),
    UP_VALUE("exgate_edge_requests_expired_total", CTR,
        "edge.requests_expired",
        "Requests that could not be written within queue_timeout."),
    UP_VALUE("exgate_edge_in_flight", GAUGE, "edge.in_flight",
        "Requests sent to the core and not answered."),

    /* ---- listeners ---- */
    { "exgate_listener_info", GAUGE, "The listener's kind and upstream, as "
      "labels; always 1.",
      LI, M_INFO, NULL, NULL, NULL, 0, NULL, m_listener_info },
    { "exgate_listener_clients", GAUGE, "Clients connected.",
      LI, M_VALUE, "clients", NULL, NULL, 0, NULL, NULL },
    { "exgate_listener_messages_out_total", CTR, "Messages written to the "
      "listener's clients.",
      LI, M_VALUE, "messages_out", NULL, NULL, 0, NULL, NULL },
    { "exgate_listener_slow_consumer_closes_total", CTR, "Clients closed "
      "for not reading fast enough (over the output limits).",
      LI, M_VALUE, "slow_consumer_closes", NULL, NULL, 0, NULL, NULL },

    /* ---- the whole gateway ---- */
    { "exgate_client_errors_total", CTR, "Malformed or over-limit client "
      "input.",
      M_DOCUMENT, M_VALUE, "client_errors", NULL, NULL, 0, NULL, NULL },
    { "exgate_reloads_total", CTR, "Configuration reloads (SIGHUP), by "
      "result: ok (the new conf runs), error (the running conf was kept, "
      "or a listener could not be opened again).",
      M_DOCUMENT, M_MAP, "reloads", "result", NULL, 0, NULL, NULL },

    /* ---- the fan-out to the clients ---- */
    FO_VALUE("exgate_fanout_batches_total", "batches", "Batches: the "
        "notifications held and sent together in one loop pass."),
    FO_VALUE("exgate_fanout_batch_messages_total", "batch_messages",
        "Notifications in those batches."),
    { "exgate_fanout_batches_by_messages_total", CTR, "Batches by the "
      "messages they held (1, 2-3, 4-7, ..., 2048+).",
      M_FANOUT, M_MAP, "batches_by_messages", "messages", NULL, 0, NULL,
      NULL },
    FO_VALUE("exgate_fanout_sends_total", "sends", "Socket writes to "
        "clients that took bytes, first tries and writes of queued output "
        "alike."),
    FO_VALUE("exgate_fanout_send_bytes_total", "send_bytes", "Bytes those "
        "writes took."),
    FO_VALUE("exgate_fanout_send_messages_total", "send_messages",
        "Messages those writes carried (queued output: its bytes over the "
        "mean message size)."),
    { "exgate_fanout_sends_by_messages_total", CTR, "Socket writes to "
      "clients by the messages they carried (1, 2-3, 4-7, ..., 2048+).",
      M_FANOUT, M_MAP, "sends_by_messages", "messages", NULL, 0, NULL,
      NULL },
    FO_VALUE("exgate_fanout_would_block_total", "would_block", "First "
        "tries that found a client's socket full."),
    FO_VALUE("exgate_fanout_partial_sends_total", "partial", "First tries "
        "a client's socket took only part of."),
    FO_VALUE("exgate_fanout_queued_writes_total", "queued_writes",
        "Writes of a client's queued output, each on a writable wakeup."),
    FO_VALUE("exgate_fanout_queued_bytes_total", "queued_bytes", "Bytes "
        "that went to a client's queue instead of its socket."),

    /* ---- the process ---- */
    { "process_cpu_seconds_total", CTR, "User and system CPU time spent.",
      M_PROCESS, M_VALUE, "cpu_seconds", NULL, NULL, 0, NULL, NULL },
    { "process_resident_memory_bytes", GAUGE, "Resident memory size.",
      M_PROCESS, M_VALUE, "resident_bytes", NULL, NULL, 0, NULL, NULL },
    { "process_virtual_memory_bytes", GAUGE, "Virtual memory size.",
      M_PROCESS, M_VALUE, "virtual_bytes", NULL, NULL, 0, NULL, NULL },
    { "process_open_fds", GAUGE, "Open file descriptors.",
      M_PROCESS, M_VALUE, "open_fds", NULL, NULL, 0, NULL, NULL },
    { "process_max_fds", GAUGE, "The limit of open file descriptors.",
      M_PROCESS, M_VALUE, "max_fds", NULL, NULL, 0, NULL, NULL },
    { "process_start_time_seconds", GAUGE, "Start time of the process "
      "since the Unix epoch.",
      M_PROCESS, M_VALUE, "start_time_seconds", NULL, NULL, 0, NULL, NULL },
    { "exgate_build_info", GAUGE, "exgate's version and the versions of "
      "the libraries it runs on, as labels; always 1.",
      M_PROCESS, M_INFO, "build", NULL, NULL, 0, NULL, m_build_info },
};

/* The upstream states, in their enum's order. */
static const char *
m_up_state_name(unsigned i)
{
    return i <= XG_UP_STOPPING ? xg_upstream_state_name(i) : NULL;
}

/* The breaker states, in their enum's order. */
static const char *
m_breaker_name(unsigned i)
{
    return i <= XG_BREAKER_HALF_OPEN
           ? xg_reconnect_breaker_state_name(i) : NULL;
}

/* ---- the text format ---------------------------------------------------- */

/* One rendering: the output, and the family whose header is out. */
struct m_out {
    struct evbuffer        *out;
    const struct m_metric  *family;     /* the row that named it */
};

/* S with \ and newline escaped (and " when QUOTE), as the format wants. */
static void
m_escaped(struct evbuffer *out, const char *s, int quote)
{
    for (; *s != '\0'; s++) {
        if (*s == '\\') {
            evbuffer_add(out, "\\\\", 2);
        } else if (*s == '\n') {
            evbuffer_add(out, "\\n", 2);
        } else if (*s == '"' && quote) {
            evbuffer_add(out, "\\\"", 2);
        } else {
            evbuffer_add(out, s, 1);
        }
    }
}

/* A number as the format writes it (integers without an exponent). */
static void
m_number(struct evbuffer *out, double v)
{
    if (v != v) {
        evbuffer_add_printf(out, "NaN");
    } else if (v > 1e300 * 1e300) {
        evbuffer_add_printf(out, "+Inf");
    } else if (v < -1e300 * 1e300) {
        evbuffer_add_printf(out, "-Inf");
    } else if (v == (double) (int64_t) v && v < 9007199254740992.0
               && v > -9007199254740992.0) {
        evbuffer_add_printf(out, "%lld", (long long) v);
    } else {
        evbuffer_add_printf(out, "%.15g", v);
    }
}

/*
 * Writes the HELP and TYPE lines of ROW's family, once: rows that share a
 * name follow each other in the table, the first one holds the text.
 */
static void
m_header(struct m_out *o, const struct m_metric *row)
{
    const struct m_metric *first = row;

    if (o->family != NULL && strcmp(o->family->name, row->name) == 0) {
        return;
    }
    while (first > m_table && strcmp(first[-1].name, row->name) == 0) {
        first--;
    }
    o->family = first;
    evbuffer_add_printf(o->out, "# HELP %s ", first->name);
    m_escaped(o->out, first->help, 0);
    evbuffer_add_printf(o->out, "\n# TYPE %s %s\n", first->name, first->type);
}

/* Adds name="value" to the label list B (comma separated). */
static void
m_label(struct evbuffer *b, const char *name, const char *value)
{
    if (evbuffer_get_length(b) > 0) {
        evbuffer_add(b, ",", 1);
    }
    evbuffer_add_printf(b, "%s=\"", name);
    m_escaped(b, value, 1);
    evbuffer_add(b, "\"", 1);
}

/* One sample: NAME{LABELS[,EXTRA="EVALUE"]} V. */
static void
m_sample(struct m_out *o, const struct m_metric *row, const char *suffix,
    struct evbuffer *labels, const char *extra, const char *evalue, double v)
{
    size_t n = evbuffer_get_length(labels);

    m_header(o, row);
    evbuffer_add_printf(o->out, "%s%s", row->name, suffix);
    if (n > 0 || extra != NULL) {
        evbuffer_add(o->out, "{", 1);
        if (n > 0) {
            evbuffer_add(o->out, evbuffer_pullup(labels, -1), n);
        }
        if (extra != NULL) {
            if (n > 0) {
                evbuffer_add(o->out, ",", 1);
            }
            evbuffer_add_printf(o->out, "%s=\"", extra);
            m_escaped(o->out, evalue, 1);
            evbuffer_add(o->out, "\"", 1);
        }
        evbuffer_add(o->out, "}", 1);
    }
    evbuffer_add(o->out, " ", 1);
    m_number(o->out, v);
    evbuffer_add(o->out, "\n", 1);
}

/* The histogram H ({le, counts, sum, count}) as _bucket, _sum, _count. */
static void
m_histogram(struct m_out *o, const struct m_metric *row,
    struct evbuffer *labels, const json_t *h)
{
    const json_t *le = json_object_get(h, "le");
    const json_t *counts = json_object_get(h, "counts");
    const json_t *sum = json_object_get(h, "sum");
    const json_t *count = json_object_get(h, "count");
    char bound[64];
    size_t i;

    if (!json_is_array(le) || !json_is_array(counts) || !json_is_number(sum)
        || !json_is_number(count)
        || json_array_size(counts) != json_array_size(le) + 1)
    {
        return;
    }
    for (i = 0; i < json_array_size(counts); i++) {
        if (i < json_array_size(le)) {
            snprintf(bound, sizeof(bound), "%.15g",
                json_number_value(json_array_get(le, i)));
        } else {
            snprintf(bound, sizeof(bound), "+Inf");
        }
        m_sample(o, row, "_bucket", labels, "le", bound,
            json_number_value(json_array_get(counts, i)));
    }
    m_sample(o, row, "_sum", labels, NULL, NULL, json_number_value(sum));
    m_sample(o, row, "_count", labels, NULL, NULL, json_number_value(count));
}

/* The samples of ROW from OBJ (one upstream, listener, ...), labelled
   with LABELS (its identity). */
/* The member at KEY of OBJ, "a.b" for member b of member a. */
static const json_t *
m_get(const json_t *obj, const char *key)
{
    const char *dot = strchr(key, '.');
    char head[64];

    if (dot == NULL || (size_t) (dot - key) >= sizeof(head)) {
        return json_object_get(obj, key);
    }
    memcpy(head, key, (size_t) (dot - key));
    head[dot - key] = '\0';
    obj = json_object_get(obj, head);
    return obj != NULL ? m_get(obj, dot + 1) : NULL;
}

static void
m_row(struct m_out *o, const struct m_metric *row, const json_t *obj,
    struct evbuffer *labels)
{
    const json_t *v = row->key != NULL ? m_get(obj, row->key) : obj;
    const char *s, *k;
    const json_t *mv;
    unsigned i;

    if (v == NULL) {
        return;
    }
    switch (row->kind) {
    case M_VALUE:
        if (json_is_number(v)) {
            m_sample(o, row, "", labels, row->label, row->lvalue,
                json_number_value(v) * (row->scale != 0 ? row->scale : 1));
        }
        break;
    case M_IS:
        if ((s = json_string_value(v)) != NULL) {
            m_sample(o, row, "", labels, NULL, NULL,
                strcmp(s, row->lvalue) == 0);
        }
        break;
    case M_ENUM:
        if ((s = json_string_value(v)) == NULL) {
            break;
        }
        for (i = 0; row->names(i) != NULL; i++) {
            m_sample(o, row, "", labels, row->label, row->names(i),
                strcmp(s, row->names(i)) == 0);
        }
        break;
    case M_MAP:
        if (!json_is_object(v)) {
            break;
        }
        json_object_foreach((json_t *) v, k, mv) {
            if (json_is_number(mv)) {
                m_sample(o, row, "", labels, row->label, k,
                    json_number_value(mv));
            }
        }
        break;
    case M_HISTOGRAM:
        m_histogram(o, row, labels, v);
        break;
    case M_INFO: {
        struct evbuffer *all = evbuffer_new();

        if (all == NULL) {
            break;
        }
        if (evbuffer_get_length(labels) > 0) {
            evbuffer_add(all, evbuffer_pullup(labels, -1),
                evbuffer_get_length(labels));
        }
        for (i = 0; row->info[i] != NULL; i++) {
            if ((s = json_string_value(json_object_get(v, row->info[i])))
                != NULL) {
                m_label(all, row->info[i], s);
            }
        }
        m_sample(o, row, "", all, NULL, NULL, 1);
        evbuffer_free(all);
        break;
    }
    }
}

/* ROW for OBJ, labelled IDLABEL="its IDKEY" (none: no row). */
static void
m_object_row(struct m_out *o, const struct m_metric *row, const json_t *obj,
    const char *idkey, const char *idlabel, struct evbuffer *labels)
{
    const char *id = json_string_value(json_object_get(obj, idkey));

    if (id == NULL) {
        return;
    }
    evbuffer_drain(labels, evbuffer_get_length(labels));
    m_label(labels, idlabel, id);
    m_row(o, row, obj, labels);
}

/* ROW for each child upstream in UP's array KEY (not UP itself again). */
static void
m_children_rows(struct m_out *o, const struct m_metric *row, const json_t *up,
    const char *key, struct evbuffer *labels)
{
    const char *name = json_string_value(json_object_get(up, "name"));
    const json_t *a = json_object_get(up, key), *ch;
    const char *cn;
    size_t i;

    for (i = 0; name != NULL && i < json_array_size(a); i++) {
        ch = json_array_get(a, i);
        cn = json_string_value(json_object_get(ch, "name"));
        if (cn != NULL && strcmp(cn, name) != 0) {
            m_object_row(o, row, ch, "name", "upstream", labels);
        }
    }
}

/* ROW for every object of its scope. */
static void
m_scope_rows(struct m_out *o, const struct m_metric *row,
    const json_t *status, const json_t *process, struct evbuffer *labels)
{
    const char *array, *idkey, *idlabel;
    const json_t *a, *obj;
    size_t i;

    switch (row->scope) {
    case M_UPSTREAM:
        array = "upstreams", idkey = "name", idlabel = "upstream";
        break;
    case M_LISTENER:
        array = "listeners", idkey = "address", idlabel = "listener";
        break;
    case M_DOCUMENT:
        m_row(o, row, status, labels);
        return;
    case M_FANOUT:
        if ((obj = json_object_get(status, "fanout")) != NULL) {
            m_row(o, row, obj, labels);
        }
        return;
    case M_PROCESS:
    default:
        if (process != NULL) {
            m_row(o, row, process, labels);
        }
        return;
    }
    a = json_object_get(status, array);
    for (i = 0; i < json_array_size(a); i++) {
        obj = json_array_get(a, i);
        m_object_row(o, row, obj, idkey, idlabel, labels);
        if (row->scope == M_UPSTREAM) {
            /* an upstream's own connections that are upstreams of their
               own (Deribit's accounts, Binance's shards past the first):
               rows labelled with their names ("deribit/desk-a") */
            m_children_rows(o, row, obj, "accounts", labels);
            m_children_rows(o, row, obj, "shards", labels);
        }
    }
    evbuffer_drain(labels, evbuffer_get_length(labels));
}

/* See xg_metrics.h. */
void
xg_metrics_render(struct evbuffer *out, const json_t *status,
    const json_t *process)
{
    struct m_out o = { out, NULL };
    struct evbuffer *labels = evbuffer_new();
    size_t i;

    if (labels == NULL) {
        return;
    }
    for (i = 0; i < XG_NELEM(m_table); i++) {
        m_scope_rows(&o, &m_table[i], status, process, labels);
    }
    evbuffer_free(labels);
}

/* ---- the process, from /proc ----------------------------------------- */

/* Reads PATH (a small /proc file) into BUF; returns its length or -1. */
static ssize_t
m_read(const char *path, char *buf, size_t size)
{
    FILE *f = fopen(path, "r");
    size_t n;

    if (f == NULL) {
        xg_log_debug("metrics: %s: %s", path, strerror(errno));
        return -1;
    }
    n = fread(buf, 1, size - 1, f);
    fclose(f);
    buf[n] = '\0';
    return (ssize_t) n;
}

/* cpu_seconds, virtual_bytes, resident_bytes, start_time_seconds. */
static void
m_proc_stat(json_t *o)
{
    char buf[4096], *p;
    unsigned long utime, stime, vsize;
    unsigned long long starttime, btime = 0;
    long rss, tck = sysconf(_SC_CLK_TCK), page = sysconf(_SC_PAGESIZE);

    if (m_read("/proc/self/stat", buf, sizeof(buf)) < 0 || tck <= 0
        || page <= 0) {
        return;
    }
    /* After the command name, which may hold spaces and parentheses. */
    if ((p = strrchr(buf, ')')) == NULL
        || sscanf(p + 1, " %*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u "
                  "%lu %lu %*d %*d %*d %*d %*d %*d %llu %lu %ld", &utime,
                  &stime, &starttime, &vsize, &rss) != 5) {
        xg_log_debug("metrics: /proc/self/stat: unexpected format");
        return;
    }
    json_object_set_new(o, "cpu_seconds",
        json_real((double) (utime + stime) / (double) tck));
    json_object_set_new(o, "virtual_bytes", json_integer((json_int_t) vsize));
    json_object_set_new(o, "resident_bytes",
        json_integer((json_int_t) rss * page));
    if (m_read("/proc/stat", buf, sizeof(buf)) >= 0
        && (p = strstr(buf, "\nbtime ")) != NULL
        && sscanf(p + 7, "%llu", &btime) == 1) {
        json_object_set_new(o, "start_time_seconds", json_real((double) btime
            + (double) starttime / (double) tck));
    }
}

/* open_fds (not counting the one that reads the list), max_fds. */
static void
m_proc_fds(json_t *o)
{
    DIR *d = opendir("/proc/self/fd");
    struct dirent *e;
    struct rlimit rl;
    json_int_t n = 0;

    if (d != NULL) {
        while ((e = readdir(d)) != NULL) {
            if (e->d_name[0] != '.') {
                n++;
            }
        }
        closedir(d);
        json_object_set_new(o, "open_fds", json_integer(n - 1));
    } else {
        xg_log_debug("metrics: /proc/self/fd: %s", strerror(errno));
    }
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY) {
        json_object_set_new(o, "max_fds", json_integer((json_int_t)
            rl.rlim_cur));
    }
}

/* See xg_metrics.h. */
json_t *
xg_metrics_process(void)
{
    json_t *o = json_object();

    m_proc_stat(o);
    m_proc_fds(o);
    json_object_set_new(o, "build", json_pack("{s:s, s:s, s:s}",
        "version", XG_VERSION, "libevent", event_get_version(),
        "openssl", OpenSSL_version(OPENSSL_VERSION_STRING)));
    return o;
}
