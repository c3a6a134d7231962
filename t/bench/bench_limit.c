/*
 * bench_limit.c: the `limit` probe of the fan-out benchmark, what this
 * machine's kernel can deliver over loopback TCP when nothing but the
 * copying is done. One writer process, one reader process, N connected
 * socket pairs. The writer sends K pre-framed WebSocket text frames of
 * SIZE payload bytes in each send(2), round-robin over the N sockets
 * (waiting in epoll only when no socket took anything); the reader reads
 * each readable socket once per epoll pass into a 256 KiB buffer and
 * counts bytes. Deliveries/s = bytes read in the window / frame size.
 *
 *   bench_limit -n N [-k K] [--size SIZE] [--warmup S] [--duration S]
 *               [--cpus W,R] [--label TEXT] [--zerocopy]
 *
 * --zerocopy sends with MSG_ZEROCOPY (completions read off the error
 * queue after each send), to see whether it helps at these sizes.
 *
 * --cpus pins the writer to CPU W and the reader to CPU R, as run_bench
 * pins a system under test (W) and the bench client (R). Prints one JSON
 * line: deliveries/s, MB/s, the CPU-seconds of the writer and of the
 * reader in the window, and the reader's reads.
 *
 *   bench_limit --serve -n N [-k K] [--size SIZE] [--cpus W,R]
 *
 * The same writer as a WebSocket server for the bench client, to show how
 * much the bench client itself can take: prints "bench_limit ready
 * port=P", accepts N clients (the upgrade, then the answer to their
 * subscribe, id 1), and sends them exsim's bench messages on bench.0,
 * sequenced and time-stamped, K a send. A message block is made once for
 * every client; no client gets more than RING blocks ahead of the
 * slowest. Exits when every client has gone.
 */
#define _GNU_SOURCE
#include "config.h"

#include "xg_wsproto.h"

#include <errno.h>
#include <getopt.h>
#include <sched.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>

#define READ_SIZE  (256 * 1024)
#define RING       256          /* serve: blocks a client may run ahead */

static void
die(const char *what)
{
    fprintf(stderr, "bench_limit: %s: %s\n", what, strerror(errno));
    exit(1);
}

static double
now_s(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double) ts.tv_sec + (double) ts.tv_nsec / 1e9;
}

/* utime + stime of PID (0: this process) in seconds, or -1. */
static double
cpu_of(pid_t pid)
{
    char path[64], buf[1024], *p;
    unsigned long long ut, st;
    FILE *fp;
    size_t n;

    if (pid == 0) {
        struct rusage ru;

        getrusage(RUSAGE_SELF, &ru);
        return (double) ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6
            + (double) ru.ru_stime.tv_sec + ru.ru_stime.tv_usec / 1e6;
    }
    snprintf(path, sizeof(path), "/proc/%d/stat", (int) pid);
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
    return (double) (ut + st) / (double) sysconf(_SC_CLK_TCK);
}

/* This process's wait for a CPU while runnable, seconds (or -1). */
static double
wait_self(void)
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
pin(int cpu)
{
    cpu_set_t set;

    if (cpu < 0) {
        return;
    }
    CPU_ZERO(&set);
    CPU_SET(cpu, &set);
    if (sched_setaffinity(0, sizeof(set), &set) != 0) {
        die("sched_setaffinity");
    }
}

/* K frames of SIZE payload bytes, back to back, shaped like exsim's. */
static char *
make_block(int k, size_t size, size_t *flen)
{
    unsigned char hdr[XG_WSPROTO_MAX_FRAME_HEADER];
    char *payload = malloc(size + 1), *block;
    size_t hl, n;
    int i;

    if (payload == NULL) {
        die("malloc");
    }
    n = (size_t) snprintf(payload, size + 1, "{\"jsonrpc\":\"2.0\",\"method\""
        ":\"subscription\",\"params\":{\"channel\":\"bench.0\",\"data\":"
        "{\"seq\":1,\"ts_ns\":1,\"pad\":\"");
    if (n + 4 > size) {
        fprintf(stderr, "bench_limit: --size under %zu\n", n + 4);
        exit(2);
    }
    memset(payload + n, 'x', size - n - 4);
    memcpy(payload + size - 4, "\"}}}", 4);
    hl = xg_wsproto_frame_header(hdr, 1, size, NULL);
    *flen = hl + size;
    block = malloc(*flen * (size_t) k);
    if (block == NULL) {
        die("malloc");
    }
    for (i = 0; i < k; i++) {
        memcpy(block + (size_t) i * *flen, hdr, hl);
        memcpy(block + (size_t) i * *flen + hl, payload, size);
    }
    free(payload);
    return block;
}

/*
 * --zerocopy: MSG_ZEROCOPY sends; reads the completions off socket FD's
 * error queue so that it never fills. Returns how many were read.
 */
static unsigned long
zc_reap(int fd)
{
    char ctl[256];
    struct msghdr mh;
    unsigned long n = 0;

    while (n < 1024) {      /* a reset socket may answer forever */
        memset(&mh, 0, sizeof(mh));
        mh.msg_control = ctl;
        mh.msg_controllen = sizeof(ctl);
        if (recvmsg(fd, &mh, MSG_ERRQUEUE | MSG_DONTWAIT) < 0) {
            break;
        }
        n++;
    }
    return n;
}

static int zerocopy;

/*
 * Sends BLOCK round-robin on the N sockets FD, each from where it left
 * off, until every reader end has gone.
 */
static void
writer(const int *fd, int n, const char *block, size_t blen)
{
    size_t *off = calloc((size_t) n, sizeof(*off));
    char *gone = calloc((size_t) n, 1);
    struct epoll_event ev, evs[64];
    int ep = epoll_create1(0), i, left = n;

    if (off == NULL || gone == NULL || ep < 0) {
        die("writer setup");
    }
    for (i = 0; i < n; i++) {
        ev.events = EPOLLOUT;
        ev.data.u32 = (uint32_t) i;
        if (epoll_ctl(ep, EPOLL_CTL_ADD, fd[i], &ev) != 0) {
            die("epoll_ctl");
        }
    }
    while (left > 0) {
        int progress = 0;

        for (i = 0; i < n; i++) {
            ssize_t w;

            if (gone[i]) {
                continue;
            }
            w = send(fd[i], block + off[i], blen - off[i],
                MSG_DONTWAIT | MSG_NOSIGNAL | (zerocopy ? MSG_ZEROCOPY : 0));
            if (zerocopy) {
                zc_reap(fd[i]);
            }
            if (w > 0) {
                off[i] = (off[i] + (size_t) w) % blen;
                progress = 1;
            } else if (w < 0 && errno != EAGAIN && errno != EINTR) {
                gone[i] = 1;
                left--;
                epoll_ctl(ep, EPOLL_CTL_DEL, fd[i], NULL);
            }
        }
        if (!progress && left > 0) {
            epoll_wait(ep, evs, 64, 10);
        }
    }
    free(off);
    free(gone);
    close(ep);
}

/* ---- --serve ------------------------------------------------------------ */

struct serve {
    int        n, k;
    size_t     size, flen, blen;
    char      *ring;            /* RING blocks of K frames */
    uint64_t   made;            /* blocks made so far */
    uint64_t  *blk;             /* per client: the block it is sending */
    size_t    *off;             /* and how far into it */
    char      *gone;
};

static uint64_t
now_ns(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t) ts.tv_sec * 1000000000ull + (uint64_t) ts.tv_nsec;
}

/* Block number S->made: K messages with the next seqs, stamped now. */
static void
serve_make(struct serve *s)
{
    char *b = s->ring + (s->made % RING) * s->blen, head[256];
    unsigned char hdr[XG_WSPROTO_MAX_FRAME_HEADER];
    uint64_t ts = now_ns();
    size_t hl = xg_wsproto_frame_header(hdr, 1, s->size, NULL), n;
    int j;

    for (j = 0; j < s->k; j++) {
        char *f = b + (size_t) j * s->flen;

        n = (size_t) snprintf(head, sizeof(head), "{\"jsonrpc\":\"2.0\","
            "\"method\":\"subscription\",\"params\":{\"channel\":"
            "\"bench.0\",\"data\":{\"seq\":%llu,\"ts_ns\":%llu,\"pad\":\"",
            (unsigned long long) (s->made * (uint64_t) s->k + (uint64_t) j),
            (unsigned long long) ts);
        memcpy(f, hdr, hl);
        memcpy(f + hl, head, n);
        memset(f + hl + n, 'x', s->size - n - 4);
        memcpy(f + hl + s->size - 4, "\"}}}", 4);
    }
    s->made++;
}

/* Reads one upgrade request from FD (blocking) and answers it. */
static void
serve_upgrade(int fd)
{
    static const char sub[] = "{\"jsonrpc\":\"2.0\",\"id\":1,\"result\":"
        "[\"bench.0\"]}";
    char head[8192], ans[512], acc[XG_WSPROTO_ACCEPT_LEN + 1];
    unsigned char hdr[XG_WSPROTO_MAX_FRAME_HEADER];
    struct xg_wsproto_req req;
    size_t have = 0, hl2;
    ssize_t hl = 0, r;
    int n;

    while (hl == 0) {
        r = read(fd, head + have, sizeof(head) - have);
        if (r <= 0) {
            die("serve: read the upgrade");
        }
        have += (size_t) r;
        hl = xg_wsproto_head_len(head, have, sizeof(head));
    }
    if (hl < 0 || xg_wsproto_parse_request(head, (size_t) hl, &req)
        != XG_OK)
    {
        fprintf(stderr, "bench_limit: serve: a bad upgrade request\n");
        exit(1);
    }
    xg_wsproto_accept(req.key, strlen(req.key), acc);
    n = snprintf(ans, sizeof(ans), "HTTP/1.1 101 Switching Protocols\r\n"
        "Upgrade: websocket\r\nConnection: Upgrade\r\n"
        "Sec-WebSocket-Accept: %s\r\n\r\n", acc);
    hl2 = xg_wsproto_frame_header(hdr, 1, sizeof(sub) - 1, NULL);
    memcpy(ans + n, hdr, hl2);
    memcpy(ans + n + hl2, sub, sizeof(sub) - 1);
    if (write(fd, ans, (size_t) n + hl2 + sizeof(sub) - 1)
        != (ssize_t) ((size_t) n + hl2 + sizeof(sub) - 1))
    {
        die("serve: write the upgrade answer");
    }
}

/*
 * The writer of --serve: like writer(), but each client sends block after
 * block of sequenced messages, made once for all of them.
 */
static int
serve(int n, int k, size_t size, int wcpu)
{
    struct serve s;
    struct sockaddr_in sin;
    socklen_t sl = sizeof(sin);
    struct epoll_event ev, evs[64];
    int lfd, ep, i, left = n, one = 1, *fd;

    memset(&s, 0, sizeof(s));
    s.n = n;
    s.k = k;
    s.size = size;
    free(make_block(1, size, &s.flen));     /* checks SIZE, sets flen */
    s.blen = s.flen * (size_t) k;
    s.ring = malloc(s.blen * RING);
    s.blk = calloc((size_t) n, sizeof(*s.blk));
    s.off = calloc((size_t) n, sizeof(*s.off));
    s.gone = calloc((size_t) n, 1);
    fd = calloc((size_t) n, sizeof(*fd));
    if (s.ring == NULL || s.blk == NULL || s.off == NULL || s.gone == NULL
        || fd == NULL)
    {
        die("malloc");
    }
    pin(wcpu);
    lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    memset(&sin, 0, sizeof(sin));
    sin.sin_family = AF_INET;
    sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    if (lfd < 0 || bind(lfd, (struct sockaddr *) &sin, sizeof(sin)) != 0
        || listen(lfd, 1024) != 0
        || getsockname(lfd, (struct sockaddr *) &sin, &sl) != 0)
    {
        die("listen");
    }
    printf("bench_limit ready port=%d\n", ntohs(sin.sin_port));
    fflush(stdout);
    for (i = 0; i < n; i++) {
        fd[i] = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
        if (fd[i] < 0) {
            die("accept");
        }
        setsockopt(fd[i], IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
        serve_upgrade(fd[i]);
    }
    close(lfd);
    ep = epoll_create1(0);
    for (i = 0; i < n; i++) {
        ev.events = EPOLLOUT;
        ev.data.u32 = (uint32_t) i;
        if (ep < 0 || epoll_ctl(ep, EPOLL_CTL_ADD, fd[i], &ev) != 0) {
            die("epoll_ctl");
        }
    }
    serve_make(&s);
    while (left > 0) {
        uint64_t slow = UINT64_MAX;
        int progress = 0;

        for (i = 0; i < n; i++) {
            if (!s.gone[i] && s.blk[i] < slow) {
                slow = s.blk[i];
            }
        }
        for (i = 0; i < n; i++) {
            ssize_t w;

            if (s.gone[i]) {
                continue;
            }
            if (s.blk[i] == s.made) {
                if (s.made - slow >= RING) {
                    continue;       /* would overwrite the slowest's */
                }
                serve_make(&s);
            }
            w = send(fd[i], s.ring + (s.blk[i] % RING) * s.blen + s.off[i],
                s.blen - s.off[i], MSG_DONTWAIT | MSG_NOSIGNAL);
            if (w > 0) {
                s.off[i] += (size_t) w;
                if (s.off[i] == s.blen) {
                    s.off[i] = 0;
                    s.blk[i]++;
                }
                progress = 1;
            } else if (w < 0 && errno != EAGAIN && errno != EINTR) {
                s.gone[i] = 1;
                left--;
                epoll_ctl(ep, EPOLL_CTL_DEL, fd[i], NULL);
                close(fd[i]);
            }
        }
        if (!progress && left > 0) {
            epoll_wait(ep, evs, 64, 10);
        }
    }
    close(ep);
    free(s.ring);
    free(s.blk);
    free(s.off);
    free(s.gone);
    free(fd);
    return 0;
}

static void
usage(void)
{
    fprintf(stderr, "usage: bench_limit -n N [-k K] [--size SIZE] "
        "[--warmup S] [--duration S] [--cpus W,R] [--label TEXT] "
        "[--zerocopy]\n"
        "       bench_limit --serve -n N [-k K] [--size SIZE] "
        "[--cpus W,R]\n");
    exit(2);
}

int
main(int argc, char **argv)
{
    static const struct option lo[] = {
        { "clients", required_argument, NULL, 'n' },
        { "batch", required_argument, NULL, 'k' },
        { "size", required_argument, NULL, 's' },
        { "warmup", required_argument, NULL, 'w' },
        { "duration", required_argument, NULL, 'd' },
        { "cpus", required_argument, NULL, 'c' },
        { "label", required_argument, NULL, 'l' },
        { "serve", no_argument, NULL, 'S' },
        { "zerocopy", no_argument, NULL, 'Z' },
        { NULL, 0, NULL, 0 }
    };
    int serving = 0;
    int n = 1, k = 64, wcpu = -1, rcpu = -1, o, i, lfd, one = 1, ep;
    int *wfd, *rfd;
    double warmup = 0.5, duration = 4, t0, tw0 = 0, tw1, wc0 = 0, rc0 = 0;
    double rw0 = 0;
    size_t size = 300, flen, blen;
    const char *label = "";
    struct sockaddr_in sin;
    socklen_t sl = sizeof(sin);
    struct rlimit rl;
    struct epoll_event ev, evs[256];
    unsigned long long bytes = 0, bytes0 = 0, reads = 0, reads0 = 0;
    char *block, *buf;
    pid_t child;

    while ((o = getopt_long(argc, argv, "n:k:", lo, NULL)) != -1) {
        switch (o) {
        case 'n': n = atoi(optarg); break;
        case 'k': k = atoi(optarg); break;
        case 's': size = (size_t) atol(optarg); break;
        case 'w': warmup = atof(optarg); break;
        case 'd': duration = atof(optarg); break;
        case 'c':
            if (sscanf(optarg, "%d,%d", &wcpu, &rcpu) != 2) {
                usage();
            }
            break;
        case 'l': label = optarg; break;
        case 'S': serving = 1; break;
        case 'Z': zerocopy = 1; break;
        default: usage();
        }
    }
    if (n < 1 || k < 1 || size < 1 || size > 65535 || duration <= 0
        || warmup < 0)
    {
        usage();
    }
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
    signal(SIGPIPE, SIG_IGN);
    if (serving) {
        return serve(n, k, size, wcpu);
    }
    block = make_block(k, size, &flen);
    blen = flen * (size_t) k;

    /* N connected pairs over loopback: accepted ends write, others read */
    lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    memset(&sin, 0, sizeof(sin));
    sin.sin_family = AF_INET;
    sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (lfd < 0 || bind(lfd, (struct sockaddr *) &sin, sizeof(sin)) != 0
        || listen(lfd, 1024) != 0
        || getsockname(lfd, (struct sockaddr *) &sin, &sl) != 0)
    {
        die("listen");
    }
    wfd = calloc((size_t) n, sizeof(int));
    rfd = calloc((size_t) n, sizeof(int));
    if (wfd == NULL || rfd == NULL) {
        die("calloc");
    }
    for (i = 0; i < n; i++) {
        rfd[i] = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (rfd[i] < 0 || connect(rfd[i], (struct sockaddr *) &sin,
            sizeof(sin)) != 0)
        {
            die("connect");
        }
        wfd[i] = accept4(lfd, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);
        if (wfd[i] < 0) {
            die("accept");
        }
        /* as exgate and the bench client set them */
        setsockopt(wfd[i], IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
        if (zerocopy && setsockopt(wfd[i], SOL_SOCKET, SO_ZEROCOPY, &one,
            sizeof(one)) != 0)
        {
            die("SO_ZEROCOPY");
        }
        setsockopt(rfd[i], IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    }
    close(lfd);

    fflush(stdout);
    child = fork();
    if (child < 0) {
        die("fork");
    }
    if (child > 0) {
        /* the writer */
        for (i = 0; i < n; i++) {
            close(rfd[i]);
        }
        pin(wcpu);
        writer(wfd, n, block, blen);
        for (i = 0; i < n; i++) {
            close(wfd[i]);
        }
        waitpid(child, &o, 0);
        free(block);
        free(wfd);
        free(rfd);
        return WIFEXITED(o) ? WEXITSTATUS(o) : 1;
    }

    /* the reader */
    for (i = 0; i < n; i++) {
        close(wfd[i]);
    }
    pin(rcpu);
    buf = malloc(READ_SIZE);
    ep = epoll_create1(0);
    if (buf == NULL || ep < 0) {
        die("reader setup");
    }
    for (i = 0; i < n; i++) {
        ev.events = EPOLLIN;
        ev.data.u32 = (uint32_t) i;
        if (epoll_ctl(ep, EPOLL_CTL_ADD, rfd[i], &ev) != 0) {
            die("epoll_ctl");
        }
    }
    t0 = now_s();
    for (;;) {
        int ne = epoll_wait(ep, evs, 256, 100), j;
        double t = now_s();

        for (j = 0; j < ne; j++) {
            ssize_t r = read(rfd[evs[j].data.u32], buf, READ_SIZE);

            if (r > 0) {
                bytes += (unsigned long long) r;
                reads++;
            } else if (r == 0 || (errno != EAGAIN && errno != EINTR)) {
                die("read");
            }
        }
        if (tw0 == 0 && t - t0 >= warmup) {
            tw0 = t;
            bytes0 = bytes;
            reads0 = reads;
            wc0 = cpu_of(getppid());
            rc0 = cpu_of(0);
            rw0 = wait_self();
        } else if (tw0 != 0 && t - tw0 >= duration) {
            double wc1 = cpu_of(getppid()), rc1 = cpu_of(0), win;
            double rw1 = wait_self();
            unsigned long long d = (bytes - bytes0) / flen;

            tw1 = t;
            win = tw1 - tw0;
            printf("{\"label\":\"%s\",\"clients\":%d,\"k\":%d,"
                "\"msg_bytes\":%zu,\"frame_bytes\":%zu,\"window_s\":%.4f,"
                "\"deliveries\":%llu,\"deliveries_per_s\":%.0f,"
                "\"mbytes_per_s\":%.1f,\"writer_cpu_s\":%.2f,"
                "\"reader_cpu_s\":%.2f,\"reader_wait_s\":%.3f,"
                "\"reads\":%llu,\"ok\":%s}\n",
                label, n, k, size, flen, win, d, (double) d / win,
                (double) (bytes - bytes0) / win / 1e6,
                wc0 >= 0 && wc1 >= 0 ? wc1 - wc0 : -1.0, rc1 - rc0,
                rw0 >= 0 && rw1 >= 0 ? rw1 - rw0 : -1.0,
                reads - reads0, d > 0 ? "true" : "false");
            fflush(stdout);
            break;
        }
    }
    for (i = 0; i < n; i++) {
        close(rfd[i]);
    }
    close(ep);
    free(buf);
    free(block);
    free(wfd);
    free(rfd);
    return 0;
}
