/*
 * check_xg_registry.c: the gateway registry (channels refcounted with
 * subscriber sets, subscribe requests, requests in flight and queued,
 * per-client orders) and the top-level JSON scanner it is used with.
 */
#include "xg_core.h"
#include "xg_registry.h"
#include "xg_jscan.h"

#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

START_TEST(test_jscan_members)
{
    const char *keys[] = { "id", "method", "params" };
    struct xg_jspan v[3];
    const char *m = "{\"jsonrpc\":\"2.0\", \"id\" : 123456789012345678901234567890,"
                    "\"method\":\"public/get_time\",\"params\":{\"a\":[1,\"}\\\"]\"]}}";

    ck_assert_int_eq(xg_jscan_object(m, strlen(m), keys, 3, v), XG_OK);
    ck_assert_int_eq((int) v[0].len, 30);
    ck_assert(strncmp(v[0].p, "123456789012345678901234567890", 30) == 0);
    ck_assert(xg_jscan_str_eq(&v[1], "public/get_time"));
    ck_assert(!xg_jscan_str_eq(&v[1], "public/get_tim"));
    ck_assert(strncmp(v[2].p, "{\"a\":[1,\"}\\\"]\"]}", v[2].len) == 0);
    ck_assert_int_eq((int) v[2].len, (int) strlen("{\"a\":[1,\"}\\\"]\"]}"));
}
END_TEST

START_TEST(test_jscan_string_id_and_nested_keys)
{
    const char *keys[] = { "id", "channel" };
    struct xg_jspan v[2];
    const char *m = "{\"params\":{\"id\":5,\"channel\":\"x\"},\"id\":\"a\\\"b\"}";
    uint64_t u;

    ck_assert_int_eq(xg_jscan_object(m, strlen(m), keys, 2, v), XG_OK);
    /* only top-level members count */
    ck_assert(v[1].p == NULL);
    ck_assert_int_eq((int) v[0].len, 6);
    ck_assert(strncmp(v[0].p, "\"a\\\"b\"", 6) == 0);
    ck_assert_int_eq(xg_jscan_uint(&v[0], &u), XG_ERROR);
}
END_TEST

/* Keys matched whole: a prefix, a longer key, a key read with a NUL
   after a wanted key's bytes, and the empty key. */
START_TEST(test_jscan_key_match)
{
    const char *keys[] = { "id", "i", "", "ids" };
    struct xg_jspan v[4];
    const char m[] = "{\"idx\":1,\"id\\u0000\":2,\"i\0ab\":3,\"id\":4,"
                     "\"\":5}";

    ck_assert_int_eq(xg_jscan_object(m, sizeof(m) - 1, keys, 4, v), XG_OK);
    ck_assert(v[0].p != NULL && v[0].len == 1 && v[0].p[0] == '4');
    ck_assert(v[1].p == NULL);      /* "i\0ab" is not "i" */
    ck_assert(v[2].p != NULL && v[2].len == 1 && v[2].p[0] == '5');
    ck_assert(v[3].p == NULL);
}
END_TEST

START_TEST(test_jscan_bad_input)
{
    const char *keys[] = { "id" };
    struct xg_jspan v[1];
    const char *bad[] = { "", "[1,2]", "{", "{\"id\":1", "{\"id\" 1}",
        "{\"id\":\"x}", "{\"id\":1}}", "{\"id\":{\"a\":1}", "{,}", "{\"id\":}",
        "{\"a\":1,}", "  " };
    size_t i;

    for (i = 0; i < XG_NELEM(bad); i++) {
        ck_assert_msg(xg_jscan_object(bad[i], strlen(bad[i]), keys, 1, v)
            == XG_ERROR, "accepted %s", bad[i]);
    }
    ck_assert_int_eq(xg_jscan_object("{}", 2, keys, 1, v), XG_OK);
    ck_assert(v[0].p == NULL);
    ck_assert_int_eq(xg_jscan_object(" {\"id\" : 7 }\r\n", 14, keys, 1, v),
        XG_OK);
    ck_assert_int_eq((int) v[0].len, 1);
}
END_TEST

START_TEST(test_jscan_depth_limit)
{
    char buf[400];
    const char *keys[] = { "a" };
    struct xg_jspan v[1];
    int i, n = 0;

    n += sprintf(buf + n, "{\"a\":");
    for (i = 0; i < 100; i++) {
        buf[n++] = '[';
    }
    for (i = 0; i < 100; i++) {
        buf[n++] = ']';
    }
    buf[n++] = '}';
    ck_assert_int_eq(xg_jscan_object(buf, n, keys, 1, v), XG_ERROR);
}
END_TEST

START_TEST(test_jscan_uint_and_splice)
{
    struct xg_jspan s = { "18446744073709551615", 20 };
    struct xg_jspan o = { "18446744073709551616", 20 };
    uint64_t u;
    const char *m = "{\"id\":42,\"x\":1}";
    struct xg_jspan id = { m + 6, 2 };
    size_t n;
    char *out;

    ck_assert_int_eq(xg_jscan_uint(&s, &u), XG_OK);
    ck_assert(u == UINT64_MAX);
    ck_assert_int_eq(xg_jscan_uint(&o, &u), XG_ERROR);
    out = xg_jscan_splice(m, strlen(m), &id, "\"abc\"", 5, &n);
    ck_assert_str_eq(out, "{\"id\":\"abc\",\"x\":1}");
    ck_assert_int_eq((int) n, (int) strlen(out));
    free(out);
}
END_TEST

/*
 * The scanner walks words, not bytes: against the byte-at-a-time scanner
 * it replaced (below, as it was), on random objects and their random
 * mutations at every alignment, each in a buffer of exactly its length:
 * the same verdict and the same spans, and xg_jscan_find() the same spans
 * where that scan succeeded.
 */
static size_t
ref_skip_ws(const char *d, size_t len, size_t i)
{
    while (i < len && (d[i] == ' ' || d[i] == '\t' || d[i] == '\n'
            || d[i] == '\r')) {
        i++;
    }
    return i;
}

static size_t
ref_skip_string(const char *d, size_t len, size_t i)
{
    i++;
    while (i < len) {
        if (d[i] == '\\') {
            i += 2;
            continue;
        }
        if (d[i] == '"') {
            return i + 1;
        }
        i++;
    }
    return 0;
}

static size_t
ref_skip_value(const char *d, size_t len, size_t i)
{
    int depth = 0;

    if (i >= len) {
        return 0;
    }
    if (d[i] == '"') {
        return ref_skip_string(d, len, i);
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
            i = ref_skip_string(d, len, i);
            if (i == 0) {
                return 0;
            }
            continue;
        }
        if (c == '{' || c == '[') {
            if (++depth > 64) {
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

static int
ref_jscan(const char *data, size_t len, const char *const *keys, int nkeys,
    struct xg_jspan *vals)
{
    size_t i;
    int k;

    for (k = 0; k < nkeys; k++) {
        vals[k].p = NULL;
        vals[k].len = 0;
    }
    i = ref_skip_ws(data, len, 0);
    if (i >= len || data[i] != '{') {
        return XG_ERROR;
    }
    i = ref_skip_ws(data, len, i + 1);
    if (i < len && data[i] == '}') {
        return ref_skip_ws(data, len, i + 1) == len ? XG_OK : XG_ERROR;
    }
    for (;;) {
        size_t ks, ke, vs, ve;

        if (i >= len || data[i] != '"') {
            return XG_ERROR;
        }
        ks = i + 1;
        ke = ref_skip_string(data, len, i);
        if (ke == 0) {
            return XG_ERROR;
        }
        i = ref_skip_ws(data, len, ke);
        if (i >= len || data[i] != ':') {
            return XG_ERROR;
        }
        vs = ref_skip_ws(data, len, i + 1);
        ve = ref_skip_value(data, len, vs);
        if (ve == 0) {
            return XG_ERROR;
        }
        for (k = 0; k < nkeys; k++) {
            size_t kl = ke - 1 - ks;

            if (vals[k].p == NULL && strlen(keys[k]) == kl
                && memcmp(keys[k], data + ks, kl) == 0) {
                vals[k].p = data + vs;
                vals[k].len = ve - vs;
            }
        }
        i = ref_skip_ws(data, len, ve);
        if (i < len && data[i] == ',') {
            i = ref_skip_ws(data, len, i + 1);
            continue;
        }
        if (i < len && data[i] == '}') {
            return ref_skip_ws(data, len, i + 1) == len ? XG_OK : XG_ERROR;
        }
        return XG_ERROR;
    }
}

static unsigned long jrand_state = 1;

static unsigned
jrand(unsigned n)
{
    jrand_state = jrand_state * 6364136223846793005UL + 1442695040888963407UL;
    return (unsigned) ((jrand_state >> 33) % n);
}

static void
jgen_put(char *b, size_t *n, size_t cap, const char *s, size_t len)
{
    if (*n + len < cap) {
        memcpy(b + *n, s, len);
        *n += len;
    }
}

/* A random string: short or long, with escapes (quotes, backslashes). */
static void
jgen_string(char *b, size_t *n, size_t cap)
{
    static const char *const keys[] = { "id", "params", "channel", "a",
        "", "ids", "i" };
    size_t len, i;

    if (jrand(3) == 0) {
        const char *k = keys[jrand(XG_NELEM(keys))];

        jgen_put(b, n, cap, "\"", 1);
        jgen_put(b, n, cap, k, strlen(k));
        jgen_put(b, n, cap, "\"", 1);
        return;
    }
    len = jrand(4) == 0 ? jrand(80) : jrand(10);
    jgen_put(b, n, cap, "\"", 1);
    for (i = 0; i < len; i++) {
        switch (jrand(12)) {
        case 0:
            jgen_put(b, n, cap, "\\\"", 2);
            break;
        case 1:
            jgen_put(b, n, cap, "\\\\", 2);
            break;
        case 2:
            jgen_put(b, n, cap, "{", 1);
            break;
        case 3:
            jgen_put(b, n, cap, "]", 1);
            break;
        default:
            jgen_put(b, n, cap, "x", 1);
            break;
        }
    }
    jgen_put(b, n, cap, "\"", 1);
}

static void
jgen_value(char *b, size_t *n, size_t cap, int depth)
{
    static const char *const ws[] = { "", "", "", " ", "\n\t", "\r " };
    static const char *const lits[] = { "1", "-12.5e3", "true", "null",
        "123456789012345678901234567890", "0" };
    const char *sp = ws[jrand(XG_NELEM(ws))];
    int i, m;

    jgen_put(b, n, cap, sp, strlen(sp));
    switch (depth > 5 ? jrand(2) : jrand(4)) {
    case 0:
        jgen_string(b, n, cap);
        break;
    case 1: {
        const char *l = lits[jrand(XG_NELEM(lits))];

        jgen_put(b, n, cap, l, strlen(l));
        break;
    }
    case 2:
        jgen_put(b, n, cap, "[", 1);
        m = (int) jrand(5);
        for (i = 0; i < m; i++) {
            if (i > 0) {
                jgen_put(b, n, cap, ",", 1);
            }
            jgen_value(b, n, cap, depth + 1);
        }
        jgen_put(b, n, cap, "]", 1);
        break;
    default:
        jgen_put(b, n, cap, "{", 1);
        m = (int) jrand(5);
        for (i = 0; i < m; i++) {
            if (i > 0) {
                jgen_put(b, n, cap, ",", 1);
            }
            jgen_string(b, n, cap);
            sp = ws[jrand(XG_NELEM(ws))];
            jgen_put(b, n, cap, sp, strlen(sp));
            jgen_put(b, n, cap, ":", 1);
            jgen_value(b, n, cap, depth + 1);
        }
        jgen_put(b, n, cap, "}", 1);
        break;
    }
}

START_TEST(test_jscan_words_as_bytes)
{
    static const char mut[] = "\"\\{}[]:, x\0\x80";
    const char *keys[] = { "id", "params", "channel", "", "ids" };
    struct xg_jspan v[5], w[5];
    char b[4096];
    int t, k, ok = 0, found = 0;

    for (t = 0; t < 40000; t++) {
        size_t n = 0, off = jrand(8), j, nmut;
        char *buf;
        int r, rr, nk = 1 + (int) jrand(XG_NELEM(keys));

        jgen_put(b, &n, sizeof(b), "{", 1);
        for (k = 0; k < (int) jrand(6); k++) {
            if (k > 0) {
                jgen_put(b, &n, sizeof(b), ",", 1);
            }
            jgen_string(b, &n, sizeof(b));
            jgen_put(b, &n, sizeof(b), ":", 1);
            jgen_value(b, &n, sizeof(b), 0);
        }
        jgen_put(b, &n, sizeof(b), "}", 1);
        /* half of them mutated: bytes replaced, or cut short */
        nmut = jrand(2) ? 0 : 1 + jrand(3);
        for (j = 0; j < nmut && n > 0; j++) {
            b[jrand((unsigned) n)] = mut[jrand(sizeof(mut) - 1)];
        }
        if (jrand(8) == 0 && n > 0) {
            n = jrand((unsigned) n);
        }
        /* at OFF in a buffer that ends where the text does */
        buf = malloc(off + n + 1);
        memcpy(buf + off, b, n);
        rr = ref_jscan(buf + off, n, keys, nk, v);
        r = xg_jscan_object(buf + off, n, keys, nk, w);
        ck_assert_msg(r == rr, "case %d: %d, not %d: %.*s", t, r, rr,
            (int) n, b);
        for (k = 0; rr == XG_OK && k < nk; k++) {
            ck_assert_msg(v[k].p == w[k].p && v[k].len == w[k].len,
                "case %d key %s: %.*s", t, keys[k], (int) n, b);
        }
        if (rr == XG_OK) {
            ok++;
            ck_assert_int_eq(xg_jscan_find(buf + off, n, keys, nk, w), XG_OK);
            for (k = 0; k < nk; k++) {
                ck_assert_msg(v[k].p == w[k].p && v[k].len == w[k].len,
                    "find, case %d key %s: %.*s", t, keys[k], (int) n, b);
                found += v[k].p != NULL;
            }
        }
        free(buf);
    }
    /* the generator reaches both verdicts and the keys */
    ck_assert_int_gt(ok, 10000);
    ck_assert_int_lt(ok, 38000);
    ck_assert_int_gt(found, 5000);
}
END_TEST

/* Three clients, one channel: one upstream subscribe, refcounted leave. */
START_TEST(test_refcount_one_upstream_subscribe)
{
    struct xg_registry *r = xg_registry_new();
    struct xg_reg_client *a = xg_registry_client_new(r, (void *) 1, NULL);
    struct xg_reg_client *b = xg_registry_client_new(r, (void *) 2, NULL);
    struct xg_reg_client *c = xg_registry_client_new(r, (void *) 3, NULL);
    struct xg_reg_channel *ch, *ch2;
    struct xg_reg_subreq *done[4];
    size_t ndone;

    ck_assert_int_eq(xg_registry_subscribe(r, a, "ticker.X", 10, &ch),
        XG_SUB_NEW);
    ck_assert_int_eq(ch->state, XG_CHAN_PENDING);
    ck_assert_int_eq(xg_registry_subscribe(r, b, "ticker.X", 10, &ch2),
        XG_SUB_WAIT);
    ck_assert_ptr_eq(ch, ch2);
    ck_assert_int_eq(xg_registry_subscribe(r, a, "ticker.X", 10, &ch2),
        XG_SUB_ALREADY);
    ck_assert_uint_eq(ch->nsubs, 2);
    xg_registry_channel_resolve(r, ch, 1, NULL, done, &ndone);
    ck_assert_uint_eq(ndone, 0);
    ck_assert_int_eq(ch->state, XG_CHAN_CONFIRMED);
    ck_assert_int_eq(xg_registry_subscribe(r, c, "ticker.X", 10, &ch2),
        XG_SUB_LIVE);
    ck_assert_uint_eq(ch->nsubs, 3);
    ck_assert_uint_eq(xg_registry_nchannels(r), 1);

    ck_assert_int_eq(xg_registry_unsubscribe(r, a, ch, 100), 1);
    ck_assert_int_eq(xg_registry_unsubscribe(r, a, ch, 100), 0);
    ck_assert(xg_registry_idle_next(r) == NULL);
    xg_registry_client_free(r, b, 0);          /* b leaves without asking */
    ck_assert(xg_registry_idle_next(r) == NULL);
    ck_assert_uint_eq(xg_registry_unsubscribe_all(r, c, 200), 1);
    ch2 = xg_registry_idle_next(r);
    ck_assert_ptr_eq(ch2, ch);
    ck_assert(ch->idle_since_ms == 200);
    ck_assert(xg_registry_idle_next(r) == NULL);
    xg_registry_channel_delete(r, ch);
    ck_assert_uint_eq(xg_registry_nchannels(r), 0);
    xg_registry_client_free(r, a, 0);
    xg_registry_client_free(r, c, 0);
    xg_registry_free(r);
}
END_TEST

/*
 * A client that goes away without unsubscribing leaves its channels idle
 * from the time it went: the linger counts from then (it was stamped 1,
 * so every linger had run out at once).
 */
START_TEST(test_client_free_stamps_idle)
{
    struct xg_registry *r = xg_registry_new();
    struct xg_reg_client *a = xg_registry_client_new(r, NULL, NULL);
    struct xg_reg_channel *ch;
    struct xg_reg_subreq *done[1];
    size_t ndone;

    ck_assert_int_eq(xg_registry_subscribe(r, a, "ticker.Y", 10, &ch),
        XG_SUB_NEW);
    xg_registry_channel_resolve(r, ch, 1, NULL, done, &ndone);
    xg_registry_client_free(r, a, 123456);
    ck_assert_ptr_eq(xg_registry_idle_next(r), ch);
    ck_assert(ch->idle_since_ms == 123456);
    xg_registry_channel_delete(r, ch);
    xg_registry_free(r);
}
END_TEST

/*
 * A name given with its length may hold any byte (the channel of an
 * upstream message, scanned, not decoded): "ticker.X" followed by a NUL
 * and more bytes is not the channel "ticker.X", and looking it up reads
 * nothing past either name. strncmp stopped at the NUL and the check of
 * the byte after the stored name read past its end (fuzz_gateway: heap
 * overflow in xg_registry_channel_n; without ASan a wrong match).
 * Every suffix is tried, so that some land in the channel's bucket.
 */
START_TEST(test_channel_n_any_bytes)
{
    struct xg_registry *r = xg_registry_new();
    struct xg_reg_client *a = xg_registry_client_new(r, NULL, NULL);
    struct xg_reg_channel *ch;
    char name[16] = "ticker.X";
    unsigned i;

    ck_assert_int_eq(xg_registry_subscribe(r, a, "ticker.X", 10, &ch),
        XG_SUB_NEW);
    ck_assert_ptr_eq(xg_registry_channel_n(r, "ticker.XY", 8), ch);
    ck_assert_ptr_null(xg_registry_channel_n(r, "ticker.", 7));
    for (i = 0; i < 65536; i++) {
        name[8] = '\0';
        name[9] = (char) (i & 0xff);
        name[10] = (char) (i >> 8);
        ck_assert_ptr_null(xg_registry_channel_n(r, name, 11));
    }
    xg_registry_client_free(r, a, 0);
    xg_registry_free(r);
}
END_TEST

/* One client's unsubscribe_all never touches another's channels. */
START_TEST(test_unsubscribe_all_is_per_client)
{
    struct xg_registry *r = xg_registry_new();
    struct xg_reg_client *a = xg_registry_client_new(r, NULL, NULL);
    struct xg_reg_client *b = xg_registry_client_new(r, NULL, NULL);
    struct xg_reg_channel *x, *y;

    xg_registry_subscribe(r, a, "x", 10, &x);
    xg_registry_subscribe(r, a, "y", 10, &y);
    xg_registry_subscribe(r, b, "x", 10, &x);
    ck_assert_uint_eq(xg_registry_unsubscribe_all(r, a, 5), 2);
    ck_assert_uint_eq(x->nsubs, 1);
    ck_assert_ptr_eq(x->subs[0], b);
    ck_assert_ptr_eq(xg_registry_idle_next(r), y);
    ck_assert(xg_registry_idle_next(r) == NULL);
    /* a comes back to y before it was unsubscribed upstream */
    ck_assert_int_eq(xg_registry_subscribe(r, a, "y", 10, &y), XG_SUB_WAIT);
    ck_assert_uint_eq(b->nchans, 1);
    xg_registry_client_free(r, a, 0);
    xg_registry_client_free(r, b, 0);
    xg_registry_free(r);
}
END_TEST

/* Subscribe requests are answered with exactly the confirmed channels. */
START_TEST(test_subreq_diff)
{
    struct xg_registry *r = xg_registry_new();
    struct xg_reg_client *a = xg_registry_client_new(r, NULL, NULL);
    struct xg_reg_client *b = xg_registry_client_new(r, NULL, NULL);
    char *chans[] = { "good", "bad" };
    struct xg_reg_subreq *sa, *sb, *done[4];
    struct xg_reg_channel *g, *bd;
    size_t ndone;

    sa = xg_registry_subreq_new(r, a, "1", chans, 2);
    ck_assert_int_eq(xg_registry_subscribe(r, a, "good", 10, &g), XG_SUB_NEW);
    xg_registry_subreq_wait(sa, 0, g);
    ck_assert_int_eq(xg_registry_subscribe(r, a, "bad", 10, &bd), XG_SUB_NEW);
    xg_registry_subreq_wait(sa, 1, bd);
    sb = xg_registry_subreq_new(r, b, "\"s\"", chans, 1);
    ck_assert_int_eq(xg_registry_subscribe(r, b, "good", 10, &g),
        XG_SUB_WAIT);
    xg_registry_subreq_wait(sb, 0, g);

    xg_registry_channel_resolve(r, bd, 0, NULL, done, &ndone);
    ck_assert_uint_eq(ndone, 0);
    ck_assert_uint_eq(a->nchans, 1);           /* "bad" is gone */
    ck_assert(xg_registry_channel(r, "bad") == NULL);
    xg_registry_channel_resolve(r, g, 1, NULL, done, &ndone);
    ck_assert_uint_eq(ndone, 2);
    ck_assert_ptr_eq(done[0], sa);
    ck_assert_ptr_eq(done[1], sb);
    ck_assert_int_eq(sa->status[0], 1);
    ck_assert_int_eq(sa->status[1], -1);
    ck_assert_int_eq(sb->status[0], 1);
    ck_assert_str_eq(sb->client_id, "\"s\"");
    xg_registry_subreq_free(r, sa);
    xg_registry_subreq_free(r, sb);
    ck_assert_uint_eq(a->nsubreqs, 0);
    xg_registry_client_free(r, a, 0);
    xg_registry_client_free(r, b, 0);
    xg_registry_free(r);
}
END_TEST

/* A refused restored channel: waiters answered, subscribers and channel
   kept (verified resubscribe retries it). */
START_TEST(test_answer_waiters_keeps_channel)
{
    struct xg_registry *r = xg_registry_new();
    struct xg_reg_client *a = xg_registry_client_new(r, NULL, NULL);
    struct xg_reg_client *b = xg_registry_client_new(r, NULL, NULL);
    char *chans[] = { "book.X.100ms" };
    struct xg_reg_subreq *sb, *done[2];
    struct xg_reg_channel *ch, *ch2;
    size_t ndone;

    ck_assert_int_eq(xg_registry_subscribe(r, a, chans[0], 10, &ch),
        XG_SUB_NEW);
    xg_registry_channel_resolve(r, ch, 1, NULL, done, &ndone);
    xg_registry_upstream_reset(r);          /* a reconnect */
    ck_assert_int_eq(ch->state, XG_CHAN_PENDING);
    sb = xg_registry_subreq_new(r, b, "7", chans, 1);
    ck_assert_int_eq(xg_registry_subscribe(r, b, chans[0], 10, &ch2),
        XG_SUB_WAIT);
    ck_assert_ptr_eq(ch, ch2);
    xg_registry_subreq_wait(sb, 0, ch);
    xg_registry_channel_answer_waiters(r, ch, 1, done, &ndone);
    ck_assert_uint_eq(ndone, 1);
    ck_assert_ptr_eq(done[0], sb);
    ck_assert_int_eq(sb->status[0], 1);
    ck_assert_uint_eq(ch->nwaiters, 0);
    ck_assert_uint_eq(ch->nsubs, 2);
    ck_assert_int_eq(ch->state, XG_CHAN_PENDING);
    ck_assert(xg_registry_channel(r, chans[0]) == ch);
    ck_assert_uint_eq(b->nsubreqs, 0);
    xg_registry_subreq_free(r, sb);
    /* confirmed later: live for both */
    xg_registry_channel_resolve(r, ch, 1, NULL, done, &ndone);
    ck_assert_uint_eq(ndone, 0);
    ck_assert_int_eq(ch->state, XG_CHAN_CONFIRMED);
    ck_assert_uint_eq(a->nchans, 1);
    ck_assert_uint_eq(b->nchans, 1);
    xg_registry_client_free(r, a, 0);
    xg_registry_client_free(r, b, 0);
    xg_registry_free(r);
}
END_TEST

/* A client that leaves while its subscribe waits leaves nothing behind. */
START_TEST(test_client_leaves_while_pending)
{
    struct xg_registry *r = xg_registry_new();
    struct xg_reg_client *a = xg_registry_client_new(r, NULL, NULL);
    char *chans[] = { "p" };
    struct xg_reg_subreq *sa, *done[2];
    struct xg_reg_channel *p;
    size_t ndone;

    sa = xg_registry_subreq_new(r, a, "9", chans, 1);
    xg_registry_subscribe(r, a, "p", 10, &p);
    p->sent = 1;
    xg_registry_subreq_wait(sa, 0, p);
    xg_registry_client_free(r, a, 0);
    ck_assert_uint_eq(p->nwaiters, 0);
    ck_assert_uint_eq(p->nsubs, 0);
    /* idle while in flight: the module waits for the answer */
    ck_assert_ptr_eq(xg_registry_idle_next(r), p);
    xg_registry_channel_resolve(r, p, 1, NULL, done, &ndone);
    ck_assert_uint_eq(ndone, 0);
    /* confirmed with nobody left: idle again, to unsubscribe upstream */
    ck_assert_ptr_eq(xg_registry_idle_next(r), p);
    xg_registry_free(r);
}
END_TEST

/* Requests: fresh ids, lookup, expiry, queue order, client detach. */
START_TEST(test_requests)
{
    struct xg_registry *r = xg_registry_new();
    struct xg_reg_client *a = xg_registry_client_new(r, NULL, NULL);
    struct xg_reg_client *b = xg_registry_client_new(r, NULL, NULL);
    struct xg_reg_req *q1, *q2, *q3, *q;
    uint64_t id1, id2;

    q1 = xg_registry_req_new(1, a, "1", "public/get_time", "{}", 2);
    q2 = xg_registry_req_new(1, b, "1", "private/buy", "{}", 2);
    id1 = xg_registry_inflight_add(r, q1, 1000);
    id2 = xg_registry_inflight_add(r, q2, 2000);
    ck_assert(id1 != id2);
    ck_assert_uint_eq(xg_registry_ninflight(r), 2);
    q = xg_registry_inflight_take(r, id1);
    ck_assert_ptr_eq(q, q1);
    xg_registry_req_free(q);
    ck_assert(xg_registry_inflight_take(r, id1) == NULL);

    xg_registry_client_free(r, b, 0);           /* its answer goes nowhere */
    q = xg_registry_inflight_take(r, id2);
    ck_assert_ptr_eq(q, q2);
    ck_assert(q->client == NULL);
    xg_registry_req_free(q);

    q1 = xg_registry_req_new(1, a, "1", "m1", NULL, 0);
    q2 = xg_registry_req_new(1, a, "2", "m2", NULL, 0);
    q3 = xg_registry_req_new(1, NULL, NULL, "m3", NULL, 0);
    q1->deadline_ms = 50;
    xg_registry_queue_push(r, q1, 0);
    xg_registry_queue_push(r, q2, 0);
    xg_registry_queue_push(r, q3, 1);
    ck_assert_uint_eq(xg_registry_nqueued(r), 3);
    xg_registry_queue_take(r, q1);              /* its deadline passed */
    ck_assert_uint_eq(xg_registry_nqueued(r), 2);
    xg_registry_req_free(q1);
    xg_registry_client_free(r, a, 0);           /* drops q2 */
    ck_assert_uint_eq(xg_registry_nqueued(r), 1);
    ck_assert_ptr_eq(xg_registry_queue_pop(r), q3);
    xg_registry_req_free(q3);
    ck_assert(xg_registry_queue_pop(r) == NULL);
    xg_registry_free(r);
}
END_TEST

struct visit {
    struct xg_reg_req *seen[4];
    int                n;
};

static void
visit_cb(struct xg_reg_req *q, void *arg)
{
    struct visit *v = arg;

    if (v->n < 4) {
        v->seen[v->n] = q;
    }
    v->n++;
    q->kind = 7;            /* the module may re-mark a request in place */
    q->deadline_ms = 0;
}

/* Every request in flight, oldest first, none of the queued ones. */
START_TEST(test_inflight_foreach)
{
    struct xg_registry *r = xg_registry_new();
    struct xg_reg_client *a = xg_registry_client_new(r, NULL, NULL);
    struct xg_reg_req *q1, *q2, *q3;
    struct visit v = { { NULL }, 0 };

    xg_registry_inflight_foreach(r, visit_cb, &v);
    ck_assert_int_eq(v.n, 0);
    q1 = xg_registry_req_new(1, a, "1", "private/buy", "{}", 2);
    q2 = xg_registry_req_new(1, NULL, NULL, "public/test", "{}", 2);
    q3 = xg_registry_req_new(1, a, "2", "private/sell", "{}", 2);
    xg_registry_inflight_add(r, q1, 100);
    xg_registry_inflight_add(r, q2, 200);
    xg_registry_queue_push(r, q3, 0);
    xg_registry_inflight_foreach(r, visit_cb, &v);
    ck_assert_int_eq(v.n, 2);
    ck_assert_ptr_eq(v.seen[0], q1);
    ck_assert_ptr_eq(v.seen[1], q2);
    ck_assert_int_eq(q1->kind, 7);
    ck_assert_int_eq(q3->kind, 1);
    ck_assert_ptr_eq(xg_registry_inflight_take(r, q1->up_id), q1);
    xg_registry_req_free(q1);
    xg_registry_client_free(r, a, 0);
    xg_registry_free(r);
}
END_TEST

/* Many ids in the table at once. */
START_TEST(test_many_inflight)
{
    struct xg_registry *r = xg_registry_new();
    uint64_t ids[5000];
    int i;

    for (i = 0; i < 5000; i++) {
        ids[i] = xg_registry_inflight_add(r,
            xg_registry_req_new(2, NULL, NULL, NULL, NULL, 0), 0);
    }
    for (i = 4999; i >= 0; i -= 2) {
        struct xg_reg_req *q = xg_registry_inflight_take(r, ids[i]);

        ck_assert(q != NULL && q->up_id == ids[i]);
        xg_registry_req_free(q);
    }
    ck_assert_uint_eq(xg_registry_ninflight(r), 2500);
    xg_registry_free(r);
}
END_TEST

START_TEST(test_upstream_reset_and_limit)
{
    struct xg_registry *r = xg_registry_new();
    struct xg_reg_client *a = xg_registry_client_new(r, NULL, NULL);
    struct xg_reg_channel *x, *y, *z;
    struct xg_reg_subreq *done[2];
    size_t ndone;

    xg_registry_subscribe(r, a, "x", 2, &x);
    xg_registry_subscribe(r, a, "y", 2, &y);
    ck_assert_int_eq(xg_registry_subscribe(r, a, "z", 2, &z), XG_ERROR);
    xg_registry_channel_resolve(r, x, 1, NULL, done, &ndone);
    xg_registry_unsubscribe(r, a, y, 1);
    y->state = XG_CHAN_UNSUBSCRIBING;
    xg_registry_upstream_reset(r);
    ck_assert_int_eq(x->state, XG_CHAN_PENDING);
    ck_assert(xg_registry_channel(r, "y") == NULL);
    ck_assert(xg_registry_idle_next(r) == NULL);
    xg_registry_client_free(r, a, 0);
    xg_registry_free(r);
}
END_TEST

START_TEST(test_orders)
{
    struct xg_registry *r = xg_registry_new();
    struct xg_reg_client *a = xg_registry_client_new(r, NULL, NULL);

    ck_assert_int_eq(xg_registry_order_add(a, "ETH-1"), 1);
    ck_assert_int_eq(xg_registry_order_add(a, "ETH-1"), 0);
    ck_assert_int_eq(xg_registry_order_add(a, "ETH-2"), 1);
    ck_assert_uint_eq(a->norders, 2);
    ck_assert_int_eq(xg_registry_order_has(a, "ETH-1"), 1);
    ck_assert_int_eq(xg_registry_order_has(a, "ETH-3"), 0);
    ck_assert_int_eq(xg_registry_order_remove(a, "ETH-1"), 1);
    ck_assert_int_eq(xg_registry_order_remove(a, "ETH-1"), 0);
    ck_assert_int_eq(xg_registry_order_has(a, "ETH-1"), 0);
    ck_assert_str_eq(a->orders[0], "ETH-2");
    xg_registry_client_free(r, a, 0);
    xg_registry_free(r);
}
END_TEST

static int ext_freed;

static void
ext_free(void *p)
{
    ext_freed++;
    free(p);
}

/* The module's per-channel state is freed whoever deletes the channel. */
START_TEST(test_channel_ext_freed)
{
    struct xg_registry *r = xg_registry_new();
    struct xg_reg_client *a = xg_registry_client_new(r, NULL, NULL);
    struct xg_reg_channel *x, *y, *z;
    struct xg_reg_subreq *done[1];
    size_t ndone;

    ext_freed = 0;
    xg_registry_set_channel_free(r, ext_free);
    xg_registry_subscribe(r, a, "x", 10, &x);
    xg_registry_subscribe(r, a, "y", 10, &y);
    xg_registry_subscribe(r, a, "z", 10, &z);
    x->ext = xg_malloc(8);
    y->ext = xg_malloc(8);
    z->ext = xg_malloc(8);
    xg_registry_channel_resolve(r, x, 0, NULL, done, &ndone);  /* refused */
    ck_assert_int_eq(ext_freed, 1);
    xg_registry_unsubscribe(r, a, y, 1);
    xg_registry_upstream_reset(r);                     /* nobody wants y */
    ck_assert_int_eq(ext_freed, 2);
    xg_registry_client_free(r, a, 0);
    xg_registry_free(r);                               /* z */
    ck_assert_int_eq(ext_freed, 3);
}
END_TEST

/*
 * xg_jscan_string() and xg_jscan_close(), the walk of the rest of a
 * message whose start a reader matched byte for byte: strings, escapes,
 * truncation and the depth limit, counted from the outermost bracket.
 */
START_TEST(test_jscan_close_cases)
{
    static const struct {
        const char *text;       /* the rest, after DEPTH opened brackets */
        int         depth;
        size_t      end;        /* what xg_jscan_close() returns */
    } cases[] = {
        { "}", 1, 1 },
        { "\"a\":1}", 1, 6 },
        { "\"a\":1}}  ", 2, 7 },
        { "\"a\":\"}]\\\"{\"}x", 1, 12 },    /* brackets in a string */
        { "\"a\":[1,{\"b\":[]}]},", 1, 17 },
        { "\"a\":1", 1, 0 },                  /* truncated */
        { "\"a\":\"xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx", 1, 0 },
        { "\"a\":\"x\\\"}", 1, 0 },         /* the quote is escaped */
        { "\"a\":\"x\\", 1, 0 },             /* a backslash ends it */
        { "\"a\":1}", 2, 0 },                 /* one level short */
        { "\"a\":1}", 0, 0 },                 /* no level opened */
        { "\"a\":1}", 65, 0 },
        { "", 1, 0 },
    };
    char buf[200];
    size_t i;
    int n;

    for (i = 0; i < XG_NELEM(cases); i++) {
        const char *t = cases[i].text;

        ck_assert_msg(xg_jscan_close(t, strlen(t), 0, cases[i].depth)
            == cases[i].end, "case %zu: %s", i, t);
    }
    /* a string: from its opening quote to after its closing one */
    ck_assert_uint_eq(xg_jscan_string("\"ab\\\"c\":", 8, 0), 7);
    ck_assert_uint_eq(xg_jscan_string("x\"\"", 3, 1), 3);
    ck_assert_uint_eq(xg_jscan_string("\"ab", 3, 0), 0);
    ck_assert_uint_eq(xg_jscan_string("\"ab\\", 4, 0), 0);
    ck_assert_uint_eq(xg_jscan_string("\"ab\\\"", 5, 0), 0);
    ck_assert_uint_eq(xg_jscan_string("ab\"", 3, 0), 0);
    ck_assert_uint_eq(xg_jscan_string("\"", 1, 1), 0);
    /* 64 levels in all, the ones opened before I among them */
    for (n = 0; n < 63; n++) {
        buf[n] = '[';
    }
    memset(buf + n, ']', 64);
    ck_assert_uint_eq(xg_jscan_close(buf, 127, 0, 1), 127);
    ck_assert_uint_eq(xg_jscan_close(buf, 127, 0, 2), 0);
    ck_assert_uint_eq(xg_jscan_close(buf + 1, 126, 0, 2), 126);
    ck_assert_uint_eq(xg_jscan_close(buf + 62, 65, 0, 63), 65);
    ck_assert_uint_eq(xg_jscan_close(buf + 62, 65, 0, 64), 0);
}
END_TEST

/*
 * The same walk against the reference scan of the whole container (as
 * the full scan of a Deribit notification walks its params): random
 * objects and mutations, each in a buffer of exactly its length, the
 * rest walked from after the first member's key: the same end, or 0 for
 * both.
 */
START_TEST(test_jscan_close_as_reference)
{
    static const char mut[] = "\"\\{}[]:, x\0\x80";
    char b[4096];
    int t, ok = 0;

    for (t = 0; t < 40000; t++) {
        size_t n = 0, j, nmut, ks, r, rr;
        char *buf;
        int k;

        jgen_put(b, &n, sizeof(b), "{\"channel\":", 11);
        jgen_string(b, &n, sizeof(b));
        for (k = 0; k < (int) jrand(5); k++) {
            jgen_put(b, &n, sizeof(b), ",", 1);
            jgen_string(b, &n, sizeof(b));
            jgen_put(b, &n, sizeof(b), ":", 1);
            jgen_value(b, &n, sizeof(b), 1);
        }
        jgen_put(b, &n, sizeof(b), "}", 1);
        if (jrand(2) == 0) {
            jgen_put(b, &n, sizeof(b), "}", 1);
        }
        /* mutated after the head: bytes replaced, or cut short */
        nmut = jrand(2) ? 0 : 1 + jrand(3);
        for (j = 0; j < nmut && n > 12; j++) {
            b[12 + jrand((unsigned) n - 12)] = mut[jrand(sizeof(mut) - 1)];
        }
        if (jrand(8) == 0) {
            n = 11 + jrand((unsigned) n - 11);
        }
        buf = malloc(n + 1);
        memcpy(buf, b, n);
        rr = ref_skip_value(buf, n, 0);
        ks = xg_jscan_string(buf, n, 11);
        r = ks == 0 ? 0 : xg_jscan_close(buf, n, ks, 1);
        ck_assert_msg(r == rr, "case %d: %zu, not %zu: %.*s", t, r, rr,
            (int) n, b);
        ok += r != 0;
        free(buf);
    }
    ck_assert_int_gt(ok, 10000);
    ck_assert_int_lt(ok, 38000);
}
END_TEST

static Suite *
registry_suite(void)
{
    Suite *s = suite_create("xg_registry");
    TCase *tc = tcase_create("core");

    tcase_add_test(tc, test_jscan_members);
    tcase_add_test(tc, test_jscan_string_id_and_nested_keys);
    tcase_add_test(tc, test_jscan_key_match);
    tcase_add_test(tc, test_jscan_bad_input);
    tcase_add_test(tc, test_jscan_depth_limit);
    tcase_add_test(tc, test_jscan_uint_and_splice);
    tcase_add_test(tc, test_jscan_words_as_bytes);
    tcase_add_test(tc, test_jscan_close_cases);
    tcase_add_test(tc, test_jscan_close_as_reference);
    tcase_add_test(tc, test_refcount_one_upstream_subscribe);
    tcase_add_test(tc, test_unsubscribe_all_is_per_client);
    tcase_add_test(tc, test_client_free_stamps_idle);
    tcase_add_test(tc, test_subreq_diff);
    tcase_add_test(tc, test_answer_waiters_keeps_channel);
    tcase_add_test(tc, test_client_leaves_while_pending);
    tcase_add_test(tc, test_requests);
    tcase_add_test(tc, test_inflight_foreach);
    tcase_add_test(tc, test_many_inflight);
    tcase_add_test(tc, test_upstream_reset_and_limit);
    tcase_add_test(tc, test_orders);
    tcase_add_test(tc, test_channel_ext_freed);
    tcase_add_test(tc, test_channel_n_any_bytes);
    suite_add_tcase(s, tc);
    return s;
}

int
main(void)
{
    SRunner *sr = srunner_create(registry_suite());
    int failed;

    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? 0 : 1;
}
