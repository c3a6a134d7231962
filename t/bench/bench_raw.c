/*
 * bench_raw.c: the raw baseline of the fan-out benchmark, the physical
 * limit on this machine. It accepts N WebSocket clients, then opens ONE
 * WebSocket connection to exsim, subscribes to the bench channels once,
 * and copies every byte exsim sends (already framed: server frames are
 * unmasked, so they are valid for any client) to all N client sockets.
 *
 * Nothing is parsed or routed: what one read callback gets from the
 * upstream (libevent's read of at most 4 KiB, then recv(2) until the socket
 * is dry or 256 KiB came in, as exgate reads its upstreams) is copied once
 * into a refcounted chunk and written to every client's socket at once
 * when nothing is queued for it (xg_bev_send_now, the gateway's own
 * output path), else appended by reference to the client's libevent
 * output buffer, which libevent writes out once per loop turn: the same
 * batching and the same writes the gateway's clients get. When a client falls more
 * than 1 MiB behind, the upstream is not read until every client is back
 * under 256 KiB (the limit measured is the slowest stage, nothing is
 * dropped, and 1000 clients cannot hold more than about 1 GiB). Its
 * upstream socket ACKs as exgate's does (TCP_QUICKACK once the
 * subscription is answered, see up_read). Exits when the last client
 * has gone.
 *
 *   bench_raw --upstream HOST:PORT[/PATH] [--listen ADDR:PORT] -n N
 *             [--channels K] [--first-channel I]
 *
 * Prints "bench_raw ready port=P" once it listens, and on SIGUSR1 and at
 * the exit "bench_raw io {...}" on stderr: the counters exgate shows in
 * /status "fanout" (the clients' sends) with the upstream's reads and the
 * ACKs its socket sent.
 */
#include "config.h"

#include "xg_ws.h"
#include "xg_wsproto.h"

#include <errno.h>
#include <stddef.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <linux/tcp.h>         /* tcp_info's segment counts */
#include <sys/resource.h>
#include <sys/socket.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <event2/listener.h>
#include <jansson.h>

#define OUT_HIGH   (1u << 20)
#define OUT_LOW    (256u << 10)
#define READ_MAX   (256u << 10)     /* exgate's XG_UP_READ_MAX */
#define WRITE_MAX  (4u << 20)       /* exgate's XG_CLIENT_WRITE_MAX */

struct client {
    struct client      *next, *prev;
    struct bufferevent *bev;
    int                 open;
};

struct chunk {
    int  refs;
    char data[];
};

static struct {
    struct event_base     *base;
    struct evconnlistener *lev;
    struct client         *clients;
    int                    want, nopen, nclients;
    char                   up_host[64];
    int                    up_port;
    char                   up_path[256];
    int                    nchan, chan0;
    struct bufferevent    *up;
    int                    up_open;
    int                    up_acking;     /* TCP_QUICKACK set (up_read) */
    int                    paused;
    char                   key[XG_WSPROTO_KEY_LEN + 1];
    unsigned long long     chunks, bytes;
    uint64_t               frame_left;  /* bytes of the frame being read */
    unsigned char          hdr[10];     /* a frame header split by a read */
    size_t                 nhdr;
    struct xg_io_stats     io;          /* the clients' sends */
    struct xg_io_stats     up_io;       /* the upstream's reads */
    uint64_t               up_msgs;     /* and the frames they carried */
} R;

static void
die(const char *msg)
{
    fprintf(stderr, "bench_raw: %s\n", msg);
    exit(1);
}

static void
chunk_unref(const void *data, size_t len, void *arg)
{
    struct chunk *ch = arg;

    if (--ch->refs == 0) {
        free(ch);
    }
}

static void
client_free(struct client *c)
{
    if (c->prev != NULL) {
        c->prev->next = c->next;
    } else {
        R.clients = c->next;
    }
    if (c->next != NULL) {
        c->next->prev = c->prev;
    }
    if (c->open) {
        R.nopen--;
    }
    R.nclients--;
    bufferevent_free(c->bev);
    free(c);
    if (R.nclients == 0 && R.up != NULL) {
        event_base_loopbreak(R.base);
    }
}

/* ---- upstream ----------------------------------------------------------- */

static void
up_resume_check(void)
{
    struct client *c;

    if (!R.paused) {
        return;
    }
    for (c = R.clients; c != NULL; c = c->next) {
        if (evbuffer_get_length(bufferevent_get_output(c->bev)) > OUT_LOW) {
            return;
        }
    }
    R.paused = 0;
    bufferevent_enable(R.up, EV_READ);
}

/*
 * The frames that end in the N bytes at P, the stream being at a frame
 * boundary before the first call: for the counters only, nothing is
 * checked.
 */
static size_t
count_frames(const unsigned char *p, size_t n)
{
    size_t frames = 0;

    while (n > 0) {
        size_t need, take;
        uint64_t pl;
        int i;

        if (R.frame_left > 0) {
            take = R.frame_left < n ? (size_t) R.frame_left : n;
            R.frame_left -= take;
            p += take;
            n -= take;
            frames += R.frame_left == 0;
            continue;
        }
        R.hdr[R.nhdr++] = *p++;
        n--;
        if (R.nhdr < 2) {
            continue;
        }
        pl = R.hdr[1] & 0x7f;
        need = pl == 126 ? 4 : pl == 127 ? 10 : 2;
        if (R.nhdr < need) {
            continue;
        }
        if (pl >= 126) {
            pl = 0;
            for (i = 2; i < (int) need; i++) {
                pl = (pl << 8) | R.hdr[i];
            }
        }
        R.nhdr = 0;
        R.frame_left = pl;
        frames += pl == 0;
    }
    return frames;
}

/* Forwards everything read (after the upgrade answer) to every client. */
static void
up_forward(struct evbuffer *in)
{
    size_t n = evbuffer_get_length(in);
    struct chunk *ch;
    struct client *c;
    size_t sent, nmsgs;
    int over = 0;

    if (n == 0 || R.nopen == 0) {
        evbuffer_drain(in, n);
        return;
    }
    ch = malloc(sizeof(*ch) + n);
    if (ch == NULL) {
        die("out of memory");
    }
    evbuffer_remove(in, ch->data, n);
    ch->refs = 1;
    nmsgs = count_frames((const unsigned char *) ch->data, n);
    R.up_msgs += nmsgs;
    for (c = R.clients; c != NULL; c = c->next) {
        struct evbuffer *out;

        if (!c->open) {
            continue;
        }
        out = bufferevent_get_output(c->bev);
        sent = xg_bev_send_now(c->bev, ch->data, n, nmsgs, &R.io);
        if (sent < n) {
            ch->refs++;
            evbuffer_add_reference(out, ch->data + sent, n - sent,
                chunk_unref, ch);
        }
        if (evbuffer_get_length(out) > OUT_HIGH) {
            over = 1;
        }
    }
    chunk_unref(NULL, 0, ch);
    R.chunks++;
    R.bytes += n;
    if (over) {
        R.paused = 1;
        bufferevent_disable(R.up, EV_READ);
    }
}

/* Reads on until the socket is dry or READ_MAX came in (see xg_ws.c). */
static void
up_read_more(struct bufferevent *bev)
{
    struct evbuffer *in = bufferevent_get_input(bev);
    evutil_socket_t fd = bufferevent_getfd(bev);
    size_t got = 0;

    evbuffer_unfreeze(in, 0);
    while (got < READ_MAX) {
        struct evbuffer_iovec v;
        size_t want = READ_MAX - got > 65536 ? 65536 : READ_MAX - got;
        ssize_t n;

        if (evbuffer_reserve_space(in, (ev_ssize_t) want, &v, 1) != 1) {
            break;
        }
        n = recv(fd, v.iov_base, want, MSG_DONTWAIT);
        if (n <= 0) {
            break;
        }
        v.iov_len = (size_t) n;
        evbuffer_commit_space(in, &v, 1);
        got += (size_t) n;
        R.up_io.reads++;
        if ((size_t) n < want) {
            break;
        }
    }
    evbuffer_freeze(in, 0);
}

static void
up_read(struct bufferevent *bev, void *arg)
{
    struct evbuffer *in = bufferevent_get_input(bev);

    R.up_io.reads++;
    /* under 4096 bytes from libevent: the socket is dry (see xg_ws.c) */
    if (R.up_open && evbuffer_get_length(in) >= 4096) {
        up_read_more(bev);
    }
    R.up_io.read_bytes += evbuffer_get_length(in);

    if (!R.up_open) {
        struct xg_wsproto_resp resp;
        size_t len = evbuffer_get_length(in);
        char head[8192];
        ssize_t hl;

        if (len > sizeof(head)) {
            len = sizeof(head);
        }
        evbuffer_copyout(in, head, len);
        hl = xg_wsproto_head_len(head, len, sizeof(head));
        if (hl < 0) {
            die("upstream: upgrade answer too long");
        }
        if (hl == 0) {
            return;
        }
        if (xg_wsproto_parse_response(head, (size_t) hl, R.key, time(NULL),
            &resp) != XG_OK)
        {
            fprintf(stderr, "bench_raw: upstream: http %d: %s\n",
                resp.status, resp.error ? resp.error : "refused");
            exit(1);
        }
        evbuffer_drain(in, (size_t) hl);
        R.up_open = 1;
        {
            /* subscribe once, as the only client of exsim */
            char req[16384];
            unsigned char hdr[XG_WSPROTO_MAX_FRAME_HEADER], mask[4];
            uint32_t r = (uint32_t) random();
            size_t n, hlen, i;
            int k;

            n = (size_t) snprintf(req, sizeof(req), "{\"jsonrpc\":\"2.0\","
                "\"id\":1,\"method\":\"public/subscribe\",\"params\":"
                "{\"channels\":[");
            for (k = 0; k < R.nchan && n < sizeof(req) - 32; k++) {
                n += (size_t) snprintf(req + n, sizeof(req) - n,
                    "%s\"bench.%d\"", k ? "," : "", R.chan0 + k);
            }
            n += (size_t) snprintf(req + n, sizeof(req) - n, "]}}");
            memcpy(mask, &r, 4);
            hlen = xg_wsproto_frame_header(hdr, 1, n, mask);
            for (i = 0; i < n; i++) {
                req[i] = (char) (req[i] ^ mask[i & 3]);
            }
            bufferevent_write(bev, hdr, hlen);
            bufferevent_write(bev, req, n);
        }
    } else if (!R.up_acking) {
        int one = 1;

        /*
         * The upstream in the TCP mode exgate's is in, the kernel's
         * default for a stream that only comes in: an ACK from each read
         * that empties the socket, billed to the reader. Sending the
         * subscription right after the upgrade's answer left this socket
         * "interactive" (Linux's pingpong: an ACK every second segment,
         * sent as it arrives, in exsim's send on the loopback), and the
         * kernel billed those ACKs to exsim: 0.7 fewer softirqs a read
         * than exgate, a part of exgate's excess CPU at one client
         * (docs/performance.md, "The upstream's ACKs"; run_bench reports
         * acks/read for both).
         */
        R.up_acking = 1;
        (void) setsockopt(bufferevent_getfd(bev), IPPROTO_TCP, TCP_QUICKACK,
            &one, sizeof(one));
    }
    up_forward(in);
}

static void
up_event(struct bufferevent *bev, short what, void *arg)
{
    if (what & BEV_EVENT_CONNECTED) {
        char req[512];
        int n;

        if (xg_wsproto_make_key(R.key) != XG_OK) {
            die("RAND_bytes failed");
        }
        n = snprintf(req, sizeof(req), "GET %s HTTP/1.1\r\nHost: %s:%d\r\n"
            "Upgrade: websocket\r\nConnection: Upgrade\r\n"
            "Sec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\n\r\n",
            R.up_path, R.up_host, R.up_port, R.key);
        bufferevent_write(bev, req, (size_t) n);
        return;
    }
    if (what & (BEV_EVENT_EOF | BEV_EVENT_ERROR)) {
        fprintf(stderr, "bench_raw: upstream %s after %llu bytes\n",
            (what & BEV_EVENT_EOF) ? "closed" : "failed", R.bytes);
        event_base_loopbreak(R.base);
    }
}

static void
up_connect(void)
{
    struct sockaddr_in sin;
    int one = 1;

    memset(&sin, 0, sizeof(sin));
    sin.sin_family = AF_INET;
    sin.sin_port = htons((uint16_t) R.up_port);
    if (inet_pton(AF_INET, R.up_host, &sin.sin_addr) != 1) {
        die("--upstream: HOST must be a numeric IPv4 address");
    }
    R.up = bufferevent_socket_new(R.base, -1, BEV_OPT_CLOSE_ON_FREE);
    bufferevent_setcb(R.up, up_read, NULL, up_event, NULL);
    bufferevent_enable(R.up, EV_READ | EV_WRITE);
    if (bufferevent_socket_connect(R.up, (struct sockaddr *) &sin,
        sizeof(sin)) != 0)
    {
        die("upstream: connect failed");
    }
    setsockopt(bufferevent_getfd(R.up), IPPROTO_TCP, TCP_NODELAY, &one,
        sizeof(one));
}

/* ---- clients ------------------------------------------------------------ */

static void
client_read(struct bufferevent *bev, void *arg)
{
    struct client *c = arg;
    struct evbuffer *in = bufferevent_get_input(bev);
    struct xg_wsproto_req req;
    char head[8192], ans[256], acc[XG_WSPROTO_ACCEPT_LEN + 1];
    size_t len;
    ssize_t hl;
    int n;

    if (c->open) {
        /* the bench client's subscribe: the one upstream subscription
           already covers it */
        evbuffer_drain(in, evbuffer_get_length(in));
        return;
    }
    len = evbuffer_get_length(in);
    if (len > sizeof(head)) {
        len = sizeof(head);
    }
    evbuffer_copyout(in, head, len);
    hl = xg_wsproto_head_len(head, len, sizeof(head));
    if (hl == 0) {
        return;
    }
    if (hl < 0 || xg_wsproto_parse_request(head, (size_t) hl, &req)
        != XG_OK)
    {
        fprintf(stderr, "bench_raw: client: bad upgrade request\n");
        client_free(c);
        return;
    }
    evbuffer_drain(in, (size_t) hl);
    xg_wsproto_accept(req.key, strlen(req.key), acc);
    n = snprintf(ans, sizeof(ans), "HTTP/1.1 101 Switching Protocols\r\n"
        "Upgrade: websocket\r\nConnection: Upgrade\r\n"
        "Sec-WebSocket-Accept: %s\r\n\r\n", acc);
    bufferevent_write(bev, ans, (size_t) n);
    c->open = 1;
    R.nopen++;
    if (R.nopen == R.want && R.up == NULL) {
        up_connect();
    }
    evbuffer_drain(in, evbuffer_get_length(in));
}

static void
client_write(struct bufferevent *bev, void *arg)
{
    up_resume_check();
}

static void
client_event(struct bufferevent *bev, short what, void *arg)
{
    if (what & (BEV_EVENT_EOF | BEV_EVENT_ERROR)) {
        client_free(arg);
        up_resume_check();
    }
}

static void
on_accept(struct evconnlistener *l, evutil_socket_t fd, struct sockaddr *sa,
    int len, void *arg)
{
    struct client *c;
    int one = 1;

    if (R.up != NULL) {
        /* the stream is already flowing: a late client would start in
           the middle of a frame */
        close(fd);
        return;
    }
    c = calloc(1, sizeof(*c));
    if (c == NULL) {
        die("out of memory");
    }
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    c->bev = bufferevent_socket_new(R.base, fd, BEV_OPT_CLOSE_ON_FREE);
    bufferevent_setcb(c->bev, client_read, client_write, client_event, c);
    bufferevent_setwatermark(c->bev, EV_WRITE, OUT_LOW, 0);
    bufferevent_set_max_single_write(c->bev, WRITE_MAX);
    xg_bev_count_writes(c->bev, &R.io);
    bufferevent_enable(c->bev, EV_READ | EV_WRITE);
    c->next = R.clients;
    if (R.clients != NULL) {
        R.clients->prev = c;
    }
    R.clients = c;
    R.nclients++;
}

static void
on_signal(evutil_socket_t sig, short what, void *arg)
{
    event_base_loopbreak(R.base);
}

/*
 * SIGUSR1 (and the exit): one line on stderr, "bench_raw io {...}", with
 * the counters exgate shows in /status "fanout" (the clients' sends) and
 * the upstream's reads and messages, so that run_bench can take them over
 * its measuring window.
 */
static void
io_report(evutil_socket_t sig, short what, void *arg)
{
    json_t *o = xg_io_json(&R.io);
    char *txt;

    json_object_set_new(o, "reads", json_integer((json_int_t)
        R.up_io.reads));
    json_object_set_new(o, "read_bytes", json_integer((json_int_t)
        R.up_io.read_bytes));
    json_object_set_new(o, "messages_in", json_integer((json_int_t)
        R.up_msgs));
    if (R.up != NULL) {
        struct tcp_info ti;
        socklen_t tl = sizeof(ti);

        /* the ACKs the upstream socket sent: run_bench's acks/read */
        memset(&ti, 0, sizeof(ti));
        if (getsockopt(bufferevent_getfd(R.up), IPPROTO_TCP, TCP_INFO, &ti,
            &tl) == 0 && tl >= offsetof(struct tcp_info, tcpi_data_segs_out)
            + sizeof(ti.tcpi_data_segs_out))
        {
            json_object_set_new(o, "acks", json_integer((json_int_t)
                (ti.tcpi_segs_out - ti.tcpi_data_segs_out)));
        }
    }
    txt = json_dumps(o, JSON_COMPACT);
    fprintf(stderr, "bench_raw io %s\n", txt);
    fflush(stderr);
    free(txt);
    json_decref(o);
}

int
main(int argc, char **argv)
{
    static const struct option lo[] = {
        { "upstream", required_argument, NULL, 'u' },
        { "listen", required_argument, NULL, 'l' },
        { "clients", required_argument, NULL, 'n' },
        { "channels", required_argument, NULL, 'k' },
        { "first-channel", required_argument, NULL, 'f' },
        { NULL, 0, NULL, 0 }
    };
    const char *up = NULL, *listen_at = "127.0.0.1:0", *slash, *colon;
    struct sockaddr_in sin;
    socklen_t sl = sizeof(sin);
    struct event *sig, *usr1;
    struct rlimit rl;
    char host[64];
    int o;

    R.want = 1;
    R.nchan = 1;
    while ((o = getopt_long(argc, argv, "n:", lo, NULL)) != -1) {
        switch (o) {
        case 'u': up = optarg; break;
        case 'l': listen_at = optarg; break;
        case 'n': R.want = atoi(optarg); break;
        case 'k': R.nchan = atoi(optarg); break;
        case 'f': R.chan0 = atoi(optarg); break;
        default:
            fprintf(stderr, "usage: bench_raw --upstream HOST:PORT[/PATH] "
                "[--listen ADDR:PORT] -n N [--channels K] "
                "[--first-channel I]\n");
            return 2;
        }
    }
    if (up == NULL || R.want < 1 || R.nchan < 1 || R.nchan > 1024) {
        die("need --upstream HOST:PORT, -n >= 1, --channels 1..1024");
    }
    colon = strchr(up, ':');
    slash = strchr(up, '/');
    if (colon == NULL || (size_t) (colon - up) >= sizeof(R.up_host)) {
        die("--upstream HOST:PORT[/PATH]");
    }
    memcpy(R.up_host, up, (size_t) (colon - up));
    R.up_port = atoi(colon + 1);
    snprintf(R.up_path, sizeof(R.up_path), "%s", slash ? slash : "/ws/api/v2");

    colon = strrchr(listen_at, ':');
    if (colon == NULL || (size_t) (colon - listen_at) >= sizeof(host)) {
        die("--listen ADDR:PORT");
    }
    memcpy(host, listen_at, (size_t) (colon - listen_at));
    host[colon - listen_at] = '\0';
    memset(&sin, 0, sizeof(sin));
    sin.sin_family = AF_INET;
    sin.sin_port = htons((uint16_t) atoi(colon + 1));
    if (inet_pton(AF_INET, host, &sin.sin_addr) != 1) {
        die("--listen: ADDR must be a numeric IPv4 address");
    }
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
    signal(SIGPIPE, SIG_IGN);
    srandom((unsigned) time(NULL) ^ (unsigned) getpid());
    R.base = event_base_new();
    R.lev = evconnlistener_new_bind(R.base, on_accept, NULL,
        LEV_OPT_CLOSE_ON_FREE | LEV_OPT_REUSEABLE, 1024,
        (struct sockaddr *) &sin, sizeof(sin));
    if (R.lev == NULL) {
        fprintf(stderr, "bench_raw: listen %s: %s\n", listen_at,
            strerror(errno));
        return 1;
    }
    getsockname(evconnlistener_get_fd(R.lev), (struct sockaddr *) &sin, &sl);
    sig = evsignal_new(R.base, SIGTERM, on_signal, NULL);
    event_add(sig, NULL);
    usr1 = evsignal_new(R.base, SIGUSR1, io_report, NULL);
    event_add(usr1, NULL);
    printf("bench_raw ready port=%d\n", ntohs(sin.sin_port));
    fflush(stdout);
    event_base_dispatch(R.base);

    fprintf(stderr, "bench_raw: forwarded %llu bytes in %llu reads\n",
        R.bytes, R.chunks);
    io_report(-1, 0, NULL);
    while (R.clients != NULL) {
        client_free(R.clients);
    }
    if (R.up != NULL) {
        bufferevent_free(R.up);
    }
    evconnlistener_free(R.lev);
    event_free(sig);
    event_free(usr1);
    event_base_free(R.base);
    return 0;
}
