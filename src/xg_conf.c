/*
 * xg_conf.c: the configuration language: tokenizer, statement tree,
 * `include`, dispatch to directive tables, value parsers and the generic
 * setters. Which directives exist is decided by the modules' tables
 * (src/xg_module.c), not here.
 */
#include "xg_core.h"
#include "xg_conf.h"
#include "xg_log.h"
#include "xg_venue.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <glob.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/evp.h>

#define XG_CONF_MAX_FILE           (16 * 1024 * 1024)
#define XG_CONF_MAX_WORD           (64 * 1024)
#define XG_CONF_MAX_NESTING        16

/* ---- error reporting ---------------------------------------------------- */

static void
conf_append(struct xg_conf *cf, const char *file, int line, const char *kind,
    const char *fmt, va_list ap)
{
    char msg[1024];
    char head[PATH_MAX + 64];
    size_t hl, ml;

    vsnprintf(msg, sizeof(msg), fmt, ap);
    if (line > 0) {
        snprintf(head, sizeof(head), "%s:%d: %s", file, line, kind);
    } else {
        snprintf(head, sizeof(head), "%s: %s", file, kind);
    }
    hl = strlen(head);
    ml = strlen(msg);
    cf->errors = xg_realloc(cf->errors, cf->errors_len + hl + ml + 2);
    memcpy(cf->errors + cf->errors_len, head, hl);
    memcpy(cf->errors + cf->errors_len + hl, msg, ml);
    cf->errors_len += hl + ml;
    cf->errors[cf->errors_len++] = '\n';
    cf->errors[cf->errors_len] = '\0';
}

static int
conf_error_at(struct xg_conf *cf, const char *file, int line,
    const char *fmt, ...) __attribute__((format(printf, 4, 5)));

static int
conf_error_at(struct xg_conf *cf, const char *file, int line,
    const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    conf_append(cf, file, line, "", fmt, ap);
    va_end(ap);
    cf->nerrors++;
    return XG_ERROR;
}

int
xg_conf_error(struct xg_conf *cf, const struct xg_conf_stmt *st,
    const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    conf_append(cf, st->file, st->line, "", fmt, ap);
    va_end(ap);
    cf->nerrors++;
    return XG_ERROR;
}

void
xg_conf_warn(struct xg_conf *cf, const struct xg_conf_stmt *st,
    const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    conf_append(cf, st->file, st->line, "warning: ", fmt, ap);
    va_end(ap);
    cf->nwarnings++;
}

/* ---- tokenizer ------------------------------------------------------------ */

enum tok_kind { TOK_WORD, TOK_SEMI, TOK_OPEN, TOK_CLOSE, TOK_EOF, TOK_BAD };

struct lexer {
    struct xg_conf *cf;
    const char     *file;
    const char     *p;
    const char     *end;
    int             line;
    char           *word;       /* last word, malloc'd, taken by the parser */
    int             tok_line;
};

static int
lex_next(struct lexer *lx)
{
    char *buf;
    size_t len, cap;
    char q;
    int start;

    for (;;) {
        while (lx->p < lx->end && isspace((unsigned char) *lx->p)) {
            if (*lx->p == '\n') {
                lx->line++;
            }
            lx->p++;
        }
        if (lx->p < lx->end && *lx->p == '#') {
            while (lx->p < lx->end && *lx->p != '\n') {
                lx->p++;
            }
            continue;
        }
        break;
    }
    lx->tok_line = lx->line;
    if (lx->p >= lx->end) {
        return TOK_EOF;
    }
    switch (*lx->p) {
    case ';':
        lx->p++;
        return TOK_SEMI;
    case '{':
        lx->p++;
        return TOK_OPEN;
    case '}':
        lx->p++;
        return TOK_CLOSE;
    }
    if (*lx->p == '\0') {
        lx->p++;
        conf_error_at(lx->cf, lx->file, lx->line, "unexpected NUL byte");
        return TOK_BAD;
    }

    cap = 64;
    len = 0;
    buf = xg_malloc(cap);
    if (*lx->p == '"' || *lx->p == '\'') {
        q = *lx->p++;
        start = lx->line;
        for (;;) {
            char c;

            if (lx->p >= lx->end) {
                free(buf);
                conf_error_at(lx->cf, lx->file, start,
                    "unterminated quoted string");
                return TOK_BAD;
            }
            c = *lx->p++;
            if (c == q) {
                break;
            }
            if (c == '\n') {
                lx->line++;
            }
            if (c == '\\' && lx->p < lx->end) {
                char e = *lx->p++;

                switch (e) {
                case 'n': c = '\n'; break;
                case 't': c = '\t'; break;
                case 'r': c = '\r'; break;
                case '\\': c = '\\'; break;
                case '"': c = '"'; break;
                case '\'': c = '\''; break;
                default:
                    /* Unknown escapes stay as written, like nginx. */
                    if (len + 2 >= cap) {
                        cap *= 2;
                        buf = xg_realloc(buf, cap);
                    }
                    buf[len++] = '\\';
                    c = e;
                    if (e == '\n') {
                        lx->line++;
                    }
                    break;
                }
            }
            if (c == '\0') {
                free(buf);
                conf_error_at(lx->cf, lx->file, lx->line,
                    "unexpected NUL byte");
                return TOK_BAD;
            }
            if (len + 2 >= cap) {
                if (cap >= XG_CONF_MAX_WORD) {
                    free(buf);
                    conf_error_at(lx->cf, lx->file, start,
                        "quoted string too long");
                    return TOK_BAD;
                }
                cap *= 2;
                buf = xg_realloc(buf, cap);
            }
            buf[len++] = c;
        }
        if (lx->p < lx->end && !isspace((unsigned char) *lx->p)
            && *lx->p != ';' && *lx->p != '{' && *lx->p != '}')
        {
            free(buf);
            conf_error_at(lx->cf, lx->file, lx->line,
                "unexpected \"%c\" after a quoted string", *lx->p);
            /* Skip the rest of the word so the parser can go on. */
            while (lx->p < lx->end && !isspace((unsigned char) *lx->p)
                && *lx->p != ';' && *lx->p != '{' && *lx->p != '}')
            {
                lx->p++;
            }
            return TOK_BAD;
        }
    } else {
        while (lx->p < lx->end && !isspace((unsigned char) *lx->p)
            && *lx->p != ';' && *lx->p != '{' && *lx->p != '}'
            && *lx->p != '#' && *lx->p != '\0')
        {
            if (*lx->p == '"' || *lx->p == '\'') {
                free(buf);
                conf_error_at(lx->cf, lx->file, lx->line,
                    "unexpected quote inside a word");
                while (lx->p < lx->end && !isspace((unsigned char) *lx->p)) {
                    lx->p++;
                }
                return TOK_BAD;
            }
            if (len + 2 >= cap) {
                if (cap >= XG_CONF_MAX_WORD) {
                    free(buf);
                    conf_error_at(lx->cf, lx->file, lx->line,
                        "word too long");
                    return TOK_BAD;
                }
                cap *= 2;
                buf = xg_realloc(buf, cap);
            }
            buf[len++] = *lx->p++;
        }
    }
    buf[len] = '\0';
    lx->word = buf;
    return TOK_WORD;
}

/* ---- statement tree ------------------------------------------------------- */

struct stmt_list {
    struct xg_conf_stmt *v;
    int                  n;
    int                  cap;
};

static void
stmt_free_contents(struct xg_conf_stmt *st)
{
    int i;

    for (i = 0; i < st->nargs; i++) {
        free(st->args[i]);
    }
    free(st->args);
    for (i = 0; i < st->nblock; i++) {
        stmt_free_contents(&st->block[i]);
    }
    free(st->block);
}

static void
list_push(struct stmt_list *l, struct xg_conf_stmt *st)
{
    if (l->n == l->cap) {
        l->cap = l->cap ? l->cap * 2 : 8;
        l->v = xg_realloc(l->v, (size_t) l->cap * sizeof(*l->v));
    }
    l->v[l->n++] = *st;
}

static int parse_file(struct xg_conf *cf, const char *path, int line_of_include,
    const char *includer, struct stmt_list *out);

static const char *
conf_intern_file(struct xg_conf *cf, const char *path)
{
    struct xg_main_conf *mc = cf->main;
    int i;

    for (i = 0; i < mc->nfiles; i++) {
        if (strcmp(mc->files[i], path) == 0) {
            return mc->files[i];
        }
    }
    mc->files = xg_realloc(mc->files, (size_t) (mc->nfiles + 1) * sizeof(char *));
    mc->files[mc->nfiles] = xg_strdup(path);
    return mc->files[mc->nfiles++];
}

static int
has_glob(const char *s)
{
    return strpbrk(s, "*?[") != NULL;
}

/*
 * Expands `include PATTERN;` found at ST into OUT. The pattern is relative
 * to the directory of the including file.
 */
static void
expand_include(struct xg_conf *cf, struct xg_conf_stmt *st,
    struct stmt_list *out)
{
    char pattern[PATH_MAX];
    const char *dir_end;
    glob_t g;
    size_t i;
    int rc;

    if (st->nargs != 2 || st->has_block) {
        xg_conf_error(cf, st, "invalid number of arguments in \"include\" "
            "directive");
        return;
    }
    if (st->args[1][0] == '/') {
        snprintf(pattern, sizeof(pattern), "%s", st->args[1]);
    } else {
        dir_end = strrchr(st->file, '/');
        if (dir_end != NULL) {
            snprintf(pattern, sizeof(pattern), "%.*s/%s",
                (int) (dir_end - st->file), st->file, st->args[1]);
        } else {
            snprintf(pattern, sizeof(pattern), "%s", st->args[1]);
        }
    }
    if (!has_glob(pattern)) {
        parse_file(cf, pattern, st->line, st->file, out);
        return;
    }
    rc = glob(pattern, 0, NULL, &g);
    if (rc == GLOB_NOMATCH) {
        /* An empty glob is fine, as in nginx: conf.d may be empty. */
        return;
    }
    if (rc != 0) {
        xg_conf_error(cf, st, "include \"%s\": cannot read the directory",
            st->args[1]);
        return;
    }
    for (i = 0; i < g.gl_pathc; i++) {
        parse_file(cf, g.gl_pathv[i], st->line, st->file, out);
    }
    globfree(&g);
}

/*
 * Consumes a block nested past XG_CONF_MAX_NESTING (its `{` already read)
 * up to its matching `}`, with a counter instead of recursion, so a file
 * of a million `{` cannot exhaust the stack. The error was reported.
 */
static void
skip_block(struct lexer *lx, int open_line)
{
    unsigned long level = 1;
    int t;

    while (level > 0) {
        t = lex_next(lx);
        if (t == TOK_WORD) {
            free(lx->word);
            lx->word = NULL;
        } else if (t == TOK_OPEN) {
            level++;
        } else if (t == TOK_CLOSE) {
            level--;
        } else if (t == TOK_EOF) {
            conf_error_at(lx->cf, lx->file, open_line,
                "missing \"}\": the block opened here is not closed "
                "before the end of the file");
            return;
        }
    }
}

/*
 * Parses statements until `}` (when DEPTH > 0) or the end of input,
 * appending to OUT. Returns XG_OK when the block ended as it should.
 */
static int
parse_block(struct lexer *lx, int depth, int open_line, struct stmt_list *out)
{
    struct xg_conf_stmt st;
    char **args = NULL;
    int *lines = NULL;
    int nargs = 0, cap = 0;
    int t;

    for (;;) {
        t = lex_next(lx);
        if (t == TOK_BAD) {
            continue;
        }
        if (t == TOK_WORD) {
            if (nargs == cap) {
                cap = cap ? cap * 2 : 4;
                args = xg_realloc(args, (size_t) cap * sizeof(char *));
                lines = xg_realloc(lines, (size_t) cap * sizeof(int));
            }
            lines[nargs] = lx->tok_line;
            args[nargs++] = lx->word;
            lx->word = NULL;
            continue;
        }
        if (t == TOK_SEMI || t == TOK_OPEN) {
            if (nargs == 0) {
                conf_error_at(lx->cf, lx->file, lx->tok_line,
                    "unexpected \"%s\"", t == TOK_SEMI ? ";" : "{");
                if (t == TOK_OPEN && depth + 1 > XG_CONF_MAX_NESTING) {
                    skip_block(lx, lx->tok_line);
                } else if (t == TOK_OPEN) {
                    struct stmt_list junk = { 0 };
                    int i;

                    parse_block(lx, depth + 1, lx->tok_line, &junk);
                    for (i = 0; i < junk.n; i++) {
                        stmt_free_contents(&junk.v[i]);
                    }
                    free(junk.v);
                }
                continue;
            }
            memset(&st, 0, sizeof(st));
            st.file = lx->file;
            st.line = lines[0];
            st.nargs = nargs;
            st.args = args;
            args = NULL;
            nargs = cap = 0;
            if (t == TOK_OPEN) {
                struct stmt_list child = { 0 };

                st.has_block = 1;
                if (depth + 1 > XG_CONF_MAX_NESTING) {
                    conf_error_at(lx->cf, lx->file, lx->tok_line,
                        "blocks nested too deeply");
                    skip_block(lx, lx->tok_line);
                } else {
                    parse_block(lx, depth + 1, lx->tok_line, &child);
                }
                st.block = child.v;
                st.nblock = child.n;
            }
            if (strcmp(st.args[0], "include") == 0) {
                expand_include(lx->cf, &st, out);
                stmt_free_contents(&st);
            } else {
                list_push(out, &st);
            }
            continue;
        }
        if (t == TOK_CLOSE) {
            if (nargs > 0) {
                conf_error_at(lx->cf, lx->file, lines[nargs - 1],
                    "missing \";\" after \"%s\"", args[0]);
                while (nargs > 0) {
                    free(args[--nargs]);
                }
            }
            free(args);
            free(lines);
            if (depth == 0) {
                conf_error_at(lx->cf, lx->file, lx->tok_line,
                    "unexpected \"}\"");
                args = NULL;
                lines = NULL;
                cap = 0;
                continue;
            }
            return XG_OK;
        }
        /* TOK_EOF */
        if (nargs > 0) {
            conf_error_at(lx->cf, lx->file, lines[nargs - 1],
                "missing \";\" after \"%s\" (unexpected end of file)",
                args[0]);
            while (nargs > 0) {
                free(args[--nargs]);
            }
        }
        free(args);
        free(lines);
        if (depth > 0) {
            conf_error_at(lx->cf, lx->file, open_line,
                "missing \"}\": the block opened here is not closed "
                "before the end of the file");
            return XG_ERROR;
        }
        return XG_OK;
    }
}

static int
parse_text(struct xg_conf *cf, const char *file, const char *text, size_t len,
    struct stmt_list *out)
{
    struct lexer lx;

    memset(&lx, 0, sizeof(lx));
    lx.cf = cf;
    lx.file = conf_intern_file(cf, file);
    lx.p = text;
    lx.end = text + len;
    lx.line = 1;
    return parse_block(&lx, 0, 0, out);
}

static int
parse_file(struct xg_conf *cf, const char *path, int line_of_include,
    const char *includer, struct stmt_list *out)
{
    char real[PATH_MAX];
    struct stat sb;
    char *text;
    ssize_t n;
    size_t got;
    int fd, i, rc;

    if (cf->nreading >= XG_CONF_MAX_INCLUDE_DEPTH) {
        return conf_error_at(cf, includer, line_of_include,
            "includes nested too deeply (more than %d)",
            XG_CONF_MAX_INCLUDE_DEPTH);
    }
    fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0 || fstat(fd, &sb) != 0) {
        rc = errno;
        if (fd >= 0) {
            close(fd);
        }
        if (includer != NULL) {
            return conf_error_at(cf, includer, line_of_include,
                "include \"%s\": %s", path, strerror(rc));
        }
        return conf_error_at(cf, path, 0, "cannot open: %s", strerror(rc));
    }
    if (!S_ISREG(sb.st_mode) || sb.st_size > XG_CONF_MAX_FILE) {
        close(fd);
        if (includer != NULL) {
            return conf_error_at(cf, includer, line_of_include,
                "include \"%s\": not a regular file of at most 16 MiB", path);
        }
        return conf_error_at(cf, path, 0,
            "not a regular file of at most 16 MiB");
    }
    if (realpath(path, real) == NULL) {
        snprintf(real, sizeof(real), "%s", path);
    }
    for (i = 0; i < cf->nreading; i++) {
        if (strcmp(cf->reading[i], real) == 0) {
            close(fd);
            return conf_error_at(cf, includer, line_of_include,
                "include loop: \"%s\" is already being read", path);
        }
    }
    text = xg_malloc((size_t) sb.st_size + 1);
    got = 0;
    while (got < (size_t) sb.st_size) {
        n = read(fd, text + got, (size_t) sb.st_size - got);
        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n <= 0) {
            break;
        }
        got += (size_t) n;
    }
    close(fd);
    cf->reading[cf->nreading++] = real;
    rc = parse_text(cf, path, text, got, out);
    cf->nreading--;
    free(text);
    return rc;
}

/* ---- dispatch ------------------------------------------------------------- */

static size_t
edit_distance(const char *a, const char *b)
{
    size_t la = strlen(a), lb = strlen(b), i, j;
    size_t prev[64], cur[64];

    if (la >= 63 || lb >= 63) {
        return 99;
    }
    for (j = 0; j <= lb; j++) {
        prev[j] = j;
    }
    for (i = 1; i <= la; i++) {
        cur[0] = i;
        for (j = 1; j <= lb; j++) {
            size_t sub = prev[j - 1] + (a[i - 1] != b[j - 1]);
            size_t del = prev[j] + 1;
            size_t ins = cur[j - 1] + 1;

            cur[j] = sub < del ? (sub < ins ? sub : ins) : (del < ins ? del : ins);
        }
        memcpy(prev, cur, (lb + 1) * sizeof(size_t));
    }
    return prev[lb];
}

/* Finds NAME in the module and protocol module tables, in any context. */
static const struct xg_command *
find_anywhere(const char *name)
{
    const struct xg_module *const *m;
    const struct xg_venue *const *p;
    const struct xg_command *c;

    for (m = xg_modules; *m != NULL; m++) {
        for (c = (*m)->commands; c->name != NULL; c++) {
            if (strcmp(c->name, name) == 0) {
                return c;
            }
        }
    }
    for (p = xg_venues; *p != NULL; p++) {
        for (c = (*p)->commands; c != NULL && c->name != NULL; c++) {
            if (strcmp(c->name, name) == 0) {
                return c;
            }
        }
    }
    return NULL;
}

/* The closest directive name allowed in CTX, for "did you mean". */
static const char *
suggest(const char *name, unsigned ctx, const struct xg_command *const *tables)
{
    const struct xg_command *const *t;
    const struct xg_command *c;
    const char *best = NULL;
    size_t d, bestd = 99, limit;

    limit = strlen(name) / 3;
    if (limit < 1) {
        limit = 1;
    }
    if (limit > 3) {
        limit = 3;
    }
    for (t = tables; *t != NULL; t++) {
        for (c = *t; c->name != NULL; c++) {
            if (!(c->type & ctx)) {
                continue;
            }
            d = edit_distance(name, c->name);
            if (d < bestd) {
                bestd = d;
                best = c->name;
            }
        }
    }
    return bestd <= limit ? best : NULL;
}

static int
arity_ok(unsigned type, int nargs)
{
    int n = nargs - 1;

    if ((type & XG_CONF_NOARGS) && n == 0) {
        return 1;
    }
    if ((type & XG_CONF_TAKE1) && n == 1) {
        return 1;
    }
    if ((type & XG_CONF_TAKE2) && n == 2) {
        return 1;
    }
    if ((type & XG_CONF_TAKE3) && n == 3) {
        return 1;
    }
    if ((type & XG_CONF_1MORE) && n >= 1) {
        return 1;
    }
    if ((type & XG_CONF_2MORE) && n >= 2) {
        return 1;
    }
    return 0;
}

int
xg_conf_dispatch(struct xg_conf *cf, const struct xg_conf_stmt *stmts, int n,
    unsigned ctx, const struct xg_command *const *tables, void *conf)
{
    const struct xg_command *const *t;
    const struct xg_command *cmd;
    const struct xg_conf_stmt *st;
    const char *hint;
    int before = cf->nerrors;
    int i, j, dup;

    for (i = 0; i < n; i++) {
        st = &stmts[i];
        cmd = NULL;
        for (t = tables; *t != NULL && cmd == NULL; t++) {
            const struct xg_command *c;

            for (c = *t; c->name != NULL; c++) {
                if ((c->type & ctx) && strcmp(c->name, st->args[0]) == 0) {
                    cmd = c;
                    break;
                }
            }
        }
        if (cmd == NULL) {
            if (find_anywhere(st->args[0]) != NULL) {
                xg_conf_error(cf, st, "\"%s\" directive is not allowed here",
                    st->args[0]);
                continue;
            }
            hint = suggest(st->args[0], ctx, tables);
            if (hint != NULL) {
                xg_conf_error(cf, st, "unknown directive \"%s\" "
                    "(did you mean \"%s\"?)", st->args[0], hint);
            } else {
                xg_conf_error(cf, st, "unknown directive \"%s\"",
                    st->args[0]);
            }
            continue;
        }
        if (!(cmd->type & XG_CONF_MULTI)) {
            dup = 0;
            for (j = 0; j < i; j++) {
                if (strcmp(stmts[j].args[0], st->args[0]) == 0) {
                    dup = 1;
                    break;
                }
            }
            if (dup) {
                xg_conf_error(cf, st, "\"%s\" directive is duplicate "
                    "(first at line %d)", st->args[0], stmts[j].line);
                continue;
            }
        }
        if (!arity_ok(cmd->type, st->nargs)) {
            xg_conf_error(cf, st, "invalid number of arguments in \"%s\" "
                "directive%s", st->args[0],
                st->nargs > 2 ? " (missing \";\"?)" : "");
            continue;
        }
        if ((cmd->type & XG_CONF_BLOCK) && !st->has_block) {
            xg_conf_error(cf, st, "\"%s\" directive needs a { } block",
                st->args[0]);
            continue;
        }
        if (st->has_block && !(cmd->type & (XG_CONF_BLOCK | XG_CONF_OPTBLOCK))) {
            xg_conf_error(cf, st, "\"%s\" directive takes no { } block",
                st->args[0]);
            continue;
        }
        cmd->set(cf, st, cmd, conf);
    }
    return cf->nerrors - before;
}

/* ---- values --------------------------------------------------------------- */

int
xg_conf_parse_uint(const char *s, uint64_t *v)
{
    uint64_t x = 0;

    if (*s == '\0') {
        return XG_ERROR;
    }
    for (; *s; s++) {
        if (*s < '0' || *s > '9') {
            return XG_ERROR;
        }
        if (x > (UINT64_MAX - 9) / 10) {
            return XG_ERROR;
        }
        x = x * 10 + (uint64_t) (*s - '0');
    }
    *v = x;
    return XG_OK;
}

/* Splits "123unit" into its number and unit. */
static int
split_number(const char *s, uint64_t *num, const char **unit)
{
    char digits[32];
    size_t i = 0;

    while (s[i] >= '0' && s[i] <= '9') {
        if (i + 1 >= sizeof(digits)) {
            return XG_ERROR;
        }
        digits[i] = s[i];
        i++;
    }
    if (i == 0) {
        return XG_ERROR;
    }
    digits[i] = '\0';
    if (xg_conf_parse_uint(digits, num) != XG_OK) {
        return XG_ERROR;
    }
    *unit = s + i;
    return XG_OK;
}

int
xg_conf_parse_duration(const char *s, uint64_t *ms)
{
    uint64_t n, mult;
    const char *u;

    if (split_number(s, &n, &u) != XG_OK) {
        return XG_ERROR;
    }
    if (strcmp(u, "ms") == 0) {
        mult = 1;
    } else if (strcmp(u, "s") == 0) {
        mult = 1000;
    } else if (strcmp(u, "m") == 0) {
        mult = 60 * 1000;
    } else if (strcmp(u, "h") == 0) {
        mult = 3600 * 1000;
    } else if (strcmp(u, "d") == 0) {
        mult = 24 * 3600 * 1000;
    } else {
        return XG_ERROR;
    }
    if (n > UINT64_MAX / mult / 1000) {
        return XG_ERROR;
    }
    *ms = n * mult;
    return XG_OK;
}

int
xg_conf_parse_size(const char *s, uint64_t *bytes)
{
    uint64_t n, mult;
    const char *u;

    if (split_number(s, &n, &u) != XG_OK) {
        return XG_ERROR;
    }
    if (*u == '\0') {
        mult = 1;
    } else if (strcmp(u, "k") == 0 || strcmp(u, "K") == 0) {
        mult = 1024;
    } else if (strcmp(u, "m") == 0 || strcmp(u, "M") == 0) {
        mult = 1024 * 1024;
    } else if (strcmp(u, "g") == 0 || strcmp(u, "G") == 0) {
        mult = 1024 * 1024 * 1024;
    } else {
        return XG_ERROR;
    }
    if (n > UINT64_MAX / mult) {
        return XG_ERROR;
    }
    *bytes = n * mult;
    return XG_OK;
}

int
xg_conf_parse_flag(const char *s, int *on)
{
    if (strcmp(s, "on") == 0) {
        *on = 1;
        return XG_OK;
    }
    if (strcmp(s, "off") == 0) {
        *on = 0;
        return XG_OK;
    }
    return XG_ERROR;
}

static int
parse_port(const char *s, uint16_t *port)
{
    uint64_t v;

    if (xg_conf_parse_uint(s, &v) != XG_OK || v == 0 || v > 65535) {
        return XG_ERROR;
    }
    *port = (uint16_t) v;
    return XG_OK;
}

static int
valid_host(const char *h, size_t len)
{
    size_t i;

    if (len == 0 || len >= sizeof(((struct xg_addr *) 0)->host)) {
        return 0;
    }
    for (i = 0; i < len; i++) {
        unsigned char c = (unsigned char) h[i];

        if (!(isalnum(c) || c == '.' || c == '-' || c == '_')) {
            return 0;
        }
    }
    return 1;
}

int
xg_conf_parse_addr(const char *s, struct xg_addr *a)
{
    const char *colon, *close;
    unsigned char buf[16];
    size_t hl;

    memset(a, 0, sizeof(*a));
    if (s[0] == '[') {
        close = strchr(s, ']');
        if (close == NULL || close[1] != ':') {
            return XG_ERROR;
        }
        hl = (size_t) (close - s - 1);
        if (hl == 0 || hl >= sizeof(a->host)) {
            return XG_ERROR;
        }
        memcpy(a->host, s + 1, hl);
        a->host[hl] = '\0';
        if (inet_pton(AF_INET6, a->host, buf) != 1) {
            return XG_ERROR;
        }
        return parse_port(close + 2, &a->port);
    }
    colon = strrchr(s, ':');
    if (colon == NULL || strchr(s, ':') != colon) {
        return XG_ERROR;
    }
    hl = (size_t) (colon - s);
    if (!valid_host(s, hl)) {
        return XG_ERROR;
    }
    memcpy(a->host, s, hl);
    a->host[hl] = '\0';
    return parse_port(colon + 1, &a->port);
}

int
xg_addr_is_loopback(const struct xg_addr *a)
{
    struct in_addr v4;
    struct in6_addr v6;

    if (strcmp(a->host, "localhost") == 0) {
        return 1;
    }
    if (inet_pton(AF_INET, a->host, &v4) == 1) {
        return (ntohl(v4.s_addr) >> 24) == 127;
    }
    if (inet_pton(AF_INET6, a->host, &v6) == 1) {
        return IN6_IS_ADDR_LOOPBACK(&v6);
    }
    return 0;
}

int
xg_conf_parse_url(const char *s, struct xg_url *u)
{
    const char *p, *host, *host_end, *port = NULL, *path;
    unsigned char buf[16];
    size_t hl;

    memset(u, 0, sizeof(*u));
    if (strncmp(s, "ws://", 5) == 0) {
        p = s + 5;
        u->port = 80;
    } else if (strncmp(s, "wss://", 6) == 0) {
        p = s + 6;
        u->tls = 1;
        u->port = 443;
    } else {
        return XG_ERROR;
    }
    path = p + strcspn(p, "/?#");
    if (*path == '#') {
        return XG_ERROR;
    }
    if (p[0] == '[') {
        host = p + 1;
        host_end = memchr(p, ']', (size_t) (path - p));
        if (host_end == NULL) {
            return XG_ERROR;
        }
        if (host_end + 1 < path) {
            if (host_end[1] != ':') {
                return XG_ERROR;
            }
            port = host_end + 2;
        }
        hl = (size_t) (host_end - host);
        if (hl == 0 || hl >= sizeof(u->host)) {
            return XG_ERROR;
        }
        memcpy(u->host, host, hl);
        u->host[hl] = '\0';
        if (inet_pton(AF_INET6, u->host, buf) != 1) {
            return XG_ERROR;
        }
    } else {
        host = p;
        host_end = memchr(p, ':', (size_t) (path - p));
        if (host_end != NULL) {
            port = host_end + 1;
        } else {
            host_end = path;
        }
        hl = (size_t) (host_end - host);
        if (!valid_host(host, hl)) {
            return XG_ERROR;
        }
        memcpy(u->host, host, hl);
        u->host[hl] = '\0';
    }
    if (port != NULL) {
        char pb[8];
        size_t pl = (size_t) (path - port);

        if (pl == 0 || pl >= sizeof(pb)) {
            return XG_ERROR;
        }
        memcpy(pb, port, pl);
        pb[pl] = '\0';
        if (parse_port(pb, &u->port) != XG_OK) {
            return XG_ERROR;
        }
    }
    if (*path == '\0') {
        strcpy(u->path, "/");
    } else {
        size_t i, pl = strlen(path);

        if (pl >= sizeof(u->path)) {
            return XG_ERROR;
        }
        for (i = 0; i < pl; i++) {
            unsigned char c = (unsigned char) path[i];

            if (c <= 0x20 || c >= 0x7f || c == '#') {
                return XG_ERROR;
            }
        }
        if (path[0] == '?') {
            u->path[0] = '/';
            memcpy(u->path + 1, path, pl + 1);
        } else {
            memcpy(u->path, path, pl + 1);
        }
    }
    return XG_OK;
}

/* A secret is a key or a token: anything longer is the wrong file. */
#define XG_CONF_SECRET_MAX 4096

static char *conf_secret_read(struct xg_conf *cf,
    const struct xg_conf_stmt *st, const char *spec);

/*
 * Resolves SPEC and, inside an upstream block, folds the value into the
 * upstream's secrets digest: a reload compares digests, never values.
 */
char *
xg_conf_secret(struct xg_conf *cf, const struct xg_conf_stmt *st,
    const char *spec)
{
    struct xg_upstream_conf *uc = cf->upstream;
    char *v = conf_secret_read(cf, st, spec);
    EVP_MD_CTX *md;

    if (v == NULL || uc == NULL || cf->secrets_apart) {
        return v;
    }
    md = EVP_MD_CTX_new();
    if (md != NULL && EVP_DigestInit_ex(md, EVP_sha256(), NULL) == 1
        && EVP_DigestUpdate(md, uc->secrets_digest,
            sizeof(uc->secrets_digest)) == 1
        && EVP_DigestUpdate(md, spec, strlen(spec) + 1) == 1
        && EVP_DigestUpdate(md, v, strlen(v)) == 1
        && EVP_DigestFinal_ex(md, uc->secrets_digest, NULL) == 1)
    {
        uc->nsecrets++;
    } else {
        /* out of memory in OpenSSL: a reload sees no change of secrets */
        xg_conf_warn(cf, st, "secret: cannot digest it for reloads");
    }
    EVP_MD_CTX_free(md);
    return v;
}

static char *
conf_secret_read(struct xg_conf *cf, const struct xg_conf_stmt *st,
    const char *spec)
{
    char path[PATH_MAX];
    const char *v, *dir_end;
    struct stat sb;
    char *buf;
    size_t len;
    FILE *fp;
    int fd;

    if (strncmp(spec, "env:", 4) == 0) {
        if (spec[4] == '\0') {
            xg_conf_error(cf, st, "secret \"env:\" names no variable");
            return NULL;
        }
        v = cf->no_secrets ? "-" : getenv(spec + 4);
        if (v == NULL || *v == '\0') {
            xg_conf_error(cf, st, "secret: environment variable \"%s\" is "
                "not set", spec + 4);
            return NULL;
        }
        return xg_strdup(v);
    }
    if (strncmp(spec, "file:", 5) == 0) {
        if (spec[5] == '\0') {
            xg_conf_error(cf, st, "secret \"file:\" names no file");
            return NULL;
        }
        if (spec[5] == '/') {
            snprintf(path, sizeof(path), "%s", spec + 5);
        } else {
            dir_end = strrchr(st->file, '/');
            if (dir_end != NULL) {
                snprintf(path, sizeof(path), "%.*s/%s",
                    (int) (dir_end - st->file), st->file, spec + 5);
            } else {
                snprintf(path, sizeof(path), "%s", spec + 5);
            }
        }
        if (cf->no_secrets) {
            return xg_strdup("-");
        }
        /*
         * O_NONBLOCK: a FIFO (or a device) must not hang the start or a
         * SIGHUP reload waiting for a writer; only regular files count.
         */
        fd = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC);
        if (fd < 0) {
            xg_conf_error(cf, st, "secret file \"%s\": %s", path,
                strerror(errno));
            return NULL;
        }
        if (fstat(fd, &sb) != 0 || !S_ISREG(sb.st_mode)) {
            close(fd);
            xg_conf_error(cf, st, "secret file \"%s\" is not a regular file",
                path);
            return NULL;
        }
        fp = fdopen(fd, "r");
        if (fp == NULL) {
            close(fd);
            xg_conf_error(cf, st, "secret file \"%s\": %s", path,
                strerror(errno));
            return NULL;
        }
        if (sb.st_mode & 077) {
            xg_conf_warn(cf, st, "secret file \"%s\" is readable by group "
                "or others (mode %03o); chmod 600 it", path,
                (unsigned) (sb.st_mode & 0777));
        }
        /* One byte more than allowed, to tell a cut secret from a whole. */
        buf = xg_malloc(XG_CONF_SECRET_MAX + 2);
        len = fread(buf, 1, XG_CONF_SECRET_MAX + 1, fp);
        fclose(fp);
        if (len > XG_CONF_SECRET_MAX) {
            free(buf);
            xg_conf_error(cf, st, "secret file \"%s\" is larger than %d "
                "bytes", path, XG_CONF_SECRET_MAX);
            return NULL;
        }
        buf[len] = '\0';
        while (len > 0 && (buf[len - 1] == '\n' || buf[len - 1] == '\r'
            || buf[len - 1] == ' ' || buf[len - 1] == '\t'))
        {
            buf[--len] = '\0';
        }
        if (len == 0) {
            free(buf);
            xg_conf_error(cf, st, "secret file \"%s\" is empty", path);
            return NULL;
        }
        if (strlen(buf) != len) {
            free(buf);
            xg_conf_error(cf, st, "secret file \"%s\" contains a NUL byte",
                path);
            return NULL;
        }
        return buf;
    }
    xg_conf_error(cf, st, "a secret must be \"env:NAME\" or \"file:PATH\", "
        "not a literal value");
    return NULL;
}

/* ---- generic setters ------------------------------------------------------ */

static int
check_bounds(struct xg_conf *cf, const struct xg_conf_stmt *st,
    const struct xg_command *cmd, uint64_t v, const char *shown)
{
    const struct xg_conf_bounds *b = cmd->post;

    if (b != NULL && (v < b->min || v > b->max)) {
        return xg_conf_error(cf, st, "\"%s\": %s is out of range",
            cmd->name, shown);
    }
    return XG_OK;
}

int
xg_conf_set_flag(struct xg_conf *cf, const struct xg_conf_stmt *st,
    const struct xg_command *cmd, void *conf)
{
    int *p = (int *) ((char *) conf + cmd->offset);

    if (xg_conf_parse_flag(st->args[1], p) != XG_OK) {
        return xg_conf_error(cf, st, "\"%s\" must be \"on\" or \"off\", not "
            "\"%s\"", cmd->name, st->args[1]);
    }
    return XG_OK;
}

int
xg_conf_set_str(struct xg_conf *cf, const struct xg_conf_stmt *st,
    const struct xg_command *cmd, void *conf)
{
    char **p = (char **) ((char *) conf + cmd->offset);

    free(*p);
    *p = xg_strdup(st->args[1]);
    return XG_OK;
}

int
xg_conf_set_uint(struct xg_conf *cf, const struct xg_conf_stmt *st,
    const struct xg_command *cmd, void *conf)
{
    unsigned *p = (unsigned *) ((char *) conf + cmd->offset);
    uint64_t v;

    if (xg_conf_parse_uint(st->args[1], &v) != XG_OK || v > UINT32_MAX) {
        return xg_conf_error(cf, st, "\"%s\": \"%s\" is not a number",
            cmd->name, st->args[1]);
    }
    if (check_bounds(cf, st, cmd, v, st->args[1]) != XG_OK) {
        return XG_ERROR;
    }
    *p = (unsigned) v;
    return XG_OK;
}

int
xg_conf_set_duration(struct xg_conf *cf, const struct xg_conf_stmt *st,
    const struct xg_command *cmd, void *conf)
{
    uint64_t *p = (uint64_t *) ((char *) conf + cmd->offset);
    uint64_t v;

    if (xg_conf_parse_duration(st->args[1], &v) != XG_OK) {
        return xg_conf_error(cf, st, "\"%s\": bad duration \"%s\" (a number "
            "with a unit: ms, s, m, h, d)", cmd->name, st->args[1]);
    }
    if (check_bounds(cf, st, cmd, v, st->args[1]) != XG_OK) {
        return XG_ERROR;
    }
    *p = v;
    return XG_OK;
}

int
xg_conf_set_size(struct xg_conf *cf, const struct xg_conf_stmt *st,
    const struct xg_command *cmd, void *conf)
{
    size_t *p = (size_t *) ((char *) conf + cmd->offset);
    uint64_t v;

    if (xg_conf_parse_size(st->args[1], &v) != XG_OK) {
        return xg_conf_error(cf, st, "\"%s\": bad size \"%s\" (bytes, or a "
            "number with k, m or g)", cmd->name, st->args[1]);
    }
    if (check_bounds(cf, st, cmd, v, st->args[1]) != XG_OK) {
        return XG_ERROR;
    }
    *p = (size_t) v;
    return XG_OK;
}

int
xg_conf_set_secret(struct xg_conf *cf, const struct xg_conf_stmt *st,
    const struct xg_command *cmd, void *conf)
{
    char **p = (char **) ((char *) conf + cmd->offset);
    char *v;

    v = xg_conf_secret(cf, st, st->args[1]);
    if (v == NULL) {
        return XG_ERROR;
    }
    free(*p);
    *p = v;
    return XG_OK;
}

/* ---- load ----------------------------------------------------------------- */

/* Defined in xg_conf_core.c: builds the main conf from the tree. */
int xg_conf_core_build(struct xg_conf *cf);
void xg_conf_core_free(struct xg_main_conf *mc);

static struct xg_main_conf *
conf_finish(struct xg_conf *cf, struct stmt_list *root, char **errors)
{
    struct xg_main_conf *mc = cf->main;

    mc->root = root->v;
    mc->nroot = root->n;
    /* Dispatch even after syntax errors, to report every error at once. */
    xg_conf_core_build(cf);
    if (errors != NULL) {
        *errors = cf->errors;
    } else {
        free(cf->errors);
    }
    if (cf->nerrors > 0) {
        xg_conf_free(mc);
        return NULL;
    }
    return mc;
}

static struct xg_main_conf *
conf_load(const char *path, int no_secrets, char **errors)
{
    struct stmt_list root = { 0 };
    struct xg_conf cf;

    memset(&cf, 0, sizeof(cf));
    cf.no_secrets = no_secrets;
    cf.main = xg_calloc(1, sizeof(*cf.main));
    cf.main->refs = 1;
    cf.main->path = xg_strdup(path);
    parse_file(&cf, path, 0, NULL, &root);
    return conf_finish(&cf, &root, errors);
}

struct xg_main_conf *
xg_conf_load(const char *path, char **errors)
{
    return conf_load(path, 0, errors);
}

struct xg_main_conf *
xg_conf_load_unsealed(const char *path, char **errors)
{
    return conf_load(path, 1, errors);
}

struct xg_main_conf *
xg_conf_load_string(const char *name, const char *text, char **errors)
{
    return xg_conf_load_mem(name, text, strlen(text), errors);
}

struct xg_main_conf *
xg_conf_load_mem(const char *name, const char *text, size_t len,
    char **errors)
{
    struct stmt_list root = { 0 };
    struct xg_conf cf;

    memset(&cf, 0, sizeof(cf));
    cf.main = xg_calloc(1, sizeof(*cf.main));
    cf.main->refs = 1;
    cf.main->path = xg_strdup(name);
    parse_text(&cf, name, text, len, &root);
    return conf_finish(&cf, &root, errors);
}

struct xg_main_conf *
xg_conf_ref(struct xg_main_conf *mc)
{
    mc->refs++;
    return mc;
}

void
xg_conf_free(struct xg_main_conf *mc)
{
    int i;

    if (mc == NULL) {
        return;
    }
    if (mc->refs > 1) {
        mc->refs--;
        return;
    }
    xg_conf_core_free(mc);
    for (i = 0; i < mc->nroot; i++) {
        stmt_free_contents(&mc->root[i]);
    }
    free(mc->root);
    for (i = 0; i < mc->nfiles; i++) {
        free(mc->files[i]);
    }
    free(mc->files);
    free(mc->path);
    free(mc);
}
