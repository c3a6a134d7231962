/*
 * xg_frame.c: the fan-out primitive, frames encoded once (see xg_frame.h).
 */
#include "xg_core.h"
#include "xg_frame.h"
#include "xg_wsproto.h"

#include <stdlib.h>
#include <string.h>

#include <wslay/wslay.h>

static struct xg_frame *
frame_new(int opcode, const void *data, size_t len)
{
    unsigned char hdr[XG_WSPROTO_MAX_FRAME_HEADER];
    struct xg_frame *f;
    size_t n;

    n = xg_wsproto_frame_header(hdr, opcode, len, NULL);
    f = xg_malloc(sizeof(*f) + n + len);
    f->refs = 1;
    f->len = n + len;
    f->nmsgs = 1;
    memcpy(f->data, hdr, n);
    if (len > 0) {
        memcpy(f->data + n, data, len);
    }
    return f;
}

struct xg_frame *
xg_frame_text(const void *data, size_t len)
{
    return frame_new(WSLAY_TEXT_FRAME, data, len);
}

struct xg_frame *
xg_frame_texts(const void *const *data, const size_t *len, size_t n)
{
    unsigned char hdr[XG_WSPROTO_MAX_FRAME_HEADER];
    struct xg_frame *f;
    size_t i, total = 0, off = 0, h;

    for (i = 0; i < n; i++) {
        total += XG_WSPROTO_MAX_FRAME_HEADER + len[i];
    }
    f = xg_malloc(sizeof(*f) + total);
    f->refs = 1;
    f->nmsgs = n;
    for (i = 0; i < n; i++) {
        h = xg_wsproto_frame_header(hdr, WSLAY_TEXT_FRAME, len[i], NULL);
        memcpy(f->data + off, hdr, h);
        off += h;
        if (len[i] > 0) {
            memcpy(f->data + off, data[i], len[i]);
            off += len[i];
        }
    }
    f->len = off;
    return f;
}

struct xg_frame *
xg_frame_encoded(const void *data, size_t len, size_t nmsgs)
{
    struct xg_frame *f = xg_malloc(sizeof(*f) + len);

    f->refs = 1;
    f->len = len;
    f->nmsgs = nmsgs;
    memcpy(f->data, data, len);
    return f;
}

struct xg_frame *
xg_frame_binary(const void *data, size_t len)
{
    return frame_new(WSLAY_BINARY_FRAME, data, len);
}

void
xg_frame_ref(struct xg_frame *f)
{
    f->refs++;
}

void
xg_frame_unref(struct xg_frame *f)
{
    if (f != NULL && --f->refs == 0) {
        free(f);
    }
}

size_t
xg_frame_len(const struct xg_frame *f)
{
    return f->len;
}
