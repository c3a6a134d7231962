"""`publish redis://...` (issue 17, the core's publish side) against a real
redis-server on a free loopback port, exsim, and a local bot:

- with requirepass and password=env:, every notification the bot got on a
  book and a trades channel is in the channel's stream, in order, with
  seq 1, 2, ... (the bot's own count) and the entry id SEQ-0, one epoch
  (the one /status shows, also in PREFIX:sim:epoch) and byte-identical
  data; MAXLEN ~ bounds the stream;
- a stream left by an older epoch (a stale core's entry 999999-0, put
  there before exgate starts) is DELeted before the channel's first entry:
  the ids start again at 1-0 and no XADD is refused; XREAD after SEQ-0
  (an edge's resume) gives seq SEQ+1;
- redis-server killed mid-stream: the bot keeps getting data and is never
  closed, /status shows the publisher disconnected and `dropped` counting;
- redis-server back on the same port with a wrong password: a logged auth
  error and retries, no crash; back with the right one: exgate reconnects
  by itself, publishing resumes, and the first seq after the hole is the
  bot's count at that notification (the dropped ones spent their seqs:
  no reuse), the hole covered by dropped + lost;
- a reload with another prefix: the seqs and the epoch go on under the
  new keys, and the exchange connection is not touched.

Skips (exit 77) only when /usr/bin/redis-server is missing.
"""

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request

import gateway_harness as gh
from gateway_harness import check, free_port, WSClient

REDIS = "/usr/bin/redis-server"
BOOK = "book.BTC-PERPETUAL.100ms"
TRADES = "trades.BTC-PERPETUAL.100ms"
PREFIX = "xgt"
PW = "s3cret-pw"
MAXLEN = 1000


class Resp:
    """A tiny RESP2 client (python3 has no redis module here)."""

    def __init__(self, port, password=None):
        self.s = socket.create_connection(("127.0.0.1", port), timeout=5)
        self.f = self.s.makefile("rb")
        if password is not None:
            self.cmd("AUTH", password)

    def cmd(self, *args):
        out = b"*%d\r\n" % len(args)
        for a in args:
            a = a if isinstance(a, bytes) else str(a).encode()
            out += b"$%d\r\n%s\r\n" % (len(a), a)
        self.s.sendall(out)
        return self._read()

    def _read(self):
        line = self.f.readline()
        if not line:
            raise gh.Fail("redis closed the connection")
        t, rest = line[:1], line[1:-2]
        if t == b"+":
            return rest.decode()
        if t == b"-":
            raise gh.Fail("redis error: %s" % rest.decode())
        if t == b":":
            return int(rest)
        if t == b"$":
            n = int(rest)
            if n < 0:
                return None
            data = self.f.read(n + 2)
            return data[:-2]
        if t == b"*":
            n = int(rest)
            return None if n < 0 else [self._read() for _ in range(n)]
        raise gh.Fail("bad RESP line %r" % line)

    def close(self):
        self.s.close()


def carried(*recs):
    """A bell's field "e": the records of entries (CHANNEL, SEQ, DATA),
    CHANNEL SP SEQ SP LEN LF DATA each (src/xg_redis.h)."""
    out = b""
    for ch, seq, data in recs:
        if isinstance(data, str):
            data = data.encode()
        out += b"%s %d %d\n%s" % (ch.encode(), seq, len(data), data)
    return out


def carried_entries(blob):
    """The (CHANNEL, SEQ, DATA) records of a bell's field "e"."""
    out = []
    while blob:
        head, rest = blob.split(b"\n", 1)
        ch, seq, n = head.split(b" ")
        out.append((ch.decode(), int(seq), rest[:int(n)]))
        check(len(rest) >= int(n), "a carried record cut short: %r" % head)
        blob = rest[int(n):]
    return out


def start_redis(h, port, password, tls=None):
    """A redis-server on PORT (with --requirepass PASSWORD unless None);
    TLS (cert, key): on a TLS port only, no plain one."""
    args = [REDIS, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
            "--appendonly", "no", "--loglevel", "warning"]
    if tls is not None:
        args[1:3] = ["--port", "0", "--tls-port", str(port)]
        args += ["--tls-cert-file", tls[0], "--tls-key-file", tls[1],
                 "--tls-ca-cert-file", tls[0], "--tls-auth-clients", "no"]
    if password is not None:
        args += ["--requirepass", password]
    p = subprocess.Popen(args, stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL)
    h.procs.append(p)
    end = time.monotonic() + 10
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return p
        except OSError:
            if time.monotonic() > end or p.poll() is not None:
                raise gh.Fail("redis-server did not start on %d" % port)
            time.sleep(0.05)


def stream(r, ch, prefix=PREFIX):
    """The entries of CH's stream: [(id, {field: bytes})]."""
    out = []
    for eid, fields in r.cmd("XRANGE", "%s:sim:%s" % (prefix, ch), "-", "+"):
        out.append((eid.decode(), dict(zip([f.decode() for f in fields[::2]],
                                           fields[1::2]))))
    return out


def bot_texts(c, ch):
    """The raw texts of the notifications C got on CH, in order."""
    out = []
    for t in c.raw:
        m = json.loads(t)
        if (isinstance(m, dict) and m.get("method") == "subscription"
                and m["params"]["channel"] == ch):
            out.append(t)
    return out


async def check_stream(r, c, ch, epoch, first=None):
    """Every entry of CH's stream is the bot's notification number seq:
    seqs contiguous, one epoch, data byte-identical. Returns the seqs."""
    ents = stream(r, ch)
    check(ents, "stream of %s is empty" % ch)
    seqs = [int(f["seq"]) for _, f in ents]
    await c.wait_notes(ch, seqs[-1])     # the bot may lag the stream
    texts = bot_texts(c, ch)
    check(seqs == list(range(seqs[0], seqs[0] + len(seqs))),
          "%s: seqs not contiguous: %r..." % (ch, seqs[:20]))
    if first is not None:
        check(seqs[0] == first, "%s: first seq %d, expected %d"
              % (ch, seqs[0], first))
    if os.environ.get("XG_DEBUG_PUB"):
        idx = {t: i + 1 for i, t in enumerate(texts)}
        offs = [(int(f["seq"]), idx.get(f["data"].decode())) for _, f in ents]
        bad = [(a, b) for a, b in offs if a != b]
        sys.stderr.write("%s: %d entries, %d texts, mismatches %r\n"
                         % (ch, len(ents), len(texts), bad[:5] + bad[-3:]))
        sys.stderr.write("first texts %r\n" % [t[:150] for t in texts[:3]])
    for eid, f in ents:
        check(eid == "%s-0" % f["seq"].decode(), "%s: entry id %s for seq "
              "%s" % (ch, eid, f["seq"]))
        check(f["epoch"].decode() == epoch, "%s: epoch %r in %s, /status "
              "says %s" % (ch, f["epoch"], eid, epoch))
        k = int(f["seq"])
        check(k <= len(texts), "%s: seq %d but the bot got %d" % (ch, k,
                                                                 len(texts)))
        check(f["data"].decode() == texts[k - 1], "%s: seq %d data differs:"
              "\n%r\n%r" % (ch, k, f["data"][:200], texts[k - 1][:200]))
    return seqs


def pub(h):
    return h.up().get("publish") or {}


async def body(h):
    rport = free_port()
    red = start_redis(h, rport, PW)
    os.environ["XG_TEST_REDIS_PW"] = PW
    # what a core of an older epoch left behind
    rc = Resp(rport, PW)
    rc.cmd("XADD", "%s:sim:%s" % (PREFIX, TRADES), "999999-0", "seq",
           "999999", "epoch", "00000000000000ff", "data", "stale")
    rc.cmd("SET", "%s:sim:epoch" % PREFIX, "00000000000000ff")
    rc.close()
    gh.start(h, "    protocol deribit;\n"
             "    reconnect exponential { initial 100ms; max 400ms; "
             "jitter none; }\n"
             "    publish redis://127.0.0.1:%d prefix=%s maxlen=%d "
             "password=env:XG_TEST_REDIS_PW;\n" % (rport, PREFIX, MAXLEN),
             level="info", sim_args=("--rate", "400", "--no-aggregate"))
    gh.wait_ready(h)
    h.wait_up(lambda u: u.get("publish", {}).get("connected"), 10,
              "publish connected")
    p0 = pub(h)
    check(PW not in json.dumps(h.status()), "the password shows in /status")
    check(p0["url"] == "redis://127.0.0.1:%d" % rport and p0["auth"],
          "publish status %r" % p0)
    epoch = p0["epoch"]
    check(len(epoch) == 16 and int(epoch, 16) >= 0, "epoch %r" % epoch)

    bot = await WSClient("bot").connect(h.ws_url)
    r = await bot.call("public/subscribe", {"channels": [BOOK, TRADES]}, id=1)
    check(sorted(r["result"]) == sorted([BOOK, TRADES]), "subscribe %r" % r)

    # well past MAXLEN on the book channel
    t0, n0 = time.monotonic(), pub(h).get("published", 0)
    await bot.wait_notes(BOOK, MAXLEN * 2 + 200, timeout=30)
    await bot.wait_notes(TRADES, 3, timeout=10)
    h.wait_up(lambda u: u["publish"]["in_flight"] == 0
              and u["publish"]["published"] >= bot.count(BOOK)
              + bot.count(TRADES), 5, "every entry answered")
    p1 = pub(h)
    rate = (p1["published"] - n0) / (time.monotonic() - t0)
    rc = Resp(rport, PW)
    check(rc.cmd("GET", "%s:sim:epoch" % PREFIX) == epoch.encode(),
          "epoch key %r, /status says %s"
          % (rc.cmd("GET", "%s:sim:epoch" % PREFIX), epoch))
    bseq = await check_stream(rc, bot, BOOK, epoch)
    tseq = await check_stream(rc, bot, TRADES, epoch, first=1)
    # what an edge does: resume after the seq it has, by id
    k = tseq[len(tseq) // 2]
    got = rc.cmd("XREAD", "COUNT", 1, "STREAMS", "%s:sim:%s" % (PREFIX,
                                                              TRADES),
                 "%d-0" % k)
    check(got and got[0][1][0][1][1] == str(k + 1).encode(),
          "XREAD after %d-0: %r" % (k, got))
    xlen = rc.cmd("XLEN", "%s:sim:%s" % (PREFIX, BOOK))
    check(bseq[-1] > MAXLEN * 2 and MAXLEN <= xlen <= MAXLEN + 200,
          "MAXLEN ~%d: %d entries kept of %d" % (MAXLEN, xlen, bseq[-1]))
    check(p1["dropped"] == 0 and p1["errors"] == 0 and p1["lost"] == 0,
          "nothing dropped while redis is up: %r" % p1)
    check(p1["last_id"] is not None and p1["bytes"] > 0, "%r" % p1)
    sys.stderr.write("published %d entries at %.0f entries/s (exsim-bound), "
                     "%d book entries kept of %d\n"
                     % (p1["published"], rate, xlen, bseq[-1]))
    rc.close()

    # redis-server dies: the bot keeps its data, exgate counts drops
    red.kill()
    red.wait()
    h.wait_up(lambda u: not u["publish"]["connected"], 5, "publish down")
    nb = bot.count(BOOK)
    await bot.wait_notes(BOOK, nb + 100, timeout=10)
    h.wait_up(lambda u: u["publish"]["dropped"] >= 100, 5, "drops counted")
    check(bot.closed is None, "bot closed: %r" % (bot.closed,))
    p2 = pub(h)
    check(p2["state"] in ("disconnected", "connecting"), "state %r" % p2)

    # back with a wrong password: logged auth errors, retries, no crash
    red = start_redis(h, rport, "not-the-password")
    gh.uh.wait_for(lambda: h.log_lines("publish sim -> redis .*auth failed"),
                   10, what="auth failure logged")
    await asyncio.sleep(1.0)
    check(len(h.log_lines("auth failed")) >= 2, "auth is retried")
    check(not pub(h)["connected"], "connected with a wrong password")
    check(PW not in h.log(), "the password shows in the log")
    red.kill()
    red.wait()

    # back with the right one: reconnects by itself, publishing resumes
    d_before = pub(h)["dropped"]
    red = start_redis(h, rport, PW)
    h.wait_up(lambda u: u["publish"]["connected"], 10, "publish reconnected")
    nb = bot.count(BOOK)
    await bot.wait_notes(BOOK, nb + 100, timeout=10)
    await bot.wait_notes(TRADES, bot.count(TRADES) + 2, timeout=10)
    h.wait_up(lambda u: u["publish"]["in_flight"] == 0, 5, "answered")
    p3 = pub(h)
    rc = Resp(rport, PW)
    keys = sorted(k.decode() for k in rc.cmd("KEYS", PREFIX + ":*"))
    check(keys == sorted("%s:sim:%s" % (PREFIX, c)
                         for c in (BOOK, TRADES, "epoch", "bell",
                                   BOOK + ":snap")),
          "keys %r" % keys)
    # the bell: after the restart (Redis lost it) its first entry names
    # all channels, each later one those of one loop pass; ids go on
    # with no hole, the epoch is the core's
    bells = rc.cmd("XRANGE", "%s:sim:bell" % PREFIX, "-", "+")
    ids = [int(b[0].split(b"-")[0]) for b in bells]
    check(len(bells) > 10 and ids == list(range(ids[0], ids[0] + len(ids))),
          "bell ids %r" % ids[:20])
    f0 = dict(zip(bells[0][1][::2], bells[0][1][1::2]))
    check(f0.get(b"all") == b"1" and f0.get(b"epoch") == epoch.encode(),
          "the first bell after a reconnect: %r" % f0)
    named = set()
    for b in bells[1:]:
        f = dict(zip(b[1][::2], b[1][1::2]))
        check(f.get(b"epoch") == epoch.encode()
              and (b"ch" in f or f.get(b"idle") == b"1"), "bell %r" % f)
        if b"ch" in f:
            named.update(f[b"ch"].decode().split(" "))
    check(named == {BOOK, TRADES}, "bells named %r" % named)
    # the entries a bell carries (its field "e") are the streams'
    n_carried = 0
    for b in bells[1:]:
        f = dict(zip(b[1][::2], b[1][1::2]))
        for ch, seq, data in carried_entries(f.get(b"e", b"")):
            got = rc.cmd("XRANGE", "%s:sim:%s" % (PREFIX, ch),
                         "%d-0" % seq, "%d-0" % seq)
            if got:
                f = dict(zip(got[0][1][::2], got[0][1][1::2]))
                check(f[b"data"] == data, "bell %s carries %s %s unlike "
                      "the stream" % (b[0], ch, seq))
                n_carried += 1
    check(n_carried > 0, "no bell carried an entry")
    check(pub(h)["bells"] >= ids[-1] - ids[0], "bells %r" % pub(h)["bells"])
    check(rc.cmd("GET", "%s:sim:epoch" % PREFIX) == epoch.encode(),
          "epoch not written again at the reconnect")
    bseq2 = await check_stream(rc, bot, BOOK, epoch)
    tseq2 = await check_stream(rc, bot, TRADES, epoch)
    hole = (bseq2[0] - bseq[-1] - 1) + (tseq2[0] - tseq[-1] - 1)
    check(bseq2[0] > bseq[-1] and tseq2[0] > tseq[-1], "seq reused: %d,%d "
          "after %d,%d" % (bseq2[0], tseq2[0], bseq[-1], tseq[-1]))
    # the hole: entries written to the dead redis after our read, lost in
    # flight, or dropped; dropped ones are all in it
    check(p3["dropped"] <= hole, "dropped %d > hole %d" % (p3["dropped"],
                                                           hole))
    check(p3["reconnects"] >= 3 and p3["errors"] >= 1,
          "reconnects/errors %r" % p3)
    check(bot.closed is None, "bot closed: %r" % (bot.closed,))
    url = "http://127.0.0.1:%d/metrics" % h.admin_port
    with urllib.request.urlopen(url, timeout=5) as m:
        metrics = m.read().decode()
    for line in ('exgate_publish_connected{upstream="sim"} 1',
                 'exgate_publish_dropped_total{upstream="sim"} %d'
                 % p3["dropped"],
                 'exgate_publish_reconnects_total{upstream="sim"} %d'
                 % p3["reconnects"]):
        check(line in metrics.splitlines(), "/metrics lacks %r" % line)
    sys.stderr.write("outage: %d dropped (%d at the wrong password), %d "
                     "lost in flight, hole of %d seqs, %d reconnects\n"
                     % (p3["dropped"], d_before, p3["lost"], hole,
                        p3["reconnects"]))

    # a reload with another prefix: the publisher reconnects, its seqs
    # and epoch go on under the new keys; the exchange connection stays
    connects = h.up()["connects"]
    path = os.path.join(h.tmp, "exgate.conf")
    with open(path) as f:
        text = f.read()
    with open(path, "w") as f:
        f.write(text.replace("prefix=%s " % PREFIX, "prefix=%s2 " % PREFIX))
    last = int(stream(rc, BOOK)[-1][1]["seq"])
    h.gate.send_signal(signal.SIGHUP)
    h.wait_up(lambda u: u["publish"]["prefix"] == PREFIX + "2"
              and u["publish"]["connected"], 10, "reload applied")
    nb = bot.count(BOOK)
    await bot.wait_notes(BOOK, nb + 50, timeout=10)
    h.wait_up(lambda u: u["publish"]["in_flight"] == 0, 5, "answered")
    ents = stream(rc, BOOK, PREFIX + "2")
    check(ents and int(ents[0][1]["seq"]) > last
          and ents[0][1]["epoch"].decode() == epoch,
          "after the reload: first seq %s after %d" % (
              ents[0][1]["seq"] if ents else None, last))
    check(h.up()["connects"] == connects, "the reload reconnected the "
          "exchange")
    await bot.close()
    rc.close()


def run_with_redis(name, body):
    """gh.run(NAME, BODY), or SKIP (77) when redis-server is missing."""
    if not os.access(REDIS, os.X_OK):
        sys.stderr.write("SKIP: %s is missing (apt-get install redis-server)"
                         "\n" % REDIS)
        sys.exit(77)
    gh.run(name, body)


if __name__ == "__main__":
    run_with_redis("publish_redis", body)
