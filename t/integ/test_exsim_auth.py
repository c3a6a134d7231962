"""exsim: public/auth grants and scopes (exchange-protocols.md A2).

client_credentials, client_signature (good, replayed nonce, stale and
future timestamp, bad signature), refresh_token; a connection-scope token
is dead on another connection (13009) and after its connection closes; a
session token works on a new connection and survives the first one; the
token expires after --expires-in; private/logout closes with no reply;
reject-auth; auth_ok/auth_fail and the grants answered ok in stats.
"""
import asyncio
import hashlib
import hmac
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from exsim_util import Exsim, Rpc, check, main, run  # noqa: E402

CID, SECRET = "test-id", "test-secret"


def creds(scope=None):
    p = {"grant_type": "client_credentials", "client_id": CID,
         "client_secret": SECRET}
    if scope:
        p["scope"] = scope
    return p


def sig(ts, nonce, data="", secret=SECRET):
    p = {"grant_type": "client_signature", "client_id": CID,
         "timestamp": ts, "nonce": nonce, "data": data,
         "signature": hmac.new(secret.encode(),
                               ("%d\n%s\n%s" % (ts, nonce, data)).encode(),
                               hashlib.sha256).hexdigest()}
    return p


def code(r):
    return r.get("error", {}).get("code")


# Long enough for the steps that use a token on a slow (sanitizer, loaded)
# machine; the expiry check waits from the token's issue, not a fixed nap.
EXPIRES = 4


def test():
    with Exsim("--client-id", CID, "--client-secret", SECRET,
               "--expires-in", str(EXPIRES), "--rate", "0") as sim:
        async def go():
            a = await Rpc.open(sim.url())
            r = await a.call("private/get_open_orders")
            check(code(r) == 13009, "private without auth %r" % r)

            r = await a.call("public/auth", dict(creds(), client_secret="x"))
            check(code(r) == 13004, "wrong secret %r" % r)
            r = await a.call("public/auth", dict(creds(), client_id="x"))
            check(code(r) == 13004, "wrong id %r" % r)
            r = await a.call("public/auth", {"grant_type": "password"})
            check(code(r) == -32602, "bad grant %r" % r)

            tok = await a.result("public/auth", dict(creds(), state="st1"))
            for k in ("access_token", "refresh_token", "expires_in", "scope",
                      "token_type"):
                check(k in tok, "auth result lacks %s: %r" % (k, tok))
            check(tok["token_type"] == "bearer"
                  and tok["expires_in"] == EXPIRES
                  and tok["state"] == "st1"
                  and "connection" in tok["scope"].split(), "auth %r" % tok)
            # the connection is authenticated, with or without the token
            await a.result("private/get_open_orders")
            await a.result("private/get_open_orders",
                           {"access_token": tok["access_token"]})

            # connection scope: dead on another connection
            b = await Rpc.open(sim.url())
            r = await b.call("private/get_open_orders",
                             {"access_token": tok["access_token"]})
            check(code(r) == 13009, "conn token on 2nd conn %r" % r)
            r = await b.call("public/auth", {"grant_type": "refresh_token",
                                             "refresh_token":
                                                 tok["refresh_token"]})
            check(code(r) == 13009, "conn refresh on 2nd conn %r" % r)

            # refresh on its own connection: a new pair, the old one retired
            new = await a.result("public/auth",
                                 {"grant_type": "refresh_token",
                                  "refresh_token": tok["refresh_token"]})
            check(new["access_token"] != tok["access_token"]
                  and new["refresh_token"] != tok["refresh_token"],
                  "refresh %r" % new)
            r = await a.call("private/get_open_orders",
                             {"access_token": tok["access_token"]})
            check(code(r) == 13009, "old access token after refresh %r" % r)
            r = await a.call("public/auth", {"grant_type": "refresh_token",
                                             "refresh_token":
                                                 tok["refresh_token"]})
            check(code(r) == 13009, "refresh token reused %r" % r)
            await a.result("private/get_open_orders",
                           {"access_token": new["access_token"]})

            # client_signature
            now = int(time.time() * 1000)
            r = await b.result("public/auth", sig(now, "n1", "hello"))
            check("access_token" in r, "signature %r" % r)
            c = await Rpc.open(sim.url())
            r = await c.call("public/auth", sig(now, "n1", "hello"))
            check(code(r) == 13009 and "nonce" in r["error"]["data"]["reason"],
                  "nonce replay %r" % r)
            r = await c.call("public/auth", sig(now - 61000, "n2"))
            check(code(r) == 13009
                  and "timestamp" in r["error"]["data"]["reason"],
                  "stale %r" % r)
            r = await c.call("public/auth", sig(now + 61000, "n3"))
            check(code(r) == 13009, "future timestamp %r" % r)
            r = await c.call("public/auth", sig(now, "n4", secret="wrong"))
            check(code(r) == 13009
                  and "signature" in r["error"]["data"]["reason"],
                  "bad signature %r" % r)
            p = sig(now, "n5")
            p["signature"] = p["signature"].upper()
            r = await c.call("public/auth", p)
            check(code(r) == 13009, "upper-case hex accepted %r" % r)
            p = sig(now, "n6")
            p["timestamp"] = str(now)
            r = await c.call("public/auth", p)
            check(code(r) == -32602, "string timestamp accepted %r" % r)
            r = await c.call("public/auth", sig(now, "n7"))
            check("result" in r, "fresh nonce %r" % r)
            ctok = r["result"]

            # session scope: survives the connection and works elsewhere
            s = await a.result("public/auth", creds("session:bot1"))
            check("session:bot1" in s["scope"].split(), "scope %r" % s)
            await a.close()
            await asyncio.sleep(0.2)
            d = await Rpc.open(sim.url())
            await d.result("private/get_open_orders",
                           {"access_token": s["access_token"]})
            # ...and authenticates that connection from then on
            await d.result("private/get_open_orders")
            s2 = await d.result("public/auth",
                                {"grant_type": "refresh_token",
                                 "refresh_token": s["refresh_token"]})
            s2_issued = time.monotonic()   # d's auth expires by then + 4 s
            check("session:bot1" in s2["scope"].split(), "session refresh")
            # fork_token: a session token opens another session
            f = await d.result("public/fork_token",
                               {"refresh_token": s2["refresh_token"],
                                "session_name": "bot2"})
            check("session:bot2" in f["scope"].split(), "fork %r" % f)
            await d.result("private/get_open_orders",
                           {"access_token": f["access_token"]})
            r = await d.call("public/fork_token",
                             {"refresh_token": ctok["refresh_token"],
                              "session_name": "bot3"})
            check(code(r) == 13009
                  and "forked" in r["error"]["data"]["reason"],
                  "fork of a connection token %r" % r)
            # a dead connection's token stays dead
            r = await d.call("private/get_open_orders",
                             {"access_token": new["access_token"]})
            check(code(r) == 13009, "token of a closed conn %r" % r)

            # expiry (--expires-in): d's auth (s2) has expired by now
            await asyncio.sleep(max(0.0, s2_issued + EXPIRES + 0.3
                                    - time.monotonic()))
            r = await d.call("private/get_open_orders")
            check(code(r) == 13009
                  and r["error"]["data"]["reason"] == "token has expired",
                  "expired %r" % r)

            # logout: no reply, the connection closes
            e = await Rpc.open(sim.url())
            await e.result("public/auth", creds())
            await e.send({"jsonrpc": "2.0", "id": 4242,
                          "method": "private/logout", "params": {}})
            await e.wait_closed(5)
            check(e.notes.empty() and e.noid.empty() and not e.unmatched,
                  "logout replied: %r" % e.unmatched)

            # reject-auth
            check(sim.control("reject-auth on")["ok"], "reject-auth on")
            r = await c.call("public/auth", creds())
            check(code(r) == 13004, "reject-auth %r" % r)
            check(sim.control("reject-auth off")["ok"], "reject-auth off")
            await c.result("public/auth", creds())
            for x in (b, c, d):
                await x.close()

        run(go())
        st = sim.stats()
        # ok: creds, refresh, sig, sig n7, session, session refresh, fork,
        #     logout conn, after reject-auth
        check(st["auth_ok"] == 9, "auth_ok %r" % st)
        # fail: 3 bad creds, conn refresh elsewhere, reused refresh,
        #       replay, stale, future, bad sig, upper, string ts, fork of
        #       a connection token, reject
        check(st["auth_fail"] == 13, "auth_fail %r" % st)
        # the public/auth grants answered ok (fork_token is not one)
        check(st["grants"] == {"client_credentials": 4, "refresh_token": 2,
                               "client_signature": 2}, "grants %r" % st)


main(test)
