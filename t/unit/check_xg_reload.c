/*
 * check_xg_reload.c: the conf diff of a reload (xg_reload_diff()): what
 * each change of a conf does to each upstream and listener, and that
 * nothing unchanged is touched.
 */
#include "xg_core.h"
#include "xg_conf.h"
#include "xg_reload.h"

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
