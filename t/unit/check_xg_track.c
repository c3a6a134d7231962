/*
 * check_xg_track.c: the continuity tracker engine (src/xg_track.c) with a
 * fake kind and fake callbacks: every transition, the held bound, the
 * fetch tag, the retry backoff on a real event_base with short timers,
 * and the give-up paths.
 *
 * The fake kind's messages are sequence numbers as text, "7" or "7-9"
 * (first-last). Its fetch answers are the same form: the numbers fetched,
 * each delivered as its own message; an answer with no result fails.
 */
#include "xg_core.h"
#include "xg_registry.h"
#include "xg_track.h"

#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/event.h>

/* ---- the fake kind ---- */

struct fake {
    uint64_t  last;             /* last number delivered */
};

static int fetch_on_confirm;    /* its fetch sends on a confirm too */
static int nreq;                /* requests per fetch */
static int rounds;              /* further rounds its complete sends */
static int nlost;               /* lost() calls */
static int nfetch;              /* fetch() calls */
static uint64_t fetch_from, fetch_to;

static void
fake_range(const char *data, size_t len, uint64_t *a, uint64_t *b)
{
    char buf[64];

    snprintf(buf, sizeof(buf), "%.*s", (int) len, data);
    *a = *b = 0;
    if (sscanf(buf, "%llu-%llu", (unsigned long long *) a,
            (unsigned long long *) b) < 2) {
        *b = *a;
    }
}

static void *
fake_create(const char *name)
{
    return name[0] == 'x' ? NULL : calloc(1, sizeof(struct fake));
}

static enum xg_track_verdict
fake_parse(struct xg_track *t, const char *data, size_t len,
    struct xg_track_seq *seq)
{
    struct fake *f = t->data;
    uint64_t a, b;

    fake_range(data, len, &a, &b);
    if (a == 0) {
        return XG_TRACK_PASS;       /* not numbered */
    }
    if (b <= f->last) {
        return XG_TRACK_DROP;       /* delivered already */
    }
    if (f->last != 0 && t->state == XG_TRACK_GAP && a > f->last + 1) {
        seq->from = f->last + 1;
        seq->to = a - 1;
        return XG_TRACK_FETCH;
    }
    f->last = b;
    seq->lined = 1;
    return XG_TRACK_PASS;
}

static void
fake_send_n(struct xg_track *t, int n)
{
    int i;

    for (i = 0; i < n; i++) {
        xg_track_send(t, xg_registry_req_new(0, NULL, NULL, "fake/fetch",
            "{}", 2));
    }
}

static void
fake_fetch(struct xg_track *t, const struct xg_track_seq *seq)
{
    nfetch++;
    if (seq == NULL && !fetch_on_confirm) {
        return;
    }
    fetch_from = seq != NULL ? seq->from : 0;
    fetch_to = seq != NULL ? seq->to : 0;
    fake_send_n(t, nreq);
}

static int
fake_apply(struct xg_track *t, const struct xg_reg_req *q,
    const struct xg_jspan *result, const struct xg_jspan *error)
{
    struct fake *f = t->data;
    uint64_t a, b, i;
    char one[24];

    if (result->p == NULL) {
        return XG_ERROR;
    }
    fake_range(result->p, result->len, &a, &b);
    for (i = a; i != 0 && i <= b; i++) {
        if (i > f->last) {
            snprintf(one, sizeof(one), "%llu", (unsigned long long) i);
            xg_track_fanout(t, one, strlen(one));
            f->last = i;
        }
    }
    return XG_OK;
}

static void
fake_complete(struct xg_track *t)
{
    if (rounds > 0) {
        rounds--;
        fake_send_n(t, 1);
    }
}

static void
fake_lost(struct xg_track *t)
{
    nlost++;
}

static const struct xg_track_kind fake_kind = {
    "fake", "fetch", XG_TRACK_KEEP_HELD, fake_create, fake_parse, fake_fetch,
    fake_apply, fake_complete, fake_lost, free, NULL
};

/* The same, releasing what it held when its connection drops. */
static const struct xg_track_kind fake_kind_release = {
    "fake", "fetch", 0, fake_create, fake_parse, fake_fetch, fake_apply,
    fake_complete, fake_lost, free, NULL
};

/* ---- the fake callbacks ---- */

static struct xg_track_env env;
static struct event_base *base;
static uint64_t now_ms;
static struct xg_reg_req *sent[64];    /* requests sent, in order */
static int nsent;
static char out[4096];                 /* what subscribers got: "a,b," */
static int nnotice;
static char notice[96];
static uint64_t notice_ms;
static int chan_token;                 /* the creator's chan pointer */

static void
cb_send(void *ctx, void *chan, struct xg_reg_req *q)
{
    ck_assert_ptr_eq(ctx, &env);
    ck_assert_ptr_eq(chan, &chan_token);
    ck_assert_int_lt(nsent, 64);
    sent[nsent++] = q;
}

static void
cb_fanout(void *ctx, void *chan, const char *data, size_t len)
{
    size_t n = strlen(out);

    snprintf(out + n, sizeof(out) - n, "%.*s,", (int) len, data);
}

static void
cb_notice(void *ctx, void *chan, uint64_t duration_ms, const char *reason)
{
    nnotice++;
    notice_ms = duration_ms;
    snprintf(notice, sizeof(notice), "%s", reason);
}

static uint64_t
cb_now(void *ctx)
{
    return now_ms;
}

static void
setup(void)
{
    base = event_base_new();
    memset(&env, 0, sizeof(env));
    env.name = "u";
    env.base = base;
    env.max_held = 1000;
    env.retry_ms = 10;
    env.retry_max_ms = 25;
    env.tries = 3;
    env.ctx = &env;
    env.send = cb_send;
    env.fanout = cb_fanout;
    env.notice = cb_notice;
    env.now = cb_now;
    now_ms = 1000;
    nsent = nnotice = nlost = nfetch = rounds = 0;
    nreq = 1;
    fetch_on_confirm = 0;
    out[0] = notice[0] = '\0';
}

static void
teardown(void)
{
    int i;

    for (i = 0; i < nsent; i++) {
        if (sent[i] != NULL) {
            xg_registry_req_free(sent[i]);
        }
    }
    event_base_free(base);
}

/* ---- helpers ---- */

static struct xg_track *
track(const struct xg_track_kind *k)
{
    struct xg_track *t = xg_track_new(k, &env, "fake.chan", &chan_token);

    ck_assert_ptr_nonnull(t);
    ck_assert_int_eq(t->state, XG_TRACK_LIVE);
    return t;
}

/* Feeds S as a live message; fans it out when the tracker says so. */
static int
feed(struct xg_track *t, const char *s)
{
    int pass = xg_track_message(t, s, strlen(s));

    if (pass) {
        cb_fanout(NULL, NULL, s, strlen(s));
    }
    return pass;
}

/* Answers request I with RESULT, or with an error when it is NULL. */
static void
answer(struct xg_track *t, int i, const char *result)
{
    struct xg_jspan r = { result, result ? strlen(result) : 0 };
    struct xg_jspan e = { result ? NULL : "{\"code\":1}",
                          result ? 0 : 10 };

    xg_track_answer(t, sent[i], &r, &e);
}

static void
confirm(struct xg_track *t)
{
    xg_track_resume(t, "confirmed");
}

/* T is in STATE and the subscribers got WANT so far. */
static void
expect(const struct xg_track *t, enum xg_track_state state, const char *want)
{
    ck_assert_str_eq(xg_track_state_name(t->state),
        xg_track_state_name(state));
    ck_assert_str_eq(out, want);
}

/* N gap notices so far, the last one for REASON. */
static void
noticed(int n, const char *reason)
{
    ck_assert_int_eq(nnotice, n);
    ck_assert_str_eq(notice, n > 0 ? reason : "");
}

/* Delivered 1..2, then the connection dropped at 1000 ms. */
static struct xg_track *
track_after_outage(const struct xg_track_kind *k)
{
    struct xg_track *t = track(k);

    feed(t, "1");
    feed(t, "2");
    xg_track_down(t, 1000);
    expect(t, XG_TRACK_GAP, "1,2,");
    ck_assert_int_eq(nlost, 1);
    return t;
}

/* After an outage, "5" shows 3..4 missing: fetched, "5" held. */
static struct xg_track *
track_fetching(const struct xg_track_kind *k)
{
    struct xg_track *t = track_after_outage(k);

    ck_assert_int_eq(feed(t, "5"), 0);
    expect(t, XG_TRACK_FETCHING, "1,2,");
    ck_assert_int_eq(nsent, nreq);
    ck_assert_uint_eq(fetch_from, 3);
    ck_assert_uint_eq(fetch_to, 4);
    ck_assert_uint_eq(sent[0]->tag, t->tag);
    return t;
}

/* The same, with a bound of MAX held messages. */
static struct xg_track *
track_bounded(size_t max)
{
    env.max_held = max;
    return track_fetching(&fake_kind);
}

/* After an outage, a kind that fetches when confirmed is confirmed. */
static struct xg_track *
track_refetching(void)
{
    struct xg_track *t;

    fetch_on_confirm = 1;
    t = track_after_outage(&fake_kind);
    confirm(t);
    expect(t, XG_TRACK_FETCHING, "1,2,");
    ck_assert_int_eq(t->nheld, 0);
    return t;
}

/* ---- the transitions ---- */

START_TEST(live_filters)
{
    struct xg_track *t = track(&fake_kind);

    ck_assert_ptr_null(xg_track_new(&fake_kind, &env, "x.other", NULL));
    ck_assert_int_eq(feed(t, "1"), 1);
    ck_assert_int_eq(feed(t, "2-3"), 1);
    ck_assert_int_eq(feed(t, "3"), 0);           /* the kind's filter */
    ck_assert_int_eq(feed(t, "hello"), 1);
    ck_assert_int_eq(feed(t, "9"), 1);           /* a jump while live */
    confirm(t);                                  /* nothing to do */
    ck_assert_int_eq(nfetch, 0);
    expect(t, XG_TRACK_LIVE, "1,2-3,hello,9,");
    xg_track_free(t);
}
END_TEST

START_TEST(gap_closed_in_line)
{
    struct xg_track *t = track_after_outage(&fake_kind);

    confirm(t);                     /* the kind waits for data */
    ck_assert_int_eq(nfetch, 1);
    ck_assert_int_eq(feed(t, "hello"), 1);       /* says nothing */
    expect(t, XG_TRACK_GAP, "1,2,hello,");
    ck_assert_int_eq(feed(t, "3"), 1);           /* in line: no gap */
    ck_assert_int_eq(t->state, XG_TRACK_LIVE);
    ck_assert_int_eq(feed(t, "7"), 1);           /* live: not fetched */
    ck_assert_int_eq(nsent, 0);
    xg_track_free(t);
}
END_TEST

START_TEST(fetch_then_release)
{
    struct xg_track *t = track_fetching(&fake_kind);

    ck_assert_int_eq(feed(t, "6"), 0);
    ck_assert_int_eq(t->nheld, 2);
    confirm(t);                                  /* in flight already */
    ck_assert_int_eq(nsent, 1);
    answer(t, 0, "3-4");
    expect(t, XG_TRACK_LIVE, "1,2,3,4,5,6,");
    ck_assert_int_eq(t->nheld, 0);
    answer(t, 0, "3-4");                         /* a repeat: ignored */
    expect(t, XG_TRACK_LIVE, "1,2,3,4,5,6,");
    noticed(0, NULL);
    ck_assert_uint_eq(env.answers, 1);
    xg_track_free(t);
}
END_TEST

START_TEST(confirm_fetches)
{
    struct xg_track *t = track_refetching();

    ck_assert_int_eq(feed(t, "4"), 0);           /* held */
    expect(t, XG_TRACK_FETCHING, "1,2,");
    answer(t, 0, "3");
    expect(t, XG_TRACK_LIVE, "1,2,3,4,");
    ck_assert_int_eq(nfetch, 1);                 /* "4": in line */
    xg_track_free(t);
}
END_TEST

START_TEST(stale_gap_fetches_at_resume)
{
    struct xg_track *t = track(&fake_kind);

    fetch_on_confirm = 1;
    feed(t, "1");
    now_ms = 5000;
    xg_track_gap(t, 2000, "stale");
    ck_assert_int_eq(nlost, 1);
    ck_assert_int_eq(nsent, 0);
    xg_track_resume(t, "resubscribed");          /* fetched now */
    expect(t, XG_TRACK_FETCHING, "1,");
    xg_track_gap(t, 4000, "stale");              /* a fetch covers it */
    xg_track_resume(t, "resubscribed");
    ck_assert_int_eq(nsent, 1);
    answer(t, 0, NULL);                          /* refused */
    noticed(1, "fake fetch failed");
    ck_assert_uint_eq(notice_ms, 3000);          /* from the first gap */
    xg_track_free(t);
}
END_TEST

START_TEST(down_while_fetching_keeps_held)
{
    struct xg_track *t = track_fetching(&fake_kind);
    uint64_t tag = t->tag;

    xg_track_down(t, 1200);
    ck_assert_uint_eq(t->gap_from_ms, 1000);     /* the first gap's */
    ck_assert_int_eq(feed(t, "6"), 0);           /* still held */
    ck_assert_int_eq(t->nheld, 2);
    answer(t, 0, "3-4");                         /* the dead fetch's */
    expect(t, XG_TRACK_HELD, "1,2,");
    fetch_on_confirm = 1;
    confirm(t);                                  /* fetched again */
    ck_assert_int_eq(nsent, 2);
    ck_assert_uint_eq(sent[1]->tag, tag + 1);
    answer(t, 0, "3-4");                         /* a tag mismatch */
    expect(t, XG_TRACK_FETCHING, "1,2,");
    answer(t, 1, "3-4");
    expect(t, XG_TRACK_LIVE, "1,2,3,4,5,6,");
    xg_track_free(t);
}
END_TEST

START_TEST(held_with_nothing_to_fetch)
{
    struct xg_track *t = track_fetching(&fake_kind);

    xg_track_down(t, 1200);
    confirm(t);                     /* the kind sends nothing: released */
    expect(t, XG_TRACK_FETCHING, "1,2,");    /* "5", in the gap, asks */
    ck_assert_int_eq(nsent, 2);
    ck_assert_int_eq(t->nheld, 1);
    xg_track_down(t, 1200);
    nreq = 0;                       /* and now it cannot */
    confirm(t);
    expect(t, XG_TRACK_GAP, "1,2,5,");
    ck_assert_int_eq(t->nheld, 0);
    xg_track_free(t);
}
END_TEST

START_TEST(down_while_fetching_releases)
{
    struct xg_track *t = track_fetching(&fake_kind_release);

    nreq = 0;       /* "5" released in the gap: its fetch sends nothing */
    xg_track_down(t, 1200);
    expect(t, XG_TRACK_GAP, "1,2,5,");    /* no fetch: passed as it is */
    ck_assert_int_eq(t->nheld, 0);
    xg_track_free(t);
}
END_TEST

/* A hole in the stream (an edge's) while a fetch is under way: it waits
   at its place among the held messages, so what skips after it is
   fetched too, not passed once the first fetch is done. */
START_TEST(hole_while_fetching_kept_in_place)
{
    struct xg_track *t = track_fetching(&fake_kind);

    ck_assert_int_eq(feed(t, "6"), 0);
    xg_track_hole(t, 1500, "a hole");
    ck_assert_int_eq(t->state, XG_TRACK_FETCHING);
    ck_assert_int_eq(feed(t, "9"), 0);           /* 7, 8 in the hole */
    ck_assert_int_eq(t->nheld, 4);
    answer(t, 0, "3-4");
    expect(t, XG_TRACK_FETCHING, "1,2,3,4,5,6,");
    ck_assert_int_eq(nsent, 2);
    ck_assert_uint_eq(fetch_from, 7);
    ck_assert_uint_eq(fetch_to, 8);
    ck_assert_int_eq(t->nheld, 1);               /* "9" */
    answer(t, 1, "7-8");
    expect(t, XG_TRACK_LIVE, "1,2,3,4,5,6,7,8,9,");
    noticed(0, NULL);
    xg_track_free(t);
}
END_TEST

/* A hole while live: a gap at once, the kind's lost and resume run. */
START_TEST(hole_while_live)
{
    struct xg_track *t = track(&fake_kind);

    ck_assert_int_eq(feed(t, "1"), 1);
    xg_track_hole(t, 900, "a hole");
    ck_assert_int_eq(nlost, 1);
    ck_assert_int_eq(nfetch, 1);                 /* the resume asked */
    ck_assert_int_eq(t->state, XG_TRACK_GAP);
    ck_assert_uint_eq(t->gap_from_ms, 900);
    ck_assert_int_eq(feed(t, "4"), 0);           /* 2, 3 fetched */
    answer(t, 0, "2-3");
    expect(t, XG_TRACK_LIVE, "1,2,3,4,");
    xg_track_free(t);
}
END_TEST

/* A hole held when the connection goes: the resume fetches past it. */
START_TEST(hole_held_then_down)
{
    struct xg_track *t = track_fetching(&fake_kind_release);

    xg_track_hole(t, 1500, "a hole");
    nreq = 0;
    xg_track_down(t, 1600);
    expect(t, XG_TRACK_GAP, "1,2,5,");
    ck_assert_int_eq(t->nheld, 0);
    xg_track_free(t);
}
END_TEST

START_TEST(down_with_nothing_held)
{
    struct xg_track *t = track_refetching();

    xg_track_down(t, 1500);         /* nothing held: a plain gap */
    expect(t, XG_TRACK_GAP, "1,2,");
    ck_assert_int_eq(feed(t, "3"), 1);
    xg_track_free(t);
}
END_TEST

START_TEST(state_names)
{
    ck_assert_str_eq(xg_track_state_name(XG_TRACK_LIVE), "live");
    ck_assert_str_eq(xg_track_state_name(XG_TRACK_GAP), "gap");
    ck_assert_str_eq(xg_track_state_name(XG_TRACK_FETCHING), "fetching");
    ck_assert_str_eq(xg_track_state_name(XG_TRACK_HELD), "held");
    ck_assert_str_eq(xg_track_state_name((enum xg_track_state) 9), "?");
}
END_TEST

/* ---- give-up paths ---- */

START_TEST(held_bound_gives_up)
{
    struct xg_track *t = track_bounded(3);

    now_ms = 1700;
    ck_assert_int_eq(feed(t, "6"), 0);
    ck_assert_int_eq(feed(t, "7"), 0);
    noticed(0, NULL);
    ck_assert_int_eq(feed(t, "8"), 1);           /* over the bound */
    expect(t, XG_TRACK_LIVE, "1,2,5,6,7,8,");
    noticed(1, "fake fetch too slow");
    ck_assert_uint_eq(notice_ms, 700);
    answer(t, 0, "3-4");                         /* too late: ignored */
    expect(t, XG_TRACK_LIVE, "1,2,5,6,7,8,");
    xg_track_free(t);
}
END_TEST

START_TEST(held_bound_while_held)
{
    struct xg_track *t = track_bounded(2);

    xg_track_down(t, 1200);
    ck_assert_int_eq(feed(t, "6"), 0);
    ck_assert_int_eq(feed(t, "7"), 1);
    expect(t, XG_TRACK_LIVE, "1,2,5,6,7,");
    noticed(1, "fake fetch too slow");
    xg_track_free(t);
}
END_TEST

START_TEST(failed_answer_gives_up)
{
    struct xg_track *t = track_fetching(&fake_kind);

    feed(t, "6");
    answer(t, 0, NULL);
    expect(t, XG_TRACK_LIVE, "1,2,5,6,");
    noticed(1, "fake fetch failed");
    xg_track_free(t);
}
END_TEST

START_TEST(every_answer_waited_for)
{
    struct xg_track *t;

    nreq = 2;
    t = track_fetching(&fake_kind);
    answer(t, 0, NULL);                          /* one fails ... */
    expect(t, XG_TRACK_FETCHING, "1,2,");
    noticed(0, NULL);
    answer(t, 1, "3-4");                         /* ... the other not */
    expect(t, XG_TRACK_LIVE, "1,2,3,4,5,");
    ck_assert_uint_eq(env.answers, 1);
    noticed(1, "fake fetch failed");
    xg_track_free(t);
}
END_TEST

START_TEST(complete_sends_a_round)
{
    struct xg_track *t;

    nreq = 2;
    rounds = 1;
    t = track_fetching(&fake_kind);
    answer(t, 0, "3");
    answer(t, 1, "3");
    expect(t, XG_TRACK_FETCHING, "1,2,3,");      /* a third asked */
    ck_assert_int_eq(nsent, 3);
    ck_assert_uint_eq(sent[2]->tag, t->tag);
    answer(t, 2, "4");
    expect(t, XG_TRACK_LIVE, "1,2,3,4,5,");
    xg_track_free(t);
}
END_TEST

/* ---- the retry backoff, on a real loop ---- */

/*
 * Runs the loop until a request is sent; returns the ms since T0 (taken
 * before the timer was armed, so that a preemption between the two cannot
 * make the wait look shorter than the timer).
 */
static uint64_t
loop_until_sent(uint64_t t0)
{
    int n = nsent;

    while (nsent == n && xg_now_ms() - t0 < 2000) {
        event_base_loop(base, EVLOOP_ONCE);
    }
    ck_assert_int_eq(nsent, n + 1);
    return xg_now_ms() - t0;
}

static void
loop_for(uint64_t ms)
{
    struct timeval tv = { 0, (suseconds_t) (ms * 1000) };

    event_base_loopexit(base, &tv);
    event_base_dispatch(base);
}

/* Q (sent[I], given to the tracker for its retry) is the engine's now. */
static void
retried(struct xg_track *t, int i)
{
    ck_assert_int_eq(xg_track_retry(t, sent[i], "busy", 4), 1);
    sent[i] = NULL;
}

START_TEST(retry_backs_off)
{
    static const uint64_t want[] = { 10, 20, 25 };
    struct xg_track *t = track_fetching(&fake_kind);
    struct xg_reg_req *q = sent[0];
    int i;

    for (i = 0; i < 3; i++) {
        uint64_t took, t0 = xg_now_ms();

        retried(t, nsent - 1);
        ck_assert_int_eq(feed(t, "9"), 0);       /* live: held */
        took = loop_until_sent(t0);
        ck_assert_ptr_eq(sent[nsent - 1], q);    /* the same request */
        ck_assert_uint_eq(q->tag, t->tag);
        ck_assert_uint_eq(q->attempts, (unsigned) i + 1);
        ck_assert_msg(took >= want[i] - 1 && took < want[i] + 500,
            "retry %d after %llu ms, want %llu", i + 1,
            (unsigned long long) took, (unsigned long long) want[i]);
    }
    expect(t, XG_TRACK_FETCHING, "1,2,");
    ck_assert_uint_eq(env.retries, 3);
    ck_assert_int_eq(xg_track_retry(t, q, "busy", 4), 0);  /* out */
    answer(t, nsent - 1, NULL);                  /* the caller's give-up */
    noticed(1, "fake fetch failed");
    expect(t, XG_TRACK_LIVE, "1,2,5,9,");        /* one "9": a filter */
    xg_track_free(t);
}
END_TEST

START_TEST(retry_not_current)
{
    struct xg_track *t = track_fetching(&fake_kind);
    struct xg_reg_req *old = sent[0];

    answer(t, 0, "3-4");
    ck_assert_int_eq(xg_track_retry(t, old, "busy", 4), 0);  /* over */
    xg_track_down(t, 2000);
    fetch_on_confirm = 1;
    confirm(t);
    ck_assert_int_eq(xg_track_retry(t, old, "busy", 4), 0);  /* old tag */
    retried(t, 1);
    xg_track_free(t);               /* its waiting request freed */
    loop_for(30);
    ck_assert_int_eq(nsent, 2);
}
END_TEST

START_TEST(retry_dropped_when_down)
{
    struct xg_track *t = track_fetching(&fake_kind);

    retried(t, 0);
    xg_track_down(t, 1200);         /* the fetch is over: no resend */
    expect(t, XG_TRACK_HELD, "1,2,");
    loop_for(40);
    ck_assert_int_eq(nsent, 1);
    ck_assert_uint_eq(env.retries, 0);
    xg_track_free(t);
}
END_TEST

START_TEST(retry_dropped_on_give_up)
{
    struct xg_track *t = track_bounded(1);

    retried(t, 0);
    ck_assert_int_eq(feed(t, "6"), 1);           /* over the bound */
    expect(t, XG_TRACK_LIVE, "1,2,5,6,");
    loop_for(40);
    ck_assert_int_eq(nsent, 1);
    xg_track_free(t);
}
END_TEST

/* A test case NAME of the tests in T (NULL-terminated), each one set up
   and torn down. */
static void
add_case(Suite *s, const char *name, const TTest *const *t)
{
    TCase *tc = tcase_create(name);

    tcase_add_checked_fixture(tc, setup, teardown);
    for (; *t != NULL; t++) {
        tcase_add_test(tc, *t);
    }
    suite_add_tcase(s, tc);
}

static Suite *
track_suite(void)
{
    Suite *s = suite_create("xg_track");
    const TTest *const transitions[] = {
        live_filters, gap_closed_in_line, fetch_then_release,
        confirm_fetches, stale_gap_fetches_at_resume,
        down_while_fetching_keeps_held, held_with_nothing_to_fetch,
        down_while_fetching_releases, down_with_nothing_held, state_names,
        hole_while_fetching_kept_in_place, hole_while_live,
        hole_held_then_down, NULL
    };
    const TTest *const give_up[] = {
        held_bound_gives_up, held_bound_while_held, failed_answer_gives_up,
        every_answer_waited_for, complete_sends_a_round, NULL
    };
    const TTest *const retry[] = {
        retry_backs_off, retry_not_current, retry_dropped_when_down,
        retry_dropped_on_give_up, NULL
    };

    add_case(s, "transitions", transitions);
    add_case(s, "give_up", give_up);
    add_case(s, "retry", retry);
    return s;
}

int
main(void)
{
    SRunner *sr = srunner_create(track_suite());
    int failed;

    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
