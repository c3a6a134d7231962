/*
 * check_xg_rreply.c: replies built in one block per reply (xg_rreply.c)
 * are the trees hiredis' own functions build: the same RESP fed to a
 * reader of each kind, whole and a byte at a time, gives equal trees
 * (types, integers, strings with their NUL, vectors), across chunk
 * boundaries and with a string larger than any chunk; a protocol error
 * in the middle of a reply and a reader freed with a reply half read
 * free what was built (the sanitizer build tells a leak).
 */
#include "xg_rreply.h"

#include <check.h>
#include <hiredis/hiredis.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Whether A and B are the same tree; fails the test where they differ. */
static void
same(const redisReply *a, const redisReply *b, const char *at)
{
    size_t i;
    char sub[200];

    ck_assert_msg(a != NULL && b != NULL, "%s: a NULL object", at);
    ck_assert_msg(a->type == b->type, "%s: type %d, not %d", at, b->type,
        a->type);
    switch (a->type) {
    case REDIS_REPLY_INTEGER:
        ck_assert_msg(a->integer == b->integer, "%s: integer", at);
        break;
    case REDIS_REPLY_STRING:
    case REDIS_REPLY_STATUS:
    case REDIS_REPLY_ERROR:
        ck_assert_msg(a->len == b->len, "%s: len %zu, not %zu", at, b->len,
            a->len);
        ck_assert_msg(memcmp(a->str, b->str, a->len) == 0, "%s: text", at);
        ck_assert_msg(b->str[b->len] == '\0', "%s: no NUL", at);
        break;
    case REDIS_REPLY_ARRAY:
        ck_assert_msg(a->elements == b->elements, "%s: %zu elements, not "
            "%zu", at, b->elements, a->elements);
        ck_assert_msg((a->element == NULL) == (b->element == NULL),
            "%s: vector", at);
        for (i = 0; i < a->elements; i++) {
            snprintf(sub, sizeof(sub), "%.150s[%zu]", at, i);
            same(a->element[i], b->element[i], sub);
        }
        break;
    default:
        break;
    }
}

/* The RESP of an XREAD answer: NS streams of NE entries each. */
static char *
xread_resp(int ns, int ne, size_t *len)
{
    size_t cap = 4096 + (size_t) ns * ne * 600, n = 0;
    char *b = malloc(cap), data[301];
    int s, e;

    ck_assert_ptr_nonnull(b);
    memset(data, 'x', 300);
    data[300] = '\0';
    n += snprintf(b + n, cap - n, "*%d\r\n", ns);
    for (s = 0; s < ns; s++) {
        n += snprintf(b + n, cap - n, "*2\r\n$%d\r\nxg:sim:book.%04d\r\n"
            "*%d\r\n", 16, s, ne);
        for (e = 0; e < ne; e++) {
            char seq[24], id[32];

            snprintf(seq, sizeof(seq), "%d", e + 1);
            snprintf(id, sizeof(id), "%s-0", seq);
            n += snprintf(b + n, cap - n, "*2\r\n$%zu\r\n%s\r\n*8\r\n"
                "$3\r\nseq\r\n$%zu\r\n%s\r\n$5\r\nepoch\r\n$4\r\nab12\r\n"
                "$2\r\nts\r\n$13\r\n1796000000000\r\n$4\r\ndata\r\n$300\r\n"
                "%s\r\n", strlen(id), id, strlen(seq), seq, data);
        }
    }
    *len = n;
    return b;
}

/* Feeds RESP (LEN bytes) to both readers, STEP bytes at a time, and
   compares the one reply each gives. */
static void
feed_both(const char *resp, size_t len, size_t step)
{
    redisReader *d = redisReaderCreate();
    redisReader *r = redisReaderCreateWithFunctions(xg_rreply_functions());
    void *rd = NULL, *rr = NULL;
    size_t off, n;

    for (off = 0; off < len; off += n) {
        n = len - off < step ? len - off : step;
        ck_assert_int_eq(redisReaderFeed(d, resp + off, n), REDIS_OK);
        ck_assert_int_eq(redisReaderFeed(r, resp + off, n), REDIS_OK);
        if (rd == NULL) {
            ck_assert_int_eq(redisReaderGetReply(d, &rd), REDIS_OK);
        }
        if (rr == NULL) {
            ck_assert_int_eq(redisReaderGetReply(r, &rr), REDIS_OK);
        }
        ck_assert_msg((rd == NULL) == (rr == NULL), "a reply at %zu from "
            "one reader only", off + n);
    }
    ck_assert_ptr_nonnull(rd);
    same(rd, rr, "reply");
    freeReplyObject(rd);
    r->fn->freeObject(rr);
    redisReaderFree(d);
    redisReaderFree(r);
}

START_TEST(xread_whole)
{
    size_t len;
    char *resp = xread_resp(100, 10, &len);

    /* about 1000 entries: many chunks, the largest at its cap */
    feed_both(resp, len, len);
    free(resp);
}
END_TEST

START_TEST(xread_bytewise)
{
    size_t len;
    char *resp = xread_resp(3, 4, &len);

    feed_both(resp, len, 1);
    feed_both(resp, len, 7);
    free(resp);
}
END_TEST

#define R(s)    { s, sizeof(s) - 1 }

START_TEST(every_type)
{
    static const struct {
        const char *resp;
        size_t      len;
    } replies[] = {
        R("+OK\r\n"), R("-ERR no such key\r\n"), R(":-42\r\n"),
        R("$-1\r\n"), R("*-1\r\n"), R("*0\r\n"), R("$0\r\n\r\n"),
        R("$5\r\nhe\0lo\r\n"),
        R("*5\r\n:1\r\n$-1\r\n*0\r\n*-1\r\n*2\r\n+a\r\n-b\r\n"),
        /* seven levels down (hiredis' limit is about there) */
        R("*1\r\n*1\r\n*1\r\n*1\r\n*1\r\n*1\r\n*2\r\n$1\r\nz\r\n:7\r\n"),
    };
    size_t i;

    for (i = 0; i < sizeof(replies) / sizeof(replies[0]); i++) {
        feed_both(replies[i].resp, replies[i].len, replies[i].len);
        feed_both(replies[i].resp, replies[i].len, 1);
    }
}
END_TEST

START_TEST(large_strings)
{
    /* a root string and an element larger than any chunk, between
       small ones */
    size_t big = 200000, cap = 2 * big + 200, n = 0;
    char *b = malloc(cap);

    ck_assert_ptr_nonnull(b);
    n += snprintf(b, cap, "$%zu\r\n", big);
    memset(b + n, 'y', big);
    n += big;
    memcpy(b + n, "\r\n", 2);
    feed_both(b, n + 2, n + 2);
    n = (size_t) snprintf(b, cap, "*3\r\n$1\r\na\r\n$%zu\r\n", big);
    memset(b + n, 'q', big);
    n += big;
    n += (size_t) snprintf(b + n, cap - n, "\r\n$1\r\nb\r\n");
    feed_both(b, n, n);
    feed_both(b, n, 4096);
    free(b);
}
END_TEST

START_TEST(error_mid_reply)
{
    redisReader *r = redisReaderCreateWithFunctions(xg_rreply_functions());
    static const char bad[] = "*3\r\n$1\r\na\r\n*2\r\n:1\r\n!what\r\n";
    void *rep = NULL;

    /* the partial root is freed by the reader, through rr_free */
    ck_assert_int_eq(redisReaderFeed(r, bad, sizeof(bad) - 1), REDIS_OK);
    ck_assert_int_eq(redisReaderGetReply(r, &rep), REDIS_ERR);
    ck_assert_ptr_null(rep);
    ck_assert_ptr_null(r->reply);
    redisReaderFree(r);
}
END_TEST

START_TEST(freed_half_read)
{
    redisReader *r = redisReaderCreateWithFunctions(xg_rreply_functions());
    size_t len;
    char *resp = xread_resp(10, 10, &len);
    void *rep = NULL;

    ck_assert_int_eq(redisReaderFeed(r, resp, len - 10), REDIS_OK);
    ck_assert_int_eq(redisReaderGetReply(r, &rep), REDIS_OK);
    ck_assert_ptr_null(rep);
    ck_assert_ptr_nonnull(r->reply);
    redisReaderFree(r);     /* frees the half-built reply */
    free(resp);
}
END_TEST

static Suite *
rreply_suite(void)
{
    Suite *s = suite_create("xg_rreply");
    TCase *tc = tcase_create("block");

    tcase_add_test(tc, xread_whole);
    tcase_add_test(tc, xread_bytewise);
    tcase_add_test(tc, every_type);
    tcase_add_test(tc, large_strings);
    tcase_add_test(tc, error_mid_reply);
    tcase_add_test(tc, freed_half_read);
    suite_add_tcase(s, tc);
    return s;
}

int
main(void)
{
    SRunner *sr = srunner_create(rreply_suite());
    int failed;

    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
