#!/usr/bin/python3
"""Logs that can be followed (issue 14), against exsim, in both formats.

exgate runs at debug with upstream auth (client_credentials from env:),
client auth, request_timeout 1s and a reconnect of 50ms; the test drives
a client request that is answered, one that times out, one queued while
the upstream is down, a read-only request and an order in flight when
exsim drops the connection (replayed / outcome unknown), and a rotation
asked on the admin endpoint. Then, in the text format:

- every line that names the upstream, from its first connection on, says
  "upstream sim#N:" (N a connection id), and a rotation's lines name the
  connection they are about (the new one for started/failed/done, the
  old one for its close);
- one grep for "request N" (N the upstream id of a client's request)
  finds the line of its arrival and send, with the client and the
  client's own id, and the line of its end (answered, timed out and its
  late answer dropped, outcome unknown, or lost and replayed: the
  replay's send line names N, and one grep for the replay's id finds its
  answer); a queued request's send line says how long it waited, after
  its "queued" line;
- a client's subscribe is logged when it arrives and when the answer to
  the subscribe batch that confirmed its channel answers it, with that
  batch's id: one grep finds the batch's send, its answer, and the client;
- nothing about a request that goes well is logged at the default level
  (info): every request line but the trouble ones is at debug.

The same drive with `error_log stderr debug json;`: every line parses as
one JSON object with time, level and message; a line about the upstream
carries upstream and connection (after the first connection), a request
line also client and request, and no field is empty; a request's lines
are found by its request field.

In both runs no secret reaches the log: the upstream's and the bot's
client secrets, the access and refresh tokens exgate handed the bot, and
anything shaped like the tokens exsim issued to exgate.
"""

import asyncio
import http.client
import json
import os
import re

import gateway_harness as gh
from gateway_harness import check, WSClient
from upstream_harness import wait_for

SIM_SECRET = "sImSeCrEt-7f3a9c"
BOT_SECRET = "bOtSeCrEt-51d2e8"

UPSTREAM = """    protocol deribit;
    auth client_credentials exsim env:XG_TEST_LOGS_SIM;
    request_timeout 1s;
    reconnect fixed { delay 50ms; }
"""
MAIN = "client_credentials bot env:XG_TEST_LOGS_BOT;\n"
BUY = {"instrument_name": "BTC-PERPETUAL", "amount": 10, "type": "limit",
       "price": 1000}


def rotate(h):
    c = http.client.HTTPConnection("127.0.0.1", h.admin_port, timeout=5)
    c.request("POST", "/upstreams/sim/rotate",
              headers={"Content-Length": "0"})
    r = c.getresponse()
    body = r.read().decode()
    c.close()
    check(r.status == 202, "rotate: %d %s" % (r.status, body))
    return json.loads(body)


async def drive(h, json_format):
    """Runs the scenario; returns what the checks need: the bot's tokens,
    the client ids of the requests, the rotation's {from, to}."""
    gh.start(h, UPSTREAM, MAIN, level="debug json" if json_format else "debug",
             sim_args=("--client-id", "exsim", "--client-secret", SIM_SECRET))
    gh.wait_ready(h)
    a = await WSClient("bot").connect(h.ws_url)
    r = await a.call("public/auth", {"grant_type": "client_credentials",
                                     "client_id": "bot",
                                     "client_secret": BOT_SECRET}, id=1)
    res = r.get("result") or {}
    check(res.get("access_token") and res.get("refresh_token"),
          "bot auth: %r" % r)
    tokens = [res["access_token"], res["refresh_token"]]

    # a subscribe: answered with the exchange's answer to a batch
    r = await a.call("public/subscribe",
                     {"channels": ["trades.BTC-PERPETUAL.raw"]}, id=76)
    check(r.get("result") == ["trades.BTC-PERPETUAL.raw"], "subscribe: %r" % r)

    # answered
    r = await a.call("public/get_time", {}, id=77)
    check("result" in r, "get_time: %r" % r)

    # timed out (request_timeout 1s)
    h.control("delay public/get_time 1800")
    r = await a.call("public/get_time", {}, id=78, timeout=5)
    check(r.get("error", {}).get("code") == 13888, "not timed out: %r" % r)
    await asyncio.sleep(1.2)        # its late answer comes and goes

    # in flight when the connection drops: a read-only request is sent
    # again, an order gets "outcome unknown"
    h.control("delay public/get_time 3000")
    h.control("delay private/buy 3000")
    k79 = await a.request("public/get_time", {}, id=79)
    k80 = await a.request("private/buy", BUY, id=80)
    await asyncio.sleep(0.3)
    h.control("delay public/get_time 0")
    h.control("delay private/buy 0")
    h.control("refuse on")
    h.control("drop")
    h.wait_up(lambda u: u["state"] != "ready", 5, "upstream down")
    r80 = await a.answer(k80, 5)
    check(r80.get("error", {}).get("code") == 13028,
          "order in flight: %r" % r80)
    # queued while down
    k81 = await a.request("public/get_time", {}, id=81)
    await asyncio.sleep(0.3)
    h.control("refuse off")
    r79 = await a.answer(k79, 10)
    check("result" in r79, "replayed get_time: %r" % r79)
    r81 = await a.answer(k81, 10)
    check("result" in r81, "queued get_time: %r" % r81)
    gh.wait_ready(h)

    # a rotation (whatever the module makes of it)
    rot = rotate(h)
    await asyncio.sleep(1.0)
    r = await a.call("public/get_time", {}, id=82)
    check("result" in r, "get_time after the rotation: %r" % r)
    await a.close()
    await asyncio.sleep(0.2)
    return tokens, rot


# what exsim issues as access and refresh tokens (t/sim/exsim_auth.c):
# the ones exgate holds for the upstream, never seen by the test
SIM_TOKEN = re.compile(r"\d{13}\.[A-Za-z0-9_-]{8}\.[A-Za-z0-9_-]{32}")


def check_secrets(h, tokens):
    log = h.log()
    for s in [SIM_SECRET, BOT_SECRET] + tokens:
        check(s not in log, "a secret in the log: %s..." % s[:6])
    m = SIM_TOKEN.search(log)
    check(m is None, "an exsim token in the log: %s..."
          % (m.group(0)[:16] if m else ""))


# ---- text --------------------------------------------------------------

LINE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z \[(\w+)\] (.*)$")


def text_lines(h):
    out = []
    for l in h.log().splitlines():
        m = LINE.match(l)
        if m:
            out.append((m.group(1), m.group(2)))
    return out


def req_lines(lines, n):
    return [(lvl, t) for lvl, t in lines
            if re.search(r"\brequest %d\b" % n, t)]


def req_id(lines, what):
    """The upstream id of the request whose send line contains WHAT."""
    for _, t in lines:
        m = re.search(r"\brequest (\d+): %s" % re.escape(what), t)
        if m:
            return int(m.group(1))
    raise gh.uh.Fail("no line for %r" % what)


def check_text(h, rot):
    lines = text_lines(h)
    check(len(lines) > 50, "a short log: %d lines" % len(lines))
    first = next((i for i, (_, t) in enumerate(lines)
                  if t.endswith(": idle -> connecting")), None)
    check(first is not None, "no first connection in the log")
    named = [t for _, t in lines[first:] if re.search(r"\bupstream sim\b", t)]
    bad = [t for t in named if not re.match(r"upstream sim#\d+: ", t)]
    check(not bad, "lines naming the upstream without its connection: %r"
          % bad[:5])
    check(len(named) > 40, "few lines name the upstream: %d" % len(named))

    # a rotation's lines name the connection they are about
    rot_lines = [t for t in named if re.search(r": rotation #1\b", t)]
    check(rot_lines, "no line about rotation #1")
    for t in rot_lines:
        m = (re.search(r"rotation #1 started .*-> #(\d+)$", t)
             or re.search(r"rotation #1 failed: #(\d+) ", t)
             or re.search(r"rotation #1 done in \d+ms: #(\d+) primary", t)
             or re.search(r"rotation #1: #(\d+) closed", t))
        if m:
            check(t.startswith("upstream sim#%s: " % m.group(1)),
                  "a rotation line names another connection: %s" % t)
    check(any(t.startswith("upstream sim#%d: rotation #1 started" % rot["to"])
              for t in rot_lines), "no start of rotation #1 on #%d: %r"
          % (rot["to"], rot_lines))
    check(any(re.match(r"upstream sim#%d: \w+ -> \w+ \(rotating, rotation "
                       r"#1" % rot["to"], t) for t in named),
          "the rotating connection's transitions do not name it")

    client = r"upstream sim#\d+: client ws#\d+ 127\.0\.0\.1:\d+: "

    # answered: arrival (sent at once) and answer, one grep
    n = req_id(lines, "public/get_time sent (client id 77)")
    g = req_lines(lines, n)
    check(len(g) == 2, "request %d (id 77): %r" % (n, g))
    check(re.match(client + r"request %d: public/get_time sent \(client id "
                   r"77\)$" % n, g[0][1]), "arrival: %r" % (g[0],))
    check(re.match(client + r"request %d: public/get_time answered in \d+ ms$"
                   % n, g[1][1]), "answer: %r" % (g[1],))
    check(g[0][0] == "debug" and g[1][0] == "debug", "levels %r" % g)

    # a client's subscribe: its answer names the batch request, whose
    # grep finds the batch's send and answer and the client's answer
    check(any(re.match(client + r"subscribe \(client id 76\) of 1 channels "
                       r"waiting for the exchange", t) for _, t in lines),
          "no arrival of the subscribe (id 76)")
    m = [re.match(client + r"request (\d+): subscribe \(client id 76\) of 1 "
                  r"channels answered: 1 confirmed$", t) for _, t in lines]
    m = [x for x in m if x]
    check(len(m) == 1, "the subscribe's (id 76) answer: %r" % m)
    g = [t for _, t in req_lines(lines, int(m[0].group(1)))]
    check(len(g) == 3 and re.search(r"/subscribe sent$", g[0])
          and re.search(r"/subscribe answered in \d+ ms$", g[1]),
          "the subscribe batch %s: %r" % (m[0].group(1), g))

    # timed out
    n = req_id(lines, "public/get_time sent (client id 78)")
    g = req_lines(lines, n)
    check(any(re.match(client + r"request %d: public/get_time timed out "
                       r"after 1000 ms$" % n, t) and lvl == "warn"
              for lvl, t in g), "request %d (id 78) timed out: %r" % (n, g))
    check(re.match(r"upstream sim#\d+: request %d: answer to a request no "
                   r"longer in flight dropped$" % n, g[-1][1]),
          "request %d (id 78): its late answer: %r" % (n, g))

    # replayed: the lost line and the replay's send carry the old id, the
    # replay's own id finds its answer
    n = req_id(lines, "public/get_time sent (client id 79)")
    g = req_lines(lines, n)
    check(any(lvl == "info" and re.match(
        client + r"request %d: public/get_time lost with the connection"
        % n, t) for lvl, t in g), "request %d (id 79) lost: %r" % (n, g))
    rep = [t for _, t in g if "replay of request %d" % n in t]
    check(len(rep) == 1, "request %d (id 79): its replay %r" % (n, g))
    m = re.search(r"request (\d+): public/get_time sent \(client id 79\), "
                  r"\d+ ms in the queue, replay of request %d$" % n, rep[0])
    check(m, "replay line %r" % rep[0])
    g2 = req_lines(lines, int(m.group(1)))
    check(any(re.search(r"request %s: public/get_time answered" % m.group(1),
                        t) for _, t in g2), "the replay's answer: %r" % g2)

    # outcome unknown
    n = req_id(lines, "private/buy sent (client id 80)")
    g = req_lines(lines, n)
    check(any(lvl == "warn" and re.match(
        client + r"request %d: private/buy in flight when the connection "
        r"dropped: outcome unknown$" % n, t) for lvl, t in g),
        "request %d (id 80): %r" % (n, g))

    # queued while down: "queued" names the client's id (no upstream id
    # yet), the send says how long it waited
    check(any(re.match(client + r"public/get_time queued \(client id 81\): "
                       r"the upstream is not ready", t) for _, t in lines),
          "no queued line for id 81")
    n = req_id(lines, "public/get_time sent (client id 81), ")
    g = req_lines(lines, n)
    check(re.search(r"sent \(client id 81\), \d+ ms in the queue$", g[0][1])
          and "answered in" in g[-1][1], "request %d (id 81): %r" % (n, g))

    # at the default level a good request leaves nothing
    good = [t for lvl, t in lines if lvl != "debug"
            and re.search(r"\brequest \d+: \S+ (sent|answered)\b", t)]
    check(not good, "request lines above debug: %r" % good[:3])


# ---- json --------------------------------------------------------------

FIELDS = {"time", "level", "upstream", "connection", "client", "peer",
          "request", "message"}


def check_json(h):
    objs = []
    for l in h.log().splitlines():
        if not l.startswith("{"):
            # only what is not exgate's: a sanitizer's report
            check("Sanitizer" not in l, "sanitizer: %s" % l)
            continue
        try:
            o = json.loads(l)
        except ValueError as e:
            raise gh.uh.Fail("not JSON (%s): %r" % (e, l))
        check(isinstance(o, dict), "not an object: %r" % l)
        objs.append(o)
    check(len(objs) > 50, "a short json log: %d objects" % len(objs))
    for o in objs:
        check({"time", "level", "message"} <= set(o), "fields: %r" % o)
        check(set(o) <= FIELDS, "unknown field: %r" % o)
        check(re.match(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$", o["time"])
              and o["level"] in ("error", "warn", "info", "debug"),
              "time/level %r" % o)
        check(all(o[k] not in ("", 0) for k in o if k != "message"),
              "an empty field: %r" % o)
        check(not re.match(r"upstream \w+#?\d*: ", o["message"]),
              "the context left in the message: %r" % o)
    first = next((i for i, o in enumerate(objs)
                  if o["message"] == "idle -> connecting"), None)
    check(first is not None, "no first connection in the log")
    ups = [o for o in objs[first:] if "upstream" in o]
    check(len(ups) > 40 and all(isinstance(o.get("connection"), int)
                                for o in ups),
          "upstream lines without a connection: %r"
          % [o for o in ups if "connection" not in o][:3])
    reqs = [o for o in objs if "request" in o]
    check(reqs, "no request line")
    for o in reqs:
        check("upstream" in o and "connection" in o, "request line %r" % o)
    sent = [o for o in reqs if o["message"] == "public/get_time sent "
            "(client id 77)"]
    check(len(sent) == 1 and isinstance(sent[0].get("client"), int)
          and re.match(r"127\.0\.0\.1:\d+$", sent[0].get("peer", "")),
          "the send of id 77: %r" % sent)
    same = [o for o in reqs if o["request"] == sent[0]["request"]]
    check(len(same) == 2 and same[1]["message"].startswith(
        "public/get_time answered in ")
        and same[1]["client"] == sent[0]["client"],
        "request %d: %r" % (sent[0]["request"], same))
    full = [o for o in objs if FIELDS - {"peer"} <= set(o)]
    check(full, "no line with every field")
    clients = [o for o in objs if o["message"] == "open" and "client" in o]
    check(clients and "peer" in clients[0], "the client's open: %r"
          % clients)


async def body_text(h):
    os.environ["XG_TEST_LOGS_SIM"] = SIM_SECRET
    os.environ["XG_TEST_LOGS_BOT"] = BOT_SECRET
    tokens, rot = await drive(h, False)
    check_text(h, rot)
    check_secrets(h, tokens)


async def body_json(h):
    os.environ["XG_TEST_LOGS_SIM"] = SIM_SECRET
    os.environ["XG_TEST_LOGS_BOT"] = BOT_SECRET
    tokens, _ = await drive(h, True)
    check_json(h)
    check_secrets(h, tokens)


if __name__ == "__main__":
    import sys
    rc = 0
    for name, fn in (("logs-text", body_text), ("logs-json", body_json)):
        try:
            gh.run(name, fn)
        except SystemExit as e:
            rc = rc or (e.code or 0)
    sys.exit(rc)
