"""exsim: --tls-cert/--tls-key serve wss:// (with a throwaway self-signed
certificate made by $OPENSSL_BIN) and count the server names (SNI) the
handshakes carried in stats tls_sni; a bad key pair is a start-up error.
"""
import os
import ssl
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from exsim_util import EXSIM, Exsim, Rpc, check, main, run  # noqa: E402

OPENSSL = os.environ.get("OPENSSL_BIN") or "openssl"


def test():
    d = tempfile.mkdtemp(prefix="exsim-tls-")
    cert, key = os.path.join(d, "cert.pem"), os.path.join(d, "key.pem")
    subprocess.run([OPENSSL, "req", "-x509", "-newkey", "rsa:2048", "-nodes",
                    "-keyout", key, "-out", cert, "-days", "1", "-subj",
                    "/CN=localhost", "-addext",
                    "subjectAltName=DNS:localhost,IP:127.0.0.1"],
                   check=True, capture_output=True)
    with Exsim("--tls-cert", cert, "--tls-key", key, "--rate", "0") as sim:
        async def go():
            ctx = ssl.create_default_context(cafile=cert)
            c = await Rpc.open(sim.url(scheme="wss"), ssl=ctx)
            r = await c.result("public/test")
            check("version" in r, "test over tls %r" % r)
            await c.close()
            # by address: no SNI (RFC 6066); by name: that name
            check(sim.stats()["tls_sni"] == {"(none)": 1},
                  "sni by ip %r" % sim.stats()["tls_sni"])
            c = await Rpc.open(sim.url(scheme="wss"), ssl=ctx,
                               server_hostname="localhost")
            await c.result("public/test")
            await c.close()
            check(sim.stats()["tls_sni"] == {"(none)": 1, "localhost": 1},
                  "sni by name %r" % sim.stats()["tls_sni"])
        run(go())
    # a key that does not match the certificate
    other = os.path.join(d, "other.pem")
    subprocess.run([OPENSSL, "genrsa", "-out", other, "2048"], check=True,
                   capture_output=True)
    p = subprocess.run([EXSIM, "--listen", "127.0.0.1:0", "--control",
                        "127.0.0.1:0", "--tls-cert", cert, "--tls-key",
                        other], capture_output=True, text=True, timeout=20)
    check(p.returncode == 1 and "tls" in p.stderr and "ready" not in p.stdout
          and "Sanitizer" not in p.stderr,
          "mismatched key: rc %r %r" % (p.returncode, p.stderr))
    p = subprocess.run([EXSIM, "--rate", "x"], capture_output=True,
                       text=True, timeout=20)
    check(p.returncode == 2 and "--rate" in p.stderr, "bad --rate")
    p = subprocess.run([EXSIM, "--instruments", "FOO"], capture_output=True,
                       text=True, timeout=20)
    check(p.returncode == 1 and "FOO" in p.stderr
          and "Sanitizer" not in p.stderr, "bad --instruments %r" % p.stderr)


main(test)
