#!/usr/bin/python3
"""An unresolvable host (a name under .invalid), a refused port and a TLS
failure (exsim serving a self-signed certificate the client does not
trust) each go through the same policy path: down with their reason,
"retry in" the policy's delay, again and again, and the reason in /status
last_error. A fourth upstream trusts that certificate (tls_ca) and gets
ready, so the TLS failure is the trust and nothing else; a fifth trusts it
by address. exsim saw the server name (SNI) "localhost" in every handshake
of the two by name, and none in those by address (RFC 6066)."""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from upstream_harness import check, free_port, run  # noqa: E402

POLICY = "    reconnect fixed { delay 150ms; }\n    connect_timeout 3s;\n"


def body(h):
    cert, key = h.make_cert()
    tls_sim = h.start_sim("--tls-cert", cert, "--tls-key", key)
    closed = free_port()
    h.start_gate_conf(
        "upstream baddns {\n    url ws://no-such-host.exgate-test.invalid"
        "/ws/api/v2;\n%s}\n"
        "upstream refused {\n    url ws://127.0.0.1:%d/ws/api/v2;\n%s}\n"
        "upstream untrusted {\n    url wss://localhost:%d/ws/api/v2;\n%s}\n"
        "upstream trusted {\n    url wss://localhost:%d/ws/api/v2;\n"
        "    tls_ca %s;\n%s}\n"
        "upstream trusted_ip {\n    url wss://127.0.0.1:%d/ws/api/v2;\n"
        "    tls_ca %s;\n%s}\n"
        % (POLICY, closed, POLICY, tls_sim.ws_port, POLICY, tls_sim.ws_port,
           cert, POLICY, tls_sim.ws_port, cert, POLICY))

    want = {
        "baddns": ("dns", "resolve", "name", "nodename", "nxdomain"),
        "refused": ("refused",),
        "untrusted": ("certificate", "verify"),
    }
    for name, words in want.items():
        u = h.wait_up(lambda u: u["failures_in_row"] >= 3, 10,
                      "%s failing repeatedly" % name, name=name)
        err = (u["last_error"] or "").lower()
        check(any(w in err for w in words),
              "%s: last_error %r lacks %r" % (name, u["last_error"], words))
        check(u["state"] in ("down", "connecting", "tls", "handshake"),
              "%s: state %r" % (name, u["state"]))
        check(u["connects"] == 0, "%s: connects %r" % (name, u))
        check(u["reconnect_attempts"] >= 2, "%s: attempts %r" % (name, u))
        lines = h.log_lines(r"upstream %s#\d+: \w+ -> down \(.+\), retry in "
                            r"150ms" % name)
        check(len(lines) >= 3, "%s: %d policy lines" % (name, len(lines)))

    u = h.wait_up(lambda u: u["state"] == "ready", 10, "trusted ready",
                  name="trusted")
    check(u["connection_id"] == 1, "trusted: %r" % u)
    u = h.wait_up(lambda u: u["state"] == "ready", 10, "trusted_ip ready",
                  name="trusted_ip")
    check(u["connection_id"] == 1, "trusted_ip: %r" % u)

    # SNI: "localhost" from each handshake of untrusted and trusted, none
    # from trusted_ip's; the handshakes still under way count as well
    sni = tls_sim.control("stats")["tls_sni"]
    check(set(sni) == {"localhost", "(none)"} and sni["localhost"] >= 4
          and sni["(none)"] >= 1, "server names exsim saw: %r" % sni)


run("upstream_errors", body)
