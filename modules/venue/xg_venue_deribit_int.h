/*
 * xg_venue_deribit_int.h: what the Deribit venue's files share
 * (xg_venue_deribit.c: the codec, restore, requests and clients;
 * xg_venue_deribit_track.c: its continuity kinds; xg_venue_deribit_cod.c:
 * the clients' cancel-on-disconnect). Nothing outside modules/venue/
 * includes it.
 */
#ifndef XG_VENUE_DERIBIT_INT_H
#define XG_VENUE_DERIBIT_INT_H

#include "xg_core.h"
#include "xg_budget.h"
#include "xg_client.h"
#include "xg_conf.h"
#include "xg_book.h"
#include "xg_venue_deribit.h"
#include "xg_jscan.h"
#include "xg_log.h"
#include "xg_nonce.h"
#include "xg_venue.h"
#include "xg_registry.h"
#include "xg_session.h"
#include "xg_track.h"
#include "xg_timer.h"

#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/event.h>
#include <jansson.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>

#define DR_MAX_FRAME        (32 * 1024)    /* Deribit's request size cap */
#define DR_BATCH_BYTES      (30 * 1024)    /* subscribe chunks stay under it */
#define DR_TICK_MS          1000           /* the heartbeat check */
#define DR_MIN_CLIENT_HB_S  10             /* as Deribit: interval >= 10 */
#define DR_TOKEN_TTL_S      31536000
#define DR_SIG_WINDOW_MS    60000          /* client_signature timestamps */
#define DR_NONCE_MAX        4096           /* client_signature nonces held
                                              (per upstream, for the window) */
#define DR_FETCH_RETRY_MS   200            /* a fetch refused for now: first
                                              retry, doubling ... */
#define DR_FETCH_RETRY_MAX_MS 3200         /* ... up to this */
#define DR_FETCH_TRIES      8              /* retries before giving up */
#define DR_MAX_HELD         1000           /* live messages held while a
                                              continuity fetch is out */
/* ---- conf ---- */

/* The request budget's pools (xg_venue_deribit_budget.c). */
enum {
    DR_POOL_NON_MATCHING = 0,
    DR_POOL_MATCHING,
    DR_POOL_SUBSCRIBE,
    DR_POOL_INSTRUMENTS,
    DR_POOLS
};

enum dr_auth_kind {
    DR_AUTH_NONE = 0,
    DR_AUTH_CREDENTIALS,
    DR_AUTH_SIGNATURE
};


struct dr_account;

struct dr_conf {
    enum dr_auth_kind  auth;
    char              *auth_id;
    char              *auth_secret;
    char              *auth_scope;       /* "connection" or "session:NAME" */
    uint64_t           heartbeat_ms;     /* 0: none */
    int                cod;
    uint64_t           request_timeout_ms;
    struct xg_stale   *stale;            /* in conf order: first match */
    size_t             nstale;
    char              *auth_id_src;      /* env:/file: of the id, or NULL */
    char              *auth_secret_src;  /* env:/file: of the secret (-T) */
    struct dr_account *accounts;         /* account NAME { ... }, in order */
    size_t             naccounts;
    int                rate_limit;       /* the request budget: on, off */
    double             rl_max[DR_POOLS];    /* rate_limit_pool (0: */
    double             rl_refill[DR_POOLS]; /* Deribit's default) */
    struct dr_edge_conf *edge;           /* protocol edge, else NULL */
};

/* `account NAME { auth ...; cancel_on_disconnect ...; heartbeat ...; }` */
struct dr_account {
    char              *name;
    struct dr_conf    *cf;
};


/* ---- instance ---- */

enum dr_kind {
    K_CLIENT = 1,      /* a client's request, forwarded */
    K_AUTH,            /* restore: public/auth */
    K_REFRESH,         /* public/auth with the refresh_token grant */
    K_HEARTBEAT,       /* restore: public/set_heartbeat */
    K_COD,             /* restore: private/enable_cancel_on_disconnect */
    K_TEST,            /* our answer to a test_request */
    K_CANCEL,          /* a client's emulated cancel-on-disconnect */
    K_BACKFILL,        /* trades missed during an outage */
    K_ORDERS,          /* user.orders reconcile after an outage */
    K_CTRADES,         /* a currency's trades missed during an outage */
    K_ORDERS_CHECK,    /* a client's tracked orders against get_open_orders */
    K_COD_CHECK,       /* the same for a client that left, before cancels */
    K_COD_ORDER,       /* an order request of a client that left (COD on) */
    K_COD_OFF,         /* a rotation: private/disable_cancel_on_disconnect
                          on the old connection before its close */
    K_OUTCOME          /* a lost order answer's lookup (outcome.c) */
};

struct dr_client;
struct dr_cod;
struct dr_acct;
struct dr_split;

struct dr {
    struct xg_upstream    *up;
    const struct dr_conf  *cf;
    const char            *name;
    struct event_base     *base;
    struct xg_registry    *reg;
    struct xg_session     *s;            /* subscriptions */
    uint64_t               last_in_ms;
    int                    testnet;       /* as the exchange last said */
    uint64_t               book_gaps;     /* chain breaks detected */
    uint64_t               book_resyncs;  /* bridging changes computed */
    uint64_t               book_errors;   /* malformed book messages */
    uint64_t               gap_notices;   /* exgate/gap messages sent */
    uint64_t               orders_reconciled; /* order states delivered */
    uint64_t               orders_reconciles; /* channels reconciled */
    uint64_t               currency_trades_backfilled;
    uint64_t               unrepaired_gaps;
    uint64_t               requests_answered;  /* clients' requests: */
    uint64_t               requests_timed_out;
    uint64_t               requests_outcome_unknown;
    uint64_t               requests_rejected;  /* refused by exgate */
    struct xg_track_env    track;          /* its continuity trackers' */
    char                  *refresh_token;
    struct xg_nonce       *nonces;       /* local client_signature nonces */
    struct xg_timer       *ev_tick;
    struct xg_timer       *ev_refresh;
    struct dr_client      *clients;
    unsigned               nclients;
    struct dr_cod         *cods;         /* clients that left, COD unsettled */
    uint64_t               cod_last_id;
    uint64_t               cod_checks;    /* get_open_orders sent for them */
    uint64_t               cod_cancels;   /* private/cancel sent */
    uint64_t               cod_offs;      /* disabled on a retiring conn */
    uint64_t               cod_off_failed;
    /* accounts (xg_venue_deribit_acct.c): the upstream's children, one
       connection each, or the account this instance is (parent set) */
    struct dr_acct       **accts;
    unsigned               nacct;
    struct dr             *parent;
    uint64_t               split_seq;
    uint64_t               account_refused;   /* private calls without one */
    struct dr_outcome     *outcomes;     /* lost order answers looked up */
    uint64_t               outcome_last_id;
    uint64_t               outcome_lookups;  /* started */
    uint64_t               outcome_notices;  /* exgate/order_outcome sent */
    uint64_t               outcomes_by[4];   /* by enum dr_oc_result */
    uint64_t               label_seq_base;   /* xg-SEQ-N: SEQ's first */
    uint64_t               label_clients;
    struct dr_edge        *edge;         /* protocol edge (xg_venue_edge.c) */
    struct dr_edges       *edges;        /* requests from edges, or NULL */
};

struct dr_client {
    struct dr             *d;
    struct xg_client      *c;
    struct xg_reg_client  *rc;
    int                    authed;
    char                   refresh[48];
    int                    cod;
    size_t                 check_at;      /* tracked orders: check at this */
    uint64_t               hb_ms;
    int                    hb_waiting;
    struct xg_timer       *ev_hb;
    int                    notify_gaps;   /* exgate/notify_gaps enabled */
    struct dr_client      *prev, *next;
    struct dr_client      *twin;          /* on its account's instance */
    struct dr_client      *main;          /* a twin: the client's own */
    struct dr_split       *splits;        /* subscribes over both */
    int                    notify_outcome; /* exgate/notify_order_outcome:
                                              1 on, -1 off, 0 as listener */
    uint64_t               label_seq;     /* its labels' SEQ (0: none yet) */
    uint64_t               label_n;       /* its labelled orders */
};


/* A client that left with cancel-on-disconnect on (xg_venue_deribit_cod.c) */
#define DR_COD_CHECK_MIN    128

struct dr_cod {
    uint64_t         id;          /* the tag of its requests */
    char            *name;        /* the client's, for the log */
    char            *reason;      /* why it left */
    json_t          *owned;       /* ids of the orders it placed (a set) */
    json_t          *check;       /* ids to check with the next answer */
    json_t          *cancelled;   /* ids a cancel was sent for */
    int              checking;    /* a K_COD_CHECK queued or in flight */
    unsigned         refs;        /* its requests queued or in flight */
    struct dr_cod   *prev, *next;
};

/* ---- shared between the venue's files ---- */

void dr_book_joined(struct dr_client *dc, struct xg_reg_channel *ch, int live);
void dr_book_left(struct dr_client *dc, struct xg_reg_channel *ch);
void dr_books_left(struct dr_client *dc);
char *dr_book_snapshot(void *p, struct xg_reg_channel *ch, size_t *len);
void dr_cod_check(struct dr *d, struct dr_cod *cod);
void dr_cod_free(struct dr_cod *cod);
int dr_cod_lost(struct dr *d, struct xg_reg_req *q);
void dr_budget_conf(const struct dr_conf *cf, struct xg_budget_conf *bc);
void dr_budget_dump(struct xg_conf_dump *d, const char *name,
    const struct dr_conf *c);
unsigned dr_cost(void *p, const struct xg_reg_req *q, double *cost);
int dr_set_rate_limit_pool(struct xg_conf *cf, const struct xg_conf_stmt *st,
    const struct xg_command *cmd, void *conf);
int dr_error_transient(const struct xg_jspan *error);
void dr_fetch_answer(struct dr *d, struct xg_reg_req *q,
    const struct xg_jspan *result, const struct xg_jspan *error);
int dr_fetch_retry(struct dr *d, struct xg_reg_req *q, const char *why, int len);
void dr_gap_notice(struct dr *d, struct xg_reg_channel *ch, uint64_t duration_ms,
    const char *reason);
struct xg_reg_req * dr_internal(int kind, const char *method, json_t *params);
int dr_is_order_edit(const char *method);
int dr_is_order_place(const char *method);
void dr_on_cod_cancel(struct dr *d, struct xg_reg_req *q,
    const struct xg_jspan *error);
void dr_on_cod_check(struct dr *d, struct xg_reg_req *q,
    const struct xg_jspan *result, const struct xg_jspan *error);
void dr_on_cod_order(struct dr *d, struct xg_reg_req *q,
    const struct xg_jspan *result);
void dr_on_tracked_check(struct dr *d, struct xg_reg_req *q,
    const struct xg_jspan *result, const struct xg_jspan *error);
int dr_send(struct dr *d, struct xg_reg_req *q);
int dr_send_on(struct dr *d, struct xg_reg_req *q, struct xg_conn *c);
void dr_on_cod_off(struct dr *d, struct xg_reg_req *q,
    const struct xg_jspan *error);
void dr_retiring(void *p, struct xg_conn *c);
enum xg_track_cross dr_cross(void *p, struct xg_reg_channel *ch,
    const char *data, size_t len);
void dr_cross_force(void *p, struct xg_reg_channel *ch, int lost);
void dr_cross_done(void *p, struct xg_reg_channel *ch, int dropped);
void dr_submit(struct dr *d, struct xg_reg_req *q, struct dr_client *dc);
void dr_track_confirmed(struct dr *d, struct xg_reg_channel *ch);
void dr_track_fanout(void *ctx, void *chan, const char *data, size_t len);
void dr_track_free(void *ext);
struct xg_track * dr_track_get(struct dr *d, struct xg_reg_channel *ch);
void dr_track_notice(void *ctx, void *chan, uint64_t duration_ms,
    const char *reason);
uint64_t dr_track_now(void *ctx);
void dr_track_send(void *ctx, void *chan, struct xg_reg_req *q);
void dr_tracked_answer(struct dr *d, struct dr_client *dc, const char *method,
    const struct xg_jspan *result);
void dr_tracks_down(struct dr *d);

/* auth (xg_venue_deribit_auth.c) */
void dr_client_auth(struct dr_client *dc, const char *id, json_t *params);
void dr_random_hex(char *out, size_t nbytes);
void dr_signature(const char *secret, const char *ts, const char *nonce,
    const char *data, char *out);

/* accounts (xg_venue_deribit_acct.c) */
int dr_set_account(struct xg_conf *cf, const struct xg_conf_stmt *st,
    const struct xg_command *cmd, void *conf);
void dr_account_dump(struct xg_conf_dump *dump, const struct xg_command *cmd,
    const struct dr_conf *c);
void dr_account_conf_free(struct dr_conf *c);
int dr_accts_create(struct dr *d, const struct xg_upstream_conf *conf);
void dr_accts_free(struct dr *d);
void dr_accts_reconf(struct dr *d, const struct xg_upstream_conf *conf);
void dr_accts_status(struct dr *d, json_t *obj);
int dr_acct_bind(struct dr *d, struct dr_client *dc, const char *account);
struct dr_client *dr_acct_route(struct dr_client *dc, struct dr **dp);
void dr_acct_sync(struct dr_client *dc);
void dr_acct_client_close(struct dr_client *dc, const char *reason);
void dr_acct_subscribe(struct dr *d, struct dr_client *dc, const char *id,
    char **names, size_t n, unsigned max, int public_only);
int dr_acct_split_answer(struct dr_client *dc, struct xg_reg_subreq *sr);
int dr_is_private_channel(const char *name);
void dr_client_free(struct dr *d, struct dr_client *dc, const char *reason);
struct dr_client *dr_client_new(struct dr *d, struct xg_client *c);
void dr_error(struct dr_client *dc, const char *id, int code,
    const char *message, const char *data);
void dr_reply_json(struct dr_client *dc, const char *id, json_t *result);
void dr_error_raw(struct dr_client *dc, const char *id, const char *error);
char *dr_error_text(const struct dr *d, const char *id, int code,
    const char *message, const char *reason);
void dr_client_message(void *p, void *cs, const unsigned char *udata,
    size_t len);
int dr_is_local_method(const char *method);
void *dr_new(struct xg_upstream *up, const struct xg_upstream_conf *conf,
    const struct dr_conf *cf);
void dr_free(struct dr *d);
void dr_status_obj(struct dr *d, json_t *obj);
extern const struct xg_venue xg_venue_deribit_account;
void *dr_create_conf(struct xg_conf *cf);

/* ---- protocol edge: Deribit out of a core's Redis (xg_venue_edge.c) ---- */

struct dr_edge_conf;
struct dr_edge;
struct xg_conf_dump;
extern const struct xg_command dr_edge_commands[];
extern const char *const dr_edge_restart_names[];
void *dr_edge_create_conf(struct xg_conf *cf);
int dr_edge_dump(struct xg_conf_dump *d, const struct xg_command *cmd,
    const void *conf);
struct xg_ws *dr_edge_connect(void *p, struct xg_conn *c,
    const struct xg_ws_opts *opts, const struct xg_ws_cbs *cbs, void *arg);
int dr_edge_reconf_check(void *p, const struct xg_upstream_conf *conf);
void dr_edge_reconf(struct dr *d, const struct xg_upstream_conf *conf);
void dr_edge_status(struct dr *d, json_t *obj);
void dr_edge_free(struct dr *d);
void dr_edge_hole(struct dr *d, const char *name);
/* ---- requests from edges (xg_venue_deribit_edges.c) ---- */

struct dr_edges;

struct dr_edges *dr_edges_new(struct dr *d, const struct xg_upstream_conf *uc);
void dr_edges_reconf(struct dr_edges *es, const struct xg_upstream_conf *uc);
void dr_edges_free(struct dr_edges *es);
void dr_edges_status(const struct dr_edges *es, json_t *obj);
int dr_edge_name_ok(const char *name, size_t len);
int dr_edge_decimal_ok(const char *s, size_t len);
char *dr_edge_body(const char *body, size_t len, const char *rid,
    const char **why);

/* ---- lost order answers resolved (xg_venue_deribit_outcome.c) ---- */

#define DR_LABEL_MAX        64             /* Deribit's label length */

enum dr_oc_result {
    OC_PLACED = 0,
    OC_NOT_PLACED,
    OC_CANCELLED,
    OC_UNKNOWN
};

struct dr_outcome;

void dr_cod_outcome(struct dr *d, uint64_t cod_id, const char *open_oid);
void dr_outcome_answer(struct dr *d, struct xg_reg_req *q,
    const struct xg_jspan *result, const struct xg_jspan *error);
int dr_outcome_edit_applied(json_t *order, json_t *params);
json_t * dr_outcome_find_label(json_t *orders, const char *label);
void dr_outcome_free_all(struct dr *d);
unsigned dr_outcome_gone(struct dr *d, struct dr_client *dc, uint64_t cod);
int dr_outcome_label(struct dr_client *dc, const char *method,
    json_t *params);
int dr_outcome_label_make(char *buf, size_t n, uint64_t seq, uint64_t k);
int dr_outcome_lost(struct dr *d, struct dr_client *dc, struct xg_reg_req *q,
    uint64_t cod);
int dr_outcome_method(const char *method);
void dr_outcome_status(struct dr *d, json_t *obj);
int dr_outcome_wanted(const struct dr_client *dc);

#endif
