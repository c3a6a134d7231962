"""Live reload (SIGHUP): 20 reloads in a row while 50 clients (25
WebSocket, 25 TCP) receive a book and trades from exsim at --rate 50.
The confs alternate between: nothing changed, a timeout changed (and
error_log moved to a file and back), a listener added and removed (and
the admin endpoint moved and back), an upstream (with a listener) added
and removed, the upstream's url switched to a second exsim together with
its auth, and back, an invalid conf (the second time: a valid one whose
new listener's port is in use), the running one again, and last the
auth alone (the same secret from another variable).

Checked, after every reload and at the end:
- /status last_reload says ok (ok:false with each error as FILE:LINE for
  the invalid conf), and the invalid conf changed nothing (same
  connection, same listeners);
- no client of a listener that stayed was closed; every book message
  chains (prev_change_id) for every client; no trade_seq hole or repeat
  while the upstream stays on one exsim (the two simulators count trades
  each their own way: a switch starts a new run of trade_seq);
- a url/auth change makes exactly one new upstream connection, a make-
  before-break rotation (rotations +1, no reconnect), and that connection
  goes to the new exsim with the new credentials; any other reload makes
  none;
- the clients of a removed listener, and of the listener of a removed
  upstream, get WebSocket 1001 "server reloading" (TCP: closed); the
  removed upstream's connection is closed (exsim sees it go);
- exgate's RSS after the 20th reload is within 10 % of after the first.
"""

import asyncio
import os
import re
import signal
import socket
import time

import gateway_harness as gh
import upstream_harness as uh
from gateway_harness import check, free_port, WSClient, TCPClient

BOOK = "book.BTC-PERPETUAL.100ms"
TRADES = "trades.BTC-PERPETUAL.100ms"
NWS, NTCP = 25, 25


class Confs:
    """The confs of the test, written over the conf exgate was started
    with (same admin port)."""

    def __init__(self, h, sim2):
        self.h = h
        self.sim2 = sim2
        self.ws_port = free_port()
        self.tcp_port = free_port()
        self.extra_port = free_port()
        self.extra_tcp_port = free_port()
        self.up2_port = free_port()

    def text(self, timeout="10s", extra_listener=False, extra_upstream=False,
             on_sim2=False, auth_b=False, invalid=False, busy_port=None):
        h = self.h
        if on_sim2:
            url, auth = self.sim2.ws_port, ("exsim2", "XG_TEST_EXSIM2_SECRET")
        elif auth_b:
            # the same secret from another variable: the auth directive
            # changed, the account did not
            url, auth = h.ws_port, ("exsim", "XG_TEST_EXSIM_SECRET_B")
        else:
            url, auth = h.ws_port, ("exsim", "XG_TEST_EXSIM_SECRET")
        t = ("client_auth off;\n"
             "upstream sim {\n"
             "    url ws://127.0.0.1:%d/ws/api/v2;\n"
             "    protocol deribit;\n"
             "    auth client_signature %s env:%s;\n"
             "    request_timeout %s;\n"
             "    reconnect exponential { initial 100ms; max 400ms; }\n"
             "}\n"
             "listen 127.0.0.1:%d websocket upstream=sim;\n"
             "listen 127.0.0.1:%d tcp upstream=sim;\n"
             % (url, auth[0], auth[1], timeout, self.ws_port, self.tcp_port))
        if extra_listener:
            t += ("listen 127.0.0.1:%d websocket upstream=sim;\n"
                  "listen 127.0.0.1:%d tcp upstream=sim;\n"
                  % (self.extra_port, self.extra_tcp_port))
        if extra_upstream:
            t += ("upstream up2 {\n"
                  "    url ws://127.0.0.1:%d/ws/api/v2;\n"
                  "    protocol deribit;\n"
                  "}\n"
                  "listen 127.0.0.1:%d websocket upstream=up2;\n"
                  % (h.ws_port, self.up2_port))
        if busy_port is not None:
            # valid, but its new parts cannot start: a port in use, an
            # upstream that would be added with it
            t = t.replace("request_timeout %s;" % timeout,
                          "request_timeout 13s;")
            t += ("upstream up3 {\n    url ws://127.0.0.1:%d/ws/api/v2;\n"
                  "    protocol deribit;\n}\n"
                  "listen 127.0.0.1:%d tcp upstream=up3;\n"
                  % (h.ws_port, busy_port))
        if invalid:
            t += "upstream sim2 {\n    url ws://127.0.0.1:1/;\n" \
                 "    hartbeat 10s;\n}\nlisten 127.0.0.1:0 carrier-pigeon;\n"
        return t

    def full(self, admin_port, log_file=None, **kw):
        """As start_gate_conf() writes it (LOG_FILE: error_log there, at
        level info)."""
        log = "%s info" % log_file if log_file else "stderr debug"
        return "error_log %s;\n%sadmin 127.0.0.1:%d;\n" % (
            log, self.text(**kw), admin_port)


def rss_kb(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise gh.Fail("no VmRSS for pid %d" % pid)


def sanitized(pid):
    with open("/proc/%d/maps" % pid) as f:
        return "libasan" in f.read()


def reload(h, confs, admin_port=None, **kw):
    """Writes the conf (the admin endpoint on ADMIN_PORT: where it is when
    None), sends SIGHUP, waits for the reload to be done; returns
    /status."""
    port = admin_port or h.admin_port
    with open(os.path.join(h.tmp, "exgate.conf"), "w") as f:
        f.write(confs.full(port, **kw))
    before = h.status()["reloads"]
    n = before["ok"] + before["error"]
    h.gate.send_signal(signal.SIGHUP)
    h.admin_port = port

    def done():
        st = h.status()
        return st if st["reloads"]["ok"] + st["reloads"]["error"] > n \
            else None
    return uh.wait_for(done, 10, what="reload done in /status")


async def subscribe(c):
    r = await c.call("public/subscribe", {"channels": [BOOK, TRADES]},
                     id=1)
    check(sorted(r.get("result", [])) == sorted([BOOK, TRADES]),
          "%s: subscribe %r" % (c.name, r))
    return c


def trade_runs(c):
    """C's trade_seqs split into runs at each switch of exsim (a jump of
    more than 5000 or a step back): checks each run has no hole and no
    repeat; returns the number of runs."""
    s = gh.trade_seqs(c, TRADES)
    runs, cur = [], []
    for x in s:
        if cur and (x < cur[-1] or x > cur[-1] + 5000):
            runs.append(cur)
            cur = []
        cur.append(x)
    if cur:
        runs.append(cur)
    for r in runs:
        holes = [(x, y) for x, y in zip(r, r[1:]) if y != x + 1]
        check(not holes, "%s: trade_seq holes or repeats %r" % (c.name,
                                                                holes[:5]))
    return len(runs)


async def body(h):
    os.environ["XG_TEST_EXSIM_SECRET"] = "exsim-secret"
    os.environ["XG_TEST_EXSIM_SECRET_B"] = "exsim-secret"
    os.environ["XG_TEST_EXSIM2_SECRET"] = "exsim2-secret"
    h.start_sim("--rate", "50", "--no-rate-limit", "--seed", "1")
    sim2 = h.start_sim("--rate", "50", "--no-rate-limit", "--seed", "99",
                       "--client-id", "exsim2", "--client-secret",
                       "exsim2-secret")
    confs = Confs(h, sim2)
    h.start_gate_conf(confs.text(), "debug")
    gh.wait_ready(h)
    ws_url = "ws://127.0.0.1:%d/ws/api/v2" % confs.ws_port

    clients = []
    for i in range(NWS):
        clients.append(await subscribe(
            await WSClient("ws%d" % i).connect(ws_url)))
    for i in range(NTCP):
        clients.append(await subscribe(
            await TCPClient("tcp%d" % i).connect(confs.tcp_port)))
    for c in clients:
        await c.wait_notes(BOOK, 3, timeout=10)

    plan = ["same", "timeout", "listener+", "listener-", "upstream+",
            "upstream-", "sim2", "sim1", "invalid", "same"] * 2
    plan[-1] = "auth"
    state = dict(timeout="10s", extra_listener=False, extra_upstream=False,
                 on_sim2=False, auth_b=False)
    rotate_changes = 0
    extra_clients, up2_clients = [], []
    log_file = os.path.join(h.tmp, "reload.log")
    admin0 = h.admin_port
    rss_first = None
    prev_listeners = None
    for n, step in enumerate(plan, 1):
        u0 = h.up()
        invalid = False
        busy = None
        if step == "timeout":
            state["timeout"] = "11s" if state["timeout"] == "10s" else "10s"
        elif step == "listener+":
            state["extra_listener"] = True
        elif step == "listener-":
            state["extra_listener"] = False
        elif step == "upstream+":
            state["extra_upstream"] = True
        elif step == "upstream-":
            state["extra_upstream"] = False
        elif step in ("sim2", "sim1"):
            state["on_sim2"] = step == "sim2"
            rotate_changes += 1
        elif step == "auth":
            state["auth_b"] = True
        elif step == "invalid" and n < 10:
            invalid = True
        elif step == "invalid":
            busy = socket.socket()
            busy.bind(("127.0.0.1", 0))
            busy.listen(1)
        sims = (h.sim.control("stats"), sim2.control("stats"))
        admin = None
        if step == "listener+":
            admin = free_port()
        elif step == "listener-":
            admin = admin0
        st = reload(h, confs, invalid=invalid, admin_port=admin,
                    log_file=log_file if step == "timeout" else None,
                    busy_port=busy.getsockname()[1] if busy else None,
                    **state)
        if step == "timeout":
            # error_log: to a file at level info
            with open(log_file) as f:
                text = f.read()
            check(re.search(r'\[info\] reload: ".*" runs', text)
                  and "[debug]" not in text,
                  "reload %d: error_log not reopened as a file at info: %r"
                  % (n, text[-300:]))
        elif step == "listener+":
            # and back; the admin endpoint moved
            check(h.log_lines(r"reload: listener 127.0.0.1:%d: added"
                              % confs.extra_port),
                  "reload %d: error_log not back on stderr" % n)
            s = socket.socket()
            try:
                s.connect(("127.0.0.1", admin0))
                check(False, "the old admin port still answers")
            except ConnectionRefusedError:
                pass
            finally:
                s.close()
        lr = st["last_reload"]
        lst = sorted(l["address"] for l in st["listeners"])
        if invalid or busy:
            check(lr["ok"] is False and len(lr["errors"]) >= 1
                  and all(re.match(r".*exgate\.conf:\d+: ", e)
                          for e in lr["errors"]),
                  "reload %d: invalid conf: last_reload %r" % (n, lr))
            check(lst == prev_listeners,
                  "reload %d: invalid conf changed the listeners: %r"
                  % (n, lst))
            check([u["name"] for u in st["upstreams"]] == ["sim"],
                  "reload %d: invalid conf changed the upstreams" % n)
            check(not h.log_lines(r"request_timeout changed.*13s|"
                                  r"upstream up3: added"),
                  "reload %d: a part of a failed reload was applied" % n)
            if busy:
                busy.close()
        else:
            check(lr["ok"] is True and lr["errors"] == [],
                  "reload %d (%s): last_reload %r" % (n, step, lr))
            prev_listeners = lst
        if step in ("sim2", "sim1", "auth"):
            new_sim = sim2 if step == "sim2" else h.sim
            u = h.wait_up(lambda u: u["state"] == "ready"
                          and u["connection_id"] > u0["connection_id"]
                          and len(u["connections"]) == 1, 15,
                          "reload %d: the new connection serving" % n)
            check(u["connection_id"] == u0["connection_id"] + 1,
                  "reload %d: %d new upstream connections, not 1"
                  % (n, u["connection_id"] - u0["connection_id"]))
            check(u["rotations"] == u0["rotations"] + 1
                  and u["disconnects"] == u0["disconnects"],
                  "reload %d: rotations %d -> %d, disconnects %d -> %d" % (
                      n, u0["rotations"], u["rotations"],
                      u0["disconnects"], u["disconnects"]))
            st2 = new_sim.control("stats")
            old = sims[0] if new_sim is h.sim else sims[1]
            check(st2["requests"].get("public/auth", 0)
                  > old["requests"].get("public/auth", 0),
                  "reload %d: the new exsim saw no public/auth" % n)
        else:
            time.sleep(0.3)
            u = h.up()
            check(u["connection_id"] == u0["connection_id"]
                  and u["state"] == "ready",
                  "reload %d (%s): the upstream reconnected: %r -> %r"
                  % (n, step, u0["connection_id"], u["connection_id"]))
        if step == "listener+":
            url = "ws://127.0.0.1:%d/ws/api/v2" % confs.extra_port
            extra_clients = [await subscribe(
                await WSClient("extra%d" % i).connect(url))
                for i in range(2)]
            extra_clients.append(await subscribe(await TCPClient(
                "extra-tcp").connect(confs.extra_tcp_port)))
            for c in extra_clients:
                await c.wait_notes(BOOK, 2, timeout=5)
        elif step == "listener-":
            for c in extra_clients:
                await c.wait_closed(5)
                want = ("eof",) if isinstance(c, TCPClient) \
                    else (1001, "server reloading")
                check(c.closed == want, "%s: closed %r, not %r"
                      % (c.name, c.closed, want))
            for port in (confs.extra_port, confs.extra_tcp_port):
                s = socket.socket()
                try:
                    s.connect(("127.0.0.1", port))
                    check(False, "removed listener %d still accepts" % port)
                except ConnectionRefusedError:
                    pass
                finally:
                    s.close()
        elif step == "upstream+":
            h.wait_up(lambda u: u["state"] == "ready", 10, "up2 ready",
                      name="up2")
            url = "ws://127.0.0.1:%d/ws/api/v2" % confs.up2_port
            up2_clients = [await subscribe(
                await WSClient("up2-%d" % i).connect(url))
                for i in range(2)]
            await up2_clients[0].wait_notes(BOOK, 2, timeout=5)
        elif step == "upstream-":
            for c in up2_clients:
                await c.wait_closed(5)
                check(c.closed == (1001, "server reloading"),
                      "%s: closed %r, not 1001" % (c.name, c.closed))
            check(all(u["name"] != "up2" for u in h.status()["upstreams"]),
                  "up2 still in /status")
            uh.wait_for(lambda: h.log_lines(
                r"upstream up2#\d+: closed \(removed by a reload\)"), 5,
                what="up2 closed")
        for c in clients:
            check(c.closed is None, "reload %d (%s): %s was closed: %r"
                  % (n, step, c.name, c.closed))
        if n == 1:
            rss_first = rss_kb(h.gate.pid)
        await asyncio.sleep(0.2)

    rss_last = rss_kb(h.gate.pid)
    # data still flows to everyone
    for c in clients:
        await c.wait_notes(BOOK, c.count(BOOK) + 2, timeout=10)
    books = 0
    for c in clients:
        b = gh.Book(c.name, BOOK)
        b.feed(c, 0)
        books += b.n
        runs = trade_runs(c)
        check(runs <= 1 + rotate_changes, "%s: %d trade runs over %d "
              "switches" % (c.name, runs, rotate_changes))
        check(c.closed is None, "%s closed at the end" % c.name)
    grow = (rss_last - rss_first) / rss_first
    print("reload: 20 reloads, %d clients, %d book messages applied; RSS "
          "after the 1st %d kB, after the 20th %d kB (%+.1f %%)"
          % (len(clients), books, rss_first, rss_last, 100 * grow))
    if sanitized(h.gate.pid):
        # ASan keeps freed memory in quarantine: RSS says nothing there,
        # LeakSanitizer at exit (stop_clean) does
        print("reload: sanitizer build: RSS not checked, leaks are")
    else:
        check(abs(grow) <= 0.10, "RSS grew %.1f %% over 19 reloads"
              % (100 * grow))
    for c in clients + extra_clients + up2_clients:
        if c.closed is None:
            await c.close()


def sync_body(h):
    asyncio.run(asyncio.wait_for(body(h), 150))
    if h.gate is not None and h.gate.poll() is None:
        gh.stop_clean(h)


if __name__ == "__main__":
    uh.run("reload", sync_body)
