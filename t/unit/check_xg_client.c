/*
 * check_xg_client.c: local clients and the coalescing fan-out, in process:
 * TCP clients over socketpairs on listeners built by the test, each on an
 * event base of its own, with a protocol module of the test's (it only
 * counts) so that nothing else runs.
 *
 * The fan-out's batch and its end-of-pass event belong to one loop: a
 * second loop (a reload building a new configuration, the fuzz harness's
 * base per run) must get its batches delivered by its own loop, and
 * nothing of a freed loop may be touched again.
 */
#include "xg_core.h"
#include "xg_client.h"
#include "xg_client_int.h"
#include "xg_conf.h"
#include "xg_listen.h"
#include "xg_log.h"
#include "xg_venue.h"

#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <event2/event.h>

/* ---- a protocol module that only counts --------------------------------- */

static int opens, closes;

static void *
cp_client_open(void *p, struct xg_client *c)
{
    opens++;
    return c;
}

static void
cp_client_message(void *p, void *cs, const unsigned char *data, size_t len)
{
}

static void
cp_client_close(void *p, void *cs, const char *reason)
{
    closes++;
}

static const struct xg_venue cp_module = {
    .name = "client-test",
    .client_open = cp_client_open,
    .client_message = cp_client_message,
    .client_close = cp_client_close
};

/* ---- one loop: a base, its fan-out, a listener, one TCP client ----------- */

struct loop {
    struct event_base   *base;
    struct xg_fanout    *fo;
    struct xg_listener   l;
    struct xg_client    *c;
    int                  peer;      /* the bot's end of the socketpair */
};

static struct xg_main_conf *mc;

static void
loop_open(struct loop *lp)
{
    int sv[2];

    memset(lp, 0, sizeof(*lp));
    lp->base = event_base_new();
    ck_assert_ptr_nonnull(lp->base);
    lp->fo = xg_client_fanout_new(lp->base);
    ck_assert_ptr_nonnull(lp->fo);
    lp->l.lc = mc->listens;
    lp->l.gc = xg_gateway_conf_get(mc);
    lp->l.base = lp->base;
    lp->l.fo = lp->fo;
    lp->l.pm = &cp_module;
    snprintf(lp->l.addr, sizeof(lp->l.addr), "test");
    ck_assert_int_eq(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
    ck_assert_int_eq(fcntl(sv[1], F_SETFL, O_NONBLOCK), 0);
    lp->peer = sv[1];
    lp->l.nclients++;
    lp->c = xg_client_new_tcp(&lp->l, sv[0], NULL);
    ck_assert_ptr_nonnull(lp->c);
}

/*
 * Frees LP's clients and its fan-out; the base stays (see loop_free), as
 * a base outlives what was made on it.
 */
static void
loop_close(struct loop *lp)
{
    while (lp->l.clients != NULL) {
        xg_client_free(lp->l.clients, "test done");
    }
    xg_client_fanout_free(lp->fo);
    lp->fo = NULL;
    close(lp->peer);
}

static void
loop_free(struct loop *lp)
{
    event_base_free(lp->base);
}

/* One pass of LP's loop (what runs at the end of a pass runs). */
static void
loop_pass(struct loop *lp)
{
    event_base_loop(lp->base, EVLOOP_NONBLOCK);
}

/* What the bot of LP has received so far ("" when nothing). */
static const char *
peer_read(struct loop *lp)
{
    static char buf[4096];
    ssize_t n = read(lp->peer, buf, sizeof(buf) - 1);

    if (n < 0) {
        ck_assert_int_eq(errno, EAGAIN);
        n = 0;
    }
    buf[n] = '\0';
    return buf;
}

static void
fanout(struct loop *lp, const char *text)
{
    xg_client_fanout(&lp->c, 1, text, strlen(text));
}

static void
setup(void)
{
    char *errors = NULL;

    xg_log_level = -1;
    mc = xg_conf_load_string("t.conf", "upstream u {\n"
        "    url ws://127.0.0.1:9/ws/api/v2;\n"
        "    protocol deribit;\n"
        "}\n"
        "listen 127.0.0.1:9 tcp upstream=u;\n", &errors);
    ck_assert_msg(mc != NULL, "conf: %s", errors ? errors : "");
    free(errors);
    opens = closes = 0;
}

static void
teardown(void)
{
    xg_conf_free(mc);
    mc = NULL;
}

/* ---- tests --------------------------------------------------------------- */

/* Two notifications to the same client go out at the end of the pass. */
START_TEST(fanout_at_end_of_pass)
{
    struct loop a;

    loop_open(&a);
    fanout(&a, "n1");
    fanout(&a, "n2");
    ck_assert_str_eq(peer_read(&a), "");
    loop_pass(&a);
    ck_assert_str_eq(peer_read(&a), "n1\nn2\n");
    loop_close(&a);
    loop_free(&a);
    ck_assert_int_eq(opens, 1);
    ck_assert_int_eq(closes, 1);
}
END_TEST

/* An answer to a client sends the held batch first: the order is kept. */
START_TEST(fanout_flushed_before_answer)
{
    struct loop a;

    loop_open(&a);
    fanout(&a, "n1");
    fanout(&a, "n2");
    ck_assert_int_eq(xg_client_send(a.c, "r", 1), XG_OK);
    loop_pass(&a);
    ck_assert_str_eq(peer_read(&a), "n1\nn2\nr\n");
    loop_close(&a);
    loop_free(&a);
}
END_TEST

/*
 * Two loops side by side (a reload building the new configuration beside
 * the running one): each one's batch goes out at the end of its own pass.
 * Before the fan-out was owned by a loop, its end-of-pass event was bound
 * to the first base it saw, and the second loop's batch waited for the
 * first loop to run.
 */
START_TEST(fanout_two_loops_side_by_side)
{
    struct loop a, b;

    loop_open(&a);
    loop_open(&b);
    fanout(&a, "a1");
    loop_pass(&a);
    ck_assert_str_eq(peer_read(&a), "a1\n");

    fanout(&b, "b1");
    loop_pass(&b);
    ck_assert_str_eq(peer_read(&b), "b1\n");
    /* and the other way round */
    fanout(&a, "a2");
    loop_pass(&a);
    ck_assert_str_eq(peer_read(&a), "a2\n");
    ck_assert_str_eq(peer_read(&b), "");

    loop_close(&b);
    loop_close(&a);
    loop_free(&b);
    loop_free(&a);
}
END_TEST

/*
 * Loops in turn, as the fuzz harness runs them: the first loop's clients
 * are gone before the second starts. The second loop's batch must go out
 * on the second loop, and nothing may still point into the first (it is
 * freed after the second one ran, so that the two bases are distinct).
 */
START_TEST(fanout_loops_in_turn)
{
    struct loop a, b;

    loop_open(&a);
    fanout(&a, "a1");
    loop_pass(&a);
    ck_assert_str_eq(peer_read(&a), "a1\n");
    loop_close(&a);

    loop_open(&b);
    fanout(&b, "b1");
    fanout(&b, "b2");
    loop_pass(&b);
    ck_assert_str_eq(peer_read(&b), "b1\nb2\n");
    loop_close(&b);
    loop_free(&b);
    loop_free(&a);
}
END_TEST

/* ---- a WebSocket client ------------------------------------------------- */

/*
 * LP with a WebSocket client instead, its socket's send buffer small so
 * that a batch of a few KiB is taken in part; the bot's handshake is done
 * here.
 */
static void
loop_open_ws(struct loop *lp)
{
    static const char req[] = "GET /ws/api/v2 HTTP/1.1\r\nHost: test\r\n"
        "Upgrade: websocket\r\nConnection: Upgrade\r\n"
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
        "Sec-WebSocket-Version: 13\r\n\r\n";
    char head[1024];
    size_t got = 0;
    int sv[2], sndbuf = 4096, i;

    memset(lp, 0, sizeof(*lp));
    lp->base = event_base_new();
    ck_assert_ptr_nonnull(lp->base);
    lp->fo = xg_client_fanout_new(lp->base);
    ck_assert_ptr_nonnull(lp->fo);
    lp->l.lc = mc->listens;
    lp->l.gc = xg_gateway_conf_get(mc);
    lp->l.base = lp->base;
    lp->l.fo = lp->fo;
    lp->l.pm = &cp_module;
    snprintf(lp->l.addr, sizeof(lp->l.addr), "test");
    ck_assert_int_eq(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
    ck_assert_int_eq(fcntl(sv[1], F_SETFL, O_NONBLOCK), 0);
    ck_assert_int_eq(setsockopt(sv[0], SOL_SOCKET, SO_SNDBUF, &sndbuf,
        sizeof(sndbuf)), 0);
    lp->peer = sv[1];
    lp->l.nclients++;
    lp->c = xg_client_new_ws(&lp->l, sv[0], NULL);
    ck_assert_ptr_nonnull(lp->c);
    ck_assert_int_eq(write(lp->peer, req, sizeof(req) - 1),
        (int) sizeof(req) - 1);
    for (i = 0; i < 100 && strstr(head, "\r\n\r\n") == NULL; i++) {
        ssize_t n;

        head[got] = '\0';
        loop_pass(lp);
        n = read(lp->peer, head + got, sizeof(head) - 1 - got);
        if (n > 0) {
            got += (size_t) n;
        }
        head[got] = '\0';
    }
    ck_assert_msg(strncmp(head, "HTTP/1.1 101", 12) == 0, "answer: %s", head);
    /* a 101 head and nothing after it */
    ck_assert(strstr(head, "\r\n\r\n") + 4 == head + got);
}

/*
 * Reads WANT text frames from LP's bot end, running LP's loop in between
 * (so that what is queued gets written): their payloads, each followed by
 * '\n', into OUT (CAP bytes).
 */
static void
peer_frames(struct loop *lp, int want, char *out, size_t cap)
{
    static unsigned char in[1 << 20];
    size_t have = 0, pos = 0, o = 0;
    int got = 0, i;

    for (i = 0; i < 10000 && got < want; i++) {
        ssize_t n;

        loop_pass(lp);
        n = read(lp->peer, in + have, sizeof(in) - have);
        if (n > 0) {
            have += (size_t) n;
        }
        for (;;) {
            size_t hl = 2, pl;

            if (have - pos < 2) {
                break;
            }
            ck_assert_int_eq(in[pos], 0x81);    /* FIN, text, no RSV */
            pl = in[pos + 1];
            ck_assert_int_lt((int) pl, 127);    /* not masked, < 64 KiB */
            if (pl == 126) {
                if (have - pos < 4) {
                    break;
                }
                pl = (size_t) in[pos + 2] << 8 | in[pos + 3];
                hl = 4;
            }
            if (have - pos < hl + pl) {
                break;
            }
            ck_assert(o + pl + 1 < cap);
            memcpy(out + o, in + pos + hl, pl);
            o += pl;
            out[o++] = '\n';
            pos += hl + pl;
            got++;
        }
    }
    out[o] = '\0';
    ck_assert_int_eq(got, want);
    ck_assert_int_eq((int) pos, (int) have);
}

/* A counter of LP's fan-out, as /status shows it. */
static long long
fanout_io(struct loop *lp, const char *name)
{
    json_t *root = json_object();
    long long v;

    xg_client_fanout_status(root, lp->fo);
    v = json_integer_value(json_object_get(json_object_get(root, "fanout"),
        name));
    json_decref(root);
    return v;
}

/*
 * The fan-out encodes a batch's frames in a buffer it reuses for the next
 * batch. A batch the socket takes only in part must be queued from a copy
 * of its own: here the second batch is encoded while the first one's rest
 * still waits, and the bot must get both whole and in order. Then the
 * socket, drained, takes a batch whole, and an answer comes after it.
 */
START_TEST(fanout_ws_partial_batch_kept)
{
    static char want[200000], got[200000];
    struct loop a;
    char msg[400];
    size_t w = 0;
    int b, k;

    loop_open_ws(&a);
    for (b = 0; b < 2; b++) {
        for (k = 0; k < 100; k++) {
            int n = snprintf(msg, sizeof(msg), "{\"batch\":%d,\"k\":%d,"
                "\"pad\":\"%0250d\"}", b, k, b * 1000 + k);

            fanout(&a, msg);
            memcpy(want + w, msg, (size_t) n);
            w += (size_t) n;
            want[w++] = '\n';
        }
        loop_pass(&a);      /* the batch goes out: in part, then queued */
    }
    want[w] = '\0';
    /* the first batch was taken in part, and the second one queued */
    ck_assert_int_ge(fanout_io(&a, "partial") + fanout_io(&a, "would_block"),
        1);
    ck_assert_int_gt(fanout_io(&a, "queued_bytes"), 25000);
    peer_frames(&a, 200, got, sizeof(got));
    ck_assert_str_eq(got, want);

    fanout(&a, "{\"n\":1}");
    fanout(&a, "{\"n\":2}");
    ck_assert_int_eq(xg_client_send(a.c, "{\"r\":1}", 7), XG_OK);
    peer_frames(&a, 3, got, sizeof(got));
    ck_assert_str_eq(got, "{\"n\":1}\n{\"n\":2}\n{\"r\":1}\n");
    loop_close(&a);
    loop_free(&a);
}
END_TEST

/* ---- a sink client (no listener) among the fan-out's recipients -------- */

static char sink_got[256];

static void
sink_cb(void *arg, const char *data, size_t len)
{
    size_t have = strlen(sink_got);

    ck_assert_uint_lt(have + len + 1, sizeof(sink_got));
    memcpy(sink_got + have, data, len);
    sink_got[have + len] = '\n';
    sink_got[have + len + 1] = '\0';
    (*(int *) arg)++;
}

/*
 * A sink client (the core's client for an edge, issue 17) has no
 * listener, so no loop's batch: a fan-out to it goes where its messages
 * go, at once and in order, whether it is alone, first or last among the
 * recipients; the socket clients beside it get theirs at the end of the
 * pass as before. Before the guard, the fan-out took the batch from the
 * first recipient's listener (NULL for a sink: a crash), and the batch's
 * flush wrote to a sink as to a TCP client (no bufferevent: a crash).
 */
START_TEST(fanout_to_sink)
{
    struct loop a;
    struct xg_client *sink, *to[2];
    int calls = 0;

    loop_open(&a);
    sink_got[0] = '\0';
    sink = xg_client_new_sink(a.base, a.l.gc, "edge-test", sink_cb, &calls);

    /* alone */
    to[0] = sink;
    xg_client_fanout(to, 1, "s1", 2);
    ck_assert_str_eq(sink_got, "s1\n");
    /* first, then last, beside a TCP client */
    to[1] = a.c;
    xg_client_fanout(to, 2, "s2", 2);
    ck_assert_str_eq(sink_got, "s1\ns2\n");
    ck_assert_str_eq(peer_read(&a), "");
    to[0] = a.c;
    to[1] = sink;
    xg_client_fanout(to, 2, "s3", 2);
    ck_assert_str_eq(sink_got, "s1\ns2\ns3\n");
    loop_pass(&a);
    ck_assert_str_eq(peer_read(&a), "s2\ns3\n");
    ck_assert_int_eq(calls, 3);
    /* a closing sink gets nothing more */
    xg_client_close(sink, 1000, "test");
    xg_client_fanout(to, 2, "s4", 2);
    loop_pass(&a);
    ck_assert_str_eq(peer_read(&a), "s4\n");
    ck_assert_int_eq(calls, 3);

    xg_client_sink_free(sink);
    loop_close(&a);
    loop_free(&a);
}
END_TEST

static Suite *
client_suite(void)
{
    Suite *s = suite_create("xg_client");
    TCase *tc = tcase_create("fanout");

    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, fanout_at_end_of_pass);
    tcase_add_test(tc, fanout_flushed_before_answer);
    tcase_add_test(tc, fanout_two_loops_side_by_side);
    tcase_add_test(tc, fanout_loops_in_turn);
    tcase_add_test(tc, fanout_ws_partial_batch_kept);
    tcase_add_test(tc, fanout_to_sink);
    suite_add_tcase(s, tc);
    return s;
}

int
main(void)
{
    SRunner *sr = srunner_create(client_suite());
    int failed;

    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
