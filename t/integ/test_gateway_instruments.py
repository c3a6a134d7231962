"""public/get_instruments as ccxt's loadMarkets sends it, through exgate:

- with no params at all (no "params" member) and with currency "any",
  a WebSocket and a TCP client each get every instrument exsim has (the
  --instruments list, three currencies), with their own ids back;
- kind still filters a currency "any" request.
"""

import gateway_harness as gh
from gateway_harness import check, WSClient, TCPClient

INSTRUMENTS = ["BTC-PERPETUAL", "ETH-PERPETUAL", "SOL-PERPETUAL",
               "BTC-26DEC26", "ETH-26DEC26-4000-P"]


def names(r, what):
    check("result" in r, "%s: %r" % (what, r))
    return sorted(i["instrument_name"] for i in r["result"])


async def body(h):
    gh.start(h, "    protocol deribit;\n", "client_auth off;\n",
             sim_args=("--rate", "0", "--instruments",
                       ",".join(INSTRUMENTS)))
    gh.wait_ready(h)
    every = sorted(INSTRUMENTS)
    for c in (await WSClient("ws-a").connect(h.ws_url),
              await TCPClient("tcp-b").connect(h.tcp_port)):
        # ccxt: {"jsonrpc":"2.0","id":N,"method":"public/get_instruments"}
        await c.send('{"jsonrpc":"2.0","id":"m1",'
                     '"method":"public/get_instruments"}')
        r = await c.answer('"m1"')
        check(names(r, "%s, no params" % c.name) == every,
              "%s, no params: %r" % (c.name, r))
        r = await c.call("public/get_instruments", {}, id=7)
        check(names(r, "%s, {}" % c.name) == every, "%s, {}" % c.name)
        r = await c.call("public/get_instruments", {"currency": "any"},
                         id=8)
        check(names(r, "%s, any" % c.name) == every, "%s, any" % c.name)
        r = await c.call("public/get_instruments",
                         {"currency": "any", "kind": "option"}, id=9)
        check(names(r, "%s, options" % c.name) == ["ETH-26DEC26-4000-P"],
              "%s, any options: %r" % (c.name, r))
        check(c.closed is None, "%s closed" % c.name)
        await c.close()
    st = h.control("stats")["requests"]
    check(st.get("public/get_instruments") == 8,
          "each request went upstream once: %r" % st)


gh.run("gateway_instruments", body)
