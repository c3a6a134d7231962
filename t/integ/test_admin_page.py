"""GET / on the admin listener: the status page, in a real browser.

Headless Chromium (Debian package `chromium`), driven over its DevTools
protocol with python websockets, loads the page from a live exgate with
10 upstreams on two exsims (plus one whose port is closed), in a
1280x800 viewport:

- the page is self-contained: no src/href/url() to anywhere, and the
  browser reports no script error and no blocked load (its CSP allows
  nothing external);
- every upstream has a card whose state (data-state, the badge's text and
  colour class) is the one /status gives, and every card is inside the
  viewport: nothing to scroll for 10 upstreams;
- the card says what is wrong (the dead upstream's last error), the
  clients per listener, and the message rates once two polls came in;
- the second exsim refuses and drops (exsim `refuse on`, `drop`): the same
  page, not reloaded, shows its two upstreams leave ready (BREAKER OPEN,
  DOWN) while the other eight stay READY, and the header counts them;
  `refuse off`: the one without a breaker is READY again;
- screenshots of both moments are saved in the build directory
  (t/integ/test_admin_page-ready.png, -trouble.png).

Without Chromium the test is SKIPPED (exit 77) with a message.
"""

import asyncio
import base64
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.request

import gateway_harness as gh
import upstream_harness as uh
from gateway_harness import check, WSClient

import websockets

CHROMIUM = (shutil.which("chromium") or shutil.which("chromium-browser")
            or shutil.which("google-chrome"))
WIDTH, HEIGHT = 1280, 800
TICKER = "ticker.BTC-PERPETUAL.100ms"

# name -> (exsim, extra conf lines); "a": the first exsim, "b": the second,
# None: a closed port
UPSTREAMS = [
    ("deribit", "a", ""),
    ("deribit-hedge", "a", ""),
    ("deribit-mm-1", "a", ""),
    ("deribit-mm-2", "a", ""),
    ("deribit-options", "a", ""),
    ("deribit-eu", "b", "    breaker { failures 2; window 60s; open 60s; }\n"),
    ("deribit-eu-backup", "b", "    reconnect fixed { delay 2s; }\n"),
    ("deribit-risk", "a", ""),
    ("deribit-archive", None, "    reconnect fixed { delay 60s; }\n"),
    ("deribit-test", "a", ""),
]

# Reads every card, the header and the page's geometry (null while the
# page is not there yet).
READ_JS = """!document.getElementById('summary') ? 'null' : JSON.stringify({
  cards: Array.from(document.querySelectorAll('.card')).map(function (c) {
    var r = c.getBoundingClientRect();
    return {name: c.getAttribute('data-upstream'),
            state: c.getAttribute('data-state'), cls: c.className,
            badge: c.querySelector('.badge').textContent,
            badgeBg: getComputedStyle(c.querySelector('.badge')).backgroundColor,
            err: c.querySelector('.err').textContent,
            clients: c.querySelector('.clients').textContent,
            facts: c.querySelector('.facts').textContent,
            rin: c.querySelector('.chart.in .label').textContent,
            rout: c.querySelector('.chart.out .label').textContent,
            canvasH: c.querySelector('canvas').clientHeight,
            chartsBottom: c.querySelector('.charts')
                .getBoundingClientRect().bottom,
            top: r.top, bottom: r.bottom, left: r.left, right: r.right};
  }),
  summary: document.getElementById('summary').textContent,
  meta: document.getElementById('meta').textContent,
  title: document.title,
  innerWidth: innerWidth, innerHeight: innerHeight,
  scrollHeight: document.documentElement.scrollHeight,
  scrollWidth: document.documentElement.scrollWidth
})"""


class Browser:
    """One headless Chromium and a DevTools session on its page."""

    def __init__(self, h):
        self.h = h
        self.proc = None
        self.ws = None
        self.seq = 0
        self.problems = []      # script errors, console errors, blocked loads

    async def start(self):
        errf = open(os.path.join(self.h.tmp, "chromium.err"), "w+")
        self.errf = errf
        self.proc = subprocess.Popen(
            [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu",
             "--disable-dev-shm-usage", "--no-first-run",
             "--no-default-browser-check", "--disable-extensions",
             "--user-data-dir=%s" % os.path.join(self.h.tmp, "chromium"),
             "--remote-debugging-address=127.0.0.1",
             "--remote-debugging-port=0",
             "--window-size=%d,%d" % (WIDTH, HEIGHT), "about:blank"],
            stdout=subprocess.DEVNULL, stderr=errf, stdin=subprocess.DEVNULL)
        self.h.procs.append(self.proc)
        end = time.monotonic() + 30
        url = None
        while url is None:
            check(time.monotonic() < end and self.proc.poll() is None,
                  "chromium gave no DevTools address:\n%s" % self.log())
            m = re.search(r"DevTools listening on (ws://\S+)", self.log())
            if m:
                url = m.group(1)
            else:
                await asyncio.sleep(0.1)
        port = int(re.match(r"ws://[^:]+:(\d+)/", url).group(1))
        with urllib.request.urlopen("http://127.0.0.1:%d/json/list" % port,
                                    timeout=10) as r:
            targets = json.loads(r.read().decode())
        page = [t for t in targets if t.get("type") == "page"]
        check(page, "no page target: %r" % targets)
        self.ws = await websockets.connect(page[0]["webSocketDebuggerUrl"],
                                           max_size=None)
        await self.call("Runtime.enable")
        await self.call("Log.enable")
        await self.call("Page.enable")
        await self.call("Emulation.setDeviceMetricsOverride", {
            "width": WIDTH, "height": HEIGHT, "deviceScaleFactor": 1,
            "mobile": False})

    def log(self):
        self.errf.flush()
        self.errf.seek(0)
        return self.errf.read()

    def _event(self, m):
        method = m.get("method")
        p = m.get("params", {})
        if method == "Runtime.exceptionThrown":
            self.problems.append("exception: %s" % json.dumps(
                p.get("exceptionDetails", {}))[:500])
        elif method == "Log.entryAdded":
            e = p.get("entry", {})
            if e.get("level") == "error":
                self.problems.append("log: %s" % e.get("text"))
        elif method == "Runtime.consoleAPICalled" and p.get("type") == "error":
            self.problems.append("console: %r" % p.get("args"))

    async def call(self, method, params=None, timeout=20):
        self.seq += 1
        me = self.seq
        await self.ws.send(json.dumps({"id": me, "method": method,
                                       "params": params or {}}))
        end = time.monotonic() + timeout
        while True:
            left = end - time.monotonic()
            check(left > 0, "DevTools %s: no answer" % method)
            m = json.loads(await asyncio.wait_for(self.ws.recv(), left))
            if m.get("id") == me:
                check("error" not in m, "DevTools %s: %r" % (method, m))
                return m.get("result", {})
            self._event(m)

    async def read(self):
        r = await self.call("Runtime.evaluate", {"expression": READ_JS,
                                                 "returnByValue": True})
        check("exceptionDetails" not in r, "reading the page: %r" % r)
        return json.loads(r["result"]["value"])

    async def screenshot(self, path):
        r = await self.call("Page.captureScreenshot", {"format": "png"})
        with open(path, "wb") as f:
            f.write(base64.b64decode(r["data"]))

    async def close(self):
        if self.ws is not None:
            try:
                await self.call("Browser.close", timeout=5)
            except (uh.Fail, websockets.ConnectionClosed,
                    asyncio.TimeoutError):
                pass
            await self.ws.close()
        if self.proc is not None:
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def states(h):
    return {u["name"]: u for u in h.status()["upstreams"]}


async def wait_page(b, pred, what, timeout=15):
    """Reads the page until PRED(page) holds; returns that reading."""
    end = time.monotonic() + timeout
    while True:
        p = await b.read()
        if p is not None and pred(p):
            return p
        if time.monotonic() > end:
            raise uh.Fail("timed out waiting for the page to show %s; the "
                          "page: %s" % (what, json.dumps(p, indent=1)))
        await asyncio.sleep(0.2)


def rate(card, way):
    """The rate a card's chart label shows ("msgs in 9.7/s max 10")."""
    m = re.match(r"msgs %s (\d+(?:\.\d+)?)(k?)/s" % way,
                 card["r" + way])
    check(m is not None, "a rate label: %r" % card["r" + way])
    return float(m.group(1)) * (1000 if m.group(2) else 1)


def by_name(page):
    return {c["name"]: c for c in page["cards"]}


def check_layout(page):
    check(page["innerWidth"] == WIDTH and page["innerHeight"] == HEIGHT,
          "viewport %dx%d" % (page["innerWidth"], page["innerHeight"]))
    check(page["scrollHeight"] <= HEIGHT and page["scrollWidth"] <= WIDTH,
          "the page scrolls: %dx%d" % (page["scrollWidth"],
                                       page["scrollHeight"]))
    for c in page["cards"]:
        check(c["top"] >= 0 and c["left"] >= 0 and c["bottom"] <= HEIGHT
              and c["right"] <= WIDTH, "card %s outside the viewport: %r"
              % (c["name"], c))
        # nothing cut off inside a card: the charts keep room to draw
        check(c["canvasH"] >= 14 and c["chartsBottom"] <= c["bottom"],
              "card %s: charts squeezed or cut: %r" % (c["name"], c))


async def body(h):
    sim_a = h.start_sim("--rate", "20", "--no-rate-limit")
    sim_b = h.start_sim("--rate", "20", "--no-rate-limit")
    dead = uh.free_port()
    conf = ""
    for name, sim, extra in UPSTREAMS:
        port = {"a": sim_a.ws_port, "b": sim_b and sim_b.ws_port,
                None: dead}[sim]
        if sim == "b":
            port = sim_b.ws_port
        conf += ("upstream %s {\n    url ws://127.0.0.1:%d/ws/api/v2;\n"
                 "    protocol deribit;\n%s}\n" % (name, port, extra))
    ws_port, tcp_port, eu_port = uh.free_port(), uh.free_port(), uh.free_port()
    conf += ("client_auth off;\n"
             "listen 127.0.0.1:%d websocket upstream=deribit;\n"
             "listen 127.0.0.1:%d tcp upstream=deribit;\n"
             "listen 127.0.0.1:%d websocket upstream=deribit-eu-backup;\n"
             % (ws_port, tcp_port, eu_port))
    h.start_gate_conf(conf, "info")
    uh.wait_for(lambda: sum(u["state"] == "ready"
                            for u in states(h).values()) == 9, 15,
                what="9 upstreams ready")
    page_url = "http://127.0.0.1:%d/" % h.admin_port

    # the page itself: HTML, self-contained
    with urllib.request.urlopen(page_url, timeout=5) as r:
        ctype = r.headers.get("Content-Type")
        csp = r.headers.get("Content-Security-Policy") or ""
        html = r.read().decode()
    check(ctype == "text/html; charset=utf-8", "Content-Type %r" % ctype)
    check("default-src 'none'" in csp, "CSP %r" % csp)
    for pat in (r"\bsrc\s*=", r"href\s*=\s*\"(?!data:)", r"url\(",
                r"@import", r"https?://"):
        check(not re.search(pat, html), "an external reference (%s) in the "
              "page" % pat)

    # a client on deribit: clients and messages out
    c = await WSClient("bot").connect("ws://127.0.0.1:%d/ws/api/v2"
                                      % ws_port)
    r = await c.call("public/subscribe", {"channels": [TICKER]}, id=1)
    check(r.get("result") == [TICKER], "subscribe %r" % r)
    c2 = await WSClient("bot-eu").connect("ws://127.0.0.1:%d/ws/api/v2"
                                          % eu_port)
    r = await c2.call("public/subscribe", {"channels": [TICKER]}, id=1)
    check(r.get("result") == [TICKER], "subscribe %r" % r)

    b = Browser(h)
    try:
        await b.start()
        await b.call("Page.navigate", {"url": page_url})
        page = await wait_page(b, lambda p: len(p["cards"]) == 10
                               and rate(by_name(p)["deribit"], "in") > 0
                               and rate(by_name(p)["deribit"], "out") > 0,
                               "10 cards and rates")
        want = states(h)
        page = await wait_page(
            b, lambda p: all(by_name(p)[n]["state"] == want[n]["state"]
                             for n in want), "the states of /status")
        check([x["name"] for x in page["cards"]]
              == [u[0] for u in UPSTREAMS], "card order %r"
              % [x["name"] for x in page["cards"]])
        check_layout(page)
        cards = by_name(page)
        for name, sim, _ in UPSTREAMS:
            cd = cards[name]
            if sim is None:
                check(cd["state"] == "down" and cd["badge"] == "DOWN"
                      and "down" in cd["cls"].split(), "dead: %r" % cd)
                check("refused" in cd["err"], "dead's error: %r" % cd)
            else:
                check(cd["state"] == "ready" and cd["badge"] == "READY"
                      and "ready" in cd["cls"].split(), "%s: %r"
                      % (name, cd))
        check(cards["deribit"]["badgeBg"] != cards["deribit-archive"]
              ["badgeBg"], "ready and down have the same colour")
        check(page["summary"] == "1 OF 10 NOT READY", "summary %r"
              % page["summary"])
        check("ws :%d 1 client" % ws_port in cards["deribit"]["clients"]
              and "tcp :%d 0 clients" % tcp_port
              in cards["deribit"]["clients"], "clients %r"
              % cards["deribit"]["clients"])
        check("clients 1" in cards["deribit"]["facts"], "facts %r"
              % cards["deribit"]["facts"])
        check(cards["deribit-mm-1"]["clients"] == "no listener",
              "no listener: %r" % cards["deribit-mm-1"]["clients"])
        await asyncio.sleep(5)      # a few seconds of rates in the charts
        await b.screenshot(os.path.join(uh.BUILDDIR, "t", "integ",
                                        "test_admin_page-ready.png"))

        # trouble on the second exchange: the same page follows
        sim_b.control("refuse on")
        sim_b.control("drop")
        page = await wait_page(
            b, lambda p: by_name(p)["deribit-eu"]["state"] == "open"
            and by_name(p)["deribit-eu-backup"]["state"] in ("down",
                                                            "connecting",
                                                            "handshake"),
            "deribit-eu breaker open, deribit-eu-backup down")
        cards = by_name(page)
        check(cards["deribit-eu"]["badge"] == "BREAKER OPEN"
              and "open" in cards["deribit-eu"]["cls"].split(),
              "eu: %r" % cards["deribit-eu"])
        check("503" in cards["deribit-eu"]["err"], "eu's error %r"
              % cards["deribit-eu"])
        check(sum(x["state"] == "ready" for x in page["cards"]) == 7,
              "7 still ready: %r" % [(x["name"], x["state"])
                                     for x in page["cards"]])
        page = await wait_page(
            b, lambda p: by_name(p)["deribit-eu-backup"]["state"] == "down"
            and "retry in" in by_name(p)["deribit-eu-backup"]["err"],
            "deribit-eu-backup down, retrying")
        check(by_name(page)["deribit-eu-backup"]["badge"] == "DOWN",
              "backup %r" % by_name(page)["deribit-eu-backup"])
        check(page["summary"] == "3 OF 10 NOT READY", "summary %r"
              % page["summary"])
        check(page["title"].startswith("\u26a0 3 not ready"), "title %r"
              % page["title"])
        check_layout(page)
        await b.screenshot(os.path.join(uh.BUILDDIR, "t", "integ",
                                        "test_admin_page-trouble.png"))

        sim_b.control("refuse off")
        page = await wait_page(
            b, lambda p: by_name(p)["deribit-eu-backup"]["state"] == "ready",
            "deribit-eu-backup ready again")
        check(by_name(page)["deribit-eu-backup"]["badge"] == "READY",
              "backup back %r" % by_name(page)["deribit-eu-backup"])
        check(page["summary"] == "2 OF 10 NOT READY", "summary %r"
              % page["summary"])

        # a reload that fails: the header says so and why; then a good one
        path = os.path.join(h.tmp, "exgate.conf")
        with open(path) as f:
            good = f.read()
        with open(path, "a") as f:
            f.write("bogus_directive on;\n")
        h.gate.send_signal(signal.SIGHUP)
        page = await wait_page(b, lambda p: "reload FAILED" in p["meta"],
                               "the failed reload in the header")
        check('unknown directive "bogus_directive"' in page["meta"],
              "meta %r" % page["meta"])
        with open(path, "w") as f:
            f.write(good)
        h.gate.send_signal(signal.SIGHUP)
        await wait_page(b, lambda p: "reload ok" in p["meta"],
                        "the good reload in the header")
        await asyncio.sleep(0.3)
        await b.read()          # collects the events that came meanwhile
        check(not b.problems, "the browser reported: %s"
              % "\n".join(b.problems))
    finally:
        await b.close()
        await c.close()
        await c2.close()
    print("screenshots: %s" % os.path.join(uh.BUILDDIR, "t", "integ",
                                           "test_admin_page-*.png"))


if __name__ == "__main__":
    if CHROMIUM is None:
        print("SKIP admin_page: no chromium found (Debian package chromium: "
              "apt-get install chromium)")
        sys.exit(77)
    gh.run("admin_page", body)
