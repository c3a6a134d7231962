/*
 * check_xg_jscan.c: the walk of a container 16 bytes at a time
 * (skip_nested() in src/xg_jscan.c, where SSE2 is there) against the walk
 * stop by stop it replaced (skip_nested_walk()): the same answer for every
 * text, random ones by the hundred thousand and the edges by hand (a
 * string, an escape or the nesting limit across a block's end, the last
 * bytes short of a block). The file is included whole for its static
 * functions; every text lies in a buffer of its own size, so a read past
 * it is the sanitizer build's to tell.
 */
#include "xg_jscan.c"

#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The text of LEN bytes at P in a buffer of exactly LEN bytes. */
static char *
exact(const char *p, size_t len)
{
    char *b = malloc(len ? len : 1);

    ck_assert_ptr_nonnull(b);
    memcpy(b, p, len);
    return b;
}

/* Both walks of P from I at DEPTH; fails naming the text when they differ. */
static size_t
both(const char *p, size_t len, size_t i, int depth)
{
    char *b = exact(p, len);
    size_t w = skip_nested_walk(b, len, i, depth),
        n = skip_nested(b, len, i, depth);

    if (w != n) {
        ck_abort_msg("walk %zu, blocks %zu: from %zu at depth %d of "
            "\"%.*s\" (%zu bytes)", w, n, i, depth, (int) len, p, len);
    }
    free(b);
    return n;
}

START_TEST(random_texts)
{
    /* alphabets: the stops alone, then with what surrounds them; the
       second without a backslash, so most blocks take the masks */
    static const char *const abc[] = {
        "{}[]\"\\",
        "{}[]\"aaaaaaaaaaaa,:1 ",
        "{}[]\"\\xxxxxxxx,:0",
        "[[[[]]]]\"\"aaaa",
    };
    char t[512];
    unsigned seed = 20261205, k;
    long cases = 0;

    srand(seed);
    for (k = 0; k < 300000; k++) {
        const char *a = abc[k % 4];
        size_t al = strlen(a), len = (size_t) rand() % 400, j, i;
        int depth;

        for (j = 0; j < len; j++) {
            t[j] = (rand() % 50 == 0) ? (char) (rand() % 256) : a[rand()
                % al];
        }
        if (len > 0 && k % 2 == 0) {
            t[0] = k % 4 == 0 ? '{' : '[';      /* skip_value()'s call */
            depth = 0;
            i = 0;
        } else {
            depth = 1 + rand() % 3;             /* xg_jscan_close()'s */
            i = len > 0 ? (size_t) rand() % len : 0;
        }
        if (i >= len) {
            continue;
        }
        both(t, len, i, depth);
        cases++;
    }
    ck_assert_int_gt(cases, 250000);
}
END_TEST

START_TEST(nesting_limit)
{
    char t[300];
    size_t n, j;

    /* 64 levels are allowed, 65 are not, wherever the 65th falls */
    for (n = 60; n <= 70; n++) {
        size_t off;

        for (off = 0; off < 70; off += 7) {
            size_t len = 0;

            for (j = 0; j < off; j++) {
                t[len++] = 'a';
            }
            t[len++] = '{';
            t[len++] = '"';
            t[len++] = 'k';
            t[len++] = '"';
            t[len++] = ':';
            for (j = 1; j < n; j++) {
                t[len++] = '[';
            }
            for (j = 1; j < n; j++) {
                t[len++] = ']';
            }
            t[len++] = '}';
            ck_assert_uint_eq(both(t, len, off, 0), n <= 64 ? len : 0);
        }
    }
}
END_TEST

START_TEST(across_blocks)
{
    char t[400];
    size_t len, q;

    /* a string with brackets in it, from one block into the next */
    for (q = 50; q < 80; q++) {
        memset(t, 'x', sizeof(t));
        t[0] = '{';
        t[q] = '"';
        t[q + 3] = '}';
        t[q + 4] = ']';
        t[q + 70] = '"';
        t[q + 71] = '}';
        len = q + 72;
        ck_assert_uint_eq(both(t, len, 0, 0), len);
    }
    /* an escaped quote and an escaped backslash at a block's end */
    for (q = 58; q < 70; q++) {
        memset(t, 'y', sizeof(t));
        t[0] = '[';
        t[1] = '"';
        t[q] = '\\';
        t[q + 1] = '"';             /* escaped: the string goes on */
        t[q + 5] = '"';
        t[q + 6] = ']';
        len = q + 7;
        ck_assert_uint_eq(both(t, len, 0, 0), len);
        t[q + 1] = '\\';            /* "\\": the quote after it closes */
        t[q + 2] = '"';
        t[q + 3] = ']';
        ck_assert_uint_eq(both(t, q + 4, 0, 0), q + 4);
    }
    /* the text ends inside a string, after a backslash, short of the
       close: 0 from both */
    memset(t, 'z', 200);
    t[0] = '{';
    t[10] = '"';
    ck_assert_uint_eq(both(t, 130, 0, 0), 0);
    t[129] = '\\';
    ck_assert_uint_eq(both(t, 130, 0, 0), 0);
    t[10] = 'z';
    ck_assert_uint_eq(both(t, 130, 0, 0), 0);
    /* a NUL inside the text is a byte like another */
    memset(t, 0, 200);
    t[0] = '{';
    t[150] = '}';
    ck_assert_uint_eq(both(t, 151, 0, 0), 151);
}
END_TEST

START_TEST(notification)
{
    /* what dr_classify_note() walks: params' rest, from after "channel" */
    static const char m[] = "{\"jsonrpc\":\"2.0\",\"method\":\"subscription\","
        "\"params\":{\"channel\":\"book.BTC-PERPETUAL.100ms\",\"data\":{"
        "\"type\":\"change\",\"timestamp\":1733400000000,\"prev_change_id\":"
        "1,\"instrument_name\":\"BTC-PERPETUAL\",\"change_id\":2,\"bids\":"
        "[[\"new\",97000.5,1200.0],[\"delete\",96999.0,0.0]],\"asks\":"
        "[[\"change\",97001.0,10.0]]}}}";
    size_t len = sizeof(m) - 1, i = strstr(m, "\",\"data\"") - m + 1;

    ck_assert_uint_eq(both(m, len, i, 1), len - 1);
    ck_assert_uint_eq(xg_jscan_close(m, len, i, 1), len - 1);
}
END_TEST

int
main(void)
{
    Suite *s = suite_create("jscan");
    TCase *tc = tcase_create("blocks");
    SRunner *sr;
    int failed;

    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, random_texts);
    tcase_add_test(tc, nesting_limit);
    tcase_add_test(tc, across_blocks);
    tcase_add_test(tc, notification);
    suite_add_tcase(s, tc);
    sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
