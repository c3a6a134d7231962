/*
 * xg_log.h: the error log. One line per event, UTC timestamp with
 * milliseconds, the level, then a message that names its object:
 *   2026-11-28T10:00:00.123Z [warn] upstream deribit#3: ping timeout
 * or, with `error_log PATH LEVEL json;`, one JSON object per line:
 *   {"time":"2026-11-28T10:00:00.123Z","level":"warn","upstream":
 *    "deribit","connection":3,"message":"ping timeout"}
 *
 * A line about an upstream, a client or a request goes through
 * xg_log_at() with a struct xg_log_ctx, which writes the object's name
 * (text) or its fields (json): the callers do not format it themselves.
 */
#ifndef XG_LOG_H
#define XG_LOG_H

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

enum xg_log_level {
    XG_LOG_ERROR = 0,
    XG_LOG_WARN,
    XG_LOG_INFO,
    XG_LOG_DEBUG
};

extern int xg_log_level;

enum xg_log_format {
    XG_LOG_TEXT = 0,
    XG_LOG_JSON
};

/*
 * What a line is about. Every field may be absent (NULL or 0); the text
 * format writes the present ones as a prefix, in this order,
 *   upstream NAME#CONN: CLIENT_NAME: request ID: message
 * and the json format as the fields upstream, connection, client,
 * request (and peer). The strings are borrowed for the call.
 */
struct xg_log_ctx {
    const char     *upstream;    /* the upstream's name */
    unsigned        conn;        /* its connection's id */
    uint64_t        client;      /* the local client's id */
    const char     *client_name; /* "client ws#3 127.0.0.1:5000" (text) */
    const char     *peer;        /* the client's address (json) */
    uint64_t        request;     /* the request's upstream id */
};

/*
 * Writes one line at LEVEL about CTX (NULL: about nothing in particular)
 * if LEVEL is enabled. Never fails loudly.
 */
void xg_log_at(int level, const struct xg_log_ctx *ctx, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
void xg_log_atv(int level, const struct xg_log_ctx *ctx, const char *fmt,
    va_list ap);

/*
 * The line (no newline) that the log writes for MSG at LEVEL about CTX
 * at time TS in FORMAT: a JSON object with its strings escaped (bytes
 * that are not UTF-8 become U+FFFD) and absent fields left out, or the
 * text line. Returns a malloc'ed string, or NULL (no memory).
 */
char *xg_log_line(int format, int level, const struct timespec *ts,
    const struct xg_log_ctx *ctx, const char *msg);

/*
 * A copy of CTX whose strings it owns, for an object that logs after its
 * creator's strings are gone (a WebSocket). Never returns NULL for a
 * non-NULL CTX. xg_log_ctx_free() frees it (NULL is fine).
 */
struct xg_log_ctx *xg_log_ctx_dup(const struct xg_log_ctx *ctx);
void xg_log_ctx_free(struct xg_log_ctx *ctx);

/* The log's format from now on (XG_LOG_TEXT, the default, or JSON). */
void xg_log_set_format(int format);

/* Parses "text|json"; returns the format or -1. */
int xg_log_format_parse(const char *s);

/* The name of FORMAT as error_log takes it ("text", "json"). */
const char *xg_log_format_name(int format);

/*
 * Writes one line at LEVEL if LEVEL is enabled, about nothing in
 * particular (start-up, listeners, the admin endpoint). Never fails
 * loudly.
 */
void xg_log(int level, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
void xg_logv(int level, const char *fmt, va_list ap);

#define xg_log_error(...) xg_log(XG_LOG_ERROR, __VA_ARGS__)
#define xg_log_warn(...)  xg_log(XG_LOG_WARN, __VA_ARGS__)
#define xg_log_info(...)  xg_log(XG_LOG_INFO, __VA_ARGS__)
#define xg_log_debug(...) \
    do { if (xg_log_level >= XG_LOG_DEBUG) xg_log(XG_LOG_DEBUG, __VA_ARGS__); } while (0)

/*
 * Sends the log to PATH ("stderr" or NULL for standard error) at LEVEL.
 * Returns XG_OK, or XG_ERROR when the file cannot be opened (errno set);
 * the previous destination is kept then.
 */
int xg_log_open(const char *path, int level);

/*
 * Whether xg_log_open(PATH) could open PATH, found without creating or
 * changing anything: an existing file must open for appending, a missing
 * one needs a directory it can be created in. Returns 0, or the errno
 * that xg_log_open() would meet. "stderr" and NULL always pass.
 */
int xg_log_check(const char *path);

/* Reopens the log file (SIGUSR1, after logrotate). */
void xg_log_reopen(void);

/* Parses "error|warn|info|debug"; returns the level or -1. */
int xg_log_level_parse(const char *s);

/* The name of LEVEL as error_log takes it ("error" ... "debug"). */
const char *xg_log_level_name(int level);

/*
 * Appends the OpenSSL error queue (and drains it) to BUF as "; "-joined
 * reason strings. Returns BUF.
 */
char *xg_log_ssl_errors(char *buf, size_t len);

/*
 * Appends the reason string of OpenSSL error E to BUF (LEN bytes, NUL-
 * terminated), after a "; " when BUF is not empty; cut to fit.
 */
void xg_log_ssl_error_append(char *buf, size_t len, unsigned long e);

#endif
