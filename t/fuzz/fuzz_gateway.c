/*
 * fuzz_gateway.c: libFuzzer target for the gateway's input paths, with
 * the real parts: one deribit upstream (never connected, so requests
 * queue), a TCP client over a socketpair, and the module's upstream
 * message handler. The input is split into lines: a line starting with
 * 'U' is given to the module as a message from the exchange, any other
 * line is written by the client (one JSON request per line). A prelude
 * subscribes the client to a few channels so that notifications route.
 * No crash, no leak. Each run starts clean: it makes its own event base
 * and everything that lives on it (the fan-out among them), and frees
 * them all before the next run; only the parsed conf is kept.
 */
#include "xg_core.h"
#include "xg_client.h"
#include "xg_client_int.h"
#include "xg_conf.h"
#include "xg_jscan.h"
#include "xg_listen.h"
#include "xg_log.h"
#include "xg_venue.h"
#include "xg_upstream.h"

#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <event2/event.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const char conf_text[] =
    "error_log stderr error;\n"
    "upstream f {\n"
    "    url ws://127.0.0.1:9/ws/api/v2;\n"
    "    protocol deribit;\n"
    "    queue_limit 50;\n"
    "}\n"
    "listen 127.0.0.1:9 tcp upstream=f;\n"
    "client_auth off;\n"
    "client_max_message 64k;\n";

static const char prelude[] =
    "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"public/subscribe\","
    "\"params\":{\"channels\":[\"book.BTC-PERPETUAL.100ms\","
    "\"trades.BTC-PERPETUAL.raw\",\"ticker.BTC-PERPETUAL.100ms\"]}}\n";

static void
run_loop(struct event_base *base)
{
    int i;

    for (i = 0; i < 4; i++) {
        event_base_loop(base, EVLOOP_NONBLOCK);
    }
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static struct xg_main_conf *mc;
    struct event_base *base;
    struct xg_fanout *fo;
    struct xg_upstream *up;
    const struct xg_venue *pm;
    struct xg_listener l;
    struct xg_jspan v[2];
    const char *keys[] = { "id", "params" };
    char *errors = NULL;
    int sv[2];
    size_t i, start;

    xg_log_level = -1;
    if (mc == NULL) {
        /* as exgate does: a peer gone is an error return, not a signal */
        signal(SIGPIPE, SIG_IGN);
        mc = xg_conf_load_string("fuzz.conf", conf_text, &errors);
        free(errors);
        if (mc == NULL) {
            abort();
        }
    }
    /* the scanner on its own, with a splice */
    if (xg_jscan_object((const char *) data, size, keys, 2, v) == XG_OK
        && v[0].p != NULL) {
        size_t n;
        char *s = xg_jscan_splice((const char *) data, size, &v[0], "7", 1,
            &n);

        free(s);
    }

    base = event_base_new();
    fo = xg_client_fanout_new(base);
    if (base == NULL || fo == NULL) {
        abort();
    }
    up = xg_upstream_create(base, NULL, mc->upstreams);
    if (up == NULL) {
        abort();
    }
    pm = xg_venue_find("deribit");
    memset(&l, 0, sizeof(l));
    l.lc = mc->listens;
    l.gc = xg_gateway_conf_get(mc);
    l.base = base;
    l.fo = fo;
    l.up = up;
    l.pm = pm;
    l.pp = xg_upstream_proto(up);
    snprintf(l.addr, sizeof(l.addr), "fuzz");
    if (socketpair(AF_UNIX, SOCK_STREAM, 0, sv) != 0) {
        abort();
    }
    l.nclients++;
    xg_client_new_tcp(&l, sv[0], NULL);
    if (write(sv[1], prelude, sizeof(prelude) - 1) < 0) {
        abort();
    }
    run_loop(base);

    for (start = 0, i = 0; i <= size; i++) {
        if (i < size && data[i] != '\n') {
            continue;
        }
        if (i > start && data[start] == 'U') {
            /* no connection: the harness feeds the module directly */
            pm->on_message(l.pp, NULL, data + start + 1, i - start - 1);
        } else if (i > start) {
            if (write(sv[1], data + start, i - start + (i < size)) < 0) {
                break;
            }
        }
        start = i + 1;
        run_loop(base);
    }
    run_loop(base);
    close(sv[1]);
    run_loop(base);
    while (l.clients != NULL) {
        xg_client_free(l.clients, "fuzz done");
    }
    xg_client_fanout_free(fo);
    xg_upstream_free(up);
    event_base_free(base);
    return 0;
}
