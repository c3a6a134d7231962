"""Client auth, the upstream token refresh, and emulated per-client
cancel-on-disconnect, against exsim:

- wrong client credentials -> 13004; a private call before auth -> 13009;
  a private channel in public/subscribe is left out; client_signature
  (HMAC as Deribit) and the refresh_token grant work; a replayed
  client_signature nonce (same client_id, within the window) and a spent
  refresh token are refused with 13009;
- the upstream token is refreshed before expiry (exsim --expires-in 2)
  with the refresh_token grant, which exsim accepts (no fallback to a new
  client_credentials auth): no reconnect, private calls keep working;
- a client that enabled cancel-on-disconnect has the orders it placed
  cancelled by exgate when it disconnects; another client's order stays.
"""

import asyncio
import hashlib
import hmac
import os
import time

import gateway_harness as gh
from gateway_harness import check, WSClient, TCPClient

UPSTREAM = """    protocol deribit;
    auth client_credentials exsim env:XG_TEST_EXSIM_SECRET;
    auth_scope connection;
    cancel_on_disconnect on;
"""
MAIN = ("client_credentials bot env:XG_TEST_BOT_SECRET;\n"
        "client_credentials bot2 env:XG_TEST_BOT2_SECRET;\n")

BUY = {"instrument_name": "BTC-PERPETUAL", "amount": 10, "type": "limit",
       "price": 1000}


def creds(cid, secret):
    return {"grant_type": "client_credentials", "client_id": cid,
            "client_secret": secret}


async def body(h):
    os.environ["XG_TEST_EXSIM_SECRET"] = "exsim-secret"
    os.environ["XG_TEST_BOT_SECRET"] = "bot-secret"
    os.environ["XG_TEST_BOT2_SECRET"] = "bot2-secret"
    gh.start(h, UPSTREAM, MAIN, sim_args=("--expires-in", "2"))
    gh.wait_ready(h)
    conn0 = h.up()["connection_id"]
    a = await WSClient("ws-a").connect(h.ws_url)
    t = await TCPClient("tcp-t").connect(h.tcp_port)

    # before auth: private methods and channels are refused
    r = await a.call("private/get_positions", {"currency": "BTC"}, id=1)
    check(r.get("error", {}).get("code") == 13009, "before auth: %r" % r)
    r = await a.call("public/subscribe",
                     {"channels": ["user.orders.BTC-PERPETUAL.raw",
                                   "ticker.BTC-PERPETUAL.100ms"]}, id=2)
    check(r["result"] == ["ticker.BTC-PERPETUAL.100ms"],
          "private channel through public/subscribe: %r" % r)
    r = await a.call("public/auth", creds("bot", "wrong"), id=3)
    check(r.get("error", {}).get("code") == 13004, "wrong secret: %r" % r)
    r = await a.call("public/auth", creds("nobody", "bot-secret"), id=4)
    check(r.get("error", {}).get("code") == 13004, "unknown id: %r" % r)
    check("bot-secret" not in h.log() and "exsim-secret" not in h.log(),
          "a secret in the log")

    # client_credentials, then the refresh_token grant
    r = await a.call("public/auth", creds("bot", "bot-secret"), id=5)
    res = r["result"]
    check(res["token_type"] == "bearer" and res["access_token"]
          and res["refresh_token"], "auth result %r" % r)
    r = await a.call("public/auth", {"grant_type": "refresh_token",
                                     "refresh_token": res["refresh_token"]},
                     id=6)
    check("result" in r, "refresh grant %r" % r)
    # the refresh token is single-use: the spent one is refused, the new
    # one works once
    r2 = await a.call("public/auth", {"grant_type": "refresh_token",
                                      "refresh_token": res["refresh_token"]},
                      id=61)
    check(r2.get("error", {}).get("code") == 13009,
          "a spent refresh token: %r" % r2)
    new = r["result"]["refresh_token"]
    check(new != res["refresh_token"], "a new refresh token: %r" % r)
    r = await a.call("public/auth", {"grant_type": "refresh_token",
                                     "refresh_token": new}, id=62)
    check("result" in r, "the new refresh token: %r" % r)
    r2 = await a.call("public/auth", {"grant_type": "refresh_token",
                                      "refresh_token": new}, id=63)
    check(r2.get("error", {}).get("code") == 13009,
          "the new refresh token used twice: %r" % r2)
    r = await a.call("public/auth", {"grant_type": "refresh_token",
                                     "refresh_token": "xgr.bogus"}, id=7)
    check("error" in r, "a bogus refresh token was accepted: %r" % r)

    # client_signature over TCP, as Deribit computes it
    ts = int(time.time() * 1000)
    nonce = "abcd1234"
    sig = hmac.new(b"bot2-secret", ("%d\n%s\n" % (ts, nonce)).encode(),
                   hashlib.sha256).hexdigest()
    r = await t.call("public/auth", {"grant_type": "client_signature",
                                     "client_id": "bot2", "timestamp": ts,
                                     "nonce": nonce, "data": "",
                                     "signature": sig}, id="sig")
    check("result" in r, "client_signature %r" % r)
    bad = hmac.new(b"bot-secret", ("%d\n%s\n" % (ts, nonce)).encode(),
                   hashlib.sha256).hexdigest()
    t2 = await TCPClient("tcp-t2").connect(h.tcp_port)
    r = await t2.call("public/auth", {"grant_type": "client_signature",
                                      "client_id": "bot2", "timestamp": ts,
                                      "nonce": nonce, "signature": bad},
                      id="bad")
    check(r.get("error", {}).get("code") == 13004, "bad signature %r" % r)
    r = await t2.call("public/auth", {"grant_type": "client_signature",
                                      "client_id": "bot2",
                                      "timestamp": ts - 120000,
                                      "nonce": nonce, "signature": sig},
                      id="old")
    check(r.get("error", {}).get("code") == 13004, "stale timestamp %r" % r)
    # a nonce is single-use per client_id within the 60 s window: the
    # replayed request is refused on another connection and on the same
    signed = {"grant_type": "client_signature", "client_id": "bot2",
              "timestamp": ts, "nonce": nonce, "data": "", "signature": sig}
    r = await t2.call("public/auth", signed, id="replay")
    check(r.get("error", {}).get("code") == 13009, "replayed nonce %r" % r)
    r = await t.call("public/auth", signed, id="replay2")
    check(r.get("error", {}).get("code") == 13009,
          "replayed nonce, same connection %r" % r)
    check(len(h.log_lines("nonce already used")) == 2, "replays logged")
    # the same nonce under another client_id, and a new nonce, are fresh
    sig1 = hmac.new(b"bot-secret", ("%d\n%s\n" % (ts, nonce)).encode(),
                    hashlib.sha256).hexdigest()
    r = await t2.call("public/auth", dict(signed, client_id="bot",
                                          signature=sig1), id="other-id")
    check("result" in r, "the nonce of another client_id %r" % r)
    sig2 = hmac.new(b"bot2-secret", ("%d\n%s\n" % (ts, "n2")).encode(),
                    hashlib.sha256).hexdigest()
    r = await t2.call("public/auth", dict(signed, nonce="n2",
                                          signature=sig2), id="fresh")
    check("result" in r, "a fresh nonce %r" % r)

    # private calls with the local token in params work (it is stripped)
    r = await a.call("private/get_positions",
                     {"currency": "BTC", "access_token": res["access_token"]},
                     id=8)
    check("result" in r, "private call after auth: %r" % r)

    # cancel-on-disconnect, per client
    r = await t.call("private/enable_cancel_on_disconnect", {}, id=9)
    check(r["result"] == "ok", "enable COD %r" % r)
    r = await t.call("private/get_cancel_on_disconnect", {}, id=10)
    check(r["result"]["enabled"] is True, "get COD %r" % r)
    r1 = await t.call("private/buy", BUY, id=11)
    r2 = await t.call("private/buy", dict(BUY, price=1001), id=12)
    r3 = await a.call("private/buy", dict(BUY, price=1002), id=13)
    for r in (r1, r2, r3):
        check(r["result"]["order"]["order_state"] == "open", "buy %r" % r)
    check(h.control("stats")["orders_open"] == 3, "3 orders open")
    await t.close()
    gh.uh.wait_for(lambda: h.control("stats")["orders_open"] == 1, 5,
                   what="the COD client's two orders cancelled")
    check(len(h.log_lines("cancel-on-disconnect .*cancelling order")) == 2,
          "each cancel is logged")
    # a's order stays: it did not ask for cancel-on-disconnect
    r = await a.call("private/get_open_orders_by_instrument",
                     {"instrument_name": "BTC-PERPETUAL"}, id=14)
    check(len(r["result"]) == 1, "a's order: %r" % r)

    # the upstream token (2 s) was refreshed without a reconnect
    await asyncio.sleep(4.5)
    st = h.control("stats")
    check(st["requests"].get("public/auth", 0) >= 3,
          "refreshes: %r" % st["requests"])
    # each refresh used the refresh_token grant and exsim accepted it: the
    # full authentication (the fallback after a refused refresh) ran once
    check(st["grants"].get("refresh_token", 0) >= 2
          and st["grants"].get("client_credentials") == 1
          and st["auth_fail"] == 0, "grants at exsim %r, auth_fail %r"
          % (st["grants"], st["auth_fail"]))
    check(not h.log_lines("token refresh refused"), "a refresh was refused")
    check(h.up()["connection_id"] == conn0, "a reconnect happened")
    check(len(h.log_lines("refreshing the token")) >= 2, "refresh logged")
    r = await a.call("private/get_positions", {"currency": "BTC"}, id=15)
    check("result" in r, "private call after refreshes: %r" % r)
    check("bot-secret" not in h.log() and "exsim-secret" not in h.log(),
          "a secret in the log")
    s = h.status()
    check("secret" not in str(s), "a secret in /status")
    await a.close()
    await t2.close()


def example_conf_checks():
    """conf/examples/trading.conf passes `exgate -t` with its env set."""
    import subprocess
    env = dict(os.environ, DERIBIT_CLIENT_ID="id", DERIBIT_CLIENT_SECRET="s",
               BOT_MM_SECRET="m", BOT_HEDGE_SECRET="h")
    path = os.path.join(gh.uh.SRCDIR, "conf", "examples", "trading.conf")
    p = subprocess.run([gh.uh.EXGATE, "-t", "-c", path], env=env,
                       capture_output=True, text=True, timeout=10)
    check(p.returncode == 0, "trading.conf: %s%s" % (p.stdout, p.stderr))
    del env["BOT_MM_SECRET"]
    p = subprocess.run([gh.uh.EXGATE, "-t", "-c", path], env=env,
                       capture_output=True, text=True, timeout=10)
    check(p.returncode != 0 and "BOT_MM_SECRET" in p.stderr,
          "an unset secret must fail the check: %s" % p.stderr)


async def body_all(h):
    example_conf_checks()
    await body(h)


gh.run("gateway_auth", body_all)
