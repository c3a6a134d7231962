"""Channel continuity beyond bridging (issue 8), against exsim:

- verified resubscribe: a channel the exchange refuses on the restore
  (exsim `reject-channel NAME on`) is retried with backoff (1 s, 2 s, ...),
  listed in /status unconfirmed_channels and logged; its clients stay
  subscribed (a new client is answered with it too) and get data, bridged,
  once the exchange takes it again (`reject-channel NAME off`);
- opt-in gap notices: a client that called exgate/notify_gaps gets
  exgate/gap for a channel whose gap cannot be repaired (a ticker across
  the reconnect), a client that did not gets nothing;
- per-channel staleness: with `stale book.* 1s;` a book channel that goes
  silent (exsim `mute`) is resubscribed on its own: exsim counts exactly
  one extra subscribe for it, no new connection, the other channels are
  not resubscribed, and the client's chain stays unbroken.
"""

import asyncio
import time
import os
import subprocess
import tempfile

import gateway_harness as gh
import upstream_harness as uh
from gateway_harness import check, WSClient, TCPClient
from test_gateway_books import Book, exchange_book

BOOK = "book.BTC-PERPETUAL.100ms"
TICKER = "ticker.BTC-PERPETUAL.100ms"
TRADES = "trades.BTC-PERPETUAL.100ms"

UPSTREAM = """    protocol deribit;
    reconnect fixed { delay 200ms; }
    stale book.* 1s;
    stale trades.* 1h;
"""


def gaps(client):
    return [m["params"] for m in client.other
            if isinstance(m, dict) and m.get("method") == "exgate/gap"]


def conf_checks():
    """`stale` takes a pattern and a duration of 100ms..24h, repeatable."""
    cases = [("stale book.* 5s;\n    stale ticker.* 2s;", 0, None),
             ("stale book.* 10ms;", 1, "not a duration between"),
             ("stale book.*;", 1, "invalid number of arguments")]
    with tempfile.TemporaryDirectory() as d:
        for lines, want, msg in cases:
            path = os.path.join(d, "x.conf")
            with open(path, "w") as f:
                f.write("client_auth off;\nupstream sim {\n"
                        "    url ws://127.0.0.1:1/ws/api/v2;\n"
                        "    protocol deribit;\n    %s\n}\n"
                        "listen 127.0.0.1:1 websocket upstream=sim;\n"
                        % lines)
            p = subprocess.run([uh.EXGATE, "-t", "-c", path],
                               capture_output=True, text=True, timeout=10)
            check(p.returncode == want and (msg is None or msg in p.stderr),
                  "exgate -t with %r: rc %d, %r" % (lines, p.returncode,
                                                     p.stderr))


async def body(h):
    conf_checks()
    gh.start(h, UPSTREAM, "client_auth off;\n",
             sim_args=("--rate", "40", "--no-aggregate", "--no-rate-limit"))
    gh.wait_ready(h)
    a = await WSClient("ws-a").connect(h.ws_url)
    b = await TCPClient("tcp-b").connect(h.tcp_port)
    r = await a.call("exgate/notify_gaps", {"enabled": True}, id=1)
    check(r.get("result") == {"enabled": True}, "notify_gaps %r" % r)
    r = await a.call("exgate/notify_gaps", {"enabled": "yes"}, id=2)
    check(r.get("error", {}).get("code") == -32602, "bad param %r" % r)
    for c in (a, b):
        r = await c.call("public/subscribe",
                         {"channels": [BOOK, TICKER, TRADES]}, id=3)
        check(sorted(r["result"]) == sorted([BOOK, TICKER, TRADES]),
              "subscribe %r" % r)
    await a.wait_notes(BOOK, 10)
    await a.wait_notes(TICKER, 3)
    st = h.control("stats")
    subs0 = st["subscribes"]
    conns0 = st["connections_total"]

    # verified resubscribe: refused on the restore, retried, then back
    check(h.control("reject-channel %s on" % BOOK).get("ok"), "reject")
    h.control("drop")
    u = h.wait_up(lambda u: u["unconfirmed_channels"] == [BOOK]
                  and u["state"] == "ready", 10, "BOOK unconfirmed")
    check(h.log_lines('channel "%s" not confirmed on resubscribe'
                      % BOOK), "the refusal is logged")
    # a client joining meanwhile is subscribed too
    c = await WSClient("ws-c").connect(h.ws_url)
    r = await c.call("public/subscribe", {"channels": [BOOK]}, id=4)
    check(r["result"] == [BOOK], "subscribe while unconfirmed %r" % r)
    h.wait_up(lambda u: u["resubscribe_retries"] >= 2, 10, "two retries")
    # the retry is counted when sent; its refusal is logged when the
    # exchange answers, a moment later
    end = time.monotonic() + 5
    lines = h.log_times('not confirmed on resubscribe')
    while len(lines) < 3 and time.monotonic() < end:
        await asyncio.sleep(0.05)
        lines = h.log_times('not confirmed on resubscribe')
    check(len(lines) >= 3, "three refusals logged: %r" % lines)
    d1, d2 = lines[1] - lines[0], lines[2] - lines[1]
    check(0.8 <= d1 <= 1.8 and 1.8 <= d2 <= 3.0,
          "backoff 1 s then 2 s: %.2f, %.2f" % (d1, d2))
    n = a.count(BOOK)
    check(h.control("reject-channel %s off" % BOOK).get("ok"), "allow")
    h.wait_up(lambda u: u["unconfirmed_channels"] == [], 10,
              "BOOK confirmed again")
    for cl in (a, b, c):
        await cl.wait_notes(BOOK, cl.count(BOOK) + 5, timeout=10)
    check(a.count(BOOK) > n, "data flows again")
    check(h.log_lines('channel "%s" confirmed after' % BOOK),
          "the return is logged")

    # the ticker's gap across the reconnect: a notice for a, none for b
    g = [x for x in gaps(a) if x["channel"] == TICKER]
    check(len(g) == 1 and g[0]["reason"] == "upstream reconnect"
          and g[0]["duration_ms"] >= 150,
          "a's ticker gap notice: %r" % gaps(a))
    check(not [x for x in gaps(a) if x["channel"] in (BOOK, TRADES)],
          "notices for repaired channels: %r" % gaps(a))
    check(gaps(b) == [] and gaps(c) == [], "notices without asking: %r %r"
          % (gaps(b), gaps(c)))

    # staleness: one channel resubscribed alone, no new connection
    st = h.control("stats")
    subs1 = st["subscribes"]
    conns1 = st["connections_total"]
    check(conns1 == conns0 + 1, "one reconnect so far: %d -> %d"
          % (conns0, conns1))
    restores = h.up()["restores"]
    check(h.control("mute %s on" % BOOK).get("ok"), "mute")
    h.wait_up(lambda u: u["stale_resubscribes"] >= 1, 10, "stale resubscribe")
    for cl in (a, b, c):
        await cl.wait_notes(BOOK, cl.count(BOOK) + 5, timeout=10)
    await asyncio.sleep(1.2)        # longer than stale: no second one
    st = h.control("stats")
    u = h.up()
    check(u["stale_resubscribes"] == 1, "stale_resubscribes %r" % u)
    check(u["restores"] == restores, "a full reconnect happened")
    check(st["connections_total"] == conns1, "a new connection: %d -> %d"
          % (conns1, st["connections_total"]))
    check(st["subscribes"][BOOK] == subs1[BOOK] + 1,
          "one extra subscribe for %s: %d -> %d"
          % (BOOK, subs1[BOOK], st["subscribes"][BOOK]))
    for ch in (TICKER, TRADES):
        check(st["subscribes"][ch] == subs1[ch], "%s resubscribed" % ch)
    check(len(h.log_lines('"%s" silent for .*resubscribing it alone'
                          % BOOK)) == 1, "one stale line")

    # every book client kept one chain and holds the exchange's book
    h.control("rate 0")
    await asyncio.sleep(0.6)
    bids, asks, cid = await exchange_book(a, 1)
    for cl in (a, b, c):
        bk = Book(cl.name)
        bk.feed(cl, 0)
        check(bk.snapshots == 1, "%s: %d snapshots" % (cl.name,
                                                        bk.snapshots))
        check(bk.change_id == cid and bk.bids == bids and bk.asks == asks,
              "%s: at %s, exchange at %s" % (cl.name, bk.change_id, cid))
    print("subscribes %s -> %s; unconfirmed retries %d; gap notices %d"
          % (subs0[BOOK], st["subscribes"][BOOK], u["resubscribe_retries"],
             u["gap_notices"]))
    for cl in (a, b, c):
        await cl.close()


if __name__ == "__main__":
    gh.run("gateway_continuity", body)
