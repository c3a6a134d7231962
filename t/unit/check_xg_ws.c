/*
 * check_xg_ws.c: the pure WebSocket pieces (xg_wsproto.c): the accept
 * value, handshake request and response checks, frame headers, UTF-8.
 */
#include "xg_core.h"
#include "xg_log.h"
#include "xg_wsproto.h"

#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/ssl.h>

#define KEY "dGhlIHNhbXBsZSBub25jZQ=="

START_TEST(test_accept_rfc_example)
{
    char out[XG_WSPROTO_ACCEPT_LEN + 1];

    /*
     * RFC 6455 section 1.3. (The issue text quotes
     * "s3pPLMBiTxaQ9kYGzzhZRrxK+xo=", a typo: the RFC, Python's hashlib
     * and every browser agree on the value below.)
     */
    xg_wsproto_accept(KEY, strlen(KEY), out);
    ck_assert_str_eq(out, "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
}
END_TEST

START_TEST(test_make_key)
{
    char a[XG_WSPROTO_KEY_LEN + 1], b[XG_WSPROTO_KEY_LEN + 1];
    unsigned char raw[24];

    ck_assert_int_eq(xg_wsproto_make_key(a), XG_OK);
    ck_assert_int_eq(xg_wsproto_make_key(b), XG_OK);
    ck_assert_uint_eq(strlen(a), 24);
    ck_assert_str_ne(a, b);
    ck_assert_int_eq(EVP_DecodeBlock(raw, (unsigned char *) a, 24), 18);
    ck_assert(a[22] == '=' && a[23] == '=');
}
END_TEST

START_TEST(test_head_len)
{
    const char *h = "GET / HTTP/1.1\r\nHost: x\r\n\r\nrest";
    char big[XG_WSPROTO_MAX_HEAD + 10];

    ck_assert_int_eq(xg_wsproto_head_len(h, strlen(h), 8192), 27);
    ck_assert_int_eq(xg_wsproto_head_len(h, 20, 8192), 0);
    ck_assert_int_eq(xg_wsproto_head_len(h, 0, 8192), 0);
    memset(big, 'a', sizeof(big));
    ck_assert_int_eq(xg_wsproto_head_len(big, sizeof(big), 8192), -1);
    ck_assert_int_eq(xg_wsproto_head_len(big, 8191, 8192), 0);
    /* A head that would end just past the bound does not fit. */
    memcpy(big + 8190, "\r\n\r\n", 4);
    ck_assert_int_eq(xg_wsproto_head_len(big, 8194, 8192), -1);
    memcpy(big + 8188, "\r\n\r\n", 4);
    ck_assert_int_eq(xg_wsproto_head_len(big, 8194, 8192), 8192);
}
END_TEST

#define GOOD_REQ \
    "GET /ws/api/v2?x=1 HTTP/1.1\r\n" \
    "Host: 127.0.0.1:8600\r\n" \
    "Upgrade: websocket\r\n" \
    "Connection: Upgrade\r\n" \
    "Sec-WebSocket-Key: " KEY "\r\n" \
    "Sec-WebSocket-Version: 13\r\n" \
    "\r\n"

static int
parse_req(const char *s, struct xg_wsproto_req *r)
{
    return xg_wsproto_parse_request(s, strlen(s), r);
}

START_TEST(test_request_good)
{
    struct xg_wsproto_req r;
    const char *alt =
        "GET / HTTP/1.1\r\n"
        "host:example\r\n"
        "upgrade:   WebSocket  \r\n"
        "connection: keep-alive, UPGRADE\r\n"
        "sec-websocket-version: 13\r\n"
        "SEC-WEBSOCKET-KEY: " KEY "\r\n"
        "User-Agent: python\r\n"
        "\r\n";

    ck_assert_int_eq(parse_req(GOOD_REQ, &r), XG_OK);
    ck_assert_str_eq(r.path, "/ws/api/v2?x=1");
    ck_assert_str_eq(r.key, KEY);
    ck_assert_int_eq(r.status, 0);
    ck_assert_int_eq(parse_req(alt, &r), XG_OK);
    ck_assert_str_eq(r.path, "/");
}
END_TEST

/* Replaces FROM by TO in the good request and expects STATUS. */
static void
expect_bad(const char *from, const char *to, int status)
{
    char buf[XG_WSPROTO_MAX_HEAD * 2];
    struct xg_wsproto_req r;
    const char *p;
    size_t pre;

    p = strstr(GOOD_REQ, from);
    ck_assert_msg(p != NULL, "no \"%s\" in the request", from);
    pre = (size_t) (p - GOOD_REQ);
    snprintf(buf, sizeof(buf), "%.*s%s%s", (int) pre, GOOD_REQ, to,
        p + strlen(from));
    ck_assert_int_eq(parse_req(buf, &r), XG_ERROR);
    ck_assert_msg(r.status == status, "%s -> %s: status %d (%s), want %d",
        from, to, r.status, r.error, status);
    ck_assert_ptr_nonnull(r.error);
}

START_TEST(test_request_bad)
{
    char longpath[XG_WSPROTO_MAX_PATH + 2];

    expect_bad("GET ", "POST ", 405);
    expect_bad("HTTP/1.1\r\nHost", "HTTP/1.0\r\nHost", 400);
    expect_bad("HTTP/1.1\r\nHost", "HTTP/2\r\nHost", 400);
    expect_bad("/ws/api/v2?x=1 ", "ws ", 400);
    expect_bad("/ws/api/v2?x=1 ", "/a b ", 400);
    expect_bad("Host: 127.0.0.1:8600\r\n", "", 400);
    expect_bad("Host: 127.0.0.1:8600\r\n", "Host:\r\n", 400);
    expect_bad("Host: 127.0.0.1:8600\r\n", "Host: a\r\nHost: b\r\n", 400);
    expect_bad("Upgrade: websocket\r\n", "", 426);
    expect_bad("Upgrade: websocket\r\n", "Upgrade: h2c\r\n", 426);
    expect_bad("Connection: Upgrade\r\n", "Connection: close\r\n", 426);
    expect_bad("Connection: Upgrade\r\n", "", 426);
    expect_bad("Sec-WebSocket-Version: 13\r\n", "", 400);
    expect_bad("Sec-WebSocket-Version: 13\r\n",
        "Sec-WebSocket-Version: 12\r\n", 400);
    expect_bad("Sec-WebSocket-Version: 13\r\n",
        "Sec-WebSocket-Version: 13, 8\r\n", 400);
    expect_bad("Sec-WebSocket-Key: " KEY "\r\n", "", 400);
    expect_bad(KEY, "dGhlIHNhbXBsZSBub25jZQ=", 400);         /* short */
    expect_bad(KEY, "dGhlIHNhbXBsZSBub25jZQ===", 400);       /* long */
    expect_bad(KEY, "dGhlIHNhbXBsZSBub25j*Q==", 400);        /* bad char */
    expect_bad(KEY, "dGhlIHNhbXBsZSBub25jZQAA", 400);        /* 18 bytes */
    expect_bad("Sec-WebSocket-Key: " KEY "\r\n",
        "Sec-WebSocket-Key: " KEY "\r\nSec-WebSocket-Key: " KEY "\r\n", 400);
    expect_bad("Upgrade: websocket\r\n", "Upgrade: websocket\r\n x\r\n", 400);
    expect_bad("Upgrade: websocket\r\n", "Upgrade: websocket\n", 400);
    expect_bad("Upgrade: websocket\r\n", "Upgrade: web\rsocket\r\n", 400);
    expect_bad("Upgrade: websocket\r\n", "Upgrade websocket\r\n", 400);
    expect_bad("Upgrade: websocket\r\n", "Up grade: websocket\r\n", 400);
    expect_bad("Upgrade: websocket\r\n", ": websocket\r\n", 400);
    memset(longpath, 'a', sizeof(longpath));
    longpath[0] = '/';
    longpath[sizeof(longpath) - 1] = '\0';
    expect_bad("/ws/api/v2?x=1", longpath, 414);
}
END_TEST

START_TEST(test_request_limits)
{
    struct xg_wsproto_req r;
    char buf[XG_WSPROTO_MAX_HEAD * 2];
    const char nul[] = "GET / HTTP/1.1\r\nHost: a\0b\r\n\r\n";
    size_t n;
    int i;

    /* Too many header lines. */
    n = (size_t) snprintf(buf, sizeof(buf), "GET / HTTP/1.1\r\n");
    for (i = 0; i < XG_WSPROTO_MAX_HEADERS + 1; i++) {
        n += (size_t) snprintf(buf + n, sizeof(buf) - n, "X-%d: y\r\n", i);
    }
    n += (size_t) snprintf(buf + n, sizeof(buf) - n, "\r\n");
    ck_assert_int_eq(xg_wsproto_parse_request(buf, n, &r), XG_ERROR);
    ck_assert_int_eq(r.status, 400);
    /* A NUL inside. */
    ck_assert_int_eq(xg_wsproto_parse_request(nul, sizeof(nul) - 1, &r),
        XG_ERROR);
    ck_assert_int_eq(r.status, 400);
    /* Over the bound. */
    ck_assert_int_eq(xg_wsproto_parse_request(buf, XG_WSPROTO_MAX_HEAD + 1,
        &r), XG_ERROR);
    ck_assert_int_eq(r.status, 431);
    /* Not even a head. */
    ck_assert_int_eq(xg_wsproto_parse_request("GARBAGE", 7, &r), XG_ERROR);
    ck_assert_int_eq(r.status, 400);
    ck_assert_int_eq(xg_wsproto_parse_request("\r\n\r\n", 4, &r), XG_ERROR);
    ck_assert_int_eq(r.status, 400);
}
END_TEST

#define ACCEPT "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="

static int
parse_resp(const char *s, struct xg_wsproto_resp *r)
{
    return xg_wsproto_parse_response(s, strlen(s), KEY, 1000000000, r);
}

START_TEST(test_response)
{
    struct xg_wsproto_resp r;

    ck_assert_int_eq(parse_resp("HTTP/1.1 101 Switching Protocols\r\n"
        "Upgrade: websocket\r\nConnection: Upgrade\r\n"
        "Sec-WebSocket-Accept: " ACCEPT "\r\n\r\n", &r), XG_OK);
    ck_assert_int_eq(r.status, 101);
    ck_assert_ptr_null(r.error);
    ck_assert_int_eq(parse_resp("HTTP/1.1 101\r\nupgrade: WEBSOCKET\r\n"
        "connection: upgrade\r\nsec-websocket-accept: " ACCEPT "\r\n\r\n",
        &r), XG_OK);

    ck_assert_int_eq(parse_resp("HTTP/1.1 101 OK\r\nUpgrade: websocket\r\n"
        "Connection: Upgrade\r\nSec-WebSocket-Accept: "
        "s3pPLMBiTxaQ9kYGzzhZRbK+xOA=\r\n\r\n", &r), XG_ERROR);
    ck_assert_str_eq(r.error, "bad Sec-WebSocket-Accept");
    ck_assert_int_eq(parse_resp("HTTP/1.1 101 OK\r\n"
        "Connection: Upgrade\r\nSec-WebSocket-Accept: " ACCEPT "\r\n\r\n",
        &r), XG_ERROR);
    ck_assert_int_eq(parse_resp("HTTP/1.1 101 OK\r\nUpgrade: websocket\r\n"
        "Sec-WebSocket-Accept: " ACCEPT "\r\n\r\n", &r), XG_ERROR);
    ck_assert_int_eq(parse_resp("HTTP/1.1 101 OK\r\nUpgrade: websocket\r\n"
        "Connection: Upgrade\r\n\r\n", &r), XG_ERROR);
    ck_assert_int_eq(parse_resp("HTTP/1.1 101 OK\r\nUpgrade: websocket\r\n"
        "Connection: Upgrade\r\nSec-WebSocket-Accept: " ACCEPT "\r\n"
        "Sec-WebSocket-Extensions: permessage-deflate\r\n\r\n", &r),
        XG_ERROR);
    ck_assert_int_eq(parse_resp("HTTP/1.0 101 OK\r\nUpgrade: websocket\r\n"
        "Connection: Upgrade\r\nSec-WebSocket-Accept: " ACCEPT "\r\n\r\n",
        &r), XG_ERROR);
    ck_assert_int_eq(parse_resp("SSH-2.0-OpenSSH\r\n\r\n", &r), XG_ERROR);
    ck_assert_int_eq(r.status, 0);
    ck_assert_int_eq(parse_resp("HTTP/1.1 1O1 OK\r\n\r\n", &r), XG_ERROR);
    ck_assert_int_eq(r.status, 0);
}
END_TEST

START_TEST(test_response_retry_after)
{
    struct xg_wsproto_resp r;

    ck_assert_int_eq(parse_resp("HTTP/1.1 429 Too Many Requests\r\n"
        "Retry-After: 7\r\nContent-Length: 0\r\n\r\n", &r), XG_ERROR);
    ck_assert_int_eq(r.status, 429);
    ck_assert_int_eq(r.retry_after_s, 7);
    ck_assert_int_eq(parse_resp("HTTP/1.1 503 Service Unavailable\r\n\r\n",
        &r), XG_ERROR);
    ck_assert_int_eq(r.status, 503);
    ck_assert_int_eq(r.retry_after_s, -1);
    /* 1000000000 is Sun, 09 Sep 2001 01:46:40 GMT. */
    ck_assert_int_eq(parse_resp("HTTP/1.1 503 x\r\n"
        "Retry-After: Sun, 09 Sep 2001 01:47:10 GMT\r\n\r\n", &r), XG_ERROR);
    ck_assert_int_eq(r.retry_after_s, 30);
    ck_assert_int_eq(parse_resp("HTTP/1.1 503 x\r\n"
        "Retry-After: Sun, 09 Sep 2001 01:40:00 GMT\r\n\r\n", &r), XG_ERROR);
    ck_assert_int_eq(r.retry_after_s, 0);
    ck_assert_int_eq(parse_resp("HTTP/1.1 503 x\r\nRetry-After: soon\r\n\r\n",
        &r), XG_ERROR);
    ck_assert_int_eq(r.retry_after_s, -1);
    ck_assert_int_eq(parse_resp("HTTP/1.1 503 x\r\n"
        "Retry-After: 99999999999999\r\n\r\n", &r), XG_ERROR);
    ck_assert_int_eq(r.retry_after_s, 86400);
    ck_assert_int_eq(parse_resp("HTTP/1.1 200 OK\r\n\r\n", &r), XG_ERROR);
    ck_assert_int_eq(r.status, 200);
}
END_TEST

START_TEST(test_error_response)
{
    char buf[512];
    size_t n;
    const char *body;

    n = xg_wsproto_error_response(buf, sizeof(buf), 400, "bad key");
    ck_assert_uint_eq(n, strlen(buf));
    ck_assert(strncmp(buf, "HTTP/1.1 400 Bad Request\r\n", 26) == 0);
    ck_assert_ptr_nonnull(strstr(buf, "Sec-WebSocket-Version: 13\r\n"));
    ck_assert_ptr_nonnull(strstr(buf, "Content-Length: 8\r\n"));
    body = strstr(buf, "\r\n\r\n") + 4;
    ck_assert_str_eq(body, "bad key\n");
    n = xg_wsproto_error_response(buf, sizeof(buf), 426, "no");
    ck_assert_ptr_nonnull(strstr(buf, "Upgrade: websocket\r\n"));
    n = xg_wsproto_error_response(buf, 10, 404, "x");
    ck_assert_uint_eq(n, 9);
}
END_TEST

START_TEST(test_frame_header_lengths)
{
    unsigned char h[XG_WSPROTO_MAX_FRAME_HEADER];
    const unsigned char mask[4] = { 1, 2, 3, 4 };

    ck_assert_uint_eq(xg_wsproto_frame_header(h, 1, 0, NULL), 2);
    ck_assert(h[0] == 0x81 && h[1] == 0);
    ck_assert_uint_eq(xg_wsproto_frame_header(h, 2, 125, NULL), 2);
    ck_assert(h[0] == 0x82 && h[1] == 125);
    ck_assert_uint_eq(xg_wsproto_frame_header(h, 1, 126, NULL), 4);
    ck_assert(h[1] == 126 && h[2] == 0 && h[3] == 126);
    ck_assert_uint_eq(xg_wsproto_frame_header(h, 1, 65535, NULL), 4);
    ck_assert(h[1] == 126 && h[2] == 0xff && h[3] == 0xff);
    ck_assert_uint_eq(xg_wsproto_frame_header(h, 1, 65536, NULL), 10);
    ck_assert(h[1] == 127 && h[2] == 0 && h[3] == 0 && h[4] == 0
        && h[5] == 0 && h[6] == 0 && h[7] == 1 && h[8] == 0 && h[9] == 0);
    ck_assert_uint_eq(xg_wsproto_frame_header(h, 1, 1u << 20, mask), 14);
    ck_assert(h[1] == (0x80 | 127) && h[7] == 0x10);
    ck_assert(memcmp(h + 10, mask, 4) == 0);
    ck_assert_uint_eq(xg_wsproto_frame_header(h, 9, 5, mask), 6);
    ck_assert(h[0] == 0x89 && h[1] == (0x80 | 5));
}
END_TEST

START_TEST(test_close_frame)
{
    unsigned char f[XG_WSPROTO_MAX_FRAME_HEADER + 2 + 130];
    char reason[200];
    size_t n;

    n = xg_wsproto_close_frame(f, 1000, "bye", NULL);
    ck_assert_uint_eq(n, 7);
    ck_assert(f[0] == 0x88 && f[1] == 5 && f[2] == 0x03 && f[3] == 0xe8);
    ck_assert(memcmp(f + 4, "bye", 3) == 0);
    /* 61 two-byte characters = 122 bytes, then one more: trimmed to 122. */
    memset(reason, 0, sizeof(reason));
    for (n = 0; n < 62; n++) {
        memcpy(reason + 2 * n, "\xc3\xa9", 2);
    }
    n = xg_wsproto_close_frame(f, 1011, reason, NULL);
    ck_assert_uint_eq(f[1], 2 + 122);
    ck_assert_uint_eq(n, 2 + 2 + 122);
    n = xg_wsproto_close_frame(f, 1002, NULL, (const unsigned char *) "abcd");
    ck_assert_uint_eq(n, 8);
    ck_assert(f[1] == (0x80 | 2));
    ck_assert(f[6] == (0x03 ^ 'a') && f[7] == (0xea ^ 'b'));
}
END_TEST

static int
u8(const char *s)
{
    return xg_wsproto_utf8_valid((const unsigned char *) s, strlen(s));
}

START_TEST(test_utf8)
{
    ck_assert(u8(""));
    ck_assert(u8("plain ascii {\"jsonrpc\":\"2.0\"}"));
    ck_assert(u8("\xc3\xa9t\xc3\xa9"));                     /* été */
    ck_assert(u8("\xe2\x82\xac"));                          /* euro */
    ck_assert(u8("\xf0\x9f\x98\x80"));                      /* emoji */
    ck_assert(u8("\xef\xbf\xbf"));                          /* U+FFFF */
    ck_assert(u8("\xf4\x8f\xbf\xbf"));                      /* U+10FFFF */
    ck_assert(u8("\xed\x9f\xbf"));                          /* U+D7FF */
    ck_assert(u8("\xee\x80\x80"));                          /* U+E000 */
    ck_assert(xg_wsproto_utf8_valid((const unsigned char *) "a\0b", 3));
    /* overlong */
    ck_assert(!u8("\xc0\x80"));
    ck_assert(!u8("\xc1\xbf"));
    ck_assert(!u8("\xe0\x80\x80"));
    ck_assert(!u8("\xe0\x9f\xbf"));
    ck_assert(!u8("\xf0\x80\x80\x80"));
    ck_assert(!u8("\xf0\x8f\xbf\xbf"));
    /* surrogates */
    ck_assert(!u8("\xed\xa0\x80"));
    ck_assert(!u8("\xed\xbf\xbf"));
    ck_assert(!u8("\xed\xa0\xbd\xed\xb8\x80"));
    /* truncated */
    ck_assert(!u8("\xc3"));
    ck_assert(!u8("\xe2\x82"));
    ck_assert(!u8("\xf0\x9f\x98"));
    ck_assert(!u8("ab\xe2\x82"));
    /* above U+10FFFF */
    ck_assert(!u8("\xf4\x90\x80\x80"));
    ck_assert(!u8("\xf5\x80\x80\x80"));
    ck_assert(!u8("\xf8\x88\x80\x80\x80"));
    /* stray bytes */
    ck_assert(!u8("\x80"));
    ck_assert(!u8("a\xbf"));
    ck_assert(!u8("\xfe"));
    ck_assert(!u8("\xff"));
    ck_assert(!u8("\xc3\x28"));
    ck_assert(!u8("\xe2\x28\xa1"));
    ck_assert(!u8("\xf0\x9f\x28\x80"));
}
END_TEST

/*
 * Long text, checked 32 then eight ASCII bytes at a time: one bad byte,
 * or one good or truncated sequence, at every offset of a 100-byte line
 * (three blocks of 32, then words and bytes).
 */
START_TEST(test_utf8_long)
{
    unsigned char b[112];
    size_t i;

    for (i = 0; i < 100; i++) {
        memset(b, 'a', sizeof(b));
        b[i] = 0xff;
        ck_assert_msg(!xg_wsproto_utf8_valid(b, 100), "0xff at %zu", i);
        b[i] = 0x80;
        ck_assert_msg(!xg_wsproto_utf8_valid(b, 100), "0x80 at %zu", i);
        memset(b, 'a', sizeof(b));
        if (i + 3 <= 100) {
            memcpy(b + i, "\xe2\x82\xac", 3);
            ck_assert_msg(xg_wsproto_utf8_valid(b, 100), "euro at %zu", i);
            ck_assert_msg(!xg_wsproto_utf8_valid(b, i + 2),
                "euro cut at %zu", i);
            memcpy(b + i, "\xed\xa0\x80", 3);
            ck_assert_msg(!xg_wsproto_utf8_valid(b, 100),
                "surrogate at %zu", i);
        }
    }
    memset(b, 'a', sizeof(b));
    ck_assert(xg_wsproto_utf8_valid(b, sizeof(b)));
}
END_TEST

/*
 * Every length from 0 to 200, in a buffer of exactly that length (a
 * read past it shows under ASan): all ASCII; one bad byte, a good and a
 * truncated sequence at every offset; the blocks of 64 and 16 and the
 * last 16 bytes read at once all meet each of them.
 */
START_TEST(test_utf8_lengths)
{
    size_t len, i;

    for (len = 0; len <= 200; len++) {
        unsigned char *b = malloc(len + 1);

        memset(b, 'a', len);
        ck_assert_msg(xg_wsproto_utf8_valid(b, len), "ascii %zu", len);
        for (i = 0; i < len; i++) {
            memset(b, 'a', len);
            b[i] = 0xfe;
            ck_assert_msg(!xg_wsproto_utf8_valid(b, len), "0xfe at %zu/%zu",
                i, len);
            b[i] = 0xbf;
            ck_assert_msg(!xg_wsproto_utf8_valid(b, len), "0xbf at %zu/%zu",
                i, len);
            b[i] = 0xc3;
            ck_assert_msg(!xg_wsproto_utf8_valid(b, len), "cut at %zu/%zu",
                i, len);
            if (i + 2 <= len) {
                b[i + 1] = 0xa9;
                ck_assert_msg(xg_wsproto_utf8_valid(b, len),
                    "e-acute at %zu/%zu", i, len);
                b[i + 1] = 0x29;
                ck_assert_msg(!xg_wsproto_utf8_valid(b, len),
                    "bad second byte at %zu/%zu", i, len);
            }
        }
        free(b);
    }
}
END_TEST

START_TEST(test_utf8_trim)
{
    const char *s = "a\xc3\xa9\xe2\x82\xac";    /* 1 + 2 + 3 bytes */

    ck_assert_uint_eq(xg_wsproto_utf8_trim(s, 6, 10), 6);
    ck_assert_uint_eq(xg_wsproto_utf8_trim(s, 6, 6), 6);
    ck_assert_uint_eq(xg_wsproto_utf8_trim(s, 6, 5), 3);
    ck_assert_uint_eq(xg_wsproto_utf8_trim(s, 6, 4), 3);
    ck_assert_uint_eq(xg_wsproto_utf8_trim(s, 6, 3), 3);
    ck_assert_uint_eq(xg_wsproto_utf8_trim(s, 6, 2), 1);
    ck_assert_uint_eq(xg_wsproto_utf8_trim(s, 6, 0), 0);
}
END_TEST

START_TEST(test_close_reason_len)
{
    char r[300];
    int i;

    ck_assert_uint_eq(xg_wsproto_close_reason_len(NULL), 0);
    ck_assert_uint_eq(xg_wsproto_close_reason_len(""), 0);
    ck_assert_uint_eq(xg_wsproto_close_reason_len("restart"), 7);
    /* Not UTF-8: no reason at all, rather than one the peer rejects. */
    ck_assert_uint_eq(xg_wsproto_close_reason_len("bad \xff byte"), 0);
    /* 100 two-byte characters: 123 bytes would split one, 122 do not. */
    for (i = 0; i < 100; i++) {
        memcpy(r + 2 * i, "\xc3\xa9", 2);
    }
    r[200] = '\0';
    ck_assert_uint_eq(xg_wsproto_close_reason_len(r), 122);
    memset(r, 'x', 200);
    ck_assert_uint_eq(xg_wsproto_close_reason_len(r), 123);
}
END_TEST

START_TEST(test_ssl_error_append)
{
    char buf[64] = "";
    char small[8] = "";
    unsigned long e = ERR_PACK(ERR_LIB_SSL, 0, SSL_R_WRONG_VERSION_NUMBER);

    xg_log_ssl_error_append(buf, sizeof(buf), e);
    ck_assert_ptr_nonnull(strstr(buf, "error:0A00010B:"));
    xg_log_ssl_error_append(buf, sizeof(buf), e);
    ck_assert_ptr_nonnull(strstr(buf, "; "));
    ck_assert_uint_eq(strlen(buf), sizeof(buf) - 1);    /* cut to fit */
    xg_log_ssl_error_append(small, sizeof(small), e);
    ck_assert_uint_eq(strlen(small), sizeof(small) - 1);
    xg_log_ssl_error_append(small, 0, e);               /* no room: no-op */
}
END_TEST

static Suite *
ws_suite(void)
{
    Suite *s;
    TCase *tc;

    s = suite_create("xg_wsproto");
    tc = tcase_create("pure");
    tcase_add_test(tc, test_accept_rfc_example);
    tcase_add_test(tc, test_make_key);
    tcase_add_test(tc, test_head_len);
    tcase_add_test(tc, test_request_good);
    tcase_add_test(tc, test_request_bad);
    tcase_add_test(tc, test_request_limits);
    tcase_add_test(tc, test_response);
    tcase_add_test(tc, test_response_retry_after);
    tcase_add_test(tc, test_error_response);
    tcase_add_test(tc, test_frame_header_lengths);
    tcase_add_test(tc, test_close_frame);
    tcase_add_test(tc, test_utf8);
    tcase_add_test(tc, test_utf8_long);
    tcase_add_test(tc, test_utf8_lengths);
    tcase_add_test(tc, test_utf8_trim);
    tcase_add_test(tc, test_close_reason_len);
    tcase_add_test(tc, test_ssl_error_append);
    suite_add_tcase(s, tc);
    return s;
}

int
main(void)
{
    SRunner *sr;
    int failed;

    sr = srunner_create(ws_suite());
    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? 0 : 1;
}
