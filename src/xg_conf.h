/*
 * xg_conf.h: the nginx-style configuration language.
 *
 * A file is read in two steps. The tokenizer turns it into a tree of
 * statements (a directive's words, its file and line, and its block if it
 * has one); `include` is expanded there, relative to the including file.
 * Then xg_conf_dispatch() walks a block and hands each statement to the
 * directive that owns it. Directives are data: tables of struct
 * xg_command owned by the module that implements them (src/xg_module.c
 * lists the modules), with a context and an arity, like nginx's
 * ngx_command_t. The parser knows no directive but `include`.
 *
 * Errors are collected, not fatal: every error in a file is reported as
 * "FILE:LINE: message" and the load fails at the end if there was any.
 */
#ifndef XG_CONF_H
#define XG_CONF_H

#include "xg_core.h"

#include <stdint.h>
#include <stdio.h>

/* One statement: `name arg...;` or `name arg... { ... }`. */
struct xg_conf_stmt {
    const char           *file;     /* owned by the conf's file list */
    int                   line;
    int                   nargs;    /* args[0] is the directive name */
    char                **args;
    int                   has_block;
    int                   nblock;
    struct xg_conf_stmt  *block;
};

/* Contexts: where a directive may stand. */
#define XG_CONF_MAIN        0x0001
#define XG_CONF_UPSTREAM    0x0002
#define XG_CONF_RECONNECT   0x0004  /* reconnect POLICY { ... } */
#define XG_CONF_BREAKER     0x0008  /* breaker { ... } */
#define XG_CONF_ACCOUNT     0x0010  /* account NAME { ... } */
#define XG_CONF_CTX_MASK    0x00ff

/* Arity: how many arguments after the name. */
#define XG_CONF_NOARGS      0x0100
#define XG_CONF_TAKE1       0x0200
#define XG_CONF_TAKE2       0x0400
#define XG_CONF_TAKE3       0x0800
#define XG_CONF_TAKE12      (XG_CONF_TAKE1 | XG_CONF_TAKE2)
#define XG_CONF_TAKE23      (XG_CONF_TAKE2 | XG_CONF_TAKE3)
#define XG_CONF_TAKE123     (XG_CONF_TAKE1 | XG_CONF_TAKE2 | XG_CONF_TAKE3)
#define XG_CONF_TAKE13      (XG_CONF_TAKE1 | XG_CONF_TAKE3)
#define XG_CONF_1MORE       0x1000  /* one or more */
#define XG_CONF_2MORE       0x2000  /* two or more */
#define XG_CONF_ARGS_MASK   0x3f00

#define XG_CONF_BLOCK       0x10000 /* must have a { } block */
#define XG_CONF_MULTI       0x20000 /* may appear more than once */
#define XG_CONF_OPTBLOCK    0x40000 /* may have a block */

struct xg_conf;
struct xg_command;

typedef int (*xg_conf_set_cb)(struct xg_conf *cf, const struct xg_conf_stmt *st,
    const struct xg_command *cmd, void *conf);

struct xg_command {
    const char      *name;
    unsigned         type;
    xg_conf_set_cb   set;
    size_t           offset;    /* for the generic setters */
    const void      *post;      /* e.g. struct xg_conf_bounds */
};

#define XG_CONF_NULL_COMMAND { NULL, 0, NULL, 0, NULL }

/* Bounds for xg_conf_set_uint/duration/size (post). */
struct xg_conf_bounds {
    uint64_t min;
    uint64_t max;
};

struct xg_conf_dump;

/*
 * A directive table's dump function, for `exgate -T`: writes directive
 * CMD of CONF (the object CMD's setter writes) as conf text through D
 * (xg_conf_dump_*() below), or a comment when it is not set. Returns
 * XG_OK, or XG_AGAIN to let xg_conf_dump_field() write it from cmd->set
 * and cmd->offset. Never writes a secret: only where it comes from.
 */
typedef int (*xg_conf_dump_cb)(struct xg_conf_dump *d,
    const struct xg_command *cmd, const void *conf);

/*
 * A module: a name, the directives it owns, and how to write them back
 * (NULL: every directive has a generic setter).
 */
struct xg_module {
    const char               *name;
    const struct xg_command  *commands;
    xg_conf_dump_cb           dump;
};

extern const struct xg_module *const xg_modules[];

/* An address from the conf: host (no brackets) and port. */
struct xg_addr {
    char     host[256];
    uint16_t port;
};

/* A ws:// or wss:// URL (or, for `protocol edge`, redis://HOST[:PORT]). */
struct xg_url {
    int      tls;
    int      redis;          /* redis://: path "/" */
    char     host[256];
    uint16_t port;
    char     path[1024];     /* with the query, starts with '/' */
};

/* An extra HTTP header sent on the upstream upgrade. */
struct xg_header {
    char *name;
    char *value;
};

/* The breaker wrapped around a reconnect policy. */
struct xg_breaker_conf {
    int       enabled;
    unsigned  failures;
    uint64_t  window_ms;
    uint64_t  open_ms;
};

struct xg_reconnect_policy;
struct xg_publish_conf;

struct xg_upstream_conf {
    char                 *name;
    const char           *file;         /* where it was defined */
    int                   line;
    struct xg_url         url;
    int                   url_set;
    char                 *protocol;     /* "deribit", "raw" */

    /* transport (ws) */
    char                 *tls_ca;
    int                   tls_verify;   /* default on */
    struct xg_header     *headers;
    int                   nheaders;
    size_t                max_message;
    uint64_t              ping_ms;
    uint64_t              ping_timeout_ms;
    uint64_t              idle_timeout_ms;
    uint64_t              connect_timeout_ms;
    uint64_t              handshake_timeout_ms;
    uint64_t              restore_timeout_ms;
    uint64_t              close_timeout_ms;
    uint64_t              max_connection_age_ms;  /* 0: off (no rotation) */

    /* what clients send while the upstream is not ready (every venue) */
    unsigned              queue_limit;
    uint64_t              queue_timeout_ms;       /* 0: no deadline */

    /* reconnect policy (modules/reconnect) */
    const struct xg_reconnect_policy *reconnect;
    void                 *reconnect_conf;
    struct xg_breaker_conf breaker;
    uint64_t              stable_ms;
    unsigned              max_attempts;  /* 0: unlimited */

    /* the REST side (src/xg_rest.h): `rest_url`, `rest_cache` */
    struct xg_url         rest_url;     /* tls: https; path without query */
    int                   rest_url_set;
    uint64_t              rest_cache_ms;  /* exchangeInfo; 0: off */

    /* space for protocol modules (the gateway core) */
    void                 *proto_conf;

    /* `publish redis://...` (src/xg_redis.h), or NULL */
    struct xg_publish_conf *publish;

    /*
     * The conf this block is in (same lifetime): its main-context
     * settings, for a part of the upstream that needs the gateway's
     * (xg_gateway_conf_get(uc->main)).
     */
    const struct xg_main_conf *main;

    /*
     * A digest of every secret read in the block (their values, with
     * where they come from), so that a reload sees a secret file whose
     * content changed although the conf text did not. Never shown.
     */
    unsigned char         secrets_digest[32];
    int                   nsecrets;

    struct xg_upstream_conf *next;
};

enum xg_listen_kind {
    XG_LISTEN_WEBSOCKET = 1,
    XG_LISTEN_TCP,
    XG_LISTEN_HTTP          /* the REST front (src/xg_rest.h) */
};

struct xg_listen_conf {
    const char           *file;
    int                   line;
    struct xg_addr        addr;
    enum xg_listen_kind   kind;
    char                 *upstream_name;
    struct xg_upstream_conf *upstream;   /* resolved after parsing */
    char                 *path;          /* websocket: path= or the protocol's
                                            default_path (xg_venue.h) */
    unsigned              max_clients;
    size_t                sndbuf;        /* SO_SNDBUF of clients, 0: kernel's */
    void                 *gateway_conf;  /* per-listener gateway settings */
    struct xg_listen_conf *next;
};

/* One `admin_origin URL;`: an Origin the admin endpoint accepts. */
struct xg_admin_origin {
    char                 *origin;        /* scheme://host[:port] as written */
    const char           *file;
    int                   line;
};

struct xg_conf_cleanup {
    void                   (*fn)(void *p);
    void                    *p;
    struct xg_conf_cleanup  *next;
};

struct xg_main_conf {
    unsigned              refs;          /* xg_conf_ref(); 1 after a load */
    char                 *path;          /* the file loaded */
    char                 *error_log;     /* "stderr" or a path */
    int                   error_log_level;
    int                   error_log_format;  /* enum xg_log_format */
    const char           *error_log_file;  /* where it was set, or NULL */
    int                   error_log_line;
    int                   allow_remote;
    char                 *pid;           /* pid file (absolute), or NULL */
    struct xg_addr        admin;
    int                   admin_set;
    const char           *admin_file;
    int                   admin_line;
    struct xg_admin_origin *admin_origins;  /* in conf order */
    int                   nadmin_origins;
    struct xg_upstream_conf *upstreams;
    struct xg_listen_conf   *listens;

    /* space for the gateway core's main-context directives */
    void                 *gateway_conf;

    /* run by xg_conf_free(), newest first (module conf memory) */
    struct xg_conf_cleanup *cleanups;

    /* for the tree and file names */
    struct xg_conf_stmt  *root;
    int                   nroot;
    char                **files;
    int                   nfiles;
};

#define XG_CONF_MAX_INCLUDE_DEPTH  16

/* The parse context (one per load). */
struct xg_conf {
    struct xg_main_conf  *main;
    char                 *errors;       /* "FILE:LINE: msg\n"..., malloc'd */
    size_t                errors_len;
    int                   nerrors;
    int                   nwarnings;
    /* the real paths of the files being read, for include loops */
    const char           *reading[XG_CONF_MAX_INCLUDE_DEPTH];
    int                   nreading;
    /* the upstream block being read, whose secrets xg_conf_secret() notes */
    struct xg_upstream_conf *upstream;
    /* set while a block whose secrets its module compares on reload
       itself is read (Deribit's accounts): they stay out of the digest */
    int                      secrets_apart;
    /* 1: env:/file: secrets are not read (each is "-"), see
       xg_conf_load_unsealed() */
    int                   no_secrets;
};

/*
 * Loads and checks the conf at PATH. Returns the conf, or NULL when it
 * has errors; in both cases *ERRORS (caller frees) receives every error
 * and warning line, "FILE:LINE: message\n" each, or NULL when there is none.
 */
struct xg_main_conf *xg_conf_load(const char *path, char **errors);
/*
 * The same, but no env:/file: secret is read (each holds "-"): for
 * `exgate -s`, which needs the pid directive, not the secrets, and may
 * run where they are not set. Never give this conf to anything that runs.
 */
struct xg_main_conf *xg_conf_load_unsealed(const char *path, char **errors);

/* The same for TEXT, as if read from a file named NAME (tests, fuzzing). */
struct xg_main_conf *xg_conf_load_string(const char *name, const char *text,
    char **errors);

struct xg_main_conf *xg_conf_load_mem(const char *name, const char *text,
    size_t len, char **errors);

/*
 * Drops one reference to MC and frees it with the last (NULL is fine). A
 * loaded conf has one; whatever still runs on a conf that a reload
 * replaced (a listener closing its clients, an upstream closing) holds
 * one of its own with xg_conf_ref() until it is done.
 */
void xg_conf_free(struct xg_main_conf *mc);
/* Takes a reference to MC (see xg_conf_free()); returns MC. */
struct xg_main_conf *xg_conf_ref(struct xg_main_conf *mc);

/*
 * Dispatches the statements of one block in context CTX: each is handed
 * to the directive of that name in TABLES (a NULL-terminated list of
 * command tables) whose context includes CTX, with CONF. Checks arity,
 * block presence and duplicates first. Unknown and misplaced directives
 * are reported. Returns the number of errors found.
 */
int xg_conf_dispatch(struct xg_conf *cf, const struct xg_conf_stmt *stmts,
    int n, unsigned ctx, const struct xg_command *const *tables, void *conf);

/* Reports an error at ST's file and line. Always returns XG_ERROR. */
int xg_conf_error(struct xg_conf *cf, const struct xg_conf_stmt *st,
    const char *fmt, ...) __attribute__((format(printf, 3, 4)));
void xg_conf_warn(struct xg_conf *cf, const struct xg_conf_stmt *st,
    const char *fmt, ...) __attribute__((format(printf, 3, 4)));

/* Value parsers: XG_OK or XG_ERROR (no message; callers word it). */
int xg_conf_parse_duration(const char *s, uint64_t *ms);
int xg_conf_parse_size(const char *s, uint64_t *bytes);
int xg_conf_parse_flag(const char *s, int *on);
int xg_conf_parse_uint(const char *s, uint64_t *v);
int xg_conf_parse_addr(const char *s, struct xg_addr *a);
int xg_conf_parse_url(const char *s, struct xg_url *u);
int xg_addr_is_loopback(const struct xg_addr *a);

/*
 * Resolves a secret: "env:NAME" or "file:PATH" (relative to the conf
 * file). Reports unset variables, unreadable files, and warns about
 * group- or world-readable files. Returns a malloc'd string or NULL.
 * Plain values are refused: secrets never stand in a conf file.
 */
char *xg_conf_secret(struct xg_conf *cf, const struct xg_conf_stmt *st,
    const char *spec);

/* Generic setters through cmd->offset (bounds in cmd->post, optional). */
int xg_conf_set_flag(struct xg_conf *cf, const struct xg_conf_stmt *st,
    const struct xg_command *cmd, void *conf);           /* int */
int xg_conf_set_str(struct xg_conf *cf, const struct xg_conf_stmt *st,
    const struct xg_command *cmd, void *conf);           /* char * */
int xg_conf_set_uint(struct xg_conf *cf, const struct xg_conf_stmt *st,
    const struct xg_command *cmd, void *conf);           /* unsigned */
int xg_conf_set_duration(struct xg_conf *cf, const struct xg_conf_stmt *st,
    const struct xg_command *cmd, void *conf);           /* uint64_t ms */
int xg_conf_set_size(struct xg_conf *cf, const struct xg_conf_stmt *st,
    const struct xg_command *cmd, void *conf);           /* size_t */
int xg_conf_set_secret(struct xg_conf *cf, const struct xg_conf_stmt *st,
    const struct xg_command *cmd, void *conf);           /* char * */

/*
 * Registers FN(P) to run when the conf is freed: modules that allocate
 * their own conf structs (proto_conf, reconnect_conf, gateway_conf) free
 * them this way.
 */
void xg_conf_cleanup_add(struct xg_conf *cf, void (*fn)(void *p), void *p);
/*
 * A zeroed object of SIZE bytes that FN frees with the conf (FN NULL:
 * free(3)): the start of every module's create_conf.
 */
void *xg_conf_calloc(struct xg_conf *cf, size_t size, void (*fn)(void *p));

/*
 * The command tables of the modules in xg_modules[] (NULL-terminated), for
 * dispatching a block whose directives may come from any of them (main,
 * upstream). A protocol module's directives are not among them: the
 * upstream block hands those to its own protocol only (xg_venue.h).
 */
const struct xg_command *const *xg_conf_tables(void);

/* ---- exgate -T: the effective configuration as conf text (xg_conf_dump.c) */

/* Where a dump goes, and where it stands in the line and the blocks. */
struct xg_conf_dump {
    FILE    *fp;
    int      depth;     /* open blocks */
    int      nwords;    /* words written on the current line */
};

/*
 * Writes MC as one conf file to FP: every directive of every module in
 * table order, includes expanded, defaults filled in, a comment for what
 * is not set, secrets as their env:NAME or file:PATH only. The text is a
 * valid conf that loads to the same configuration, and dumping it again
 * gives the same text. Returns XG_OK, or XG_ERROR when FP failed.
 */
int xg_conf_dump(FILE *fp, const struct xg_main_conf *mc);

/*
 * Writes the body of UC's `upstream` block: the upstream-context
 * directives of every module in xg_modules[], then those of its protocol
 * module (with uc->proto_conf).
 */
void xg_conf_dump_upstream(struct xg_conf_dump *d,
    const struct xg_upstream_conf *uc);

/*
 * Dumps the directives of TABLE that belong to context CTX, each through
 * CB (may be NULL), then xg_conf_dump_field() when CB returns XG_AGAIN.
 */
void xg_conf_dump_table(struct xg_conf_dump *d, const struct xg_command *table,
    unsigned ctx, xg_conf_dump_cb cb, const void *conf);

/*
 * Dumps CMD's value at cmd->offset in CONF as the generic setter SET
 * (xg_conf_set_flag, _str, _uint, _duration or _size) stores it. A value
 * outside cmd->post's bounds (or a NULL string) is the directive left
 * unset: a comment says so. Returns XG_OK, or XG_AGAIN for another SET.
 */
int xg_conf_dump_field(struct xg_conf_dump *d, const struct xg_command *cmd,
    xg_conf_set_cb set, const void *conf);

/*
 * A line is written word by word: begin(), word()..., then end() (";")
 * or open() (" {", one level deeper; close() ends the block). A word is
 * quoted when the tokenizer needs it. words() writes a whole line
 * (NULL-terminated list), comment() a "# ..." line.
 */
void xg_conf_dump_begin(struct xg_conf_dump *d);
void xg_conf_dump_word(struct xg_conf_dump *d, const char *w);
void xg_conf_dump_kv(struct xg_conf_dump *d, const char *key,
    const char *value);                                 /* word "KEY=VALUE" */
void xg_conf_dump_end(struct xg_conf_dump *d);
void xg_conf_dump_open(struct xg_conf_dump *d);
void xg_conf_dump_close(struct xg_conf_dump *d);
void xg_conf_dump_words(struct xg_conf_dump *d, const char *w, ...)
    __attribute__((sentinel));
void xg_conf_dump_comment(struct xg_conf_dump *d, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* Values as the parsers read them back: "250ms", "30s", "1h"; "16m", "0". */
const char *xg_conf_fmt_duration(uint64_t ms, char *buf, size_t len);
const char *xg_conf_fmt_size(uint64_t bytes, char *buf, size_t len);
/* HOST:PORT, [V6]:PORT */
const char *xg_conf_fmt_addr(const struct xg_addr *a, char *buf, size_t len);
/* ws[s]://HOST[:PORT]/PATH, the port only when not the scheme's own */
const char *xg_conf_fmt_url(const struct xg_url *u, char *buf, size_t len);
/* The same as http[s]:// (rest_url). */
const char *xg_conf_fmt_http_url(const struct xg_url *u, char *buf,
    size_t len);

/*
 * Where the secret SPEC written at ST comes from, for the dump: "env:NAME"
 * as written, "file:PATH" with PATH made absolute (it was relative to the
 * conf file). Returns a malloc'd string; never reads the secret.
 */
char *xg_conf_secret_source(const struct xg_conf_stmt *st, const char *spec);
/* Whether S is a name: letters, digits, "_", "-", "." (upstreams,
   accounts). */
int xg_conf_name_ok(const char *s);

/* PATH made absolute against the working directory (malloc'd). */
char *xg_conf_abs_path(const char *path);

#endif
