/*
 * xg_log.h: the error log. One line per event, UTC timestamp with
 * milliseconds, the level, then a message that names its object:
 *   2026-11-28T10:00:00.123Z [warn] upstream deribit#3: ping timeout
 */
#ifndef XG_LOG_H
#define XG_LOG_H

#include <stdarg.h>

enum xg_log_level {
    XG_LOG_ERROR = 0,
    XG_LOG_WARN,
    XG_LOG_INFO,
    XG_LOG_DEBUG
};

extern int xg_log_level;

/* Writes one line at LEVEL if LEVEL is enabled. Never fails loudly. */
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
