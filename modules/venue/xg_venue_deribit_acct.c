/*
 * xg_venue_deribit_acct.c: several exchange accounts behind one Deribit
 * upstream.
 *
 *     upstream deribit {
 *         url ...; protocol deribit;
 *         account desk-a { auth client_signature env:A_ID env:A_SECRET;
 *                          cancel_on_disconnect on; }
 *         account desk-b { auth client_signature env:B_ID env:B_SECRET; }
 *     }
 *     client_credentials bot-1 env:BOT1_SECRET account=desk-a;
 *
 * The upstream's own connection carries the public channels and methods
 * of every bot. Each account is a child upstream ("deribit/desk-a") with
 * a Deribit instance of its own: its connection, authenticated with the
 * account's credentials, supervised, rotated and restored on its own
 * (auth, heartbeat, cancel-on-disconnect, its channels, its queued
 * requests), in /status under "accounts".
 *
 * A bot that authenticates with credentials naming an account gets a
 * "twin" on that account's instance: a client of it writing to the same
 * connection. Its private/ methods and user.* channels go through the
 * twin and nowhere else, so one account's orders and notifications never
 * reach a bot of another. A subscribe that names both kinds is split and
 * answered once, when both parts are (struct dr_split). The single-`auth`
 * form keeps working: the upstream's own connection is then the unnamed
 * account of the bots that name none. A bot that names none on an
 * upstream whose own connection has no auth gets 13009 for private calls.
 */
#include "xg_venue_deribit_int.h"
#include "xg_upstream.h"

#include <ctype.h>

struct dr_acct {
    struct dr              *parent;
    char                   *name;        /* the child upstream's: "up/acct" */
    const char             *acct;        /* the account's own name */
    struct xg_upstream_conf ucf[2];      /* two: a reload never edits the
                                            live one */
    struct dr_conf          cf[2];       /* the account's, with what it
                                            inherits from the upstream */
    int                     cur;
    struct xg_upstream     *up;
    struct dr              *d;           /* its instance */
};

/* A subscribe over both connections: answered when both parts are. */
struct dr_split {
    char                tag[32];     /* the parts' client id: not JSON, so
                                        no client's id can equal it */
    char               *id;          /* the client's own id */
    char              **names;       /* requested, in order */
    size_t              n;
    json_t             *ok;          /* names confirmed (a set) */
    char               *error;       /* the first part's error object */
    int                 parts;
    struct dr_split    *next;
};

/* ---- conf ------------------------------------------------------------- */

void
dr_account_conf_free(struct dr_conf *c)
{
    size_t i;

    for (i = 0; i < c->naccounts; i++) {
        free(c->accounts[i].name);
        /* the account's dr_conf is the conf's (xg_conf_calloc) */
    }
    free(c->accounts);
    c->accounts = NULL;
    c->naccounts = 0;
}

/* account NAME { auth ...; auth_scope ...; cancel_on_disconnect ...;
   heartbeat ...; } (repeatable; auth is required) */
int
dr_set_account(struct xg_conf *cf, const struct xg_conf_stmt *st,
    const struct xg_command *cmd, void *conf)
{
    struct dr_conf *c = conf, *ac;
    const struct xg_venue *v = xg_venue_find("deribit");
    const struct xg_command *tables[2] = { v->commands, NULL };
    size_t i;
    int n;

    if (!xg_conf_name_ok(st->args[1])) {
        return xg_conf_error(cf, st, "\"account\": bad name \"%s\" (letters, "
            "digits, \"_\", \"-\", \".\")", st->args[1]);
    }
    for (i = 0; i < c->naccounts; i++) {
        if (strcmp(c->accounts[i].name, st->args[1]) == 0) {
            return xg_conf_error(cf, st, "\"account\": duplicate account "
                "\"%s\"", st->args[1]);
        }
    }
    ac = v->create_conf(cf);
    /* an account's key is compared on reload by dr_accts_reconf(), which
       rotates that account's connection only, not the upstream's */
    cf->secrets_apart = 1;
    n = xg_conf_dispatch(cf, st->block, st->nblock, XG_CONF_ACCOUNT,
        tables, ac);
    cf->secrets_apart = 0;
    if (n != 0) {
        return XG_ERROR;
    }
    if (ac->auth == DR_AUTH_NONE) {
        return xg_conf_error(cf, st, "\"account\": \"%s\" has no auth "
            "(auth client_signature|client_credentials ID SECRET;)",
            st->args[1]);
    }
    c->accounts = xg_realloc(c->accounts,
        (c->naccounts + 1) * sizeof(*c->accounts));
    c->accounts[c->naccounts].name = xg_strdup(st->args[1]);
    c->accounts[c->naccounts].cf = ac;
    c->naccounts++;
    return XG_OK;
}

/* `exgate -T`: each account as a block, its secrets by source. */
void
dr_account_dump(struct xg_conf_dump *dump, const struct xg_command *cmd,
    const struct dr_conf *c)
{
    const struct xg_venue *v = xg_venue_find("deribit");
    size_t i;

    if (c->naccounts == 0) {
        xg_conf_dump_comment(dump, "%s: none (one connection: the "
            "upstream's auth, if any, is its account)", cmd->name);
        return;
    }
    for (i = 0; i < c->naccounts; i++) {
        xg_conf_dump_begin(dump);
        xg_conf_dump_word(dump, cmd->name);
        xg_conf_dump_word(dump, c->accounts[i].name);
        xg_conf_dump_open(dump);
        xg_conf_dump_table(dump, v->commands, XG_CONF_ACCOUNT, v->dump,
            c->accounts[i].cf);
        xg_conf_dump_close(dump);
    }
}

/* ---- the accounts' instances ------------------------------------------- */

/* A's conf from the upstream's CONF: its own block, the rest inherited. */
static void
dr_acct_conf(struct dr_acct *a, const struct xg_upstream_conf *conf,
    const struct dr_conf *own)
{
    const struct dr_conf *pc = conf->proto_conf;
    struct dr_conf *c = &a->cf[a->cur];
    struct xg_upstream_conf *u = &a->ucf[a->cur];

    *c = *own;
    c->accounts = NULL;
    c->naccounts = 0;
    if (c->heartbeat_ms == 0) {
        c->heartbeat_ms = pc->heartbeat_ms;
    }
    c->request_timeout_ms = pc->request_timeout_ms;
    c->stale = pc->stale;
    c->nstale = pc->nstale;
    /* the request budget's settings are the upstream's; each account has
       a budget of its own (its session's) */
    c->rate_limit = pc->rate_limit;
    memcpy(c->rl_max, pc->rl_max, sizeof(c->rl_max));
    memcpy(c->rl_refill, pc->rl_refill, sizeof(c->rl_refill));
    *u = *conf;
    u->name = a->name;
    u->proto_conf = a;
    u->next = NULL;
    u->rest_url_set = 0;
}

/* The child's create (xg_venue_deribit_account): its conf is the acct. */
void *
dr_acct_create(struct xg_upstream *up, const struct xg_upstream_conf *conf)
{
    struct dr_acct *a = (struct dr_acct *) conf->proto_conf;
    struct dr *d = dr_new(up, conf, &a->cf[a->cur]);

    d->parent = a->parent;
    a->d = d;
    return d;
}

/* A new account NAME (conf CF) of D, its connection started; NULL when
   its upstream cannot be made (logged). */
static struct dr_acct *
dr_acct_new(struct dr *d, const struct xg_upstream_conf *conf,
    const char *name, const struct dr_conf *cf)
{
    struct dr_acct *a = xg_calloc(1, sizeof(*a));
    size_t n;

    a->parent = d;
    n = strlen(d->name) + strlen(name) + 2;
    a->name = xg_malloc(n);
    snprintf(a->name, n, "%s/%s", d->name, name);
    a->acct = a->name + strlen(d->name) + 1;
    dr_acct_conf(a, conf, cf);
    a->up = xg_upstream_create_proto(d->base, xg_upstream_dns(d->up),
        &a->ucf[a->cur], &xg_venue_deribit_account);
    if (a->up == NULL) {
        xg_upstream_log(XG_LOG_ERROR, d->up, "account %s: cannot create its "
            "connection", name);
        free(a->name);
        free(a);
        return NULL;
    }
    xg_upstream_start(a->up);
    return a;
}

/* A's connection and instance go; its twins with them (last resort). */
static void
dr_acct_free(struct dr_acct *a)
{
    xg_upstream_free(a->up);    /* frees its instance */
    free(a->name);
    free(a);
}

int
dr_accts_create(struct dr *d, const struct xg_upstream_conf *conf)
{
    const struct dr_conf *pc = conf->proto_conf;
    struct dr_acct *a;
    size_t i;

    if (pc == NULL || pc->naccounts == 0) {
        return XG_OK;
    }
    d->accts = xg_calloc(pc->naccounts, sizeof(*d->accts));
    for (i = 0; i < pc->naccounts; i++) {
        a = dr_acct_new(d, conf, pc->accounts[i].name, pc->accounts[i].cf);
        if (a == NULL) {
            return XG_ERROR;
        }
        d->accts[d->nacct++] = a;
    }
    xg_upstream_log(XG_LOG_INFO, d->up, "%u account%s, a connection each",
        d->nacct, d->nacct == 1 ? "" : "s");
    return XG_OK;
}

void
dr_accts_free(struct dr *d)
{
    unsigned i;

    for (i = 0; i < d->nacct; i++) {
        dr_acct_free(d->accts[i]);
    }
    free(d->accts);
    d->accts = NULL;
    d->nacct = 0;
}

/* Whether what the account's connection was opened with changed. */
static int
dr_acct_rekey(const struct dr_conf *o, const struct dr_conf *n)
{
    return o->auth != n->auth || strcmp(o->auth_id, n->auth_id) != 0
           || strcmp(o->auth_secret, n->auth_secret) != 0
           || (o->auth_scope == NULL) != (n->auth_scope == NULL)
           || (o->auth_scope != NULL
               && strcmp(o->auth_scope, n->auth_scope) != 0)
           || o->cod != n->cod || o->heartbeat_ms != n->heartbeat_ms;
}

/*
 * A reload: the accounts of the new CONF, matched by name. One that
 * stays gets its new conf (a changed key, scope, heartbeat or
 * cancel-on-disconnect rotates its connection onto it, make before
 * break); a new one gets its connection; a removed one's bots are closed
 * (1012: they could not trade any more) and its connection goes.
 */
void
dr_accts_reconf(struct dr *d, const struct xg_upstream_conf *conf)
{
    const struct dr_conf *pc = conf->proto_conf;
    size_t na = pc != NULL ? pc->naccounts : 0, i;
    struct dr_acct **now = xg_calloc(na + 1, sizeof(*now)), *a;
    struct dr_client *dc, *next;
    struct xg_budget_conf bc;
    unsigned k, n = 0;

    for (i = 0; i < na; i++) {
        const struct dr_conf *old;

        for (a = NULL, k = 0; k < d->nacct; k++) {
            if (d->accts[k] != NULL
                && strcmp(d->accts[k]->acct, pc->accounts[i].name) == 0)
            {
                a = d->accts[k];
                d->accts[k] = NULL;     /* kept */
                break;
            }
        }
        if (a == NULL) {
            a = dr_acct_new(d, conf, pc->accounts[i].name,
                pc->accounts[i].cf);
            if (a != NULL) {
                xg_upstream_log(XG_LOG_INFO, d->up, "reload: account %s "
                    "added", a->acct);
                now[n++] = a;
            }
            continue;
        }
        old = &a->cf[a->cur];
        a->cur ^= 1;
        dr_acct_conf(a, conf, pc->accounts[i].cf);
        a->d->cf = &a->cf[a->cur];
        xg_session_set_limits(a->d->s, a->d->cf->request_timeout_ms,
            conf->queue_limit, conf->queue_timeout_ms);
        xg_session_set_stale(a->d->s, a->d->cf->stale, a->d->cf->nstale);
        dr_budget_conf(a->d->cf, &bc);
        xg_session_set_budget(a->d->s, &bc);
        (void) xg_upstream_reconf(a->up, &a->ucf[a->cur],
            dr_acct_rekey(old, a->d->cf)
            ? "reload: the account's auth, heartbeat or "
              "cancel_on_disconnect changed" : NULL);
        now[n++] = a;
    }
    for (k = 0; k < d->nacct; k++) {
        if ((a = d->accts[k]) == NULL) {
            continue;
        }
        for (dc = d->clients; dc != NULL; dc = next) {
            next = dc->next;
            if (dc->twin != NULL && dc->twin->d == a->d) {
                xg_client_close(dc->c, 1012, "its account was removed");
            }
        }
        xg_upstream_log(XG_LOG_INFO, d->up, "reload: account %s removed",
            a->acct);
        dr_acct_free(a);
    }
    free(d->accts);
    d->accts = now;
    d->nacct = n;
}

void
dr_accts_status(struct dr *d, json_t *obj)
{
    json_t *arr, *o;
    unsigned i;

    if (d->nacct == 0) {
        return;
    }
    arr = json_array();
    for (i = 0; i < d->nacct; i++) {
        o = xg_upstream_status(d->accts[i]->up);
        json_object_set_new(o, "account", json_string(d->accts[i]->acct));
        json_array_append_new(arr, o);
    }
    json_object_set_new(obj, "accounts", arr);
    json_object_set_new(obj, "private_refused_no_account",
        json_integer((json_int_t) d->account_refused));
}

/* ---- clients ----------------------------------------------------------- */

int
dr_is_private_channel(const char *name)
{
    return strncmp(name, "user.", 5) == 0;
}

/*
 * DC authenticated with credentials naming ACCOUNT (NULL: none): its
 * twin on that account's instance. XG_ERROR (logged) when D has no such
 * account, or DC is bound to another already.
 */
int
dr_acct_bind(struct dr *d, struct dr_client *dc, const char *account)
{
    struct dr_acct *a = NULL;
    unsigned i;

    if (account == NULL) {
        if (dc->twin != NULL) {
            xg_client_log(XG_LOG_WARN, dc->c, "public/auth refused: the "
                "connection is bound to account %s already",
                dc->twin->d->name);
            return XG_ERROR;
        }
        return XG_OK;
    }
    for (i = 0; i < d->nacct; i++) {
        if (strcmp(d->accts[i]->acct, account) == 0) {
            a = d->accts[i];
            break;
        }
    }
    if (a == NULL) {
        xg_client_log(XG_LOG_WARN, dc->c, "public/auth refused: account "
            "\"%s\" is not on upstream %s", account, d->name);
        return XG_ERROR;
    }
    if (dc->twin != NULL) {
        if (dc->twin->d == a->d) {
            return XG_OK;
        }
        xg_client_log(XG_LOG_WARN, dc->c, "public/auth refused: the "
            "connection is bound to account %s already", dc->twin->d->name);
        return XG_ERROR;
    }
    dc->twin = dr_client_new(a->d, dc->c);
    dc->twin->main = dc;
    dc->twin->authed = 1;
    dr_acct_sync(dc);
    xg_client_log(XG_LOG_INFO, dc->c, "trades on account %s (%s)", account,
        a->name);
    return XG_OK;
}

/*
 * Where DC's private calls go: its twin (*DP its account's instance), DC
 * itself on D's own connection, or NULL when D has accounts, its own
 * connection has none, and DC names none.
 */
struct dr_client *
dr_acct_route(struct dr_client *dc, struct dr **dp)
{
    if (dc->twin != NULL) {
        *dp = dc->twin->d;
        return dc->twin;
    }
    if ((*dp)->nacct > 0 && (*dp)->cf->auth == DR_AUTH_NONE) {
        return NULL;
    }
    return dc;
}

/* What the client switched on or off applies to its twin too. */
void
dr_acct_sync(struct dr_client *dc)
{
    if (dc->twin != NULL) {
        dc->twin->cod = dc->cod;
        dc->twin->notify_gaps = dc->notify_gaps;
        dc->twin->notify_outcome = dc->notify_outcome;
    }
}

/* DC leaves: its twin first (its cancel-on-disconnect on its account),
   its subscribes split over both forgotten. */
void
dr_acct_client_close(struct dr_client *dc, const char *reason)
{
    struct dr_split *sp;

    if (dc->twin != NULL) {
        struct dr_client *tw = dc->twin;

        dc->twin = NULL;
        tw->main = NULL;
        dr_client_free(tw->d, tw, reason);
    }
    if (dc->main != NULL) {
        dc->main->twin = NULL;   /* its account went first (a last resort) */
        dc->main = NULL;
    }
    while ((sp = dc->splits) != NULL) {
        dc->splits = sp->next;
        free(sp->id);
        free(sp->names);
        json_decref(sp->ok);
        free(sp->error);
        free(sp);
    }
}

/*
 * A subscribe of DC to NAMES[0..N-1]: user.* channels on its account's
 * connection, the others on D's own, one answer.
 */
void
dr_acct_subscribe(struct dr *d, struct dr_client *dc, const char *id,
    char **names, size_t n, unsigned max, int public_only)
{
    struct dr_split *sp;
    char **pub, **priv;
    size_t i, npub = 0, npriv = 0;

    for (i = 0; i < n; i++) {
        npriv += dr_is_private_channel(names[i]);
    }
    npub = n - npriv;
    if (npriv > 0 && dc->twin == NULL && d->nacct > 0
        && d->cf->auth == DR_AUTH_NONE && dc->authed && !public_only)
    {
        xg_client_log(XG_LOG_INFO, dc->c, "user.* channels without an "
            "account: 13009");
        d->account_refused++;
        dr_error(dc, id, 13009, "unauthorized",
            "no exchange account for this client");
        return;
    }
    if (dc->twin == NULL || npriv == 0 || public_only) {
        xg_session_subscribe(d->s, dc->rc, id, names, n, max, public_only);
        return;
    }
    if (npub == 0) {
        xg_session_subscribe(dc->twin->d->s, dc->twin->rc, id, names, n, max,
            public_only);
        return;
    }
    sp = xg_calloc(1, sizeof(*sp));
    snprintf(sp->tag, sizeof(sp->tag), "#split%llu",
        (unsigned long long) ++d->split_seq);
    sp->id = xg_strdup(id);
    sp->n = n;
    sp->ok = json_object();
    sp->parts = 2;
    sp->next = dc->splits;
    dc->splits = sp;
    {
        /* the split's own copy of the names, one block (freed with
           sp->names): the request's text is gone when the parts answer */
        size_t bytes = n * sizeof(char *), off;
        char *blk;

        for (i = 0; i < n; i++) {
            bytes += strlen(names[i]) + 1;
        }
        blk = xg_malloc(bytes);
        off = n * sizeof(char *);
        for (i = 0; i < n; i++) {
            size_t l = strlen(names[i]) + 1;

            memcpy(blk + off, names[i], l);
            ((char **) (void *) blk)[i] = blk + off;
            off += l;
        }
        sp->names = (char **) (void *) blk;
    }
    pub = xg_calloc(npub, sizeof(char *));
    priv = xg_calloc(npriv, sizeof(char *));
    npub = npriv = 0;
    for (i = 0; i < n; i++) {
        if (dr_is_private_channel(names[i])) {
            priv[npriv++] = names[i];
        } else {
            pub[npub++] = names[i];
        }
    }
    /* both parts are issued before either answer is read: one of them
       may be answered before xg_session_subscribe() returns */
    {
        char tag[32];
        struct xg_session *ts = dc->twin->d->s;
        struct xg_reg_client *trc = dc->twin->rc;

        snprintf(tag, sizeof(tag), "%s", sp->tag);
        xg_session_subscribe(d->s, dc->rc, tag, pub, npub, max, public_only);
        xg_session_subscribe(ts, trc, tag, priv, npriv, max, public_only);
    }
    free(pub);
    free(priv);
}

/*
 * SR, a part of a split subscribe of DC (a twin's or its own)? Then it is
 * merged, and the client answered with the last part: 1. 0: not a part.
 */
int
dr_acct_split_answer(struct dr_client *dc, struct xg_reg_subreq *sr)
{
    struct dr_client *m = dc->main != NULL ? dc->main : dc;
    struct dr_split *sp, **pp;
    json_t *arr;
    size_t i;
    int k;

    if (sr->client_id == NULL || sr->client_id[0] != '#') {
        return 0;
    }
    for (pp = &m->splits; (sp = *pp) != NULL; pp = &sp->next) {
        if (strcmp(sp->tag, sr->client_id) == 0) {
            break;
        }
    }
    if (sp == NULL) {
        return 1;       /* a part of none: never answered on its own */
    }
    if (sr->error != NULL && sp->error == NULL) {
        sp->error = xg_strdup(sr->error);
    }
    for (k = 0; k < sr->nchan; k++) {
        if (sr->status[k] == 1) {
            json_object_set_new(sp->ok, sr->chan[k], json_true());
        }
    }
    if (--sp->parts > 0) {
        return 1;
    }
    *pp = sp->next;
    if (sp->error != NULL) {
        dr_error_raw(m, sp->id, sp->error);
    } else {
        arr = json_array();
        for (i = 0; i < sp->n; i++) {
            if (json_object_get(sp->ok, sp->names[i]) != NULL) {
                json_array_append_new(arr, json_string(sp->names[i]));
                json_object_del(sp->ok, sp->names[i]);  /* listed once */
            }
        }
        dr_reply_json(m, sp->id, arr);
    }
    free(sp->id);
    free(sp->names);
    json_decref(sp->ok);
    free(sp->error);
    free(sp);
    return 1;
}
