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

int xg_log_level = XG_LOG_INFO;

static FILE *log_fp;
static char *log_path;

static const char *level_names[] = { "error", "warn", "info", "debug" };

void
xg_logv(int level, const char *fmt, va_list ap)
{
    struct timespec ts;
    struct tm tm;
    char stamp[32];
    FILE *fp;

    if (level > xg_log_level) {
        return;
    }
    fp = log_fp ? log_fp : stderr;
    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    strftime(stamp, sizeof(stamp), "%Y-%m-%dT%H:%M:%S", &tm);
    fprintf(fp, "%s.%03ldZ [%s] ", stamp, ts.tv_nsec / 1000000L,
        level_names[level < 0 ? 0 : level > 3 ? 3 : level]);
    vfprintf(fp, fmt, ap);
    fputc('\n', fp);
    fflush(fp);
}

void
xg_log(int level, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    xg_logv(level, fmt, ap);
    va_end(ap);
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
