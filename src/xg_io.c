/*
 * xg_io.c: counters of socket I/O (see xg_io.h).
 */
#include "xg_io.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>

static const char *const bucket_names[XG_IO_BUCKETS] = {
    "1", "2-3", "4-7", "8-15", "16-31", "32-63", "64-127", "128-255",
    "256-511", "512-1023", "1024-2047", "2048+"
};

/* See xg_io.h. */
int
xg_io_bucket(uint64_t n)
{
    int b = 0;

    while (n > 1 && b < XG_IO_BUCKETS - 1) {
        n >>= 1;
        b++;
    }
    return b;
}

/* See xg_io.h. */
const char *
xg_io_bucket_name(int i)
{
    return i >= 0 && i < XG_IO_BUCKETS ? bucket_names[i] : "?";
}

/* See xg_io.h. */
void
xg_io_sent(struct xg_io_stats *io, size_t bytes, size_t msgs)
{
    if (io == NULL || bytes == 0) {
        return;
    }
    if (msgs == 0) {
        /* rounded to the nearest whole message, at least one */
        msgs = io->msg_bytes == 0 ? 1
            : (size_t) ((bytes * io->msgs + io->msg_bytes / 2)
                / io->msg_bytes);
        if (msgs == 0) {
            msgs = 1;
        }
    }
    io->sends++;
    io->send_bytes += bytes;
    io->send_msgs += msgs;
    io->by_msgs[xg_io_bucket(msgs)]++;
}

/* See xg_io.h. */
json_t *
xg_io_json(const struct xg_io_stats *io)
{
    json_t *o = json_object(), *h = json_object();
    int i;

    for (i = 0; i < XG_IO_BUCKETS; i++) {
        json_object_set_new(h, bucket_names[i],
            json_integer((json_int_t) io->by_msgs[i]));
    }
    json_object_set_new(o, "reads", json_integer((json_int_t) io->reads));
    json_object_set_new(o, "read_bytes",
        json_integer((json_int_t) io->read_bytes));
    json_object_set_new(o, "sends", json_integer((json_int_t) io->sends));
    json_object_set_new(o, "send_bytes",
        json_integer((json_int_t) io->send_bytes));
    json_object_set_new(o, "send_messages",
        json_integer((json_int_t) io->send_msgs));
    json_object_set_new(o, "sends_by_messages", h);
    json_object_set_new(o, "would_block",
        json_integer((json_int_t) io->would_block));
    json_object_set_new(o, "partial", json_integer((json_int_t) io->partial));
    json_object_set_new(o, "queued_writes",
        json_integer((json_int_t) io->queued_writes));
    json_object_set_new(o, "queued_bytes",
        json_integer((json_int_t) io->queued_bytes));
    return o;
}

void
xg_format_addr(const struct sockaddr *sa, char *buf, size_t len)
{
    char ip[INET6_ADDRSTRLEN];

    if (sa->sa_family == AF_INET) {
        const struct sockaddr_in *s4 = (const struct sockaddr_in *) sa;
        inet_ntop(AF_INET, &s4->sin_addr, ip, sizeof(ip));
        snprintf(buf, len, "%s:%u", ip, ntohs(s4->sin_port));
    } else if (sa->sa_family == AF_INET6) {
        const struct sockaddr_in6 *s6 = (const struct sockaddr_in6 *) sa;
        inet_ntop(AF_INET6, &s6->sin6_addr, ip, sizeof(ip));
        snprintf(buf, len, "[%s]:%u", ip, ntohs(s6->sin6_port));
    } else {
        snprintf(buf, len, "unix");
    }
}

void
xg_fd_peer(int fd, char *buf, size_t len)
{
    struct sockaddr_storage ss;
    socklen_t sl;

    memset(&ss, 0, sizeof(ss));
    sl = sizeof(ss);
    if (getpeername(fd, (struct sockaddr *) &ss, &sl) != 0) {
        snprintf(buf, len, "?");
        return;
    }
    xg_format_addr((struct sockaddr *) &ss, buf, len);
}

void
xg_fd_nodelay(int fd)
{
    int one = 1;

    /* Small messages are the norm: never let Nagle hold one back. */
    (void) setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
}

/*
 * Output without the event loop in the way, as redis writes to its
 * clients before it goes back to epoll_wait (handleClientsWithPendingWrites):
 * when nothing is queued ahead, the bytes go to the socket at once and a
 * reader that keeps up costs one send(2) per batch, with no evbuffer chain
 * to allocate and no EPOLL_CTL_MOD to arm and then disarm the write event.
 * Only what the socket does not take is queued by the caller, after which
 * libevent writes as usual. An error writes nothing here; the
 * bufferevent's own write meets it again and reports it.
 */
size_t
xg_bev_send_now(struct bufferevent *bev, const void *data, size_t len,
    size_t nmsgs, struct xg_io_stats *io)
{
    evutil_socket_t fd = bufferevent_getfd(bev);
    ssize_t n;

    if (io != NULL) {
        io->msgs += nmsgs;
        io->msg_bytes += len;
    }
    if (fd < 0 || evbuffer_get_length(bufferevent_get_output(bev)) != 0
        || !(bufferevent_get_enabled(bev) & EV_WRITE))
    {
        if (io != NULL) {
            io->queued_bytes += len;
        }
        return 0;
    }
    do {
        n = send(fd, data, len, MSG_DONTWAIT | MSG_NOSIGNAL);
    } while (n < 0 && errno == EINTR);
    if (io != NULL) {
        if (n > 0) {
            size_t m = (size_t) n == len ? nmsgs
                : ((size_t) n * nmsgs + len / 2) / len;

            /* the messages whose bytes went, to the nearest whole one */
            xg_io_sent(io, (size_t) n, m > 0 ? m : 1);
            if ((size_t) n < len) {
                io->partial++;
            }
        } else if (errno == EAGAIN || errno == EWOULDBLOCK) {
            io->would_block++;
        }
        io->queued_bytes += n > 0 ? len - (size_t) n : len;
    }
    return n > 0 ? (size_t) n : 0;
}

/* Counts what libevent drains from an output buffer: its socket writes. */
static void
bev_out_cb(struct evbuffer *buf, const struct evbuffer_cb_info *info,
    void *arg)
{
    struct xg_io_stats *io = arg;

    if (info->n_deleted > 0) {
        io->queued_writes++;
        xg_io_sent(io, info->n_deleted, 0);
    }
}

/* See xg_ws.h. */
int
xg_bev_count_writes(struct bufferevent *bev, struct xg_io_stats *io)
{
    return evbuffer_add_cb(bufferevent_get_output(bev), bev_out_cb, io)
        != NULL ? XG_OK : XG_ERROR;
}
