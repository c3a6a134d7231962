/*
 * fuzz_carried.c: libFuzzer target for the records of the entries a bell
 * carries (xg_redis_carried_next() in src/xg_redis.c), which an edge
 * reads from whatever is in Redis. Besides "never reads past the input",
 * it checks the round trip: each record read, written again with
 * xg_redis_carried_put(), is exactly the bytes it was read from (the
 * format has one spelling per record). A failed check aborts.
 */
#include "xg_redis.h"

#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *p, *end, *at;
    struct xg_redis_carried rec;
    char *in, *out;
    size_t n;
    int rc;

    /* a copy of its own size: a read past it is ASan's to see */
    in = malloc(size + 1);
    out = malloc(size + XG_REDIS_CARRIED_HEAD + 1);
    if (in == NULL || out == NULL) {
        abort();
    }
    memcpy(in, data, size);
    p = in;
    end = in + size;
    for (;;) {
        at = p;
        rc = xg_redis_carried_next(&p, end, &rec);
        if (rc <= 0) {
            if (p != at || (rc == 0 && p != end)) {
                abort();
            }
            break;
        }
        if (p <= at || p > end || rec.seqn == 0
            || rec.data + rec.len != p)
        {
            abort();
        }
        n = xg_redis_carried_put(out, rec.chan, rec.clen, rec.seqn,
            rec.data, rec.len);
        if (n != (size_t) (p - at) || memcmp(out, at, n) != 0) {
            abort();
        }
    }
    free(in);
    free(out);
    return 0;
}
