/*
 * check_xg_reload.c: the conf diff of a reload (xg_reload_diff()): what
 * each change of a conf does to each upstream and listener, and that
 * nothing unchanged is touched; and xg_reload_apply() on a running
 * upstream whose venue cannot follow a change.
 */
#include "xg_core.h"
#include "xg_conf.h"
#include "xg_log.h"
#include "xg_reload.h"
#include "xg_upstream.h"
#include "xg_venue.h"

#include <event2/event.h>

#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define BASE \
    "client_auth off;\n" \
    "upstream a {\n" \
    "    url ws://127.0.0.1:9000/ws/api/v2;\n" \
    "    protocol deribit;\n" \
    "%s" \
    "}\n" \
    "upstream b {\n" \
    "    url ws://127.0.0.1:9001/x;\n" \
    "    protocol raw;\n" \
    "}\n" \
    "listen 127.0.0.1:9100 websocket upstream=a;\n" \
    "listen 127.0.0.1:9101 tcp upstream=b;\n" \
    "%s"

static struct xg_main_conf *
conf(const char *a_extra, const char *main_extra)
{
    char text[4096], *errs = NULL;
    struct xg_main_conf *mc;

    snprintf(text, sizeof(text), BASE, a_extra, main_extra);
    mc = xg_conf_load_string("t.conf", text, &errs);
    ck_assert_msg(mc != NULL, "conf: %s", errs ? errs : "");
    free(errs);
    return mc;
}

static struct xg_main_conf *
conf_text(const char *text)
{
    char *errs = NULL;
    struct xg_main_conf *mc = xg_conf_load_string("t.conf", text, &errs);

    ck_assert_msg(mc != NULL, "conf: %s", errs ? errs : "");
    free(errs);
    return mc;
}

/* The item of upstream NAME in PLAN. */
static const struct xg_reload_item *
up_item(const struct xg_reload_plan *p, const char *name)
{
    const struct xg_upstream_conf *uc;
    size_t i;

    for (i = 0; i < p->nups; i++) {
        uc = p->ups[i].old != NULL ? p->ups[i].old : p->ups[i].new;
        if (strcmp(uc->name, name) == 0) {
            return &p->ups[i];
        }
    }
    ck_abort_msg("no upstream %s in the plan", name);
    return NULL;
}

/* The item of the listener on PORT in PLAN. */
static const struct xg_reload_item *
listen_item(const struct xg_reload_plan *p, unsigned port)
{
    const struct xg_listen_conf *lc;
    size_t i;

    for (i = 0; i < p->nlistens; i++) {
        lc = p->listens[i].old != NULL ? p->listens[i].old
             : p->listens[i].new;
        if (lc->addr.port == port) {
            return &p->listens[i];
        }
    }
    ck_abort_msg("no listener on %u in the plan", port);
    return NULL;
}

/* Diffs A against B (freeing both); checks upstream a's op and list. */
static void
expect_a(const char *a1, const char *a2, enum xg_reload_op op,
    const char *changed)
{
    struct xg_main_conf *x = conf(a1, ""), *y = conf(a2, "");
    struct xg_reload_plan p;
    const struct xg_reload_item *it;

    xg_reload_diff(x, y, &p);
    it = up_item(&p, "a");
    ck_assert_msg(it->op == op, "\"%s\" -> \"%s\": op %s, not %s (%s)", a1,
        a2, xg_reload_op_name(it->op), xg_reload_op_name(op), it->changed);
    ck_assert_str_eq(it->changed, changed);
    ck_assert_int_eq(up_item(&p, "b")->op, XG_RELOAD_KEEP);
    ck_assert_int_eq(listen_item(&p, 9101)->op, XG_RELOAD_KEEP);
    xg_reload_plan_free(&p);
    xg_conf_free(x);
    xg_conf_free(y);
}

START_TEST(t_same)
{
    struct xg_main_conf *x = conf("", ""), *y = conf("", "");
    struct xg_reload_plan p;

    ck_assert_int_eq(xg_reload_diff(x, y, &p), 0);
    ck_assert_int_eq(p.nups, 2);
    ck_assert_int_eq(p.nlistens, 2);
    ck_assert_int_eq(up_item(&p, "a")->op, XG_RELOAD_KEEP);
    ck_assert_str_eq(up_item(&p, "a")->changed, "");
    ck_assert_int_eq(listen_item(&p, 9100)->op, XG_RELOAD_KEEP);
    ck_assert_str_eq(p.main_changed, "");
    ck_assert_int_eq(p.error_log, 0);
    ck_assert_int_eq(p.admin, 0);
    xg_reload_plan_free(&p);
    xg_conf_free(x);
    xg_conf_free(y);
}
END_TEST

START_TEST(t_limits_apply)
{
    expect_a("", "    connect_timeout 3s;\n", XG_RELOAD_APPLY,
        "connect_timeout");
    expect_a("", "    request_timeout 11s;\n    stale book.* 5s;\n",
        XG_RELOAD_APPLY, "request_timeout, stale");
    expect_a("", "    breaker { failures 3; }\n", XG_RELOAD_APPLY,
        "breaker");
    expect_a("", "    reconnect fixed { delay 1s; }\n", XG_RELOAD_APPLY,
        "reconnect");
    expect_a("", "    queue_limit 5;\n    max_connection_age 1h;\n",
        XG_RELOAD_APPLY, "max_connection_age, queue_limit");
}
END_TEST

START_TEST(t_connection_rotates)
{
    expect_a("", "    tls_verify off;\n", XG_RELOAD_ROTATE, "tls_verify");
    expect_a("", "    header X-A b;\n", XG_RELOAD_ROTATE, "header");
    expect_a("    auth client_credentials id env:XG_T_S1;\n",
        "    auth client_credentials id env:XG_T_S2;\n", XG_RELOAD_ROTATE,
        "auth");
    expect_a("", "    heartbeat 20s;\n    request_timeout 12s;\n",
        XG_RELOAD_ROTATE, "heartbeat, request_timeout");
}
END_TEST

START_TEST(t_url_rotates)
{
    struct xg_main_conf *x = conf("", ""), *y;
    struct xg_reload_plan p;
    char text[4096];

    snprintf(text, sizeof(text), BASE, "", "");
    memcpy(strstr(text, ":9000/"), ":9009/", 6);
    y = conf_text(text);
    xg_reload_diff(x, y, &p);
    ck_assert_int_eq(up_item(&p, "a")->op, XG_RELOAD_ROTATE);
    ck_assert_str_eq(up_item(&p, "a")->changed, "url");
    /* its listener stays as it is */
    ck_assert_int_eq(listen_item(&p, 9100)->op, XG_RELOAD_KEEP);
    xg_reload_plan_free(&p);
    xg_conf_free(x);
    xg_conf_free(y);
}
END_TEST

/* The same text, a secret file whose content changed: a rotation. */
START_TEST(t_secret_file_content)
{
    char dir[] = "/tmp/check_xg_reload.XXXXXX", path[300], a[400];
    struct xg_main_conf *x, *y;
    struct xg_reload_plan p;
    FILE *fp;

    ck_assert_ptr_nonnull(mkdtemp(dir));
    snprintf(path, sizeof(path), "%s/secret", dir);
    fp = fopen(path, "w");
    fputs("one\n", fp);
    fclose(fp);
    chmod(path, 0600);
    snprintf(a, sizeof(a), "    auth client_credentials id file:%s;\n",
        path);
    x = conf(a, "");
    y = conf(a, "");
    xg_reload_diff(x, y, &p);
    ck_assert_int_eq(up_item(&p, "a")->op, XG_RELOAD_KEEP);
    xg_reload_plan_free(&p);
    xg_conf_free(y);

    fp = fopen(path, "w");
    fputs("two\n", fp);
    fclose(fp);
    y = conf(a, "");
    xg_reload_diff(x, y, &p);
    ck_assert_int_eq(up_item(&p, "a")->op, XG_RELOAD_ROTATE);
    ck_assert_str_eq(up_item(&p, "a")->changed, "secrets");
    xg_reload_plan_free(&p);
    xg_conf_free(x);
    xg_conf_free(y);
    unlink(path);
    rmdir(dir);
}
END_TEST

START_TEST(t_protocol_restarts)
{
    struct xg_main_conf *x = conf("", ""), *y;
    struct xg_reload_plan p;

    /* b becomes deribit: restarted, and its tcp listener with it */
    y = conf_text(
        "client_auth off;\n"
        "upstream a {\n"
        "    url ws://127.0.0.1:9000/ws/api/v2;\n"
        "    protocol deribit;\n"
        "}\n"
        "upstream b {\n"
        "    url ws://127.0.0.1:9001/x;\n"
        "    protocol deribit;\n"
        "}\n"
        "listen 127.0.0.1:9100 websocket upstream=a;\n"
        "listen 127.0.0.1:9101 tcp upstream=b;\n");
    xg_reload_diff(x, y, &p);
    ck_assert_int_eq(up_item(&p, "a")->op, XG_RELOAD_KEEP);
    ck_assert_int_eq(up_item(&p, "b")->op, XG_RELOAD_RESTART);
    ck_assert_str_eq(up_item(&p, "b")->changed, "protocol");
    ck_assert_int_eq(listen_item(&p, 9100)->op, XG_RELOAD_KEEP);
    ck_assert_int_eq(listen_item(&p, 9101)->op, XG_RELOAD_RESTART);
    ck_assert_str_eq(listen_item(&p, 9101)->changed, "upstream restarted");
    xg_reload_plan_free(&p);
    xg_conf_free(x);
    xg_conf_free(y);
}
END_TEST

START_TEST(t_added_removed)
{
    struct xg_main_conf *x = conf("", ""), *y;
    struct xg_reload_plan p;

    y = conf_text(
        "client_auth off;\n"
        "upstream a {\n"
        "    url ws://127.0.0.1:9000/ws/api/v2;\n"
        "    protocol deribit;\n"
        "}\n"
        "upstream c {\n"
        "    url ws://127.0.0.1:9002/;\n"
        "    protocol deribit;\n"
        "}\n"
        "listen 127.0.0.1:9100 websocket upstream=a max_clients=7;\n"
        "listen 127.0.0.1:9102 tcp upstream=c;\n"
        "listen 127.0.0.1:9103 tcp upstream=a;\n");
    ck_assert_int_eq(xg_reload_diff(x, y, &p), 6);
    ck_assert_int_eq(p.nups, 3);
    ck_assert_int_eq(up_item(&p, "a")->op, XG_RELOAD_KEEP);
    ck_assert_int_eq(up_item(&p, "b")->op, XG_RELOAD_STOP);
    ck_assert_int_eq(up_item(&p, "c")->op, XG_RELOAD_START);
    ck_assert_int_eq(p.nlistens, 4);
    ck_assert_int_eq(listen_item(&p, 9100)->op, XG_RELOAD_APPLY);
    ck_assert_str_eq(listen_item(&p, 9100)->changed, "max_clients");
    ck_assert_int_eq(listen_item(&p, 9101)->op, XG_RELOAD_STOP);
    ck_assert_int_eq(listen_item(&p, 9102)->op, XG_RELOAD_START);
    ck_assert_int_eq(listen_item(&p, 9103)->op, XG_RELOAD_START);
    xg_reload_plan_free(&p);
    xg_conf_free(x);
    xg_conf_free(y);
}
END_TEST

START_TEST(t_listener_kind_or_upstream)
{
    struct xg_main_conf *x = conf("", ""), *y;
    struct xg_reload_plan p;
    char text[4096];

    snprintf(text, sizeof(text), BASE, "", "");
    memcpy(strstr(text, "9100 websocket upstream=a"),
        "9100 tcp       upstream=a", 25);
    y = conf_text(text);
    xg_reload_diff(x, y, &p);
    ck_assert_int_eq(listen_item(&p, 9100)->op, XG_RELOAD_RESTART);
    ck_assert_str_eq(listen_item(&p, 9100)->changed, "kind");
    ck_assert_int_eq(up_item(&p, "a")->op, XG_RELOAD_KEEP);
    xg_reload_plan_free(&p);
    xg_conf_free(y);

    snprintf(text, sizeof(text), BASE, "", "");
    memcpy(strstr(text, "9101 tcp upstream=b"), "9101 tcp upstream=a", 19);
    y = conf_text(text);
    xg_reload_diff(x, y, &p);
    ck_assert_int_eq(listen_item(&p, 9101)->op, XG_RELOAD_RESTART);
    ck_assert_str_eq(listen_item(&p, 9101)->changed, "upstream");
    xg_reload_plan_free(&p);
    xg_conf_free(x);
    xg_conf_free(y);
}
END_TEST

START_TEST(t_main_directives)
{
    struct xg_main_conf *x = conf("", ""), *y;
    struct xg_reload_plan p;

    y = conf("", "error_log stderr debug;\nclient_rate 10;\n"
        "admin 127.0.0.1:9200;\n");
    xg_reload_diff(x, y, &p);
    ck_assert_str_eq(p.main_changed, "error_log, admin, client_rate");
    ck_assert_int_eq(p.error_log, 1);
    ck_assert_int_eq(p.admin, 1);
    ck_assert_int_eq(up_item(&p, "a")->op, XG_RELOAD_KEEP);
    /* the listeners take the new client settings in place */
    ck_assert_int_eq(listen_item(&p, 9100)->op, XG_RELOAD_KEEP);
    xg_reload_plan_free(&p);
    xg_conf_free(y);

    y = conf("", "admin_origin http://127.0.0.1:1;\n");
    xg_reload_diff(x, y, &p);
    ck_assert_str_eq(p.main_changed, "admin_origin");
    ck_assert_int_eq(p.admin, 0);
    xg_reload_plan_free(&p);
    xg_conf_free(x);
    xg_conf_free(y);
}
END_TEST

/* A conf referenced by what still runs on it outlives its free. */
START_TEST(t_conf_ref)
{
    struct xg_main_conf *x = conf("", "");

    ck_assert_uint_eq(x->refs, 1);
    ck_assert_ptr_eq(xg_conf_ref(x), x);
    xg_conf_free(x);
    ck_assert_uint_eq(x->refs, 1);
    ck_assert_str_eq(x->upstreams->name, "a");
    xg_conf_free(x);
}
END_TEST

/* ---- applying a plan: a venue that cannot follow a change ------------- */

/*
 * A venue of the test's own, built for its upstream's queue_limit as
 * Binance's instance is for its market: a reload can change anything
 * else in place, a new queue_limit it cannot follow.
 */
struct tv {
    const struct xg_upstream_conf  *conf;
    unsigned                        built_for;
};

static void *
tv_create(struct xg_upstream *up, const struct xg_upstream_conf *conf)
{
    struct tv *t = xg_calloc(1, sizeof(*t));

    t->conf = conf;
    t->built_for = conf->queue_limit;
    return t;
}

static void
tv_destroy(void *p)
{
    free(p);
}

static int
tv_reconf_check(void *p, const struct xg_upstream_conf *conf)
{
    const struct tv *t = p;

    return conf->queue_limit == t->built_for ? XG_OK : XG_ERROR;
}

static void
tv_reconf(void *p, const struct xg_upstream_conf *conf)
{
    struct tv *t = p;

    ck_assert_uint_eq(conf->queue_limit, t->built_for);
    t->conf = conf;
}

static const struct xg_venue tv_venue = {
    .name = "test",
    .create = tv_create,
    .destroy = tv_destroy,
    .reconf = tv_reconf,
    .reconf_check = tv_reconf_check
};

#define TV_CONF \
    "upstream a {\n" \
    "    url ws://127.0.0.1:1/x;\n" \
    "    protocol raw;\n" \
    "%s" \
    "}\n"

static struct xg_main_conf *
tv_conf(const char *extra)
{
    char text[1024];

    snprintf(text, sizeof(text), TV_CONF, extra);
    return conf_text(text);
}

/*
 * The log goes to a file (at info) while a reload runs: made and removed
 * by the tcase's unchecked fixture, so that a failed test leaves none.
 */
static char tv_log_path[64];

static void
tv_log_setup(void)
{
    int fd;

    snprintf(tv_log_path, sizeof(tv_log_path), "/tmp/check_xg_reload.XXXXXX");
    fd = mkstemp(tv_log_path);
    ck_assert_int_ge(fd, 0);
    close(fd);
}

static void
tv_log_teardown(void)
{
    unlink(tv_log_path);
}

static const char *
tv_log_text(void)
{
    static char buf[1 << 16];
    FILE *f = fopen(tv_log_path, "r");
    size_t n;

    ck_assert_ptr_nonnull(f);
    n = fread(buf, 1, sizeof(buf) - 1, f);
    buf[n] = '\0';
    fclose(f);
    return buf;
}

/*
 * Reloads R (upstream "a" on tv_venue) with EXTRA in a's block; returns
 * the upstream called "a" afterwards, checked to run on the new conf.
 */
static struct xg_upstream *
tv_reload(struct xg_running *r, const char *extra)
{
    struct xg_upstream *up;
    char *errs = NULL;

    ck_assert_int_eq(xg_reload_apply(r, tv_conf(extra), &errs), XG_OK);
    ck_assert_ptr_null(errs);
    up = xg_upstream_find(r->ups, "a");
    ck_assert_ptr_nonnull(up);
    /* nothing runs on the conf the reload freed */
    ck_assert_ptr_eq(xg_upstream_conf_of(up), r->conf->upstreams);
    return up;
}

static void
tv_on_timeout(evutil_socket_t fd, short what, void *arg)
{
    event_base_loopbreak(arg);
}

START_TEST(t_apply_venue_refuses)
{
    struct timeval tv = { 0, 300 * 1000 };
    struct xg_running r;
    struct xg_upstream *up, *up2;
    struct event *ev;

    ck_assert_int_eq(xg_log_open(tv_log_path, XG_LOG_INFO), XG_OK);

    memset(&r, 0, sizeof(r));
    r.base = event_base_new();
    r.conf = tv_conf("");
    r.ups = xg_upstream_set_new();
    up = xg_upstream_create_proto(r.base, NULL, r.conf->upstreams,
        &tv_venue);
    ck_assert_ptr_nonnull(up);
    xg_upstream_set_add(r.ups, up);
    xg_upstream_start(up);

    /* a change the venue follows: the same upstream, on the new conf */
    ck_assert_ptr_eq(tv_reload(&r, "    connect_timeout 3s;\n"), up);
    ck_assert_ptr_eq(((struct tv *) xg_upstream_proto(up))->conf,
        r.conf->upstreams);

    /* one it cannot: restarted on the new conf, and the log says why */
    up2 = tv_reload(&r, "    connect_timeout 3s;\n    queue_limit 7;\n");
    ck_assert_ptr_ne(up2, up);
    ck_assert_msg(strstr(tv_log_text(), "upstream a: reload: "
        "queue_limit changed, its venue cannot follow that in place: "
        "restarted (its clients closed with 1001)") != NULL, "log: %s",
        tv_log_text());

    /* the old one closes and is freed from the loop */
    ev = evtimer_new(r.base, tv_on_timeout, r.base);
    evtimer_add(ev, &tv);
    event_base_dispatch(r.base);
    event_free(ev);
    ck_assert_ptr_null(r.retiring);

    xg_log_open("stderr", XG_LOG_ERROR);
    xg_reload_free(&r);
    xg_upstream_free_all(r.ups);
    xg_conf_free(r.conf);
    event_base_free(r.base);
}
END_TEST

static Suite *
reload_suite(void)
{
    Suite *s = suite_create("reload");
    TCase *tc = tcase_create("diff");

    setenv("XG_T_S1", "s1", 1);
    setenv("XG_T_S2", "s2", 1);
    tcase_add_test(tc, t_same);
    tcase_add_test(tc, t_limits_apply);
    tcase_add_test(tc, t_connection_rotates);
    tcase_add_test(tc, t_url_rotates);
    tcase_add_test(tc, t_secret_file_content);
    tcase_add_test(tc, t_protocol_restarts);
    tcase_add_test(tc, t_added_removed);
    tcase_add_test(tc, t_listener_kind_or_upstream);
    tcase_add_test(tc, t_main_directives);
    tcase_add_test(tc, t_conf_ref);
    suite_add_tcase(s, tc);
    tc = tcase_create("apply");
    tcase_add_unchecked_fixture(tc, tv_log_setup, tv_log_teardown);
    tcase_add_test(tc, t_apply_venue_refuses);
    suite_add_tcase(s, tc);
    return s;
}

int
main(void)
{
    SRunner *sr = srunner_create(reload_suite());
    int failed;

    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? 0 : 1;
}
