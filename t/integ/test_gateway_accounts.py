"""Several exchange accounts behind one upstream (`account NAME { ... }`,
`client_credentials ... account=NAME`), against exsim with two extra
accounts (--account):

- each account has its own upstream connection (a child upstream
  "sim/desk-a", in /status under "accounts"), authenticated as its own
  exsim account;
- two bots per account (WebSocket and TCP) subscribe to a public book and
  their user.orders channel in one request (one answer, both channels);
- orders by all four bots while the desk-a connection is dropped 10 times
  and the public connection 10 times (exsim `drop acct-a`, `drop public`):
  every bot's user.orders notifications carry its own account's orders
  only, and get_open_orders_by_instrument through exgate equals exsim's
  open orders of that account; no order of one account shows up at a bot
  of the other;
- a drop of desk-a's connection leaves desk-b's connection and the public
  one alone (their `connects` do not move), and desk-b's bots see no gap
  notice; the public book stays one unbroken chain at every bot;
- private/cancel of the other account's order fails as exsim answers it
  (11044) and the order stays open;
- a bot with no account gets 13009 for private methods and user.*
  channels; a bot whose credentials name an account the upstream lacks is
  refused at public/auth (13004); a bot bound to desk-a cannot
  re-authenticate as desk-b on the same connection;
- a desk-a bot's own (emulated) cancel-on-disconnect cancels, on desk-a,
  exactly the orders it placed when it leaves;
- fills: a position taken by a desk-a bot is desk-a's (get_position
  through the other desk-a bot and at exsim), desk-b's is its own;
- exgate -T shows the account blocks with their secrets by source;
- a reload with the same conf leaves every connection alone; a reload
  whose desk-a secret (file:) changed rotates desk-a's connection onto it:
  a wrong one fails the rotation and the old connection serves on;
- a reload that adds an account opens its connection (a new bot trades on
  it at once), and one that removes an account closes its bots (1012) and
  its connection, with desk-a's and the public connection untouched.
"""

import asyncio
import json
import os
import shutil
import signal
import subprocess
import urllib.request

import gateway_harness as gh
import upstream_harness as uh
from gateway_harness import check, WSClient, TCPClient

BTC = "BTC-PERPETUAL"
BOOK = "book.%s.100ms" % BTC
ORDERS = "user.orders.%s.raw" % BTC
SECRETS = {"XG_T_ACCT_A": "secret-a", "XG_T_ACCT_B": "secret-b",
           "XG_T_ACCT_C": "secret-c",
           "XG_T_BOT": "bot-secret"}

UPSTREAM = """    protocol deribit;
    reconnect fixed { delay 100ms; }
    account desk-a { auth client_credentials acct-a file:%s; }
    account desk-b { auth client_signature acct-b env:XG_T_ACCT_B; }
"""
MAIN = """client_credentials bot-a1 env:XG_T_BOT account=desk-a;
client_credentials bot-a2 env:XG_T_BOT account=desk-a;
client_credentials bot-b1 env:XG_T_BOT account=desk-b;
client_credentials bot-b2 env:XG_T_BOT account=desk-b;
client_credentials bot-none env:XG_T_BOT;
client_credentials bot-nowhere env:XG_T_BOT account=desk-z;
"""


def acct_status(h, name):
    for a in h.up().get("accounts", []):
        if a.get("account") == name:
            return a
    raise gh.Fail("no account %s in /status: %r" % (name, h.up()))


async def direct_open(h, cid, secret):
    """Open orders of exsim account CID, asked of exsim directly."""
    r = await gh.direct_call(h, "private/get_open_orders_by_instrument",
                             {"instrument_name": BTC}, cid, secret)
    return set(o["order_id"] for o in r)


async def login(c, cid):
    r = await c.call("public/auth", {"grant_type": "client_credentials",
                                     "client_id": cid,
                                     "client_secret": "bot-secret"},
                     id="auth-%s" % cid)
    return r


async def wait_ready_all(h, timeout=10):
    def ok():
        u = h.up()
        return (u.get("state") == "ready"
                and all(a.get("state") == "ready"
                        for a in u.get("accounts", [])))
    uh.wait_for(ok, timeout, what="upstream and accounts ready")


def chain_ok(c):
    """The public book at C is one chain (prev_change_id = last
    change_id) from its first notification on."""
    last = None
    for ch, m in c.notes:
        if ch != BOOK:
            continue
        d = m["params"]["data"]
        if last is not None and d.get("prev_change_id") != last:
            return False
        last = d["change_id"]
    return True


async def body(h):
    os.environ.update(SECRETS)
    keyfile = os.path.join(h.tmp, "desk-a.key")
    with open(keyfile, "w") as f:
        f.write("secret-a\n")
    os.chmod(keyfile, 0o600)
    gh.start(h, UPSTREAM % keyfile, main_extra=MAIN, level="info",
             sim_args=("--account", "acct-a:secret-a",
                       "--account", "acct-b:secret-b",
                       "--account", "acct-c:secret-c",
                       "--no-rate-limit"))  # the budget: test_gateway_budget
    await wait_ready_all(h)
    u = h.up()
    check([a["account"] for a in u["accounts"]] == ["desk-a", "desk-b"],
          "accounts in /status: %r" % u.get("accounts"))
    check(acct_status(h, "desk-a")["name"] == "sim/desk-a",
          "child upstream name: %r" % acct_status(h, "desk-a"))

    # exgate -T: the account blocks, the secrets by source only
    t = subprocess.run([uh.EXGATE, "-T", "-c",
                        os.path.join(h.tmp, "exgate.conf")],
                       capture_output=True, text=True, env=os.environ)
    check(t.returncode == 0, "exgate -T: %s" % t.stderr)
    check("account desk-a {" in t.stdout and "env:XG_T_ACCT_B" in t.stdout
          and "secret-a" not in t.stdout and "account=desk-a" in t.stdout,
          "exgate -T output:\n%s" % t.stdout)

    bots = {}
    for name, cls in (("bot-a1", WSClient), ("bot-a2", TCPClient),
                      ("bot-b1", WSClient), ("bot-b2", TCPClient)):
        c = cls(name)
        await (c.connect(h.ws_url) if cls is WSClient
               else c.connect(h.tcp_port))
        r = await login(c, name)
        check("result" in r, "%s auth: %r" % (name, r))
        r = await c.call("exgate/notify_gaps", {"enabled": True}, id="ng")
        check("result" in r, "%s notify_gaps: %r" % (name, r))
        r = await c.call("private/subscribe", {"channels": [BOOK, ORDERS]},
                         id="sub")
        check(r.get("result") == [BOOK, ORDERS],
              "%s: one answer for both connections: %r" % (name, r))
        bots[name] = c
    acct = {"bot-a1": "a", "bot-a2": "a", "bot-b1": "b", "bot-b2": "b"}

    # a bot with no account; one naming an account the upstream lacks
    n = WSClient("bot-none")
    await n.connect(h.ws_url)
    r = await login(n, "bot-none")
    check("result" in r, "bot-none auth: %r" % r)
    r = await n.call("private/get_open_orders_by_instrument",
                     {"instrument_name": BTC}, id=1)
    check(r.get("error", {}).get("code") == 13009,
          "no account, private method: %r" % r)
    r = await n.call("private/subscribe", {"channels": [ORDERS]}, id=2)
    check(r.get("error", {}).get("code") == 13009,
          "no account, user.* channel: %r" % r)
    r = await n.call("public/subscribe", {"channels": [BOOK]}, id=3)
    check(r.get("result") == [BOOK], "no account, public channel: %r" % r)
    z = WSClient("bot-nowhere")
    await z.connect(h.ws_url)
    r = await login(z, "bot-nowhere")
    check(r.get("error", {}).get("code") == 13004,
          "account not on the upstream: %r" % r)
    r = await login(bots["bot-a1"], "bot-b1")
    check(r.get("error", {}).get("code") == 13004,
          "re-auth as another account: %r" % r)

    connects_b = acct_status(h, "desk-b")["connects"]
    connects_a = acct_status(h, "desk-a")["connects"]
    connects_pub = h.up()["connects"]

    # orders by all four while desk-a and the public connection drop
    placed = {"a": set(), "b": set()}
    unknown = 0
    price = 100
    for rnd in range(20):
        reqs = []
        for name, c in bots.items():
            price += 1
            reqs.append((name, c.call("private/buy", {
                "instrument_name": BTC, "amount": 10, "type": "limit",
                "price": price, "label": "%s-%d" % (name, rnd)},
                id="buy-%d" % rnd, timeout=10)))
        what = "acct-a" if rnd % 2 == 0 else "public"
        h.control("drop %s" % what)
        for name, fut in reqs:
            r = await fut
            if "result" in r:
                placed[acct[name]].add(r["result"]["order"]["order_id"])
            else:
                check(r["error"]["code"] == 13028,
                      "%s buy during a drop: %r" % (name, r))
                unknown += 1
        await wait_ready_all(h)
    check(acct_status(h, "desk-b")["connects"] == connects_b,
          "desk-b reconnected: %d -> %d" % (
              connects_b, acct_status(h, "desk-b")["connects"]))
    check(acct_status(h, "desk-a")["connects"] == connects_a + 10,
          "desk-a connects %d -> %d (10 drops)" % (
              connects_a, acct_status(h, "desk-a")["connects"]))
    check(h.up()["connects"] == connects_pub + 10,
          "public connects %d -> %d (10 drops)" % (
              connects_pub, h.up()["connects"]))

    # exsim's own view of each account
    open_a = await direct_open(h, "acct-a", "secret-a")
    open_b = await direct_open(h, "acct-b", "secret-b")
    check(placed["a"] <= open_a and placed["b"] <= open_b,
          "orders placed are open at their own account")
    check(not (open_a & open_b), "an order in both accounts")
    await asyncio.sleep(0.5)
    for name, c in bots.items():
        mine = open_a if acct[name] == "a" else open_b
        other = open_b if acct[name] == "a" else open_a
        seen = set()
        for ch, m in c.notes:
            if ch == ORDERS:
                d = m["params"]["data"]
                for o in (d if isinstance(d, list) else [d]):
                    seen.add(o["order_id"])
        check(not (seen & other), "%s saw %d orders of the other account"
              % (name, len(seen & other)))
        check(placed[acct[name]] <= seen | mine, "%s: orders" % name)
        r = await c.call("private/get_open_orders_by_instrument",
                         {"instrument_name": BTC}, id="open")
        got = set(o["order_id"] for o in r["result"])
        check(got == mine, "%s: open orders through exgate %d, exsim %d"
              % (name, len(got), len(mine)))
        check(chain_ok(c), "%s: the public book chain broke" % name)
    for name in ("bot-b1", "bot-b2"):
        gaps = [m for m in bots[name].other if isinstance(m, dict)
                and m.get("method") == "exgate/gap"
                and "user." in json.dumps(m)]
        check(not gaps, "%s got gap notices on its account: %r"
              % (name, gaps[:2]))

    # /metrics: each account's connection under its own name
    with urllib.request.urlopen("http://127.0.0.1:%d/metrics"
                                % h.admin_port, timeout=5) as r:
        text = r.read().decode()
    for want in ('exgate_upstream_up{upstream="sim/desk-a"} 1',
                 'exgate_upstream_up{upstream="sim/desk-b"} 1',
                 'exgate_upstream_connects_total{upstream="sim/desk-a"} %d'
                 % (connects_a + 10)):
        check(want in text, "/metrics lacks %r" % want)
    if shutil.which("promtool"):
        p = subprocess.run(["promtool", "check", "metrics"], input=text,
                           capture_output=True, text=True, timeout=30)
        check(p.returncode == 0, "promtool: %s%s" % (p.stdout, p.stderr))

    # the other account's order: refused as exsim refuses it
    victim = sorted(open_a)[0]
    r = await bots["bot-b1"].call("private/cancel", {"order_id": victim},
                                  id="steal")
    check(r.get("error", {}).get("code") == 11044,
          "cancel of another account's order: %r" % r)
    check(victim in await direct_open(h, "acct-a", "secret-a"),
          "the other account's order was cancelled")

    # fills: each account's position is its own
    r = await bots["bot-a1"].call("private/buy", {
        "instrument_name": BTC, "amount": 10, "type": "market"}, id="mkt")
    check(r.get("result", {}).get("order", {}).get("order_state")
          == "filled", "desk-a market buy: %r" % r)
    r = await bots["bot-b1"].call("private/sell", {
        "instrument_name": BTC, "amount": 20, "type": "market"}, id="mkt")
    check(r.get("result", {}).get("order", {}).get("order_state")
          == "filled", "desk-b market sell: %r" % r)
    for name, want in (("bot-a2", 10), ("bot-b2", -20)):
        r = await bots[name].call("private/get_position",
                                  {"instrument_name": BTC}, id="pos")
        check(r.get("result", {}).get("size") == want,
              "%s: position %r, want %d" % (name, r, want))

    # a desk-a bot with its own cancel-on-disconnect leaves
    c = WSClient("bot-a3")
    await c.connect(h.ws_url)
    r = await login(c, "bot-a1")
    check("result" in r, "bot-a3 auth: %r" % r)
    r = await c.call("private/enable_cancel_on_disconnect", {}, id="cod")
    check(r.get("result") == "ok", "cod: %r" % r)
    mine = set()
    for k in range(3):
        r = await c.call("private/buy", {
            "instrument_name": BTC, "amount": 10, "type": "limit",
            "price": 50 + k}, id="cod-buy-%d" % k)
        mine.add(r["result"]["order"]["order_id"])
    before = await direct_open(h, "acct-a", "secret-a")
    check(mine <= before, "bot-a3's orders open")
    await c.close()
    end = asyncio.get_event_loop().time() + 5
    while True:
        now_open = await direct_open(h, "acct-a", "secret-a")
        if now_open == before - mine:
            break
        check(asyncio.get_event_loop().time() < end,
              "after bot-a3 left: %d open, want %d" % (
                  len(now_open), len(before - mine)))
        await asyncio.sleep(0.1)

    # reloads: the same conf; then desk-a's key changed (a wrong one)
    log_rot = len(h.log_lines(r"sim/desk-a.*rotat"))
    h.gate.send_signal(signal.SIGHUP)
    await asyncio.sleep(1.0)
    check(acct_status(h, "desk-a")["connects"] == connects_a + 10
          and acct_status(h, "desk-b")["connects"] == connects_b,
          "a reload with the same conf reconnected an account")
    with open(keyfile, "w") as f:
        f.write("wrong-secret\n")
    h.gate.send_signal(signal.SIGHUP)
    uh.wait_for(lambda: h.log_lines(r"sim/desk-a.*rotation.*fail"), 10,
                what="desk-a's rotation onto a wrong key to fail")
    check(len(h.log_lines(r"sim/desk-a.*rotat")) > log_rot,
          "no rotation of desk-a on its new key")
    check(acct_status(h, "desk-b")["connects"] == connects_b,
          "desk-a's key change touched desk-b")
    r = await bots["bot-a2"].call("private/get_position",
                                  {"instrument_name": BTC}, id="pos2")
    check(r.get("result", {}).get("size") == 10,
          "desk-a after the failed rotation: %r" % r)
    with open(keyfile, "w") as f:
        f.write("secret-a\n")
    h.gate.send_signal(signal.SIGHUP)
    await asyncio.sleep(0.5)
    check(not any(c.closed for c in bots.values()),
          "a bot was closed by a reload")

    # a reload that adds desk-c and removes desk-b
    uh.wait_for(lambda: acct_status(h, "desk-a")["state"] == "ready", 10,
                what="desk-a ready")
    connects_a = acct_status(h, "desk-a")["connects"]
    connects_pub = h.up()["connects"]
    path = os.path.join(h.tmp, "exgate.conf")
    with open(path) as f:
        conf = f.read()
    conf = conf.replace(
        "    account desk-b { auth client_signature acct-b env:XG_T_ACCT_B; }",
        "    account desk-c { auth client_credentials acct-c env:XG_T_ACCT_C; }")
    conf = conf.replace("account=desk-b;", "account=desk-c;")
    with open(path, "w") as f:
        f.write(conf)
    h.gate.send_signal(signal.SIGHUP)
    for name in ("bot-b1", "bot-b2"):
        await bots[name].wait_closed(5)
    check(bots["bot-b1"].closed[0] == 1012,
          "bot-b1 of the removed account: %r" % (bots["bot-b1"].closed,))
    await wait_ready_all(h)
    check([a["account"] for a in h.up()["accounts"]] == ["desk-a", "desk-c"],
          "accounts after the reload: %r" % [
              a["account"] for a in h.up()["accounts"]])
    c = WSClient("bot-c")
    await c.connect(h.ws_url)
    r = await login(c, "bot-b1")        # its credentials name desk-c now
    check("result" in r, "bot-b1 on desk-c: %r" % r)
    r = await c.call("private/buy", {"instrument_name": BTC, "amount": 10,
                                     "type": "limit", "price": 77}, id="c")
    oid = r.get("result", {}).get("order", {}).get("order_id")
    check(oid in await direct_open(h, "acct-c", "secret-c"),
          "desk-c's order: %r" % r)
    check(acct_status(h, "desk-a")["connects"] == connects_a
          and h.up()["connects"] == connects_pub,
          "the account reload reconnected desk-a or the public connection: "
          "%d->%d, %d->%d" % (connects_a, acct_status(h, "desk-a")["connects"],
                             connects_pub, h.up()["connects"]))
    check(not bots["bot-a1"].closed and not bots["bot-a2"].closed,
          "a desk-a bot was closed by the account reload")
    await c.close()

    print("accounts: %d orders at desk-a, %d at desk-b, %d outcome unknown, "
          "20 drops" % (len(open_a), len(open_b), unknown))
    for c in list(bots.values()) + [n, z]:
        await c.close()


if __name__ == "__main__":
    gh.run("gateway_accounts", body)
