"""Limits of the gateway itself:

- subscribe batches are chunked under Deribit's 32 kB request cap: 1440
  channels (about 50 kB of names) are restored after a `drop` in several
  upstream requests, each under 32 kB, and exsim confirms them all;
- EMFILE on accept pauses the listener on a timer (logged) instead of
  spinning; once descriptors are free again the waiting clients are
  served.
"""

import asyncio
import os
import re
import resource

import gateway_harness as gh
from gateway_harness import check, WSClient, TCPClient

STRIKES = [50000 + 1000 * i for i in range(30)]
INSTR = ["BTC-26DEC26-%d-C" % s for s in STRIKES]
GROUPS = ["none", "1", "2", "5", "10", "25", "100", "250"]
CHANNELS = ["book.%s.%s.%s.%s" % (i, g, d, iv) for i in INSTR
            for g in GROUPS for d in ("1", "10", "20")
            for iv in ("100ms", "agg2")]


async def chunking(h):
    a = await WSClient("ws-a").connect(h.ws_url)
    confirmed = []
    for k in range(0, len(CHANNELS), 400):
        part = CHANNELS[k:k + 400]
        r = await a.call("public/subscribe", {"channels": part}, id=k,
                         timeout=15)
        confirmed += r["result"]
    check(len(confirmed) == len(CHANNELS),
          "confirmed %d of %d" % (len(confirmed), len(CHANNELS)))
    check(len(h.control("stats")["subscribed"]) == len(CHANNELS),
          "exsim holds %d" % len(h.control("stats")["subscribed"]))
    conn = h.up()["connection_id"]
    h.control("drop")
    h.wait_up(lambda u: u["state"] == "ready" and u["connection_id"] > conn,
              15, "restored")
    gh.uh.wait_for(lambda: len(h.control("stats")["subscribed"])
                   == len(CHANNELS), 10, what="every channel restored")
    lines = h.log_lines(r"upstream sim#\d+: public/subscribe of \d+ channels")
    sizes = [(int(m.group(1)), int(m.group(2))) for m in
             (re.search(r"of (\d+) channels \((\d+) bytes\)", l)
              for l in lines[-10:]) if m]
    restore = [s for s in sizes if s[0] > 0]
    check(sum(n for n, _ in restore[-3:]) >= 1 and
          all(b < 32768 for _, b in sizes),
          "subscribe batch sizes %r" % sizes)
    check(len(h.log_lines("restore: subscribing 1440 channels")) == 1,
          "restore line")
    total = 0
    big = 0
    for n, b in reversed(sizes):
        total += n
        big = max(big, b)
        if total >= len(CHANNELS):
            break
    check(total >= len(CHANNELS), "the restore batches cover %d" % total)
    print("restore of %d channels in batches of up to %d bytes"
          % (len(CHANNELS), big))
    await a.close()


async def emfile(h):
    pid = h.gate.pid
    nfd = len(os.listdir("/proc/%d/fd" % pid))
    soft, hard = resource.prlimit(pid, resource.RLIMIT_NOFILE)
    resource.prlimit(pid, resource.RLIMIT_NOFILE, (nfd + 5, hard))
    clients = []
    for i in range(12):
        clients.append(await TCPClient("t%d" % i).connect(h.tcp_port))
    await asyncio.sleep(0.3)
    last = clients[-1]
    k = await last.request("public/test", None, id="late")
    gh.uh.wait_for(lambda: h.log_lines("accept: Too many open files: "
                                       "pausing"), 5, what="the pause log")
    check(not last.answers.get(k), "served past the descriptor limit")
    pauses = len(h.log_lines("pausing for"))
    for c in clients[:8]:
        await c.close()
    resource.prlimit(pid, resource.RLIMIT_NOFILE, (soft, hard))
    r = await last.answer(k, timeout=5)
    check("result" in r, "the waiting client is served: %r" % r)
    check(pauses < 20, "the listener spun: %d pause lines" % pauses)
    for c in clients[8:]:
        await c.close()


async def body(h):
    gh.start(h, "    protocol deribit;\n    reconnect fixed { delay 100ms; }\n",
             "client_auth off;\n",
             sim_args=("--instruments", ",".join(INSTR), "--no-rate-limit",
                       "--rate", "5"))
    gh.wait_ready(h)
    await chunking(h)
    await emfile(h)


gh.run("gateway_limits", body)
