/*
 * check_xg_log.c: the log line writer, both formats: the text prefix made
 * from a line's context, and the JSON object (fields left out when
 * absent, strings escaped, bytes that are not UTF-8 replaced), then a log
 * file written through xg_log_at() in which every line is one object.
 */
#include "xg_core.h"
#include "xg_log.h"

#include <check.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

/* 2026-11-28T10:00:00.123Z */
static const struct timespec ts = { 1795860000, 123456789 };

/* Parses LINE as one JSON object (failing the test if it is not). */
static json_t *
parse(const char *line)
{
    json_error_t err;
    json_t *o = json_loads(line, JSON_REJECT_DUPLICATES, &err);

    ck_assert_msg(o != NULL, "not JSON (%s): %s", err.text, line);
    ck_assert_msg(json_is_object(o), "not an object: %s", line);
    ck_assert_msg(strchr(line, '\n') == NULL, "a newline in %s", line);
    return o;
}

START_TEST(text_prefix)
{
    struct xg_log_ctx c;
    char *l;

    l = xg_log_line(XG_LOG_TEXT, XG_LOG_WARN, &ts, NULL, "gateway: hi");
    ck_assert_str_eq(l, "2026-11-28T10:00:00.123Z [warn] gateway: hi");
    free(l);

    memset(&c, 0, sizeof(c));
    c.upstream = "deribit";
    c.conn = 12;
    l = xg_log_line(XG_LOG_TEXT, XG_LOG_INFO, &ts, &c, "ping timeout");
    ck_assert_str_eq(l, "2026-11-28T10:00:00.123Z [info] "
        "upstream deribit#12: ping timeout");
    free(l);

    c.client = 3;
    c.client_name = "client ws#3 127.0.0.1:5000";
    c.peer = "127.0.0.1:5000";
    c.request = 77;
    l = xg_log_line(XG_LOG_TEXT, XG_LOG_DEBUG, &ts, &c, "answered");
    ck_assert_str_eq(l, "2026-11-28T10:00:00.123Z [debug] "
        "upstream deribit#12: client ws#3 127.0.0.1:5000: request 77: "
        "answered");
    free(l);

    /* an upstream before its first connection: no "#0" */
    memset(&c, 0, sizeof(c));
    c.upstream = "u";
    l = xg_log_line(XG_LOG_TEXT, XG_LOG_ERROR, &ts, &c, "x");
    ck_assert_str_eq(l, "2026-11-28T10:00:00.123Z [error] upstream u: x");
    free(l);
}
END_TEST

START_TEST(json_fields)
{
    struct xg_log_ctx c;
    json_t *o;
    char *l;

    l = xg_log_line(XG_LOG_JSON, XG_LOG_INFO, &ts, NULL, "started");
    o = parse(l);
    ck_assert_int_eq(json_object_size(o), 3);
    ck_assert_str_eq(json_string_value(json_object_get(o, "time")),
        "2026-11-28T10:00:00.123Z");
    ck_assert_str_eq(json_string_value(json_object_get(o, "level")), "info");
    ck_assert_str_eq(json_string_value(json_object_get(o, "message")),
        "started");
    json_decref(o);
    free(l);

    memset(&c, 0, sizeof(c));
    c.upstream = "deribit";
    c.conn = 4;
    c.client = 9;
    c.client_name = "client tcp#9 [::1]:7";
    c.peer = "[::1]:7";
    c.request = 1234567;
    l = xg_log_line(XG_LOG_JSON, XG_LOG_DEBUG, &ts, &c, "answered");
    o = parse(l);
    ck_assert_int_eq(json_object_size(o), 8);
    ck_assert_str_eq(json_string_value(json_object_get(o, "upstream")),
        "deribit");
    ck_assert_int_eq(json_integer_value(json_object_get(o, "connection")), 4);
    ck_assert_int_eq(json_integer_value(json_object_get(o, "client")), 9);
    ck_assert_str_eq(json_string_value(json_object_get(o, "peer")),
        "[::1]:7");
    ck_assert_int_eq(json_integer_value(json_object_get(o, "request")),
        1234567);
    /* the message is the message: the context is in the fields only */
    ck_assert_str_eq(json_string_value(json_object_get(o, "message")),
        "answered");
    ck_assert_str_eq(json_string_value(json_object_get(o, "level")),
        "debug");
    json_decref(o);
    free(l);

    /* only what is there: an upstream with no connection yet */
    memset(&c, 0, sizeof(c));
    c.upstream = "u";
    l = xg_log_line(XG_LOG_JSON, XG_LOG_WARN, &ts, &c, "m");
    o = parse(l);
    ck_assert_int_eq(json_object_size(o), 4);
    ck_assert_ptr_null(json_object_get(o, "connection"));
    ck_assert_ptr_null(json_object_get(o, "client"));
    ck_assert_ptr_null(json_object_get(o, "request"));
    json_decref(o);
    free(l);
}
END_TEST

START_TEST(json_escaping)
{
    static const char msg[] = "a \"quoted\" \\ back\nnew\tline\r\x01 "
        "caf\xc3\xa9 bad:\xff\xc3( over:\xf4\x90\x80\x80 sur:\xed\xa0\x80 "
        "end";
    struct xg_log_ctx c;
    json_t *o;
    char *l;
    const char *m;

    memset(&c, 0, sizeof(c));
    c.upstream = "we\"ird\n\xfe";
    l = xg_log_line(XG_LOG_JSON, XG_LOG_ERROR, &ts, &c, msg);
    o = parse(l);
    m = json_string_value(json_object_get(o, "message"));
    ck_assert_ptr_nonnull(m);
    ck_assert_ptr_nonnull(strstr(m, "a \"quoted\" \\ back\nnew\tline\r\x01 "));
    ck_assert_ptr_nonnull(strstr(m, "caf\xc3\xa9 "));
    /* each bad byte is one U+FFFD; the good ones after it are kept */
    ck_assert_ptr_nonnull(strstr(m, "bad:\xef\xbf\xbd\xef\xbf\xbd( "));
    ck_assert_ptr_nonnull(strstr(m, "over:\xef\xbf\xbd"));
    ck_assert_ptr_nonnull(strstr(m, "sur:\xef\xbf\xbd"));
    ck_assert_ptr_nonnull(strstr(m, " end"));
    ck_assert_str_eq(json_string_value(json_object_get(o, "upstream")),
        "we\"ird\n\xef\xbf\xbd");
    json_decref(o);
    free(l);
}
END_TEST

/* Through the real writer: a file with one JSON object per line, lines
   under the level left out, and text again after xg_log_set_format. */
START_TEST(file_one_object_per_line)
{
    char path[] = "/tmp/check_xg_log.XXXXXX";
    struct xg_log_ctx c;
    char line[8192], big[3000];
    FILE *fp;
    int fd, n = 0;
    json_t *o;

    fd = mkstemp(path);
    ck_assert_int_ge(fd, 0);
    close(fd);
    ck_assert_int_eq(xg_log_open(path, XG_LOG_INFO), XG_OK);
    xg_log_set_format(XG_LOG_JSON);
    memset(&c, 0, sizeof(c));
    c.upstream = "sim";
    c.conn = 2;
    memset(big, 'x', sizeof(big) - 1);
    big[sizeof(big) - 1] = '\0';
    xg_log_info("plain %d", 1);
    xg_log_at(XG_LOG_WARN, &c, "with\nnewline \"%s\"", "q");
    xg_log_at(XG_LOG_DEBUG, &c, "not written");
    xg_log_at(XG_LOG_ERROR, &c, "long %s", big);  /* over the stack buffer */
    xg_log_set_format(XG_LOG_TEXT);
    xg_log_at(XG_LOG_INFO, &c, "text again");
    xg_log_open(NULL, XG_LOG_INFO);

    fp = fopen(path, "r");
    ck_assert_ptr_nonnull(fp);
    while (fgets(line, sizeof(line), fp) != NULL) {
        ck_assert_msg(line[strlen(line) - 1] == '\n', "a cut line");
        line[strlen(line) - 1] = '\0';
        n++;
        if (n == 4) {
            ck_assert_msg(strstr(line, " [info] upstream sim#2: text again")
                != NULL, "line 4: %s", line);
            continue;
        }
        o = parse(line);
        if (n == 1) {
            ck_assert_str_eq(json_string_value(json_object_get(o,
                "message")), "plain 1");
            ck_assert_ptr_null(json_object_get(o, "upstream"));
        } else if (n == 2) {
            ck_assert_str_eq(json_string_value(json_object_get(o,
                "message")), "with\nnewline \"q\"");
            ck_assert_int_eq(json_integer_value(json_object_get(o,
                "connection")), 2);
        } else {
            ck_assert_int_eq(strlen(json_string_value(json_object_get(o,
                "message"))), 5 + sizeof(big) - 1);
        }
        json_decref(o);
    }
    fclose(fp);
    unlink(path);
    ck_assert_int_eq(n, 4);
}
END_TEST

START_TEST(format_names)
{
    ck_assert_int_eq(xg_log_format_parse("text"), XG_LOG_TEXT);
    ck_assert_int_eq(xg_log_format_parse("json"), XG_LOG_JSON);
    ck_assert_int_eq(xg_log_format_parse("JSON"), -1);
    ck_assert_int_eq(xg_log_format_parse(""), -1);
    ck_assert_str_eq(xg_log_format_name(XG_LOG_JSON), "json");
    ck_assert_str_eq(xg_log_format_name(XG_LOG_TEXT), "text");
}
END_TEST

START_TEST(ctx_dup)
{
    struct xg_log_ctx c, *d;
    char up[] = "sim", cl[] = "client ws#1 p", peer[] = "p";

    memset(&c, 0, sizeof(c));
    c.upstream = up;
    c.conn = 5;
    c.client = 1;
    c.client_name = cl;
    c.peer = peer;
    d = xg_log_ctx_dup(&c);
    up[0] = cl[0] = peer[0] = 'X';    /* the copy owns its strings */
    ck_assert_str_eq(d->upstream, "sim");
    ck_assert_str_eq(d->client_name, "client ws#1 p");
    ck_assert_str_eq(d->peer, "p");
    ck_assert_uint_eq(d->conn, 5);
    xg_log_ctx_free(d);
    ck_assert_ptr_null(xg_log_ctx_dup(NULL));
    xg_log_ctx_free(NULL);
}
END_TEST

static Suite *
log_suite(void)
{
    Suite *s = suite_create("xg_log");
    TCase *tc = tcase_create("line");

    tcase_add_test(tc, text_prefix);
    tcase_add_test(tc, json_fields);
    tcase_add_test(tc, json_escaping);
    tcase_add_test(tc, file_one_object_per_line);
    tcase_add_test(tc, format_names);
    tcase_add_test(tc, ctx_dup);
    suite_add_tcase(s, tc);
    return s;
}

int
main(void)
{
    SRunner *sr = srunner_create(log_suite());
    int failed;

    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
