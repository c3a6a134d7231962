/*
 * bench_client.c: the load side of the benchmarks. N WebSocket (or TCP
 * line) clients subscribe to the bench.* channels of exsim --bench, either
 * through exgate, through the raw baseline, through nginx, or straight to
 * exsim, and measure what arrives:
 *
 *   run      deliveries/s, sequence gaps, and latency = receive time
 *            (CLOCK_MONOTONIC) - the send time exsim embedded ("ts_ns"),
 *            plus, at a fixed --rate, latency against the intended send
 *            time of each message (no coordinated omission, see below);
 *   restore  from exsim's `drop` (control port) to the first message on
 *            every channel, and from the new upstream connection's accept
 *            (exsim's `stats` polled each millisecond, with a `burst 1` so
 *            that every restored channel publishes at once);
 *   hold     N connections held open (for the memory scenario), subscribed
 *            on request from stdin.
 *
 * One JSON line goes to stdout per run, after {"window":"start"} and
 * {"window":"end"} as the measuring window opens and closes (a driver
 * reads the system's own counters then); progress and errors to stderr.
 * The run's JSON has the client's CPU time in the window and its wait for
 * a CPU (client_cpu_s, client_wait_s): together near the window's length,
 * the client set the pace, not the system.
 *
 * The handshake and frame headers use src/xg_wsproto.h; frames are read
 * by a small in-place parser of our own rather than by xg_ws: a load
 * generator must cost less per message than what it measures, and 1000
 * xg_ws clients would each copy, reassemble and UTF-8 check every message
 * the gateway sends once. This one reads a socket into one shared buffer
 * and scans each frame where it lies.
 */
#include "config.h"

#include "bench_hist.h"
#include "xg_wsproto.h"

#include <dirent.h>
#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/resource.h>
#include <sys/socket.h>

#include <event2/event.h>
#include <jansson.h>

#define MAX_FRAME      (1 << 20)
#define READ_SIZE      (256 * 1024)
#define RBUF_SIZE      (MAX_FRAME + 64 + READ_SIZE)
#define MAX_CHANNELS   1024

enum { C_CONNECTING, C_HANDSHAKE, C_OPEN, C_CLOSED };
enum { M_RUN, M_RESTORE, M_HOLD };

struct conn {
    int           fd;
    int           state;
    int           acked;
    struct event *ev;
    char         *left;         /* bytes of an incomplete frame or line */
    size_t        nleft;
    char         *frag;         /* a fragmented message being joined */
    size_t        nfrag;
    uint64_t     *next_seq;     /* per channel: last seq + 1, 0: none */
    uint64_t     *restored;     /* per channel: restore cycle seen */
    uint64_t      got;          /* flat out: messages since the rate */
    uint32_t     *win_got;      /* per channel: deliveries in the window */
    char          key[XG_WSPROTO_KEY_LEN + 1];
};

static struct {
    /* options */
    int          ws;            /* 1: websocket, 0: tcp lines */
    char         host[64];
    int          port;
    char         path[256];
    int          n;
    int          nchan;
    int          chan0;
    double       warmup_s;
    double       duration_s;
    double       rate;
    int          mode;
    int          control_port;
    int          repeat;
    double       timeout_s;
    int          inflight_max;
    const char  *label;
    int          cpu_pids[8];   /* the system under test, for its CPU */
    int          ncpu_pids;
    int          sync;          /* --sync: the window opens when told */
    /* state */
    struct event_base *base;
    struct conn *c;
    int          next_connect;
    int          inflight;
    int          nopen;
    int          nacked;
    int          nclosed;
    int          connect_errors;
    int          subscribing;
    uint64_t     t_start;       /* ns */
    uint64_t     t_acked;
    uint64_t     t_win0, t_win1;
    int          in_window;
    uint64_t     deliveries;    /* in the window */
    uint64_t     bytes;
    uint64_t     total_msgs;
    uint64_t     gaps;
    uint64_t     resets;
    uint64_t     errors_rpc;
    double       anchor[MAX_CHANNELS];   /* per channel, ns */
    int          have_anchor[MAX_CHANNELS];
    double       anchor_shift;  /* ns the anchors moved down in-window */
    struct bench_hist h_send;
    struct bench_hist h_int;
    char         last_close[128];
    char        *rbuf;
    /* restore */
    int          rs_phase;      /* 0 wait flowing, 1 drop sent, 2 polling */
    int          rs_cycle;
    int          rs_ctl;
    struct event *rs_ev;
    struct event *rs_timer;
    char         rs_in[256 * 1024];  /* a stats reply names every channel */
    size_t       rs_nin;
    uint64_t     rs_conns0;
    uint64_t     rs_t_drop, rs_t_ack, rs_t_poll_prev, rs_t_poll;
    uint64_t     rs_t_open_lo, rs_t_open_hi;
    uint64_t     rs_t_notseen;  /* sent: the last poll without the new one */
    int          rs_open_seen;
    uint64_t     rs_pairs;
    uint64_t     rs_flowing;
    json_t      *rs_results;
    /* hold */
    struct event *stdin_ev;
    struct event *tick;
    struct event *deadline;
    int          done;
    int          failed;
    double       start_rate;    /* --start-rate: set on exsim when ready */
    int          rate_pending;  /* "rate" sent, its answer not read yet */
    uint64_t     t_rate;        /* ns: the new rate is in force after it */
    double       cpu0, cpu1;    /* the system under test, seconds */
    double       self0, self1;  /* this process */
    double       wait0, wait1;  /* its wait for a CPU */
    uint64_t     reads, reads0, reads1;  /* socket reads that got bytes */
    /* flat out paced by credit (see pace_check) */
    uint64_t     window;        /* messages a connection may lag behind */
    uint64_t     credit_at;     /* grant more when all got this many */
    int          credit_passed; /* connections that did */
    uint64_t     credits;       /* grants sent */
} B;

static uint64_t
now_ns(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t) ts.tv_sec * 1000000000ull + (uint64_t) ts.tv_nsec;
}

/* Starts timer EV to fire in S seconds. */
static void
arm(struct event *ev, double s)
{
    struct timeval tv;

    tv.tv_sec = (time_t) s;
    tv.tv_usec = (suseconds_t) ((s - floor(s)) * 1e6);
    evtimer_add(ev, &tv);
}

static void
die(const char *msg)
{
    fprintf(stderr, "bench_client: %s\n", msg);
    exit(1);
}

static void finish(void);
static void start_connects(void);
static void accounted(void);
static void all_acked(void);
static void conn_read_cb(evutil_socket_t fd, short what, void *arg);

/* ---- sending ------------------------------------------------------------ */

/*
 * Writes all LEN bytes to a fresh socket. The requests we send (an upgrade,
 * a subscribe of at most ~16 KiB, a pong) fit in an empty socket buffer, so
 * a short write is treated as a failure rather than queued.
 */
static int
send_all(struct conn *c, const void *buf, size_t len)
{
    const char *p = buf;

    while (len > 0) {
        ssize_t w = write(c->fd, p, len);

        if (w < 0 && errno == EINTR) {
            continue;
        }
        if (w <= 0) {
            return -1;
        }
        p += w;
        len -= (size_t) w;
    }
    return 0;
}

/* A client frame: masked (RFC 6455 5.3), with a fresh random mask. */
static int
send_frame(struct conn *c, int opcode, const char *data, size_t len)
{
    unsigned char hdr[XG_WSPROTO_MAX_FRAME_HEADER], mask[4];
    char *buf;
    size_t hl, i;
    uint32_t r = (uint32_t) random();
    int rc;

    memcpy(mask, &r, 4);
    hl = xg_wsproto_frame_header(hdr, opcode, len, mask);
    buf = malloc(hl + len);
    if (buf == NULL) {
        return -1;
    }
    memcpy(buf, hdr, hl);
    for (i = 0; i < len; i++) {
        buf[hl + i] = (char) (data[i] ^ mask[i & 3]);
    }
    rc = send_all(c, buf, hl + len);
    free(buf);
    return rc;
}

static int
send_text(struct conn *c, const char *s, size_t len)
{
    if (B.ws) {
        return send_frame(c, 1, s, len);
    }
    if (send_all(c, s, len) != 0) {
        return -1;
    }
    return send_all(c, "\n", 1);
}

static int
send_subscribe(struct conn *c)
{
    char *buf;
    size_t cap = 128 + (size_t) B.nchan * 16, n;
    int i, rc;

    buf = malloc(cap);
    if (buf == NULL) {
        return -1;
    }
    n = (size_t) snprintf(buf, cap, "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":"
        "\"public/subscribe\",\"params\":{\"channels\":[");
    for (i = 0; i < B.nchan; i++) {
        n += (size_t) snprintf(buf + n, cap - n, "%s\"bench.%d\"",
            i ? "," : "", B.chan0 + i);
    }
    n += (size_t) snprintf(buf + n, cap - n, "]}}");
    rc = send_text(c, buf, n);
    free(buf);
    return rc;
}

/* ---- connection life ---------------------------------------------------- */

static void
conn_close(struct conn *c, const char *why)
{
    if (c->state == C_CLOSED) {
        return;
    }
    if (c->state == C_OPEN) {
        B.nopen--;
    } else {
        B.inflight--;
    }
    if (why != NULL && B.last_close[0] == '\0') {
        snprintf(B.last_close, sizeof(B.last_close), "%s", why);
    }
    c->state = C_CLOSED;
    B.nclosed++;
    if (c->ev != NULL) {
        event_free(c->ev);
        c->ev = NULL;
    }
    if (c->fd >= 0) {
        close(c->fd);
    }
    c->fd = -1;
    free(c->left);
    c->left = NULL;
    free(c->frag);
    c->frag = NULL;
    c->nleft = 0;
    c->nfrag = 0;
    if (!B.done && B.mode != M_HOLD && B.nclosed <= 5) {
        fprintf(stderr, "bench_client: connection %d closed: %s\n",
            (int) (c - B.c), why ? why : "");
    }
    start_connects();
    accounted();
}

/*
 * Every connection opened (hold: report it) or answered (run, restore:
 * start measuring), counting the ones that failed on the way.
 */
static void
accounted(void)
{
    static int held;

    if (B.done || B.next_connect < B.n) {
        return;
    }
    if (B.mode == M_HOLD && !held && B.nopen + B.nclosed == B.n) {
        held = 1;
        printf("{\"held\":%d,\"failed\":%d}\n", B.nopen, B.nclosed);
        fflush(stdout);
    }
    if ((B.mode != M_HOLD || B.subscribing) && B.nacked + B.nclosed >= B.n
        && B.nacked > 0)
    {
        all_acked();
    }
}

static void
conn_opened(struct conn *c)
{
    c->state = C_OPEN;
    B.inflight--;
    B.nopen++;
    if (B.mode != M_HOLD || B.subscribing) {
        if (send_subscribe(c) != 0) {
            conn_close(c, "subscribe: write failed");
            return;
        }
    }
    start_connects();
    accounted();
}

static void
conn_connected(evutil_socket_t fd, short what, void *arg)
{
    struct conn *c = arg;
    char req[512];
    int err = 0, n;
    socklen_t el = sizeof(err);

    event_free(c->ev);
    c->ev = NULL;
    if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &el) != 0 || err != 0) {
        B.connect_errors++;
        conn_close(c, err ? strerror(err) : "connect failed");
        return;
    }
    c->ev = event_new(B.base, fd, EV_READ | EV_PERSIST, conn_read_cb, c);
    event_add(c->ev, NULL);
    if (!B.ws) {
        conn_opened(c);
        return;
    }
    if (xg_wsproto_make_key(c->key) != XG_OK) {
        die("RAND_bytes failed");
    }
    n = snprintf(req, sizeof(req), "GET %s HTTP/1.1\r\nHost: %s:%d\r\n"
        "Upgrade: websocket\r\nConnection: Upgrade\r\n"
        "Sec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\n\r\n",
        B.path, B.host, B.port, c->key);
    c->state = C_HANDSHAKE;
    if (send_all(c, req, (size_t) n) != 0) {
        conn_close(c, "upgrade: write failed");
    }
}

static void
conn_start(struct conn *c)
{
    struct sockaddr_in sin;
    int one = 1;

    memset(&sin, 0, sizeof(sin));
    sin.sin_family = AF_INET;
    sin.sin_port = htons((uint16_t) B.port);
    inet_pton(AF_INET, B.host, &sin.sin_addr);
    c->fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    c->state = C_CONNECTING;
    B.inflight++;
    if (c->fd < 0) {
        B.connect_errors++;
        conn_close(c, strerror(errno));
        return;
    }
    setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    if (connect(c->fd, (struct sockaddr *) &sin, sizeof(sin)) != 0
        && errno != EINPROGRESS)
    {
        B.connect_errors++;
        conn_close(c, strerror(errno));
        return;
    }
    c->ev = event_new(B.base, c->fd, EV_WRITE, conn_connected, c);
    event_add(c->ev, NULL);
}

/* Keeps at most inflight_max connects and handshakes going at once. */
static void
start_connects(void)
{
    while (!B.done && B.next_connect < B.n && B.inflight < B.inflight_max) {
        conn_start(&B.c[B.next_connect++]);
    }
}

/* ---- what arrives ------------------------------------------------------- */

/* The unsigned number right after KEY in [P, END), or -1. */
static int
scan_u64(const char *p, const char *end, const char *key, size_t klen,
    uint64_t *out, const char **after)
{
    const char *k = memmem(p, (size_t) (end - p), key, klen);
    uint64_t v = 0;

    if (k == NULL) {
        return -1;
    }
    k += klen;
    if (k >= end || *k < '0' || *k > '9') {
        return -1;
    }
    while (k < end && *k >= '0' && *k <= '9') {
        v = v * 10 + (uint64_t) (*k - '0');
        k++;
    }
    *out = v;
    if (after != NULL) {
        *after = k;
    }
    return 0;
}

static void restore_check(struct conn *c, int ch, uint64_t ts, uint64_t now);
static void rs_send(const char *cmd);

/*
 * Flat out, exsim publishes as fast as its subscriber reads. raw, nginx
 * and direct push back when their clients fall behind; a gateway that
 * queues for its clients instead (exgate) does not, and once it is faster
 * than this client reads, its queues grow until the output limit closes
 * every client. So flat out is paced end to end: exsim was given --window
 * messages of credit (per channel) when the rate went to 0, and is given a
 * quarter window more each time every open connection has received a
 * quarter window more. No connection ever lags more than a window behind
 * the generator, and the rate measured is what the whole path sustains.
 */
static void
pace_check(struct conn *c)
{
    char cmd[64];
    int i;

    if (++c->got != B.credit_at) {
        return;
    }
    if (++B.credit_passed < B.nopen) {
        return;
    }
    snprintf(cmd, sizeof(cmd), "credit %llu", (unsigned long long)
        (B.window / 4 * (uint64_t) B.nchan));
    rs_send(cmd);
    B.credits++;
    B.credit_at += B.window / 4;
    B.credit_passed = 0;
    for (i = 0; i < B.n; i++) {
        if (B.c[i].state == C_OPEN && B.c[i].got >= B.credit_at) {
            B.credit_passed++;
        }
    }
}

/* The digits at *P (before END) as a number; -1 when there are none. */
static int
digits(const char **p, const char *end, uint64_t *out)
{
    const char *q = *p;
    uint64_t v = 0;

    while (q < end && *q >= '0' && *q <= '9') {
        v = v * 10 + (uint64_t) (*q - '0');
        q++;
    }
    if (q == *p) {
        return -1;
    }
    *p = q;
    *out = v;
    return 0;
}

/*
 * Whether the N bytes at A and B are the same: eight at a time, inlined
 * (a libc memcmp call per field was 5 % of the client at 5M messages/s).
 */
static inline int
same(const char *a, const char *b, size_t n)
{
    uint64_t x, y;

    for (; n >= 8; a += 8, b += 8, n -= 8) {
        memcpy(&x, a, 8);
        memcpy(&y, b, 8);
        if (x != y) {
            return 0;
        }
    }
    for (; n > 0; n--) {
        if (*a++ != *b++) {
            return 0;
        }
    }
    return 1;
}

/*
 * exsim's bench message as it sends it (and exgate, raw and nginx pass it
 * on): channel, seq and ts_ns read at their known places, without a scan.
 * Returns -1 for anything else, which takes the general path.
 */
static int
fast_fields(const char *m, size_t len, uint64_t *chn, uint64_t *seq,
    uint64_t *ts)
{
    static const char k0[] = "{\"jsonrpc\":\"2.0\",\"method\":\"subscription\","
        "\"params\":{\"channel\":\"bench.";
    static const char k1[] = "\",\"data\":{\"seq\":";
    static const char k2[] = ",\"ts_ns\":";
    const char *p = m + sizeof(k0) - 1, *end = m + len;

    if (len < sizeof(k0) - 1 + sizeof(k1) - 1 + sizeof(k2) - 1 + 3
        || !same(m, k0, sizeof(k0) - 1) || digits(&p, end, chn) != 0
        || (size_t) (end - p) < sizeof(k1) - 1
        || !same(p, k1, sizeof(k1) - 1))
    {
        return -1;
    }
    p += sizeof(k1) - 1;
    if (digits(&p, end, seq) != 0 || (size_t) (end - p) < sizeof(k2) - 1
        || !same(p, k2, sizeof(k2) - 1))
    {
        return -1;
    }
    p += sizeof(k2) - 1;
    return digits(&p, end, ts);
}

static void
on_message(struct conn *c, const char *m, size_t len, uint64_t now)
{
    static const char kch[] = "\"channel\":\"bench.";
    const char *end = m + len, *p = NULL;
    uint64_t chn, seq, ts;
    int ch;

    B.total_msgs++;
    if (fast_fields(m, len, &chn, &seq, &ts) == 0
        || scan_u64(m, end, kch, sizeof(kch) - 1, &chn, &p) == 0)
    {
        if ((p != NULL && (scan_u64(p, end, "\"seq\":", 6, &seq, &p) != 0
            || scan_u64(p, end, "\"ts_ns\":", 8, &ts, NULL) != 0))
            || chn < (uint64_t) B.chan0
            || chn >= (uint64_t) (B.chan0 + B.nchan))
        {
            B.errors_rpc++;
            return;
        }
        ch = (int) chn - B.chan0;
        if (c->next_seq[ch] != 0 && seq != c->next_seq[ch]) {
            if (seq > c->next_seq[ch]) {
                B.gaps += seq - c->next_seq[ch];
            } else {
                B.resets++;   /* the channel started over upstream */
            }
        }
        c->next_seq[ch] = seq + 1;
        if (B.mode == M_RESTORE) {
            restore_check(c, ch, ts, now);
            return;
        }
        if (B.t_rate == 0 ? B.start_rate >= 0 : ts < B.t_rate) {
            return;   /* published at the set-up rate */
        }
        if (B.window > 0 && ch == 0) {
            pace_check(c);
        }
        if (B.rate > 0) {
            /* the intended send time of seq is anchor + seq / rate */
            double a = (double) ts - (double) seq * 1e9 / B.rate;

            if (!B.have_anchor[ch] || a < B.anchor[ch]) {
                if (B.in_window && B.have_anchor[ch]) {
                    B.anchor_shift += B.anchor[ch] - a;
                }
                B.anchor[ch] = a;
                B.have_anchor[ch] = 1;
            }
        }
        if (B.in_window) {
            B.deliveries++;
            c->win_got[ch]++;
            B.bytes += len;
            bench_hist_add(&B.h_send, (int64_t) (now - ts));
            if (B.rate > 0) {
                bench_hist_add(&B.h_int, (int64_t) ((double) now
                    - (B.anchor[ch] + (double) seq * 1e9 / B.rate)));
            }
        }
        return;
    }
    if (memmem(m, len, "\"error\"", 7) != NULL) {
        B.errors_rpc++;
        if (B.errors_rpc < 5) {
            fprintf(stderr, "bench_client: error: %.*s\n",
                (int) (len > 300 ? 300 : len), m);
        }
        return;
    }
    if (!c->acked && memmem(m, len, "\"result\"", 8) != NULL
        && memmem(m, len, "\"id\":1", 6) != NULL)
    {
        c->acked = 1;
        B.nacked++;
        accounted();
    }
}

static int
parse_frames(struct conn *c, char *p, size_t len, uint64_t now)
{
    while (len >= 2) {
        unsigned char b0 = (unsigned char) p[0], b1 = (unsigned char) p[1];
        int op = b0 & 0x0f, fin = b0 & 0x80;
        size_t hl = 2;
        uint64_t pl = b1 & 0x7f;

        if (b1 & 0x80) {
            conn_close(c, "masked frame from the server");
            return -1;
        }
        if (pl == 126) {
            if (len < 4) {
                break;
            }
            pl = ((uint64_t) (unsigned char) p[2] << 8) | (unsigned char) p[3];
            hl = 4;
        } else if (pl == 127) {
            int i;

            if (len < 10) {
                break;
            }
            pl = 0;
            for (i = 0; i < 8; i++) {
                pl = (pl << 8) | (unsigned char) p[2 + i];
            }
            hl = 10;
        }
        if (pl > MAX_FRAME) {
            conn_close(c, "frame over 1 MiB");
            return -1;
        }
        if (len < hl + pl) {
            break;
        }
        if (op == 8) {
            char why[128];
            int code = pl >= 2 ? ((unsigned char) p[hl] << 8
                | (unsigned char) p[hl + 1]) : 1005;

            snprintf(why, sizeof(why), "close %d \"%.*s\"", code,
                pl > 2 ? (int) (pl - 2 > 100 ? 100 : pl - 2) : 0,
                p + hl + 2);
            conn_close(c, why);
            return -1;
        } else if (op == 9) {
            if (send_frame(c, 10, p + hl, (size_t) pl) != 0) {
                conn_close(c, "pong: write failed");
                return -1;
            }
        } else if (op == 1 || op == 2 || op == 0) {
            if (fin && op != 0 && c->frag == NULL) {
                on_message(c, p + hl, (size_t) pl, now);
            } else {
                char *nf = realloc(c->frag, c->nfrag + pl + 1);

                if (nf == NULL || c->nfrag + pl > MAX_FRAME) {
                    conn_close(c, "fragmented message too long");
                    return -1;
                }
                c->frag = nf;
                memcpy(c->frag + c->nfrag, p + hl, pl);
                c->nfrag += pl;
                if (fin) {
                    on_message(c, c->frag, c->nfrag, now);
                    free(c->frag);
                    c->frag = NULL;
                    c->nfrag = 0;
                }
            }
        }
        if (c->state == C_CLOSED) {
            return -1;
        }
        p += hl + pl;
        len -= hl + pl;
    }
    return (int) len;   /* bytes left over */
}

static int
parse_lines(struct conn *c, char *p, size_t len, uint64_t now)
{
    char *nl;

    while ((nl = memchr(p, '\n', len)) != NULL) {
        size_t l = (size_t) (nl - p);

        on_message(c, p, l, now);
        if (c->state == C_CLOSED) {
            return -1;
        }
        p += l + 1;
        len -= l + 1;
    }
    if (len > MAX_FRAME) {
        conn_close(c, "line over 1 MiB");
        return -1;
    }
    return (int) len;
}

static void
conn_read_cb(evutil_socket_t fd, short what, void *arg)
{
    struct conn *c = arg;
    char *buf = B.rbuf, *p;
    size_t have = c->nleft, len;
    ssize_t r;
    uint64_t now;
    int left;

    if (have > 0) {
        memcpy(buf, c->left, have);
    }
    r = read(fd, buf + have, READ_SIZE);
    if (r < 0 && (errno == EAGAIN || errno == EINTR)) {
        return;
    }
    if (r <= 0) {
        conn_close(c, r == 0 ? "eof" : strerror(errno));
        return;
    }
    now = now_ns();
    B.reads++;
    len = have + (size_t) r;
    p = buf;
    if (c->state == C_HANDSHAKE) {
        struct xg_wsproto_resp resp;
        ssize_t hl = xg_wsproto_head_len(p, len, 8192);

        if (hl < 0) {
            conn_close(c, "upgrade: answer head over 8 KiB");
            return;
        }
        if (hl == 0) {
            goto keep;
        }
        if (xg_wsproto_parse_response(p, (size_t) hl, c->key, time(NULL),
            &resp) != XG_OK)
        {
            char why[128];

            snprintf(why, sizeof(why), "upgrade: http %d: %s", resp.status,
                resp.error ? resp.error : "refused");
            conn_close(c, why);
            return;
        }
        conn_opened(c);
        if (c->state == C_CLOSED) {
            return;
        }
        p += hl;
        len -= (size_t) hl;
    }
    left = B.ws ? parse_frames(c, p, len, now) : parse_lines(c, p, len, now);
    if (left < 0) {
        return;
    }
    p += len - (size_t) left;
    len = (size_t) left;
keep:
    if (len > 0) {
        char *nl = realloc(c->left, len);

        if (nl == NULL) {
            die("out of memory");
        }
        memmove(nl, p, len);
        c->left = nl;
    }
    c->nleft = len;
    if (len == 0 && c->left != NULL) {
        free(c->left);
        c->left = NULL;
    }
}

/* ---- run mode ----------------------------------------------------------- */

/*
 * The CPU time of all of PID's threads in seconds, to the nanosecond (the
 * scheduler's sum_exec_runtime, /proc/PID/task/T/schedstat), or -1 where
 * the kernel keeps none. At 1k msgs/s to one client a system uses a few
 * hundred milliseconds in a window: /proc/PID/stat's 10 ms ticks made
 * that a few percent of noise on every CPU ratio.
 */
static double
runtime_of(int pid)
{
    char path[64];
    struct dirent *de;
    DIR *d;
    double sum = 0;
    int found = 0;

    snprintf(path, sizeof(path), "/proc/%d/task", pid);
    if ((d = opendir(path)) == NULL) {
        return -1;
    }
    while ((de = readdir(d)) != NULL) {
        unsigned long long ns;
        FILE *fp;

        if (de->d_name[0] == '.') {
            continue;
        }
        snprintf(path, sizeof(path), "/proc/%d/task/%.20s/schedstat", pid,
            de->d_name);
        if ((fp = fopen(path, "r")) == NULL) {
            continue;
        }
        if (fscanf(fp, "%llu", &ns) == 1) {
            sum += (double) ns / 1e9;
            found = 1;
        }
        fclose(fp);
    }
    closedir(d);
    return found ? sum : -1;
}

/*
 * The CPU time of the --cpu-pid processes in seconds: their scheduler
 * runtime, else utime + stime from /proc/PID/stat (fields 14 and 15,
 * after the parenthesised name); -1 when neither can be read.
 */
static double
sut_cpu(void)
{
    double sum = 0;
    int i;

    if (B.ncpu_pids == 0) {
        return -1;
    }
    for (i = 0; i < B.ncpu_pids; i++) {
        char path[64], buf[1024], *p;
        unsigned long long ut, st;
        double rt = runtime_of(B.cpu_pids[i]);
        FILE *fp;
        size_t n;

        if (rt >= 0) {
            sum += rt;
            continue;
        }

        snprintf(path, sizeof(path), "/proc/%d/stat", B.cpu_pids[i]);
        if ((fp = fopen(path, "r")) == NULL) {
            return -1;
        }
        n = fread(buf, 1, sizeof(buf) - 1, fp);
        fclose(fp);
        buf[n] = '\0';
        p = strrchr(buf, ')');
        if (p == NULL || sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u"
            " %*u %*u %llu %llu", &ut, &st) != 2)
        {
            return -1;
        }
        sum += (double) (ut + st) / (double) sysconf(_SC_CLK_TCK);
    }
    return sum;
}

static double
self_cpu(void)
{
    struct rusage ru;

    getrusage(RUSAGE_SELF, &ru);
    return (double) ru.ru_utime.tv_sec + (double) ru.ru_utime.tv_usec / 1e6
        + (double) ru.ru_stime.tv_sec + (double) ru.ru_stime.tv_usec / 1e6;
}

/*
 * Seconds this process waited for a CPU while runnable (the scheduler's
 * run_delay, /proc/self/schedstat), or -1 where the kernel has none. With
 * the CPU time it says whether the client could have done more: a client
 * that ran or waited to run all the time was the bottleneck.
 */
static double
self_wait(void)
{
    unsigned long long run, delay;
    FILE *fp = fopen("/proc/self/schedstat", "r");
    int ok;

    if (fp == NULL) {
        return -1;
    }
    ok = fscanf(fp, "%llu %llu", &run, &delay) == 2;
    fclose(fp);
    return ok ? (double) delay / 1e9 : -1;
}

static void
window_cb(evutil_socket_t fd, short what, void *arg)
{
    uint64_t now = now_ns();

    if (!B.in_window && B.t_win0 == 0) {
        B.in_window = 1;
        B.t_win0 = now;
        B.gaps = 0;
        B.resets = 0;
        B.anchor_shift = 0;
        B.cpu0 = sut_cpu();
        B.self0 = self_cpu();
        B.wait0 = self_wait();
        B.reads0 = B.reads;
        arm(B.tick, B.duration_s);
        /* for a driver that reads the system's own counters over the
           window (run_bench: exgate's /status) */
        printf("{\"window\":\"start\"}\n");
        fflush(stdout);
        return;
    }
    B.in_window = 0;
    B.t_win1 = now;
    B.cpu1 = sut_cpu();
    B.self1 = self_cpu();
    B.wait1 = self_wait();
    B.reads1 = B.reads;
    printf("{\"window\":\"end\"}\n");
    fflush(stdout);
    finish();
}

/* ---- restore mode ------------------------------------------------------- */

static void rs_send(const char *cmd);

static void
rs_poll_cb(evutil_socket_t fd, short what, void *arg)
{
    if (B.rs_phase == 3) {
        B.rs_phase = 0;
        return;
    }
    if (B.rs_phase != 2) {
        return;
    }
    /*
     * One message on every channel exsim has a subscriber for, each
     * millisecond: a channel restored upstream gets its first message
     * within about 1 ms, without a steady rate high enough to swamp 1000
     * channels. Before the new connection has subscribed, the burst
     * publishes nothing.
     */
    rs_send("burst 1");
    if (B.rs_open_seen) {
        return;   /* re-armed by the burst's reply */
    }
    /* stats only until the new connection shows: with 1000 channels
       subscribed its reply is 25 KiB of work for exsim */
    B.rs_t_poll_prev = B.rs_t_poll;
    B.rs_t_poll = now_ns();
    rs_send("stats");
}

static void
rs_start_cycle(void)
{
    int i, k;

    for (i = 0; i < B.n; i++) {
        for (k = 0; k < B.nchan; k++) {
            B.c[i].restored[k] = 0;
        }
    }
    B.rs_pairs = 0;
    B.rs_open_seen = 0;
    B.rs_phase = 1;
    B.rs_t_poll = 0;
    B.rs_t_poll_prev = 0;
    B.rs_t_ack = 0;
    rs_send("stats");
    B.rs_t_drop = now_ns();
    B.rs_t_notseen = B.rs_t_drop;
    rs_send("drop");
}

static void
rs_cycle_done(uint64_t t_done)
{
    json_t *r;

    /*
     * The new connection was accepted after the last poll that did not
     * show it was sent; counting from there errs long. When every channel
     * was back before a poll showed it, it was accepted before T_DONE.
     */
    if (!B.rs_open_seen) {
        B.rs_t_open_lo = B.rs_t_notseen;
        B.rs_t_open_hi = t_done;
    }
    r = json_pack("{s:f, s:f, s:f, s:b}",
        "from_drop_ms", (double) (t_done - B.rs_t_drop) / 1e6,
        "from_open_ms", (double) (t_done - B.rs_t_open_lo) / 1e6,
        "open_uncertainty_ms",
            (double) (B.rs_t_open_hi - B.rs_t_open_lo) / 1e6,
        "open_seen", B.rs_open_seen);
    json_array_append_new(B.rs_results, r);
    B.rs_cycle++;
    B.rs_phase = 0;
    B.rs_flowing = 0;
    if (B.rs_cycle >= B.repeat) {
        finish();
        return;
    }
    /* the next cycle starts when every channel flows again, after a pause
       that lets the gateway settle */
    B.rs_phase = 3;
    arm(B.rs_timer, 0.5);
}

static void
restore_check(struct conn *c, int ch, uint64_t ts, uint64_t now)
{
    if (B.rs_phase == 3) {
        return;
    }
    if (B.rs_phase == 0) {
        /* flowing: each pair once since the last cycle */
        if (c->restored[ch] != (uint64_t) B.rs_cycle + 1) {
            c->restored[ch] = (uint64_t) B.rs_cycle + 1;
            if (++B.rs_flowing == (uint64_t) B.n * (uint64_t) B.nchan
                && B.nacked == B.n)
            {
                rs_start_cycle();
            }
        }
        return;
    }
    if (B.rs_t_ack == 0 || ts <= B.rs_t_ack) {
        return;   /* published before exsim dropped the connection */
    }
    if (c->restored[ch] != (uint64_t) B.rs_cycle + 1000000) {
        c->restored[ch] = (uint64_t) B.rs_cycle + 1000000;
        if (++B.rs_pairs == (uint64_t) B.n * (uint64_t) B.nchan) {
            if (B.rs_timer != NULL) {
                event_del(B.rs_timer);
            }
            rs_cycle_done(now);
        }
    }
}

static void
rs_reply(char *line)
{
    json_t *j = json_loads(line, 0, NULL);
    json_t *ct;

    if (j != NULL && json_object_get(j, "credit") != NULL) {
        json_decref(j);
        return;     /* a credit's answer (flat out paced) */
    }
    if (B.mode == M_RUN && B.rate_pending && j != NULL
        && json_is_true(json_object_get(j, "ok")))
    {
        int k;

        B.rate_pending = 0;
        /* the schedule starts over: estimate the anchors afresh */
        for (k = 0; k < B.nchan; k++) {
            B.have_anchor[k] = 0;
        }
        arm(B.tick, B.warmup_s);
        json_decref(j);
        return;
    }
    if (j == NULL || !json_is_true(json_object_get(j, "ok"))) {
        if (j == NULL || json_object_get(j, "connections_total") == NULL) {
            fprintf(stderr, "bench_client: control: bad reply %s\n", line);
            json_decref(j);
            B.failed = 1;
            finish();
            return;
        }
    }
    ct = json_object_get(j, "connections_total");
    if (ct != NULL) {
        uint64_t v = (uint64_t) json_integer_value(ct);

        if (B.rs_phase == 1 && B.rs_t_ack == 0) {
            /* the count before the drop */
            B.rs_conns0 = v;
        } else if (B.rs_phase == 2) {
            if (!B.rs_open_seen && v > B.rs_conns0) {
                B.rs_open_seen = 1;
                B.rs_t_open_lo = B.rs_t_notseen;
                B.rs_t_open_hi = now_ns();
                B.rs_conns0 = v;
            } else if (!B.rs_open_seen) {
                B.rs_t_notseen = B.rs_t_poll;
            }
            arm(B.rs_timer, 0.001);
        }
    } else if (B.rs_phase == 2 && B.rs_open_seen
        && json_object_get(j, "updates") != NULL)
    {
        arm(B.rs_timer, 0.001);
    } else if (B.rs_phase == 1 && json_object_get(j, "dropped") != NULL) {
        B.rs_t_ack = now_ns();
        B.rs_phase = 2;
        arm(B.rs_timer, 0.001);
    }
    json_decref(j);
}

static void
rs_read_cb(evutil_socket_t fd, short what, void *arg)
{
    ssize_t r = read(fd, B.rs_in + B.rs_nin, sizeof(B.rs_in) - 1 - B.rs_nin);
    char *nl;

    if (r <= 0) {
        if (r < 0 && errno == EAGAIN) {
            return;
        }
        fprintf(stderr, "bench_client: control connection lost\n");
        B.failed = 1;
        finish();
        return;
    }
    B.rs_nin += (size_t) r;
    B.rs_in[B.rs_nin] = '\0';
    while ((nl = memchr(B.rs_in, '\n', B.rs_nin)) != NULL) {
        size_t l = (size_t) (nl - B.rs_in) + 1;

        *nl = '\0';
        rs_reply(B.rs_in);
        if (B.done) {
            return;
        }
        memmove(B.rs_in, B.rs_in + l, B.rs_nin - l);
        B.rs_nin -= l;
    }
    if (B.rs_nin >= sizeof(B.rs_in) - 1) {
        die("control reply too long");
    }
}

static void
rs_send(const char *cmd)
{
    char line[64];
    int n = snprintf(line, sizeof(line), "%s\n", cmd);

    if (write(B.rs_ctl, line, (size_t) n) != n) {
        die("control: write failed");
    }
}

static void
rs_open(void)
{
    struct sockaddr_in sin;
    int one = 1;

    memset(&sin, 0, sizeof(sin));
    sin.sin_family = AF_INET;
    sin.sin_port = htons((uint16_t) B.control_port);
    inet_pton(AF_INET, "127.0.0.1", &sin.sin_addr);
    B.rs_ctl = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (B.rs_ctl < 0 || connect(B.rs_ctl, (struct sockaddr *) &sin,
        sizeof(sin)) != 0)
    {
        die("cannot connect to the exsim control port");
    }
    setsockopt(B.rs_ctl, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    evutil_make_socket_nonblocking(B.rs_ctl);
    B.rs_ev = event_new(B.base, B.rs_ctl, EV_READ | EV_PERSIST, rs_read_cb,
        NULL);
    event_add(B.rs_ev, NULL);
    B.rs_timer = evtimer_new(B.base, rs_poll_cb, NULL);
    B.rs_results = json_array();
}

/* ---- hold mode ---------------------------------------------------------- */

static void
stdin_cb(evutil_socket_t fd, short what, void *arg)
{
    char line[256];
    ssize_t r = read(0, line, sizeof(line) - 1);
    int i;

    if (r <= 0 || strncmp(line, "quit", 4) == 0) {
        finish();
        return;
    }
    line[r] = '\0';
    if (strncmp(line, "subscribe", 9) == 0) {
        B.subscribing = 1;
        for (i = 0; i < B.n; i++) {
            if (B.c[i].state == C_OPEN && send_subscribe(&B.c[i]) != 0) {
                conn_close(&B.c[i], "subscribe: write failed");
            }
        }
    } else if (strncmp(line, "stats", 5) == 0) {
        printf("{\"open\":%d,\"closed\":%d,\"acked\":%d,\"messages\":%llu,"
            "\"last_close\":\"%s\"}\n", B.nopen, B.nclosed, B.nacked,
            (unsigned long long) B.total_msgs, B.last_close);
        fflush(stdout);
    }
}

/* ---- sync: a window opened at a time the driver gives -------------------- */

/*
 * --sync: once every connection is answered the client prints
 * {"ready":N} and waits for "start NS" on stdin, NS a CLOCK_MONOTONIC time
 * in nanoseconds (the clock is the machine's, so two clients given the
 * same NS measure over the same window, e.g. one on a core and one on an
 * edge). "quit" ends the run.
 */
static void
sync_cb(evutil_socket_t fd, short what, void *arg)
{
    char line[128];
    ssize_t r = read(0, line, sizeof(line) - 1);
    unsigned long long at;
    uint64_t now;

    if (r <= 0 || strncmp(line, "quit", 4) == 0) {
        B.failed = 1;
        finish();
        return;
    }
    line[r] = '\0';
    if (sscanf(line, "start %llu", &at) != 1) {
        fprintf(stderr, "bench_client: sync: bad line %s", line);
        return;
    }
    now = now_ns();
    arm(B.tick, at > now ? (double) (at - now) / 1e9 : 0);
}

/* ---- the whole run ------------------------------------------------------ */

static void
all_acked(void)
{
    if (B.t_acked != 0) {
        return;
    }
    B.t_acked = now_ns();
    if (B.mode == M_RUN && B.start_rate >= 0) {
        /*
         * Set up at a low rate, then switch to the measured one: N clients
         * join much faster when the first ones are not already drinking
         * from a fire hose. The warm-up starts once exsim has answered.
         */
        char cmd[64];

        if (B.nchan != 1) {
            B.window = 0;       /* pacing is for one channel */
        }
        if (B.window > 0) {
            snprintf(cmd, sizeof(cmd), "credit %llu",
                (unsigned long long) B.window);
            rs_send(cmd);
            B.credit_at = B.window / 4;
        }
        snprintf(cmd, sizeof(cmd), "rate %g", B.start_rate);
        B.rate_pending = 1;
        /* what exsim publishes from here on counts: waiting for its
           answer would skip what it sent flat out in the meantime */
        B.t_rate = now_ns();
        rs_send(cmd);
    } else if (B.mode == M_RUN && B.sync) {
        printf("{\"ready\":%d}\n", B.nacked);
        fflush(stdout);
        B.stdin_ev = event_new(B.base, 0, EV_READ | EV_PERSIST, sync_cb,
            NULL);
        event_add(B.stdin_ev, NULL);
    } else if (B.mode == M_RUN) {
        arm(B.tick, B.warmup_s);
    } else if (B.mode == M_HOLD) {
        printf("{\"subscribed\":%d,\"failed\":%d}\n", B.nacked, B.nclosed);
        fflush(stdout);
    }
}

/*
 * The fewest channels any connection got a message on in the window: a
 * channel that never flowed (e.g. not yet wanted through an edge) shows
 * here, not as a gap.
 */
static int
channels_seen_min(void)
{
    int i, k, min = B.nchan;

    for (i = 0; i < B.n; i++) {
        int seen = 0;

        for (k = 0; k < B.nchan; k++) {
            seen += B.c[i].win_got[k] > 0;
        }
        if (seen < min) {
            min = seen;
        }
    }
    return min;
}

static json_t *
hist_json(const struct bench_hist *h)
{
    return json_pack("{s:I, s:f, s:f, s:f, s:f, s:f, s:f, s:I}",
        "count", (json_int_t) h->count,
        "p50", (double) bench_hist_quantile(h, 0.50) / 1e3,
        "p99", (double) bench_hist_quantile(h, 0.99) / 1e3,
        "p999", (double) bench_hist_quantile(h, 0.999) / 1e3,
        "max", (double) h->max / 1e3,
        "min", (double) h->min / 1e3,
        "mean", h->count ? h->sum / (double) h->count / 1e3 : 0.0,
        "negative", (json_int_t) h->negative);
}

static void
finish(void)
{
    json_t *o;
    char *s;
    double win;

    if (B.done) {
        return;
    }
    B.done = 1;
    event_base_loopbreak(B.base);
    if (B.mode == M_HOLD) {
        return;
    }
    if (B.t_win1 == 0) {
        B.t_win1 = now_ns();
    }
    win = B.t_win0 ? (double) (B.t_win1 - B.t_win0) / 1e9 : 0;
    o = json_pack("{s:s, s:s, s:i, s:i, s:f, s:i, s:i, s:i, s:i}",
        "label", B.label ? B.label : "",
        "mode", B.mode == M_RUN ? "run" : "restore",
        "clients", B.n, "channels", B.nchan, "rate", B.rate,
        "open", B.nopen, "acked", B.nacked, "closed", B.nclosed,
        "connect_errors", B.connect_errors);
    json_object_set_new(o, "setup_s", json_real(B.t_acked
        ? (double) (B.t_acked - B.t_start) / 1e9 : -1.0));
    json_object_set_new(o, "ok", json_boolean(!B.failed && B.t_acked != 0
        && (B.mode != M_RUN || B.deliveries > 0)));
    if (B.last_close[0] != '\0') {
        json_object_set_new(o, "last_close", json_string(B.last_close));
    }
    if (B.mode == M_RUN) {
        json_object_set_new(o, "window_s", json_real(win));
        json_object_set_new(o, "deliveries",
            json_integer((json_int_t) B.deliveries));
        json_object_set_new(o, "deliveries_per_s",
            json_real(win > 0 ? (double) B.deliveries / win : 0));
        json_object_set_new(o, "mbytes_per_s",
            json_real(win > 0 ? (double) B.bytes / win / 1e6 : 0));
        json_object_set_new(o, "gaps", json_integer((json_int_t) B.gaps));
        json_object_set_new(o, "seq_resets",
            json_integer((json_int_t) B.resets));
        json_object_set_new(o, "bad_messages",
            json_integer((json_int_t) B.errors_rpc));
        json_object_set_new(o, "client_cpu_s", json_real(B.self1 - B.self0));
        if (B.wait0 >= 0 && B.wait1 >= 0) {
            json_object_set_new(o, "client_wait_s",
                json_real(B.wait1 - B.wait0));
        }
        json_object_set_new(o, "credits", json_integer((json_int_t)
            B.credits));
        json_object_set_new(o, "window", json_integer((json_int_t)
            B.window));
        json_object_set_new(o, "client_reads",
            json_integer((json_int_t) (B.reads1 >= B.reads0
                ? B.reads1 - B.reads0 : 0)));
        if (B.cpu0 >= 0 && B.cpu1 >= 0 && B.t_win0 != 0) {
            json_object_set_new(o, "sut_cpu_s", json_real(B.cpu1 - B.cpu0));
            json_object_set_new(o, "sut_cpu_s_per_m", json_real(B.deliveries
                ? (B.cpu1 - B.cpu0) / ((double) B.deliveries / 1e6) : 0));
        }
        json_object_set_new(o, "channels_seen_min", json_integer(
            (json_int_t) channels_seen_min()));
        json_object_set_new(o, "lat_us", hist_json(&B.h_send));
        if (B.rate > 0) {
            json_object_set_new(o, "lat_intended_us", hist_json(&B.h_int));
            json_object_set_new(o, "anchor_shift_us",
                json_real(B.anchor_shift / 1e3));
        }
    } else {
        json_object_set_new(o, "cycles", B.rs_results ? json_incref(
            B.rs_results) : json_array());
    }
    s = json_dumps(o, JSON_COMPACT | JSON_REAL_PRECISION(8));
    printf("%s\n", s);
    fflush(stdout);
    free(s);
    json_decref(o);
}

static void
deadline_cb(evutil_socket_t fd, short what, void *arg)
{
    if (B.t_acked == 0 || B.mode == M_RESTORE) {
        fprintf(stderr, "bench_client: timed out (open %d, acked %d of %d,"
            " closed %d%s%s)\n", B.nopen, B.nacked, B.n, B.nclosed,
            B.last_close[0] ? ", last: " : "", B.last_close);
        B.failed = 1;
        finish();
    }
}

static int
parse_target(const char *url)
{
    const char *p, *slash, *colon;

    if (strncmp(url, "ws://", 5) == 0) {
        B.ws = 1;
        p = url + 5;
    } else if (strncmp(url, "tcp://", 6) == 0) {
        B.ws = 0;
        p = url + 6;
    } else {
        return -1;
    }
    slash = strchr(p, '/');
    colon = strchr(p, ':');
    if (colon == NULL || (slash != NULL && colon > slash)
        || (size_t) (colon - p) >= sizeof(B.host))
    {
        return -1;
    }
    memcpy(B.host, p, (size_t) (colon - p));
    B.host[colon - p] = '\0';
    B.port = atoi(colon + 1);
    snprintf(B.path, sizeof(B.path), "%s", slash ? slash : "/");
    return B.port > 0 && B.port < 65536 ? 0 : -1;
}

static int
cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *) a, y = *(const uint64_t *) b;

    return x < y ? -1 : x > y;
}

/*
 * --selftest: the histogram against exact quantiles of 200 000 seeded
 * log-uniform values from 1 ns to 100 s, and its bucket edges. Returns 0
 * when every quantile is within 1% and never below the truth.
 */
static int
selftest(void)
{
    static const double qs[] = { 0.0, 0.1, 0.5, 0.9, 0.99, 0.999, 0.9999,
                                 1.0 };
    enum { NV = 200000 };
    struct bench_hist *h = calloc(1, sizeof(*h));
    uint64_t *v = malloc(NV * sizeof(*v)), x = 88172645463325252ull, prev;
    unsigned i, bad = 0;

    if (h == NULL || v == NULL) {
        die("out of memory");
    }
    for (i = 0; i < NV; i++) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        v[i] = (uint64_t) exp((double) (x >> 11) / 9007199254740992.0
            * log(1e11));
        bench_hist_add(h, (int64_t) v[i]);
    }
    qsort(v, NV, sizeof(*v), cmp_u64);
    for (i = 0; i < sizeof(qs) / sizeof(qs[0]); i++) {
        uint64_t rank = (uint64_t) ceil(qs[i] * NV), exact, got;

        exact = v[rank == 0 ? 0 : rank - 1];
        got = bench_hist_quantile(h, qs[i]);
        if (got < exact || (double) (got - exact) > 0.01 * (double) exact) {
            fprintf(stderr, "selftest: q %g: %llu, exact %llu\n", qs[i],
                (unsigned long long) got, (unsigned long long) exact);
            bad++;
        }
    }
    /* every value lands in a bucket whose edges hold it, edges ascend */
    prev = 0;
    for (i = 1; i < BENCH_HIST_BUCKETS; i++) {
        uint64_t up = bench_hist_upper(i);

        if (up <= prev || bench_hist_index(up) != i
            || bench_hist_index(prev + 1) != i)
        {
            fprintf(stderr, "selftest: bucket %u edges wrong\n", i);
            bad++;
            break;
        }
        prev = up;
    }
    if (bench_hist_index(UINT64_MAX) != BENCH_HIST_BUCKETS - 1) {
        bad++;
    }
    free(v);
    free(h);
    printf("{\"selftest\":\"%s\"}\n", bad ? "failed" : "ok");
    return bad ? 1 : 0;
}

static void
usage(void)
{
    fprintf(stderr,
"usage: bench_client --url ws://HOST:PORT/PATH | tcp://HOST:PORT\n"
"         [-n CLIENTS] [--channels K] [--first-channel I]\n"
"         [--mode run|restore|hold] [--warmup S] [--duration S]\n"
"         [--rate HZ] [--control PORT] [--repeat N] [--timeout S]\n"
"         [--inflight N] [--label TEXT] [--cpu-pid PID[,PID...]]\n"
"         [--start-rate HZ (with --control: exsim's rate once all joined)]\n"
"         [--window N (flat out: exsim paced so that no connection lags\n"
"          more than N messages; 0: not paced; default 8192)]\n"
"         [--sync (run, without --start-rate: once all are answered print\n"
"          {\"ready\":N} and open the window at the CLOCK_MONOTONIC ns\n"
"          given on stdin as \"start NS\"; --warmup is not used)]\n"
"       bench_client --selftest   (checks the histogram)\n"
"HOST is a numeric IPv4 address. Prints one JSON line per run.\n");
    exit(2);
}

int
main(int argc, char **argv)
{
    static const struct option lo[] = {
        { "url", required_argument, NULL, 'u' },
        { "clients", required_argument, NULL, 'n' },
        { "channels", required_argument, NULL, 'k' },
        { "first-channel", required_argument, NULL, 'f' },
        { "mode", required_argument, NULL, 'm' },
        { "warmup", required_argument, NULL, 'w' },
        { "duration", required_argument, NULL, 'd' },
        { "rate", required_argument, NULL, 'r' },
        { "control", required_argument, NULL, 'c' },
        { "repeat", required_argument, NULL, 'R' },
        { "timeout", required_argument, NULL, 't' },
        { "inflight", required_argument, NULL, 'i' },
        { "label", required_argument, NULL, 'l' },
        { "cpu-pid", required_argument, NULL, 'p' },
        { "start-rate", required_argument, NULL, 's' },
        { "window", required_argument, NULL, 'W' },
        { "sync", no_argument, NULL, 'S' },
        { NULL, 0, NULL, 0 }
    };
    struct rlimit rl;
    const char *url = NULL;
    int o, i;

    B.n = 1;
    B.nchan = 1;
    B.warmup_s = 0.5;
    B.duration_s = 5;
    B.repeat = 1;
    B.timeout_s = 60;
    B.inflight_max = 64;
    B.mode = M_RUN;
    B.start_rate = -1;
    B.window = 8192;
    if (argc == 2 && strcmp(argv[1], "--selftest") == 0) {
        return selftest();
    }
    while ((o = getopt_long(argc, argv, "n:", lo, NULL)) != -1) {
        switch (o) {
        case 'u': url = optarg; break;
        case 'n': B.n = atoi(optarg); break;
        case 'k': B.nchan = atoi(optarg); break;
        case 'f': B.chan0 = atoi(optarg); break;
        case 'm':
            if (strcmp(optarg, "run") == 0) {
                B.mode = M_RUN;
            } else if (strcmp(optarg, "restore") == 0) {
                B.mode = M_RESTORE;
            } else if (strcmp(optarg, "hold") == 0) {
                B.mode = M_HOLD;
            } else {
                usage();
            }
            break;
        case 'w': B.warmup_s = atof(optarg); break;
        case 'd': B.duration_s = atof(optarg); break;
        case 'r': B.rate = atof(optarg); break;
        case 'c': B.control_port = atoi(optarg); break;
        case 'R': B.repeat = atoi(optarg); break;
        case 't': B.timeout_s = atof(optarg); break;
        case 'i': B.inflight_max = atoi(optarg); break;
        case 'l': B.label = optarg; break;
        case 's': B.start_rate = atof(optarg); break;
        case 'W': B.window = (uint64_t) atoll(optarg); break;
        case 'S': B.sync = 1; break;
        case 'p': {
            char *save = NULL, *t, *dup = strdup(optarg);

            for (t = strtok_r(dup, ",", &save); t != NULL
                && B.ncpu_pids < (int) (sizeof(B.cpu_pids)
                / sizeof(B.cpu_pids[0])); t = strtok_r(NULL, ",", &save))
            {
                B.cpu_pids[B.ncpu_pids++] = atoi(t);
            }
            free(dup);
            break;
        }
        default: usage();
        }
    }
    if (url == NULL || parse_target(url) != 0 || B.n < 1 || B.n > 1000000
        || B.nchan < 1 || B.nchan > MAX_CHANNELS || B.chan0 < 0
        || B.warmup_s < 0 || B.duration_s <= 0 || B.rate < 0
        || B.repeat < 1 || B.inflight_max < 1 || B.timeout_s <= 0
        || ((B.mode == M_RESTORE || B.start_rate >= 0)
            && B.control_port <= 0)
        || (B.sync && (B.mode != M_RUN || B.start_rate >= 0)))
    {
        usage();
    }
    if (B.mode != M_RUN || B.start_rate != 0 || B.control_port <= 0) {
        B.window = 0;       /* only flat out, with exsim's control port */
    }
    /* 10 000 clients need more descriptors than the usual soft limit */
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
    signal(SIGPIPE, SIG_IGN);
    srandom((unsigned) now_ns());
    B.base = event_base_new();
    B.rbuf = malloc(RBUF_SIZE);
    B.c = calloc((size_t) B.n, sizeof(*B.c));
    if (B.base == NULL || B.rbuf == NULL || B.c == NULL) {
        die("out of memory");
    }
    for (i = 0; i < B.n; i++) {
        B.c[i].fd = -1;
        B.c[i].next_seq = calloc((size_t) B.nchan, sizeof(uint64_t));
        B.c[i].win_got = calloc((size_t) B.nchan, sizeof(uint32_t));
        B.c[i].restored = B.mode == M_RESTORE
            ? calloc((size_t) B.nchan, sizeof(uint64_t)) : NULL;
        if (B.c[i].next_seq == NULL || B.c[i].win_got == NULL) {
            die("out of memory");
        }
    }
    B.tick = evtimer_new(B.base, window_cb, NULL);
    B.deadline = evtimer_new(B.base, deadline_cb, NULL);
    arm(B.deadline, B.timeout_s);
    if (B.mode == M_RESTORE || (B.mode == M_RUN && B.start_rate >= 0)) {
        rs_open();
    }
    if (B.mode == M_HOLD) {
        B.stdin_ev = event_new(B.base, 0, EV_READ | EV_PERSIST, stdin_cb,
            NULL);
        event_add(B.stdin_ev, NULL);
    }
    B.t_start = now_ns();
    start_connects();
    event_base_dispatch(B.base);

    for (i = 0; i < B.n; i++) {
        struct conn *c = &B.c[i];

        if (c->ev != NULL) {
            event_free(c->ev);
        }
        if (c->fd >= 0) {
            close(c->fd);
        }
        free(c->left);
        free(c->frag);
        free(c->next_seq);
        free(c->win_got);
        free(c->restored);
    }
    free(B.c);
    free(B.rbuf);
    event_free(B.tick);
    event_free(B.deadline);
    if (B.rs_ev != NULL) {
        event_free(B.rs_ev);
        event_free(B.rs_timer);
        close(B.rs_ctl);
    }
    if (B.stdin_ev != NULL) {
        event_free(B.stdin_ev);
    }
    json_decref(B.rs_results);
    event_base_free(B.base);
    return B.failed ? 1 : 0;
}
