/*
 * xg_io.h: counters of socket I/O, to see where the fan-out's time goes:
 * messages per read, messages and bytes per send, sends that found the
 * socket full, writes of queued output made on a writable wakeup.
 *
 * An owner (the fan-out of one loop, an upstream) holds one struct
 * xg_io_stats and has its connections add to it. Every update is a few
 * additions, cheap enough for the hot path; /status shows the totals.
 */
#ifndef XG_IO_H
#define XG_IO_H

#include "xg_core.h"

#include <jansson.h>

/* Sends by the messages they carried: 1, 2-3, 4-7, ..., 2048 and more. */
#define XG_IO_BUCKETS  12

struct xg_io_stats {
    uint64_t reads;             /* socket reads */
    uint64_t read_bytes;
    uint64_t sends;             /* writes to a socket that took bytes */
    uint64_t send_bytes;
    uint64_t send_msgs;         /* message-equivalents, see xg_io_sent() */
    uint64_t by_msgs[XG_IO_BUCKETS];
    uint64_t would_block;       /* direct sends that found the socket full */
    uint64_t partial;           /* direct sends it took only part of */
    uint64_t queued_writes;     /* writes of queued output */
    uint64_t queued_bytes;      /* bytes queued instead of sent at once */
    uint64_t msgs;              /* messages handed to the output, */
    uint64_t msg_bytes;         /* and their bytes on the wire */
};

/*
 * Counts one write of BYTES (> 0) to a socket that carried MSGS messages;
 * MSGS 0: not known (queued output), then the messages are BYTES over
 * the mean size of what was handed to the output (msg_bytes / msgs).
 * IO may be NULL.
 */
void xg_io_sent(struct xg_io_stats *io, size_t bytes, size_t msgs);

/* The counters as a JSON object (a new reference). */
json_t *xg_io_json(const struct xg_io_stats *io);

/* "1", "2-3", ..., "2048+": the name of bucket I of by_msgs. */
const char *xg_io_bucket_name(int i);

/* The bucket of by_msgs that a count of N (>= 1) falls in. */
int xg_io_bucket(uint64_t n);

#endif
