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

/*
 * For a reader that matched the start of a message byte for byte and
 * walks only the rest: DATA[I] must be a '"'; returns the index after the
 * string's closing quote (a backslash escapes the byte after it), or 0
 * when DATA[I] is not a quote or DATA ends inside the string.
 */
size_t xg_jscan_string(const char *data, size_t len, size_t i);

/*
 * The rest of a container whose text before I is DEPTH (1 to 64) levels
 * of opened brackets and nothing unclosed else (no string left open):
 * walks DATA from I as xg_jscan_object() walks a member's value (balanced
 * brackets, closed strings, at most 64 levels in all) and returns the
 * index after the bracket that closes the outermost level, or 0 when DATA
 * ends first, nests too deep, or DEPTH is out of range.
 */
size_t xg_jscan_close(const char *data, size_t len, size_t i, int depth);

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
