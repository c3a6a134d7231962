/*
 * xg_jscan.c: the top-level JSON object scanner (see xg_jscan.h for why
 * jansson is not enough here). Hand-written on purpose: it only walks the
 * structure, so it is a single pass without allocation.
 */
#include "xg_core.h"
#include "xg_jscan.h"

#include <string.h>

#define JSCAN_MAX_DEPTH 64

static size_t
skip_ws(const char *d, size_t len, size_t i)
{
    while (i < len && (d[i] == ' ' || d[i] == '\t' || d[i] == '\n'
            || d[i] == '\r')) {
        i++;
    }
    return i;
}

/* I is at an opening quote; returns the index after the closing one, or 0. */
static size_t
skip_string(const char *d, size_t len, size_t i)
{
    i++;
    while (i < len) {
        const char *q = memchr(d + i, '"', len - i);
        size_t j, bs;

        if (q == NULL) {
            return 0;
        }
        j = (size_t) (q - d);
        /* a quote preceded by an odd number of backslashes is escaped */
        bs = 0;
        while (j - bs > i && d[j - bs - 1] == '\\') {
            bs++;
        }
        if ((bs & 1) == 0) {
            return j + 1;
        }
        i = j + 1;
    }
    return 0;
}

/* I is at the start of a value; returns the index after it, or 0. */
static size_t
skip_value(const char *d, size_t len, size_t i)
{
    int depth = 0;

    if (i >= len) {
        return 0;
    }
    if (d[i] == '"') {
        return skip_string(d, len, i);
    }
    if (d[i] != '{' && d[i] != '[') {
        size_t s = i;

        while (i < len && d[i] != ',' && d[i] != '}' && d[i] != ']'
               && d[i] != ' ' && d[i] != '\t' && d[i] != '\n'
               && d[i] != '\r' && d[i] != ':' && d[i] != '"') {
            i++;
        }
        return i > s ? i : 0;
    }
    while (i < len) {
        char c = d[i];

        if (c == '"') {
            i = skip_string(d, len, i);
            if (i == 0) {
                return 0;
            }
            continue;
        }
        if (c == '{' || c == '[') {
            if (++depth > JSCAN_MAX_DEPTH) {
                return 0;
            }
        } else if (c == '}' || c == ']') {
            if (--depth == 0) {
                return i + 1;
            }
        }
        i++;
    }
    return 0;
}

int
xg_jscan_object(const char *data, size_t len, const char *const *keys,
    int nkeys, struct xg_jspan *vals)
{
    size_t i;
    int k;

    for (k = 0; k < nkeys; k++) {
        vals[k].p = NULL;
        vals[k].len = 0;
    }
    i = skip_ws(data, len, 0);
    if (i >= len || data[i] != '{') {
        return XG_ERROR;
    }
    i = skip_ws(data, len, i + 1);
    if (i < len && data[i] == '}') {
        return skip_ws(data, len, i + 1) == len ? XG_OK : XG_ERROR;
    }
    for (;;) {
        size_t ks, ke, vs, ve;

        if (i >= len || data[i] != '"') {
            return XG_ERROR;
        }
        ks = i + 1;
        ke = skip_string(data, len, i);
        if (ke == 0) {
            return XG_ERROR;
        }
        i = skip_ws(data, len, ke);
        if (i >= len || data[i] != ':') {
            return XG_ERROR;
        }
        vs = skip_ws(data, len, i + 1);
        ve = skip_value(data, len, vs);
        if (ve == 0) {
            return XG_ERROR;
        }
        for (k = 0; k < nkeys; k++) {
            size_t kl = ke - 1 - ks;

            /* KEYS[k] is this member's key: the first byte, then the
               rest, then KEYS[k] ends there (strnlen: the key read may
               hold a NUL; no strlen of every key for every member) */
            if (vals[k].p == NULL && (kl == 0 ? keys[k][0] == '\0'
                : keys[k][0] == data[ks]
                  && strncmp(keys[k], data + ks, kl) == 0
                  && strnlen(keys[k], kl + 1) == kl)) {
                vals[k].p = data + vs;
                vals[k].len = ve - vs;
            }
        }
        i = skip_ws(data, len, ve);
        if (i < len && data[i] == ',') {
            i = skip_ws(data, len, i + 1);
            continue;
        }
        if (i < len && data[i] == '}') {
            return skip_ws(data, len, i + 1) == len ? XG_OK : XG_ERROR;
        }
        return XG_ERROR;
    }
}

int
xg_jscan_str_eq(const struct xg_jspan *span, const char *s)
{
    size_t n = strlen(s);

    return span->p != NULL && span->len == n + 2 && span->p[0] == '"'
           && memcmp(span->p + 1, s, n) == 0 && span->p[n + 1] == '"';
}

int
xg_jscan_uint(const struct xg_jspan *span, uint64_t *v)
{
    uint64_t x = 0;
    size_t i;

    if (span->p == NULL || span->len == 0 || span->len > 20) {
        return XG_ERROR;
    }
    for (i = 0; i < span->len; i++) {
        unsigned d = (unsigned char) span->p[i] - '0';

        if (d > 9 || x > (UINT64_MAX - d) / 10) {
            return XG_ERROR;
        }
        x = x * 10 + d;
    }
    *v = x;
    return XG_OK;
}

char *
xg_jscan_splice(const char *data, size_t len, const struct xg_jspan *span,
    const char *repl, size_t repl_len, size_t *outlen)
{
    size_t head = (size_t) (span->p - data);
    size_t tail = len - head - span->len;
    char *out = xg_malloc(head + repl_len + tail + 1);

    memcpy(out, data, head);
    memcpy(out + head, repl, repl_len);
    memcpy(out + head + repl_len, span->p + span->len, tail);
    out[head + repl_len + tail] = '\0';
    *outlen = head + repl_len + tail;
    return out;
}
