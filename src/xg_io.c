/*
 * xg_io.c: counters of socket I/O (see xg_io.h).
 */
#include "xg_io.h"

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
