"""bnsim: --tls-cert/--tls-key serve wss:// and https:// (a throwaway
self-signed certificate made by $OPENSSL_BIN, verified by the client);
a key that does not match is a start-up error (exit 1, no ready line);
bad options exit 2, a bad symbol 1.
"""
import http.client
import json
import os
import ssl
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bnsim_util import BNSIM, Bn, Bnsim, check, main, run  # noqa: E402

OPENSSL = os.environ.get("OPENSSL_BIN") or "openssl"


def test():
    d = tempfile.mkdtemp(prefix="bnsim-tls-")
    cert, key = os.path.join(d, "cert.pem"), os.path.join(d, "key.pem")
    subprocess.run([OPENSSL, "req", "-x509", "-newkey", "rsa:2048", "-nodes",
                    "-keyout", key, "-out", cert, "-days", "1", "-subj",
                    "/CN=localhost", "-addext",
                    "subjectAltName=DNS:localhost,IP:127.0.0.1"],
                   check=True, capture_output=True)
    ctx = ssl.create_default_context(cafile=cert)
    with Bnsim("--tls-cert", cert, "--tls-key", key, "--rate", "50") as sim:
        async def go():
            c = await Bn.open(sim.url("/stream?streams=btcusdt@trade")
                              .replace("ws://", "wss://"), ssl=ctx)
            s, dd = await c.data()
            check(s == "btcusdt@trade" and dd["e"] == "trade", "wss data")
            await c.close()
        run(go())
        h = http.client.HTTPSConnection("127.0.0.1", sim.rest_port,
                                        context=ctx, timeout=5)
        h.request("GET", "/api/v3/depth?symbol=BTCUSDT&limit=5")
        r = h.getresponse()
        body = json.loads(r.read())
        check(r.status == 200 and len(body["bids"]) == 5
              and r.getheader("X-MBX-USED-WEIGHT-1M") == "5", "https depth")
        h.close()
    other = os.path.join(d, "other.pem")
    subprocess.run([OPENSSL, "genrsa", "-out", other, "2048"], check=True,
                   capture_output=True)
    p = subprocess.run([BNSIM, "--tls-cert", cert, "--tls-key", other],
                       capture_output=True, text=True, timeout=20)
    check(p.returncode == 1 and "tls" in p.stderr and "ready" not in p.stdout
          and "Traceback" not in p.stderr, "mismatched key: rc %r %r"
          % (p.returncode, p.stderr))
    for args, rc, word in ((["--rate", "x"], 2, "--rate"),
                           (["--market", "coinm"], 2, "--market"),
                           (["--tls-cert", cert], 2, "--tls-key"),
                           (["--symbols", "FOO"], 1, "FOO")):
        p = subprocess.run([BNSIM] + args, capture_output=True, text=True,
                           timeout=20)
        check(p.returncode == rc and word in p.stderr
              and "Traceback" not in p.stderr, "%r: rc %r %r"
              % (args, p.returncode, p.stderr))


if __name__ == "__main__":
    main(test)
