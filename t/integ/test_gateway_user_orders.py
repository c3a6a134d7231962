"""An order change during an upstream outage is not lost (issue 8 (e)):
a client subscribed to user.orders.BTC-PERPETUAL.raw and .100ms and
user.orders.future.BTC.raw through exgate has resting orders A, B, E. While exgate is disconnected (its 2 s
reconnect delay), a direct exsim connection of the same account fills A
(edited through the ask), cancels B, enlarges E and places a new D. exsim
only notifies the subscribers it has at that moment, so those changes
reach the client only through exgate's reconcile after the restore
(private/get_open_orders_by_instrument + get_order_history_by_instrument,
or the _by_currency pair for the KIND.CURRENCY channel).

Checked: the client's last state of every order equals exsim's
(private/get_order_state and get_open_orders_by_instrument over a direct
connection); the gap-time states arrive after the restore; each state
exactly once; /status orders_reconciled and the log line; a live change
afterwards comes through once. Then a stale resubscribe (exsim mute on
the channel, `stale user.orders.* 1s`) with a change made while muted is
reconciled the same way.
"""

import asyncio
import os
import time

import gateway_harness as gh
from gateway_harness import check, WSClient

INSTR = "BTC-PERPETUAL"
RAW = "user.orders.%s.raw" % INSTR
AGG = "user.orders.%s.100ms" % INSTR
CUR = "user.orders.future.BTC.raw"
CHS = (RAW, AGG, CUR)
UPSTREAM = """    protocol deribit;
    auth client_credentials exsim env:XG_TEST_EXSIM_SECRET;
    reconnect fixed { delay 4s; }
    stale user.orders.* 1s;
"""
FIELDS = ("order_state", "filled_amount", "amount", "price",
          "last_update_timestamp")


def orders(client, ch):
    """Every order object the client got on CH, in arrival order."""
    return gh.notes_data(client, ch)


def last_state(client, ch):
    st = {}
    for o in orders(client, ch):
        st[o["order_id"]] = tuple(o[f] for f in FIELDS)
    return st


def no_repeat(client, ch):
    seen = [(o["order_id"],) + tuple(o[f] for f in FIELDS)
            for o in orders(client, ch)]
    check(len(seen) == len(set(seen)), "%s: a state delivered twice: %r"
          % (ch, seen))


async def book_edges(d):
    b = await d.call("public/get_order_book", {"instrument_name": INSTR,
                                               "depth": 1})
    return b["bids"][0][0], b["asks"][0][0]


async def place(client, price, id, amount=10):
    r = await client.call("private/buy", {
        "instrument_name": INSTR, "amount": amount, "type": "limit",
        "price": price}, id=id)
    check("result" in r, "buy %r" % r)
    return r["result"]["order"]["order_id"]


async def exsim_states(d, ids):
    st = {}
    for i in ids:
        o = await d.call("private/get_order_state", {"order_id": i})
        st[i] = tuple(o[f] for f in FIELDS)
    return st


async def converged(a, d, ids, what):
    want = await exsim_states(d, ids)

    async def same():
        return all(last_state(a, ch).get(i) == want[i]
                   for ch in CHS for i in ids)
    end = time.monotonic() + 10
    while not await same():
        check(time.monotonic() < end, "%s: client %r, exsim %r"
              % (what, [last_state(a, ch) for ch in CHS], want))
        await asyncio.sleep(0.05)
    return want


async def body(h):
    os.environ["XG_TEST_EXSIM_SECRET"] = "exsim-secret"
    gh.start(h, UPSTREAM, "client_auth off;\n",
             sim_args=("--rate", "20", "--no-rate-limit"))
    gh.wait_ready(h)
    d = await gh.Direct().open(h)
    bid, ask = await book_edges(d)
    low = float(int(bid * 0.5))
    a = await WSClient("ws-a").connect(h.ws_url)
    r = await a.call("private/subscribe", {"channels": list(CHS)}, id=1)
    check(sorted(r["result"]) == sorted(CHS), "subscribe %r" % r)
    oa = await place(a, low, 2)
    ob = await place(a, low - 1, 3)
    oe = await place(a, low - 2, 4)
    await converged(a, d, [oa, ob, oe], "live orders")

    # the outage: exgate reconnects 2 s after the drop
    restores = h.up()["restores"]
    h.control("drop")
    h.wait_up(lambda u: u["state"] != "ready", 5, "upstream down")
    await d.close()
    d = await gh.Direct().open(h)      # the drop closed every connection
    n_before = {ch: len(orders(a, ch)) for ch in CHS}
    bid, ask = await book_edges(d)
    high = float(int(ask * 1.2))
    await d.call("private/edit", {"order_id": oa, "amount": 10,
                                  "price": high})
    await d.call("private/cancel", {"order_id": ob})
    await d.call("private/edit", {"order_id": oe, "amount": 20,
                                  "price": low - 2})
    od = (await d.call("private/buy", {
        "instrument_name": INSTR, "amount": 10, "type": "limit",
        "price": low - 3}))["order"]["order_id"]
    end = time.monotonic() + 5
    while (await exsim_states(d, [oa]))[oa][0] != "filled":
        check(time.monotonic() < end, "A not filled by exsim")
        await asyncio.sleep(0.05)
    gap = await exsim_states(d, [oa, ob, oe, od])
    check(gap[oa][0] == "filled" and gap[ob][0] == "cancelled"
          and gap[oe][0] == "open" and gap[oe][2] == 20
          and gap[od][0] == "open", "gap states %r" % gap)
    check(h.up()["restores"] == restores, "restored before the changes")
    # nothing can reach the client while exgate is down
    check({ch: len(orders(a, ch)) for ch in CHS} == n_before,
          "notes during the outage")
    h.wait_up(lambda u: u["restores"] > restores
              and u["state"] == "ready", 10, "restore")
    want = await converged(a, d, [oa, ob, oe, od], "after the restore")
    check(want == gap, "exsim changed after the gap: %r / %r" % (want, gap))
    for ch in CHS:
        after = orders(a, ch)[n_before[ch]:]
        got = {o["order_id"]: tuple(o[f] for f in FIELDS) for o in after}
        check(got == gap, "%s: after the restore %r, gap states %r"
              % (ch, got, gap))
        no_repeat(a, ch)
    opened = await d.call("private/get_open_orders_by_instrument",
                          {"instrument_name": INSTR})
    mine = {oa, ob, oe, od}
    exsim_open = sorted(o["order_id"] for o in opened
                        if o["order_id"] in mine)
    client_open = sorted(i for i, s in last_state(a, RAW).items()
                         if s[0] == "open")
    check(exsim_open == client_open, "open orders: exsim %r, client %r"
          % (exsim_open, client_open))
    u = h.up()
    check(u["orders_reconciled"] == 12, "orders_reconciled %r (4 orders x "
          "3 channels)" % u["orders_reconciled"])
    for ch in CHS:
        check(h.log_lines("%s: reconciled 4 orders after the outage" % ch),
              "reconcile logged (%s)" % ch)

    # a live change after the restore comes through once
    r = await a.call("private/cancel", {"order_id": od}, id=5)
    check(r.get("result", {}).get("order_state") == "cancelled",
          "cancel %r" % r)
    await converged(a, d, [oa, ob, oe, od], "live cancel")
    for ch in CHS:
        no_repeat(a, ch)

    # a stale resubscribe: the channel muted at exsim, a change meanwhile
    stale0 = h.up()["stale_resubscribes"]
    rec0 = h.up()["orders_reconciled"]
    h.control("mute %s on" % RAW)
    await d.call("private/cancel", {"order_id": oe})
    h.wait_up(lambda u: u["stale_resubscribes"] > stale0, 10,
              "stale resubscribe")
    await converged(a, d, [oa, ob, oe, od], "after the stale resubscribe")
    for ch in CHS:
        no_repeat(a, ch)
    check(h.up()["orders_reconciled"] >= rec0 + 1,
          "stale reconcile counted %r" % h.up()["orders_reconciled"])
    # an order the client saw open, closed beyond the history's 1000:
    # reconciled through private/get_order_state
    of = await place(a, low - 4, 6)
    await converged(a, d, [of], "live order F")
    restores = h.up()["restores"]
    rec0 = h.up()["orders_reconciled"]
    h.control("drop")
    h.wait_up(lambda u: u["state"] != "ready", 5, "upstream down")
    await d.close()
    d = await gh.Direct().open(h)
    await d.call("private/cancel", {"order_id": of})
    await d.pipeline([("private/buy", {
        "instrument_name": INSTR, "amount": 10, "type": "limit",
        "price": low - 5}) for _ in range(1000)])
    await d.call("private/cancel_all_by_instrument",
                 {"instrument_name": INSTR})
    hist = await d.call("private/get_order_history_by_instrument", {
        "instrument_name": INSTR, "count": 1000, "include_unfilled": True})
    check(len(hist) == 1000 and of not in [o["order_id"] for o in hist],
          "F still in the last 1000 closed orders")
    check(h.up()["restores"] == restores, "restored before the 1000 orders")
    h.wait_up(lambda u: u["restores"] > restores
              and u["state"] == "ready", 15, "restore")
    await converged(a, d, [oa, ob, oe, od, of], "F beyond the history")
    def gap_orders(ch):
        return len([o for o in orders(a, ch) if o["price"] == low - 5])
    # F's state came first (oldest update): the rest may still be on its way
    await a._wait(lambda: all(gap_orders(ch) >= 1000 for ch in CHS), 15,
                  "the 1000 orders closed in the gap")
    for ch in CHS:
        no_repeat(a, ch)
        check(gap_orders(ch) == 1000, "%s: the 1000 orders closed in the "
              "gap: %d" % (ch, gap_orders(ch)))
    check(h.log_lines("%s: 1 open orders in neither list" % RAW),
          "get_order_state round logged")
    done = h.log_times("%s: reconciled 1001 orders after" % RAW)
    asked = [t for t in h.log_times("%s: fetching the account's orders"
                                    % RAW) if done and t <= done[0]]
    check(done and asked, "the 1001-order reconcile logged")
    print("reconcile of 1001 orders on %s: %.0f ms from the fetch to the "
          "last notification" % (RAW, (done[0] - asked[-1]) * 1000))
    check(h.up()["orders_reconciled"] == rec0 + 3003,
          "orders_reconciled %r" % h.up()["orders_reconciled"])
    # the bound on what is held: exsim answers the reconcile's open-orders
    # fetches only after 8 s while 1100 orders are placed; at 1000 held
    # messages the gateway gives up and delivers what it held, in order
    for m in ("private/get_open_orders_by_instrument",
              "private/get_open_orders_by_currency"):
        h.control("delay %s 8000" % m)
    fetches = len(h.log_lines("%s: fetching the account's orders" % RAW))
    restores = h.up()["restores"]
    h.control("drop")
    h.wait_up(lambda u: u["state"] != "ready", 5, "upstream down")
    await d.close()
    h.wait_up(lambda u: u["restores"] > restores
              and u["state"] == "ready", 15, "restore")
    gh.uh.wait_for(lambda: len(h.log_lines(
        "%s: fetching the account's orders" % RAW)) > fetches, 10,
        what="the delayed reconcile")
    d = await gh.Direct().open(h)
    await d.pipeline([("private/buy", {
        "instrument_name": INSTR, "amount": 10, "type": "limit",
        "price": low - 6}) for _ in range(1100)])
    gh.uh.wait_for(lambda: h.log_lines("%s: reconcile too slow" % RAW), 10,
                   what="the release at 1000 held")

    def held_orders(ch):
        return [o for o in orders(a, ch) if o["price"] == low - 6]
    await a._wait(lambda: all(len(held_orders(ch)) >= 1100
                              for ch in (RAW, CUR)), 15, "the 1100 orders")
    await asyncio.sleep(8.5)             # the late answers come and go
    for ch in CHS:
        no_repeat(a, ch)
    for ch in (RAW, CUR):
        got = held_orders(ch)
        check(len(got) == 1100, "%s: %d of the 1100 orders" % (ch, len(got)))
        ts = [o["creation_timestamp"] for o in got]
        check(ts == sorted(ts), "%s: the held orders out of order" % ch)
    print("bound: released at 1000 held on %s" % RAW)
    print("orders A %s, B %s, E %s, D %s; reconciled %d order states"
          % (gap[oa][0], gap[ob][0], gap[oe][0], gap[od][0],
             h.up()["orders_reconciled"]))
    await d.close()
    await a.close()


if __name__ == "__main__":
    gh.run("gateway_user_orders", body)
