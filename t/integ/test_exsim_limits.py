"""exsim: connection limits and hostile control input. --max-connections
answers the next upgrade with HTTP 429 (Deribit: 32 per IP); a subscriber
that does not read is dropped past --max-output (connection_too_slow,
counted in slow_closes) while a reading one keeps its chain; the control
port survives junk and closes a line that never ends.
"""
import asyncio
import os
import socket
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from exsim_util import Exsim, Rpc, check, main, run  # noqa: E402

import websockets  # noqa: E402

BOOK = "book.BTC-PERPETUAL.100ms"


def test():
    with Exsim("--rate", "0", "--max-connections", "2", "--max-output",
               "100000", "--no-aggregate", "--instruments",
               "BTC-PERPETUAL") as sim:
        async def go():
            a = await Rpc.open(sim.url())
            # a subscriber that stops reading after one queued message
            # (a small receive buffer keeps the kernel from absorbing MBs)
            sk = socket.socket()
            sk.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            sk.connect(("127.0.0.1", sim.ws_port))
            slow = await websockets.connect(sim.url(), max_queue=1,
                                            read_limit=4096, sock=sk)
            try:
                await websockets.connect(sim.url())
                check(False, "third connection accepted")
            except websockets.InvalidStatusCode as e:
                check(e.status_code == 429, "status %r" % e.status_code)
            await slow.send('{"jsonrpc":"2.0","id":1,"method":'
                            '"public/subscribe","params":{"channels":["%s"]}}'
                            % BOOK)
            await a.result("public/subscribe", {"channels": [BOOK]})
            await a.note(BOOK)
            last = None
            # bursts small enough for a reader (each goes out in one loop
            # turn), so only the one that never reads piles up
            for _ in range(400):
                sim.control("burst 50", timeout=30)
                # the reader keeps up and checks its chain
                while not a.notes.empty():
                    d = a.notes.get_nowait()["params"]["data"]
                    if last is not None:
                        check(d["prev_change_id"] == last, "chain")
                    last = d["change_id"]
                await asyncio.sleep(0.02)
                if sim.stats()["slow_closes"] == 1:
                    break
            sys.stderr.write("dropped after %d bursts of 50\n" % (_ + 1))
            st = sim.stats()
            check(st["slow_closes"] == 1 and st["connections_open"] == 1,
                  "slow reader not dropped %r" % st)
            check(st["subscribed"] == {BOOK: 1}, "subscribed %r" % st)
            # a slot is free again
            b = await Rpc.open(sim.url())
            await b.result("public/test")
            await b.close()
            slow.transport.abort()
            await a.close()

        run(go())

        # control port: junk gets an error line, an endless line a close
        with socket.create_connection(("127.0.0.1", sim.control_port),
                                      timeout=5) as s:
            s.sendall(b"\x00\xff\xfe junk\r\n")
            buf = s.recv(4096)
            check(b'"ok":false' in buf, "junk reply %r" % buf)
            try:
                s.sendall(b"x" * 20000)
                closed = s.recv(4096) == b""
            except ConnectionResetError:
                closed = True
            check(closed, "endless line not closed")
        check(sim.control("stats")["connections_open"] == 0, "still serving")


main(test)
