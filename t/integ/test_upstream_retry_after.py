#!/usr/bin/python3
"""HTTP 429 with Retry-After on the upgrade: a failure like any other, but
the next attempt waits at least Retry-After even though the policy's own
delay is shorter. The peer is a few lines of socket code here, since
exsim's refusals carry no Retry-After."""

import os
import re
import socket
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from upstream_harness import check, run  # noqa: E402

ANSWER = (b"HTTP/1.1 429 Too Many Requests\r\nRetry-After: 1\r\n"
          b"Content-Length: 0\r\nConnection: close\r\n\r\n")


def serve(lsock, attempts, stop):
    lsock.settimeout(0.1)
    while not stop.is_set():
        try:
            c, _ = lsock.accept()
        except socket.timeout:
            continue
        attempts.append(time.monotonic())
        with c:
            c.settimeout(2)
            buf = b""
            try:
                while b"\r\n\r\n" not in buf:
                    d = c.recv(4096)
                    if not d:
                        break
                    buf += d
                c.sendall(ANSWER)
            except OSError:
                pass


def body(h):
    lsock = socket.socket()
    lsock.bind(("127.0.0.1", 0))
    lsock.listen(8)
    attempts = []
    stop = threading.Event()
    t = threading.Thread(target=serve, args=(lsock, attempts, stop),
                         daemon=True)
    t.start()
    try:
        h.start_gate("    protocol raw;\n"
                     "    reconnect fixed { delay 100ms; }\n",
                     url="ws://127.0.0.1:%d/ws/api/v2"
                     % lsock.getsockname()[1])
        u = h.wait_up(lambda u: u["failures_in_row"] >= 3, 6,
                      "three refused attempts")
        check("429" in (u["last_error"] or ""), "last_error %r" % u)
        lines = h.log_lines(r"upstream sim#\d+: \w+ -> down \(http 429.*\), "
                            r"retry in \d+ms")
        check(len(lines) >= 2, "policy lines %r" % lines)
        for l in lines:
            check(re.search(r"retry in 1000ms \(Retry-After\)", l),
                  "Retry-After not honoured: %r" % l)
        gaps = [b - a for a, b in zip(attempts, attempts[1:])]
        check(len(gaps) >= 2 and all(g >= 0.95 for g in gaps),
              "gaps between attempts %r" % gaps)
        check(h.gate.poll() is None, "exgate exited")
    finally:
        stop.set()
        t.join(2)
        lsock.close()


run("upstream_retry_after", body)
