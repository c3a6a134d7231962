/*
 * xg_frame.h: WebSocket frames encoded once for many server connections
 * (xg_ws_send_frame() in src/xg_ws.h appends one by reference).
 */
#ifndef XG_FRAME_H
#define XG_FRAME_H

#include "xg_core.h"

/*
 * The fan-out primitive: one server-to-client frame (header + payload)
 * encoded once in a refcounted buffer and appended by reference to any
 * number of server connections. xg_frame_text() returns it with one
 * reference held by the caller.
 */
struct xg_frame {
    unsigned       refs;
    size_t         len;
    size_t         nmsgs;       /* messages in it, for the counters */
    unsigned char  data[];      /* len bytes: the frames, encoded */
};

/* DATA must be valid UTF-8 (as any text wslay accepted is). */
struct xg_frame *xg_frame_text(const void *data, size_t len);
struct xg_frame *xg_frame_binary(const void *data, size_t len);
/*
 * N text messages encoded back to back in one frame buffer (N frames), so
 * a batch of notifications costs each recipient one reference.
 */
struct xg_frame *xg_frame_texts(const void *const *data, const size_t *len,
    size_t n);
/*
 * A copy of LEN bytes of frames already encoded back to back (NMSGS
 * messages), e.g. a fan-out batch written in a buffer that is reused.
 */
struct xg_frame *xg_frame_encoded(const void *data, size_t len, size_t nmsgs);
void xg_frame_ref(struct xg_frame *f);
void xg_frame_unref(struct xg_frame *f);
/* The encoded length: header + payload. */
size_t xg_frame_len(const struct xg_frame *f);
#endif
