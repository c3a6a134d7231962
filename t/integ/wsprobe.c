/*
 * wsprobe.c: a small command-line WebSocket client and server built on
 * the exgate transport (xg_ws), for the integration scripts.
 *
 *   wsprobe server [--port N] [--tls CERT KEY] [--max BYTES] [--text-only]
 *                  [--ping MS] [--once]
 *     Listens on 127.0.0.1 (port 0: any), prints "port N", echoes every
 *     message (as an xg_frame appended by reference). A text message "close CODE REASON" makes it close that
 *     connection with CODE; "big N" makes it send N binary bytes. Every
 *     connection's end is printed as "down: REASON code=C".
 *
 *   wsprobe client URL [--ca FILE] [--insecure] [--size N] [--binary]
 *                  [--count K] [--send TEXT] [--command TEXT]
 *                  [--close CODE]
 *                  [--expect-close CODE] [--max BYTES] [--timeout MS]
 *     Connects, sends K messages of N bytes (or TEXT) and checks each echo,
 *     then sends the COMMAND text (not echoed), then closes with CODE (if
 *     given; 1000 unless --expect-close) and waits for the end. Exit 0 when
 *     it opened, every echo matched and, with --expect-close, the peer's
 *     close code was CODE; else 1. Prints "open", "echo ok N", "message N"
 *     and "down: REASON code=C http=S retry=R".
 */
#include "xg_core.h"
#include "xg_conf.h"
#include "xg_log.h"
#include "xg_tls.h"
#include "xg_ws.h"

#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include <event2/dns.h>
#include <event2/event.h>
#include <event2/listener.h>

static struct event_base *base;
static struct xg_ws_opts opts;
static SSL_CTX *srv_tls;
static int once;

/* client state */
static unsigned char *payload;
static size_t payload_len;
static int send_binary;
static int count = 1;
static int sent, echoed;
static int close_code;
static int expect_close = -1;
static int opened, bad_echo, done, got_close;
static const char *command;     /* sent once after the echoes, unechoed */

static void
usage(void)
{
    fprintf(stderr, "usage: wsprobe server [options] | wsprobe client URL "
        "[options]\n");
    exit(2);
}

/* ---- server ---------------------------------------------------------------- */

static void
srv_message(struct xg_ws *ws, int binary, const unsigned char *data,
    size_t len, void *arg)
{
    struct xg_frame *f;
    char cmd[160];
    int code;
    size_t n;

    if (!binary && len < sizeof(cmd)) {
        memcpy(cmd, data, len);
        cmd[len] = '\0';
        if (sscanf(cmd, "close %d", &code) == 1) {
            const char *r = strchr(cmd + 6, ' ');
            xg_ws_close(ws, code, r ? r + 1 : "");
            return;
        }
        if (sscanf(cmd, "big %zu", &n) == 1 && n <= (64u << 20)) {
            unsigned char *b = malloc(n ? n : 1);
            size_t i;
            for (i = 0; i < n; i++) {
                b[i] = (unsigned char) (i * 7);
            }
            xg_ws_send_binary(ws, b, n);
            free(b);
            return;
        }
    }
    /* Echo through the fan-out path: one pre-encoded frame by reference. */
    f = binary ? xg_frame_binary(data, len) : xg_frame_text(data, len);
    xg_ws_send_frame(ws, f);
    xg_frame_unref(f);
}

static void
srv_down(struct xg_ws *ws, const struct xg_ws_down *why, void *arg)
{
    printf("down: %s code=%d http=%d\n", why->reason, why->close_code,
        why->http_status);
    fflush(stdout);
    xg_ws_free(ws);
    if (once) {
        event_base_loopexit(base, NULL);
    }
}

static const struct xg_ws_cbs srv_cbs = {
    NULL, NULL, srv_message, srv_down, NULL
};

static int
srv_check(struct xg_ws *ws, const char *path, void *arg)
{
    return strncmp(path, "/missing", 8) == 0 ? 404 : 0;
}

static void
srv_accept(struct evconnlistener *l, evutil_socket_t fd, struct sockaddr *sa,
    int slen, void *arg)
{
    xg_ws_accept(base, fd, srv_tls, &opts, srv_check, &srv_cbs, NULL);
}

static int
run_server(int argc, char **argv)
{
    struct evconnlistener *lst;
    struct sockaddr_in sin;
    socklen_t sl;
    char err[512];
    int i, port = 0;

    for (i = 0; i < argc; i++) {
        if (strcmp(argv[i], "--port") == 0 && i + 1 < argc) {
            port = atoi(argv[++i]);
        } else if (strcmp(argv[i], "--tls") == 0 && i + 2 < argc) {
            srv_tls = xg_tls_server_ctx(argv[i + 1], argv[i + 2], err,
                sizeof(err));
            if (srv_tls == NULL) {
                fprintf(stderr, "wsprobe: %s\n", err);
                return 1;
            }
            i += 2;
        } else if (strcmp(argv[i], "--max") == 0 && i + 1 < argc) {
            opts.max_message = strtoul(argv[++i], NULL, 10);
        } else if (strcmp(argv[i], "--ping") == 0 && i + 1 < argc) {
            opts.ping_ms = strtoul(argv[++i], NULL, 10);
            opts.ping_timeout_ms = 3 * opts.ping_ms;
        } else if (strcmp(argv[i], "--text-only") == 0) {
            opts.text_only = 1;
        } else if (strcmp(argv[i], "--once") == 0) {
            once = 1;
        } else {
            usage();
        }
    }
    memset(&sin, 0, sizeof(sin));
    sin.sin_family = AF_INET;
    sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    sin.sin_port = htons((uint16_t) port);
    lst = evconnlistener_new_bind(base, srv_accept, NULL,
        LEV_OPT_CLOSE_ON_FREE | LEV_OPT_REUSEABLE, 64,
        (struct sockaddr *) &sin, sizeof(sin));
    if (lst == NULL) {
        perror("wsprobe: listen");
        return 1;
    }
    sl = sizeof(sin);
    getsockname(evconnlistener_get_fd(lst), (struct sockaddr *) &sin, &sl);
    printf("port %u\n", ntohs(sin.sin_port));
    fflush(stdout);
    event_base_dispatch(base);
    evconnlistener_free(lst);
    if (srv_tls != NULL) {
        SSL_CTX_free(srv_tls);
    }
    return 0;
}

/* ---- client ---------------------------------------------------------------- */

static void
cli_send_next(struct xg_ws *ws)
{
    if (sent < count) {
        sent++;
        if (send_binary) {
            xg_ws_send_binary(ws, payload, payload_len);
        } else {
            xg_ws_send_text(ws, payload, payload_len);
        }
    } else if (command != NULL) {
        xg_ws_send_text(ws, command, strlen(command));
        command = NULL;
    } else if (close_code > 0) {
        xg_ws_close(ws, close_code, "wsprobe done");
    } else if (expect_close < 0) {
        xg_ws_close(ws, 1000, "wsprobe done");
    }
}

static void
cli_open(struct xg_ws *ws, void *arg)
{
    opened = 1;
    printf("open %s\n", xg_ws_peer(ws));
    fflush(stdout);
    cli_send_next(ws);
}

static void
cli_message(struct xg_ws *ws, int binary, const unsigned char *data,
    size_t len, void *arg)
{
    if (sent > echoed && binary == send_binary && len == payload_len
        && memcmp(data, payload, len) == 0)
    {
        echoed++;
        printf("echo ok %zu\n", len);
    } else if (sent > echoed) {
        bad_echo = 1;
        printf("echo BAD: %zu bytes, binary=%d\n", len, binary);
    } else {
        printf("message %zu\n", len);
    }
    fflush(stdout);
    cli_send_next(ws);
}

static void
cli_down(struct xg_ws *ws, const struct xg_ws_down *why, void *arg)
{
    printf("down: %s code=%d http=%d retry=%d\n", why->reason,
        why->close_code, why->http_status, why->retry_after_s);
    fflush(stdout);
    got_close = why->close_code;
    done = 1;
    xg_ws_free(ws);
    event_base_loopexit(base, NULL);
}

static const struct xg_ws_cbs cli_cbs = {
    NULL, cli_open, cli_message, cli_down, NULL
};

static void
cli_timeout(evutil_socket_t fd, short what, void *arg)
{
    printf("wsprobe: timeout\n");
    fflush(stdout);
    event_base_loopexit(base, NULL);
}

static int
run_client(int argc, char **argv)
{
    struct evdns_base *dns;
    struct xg_url url;
    struct xg_ws *ws;
    struct event *tmo;
    struct timeval tv;
    const char *text = NULL;
    long timeout_ms = 10000;
    size_t i, size = 0;
    int a, size_given = 0;

    if (argc < 1 || xg_conf_parse_url(argv[0], &url) != XG_OK) {
        usage();
    }
    for (a = 1; a < argc; a++) {
        if (strcmp(argv[a], "--ca") == 0 && a + 1 < argc) {
            opts.tls_ca = argv[++a];
        } else if (strcmp(argv[a], "--insecure") == 0) {
            opts.tls_verify = 0;
        } else if (strcmp(argv[a], "--size") == 0 && a + 1 < argc) {
            size = strtoul(argv[++a], NULL, 10);
            size_given = 1;
        } else if (strcmp(argv[a], "--send") == 0 && a + 1 < argc) {
            text = argv[++a];
        } else if (strcmp(argv[a], "--command") == 0 && a + 1 < argc) {
            command = argv[++a];
        } else if (strcmp(argv[a], "--binary") == 0) {
            send_binary = 1;
        } else if (strcmp(argv[a], "--count") == 0 && a + 1 < argc) {
            count = atoi(argv[++a]);
        } else if (strcmp(argv[a], "--close") == 0 && a + 1 < argc) {
            close_code = atoi(argv[++a]);
        } else if (strcmp(argv[a], "--expect-close") == 0 && a + 1 < argc) {
            expect_close = atoi(argv[++a]);
        } else if (strcmp(argv[a], "--max") == 0 && a + 1 < argc) {
            opts.max_message = strtoul(argv[++a], NULL, 10);
        } else if (strcmp(argv[a], "--timeout") == 0 && a + 1 < argc) {
            timeout_ms = atol(argv[++a]);
        } else {
            usage();
        }
    }
    if (text != NULL) {
        payload_len = strlen(text);
        payload = (unsigned char *) xg_strdup(text);
    } else {
        payload_len = size;
        payload = xg_malloc(size ? size : 1);
        for (i = 0; i < size; i++) {
            payload[i] = (unsigned char) ('a' + i % 26);
        }
    }
    if (text == NULL && !size_given) {
        count = 0;
    }
    dns = evdns_base_new(base, EVDNS_BASE_INITIALIZE_NAMESERVERS);
    if (dns == NULL) {
        dns = evdns_base_new(base, 0);
        evdns_base_load_hosts(dns, NULL);
    }
    ws = xg_ws_connect(base, dns, &url, &opts, &cli_cbs, NULL);
    tmo = evtimer_new(base, cli_timeout, NULL);
    tv.tv_sec = timeout_ms / 1000;
    tv.tv_usec = (timeout_ms % 1000) * 1000;
    evtimer_add(tmo, &tv);
    event_base_dispatch(base);
    if (!done) {
        xg_ws_free(ws);
    }
    event_free(tmo);
    evdns_base_free(dns, 0);
    free(payload);
    if (!opened || bad_echo || echoed != (count > 0 ? count : 0) || !done) {
        return 1;
    }
    if (expect_close >= 0 && got_close != expect_close) {
        printf("wsprobe: close code %d, expected %d\n", got_close,
            expect_close);
        return 1;
    }
    return 0;
}

int
main(int argc, char **argv)
{
    int rc;

    signal(SIGPIPE, SIG_IGN);
    xg_log_level = getenv("WSPROBE_DEBUG") ? XG_LOG_DEBUG : XG_LOG_INFO;
    if (argc < 2) {
        usage();
    }
    memset(&opts, 0, sizeof(opts));
    opts.max_message = 4u << 20;
    opts.tls_verify = 1;
    opts.connect_timeout_ms = 5000;
    opts.handshake_timeout_ms = 5000;
    opts.close_timeout_ms = 2000;
    base = event_base_new();
    if (strcmp(argv[1], "server") == 0) {
        rc = run_server(argc - 2, argv + 2);
    } else if (strcmp(argv[1], "client") == 0) {
        rc = run_client(argc - 2, argv + 2);
    } else {
        usage();
        rc = 2;
    }
    event_base_free(base);
    xg_tls_cleanup();
    return rc;
}
