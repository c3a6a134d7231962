"""The soft output limit (client_output_limit 0 64k 2s) is a deadline of
its own, not only a check made when something new is queued:

- a TCP and a WebSocket client that stop reading are pushed over the soft
  limit by one burst, after which nothing more is sent to them: each is
  closed as a slow consumer once it has stayed over the limit for 2 s
  (not before, and within a few seconds);
- a client pushed over the limit by the same burst that reads its queue
  down before the deadline stays open and receives every change; pushed
  over again later, it gets the full two seconds from then (its soft
  clock restarted when it drained), and is closed after it.
"""

import asyncio
import json
import re
import socket
import time

import websockets

import gateway_harness as gh
from gateway_harness import check

BOOK = "book.BTC-PERPETUAL.100ms"
SOFT_MS = 2000
BURST = 3000        # about 200 bytes a change: 600 kB, far over 64 kB


def sub_line(i):
    return (json.dumps({"jsonrpc": "2.0", "id": i, "method":
                        "public/subscribe", "params": {"channels": [BOOK]}})
            + "\n").encode()


def small_socket(port):
    """A connected socket with a small receive buffer, so that exgate's own
    queue fills after a few kB."""
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    s.connect(("127.0.0.1", port))
    return s


class Reader:
    """Reads the TCP client's lines when asked: a bot that catches up."""

    def __init__(self, sock):
        self.s = sock
        self.s.setblocking(False)
        self.buf = b""
        self.changes = 0
        self.answers = {}
        self.eof = False

    def pump(self):
        while True:
            try:
                d = self.s.recv(1 << 20)
            except BlockingIOError:
                break
            except ConnectionError:
                self.eof = True
                break
            if not d:
                self.eof = True
                break
            self.buf += d
        *lines, self.buf = self.buf.split(b"\n")
        for line in lines:
            m = json.loads(line)
            if m.get("method") == "subscription":
                self.changes += 1
            elif "id" in m:
                self.answers[m["id"]] = m

    async def until(self, pred, timeout, what):
        end = time.monotonic() + timeout
        while not pred():
            self.pump()
            if time.monotonic() > end:
                raise gh.Fail("timed out waiting for %s (%d changes)"
                              % (what, self.changes))
            await asyncio.sleep(0.005)


def soft_closes(h):
    """(client name, ms over the limit) of each soft-limit close logged."""
    out = []
    for line in h.log_lines(r"slow consumer: .* over the soft output limit"):
        m = re.search(r"(client \S+).* for (\d+) ms", line)
        out.append((m.group(1), int(m.group(2))))
    return out


async def body(h):
    gh.start(h, "    protocol deribit;\n",
             "client_auth off;\nclient_output_limit 0 64k 2s;\n",
             sim_args=("--rate", "0", "--no-aggregate", "--no-rate-limit"),
             ws_extra=" sndbuf=4k", tcp_extra=" sndbuf=4k")
    gh.wait_ready(h)

    # a: TCP, never reads; w: WebSocket, never reads (its own socket with a
    # small buffer; websockets stops reading once its queue is full)
    a = small_socket(h.tcp_port)
    a.sendall(sub_line(1))
    ws_sock = small_socket(h.gw_ws_port)
    w = await websockets.connect(h.ws_url, sock=ws_sock, max_queue=1,
                                 read_limit=1024, max_size=None)
    await w.send(sub_line(1).decode())
    # b: TCP, reads when told to
    b = Reader(small_socket(h.tcp_port))
    b.s.sendall(sub_line(1))
    await b.until(lambda: 1 in b.answers, 5, "b's subscribe answer")
    gh.uh.wait_for(lambda: h.control("stats")["subscribed"].get(BOOK) == 1,
                   5, what="the book subscribed upstream")
    await asyncio.sleep(0.3)    # a's and w's answers are through as well

    b.pump()
    base = b.changes            # the snapshot
    t0 = time.monotonic()
    h.control("burst %d" % BURST)
    # b falls behind with the others, then catches up well before 2 s
    await asyncio.sleep(0.3)
    await b.until(lambda: b.changes == base + BURST, 5, "b catching up")
    caught_up = time.monotonic() - t0
    check(caught_up < SOFT_MS / 1000 - 0.2, "b caught up only %.2f s "
          "after the burst: the machine is too slow for this test"
          % caught_up)

    # a and w: nothing more is queued for them, yet the deadline closes them
    gh.uh.wait_for(lambda: len(soft_closes(h)) >= 2, SOFT_MS / 1000 + 4,
                   what="both idle slow consumers closed by the soft limit")
    took = time.monotonic() - t0
    closes = soft_closes(h)
    check(len(closes) == 2 and {n.split("#")[0] for n, _ in closes}
          == {"client tcp", "client ws"}, "soft-limit closes %r" % closes)
    check(all(ms >= SOFT_MS for _, ms in closes)
          and took >= SOFT_MS / 1000 - 0.05,
          "closed before the soft limit's time: %r after %.2f s"
          % (closes, took))
    check(all(ms < SOFT_MS + 3000 for _, ms in closes),
          "closed late: %r" % closes)
    print("idle slow consumers closed %.2f s after the burst (%s ms over "
          "the soft limit); the reader caught up in %.2f s"
          % (took, ", ".join(str(ms) for _, ms in closes), caught_up))

    # b drained in time: still open, still served, after its deadline
    await asyncio.sleep(max(0.0, t0 + SOFT_MS / 1000 + 0.5
                            - time.monotonic()))
    b.s.sendall(b'{"jsonrpc":"2.0","id":2,"method":"public/test"}\n')
    await b.until(lambda: 2 in b.answers or b.eof, 5, "b's answer")
    check(not b.eof and "result" in b.answers[2], "b, which drained in "
          "time, was closed: %r" % b.answers.get(2))
    check(h.status()["slow_consumer_closes"] == 2,
          "slow_consumer_closes %r" % h.status()["slow_consumer_closes"])

    # b stops reading: over the limit again, the full period from now
    t1 = time.monotonic()
    h.control("burst %d" % BURST)
    gh.uh.wait_for(lambda: len(soft_closes(h)) >= 3, SOFT_MS / 1000 + 4,
                   what="b closed by the soft limit")
    took = time.monotonic() - t1
    check(took >= SOFT_MS / 1000 - 0.05
          and soft_closes(h)[2][1] >= SOFT_MS,
          "b closed %.2f s after going over again: its soft clock kept the "
          "first crossing (%r)" % (took, soft_closes(h)))

    a.close()
    b.s.close()
    w.transport.abort()


gh.run("gateway_soft_limit", body)
