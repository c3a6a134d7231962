"""Every lost order answer resolved (exgate/order_outcome), against exsim.

- 200 orders from one bot that opted in (exgate/notify_order_outcome) and
  has cancel-on-disconnect on, in 20 rounds of 10, every one in flight
  when exsim's `drop` hits: buys executed at once with their answers held
  back (`delay`: placed, resting or filled), sells held before they run
  (`hold`: never run, not placed), some with the bot's own label. Every
  request gets 13028 at once, then exactly one exgate/order_outcome with
  its id verbatim, matching exsim's own orders (read directly as another
  client of the account): a placed one names the order exsim has under
  that label, a not_placed one has none; no label is ever on two orders.
  When the bot then leaves, exactly the orders that ended up open are
  cancelled (its cancel-on-disconnect owns what the lookups found).
- a plain client (no opt-in) whose buy answer is lost gets the 13028 and
  nothing else; its order (no label added) stays open after the others'
  cancel-on-disconnect.
- a bad exgate/notify_order_outcome param gets -32602.
- a client that leaves with cancel-on-disconnect while its buy is in
  flight, the connection then dropped: the order is found and cancelled.
- `order_outcome=on` on a listen line: its clients get outcomes unasked.
"""

import asyncio
import json
import os
import time
import urllib.request

import gateway_harness as gh
from gateway_harness import check, WSClient, TCPClient, Direct

UPSTREAM = """    protocol deribit;
    auth client_credentials exsim env:XG_TEST_EXSIM_SECRET;
    reconnect fixed { delay 50ms; }
    request_timeout 3s;
"""

BTC = "BTC-PERPETUAL"
ROUNDS = 20
PER_ROUND = 10
DELAY_MS = 2000


def outcomes(c):
    return [m for m in c.other if isinstance(m, dict)
            and m.get("method") == "exgate/order_outcome"]


def requests(h, method):
    return h.control("stats")["requests"].get(method, 0)


async def exsim_orders(h):
    """Every order of the account exsim has on BTC, open or closed."""
    d = await Direct().open(h)
    try:
        opened = await d.call("private/get_open_orders_by_instrument",
                              {"instrument_name": BTC})
        closed = await d.call("private/get_order_history_by_instrument",
                              {"instrument_name": BTC, "count": 1000,
                               "include_unfilled": True})
    finally:
        await d.close()
    return opened + closed


async def wait_for(pred, what, timeout=10):
    end = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > end:
            raise gh.Fail("timed out waiting for %s" % what)
        await asyncio.sleep(0.02)


async def rounds(h, bot, plain, book):
    """The 200 orders; returns {raw id: (kind, own label or None)}."""
    sent = {}
    n = 0
    for r in range(ROUNDS):
        buys0 = requests(h, "private/buy")
        nbuys = 0
        keys = []
        for i in range(PER_ROUND):
            n += 1
            kind = ("sell", "rest", "fill", "rest", "sell")[i % 5]
            raw = (str(10 ** 25 + n) if i % 3 == 0
                   else json.dumps("o-%d" % n))
            own = "bot-%d" % n if i % 4 == 1 else None
            if kind == "sell":
                p = {"instrument_name": BTC, "amount": 10, "type": "limit",
                     "price": book["best_ask_price"] + 5000 + n}
            elif kind == "rest":
                p = {"instrument_name": BTC, "amount": 10, "type": "limit",
                     "price": 1000 + n}
            else:
                p = {"instrument_name": BTC, "amount": 10, "type": "limit",
                     "price": book["best_ask_price"] + 2000}
            if own:
                p["label"] = own
            method = "private/sell" if kind == "sell" else "private/buy"
            sent[raw] = (kind, own, method)
            keys.append((await bot.request(method, p, raw_id=raw), kind))
        # sells first, so the last buy counted means all reached exsim
        nbuys = sum(1 for _, k in keys if k != "sell")
        if r == 0:
            await plain.request("private/buy", {
                "instrument_name": BTC, "amount": 10, "type": "limit",
                "price": 999}, id="plain-1")
            nbuys += 1
        await wait_for(lambda: requests(h, "private/buy") >= buys0 + nbuys,
                       "round %d: the buys reached exsim" % r)
        h.control("drop")
        for key, kind in keys:
            a = await bot.answer(key, timeout=10)
            check(a.get("error", {}).get("code") == 13028,
                  "round %d: %s got %r, want 13028 at once" % (r, key, a))
        await wait_for(lambda: len(outcomes(bot)) >= n,
                       "round %d: %d outcomes (got %d)"
                       % (r, n, len(outcomes(bot))), timeout=15)
    return sent


async def main_scenario(h):
    bot = await WSClient("bot").connect(h.ws_url)
    plain = await TCPClient("plain").connect(h.tcp_port)
    r = await bot.call("exgate/notify_order_outcome", {"enabled": "yes"},
                       id="bad")
    check(r.get("error", {}).get("code") == -32602,
          "bad notify_order_outcome param: %r" % r)
    r = await bot.call("exgate/notify_order_outcome", {"enabled": True},
                       id="on")
    check(r.get("result") == {"enabled": True}, "opt in: %r" % r)
    r = await bot.call("private/enable_cancel_on_disconnect", {}, id="cod")
    check(r.get("result") == "ok", "COD: %r" % r)
    book = await gh.direct_call(h, "public/get_order_book",
                                {"instrument_name": BTC})
    placed0 = h.control("stats")["accounts"]["exsim"]["orders_placed"]
    h.control("delay private/buy %d" % DELAY_MS)
    h.control("hold private/sell %d" % DELAY_MS)
    t0 = time.monotonic()
    sent = await rounds(h, bot, plain, book)
    h.control("delay private/buy 0")
    h.control("hold private/sell 0")
    await asyncio.sleep(0.5)        # nothing more comes
    wall = time.monotonic() - t0

    got = outcomes(bot)
    check(len(got) == len(sent), "%d outcomes for %d requests"
          % (len(got), len(sent)))
    by_id = {}
    for m in got:
        text = json.dumps(m["params"]["request_id"])
        check(text not in by_id, "two outcomes for %s" % text)
        by_id[text] = m["params"]
    for raw in sent:
        check(raw in by_id, "no outcome for %s" % raw)
        if raw.startswith("1"):
            check(any(('"request_id":%s,' % raw) in t for t in bot.raw),
                  "request_id %s not verbatim" % raw)

    orders = await exsim_orders(h)
    by_label = {}
    for o in orders:
        by_label.setdefault(o["label"], []).append(o)
    twice = [lb for lb, os_ in by_label.items() if lb and len(os_) > 1]
    check(not twice, "labels on two orders: %r" % twice[:5])
    placed0b = h.control("stats")["accounts"]["exsim"]["orders_placed"]
    counts = {}
    labels_seen = set()
    for raw, (kind, own, method) in sent.items():
        p = by_id[raw]
        counts[p["outcome"]] = counts.get(p["outcome"], 0) + 1
        check(p["method"] == method, "%s: method %r" % (raw, p))
        if kind == "sell":
            check(p["outcome"] == "not_placed" and p.get("order") is None,
                  "held sell %s: %r" % (raw, p))
            continue
        check(p["outcome"] == "placed", "buy %s: %r" % (raw, p))
        o = p["order"]
        if own:
            check(o["label"] == own, "%s: label %r" % (raw, o))
        else:
            check(o["label"].startswith("xg-") and len(o["label"]) <= 64,
                  "%s: gateway label %r" % (raw, o["label"]))
        ex = by_label.get(o["label"], [])
        check(len(ex) == 1 and ex[0]["order_id"] == o["order_id"],
              "%s: exsim has %r for %r" % (raw, ex, o))
        want = "filled" if kind == "fill" else "open"
        check(o["order_state"] == want and ex[0]["order_state"] == want,
              "%s: state %r / exsim %r, want %s" % (raw, o["order_state"],
                                                    ex[0]["order_state"],
                                                    want))
        labels_seen.add(o["label"])
    mine = set(lb for lb in by_label if lb.startswith(("xg-", "bot-")))
    check(mine == labels_seen, "exsim's labelled orders %d, placed outcomes "
          "%d" % (len(mine), len(labels_seen)))
    check(placed0b - placed0 == counts.get("placed", 0) + 1,
          "exsim placed %d orders, %d placed outcomes + 1 plain"
          % (placed0b - placed0, counts.get("placed", 0)))
    # each held sell's connection was gone when its hold ended
    await wait_for(lambda: h.control("stats")["held_lost"]
                   >= counts.get("not_placed", 0), "held sells dropped",
                   timeout=DELAY_MS / 1000 + 5)
    held_lost = h.control("stats")["held_lost"]
    check(held_lost == counts.get("not_placed", 0),
          "exsim held_lost %d, not_placed %d" % (held_lost,
                                                 counts.get("not_placed", 0)))

    # the plain client: its 13028 and nothing else
    a = await plain.answer(json.dumps("plain-1"), timeout=5)
    check(a.get("error", {}).get("code") == 13028, "plain: %r" % a)
    check(plain.other == [] and not any(plain.answers.values()),
          "plain client got more: %r %r" % (plain.other, plain.answers))
    plain_order = [o for o in orders if o["price"] == 999]
    check(len(plain_order) == 1 and plain_order[0]["label"] == "",
          "plain order unlabelled: %r" % plain_order)

    # the bot leaves: exactly what ended up open is cancelled
    still_open = [o["order_id"] for o in orders
                  if o["order_state"] == "open" and o["label"] in mine]
    n0 = requests(h, "private/cancel")
    await bot.close()
    d = await Direct().open(h)
    try:
        end = time.monotonic() + 10
        while True:
            left = await d.call("private/get_open_orders_by_instrument",
                                {"instrument_name": BTC})
            ids = set(o["order_id"] for o in left)
            if ids == {plain_order[0]["order_id"]}:
                break
            check(time.monotonic() < end, "open after the bot left: %r"
                  % sorted(ids))
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.5)
        ncancel = requests(h, "private/cancel") - n0
        check(ncancel == len(still_open), "%d private/cancel for %d open "
              "orders" % (ncancel, len(still_open)))
        await d.call("private/cancel", {"order_id": plain_order[0]["order_id"]})
    finally:
        await d.close()
    await plain.close()
    st = h.up()
    check(st["order_outcome_pending"] == 0, "lookups left: %r" % st)
    with urllib.request.urlopen("http://127.0.0.1:%d/metrics"
                                % h.admin_port, timeout=5) as r:
        text = r.read().decode()
    for k, v in st["order_outcomes"].items():
        want = ('exgate_upstream_order_outcomes_total{upstream="sim",'
                'outcome="%s"} %d' % (k, v))
        check(want in text, "/metrics lacks %r" % want)
    check(st["order_outcomes"]["placed"] == counts.get("placed", 0),
          "/status placed %r, the bot counted %r" % (
              st["order_outcomes"], counts))
    print("order outcomes: %r; %d open cancelled by COD; rounds took %.1f s"
          % (counts, len(still_open), wall))


async def cod_in_flight(h):
    """A COD client leaves with its buy in flight, then the drop."""
    c = await WSClient("leaver").connect(h.ws_url)
    r = await c.call("private/enable_cancel_on_disconnect", {}, id=1)
    check(r.get("result") == "ok", "COD %r" % r)
    h.control("delay private/buy 3000")
    b0 = requests(h, "private/buy")
    await c.request("private/buy", {"instrument_name": BTC, "amount": 10,
                                    "type": "limit", "price": 1500}, id=2)
    await wait_for(lambda: requests(h, "private/buy") > b0, "buy sent")
    await c.close()
    await asyncio.sleep(0.2)
    n0 = requests(h, "private/cancel")
    h.control("drop")
    await wait_for(lambda: requests(h, "private/cancel") > n0,
                   "the order found and cancelled")
    h.control("delay private/buy 0")
    left = await gh.direct_call(h, "private/get_open_orders_by_instrument",
                                {"instrument_name": BTC})
    check(left == [], "open after COD: %r" % left)
    check(h.log_lines(r"placed by a request whose answer was lost"),
          "the COD adoption is logged")


async def listener_on(h):
    """order_outcome=on on the tcp listener: outcomes unasked."""
    c = await TCPClient("listener-on").connect(h.tcp_port2)
    h.control("delay private/buy 3000")
    b0 = requests(h, "private/buy")
    await c.request("private/buy", {"instrument_name": BTC, "amount": 10,
                                    "type": "limit", "price": 1600}, id=7)
    await wait_for(lambda: requests(h, "private/buy") > b0, "buy sent")
    h.control("drop")
    a = await c.answer("7", timeout=5)
    check(a.get("error", {}).get("code") == 13028, "13028: %r" % a)
    await wait_for(lambda: outcomes(c), "the listener's outcome")
    p = outcomes(c)[0]["params"]
    check(p["request_id"] == 7 and p["outcome"] == "placed"
          and p["order"]["price"] == 1600, "outcome %r" % p)
    h.control("delay private/buy 0")
    await gh.direct_call(h, "private/cancel",
                         {"order_id": p["order"]["order_id"]})
    await c.close()


async def lost_one(h, c, method, params, rid, outcome, lookup=None):
    """METHOD (its answer held back) lost at a drop: one outcome."""
    h.control("delay %s 3000" % method)
    n0 = requests(h, method)
    before = len(outcomes(c))
    await c.request(method, params, id=rid)
    await wait_for(lambda: requests(h, method) > n0, "%s sent" % method)
    if lookup is not None:
        # the lookup itself is lost with the next connection: sent again
        h.control("delay %s 1000" % lookup)
        l0 = requests(h, lookup)
        h.control("drop")
        await wait_for(lambda: requests(h, lookup) > l0, "lookup sent")
        h.control("drop")
        await wait_for(lambda: requests(h, lookup) > l0 + 1,
                       "lookup sent again")
        h.control("delay %s 0" % lookup)
    else:
        h.control("drop")
    a = await c.answer(json.dumps(rid), timeout=5)
    check(a.get("error", {}).get("code") == 13028, "13028: %r" % a)
    await wait_for(lambda: len(outcomes(c)) > before, "outcome of %s"
                   % method)
    h.control("delay %s 0" % method)
    p = outcomes(c)[before]["params"]
    check(p["request_id"] == rid and p["method"] == method
          and p["outcome"] == outcome, "%s: outcome %r, want %s"
          % (method, p, outcome))
    return p


async def kinds(h):
    """cancel, edit, cancel_all_by_instrument, a failing lookup, a lookup
    lost with the next connection."""
    c = await TCPClient("kinds").connect(h.tcp_port2)
    oid = (await gh.direct_call(h, "private/buy", {
        "instrument_name": BTC, "amount": 10, "type": "limit",
        "price": 1700}))["order"]["order_id"]
    p = await lost_one(h, c, "private/edit", {"order_id": oid, "amount": 20,
                                               "price": 1701}, 1, "placed")
    check(p["order"]["price"] == 1701 and p["order"]["amount"] == 20,
          "edit outcome %r" % p)
    p = await lost_one(h, c, "private/cancel", {"order_id": oid}, 2,
                       "cancelled")
    check(p["order"]["order_id"] == oid
          and p["order"]["order_state"] == "cancelled", "cancel %r" % p)
    await gh.direct_call(h, "private/buy", {
        "instrument_name": BTC, "amount": 10, "type": "limit",
        "price": 1702})
    p = await lost_one(h, c, "private/cancel_all_by_instrument",
                       {"instrument_name": BTC}, 3, "cancelled")
    check("order" not in p, "cancel_all has no order: %r" % p)
    # refused for now (maintenance) twice: asked again, found
    h.control("fail private/get_open_orders_by_instrument 11051 2")
    await lost_one(h, c, "private/buy", {"instrument_name": BTC,
                                         "amount": 10, "type": "limit",
                                         "price": 1705}, 6, "placed")
    # refused longer than request_timeout (3 s): the exchange cannot tell
    h.control("fail private/get_open_orders_by_instrument 11051 100000")
    t0 = time.monotonic()
    await lost_one(h, c, "private/buy", {"instrument_name": BTC,
                                         "amount": 10, "type": "limit",
                                         "price": 1703}, 4, "unknown")
    # retried (0.2 + 0.4 + 0.8 s) until the next wait would pass 3 s
    check(time.monotonic() - t0 > 1.2, "unknown before the retries")
    h.control("fail private/get_open_orders_by_instrument 11051 0")
    p = await lost_one(h, c, "private/buy", {
        "instrument_name": BTC, "amount": 10, "type": "limit",
        "price": 1704}, 5, "placed",
        lookup="private/get_open_orders_by_instrument")
    left = await gh.direct_call(h, "private/get_open_orders_by_instrument",
                                {"instrument_name": BTC})
    check(sorted(o["price"] for o in left) == [1703, 1704, 1705],
          "open after kinds: %r" % left)
    await gh.direct_call(h, "private/cancel_all", {})
    await c.close()


async def body(h):
    os.environ["XG_TEST_EXSIM_SECRET"] = "exsim-secret"
    h.tcp_port2 = gh.free_port()
    gh.start(h, UPSTREAM, "client_auth off;\n"
             "listen 127.0.0.1:%d tcp upstream=sim order_outcome=on;\n"
             % h.tcp_port2, level="info", sim_args=("--no-rate-limit",))
    gh.wait_ready(h)
    t0 = time.monotonic()
    await main_scenario(h)
    await cod_in_flight(h)
    await listener_on(h)
    await kinds(h)
    print("test_gateway_order_outcome: %.1f s" % (time.monotonic() - t0))


gh.run("gateway_order_outcome", body)
