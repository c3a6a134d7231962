/*
 * check_xg_conf.c: the conf language: parsed values, and the exact text
 * and line of every kind of error.
 */
#include "xg_core.h"
#include "xg_conf.h"
#include "xg_log.h"
#include "xg_redis.h"

#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static char *errs;
static char tmpdir[256];

static struct xg_main_conf *
load(const char *text)
{
    free(errs);
    errs = NULL;
    return xg_conf_load_string("t.conf", text, &errs);
}

/* Asserts that TEXT fails with exactly the error line EXPECT. */
static void
expect_error(const char *text, const char *expect)
{
    struct xg_main_conf *mc = load(text);

    ck_assert_ptr_null(mc);
    ck_assert_ptr_nonnull(errs);
    ck_assert_msg(strstr(errs, expect) != NULL, "expected \"%s\" in \"%s\"",
        expect, errs);
}

static void
write_file(const char *name, const char *text, int mode)
{
    char path[512];
    FILE *fp;

    snprintf(path, sizeof(path), "%s/%s", tmpdir, name);
    fp = fopen(path, "w");
    ck_assert_ptr_nonnull(fp);
    fputs(text, fp);
    fclose(fp);
    chmod(path, (mode_t) mode);
}

static struct xg_main_conf *
load_file(const char *name)
{
    char path[512];

    snprintf(path, sizeof(path), "%s/%s", tmpdir, name);
    free(errs);
    errs = NULL;
    return xg_conf_load(path, &errs);
}

static void
setup(void)
{
    snprintf(tmpdir, sizeof(tmpdir), "/tmp/check_xg_conf.XXXXXX");
    ck_assert_ptr_nonnull(mkdtemp(tmpdir));
}

static void
teardown(void)
{
    char cmd[300];

    snprintf(cmd, sizeof(cmd), "rm -rf %s", tmpdir);
    ck_assert_int_eq(system(cmd), 0);
    free(errs);
    errs = NULL;
}

/* An upstream that serves listeners (a raw one does not). */
#define UPSTREAM "upstream d { url wss://www.deribit.com/ws/api/v2; " \
    "protocol deribit; }\n"

/* ---- good confs and values -------------------------------------------- */

START_TEST(t_minimal)
{
    struct xg_main_conf *mc = load(
        "error_log stderr warn;\n"
        "upstream deribit {\n"
        "    url wss://www.deribit.com/ws/api/v2;\n"
        "    protocol deribit;\n"
        "}\n"
        "listen 127.0.0.1:8600 websocket upstream=deribit;\n"
        "listen 127.0.0.1:8601 tcp upstream=deribit max_clients=5 "
        "sndbuf=64k;\n"
        "admin 127.0.0.1:8610;\n");

    ck_assert_ptr_nonnull(mc);
    ck_assert_ptr_null(errs);
    ck_assert_str_eq(mc->error_log, "stderr");
    ck_assert_int_eq(mc->error_log_level, 1);
    ck_assert_int_eq(mc->error_log_format, XG_LOG_TEXT);
    ck_assert_str_eq(mc->upstreams->name, "deribit");
    ck_assert_int_eq(mc->upstreams->url.tls, 1);
    ck_assert_str_eq(mc->upstreams->url.host, "www.deribit.com");
    ck_assert_int_eq(mc->upstreams->url.port, 443);
    ck_assert_str_eq(mc->upstreams->url.path, "/ws/api/v2");
    ck_assert_str_eq(mc->upstreams->protocol, "deribit");
    ck_assert_int_eq(mc->listens->kind, XG_LISTEN_WEBSOCKET);
    ck_assert_str_eq(mc->listens->path, "/ws/api/v2");
    ck_assert_ptr_eq(mc->listens->upstream, mc->upstreams);
    ck_assert_int_eq(mc->listens->next->kind, XG_LISTEN_TCP);
    ck_assert_int_eq(mc->listens->next->max_clients, 5);
    ck_assert_uint_eq(mc->listens->next->sndbuf, 65536);
    ck_assert_uint_eq(mc->listens->sndbuf, 0);      /* the kernel's */
    ck_assert_int_eq(mc->listens->next->addr.port, 8601);
    ck_assert_int_eq(mc->admin_set, 1);
    ck_assert_int_eq(mc->admin.port, 8610);
    xg_conf_free(mc);
}
END_TEST

START_TEST(t_error_log_json)
{
    struct xg_main_conf *mc = load(UPSTREAM "error_log stderr debug json;\n");

    ck_assert_ptr_nonnull(mc);
    ck_assert_ptr_null(errs);
    ck_assert_int_eq(mc->error_log_level, XG_LOG_DEBUG);
    ck_assert_int_eq(mc->error_log_format, XG_LOG_JSON);
    xg_conf_free(mc);
    mc = load(UPSTREAM "error_log stderr warn text;\n");
    ck_assert_ptr_nonnull(mc);
    ck_assert_int_eq(mc->error_log_format, XG_LOG_TEXT);
    xg_conf_free(mc);
}
END_TEST

START_TEST(t_comments_and_layout)
{
    struct xg_main_conf *mc = load(
        "# leading comment\n"
        "upstream a{url ws://h:1/p;}# trailing\n"
        "\n\t  upstream   b {\n  url\tws://h:2/;  # c\n }\n");

    ck_assert_ptr_nonnull(mc);
    ck_assert_str_eq(mc->upstreams->name, "a");
    ck_assert_str_eq(mc->upstreams->next->name, "b");
    ck_assert_int_eq(mc->upstreams->next->url.port, 2);
    xg_conf_free(mc);
}
END_TEST

START_TEST(t_double_quotes_escapes)
{
    struct xg_main_conf *mc = load(
        "upstream d { url \"wss://h/x\"; header X-A \"a\\\"b\\tc\\\\d\"; }\n");

    ck_assert_ptr_nonnull(mc);
    ck_assert_str_eq(mc->upstreams->url.path, "/x");
    ck_assert_str_eq(mc->upstreams->headers[0].name, "X-A");
    ck_assert_str_eq(mc->upstreams->headers[0].value, "a\"b\tc\\d");
    xg_conf_free(mc);
}
END_TEST

START_TEST(t_single_quotes_and_unknown_escape)
{
    struct xg_main_conf *mc = load(
        "upstream d { url 'wss://h/x'; header X-B 'it\\'s a {;} \\q'; }\n");

    ck_assert_ptr_nonnull(mc);
    ck_assert_str_eq(mc->upstreams->headers[0].value, "it's a {;} \\q");
    xg_conf_free(mc);
}
END_TEST

START_TEST(t_quoted_string_spans_lines)
{
    expect_error("upstream d {\n url wss://h/;\n header X \"a\nb\";\n}\n"
        "bogus;\n", "t.conf:6: unknown directive \"bogus\"");
}
END_TEST

START_TEST(t_durations)
{
    uint64_t ms;

    ck_assert_int_eq(xg_conf_parse_duration("250ms", &ms), XG_OK);
    ck_assert_uint_eq(ms, 250);
    ck_assert_int_eq(xg_conf_parse_duration("10s", &ms), XG_OK);
    ck_assert_uint_eq(ms, 10000);
    ck_assert_int_eq(xg_conf_parse_duration("2m", &ms), XG_OK);
    ck_assert_uint_eq(ms, 120000);
    ck_assert_int_eq(xg_conf_parse_duration("1h", &ms), XG_OK);
    ck_assert_uint_eq(ms, 3600000);
    ck_assert_int_eq(xg_conf_parse_duration("7d", &ms), XG_OK);
    ck_assert_uint_eq(ms, 7ULL * 86400000);
    ck_assert_int_eq(xg_conf_parse_duration("10", &ms), XG_ERROR);
    ck_assert_int_eq(xg_conf_parse_duration("10x", &ms), XG_ERROR);
    ck_assert_int_eq(xg_conf_parse_duration("s", &ms), XG_ERROR);
    ck_assert_int_eq(xg_conf_parse_duration("-1s", &ms), XG_ERROR);
    ck_assert_int_eq(xg_conf_parse_duration("1.5s", &ms), XG_ERROR);
    ck_assert_int_eq(xg_conf_parse_duration("99999999999999999999s", &ms),
        XG_ERROR);
}
END_TEST

START_TEST(t_sizes)
{
    uint64_t b;

    ck_assert_int_eq(xg_conf_parse_size("1024", &b), XG_OK);
    ck_assert_uint_eq(b, 1024);
    ck_assert_int_eq(xg_conf_parse_size("4k", &b), XG_OK);
    ck_assert_uint_eq(b, 4096);
    ck_assert_int_eq(xg_conf_parse_size("16m", &b), XG_OK);
    ck_assert_uint_eq(b, 16777216);
    ck_assert_int_eq(xg_conf_parse_size("1g", &b), XG_OK);
    ck_assert_uint_eq(b, 1073741824);
    ck_assert_int_eq(xg_conf_parse_size("1t", &b), XG_ERROR);
    ck_assert_int_eq(xg_conf_parse_size("k", &b), XG_ERROR);
    ck_assert_int_eq(xg_conf_parse_size("", &b), XG_ERROR);
}
END_TEST

START_TEST(t_flags)
{
    int on = 5;

    ck_assert_int_eq(xg_conf_parse_flag("on", &on), XG_OK);
    ck_assert_int_eq(on, 1);
    ck_assert_int_eq(xg_conf_parse_flag("off", &on), XG_OK);
    ck_assert_int_eq(on, 0);
    ck_assert_int_eq(xg_conf_parse_flag("yes", &on), XG_ERROR);
    expect_error("upstream d { url ws://h/; tls_verify yes; }\n",
        "t.conf:1: \"tls_verify\" must be \"on\" or \"off\", not \"yes\"");
}
END_TEST

START_TEST(t_addresses)
{
    struct xg_addr a;

    ck_assert_int_eq(xg_conf_parse_addr("127.0.0.1:80", &a), XG_OK);
    ck_assert_str_eq(a.host, "127.0.0.1");
    ck_assert_int_eq(a.port, 80);
    ck_assert_int_eq(xg_conf_parse_addr("[::1]:8600", &a), XG_OK);
    ck_assert_str_eq(a.host, "::1");
    ck_assert_int_eq(a.port, 8600);
    ck_assert_int_eq(xg_addr_is_loopback(&a), 1);
    ck_assert_int_eq(xg_conf_parse_addr("localhost:1", &a), XG_OK);
    ck_assert_int_eq(xg_addr_is_loopback(&a), 1);
    ck_assert_int_eq(xg_conf_parse_addr("10.0.0.1:1", &a), XG_OK);
    ck_assert_int_eq(xg_addr_is_loopback(&a), 0);
    ck_assert_int_eq(xg_conf_parse_addr("127.0.0.1", &a), XG_ERROR);
    ck_assert_int_eq(xg_conf_parse_addr("1.2.3.4:0", &a), XG_ERROR);
    ck_assert_int_eq(xg_conf_parse_addr("1.2.3.4:70000", &a), XG_ERROR);
    ck_assert_int_eq(xg_conf_parse_addr("[::1]8600", &a), XG_ERROR);
    ck_assert_int_eq(xg_conf_parse_addr("[zz]:1", &a), XG_ERROR);
    ck_assert_int_eq(xg_conf_parse_addr("::1:80", &a), XG_ERROR);
    ck_assert_int_eq(xg_conf_parse_addr(":80", &a), XG_ERROR);
}
END_TEST

START_TEST(t_urls)
{
    struct xg_url u;

    ck_assert_int_eq(xg_conf_parse_url("ws://h/p", &u), XG_OK);
    ck_assert_int_eq(u.tls, 0);
    ck_assert_int_eq(u.port, 80);
    ck_assert_str_eq(u.path, "/p");
    ck_assert_int_eq(xg_conf_parse_url("wss://ex.com:8443/ws?x=1", &u), XG_OK);
    ck_assert_int_eq(u.tls, 1);
    ck_assert_int_eq(u.port, 8443);
    ck_assert_str_eq(u.path, "/ws?x=1");
    ck_assert_int_eq(xg_conf_parse_url("wss://[::1]:9/x", &u), XG_OK);
    ck_assert_str_eq(u.host, "::1");
    ck_assert_int_eq(u.port, 9);
    ck_assert_int_eq(xg_conf_parse_url("wss://h", &u), XG_OK);
    ck_assert_str_eq(u.path, "/");
    ck_assert_int_eq(xg_conf_parse_url("http://h/", &u), XG_ERROR);
    ck_assert_int_eq(xg_conf_parse_url("wss://", &u), XG_ERROR);
    ck_assert_int_eq(xg_conf_parse_url("wss://h:0/", &u), XG_ERROR);
    ck_assert_int_eq(xg_conf_parse_url("wss://h:abc/", &u), XG_ERROR);
    ck_assert_int_eq(xg_conf_parse_url("wss://h/a b", &u), XG_ERROR);
    expect_error("upstream d { url http://h/; }\n",
        "t.conf:1: \"url\": bad url \"http://h/\"");
    /* A query string may hold a token: the error does not repeat it. */
    expect_error("upstream d { url \"ws://h/x?key=SeCrEt#f\"; }\n",
        "t.conf:1: \"url\": bad url \"ws://h/x?...\"");
    ck_assert_ptr_null(strstr(errs, "SeCrEt"));
}
END_TEST

/* ---- syntax errors ------------------------------------------------------ */

START_TEST(t_deep_nesting_bounded)
{
    /* A million levels: an error, not a stack overflow (skipped, not
     * parsed recursively, past 16 levels). */
    size_t i, n = 1000000;
    char *text = xg_malloc(4 * n + 16);

    for (i = 0; i < n; i++) {
        memcpy(text + 4 * i, "a { ", 4);
    }
    text[4 * n] = '\0';
    expect_error(text, "t.conf:1: blocks nested too deeply");
    ck_assert_ptr_nonnull(strstr(errs, "missing \"}\""));
    for (i = 0; i < n; i++) {
        text[i] = '{';
    }
    memset(text + n, '}', n);
    text[2 * n] = '\0';
    expect_error(text, "t.conf:1: unexpected \"{\"");
    free(text);
}
END_TEST

START_TEST(t_unterminated_quote)
{
    expect_error("error_log stderr;\nupstream d {\n url \"wss://h/;\n}\n",
        "t.conf:3: unterminated quoted string");
}
END_TEST

START_TEST(t_quote_glued)
{
    expect_error(UPSTREAM "admin \"127.0.0.1:1\"x;\n",
        "t.conf:2: unexpected \"x\" after a quoted string");
}
END_TEST

START_TEST(t_missing_semicolon_before_brace)
{
    expect_error("upstream d {\n  url wss://h/x\n}\n",
        "t.conf:2: missing \";\" after \"url\"");
}
END_TEST

START_TEST(t_missing_semicolon_at_eof)
{
    expect_error(UPSTREAM "admin 127.0.0.1:1",
        "t.conf:2: missing \";\" after \"admin\" (unexpected end of file)");
}
END_TEST

START_TEST(t_missing_semicolon_between)
{
    expect_error("upstream d {\n  url wss://h/x\n  protocol raw;\n}\n",
        "t.conf:2: invalid number of arguments in \"url\" directive "
        "(missing \";\"?)");
}
END_TEST

START_TEST(t_missing_brace)
{
    expect_error("error_log stderr;\nupstream d {\n  url wss://h/x;\n",
        "t.conf:2: missing \"}\": the block opened here is not closed");
}
END_TEST

START_TEST(t_unexpected_brace)
{
    expect_error(UPSTREAM "}\n", "t.conf:2: unexpected \"}\"");
}
END_TEST

START_TEST(t_unexpected_semicolon)
{
    expect_error(UPSTREAM ";\n", "t.conf:2: unexpected \";\"");
}
END_TEST

START_TEST(t_nul_byte)
{
    struct xg_main_conf *mc;

    write_file("nul.conf", "", 0600);
    {
        char path[512];
        FILE *fp;

        snprintf(path, sizeof(path), "%s/nul.conf", tmpdir);
        fp = fopen(path, "w");
        fwrite("admin\0 x;\n", 1, 10, fp);
        fclose(fp);
    }
    mc = load_file("nul.conf");
    ck_assert_ptr_null(mc);
    ck_assert_ptr_nonnull(strstr(errs, "nul.conf:1: unexpected NUL byte"));
}
END_TEST

/* ---- directive errors --------------------------------------------------- */

START_TEST(t_unknown_with_suggestion)
{
    expect_error(UPSTREAM "\n\n\n\n\nadmn 127.0.0.1:8610;\n",
        "t.conf:7: unknown directive \"admn\" (did you mean \"admin\"?)");
}
END_TEST

START_TEST(t_unknown_in_upstream_with_suggestion)
{
    expect_error("upstream d {\n url ws://h/;\n ping_timout 10s;\n}\n",
        "t.conf:3: unknown directive \"ping_timout\" (did you mean "
        "\"ping_timeout\"?)");
}
END_TEST

START_TEST(t_unknown_without_suggestion)
{
    struct xg_main_conf *mc = load(UPSTREAM "frobnicate 1;\n");

    ck_assert_ptr_null(mc);
    ck_assert_str_eq(errs, "t.conf:2: unknown directive \"frobnicate\"\n");
}
END_TEST

START_TEST(t_wrong_context_main)
{
    expect_error(UPSTREAM "url ws://h/;\n",
        "t.conf:2: \"url\" directive is not allowed here");
}
END_TEST

START_TEST(t_wrong_context_upstream)
{
    expect_error("upstream d {\n url ws://h/;\n admin 127.0.0.1:1;\n}\n",
        "t.conf:3: \"admin\" directive is not allowed here");
}
END_TEST

START_TEST(t_wrong_arity)
{
    expect_error(UPSTREAM "admin;\n",
        "t.conf:2: invalid number of arguments in \"admin\" directive");
    expect_error(UPSTREAM "admin 127.0.0.1:1 x;\n",
        "t.conf:2: invalid number of arguments in \"admin\" directive");
    expect_error(UPSTREAM "error_log;\n",
        "t.conf:2: invalid number of arguments in \"error_log\" directive");
    expect_error(UPSTREAM "error_log a b c d;\n",
        "t.conf:2: invalid number of arguments in \"error_log\" directive");
}
END_TEST

START_TEST(t_duplicate)
{
    expect_error("upstream d {\n url ws://h/;\n url ws://h/;\n}\n",
        "t.conf:3: \"url\" directive is duplicate (first at line 2)");
    expect_error(UPSTREAM "admin 127.0.0.1:1;\nadmin 127.0.0.1:2;\n",
        "t.conf:3: \"admin\" directive is duplicate (first at line 2)");
}
END_TEST

START_TEST(t_duplicate_upstream)
{
    expect_error(UPSTREAM "upstream d { url ws://h/; }\n",
        "t.conf:2: duplicate upstream \"d\" (first at t.conf:1)");
}
END_TEST

START_TEST(t_block_required_and_refused)
{
    expect_error("upstream d;\n", "t.conf:1: \"upstream\" directive needs a "
        "{ } block");
    expect_error("upstream d { url ws://h/ { } }\n",
        "t.conf:1: \"url\" directive takes no { } block");
}
END_TEST

START_TEST(t_bad_values)
{
    expect_error("upstream d { url ws://h/; ping 10; }\n",
        "t.conf:1: \"ping\": bad duration \"10\" (a number with a unit: ms, "
        "s, m, h, d)");
    expect_error("upstream d { url ws://h/; max_message 10q; }\n",
        "t.conf:1: \"max_message\": bad size \"10q\"");
    expect_error("upstream d { url ws://h/; max_message 10; }\n",
        "t.conf:1: \"max_message\": 10 is out of range");
    expect_error(UPSTREAM "error_log stderr loud;\n",
        "t.conf:2: \"error_log\": unknown level \"loud\"");
    expect_error(UPSTREAM "error_log stderr info xml;\n",
        "t.conf:2: \"error_log\": unknown format \"xml\" (text, json)");
    expect_error(UPSTREAM "error_log stderr info JSON;\n",
        "t.conf:2: \"error_log\": unknown format \"JSON\" (text, json)");
    expect_error("upstream d { url ws://h/; protocol ftp; }\n",
        "t.conf:1: \"protocol\": unknown protocol \"ftp\"");
    expect_error("upstream d { url ws://h/; ping 10s; ping_timeout 5s; }\n",
        "t.conf:1: upstream \"d\": \"ping_timeout\" must be longer than "
        "\"ping\"");
}
END_TEST

START_TEST(t_upstream_without_url)
{
    expect_error("upstream d {\n protocol raw;\n}\n",
        "t.conf:1: upstream \"d\" has no \"url\"");
}
END_TEST

START_TEST(t_headers)
{
    struct xg_main_conf *mc;

    expect_error("upstream d { url ws://h/; header Upgrade x; }\n",
        "t.conf:1: \"header\": \"Upgrade\" is set by the WebSocket handshake");
    expect_error("upstream d { url ws://h/; header \"A B\" x; }\n",
        "t.conf:1: \"header\": bad header name \"A B\"");
    expect_error("upstream d { url ws://h/; header A \"x\\ny\"; }\n",
        "t.conf:1: \"header\": control character in the value of \"A\"");
    mc = load("upstream d { url ws://h/; header A 1; header B 2; }\n");
    ck_assert_ptr_nonnull(mc);
    ck_assert_int_eq(mc->upstreams->nheaders, 2);
    ck_assert_str_eq(mc->upstreams->headers[1].value, "2");
    xg_conf_free(mc);
}
END_TEST

START_TEST(t_listen_errors)
{
    expect_error(UPSTREAM "listen 127.0.0.1:1 udp upstream=d;\n",
        "t.conf:2: \"listen\": kind must be \"websocket\", \"tcp\" or "
        "\"http\", not \"udp\"");
    expect_error(UPSTREAM "listen 127.0.0.1:1 tcp upstream=nope;\n",
        "t.conf:2: \"listen\": no upstream named \"nope\"");
    expect_error(UPSTREAM "listen 127.0.0.1:1 tcp upstream=d color=red;\n",
        "t.conf:2: \"listen\": unknown parameter \"color\"");
    expect_error(UPSTREAM "listen 127.0.0.1:1 tcp path=/x;\n",
        "t.conf:2: \"listen\": missing \"upstream=NAME\"");
    expect_error(UPSTREAM "listen 127.0.0.1 tcp upstream=d;\n",
        "t.conf:2: \"listen\": bad address \"127.0.0.1\"");
    expect_error(UPSTREAM "listen 127.0.0.1:1 tcp upstream=d max_clients=0;\n",
        "t.conf:2: \"listen\": max_clients must be 1..1000000, not \"0\"");
    expect_error(UPSTREAM "listen 127.0.0.1:1 tcp upstream=d sndbuf=0;\n",
        "t.conf:2: \"listen\": sndbuf must be a size from 4k to 64m, not "
        "\"0\"");
    expect_error(UPSTREAM "listen 127.0.0.1:1 tcp upstream=d sndbuf=4095;\n",
        "t.conf:2: \"listen\": sndbuf must be a size from 4k to 64m, not "
        "\"4095\"");
    expect_error(UPSTREAM "listen 127.0.0.1:1 tcp upstream=d sndbuf=65m;\n",
        "t.conf:2: \"listen\": sndbuf must be a size from 4k to 64m, not "
        "\"65m\"");
    expect_error(UPSTREAM "listen 127.0.0.1:1 tcp upstream=d sndbuf=big;\n",
        "t.conf:2: \"listen\": sndbuf must be a size from 4k to 64m, not "
        "\"big\"");
    expect_error(UPSTREAM "listen 127.0.0.1:1 tcp upstream=d sndbuf=8k "
        "sndbuf=16k;\n", "t.conf:2: \"listen\": duplicate \"sndbuf=\"");
    expect_error(UPSTREAM "listen 127.0.0.1:1 tcp upstream=d;\n"
        "listen 127.0.0.1:1 websocket upstream=d;\n",
        "t.conf:3: \"listen\": 127.0.0.1:1 is already used at t.conf:2");
}
END_TEST

START_TEST(t_listen_before_upstream)
{
    struct xg_main_conf *mc = load(
        "listen 127.0.0.1:1 websocket upstream=d path=/x;\n" UPSTREAM);

    ck_assert_ptr_nonnull(mc);
    ck_assert_str_eq(mc->listens->path, "/x");
    ck_assert_ptr_eq(mc->listens->upstream, mc->upstreams);
    xg_conf_free(mc);
}
END_TEST

/* path=: starts with "/", "*" only at its end; the protocol's default. */
START_TEST(t_listen_path)
{
    struct xg_main_conf *mc;

    expect_error(UPSTREAM "listen 127.0.0.1:1 websocket upstream=d "
        "path=feed/v1;\n",
        "t.conf:2: \"listen\": path must start with \"/\": \"feed/v1\"");
    expect_error(UPSTREAM "listen 127.0.0.1:1 websocket upstream=d "
        "path=/a*/b;\n",
        "t.conf:2: \"listen\": \"*\" may only end the path: \"/a*/b\"");
    expect_error(UPSTREAM "listen 127.0.0.1:1 websocket upstream=d "
        "path=/a**;\n",
        "t.conf:2: \"listen\": \"*\" may only end the path: \"/a**\"");
    mc = load(UPSTREAM "upstream r { url ws://h/; }\n"
        "listen 127.0.0.1:1 websocket upstream=d;\n"
        "listen 127.0.0.1:2 websocket upstream=d path=/feed/*;\n"
        "listen 127.0.0.1:3 websocket upstream=r client_auth=off;\n"
        "listen 127.0.0.1:4 websocket upstream=r client_auth=off "
        "path=/feed/v1;\n");
    ck_assert_msg(mc != NULL, "%s", errs ? errs : "");
    ck_assert_str_eq(mc->listens->path, "/ws/api/v2");
    ck_assert_str_eq(mc->listens->next->path, "/feed/*");
    ck_assert_str_eq(mc->listens->next->next->path, "/*");  /* raw's */
    ck_assert_str_eq(mc->listens->next->next->next->path, "/feed/v1");
    xg_conf_free(mc);
}
END_TEST

START_TEST(t_remote_needs_opt_in)
{
    struct xg_main_conf *mc;

    expect_error(UPSTREAM "listen 0.0.0.0:8600 websocket upstream=d;\n",
        "t.conf:2: \"listen\": 0.0.0.0 is not a loopback address; set "
        "\"allow_remote on;\" to listen on it");
    expect_error(UPSTREAM "admin 10.1.2.3:8610;\n",
        "t.conf:2: \"admin\": 10.1.2.3 is not a loopback address");
    mc = load(UPSTREAM "listen 0.0.0.0:8600 websocket upstream=d;\n"
        "allow_remote on;\n");
    ck_assert_ptr_nonnull(mc);
    ck_assert_int_eq(mc->allow_remote, 1);
    xg_conf_free(mc);
}
END_TEST

START_TEST(t_every_error_reported)
{
    struct xg_main_conf *mc = load(
        "bogus1;\n"
        "upstream d { url ws://h/; pingg 1s; }\n"
        "admin nowhere;\n"
        "listen 127.0.0.1:1 tcp upstream=zz;\n");
    int lines = 0;
    const char *p;

    ck_assert_ptr_null(mc);
    for (p = errs; *p; p++) {
        lines += *p == '\n';
    }
    ck_assert_int_eq(lines, 4);
    ck_assert_ptr_nonnull(strstr(errs, "t.conf:1: unknown directive \"bogus1\""));
    ck_assert_ptr_nonnull(strstr(errs, "t.conf:2: unknown directive \"pingg\""));
    ck_assert_ptr_nonnull(strstr(errs, "t.conf:3: \"admin\": bad address"));
    ck_assert_ptr_nonnull(strstr(errs, "t.conf:4: \"listen\": no upstream"));
}
END_TEST

START_TEST(t_syntax_and_directive_errors_together)
{
    struct xg_main_conf *mc = load("bogus;\nupstream d { url \"x; }\n");

    ck_assert_ptr_null(mc);
    ck_assert_ptr_nonnull(strstr(errs, "t.conf:2: unterminated quoted string"));
    ck_assert_ptr_nonnull(strstr(errs, "t.conf:1: unknown directive \"bogus\""));
}
END_TEST

/* ---- protocol directives ---------------------------------------------- */

/*
 * A protocol's directive is valid only on an upstream of that protocol,
 * wherever `protocol` stands in the block; the default protocol is raw.
 */
START_TEST(t_proto_directive_on_raw)
{
    struct xg_main_conf *mc;

    mc = load("upstream x {\n url ws://h/;\n protocol raw;\n"
        " heartbeat 10s;\n}\n");
    ck_assert_ptr_null(mc);
    ck_assert_str_eq(errs, "t.conf:4: \"heartbeat\" is a directive of "
        "protocol deribit; upstream \"x\" uses raw\n");

    /* before the `protocol` line: only the end of the block can tell */
    mc = load("upstream x {\n url ws://h/;\n heartbeat 10s;\n"
        " protocol raw;\n}\n");
    ck_assert_ptr_null(mc);
    ck_assert_str_eq(errs, "t.conf:3: \"heartbeat\" is a directive of "
        "protocol deribit; upstream \"x\" uses raw\n");

    /* no `protocol` line at all: raw */
    mc = load("upstream x {\n url ws://h/;\n stale book.* 5s;\n}\n");
    ck_assert_ptr_null(mc);
    ck_assert_str_eq(errs, "t.conf:3: \"stale\" is a directive of "
        "protocols deribit, binance; upstream \"x\" uses raw\n");
}
END_TEST

/*
 * Every directive of deribit alone is refused on raw, each at its own
 * line (queue_limit and queue_timeout belong to every upstream).
 */
START_TEST(t_proto_directives_all_refused_on_raw)
{
    static const char *const lines[] = {
        "auth client_signature id env:XG_T_SECRET;",
        "auth_scope connection;",
        "heartbeat 10s;",
        "cancel_on_disconnect on;",
        "request_timeout 5s;",
        "stale book.* 5s;",
        "rate_limit off;",
        "rate_limit_pool matching 50 20;",
    };
    char text[2048], want[256];
    struct xg_main_conf *mc;
    size_t i, n;

    setenv("XG_T_SECRET", "s3cr3t", 1);
    n = (size_t) snprintf(text, sizeof(text), "upstream x {\n");
    for (i = 0; i < XG_NELEM(lines); i++) {
        n += (size_t) snprintf(text + n, sizeof(text) - n, " %s\n", lines[i]);
    }
    snprintf(text + n, sizeof(text) - n, " url ws://h/;\n}\n");
    mc = load(text);
    ck_assert_ptr_null(mc);
    for (i = 0; i < XG_NELEM(lines); i++) {
        snprintf(want, sizeof(want), "t.conf:%zu: \"%.*s\" is a directive of "
            "protocol%s; upstream \"x\" uses raw\n", i + 2,
            (int) strcspn(lines[i], " "), lines[i],
            strncmp(lines[i], "stale", 5) == 0 ? "s deribit, binance"
            : strncmp(lines[i], "request_timeout", 15) == 0
            ? "s deribit, edge" : " deribit");
        ck_assert_msg(strstr(errs, want) != NULL, "expected \"%s\" in \"%s\"",
            want, errs);
    }
    unsetenv("XG_T_SECRET");
}
END_TEST

/*
 * account NAME { ... }: a name, auth required, no duplicate, only the
 * account's directives inside, a block; client_credentials account=NAME.
 */
/* protocol edge: its url is redis://, its directives, their errors. */
START_TEST(t_edge)
{
    struct xg_main_conf *mc;

#define EDGE_UP(url, body) "upstream deribit {\n url " url ";\n" \
    " protocol edge;\n" body "}\n"
    setenv("XG_T_SECRET", "s3cr3t", 1);
    mc = load(EDGE_UP("redis://10.0.0.5:6379",
        " source core1;\n prefix xg:a;\n password env:XG_T_SECRET;\n"
        " edge_id host-1.deribit;\n request_timeout 5s;\n"));
    ck_assert_msg(mc != NULL, "%s", errs ? errs : "");
    ck_assert_int_eq(mc->upstreams->url.redis, 1);
    ck_assert_int_eq(mc->upstreams->url.port, 6379);
    ck_assert_str_eq(mc->upstreams->url.host, "10.0.0.5");
    xg_conf_free(mc);
    /* the port defaults to 6379, an IPv6 address in brackets */
    mc = load(EDGE_UP("redis://[::1]", ""));
    ck_assert_msg(mc != NULL, "%s", errs ? errs : "");
    ck_assert_int_eq(mc->upstreams->url.port, 6379);
    xg_conf_free(mc);
    mc = load(EDGE_UP("redis://h:7000/", ""));
    ck_assert_msg(mc != NULL, "%s", errs ? errs : "");
    ck_assert_int_eq(mc->upstreams->url.port, 7000);
    xg_conf_free(mc);
    expect_error(EDGE_UP("ws://h/", ""), "t.conf:1: upstream \"deribit\": "
        "protocol edge reads from Redis: its \"url\" is "
        "redis[s]://HOST[:PORT]");
    expect_error("upstream x {\n url redis://h;\n protocol deribit;\n}\n",
        "t.conf:1: upstream \"x\": a redis[s]:// \"url\" needs "
        "\"protocol edge;\"");
    expect_error("upstream x {\n url redis://h;\n}\n",
        "a redis[s]:// \"url\" needs \"protocol edge;\"");
    /* rediss://: TLS, the same port by default */
    mc = load(EDGE_UP("rediss://h", ""));
    ck_assert_msg(mc != NULL, "%s", errs ? errs : "");
    ck_assert_int_eq(mc->upstreams->url.tls, 1);
    ck_assert_int_eq(mc->upstreams->url.port, 6379);
    xg_conf_free(mc);
    expect_error(EDGE_UP("rediss://:pw@h", ""), "t.conf:2: \"url\": bad url "
        "\"rediss://...\"");
    expect_error(EDGE_UP("redis://:pw@h", ""), "t.conf:2: \"url\": bad url "
        "\"redis://...\" (redis[s]://HOST[:PORT]; a password goes in "
        "\"password\")");
    expect_error(EDGE_UP("redis://h/3", ""), "\"url\": bad url");
    expect_error(EDGE_UP("redis://h:99999", ""), "\"url\": bad url");
    expect_error(EDGE_UP("redis://h", " password hunter2;\n"),
        "t.conf:4: \"password\": env:NAME or file:PATH, never the "
        "password itself");
    expect_error(EDGE_UP("redis://h", " edge_id \"a b\";\n"),
        "t.conf:4: \"edge_id\": 1 to 64 of letters");
    expect_error(EDGE_UP("redis://h", " prefix \"a b\";\n"),
        "t.conf:4: \"prefix\": 1 to 64 of letters");
    expect_error(EDGE_UP("redis://h", " source \"a/b\";\n"),
        "t.conf:4: \"source\": bad upstream name");
    expect_error(EDGE_UP("redis://h", " auth client_credentials a "
        "env:XG_T_SECRET;\n"), "t.conf:4: \"auth\" is a directive of "
        "protocol deribit");
#undef EDGE_UP
}
END_TEST

START_TEST(t_accounts)
{
    struct xg_main_conf *mc;

#define ACCT_UP(body) "upstream x {\n url ws://h/;\n protocol deribit;\n" \
    body "}\n"
    setenv("XG_T_SECRET", "s3cr3t", 1);
    mc = load(ACCT_UP(
        " account desk-a { auth client_signature id env:XG_T_SECRET;"
        " cancel_on_disconnect on; heartbeat 10s; }\n"
        " account desk-b { auth client_credentials id2 env:XG_T_SECRET; }\n")
        "client_credentials bot env:XG_T_SECRET account=desk-a;\n");
    ck_assert_msg(mc != NULL, "%s", errs ? errs : "");
    xg_conf_free(mc);
    expect_error(ACCT_UP(" account desk-a { cancel_on_disconnect on; }\n"),
        "t.conf:4: \"account\": \"desk-a\" has no auth");
    expect_error(ACCT_UP(
        " account a { auth client_signature id env:XG_T_SECRET; }\n"
        " account a { auth client_signature id env:XG_T_SECRET; }\n"),
        "t.conf:5: \"account\": duplicate account \"a\"");
    expect_error(ACCT_UP(
        " account \"a b\" { auth client_signature id env:XG_T_SECRET; }\n"),
        "t.conf:4: \"account\": bad name \"a b\"");
    expect_error(ACCT_UP(
        " account a { auth client_signature id env:XG_T_SECRET;\n"
        "  stale book.* 1s; }\n"),
        "t.conf:5: \"stale\" directive is not allowed here");
    expect_error(ACCT_UP(
        " account a { auth client_signature id env:XG_T_NOPE; }\n"),
        "XG_T_NOPE");
    expect_error(ACCT_UP(" account a;\n"),
        "t.conf:4: \"account\" directive needs a { } block");
    expect_error("upstream x {\n url ws://h/;\n protocol raw;\n"
        " account a { auth client_signature id env:XG_T_SECRET; }\n}\n",
        "t.conf:4: \"account\" is a directive of protocol deribit");
    expect_error(ACCT_UP("") "client_credentials bot env:XG_T_SECRET a=b;\n",
        "t.conf:5: \"client_credentials\": the third word must be "
        "account=NAME");
    expect_error(ACCT_UP("") "client_credentials bot env:XG_T_SECRET "
        "account=;\n", "the third word must be account=NAME");
#undef ACCT_UP
    unsetenv("XG_T_SECRET");
}
END_TEST

/* The same directives stay valid on a deribit upstream, on either side. */
START_TEST(t_proto_directives_on_deribit)
{
    struct xg_main_conf *mc;

    setenv("XG_T_SECRET", "s3cr3t", 1);
    mc = load("upstream x {\n"
        " url ws://h/;\n"
        " heartbeat 10s;\n"
        " auth client_signature id env:XG_T_SECRET;\n"
        " stale book.* 5s;\n"
        " protocol deribit;\n"
        " cancel_on_disconnect on;\n"
        " queue_limit 10;\n"
        " stale trades.* 1s;\n"
        "}\n"
        "listen 127.0.0.1:1 tcp upstream=x;\n");
    ck_assert_msg(mc != NULL, "%s", errs ? errs : "");
    ck_assert_ptr_null(errs);
    ck_assert_str_eq(mc->upstreams->protocol, "deribit");
    ck_assert_ptr_nonnull(mc->upstreams->proto_conf);
    xg_conf_free(mc);
    unsetenv("XG_T_SECRET");

    /* their values are still checked, before or after `protocol` */
    mc = load("upstream x {\n url ws://h/;\n heartbeat 1ms;\n"
        " protocol deribit;\n request_timeout 2h;\n}\n");
    ck_assert_ptr_null(mc);
    ck_assert_str_eq(errs, "t.conf:3: \"heartbeat\": 1ms is out of range\n"
        "t.conf:5: \"request_timeout\": 2h is out of range\n");
    expect_error("upstream x {\n url ws://h/;\n heartbeat 10s;\n"
        " protocol deribit;\n heartbeat 20s;\n}\n",
        "t.conf:5: \"heartbeat\" directive is duplicate (first at line 3)");
    expect_error("upstream x {\n url ws://h/;\n protocol deribit;\n"
        " heartbaet 10s;\n}\n",
        "t.conf:4: unknown directive \"heartbaet\" (did you mean "
        "\"heartbeat\"?)");
}
END_TEST

/* The request budget: rate_limit, and rate_limit_pool once per pool,
   each burst able to pay for one request. */
START_TEST(t_proto_rate_limit)
{
    struct xg_main_conf *mc;

    mc = load("upstream x {\n url ws://h/;\n protocol deribit;\n"
        " rate_limit off;\n rate_limit_pool matching 50 20;\n"
        " rate_limit_pool non_matching 1500 1000.5;\n}\n"
        "listen 127.0.0.1:1 tcp upstream=x;\n");
    ck_assert_msg(mc != NULL, "%s", errs ? errs : "");
    xg_conf_free(mc);
    expect_error("upstream x {\n url ws://h/;\n protocol deribit;\n"
        " rate_limit_pool orders 50 20;\n}\n",
        "t.conf:4: \"rate_limit_pool\": the pool must be non_matching, "
        "matching, subscribe or get_instruments, not \"orders\"");
    expect_error("upstream x {\n url ws://h/;\n protocol deribit;\n"
        " rate_limit_pool matching 50 20;\n"
        " rate_limit_pool matching 20 5;\n}\n",
        "t.conf:5: \"rate_limit_pool\": matching is set twice");
    expect_error("upstream x {\n url ws://h/;\n protocol deribit;\n"
        " rate_limit_pool subscribe 2000 10000;\n}\n",
        "t.conf:4: \"rate_limit_pool\": subscribe: a burst of 2000 cannot "
        "pay for one request (3000)");
    expect_error("upstream x {\n url ws://h/;\n protocol deribit;\n"
        " rate_limit_pool matching 20 0;\n}\n",
        "t.conf:4: \"rate_limit_pool\": the burst and the refill must be "
        "positive numbers, not \"20\" \"0\"");
    expect_error("upstream x {\n url ws://h/;\n protocol deribit;\n"
        " rate_limit_pool matching 20 5x;\n}\n",
        "t.conf:4: \"rate_limit_pool\": the burst and the refill must be "
        "positive numbers, not \"20\" \"5x\"");
    expect_error("upstream x {\n url ws://h/;\n protocol deribit;\n"
        " rate_limit maybe;\n}\n",
        "t.conf:4: \"rate_limit\" must be \"on\" or \"off\", not "
        "\"maybe\"");
}
END_TEST

/* A bad or unknown `protocol` is one error, not one per directive. */
START_TEST(t_proto_directive_unknown_protocol)
{
    struct xg_main_conf *mc;

    mc = load("upstream x {\n url ws://h/;\n heartbeat 10s;\n"
        " protocol ftp;\n}\n");
    ck_assert_ptr_null(mc);
    ck_assert_str_eq(errs, "t.conf:4: \"protocol\": unknown protocol \"ftp\" "
        "(raw, deribit, edge, binance)\n");
}
END_TEST

/* A protocol directive outside an upstream is misplaced, not unknown. */
START_TEST(t_proto_directive_in_main)
{
    expect_error(UPSTREAM "heartbeat 10s;\n",
        "t.conf:2: \"heartbeat\" directive is not allowed here");
}
END_TEST

/* The file and line of an included protocol directive are kept. */
START_TEST(t_proto_directive_from_include)
{
    struct xg_main_conf *mc;

    write_file("main.conf", "upstream x {\n  include p.conf;\n"
        "  url ws://h/;\n}\n", 0600);
    write_file("p.conf", "\nheartbeat 10s;\n", 0600);
    mc = load_file("main.conf");
    ck_assert_ptr_null(mc);
    ck_assert_ptr_nonnull(strstr(errs, "p.conf:2: \"heartbeat\" is a "
        "directive of protocol deribit; upstream \"x\" uses raw\n"));
}
END_TEST

/* ---- what start-up refuses is a conf error too ------------------------- */

/*
 * raw serves clients but cannot authenticate them: a listener on it must
 * say that it trusts every one (client_auth off, on the listen line or
 * inherited), as `client_auth off;` must always be explicit.
 */
START_TEST(t_listen_raw_needs_client_auth_off)
{
    struct xg_main_conf *mc;

    mc = load("upstream r {\n url ws://h/;\n protocol raw;\n}\n"
        "listen 127.0.0.1:9 tcp upstream=r;\n");
    ck_assert_ptr_null(mc);
    ck_assert_str_eq(errs, "t.conf:5: listener 127.0.0.1:9: protocol raw "
        "cannot authenticate local clients and trusts every one: say so "
        "with client_auth=off on the listen line (or client_auth off;)\n");
    /* no `protocol` line: raw */
    mc = load("upstream r { url ws://h/; }\n"
        "listen [::1]:9 websocket upstream=r;\n");
    ck_assert_ptr_null(mc);
    ck_assert_ptr_nonnull(strstr(errs, "t.conf:2: listener ::1:9: protocol "
        "raw cannot authenticate local clients"));
    /* the listener's own on over the top level's off */
    mc = load("client_auth off;\nupstream r { url ws://h/; }\n"
        "listen [::1]:9 websocket upstream=r client_auth=on;\n");
    ck_assert_ptr_null(mc);
    ck_assert_ptr_nonnull(strstr(errs, "t.conf:3: listener ::1:9: protocol "
        "raw cannot authenticate local clients"));

    mc = load("upstream r { url ws://h/; }\n"
        "listen 127.0.0.1:9 websocket upstream=r client_auth=off;\n");
    ck_assert_msg(mc != NULL, "%s", errs ? errs : "");
    ck_assert_str_eq(mc->listens->path, "/*");     /* raw's default */
    xg_conf_free(mc);
    mc = load("client_auth off;\nupstream r { url ws://h/; }\n"
        "listen 127.0.0.1:9 tcp upstream=r;\n");
    ck_assert_msg(mc != NULL, "%s", errs ? errs : "");
    ck_assert_ptr_null(mc->listens->path);
    xg_conf_free(mc);
}
END_TEST

/* raw's own directives, their bounds, and raw's alone on deribit. */
START_TEST(t_raw_directives)
{
    struct xg_main_conf *mc;

    mc = load("upstream r {\n url ws://h/;\n"
        " replay '\"op\":\"subscribe\"';\n replay \"SUBSCRIBE\";\n"
        " on_open '{\"op\":\"hello\"}';\n replay_limit 10;\n"
        " queue_limit 0;\n queue_timeout 0ms;\n}\n");
    ck_assert_msg(mc != NULL, "%s", errs ? errs : "");
    ck_assert_str_eq(mc->upstreams->protocol, "raw");
    ck_assert_ptr_nonnull(mc->upstreams->proto_conf);
    ck_assert_uint_eq(mc->upstreams->queue_limit, 0);
    ck_assert_uint_eq(mc->upstreams->queue_timeout_ms, 0);
    xg_conf_free(mc);

    /* the queue's bounds are the upstream's, whatever the protocol */
    expect_error("upstream r {\n url ws://h/;\n protocol deribit;\n"
        " queue_limit 1000001;\n}\n",
        "t.conf:4: \"queue_limit\": 1000001 is out of range");
    expect_error("upstream r {\n url ws://h/;\n queue_timeout 2h;\n}\n",
        "t.conf:3: \"queue_timeout\": 2h is out of range");

    mc = load("upstream r {\n url ws://h/;\n replay \"\";\n"
        " on_open '';\n replay_limit 0;\n on_open '{\"k\":\"\xff\"}';\n}\n");
    ck_assert_ptr_null(mc);
    ck_assert_str_eq(errs, "t.conf:3: \"replay\": empty substring (it "
        "would match every message)\n"
        "t.conf:4: \"on_open\": empty message\n"
        "t.conf:5: \"replay_limit\": 0 is out of range\n"
        "t.conf:6: \"on_open\": not UTF-8 text (it goes in a text frame)\n");

    mc = load("upstream d {\n url ws://h/;\n protocol deribit;\n"
        " replay subscribe;\n on_open x;\n}\n");
    ck_assert_ptr_null(mc);
    ck_assert_str_eq(errs, "t.conf:4: \"replay\" is a directive of "
        "protocol raw; upstream \"d\" uses deribit\n"
        "t.conf:5: \"on_open\" is a directive of protocol raw; upstream "
        "\"d\" uses deribit\n");
}
END_TEST

/* A listener's host must be numeric, as start-up resolves it. */
START_TEST(t_listen_numeric_host)
{
    struct xg_main_conf *mc;

    mc = load(UPSTREAM "listen localhost:9 tcp upstream=d;\n");
    ck_assert_ptr_null(mc);
    ck_assert_msg(strncmp(errs, "t.conf:2: listener localhost:9: ", 32) == 0
        && strchr(errs, '\n') == errs + strlen(errs) - 1, "%s", errs);
    mc = load(UPSTREAM "allow_remote on;\n"
        "listen exgate-test.invalid:9 tcp upstream=d;\n");
    ck_assert_ptr_null(mc);
    ck_assert_msg(strncmp(errs, "t.conf:3: listener exgate-test.invalid:9: ",
        42) == 0, "%s", errs);
    mc = load(UPSTREAM "listen 127.0.0.1:9 tcp upstream=d;\n"
        "listen [::1]:9 tcp upstream=d;\n");
    ck_assert_msg(mc != NULL, "%s", errs ? errs : "");
    xg_conf_free(mc);
}
END_TEST

/* The error log must be one start-up can open; the check creates nothing. */
START_TEST(t_error_log_must_open)
{
    struct xg_main_conf *mc;
    char text[1024], want[1024], path[600];
    struct stat sb;

    snprintf(text, sizeof(text), "error_log %s/nodir/x.log;\n", tmpdir);
    mc = load(text);
    ck_assert_ptr_null(mc);
    snprintf(want, sizeof(want), "t.conf:1: error_log \"%s/nodir/x.log\": "
        "No such file or directory\n", tmpdir);
    ck_assert_str_eq(errs, want);

    snprintf(text, sizeof(text), "error_log %s info;\n", tmpdir);
    mc = load(text);
    ck_assert_ptr_null(mc);
    snprintf(want, sizeof(want), "t.conf:1: error_log \"%s\": Is a "
        "directory\n", tmpdir);
    ck_assert_str_eq(errs, want);

    snprintf(path, sizeof(path), "%s/new.log", tmpdir);
    snprintf(text, sizeof(text), "error_log %s;\n", path);
    mc = load(text);
    ck_assert_msg(mc != NULL, "%s", errs ? errs : "");
    xg_conf_free(mc);
    ck_assert_int_ne(stat(path, &sb), 0);
    write_file("old.log", "kept\n", 0600);
    snprintf(text, sizeof(text), "error_log %s/old.log;\n", tmpdir);
    mc = load(text);
    ck_assert_msg(mc != NULL, "%s", errs ? errs : "");
    xg_conf_free(mc);
    snprintf(path, sizeof(path), "%s/old.log", tmpdir);
    ck_assert_int_eq(stat(path, &sb), 0);
    ck_assert_int_eq(sb.st_size, 5);
}
END_TEST

/* ---- include -------------------------------------------------------------- */

START_TEST(t_include_relative)
{
    struct xg_main_conf *mc;

    mkdir(strcat(strcpy((char[512]){0}, tmpdir), "/sub"), 0700);
    write_file("main.conf", "include sub/up.conf;\nadmin 127.0.0.1:9;\n", 0600);
    write_file("sub/up.conf", "upstream d {\n  include inner.conf;\n}\n", 0600);
    write_file("sub/inner.conf", "url ws://inner:7/;\n", 0600);
    mc = load_file("main.conf");
    ck_assert_msg(mc != NULL, "%s", errs ? errs : "");
    ck_assert_str_eq(mc->upstreams->url.host, "inner");
    ck_assert_int_eq(mc->upstreams->url.port, 7);
    ck_assert_int_eq(mc->admin.port, 9);
    xg_conf_free(mc);
}
END_TEST

START_TEST(t_include_glob)
{
    struct xg_main_conf *mc;
    char d[512];

    snprintf(d, sizeof(d), "%s/conf.d", tmpdir);
    mkdir(d, 0700);
    write_file("main.conf", "include conf.d/*.conf;\ninclude none/*.conf;\n",
        0600);
    write_file("conf.d/a.conf", "upstream a { url ws://a/; }\n", 0600);
    write_file("conf.d/b.conf", "upstream b { url ws://b/; }\n", 0600);
    write_file("conf.d/c.txt", "garbage\n", 0600);
    mc = load_file("main.conf");
    ck_assert_msg(mc != NULL, "%s", errs ? errs : "");
    ck_assert_str_eq(mc->upstreams->name, "a");
    ck_assert_str_eq(mc->upstreams->next->name, "b");
    ck_assert_ptr_null(mc->upstreams->next->next);
    xg_conf_free(mc);
}
END_TEST

START_TEST(t_include_error_names_included_file)
{
    struct xg_main_conf *mc;

    write_file("main.conf", "include x.conf;\n", 0600);
    write_file("x.conf", "\n\nbogus;\n", 0600);
    mc = load_file("main.conf");
    ck_assert_ptr_null(mc);
    ck_assert_ptr_nonnull(strstr(errs, "x.conf:3: unknown directive \"bogus\""));
}
END_TEST

START_TEST(t_include_loop)
{
    struct xg_main_conf *mc;

    write_file("a.conf", "include b.conf;\n", 0600);
    write_file("b.conf", "\ninclude a.conf;\n", 0600);
    mc = load_file("a.conf");
    ck_assert_ptr_null(mc);
    ck_assert_ptr_nonnull(strstr(errs, "b.conf:2: include loop: "));
}
END_TEST

/* 16 files deep is fine (the main one counts), 17 is an error. */
START_TEST(t_include_depth)
{
    struct xg_main_conf *mc;
    char name[32], text[64];
    int i;

    for (i = 0; i < 16; i++) {
        snprintf(name, sizeof(name), "f%d.conf", i);
        snprintf(text, sizeof(text), "include f%d.conf;\n", i + 1);
        write_file(name, text, 0600);
    }
    write_file("f16.conf", "admin 127.0.0.1:9;\n", 0600);
    mc = load_file("f1.conf");
    ck_assert_msg(mc != NULL, "%s", errs ? errs : "");
    ck_assert_int_eq(mc->admin.port, 9);
    xg_conf_free(mc);
    mc = load_file("f0.conf");
    ck_assert_ptr_null(mc);
    ck_assert_ptr_nonnull(strstr(errs,
        "f15.conf:1: includes nested too deeply (more than 16)"));
}
END_TEST

START_TEST(t_include_missing)
{
    struct xg_main_conf *mc;

    write_file("main.conf", "\ninclude nope.conf;\n", 0600);
    mc = load_file("main.conf");
    ck_assert_ptr_null(mc);
    ck_assert_ptr_nonnull(strstr(errs, "main.conf:2: include \""));
    ck_assert_ptr_nonnull(strstr(errs, "nope.conf\": No such file or directory"));
}
END_TEST

START_TEST(t_include_arity)
{
    expect_error("include a b;\n", "t.conf:1: invalid number of arguments in "
        "\"include\" directive");
}
END_TEST

START_TEST(t_missing_file)
{
    struct xg_main_conf *mc = load_file("does-not-exist.conf");

    ck_assert_ptr_null(mc);
    ck_assert_ptr_nonnull(strstr(errs, "does-not-exist.conf: cannot open: No "
        "such file or directory"));
}
END_TEST

/* ---- secrets -------------------------------------------------------------- */

static char *
secret(const char *spec, const char *file)
{
    struct xg_main_conf mc;
    struct xg_conf cf;
    struct xg_conf_stmt st;
    char *v;

    memset(&mc, 0, sizeof(mc));
    memset(&cf, 0, sizeof(cf));
    memset(&st, 0, sizeof(st));
    cf.main = &mc;
    st.file = file;
    st.line = 4;
    v = xg_conf_secret(&cf, &st, spec);
    free(errs);
    errs = cf.errors;
    return v;
}

START_TEST(t_secret_env)
{
    char *v;

    setenv("XG_TEST_SECRET", "s3cr3t", 1);
    v = secret("env:XG_TEST_SECRET", "t.conf");
    ck_assert_str_eq(v, "s3cr3t");
    ck_assert_ptr_null(errs);
    free(v);
    unsetenv("XG_TEST_SECRET_NOPE");
    v = secret("env:XG_TEST_SECRET_NOPE", "t.conf");
    ck_assert_ptr_null(v);
    ck_assert_str_eq(errs, "t.conf:4: secret: environment variable "
        "\"XG_TEST_SECRET_NOPE\" is not set\n");
}
END_TEST

START_TEST(t_secret_file)
{
    char conf[512];
    char *v;

    snprintf(conf, sizeof(conf), "%s/main.conf", tmpdir);
    write_file("key", "abc123\n", 0600);
    v = secret("file:key", conf);
    ck_assert_str_eq(v, "abc123");
    ck_assert_ptr_null(errs);
    free(v);
    write_file("key2", "xyz", 0644);
    v = secret("file:key2", conf);
    ck_assert_str_eq(v, "xyz");
    ck_assert_ptr_nonnull(strstr(errs, "main.conf:4: warning: secret file "));
    ck_assert_ptr_nonnull(strstr(errs, "is readable by group or others "
        "(mode 644)"));
    free(v);
    v = secret("file:nope", conf);
    ck_assert_ptr_null(v);
    ck_assert_ptr_nonnull(strstr(errs, "/nope\": No such file or directory"));
    write_file("empty", "\n", 0600);
    v = secret("file:empty", conf);
    ck_assert_ptr_null(v);
    ck_assert_ptr_nonnull(strstr(errs, "is empty"));
}
END_TEST

START_TEST(t_secret_file_bounds)
{
    char conf[512], path[512], big[4098];
    char *v;

    snprintf(conf, sizeof(conf), "%s/main.conf", tmpdir);
    /* Exactly 4096 bytes: whole. 4097: an error, never a cut secret. */
    memset(big, 'k', 4096);
    big[4096] = '\0';
    write_file("k4096", big, 0600);
    v = secret("file:k4096", conf);
    ck_assert_ptr_nonnull(v);
    ck_assert_uint_eq(strlen(v), 4096);
    ck_assert_ptr_null(errs);
    free(v);
    big[4096] = 'k';
    big[4097] = '\0';
    write_file("k4097", big, 0600);
    v = secret("file:k4097", conf);
    ck_assert_ptr_null(v);
    ck_assert_ptr_nonnull(strstr(errs, "k4097\" is larger than 4096 bytes"));
    /* A FIFO with no writer: an error at once, not a hang. */
    snprintf(path, sizeof(path), "%s/fifo", tmpdir);
    ck_assert_int_eq(mkfifo(path, 0600), 0);
    v = secret("file:fifo", conf);
    ck_assert_ptr_null(v);
    ck_assert_ptr_nonnull(strstr(errs, "fifo\" is not a regular file"));
    /* A directory likewise, rather than "is empty". */
    v = secret("file:.", conf);
    ck_assert_ptr_null(v);
    ck_assert_ptr_nonnull(strstr(errs, "is not a regular file"));
}
END_TEST

START_TEST(t_secret_literal_refused)
{
    char *v = secret("hunter2", "t.conf");

    ck_assert_ptr_null(v);
    ck_assert_str_eq(errs, "t.conf:4: a secret must be \"env:NAME\" or "
        "\"file:PATH\", not a literal value\n");
    v = secret("env:", "t.conf");
    ck_assert_ptr_null(v);
    ck_assert_ptr_nonnull(strstr(errs, "names no variable"));
}
END_TEST

START_TEST(t_tls_ca_relative_to_conf)
{
    struct xg_main_conf *mc;

    write_file("main.conf", "upstream d { url wss://h/; tls_ca ca.pem; "
        "tls_verify off; }\n", 0600);
    mc = load_file("main.conf");
    ck_assert_ptr_nonnull(mc);
    ck_assert_ptr_nonnull(strstr(mc->upstreams->tls_ca, "/ca.pem"));
    ck_assert_int_eq(strncmp(mc->upstreams->tls_ca, tmpdir, strlen(tmpdir)), 0);
    ck_assert_int_eq(mc->upstreams->tls_verify, 0);
    xg_conf_free(mc);
}
END_TEST

START_TEST(t_default_conf_file)
{
    struct xg_main_conf *mc;
    char path[512];
    const char *src = getenv("XG_SRCDIR");

    snprintf(path, sizeof(path), "%s/conf/exgate.conf", src ? src : ".");
    free(errs);
    errs = NULL;
    mc = xg_conf_load(path, &errs);
    ck_assert_msg(mc != NULL, "%s", errs ? errs : "");
    ck_assert_str_eq(mc->upstreams->url.host, "www.deribit.com");
    ck_assert_int_eq(mc->admin.port, 8610);
    xg_conf_free(mc);
}
END_TEST

/* max_connection_age: off by default, 1m..7d, a duration. */
START_TEST(t_max_connection_age)
{
    struct xg_main_conf *mc;

    mc = load("upstream u { url ws://h/; }\n"
        "upstream v { url ws://h/; max_connection_age 1m; }\n"
        "upstream w { url ws://h/; max_connection_age 7d; }\n"
        "upstream x { url ws://h/; max_connection_age 24h; protocol deribit; }\n");
    ck_assert_msg(mc != NULL, "%s", errs ? errs : "");
    ck_assert_uint_eq(mc->upstreams->max_connection_age_ms, 0);
    ck_assert_uint_eq(mc->upstreams->next->max_connection_age_ms, 60000);
    ck_assert_uint_eq(mc->upstreams->next->next->max_connection_age_ms,
        7ULL * 86400000);
    ck_assert_uint_eq(mc->upstreams->next->next->next->max_connection_age_ms,
        86400000);
    xg_conf_free(mc);
    expect_error("upstream u { url ws://h/;\n max_connection_age 59s; }\n",
        "t.conf:2: \"max_connection_age\": 59s is out of range");
    expect_error("upstream u { url ws://h/;\n max_connection_age 169h; }\n",
        "t.conf:2: \"max_connection_age\": 169h is out of range");
    expect_error("upstream u { url ws://h/;\n max_connection_age 8d; }\n",
        "t.conf:2: \"max_connection_age\": 8d is out of range");
    expect_error("upstream u { url ws://h/;\n max_connection_age 0s; }\n",
        "t.conf:2: \"max_connection_age\": 0s is out of range");
    expect_error("upstream u { url ws://h/;\n max_connection_age 1; }\n",
        "t.conf:2: \"max_connection_age\": bad duration \"1\"");
    expect_error("upstream u { url ws://h/;\n max_connection_age off; }\n",
        "t.conf:2: \"max_connection_age\": bad duration \"off\"");
    expect_error("upstream u { url ws://h/; max_connection_age 1h;\n"
        " max_connection_age 2h; }\n",
        "t.conf:2: \"max_connection_age\" directive is duplicate (first at line 1)");
    expect_error("max_connection_age 1h;\n",
        "t.conf:1: \"max_connection_age\" directive is not allowed here");
}
END_TEST

/* admin_origin: main context, repeatable, scheme://host[:port] only. */
START_TEST(t_admin_origin)
{
    struct xg_main_conf *mc;

    mc = load("admin 127.0.0.1:8610;\n"
        "admin_origin http://localhost:3000;\n"
        "admin_origin https://ops.example.com;\n"
        "admin_origin http://[::1]:8080;\n"
        "admin_origin chrome-extension://abcdef;\n");
    ck_assert_msg(mc != NULL, "%s", errs ? errs : "");
    ck_assert_int_eq(mc->nadmin_origins, 4);
    ck_assert_str_eq(mc->admin_origins[0].origin, "http://localhost:3000");
    ck_assert_int_eq(mc->admin_origins[0].line, 2);
    ck_assert_str_eq(mc->admin_origins[1].origin, "https://ops.example.com");
    ck_assert_str_eq(mc->admin_origins[2].origin, "http://[::1]:8080");
    ck_assert_str_eq(mc->admin_origins[3].origin,
        "chrome-extension://abcdef");
    xg_conf_free(mc);
    mc = load("admin 127.0.0.1:8610;\n");
    ck_assert_ptr_nonnull(mc);
    ck_assert_int_eq(mc->nadmin_origins, 0);
    xg_conf_free(mc);

    expect_error("admin_origin localhost:3000;\n",
        "t.conf:1: \"admin_origin\": \"localhost:3000\" is not an origin "
        "(scheme://host[:port], no path)");
    expect_error("admin_origin http://localhost:3000/;\n",
        "t.conf:1: \"admin_origin\": \"http://localhost:3000/\" is not an "
        "origin");
    expect_error("admin_origin http://h/x;\n", "t.conf:1: \"admin_origin\"");
    expect_error("admin_origin http://;\n", "t.conf:1: \"admin_origin\"");
    expect_error("admin_origin http://h:;\n", "t.conf:1: \"admin_origin\"");
    expect_error("admin_origin http://h:0;\n", "t.conf:1: \"admin_origin\"");
    expect_error("admin_origin http://h:65536;\n",
        "t.conf:1: \"admin_origin\"");
    expect_error("admin_origin http://u@h;\n", "t.conf:1: \"admin_origin\"");
    expect_error("admin_origin http://h?x=1;\n", "t.conf:1: \"admin_origin\"");
    expect_error("admin_origin null;\n", "t.conf:1: \"admin_origin\"");
    expect_error("admin_origin *;\n", "t.conf:1: \"admin_origin\"");
    expect_error("admin_origin 1http://h;\n", "t.conf:1: \"admin_origin\"");
    expect_error("admin_origin http://[zz]:1;\n",
        "t.conf:1: \"admin_origin\"");
    expect_error("admin_origin http://a;\nadmin_origin https://b;\n"
        "admin_origin http://a;\n",
        "t.conf:3: \"admin_origin\": duplicate \"http://a\" (first at "
        "t.conf:1)");
    expect_error("upstream u { url ws://h/;\n admin_origin http://a; }\n",
        "t.conf:2: \"admin_origin\" directive is not allowed here");
    expect_error("admin_origin;\n", "t.conf:1: invalid number of arguments "
        "in \"admin_origin\" directive");
}
END_TEST

/* ---- exgate -T (xg_conf_dump.c) ---------------------------------------- */

/* MC dumped as conf text (caller frees). */
static char *
dump(const struct xg_main_conf *mc)
{
    char *text = NULL;
    size_t len = 0;
    FILE *fp = open_memstream(&text, &len);

    ck_assert_ptr_nonnull(fp);
    ck_assert_int_eq(xg_conf_dump(fp, mc), XG_OK);
    fclose(fp);
    return text;
}

START_TEST(t_dump_values_read_back)
{
    static const uint64_t ms[] = { 0, 1, 250, 999, 1000, 1500, 60000, 90000,
        3600000, 7200000, 86400000, 3601000 };
    static const uint64_t bytes[] = { 0, 1, 1023, 1024, 1536, 65536,
        16777216, 1073741824, 1073741825 };
    char buf[64];
    uint64_t v;
    size_t i;

    ck_assert_str_eq(xg_conf_fmt_duration(0, buf, sizeof(buf)), "0s");
    ck_assert_str_eq(xg_conf_fmt_duration(250, buf, sizeof(buf)), "250ms");
    ck_assert_str_eq(xg_conf_fmt_duration(60000, buf, sizeof(buf)), "60s");
    ck_assert_str_eq(xg_conf_fmt_duration(7200000, buf, sizeof(buf)), "2h");
    ck_assert_str_eq(xg_conf_fmt_size(0, buf, sizeof(buf)), "0");
    ck_assert_str_eq(xg_conf_fmt_size(1536, buf, sizeof(buf)), "1536");
    ck_assert_str_eq(xg_conf_fmt_size(16777216, buf, sizeof(buf)), "16m");
    for (i = 0; i < XG_NELEM(ms); i++) {
        ck_assert_int_eq(xg_conf_parse_duration(xg_conf_fmt_duration(ms[i],
            buf, sizeof(buf)), &v), XG_OK);
        ck_assert_uint_eq(v, ms[i]);
    }
    for (i = 0; i < XG_NELEM(bytes); i++) {
        ck_assert_int_eq(xg_conf_parse_size(xg_conf_fmt_size(bytes[i], buf,
            sizeof(buf)), &v), XG_OK);
        ck_assert_uint_eq(v, bytes[i]);
    }
}
END_TEST

START_TEST(t_dump_urls_and_addresses)
{
    static const char *in[] = {
        "wss://www.deribit.com/ws/api/v2", "ws://127.0.0.1:8080/x?a=1&b=2",
        "wss://[::1]:9443/ws", "ws://[::1]/", "wss://h:443/p"
    };
    static const char *out[] = {
        "wss://www.deribit.com/ws/api/v2", "ws://127.0.0.1:8080/x?a=1&b=2",
        "wss://[::1]:9443/ws", "ws://[::1]/", "wss://h/p"
    };
    struct xg_url u;
    struct xg_addr a;
    char buf[2048];
    size_t i;

    for (i = 0; i < XG_NELEM(in); i++) {
        ck_assert_int_eq(xg_conf_parse_url(in[i], &u), XG_OK);
        ck_assert_str_eq(xg_conf_fmt_url(&u, buf, sizeof(buf)), out[i]);
    }
    ck_assert_int_eq(xg_conf_parse_addr("[::1]:8600", &a), XG_OK);
    ck_assert_str_eq(xg_conf_fmt_addr(&a, buf, sizeof(buf)), "[::1]:8600");
}
END_TEST

/* Words that need quoting come back as they were, and a second dump of
   the dump is the same text. */
START_TEST(t_dump_round_trip)
{
    struct xg_main_conf *mc, *again;
    char *one, *two;

    mc = load(
        "upstream u {\n"
        "    url ws://127.0.0.1:1/ws;\n"
        "    header X-A \"semi; brace{ } hash# quote\\\" apos' back\\\\slash\";\n"
        "    header X-B \"tab\\there\";\n"
        "    header X-C \"\";\n"
        "    ping 0ms;\n"
        "    reconnect exponential { multiplier 1.25; jitter equal; }\n"
        "    max_connection_age 7d;\n"
        "}\n"
        "upstream v { url ws://127.0.0.1:1/ws; }\n"
        "admin_origin http://localhost:3000;\n"
        "admin_origin \"https://[::1]:8443\";\n");
    ck_assert_msg(mc != NULL, "%s", errs ? errs : "");
    one = dump(mc);
    again = load(one);
    ck_assert_msg(again != NULL, "the dump does not load: %s\n%s",
        errs ? errs : "", one);
    ck_assert_int_eq(again->upstreams->nheaders, 3);
    ck_assert_str_eq(again->upstreams->headers[0].value,
        "semi; brace{ } hash# quote\" apos' back\\slash");
    ck_assert_str_eq(again->upstreams->headers[1].value, "tab\there");
    ck_assert_str_eq(again->upstreams->headers[2].value, "");
    ck_assert_uint_eq(again->upstreams->ping_ms, 0);
    two = dump(again);
    ck_assert_str_eq(one, two);
    ck_assert_ptr_nonnull(strstr(one, "    multiplier 1.25;\n"));
    ck_assert_ptr_nonnull(strstr(one, "    # breaker: off\n"));
    ck_assert_ptr_nonnull(strstr(one, "# listen: none\n"));
    ck_assert_ptr_nonnull(strstr(one, "\n    max_connection_age 168h;\n"));
    ck_assert_ptr_nonnull(strstr(one, "\n    # max_connection_age: not set\n"));
    ck_assert_ptr_nonnull(strstr(one, "\nadmin_origin http://localhost:3000;\n"
        "admin_origin https://[::1]:8443;\n"));
    ck_assert_uint_eq(again->upstreams->max_connection_age_ms,
        7ULL * 86400000);
    ck_assert_int_eq(again->nadmin_origins, 2);
    ck_assert_str_eq(again->admin_origins[1].origin, "https://[::1]:8443");
    free(one);
    free(two);
    xg_conf_free(again);
    xg_conf_free(mc);
}
END_TEST

/* A secret is shown by its source, never its value. */
START_TEST(t_dump_secret_by_source)
{
    struct xg_main_conf *mc;
    char *text;

    setenv("XG_CHECK_DUMP_SECRET", "vAlUe-never-shown", 1);
    write_file("s.secret", "fIlE-never-shown\n", 0600);
    write_file("d.conf",
        "upstream d { url ws://127.0.0.1:1/; protocol deribit;\n"
        "    auth client_credentials env:XG_CHECK_DUMP_SECRET file:s.secret; }\n"
        "client_credentials bot file:s.secret;\n"
        "listen 127.0.0.1:8600 tcp upstream=d "
        "client_credentials=b2:env:XG_CHECK_DUMP_SECRET;\n", 0644);
    mc = load_file("d.conf");
    ck_assert_msg(mc != NULL, "%s", errs ? errs : "");
    text = dump(mc);
    ck_assert_ptr_null(strstr(text, "never-shown"));
    ck_assert_ptr_nonnull(strstr(text, "auth client_credentials "
        "env:XG_CHECK_DUMP_SECRET file:/"));
    ck_assert_ptr_nonnull(strstr(text, "/s.secret;\n"));
    ck_assert_ptr_nonnull(strstr(text,
        "client_credentials=b2:env:XG_CHECK_DUMP_SECRET;"));
    free(text);
    xg_conf_free(mc);
    unsetenv("XG_CHECK_DUMP_SECRET");
}
END_TEST

/* ---- publish redis:// (src/xg_redis.h) --------------------------------- */

#define PUB_UP(p) "upstream d { url ws://127.0.0.1:1/; protocol deribit;\n" \
    p "\n}\n"

START_TEST(t_publish_values)
{
    struct xg_main_conf *mc;
    const struct xg_publish_conf *pc;
    char *text;

    setenv("XG_T_REDIS_PW", "pw-never-shown", 1);
    mc = load(PUB_UP("publish redis://10.0.0.5;"));
    ck_assert_msg(mc != NULL, "%s", errs ? errs : "");
    pc = mc->upstreams->publish;
    ck_assert_str_eq(pc->addr.host, "10.0.0.5");
    ck_assert_uint_eq(pc->addr.port, 6379);
    ck_assert_str_eq(pc->prefix, "exgate");
    ck_assert_uint_eq(pc->maxlen, 10000);
    ck_assert_uint_eq(pc->carry, 128);
    ck_assert_ptr_null(pc->password);
    xg_conf_free(mc);

    mc = load(PUB_UP("publish redis://:env:XG_T_REDIS_PW@127.0.0.1:6390/ "
        "prefix=core.a maxlen=1000 carry=0;"));
    ck_assert_msg(mc != NULL, "%s", errs ? errs : "");
    pc = mc->upstreams->publish;
    ck_assert_uint_eq(pc->carry, 0);
    ck_assert_uint_eq(pc->addr.port, 6390);
    ck_assert_str_eq(pc->prefix, "core.a");
    ck_assert_uint_eq(pc->maxlen, 1000);
    ck_assert_str_eq(pc->password, "pw-never-shown");
    text = dump(mc);
    ck_assert_ptr_null(strstr(text, "never-shown"));
    ck_assert_ptr_nonnull(strstr(text, "publish redis://127.0.0.1:6390 "
        "prefix=core.a maxlen=1000 carry=0 password=env:XG_T_REDIS_PW;"));
    free(text);
    xg_conf_free(mc);

    /* rediss://: TLS (src/xg_rtls.h), written back as such */
    mc = load(PUB_UP("publish rediss://10.0.0.5:6380;"));
    ck_assert_msg(mc != NULL, "%s", errs ? errs : "");
    pc = mc->upstreams->publish;
    ck_assert_int_eq(pc->tls, 1);
    ck_assert_uint_eq(pc->addr.port, 6380);
    text = dump(mc);
    ck_assert_ptr_nonnull(strstr(text, "publish rediss://10.0.0.5:6380 "));
    free(text);
    xg_conf_free(mc);

    mc = load(PUB_UP("publish redis://[::1]:7000 "
        "password=env:XG_T_REDIS_PW maxlen=100000000;"));
    ck_assert_msg(mc != NULL, "%s", errs ? errs : "");
    pc = mc->upstreams->publish;
    ck_assert_str_eq(pc->addr.host, "::1");
    ck_assert_str_eq(pc->password, "pw-never-shown");
    xg_conf_free(mc);
    unsetenv("XG_T_REDIS_PW");
}
END_TEST

START_TEST(t_publish_errors)
{
    setenv("XG_T_REDIS_PW", "pw-never-shown", 1);
    expect_error(PUB_UP("publish rediss://;"),
        "t.conf:2: \"publish\": bad url: no host");
    expect_error(PUB_UP("publish http://127.0.0.1:6379;"),
        "t.conf:2: \"publish\": bad url \"http...\"");
    expect_error(PUB_UP("publish redis://;"),
        "t.conf:2: \"publish\": bad url: no host");
    expect_error(PUB_UP("publish redis://127.0.0.1:99999;"),
        "t.conf:2: \"publish\": bad url: bad host or port");
    expect_error(PUB_UP("publish redis://127.0.0.1:6379/0;"),
        "t.conf:2: \"publish\": bad url: bad host or port");
    expect_error(PUB_UP("\npublish redis://user:env:X@127.0.0.1;"),
        "t.conf:3: \"publish\": bad url: the part before \"@\" must be "
        "\":PASSWORD_REF\"");
    /* a password written out is refused and never echoed */
    expect_error(PUB_UP("publish redis://:hunter2@127.0.0.1;"),
        "t.conf:2: \"publish\": the password must be a reference");
    ck_assert_ptr_null(strstr(errs, "hunter2"));
    expect_error(PUB_UP("publish redis://127.0.0.1 password=hunter2;"),
        "t.conf:2: \"publish\": the password must be a reference");
    ck_assert_ptr_null(strstr(errs, "hunter2"));
    expect_error(PUB_UP("publish redis://:env:XG_T_REDIS_PW@127.0.0.1 "
        "password=env:XG_T_REDIS_PW;"),
        "t.conf:2: \"publish\": password given twice");
    expect_error(PUB_UP("publish redis://127.0.0.1 "
        "password=env:XG_T_REDIS_UNSET_X;"),
        "t.conf:2: secret: environment variable \"XG_T_REDIS_UNSET_X\"");
    expect_error(PUB_UP("publish redis://127.0.0.1 maxlen=999;"),
        "t.conf:2: \"publish\": bad maxlen \"999\" (1000 to 100000000 "
        "entries)");
    expect_error(PUB_UP("publish redis://127.0.0.1 maxlen=100000001;"),
        "t.conf:2: \"publish\": bad maxlen");
    expect_error(PUB_UP("publish redis://127.0.0.1 carry=129;"),
        "t.conf:2: \"publish\": bad carry \"129\" (0 to 128 entries a "
        "bell carries)");
    expect_error(PUB_UP("publish redis://127.0.0.1 carry=-1;"),
        "t.conf:2: \"publish\": bad carry \"-1\"");
    expect_error(PUB_UP("publish redis://127.0.0.1 carry=;"),
        "t.conf:2: \"publish\": bad carry \"\"");
    expect_error(PUB_UP("publish redis://127.0.0.1 prefix=a/b;"),
        "t.conf:2: \"publish\": bad prefix \"a/b\"");
    expect_error(PUB_UP("publish redis://127.0.0.1 prefix=;"),
        "t.conf:2: \"publish\": bad prefix \"\"");
    expect_error(PUB_UP("publish redis://127.0.0.1 maxlne=5;"),
        "t.conf:2: \"publish\": unknown parameter \"maxlne\"");
    expect_error(PUB_UP("publish redis://127.0.0.1;\npublish redis://h;"),
        "t.conf:3: ");
    expect_error("publish redis://127.0.0.1;\n" UPSTREAM,
        "t.conf:1: \"publish\" directive is not allowed here");
    unsetenv("XG_T_REDIS_PW");
}
END_TEST

static Suite *
conf_suite(void)
{
    Suite *s = suite_create("xg_conf");
    TCase *tc = tcase_create("conf");

    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, t_minimal);
    tcase_add_test(tc, t_error_log_json);
    tcase_add_test(tc, t_comments_and_layout);
    tcase_add_test(tc, t_double_quotes_escapes);
    tcase_add_test(tc, t_single_quotes_and_unknown_escape);
    tcase_add_test(tc, t_quoted_string_spans_lines);
    tcase_add_test(tc, t_durations);
    tcase_add_test(tc, t_sizes);
    tcase_add_test(tc, t_flags);
    tcase_add_test(tc, t_addresses);
    tcase_add_test(tc, t_urls);
    tcase_add_test(tc, t_deep_nesting_bounded);
    tcase_add_test(tc, t_unterminated_quote);
    tcase_add_test(tc, t_quote_glued);
    tcase_add_test(tc, t_missing_semicolon_before_brace);
    tcase_add_test(tc, t_missing_semicolon_at_eof);
    tcase_add_test(tc, t_missing_semicolon_between);
    tcase_add_test(tc, t_missing_brace);
    tcase_add_test(tc, t_unexpected_brace);
    tcase_add_test(tc, t_unexpected_semicolon);
    tcase_add_test(tc, t_nul_byte);
    tcase_add_test(tc, t_unknown_with_suggestion);
    tcase_add_test(tc, t_unknown_in_upstream_with_suggestion);
    tcase_add_test(tc, t_unknown_without_suggestion);
    tcase_add_test(tc, t_wrong_context_main);
    tcase_add_test(tc, t_wrong_context_upstream);
    tcase_add_test(tc, t_wrong_arity);
    tcase_add_test(tc, t_duplicate);
    tcase_add_test(tc, t_duplicate_upstream);
    tcase_add_test(tc, t_block_required_and_refused);
    tcase_add_test(tc, t_bad_values);
    tcase_add_test(tc, t_upstream_without_url);
    tcase_add_test(tc, t_headers);
    tcase_add_test(tc, t_listen_errors);
    tcase_add_test(tc, t_listen_before_upstream);
    tcase_add_test(tc, t_listen_path);
    tcase_add_test(tc, t_remote_needs_opt_in);
    tcase_add_test(tc, t_every_error_reported);
    tcase_add_test(tc, t_syntax_and_directive_errors_together);
    tcase_add_test(tc, t_proto_directive_on_raw);
    tcase_add_test(tc, t_proto_directives_all_refused_on_raw);
    tcase_add_test(tc, t_proto_directives_on_deribit);
    tcase_add_test(tc, t_accounts);
    tcase_add_test(tc, t_edge);
    tcase_add_test(tc, t_proto_rate_limit);
    tcase_add_test(tc, t_proto_directive_unknown_protocol);
    tcase_add_test(tc, t_proto_directive_in_main);
    tcase_add_test(tc, t_proto_directive_from_include);
    tcase_add_test(tc, t_listen_raw_needs_client_auth_off);
    tcase_add_test(tc, t_raw_directives);
    tcase_add_test(tc, t_listen_numeric_host);
    tcase_add_test(tc, t_error_log_must_open);
    tcase_add_test(tc, t_include_relative);
    tcase_add_test(tc, t_include_glob);
    tcase_add_test(tc, t_include_error_names_included_file);
    tcase_add_test(tc, t_include_loop);
    tcase_add_test(tc, t_include_depth);
    tcase_add_test(tc, t_include_missing);
    tcase_add_test(tc, t_include_arity);
    tcase_add_test(tc, t_missing_file);
    tcase_add_test(tc, t_secret_env);
    tcase_add_test(tc, t_secret_file);
    tcase_add_test(tc, t_secret_file_bounds);
    tcase_add_test(tc, t_secret_literal_refused);
    tcase_add_test(tc, t_tls_ca_relative_to_conf);
    tcase_add_test(tc, t_default_conf_file);
    tcase_add_test(tc, t_max_connection_age);
    tcase_add_test(tc, t_admin_origin);
    tcase_add_test(tc, t_dump_values_read_back);
    tcase_add_test(tc, t_dump_urls_and_addresses);
    tcase_add_test(tc, t_dump_round_trip);
    tcase_add_test(tc, t_dump_secret_by_source);
    tcase_add_test(tc, t_publish_values);
    tcase_add_test(tc, t_publish_errors);
    suite_add_tcase(s, tc);
    return s;
}

int
main(void)
{
    SRunner *sr = srunner_create(conf_suite());
    int failed;

    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? 0 : 1;
}
