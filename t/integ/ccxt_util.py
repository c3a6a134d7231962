"""ccxt_util: runs the ccxt bot t/ccxt/bot.js (an unmodified ccxt binance or
binanceusdm bot with only its URLs changed) from a test.

    from ccxt_util import Bot, need_bot
    need_bot()                     # exit 77 (1 under CI=true) without node/ccxt
    bot = Bot("binance", ws_url, rest_url, seconds=20)
    bot.wait_ready(30)             # every watch has had its first update
    bot.stop()                     # optional: end the run before `seconds`
    summary = bot.finish()         # the bot's JSON summary; Fail unless ok

The bot needs `node` on PATH and t/ccxt/node_modules (`cd t/ccxt && npm
ci`, which README command (2) runs).
"""

import json
import os
import queue
import shutil
import subprocess
import sys
import tempfile
import threading
import time

from upstream_harness import Fail

HERE = os.path.dirname(os.path.abspath(__file__))
SRCDIR = os.environ.get("XG_SRCDIR") or os.path.abspath(
    os.path.join(HERE, "..", ".."))
CCXT_DIR = os.path.join(SRCDIR, "t", "ccxt")
BOT = os.path.join(CCXT_DIR, "bot.js")

# What each market's bot is called with: the ccxt class and its symbols.
EXCHANGE = {"spot": "binance", "usdm": "binanceusdm"}
SYMBOLS = {"spot": "BTC/USDT,ETH/USDT", "usdm": "BTC/USDT:USDT,ETH/USDT:USDT"}


def need_bot():
    """Returns the node binary; without node or t/ccxt/node_modules exits
    77 (skip), or 1 when CI=true (CI must run this test)."""
    node = shutil.which("node")
    pkg = os.path.join(CCXT_DIR, "node_modules", "ccxt", "package.json")
    why = None
    if node is None:
        why = "no `node` on PATH (apt-get install nodejs npm)"
    elif not os.path.exists(pkg):
        why = "no %s (run `cd t/ccxt && npm ci`)" % pkg
    if why is None:
        return node
    name = os.path.basename(sys.argv[0])
    if os.environ.get("CI") == "true":
        sys.stderr.write("FAIL %s: CI=true and %s\n" % (name, why))
        sys.exit(1)
    sys.stderr.write("SKIP %s: %s\n" % (name, why))
    sys.exit(77)


class Bot:
    """One `node t/ccxt/bot.js` process. Its stdout lines are read by a
    thread; its stderr (ccxt's exceptions, with stacks) goes to a file."""

    def __init__(self, market, ws_url, rest_url, seconds, fresh=5,
                 extra=()):
        self.tmp = tempfile.mkdtemp(prefix="ccxt-bot-")
        self.err_path = os.path.join(self.tmp, "bot.err")
        err = open(self.err_path, "w")
        cmd = [need_bot(), BOT, "--exchange", EXCHANGE[market],
               "--ws", ws_url, "--rest", rest_url,
               "--symbols", SYMBOLS[market], "--seconds", str(seconds),
               "--fresh", str(fresh)] + list(extra)
        self.cmd = cmd
        self.seconds = seconds
        self.start = time.monotonic()
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=err,
                                     stdin=subprocess.DEVNULL, text=True,
                                     cwd=CCXT_DIR)
        err.close()
        self.lines = queue.Queue()
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()
        self.ready_after = None
        self.summary = None

    def _read(self):
        for line in self.proc.stdout:
            self.lines.put(line.rstrip("\n"))
        self.lines.put(None)

    def err(self):
        try:
            with open(self.err_path) as f:
                return f.read()
        except OSError:
            return ""

    def _line(self, deadline):
        try:
            return self.lines.get(timeout=max(0.0, deadline
                                              - time.monotonic()))
        except queue.Empty:
            raise Fail("bot: no output within its deadline; stderr:\n%s"
                       % self.err()[-3000:])

    def wait_ready(self, timeout):
        """Waits for the bot's `ready S` line (every watch fed); returns S."""
        deadline = time.monotonic() + timeout
        while True:
            line = self._line(deadline)
            if line is None or line.startswith("{"):
                self.proc.wait(5)
                raise Fail("bot ended before every watch was fed (exit %s):"
                           " %s\nstderr:\n%s" % (self.proc.returncode, line,
                                                 self.err()[-3000:]))
            if line.startswith("ready "):
                self.ready_after = float(line.split()[1])
                return self.ready_after

    def stop(self):
        """Ends the bot's run now (SIGTERM, after its ready line)."""
        if self.proc.poll() is None:
            self.proc.terminate()

    def finish(self, grace=30):
        """Waits for the summary and the exit; returns the summary. Fail
        unless the bot exited 0 with ok true."""
        deadline = self.start + self.seconds + grace
        line = ""
        while True:
            line = self._line(deadline)
            if line is None or line.startswith("{"):
                break
        try:
            rc = self.proc.wait(max(1.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            self.kill()
            raise Fail("bot did not exit")
        try:
            self.summary = json.loads(line) if line else None
        except ValueError:
            self.summary = None
        if rc != 0 or not self.summary or not self.summary.get("ok"):
            raise Fail("bot exit %s, summary %s\nstderr:\n%s"
                       % (rc, line, self.err()[-4000:]))
        return self.summary

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def close(self):
        self.kill()
        if self.proc.stdout:
            self.proc.stdout.close()
        shutil.rmtree(self.tmp, ignore_errors=True)


def brief(summary):
    """The summary's numbers on one line, for the test's log."""
    return json.dumps({k: summary.get(k) for k in
                       ("exchange", "ccxt", "seconds", "markets", "updates",
                        "trades", "trade_gaps")}, separators=(",", ":"))


def same_as_market(sim, market, summary):
    """Fail unless the bot's last books (nonce and every level) and last
    trade ids equal bnsim's REST depth and trades. Call it with bnsim's
    market still (`rate 0`) and the bot stopped after its last events."""
    pre = "/api/v3" if market == "spot" else "/fapi/v1"
    for sym, got in summary["last"].items():
        name = sym.split(":")[0].replace("/", "")
        d = sim.json(pre + "/depth", symbol=name, limit=1000)
        for side in ("bids", "asks"):
            want = [[float(p), float(q)] for p, q in d[side]]
            if got[side] != want:
                raise Fail("%s %s: the bot's %s differ from bnsim's depth:"
                           "\n bot   %s\n bnsim %s" % (market, sym, side,
                                                      got[side][:12],
                                                      want[:12]))
        if got["nonce"] != d["lastUpdateId"]:
            raise Fail("%s %s: the bot's book is at %s, bnsim's depth at %s"
                       % (market, sym, got["nonce"], d["lastUpdateId"]))
        t = sim.json(pre + "/trades", symbol=name, limit=1)
        if got["trade"] != t[-1]["id"]:
            raise Fail("%s %s: the bot's last trade is %s, bnsim's %s"
                       % (market, sym, got["trade"], t[-1]["id"]))
