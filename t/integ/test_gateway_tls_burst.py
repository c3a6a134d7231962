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

import gateway_harness as gh
from gateway_harness import check, WSClient, TCPClient

CH = "bench.0"
N = 3000


async def body(h):
    cert, key = h.make_cert()
    h.start_sim("--bench", "300", "--rate", "1", "--tls-cert", cert,
                "--tls-key", key)
    gh.start(h, "    protocol deribit;\n    tls_ca %s;\n" % cert,
             scheme="wss")
    gh.wait_ready(h)
    cl = [await WSClient("ws-a").connect(h.ws_url),
          await TCPClient("tcp-b").connect(h.tcp_port)]
    s0, s1 = await gh.burst_through(h, cl, CH, N)
    u0, u1 = s0["upstreams"][0], s1["upstreams"][0]
    reads = u1["reads"] - u0["reads"]
    msgs = u1["messages_in"] - u0["messages_in"]
    f0, f1 = s0["fanout"], s1["fanout"]
    batches = f1["batches"] - f0["batches"]
    big = gh.batches_of_128_or_more(s0, s1)
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
