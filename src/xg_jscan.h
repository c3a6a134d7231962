/*
 * xg_jscan.h: a byte scanner for the top level of one JSON object.
 *
 * The routing path must not build a jansson tree for every message it
 * only forwards (DESIGN.md §3: a tree costs 6-10 us, a scan 0.03 us), and
 * it must keep a client's request id byte for byte (integers of any size,
 * strings with escapes). jansson offers neither a raw-text view of a
 * member nor integers beyond long long, so this small scanner finds the
 * raw text of chosen top-level members and nothing more. It checks the
 * structure it walks (balanced brackets, closed strings), not the full
 * JSON grammar: callers that need a valid document still parse it.
 */
#ifndef XG_JSCAN_H
#define XG_JSCAN_H

#include "xg_core.h"

#include <stddef.h>
#include <stdint.h>

/* The raw text of one value; p == NULL when the member is absent. */
struct xg_jspan {
    const char *p;
    size_t      len;
};

/*
 * Scans DATA (LEN bytes), which must hold one JSON object, for the
 * top-level members named KEYS[0..NKEYS-1] and fills VALS[i] with the raw
 * text of each one's value (strings keep their quotes). KEYS are distinct;
 * a key written with escapes never matches, and a member named twice
 * gives its first value. Nested values deeper than 64 levels are refused.
 * Returns XG_OK, or XG_ERROR when DATA is not one object.
 */
int xg_jscan_object(const char *data, size_t len, const char *const *keys,
    int nkeys, struct xg_jspan *vals);

/*
 * The same scan, but it ends with XG_OK as soon as every one of KEYS has
 * its value: what follows is neither read nor checked. For a value whose
 * text a scan of the object around it has walked already (balanced
 * brackets, closed strings), such as a notification's "params".
 */
int xg_jscan_find(const char *data, size_t len, const char *const *keys,
    int nkeys, struct xg_jspan *vals);

/* 1 when SPAN is the JSON string S written without escapes, else 0. */
int xg_jscan_str_eq(const struct xg_jspan *span, const char *s);

/*
 * Parses SPAN as a non-negative decimal integer that fits in uint64_t.
 * Returns XG_OK or XG_ERROR.
 */
int xg_jscan_uint(const struct xg_jspan *span, uint64_t *v);

/*
 * Returns a malloc'd copy of DATA with the bytes of SPAN (which must lie
 * inside DATA) replaced by REPL; *OUTLEN receives its length. The copy is
 * NUL-terminated for convenience.
 */
char *xg_jscan_splice(const char *data, size_t len, const struct xg_jspan *span,
    const char *repl, size_t repl_len, size_t *outlen);

#endif
