"""Book snapshots beside the streams (issue 17): PREFIX:UPSTREAM:CH:snap,
a hash (seq SEQ epoch EPOCH data BYTES) holding the book as of entry SEQ
of PREFIX:UPSTREAM:CH, against a real redis-server on a free loopback
port, exsim, exgate with `publish`, and a local bot on a book and a
trades channel:

- a snap left by an older epoch (with a field of its own) is DELeted with
  the stream: the first snap of this epoch has no such field;
- right after the first entry (the exchange's snapshot) the snap is that
  entry: seq 1, the same bytes, this epoch;
- over a few seconds of changes the snap is written about once a second
  (distinct seqs sampled every 50 ms, and /status "snapshots"), never per
  entry;
- every snap sampled is the bot's book as of the entry it names (levels
  and change_id), is a `snapshot` notification of the channel, and the
  snap then every stream entry after its seq gives exactly the book the
  bot holds at the end; the first entry after it chains on its change_id
  (prev_change_id);
- redis-server killed and started again empty (entries dropped
  meanwhile): the first entry the new Redis gets comes with a snap, no
  snap claims a seq whose entry is missing, and they rebuild the bot's
  book the same way;
- no snap for the trades channel; /metrics has
  exgate_publish_snapshots_total.

Skips (exit 77) only when /usr/bin/redis-server is missing.
"""

import asyncio
import json
import sys
import time
import urllib.request

import gateway_harness as gh
from gateway_harness import check, free_port, WSClient
from test_publish_redis import Resp, bot_texts, run_with_redis, start_redis

BOOK = "book.BTC-PERPETUAL.100ms"
TRADES = "trades.BTC-PERPETUAL.100ms"
PREFIX = "xgs"
SKEY = "%s:sim:%s" % (PREFIX, BOOK)
WINDOW = 4.0        # seconds of sampling


def snap(r):
    """The snap hash of BOOK as a dict of str -> bytes, or {}."""
    v = r.cmd("HGETALL", SKEY + ":snap") or []
    return dict(zip([k.decode() for k in v[::2]], v[1::2]))


def entries(r, after, upto):
    """BOOK's stream entries with seq in (AFTER, UPTO]: [(seq, text)]."""
    out = []
    for eid, f in r.cmd("XRANGE", SKEY, "%d-0" % (after + 1), "%d-0" % upto):
        f = dict(zip([k.decode() for k in f[::2]], f[1::2]))
        out.append((int(f["seq"]), f["data"].decode()))
    return out


def data_of(text):
    m = json.loads(text)
    check(m.get("method") == "subscription"
          and m["params"]["channel"] == BOOK, "not a %s notification: %r"
          % (BOOK, text[:200]))
    return m["params"]["data"]


def book_of(name, texts):
    b = gh.Book(name, BOOK)
    for t in texts:
        b.apply(data_of(t))
    return b


def same_book(a, b, what):
    check(a.bids == b.bids and a.asks == b.asks and a.change_id
          == b.change_id, "%s: %s (change_id %s, %d/%d levels) differs from "
          "%s (change_id %s, %d/%d levels)" % (what, a.name, a.change_id,
                                               len(a.bids), len(a.asks),
                                               b.name, b.change_id,
                                               len(b.bids), len(b.asks)))


async def rebuilds(r, bot, snaps, epoch, what):
    """Each snap of SNAPS (seq -> hash) is the bot's book as of its seq,
    and it followed by the stream after its seq is the bot's book at the
    stream's end. Returns the seq of that end."""
    # the stream's last entry, which the bot gets right after
    n = int(r.cmd("XREVRANGE", SKEY, "+", "-", "COUNT", 1)[0][0]
            .decode().split("-")[0])
    await bot.wait_notes(BOOK, n, timeout=10)
    texts = bot_texts(bot, BOOK)[:n]
    bot_end = book_of("the bot's book at %d" % n, texts)
    for s in sorted(snaps):
        h = snaps[s]
        check(h["epoch"].decode() == epoch, "%s: snap at %d of epoch %r, not "
              "%s" % (what, s, h["epoch"], epoch))
        d = data_of(h["data"].decode())
        check(d.get("type") == "snapshot", "%s: snap at %d is a %r"
              % (what, s, d.get("type")))
        check(s <= n, "%s: snap at %d, the bot has %d" % (what, s, n))
        same_book(book_of("snap %d" % s, [h["data"].decode()]),
                  book_of("the bot's book at %d" % s, texts[:s]), what)
        after = entries(r, s, n)
        check([q for q, _ in after] == list(range(s + 1, n + 1)),
              "%s: entries after snap %d: %r..." % (what, s,
                                                    [q for q, _ in after][:5]))
        if after:
            first = data_of(after[0][1])
            check(first.get("prev_change_id") == d["change_id"],
                  "%s: entry %d after snap %d: prev_change_id %s, the snap's "
                  "change_id %s" % (what, s + 1, s, first.get("prev_change_id"),
                                    d["change_id"]))
        b = book_of("snap %d + stream to %d" % (s, n),
                    [h["data"].decode()] + [t for _, t in after])
        same_book(b, bot_end, what)
    return n


def sample(r, seconds):
    """The snap read every 50 ms for SECONDS: {seq: hash}."""
    got = {}
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        h = snap(r)
        if h:
            got.setdefault(int(h["seq"]), h)
        time.sleep(0.05)
    return got


async def body(h):
    rport = free_port()
    red = start_redis(h, rport, None)
    rc = Resp(rport)
    # what a core of an older epoch left: its DEL takes the snap with it
    rc.cmd("HSET", SKEY + ":snap", "seq", "999999", "epoch",
           "00000000000000ff", "data", "stale", "stale", "1")
    gh.start(h, "    protocol deribit;\n"
             "    reconnect exponential { initial 100ms; max 400ms; "
             "jitter none; }\n"
             "    publish redis://127.0.0.1:%d prefix=%s;\n"
             % (rport, PREFIX),
             level="info", sim_args=("--rate", "400", "--no-aggregate"))
    gh.wait_ready(h)
    h.wait_up(lambda u: u.get("publish", {}).get("connected"), 10,
              "publish connected")
    epoch = h.up()["publish"]["epoch"]

    bot = await WSClient("bot").connect(h.ws_url)
    r = await bot.call("public/subscribe", {"channels": [BOOK, TRADES]}, id=1)
    check(sorted(r["result"]) == sorted([BOOK, TRADES]), "subscribe %r" % r)

    # right after the first entry: the snap is that entry
    gh.uh.wait_for(lambda: rc.cmd("XLEN", SKEY) >= 1, 10, step=0.002,
                   what="the first entry")
    t0 = time.monotonic()
    # its HSET is next in the pipeline: Redis may not have read it yet
    s1 = gh.uh.wait_for(lambda: snap(rc), 1, step=0.002,
                        what="a snap after the first entry")
    late = time.monotonic() - t0
    first = entries(rc, 0, 1)
    check(s1 and "stale" not in s1, "snap after the first entry: %r"
          % {k: v[:60] for k, v in s1.items()})
    check(first and first[0][0] == 1, "first entry %r" % first[:1])
    if late < 0.5:
        check(int(s1["seq"]) == 1 and s1["data"].decode() == first[0][1]
              and s1["epoch"].decode() == epoch, "snap after the first "
              "entry: seq %s epoch %s, data %s the entry's" % (
                  s1["seq"], s1["epoch"], "==" if s1["data"].decode()
                  == first[0][1] else "!="))

    # about once a second while changes flow
    await bot.wait_notes(BOOK, 50, timeout=10)
    e0 = bot.count(BOOK)
    n0, c0 = h.up()["publish"]["snapshots"], time.monotonic()
    snaps = await asyncio.get_event_loop().run_in_executor(
        None, sample, rc, WINDOW)
    n1, c1 = h.up()["publish"]["snapshots"], time.monotonic()
    secs = c1 - c0
    entries_then = bot.count(BOOK) - e0
    check(WINDOW - 1.5 <= len(snaps) <= WINDOW + 1,
          "%d distinct snaps sampled in %.1f s: %r" % (len(snaps), WINDOW,
                                                       sorted(snaps)))
    check(secs - 1.5 <= n1 - n0 <= secs + 1, "%d snapshots written in %.1f s"
          % (n1 - n0, secs))
    check(entries_then > 10 * (secs + 1), "too few entries (%d) to tell a "
          "snap per entry from one a second" % entries_then)
    await rebuilds(rc, bot, snaps, epoch, "while redis is up")

    # redis-server restarted empty: drops, then snaps again, none claiming
    # a dropped entry
    red.kill()
    red.wait()
    rc.close()
    h.wait_up(lambda u: not u["publish"]["connected"], 5, "publish down")
    nb = bot.count(BOOK)
    await bot.wait_notes(BOOK, nb + 100, timeout=10)
    h.wait_up(lambda u: u["publish"]["dropped"] >= 100, 5, "drops counted")
    red = start_redis(h, rport, None)
    h.wait_up(lambda u: u["publish"]["connected"], 10, "publish reconnected")
    t0 = time.monotonic()
    rc = Resp(rport)
    gh.uh.wait_for(lambda: snap(rc), 5, step=0.01,
                   what="a snap after the reconnect")
    s2 = snap(rc)
    late = time.monotonic() - t0
    check(late < 1.5, "no snap within a second of the reconnect")
    low = int(rc.cmd("XRANGE", SKEY, "-", "+", "COUNT", 1)[0][0]
              .decode().split("-")[0])
    if late < 0.5:
        # the first entry this redis got was written with a snap
        check(int(s2["seq"]) == low, "first snap after the reconnect at %s, "
              "the stream starts at %d" % (s2["seq"], low))
    got = await asyncio.get_event_loop().run_in_executor(
        None, sample, rc, 1.5)
    check(min(got) >= low, "snap at %d, the stream starts at %d (a dropped "
          "entry)" % (min(got), low))
    n = await rebuilds(rc, bot, got, epoch, "after the redis restart")

    check(rc.cmd("EXISTS", "%s:sim:%s:snap" % (PREFIX, TRADES)) == 0,
          "the trades channel has a snap")
    p = h.up()["publish"]
    check(p["errors"] == 0, "errors %r" % p)
    url = "http://127.0.0.1:%d/metrics" % h.admin_port
    with urllib.request.urlopen(url, timeout=5) as m:
        metrics = [l for l in m.read().decode().splitlines()
                   if l.startswith('exgate_publish_snapshots_total'
                                   '{upstream="sim"} ')]
    check(metrics and int(metrics[0].split()[-1]) >= p["snapshots"] > n1,
          "/metrics %r, /status snapshots %d" % (metrics, p["snapshots"]))
    check(bot.closed is None, "bot closed: %r" % (bot.closed,))
    sys.stderr.write("%d snaps in %.1f s of %d entries (%.0f entries/s); "
                     "%d snaps sampled rebuilt the bot's book; %d written "
                     "in all, %d entries\n"
                     % (n1 - n0, secs, entries_then, entries_then / secs,
                        len(snaps) + len(got), p["snapshots"], n))
    await bot.close()
    rc.close()


if __name__ == "__main__":
    run_with_redis("publish_snap", body)
