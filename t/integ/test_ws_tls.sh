#!/bin/bash
# test_ws_tls.sh: the client's TLS checks with certificates made here by
# the openssl CLI: a test CA; a localhost certificate it signed (accepted
# with tls_ca, by name and by IP); a certificate for another name, an
# expired one, a self-signed one, and the good one checked against the
# system store instead of tls_ca (all four refused, each with its reason
# in the log); tls_verify off accepting the self-signed one, loudly.
set -u

BUILD=${XG_BUILDDIR:-$(pwd)}
PROBE=$BUILD/t/integ/wsprobe
OPENSSL=${OPENSSL_BIN:-openssl}
TMP=$(mktemp -d /tmp/xg_ws_tls.XXXXXX)
PIDS=()
FAILS=0

cleanup() {
    local p
    for p in "${PIDS[@]}"; do
        kill "$p" 2>/dev/null
        wait "$p" 2>/dev/null
    done
    rm -rf "$TMP"
}
trap cleanup EXIT

ok()   { echo "ok   $*"; }
fail() { echo "FAIL $*"; FAILS=$((FAILS + 1)); }

[ -x "$PROBE" ] || { echo "missing $PROBE: build first"; exit 1; }
command -v "$OPENSSL" >/dev/null || { echo "no openssl CLI"; exit 1; }

cd "$TMP" || exit 1
KEYOPT=(-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes)

# The test CA.
"$OPENSSL" req -x509 "${KEYOPT[@]}" -keyout ca.key -out ca.pem -days 2 \
    -subj "/CN=exgate test CA" \
    -addext "basicConstraints=critical,CA:TRUE" \
    -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null \
    || { echo "cannot make the CA"; exit 1; }

# NAME SAN: a key and a CSR.
csr() {
    "$OPENSSL" req "${KEYOPT[@]}" -keyout "$1.key" -out "$1.csr" \
        -subj "/CN=$2" 2>/dev/null
    printf 'subjectAltName=%s\nbasicConstraints=CA:FALSE\n' "$3" > "$1.ext"
}

csr localhost localhost "DNS:localhost,IP:127.0.0.1"
"$OPENSSL" x509 -req -in localhost.csr -CA ca.pem -CAkey ca.key \
    -CAcreateserial -days 2 -out localhost.pem -extfile localhost.ext \
    2>/dev/null || { echo "cannot sign localhost"; exit 1; }

csr other other.example "DNS:other.example"
"$OPENSSL" x509 -req -in other.csr -CA ca.pem -CAkey ca.key \
    -CAcreateserial -days 2 -out other.pem -extfile other.ext \
    2>/dev/null || { echo "cannot sign other"; exit 1; }

# Expired: only "openssl ca" takes explicit dates in OpenSSL 3.0.
csr expired localhost "DNS:localhost,IP:127.0.0.1"
mkdir -p newcerts && : > index.txt && echo 1000 > serial
cat > ca.cnf <<CNF
[ ca ]
default_ca = test_ca
[ test_ca ]
dir = $TMP
database = $TMP/index.txt
new_certs_dir = $TMP/newcerts
serial = $TMP/serial
default_md = sha256
policy = any
unique_subject = no
[ any ]
commonName = supplied
CNF
"$OPENSSL" ca -batch -config ca.cnf -cert ca.pem -keyfile ca.key \
    -in expired.csr -out expired.pem -startdate 20200101000000Z \
    -enddate 20200201000000Z -extfile expired.ext >/dev/null 2>&1 \
    || { echo "cannot make the expired certificate"; exit 1; }

"$OPENSSL" req -x509 "${KEYOPT[@]}" -keyout self.key -out self.pem -days 2 \
    -subj "/CN=localhost" -addext "subjectAltName=DNS:localhost" \
    2>/dev/null || { echo "cannot make the self-signed certificate"; exit 1; }

# Starts a TLS wsprobe server with CERT; sets PORT.
start_server() {
    local out=$TMP/srv.$1.out
    "$PROBE" server --tls "$1.pem" "$1.key" > "$out" 2> "$TMP/srv.$1.err" &
    PIDS+=($!)
    local i
    for i in $(seq 1 200); do
        PORT=$(awk '/^port/ {print $2}' "$out")
        [ -n "$PORT" ] && return 0
        sleep 0.05
    done
    echo "server $1 did not start"; cat "$TMP/srv.$1.err"
    exit 1
}

# expect_ok NAME URL ARGS...
expect_ok() {
    local name=$1 url=$2; shift 2
    if "$PROBE" client "$url" --send hello "$@" > "$TMP/c.out" \
        2> "$TMP/c.log" && grep -q "echo ok 5" "$TMP/c.out"; then
        ok "$name"
    else
        fail "$name"; cat "$TMP/c.out" "$TMP/c.log"
    fi
}

# expect_refused NAME REASON-REGEX URL ARGS...
expect_refused() {
    local name=$1 re=$2 url=$3; shift 3
    if "$PROBE" client "$url" --send hello "$@" > "$TMP/c.out" \
        2> "$TMP/c.log"; then
        fail "$name: accepted"; cat "$TMP/c.out" "$TMP/c.log"
    elif grep -Eq "down: tls: certificate verify failed: $re" "$TMP/c.log" \
        && ! grep -q "echo ok" "$TMP/c.out"; then
        ok "$name: $(grep -o 'certificate verify failed: .*' "$TMP/c.log" \
            | head -1)"
    else
        fail "$name: wrong reason"; cat "$TMP/c.out" "$TMP/c.log"
    fi
}

start_server localhost
expect_ok "localhost cert signed by tls_ca, by name" \
    "wss://localhost:$PORT/echo" --ca ca.pem
expect_ok "localhost cert signed by tls_ca, by ip" \
    "wss://127.0.0.1:$PORT/echo" --ca ca.pem
if grep -q "certificate verified" "$TMP/c.log"; then
    ok "log says the certificate was verified"
else
    fail "no verification line in the log"; cat "$TMP/c.log"
fi
if "$PROBE" client "wss://localhost:$PORT/echo" --ca ca.pem --size 1048576 \
    --count 2 --binary > "$TMP/c.out" 2> "$TMP/c.log" \
    && [ "$(grep -c 'echo ok 1048576' "$TMP/c.out")" = 2 ]; then
    ok "two 1 MiB echoes over tls"
else
    fail "1 MiB over tls"; cat "$TMP/c.out" "$TMP/c.log"
fi
# An independent TLS + WebSocket client (python3-websockets) against ours.
PY=${PYTHON3:-/usr/bin/python3}
if "$PY" - "$PORT" "$TMP/ca.pem" > "$TMP/py.out" 2>&1 <<'PYEOF'
import asyncio, ssl, sys
import websockets
async def main():
    ctx = ssl.create_default_context(cafile=sys.argv[2])
    url = "wss://localhost:%s/echo" % sys.argv[1]
    async with websockets.connect(url, ssl=ctx, max_size=4 << 20) as ws:
        data = bytes(range(256)) * 4096
        await ws.send(data)
        assert await asyncio.wait_for(ws.recv(), 10) == data
        await ws.send("close 1011 tls bye")
        try:
            await asyncio.wait_for(ws.recv(), 5)
        except websockets.exceptions.ConnectionClosed:
            pass
        assert ws.close_code == 1011, ws.close_code
    print("python tls ok")
asyncio.run(main())
PYEOF
then
    ok "python3-websockets over tls: 1 MiB echo, close 1011"
else
    fail "python3-websockets over tls"; cat "$TMP/py.out"
fi
expect_refused "localhost cert against the system store" \
    "unable to get local issuer certificate" "wss://localhost:$PORT/echo"

start_server other
expect_refused "cert for another name" "hostname mismatch" \
    "wss://localhost:$PORT/echo" --ca ca.pem

start_server expired
expect_refused "expired cert" "certificate has expired" \
    "wss://localhost:$PORT/echo" --ca ca.pem

start_server self
expect_refused "self-signed cert" "self.signed certificate" \
    "wss://localhost:$PORT/echo" --ca ca.pem
expect_ok "self-signed cert with tls_verify off" \
    "wss://localhost:$PORT/echo" --insecure
if grep -q "tls_verify is off" "$TMP/c.log" \
    && grep -q "certificate NOT verified" "$TMP/c.log"; then
    ok "tls_verify off is logged as a warning"
else
    fail "tls_verify off is not logged"; cat "$TMP/c.log"
fi

# A plain client on the TLS port fails the handshake, and the server says why.
if "$PROBE" client "ws://127.0.0.1:$PORT/echo" --send hi --timeout 3000 \
    > "$TMP/c.out" 2>&1; then
    fail "plain client accepted by a tls server"
else
    ok "plain client on a tls port: $(grep -o 'down: .*' "$TMP/c.out" | head -1)"
fi

[ "$FAILS" -eq 0 ] || { echo "$FAILS failure(s)"; exit 1; }
exit 0
