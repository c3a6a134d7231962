#!/usr/bin/python3
"""POST /upstreams/NAME/rotate on a live exgate, conf to answer to log:

- `admin_origin http://localhost:3000;` from the conf is what the admin
  endpoint accepts: a POST with that Origin or with none starts a
  rotation (202, {upstream, rotation, from, to}), one with another Origin
  (or two Origin headers) gets 403 and opens nothing at exsim;
- 404 for an unknown upstream, 405 with `Allow: POST` for GET and
  DELETE, 409 with the reason for an upstream that is not ready;
- the upstream is `protocol raw`, which cannot rotate yet: the new
  connection reaches exsim (connections_total 2, 2 at once) and is closed
  with 1000 at once; the primary serves on (same connection id, ready,
  not a disconnect), /status counts rotations_failed 1 and lists one
  connection {id 1, primary, ready}; no retry follows;
- every POST is in the log with the peer address (the client's own
  port) and the answer, and the rotation's start and end with both ids.
"""

import http.client
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from upstream_harness import check, free_port, run, wait_for  # noqa: E402


def request(h, method, path, origins=()):
    """One request to the admin endpoint; returns (status, headers, body,
    the client's local port)."""
    c = http.client.HTTPConnection("127.0.0.1", h.admin_port, timeout=5)
    c.putrequest(method, path)
    for o in origins:
        c.putheader("Origin", o)
    c.putheader("Content-Length", "0")
    c.endheaders()
    port = c.sock.getsockname()[1]
    r = c.getresponse()
    body = r.read().decode()
    headers = dict(r.getheaders())
    c.close()
    return r.status, headers, body, port


def body(h):
    h.start_sim()
    dead = free_port()
    h.start_gate_conf(
        "admin_origin http://localhost:3000;\n"
        "admin_origin https://ops.example:8443;\n"
        "upstream sim {\n    url ws://127.0.0.1:%d/ws/api/v2;\n"
        "    protocol raw;\n"
        "    reconnect fixed { delay 50ms; }\n}\n"
        "upstream dead {\n    url ws://127.0.0.1:%d/ws;\n"
        "    protocol raw;\n    reconnect fixed { delay 10s; }\n}\n"
        % (h.ws_port, dead), level="info")
    h.wait_up(lambda u: u["state"] == "ready", 10, "ready")

    st, _, b, _ = request(h, "POST", "/upstreams/nope/rotate")
    check(st == 404, "unknown upstream: %d %s" % (st, b))
    for m in ("GET", "DELETE"):
        st, hd, b, _ = request(h, m, "/upstreams/sim/rotate")
        check(st == 405 and hd.get("Allow") == "POST",
              "%s: %d %r %s" % (m, st, hd, b))
    st, _, b, _ = request(h, "POST", "/upstreams/dead/rotate")
    check(st == 409, "dead upstream: %d %s" % (st, b))
    check(json.loads(b)["error"].startswith("not ready (state "),
          "409 body %s" % b)

    st, _, b, evil_port = request(h, "POST", "/upstreams/sim/rotate",
                                  ["http://evil.example"])
    check(st == 403, "foreign origin: %d %s" % (st, b))
    st, _, b, _ = request(h, "POST", "/upstreams/sim/rotate",
                          ["http://localhost:3000", "http://evil.example"])
    check(st == 403, "two origins: %d %s" % (st, b))
    st, _, b, _ = request(h, "POST", "/upstreams/sim/rotate",
                          ["http://localhost:3001"])
    check(st == 403, "another port: %d %s" % (st, b))
    time.sleep(0.2)
    stats = h.control("stats")
    check(stats.get("connections_total") == 1,
          "a refused POST opened something: %r" % stats)

    # no Origin: a script or curl
    st, _, b, port1 = request(h, "POST", "/upstreams/sim/rotate")
    check(st == 202, "no origin: %d %s" % (st, b))
    check(json.loads(b) == {"upstream": "sim", "rotation": 1, "from": 1,
                            "to": 2}, "202 body %s" % b)
    u = h.wait_up(lambda u: u["rotations_failed"] == 1
                  and len(u["connections"]) == 1, 10, "rotation 1 over")
    check(u["state"] == "ready" and u["connection_id"] == 1
          and u["disconnects"] == 0 and u["rotations"] == 0,
          "primary untouched: %r" % u)
    c0 = u["connections"][0]
    check(c0["id"] == 1 and c0["role"] == "primary"
          and c0["state"] == "ready" and c0["age_s"] > 0,
          "connections %r" % u["connections"])
    stats = h.control("stats")
    check(stats.get("connections_total") == 2
          and stats.get("max_concurrent") == 2, "exsim %r" % stats)

    # the listed Origin
    st, _, b, port2 = request(h, "POST", "/upstreams/sim/rotate",
                              ["https://ops.example:8443"])
    check(st == 202, "listed origin: %d %s" % (st, b))
    check(json.loads(b) == {"upstream": "sim", "rotation": 2, "from": 1,
                            "to": 3}, "202 body %s" % b)
    h.wait_up(lambda u: u["rotations_failed"] == 2
              and len(u["connections"]) == 1, 10, "rotation 2 over")
    time.sleep(0.3)   # and no retry of a rotation the protocol refuses
    check(h.control("stats").get("connections_total") == 3,
          "retried: %r" % h.control("stats"))

    def logged(pattern):
        return lambda: h.log_lines(pattern)
    wait_for(logged(r"admin: POST /upstreams/sim/rotate from "
                    r"127\.0\.0\.1:%d \(origin http://evil\.example\): 403 "
                    % evil_port), 5, what="the 403 in the log")
    wait_for(logged(r"admin: POST /upstreams/sim/rotate from "
                    r"127\.0\.0\.1:%d \(origin none\): 202 " % port1), 5,
             what="the 202 in the log")
    wait_for(logged(r"admin: POST /upstreams/sim/rotate from "
                    r"127\.0\.0\.1:%d \(origin https://ops\.example:8443\): "
                    r"202 " % port2), 5, what="the second 202 in the log")
    wait_for(logged(r"upstream sim#2: rotation #1 started \(admin request from "
                    r"127\.0\.0\.1:%d\): #1 -> #2$" % port1), 5,
             what="the start in the log")
    wait_for(logged(r"upstream sim#2: rotation #1 failed: #2 rotation not "
                    r"supported by this protocol yet \(raw\); #1 keeps "
                    r"serving"), 5, what="the failure in the log")
    wait_for(logged(r"upstream sim#2: rotation #1: #2 closed"), 5,
             what="the close in the log")


run("test_admin_rotate", body)
