/*
 * xg_jscan.c: the top-level JSON object scanner (see xg_jscan.h for why
 * jansson is not enough here). Hand-written on purpose: it only walks the
 * structure, so it is a single pass without allocation.
 */
#include "xg_core.h"
#include "xg_jscan.h"

#include <string.h>

#if defined(__SSE2__)
#include <emmintrin.h>
#define J_SSE2 1
#endif

#define JSCAN_MAX_DEPTH 64

/*
 * Byte classes for the loops that go a byte at a time (white space, a
 * number or a literal, the last bytes of a value): one table look-up a
 * byte rather than a comparison for each byte they stop at.
 */
#define J_WS      0x01      /* ' ' '\t' '\n' '\r' */
#define J_ENDS    0x02      /* ends a number or literal: , } ] : " ws */
#define J_STOP    0x04      /* what a container's walk stops at: " { } [ ] */

static const unsigned char jscan_class[256] = {
    ['"'] = J_ENDS | J_STOP,
    ['{'] = J_STOP,
    ['['] = J_STOP,
    ['}'] = J_ENDS | J_STOP,
    [']'] = J_ENDS | J_STOP,
    [','] = J_ENDS,
    [':'] = J_ENDS,
    [' '] = J_WS | J_ENDS,
    ['\t'] = J_WS | J_ENDS,
    ['\n'] = J_WS | J_ENDS,
    ['\r'] = J_WS | J_ENDS,
};

#define JCLASS(c) jscan_class[(unsigned char) (c)]

/*
 * Strings and containers are walked eight bytes at a time: every message
 * an upstream sends is scanned, and a byte at a time that walk was a
 * third of exgate's instructions per message fanned out to one client.
 * A word is tested for the bytes a walk stops at, all eight at once.
 */
#define J_ONES    UINT64_C(0x0101010101010101)
#define J_LOW7    UINT64_C(0x7f7f7f7f7f7f7f7f)

static inline uint64_t
load8(const char *p)
{
    uint64_t w;

    memcpy(&w, p, 8);
    return w;
}

/* The high bit of each byte of X that is zero, and no other bit (exact:
   no carry crosses a byte, so no byte is flagged for its neighbour's). */
static inline uint64_t
zero_bytes(uint64_t x)
{
    return ~(((x & J_LOW7) + J_LOW7) | x | J_LOW7);
}

/* The bytes of W equal to C. */
static inline uint64_t
bytes_eq(uint64_t w, unsigned char c)
{
    return zero_bytes(w ^ (J_ONES * c));
}

/* The offset in the eight bytes W was loaded from of the first byte
   that M (as zero_bytes() makes it, not 0) flags. */
static inline size_t
first_byte(uint64_t m)
{
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
    return (size_t) __builtin_clzll(m) / 8;
#else
    return (size_t) __builtin_ctzll(m) / 8;
#endif
}

static size_t
skip_ws(const char *d, size_t len, size_t i)
{
    while (i < len && (JCLASS(d[i]) & J_WS)) {
        i++;
    }
    return i;
}

#ifdef J_SSE2
/*
 * Where SSE2 is there (every x86-64), sixteen bytes at a time: a bit of
 * the mask for each byte, in the order of the bytes.
 */
static inline unsigned
mask16_eq2(const char *p, char a, char b)
{
    __m128i w = _mm_loadu_si128((const __m128i *) (const void *) p);

    return (unsigned) _mm_movemask_epi8(_mm_or_si128(
        _mm_cmpeq_epi8(w, _mm_set1_epi8(a)),
        _mm_cmpeq_epi8(w, _mm_set1_epi8(b))));
}

/* The quotes and brackets of the sixteen bytes at P ('{' and '[' differ
   in 0x20 only, as '}' and ']' do). */
static inline unsigned
mask16_stop(const char *p)
{
    __m128i w = _mm_loadu_si128((const __m128i *) (const void *) p);
    __m128i u = _mm_or_si128(w, _mm_set1_epi8(0x20));

    return (unsigned) _mm_movemask_epi8(_mm_or_si128(
        _mm_cmpeq_epi8(w, _mm_set1_epi8('"')),
        _mm_or_si128(_mm_cmpeq_epi8(u, _mm_set1_epi8('{')),
            _mm_cmpeq_epi8(u, _mm_set1_epi8('}')))));
}
#endif

/*
 * The rest of a long string from I (not escaped: what came before it was
 * walked), by memchr(3): it beats a walk of words after a few of them.
 */
static size_t
skip_long_string(const char *d, size_t len, size_t i)
{
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

/*
 * Words a string is walked by before memchr(3) takes over: the call
 * costs more than the walk of a short string (keys, names, numbers
 * written as strings: most of what an exchange sends).
 */
#define JSCAN_SHORT_WORDS 4

/* I is at an opening quote; returns the index after the closing one, or 0. */
static size_t
skip_string(const char *d, size_t len, size_t i)
{
    unsigned words = 0;

    i++;
    for (;;) {
        uint64_t m;

        /* to the next quote or backslash */
#ifdef J_SSE2
        while (len - i >= 16) {
            unsigned m16;

            if (words++ == JSCAN_SHORT_WORDS) {
                return skip_long_string(d, len, i);
            }
            m16 = mask16_eq2(d + i, '"', '\\');
            if (m16 != 0) {
                i += (size_t) __builtin_ctz(m16);
                goto found;
            }
            i += 16;
        }
#endif
        while (len - i >= 8) {
            uint64_t w;

            if (words++ == JSCAN_SHORT_WORDS) {
                return skip_long_string(d, len, i);
            }
            w = load8(d + i);
            m = bytes_eq(w, '"') | bytes_eq(w, '\\');
            if (m != 0) {
                i += first_byte(m);
                goto found;
            }
            i += 8;
        }
        while (i < len && d[i] != '"' && d[i] != '\\') {
            i++;
        }
        if (i >= len) {
            return 0;
        }
found:
        if (d[i] == '"') {
            return i + 1;
        }
        /* a backslash escapes the byte after it, whatever it is */
        i += 2;
        if (i > len) {
            return 0;
        }
    }
}

/*
 * The walk of a container from I, inside DEPTH levels of brackets (0:
 * I is at the opening one): to the index after the bracket that closes
 * the outermost, or 0 when the text ends first or nests too deep.
 * Stop by stop (a quote, a bracket), each string by skip_string().
 */
static size_t
skip_nested_walk(const char *d, size_t len, size_t i, int depth)
{
    while (i < len) {
        char c;

        /* to the next quote or bracket */
#ifdef J_SSE2
        if (len - i >= 16) {
            unsigned m16 = mask16_stop(d + i);

            if (m16 == 0) {
                i += 16;
                continue;
            }
            i += (size_t) __builtin_ctz(m16);
        } else
#endif
        if (len - i >= 8) {
            uint64_t w = load8(d + i), u = w | (J_ONES * 0x20), m;

            /* '{' and '[' differ in 0x20 only, as '}' and ']' do */
            m = bytes_eq(w, '"') | bytes_eq(u, '{') | bytes_eq(u, '}');
            if (m == 0) {
                i += 8;
                continue;
            }
            i += first_byte(m);
        } else {
            while (i < len && !(JCLASS(d[i]) & J_STOP)) {
                i++;
            }
            if (i >= len) {
                return 0;
            }
        }
        c = d[i];
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
        } else if (--depth == 0) {      /* '}' or ']' */
            return i + 1;
        }
        i++;
    }
    return 0;
}

#ifdef J_SSE2
/* The quotes and brackets of the sixteen bytes W, and its quotes and
   backslashes: what a walk outside a string and inside one stops at. */
static inline unsigned
mask_out(__m128i w)
{
    __m128i u = _mm_or_si128(w, _mm_set1_epi8(0x20));

    /* '{' and '[' differ in 0x20 only, as '}' and ']' do */
    return (unsigned) _mm_movemask_epi8(_mm_or_si128(
        _mm_cmpeq_epi8(w, _mm_set1_epi8('"')),
        _mm_or_si128(_mm_cmpeq_epi8(u, _mm_set1_epi8('{')),
            _mm_cmpeq_epi8(u, _mm_set1_epi8('}')))));
}

static inline unsigned
mask_in(__m128i w)
{
    return (unsigned) _mm_movemask_epi8(_mm_or_si128(
        _mm_cmpeq_epi8(w, _mm_set1_epi8('"')),
        _mm_cmpeq_epi8(w, _mm_set1_epi8('\\'))));
}

/*
 * The same walk sixteen bytes at a time, strings included: the bits of
 * a block that matter in the state the walk is in (outside a string:
 * quotes and brackets; inside: quotes and backslashes) are taken one
 * after the other, and at a quote the block's other mask is made from
 * the same load, where skip_nested_walk() called skip_string() for every
 * string and loaded the bytes after it again. A block wholly inside a
 * string hands the rest of it to memchr(3) (skip_long_string()). The
 * last bytes, under sixteen, go to skip_nested_walk(), which gives
 * the same answer for every text (t/unit/check_xg_jscan.c compares them
 * on random texts).
 */
static size_t
skip_nested(const char *d, size_t len, size_t i, int depth)
{
    int in_str = 0;

    if (len - i < 32) {
        return skip_nested_walk(d, len, i, depth);    /* a block or two */
    }
    while (i + 16 <= len) {
        __m128i w = _mm_loadu_si128((const __m128i *) (const void *) (d + i));
        size_t b = i;
        unsigned m;

        if (in_str) {
            m = mask_in(w);
            if (m == 0) {
                i = skip_long_string(d, len, b + 16);
                if (i == 0) {
                    return 0;
                }
                in_str = 0;
                continue;
            }
        } else {
            m = mask_out(w);
            if (m == 0) {
                i = b + 16;
                continue;
            }
        }
        i = b + 16;
        do {
            unsigned k = (unsigned) __builtin_ctz(m);
            char c = d[b + k];

            if (in_str) {
                if (c == '"') {
                    in_str = 0;
                    m = mask_out(w) & (~1u << k);
                } else if (k >= 14) {
                    /* a backslash: the byte it escapes ends the block or
                       is the next block's first */
                    i = b + k + 2;
                    break;
                } else {
                    m &= ~0u << (k + 2);
                }
            } else if (c == '"') {
                in_str = 1;
                m = mask_in(w) & (~1u << k);
            } else if ((c | 0x20) == '{') {
                if (++depth > JSCAN_MAX_DEPTH) {
                    return 0;
                }
                m &= m - 1;
            } else {                        /* '}' or ']' */
                if (--depth == 0) {
                    return b + k + 1;
                }
                m &= m - 1;
            }
        } while (m != 0);
    }
    /* the last bytes, under sixteen: the rest of the string the walk is
       in (skip_string() starts after the index it is given), then the
       walk by stops */
    if (in_str) {
        if (i > len) {
            return 0;               /* a backslash was the last byte */
        }
        i = skip_string(d, len, i - 1);
        if (i == 0) {
            return 0;
        }
    }
    return skip_nested_walk(d, len, i, depth);
}
#else
#define skip_nested skip_nested_walk
#endif

/* I is at the start of a value; returns the index after it, or 0. */
static size_t
skip_value(const char *d, size_t len, size_t i)
{
    if (i >= len) {
        return 0;
    }
    if (d[i] == '"') {
        return skip_string(d, len, i);
    }
    if (d[i] != '{' && d[i] != '[') {
        size_t s = i;

        while (i < len && !(JCLASS(d[i]) & J_ENDS)) {
            i++;
        }
        return i > s ? i : 0;
    }
    return skip_nested(d, len, i, 0);
}

/*
 * The scan of xg_jscan_object() and xg_jscan_find(): with FIND set it
 * returns XG_OK as soon as every key has its value.
 */
static int
jscan(const char *data, size_t len, const char *const *keys, int nkeys,
    struct xg_jspan *vals, int find)
{
    size_t i;
    int k, left = nkeys;

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
            const char *key = keys[k];
            size_t kl = ke - 1 - ks, j = 0;

            if (vals[k].p != NULL) {
                continue;
            }
            /* KEY is this member's key: its bytes, then its end (it is
               read only up to its NUL; the key read may hold one) */
            while (j < kl && key[j] != '\0' && key[j] == data[ks + j]) {
                j++;
            }
            if (j == kl && key[kl] == '\0') {
                vals[k].p = data + vs;
                vals[k].len = ve - vs;
                left--;
                break;      /* a key read is one of KEYS at most */
            }
        }
        if (find && left == 0) {
            return XG_OK;
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
xg_jscan_object(const char *data, size_t len, const char *const *keys,
    int nkeys, struct xg_jspan *vals)
{
    return jscan(data, len, keys, nkeys, vals, 0);
}

int
xg_jscan_find(const char *data, size_t len, const char *const *keys,
    int nkeys, struct xg_jspan *vals)
{
    return jscan(data, len, keys, nkeys, vals, 1);
}

size_t
xg_jscan_string(const char *data, size_t len, size_t i)
{
    if (i >= len || data[i] != '"') {
        return 0;
    }
    return skip_string(data, len, i);
}

size_t
xg_jscan_close(const char *data, size_t len, size_t i, int depth)
{
    if (depth < 1 || depth > JSCAN_MAX_DEPTH) {
        return 0;
    }
    return skip_nested(data, len, i, depth);
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
