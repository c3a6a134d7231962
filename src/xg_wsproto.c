/*
 * xg_wsproto.c: RFC 6455 handshake checks, frame header encoding and
 * UTF-8 validation; pure functions over caller memory (see xg_wsproto.h).
 */
#include "xg_core.h"
#include "xg_wsproto.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#if defined(__SSE2__)
#include <emmintrin.h>
#endif

#include <openssl/evp.h>
#include <openssl/rand.h>
#include <openssl/sha.h>

#define WS_GUID "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

/* One header line of a parsed head: views into the caller's buffer. */
struct hline {
    const char *name;
    size_t      nlen;
    const char *val;
    size_t      vlen;
};

struct head {
    const char   *first;     /* request or status line */
    size_t        flen;
    struct hline  h[XG_WSPROTO_MAX_HEADERS];
    int           nh;
};

void
xg_wsproto_accept(const char *key, size_t keylen,
    char out[XG_WSPROTO_ACCEPT_LEN + 1])
{
    EVP_MD_CTX *md_ctx;
    unsigned char md[SHA_DIGEST_LENGTH];
    unsigned int mdlen;

    memset(md, 0, sizeof(md));
    md_ctx = EVP_MD_CTX_new();
    if (md_ctx == NULL
        || EVP_DigestInit_ex(md_ctx, EVP_sha1(), NULL) != 1
        || EVP_DigestUpdate(md_ctx, key, keylen) != 1
        || EVP_DigestUpdate(md_ctx, WS_GUID, sizeof(WS_GUID) - 1) != 1
        || EVP_DigestFinal_ex(md_ctx, md, &mdlen) != 1)
    {
        /* Only out of memory gets here: an all-zero digest never matches. */
        memset(md, 0, sizeof(md));
    }
    EVP_MD_CTX_free(md_ctx);
    /* 20 bytes encode to exactly 28 characters plus the NUL. */
    EVP_EncodeBlock((unsigned char *) out, md, SHA_DIGEST_LENGTH);
}

int
xg_wsproto_make_key(char key[XG_WSPROTO_KEY_LEN + 1])
{
    unsigned char raw[16];

    if (RAND_bytes(raw, sizeof(raw)) != 1) {
        return XG_ERROR;
    }
    EVP_EncodeBlock((unsigned char *) key, raw, sizeof(raw));
    return XG_OK;
}

ssize_t
xg_wsproto_head_len(const char *buf, size_t len, size_t max)
{
    size_t i, n;

    n = len < max ? len : max;
    for (i = 3; i < n; i++) {
        if (buf[i] == '\n' && buf[i - 1] == '\r' && buf[i - 2] == '\n'
            && buf[i - 3] == '\r')
        {
            return (ssize_t) (i + 1);
        }
    }
    return len >= max ? -1 : 0;
}

static int
is_tchar(unsigned char c)
{
    if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z')
        || (c >= '0' && c <= '9'))
    {
        return 1;
    }
    return c != 0 && strchr("!#$%&'*+-.^_`|~", c) != NULL;
}

/*
 * Splits a complete head into its first line and header lines. Strict:
 * every line ends in CRLF, no bare CR, LF or NUL, no obsolete line
 * folding, header names are tokens. Returns NULL or a static error.
 */
static const char *
split_head(const char *buf, size_t len, struct head *hd)
{
    const char *p, *end, *eol, *colon, *v, *ve;
    size_t i;

    hd->nh = 0;
    if (len < 4 || memcmp(buf + len - 4, "\r\n\r\n", 4) != 0) {
        return "incomplete head";
    }
    for (i = 0; i < len; i++) {
        if (buf[i] == '\0') {
            return "nul byte in head";
        }
        if (buf[i] == '\r' && (i + 1 >= len || buf[i + 1] != '\n')) {
            return "bare cr in head";
        }
        if (buf[i] == '\n' && (i == 0 || buf[i - 1] != '\r')) {
            return "bare lf in head";
        }
    }
    p = buf;
    end = buf + len - 2;    /* the final CRLF ends the empty line */
    eol = memchr(p, '\r', (size_t) (end - p));
    if (eol == NULL || eol == p) {
        return "empty first line";
    }
    hd->first = p;
    hd->flen = (size_t) (eol - p);
    p = eol + 2;
    while (p < end) {
        eol = memchr(p, '\r', (size_t) (end - p));
        if (eol == NULL) {
            return "malformed header";
        }
        if (*p == ' ' || *p == '\t') {
            return "folded header line";
        }
        colon = memchr(p, ':', (size_t) (eol - p));
        if (colon == NULL || colon == p) {
            return "malformed header";
        }
        for (v = p; v < colon; v++) {
            if (!is_tchar((unsigned char) *v)) {
                return "bad header name";
            }
        }
        if (hd->nh == XG_WSPROTO_MAX_HEADERS) {
            return "too many headers";
        }
        v = colon + 1;
        ve = eol;
        while (v < ve && (*v == ' ' || *v == '\t')) {
            v++;
        }
        while (ve > v && (ve[-1] == ' ' || ve[-1] == '\t')) {
            ve--;
        }
        hd->h[hd->nh].name = p;
        hd->h[hd->nh].nlen = (size_t) (colon - p);
        hd->h[hd->nh].val = v;
        hd->h[hd->nh].vlen = (size_t) (ve - v);
        hd->nh++;
        p = eol + 2;
    }
    return NULL;
}

static int
name_is(const struct hline *h, const char *name)
{
    return h->nlen == strlen(name) && strncasecmp(h->name, name, h->nlen) == 0;
}

static int
val_is(const char *v, size_t vlen, const char *s)
{
    return vlen == strlen(s) && strncasecmp(v, s, vlen) == 0;
}

/* Counts the headers named NAME; *LAST gets the last one. */
static int
hdr_find(const struct head *hd, const char *name, const struct hline **last)
{
    int i, n;

    n = 0;
    *last = NULL;
    for (i = 0; i < hd->nh; i++) {
        if (name_is(&hd->h[i], name)) {
            n++;
            *last = &hd->h[i];
        }
    }
    return n;
}

/* Whether any NAME header holds TOKEN in its comma-separated list. */
static int
hdr_has_token(const struct head *hd, const char *name, const char *token)
{
    const char *p, *e, *t, *te;
    int i;

    for (i = 0; i < hd->nh; i++) {
        if (!name_is(&hd->h[i], name)) {
            continue;
        }
        p = hd->h[i].val;
        e = p + hd->h[i].vlen;
        while (p < e) {
            t = p;
            while (p < e && *p != ',') {
                p++;
            }
            te = p;
            while (t < te && (*t == ' ' || *t == '\t')) {
                t++;
            }
            while (te > t && (te[-1] == ' ' || te[-1] == '\t')) {
                te--;
            }
            if (val_is(t, (size_t) (te - t), token)) {
                return 1;
            }
            if (p < e) {
                p++;
            }
        }
    }
    return 0;
}

/* A valid key: 24 base64 characters decoding to exactly 16 bytes. */
static int
key_valid(const char *v, size_t vlen)
{
    static const char b64[] =
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    unsigned char out[24];
    size_t i;

    if (vlen != XG_WSPROTO_KEY_LEN || v[22] != '=' || v[23] != '=') {
        return 0;
    }
    for (i = 0; i < 22; i++) {
        if (v[i] == '\0' || strchr(b64, v[i]) == NULL) {
            return 0;
        }
    }
    return EVP_DecodeBlock(out, (const unsigned char *) v, 24) == 18;
}

static int
req_fail(struct xg_wsproto_req *req, int status, const char *error)
{
    req->status = status;
    req->error = error;
    return XG_ERROR;
}

int
xg_wsproto_parse_request(const char *head, size_t len,
    struct xg_wsproto_req *req)
{
    struct head hd;
    const struct hline *h;
    const char *err, *sp1, *sp2, *fe;
    size_t plen;

    memset(req, 0, sizeof(*req));
    if (len > XG_WSPROTO_MAX_HEAD) {
        return req_fail(req, 431, "request head too large");
    }
    err = split_head(head, len, &hd);
    if (err != NULL) {
        return req_fail(req, 400, err);
    }
    fe = hd.first + hd.flen;
    sp1 = memchr(hd.first, ' ', hd.flen);
    if (sp1 == NULL) {
        return req_fail(req, 400, "malformed request line");
    }
    sp2 = memchr(sp1 + 1, ' ', (size_t) (fe - sp1 - 1));
    if (sp2 == NULL || memchr(sp2 + 1, ' ', (size_t) (fe - sp2 - 1))) {
        return req_fail(req, 400, "malformed request line");
    }
    if ((size_t) (fe - sp2 - 1) != 8 || memcmp(sp2 + 1, "HTTP/1.1", 8) != 0) {
        return req_fail(req, 400, "not HTTP/1.1");
    }
    if (sp1 - hd.first != 3 || memcmp(hd.first, "GET", 3) != 0) {
        return req_fail(req, 405, "method not GET");
    }
    plen = (size_t) (sp2 - sp1 - 1);
    if (plen == 0 || sp1[1] != '/') {
        return req_fail(req, 400, "bad request target");
    }
    if (plen > XG_WSPROTO_MAX_PATH) {
        return req_fail(req, 414, "request target too long");
    }
    memcpy(req->path, sp1 + 1, plen);
    req->path[plen] = '\0';

    if (hdr_find(&hd, "Host", &h) != 1 || h->vlen == 0) {
        return req_fail(req, 400, "missing or repeated Host");
    }
    if (!hdr_has_token(&hd, "Upgrade", "websocket")) {
        return req_fail(req, 426, "not a websocket upgrade");
    }
    if (!hdr_has_token(&hd, "Connection", "upgrade")) {
        return req_fail(req, 426, "Connection lacks upgrade");
    }
    if (hdr_find(&hd, "Sec-WebSocket-Version", &h) != 1
        || !val_is(h->val, h->vlen, "13"))
    {
        return req_fail(req, 400, "Sec-WebSocket-Version is not 13");
    }
    if (hdr_find(&hd, "Sec-WebSocket-Key", &h) != 1) {
        return req_fail(req, 400, "missing or repeated Sec-WebSocket-Key");
    }
    if (!key_valid(h->val, h->vlen)) {
        return req_fail(req, 400, "bad Sec-WebSocket-Key");
    }
    memcpy(req->key, h->val, XG_WSPROTO_KEY_LEN);
    req->key[XG_WSPROTO_KEY_LEN] = '\0';
    return XG_OK;
}

/* Retry-After: delta seconds, or an IMF-fixdate taken relative to NOW. */
static int
parse_retry_after(const char *v, size_t vlen, time_t now)
{
    char buf[64];
    struct tm tm;
    const char *end;
    long s;
    size_t i;
    time_t t;

    if (vlen == 0 || vlen >= sizeof(buf)) {
        return -1;
    }
    memcpy(buf, v, vlen);
    buf[vlen] = '\0';
    for (i = 0; i < vlen && buf[i] >= '0' && buf[i] <= '9'; i++) {
        /* digits only */
    }
    if (i == vlen) {
        if (vlen > 9) {
            return 86400;   /* absurdly far: cap at a day */
        }
        s = strtol(buf, NULL, 10);
        return s > 86400 ? 86400 : (int) s;
    }
    memset(&tm, 0, sizeof(tm));
    end = strptime(buf, "%a, %d %b %Y %H:%M:%S GMT", &tm);
    if (end == NULL || *end != '\0') {
        return -1;
    }
    t = timegm(&tm);
    if (t == (time_t) -1) {
        return -1;
    }
    if (t <= now) {
        return 0;
    }
    return t - now > 86400 ? 86400 : (int) (t - now);
}

static int
resp_fail(struct xg_wsproto_resp *resp, const char *error)
{
    resp->error = error;
    return XG_ERROR;
}

int
xg_wsproto_parse_response(const char *head, size_t len, const char *key,
    time_t now, struct xg_wsproto_resp *resp)
{
    struct head hd;
    const struct hline *h;
    const char *err;
    char want[XG_WSPROTO_ACCEPT_LEN + 1];

    memset(resp, 0, sizeof(*resp));
    resp->retry_after_s = -1;
    if (len > XG_WSPROTO_MAX_HEAD) {
        return resp_fail(resp, "response head too large");
    }
    err = split_head(head, len, &hd);
    if (err != NULL) {
        return resp_fail(resp, err);
    }
    /* "HTTP/1.x NNN" then a reason phrase or nothing. */
    if (hd.flen < 12 || memcmp(hd.first, "HTTP/1.", 7) != 0
        || hd.first[7] < '0' || hd.first[7] > '9' || hd.first[8] != ' '
        || hd.first[9] < '1' || hd.first[9] > '5'
        || hd.first[10] < '0' || hd.first[10] > '9'
        || hd.first[11] < '0' || hd.first[11] > '9'
        || (hd.flen > 12 && hd.first[12] != ' '))
    {
        return resp_fail(resp, "bad status line");
    }
    resp->status = (hd.first[9] - '0') * 100 + (hd.first[10] - '0') * 10
        + (hd.first[11] - '0');
    if (resp->status != 101) {
        if (hdr_find(&hd, "Retry-After", &h) >= 1) {
            resp->retry_after_s = parse_retry_after(h->val, h->vlen, now);
        }
        return resp_fail(resp, "status is not 101");
    }
    if (hd.first[7] != '1') {
        return resp_fail(resp, "101 is not HTTP/1.1");
    }
    if (!hdr_has_token(&hd, "Upgrade", "websocket")) {
        return resp_fail(resp, "Upgrade is not websocket");
    }
    if (!hdr_has_token(&hd, "Connection", "upgrade")) {
        return resp_fail(resp, "Connection lacks upgrade");
    }
    if (hdr_find(&hd, "Sec-WebSocket-Accept", &h) != 1) {
        return resp_fail(resp, "missing or repeated Sec-WebSocket-Accept");
    }
    xg_wsproto_accept(key, strlen(key), want);
    if (h->vlen != XG_WSPROTO_ACCEPT_LEN
        || memcmp(h->val, want, XG_WSPROTO_ACCEPT_LEN) != 0)
    {
        return resp_fail(resp, "bad Sec-WebSocket-Accept");
    }
    if (hdr_find(&hd, "Sec-WebSocket-Extensions", &h) > 0) {
        return resp_fail(resp, "unrequested extension");
    }
    if (hdr_find(&hd, "Sec-WebSocket-Protocol", &h) > 0) {
        return resp_fail(resp, "unrequested subprotocol");
    }
    return XG_OK;
}

const char *
xg_wsproto_status_text(int status)
{
    switch (status) {
    case 101: return "Switching Protocols";
    case 400: return "Bad Request";
    case 403: return "Forbidden";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 408: return "Request Timeout";
    case 414: return "URI Too Long";
    case 426: return "Upgrade Required";
    case 429: return "Too Many Requests";
    case 431: return "Request Header Fields Too Large";
    case 500: return "Internal Server Error";
    case 503: return "Service Unavailable";
    default:  return "Error";
    }
}

size_t
xg_wsproto_error_response(char *buf, size_t len, int status,
    const char *error)
{
    const char *extra;
    int n;

    if (len == 0) {
        return 0;
    }
    extra = "";
    if (status == 400) {
        extra = "Sec-WebSocket-Version: 13\r\n";
    } else if (status == 426) {
        extra = "Upgrade: websocket\r\n";
    } else if (status == 405) {
        extra = "Allow: GET\r\n";
    }
    n = snprintf(buf, len,
        "HTTP/1.1 %d %s\r\n%sContent-Type: text/plain\r\n"
        "Content-Length: %zu\r\nConnection: close\r\n\r\n%s\n",
        status, xg_wsproto_status_text(status), extra, strlen(error) + 1,
        error);
    if (n < 0) {
        buf[0] = '\0';
        return 0;
    }
    return (size_t) n >= len ? len - 1 : (size_t) n;
}

size_t
xg_wsproto_frame_header(unsigned char *out, int opcode, uint64_t len,
    const unsigned char *mask)
{
    size_t n;
    int i;

    out[0] = (unsigned char) (0x80 | (opcode & 0x0f));
    if (len < 126) {
        out[1] = (unsigned char) len;
        n = 2;
    } else if (len <= 0xffff) {
        out[1] = 126;
        out[2] = (unsigned char) (len >> 8);
        out[3] = (unsigned char) len;
        n = 4;
    } else {
        out[1] = 127;
        for (i = 0; i < 8; i++) {
            out[2 + i] = (unsigned char) (len >> (56 - 8 * i));
        }
        n = 10;
    }
    if (mask != NULL) {
        out[1] |= 0x80;
        memcpy(out + n, mask, 4);
        n += 4;
    }
    return n;
}

size_t
xg_wsproto_close_reason_len(const char *reason)
{
    size_t rlen;

    if (reason == NULL) {
        return 0;
    }
    rlen = strlen(reason);
    if (!xg_wsproto_utf8_valid((const unsigned char *) reason, rlen)) {
        return 0;   /* the peer would fail the connection with 1007 */
    }
    return xg_wsproto_utf8_trim(reason, rlen, XG_WSPROTO_MAX_CLOSE_REASON);
}

size_t
xg_wsproto_close_frame(unsigned char *out, int code, const char *reason,
    const unsigned char *mask)
{
    unsigned char payload[2 + XG_WSPROTO_MAX_CLOSE_REASON];
    size_t rlen, n, i;

    rlen = xg_wsproto_close_reason_len(reason);
    payload[0] = (unsigned char) (code >> 8);
    payload[1] = (unsigned char) code;
    if (rlen > 0) {
        memcpy(payload + 2, reason, rlen);
    }
    n = xg_wsproto_frame_header(out, 0x8, 2 + rlen, mask);
    for (i = 0; i < 2 + rlen; i++) {
        out[n + i] = mask ? payload[i] ^ mask[i % 4] : payload[i];
    }
    return n + 2 + rlen;
}

/*
 * Hand-written (see the header): the RFC 3629 table of well-formed byte
 * sequences, checked one code point at a time, and ASCII, which is most
 * of what an exchange sends, 32 bytes at a time, then eight (every
 * upstream text message is checked, a byte at a time it was a visible
 * part of the cost of a message fanned out to few clients, eight at a
 * time still a tenth of exgate's instructions at one client). Where
 * SSE2 is there (every x86-64): 64 bytes at a time, then 16, and the
 * last 16 of the text at once when fewer are left (all of them ASCII:
 * the text is valid, what of them came before was checked).
 */
#if defined(__SSE2__)
static inline int
ascii16(const unsigned char *p)
{
    return _mm_movemask_epi8(_mm_loadu_si128((const __m128i *)
        (const void *) p)) == 0;
}

static inline int
ascii64(const unsigned char *p)
{
    const __m128i *q = (const __m128i *) (const void *) p;

    return _mm_movemask_epi8(_mm_or_si128(
        _mm_or_si128(_mm_loadu_si128(q), _mm_loadu_si128(q + 1)),
        _mm_or_si128(_mm_loadu_si128(q + 2), _mm_loadu_si128(q + 3)))) == 0;
}
#endif

int
xg_wsproto_utf8_valid(const unsigned char *s, size_t len)
{
    size_t i, n, k;
    unsigned char c, lo, hi;
    uint64_t w, x[4];

    i = 0;
    while (i < len) {
#if defined(__SSE2__)
        if (len - i >= 64) {
            if (ascii64(s + i)) {
                i += 64;
                continue;
            }
        } else if (len - i >= 16) {
            if (ascii16(s + i)) {
                i += 16;
                continue;
            }
        } else if (len >= 16 && ascii16(s + len - 16)) {
            return 1;
        }
#endif
        if (len - i >= 32) {
            memcpy(x, s + i, 32);
            if (((x[0] | x[1] | x[2] | x[3])
                 & UINT64_C(0x8080808080808080)) == 0) {
                i += 32;
                continue;
            }
        }
        if (len - i >= 8) {
            memcpy(&w, s + i, 8);
            if ((w & UINT64_C(0x8080808080808080)) == 0) {
                i += 8;
                continue;
            }
        }
        c = s[i];
        if (c < 0x80) {
            i++;
            continue;
        }
        lo = 0x80;
        hi = 0xbf;
        if (c >= 0xc2 && c <= 0xdf) {
            n = 1;
        } else if (c >= 0xe0 && c <= 0xef) {
            n = 2;
            if (c == 0xe0) {
                lo = 0xa0;          /* no overlong 3-byte forms */
            } else if (c == 0xed) {
                hi = 0x9f;          /* no surrogates U+D800..U+DFFF */
            }
        } else if (c >= 0xf0 && c <= 0xf4) {
            n = 3;
            if (c == 0xf0) {
                lo = 0x90;          /* no overlong 4-byte forms */
            } else if (c == 0xf4) {
                hi = 0x8f;          /* nothing above U+10FFFF */
            }
        } else {
            return 0;   /* continuation byte, C0/C1 overlong, F5..FF */
        }
        if (len - i <= n) {
            return 0;   /* truncated */
        }
        if (s[i + 1] < lo || s[i + 1] > hi) {
            return 0;
        }
        for (k = 2; k <= n; k++) {
            if (s[i + k] < 0x80 || s[i + k] > 0xbf) {
                return 0;
            }
        }
        i += n + 1;
    }
    return 1;
}

size_t
xg_wsproto_utf8_trim(const char *s, size_t len, size_t max)
{
    size_t n;

    if (len <= max) {
        return len;
    }
    n = max;
    /* Step back over continuation bytes to the start of a character. */
    while (n > 0 && ((unsigned char) s[n] & 0xc0) == 0x80) {
        n--;
    }
    return n;
}

/* See xg_wsproto.h. */
const char *
xg_wsproto_close_text(int code)
{
    switch (code) {
    case 1000: return "normal";
    case 1001: return "going away";
    case 1002: return "protocol error";
    case 1003: return "unsupported data";
    case 1005: return "no status";
    case 1007: return "invalid utf-8";
    case 1008: return "policy violation";
    case 1009: return "message too big";
    case 1011: return "internal error";
    default:   return "other";
    }
}
