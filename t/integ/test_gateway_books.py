"""Order books stay one unbroken chain per client (DESIGN.md §3a):

- a late joiner to a live book channel gets a snapshot built from the
  gateway's book, then the following changes;
- after an upstream `drop`, clients that hold the book get one bridging
  `change` (prev_change_id = the last change_id they saw), never a second
  snapshot; a client that joined during the outage gets the snapshot;
- a gap in the exchange's chain (exsim `gap`) is detected once in the
  gateway and repaired the same way for every subscriber;
- a malformed snapshot from the exchange (exsim `corrupt`) while the book
  is in sync is dropped, not forwarded, and leaves no stale mark behind:
  the next drop still bridges from what clients hold;
- across 20 `drop`s a client applying every message as deltas keeps one
  unbroken prev_change_id chain and ends with exactly the exchange's
  book, and the trade_seq numbers it gets on trades.* have no hole and
  no repeat;
- a late joiner's snapshot equals the exchange's book at the same
  change_id;
- a gap on one channel leaves another book channel untouched;
- /status counts the gaps and the bridging changes (book_gaps,
  book_resyncs, book_errors);
- at the end every client's book equals the exchange's
  (public/get_order_book).
"""

import asyncio

import gateway_harness as gh
from gateway_harness import check, WSClient, TCPClient

BOOK = "book.BTC-PERPETUAL.100ms"
OTHER = "book.ETH-PERPETUAL.100ms"
TRADES = "trades.BTC-PERPETUAL.100ms"
DROPS = 20


def Book(name):
    return gh.Book(name, BOOK)

UPSTREAM = """    protocol deribit;
    reconnect fixed { delay 200ms; }
"""


def trade_seqs(client):
    return gh.trade_seqs(client, TRADES)


async def exchange_book(c, n, instrument="BTC-PERPETUAL"):
    r = await c.call("public/get_order_book",
                     {"instrument_name": instrument, "depth": 1000},
                     id="ob%d" % n)
    res = r["result"]
    return ({p: a for p, a in res["bids"]}, {p: a for p, a in res["asks"]},
            res["change_id"])


async def settle(h, clients, books, pos):
    """Stops the market, lets everything arrive, checks every book."""
    h.control("rate 0")
    await asyncio.sleep(0.6)
    bids, asks, cid = await exchange_book(clients[0], len(pos) + 100)
    for i, c in enumerate(clients):
        pos[i] = books[i].feed(c, pos[i])
        b = books[i]
        check(b.change_id == cid, "%s: at change_id %s, exchange %s"
              % (b.name, b.change_id, cid))
        check(b.bids == bids and b.asks == asks,
              "%s: book differs from the exchange's" % b.name)


async def body(h):
    gh.start(h, UPSTREAM, "client_auth off;\n",
             sim_args=("--rate", "40", "--no-aggregate", "--no-rate-limit"))
    gh.wait_ready(h)
    a = await WSClient("ws-a").connect(h.ws_url)
    b = await TCPClient("tcp-b").connect(h.tcp_port)
    clients, books, pos = [a], [Book("ws-a")], [0]

    r = await a.call("public/subscribe", {"channels": [BOOK]}, id=1)
    check(r["result"] == [BOOK], "subscribe %r" % r)
    await a.wait_notes(BOOK, 20)

    # a late joiner gets the gateway's snapshot
    r = await b.call("public/subscribe", {"channels": [BOOK]}, id=2)
    check(r["result"] == [BOOK], "late subscribe %r" % r)
    clients.append(b)
    books.append(Book("tcp-b"))
    pos.append(0)
    await b.wait_notes(BOOK, 20)
    check(b.notes[0][1]["params"]["data"]["type"] == "snapshot",
          "the late joiner's first message: %r" % (b.notes[0],))
    await settle(h, clients, books, pos)

    # the late joiner's snapshot is the exchange's book at its change_id
    d = await WSClient("ws-d").connect(h.ws_url)
    r = await d.call("public/subscribe", {"channels": [BOOK]}, id=4)
    check(r["result"] == [BOOK], "late subscribe %r" % r)
    await d.wait_notes(BOOK, 1)
    bids, asks, cid = await exchange_book(d, 0)
    snap = Book("ws-d")
    snap.apply(d.notes[0][1]["params"]["data"])
    check(snap.change_id == cid and snap.bids == bids and snap.asks == asks,
          "late joiner's snapshot at %s differs from the exchange's book at "
          "%s" % (snap.change_id, cid))
    await d.close()

    # a malformed snapshot while in sync: dropped, and no mark left behind
    h.control("rate 40")
    await a.wait_notes(BOOK, a.count(BOOK) + 5)
    r = h.control("corrupt %s" % BOOK)
    check(r.get("ok"), "corrupt %r" % r)
    await a.wait_notes(BOOK, a.count(BOOK) + 10)
    check(h.log_lines("%s: .*; dropped" % BOOK), "the malformed snapshot "
          "was not dropped: %r" % h.log_lines("book"))
    check(h.up()["book_errors"] == 1, "book_errors %r" % h.up())
    for i, c in enumerate(clients):
        pos[i] = books[i].feed(c, pos[i])
    h.control("drop")
    h.wait_up(lambda u: u["restores"] >= 2, 10, "restore after the drop")
    for cl in clients:
        await cl.wait_notes(BOOK, cl.count(BOOK) + 10, timeout=10)
    await settle(h, clients, books, pos)

    # drop: a bridging change, no second snapshot; a client joining while
    # the upstream is down gets the new snapshot
    h.control("rate 40")
    await a.wait_notes(BOOK, a.count(BOOK) + 10)
    h.control("refuse on")
    h.control("drop")
    h.wait_up(lambda u: u["state"] != "ready", 5, "upstream down")
    c = await WSClient("ws-c").connect(h.ws_url)
    kc = await c.request("public/subscribe", {"channels": [BOOK]}, id=3)
    clients.append(c)
    books.append(Book("ws-c"))
    pos.append(0)
    h.control("refuse off")
    r = await c.answer(kc, timeout=5)
    check(r["result"] == [BOOK], "subscribe during the outage %r" % r)
    for cl in clients:
        await cl.wait_notes(BOOK, cl.count(BOOK) + 10, timeout=10)
    check(c.notes[0][1]["params"]["data"]["type"] == "snapshot",
          "the outage joiner's first message: %r" % (c.notes[0],))
    await settle(h, clients, books, pos)
    check(len(h.log_lines("new snapshot bridged")) >= 1, "bridge logged")

    # a gap upstream: detected once, repaired for everyone; another book
    # channel is untouched
    r = await a.call("public/subscribe", {"channels": [OTHER]}, id=5)
    check(r["result"] == [OTHER], "subscribe %r" % r)
    h.control("rate 40")
    await a.wait_notes(OTHER, 5)
    await a.wait_notes(BOOK, a.count(BOOK) + 5)
    resyncs = h.up()["book_resyncs"]
    r = h.control("gap %s" % BOOK)
    check(r.get("ok"), "gap %r" % r)
    for cl in clients:
        await cl.wait_notes(BOOK, cl.count(BOOK) + 15, timeout=10)
    check(len(h.log_lines("gap at change_id .*resubscribing")) == 1,
          "the gap is detected once: %r" % h.log_lines("gap"))
    await settle(h, clients, books, pos)
    u = h.up()
    check(u["book_gaps"] == 1, "book_gaps %r" % u)
    check(u["book_resyncs"] == resyncs + 1,
          "one bridge for the gap: %d -> %d" % (resyncs, u["book_resyncs"]))
    other = Book("ws-a " + OTHER)
    other.feed(a, 0, OTHER)
    bids, asks, cid = await exchange_book(a, 999, "ETH-PERPETUAL")
    check(other.snapshots == 1 and other.change_id == cid
          and other.bids == bids and other.asks == asks,
          "the other channel: %d snapshots, at %s, exchange at %s"
          % (other.snapshots, other.change_id, cid))
    check(not h.log_lines("%s: .*bridged" % OTHER), "the other channel was "
          "bridged: %r" % h.log_lines(OTHER))
    for bk in books:
        check(bk.snapshots == 1, "%s: %d snapshots" % (bk.name, bk.snapshots))

    # 20 drops while the market moves: books stay one chain, trades have
    # no hole and no repeat
    r = await a.call("public/subscribe", {"channels": [TRADES]}, id=6)
    check(r["result"] == [TRADES], "subscribe %r" % r)
    h.control("rate 100")
    await a._wait(lambda: len(trade_seqs(a)) >= 5, 10, "first trades")
    restores = h.up()["restores"]
    resyncs = h.up()["book_resyncs"]
    for i in range(DROPS):
        n = a.count(BOOK)
        await a.wait_notes(BOOK, n + 3, timeout=10)
        h.control("drop")
        h.wait_up(lambda u: u["restores"] >= restores + i + 1
                  and u["state"] == "ready", 10, "restore %d" % (i + 1))
    for cl in clients:
        await cl.wait_notes(BOOK, cl.count(BOOK) + 5, timeout=10)
    await settle(h, clients, books, pos)
    u = h.up()
    check(u["book_resyncs"] >= resyncs + DROPS, "%d drops, %d bridges"
          % (DROPS, u["book_resyncs"] - resyncs))
    s = trade_seqs(a)
    check(len(s) > DROPS, "only %d trades across the drops" % len(s))
    for x, y in zip(s, s[1:]):
        check(y == x + 1, "trade_seq %d after %d" % (y, x))
    for bk in books:
        check(bk.snapshots == 1, "%s: %d snapshots" % (bk.name, bk.snapshots))
    print("%d drops: %d book messages, %d bridges, %d trades (%d..%d), "
          "%d backfills" % (DROPS, books[0].n, u["book_resyncs"] - resyncs,
                            len(s), s[0], s[-1],
                            len(h.log_lines("trades backfilled"))))
    for cl in clients:
        await cl.close()


if __name__ == "__main__":
    gh.run("gateway_books", body)
