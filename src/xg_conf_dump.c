/*
 * xg_conf_dump.c: `exgate -T`, the effective configuration written back
 * as conf text, as `nginx -T` does, but from the parsed conf objects
 * rather than the files: includes are expanded, defaults filled in, and a
 * secret appears only as where it comes from (env:NAME, file:PATH).
 *
 * The dump is driven by the directive tables, in table order, so a new
 * directive is dumped as soon as it is in a table: by xg_conf_dump_field()
 * when its setter is a generic one, else by its module's dump function
 * (struct xg_module.dump and the protocol and policy equivalents).
 */
#include "xg_core.h"
#include "xg_conf.h"
#include "xg_venue.h"

#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* ---- lines and words ---------------------------------------------------- */

static void
dump_indent(struct xg_conf_dump *d)
{
    int i;

    for (i = 0; i < d->depth; i++) {
        fputs("    ", d->fp);
    }
}

void
xg_conf_dump_begin(struct xg_conf_dump *d)
{
    dump_indent(d);
    d->nwords = 0;
}

/* Whether the tokenizer (xg_conf.c, lex_next) needs W quoted. */
static int
needs_quotes(const char *w)
{
    const unsigned char *p;

    if (*w == '\0') {
        return 1;
    }
    for (p = (const unsigned char *) w; *p; p++) {
        if (*p <= ' ' || *p == 0x7f || strchr(";{}#\"'\\", *p) != NULL) {
            return 1;
        }
    }
    return 0;
}

void
xg_conf_dump_word(struct xg_conf_dump *d, const char *w)
{
    const char *p;

    if (d->nwords++ > 0) {
        fputc(' ', d->fp);
    }
    if (!needs_quotes(w)) {
        fputs(w, d->fp);
        return;
    }
    fputc('"', d->fp);
    for (p = w; *p; p++) {
        switch (*p) {
        case '"':  fputs("\\\"", d->fp); break;
        case '\\': fputs("\\\\", d->fp); break;
        case '\n': fputs("\\n", d->fp); break;
        case '\t': fputs("\\t", d->fp); break;
        case '\r': fputs("\\r", d->fp); break;
        default:   fputc(*p, d->fp); break;
        }
    }
    fputc('"', d->fp);
}

void
xg_conf_dump_kv(struct xg_conf_dump *d, const char *key, const char *value)
{
    size_t n = strlen(key) + strlen(value) + 2;
    char *w = xg_malloc(n);

    snprintf(w, n, "%s=%s", key, value);
    xg_conf_dump_word(d, w);
    free(w);
}

void
xg_conf_dump_end(struct xg_conf_dump *d)
{
    fputs(";\n", d->fp);
}

void
xg_conf_dump_open(struct xg_conf_dump *d)
{
    fputs(" {\n", d->fp);
    d->depth++;
}

void
xg_conf_dump_close(struct xg_conf_dump *d)
{
    d->depth--;
    dump_indent(d);
    fputs("}\n", d->fp);
}

void
xg_conf_dump_words(struct xg_conf_dump *d, const char *w, ...)
{
    va_list ap;

    xg_conf_dump_begin(d);
    va_start(ap, w);
    for (; w != NULL; w = va_arg(ap, const char *)) {
        xg_conf_dump_word(d, w);
    }
    va_end(ap);
    xg_conf_dump_end(d);
}

void
xg_conf_dump_comment(struct xg_conf_dump *d, const char *fmt, ...)
{
    va_list ap;

    dump_indent(d);
    fputs("# ", d->fp);
    va_start(ap, fmt);
    vfprintf(d->fp, fmt, ap);
    va_end(ap);
    fputc('\n', d->fp);
}

/* ---- values ------------------------------------------------------------- */

const char *
xg_conf_fmt_duration(uint64_t ms, char *buf, size_t len)
{
    /* no "m": "1m" reads as a size beside one (client_output_limit) */
    static const struct { uint64_t ms; const char *unit; } units[] = {
        { 3600 * 1000, "h" }, { 1000, "s" }
    };
    size_t i;

    if (ms == 0) {
        snprintf(buf, len, "0s");
        return buf;
    }
    for (i = 0; i < XG_NELEM(units); i++) {
        if (ms % units[i].ms == 0) {
            snprintf(buf, len, "%llu%s",
                (unsigned long long) (ms / units[i].ms), units[i].unit);
            return buf;
        }
    }
    snprintf(buf, len, "%llums", (unsigned long long) ms);
    return buf;
}

const char *
xg_conf_fmt_size(uint64_t bytes, char *buf, size_t len)
{
    static const struct { uint64_t n; const char *unit; } units[] = {
        { 1024ULL * 1024 * 1024, "g" }, { 1024 * 1024, "m" }, { 1024, "k" }
    };
    size_t i;

    for (i = 0; bytes != 0 && i < XG_NELEM(units); i++) {
        if (bytes % units[i].n == 0) {
            snprintf(buf, len, "%llu%s",
                (unsigned long long) (bytes / units[i].n), units[i].unit);
            return buf;
        }
    }
    snprintf(buf, len, "%llu", (unsigned long long) bytes);
    return buf;
}

const char *
xg_conf_fmt_addr(const struct xg_addr *a, char *buf, size_t len)
{
    if (strchr(a->host, ':') != NULL) {
        snprintf(buf, len, "[%s]:%u", a->host, a->port);
    } else {
        snprintf(buf, len, "%s:%u", a->host, a->port);
    }
    return buf;
}

const char *
xg_conf_fmt_url(const struct xg_url *u, char *buf, size_t len)
{
    char port[8] = "";
    int v6 = strchr(u->host, ':') != NULL;

    if (u->port != (u->redis ? 6379 : u->tls ? 443 : 80)) {
        snprintf(port, sizeof(port), ":%u", u->port);
    }
    if (u->redis) {
        snprintf(buf, len, "%s://%s%s%s%s", u->tls ? "rediss" : "redis",
            v6 ? "[" : "", u->host,
            v6 ? "]" : "", port);
        return buf;
    }
    snprintf(buf, len, "%s://%s%s%s%s%s", u->tls ? "wss" : "ws",
        v6 ? "[" : "", u->host, v6 ? "]" : "", port, u->path);
    return buf;
}

const char *
xg_conf_fmt_http_url(const struct xg_url *u, char *buf, size_t len)
{
    char port[8] = "";
    int v6 = strchr(u->host, ':') != NULL;

    if (u->port != (u->tls ? 443 : 80)) {
        snprintf(port, sizeof(port), ":%u", u->port);
    }
    snprintf(buf, len, "%s://%s%s%s%s%s", u->tls ? "https" : "http",
        v6 ? "[" : "", u->host, v6 ? "]" : "", port, u->path);
    return buf;
}

char *
xg_conf_abs_path(const char *path)
{
    char cwd[PATH_MAX], *out;
    size_t n;

    if (path[0] == '/' || getcwd(cwd, sizeof(cwd)) == NULL) {
        return xg_strdup(path);
    }
    while (path[0] == '.' && path[1] == '/') {
        path += 2;
    }
    n = strlen(cwd) + strlen(path) + 2;
    out = xg_malloc(n);
    snprintf(out, n, "%s/%s", strcmp(cwd, "/") == 0 ? "" : cwd, path);
    return out;
}

char *
xg_conf_secret_source(const struct xg_conf_stmt *st, const char *spec)
{
    const char *dir_end;
    char *rel, *abs, *out;
    size_t n;

    if (strncmp(spec, "file:", 5) != 0) {
        return xg_strdup(spec);
    }
    /* relative to the conf file, as xg_conf_secret() reads it */
    dir_end = spec[5] == '/' ? NULL : strrchr(st->file, '/');
    if (dir_end != NULL) {
        n = (size_t) (dir_end - st->file) + strlen(spec + 5) + 2;
        rel = xg_malloc(n);
        snprintf(rel, n, "%.*s/%s", (int) (dir_end - st->file), st->file,
            spec + 5);
    } else {
        rel = xg_strdup(spec + 5);
    }
    abs = xg_conf_abs_path(rel);
    free(rel);
    n = strlen(abs) + 6;
    out = xg_malloc(n);
    snprintf(out, n, "file:%s", abs);
    free(abs);
    return out;
}

/* ---- the generic dumper and the walk ------------------------------------ */

/* Whether V is within CMD's bounds (any value when it has none). */
static int
in_bounds(const struct xg_command *cmd, uint64_t v)
{
    const struct xg_conf_bounds *b = cmd->post;

    return b == NULL || (v >= b->min && v <= b->max);
}

int
xg_conf_dump_field(struct xg_conf_dump *d, const struct xg_command *cmd,
    xg_conf_set_cb set, const void *conf)
{
    const char *p = (const char *) conf + cmd->offset;
    char buf[64];
    const char *shown;
    uint64_t v;

    if (set == xg_conf_set_flag) {
        shown = *(const int *) p ? "on" : "off";
    } else if (set == xg_conf_set_str) {
        shown = *(char *const *) p;
        if (shown == NULL) {
            xg_conf_dump_comment(d, "%s: not set", cmd->name);
            return XG_OK;
        }
    } else if (set == xg_conf_set_uint || set == xg_conf_set_duration
        || set == xg_conf_set_size)
    {
        if (set == xg_conf_set_uint) {
            v = *(const unsigned *) p;
        } else if (set == xg_conf_set_duration) {
            v = *(const uint64_t *) p;
        } else {
            v = *(const size_t *) p;
        }
        if (!in_bounds(cmd, v)) {
            xg_conf_dump_comment(d, "%s: not set", cmd->name);
            return XG_OK;
        }
        if (set == xg_conf_set_uint) {
            snprintf(buf, sizeof(buf), "%llu", (unsigned long long) v);
            shown = buf;
        } else if (set == xg_conf_set_duration) {
            shown = xg_conf_fmt_duration(v, buf, sizeof(buf));
        } else {
            shown = xg_conf_fmt_size(v, buf, sizeof(buf));
        }
    } else {
        return XG_AGAIN;    /* a secret, or a setter of a module's own */
    }
    xg_conf_dump_words(d, cmd->name, shown, NULL);
    return XG_OK;
}

void
xg_conf_dump_table(struct xg_conf_dump *d, const struct xg_command *table,
    unsigned ctx, xg_conf_dump_cb cb, const void *conf)
{
    const struct xg_command *cmd;
    int rc;

    for (cmd = table; cmd != NULL && cmd->name != NULL; cmd++) {
        if (!(cmd->type & ctx)) {
            continue;
        }
        rc = cb != NULL ? cb(d, cmd, conf) : XG_AGAIN;
        if (rc == XG_AGAIN) {
            rc = xg_conf_dump_field(d, cmd, cmd->set, conf);
        }
        if (rc == XG_AGAIN) {
            /* a table without a dump for it: a defect, said in the output */
            xg_conf_dump_comment(d, "%s: cannot be shown", cmd->name);
        }
    }
}

void
xg_conf_dump_upstream(struct xg_conf_dump *d,
    const struct xg_upstream_conf *uc)
{
    const struct xg_module *const *m;
    const struct xg_venue *pm;

    for (m = xg_modules; *m != NULL; m++) {
        xg_conf_dump_table(d, (*m)->commands, XG_CONF_UPSTREAM, (*m)->dump,
            uc);
    }
    pm = xg_venue_find(uc->protocol);
    if (pm != NULL && pm->commands != NULL && uc->proto_conf != NULL) {
        xg_conf_dump_table(d, pm->commands, XG_CONF_UPSTREAM, pm->dump,
            uc->proto_conf);
    }
}

int
xg_conf_dump(FILE *fp, const struct xg_main_conf *mc)
{
    struct xg_conf_dump d;
    const struct xg_module *const *m;

    memset(&d, 0, sizeof(d));
    d.fp = fp;
    xg_conf_dump_comment(&d, "exgate %s: the effective configuration "
        "(exgate -T)", XG_VERSION);
    xg_conf_dump_comment(&d, "includes expanded, defaults filled in, "
        "secrets shown by source only");
    for (m = xg_modules; *m != NULL; m++) {
        xg_conf_dump_table(&d, (*m)->commands, XG_CONF_MAIN, (*m)->dump, mc);
    }
    fflush(fp);
    return ferror(fp) ? XG_ERROR : XG_OK;
}
