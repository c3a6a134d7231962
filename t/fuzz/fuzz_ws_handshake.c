/*
 * fuzz_ws_handshake.c: libFuzzer target for the WebSocket handshake
 * parsers. Any bytes in, as a server's request head and as a client's
 * 101 answer: a verdict comes out, nothing crashes, nothing is read past
 * the input (ASan), and the verdicts are consistent.
 */
#include "xg_core.h"
#include "xg_wsproto.h"

#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct xg_wsproto_req req;
    struct xg_wsproto_resp resp;
    const char *p = (const char *) data;
    char out[512];
    ssize_t hl;
    size_t n;

    hl = xg_wsproto_head_len(p, size, XG_WSPROTO_MAX_HEAD);
    if (hl > 0) {
        if (xg_wsproto_parse_request(p, (size_t) hl, &req) == XG_OK) {
            if (req.status != 0 || req.path[0] != '/'
                || strlen(req.key) != XG_WSPROTO_KEY_LEN)
            {
                abort();
            }
        } else if (req.status < 400 || req.error == NULL) {
            abort();
        } else {
            n = xg_wsproto_error_response(out, sizeof(out), req.status,
                req.error);
            if (n >= sizeof(out) || strlen(out) != n) {
                abort();
            }
        }
        if (xg_wsproto_parse_response(p, (size_t) hl,
                "dGhlIHNhbXBsZSBub25jZQ==", 1000000000, &resp) == XG_OK)
        {
            if (resp.status != 101 || resp.error != NULL) {
                abort();
            }
        } else if (resp.error == NULL || resp.retry_after_s < -1
            || resp.retry_after_s > 86400)
        {
            abort();
        }
    } else if (hl < 0 && size < XG_WSPROTO_MAX_HEAD) {
        abort();
    }
    /* The parsers must also cope with heads that are not complete. */
    (void) xg_wsproto_parse_request(p, size, &req);
    (void) xg_wsproto_parse_response(p, size, "x", 0, &resp);
    n = xg_wsproto_utf8_valid(data, size)
        ? xg_wsproto_utf8_trim(p, size, 123) : 0;
    if (n > 123 || n > size) {
        abort();
    }
    return 0;
}
