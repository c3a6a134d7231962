#!/usr/bin/env node
// bot.js: an unmodified ccxt binance / binanceusdm bot whose only change is
// its URLs. It runs watchOrderBook, watchTrades, watchTicker and watchOHLCV
// for each symbol at once for --seconds (or until SIGTERM, once it has
// printed "ready"), checks what it gets, and prints one line of JSON
// (before it, a line "ready S" once every watch has had its first update,
// S seconds after the start). Exit 0 only when no call threw and every
// watch was fed until the end; 1 otherwise (the exception is printed); 2
// for bad arguments.
//
//   node bot.js --exchange binance --ws ws://127.0.0.1:8700/stream/ws \
//       --rest http://127.0.0.1:8701 --symbols BTC/USDT,ETH/USDT --seconds 30
//   node bot.js --exchange binanceusdm --ws ws://127.0.0.1:8710/fapi/ws \
//       --rest http://127.0.0.1:8711 --symbols BTC/USDT:USDT --seconds 30
//
// --ws is urls.api.ws.spot (binance) or urls.api.ws.future (binanceusdm).
// ccxt appends /<n> (one socket per watch). On spot it takes a symbol as
// spot only when the URL holds "/stream" (on Binance the host name
// stream.binance.com supplies it; straight at bnsim, whose paths are
// Binance's, use ws://stream@127.0.0.1:P/ws: the user part does it). A
// futures base ending in /ws becomes <base-without-/ws>/public/ws/<n>
// (depth, trade) and .../market/ws/<n> (ticker, kline). --rest is the host
// the REST keys point at: urls.api.public = REST/api/v3, fapiPublic =
// REST/fapi/v1, dapiPublic = REST/dapi/v1 (loadMarkets asks all three
// exchangeInfos).
//
// Checks, each a failure: any exception from ccxt; a book whose best bid is
// not below its best ask, or whose nonce goes back (or repeats, on spot);
// trade ids that repeat, go back or skip (more than --max-trade-gaps ids
// missing); candles whose time goes back or whose high is below the low; a
// watch with no update at all, or none in the last --fresh seconds. The
// summary's "last" holds, per symbol, the book (nonce, bids, asks) and the
// last trade id the bot has at the end, for the caller to compare.

'use strict';

// The installed package's version (ccxt.version inside 4.5.84 says 4.5.83).
function ccxtVersion() {
    const fs = require('fs');
    const path = require('path');
    const p = path.join(__dirname, 'node_modules', 'ccxt', 'package.json');
    return JSON.parse(fs.readFileSync(p, 'utf8')).version;
}

function usage(msg) {
    process.stderr.write('bot.js: ' + msg + '\n');
    process.exit(2);
}

function parseArgs(argv) {
    const o = {exchange: 'binance', ws: undefined, rest: undefined,
        symbols: undefined, seconds: 20, fresh: 5, maxTradeGaps: 0,
        verbose: false};
    for (let i = 0; i < argv.length; i++) {
        const a = argv[i];
        const v = argv[i + 1];
        switch (a) {
        case '--exchange': o.exchange = v; i++; break;
        case '--ws': o.ws = v; i++; break;
        case '--rest': o.rest = v; i++; break;
        case '--symbols': o.symbols = v.split(','); i++; break;
        case '--seconds': o.seconds = Number(v); i++; break;
        case '--fresh': o.fresh = Number(v); i++; break;
        case '--max-trade-gaps': o.maxTradeGaps = Number(v); i++; break;
        case '--verbose': o.verbose = true; break;
        default: usage('unknown argument ' + a);
        }
    }
    if (o.exchange !== 'binance' && o.exchange !== 'binanceusdm') {
        usage('--exchange must be binance or binanceusdm');
    }
    if (!o.ws || !o.rest) {
        usage('--ws and --rest are required');
    }
    if (!(o.seconds > 0) || !(o.fresh > 0)) {
        usage('--seconds and --fresh must be positive');
    }
    if (o.symbols === undefined) {
        o.symbols = o.exchange === 'binance' ? ['BTC/USDT', 'ETH/USDT']
            : ['BTC/USDT:USDT', 'ETH/USDT:USDT'];
    }
    return o;
}

// Records a failure: its first line in the summary, the stack on stderr.
function fail(summary, what, err) {
    summary.ok = false;
    const text = String(err && err.stack ? err.stack : err);
    summary.failures.push(what + ': ' + text.split('\n')[0]);
    process.stderr.write('bot.js: ' + what + ': ' + text + '\n');
}

async function main() {
    const o = parseArgs(process.argv.slice(2));
    const ccxt = await import('ccxt');
    const rest = o.rest.replace(/\/+$/, '');
    const api = {public: rest + '/api/v3', fapiPublic: rest + '/fapi/v1',
        dapiPublic: rest + '/dapi/v1', ws: {}};
    api.ws[o.exchange === 'binance' ? 'spot' : 'future'] = o.ws;
    const ex = new ccxt.pro[o.exchange]({urls: {api: api}});
    if (o.verbose) {
        ex.verbose = true;
    }
    // ccxt refuses a ws:// URL ("NotSupported: binance to use proxy with
    // non-ssl ws:// urls") until this has loaded node:http's Agent; it is a
    // ccxt call every bot with a plain ws:// URL needs, not a change to ccxt.
    if (o.ws.startsWith('ws://')) {
        await ex.loadHttpProxyAgent();
    }
    const t0 = Date.now();
    const summary = {exchange: o.exchange, ccxt: ccxtVersion(), ok: true,
        seconds: 0, markets: 0, updates: {}, trades: 0, trade_gaps: 0,
        book_levels: {}, failures: [], last: {}};
    let done = false;
    let fed = 0;
    const books = {};
    const lastTrade = {};
    const nwatch = 4 * o.symbols.length;
    const last = {};

    const markets = await ex.loadMarkets();
    summary.markets = Object.keys(markets).length;

    // One loop per watch: await the next update until the time is up. An
    // exception ends the run; ccxt rejects pending watches with
    // ExchangeClosedByUser when we close it at the end, and that one is ours.
    async function loop(key, call, check) {
        summary.updates[key] = 0;
        while (!done) {
            let r;
            try {
                r = await call();
            } catch (e) {
                if (done && e instanceof ccxt.ExchangeClosedByUser) {
                    return;
                }
                fail(summary, key, e);
                done = true;
                return;
            }
            if (done) {
                return;
            }
            if (summary.updates[key]++ === 0 && ++fed === nwatch) {
                process.stdout.write('ready ' + ((Date.now() - t0) / 1000)
                    + '\n');
            }
            last[key] = Date.now();
            const bad = check(r);
            if (bad) {
                fail(summary, key, bad);
                done = true;
                return;
            }
        }
    }

    const loops = [];
    for (const sym of o.symbols) {
        let nonce;
        loops.push(loop('orderbook ' + sym, () => ex.watchOrderBook(sym), (ob) => {
            const bid = ob.bids.length ? ob.bids[0][0] : undefined;
            const ask = ob.asks.length ? ob.asks[0][0] : undefined;
            summary.book_levels[sym] = [ob.bids.length, ob.asks.length];
            books[sym] = ob;
            if (bid === undefined || ask === undefined) {
                return 'one-sided book: ' + ob.bids.length + ' bids, '
                    + ob.asks.length + ' asks';
            }
            if (!(bid < ask)) {
                return 'crossed book: best bid ' + bid + ' >= best ask ' + ask;
            }
            if (typeof ob.nonce !== 'number') {
                return 'book without a nonce';
            }
            // spot ignores an event with u <= nonce; futures applies one with
            // u == nonce (a snapshot taken at that event), so nonce repeats
            if (nonce !== undefined && (ob.nonce < nonce
                    || (ob.nonce === nonce && o.exchange === 'binance'))) {
                return 'book nonce went from ' + nonce + ' to ' + ob.nonce;
            }
            nonce = ob.nonce;
            return undefined;
        }));
        let tid;
        loops.push(loop('trades ' + sym, () => ex.watchTrades(sym), (trades) => {
            for (const t of trades) {
                const id = Number(t.id);
                if (!Number.isSafeInteger(id) || t.symbol !== sym) {
                    return 'bad trade ' + JSON.stringify(t.info);
                }
                if (tid !== undefined && id <= tid) {
                    return 'trade id ' + id + ' after ' + tid;
                }
                if (tid !== undefined && id > tid + 1) {
                    summary.trade_gaps += id - tid - 1;
                    if (summary.trade_gaps > o.maxTradeGaps) {
                        return 'trade ids ' + (tid + 1) + '..' + (id - 1)
                            + ' never arrived';
                    }
                }
                tid = id;
                lastTrade[sym] = id;
                summary.trades++;
            }
            return undefined;
        }));
        loops.push(loop('ticker ' + sym, () => ex.watchTicker(sym), (t) => {
            if (t.symbol !== sym || typeof t.last !== 'number') {
                return 'bad ticker ' + JSON.stringify(t.info);
            }
            return undefined;
        }));
        let ts;
        loops.push(loop('ohlcv ' + sym, () => ex.watchOHLCV(sym, '1m'), (candles) => {
            for (const c of candles) {
                if (ts !== undefined && c[0] < ts) {
                    return 'candle at ' + c[0] + ' after ' + ts;
                }
                if (!(c[2] >= c[3])) {
                    return 'candle high ' + c[2] + ' below low ' + c[3];
                }
                ts = c[0];
            }
            return undefined;
        }));
    }

    // the run ends after --seconds, or at SIGTERM (a test ends it early)
    const timer = new Promise((resolve) => {
        setTimeout(resolve, o.seconds * 1000);
        process.on('SIGTERM', resolve);
    });
    await Promise.race([timer, Promise.all(loops)]);
    const end = Date.now();
    done = true;
    for (const key of Object.keys(summary.updates)) {
        if (!summary.updates[key]) {
            fail(summary, key, 'no update');
        } else if (end - last[key] > o.fresh * 1000) {
            fail(summary, key, 'no update in the last '
                + ((end - last[key]) / 1000).toFixed(1) + ' s');
        }
    }
    summary.seconds = Math.round((end - t0) / 100) / 10;
    // what the bot holds at the end, for a test to compare with the market
    for (const sym of o.symbols) {
        const ob = books[sym];
        summary.last[sym] = {
            nonce: ob ? ob.nonce : null,
            bids: ob ? Array.from(ob.bids, (l) => [l[0], l[1]]) : [],
            asks: ob ? Array.from(ob.asks, (l) => [l[0], l[1]]) : [],
            trade: lastTrade[sym] === undefined ? null : lastTrade[sym]};
    }
    // a server that reads nothing (stalled) would hold the close forever
    const closing = ex.close().then(() => Promise.all(loops));
    await Promise.race([closing, new Promise((resolve) => setTimeout(resolve, 3000))]);
    return summary;
}

process.on('unhandledRejection', (e) => {
    process.stderr.write('bot.js: unhandled rejection: ' + (e && e.stack ? e.stack : e) + '\n');
    process.exit(1);
});

main().then((summary) => {
    process.stdout.write(JSON.stringify(summary) + '\n');
    process.exit(summary.ok ? 0 : 1);
}, (e) => {
    process.stderr.write('bot.js: ' + (e && e.stack ? e.stack : e) + '\n');
    process.stdout.write(JSON.stringify({ok: false, error: String(e)}) + '\n');
    process.exit(1);
});
