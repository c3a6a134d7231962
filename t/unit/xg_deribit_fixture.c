/*
 * xg_deribit_fixture.c: the fake exchange, the clients and the loop of
 * check_xg_deribit.c (see xg_deribit_fixture.h). The only file of the
 * suite that calls exgate's own functions.
 */
#include "xg_core.h"
#include "xg_client.h"
#include "xg_conf.h"
#include "xg_jscan.h"
#include "xg_listen.h"
#include "xg_log.h"
#include "xg_upstream.h"
#include "xg_venue.h"
#include "xg_ws.h"

#include "xg_deribit_fixture.h"

#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/listener.h>

#define FX_MAX_CONNS 32

static struct event_base *base;
static struct xg_fanout *fo;    /* the loop's, as exgate.c makes it */
static struct xg_upstream_set *ups;
static struct xg_listen_set *ls;
static struct event *wake;
static struct xg_main_conf *mc;
static json_t *kept;            /* every json handed out, freed at teardown */
static char at[160];            /* "file:line: " of the waiting test line */

void
fx_at(const char *file, int line)
{
    const char *b = strrchr(file, '/');

    snprintf(at, sizeof(at), "%s:%d: ", b ? b + 1 : file, line);
}

/* ---- the exchange ---- */

struct ex_frame {
    int     conn;
    json_t *j;
};

static struct {
    struct evconnlistener *lst;
    uint16_t               port;
    struct xg_ws          *ws[FX_MAX_CONNS + 1];   /* 1-based */
    int                    open[FX_MAX_CONNS + 1];
    int                    n;
    struct ex_frame       *frames;
    size_t                 nframes, cap, next;
    struct xg_ws_opts      opts;
} ex;

static json_t *
keep(json_t *j)
{
    if (j != NULL) {
        json_array_append_new(kept, j);
    }
    return j;
}

static void
ex_on_open(struct xg_ws *ws, void *arg)
{
    ex.open[(intptr_t) arg] = 1;
}

static void
ex_on_message(struct xg_ws *ws, int binary, const unsigned char *data,
    size_t len, void *arg)
{
    json_error_t err;
    json_t *j = json_loadb((const char *) data, len, 0, &err);

    ck_assert_msg(j != NULL && json_is_object(j), "exgate sent upstream a "
        "frame that is not a JSON object: %.*s", (int) len, data);
    if (ex.nframes == ex.cap) {
        ex.cap = ex.cap ? ex.cap * 2 : 64;
        ex.frames = xg_realloc(ex.frames, ex.cap * sizeof(*ex.frames));
    }
    ex.frames[ex.nframes].conn = (int) (intptr_t) arg;
    ex.frames[ex.nframes].j = keep(j);
    ex.nframes++;
}

static void
ex_on_down(struct xg_ws *ws, const struct xg_ws_down *why, void *arg)
{
    int i = (int) (intptr_t) arg;

    ex.ws[i] = NULL;
    ex.open[i] = 0;
    xg_ws_free(ws);
}

static const struct xg_ws_cbs ex_cbs = {
    NULL, ex_on_open, ex_on_message, ex_on_down, NULL
};

static int
ex_check(struct xg_ws *ws, const char *path, void *arg)
{
    return strcmp(path, "/ws/api/v2") == 0 ? 0 : 404;
}

static void
ex_accept(struct evconnlistener *l, evutil_socket_t fd, struct sockaddr *sa,
    int slen, void *arg)
{
    ck_assert_int_lt(ex.n, FX_MAX_CONNS);
    ex.n++;
    ex.ws[ex.n] = xg_ws_accept(base, fd, NULL, &ex.opts, ex_check, &ex_cbs,
        (void *) (intptr_t) ex.n);
}

int
ex_nconns(void)
{
    return ex.n;
}

static int
conn_open(const void *arg)
{
    int n = *(const int *) arg;

    return ex.n >= n && ex.open[n];
}

void
ex_wait_conn_(int n)
{
    ck_assert_msg(loop_until(conn_open, &n, FX_WAIT_MS),
        "%sexchange connection %d did not open (%d so far)", at, n, ex.n);
}

static int
have_frame(const void *arg)
{
    return ex.next < ex.nframes;
}

json_t *
ex_next(unsigned ms, int *conn)
{
    struct ex_frame *f;

    if (!loop_until(have_frame, NULL, ms)) {
        return NULL;
    }
    f = &ex.frames[ex.next++];
    if (conn != NULL) {
        *conn = f->conn;
    }
    return f->j;
}

json_t *
ex_expect_(const char *method)
{
    json_t *j = ex_next(FX_WAIT_MS, NULL);
    const char *m;

    ck_assert_msg(j != NULL, "%sexchange: no frame came (wanted %s)", at,
        method);
    m = json_string_value(json_object_get(j, "method"));
    ck_assert_msg(m != NULL && strcmp(m, method) == 0,
        "%sexchange: wanted %s, got %s", at, method, fx_text(j));
    return j;
}

void
ex_quiet_(unsigned ms)
{
    loop_for(ms);
    ck_assert_msg(ex.next == ex.nframes, "%sexchange: unexpected frame %s",
        at, fx_text(ex.frames[ex.next].j));
}

size_t
ex_pending(void)
{
    return ex.nframes - ex.next;
}

static struct xg_ws *
ex_ws_of(json_t *req)
{
    size_t i;

    for (i = 0; i < ex.nframes; i++) {
        if (ex.frames[i].j == req) {
            int c = ex.frames[i].conn;

            ck_assert_msg(ex.ws[c] != NULL && ex.open[c], "exchange: the "
                "connection of %s is gone", fx_text(req));
            return ex.ws[c];
        }
    }
    ck_abort_msg("exchange: %s is not a frame exgate sent", fx_text(req));
    return NULL;
}

static void
ex_send(struct xg_ws *ws, const char *s)
{
    ck_assert_int_eq(xg_ws_send_text(ws, s, strlen(s)), XG_OK);
}

void
ex_answer(json_t *req, const char *result_json)
{
    char *s;
    size_t n = strlen(result_json) + 160;

    s = xg_malloc(n);
    snprintf(s, n, "{\"jsonrpc\":\"2.0\",\"id\":%lld,\"result\":%s,"
        "\"usIn\":1700000000000000,\"usOut\":1700000000000100,"
        "\"usDiff\":100,\"testnet\":false}", fx_int(req, "id"), result_json);
    ex_send(ex_ws_of(req), s);
    free(s);
}

void
ex_error(json_t *req, int code, const char *message)
{
    char s[512];

    snprintf(s, sizeof(s), "{\"jsonrpc\":\"2.0\",\"id\":%lld,\"error\":"
        "{\"code\":%d,\"message\":\"%s\"},\"usIn\":1700000000000000,"
        "\"usOut\":1700000000000100,\"usDiff\":100,\"testnet\":false}",
        fx_int(req, "id"), code, message);
    ex_send(ex_ws_of(req), s);
}

void
ex_push(const char *text)
{
    ck_assert_msg(ex.n > 0 && ex.ws[ex.n] != NULL && ex.open[ex.n],
        "exchange: no open connection to push on");
    ex_send(ex.ws[ex.n], text);
}

void
ex_pushf(const char *fmt, ...)
{
    va_list ap;
    char *s = NULL;

    va_start(ap, fmt);
    ck_assert_int_ge(vasprintf(&s, fmt, ap), 0);
    va_end(ap);
    ex_push(s);
    free(s);
}

void
ex_push_on(int conn, const char *text)
{
    ck_assert_msg(conn >= 1 && conn <= ex.n && ex.ws[conn] != NULL
        && ex.open[conn], "%sexchange: connection %d is not open", at, conn);
    ex_send(ex.ws[conn], text);
}

void
ex_pushf_on(int conn, const char *fmt, ...)
{
    va_list ap;
    char *s = NULL;

    va_start(ap, fmt);
    ck_assert_int_ge(vasprintf(&s, fmt, ap), 0);
    va_end(ap);
    ex_push_on(conn, s);
    free(s);
}

int
ex_is_open(int conn)
{
    return conn >= 1 && conn <= ex.n && ex.ws[conn] != NULL && ex.open[conn];
}

void
ex_drop_on(int conn)
{
    ck_assert_msg(ex_is_open(conn), "exchange: connection %d: nothing to "
        "drop", conn);
    xg_ws_free(ex.ws[conn]);
    ex.ws[conn] = NULL;
    ex.open[conn] = 0;
}

void
fx_rotate(void)
{
    ck_assert_int_eq(xg_upstream_rotate(xg_upstream_find(ups, "x"), "test"),
        XG_OK);
}

json_t *
fx_status(void)
{
    return keep(xg_upstream_status(xg_upstream_find(ups, "x")));
}

void
ex_drop(void)
{
    ck_assert_msg(ex.n > 0 && ex.ws[ex.n] != NULL, "exchange: nothing to "
        "drop");
    xg_ws_free(ex.ws[ex.n]);
    ex.ws[ex.n] = NULL;
    ex.open[ex.n] = 0;
}

int
ex_conn_of(json_t *req)
{
    size_t i;

    for (i = 0; i < ex.nframes; i++) {
        if (ex.frames[i].j == req) {
            return ex.frames[i].conn;
        }
    }
    return 0;
}

json_t *
ex_params(json_t *req)
{
    return json_object_get(req, "params");
}

static int
cmp_str(const void *a, const void *b)
{
    return strcmp(*(const char *const *) a, *(const char *const *) b);
}

int
ex_channels_are(json_t *req, ...)
{
    json_t *arr = json_object_get(ex_params(req), "channels");
    const char *want[512], *got[512];
    size_t nw = 0, ng, i;
    va_list ap;
    const char *s;

    va_start(ap, req);
    while ((s = va_arg(ap, const char *)) != NULL && nw < 512) {
        want[nw++] = s;
    }
    va_end(ap);
    if (!json_is_array(arr) || json_array_size(arr) != nw) {
        return 0;
    }
    ng = json_array_size(arr);
    for (i = 0; i < ng; i++) {
        got[i] = json_string_value(json_array_get(arr, i));
        if (got[i] == NULL) {
            return 0;
        }
    }
    qsort(want, nw, sizeof(*want), cmp_str);
    qsort(got, ng, sizeof(*got), cmp_str);
    for (i = 0; i < nw; i++) {
        if (strcmp(want[i], got[i]) != 0) {
            return 0;
        }
    }
    return 1;
}

/* ---- clients ---- */

struct fx_client {
    char               name[32];
    int                fd;
    struct event      *ev;
    struct evbuffer   *in;
    struct fx_msg    **msgs;            /* each allocated: stable */
    size_t             n, cap;
    int                eof;
    struct fx_client  *next;
};

static struct fx_client *clients;
static uint16_t listen_port;

static void
cl_add(struct fx_client *c, char *line, size_t len)
{
    const char *keys[] = { "id" };
    struct xg_jspan v[1];
    struct fx_msg *m;

    if (c->n == c->cap) {
        c->cap = c->cap ? c->cap * 2 : 32;
        c->msgs = xg_realloc(c->msgs, c->cap * sizeof(*c->msgs));
    }
    m = xg_calloc(1, sizeof(*m));
    m->seq = c->n;
    c->msgs[c->n++] = m;
    m->text = line;
    m->j = json_loadb(line, len, 0, NULL);
    if (m->j == NULL) {
        m->j = json_loadb(line, len, JSON_DECODE_INT_AS_REAL, NULL);
    }
    keep(m->j);
    if (xg_jscan_object(line, len, keys, 1, v) == XG_OK && v[0].p != NULL) {
        m->id = xg_strndup(v[0].p, v[0].len);
    }
}

static void
cl_on_read(evutil_socket_t fd, short what, void *arg)
{
    struct fx_client *c = arg;
    char *line;
    size_t len;
    int r = evbuffer_read(c->in, fd, -1);

    if (r == 0 || (r < 0 && errno != EAGAIN && errno != EINTR)) {
        c->eof = 1;
        event_del(c->ev);
    }
    while ((line = evbuffer_readln(c->in, &len, EVBUFFER_EOL_LF)) != NULL) {
        cl_add(c, line, len);
    }
}

struct fx_client *
cl_connect(const char *name)
{
    struct fx_client *c = xg_calloc(1, sizeof(*c));
    struct sockaddr_in sin;

    snprintf(c->name, sizeof(c->name), "%s", name);
    c->fd = socket(AF_INET, SOCK_STREAM, 0);
    ck_assert_int_ge(c->fd, 0);
    memset(&sin, 0, sizeof(sin));
    sin.sin_family = AF_INET;
    sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    sin.sin_port = htons(listen_port);
    /* loopback: the kernel completes it; exgate accepts on its next turn */
    ck_assert_msg(connect(c->fd, (struct sockaddr *) &sin, sizeof(sin)) == 0,
        "client %s: connect: %s", name, strerror(errno));
    evutil_make_socket_nonblocking(c->fd);
    c->in = evbuffer_new();
    c->ev = event_new(base, c->fd, EV_READ | EV_PERSIST, cl_on_read, c);
    event_add(c->ev, NULL);
    c->next = clients;
    clients = c;
    return c;
}

void
cl_close(struct fx_client *c)
{
    if (c->fd >= 0) {
        event_del(c->ev);
        close(c->fd);
        c->fd = -1;
    }
}

void
cl_send(struct fx_client *c, const char *text)
{
    size_t len = strlen(text) + 1, off = 0;
    char *line = xg_malloc(len + 1);
    uint64_t end = xg_now_ms() + FX_WAIT_MS;

    ck_assert_int_ge(c->fd, 0);
    memcpy(line, text, len - 1);
    line[len - 1] = '\n';
    line[len] = '\0';
    while (off < len) {
        ssize_t w = write(c->fd, line + off, len - off);

        if (w < 0 && (errno == EAGAIN || errno == EINTR)
            && xg_now_ms() < end) {
            loop_for(1);
            continue;
        }
        ck_assert_msg(w > 0, "client %s: write: %s", c->name,
            strerror(errno));
        off += (size_t) w;
    }
    free(line);
}

void
cl_sendf(struct fx_client *c, const char *fmt, ...)
{
    va_list ap;
    char *s = NULL;

    va_start(ap, fmt);
    ck_assert_int_ge(vasprintf(&s, fmt, ap), 0);
    va_end(ap);
    cl_send(c, s);
    free(s);
}

struct cl_find {
    struct fx_client *c;
    fx_pred_fn        pred;
    const void       *arg;
    struct fx_msg    *found;
};

static int
cl_found(const void *arg)
{
    struct cl_find *f = (struct cl_find *) arg;
    size_t i;

    for (i = 0; i < f->c->n; i++) {
        struct fx_msg *m = f->c->msgs[i];

        if (!m->taken && f->pred(m, f->arg)) {
            f->found = m;
            return 1;
        }
    }
    return 0;
}

const struct fx_msg *
cl_expect_(struct fx_client *c, fx_pred_fn pred, const void *arg)
{
    struct cl_find f = { c, pred, arg, NULL };

    ck_assert_msg(loop_until(cl_found, &f, FX_WAIT_MS),
        "%sclient %s: the expected message did not come; untaken: %s",
        at, c->name, cl_dump(c));
    f.found->taken = 1;
    return f.found;
}

json_t *
cl_answer_(struct fx_client *c, const char *id)
{
    return cl_expect_(c, fx_is_answer, id)->j;
}

json_t *
cl_note_(struct fx_client *c, const char *channel)
{
    return cl_expect_(c, fx_is_note, channel)->j;
}

size_t
cl_count(struct fx_client *c, fx_pred_fn pred, const void *arg)
{
    size_t i, n = 0;

    for (i = 0; i < c->n; i++) {
        n += pred(c->msgs[i], arg) != 0;
    }
    return n;
}

size_t
cl_untaken(struct fx_client *c)
{
    size_t i, n = 0;

    for (i = 0; i < c->n; i++) {
        n += !c->msgs[i]->taken;
    }
    return n;
}

void
cl_quiet_(struct fx_client *c, unsigned ms)
{
    loop_for(ms);
    ck_assert_msg(cl_untaken(c) == 0, "%sclient %s: unexpected messages %s",
        at, c->name, cl_dump(c));
}

const char *
cl_dump(struct fx_client *c)
{
    static char buf[4096];
    size_t i, off = 0;

    buf[0] = '\0';
    for (i = 0; i < c->n && off < sizeof(buf) - 1; i++) {
        if (!c->msgs[i]->taken) {
            off += (size_t) snprintf(buf + off, sizeof(buf) - off, "%s\n",
                c->msgs[i]->text);
        }
    }
    return off == 0 ? "(none)" : buf;
}

int
fx_is_answer(const struct fx_msg *m, const void *id)
{
    return m->id != NULL && strcmp(m->id, id) == 0;
}

int
fx_is_note(const struct fx_msg *m, const void *channel)
{
    const char *ch = fx_str(m->j, "params.channel");

    return fx_str(m->j, "method") != NULL
           && strcmp(fx_str(m->j, "method"), "subscription") == 0
           && ch != NULL && strcmp(ch, channel) == 0;
}

int
fx_is_method(const struct fx_msg *m, const void *method)
{
    const char *s = fx_str(m->j, "method");

    return s != NULL && strcmp(s, method) == 0;
}

int
fx_any(const struct fx_msg *m, const void *unused)
{
    return 1;
}

/* ---- JSON helpers ---- */

json_t *
fx_json(const char *text)
{
    json_error_t err;
    json_t *j = json_loads(text, JSON_DECODE_ANY, &err);

    ck_assert_msg(j != NULL, "bad JSON in the test: %s: %s", err.text, text);
    return keep(j);
}

json_t *
fx_get(json_t *j, const char *path)
{
    char key[128];
    const char *p = path, *dot;

    while (j != NULL && *p != '\0') {
        dot = strchr(p, '.');
        if (dot == NULL) {
            dot = p + strlen(p);
        }
        snprintf(key, sizeof(key), "%.*s", (int) (dot - p), p);
        j = json_object_get(j, key);
        p = *dot == '.' ? dot + 1 : dot;
    }
    return j;
}

long long
fx_int(json_t *j, const char *path)
{
    json_t *v = fx_get(j, path);

    ck_assert_msg(json_is_number(v), "%s: no number in %s", path,
        fx_text(j));
    return json_is_integer(v) ? (long long) json_integer_value(v)
                              : (long long) json_real_value(v);
}

const char *
fx_str(json_t *j, const char *path)
{
    return json_string_value(fx_get(j, path));
}

const char *
fx_text(json_t *j)
{
    char *s;

    if (j == NULL) {
        return "(null)";
    }
    s = json_dumps(j, JSON_COMPACT | JSON_ENCODE_ANY);
    keep(json_string(s ? s : "?"));
    free(s);
    return json_string_value(json_array_get(kept,
        json_array_size(kept) - 1));
}

uint64_t
fx_now_ms(void)
{
    return xg_now_ms();
}

long long
fx_wall_ms(void)
{
    return (long long) (xg_wall_us() / 1000);
}

/* ---- the loop ---- */

static void
loop_wake(evutil_socket_t fd, short what, void *arg)
{
}

int
loop_until(fx_cond_fn cond, const void *arg, unsigned ms)
{
    uint64_t end = xg_now_ms() + ms;

    while (!cond(arg) && xg_now_ms() < end) {
        event_base_loop(base, EVLOOP_ONCE);
    }
    return cond(arg);
}

void
loop_for(unsigned ms)
{
    uint64_t end = xg_now_ms() + ms;

    while (xg_now_ms() < end) {
        event_base_loop(base, EVLOOP_ONCE);
    }
}

/* ---- life cycle ---- */

void
fx_setup(void)
{
    struct sockaddr_in sin;
    socklen_t sl = sizeof(sin);
    struct timeval tv = { 0, 2000 };
    const char *lv = getenv("XG_TEST_LOG");

    signal(SIGPIPE, SIG_IGN);
    xg_log_level = lv != NULL ? xg_log_level_parse(lv) : XG_LOG_ERROR;
    setenv("XG_TEST_DR_SECRET", "exchange-secret", 1);
    memset(&ex, 0, sizeof(ex));
    clients = NULL;
    mc = NULL;
    kept = json_array();
    base = event_base_new();
    fo = xg_client_fanout_new(base);
    ck_assert_ptr_nonnull(fo);
    memset(&sin, 0, sizeof(sin));
    sin.sin_family = AF_INET;
    sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ex.lst = evconnlistener_new_bind(base, ex_accept, NULL,
        LEV_OPT_CLOSE_ON_FREE | LEV_OPT_REUSEABLE, 16,
        (struct sockaddr *) &sin, sizeof(sin));
    ck_assert_ptr_nonnull(ex.lst);
    getsockname(evconnlistener_get_fd(ex.lst), (struct sockaddr *) &sin, &sl);
    ex.port = ntohs(sin.sin_port);
    ex.opts.max_message = 1 << 24;
    ex.opts.handshake_timeout_ms = 2000;
    ex.opts.close_timeout_ms = 500;
    wake = event_new(base, -1, EV_PERSIST, loop_wake, NULL);
    event_add(wake, &tv);
}

void
fx_teardown(void)
{
    struct fx_client *c, *nx;
    size_t i;
    int k;

    xg_listen_free_all(ls);
    ls = NULL;
    xg_client_fanout_free(fo);
    fo = NULL;
    xg_upstream_free_all(ups);
    ups = NULL;
    for (c = clients; c != NULL; c = nx) {
        nx = c->next;
        cl_close(c);
        event_free(c->ev);
        evbuffer_free(c->in);
        for (i = 0; i < c->n; i++) {
            free(c->msgs[i]->text);
            free(c->msgs[i]->id);
            free(c->msgs[i]);
        }
        free(c->msgs);
        free(c);
    }
    clients = NULL;
    for (k = 1; k <= ex.n; k++) {
        xg_ws_free(ex.ws[k]);
    }
    evconnlistener_free(ex.lst);
    event_free(wake);
    event_base_loop(base, EVLOOP_NONBLOCK);
    event_base_free(base);
    free(ex.frames);
    xg_conf_free(mc);
    json_decref(kept);
}

void
fx_start(const char *upstream_body, const char *main_body)
{
    struct sockaddr_in sin;
    socklen_t sl = sizeof(sin);
    char *text = NULL, *errors = NULL;
    int one = 1, hold;

    /*
     * A free port for the listener, held (bound, not listening, with
     * SO_REUSEADDR as libevent's listener sets it) until the listener
     * has it, so that nothing else takes it meanwhile.
     */
    hold = socket(AF_INET, SOCK_STREAM, 0);
    ck_assert_int_ge(hold, 0);
    setsockopt(hold, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    memset(&sin, 0, sizeof(sin));
    sin.sin_family = AF_INET;
    sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ck_assert_int_eq(bind(hold, (struct sockaddr *) &sin, sizeof(sin)), 0);
    getsockname(hold, (struct sockaddr *) &sin, &sl);
    listen_port = ntohs(sin.sin_port);

    ck_assert_int_ge(asprintf(&text,
        "upstream x {\n"
        "    url ws://127.0.0.1:%u/ws/api/v2;\n"
        "    protocol deribit;\n"
        "    ping 0ms;\n"
        "    reconnect fixed { delay 50ms; }\n"
        "    %s\n"
        "}\n"
        "listen 127.0.0.1:%u tcp upstream=x;\n"
        "%s\n%s\n", ex.port, upstream_body, listen_port,
        strstr(main_body, "client_auth") ? "" : "client_auth off;",
        main_body), 0);
    mc = xg_conf_load_string("check_xg_deribit.conf", text, &errors);
    ck_assert_msg(mc != NULL, "conf: %s\n%s", errors ? errors : "", text);
    free(errors);
    free(text);
    ups = xg_upstream_set_new();
    ck_assert_int_eq(xg_upstream_start_all(ups, base, NULL, mc), XG_OK);
    ls = xg_listen_start_all(base, fo, mc, ups);
    ck_assert_ptr_nonnull(ls);
    close(hold);
}
