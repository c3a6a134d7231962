/*
 * exsim.h: the exchange simulator, a Deribit JSON-RPC v2 WebSocket server
 * with fault injection, shared by its files:
 *
 *   exsim_main.c    command line, listeners, the control port, stats, bench
 *   exsim_rpc.c     connections, the JSON-RPC envelope, method dispatch,
 *                   heartbeats, credits, subscriptions
 *   exsim_auth.c    public/auth grants, tokens, scopes, sessions
 *   exsim_sig.c     the client_signature HMAC (also linked by a unit test)
 *   exsim_market.c  instruments, books, trades, the market timer, channels
 *   exsim_trade.c   orders, matching, cancel-on-disconnect
 *
 * One thread, one event_base: every object here is owned by the global
 * struct exsim and freed by exsim_*_free() on quit.
 */
#ifndef EXSIM_H
#define EXSIM_H

#include "xg_core.h"
#include "xg_log.h"
#include "xg_ws.h"

#include <event2/event.h>
#include <event2/listener.h>
#include <jansson.h>
#include <openssl/ssl.h>

#define EXSIM_MAX_REQUEST      32768      /* Deribit's 32 kB frame cap */
#define EXSIM_MAX_MESSAGE      (1 << 20)  /* transport bound, over -> 1009 */
#define EXSIM_MAX_CHANNELS     4096       /* per connection */
#define EXSIM_MAX_LEVELS       200        /* per book side */
#define EXSIM_TRADE_RING       20000      /* trades kept per instrument */
#define EXSIM_MAX_BENCH_CHAN   1024

/* Deribit error codes (exchange-protocols.md A1.3). */
#define EXSIM_E_TOO_MANY       10028
#define EXSIM_E_BAD_REQUEST    11050
#define EXSIM_E_BAD_CREDS      13004
#define EXSIM_E_UNAUTHORIZED   13009
#define EXSIM_E_COD_NOT_ON     13042
#define EXSIM_E_RAW_UNAUTH     13778
#define EXSIM_E_TOO_LARGE      -32600
#define EXSIM_E_NO_METHOD      -32601
#define EXSIM_E_PARAMS         -32602
#define EXSIM_E_PARSE          -32700

struct exsim_conn;
struct exsim_chan;
struct exsim_instr;
struct exsim_ctl;

/* A leaky bucket of Deribit credits. */
struct exsim_bucket {
    double   level;
    double   max;
    double   refill;    /* credits per second */
    uint64_t last_us;
};

/* The four pools of A6: non-matching, subscribe, get_instruments, matching. */
struct exsim_credits {
    struct exsim_bucket nonmatching;
    struct exsim_bucket subscribe;
    struct exsim_bucket instruments;
    struct exsim_bucket matching;
};

/* Unauthenticated requests are limited per IP (A6). */
struct exsim_ippool {
    struct exsim_ippool  *next;
    char                  ip[64];
    struct exsim_credits  cr;
};

struct exsim_account;

struct exsim_token {
    struct exsim_token *next;
    struct exsim_account *acct;  /* whose key issued it */
    char      access[96];
    char      refresh[96];
    char     *session;       /* NULL: connection scope */
    uint64_t  conn_id;       /* the connection a connection token lives on */
    uint64_t  expires_us;    /* monotonic */
    uint64_t  refresh_expires_us;
    int       valid;         /* access token usable */
    int       refresh_valid; /* refresh token usable (single use) */
    char     *scope;         /* granted scope string */
};

struct exsim_session {
    struct exsim_session *next;
    struct exsim_account *acct;
    char     *name;
    uint64_t  refreshed_us;
};

struct exsim_nonce {
    struct exsim_nonce *next;
    struct exsim_account *acct;
    char     *key;          /* "ts\nnonce" */
    uint64_t  seen_us;
};

struct exsim_conn {
    struct exsim_conn   *next, *prev;
    uint64_t             id;
    struct xg_ws        *ws;
    evutil_socket_t      fd;
    int                  open;       /* upgrade done, counted as open */
    int                  closing;    /* we started a close, ignore input */
    int                  logout;     /* closed by private/logout: no COD */
    char                 auth[96];   /* access token this conn is authed by */
    struct exsim_account *acct;      /* the account of that token, or NULL */
    int                  cod;        /* cancel-on-disconnect enabled */
    double               hb_interval;/* seconds, 0: off */
    struct event        *hb_ev;
    int                  hb_phase;
    uint64_t             test_deadline_us; /* unanswered test_request */
    struct exsim_credits *anon;      /* its IP's pool, until authenticated */
    struct exsim_chan  **subs;
    size_t               nsubs, capsubs;
    uint64_t             us_in;      /* wall clock of the current request */
    int                  down;       /* gone: torn down by the reaper */
    int                  stalled;    /* SO_RCVLOWAT raised */
    char                 name[32];   /* "exsim conn#12" */
};

enum exsim_chan_kind {
    EXSIM_CH_BOOK = 1,      /* book.I.INTERVAL */
    EXSIM_CH_BOOK_GROUP,    /* book.I.GROUP.DEPTH.INTERVAL */
    EXSIM_CH_TICKER,
    EXSIM_CH_TRADES,        /* trades.I.INTERVAL */
    EXSIM_CH_TRADES_KIND,   /* trades.KIND.CURRENCY.INTERVAL */
    EXSIM_CH_INDEX,         /* deribit_price_index.X */
    EXSIM_CH_PLATFORM,      /* platform_state */
    EXSIM_CH_USER_ORDERS,   /* user.orders.I.INTERVAL / KIND.CUR.INTERVAL */
    EXSIM_CH_USER_TRADES,
    EXSIM_CH_USER_CHANGES,
    EXSIM_CH_USER_PORTFOLIO,
    EXSIM_CH_BENCH
};

struct exsim_level {
    int64_t price;   /* ticks */
    int64_t lots;    /* multiples of min_trade_amount */
};

struct exsim_book {
    struct exsim_level bids[EXSIM_MAX_LEVELS];   /* best (highest) first */
    struct exsim_level asks[EXSIM_MAX_LEVELS];   /* best (lowest) first */
    int nbids, nasks;
};

struct exsim_chan {
    struct exsim_chan  *hnext;      /* hash chain */
    struct exsim_chan  *lnext;      /* the global list */
    char               *name;
    int                 kind;
    int                 interval;   /* 0 raw, else ms (100, 2000) */
    int                 priv;       /* user.* */
    struct exsim_instr *instr;      /* NULL: currency / kind wide */
    char                fkind[16];  /* future|option|spot|any */
    char                fcur[16];   /* BTC|ETH|any, or the index name */
    int64_t             group;      /* grouped book: ticks, 0 none */
    int                 depth;
    int                 bench;      /* bench.N: N */
    struct exsim_conn **subs;
    size_t              nsubs, capsubs;
    /* aggregated (100ms / agg2) book channels: the book as last published */
    struct exsim_book  *agg;
    uint64_t            agg_change_id;
    uint64_t            last_version;  /* ticker / grouped book */
    json_t             *pending;       /* aggregated trades */
    int                 gap;           /* drop the next change */
    uint64_t            seq;           /* bench sequence */
};

struct exsim_trade_rec {
    uint64_t trade_seq;
    uint64_t trade_id;
    uint64_t ts_ms;
    int64_t  price;
    int64_t  lots;
    int      dir;            /* +1 buy, -1 sell (aggressor) */
    int      tick_direction;
    double   index_price;
    double   mark_price;
};

struct exsim_instr {
    struct exsim_instr *next;
    char     name[64];
    char     currency[8];       /* base */
    char     kind[8];           /* future | option */
    char     index_name[16];    /* btc_usd */
    int      perpetual;
    char     option_type[8];    /* call | put */
    double   strike;
    uint64_t expiration_ms;
    double   tick;              /* tick size */
    double   min_amount;        /* min trade amount = lot */
    double   contract_size;
    int      id;
    struct exsim_book book;
    uint64_t change_id;
    uint64_t version;           /* bumps on every change (ticker) */
    uint64_t trade_seq;
    int      last_tick_dir;
    int64_t  last_price;
    int64_t  base_ticks;        /* the price the market reverts to */
    double   index_price;
    double   open_interest;
    double   volume;
    int64_t  high, low;
    struct exsim_trade_rec *trades;   /* ring */
    size_t   ntrades, trade_head;
};

/* An account's position in one instrument. */
struct exsim_pos {
    struct exsim_pos         *next;
    const struct exsim_instr *instr;
    double                    lots;
    double                    avg;
};

/*
 * A simulated account (one API key): the default one (--client-id,
 * --client-secret) first, then one per --account ID:SECRET. Orders,
 * positions, user trades, user.* notifications, the authenticated credit
 * pool, cancel-on-disconnect of account scope, sessions and nonces are
 * per account.
 */
struct exsim_account {
    struct exsim_account *next;
    char                 *id;
    char                 *secret;
    struct exsim_credits  credits;
    int                   cod_account;     /* account-scope COD */
    struct exsim_pos     *pos;
    json_t               *user_trades;     /* oldest first */
    uint64_t              orders_placed;
    uint64_t              rate_limited;
};

struct exsim_order {
    struct exsim_order *next;
    char     order_id[32];
    struct exsim_instr *instr;
    int      dir;            /* +1 buy, -1 sell */
    int      market;         /* order_type market */
    int64_t  price;          /* ticks */
    int64_t  lots, filled;
    double   avg_price;
    char     label[68];
    char     tif[24];
    int      post_only, reduce_only;
    char     state[16];      /* open filled cancelled rejected */
    char     cancel_reason[32];
    uint64_t created_ms, updated_ms;
    uint64_t conn_id;
    struct exsim_account *acct;
};

struct exsim_opts {
    const char *listen;
    const char *control;
    const char *tls_cert, *tls_key;
    double      rate;
    const char *instruments;
    const char *client_id, *client_secret;
    double      expires_in;
    double      min_heartbeat;
    uint64_t    seed;
    long        bench_size;
    int         no_rate_limit;
    int         raw_unauth_omit;     /* [UNVERIFIED] A4.3: omit, not 13778 */
    int         require_token;       /* [UNVERIFIED] A2.4: private calls need access_token */
    int         string_timestamp;    /* [UNVERIFIED] A2.2: accept "ts" strings */
    int         no_aggregate;        /* 100ms / agg2 behave like raw */
    int         max_connections;     /* 0 unlimited; Deribit: 32 per IP */
    int         production;          /* testnet:false */
    size_t      max_output;          /* slow consumer bound per conn */
};

struct exsim_stats {
    uint64_t connections_total;   /* TCP connections accepted on the API port */
    uint64_t upgrades;            /* of which upgraded to WebSocket */
    uint64_t refused;             /* of which answered with an HTTP error */
    uint64_t connections_open;
    uint64_t max_concurrent;
    uint64_t auth_ok, auth_fail;
    uint64_t published, delivered;
    uint64_t cod_cancels;
    uint64_t closes_cod_on;       /* authenticated connections gone with
                                     cancel-on-disconnect on */
    uint64_t rate_limited;
    uint64_t heartbeat_closes;
    uint64_t slow_closes;
    uint64_t held_lost;           /* `hold` requests whose connection was
                                     gone before they ran (never run) */
    json_t  *requests;       /* method -> count */
    json_t  *grants;         /* grant_type -> public/auth answered ok */
    json_t  *tls_sni;        /* server name -> TLS handshakes with it */
};

struct exsim {
    struct event_base      *base;
    struct exsim_opts       o;
    SSL_CTX                *tls;
    struct evconnlistener  *ws_lev, *ctl_lev;
    int                     ws_port, ctl_port;
    struct exsim_conn      *conns;
    uint64_t                next_conn_id;
    struct exsim_chan      *chans;          /* global list */
    struct exsim_chan      *chash[1024];
    struct exsim_instr     *instrs;
    struct exsim_order     *orders;          /* open, newest first */
    struct exsim_order     *closed;          /* done, newest first */
    size_t                  nclosed;
    uint64_t                next_order_id, next_trade_id;
    struct exsim_token     *tokens;
    struct exsim_session   *sessions;
    struct exsim_nonce     *nonces;
    struct exsim_account   *accounts;        /* the default one first */
    struct exsim_ippool    *ippools;
    uint64_t                rng;
    double                  rate;
    struct event           *market_ev;       /* rate timer */
    struct event           *agg_ev;          /* 100 ms aggregation timer */
    uint64_t                agg_ticks;
    struct event           *bench_ev;
    /* flat-out bench paced by its reader: messages a channel may still
       publish, given by `credit N`; -1: no pacing */
    long long               bench_credit;
    int                     bench_spread;   /* rate > 0: channels in turn,
                                               not all at once */
    size_t                  bench_next;     /* the next channel's turn */
    /* faults */
    int                     stall;
    int                     refuse;          /* HTTP status or 0 */
    int                     reject_auth;
    int                     maintenance;     /* 11051 for most methods */
    json_t                 *reject_chan;     /* name -> true */
    json_t                 *mute_chan;       /* name -> true: not published */
    json_t                 *delay_method;    /* method -> ms its answer waits */
    json_t                 *fail_method;     /* method -> [code, calls left] */
    struct exsim_delayed   *delayed;         /* answers waiting to go out,
                                                and requests held */
    json_t                 *hold_method;     /* method -> ms it waits
                                                before it runs */
    int                     unheld;          /* running a held request */
    json_t                 *sub_counts;      /* name -> subscribes confirmed */
    struct exsim_stats      st;
    struct exsim_ctl       *ctls;
    struct event           *sig_int, *sig_term;
    struct event           *reap_ev;
    int                     quitting;
};

extern struct exsim *ex;

/* An answer held back by the `delay` control command. */
struct exsim_delayed {
    struct exsim_delayed *next, *prev;
    uint64_t              conn_id;   /* sent only if that conn still lives */
    char                 *text;
    size_t                len;
    struct event         *ev;
    int                   run;       /* a request held by `hold`: run it
                                        (not an answer to send) */
};
void exsim_delayed_free_all(void);

/* exsim_main.c */
uint64_t exsim_rand(void);
double exsim_rand01(void);
void exsim_quit(void);
void exsim_bench_kick(void);

/* exsim_rpc.c */
void exsim_conn_accept(evutil_socket_t fd);
void exsim_conn_drop(struct exsim_conn *c);     /* RST, no close frame */
void exsim_conn_close(struct exsim_conn *c, int code, const char *reason);
void exsim_conn_free_all(void);
void exsim_ippools_free(void);
void exsim_conn_stall(struct exsim_conn *c, int on);
int exsim_conn_authed(struct exsim_conn *c);
void exsim_send_json(struct exsim_conn *c, json_t *msg);  /* steals msg */
void exsim_notify_conn(struct exsim_conn *c, const char *channel,
    json_t *data);                                         /* steals data */
void exsim_publish(struct exsim_chan *ch, json_t *data);   /* steals data */
void exsim_publish_account(struct exsim_chan *ch, struct exsim_account *a,
    json_t *data);                                         /* steals data */
void exsim_publish_text(struct exsim_chan *ch, const char *text, size_t len);
void exsim_credits_init(struct exsim_credits *cr);
struct exsim_chan *exsim_chan_find(const char *name);
void exsim_chan_free_all(void);
json_t *exsim_error_obj(int code, const char *message, const char *reason,
    const char *param);

/* exsim_auth.c */
json_t *exsim_auth_handle(struct exsim_conn *c, json_t *params,
    json_t **err);
json_t *exsim_auth_fork(struct exsim_conn *c, json_t *params, json_t **err);
int exsim_auth_check(struct exsim_conn *c, json_t *params, json_t **err);
void exsim_auth_logout(struct exsim_conn *c, json_t *params);
void exsim_auth_conn_gone(struct exsim_conn *c);
void exsim_auth_free_all(void);
struct exsim_account *exsim_account_find(const char *id);
int exsim_account_add(const char *id, const char *secret);
void exsim_accounts_free(void);

/* exsim_sig.c */
/*
 * Computes the client_signature of A2.2: lowercase hex of
 * HMAC-SHA256(key SECRET, "TS\nNONCE\nDATA") into OUT (65 bytes with the
 * NUL). Returns 0, or -1 when OpenSSL fails.
 */
int exsim_sig_compute(const char *secret, const char *ts, const char *nonce,
    const char *data, char out[65]);

/* exsim_market.c */
int exsim_market_init(const char *list);
void exsim_market_free(void);
void exsim_market_step_all(void);
void exsim_market_set_rate(double hz);
struct exsim_instr *exsim_instr_find(const char *name);
int exsim_chan_parse(const char *name, struct exsim_chan *out);
void exsim_chan_subscribed(struct exsim_conn *c, struct exsim_chan *ch);
void exsim_chan_emptied(struct exsim_chan *ch);
double exsim_price(const struct exsim_instr *in, int64_t ticks);
double exsim_amount(const struct exsim_instr *in, int64_t lots);
json_t *exsim_instr_json(const struct exsim_instr *in);
json_t *exsim_ticker_json(const struct exsim_instr *in);
json_t *exsim_order_book_json(const struct exsim_instr *in, int depth);
json_t *exsim_last_trades_json(const struct exsim_instr *in, json_t *params,
    json_t **err);
json_t *exsim_last_trades_by_currency_json(json_t *params, json_t **err);
json_t *exsim_trades_sorted(json_t *arr, int desc, size_t count, int *more);
void exsim_book_apply(struct exsim_instr *in, json_t *bids, json_t *asks,
    int side, int64_t price, int64_t lots_new);
void exsim_book_publish_change(struct exsim_instr *in, json_t *bids,
    json_t *asks);
void exsim_trade_record(struct exsim_instr *in, int dir, int64_t price,
    int64_t lots, struct exsim_trade_rec *out);
json_t *exsim_trade_public_json(const struct exsim_instr *in,
    const struct exsim_trade_rec *t);
void exsim_trades_publish(struct exsim_instr *in, json_t *arr);

/* exsim_trade.c */
json_t *exsim_trade_method(struct exsim_conn *c, const char *method,
    json_t *params, json_t **err, int *handled);
void exsim_trade_after_step(struct exsim_instr *in);
void exsim_trade_conn_gone(struct exsim_conn *c);
size_t exsim_orders_open(const struct exsim_account *a);   /* NULL: all */
void exsim_trade_free_all(void);

#endif
