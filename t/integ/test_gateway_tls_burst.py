#!/usr/bin/python3
"""A burst through the fan-out over a TLS upstream (wss://, as Deribit
is): exsim (--bench 300, serving TLS with a certificate made here)
publishes 3000 messages on bench.0 at once (`burst 3000`) to a WebSocket
and a TCP client of exgate, while exgate is stopped (SIGSTOP), so that
the upstream socket holds many TLS records when exgate goes on:

- both clients get all 3000, whole, in order;
- exgate read the TLS upstream until it was dry, as it does a plain one:
  more than one message per upstream read in /status, and batches of
  128 messages or more in "fanout" (libevent's TLS bufferevent hands
  over one TLS record a read callback: a batch of at most one record's
  messages, 16 KiB, 53 of these).
"""

import asyncio
import os
import signal

import gateway_harness as gh
from gateway_harness import check, WSClient, TCPClient

CH = "bench.0"
N = 3000


def seqs(client):
    return [m["params"]["data"]["seq"] for c, m in client.notes if c == CH]


async def body(h):
    cert, key = h.make_cert()
    h.start_sim("--bench", "300", "--rate", "1", "--tls-cert", cert,
                "--tls-key", key)
    gh.start(h, "    protocol deribit;\n    tls_ca %s;\n" % cert,
             scheme="wss")
    gh.wait_ready(h)
    cl = [await WSClient("ws-a").connect(h.ws_url),
          await TCPClient("tcp-b").connect(h.tcp_port)]
    for i, c in enumerate(cl):
        r = await c.call("public/subscribe", {"channels": [CH]}, id=i + 1)
        check(r.get("result") == [CH], "%s: subscribe %r" % (c.name, r))
    for c in cl:
        await c.wait_notes(CH, 1)      # the 1 msg/s stream reached each
    h.control("rate 0.001")
    await asyncio.sleep(0.2)
    s0 = h.status()
    have = [c.count(CH) for c in cl]
    os.kill(h.gate.pid, signal.SIGSTOP)
    try:
        r = h.control("burst %d" % N)
        check(r.get("ok"), "burst: %r" % r)
        await asyncio.sleep(0.3)
    finally:
        os.kill(h.gate.pid, signal.SIGCONT)
    for c, n in zip(cl, have):
        await c.wait_notes(CH, n + N, timeout=20)
    for c in cl:
        q = seqs(c)
        check(q == list(range(q[0], q[0] + len(q))),
              "%s: not in order or not whole: %d messages, first %s"
              % (c.name, len(q), q[:3]))
    s1 = h.status()
    u0, u1 = s0["upstreams"][0], s1["upstreams"][0]
    reads = u1["reads"] - u0["reads"]
    msgs = u1["messages_in"] - u0["messages_in"]
    f0, f1 = s0["fanout"], s1["fanout"]
    batches = f1["batches"] - f0["batches"]
    big = sum(f1["batches_by_messages"][k] - f0["batches_by_messages"][k]
              for k in ("128-255", "256-511", "512-1023", "1024-2047",
                        "2048+"))
    print("tls upstream: %d messages in %d reads (%.1f a read), %d batches"
          " (%.1f messages a batch), %d of 128 or more"
          % (msgs, reads, msgs / max(reads, 1), batches,
             msgs / max(batches, 1), big))
    check(msgs >= N and reads > 0 and msgs / reads > 1,
          "upstream: %d messages in %d reads" % (msgs, reads))
    check(big > 0, "no batch of 128 messages or more: %r"
          % f1["batches_by_messages"])

    # the ends read in that loop: a close frame and then the TLS end, and
    # a reset (exsim's drop); each once, each followed by a new connection
    for cmd, cid in (("close 1001 going away", 2), ("drop", 3)):
        r = h.control(cmd)
        check(r.get("closed", r.get("dropped")), "%s: %r" % (cmd, r))
        u = h.wait_up(lambda u: u["state"] == "ready"
                      and u["connection_id"] == cid, 10,
                      "ready again after %s" % cmd)
    downs = h.log_lines(r"upstream sim#\d+: \w+ -> down \((.+?)\)")
    print("downs: %r" % downs)
    check(len(downs) == 2, "two ends, each seen once: %r" % downs)
    for c in cl:
        await c.close()


if __name__ == "__main__":
    gh.run("gateway_tls_burst", body)
