"""Per-listener client policy on the `listen` line:

- `client_credentials=ID:SECRET` replaces the top-level list for that
  listener (the top-level ids do not work there, its own do not work
  elsewhere);
- `client_auth=off` on one listener trusts its clients (private methods
  without public/auth) while another listener still requires auth;
- a bad key is a conf error with file and line.
"""

import os
import subprocess

import gateway_harness as gh
from gateway_harness import check, WSClient, TCPClient, free_port


def creds(cid, secret):
    return {"grant_type": "client_credentials", "client_id": cid,
            "client_secret": secret}


async def body(h):
    os.environ["XG_TEST_BOT_SECRET"] = "bot-secret"
    os.environ["XG_TEST_TCPBOT_SECRET"] = "tcpbot-secret"
    os.environ["XG_TEST_EXSIM_SECRET"] = "exsim-secret"
    trusted = free_port()
    h.start_sim()
    gh.start(h, "    protocol deribit;\n"
                "    auth client_credentials exsim env:XG_TEST_EXSIM_SECRET;\n",
             "client_credentials bot env:XG_TEST_BOT_SECRET;\n"
             "listen 127.0.0.1:%d tcp upstream=sim client_auth=off;\n"
             % trusted,
             tcp_extra=" client_credentials=tcpbot:env:XG_TEST_TCPBOT_SECRET")
    gh.wait_ready(h)
    w = await WSClient("ws").connect(h.ws_url)
    t = await TCPClient("tcp").connect(h.tcp_port)
    u = await TCPClient("trusted").connect(trusted)

    r = await w.call("public/auth", creds("tcpbot", "tcpbot-secret"), id=1)
    check(r.get("error", {}).get("code") == 13004, "ws with tcpbot %r" % r)
    r = await w.call("public/auth", creds("bot", "bot-secret"), id=2)
    check("result" in r, "ws with bot %r" % r)
    r = await t.call("public/auth", creds("bot", "bot-secret"), id=3)
    check(r.get("error", {}).get("code") == 13004, "tcp with bot %r" % r)
    r = await t.call("private/get_positions", {"currency": "BTC"}, id=4)
    check(r.get("error", {}).get("code") == 13009, "tcp before auth %r" % r)
    r = await t.call("public/auth", creds("tcpbot", "tcpbot-secret"), id=5)
    check("result" in r, "tcp with tcpbot %r" % r)
    r = await u.call("private/get_positions", {"currency": "BTC"}, id=6)
    check("result" in r, "trusted listener %r" % r)
    check("tcpbot-secret" not in h.log(), "a secret in the log")
    for c in (w, t, u):
        await c.close()

    # a bad key is reported with file and line
    path = os.path.join(h.tmp, "bad.conf")
    with open(path, "w") as f:
        f.write("upstream s {\n    url ws://127.0.0.1:1/ws/api/v2;\n"
                "    protocol deribit;\n}\n"
                "listen 127.0.0.1:1 tcp upstream=s client_credentials=nocolon;\n"
                "listen 127.0.0.1:2 tcp upstream=s client_auth=maybe;\n")
    p = subprocess.run([gh.uh.EXGATE, "-t", "-c", path], capture_output=True,
                       text=True, timeout=10)
    check(p.returncode != 0 and "bad.conf:5:" in p.stderr
          and "bad.conf:6:" in p.stderr, "conf errors: %s" % p.stderr)


gh.run("gateway_listen_auth", body)
