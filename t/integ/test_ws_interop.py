#!/usr/bin/env python3
"""
test_ws_interop.py: the exgate WebSocket transport against an independent
implementation, Debian's python3-websockets:

  A. websockets as the server, our client (t/integ/wsprobe client):
     echo of 0 .. 1 MiB text and binary, every close code from the server,
     every close code from our client, a message over our limit (1009).
  B. our server (t/integ/wsprobe server), websockets as the client: the
     same sizes, ping/pong, close codes both ways, over the limit, 404.

Everything on 127.0.0.1 with ports chosen by the kernel.
"""
import asyncio
import os
import sys
import time

try:
    import websockets
    import websockets.exceptions
except ImportError:
    print("python3-websockets is missing (apt-get install python3-websockets)")
    sys.exit(1)

BUILD = os.environ.get("XG_BUILDDIR", os.getcwd())
PROBE = os.path.join(BUILD, "t", "integ", "wsprobe")
CODES = [1000, 1001, 1002, 1003, 1007, 1008, 1009, 1011]
SIZES = [0, 1, 125, 126, 65535, 65536, 1 << 20]
MIB = 1 << 20

failures = []


def check(cond, what):
    print(("ok   " if cond else "FAIL ") + what, flush=True)
    if not cond:
        failures.append(what)


def payload(n):
    return bytes((ord("a") + i % 26) for i in range(n))


# ---- A: websockets server, our client ---------------------------------------

server_seen = {}    # path -> (close_code, close_reason, user_agent)


async def handler(ws, path=None):
    path = ws.path
    try:
        if path.startswith("/close/"):
            await ws.close(code=int(path.split("/")[2]), reason="py bye")
        elif path.startswith("/big/"):
            await ws.send(b"\x07" * int(path.split("/")[2]))
            await ws.wait_closed()
        else:
            async for m in ws:
                await ws.send(m)
    except websockets.exceptions.ConnectionClosed:
        pass
    finally:
        await ws.wait_closed()
        server_seen[path] = (ws.close_code, ws.close_reason,
                             ws.request_headers.get("User-Agent", ""))


async def probe(*args, timeout=20):
    proc = await asyncio.create_subprocess_exec(
        PROBE, "client", *args, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE)
    try:
        out, err = await asyncio.wait_for(proc.communicate(), timeout)
    except asyncio.TimeoutError:
        proc.kill()
        await proc.wait()
        return -1, "timeout", ""
    return proc.returncode, out.decode(), err.decode()


async def wait_seen(path, timeout=10):
    """What the python server saw on PATH, polled with a deadline generous
    enough for a sanitizer build on a loaded machine."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if path in server_seen:
            return server_seen[path]
        await asyncio.sleep(0.01)
    return (None, None, None)


async def part_a():
    server = await websockets.serve(handler, "127.0.0.1", 0,
                                    max_size=4 * MIB, ping_interval=None)
    port = server.sockets[0].getsockname()[1]
    base = "ws://127.0.0.1:%d" % port
    try:
        for n in SIZES:
            rc, out, _ = await probe(base + "/echo/t%d" % n, "--size", str(n))
            check(rc == 0 and "echo ok %d" % n in out,
                  "A: our client, text echo of %d bytes" % n)
        rc, out, _ = await probe(base + "/echo/b", "--size", str(MIB),
                                 "--binary", "--count", "3")
        check(rc == 0 and out.count("echo ok %d" % MIB) == 3,
              "A: our client, 3 binary echoes of 1 MiB")
        seen = await wait_seen("/echo/b")
        check(seen[2].startswith("exgate/"),
              "A: User-Agent is exgate/VERSION (%s)" % seen[2])
        for code in CODES:
            rc, out, _ = await probe("%s/close/%d" % (base, code),
                                     "--expect-close", str(code))
            check(rc == 0 and ('close %d "py bye"' % code) in out,
                  "A: server closes with %d, our client reports it" % code)
        for code in CODES:
            path = "/echo/c%d" % code
            rc, out, _ = await probe(base + path, "--send", "x", "--close",
                                     str(code))
            seen = await wait_seen(path)
            check(rc == 0 and seen[0] == code and seen[1] == "wsprobe done",
                  "A: our client closes with %d, server saw %s" % (code, seen))
        rc, out, _ = await probe(base + "/big/2000000", "--max", "1000000",
                                 "--expect-close", "0")
        seen = await wait_seen("/big/2000000")
        check("message too big: sent close 1009" in out and seen[0] == 1009,
              "A: 2000000 bytes over our 1000000 limit -> 1009 (%s)"
              % (seen,))
    finally:
        server.close()
        await server.wait_closed()


# ---- B: our server, websockets client ---------------------------------------

async def part_b():
    proc = await asyncio.create_subprocess_exec(
        PROBE, "server", "--max", "2000000", stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL)
    lines = []

    async def reader():
        while True:
            line = await proc.stdout.readline()
            if not line:
                return
            lines.append(line.decode().rstrip("\n"))

    try:
        first = await asyncio.wait_for(proc.stdout.readline(), 10)
        port = int(first.split()[1])
        rtask = asyncio.ensure_future(reader())
        base = "ws://127.0.0.1:%d" % port
        kw = dict(max_size=4 * MIB, ping_interval=None, close_timeout=5)

        async with websockets.connect(base + "/echo", **kw) as ws:
            for n in SIZES:
                text = payload(n).decode()
                await ws.send(text)
                got = await asyncio.wait_for(ws.recv(), 10)
                check(got == text, "B: our server, text echo of %d bytes" % n)
                data = payload(n)
                await ws.send(data)
                got = await asyncio.wait_for(ws.recv(), 10)
                check(got == data,
                      "B: our server, binary echo of %d bytes" % n)
            pong = await ws.ping(b"are you there")
            await asyncio.wait_for(pong, 5)
            check(True, "B: ping answered by a pong with the same payload")

        for code in CODES:
            async with websockets.connect(base + "/echo", **kw) as ws:
                await ws.send("close %d srv bye" % code)
                try:
                    await asyncio.wait_for(ws.recv(), 5)
                except websockets.exceptions.ConnectionClosed:
                    pass
                check(ws.close_code == code and ws.close_reason == "srv bye",
                      "B: our server closes with %d (got %s %r)"
                      % (code, ws.close_code, ws.close_reason))

        for code in CODES:
            ws = await websockets.connect(base + "/echo", **kw)
            await ws.close(code=code, reason="py client")
            want = 'down: close %d "py client" code=%d' % (code, code)
            end = time.monotonic() + 10
            while time.monotonic() < end:
                if any(l.startswith(want) for l in lines):
                    break
                await asyncio.sleep(0.01)
            check(any(l.startswith(want) for l in lines),
                  "B: client closes with %d, our server reports it" % code)

        async with websockets.connect(base + "/echo", **kw) as ws:
            await ws.send(b"x" * 2000001)
            try:
                await asyncio.wait_for(ws.recv(), 5)
            except websockets.exceptions.ConnectionClosed:
                pass
            check(ws.close_code == 1009,
                  "B: 2000001 bytes over the 2000000 limit -> 1009 (got %s)"
                  % ws.close_code)

        try:
            await websockets.connect(base + "/missing", **kw)
            check(False, "B: unknown path refused")
        except websockets.exceptions.InvalidStatusCode as e:
            check(e.status_code == 404, "B: unknown path -> 404")
        rtask.cancel()
    finally:
        if proc.returncode is None:
            proc.kill()
        await proc.wait()


async def main():
    if not os.access(PROBE, os.X_OK):
        print("missing %s: build first" % PROBE)
        return 1
    await asyncio.wait_for(part_a(), 50)
    await asyncio.wait_for(part_b(), 50)
    return 1 if failures else 0


if __name__ == "__main__":
    rc = asyncio.run(main())
    if failures:
        print("%d failure(s)" % len(failures))
    sys.exit(rc)
