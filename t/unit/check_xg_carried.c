/*
 * check_xg_carried.c: the records of the entries a bell carries
 * (xg_redis_carried_put(), xg_redis_carried_next() in src/xg_redis.c):
 * what the core writes the edge reads back, byte for byte, up to the
 * largest seq; every malformed record is refused without reading past
 * the buffer (the sanitizer build tells), and leaves the cursor alone.
 */
#include "xg_redis.h"

#include <check.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

START_TEST(round_trip)
{
    static const struct {
        const char *chan, *data;
        uint64_t seq;
    } in[] = {
        { "book.BTC-PERPETUAL.raw", "{\"a\":1}\n{\"b\":2}", 1 },
        { "trades.BTC-PERPETUAL.raw", "", 9 },
        { "x", "12 34\n", 1234567890123ULL },
        { "ticker.ETH-PERPETUAL.100ms", "y", UINT64_MAX },
    };
    char buf[1024], *w = buf;
    const char *p, *end;
    struct xg_redis_carried rec;
    size_t i, cl, dl;
    char digits[24];

    for (i = 0; i < sizeof(in) / sizeof(in[0]); i++) {
        cl = strlen(in[i].chan);
        dl = strlen(in[i].data);
        w += xg_redis_carried_put(w, in[i].chan, cl, in[i].seq, in[i].data,
            dl);
        ck_assert_uint_le((size_t) (w - buf), sizeof(buf));
    }
    /* the head is at most XG_REDIS_CARRIED_HEAD besides the name */
    ck_assert_uint_le(xg_redis_carried_put(buf + 512, "c", 1, UINT64_MAX,
        "", 0), 1 + XG_REDIS_CARRIED_HEAD);
    p = buf;
    end = w;
    for (i = 0; i < sizeof(in) / sizeof(in[0]); i++) {
        ck_assert_int_eq(xg_redis_carried_next(&p, end, &rec), 1);
        ck_assert_uint_eq(rec.clen, strlen(in[i].chan));
        ck_assert(memcmp(rec.chan, in[i].chan, rec.clen) == 0);
        ck_assert(rec.seqn == in[i].seq);
        snprintf(digits, sizeof(digits), "%llu",
            (unsigned long long) in[i].seq);
        ck_assert_uint_eq(rec.seqlen, strlen(digits));
        ck_assert(memcmp(rec.seq, digits, rec.seqlen) == 0);
        ck_assert_uint_eq(rec.len, strlen(in[i].data));
        ck_assert(memcmp(rec.data, in[i].data, rec.len) == 0);
    }
    ck_assert_int_eq(xg_redis_carried_next(&p, end, &rec), 0);
    ck_assert(p == end);
}
END_TEST

/* Each refused, with *P where it was. Copied to a buffer of its own
   size, so that a read past it is the sanitizer's to see. */
START_TEST(malformed)
{
    static const char *bad[] = {
        "book",                     /* no space */
        " 1 1\nx",                  /* no channel */
        "book 0 1\nx",              /* seq 0 */
        "book 01 1\nx",             /* a leading 0 */
        "book 18446744073709551616 1\nx",   /* past UINT64_MAX */
        "book 1 2\nx",              /* the data cut short */
        "book 1 1",                 /* no LF */
        "book 1 1x\nx",             /* not a number */
        "book -1 1\nx",
        "book 1  1\nx",
        "book 1 \nx",
        "book  1 1\nx",
        "book 1 99999999999999999999999\nx",
        "book 1 18446744073709551615\nx",
    };
    struct xg_redis_carried rec;
    const char *p;
    size_t i, n;
    char *b;

    for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        n = strlen(bad[i]);
        b = malloc(n);
        ck_assert_ptr_nonnull(b);
        memcpy(b, bad[i], n);
        p = b;
        ck_assert_msg(xg_redis_carried_next(&p, b + n, &rec) == -1,
            "accepted \"%s\"", bad[i]);
        ck_assert(p == b);
        free(b);
    }
}
END_TEST

/* A good record then a bad one: the first is read, then -1 there. */
START_TEST(good_then_bad)
{
    static const char in[] = "a 1 2\nxyb 2";
    struct xg_redis_carried rec;
    const char *p = in, *end = in + sizeof(in) - 1;

    ck_assert_int_eq(xg_redis_carried_next(&p, end, &rec), 1);
    ck_assert_uint_eq(rec.len, 2);
    ck_assert(memcmp(rec.data, "xy", 2) == 0);
    ck_assert_int_eq(xg_redis_carried_next(&p, end, &rec), -1);
    ck_assert(p == in + 8);
}
END_TEST

/* The bells kept: the newest that sum to at most 512 kB, at least 16,
   at most 2000. */
START_TEST(bell_keep)
{
    static struct xg_redis_bell_keep k;     /* 8 kB */
    size_t i, n = 0;

    xg_redis_bell_keep_reset(&k);
    /* small bells: 2000 at most */
    for (i = 0; i < 2500; i++) {
        n = xg_redis_bell_keep(&k, 100);
        ck_assert_uint_eq(n, i < 2000 ? i + 1 : 2000);
    }
    ck_assert_uint_eq(k.bytes, 200000);
    /* bells of 30400 bytes (100 entries of 300): 512 kB of them */
    for (i = 0; i < 100; i++) {
        n = xg_redis_bell_keep(&k, 30400);
        ck_assert_uint_le(k.bytes, XG_REDIS_BELL_KEEP_BYTES);
    }
    ck_assert_uint_eq(n, 17);               /* 17 x 30400 = 516800 */
    /* small ones after them push the big ones out, never past 512 kB */
    for (i = 0; i < 30; i++) {
        n = xg_redis_bell_keep(&k, 300);
        ck_assert_uint_le(k.bytes, XG_REDIS_BELL_KEEP_BYTES);
    }
    ck_assert_uint_eq(n, 16 + 30);          /* 16 x 30400 + 30 x 300 */
    /* bells over 32 kB: 16 of them, whatever their bytes */
    for (i = 0; i < 40; i++) {
        n = xg_redis_bell_keep(&k, 49152);
    }
    ck_assert_uint_eq(n, 16);
    ck_assert_uint_eq(k.bytes, 16 * 49152);
    /* the stream DELeted: empty again */
    xg_redis_bell_keep_reset(&k);
    ck_assert_uint_eq(xg_redis_bell_keep(&k, 30400), 1);
    ck_assert_uint_eq(k.bytes, 30400);
}
END_TEST

static Suite *
carried_suite(void)
{
    Suite *s = suite_create("xg_redis_carried");
    TCase *tc = tcase_create("core");

    tcase_add_test(tc, round_trip);
    tcase_add_test(tc, malformed);
    tcase_add_test(tc, good_then_bad);
    tcase_add_test(tc, bell_keep);
    suite_add_tcase(s, tc);
    return s;
}

int
main(void)
{
    SRunner *sr = srunner_create(carried_suite());
    int failed;

    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
