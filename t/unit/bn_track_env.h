/*
 * bn_track_env.h: the tracker environment Binance's tracker tests share
 * (t/unit/check_xg_bn_track.c: books; t/unit/check_xg_bn_trades.c:
 * trades): the real tracker engine with a send that records each REST
 * GET, whose answers the tests give, and a fan-out that collects what
 * subscribers got.
 */
#ifndef BN_TRACK_ENV_H
#define BN_TRACK_ENV_H

#include "xg_core.h"
#include "xg_registry.h"
#include "xg_track.h"
#include "xg_venue_binance.h"

#include <check.h>

#define MAXQ    1024
#define MAXOUT  8192

extern struct xg_track_env env;
extern struct event_base *base;
extern uint64_t now_ms;
extern struct xg_reg_req *sent[MAXQ];  /* GETs in order; NULL: answered */
extern int nsent;
extern char *out[MAXOUT];              /* what subscribers got, in order */
extern int nout;
extern int nnotice;
extern char notice[96];
extern int chan_token;

void out_clear(void);
void setup(void);
void teardown(void);
struct xg_track *track(enum xg_bn_market m, const char *name);
int feed(struct xg_track *t, const char *s);
struct xg_reg_req *last_q(void);
void answer(struct xg_track *t, const char *body);
void answer_status(struct xg_track *t, int status);
void wait_sent(int n);
void add_case(Suite *s, const char *name, const TTest *const *t);

#endif
