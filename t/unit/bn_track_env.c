/*
 * bn_track_env.c: see bn_track_env.h.
 */
#include "bn_track_env.h"
#include "xg_log.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/event.h>
#include <jansson.h>

/* ---- the environment: requests recorded, outputs collected ---- */

struct xg_track_env env;
struct event_base *base;
uint64_t now_ms;
struct xg_reg_req *sent[MAXQ];  /* GETs in order; NULL: answered */
int nsent;
char *out[MAXOUT];              /* what subscribers got, in order */
int nout;
int nnotice;
char notice[96];
int chan_token;

static void
cb_send(void *ctx, void *chan, struct xg_reg_req *q)
{
    ck_assert_ptr_eq(chan, &chan_token);
    ck_assert_int_eq(q->kind, XG_BN_REQ_REST);
    ck_assert_int_lt(nsent, MAXQ);
    sent[nsent++] = q;
}

static void
cb_fanout(void *ctx, void *chan, const char *data, size_t len)
{
    ck_assert_int_lt(nout, MAXOUT);
    out[nout++] = xg_strndup(data, len);
}

static void
cb_notice(void *ctx, void *chan, uint64_t duration_ms, const char *reason)
{
    nnotice++;
    snprintf(notice, sizeof(notice), "%s", reason);
}

static uint64_t
cb_now(void *ctx)
{
    return now_ms;
}

void
out_clear(void)
{
    int i;

    for (i = 0; i < nout; i++) {
        free(out[i]);
    }
    nout = 0;
}

void
setup(void)
{
    base = event_base_new();
    memset(&env, 0, sizeof(env));
    env.name = "bn";
    env.base = base;
    env.max_held = 500;
    env.retry_ms = 1;
    env.retry_max_ms = 4;
    env.tries = 3;
    env.ctx = &env;
    env.send = cb_send;
    env.fanout = cb_fanout;
    env.notice = cb_notice;
    env.now = cb_now;
    now_ms = 1000;
    nsent = nout = nnotice = 0;
    notice[0] = '\0';
    /* XG_TEST_LOG=1 in the environment: the trackers' lines on stderr */
    xg_log_level = getenv("XG_TEST_LOG") != NULL ? XG_LOG_DEBUG
                                                 : XG_LOG_ERROR;
}

void
teardown(void)
{
    int i;

    for (i = 0; i < nsent; i++) {
        xg_registry_req_free(sent[i]);
    }
    out_clear();
    event_base_free(base);
}

/* A tracker for stream NAME from MARKET's kinds (the venue's way). */
struct xg_track *
track(enum xg_bn_market m, const char *name)
{
    const struct xg_track_kind *const *k = m == XG_BN_SPOT
                                           ? xg_bn_kinds_spot
                                           : xg_bn_kinds_usdm;
    struct xg_track *t = NULL;

    for (; t == NULL && *k != NULL; k++) {
        t = xg_track_new(*k, &env, name, &chan_token);
    }
    return t;
}

/* Feeds S as a live event; fans it out when the tracker says so. */
int
feed(struct xg_track *t, const char *s)
{
    int pass = xg_track_message(t, s, strlen(s));

    if (pass) {
        cb_fanout(NULL, &chan_token, s, strlen(s));
    }
    return pass;
}

/* The last request sent (not answered yet), taken from the list (the
   answer may send another). */
struct xg_reg_req *
last_q(void)
{
    struct xg_reg_req *q;

    ck_assert_int_gt(nsent, 0);
    ck_assert_ptr_nonnull(sent[nsent - 1]);
    q = sent[nsent - 1];
    sent[nsent - 1] = NULL;
    return q;
}

/* Answers the last request with BODY (HTTP 200), as the venue does. */
void
answer(struct xg_track *t, const char *body)
{
    struct xg_reg_req *q = last_q();
    struct xg_jspan r = { body, strlen(body) }, e = { NULL, 0 };

    xg_track_answer(t, q, &r, &e);
    xg_registry_req_free(q);
}

/* Answers the last request with HTTP STATUS. */
void
answer_status(struct xg_track *t, int status)
{
    struct xg_reg_req *q = last_q();
    char err[64];
    struct xg_jspan r = { NULL, 0 }, e;

    snprintf(err, sizeof(err), "{\"status\":%d,\"msg\":\"x\"}", status);
    e.p = err;
    e.len = strlen(err);
    xg_track_answer(t, q, &r, &e);
    xg_registry_req_free(q);
}

/* Runs the loop until a request is sent (a retry's timer). */
void
wait_sent(int n)
{
    int spins = 0;

    while (nsent < n && spins++ < 200) {
        event_base_loop(base, EVLOOP_ONCE);
    }
    ck_assert_int_eq(nsent, n);
}

/* A case NAME of the tests T (NULL-terminated), with the fixture. */
void
add_case(Suite *s, const char *name, const TTest *const *t)
{
    TCase *tc = tcase_create(name);

    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, 60);
    for (; *t != NULL; t++) {
        tcase_add_test(tc, *t);
    }
    suite_add_tcase(s, tc);
}
