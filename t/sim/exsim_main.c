/*
 * exsim_main.c: the simulator's command line, its two listeners (the
 * WebSocket API and the line-based control port), the control commands,
 * stats, bench mode, and a clean shutdown that frees everything.
 */
#include "exsim.h"

#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <openssl/err.h>

#define CTL_MAX_LINE      4096
#define BENCH_BATCH       64          /* messages a channel per loop turn */
#define BENCH_MAX_OUTPUT  (1u << 20)  /* flat out waits above this */

struct exsim *ex;

struct exsim_ctl {
    struct exsim_ctl   *next;
    struct bufferevent *bev;
    int                 quit_after_write;
};

/* ---- random ------------------------------------------------------------- */

/* splitmix64: a seeded, reproducible stream (--seed). */
uint64_t
exsim_rand(void)
{
    uint64_t z = (ex->rng += 0x9e3779b97f4a7c15ull);

    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

double
exsim_rand01(void)
{
    return (double) (exsim_rand() >> 11) / 9007199254740992.0;
}

/* Leaves the event loop; main() frees everything. */
void
exsim_quit(void)
{
    ex->quitting = 1;
    event_base_loopbreak(ex->base);
}

/* ---- bench -------------------------------------------------------------- */

static uint64_t bench_last_us;
static double bench_carry;

static void
bench_publish(struct exsim_chan *ch)
{
    char head[256], *buf;
    struct timespec ts;
    size_t size = (size_t) ex->o.bench_size, n, pad;
    uint64_t ns;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    ns = (uint64_t) ts.tv_sec * 1000000000ull + (uint64_t) ts.tv_nsec;
    n = (size_t) snprintf(head, sizeof(head),
        "{\"jsonrpc\":\"2.0\",\"method\":\"subscription\",\"params\":"
        "{\"channel\":\"%s\",\"data\":{\"seq\":%llu,\"ts_ns\":%llu,"
        "\"pad\":\"", ch->name, (unsigned long long) ch->seq++,
        (unsigned long long) ns);
    pad = size > n + 4 ? size - n - 4 : 0;
    buf = xg_malloc(n + pad + 5);
    memcpy(buf, head, n);
    memset(buf + n, 'x', pad);
    memcpy(buf + n + pad, "\"}}}", 4);
    exsim_publish_text(ch, buf, n + pad + 4);
    free(buf);
}

static int
bench_backlogged(struct exsim_chan *ch)
{
    size_t i;

    for (i = 0; i < ch->nsubs; i++) {
        if (ch->subs[i]->ws != NULL
            && xg_ws_output_len(ch->subs[i]->ws) > BENCH_MAX_OUTPUT)
        {
            return 1;
        }
    }
    return 0;
}

/* One message on every subscribed bench channel, COUNT times. */
static void
bench_round(long count)
{
    struct exsim_chan *ch;
    long i;

    for (ch = ex->chans; ch != NULL; ch = ch->lnext) {
        if (ch->kind != EXSIM_CH_BENCH || ch->nsubs == 0) {
            continue;
        }
        for (i = 0; i < count; i++) {
            bench_publish(ch);
        }
    }
}

static void bench_arm(void);

/* Subscribed bench channels. */
static size_t
bench_channels(void)
{
    struct exsim_chan *ch;
    size_t nch = 0;

    for (ch = ex->chans; ch != NULL; ch = ch->lnext) {
        nch += ch->kind == EXSIM_CH_BENCH && ch->nsubs > 0;
    }
    return nch;
}

/*
 * Spread (`spread on`): COUNT messages one at a time, each on the next
 * subscribed bench channel in turn: each channel still gets the rate, but
 * no two at the same instant (a timer of 1 ms), where a round publishes
 * on every channel at once.
 */
static void
bench_in_turn(long count)
{
    struct exsim_chan *ch;
    size_t nch = bench_channels(), k;
    long i;

    for (i = 0; i < count && nch > 0; i++) {
        k = ex->bench_next++ % nch;
        for (ch = ex->chans; ch != NULL; ch = ch->lnext) {
            if (ch->kind == EXSIM_CH_BENCH && ch->nsubs > 0 && k-- == 0) {
                bench_publish(ch);
                break;
            }
        }
    }
}

/*
 * Rate > 0: as many rounds as the clock asks for. Rate 0 (flat out): up to
 * BENCH_BATCH messages a channel per loop turn, only while no subscriber
 * has more than BENCH_MAX_OUTPUT queued, so the loop keeps serving I/O,
 * and, once `credit` was given, only as many as the credit allows: the
 * bench client grants more as its slowest connection catches up, which
 * paces a gateway that queues for its clients instead of pushing back.
 */
static void
bench_cb(evutil_socket_t fd, short what, void *arg)
{
    struct exsim_chan *ch;
    uint64_t now = xg_now_us();
    double steps;
    long n;

    if (ex->stall) {
        bench_arm();
        return;
    }
    if (ex->rate > 0 && ex->bench_spread) {
        double hz = ex->rate * (double) bench_channels();

        steps = (double) (now - bench_last_us) / 1e6 * hz + bench_carry;
        bench_last_us = now;
        n = (long) steps;
        bench_carry = steps - (double) n;
        if ((double) n > hz / 10 + 1) {
            n = (long) (hz / 10 + 1);
            bench_carry = 0;
        }
        bench_in_turn(n);
        return;
    }
    if (ex->rate > 0) {
        steps = (double) (now - bench_last_us) / 1e6 * ex->rate + bench_carry;
        bench_last_us = now;
        n = (long) steps;
        bench_carry = steps - (double) n;
        /* a lag of more than 100 ms is not made up in one burst */
        if ((double) n > ex->rate / 10 + 1) {
            n = (long) (ex->rate / 10 + 1);
            bench_carry = 0;
        }
        bench_round(n);
        return;
    }
    for (ch = ex->chans; ch != NULL; ch = ch->lnext) {
        long i;

        if (ch->kind != EXSIM_CH_BENCH || ch->nsubs == 0) {
            continue;
        }
        for (i = 0; i < BENCH_BATCH && !bench_backlogged(ch)
             && ex->bench_credit != 0; i++) {
            bench_publish(ch);
            if (ex->bench_credit > 0) {
                ex->bench_credit--;
            }
        }
    }
    bench_arm();
}

static void
bench_arm(void)
{
    struct timeval tv = { 0, 0 };
    struct exsim_chan *ch;
    int backlog = 0, subs = 0;

    if (ex->bench_ev == NULL || ex->rate > 0 || ex->quitting) {
        return;
    }
    for (ch = ex->chans; ch != NULL; ch = ch->lnext) {
        if (ch->kind == EXSIM_CH_BENCH && ch->nsubs > 0) {
            subs = 1;
            backlog |= bench_backlogged(ch);
        }
    }
    if (!subs || ex->bench_credit == 0) {
        return;     /* idle until a subscribe or a credit kicks us */
    }
    /* backlogged: on_drain kicks us, the 1 ms timer is a fallback */
    tv.tv_usec = backlog ? 1000 : 0;
    event_add(ex->bench_ev, &tv);
}

/* A connection's output drained: flat-out bench may go on. */
void
exsim_bench_kick(void)
{
    if (ex->bench_ev != NULL && ex->rate <= 0 && !ex->quitting) {
        event_del(ex->bench_ev);
        bench_arm();
    }
}

static void
bench_set_rate(double hz)
{
    struct timeval tv = { 0, 0 };
    double period;

    ex->rate = hz;
    if (ex->bench_ev != NULL) {
        event_free(ex->bench_ev);
    }
    if (hz <= 0) {
        /* flat out: a one-shot timer re-armed by every round */
        ex->bench_ev = event_new(ex->base, -1, 0, bench_cb, NULL);
        bench_arm();
        return;
    }
    ex->bench_ev = event_new(ex->base, -1, EV_PERSIST, bench_cb, NULL);
    period = ex->bench_spread ? 0.001 : 1.0 / hz;
    if (period < 0.001) {
        period = 0.001;
    }
    tv.tv_sec = (time_t) period;
    tv.tv_usec = (suseconds_t) ((period - (double) tv.tv_sec) * 1e6);
    bench_last_us = xg_now_us();
    bench_carry = 0;
    event_add(ex->bench_ev, &tv);
}

/* ---- stats -------------------------------------------------------------- */

static json_t *
stats_json(void)
{
    json_t *subs = json_object(), *accts = json_object();
    struct exsim_chan *ch;
    struct exsim_account *a;

    for (a = ex->accounts; a != NULL; a = a->next) {
        json_object_set_new(accts, a->id, json_pack("{s:I, s:I, s:I}",
            "orders_placed", (json_int_t) a->orders_placed,
            "orders_open", (json_int_t) exsim_orders_open(a),
            "rate_limited", (json_int_t) a->rate_limited));
    }

    for (ch = ex->chans; ch != NULL; ch = ch->lnext) {
        if (ch->nsubs > 0) {
            json_object_set_new(subs, ch->name, json_integer((json_int_t)
                ch->nsubs));
        }
    }
    return json_pack("{s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:O, s:o, s:I,"
        " s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:b, s:b, s:f, s:O, s:O,"
        " s:O, s:o}",
        "connections_total", (json_int_t) ex->st.connections_total,
        "upgrades", (json_int_t) ex->st.upgrades,
        "refused", (json_int_t) ex->st.refused,
        "connections_open", (json_int_t) ex->st.connections_open,
        "max_concurrent", (json_int_t) ex->st.max_concurrent,
        "auth_ok", (json_int_t) ex->st.auth_ok,
        "auth_fail", (json_int_t) ex->st.auth_fail,
        "requests", ex->st.requests,
        "subscribed", subs,
        "published", (json_int_t) ex->st.published,
        "orders_open", (json_int_t) exsim_orders_open(NULL),
        "cod_cancels", (json_int_t) ex->st.cod_cancels,
        "closes_cod_on", (json_int_t) ex->st.closes_cod_on,
        "delivered", (json_int_t) ex->st.delivered,
        "rate_limited", (json_int_t) ex->st.rate_limited,
        "heartbeat_closes", (json_int_t) ex->st.heartbeat_closes,
        "slow_closes", (json_int_t) ex->st.slow_closes,
        "held_lost", (json_int_t) ex->st.held_lost,
        "stall", ex->stall,
        "maintenance", ex->maintenance,
        "rate", ex->rate,
        "subscribes", ex->sub_counts,
        "grants", ex->st.grants,
        "tls_sni", ex->st.tls_sni,
        "accounts", accts);
}

/* ---- control port ------------------------------------------------------- */

static json_t *
ctl_err(const char *fmt, const char *arg)
{
    char buf[256];

    snprintf(buf, sizeof(buf), fmt, arg ? arg : "");
    return json_pack("{s:b, s:s}", "ok", 0, "error", buf);
}

static json_t *
ctl_ok(void)
{
    return json_pack("{s:b}", "ok", 1);
}

static int
onoff(const char *s)
{
    if (s != NULL && strcmp(s, "on") == 0) {
        return 1;
    }
    if (s != NULL && strcmp(s, "off") == 0) {
        return 0;
    }
    return -1;
}

static int
parse_long(const char *s, long lo, long hi, long *out)
{
    char *end;
    long v;

    if (s == NULL || *s == '\0') {
        return -1;
    }
    errno = 0;
    v = strtol(s, &end, 10);
    if (errno != 0 || *end != '\0' || v < lo || v > hi) {
        return -1;
    }
    *out = v;
    return 0;
}

static json_t *
ctl_command(struct exsim_ctl *k, char *line)
{
    char *save = NULL, *cmd = strtok_r(line, " \t\r", &save);
    char *a1 = strtok_r(NULL, " \t\r", &save);
    struct exsim_conn *c;
    long n;
    int v;

    if (cmd == NULL) {
        return ctl_err("empty command", NULL);
    }
    if (strcmp(cmd, "stats") == 0) {
        return stats_json();
    }
    if (strcmp(cmd, "drop") == 0) {
        /* drop [public|ACCOUNT_ID]: every connection, or those not
           authenticated, or those of one account */
        n = 0;
        for (c = ex->conns; c != NULL; c = c->next) {
            if (a1 != NULL && (strcmp(a1, "public") == 0
                               ? c->acct != NULL
                               : c->acct == NULL
                                 || strcmp(c->acct->id, a1) != 0))
            {
                continue;
            }
            if (!c->down && c->ws != NULL) {
                exsim_conn_drop(c);
                n++;
            }
        }
        xg_log_info("exsim: control: %ld connections dropped", n);
        return json_pack("{s:b, s:i}", "ok", 1, "dropped", (int) n);
    }
    if (strcmp(cmd, "close") == 0) {
        char *reason = strtok_r(NULL, "\r", &save);

        if (parse_long(a1, 1000, 4999, &n) != 0 || n == 1004 || n == 1005
            || n == 1006 || n == 1015)
        {
            return ctl_err("close CODE [REASON]: bad code \"%s\"", a1);
        }
        if (reason != NULL && strlen(reason) > 123) {
            return ctl_err("close: reason over 123 bytes", NULL);
        }
        v = 0;
        for (c = ex->conns; c != NULL; c = c->next) {
            if (!c->down && c->ws != NULL && !c->closing && c->open) {
                exsim_conn_close(c, (int) n, reason ? reason : "");
                v++;
            }
        }
        xg_log_info("exsim: control: close %ld on %d connections", n, v);
        return json_pack("{s:b, s:i}", "ok", 1, "closed", v);
    }
    if (strcmp(cmd, "stall") == 0) {
        if ((v = onoff(a1)) < 0) {
            return ctl_err("stall on|off", NULL);
        }
        ex->stall = v;
        for (c = ex->conns; c != NULL; c = c->next) {
            exsim_conn_stall(c, v);
            c->test_deadline_us = 0;
        }
        xg_log_info("exsim: control: stall %s", v ? "on" : "off");
        if (!v) {
            exsim_bench_kick();
        }
        return ctl_ok();
    }
    if (strcmp(cmd, "refuse") == 0) {
        char *st = strtok_r(NULL, " \t\r", &save);

        if ((v = onoff(a1)) < 0) {
            return ctl_err("refuse on|off [STATUS]", NULL);
        }
        n = 503;
        if (st != NULL && (parse_long(st, 200, 599, &n) != 0)) {
            return ctl_err("refuse: bad status \"%s\"", st);
        }
        ex->refuse = v ? (int) n : 0;
        xg_log_info("exsim: control: refuse %s %d", v ? "on" : "off",
            ex->refuse);
        return ctl_ok();
    }
    if (strcmp(cmd, "reject-auth") == 0) {
        if ((v = onoff(a1)) < 0) {
            return ctl_err("reject-auth on|off", NULL);
        }
        ex->reject_auth = v;
        return ctl_ok();
    }
    if (strcmp(cmd, "reject-channel") == 0) {
        char *oo = strtok_r(NULL, " \t\r", &save);

        if (a1 == NULL || (v = onoff(oo)) < 0) {
            return ctl_err("reject-channel NAME on|off", NULL);
        }
        if (v) {
            json_object_set_new(ex->reject_chan, a1, json_true());
        } else {
            json_object_del(ex->reject_chan, a1);
        }
        return ctl_ok();
    }
    if (strcmp(cmd, "delay") == 0 || strcmp(cmd, "hold") == 0) {
        /* delay: the answer waits; hold: the request itself waits, and
           runs only if its connection is still open then */
        int hold = cmd[0] == 'h';
        char *ms = strtok_r(NULL, " \t\r", &save), *end = NULL;
        json_t *tab = hold ? ex->hold_method : ex->delay_method;
        long long v;

        errno = 0;
        v = ms != NULL ? strtoll(ms, &end, 10) : -1;
        if (a1 == NULL || ms == NULL || errno != 0 || end == ms || *end
            || v < 0 || v > 600000) {
            return ctl_err(hold ? "hold METHOD MS (0..600000; 0: no hold)"
                : "delay METHOD MS (0..600000; 0: no delay)", NULL);
        }
        if (v > 0) {
            json_object_set_new(tab, a1, json_integer(v));
        } else {
            json_object_del(tab, a1);
        }
        xg_log_info("exsim: control: %s %s %lld ms", cmd, a1, v);
        return ctl_ok();
    }
    if (strcmp(cmd, "fail") == 0) {
        char *code = strtok_r(NULL, " \t\r", &save);
        char *count = strtok_r(NULL, " \t\r", &save);
        long cv;

        if (a1 == NULL || parse_long(code, -32768, 99999, &cv) != 0
            || parse_long(count, 0, 1000000, &n) != 0) {
            return ctl_err("fail METHOD CODE COUNT (the next COUNT calls of "
                "METHOD answer error CODE; 0: none)", NULL);
        }
        if (n > 0) {
            json_object_set_new(ex->fail_method, a1,
                json_pack("[I, I]", (json_int_t) cv, (json_int_t) n));
        } else {
            json_object_del(ex->fail_method, a1);
        }
        xg_log_info("exsim: control: fail %s %ld %ld", a1, cv, n);
        return ctl_ok();
    }
    if (strcmp(cmd, "mute") == 0) {
        char *oo = strtok_r(NULL, " \t\r", &save);

        if (a1 == NULL || (v = onoff(oo)) < 0) {
            return ctl_err("mute CHANNEL on|off", NULL);
        }
        if (v) {
            json_object_set_new(ex->mute_chan, a1, json_true());
        } else {
            json_object_del(ex->mute_chan, a1);
        }
        xg_log_info("exsim: control: mute %s %s", a1, v ? "on" : "off");
        return ctl_ok();
    }
    if (strcmp(cmd, "corrupt") == 0) {
        struct exsim_chan tmp, *ch;

        memset(&tmp, 0, sizeof(tmp));
        if (a1 == NULL || exsim_chan_parse(a1, &tmp) != 0
            || tmp.kind != EXSIM_CH_BOOK)
        {
            return ctl_err("corrupt CHANNEL: \"%s\" is not a book channel",
                a1);
        }
        ch = exsim_chan_find(a1);
        if (ch == NULL || ch->nsubs == 0) {
            return ctl_err("corrupt: nobody is subscribed to %s", a1);
        }
        /* a malformed snapshot (bids not an array); the chain is not
           advanced, so the next change follows the last good one */
        exsim_publish(ch, json_pack("{s:s, s:s, s:I, s:s, s:[]}", "type",
            "snapshot", "instrument_name", ch->instr ? ch->instr->name : "?",
            "change_id", (json_int_t) (ch->instr ? ch->instr->change_id : 1),
            "bids", "corrupt", "asks"));
        return ctl_ok();
    }
    if (strcmp(cmd, "rate") == 0) {
        char *end;
        double hz = a1 ? strtod(a1, &end) : -1;

        if (a1 == NULL || *end != '\0' || !(hz >= 0) || hz > 1e6) {
            return ctl_err("rate HZ (0..1000000)", NULL);
        }
        if (ex->o.bench_size > 0) {
            bench_set_rate(hz);
        } else {
            exsim_market_set_rate(hz);
        }
        return ctl_ok();
    }
    if (strcmp(cmd, "spread") == 0) {
        if (a1 == NULL || (strcmp(a1, "on") != 0 && strcmp(a1, "off") != 0)
            || ex->o.bench_size <= 0)
        {
            return ctl_err("spread on|off (with --bench)", NULL);
        }
        ex->bench_spread = strcmp(a1, "on") == 0;
        if (ex->rate > 0) {
            bench_set_rate(ex->rate);   /* its timer's period */
        }
        return ctl_ok();
    }
    if (strcmp(cmd, "gap") == 0) {
        struct exsim_chan tmp, *ch;

        memset(&tmp, 0, sizeof(tmp));
        if (a1 == NULL || exsim_chan_parse(a1, &tmp) != 0
            || tmp.kind != EXSIM_CH_BOOK)
        {
            return ctl_err("gap CHANNEL: \"%s\" is not a book channel", a1);
        }
        ch = exsim_chan_find(a1);
        if (ch == NULL) {
            return ctl_err("gap: nobody is subscribed to %s", a1);
        }
        ch->gap = 1;
        return ctl_ok();
    }
    if (strcmp(cmd, "credit") == 0) {
        if (parse_long(a1, -1, 1000000000, &n) != 0) {
            return ctl_err("credit N (-1: no pacing, else N more)", NULL);
        }
        if (n < 0) {
            ex->bench_credit = -1;
        } else {
            ex->bench_credit = (ex->bench_credit < 0 ? 0 : ex->bench_credit)
                + n;
        }
        exsim_bench_kick();
        return json_pack("{s:b, s:I}", "ok", 1, "credit",
            (json_int_t) ex->bench_credit);
    }
    if (strcmp(cmd, "burst") == 0) {
        if (parse_long(a1, 1, 1000000, &n) != 0) {
            return ctl_err("burst N (1..1000000)", NULL);
        }
        if (ex->o.bench_size > 0) {
            bench_round(n);
        } else {
            long i;

            for (i = 0; i < n; i++) {
                exsim_market_step_all();
            }
        }
        return json_pack("{s:b, s:i}", "ok", 1, "updates", (int) n);
    }
    if (strcmp(cmd, "maintenance") == 0) {
        struct exsim_chan *ch = exsim_chan_find("platform_state");

        if ((v = onoff(a1)) < 0) {
            return ctl_err("maintenance on|off", NULL);
        }
        ex->maintenance = v;
        if (v && ch != NULL) {
            exsim_publish(ch, json_pack("{s:b}", "maintenance", 1));
        }
        xg_log_info("exsim: control: maintenance %s", v ? "on" : "off");
        return ctl_ok();
    }
    if (strcmp(cmd, "quit") == 0) {
        k->quit_after_write = 1;
        return ctl_ok();
    }
    return ctl_err("unknown command \"%s\"", cmd);
}

static void
ctl_free(struct exsim_ctl *k)
{
    struct exsim_ctl **pp;

    for (pp = &ex->ctls; *pp != NULL; pp = &(*pp)->next) {
        if (*pp == k) {
            *pp = k->next;
            break;
        }
    }
    bufferevent_free(k->bev);
    free(k);
}

static void
ctl_read(struct bufferevent *bev, void *arg)
{
    struct exsim_ctl *k = arg;
    struct evbuffer *in = bufferevent_get_input(bev);
    char *line, *s;
    size_t n;

    while ((line = evbuffer_readln(in, &n, EVBUFFER_EOL_CRLF)) != NULL) {
        json_t *r;

        if (n > CTL_MAX_LINE) {
            r = ctl_err("line too long", NULL);
        } else {
            r = ctl_command(k, line);
        }
        free(line);
        s = json_dumps(r, JSON_COMPACT | JSON_REAL_PRECISION(12));
        json_decref(r);
        if (s != NULL) {
            evbuffer_add_printf(bufferevent_get_output(bev), "%s\n", s);
            free(s);
        }
        if (k->quit_after_write) {
            xg_log_info("exsim: control: quit");
            bufferevent_disable(bev, EV_READ);
            return;
        }
    }
    if (evbuffer_get_length(in) > CTL_MAX_LINE) {
        xg_log_warn("exsim: control: line over %d bytes, closing",
            CTL_MAX_LINE);
        ctl_free(k);
    }
}

static void
ctl_write(struct bufferevent *bev, void *arg)
{
    struct exsim_ctl *k = arg;

    if (k->quit_after_write) {
        exsim_quit();
    }
}

static void
ctl_event(struct bufferevent *bev, short what, void *arg)
{
    struct exsim_ctl *k = arg;

    if (what & (BEV_EVENT_EOF | BEV_EVENT_ERROR)) {
        if (k->quit_after_write) {
            exsim_quit();
        }
        ctl_free(k);
    }
}

static void
ctl_accept(struct evconnlistener *l, evutil_socket_t fd,
    struct sockaddr *sa, int len, void *arg)
{
    struct exsim_ctl *k = xg_calloc(1, sizeof(*k));

    k->bev = bufferevent_socket_new(ex->base, fd, BEV_OPT_CLOSE_ON_FREE);
    bufferevent_setcb(k->bev, ctl_read, ctl_write, ctl_event, k);
    bufferevent_enable(k->bev, EV_READ | EV_WRITE);
    k->next = ex->ctls;
    ex->ctls = k;
}

/* ---- listeners ---------------------------------------------------------- */

static void
ws_accept(struct evconnlistener *l, evutil_socket_t fd, struct sockaddr *sa,
    int len, void *arg)
{
    int one = 1;

    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    exsim_conn_accept(fd);
}

static void
lev_error(struct evconnlistener *l, void *arg)
{
    int err = EVUTIL_SOCKET_ERROR();

    xg_log_warn("exsim: %s listener: accept: %s", (const char *) arg,
        evutil_socket_error_to_string(err));
}

/*
 * ADDR:PORT or [ADDR6]:PORT; libevent's parser refuses port 0, which here
 * means "pick a free port".
 */
static int
parse_addr(const char *spec, struct sockaddr_storage *ss, int *len)
{
    char host[128];
    const char *colon = strrchr(spec, ':');
    size_t hl;
    long port;
    char *end;

    if (colon == NULL || colon == spec) {
        return -1;
    }
    port = strtol(colon + 1, &end, 10);
    if (colon[1] == '\0' || *end != '\0' || port < 0 || port > 65535) {
        return -1;
    }
    hl = (size_t) (colon - spec);
    if (spec[0] == '[' && hl >= 2 && spec[hl - 1] == ']') {
        spec++;
        hl -= 2;
    }
    if (hl >= sizeof(host)) {
        return -1;
    }
    memcpy(host, spec, hl);
    host[hl] = '\0';
    if (evutil_inet_pton(AF_INET, host,
        &((struct sockaddr_in *) ss)->sin_addr) == 1)
    {
        ((struct sockaddr_in *) ss)->sin_family = AF_INET;
        ((struct sockaddr_in *) ss)->sin_port = htons((uint16_t) port);
        *len = (int) sizeof(struct sockaddr_in);
        return 0;
    }
    if (evutil_inet_pton(AF_INET6, host,
        &((struct sockaddr_in6 *) ss)->sin6_addr) == 1)
    {
        ((struct sockaddr_in6 *) ss)->sin6_family = AF_INET6;
        ((struct sockaddr_in6 *) ss)->sin6_port = htons((uint16_t) port);
        *len = (int) sizeof(struct sockaddr_in6);
        return 0;
    }
    return -1;
}

static struct evconnlistener *
listen_on(const char *spec, evconnlistener_cb cb, const char *what, int *port)
{
    struct sockaddr_storage ss;
    int len = (int) sizeof(ss);
    struct evconnlistener *l;
    socklen_t sl = sizeof(ss);

    memset(&ss, 0, sizeof(ss));
    if (parse_addr(spec, &ss, &len) != 0) {
        fprintf(stderr, "exsim: --%s %s: expected ADDR:PORT\n", what, spec);
        return NULL;
    }
    l = evconnlistener_new_bind(ex->base, cb, NULL,
        LEV_OPT_CLOSE_ON_FREE | LEV_OPT_REUSEABLE | LEV_OPT_CLOSE_ON_EXEC,
        128, (struct sockaddr *) &ss, len);
    if (l == NULL) {
        fprintf(stderr, "exsim: --%s %s: %s\n", what, spec, strerror(errno));
        return NULL;
    }
    evconnlistener_set_error_cb(l, lev_error);
    getsockname(evconnlistener_get_fd(l), (struct sockaddr *) &ss, &sl);
    *port = ntohs(ss.ss_family == AF_INET6
        ? ((struct sockaddr_in6 *) &ss)->sin6_port
        : ((struct sockaddr_in *) &ss)->sin_port);
    return l;
}

/*
 * Every ClientHello: counts the server name it carried (SNI) in stats
 * tls_sni, "(none)" when it had none, so a test can see what a client
 * sent. Never refuses a handshake.
 */
static int
tls_on_servername(SSL *ssl, int *alert, void *arg)
{
    const char *name = SSL_get_servername(ssl, TLSEXT_NAMETYPE_host_name);
    const char *key = name != NULL ? name : "(none)";

    if (strlen(key) > 64 || (json_object_get(ex->st.tls_sni, key) == NULL
        && json_object_size(ex->st.tls_sni) >= 64))
    {
        key = "(other)";
    }
    json_object_set_new(ex->st.tls_sni, key, json_integer(1
        + json_integer_value(json_object_get(ex->st.tls_sni, key))));
    return SSL_TLSEXT_ERR_OK;
}

static SSL_CTX *
tls_ctx(const char *cert, const char *key)
{
    SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
    char buf[512];

    if (ctx == NULL
        || SSL_CTX_use_certificate_chain_file(ctx, cert) != 1
        || SSL_CTX_use_PrivateKey_file(ctx, key, SSL_FILETYPE_PEM) != 1
        || SSL_CTX_check_private_key(ctx) != 1)
    {
        fprintf(stderr, "exsim: tls %s / %s: %s\n", cert, key,
            xg_log_ssl_errors(buf, sizeof(buf)));
        SSL_CTX_free(ctx);
        return NULL;
    }
    SSL_CTX_set_tlsext_servername_callback(ctx, tls_on_servername);
    return ctx;
}

static void
on_signal(evutil_socket_t sig, short what, void *arg)
{
    xg_log_info("exsim: signal %d, quitting", (int) sig);
    exsim_quit();
}

/* ---- main --------------------------------------------------------------- */

static void
usage(FILE *fp)
{
    fprintf(fp,
"usage: exsim [--listen ADDR:PORT] [--control ADDR:PORT]\n"
"             [--tls-cert FILE --tls-key FILE] [--rate HZ]\n"
"             [--instruments A,B,...] [--client-id ID --client-secret S]\n"
"             [--account ID:SECRET ...]\n"
"             [--expires-in SECONDS] [--min-heartbeat SECONDS] [--seed N]\n"
"             [--bench SIZE] [--no-rate-limit] [--raw-unauth-omit]\n"
"             [--require-access-token] [--string-timestamp]\n"
"             [--no-aggregate] [--max-connections N] [--production]\n"
"             [--max-output BYTES] [--log-level error|warn|info|debug]\n"
"Port 0 picks a free port. Prints \"exsim ready ws=PORT control=PORT\".\n");
}

static int
num_arg(const char *name, const char *s, double lo, double hi, double *out)
{
    char *end;
    double v = strtod(s, &end);

    if (*s == '\0' || *end != '\0' || !(v >= lo && v <= hi)) {
        fprintf(stderr, "exsim: --%s %s: expected a number in %g..%g\n",
            name, s, lo, hi);
        return -1;
    }
    *out = v;
    return 0;
}

static void
free_all(void)
{
    struct exsim_ctl *k;
    int i;

    if (ex->ws_lev != NULL) {
        evconnlistener_free(ex->ws_lev);
    }
    if (ex->ctl_lev != NULL) {
        evconnlistener_free(ex->ctl_lev);
    }
    while ((k = ex->ctls) != NULL) {
        ctl_free(k);
    }
    ex->quitting = 1;
    /* our own timers go first: a self-rearming one would keep the
       non-blocking loop below from ever returning */
    if (ex->market_ev) {
        event_free(ex->market_ev);
    }
    if (ex->agg_ev) {
        event_free(ex->agg_ev);
    }
    if (ex->bench_ev) {
        event_free(ex->bench_ev);
        ex->bench_ev = NULL;
    }
    if (ex->sig_int) {
        event_free(ex->sig_int);
    }
    if (ex->sig_term) {
        event_free(ex->sig_term);
    }
    exsim_conn_free_all();
    exsim_chan_free_all();
    /* let the transport run its deferred frees */
    for (i = 0; ex->base != NULL && i < 4; i++) {
        event_base_loop(ex->base, EVLOOP_NONBLOCK);
    }
    if (ex->reap_ev) {
        event_free(ex->reap_ev);
    }
    exsim_trade_free_all();
    exsim_auth_free_all();
    exsim_accounts_free();
    exsim_ippools_free();
    exsim_market_free();
    json_decref(ex->st.requests);
    json_decref(ex->st.grants);
    json_decref(ex->st.tls_sni);
    json_decref(ex->reject_chan);
    json_decref(ex->mute_chan);
    json_decref(ex->delay_method);
    json_decref(ex->hold_method);
    json_decref(ex->fail_method);
    exsim_delayed_free_all();
    json_decref(ex->sub_counts);
    SSL_CTX_free(ex->tls);
    if (ex->base != NULL) {
        event_base_free(ex->base);
    }
}

int
main(int argc, char **argv)
{
    static const struct option lopts[] = {
        { "listen", required_argument, NULL, 'l' },
        { "control", required_argument, NULL, 'c' },
        { "tls-cert", required_argument, NULL, 'C' },
        { "tls-key", required_argument, NULL, 'K' },
        { "rate", required_argument, NULL, 'r' },
        { "instruments", required_argument, NULL, 'i' },
        { "client-id", required_argument, NULL, 'u' },
        { "client-secret", required_argument, NULL, 'p' },
        { "expires-in", required_argument, NULL, 'e' },
        { "min-heartbeat", required_argument, NULL, 'm' },
        { "seed", required_argument, NULL, 's' },
        { "bench", required_argument, NULL, 'b' },
        { "no-rate-limit", no_argument, NULL, 1 },
        { "raw-unauth-omit", no_argument, NULL, 2 },
        { "require-access-token", no_argument, NULL, 3 },
        { "string-timestamp", no_argument, NULL, 4 },
        { "no-aggregate", no_argument, NULL, 5 },
        { "max-connections", required_argument, NULL, 6 },
        { "production", no_argument, NULL, 7 },
        { "log-level", required_argument, NULL, 8 },
        { "max-output", required_argument, NULL, 9 },
        { "account", required_argument, NULL, 10 },
        { "help", no_argument, NULL, 'h' },
        { NULL, 0, NULL, 0 }
    };
    struct exsim exs;
    struct exsim_account *a;
    const char **extra = NULL;
    size_t nextra = 0, i;
    double v;
    int ch, rc = 1;

    memset(&exs, 0, sizeof(exs));
    ex = &exs;
    ex->bench_credit = -1;          /* flat out is not paced */
    ex->o.listen = "127.0.0.1:0";
    ex->o.control = "127.0.0.1:0";
    ex->o.rate = 10;
    ex->o.client_id = "exsim";
    ex->o.client_secret = "exsim-secret";
    ex->o.expires_in = 900;
    ex->o.min_heartbeat = 10;
    ex->o.seed = 1;
    ex->o.max_connections = 32;
    ex->o.max_output = 64u << 20;

    while ((ch = getopt_long(argc, argv, "h", lopts, NULL)) != -1) {
        switch (ch) {
        case 'l': ex->o.listen = optarg; break;
        case 'c': ex->o.control = optarg; break;
        case 'C': ex->o.tls_cert = optarg; break;
        case 'K': ex->o.tls_key = optarg; break;
        case 'r':
            if (num_arg("rate", optarg, 0, 1e6, &ex->o.rate) != 0) {
                return 2;
            }
            break;
        case 'i': ex->o.instruments = optarg; break;
        case 'u': ex->o.client_id = optarg; break;
        case 'p': ex->o.client_secret = optarg; break;
        case 'e':
            if (num_arg("expires-in", optarg, 0.1, 1e9, &ex->o.expires_in)
                != 0)
            {
                return 2;
            }
            break;
        case 'm':
            if (num_arg("min-heartbeat", optarg, 0.05, 3600,
                &ex->o.min_heartbeat) != 0)
            {
                return 2;
            }
            break;
        case 's':
            if (num_arg("seed", optarg, 0, 1e18, &v) != 0) {
                return 2;
            }
            ex->o.seed = (uint64_t) v;
            break;
        case 'b':
            if (num_arg("bench", optarg, 1, 16 << 20, &v) != 0) {
                return 2;
            }
            ex->o.bench_size = (long) v;
            break;
        case 1: ex->o.no_rate_limit = 1; break;
        case 2: ex->o.raw_unauth_omit = 1; break;
        case 3: ex->o.require_token = 1; break;
        case 4: ex->o.string_timestamp = 1; break;
        case 5: ex->o.no_aggregate = 1; break;
        case 6:
            if (num_arg("max-connections", optarg, 0, 1e6, &v) != 0) {
                return 2;
            }
            ex->o.max_connections = (int) v;
            break;
        case 7: ex->o.production = 1; break;
        case 8:
            if ((ch = xg_log_level_parse(optarg)) < 0) {
                fprintf(stderr, "exsim: --log-level %s: unknown\n", optarg);
                return 2;
            }
            xg_log_level = ch;
            break;
        case 9:
            if (num_arg("max-output", optarg, 4096, 1e12, &v) != 0) {
                return 2;
            }
            ex->o.max_output = (size_t) v;
            break;
        case 10:
            {
                const char *colon = strchr(optarg, ':');

                if (colon == NULL || colon == optarg || colon[1] == '\0') {
                    fprintf(stderr, "exsim: --account %s: expected"
                        " ID:SECRET\n", optarg);
                    free(extra);
                    return 2;
                }
                extra = xg_realloc(extra, (nextra + 1) * sizeof(*extra));
                extra[nextra++] = optarg;
            }
            break;
        case 'h':
            free(extra);
            usage(stdout);
            return 0;
        default:
            free(extra);
            usage(stderr);
            return 2;
        }
    }
    if (optind != argc) {
        free(extra);
        usage(stderr);
        return 2;
    }
    if ((ex->o.tls_cert == NULL) != (ex->o.tls_key == NULL)) {
        fprintf(stderr, "exsim: --tls-cert and --tls-key go together\n");
        free(extra);
        return 2;
    }
    /* the default account first, then --account in the order given */
    if (exsim_account_add(ex->o.client_id, ex->o.client_secret) != 0) {
        fprintf(stderr, "exsim: --client-id must not be empty\n");
        free(extra);
        return 2;
    }
    for (i = 0; i < nextra; i++) {
        char *id = xg_strdup(extra[i]);
        char *colon = strchr(id, ':');

        *colon = '\0';
        if (exsim_account_add(id, colon + 1) != 0) {
            fprintf(stderr, "exsim: --account %s: client id already used\n",
                id);
            free(id);
            free(extra);
            exsim_accounts_free();
            return 2;
        }
        free(id);
    }
    free(extra);
    for (a = ex->accounts; a != NULL; a = a->next) {
        xg_log_info("exsim: account %s", a->id);
    }
    signal(SIGPIPE, SIG_IGN);
    ex->rng = ex->o.seed;
    {
        /*
         * The fixed-rate bench paces by a 1 ms timer: with epoll's
         * millisecond timeouts it fired up to 2 ms late, and that lag was
         * the larger part of every "intended" latency. A timerfd
         * (PRECISE_TIMER) fires on time.
         */
        struct event_config *cfg = event_config_new();

        if (cfg != NULL) {
            event_config_set_flag(cfg, EVENT_BASE_FLAG_PRECISE_TIMER);
            ex->base = event_base_new_with_config(cfg);
            event_config_free(cfg);
        }
    }
    ex->st.requests = json_object();
    ex->st.grants = json_object();
    ex->st.tls_sni = json_object();
    ex->reject_chan = json_object();
    ex->mute_chan = json_object();
    ex->delay_method = json_object();
    ex->hold_method = json_object();
    ex->fail_method = json_object();
    ex->sub_counts = json_object();
    if (ex->base == NULL || exsim_market_init(ex->o.instruments) != 0) {
        goto out;
    }
    if (ex->o.tls_cert != NULL
        && (ex->tls = tls_ctx(ex->o.tls_cert, ex->o.tls_key)) == NULL)
    {
        goto out;
    }
    ex->ws_lev = listen_on(ex->o.listen, ws_accept, "listen", &ex->ws_port);
    ex->ctl_lev = listen_on(ex->o.control, ctl_accept, "control",
        &ex->ctl_port);
    if (ex->ws_lev == NULL || ex->ctl_lev == NULL) {
        goto out;
    }
    ex->sig_int = evsignal_new(ex->base, SIGINT, on_signal, NULL);
    ex->sig_term = evsignal_new(ex->base, SIGTERM, on_signal, NULL);
    event_add(ex->sig_int, NULL);
    event_add(ex->sig_term, NULL);
    if (ex->o.bench_size > 0) {
        exsim_market_set_rate(10);
        bench_set_rate(ex->o.rate);
    } else {
        exsim_market_set_rate(ex->o.rate);
    }
    xg_log_info("exsim: listening ws=%d control=%d%s, %g updates/s, seed"
        " %llu", ex->ws_port, ex->ctl_port, ex->tls ? " (tls)" : "",
        ex->o.rate, (unsigned long long) ex->o.seed);
    printf("exsim ready ws=%d control=%d\n", ex->ws_port, ex->ctl_port);
    fflush(stdout);
    event_base_dispatch(ex->base);
    rc = 0;
out:
    free_all();
    return rc;
}
