/*
 * xg_deribit_fixture.h: the harness of check_xg_deribit.c, a
 * characterization suite of the Deribit session as clients and the
 * exchange see it. Everything runs in the test process, on one
 * event_base the test drives:
 *
 * - the exchange: a WebSocket server made with xg_ws_accept() on a
 *   loopback port. Every frame exgate sends upstream is recorded in one
 *   FIFO; the test takes them in order (ex_expect) and answers or pushes
 *   golden JSON frames;
 * - exgate: the upstream and its listener built from a conf string and
 *   started with xg_upstream_start_all() / xg_listen_start_all(), as
 *   src/exgate.c does;
 * - clients: TCP sockets connected to the real listener, one JSON
 *   message per line; every message received is kept (parsed, with its
 *   raw id text) and taken by the test with cl_expect().
 *
 * Time is the real monotonic clock: tests use short conf durations and
 * wait on conditions with generous timeouts (FX_WAIT_MS). Only the
 * harness touches exgate's API; the assertions in check_xg_deribit.c talk
 * in frames, so the module can be split with this file as the only one
 * that might need adapting.
 *
 * Returned json_t pointers are borrowed: the harness frees them at
 * teardown.
 */
#ifndef XG_DERIBIT_FIXTURE_H
#define XG_DERIBIT_FIXTURE_H

#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

/* How long any awaited event may take before the test fails. */
#define FX_WAIT_MS 3000

/* ---- life cycle ---- */

/* Checked fixture: event base, the fake exchange's listening socket. */
void fx_setup(void);
void fx_teardown(void);

/*
 * Builds exgate from a conf: upstream "x" on the fake exchange
 * (protocol deribit, no pings, reconnect fixed 50ms) with UPSTREAM_BODY
 * added inside its block, one TCP listener on a free loopback port, and
 * MAIN_BODY at the top level ("client_auth off;" unless it says
 * otherwise). Starts the upstream and the listener.
 */
void fx_start(const char *upstream_body, const char *main_body);

/* Runs the loop until COND(ARG) holds or MS pass; returns COND's value. */
typedef int (*fx_cond_fn)(const void *arg);
int loop_until(fx_cond_fn cond, const void *arg, unsigned ms);
/* Runs the loop for MS. */
void loop_for(unsigned ms);

/* ---- the exchange ---- */

/* Connections accepted so far (the first is 1). */
int ex_nconns(void);
/* Waits for connection N to be open; fails the test otherwise. */
void ex_wait_conn_(int n);

/*
 * Takes exgate's next upstream frame, waiting up to MS; NULL if none. The
 * frame's connection number goes to *CONN when CONN is not NULL.
 */
json_t *ex_next(unsigned ms, int *conn);
/* Takes the next frame and checks its method; fails the test otherwise. */
json_t *ex_expect_(const char *method);
/* Runs the loop for MS, then asserts that no frame is left untaken:
   exgate sent nothing the test did not take. */
void ex_quiet_(unsigned ms);
/* Frames received and not taken yet. */
size_t ex_pending(void);

/* Answers REQ (a frame taken above) with RESULT (JSON text). */
void ex_answer(json_t *req, const char *result_json);
/* Answers REQ with a JSON-RPC error. */
void ex_error(json_t *req, int code, const char *message);
/* Sends TEXT (one JSON message) on the current connection. */
void ex_push(const char *text);
void ex_pushf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* Drops the current connection (TCP closed, no close frame). */
void ex_drop(void);
/* The same three on connection CONN (1, 2, ...), whichever is current. */
void ex_push_on(int conn, const char *text);
void ex_pushf_on(int conn, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
void ex_drop_on(int conn);
/* 1 while connection CONN is open (exgate has not closed it). */
int ex_is_open(int conn);

/* Starts a make-before-break rotation of upstream "x" (as the admin
   endpoint does). */
void fx_rotate(void);
/* Upstream "x"'s /status object (kept). */
json_t *fx_status(void);

/* The connection frame REQ came on (0: not a frame exgate sent). */
int ex_conn_of(json_t *req);
/* The params of frame REQ (borrowed). */
json_t *ex_params(json_t *req);
/*
 * 1 when REQ's params.channels holds exactly the channels listed (a NULL-
 * terminated list), in any order.
 */
int ex_channels_are(json_t *req, ...) __attribute__((sentinel));

/* ---- clients ---- */

struct fx_client;

/* One received message. */
struct fx_msg {
    char   *text;
    json_t *j;          /* parsed (big integers as reals); NULL if not JSON */
    char   *id;         /* the raw text of "id", or NULL */
    size_t  seq;        /* arrival order at this client (0, 1, ...) */
    int     taken;
};

typedef int (*fx_pred_fn)(const struct fx_msg *m, const void *arg);

/* A TCP client connected to the listener. */
struct fx_client *cl_connect(const char *name);
/* Closes the client's socket (the gateway sees it leave). */
void cl_close(struct fx_client *c);
/* Sends one line (a newline is added). */
void cl_send(struct fx_client *c, const char *text);
void cl_sendf(struct fx_client *c, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/*
 * Waits for the first message not taken yet for which PRED(ARG) holds;
 * marks it taken and returns it (valid until teardown). Fails the test
 * after FX_WAIT_MS.
 */
const struct fx_msg *cl_expect_(struct fx_client *c, fx_pred_fn pred,
    const void *arg);
/* The answer whose raw id text is ID (e.g. "7", "\"abc\""). */
json_t *cl_answer_(struct fx_client *c, const char *id);
/* The next notification on CHANNEL (method "subscription"). */
json_t *cl_note_(struct fx_client *c, const char *channel);
/* How many messages received so far (taken or not) match PRED. */
size_t cl_count(struct fx_client *c, fx_pred_fn pred, const void *arg);
/* Messages received and not taken yet. */
size_t cl_untaken(struct fx_client *c);
/* Runs the loop for MS, then asserts that the client holds no message
   the test did not take. */
void cl_quiet_(struct fx_client *c, unsigned ms);
/* A description of the untaken messages, for failure text. */
const char *cl_dump(struct fx_client *c);

/* Predicates for cl_expect/cl_count. */
int fx_is_answer(const struct fx_msg *m, const void *id);
int fx_is_note(const struct fx_msg *m, const void *channel);
int fx_is_method(const struct fx_msg *m, const void *method);
int fx_any(const struct fx_msg *m, const void *unused);

/* ---- JSON helpers ----
 *
 * Careful: jansson's json_is_*() macros evaluate their argument twice;
 * never pass them a call that waits (cl_answer(), ex_expect()).
 */

/* json_loads that fails the test on bad text. The result is kept. */
json_t *fx_json(const char *text);
/* Member PATH ("params.data.change_id") of J, or NULL. */
json_t *fx_get(json_t *j, const char *path);
/* The integer at PATH (reals are truncated); fails when absent. */
long long fx_int(json_t *j, const char *path);
/* The string at PATH, or NULL. */
const char *fx_str(json_t *j, const char *path);
/* Compact text of J (kept until teardown), for messages. */
const char *fx_text(json_t *j);

/* The monotonic clock in ms (for elapsed times). */
uint64_t fx_now_ms(void);
/* Wall clock in ms (for order timestamps the module compares). */
long long fx_wall_ms(void);

/*
 * The waiting helpers above are macros that record the caller's line
 * first (fx_at), so that a failure inside the harness names the line of
 * the test that waited.
 */
void fx_at(const char *file, int line);
#define FX_AT(call) (fx_at(__FILE__, __LINE__), call)
#define ex_wait_conn(n)       FX_AT(ex_wait_conn_(n))
#define ex_expect(m)          FX_AT(ex_expect_(m))
#define ex_quiet(ms)          FX_AT(ex_quiet_(ms))
#define cl_expect(c, p, a)    FX_AT(cl_expect_(c, p, a))
#define cl_answer(c, id)      FX_AT(cl_answer_(c, id))
#define cl_note(c, ch)        FX_AT(cl_note_(c, ch))
#define cl_quiet(c, ms)       FX_AT(cl_quiet_(c, ms))

#endif
