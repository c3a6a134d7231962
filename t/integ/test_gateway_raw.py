#!/usr/bin/python3
"""The raw venue (`protocol raw;`) as a pass-through to exsim, which raw
does not understand: it forwards exsim's JSON-RPC verbatim both ways.

One WebSocket client on a custom path (/feed/v1 on a listener with
path=/feed/*) and one TCP client subscribe through raw listeners, with `replay "subscribe";` and an
`on_open` that authenticates the connection (public/auth). After exsim
`drop`, `close 1011` and `stall` the notifications resume on the same
client sockets, and exsim counts, per connection:
  - one public/auth (the on_open text), sent first: book.BTC-PERPETUAL.raw
    needs auth, and exsim fails the whole subscribe with 13778 without it,
    so a good answer to that subscribe on every connection shows the order;
  - each client's subscribe once; the subscribe both clients sent with the
    same text once (deduplicated);
  - none for the subscribe of a client that has left (forgotten).
While the upstream is stalled, plain messages queue (queue_limit 3,
queue_timeout 2s: the excess and the expired ones are dropped and logged)
and go out once it is ready again; a new subscribe sent meanwhile is
replayed, not queued too (exsim gets it once). An unsubscribe then a
subscribe again of the same text are replayed in the order last sent.
Also: the path (/feed/v1 and /feed/v2/btc accepted; /feed, /fee and the
deribit default /ws/api/v2 get 404); replay_limit (a text over it is sent
but not remembered, logged); a TCP line that is not UTF-8 is dropped and
counted, one over client_max_message closes its client as on any listener."""

import asyncio
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import gateway_harness as gh  # noqa: E402
from gateway_harness import TCPClient, WSClient, check  # noqa: E402

import websockets  # noqa: E402

AUTH = json.dumps({"jsonrpc": "2.0", "id": "xg-open", "method": "public/auth",
                   "params": {"grant_type": "client_credentials",
                              "client_id": "exsim",
                              "client_secret": "exsim-secret"}},
                  separators=(",", ":"))


def sub(id, channel):
    return ('{"jsonrpc":"2.0","id":%d,"method":"public/subscribe",'
            '"params":{"channels":["%s"]}}' % (id, channel))


CH_A = "book.BTC-PERPETUAL.raw"         # ws client; needs auth
CH_B = "ticker.ETH-PERPETUAL.100ms"     # tcp client
CH_D = "book.ETH-PERPETUAL.100ms"       # both, the same text
CH_C = "ticker.BTC-PERPETUAL.100ms"     # a client that leaves
CH_E = "ticker.ETH-PERPETUAL.raw"       # sent while stalled
SUB_A, SUB_B, SUB_D, SUB_C, SUB_E = (sub(1, CH_A), sub(2, CH_B),
                                     sub(3, CH_D), sub(4, CH_C),
                                     sub(5, CH_E))

UPSTREAM = ("    protocol raw;\n"
            "    on_open '%s';\n"
            "    replay \"subscribe\";\n"
            "    ping 200ms;\n"
            "    ping_timeout 1000ms;\n"
            "    handshake_timeout 1s;\n"
            "    close_timeout 400ms;\n"
            "    queue_limit 3;\n"
            "    queue_timeout 2s;\n"
            "    replay_limit 5;\n"
            "    reconnect fixed { delay 100ms; }\n" % AUTH)


def subscribes(h):
    st = h.control("stats")
    return st.get("subscribes", {}), st["requests"].get("public/auth", 0)


def answers(cl, id):
    return cl.answers.get(json.dumps(id), [])


async def good_answer(cl, id, n0=None):
    """Waits for one more answer to ID than N0 (default: than now); every
    answer to ID must be a result. Answers are kept (every client sees the
    answers to every replay, on every connection)."""
    n0 = len(answers(cl, id)) if n0 is None else n0
    await cl._wait(lambda: len(answers(cl, id)) > n0, 10,
                   "answer %d to id %d" % (n0 + 1, id))
    for m in answers(cl, id):
        check("result" in m and m["result"], "%s: id %d answered %r"
              % (cl.name, id, m))


async def resumed(h, clients, channels, conn0, what):
    """The upstream is ready on a later connection and every client gets
    new notifications on every channel."""
    u = h.wait_up(lambda u: u["state"] == "ready"
                  and u["connection_id"] > conn0, 15, "ready after " + what)
    before = [{ch: cl.count(ch) for ch in channels} for cl in clients]
    for cl, b in zip(clients, before):
        for ch in channels:
            await cl.wait_notes(ch, b[ch] + 2, 10)
    return u


def check_counts(h, nconn, what, extra_b=0):
    """Per connection: one auth, each subscribe text once; C's only on the
    first connection; D twice on the first (both clients sent it live);
    EXTRA_B more of B sent live."""
    subs, auths = subscribes(h)
    check(auths == nconn, "%s: %d public/auth for %d connections"
          % (what, auths, nconn))
    want = {CH_A: nconn, CH_B: nconn + extra_b, CH_D: nconn + 1, CH_C: 1}
    for ch, n in want.items():
        check(subs.get(ch) == n, "%s: exsim subscribes %s = %r, want %d "
              "(all: %r)" % (what, ch, subs.get(ch), n, subs))
    return subs


async def body(h):
    gh.start(h, UPSTREAM, main_extra="client_max_message 4k;\n",
             sim_args=("--rate", "20"),
             ws_extra=" path=/feed/* client_auth=off",
             tcp_extra=" client_auth=off")
    h.wait_up(lambda u: u["state"] == "ready", 10, "first ready")
    base = "ws://127.0.0.1:%d" % h.gw_ws_port

    # The path: the listener's own (a prefix, with "*"), not deribit's
    # default; the query string is ignored.
    for bad in ("/ws/api/v2", "/feed", "/fee"):
        try:
            await websockets.connect(base + bad)
            check(False, "%s accepted on a path=/feed/* listener" % bad)
        except websockets.exceptions.InvalidStatusCode as e:
            check(e.status_code == 404, "%s: status %r" % (bad, e.status_code))
    a = await WSClient("ws").connect(base + "/feed/v1?key=x")
    b = await TCPClient("tcp").connect(h.tcp_port)

    await a.send(SUB_A)
    await b.send(SUB_B)
    await a.send(SUB_D)
    await b.send(SUB_D)
    for cl in (a, b):
        await good_answer(cl, 1, 0)     # auth went first: not 13778
        await good_answer(cl, 2, 0)
    await resumed(h, (a, b), (CH_A, CH_B, CH_D), 0, "start")

    # C subscribes, leaves: its text is forgotten.
    c = await WSClient("leaver").connect(base + "/feed/v2/btc")
    await c.send(SUB_C)
    await good_answer(c, 4, 0)
    await a.wait_notes(CH_C, 1, 10)
    u = h.up()
    check(u["replay_texts"] == 4 and u["clients"] == 3, "status %r" % u)
    await c.close()
    u = h.wait_up(lambda u: u["clients"] == 2, 5, "leaver gone")
    check(u["replay_texts"] == 3, "replay_texts %r after the leaver" % u)
    check_counts(h, 1, "start")

    nconn = 1
    for fault in ("drop", "close 1011 restart"):
        conn0 = h.up()["connection_id"]
        n1 = len(answers(a, 1))
        r = h.control(fault)
        check(r.get("ok"), "%s: %r" % (fault, r))
        u = await resumed(h, (a, b), (CH_A, CH_B, CH_D), conn0, fault)
        nconn += 1
        await good_answer(a, 1, n1)
        check_counts(h, nconn, fault)
        check(u["queued"] == 0, "queued %r" % u)
        sys.stdout.write("%s: notifications resumed on connection %d\n"
                         % (fault, u["connection_id"]))

    # stall: detected by ping_timeout; meanwhile messages queue.
    conn0 = h.up()["connection_id"]
    drained = {}
    h.control("stall on")
    t0 = time.monotonic()
    h.wait_up(lambda u: u["state"] != "ready", 5, "stall detected")
    await a.send('{"jsonrpc":"2.0","id":200,"method":"public/get_time",'
                 '"params":{}}')
    await b.send(SUB_E)         # remembered, not queued
    await b.send(SUB_D)         # this client's text already: nothing new
    h.wait_up(lambda u: u["queued"] == 1 and u["replay_texts"] == 4, 5,
              "id 200 queued, E remembered")
    h.wait_up(lambda u: u["queued"] == 0 and u["queue_dropped"] == 1, 5,
              "id 200 dropped after queue_timeout")
    for i in range(100, 105):
        await a.send('{"jsonrpc":"2.0","id":%d,"method":"public/get_time",'
                     '"params":{}}' % i)
    u = h.wait_up(lambda u: u["queue_dropped"] == 3, 5, "queue_limit")
    check(u["queued"] == 3, "queued %r" % u)
    check(u["state"] != "ready", "ready during the stall: %r" % u)
    h.control("stall off")
    u = await resumed(h, (a, b), (CH_A, CH_B, CH_D, CH_E), conn0, "stall")
    stalled = time.monotonic() - t0
    nconn = subscribes(h)[1]
    check(nconn >= 4, "%d connections" % nconn)
    for cl in (a, b):
        for i in (100, 101, 102):
            await good_answer(cl, i, 0)
        for i in (200, 103, 104):
            drained[i] = cl.answers.get(json.dumps(i))
            check(not drained[i], "%s: dropped id %d answered: %r"
                  % (cl.name, i, drained[i]))
    subs = check_counts(h, nconn, "stall")
    check(subs.get(CH_E) == 1, "E subscribed %r times" % subs.get(CH_E))
    check(u["queued"] == 0 and u["replay_texts"] == 4, "status %r" % u)
    check(h.log_lines(r"upstream sim#\d+: queue_limit 3 reached: dropping a "
                      r"message of \d+ bytes from client ws#"),
          "no queue_limit line")
    check(h.log_lines(r"upstream sim#\d+: 1 queued message dropped after "
                      r"queue_timeout 2000ms"), "no queue_timeout line")

    # B unsubscribed (a remembered text too: it contains "subscribe"),
    # then subscribed again with the text sent before: replayed in the
    # order last sent, B ends subscribed.
    unsub_b = ('{"jsonrpc":"2.0","id":8,"method":"public/unsubscribe",'
               '"params":{"channels":["%s"]}}' % CH_B)
    await a.send(unsub_b)
    await good_answer(a, 8)
    await a.send(SUB_B)
    await good_answer(a, 2)
    # (B's notifications may resume now; the drop below is the check)

    # One more drop: E is replayed like the others.
    conn0 = u["connection_id"]
    h.control("drop")
    await resumed(h, (a, b), (CH_A, CH_B, CH_D, CH_E), conn0, "last drop")
    subs = check_counts(h, nconn + 1, "last drop", extra_b=1)
    check(subs.get(CH_E) == 2, "E subscribed %r times" % subs.get(CH_E))

    # The same sockets all along; A (raw book: auth needed) answered with a
    # result on every connection, so the on_open went first every time.
    check(a.closed is None and b.closed is None,
          "client closed: %r %r" % (a.closed, b.closed))
    for cl in (a, b):
        await good_answer(cl, 1, nconn)
        check(len(answers(cl, 1)) == nconn + 1, "%s: %d answers to id 1 for "
              "%d connections" % (cl.name, len(answers(cl, 1)), nconn + 1))
    u = h.up()
    check(u["messages_to_clients"] > 0 and u["messages_from_clients"] == 15,
          "status %r" % u)

    # replay_limit 5 (A, B, D, E and B's unsubscribe): a sixth text is
    # sent but not remembered (logged once).
    await a.send(sub(6, "ticker.BTC-26DEC26.100ms"))
    await a.send(sub(7, "ticker.ETH-26DEC26.100ms"))
    await good_answer(a, 7)
    u = h.up()
    check(u["replay_texts"] == 5 and u["replay_refused"] == 2, "status %r" % u)
    check(subscribes(h)[0].get("ticker.ETH-26DEC26.100ms") == 1,
          "the sixth text did not go upstream")
    check(h.log_lines(r"upstream sim#\d+: replay_limit 5 reached: a new replay "
                      r"text from client ws#\d+ .* is sent but not "
                      r"remembered"), "no replay_limit line")

    # Bad input: a line that is not UTF-8 (the upstream takes text only) is
    # dropped and counted; one over client_max_message closes its client
    # as on any listener, with no error line. Neither goes upstream.
    d = await TCPClient("bad").connect(h.tcp_port)
    d.writer.write(b'{"x":"\xff"}\n')
    h.wait_up(lambda u: u["not_text_dropped"] == 1, 5, "not UTF-8 dropped")
    await d.send("x" * 5000)
    await d.wait_closed(5)
    # raw speaks no protocol of its own: the close is the only answer (a
    # JSON-RPC error line would be Deribit's words on any exchange)
    check(d.raw == [], "a reply in some protocol's words: %r" % d.raw[:3])
    check(h.up()["messages_from_clients"] == 18, "status %r" % h.up())
    check(h.log_lines(r"upstream sim#\d+: a message of 9 bytes from client tcp#\d+"
                      r" .* that is not UTF-8 text dropped"),
          "no not-UTF-8 line")
    sys.stdout.write("stall: %d connections in all, %.1fs from stall on to "
                     "notifications again; %d upstream messages fanned out\n"
                     % (nconn + 1, stalled, u["messages_to_clients"]))
    await a.close()
    await b.close()


gh.run("gateway_raw", body)
