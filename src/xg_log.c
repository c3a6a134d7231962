/*
 * xg_log.c: the error log.
 */
#include "xg_core.h"
#include "xg_log.h"

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <openssl/err.h>

#include <jansson.h>

int xg_log_level = XG_LOG_INFO;

/* The destination: one per process, as stderr is (set by xg_log_open()). */
static FILE *log_fp;
static char *log_path;
static int log_format;      /* enum xg_log_format */
static int log_journal = -1;    /* stderr is systemd's journal stream (-1:
                                   not looked at yet) */

static const char *level_names[] = { "error", "warn", "info", "debug" };
static const char *format_names[] = { "text", "json" };

/*
 * A copy of S (LEN bytes) in which every byte that does not start a
 * well-formed UTF-8 sequence (RFC 3629: no overlong forms, surrogates or
 * code points over U+10FFFF) becomes U+FFFD, so that jansson takes it.
 */
static char *
log_utf8_clean(const char *s, size_t len, size_t *outlen)
{
    const unsigned char *p = (const unsigned char *) s;
    char *out = xg_malloc(len * 3 + 1);
    size_t i = 0, o = 0, n, k;
    unsigned c;

    while (i < len) {
        c = p[i];
        if (c < 0x80) {
            out[o++] = (char) c;
            i++;
            continue;
        }
        n = c >= 0xc2 && c <= 0xdf ? 2 : c >= 0xe0 && c <= 0xef ? 3
            : c >= 0xf0 && c <= 0xf4 ? 4 : 0;
        for (k = 1; n != 0 && k < n; k++) {
            if (i + k >= len || (p[i + k] & 0xc0) != 0x80) {
                n = 0;
            }
        }
        if (n == 3 && ((c == 0xe0 && p[i + 1] < 0xa0)
                       || (c == 0xed && p[i + 1] >= 0xa0))) {
            n = 0;              /* overlong, or a surrogate */
        }
        if (n == 4 && ((c == 0xf0 && p[i + 1] < 0x90)
                       || (c == 0xf4 && p[i + 1] >= 0x90))) {
            n = 0;              /* overlong, or over U+10FFFF */
        }
        if (n == 0) {
            memcpy(out + o, "\xef\xbf\xbd", 3);
            o += 3;
            i++;
            continue;
        }
        memcpy(out + o, p + i, n);
        o += n;
        i += n;
    }
    out[o] = '\0';
    *outlen = o;
    return out;
}

/* Sets KEY of O to the string S, cleaned to UTF-8. */
static void
log_json_str(json_t *o, const char *key, const char *s)
{
    size_t n;
    char *c = log_utf8_clean(s, strlen(s), &n);

    json_object_set_new(o, key, json_stringn(c, n));
    free(c);
}

/* See xg_log.h. */
char *
xg_log_line(int format, int level, const struct timespec *ts,
    const struct xg_log_ctx *ctx, const char *msg)
{
    struct tm tm;
    char stamp[48], *line;
    const char *lvl = level_names[level < 0 ? 0 : level > 3 ? 3 : level];
    json_t *o;
    size_t len;

    gmtime_r(&ts->tv_sec, &tm);
    strftime(stamp, sizeof(stamp), "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(stamp + strlen(stamp), sizeof(stamp) - strlen(stamp),
        ".%03ldZ", ts->tv_nsec / 1000000L);
    if (format == XG_LOG_JSON) {
        o = json_object();
        log_json_str(o, "time", stamp);
        log_json_str(o, "level", lvl);
        if (ctx != NULL && ctx->upstream != NULL) {
            log_json_str(o, "upstream", ctx->upstream);
        }
        if (ctx != NULL && ctx->conn != 0) {
            json_object_set_new(o, "connection",
                json_integer((json_int_t) ctx->conn));
        }
        if (ctx != NULL && ctx->client != 0) {
            json_object_set_new(o, "client",
                json_integer((json_int_t) ctx->client));
        }
        if (ctx != NULL && ctx->peer != NULL && ctx->peer[0] != '\0') {
            log_json_str(o, "peer", ctx->peer);
        }
        if (ctx != NULL && ctx->request != 0) {
            json_object_set_new(o, "request",
                json_integer((json_int_t) ctx->request));
        }
        log_json_str(o, "message", msg);
        line = json_dumps(o, JSON_COMPACT | JSON_PRESERVE_ORDER);
        json_decref(o);
        return line;
    }
    len = strlen(stamp) + strlen(lvl) + strlen(msg) + 64
          + (ctx != NULL && ctx->upstream ? strlen(ctx->upstream) + 32 : 0)
          + (ctx != NULL && ctx->client_name ? strlen(ctx->client_name) : 0);
    line = xg_malloc(len);
    snprintf(line, len, "%s [%s] ", stamp, lvl);
    if (ctx != NULL && ctx->upstream != NULL) {
        snprintf(line + strlen(line), len - strlen(line),
            ctx->conn ? "upstream %s#%u: " : "upstream %s: ", ctx->upstream,
            ctx->conn);
    }
    if (ctx != NULL && ctx->client_name != NULL) {
        snprintf(line + strlen(line), len - strlen(line), "%s: ",
            ctx->client_name);
    }
    if (ctx != NULL && ctx->request != 0) {
        snprintf(line + strlen(line), len - strlen(line), "request %llu: ",
            (unsigned long long) ctx->request);
    }
    snprintf(line + strlen(line), len - strlen(line), "%s", msg);
    return line;
}

/*
 * 1 when stderr is the journal's stream (JOURNAL_STREAM names its device
 * and inode, see systemd.exec(5)): each line then starts with its syslog
 * priority, <3> error .. <7> debug, which journald reads as the line's
 * priority (sd-daemon(3)) so that `journalctl -p warning` finds them.
 */
static int
log_to_journal(void)
{
    const char *js;
    unsigned long long dev, ino;
    struct stat st;

    if (log_journal < 0) {
        js = getenv("JOURNAL_STREAM");
        log_journal = js != NULL
            && sscanf(js, "%llu:%llu", &dev, &ino) == 2
            && fstat(STDERR_FILENO, &st) == 0
            && (unsigned long long) st.st_dev == dev
            && (unsigned long long) st.st_ino == ino;
    }
    return log_journal;
}

/* See xg_log.h. */
void
xg_log_atv(int level, const struct xg_log_ctx *ctx, const char *fmt,
    va_list ap)
{
    struct timespec ts;
    char small[512], *msg, *line;
    va_list aq;
    FILE *fp;
    int n;

    if (level > xg_log_level) {
        return;
    }
    va_copy(aq, ap);
    n = vsnprintf(small, sizeof(small), fmt, aq);
    va_end(aq);
    if (n < 0) {
        return;
    }
    msg = small;
    if ((size_t) n >= sizeof(small)) {
        msg = xg_malloc((size_t) n + 1);
        vsnprintf(msg, (size_t) n + 1, fmt, ap);
    }
    clock_gettime(CLOCK_REALTIME, &ts);
    line = xg_log_line(log_format, level, &ts, ctx, msg);
    if (line != NULL) {
        fp = log_fp ? log_fp : stderr;
        if (fp == stderr && log_to_journal()) {
            /* error, warn, info, debug: LOG_ERR, LOG_WARNING, LOG_INFO,
               LOG_DEBUG */
            fprintf(fp, "<%d>", level <= XG_LOG_ERROR ? 3
                : level == XG_LOG_WARN ? 4 : level == XG_LOG_INFO ? 6 : 7);
        }
        fputs(line, fp);
        fputc('\n', fp);
        fflush(fp);
        free(line);
    }
    if (msg != small) {
        free(msg);
    }
}

/* See xg_log.h. */
void
xg_log_at(int level, const struct xg_log_ctx *ctx, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    xg_log_atv(level, ctx, fmt, ap);
    va_end(ap);
}

void
xg_logv(int level, const char *fmt, va_list ap)
{
    xg_log_atv(level, NULL, fmt, ap);
}

void
xg_log(int level, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    xg_logv(level, fmt, ap);
    va_end(ap);
}

/* See xg_log.h. */
struct xg_log_ctx *
xg_log_ctx_dup(const struct xg_log_ctx *ctx)
{
    struct xg_log_ctx *c;

    if (ctx == NULL) {
        return NULL;
    }
    c = xg_calloc(1, sizeof(*c));
    *c = *ctx;
    c->upstream = ctx->upstream ? xg_strdup(ctx->upstream) : NULL;
    c->client_name = ctx->client_name ? xg_strdup(ctx->client_name) : NULL;
    c->peer = ctx->peer ? xg_strdup(ctx->peer) : NULL;
    return c;
}

/* See xg_log.h. */
void
xg_log_ctx_free(struct xg_log_ctx *ctx)
{
    if (ctx == NULL) {
        return;
    }
    free((char *) ctx->upstream);
    free((char *) ctx->client_name);
    free((char *) ctx->peer);
    free(ctx);
}

/* See xg_log.h. */
void
xg_log_set_format(int format)
{
    log_format = format == XG_LOG_JSON ? XG_LOG_JSON : XG_LOG_TEXT;
}

/* See xg_log.h. */
int
xg_log_format_parse(const char *s)
{
    size_t i;

    for (i = 0; i < XG_NELEM(format_names); i++) {
        if (strcmp(s, format_names[i]) == 0) {
            return (int) i;
        }
    }
    return -1;
}

/* See xg_log.h. */
const char *
xg_log_format_name(int format)
{
    return format_names[format == XG_LOG_JSON ? 1 : 0];
}

int
xg_log_open(const char *path, int level)
{
    FILE *fp;

    if (path == NULL || strcmp(path, "stderr") == 0) {
        if (log_fp != NULL) {
            fclose(log_fp);
        }
        log_fp = NULL;
        free(log_path);
        log_path = NULL;
        xg_log_level = level;
        return XG_OK;
    }
    fp = fopen(path, "a");
    if (fp == NULL) {
        return XG_ERROR;
    }
    if (log_fp != NULL) {
        fclose(log_fp);
    }
    log_fp = fp;
    free(log_path);
    log_path = xg_strdup(path);
    xg_log_level = level;
    return XG_OK;
}

/* See xg_log.h. */
int
xg_log_check(const char *path)
{
    char dir[PATH_MAX];
    const char *slash;
    struct stat sb;

    if (path == NULL || strcmp(path, "stderr") == 0) {
        return 0;
    }
    /*
     * Nothing is opened: opening a device for writing can act (a
     * watchdog), and the check also runs on every SIGHUP and fuzz input.
     */
    if (stat(path, &sb) == 0) {
        if (S_ISDIR(sb.st_mode)) {
            return EISDIR;
        }
        return access(path, W_OK) == 0 ? 0 : errno;
    }
    if (errno != ENOENT) {
        return errno;
    }
    slash = strrchr(path, '/');
    if (slash == NULL) {
        snprintf(dir, sizeof(dir), ".");
    } else if (slash == path) {
        snprintf(dir, sizeof(dir), "/");
    } else {
        snprintf(dir, sizeof(dir), "%.*s", (int) (slash - path), path);
    }
    /* what fopen(path, "a") needs to create the file */
    if (access(dir, W_OK | X_OK) != 0) {
        return errno;
    }
    return 0;
}

void
xg_log_reopen(void)
{
    FILE *fp;

    if (log_path == NULL) {
        return;
    }
    fp = fopen(log_path, "a");
    if (fp == NULL) {
        xg_log_error("log: cannot reopen \"%s\": %s", log_path,
            strerror(errno));
        return;
    }
    fclose(log_fp);
    log_fp = fp;
    xg_log_info("log: reopened \"%s\"", log_path);
}

int
xg_log_level_parse(const char *s)
{
    size_t i;

    for (i = 0; i < XG_NELEM(level_names); i++) {
        if (strcmp(s, level_names[i]) == 0) {
            return (int) i;
        }
    }
    return -1;
}

void
xg_log_ssl_error_append(char *buf, size_t len, unsigned long e)
{
    size_t off;
    char one[256];

    if (len == 0) {
        return;
    }
    off = strlen(buf);
    if (off + 2 < len) {
        ERR_error_string_n(e, one, sizeof(one));
        snprintf(buf + off, len - off, "%s%s", off ? "; " : "", one);
    }
}

char *
xg_log_ssl_errors(char *buf, size_t len)
{
    unsigned long e;

    while ((e = ERR_get_error()) != 0) {
        xg_log_ssl_error_append(buf, len, e);
    }
    return buf;
}

/* The name of LEVEL as error_log takes it ("error" ... "debug"). */
const char *
xg_log_level_name(int level)
{
    return level_names[level < 0 ? 0 : level > 3 ? 3 : level];
}
