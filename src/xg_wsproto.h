/*
 * xg_wsproto.h: the pure, socket-free pieces of RFC 6455 that the
 * WebSocket transport (xg_ws.c) needs and wslay does not provide: the
 * opening handshake (Sec-WebSocket-Key/Accept, parsing and checking the
 * HTTP Upgrade request and the 101 answer, both with bounds), frame header
 * encoding for pre-encoded fan-out frames, and a UTF-8 validator.
 *
 * Everything here works on caller memory, allocates nothing and is unit
 * tested and fuzzed on its own.
 */
#ifndef XG_WSPROTO_H
#define XG_WSPROTO_H

#include "xg_core.h"

#include <sys/types.h>
#include <time.h>

/*
 * The largest HTTP head (request or response line + headers + CRLFCRLF):
 * room for the longest target and 8 KiB of headers.
 */
#define XG_WSPROTO_MAX_HEAD    40960
/* The most header lines accepted in one head. */
#define XG_WSPROTO_MAX_HEADERS 64
/*
 * A request target longer than this is answered 414. Binance's combined
 * streams put every stream in the URL: 1024 names are about 25 KiB.
 */
#define XG_WSPROTO_MAX_PATH    32768
/* A Sec-WebSocket-Key is base64 of 16 bytes: 24 characters. */
#define XG_WSPROTO_KEY_LEN     24
/* A Sec-WebSocket-Accept is base64 of a SHA-1: 28 characters. */
#define XG_WSPROTO_ACCEPT_LEN  28
/* The longest frame header: 2 + 8 (length) + 4 (mask). */
#define XG_WSPROTO_MAX_FRAME_HEADER 14
/* A close reason is at most 123 bytes (125 minus the code). */
#define XG_WSPROTO_MAX_CLOSE_REASON 123

/*
 * Computes the Sec-WebSocket-Accept value for KEY (the Sec-WebSocket-Key
 * text, KEYLEN bytes) with OpenSSL SHA-1 and base64: writes 28 characters
 * and a NUL to OUT.
 */
void xg_wsproto_accept(const char *key, size_t keylen,
    char out[XG_WSPROTO_ACCEPT_LEN + 1]);

/*
 * Writes a fresh Sec-WebSocket-Key (16 bytes from RAND_bytes, base64,
 * NUL-terminated) to KEY. Returns XG_OK, or XG_ERROR when the random
 * generator fails.
 */
int xg_wsproto_make_key(char key[XG_WSPROTO_KEY_LEN + 1]);

/*
 * Looks for the end of an HTTP head ("\r\n\r\n") in the LEN bytes at BUF.
 * Returns the length of the head including the blank line, 0 when it is
 * not complete yet and LEN is still within MAX, or -1 when no complete
 * head fits in MAX bytes.
 */
ssize_t xg_wsproto_head_len(const char *buf, size_t len, size_t max);

/* A checked Upgrade request (server side). */
struct xg_wsproto_req {
    char        path[XG_WSPROTO_MAX_PATH + 1];  /* with the query */
    char        key[XG_WSPROTO_KEY_LEN + 1];
    int         status;     /* 0: a valid upgrade, else the HTTP status
                               to answer with (400, 405, 414, 426) */
    const char *error;      /* static text when status != 0 */
};

/*
 * Parses and checks the HTTP head at HEAD (LEN bytes, as found by
 * xg_wsproto_head_len) as a WebSocket Upgrade request: GET, HTTP/1.1, an
 * origin-form target, Host, Upgrade: websocket, Connection: upgrade,
 * Sec-WebSocket-Version: 13, a Sec-WebSocket-Key of 16 base64 bytes. Fills
 * REQ. Returns XG_OK for a valid request, XG_ERROR otherwise (REQ->status
 * and REQ->error say why).
 */
int xg_wsproto_parse_request(const char *head, size_t len,
    struct xg_wsproto_req *req);

/* A checked answer to our Upgrade request (client side). */
struct xg_wsproto_resp {
    int         status;          /* the HTTP status, 0 if unparsable */
    int         retry_after_s;   /* Retry-After in seconds, else -1 */
    const char *error;           /* static text, NULL for a valid 101 */
};

/*
 * Parses and checks the HTTP head at HEAD (LEN bytes) as the answer to an
 * Upgrade request sent with Sec-WebSocket-Key KEY: status 101, Upgrade:
 * websocket, Connection: upgrade, the matching Sec-WebSocket-Accept, no
 * extension or subprotocol (we offer none). For any other status it
 * reads Retry-After (delta seconds or an HTTP date, relative to NOW).
 * Returns XG_OK for a valid 101, XG_ERROR otherwise.
 */
int xg_wsproto_parse_response(const char *head, size_t len, const char *key,
    time_t now, struct xg_wsproto_resp *resp);

/* The text of an HTTP status we send ("Bad Request"), "Error" if unknown. */
const char *xg_wsproto_status_text(int status);

/*
 * Writes a complete, short HTTP error answer (status line, Content-Type,
 * Content-Length, Connection: close, a one-line body naming ERROR) to
 * BUF. Adds "Sec-WebSocket-Version: 13" for 400 and "Upgrade: websocket"
 * for 426. Returns the length written (truncated to LEN - 1).
 */
size_t xg_wsproto_error_response(char *buf, size_t len, int status,
    const char *error);

/*
 * Encodes a frame header with FIN set: OPCODE, payload length LEN, and
 * when MASK is not NULL the mask bit and the 4 mask bytes. Writes at most
 * 14 bytes to OUT and returns how many.
 */
size_t xg_wsproto_frame_header(unsigned char *out, int opcode, uint64_t len,
    const unsigned char *mask);

/*
 * How many bytes of REASON (NUL-terminated, may be NULL) go into a close
 * frame: none when it is not valid UTF-8, else at most 123, cut between
 * characters.
 */
size_t xg_wsproto_close_reason_len(const char *reason);

/*
 * Encodes a whole close frame (code + reason, the reason trimmed to 123
 * bytes at a character boundary), masked when MASK is not NULL, to OUT
 * (at least 14 + 2 + 123 bytes). Returns its length.
 */
size_t xg_wsproto_close_frame(unsigned char *out, int code,
    const char *reason, const unsigned char *mask);

/*
 * Returns 1 when the LEN bytes at S are well-formed UTF-8 (RFC 3629: no
 * overlong forms, no surrogates, nothing above U+10FFFF, nothing
 * truncated), else 0. Hand-written: neither OpenSSL nor libevent offer
 * one. wslay 1.1.1 does check the text frames it receives, but not what
 * we send; this one guards the text we send, the close reasons we trim,
 * and (again, independent of the wslay build) every text message we
 * deliver.
 */
int xg_wsproto_utf8_valid(const unsigned char *s, size_t len);

/*
 * Returns the length of the longest prefix of S (LEN bytes of valid
 * UTF-8) that is at most MAX bytes and does not split a character.
 */
size_t xg_wsproto_utf8_trim(const char *s, size_t len, size_t max);

/* A close code's name for logs ("normal", "going away", ..., "other"). */
const char *xg_wsproto_close_text(int code);

#endif
