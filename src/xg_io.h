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

/*
 * The peer of socket FD as "1.2.3.4:5", "[::1]:5" or "unix" into BUF
 * ("?" when it has none); SA's address the same way.
 */
struct sockaddr;
void xg_format_addr(const struct sockaddr *sa, char *buf, size_t len);
void xg_fd_peer(int fd, char *buf, size_t len);
/* TCP_NODELAY on FD (errors ignored: not every socket is TCP). */
void xg_fd_nodelay(int fd);

struct bufferevent;
/*
 * Sends DATA on the socket of plain socket bufferevent BEV at once when
 * its output buffer is empty; returns the bytes the socket took (0 when
 * output is queued, the socket is full, or on an error). The caller
 * queues the rest in the output buffer. Not for TLS or paired
 * bufferevents. DATA holds NMSGS messages; the send, and the bytes left
 * for the caller to queue, are counted in IO (NULL: not counted).
 */
size_t xg_bev_send_now(struct bufferevent *bev, const void *data,
    size_t len, size_t nmsgs, struct xg_io_stats *io);

/*
 * Counts in IO every write libevent makes from BEV's output buffer (the
 * bytes it drains), as writes of queued output. Returns XG_OK, or
 * XG_ERROR when the callback cannot be added.
 */
int xg_bev_count_writes(struct bufferevent *bev, struct xg_io_stats *io);

#endif
