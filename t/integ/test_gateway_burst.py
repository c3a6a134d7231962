#!/usr/bin/python3
"""A burst through the fan-out: exsim (--bench 300) publishes 3000
messages on bench.0 at once (`burst 3000`, about 900 KiB on the upstream)
to two WebSocket and two TCP clients of exgate, while exgate is stopped
(SIGSTOP, as when it is not scheduled for a moment), so that the upstream
socket holds what its buffer takes when exgate goes on:

- every client gets all 3000, whole, in order (seq 0..2999 after the
  first one it saw, each a JSON object on its own line or frame): batches
  of hundreds of messages, written as one buffer per client (frames back
  to back, lines back to back), a part queued when a socket is full;
- exgate read the upstream until it was dry: its /status shows more
  messages per upstream read than libevent's 4 KiB hold (13 of these) and
  batches of 128 messages or more in "fanout" (one read of libevent's
  made a batch of at most 13);
- the fan-out's send counters add up: every send in one bucket of
  sends_by_messages, and the messages sent are the deliveries.
"""

import gateway_harness as gh
from gateway_harness import check, WSClient, TCPClient

CH = "bench.0"
N = 3000


async def body(h):
    gh.start(h, "    protocol deribit;\n",
             sim_args=("--bench", "300", "--rate", "1"))
    gh.wait_ready(h)
    cl = [await WSClient("ws-a").connect(h.ws_url),
          await WSClient("ws-b").connect(h.ws_url),
          await TCPClient("tcp-c").connect(h.tcp_port),
          await TCPClient("tcp-d").connect(h.tcp_port)]
    s0, s1 = await gh.burst_through(h, cl, CH, N)
    for c in cl:
        check(not c.other, "%s: something else arrived: %r"
              % (c.name, c.other[:2]))
    u0, u1 = s0["upstreams"][0], s1["upstreams"][0]
    reads = u1["reads"] - u0["reads"]
    msgs = u1["messages_in"] - u0["messages_in"]
    check(msgs >= N and reads > 0 and msgs / reads > 4096 / 304,
          "upstream: %d messages in %d reads" % (msgs, reads))
    f0, f1 = s0["fanout"], s1["fanout"]
    big = gh.batches_of_128_or_more(s0, s1)
    check(big > 0, "no batch of 128 messages or more: %r"
          % f1["batches_by_messages"])
    check(sum(f1["sends_by_messages"].values()) == f1["sends"],
          "sends %d, in buckets %d" % (f1["sends"],
                                       sum(f1["sends_by_messages"].values())))
    sent = f1["send_messages"] - f0["send_messages"]
    check(abs(sent - 4 * N) <= f1["sends"] - f0["sends"],
          "send_messages %d for %d deliveries" % (sent, 4 * N))
    for c in cl:
        await c.close()


if __name__ == "__main__":
    gh.run("gateway_burst", body)
